//! A realistic, deterministic benchmark data set, written to disk as it is
//! generated (never whole layers in memory), for `cargo xtask bench`.
//!
//! [`Dataset::load_or_generate`] writes an OCI image layout (`oci-layout`,
//! `index.json` with `org.opencontainers.image.ref.name`, `blobs/sha256/…`)
//! plus `dataset.json` (the images, their manifests and blobs), and reuses it
//! on the next run when `dataset.json` is there with the same options.
//!
//! What it holds, for a scale of `S` GB (10⁹ bytes) of unique compressed
//! layer bytes:
//!
//! - three base layers (Debian-, Alpine- and distroless-like) and three
//!   runtime layers (Python, JRE, Node), each shared by several images;
//! - 20 single-platform OCI images of a Kubernetes platform
//!   (`bench/ingress-nginx-controller:1.0`, …) with one to three unique
//!   application layers of varied sizes;
//! - a multi-arch OCI index (`bench/calico-node:1.0`: linux/amd64,
//!   linux/arm64/v8, linux/s390x, each with its own layers);
//! - a Docker schema2 image (`bench/postgres:1.0`) and a Docker manifest list
//!   (`bench/redis:1.0`, amd64 and arm64/v8);
//! - a Trivy-DB-shaped artifact (`bench/trivy-db:2`: empty config,
//!   `artifactType`, one titled `db.tar.gz` layer);
//! - an image with 40 small layers (`bench/many-layers:1.0`).
//!
//! Layers are gzip'd tar streams (level 6, the default of `docker build`) of
//! real files, read from a sorted walk of a directory (default `/usr/lib`,
//! regular files up to 16 MiB each), followed by pseudo-random bytes from a
//! seeded ChaCha8 generator (incompressible). Every header is normalized
//! (mtime 0, uid/gid 0) so the same machine and options give the same bytes
//! on every run; another machine's `/usr/lib` gives other digests.
//!
//! [`Dataset::load_or_generate_many`] writes the other set of the scaling
//! curve, many small images (per-reference overhead): `small/app-<n>:1.0`,
//! each a 256 KiB base layer all share, an 8 KiB layer and a config of its
//! own (seeded random bytes, gzip'd tars with normalized headers).
//!
//! [`Dataset::populate_registry_storage`] lays the set out in the storage
//! tree of a `docker-registry` (CNCF distribution 2.x filesystem driver),
//! hard-linking the blobs, so a source registry serves gigabytes at once.
//!
//! Modules: this file (the options, the set's types and its load, generate
//! and populate operations), `plan.rs` (which layers, which images),
//! `real_files.rs`, `layers.rs` (writing one layer), `generate.rs` (the set
//! on disk) and `many.rs` (the many-small-images set).

mod generate;
mod layers;
mod many;
mod plan;
mod real_files;

use generate::*;
use layers::*;
use many::*;
use plan::*;
use real_files::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use ferry_bundle::digest::{Digest, Hasher};
use ferry_bundle::store_layout::{BlobDir, StagedBlob};
use flate2::{Compression, GzBuilder};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::fixtures::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_EMPTY,
    OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, TITLE_ANNOTATION, TRIVY_ARTIFACT_TYPE, TRIVY_DB_LAYER,
};

/// Bumped whenever the generator's output changes (part of the cache check).
pub const GENERATOR_VERSION: u32 = 1;

/// Files larger than this are left out of layers.
const MAX_REAL_FILE: u64 = 16 * 1024 * 1024;

/// What [`Dataset::load_or_generate`] builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetOptions {
    /// Unique compressed layer bytes, in GB (10⁹ bytes).
    pub scale_gb: f64,
    /// Seed of the pseudo-random bytes.
    pub seed: u64,
    /// The directory whose files fill the layers (sorted walk).
    pub real_root: PathBuf,
    /// Worker threads for generation (0: one per core).
    #[serde(skip)]
    pub threads: usize,
    /// `0`: the realistic set above. Otherwise the many-small-images set of
    /// [`Dataset::load_or_generate_many`]: this many single-platform images,
    /// each a shared base layer plus one small layer and config of its own
    /// (`scale_gb` is then ignored).
    #[serde(default)]
    pub small_images: usize,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            scale_gb: 2.0,
            seed: 0,
            real_root: PathBuf::from("/usr/lib"),
            threads: 0,
            small_images: 0,
        }
    }
}

