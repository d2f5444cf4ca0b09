//! Deterministic test images: exact manifest bytes and blobs, generated
//! without a container engine or a network, byte-identical on every run.
//!
//! [`FixtureSet::generate`] builds these images (repository:tag):
//!
//! | image | what it is |
//! |---|---|
//! | `fixtures/multiarch:1.0` | OCI index: linux/amd64, linux/arm64/v8, linux/s390x, sharing the base layer |
//! | `fixtures/docker-v2:1.0` | Docker schema2 manifest, Docker config and gzip layers |
//! | `fixtures/docker-list:1.0` | Docker manifest list with two schema2 children (amd64, arm64/v8) |
//! | `fixtures/many-layers:1.0` | OCI manifest with [`FixtureOptions::many_layers`] small layers |
//! | `fixtures/trivy-db:2` | OCI artifact shaped like the Trivy DB: empty config, `artifactType`, one titled layer |
//! | `fixtures/no-mediatype:1.0` | OCI manifest without a `mediaType` field |
//! | `fixtures/big:1.0` | only with [`FixtureOptions::big_layer_mib`]: one large layer, for chunked uploads |
//!
//! A base layer is shared by every image but the Trivy artifact, and a
//! runtime layer by the Docker images, so registries see cross-repository
//! blobs (mounts, HEAD skips).
//!
//! Layers are real gzip'd tar streams (entries sorted, mtime 0, uid/gid 0,
//! gzip header without mtime or file name) holding a few text files and
//! pseudo-random bytes from a seeded ChaCha8 generator. Configs are valid
//! image configs whose `rootfs.diff_ids` are the sha256 of the uncompressed
//! tars. Manifests are compact JSON serialized from structs, so their bytes
//! do not depend on serde_json features.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use ferry_bundle::digest::{Digest, Hasher};
use ferry_registry::{Client, Repo};
use flate2::{Compression, GzBuilder};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip'd tar layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The OCI empty descriptor's media type (content `{}`).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The digest of the OCI empty JSON `{}`.
pub const OCI_EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// Docker schema2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip'd tar layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The Trivy DB artifact type.
pub const TRIVY_ARTIFACT_TYPE: &str = "application/vnd.aquasec.trivy.config.v1+json";
/// The Trivy DB layer media type.
pub const TRIVY_DB_LAYER: &str = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip";
/// The annotation that names a layer's file (`db.tar.gz` for the Trivy DB).
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

/// Blobs up to this size are pushed in one request by [`push`]; larger ones
/// are uploaded in [`PUSH_CHUNK`]-sized PATCH chunks.
pub const SINGLE_UPLOAD_MAX: u64 = 16 * 1024 * 1024;
/// The chunk size [`push`] uses for blobs above [`SINGLE_UPLOAD_MAX`].
pub const PUSH_CHUNK: usize = 8 * 1024 * 1024;

/// A config or layer blob.
#[derive(Clone, PartialEq, Eq)]
pub struct Blob {
    /// sha256 of `data`.
    pub digest: Digest,
    /// The media type the image's manifest gives it (a layer shared by an
    /// OCI and a Docker image keeps the type of its first user).
    pub media_type: String,
    /// The exact bytes.
    pub data: Bytes,
}

impl Blob {
    fn new(media_type: &str, data: impl Into<Bytes>) -> Blob {
        let data = data.into();
        Blob {
            digest: Digest::of(&data),
            media_type: media_type.to_string(),
            data,
        }
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("digest", &self.digest)
            .field("media_type", &self.media_type)
            .field("size", &self.data.len())
            .finish()
    }
}

/// A manifest or index with its exact bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct FixtureManifest {
    /// sha256 of `bytes`.
    pub digest: Digest,
    /// The media type to send as `Content-Type` on PUT (also for the
    /// manifest without a `mediaType` field, where it is the OCI manifest type).
    pub media_type: String,
    /// The exact JSON bytes.
    pub bytes: Bytes,
    /// For a child of an index: `os/architecture[/variant]`, e.g. `linux/arm64/v8`.
    pub platform: Option<String>,
}

