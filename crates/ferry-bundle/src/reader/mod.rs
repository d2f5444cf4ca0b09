//! Reading a bundle as one verifying stream.
//!
//! [`read_bundle`] decompresses (zstd, gzip or none, detected from the first
//! bytes) and walks the tar once, without extracting anything. It enforces:
//!
//! - the whole file is accounted for: zstd frames and the seek table that
//!   lists exactly them ([`crate::frames`]; or one zstd frame alone), one
//!   gzip member, or a plain tar, with nothing before or after it, a tar that ends in exactly
//!   two zero blocks with nothing after them, and every header byte for
//!   byte the one ferry's writer makes ([`TarWalker`], public for tests
//!   and tools); a cut anywhere is [`BundleError::Truncated`], extra bytes
//!   [`BundleError::Trailing`];
//! - the strings bundle.json and index.json carry are single-line text and
//!   follow their grammars ([`crate::meta::BundleMeta::check`]), before the
//!   head is handed on;
//! - the head comes first and in order: `oci-layout`, `ferry/bundle.json`,
//!   the optional `ferry/bundle.json.sig`, `index.json`;
//! - every entry is a regular file (or one of the three directories
//!   `ferry/`, `blobs/`, `blobs/sha256/`) at an allowed path: anything
//!   else (`..`, absolute paths, links, devices, GNU long-name and PAX
//!   records, unknown names) is refused, by its header;
//! - no entry appears twice;
//! - metadata stays within size bounds;
//! - index.json hashes to the digest bundle.json pins, and lists exactly the
//!   items bundle.json lists;
//! - every blob is declared in bundle.json, its tar size equals the declared
//!   size, and its bytes hash to its name (checked while they stream);
//! - every descriptor reachable from index.json is present with the size the
//!   descriptor states, or declared absent (platform filter) or base
//!   (differential bundle), and the graph has no cycles.
//!
//! A [`Visitor`] sees the head, each manifest (verified, in memory) and each
//! other blob (as a reader, verified when it ends), so an importer can push
//! blobs while they stream past.
//!
//! What the reader keeps per reference is what the checks at the end need,
//! no more: `bundle.json` once, parsed (shared with the visitor through
//! [`Head::meta`]'s `Arc`), each declared blob's place and verdict
//! (`blobs::BlobTable`: a sorted digest table, one status byte each) and
//! each manifest's children as edges between interned digests
//! (`graph::Edges`: 16 bytes an edge). bundle.json's exact bytes are never
//! held: it is parsed as it streams and hashed on the way (the head carries
//! the digests a signature and a parts manifest need,
//! [`Head::meta_sha256`], [`Head::meta_prehash`]). index.json's bytes, the
//! parsed manifests and the entry names are dropped once checked (a file
//! item's manifest excepted: its layer paths are checked again at the
//! end).
//!
//! The reader's rooms:
//!
//! - this module: the public API ([`read_bundle`], [`Visitor`], [`Head`],
//!   [`Report`], the size bounds) and the reader's state across entries;
//! - [`error`]: [`BundleError`], and how a failure of the stream under the
//!   tar reader becomes one;
//! - [`compression`]: detecting and opening the compression, and the
//!   whole-file accounting (zstd frames and their seek table, or one gzip
//!   member, nothing after it);
//! - [`pipe`]: the decompressing thread and the buffers it hands over;
//! - [`entry`]: which tar entries a bundle may hold, by header
//!   ([`accept_header`]);
//! - [`walker`]: [`TarWalker`], exact tar headers, entry data and padding,
//!   the end-of-archive blocks;
//! - [`head`]: the head entries in order (`oci-layout`, bundle.json parsed
//!   as it streams, its signature, index.json) and their checks;
//! - [`blobs`]: blob order, sizes and digests (manifests in memory, other
//!   blobs hashed while the visitor reads them), their verdicts in bundle
//!   order (`State::settle`), and the compact table of the declared blobs
//!   (`blobs::BlobTable`);
//! - [`hashers`]: where a streamed blob's bytes are hashed: on the reading
//!   thread, or (a large blob, for a visitor that takes its verdicts late:
//!   [`Visitor::late_verdicts`]) by a few worker threads, one blob each,
//!   fed through a fixed budget of reused chunk buffers; [`workers_pay`]:
//!   whether they pay on this machine (3 cores or more);
//! - [`graph`]: each manifest's edges as it is read (`graph::Edges`), and
//!   the end of the stream: every declared blob seen, every item's graph
//!   complete.

