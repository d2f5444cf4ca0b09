//! Commit: pushing each item's manifests, children first, tags last
//! ([`push_manifests`]), once every blob it needs is at the target;
//! provenance only where its subject landed; the `sha256-<hex>` referrers
//! fallback tag on a registry without the referrers API.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};

use ferry_bundle::manifest;
use ferry_bundle::reader::Head;
use ferry_bundle::Digest;
use ferry_registry::{chain, Client, Repo};

use super::plan::{carriers, target_ref, ItemPlan, SharedRepo};
use super::{ImportOptions, ImportRun, ItemOutcome, Outlines};
use crate::dest::Dest;
use crate::receipt::{Receipt, RECEIPT_VERSION};
use crate::Event;

/// What pushing one item's manifests gives: a note (and the digest its tag
/// points at) when it had to land differently, or why it did not land.
type PushResult = Result<Option<(String, Digest)>, String>;

/// Manifests one item pushed, and found already at the target.
#[derive(Default)]
struct PushCount {
    pushed: usize,
    present: usize,
}

/// The most items in one wave. What a wave holds while it is pushed (each
/// item's outcome, why it is refused) is per item: bounded, it stays flat
/// in the number of references (issue 17), while a wave this long still
/// keeps `--jobs` pushes in flight all the way but for its last few.
const MAX_WAVE: usize = 256;

/// The end (exclusive) of the wave starting at `start`: consecutive items
/// that share no (repository, manifest) and none of which is the subject
/// of another, so they can be pushed side by side; at most [`MAX_WAVE`].
/// Each wave holds at least one item.
fn wave_end(plans: &[ItemPlan], start: usize) -> usize {
    let mut claimed: HashSet<(&SharedRepo, &Digest)> = HashSet::new();
    let mut end = start;
    for p in plans[start..].iter().take(MAX_WAVE) {
        let subject_here = p
            .item
            .subject
            .as_ref()
            .is_some_and(|s| claimed.contains(&(&p.repo, s)));
        let shares = p.manifests.iter().any(|m| claimed.contains(&(&p.repo, m)))
            || claimed.contains(&(&p.repo, &p.item.digest));
        if end > start && (subject_here || shares) {
            break;
        }
        claimed.extend(p.manifests.iter().map(|m| (&p.repo, m)));
        claimed.insert((&p.repo, &p.item.digest));
        end += 1;
    }
    end
}

/// The subjects landed so far, and which plan carries each: only a
/// manifest some plan names as its subject is recorded, since only those
/// are asked about ([`ImportRun::refusal`]).
struct Landed<'c, 'l> {
    carried_by: &'c HashMap<(&'c SharedRepo, &'c Digest), usize>,
    manifests: &'l mut HashSet<(SharedRepo, Digest)>,
}

/// How many items not yet committed need each manifest: once none does,
/// its outline and bytes are let go (the file side keeps its own items'
/// manifests, which the store records after the commit). The manifests are the run's
/// largest state per reference, and the commit is where the receipt and
/// the report grow (issue 17: the import's peak).
struct ManifestUses {
    left: HashMap<Digest, usize>,
}

impl ManifestUses {
    fn new(plans: &[ItemPlan]) -> ManifestUses {
        let mut left: HashMap<Digest, usize> = HashMap::new();
        for p in plans {
            for d in Self::used_by(p) {
                *left.entry(d.clone()).or_default() += 1;
            }
        }
        ManifestUses { left }
    }

    /// The manifests an item's commit reads: its own (its tag, its
    /// referrer descriptor, its store entry) and those it pushes.
    fn used_by(p: &ItemPlan) -> impl Iterator<Item = &Digest> {
        std::iter::once(&p.item.digest).chain(p.manifests.iter().filter(|m| **m != p.item.digest))
    }

    /// The items of `wave` are committed (landed or not): what only they
    /// needed is let go.
    fn release(&mut self, wave: &[ItemPlan], manifests: &mut Outlines) {
        for p in wave {
            for d in Self::used_by(p) {
                if let Some(n) = self.left.get_mut(d) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.left.remove(d);
                        manifests.remove(d);
                    }
                }
            }
        }
    }
}

/// OCI 1.1 referrers pushed, per (host, repository, subject): their
/// fallback-tag descriptors.
pub(super) type ReferrersPushed = BTreeMap<(String, String, Digest), Vec<serde_json::Value>>;

