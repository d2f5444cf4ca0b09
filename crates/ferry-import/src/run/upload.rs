//! Blobs to the target: uploaded as they stream past (small ones whole,
//! large ones in one streamed PUT each), each to the first repository that
//! needs it; those whose upload failed once their bytes were gone are read
//! again from the bundle in one second pass and uploaded in chunks
//! ([`ImportRun::reread`]); then every blob is mounted into the other
//! repositories that need it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use ferry_bundle::meta::BlobMeta;
use ferry_bundle::parts::open_bundle;
use ferry_bundle::reader::{BundleError, Report};
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;
use ferry_registry::{chain, Repo};

use super::bridge::Bridge;
use super::feed::{Lane, Msg, Stopped};
use super::plan::SharedRepo;
use super::{ImportError, ImportRun};
use crate::dest::{Dest, Sending, UploadFailed};
use crate::Event;
use std::ops::ControlFlow;

/// An upload's outcome: the blob, its size, and how it went.
type UploadDone = (Digest, u64, Result<(), UploadFailed>);

/// The uploads in flight, at most `--jobs` at once, and the outcomes of
/// those done.
pub(super) struct Uploads {
    pub(super) set: JoinSet<UploadDone>,
    permits: Arc<Semaphore>,
    /// Outcomes of finished uploads, taken from `set` as the run goes: a
    /// finished task keeps its whole allocation (the size of its future)
    /// until joined, which would grow with the number of blobs.
    done: Vec<Result<UploadDone, tokio::task::JoinError>>,
    /// Blobs uploaded whose verdict from the reader has not come yet
    /// ([`ImportRun::reap_uploads`]).
    awaiting: Vec<(Digest, u64)>,
}

