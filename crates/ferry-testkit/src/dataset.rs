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

// ---------------------------------------------------------------------------
// The plan: which layers, which images

/// One layer to generate.
#[derive(Debug, Clone)]
struct LayerPlan {
    name: String,
    /// Target compressed bytes from real files.
    real: u64,
    /// Pseudo-random (incompressible) bytes.
    random: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Oci,
    Docker,
}

/// One manifest to write: a platform and its layers (indexes into the layer list).
#[derive(Debug, Clone)]
struct ManifestPlan {
    platform: &'static str,
    layers: Vec<usize>,
}

#[derive(Debug, Clone)]
enum ImagePlan {
    Single {
        repo: String,
        tag: String,
        kind: Kind,
        m: ManifestPlan,
    },
    Index {
        repo: String,
        tag: String,
        kind: Kind,
        children: Vec<ManifestPlan>,
    },
    Trivy {
        repo: String,
        tag: String,
        layer: usize,
    },
}

struct Planner {
    total: f64,
    layers: Vec<LayerPlan>,
}

impl Planner {
    /// A layer of `fraction` of the total, `random` of it incompressible.
    fn layer(&mut self, name: &str, fraction: f64, random: f64) -> usize {
        let size = (self.total * fraction).max(4096.0);
        self.layers.push(LayerPlan {
            name: name.to_string(),
            real: (size * (1.0 - random)) as u64,
            random: (size * random) as u64,
        });
        self.layers.len() - 1
    }
}

/// The images of a Kubernetes platform: (repository, base, runtime, app
/// layers as (fraction weight, random share)).
/// An application image: (name, base, runtime, app layers as (weight, random share)).
type App = (&'static str, usize, Option<usize>, &'static [(f64, f64)]);

const APPS: &[App] = &[
    (
        "ingress-nginx-controller",
        1,
        None,
        &[(3.0, 0.2), (1.0, 0.1)],
    ),
    ("cert-manager-controller", 2, None, &[(1.5, 0.3)]),
    ("cert-manager-webhook", 2, None, &[(1.0, 0.3)]),
    ("cert-manager-cainjector", 2, None, &[(1.0, 0.3)]),
    ("prometheus", 2, None, &[(4.0, 0.3), (1.0, 0.5)]),
    ("alertmanager", 2, None, &[(2.0, 0.3)]),
    ("node-exporter", 2, None, &[(1.0, 0.3)]),
    ("kube-state-metrics", 2, None, &[(1.0, 0.3)]),
    ("grafana", 0, Some(2), &[(5.0, 0.2), (3.0, 0.6), (0.5, 0.1)]),
    ("opensearch", 0, Some(1), &[(9.0, 0.3), (3.0, 0.2)]),
    ("opensearch-dashboards", 0, Some(2), &[(6.0, 0.3)]),
    ("fluent-bit", 0, None, &[(1.5, 0.2)]),
    ("falco", 0, None, &[(4.0, 0.2), (1.0, 0.5)]),
    ("trivy-operator", 2, None, &[(2.0, 0.3)]),
    ("velero", 2, None, &[(2.5, 0.3)]),
    ("thanos", 2, None, &[(3.0, 0.3)]),
    ("harbor-core", 0, Some(0), &[(2.0, 0.2)]),
    ("dex", 1, None, &[(1.5, 0.3)]),
    ("gatekeeper", 2, None, &[(2.0, 0.3)]),
    ("metrics-server", 2, None, &[(1.0, 0.3)]),
];

