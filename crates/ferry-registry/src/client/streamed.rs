//! One streamed PUT per blob: `POST …/blobs/uploads/` opens a session, then
//! a single `PUT <location>&digest=` carries the whole blob as its chunks
//! arrive (`Content-Length` set, nothing buffered), as the raw-ingest floor
//! of `cargo xtask bench` does.
//!
//! The body is fed by a [`Feed`]: it pulls the caller's chunks, hashes them
//! once (unless their sender did, [`super::BlobChunks::checked_by_sender`]),
//! counts them against the announced size, and keeps the first chunks
//! (up to `chunk_size` bytes, the memory of one chunked PATCH) so that a PUT
//! that fails early — an auth challenge, a 429/5xx answered before the body
//! was read, a registry refusing a large body (413) — can be sent again, or
//! handed to the chunked path, without asking the caller for the bytes again.
//! Once more than that has been pulled, the bytes sent are gone: a failure
//! then ends the upload, and the caller retries by supplying the blob again
//! (see [`Client::upload_blob_streamed`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use ferry_bundle::digest::{Check, Digest, Hasher};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use tokio::sync::mpsc::Receiver;

use super::request::{check_served_digest, Limit, Req};
use super::uploads::{with_digest, BlobChunks, Chunks};
use super::{Client, OCTET_STREAM};
use crate::error::chain;
use crate::{Error, Repo};

/// Statuses by which a registry refuses a monolithic PUT with a body (a
/// proxy's body limit, no support for it): the chunked path is used instead.
const REFUSED: [u16; 5] = [405, 411, 413, 415, 501];

/// The body source of a streamed upload, shared by the attempts' bodies.
pub(super) struct Feed {
    state: Mutex<FeedState>,
    digest: Digest,
    size: u64,
    /// How many bytes are kept for a resend.
    window: u64,
    /// Who checks the bytes against the digest.
    check: Check,
}

struct FeedState {
    /// The caller's chunks; taken by the chunked fallback.
    rx: Option<Receiver<Bytes>>,
    /// Every byte pulled so far, while `kept` and at most `window` bytes.
    replay: Vec<Bytes>,
    kept: bool,
    /// Bytes taken from `rx`.
    pulled: u64,
    /// `None` once finished, or from the start when the sender checked.
    hasher: Option<Hasher>,
    /// Why the caller's bytes are not the blob announced (size, digest).
    failure: Option<String>,
    /// The attempt whose body may pull; older bodies fail at their next poll.
    generation: u64,
    /// The blob's last chunk, sent once the caller's channel has closed
    /// (more bytes than announced must fail before the blob is complete).
    last: Option<Bytes>,
}

