//! The import run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use sha2::{Digest as _, Sha512};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use ferry_bundle::manifest::{self, Parsed};
use ferry_bundle::meta::{BlobMeta, Item, Kind};
use ferry_bundle::parts::{open_bundle, PartsError};
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, Report, VisitResult, Visitor,
};
use ferry_bundle::relpath::RelPath;
use ferry_bundle::{Digest, Reference};
use ferry_registry::{chain, Client, Repo};

use crate::dest::Dest;
use crate::files::{FileTarget, Staged};
use crate::receipt::{Receipt, RECEIPT_VERSION};
use crate::target::{Mapping, Target, TargetError};
use crate::tree::{self, FilePlan};
use crate::{Event, Events};

/// What to import where.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The bundle file.
    pub bundle: PathBuf,
    /// The target registry (registry kinds are skipped without one).
    pub target: Option<Target>,
    /// The file target (file kinds are skipped without one).
    pub files: Option<FileTarget>,
    /// Import into this local store instead of a registry (`target` then
    /// names it; its file tree is `files`).
    pub store: Option<Arc<crate::store::Store>>,
    /// Mapping rules.
    pub mapping: Mapping,
    /// Print the plan, push nothing.
    pub dry_run: bool,
    /// Concurrent uploads.
    pub jobs: usize,
    /// Blobs above this size are uploaded in chunks of this size.
    pub chunk_size: u64,
    /// `--key`: the bundle must carry a valid signature by this key, checked
    /// when the head arrives, before anything is planned or loaded.
    pub key: Option<ferry_bundle::sign::TrustedKey>,
    /// Push provenance (items with a `subject`: cosign `.sig`/`.att`/`.sbom`
    /// tags, OCI 1.1 referrers) after their subjects, and keep the
    /// `sha256-<hex>` referrers fallback tag on a registry without the
    /// referrers API. `false` (`--no-referrers`) leaves them out.
    pub referrers: bool,
}

/// The bundle's signature, as the import saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureCheck {
    /// The key id the signature names.
    pub key_id: String,
    /// Verified with `key` (without a key, a signature is only reported).
    pub verified: bool,
}

/// One planned item.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanEntry {
    /// Kind.
    pub kind: String,
    /// Source reference.
    pub source: String,
    /// Target reference.
    pub target: String,
    /// Digest.
    pub digest: String,
    /// Blobs to upload for it (not already at the target).
    pub upload_blobs: usize,
}

/// What happened to one item.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemOutcome {
    /// Source reference.
    pub source: String,
    /// Target reference (repository + tag, or @digest).
    pub target: String,
    /// Digest.
    pub digest: String,
    /// Why it failed, or a note on how it landed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// The plan.
    pub plan: Vec<PlanEntry>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Items now at the target.
    pub loaded: Vec<ItemOutcome>,
    /// Items that did not land, with the reason in `note`.
    pub failed: Vec<ItemOutcome>,
    /// Items left alone because no target of their kind was given.
    pub skipped: Vec<ItemOutcome>,
    /// Files written to the file target (derived ones included).
    pub files_written: usize,
    /// Files the file target already had.
    pub files_present: usize,
    /// Blobs uploaded.
    pub blobs_uploaded: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Readers of the bundle that streamed large blobs side by side (the
    /// main one and its lanes).
    pub readers: usize,
    /// Blobs mounted from another repository.
    pub blobs_mounted: usize,
    /// Blobs the target already had.
    pub blobs_present: usize,
    /// Manifests pushed.
    pub manifests_pushed: usize,
    /// Manifests the target already had.
    pub manifests_present: usize,
    /// Blobs that failed verification.
    pub bad_blobs: Vec<String>,
    /// The bundle's signature, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureCheck>,
    /// What the target holds of this bundle, per repository.
    #[serde(skip)]
    pub receipt: Receipt,
}

/// Why an import stopped before committing anything.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The bundle could not be opened.
    #[error("failed to open bundle `{path}`")]
    Open {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The bundle failed verification (nothing was pushed).
    #[error("bundle `{path}` failed verification; no manifest was pushed")]
    Bundle {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: BundleError,
    },
    /// A split bundle's manifest or a part is bad: missing, truncated or
    /// corrupt (nothing was pushed; the error names the part).
    #[error("bundle `{path}` failed verification; no manifest was pushed")]
    Parts {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: PartsError,
    },
    /// `--key` was given and the signature over `ferry/bundle.json` does
    /// not verify (unsigned, another key, altered): nothing was loaded.
    #[error("bundle `{path}` is refused: its signature does not verify; nothing was loaded")]
    Signature {
        /// Path.
        path: PathBuf,
        /// Cause (names the key file and key ids).
        #[source]
        source: ferry_bundle::sign::SignError,
    },
    /// A mapping produced an invalid name.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The bundle holds content this version cannot import.
    #[error("bundle item `{reference}` is of kind `{kind}`, which this version of ferry cannot import yet")]
    UnsupportedKind {
        /// Item.
        reference: String,
        /// Kind.
        kind: String,
    },
    /// The file target cannot be used.
    #[error("file target `{target}` is not usable")]
    Files {
        /// The target.
        target: String,
        /// Cause.
        #[source]
        source: crate::files::FilesError,
    },
    /// The bundle's file items cannot be planned.
    #[error("bad file item in the bundle: {0}")]
    FileItem(String),
    /// A differential bundle's base is not at the target.
    #[error("this is a differential bundle, and {} base blob(s) it relies on are not at the target; nothing was pushed:\n{}", .0.len(), .0.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
    MissingBase(Vec<String>),
    /// The target registry cannot be reached.
    #[error("target registry `{host}` is not reachable")]
    Unreachable {
        /// Host.
        host: String,
        /// Cause.
        #[source]
        source: ferry_registry::Error,
    },
    /// An internal task failed.
    #[error("import task failed: {0}")]
    Task(String),
}

impl ImportError {
    /// Whether the cause is the environment (network, registry) rather than the input.
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            ImportError::Unreachable { .. }
                | ImportError::Files { .. }
                | ImportError::Task(_)
                | ImportError::Open { .. }
        )
    }
}

#[derive(Debug)]
struct Stopped;
impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("import stopped")
    }
}
impl std::error::Error for Stopped {}

/// What the async side tells the reader thread once planned.
struct UploadPlan {
    upload: HashSet<Digest>,
    /// Blobs to write to the file target, and where.
    files: HashMap<Digest, Vec<RelPath>>,
    /// Blobs kept in memory (chart metadata, the falcoctl index).
    capture: HashSet<Digest>,
    /// Large blobs another reader of the bundle file uploads (a lane):
    /// this reader only verifies them.
    delegated: HashSet<Digest>,
    /// Blobs whose sha512 is computed as they stream (OpenSearch plugin
    /// zips, re-checked against their `.sha512`).
    sha512: HashSet<Digest>,
}

/// The largest blob kept in memory after it streamed (one home: [`crate::content`]).
pub(crate) use crate::content::CAPTURE_LIMIT;

