//! Resolving image requests to exact manifests and blob lists.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};

use ferry_bundle::lock::{Lock, LockedImage, LockedPlatform};
use ferry_bundle::manifest::{self, Descriptor, MediaType, Parsed};
use ferry_bundle::meta::Absent;
use ferry_bundle::spec::ImageRequest;
use ferry_bundle::{Digest, Reference};
use ferry_registry::{Client, Repo};

use crate::{Event, Events};

/// A manifest or index as served, with what it points at.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// Exact bytes.
    pub bytes: Bytes,
    /// Media type.
    pub media_type: MediaType,
    /// Digest of the bytes.
    pub digest: Digest,
    /// Parsed view.
    pub parsed: Parsed,
    /// Platform, for index children.
    pub platform: Option<String>,
}

/// One image, resolved.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The source reference (as requested, normalised).
    pub reference: Reference,
    /// The item's name when it is not a registry reference (the URL of a
    /// file kind); see [`ResolvedImage::name`].
    pub display: Option<String>,
    /// What it is (`image`, `trivy-db`, …).
    pub kind: ferry_bundle::meta::Kind,
    /// The repository it was fetched from.
    pub repo: Repo,
    /// The platform filter applied.
    pub filter: Vec<String>,
    /// The top manifest or index.
    pub top: ResolvedManifest,
    /// Child manifests selected (indexes only; nested indexes flattened in order).
    pub children: Vec<ResolvedManifest>,
    /// Children left out by the filter.
    pub absent: Vec<Absent>,
    /// File-server path of the main file (file kinds and charts).
    pub path: Option<String>,
    /// Built by ferry from files fetched over HTTP: every blob is in the
    /// cache already and has no registry to come from.
    pub local: bool,
    /// sha256 of the main file (file kinds and charts).
    pub content: Option<Digest>,
    /// Where the main file came from (file kinds).
    pub url: Option<String>,
    /// Provenance (a signature, attestation, SBOM or OCI 1.1 referrer): the
    /// manifest it belongs to.
    pub subject: Option<Digest>,
}

impl ResolvedImage {
    /// The item's reference as recorded in the bundle and the lock: the
    /// registry reference, or the URL of a file kind.
    pub fn name(&self) -> String {
        self.display
            .clone()
            .unwrap_or_else(|| self.reference.to_string())
    }

    /// Config and layer descriptors of every manifest, in order.
    pub fn blobs(&self) -> Vec<Descriptor> {
        let mut out = Vec::new();
        for m in std::iter::once(&self.top).chain(self.children.iter()) {
            if !m.parsed.is_index() {
                out.extend(m.parsed.blobs().cloned());
            } else {
                // Non-manifest children of an index are plain blobs.
                out.extend(
                    m.parsed
                        .manifests
                        .iter()
                        .filter(|d| !manifest::is_any_manifest(&d.media_type))
                        .cloned(),
                );
            }
        }
        out
    }

    /// Platforms carried.
    pub fn platforms(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .children
            .iter()
            .filter_map(|c| c.platform.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The lock entry for this image.
    pub fn locked(&self) -> LockedImage {
        LockedImage {
            reference: self.name(),
            digest: self.top.digest.clone(),
            media_type: self.top.media_type.clone(),
            size: self.top.bytes.len() as u64,
            filter: self.filter.clone(),
            platforms: self
                .children
                .iter()
                .map(|c| LockedPlatform {
                    platform: c
                        .platform
                        .clone()
                        .unwrap_or_else(|| "unknown/unknown".into()),
                    digest: c.digest.clone(),
                })
                .collect(),
            kind: (self.kind != ferry_bundle::meta::Kind::Image)
                .then(|| self.kind.as_str().to_string()),
            content: self.content.clone(),
            url: self.url.clone(),
            subject: self.subject.clone(),
        }
    }
}

/// Everything resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Images, sorted by reference.
    pub images: Vec<ResolvedImage>,
}

impl Resolved {
    /// The lock for this resolution.
    pub fn lock(&self) -> Lock {
        Lock::new(self.images.iter().map(ResolvedImage::locked).collect())
    }
}

/// Why resolution failed; lists every failing reference.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// One or more references failed.
    #[error("failed to resolve {} reference(s):\n{}", .0.len(), .0.iter().map(|(r, e)| format!("  {r}: {e}")).collect::<Vec<_>>().join("\n"))]
    Refs(Vec<(String, String)>),
}

impl ResolveError {
    /// Whether every failure is a network / server failure (exit 2) rather than bad input.
    pub fn is_environment(&self) -> bool {
        let ResolveError::Refs(v) = self;
        v.iter().all(|(_, e)| e.starts_with("network:"))
    }
}

const MAX_NESTING: usize = 4;

pub(crate) fn repo_of(r: &Reference) -> Repo {
    Repo {
        host: r.registry.clone(),
        path: r.repository.clone(),
    }
}

pub(crate) fn describe(e: &ferry_registry::Error) -> String {
    // Chain the causes: reqwest errors hide the interesting part.
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    if e.is_not_found()
        || matches!(
            e,
            ferry_registry::Error::DigestMismatch { .. } | ferry_registry::Error::TooLarge { .. }
        )
        || e.status()
            .is_some_and(|s| (400..500).contains(&s) && s != 429)
    {
        s
    } else {
        format!("network: {s}")
    }
}

pub(crate) async fn fetch(
    client: &Client,
    repo: &Repo,
    reference: &str,
    platform: Option<String>,
) -> Result<ResolvedManifest, String> {
    let m = client
        .get_manifest(repo, reference)
        .await
        .map_err(|e| describe(&e))?;
    let parsed = manifest::parse(&m.bytes, Some(m.media_type.as_ref()))
        .map_err(|e| format!("{}@{}: {e}", repo.path, m.digest))?;
    Ok(ResolvedManifest {
        media_type: parsed.media_type.clone(),
        bytes: m.bytes,
        digest: m.digest,
        parsed,
        platform,
    })
}

