//! Shared by the memory tests (`import_memory.rs`, `import_peak.rs`,
//! `verify_peak.rs`): a many-images bundle, and an import of it into a
//! fresh store.
//!
//! The peak tests have the bundle written by a child process, so building
//! it (every entry and the whole tar in memory) never counts in the peak
//! the parent measures: `cap`'s `max_allocated()` is the highest count of
//! live bytes the process ever had and cannot be reset. The child is the
//! calling test itself, run again with [`BUNDLE_VAR`] and [`REFS_VAR`]
//! set: [`write_if_child`] writes the bundle there, and the parent goes on
//! to measure.
#![allow(dead_code, reason = "each test binary uses what it needs")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ferry_import::target::{Mapping, Target};
use ferry_import::ImportOptions;

/// Set in the child to the bundle's path.
const BUNDLE_VAR: &str = "FERRY_PEAK_BUNDLE";
/// Set in the child to the number of references.
const REFS_VAR: &str = "FERRY_PEAK_REFS";

/// Writes `craft::many_images(n)` (images in repositories of their own)
/// as a plain tar at `path`.
pub fn write_bundle(path: &Path, n: usize) {
    let tar = ferry_bundle::craft::raw_tar(&ferry_bundle::craft::many_images(n));
    std::fs::write(path, tar).unwrap();
}

/// Writes the bundle of `n` references at `path` in a child process: the
/// test `test` of this binary, run again, whose [`write_if_child`] writes
/// it.
pub fn write_in_child(test: &str, path: &Path, n: usize) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", test, "--nocapture"])
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

/// In the child of [`write_in_child`] (its variables set): writes the
/// bundle and returns true, and the test ends there. In the test itself:
/// false.
pub fn write_if_child() -> bool {
    let (Some(path), Ok(n)) = (std::env::var_os(BUNDLE_VAR), std::env::var(REFS_VAR)) else {
        return false;
    };
    write_bundle(&PathBuf::from(path), n.parse().unwrap());
    true
}

/// Options importing `bundle` into the store at `store_dir` (opened
/// fresh), as `ferry import --store` does.
pub fn store_import(bundle: PathBuf, store_dir: &Path) -> ImportOptions {
    let store = Arc::new(ferry_import::store::Store::open(store_dir).unwrap());
    ImportOptions {
        bundle,
        target: Some(Target {
            host: "store".into(),
            prefix: String::new(),
            plain_http: None,
        }),
        files: None,
        store: Some(store),
        store_dir: None,
        mapping: Mapping::default(),
        dry_run: false,
        jobs: 4,
        chunk_size: 16 << 20,
        key: None,
        referrers: true,
    }
}

/// The runtime the measured runs use (two workers, as on the CI machine).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