enum Msg {
    Head(Box<Head>),
    Manifest(BlobMeta, Bytes),
    NeedPlan(oneshot::Sender<Option<Arc<UploadPlan>>>),
    Small(BlobMeta, Bytes, Arc<OwnedSemaphorePermit>),
    Large(
        BlobMeta,
        Option<mpsc::Receiver<Bytes>>,
        Vec<(RelPath, mpsc::Receiver<Bytes>)>,
        Arc<OwnedSemaphorePermit>,
    ),
    Verdict(Digest, Result<(), String>),
    /// The sha512 (hex) of a blob's bytes (trusted once its verdict is ok).
    Sha512(Digest, String),
}

/// Blob bytes held in memory at once (read ahead of their uploads, chunks
/// in flight), whatever the bundle's size: the import's memory stays flat.
/// A streamed blob holds two chunks (one being sent, one being filled); the
/// budget grows to hold [`MAX_STREAMS`] of those when `--chunk-mib` asks
/// for more.
pub const BUFFER_BUDGET: u64 = 28 << 20;

/// Chunks in flight for one streamed blob (see [`BUFFER_BUDGET`]): one
/// being sent, one being filled.
const CHUNKS_IN_FLIGHT: u64 = 2;

/// Bundle readers that upload large blobs, the main one included: each
/// extra one (a lane) opens the bundle file again, decompresses it on its
/// own and streams its share of the large blobs, so that several large
/// uploads run side by side within [`BUFFER_BUDGET`] (a registry ingests
/// one upload far slower than several). Bounded by `--jobs`.
const MAX_STREAMS: usize = 3;

/// What a thread feeding uploads needs: the channel to the import loop,
/// the memory budget, the chunk size.
#[derive(Clone)]
struct Feeder {
    tx: mpsc::Sender<Msg>,
    chunk: u64,
    /// Bytes of [`BUFFER_BUDGET`] (permits are bytes).
    budget: Arc<Semaphore>,
    budget_total: u64,
    rt: tokio::runtime::Handle,
    events: Events,
    cancelled: Arc<AtomicBool>,
}

struct StreamVisitor {
    feed: Feeder,
    plan: Option<Arc<UploadPlan>>,
}

fn stop() -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(Stopped)
}

impl Feeder {
    /// Blocks the reader until `bytes` of the buffer budget are free.
    fn reserve(
        &self,
        bytes: u64,
    ) -> Result<Arc<OwnedSemaphorePermit>, Box<dyn std::error::Error + Send + Sync>> {
        // Never more than the whole budget (a blob larger than it waits
        // until nothing else is in flight).
        let n = bytes.clamp(1, self.budget_total) as u32;
        let budget = self.budget.clone();
        let permit = self
            .rt
            .block_on(budget.acquire_many_owned(n))
            .map_err(|_| stop())?;
        Ok(Arc::new(permit))
    }
}

impl Feeder {
    /// Streams `blob` from `data` to its upload (and file targets) in
    /// chunks, within two chunks of the budget.
    fn stream_large(
        &self,
        blob: &BlobMeta,
        data: &mut dyn Read,
        to_registry: bool,
        to_files: Vec<RelPath>,
        mut sha512: Option<Sha512>,
    ) -> VisitResult {
        let permit = self.reserve(CHUNKS_IN_FLIGHT * self.chunk)?;
        let mut senders = Vec::new();
        let registry_rx = if to_registry {
            let (ctx, crx) = mpsc::channel::<Bytes>(1);
            senders.push(ctx);
            Some(crx)
        } else {
            None
        };
        let mut file_rx = Vec::new();
        for path in to_files {
            let (ctx, crx) = mpsc::channel::<Bytes>(1);
            senders.push(ctx);
            file_rx.push((path, crx));
        }
        self.tx
            .blocking_send(Msg::Large(blob.clone(), registry_rx, file_rx, permit))
            .map_err(|_| stop())?;
        let mut remaining = blob.size;
        while remaining > 0 {
            if self.cancelled.load(Ordering::Relaxed) {
                return Err(stop());
            }
            // Room in every sink first, then read: one chunk being sent and
            // one being filled is all a stream ever holds. A sink that gave
            // up is dropped; the reader still drains and verifies.
            let mut slots = Vec::with_capacity(senders.len());
            senders.retain(|tx| match self.rt.block_on(tx.clone().reserve_owned()) {
                Ok(slot) => {
                    slots.push(slot);
                    true
                }
                Err(_) => false,
            });
            if slots.is_empty() {
                break;
            }
            let want = remaining.min(self.chunk);
            let mut buf = Vec::with_capacity(want as usize);
            let got = data.take(want).read_to_end(&mut buf)?;
            if got == 0 {
                break;
            }
            remaining -= got as u64;
            if let Some(h) = sha512.as_mut() {
                h.update(&buf);
            }
            (self.events)(Event::UploadProgress { bytes: got as u64 });
            let chunk = Bytes::from(buf);
            for slot in slots {
                slot.send(chunk.clone());
            }
        }
        if let (0, Some(h)) = (remaining, sha512) {
            self.send_sha512(blob, h)?;
        }
        Ok(())
    }

    /// Reports the sha512 of a blob's bytes to the import loop.
    fn send_sha512(&self, blob: &BlobMeta, h: Sha512) -> VisitResult {
        use sha2::Digest as _;
        self.tx
            .blocking_send(Msg::Sha512(blob.digest.clone(), hex_lower(&h.finalize())))
            .map_err(|_| stop())
    }
}

/// Lowercase hex of `bytes`.
fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// How lanes get a [`Feeder`]: `proto`'s budget and settings with a
/// sender made from the weak one while the reader still holds its own.
struct LaneSeed {
    tx: mpsc::WeakSender<Msg>,
    proto: Feeder,
}

/// Hands the large uploads among the main reader and up to
/// [`MAX_STREAMS`]` - 1` lanes (only for a bundle that is a file or parts
/// on disk, and `--jobs` over 1) and starts the lanes. Returns the blobs
/// the lanes upload.
fn start_lanes(
    opts: &ImportOptions,
    head: &Head,
    upload: &HashSet<Digest>,
    files: &HashMap<Digest, Vec<RelPath>>,
    capture: &HashSet<Digest>,
    seed: &LaneSeed,
    lanes: &mut Vec<std::thread::JoinHandle<()>>,
) -> HashSet<Digest> {
    let streams = opts.jobs.clamp(1, MAX_STREAMS);
    let chunk = seed.proto.chunk;
    // In stream order: the large blobs that go to the registry only.
    let large: Vec<&BlobMeta> = head
        .meta
        .blobs
        .iter()
        .filter(|b| {
            b.size > chunk
                && upload.contains(&b.digest)
                && !files.contains_key(&b.digest)
                && !capture.contains(&b.digest)
        })
        .collect();
    let mut delegated = HashSet::new();
    if streams < 2 || large.len() < 2 {
        return delegated;
    }
    // Greedy by bytes, the main reader counted as already carrying the
    // small blobs and the verification of everything.
    let mut load = vec![0u64; streams];
    let mut shares: Vec<Vec<BlobMeta>> = vec![Vec::new(); streams];
    for b in large {
        let (i, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(i, l)| (**l, *i))
            .unwrap_or((0, &0));
        load[i] += b.size;
        shares[i].push(b.clone());
    }
    for share in shares.into_iter().skip(1) {
        if share.is_empty() {
            continue;
        }
        // Opened here so that a bundle that cannot be opened again keeps
        // its blobs on the main reader.
        let Ok(src) = open_bundle(&opts.bundle) else {
            continue;
        };
        let Some(tx) = seed.tx.upgrade() else {
            break;
        };
        let feed = Feeder {
            tx,
            ..seed.proto.clone()
        };
        delegated.extend(share.iter().map(|b| b.digest.clone()));
        lanes.push(std::thread::spawn(move || lane(src, share, feed)));
    }
    delegated
}