impl Feed {
    fn new(chunks: BlobChunks, digest: Digest, size: u64, window: u64) -> Feed {
        let (rx, check) = chunks.into_parts();
        Feed {
            state: Mutex::new(FeedState {
                rx: Some(rx),
                replay: Vec::new(),
                kept: true,
                pulled: 0,
                hasher: (check == Check::Hash).then(Hasher::new),
                failure: None,
                generation: 0,
                last: None,
            }),
            digest,
            size,
            window,
            check,
        }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The announced size (the PUT's `Content-Length`).
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Whether every byte pulled so far is still held (a resend is possible).
    fn replayable(&self) -> bool {
        self.lock().kept
    }

    /// Whether the whole blob was pulled (and checked).
    fn pulled_all(&self) -> bool {
        let st = self.lock();
        st.pulled == self.size && st.failure.is_none()
    }

    fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// A body for a new attempt: the kept bytes again, then the rest as it
    /// arrives. Bodies of earlier attempts stop at their next read.
    pub(super) fn body(self: &Arc<Self>) -> reqwest::Body {
        let generation = {
            let mut st = self.lock();
            st.generation += 1;
            st.generation
        };
        let feed = self.clone();
        let mut offset = 0u64;
        let stream =
            futures_util::stream::poll_fn(move |cx| feed.poll_piece(generation, &mut offset, cx));
        reqwest::Body::wrap_stream(stream)
    }

    /// The next piece of attempt `generation`'s body, which has sent `offset` bytes.
    fn poll_piece(
        &self,
        generation: u64,
        offset: &mut u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let mut st = self.lock();
        let fail = |m: String| Poll::Ready(Some(Err(std::io::Error::other(m))));
        if st.generation != generation {
            return fail("superseded by a newer attempt".into());
        }
        if let Some(f) = &st.failure {
            return fail(f.clone());
        }
        let waiting_for_close = st.last.is_some();
        if *offset < st.pulled && !(waiting_for_close && *offset + last_len(&st) == st.pulled) {
            if !st.kept {
                return fail("the bytes already sent are no longer held".into());
            }
            let mut at = 0u64;
            for piece in &st.replay {
                let end = at + piece.len() as u64;
                if *offset < end {
                    let from = (*offset - at) as usize;
                    *offset = end;
                    return Poll::Ready(Some(Ok(piece.slice(from..))));
                }
                at = end;
            }
            return fail("the kept bytes do not add up".into());
        }
        if st.pulled == self.size && !waiting_for_close {
            return Poll::Ready(None);
        }
        loop {
            let Some(rx) = st.rx.as_mut() else {
                return fail("the chunks were handed to the chunked upload".into());
            };
            let polled = rx.poll_recv(cx);
            if st.last.is_some() {
                match polled {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(c)) if c.is_empty() => continue,
                    Poll::Ready(Some(_)) => {
                        let m = format!(
                            "the chunks hold more than the announced {} bytes",
                            self.size
                        );
                        st.failure = Some(m.clone());
                        return fail(m);
                    }
                    Poll::Ready(None) => {
                        let last = st.last.take();
                        *offset = st.pulled;
                        return Poll::Ready(last.map(Ok));
                    }
                }
            }
            let chunk = match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(c)) if c.is_empty() => continue,
                Poll::Ready(Some(c)) => c,
                Poll::Ready(None) => {
                    let m = format!(
                        "the chunk source ended after {} of {} bytes",
                        st.pulled, self.size
                    );
                    st.failure = Some(m.clone());
                    return fail(m);
                }
            };
            let end = st.pulled + chunk.len() as u64;
            if end > self.size {
                let m = format!(
                    "the chunks hold more than the announced {} bytes ({end} or more)",
                    self.size
                );
                st.failure = Some(m.clone());
                return fail(m);
            }
            if let Some(h) = st.hasher.as_mut() {
                h.update(&chunk);
            }
            st.pulled = end;
            if end == self.size {
                // The last byte goes only once the whole blob hashes right.
                if let Some(h) = st.hasher.take() {
                    let actual = h.finish();
                    if actual != self.digest {
                        let m = format!("the chunks hash to {actual}");
                        st.failure = Some(m.clone());
                        return fail(m);
                    }
                }
            }
            if st.kept && end <= self.window {
                st.replay.push(chunk.clone());
            } else {
                st.kept = false;
                st.replay = Vec::new();
            }
            if end == self.size {
                st.last = Some(chunk);
                continue;
            }
            *offset = end;
            return Poll::Ready(Some(Ok(chunk)));
        }
    }

    /// The kept bytes and the caller's channel, for the chunked path
    /// (only while every byte pulled is kept).
    fn take_chunks(&self) -> Option<Chunks> {
        let mut st = self.lock();
        st.generation += 1;
        if !st.kept {
            return None;
        }
        st.last = None;
        let rx = st.rx.take()?;
        Some(Chunks::with_first(
            VecDeque::from(std::mem::take(&mut st.replay)),
            rx,
            self.check,
        ))
    }

    /// After the registry took the blob: the caller's channel must end
    /// there, as for the chunked path.
    async fn drained(&self) -> Result<(), String> {
        let rx = self.lock().rx.take();
        if let Some(mut rx) = rx {
            while let Some(c) = rx.recv().await {
                if !c.is_empty() {
                    return Err(format!(
                        "the chunks hold more than the announced {} bytes",
                        self.size
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The length of the held last chunk (0 when none).
fn last_len(st: &FeedState) -> u64 {
    st.last.as_ref().map_or(0, |c| c.len() as u64)
}

impl Client {
    /// Uploads a blob as it arrives on `chunks` in one streamed request:
    /// POST, then a single `PUT <location>&digest=` with `Content-Length:
    /// size` whose body is the chunks in order (the same signature as
    /// [`Client::upload_blob_chunked`], which it falls back to where the
    /// registry refuses such a PUT: 405, 411, 413, 415 or 501, remembered
    /// per host). The chunks must add up to `size` bytes hashing to
    /// `digest`; the last byte is sent only once the whole blob hashed
    /// right (here, or by their sender: [`BlobChunks::checked_by_sender`]),
    /// and the registry checks the digest again before it keeps the blob. Credentials go only to the registry's origin, as for every
    /// request.
    ///
    /// Retries: the first chunks (up to [`crate::ClientConfig::chunk_size`]
    /// bytes) are kept, so a PUT that fails before more was pulled — an auth
    /// challenge, a connection refused, a 429 (its `Retry-After` honoured)
    /// or 5xx answered early — is sent again on a new session, with the
    /// usual backoff and attempts. Beyond that the bytes sent are no longer
    /// held: a failure cancels the session and returns [`Error::BytesGone`],
    /// and **the caller retries by supplying the blob again** (re-reading it
    /// from the bundle) to this function or to
    /// [`Client::upload_blob_chunked`], which retries each chunk it holds.
    /// When the whole body went out but the answer was lost, the blob
    /// counts as uploaded only if the registry then has it (HEAD by digest)
    /// at `size` bytes. On error nothing is reported present and the session
    /// is cancelled.
    pub async fn upload_blob_streamed(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        chunks: impl Into<BlobChunks>,
    ) -> Result<(), Error> {
        let chunks = chunks.into();
        let t = self.repo_target(repo, true, None).await?;
        if self.refuses_streamed_put(t.host) {
            return self
                .chunked_upload(&t, repo, digest, size, Chunks::new(chunks))
                .await;
        }
        let window = self.inner.config.chunk_size.max(1);
        let feed = Arc::new(Feed::new(chunks, digest.clone(), size, window));
        let upload_error = |reason: String| Error::Upload {
            repository: repo.to_string(),
            digest: digest.clone(),
            reason,
        };
        let max = self.max_attempts();
        let mut attempt = 1;
        // The preflight's session, when it held one: an attempt more, first.
        let mut held = self.take_held(repo);
        loop {
            let tr = &t;
            let on_held = held.is_some();
            let location = match held.take() {
                Some(l) => l,
                None => self.retry_op(|| self.start_upload(tr, repo)).await?,
            };
            let req = Req::new(Method::PUT, with_digest(&location, digest))
                .header(CONTENT_TYPE, OCTET_STREAM)
                .header(CONTENT_LENGTH, &size.to_string())
                .stream(feed.clone())
                .limit(Limit::Upload);
            let e = match self.execute(&t, &req).await {
                Ok(resp) if resp.status() == StatusCode::CREATED => {
                    check_served_digest(&req, &resp, digest)?;
                    return feed.drained().await.map_err(upload_error);
                }
                Ok(resp) => self.http_error(&req, resp).await,
                Err(e) => e,
            };
            self.cancel(&t, &location).await;
            if let Some(reason) = feed.failure() {
                return Err(upload_error(reason));
            }
            let status = e.status().unwrap_or(0);
            if REFUSED.contains(&status) {
                // Remembered even when this blob's bytes are gone: the
                // next ones (and this one, supplied again) go in chunks.
                self.refuse_streamed_put(t.host);
                if let Some(rest) = feed.take_chunks() {
                    tracing::info!(
                        host = t.host,
                        "{} refused a streamed PUT ({status}): uploading in chunks",
                        t.host
                    );
                    return self.chunked_upload(&t, repo, digest, size, rest).await;
                }
            }
            if on_held && feed.replayable() {
                tracing::debug!(
                    "uploading {digest} into {repo} on the held session failed ({}): on a new session",
                    chain(&e)
                );
                continue;
            }
            if feed.replayable() && e.is_retryable() && attempt < max {
                self.pause(&e, attempt, max).await;
                attempt += 1;
                continue;
            }
            if feed.pulled_all()
                && matches!(self.head_blob(repo, digest).await, Ok(Some(n)) if n == size)
            {
                // The whole body went out and the answer was lost: the registry has it.
                return feed.drained().await.map_err(upload_error);
            }
            if feed.replayable() {
                return Err(e);
            }
            return Err(Error::BytesGone {
                repository: repo.to_string(),
                digest: digest.clone(),
                reason: format!(
                    "{}; the bytes streamed are no longer held: upload the blob again from its source",
                    chain(&e)
                ),
            });
        }
    }

    /// Whether `host` refused a streamed PUT before.
    fn refuses_streamed_put(&self, host: &str) -> bool {
        match self.inner.no_streamed_put.lock() {
            Ok(s) => s.contains(host),
            Err(p) => p.into_inner().contains(host),
        }
    }

    fn refuse_streamed_put(&self, host: &str) {
        let mut s = match self.inner.no_streamed_put.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        s.insert(host.to_string());
    }
}
