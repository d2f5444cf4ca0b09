//! [`BundleError`], why a bundle was refused, and how an error of the stream
//! under the tar reader (decompressor, parts, a cut file) becomes one.

use std::io;

use crate::digest::Digest;
use crate::meta::FORMAT_VERSION;
use crate::text::escape;

use super::compression::TrailingData;

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
    #[error("unexpected data after the end of the archive: {}; a bundle is one tar archive ending in two zero blocks, in zstd frames and their seek table or in one gzip member, with nothing after it", escape(.detail))]
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

/// The stream ended inside an entry's data (inside an [`io::Error`] of kind
/// `UnexpectedEof`; the reader makes it [`BundleError::Truncated`]).
#[derive(Debug, thiserror::Error)]
#[error("the bundle is truncated: {0}")]
pub(super) struct Truncation(pub(super) String);

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
