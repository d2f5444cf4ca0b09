//! Fetching blobs into the cache and writing the bundle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};

use ferry_bundle::meta::{BlobMeta, BundleMeta};
use ferry_bundle::writer::{BundleWriter, Compression, WriteError, Written};
use ferry_bundle::Digest;
use ferry_registry::Client;

use crate::plan::{Bundle, Plan, PlannedBlob};
use crate::preflight::{Preflight, Room, SourcePlan};
use crate::resolve::Resolved;
use crate::{Event, Events};

/// How to write the bundle.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Output file.
    pub output: PathBuf,
    /// Outer compression.
    pub compression: Compression,
    /// Content-addressed blob cache directory.
    pub cache_dir: PathBuf,
    /// Stream registry blobs straight into the bundle instead of through
    /// the cache (`--no-cache`): each blob is written once, while it
    /// downloads. Blobs already in `cache_dir` (charts and files fetched to
    /// resolve them) are still read from there.
    pub stream: bool,
    /// Concurrent downloads.
    pub jobs: usize,
    /// Bundle name (the spec's).
    pub name: String,
    /// Blobs the target already holds (`--since`): left out of the bundle
    /// and listed as its base, with a repository at the target that has them.
    pub base: std::collections::HashMap<Digest, Option<String>>,
    /// Sign `ferry/bundle.json` with this key (`--sign-key`) and write the
    /// signature as `ferry/bundle.json.sig`. The signature is deterministic
    /// (RFC 8032 Ed25519, no timestamp in the trusted comment), so signed
    /// bundles are byte-reproducible like unsigned ones.
    pub sign_key: Option<ferry_bundle::sign::SigningKey>,
    /// Cut the bundle into parts of this many bytes (`--split`): `OUT.part-000`,
    /// … and the parts manifest instead of `OUT` and `OUT.sha256`.
    pub split: Option<u64>,
    /// The signature policy checked before writing and its verdicts
    /// (`bundle.json` `verification`, covered by the bundle's signature).
    pub verification: Option<ferry_bundle::meta::Verification>,
    /// Where a re-exported bundle came from (`bundle.json` `origin`).
    pub origin: Option<ferry_bundle::meta::Origin>,
}