/// An empty receipt for this bundle at this target.
pub(super) fn new_receipt(opts: &ImportOptions, h: &Head) -> Receipt {
    Receipt {
        receipt_version: RECEIPT_VERSION,
        target: match &opts.target {
            Some(t) if t.prefix.is_empty() => t.host.clone(),
            Some(t) => format!("{}/{}", t.host, t.prefix),
            None => String::new(),
        },
        files: BTreeMap::new(),
        bundle: h.meta.name.clone(),
        repositories: BTreeMap::new(),
    }
}

impl ImportRun<'_> {
    /// Commits in plan order (provenance after its subject): an item lands
    /// only if the bundle did not fail it, its subject landed and every
    /// blob it needs is at the target. Items go in waves ([`wave_end`]):
    /// the items of a wave share no manifest and hold no subject of one
    /// another, so their pushes run side by side (`--jobs`); outcomes are
    /// taken in plan order, after the items whose push failed were pushed
    /// once more alone ([`retry_alone`]).
    pub(super) async fn commit_items(
        &mut self,
        failed_items: &HashMap<String, String>,
        upload_errors: &HashMap<Digest, String>,
        receipt: &mut Receipt,
    ) -> ReferrersPushed {
        // Subjects now at the target (provenance goes only where its subject is).
        let mut landed: HashSet<(SharedRepo, Digest)> = HashSet::new();
        let mut referrers_pushed = ReferrersPushed::new();
        let plans = std::mem::take(&mut self.plans);
        let carried_by = carriers(&plans);
        let mut uses = ManifestUses::new(&plans);
        let mut start = 0;
        while start < plans.len() {
            let end = wave_end(&plans, start);
            let wave = &plans[start..end];
            // Why an item cannot land, checked before anything is pushed.
            let mut refused: Vec<Option<String>> = Vec::with_capacity(wave.len());
            for p in wave {
                refused.push(
                    self.refusal(p, failed_items, upload_errors, &carried_by, &landed)
                        .await,
                );
            }
            let dest = &self.dest;
            let manifests = &self.outlines;
            let mut pushed: Vec<Option<(PushResult, PushCount)>> =
                stream::iter(wave.iter().zip(&refused))
                    .map(|(p, why)| async move {
                        if why.is_some() {
                            return None;
                        }
                        let mut count = PushCount::default();
                        let r = push_manifests(dest, p, manifests, &mut count, true).await;
                        Some((r, count))
                    })
                    .buffered(self.opts.jobs.max(1))
                    .collect()
                    .await;
            if refused.iter().filter(|why| why.is_none()).count() > 1 {
                retry_alone(dest, wave, manifests, &mut pushed).await;
            }
            for ((p, why), push) in wave.iter().zip(refused).zip(pushed) {
                let target = target_ref(&p.repo, &p.reference, &p.item.digest);
                let outcome = |note: Option<String>| ItemOutcome {
                    source: p.item.reference.clone(),
                    target: target.clone(),
                    digest: Some(p.item.digest.clone()),
                    note,
                };
                let (result, count) = match (why, push) {
                    (Some(why), _) => {
                        self.report.failed.push(outcome(Some(why)));
                        continue;
                    }
                    (None, Some(push)) => push,
                    (None, None) => continue,
                };
                self.report.manifests_pushed += count.pushed;
                self.report.manifests_present += count.present;
                match result {
                    Ok(note) => {
                        let landed = Landed {
                            carried_by: &carried_by,
                            manifests: &mut landed,
                        };
                        self.record_landed(p, &note, receipt, landed, &mut referrers_pushed);
                        (self.events)(Event::Committed {
                            reference: p.item.reference.clone(),
                            target: target.clone(),
                        });
                        let text = note.map(|(t, _)| t);
                        if let Some(t) = &text {
                            (self.events)(Event::Warning { message: t.clone() });
                        }
                        self.report.loaded.push(outcome(text));
                    }
                    Err(why) => self.report.failed.push(outcome(Some(why))),
                }
            }
            uses.release(&plans[start..end], &mut self.outlines);
            start = end;
        }
        self.plans = plans;
        referrers_pushed
    }

    /// Why `p` cannot land (`None` when it can): the bundle failed it, its
    /// carried subject is not at the target, or a blob it needs is missing.
    async fn refusal(
        &self,
        p: &ItemPlan,
        failed_items: &HashMap<String, String>,
        upload_errors: &HashMap<Digest, String>,
        carried_by: &HashMap<(&SharedRepo, &Digest), usize>,
        landed: &HashSet<(SharedRepo, Digest)>,
    ) -> Option<String> {
        if let Some(why) = failed_items.get(p.item.reference.as_str()) {
            return Some(why.clone());
        }
        if let Some(subject) = &p.item.subject {
            let carried = carried_by.contains_key(&(&p.repo, subject));
            if carried
                && !landed.contains(&(p.repo.clone(), subject.clone()))
                && self
                    .dest
                    .head_manifest(&p.repo, &subject.to_string())
                    .await
                    .is_none()
            {
                return Some(format!(
                    "its subject {subject} did not land at the target; provenance not pushed"
                ));
            }
        }
        let (d, _) = p
            .blobs
            .iter()
            .find(|(d, _)| !self.present.contains(&(p.repo.clone(), d.clone())))?;
        let why = upload_errors
            .get(d)
            .cloned()
            .unwrap_or_else(|| "not at the target".into());
        Some(format!(
            "blob {d} is not at the target ({why}); no manifest pushed"
        ))
    }

    /// Records a committed item: the store's untagged entry, the receipt,
    /// the manifests landed, the referrer it adds to its subject.
    fn record_landed(
        &self,
        p: &ItemPlan,
        note: &Option<(String, Digest)>,
        receipt: &mut Receipt,
        landed: Landed<'_, '_>,
        referrers_pushed: &mut ReferrersPushed,
    ) {
        if let Some(store) = &self.opts.store {
            // Tagged or not, the entry records the item it came from (a
            // tag's entry again, over the one `put_manifest` made).
            let pointed = note.as_ref().map_or(&p.item.digest, |(_, d)| d);
            let (media_type, size) = match self.outlines.get(pointed) {
                Some(o) => (o.media_type.clone(), o.bytes.len() as u64),
                None => (p.item.media_type.clone(), p.item.size),
            };
            store.add_entry(crate::store::Entry {
                repository: p.repo.path.clone(),
                tag: p.reference.tag.clone(),
                digest: pointed.clone(),
                media_type,
                size,
                origin: crate::store::EntryOrigin::of(&p.item).ok(),
            });
        }
        let content = receipt.repositories.entry(p.repo.path.clone()).or_default();
        content.blobs.extend(p.blobs.iter().map(|(d, _)| d.clone()));
        if let Some(tag) = &p.reference.tag {
            let pointed = note
                .as_ref()
                .map(|(_, d)| d.clone())
                .unwrap_or_else(|| p.item.digest.clone());
            content.tags.insert(tag.clone(), pointed);
        }
        let pushed_index = note.is_none() || !p.sparse;
        for m in &p.manifests {
            if m != &p.item.digest || pushed_index {
                content.manifests.insert(m.clone());
                if landed.carried_by.contains_key(&(&p.repo, m)) {
                    landed.manifests.insert((p.repo.clone(), m.clone()));
                }
            }
        }
        if let (Some(subject), Some(o)) = (&p.item.subject, self.outlines.get(&p.item.digest)) {
            if o.subject.as_ref() == Some(subject) {
                referrers_pushed
                    .entry((p.repo.host.clone(), p.repo.path.clone(), subject.clone()))
                    .or_default()
                    .push(crate::referrers::descriptor(
                        o.media_type.as_ref(),
                        &o.bytes,
                    ));
            }
        }
    }

    /// Registries without the referrers API: the `sha256-<hex>` fallback tag.
    pub(super) async fn push_fallback_tags(
        &mut self,
        referrers_pushed: ReferrersPushed,
        receipt: &mut Receipt,
    ) {
        let Dest::Registry(c) = &self.dest else {
            return;
        };
        let mut has_api: HashMap<String, bool> = HashMap::new();
        for ((host, path, subject), add) in referrers_pushed {
            let repo = Repo { host, path };
            let api = match has_api.get(&repo.host) {
                Some(v) => *v,
                None => {
                    let v = matches!(c.referrers(&repo, &subject).await, Ok(Some(_)));
                    has_api.insert(repo.host.clone(), v);
                    v
                }
            };
            if api {
                continue; // the registry lists referrers from their `subject`
            }
            let tag = subject.fallback_tag();
            let target = format!("{}/{}:{tag}", repo.host, repo.path);
            match update_fallback(c, &repo, &subject, &add).await {
                Ok(d) => {
                    let content = receipt.repositories.entry(repo.path.clone()).or_default();
                    content.tags.insert(tag, d.clone());
                    content.manifests.insert(d);
                    (self.events)(Event::Committed {
                        reference: format!("referrers of {subject}"),
                        target,
                    });
                }
                Err(why) => self.report.failed.push(ItemOutcome {
                    source: format!("referrers of {subject}"),
                    target,
                    digest: None,
                    note: Some(why),
                }),
            }
        }
    }
}