/// A lane: reads the bundle from the start and streams its blobs to their
/// uploads, skipping everything else. It verifies nothing itself (the main
/// reader does, and each upload checks its digest before the final PUT);
/// on anything unexpected it stops, and the main reader's verdict names it.
fn lane(src: ferry_bundle::parts::BundleSource, share: Vec<BlobMeta>, feed: Feeder) {
    let mut want: HashMap<String, BlobMeta> = share
        .into_iter()
        .map(|b| (b.digest.layout_path(), b))
        .collect();
    let Ok(stream) =
        ferry_bundle::reader::decompress(std::io::BufReader::with_capacity(256 << 10, src))
    else {
        return;
    };
    // The reader's own walker: a lane accepts exactly the entries the
    // reader accepts (same header checks), and stops at the first it refuses.
    let mut walker = ferry_bundle::reader::TarWalker::new(stream);
    while let Ok(Some(entry)) = walker.next_entry() {
        if want.is_empty() || feed.cancelled.load(Ordering::Relaxed) {
            return;
        }
        let Some(blob) = want.remove(&entry.name) else {
            continue;
        };
        if entry.kind != ferry_bundle::reader::EntryKind::File || entry.size != blob.size {
            return;
        }
        if feed
            .stream_large(&blob, &mut walker.data(&entry.name), true, Vec::new(), None)
            .is_err()
        {
            return;
        }
    }
}

impl Visitor for StreamVisitor {
    fn head(&mut self, head: &Head) -> VisitResult {
        self.feed
            .tx
            .blocking_send(Msg::Head(Box::new(head.clone())))
            .map_err(|_| stop())
    }

    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult {
        self.feed
            .tx
            .blocking_send(Msg::Manifest(blob.clone(), Bytes::copy_from_slice(bytes)))
            .map_err(|_| stop())
    }

    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        if self.feed.cancelled.load(Ordering::Relaxed) {
            return Err(stop());
        }
        if self.plan.is_none() {
            let (tx, rx) = oneshot::channel();
            self.feed
                .tx
                .blocking_send(Msg::NeedPlan(tx))
                .map_err(|_| stop())?;
            match rx.blocking_recv() {
                Ok(Some(plan)) => self.plan = Some(plan),
                _ => return Err(stop()),
            }
        }
        let Some(plan) = &self.plan else {
            return Err(stop());
        };
        if plan.delegated.contains(&blob.digest) {
            return Ok(()); // a lane uploads it; the reader drains and verifies it
        }
        let to_registry = plan.upload.contains(&blob.digest);
        let to_files = plan.files.get(&blob.digest).cloned().unwrap_or_default();
        let capture = plan.capture.contains(&blob.digest) && blob.size <= CAPTURE_LIMIT;
        let sha512 = plan.sha512.contains(&blob.digest).then(Sha512::new);
        if !to_registry && to_files.is_empty() && !capture {
            if let Some(mut h) = sha512 {
                // Only hashed: read through in pieces.
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = data.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                return self.feed.send_sha512(blob, h);
            }
            return Ok(()); // the reader drains and verifies it
        }
        if blob.size <= self.feed.chunk || capture {
            // Wait for room before reading: uploads in flight give it back.
            let permit = self.feed.reserve(blob.size)?;
            let mut buf = Vec::with_capacity(blob.size as usize);
            data.take(blob.size).read_to_end(&mut buf)?;
            // Only verified bytes leave this thread (the registry checks again).
            if Digest::of(&buf) == blob.digest && buf.len() as u64 == blob.size {
                if let Some(mut h) = sha512 {
                    h.update(&buf);
                    self.feed.send_sha512(blob, h)?;
                }
                self.feed
                    .tx
                    .blocking_send(Msg::Small(blob.clone(), Bytes::from(buf), permit))
                    .map_err(|_| stop())?;
            }
            return Ok(());
        }
        self.feed
            .stream_large(blob, data, to_registry, to_files, sha512)
    }

    fn blob_end(&mut self, blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        let v = verdict.map_err(|f| f.reason.clone());
        self.feed
            .tx
            .blocking_send(Msg::Verdict(blob.digest.clone(), v))
            .map_err(|_| stop())
    }
}

struct ItemPlan {
    item: Item,
    reference: Reference,
    repo: Repo,
    /// Manifests to push, children first.
    manifests: Vec<Digest>,
    /// Config/layer blobs the item needs.
    blobs: Vec<(Digest, u64)>,
    /// Index children left out by a platform filter.
    sparse: bool,
}

/// What [`walk`] collects for one item: its manifests (children first)
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

fn walk(
    d: &Digest,
    manifests: &HashMap<Digest, (String, Bytes, Parsed)>,
    absent: &HashSet<(Digest, Digest)>,
    out: &mut Walked,
    depth: usize,
) {
    // As deep as the reader accepts: a manifest at MAX_DEPTH has its blobs
    // deeper than that, so its item is refused; none of it is uploaded.
    if depth >= ferry_bundle::reader::MAX_DEPTH || out.seen_manifests.contains(d) {
        return;
    }
    let Some((_, _, parsed)) = manifests.get(d) else {
        return;
    };
    if parsed.is_index() {
        for c in &parsed.manifests {
            if absent.contains(&(d.clone(), c.digest.clone())) {
                out.sparse = true;
                continue;
            }
            if manifest::is_any_manifest(&c.media_type) {
                walk(&c.digest, manifests, absent, out, depth + 1);
            } else {
                out.blob(&c.digest, c.size);
            }
        }
    } else {
        for b in parsed.blobs() {
            out.blob(&b.digest, b.size);
        }
    }
    if out.seen_manifests.insert(d.clone()) {
        out.manifests.push(d.clone());
    }
}

fn target_ref(repo: &Repo, r: &Reference, digest: &Digest) -> String {
    match &r.tag {
        Some(t) => format!("{}/{}:{}", repo.host, repo.path, t),
        None => format!("{}/{}@{}", repo.host, repo.path, digest),
    }
}

/// Checks the head's signature against `opts.key`; without a key, reports
/// the signer's key id (unchecked) if the bundle is signed.
fn check_signature(
    opts: &ImportOptions,
    head: &Head,
) -> Result<Option<SignatureCheck>, ferry_bundle::sign::SignError> {
    match &opts.key {
        Some(key) => {
            let v = key.verify(&head.meta_bytes, head.signature.as_deref())?;
            Ok(Some(SignatureCheck {
                key_id: v.key_id.to_string(),
                verified: true,
            }))
        }
        None => Ok(head.signature.as_deref().map(|sig| SignatureCheck {
            key_id: ferry_bundle::sign::signature_key_id(sig)
                .map(|id| id.to_string())
                .unwrap_or_else(|e| format!("unreadable ({e})")),
            verified: false,
        })),
    }
}

