//! Reading a bundle as one verifying stream.
//!
//! [`read_bundle`] decompresses (zstd, gzip or none, detected from the first
//! bytes) and walks the tar once, without extracting anything. It enforces:
//!
//! - the whole file is accounted for: one zstd frame or gzip member (or a
//!   plain tar) with nothing before or after it, a tar that ends in exactly
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read};

use crate::digest::{Digest, HashingReader};
use crate::manifest::{self, Descriptor, Parsed};
use crate::meta::{
    BlobMeta, BundleMeta, Item, ANN_CONTAINERD_SUBJECT, ANN_IMAGE_NAME, ANN_KIND, ANN_PATH,
    ANN_REF_NAME, ANN_SOURCE, ANN_SUBJECT, FORMAT_VERSION, META_PATH, SIG_PATH,
};
use crate::text::escape;

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
    /// `ferry/bundle.json`, parsed.
    pub meta: BundleMeta,
    /// Its exact bytes (what a signature covers).
    pub meta_bytes: Vec<u8>,
    /// The signature, if present.
    pub signature: Option<Vec<u8>>,
    /// `index.json` parsed.
    pub index: Vec<Descriptor>,
}

/// Why a bundle was refused. Every variant names the entry involved; what
/// came from the bundle is shown escaped ([`crate::text::escape`]).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The stream could not be read (corrupt compression, I/O).
    #[error("failed to read the bundle stream at {}", escape(.at))]
    Read {
        /// Where: an entry name or "the tar header after `X`".
        at: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The stream ends before the archive does: a cut inside a tar header,
    /// inside an entry, or at an entry boundary before the end-of-archive
    /// blocks.
    #[error("the bundle is truncated: {}", escape(.detail))]
    Truncated {
        /// Where it ends and what was expected there.
        detail: String,
    },
    /// Bytes after the end of the archive: entries after the end-of-archive
    /// blocks, more padding, trailing garbage, another compressed frame or
    /// stream. Nothing may follow a bundle.
    #[error("unexpected data after the end of the archive: {}; a bundle is one tar archive ending in two zero blocks, in one zstd frame or gzip member, with nothing after it", escape(.detail))]
    Trailing {
        /// What follows, and where.
        detail: String,
    },
    /// The stream starts with something that is not a bundle ferry reads.
    #[error("not a ferry bundle stream: {}", escape(.0))]
    Format(String),
    /// An entry that may not be in a bundle.
    #[error("entry `{}` is not allowed: {}", escape(.entry), escape(.reason))]
    ForbiddenEntry {
        /// The entry's name.
        entry: String,
        /// Why.
        reason: String,
    },
    /// An entry seen twice.
    #[error("entry `{}` appears twice", escape(.0))]
    Duplicate(String),
    /// A head entry missing or out of order.
    #[error("bundle head out of order: expected `{expected}`, found `{}` (not a ferry bundle, or not written in streaming order)", escape(.found))]
    HeadOrder {
        /// What should have come.
        expected: &'static str,
        /// What came.
        found: String,
    },
    /// A metadata entry over its size bound.
    #[error("entry `{}` is {size} bytes, over the {limit}-byte limit", escape(.entry))]
    TooLarge {
        /// Entry name.
        entry: String,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Malformed metadata.
    #[error("entry `{}` is malformed: {}", escape(.entry), escape(.reason))]
    Malformed {
        /// Entry name.
        entry: String,
        /// Why.
        reason: String,
    },
    /// A format version this build cannot read.
    #[error(
        "bundle format version {0} is not supported (this ferry reads version {FORMAT_VERSION})"
    )]
    Version(u32),
    /// index.json differs from what bundle.json pins.
    #[error(
        "index.json digest mismatch: bundle.json pins {expected}, the entry hashes to {actual}"
    )]
    IndexMismatch {
        /// Pinned.
        expected: Digest,
        /// Actual.
        actual: Digest,
    },
    /// A blob entry that bundle.json does not declare.
    #[error("entry `{}` is not declared in ferry/bundle.json", escape(.entry))]
    Undeclared {
        /// Entry name.
        entry: String,
    },
    /// A blob whose tar size differs from the declared size.
    #[error("entry `{}`: size {actual} bytes, but bundle.json declares {expected}", escape(.entry))]
    SizeMismatch {
        /// Entry.
        entry: String,
        /// Declared.
        expected: u64,
        /// In the tar header.
        actual: u64,
    },
    /// A blob whose content does not hash to its name.
    #[error("entry `{}`: content hashes to {actual}, not {expected}", escape(.entry))]
    DigestMismatch {
        /// Entry.
        entry: String,
        /// Its name.
        expected: Digest,
        /// Hash of its bytes.
        actual: Digest,
    },
    /// Declared blobs never seen.
    #[error("bundle is incomplete: {count} declared blob(s) missing, first {first}")]
    Missing {
        /// How many.
        count: usize,
        /// The first one.
        first: Digest,
    },
    /// A graph problem (dangling or mis-sized descriptor, cycle).
    #[error("{}: {}", escape(.item), escape(.reason))]
    Graph {
        /// The item (source reference) whose graph is broken.
        item: String,
        /// What is wrong.
        reason: String,
    },
    /// The visitor stopped the read.
    #[error("{}", escape(&.0.to_string()))]
    Visitor(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl BundleError {
    /// Whether the stream ended early (a truncated file or a missing part).
    pub fn is_truncation(&self) -> bool {
        match self {
            BundleError::Truncated { .. } => true,
            BundleError::Read { source, .. } => source.kind() == io::ErrorKind::UnexpectedEof,
            _ => false,
        }
    }
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

/// Opens the decompressor a stream needs, detected from its first bytes.
/// The decompressed stream ends with an error ([`TrailingData`] inside an
/// [`io::Error`]) when anything follows the one zstd frame or gzip member.
pub fn decompress<'a, R: Read + Send + 'a>(source: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    open(source).map(|s| s.inner).map_err(|e| match e {
        BundleError::Read { source, .. } => source,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    })
}

/// A stream with its decompressor, if it has one.
struct Opened<'a> {
    inner: Box<dyn Read + Send + 'a>,
    compressed: bool,
}

/// zstd frame magic number (little-endian `0xFD2FB528`).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// gzip member magic.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `b` starts a zstd skippable frame (magic `0x184D2A50` to
/// `0x184D2A5F`): a frame any zstd decoder skips unread, whatever it holds.
fn is_skippable(b: &[u8]) -> bool {
    b.len() >= 4 && b[0] & 0xf0 == 0x50 && b[1..4] == [0x2a, 0x4d, 0x18]
}

/// What a run of bytes that should not be there looks like.
fn describe_bytes(b: &[u8]) -> String {
    if b.starts_with(&ZSTD_MAGIC) {
        "a second zstd frame".into()
    } else if is_skippable(b) {
        "a zstd skippable frame".into()
    } else if b.starts_with(&GZIP_MAGIC) {
        "a gzip member".into()
    } else if b.iter().all(|x| *x == 0) {
        "zero bytes".into()
    } else {
        "other bytes".into()
    }
}

/// Counts the bytes read from the file (for offsets in messages).
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Data after the end of the compressed stream (carried inside an
/// [`io::Error`] from the decompressor; the reader turns it into
/// [`BundleError::Trailing`]).
#[derive(Debug, thiserror::Error)]
#[error("{what} at byte {offset} of the file, after the end of the {after}")]
pub struct TrailingData {
    /// Offset in the file (the compressed stream) where it starts.
    pub offset: u64,
    /// `zstd frame` or `gzip member`.
    pub after: &'static str,
    /// What it looks like.
    pub what: String,
}

type Buffered<R> = BufReader<Counting<R>>;

enum Decoder<'a, R: Read> {
    Zstd(zstd::stream::read::Decoder<'a, Buffered<R>>),
    Gzip(flate2::bufread::GzDecoder<Buffered<R>>),
}

/// One zstd frame or one gzip member, and then nothing: when the
/// decompressor reaches the end of its frame, the file must end too.
struct OneStream<'a, R: Read> {
    decoder: Decoder<'a, R>,
    ended: bool,
}

impl<R: Read> OneStream<'_, R> {
    fn check_end(&mut self) -> io::Result<()> {
        let (buf, after) = match &mut self.decoder {
            Decoder::Zstd(d) => (d.get_mut(), "zstd frame"),
            Decoder::Gzip(d) => (d.get_mut(), "gzip member"),
        };
        let left = buf.fill_buf()?;
        if left.is_empty() {
            return Ok(());
        }
        let what = describe_bytes(&left[..left.len().min(4)]);
        let offset = buf.get_ref().count - buf.buffer().len() as u64;
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            TrailingData {
                offset,
                after,
                what,
            },
        ))
    }
}

