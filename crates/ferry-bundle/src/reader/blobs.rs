//! The blobs after the head: declared, in bundle.json's order, of the
//! declared size, hashing to their names. Manifests are read and parsed in
//! memory (what the end needs of them goes to [`super::graph::Edges`]);
//! other blobs are hashed while the visitor reads them, on the reading
//! thread or by a worker ([`super::hashers`]), and their verdicts given in
//! bundle order ([`State::settle`]). [`BlobTable`] is what the reader keeps
//! of each declared blob.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::mpsc::TryRecvError;

use crate::digest::{Digest, Hasher};
use crate::manifest::{self, Descriptor, Parsed};
use crate::meta::{BlobMeta, Item};

use super::error::stream_error;
use super::hashers::{Hash, Sink, Tee, MIN_HANDOVER};
use super::head::read_small;
use super::{BlobFault, BundleError, ReadOptions, State, Visitor, MAX_MANIFEST};

/// What became of a declared blob.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Not read yet.
    Pending,
    /// Its bytes hashed to its name (and a manifest parsed).
    Verified,
    /// It failed (only with `keep_going`): the reason is in `BlobTable::bad`.
    Bad,
}

/// bundle.json's blobs as the reader keeps them: each digest's place in
/// bundle.json's list (a sorted table, 36 bytes a blob, searched in
/// O(log n)) and one status byte; the rest ([`BlobMeta`]) is read from
/// bundle.json itself.
#[derive(Default)]
pub(super) struct BlobTable {
    /// (digest, its place in bundle.json's blobs), sorted.
    by_digest: Vec<(Digest, u32)>,
    /// The first place whose digest an earlier place already declares.
    first_repeat: Option<usize>,
    status: Vec<Status>,
    /// Why a blob failed, by place (only with `keep_going`).
    bad: HashMap<u32, String>,
    /// How many blobs have been seen: they come in bundle.json's order.
    next: usize,
}

impl BlobTable {
    pub(super) fn new(blobs: &[BlobMeta]) -> BlobTable {
        let mut by_digest: Vec<(Digest, u32)> = blobs
            .iter()
            .enumerate()
            .map(|(at, b)| (b.digest.clone(), at as u32))
            .collect();
        by_digest.sort_unstable();
        let first_repeat = by_digest
            .windows(2)
            .filter(|w| w[0].0 == w[1].0)
            .map(|w| w[1].1 as usize)
            .min();
        // A repeated digest finds its first place.
        by_digest.dedup_by(|later, first| later.0 == first.0);
        BlobTable {
            by_digest,
            first_repeat,
            status: vec![Status::Pending; blobs.len()],
            bad: HashMap::new(),
            next: 0,
        }
    }

    /// The first place in bundle.json whose digest is declared earlier.
    pub(super) fn first_repeat(&self) -> Option<usize> {
        self.first_repeat
    }

    /// Where bundle.json declares `d`.
    pub(super) fn place(&self, d: &Digest) -> Option<usize> {
        self.by_digest
            .binary_search_by(|(x, _)| x.cmp(d))
            .ok()
            .map(|i| self.by_digest[i].1 as usize)
    }

    /// Whether the blob at `at` was read and verified.
    pub(super) fn verified(&self, at: usize) -> bool {
        self.status.get(at) == Some(&Status::Verified)
    }

    /// Why the blob at `at` failed, if it did.
    pub(super) fn bad(&self, at: usize) -> Option<&str> {
        self.bad.get(&(at as u32)).map(String::as_str)
    }

    /// Whether the blob at `at` was read, verified or not.
    pub(super) fn done(&self, at: usize) -> bool {
        self.status.get(at).is_some_and(|s| *s != Status::Pending)
    }

    fn set(&mut self, at: usize, status: Status) {
        if let Some(s) = self.status.get_mut(at) {
            *s = status;
        }
    }
}

/// A streamed blob read to its end, its verdict not given yet.
pub(super) struct Pending {
    /// Its place in bundle.json.
    at: usize,
    /// Its entry name (for messages).
    name: String,
    hash: Hash,
}