impl FixtureManifest {
    fn new(media_type: &str, bytes: Vec<u8>, platform: Option<String>) -> FixtureManifest {
        FixtureManifest {
            digest: Digest::of(&bytes),
            media_type: media_type.to_string(),
            bytes: Bytes::from(bytes),
            platform,
        }
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether this is an index or a manifest list.
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }

    /// The document parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes).expect("fixture manifests are JSON")
    }
}

impl std::fmt::Debug for FixtureManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixtureManifest")
            .field("digest", &self.digest)
            .field("media_type", &self.media_type)
            .field("size", &self.bytes.len())
            .field("platform", &self.platform)
            .finish()
    }
}

/// One tagged image: the manifest or index the tag points at, the children
/// of an index, and every blob they reference.
#[derive(Debug, Clone)]
pub struct FixtureImage {
    /// Repository path without a host, e.g. `fixtures/multiarch`.
    pub repository: String,
    /// The tag, e.g. `1.0`.
    pub tag: String,
    /// What the tag points at: an index / manifest list, or a manifest.
    pub top: FixtureManifest,
    /// The child manifests of an index, in the index's order (empty otherwise).
    pub children: Vec<FixtureManifest>,
    /// Configs and layers referenced by `top` and `children`, each once.
    pub blobs: Vec<Blob>,
}

impl FixtureImage {
    /// `host/repository:tag`.
    pub fn reference(&self, host: &str) -> String {
        format!("{host}/{}:{}", self.repository, self.tag)
    }

    /// `host/repository@digest` for one of this image's manifests.
    pub fn digest_reference(&self, host: &str, digest: &Digest) -> String {
        format!("{host}/{}@{digest}", self.repository)
    }

    /// The top manifest followed by the children.
    pub fn manifests(&self) -> impl Iterator<Item = &FixtureManifest> {
        std::iter::once(&self.top).chain(self.children.iter())
    }

    /// The child for `platform` (`linux/arm64/v8`), if any.
    pub fn child(&self, platform: &str) -> Option<&FixtureManifest> {
        self.children
            .iter()
            .find(|c| c.platform.as_deref() == Some(platform))
    }

    /// The blob with `digest`, if this image references it.
    pub fn blob(&self, digest: &Digest) -> Option<&Blob> {
        self.blobs.iter().find(|b| &b.digest == digest)
    }

    /// Sum of the sizes of this image's blobs.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(Blob::size).sum()
    }
}

/// What [`FixtureSet::generate`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureOptions {
    /// Add `fixtures/big:1.0`, whose large layer holds this many MiB of
    /// pseudo-random bytes (use at least 64 to exercise chunked uploads).
    /// `None` (the default) leaves it out, for speed.
    pub big_layer_mib: Option<u64>,
    /// How many such large layers `fixtures/big:1.0` has (default 1; each
    /// holds other bytes), for uploads that run side by side.
    pub big_layers: usize,
    /// Number of layers of `fixtures/many-layers:1.0` (default 40, at least 1).
    pub many_layers: usize,
    /// Seed of every pseudo-random byte: another seed gives other digests
    /// (default 0).
    pub seed: u64,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        FixtureOptions {
            big_layer_mib: None,
            big_layers: 1,
            many_layers: 40,
            seed: 0,
        }
    }
}

/// The generated images.
#[derive(Debug, Clone)]
pub struct FixtureSet {
    /// The images, in a fixed order (see the module documentation).
    pub images: Vec<FixtureImage>,
}

impl FixtureSet {
    /// Generates the set. The same options give the same bytes on every run.
    pub fn generate(opts: &FixtureOptions) -> FixtureSet {
        Generator::new(opts.seed).build(opts)
    }

