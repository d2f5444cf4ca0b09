//! The import run: one read of the bundle, planned, uploaded, committed.
//!
//! [`import`] drives an [`ImportRun`] through its phases, each in a file
//! named for what it does:
//!
//! - [`bridge`]: the sync bundle reader (a blocking thread) feeding the
//!   async import loop: head, manifests, blob bytes within a memory budget;
//!   the bundle is read once, each blob hashed once (by the reader).
//! - [`outline`]: what the registry side keeps of each manifest until
//!   its commit (its exact bytes and what the plan and commit read of it,
//!   not its parsed form).
//! - [`plan`]: what goes where: each item's target repository (collisions
//!   refused), its manifests and blobs, what the target already has,
//!   provenance after its subjects.
//! - [`upload`]: blobs uploaded as they stream past, then mounted into the
//!   other repositories that need them.
//! - [`commit`]: pushing the manifests, children first, tags last; the
//!   referrers fallback tag.
//! - [`files`]: the file side: which files the target lacks, the staged
//!   writes published or dropped, the derived indexes.
//! - [`preflight`]: before any byte is sent, every target repository
//!   accepts a push and a store has room.
//! - [`report`]: what the run reports ([`ImportReport`]) and why it stops
//!   ([`ImportError`]).

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use ferry_bundle::manifest::{self, MediaType, Parsed};
use ferry_bundle::meta::BlobMeta;
use ferry_bundle::parts::{open_bundle, BundleSource, PartsError};
use ferry_bundle::reader::{BundleError, Head, Report};
use ferry_bundle::Digest;
use ferry_registry::Client;

use crate::dest::Dest;
use crate::files::FileTarget;
use crate::target::{Mapping, Target};
use crate::Events;

mod bridge;
mod commit;
mod feed;
mod files;
mod lanes;
mod outline;
mod plan;
mod preflight;
mod report;
mod upload;

pub(crate) use crate::content::CAPTURE_LIMIT;
pub use report::{ImportError, ImportReport, ItemOutcome, PlanEntry, SignatureCheck};

use bridge::Bridge;
use feed::{Msg, Stopped, UploadPlan};
use files::FileSide;
use outline::{Outline, Outlines};
use plan::{ItemPlan, SharedRepo};
use upload::Uploads;

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
    /// The store's directory when it is not opened (a dry run creates and
    /// locks nothing): its room is still checked.
    pub store_dir: Option<PathBuf>,
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

/// The manifests the file side reads, by digest: media type, exact bytes,
/// parsed (only its items' and charts' manifests: [`outline::for_files`];
/// the registry side keeps [`Outlines`]). The parsed form is boxed so that
/// the table's slots (and their spare ones) stay small.
type Manifests = HashMap<Digest, (MediaType, Bytes, Box<Parsed>)>;

/// Imports a bundle into a registry.
pub async fn import(
    client: &Client,
    opts: &ImportOptions,
    events: &Events,
) -> Result<ImportReport, ImportError> {
    let r = import_run(client, opts, events).await;
    // Upload sessions the preflight held that no upload took (a failed
    // run, a repository whose uploads did not come) end here.
    client.cancel_held_uploads().await;
    r
}

/// The import's phases ([`import`]).
async fn import_run(
    client: &Client,
    opts: &ImportOptions,
    events: &Events,
) -> Result<ImportReport, ImportError> {
    let src = open(opts)?;
    let dest = match &opts.store {
        Some(s) => Dest::Store(s.clone()),
        None => Dest::Registry(client.clone()),
    };
    if !opts.dry_run {
        preflight(client, opts).await?;
    }
    let mut bridge = Bridge::start(src, opts, events);
    let mut run = ImportRun::new(client, opts, events, dest);
    let early_error = run.receive(&mut bridge).await.err();
    let laned = bridge.laned.clone();
    let (read, bad_part) = bridge.stop().await?;
    run.report.blobs_laned = laned.load(std::sync::atomic::Ordering::Relaxed);
    let Some(read_report) = run.check_read(early_error, read, bad_part).await? else {
        return Ok(run.report); // a dry run, stopped once planned
    };
    if !run.planned {
        // A bundle with no streamed blobs: plan now.
        run.plan().await?;
        if opts.dry_run {
            return Ok(run.report);
        }
    }
    run.settle(read_report).await
}

