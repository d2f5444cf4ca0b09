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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use ferry_bundle::digest::HashingReader;
use ferry_bundle::manifest::{self, Parsed};
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
    pub media_type: String,
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
    let summary = crate::export(&client, &resolved, &opts, ev).await?;
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
            Some(&item.media_type),
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
                let mut child =
                    manifest_of(content, &d.digest, &item.reference, Some(&d.media_type))?;
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
        media_type: if parsed.media_type.is_empty() {
            media_type.unwrap_or_default().to_string()
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

// ---------------------------------------------------------------- bundle

/// Reads the verified bundle again: the head must be the verified one
/// (same `bundle.json` bytes); manifests are kept; once they are all in
/// (the bundle puts them first), the selection is made and its blobs are
/// staged as they stream, each renamed into place only once the reader
/// found it matches its digest. The whole stream is hashed for the origin.
fn stage_bundle(
    path: &Path,
    verified: &Head,
    selection: &Selection,
    blob_dir: &Path,
) -> Result<(Content, Resolved), ReexportError> {
    let src = ferry_bundle::parts::open_bundle(path).map_err(|e| ReexportError::Io {
        op: "open",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut hashing = HashingReader::new(src);
    let mut stager = Stager {
        path,
        verified_meta: Digest::of(&verified.meta_bytes),
        selection,
        blob_dir,
        head: None,
        manifests: HashMap::new(),
        chosen: None,
        open: None,
        failed: None,
    };
    let read = read_bundle(
        std::io::BufReader::with_capacity(1 << 20, &mut hashing),
        ReadOptions::default(),
        &mut stager,
    );
    if let Some(e) = stager.failed.take() {
        return Err(e);
    }
    read.map_err(|source| ReexportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // What the tar did not consume (padding, the end of the last part).
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io("read", path))?;
    let (sha256, _, _) = hashing.finish();
    let head = stager.head.take().ok_or_else(|| ReexportError::Changed {
        path: path.to_path_buf(),
    })?;
    if stager.chosen.is_none() {
        // No blob followed the manifests: select now.
        stager.choose();
        if let Some(e) = stager.failed.take() {
            return Err(e);
        }
    }
    let (_, resolved, _) = stager.chosen.take().ok_or_else(|| ReexportError::Changed {
        path: path.to_path_buf(),
    })?;
    let content = Content {
        origin: Origin {
            kind: OriginKind::Bundle,
            name: head.meta.name.clone(),
            sha256: Some(sha256),
            meta_sha256: Some(Digest::of(&head.meta_bytes)),
            tool: Some(head.meta.tool.clone()),
        },
        items: head.meta.items.clone(),
        manifests: std::mem::take(&mut stager.manifests),
        absent: head.meta.absent.clone(),
        verification: head.meta.verification.clone(),
        unannotated: Vec::new(),
    };
    Ok((content, resolved))
}

/// The visitor of the second read.
struct Stager<'a> {
    path: &'a Path,
    verified_meta: Digest,
    selection: &'a Selection,
    blob_dir: &'a Path,
    head: Option<Head>,
    manifests: HashMap<Digest, Bytes>,
    /// The selection, its resolution and the blobs to stage.
    chosen: Option<(Vec<Item>, Resolved, BTreeSet<Digest>)>,
    /// The blob being staged.
    open: Option<StagedBlob>,
    /// Why the read was stopped.
    failed: Option<ReexportError>,
}

#[derive(Debug)]
struct Stop;
impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("re-export stopped")
    }
}
impl std::error::Error for Stop {}

impl Stager<'_> {
    fn fail(&mut self, e: ReexportError) -> VisitResult {
        self.failed = Some(e);
        Err(Box::new(Stop))
    }

    /// Selects once the manifests are in.
    fn choose(&mut self) {
        let Some(head) = &self.head else { return };
        let content = Content {
            origin: Origin {
                kind: OriginKind::Bundle,
                name: String::new(),
                sha256: None,
                meta_sha256: None,
                tool: None,
            },
            items: Vec::new(),
            manifests: std::mem::take(&mut self.manifests),
            absent: head.meta.absent.clone(),
            verification: None,
            unannotated: Vec::new(),
        };
        let r = select(&head.meta.items, self.selection, self.path).and_then(|items| {
            let resolved = to_resolved(&content, &items)?;
            let needed = needed_blobs(&resolved);
            Ok((items, resolved, needed))
        });
        self.manifests = content.manifests;
        match r {
            Ok(c) => self.chosen = Some(c),
            Err(e) => self.failed = Some(e),
        }
    }
}

