//! The local mirror store: an OCI image layout that many bundles are
//! imported into over time, plus the file tree. `ferry serve` serves it.
//!
//! ```text
//! DIR/oci-layout        {"imageLayoutVersion":"1.0.0"}
//! DIR/index.json        one descriptor per (repository, tag), per item kept by digest only,
//!                       and per file item (no repository; by its path)
//! DIR/blobs/sha256/<hex> every manifest, index, config and layer, once
//! DIR/files/...         the file tree (falco/, helm/, opensearch/, files/)
//! ```
//!
//! Every entry an import commits records the bundle item it came from
//! ([`EntryOrigin`]: `dev.ferry.source`, `dev.ferry.kind`, `dev.ferry.path`),
//! which `ferry export --from DIR` rebuilds the item from.
//!
//! Blobs are written by [`BlobDir`]'s verified write: to a temporary name
//! in `blobs/sha256/`, checked while they stream (hashed, or counted when
//! the bundle reader's hash is the check), and renamed into place only then;
//! `index.json` is replaced atomically at the end of an import, so a crash
//! at any point leaves the store as it was before the import (plus blobs no
//! index entry reaches yet). Stray temporary files are removed when the next
//! import opens the store. An exclusive lock on `DIR/.ferry-lock` keeps two
//! imports from interleaving their index updates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use ferry_bundle::digest::Check;
use ferry_bundle::manifest::MediaType;
use ferry_bundle::Digest;

use ferry_bundle::meta::{Item, MetaError};
use ferry_bundle::store_layout::{
    BlobDir, BlobDirError, StagedBlob, StoreLayout, ANN_IMAGE_NAME, ANN_REF_NAME,
    OCI_LAYOUT_CONTENT,
};
/// The index annotations, defined once in [`ferry_bundle::store_layout`].
pub use ferry_bundle::store_layout::{ANN_KIND, ANN_PATH, ANN_REPOSITORY, ANN_SOURCE, ANN_TAG};

/// A store operation that failed; names the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system error.
    #[error("store: failed to {op} `{}`: {source}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Content that does not match its digest or size.
    #[error("store: blob {digest}: {reason}")]
    Blob {
        /// The digest.
        digest: Digest,
        /// What was wrong.
        reason: String,
    },
    /// An index.json that is not an OCI index.
    #[error("store: `{}` is not an OCI image index: {reason}", path.display())]
    Index {
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One index.json entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Repository path (`dockerhub/library/nginx`); empty for a file item's
    /// entry (served from the file tree, not as a repository).
    pub repository: String,
    /// Tag, when tagged.
    pub tag: Option<String>,
    /// Manifest digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: MediaType,
    /// Its size.
    pub size: u64,
    /// The bundle item it was committed for (`dev.ferry.source`,
    /// `dev.ferry.kind`, `dev.ferry.path`); `None` in entries an older
    /// ferry wrote.
    pub origin: Option<EntryOrigin>,
}

/// Which bundle item an entry was committed for, as its annotations carry
/// it. Written only from an item the bundle's checks passed
/// ([`EntryOrigin::of`]); read back as found (a store is a file tree anyone
/// on the mirror host could edit: its reader, `export --from`, re-checks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryOrigin {
    /// The item's upstream reference (a file item's: its URL).
    pub source: Option<String>,
    /// Its kind ([`ferry_bundle::meta::Kind::as_str`]).
    pub kind: Option<String>,
    /// Its path on the file server, when it has one.
    pub path: Option<String>,
}

impl EntryOrigin {
    /// The origin of `item`, checked again as the bundle's reader checked
    /// it ([`Item::check`]) before it goes into the store.
    pub fn of(item: &Item) -> Result<EntryOrigin, MetaError> {
        item.check()?;
        Ok(EntryOrigin {
            source: Some(item.reference.clone()),
            kind: Some(item.kind.as_str().to_string()),
            path: item.path.clone(),
        })
    }
}