/// What an export produced.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// The bundle file and its checksum.
    pub written: Written,
    /// Items carried.
    pub items: usize,
    /// Distinct blobs (manifests included).
    pub blobs: usize,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Blobs downloaded this run.
    pub fetched: usize,
    /// Bytes downloaded this run.
    pub fetched_bytes: u64,
    /// Blobs served from the cache.
    pub cached: usize,
    /// Blobs left out because the target has them (`--since`).
    pub base: usize,
    /// Their bytes.
    pub base_bytes: u64,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Blob downloads failed.
    #[error("failed to download {} blob(s):\n{}", .0.len(), .0.iter().map(|(d, e)| format!("  {d}: {e}")).collect::<Vec<_>>().join("\n"))]
    Fetch(Vec<(String, String)>),
    /// The cache directory is unusable.
    #[error("failed to prepare the blob cache `{path}`")]
    Cache {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A cached blob no longer matches its digest (it was removed; re-run).
    #[error("cached blob `{path}` is corrupt and was removed; run the export again")]
    CorruptCache {
        /// The path.
        path: PathBuf,
    },
    /// Writing the bundle failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Signing `ferry/bundle.json` failed.
    #[error(transparent)]
    Sign(#[from] ferry_bundle::sign::SignError),
    /// The writer thread died.
    #[error("bundle writer thread failed: {0}")]
    Join(String),
    /// The bundle was abandoned because a blob could not be fetched.
    #[error("bundle abandoned: a blob could not be fetched")]
    Abandoned,
    /// The output's or the cache's filesystem lacks room (checked before
    /// any download).
    #[error("not enough room, the write would end in \"No space left on device\": {}", .0.iter().map(|r| format!("{} `{}` needs {} bytes, {} available", r.what, r.path.display(), r.needed, r.available)).collect::<Vec<_>>().join("; "))]
    NoRoom(Vec<Room>),
    /// A file item would land outside its kind's place, on a dot-file, or
    /// on another item's path (import refuses such a bundle too).
    #[error("refusing to export: a file would land out of its kind's place")]
    Placement(#[from] ferry_bundle::placement::PlacementError),
}

/// Pieces of a streamed blob waiting for the writer, per download.
const STREAM_DEPTH: usize = 4;

/// Streamed blobs downloading or downloaded but not yet written, per job.
/// A download ends once its pieces are in its channel, so without a bound
/// the downloads of many small blobs ran ahead of the writer and each kept
/// its piece buffer (up to 256 KiB however small the blob): 19 of them at
/// the peak of a 1,000-reference export, more the slower the writer.
const STREAMS_AHEAD: usize = 2;

/// How the writer gets the next blob, in bundle order.
enum Ready {
    /// From the cache: there already (`None`), or once its download is in
    /// (a message, never sent if the download failed).
    Cached(Option<tokio::sync::oneshot::Receiver<()>>),
    /// Straight from its download ([`ferry_registry::Client::stream_blob`]),
    /// holding one of the [`STREAMS_AHEAD`] places until it is written.
    Stream(
        tokio::sync::mpsc::Receiver<bytes::Bytes>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
}

/// A streamed blob as a reader for the writer's thread: a closed channel
/// before the verified end is an error (the download failed).
struct Piped {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    piece: bytes::Bytes,
    ended: bool,
}

impl Piped {
    fn next(&mut self) -> std::io::Result<()> {
        match self.rx.blocking_recv() {
            Some(p) if p.is_empty() => self.ended = true,
            Some(p) => self.piece = p,
            None => return Err(std::io::Error::other("the download failed")),
        }
        Ok(())
    }

    /// Waits for the download's verdict once the blob's bytes are written.
    fn verified(&mut self) -> std::io::Result<()> {
        if !self.ended {
            self.next()?;
        }
        if self.ended && self.piece.is_empty() {
            Ok(())
        } else {
            Err(std::io::Error::other(
                "the download sent more bytes than announced",
            ))
        }
    }
}

impl std::io::Read for Piped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let piece = std::io::BufRead::fill_buf(self)?;
        let n = buf.len().min(piece.len());
        buf[..n].copy_from_slice(&piece[..n]);
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

/// The pieces go to the writer as they came from the download.
impl std::io::BufRead for Piped {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.piece.is_empty() && !self.ended {
            self.next()?;
        }
        Ok(&self.piece)
    }
    fn consume(&mut self, n: usize) {
        bytes::Buf::advance(&mut self.piece, n);
    }
}

fn cache_path(cache: &Path, d: &Digest) -> PathBuf {
    cache.join("blobs").join("sha256").join(d.hex())
}

fn cached_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// Which blobs the cache lacks, one flag per blob in plan order (a file
/// kind's blob, fetched at resolution, must be there: its absence is a
/// corrupt cache).
fn missing_blobs(blobs: &[PlannedBlob], cache: &Path) -> Result<Vec<bool>, ExportError> {
    let mut missing = Vec::with_capacity(blobs.len());
    for b in blobs {
        if cached_size(&cache_path(cache, &b.meta.digest)) == Some(b.meta.size) {
            missing.push(false);
            continue;
        }
        if b.local {
            return Err(ExportError::CorruptCache {
                path: cache_path(cache, &b.meta.digest),
            });
        }
        missing.push(true);
    }
    Ok(missing)
}

/// The preflight of `plan`: what is fetched from where, what is written,
/// and the room each filesystem needs.
fn count(plan: &Plan, missing: &[bool], opts: &ExportOptions) -> Preflight {
    let mut sources: std::collections::BTreeMap<String, SourcePlan> = Default::default();
    let mut fetch_bytes = 0;
    let mut fetch_blobs = 0;
    for (b, _) in plan.blobs.iter().zip(missing).filter(|(_, m)| **m) {
        fetch_blobs += 1;
        let s = sources
            .entry(format!("{}/{}", b.source.host, b.source.path))
            .or_default();
        s.blobs += 1;
        s.bytes += b.meta.size;
        fetch_bytes += b.meta.size;
    }
    let blobs = plan.manifests.len() + plan.blobs.len();
    let write_bytes: u64 = plan.manifests.iter().map(|(m, _)| m.size).sum::<u64>()
        + plan.blobs.iter().map(|b| b.meta.size).sum::<u64>();
    // Streaming (--no-cache) keeps nothing in the cache.
    let cache_needed = if opts.stream { 0 } else { fetch_bytes };
    Preflight {
        output: opts.output.clone(),
        items: plan.items.len(),
        blobs,
        fetch_blobs,
        fetch_bytes,
        sources,
        cached_blobs: plan.blobs.len() - fetch_blobs,
        write_bytes,
        base_blobs: plan.base.len(),
        base_bytes: plan.base.iter().map(|b| b.size).sum(),
        rooms: crate::preflight::rooms(
            &opts.output,
            crate::preflight::bundle_bytes(blobs, write_bytes),
            &opts.cache_dir,
            cache_needed,
        ),
    }
}

/// The plan of exporting `resolved` with `opts`, counted without fetching
/// or writing anything (`--dry-run`).
pub fn preflight(resolved: &Resolved, opts: &ExportOptions) -> Result<Preflight, ExportError> {
    let plan = Plan::new(resolved, &opts.base)?;
    let missing = missing_blobs(&plan.blobs, &opts.cache_dir)?;
    Ok(count(&plan, &missing, opts))
}

/// Fetches every blob of `resolved` into the cache and writes the bundle,
/// once the preflight found room for it. `resolved` is let go once the
/// plan is made (what the write needs moved into `bundle.json`): its parsed
/// manifests are most of what an export would otherwise keep per reference
/// while it writes.
pub async fn export(
    client: &Client,
    resolved: Resolved,
    opts: &ExportOptions,
    events: &Events,
) -> Result<ExportSummary, ExportError> {
    // 1. Plan (refuses a file out of its place before anything is fetched)
    // and preflight: the counts, and room for them, before any download.
    let plan = Plan::new(&resolved, &opts.base)?;
    let missing_set = missing_blobs(&plan.blobs, &opts.cache_dir)?;
    let preflight = count(&plan, &missing_set, opts);
    events(Event::Preflight(preflight.clone()));
    let short: Vec<Room> = preflight.short().into_iter().cloned().collect();
    if !short.is_empty() {
        return Err(ExportError::NoRoom(short));
    }
    // Metadata: everything it needs is known before any blob arrives.
    let Bundle {
        meta: bundle_meta,
        index,
        manifests,
        sources,
    } = plan.into_bundle(&opts.name, opts.verification.clone(), opts.origin.clone());
    let bundle_meta = Arc::new(bundle_meta);
    drop(resolved);

    // 2. Fetch what the cache lacks.
    let blob_dir = opts.cache_dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir).map_err(|source| ExportError::Cache {
        path: blob_dir.clone(),
        source,
    })?;
    let fetch_bytes = preflight.fetch_bytes;
    let missing_count = preflight.fetch_blobs;

    let base_count = bundle_meta.base.len();
    let base_bytes: u64 = bundle_meta.base.iter().map(|b| b.size).sum();
    let summary_items = bundle_meta.items.len();
    let summary_blobs = bundle_meta.blobs.len();
    let blob_bytes = bundle_meta.blob_bytes();
    events(Event::FetchStart {
        blobs: missing_count,
        bytes: fetch_bytes,
        cached: sources.len() - missing_count,
    });
    events(Event::WriteStart { bytes: blob_bytes });

    // 3. Fetch and write at once: the writer (blocking I/O on its own
    // thread) takes each blob in bundle order as soon as it can: from the
    // cache once it is there, or (streaming) straight from its download,
    // while later blobs are still downloading.
    let (ready_tx, ready_rx) = tokio::sync::mpsc::unbounded_channel::<Ready>();
    let opts2 = opts.clone();
    let events2 = events.clone();
    let manifest_count = manifests.len();
    let meta2 = bundle_meta.clone();
    let writer = tokio::task::spawn_blocking(move || {
        write_bundle(&opts2, &meta2, &index, &manifests, ready_rx, &events2)
    });

    let large = bundle_meta.blobs.get(manifest_count..).unwrap_or_default();
    let failures = fetch_all(
        client,
        large,
        &sources,
        &missing_set,
        opts,
        events,
        ready_tx,
        &writer,
    )
    .await;
    let written = writer.await.map_err(|e| ExportError::Join(e.to_string()))?;
    let mut failed = failures;
    if !failed.is_empty() {
        failed.sort();
        return Err(ExportError::Fetch(failed));
    }
    let written = written?;
    Ok(ExportSummary {
        written,
        items: summary_items,
        blobs: summary_blobs,
        blob_bytes,
        fetched: missing_count,
        fetched_bytes: fetch_bytes,
        cached: sources.len() - missing_count,
        base: base_count,
        base_bytes,
    })
}

/// The writer's thread: the head (signed with `opts.sign_key`), the
/// manifests from memory (`manifests`: the bytes of the first
/// `bundle_meta.blobs`), then each other blob in bundle order as [`Ready`]
/// says: from the cache, or straight from its download. A blob that does
/// not come abandons the bundle (its temporary file goes).
fn write_bundle(
    opts: &ExportOptions,
    bundle_meta: &BundleMeta,
    index: &[u8],
    manifests: &[bytes::Bytes],
    mut ready_rx: tokio::sync::mpsc::UnboundedReceiver<Ready>,
    events: &Events,
) -> Result<Written, ExportError> {
    let mut w = match opts.split {
        Some(size) => BundleWriter::create_split(&opts.output, opts.compression, size)?,
        None => BundleWriter::create(&opts.output, opts.compression)?,
    };
    // bundle.json is never held whole (over 30 MB at 10,000 references):
    // serialised once to hash it, again for the signature's self-check, and
    // once more straight into its tar entry, checked against the first.
    let sums = bundle_meta.json_sums().map_err(|source| {
        ExportError::Write(WriteError::Io {
            path: opts.output.clone(),
            source,
        })
    })?;
    let signature = match &opts.sign_key {
        Some(key) => Some(key.sign_prehashed(
            &sums.blake2b512,
            &ferry_bundle::sign::bundle_comment(&bundle_meta.name, &bundle_meta.index.digest),
            |out| {
                let mut out = std::io::BufWriter::with_capacity(64 << 10, out);
                bundle_meta.write_json(&mut out)?;
                std::io::Write::flush(&mut out)
            },
        )?),
        None => None,
    };
    w.write_head_meta(bundle_meta, &sums, signature.as_deref(), index)?;
    for (m, bytes) in bundle_meta.blobs.iter().zip(manifests) {
        w.write_blob(&m.digest, m.size, &bytes[..])?;
        events(Event::WriteProgress { bytes: m.size });
    }
    for b in bundle_meta.blobs.iter().skip(manifests.len()) {
        // One message per blob, in this order; a failed download means
        // the bundle is abandoned (its temp file goes).
        let Some(ready) = ready_rx.blocking_recv() else {
            return Err(ExportError::Abandoned);
        };
        match ready {
            Ready::Stream(rx, _place) => {
                let mut src = Piped {
                    rx,
                    piece: bytes::Bytes::new(),
                    ended: false,
                };
                match w.write_verified_blob(&b.digest, b.size, &mut src) {
                    Ok(()) => {}
                    Err(WriteError::Source { .. }) => return Err(ExportError::Abandoned),
                    Err(e) => return Err(e.into()),
                }
                src.verified().map_err(|_| ExportError::Abandoned)?;
            }
            Ready::Cached(wait) => {
                if let Some(rx) = wait {
                    if rx.blocking_recv().is_err() {
                        return Err(ExportError::Abandoned);
                    }
                }
                let path = cache_path(&opts.cache_dir, &b.digest);
                let file = std::fs::File::open(&path).map_err(|source| ExportError::Cache {
                    path: path.clone(),
                    source,
                })?;
                match w.write_blob(
                    &b.digest,
                    b.size,
                    std::io::BufReader::with_capacity(256 << 10, file),
                ) {
                    Ok(()) => {}
                    Err(WriteError::BlobMismatch { .. }) => {
                        let _ = std::fs::remove_file(&path);
                        return Err(ExportError::CorruptCache { path });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        events(Event::WriteProgress { bytes: b.size });
    }
    Ok(w.finish()?)
}

/// Downloads what the cache lacks, in bundle order, up to `jobs` at once,
/// each a task of its own (hashing spreads over the runtime's threads).
/// Each blob's way to the writer is queued as its download starts (so in
/// bundle order); cached blobs are ready at once. Every download started
/// is waited for, so that every failure is recorded; once the writer has
/// stopped (done, or abandoned after a failed download or a write error)
/// no new one starts. Returns the failures: (what, why).
#[allow(
    clippy::too_many_arguments,
    reason = "the export's parts, each borrowed"
)]
async fn fetch_all(
    client: &Client,
    blobs: &[BlobMeta],
    sources: &[Arc<ferry_registry::Repo>],
    missing: &[bool],
    opts: &ExportOptions,
    events: &Events,
    ready_tx: tokio::sync::mpsc::UnboundedSender<Ready>,
    writer: &tokio::task::JoinHandle<Result<Written, ExportError>>,
) -> Vec<(String, String)> {
    let failures: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop_ref = &stop;
    // In bundle order, up to `jobs` downloads at once, each a task of its
    // own (hashing spreads over the runtime's threads). Each blob's way to
    // the writer is queued as its download starts (so in bundle order);
    // cached blobs are ready at once.
    // A streamed blob takes a place first, in bundle order (the writer
    // frees it once the blob is written).
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(
        STREAMS_AHEAD * opts.jobs.max(1),
    ));
    let fetches = stream::iter(blobs.iter().zip(sources).zip(missing))
        .then(|item| {
            let places = places.clone();
            async move {
                let place = match opts.stream && *item.1 {
                    true => places.acquire_owned().await.ok(),
                    false => None,
                };
                (item, place)
            }
        })
        .map(|(((b, source), missing), place)| {
            if stop_ref.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            if !missing {
                let _ = ready_tx.send(Ready::Cached(None));
                return None;
            }
            let (done, stream) = if opts.stream {
                let (tx, rx) = tokio::sync::mpsc::channel(STREAM_DEPTH);
                let _ = ready_tx.send(Ready::Stream(rx, place));
                (None, Some(tx))
            } else {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = ready_tx.send(Ready::Cached(Some(rx)));
                (Some(tx), None)
            };
            let dest = cache_path(&opts.cache_dir, &b.digest);
            let (client, events, failures) = (client.clone(), events.clone(), failures.clone());
            let (source, meta) = (source.clone(), b.clone());
            Some(tokio::spawn(async move {
                let progress_events = events.clone();
                let progress = move |n: u64| progress_events(Event::FetchProgress { bytes: n });
                let r = match stream {
                    Some(tx) => {
                        client
                            .stream_blob(&source, &meta.digest, meta.size, tx, Some(&progress))
                            .await
                    }
                    None => {
                        client
                            .download_blob(
                                &source,
                                &meta.digest,
                                Some(meta.size),
                                &dest,
                                Some(&progress),
                            )
                            .await
                    }
                };
                match r {
                    Ok(_) => {
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        events(Event::Fetched {
                            digest: meta.digest.clone(),
                            size: meta.size,
                        });
                    }
                    // The writer stopped (its error is reported below).
                    Err(ferry_registry::Error::Abandoned { .. }) => {}
                    Err(e) => {
                        let what =
                            format!("{} (from {}/{})", meta.digest, source.host, source.path);
                        if let Ok(mut f) = failures.lock() {
                            f.push((what, ferry_registry::chain(&e)));
                        }
                    }
                }
            }))
        })
        .map(|task| async move {
            if let Some(t) = task {
                let _ = t.await;
            }
        })
        .buffered(opts.jobs.max(1));
    // Boxed so that it can be dropped (with its borrow of `ready_tx`) below.
    let mut fetches = Box::pin(fetches);
    // Every download started is waited for, so that every failure is
    // recorded; once the writer has stopped (done, or abandoned after a
    // failed download or a write error) no new one starts.
    while fetches.next().await.is_some() {
        if writer.is_finished() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    drop(fetches);
    drop(ready_tx);
    failures.lock().map(|f| f.clone()).unwrap_or_default()
}