/// Opens a bundle file, a parts manifest or a first part; a split bundle
/// with a missing or truncated part is refused here, before anything is
/// read.
// `ImportError` is the crate's public error, which `import` returns as is.
#[allow(clippy::result_large_err)]
fn open(opts: &ImportOptions) -> Result<BundleSource, ImportError> {
    open_bundle(&opts.bundle).map_err(|e| match e {
        PartsError::Open { path, source } => ImportError::Open { path, source },
        source => ImportError::Parts {
            path: opts.bundle.clone(),
            source,
        },
    })
}

/// The targets answer before anything is read.
async fn preflight(client: &Client, opts: &ImportOptions) -> Result<(), ImportError> {
    if let (Some(t), None) = (&opts.target, &opts.store) {
        client.ping(&t.host).await.map_err(|source| {
            // It answered, and refused these credentials: not unreachable.
            if matches!(source.status(), Some(401 | 403)) {
                ImportError::Unauthorized {
                    host: t.host.clone(),
                    source,
                }
            } else {
                ImportError::Unreachable {
                    host: t.host.clone(),
                    source,
                }
            }
        })?;
    }
    if let Some(f) = &opts.files {
        f.check().await.map_err(|source| ImportError::Files {
            target: f.describe(),
            source,
        })?;
    }
    Ok(())
}

/// The state of one import: what the read handed over, the plan made from
/// it, and the uploads and file writes in flight. Its phases live in the
/// files named for them.
struct ImportRun<'a> {
    client: &'a Client,
    opts: &'a ImportOptions,
    events: &'a Events,
    dest: Dest,
    report: ImportReport,
    head: Option<Head>,
    /// Every manifest of the bundle, outlined (the registry side).
    outlines: Outlines,
    /// The parsed manifests of the file side's items.
    manifests: Manifests,
    /// The digests of those manifests ([`outline::for_files`]).
    file_manifests: HashSet<Digest>,
    /// Registry items, in commit order.
    plans: Vec<ItemPlan>,
    /// (repository, blob) pairs at the target.
    present: HashSet<(SharedRepo, Digest)>,
    /// Blobs to upload, each to the first repository that needs it.
    first_repo: HashMap<Digest, SharedRepo>,
    planned: bool,
    files: FileSide,
    uploads: Uploads,
    /// The reader's verdict on each streamed blob.
    verdicts: HashMap<Digest, Result<(), String>>,
}

