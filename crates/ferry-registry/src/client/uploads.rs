//! Uploads: cross-repository mount, monolithic upload of a blob in memory,
//! chunked upload (PATCH per chunk, resumed from the registry's `Range`).
//! A blob in memory, or streamed in one PUT, goes first to the session the
//! preflight held for its repository ([`Client::hold_push`]), when there is
//! one; a failure there starts the upload again on a new session.
//!
//! The bytes come as [`BlobBytes`] or [`BlobChunks`], which say who checks
//! that they hash to the digest ([`Check`]): the client, as they are sent
//! (bytes from anywhere; the default, from a plain `Bytes` or channel), or
//! their sender, which withholds the last byte of a blob that does not
//! match (the bundle reader on import: each blob is hashed once). Either
//! way the chunks are counted against the size, so a withheld byte fails
//! the upload, and the registry checks the digest of what it received on
//! the final `PUT …?digest=` before it keeps the blob.

use std::collections::VecDeque;

use bytes::Bytes;
use ferry_bundle::digest::{Check, Digest, Hasher};
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};
use url::Url;

use super::request::{check_served_digest, location_of, Limit, Req, Target};
use super::{Client, OCTET_STREAM};
use crate::endpoint::safe_url;
use crate::error::chain;
use crate::response::header_str;
use crate::{Error, Repo};

/// `<location>` with `digest=<d>` appended to its query (never rebuilt).
pub(crate) fn with_digest(location: &Url, digest: &Digest) -> Url {
    let mut u = location.clone();
    let q = match u.query() {
        Some(q) if !q.is_empty() => format!("{q}&digest={digest}"),
        _ => format!("digest={digest}"),
    };
    u.set_query(Some(&q));
    u
}

/// Parses the upload-status `Range` header (`0-<last byte>`) into the number
/// of bytes the registry holds. `0-0` is ambiguous (distribution sends it for
/// an empty session too); it counts as `0` while nothing was acknowledged.
pub(super) fn stored_bytes(range: &str, acknowledged: u64) -> Option<u64> {
    let r = range.trim();
    let r = r.strip_prefix("bytes=").unwrap_or(r);
    let (start, end) = r.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    if start != 0 {
        return None;
    }
    if end == 0 && acknowledged == 0 {
        return Some(0);
    }
    Some(end + 1)
}

/// A blob held in memory, for [`Client::upload_blob`], and who checks it.
#[derive(Debug, Clone)]
pub struct BlobBytes {
    data: Bytes,
    check: Check,
}

impl BlobBytes {
    /// Bytes from anywhere: the client hashes them before it sends them.
    pub fn new(data: Bytes) -> BlobBytes {
        BlobBytes {
            data,
            check: Check::Hash,
        }
    }

    /// Bytes their sender has hashed against the digest ([`Check::Sender`]):
    /// not hashed again; the registry checks what it received.
    pub fn checked_by_sender(data: Bytes) -> BlobBytes {
        BlobBytes {
            data,
            check: Check::Sender,
        }
    }
}

impl From<Bytes> for BlobBytes {
    fn from(data: Bytes) -> BlobBytes {
        BlobBytes::new(data)
    }
}

/// A blob arriving in chunks on a channel, for [`Client::upload_blob_chunked`]
/// and [`Client::upload_blob_streamed`], and who checks it.
#[derive(Debug)]
pub struct BlobChunks {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    check: Check,
}

impl BlobChunks {
    /// Chunks from anywhere: the client hashes them as they go, and the
    /// last byte goes only once the whole blob hashed right.
    pub fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> BlobChunks {
        BlobChunks {
            rx,
            check: Check::Hash,
        }
    }

    /// Chunks whose sender has hashed them against the digest and withholds
    /// the last one of a blob that does not match ([`Check::Sender`]): only
    /// counted against the size (a withheld chunk fails the upload before
    /// the blob is complete); the registry checks what it received.
    pub fn checked_by_sender(rx: tokio::sync::mpsc::Receiver<Bytes>) -> BlobChunks {
        BlobChunks {
            rx,
            check: Check::Sender,
        }
    }

    /// The channel and who checks its bytes.
    pub(super) fn into_parts(self) -> (tokio::sync::mpsc::Receiver<Bytes>, Check) {
        (self.rx, self.check)
    }
}

