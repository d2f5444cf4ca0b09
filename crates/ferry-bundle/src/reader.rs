//! Reading a bundle as one verifying stream.
//!
//! [`read_bundle`] decompresses (zstd, gzip or none, detected from the first
//! bytes) and walks the tar once, without extracting anything. It enforces:
//!
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
use crate::meta::{BlobMeta, BundleMeta, Item, ANN_REF_NAME, FORMAT_VERSION, META_PATH, SIG_PATH};

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

/// Why a bundle was refused. Every variant names the entry involved.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The stream could not be read (truncated, corrupt compression, I/O).
    #[error("failed to read the bundle stream at {at}")]
    Read {
        /// Where: an entry name or "the tar header after `X`".
        at: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An entry that may not be in a bundle.
    #[error("entry `{entry}` is not allowed: {reason}")]
    ForbiddenEntry {
        /// The entry's name.
        entry: String,
        /// Why.
        reason: String,
    },
    /// An entry seen twice.
    #[error("entry `{0}` appears twice")]
    Duplicate(String),
    /// A head entry missing or out of order.
    #[error("bundle head out of order: expected `{expected}`, found `{found}` (not a ferry bundle, or not written in streaming order)")]
    HeadOrder {
        /// What should have come.
        expected: &'static str,
        /// What came.
        found: String,
    },
    /// A metadata entry over its size bound.
    #[error("entry `{entry}` is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Entry name.
        entry: String,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Malformed metadata.
    #[error("entry `{entry}` is malformed: {reason}")]
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
    #[error("entry `{entry}` is not declared in ferry/bundle.json")]
    Undeclared {
        /// Entry name.
        entry: String,
    },
    /// A blob whose tar size differs from the declared size.
    #[error("entry `{entry}`: size {actual} bytes, but bundle.json declares {expected}")]
    SizeMismatch {
        /// Entry.
        entry: String,
        /// Declared.
        expected: u64,
        /// In the tar header.
        actual: u64,
    },
    /// A blob whose content does not hash to its name.
    #[error("entry `{entry}`: content hashes to {actual}, not {expected}")]
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
    #[error("{item}: {reason}")]
    Graph {
        /// The item (source reference) whose graph is broken.
        item: String,
        /// What is wrong.
        reason: String,
    },
    /// The visitor stopped the read.
    #[error("{0}")]
    Visitor(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl BundleError {
    /// Whether the stream ended early (a truncated file or a missing part).
    pub fn is_truncation(&self) -> bool {
        matches!(self, BundleError::Read { source, .. } if source.kind() == io::ErrorKind::UnexpectedEof)
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
pub fn decompress<'a, R: Read + Send + 'a>(source: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    open(source).map(|s| s.inner)
}

/// A stream with its decompressor, if it has one.
struct Opened<'a> {
    inner: Box<dyn Read + Send + 'a>,
    compressed: bool,
}

fn open<'a, R: Read + Send + 'a>(source: R) -> io::Result<Opened<'a>> {
    let mut buf = BufReader::with_capacity(1 << 20, source);
    let head = buf.fill_buf()?;
    let (inner, compressed): (Box<dyn Read + Send + 'a>, bool) =
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            let mut d = zstd::stream::read::Decoder::with_buffer(buf)?;
            // zstd's own default limit (128 MiB windows, what `zstd -d` accepts
            // without `--long`): ferry writes at most 8 MiB windows (level 19), and a
            // frame that asks for more memory than this is refused, not obeyed.
            d.window_log_max(27)?;
            (Box::new(d), true)
        } else if head.starts_with(&[0x1f, 0x8b]) {
            (Box::new(flate2::bufread::MultiGzDecoder::new(buf)), true)
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
    let stream = open(source).map_err(|source| BundleError::Read {
        at: "the start of the stream".into(),
        source,
    })?;
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
    let mut archive = tar::Archive::new(stream);
    let mut state = State::default();
    // Raw entries: the tar crate would otherwise read a GNU long-name or PAX
    // extension record into memory whatever size its header declares (a
    // decompression bomb); here it is refused by its header, unread.
    let entries = archive
        .entries()
        .map_err(|source| BundleError::Read {
            at: "the first tar header".into(),
            source,
        })?
        .raw(true);
    let mut last = String::from("the start");
    for entry in entries {
        let mut entry = entry.map_err(|source| BundleError::Read {
            at: format!("the tar header after `{last}`"),
            source,
        })?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        last = name.clone();
        state.report.entries += 1;
        state.entry(&name, &mut entry, options, visitor)?;
    }
    state.finish(options)
}

#[derive(Default)]
struct State {
    stage: Stage,
    seen: HashSet<String>,
    head: Option<Head>,
    meta_bytes: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
    declared: HashMap<Digest, BlobMeta>,
    verified: HashSet<Digest>,
    bad: HashMap<Digest, String>,
    parsed: HashMap<Digest, Parsed>,
    streamed_any: bool,
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
        .map_err(|source| BundleError::Read {
            at: format!("`{name}`"),
            source,
        })?;
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
    error: Option<(io::ErrorKind, String)>,
}

impl<R: Read> Read for Watch<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some((e.kind(), e.to_string()));
                }
                Err(e)
            }
        }
    }
}

