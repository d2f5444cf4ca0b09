//! Hashing streamed blobs beside the reading thread: [`Hashers`], a few
//! worker threads that each hash one blob at a time (sha256 is sequential
//! within a blob, so blobs are hashed side by side, not the chunks of one).
//!
//! The reading thread copies a blob's bytes into chunk buffers as it walks
//! the tar ([`Feed`]) and moves on to the next blob while a worker is still
//! hashing the last one's; its digest comes back through
//! [`Feed::finish`]'s [`Digest`] receiver and is checked, in bundle order,
//! by the reader (`State::settle`). The buffers are reused and their number
//! is fixed ([`BUDGET`] bytes in [`CHUNK`]s): when every buffer waits for a
//! worker, the reading thread waits too, so memory stays flat whatever the
//! blobs' sizes. How far blobs overlap is bounded by that budget: a blob
//! larger than it overlaps the next only by its last [`BUDGET`] bytes.
//!
//! How many workers: [`std::thread::available_parallelism`], at least one
//! and at most [`MAX_WORKERS`] (beyond that, one decompressing thread
//! cannot feed them). They start with the first blob handed over (a read
//! that stops at the head or the manifests starts none) and stop when the
//! reader ends.
//!
//! Whether they pay is [`workers_pay`]: only with a core for the
//! decompressing thread and two for hashing. Measured on 2 cores
//! (docs/benchmarks-journal.md, "Verify on two cores"), handing blobs over cost
//! about 40 % more CPU (a worker hashes bytes another core wrote, out of
//! cache) for no gain in wall time, so there verify hashes on the reading
//! thread as before.
//!
//! [`Sink`] is where the reading thread puts a streamed blob's bytes,
//! whichever way it is hashed: here ([`Sink::Here`], a small blob, or a
//! visitor that wants each verdict before the next blob) or by a worker
//! ([`Sink::Worker`]); [`Tee`] feeds it what a visitor reads.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::digest::{Digest, Hasher};

/// Bytes a chunk buffer holds.
pub(super) const CHUNK: usize = 256 << 10;
/// Bytes of chunk buffers in all (allocated as needed, then reused): what
/// verify may hold ahead of its hashing, whatever the bundle's size.
pub(super) const BUDGET: usize = 24 << 20;
/// Blobs smaller than this are hashed on the reading thread: for them a
/// handover costs about what hashing does.
pub(super) const MIN_HANDOVER: u64 = 64 << 10;
/// The most workers started.
pub(super) const MAX_WORKERS: usize = 4;

/// Whether hashing blobs on workers pays on this machine: at least 3 cores
/// ([`std::thread::available_parallelism`]), one to decompress and two to
/// hash. What a visitor that can take its verdicts late asks before it
/// says so ([`super::Visitor::late_verdicts`]).
/// Asked once per process (it reads the cgroup's CPU quota).
pub fn workers_pay() -> bool {
    static PAY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PAY.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() >= 3))
}

/// A chunk of a blob: the buffer (always [`CHUNK`] bytes long) and how many
/// of its bytes are the blob's.
type Chunk = (Vec<u8>, usize);

/// One blob for a worker: its chunks, in order, until the sender is
/// dropped; then its digest goes back.
struct Job {
    chunks: Receiver<Chunk>,
    digest: SyncSender<Digest>,
}

/// The hashing workers and the chunk buffers they share with the reader.
#[derive(Default)]
pub(super) struct Hashers {
    /// How many workers to start, once decided (0: none could be started).
    want: Option<usize>,
    /// Jobs for the workers, once started (dropped to stop them).
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Buffers the workers are done with.
    free: Option<Receiver<Vec<u8>>>,
    /// Buffers allocated so far (at most `BUDGET / CHUNK`).
    allocated: usize,
}

impl Hashers {
    /// Whether blobs can be handed over: the workers run (started now if
    /// they were not yet). No when none could be started: blobs are then
    /// hashed on the reading thread.
    pub(super) fn available(&mut self) -> bool {
        self.start_workers();
        self.want != Some(0)
    }

    /// Starts the workers, once (decided from the cores when first
    /// needed, not per read: a read of the head alone never asks). A
    /// thread that cannot be spawned is one worker less.
    fn start_workers(&mut self) {
        if self.want.is_some() {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let want = cores.clamp(1, MAX_WORKERS);
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        for n in 0..want {
            let jobs = Arc::clone(&jobs_rx);
            let free = free_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ferry-hash-{n}"))
                .spawn(move || work(&jobs, &free));
            if let Ok(handle) = spawned {
                self.threads.push(handle);
            }
        }
        self.want = Some(self.threads.len());
        if self.threads.is_empty() {
            return;
        }
        self.jobs = Some(jobs_tx);
        self.free = Some(free_rx);
    }

    /// A free chunk buffer: one a worker is done with, a new one while the
    /// budget allows, or else the next one a worker finishes with.
    fn buffer(&mut self) -> io::Result<Vec<u8>> {
        let Some(free) = &self.free else {
            return Err(stopped());
        };
        if let Ok(buf) = free.try_recv() {
            return Ok(buf);
        }
        if self.allocated < BUDGET / CHUNK {
            self.allocated += 1;
            return Ok(vec![0u8; CHUNK]);
        }
        free.recv().map_err(|_| stopped())
    }

    /// Hands a new blob to the workers: feed it its bytes, then
    /// [`Feed::finish`]. Only once [`Hashers::available`] said yes.
    pub(super) fn feed(&mut self) -> io::Result<Feed<'_>> {
        let (chunks_tx, chunks_rx) = mpsc::channel();
        let (digest_tx, digest_rx) = mpsc::sync_channel(1);
        let job = Job {
            chunks: chunks_rx,
            digest: digest_tx,
        };
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        if !matches!(sent, Some(Ok(()))) {
            return Err(stopped());
        }
        let cur = self.buffer()?;
        Ok(Feed {
            hashers: self,
            chunks: chunks_tx,
            digest: digest_rx,
            cur,
            filled: 0,
            len: 0,
        })
    }
}

