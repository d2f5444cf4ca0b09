//! The file side of an import run (charts, drivers, plugins, files): which
//! files the target lacks, their bytes staged as they stream, the checks
//! export made re-made on the bytes that crossed, and the staged writes
//! published only once the whole bundle verified (or dropped). The file
//! target itself is [`crate::files`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinSet;

use ferry_bundle::meta::{BlobMeta, Kind};
use ferry_bundle::reader::{Head, Report};
use ferry_bundle::relpath::RelPath;
use ferry_bundle::{Digest, Reference};
use ferry_registry::{chain, Repo};

use super::{ImportError, ImportOptions, ImportRun, ItemOutcome, Manifests, PlanEntry};
use crate::files::{FileTarget, Staged};
use crate::receipt::Receipt;
use crate::tree::{self, FilePlan};
use crate::Event;

/// A file write: the blob, the path, and what it staged.
pub(super) type FileTask = (Digest, RelPath, Result<Staged, String>);

/// The file plan: the items' files, the blobs to write where, the paths the
/// target already has.
pub(super) type FilesPlanned = (
    Vec<FilePlan>,
    HashMap<Digest, Vec<RelPath>>,
    HashSet<RelPath>,
);

/// The file side's state during a run.
#[derive(Default)]
pub(super) struct FileSide {
    /// File items and their files.
    pub(super) plans: Vec<FilePlan>,
    /// Blobs to write to the file target, and where.
    pub(super) writes: HashMap<Digest, Vec<RelPath>>,
    /// Paths the target already has.
    pub(super) present: HashSet<RelPath>,
    /// Blobs kept in memory (chart metadata, the falcoctl index).
    captured: HashMap<Digest, Bytes>,
    capture_set: HashSet<Digest>,
    /// Chart archives, re-checked as they stream: blob → chart name.
    chart_set: HashMap<Digest, String>,
    chart_checks: JoinSet<(Digest, Result<(), String>)>,
    /// sha512 of the blobs that need one (OpenSearch plugin zips).
    pub(super) sha512s: HashMap<Digest, String>,
    /// Staged writes in flight.
    pub(super) tasks: JoinSet<FileTask>,
    /// Blobs whose sha512 the checks need ([`FileSide::streamed`]).
    sha512_set: HashSet<Digest>,
}

impl FileSide {
    /// Takes the file plan.
    pub(super) fn set_plan(&mut self, (plans, writes, present): FilesPlanned) {
        self.plans = plans;
        self.writes = writes;
        self.present = present;
    }

    /// Which blobs the reader must read whole as they stream (kept, or
    /// checked), and which it hashes with sha512.
    pub(super) fn streamed(
        &mut self,
        h: &Head,
        manifests: &Manifests,
    ) -> (HashSet<Digest>, HashSet<Digest>) {
        self.capture_set = tree::captures(&self.plans);
        self.chart_set = tree::chart_archives(&h.meta.items, manifests)
            .into_iter()
            .filter_map(|(_, archive)| archive)
            .collect();
        let capture: HashSet<Digest> = self
            .capture_set
            .iter()
            .chain(self.chart_set.keys())
            .cloned()
            .collect();
        self.sha512_set = tree::sha512_wanted(&self.plans);
        (capture, self.sha512_set.clone())
    }

    /// Whether settling the file side asks the reader's verdict on `d`: a
    /// blob written to a file, or one whose sha512 is checked.
    pub(super) fn asks_verdict(&self, d: &Digest) -> bool {
        self.writes.contains_key(d) || self.sha512_set.contains(d)
    }

    /// A blob read whole: kept, its chart checked, staged to its paths.
    pub(super) fn take_small(
        &mut self,
        opts: &ImportOptions,
        meta: &BlobMeta,
        data: &Bytes,
        held: &Arc<OwnedSemaphorePermit>,
    ) {
        if self.capture_set.contains(&meta.digest) {
            self.captured.insert(meta.digest.clone(), data.clone());
        }
        if let Some(name) = self.chart_set.get(&meta.digest) {
            // Checked now, off the async threads; only the verdict
            // is kept (the bytes go on to their uploads).
            let (tgz, name, d) = (data.clone(), name.clone(), meta.digest.clone());
            self.chart_checks
                .spawn_blocking(move || (d, tree::check_chart(&tgz, &name)));
        }
        let (Some(files), Some(paths)) = (&opts.files, self.writes.get(&meta.digest)) else {
            return;
        };
        for path in paths {
            let files = files.clone();
            let path = path.clone();
            let data = data.clone();
            let d = meta.digest.clone();
            let held = held.clone();
            self.tasks.spawn(async move {
                let _held = held;
                // Staged only: published once the whole bundle
                // has verified.
                let r = files.stage_bytes(&path, data).await.map_err(|e| chain(&e));
                (d, path, r)
            });
        }
    }

