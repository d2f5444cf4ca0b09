//! Shared by the peak-memory tests (`import_peak.rs`, `verify_peak.rs`):
//! the bundle each measures is written by a child process, so building it
//! (every entry and the whole tar in memory) never counts in the peak the
//! parent measures. `cap`'s `max_allocated()` is the highest count of live
//! bytes the process ever had and cannot be reset: the parent measures in
//! increasing sizes, each after the bundle is on disk.
#![allow(dead_code, reason = "each test binary uses what it needs")]

use std::path::Path;
use std::process::Command;

/// Set in the child to the bundle's path.
const BUNDLE_VAR: &str = "FERRY_PEAK_BUNDLE";
/// Set in the child to the number of references.
const REFS_VAR: &str = "FERRY_PEAK_REFS";

/// Writes `craft::many_images(n)` (images in repositories of their own)
/// as a plain tar at `path`, in a child process running [`write_bundle`].
pub fn write_in_child(path: &Path, n: usize) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "peak::write_bundle", "--ignored", "--nocapture"])
        .env(BUNDLE_VAR, path)
        .env(REFS_VAR, n.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the child that writes the bundle failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(path.is_file(), "the child wrote no bundle at {path:?}");
}

/// The child's side of [`write_in_child`]: only meaningful with its
/// variables set, so it is ignored in a normal run and fails without them.
#[test]
#[ignore = "run by the peak tests in a child process (peak::write_in_child)"]
fn write_bundle() {
    let path = std::env::var_os(BUNDLE_VAR).expect("FERRY_PEAK_BUNDLE: run by write_in_child");
    let n: usize = std::env::var(REFS_VAR)
        .expect("FERRY_PEAK_REFS: run by write_in_child")
        .parse()
        .unwrap();
    let tar = ferry_bundle::craft::raw_tar(&ferry_bundle::craft::many_images(n));
    std::fs::write(path, tar).unwrap();
}
