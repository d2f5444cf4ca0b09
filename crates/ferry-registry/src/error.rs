//! The client's error type.

use std::path::PathBuf;
use std::time::Duration;

use ferry_bundle::digest::Digest;

/// A registry operation that failed.
///
/// Messages are lowercase fragments that read after "failed to", and name the
/// method and URL, repository, digest or path involved. They never contain a
/// password or token: URLs are shown without user info and with signed query
/// parameters masked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry answered with a status the operation does not accept.
    #[error("{method} {url}: {}", http_detail(*.status, .code.as_deref(), .message))]
    Http {
        /// HTTP method.
        method: String,
        /// The URL requested.
        url: String,
        /// The status code received.
        status: u16,
        /// The registry's error code (`MANIFEST_UNKNOWN`, `DENIED`, …), if it sent one.
        code: Option<String>,
        /// The registry's error message (or the start of a non-JSON body).
        message: String,
        /// The delay the registry asked for with `Retry-After` (429/503), if any.
        retry_after: Option<Duration>,
    },
    /// The request could not be sent or its response not read (connection refused
    /// or cut, TLS failure, timeout while connecting).
    #[error("{method} {url}")]
    Transport {
        /// HTTP method.
        method: String,
        /// The URL requested.
        url: String,
        /// The underlying HTTP error.
        #[source]
        source: reqwest::Error,
    },
    /// No response, or no body data, arrived within the configured timeout.
    #[error("{method} {url}: nothing received for {}s", .after.as_secs_f32())]
    Timeout {
        /// HTTP method.
        method: String,
        /// The URL requested.
        url: String,
        /// How long the client waited.
        after: Duration,
    },
    /// Content did not hash to the digest it was asked for.
    #[error("verify {url}: expected digest {expected}, got {actual}")]
    DigestMismatch {
        /// Where the content came from (or was going to).
        url: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// Content did not have the size it was announced with.
    #[error("verify {url}: expected {expected} bytes, got {actual}{}", if *.at_least { " or more" } else { "" })]
    SizeMismatch {
        /// Where the content came from (or was going to).
        url: String,
        /// The size announced.
        expected: u64,
        /// The size seen.
        actual: u64,
        /// The transfer was stopped as soon as it exceeded `expected`, so the
        /// true size is `actual` or more.
        at_least: bool,
    },
    /// A response body exceeded what the client accepts for its kind.
    #[error("read {url}: the body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The registry answered something the protocol does not allow (missing
    /// `Location`, unparsable digest header, invalid JSON, …).
    #[error("{method} {url}: {reason}")]
    InvalidResponse {
        /// HTTP method.
        method: String,
        /// The URL requested.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// An upload could not be completed for a reason on the client's side
    /// (the chunk source ended early, the data does not match its digest).
    #[error("upload {digest} to {repository}: {reason}")]
    Upload {
        /// `host/path` of the repository.
        repository: String,
        /// The blob's digest.
        digest: Digest,
        /// What went wrong.
        reason: String,
    },
    /// An upload failed after the bytes it had sent were no longer held (a
    /// streamed PUT cut past its kept window, a chunked session that cannot
    /// be resumed): nothing of the blob landed, and supplying its bytes again
    /// may succeed ([`Error::needs_bytes_again`]).
    #[error("upload {digest} to {repository}: {reason}")]
    BytesGone {
        /// `host/path` of the repository.
        repository: String,
        /// The blob's digest.
        digest: Digest,
        /// What went wrong, and that the blob must be uploaded again.
        reason: String,
    },
    /// Authentication failed (token service refused, unreadable token response).
    #[error("authenticate to {registry}: {reason}")]
    Auth {
        /// The registry host, or the token service URL.
        registry: String,
        /// Why (never contains a secret).
        reason: String,
    },
    /// A CA bundle or client certificate could not be read or parsed.
    #[error("load {what} from {}: {reason}", .path.display())]
    Tls {
        /// The file involved.
        path: PathBuf,
        /// What the file was meant to hold.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The docker config file exists but cannot be used.
    #[error("read the docker config {}: {reason}", .path.display())]
    DockerConfig {
        /// The config file.
        path: PathBuf,
        /// Why (never contains a secret).
        reason: String,
    },
    /// The HTTP client for a host could not be built.
    #[error("set up the HTTP client for {host}")]
    ClientBuild {
        /// The host the settings are for (`*` for the default settings).
        host: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A registry address or mirror URL does not make a valid URL.
    #[error("build a URL for {host}: {reason}")]
    InvalidUrl {
        /// The host (or host + path) involved.
        host: String,
        /// Why.
        reason: String,
    },
    /// A streamed download's reader went away (it reports its own error).
    #[error("GET {url}: the reader of the blob stopped")]
    Abandoned {
        /// The URL (credentials removed).
        url: String,
    },
    /// A local file operation failed.
    #[error("{action} {}", .path.display())]
    Io {
        /// What was being done (`create`, `write`, `rename … to`, …).
        action: String,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn http_detail(status: u16, code: Option<&str>, message: &str) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut s = format!("the registry answered {status}");
    if !reason.is_empty() {
        s.push(' ');
        s.push_str(reason);
    }
    match (code, message.is_empty()) {
        (Some(c), false) => s.push_str(&format!(" ({c}: {message})")),
        (Some(c), true) => s.push_str(&format!(" ({c})")),
        (None, false) => s.push_str(&format!(" ({message})")),
        (None, true) => {}
    }
    s
}

impl Error {
    /// Whether trying again may succeed: connection errors, timeouts, 429 and
    /// 500/502/503/504 answers, a body cut short.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http { status, .. } => crate::retry::is_retryable_status(*status),
            Error::Transport { source, .. } => crate::retry::is_retryable_transport(source),
            Error::Timeout { .. } => true,
            _ => false,
        }
    }

    /// Whether an upload that failed so may succeed when its caller supplies
    /// the blob's bytes again (the import re-reads them from the bundle): the
    /// bytes sent were no longer held ([`Error::BytesGone`]), or the failure
    /// was retryable and its retries ran out.
    pub fn needs_bytes_again(&self) -> bool {
        matches!(self, Error::BytesGone { .. }) || self.is_retryable()
    }

    /// The HTTP status the registry answered, for [`Error::Http`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the registry answered 404 (unknown repository, manifest or blob).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The registry's error code (`MANIFEST_BLOB_UNKNOWN`, `DENIED`, …), if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Http { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn io(
        action: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            action: action.into(),
            path: path.into(),
            source,
        }
    }
}