fn plan(scale_gb: f64) -> (Vec<LayerPlan>, Vec<ImagePlan>) {
    let mut p = Planner {
        total: scale_gb * 1e9,
        layers: Vec::new(),
    };
    let bases = [
        p.layer("base-debian", 0.04, 0.1),
        p.layer("base-alpine", 0.01, 0.1),
        p.layer("base-distroless", 0.015, 0.1),
    ];
    let runtimes = [
        p.layer("runtime-python", 0.04, 0.1),
        p.layer("runtime-jre", 0.06, 0.2),
        p.layer("runtime-node", 0.03, 0.1),
    ];
    let trivy = p.layer("trivy-db", 0.03, 0.9);
    let many: Vec<usize> = (0..40)
        .map(|i| p.layer(&format!("many-{i:02}"), 0.01 / 40.0, 0.3))
        .collect();
    // What remains goes to the application layers, by weight.
    let fixed = 0.04 + 0.01 + 0.015 + 0.04 + 0.06 + 0.03 + 0.03 + 0.01;
    let multi_weights = [(3.0, 0.3), (3.0, 0.3), (2.0, 0.3)];
    let docker_weights = [(3.0, 0.2), (1.0, 0.2)];
    let list_weights = [(1.5, 0.3), (1.5, 0.3)];
    let weight: f64 = APPS
        .iter()
        .flat_map(|(_, _, _, l)| l.iter().map(|(w, _)| w))
        .chain(multi_weights.iter().map(|(w, _)| w))
        .chain(docker_weights.iter().map(|(w, _)| w))
        .chain(list_weights.iter().map(|(w, _)| w))
        .sum();
    let per = (1.0 - fixed) / weight;
    let mut images = Vec::new();
    for (name, base, runtime, apps) in APPS {
        let mut layers = vec![bases[*base]];
        layers.extend(runtime.map(|r| runtimes[r]));
        for (i, (w, r)) in apps.iter().enumerate() {
            layers.push(p.layer(&format!("{name}-{i}"), w * per, *r));
        }
        images.push(ImagePlan::Single {
            repo: format!("bench/{name}"),
            tag: "1.0".into(),
            kind: Kind::Oci,
            m: ManifestPlan {
                platform: "linux/amd64",
                layers,
            },
        });
    }
    let platforms = ["linux/amd64", "linux/arm64/v8", "linux/s390x"];
    let children = platforms
        .iter()
        .zip(multi_weights)
        .map(|(platform, (w, r))| {
            let arch = platform.replace('/', "-");
            ManifestPlan {
                platform,
                layers: vec![
                    bases[0],
                    p.layer(&format!("calico-node-{arch}"), w * per, r),
                ],
            }
        })
        .collect();
    images.push(ImagePlan::Index {
        repo: "bench/calico-node".into(),
        tag: "1.0".into(),
        kind: Kind::Oci,
        children,
    });
    let mut layers = vec![bases[0]];
    for (i, (w, r)) in docker_weights.iter().enumerate() {
        layers.push(p.layer(&format!("postgres-{i}"), w * per, *r));
    }
    images.push(ImagePlan::Single {
        repo: "bench/postgres".into(),
        tag: "1.0".into(),
        kind: Kind::Docker,
        m: ManifestPlan {
            platform: "linux/amd64",
            layers,
        },
    });
    let children = ["linux/amd64", "linux/arm64/v8"]
        .iter()
        .zip(list_weights)
        .map(|(platform, (w, r))| {
            let arch = platform.replace('/', "-");
            ManifestPlan {
                platform,
                layers: vec![bases[0], p.layer(&format!("redis-{arch}"), w * per, r)],
            }
        })
        .collect();
    images.push(ImagePlan::Index {
        repo: "bench/redis".into(),
        tag: "1.0".into(),
        kind: Kind::Docker,
        children,
    });
    images.push(ImagePlan::Trivy {
        repo: "bench/trivy-db".into(),
        tag: "2".into(),
        layer: trivy,
    });
    images.push(ImagePlan::Single {
        repo: "bench/many-layers".into(),
        tag: "1.0".into(),
        kind: Kind::Oci,
        m: ManifestPlan {
            platform: "linux/amd64",
            layers: std::iter::once(bases[1]).chain(many).collect(),
        },
    });
    (p.layers, images)
}

// ---------------------------------------------------------------------------
// Real files

/// Regular files under a root, in sorted order: (absolute path, path in the
/// layer, size).
struct RealFiles {
    files: Vec<(PathBuf, String, u64)>,
}