impl Uploads {
    pub(super) fn new(jobs: usize) -> Uploads {
        Uploads {
            set: JoinSet::new(),
            permits: Arc::new(Semaphore::new(jobs.max(1))),
            done: Vec::new(),
            awaiting: Vec::new(),
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
        all.extend(
            self.awaiting
                .drain(..)
                .map(|(d, size)| Ok((d, size, Ok(())))),
        );
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

/// Uploads a blob that streams in chunks: one streamed PUT (the registry's
/// raw-ingest path; chunks where a registry refuses it), or the store's
/// local write.
async fn upload_streamed(
    dest: &Dest,
    repo: &Repo,
    blob: &BlobMeta,
    chunks: mpsc::Receiver<Bytes>,
) -> Result<(), UploadFailed> {
    dest.upload_blob_stream(repo, &blob.digest, blob.size, chunks, Sending::OnePut)
        .await
}

/// A verified blob to read again: its digest, its size, why its upload
/// failed.
type Again = (Digest, u64, String);

/// A blob's bytes from the re-read pass.
enum Reread {
    /// Read whole, with the memory budget it holds.
    Whole(Bytes, Arc<OwnedSemaphorePermit>),
    /// As they stream past, the last chunk once verified.
    Chunks(mpsc::Receiver<Bytes>),
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
        self.reap_uploads();
        ControlFlow::Continue(())
    }

    /// A blob streamed in chunks: to its file paths and its upload.
    pub(super) async fn upload_large(
        &mut self,
        meta: BlobMeta,
        registry_chunks: Option<mpsc::Receiver<Bytes>>,
        file_chunks: Vec<(RelPath, mpsc::Receiver<Bytes>)>,
        lane: Lane,
    ) -> ControlFlow<()> {
        self.files.take_large(self.opts, &meta, file_chunks);
        let (Some(repo), Some(chunks)) =
            (self.first_repo.get(&meta.digest).cloned(), registry_chunks)
        else {
            return ControlFlow::Continue(());
        };
        // A lane's upload takes no permit (see `Lane::Lane`).
        let permit = match lane {
            Lane::Reader => Some(self.uploads.permits.clone().acquire_owned().await),
            Lane::Lane => None,
        };
        let dest = self.dest.clone();
        self.uploads.set.spawn(async move {
            let _permit = permit;
            let r = upload_streamed(&dest, &repo, &meta, chunks).await;
            (meta.digest, meta.size, r)
        });
        self.reap_uploads();
        ControlFlow::Continue(())
    }

    /// Takes the uploads that have finished. A blob that uploaded and that
    /// the reader has verified is at the target from here on: it is settled
    /// at once ([`ImportRun::uploaded`]) and neither its outcome nor its
    /// verdict is kept until the end, where both grew with the number of
    /// blobs (issue 17: import's peak at 10,000 references); the verdict
    /// stays only where the file side asks it. An upload
    /// whose verdict has not come yet waits in `awaiting` and is looked at
    /// again at the next reap; every other outcome (a failure, a failed
    /// verdict) is kept for [`ImportRun::settle_uploads`], which decides as
    /// before.
    fn reap_uploads(&mut self) {
        while let Some(done) = self.uploads.set.try_join_next() {
            match done {
                Ok((d, size, Ok(()))) => self.uploads.awaiting.push((d, size)),
                other => self.uploads.done.push(other),
            }
        }
        let mut settled = Vec::new();
        let (verdicts, done, files) = (&mut self.verdicts, &mut self.uploads.done, &self.files);
        self.uploads
            .awaiting
            .retain(|(d, size)| match verdicts.get(d) {
                None => true,
                Some(Ok(())) => {
                    // The file side may still ask (a chart both pushed and
                    // written): its verdict stays for it.
                    if !files.asks_verdict(d) {
                        verdicts.remove(d);
                    }
                    settled.push((d.clone(), *size));
                    false
                }
                Some(Err(_)) => {
                    done.push(Ok((d.clone(), *size, Ok(()))));
                    false
                }
            });
        for (d, size) in settled {
            self.uploaded(d, size);
        }
    }

    /// Waits for every upload: a blob counts as at the target only if it
    /// uploaded and the reader verified it. A verified blob whose upload
    /// failed once its bytes were gone (or whose retries ran out) is not a
    /// failure yet: the re-read pass ([`ImportRun::reread`]) supplies it
    /// again. Returns why each blob that is not there is not.
    pub(super) async fn settle_uploads(
        &mut self,
        read: &Report,
    ) -> Result<HashMap<Digest, String>, ImportError> {
        let mut upload_errors: HashMap<Digest, String> = HashMap::new();
        let mut again: Vec<Again> = Vec::new();
        for done in self.uploads.join_all().await {
            let (d, size, r) = done.map_err(|e| ImportError::Task(e.to_string()))?;
            let verified = matches!(self.verdicts.get(&d), Some(Ok(())));
            match r {
                Ok(()) if verified => self.uploaded(d, size),
                Ok(()) => {
                    upload_errors.insert(d.clone(), "failed verification in the bundle".into());
                }
                // The bytes were good and are gone: read again below.
                Err(e) if e.again && verified => again.push((d, size, e.reason)),
                Err(e) => {
                    upload_errors.insert(d, e.reason);
                }
            }
        }
        if !again.is_empty() {
            self.reread(again, &mut upload_errors).await;
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

    /// A blob at the target, in the first repository that needs it.
    fn uploaded(&mut self, d: Digest, size: u64) {
        self.report.blobs_uploaded += 1;
        self.report.bytes_uploaded += size;
        if let Some(repo) = self.first_repo.get(&d) {
            self.present.insert((repo.clone(), d));
        }
    }

    /// The re-read pass, once, after the first read: the bundle is opened
    /// again (parts included) and read, with every check of the first read,
    /// as far as the last of `again`; each of those blobs is hashed again by
    /// the reader (the file may have changed since: a blob that no longer
    /// matches fails, and nothing of it lands) and uploaded in chunks, each
    /// kept until acknowledged and retried alone. What still fails is
    /// recorded in `upload_errors`, with the first failure.
    async fn reread(&mut self, again: Vec<Again>, upload_errors: &mut HashMap<Digest, String>) {
        let n = again.len();
        self.report.blobs_reread = n;
        let message = format!(
            "{n} blob(s) did not upload from the first read of the bundle (the bytes sent were gone, or the retries ran out): reading `{}` again for them",
            self.opts.bundle.display()
        );
        (self.events)(Event::Warning { message });
        let sizes: HashMap<Digest, (u64, String)> = again
            .into_iter()
            .map(|(d, size, first)| (d, (size, first)))
            .collect();
        let (outcomes, verdicts, read_error) = self.reread_blobs(&sizes).await;
        for (d, (size, first)) in sizes {
            let why = match (outcomes.get(&d), verdicts.get(&d)) {
                (Some(Ok(())), Some(Ok(()))) => {
                    self.uploaded(d, size);
                    continue;
                }
                (_, Some(Err(bad))) => {
                    format!("read again from the bundle, it no longer matches: {bad}")
                }
                (Some(Err(e)), _) => format!("uploaded again from the bundle: {e}"),
                (_, None) => match &read_error {
                    Some(e) => format!("reading the bundle again failed: {e}"),
                    None => "not found when the bundle was read again".into(),
                },
                (None, Some(Ok(()))) => "not uploaded when the bundle was read again".into(),
            };
            upload_errors.insert(d, format!("{first}; {why}"));
        }
    }

    /// Reads the bundle again for the blobs of `wanted` (digest → the size
    /// the first read found) and uploads each in chunks: returns each
    /// upload's outcome, the reader's verdicts, and why the read stopped
    /// short, if it did.
    async fn reread_blobs(
        &mut self,
        wanted: &HashMap<Digest, (u64, String)>,
    ) -> (
        HashMap<Digest, Result<(), String>>,
        HashMap<Digest, Result<(), String>>,
        Option<String>,
    ) {
        let src = match open_bundle(&self.opts.bundle) {
            Ok(src) => src,
            Err(e) => return (HashMap::new(), HashMap::new(), Some(chain(&e))),
        };
        let mut bridge = Bridge::reread(src, self.opts, wanted.keys().cloned().collect());
        let mut verdicts = HashMap::new();
        let mut uploads = Uploads::new(self.opts.jobs);
        while let Some(msg) = bridge.rx.recv().await {
            let (meta, data) = match msg {
                Msg::Verdict(d, v) => {
                    verdicts.insert(d, v);
                    continue;
                }
                Msg::Small(meta, data, held) => (meta, Reread::Whole(data, held)),
                Msg::Large(meta, Some(chunks), _, _) => (meta, Reread::Chunks(chunks)),
                _ => continue,
            };
            let (Some(repo), Some((size, _))) = (
                self.first_repo.get(&meta.digest).cloned(),
                wanted.get(&meta.digest),
            ) else {
                continue;
            };
            if meta.size != *size {
                // Dropping the bytes fails nothing else; the verdict says why.
                verdicts.insert(
                    meta.digest.clone(),
                    Err(format!(
                        "its size changed from {size} to {} bytes",
                        meta.size
                    )),
                );
                continue;
            }
            let permit = uploads.permits.clone().acquire_owned().await;
            let dest = self.dest.clone();
            uploads.set.spawn(async move {
                let _permit = permit;
                let r = match data {
                    Reread::Whole(bytes, _held) => {
                        dest.upload_blob(&repo, &meta.digest, bytes).await
                    }
                    Reread::Chunks(chunks) => {
                        dest.upload_blob_stream(
                            &repo,
                            &meta.digest,
                            meta.size,
                            chunks,
                            Sending::Chunks,
                        )
                        .await
                    }
                };
                (meta.digest, meta.size, r)
            });
            uploads.reap();
        }
        let read_error = match bridge.stop().await {
            Ok((_, Some(bad_part))) => Some(chain(&bad_part)),
            Ok((Err(BundleError::Visitor(e)), None)) if e.is::<Stopped>() => None,
            Ok((Err(e), None)) => Some(chain(&e)),
            Ok((Ok(_), None)) => None,
            Err(e) => Some(e.to_string()),
        };
        let mut outcomes = HashMap::new();
        for done in uploads.join_all().await {
            match done {
                Ok((d, _, r)) => {
                    outcomes.insert(d, r.map_err(|e| e.reason));
                }
                Err(e) => tracing::warn!("a re-read upload task failed: {e}"),
            }
        }
        (outcomes, verdicts, read_error)
    }

    /// Mounts: every repository that needs a blob gets it from where it is
    /// on the same host.
    pub(super) async fn mount(&mut self, upload_errors: &mut HashMap<Digest, String>) {
        let mounts = self.mounts();
        let mount_results: Vec<(SharedRepo, Digest, Result<bool, String>)> = stream::iter(mounts)
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
    fn mounts(&self) -> Vec<(SharedRepo, Digest, SharedRepo)> {
        // Where each blob is now, per host (the first repository found).
        let mut present_at: HashMap<(&str, &Digest), &SharedRepo> = HashMap::new();
        for (r, d) in &self.present {
            present_at.entry((r.host.as_str(), d)).or_insert(r);
        }
        let mut mounts: Vec<(SharedRepo, Digest, SharedRepo)> = Vec::new();
        let mut mounting: HashSet<(&SharedRepo, &Digest)> = HashSet::new();
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