/// A blob of the set (config or layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataBlob {
    /// sha256 of the bytes.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Whether this is a layer (not a config).
    pub layer: bool,
}

/// A manifest or index of the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataManifest {
    /// sha256 of the bytes.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
}

/// One tagged image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataImage {
    /// Repository path without a host (`bench/grafana`).
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// What the tag points at.
    pub top: DataManifest,
    /// The children of an index (empty otherwise).
    pub children: Vec<DataManifest>,
    /// Digests of the configs and layers this image references, each once.
    pub blobs: Vec<Digest>,
}

impl DataImage {
    /// `host/repository:tag`.
    pub fn reference(&self, host: &str) -> String {
        format!("{host}/{}:{}", self.repository, self.tag)
    }

    /// The top manifest followed by the children.
    pub fn manifests(&self) -> impl Iterator<Item = &DataManifest> {
        std::iter::once(&self.top).chain(self.children.iter())
    }
}

/// The generated set, on disk under [`Dataset::dir`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataset {
    /// Generator version and options it was built with.
    pub version: u32,
    /// The options.
    pub options: DatasetOptions,
    /// Where it lives (an OCI layout).
    #[serde(skip)]
    pub dir: PathBuf,
    /// The images, in a fixed order.
    pub images: Vec<DataImage>,
    /// Every config and layer blob, each digest once.
    pub blobs: Vec<DataBlob>,
}

impl Dataset {
    /// The set at `dir` if it was generated with `opts` (and this
    /// generator version) and all its blobs are there; otherwise generates it
    /// (removing whatever `dir` held). `progress` receives one line per step.
    pub fn load_or_generate(
        dir: &Path,
        opts: &DatasetOptions,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Dataset> {
        if let Some(set) = Dataset::load(dir)? {
            if set.version == GENERATOR_VERSION && same_options(&set.options, opts) {
                let complete = set.blobs.iter().all(|b| {
                    std::fs::metadata(set.blob_path(&b.digest)).is_ok_and(|m| m.len() == b.size)
                });
                if complete {
                    progress(&format!("data set: reusing {}", dir.display()));
                    return Ok(set);
                }
            }
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("failed to remove {}", dir.display()))?;
        }
        if opts.small_images > 0 {
            return generate_many(dir, opts, progress);
        }
        generate(dir, opts, progress)
    }

    /// The many-small-images set of `count` references (the per-reference
    /// overhead of the scaling curve): like [`Dataset::load_or_generate`]
    /// with [`DatasetOptions::small_images`] set to `count`.
    pub fn load_or_generate_many(
        dir: &Path,
        count: usize,
        seed: u64,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Dataset> {
        let opts = DatasetOptions {
            seed,
            small_images: count.max(1),
            ..DatasetOptions::default()
        };
        Dataset::load_or_generate(dir, &opts, progress)
    }

    /// Reads `dir/dataset.json`, if present.
    pub fn load(dir: &Path) -> Result<Option<Dataset>> {
        let path = dir.join("dataset.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        let Ok(mut set) = serde_json::from_slice::<Dataset>(&text) else {
            return Ok(None);
        };
        set.dir = dir.to_path_buf();
        Ok(Some(set))
    }

    /// `dir/blobs/sha256/<hex>` (blobs and manifests alike).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.layout_path())
    }

    /// Sum of the sizes of the unique layers.
    pub fn layer_bytes(&self) -> u64 {
        self.blobs.iter().filter(|b| b.layer).map(|b| b.size).sum()
    }