impl RealFiles {
    /// A sorted walk of `root` (symlinks not followed, unreadable entries
    /// skipped), regular non-empty files up to [`MAX_REAL_FILE`], stopping
    /// after `cap` bytes.
    fn scan(root: &Path, cap: u64) -> Result<RealFiles> {
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

// ---------------------------------------------------------------------------
// Writing layers

/// Hashes what is written (the uncompressed tar, for the diff_id).
struct DiffIdWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> Write for DiffIdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct RandomReader {
    rng: ChaCha8Rng,
    remaining: u64,
}

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        self.rng.fill_bytes(&mut buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn seed_for(seed: u64, label: &str) -> [u8; 32] {
    let mut h = Hasher::new();
    h.update(b"ferry-testkit dataset\0");
    h.update(&seed.to_le_bytes());
    h.update(label.as_bytes());
    *h.finish().as_bytes()
}

fn header(size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    if dir {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
    } else {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
    }
    h
}

/// Appends an entry; long paths get a GNU long-name entry (deterministic).
fn append<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    dir: bool,
    data: R,
) -> Result<()> {
    let mut h = header(size, dir);
    tar.append_data(&mut h, path, data)
        .with_context(|| format!("failed to append {path}"))
}

/// A generated layer on disk.
struct LayerOut {
    digest: Digest,
    size: u64,
    diff_id: Digest,
}

/// Writes `plan` as a gzip'd tar through the blob directory's write (the
/// compressed bytes hashed and counted as they go), named by its digest.
fn write_layer(plan: &LayerPlan, real: &RealFiles, seed: u64, blobs: &Path) -> Result<LayerOut> {
    let staged = BlobDir::scratch(blobs).stage_new()?;
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(staged, Compression::new(6));
    let mut tar = tar::Builder::new(DiffIdWriter {
        inner: gz,
        hasher: Hasher::new(),
    });
    tar.mode(tar::HeaderMode::Deterministic);
    let marker = format!(
        "ferry bench layer {} (real {} B compressed, random {} B)\n",
        plan.name, plan.real, plan.random
    );
    append(&mut tar, "etc/", 0, true, io::empty())?;
    append(
        &mut tar,
        &format!("etc/ferry-bench-{}.txt", plan.name),
        marker.len() as u64,
        false,
        marker.as_bytes(),
    )?;
    // Real files from a start that depends on the layer's name, cyclically.
    let n = real.files.len();
    let start = {
        let s = seed_for(seed, &plan.name);
        u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]) as usize % n
    };
    let mut i = 0usize;
    let mut last_dir = String::new();
    let mut buf = Vec::new();
    while compressed(&tar) < plan.real {
        let (path, rel, _) = &real.files[(start + i) % n];
        let pass = (start + i) / n;
        i += 1;
        let rel = if pass > 0 {
            format!("pass{pass}/{rel}")
        } else {
            rel.clone()
        };
        buf.clear();
        let Ok(f) = File::open(path) else { continue };
        if f.take(MAX_REAL_FILE).read_to_end(&mut buf).is_err() {
            continue;
        }
        if let Some((dir, _)) = rel.rsplit_once('/') {
            if dir != last_dir {
                append(&mut tar, &format!("{dir}/"), 0, true, io::empty())?;
                last_dir = dir.to_string();
            }
        }
        append(&mut tar, &rel, buf.len() as u64, false, buf.as_slice())?;
        if i > n * 64 {
            bail!("the real files do not fill layer {}", plan.name);
        }
    }
    if plan.random > 0 {
        append(&mut tar, "usr/share/ferry-bench/", 0, true, io::empty())?;
        append(
            &mut tar,
            &format!("usr/share/ferry-bench/{}.bin", plan.name),
            plan.random,
            false,
            RandomReader {
                rng: ChaCha8Rng::from_seed(seed_for(seed, &format!("random {}", plan.name))),
                remaining: plan.random,
            },
        )?;
    }
    let dw = tar.into_inner()?;
    let diff_id = dw.hasher.finish();
    let (digest, size) = dw.inner.finish()?.commit()?;
    Ok(LayerOut {
        digest,
        size,
        diff_id,
    })
}

fn compressed(tar: &tar::Builder<DiffIdWriter<flate2::write::GzEncoder<StagedBlob>>>) -> u64 {
    tar.get_ref().inner.get_ref().written()
}

// ---------------------------------------------------------------------------
// Generation

fn to_json(v: &serde_json::Value) -> Vec<u8> {
    // serde_json's maps are sorted (no preserve_order): stable bytes.
    v.to_string().into_bytes()
}

