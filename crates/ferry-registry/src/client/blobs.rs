//! Blobs: head, get as a verified stream, download to a file or stream into
//! a channel, resumed with `Range` and checked against size and digest.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_bundle::digest::{Digest, Hasher};
use futures_util::StreamExt;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};
use url::Url;

use super::request::{Limit, Req, Target};
use super::{BlobStream, Client, Progress};
use crate::endpoint::safe_url;
use crate::part_file::PartFile;
use crate::response::{content_length, header_str};
use crate::verify::VerifyingStream;
use crate::{Error, Repo};

/// Write buffer of [`Client::download_blob`].
pub(super) const DOWNLOAD_BUFFER: usize = 1 << 20;
/// The state of a download kept across attempts.
pub(super) struct Download {
    sink: Sink,
    hasher: Hasher,
    written: u64,
    /// Bytes already passed to the progress callback (never reported twice).
    reported: u64,
    resumed: bool,
    /// Streamed: bytes at the start of this response already forwarded by
    /// an earlier one (a registry that ignored the `Range`), dropped here.
    skip: u64,
    /// Streamed: the next request asks for the whole blob again (and drops
    /// what was already forwarded), the registry having botched a range.
    replay: bool,
    /// The blob's URL (credentials removed), for errors.
    url: String,
}

/// Where a download's bytes go.
pub(super) enum Sink {
    /// A part file, renamed into place once verified.
    File {
        out: BufWriter<tokio::fs::File>,
        path: PathBuf,
    },
    /// A channel, in pieces of [`STREAM_PIECE`] bytes.
    Stream {
        tx: tokio::sync::mpsc::Sender<Bytes>,
        buf: bytes::BytesMut,
    },
}

/// Largest piece of a streamed download.
pub(super) const STREAM_PIECE: usize = 256 << 10;
/// Pieces from the network at least this large are passed on without
/// being gathered.
pub(super) const STREAM_DIRECT: usize = 32 << 10;

impl Download {
    pub(super) fn new(sink: Sink) -> Download {
        Download {
            sink,
            hasher: Hasher::new(),
            written: 0,
            reported: 0,
            resumed: false,
            skip: 0,
            replay: false,
            url: String::new(),
        }
    }

    /// Whether the download can start over from the first byte (a file can
    /// be emptied; forwarded pieces cannot be taken back).
    pub(super) fn can_reset(&self) -> bool {
        matches!(self.sink, Sink::File { .. }) || self.written == 0
    }

    /// Starts over from the first byte: a file is emptied; a stream asks for
    /// the whole blob again and drops the bytes it already forwarded.
    pub(super) async fn restart(&mut self) -> Result<(), Error> {
        match &mut self.sink {
            Sink::File { out, path } => {
                let io = |e| Error::io("truncate", &*path, e);
                out.flush().await.map_err(io)?;
                let f = out.get_mut();
                f.set_len(0).await.map_err(io)?;
                f.seek(SeekFrom::Start(0)).await.map_err(io)?;
                self.hasher = Hasher::new();
                self.written = 0;
                self.resumed = false;
            }
            Sink::Stream { .. } => self.replay = true,
        }
        Ok(())
    }

    /// Takes the next piece of the body (after any bytes to drop).
    pub(super) async fn accept(&mut self, mut chunk: Bytes) -> Result<(), Error> {
        if self.skip > 0 {
            let n = (self.skip as usize).min(chunk.len());
            self.skip -= n as u64;
            let _ = chunk.split_to(n);
            if chunk.is_empty() {
                return Ok(());
            }
        }
        self.hasher.update(&chunk);
        self.written += chunk.len() as u64;
        match &mut self.sink {
            Sink::File { out, path } => out
                .write_all(&chunk)
                .await
                .map_err(|e| Error::io("write", &*path, e)),
            Sink::Stream { tx, buf } => {
                let gone = |_| Error::Abandoned {
                    url: self.url.clone(),
                };
                // Large pieces go on as they came (slicing a `Bytes` copies
                // nothing); small ones are gathered first.
                let mut rest = chunk;
                if !buf.is_empty() {
                    let n = (STREAM_PIECE - buf.len()).min(rest.len());
                    buf.extend_from_slice(&rest.split_to(n));
                    if buf.len() < STREAM_PIECE {
                        return Ok(());
                    }
                    tx.send(buf.split().freeze()).await.map_err(gone)?;
                }
                while rest.len() >= STREAM_PIECE {
                    tx.send(rest.split_to(STREAM_PIECE)).await.map_err(gone)?;
                }
                if rest.len() >= STREAM_DIRECT {
                    tx.send(rest).await.map_err(gone)
                } else {
                    buf.extend_from_slice(&rest);
                    Ok(())
                }
            }
        }
    }
}