/// How many streamed blobs may wait for their verdicts before the walk
/// waits for the oldest (each holds a name and a receiver, not bytes).
const MAX_PENDING: usize = 256;

/// How long [`State::settle`] waits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// For every blob's verdict.
    All,
    /// For none but what [`MAX_PENDING`] requires.
    Ready,
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
    pub(super) fn blob(
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
        let (Some(bundle), Some(at)) = (self.meta.clone(), self.blobs.place(&digest)) else {
            return Err(BundleError::Undeclared { entry: name.into() });
        };
        // Blobs come in bundle.json's order: one seen already is a repeat.
        if at < self.blobs.next {
            return Err(BundleError::Duplicate(name.into()));
        }
        let meta: &BlobMeta = &bundle.blobs[at];
        if meta.size != size {
            return Err(BundleError::SizeMismatch {
                entry: name.into(),
                expected: meta.size,
                actual: size,
            });
        }
        // bundle.json lists the blobs in tar order, and they come in that
        // order: the tar stream is then a function of bundle.json.
        if at != self.blobs.next {
            let next = bundle.blobs.get(self.blobs.next);
            return Err(BundleError::Malformed {
                entry: name.into(),
                reason: format!(
                    "the bundle is not in streaming order: ferry/bundle.json lists its blobs in tar order, and {} comes next",
                    next.map(|b| b.digest.to_string())
                        .unwrap_or_else(|| "no other blob".into())
                ),
            });
        }
        self.blobs.next += 1;
        if meta.role.is_manifest() {
            return self.manifest(name, at, meta, entry, options, visitor);
        }
        // A streamed blob: the visitor reads, we hash and drain. A large
        // one goes to a hashing worker when the visitor takes its verdict
        // late, and the walk moves on while it is hashed.
        self.streamed_any = true;
        let late = *self.late.get_or_insert_with(|| visitor.late_verdicts());
        let mut sink = if late && size >= MIN_HANDOVER && self.hashers.available() {
            let feed = self
                .hashers
                .feed()
                .map_err(|source| stream_error(format!("`{name}`"), source))?;
            Sink::Worker(feed)
        } else {
            Sink::Here {
                hasher: Hasher::new(),
                buf: &mut self.drain_buf,
            }
        };
        let mut tee = Tee {
            inner: &mut *entry,
            sink: &mut sink,
        };
        let mut watch = Watch {
            inner: &mut tee,
            at: name,
            error: None,
        };
        let visited = visitor.blob(meta, &mut watch);
        if let Some(e) = watch.error.take() {
            return Err(e);
        }
        visited.map_err(BundleError::Visitor)?;
        sink.fill_from(entry)
            .map_err(|source| stream_error(format!("`{name}`"), source))?;
        let (len, hash) = sink
            .finish()
            .map_err(|source| stream_error(format!("`{name}`"), source))?;
        if len != size {
            return Err(BundleError::Read {
                at: format!("`{name}`"),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("entry ended after {len} of {size} bytes"),
                ),
            });
        }
        self.pending.push_back(Pending {
            at,
            name: name.into(),
            hash,
        });
        self.settle(if late { Wait::Ready } else { Wait::All }, options, visitor)
    }

    /// Checks the digests of the streamed blobs hashed so far, in bundle
    /// order, and hands each verdict to the visitor: with [`Wait::All`]
    /// every one (waiting for the workers), with [`Wait::Ready`] those
    /// whose turn has come (or the oldest, when [`MAX_PENDING`] wait). The
    /// first failure ends it, and what is behind it is dropped: the walk
    /// stops at the first failure in bundle order, as it did when each
    /// blob was checked before the next was read.
    pub(super) fn settle(
        &mut self,
        wait: Wait,
        options: ReadOptions,
        visitor: &mut dyn Visitor,
    ) -> Result<(), BundleError> {
        while let Some(p) = self.pending.pop_front() {
            let must = wait == Wait::All || self.pending.len() >= MAX_PENDING;
            let actual = match &p.hash {
                Hash::Here(d) => Ok(d.clone()),
                Hash::Worker(rx) if must => rx.recv().map_err(|_| ()),
                Hash::Worker(rx) => match rx.try_recv() {
                    Ok(d) => Ok(d),
                    Err(TryRecvError::Empty) => {
                        self.pending.push_front(p);
                        return Ok(());
                    }
                    Err(TryRecvError::Disconnected) => Err(()),
                },
            };
            let checked = match actual {
                Ok(actual) => self.verdict(&p, actual, options, visitor),
                Err(()) => Err(BundleError::Read {
                    at: format!("`{}`", p.name),
                    source: io::Error::other("the blob hashing threads stopped"),
                }),
            };
            if let Err(e) = checked {
                self.pending.clear();
                return Err(e);
            }
        }
        Ok(())
    }

    /// A streamed blob's digest, checked: verified, or a fault.
    fn verdict(
        &mut self,
        p: &Pending,
        actual: Digest,
        options: ReadOptions,
        visitor: &mut dyn Visitor,
    ) -> Result<(), BundleError> {
        let Some(bundle) = self.meta.clone() else {
            return Ok(());
        };
        let meta: &BlobMeta = &bundle.blobs[p.at];
        if actual != meta.digest {
            let err = BundleError::DigestMismatch {
                entry: p.name.clone(),
                expected: meta.digest.clone(),
                actual,
            };
            return self.fault(err, p.at, meta, options, visitor, true);
        }
        self.blobs.set(p.at, Status::Verified);
        self.report.blobs += 1;
        self.report.blob_bytes += meta.size;
        visitor.blob_end(meta, Ok(())).map_err(BundleError::Visitor)
    }

    /// A manifest or index blob: read whole, hashed, parsed; its children
    /// kept as edges for the end, its bytes handed to the visitor.
    fn manifest(
        &mut self,
        name: &str,
        at: usize,
        meta: &BlobMeta,
        entry: &mut dyn Read,
        options: ReadOptions,
        visitor: &mut dyn Visitor,
    ) -> Result<(), BundleError> {
        if self.streamed_any {
            return Err(BundleError::Malformed {
                entry: name.into(),
                reason: "a manifest after config or layer blobs: the bundle is not in streaming order (manifests first)".into(),
            });
        }
        let size = meta.size;
        let digest = &meta.digest;
        let bytes = read_small(entry, name, size, MAX_MANIFEST)?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            let err = BundleError::DigestMismatch {
                entry: name.into(),
                expected: digest.clone(),
                actual,
            };
            return self.fault(err, at, meta, options, visitor, false);
        }
        let media_type = meta.media_type.as_ref().map_or("", AsRef::as_ref);
        match manifest::parse(&bytes, Some(media_type)) {
            Ok(p) => {
                if p.media_type.as_ref() != media_type {
                    let err = BundleError::Malformed {
                        entry: name.into(),
                        reason: format!("declared as `{media_type}` but is `{}`", p.media_type),
                    };
                    return self.fault(err, at, meta, options, visitor, false);
                }
                // A file item's layers land under their titles: each
                // must make a safe path, exactly as import maps them.
                for item in self.file_items.get(digest).into_iter().flatten() {
                    file_item_layers(item, &p).map_err(|reason| BundleError::Malformed {
                        entry: name.into(),
                        reason,
                    })?;
                }
                self.edges.add(at, &p, &self.blobs);
                if self.file_items.contains_key(digest) {
                    self.file_manifests.insert(digest.clone(), p);
                }
            }
            Err(e) => {
                let err = BundleError::Malformed {
                    entry: name.into(),
                    reason: e.to_string(),
                };
                return self.fault(err, at, meta, options, visitor, false);
            }
        }
        self.blobs.set(at, Status::Verified);
        self.report.blobs += 1;
        self.report.blob_bytes += size;
        visitor.manifest(meta, &bytes).map_err(BundleError::Visitor)
    }

    fn fault(
        &mut self,
        err: BundleError,
        at: usize,
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
        self.blobs.set(at, Status::Bad);
        self.blobs.bad.insert(at as u32, fault.reason.clone());
        self.report.bad_blobs.push(fault.clone());
        if streamed {
            visitor
                .blob_end(meta, Err(&fault))
                .map_err(BundleError::Visitor)?;
        }
        Ok(())
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
