//! What goes where: each registry item's target repository (two sources on
//! one target tag refused), its manifests (children first) and blobs, which
//! blobs the target already has, where each missing blob is uploaded first,
//! and provenance ordered after its subjects.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use ferry_bundle::meta::{BundleMeta, Item};
use ferry_bundle::reader::Head;
use ferry_bundle::{Digest, Reference};
use ferry_registry::{Client, Repo};

use super::{ImportError, ImportOptions, Outlines, PlanEntry};
use crate::dest::Dest;
use crate::target::{Collision, TargetError};
use crate::tree;
use crate::{Event, Events};

/// A repository shared by the plan, the blobs it has and the blobs to
/// upload: one allocation per item, however many blobs refer to it.
pub(super) type SharedRepo = Arc<Repo>;

/// One item of bundle.json, by its place in the head's meta: the run
/// holds the meta already, so a plan refers to its item instead of
/// keeping a copy (issue 17: what an import keeps per reference).
pub(super) struct ItemRef {
    meta: Arc<BundleMeta>,
    index: usize,
}

impl ItemRef {
    /// The item at `index` of `meta.items`, which must be in range.
    fn new(meta: &Arc<BundleMeta>, index: usize) -> Option<ItemRef> {
        (index < meta.items.len()).then(|| ItemRef {
            meta: meta.clone(),
            index,
        })
    }
}

impl Deref for ItemRef {
    type Target = Item;
    fn deref(&self) -> &Item {
        // In range: checked when made, and the meta never changes.
        &self.meta.items[self.index]
    }
}

/// One registry item: where it goes and what it needs.
pub(super) struct ItemPlan {
    pub(super) item: ItemRef,
    pub(super) reference: Reference,
    pub(super) repo: SharedRepo,
    /// Manifests to push, children first.
    pub(super) manifests: Vec<Digest>,
    /// Config/layer blobs the item needs.
    pub(super) blobs: Vec<(Digest, u64)>,
    /// Index children left out by a platform filter.
    pub(super) sparse: bool,
    /// None of its blobs was in its repository when planned: no manifest
    /// that names one can be there yet (a registry accepts a manifest only
    /// once its blobs are), so commit pushes them without asking first.
    pub(super) none_present: bool,
}

/// and blobs, each once (the sets make every step constant time).
#[derive(Default)]
struct Walked {
    manifests: Vec<Digest>,
    seen_manifests: HashSet<Digest>,
    blobs: Vec<(Digest, u64)>,
    seen_blobs: HashSet<Digest>,
    sparse: bool,
}

impl Walked {
    fn blob(&mut self, d: &Digest, size: u64) {
        if self.seen_blobs.insert(d.clone()) {
            self.blobs.push((d.clone(), size));
        }
    }
}

/// Walks an item's manifests from `d` down, collecting manifests (children
/// first) and blobs.
fn walk(
    d: &Digest,
    manifests: &Outlines,
    absent: &HashSet<(Digest, Digest)>,
    out: &mut Walked,
    depth: usize,
) {
    // As deep as the reader accepts: a manifest at MAX_DEPTH has its blobs
    // deeper than that, so its item is refused; none of it is uploaded.
    if depth >= ferry_bundle::reader::MAX_DEPTH || out.seen_manifests.contains(d) {
        return;
    }
    let Some(outline) = manifests.get(d) else {
        return;
    };
    if outline.index {
        for c in outline.children.iter() {
            if absent.contains(&(d.clone(), c.digest.clone())) {
                out.sparse = true;
                continue;
            }
            if c.manifest {
                walk(&c.digest, manifests, absent, out, depth + 1);
            } else {
                out.blob(&c.digest, c.size);
            }
        }
    } else {
        for b in outline.children.iter() {
            out.blob(&b.digest, b.size);
        }
    }
    if out.seen_manifests.insert(d.clone()) {
        out.manifests.push(d.clone());
    }
}

/// The target reference shown for an item: repository and tag, or @digest.
pub(super) fn target_ref(repo: &Repo, r: &Reference, digest: &Digest) -> String {
    match &r.tag {
        Some(t) => format!("{}/{}:{}", repo.host, repo.path, t),
        None => format!("{}/{}@{}", repo.host, repo.path, digest),
    }
}

/// The registry plan.
pub(super) struct Planned {
    /// Items, in commit order.
    pub(super) items: Vec<ItemPlan>,
    /// (repository, blob) pairs the target already has.
    pub(super) present: HashSet<(SharedRepo, Digest)>,
    /// Blobs to upload, each to the first repository that needs it.
    pub(super) first_repo: HashMap<Digest, SharedRepo>,
    /// The plan as reported.
    pub(super) entries: Vec<PlanEntry>,
    /// Bytes of the blobs to upload (each once).
    pub(super) upload_bytes: u64,
}

