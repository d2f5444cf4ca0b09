//! What the reader side hands the import loop, and the memory it may
//! hold: the [`Msg`]s, the [`UploadPlan`] the loop answers with, and the
//! [`Feeder`] that reads blobs into chunks within [`BUFFER_BUDGET`] bytes
//! ([`Buffers`] kept and reused, each chunk [`Held`] until sent) and hands
//! them over; a streamed blob's last chunk stays [`Pending`] until the
//! reader's verdict. Used by the ordered read's visitor (`bridge.rs`) and
//! by the lanes (`lanes.rs`), each streaming as a [`Lane`].

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha512};
use tokio::sync::mpsc::OwnedPermit;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use ferry_bundle::meta::BlobMeta;
use ferry_bundle::reader::{Head, VisitResult};
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;

use crate::{Event, Events};

/// The reader was told to stop (the import loop gave up or finished early).
#[derive(Debug)]
pub(super) struct Stopped;
impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("import stopped")
    }
}
impl std::error::Error for Stopped {}

/// What the async side tells the reader thread once planned.
pub(super) struct UploadPlan {
    /// Blobs to upload to the registry (or store).
    pub(super) upload: HashSet<Digest>,
    /// Blobs to write to the file target, and where.
    pub(super) files: HashMap<Digest, Vec<RelPath>>,
    /// Blobs kept in memory (chart metadata, the falcoctl index).
    pub(super) capture: HashSet<Digest>,
    /// Blobs whose sha512 is computed as they stream (OpenSearch plugin
    /// zips, re-checked against their `.sha512`).
    pub(super) sha512: HashSet<Digest>,
}

/// What the reader thread tells the import loop.
pub(super) enum Msg {
    /// The bundle's head (`ferry/bundle.json`, its signature).
    Head(Box<Head>),
    /// A verified manifest, exactly as in the bundle.
    Manifest(BlobMeta, Bytes),
    /// The first blob is coming: the reader waits for the plan.
    NeedPlan(oneshot::Sender<Option<Arc<UploadPlan>>>),
    /// A blob read whole and verified, with the budget it holds.
    Small(BlobMeta, Bytes, Arc<OwnedSemaphorePermit>),
    /// A blob streamed in chunks: to the registry, to file paths. Each
    /// chunk holds its share of the budget until its last clone is dropped.
    /// Its [`Lane`]: whether the reader or a lane streams it.
    Large(
        BlobMeta,
        Option<mpsc::Receiver<Bytes>>,
        Vec<(RelPath, mpsc::Receiver<Bytes>)>,
        Lane,
    ),
    /// The reader's verdict on a streamed blob (its digest and size).
    Verdict(Digest, Result<(), String>),
    /// The sha512 (hex) of a blob's bytes (trusted once its verdict is ok).
    Sha512(Digest, String),
}

/// Who streams a large blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// The ordered read: its upload takes one of `--jobs`.
    Reader,
    /// A lane ([`Lanes`]): its upload takes none of `--jobs` (the lanes are
    /// few, and their uploads wait for the reader's verdicts, so they must
    /// never keep the reader's own uploads from starting), and at most
    /// [`LANE_DEPTH`] chunks queue for it, so the reader keeps most of the
    /// budget.
    Lane,
}

/// Chunks queued at most for a lane's upload.
const LANE_DEPTH: usize = 2;

/// Blob bytes held in memory at once (read ahead of their uploads, chunks
/// queued and in flight), whatever the bundle's size: the import's memory
/// stays flat. The one reader runs ahead of the uploads within it, so that
/// a streamed blob's upload goes on while the next ones start; it grows to
/// [`MIN_CHUNKS`] chunks when `--chunk-mib` asks for more.
pub(crate) const BUFFER_BUDGET: u64 = 28 << 20;

/// The fewest chunks the budget holds (one being sent, one queued, one
/// being filled).
pub(super) const MIN_CHUNKS: u64 = 3;

/// What the reader thread needs: the channel to the import loop, the
/// memory budget, the chunk size.
#[derive(Clone)]
pub(super) struct Feeder {
    pub(super) tx: mpsc::Sender<Msg>,
    pub(super) chunk: u64,
    /// Bytes of [`BUFFER_BUDGET`] (permits are bytes).
    pub(super) budget: Arc<Semaphore>,
    pub(super) budget_total: u64,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) events: Events,
    pub(super) cancelled: Arc<AtomicBool>,
    /// Chunk buffers given back once sent.
    pub(super) buffers: Buffers,
}