impl<R: Read> Read for OneStream<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.ended {
            return Ok(0);
        }
        let n = match &mut self.decoder {
            Decoder::Zstd(d) => d.read(buf)?,
            Decoder::Gzip(d) => d.read(buf)?,
        };
        if n == 0 {
            self.check_end()?;
            self.ended = true;
        }
        Ok(n)
    }
}

fn open<'a, R: Read + Send + 'a>(source: R) -> Result<Opened<'a>, BundleError> {
    let read_err = |source| BundleError::Read {
        at: "the start of the stream".into(),
        source,
    };
    let mut buf = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: source,
            count: 0,
        },
    );
    let head = buf.fill_buf().map_err(read_err)?;
    let refuse = |what: &str| {
        Err(BundleError::Format(format!(
            "the file starts with {what}; a bundle is a tar archive, plain or in one zstd frame or one gzip member"
        )))
    };
    if is_skippable(head) {
        return refuse(
            "a zstd skippable frame (a frame zstd decoders pass over unread, so nothing checks what it carries)",
        );
    }
    for (magic, name) in [
        (&b"\xfd7zXZ\x00"[..], "xz compression"),
        (&b"BZh"[..], "bzip2 compression"),
        (&b"\x04\x22\x4d\x18"[..], "lz4 compression"),
        (&b"PK\x03\x04"[..], "a zip archive"),
    ] {
        if head.starts_with(magic) {
            return refuse(name);
        }
    }
    let (inner, compressed): (Box<dyn Read + Send + 'a>, bool) = if head.starts_with(&ZSTD_MAGIC) {
        let mut d = zstd::stream::read::Decoder::with_buffer(buf)
            .map_err(read_err)?
            .single_frame();
        // zstd's own default limit (128 MiB windows, what `zstd -d` accepts
        // without `--long`): ferry writes at most 8 MiB windows (level 19), and a
        // frame that asks for more memory than this is refused, not obeyed.
        d.window_log_max(27).map_err(read_err)?;
        (
            Box::new(OneStream {
                decoder: Decoder::Zstd(d),
                ended: false,
            }),
            true,
        )
    } else if head.starts_with(&GZIP_MAGIC) {
        (
            Box::new(OneStream {
                decoder: Decoder::Gzip(flate2::bufread::GzDecoder::new(buf)),
                ended: false,
            }),
            true,
        )
    } else {
        (Box::new(buf), false)
    };
    Ok(Opened { inner, compressed })
}

/// Decompressed bytes handed from the decompressing thread to the reading
/// one at a time, and how many such buffers may wait: a few MiB whatever
/// the bundle's size.
const PIPE_BUFFER: usize = 512 << 10;
const PIPE_DEPTH: usize = 4;

/// The reading end of [`read_bundle`]'s pipeline: buffers filled by the
/// decompressing thread, in order; its errors arrive in order too.
struct PipeReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Emptied buffers go back to be filled again (no allocation per buffer).
    back: std::sync::mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    let old = std::mem::replace(&mut self.cur, buf);
                    let _ = self.back.send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The decompressing end: fills buffers until the stream ends, fails, or
/// the reading end is gone (it stopped early).
fn pump(
    mut stream: Box<dyn Read + Send + '_>,
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
) {
    let mut offset = 0u64;
    loop {
        let mut buf = back.try_recv().unwrap_or_default();
        buf.resize(PIPE_BUFFER, 0);
        let mut filled = 0;
        let r = loop {
            match stream.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.truncate(filled);
        offset += filled as u64;
        let end = filled < PIPE_BUFFER;
        if filled > 0 && tx.send(Ok(buf)).is_err() {
            return;
        }
        if let Err(e) = r {
            if e.get_ref().is_some_and(|i| i.is::<TrailingData>()) {
                let _ = tx.send(Err(e));
                return;
            }
            // Where it broke, in the decompressed stream: the decompressor
            // runs ahead of the tar reader (and may refuse a frame before
            // handing out any of it), so the entry named by the reader can
            // be the one before.
            let _ = tx.send(Err(io::Error::new(
                e.kind(),
                format!("decompression failed at byte {offset} of the tar stream: {e}"),
            )));
            return;
        }
        if end {
            return;
        }
    }
}

/// Reads a bundle stream (compressed or not) from end to end. A compressed
/// stream is decompressed on a second thread while this one parses, hashes
/// and hands blobs to the visitor: the two run side by side.
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
    while let Some(entry) = walker.next_entry()? {
        state.report.entries += 1;
        let name = entry.name.clone();
        state.entry(&entry, &mut walker.data(&name), options, visitor)?;
    }
    state.finish(options)
}