/// An error's message with its causes, on one line (`a: b: c`).
pub use ferry_bundle::text::error_chain as chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_error_reads_after_failed_to_and_carries_the_registry_code() {
        let e = Error::Http {
            method: "PUT".into(),
            url: "http://127.0.0.1:5000/v2/a/manifests/v1".into(),
            status: 400,
            code: Some("MANIFEST_BLOB_UNKNOWN".into()),
            message: "blob unknown to registry".into(),
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "PUT http://127.0.0.1:5000/v2/a/manifests/v1: the registry answered 400 Bad Request \
             (MANIFEST_BLOB_UNKNOWN: blob unknown to registry)"
        );
        assert_eq!(e.code(), Some("MANIFEST_BLOB_UNKNOWN"));
        assert!(!e.is_retryable());
        assert!(!e.is_not_found());
    }

    #[test]
    fn retryable_statuses_are_429_and_the_transient_5xx() {
        let mk = |status| Error::Http {
            method: "GET".into(),
            url: "u".into(),
            status,
            code: None,
            message: String::new(),
            retry_after: None,
        };
        for s in [429, 500, 502, 503, 504] {
            assert!(mk(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 405, 413, 416, 501] {
            assert!(!mk(s).is_retryable(), "{s}");
        }
        assert!(mk(404).is_not_found());
        assert_eq!(mk(503).status(), Some(503));
    }

    #[test]
    fn an_upload_whose_bytes_are_gone_or_whose_retries_ran_out_needs_them_again() {
        let mk = |status| Error::Http {
            method: "PUT".into(),
            url: "u".into(),
            status,
            code: None,
            message: String::new(),
            retry_after: None,
        };
        let gone = Error::BytesGone {
            repository: "r/a".into(),
            digest: Digest::of(b"x"),
            reason: "cut; the bytes streamed are no longer held".into(),
        };
        assert!(gone.needs_bytes_again());
        assert!(!gone.is_retryable(), "never retried by the request loop");
        assert!(mk(503).needs_bytes_again());
        // A refusal stays a refusal, whoever supplies the bytes.
        for s in [400, 401, 403, 404, 413] {
            assert!(!mk(s).needs_bytes_again(), "{s}");
        }
        let mismatch = Error::Upload {
            repository: "r/a".into(),
            digest: Digest::of(b"x"),
            reason: "the chunks hash to sha256:…".into(),
        };
        assert!(!mismatch.needs_bytes_again());
    }

    #[test]
    fn size_mismatch_says_or_more_when_stopped_early() {
        let e = Error::SizeMismatch {
            url: "u".into(),
            expected: 3,
            actual: 4,
            at_least: true,
        };
        assert_eq!(e.to_string(), "verify u: expected 3 bytes, got 4 or more");
    }
}
