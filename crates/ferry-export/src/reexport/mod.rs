//! `ferry export --from`: a new bundle built offline from a subset of what
//! a bundle or a mirror store holds, for the next network behind the gap.
//!
//! ```text
//! bundle (verified whole by the caller first) ──read again: its head must be the
//!     verified one; manifests kept; the selected blobs staged, each hashed as read ──┐
//! store (index.json entries) ──each entry's origin annotations re-checked (kind,   │
//!     upstream name, path), every manifest re-hashed; the selected blobs staged    │
//!     (linked or copied from blobs/ or a file item's file in files/, then hashed)  │
//!                                                                                  ▼
//!   select (spec references, lock digests, or everything; plus the provenance of
//!   what is selected) ─▶ resolved items, every one local ─▶ the normal writer
//! ```
//!
//! Nothing is fetched: every item is built as *local* (its blobs are in the
//! staging directory, which the writer reads as its cache; a local blob
//! missing there is an error, never a download) and the writer's client is
//! built here with no hosts and no credentials. The staging directory is a
//! temporary directory beside the output, removed when done.
//!
//! Modules: this file (the operation, the selection, the resolved items it
//! hands the writer), `bundle.rs` (staging from a verified bundle, read
//! again) and `store.rs` (staging from a mirror store, its entries' origins
//! re-checked).

mod bundle;
mod store;

use bundle::stage_bundle;
use store::stage_store;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use ferry_bundle::digest::HashingReader;
use ferry_bundle::manifest::{self, MediaType, Parsed};
use ferry_bundle::meta::{Absent, BlobMeta, Item, Kind, Origin, OriginKind, Verification};
use ferry_bundle::placement::{check_path, Placements};
use ferry_bundle::reader::{read_bundle, BlobFault, BundleError, Head, ReadOptions, VisitResult};
use ferry_bundle::store_layout::{BlobDir, StagedBlob, ANN_KIND, ANN_PATH, ANN_SOURCE, FILES_DIR};
use ferry_bundle::writer::Compression;
use ferry_bundle::{Digest, Reference};
use ferry_registry::{Client, ClientConfig, Repo};

use crate::resolve::{Resolved, ResolvedImage, ResolvedManifest};
use crate::since::SinceError;
use crate::{Events, ExportError, ExportOptions, ExportSummary};

/// The largest manifest read from a store (the distribution spec's limit).
const MANIFEST_LIMIT: u64 = 4 << 20;