/// What a tar entry is, once [`accept_header`] let it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (type `0`, or NUL in pre-POSIX archives).
    File,
    /// One of the three directories a bundle may carry.
    Dir,
}

/// A tar entry the bundle reader accepts, by its header alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Its name (valid UTF-8, no control character, relative, no `.` or
    /// `..` component).
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Its size from the header.
    pub size: u64,
    /// Offset of its header in the tar stream.
    pub offset: u64,
}

/// The one decision on which tar entries a bundle may hold, by header: the
/// reader ([`read_bundle`]) and [`TarWalker`] both call it, so they accept
/// exactly the same entries. Regular files (type `0`) and the
/// directories `ferry/`, `blobs/`, `blobs/sha256/` only; contiguous files
/// (type `7`), sparse files, links, devices, FIFOs, GNU long names and PAX
/// records are refused by type before their size is even read. Names must
/// be UTF-8, relative, without `.`/`..` components or control characters.
pub fn accept_header(header: &tar::Header, offset: u64) -> Result<TarEntry, BundleError> {
    let raw_name = header.path_bytes();
    let name = String::from_utf8_lossy(&raw_name).into_owned();
    let forbidden = |reason: String| BundleError::ForbiddenEntry {
        entry: name.clone(),
        reason,
    };
    let type_byte = header.as_bytes()[156];
    let kind = match header.entry_type() {
        tar::EntryType::Regular => EntryKind::File,
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Continuous => {
            return Err(forbidden(
                "entry type `7` (contiguous file) is not allowed: bundle files are regular files (type `0`)".into(),
            ))
        }
        tar::EntryType::GNUSparse => {
            return Err(forbidden(
                "entry type `S` (GNU sparse file) is not supported: bundle files are regular files (type `0`)".into(),
            ))
        }
        tar::EntryType::Symlink => return Err(forbidden("symbolic links are not allowed".into())),
        tar::EntryType::Link => return Err(forbidden("hard links are not allowed".into())),
        tar::EntryType::Char | tar::EntryType::Block => {
            return Err(forbidden("device files are not allowed".into()))
        }
        tar::EntryType::Fifo => return Err(forbidden("FIFOs are not allowed".into())),
        tar::EntryType::GNULongName
        | tar::EntryType::GNULongLink
        | tar::EntryType::XHeader
        | tar::EntryType::XGlobalHeader => {
            let size = header
                .size()
                .map(|n| format!("{n}-byte "))
                .unwrap_or_default();
            return Err(forbidden(format!(
                "{size}{:?} record: GNU long names and PAX extended headers are not allowed (bundle entry names are short)",
                header.entry_type()
            )));
        }
        _ => {
            return Err(forbidden(format!(
                "entry type `{}` is not supported",
                escape(&char::from(type_byte).to_string())
            )))
        }
    };
    let size = header.size().map_err(|e| BundleError::Malformed {
        entry: name.clone(),
        reason: format!("bad size field in the tar header at byte {offset}: {e}"),
    })?;
    if std::str::from_utf8(&raw_name).is_err() {
        return Err(forbidden("the name is not valid UTF-8".into()));
    }
    if name.chars().any(crate::text::is_unsafe_char) {
        return Err(forbidden("the name contains a control character".into()));
    }
    if name.is_empty() {
        return Err(forbidden("the name is empty".into()));
    }
    if name.starts_with('/') {
        return Err(forbidden("absolute paths are not allowed".into()));
    }
    if name
        .trim_end_matches('/')
        .split('/')
        .any(|c| c == ".." || c == ".")
    {
        return Err(forbidden(
            "`.` and `..` path components are not allowed".into(),
        ));
    }
    if kind == EntryKind::Dir
        && !(matches!(name.as_str(), "ferry/" | "blobs/" | "blobs/sha256/") && size == 0)
    {
        return Err(forbidden(
            "the only directories allowed are `ferry/`, `blobs/` and `blobs/sha256/`".into(),
        ));
    }
    Ok(TarEntry {
        name,
        kind,
        size,
        offset,
    })
}

/// Walks a tar stream entry by entry, accepting each header with
/// [`accept_header`], and accounts for every byte: each header whole, each
/// entry's data and padding, then exactly two zero blocks and the end of the
/// stream. A cut anywhere is [`BundleError::Truncated`] (naming the offset
/// and what was expected there); anything after the two zero blocks is
/// [`BundleError::Trailing`]. The reader's own walker.
pub struct TarWalker<R> {
    inner: R,
    /// Bytes of the tar stream consumed.
    offset: u64,
    /// Data bytes of the current entry not read yet.
    left: u64,
    /// Its size.
    size: u64,
    /// Padding after it.
    pad: u64,
    /// The last entry's name (for messages).
    last: Option<String>,
    /// The end-of-archive blocks have been read.
    done: bool,
}

/// Bytes in a tar block.
const BLOCK: u64 = 512;

impl<R: Read> TarWalker<R> {
    /// Walks `inner`, a tar stream.
    pub fn new(inner: R) -> TarWalker<R> {
        TarWalker {
            inner,
            offset: 0,
            left: 0,
            size: 0,
            pad: 0,
            last: None,
            done: false,
        }
    }