/// Chunk buffers, given back when a chunk's last [`Bytes`] is dropped and
/// taken again for the next chunk. A fresh 4 MiB allocation is a fresh
/// mapping from the kernel, faulted in and zeroed page by page on every
/// chunk: measured, that was about a sixth of import's CPU time at 0.5 GB.
/// A buffer is kept only while the kept ones and the chunks in flight fit
/// in the budget together, so keeping them never raises the peak above
/// what the budget allows in flight.
#[derive(Clone)]
pub(super) struct Buffers {
    pub(super) kept: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    /// The budget of the chunks in flight (see [`Feeder::budget`]).
    pub(super) budget: Arc<Semaphore>,
    pub(super) budget_total: u64,
    pub(super) chunk: u64,
}

impl Buffers {
    /// A buffer of `len` initialised bytes (a kept one when there is one:
    /// its bytes are already initialised, so no zeroing). A kept buffer is
    /// a whole chunk's: it goes only to a chunk of at least half that size
    /// (a blob's short last chunk gets its own), because the budget counts
    /// a chunk's bytes, not its buffer's capacity, and a short chunk in
    /// flight would otherwise hold a whole chunk's memory outside it.
    fn take(&self, len: usize) -> Vec<u8> {
        let kept = if self.reuses(len as u64) {
            self.kept.lock().ok().and_then(|mut kept| kept.pop())
        } else {
            None
        };
        let mut buf = kept.unwrap_or_default();
        buf.resize(len, 0);
        buf
    }

    /// Whether a chunk of `len` bytes gets a kept buffer (a whole chunk's).
    fn reuses(&self, len: u64) -> bool {
        len.saturating_mul(2) >= self.chunk
    }

    /// The budget a chunk of `len` bytes holds: the memory of the buffer
    /// [`Buffers::take`] may give it, a whole chunk's when it may be a kept
    /// one. Counting only the chunk's bytes let a blob's last chunk of half
    /// a chunk or more hold up to half a chunk outside the budget: at 8 GB,
    /// with many such chunks in flight, the import's heap reached 4.5 MB
    /// over the budget (issue 17).
    fn holds(&self, len: u64) -> u64 {
        if self.reuses(len) {
            len.max(self.chunk)
        } else {
            len
        }
    }

    /// Lets go of kept buffers until they, the chunks in flight and `len`
    /// more bytes fit in the budget. A kept buffer holds a chunk's memory
    /// the budget does not count: it was kept beside what was in flight
    /// then, and a blob read whole or a short chunk, which gets a fresh
    /// buffer, would otherwise add to both (at 8 GB the import's buffers
    /// were 3.8 MB over the budget at their peak; issue 17).
    fn make_room(&self, len: u64) {
        let in_flight = self
            .budget_total
            .saturating_sub(self.budget.available_permits() as u64);
        if let Ok(mut kept) = self.kept.lock() {
            while !kept.is_empty()
                && kept.len() as u64 * self.chunk + in_flight + len > self.budget_total
            {
                kept.pop();
            }
        }
    }

    /// Keeps `buf` (a chunk's, whose `own` bytes of the budget are about
    /// to go back) for a later chunk, if it fits beside what is in flight.
    fn give(&self, buf: Vec<u8>, own: u64) {
        if (buf.capacity() as u64) < self.chunk {
            return;
        }
        let in_flight = self
            .budget_total
            .saturating_sub(self.budget.available_permits() as u64)
            .saturating_sub(own);
        if let Ok(mut kept) = self.kept.lock() {
            if (kept.len() as u64 + 1) * self.chunk + in_flight <= self.budget_total {
                kept.push(buf);
            }
        }
    }
}

/// A chunk's bytes and the budget they hold: the permit goes back when
/// the last clone of the [`Bytes`] made from it is dropped (the upload has
/// sent it, the file writer has written it), and the buffer goes back to
/// [`Buffers`].
struct Held {
    buf: Vec<u8>,
    /// How many of `buf`'s bytes are the chunk.
    len: usize,
    buffers: Buffers,
    permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let own = self.permit.num_permits() as u64;
        self.buffers.give(std::mem::take(&mut self.buf), own);
    }
}

