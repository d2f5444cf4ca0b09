//! Provenance discovery: the signatures, attestations and SBOMs of the
//! manifests a bundle carries, so they travel with them.
//!
//! For every manifest and index of a registry item (the top and every
//! platform child kept), in the item's repository:
//!
//! 1. OCI 1.1 referrers: `GET /v2/<name>/referrers/<digest>`; when the
//!    registry has no referrers API (CNCF distribution answers 404), the
//!    `sha256-<hex>` fallback tag, an image index whose manifests are the
//!    referrers. Each referrer is carried by digest (`repo@sha256:…`), and
//!    only when its own `subject` is the manifest it was listed for.
//!    A 404 is remembered per registry for the rest of the run
//!    ([`ReferrersApi`]): every other subject there goes straight to its
//!    fallback tag, one request fewer per manifest.
//! 2. cosign's legacy tags `sha256-<hex>.sig`, `.att` and `.sbom` (a 404 is
//!    "none"), carried as tags (`repo:sha256-<hex>.sig`).
//!
//! What is found is resolved like any image (children of an index too) and
//! searched in turn (a signed attestation), [`MAX_DEPTH`] levels deep.
//!
//! The tags of step 1's fallback and step 2 are looked for in one listing
//! of each repository (`GET /v2/<name>/tags/list`, [`TagIndex`]) instead of
//! four lookups per manifest; only a tag listed is fetched. A repository
//! whose listing fails is asked tag by tag, as before.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};

use ferry_bundle::lock::Lock;
use ferry_bundle::manifest::{self, Descriptor};
use ferry_bundle::meta::Kind;
use ferry_bundle::spec::ImageRequest;
use ferry_bundle::{Digest, Reference};
use ferry_registry::{Client, Repo};

use crate::resolve::{describe, resolve_one, ResolveError, ResolvedImage};
use crate::{Event, Events};

/// cosign's legacy tag suffixes: `sha256-<hex>.sig`, `.att`, `.sbom`.
pub const LEGACY_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// How many levels of provenance of provenance are searched.
pub const MAX_DEPTH: usize = 3;

/// What one subject gave: the items found, and warnings about what was left out.
type Found = Result<(Vec<ResolvedImage>, Vec<String>), String>;

/// A manifest whose provenance is looked for.
#[derive(Debug, Clone)]
struct Subject {
    /// The item's reference (its registry and repository name the place).
    reference: Reference,
    repo: Repo,
    digest: Digest,
}

fn subjects_of(img: &ResolvedImage) -> Vec<Subject> {
    if img.local {
        return Vec::new(); // built by ferry from HTTP files: no upstream
    }
    std::iter::once(&img.top)
        .chain(img.children.iter())
        .map(|m| Subject {
            reference: img.reference.clone(),
            repo: img.repo.clone(),
            digest: m.digest.clone(),
        })
        .collect()
}

fn is_network(e: &str) -> bool {
    e.starts_with("network:")
}

/// A network failure with context, still marked `network:` (exit 2).
fn network(context: &str, why: &str) -> String {
    format!(
        "network: {context}: {}",
        why.strip_prefix("network: ").unwrap_or(why)
    )
}

/// The `sha256-…` tags of each repository listed so far (`None`: its
/// listing failed, so each tag is asked for).
#[derive(Default)]
struct TagIndex {
    listed: HashMap<Repo, Option<HashSet<String>>>,
}

impl TagIndex {
    /// Lists the repositories of `subjects` not listed yet, `jobs` at a time.
    async fn list(&mut self, client: &Client, subjects: &[Subject], jobs: usize) {
        let repos: HashSet<&Repo> = subjects
            .iter()
            .map(|s| &s.repo)
            .filter(|r| !self.listed.contains_key(*r))
            .collect();
        let listed: Vec<(Repo, Option<HashSet<String>>)> = stream::iter(repos)
            .map(|repo| async move {
                let tags = client.list_tags(repo).await.ok().map(|tags| {
                    tags.into_iter()
                        .filter(|t| t.starts_with("sha256-"))
                        .collect()
                });
                (repo.clone(), tags)
            })
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
        self.listed.extend(listed);
    }

    /// Whether `tag` may be in `repo`: listed there, or its listing failed.
    fn may_have(&self, repo: &Repo, tag: &str) -> bool {
        match self.listed.get(repo) {
            Some(Some(tags)) => tags.contains(tag),
            _ => true,
        }
    }
}

/// What a registry showed of the referrers API so far in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// Not asked yet, or only a network failure came back.
    Unknown,
    /// It answered 404: no referrers API (see [`ReferrersApi`]).
    Absent,
    /// It answered otherwise (a list, or another refusal): each subject is
    /// asked.
    Asked,
}

