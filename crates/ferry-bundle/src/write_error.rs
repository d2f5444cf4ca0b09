//! The error of writing a bundle, whole ([`crate::writer`]) or cut into parts
//! ([`crate::parts`]): its own module so that the writer, which uses the
//! part writer, and the part writer do not depend on each other.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;

/// Errors while writing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// An I/O failure on the output.
    #[error("failed to write bundle `{path}`")]
    Io {
        /// The output path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A blob source gave other bytes than announced.
    #[error("blob {expected} gave bytes with digest {actual} ({len} bytes, expected {size})")]
    BlobMismatch {
        /// Announced digest.
        expected: Digest,
        /// What the bytes hashed to.
        actual: Digest,
        /// Bytes read.
        len: u64,
        /// Announced size.
        size: u64,
    },
    /// Reading a blob source failed.
    #[error("failed to read blob {digest} from its source")]
    Source {
        /// The blob.
        digest: Digest,
        /// Cause.
        #[source]
        source: io::Error,
    },
}
