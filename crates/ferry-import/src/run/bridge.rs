//! The bridge between the bundle reader (sync, on a blocking thread) and
//! the import loop (async): [`StreamVisitor`] is the reader's visitor; it
//! hands the head, the manifests and every blob's bytes over a channel of
//! [`Msg`]s, within [`BUFFER_BUDGET`] bytes of memory, once the import loop
//! has answered with an [`UploadPlan`].
//!
//! The bundle is read once: one decompression, and one sha256 per blob,
//! the reader's ([`ferry_bundle::reader`]), which is the check (the uploads
//! and the store take the bytes as checked by their sender and only count
//! them: [`ferry_bundle::digest::Check::Sender`], in `dest.rs`). Bytes leave
//! before the verdict only as chunks of a streamed blob, and its last chunk
//! is held back until the reader's verdict is in: a blob whose bytes do not
//! match its digest never completes an upload or a file write.
//!
//! [`Bridge::reread`] is the import's one second pass: the bundle opened
//! again and read with the same checks as far as the last blob whose upload
//! needs its bytes again; only those blobs are handed over, each checked by
//! the reader's hash again.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha512};
use tokio::sync::{mpsc, oneshot, Semaphore};

use ferry_bundle::meta::BlobMeta;
use ferry_bundle::parts::{BundleSource, PartsError};
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, Report, VisitResult, Visitor,
};
use ferry_bundle::Digest;

use super::feed::{
    stop, Buffers, Feeder, Lane, Msg, Pending, Stopped, UploadPlan, BUFFER_BUDGET, MIN_CHUNKS,
};
use super::lanes::{self, Lanes};
use crate::content::CAPTURE_LIMIT;
use crate::Events;

/// The reader's visitor: hands everything to the import loop.
struct StreamVisitor {
    feed: Feeder,
    plan: Option<Arc<UploadPlan>>,
    /// The lanes that stream large blobs beside the reader, if the bundle
    /// has frames for them ([`Lanes`]), started with the plan.
    lanes: Option<Arc<Lanes>>,
    /// bundle.json, from the head (what the lanes look blobs up in).
    meta: Option<Arc<ferry_bundle::meta::BundleMeta>>,
    pending: Option<(Digest, Pending)>,
    /// The re-read pass: how many of the blobs to upload (`plan.upload`)
    /// are still to come; the read stops after the last of them. Only
    /// their bytes and verdicts are handed over (head and manifests were
    /// the first pass's).
    rereading: Option<usize>,
}

impl StreamVisitor {
    /// The plan, asked for when the first blob comes.
    fn plan(&mut self) -> Result<Arc<UploadPlan>, Box<dyn std::error::Error + Send + Sync>> {
        if let Some(plan) = &self.plan {
            return Ok(plan.clone());
        }
        let (tx, rx) = oneshot::channel();
        self.feed
            .tx
            .blocking_send(Msg::NeedPlan(tx))
            .map_err(|_| stop())?;
        match rx.blocking_recv() {
            Ok(Some(plan)) => {
                self.plan = Some(plan.clone());
                if let (Some(lanes), Some(meta)) = (&self.lanes, &self.meta) {
                    lanes.start(meta, &plan, &self.feed);
                }
                Ok(plan)
            }
            _ => Err(stop()),
        }
    }
}

