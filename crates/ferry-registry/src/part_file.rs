//! Temporary `.part-<random>` files beside a destination, removed unless kept.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncWriteExt, BufWriter};

use crate::Error;

/// `dest` + `.part-<random>`, in the same directory.
pub(crate) fn part_path(dest: &Path) -> Result<PathBuf, Error> {
    let name = dest.file_name().ok_or_else(|| {
        Error::io(
            "download to",
            dest,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let mut part = name.to_os_string();
    part.push(format!(".part-{:016x}", rand::random::<u64>()));
    Ok(dest.with_file_name(part))
}

/// Removes a temporary file when dropped, unless kept.
pub(crate) struct PartFile {
    pub(crate) path: PathBuf,
    pub(crate) keep: bool,
}

impl PartFile {
    /// Creates a new `.part-<random>` file beside `dest` (never an existing
    /// one): the file to write, and the guard that removes it unless kept.
    pub(crate) async fn create(dest: &Path) -> Result<(tokio::fs::File, PartFile), Error> {
        let part = part_path(dest)?;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .await
            .map_err(|e| Error::io("create", &part, e))?;
        Ok((
            file,
            PartFile {
                path: part,
                keep: false,
            },
        ))
    }

    /// Flushes and syncs `out` (this part file), renames it to `dest` and
    /// syncs the directory, so that `dest` holds every byte or nothing.
    pub(crate) async fn persist(
        mut self,
        mut out: BufWriter<tokio::fs::File>,
        dest: &Path,
    ) -> Result<(), Error> {
        let part = self.path.clone();
        out.flush()
            .await
            .map_err(|e| Error::io("write", &part, e))?;
        let file = out.into_inner();
        file.sync_all()
            .await
            .map_err(|e| Error::io("sync", &part, e))?;
        drop(file);
        tokio::fs::rename(&part, dest)
            .await
            .map_err(|e| Error::io(format!("rename {} to", part.display()), dest, e))?;
        self.keep = true;
        if let Some(dir) = dest.parent() {
            // Make the rename durable; not every file system allows this.
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_file_sits_beside_the_destination() {
        let p = part_path(Path::new("/cache/blobs/sha256/abc")).unwrap();
        assert_eq!(p.parent(), Some(Path::new("/cache/blobs/sha256")));
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("abc.part-") && name.len() == "abc.part-".len() + 16,
            "{name}"
        );
    }
}
