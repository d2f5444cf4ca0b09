//! The head entries, in order and bounded: `oci-layout`, `ferry/bundle.json`,
//! the optional signature and `index.json` (pinned by bundle.json, listing
//! exactly its items, annotations agreeing with it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read};
use std::sync::Arc;

use blake2::{Blake2b512, Digest as _};

use crate::digest::{Digest, Hasher};
use crate::manifest::{self, Descriptor};
use crate::meta::{
    BundleMeta, Item, ANN_CONTAINERD_SUBJECT, ANN_IMAGE_NAME, ANN_KIND, ANN_PATH, ANN_REF_NAME,
    ANN_SOURCE, ANN_SUBJECT, FORMAT_VERSION, META_PATH, SIG_PATH,
};
use crate::text::escape;

use super::blobs::BlobTable;
use super::entry::{EntryKind, TarEntry};
use super::error::stream_error;
use super::graph::Edges;
use super::{
    BundleError, Head, ReadOptions, Stage, State, Visitor, MAX_INDEX, MAX_LAYOUT, MAX_META, MAX_SIG,
};

pub(super) fn read_small(
    entry: &mut dyn Read,
    name: &str,
    size: u64,
    limit: u64,
) -> Result<Vec<u8>, BundleError> {
    if size > limit {
        return Err(BundleError::TooLarge {
            entry: name.into(),
            size,
            limit,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|source| stream_error(format!("`{name}`"), source))?;
    if buf.len() as u64 != size {
        return Err(BundleError::Read {
            at: format!("`{name}`"),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry ended after {} of {size} bytes", buf.len()),
            ),
        });
    }
    Ok(buf)
}

/// What is kept of bundle.json's exact bytes once parsed: their digests.
pub(super) struct MetaSums {
    sha256: Digest,
    prehash: [u8; 64],
}

/// How much of bundle.json's start is kept while it streams, to name the
/// format version of a document this ferry cannot parse (ferry writes
/// `formatVersion` first).
const VERSION_PROBE: usize = 4096;

/// Parses `ferry/bundle.json` as it streams (never held whole: it grows
/// with the references), hashing the same bytes (sha256 for its digest,
/// BLAKE2b-512 for its signature) and refusing anything after the JSON
/// value but whitespace, as a parse of the whole bytes does.
fn read_meta(
    entry: &mut dyn Read,
    name: &str,
    size: u64,
) -> Result<(BundleMeta, MetaSums), BundleError> {
    if size > MAX_META {
        return Err(BundleError::TooLarge {
            entry: name.into(),
            size,
            limit: MAX_META,
        });
    }
    let mut hashing = MetaHashing {
        inner: entry.take(MAX_META + 1),
        sha256: Hasher::new(),
        blake: Blake2b512::default(),
        probe: Vec::new(),
    };
    let parsed: Result<BundleMeta, serde_json::Error> =
        serde_json::from_reader(io::BufReader::with_capacity(64 * 1024, &mut hashing));
    let meta = parsed.map_err(|e| {
        if e.is_io() {
            return stream_error(format!("`{name}`"), io::Error::from(e));
        }
        // A document that is JSON (as far as the parse got) but not this
        // format: a newer format gets the right message. Broken JSON is
        // malformed whatever version it names.
        let data = e.classify() == serde_json::error::Category::Data;
        match probe_version(&hashing.probe).filter(|_| data) {
            Some(v) if v != FORMAT_VERSION as u64 => BundleError::Version(v as u32),
            _ => BundleError::Malformed {
                entry: name.into(),
                reason: e.to_string(),
            },
        }
    })?;
    let read = hashing.sha256.len();
    if read != size {
        return Err(BundleError::Read {
            at: format!("`{name}`"),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("entry ended after {read} of {size} bytes"),
            ),
        });
    }
    let sums = MetaSums {
        sha256: hashing.sha256.finish(),
        prehash: hashing.blake.finalize().into(),
    };
    Ok((meta, sums))
}

/// Hashes what is read through it, and keeps the first
/// [`VERSION_PROBE`] bytes.
struct MetaHashing<R> {
    inner: R,
    sha256: Hasher,
    blake: Blake2b512,
    probe: Vec<u8>,
}

