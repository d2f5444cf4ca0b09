//! Import's lanes: large blobs uploaded beside the ordered read.
//!
//! `docker-registry` takes one upload's body at about one core's speed, so
//! one large upload at a time leaves the target half idle (issue 17:
//! import at 8 GB ran at the one-upload ingest's speed). A zstd bundle's
//! every blob of 8 MiB or more is a frame of its own, listed in the seek
//! table at the end of the file ([`ferry_bundle::frames`]). Once the plan
//! is made, [`LANES`] lane threads take those frames in order: each opens
//! the bundle again at its blob's frame ([`ferry_bundle::parts::Ranges`]),
//! decodes it alone, checks that it starts with the tar header ferry writes
//! for a blob the plan uploads (declared, of its declared size, nothing
//! else in its frames) and streams it to its upload as the reader would,
//! within the same memory budget. The ordered read still decodes and hashes
//! every byte with every check: when it reaches a blob a lane took, it
//! verifies it without handing it over, and its verdict releases the
//! lane's last chunk ([`Claims`]), as for the blobs it streams itself. A
//! blob whose bytes do not match never completes an upload.
//!
//! A lane holds at most one blob whose verdict has not come: it takes the
//! next frame only after the reader has passed its blob, so the memory
//! stays within the budget and the lanes run at most one blob ahead. The
//! table is a hint: a lane that finds anything else at a frame leaves it to
//! the reader, and the reader refuses a bundle whose table does not list
//! its frames.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use ferry_bundle::frames::{self, SeekTable};
use ferry_bundle::meta::{BlobMeta, BundleMeta};
use ferry_bundle::parts::Ranges;
use ferry_bundle::writer::header;
use ferry_bundle::Digest;

use super::feed::{Feeder, Lane, Pending, UploadPlan};

/// Lanes beside the reader at most: with the reader's own, up to three
/// large uploads at once (measured at 8 GB: `docs/benchmarks-journal.md`). Fewer
/// with `--jobs` under 3: one lane fewer than the jobs.
pub(super) const LANES: usize = 2;

/// Who uploads a large blob.
enum Claim {
    /// The ordered read streams it.
    Reader,
    /// A lane streams it; the reader's verdict, once in, and the lane's
    /// last chunk, held until the verdict.
    Lane {
        verdict: Option<bool>,
        last: Option<Pending>,
    },
}

#[derive(Default)]
struct State {
    claims: HashMap<Digest, Claim>,
    /// The ordered read has ended: no verdict is coming any more.
    reader_done: bool,
}

/// Which large blobs the lanes took, shared by the reader and the lanes.
#[derive(Default)]
pub(super) struct Claims {
    state: Mutex<State>,
    changed: Condvar,
}

