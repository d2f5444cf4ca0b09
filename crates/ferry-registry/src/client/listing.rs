//! Listings: a repository's tags and the referrers of a manifest, following
//! `Link: rel="next"` pages.

use std::collections::{HashMap, HashSet};

use ferry_bundle::digest::Digest;
use ferry_bundle::manifest::{Descriptor, OCI_INDEX};
use reqwest::header::{ACCEPT, LINK};
use reqwest::{Method, StatusCode};
use url::Url;

use super::request::Req;
use super::{Client, MANIFEST_LIMIT};
use crate::endpoint::authority_of;
use crate::response::read_capped;
use crate::{Error, Repo};

/// Largest tag-list page accepted.
pub(super) const TAGS_LIMIT: usize = 16 << 20;
/// Stop following tag-list pages after this many.
pub(super) const MAX_TAG_PAGES: usize = 100_000;
/// Stop following referrers pages after this many.
pub(super) const MAX_REFERRER_PAGES: usize = 1_000;
/// Largest catalog page accepted.
const CATALOG_LIMIT: usize = 16 << 20;
/// The `rel="next"` target of a `Link` header, resolved against `base`.
pub(crate) fn next_link(value: &str, base: &Url) -> Option<Url> {
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let target = &after[..close];
        let params_end = after[close..].find('<').map_or(after.len(), |p| close + p);
        let params = &after[close + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.strip_prefix("rel=").is_some_and(|r| {
                r.trim_matches('"')
                    .split_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next {
            return base.join(target).ok();
        }
        rest = &after[close..];
    }
    None
}

/// The `rel="next"` page a listing answer links to (its `Link` headers),
/// resolved against the URL it answered.
fn next_page(resp: &reqwest::Response, base: &Url) -> Option<Url> {
    resp.headers()
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| next_link(v, base))
}

/// A catalog page: `{"repositories": ["a", …]}`.
#[derive(serde::Deserialize)]
struct CatalogPage {
    repositories: Vec<String>,
}

impl Client {
    /// Lists a repository's tags, following `Link: <…>; rel="next"` pages.
    /// An unknown repository (404 `NAME_UNKNOWN`) has no tags.
    pub async fn list_tags(&self, repo: &Repo) -> Result<Vec<String>, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let mut url = t.ep.repo_url(&repo.path, "tags/list");
        let mut tags = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..MAX_TAG_PAGES {
            let req = Req::new(Method::GET, url.clone());
            let (tr, rr) = (&t, &req);
            let page = self
                .retry_op(|| async move {
                    let resp = self.execute(tr, rr).await?;
                    if !resp.status().is_success() {
                        let e = self.http_error(rr, resp).await;
                        if e.is_not_found() && e.code() == Some("NAME_UNKNOWN") {
                            return Ok(None);
                        }
                        return Err(e);
                    }
                    let next = next_page(&resp, &rr.url);
                    let body = read_capped(resp, TAGS_LIMIT, "GET", &rr.shown()).await?;
                    let v: serde_json::Value =
                        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
                            method: "GET".into(),
                            url: rr.shown(),
                            reason: format!("the tag list is not valid JSON ({e})"),
                        })?;
                    let page: Vec<String> = v
                        .get("tags")
                        .and_then(|t| t.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|t| t.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok(Some((page, next)))
                })
                .await?;
            let Some((mut page, next)) = page else {
                return Ok(tags);
            };
            tags.append(&mut page);
            match next {
                Some(n) if seen.insert(n.clone()) => url = n,
                _ => return Ok(tags),
            }
        }
        Ok(tags)
    }

    /// Which of `paths` (repositories on `host`) the registry's catalog
    /// lists: `GET /v2/_catalog?n=<page>`, following `Link: <…>;
    /// rel="next"` pages on the same origin, at most `max_pages` of them.
    /// distribution lists every repository that holds a blob, tagged or
    /// not.
    ///
    /// `None` when the catalog is no answer: any status but 200 (Harbor
    /// gives it to administrators only, many registries not at all), a
    /// body that is not a catalog, a next page on another origin or one
    /// already read, or more than `max_pages` pages (a registry so much
    /// larger than `paths` that asking each repository costs less). Only
    /// names in `paths` are kept, whatever the registry holds.
    pub async fn catalog_lists<'p>(
        &self,
        host: &str,
        paths: &HashSet<&'p str>,
        page: usize,
        max_pages: usize,
    ) -> Option<HashSet<&'p str>> {
        let mut t = self.target(host).await.ok()?;
        t.scopes.push("registry:catalog:*".into());
        let by_name: HashMap<String, &'p str> = paths.iter().map(|p| (t.ep.name(p), *p)).collect();
        let mut url = t.ep.v2().join("_catalog").ok()?;
        url.query_pairs_mut()
            .append_pair("n", &page.max(1).to_string());
        let origin = authority_of(&url);
        let mut listed = HashSet::new();
        let mut seen = HashSet::from([url.clone()]);
        for _ in 0..max_pages {
            let req = Req::new(Method::GET, url.clone());
            let (tr, rr) = (&t, &req);
            let (names, next) = self
                .retry_op(|| async move {
                    let resp = self.execute(tr, rr).await?;
                    if resp.status() != StatusCode::OK {
                        return Err(self.http_error(rr, resp).await);
                    }
                    let next = next_page(&resp, &rr.url);
                    let body = read_capped(resp, CATALOG_LIMIT, "GET", &rr.shown()).await?;
                    let page: CatalogPage =
                        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
                            method: "GET".into(),
                            url: rr.shown(),
                            reason: format!("not a catalog ({e})"),
                        })?;
                    Ok((page.repositories, next))
                })
                .await
                .ok()?;
            listed.extend(names.iter().filter_map(|n| by_name.get(n).copied()));
            match next {
                None => return Some(listed),
                Some(n) if authority_of(&n) == origin && seen.insert(n.clone()) => url = n,
                Some(_) => return None,
            }
        }
        None
    }

    /// Lists what refers to `digest` in `repo` through the OCI 1.1 referrers
    /// API (`GET /v2/<name>/referrers/<digest>`), following
    /// `Link: <…>; rel="next"` pages: the descriptors of the image index the
    /// registry answers (none when nothing refers to `digest`).
    ///
    /// `Ok(None)` means the registry has no referrers API: it answered the
    /// first page with 404 (CNCF distribution does). A registry that
    /// supports the API never answers 404 (distribution-spec 1.1, "Listing
    /// Referrers": it "MUST NOT return a `404 Not Found` to a referrers API
    /// request"), so the caller reads the `sha256-<hex>` fallback tag
    /// instead, and may take the answer for the whole registry. Another
    /// refusal (400, 405, 501, …) is an [`Error::Http`] with its status: it
    /// says nothing about the registry as a whole.
    pub async fn referrers(
        &self,
        repo: &Repo,
        digest: &Digest,
    ) -> Result<Option<Vec<Descriptor>>, Error> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            manifests: Vec<Descriptor>,
        }
        let t = self.repo_target(repo, false, None).await?;
        let mut url = t.ep.repo_url(&repo.path, &format!("referrers/{digest}"));
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        for page_no in 0..MAX_REFERRER_PAGES {
            let req = Req::new(Method::GET, url.clone()).header(ACCEPT, OCI_INDEX);
            let (tr, rr) = (&t, &req);
            let page = self
                .retry_op(|| async move {
                    let resp = self.execute(tr, rr).await?;
                    let status = resp.status().as_u16();
                    if !resp.status().is_success() {
                        if page_no == 0 && status == 404 {
                            return Ok(None);
                        }
                        return Err(self.http_error(rr, resp).await);
                    }
                    let next = next_page(&resp, &rr.url);
                    let body = read_capped(resp, MANIFEST_LIMIT, "GET", &rr.shown()).await?;
                    let page: Page =
                        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
                            method: "GET".into(),
                            url: rr.shown(),
                            reason: format!("the referrers answer is not an image index ({e})"),
                        })?;
                    Ok(Some((page.manifests, next)))
                })
                .await?;
            let Some((mut page, next)) = page else {
                return Ok(None);
            };
            found.append(&mut page);
            match next {
                Some(n) if seen.insert(n.clone()) => url = n,
                _ => break,
            }
        }
        Ok(Some(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next_page_is_found_and_resolved() {
        let base = Url::parse("https://r/v2/a/tags/list").unwrap();
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#, &base)
                .unwrap()
                .as_str(),
            "https://r/v2/a/tags/list?last=b&n=2"
        );
        assert_eq!(
            next_link(
                r#"<https://r/x?a=1,2>; rel="prev", <https://r/y>; rel=next"#,
                &base
            )
            .unwrap()
            .as_str(),
            "https://r/y"
        );
        assert!(next_link(r#"</v2/a/tags/list?last=b>; rel="prev""#, &base).is_none());
        assert!(next_link("garbage", &base).is_none());
    }
}
