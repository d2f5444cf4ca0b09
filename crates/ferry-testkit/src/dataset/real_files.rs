//! Real files: the sorted walk of a directory that layers are made of.

use super::*;

/// Regular files under a root, in sorted order: (absolute path, path in the
/// layer, size).
pub(super) struct RealFiles {
    pub(super) files: Vec<(PathBuf, String, u64)>,
}

impl RealFiles {
    /// A sorted walk of `root` (symlinks not followed, unreadable entries
    /// skipped), regular non-empty files up to [`MAX_REAL_FILE`], stopping
    /// after `cap` bytes.
    pub(super) fn scan(root: &Path, cap: u64) -> Result<RealFiles> {
        let mut files = Vec::new();
        let mut total = 0u64;
        let prefix = root
            .strip_prefix("/")
            .unwrap_or(root)
            .to_string_lossy()
            .into_owned();
        let mut stack = vec![(root.to_path_buf(), prefix)];
        // Depth-first, sorted: directories are pushed in reverse order.
        while let Some((dir, rel)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut entries: Vec<(String, PathBuf, std::fs::FileType)> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    let ft = e.file_type().ok()?;
                    Some((name, e.path(), ft))
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut subdirs = Vec::new();
            for (name, path, ft) in entries {
                let rel_path = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                if ft.is_dir() {
                    subdirs.push((path, rel_path));
                } else if ft.is_file() {
                    let Ok(meta) = std::fs::metadata(&path) else {
                        continue;
                    };
                    let len = meta.len();
                    if len == 0 || len > MAX_REAL_FILE {
                        continue;
                    }
                    if File::open(&path).is_err() {
                        continue;
                    }
                    files.push((path, rel_path, len));
                    total += len;
                    if total >= cap {
                        return Ok(RealFiles { files });
                    }
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        if files.is_empty() {
            bail!("no readable regular files under {}", root.display());
        }
        Ok(RealFiles { files })
    }
}