struct Writer<'a> {
    blobs: &'a Path,
    all: BTreeMap<Digest, DataBlob>,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(Digest, u64)> {
        let d = BlobDir::scratch(self.blobs).put(bytes)?;
        Ok((d, bytes.len() as u64))
    }

    fn blob(&mut self, bytes: &[u8], layer: bool) -> Result<(Digest, u64)> {
        let (digest, size) = self.put(bytes)?;
        self.all.entry(digest.clone()).or_insert(DataBlob {
            digest: digest.clone(),
            size,
            layer,
        });
        Ok((digest, size))
    }

    fn layer(&mut self, l: &LayerOut) {
        self.all.entry(l.digest.clone()).or_insert(DataBlob {
            digest: l.digest.clone(),
            size: l.size,
            layer: true,
        });
    }

    /// A config + manifest; returns the manifest and the blobs it references.
    fn manifest(
        &mut self,
        name: &str,
        kind: Kind,
        m: &ManifestPlan,
        layers: &[LayerOut],
    ) -> Result<(DataManifest, Vec<Digest>)> {
        let (mt, ct, lt) = match kind {
            Kind::Oci => (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP),
            Kind::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP),
        };
        let mut parts = m.platform.split('/');
        let os = parts.next().unwrap_or("linux");
        let arch = parts.next().unwrap_or("amd64");
        let variant = parts.next();
        let mut config = json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": arch,
            "os": os,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": [format!("/usr/bin/{name}")],
                "Labels": {"org.opencontainers.image.title": name},
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": m.layers.iter().map(|&i| layers[i].diff_id.to_string()).collect::<Vec<_>>(),
            },
            "history": m.layers.iter().enumerate().map(|(i, _)| json!({
                "created": "1970-01-01T00:00:00Z",
                "created_by": format!("ferry bench: {name} layer {i}"),
            })).collect::<Vec<_>>(),
        });
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        let (cd, cs) = self.blob(&to_json(&config), false)?;
        let mut refs = vec![cd.clone()];
        let mut descs = Vec::new();
        for &i in &m.layers {
            let l = &layers[i];
            self.layer(l);
            if !refs.contains(&l.digest) {
                refs.push(l.digest.clone());
            }
            descs.push(json!({"mediaType": lt, "digest": l.digest.to_string(), "size": l.size}));
        }
        let doc = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": ct, "digest": cd.to_string(), "size": cs},
            "layers": descs,
        });
        let (d, size) = self.put(&to_json(&doc))?;
        Ok((
            DataManifest {
                digest: d,
                media_type: mt.to_string(),
                size,
            },
            refs,
        ))
    }
}