impl Drop for Hashers {
    fn drop(&mut self) {
        // No more jobs: each worker ends after the one it is hashing.
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the blob hashing threads stopped")
}

/// A worker: hashes one job's chunks as they come, hands each buffer back,
/// sends the digest when the job's sender is dropped (a job abandoned half
/// way sends one nobody waits for).
fn work(jobs: &Mutex<Receiver<Job>>, free: &Sender<Vec<u8>>) {
    loop {
        let job = {
            let Ok(jobs) = jobs.lock() else { return };
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let mut hasher = Hasher::new();
        for (buf, n) in job.chunks.iter() {
            hasher.update(&buf[..n]);
            let _ = free.send(buf);
        }
        let _ = job.digest.send(hasher.finish());
    }
}

/// One blob's bytes on their way to a worker, in chunks.
pub(super) struct Feed<'h> {
    hashers: &'h mut Hashers,
    chunks: Sender<Chunk>,
    digest: Receiver<Digest>,
    /// The chunk being filled, `filled` bytes of it.
    cur: Vec<u8>,
    filled: usize,
    /// Bytes fed in all.
    len: u64,
}

impl Feed<'_> {
    /// Sends the current chunk if it is full.
    fn flush_full(&mut self) -> io::Result<()> {
        if self.filled < CHUNK {
            return Ok(());
        }
        let next = self.hashers.buffer()?;
        let full = std::mem::replace(&mut self.cur, next);
        self.chunks.send((full, CHUNK)).map_err(|_| stopped())?;
        self.filled = 0;
        Ok(())
    }

    /// Feeds bytes read elsewhere (by a visitor).
    pub(super) fn push(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.flush_full()?;
            let n = bytes.len().min(CHUNK - self.filled);
            self.cur[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            self.len += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Feeds the rest of `r`, read straight into the chunk buffers.
    pub(super) fn fill_from(&mut self, r: &mut dyn Read) -> io::Result<()> {
        loop {
            self.flush_full()?;
            match r.read(&mut self.cur[self.filled..]) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    self.filled += n;
                    self.len += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The blob ends: the last chunk goes, and the digest will come back
    /// through the receiver. Returns how many bytes were fed.
    pub(super) fn finish(self) -> io::Result<(u64, Receiver<Digest>)> {
        self.chunks
            .send((self.cur, self.filled))
            .map_err(|_| stopped())?;
        Ok((self.len, self.digest))
    }
}

/// Where a blob's hash comes from: computed here, or a worker's.
pub(super) enum Hash {
    /// Hashed on the reading thread.
    Here(Digest),
    /// A worker's, when it is done.
    Worker(Receiver<Digest>),
}

/// Where the reading thread puts a streamed blob's bytes.
pub(super) enum Sink<'a> {
    /// Hashed here, the rest drained through `buf` (256 KiB, allocated once).
    Here {
        /// The blob's hash so far.
        hasher: Hasher,
        /// The drain buffer.
        buf: &'a mut Vec<u8>,
    },
    /// Handed to a worker.
    Worker(Feed<'a>),
}

impl Sink<'_> {
    /// Takes bytes read elsewhere (by a visitor).
    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Here { hasher, .. } => {
                hasher.update(bytes);
                Ok(())
            }
            Sink::Worker(feed) => feed.push(bytes),
        }
    }

    /// Takes the rest of `r`, in large reads (fewer calls down the reader
    /// stack, and sha256 gets long runs).
    pub(super) fn fill_from(&mut self, r: &mut dyn Read) -> io::Result<()> {
        match self {
            Sink::Here { hasher, buf } => {
                if buf.is_empty() {
                    buf.resize(256 << 10, 0);
                }
                loop {
                    match r.read(buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => hasher.update(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Sink::Worker(feed) => feed.fill_from(r),
        }
    }

    /// The blob ends: how many bytes it had, and its hash (or where it
    /// will come from).
    pub(super) fn finish(self) -> io::Result<(u64, Hash)> {
        match self {
            Sink::Here { hasher, .. } => Ok((hasher.len(), Hash::Here(hasher.finish()))),
            Sink::Worker(feed) => feed.finish().map(|(len, rx)| (len, Hash::Worker(rx))),
        }
    }
}

/// A reader that puts what is read through it into a [`Sink`].
pub(super) struct Tee<'a, 's> {
    /// The entry's data.
    pub(super) inner: &'a mut dyn Read,
    /// Where its bytes go.
    pub(super) sink: &'a mut Sink<'s>,
}

impl Read for Tee<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.push(&buf[..n])?;
        Ok(n)
    }
}
