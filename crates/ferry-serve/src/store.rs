//! The store's registry view: which repositories exist, their tags, and
//! which manifests and blobs each one holds, built from `DIR/index.json` by
//! walking every manifest graph once.
//!
//! The importer replaces `index.json` atomically (write, then rename), so the
//! file is opened, `fstat`ed and read in one go: the snapshot always comes
//! from one complete document. Every request checks the file's identity
//! (inode, size, mtime) with one `stat` and rebuilds the view when it changed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use ferry_bundle::manifest::{MediaType, OCI_INDEX, OCI_MANIFEST};
use ferry_bundle::Digest;
use serde::Deserialize;

use ferry_bundle::store_layout::{StoreLayout, ANN_IMAGE_NAME, ANN_REF_NAME};
/// The index annotations, defined once in [`ferry_bundle::store_layout`].
pub use ferry_bundle::store_layout::{ANN_REPOSITORY, ANN_TAG};

/// Documents larger than this are not read as manifests while walking
/// (distribution refuses manifests above 4 MiB; this leaves room).
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// A descriptor as found in index.json or a manifest, read leniently: an
/// entry that does not parse is skipped, never fatal for the whole store.
#[derive(Debug, Clone, Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct RawIndex {
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

/// Just enough of a manifest or index to walk it and describe it as a referrer.
#[derive(Debug, Deserialize)]
struct RawDoc {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    /// OCI 1.1-rc artifact manifests list their content here.
    #[serde(default)]
    blobs: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    subject: Option<RawDescriptor>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// What the store knows about one manifest or index.
#[derive(Debug, Clone)]
pub struct ManifestInfo {
    /// The media type it is served with: from the descriptor that reached it
    /// (index.json or the parent), else its own `mediaType`, else guessed
    /// from its shape.
    pub media_type: MediaType,
    /// Its size in bytes.
    pub size: u64,
    /// `artifactType`, else the config's media type (what a referrers
    /// descriptor carries).
    pub artifact_type: Option<MediaType>,
    /// The document's own annotations.
    pub annotations: BTreeMap<String, String>,
    /// The `subject` it refers to.
    pub subject: Option<Digest>,
    /// Child manifests (of an index).
    pub children: Vec<Digest>,
    /// Config and layers (of a manifest).
    pub blobs: Vec<Digest>,
}

/// One repository: tags, and everything reachable from its entries.
#[derive(Debug, Clone, Default)]
pub struct RepoView {
    /// Tag → manifest digest.
    pub tags: BTreeMap<String, Digest>,
    /// Every manifest and index it holds.
    pub manifests: HashSet<Digest>,
    /// Every config and layer it holds.
    pub blobs: HashSet<Digest>,
    /// Subject digest → the manifests in this repository that refer to it.
    pub referrers: HashMap<Digest, BTreeSet<Digest>>,
}

impl RepoView {
    /// Whether a blob GET for `digest` may be answered (configs, layers,
    /// and manifests, which are blobs too).
    pub fn holds_blob(&self, digest: &Digest) -> bool {
        self.blobs.contains(digest) || self.manifests.contains(digest)
    }
}

/// The registry view of one version of index.json.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Repository name → its view, sorted (the catalog order).
    pub repos: BTreeMap<String, RepoView>,
    /// Every manifest read, by digest.
    pub manifests: HashMap<Digest, ManifestInfo>,
}