impl<'a> ImportRun<'a> {
    fn new(
        client: &'a Client,
        opts: &'a ImportOptions,
        events: &'a Events,
        dest: Dest,
    ) -> ImportRun<'a> {
        ImportRun {
            client,
            opts,
            events,
            dest,
            report: ImportReport {
                dry_run: opts.dry_run,
                ..Default::default()
            },
            head: None,
            outlines: HashMap::new(),
            manifests: HashMap::new(),
            file_manifests: HashSet::new(),
            plans: Vec::new(),
            present: HashSet::new(),
            first_repo: HashMap::new(),
            planned: false,
            files: FileSide::default(),
            uploads: Uploads::new(opts.jobs),
            verdicts: HashMap::new(),
        }
    }

    /// Takes what the reader sends until it is done, or until the run must
    /// stop (an error, or a dry run once planned).
    async fn receive(&mut self, bridge: &mut Bridge) -> Result<(), ImportError> {
        while let Some(msg) = bridge.rx.recv().await {
            let flow = match msg {
                Msg::Head(h) => self.on_head(*h)?,
                Msg::Manifest(meta, bytes) => self.on_manifest(meta, bytes),
                Msg::NeedPlan(reply) => self.on_need_plan(reply).await?,
                Msg::Small(meta, data, held) => self.upload_small(meta, data, held).await,
                Msg::Large(meta, registry, files, lane) => {
                    self.upload_large(meta, registry, files, lane).await
                }
                Msg::Verdict(d, v) => {
                    self.on_verdict(d, v);
                    ControlFlow::Continue(())
                }
                Msg::Sha512(d, hex) => {
                    self.files.sha512s.insert(d, hex);
                    ControlFlow::Continue(())
                }
            };
            if flow.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The reader's verdict on a blob. Only what settling asks is kept:
    /// every failure, every verdict before the plan, a success for a blob
    /// the file side writes or checks, and one for a blob this run uploads
    /// (until its upload is reaped, [`ImportRun::reap_uploads`]). A success
    /// for a blob at the target already is asked by no one, and kept it
    /// would grow with the references.
    fn on_verdict(&mut self, d: Digest, v: Result<(), String>) {
        if v.is_err()
            || !self.planned
            || self.first_repo.contains_key(&d)
            || self.files.asks_verdict(&d)
        {
            self.verdicts.insert(d, v);
        }
    }

    /// Verify before trust: a bad signature stops the run here, before any
    /// plan, upload or file write.
    // `ImportError` is the crate's public error, which `import` returns as is.
    #[allow(clippy::result_large_err)]
    fn on_head(&mut self, mut h: Head) -> Result<ControlFlow<()>, ImportError> {
        self.report.signature =
            check_signature(self.opts, &h).map_err(|source| ImportError::Signature {
                path: self.opts.bundle.clone(),
                source,
            })?;
        // The signature is checked and the reader holds `index.json` to
        // check the bundle against: the run does not need the index again,
        // and it grows with the references (bundle.json's exact bytes were
        // never held: the reader parsed them as they streamed).
        h.index = Arc::default();
        self.file_manifests = outline::for_files(&h.meta.items);
        self.head = Some(h);
        Ok(ControlFlow::Continue(()))
    }

    fn on_manifest(&mut self, meta: BlobMeta, bytes: Bytes) -> ControlFlow<()> {
        let mt = meta.media_type.unwrap_or_else(|| MediaType::from(""));
        // A manifest that does not parse: the reader reports it. Only the
        // file side's keep their parsed form (issue 17: what an import
        // keeps per reference).
        if let Ok(p) = manifest::parse(&bytes, Some(mt.as_ref())) {
            let outline = Outline::new(mt.clone(), bytes.clone(), &p);
            if self.file_manifests.contains(&meta.digest) {
                self.manifests
                    .insert(meta.digest.clone(), (mt, bytes, Box::new(p)));
            }
            self.outlines.insert(meta.digest, Box::new(outline));
        }
        ControlFlow::Continue(())
    }

    /// The first blob is about to stream: plans, and tells the reader what
    /// to do with each blob (nothing in a dry run).
    async fn on_need_plan(
        &mut self,
        reply: oneshot::Sender<Option<Arc<UploadPlan>>>,
    ) -> Result<ControlFlow<()>, ImportError> {
        if self.head.is_none() {
            return Ok(ControlFlow::Break(()));
        }
        if let Err(e) = self.plan().await {
            let _ = reply.send(None);
            return Err(e);
        }
        if self.opts.dry_run {
            let _ = reply.send(None);
            return Ok(ControlFlow::Break(()));
        }
        let plan = self.upload_plan();
        let _ = reply.send(Some(Arc::new(plan)));
        Ok(ControlFlow::Continue(()))
    }

    /// What the reader does with each blob: upload, write to files, keep
    /// in memory, hash with sha512.
    fn upload_plan(&mut self) -> UploadPlan {
        let upload: HashSet<Digest> = self.first_repo.keys().cloned().collect();
        let (capture, sha512) = match &self.head {
            Some(h) => self.files.streamed(h, &self.manifests),
            None => Default::default(),
        };
        // One reader of the bundle, whatever `--jobs` is.
        self.report.readers = 1;
        UploadPlan {
            upload,
            files: self.files.writes.clone(),
            capture,
            sha512,
        }
    }

    /// Plans both sides: the file side first (its items are checked), then
    /// the registry side; the report gets both plans.
    async fn plan(&mut self) -> Result<(), ImportError> {
        let Some(h) = &self.head else {
            return Err(ImportError::Task("bundle head missing".into()));
        };
        let planned_files = files::plan_files(self.opts, h, &self.manifests).await?;
        let planned = plan::make_plan(
            self.client,
            &self.dest,
            self.opts,
            h,
            &self.outlines,
            self.events,
        )
        .await?;
        self.plans = planned.items;
        self.present = planned.present;
        self.first_repo = planned.first_repo;
        if !self.plans.is_empty() {
            self.report.preflight = Some(
                preflight::check(
                    self.client,
                    &self.dest,
                    self.opts,
                    &self.plans,
                    &self.first_repo,
                    planned.upload_bytes,
                )
                .await?,
            );
        }
        self.report.plan = planned.entries;
        self.files.set_plan(planned_files);
        self.report
            .plan
            .extend(files::file_plan_entries(self.opts, &self.files));
        self.planned = true;
        Ok(())
    }

    /// Once the reader is collected: stops on an early error, a bad part or
    /// a failed read (dropping what was staged); `None` for a dry run that
    /// stopped once planned.
    async fn check_read(
        &mut self,
        early_error: Option<ImportError>,
        read: Result<Report, BundleError>,
        bad_part: Option<PartsError>,
    ) -> Result<Option<Report>, ImportError> {
        if let Some(e) = early_error {
            self.uploads.set.abort_all();
            files::abort_files(&mut self.files.tasks, self.opts.files.as_ref()).await;
            return Err(e);
        }
        let error = match (bad_part, read) {
            (Some(source), _) => ImportError::Parts {
                path: self.opts.bundle.clone(),
                source,
            },
            (None, Ok(r)) => return Ok(Some(r)),
            (None, Err(BundleError::Visitor(e))) if e.is::<Stopped>() && self.opts.dry_run => {
                return Ok(None)
            }
            (None, Err(source)) => ImportError::Bundle {
                path: self.opts.bundle.clone(),
                source,
            },
        };
        self.uploads.abort().await;
        files::abort_files(&mut self.files.tasks, self.opts.files.as_ref()).await;
        Err(error)
    }

    /// The whole bundle has verified: settles the file writes and uploads,
    /// mounts, commits item by item, writes what is derived, and reports.
    async fn settle(mut self, read: Report) -> Result<ImportReport, ImportError> {
        let Some(h) = self.head.take() else {
            return Err(ImportError::Task("bundle head missing".into()));
        };
        // Items the bundle itself fails, and items that fail the checks
        // export made (re-made here on the bytes that crossed), land nowhere.
        let failed_items = self.revalidate(&h, &read).await?;
        let landed_files = self.settle_files(&failed_items).await?;
        let mut upload_errors = self.settle_uploads(&read).await?;
        self.mount(&mut upload_errors).await;
        // Uploads and file writes are settled: what the read said of each
        // blob and where each was uploaded first are not asked again, and
        // both grow with the references (issue 17: the commit's peak).
        self.verdicts = HashMap::new();
        self.first_repo = HashMap::new();
        let mut receipt = commit::new_receipt(self.opts, &h);
        (self.events)(crate::Event::CommitStarted {
            items: self.plans.len(),
        });
        let referrers = self
            .commit_items(&failed_items, &upload_errors, &mut receipt)
            .await;
        self.push_fallback_tags(referrers, &mut receipt).await;
        self.commit_files(&h, &failed_items, &landed_files, &mut receipt)
            .await;
        self.note_skipped(&h);
        if let Some(f) = &self.opts.files {
            // Everything staged is published or dropped: no staging is left.
            f.tidy().await;
        }
        if let Some(store) = &self.opts.store {
            // The new index.json replaces the old one in one rename.
            store
                .commit()
                .map_err(|e| ImportError::Task(ferry_registry::chain(&e)))?;
        }
        self.report.receipt = receipt;
        Ok(self.report)
    }

    /// Items left alone because no target of their kind was given.
    fn note_skipped(&mut self, h: &Head) {
        for item in &h.meta.items {
            let outcome = |note: &str| ItemOutcome {
                source: item.reference.clone(),
                target: String::new(),
                digest: Some(item.digest.clone()),
                note: Some(note.to_string()),
            };
            if self.opts.target.is_none() && crate::tree::is_registry_kind(item.kind) {
                self.report
                    .skipped
                    .push(outcome("no --registry given: not pushed to a registry"));
            } else if self.opts.files.is_none() && item.path.is_some() {
                self.report
                    .skipped
                    .push(outcome("no --files given: not written to a file server"));
            } else if !self.opts.referrers && item.subject.is_some() {
                self.report
                    .skipped
                    .push(outcome("--no-referrers: provenance not pushed"));
            }
        }
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
            let v = key.verify_prehashed(&head.meta_prehash, head.signature.as_deref())?;
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