    /// Sum of the sizes of every unique blob (configs and layers).
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }

    /// Number of manifests and indexes (tops and children).
    pub fn manifest_count(&self) -> usize {
        self.images.iter().map(|i| 1 + i.children.len()).sum()
    }

    /// Writes the set into the storage tree of a `docker-registry` whose
    /// `storage.filesystem.rootdirectory` is `root` (blobs hard-linked from
    /// the set, copied where a link is not possible; repository links, tags).
    /// The registry may already run: the filesystem driver reads on demand.
    pub fn populate_registry_storage(&self, root: &Path) -> Result<()> {
        let v2 = root.join("docker/registry/v2");
        let mut placed = BTreeSet::new();
        let mut place = |d: &Digest| -> Result<()> {
            if !placed.insert(d.clone()) {
                return Ok(());
            }
            let hex = d.hex();
            let dir = v2.join("blobs/sha256").join(&hex[..2]).join(&hex);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
            let data = dir.join("data");
            if data.exists() {
                return Ok(());
            }
            let src = self.blob_path(d);
            if std::fs::hard_link(&src, &data).is_err() {
                std::fs::copy(&src, &data).with_context(|| {
                    format!("failed to copy {} to {}", src.display(), data.display())
                })?;
            }
            Ok(())
        };
        let link = |path: PathBuf, d: &Digest| -> Result<()> {
            std::fs::create_dir_all(&path)
                .with_context(|| format!("failed to create {}", path.display()))?;
            std::fs::write(path.join("link"), d.to_string())
                .with_context(|| format!("failed to write {}/link", path.display()))
        };
        for img in &self.images {
            let repo = v2.join("repositories").join(&img.repository);
            for b in &img.blobs {
                place(b)?;
                link(repo.join("_layers/sha256").join(b.hex()), b)?;
            }
            for m in img.manifests() {
                place(&m.digest)?;
                link(
                    repo.join("_manifests/revisions/sha256")
                        .join(m.digest.hex()),
                    &m.digest,
                )?;
            }
            let tag = repo.join("_manifests/tags").join(&img.tag);
            link(tag.join("current"), &img.top.digest)?;
            link(
                tag.join("index/sha256").join(img.top.digest.hex()),
                &img.top.digest,
            )?;
        }
        Ok(())
    }
}

fn same_options(a: &DatasetOptions, b: &DatasetOptions) -> bool {
    (a.scale_gb - b.scale_gb).abs() < 1e-9
        && a.seed == b.seed
        && a.real_root == b.real_root
        && a.small_images == b.small_images
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_set_is_deterministic_and_complete() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        let mut x: u64 = 1;
        for i in 0..50 {
            let text: String = (0..2000 + i * 37)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    format!("{:x}\n", x >> 40)
                })
                .collect();
            std::fs::write(src.join("a/b").join(format!("f{i:02}")), text).unwrap();
        }
        let opts = DatasetOptions {
            scale_gb: 0.002,
            seed: 7,
            real_root: src.clone(),
            threads: 2,
            small_images: 0,
        };
        let one = Dataset::load_or_generate(&root.path().join("one"), &opts, &|_| {}).unwrap();
        let two = Dataset::load_or_generate(&root.path().join("two"), &opts, &|_| {}).unwrap();
        assert_eq!(one.images, two.images);
        assert_eq!(one.blobs, two.blobs);
        assert!(one.images.len() >= 24, "{} images", one.images.len());
        for b in &one.blobs {
            let bytes = std::fs::read(one.blob_path(&b.digest)).unwrap();
            assert_eq!(Digest::of(&bytes), b.digest);
            assert_eq!(bytes.len() as u64, b.size);
        }
        for m in one.images.iter().flat_map(|i| i.manifests()) {
            let bytes = std::fs::read(one.blob_path(&m.digest)).unwrap();
            assert_eq!(Digest::of(&bytes), m.digest);
        }
        // Reused, not regenerated.
        let again = Dataset::load_or_generate(&root.path().join("one"), &opts, &|_| {}).unwrap();
        assert_eq!(again.blobs, one.blobs);
    }

    #[test]
    fn the_many_small_images_set_is_deterministic_and_complete() {
        let root = tempfile::tempdir().unwrap();
        let one = Dataset::load_or_generate_many(&root.path().join("one"), 5, 3, &|_| {}).unwrap();
        let two = Dataset::load_or_generate_many(&root.path().join("two"), 5, 3, &|_| {}).unwrap();
        assert_eq!(one.images, two.images);
        assert_eq!(one.images.len(), 5);
        // The shared base layer, then a layer and a config per image.
        assert_eq!(one.blobs.len(), 1 + 5 * 2);
        for img in &one.images {
            assert_eq!(img.blobs.len(), 3, "{}", img.repository);
            let bytes = std::fs::read(one.blob_path(&img.top.digest)).unwrap();
            assert_eq!(Digest::of(&bytes), img.top.digest);
        }
        for b in &one.blobs {
            let bytes = std::fs::read(one.blob_path(&b.digest)).unwrap();
            assert_eq!(Digest::of(&bytes), b.digest);
            assert_eq!(bytes.len() as u64, b.size);
        }
        // Another count is another set; the same count is reused.
        let other =
            Dataset::load_or_generate_many(&root.path().join("one"), 6, 3, &|_| {}).unwrap();
        assert_eq!(other.images.len(), 6);
    }
}