    /// Bytes of the tar stream consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn after(&self) -> String {
        match &self.last {
            Some(n) => format!("after entry `{n}`"),
            None => "before the first entry".into(),
        }
    }

    fn read_err(&self, source: io::Error) -> BundleError {
        stream_error(format!("the tar stream at byte {}", self.offset), source)
    }

    /// Reads up to `buf.len()` bytes, as many as there are: fewer only at
    /// the end of the stream.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_err(e)),
            }
        }
        Ok(got)
    }

    /// Skips what is left of the current entry: its unread data and padding.
    fn skip_rest(&mut self) -> Result<(), BundleError> {
        let mut buf = [0u8; 8192];
        while self.left > 0 {
            let want = self.left.min(buf.len() as u64) as usize;
            let got = self.fill(&mut buf[..want])?;
            if got == 0 {
                return Err(self.cut_in_data());
            }
            self.left -= got as u64;
        }
        if self.pad > 0 {
            let pad = self.pad as usize;
            let got = self.fill(&mut buf[..pad])?;
            self.pad = 0;
            if got < pad {
                return Err(BundleError::Truncated {
                    detail: format!(
                        "the stream ends at byte {} inside the padding {}, before the next tar header",
                        self.offset,
                        self.after()
                    ),
                });
            }
        }
        Ok(())
    }

    fn cut_in_data(&self) -> BundleError {
        let name = self.last.clone().unwrap_or_default();
        BundleError::Truncated {
            detail: format!(
                "the stream ends at byte {} inside entry `{name}`, after {} of its {} bytes",
                self.offset,
                self.size - self.left,
                self.size
            ),
        }
    }

    /// The next entry, or `None` after the end-of-archive blocks (and the
    /// end of the stream right after them).
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, BundleError> {
        if self.done {
            return Ok(None);
        }
        self.skip_rest()?;
        let at = self.offset;
        let mut block = [0u8; BLOCK as usize];
        let got = self.fill(&mut block)?;
        if got == 0 {
            return Err(BundleError::Truncated {
                detail: format!(
                    "the stream ends at byte {at} {}, where another tar header or the two end-of-archive blocks were expected",
                    self.after()
                ),
            });
        }
        if got < block.len() {
            return Err(BundleError::Truncated {
                detail: format!(
                    "the stream ends at byte {} inside the tar header that starts at byte {at} ({}): {got} of its 512 bytes",
                    self.offset,
                    self.after()
                ),
            });
        }
        if block.iter().all(|b| *b == 0) {
            self.end(at)?;
            return Ok(None);
        }
        let header = tar::Header::from_byte_slice(&block);
        check_header_sum(header, at, &self.after())?;
        let entry = accept_header(header, at)?;
        check_canonical(&block, &entry)?;
        self.size = entry.size;
        self.left = entry.size;
        self.pad = (BLOCK - entry.size % BLOCK) % BLOCK;
        self.last = Some(entry.name.clone());
        Ok(Some(entry))
    }

    /// After the first zero block (at `at`): a second one, then nothing.
    fn end(&mut self, at: u64) -> Result<(), BundleError> {
        let mut block = [0u8; BLOCK as usize];
        let got = self.fill(&mut block)?;
        if got < block.len() {
            return Err(BundleError::Truncated {
                detail: format!(
                    "the stream ends at byte {} inside the end-of-archive blocks that start at byte {at}: {} of their 1024 bytes",
                    self.offset,
                    BLOCK as usize + got
                ),
            });
        }
        if block.iter().any(|b| *b != 0) {
            return Err(BundleError::Trailing {
                detail: format!(
                    "{} at byte {} of the tar stream, between the two end-of-archive blocks",
                    describe_block(&block),
                    at + BLOCK
                ),
            });
        }
        let after = self.offset;
        let mut probe = [0u8; BLOCK as usize];
        let got = self.fill(&mut probe)?;
        if got > 0 {
            let what = if got == probe.len() {
                describe_block(&probe)
            } else if probe[..got].iter().all(|b| *b == 0) {
                format!("{got} zero bytes")
            } else {
                format!("{got} bytes of data")
            };
            return Err(BundleError::Trailing {
                detail: format!(
                    "{what} at byte {after} of the tar stream, after the two end-of-archive blocks"
                ),
            });
        }
        self.done = true;
        Ok(())
    }

    /// The current entry's data (only its data: never more than its size).
    /// `name` names it in errors.
    pub fn data<'w>(&'w mut self, name: &'w str) -> EntryData<'w, R> {
        EntryData { walker: self, name }
    }
}

/// The fields of a ustar header, by byte range, for messages.
const HEADER_FIELDS: [(&str, std::ops::Range<usize>); 17] = [
    ("name", 0..100),
    ("mode", 100..108),
    ("uid", 108..116),
    ("gid", 116..124),
    ("size", 124..136),
    ("mtime", 136..148),
    ("type", 156..157),
    ("link name", 157..257),
    ("magic", 257..263),
    ("version", 263..265),
    ("user name", 265..297),
    ("group name", 297..329),
    ("device major", 329..337),
    ("device minor", 337..345),
    ("prefix", 345..500),
    ("padding", 500..512),
    // Last: any other change changes it too.
    ("checksum", 148..156),
];

/// An accepted entry's header must be byte for byte the one ferry's writer
/// makes for it ([`crate::writer::header`]): no free field (mtime, ids,
/// user names, link name, prefix, padding) can carry bytes no check covers.
fn check_canonical(block: &[u8; BLOCK as usize], entry: &TarEntry) -> Result<(), BundleError> {
    let expected = crate::writer::header(&entry.name, entry.size, entry.kind == EntryKind::Dir);
    let expected = expected.as_bytes();
    if &expected[..] == block {
        return Ok(());
    }
    let (field, range) = HEADER_FIELDS
        .iter()
        .find(|(_, r)| block[r.clone()] != expected[r.clone()])
        .cloned()
        .unwrap_or(("checksum", 148..156));
    let show = |b: &[u8]| escape(String::from_utf8_lossy(b).trim_end_matches('\0')).into_owned();
    Err(BundleError::ForbiddenEntry {
        entry: entry.name.clone(),
        reason: format!(
            "its tar header (at byte {}) is not the one ferry writes: the {field} field differs (`{}`, expected `{}`); bundle headers are fixed (ustar, mode 0644/0755, uid/gid 0, mtime 0, no user names, links or prefix)",
            entry.offset,
            show(&block[range.clone()]),
            show(&expected[range]),
        ),
    })
}

/// What a 512-byte block after the end of the archive looks like.
fn describe_block(block: &[u8; BLOCK as usize]) -> String {
    if block.iter().all(|b| *b == 0) {
        return "more zero padding".into();
    }
    let header = tar::Header::from_byte_slice(block);
    if check_header_sum(header, 0, "").is_ok() {
        return format!(
            "another tar entry (`{}`)",
            escape(&String::from_utf8_lossy(&header.path_bytes()))
        );
    }
    "data".into()
}

/// The tar header checksum: the sum of the header's bytes with the checksum
/// field itself counted as spaces (POSIX ustar).
fn check_header_sum(header: &tar::Header, at: u64, after: &str) -> Result<(), BundleError> {
    let bytes = header.as_bytes();
    let sum: u64 = bytes[..148]
        .iter()
        .chain(&bytes[156..])
        .map(|b| u64::from(*b))
        .sum::<u64>()
        + 8 * 32;
    let bad = |reason: String| BundleError::Malformed {
        entry: format!("the tar header at byte {at} ({after})"),
        reason,
    };
    let stored = header
        .cksum()
        .map_err(|e| bad(format!("bad checksum field: {e}")))?;
    if u64::from(stored) != sum {
        return Err(bad(format!(
            "header checksum mismatch (stored {stored}, computed {sum}): not a tar header, or a corrupt one"
        )));
    }
    Ok(())
}

