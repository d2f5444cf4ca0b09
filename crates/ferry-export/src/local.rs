//! Content fetched over plain HTTP(S), put in the blob cache, and wrapped in
//! OCI artifacts (see `ferry_bundle::artifact`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use url::Url;

use ferry_bundle::artifact::{self, FileLayer, ANN_SOURCE_URL};
use ferry_bundle::manifest;
use ferry_bundle::meta::Kind;
use ferry_bundle::spec::HttpAuth;
use ferry_bundle::store_layout::BlobDir;
use ferry_bundle::{Digest, Reference};
use ferry_registry::{Client, Credentials, Fetched, OriginCredentials, Repo};

use crate::resolve::{describe, ResolvedImage, ResolvedManifest};

/// Largest file fetched (a plugin zip, a driver, a chart, a file).
pub(crate) const FILE_LIMIT: u64 = 64 << 30;
/// Largest document fetched into memory (an index.yaml, a .sha512).
pub(crate) const DOC_LIMIT: usize = 64 << 20;

pub(crate) fn cache_blob(cache: &Path, d: &Digest) -> PathBuf {
    BlobDir::under(cache).path(d)
}

/// Basic-auth credentials from a spec `auth:` (password from the
/// environment), bound to the origin of `given_for`: they are sent only to
/// that exact scheme, host and port ([`OriginCredentials`]).
pub(crate) fn credentials(
    auth: Option<&HttpAuth>,
    given_for: &Url,
) -> Result<Option<OriginCredentials>, String> {
    let Some(a) = auth else { return Ok(None) };
    let password = std::env::var(&a.password_env).map_err(|_| {
        format!(
            "auth: environment variable `{}` (passwordEnv) is not set",
            a.password_env
        )
    })?;
    Ok(Some(OriginCredentials::new(
        given_for,
        Credentials {
            username: a.username.clone(),
            password,
        },
    )))
}

/// Writes `bytes` into the cache under their digest (the blob directory's
/// verified write; kept when the cache holds them already).
pub(crate) fn put_bytes(cache: &Path, bytes: &[u8]) -> Result<Digest, String> {
    BlobDir::under(cache).put(bytes).map_err(|e| e.to_string())
}

/// Fetches `url` into the cache (checked against `expected` when given).
pub(crate) async fn fetch_file(
    client: &Client,
    cache: &Path,
    url: &Url,
    auth: Option<&OriginCredentials>,
    expected: Option<&Digest>,
) -> Result<Fetched, String> {
    match fetch_file_opt(client, cache, url, auth, expected).await? {
        Some(f) => Ok(f),
        None => Err(format!("GET {url}: 404 Not Found")),
    }
}

/// [`fetch_file`], with a 404 as `Ok(None)`.
pub(crate) async fn fetch_file_opt(
    client: &Client,
    cache: &Path,
    url: &Url,
    auth: Option<&OriginCredentials>,
    expected: Option<&Digest>,
) -> Result<Option<Fetched>, String> {
    if let Some(d) = expected {
        let p = cache_blob(cache, d);
        if let Ok(m) = std::fs::metadata(&p) {
            if m.is_file() {
                // Cached under its digest: it was verified when it arrived.
                return Ok(Some(Fetched {
                    digest: d.clone(),
                    size: m.len(),
                }));
            }
        }
    }
    let blobs = BlobDir::under(cache);
    blobs
        .create()
        .map_err(|e| format!("failed to prepare the cache `{}`: {e}", cache.display()))?;
    // A temporary name of the blob directory (swept like any), checked by
    // the download as it arrives, then renamed to the digest it hashed to.
    let dest = blobs.temp_path("fetch");
    let f = match client
        .fetch_to_file(url, auth, &dest, expected, FILE_LIMIT)
        .await
    {
        Ok(f) => f,
        Err(e) if e.is_not_found() || e.status() == Some(404) => return Ok(None),
        Err(e) => return Err(describe(&e)),
    };
    blobs
        .adopt(&dest, &f.digest)
        .map_err(|e| format!("failed to move `{}` into the cache: {e}", dest.display()))?;
    Ok(Some(f))
}

/// Fetches a small document into memory.
pub(crate) async fn fetch_doc(
    client: &Client,
    url: &Url,
    auth: Option<&OriginCredentials>,
) -> Result<Bytes, String> {
    client
        .fetch_bytes(url, auth, DOC_LIMIT)
        .await
        .map_err(|e| describe(&e))
}

/// A resolved item built from a manifest whose blobs are all in the cache.
pub(crate) fn local_item(
    kind: Kind,
    reference: &str,
    manifest_bytes: Vec<u8>,
    path: Option<String>,
    content: Option<Digest>,
    url: Option<String>,
) -> Result<ResolvedImage, String> {
    let bytes = Bytes::from(manifest_bytes);
    let parsed = manifest::parse(&bytes, Some(manifest::OCI_MANIFEST))
        .map_err(|e| format!("{reference}: built an invalid manifest: {e}"))?;
    let digest = Digest::of(&bytes);
    let reference_parsed = match Reference::parse(reference) {
        Ok(r) => r,
        Err(_) => placeholder_ref(&digest)?,
    };
    Ok(ResolvedImage {
        reference: reference_parsed,
        display: Some(reference.to_string()),
        kind,
        repo: Repo {
            host: "ferry.invalid".into(),
            path: "local".into(),
        },
        filter: Vec::new(),
        top: ResolvedManifest {
            media_type: parsed.media_type.clone(),
            bytes,
            digest,
            parsed,
            platform: None,
        },
        children: Vec::new(),
        absent: Vec::new(),
        path,
        local: true,
        content,
        url,
        subject: None,
    })
}

pub(crate) fn placeholder_ref(d: &Digest) -> Result<Reference, String> {
    // Never shown: `display` carries the URL for file kinds.
    Reference::parse(&format!("ferry.invalid/local@{d}")).map_err(|e| e.to_string())
}

/// A file artifact: one manifest, the empty config, one layer per file (all
/// in the cache already).
pub(crate) fn file_artifact(
    cache: &Path,
    kind: Kind,
    url: &str,
    path: &str,
    layers: &[FileLayer],
) -> Result<ResolvedImage, String> {
    put_bytes(cache, artifact::EMPTY_CONFIG)?;
    let ann = BTreeMap::from([(ANN_SOURCE_URL.to_string(), url.to_string())]);
    let m = artifact::file_manifest(kind, layers, &ann);
    local_item(
        kind,
        url,
        m,
        Some(path.to_string()),
        layers.first().map(|l| l.digest.clone()),
        Some(url.to_string()),
    )
}
