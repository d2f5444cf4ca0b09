//! `ferry prune`: take out of a mirror what ferry put there and no kept lock
//! needs, in two reviewable steps.
//!
//! ```text
//! receipts + kept locks + the target now ──plan──▶ prune plan (JSON: what, why, bytes)
//! prune plan + the target now ──check──▶ delete manifests ──▶ free store blobs ──▶ rewrite receipts
//! ```
//!
//! - **What may go**: only manifests a receipt lists (ferry put them there).
//! - **What always stays**: every manifest a kept lock pins (its digest, its
//!   platform children, its provenance), everything those reference
//!   (children of an index), referrers of anything kept (an OCI `subject`,
//!   or a cosign `sha256-<hex>[.sig|.att|.sbom]` tag), and anything a tag
//!   the receipts do not know points at (someone else's tag).
//! - **Check before apply**: the plan records every affected repository's
//!   tags; the apply re-reads them and stops if anything differs other than
//!   the planned deletions themselves (a concurrent import wins). That also
//!   makes the apply resumable after a kill: a re-run finds only planned
//!   deletions done, and deleting what is already gone is not an error.
//! - **Registry**: `DELETE /v2/<name>/manifests/<digest>`; blobs come back
//!   with the registry's garbage collection (the report says how).
//!   **Store**: index.json entries removed, then every unreachable blob
//!   deleted, under the store's lock.
//! - **Receipts** are rewritten without what left, so the next
//!   `export --since` ships it again if it is wanted again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use ferry_bundle::lock::Lock;
use ferry_bundle::manifest;
use ferry_bundle::Digest;
use ferry_registry::{Client, Repo};

use crate::receipt::Receipt;
use crate::store::Store;

/// The plan format version.
pub const PLAN_VERSION: u32 = 1;

/// Where the mirror is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PruneTarget {
    /// A registry host (`host[:port]`).
    Registry(String),
    /// A `ferry serve` store directory.
    Store(PathBuf),
}

impl std::fmt::Display for PruneTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PruneTarget::Registry(h) => write!(f, "the registry {h}"),
            PruneTarget::Store(d) => write!(f, "the store {}", d.display()),
        }
    }
}

/// One manifest to delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    /// Repository path at the target.
    pub repository: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// Tags that point at it now (they go with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Why it goes.
    pub reason: String,
}

/// A receipt file and what it becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptUpdate {
    /// The receipt file.
    pub path: PathBuf,
    /// sha256 of its bytes when planned.
    pub before: Digest,
    /// Its content after the prune.
    pub after: Receipt,
}

/// `ferry prune --plan FILE`: reviewable, and executed exactly by `--apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrunePlan {
    /// [`PLAN_VERSION`].
    pub plan_version: u32,
    /// The mirror.
    pub target: PruneTarget,
    /// The lock files kept.
    pub keep: Vec<PathBuf>,
    /// Every affected repository's tags when planned (tag → digest).
    pub snapshot: BTreeMap<String, BTreeMap<String, Digest>>,
    /// Manifests to delete, indexes before their children.
    pub delete: Vec<Deletion>,
    /// Manifests a receipt lists that stay, and why (counts by reason).
    pub kept: BTreeMap<String, usize>,
    /// Bytes of blobs only the deleted manifests reference (freed by the
    /// store at once, by a registry after its garbage collection).
    pub bytes_freed: u64,
    /// Blobs only the deleted manifests reference.
    pub blobs_freed: usize,
    /// The receipts, rewritten without what leaves.
    pub receipts: Vec<ReceiptUpdate>,
}

impl PrunePlan {
    /// Deterministic bytes (pretty JSON, trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Manifests deleted now.
    pub deleted: usize,
    /// Planned manifests that were already gone (a resumed apply).
    pub already_gone: usize,
    /// Store blobs deleted and their bytes (0 for a registry).
    pub blobs_removed: usize,
    /// Their bytes.
    pub bytes_removed: u64,
    /// Receipt files rewritten.
    pub receipts_written: usize,
}

