//! Reading the operator's text files (the spec, `list:` files, rendered
//! manifests for `fromManifests:`) with bounds.
//!
//! A path in a spec may name anything: `/dev/zero` (endless), a FIFO (an
//! `open` that never returns), a 1 GiB file of one line. [`read_text`]
//! refuses what is not a regular file before reading (the file is opened
//! non-blocking, so a FIFO swapped in after the check cannot block either),
//! refuses a file larger than its limit without reading it, reads at most
//! the limit, and refuses a line longer than its line limit, each with an
//! error naming the path and the limit.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The limits a file is read under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file, in bytes.
    pub max_bytes: u64,
    /// Longest line, in bytes (without its line break).
    pub max_line: usize,
}

/// `bundle.yaml`: 5 MiB (the chart files' limit), lines unbounded within that.
pub const SPEC: Limits = Limits {
    max_bytes: 5 << 20,
    max_line: 5 << 20,
};

/// A `list:` file: 16 MiB, 4 KiB per line (a reference is at most ~600 bytes).
pub const LIST: Limits = Limits {
    max_bytes: 16 << 20,
    max_line: 4 << 10,
};

/// A `fromManifests:` file (rendered YAML): 64 MiB, 1 MiB per line.
pub const MANIFESTS: Limits = Limits {
    max_bytes: 64 << 20,
    max_line: 1 << 20,
};

/// A file that was not read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Missing, unreadable, or failing while read.
    #[error("failed to read `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A device, FIFO, socket or directory.
    #[error("`{path}` is not a regular file (it is {kind}); refused")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// Over the size limit.
    #[error("`{path}` is larger than the limit of {limit} bytes; refused")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// A line over the line limit.
    #[error("`{path}`: line {line} is longer than the limit of {limit} bytes; refused")]
    LineTooLong {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// Not UTF-8 text.
    #[error("`{path}` is not UTF-8 text")]
    NotText {
        /// The file.
        path: PathBuf,
    },
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Reads `path` as UTF-8 text under `limits` (see the module docs).
pub fn read_text(path: &Path, limits: Limits) -> Result<String, InputError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    };
    let not_regular = |t: std::fs::FileType| InputError::NotRegular {
        path: path.to_path_buf(),
        kind: kind_of(t),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let too_large = || InputError::TooLarge {
        path: path.to_path_buf(),
        limit: limits.max_bytes,
    };
    if meta.len() > limits.max_bytes {
        return Err(too_large());
    }
    // Non-blocking: a FIFO put in its place since the check opens at once.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(limits.max_bytes) as usize);
    file.take(limits.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(too_large());
    }
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > limits.max_line {
            return Err(InputError::LineTooLong {
                path: path.to_path_buf(),
                line: i + 1,
                limit: limits.max_line,
            });
        }
    }
    String::from_utf8(bytes).map_err(|_| InputError::NotText {
        path: path.to_path_buf(),
    })
}
