//! The store's layout on disk, the one definition that `ferry import
//! --store` writes, `ferry serve` reads and the tests build:
//!
//! ```text
//! DIR/oci-layout         {"imageLayoutVersion":"1.0.0"}
//! DIR/index.json         one descriptor per (repository, tag), and per item kept by digest only
//! DIR/blobs/sha256/<hex> every manifest, index, config and layer, once
//! DIR/files/...          the file tree (falco/, helm/, opensearch/, files/)
//! DIR/.ferry-lock        the importers' exclusive lock
//! ```
//!
//! and the annotation keys of `index.json` entries: where the entry is
//! served (`dev.ferry.repository`, `dev.ferry.tag`, the OCI and containerd
//! names) and which bundle item it came from (`dev.ferry.source`,
//! `dev.ferry.kind`, `dev.ferry.path`; a file item's entry has no
//! repository: `ferry serve` serves it from the file tree only).
//! [`BlobDir`] is the blob directory alone, which the export cache shares,
//! with the one verified write into it (defined in [`crate::blob_dir`],
//! re-exported here).

use std::path::{Path, PathBuf};

pub use crate::blob_dir::{BlobDir, BlobDirError, StagedBlob, BLOB_TMP_PREFIX};
use crate::digest::Digest;

/// The `oci-layout` file's name.
pub const OCI_LAYOUT: &str = "oci-layout";
/// The `oci-layout` file's exact content.
pub const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// The index file's name.
pub const INDEX_JSON: &str = "index.json";
/// The directory of the file tree.
pub const FILES_DIR: &str = "files";
/// The lock file importers hold while they change the store.
pub const LOCK_FILE: &str = ".ferry-lock";

/// Annotation: the repository an index.json entry belongs to.
pub const ANN_REPOSITORY: &str = "dev.ferry.repository";
/// Annotation: the tag of an index.json entry (absent when kept by digest).
pub const ANN_TAG: &str = "dev.ferry.tag";
/// Annotation: the OCI reference name (`repository:tag`), for other OCI tools.
pub const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation: containerd's image name (`ctr import` reads it).
pub const ANN_IMAGE_NAME: &str = "io.containerd.image.name";
/// Annotation: the upstream (source) reference of the bundle item an entry
/// was committed for (a file item's: its URL); re-export names the item by
/// it. The same key as a bundle's `index.json` ([`crate::meta::ANN_SOURCE`]).
pub const ANN_SOURCE: &str = crate::meta::ANN_SOURCE;
/// Annotation: that item's kind (`image`, `chart`, `file`, …,
/// [`crate::meta::Kind::as_str`]).
pub const ANN_KIND: &str = crate::meta::ANN_KIND;
/// Annotation: that item's path on the file server (`dev.ferry.path`), for
/// the items that have one; its files are under `DIR/files/<path>`.
pub const ANN_PATH: &str = crate::meta::ANN_PATH;

/// The paths of one store directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLayout {
    dir: PathBuf,
}

impl StoreLayout {
    /// The layout of the store at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> StoreLayout {
        StoreLayout { dir: dir.into() }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/oci-layout`.
    pub fn oci_layout(&self) -> PathBuf {
        self.dir.join(OCI_LAYOUT)
    }

    /// `DIR/index.json`.
    pub fn index_json(&self) -> PathBuf {
        self.dir.join(INDEX_JSON)
    }

    /// `DIR/files`.
    pub fn files(&self) -> PathBuf {
        self.dir.join(FILES_DIR)
    }

    /// `DIR/.ferry-lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// `DIR/blobs/sha256`.
    pub fn blobs(&self) -> PathBuf {
        BlobDir::under(&self.dir).dir().to_path_buf()
    }

    /// `DIR/blobs/sha256/<hex>`: where the blob `digest` lives.
    pub fn blob(&self, digest: &Digest) -> PathBuf {
        BlobDir::under(&self.dir).path(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_documented_layout() {
        let l = StoreLayout::new("/s");
        let d = Digest::of(b"x");
        assert_eq!(l.oci_layout(), Path::new("/s/oci-layout"));
        assert_eq!(l.index_json(), Path::new("/s/index.json"));
        assert_eq!(l.files(), Path::new("/s/files"));
        assert_eq!(l.lock_file(), Path::new("/s/.ferry-lock"));
        assert_eq!(l.blobs(), Path::new("/s/blobs/sha256"));
        assert_eq!(l.blob(&d), Path::new("/s/blobs/sha256").join(d.hex()));
        let cache = BlobDir::under(Path::new("/c"));
        assert_eq!(cache.dir(), Path::new("/c/blobs/sha256"));
        assert_eq!(cache.path(&d), Path::new("/c/blobs/sha256").join(d.hex()));
        assert_eq!(OCI_LAYOUT_CONTENT, br#"{"imageLayoutVersion":"1.0.0"}"#);
    }
}