/// Which registries have no referrers API, learnt once per registry for
/// the rest of the run.
///
/// OCI distribution-spec 1.1, "Listing Referrers": "If the registry
/// supports the referrers API, the registry MUST NOT return a `404 Not
/// Found` to a referrers API request"; and "Unavailable Referrers API": a
/// client receiving a 404 there falls back to the referrers tag schema. So
/// a 404 says the registry (CNCF distribution, Debian's docker-registry)
/// has no referrers API at all, not that one subject has no referrers: the
/// other subjects there go straight to their fallback tag. The registry is
/// the host as references name it (`host[:port]`), which the client reaches
/// at one endpoint (scheme, authority, mirror) for the whole run.
///
/// The first subject of a registry asks while the others on that registry
/// wait for its answer, so a registry without the API is asked once
/// however many subjects go at a time. A registry that answers a list (or
/// refuses otherwise: 400, 401, 403, 405, 501…) is asked for each subject,
/// at once, as before; a network failure fails the export, as before.
#[derive(Default)]
struct ReferrersApi {
    registries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Api>>>>,
}

impl ReferrersApi {
    fn of(&self, host: &str) -> Arc<tokio::sync::Mutex<Api>> {
        let mut registries = self.registries.lock().unwrap_or_else(|e| e.into_inner());
        registries
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Api::Unknown)))
            .clone()
    }

    /// The referrers API's answer for `s`, or `None` when its registry is
    /// known to have no referrers API (not asked again).
    async fn ask(
        &self,
        client: &Client,
        s: &Subject,
    ) -> Option<Result<Option<Vec<Descriptor>>, ferry_registry::Error>> {
        let api = self.of(&s.repo.host);
        let mut known = api.lock().await;
        match *known {
            Api::Absent => return None,
            // Known to answer: no need to hold the others back.
            Api::Asked => {
                drop(known);
                return Some(client.referrers(&s.repo, &s.digest).await);
            }
            // The first to ask holds the lock until the verdict is in.
            Api::Unknown => {}
        }
        let answer = client.referrers(&s.repo, &s.digest).await;
        *known = match &answer {
            Ok(None) => Api::Absent,
            Ok(Some(_)) => Api::Asked,
            Err(e) if is_network(&describe(e)) => Api::Unknown,
            Err(_) => Api::Asked,
        };
        Some(answer)
    }
}

/// The referrers of `s`: from the referrers API, else the fallback tag.
async fn referrers(
    client: &Client,
    s: &Subject,
    tags: &TagIndex,
    api: &ReferrersApi,
) -> Result<(Vec<Descriptor>, Vec<String>), String> {
    match api.ask(client, s).await {
        Some(Ok(Some(list))) => return Ok((list, Vec::new())),
        // No referrers API (this answer, or an earlier one from the registry).
        Some(Ok(None)) | None => {}
        Some(Err(e)) => {
            let why = describe(&e);
            if is_network(&why) {
                return Err(network(&format!("referrers of {}", s.digest), &why));
            }
            // Another refusal: read the fallback tag, as without the API.
        }
    }
    let tag = s.digest.fallback_tag();
    if !tags.may_have(&s.repo, &tag) {
        return Ok((Vec::new(), Vec::new()));
    }
    match client.get_manifest(&s.repo, &tag).await {
        Ok(m) => match manifest::parse(&m.bytes, Some(&m.media_type)) {
            Ok(p) if p.is_index() => Ok((p.manifests, Vec::new())),
            _ => Ok((
                Vec::new(),
                vec![format!(
                    "{}:{tag} is not an image index, so it lists no referrers; ignored",
                    s.reference.name()
                )],
            )),
        },
        Err(e) if e.is_not_found() => Ok((Vec::new(), Vec::new())),
        Err(e) => {
            let why = describe(&e);
            if is_network(&why) {
                Err(network(&format!("fallback tag {tag}"), &why))
            } else {
                Ok((
                    Vec::new(),
                    vec![format!("{}:{tag}: {why}; ignored", s.reference.name())],
                ))
            }
        }
    }
}