impl<R: Read> Read for MetaHashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let got = &buf[..n];
        self.sha256.update(got);
        self.blake.update(got);
        let keep = VERSION_PROBE.saturating_sub(self.probe.len()).min(n);
        self.probe.extend_from_slice(&got[..keep]);
        Ok(n)
    }
}

/// The top-level `formatVersion` of a JSON document's start, if it comes
/// before the start ends (what follows it is not looked at).
fn probe_version(start: &[u8]) -> Option<u64> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess};
    use std::cell::Cell;
    struct Probe<'a>(&'a Cell<Option<u64>>);
    impl<'de> DeserializeSeed<'de> for Probe<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> serde::de::Visitor<'de> for Probe<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "formatVersion" {
                    self.0.set(map.next_value::<u64>().ok());
                    return Ok(());
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let found = Cell::new(None);
    // The start is usually cut mid-document: only what was seen counts.
    let _ = Probe(&found).deserialize(&mut serde_json::Deserializer::from_slice(start));
    found.get()
}

impl State {
    pub(super) fn entry(
        &mut self,
        header: &TarEntry,
        entry: &mut dyn Read,
        options: ReadOptions,
        visitor: &mut dyn Visitor,
    ) -> Result<(), BundleError> {
        let name = header.name.as_str();
        let size = header.size;
        // A blob entry seen twice is refused by its place in bundle.json's
        // order (`State::blob`): only the head's names and the directories
        // are kept.
        let blob_entry = self.stage == Stage::Index
            && header.kind == EntryKind::File
            && name.starts_with("blobs/sha256/");
        if !blob_entry && !self.seen.insert(name.to_string()) {
            return Err(BundleError::Duplicate(name.into()));
        }
        if header.kind == EntryKind::Dir {
            return Ok(());
        }
        match (self.stage, name) {
            (Stage::Start, "oci-layout") => {
                let bytes = read_small(entry, name, size, MAX_LAYOUT)?;
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| BundleError::Malformed {
                        entry: name.into(),
                        reason: e.to_string(),
                    })?;
                if v.get("imageLayoutVersion").and_then(|x| x.as_str()) != Some("1.0.0") {
                    return Err(BundleError::Malformed {
                        entry: name.into(),
                        reason: "imageLayoutVersion must be \"1.0.0\"".into(),
                    });
                }
                self.stage = Stage::Layout;
                Ok(())
            }
            (Stage::Start, _) => Err(BundleError::HeadOrder {
                expected: "oci-layout",
                found: name.into(),
            }),
            (Stage::Layout, META_PATH) => {
                let (meta, sums) = read_meta(entry, name, size)?;
                if meta.format_version != FORMAT_VERSION {
                    return Err(BundleError::Version(meta.format_version));
                }
                // Every string it carries, before anyone prints or acts on it.
                meta.check().map_err(|e| BundleError::Malformed {
                    entry: name.into(),
                    reason: e.to_string(),
                })?;
                self.blobs = BlobTable::new(&meta.blobs);
                self.edges = Edges::new(meta.blobs.len());
                for (at, b) in meta.blobs.iter().enumerate() {
                    if self.blobs.first_repeat() == Some(at) {
                        return Err(BundleError::Malformed {
                            entry: name.into(),
                            reason: format!("blob {} is declared twice", b.digest),
                        });
                    }
                    if b.role.is_manifest()
                        && b.media_type
                            .as_ref()
                            .is_none_or(|m| !manifest::is_any_manifest(m))
                    {
                        return Err(BundleError::Malformed {
                            entry: name.into(),
                            reason: format!(
                                "manifest blob {} has no manifest media type",
                                b.digest
                            ),
                        });
                    }
                }
                self.meta_sums = Some(sums);
                self.meta = Some(Arc::new(meta));
                self.stage = Stage::Meta;
                Ok(())
            }
            (Stage::Layout, _) => Err(BundleError::HeadOrder {
                expected: META_PATH,
                found: name.into(),
            }),
            (Stage::Meta, SIG_PATH) if self.signature.is_none() => {
                let sig = read_small(entry, name, size, MAX_SIG)?;
                // A minisign signature is four lines of text; its comments
                // are shown to the operator, so they are checked as text.
                let text = std::str::from_utf8(&sig).map_err(|_| BundleError::Malformed {
                    entry: name.into(),
                    reason: "a minisign signature is text, this is not UTF-8".into(),
                })?;
                let lines: Vec<&str> = text
                    .strip_suffix('\n')
                    .unwrap_or(text)
                    .split('\n')
                    .collect();
                if lines.len() != 4 {
                    return Err(BundleError::Malformed {
                        entry: name.into(),
                        reason: format!(
                            "a minisign signature has 4 lines, this one {}",
                            lines.len()
                        ),
                    });
                }
                for line in lines {
                    crate::text::check("a signature line", line, MAX_SIG as usize).map_err(
                        |e| BundleError::Malformed {
                            entry: name.into(),
                            reason: e.to_string(),
                        },
                    )?;
                }
                self.signature = Some(sig);
                Ok(())
            }
            (Stage::Meta, "index.json") => {
                let bytes = read_small(entry, name, size, MAX_INDEX)?;
                self.index(bytes, visitor)?;
                self.stage = Stage::Index;
                Ok(())
            }
            (Stage::Meta, _) => Err(BundleError::HeadOrder {
                expected: "index.json",
                found: name.into(),
            }),
            (Stage::Index, _) => self.blob(name, size, entry, options, visitor),
        }
    }

    fn index(&mut self, bytes: Vec<u8>, visitor: &mut dyn Visitor) -> Result<(), BundleError> {
        let malformed = |reason: String| BundleError::Malformed {
            entry: "index.json".into(),
            reason,
        };
        let Some(meta) = self.meta.clone() else {
            return Err(BundleError::HeadOrder {
                expected: META_PATH,
                found: "index.json".into(),
            });
        };
        let actual = Digest::of(&bytes);
        if actual != meta.index.digest || bytes.len() as u64 != meta.index.size {
            return Err(BundleError::IndexMismatch {
                expected: meta.index.digest.clone(),
                actual,
            });
        }
        let parsed = manifest::parse(&bytes, Some(manifest::OCI_INDEX))
            .map_err(|e| malformed(e.to_string()))?;
        drop(bytes);
        if !parsed.is_index() {
            return Err(malformed("index.json must be an image index".into()));
        }
        // index.json and bundle.json must list the same items.
        let legacy = legacy_names(&meta);
        let from_index: BTreeSet<(String, Digest)> = parsed
            .manifests
            .iter()
            .map(|d| (index_key(&legacy, d), d.digest.clone()))
            .collect();
        let from_meta: BTreeSet<(String, Digest)> = meta
            .items
            .iter()
            .map(|i| (i.index_name(), i.digest.clone()))
            .collect();
        if from_index != from_meta || parsed.manifests.len() != meta.items.len() {
            let diff = from_index
                .symmetric_difference(&from_meta)
                .next()
                .map(|(r, d)| format!("{r}@{d}"))
                .unwrap_or_else(|| "a duplicate entry".into());
            return Err(malformed(format!(
                "index.json and ferry/bundle.json list different items ({diff})"
            )));
        }
        // File paths must be safe, in their kind's place and unique before
        // anyone writes them anywhere.
        crate::placement::check_items(&meta.items)
            .map_err(|e| malformed(format!("unsafe file path: {e}")))?;
        // Every annotation is single-line text, and those ferry writes say
        // what bundle.json says (containerd names images by
        // `io.containerd.image.name`).
        let items: HashMap<(String, &Digest), &Item> = meta
            .items
            .iter()
            .map(|i| ((i.index_name(), &i.digest), i))
            .collect();
        for d in &parsed.manifests {
            let Some(item) = items.get(&(index_key(&legacy, d), &d.digest)) else {
                continue;
            };
            for (key, value) in &d.annotations {
                crate::text::check(
                    &format!("annotation `{}`", escape(key)),
                    key,
                    crate::text::MAX_TEXT,
                )
                .and_then(|()| {
                    crate::text::check(
                        &format!("annotation `{}`", escape(key)),
                        value,
                        crate::text::MAX_TEXT,
                    )
                })
                .map_err(|e| malformed(format!("item `{}`: {e}", item.reference)))?;
                let expected = match key.as_str() {
                    ANN_IMAGE_NAME | ANN_SOURCE => Some(item.reference.clone()),
                    ANN_KIND => Some(item.kind.as_str().to_string()),
                    ANN_PATH => Some(item.path.clone().unwrap_or_default()),
                    ANN_SUBJECT | ANN_CONTAINERD_SUBJECT => Some(
                        item.subject
                            .as_ref()
                            .map(|s| s.to_string())
                            .unwrap_or_default(),
                    ),
                    _ => None,
                };
                if let Some(expected) = expected.filter(|e| e != value) {
                    return Err(malformed(format!(
                        "item `{}`: annotation `{key}` is `{}`, but ferry/bundle.json says `{}`",
                        item.reference,
                        escape(value),
                        escape(&expected)
                    )));
                }
            }
            if item.path.is_some() {
                self.file_items
                    .entry(item.digest.clone())
                    .or_default()
                    .push((*item).clone());
            }
        }
        // What the graph check at the end needs of index.json: whether each
        // item's descriptor agrees with bundle.json. The index itself goes
        // to the visitor and is not kept.
        self.index_disagrees = disagreements(&meta, &legacy, &parsed.manifests);
        let Some(sums) = self.meta_sums.take() else {
            return Err(BundleError::HeadOrder {
                expected: META_PATH,
                found: "index.json".into(),
            });
        };
        let head = Head {
            meta: Arc::clone(&meta),
            meta_sha256: sums.sha256,
            meta_prehash: sums.prehash,
            signature: self.signature.take(),
            index: parsed.manifests.into(),
        };
        visitor.head(&head).map_err(BundleError::Visitor)
    }
}