    /// A blob streamed in chunks: staged to each of its paths.
    pub(super) fn take_large(
        &mut self,
        opts: &ImportOptions,
        meta: &BlobMeta,
        file_chunks: Vec<(RelPath, mpsc::Receiver<Bytes>)>,
    ) {
        let Some(files) = &opts.files else {
            return;
        };
        for (path, rx) in file_chunks {
            let files = files.clone();
            let d = meta.digest.clone();
            let size = meta.size;
            self.tasks.spawn(async move {
                let r = files
                    .write_stream(&path, &d, size, rx)
                    .await
                    .map_err(|e| chain(&e));
                (d, path, r)
            });
        }
    }
}

impl ImportRun<'_> {
    /// The items that must land nowhere: those the bundle failed and those
    /// failing the checks export made (chart archives, `.sha512`), re-made
    /// on the bytes that crossed. Item reference → why.
    pub(super) async fn revalidate(
        &mut self,
        h: &Head,
        read: &Report,
    ) -> Result<HashMap<String, String>, ImportError> {
        let verdicts = &self.verdicts;
        let verified_sha512: HashMap<Digest, String> = std::mem::take(&mut self.files.sha512s)
            .into_iter()
            .filter(|(d, _)| matches!(verdicts.get(d), Some(Ok(()))))
            .collect();
        let mut chart_verdicts: HashMap<Digest, Result<(), String>> = HashMap::new();
        while let Some(done) = self.files.chart_checks.join_next().await {
            let (d, verdict) = done.map_err(|e| ImportError::Task(e.to_string()))?;
            chart_verdicts.insert(d, verdict);
        }
        let charts = tree::chart_archives(&h.meta.items, &self.manifests);
        let mut failed_items: HashMap<String, String> = tree::revalidate(
            &self.files.plans,
            &charts,
            &chart_verdicts,
            &self.files.captured,
            &verified_sha512,
        );
        for (r, why) in &read.failed_items {
            failed_items.entry(r.clone()).or_insert_with(|| why.clone());
        }
        Ok(failed_items)
    }

    /// Publishes what verified (nothing was visible until now) and drops
    /// what did not. Returns the paths at the target and why the others
    /// are not.
    pub(super) async fn settle_files(
        &mut self,
        failed_items: &HashMap<String, String>,
    ) -> Result<LandedFiles, ImportError> {
        let held_back: HashMap<&RelPath, &str> = self
            .files
            .plans
            .iter()
            .filter_map(|p| failed_items.get(&p.item.reference).map(|why| (p, why)))
            .flat_map(|(p, why)| p.files.iter().map(move |f| (&f.path, why.as_str())))
            .collect();
        let mut errors: HashMap<RelPath, String> = HashMap::new();
        let mut landed: HashSet<RelPath> = self.files.present.clone();
        while let Some(done) = self.files.tasks.join_next().await {
            let (d, path, r) = done.map_err(|e| ImportError::Task(e.to_string()))?;
            let verified = matches!(self.verdicts.get(&d), Some(Ok(())));
            match r {
                Ok(staged) if held_back.contains_key(&path) => {
                    staged.abort().await;
                    let why = held_back.get(&path).copied().unwrap_or_default();
                    errors.insert(path, why.to_string());
                }
                Ok(staged) if verified => match staged.commit().await {
                    Ok(()) => {
                        self.report.files_written += 1;
                        landed.insert(path);
                    }
                    Err(e) => {
                        errors.insert(path, chain(&e));
                    }
                },
                Ok(staged) => {
                    staged.abort().await;
                    let why = match self.verdicts.get(&d) {
                        Some(Err(e)) => e.clone(),
                        _ => "failed verification in the bundle".into(),
                    };
                    errors.insert(path, why);
                }
                Err(e) => {
                    errors.insert(path, e);
                }
            }
        }
        self.report.files_present = self.files.present.len();
        Ok(LandedFiles { landed, errors })
    }

    /// Reports the file items (each lands only with all its files), then
    /// writes what is derived from the landed ones: Helm repository
    /// indexes, the falcoctl index.
    pub(super) async fn commit_files(
        &mut self,
        h: &Head,
        failed_items: &HashMap<String, String>,
        files_out: &LandedFiles,
        receipt: &mut Receipt,
    ) {
        let opts = self.opts;
        let Some(files) = &opts.files else {
            return;
        };
        let mut landed_items: HashSet<String> = HashSet::new();
        for fp in &self.files.plans {
            if fp.item.kind == Kind::FalcoctlIndex {
                continue; // written rewritten, below
            }
            let outcome = |note: Option<String>| ItemOutcome {
                source: fp.item.reference.clone(),
                target: files.location(&fp.path),
                digest: Some(fp.item.digest.clone()),
                note,
            };
            if let Some(why) = failed_items.get(fp.item.reference.as_str()) {
                self.report.failed.push(outcome(Some(why.clone())));
                continue;
            }
            if let Some(f) = fp
                .files
                .iter()
                .find(|f| !files_out.landed.contains(&f.path))
            {
                let why = files_out
                    .errors
                    .get(&f.path)
                    .cloned()
                    .unwrap_or_else(|| "not written".into());
                self.report
                    .failed
                    .push(outcome(Some(format!("{}: {why}", files.location(&f.path)))));
                continue;
            }
            for f in &fp.files {
                receipt.files.insert(f.path.to_string(), f.digest.clone());
            }
            if let (Some(store), false) = (&opts.store, tree::is_registry_kind(fp.item.kind)) {
                let recorded =
                    record_in_store(store, fp, &self.manifests, &self.files.captured).await;
                if let Err(message) = recorded {
                    (self.events)(Event::Warning { message });
                }
            }
            landed_items.insert(fp.item.reference.clone());
            (self.events)(Event::Committed {
                reference: fp.item.reference.clone(),
                target: files.location(&fp.path),
            });
            self.report.loaded.push(outcome(None));
        }
        self.write_helm_indexes(files, &landed_items).await;
        self.write_falcoctl_index(files, h).await;
    }

    /// The Helm repository indexes of the charts that landed.
    async fn write_helm_indexes(&mut self, files: &FileTarget, landed_items: &HashSet<String>) {
        let now = tree::rfc3339(std::time::SystemTime::now());
        let written = tree::write_helm_indexes(
            files,
            &self.files.plans,
            landed_items,
            &self.files.captured,
            &now,
        )
        .await;
        match written {
            Ok(paths) => {
                for p in paths {
                    self.report.files_written += 1;
                    (self.events)(Event::Committed {
                        reference: "helm repository index".into(),
                        target: files.location(&p),
                    });
                }
            }
            Err(e) => self.report.failed.push(ItemOutcome {
                source: "helm repository index".into(),
                target: String::new(),
                digest: None,
                note: Some(e),
            }),
        }
    }

    /// The falcoctl index, rewritten to list the artifacts that landed.
    async fn write_falcoctl_index(&mut self, files: &FileTarget, h: &Head) {
        let Some(fp) = self
            .files
            .plans
            .iter()
            .find(|p| p.item.kind == Kind::FalcoctlIndex)
        else {
            return;
        };
        let loaded: HashSet<&str> = self
            .report
            .loaded
            .iter()
            .map(|l| l.source.as_str())
            .collect();
        let bundled: Vec<(Reference, Repo)> = self
            .plans
            .iter()
            .filter(|p| {
                p.item.kind == Kind::FalcoArtifact && loaded.contains(p.item.reference.as_str())
            })
            .map(|p| (p.reference.clone(), Repo::clone(&p.repo)))
            .collect();
        let outcome = |note: Option<String>| ItemOutcome {
            source: fp.item.reference.clone(),
            target: files.location(&fp.path),
            digest: Some(fp.item.digest.clone()),
            note,
        };
        if self.opts.target.is_none() {
            (self.events)(Event::Warning {
                message: "no --registry: the falcoctl index lists no artifact (its entries must point at the internal registry)".into(),
            });
        }
        let written = tree::write_falcoctl_index(
            files,
            &self.files.plans,
            &self.files.captured,
            &bundled,
            &h.meta.name,
        )
        .await;
        let done = match written {
            Ok(_) => {
                if let Some(store) = &self.opts.store {
                    let recorded =
                        record_in_store(store, fp, &self.manifests, &self.files.captured).await;
                    if let Err(message) = recorded {
                        (self.events)(Event::Warning { message });
                    }
                }
                self.report.files_written += 1;
                (self.events)(Event::Committed {
                    reference: fp.item.reference.clone(),
                    target: files.location(&fp.path),
                });
                outcome(None)
            }
            Err(e) => outcome(Some(e)),
        };
        match done.note {
            None => self.report.loaded.push(done),
            Some(_) => self.report.failed.push(done),
        }
    }
}