impl ferry_bundle::reader::Visitor for Stager<'_> {
    fn head(&mut self, head: &Head) -> VisitResult {
        if Digest::of(&head.meta_bytes) != self.verified_meta {
            let e = ReexportError::Changed {
                path: self.path.to_path_buf(),
            };
            return self.fail(e);
        }
        self.head = Some(head.clone());
        Ok(())
    }
    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult {
        self.manifests
            .insert(blob.digest.clone(), Bytes::copy_from_slice(bytes));
        Ok(())
    }
    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        if self.chosen.is_none() {
            self.choose();
            if self.failed.is_some() {
                return Err(Box::new(Stop));
            }
        }
        let wanted = self
            .chosen
            .as_ref()
            .is_some_and(|(_, _, n)| n.contains(&blob.digest));
        if !wanted {
            return Ok(());
        }
        // The reader hashes it: the staged copy is only counted.
        let staging = BlobDir::scratch(self.blob_dir);
        match staging
            .stage_verified(&blob.digest, blob.size)
            .and_then(|mut s| s.copy_from(&mut *data).map(|_| s))
        {
            Ok(staged) => self.open = Some(staged),
            Err(e) => return self.fail(io("stage", self.blob_dir)(std::io::Error::other(e))),
        }
        Ok(())
    }
    fn blob_end(&mut self, blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        let Some(staged) = self.open.take() else {
            return Ok(());
        };
        if verdict.is_err() {
            return Ok(()); // dropped: removed
        }
        if let Err(e) = staged.commit() {
            let dest = self.blob_dir.join(blob.digest.hex());
            return self.fail(io("rename", &dest)(std::io::Error::other(e)));
        }
        Ok(())
    }
}

// ----------------------------------------------------------------- store

/// What a store entry is: the item it was imported for, as its origin
/// annotations say (re-checked), else (an entry an older ferry wrote) an
/// image named by the upstream the selection names or the store's path.
struct EntryItem {
    kind: Kind,
    reference: String,
    path: Option<String>,
}

/// Reads the store: every entry's origin (re-checked: the store is a file
/// tree anyone on the mirror host could edit), its manifest and the index
/// children it reaches, each re-hashed against its digest as read (a child
/// the store lacks was left out by a platform filter: it is recorded
/// absent), the files of file items in the store's file tree; then selects,
/// and stages the selected blobs (linked, or copied), each hashed.
fn stage_store(
    dir: &Path,
    entries: &[StoreEntry],
    upstream: &HashMap<String, String>,
    selection: &Selection,
    blob_dir: &Path,
) -> Result<(Content, Resolved), ReexportError> {
    let mut manifests: HashMap<Digest, Bytes> = HashMap::new();
    let mut items: Vec<Item> = Vec::new();
    let mut absent: Vec<Absent> = Vec::new();
    let mut unannotated: Vec<String> = Vec::new();
    // The file-tree path of every file item's layer, each path claimed once.
    let mut in_tree: HashMap<Digest, PathBuf> = HashMap::new();
    let mut claims = Placements::new();
    for e in entries {
        let it = entry_item(e, upstream)?;
        if e.unannotated() {
            unannotated.push(e.shown());
        }
        let reference = it.reference;
        let bytes = read_store_manifest(dir, &e.digest)?;
        let parsed = parse(&bytes, &e.digest, &reference, Some(&e.media_type))?;
        if let Some(path) = &it.path {
            let layers = claims
                .claim_item(it.kind, &reference, path, &parsed)
                .map_err(|err| ReexportError::Annotation {
                    entry: e.shown(),
                    reason: err.to_string(),
                })?;
            for (rel, d) in layers {
                in_tree.insert(d.digest, dir.join(FILES_DIR).join(rel.as_str()));
            }
        }
        let platforms = read_children(dir, e, &reference, &parsed, &mut manifests, &mut absent)?;
        let subject = e
            .tag
            .as_deref()
            .and_then(legacy_subject)
            .or_else(|| parsed.subject.as_ref().map(|s| s.digest.clone()));
        items.push(Item {
            kind: it.kind,
            reference,
            digest: e.digest.clone(),
            media_type: if parsed.media_type.is_empty() {
                e.media_type.clone()
            } else {
                parsed.media_type.clone()
            },
            size: bytes.len() as u64,
            platforms,
            path: it.path,
            subject,
        });
        manifests.insert(e.digest.clone(), bytes);
    }
    absent.sort_by(|a, b| (&a.parent, &a.digest).cmp(&(&b.parent, &b.digest)));
    absent.dedup();
    let content = Content {
        origin: Origin {
            kind: OriginKind::Store,
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "store".into()),
            sha256: None,
            meta_sha256: None,
            tool: None,
        },
        items,
        manifests,
        absent,
        verification: None,
        unannotated,
    };
    let selected = select(&content.items, selection, dir)?;
    let resolved = to_resolved(&content, &selected)?;
    for d in needed_blobs(&resolved) {
        stage_store_blob(dir, &d, in_tree.get(&d), blob_dir)?;
    }
    Ok((content, resolved))
}