/// Why a re-export failed (nothing is left at the output).
#[derive(Debug, thiserror::Error)]
pub enum ReexportError {
    /// An item asked for is not in the source.
    #[error("`{reference}` is not in the source `{}` (re-export carries only what the source holds)", .source_path.display())]
    Missing {
        /// What was asked for.
        reference: String,
        /// The source.
        source_path: PathBuf,
    },
    /// A manifest an item needs is not in the source.
    #[error("the source lacks manifest {digest} of `{item}`")]
    MissingManifest {
        /// The manifest.
        digest: Digest,
        /// The item.
        item: String,
    },
    /// A manifest in the source does not parse.
    #[error("manifest {digest} of `{item}` does not parse: {error}")]
    Manifest {
        /// The manifest.
        digest: Digest,
        /// The item.
        item: String,
        /// Why.
        error: String,
    },
    /// A store entry's origin annotation (`dev.ferry.source`, `.kind`,
    /// `.path`) is refused: the store was edited since ferry wrote it.
    #[error("store entry `{}`: {reason}; the store was edited since ferry wrote it, nothing was written", ferry_bundle::text::escape(.entry))]
    Annotation {
        /// The entry (`repository:tag`, `repository@digest`, or a digest).
        entry: String,
        /// Which annotation, its value (escaped), and why.
        reason: String,
    },
    /// A store entry names something that is not an image reference.
    #[error("store entry `{}` is not an image reference: {error}", ferry_bundle::text::escape(.reference))]
    Reference {
        /// The text.
        reference: String,
        /// Why.
        error: String,
    },
    /// A blob or manifest of the source does not match its digest or size
    /// (the source was altered).
    #[error("source blob {digest} at `{}` {reason}; the source was altered, nothing was written", .path.display())]
    Tampered {
        /// The blob.
        digest: Digest,
        /// Where it was read.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A file of the source or of the staging directory cannot be used.
    #[error("failed to {op} `{}`", .path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The source bundle failed while it was read again.
    #[error("bundle `{}` failed while it was read", .path.display())]
    Read {
        /// The bundle.
        path: PathBuf,
        /// Why.
        #[source]
        source: BundleError,
    },
    /// The source bundle is not the one that was verified.
    #[error("bundle `{}` changed since it was verified", .path.display())]
    Changed {
        /// The bundle.
        path: PathBuf,
    },
    /// A `--since` receipt cannot be used.
    #[error(transparent)]
    Since(#[from] SinceError),
    /// The signature policy refused an item.
    #[error(transparent)]
    Policy(crate::trust::PolicyCheckError),
    /// Writing the bundle failed.
    #[error(transparent)]
    Write(#[from] ExportError),
    /// A blocking task died.
    #[error("re-export thread failed: {0}")]
    Join(String),
    /// The writer's (host-less) client could not be built.
    #[error("failed to set up the writer: {0}")]
    Client(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ReexportError + 'a {
    move |source| ReexportError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What to carry.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Everything the source holds.
    All,
    /// These references (a spec's images): a tag the source holds, or a
    /// digest.
    References(Vec<Reference>),
    /// These digests (a lock's images and artifacts), with the reference
    /// each was locked under.
    Digests(Vec<(String, Digest)>),
}

/// One `index.json` entry of a store (the store's own reader lists them).
#[derive(Debug, Clone)]
pub struct StoreEntry {
    /// Repository path in the store.
    pub repository: String,
    /// Tag, when tagged.
    pub tag: Option<String>,
    /// Manifest digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: MediaType,
    /// `dev.ferry.source`: the upstream reference of the item it was
    /// imported for (a file item's URL), as found (re-checked here).
    pub source: Option<String>,
    /// `dev.ferry.kind`: that item's kind, as found.
    pub kind: Option<String>,
    /// `dev.ferry.path`: that item's path on the file server, as found.
    pub path: Option<String>,
}

impl StoreEntry {
    /// How messages name the entry: `repository:tag`, `repository@digest`,
    /// or the digest of a file item's entry.
    fn shown(&self) -> String {
        match (&self.tag, self.repository.is_empty()) {
            (_, true) => self.digest.to_string(),
            (Some(t), false) => format!("{}:{t}", self.repository),
            (None, false) => format!("{}@{}", self.repository, self.digest),
        }
    }

    /// Whether it carries none of the origin annotations (an older store).
    fn unannotated(&self) -> bool {
        self.source.is_none() && self.kind.is_none() && self.path.is_none()
    }
}

/// Where the re-export reads from.
#[derive(Debug, Clone)]
pub enum FromSource {
    /// A bundle the caller verified (`ferry_import::verify`) whole.
    Bundle {
        /// The bundle file, parts manifest or first part.
        path: PathBuf,
        /// Its head as verified: the re-read must find the same.
        head: Box<Head>,
    },
    /// A mirror store.
    Store {
        /// Its directory (`blobs/sha256/<hex>`).
        dir: PathBuf,
        /// Its `index.json` entries.
        entries: Vec<StoreEntry>,
        /// Store repository → the upstream `registry/repository` it was
        /// imported from (items are named by it; unnamed repositories keep
        /// the store's path).
        upstream: HashMap<String, String>,
    },
}

/// What a re-export does, as options.
#[derive(Debug, Clone)]
pub struct ReexportRun {
    /// Output bundle file.
    pub output: PathBuf,
    /// The new bundle's name (`None`: the source's).
    pub name: Option<String>,
    /// What to carry.
    pub selection: Selection,
    /// `--since`: receipts of the destinations.
    pub since: Vec<PathBuf>,
    /// Outer compression.
    pub compression: Compression,
    /// Sign `ferry/bundle.json` with this key.
    pub sign_key: Option<ferry_bundle::sign::SigningKey>,
    /// Cut into parts of this many bytes.
    pub split: Option<u64>,
    /// A spec's `verify:` section, re-checked offline over the carried
    /// signatures (else a bundle's recorded verdicts are carried).
    pub policy: Option<ferry_bundle::spec::Spec>,
}

/// The source, read: its items, every manifest (verified) and its policy.
struct Content {
    origin: Origin,
    items: Vec<Item>,
    manifests: HashMap<Digest, Bytes>,
    absent: Vec<Absent>,
    verification: Option<Verification>,
    /// Store entries without origin annotations (an older ferry wrote
    /// them): carried as images named by their store repository.
    unannotated: Vec<String>,
}

/// `ferry export --from`: reads the source, selects, stages the selected
/// blobs (each hashed), then writes the bundle through the normal writer.
pub async fn reexport(
    from: FromSource,
    run: ReexportRun,
    ev: &Events,
) -> Result<ExportSummary, ReexportError> {
    let base = crate::since::load_offline(&run.since)?;
    let staging = staging_dir(&run.output)?;
    let blob_dir = staging.path().join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir).map_err(io("create", &blob_dir))?;
    let selection = run.selection.clone();
    let (content, resolved) = tokio::task::spawn_blocking(move || match from {
        FromSource::Bundle { path, head } => stage_bundle(&path, &head, &selection, &blob_dir),
        FromSource::Store {
            dir,
            entries,
            upstream,
        } => stage_store(&dir, &entries, &upstream, &selection, &blob_dir),
    })
    .await
    .map_err(|e| ReexportError::Join(e.to_string()))??;
    if !content.unannotated.is_empty() {
        ev(crate::Event::Warning {
            message: format!(
                "{} store entr{} without origin annotations (imported by an older ferry): carried as images named by the store's repository (or the upstream the selection names): {}; import their bundle again to record their origin",
                content.unannotated.len(),
                if content.unannotated.len() == 1 { "y" } else { "ies" },
                content.unannotated.join(", ")
            ),
        });
    }
    let client = offline_client()?;
    let verification = match run.policy.as_ref().filter(|s| s.verify.is_some()) {
        Some(spec) => policy_offline(&client, spec, &resolved, staging.path(), ev).await?,
        None => carried_verdicts(content.verification, &resolved),
    };
    let opts = ExportOptions {
        output: run.output,
        compression: run.compression,
        cache_dir: staging.path().to_path_buf(),
        stream: false,
        jobs: 1,
        name: run.name.unwrap_or_else(|| content.origin.name.clone()),
        base,
        sign_key: run.sign_key,
        split: run.split,
        verification,
        origin: Some(content.origin),
    };
    let summary = crate::export(&client, resolved, &opts, ev).await?;
    drop(staging);
    Ok(summary)
}

/// The writer's client: no hosts, no credentials. Every re-exported item
/// is local, so the writer never asks it for anything.
fn offline_client() -> Result<Client, ReexportError> {
    let config = ClientConfig {
        hosts: HashMap::new(),
        docker_config: None,
        max_attempts: 1,
        ..ClientConfig::default()
    };
    Client::new(config).map_err(|e| ReexportError::Client(ferry_registry::chain(&e)))
}

/// A temporary directory beside the output for the staged blobs.
fn staging_dir(output: &Path) -> Result<tempfile::TempDir, ReexportError> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".ferry-reexport-")
        .tempdir_in(&parent)
        .map_err(io("create a staging directory in", &parent))
}

/// The spec's `verify:` policy over the carried signatures, read from the
/// staging directory.
async fn policy_offline(
    client: &Client,
    spec: &ferry_bundle::spec::Spec,
    resolved: &Resolved,
    staging: &Path,
    ev: &Events,
) -> Result<Option<Verification>, ReexportError> {
    let policy = crate::trust::load_policy(spec).map_err(ReexportError::Policy)?;
    let (Some(p), Some(v)) = (&policy, &spec.verify) else {
        return Ok(None);
    };
    let out = crate::trust::check(client, resolved, p, v, Some(staging))
        .await
        .map_err(ReexportError::Policy)?;
    for (r, w) in &out.warnings {
        ev(crate::Event::Warning {
            message: format!("signature policy (warn): {r}: {w}"),
        });
    }
    ev(crate::Event::PolicyChecked {
        verdicts: out.verification.verdicts.clone(),
    });
    Ok(Some(out.verification))
}

/// A source bundle's policy and the verdicts of the items carried.
fn carried_verdicts(v: Option<Verification>, resolved: &Resolved) -> Option<Verification> {
    let mut v = v?;
    let names: HashSet<String> = resolved.images.iter().map(|i| i.name()).collect();
    v.verdicts.retain(|x| names.contains(&x.reference));
    Some(v)
}

/// The items `selection` names among `items`, plus the provenance (items
/// whose subject is selected) of everything selected.
fn select(
    items: &[Item],
    selection: &Selection,
    source: &Path,
) -> Result<Vec<Item>, ReexportError> {
    let missing = |reference: String| ReexportError::Missing {
        reference,
        source_path: source.to_path_buf(),
    };
    let registry_items = || items.iter().filter(|i| i.kind.is_registry());
    let mut chosen: Vec<&Item> = Vec::new();
    match selection {
        Selection::All => chosen.extend(items.iter()),
        Selection::References(refs) => {
            for r in refs {
                let wanted = r.to_string();
                let found = match &r.digest {
                    Some(d) => {
                        let by_digest: Vec<&Item> =
                            items.iter().filter(|i| &i.digest == d).collect();
                        by_digest
                            .iter()
                            .find(|i| same_name(&i.reference, r))
                            .or_else(|| by_digest.first())
                            .copied()
                    }
                    None => registry_items().find(|i| {
                        Reference::parse(&i.reference)
                            .map(|x| x.to_string() == wanted)
                            .unwrap_or(false)
                    }),
                };
                chosen.push(found.ok_or_else(|| missing(wanted.clone()))?);
            }
        }
        Selection::Digests(pins) => {
            for (reference, d) in pins {
                let found = items
                    .iter()
                    .find(|i| &i.digest == d && &i.reference == reference)
                    .or_else(|| items.iter().find(|i| &i.digest == d));
                chosen.push(found.ok_or_else(|| missing(format!("{reference}@{d}")))?);
            }
        }
    }
    // The provenance of what is selected, and of that provenance.
    let mut digests: HashSet<&Digest> = chosen.iter().map(|i| &i.digest).collect();
    loop {
        let more: Vec<&Item> = items
            .iter()
            .filter(|i| {
                i.subject.as_ref().is_some_and(|s| digests.contains(s))
                    && !chosen.iter().any(|c| c.reference == i.reference)
            })
            .collect();
        if more.is_empty() {
            break;
        }
        for i in more {
            digests.insert(&i.digest);
            chosen.push(i);
        }
    }
    let mut out: Vec<Item> = Vec::new();
    for i in chosen {
        if !out.iter().any(|o| o.reference == i.reference) {
            out.push(i.clone());
        }
    }
    Ok(out)
}

fn same_name(item_ref: &str, r: &Reference) -> bool {
    Reference::parse(item_ref)
        .map(|x| x.registry == r.registry && x.repository == r.repository)
        .unwrap_or(false)
}

/// The selected items as resolved, local items: their manifests from the
/// source, index children flattened in order, absent children as recorded.
fn to_resolved(content: &Content, selected: &[Item]) -> Result<Resolved, ReexportError> {
    let absent: HashSet<(&Digest, &Digest)> = content
        .absent
        .iter()
        .map(|a| (&a.parent, &a.digest))
        .collect();
    let mut images = Vec::new();
    for item in selected {
        let top = manifest_of(
            content,
            &item.digest,
            &item.reference,
            Some(item.media_type.as_ref()),
        )?;
        let mut children = Vec::new();
        let mut item_absent = Vec::new();
        let mut queue = vec![top.clone()];
        while let Some(m) = queue.pop() {
            for d in m.parsed.manifests.iter().rev() {
                if !manifest::is_any_manifest(&d.media_type) {
                    continue;
                }
                if absent.contains(&(&m.digest, &d.digest)) {
                    item_absent.push(Absent {
                        digest: d.digest.clone(),
                        parent: m.digest.clone(),
                        platform: d.platform.as_ref().map(|p| p.to_short()),
                    });
                    continue;
                }
                let mut child = manifest_of(
                    content,
                    &d.digest,
                    &item.reference,
                    Some(d.media_type.as_ref()),
                )?;
                child.platform = d.platform.as_ref().map(|p| p.to_short());
                queue.push(child);
            }
            if m.digest != top.digest {
                children.push(m);
            }
        }
        let reference = match Reference::parse(&item.reference) {
            Ok(r) => r,
            Err(_) => crate::local::placeholder_ref(&item.digest).map_err(|error| {
                ReexportError::Reference {
                    reference: item.reference.clone(),
                    error,
                }
            })?,
        };
        images.push(ResolvedImage {
            reference,
            display: Some(item.reference.clone()),
            kind: item.kind,
            repo: Repo {
                host: "ferry.invalid".into(),
                path: "local".into(),
            },
            filter: Vec::new(),
            top,
            children,
            absent: item_absent,
            path: item.path.clone(),
            local: true,
            content: None,
            url: None,
            subject: item.subject.clone(),
        });
    }
    images.sort_by_key(|a| a.name());
    Ok(Resolved { images })
}

fn manifest_of(
    content: &Content,
    digest: &Digest,
    item: &str,
    media_type: Option<&str>,
) -> Result<ResolvedManifest, ReexportError> {
    let bytes = content
        .manifests
        .get(digest)
        .ok_or_else(|| ReexportError::MissingManifest {
            digest: digest.clone(),
            item: item.to_string(),
        })?
        .clone();
    let parsed = parse(&bytes, digest, item, media_type)?;
    Ok(ResolvedManifest {
        media_type: if parsed.media_type.as_ref().is_empty() {
            MediaType::from(media_type.unwrap_or_default())
        } else {
            parsed.media_type.clone()
        },
        bytes,
        digest: digest.clone(),
        parsed,
        platform: None,
    })
}

fn parse(
    bytes: &[u8],
    digest: &Digest,
    item: &str,
    media_type: Option<&str>,
) -> Result<Parsed, ReexportError> {
    manifest::parse(bytes, media_type.filter(|m| !m.is_empty())).map_err(|e| {
        ReexportError::Manifest {
            digest: digest.clone(),
            item: item.to_string(),
            error: e.to_string(),
        }
    })
}

/// Every config and layer the resolved items need.
fn needed_blobs(resolved: &Resolved) -> BTreeSet<Digest> {
    resolved
        .images
        .iter()
        .flat_map(|i| i.blobs())
        .map(|d| d.digest)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::store::{entry_item, legacy_subject};
    use super::*;

    fn item(reference: &str, digest: u8, subject: Option<u8>) -> Item {
        Item {
            kind: Kind::Image,
            reference: reference.into(),
            digest: Digest::of(&[digest]),
            media_type: manifest::OCI_MANIFEST.into(),
            size: 1,
            platforms: vec![],
            path: None,
            subject: subject.map(|s| Digest::of(&[s])),
        }
    }

    #[test]
    fn a_selection_carries_the_provenance_of_what_it_names_and_refuses_what_is_missing() {
        let items = vec![
            item("reg.example/a:1", 1, None),
            item("reg.example/a:sha256-x.sig", 2, Some(1)),
            item("reg.example/a@sha256:00", 3, Some(2)),
            item("reg.example/b:1", 4, None),
        ];
        let refs = vec![Reference::parse("reg.example/a:1").unwrap()];
        let got = select(&items, &Selection::References(refs), Path::new("src")).unwrap();
        let names: Vec<&str> = got.iter().map(|i| i.reference.as_str()).collect();
        assert_eq!(
            names,
            [
                "reg.example/a:1",
                "reg.example/a:sha256-x.sig",
                "reg.example/a@sha256:00"
            ]
        );
        let by_digest = Selection::Digests(vec![("reg.example/b:1".into(), Digest::of(&[4]))]);
        assert_eq!(
            select(&items, &by_digest, Path::new("src")).unwrap().len(),
            1
        );
        let absent = Selection::References(vec![Reference::parse("reg.example/c:1").unwrap()]);
        let e = select(&items, &absent, Path::new("src")).unwrap_err();
        assert!(e.to_string().contains("reg.example/c:1"), "{e}");
    }

    fn entry(repository: &str, tag: Option<&str>, origin: [Option<&str>; 3]) -> StoreEntry {
        let [source, kind, path] = origin.map(|x| x.map(str::to_string));
        StoreEntry {
            repository: repository.into(),
            tag: tag.map(str::to_string),
            digest: Digest::of(b"m"),
            media_type: manifest::OCI_MANIFEST.into(),
            source,
            kind,
            path,
        }
    }

    #[test]
    fn store_entries_are_the_items_their_annotations_name_and_edits_are_refused() {
        let none = HashMap::new();
        let src = Some("reg.example/team/app:1");
        let it = entry_item(
            &entry(
                "reg-example/team/app",
                Some("1"),
                [src, Some("image"), None],
            ),
            &none,
        )
        .unwrap();
        assert_eq!(
            (it.kind, it.reference.as_str()),
            (Kind::Image, "reg.example/team/app:1")
        );
        // Pinned by tag and digest (import tags it), or by digest alone.
        let d = Digest::of(b"m");
        let pinned = format!("reg.example/team/app:1@{d}");
        let by_digest = format!("reg.example/team/app@{d}");
        for (tag, source) in [(Some("1"), &pinned), (None, &by_digest)] {
            let e = entry("r/a", tag, [Some(source), Some("image"), None]);
            assert_eq!(entry_item(&e, &none).unwrap().reference, *source);
        }
        let elsewhere = format!("reg.example/team/app@{}", Digest::of(b"other"));
        let url = Some("https://dl.example/t.tgz");
        let it = entry_item(
            &entry("", None, [url, Some("file"), Some("files/t.tgz")]),
            &none,
        )
        .unwrap();
        assert_eq!(
            (it.kind, it.path.as_deref()),
            (Kind::File, Some("files/t.tgz"))
        );
        // An older store: an image named by its repository (or the upstream map).
        let upstream = HashMap::from([("a/b".to_string(), "reg.example/a/b".to_string())]);
        let it = entry_item(&entry("a/b", Some("2"), [None, None, None]), &upstream).unwrap();
        assert_eq!(
            (it.kind, it.reference.as_str()),
            (Kind::Image, "reg.example/a/b:2")
        );
        for (e, says) in [
            (
                entry("r/a", Some("1"), [src, Some("bogus\u{1b}"), None]),
                "not a kind ferry knows",
            ),
            (
                entry("r/a", Some("1"), [None, Some("image"), None]),
                "dev.ferry.source` is missing",
            ),
            (
                entry("r/a", Some("1"), [src, None, None]),
                "dev.ferry.kind` is missing",
            ),
            (
                entry("r/a", Some("2"), [src, Some("image"), None]),
                "does not name the entry's tag",
            ),
            (
                entry("r/a", None, [src, Some("image"), None]),
                "does not name the entry's digest",
            ),
            (
                entry("r/a", None, [Some(&elsewhere), Some("image"), None]),
                "does not name the entry's digest",
            ),
            (
                entry("", None, [src, Some("image"), None]),
                "the entry has no repository",
            ),
            (
                entry("r/a", Some("1"), [Some("bad ref\n"), Some("image"), None]),
                "dev.ferry.source",
            ),
            (
                entry("", None, [url, Some("file"), None]),
                "dev.ferry.path` is missing",
            ),
            (
                entry("", None, [url, Some("file"), Some("../etc/passwd")]),
                "dev.ferry.path",
            ),
            (
                entry("", None, [url, Some("file"), Some("helm/x/y.tgz")]),
                "dev.ferry.path",
            ),
            (
                entry("r/a", Some("1"), [src, Some("image"), Some("files/x")]),
                "dev.ferry.path",
            ),
        ] {
            let err = entry_item(&e, &none).err().map(|x| x.to_string());
            let err = err.unwrap_or_else(|| panic!("accepted: {e:?}"));
            assert!(
                err.contains(says) && err.contains("was edited"),
                "{says}: {err}"
            );
            assert!(!err.contains('\u{1b}') && !err.contains('\n'), "{err:?}");
        }
    }

    #[test]
    fn cosign_tags_name_their_subject() {
        let d = Digest::of(b"x");
        assert_eq!(
            legacy_subject(&format!("sha256-{}.sig", d.hex())),
            Some(d.clone())
        );
        assert_eq!(legacy_subject(&format!("sha256-{}.att", d.hex())), Some(d));
        assert_eq!(legacy_subject("1.0"), None);
        assert_eq!(legacy_subject("sha256-zz.sig"), None);
    }
}
