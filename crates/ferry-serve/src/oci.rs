//! The read side of the OCI distribution API over the store.
//!
//! Routes are parsed by hand because repository names contain `/`: the
//! path after `/v2/` is split at the *last* `/manifests/`, `/blobs/`,
//! `/referrers/` or `/tags/list`.

use axum::http::header::{ACCEPT, ALLOW, CONTENT_TYPE, ETAG, LINK, RANGE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ferry_bundle::manifest::{DOCKER_MANIFEST, OCI_INDEX};
use ferry_bundle::Digest;
use serde_json::{json, Map, Value};

use crate::http::send_file;
use crate::names::{parse_digest, valid_name, valid_tag, DigestRef};
use crate::store::{blob_path, RepoView, Snapshot, Store};

/// `Docker-Distribution-API-Version`, sent on every `/v2/` response.
pub const API_VERSION_HEADER: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
/// `Docker-Content-Digest`.
pub const DIGEST_HEADER: HeaderName = HeaderName::from_static("docker-content-digest");
/// `OCI-Filters-Applied`, on a referrers answer filtered by `artifactType`.
pub const FILTERS_APPLIED_HEADER: HeaderName = HeaderName::from_static("oci-filters-applied");

/// A parsed `/v2/...` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(&'a str),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(&'a str, &'a str),
    /// `/v2/<name>/blobs/<digest>`
    Blob(&'a str, &'a str),
    /// `/v2/<name>/blobs/uploads/...` (push only)
    Upload(&'a str),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(&'a str, &'a str),
    /// Anything else.
    Unknown,
}

/// Parses the part of the path after `/v2/`.
pub fn parse_route(rest: &str) -> Route<'_> {
    if rest.is_empty() {
        return Route::Base;
    }
    if rest == "_catalog" {
        return Route::Catalog;
    }
    // The rightmost marker wins: a name may itself contain `manifests`,
    // `blobs`, ... as path components.
    let mut best: Option<(usize, &str)> = None;
    for marker in ["/manifests/", "/blobs/", "/referrers/"] {
        if let Some(pos) = rest.rfind(marker) {
            if best.is_none_or(|(b, _)| pos > b) {
                best = Some((pos, marker));
            }
        }
    }
    const TAGS: &str = "/tags/list";
    if rest.ends_with(TAGS) {
        let pos = rest.len() - TAGS.len();
        if best.is_none_or(|(b, _)| pos > b) {
            return Route::Tags(&rest[..pos]);
        }
    }
    let Some((pos, marker)) = best else {
        return Route::Unknown;
    };
    let name = &rest[..pos];
    let tail = &rest[pos + marker.len()..];
    if marker == "/blobs/" && (tail == "uploads" || tail.starts_with("uploads/")) {
        return Route::Upload(name);
    }
    if tail.is_empty() || tail.contains('/') {
        return Route::Unknown;
    }
    match marker {
        "/manifests/" => Route::Manifest(name, tail),
        "/blobs/" => Route::Blob(name, tail),
        _ => Route::Referrers(name, tail),
    }
}

/// A spec error: answered as `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    detail: Value,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        detail: Value,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail,
        }
    }

    fn name_invalid(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name",
            json!({"name": name}),
        )
    }

    fn name_unknown(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
            json!({"name": name}),
        )
    }

    fn manifest_unknown(name: &str, reference: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            message,
            json!({"name": name, "reference": reference}),
        )
    }

    fn blob_unknown(name: &str, digest: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
            json!({"name": name, "digest": digest}),
        )
    }

    fn digest_invalid(digest: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "invalid digest",
            json!({"digest": digest}),
        )
    }

    fn unsupported(detail: Value) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "The operation is unsupported.",
            detail,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"errors": [{"code": self.code, "message": self.message, "detail": self.detail}]});
        let mut resp = (
            self.status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body.to_string(),
        )
            .into_response();
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}

fn json_response(value: &Value, content_type: &'static str) -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static(content_type))],
        value.to_string(),
    )
        .into_response()
}