/// The item a store entry stands for. With origin annotations: all of
/// `dev.ferry.source` and `dev.ferry.kind` present, the kind one ferry
/// knows, the source a reference of that kind (`Item::check`, as a
/// bundle's items are checked) agreeing with the entry's tag or digest, the
/// path in its kind's place. Without any: an image, as before the
/// annotations existed.
fn entry_item(
    e: &StoreEntry,
    upstream: &HashMap<String, String>,
) -> Result<EntryItem, ReexportError> {
    if e.unannotated() {
        let name = upstream
            .get(&e.repository)
            .cloned()
            .unwrap_or_else(|| e.repository.clone());
        let reference = match &e.tag {
            Some(t) => format!("{name}:{t}"),
            None => format!("{name}@{}", e.digest),
        };
        Reference::parse(&reference).map_err(|err| ReexportError::Reference {
            reference: reference.clone(),
            error: err.to_string(),
        })?;
        return Ok(EntryItem {
            kind: Kind::Image,
            reference,
            path: None,
        });
    }
    let refused = |key: &str, value: Option<&str>, why: String| ReexportError::Annotation {
        entry: e.shown(),
        reason: match value {
            Some(v) => format!("`{key}` = `{}` {why}", ferry_bundle::text::escape(v)),
            None => format!("`{key}` {why}"),
        },
    };
    let missing = "is missing while other origin annotations are present".to_string();
    let source = e
        .source
        .as_deref()
        .ok_or_else(|| refused(ANN_SOURCE, None, missing.clone()))?;
    let kind_text = e
        .kind
        .as_deref()
        .ok_or_else(|| refused(ANN_KIND, None, missing))?;
    let kind: Kind = serde_json::from_value(serde_json::Value::String(kind_text.to_string()))
        .map_err(|_| {
            refused(
                ANN_KIND,
                Some(kind_text),
                "is not a kind ferry knows".into(),
            )
        })?;
    let probe = Item {
        kind,
        reference: source.to_string(),
        digest: e.digest.clone(),
        media_type: manifest::OCI_MANIFEST.into(),
        size: 0,
        platforms: Vec::new(),
        path: None,
        subject: None,
    };
    probe
        .check()
        .map_err(|err| refused(ANN_SOURCE, Some(source), format!("is refused: {err}")))?;
    if kind.is_registry() {
        if e.repository.is_empty() {
            return Err(refused(
                ANN_KIND,
                Some(kind_text),
                "names a registry kind, but the entry has no repository".into(),
            ));
        }
        if let Ok(r) = Reference::parse(source) {
            // Import tags the entry with the source's tag (none: kept by
            // digest), and a source pinned by digest pins the entry's.
            let agrees = r.tag == e.tag && r.digest.as_ref().is_none_or(|d| d == &e.digest);
            if !agrees {
                return Err(refused(
                    ANN_SOURCE,
                    Some(source),
                    format!(
                        "does not name the entry's {}",
                        match &e.tag {
                            Some(t) => format!("tag `{}`", ferry_bundle::text::escape(t)),
                            None => format!("digest {}", e.digest),
                        }
                    ),
                ));
            }
        }
    }
    match (&e.path, kind.is_registry()) {
        (Some(p), _) => {
            check_path(kind, source, p)
                .map_err(|err| refused(ANN_PATH, Some(p), format!("is refused: {err}")))?;
        }
        (None, false) => {
            return Err(refused(
                ANN_PATH,
                None,
                format!("is missing: a {kind_text} item lands at a path"),
            ));
        }
        (None, true) => {}
    }
    Ok(EntryItem {
        kind,
        reference: source.to_string(),
        path: e.path.clone(),
    })
}