/// One entry's data, from [`TarWalker::data`]. A stream that ends inside
/// it fails with [`io::ErrorKind::UnexpectedEof`], saying the bundle is
/// truncated.
pub struct EntryData<'w, R> {
    walker: &'w mut TarWalker<R>,
    name: &'w str,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let w = &mut *self.walker;
        if w.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(w.left) as usize;
        loop {
            match w.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        Truncation(format!(
                        "the stream ends at byte {} inside entry `{}`, after {} of its {} bytes",
                        w.offset,
                        escape(self.name),
                        w.size - w.left,
                        w.size
                    )),
                    ))
                }
                Ok(n) => {
                    w.left -= n as u64;
                    w.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The stream ended inside an entry's data (inside an [`io::Error`] of kind
/// `UnexpectedEof`; the reader makes it [`BundleError::Truncated`]).
#[derive(Debug, thiserror::Error)]
#[error("the bundle is truncated: {0}")]
struct Truncation(String);

/// An error of the stream under the tar reader, `at` a place: data after the
/// compressed stream becomes [`BundleError::Trailing`]; anything else a
/// [`BundleError::Read`] whose message is escaped (a decoder's or a part's
/// message must not carry raw bytes to the terminal).
pub(crate) fn stream_error(at: String, source: io::Error) -> BundleError {
    if let Some(t) = source
        .get_ref()
        .and_then(|i| i.downcast_ref::<TrailingData>())
    {
        return BundleError::Trailing {
            detail: t.to_string(),
        };
    }
    if let Some(t) = source
        .get_ref()
        .and_then(|i| i.downcast_ref::<Truncation>())
    {
        return BundleError::Truncated {
            detail: t.0.clone(),
        };
    }
    let kind = source.kind();
    let message = escape(&source.to_string()).into_owned();
    if kind == io::ErrorKind::UnexpectedEof {
        // The decompressor's input ended inside its frame: a cut file.
        return BundleError::Truncated {
            detail: format!("failed to read the bundle stream at {at}: {message}"),
        };
    }
    BundleError::Read {
        at,
        source: io::Error::new(kind, message),
    }
}

#[derive(Default)]
struct State {
    stage: Stage,
    seen: HashSet<String>,
    head: Option<Head>,
    meta_bytes: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
    declared: HashMap<Digest, BlobMeta>,
    /// The declared blobs in tar order, and how many have been seen.
    order: Vec<Digest>,
    next_blob: usize,
    verified: HashSet<Digest>,
    bad: HashMap<Digest, String>,
    parsed: HashMap<Digest, Parsed>,
    streamed_any: bool,
    /// Items with a file path, by top manifest: their layers must map to
    /// safe file names.
    file_items: HashMap<Digest, Vec<Item>>,
    report: Report,
    /// Reused by [`drain`].
    drain_buf: Vec<u8>,
}

/// Reads `r` to its end through `buf` (256 KiB, allocated once).
fn drain(r: &mut dyn Read, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.is_empty() {
        buf.resize(256 << 10, 0);
    }
    loop {
        match r.read(buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[derive(Default, PartialEq, Eq, PartialOrd, Ord, Clone, Copy, Debug)]
enum Stage {
    #[default]
    Start,
    Layout,
    Meta,
    Index,
}

fn read_small(
    entry: &mut dyn Read,
    name: &str,
    size: u64,
    limit: u64,
) -> Result<Vec<u8>, BundleError> {
    if size > limit {
        return Err(BundleError::TooLarge {
            entry: name.into(),
            size,
            limit,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|source| stream_error(format!("`{name}`"), source))?;
    if buf.len() as u64 != size {
        return Err(BundleError::Read {
            at: format!("`{name}`"),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry ended after {} of {size} bytes", buf.len()),
            ),
        });
    }
    Ok(buf)
}

/// A reader that remembers the first I/O error of the underlying stream, so a
/// truncated bundle is reported as such even when a visitor swallowed it.
struct Watch<'a, R: Read> {
    inner: &'a mut R,
    /// The entry being read.
    at: &'a str,
    error: Option<BundleError>,
}

impl<R: Read> Read for Watch<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                if self.error.is_none() {
                    self.error = Some(stream_error(format!("`{}`", self.at), e));
                }
                Err(copy)
            }
        }
    }
}