mod blobs;
mod compression;
mod entry;
mod error;
mod graph;
mod hashers;
mod head;
mod pipe;
mod walker;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::sync::Arc;

use crate::digest::Digest;
use crate::manifest::{Descriptor, Parsed};
use crate::meta::{BlobMeta, BundleMeta, Item};

pub use blobs::file_item_layers;
pub use compression::{decompress, TrailingData};
pub use entry::{accept_header, EntryKind, TarEntry};
pub use error::BundleError;
pub use hashers::workers_pay;
pub use walker::{EntryData, TarWalker};

use compression::open;
use pipe::{pump, PipeReader, PIPE_DEPTH};

/// Largest `oci-layout` accepted.
pub const MAX_LAYOUT: u64 = 4 * 1024;
/// Largest `ferry/bundle.json` accepted.
pub const MAX_META: u64 = 64 * 1024 * 1024;
/// Largest signature accepted.
pub const MAX_SIG: u64 = 16 * 1024;
/// Largest `index.json` accepted.
pub const MAX_INDEX: u64 = 16 * 1024 * 1024;
/// Largest manifest or index blob accepted (the distribution spec's 4 MB floor).
pub const MAX_MANIFEST: u64 = 4 * 1024 * 1024;
/// Deepest index nesting accepted.
pub const MAX_DEPTH: usize = 8;

/// The head of a bundle, parsed and checked.
#[derive(Debug, Clone)]
pub struct Head {
    /// `ferry/bundle.json`, parsed: shared by the reader and every clone of
    /// the head (it grows with the references, and is needed to the end).
    pub meta: Arc<BundleMeta>,
    /// The sha256 of its exact bytes (its identity in a parts manifest, and
    /// what re-export checks it re-reads). The bytes themselves are never
    /// held: bundle.json is parsed as it streams.
    pub meta_sha256: Digest,
    /// The BLAKE2b-512 of its exact bytes: what a minisign (prehashed)
    /// signature signs ([`crate::sign::TrustedKey::verify_prehashed`]).
    pub meta_prehash: [u8; 64],
    /// The signature, if present.
    pub signature: Option<Vec<u8>>,
    /// `index.json` parsed, shared by every clone (the reader keeps it no
    /// longer than the visitor's [`Visitor::head`] call).
    pub index: Arc<[Descriptor]>,
}

/// A blob whose content failed verification while streaming.
#[derive(Debug, Clone)]
pub struct BlobFault {
    /// The blob.
    pub digest: Digest,
    /// What was wrong.
    pub reason: String,
}

/// What the reader hands a [`Visitor`].
pub type VisitResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Sees the bundle as it streams.
pub trait Visitor {
    /// The head, checked. Return an error to stop (e.g. a bad signature).
    fn head(&mut self, head: &Head) -> VisitResult;
    /// A manifest or index, verified, in memory.
    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult;
    /// Any other blob: read as much of `data` as wanted; the reader drains
    /// and verifies the rest, then calls [`Visitor::blob_end`].
    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult;
    /// The verdict on a streamed blob: `Ok` once its bytes hashed to its name.
    fn blob_end(&mut self, blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult;
    /// Whether [`Visitor::blob_end`] may come late: after later blobs'
    /// [`Visitor::blob`] calls (still in bundle order, each blob's after
    /// its own `blob`, all before [`read_bundle`] returns). A visitor that
    /// says yes lets the reader hash large blobs on worker threads while it
    /// reads on, several at once; the checks, the errors and which failure
    /// is reported (the first in bundle order) are the same. The default
    /// (no) gives each verdict before the next blob is read: what a
    /// visitor needs that holds a blob's bytes until its verdict. Workers
    /// pay only on 3 cores or more: ask [`workers_pay`]. Asked once per read.
    fn late_verdicts(&self) -> bool {
        false
    }
}

/// How strict the read is.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Keep going past a blob whose bytes do not match its name (import:
    /// everything else still lands). Structural problems always stop.
    pub keep_going: bool,
}

