//! The file tree (`DIR/files/...`) over plain HTTP GET/HEAD.
//!
//! Nothing outside `DIR/files` is ever opened: each path segment is
//! percent-decoded on its own and refused when it is empty, `.`/`..` (or
//! any other name starting with a dot: hidden and temporary files are not
//! served), or holds `/`, `\` or NUL once decoded; the joined path is then
//! canonicalised (resolving symbolic links) and must still lie inside the
//! canonical `DIR/files`. Directories are never listed. Every refusal is a
//! plain 404, so a probe learns nothing about what exists.

use std::path::{Path, PathBuf};

use axum::http::header::{ALLOW, CONTENT_TYPE, LAST_MODIFIED, RANGE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::http::send_file;

const NOSNIFF: HeaderName = HeaderName::from_static("x-content-type-options");

/// A plain 404.
pub fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 page not found\n",
    )
        .into_response()
}

/// Answers a request for a file under `root` (`DIR/files`).
pub async fn handle(root: &Path, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(ALLOW, "GET, HEAD")],
            "405 method not allowed: ferry serve is read-only\n",
        )
            .into_response();
    }
    let Some(rel) = relative_path(uri.path()) else {
        return not_found();
    };
    let Some(path) = resolve(root, &rel).await else {
        return not_found();
    };
    let Ok(file) = tokio::fs::File::open(&path).await else {
        return not_found();
    };
    let Ok(meta) = file.metadata().await else {
        return not_found();
    };
    if !meta.is_file() {
        return not_found();
    }
    let mut out = HeaderMap::new();
    out.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
    out.insert(NOSNIFF, HeaderValue::from_static("nosniff"));
    if let Ok(mtime) = meta.modified() {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(mtime)) {
            out.insert(LAST_MODIFIED, v);
        }
    }
    send_file(file, meta.len(), method, headers.get(RANGE), true, out).await
}

/// The canonical path of `rel` under `root`, when it exists and stays
/// inside `root` after resolving symbolic links.
async fn resolve(root: &Path, rel: &Path) -> Option<PathBuf> {
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let path = tokio::fs::canonicalize(root.join(rel)).await.ok()?;
    (path.starts_with(&root) && path != root).then_some(path)
}

/// The relative path a URL path names, or `None` when any segment is unsafe.
pub fn relative_path(url_path: &str) -> Option<PathBuf> {
    if url_path.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for segment in url_path.strip_prefix('/')?.split('/') {
        let s = percent_decode(segment)?;
        if s.is_empty() || s.starts_with('.') || s.contains(['/', '\\', '\0']) {
            return None;
        }
        out.push(s);
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Decodes `%XX` escapes (`%2B` is `+`; a `+` stays a `+`). `None` for a
/// broken escape (a `%` not followed by two hex digits, which the decoder
/// would pass through as it is) or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let broken = s.match_indices('%').any(|(i, _)| {
        s.as_bytes()
            .get(i + 1..i + 3)
            .is_none_or(|h| !h.iter().all(u8::is_ascii_hexdigit))
    });
    if broken {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(String::from)
}

/// A `Content-Type` from the file name (`application/octet-stream` unless known).
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "yaml" | "yml" => "application/yaml",
        "json" => "application/json",
        "tgz" | "gz" => "application/gzip",
        "zip" => "application/zip",
        "tar" => "application/x-tar",
        "zst" => "application/zstd",
        "txt" | "md5" | "sha1" | "sha256" | "sha512" | "asc" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths_decode_each_segment() {
        assert_eq!(
            relative_path("/falco/driver/7.0.0%2Bdriver/x86_64/a.ko"),
            Some(PathBuf::from("falco/driver/7.0.0+driver/x86_64/a.ko"))
        );
        assert_eq!(relative_path("/a+b/c%20d"), Some(PathBuf::from("a+b/c d")));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            "/",
            "",
            "rel",
            "/a/../b",
            "/a/%2e%2e/b",
            "/a/%2E%2E/b",
            "/..",
            "/a/./b",
            "/a//b",
            "/a/",
            "/a%2fb",
            "/a%2Fb",
            "/a\\b",
            "/a%5cb",
            "/a%00b",
            "/.hidden",
            "/a/.tmp-x",
            "/a%zz",
            "/a%2",
            "/%ff",
        ] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_types_from_extensions() {
        assert_eq!(
            content_type(Path::new("helm/x/index.yaml")),
            "application/yaml"
        );
        assert_eq!(content_type(Path::new("a.tgz")), "application/gzip");
        assert_eq!(content_type(Path::new("a.ko")), "application/octet-stream");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