/// Plans the registry side (nothing without a target registry): the items
/// ([`map_items`]), what the target has ([`present_blobs`], [`check_base`]),
/// where each missing blob goes first.
pub(super) async fn make_plan(
    client: &Client,
    dest: &Dest,
    opts: &ImportOptions,
    head: &Head,
    manifests: &Outlines,
    events: &Events,
) -> Result<Planned, ImportError> {
    let Some(target) = &opts.target else {
        return Ok(Planned {
            items: Vec::new(),
            present: HashSet::new(),
            first_repo: HashMap::new(),
            entries: Vec::new(),
            upload_bytes: 0,
        });
    };
    let mut plans = subjects_first(map_items(opts, target, head, manifests)?);
    let (present, present_count) = {
        let pairs = blob_pairs(&plans);
        let mut present = present_blobs(client, dest, opts, target, head, &plans, &pairs).await;
        check_base(dest, opts, target, head, &plans, &mut present).await?;
        let count = pairs
            .iter()
            .filter(|(r, d)| present.contains(&(SharedRepo::clone(r), (*d).clone())))
            .count();
        (present, count)
    };
    mark_none_present(&mut plans, &present);
    let mut first: HashMap<Digest, SharedRepo> = HashMap::new();
    let mut entries = Vec::new();
    let sizes: HashMap<&Digest, u64> = head
        .meta
        .blobs
        .iter()
        .map(|b| (&b.digest, b.size))
        .collect();
    let mut upload_bytes = 0;
    let present_anywhere: HashSet<&Digest> = present.iter().map(|(_, d)| d).collect();
    for p in &plans {
        let mut n = 0;
        for (d, _) in &p.blobs {
            let anywhere = present_anywhere.contains(d);
            if !anywhere && !first.contains_key(d) {
                first.insert(d.clone(), p.repo.clone());
                upload_bytes += sizes.get(d).copied().unwrap_or(0);
                n += 1;
            }
        }
        entries.push(PlanEntry {
            kind: p.item.kind.as_str().into(),
            source: p.item.reference.clone(),
            target: target_ref(&p.repo, &p.reference, &p.item.digest),
            digest: p.item.digest.clone(),
            upload_blobs: n,
        });
    }
    events(Event::Planned {
        items: plans.len(),
        upload: first.len(),
        upload_bytes,
        present: present_count,
    });
    Ok(Planned {
        items: plans,
        present,
        first_repo: first,
        entries,
        upload_bytes,
    })
}

/// Each registry item's target repository, manifests and blobs; two
/// sources on one target tag are refused.
// `ImportError` is the crate's public error, which `import` returns as is.
#[allow(clippy::result_large_err)]
fn map_items(
    opts: &ImportOptions,
    target: &crate::target::Target,
    head: &Head,
    manifests: &Outlines,
) -> Result<Vec<ItemPlan>, ImportError> {
    let absent: HashSet<(Digest, Digest)> = head
        .meta
        .absent
        .iter()
        .map(|a| (a.parent.clone(), a.digest.clone()))
        .collect();
    let mut plans = Vec::new();
    // Each target tag is claimed by one source: two sources that map to one
    // repository and tag (`--flatten`, `--map`, hosts that map alike) with
    // different content would both report ok while the last push wins.
    let mut tags: HashMap<(String, String, String), (String, Digest)> = HashMap::new();
    for (index, item) in
        head.meta.items.iter().enumerate().filter(|(_, i)| {
            tree::is_registry_kind(i.kind) && (opts.referrers || i.subject.is_none())
        })
    {
        let reference =
            Reference::parse(&item.reference).map_err(|e| ImportError::Task(e.to_string()))?;
        let repo = Arc::new(opts.mapping.map(target, &reference)?);
        if let Some(tag) = &reference.tag {
            let key = (repo.host.clone(), repo.path.clone(), tag.clone());
            match tags.get(&key) {
                Some((first, digest)) if digest != &item.digest => {
                    return Err(ImportError::Target(TargetError::Collision(Box::new(
                        Collision {
                            target: format!("{}/{}:{tag}", repo.host, repo.path),
                            first: first.clone(),
                            first_digest: digest.clone(),
                            second: item.reference.clone(),
                            second_digest: item.digest.clone(),
                        },
                    ))));
                }
                Some(_) => {} // the same content under one tag: no conflict
                None => {
                    tags.insert(key, (item.reference.clone(), item.digest.clone()));
                }
            }
        }
        let mut walked = Walked::default();
        walk(&item.digest, manifests, &absent, &mut walked, 0);
        let Some(item) = ItemRef::new(&head.meta, index) else {
            continue; // enumerated from these items: always in range
        };
        plans.push(ItemPlan {
            item,
            reference,
            repo,
            manifests: walked.manifests,
            blobs: walked.blobs,
            sparse: walked.sparse,
            none_present: false,
        });
    }
    Ok(plans)
}

