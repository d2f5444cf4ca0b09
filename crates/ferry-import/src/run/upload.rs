//! Blobs to the target: uploaded as they stream past (small ones whole,
//! large ones in chunks), each to the first repository that needs it, then
//! mounted into every other repository that needs it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use ferry_bundle::meta::BlobMeta;
use ferry_bundle::reader::Report;
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;
use ferry_registry::Repo;

use super::{ImportError, ImportRun};
use crate::dest::Dest;
use crate::Event;
use std::ops::ControlFlow;

/// An upload's outcome: the blob, its size, and how it went.
type UploadDone = (Digest, u64, Result<(), String>);

/// The uploads in flight, at most `--jobs` at once, and the outcomes of
/// those done.
pub(super) struct Uploads {
    pub(super) set: JoinSet<UploadDone>,
    permits: Arc<Semaphore>,
    /// Outcomes of finished uploads, taken from `set` as the run goes: a
    /// finished task keeps its whole allocation (the size of its future)
    /// until joined, which would grow with the number of blobs.
    done: Vec<Result<UploadDone, tokio::task::JoinError>>,
}

impl Uploads {
    pub(super) fn new(jobs: usize) -> Uploads {
        Uploads {
            set: JoinSet::new(),
            permits: Arc::new(Semaphore::new(jobs.max(1))),
            done: Vec::new(),
        }
    }

    /// Takes the outcomes of the uploads that have finished.
    fn reap(&mut self) {
        while let Some(done) = self.set.try_join_next() {
            self.done.push(done);
        }
    }

    /// Every outcome: those taken already, then the rest as they finish.
    async fn join_all(&mut self) -> Vec<Result<UploadDone, tokio::task::JoinError>> {
        let mut all = std::mem::take(&mut self.done);
        while let Some(done) = self.set.join_next().await {
            all.push(done);
        }
        all
    }

    /// Stops every upload and waits until they are gone.
    pub(super) async fn abort(&mut self) {
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
    }
}

/// Uploads a blob that streams in chunks: the one call site of the chunked
/// upload (a streamed single-PUT upload drops in here).
async fn upload_streamed(
    dest: &Dest,
    repo: &Repo,
    blob: &BlobMeta,
    chunks: mpsc::Receiver<Bytes>,
) -> Result<(), String> {
    dest.upload_blob_chunked(repo, &blob.digest, blob.size, chunks)
        .await
}

