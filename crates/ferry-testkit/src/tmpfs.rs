//! A small tmpfs for full-disk tests (needs root, as `cargo xtask test`
//! runs in CI), unmounted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs of a given size.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`1m`, `64k`) on `dir` (created).
    pub fn mount(dir: &Path, size: &str) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run mount: {e}"))?;
        if !o.status.success() {
            anyhow::bail!(
                "mount -t tmpfs on {} (needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Gives the tmpfs `size` of room (a re-run "without the fault").
    pub fn grow(&self, size: &str) -> anyhow::Result<()> {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run mount: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "remount {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}
