//! Which tar entries a bundle may hold, decided by header alone
//! ([`accept_header`]).

use crate::text::escape;

use super::BundleError;

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
/// reader ([`read_bundle`](super::read_bundle)) and [`TarWalker`](super::TarWalker) both call it, so they accept
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