/// Why a prune could not be planned or applied. Nothing was deleted unless
/// the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A receipt, lock or plan file could not be read or parsed.
    #[error("failed to read `{path}`: {reason}")]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The receipts name another target than the one given.
    #[error("the receipt `{path}` is for `{found}`, not {target}")]
    WrongTarget {
        /// The receipt.
        path: PathBuf,
        /// Its target.
        found: String,
        /// The target given.
        target: PruneTarget,
    },
    /// The target could not be read.
    #[error("failed to read {what} at {target}: {reason}")]
    Read {
        /// The target.
        target: PruneTarget,
        /// What was being read.
        what: String,
        /// Why.
        reason: String,
    },
    /// The target changed since the plan.
    #[error("{target} changed since the plan was made: {change}; nothing was deleted by this run — plan again (a concurrent import wins)")]
    Changed {
        /// The target.
        target: PruneTarget,
        /// What changed.
        change: String,
    },
    /// A receipt changed since the plan.
    #[error("the receipt `{path}` changed since the plan was made; plan again")]
    ReceiptChanged {
        /// The receipt.
        path: PathBuf,
    },
    /// The registry refused a delete.
    #[error("{target} refused to delete {repository}@{digest}: {reason}")]
    Delete {
        /// The target.
        target: PruneTarget,
        /// The repository.
        repository: String,
        /// The manifest.
        digest: Digest,
        /// Why (for 405: how to enable deletes).
        reason: String,
    },
    /// A file could not be written.
    #[error("failed to write `{path}`: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The mirror, for reading and deleting.
pub enum Mirror<'a> {
    /// A registry through ferry's client.
    Registry {
        /// The client (credentials, TLS).
        client: &'a Client,
        /// `host[:port]`.
        host: String,
    },
    /// An open store (its lock held).
    Store(&'a Store),
}