impl State {
    fn entry(
        &mut self,
        header: &TarEntry,
        entry: &mut dyn Read,
        options: ReadOptions,
        visitor: &mut dyn Visitor,
    ) -> Result<(), BundleError> {
        let name = header.name.as_str();
        let size = header.size;
        if !self.seen.insert(name.to_string()) {
            return Err(BundleError::Duplicate(name.into()));
        }
        if header.kind == EntryKind::Dir {
            return Ok(());
        }
        match (self.stage, name) {
            (Stage::Start, "oci-layout") => {
                let bytes = read_small(entry, name, size, MAX_LAYOUT)?;
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| BundleError::Malformed {
                        entry: name.into(),
                        reason: e.to_string(),
                    })?;
                if v.get("imageLayoutVersion").and_then(|x| x.as_str()) != Some("1.0.0") {
                    return Err(BundleError::Malformed {
                        entry: name.into(),
                        reason: "imageLayoutVersion must be \"1.0.0\"".into(),
                    });
                }
                self.stage = Stage::Layout;
                Ok(())
            }
            (Stage::Start, _) => Err(BundleError::HeadOrder {
                expected: "oci-layout",
                found: name.into(),
            }),
            (Stage::Layout, META_PATH) => {
                let bytes = read_small(entry, name, size, MAX_META)?;
                let meta: BundleMeta = serde_json::from_slice(&bytes).map_err(|e| {
                    // Check the version first so a newer format gets the right message.
                    let version = serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v.get("formatVersion").and_then(|x| x.as_u64()));
                    match version {
                        Some(v) if v != FORMAT_VERSION as u64 => BundleError::Version(v as u32),
                        _ => BundleError::Malformed {
                            entry: name.into(),
                            reason: e.to_string(),
                        },
                    }
                })?;
                if meta.format_version != FORMAT_VERSION {
                    return Err(BundleError::Version(meta.format_version));
                }
                // Every string it carries, before anyone prints or acts on it.
                meta.check().map_err(|reason| BundleError::Malformed {
                    entry: name.into(),
                    reason,
                })?;
                self.order = meta.blobs.iter().map(|b| b.digest.clone()).collect();
                for b in &meta.blobs {
                    if self.declared.insert(b.digest.clone(), b.clone()).is_some() {
                        return Err(BundleError::Malformed {
                            entry: name.into(),
                            reason: format!("blob {} is declared twice", b.digest),
                        });
                    }
                    if b.role.is_manifest()
                        && b.media_type
                            .as_deref()
                            .is_none_or(|m| !manifest::is_any_manifest(m))
                    {
                        return Err(BundleError::Malformed {
                            entry: name.into(),
                            reason: format!(
                                "manifest blob {} has no manifest media type",
                                b.digest
                            ),
                        });
                    }
                }
                self.meta_bytes = Some(bytes);
                self.head = Some(Head {
                    meta,
                    meta_bytes: Vec::new(),
                    signature: None,
                    index: Vec::new(),
                });
                self.stage = Stage::Meta;
                Ok(())
            }
            (Stage::Layout, _) => Err(BundleError::HeadOrder {
                expected: META_PATH,
                found: name.into(),
            }),
            (Stage::Meta, SIG_PATH) if self.signature.is_none() => {
                let sig = read_small(entry, name, size, MAX_SIG)?;
                // A minisign signature is four lines of text; its comments
                // are shown to the operator, so they are checked as text.
                let text = std::str::from_utf8(&sig).map_err(|_| BundleError::Malformed {
                    entry: name.into(),
                    reason: "a minisign signature is text, this is not UTF-8".into(),
                })?;
                let lines: Vec<&str> = text
                    .strip_suffix('\n')
                    .unwrap_or(text)
                    .split('\n')
                    .collect();
                if lines.len() != 4 {
                    return Err(BundleError::Malformed {
                        entry: name.into(),
                        reason: format!(
                            "a minisign signature has 4 lines, this one {}",
                            lines.len()
                        ),
                    });
                }
                for line in lines {
                    crate::text::check("a signature line", line, MAX_SIG as usize).map_err(
                        |e| BundleError::Malformed {
                            entry: name.into(),
                            reason: e.to_string(),
                        },
                    )?;
                }
                self.signature = Some(sig);
                Ok(())
            }
            (Stage::Meta, "index.json") => {
                let bytes = read_small(entry, name, size, MAX_INDEX)?;
                self.index(bytes, visitor)?;
                self.stage = Stage::Index;
                Ok(())
            }
            (Stage::Meta, _) => Err(BundleError::HeadOrder {
                expected: "index.json",
                found: name.into(),
            }),
            (Stage::Index, _) => self.blob(name, size, entry, options, visitor),
        }
    }

    fn index(&mut self, bytes: Vec<u8>, visitor: &mut dyn Visitor) -> Result<(), BundleError> {
        let malformed = |reason: String| BundleError::Malformed {
            entry: "index.json".into(),
            reason,
        };
        let Some(mut head) = self.head.take() else {
            return Err(BundleError::HeadOrder {
                expected: META_PATH,
                found: "index.json".into(),
            });
        };
        let actual = Digest::of(&bytes);
        if actual != head.meta.index.digest || bytes.len() as u64 != head.meta.index.size {
            return Err(BundleError::IndexMismatch {
                expected: head.meta.index.digest.clone(),
                actual,
            });
        }
        let parsed = manifest::parse(&bytes, Some(manifest::OCI_INDEX))
            .map_err(|e| malformed(e.to_string()))?;
        if !parsed.is_index() {
            return Err(malformed("index.json must be an image index".into()));
        }
        // index.json and bundle.json must list the same items.
        let legacy = legacy_names(&head.meta);
        let from_index: BTreeSet<(String, Digest)> = parsed
            .manifests
            .iter()
            .map(|d| (index_key(&legacy, d), d.digest.clone()))
            .collect();
        let from_meta: BTreeSet<(String, Digest)> = head
            .meta
            .items
            .iter()
            .map(|i| (i.index_name(), i.digest.clone()))
            .collect();
        if from_index != from_meta || parsed.manifests.len() != head.meta.items.len() {
            let diff = from_index
                .symmetric_difference(&from_meta)
                .next()
                .map(|(r, d)| format!("{r}@{d}"))
                .unwrap_or_else(|| "a duplicate entry".into());
            return Err(malformed(format!(
                "index.json and ferry/bundle.json list different items ({diff})"
            )));
        }
        // File paths must be safe, in their kind's place and unique before
        // anyone writes them anywhere.
        crate::placement::check_items(&head.meta.items)
            .map_err(|e| malformed(format!("unsafe file path: {e}")))?;
        // Every annotation is single-line text, and those ferry writes say
        // what bundle.json says (containerd names images by
        // `io.containerd.image.name`).
        let items: HashMap<(String, &Digest), &Item> = head
            .meta
            .items
            .iter()
            .map(|i| ((i.index_name(), &i.digest), i))
            .collect();
        for d in &parsed.manifests {
            let Some(item) = items.get(&(index_key(&legacy, d), &d.digest)) else {
                continue;
            };
            for (key, value) in &d.annotations {
                crate::text::check(
                    &format!("annotation `{}`", escape(key)),
                    key,
                    crate::text::MAX_TEXT,
                )
                .and_then(|()| {
                    crate::text::check(
                        &format!("annotation `{}`", escape(key)),
                        value,
                        crate::text::MAX_TEXT,
                    )
                })
                .map_err(|e| malformed(format!("item `{}`: {e}", item.reference)))?;
                let expected = match key.as_str() {
                    ANN_IMAGE_NAME | ANN_SOURCE => Some(item.reference.clone()),
                    ANN_KIND => Some(item.kind.as_str().to_string()),
                    ANN_PATH => Some(item.path.clone().unwrap_or_default()),
                    ANN_SUBJECT | ANN_CONTAINERD_SUBJECT => Some(
                        item.subject
                            .as_ref()
                            .map(|s| s.to_string())
                            .unwrap_or_default(),
                    ),
                    _ => None,
                };
                if let Some(expected) = expected.filter(|e| e != value) {
                    return Err(malformed(format!(
                        "item `{}`: annotation `{key}` is `{}`, but ferry/bundle.json says `{}`",
                        item.reference,
                        escape(value),
                        escape(&expected)
                    )));
                }
            }
            if item.path.is_some() {
                self.file_items
                    .entry(item.digest.clone())
                    .or_default()
                    .push((*item).clone());
            }
        }
        head.index = parsed.manifests;
        head.meta_bytes = self.meta_bytes.take().unwrap_or_default();
        head.signature = self.signature.take();
        visitor.head(&head).map_err(BundleError::Visitor)?;
        self.head = Some(head);
        Ok(())
    }

    fn blob(
        &mut self,
        name: &str,
        size: u64,
        entry: &mut dyn Read,
        options: ReadOptions,
        visitor: &mut dyn Visitor,
    ) -> Result<(), BundleError> {
        let Some(hex_part) = name.strip_prefix("blobs/sha256/") else {
            return Err(BundleError::ForbiddenEntry {
                entry: name.into(),
                reason: "after index.json only `blobs/sha256/<digest>` entries are allowed".into(),
            });
        };
        let digest = Digest::from_hex(hex_part).map_err(|e| BundleError::ForbiddenEntry {
            entry: name.into(),
            reason: format!("not a blob name: {}", e.reason),
        })?;
        let Some(meta) = self.declared.get(&digest).cloned() else {
            return Err(BundleError::Undeclared { entry: name.into() });
        };
        if meta.size != size {
            return Err(BundleError::SizeMismatch {
                entry: name.into(),
                expected: meta.size,
                actual: size,
            });
        }
        // bundle.json lists the blobs in tar order, and they come in that
        // order: the tar stream is then a function of bundle.json.
        let next = self.order.get(self.next_blob);
        if next != Some(&digest) {
            return Err(BundleError::Malformed {
                entry: name.into(),
                reason: format!(
                    "the bundle is not in streaming order: ferry/bundle.json lists its blobs in tar order, and {} comes next",
                    next.map(|d| d.to_string())
                        .unwrap_or_else(|| "no other blob".into())
                ),
            });
        }
        self.next_blob += 1;
        if meta.role.is_manifest() {
            if self.streamed_any {
                return Err(BundleError::Malformed {
                    entry: name.into(),
                    reason: "a manifest after config or layer blobs: the bundle is not in streaming order (manifests first)".into(),
                });
            }
            let bytes = read_small(entry, name, size, MAX_MANIFEST)?;
            let actual = Digest::of(&bytes);
            if actual != digest {
                let err = BundleError::DigestMismatch {
                    entry: name.into(),
                    expected: digest.clone(),
                    actual,
                };
                return self.fault(err, &meta, options, visitor, false);
            }
            let media_type = meta.media_type.clone().unwrap_or_default();
            match manifest::parse(&bytes, Some(&media_type)) {
                Ok(p) => {
                    if p.media_type != media_type {
                        let err = BundleError::Malformed {
                            entry: name.into(),
                            reason: format!("declared as `{media_type}` but is `{}`", p.media_type),
                        };
                        return self.fault(err, &meta, options, visitor, false);
                    }
                    // A file item's layers land under their titles: each
                    // must make a safe path, exactly as import maps them.
                    for item in self.file_items.get(&digest).into_iter().flatten() {
                        file_item_layers(item, &p).map_err(|reason| BundleError::Malformed {
                            entry: name.into(),
                            reason,
                        })?;
                    }
                    self.parsed.insert(digest.clone(), p);
                }
                Err(e) => {
                    let err = BundleError::Malformed {
                        entry: name.into(),
                        reason: e.to_string(),
                    };
                    return self.fault(err, &meta, options, visitor, false);
                }
            }
            self.verified.insert(digest);
            self.report.blobs += 1;
            self.report.blob_bytes += size;
            return visitor
                .manifest(&meta, &bytes)
                .map_err(BundleError::Visitor);
        }
        // A streamed blob: the visitor reads, we hash and drain.
        self.streamed_any = true;
        let mut hashing = HashingReader::new(&mut *entry);
        let mut watch = Watch {
            inner: &mut hashing,
            at: name,
            error: None,
        };
        let visited = visitor.blob(&meta, &mut watch);
        if let Some(e) = watch.error.take() {
            return Err(e);
        }
        visited.map_err(BundleError::Visitor)?;
        // Drained in large reads: fewer calls down the reader stack, and
        // sha256 gets long runs (what `verify` spends its time on).
        drain(&mut hashing, &mut self.drain_buf)
            .map_err(|source| stream_error(format!("`{name}`"), source))?;
        let (actual, len, _) = hashing.finish();
        if len != size {
            return Err(BundleError::Read {
                at: format!("`{name}`"),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("entry ended after {len} of {size} bytes"),
                ),
            });
        }
        if actual != digest {
            let err = BundleError::DigestMismatch {
                entry: name.into(),
                expected: digest.clone(),
                actual,
            };
            return self.fault(err, &meta, options, visitor, true);
        }
        self.verified.insert(digest);
        self.report.blobs += 1;
        self.report.blob_bytes += size;
        visitor
            .blob_end(&meta, Ok(()))
            .map_err(BundleError::Visitor)
    }

    fn fault(
        &mut self,
        err: BundleError,
        meta: &BlobMeta,
        options: ReadOptions,
        visitor: &mut dyn Visitor,
        streamed: bool,
    ) -> Result<(), BundleError> {
        if !options.keep_going {
            return Err(err);
        }
        let fault = BlobFault {
            digest: meta.digest.clone(),
            reason: err.to_string(),
        };
        self.bad.insert(meta.digest.clone(), fault.reason.clone());
        self.report.bad_blobs.push(fault.clone());
        if streamed {
            visitor
                .blob_end(meta, Err(&fault))
                .map_err(BundleError::Visitor)?;
        }
        Ok(())
    }

    fn finish(mut self, options: ReadOptions) -> Result<Report, BundleError> {
        let Some(head) = self.head.take() else {
            let expected = match self.stage {
                Stage::Start => "oci-layout",
                Stage::Layout => META_PATH,
                _ => "index.json",
            };
            return Err(BundleError::HeadOrder {
                expected,
                found: "the end of the stream".into(),
            });
        };
        if self.stage != Stage::Index {
            return Err(BundleError::HeadOrder {
                expected: "index.json",
                found: "the end of the stream".into(),
            });
        }
        let missing: Vec<&BlobMeta> = head
            .meta
            .blobs
            .iter()
            .filter(|b| !self.verified.contains(&b.digest) && !self.bad.contains_key(&b.digest))
            .collect();
        if let Some(first) = missing.first() {
            return Err(BundleError::Missing {
                count: missing.len(),
                first: first.digest.clone(),
            });
        }
        crate::placement::check_layers(&head.meta.items, &self.parsed).map_err(|e| {
            BundleError::Malformed {
                entry: "index.json".into(),
                reason: format!("unsafe file path: {e}"),
            }
        })?;
        let graph = Graph {
            meta: &head.meta,
            declared: &self.declared,
            verified: &self.verified,
            bad: &self.bad,
            parsed: &self.parsed,
            absent: head
                .meta
                .absent
                .iter()
                .map(|a| (a.parent.clone(), a.digest.clone()))
                .collect(),
            base: head
                .meta
                .base
                .iter()
                .map(|b| (b.digest.clone(), b.size))
                .collect(),
            checked: Default::default(),
        };
        for (item, desc) in head.meta.items.iter().zip(sorted_index(&head)) {
            match graph.check_item(item, desc) {
                Ok(()) => self.report.good_items.push(item.reference.clone()),
                Err(reason) => {
                    if !options.keep_going {
                        return Err(BundleError::Graph {
                            item: item.reference.clone(),
                            reason,
                        });
                    }
                    self.report
                        .failed_items
                        .push((item.reference.clone(), reason));
                }
            }
        }
        Ok(self.report)
    }
}