impl Entry {
    /// One entry per (repository, tag), per (repository, digest) kept by
    /// digest, and per file-tree path for a file item's entry (the tree
    /// holds one file at a path: a newer item there replaces the older).
    fn key(&self) -> (String, String) {
        if self.repository.is_empty() {
            if let Some(path) = self.origin.as_ref().and_then(|o| o.path.as_ref()) {
                return (String::new(), format!("path:{path}"));
            }
        }
        (
            self.repository.clone(),
            self.tag.clone().unwrap_or_else(|| self.digest.to_string()),
        )
    }

    fn ref_name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.repository),
            None => format!("{}@{}", self.repository, self.digest),
        }
    }
}

/// An open store (holds the lock until dropped).
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: std::fs::File,
    pending: Mutex<Vec<Entry>>,
    /// (repository, tag) → digest, index.json's and the pending entries',
    /// read once on first use: a tag lookup per item stays constant time.
    tags: Mutex<Option<HashMap<(String, String), Digest>>>,
}

impl Store {
    /// Opens (creating when needed) the store at `dir`, takes its lock and
    /// removes temporary files a crashed import left.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let layout = StoreLayout::new(dir);
        let blobs = layout.blobs();
        std::fs::create_dir_all(&blobs).map_err(io("create", &blobs))?;
        std::fs::create_dir_all(layout.files()).map_err(io("create", dir))?;
        let lock_path = layout.lock_file();
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        lock.lock().map_err(io("lock", &lock_path))?;
        let oci_layout = layout.oci_layout();
        if !oci_layout.exists() {
            ferry_bundle::atomic::write_atomic(&oci_layout, OCI_LAYOUT_CONTENT).map_err(|e| {
                StoreError::Io {
                    op: "write",
                    path: oci_layout.clone(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
        }
        BlobDir::under(dir).sweep();
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            pending: Mutex::new(Vec::new()),
            tags: Mutex::new(None),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file tree's root.
    pub fn files_dir(&self) -> PathBuf {
        StoreLayout::new(&self.dir).files()
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        StoreLayout::new(&self.dir).blob(d)
    }

    /// The size of a blob the store holds.
    pub fn has_blob(&self, d: &Digest) -> Option<u64> {
        std::fs::metadata(self.blob_path(d))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Writes a whole blob through the store's [`BlobDir`], checked as
    /// `check` says (hashed against its digest, or its sender's hash
    /// trusted and its size counted).
    pub async fn put_blob(&self, d: &Digest, data: Bytes, check: Check) -> Result<(), StoreError> {
        if self.has_blob(d) == Some(data.len() as u64) {
            return Ok(());
        }
        let size = data.len() as u64;
        self.write_blob(d, size, check, move |staged| staged.write_chunk(&data))
            .await
    }

    /// Writes a blob from chunks as they arrive, through the store's
    /// [`BlobDir`] on a blocking thread; renamed into place only when it
    /// has `size` bytes (that hash to `d`, with [`Check::Hash`]).
    pub async fn put_blob_stream(
        &self,
        d: &Digest,
        size: u64,
        mut chunks: mpsc::Receiver<Bytes>,
        check: Check,
    ) -> Result<(), StoreError> {
        self.write_blob(d, size, check, move |staged| {
            while let Some(c) = chunks.blocking_recv() {
                staged.write_chunk(&c)?;
            }
            Ok(())
        })
        .await
    }

    /// Stages blob `d` of `size` bytes in the store's [`BlobDir`], fills it
    /// with `fill` and commits it, on a blocking thread.
    async fn write_blob(
        &self,
        d: &Digest,
        size: u64,
        check: Check,
        fill: impl FnOnce(&mut StagedBlob) -> Result<(), BlobDirError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let blobs = BlobDir::under(&self.dir);
        let digest = d.clone();
        tokio::task::spawn_blocking(move || -> Result<(), BlobDirError> {
            let mut staged = blobs.stage_checked(&digest, size, check)?;
            fill(&mut staged)?;
            staged.commit().map(|_| ())
        })
        .await
        .map_err(|e| StoreError::Blob {
            digest: d.clone(),
            reason: e.to_string(),
        })?
        .map_err(from_blob_dir)
    }

    /// Records an index.json entry, written by [`Store::commit`].
    pub fn add_entry(&self, e: Entry) {
        if let Some(t) = &e.tag {
            let key = (e.repository.clone(), t.clone());
            let digest = e.digest.clone();
            self.with_tags(move |m| m.insert(key, digest));
        }
        if let Ok(mut p) = self.pending.lock() {
            p.push(e);
        }
    }

    /// Runs `f` on the tag map, reading index.json into it the first time.
    fn with_tags<R>(
        &self,
        f: impl FnOnce(&mut HashMap<(String, String), Digest>) -> R,
    ) -> Option<R> {
        let mut guard = self.tags.lock().ok()?;
        if guard.is_none() {
            let mut m = HashMap::new();
            for e in self.entries().ok()? {
                if let Some(t) = e.tag {
                    m.insert((e.repository, t), e.digest);
                }
            }
            *guard = Some(m);
        }
        guard.as_mut().map(f)
    }

    /// The current index.json entries.
    pub fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        let path = StoreLayout::new(&self.dir).index_json();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &path)(e)),
        };
        let bad = |reason: String| StoreError::Index {
            path: path.clone(),
            reason,
        };
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut out = Vec::new();
        for m in v["manifests"].as_array().cloned().unwrap_or_default() {
            let ann = &m["annotations"];
            let digest: Digest = m["digest"]
                .as_str()
                .unwrap_or("")
                .parse()
                .map_err(|_| bad("a descriptor has no valid digest".into()))?;
            let text = |key: &str| ann[key].as_str().map(str::to_string);
            let origin = EntryOrigin {
                source: text(ANN_SOURCE),
                kind: text(ANN_KIND),
                path: text(ANN_PATH),
            };
            let annotated =
                origin.source.is_some() || origin.kind.is_some() || origin.path.is_some();
            out.push(Entry {
                repository: text(ANN_REPOSITORY).unwrap_or_default(),
                tag: text(ANN_TAG),
                digest,
                media_type: MediaType::from(m["mediaType"].as_str().unwrap_or("")),
                size: m["size"].as_u64().unwrap_or(0),
                origin: annotated.then_some(origin),
            });
        }
        Ok(out)
    }

    /// The tag's digest, when the store has it (pending entries included).
    pub fn tag(&self, repository: &str, tag: &str) -> Option<Digest> {
        let key = (repository.to_string(), tag.to_string());
        self.with_tags(|m| m.get(&key).cloned()).flatten()
    }

    /// Merges the pending entries into index.json (atomically). A tag
    /// recorded again points at the new digest.
    pub fn commit(&self) -> Result<usize, StoreError> {
        let pending = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => Vec::new(),
        };
        if pending.is_empty() {
            return Ok(0);
        }
        let mut all: BTreeMap<(String, String), Entry> = BTreeMap::new();
        for e in self.entries()?.into_iter().chain(pending.iter().cloned()) {
            all.insert(e.key(), e);
        }
        self.write_index(all.values())?;
        Ok(pending.len())
    }