/// Reads the index children an entry reaches (each re-hashed) into
/// `manifests`; a child the store lacks is recorded in `absent`. Returns
/// the platforms present.
fn read_children(
    dir: &Path,
    e: &StoreEntry,
    reference: &str,
    top: &Parsed,
    manifests: &mut HashMap<Digest, Bytes>,
    absent: &mut Vec<Absent>,
) -> Result<Vec<String>, ReexportError> {
    let mut platforms: Vec<String> = Vec::new();
    let mut queue = vec![(e.digest.clone(), top.clone())];
    while let Some((parent, p)) = queue.pop() {
        for d in p.manifests.iter() {
            if !manifest::is_any_manifest(&d.media_type) {
                continue;
            }
            let platform = d.platform.as_ref().map(|x| x.to_short());
            if !store_path(dir, &d.digest).is_file() {
                absent.push(Absent {
                    digest: d.digest.clone(),
                    parent: parent.clone(),
                    platform,
                });
                continue;
            }
            platforms.extend(platform);
            let child = read_store_manifest(dir, &d.digest)?;
            let cp = parse(&child, &d.digest, reference, Some(&d.media_type))?;
            manifests.insert(d.digest.clone(), child);
            queue.push((d.digest.clone(), cp));
        }
    }
    platforms.sort();
    platforms.dedup();
    Ok(platforms)
}

/// `sha256-<hex>.sig|.att|.sbom` (cosign's tags): the digest they belong to.
fn legacy_subject(tag: &str) -> Option<Digest> {
    let rest = tag.strip_prefix("sha256-")?;
    let (hex, suffix) = rest.split_once('.')?;
    if !matches!(suffix, "sig" | "att" | "sbom") {
        return None;
    }
    Digest::from_hex(hex).ok()
}

fn store_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(d.hex())
}

/// A manifest of the store, bounded and re-hashed.
fn read_store_manifest(dir: &Path, d: &Digest) -> Result<Bytes, ReexportError> {
    let path = store_path(dir, d);
    let file = std::fs::File::open(&path).map_err(io("open", &path))?;
    let mut bytes = Vec::new();
    file.take(MANIFEST_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(io("read", &path))?;
    if bytes.len() as u64 > MANIFEST_LIMIT {
        return Err(ReexportError::Tampered {
            digest: d.clone(),
            path,
            reason: format!("is larger than a manifest may be ({MANIFEST_LIMIT} bytes)"),
        });
    }
    let got = Digest::of(&bytes);
    if &got != d {
        return Err(ReexportError::Tampered {
            digest: d.clone(),
            path,
            reason: format!("hashes to {got}"),
        });
    }
    Ok(Bytes::from(bytes))
}

/// Links (else copies) a store blob into the staging directory and hashes
/// the staged bytes: a blob altered in the store is refused here, named.
/// A blob the store's blob directory lacks is a file item's layer: read
/// from where the item put it in the file tree (`tree`).
fn stage_store_blob(
    dir: &Path,
    d: &Digest,
    tree: Option<&PathBuf>,
    blob_dir: &Path,
) -> Result<(), ReexportError> {
    let src = match (store_path(dir, d), tree) {
        (blob, Some(file)) if !blob.is_file() => file.clone(),
        (blob, _) => blob,
    };
    let dest = blob_dir.join(d.hex());
    if !src.is_file() {
        return Err(ReexportError::Tampered {
            digest: d.clone(),
            path: src,
            reason: "is missing".into(),
        });
    }
    if std::fs::hard_link(&src, &dest).is_err() {
        std::fs::copy(&src, &dest).map_err(io("copy", &src))?;
    }
    let file = std::fs::File::open(&dest).map_err(io("open", &dest))?;
    let mut hashing = HashingReader::new(std::io::BufReader::with_capacity(256 << 10, file));
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io("read", &src))?;
    let (got, _, _) = hashing.finish();
    if &got != d {
        let _ = std::fs::remove_file(&dest);
        return Err(ReexportError::Tampered {
            digest: d.clone(),
            path: src,
            reason: format!("hashes to {got}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