// Long on purpose: the data set's images built in a fixed order from one
// seeded stream, so the bytes are reproducible; each block is one image.
fn generate(
    dir: &Path,
    opts: &DatasetOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Dataset> {
    if opts.scale_gb.is_nan() || opts.scale_gb <= 0.0 {
        bail!("the scale must be positive (got {})", opts.scale_gb);
    }
    let blobs_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir)
        .with_context(|| format!("failed to create {}", blobs_dir.display()))?;
    let (layer_plans, image_plans) = plan(opts.scale_gb);
    // Enough real files that layers rarely repeat them (capped: gzip level 6
    // compresses /usr/lib to about 40 %).
    let want: u64 = layer_plans.iter().map(|l| l.real).sum::<u64>() * 3;
    let real = RealFiles::scan(&opts.real_root, want.min(3 << 30))?;
    progress(&format!(
        "data set: {} layers, {:.2} GB, from {} files of {} and seeded random bytes ({})",
        layer_plans.len(),
        opts.scale_gb,
        real.files.len(),
        opts.real_root.display(),
        dir.display()
    ));
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    // Largest first, so that the threads finish together.
    let mut order: Vec<usize> = (0..layer_plans.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(layer_plans[i].real + layer_plans[i].random));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<LayerOut>>>> =
        Mutex::new((0..layer_plans.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (next, done, results, order, layer_plans, real) =
                (&next, &done, &results, &order, &layer_plans, &real);
            let blobs_dir = &blobs_dir;
            s.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some(&i) = order.get(k) else { break };
                let r = write_layer(&layer_plans[i], real, opts.seed, blobs_dir);
                let failed = r.is_err();
                if let Ok(mut g) = results.lock() {
                    g[i] = Some(r);
                }
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                if n % 10 == 0 || n == layer_plans.len() {
                    progress(&format!("data set: {n}/{} layers", layer_plans.len()));
                }
                if failed {
                    // Stop handing out work.
                    next.store(usize::MAX / 2, Ordering::SeqCst);
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a generator thread panicked"))?;
    // The first failure, rather than the layers it left undone.
    let mut results = results;
    if let Some(i) = results.iter().position(|r| matches!(r, Some(Err(_)))) {
        if let Some(Some(Err(e))) = results.get_mut(i).map(Option::take) {
            return Err(e.context(format!("failed to generate layer {}", layer_plans[i].name)));
        }
    }
    let mut layers = Vec::with_capacity(results.len());
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(r) => layers.push(
                r.with_context(|| format!("failed to generate layer {}", layer_plans[i].name))?,
            ),
            None => bail!("layer {} was not generated", layer_plans[i].name),
        }
    }

    let mut w = Writer {
        blobs: &blobs_dir,
        all: BTreeMap::new(),
    };
    let mut images = Vec::new();
    for ip in &image_plans {
        match ip {
            ImagePlan::Single { repo, tag, kind, m } => {
                let name = repo.rsplit('/').next().unwrap_or(repo);
                let (top, blobs) = w.manifest(name, *kind, m, &layers)?;
                images.push(DataImage {
                    repository: repo.clone(),
                    tag: tag.clone(),
                    top,
                    children: Vec::new(),
                    blobs,
                });
            }
            ImagePlan::Index {
                repo,
                tag,
                kind,
                children,
            } => {
                let name = repo.rsplit('/').next().unwrap_or(repo);
                let mut kids = Vec::new();
                let mut all_blobs: Vec<Digest> = Vec::new();
                let mut descs = Vec::new();
                for c in children {
                    let (m, blobs) = w.manifest(
                        &format!("{name}-{}", c.platform.replace('/', "-")),
                        *kind,
                        c,
                        &layers,
                    )?;
                    for b in blobs {
                        if !all_blobs.contains(&b) {
                            all_blobs.push(b);
                        }
                    }
                    let mut parts = c.platform.split('/');
                    let mut platform = json!({
                        "os": parts.next().unwrap_or("linux"),
                        "architecture": parts.next().unwrap_or("amd64"),
                    });
                    if let Some(v) = parts.next() {
                        platform["variant"] = json!(v);
                    }
                    descs.push(json!({
                        "mediaType": m.media_type,
                        "digest": m.digest.to_string(),
                        "size": m.size,
                        "platform": platform,
                    }));
                    kids.push(m);
                }
                let mt = match kind {
                    Kind::Oci => OCI_INDEX,
                    Kind::Docker => DOCKER_LIST,
                };
                let doc = json!({"schemaVersion": 2, "mediaType": mt, "manifests": descs});
                let (d, size) = w.put(&to_json(&doc))?;
                images.push(DataImage {
                    repository: repo.clone(),
                    tag: tag.clone(),
                    top: DataManifest {
                        digest: d,
                        media_type: mt.to_string(),
                        size,
                    },
                    children: kids,
                    blobs: all_blobs,
                });
            }
            ImagePlan::Trivy { repo, tag, layer } => {
                let (ed, es) = w.blob(b"{}", false)?;
                let l = &layers[*layer];
                w.layer(l);
                let doc = json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "artifactType": TRIVY_ARTIFACT_TYPE,
                    "config": {"mediaType": OCI_EMPTY, "digest": ed.to_string(), "size": es},
                    "layers": [{
                        "mediaType": TRIVY_DB_LAYER,
                        "digest": l.digest.to_string(),
                        "size": l.size,
                        "annotations": {TITLE_ANNOTATION: "db.tar.gz"},
                    }],
                    "annotations": {"org.opencontainers.image.created": "1970-01-01T00:00:00Z"},
                });
                let (d, size) = w.put(&to_json(&doc))?;
                images.push(DataImage {
                    repository: repo.clone(),
                    tag: tag.clone(),
                    top: DataManifest {
                        digest: d,
                        media_type: OCI_MANIFEST.to_string(),
                        size,
                    },
                    children: Vec::new(),
                    blobs: vec![ed, l.digest.clone()],
                });
            }
        }
    }
    finish_set(dir, opts, images, w.all, progress)
}