impl Visitor for StreamVisitor {
    fn head(&mut self, head: &Head) -> VisitResult {
        if self.rereading.is_some() {
            return Ok(());
        }
        self.meta = Some(head.meta.clone());
        self.feed
            .tx
            .blocking_send(Msg::Head(Box::new(head.clone())))
            .map_err(|_| stop())
    }

    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult {
        if self.rereading.is_some() {
            return Ok(());
        }
        self.feed
            .tx
            .blocking_send(Msg::Manifest(blob.clone(), Bytes::copy_from_slice(bytes)))
            .map_err(|_| stop())
    }

    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        if self.feed.cancelled.load(Ordering::Relaxed) {
            return Err(stop());
        }
        let plan = self.plan()?;
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
        if let Some(lanes) = &self.lanes {
            if lanes::may_take(&plan, blob) && !lanes.claims.reader_takes(&blob.digest) {
                // A lane streams it: the reader verifies it, and its
                // verdict releases the lane's last chunk (`blob_end`).
                return Ok(());
            }
        }
        if blob.size <= self.feed.chunk || capture {
            // Wait for room before reading: uploads in flight give it back.
            let permit = Arc::new(self.feed.reserve_fresh(blob.size)?);
            let buf = self.feed.read_whole(data, blob.size)?;
            if let Some(mut h) = sha512 {
                h.update(&buf);
                self.feed.send_sha512(blob, h)?;
            }
            // Handed over once the reader's hash has checked it.
            let pending = Pending::Small(buf, permit);
            self.pending = Some((blob.digest.clone(), pending));
            return Ok(());
        }
        let last =
            self.feed
                .stream_large(blob, data, to_registry, to_files, sha512, Lane::Reader)?;
        self.pending = last.map(|p| (blob.digest.clone(), p));
        Ok(())
    }

    fn blob_end(&mut self, blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        // What was held back goes only if the blob verified; dropped
        // otherwise, which fails its upload and file writes.
        let pending = match self.pending.take() {
            Some((d, p)) if d == blob.digest && verdict.is_ok() => Some(p),
            _ => None,
        };
        match pending {
            Some(Pending::Small(bytes, permit)) => self
                .feed
                .tx
                .blocking_send(Msg::Small(blob.clone(), bytes, permit))
                .map_err(|_| stop())?,
            Some(last) => last.send(),
            None => {}
        }
        if let Some(lanes) = &self.lanes {
            lanes.claims.verdict(&blob.digest, verdict.is_ok());
        }
        let wanted = match (self.rereading, &self.plan) {
            (Some(_), Some(plan)) => plan.upload.contains(&blob.digest),
            _ => true,
        };
        if !wanted {
            return Ok(());
        }
        let v = verdict.map_err(|f| f.reason.clone());
        self.feed
            .tx
            .blocking_send(Msg::Verdict(blob.digest.clone(), v))
            .map_err(|_| stop())?;
        match self.rereading.as_mut() {
            Some(left) => {
                *left = left.saturating_sub(1);
                // Past the last blob wanted: the rest is not read again.
                if *left == 0 {
                    return Err(stop());
                }
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// What the reader returns: the read, and a bad part of a split bundle
/// (named rather than what its bytes decoded to).
pub(super) type ReadOutcome = (Result<Report, BundleError>, Option<PartsError>);

/// The reader thread and the channel it feeds.
pub(super) struct Bridge {
    /// What the reader sends.
    pub(super) rx: mpsc::Receiver<Msg>,
    /// Large blobs the lanes streamed ([`Lanes`]).
    pub(super) laned: Arc<std::sync::atomic::AtomicUsize>,
    reader: tokio::task::JoinHandle<ReadOutcome>,
    cancelled: Arc<AtomicBool>,
}

impl Bridge {
    /// Starts reading `src` on a blocking thread, with every check `ferry
    /// verify` makes.
    pub(super) fn start(src: BundleSource, opts: &super::ImportOptions, events: &Events) -> Bridge {
        Bridge::spawn(src, opts, events.clone(), None, None)
    }

    /// The re-read pass: reads `src` again (a new open of the bundle, with
    /// every check of the first read) as far as the last blob of `blobs`,
    /// and hands over only those blobs' bytes, each checked by the reader's
    /// hash as in the first pass, and their verdicts. Its progress is not
    /// reported again.
    pub(super) fn reread(
        src: BundleSource,
        opts: &super::ImportOptions,
        blobs: HashSet<Digest>,
    ) -> Bridge {
        let left = blobs.len();
        let plan = UploadPlan {
            upload: blobs,
            files: HashMap::new(),
            capture: HashSet::new(),
            sha512: HashSet::new(),
        };
        let quiet: Events = Arc::new(|_| {});
        Bridge::spawn(src, opts, quiet, Some(Arc::new(plan)), Some(left))
    }

    /// The reader thread over `src`, feeding a new channel.
    fn spawn(
        mut src: BundleSource,
        opts: &super::ImportOptions,
        events: Events,
        plan: Option<Arc<UploadPlan>>,
        rereading: Option<usize>,
    ) -> Bridge {
        let (tx, rx) = mpsc::channel::<Msg>(16);
        let chunk = opts.chunk_size.max(1024 * 1024);
        // Room for a few chunks, however large `--chunk-mib` is.
        let budget_total = BUFFER_BUDGET.max(MIN_CHUNKS * chunk).min(u32::MAX as u64);
        let cancelled = Arc::new(AtomicBool::new(false));
        let budget = Arc::new(Semaphore::new(budget_total as usize));
        let feed = Feeder {
            tx,
            chunk,
            budget: budget.clone(),
            budget_total,
            rt: tokio::runtime::Handle::current(),
            events,
            cancelled: cancelled.clone(),
            buffers: Buffers {
                kept: Arc::default(),
                budget,
                budget_total,
                chunk,
            },
        };
        // Lanes need two uploads at once at least; the re-read pass has
        // none.
        // (and a registry that checks each blob's digest itself: the store
        // takes the bytes as the reader checked them, and a lane's are
        // read again).
        let with_lanes = rereading.is_none() && opts.jobs >= 2 && opts.store.is_none();
        let jobs = opts.jobs;
        let laned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let lanes_count = laned.clone();
        let mut visitor = StreamVisitor {
            feed,
            plan,
            lanes: None,
            meta: None,
            pending: None,
            rereading,
        };
        let reader = tokio::task::spawn_blocking(move || {
            if with_lanes {
                visitor.lanes = Lanes::new(src.ranges(), lanes_count, jobs).map(Arc::new);
            }
            let read = read_bundle(
                std::io::BufReader::with_capacity(1 << 20, &mut src),
                ReadOptions { keep_going: true },
                &mut visitor,
            );
            if let Some(lanes) = &visitor.lanes {
                lanes.claims.reader_done();
            }
            // A bad part is named rather than what its bytes decoded to;
            // after a good read, the parts are checked to their last byte.
            let bad_part = match &read {
                Ok(_) => src.finish().err(),
                Err(BundleError::Visitor(e)) if e.is::<Stopped>() => None,
                Err(_) => src.diagnose(),
            };
            (read, bad_part)
        });
        Bridge {
            rx,
            laned,
            reader,
            cancelled,
        }
    }

    /// Stops the reader if the import loop left early, then collects it.
    pub(super) async fn stop(self) -> Result<ReadOutcome, super::ImportError> {
        self.cancelled.store(true, Ordering::Relaxed);
        drop(self.rx);
        self.reader
            .await
            .map_err(|e| super::ImportError::Task(e.to_string()))
    }
}