/// The outcome of a full read.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// Blobs verified.
    pub blobs: u64,
    /// Bytes of blob content hashed.
    pub blob_bytes: u64,
    /// Blobs that failed verification (only with `keep_going`).
    pub bad_blobs: Vec<BlobFault>,
    /// Items whose graph is broken, with the reason (only with `keep_going`).
    pub failed_items: Vec<(String, String)>,
    /// Items whose graph is complete and verified.
    pub good_items: Vec<String>,
}

/// Reads a bundle stream (compressed or not) from end to end. A compressed
/// stream is decompressed on a second thread while this one parses, hashes
/// and hands blobs to the visitor: the two run side by side. For a visitor
/// that takes its verdicts late ([`Visitor::late_verdicts`]: verify, on 3
/// cores or more: [`workers_pay`]), large blobs are hashed by worker
/// threads instead, several at once, while this one reads on (`hashers`).
pub fn read_bundle<R: Read + Send>(
    source: R,
    options: ReadOptions,
    visitor: &mut dyn Visitor,
) -> Result<Report, BundleError> {
    let stream = open(source)?;
    if !stream.compressed {
        return read_tar(stream.inner, options, visitor);
    }
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(PIPE_DEPTH);
        let (back_tx, back_rx) = std::sync::mpsc::channel();
        let inner = stream.inner;
        scope.spawn(move || pump(inner, tx, back_rx));
        let reader = PipeReader {
            rx,
            back: back_tx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        };
        // `reader` is dropped when this returns: the pump then stops.
        read_tar(reader, options, visitor)
    })
}

fn read_tar<S: Read>(
    stream: S,
    options: ReadOptions,
    visitor: &mut dyn Visitor,
) -> Result<Report, BundleError> {
    let mut walker = TarWalker::new(stream);
    let mut state = State::default();
    let walked = walk(&mut walker, &mut state, options, visitor);
    // Blobs still being hashed come before wherever the walk stopped: a
    // failure among them is the first one in bundle order.
    state.settle(blobs::Wait::All, options, visitor)?;
    walked?;
    state.finish(options)
}

/// Every entry, in order.
fn walk<S: Read>(
    walker: &mut TarWalker<S>,
    state: &mut State,
    options: ReadOptions,
    visitor: &mut dyn Visitor,
) -> Result<(), BundleError> {
    while let Some(entry) = walker.next_entry()? {
        state.report.entries += 1;
        let name = entry.name.clone();
        state.entry(&entry, &mut walker.data(&name), options, visitor)?;
    }
    Ok(())
}

#[derive(Default)]
struct State {
    stage: Stage,
    /// Names of the head entries and directories seen; a blob entry seen
    /// twice is found by its place in `blobs` (they come in order).
    seen: HashSet<String>,
    /// bundle.json, once read (the same `Arc` the visitor's head holds).
    meta: Option<Arc<BundleMeta>>,
    /// bundle.json's digests, until the head is handed on.
    meta_sums: Option<head::MetaSums>,
    signature: Option<Vec<u8>>,
    /// The declared blobs: where each is declared, what became of it.
    blobs: blobs::BlobTable,
    /// The manifests read, as edges, for the graph check at the end.
    edges: graph::Edges,
    streamed_any: bool,
    /// Items with a file path, by top manifest: their layers must map to
    /// safe file names.
    file_items: HashMap<Digest, Vec<Item>>,
    /// Those items' manifests, parsed: their layers' paths are checked
    /// together at the end (no two items claim one path).
    file_manifests: HashMap<Digest, Parsed>,
    /// Items (by their place in bundle.json) whose index.json descriptor
    /// disagrees with bundle.json, and how: reported at the end.
    index_disagrees: BTreeMap<usize, String>,
    report: Report,
    /// Reused to drain blobs hashed on this thread.
    drain_buf: Vec<u8>,
    /// The workers that hash large blobs (for a visitor that takes its
    /// verdicts late), started with the first such blob.
    hashers: hashers::Hashers,
    /// Whether the visitor takes its verdicts late, asked once.
    late: Option<bool>,
    /// Streamed blobs read to their end whose verdicts are not given yet,
    /// in bundle order.
    pending: VecDeque<blobs::Pending>,
}

#[derive(Default, PartialEq, Eq, PartialOrd, Ord, Clone, Copy, Debug)]
enum Stage {
    #[default]
    Start,
    Layout,
    Meta,
    Index,
}
