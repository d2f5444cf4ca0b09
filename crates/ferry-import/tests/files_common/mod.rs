//! Helpers shared by the file target suites (`files`, `files_retry`,
//! `files_transport`).

#![allow(clippy::unwrap_used, reason = "test code")]

use std::path::Path;

/// Every file under `root` (relative, `/`-separated, temporary files
/// included), sorted; symbolic links are listed, not followed.
pub fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}