/// Reads the `sha256-<hex>` fallback tag of `subject`, adds `add` and pushes
/// it back when it changed; returns the digest the tag points at.
async fn update_fallback(
    client: &Client,
    repo: &Repo,
    subject: &Digest,
    add: &[serde_json::Value],
) -> Result<Digest, String> {
    let tag = subject.fallback_tag();
    let existing = match client.get_manifest(repo, &tag).await {
        Ok(m) => Some(m.bytes),
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            return Err(format!(
                "reading the referrers fallback tag {tag} failed: {}",
                chain(&e)
            ))
        }
    };
    match crate::referrers::merged(subject, existing.as_deref(), add).map_err(|e| e.to_string())? {
        None => Ok(Digest::of(existing.as_deref().unwrap_or_default())),
        Some(bytes) => client
            .put_manifest(repo, &tag, manifest::OCI_INDEX, Bytes::from(bytes))
            .await
            .map_err(|e| {
                format!(
                    "pushing the referrers fallback tag {tag} failed: {}",
                    chain(&e)
                )
            }),
    }
}

/// Pushes once more, one at a time and in plan order, the items of a wave
/// whose push failed. Side by side, a registry outage (a restart, a proxy
/// that drops connections) meets several requests at once, and each spends
/// its retries while the outage lasts; pushed alone after the wave, an item
/// gets the whole retry budget it had when commits went one at a time.
/// Pushing again is idempotent: what the first try pushed is only HEADed
/// (and counted as pushed, not present).
async fn retry_alone(
    dest: &Dest,
    wave: &[ItemPlan],
    manifests: &Outlines,
    pushed: &mut [Option<(PushResult, PushCount)>],
) {
    for (p, slot) in wave.iter().zip(pushed.iter_mut()) {
        let Some((Err(_), first)) = slot else {
            continue;
        };
        let mut count = PushCount::default();
        // Asked again: what the first try pushed is found, not pushed twice.
        let r = push_manifests(dest, p, manifests, &mut count, false).await;
        count.present = count.present.saturating_sub(first.pushed);
        count.pushed += first.pushed;
        *slot = Some((r, count));
    }
}

