//! The blobs after the head: declared, in bundle.json's order, of the
//! declared size, hashing to their names. Manifests are read and parsed in
//! memory; other blobs are hashed while the visitor reads them.

use std::io::{self, Read};

use crate::digest::{Digest, HashingReader};
use crate::manifest::{self, Descriptor, Parsed};
use crate::meta::{BlobMeta, Item};

use super::error::stream_error;
use super::head::read_small;
use super::{BlobFault, BundleError, ReadOptions, State, Visitor, MAX_MANIFEST};

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
            let media_type = meta.media_type.as_ref().map_or("", AsRef::as_ref);
            match manifest::parse(&bytes, Some(media_type)) {
                Ok(p) => {
                    if p.media_type.as_ref() != media_type {
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