/// Imports a bundle into a registry.
pub async fn import(
    client: &Client,
    opts: &ImportOptions,
    events: &Events,
) -> Result<ImportReport, ImportError> {
    // A bundle file, a parts manifest or a first part; a split bundle with a
    // missing or truncated part is refused here, before anything is read.
    let mut src = open_bundle(&opts.bundle).map_err(|e| match e {
        PartsError::Open { path, source } => ImportError::Open { path, source },
        source => ImportError::Parts {
            path: opts.bundle.clone(),
            source,
        },
    })?;
    let dest = match &opts.store {
        Some(s) => Dest::Store(s.clone()),
        None => Dest::Registry(client.clone()),
    };
    if !opts.dry_run {
        if let (Some(t), None) = (&opts.target, &opts.store) {
            client
                .ping(&t.host)
                .await
                .map_err(|source| ImportError::Unreachable {
                    host: t.host.clone(),
                    source,
                })?;
        }
        if let Some(f) = &opts.files {
            f.check().await.map_err(|source| ImportError::Files {
                target: f.describe(),
                source,
            })?;
        }
    }
    let (tx, mut rx) = mpsc::channel::<Msg>(16);
    let chunk = opts.chunk_size.max(1024 * 1024);
    // Room for every stream's chunks, however large `--chunk-mib` is.
    let budget_total = BUFFER_BUDGET
        .max(MAX_STREAMS as u64 * CHUNKS_IN_FLIGHT * chunk)
        .min(u32::MAX as u64);
    let cancelled = Arc::new(AtomicBool::new(false));
    let feed = Feeder {
        tx,
        chunk,
        budget: Arc::new(Semaphore::new(budget_total as usize)),
        budget_total,
        rt: tokio::runtime::Handle::current(),
        events: events.clone(),
        cancelled: cancelled.clone(),
    };
    // Lanes get their own senders when they start (a weak one here would
    // otherwise keep the loop below from ever seeing the reader finish).
    let lane_feed = LaneSeed {
        tx: feed.tx.downgrade(),
        proto: Feeder {
            tx: mpsc::channel(1).0,
            ..feed.clone()
        },
    };
    let mut lanes: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let mut visitor = StreamVisitor { feed, plan: None };
    let reader = tokio::task::spawn_blocking(move || {
        let read = read_bundle(
            std::io::BufReader::with_capacity(1 << 20, &mut src),
            ReadOptions { keep_going: true },
            &mut visitor,
        );
        // A bad part is named rather than what its bytes decoded to; after
        // a good read, the parts are checked to their last byte.
        let bad_part = match &read {
            Ok(_) => src.finish().err(),
            Err(BundleError::Visitor(e)) if e.is::<Stopped>() => None,
            Err(_) => src.diagnose(),
        };
        (read, bad_part)
    });

    let mut head: Option<Head> = None;
    let mut manifests: HashMap<Digest, (String, Bytes, Parsed)> = HashMap::new();
    let mut plans: Vec<ItemPlan> = Vec::new();
    let mut present: HashSet<(Repo, Digest)> = HashSet::new();
    let mut first_repo: HashMap<Digest, Repo> = HashMap::new();
    let mut report = ImportReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut uploads: JoinSet<(Digest, u64, Result<(), String>)> = JoinSet::new();
    let permits = Arc::new(Semaphore::new(opts.jobs.max(1)));
    let mut verdicts: HashMap<Digest, Result<(), String>> = HashMap::new();
    let mut planned = false;
    let mut early_error: Option<ImportError> = None;
    let mut file_plans: Vec<FilePlan> = Vec::new();
    let mut file_writes: HashMap<Digest, Vec<RelPath>> = HashMap::new();
    let mut files_present: HashSet<RelPath> = HashSet::new();
    let mut captured: HashMap<Digest, Bytes> = HashMap::new();
    let mut capture_set: HashSet<Digest> = HashSet::new();
    let mut chart_set: HashMap<Digest, String> = HashMap::new();
    let mut chart_checks: JoinSet<(Digest, Result<(), String>)> = JoinSet::new();
    let mut sha512s: HashMap<Digest, String> = HashMap::new();
    let mut file_tasks: JoinSet<FileTask> = JoinSet::new();

    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Head(h) => {
                // Verify before trust: a bad signature stops the run here,
                // before any plan, upload or file write.
                match check_signature(opts, &h) {
                    Ok(s) => report.signature = s,
                    Err(source) => {
                        early_error = Some(ImportError::Signature {
                            path: opts.bundle.clone(),
                            source,
                        });
                        break;
                    }
                }
                head = Some(*h);
            }
            Msg::Manifest(meta, bytes) => {
                let mt = meta.media_type.clone().unwrap_or_default();
                match manifest::parse(&bytes, Some(&mt)) {
                    Ok(p) => {
                        manifests.insert(meta.digest.clone(), (mt, bytes, p));
                    }
                    Err(_) => continue, // the reader reports it
                }
            }
            Msg::NeedPlan(reply) => {
                let Some(h) = head.as_ref() else { break };
                let planned_files = match plan_files(opts, h, &manifests).await {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = reply.send(None);
                        early_error = Some(e);
                        break;
                    }
                };
                match make_plan(client, &dest, opts, h, &manifests, events).await {
                    Ok((p, pres, first, entries)) => {
                        plans = p;
                        present = pres;
                        first_repo = first;
                        report.plan = entries;
                        (file_plans, file_writes, files_present) = planned_files;
                        report
                            .plan
                            .extend(file_plan_entries(opts, &file_plans, &files_present));
                        planned = true;
                        if opts.dry_run {
                            let _ = reply.send(None);
                            break;
                        }
                        let upload: HashSet<Digest> = first_repo.keys().cloned().collect();
                        capture_set = tree::captures(&file_plans);
                        chart_set = tree::chart_archives(&h.meta.items, &manifests)
                            .into_iter()
                            .filter_map(|(_, archive)| archive)
                            .collect();
                        // Read whole as they stream: kept, or checked.
                        let capture: HashSet<Digest> = capture_set
                            .iter()
                            .chain(chart_set.keys())
                            .cloned()
                            .collect();
                        let sha512 = tree::sha512_wanted(&file_plans);
                        // Blobs the main reader must see itself.
                        let own: HashSet<Digest> = capture.union(&sha512).cloned().collect();
                        let delegated = start_lanes(
                            opts,
                            h,
                            &upload,
                            &file_writes,
                            &own,
                            &lane_feed,
                            &mut lanes,
                        );
                        report.readers = 1 + lanes.len();
                        let _ = reply.send(Some(Arc::new(UploadPlan {
                            upload,
                            files: file_writes.clone(),
                            capture,
                            delegated,
                            sha512,
                        })));
                    }
                    Err(e) => {
                        let _ = reply.send(None);
                        early_error = Some(e);
                        break;
                    }
                }
            }
            Msg::Small(meta, data, held) => {
                if capture_set.contains(&meta.digest) {
                    captured.insert(meta.digest.clone(), data.clone());
                }
                if let Some(name) = chart_set.get(&meta.digest) {
                    // Checked now, off the async threads; only the verdict
                    // is kept (the bytes go on to their uploads).
                    let (tgz, name, d) = (data.clone(), name.clone(), meta.digest.clone());
                    chart_checks.spawn_blocking(move || (d, tree::check_chart(&tgz, &name)));
                }
                if let (Some(files), Some(paths)) = (&opts.files, file_writes.get(&meta.digest)) {
                    for path in paths {
                        let files = files.clone();
                        let path = path.clone();
                        let data = data.clone();
                        let d = meta.digest.clone();
                        let held = held.clone();
                        file_tasks.spawn(async move {
                            let _held = held;
                            // Staged only: published once the whole bundle
                            // has verified.
                            let r = files.stage_bytes(&path, data).await.map_err(|e| chain(&e));
                            (d, path, r)
                        });
                    }
                }
                let Some(repo) = first_repo.get(&meta.digest).cloned() else {
                    continue;
                };
                let permit = permits.clone().acquire_owned().await;
                let dest = dest.clone();
                let events = events.clone();
                uploads.spawn(async move {
                    let _permit = permit;
                    let _held = held;
                    let size = data.len() as u64;
                    let r = dest.upload_blob(&repo, &meta.digest, data).await;
                    if r.is_ok() {
                        events(Event::UploadProgress { bytes: size });
                    }
                    (meta.digest, size, r)
                });
            }
            Msg::Large(meta, registry_chunks, file_chunks, held) => {
                if let Some(files) = &opts.files {
                    for (path, rx) in file_chunks {
                        let files = files.clone();
                        let d = meta.digest.clone();
                        let size = meta.size;
                        let held = held.clone();
                        file_tasks.spawn(async move {
                            let _held = held;
                            let r = files
                                .write_stream(&path, &d, size, rx)
                                .await
                                .map_err(|e| chain(&e));
                            (d, path, r)
                        });
                    }
                }
                let (Some(repo), Some(chunks)) =
                    (first_repo.get(&meta.digest).cloned(), registry_chunks)
                else {
                    continue;
                };
                let permit = permits.clone().acquire_owned().await;
                let dest = dest.clone();
                uploads.spawn(async move {
                    let _permit = permit;
                    let _held = held;
                    let r = dest
                        .upload_blob_chunked(&repo, &meta.digest, meta.size, chunks)
                        .await;
                    (meta.digest, meta.size, r)
                });
            }
            Msg::Verdict(d, v) => {
                verdicts.insert(d, v);
            }
            Msg::Sha512(d, hex) => {
                sha512s.insert(d, hex);
            }
        }
    }
    // Stop the reader if we left the loop early, then collect it.
    cancelled.store(true, Ordering::Relaxed);
    drop(rx);
    drop(lane_feed);
    let _ = tokio::task::spawn_blocking(move || {
        for lane in lanes {
            let _ = lane.join();
        }
    })
    .await;
    let (read, bad_part): (Result<Report, BundleError>, Option<PartsError>) =
        reader.await.map_err(|e| ImportError::Task(e.to_string()))?;
    if let Some(e) = early_error {
        uploads.abort_all();
        abort_files(&mut file_tasks, opts.files.as_ref()).await;
        return Err(e);
    }
    if let Some(source) = bad_part {
        uploads.abort_all();
        while uploads.join_next().await.is_some() {}
        abort_files(&mut file_tasks, opts.files.as_ref()).await;
        return Err(ImportError::Parts {
            path: opts.bundle.clone(),
            source,
        });
    }
    let read_report = match read {
        Ok(r) => r,
        Err(BundleError::Visitor(e)) if e.is::<Stopped>() && opts.dry_run => return Ok(report),
        Err(source) => {
            uploads.abort_all();
            while uploads.join_next().await.is_some() {}
            abort_files(&mut file_tasks, opts.files.as_ref()).await;
            return Err(ImportError::Bundle {
                path: opts.bundle.clone(),
                source,
            });
        }
    };
    let Some(h) = head else {
        return Err(ImportError::Task("bundle head missing".into()));
    };
    if !planned {
        // A bundle with no streamed blobs: plan now.
        let planned_files = plan_files(opts, &h, &manifests).await?;
        let (p, pres, first, entries) =
            make_plan(client, &dest, opts, &h, &manifests, events).await?;
        plans = p;
        present = pres;
        first_repo = first;
        report.plan = entries;
        (file_plans, file_writes, files_present) = planned_files;
        report
            .plan
            .extend(file_plan_entries(opts, &file_plans, &files_present));
        if opts.dry_run {
            return Ok(report);
        }
    }
    let _ = &file_writes;
    // The whole bundle has verified. Items the bundle itself fails, and
    // items that fail the checks export made (re-made here on the bytes
    // that crossed), land nowhere.
    let verified_sha512: HashMap<Digest, String> = sha512s
        .into_iter()
        .filter(|(d, _)| matches!(verdicts.get(d), Some(Ok(()))))
        .collect();
    let mut chart_verdicts: HashMap<Digest, Result<(), String>> = HashMap::new();
    while let Some(done) = chart_checks.join_next().await {
        let (d, verdict) = done.map_err(|e| ImportError::Task(e.to_string()))?;
        chart_verdicts.insert(d, verdict);
    }
    let charts = tree::chart_archives(&h.meta.items, &manifests);
    let mut failed_items: HashMap<String, String> = tree::revalidate(
        &file_plans,
        &charts,
        &chart_verdicts,
        &captured,
        &verified_sha512,
    );
    for (r, why) in &read_report.failed_items {
        failed_items.entry(r.clone()).or_insert_with(|| why.clone());
    }
    let held_back: HashMap<&RelPath, &str> = file_plans
        .iter()
        .filter_map(|p| failed_items.get(&p.item.reference).map(|why| (p, why)))
        .flat_map(|(p, why)| p.files.iter().map(move |f| (&f.path, why.as_str())))
        .collect();
    // Files: publish what verified (nothing was visible until now), drop
    // what did not.
    let mut file_errors: HashMap<RelPath, String> = HashMap::new();
    let mut files_landed: HashSet<RelPath> = files_present.clone();
    while let Some(done) = file_tasks.join_next().await {
        let (d, path, r) = done.map_err(|e| ImportError::Task(e.to_string()))?;
        let verified = matches!(verdicts.get(&d), Some(Ok(())));
        match r {
            Ok(staged) if held_back.contains_key(&path) => {
                staged.abort().await;
                let why = held_back.get(&path).copied().unwrap_or_default();
                file_errors.insert(path, why.to_string());
            }
            Ok(staged) if verified => match staged.commit().await {
                Ok(()) => {
                    report.files_written += 1;
                    files_landed.insert(path);
                }
                Err(e) => {
                    file_errors.insert(path, chain(&e));
                }
            },
            Ok(staged) => {
                staged.abort().await;
                let why = match verdicts.get(&d) {
                    Some(Err(e)) => e.clone(),
                    _ => "failed verification in the bundle".into(),
                };
                file_errors.insert(path, why);
            }
            Err(e) => {
                file_errors.insert(path, e);
            }
        }
    }
    report.files_present = files_present.len();
    // Uploads.
    let mut upload_errors: HashMap<Digest, String> = HashMap::new();
    while let Some(done) = uploads.join_next().await {
        let (d, size, r) = done.map_err(|e| ImportError::Task(e.to_string()))?;
        let verified = matches!(verdicts.get(&d), Some(Ok(())));
        match r {
            Ok(()) if verified => {
                report.blobs_uploaded += 1;
                report.bytes_uploaded += size;
                if let Some(repo) = first_repo.get(&d) {
                    present.insert((repo.clone(), d.clone()));
                }
            }
            Ok(()) => {
                upload_errors.insert(d.clone(), "failed verification in the bundle".into());
            }
            Err(e) => {
                upload_errors.insert(d, e);
            }
        }
    }
    for f in &read_report.bad_blobs {
        report.bad_blobs.push(format!("{}: {}", f.digest, f.reason));
        upload_errors.insert(f.digest.clone(), f.reason.clone());
    }
    // Blobs uploaded but never sent (verification failed before upload).
    // Where each blob is now, per host (the first repository found).
    let mut present_at: HashMap<(&str, &Digest), &Repo> = HashMap::new();
    for (r, d) in &present {
        present_at.entry((r.host.as_str(), d)).or_insert(r);
    }
    let present_anywhere: HashSet<&Digest> = present.iter().map(|(_, d)| d).collect();
    for d in first_repo.keys() {
        if !present_anywhere.contains(d) && !upload_errors.contains_key(d) {
            let why = match verdicts.get(d) {
                Some(Err(e)) => e.clone(),
                _ => "not uploaded".into(),
            };
            upload_errors.insert(d.clone(), why);
        }
    }
    // Mounts: every repository that needs a blob gets it.
    let mut mounts: Vec<(Repo, Digest, Repo)> = Vec::new();
    let mut mounting: HashSet<(&Repo, &Digest)> = HashSet::new();
    for p in &plans {
        for (d, _) in &p.blobs {
            if present.contains(&(p.repo.clone(), d.clone())) {
                continue;
            }
            if let Some(from) = present_at.get(&(p.repo.host.as_str(), d)) {
                if mounting.insert((&p.repo, d)) {
                    mounts.push((p.repo.clone(), d.clone(), (*from).clone()));
                }
            }
        }
    }
    drop(mounting);
    drop(present_at);
    drop(present_anywhere);
    let mount_results: Vec<(Repo, Digest, Result<bool, String>)> = stream::iter(mounts)
        .map(|(repo, d, from)| {
            let dest = dest.clone();
            async move {
                let r = dest.mount_blob(&repo, &d, &from).await;
                (repo, d, r)
            }
        })
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;
    for (repo, d, r) in mount_results {
        match r {
            Ok(true) => {
                report.blobs_mounted += 1;
                present.insert((repo, d));
            }
            Ok(false) => {
                upload_errors.entry(d).or_insert_with(|| {
                    format!("the registry refused to mount it into {}", repo.path)
                });
            }
            Err(e) => {
                upload_errors.entry(d).or_insert(e);
            }
        }
    }
    // Commit, item by item.
    let failed_in_bundle: HashMap<&str, &str> = failed_items
        .iter()
        .map(|(r, why)| (r.as_str(), why.as_str()))
        .collect();
    let mut receipt = Receipt {
        receipt_version: RECEIPT_VERSION,
        target: match &opts.target {
            Some(t) if t.prefix.is_empty() => t.host.clone(),
            Some(t) => format!("{}/{}", t.host, t.prefix),
            None => String::new(),
        },
        files: BTreeMap::new(),
        bundle: h.meta.name.clone(),
        repositories: BTreeMap::new(),
    };
    // Manifests now at the target (provenance goes only where its subject is).
    let mut landed: HashSet<(Repo, Digest)> = HashSet::new();
    // OCI 1.1 referrers pushed, per (repository, subject): their fallback-tag descriptors.
    let mut referrers_pushed: BTreeMap<(String, String, Digest), Vec<serde_json::Value>> =
        BTreeMap::new();
    let carried_by = carriers(&plans);
    for p in &plans {
        let target = target_ref(&p.repo, &p.reference, &p.item.digest);
        let outcome = |note: Option<String>| ItemOutcome {
            source: p.item.reference.clone(),
            target: target.clone(),
            digest: p.item.digest.to_string(),
            note,
        };
        if let Some(why) = failed_in_bundle.get(p.item.reference.as_str()) {
            report.failed.push(outcome(Some((*why).to_string())));
            continue;
        }
        if let Some(subject) = &p.item.subject {
            let carried = carried_by.contains_key(&(&p.repo, subject));
            if carried
                && !landed.contains(&(p.repo.clone(), subject.clone()))
                && dest
                    .head_manifest(&p.repo, &subject.to_string())
                    .await
                    .is_none()
            {
                report.failed.push(outcome(Some(format!(
                    "its subject {subject} did not land at the target; provenance not pushed"
                ))));
                continue;
            }
        }
        if let Some((d, _)) = p
            .blobs
            .iter()
            .find(|(d, _)| !present.contains(&(p.repo.clone(), d.clone())))
        {
            let why = upload_errors
                .get(d)
                .cloned()
                .unwrap_or_else(|| "not at the target".into());
            report.failed.push(outcome(Some(format!(
                "blob {d} is not at the target ({why}); no manifest pushed"
            ))));
            continue;
        }
        match commit(&dest, p, &manifests, &mut report).await {
            Ok(note) => {
                if let (Some(store), None) = (&opts.store, &p.reference.tag) {
                    store.add_entry(crate::store::Entry {
                        repository: p.repo.path.clone(),
                        tag: None,
                        digest: p.item.digest.clone(),
                        media_type: p.item.media_type.clone(),
                        size: p.item.size,
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
                        landed.insert((p.repo.clone(), m.clone()));
                    }
                }
                if let (Some(subject), Some((mt, bytes, parsed))) =
                    (&p.item.subject, manifests.get(&p.item.digest))
                {
                    if parsed.subject.as_ref().map(|s| &s.digest) == Some(subject) {
                        referrers_pushed
                            .entry((p.repo.host.clone(), p.repo.path.clone(), subject.clone()))
                            .or_default()
                            .push(crate::referrers::descriptor(mt, bytes));
                    }
                }
                events(Event::Committed {
                    reference: p.item.reference.clone(),
                    target: target.clone(),
                });
                let text = note.map(|(t, _)| t);
                if let Some(t) = &text {
                    events(Event::Warning { message: t.clone() });
                }
                report.loaded.push(outcome(text));
            }
            Err(why) => report.failed.push(outcome(Some(why))),
        }
    }
    // Registries without the referrers API: the `sha256-<hex>` fallback tag.
    if let Dest::Registry(c) = &dest {
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
                    events(Event::Committed {
                        reference: format!("referrers of {subject}"),
                        target,
                    });
                }
                Err(why) => report.failed.push(ItemOutcome {
                    source: format!("referrers of {subject}"),
                    target,
                    digest: String::new(),
                    note: Some(why),
                }),
            }
        }
    }
    // File items.
    if let Some(files) = &opts.files {
        let mut landed_items: HashSet<String> = HashSet::new();
        for fp in &file_plans {
            if fp.item.kind == Kind::FalcoctlIndex {
                continue; // written rewritten, below
            }
            let outcome = |note: Option<String>| ItemOutcome {
                source: fp.item.reference.clone(),
                target: files.location(&fp.path),
                digest: fp.item.digest.to_string(),
                note,
            };
            if let Some(why) = failed_in_bundle.get(fp.item.reference.as_str()) {
                report.failed.push(outcome(Some((*why).to_string())));
                continue;
            }
            if let Some(f) = fp.files.iter().find(|f| !files_landed.contains(&f.path)) {
                let why = file_errors
                    .get(&f.path)
                    .cloned()
                    .unwrap_or_else(|| "not written".into());
                report
                    .failed
                    .push(outcome(Some(format!("{}: {why}", files.location(&f.path)))));
                continue;
            }
            for f in &fp.files {
                receipt.files.insert(f.path.to_string(), f.digest.clone());
            }
            landed_items.insert(fp.item.reference.clone());
            events(Event::Committed {
                reference: fp.item.reference.clone(),
                target: files.location(&fp.path),
            });
            report.loaded.push(outcome(None));
        }
        let now = tree::rfc3339(std::time::SystemTime::now());
        match tree::write_helm_indexes(files, &file_plans, &landed_items, &captured, &now).await {
            Ok(paths) => {
                for p in paths {
                    report.files_written += 1;
                    events(Event::Committed {
                        reference: "helm repository index".into(),
                        target: files.location(&p),
                    });
                }
            }
            Err(e) => report.failed.push(ItemOutcome {
                source: "helm repository index".into(),
                target: String::new(),
                digest: String::new(),
                note: Some(e),
            }),
        }
        if let Some(fp) = file_plans
            .iter()
            .find(|p| p.item.kind == Kind::FalcoctlIndex)
        {
            let loaded: HashSet<&str> = report.loaded.iter().map(|l| l.source.as_str()).collect();
            let bundled: Vec<(Reference, Repo)> = plans
                .iter()
                .filter(|p| {
                    p.item.kind == Kind::FalcoArtifact && loaded.contains(p.item.reference.as_str())
                })
                .map(|p| (p.reference.clone(), p.repo.clone()))
                .collect();
            let outcome = |note: Option<String>| ItemOutcome {
                source: fp.item.reference.clone(),
                target: files.location(&fp.path),
                digest: fp.item.digest.to_string(),
                note,
            };
            if opts.target.is_none() {
                events(Event::Warning {
                    message: "no --registry: the falcoctl index lists no artifact (its entries must point at the internal registry)".into(),
                });
            }
            match tree::write_falcoctl_index(files, &file_plans, &captured, &bundled, &h.meta.name)
                .await
            {
                Ok(_) => {
                    report.files_written += 1;
                    events(Event::Committed {
                        reference: fp.item.reference.clone(),
                        target: files.location(&fp.path),
                    });
                    report.loaded.push(outcome(None));
                }
                Err(e) => report.failed.push(outcome(Some(e))),
            }
        }
    }
    // What no target was given for.
    for item in &h.meta.items {
        let outcome = |note: &str| ItemOutcome {
            source: item.reference.clone(),
            target: String::new(),
            digest: item.digest.to_string(),
            note: Some(note.to_string()),
        };
        if opts.target.is_none() && tree::is_registry_kind(item.kind) {
            report
                .skipped
                .push(outcome("no --registry given: not pushed to a registry"));
        } else if opts.files.is_none() && item.path.is_some() {
            report
                .skipped
                .push(outcome("no --files given: not written to a file server"));
        } else if !opts.referrers && item.subject.is_some() {
            report
                .skipped
                .push(outcome("--no-referrers: provenance not pushed"));
        }
    }
    if let Some(f) = &opts.files {
        // Everything staged is published or dropped: no staging is left.
        f.tidy().await;
    }
    if let Some(store) = &opts.store {
        // The new index.json replaces the old one in one rename.
        store.commit().map_err(|e| ImportError::Task(chain(&e)))?;
    }
    report.receipt = receipt;
    Ok(report)
}