    /// Keeps only the index.json entries `keep` accepts (atomically);
    /// returns how many were removed. Blobs stay until
    /// [`Store::remove_unreferenced_blobs`].
    pub fn retain_entries(&self, keep: impl Fn(&Entry) -> bool) -> Result<usize, StoreError> {
        let all = self.entries()?;
        let before = all.len();
        let kept: Vec<Entry> = all.into_iter().filter(|e| keep(e)).collect();
        let removed = before - kept.len();
        if removed > 0 {
            self.write_index(kept.iter())?;
        }
        Ok(removed)
    }

    /// Deletes every blob that no index.json entry reaches (manifests,
    /// index children, configs, layers, and the subjects of referrers kept by
    /// digest); returns the blobs deleted and their bytes. Runs under the
    /// store's lock, so no import is writing; a running `ferry serve` sees the
    /// new index.json and never a reachable blob removed.
    pub fn remove_unreferenced_blobs(&self) -> Result<(usize, u64), StoreError> {
        let mut reachable: BTreeSet<Digest> = BTreeSet::new();
        let mut queue: Vec<Digest> = self.entries()?.into_iter().map(|e| e.digest).collect();
        while let Some(d) = queue.pop() {
            if !reachable.insert(d.clone()) {
                continue;
            }
            let Ok(bytes) = std::fs::read(self.blob_path(&d)) else {
                continue;
            };
            if let Ok(parsed) = ferry_bundle::manifest::parse(&bytes, None) {
                for c in parsed.manifests.iter().chain(parsed.blobs()) {
                    queue.push(c.digest.clone());
                }
            }
        }
        let dir = StoreLayout::new(&self.dir).blobs();
        let mut removed = (0usize, 0u64);
        for e in std::fs::read_dir(&dir).map_err(io("read", &dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            if reachable.contains(&d) {
                continue;
            }
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    removed.0 += 1;
                    removed.1 += size;
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(io("remove", &e.path())(err)),
            }
        }
        Ok(removed)
    }