/// Answers one request under `/v2`.
pub async fn handle(store: &Store, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let mut resp = match route(store, method, uri, headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    resp
}

async fn route(
    store: &Store,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::unsupported(
            json!({"method": method.as_str(), "reason": "ferry serve is read-only"}),
        ));
    }
    let path = uri.path();
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let query = Query::parse(uri.query());
    match parse_route(rest) {
        Route::Base => Ok(json_response(&json!({}), "application/json")),
        Route::Catalog => catalog(&*store.snapshot().await, &query),
        Route::Tags(name) => {
            let snap = store.snapshot().await;
            tags(name, repo(&snap, name)?, &query)
        }
        Route::Manifest(name, reference) => manifest(store, method, headers, name, reference).await,
        Route::Blob(name, digest) => blob(store, method, headers, name, digest).await,
        Route::Referrers(name, digest) => {
            let snap = store.snapshot().await;
            referrers(&snap, repo(&snap, name)?, digest, &query)
        }
        Route::Upload(_) => Err(ApiError::unsupported(
            json!({"reason": "ferry serve is read-only"}),
        )),
        // No such endpoint: a plain 404, as distribution's router answers.
        Route::Unknown => Ok(crate::files::not_found()),
    }
}

/// The repository `name`, or the 400/404 error.
fn repo<'s>(snap: &'s Snapshot, name: &str) -> Result<&'s RepoView, ApiError> {
    if !valid_name(name) {
        return Err(ApiError::name_invalid(name));
    }
    snap.repos
        .get(name)
        .ok_or_else(|| ApiError::name_unknown(name))
}

/// `n` and `last` (pagination) and `artifactType` (referrers).
#[derive(Debug, Default)]
struct Query {
    n: Option<String>,
    last: Option<String>,
    artifact_type: Option<String>,
}

impl Query {
    fn parse(q: Option<&str>) -> Query {
        let mut out = Query::default();
        for (k, v) in url::form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            match &*k {
                "n" => out.n = Some(v.into_owned()),
                "last" => out.last = Some(v.into_owned()),
                "artifactType" => out.artifact_type = Some(v.into_owned()),
                _ => {}
            }
        }
        out
    }
}

/// One page of a list, and the `(n, last)` of the next page when more remain.
type Page = (Vec<String>, Option<(usize, String)>);

/// One page of a sorted list: the items after `last`, at most `n`, and the
/// `last` to ask for next when more remain.
fn paginate<'a>(items: impl Iterator<Item = &'a String>, query: &Query) -> Result<Page, ApiError> {
    let n = match &query.n {
        None => None,
        Some(s) => match s.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "PAGINATION_NUMBER_INVALID",
                    "invalid number of results requested",
                    json!({"n": s}),
                ))
            }
        },
    };
    let mut after = items.filter(|i| query.last.as_deref().is_none_or(|l| i.as_str() > l));
    let Some(n) = n else {
        return Ok((after.cloned().collect(), None));
    };
    let page: Vec<String> = after.by_ref().take(n).cloned().collect();
    let next = match (after.next(), page.last()) {
        (Some(_), Some(last)) => Some((n, last.clone())),
        _ => None,
    };
    Ok((page, next))
}

fn link(path: &str, next: Option<(usize, String)>, resp: &mut Response) {
    if let Some((n, last)) = next {
        let last: String = url::form_urlencoded::byte_serialize(last.as_bytes()).collect();
        if let Ok(v) = HeaderValue::from_str(&format!("<{path}?n={n}&last={last}>; rel=\"next\"")) {
            resp.headers_mut().insert(LINK, v);
        }
    }
}

fn catalog(snap: &Snapshot, query: &Query) -> Result<Response, ApiError> {
    let (page, next) = paginate(snap.repos.keys(), query)?;
    let mut resp = json_response(&json!({"repositories": page}), "application/json");
    link("/v2/_catalog", next, &mut resp);
    Ok(resp)
}

fn tags(name: &str, view: &RepoView, query: &Query) -> Result<Response, ApiError> {
    let (page, next) = paginate(view.tags.keys(), query)?;
    let mut resp = json_response(&json!({"name": name, "tags": page}), "application/json");
    link(&format!("/v2/{name}/tags/list"), next, &mut resp);
    Ok(resp)
}