impl Client {
    /// Checks whether a blob exists (HEAD): its size, or `Ok(None)` on 404.
    pub async fn head_blob(&self, repo: &Repo, digest: &Digest) -> Result<Option<u64>, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let req = Req::new(
            Method::HEAD,
            t.ep.repo_url(&repo.path, &format!("blobs/{digest}")),
        );
        let (t, req) = (&t, &req);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(self.http_error(req, resp).await);
            }
            content_length(&resp)
                .map(Some)
                .ok_or_else(|| Error::InvalidResponse {
                    method: "HEAD".into(),
                    url: req.shown(),
                    reason: "the answer has no Content-Length".into(),
                })
        })
        .await
    }

    /// Starts receiving a blob. The stream checks the size (when given; too
    /// many bytes fail at once) and the digest, reporting a mismatch as its
    /// last item. Only the initial request is retried.
    pub async fn get_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<BlobStream, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let req = Req::new(
            Method::GET,
            t.ep.repo_url(&repo.path, &format!("blobs/{digest}")),
        )
        .limit(Limit::Headers);
        let (tr, rr) = (&t, &req);
        let resp = self
            .retry_op(|| async move {
                let resp = self.execute(tr, rr).await?;
                if resp.status() != StatusCode::OK {
                    return Err(self.http_error(rr, resp).await);
                }
                if let (Some(want), Some(len)) = (expected_size, resp.content_length()) {
                    if want != len {
                        return Err(Error::SizeMismatch {
                            url: rr.shown(),
                            expected: want,
                            actual: len,
                            at_least: false,
                        });
                    }
                }
                Ok(resp)
            })
            .await?;
        let shown = req.shown();
        let body_url = shown.clone();
        let body = resp.bytes_stream().map(move |r| {
            r.map_err(|source| Error::Transport {
                method: "GET".into(),
                url: body_url.clone(),
                source: source.without_url(),
            })
        });
        Ok(Box::pin(VerifyingStream::new(
            Box::pin(body),
            shown,
            digest.clone(),
            expected_size,
            Some(self.inner.config.timeout),
        )))
    }

    /// Downloads a blob to `dest` atomically: writes `dest.part-<random>` in
    /// the same directory while hashing, checks size and digest, syncs, then
    /// renames. A transfer cut short is resumed with a `Range` request when
    /// the registry answers 206 (else started over). Returns the bytes
    /// written. Nothing is left at `dest` (or beside it) on failure.
    pub async fn download_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: Option<u64>,
        dest: &Path,
        progress: Option<Progress<'_>>,
    ) -> Result<u64, Error> {
        let (file, guard) = PartFile::create(dest).await?;
        let part = guard.path.clone();
        let state = self
            .download(
                repo,
                digest,
                size,
                Download::new(Sink::File {
                    out: BufWriter::with_capacity(DOWNLOAD_BUFFER, file),
                    path: part.clone(),
                }),
                progress,
            )
            .await?;
        let written = state.written;
        let Sink::File { out, .. } = state.sink else {
            return Err(Error::io(
                "write",
                &part,
                std::io::Error::other("download sink changed"),
            ));
        };
        guard.persist(out, dest).await?;
        Ok(written)
    }

    /// Streams a blob into `tx`, in order, in pieces of up to 256 KiB, hashing
    /// it on the way, with the same retries as [`Client::download_blob`]: a
    /// transfer cut short resumes with a `Range` request (a registry that
    /// ignores it sends the whole blob again and the bytes already sent are
    /// dropped). Once the size and digest check out, an empty piece marks
    /// the verified end; a channel closed without it means the download
    /// failed (the error is returned here), and whatever was forwarded must
    /// be thrown away. Waits while the channel is full; stops with
    /// [`Error::Abandoned`] if the receiver goes away.
    pub async fn stream_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        tx: tokio::sync::mpsc::Sender<Bytes>,
        progress: Option<Progress<'_>>,
    ) -> Result<u64, Error> {
        let state = self
            .download(
                repo,
                digest,
                Some(size),
                Download::new(Sink::Stream {
                    tx,
                    buf: bytes::BytesMut::with_capacity(STREAM_PIECE),
                }),
                progress,
            )
            .await?;
        let written = state.written;
        if let Sink::Stream { tx, mut buf } = state.sink {
            let gone = |_| Error::Abandoned {
                url: state.url.clone(),
            };
            if !buf.is_empty() {
                tx.send(buf.split().freeze()).await.map_err(gone)?;
            }
            tx.send(Bytes::new()).await.map_err(gone)?;
        }
        Ok(written)
    }

    /// A download with retries and verification, into `state`'s sink.
    pub(super) async fn download(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: Option<u64>,
        mut state: Download,
        progress: Option<Progress<'_>>,
    ) -> Result<Download, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let url = t.ep.repo_url(&repo.path, &format!("blobs/{digest}"));
        state.url = safe_url(&url);
        let max = self.max_attempts();
        let mut attempt = 1;
        loop {
            match self
                .download_attempt(&t, &url, size, &mut state, progress)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    // The registry ignored or botched the range: start over now.
                    if attempt >= max {
                        return Err(Error::InvalidResponse {
                            method: "GET".into(),
                            url: safe_url(&url),
                            reason: "the registry answered a resumed download inconsistently"
                                .into(),
                        });
                    }
                    attempt += 1;
                    continue;
                }
                Err(e) if e.is_retryable() && attempt < max => {
                    self.pause(&e, attempt, max).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
            if let Some(s) = size {
                if state.written != s {
                    return Err(Error::SizeMismatch {
                        url: safe_url(&url),
                        expected: s,
                        actual: state.written,
                        at_least: false,
                    });
                }
            }
            let actual = std::mem::take(&mut state.hasher).finish();
            if actual != *digest {
                if state.resumed && state.can_reset() && attempt < max {
                    tracing::warn!(
                        "GET {}: the resumed download hashes to {actual}, not {digest}; downloading again from the start",
                        safe_url(&url)
                    );
                    state.restart().await?;
                    attempt += 1;
                    continue;
                }
                return Err(Error::DigestMismatch {
                    url: safe_url(&url),
                    expected: digest.clone(),
                    actual,
                });
            }
            return Ok(state);
        }
    }

    /// One GET of a download, resuming at `state.written`. `Ok(true)`: the
    /// body was read to its end; `Ok(false)`: state reset, try again at once.
    pub(super) async fn download_attempt(
        &self,
        t: &Target<'_>,
        url: &Url,
        size: Option<u64>,
        state: &mut Download,
        progress: Option<Progress<'_>>,
    ) -> Result<bool, Error> {
        let mut req = Req::new(Method::GET, url.clone()).limit(Limit::Headers);
        let ranged = state.written > 0 && !state.replay;
        if ranged {
            req = req.header(RANGE, &format!("bytes={}-", state.written));
        }
        state.skip = 0;
        let mut resp = self.execute(t, &req).await?;
        match resp.status() {
            StatusCode::OK => {
                if state.written > 0 {
                    tracing::debug!("GET {}: the whole blob again; starting over", req.shown());
                    state.replay = false;
                    if state.can_reset() {
                        state.restart().await?;
                    } else {
                        // Forwarded bytes stay; the hash goes on from them.
                        state.skip = state.written;
                        state.resumed = true;
                    }
                }
                if let (Some(want), Some(len)) = (size, resp.content_length()) {
                    if want != len {
                        return Err(Error::SizeMismatch {
                            url: req.shown(),
                            expected: want,
                            actual: len,
                            at_least: false,
                        });
                    }
                }
            }
            StatusCode::PARTIAL_CONTENT if ranged => {
                let start = header_str(&resp, CONTENT_RANGE.as_str())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if start != Some(state.written) {
                    state.restart().await?;
                    return Ok(false);
                }
                state.resumed = true;
                tracing::debug!("GET {}: resuming at byte {}", req.shown(), state.written);
            }
            StatusCode::RANGE_NOT_SATISFIABLE if ranged => {
                state.restart().await?;
                return Ok(false);
            }
            _ => return Err(self.http_error(&req, resp).await),
        }
        let stall = self.inner.config.timeout;
        loop {
            let chunk = match tokio::time::timeout(stall, resp.chunk()).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        method: "GET".into(),
                        url: req.shown(),
                        after: stall,
                    })
                }
                Ok(Err(source)) => {
                    return Err(Error::Transport {
                        method: "GET".into(),
                        url: req.shown(),
                        source: source.without_url(),
                    })
                }
                Ok(Ok(None)) => return Ok(true),
                Ok(Ok(Some(c))) => c,
            };
            let len = (chunk.len() as u64).saturating_sub(state.skip);
            if let Some(s) = size {
                if state.written + len > s {
                    return Err(Error::SizeMismatch {
                        url: req.shown(),
                        expected: s,
                        actual: state.written + len,
                        at_least: true,
                    });
                }
            }
            state.accept(chunk).await?;
            // After a restart from zero, report only bytes beyond those already reported.
            if state.written > state.reported {
                if let Some(p) = progress {
                    p(state.written - state.reported);
                }
                state.reported = state.written;
            }
        }
    }
}