impl Snapshot {
    /// Builds the view from the store at `dir`: parses `index_bytes` (the
    /// content of `DIR/index.json`) and walks every manifest graph, reading
    /// manifests from `DIR/blobs/sha256/`.
    pub fn build(dir: &Path, index_bytes: &[u8]) -> Result<Snapshot, serde_json::Error> {
        let index: RawIndex = serde_json::from_slice(index_bytes)?;
        let mut snap = Snapshot::default();
        for desc in index.manifests.unwrap_or_default() {
            let Some(digest) = desc
                .digest
                .as_deref()
                .and_then(|d| d.parse::<Digest>().ok())
            else {
                tracing::warn!(
                    digest = desc.digest.as_deref().unwrap_or(""),
                    "index.json: skipping an entry without a sha256 digest"
                );
                continue;
            };
            load_graph(
                dir,
                &digest,
                desc.media_type.as_deref(),
                &mut snap.manifests,
            );
            let annotations = desc.annotations.unwrap_or_default();
            let Some((repo, tag)) = repository_of(&annotations) else {
                // No repository: it can still join repositories as a
                // referrer of something they hold (below).
                continue;
            };
            if !crate::names::valid_name(&repo) {
                tracing::warn!(repository = %repo, "index.json: skipping an entry whose repository name is invalid");
                continue;
            }
            let view = snap.repos.entry(repo).or_default();
            if let Some(tag) = tag {
                if crate::names::valid_tag(&tag) {
                    view.tags.insert(tag, digest.clone());
                } else {
                    tracing::warn!(tag = %tag, "index.json: ignoring an invalid tag");
                }
            }
            add_closure(view, &digest, &snap.manifests);
        }
        // A manifest whose subject a repository holds belongs to it too
        // (and so do the referrers of that manifest, hence the fixpoint).
        let referrers: Vec<(Digest, Digest)> = snap
            .manifests
            .iter()
            .filter_map(|(d, m)| m.subject.clone().map(|s| (d.clone(), s)))
            .collect();
        loop {
            let mut changed = false;
            for view in snap.repos.values_mut() {
                for (d, subject) in &referrers {
                    if view.manifests.contains(subject) && !view.manifests.contains(d) {
                        add_closure(view, d, &snap.manifests);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        for view in snap.repos.values_mut() {
            for (d, subject) in &referrers {
                if view.manifests.contains(d) {
                    view.referrers
                        .entry(subject.clone())
                        .or_default()
                        .insert(d.clone());
                }
            }
        }
        Ok(snap)
    }
}

/// `(repository, tag)` of an index.json entry: ferry's own annotations, else
/// a full name in `io.containerd.image.name` / `org.opencontainers.image.ref.name`
/// (`repo:tag` or `repo@digest`; a bare tag names no repository).
fn repository_of(annotations: &BTreeMap<String, String>) -> Option<(String, Option<String>)> {
    if let Some(repo) = annotations.get(ANN_REPOSITORY) {
        return Some((repo.clone(), annotations.get(ANN_TAG).cloned()));
    }
    let full = annotations
        .get(ANN_IMAGE_NAME)
        .or_else(|| annotations.get(ANN_REF_NAME))
        .filter(|n| n.contains('/'))?;
    if let Some((repo, _digest)) = full.split_once('@') {
        return Some((repo.to_string(), None));
    }
    let slash = full.rfind('/').unwrap_or(0);
    match full[slash..].rfind(':') {
        Some(colon) => {
            let at = slash + colon;
            Some((full[..at].to_string(), Some(full[at + 1..].to_string())))
        }
        None => Some((full.clone(), None)),
    }
}

/// The path of a blob in the store.
pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    StoreLayout::new(dir).blob(digest)
}

/// Reads the manifest `digest` and everything below it into `out` (each
/// document once). Missing or unreadable documents are left out: requests
/// for them answer "unknown".
fn load_graph(
    dir: &Path,
    digest: &Digest,
    media_type: Option<&str>,
    out: &mut HashMap<Digest, ManifestInfo>,
) {
    let mut stack = vec![(digest.clone(), media_type.map(str::to_string))];
    while let Some((d, hint)) = stack.pop() {
        if out.contains_key(&d) {
            continue;
        }
        let path = blob_path(dir, &d);
        let bytes = match read_small(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "store: cannot read manifest {d}");
                continue;
            }
        };
        let doc: Option<RawDoc> = serde_json::from_slice(&bytes).ok();
        let hint = hint.filter(|h| !h.is_empty());
        let media_type = hint
            .or_else(|| doc.as_ref().and_then(|x| x.media_type.clone()))
            .unwrap_or_else(|| match &doc {
                Some(x) if x.manifests.is_some() => OCI_INDEX.to_string(),
                _ => OCI_MANIFEST.to_string(),
            });
        let mut info = ManifestInfo {
            media_type: MediaType::from(media_type.as_str()),
            size: bytes.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
            subject: None,
            children: Vec::new(),
            blobs: Vec::new(),
        };
        if let Some(doc) = doc {
            let parse = |x: &RawDescriptor| x.digest.as_deref().and_then(|d| d.parse().ok());
            info.artifact_type = doc
                .artifact_type
                .as_deref()
                .or_else(|| doc.config.as_ref().and_then(|c| c.media_type.as_deref()))
                .map(MediaType::from);
            info.annotations = doc.annotations.unwrap_or_default();
            info.subject = doc.subject.as_ref().and_then(parse);
            for child in doc.manifests.unwrap_or_default() {
                if let Some(cd) = parse(&child) {
                    info.children.push(cd.clone());
                    stack.push((cd, child.media_type.clone()));
                }
            }
            let blobs = doc
                .config
                .into_iter()
                .chain(doc.layers.unwrap_or_default())
                .chain(doc.blobs.unwrap_or_default());
            info.blobs.extend(blobs.filter_map(|b| parse(&b)));
        }
        out.insert(d, info);
    }
}

fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > MAX_MANIFEST_BYTES {
        return Err(std::io::Error::other(format!(
            "{len} bytes is too large for a manifest"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(MAX_MANIFEST_BYTES).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Adds `digest` and everything it reaches to `view`.
fn add_closure(view: &mut RepoView, digest: &Digest, manifests: &HashMap<Digest, ManifestInfo>) {
    let mut stack = vec![digest.clone()];
    while let Some(d) = stack.pop() {
        if !view.manifests.insert(d.clone()) {
            continue;
        }
        if let Some(info) = manifests.get(&d) {
            view.blobs.extend(info.blobs.iter().cloned());
            stack.extend(info.children.iter().cloned());
        }
    }
}

/// The identity of one version of index.json.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileKey {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    ino: u64,
    #[cfg(unix)]
    dev: u64,
}

impl FileKey {
    fn of(m: &std::fs::Metadata) -> FileKey {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        FileKey {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            ino: m.ino(),
            #[cfg(unix)]
            dev: m.dev(),
        }
    }
}

struct Cached {
    key: Option<FileKey>,
    snapshot: Arc<Snapshot>,
}

/// The store on disk plus the cached view of its current index.json.
pub struct Store {
    dir: PathBuf,
    current: RwLock<Arc<Cached>>,
    reload: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// A store at `dir`; nothing is read until the first [`Store::snapshot`].
    pub fn new(dir: PathBuf) -> Store {
        Store {
            dir,
            current: RwLock::new(Arc::new(Cached {
                key: None,
                snapshot: Arc::new(Snapshot::default()),
            })),
            reload: tokio::sync::Mutex::new(()),
        }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root of the file tree.
    pub fn files_dir(&self) -> PathBuf {
        StoreLayout::new(&self.dir).files()
    }

    fn index_path(&self) -> PathBuf {
        StoreLayout::new(&self.dir).index_json()
    }

    fn cached(&self) -> Arc<Cached> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads index.json now (at startup), so that a broken one is an error
    /// rather than an empty registry. Returns the number of repositories.
    pub async fn preload(&self) -> Result<usize, crate::ServeError> {
        let dir = self.dir.clone();
        let path = self.index_path();
        let bad = |reason: String| crate::ServeError::Index {
            path: self.index_path(),
            reason,
        };
        let loaded = tokio::task::spawn_blocking(move || load(&dir, &path))
            .await
            .map_err(|e| bad(e.to_string()))?;
        let (key, snapshot) = loaded.map_err(|(_, reason)| bad(reason))?;
        let repositories = snapshot.repos.len();
        let next = Arc::new(Cached {
            key,
            snapshot: Arc::new(snapshot),
        });
        match self.current.write() {
            Ok(mut c) => *c = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(repositories)
    }

    /// The view of the current index.json, rebuilt when the file changed
    /// since the last call (one `stat` per call otherwise).
    pub async fn snapshot(&self) -> Arc<Snapshot> {
        let key = tokio::fs::metadata(self.index_path())
            .await
            .ok()
            .map(|m| FileKey::of(&m));
        let cached = self.cached();
        if cached.key == key {
            return cached.snapshot.clone();
        }
        let _guard = self.reload.lock().await;
        let cached = self.cached();
        if cached.key == key {
            return cached.snapshot.clone();
        }
        let dir = self.dir.clone();
        let path = self.index_path();
        let loaded = tokio::task::spawn_blocking(move || load(&dir, &path)).await;
        let next = match loaded {
            Ok(Ok((key, snapshot))) => {
                tracing::debug!(
                    repositories = snapshot.repos.len(),
                    manifests = snapshot.manifests.len(),
                    "store: loaded index.json"
                );
                Cached {
                    key,
                    snapshot: Arc::new(snapshot),
                }
            }
            Ok(Err((key, e))) => {
                // Keep serving the last good view; retry when the file changes.
                tracing::warn!(
                    path = %self.index_path().display(),
                    "store: index.json is unusable ({e}); still serving the previous one"
                );
                Cached {
                    key,
                    snapshot: cached.snapshot.clone(),
                }
            }
            Err(e) => {
                tracing::warn!("store: loading index.json failed: {e}");
                return cached.snapshot.clone();
            }
        };
        let snapshot = next.snapshot.clone();
        match self.current.write() {
            Ok(mut c) => *c = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
        snapshot
    }
}

type Loaded = Result<(Option<FileKey>, Snapshot), (Option<FileKey>, String)>;

/// Opens, `fstat`s and reads index.json in one go (so the key describes the
/// bytes read) and builds the view. A missing index.json is an empty store.
fn load(dir: &Path, path: &Path) -> Loaded {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((None, Snapshot::default()));
        }
        Err(e) => return Err((None, format!("cannot open it: {e}"))),
    };
    let key = f.metadata().ok().map(|m| FileKey::of(&m));
    let mut bytes = Vec::new();
    if let Err(e) = f.read_to_end(&mut bytes) {
        return Err((key, format!("cannot read it: {e}")));
    }
    match Snapshot::build(dir, &bytes) {
        Ok(s) => Ok((key, s)),
        Err(e) => Err((key, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn repository_comes_from_ferry_annotations_then_full_names() {
        assert_eq!(
            repository_of(&ann(&[
                (ANN_REPOSITORY, "dockerhub/library/nginx"),
                (ANN_TAG, "1.27"),
                (ANN_REF_NAME, "something/else:2"),
            ])),
            Some(("dockerhub/library/nginx".into(), Some("1.27".into())))
        );
        assert_eq!(
            repository_of(&ann(&[(ANN_IMAGE_NAME, "reg:5000/a/b:1.0")])),
            Some(("reg:5000/a/b".into(), Some("1.0".into())))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            repository_of(&ann(&[(ANN_REF_NAME, &format!("a/b@{d}"))])),
            Some(("a/b".into(), None))
        );
        // A bare tag (the docker/containerd convention) names no repository.
        assert_eq!(repository_of(&ann(&[(ANN_REF_NAME, "1.0")])), None);
        assert_eq!(repository_of(&ann(&[])), None);
    }

    #[test]
    fn walks_indexes_and_referrers_into_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let d = Digest::of(bytes);
            std::fs::write(blobs.join(d.hex()), bytes).unwrap();
            d
        };
        let layer = put(b"layer");
        let config = put(b"{}");
        let child = put(
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"x","digest":"{layer}","size":5}}]}}"#
            )
            .as_bytes(),
        );
        let index = put(
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{child}","size":1}}]}}"#
            )
            .as_bytes(),
        );
        let sig = put(
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x-sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{child}","size":1}},"annotations":{{"k":"v"}}}}"#
            )
            .as_bytes(),
        );
        let index_json = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{OCI_INDEX}","digest":"{index}","size":1,"annotations":{{"{ANN_REPOSITORY}":"a/b","{ANN_TAG}":"1.0"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{sig}","size":1}}
            ]}}"#
        );
        let snap = Snapshot::build(dir.path(), index_json.as_bytes()).unwrap();
        let repo = &snap.repos["a/b"];
        assert_eq!(repo.tags["1.0"], index);
        for d in [&index, &child, &sig] {
            assert!(repo.manifests.contains(d), "{d}");
        }
        assert!(repo.holds_blob(&layer) && repo.holds_blob(&config));
        assert_eq!(
            repo.referrers[&child].iter().collect::<Vec<_>>(),
            vec![&sig]
        );
        let info = &snap.manifests[&sig];
        assert_eq!(
            info.artifact_type.as_ref().map(AsRef::as_ref),
            Some("application/x-sig")
        );
        assert_eq!(info.annotations["k"], "v");
        assert_eq!(snap.manifests[&child].media_type.as_ref(), OCI_MANIFEST);
    }
}
