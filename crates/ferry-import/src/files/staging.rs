//! Staging: temporary names (`.<name>.ferry-tmp-<random>`), the check of
//! what was received against its size and digest, the [`Staged`] file and
//! its commit or abort, and the sweep of what a crashed run left in a
//! directory target.

use std::io;
use std::path::{Path, PathBuf};

use ferry_bundle::digest::Hasher;
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;

use super::error::io_err;
use super::local::{real_dir, walk_parents};
use super::webdav::HttpTarget;
use super::{blocking, FilesError, STAGING_DIR, TEMP_MARKER};

/// The longest part of a file name kept in its temporary name (so that the
/// temporary name stays under the usual 255-byte limit).
pub(super) const TEMP_NAME_KEEP: usize = 100;

/// A file written under a temporary name and verified, waiting for
/// [`Staged::commit`] (which makes it visible at its destination) or
/// [`Staged::abort`].
///
/// Dropping it without either removes the temporary file (for an HTTP
/// target, with a `DELETE` spawned on the current Tokio runtime, best
/// effort).
#[derive(Debug)]
pub struct Staged {
    pub(super) inner: Option<StagedInner>,
}

#[derive(Debug)]
pub(super) enum StagedInner {
    Dir {
        temp: PathBuf,
        root: PathBuf,
        path: RelPath,
    },
    Http {
        target: HttpTarget,
        path: RelPath,
        temp: String,
        dest: String,
        digest: Digest,
        size: u64,
    },
}

impl Staged {
    /// Puts the verified file at its destination (rename over it / `MOVE`
    /// with `Overwrite: T`).
    pub async fn commit(mut self) -> Result<(), FilesError> {
        let Some(inner) = self.inner.take() else {
            return Ok(());
        };
        match inner {
            StagedInner::Dir { temp, root, path } => {
                let t = temp.clone();
                let dest = path.under(&root);
                let result = blocking(&dest.display().to_string(), move || {
                    // The parents are created only now: a refused import
                    // leaves no directory behind either.
                    walk_parents(&root, &path, true)?;
                    commit_dir(&temp, &path.under(&root))
                })
                .await;
                if result.is_err() {
                    let _ = tokio::fs::remove_file(&t).await;
                }
                result
            }
            StagedInner::Http {
                target,
                path,
                temp,
                dest,
                digest,
                size,
            } => target.commit(&path, &temp, &dest, &digest, size).await,
        }
    }

    /// Removes the temporary file; the destination is left as it was.
    pub async fn abort(mut self) {
        match self.inner.take() {
            Some(StagedInner::Dir { temp, .. }) => {
                let _ = tokio::fs::remove_file(&temp).await;
            }
            Some(StagedInner::Http { target, temp, .. }) => target.delete_quietly(&temp).await,
            None => {}
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        match self.inner.take() {
            Some(StagedInner::Dir { temp, .. }) => {
                let _ = std::fs::remove_file(&temp);
            }
            Some(StagedInner::Http { target, temp, .. }) => {
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move { target.delete_quietly(&temp).await });
                }
            }
            None => {}
        }
    }
}

/// Compares what was received with what was expected.
pub(super) fn verify(
    location: &str,
    digest: &Digest,
    size: u64,
    received: u64,
    hasher: Hasher,
) -> Result<(), FilesError> {
    if received < size {
        return Err(FilesError::Short {
            location: location.to_string(),
            expected: size,
            received,
        });
    }
    if received > size {
        return Err(FilesError::TooLong {
            location: location.to_string(),
            expected: size,
        });
    }
    let actual = hasher.finish();
    if &actual != digest {
        return Err(FilesError::DigestMismatch {
            location: location.to_string(),
            expected: digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// `.<name>.ferry-tmp-<16 hex>` for `name` (shortened when long).
pub(super) fn temp_name(name: &str) -> String {
    let mut keep = name.len().min(TEMP_NAME_KEEP);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(
        ".{}{TEMP_MARKER}{:016x}",
        &name[..keep],
        rand::random::<u64>()
    )
}

/// Whether `name` is a temporary file name ferry writes.
pub(super) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

/// Renames `temp` over `dest` and syncs the directory.
pub(super) fn commit_dir(temp: &Path, dest: &Path) -> Result<(), FilesError> {
    if let Ok(m) = std::fs::symlink_metadata(dest) {
        if m.file_type().is_symlink() {
            let root = dest.parent().map(Path::to_path_buf).unwrap_or_default();
            return Err(FilesError::Symlink {
                path: dest.to_path_buf(),
                root,
            });
        }
    }
    std::fs::rename(temp, dest)
        .map_err(|e| io_err(format!("rename {} to", temp.display()), dest, e))?;
    if let Some(parent) = dest.parent() {
        // Makes the rename durable; not every file system allows it.
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `root/.ferry-staging`, created if missing: where a directory target
/// holds files until the import publishes them (same file system as their
/// destinations, so publishing is a rename). `ferry serve` never serves a
/// dot-directory, and [`sweep_dir`] empties it.
pub(super) fn staging_dir(root: &Path) -> Result<PathBuf, FilesError> {
    let dir = root.join(STAGING_DIR);
    match std::fs::create_dir(&dir) {
        Ok(()) => return Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create", &dir, e)),
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| io_err("inspect", &dir, e))?;
    real_dir(&meta, &dir, root)?;
    Ok(dir)
}

/// Removes temporary files under `root` (not following symbolic links),
/// and the staging directory once it is empty.
pub(super) fn sweep_dir(root: &Path) -> Result<usize, FilesError> {
    let removed = sweep_temps(root)?;
    let staging = root.join(STAGING_DIR);
    if std::fs::symlink_metadata(&staging).is_ok_and(|m| m.is_dir()) {
        // Fails (and is left) when something other than ours is inside.
        let _ = std::fs::remove_dir(&staging);
    }
    Ok(removed)
}

pub(super) fn sweep_temps(root: &Path) -> Result<usize, FilesError> {
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list", &dir, e))?;
            let ft = entry
                .file_type()
                .map_err(|e| io_err("inspect", &entry.path(), e))?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() && is_temp_name(&entry.file_name().to_string_lossy()) {
                let p = entry.path();
                match std::fs::remove_file(&p) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove", &p, e)),
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_hidden_marked_and_short() {
        let t = temp_name("index.yaml");
        assert!(t.starts_with(".index.yaml.ferry-tmp-"), "{t}");
        assert!(is_temp_name(&t));
        assert!(!is_temp_name("index.yaml"));
        let long = "é".repeat(120);
        assert!(temp_name(&long).len() < 255);
    }
}