    /// A blob's bytes, when the store has it.
    pub fn read_blob(&self, d: &Digest) -> Option<Vec<u8>> {
        std::fs::read(self.blob_path(d)).ok()
    }

    fn write_index<'e>(&self, entries: impl Iterator<Item = &'e Entry>) -> Result<(), StoreError> {
        // Serialised from borrowed rows, not built as a JSON tree first
        // (the tree was about half of a store import's peak with many
        // references); fields in the order a JSON object's sorted keys
        // gave, so the bytes are those of before.
        let doc = IndexDoc {
            manifests: entries.map(IndexRow).collect(),
            media_type: ferry_bundle::manifest::OCI_INDEX,
            schema_version: 2,
        };
        let mut bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        bytes.push(b'\n');
        let path = StoreLayout::new(&self.dir).index_json();
        ferry_bundle::writer::write_atomic(&path, &bytes).map_err(|e| StoreError::Io {
            op: "write",
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }
}

/// The store's index.json, its fields in sorted order.
#[derive(serde::Serialize)]
struct IndexDoc<'e> {
    manifests: Vec<IndexRow<'e>>,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
}

/// One entry of the store's index.json: its descriptor, annotations
/// included, with the keys in sorted order.
struct IndexRow<'e>(&'e Entry);

impl serde::Serialize for IndexRow<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        let mut ann: BTreeMap<&'static str, std::borrow::Cow<'_, str>> = BTreeMap::new();
        // A file item's entry names no repository: serve lists none.
        if !e.repository.is_empty() {
            ann.insert(ANN_IMAGE_NAME, e.ref_name().into());
            ann.insert(ANN_REF_NAME, e.ref_name().into());
            ann.insert(ANN_REPOSITORY, e.repository.as_str().into());
            if let Some(t) = &e.tag {
                ann.insert(ANN_TAG, t.as_str().into());
            }
        }
        if let Some(o) = &e.origin {
            for (key, value) in [
                (ANN_SOURCE, &o.source),
                (ANN_KIND, &o.kind),
                (ANN_PATH, &o.path),
            ] {
                if let Some(v) = value {
                    ann.insert(key, v.as_str().into());
                }
            }
        }
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("annotations", &ann)?;
        m.serialize_entry("digest", &e.digest.to_string())?;
        m.serialize_entry("mediaType", &e.media_type)?;
        m.serialize_entry("size", &e.size)?;
        m.end()
    }
}