/// Which blobs the target has already, in which repositories (HEAD of
/// every (repository, blob) pair the plans need, each once; none in a
/// repository the target does not know, see [`Dest::unknown_repos`], but
/// for a differential base's blobs, which cannot be uploaded): those of
/// `pairs` present.
async fn present_blobs(
    client: &Client,
    dest: &Dest,
    opts: &ImportOptions,
    target: &crate::target::Target,
    head: &Head,
    plans: &[ItemPlan],
    pairs: &[(&SharedRepo, &Digest)],
) -> HashSet<(SharedRepo, Digest)> {
    let mut present = HashSet::new();
    // A store (opened, or not opened because this is a dry run) is never
    // pinged as a registry.
    let reachable =
        opts.store.is_some() || (!target.is_store() && client.ping(&target.host).await.is_ok());
    if !opts.dry_run || reachable {
        let unknown = dest
            .unknown_repos(plans.iter().map(|p| &*p.repo), opts.jobs)
            .await;
        let base: HashSet<&Digest> = head.meta.base.iter().map(|b| &b.digest).collect();
        let asked = pairs
            .iter()
            .filter(|(r, d)| !unknown.contains(&***r) || base.contains(d));
        // Only the answers found are kept, as they come.
        present = stream::iter(asked)
            .map(|&(repo, d)| async move { dest.head_blob(repo, d).await.then_some((repo, d)) })
            .buffer_unordered(opts.jobs.max(1) * 2)
            .filter_map(|found| async move { found })
            .map(|(repo, d)| (repo.clone(), d.clone()))
            .collect()
            .await;
    }
    present
}

/// Every (repository, blob) pair the plans need, each once, in plan order
/// (borrowed: a copy of each is one more per reference, issue 17).
fn blob_pairs(plans: &[ItemPlan]) -> Vec<(&SharedRepo, &Digest)> {
    let mut paired: HashSet<(&SharedRepo, &Digest)> = HashSet::new();
    plans
        .iter()
        .flat_map(|p| p.blobs.iter().map(move |(d, _)| (&p.repo, d)))
        .filter(|pair| paired.insert(*pair))
        .collect()
}

/// Marks the items none of whose blobs is in their repository (see
/// [`ItemPlan::none_present`]); an item without blobs is never marked.
fn mark_none_present(plans: &mut [ItemPlan], present: &HashSet<(SharedRepo, Digest)>) {
    let here: HashSet<(&SharedRepo, &Digest)> = present.iter().map(|(r, d)| (r, d)).collect();
    for p in plans.iter_mut() {
        p.none_present =
            !p.blobs.is_empty() && !p.blobs.iter().any(|(d, _)| here.contains(&(&p.repo, d)));
    }
}

/// A differential bundle leaves out blobs the target already holds: each
/// must be there (in the item's repository, or where the receipt saw it,
/// to be mounted from) before anything is pushed.
async fn check_base(
    dest: &Dest,
    opts: &ImportOptions,
    target: &crate::target::Target,
    head: &Head,
    plans: &[ItemPlan],
    present: &mut HashSet<(SharedRepo, Digest)>,
) -> Result<(), ImportError> {
    if !head.meta.base.is_empty() && !opts.dry_run {
        let mut missing = Vec::new();
        let mut present_anywhere: HashSet<Digest> =
            present.iter().map(|(_, d)| d.clone()).collect();
        let needed: HashSet<&Digest> = plans
            .iter()
            .flat_map(|p| p.blobs.iter().map(|(d, _)| d))
            .collect();
        for b in &head.meta.base {
            if present_anywhere.contains(&b.digest) {
                continue;
            }
            let mut found = false;
            if let Some(hint) = &b.repository {
                let repo = Arc::new(Repo {
                    host: target.host.clone(),
                    path: hint.clone(),
                });
                if dest.head_blob(&repo, &b.digest).await {
                    present.insert((repo, b.digest.clone()));
                    present_anywhere.insert(b.digest.clone());
                    found = true;
                }
            }
            if !found && needed.contains(&b.digest) {
                missing.push(b.digest.clone());
            }
        }
        if !missing.is_empty() {
            missing.sort();
            return Err(ImportError::MissingBase(missing));
        }
    }
    Ok(())
}