/// A file item that landed in a store's file tree, recorded in the store
/// so that `export --from STORE` carries it as the bundle did: its artifact
/// manifest and config as blobs, an `index.json` entry (no repository: serve
/// lists none) naming its source, kind and path. Its layers are the files
/// under `files/`, except the falcoctl index's, which the tree holds
/// rewritten: its layer is kept as a blob.
async fn record_in_store(
    store: &crate::store::Store,
    fp: &FilePlan,
    manifests: &Manifests,
    captured: &HashMap<Digest, Bytes>,
) -> Result<(), String> {
    let item = &fp.item;
    let not_recorded = |why: String| {
        format!(
            "{}: not recorded in the store ({why}); `export --from` the store will not carry it",
            item.reference
        )
    };
    let origin = crate::store::EntryOrigin::of(item).map_err(|e| not_recorded(e.to_string()))?;
    let (media_type, bytes, parsed) = manifests
        .get(&item.digest)
        .ok_or_else(|| not_recorded(format!("manifest {} is not in the bundle", item.digest)))?;
    let mut blobs: Vec<(&Digest, Bytes)> = Vec::new();
    if let Some(c) = &parsed.config {
        let empty = Bytes::from_static(ferry_bundle::artifact::EMPTY_CONFIG);
        let data = match captured.get(&c.digest) {
            Some(d) => d.clone(),
            None if Digest::of(&empty) == c.digest => empty,
            None => {
                return Err(not_recorded(format!(
                    "its config {} was not kept",
                    c.digest
                )))
            }
        };
        blobs.push((&c.digest, data));
    }
    if item.kind == Kind::FalcoctlIndex {
        for l in &parsed.layers {
            let data = captured
                .get(&l.digest)
                .ok_or_else(|| not_recorded(format!("its layer {} was not kept", l.digest)))?;
            blobs.push((&l.digest, data.clone()));
        }
    }
    blobs.push((&item.digest, bytes.clone()));
    for (d, data) in blobs {
        store
            .put_blob(d, data, ferry_bundle::digest::Check::Hash)
            .await
            .map_err(|e| not_recorded(chain(&e)))?;
    }
    store.add_entry(crate::store::Entry {
        repository: String::new(),
        tag: None,
        digest: item.digest.clone(),
        media_type: media_type.clone(),
        size: bytes.len() as u64,
        origin: Some(origin),
    });
    Ok(())
}

/// The file writes settled: the paths at the target, and why the others
/// are not.
pub(super) struct LandedFiles {
    landed: HashSet<RelPath>,
    errors: HashMap<RelPath, String>,
}

/// Plans the file side: which files the target lacks.
pub(super) async fn plan_files(
    opts: &ImportOptions,
    head: &Head,
    manifests: &Manifests,
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

/// The file items' plan entries (blobs to write each).
pub(super) fn file_plan_entries(opts: &ImportOptions, side: &FileSide) -> Vec<PlanEntry> {
    let (plans, present) = (&side.plans, &side.present);
    let Some(files) = &opts.files else {
        return Vec::new();
    };
    plans
        .iter()
        .map(|p| PlanEntry {
            kind: p.item.kind.as_str().into(),
            source: p.item.reference.clone(),
            target: files.location(&p.path),
            digest: p.item.digest.clone(),
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
pub(super) async fn abort_files(
    tasks: &mut JoinSet<FileTask>,
    files: Option<&crate::files::FileTarget>,
) {
    while let Some(done) = tasks.join_next().await {
        if let Ok((_, _, Ok(staged))) = done {
            staged.abort().await;
        }
    }
    if let Some(f) = files {
        f.tidy().await;
    }
}
