//! The directory target: files staged under `<root>/.ferry-staging/`,
//! hashed as they are written, `fsync`ed; never a write outside the root or
//! through a symbolic link.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_bundle::digest::Hasher;
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::error::io_err;
use super::staging::{staging_dir, temp_name, verify, Staged, StagedInner};
use super::{blocking, FilesError};

/// A local directory file target.
#[derive(Debug, Clone)]
pub struct DirTarget {
    pub(super) root: PathBuf,
}

impl DirTarget {
    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) async fn check(&self) -> Result<(), FilesError> {
        let root = self.root.clone();
        blocking(&self.root.display().to_string(), move || {
            std::fs::create_dir_all(&root).map_err(|e| io_err("create", &root, e))?;
            let probe = root.join(temp_name("ferry-probe"));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .map_err(|e| io_err("write a probe file in", &root, e))?;
            std::fs::remove_file(&probe).map_err(|e| io_err("remove", &probe, e))?;
            Ok(())
        })
        .await
    }

    pub(super) async fn has(
        &self,
        path: &RelPath,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, FilesError> {
        let root = self.root.clone();
        let path = path.clone();
        let digest = digest.clone();
        blocking(&self.root.display().to_string(), move || {
            if !walk_parents(&root, &path, false)? {
                return Ok(false);
            }
            let dest = path.under(&root);
            let meta = match std::fs::symlink_metadata(&dest) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_err("inspect", &dest, e)),
            };
            if meta.file_type().is_symlink() {
                return Err(FilesError::Symlink { path: dest, root });
            }
            if !meta.is_file() || meta.len() != size {
                return Ok(false);
            }
            let file = std::fs::File::open(&dest).map_err(|e| io_err("open", &dest, e))?;
            let mut reader = ferry_bundle::digest::HashingReader::new(file);
            io::copy(&mut reader, &mut io::sink()).map_err(|e| io_err("read", &dest, e))?;
            let (actual, len, _) = reader.finish();
            Ok(len == size && actual == digest)
        })
        .await
    }

    pub(super) async fn read(
        &self,
        path: &RelPath,
        limit: u64,
    ) -> Result<Option<Bytes>, FilesError> {
        let root = self.root.clone();
        let path = path.clone();
        blocking(&self.root.display().to_string(), move || {
            if !walk_parents(&root, &path, false)? {
                return Ok(None);
            }
            let dest = path.under(&root);
            match std::fs::symlink_metadata(&dest) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(FilesError::Symlink { path: dest, root })
                }
                Ok(m) if m.len() > limit => {
                    return Err(FilesError::TooLarge {
                        location: dest.display().to_string(),
                        limit,
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("inspect", &dest, e)),
            }
            let file = match std::fs::File::open(&dest) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("open", &dest, e)),
            };
            let mut buf = Vec::new();
            file.take(limit.saturating_add(1))
                .read_to_end(&mut buf)
                .map_err(|e| io_err("read", &dest, e))?;
            if buf.len() as u64 > limit {
                return Err(FilesError::TooLarge {
                    location: dest.display().to_string(),
                    limit,
                });
            }
            Ok(Some(Bytes::from(buf)))
        })
        .await
    }

    pub(super) async fn write_stream(
        &self,
        path: &RelPath,
        digest: &Digest,
        size: u64,
        mut chunks: mpsc::Receiver<Bytes>,
    ) -> Result<Staged, FilesError> {
        let root = self.root.clone();
        let p = path.clone();
        let dest = path.under(&self.root);
        let location = dest.display().to_string();
        let staged_root = self.root.clone();
        let staged_path = path.clone();
        let temp = blocking(&location, move || {
            std::fs::create_dir_all(&root).map_err(|e| io_err("create", &root, e))?;
            // Existing parents must be directories, not links; missing ones
            // are created when the file is committed.
            walk_parents(&root, &p, false)?;
            let dest = p.under(&root);
            match std::fs::symlink_metadata(&dest) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(FilesError::Symlink { path: dest, root })
                }
                Ok(m) if m.is_dir() => {
                    return Err(io_err(
                        "replace",
                        &dest,
                        io::Error::other("it is a directory"),
                    ))
                }
                _ => {}
            }
            let staging = staging_dir(&root)?;
            Ok(staging.join(temp_name(p.file_name())))
        })
        .await?;

        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await
            .map_err(|e| io_err("create", &temp, e))?;
        let result: Result<(), FilesError> = async {
            let mut hasher = Hasher::new();
            let mut received = 0u64;
            while let Some(chunk) = chunks.recv().await {
                received += chunk.len() as u64;
                if received > size {
                    return Err(FilesError::TooLong {
                        location: location.clone(),
                        expected: size,
                    });
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| io_err("write", &temp, e))?;
            }
            verify(&location, digest, size, received, hasher)?;
            file.flush().await.map_err(|e| io_err("write", &temp, e))?;
            file.sync_all()
                .await
                .map_err(|e| io_err("sync", &temp, e))?;
            Ok(())
        }
        .await;
        drop(file);
        match result {
            Ok(()) => Ok(Staged {
                inner: Some(StagedInner::Dir {
                    temp,
                    root: staged_root,
                    path: staged_path,
                }),
            }),
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }
}

/// Checks the parents of `path` under `root`: none may be a symbolic link or
/// something other than a directory. Missing ones are created when `create`;
/// otherwise returns `false` at the first missing one.
pub(super) fn walk_parents(root: &Path, path: &RelPath, create: bool) -> Result<bool, FilesError> {
    let Some(parent) = path.parent() else {
        return Ok(true);
    };
    let mut dir = root.to_path_buf();
    for comp in parent.components() {
        dir.push(comp);
        let meta = match std::fs::symlink_metadata(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Ok(false);
                }
                match std::fs::create_dir(&dir) {
                    Ok(()) => continue,
                    // Created meanwhile by a concurrent write: look again.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        std::fs::symlink_metadata(&dir).map_err(|e| io_err("inspect", &dir, e))?
                    }
                    Err(e) => return Err(io_err("create", &dir, e)),
                }
            }
            Err(e) => return Err(io_err("inspect", &dir, e)),
        };
        real_dir(&meta, &dir, root)?;
    }
    Ok(true)
}

/// Refuses `dir` (under `root`) unless `meta` (not following links) is a
/// directory's: a symbolic link or anything else is an error naming it.
pub(super) fn real_dir(
    meta: &std::fs::Metadata,
    dir: &Path,
    root: &Path,
) -> Result<(), FilesError> {
    if meta.file_type().is_symlink() {
        return Err(FilesError::Symlink {
            path: dir.to_path_buf(),
            root: root.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(FilesError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}