type Planned = (
    Vec<ItemPlan>,
    HashSet<(Repo, Digest)>,
    HashMap<Digest, Repo>,
    Vec<PlanEntry>,
);

async fn make_plan(
    client: &Client,
    dest: &Dest,
    opts: &ImportOptions,
    head: &Head,
    manifests: &HashMap<Digest, (String, Bytes, Parsed)>,
    events: &Events,
) -> Result<Planned, ImportError> {
    let absent: HashSet<(Digest, Digest)> = head
        .meta
        .absent
        .iter()
        .map(|a| (a.parent.clone(), a.digest.clone()))
        .collect();
    let mut plans = Vec::new();
    let Some(target) = &opts.target else {
        return Ok((Vec::new(), HashSet::new(), HashMap::new(), Vec::new()));
    };
    // Each target tag is claimed by one source: two sources that map to one
    // repository and tag (`--flatten`, `--map`, hosts that map alike) with
    // different content would both report ok while the last push wins.
    let mut tags: HashMap<(String, String, String), (String, Digest)> = HashMap::new();
    for item in head
        .meta
        .items
        .iter()
        .filter(|i| tree::is_registry_kind(i.kind) && (opts.referrers || i.subject.is_none()))
    {
        let reference =
            Reference::parse(&item.reference).map_err(|e| ImportError::Task(e.to_string()))?;
        let repo = opts.mapping.map(target, &reference)?;
        if let Some(tag) = &reference.tag {
            let key = (repo.host.clone(), repo.path.clone(), tag.clone());
            match tags.get(&key) {
                Some((first, digest)) if digest != &item.digest => {
                    return Err(ImportError::Target(TargetError::Collision {
                        target: format!("{}/{}:{tag}", repo.host, repo.path),
                        first: first.clone(),
                        first_digest: digest.to_string(),
                        second: item.reference.clone(),
                        second_digest: item.digest.to_string(),
                    }));
                }
                Some(_) => {} // the same content under one tag: no conflict
                None => {
                    tags.insert(key, (item.reference.clone(), item.digest.clone()));
                }
            }
        }
        let mut walked = Walked::default();
        walk(&item.digest, manifests, &absent, &mut walked, 0);
        plans.push(ItemPlan {
            item: item.clone(),
            reference,
            repo,
            manifests: walked.manifests,
            blobs: walked.blobs,
            sparse: walked.sparse,
        });
    }
    let plans = subjects_first(plans);
    // Which blobs does the target have already, in which repositories?
    let mut pairs: Vec<(Repo, Digest)> = Vec::new();
    let mut paired: HashSet<(&Repo, &Digest)> = HashSet::new();
    for p in &plans {
        for (d, _) in &p.blobs {
            if paired.insert((&p.repo, d)) {
                pairs.push((p.repo.clone(), d.clone()));
            }
        }
    }
    let mut present = HashSet::new();
    let reachable = opts.store.is_some() || client.ping(&target.host).await.is_ok();
    if !opts.dry_run || reachable {
        let results: Vec<(Repo, Digest, bool)> = stream::iter(pairs.iter().cloned())
            .map(|(repo, d)| async move {
                let has = dest.head_blob(&repo, &d).await;
                (repo, d, has)
            })
            .buffer_unordered(opts.jobs.max(1) * 2)
            .collect()
            .await;
        for (repo, d, has) in results {
            if has {
                present.insert((repo, d));
            }
        }
    }
    // A differential bundle leaves out blobs the target already holds: each
    // must be there (in the item's repository, or where the receipt saw it,
    // to be mounted from) before anything is pushed.
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
                let repo = Repo {
                    host: target.host.clone(),
                    path: hint.clone(),
                };
                if dest.head_blob(&repo, &b.digest).await {
                    present.insert((repo, b.digest.clone()));
                    present_anywhere.insert(b.digest.clone());
                    found = true;
                }
            }
            if !found && needed.contains(&b.digest) {
                missing.push(b.digest.to_string());
            }
        }
        if !missing.is_empty() {
            missing.sort();
            return Err(ImportError::MissingBase(missing));
        }
    }
    let mut first: HashMap<Digest, Repo> = HashMap::new();
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
            digest: p.item.digest.to_string(),
            upload_blobs: n,
        });
    }
    let present_count = pairs.iter().filter(|pair| present.contains(pair)).count();
    events(Event::Planned {
        items: plans.len(),
        upload: first.len(),
        upload_bytes,
        present: present_count,
    });
    Ok((plans, present, first, entries))
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

