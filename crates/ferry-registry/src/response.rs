//! Reading response bodies: capped reads, error messages and codes from
//! error bodies, `Retry-After`, header values. Shared by the client, the
//! token fetch and plain HTTP fetches.

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_LENGTH, RETRY_AFTER};
use reqwest::Response;

use crate::{retry, Error};

/// Reads a whole body of at most `limit` bytes.
pub(crate) async fn read_capped(
    mut resp: Response,
    limit: usize,
    method: &str,
    url: &str,
) -> Result<Vec<u8>, Error> {
    let too_large = || Error::TooLarge {
        url: url.to_string(),
        limit: limit as u64,
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|source| Error::Transport {
        method: method.to_string(),
        url: url.to_string(),
        source: source.without_url(),
    })? {
        if out.len() + c.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Reads up to `limit` bytes of a body, ignoring errors (for error messages).
pub(crate) async fn read_prefix(mut resp: Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(limit - out.len())]),
            _ => break,
        }
    }
    out
}

/// The registry's error code and message from an error body:
/// `{"errors":[{"code","message"}]}`, or a `details`/`error`/`message`
/// string, or the first line of a text body.
pub(crate) fn parse_error_body(body: &[u8]) -> (Option<String>, String) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(errors) = v.get("errors").and_then(|e| e.as_array()) {
            let mut code = None;
            let mut messages = Vec::new();
            for (i, e) in errors.iter().enumerate() {
                let c = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                let m = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
                if i == 0 {
                    if !c.is_empty() {
                        code = Some(c.to_string());
                    }
                    if !m.is_empty() {
                        messages.push(m.to_string());
                    }
                } else if !c.is_empty() || !m.is_empty() {
                    messages.push(format!("{c}: {m}").trim_matches([' ', ':']).to_string());
                }
            }
            return (code, messages.join("; "));
        }
        for key in ["details", "error_description", "error", "message"] {
            if let Some(s) = v
                .get(key)
                .and_then(|s| s.as_str())
                .filter(|s| !s.is_empty())
            {
                return (None, s.to_string());
            }
        }
        return (None, String::new());
    }
    let text = String::from_utf8_lossy(body);
    let first = text.trim().lines().next().unwrap_or("").trim();
    if first.starts_with('<') {
        return (None, String::new());
    }
    (None, first.chars().take(200).collect())
}

/// `Retry-After` of a response, if any.
pub(crate) fn retry_after_of(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()))
}

pub(crate) fn header_str<'r>(resp: &'r Response, name: &str) -> Option<&'r str> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `Content-Length` as sent (also for HEAD, whose body is empty).
pub(crate) fn content_length(resp: &Response) -> Option<u64> {
    header_str(resp, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_code_and_message() {
        let (c, m) = parse_error_body(
            br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:x"}]}"#,
        );
        assert_eq!(c.as_deref(), Some("MANIFEST_BLOB_UNKNOWN"));
        assert_eq!(m, "blob unknown to registry");
        let (c, m) = parse_error_body(br#"{"details":"incorrect username or password"}"#);
        assert_eq!((c, m.as_str()), (None, "incorrect username or password"));
        let (c, m) = parse_error_body(b"<html><body>413 Request Entity Too Large</body></html>");
        assert_eq!((c, m.as_str()), (None, ""));
        let (c, m) = parse_error_body(b"upstream connect error\nmore");
        assert_eq!((c, m.as_str()), (None, "upstream connect error"));
    }
}