/// A blob directory's error as the store's (the same messages as ever).
fn from_blob_dir(e: BlobDirError) -> StoreError {
    match e {
        BlobDirError::Io { op, path, source } => StoreError::Io { op, path, source },
        BlobDirError::Size {
            digest,
            expected,
            actual,
            at_least,
            ..
        } => StoreError::Blob {
            digest,
            reason: format!(
                "expected {expected} bytes, got {actual}{}",
                if at_least { " or more" } else { "" }
            ),
        },
        BlobDirError::Digest { digest, actual, .. } => StoreError::Blob {
            digest,
            reason: format!("the bytes hash to {actual}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_land_only_when_verified_and_the_index_merges() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let data = Bytes::from_static(b"hello blob");
        let d = Digest::of(&data);
        assert!(s
            .put_blob(&Digest::of(b"other"), data.clone(), Check::Hash)
            .await
            .is_err());
        assert_eq!(s.has_blob(&Digest::of(b"other")), None);
        s.put_blob(&d, data.clone(), Check::Hash).await.unwrap();
        assert_eq!(s.has_blob(&d), Some(10));
        // Streaming: wrong bytes leave nothing, not even a temp file.
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"wrong")).await.unwrap();
        drop(tx);
        let bad = Digest::of(b"right");
        assert!(s.put_blob_stream(&bad, 5, rx, Check::Hash).await.is_err());
        assert_eq!(s.has_blob(&bad), None);
        // Bytes the sender checked are counted: one withheld byte (the
        // reader's verdict was bad) and nothing lands either.
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"righ")).await.unwrap();
        drop(tx);
        let e = s
            .put_blob_stream(&bad, 5, rx, Check::Sender)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("expected 5 bytes, got 4"), "{e}");
        assert_eq!(s.has_blob(&bad), None);
        let names: Vec<String> = std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![d.hex().to_string()]);
        // Index: entries merge; a tag recorded again moves.
        let e = |tag: &str, dg: &Digest| Entry {
            repository: "a/b".into(),
            tag: Some(tag.into()),
            digest: dg.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 10,
            origin: None,
        };
        s.add_entry(e("1", &d));
        assert_eq!(s.commit().unwrap(), 1);
        s.add_entry(e("2", &d));
        s.add_entry(e("1", &bad));
        s.commit().unwrap();
        let entries = s.entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(s.tag("a/b", "1"), Some(bad));
        drop(s);
        // A stray temp file from a crash is swept on open.
        let stray = dir.path().join("blobs/sha256/.tmp-abc-1");
        std::fs::write(&stray, b"x").unwrap();
        let _s = Store::open(dir.path()).unwrap();
        assert!(!stray.exists());
    }

    fn item(kind: Kind, reference: &str, path: Option<&str>) -> Item {
        Item {
            kind,
            reference: reference.into(),
            digest: Digest::of(reference.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 10,
            platforms: vec![],
            path: path.map(str::to_string),
            subject: None,
        }
    }

    use ferry_bundle::meta::Kind;

    #[test]
    fn entries_record_their_origin_and_file_items_name_no_repository() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let image = item(Kind::Image, "reg.example/team/app:1", None);
        let entry = |repository: &str, tag: Option<&str>, it: &Item| Entry {
            repository: repository.into(),
            tag: tag.map(str::to_string),
            digest: it.digest.clone(),
            media_type: it.media_type.clone(),
            size: it.size,
            origin: Some(EntryOrigin::of(it).unwrap()),
        };
        s.add_entry(entry("reg-example/team/app", Some("1"), &image));
        let url = "https://dl.example/tool-1.0.tar.gz";
        let v1 = item(Kind::File, url, Some("files/tool.tar.gz"));
        s.add_entry(entry("", None, &v1));
        s.commit().unwrap();
        let raw: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let file_ann = &raw["manifests"][0]["annotations"];
        assert_eq!(file_ann[ANN_KIND], "file");
        assert_eq!(file_ann[ANN_SOURCE], url);
        assert_eq!(file_ann[ANN_PATH], "files/tool.tar.gz");
        for key in [ANN_REPOSITORY, ANN_REF_NAME, ANN_IMAGE_NAME, ANN_TAG] {
            assert!(file_ann.get(key).is_none(), "{key}: {file_ann}");
        }
        let got = s.entries().unwrap();
        let img = got.iter().find(|e| e.repository == "reg-example/team/app");
        assert_eq!(
            img.and_then(|e| e.origin.clone()),
            Some(EntryOrigin {
                source: Some("reg.example/team/app:1".into()),
                kind: Some("image".into()),
                path: None,
            })
        );
        // A newer file at the same path replaces the older entry.
        let v2 = item(
            Kind::File,
            "https://dl.example/tool-1.1.tar.gz",
            Some("files/tool.tar.gz"),
        );
        s.add_entry(entry("", None, &v2));
        s.commit().unwrap();
        let files: Vec<Entry> = s
            .entries()
            .unwrap()
            .into_iter()
            .filter(|e| e.repository.is_empty())
            .collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].digest, v2.digest);
        // An item the bundle's checks refuse is never recorded.
        assert!(EntryOrigin::of(&item(Kind::Image, "not a reference", None)).is_err());
        assert!(EntryOrigin::of(&item(Kind::File, url, Some("../x"))).is_err());
    }
}
