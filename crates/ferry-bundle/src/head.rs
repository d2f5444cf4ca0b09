//! Reading only the head of a bundle: `oci-layout`, `ferry/bundle.json`,
//! its signature and `index.json`, with the same checks [`crate::reader`]
//! makes, and nothing after that.
//!
//! What needs the table of contents (the emitted client configuration, an
//! inspection) then costs a few kilobytes of decompression instead of a pass
//! over every blob.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::meta::BlobMeta;
use crate::parts::{open_bundle, PartsError};
use crate::reader::{read_bundle, BlobFault, BundleError, Head, ReadOptions, VisitResult, Visitor};

/// Why the head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The bundle file could not be opened.
    #[error("failed to open bundle `{path}`")]
    Open {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A split bundle's parts manifest or parts are bad (the error names the part).
    #[error("failed to read split bundle `{path}`")]
    Parts {
        /// The path given.
        path: PathBuf,
        /// Cause.
        #[source]
        source: PartsError,
    },
    /// The head is malformed (the error names the entry).
    #[error("bundle `{path}` has a bad head")]
    Bundle {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: BundleError,
    },
    /// The stream ended before `index.json`.
    #[error("bundle `{path}` ends before its head is complete (no `index.json`)")]
    Incomplete {
        /// The path.
        path: PathBuf,
    },
}

/// The marker the visitor returns to stop the read once the head is in.
#[derive(Debug)]
struct HeadRead;

impl fmt::Display for HeadRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("head read")
    }
}

impl std::error::Error for HeadRead {}

#[derive(Default)]
struct HeadOnly {
    head: Option<Head>,
}

impl Visitor for HeadOnly {
    fn head(&mut self, head: &Head) -> VisitResult {
        self.head = Some(head.clone());
        Err(Box::new(HeadRead))
    }

    fn manifest(&mut self, _blob: &BlobMeta, _bytes: &[u8]) -> VisitResult {
        Err(Box::new(HeadRead))
    }

    fn blob(&mut self, _blob: &BlobMeta, _data: &mut dyn Read) -> VisitResult {
        Err(Box::new(HeadRead))
    }

    fn blob_end(&mut self, _blob: &BlobMeta, _verdict: Result<(), &BlobFault>) -> VisitResult {
        Err(Box::new(HeadRead))
    }
}

/// Reads the head of a bundle stream (compressed or not), stopping right
/// after `index.json`. `path` only names the bundle in errors.
pub fn read_head_from<R: Read + Send>(source: R, path: &Path) -> Result<Head, HeadError> {
    let mut v = HeadOnly::default();
    match read_bundle(source, ReadOptions::default(), &mut v) {
        Err(BundleError::Visitor(e)) if e.is::<HeadRead>() => {}
        Err(source) => {
            return Err(HeadError::Bundle {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(_) => {}
    }
    v.head.ok_or_else(|| HeadError::Incomplete {
        path: path.to_path_buf(),
    })
}

/// Reads the head of the bundle at `path` (a bundle file, a parts manifest
/// or the first part: see [`open_bundle`]), stopping right after
/// `index.json`: `bundle.json` (parsed, pinned index checked), the
/// signature bytes if present, and the index descriptors.
pub fn read_head(path: &Path) -> Result<Head, HeadError> {
    let parts_err = |source| HeadError::Parts {
        path: path.to_path_buf(),
        source,
    };
    let mut src = open_bundle(path).map_err(|e| match e {
        PartsError::Open { path, source } => HeadError::Open { path, source },
        other => parts_err(other),
    })?;
    match read_head_from(&mut src, path) {
        // A bad part explains a bad head better than what its bytes decoded to.
        Err(e) => Err(src.diagnose().map(parts_err).unwrap_or(e)),
        ok => ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{raw_tar, zstd, Sample};

    #[test]
    fn the_head_of_a_valid_bundle_is_read() {
        let s = Sample::new("docker.io/library/nginx:1.27", b"layer bytes");
        let bytes = zstd(&raw_tar(&s.entries()));
        let head = read_head_from(&bytes[..], Path::new("b.tar.zst")).unwrap();
        assert_eq!(*head.meta, s.meta);
        assert_eq!(head.index.len(), 1);
        assert_eq!(head.index[0].digest, s.manifest_digest());
        assert!(head.signature.is_none());
    }

    #[test]
    fn reading_stops_after_the_head() {
        // Everything after index.json is garbage (a layer whose bytes do not
        // match its name): the full reader refuses it, the head reader never
        // gets there.
        let s = Sample::new("ghcr.io/a/b:1", b"layer bytes");
        let mut entries = s.entries();
        let last = entries.len() - 1;
        entries[last].data = b"not the layer".to_vec();
        let bytes = raw_tar(&entries);
        let head = read_head_from(&bytes[..], Path::new("b.tar")).unwrap();
        assert_eq!(head.meta.items[0].reference, "ghcr.io/a/b:1");
    }

    #[test]
    fn a_bundle_cut_before_index_json_has_no_head() {
        let s = Sample::new("ghcr.io/a/b:1", b"layer bytes");
        let entries = s.entries();
        let bytes = raw_tar(&entries[..2]);
        let err = read_head_from(&bytes[..], Path::new("cut.tar")).unwrap_err();
        assert!(err.to_string().contains("cut.tar"), "{err}");
    }

    #[test]
    fn garbage_is_refused_with_the_path() {
        let err = read_head_from(
            &b"not a tar at all, just some bytes"[..],
            Path::new("x.tar"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("x.tar"), "{text}");
    }

    #[test]
    fn an_empty_stream_has_no_head() {
        let err = read_head_from(&[][..], Path::new("empty.tar")).unwrap_err();
        assert!(err.to_string().contains("empty.tar"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = read_head(Path::new("/nonexistent/ferry-bundle.tar.zst")).unwrap_err();
        assert!(matches!(err, HeadError::Open { .. }));
        assert!(err
            .to_string()
            .contains("/nonexistent/ferry-bundle.tar.zst"));
    }
}