/// Reads `data` into `buf` until it is full or `data` ends; the bytes read.
fn fill(data: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match data.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A blob the reader has read but not yet handed over: it goes once the
/// reader's verdict on it is in ([`Visitor::blob_end`]), and only if good.
pub(super) enum Pending {
    /// A small blob, read whole.
    Small(Bytes, Arc<OwnedSemaphorePermit>),
    /// A streamed blob's last chunk and the slots reserved for it in each
    /// sink (registry upload, file writes).
    Last(Bytes, Vec<OwnedPermit<Bytes>>),
}

impl Pending {
    /// Hands a streamed blob's last chunk to its sinks (nothing for a
    /// small blob: it goes as a message, [`Msg::Small`]).
    pub(super) fn send(self) {
        if let Pending::Last(chunk, slots) = self {
            for slot in slots {
                slot.send(chunk.clone());
            }
        }
    }
}

pub(super) fn stop() -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(Stopped)
}

impl Feeder {
    /// Whether the import loop gave up or finished early.
    pub(super) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Blocks the reader until `bytes` of the buffer budget are free.
    pub(super) fn reserve(
        &self,
        bytes: u64,
    ) -> Result<OwnedSemaphorePermit, Box<dyn std::error::Error + Send + Sync>> {
        // Never more than the whole budget (a blob larger than it waits
        // until nothing else is in flight).
        let n = bytes.clamp(1, self.budget_total) as u32;
        let budget = self.budget.clone();
        self.rt
            .block_on(budget.acquire_many_owned(n))
            .map_err(|_| stop())
    }

    /// Blocks the reader until a chunk of `len` bytes fits in the budget
    /// with the memory of its buffer ([`Buffers::holds`]).
    pub(super) fn reserve_chunk(
        &self,
        len: u64,
    ) -> Result<OwnedSemaphorePermit, Box<dyn std::error::Error + Send + Sync>> {
        if self.buffers.reuses(len) {
            self.reserve(self.buffers.holds(len))
        } else {
            self.reserve_fresh(len)
        }
    }

    /// Blocks the reader until `len` bytes in a fresh buffer (a blob read
    /// whole, a short chunk) fit in the budget, first letting go of the
    /// kept buffers they would not fit beside ([`Buffers::make_room`]).
    pub(super) fn reserve_fresh(
        &self,
        len: u64,
    ) -> Result<OwnedSemaphorePermit, Box<dyn std::error::Error + Send + Sync>> {
        self.buffers.make_room(len);
        self.reserve(len)
    }

    /// Reads a whole blob of `len` bytes from `data`, zeroed by the
    /// allocator (fresh pages come zeroed) rather than by the read.
    pub(super) fn read_whole(&self, data: &mut dyn Read, len: u64) -> std::io::Result<Bytes> {
        let mut buf = vec![0u8; len as usize];
        let got = fill(data, &mut buf)?;
        buf.truncate(got);
        Ok(Bytes::from(buf))
    }

    /// Chunks a sink may queue: as many as the budget holds.
    pub(super) fn queue_depth(&self) -> usize {
        (self.budget_total / self.chunk).max(1) as usize
    }

    /// Streams `blob` from `data` to its upload (and file targets) in
    /// chunks, each holding its share of the budget; returns the last
    /// chunk, held back until the verdict.
    pub(super) fn stream_large(
        &self,
        blob: &BlobMeta,
        data: &mut dyn Read,
        to_registry: bool,
        to_files: Vec<RelPath>,
        mut sha512: Option<Sha512>,
        lane: Lane,
    ) -> Result<Option<Pending>, Box<dyn std::error::Error + Send + Sync>> {
        let depth = match lane {
            Lane::Reader => self.queue_depth(),
            Lane::Lane => LANE_DEPTH.min(self.queue_depth()),
        };
        let mut senders = Vec::new();
        let registry_rx = if to_registry {
            let (ctx, crx) = mpsc::channel::<Bytes>(depth);
            senders.push(ctx);
            Some(crx)
        } else {
            None
        };
        let mut file_rx = Vec::new();
        for path in to_files {
            let (ctx, crx) = mpsc::channel::<Bytes>(depth);
            senders.push(ctx);
            file_rx.push((path, crx));
        }
        self.tx
            .blocking_send(Msg::Large(blob.clone(), registry_rx, file_rx, lane))
            .map_err(|_| stop())?;
        let mut remaining = blob.size;
        let mut last = None;
        while remaining > 0 {
            if self.cancelled.load(Ordering::Relaxed) {
                return Err(stop());
            }
            // Room in every sink and in the budget first, then read. A sink
            // that gave up is dropped; the reader still drains and verifies.
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
            let permit = self.reserve_chunk(want)?;
            let mut buf = self.buffers.take(want as usize);
            let got = fill(data, &mut buf)?;
            if got == 0 {
                break;
            }
            remaining -= got as u64;
            if let Some(h) = sha512.as_mut() {
                h.update(&buf[..got]);
            }
            (self.events)(Event::UploadProgress { bytes: got as u64 });
            let chunk = Bytes::from_owner(Held {
                buf,
                len: got,
                buffers: self.buffers.clone(),
                permit,
            });
            if remaining == 0 {
                last = Some(Pending::Last(chunk, slots));
                break;
            }
            for slot in slots {
                slot.send(chunk.clone());
            }
        }
        if let (0, Some(h)) = (remaining, sha512) {
            self.send_sha512(blob, h)?;
        }
        Ok(last)
    }

