//! [`FilesError`]: why a file target operation failed, naming the path or URL.

use std::io;
use std::path::{Path, PathBuf};

use ferry_bundle::Digest;
use reqwest::{Method, StatusCode};

/// Why a file target operation failed. Every variant names the path or URL.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// `--files` cannot be used.
    #[error("invalid file target `{spec}`: {reason}")]
    InvalidSpec {
        /// The value, with any password replaced by `***`.
        spec: String,
        /// Why.
        reason: String,
    },
    /// A local file system operation failed.
    #[error("failed to {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `rename … to`, …).
        op: String,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A component of the destination under the root is a symbolic link.
    #[error("refusing to write through {}: it is a symbolic link under the file target root {}", path.display(), root.display())]
    Symlink {
        /// The symbolic link.
        path: PathBuf,
        /// The file target root.
        root: PathBuf,
    },
    /// A component of the destination exists and is not a directory.
    #[error("{} exists and is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The data ended before the expected size.
    #[error("the data for {location} ended after {received} of {expected} bytes")]
    Short {
        /// The destination (path or URL).
        location: String,
        /// Expected size.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The data is longer than the expected size.
    #[error("the data for {location} is longer than the expected {expected} bytes")]
    TooLong {
        /// The destination (path or URL).
        location: String,
        /// Expected size.
        expected: u64,
    },
    /// The data's sha256 is not the expected one.
    #[error("the data for {location} has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// The destination (path or URL).
        location: String,
        /// Expected digest.
        expected: Digest,
        /// Digest of what was received.
        actual: Digest,
    },
    /// [`FileTarget::read`](super::FileTarget::read) found a file larger than its limit.
    #[error("{location} is larger than the {limit}-byte limit")]
    TooLarge {
        /// The path or URL.
        location: String,
        /// The limit.
        limit: u64,
    },
    /// The server refused the credentials (401).
    #[error("the file server refused the credentials for {url} ({status}); {}", who(.user))]
    Unauthorized {
        /// The URL (without credentials).
        url: String,
        /// The status.
        status: StatusCode,
        /// The user sent, if any.
        user: Option<String>,
    },
    /// The server does not implement `MOVE`.
    #[error("the file server does not support WebDAV MOVE (MOVE {url} answered {status}); enable `dav_methods PUT DELETE MKCOL MOVE` (nginx) or the equivalent")]
    NoMove {
        /// The URL moved.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// The base collection of an HTTP target does not exist.
    #[error("the file server has no collection at {url} (HEAD answered {status}); create it (or fix the --files URL)")]
    MissingBase {
        /// The base URL.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// An unexpected HTTP status.
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        /// The method.
        method: Method,
        /// The URL (without credentials).
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the response body (whitespace collapsed).
        body: String,
    },
    /// The HTTP transport failed: the request could not be sent or its
    /// answer not read (connection refused or cut, TLS refused, a redirect
    /// not followed), or the client could not be set up (the CA bundle). The
    /// message names the method and URL (or the file), never a credential.
    #[error(transparent)]
    Transport(#[from] ferry_registry::Error),
    /// A blocking task panicked or was cancelled.
    #[error("the file operation on {location} was interrupted: {reason}")]
    Interrupted {
        /// The path or URL.
        location: String,
        /// Why.
        reason: String,
    },
}

pub(super) fn who(user: &Option<String>) -> String {
    match user {
        Some(u) => format!("check the password of user `{u}`"),
        None => "no username was given (use --files-user / a user in the URL)".to_string(),
    }
}

pub(super) fn io_err(op: impl Into<String>, path: &Path, source: io::Error) -> FilesError {
    FilesError::Io {
        op: op.into(),
        path: path.to_path_buf(),
        source,
    }
}