/// Which plan carries each (repository, manifest): the first one, as a
/// linear scan would find it.
fn carriers(plans: &[ItemPlan]) -> HashMap<(&Repo, &Digest), usize> {
    let mut out = HashMap::new();
    for (i, p) in plans.iter().enumerate() {
        for m in &p.manifests {
            out.entry((&p.repo, m)).or_insert(i);
        }
    }
    out
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

/// Pushes an item's manifests children-first, then its tag. Returns a note
/// (and the digest the tag points at) when it had to land differently.
async fn commit(
    dest: &Dest,
    p: &ItemPlan,
    manifests: &HashMap<Digest, (String, Bytes, Parsed)>,
    report: &mut ImportReport,
) -> Result<Option<(String, Digest)>, String> {
    let mut note = None;
    for d in &p.manifests {
        let Some((mt, bytes, _)) = manifests.get(d) else {
            return Err(format!("manifest {d} missing from the bundle"));
        };
        if dest.head_manifest(&p.repo, &d.to_string()).await.is_some() {
            report.manifests_present += 1;
            continue;
        }
        match dest
            .put_manifest(&p.repo, &d.to_string(), mt, bytes.clone())
            .await
        {
            Ok(_) => report.manifests_pushed += 1,
            Err(e) if d == &p.item.digest && p.sparse && e.contains("MANIFEST_BLOB_UNKNOWN") => {
                // The registry refuses an index whose children are absent
                // (distribution 2.x validates every child). Fall back.
                let children: Vec<&Digest> = p.manifests.iter().filter(|m| *m != d).collect();
                if children.len() == 1 {
                    note = Some((
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
                } else {
                    return Err(format!(
                        "the registry refuses index {d} because platforms left out by the export filter are absent; its {} platform manifests were pushed by digest. Export without a platform filter, or use a registry that accepts sparse indexes",
                        children.len()
                    ));
                }
            }
            Err(e) => return Err(format!("pushing manifest {d} failed: {e}")),
        }
    }
    if let Some(tag) = &p.reference.tag {
        let (digest, mt, bytes) = match &note {
            Some((_, child)) => {
                let (mt, bytes, _) = manifests.get(child).ok_or("child manifest missing")?;
                (child.clone(), mt, bytes)
            }
            None => {
                let (mt, bytes, _) = manifests.get(&p.item.digest).ok_or("manifest missing")?;
                (p.item.digest.clone(), mt, bytes)
            }
        };
        match dest.head_manifest(&p.repo, tag).await {
            Some(current) if current == digest => {}
            _ => {
                dest.put_manifest(&p.repo, tag, mt, bytes.clone())
                    .await
                    .map_err(|e| format!("tagging {tag} failed: {e}"))?;
            }
        }
    }
    Ok(note)
}

/// A file write: the blob, the path, and what it staged.
type FileTask = (Digest, RelPath, Result<Staged, String>);

type FilesPlanned = (
    Vec<FilePlan>,
    HashMap<Digest, Vec<RelPath>>,
    HashSet<RelPath>,
);

/// Plans the file side: which files the target lacks.
async fn plan_files(
    opts: &ImportOptions,
    head: &Head,
    manifests: &HashMap<Digest, (String, Bytes, Parsed)>,
) -> Result<FilesPlanned, ImportError> {
    let plans = tree::plan(&head.meta.items, manifests).map_err(ImportError::FileItem)?;
    let mut writes: HashMap<Digest, Vec<RelPath>> = HashMap::new();
    let mut present = HashSet::new();
    let Some(files) = &opts.files else {
        return Ok((plans, writes, present));
    };
    for p in &plans {
        if p.item.kind == Kind::FalcoctlIndex {
            continue; // rewritten from memory after the import
        }
        for f in &p.files {
            let has = files.has(&f.path, &f.digest, f.size).await.unwrap_or(false);
            if has {
                present.insert(f.path.clone());
            } else {
                // Paths are unique across items (tree::plan claims each once).
                writes
                    .entry(f.digest.clone())
                    .or_default()
                    .push(f.path.clone());
            }
        }
    }
    Ok((plans, writes, present))
}

fn file_plan_entries(
    opts: &ImportOptions,
    plans: &[FilePlan],
    present: &HashSet<RelPath>,
) -> Vec<PlanEntry> {
    let Some(files) = &opts.files else {
        return Vec::new();
    };
    plans
        .iter()
        .map(|p| PlanEntry {
            kind: p.item.kind.as_str().into(),
            source: p.item.reference.clone(),
            target: files.location(&p.path),
            digest: p.item.digest.to_string(),
            upload_blobs: p
                .files
                .iter()
                .filter(|f| !present.contains(&f.path))
                .count(),
        })
        .collect()
}

/// Waits for file writes and drops what they staged: nothing of a refused
/// bundle is published.
async fn abort_files(tasks: &mut JoinSet<FileTask>, files: Option<&crate::files::FileTarget>) {
    while let Some(done) = tasks.join_next().await {
        if let Ok((_, _, Ok(staged))) = done {
            staged.abort().await;
        }
    }
    if let Some(f) = files {
        f.tidy().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(reference: &str, manifests: &[&Digest], subject: Option<&Digest>) -> ItemPlan {
        let digest = manifests[0].clone();
        ItemPlan {
            item: Item {
                kind: Kind::Image,
                reference: reference.into(),
                digest,
                media_type: manifest::OCI_MANIFEST.into(),
                size: 1,
                platforms: vec![],
                path: None,
                subject: subject.cloned(),
            },
            reference: Reference::parse(reference).unwrap(),
            repo: Repo {
                host: "mirror.example".into(),
                path: "a/b".into(),
            },
            manifests: manifests.iter().map(|d| (*d).clone()).collect(),
            blobs: vec![],
            sparse: false,
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
            .map(|p| p.item.reference)
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