/// Writes the layout's `index.json`, `oci-layout` and, last, `dataset.json`.
fn finish_set(
    dir: &Path,
    opts: &DatasetOptions,
    images: Vec<DataImage>,
    all: BTreeMap<Digest, DataBlob>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Dataset> {
    let set = Dataset {
        version: GENERATOR_VERSION,
        options: opts.clone(),
        dir: dir.to_path_buf(),
        images,
        blobs: all.into_values().collect(),
    };
    // The OCI layout's index (skopeo can read the set as `oci:DIR:REF`).
    let manifests: Vec<serde_json::Value> = set
        .images
        .iter()
        .map(|i| {
            json!({
                "mediaType": i.top.media_type,
                "digest": i.top.digest.to_string(),
                "size": i.top.size,
                "annotations": {"org.opencontainers.image.ref.name": format!("{}:{}", i.repository, i.tag)},
            })
        })
        .collect();
    std::fs::write(
        dir.join("index.json"),
        to_json(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})),
    )?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    // Written last: its presence means the set is complete.
    std::fs::write(dir.join("dataset.json"), serde_json::to_vec_pretty(&set)?)?;
    progress(&format!(
        "data set: {} images, {} blobs, {} layer bytes",
        set.images.len(),
        set.blobs.len(),
        set.layer_bytes()
    ));
    Ok(set)
}

// ---------------------------------------------------------------------------
// The many-small-images set

/// Bytes of the base layer every small image shares (seeded random, stored).
const SMALL_BASE: usize = 256 << 10;
/// Bytes of each small image's own file.
const SMALL_OWN: usize = 8 << 10;

/// A gzip'd tar (level 6, mtime 0) of one file: (blob bytes, diff_id).
fn small_layer(path: &str, content: &[u8]) -> Result<(Vec<u8>, Digest)> {
    let mut tar_bytes = Vec::new();
    {
        let mut tar = tar::Builder::new(&mut tar_bytes);
        append(&mut tar, path, content.len() as u64, false, content)?;
        tar.finish().context("failed to finish a small layer")?;
    }
    let diff_id = Digest::of(&tar_bytes);
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::new(6));
    gz.write_all(&tar_bytes)?;
    Ok((gz.finish()?, diff_id))
}

fn seeded(seed: u64, label: &str, len: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::from_seed(seed_for(seed, label));
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Writes `opts.small_images` images `small/app-<n>:1.0`, each the shared
/// base layer, a small layer of its own and its config.
fn generate_many(
    dir: &Path,
    opts: &DatasetOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Dataset> {
    let blobs_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir)
        .with_context(|| format!("failed to create {}", blobs_dir.display()))?;
    let mut w = Writer {
        blobs: &blobs_dir,
        all: BTreeMap::new(),
    };
    let (base, base_diff) = small_layer("base/data", &seeded(opts.seed, "small-base", SMALL_BASE))?;
    let (bd, bs) = w.blob(&base, true)?;
    let base = LayerOut {
        digest: bd,
        size: bs,
        diff_id: base_diff,
    };
    let mut images = Vec::with_capacity(opts.small_images);
    for n in 0..opts.small_images {
        let name = format!("app-{n:05}");
        let (own, own_diff) =
            small_layer(&format!("app/{name}"), &seeded(opts.seed, &name, SMALL_OWN))?;
        let (od, os) = w.blob(&own, true)?;
        let layers = [
            LayerOut {
                digest: base.digest.clone(),
                size: base.size,
                diff_id: base.diff_id.clone(),
            },
            LayerOut {
                digest: od,
                size: os,
                diff_id: own_diff,
            },
        ];
        let plan = ManifestPlan {
            platform: "linux/amd64",
            layers: vec![0, 1],
        };
        let (top, blobs) = w.manifest(&name, Kind::Oci, &plan, &layers)?;
        images.push(DataImage {
            repository: format!("small/{name}"),
            tag: "1.0".into(),
            top,
            children: Vec::new(),
            blobs,
        });
        if (n + 1) % 1000 == 0 {
            progress(&format!(
                "data set: {}/{} small images",
                n + 1,
                opts.small_images
            ));
        }
    }
    finish_set(dir, opts, images, w.all, progress)
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
