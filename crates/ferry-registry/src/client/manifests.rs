//! Manifests: get (checked against a requested digest), head, put, delete.

use bytes::Bytes;
use ferry_bundle::digest::Digest;
use ferry_bundle::manifest::{MANIFEST_ACCEPT, OCI_INDEX, OCI_MANIFEST};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::request::{check_served_digest, Limit, Req};
use super::{Client, DOCKER_CONTENT_DIGEST, MANIFEST_LIMIT, OCTET_STREAM};
use crate::endpoint::safe_url;
use crate::response::{content_length, header_str, read_capped};
use crate::{Error, Manifest, Repo};

/// The media type of a fetched manifest: the Content-Type unless missing or
/// generic, else the document's `mediaType`, else guessed from its shape.
pub(crate) fn manifest_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    let ct = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty());
    let generic = |c: &str| {
        matches!(
            c,
            "application/json" | "text/plain" | "application/octet-stream" | "binary/octet-stream"
        )
    };
    if let Some(c) = &ct {
        if !generic(c) {
            return c.clone();
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(mt) = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .filter(|s| !s.is_empty())
        {
            return mt.to_string();
        }
        if v.get("manifests").is_some() {
            return OCI_INDEX.to_string();
        }
        if v.get("config").is_some() || v.get("layers").is_some() {
            return OCI_MANIFEST.to_string();
        }
    }
    ct.unwrap_or_else(|| OCTET_STREAM.to_string())
}

impl Client {
    /// Fetches a manifest or index by tag or digest, sending the full Accept
    /// list. When `reference` is a digest the bytes are checked against it.
    /// Manifests over 16 MiB are refused.
    pub async fn get_manifest(&self, repo: &Repo, reference: &str) -> Result<Manifest, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let req = Req::new(
            Method::GET,
            t.ep.repo_url(&repo.path, &format!("manifests/{reference}")),
        )
        .header(ACCEPT, &MANIFEST_ACCEPT.join(", "));
        let (t, req) = (&t, &req);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            if !resp.status().is_success() {
                return Err(self.http_error(req, resp).await);
            }
            let content_type = header_str(&resp, CONTENT_TYPE.as_str()).map(str::to_string);
            let served_digest = header_str(&resp, DOCKER_CONTENT_DIGEST).map(str::to_string);
            let body = read_capped(resp, MANIFEST_LIMIT, "GET", &req.shown()).await?;
            let digest = Digest::of(&body);
            if let Ok(expected) = reference.parse::<Digest>() {
                if expected != digest {
                    return Err(Error::DigestMismatch {
                        url: req.shown(),
                        expected,
                        actual: digest,
                    });
                }
            } else if let Some(served) = served_digest.and_then(|d| d.parse::<Digest>().ok()) {
                if served != digest {
                    tracing::warn!(
                        "GET {}: Docker-Content-Digest says {served} but the body hashes to {digest}; using {digest}",
                        req.shown()
                    );
                }
            }
            Ok(Manifest {
                media_type: manifest_media_type(content_type.as_deref(), &body),
                bytes: Bytes::from(body),
                digest,
            })
        })
        .await
    }

    /// Checks whether a manifest exists (HEAD): `Ok(None)` on 404, else its
    /// digest, media type and size. Falls back to a GET when the registry
    /// leaves out a header.
    pub async fn head_manifest(
        &self,
        repo: &Repo,
        reference: &str,
    ) -> Result<Option<(Digest, String, u64)>, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let req = Req::new(
            Method::HEAD,
            t.ep.repo_url(&repo.path, &format!("manifests/{reference}")),
        )
        .header(ACCEPT, &MANIFEST_ACCEPT.join(", "));
        let (t, req) = (&t, &req);
        let head = self
            .retry_op(|| async move {
                let resp = self.execute(t, req).await?;
                if resp.status() == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                if !resp.status().is_success() {
                    return Err(self.http_error(req, resp).await);
                }
                let digest = header_str(&resp, DOCKER_CONTENT_DIGEST)
                    .and_then(|d| d.parse::<Digest>().ok())
                    .or_else(|| reference.parse::<Digest>().ok());
                let media_type = header_str(&resp, CONTENT_TYPE.as_str())
                    .map(|c| {
                        c.split(';')
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_ascii_lowercase()
                    })
                    .filter(|c| {
                        !c.is_empty()
                            && !matches!(
                                c.as_str(),
                                "application/json" | "text/plain" | "application/octet-stream"
                            )
                    });
                Ok(Some((digest, media_type, content_length(&resp))))
            })
            .await?;
        match head {
            None => Ok(None),
            Some((Some(d), Some(mt), Some(len))) => Ok(Some((d, mt, len))),
            Some(_) => match self.get_manifest(repo, reference).await {
                Ok(m) => {
                    let len = m.bytes.len() as u64;
                    Ok(Some((m.digest, m.media_type, len)))
                }
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Stores a manifest under a tag or digest: `Content-Type: media_type`,
    /// the exact bytes. Checks the registry's `Docker-Content-Digest` (when
    /// sent) against the bytes' digest and returns that digest.
    pub async fn put_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, Error> {
        let t = self.repo_target(repo, true, None).await?;
        let url = t.ep.repo_url(&repo.path, &format!("manifests/{reference}"));
        let digest = Digest::of(&bytes);
        if let Ok(expected) = reference.parse::<Digest>() {
            if expected != digest {
                return Err(Error::DigestMismatch {
                    url: safe_url(&url),
                    expected,
                    actual: digest,
                });
            }
        }
        let req = Req::new(Method::PUT, url)
            .header(CONTENT_TYPE, media_type)
            .body(bytes)
            .limit(Limit::Upload);
        let (t, req, digest_ref) = (&t, &req, &digest);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            if resp.status() != StatusCode::CREATED {
                return Err(self.http_error(req, resp).await);
            }
            check_served_digest(req, &resp, digest_ref)?;
            Ok(digest_ref.clone())
        })
        .await
    }

    /// Deletes a manifest by digest (`DELETE /v2/<name>/manifests/<digest>`),
    /// which removes every tag pointing at it; blobs are freed by the
    /// registry's garbage collection. `Ok(false)` when it was already gone
    /// (404), so a repeated delete is harmless. A registry that does not
    /// allow deletes answers 405 (distribution without
    /// `storage.delete.enabled: true`): an [`Error::Http`] with that status.
    pub async fn delete_manifest(&self, repo: &Repo, digest: &Digest) -> Result<bool, Error> {
        let mut t = self.target(&repo.host).await?;
        t.scopes.push(format!(
            "repository:{}:pull,push,delete",
            t.ep.name(&repo.path)
        ));
        let req = Req::new(
            Method::DELETE,
            t.ep.repo_url(&repo.path, &format!("manifests/{digest}")),
        );
        let (t, req) = (&t, &req);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            match resp.status() {
                StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(self.http_error(req, resp).await),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_media_type_prefers_a_specific_content_type() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(
            manifest_media_type(
                Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
                body
            ),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            manifest_media_type(Some("application/json"), body),
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            manifest_media_type(None, br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            OCI_MANIFEST
        );
        assert_eq!(manifest_media_type(None, br#"{"manifests":[]}"#), OCI_INDEX);
    }
}