/// Where the layers of a file item (one with a `dev.ferry.path`) land, as
/// import maps them ([`crate::artifact::file_layers`]): refused, naming the
/// item, when a layer title is not a safe file name or no layer is a file.
pub fn file_item_layers(
    item: &Item,
    manifest: &Parsed,
) -> Result<Vec<(crate::relpath::RelPath, Descriptor)>, String> {
    let Some(p) = &item.path else {
        return Ok(Vec::new());
    };
    let path = crate::relpath::RelPath::new(p).map_err(|e| format!("{}: {e}", item.reference))?;
    let layers = crate::artifact::file_layers(&path, manifest)
        .map_err(|e| format!("{}: {e}", item.reference))?;
    if layers.is_empty() {
        return Err(format!("{}: no file layer to write", item.reference));
    }
    Ok(layers)
}

/// index.json descriptors in the order of bundle.json's items.
fn sorted_index(head: &Head) -> Vec<&Descriptor> {
    let legacy = legacy_names(&head.meta);
    let by_key: BTreeMap<(String, Digest), &Descriptor> = head
        .index
        .iter()
        .map(|d| ((index_key(&legacy, d), d.digest.clone()), d))
        .collect();
    head.meta
        .items
        .iter()
        .filter_map(|i| by_key.get(&(i.index_name(), i.digest.clone())).copied())
        .collect()
}