/// Items (by their place in bundle.json) whose index.json descriptor does
/// not say what bundle.json says (size, media type), and how. Each item's
/// descriptor is the last index.json entry with its name and digest.
fn disagreements(
    meta: &BundleMeta,
    legacy: &LegacyNames<'_>,
    index: &[Descriptor],
) -> BTreeMap<usize, String> {
    let by_key: BTreeMap<(String, &Digest), &Descriptor> = index
        .iter()
        .map(|d| ((index_key(legacy, d), &d.digest), d))
        .collect();
    let mut out = BTreeMap::new();
    for (at, item) in meta.items.iter().enumerate() {
        let Some(desc) = by_key.get(&(item.index_name(), &item.digest)) else {
            continue;
        };
        if desc.size != item.size || desc.media_type.as_ref() != item.media_type.as_ref() {
            out.insert(
                at,
                format!(
                    "index.json descriptor ({} bytes, `{}`) disagrees with bundle.json ({} bytes, `{}`)",
                    desc.size, desc.media_type, item.size, item.media_type
                ),
            );
        }
    }
    out
}

/// File items by (reference, digest) → their [`Item::index_name`]: an
/// index.json entry of a bundle written before file items got
/// grammar-valid names carries the URL as its `ref.name`.
pub(super) type LegacyNames<'a> = HashMap<(&'a str, &'a Digest), String>;

pub(super) fn legacy_names(meta: &BundleMeta) -> LegacyNames<'_> {
    meta.items
        .iter()
        .filter(|i| !i.kind.is_registry())
        .map(|i| ((i.reference.as_str(), &i.digest), i.index_name()))
        .collect()
}

/// The item name an index.json entry stands for: its `ref.name`, or for a
/// legacy file entry named by its URL, that item's [`Item::index_name`].
pub(super) fn index_key(legacy: &LegacyNames<'_>, d: &Descriptor) -> String {
    let name = d.annotations.get(ANN_REF_NAME).cloned().unwrap_or_default();
    legacy
        .get(&(name.as_str(), &d.digest))
        .cloned()
        .unwrap_or(name)
}