/// Whether manifest `d` of `p` is known to be absent from the target
/// without asking: none of the item's blobs was in its repository when
/// planned ([`ItemPlan::none_present`]) and `d` is a manifest that names
/// blobs (an index names manifests, which may be there on their own).
fn known_absent(p: &ItemPlan, d: &Digest, manifests: &Outlines, trust_plan: bool) -> bool {
    trust_plan && p.none_present && manifests.get(d).is_some_and(|o| o.names_blobs())
}

/// Pushes an item's manifests children-first, then its tag. Returns a note
/// (and the digest the tag points at) when it had to land differently.
///
/// A tagged item's top manifest goes up once, by its tag (the registry
/// stores the manifest under its digest too); existence checks (HEAD) are
/// left out where the plan already knows the answer ([`known_absent`],
/// unless `trust_plan` is false: a second push after a failed one asks).
async fn push_manifests(
    dest: &Dest,
    p: &ItemPlan,
    manifests: &Outlines,
    count: &mut PushCount,
    trust_plan: bool,
) -> PushResult {
    let mut note = None;
    let tagged_top = p
        .reference
        .tag
        .as_ref()
        .filter(|_| p.manifests.contains(&p.item.digest));
    for d in &p.manifests {
        let Some(o) = manifests.get(d) else {
            return Err(format!("manifest {d} missing from the bundle"));
        };
        let (mt, bytes) = (&o.media_type, &o.bytes);
        if !known_absent(p, d, manifests, trust_plan)
            && dest.head_manifest(&p.repo, &d.to_string()).await.is_some()
        {
            count.present += 1;
            continue; // a tag is still pointed at it below
        }
        if let Some(tag) = tagged_top.filter(|_| d == &p.item.digest) {
            // Not there, so no tag points at it yet: one PUT, by the tag,
            // stores it and tags it.
            put_top(
                dest,
                p,
                d,
                tag,
                (mt.as_ref(), bytes),
                manifests,
                count,
                &mut note,
            )
            .await?;
            return Ok(note);
        }
        match dest
            .put_manifest(&p.repo, &d.to_string(), mt.as_ref(), bytes.clone())
            .await
        {
            Ok(_) => count.pushed += 1,
            Err(e) => sparse_fallback(p, d, &e, &mut note)?,
        }
    }
    if let Some(tag) = &p.reference.tag {
        let (digest, mt, bytes) = match &note {
            Some((_, child)) => {
                let o = manifests.get(child).ok_or("child manifest missing")?;
                (child.clone(), &o.media_type, &o.bytes)
            }
            None => {
                let o = manifests.get(&p.item.digest).ok_or("manifest missing")?;
                (p.item.digest.clone(), &o.media_type, &o.bytes)
            }
        };
        tag_to(dest, p, tag, &digest, mt.as_ref(), bytes).await?;
    }
    Ok(note)
}