impl Claims {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reader is at `d`: whether it streams it (a lane has not taken
    /// it; from now on no lane will).
    pub(super) fn reader_takes(&self, d: &Digest) -> bool {
        let mut s = self.lock();
        match s.claims.get(d) {
            Some(Claim::Lane { .. }) => false,
            Some(Claim::Reader) => true,
            None => {
                s.claims.insert(d.clone(), Claim::Reader);
                true
            }
        }
    }

    /// The reader's verdict on `d`: if a lane streams it, its last chunk
    /// goes (good) or is dropped (bad, which fails the upload).
    pub(super) fn verdict(&self, d: &Digest, good: bool) {
        let mut s = self.lock();
        if let Some(Claim::Lane { verdict, last }) = s.claims.get_mut(d) {
            *verdict = Some(good);
            if let Some(p) = last.take() {
                if good {
                    p.send();
                }
            }
            self.changed.notify_all();
        }
    }

    /// The ordered read has ended (done, failed or stopped).
    pub(super) fn reader_done(&self) {
        self.lock().reader_done = true;
        self.changed.notify_all();
    }

    /// A lane's claim on `d`, if neither the reader nor a lane has it and
    /// the reader is still reading.
    fn lane_takes(&self, d: &Digest) -> bool {
        let mut s = self.lock();
        if s.reader_done || s.claims.contains_key(d) {
            return false;
        }
        s.claims.insert(
            d.clone(),
            Claim::Lane {
                verdict: None,
                last: None,
            },
        );
        true
    }

    /// A lane streamed `d` up to its last chunk: the chunk goes with the
    /// reader's verdict. Returns once the verdict is in (or the reader has
    /// ended without one: the chunk is dropped).
    fn lane_streamed(&self, d: &Digest, last: Option<Pending>) {
        let mut s = self.lock();
        if let Some(Claim::Lane {
            verdict,
            last: held,
        }) = s.claims.get_mut(d)
        {
            match (*verdict, last) {
                (Some(true), Some(p)) => p.send(),
                (None, p) => *held = p,
                _ => {}
            }
        }
        loop {
            let done = s.reader_done;
            let waiting = match s.claims.get_mut(d) {
                Some(Claim::Lane {
                    verdict: None,
                    last,
                }) if done => {
                    drop(last.take());
                    false
                }
                Some(Claim::Lane { verdict: None, .. }) => true,
                _ => false,
            };
            if !waiting {
                return;
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn reader_is_done(&self) -> bool {
        self.lock().reader_done
    }
}

/// What the lanes share.
pub(super) struct Lanes {
    pub(super) claims: Arc<Claims>,
    /// Blobs the lanes streamed (the import report's `blobs_laned`).
    laned: Arc<AtomicUsize>,
    ranges: Ranges,
    table: SeekTable,
    /// Each frame's offset in the file.
    offsets: Vec<u64>,
    /// Where the frames end (the table starts).
    frames_len: u64,
    /// How many lanes run.
    count: usize,
    /// The next frame to look at.
    next: Mutex<usize>,
}

impl Lanes {
    /// Lanes over `ranges` for an import of `jobs` uploads at once, if the
    /// bundle has a seek table with frames a lane could take.
    pub(super) fn new(ranges: Ranges, laned: Arc<AtomicUsize>, jobs: usize) -> Option<Lanes> {
        let count = jobs.saturating_sub(1).min(LANES);
        let table = frames::read_table(ranges.size(), |o, n| ranges.read_at(o, n))?;
        let worth = table
            .frames()
            .iter()
            .skip(1)
            .any(|f| u64::from(f.decompressed) >= frames::OWN_FRAME_FROM);
        (worth && count > 0).then(|| Lanes {
            claims: Arc::default(),
            laned,
            ranges,
            offsets: table.placed().map(|p| p.offset).collect(),
            frames_len: table.compressed_len(),
            table,
            count,
            next: Mutex::new(1),
        })
    }

    /// Starts the lanes: they stream the large blobs `plan` uploads (and
    /// nothing else: not those written to files, kept or hashed again),
    /// declared in `meta`, through `feed`.
    pub(super) fn start(
        self: &Arc<Self>,
        meta: &BundleMeta,
        plan: &Arc<UploadPlan>,
        feed: &Feeder,
    ) {
        let large: HashMap<Digest, BlobMeta> = meta
            .blobs
            .iter()
            .filter(|b| may_take(plan, b))
            .map(|b| (b.digest.clone(), b.clone()))
            .collect();
        if large.is_empty() {
            return;
        }
        let large = Arc::new(large);
        for i in 0..self.count {
            let (lanes, large, feed) = (self.clone(), large.clone(), feed.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("ferry-lane-{i}"))
                .spawn(move || lanes.run(&large, &feed));
            // Without a thread the reader streams every blob itself.
            drop(spawned);
        }
    }

    /// The next frame to look at, and moves on.
    fn take_next(&self) -> Option<usize> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if *next >= self.table.frames().len() {
            return None;
        }
        *next += 1;
        Some(*next - 1)
    }

    /// One lane: frame after frame, until none is left or the reader ends.
    fn run(&self, large: &HashMap<Digest, BlobMeta>, feed: &Feeder) {
        while let Some(i) = self.take_next() {
            if self.claims.reader_is_done() || feed.is_cancelled() {
                return;
            }
            if u64::from(self.table.frames()[i].decompressed) < frames::OWN_FRAME_FROM {
                continue;
            }
            if self.lane(i, large, feed).is_err() {
                // A frame that does not decode as the table says: the
                // ordered read refuses the bundle; this lane stops.
                return;
            }
        }
    }

    /// Frame `i`: if it starts a blob this lane may take, streams it.
    fn lane(
        &self,
        i: usize,
        large: &HashMap<Digest, BlobMeta>,
        feed: &Feeder,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // One decoder from the frame to the end of the frames: the header
        // says which blob it is, and the same decoder streams it.
        let offset = self.offsets[i];
        let source = self.ranges.open(offset, self.frames_len - offset)?;
        let mut decoder = frames::decoder(source)?;
        let mut head = [0u8; 512];
        decoder.read_exact(&mut head)?;
        let Some(blob) = blob_of(&head, large) else {
            return Ok(());
        };
        let entry_len = 512 + blob.size.div_ceil(512) * 512;
        if frames::entry_frames(&self.table, i, entry_len).is_none()
            || !self.claims.lane_takes(&blob.digest)
        {
            return Ok(());
        }
        let streamed = feed.stream_large(
            blob,
            &mut (&mut decoder).take(blob.size),
            true,
            Vec::new(),
            None,
            Lane::Lane,
        );
        let (last, outcome) = match streamed {
            Ok(last) => (last, Ok(())),
            Err(e) => (None, Err(e)),
        };
        self.claims.lane_streamed(&blob.digest, last);
        outcome?;
        self.laned.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Whether a lane may stream `blob`: one of 8 MiB or more (a frame of its
/// own) that `plan` only uploads (not written to files, kept or hashed
/// again, which the reader's own streaming does).
pub(super) fn may_take(plan: &UploadPlan, blob: &BlobMeta) -> bool {
    let d = &blob.digest;
    blob.size >= frames::OWN_FRAME_FROM
        && plan.upload.contains(d)
        && !plan.files.contains_key(d)
        && !plan.capture.contains(d)
        && !plan.sha512.contains(d)
}

/// The blob a frame's first 512 bytes are the tar header of, if it is one
/// of `large` and the header is the one ferry writes for it.
fn blob_of<'a>(head: &[u8; 512], large: &'a HashMap<Digest, BlobMeta>) -> Option<&'a BlobMeta> {
    let name = &head[..100];
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    let hex = std::str::from_utf8(&name[..end])
        .ok()?
        .strip_prefix("blobs/sha256/")?;
    let digest: Digest = format!("sha256:{hex}").parse().ok()?;
    let blob = large.get(&digest)?;
    (header(&digest.layout_path(), blob.size, false).as_bytes()[..] == head[..]).then_some(blob)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use bytes::Bytes;
    use tokio::sync::mpsc;

    /// A last chunk held for one sink, and that sink.
    fn last() -> (Pending, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(1);
        let slot = tx.try_reserve_owned().unwrap();
        (Pending::Last(Bytes::from_static(b"last"), vec![slot]), rx)
    }

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    /// A lane that took `d` and streamed it up to its last chunk, waiting
    /// for the reader's verdict on its own thread; the chunk's sink.
    fn lane_waiting(
        c: &Arc<Claims>,
        d: Digest,
    ) -> (std::thread::JoinHandle<()>, mpsc::Receiver<Bytes>) {
        assert!(c.lane_takes(&d));
        let (p, rx) = last();
        let lane = {
            let (c, d) = (c.clone(), d.clone());
            std::thread::spawn(move || c.lane_streamed(&d, Some(p)))
        };
        while !matches!(
            c.lock().claims.get(&d),
            Some(Claim::Lane { last: Some(_), .. })
        ) {
            std::thread::yield_now();
        }
        (lane, rx)
    }

    #[test]
    fn a_blob_is_the_readers_or_one_lanes() {
        let c = Claims::default();
        assert!(c.reader_takes(&digest(1)));
        assert!(!c.lane_takes(&digest(1)));
        assert!(c.lane_takes(&digest(2)));
        assert!(!c.lane_takes(&digest(2)));
        assert!(!c.reader_takes(&digest(2)));
        c.reader_done();
        assert!(
            !c.lane_takes(&digest(3)),
            "no lane takes a blob once the reader is done"
        );
    }

    #[test]
    fn a_lanes_last_chunk_goes_only_with_a_good_verdict() {
        for good in [true, false] {
            // The verdict comes while the lane waits.
            let c = Arc::new(Claims::default());
            let (lane, mut rx) = lane_waiting(&c, digest(1));
            c.verdict(&digest(1), good);
            lane.join().unwrap();
            match rx.try_recv() {
                Ok(b) => assert!(good && b == "last"),
                Err(_) => assert!(!good),
            }
            // The verdict came first.
            let c = Claims::default();
            assert!(c.lane_takes(&digest(2)));
            c.verdict(&digest(2), good);
            let (p, mut rx) = last();
            c.lane_streamed(&digest(2), Some(p));
            assert_eq!(rx.try_recv().is_ok(), good);
        }
    }

    #[test]
    fn a_reader_that_ends_without_a_verdict_drops_the_lanes_last_chunk() {
        let c = Arc::new(Claims::default());
        let (lane, mut rx) = lane_waiting(&c, digest(1));
        c.reader_done();
        lane.join().unwrap();
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