impl ImportRun<'_> {
    /// A blob read whole: kept, checked, staged to files and uploaded, as
    /// the plan says.
    pub(super) async fn upload_small(
        &mut self,
        meta: BlobMeta,
        data: Bytes,
        held: Arc<OwnedSemaphorePermit>,
    ) -> ControlFlow<()> {
        self.files.take_small(self.opts, &meta, &data, &held);
        let Some(repo) = self.first_repo.get(&meta.digest).cloned() else {
            return ControlFlow::Continue(());
        };
        let permit = self.uploads.permits.clone().acquire_owned().await;
        let dest = self.dest.clone();
        let events = self.events.clone();
        self.uploads.set.spawn(async move {
            let _permit = permit;
            let _held = held;
            let size = data.len() as u64;
            let r = dest.upload_blob(&repo, &meta.digest, data).await;
            if r.is_ok() {
                events(Event::UploadProgress { bytes: size });
            }
            (meta.digest, size, r)
        });
        self.uploads.reap();
        ControlFlow::Continue(())
    }

    /// A blob streamed in chunks: to its file paths and its upload.
    pub(super) async fn upload_large(
        &mut self,
        meta: BlobMeta,
        registry_chunks: Option<mpsc::Receiver<Bytes>>,
        file_chunks: Vec<(RelPath, mpsc::Receiver<Bytes>)>,
    ) -> ControlFlow<()> {
        self.files.take_large(self.opts, &meta, file_chunks);
        let (Some(repo), Some(chunks)) =
            (self.first_repo.get(&meta.digest).cloned(), registry_chunks)
        else {
            return ControlFlow::Continue(());
        };
        let permit = self.uploads.permits.clone().acquire_owned().await;
        let dest = self.dest.clone();
        self.uploads.set.spawn(async move {
            let _permit = permit;
            let r = upload_streamed(&dest, &repo, &meta, chunks).await;
            (meta.digest, meta.size, r)
        });
        self.uploads.reap();
        ControlFlow::Continue(())
    }

    /// Waits for every upload: a blob counts as at the target only if it
    /// uploaded and the reader verified it. Returns why each blob that is
    /// not there is not.
    pub(super) async fn settle_uploads(
        &mut self,
        read: &Report,
    ) -> Result<HashMap<Digest, String>, ImportError> {
        let mut upload_errors: HashMap<Digest, String> = HashMap::new();
        for done in self.uploads.join_all().await {
            let (d, size, r) = done.map_err(|e| ImportError::Task(e.to_string()))?;
            let verified = matches!(self.verdicts.get(&d), Some(Ok(())));
            match r {
                Ok(()) if verified => {
                    self.report.blobs_uploaded += 1;
                    self.report.bytes_uploaded += size;
                    if let Some(repo) = self.first_repo.get(&d) {
                        self.present.insert((repo.clone(), d.clone()));
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
        for f in &read.bad_blobs {
            self.report
                .bad_blobs
                .push(format!("{}: {}", f.digest, f.reason));
            upload_errors.insert(f.digest.clone(), f.reason.clone());
        }
        // Blobs never uploaded (verification failed before upload).
        let present_anywhere: HashSet<&Digest> = self.present.iter().map(|(_, d)| d).collect();
        for d in self.first_repo.keys() {
            if !present_anywhere.contains(d) && !upload_errors.contains_key(d) {
                let why = match self.verdicts.get(d) {
                    Some(Err(e)) => e.clone(),
                    _ => "not uploaded".into(),
                };
                upload_errors.insert(d.clone(), why);
            }
        }
        Ok(upload_errors)
    }

    /// Mounts: every repository that needs a blob gets it from where it is
    /// on the same host.
    pub(super) async fn mount(&mut self, upload_errors: &mut HashMap<Digest, String>) {
        let mounts = self.mounts();
        let mount_results: Vec<(Repo, Digest, Result<bool, String>)> = stream::iter(mounts)
            .map(|(repo, d, from)| {
                let dest = self.dest.clone();
                async move {
                    let r = dest.mount_blob(&repo, &d, &from).await;
                    (repo, d, r)
                }
            })
            .buffer_unordered(self.opts.jobs.max(1))
            .collect()
            .await;
        for (repo, d, r) in mount_results {
            match r {
                Ok(true) => {
                    self.report.blobs_mounted += 1;
                    self.present.insert((repo, d));
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
    }

    /// The mounts to make: (repository, blob, from), each once.
    fn mounts(&self) -> Vec<(Repo, Digest, Repo)> {
        // Where each blob is now, per host (the first repository found).
        let mut present_at: HashMap<(&str, &Digest), &Repo> = HashMap::new();
        for (r, d) in &self.present {
            present_at.entry((r.host.as_str(), d)).or_insert(r);
        }
        let mut mounts: Vec<(Repo, Digest, Repo)> = Vec::new();
        let mut mounting: HashSet<(&Repo, &Digest)> = HashSet::new();
        for p in &self.plans {
            for (d, _) in &p.blobs {
                if self.present.contains(&(p.repo.clone(), d.clone())) {
                    continue;
                }
                if let Some(from) = present_at.get(&(p.repo.host.as_str(), d)) {
                    if mounting.insert((&p.repo, d)) {
                        mounts.push((p.repo.clone(), d.clone(), (*from).clone()));
                    }
                }
            }
        }
        mounts
    }
}