impl State {
    fn entry<R: Read>(
        &mut self,
        name: &str,
        entry: &mut tar::Entry<'_, R>,
        options: ReadOptions,
        visitor: &mut dyn Visitor,
    ) -> Result<(), BundleError> {
        let header = entry.header();
        let etype = header.entry_type();
        let size = header.size().map_err(|e| BundleError::Malformed {
            entry: name.into(),
            reason: format!("bad size field: {e}"),
        })?;
        let forbidden = |reason: &str| BundleError::ForbiddenEntry {
            entry: name.into(),
            reason: reason.into(),
        };
        match etype {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => {
                if matches!(name, "ferry/" | "blobs/" | "blobs/sha256/") && size == 0 {
                    if !self.seen.insert(name.to_string()) {
                        return Err(BundleError::Duplicate(name.into()));
                    }
                    return Ok(());
                }
                return Err(forbidden(
                    "the only directories allowed are `ferry/`, `blobs/` and `blobs/sha256/`",
                ));
            }
            tar::EntryType::Symlink => return Err(forbidden("symbolic links are not allowed")),
            tar::EntryType::Link => return Err(forbidden("hard links are not allowed")),
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(forbidden("device files are not allowed"))
            }
            tar::EntryType::Fifo => return Err(forbidden("FIFOs are not allowed")),
            tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink
            | tar::EntryType::XHeader
            | tar::EntryType::XGlobalHeader => {
                return Err(forbidden(&format!(
                    "{size}-byte {etype:?} record: GNU long names and PAX extended headers are not allowed (bundle entry names are short)"
                )))
            }
            other => return Err(forbidden(&format!("entry type {other:?} is not allowed"))),
        }
        if name.starts_with('/') {
            return Err(forbidden("absolute paths are not allowed"));
        }
        if name.split('/').any(|c| c == ".." || c == ".") {
            return Err(forbidden("`.` and `..` path components are not allowed"));
        }
        if !self.seen.insert(name.to_string()) {
            return Err(BundleError::Duplicate(name.into()));
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
                self.signature = Some(read_small(entry, name, size, MAX_SIG)?);
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
        let from_index: BTreeSet<(String, Digest)> = parsed
            .manifests
            .iter()
            .map(|d| {
                (
                    d.annotations.get(ANN_REF_NAME).cloned().unwrap_or_default(),
                    d.digest.clone(),
                )
            })
            .collect();
        let from_meta: BTreeSet<(String, Digest)> = head
            .meta
            .items
            .iter()
            .map(|i| (i.reference.clone(), i.digest.clone()))
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
        head.index = parsed.manifests;
        head.meta_bytes = self.meta_bytes.take().unwrap_or_default();
        head.signature = self.signature.take();
        visitor.head(&head).map_err(BundleError::Visitor)?;
        self.head = Some(head);
        Ok(())
    }

    fn blob<R: Read>(
        &mut self,
        name: &str,
        size: u64,
        entry: &mut tar::Entry<'_, R>,
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
            error: None,
        };
        let visited = visitor.blob(&meta, &mut watch);
        let stream_error = watch.error.take();
        if let Some((kind, msg)) = stream_error {
            return Err(BundleError::Read {
                at: format!("`{name}`"),
                source: io::Error::new(kind, msg),
            });
        }
        visited.map_err(BundleError::Visitor)?;
        // Drained in large reads: fewer calls down the reader stack, and
        // sha256 gets long runs (what `verify` spends its time on).
        drain(&mut hashing, &mut self.drain_buf).map_err(|source| BundleError::Read {
            at: format!("`{name}`"),
            source,
        })?;
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

/// index.json descriptors in the order of bundle.json's items.
fn sorted_index(head: &Head) -> Vec<&Descriptor> {
    let by_key: BTreeMap<(String, Digest), &Descriptor> = head
        .index
        .iter()
        .map(|d| {
            (
                (
                    d.annotations.get(ANN_REF_NAME).cloned().unwrap_or_default(),
                    d.digest.clone(),
                ),
                d,
            )
        })
        .collect();
    head.meta
        .items
        .iter()
        .filter_map(|i| {
            by_key
                .get(&(i.reference.clone(), i.digest.clone()))
                .copied()
        })
        .collect()
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
