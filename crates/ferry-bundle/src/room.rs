//! Room on a local filesystem: what a run needs to write there and what is
//! free to this user (`statvfs`), measured before the long work starts.
//! Export checks its output and cache with it, import its store.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A filesystem a run writes to, with what it needs and has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    /// What is written there (`output`, `cache`, `output+cache` when both
    /// are on one filesystem, `store`).
    pub what: String,
    /// The directory checked (the nearest existing one).
    pub path: PathBuf,
    /// Bytes the run writes there.
    pub needed: u64,
    /// Bytes available to this user there.
    pub available: u64,
}

impl Room {
    /// Whether the need fits.
    pub fn fits(&self) -> bool {
        self.needed <= self.available
    }
}

/// The nearest existing directory at or above `path` (a directory a run
/// will create is measured where it will be created).
pub fn existing_dir(path: &Path) -> PathBuf {
    let mut p = if path.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        path.to_path_buf()
    };
    loop {
        if p.is_dir() {
            return p;
        }
        match p.parent() {
            Some(up) if !up.as_os_str().is_empty() => p = up.to_path_buf(),
            _ => return PathBuf::from("."),
        }
    }
}

/// What is free to this user on `dir`'s filesystem, and the filesystem's
/// device id (two directories with one id share their room).
pub fn free(dir: &Path) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(dir)?;
    let dev = std::fs::metadata(dir)?.dev();
    Ok((st.f_bavail.saturating_mul(st.f_frsize), dev))
}

/// The room for `needed` bytes written at or below `path` (measured at its
/// nearest existing directory); `None` when the filesystem cannot be
/// measured (the write itself then reports a full disk).
pub fn room(what: &str, path: &Path, needed: u64) -> Option<Room> {
    let dir = existing_dir(path);
    let (available, _) = free(&dir).ok()?;
    Some(Room {
        what: what.to_string(),
        path: dir,
        needed,
        available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_measured_at_its_nearest_parent() {
        let d = tempfile::tempdir().unwrap();
        let r = room("store", &d.path().join("a/b"), 1).unwrap();
        assert_eq!(r.path, d.path());
        assert!(r.available > 0 && r.fits());
        let r = room("store", &d.path().join("a"), u64::MAX).unwrap();
        assert!(!r.fits());
    }
}