/// Whether the request's `Accept` admits a manifest stored as `media_type`.
///
/// Like CNCF distribution: an OCI manifest or index (or any other type) is
/// refused (404 `MANIFEST_UNKNOWN`) when the client lists types and none
/// matches; a Docker schema2 manifest is always served. Unlike
/// distribution, a Docker manifest list is never rewritten into its
/// linux/amd64 child for a client that does not accept lists: it is refused
/// the same way. No `Accept` header, `*/*` or a matching `type/*` admits
/// every type (curl and browsers send those). Only requests by tag are
/// negotiated: a request by digest gets the stored bytes whatever it accepts.
pub fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    if media_type == DOCKER_MANIFEST {
        return true;
    }
    let mut listed = false;
    for value in headers.get_all(ACCEPT) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for item in value.split(',') {
            let t = item
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if t.is_empty() {
                continue;
            }
            listed = true;
            if t == "*/*" || t == media_type {
                return true;
            }
            if let Some(prefix) = t.strip_suffix('*') {
                if prefix.ends_with('/') && media_type.starts_with(prefix) {
                    return true;
                }
            }
        }
    }
    !listed
}

async fn manifest(
    store: &Store,
    method: &Method,
    headers: &HeaderMap,
    name: &str,
    reference: &str,
) -> Result<Response, ApiError> {
    let snap = store.snapshot().await;
    let view = repo(&snap, name)?;
    let unknown = || ApiError::manifest_unknown(name, reference, "manifest unknown");
    let by_digest = reference.contains(':');
    let digest: Digest = if by_digest {
        match parse_digest(reference) {
            DigestRef::Sha256(d) if view.manifests.contains(&d) => d,
            DigestRef::Sha256(_) | DigestRef::OtherAlgorithm => return Err(unknown()),
            DigestRef::Invalid => return Err(ApiError::digest_invalid(reference)),
        }
    } else {
        if !valid_tag(reference) {
            return Err(ApiError::manifest_unknown(
                name,
                reference,
                "manifest unknown: not a valid tag",
            ));
        }
        view.tags.get(reference).cloned().ok_or_else(unknown)?
    };
    let info = snap.manifests.get(&digest).ok_or_else(unknown)?;
    // Content addressed by digest is served as stored whatever `Accept`
    // says (as distribution does): the client named the exact bytes it wants.
    if !by_digest && !accepts(headers, info.media_type.as_ref()) {
        return Err(ApiError::manifest_unknown(
            name,
            reference,
            format!(
                "the manifest is stored as {}, which the request's Accept header does not include (ferry never rewrites manifests)",
                info.media_type
            ),
        ));
    }
    let (file, len) = open_blob(store, &digest).await.ok_or_else(unknown)?;
    let mut out = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(info.media_type.as_ref()) {
        out.insert(CONTENT_TYPE, v);
    }
    digest_headers(&mut out, &digest);
    Ok(send_file(file, len, method, None, false, out).await)
}