/// Points `tag` at `digest` unless it already does.
async fn tag_to(
    dest: &Dest,
    p: &ItemPlan,
    tag: &str,
    digest: &Digest,
    mt: &str,
    bytes: &Bytes,
) -> Result<(), String> {
    match dest.head_manifest(&p.repo, tag).await {
        Some(current) if current == *digest => Ok(()),
        _ => dest
            .put_manifest(&p.repo, tag, mt, bytes.clone())
            .await
            .map_err(|e| format!("tagging {tag} failed: {e}")),
    }
}

/// Pushes the top manifest `d` by its tag. An index refused for its absent
/// platforms falls back ([`sparse_fallback`]) and the tag then points at
/// the one platform manifest pushed.
// The push's parts, passed through; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn put_top(
    dest: &Dest,
    p: &ItemPlan,
    d: &Digest,
    tag: &str,
    (mt, bytes): (&str, &Bytes),
    manifests: &Outlines,
    count: &mut PushCount,
    note: &mut Option<(String, Digest)>,
) -> Result<(), String> {
    let e = match dest.put_manifest(&p.repo, tag, mt, bytes.clone()).await {
        Ok(()) => {
            count.pushed += 1;
            return Ok(());
        }
        Err(e) => e,
    };
    sparse_fallback(p, d, &e, note)?;
    let Some((_, child)) = note.as_ref() else {
        return Err(format!("pushing manifest {d} failed: {e}"));
    };
    let o = manifests.get(child).ok_or("child manifest missing")?;
    tag_to(dest, p, tag, child, o.media_type.as_ref(), &o.bytes).await
}

/// A registry that refuses an index whose children are absent (distribution
/// 2.x validates every child): with one platform manifest pushed, its tag
/// points at that manifest instead (the note says so); with more, the item
/// fails. Any other refusal of `d` fails the item.
fn sparse_fallback(
    p: &ItemPlan,
    d: &Digest,
    e: &str,
    note: &mut Option<(String, Digest)>,
) -> Result<(), String> {
    if !(d == &p.item.digest && p.sparse && e.contains("MANIFEST_BLOB_UNKNOWN")) {
        return Err(format!("pushing manifest {d} failed: {e}"));
    }
    let children: Vec<&Digest> = p.manifests.iter().filter(|m| *m != d).collect();
    if children.len() != 1 {
        return Err(format!(
            "the registry refuses index {d} because platforms left out by the export filter are absent; its {} platform manifests were pushed by digest. Export without a platform filter, or use a registry that accepts sparse indexes",
            children.len()
        ));
    }
    *note = Some((
        format!(
            "{}: the registry refuses an index with absent platforms, so tag `{}` points at the {} manifest {} (the index {} is not at the mirror)",
            p.item.reference,
            p.reference.tag.clone().unwrap_or_default(),
            p.item.platforms.join(","),
            children[0],
            d
        ),
        children[0].clone(),
    ));
    Ok(())
}