/// Everything found for one subject, and warnings about what was left out.
async fn discover_one(
    client: &Client,
    s: &Subject,
    lock: Option<&Lock>,
    tags: &TagIndex,
    api: &ReferrersApi,
) -> Found {
    let mut found = Vec::new();
    let (listed, mut warnings) = referrers(client, s, tags, api).await?;
    let mut seen = HashSet::new();
    for d in listed {
        if !seen.insert(d.digest.clone()) {
            continue;
        }
        let reference = s.reference.with_digest(d.digest.clone());
        if !d.media_type.as_ref().is_empty() && !manifest::is_any_manifest(&d.media_type) {
            warnings.push(format!(
                "referrer {reference} of {} has media type `{}`, which ferry cannot carry; left out",
                s.digest, d.media_type
            ));
            continue;
        }
        let req = ImageRequest {
            reference: reference.clone(),
            kind: Kind::Image,
            platforms: Vec::new(),
        };
        match resolve_one(client, &req, lock).await {
            Ok(mut img) => {
                let points_at = img.top.parsed.subject.as_ref().map(|x| &x.digest);
                if points_at != Some(&s.digest) {
                    warnings.push(format!(
                        "{reference} is listed as a referrer of {} but its subject is {}; left out",
                        s.digest,
                        points_at.map_or_else(|| "missing".to_string(), |x| x.to_string())
                    ));
                    continue;
                }
                img.subject = Some(s.digest.clone());
                found.push(img);
            }
            Err(e) if is_network(&e) => return Err(network(&format!("referrer {reference}"), &e)),
            Err(e) => warnings.push(format!(
                "referrer {reference} of {} cannot be carried: {e}; left out",
                s.digest
            )),
        }
    }
    for suffix in LEGACY_SUFFIXES {
        let tag = format!("{}.{suffix}", s.digest.fallback_tag());
        if !tags.may_have(&s.repo, &tag) {
            continue;
        }
        match client.head_manifest(&s.repo, &tag).await {
            Ok(None) => continue,
            Ok(Some(_)) => {}
            Err(e) => {
                let why = describe(&e);
                if is_network(&why) {
                    return Err(network(&format!("tag {tag}"), &why));
                }
                warnings.push(format!("{}:{tag}: {why}; left out", s.reference.name()));
                continue;
            }
        }
        let reference = Reference {
            registry: s.reference.registry.clone(),
            repository: s.reference.repository.clone(),
            tag: Some(tag),
            digest: None,
        };
        let req = ImageRequest {
            reference: reference.clone(),
            kind: Kind::Image,
            platforms: Vec::new(),
        };
        match resolve_one(client, &req, lock).await {
            Ok(mut img) => {
                img.subject = Some(s.digest.clone());
                found.push(img);
            }
            Err(e) if is_network(&e) => return Err(network(&reference.to_string(), &e)),
            Err(e) => warnings.push(format!("{reference} cannot be carried: {e}; left out")),
        }
    }
    Ok((found, warnings))
}

/// Finds the provenance of every registry item in `images` (see the module
/// documentation), `jobs` subjects at a time. With `lock`, tags already
/// locked are fetched by their locked digest, as images are. Returns the
/// items found, sorted by reference, each with its
/// [`ResolvedImage::subject`]; items already in `images` are not repeated.
pub async fn discover(
    client: &Client,
    images: &[ResolvedImage],
    lock: Option<&Lock>,
    jobs: usize,
    events: &Events,
) -> Result<Vec<ResolvedImage>, ResolveError> {
    let mut known: HashSet<String> = images.iter().map(ResolvedImage::name).collect();
    let mut visited: HashSet<(Repo, Digest)> = HashSet::new();
    let mut frontier: Vec<Subject> = images.iter().flat_map(subjects_of).collect();
    let mut found: Vec<ResolvedImage> = Vec::new();
    let mut failed = Vec::new();
    let mut tags = TagIndex::default();
    let api = ReferrersApi::default();
    let api = &api;
    for _ in 0..MAX_DEPTH {
        frontier.retain(|s| visited.insert((s.repo.clone(), s.digest.clone())));
        if frontier.is_empty() {
            break;
        }
        tags.list(client, &frontier, jobs).await;
        let tags = &tags;
        let results: Vec<(Subject, Found)> = stream::iter(frontier.drain(..))
            .map(|s| async move {
                let r = discover_one(client, &s, lock, tags, api).await;
                (s, r)
            })
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
        for (s, r) in results {
            match r {
                Ok((imgs, warnings)) => {
                    for message in warnings {
                        events(Event::Warning { message });
                    }
                    for img in imgs {
                        if !known.insert(img.name()) {
                            continue;
                        }
                        events(Event::Resolved {
                            reference: img.name(),
                            digest: img.top.digest.clone(),
                            platforms: img.platforms(),
                        });
                        frontier.extend(subjects_of(&img));
                        found.push(img);
                    }
                }
                Err(e) => failed.push((
                    format!("provenance of {}@{}", s.reference.name(), s.digest),
                    e,
                )),
            }
        }
    }
    if !failed.is_empty() {
        failed.sort();
        return Err(ResolveError::Refs(failed));
    }
    found.sort_by_key(ResolvedImage::name);
    Ok(found)
}