impl From<tokio::sync::mpsc::Receiver<Bytes>> for BlobChunks {
    fn from(rx: tokio::sync::mpsc::Receiver<Bytes>) -> BlobChunks {
        BlobChunks::new(rx)
    }
}

/// The chunks of a blob being uploaded: some already taken from the
/// caller's channel (kept by a streamed attempt), then the channel.
pub(super) struct Chunks {
    first: VecDeque<Bytes>,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    /// Who checks the bytes against the digest.
    check: Check,
}

impl Chunks {
    pub(super) fn new(chunks: BlobChunks) -> Chunks {
        let (rx, check) = chunks.into_parts();
        Chunks::with_first(VecDeque::new(), rx, check)
    }

    pub(super) fn with_first(
        first: VecDeque<Bytes>,
        rx: tokio::sync::mpsc::Receiver<Bytes>,
        check: Check,
    ) -> Chunks {
        Chunks { first, rx, check }
    }

    async fn recv(&mut self) -> Option<Bytes> {
        match self.first.pop_front() {
            Some(c) => Some(c),
            None => self.rx.recv().await,
        }
    }
}

impl Client {
    /// Mounts a blob from another repository of the same registry:
    /// `Ok(true)` when the registry mounted it (201), `Ok(false)` when it
    /// opened an upload session instead (202, cancelled here) or when `from`
    /// is on another host (no request is sent).
    pub async fn mount_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        from: &Repo,
    ) -> Result<bool, Error> {
        if from.host != repo.host {
            tracing::debug!("not mounting {digest} from {from} into {repo}: different hosts");
            return Ok(false);
        }
        let t = self.repo_target(repo, true, Some(from)).await?;
        let mut url = t.ep.repo_url(&repo.path, "blobs/uploads/");
        url.set_query(Some(&format!(
            "mount={digest}&from={}",
            t.ep.name(&from.path)
        )));
        let req = Req::new(Method::POST, url).empty();
        let (t, req) = (&t, &req);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            match resp.status() {
                StatusCode::CREATED => Ok(true),
                StatusCode::ACCEPTED => {
                    if let Ok(loc) = location_of(req, &resp) {
                        self.cancel(t, &loc).await;
                    }
                    Ok(false)
                }
                _ => Err(self.http_error(req, resp).await),
            }
        })
        .await
    }

    /// Opens an upload session: `POST …/blobs/uploads/` → 202 + `Location`.
    pub(super) async fn start_upload(&self, t: &Target<'_>, repo: &Repo) -> Result<Url, Error> {
        let req = Req::new(Method::POST, t.ep.repo_url(&repo.path, "blobs/uploads/")).empty();
        let resp = self.execute(t, &req).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.http_error(&req, resp).await);
        }
        location_of(&req, &resp)
    }

    /// Cancels an upload session; failures are only logged.
    pub(super) async fn cancel(&self, t: &Target<'_>, location: &Url) {
        let req = Req::new(Method::DELETE, location.clone());
        match self.execute(t, &req).await {
            Ok(r) => tracing::debug!(
                "cancelled upload session {}: {}",
                req.shown(),
                r.status().as_u16()
            ),
            Err(e) => tracing::debug!(
                "could not cancel upload session {}: {}",
                req.shown(),
                chain(&e)
            ),
        }
    }

    /// Uploads a blob held in memory: POST, then PUT `<location>&digest=` with
    /// the bytes. The whole sequence is retried on retryable failures. The
    /// bytes are hashed first unless their sender checked them
    /// ([`BlobBytes::checked_by_sender`]).
    pub async fn upload_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        data: impl Into<BlobBytes>,
    ) -> Result<(), Error> {
        let BlobBytes { data, check } = data.into();
        if check == Check::Hash {
            let actual = Digest::of(&data);
            if actual != *digest {
                return Err(Error::Upload {
                    repository: repo.to_string(),
                    digest: digest.clone(),
                    reason: format!("the data to send hashes to {actual}"),
                });
            }
        }
        let t = self.repo_target(repo, true, None).await?;
        let t = &t;
        let data = &data;
        if let Some(location) = self.take_held(repo) {
            // The preflight's session: one attempt more, before the usual ones.
            match self.put_whole(t, &location, digest, data).await {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!(
                    "uploading {digest} into {repo} on the held session failed ({}): on a new session",
                    chain(&e)
                ),
            }
        }
        self.retry_op(|| async move {
            let location = self.start_upload(t, repo).await?;
            self.put_whole(t, &location, digest, data).await
        })
        .await
    }

    /// `PUT <location>&digest=` with the whole blob; the session is
    /// cancelled when the registry does not take it.
    async fn put_whole(
        &self,
        t: &Target<'_>,
        location: &Url,
        digest: &Digest,
        data: &Bytes,
    ) -> Result<(), Error> {
        let req = Req::new(Method::PUT, with_digest(location, digest))
            .header(CONTENT_TYPE, OCTET_STREAM)
            .body(data.clone())
            .limit(Limit::Upload);
        let resp = match self.execute(t, &req).await {
            Ok(r) => r,
            Err(e) => {
                self.cancel(t, location).await;
                return Err(e);
            }
        };
        if resp.status() != StatusCode::CREATED {
            let e = self.http_error(&req, resp).await;
            self.cancel(t, location).await;
            return Err(e);
        }
        check_served_digest(&req, &resp, digest)
    }

    /// Uploads a blob in chunks as they arrive on `chunks`: one PATCH per
    /// chunk (empty chunks skipped), each retried until acknowledged, then
    /// `PUT <location>&digest=`. The chunks must add up to `size` bytes
    /// hashing to `digest` (hashed here unless their sender checked them,
    /// [`BlobChunks::checked_by_sender`]); otherwise, or if the channel
    /// closes early, the session is cancelled and an error returned.
    pub async fn upload_blob_chunked(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        chunks: impl Into<BlobChunks>,
    ) -> Result<(), Error> {
        let t = self.repo_target(repo, true, None).await?;
        self.chunked_upload(&t, repo, digest, size, Chunks::new(chunks.into()))
            .await
    }

    /// The chunked upload of `chunks` to `t` (see [`Client::upload_blob_chunked`]).
    pub(super) async fn chunked_upload(
        &self,
        t: &Target<'_>,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        mut chunks: Chunks,
    ) -> Result<(), Error> {
        let tr = t;
        let mut location = self.retry_op(|| self.start_upload(tr, repo)).await?;
        if let Err(e) = self
            .send_chunks(t, repo, digest, size, &mut chunks, &mut location)
            .await
        {
            self.cancel(t, &location).await;
            return Err(e);
        }
        let req = Req::new(Method::PUT, with_digest(&location, digest)).empty();
        let rr = &req;
        let put = self
            .retry_op(|| async move {
                let resp = self.execute(tr, rr).await?;
                if resp.status() != StatusCode::CREATED {
                    return Err(self.http_error(rr, resp).await);
                }
                check_served_digest(rr, &resp, digest)
            })
            .await;
        let Err(e) = put else {
            return Ok(());
        };
        // A retried PUT after a lost 201 finds the session gone: the blob may be there.
        if e.is_not_found()
            && matches!(self.head_blob(repo, digest).await, Ok(Some(n)) if n == size)
        {
            return Ok(());
        }
        self.cancel(t, &location).await;
        Err(e)
    }

    pub(super) async fn send_chunks(
        &self,
        t: &Target<'_>,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        chunks: &mut Chunks,
        location: &mut Url,
    ) -> Result<(), Error> {
        let upload_error = |reason: String| Error::Upload {
            repository: repo.to_string(),
            digest: digest.clone(),
            reason,
        };
        // Hashed here only when the sender did not (`Check::Sender`).
        let mut hasher = (chunks.check == Check::Hash).then(Hasher::new);
        let mut offset = 0u64;
        while let Some(chunk) = chunks.recv().await {
            if chunk.is_empty() {
                continue;
            }
            let end = offset + chunk.len() as u64;
            if end > size {
                return Err(upload_error(format!(
                    "the chunks hold more than the announced {size} bytes ({end} or more)"
                )));
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            self.patch_chunk(t, repo, digest, location, offset, chunk)
                .await?;
            offset = end;
        }
        if offset != size {
            return Err(upload_error(format!(
                "the chunk source ended after {offset} of {size} bytes"
            )));
        }
        if let Some(actual) = hasher.map(Hasher::finish) {
            if actual != *digest {
                return Err(upload_error(format!("the chunks hash to {actual}")));
            }
        }
        Ok(())
    }

    /// PATCHes one chunk starting at `offset`, retrying until the registry
    /// holds all of it; after a failure asks the session (`GET <location>`)
    /// how much arrived and sends only the rest.
    pub(super) async fn patch_chunk(
        &self,
        t: &Target<'_>,
        repo: &Repo,
        digest: &Digest,
        location: &mut Url,
        offset: u64,
        chunk: Bytes,
    ) -> Result<(), Error> {
        let chunk_end = offset + chunk.len() as u64;
        let max = self.max_attempts();
        let mut attempt = 1;
        let mut start = offset;
        let mut pending = chunk.clone();
        loop {
            let last = start + pending.len() as u64 - 1;
            let req = Req::new(Method::PATCH, location.clone())
                .header(CONTENT_TYPE, OCTET_STREAM)
                .header(CONTENT_RANGE, &format!("{start}-{last}"))
                .body(pending.clone())
                .limit(Limit::Upload);
            let result = async {
                let resp = self.execute(t, &req).await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(self.http_error(&req, resp).await);
                }
                location_of(&req, &resp)
            }
            .await;
            let e = match result {
                Ok(next) => {
                    *location = next;
                    return Ok(());
                }
                Err(e) => e,
            };
            let out_of_order = e.status() == Some(416);
            if !(e.is_retryable() || out_of_order) || attempt >= max {
                return Err(e);
            }
            self.pause(&e, attempt, max).await;
            attempt += 1;
            match self.upload_status(t, location, offset).await {
                Ok((next_location, stored)) => {
                    if let Some(l) = next_location {
                        *location = l;
                    }
                    match stored {
                        Some(n) if n >= chunk_end => return Ok(()),
                        Some(n) if n >= offset => {
                            start = n;
                            pending = chunk.slice((n - offset) as usize..);
                        }
                        Some(n) => {
                            return Err(Error::InvalidResponse {
                                method: "GET".into(),
                                url: safe_url(location),
                                reason: format!(
                                    "the upload session holds {n} bytes although {offset} were acknowledged"
                                ),
                            })
                        }
                        None => {}
                    }
                }
                Err(se) if se.is_retryable() => {}
                Err(se) => {
                    // Distribution signs the offset into the Location: once an
                    // answer is lost, the older Location is refused for good.
                    // The chunks sent before are no longer held.
                    return Err(Error::BytesGone {
                        repository: repo.to_string(),
                        digest: digest.clone(),
                        reason: format!(
                            "sending bytes {start}-{last} failed ({}) and the upload session cannot be resumed ({})",
                            chain(&e),
                            chain(&se)
                        ),
                    });
                }
            }
        }
    }

    /// `GET <location>`: the session's newest Location and how many bytes it
    /// holds (when it says).
    pub(super) async fn upload_status(
        &self,
        t: &Target<'_>,
        location: &Url,
        acknowledged: u64,
    ) -> Result<(Option<Url>, Option<u64>), Error> {
        let req = Req::new(Method::GET, location.clone());
        let resp = self.execute(t, &req).await?;
        if !resp.status().is_success() {
            return Err(self.http_error(&req, resp).await);
        }
        let next = location_of(&req, &resp).ok();
        let stored = header_str(&resp, RANGE.as_str()).and_then(|r| stored_bytes(r, acknowledged));
        Ok((next, stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_appended_to_the_location_query_without_rebuilding_it() {
        let d = Digest::of(b"x");
        let rel = Url::parse("http://r:5000/v2/a/blobs/uploads/u1?_state=abc%3D%3D").unwrap();
        assert_eq!(
            with_digest(&rel, &d).as_str(),
            format!("http://r:5000/v2/a/blobs/uploads/u1?_state=abc%3D%3D&digest={d}")
        );
        let plain = Url::parse("https://r/upload/u1").unwrap();
        assert_eq!(
            with_digest(&plain, &d).as_str(),
            format!("https://r/upload/u1?digest={d}")
        );
    }

    #[test]
    fn upload_status_range_counts_stored_bytes() {
        assert_eq!(stored_bytes("0-1048575", 0), Some(1 << 20));
        assert_eq!(stored_bytes("bytes=0-9", 0), Some(10));
        assert_eq!(stored_bytes("0-0", 0), Some(0));
        assert_eq!(stored_bytes("0-0", 1), Some(1));
        assert_eq!(stored_bytes("5-9", 0), None);
        assert_eq!(stored_bytes("x", 0), None);
    }
}