    /// The image of `repository` (`fixtures/multiarch`).
    ///
    /// # Panics
    /// When the set has no such image (a test bug), listing those it has.
    pub fn image(&self, repository: &str) -> &FixtureImage {
        self.get(repository).unwrap_or_else(|| {
            panic!(
                "no fixture image `{repository}`; the set has: {}",
                self.images
                    .iter()
                    .map(|i| i.repository.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// The image of `repository`, if the set has it.
    pub fn get(&self, repository: &str) -> Option<&FixtureImage> {
        self.images.iter().find(|i| i.repository == repository)
    }

    /// Every blob of every image, each digest once (first occurrence).
    pub fn all_blobs(&self) -> impl Iterator<Item = &Blob> {
        let mut seen = HashSet::new();
        self.images
            .iter()
            .flat_map(|i| i.blobs.iter())
            .filter(move |b| seen.insert(b.digest.clone()))
    }

    /// Every manifest and index of every image (tops and children).
    pub fn all_manifests(&self) -> impl Iterator<Item = &FixtureManifest> {
        self.images.iter().flat_map(|i| i.manifests())
    }

    /// Sum of the sizes of [`FixtureSet::all_blobs`].
    pub fn total_blob_bytes(&self) -> u64 {
        self.all_blobs().map(Blob::size).sum()
    }

    /// `host/repository:tag` of every image, in order.
    pub fn references(&self, host: &str) -> Vec<String> {
        self.images.iter().map(|i| i.reference(host)).collect()
    }
}

/// The `images:` entries of a `bundle.yaml` for `set` as pushed to `host`:
/// one `  - host/repository:tag` line per image, each ending in a newline
/// (put `images:` before it).
pub fn write_spec_images(set: &FixtureSet, host: &str) -> String {
    set.images
        .iter()
        .map(|i| format!("  - {}\n", i.reference(host)))
        .collect()
}

/// Pushes every image of `set` to the registry `host` (`127.0.0.1:5000`):
/// for each image its blobs (skipping those a HEAD finds), then the children
/// by digest, then the top manifest by tag. Fails if the registry reports a
/// manifest digest other than the fixture's.
pub async fn push(set: &FixtureSet, client: &Client, host: &str) -> Result<()> {
    for image in &set.images {
        push_image(image, client, host).await?;
    }
    Ok(())
}

/// Pushes one image the way [`push`] does.
pub async fn push_image(image: &FixtureImage, client: &Client, host: &str) -> Result<()> {
    let repo = Repo {
        host: host.to_string(),
        path: image.repository.clone(),
    };
    let name = image.reference(host);
    for blob in &image.blobs {
        push_blob(client, &repo, blob)
            .await
            .with_context(|| format!("failed to push blob {} of {name}", blob.digest))?;
    }
    for m in image.manifests().skip(1).chain(std::iter::once(&image.top)) {
        let is_top = std::ptr::eq(m, &image.top);
        let reference = if is_top {
            image.tag.clone()
        } else {
            m.digest.to_string()
        };
        let got = client
            .put_manifest(&repo, &reference, &m.media_type, m.bytes.clone())
            .await
            .with_context(|| format!("failed to push manifest {} of {name}", m.digest))?;
        ensure!(
            got == m.digest,
            "the registry stored manifest {} of {name} under digest {got}",
            m.digest
        );
    }
    Ok(())
}

async fn push_blob(client: &Client, repo: &Repo, blob: &Blob) -> Result<()> {
    if client.head_blob(repo, &blob.digest).await?.is_some() {
        return Ok(());
    }
    if blob.size() <= SINGLE_UPLOAD_MAX {
        client
            .upload_blob(repo, &blob.digest, blob.data.clone())
            .await?;
        return Ok(());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let data = blob.data.clone();
    let feed = async move {
        let mut off = 0;
        while off < data.len() {
            let end = (off + PUSH_CHUNK).min(data.len());
            if tx.send(data.slice(off..end)).await.is_err() {
                break;
            }
            off = end;
        }
    };
    let upload = client.upload_blob_chunked(repo, &blob.digest, blob.size(), rx);
    let ((), res) = tokio::join!(feed, upload);
    res?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Document shapes (struct field order = key order in the bytes)

#[derive(Serialize, Clone)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

impl Platform {
    fn parse(s: &str) -> Platform {
        let mut it = s.split('/');
        let os = it.next().unwrap_or("linux").to_string();
        let architecture = it.next().unwrap_or("amd64").to_string();
        let variant = it.next().map(String::from);
        Platform {
            architecture,
            os,
            variant,
        }
    }
}

#[derive(Serialize, Clone)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

impl Descriptor {
    fn of_blob(b: &Blob, media_type: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: b.digest.to_string(),
            size: b.size(),
            platform: None,
            annotations: BTreeMap::new(),
        }
    }

    fn of_manifest(m: &FixtureManifest) -> Descriptor {
        Descriptor {
            media_type: m.media_type.clone(),
            digest: m.digest.to_string(),
            size: m.size(),
            platform: m.platform.as_deref().map(Platform::parse),
            annotations: BTreeMap::new(),
        }
    }
}

#[derive(Serialize)]
struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ImageIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: String,
    manifests: Vec<Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ImageConfig {
    created: String,
    architecture: String,
    os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    config: RunConfig,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    env: Vec<String>,
    cmd: Vec<String>,
    working_dir: String,
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History {
    created: String,
    created_by: String,
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("fixture documents serialize")
}

/// The fixed timestamp written into configs and annotations.
const EPOCH: &str = "1970-01-01T00:00:00Z";

// ---------------------------------------------------------------------------
// Layers

/// A generated layer: the gzip'd tar and the digest of the uncompressed tar.
#[derive(Clone)]
struct Layer {
    gz: Bytes,
    digest: Digest,
    diff_id: Digest,
}

/// The content of one tar entry.
enum Content {
    Bytes(Vec<u8>),
    /// `len` pseudo-random bytes from the generator seeded with `seed`.
    Random {
        seed: [u8; 32],
        len: u64,
    },
}

impl Content {
    fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Random { len, .. } => *len,
        }
    }
}

/// Pseudo-random bytes as a reader (so large files stream into the tar).
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

/// A writer that hashes what passes through (the uncompressed tar).
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Builds a deterministic gzip'd tar of `files` (paths relative, `/`
/// separated); parent directories get their own entries; entries sorted.
fn build_layer(files: Vec<(String, Content)>, level: Compression) -> Layer {
    let mut entries: BTreeMap<String, Option<Content>> = BTreeMap::new();
    let mut capacity = 0u64;
    for (path, content) in files {
        let mut parent = path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            entries.entry(format!("{dir}/")).or_insert(None);
            parent = dir;
        }
        capacity += content.len() + 1024;
        entries.insert(path, Some(content));
    }
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::with_capacity(capacity as usize + 4096), level);
    let mut tar = tar::Builder::new(HashingWriter {
        inner: gz,
        hasher: Hasher::new(),
    });
    for (path, content) in &entries {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).expect("fixture paths are short");
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match content {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_cksum();
                tar.append(&h, io::empty()).expect("writing to memory");
            }
            Some(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(c.len());
                h.set_cksum();
                match c {
                    Content::Bytes(b) => tar.append(&h, b.as_slice()),
                    Content::Random { seed, len } => tar.append(
                        &h,
                        RandomReader {
                            rng: ChaCha8Rng::from_seed(*seed),
                            remaining: *len,
                        },
                    ),
                }
                .expect("writing to memory");
            }
        }
    }
    let hw = tar.into_inner().expect("writing to memory");
    let diff_id = hw.hasher.finish();
    let gz = hw.inner.finish().expect("writing to memory");
    Layer {
        digest: Digest::of(&gz),
        gz: Bytes::from(gz),
        diff_id,
    }
}

// ---------------------------------------------------------------------------
// The generator

struct Generator {
    seed: u64,
}

/// Builds one image's manifest from its config and layers, collecting blobs.
struct ManifestParts<'a> {
    platform: &'a str,
    docker: bool,
    layers: Vec<&'a Layer>,
    labels: BTreeMap<String, String>,
    omit_media_type: bool,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator { seed }
    }

    /// A 32-byte seed for `label`, derived from the set's seed.
    fn seed_for(&self, label: &str) -> [u8; 32] {
        let mut h = Hasher::new();
        h.update(b"ferry-testkit fixtures\0");
        h.update(&self.seed.to_le_bytes());
        h.update(label.as_bytes());
        *h.finish().as_bytes()
    }

    /// A small layer with a text file, a JSON file and `random_kib` KiB of
    /// pseudo-random bytes, all named after `name`.
    fn small_layer(&self, name: &str, random_kib: u64) -> Layer {
        let text = format!("ferry fixture layer {name}\n").repeat(8);
        let meta = format!("{{\"layer\":\"{name}\",\"seed\":{}}}\n", self.seed);
        build_layer(
            vec![
                (
                    format!("etc/fixtures/{name}.txt"),
                    Content::Bytes(text.into_bytes()),
                ),
                (
                    format!("etc/fixtures/{name}.json"),
                    Content::Bytes(meta.into_bytes()),
                ),
                (
                    format!("usr/share/fixtures/{name}.bin"),
                    Content::Random {
                        seed: self.seed_for(name),
                        len: random_kib * 1024,
                    },
                ),
            ],
            Compression::new(6),
        )
    }

    /// A layer holding `mib` MiB of pseudo-random bytes, stored (gzip level 0)
    /// so that generating it costs little more than the random bytes.
    fn big_layer(&self, mib: u64, n: usize) -> Layer {
        // The first keeps the name (and bytes) it always had.
        let name = if n == 0 {
            "big".to_string()
        } else {
            format!("big-{n}")
        };
        build_layer(
            vec![
                (
                    format!("etc/fixtures/{name}.txt"),
                    Content::Bytes(format!("ferry fixture big layer, {mib} MiB\n").into_bytes()),
                ),
                (
                    format!("usr/share/fixtures/{name}.bin"),
                    Content::Random {
                        seed: self.seed_for(&name),
                        len: mib * 1024 * 1024,
                    },
                ),
            ],
            Compression::none(),
        )
    }

    /// The Trivy DB's `db.tar.gz`: `trivy.db` and `metadata.json`.
    fn trivy_layer(&self) -> Layer {
        let metadata = format!(
            "{{\"Version\":2,\"NextUpdate\":\"{EPOCH}\",\"UpdatedAt\":\"{EPOCH}\",\"DownloadedAt\":\"{EPOCH}\",\"Seed\":{}}}",
            self.seed
        );
        build_layer(
            vec![
                (
                    "metadata.json".to_string(),
                    Content::Bytes(metadata.into_bytes()),
                ),
                (
                    "trivy.db".to_string(),
                    Content::Random {
                        seed: self.seed_for("trivy.db"),
                        len: 96 * 1024,
                    },
                ),
            ],
            Compression::new(6),
        )
    }

    /// A config + manifest for `parts`; pushes the blobs (config first) into `blobs`.
    fn manifest(
        &self,
        name: &str,
        parts: ManifestParts<'_>,
        blobs: &mut Vec<Blob>,
    ) -> FixtureManifest {
        let platform = Platform::parse(parts.platform);
        let (manifest_type, config_type, layer_type) = if parts.docker {
            (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)
        } else {
            (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
        };
        let mut labels = parts.labels;
        labels.insert("org.opencontainers.image.title".into(), name.to_string());
        labels.insert("org.opencontainers.image.version".into(), "1.0".into());
        let config = ImageConfig {
            created: EPOCH.to_string(),
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            config: RunConfig {
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                    format!("FIXTURE={name}"),
                ],
                cmd: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("cat /etc/fixtures/{name}.txt"),
                ],
                working_dir: "/".into(),
                labels,
            },
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: parts.layers.iter().map(|l| l.diff_id.to_string()).collect(),
            },
            history: (0..parts.layers.len())
                .map(|i| History {
                    created: EPOCH.to_string(),
                    created_by: format!("ferry-testkit: {name} layer {i}"),
                })
                .collect(),
        };
        let config = Blob::new(config_type, to_json(&config));
        let layer_blobs: Vec<Blob> = parts
            .layers
            .iter()
            .map(|l| Blob {
                digest: l.digest.clone(),
                media_type: layer_type.to_string(),
                data: l.gz.clone(),
            })
            .collect();
        let doc = ImageManifest {
            schema_version: 2,
            media_type: (!parts.omit_media_type).then(|| manifest_type.to_string()),
            artifact_type: None,
            config: Descriptor::of_blob(&config, config_type),
            layers: layer_blobs
                .iter()
                .map(|b| Descriptor::of_blob(b, layer_type))
                .collect(),
            annotations: BTreeMap::new(),
        };
        add_blob(blobs, config);
        for b in layer_blobs {
            add_blob(blobs, b);
        }
        FixtureManifest::new(manifest_type, to_json(&doc), None)
    }

    // Long on purpose: the fixture set is a list of images built one after
    // another from shared layers; each block is one image.
    fn build(&self, opts: &FixtureOptions) -> FixtureSet {
        let base = self.small_layer("base", 32);
        let runtime = self.small_layer("runtime", 16);
        let mut images = Vec::new();

        // A multi-arch OCI index; the children share the base layer.
        {
            let mut blobs = Vec::new();
            let mut children = Vec::new();
            for platform in ["linux/amd64", "linux/arm64/v8", "linux/s390x"] {
                let arch = platform.replace('/', "-");
                let app = self.small_layer(&format!("multiarch-{arch}"), 8);
                let mut m = self.manifest(
                    &format!("multiarch-{arch}"),
                    ManifestParts {
                        platform,
                        docker: false,
                        layers: vec![&base, &app],
                        labels: BTreeMap::new(),
                        omit_media_type: false,
                    },
                    &mut blobs,
                );
                m.platform = Some(platform.to_string());
                children.push(m);
            }
            let index = ImageIndex {
                schema_version: 2,
                media_type: OCI_INDEX.into(),
                manifests: children.iter().map(Descriptor::of_manifest).collect(),
                annotations: BTreeMap::from([(
                    "org.opencontainers.image.created".to_string(),
                    EPOCH.to_string(),
                )]),
            };
            images.push(FixtureImage {
                repository: "fixtures/multiarch".into(),
                tag: "1.0".into(),
                top: FixtureManifest::new(OCI_INDEX, to_json(&index), None),
                children,
                blobs,
            });
        }

        // A Docker schema2 image.
        {
            let mut blobs = Vec::new();
            let app = self.small_layer("docker-v2-app", 8);
            let top = self.manifest(
                "docker-v2",
                ManifestParts {
                    platform: "linux/amd64",
                    docker: true,
                    layers: vec![&base, &runtime, &app],
                    labels: BTreeMap::new(),
                    omit_media_type: false,
                },
                &mut blobs,
            );
            images.push(FixtureImage {
                repository: "fixtures/docker-v2".into(),
                tag: "1.0".into(),
                top,
                children: Vec::new(),
                blobs,
            });
        }

        // A Docker manifest list with two schema2 children.
        {
            let mut blobs = Vec::new();
            let mut children = Vec::new();
            for platform in ["linux/amd64", "linux/arm64/v8"] {
                let arch = platform.replace('/', "-");
                let app = self.small_layer(&format!("docker-list-{arch}"), 8);
                let mut m = self.manifest(
                    &format!("docker-list-{arch}"),
                    ManifestParts {
                        platform,
                        docker: true,
                        layers: vec![&base, &runtime, &app],
                        labels: BTreeMap::new(),
                        omit_media_type: false,
                    },
                    &mut blobs,
                );
                m.platform = Some(platform.to_string());
                children.push(m);
            }
            let list = ImageIndex {
                schema_version: 2,
                media_type: DOCKER_LIST.into(),
                manifests: children.iter().map(Descriptor::of_manifest).collect(),
                annotations: BTreeMap::new(),
            };
            images.push(FixtureImage {
                repository: "fixtures/docker-list".into(),
                tag: "1.0".into(),
                top: FixtureManifest::new(DOCKER_LIST, to_json(&list), None),
                children,
                blobs,
            });
        }

        // Many small layers on the shared base.
        {
            let mut blobs = Vec::new();
            let n = opts.many_layers.max(1);
            let extra: Vec<Layer> = (1..n)
                .map(|i| self.small_layer(&format!("many-{i:03}"), 1))
                .collect();
            let layers: Vec<&Layer> = std::iter::once(&base).chain(extra.iter()).collect();
            let top = self.manifest(
                "many-layers",
                ManifestParts {
                    platform: "linux/amd64",
                    docker: false,
                    layers,
                    labels: BTreeMap::new(),
                    omit_media_type: false,
                },
                &mut blobs,
            );
            images.push(FixtureImage {
                repository: "fixtures/many-layers".into(),
                tag: "1.0".into(),
                top,
                children: Vec::new(),
                blobs,
            });
        }

        // A Trivy-DB-shaped artifact: empty config, artifactType, one titled layer.
        {
            let empty = Blob::new(OCI_EMPTY, &b"{}"[..]);
            debug_assert_eq!(empty.digest.to_string(), OCI_EMPTY_DIGEST);
            let db = self.trivy_layer();
            let db = Blob {
                digest: db.digest,
                media_type: TRIVY_DB_LAYER.into(),
                data: db.gz,
            };
            let mut layer = Descriptor::of_blob(&db, TRIVY_DB_LAYER);
            layer
                .annotations
                .insert(TITLE_ANNOTATION.into(), "db.tar.gz".into());
            let doc = ImageManifest {
                schema_version: 2,
                media_type: Some(OCI_MANIFEST.into()),
                artifact_type: Some(TRIVY_ARTIFACT_TYPE.into()),
                config: Descriptor::of_blob(&empty, OCI_EMPTY),
                layers: vec![layer],
                annotations: BTreeMap::from([(
                    "org.opencontainers.image.created".to_string(),
                    EPOCH.to_string(),
                )]),
            };
            images.push(FixtureImage {
                repository: "fixtures/trivy-db".into(),
                tag: "2".into(),
                top: FixtureManifest::new(OCI_MANIFEST, to_json(&doc), None),
                children: Vec::new(),
                blobs: vec![empty, db],
            });
        }

        // An OCI manifest without a mediaType field.
        {
            let mut blobs = Vec::new();
            let app = self.small_layer("no-mediatype-app", 4);
            let top = self.manifest(
                "no-mediatype",
                ManifestParts {
                    platform: "linux/amd64",
                    docker: false,
                    layers: vec![&base, &app],
                    labels: BTreeMap::new(),
                    omit_media_type: true,
                },
                &mut blobs,
            );
            images.push(FixtureImage {
                repository: "fixtures/no-mediatype".into(),
                tag: "1.0".into(),
                top,
                children: Vec::new(),
                blobs,
            });
        }

        // Optionally, one large layer.
        if let Some(mib) = opts.big_layer_mib {
            let mut blobs = Vec::new();
            let bigs: Vec<Layer> = (0..opts.big_layers.max(1))
                .map(|n| self.big_layer(mib, n))
                .collect();
            let mut layers = vec![&base];
            layers.extend(bigs.iter());
            let top = self.manifest(
                "big",
                ManifestParts {
                    platform: "linux/amd64",
                    docker: false,
                    layers,
                    labels: BTreeMap::from([("fixture.size-mib".to_string(), mib.to_string())]),
                    omit_media_type: false,
                },
                &mut blobs,
            );
            images.push(FixtureImage {
                repository: "fixtures/big".into(),
                tag: "1.0".into(),
                top,
                children: Vec::new(),
                blobs,
            });
        }

        FixtureSet { images }
    }
}

/// Adds `b` unless a blob with its digest is already there.
fn add_blob(blobs: &mut Vec<Blob>, b: Blob) {
    if !blobs.iter().any(|x| x.digest == b.digest) {
        blobs.push(b);
    }
}