fn digest_headers(out: &mut HeaderMap, digest: &Digest) {
    if let Ok(v) = HeaderValue::from_str(&digest.to_string()) {
        out.insert(DIGEST_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        out.insert(ETAG, v);
    }
}

async fn open_blob(store: &Store, digest: &Digest) -> Option<(tokio::fs::File, u64)> {
    let file = tokio::fs::File::open(blob_path(store.dir(), digest))
        .await
        .ok()?;
    let meta = file.metadata().await.ok()?;
    meta.is_file().then_some((file, meta.len()))
}

async fn blob(
    store: &Store,
    method: &Method,
    headers: &HeaderMap,
    name: &str,
    digest: &str,
) -> Result<Response, ApiError> {
    let d = {
        let snap = store.snapshot().await;
        let view = repo(&snap, name)?;
        match parse_digest(digest) {
            DigestRef::Sha256(d) if view.holds_blob(&d) => d,
            DigestRef::Sha256(_) | DigestRef::OtherAlgorithm => {
                return Err(ApiError::blob_unknown(name, digest))
            }
            DigestRef::Invalid => return Err(ApiError::digest_invalid(digest)),
        }
    };
    let (file, len) = open_blob(store, &d)
        .await
        .ok_or_else(|| ApiError::blob_unknown(name, digest))?;
    let mut out = HeaderMap::new();
    out.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    digest_headers(&mut out, &d);
    Ok(send_file(file, len, method, headers.get(RANGE), true, out).await)
}

fn referrers(
    snap: &Snapshot,
    view: &RepoView,
    digest: &str,
    query: &Query,
) -> Result<Response, ApiError> {
    let subject = match parse_digest(digest) {
        DigestRef::Sha256(d) => Some(d),
        DigestRef::OtherAlgorithm => None,
        DigestRef::Invalid => return Err(ApiError::digest_invalid(digest)),
    };
    let filter = query.artifact_type.as_deref();
    let mut manifests = Vec::new();
    if let Some(set) = subject.as_ref().and_then(|s| view.referrers.get(s)) {
        for d in set {
            let Some(info) = snap.manifests.get(d) else {
                continue;
            };
            if filter.is_some_and(|f| info.artifact_type.as_ref().map(AsRef::as_ref) != Some(f)) {
                continue;
            }
            let mut desc = Map::new();
            desc.insert("mediaType".into(), json!(info.media_type));
            desc.insert("digest".into(), json!(d.to_string()));
            desc.insert("size".into(), json!(info.size));
            if let Some(at) = &info.artifact_type {
                desc.insert("artifactType".into(), json!(at));
            }
            if !info.annotations.is_empty() {
                desc.insert("annotations".into(), json!(info.annotations));
            }
            manifests.push(Value::Object(desc));
        }
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut resp = json_response(&index, OCI_INDEX);
    if filter.is_some() {
        resp.headers_mut().insert(
            FILTERS_APPLIED_HEADER,
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_at_the_last_marker() {
        assert_eq!(parse_route(""), Route::Base);
        assert_eq!(parse_route("_catalog"), Route::Catalog);
        assert_eq!(parse_route("a/b/tags/list"), Route::Tags("a/b"));
        assert_eq!(
            parse_route("a/manifests/b/manifests/latest"),
            Route::Manifest("a/manifests/b", "latest")
        );
        assert_eq!(
            parse_route("x/blobs/y/blobs/sha256:abc"),
            Route::Blob("x/blobs/y", "sha256:abc")
        );
        assert_eq!(
            parse_route("a/referrers/sha256:abc"),
            Route::Referrers("a", "sha256:abc")
        );
        assert_eq!(
            parse_route("a/manifests/tags/list"),
            Route::Tags("a/manifests")
        );
        assert_eq!(parse_route("a/blobs/uploads/"), Route::Upload("a"));
        assert_eq!(parse_route("a/blobs/uploads/123"), Route::Upload("a"));
        assert_eq!(parse_route("a/manifests/x/y"), Route::Unknown);
        assert_eq!(parse_route("a/manifests/"), Route::Unknown);
        assert_eq!(parse_route("a/b"), Route::Unknown);
    }

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_never_rewrites_and_follows_distribution() {
        use ferry_bundle::manifest::{DOCKER_LIST, OCI_MANIFEST};
        let none = HeaderMap::new();
        assert!(accepts(&none, OCI_INDEX));
        assert!(accepts(&accept("*/*"), OCI_INDEX));
        assert!(accepts(&accept("application/*"), OCI_INDEX));
        assert!(accepts(
            &accept(&format!("{DOCKER_LIST}, {OCI_INDEX};q=0.5")),
            OCI_INDEX
        ));
        assert!(!accepts(&accept(DOCKER_LIST), OCI_INDEX));
        assert!(!accepts(&accept(OCI_MANIFEST), DOCKER_LIST));
        assert!(!accepts(&accept("text/*"), OCI_MANIFEST));
        // Docker schema2 manifests are served whatever the client lists.
        assert!(accepts(&accept(OCI_MANIFEST), DOCKER_MANIFEST));
        // Several Accept headers count together.
        let mut h = accept(DOCKER_LIST);
        h.append(ACCEPT, HeaderValue::from_static(OCI_MANIFEST));
        assert!(accepts(&h, OCI_MANIFEST));
    }

    #[test]
    fn pagination_pages_after_last() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let q = |n: Option<&str>, last: Option<&str>| Query {
            n: n.map(String::from),
            last: last.map(String::from),
            artifact_type: None,
        };
        let (p, next) = paginate(items.iter(), &q(Some("2"), None)).unwrap();
        assert_eq!(p, ["a", "b"]);
        assert_eq!(next, Some((2, "b".to_string())));
        let (p, next) = paginate(items.iter(), &q(Some("2"), Some("b"))).unwrap();
        assert_eq!(p, ["c", "d"]);
        assert_eq!(next, None);
        let (p, next) = paginate(items.iter(), &q(None, Some("a"))).unwrap();
        assert_eq!(p, ["b", "c", "d"]);
        assert_eq!(next, None);
        let (p, next) = paginate(items.iter(), &q(Some("0"), None)).unwrap();
        assert!(p.is_empty() && next.is_none());
        assert!(paginate(items.iter(), &q(Some("x"), None)).is_err());
    }
}
