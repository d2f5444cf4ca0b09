//! Preflight: the plan of an export, counted before any blob is
//! downloaded, and the room it needs. What will be fetched and from where,
//! the bytes to download and to write, what the cache already holds and
//! what `--since` leaves out; then whether the output's filesystem and the
//! cache's have room (`statvfs`), refused with both numbers named.
//!
//! The bytes to write are the blobs' uncompressed size plus the head: an
//! upper bound for image layers, which are compressed already.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Headroom for the tar headers, `bundle.json`, `index.json` and the
/// checksum file, per blob and once.
const PER_BLOB_OVERHEAD: u64 = 1024;
const HEAD_OVERHEAD: u64 = 1 << 20;

/// One source the export fetches from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourcePlan {
    /// Blobs to download from it.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
}

pub use ferry_bundle::room::Room;
use ferry_bundle::room::{existing_dir, free};

/// The plan of an export (`--dry-run` prints it and `--plan-json` writes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preflight {
    /// The bundle to write.
    pub output: PathBuf,
    /// Items carried.
    pub items: usize,
    /// Distinct blobs in the bundle (manifests included).
    pub blobs: usize,
    /// Blobs to download.
    pub fetch_blobs: usize,
    /// Their bytes.
    pub fetch_bytes: u64,
    /// Per source (`host/repository`): what is downloaded from it.
    pub sources: BTreeMap<String, SourcePlan>,
    /// Blobs the cache already holds.
    pub cached_blobs: usize,
    /// Bytes written to the bundle (blobs, uncompressed).
    pub write_bytes: u64,
    /// Blobs left out because the destinations have them (`--since`).
    pub base_blobs: usize,
    /// Their bytes.
    pub base_bytes: u64,
    /// The filesystems written to.
    pub rooms: Vec<Room>,
}

impl Preflight {
    /// The filesystems without room for what the export writes there.
    pub fn short(&self) -> Vec<&Room> {
        self.rooms.iter().filter(|r| !r.fits()).collect()
    }
}

/// The rooms for `output_needed` bytes beside `output` and `cache_needed`
/// bytes in `cache` (one room when both are on one filesystem). A
/// filesystem that cannot be measured is left out (the write reports it).
pub(crate) fn rooms(
    output: &Path,
    output_needed: u64,
    cache: &Path,
    cache_needed: u64,
) -> Vec<Room> {
    let out_dir = existing_dir(output.parent().unwrap_or(Path::new(".")));
    let cache_dir = existing_dir(cache);
    let mut rooms = Vec::new();
    let out = free(&out_dir).ok();
    let cached = if cache_needed > 0 {
        free(&cache_dir).ok()
    } else {
        None
    };
    match (out, cached) {
        (Some((avail, a)), Some((_, b))) if a == b => rooms.push(Room {
            what: "output+cache".into(),
            path: out_dir,
            needed: output_needed + cache_needed,
            available: avail,
        }),
        (out, cached) => {
            if let Some((available, _)) = out {
                rooms.push(Room {
                    what: "output".into(),
                    path: out_dir,
                    needed: output_needed,
                    available,
                });
            }
            if let Some((available, _)) = cached {
                rooms.push(Room {
                    what: "cache".into(),
                    path: cache_dir,
                    needed: cache_needed,
                    available,
                });
            }
        }
    }
    rooms
}

/// Bytes a bundle of `blobs` blobs and `blob_bytes` bytes takes at most
/// (uncompressed; tar headers and the head included).
pub(crate) fn bundle_bytes(blobs: usize, blob_bytes: u64) -> u64 {
    blob_bytes + blobs as u64 * PER_BLOB_OVERHEAD + HEAD_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_cache_on_one_filesystem_are_one_room() {
        let d = tempfile::tempdir().unwrap();
        let r = rooms(
            &d.path().join("out.tar.zst"),
            10,
            &d.path().join("cache"),
            5,
        );
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].needed, 15);
        assert_eq!(r[0].what, "output+cache");
        assert!(r[0].available > 0 && r[0].fits());
    }

    #[test]
    fn a_missing_output_directory_is_measured_at_its_nearest_parent() {
        let d = tempfile::tempdir().unwrap();
        let r = rooms(&d.path().join("a/b/out.tar.zst"), u64::MAX / 2, d.path(), 0);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].path, d.path());
        assert!(!r[0].fits());
    }
}
