//! HTTP pieces shared by the registry and the file server: byte ranges,
//! streaming a file from disk, and the one-line-per-request access log.

use std::io::SeekFrom;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

/// Read size when streaming a file: bounded, so memory stays flat however
/// large the blob and however many pulls run in parallel.
pub const CHUNK: usize = 64 * 1024;

/// What a `Range` header asks of a resource of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// No (usable) range: the whole resource.
    Full,
    /// Bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// A well-formed range that selects nothing: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header (RFC 9110 §14) for a resource of `len`
/// bytes. One range is honoured; several ranges, other units and malformed
/// headers are ignored (the whole resource is sent), which the RFC allows.
pub fn parse_range(header: Option<&HeaderValue>, len: u64) -> RangeSpec {
    let Some(value) = header.and_then(|v| v.to_str().ok()) else {
        return RangeSpec::Full;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            None => RangeSpec::Full,
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if len == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        (first, "") => match num(first) {
            None => RangeSpec::Full,
            Some(s) if s >= len => RangeSpec::Unsatisfiable,
            Some(s) => RangeSpec::Partial {
                start: s,
                end: len - 1,
            },
        },
        (first, last) => match (num(first), num(last)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= len {
                    RangeSpec::Unsatisfiable
                } else {
                    RangeSpec::Partial {
                        start: s,
                        end: e.min(len - 1),
                    }
                }
            }
            _ => RangeSpec::Full,
        },
    }
}

/// Answers a GET or HEAD with `file` (of `len` bytes) and `headers`
/// (content type, digest, ...). With `ranges`, the request's `range` header
/// is honoured (206 / 416) and `Accept-Ranges: bytes` advertised. The body
/// streams from disk in [`CHUNK`]-sized reads; HEAD sends the same headers
/// and no body.
pub async fn send_file(
    mut file: tokio::fs::File,
    len: u64,
    method: &Method,
    range: Option<&HeaderValue>,
    ranges: bool,
    mut headers: HeaderMap,
) -> Response {
    let spec = if ranges {
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        parse_range(range, len)
    } else {
        RangeSpec::Full
    };
    let (status, start, count) = match spec {
        RangeSpec::Full => (StatusCode::OK, 0, len),
        RangeSpec::Partial { start, end } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                headers.insert(CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeSpec::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                headers.insert(CONTENT_RANGE, v);
            }
            headers.remove(axum::http::header::CONTENT_TYPE);
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            return (StatusCode::RANGE_NOT_SATISFIABLE, headers, Body::empty()).into_response();
        }
    };
    headers.insert(CONTENT_LENGTH, HeaderValue::from(count));
    if method == Method::HEAD {
        return (status, headers, Body::empty()).into_response();
    }
    if start > 0 {
        if let Err(e) = file.seek(SeekFrom::Start(start)).await {
            tracing::warn!("seek failed: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    let stream = ReaderStream::with_capacity(file.take(count), CHUNK);
    (status, headers, Body::from_stream(stream)).into_response()
}

/// The peer address of a connection, put in each request's extensions by
/// the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Middleware: one `tracing::info!` line per request, written when the
/// response body is finished or dropped, with the bytes actually sent.
pub async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let resp = next.run(req).await;
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let logged = LoggedBody {
        inner: body,
        bytes: 0,
        line: Some(LogLine {
            method,
            path,
            peer,
            status,
            start,
        }),
    };
    Response::from_parts(parts, Body::new(logged))
}

struct LogLine {
    method: Method,
    path: String,
    peer: Option<SocketAddr>,
    status: StatusCode,
    start: Instant,
}

/// A response body that counts what it yields and logs the request once.
struct LoggedBody {
    inner: Body,
    bytes: u64,
    line: Option<LogLine>,
}

impl LoggedBody {
    fn log(&mut self) {
        if let Some(l) = self.line.take() {
            tracing::info!(
                method = %l.method,
                path = %l.path,
                status = l.status.as_u16(),
                bytes = self.bytes,
                duration_ms = l.start.elapsed().as_millis() as u64,
                peer = %l.peer.map(|p| p.to_string()).unwrap_or_default(),
                "request"
            );
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.log(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, len: u64) -> RangeSpec {
        parse_range(Some(&HeaderValue::from_str(s).unwrap()), len)
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeSpec::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(r("bytes=0-3", 10), Partial { start: 0, end: 3 });
        assert_eq!(r("bytes=5-", 10), Partial { start: 5, end: 9 });
        assert_eq!(r("bytes=-4", 10), Partial { start: 6, end: 9 });
        assert_eq!(r("bytes=-40", 10), Partial { start: 0, end: 9 });
        assert_eq!(r("bytes=8-100", 10), Partial { start: 8, end: 9 });
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
        // Ignored: several ranges, other units, malformed, reversed.
        assert_eq!(r("bytes=0-1,3-4", 10), Full);
        assert_eq!(r("items=0-1", 10), Full);
        assert_eq!(r("bytes=a-b", 10), Full);
        assert_eq!(r("bytes=5-2", 10), Full);
        assert_eq!(r("bytes=+1-2", 10), Full);
    }
}