impl Mirror<'_> {
    fn target(&self) -> PruneTarget {
        match self {
            Mirror::Registry { host, .. } => PruneTarget::Registry(host.clone()),
            Mirror::Store(s) => PruneTarget::Store(s.dir().to_path_buf()),
        }
    }

    fn read_err(&self, what: String, reason: impl std::fmt::Display) -> PruneError {
        PruneError::Read {
            target: self.target(),
            what,
            reason: reason.to_string(),
        }
    }

    fn repo(host: &str, path: &str) -> Repo {
        Repo {
            host: host.to_string(),
            path: path.to_string(),
        }
    }

    /// A repository's tags now.
    async fn tags(&self, repository: &str) -> Result<BTreeMap<String, Digest>, PruneError> {
        let mut out = BTreeMap::new();
        match self {
            Mirror::Registry { client, host } => {
                let repo = Self::repo(host, repository);
                let tags = client.list_tags(&repo).await.map_err(|e| {
                    self.read_err(
                        format!("the tags of {repository}"),
                        ferry_registry::chain(&e),
                    )
                })?;
                for t in tags {
                    if let Some((d, _, _)) = client.head_manifest(&repo, &t).await.map_err(|e| {
                        self.read_err(format!("{repository}:{t}"), ferry_registry::chain(&e))
                    })? {
                        out.insert(t, d);
                    }
                }
            }
            Mirror::Store(s) => {
                for e in s
                    .entries()
                    .map_err(|e| self.read_err("index.json".into(), e))?
                {
                    if e.repository == repository {
                        let key = e.tag.clone().unwrap_or_else(|| format!("@{}", e.digest));
                        out.insert(key, e.digest);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every repository, where the target can list them (a store).
    fn repositories(&self) -> Result<Vec<String>, PruneError> {
        match self {
            Mirror::Registry { .. } => Ok(Vec::new()),
            Mirror::Store(s) => Ok(s
                .entries()
                .map_err(|e| self.read_err("index.json".into(), e))?
                .into_iter()
                .map(|e| e.repository)
                // A file item's entry names no repository: not an image's.
                .filter(|r| !r.is_empty())
                .collect()),
        }
    }

    /// A manifest's bytes, or `None` when the target does not have it.
    async fn manifest(&self, repository: &str, d: &Digest) -> Result<Option<Vec<u8>>, PruneError> {
        match self {
            Mirror::Registry { client, host } => {
                match client
                    .get_manifest(&Self::repo(host, repository), &d.to_string())
                    .await
                {
                    Ok(m) => Ok(Some(m.bytes.to_vec())),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => {
                        Err(self.read_err(format!("{repository}@{d}"), ferry_registry::chain(&e)))
                    }
                }
            }
            Mirror::Store(s) => Ok(s.read_blob(d)),
        }
    }
}

/// What one manifest references.
#[derive(Debug, Default, Clone)]
struct Node {
    children: Vec<Digest>,
    blobs: Vec<(Digest, u64)>,
    subject: Option<Digest>,
}

fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(T, Vec<u8>), PruneError> {
    let bytes = std::fs::read(path).map_err(|e| PruneError::Input {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let v = serde_json::from_slice(&bytes).map_err(|e| PruneError::Input {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((v, bytes))
}

/// The subject a cosign-style tag names (`sha256-<hex>`, `.sig`, `.att`, `.sbom`).
fn tag_subject(tag: &str) -> Option<Digest> {
    let rest = tag.strip_prefix("sha256-")?;
    let hex = rest.split('.').next()?;
    format!("sha256:{hex}").parse().ok()
}

/// Computes the plan (reads the target, writes nothing).
pub async fn plan(
    mirror: &Mirror<'_>,
    receipt_paths: &[PathBuf],
    keep_paths: &[PathBuf],
) -> Result<PrunePlan, PruneError> {
    let receipts = load_receipts(mirror, receipt_paths)?;
    let pinned = pinned_digests(keep_paths)?;
    let (mut ours, our_tags) = ferrys_own(&receipts);
    for repo in mirror.repositories()? {
        ours.entry(repo).or_default();
    }
    let graph = read_graph(mirror, &ours).await?;
    let kept = keep_closure(&graph, &pinned, &ours, &our_tags);
    let (delete, kept_why) = deletions(&graph, &ours, &kept);
    let gone: BTreeSet<(String, Digest)> = delete
        .iter()
        .map(|x| (x.repository.clone(), x.digest.clone()))
        .collect();
    let gone_blobs = freed_blobs(&graph, &gone);
    let receipts = receipts_after(receipts, &gone, &gone_blobs);
    Ok(PrunePlan {
        plan_version: PLAN_VERSION,
        target: mirror.target(),
        keep: keep_paths.to_vec(),
        snapshot: graph.snapshot,
        delete,
        kept: kept_why,
        bytes_freed: gone_blobs.values().sum(),
        blobs_freed: gone_blobs.len(),
        receipts,
    })
}

/// A receipt as read: its path, the digest of its bytes, its content.
type LoadedReceipt = (PathBuf, Digest, Receipt);

/// The receipts, each for this target.
fn load_receipts(
    mirror: &Mirror<'_>,
    receipt_paths: &[PathBuf],
) -> Result<Vec<LoadedReceipt>, PruneError> {
    let mut receipts = Vec::new();
    for p in receipt_paths {
        let (r, bytes): (Receipt, Vec<u8>) = load_json(p)?;
        if let PruneTarget::Registry(host) = mirror.target() {
            let found_host = r.target.split('/').next().unwrap_or("");
            if !r.target.is_empty() && found_host != host {
                return Err(PruneError::WrongTarget {
                    path: p.clone(),
                    found: r.target.clone(),
                    target: mirror.target(),
                });
            }
        }
        receipts.push((p.clone(), Digest::of(&bytes), r));
    }
    Ok(receipts)
}

/// Every digest a kept lock pins (indexes and their platform children).
fn pinned_digests(keep_paths: &[PathBuf]) -> Result<BTreeSet<Digest>, PruneError> {
    let mut pinned = BTreeSet::new();
    for p in keep_paths {
        let lock = Lock::load(p).map_err(|e| PruneError::Input {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        for e in lock.entries() {
            pinned.insert(e.digest.clone());
            pinned.extend(e.platforms.iter().map(|c| c.digest.clone()));
        }
    }
    Ok(pinned)
}

/// What ferry put there, per repository: manifests, and the tags it set.
type Ours = BTreeMap<String, BTreeSet<Digest>>;

fn ferrys_own(receipts: &[LoadedReceipt]) -> (Ours, BTreeSet<(String, String)>) {
    let mut ours: Ours = BTreeMap::new();
    let mut our_tags = BTreeSet::new();
    for (_, _, r) in receipts {
        for (repo, c) in &r.repositories {
            let set = ours.entry(repo.clone()).or_default();
            set.extend(c.manifests.iter().cloned());
            set.extend(c.tags.values().cloned());
            for t in c.tags.keys() {
                our_tags.insert((repo.clone(), t.clone()));
            }
        }
    }
    (ours, our_tags)
}

/// The target now: every tag (the snapshot an apply is checked against),
/// and the graph of every manifest reachable from ferry's and the tags.
struct Graph {
    snapshot: BTreeMap<String, BTreeMap<String, Digest>>,
    nodes: BTreeMap<(String, Digest), Node>,
    present: BTreeSet<(String, Digest)>,
}

/// A store's snapshot covers every repository (a concurrent import
/// anywhere in it refuses the apply); a registry's, the repositories
/// ferry touched.
async fn read_graph(mirror: &Mirror<'_>, ours: &Ours) -> Result<Graph, PruneError> {
    let mut g = Graph {
        snapshot: BTreeMap::new(),
        nodes: BTreeMap::new(),
        present: BTreeSet::new(),
    };
    for (repo, digests) in ours {
        let tags = mirror.tags(repo).await?;
        let mut queue: Vec<Digest> = digests
            .iter()
            .cloned()
            .chain(tags.values().cloned())
            .collect();
        while let Some(d) = queue.pop() {
            if g.nodes.contains_key(&(repo.clone(), d.clone())) {
                continue;
            }
            let Some(bytes) = mirror.manifest(repo, &d).await? else {
                g.nodes.insert((repo.clone(), d.clone()), Node::default());
                continue;
            };
            g.present.insert((repo.clone(), d.clone()));
            let parsed = manifest::parse(&bytes, None)
                .map_err(|e| mirror.read_err(format!("{repo}@{d}"), e))?;
            let node = Node {
                children: parsed.manifests.iter().map(|c| c.digest.clone()).collect(),
                blobs: parsed.blobs().map(|b| (b.digest.clone(), b.size)).collect(),
                subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            };
            queue.extend(node.children.iter().cloned());
            g.nodes.insert((repo.clone(), d), node);
        }
        g.snapshot.insert(repo.clone(), tags);
    }
    Ok(g)
}

/// What stays: pinned digests, what a foreign tag points at, their
/// children, and referrers of anything kept, to a fixed point.
fn keep_closure(
    g: &Graph,
    pinned: &BTreeSet<Digest>,
    ours: &Ours,
    our_tags: &BTreeSet<(String, String)>,
) -> BTreeSet<(String, Digest)> {
    let mut kept: BTreeSet<(String, Digest)> = BTreeSet::new();
    for (repo, d) in &g.present {
        if pinned.contains(d) {
            kept.insert((repo.clone(), d.clone()));
        }
    }
    for (repo, tags) in &g.snapshot {
        for (t, d) in tags {
            let foreign = !t.starts_with('@') && !our_tags.contains(&(repo.clone(), t.clone()));
            let not_ours = !ours.get(repo).is_some_and(|s| s.contains(d));
            if foreign || not_ours {
                kept.insert((repo.clone(), d.clone()));
            }
        }
    }
    let referrers = referrers_by_subject(g);
    // Everything a kept manifest reaches (children) or is referred to by.
    let mut queue: Vec<(String, Digest)> = kept.iter().cloned().collect();
    while let Some(key) = queue.pop() {
        let children = g
            .nodes
            .get(&key)
            .map(|n| n.children.as_slice())
            .unwrap_or(&[]);
        let refs = referrers.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        for c in children.iter().chain(refs) {
            let next = (key.0.clone(), c.clone());
            if kept.insert(next.clone()) {
                queue.push(next);
            }
        }
    }
    kept
}

/// Referrers by (repository, subject): an OCI `subject`, or a cosign-style
/// `sha256-<hex>[.sig|.att|.sbom]` tag.
fn referrers_by_subject(g: &Graph) -> BTreeMap<(String, Digest), Vec<Digest>> {
    let mut referrers: BTreeMap<(String, Digest), Vec<Digest>> = BTreeMap::new();
    for ((repo, d), n) in &g.nodes {
        if let Some(s) = &n.subject {
            referrers
                .entry((repo.clone(), s.clone()))
                .or_default()
                .push(d.clone());
        }
    }
    for (repo, tags) in &g.snapshot {
        for (t, d) in tags {
            if let Some(s) = tag_subject(t) {
                referrers
                    .entry((repo.clone(), s))
                    .or_default()
                    .push(d.clone());
            }
        }
    }
    referrers
}

/// What goes: ferry's manifests that are present and not kept (and their
/// present, unkept children); indexes (and referrers' subjects) first.
/// Also counts what stays and why.
fn deletions(
    g: &Graph,
    ours: &Ours,
    kept: &BTreeSet<(String, Digest)>,
) -> (Vec<Deletion>, BTreeMap<String, usize>) {
    let mut delete = Vec::new();
    let mut kept_why: BTreeMap<String, usize> = BTreeMap::new();
    for (repo, digests) in ours {
        // Tags by the digest they point at (sorted: a BTreeMap walk).
        let mut tags_of: BTreeMap<&Digest, Vec<String>> = BTreeMap::new();
        for (t, td) in &g.snapshot[repo] {
            if !t.starts_with('@') {
                tags_of.entry(td).or_default().push(t.clone());
            }
        }
        for d in going(g, repo, digests, kept) {
            let on = tags_of.get(&d).cloned().unwrap_or_default();
            delete.push(Deletion {
                repository: repo.clone(),
                digest: d,
                tags: on,
                reason: "listed in a receipt, pinned by no kept lock, referenced by nothing kept"
                    .into(),
            });
        }
        let stays = digests
            .iter()
            .filter(|d| kept.contains(&(repo.clone(), (*d).clone())))
            .count();
        if stays > 0 {
            *kept_why
                .entry("needed by a kept lock or a kept manifest".into())
                .or_default() += stays;
        }
    }
    (delete, kept_why)
}

/// One repository's manifests that go, parents first.
fn going(
    g: &Graph,
    repo: &str,
    digests: &BTreeSet<Digest>,
    kept: &BTreeSet<(String, Digest)>,
) -> Vec<Digest> {
    let here = |d: &Digest| (repo.to_string(), d.clone());
    let mut goes: Vec<Digest> = digests
        .iter()
        .filter(|d| g.present.contains(&here(d)) && !kept.contains(&here(d)))
        .cloned()
        .collect();
    // Children present in the repository and not kept go too, when a
    // receipt lists their parent.
    let mut extra = BTreeSet::new();
    for d in &goes {
        if let Some(n) = g.nodes.get(&here(d)) {
            for c in &n.children {
                if g.present.contains(&here(c)) && !kept.contains(&here(c)) {
                    extra.insert(c.clone());
                }
            }
        }
    }
    goes.extend(extra.into_iter().filter(|c| !digests.contains(c)));
    goes.sort_by_key(|d| {
        let is_parent = g
            .nodes
            .get(&here(d))
            .is_some_and(|n| !n.children.is_empty());
        (!is_parent, d.clone())
    });
    goes.dedup();
    goes
}

/// Blobs only deleted manifests reference, with their sizes.
fn freed_blobs(g: &Graph, gone: &BTreeSet<(String, Digest)>) -> BTreeMap<Digest, u64> {
    let mut kept_blobs: BTreeSet<Digest> = BTreeSet::new();
    let mut gone_blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    for (key, n) in &g.nodes {
        if !g.present.contains(key) {
            continue;
        }
        if gone.contains(key) {
            gone_blobs.extend(n.blobs.iter().cloned());
        } else {
            kept_blobs.extend(n.blobs.iter().map(|(d, _)| d.clone()));
        }
    }
    gone_blobs.retain(|d, _| !kept_blobs.contains(d));
    gone_blobs
}

/// The receipts as they will read after the apply.
fn receipts_after(
    receipts: Vec<LoadedReceipt>,
    gone: &BTreeSet<(String, Digest)>,
    gone_blobs: &BTreeMap<Digest, u64>,
) -> Vec<ReceiptUpdate> {
    let mut updates = Vec::new();
    for (path, before, r) in receipts {
        let mut after = r.clone();
        for (repo, c) in after.repositories.iter_mut() {
            c.manifests
                .retain(|d| !gone.contains(&(repo.clone(), d.clone())));
            c.tags
                .retain(|_, d| !gone.contains(&(repo.clone(), d.clone())));
            c.blobs.retain(|d| !gone_blobs.contains_key(d));
        }
        after
            .repositories
            .retain(|_, c| !(c.manifests.is_empty() && c.tags.is_empty() && c.blobs.is_empty()));
        updates.push(ReceiptUpdate {
            path,
            before,
            after,
        });
    }
    updates
}

/// Loads a plan file.
pub fn load_plan(path: &Path) -> Result<PrunePlan, PruneError> {
    let (plan, _): (PrunePlan, _) = load_json(path)?;
    if plan.plan_version != PLAN_VERSION {
        return Err(PruneError::Input {
            path: path.to_path_buf(),
            reason: format!(
                "plan version {} (this ferry reads {PLAN_VERSION})",
                plan.plan_version
            ),
        });
    }
    Ok(plan)
}

/// Checks that the target is as planned, apart from planned deletions.
async fn check(mirror: &Mirror<'_>, plan: &PrunePlan) -> Result<(), PruneError> {
    let changed = |change: String| PruneError::Changed {
        target: plan.target.clone(),
        change,
    };
    let going: BTreeSet<(&str, &Digest)> = plan
        .delete
        .iter()
        .map(|d| (d.repository.as_str(), &d.digest))
        .collect();
    for repo in mirror.repositories()? {
        if !plan.snapshot.contains_key(&repo) {
            return Err(changed(format!("the repository {repo} appeared")));
        }
    }
    for (repo, then) in &plan.snapshot {
        let now = mirror.tags(repo).await?;
        for (tag, d) in then {
            match now.get(tag) {
                Some(n) if n == d => {}
                None if going.contains(&(repo.as_str(), d)) => {}
                Some(n) => return Err(changed(format!("{repo}:{tag} now points at {n}, not {d}"))),
                None => return Err(changed(format!("{repo}:{tag} ({d}) is gone"))),
            }
        }
        for (tag, d) in &now {
            if !then.contains_key(tag) {
                return Err(changed(format!("{repo}:{tag} ({d}) appeared")));
            }
        }
    }
    for r in &plan.receipts {
        let bytes = std::fs::read(&r.path).map_err(|e| PruneError::Input {
            path: r.path.clone(),
            reason: e.to_string(),
        })?;
        if Digest::of(&bytes) != r.before && bytes != r.after.to_json() {
            return Err(PruneError::ReceiptChanged {
                path: r.path.clone(),
            });
        }
    }
    Ok(())
}

/// Executes exactly `plan` after checking the target has not changed.
/// Idempotent: a re-run after a kill finishes the job.
pub async fn apply(mirror: &Mirror<'_>, plan: &PrunePlan) -> Result<PruneReport, PruneError> {
    if mirror.target() != plan.target {
        return Err(PruneError::Changed {
            target: plan.target.clone(),
            change: format!("the plan is for {}, not {}", plan.target, mirror.target()),
        });
    }
    check(mirror, plan).await?;
    let mut report = PruneReport::default();
    match mirror {
        Mirror::Registry { client, host } => {
            for d in &plan.delete {
                let repo = Mirror::repo(host, &d.repository);
                match client.delete_manifest(&repo, &d.digest).await {
                    Ok(true) => report.deleted += 1,
                    Ok(false) => report.already_gone += 1,
                    Err(e) => {
                        let reason = if e.status() == Some(405) {
                            "405 Method Not Allowed: the registry does not allow deletes (CNCF distribution needs `storage: {delete: {enabled: true}}` in its configuration; Harbor needs a user with delete rights)".to_string()
                        } else {
                            ferry_registry::chain(&e)
                        };
                        return Err(PruneError::Delete {
                            target: plan.target.clone(),
                            repository: d.repository.clone(),
                            digest: d.digest.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        Mirror::Store(store) => {
            let going: BTreeSet<(String, Digest)> = plan
                .delete
                .iter()
                .map(|d| (d.repository.clone(), d.digest.clone()))
                .collect();
            let removed = store
                .retain_entries(|e| !going.contains(&(e.repository.clone(), e.digest.clone())))
                .map_err(|e| PruneError::Write {
                    path: store.dir().join("index.json"),
                    reason: e.to_string(),
                })?;
            report.deleted = removed;
            let (n, bytes) = store
                .remove_unreferenced_blobs()
                .map_err(|e| PruneError::Write {
                    path: store.dir().join("blobs"),
                    reason: e.to_string(),
                })?;
            report.blobs_removed = n;
            report.bytes_removed = bytes;
        }
    }
    for r in &plan.receipts {
        ferry_bundle::writer::write_atomic(&r.path, &r.after.to_json()).map_err(|e| {
            PruneError::Write {
                path: r.path.clone(),
                reason: e.to_string(),
            }
        })?;
        report.receipts_written += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_style_tags_name_their_subject() {
        let hex = "a".repeat(64);
        for t in [
            format!("sha256-{hex}"),
            format!("sha256-{hex}.sig"),
            format!("sha256-{hex}.att"),
            format!("sha256-{hex}.sbom"),
        ] {
            assert_eq!(tag_subject(&t).unwrap().hex(), hex, "{t}");
        }
        assert!(tag_subject("1.0").is_none());
        assert!(tag_subject("sha256-xyz.sig").is_none());
    }
}