/// Orders the plans so that provenance comes after what it refers to:
/// items without a subject first (in bundle order), then each provenance
/// item one level after the item that carries its subject (a signature of
/// an attestation after the attestation).
fn subjects_first(plans: Vec<ItemPlan>) -> Vec<ItemPlan> {
    let carriers = carriers(&plans);
    // The item that carries an item's subject, if any.
    let parent = |i: usize| -> Option<usize> {
        let subject = plans[i].item.subject.as_ref()?;
        carriers
            .get(&(&plans[i].repo, subject))
            .copied()
            .filter(|&q| q != i)
    };
    // depth(i) = 0 without a subject, else 1 + depth(carrier of the
    // subject) (0 without one). Each depth is computed once, memoised along
    // the chain: linear in the number of items.
    let mut depths: Vec<Option<usize>> = vec![None; plans.len()];
    for start in 0..plans.len() {
        let mut chain = Vec::new();
        let mut cur = Some(start);
        let mut acc = 0;
        while let Some(c) = cur {
            if let Some(d) = depths[c] {
                acc = d;
                break;
            }
            if chain.len() > plans.len() {
                break; // a cycle cannot happen with digests; stay safe anyway
            }
            chain.push(c);
            cur = parent(c);
        }
        for &i in chain.iter().rev() {
            acc += usize::from(plans[i].item.subject.is_some());
            depths[i] = Some(acc);
        }
    }
    let depths: Vec<usize> = depths.into_iter().map(|d| d.unwrap_or(0)).collect();
    let mut keyed: Vec<(usize, ItemPlan)> = depths.into_iter().zip(plans).collect();
    keyed.sort_by_key(|(d, _)| *d);
    keyed.into_iter().map(|(_, p)| p).collect()
}

/// Which plan carries each (repository, manifest) that is some plan's
/// subject: the first one, as a linear scan would find it. Only subjects
/// are ever looked up, and most manifests are none (issue 17: what an
/// import keeps per reference).
pub(super) fn carriers(plans: &[ItemPlan]) -> HashMap<(&SharedRepo, &Digest), usize> {
    let subjects: HashSet<&Digest> = plans
        .iter()
        .filter_map(|p| p.item.subject.as_ref())
        .collect();
    let mut out = HashMap::new();
    if subjects.is_empty() {
        return out;
    }
    for (i, p) in plans.iter().enumerate() {
        for m in p.manifests.iter().filter(|m| subjects.contains(m)) {
            out.entry((&p.repo, m)).or_insert(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_bundle::manifest;
    use ferry_bundle::meta::{IndexPin, Kind};

    fn plan(reference: &str, manifests: &[&Digest], subject: Option<&Digest>) -> ItemPlan {
        let digest = manifests[0].clone();
        let item = Item {
            kind: Kind::Image,
            reference: reference.into(),
            digest,
            media_type: manifest::OCI_MANIFEST.into(),
            size: 1,
            platforms: vec![],
            path: None,
            subject: subject.cloned(),
        };
        let meta = Arc::new(BundleMeta {
            format_version: ferry_bundle::meta::FORMAT_VERSION,
            tool: "test".into(),
            name: "test".into(),
            index: IndexPin {
                digest: Digest::of(b"[]"),
                size: 2,
            },
            items: vec![item],
            blobs: vec![],
            absent: vec![],
            base: vec![],
            verification: None,
            origin: None,
        });
        ItemPlan {
            item: ItemRef::new(&meta, 0).unwrap(),
            reference: Reference::parse(reference).unwrap(),
            repo: Arc::new(Repo {
                host: "mirror.example".into(),
                path: "a/b".into(),
            }),
            manifests: manifests.iter().map(|d| (*d).clone()).collect(),
            blobs: vec![],
            sparse: false,
            none_present: false,
        }
    }

    #[test]
    fn provenance_is_committed_after_its_subject_and_its_subjects_provenance() {
        let (index, child) = (Digest::of(b"index"), Digest::of(b"child"));
        let (att, att_sig, sig) = (
            Digest::of(b"att"),
            Digest::of(b"att-sig"),
            Digest::of(b"sig"),
        );
        // Bundle order (sorted by reference) puts provenance before subjects.
        let plans = vec![
            plan(
                "r.io/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                &[&att_sig],
                Some(&att),
            ),
            plan("r.io/a/b:a-sig", &[&sig], Some(&index)),
            plan("r.io/a/b:b-att", &[&att], Some(&child)),
            plan("r.io/a/b:c-image", &[&index, &child], None),
        ];
        let order: Vec<String> = subjects_first(plans)
            .into_iter()
            .map(|p| p.item.reference.clone())
            .collect();
        assert_eq!(
            order,
            vec![
                "r.io/a/b:c-image",
                "r.io/a/b:a-sig",
                "r.io/a/b:b-att",
                "r.io/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ]
        );
    }
}