    /// Reports the sha512 of a blob's bytes to the import loop.
    pub(super) fn send_sha512(&self, blob: &BlobMeta, h: Sha512) -> VisitResult {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    const CHUNK: u64 = 4 << 20;

    fn buffers() -> Buffers {
        Buffers {
            kept: Arc::default(),
            budget: Arc::new(Semaphore::new(7 * CHUNK as usize)),
            budget_total: 7 * CHUNK,
            chunk: CHUNK,
        }
    }

    #[test]
    fn a_kept_chunk_buffer_goes_only_to_a_chunk_of_at_least_half_its_size() {
        let b = buffers();
        b.give(vec![0u8; CHUNK as usize], 0);
        // A blob's short last chunk gets a buffer of its own size: the
        // kept one would hold a whole chunk's memory outside the budget.
        let short = b.take(100);
        assert_eq!((short.len(), short.capacity()), (100, 100));
        assert_eq!(b.kept.lock().unwrap().len(), 1);
        // A whole chunk, and one of half a chunk, reuse it.
        let whole = b.take(CHUNK as usize);
        assert_eq!(whole.capacity(), CHUNK as usize);
        assert!(b.kept.lock().unwrap().is_empty());
        b.give(whole, 0);
        let half = b.take(CHUNK as usize / 2);
        assert_eq!(
            (half.len(), half.capacity()),
            (CHUNK as usize / 2, CHUNK as usize)
        );
        // A buffer smaller than a chunk is not kept.
        b.give(short, 0);
        assert!(b.kept.lock().unwrap().is_empty());
    }

    #[test]
    fn the_budget_a_chunk_holds_covers_the_buffer_it_gets() {
        let b = buffers();
        for _ in 0..7 {
            b.give(vec![0u8; CHUNK as usize], 0);
        }
        // Blobs' last chunks of every size, whole chunks among them: what
        // each holds of the budget is at least the memory of its buffer,
        // so the buffers in flight never exceed the budget.
        let half = CHUNK / 2;
        let lens = [
            CHUNK,
            half,
            half + 1,
            CHUNK - 1,
            half - 1,
            100,
            3 * CHUNK / 4,
        ];
        let (mut held, mut memory) = (0u64, 0u64);
        for len in lens {
            let holds = b.holds(len);
            let buf = b.take(len as usize);
            assert_eq!(buf.len() as u64, len);
            assert!(
                holds >= buf.capacity() as u64,
                "a chunk of {len} bytes holds {holds} of the budget, its buffer {}",
                buf.capacity()
            );
            held += holds;
            memory += buf.capacity() as u64;
        }
        assert!(memory <= held);
        // A short chunk holds only its own size.
        assert_eq!(b.holds(100), 100);
        assert_eq!(b.holds(half - 1), half - 1);
        assert_eq!(b.holds(half), CHUNK);
    }

    #[test]
    fn kept_buffers_make_room_for_a_fresh_one_within_the_budget() {
        let b = buffers();
        for _ in 0..7 {
            b.give(vec![0u8; CHUNK as usize], 0);
        }
        assert_eq!(b.kept.lock().unwrap().len(), 7);
        // A blob read whole, of 100 bytes: one kept chunk goes.
        b.make_room(100);
        assert_eq!(b.kept.lock().unwrap().len(), 6);
        // Three chunks in flight, and a short one of a third of a chunk
        // coming: what is kept, in flight and coming fits in the budget.
        let _in_flight = b
            .budget
            .clone()
            .try_acquire_many_owned(3 * CHUNK as u32)
            .unwrap();
        b.make_room(CHUNK / 3);
        let kept = b.kept.lock().unwrap().len() as u64;
        assert_eq!(kept, 3);
        assert!(kept * CHUNK + 3 * CHUNK + CHUNK / 3 <= b.budget_total);
        // Nothing is let go when it all fits.
        drop(_in_flight);
        b.make_room(CHUNK / 3);
        assert_eq!(b.kept.lock().unwrap().len(), 3);
    }
}