/// File items by (reference, digest) → their [`Item::index_name`]: an
/// index.json entry of a bundle written before file items got
/// grammar-valid names carries the URL as its `ref.name`.
type LegacyNames<'a> = HashMap<(&'a str, &'a Digest), String>;

fn legacy_names(meta: &BundleMeta) -> LegacyNames<'_> {
    meta.items
        .iter()
        .filter(|i| !i.kind.is_registry())
        .map(|i| ((i.reference.as_str(), &i.digest), i.index_name()))
        .collect()
}

/// The item name an index.json entry stands for: its `ref.name`, or for a
/// legacy file entry named by its URL, that item's [`Item::index_name`].
fn index_key(legacy: &LegacyNames<'_>, d: &Descriptor) -> String {
    let name = d.annotations.get(ANN_REF_NAME).cloned().unwrap_or_default();
    legacy
        .get(&(name.as_str(), &d.digest))
        .cloned()
        .unwrap_or(name)
}

struct Graph<'a> {
    meta: &'a BundleMeta,
    declared: &'a HashMap<Digest, BlobMeta>,
    verified: &'a HashSet<Digest>,
    bad: &'a HashMap<Digest, String>,
    parsed: &'a HashMap<Digest, Parsed>,
    absent: HashSet<(Digest, Digest)>,
    base: HashMap<Digest, u64>,
    /// Manifests whose whole graph checked out, with the deepest nesting
    /// they were found at: a manifest listed many times (an index listing
    /// the same child index over and over, level after level) is walked
    /// once, not once per path to it.
    checked: std::cell::RefCell<HashMap<Digest, usize>>,
}

impl Graph<'_> {
    fn check_item(&self, item: &Item, desc: &Descriptor) -> Result<(), String> {
        let _ = self.meta;
        if desc.size != item.size || desc.media_type != item.media_type {
            return Err(format!(
                "index.json descriptor ({} bytes, `{}`) disagrees with bundle.json ({} bytes, `{}`)",
                desc.size, desc.media_type, item.size, item.media_type
            ));
        }
        let mut path = Vec::new();
        self.check(desc, true, &mut path)
    }

    fn check(
        &self,
        desc: &Descriptor,
        want_manifest: bool,
        path: &mut Vec<Digest>,
    ) -> Result<(), String> {
        let d = &desc.digest;
        if path.contains(d) {
            return Err(format!("manifest cycle through {d}"));
        }
        if path.len() > MAX_DEPTH {
            return Err(format!(
                "manifests nested deeper than {MAX_DEPTH} levels at {d}"
            ));
        }
        // Checked already, at this depth or deeper: its graph holds here too.
        if want_manifest
            && self
                .checked
                .borrow()
                .get(d)
                .is_some_and(|at| path.len() <= *at)
        {
            return Ok(());
        }
        if let Some(reason) = self.bad.get(d) {
            return Err(format!("blob {d} failed verification: {reason}"));
        }
        if let Some(size) = self.base.get(d) {
            if want_manifest {
                return Err(format!(
                    "manifest {d} is listed as a base blob; manifests always travel in the bundle"
                ));
            }
            if *size != desc.size {
                return Err(format!(
                    "descriptor for base blob {d} says {} bytes, bundle.json says {size}",
                    desc.size
                ));
            }
            return Ok(());
        }
        let Some(meta) = self.declared.get(d) else {
            return Err(format!("{d} is referenced but not in the bundle"));
        };
        if meta.size != desc.size {
            return Err(format!(
                "descriptor for {d} says {} bytes, the blob is {}",
                desc.size, meta.size
            ));
        }
        if !self.verified.contains(d) {
            return Err(format!("blob {d} was not verified"));
        }
        if !want_manifest {
            return Ok(());
        }
        let Some(parsed) = self.parsed.get(d) else {
            return Err(format!(
                "{d} is referenced as a manifest but stored as a {:?} blob",
                meta.role
            ));
        };
        path.push(d.clone());
        if parsed.is_index() {
            for child in &parsed.manifests {
                if self.absent.contains(&(d.clone(), child.digest.clone())) {
                    continue;
                }
                if manifest::is_any_manifest(&child.media_type) {
                    self.check(child, true, path)?;
                } else {
                    // A non-manifest child (e.g. an attestation blob) is a plain blob.
                    self.check(child, false, path)?;
                }
            }
        } else {
            for blob in parsed.blobs() {
                self.check(blob, false, path)?;
            }
        }
        if let Some(subject) = &parsed.subject {
            let _ = subject; // referrers point at subjects that may live elsewhere: not required here.
        }
        path.pop();
        let mut checked = self.checked.borrow_mut();
        let at = checked.entry(d.clone()).or_insert(path.len());
        *at = (*at).max(path.len());
        Ok(())
    }
}