fn selected(filter: &[String], children: &[Descriptor]) -> (Vec<Descriptor>, Vec<Descriptor>) {
    if filter.is_empty() {
        return (children.to_vec(), Vec::new());
    }
    let mut keep: Vec<Descriptor> = Vec::new();
    let mut drop: Vec<Descriptor> = Vec::new();
    let kept_digests: HashSet<String> = children
        .iter()
        .filter(|c| {
            c.platform
                .as_ref()
                .is_some_and(|p| filter.iter().any(|f| p.matches(f)))
        })
        .map(|c| c.digest.to_string())
        .collect();
    for c in children {
        let by_platform = c
            .platform
            .as_ref()
            .is_some_and(|p| filter.iter().any(|f| p.matches(f)));
        // Attestation manifests (unknown/unknown) follow the image they attest.
        let attests_kept = c
            .annotations
            .get("vnd.docker.reference.digest")
            .is_some_and(|d| kept_digests.contains(d));
        if by_platform || attests_kept || !manifest::is_any_manifest(&c.media_type) {
            keep.push(c.clone());
        } else {
            drop.push(c.clone());
        }
    }
    (keep, drop)
}

pub(crate) async fn resolve_one(
    client: &Client,
    req: &ImageRequest,
    lock: Option<&Lock>,
) -> Result<ResolvedImage, String> {
    let repo = repo_of(&req.reference);
    let key = req.reference.to_string();
    // A lock entry with the same filter pins the tag to its digest.
    let reference = match lock.and_then(|l| l.get(&key)) {
        Some(l) if l.filter == req.platforms && req.reference.digest.is_none() => {
            l.digest.to_string()
        }
        _ => req.reference.reference_str(),
    };
    let top = fetch(client, &repo, &reference, None).await?;
    let mut children = Vec::new();
    let mut absent = Vec::new();
    if top.parsed.is_index() {
        if !req.platforms.is_empty()
            && !top.parsed.manifests.iter().any(|c| {
                c.platform
                    .as_ref()
                    .is_some_and(|p| req.platforms.iter().any(|f| p.matches(f)))
            })
        {
            let have: Vec<String> = top
                .parsed
                .manifests
                .iter()
                .filter_map(|c| c.platform.as_ref().map(|p| p.to_short()))
                .collect();
            return Err(format!(
                "no manifest for platform(s) {} in the index (it has: {})",
                req.platforms.join(", "),
                have.join(", ")
            ));
        }
        let mut queue = vec![(top.digest.clone(), top.parsed.manifests.clone(), 0usize)];
        while let Some((parent, kids, depth)) = queue.pop() {
            if depth >= MAX_NESTING {
                return Err(format!("indexes nested deeper than {MAX_NESTING} levels"));
            }
            let (keep, drop) = selected(&req.platforms, &kids);
            for d in drop {
                absent.push(Absent {
                    digest: d.digest.clone(),
                    parent: parent.clone(),
                    platform: d.platform.as_ref().map(|p| p.to_short()),
                });
            }
            for d in keep
                .iter()
                .filter(|d| manifest::is_any_manifest(&d.media_type))
            {
                let child = fetch(
                    client,
                    &repo,
                    &d.digest.to_string(),
                    d.platform.as_ref().map(|p| p.to_short()),
                )
                .await?;
                if child.digest != d.digest {
                    return Err(format!("child {} came back as {}", d.digest, child.digest));
                }
                if child.bytes.len() as u64 != d.size {
                    return Err(format!(
                        "child {} is {} bytes, the index says {}",
                        d.digest,
                        child.bytes.len(),
                        d.size
                    ));
                }
                if child.parsed.is_index() {
                    queue.push((
                        child.digest.clone(),
                        child.parsed.manifests.clone(),
                        depth + 1,
                    ));
                }
                children.push(child);
            }
        }
    }
    Ok(ResolvedImage {
        display: None,
        kind: req.kind,
        reference: req.reference.clone(),
        repo,
        filter: req.platforms.clone(),
        top,
        children,
        absent,
        path: None,
        local: false,
        content: None,
        url: None,
        subject: None,
    })
}

/// Resolves every request (concurrently, `jobs` at a time). With `lock`,
/// tags already locked with the same filter are fetched by their locked digest.
pub async fn resolve(
    client: &Client,
    requests: &[ImageRequest],
    lock: Option<&Lock>,
    jobs: usize,
    events: &Events,
) -> Result<Resolved, ResolveError> {
    let results: Vec<(usize, Result<ResolvedImage, String>)> =
        stream::iter(requests.iter().enumerate())
            .map(|(i, req)| async move { (i, resolve_one(client, req, lock).await) })
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
    let mut ok = BTreeMap::new();
    let mut failed = Vec::new();
    for (i, r) in results {
        match r {
            Ok(img) => {
                events(Event::Resolved {
                    reference: img.reference.to_string(),
                    digest: img.top.digest.clone(),
                    platforms: img.platforms(),
                });
                ok.insert(i, img);
            }
            Err(e) => failed.push((requests[i].reference.to_string(), e)),
        }
    }
    if !failed.is_empty() {
        failed.sort();
        return Err(ResolveError::Refs(failed));
    }
    let mut images: Vec<ResolvedImage> = ok.into_values().collect();
    images.sort_by_key(|a| a.reference.to_string());
    Ok(Resolved { images })
}
