//! `ferry/bundle.json`: the bundle's table of contents.
//!
//! It pins `index.json` by digest and lists every blob in the tar (digest,
//! size, role), every item, the children a platform filter left out on
//! purpose, and (for differential bundles) the base blobs expected at the
//! target. Signing this one file therefore covers every byte of the bundle.
//!
//! Media types are `oci_spec`'s [`MediaType`] (Docker's and unknown types
//! as `MediaType::Other`, the same string in the JSON; compared by string,
//! see [`crate::manifest`]). Platforms here are the `os/arch[/variant]`
//! short forms shown to users (`Item::platforms`, `Absent::platform`), so
//! they stay strings, checked as tokens by [`BundleMeta::check`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::manifest::MediaType;

/// The bundle format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Path of the metadata file inside the tar.
pub const META_PATH: &str = "ferry/bundle.json";
/// Path of the detached signature over [`META_PATH`].
pub const SIG_PATH: &str = "ferry/bundle.json.sig";
/// Annotation: the full source reference (containerd's convention).
pub const ANN_IMAGE_NAME: &str = "io.containerd.image.name";
/// Annotation: the OCI ref name (ferry writes the full source reference).
pub const ANN_REF_NAME: &str = oci_spec::image::ANNOTATION_REF_NAME;
/// Annotation: the ferry content kind.
pub const ANN_KIND: &str = "dev.ferry.kind";
/// index.json: where a file item came from (its URL; file items are named
/// by [`Item::index_name`], which the image-spec grammar admits).
pub const ANN_SOURCE: &str = "dev.ferry.source";
/// Annotation: a file kind's path on the file server.
pub const ANN_PATH: &str = "dev.ferry.path";
/// Annotation: the subject a provenance item (signature, attestation, SBOM,
/// OCI 1.1 referrer) belongs to.
pub const ANN_SUBJECT: &str = "dev.ferry.subject";
/// Annotation: containerd's mark of a referrer (an OCI 1.1 referrer by
/// digest); `ctr images import` makes no image of it.
pub const ANN_CONTAINERD_SUBJECT: &str = "io.containerd.manifest.subject";

/// What an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A container image (manifest or index).
    Image,
    /// A Helm chart.
    Chart,
    /// A Falco kernel module.
    FalcoDriver,
    /// A falcoctl rules / plugin artifact.
    FalcoArtifact,
    /// The falcoctl index.yaml.
    FalcoctlIndex,
    /// An OpenSearch plugin zip.
    OpensearchPlugin,
    /// A Trivy database / checks artifact.
    TrivyDb,
    /// A plain file.
    File,
}

impl Kind {
    /// Whether items of this kind go to the registry (and so carry an image
    /// reference that parses), rather than only to the file server (whose
    /// items are named by the URL they came from).
    pub fn is_registry(&self) -> bool {
        matches!(
            self,
            Kind::Image | Kind::TrivyDb | Kind::FalcoArtifact | Kind::Chart
        )
    }

    /// The annotation value (`image`, `chart`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Chart => "chart",
            Kind::FalcoDriver => "falco-driver",
            Kind::FalcoArtifact => "falco-artifact",
            Kind::FalcoctlIndex => "falcoctl-index",
            Kind::OpensearchPlugin => "opensearch-plugin",
            Kind::TrivyDb => "trivy-db",
            Kind::File => "file",
        }
    }
}

/// What a blob is in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// An image index or manifest list.
    Index,
    /// An image manifest (or artifact manifest).
    Manifest,
    /// A config blob.
    Config,
    /// A layer (or a file's bytes).
    Layer,
}

impl Role {
    /// Whether blobs of this role are manifests the reader parses.
    pub fn is_manifest(&self) -> bool {
        matches!(self, Role::Index | Role::Manifest)
    }
}

/// One item the bundle carries (one index.json descriptor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Content kind.
    pub kind: Kind,
    /// Full source reference, e.g. `docker.io/library/nginx:1.27`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Digest of the top manifest or index.
    pub digest: Digest,
    /// Its media type.
    #[serde(rename = "mediaType")]
    pub media_type: MediaType,
    /// Its size.
    pub size: u64,
    /// Platforms carried (for indexes; empty for single manifests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// File-server path for file kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Provenance: the manifest this item signs, attests or describes (a
    /// cosign `sha256-<hex>.sig` / `.att` / `.sbom` tag, or an OCI 1.1
    /// referrer by digest). Import pushes it after its subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
}

/// Whether `s` follows the OCI image-spec grammar of
/// `org.opencontainers.image.ref.name`: components of `[A-Za-z0-9]+`
/// joined by one of `-._:@+` or `--`, components separated by `/`.
pub fn is_ref_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|component| {
            let b = component.as_bytes();
            if b.is_empty()
                || !b[0].is_ascii_alphanumeric()
                || !b[b.len() - 1].is_ascii_alphanumeric()
            {
                return false;
            }
            let mut i = 0;
            while i < b.len() {
                if b[i].is_ascii_alphanumeric() {
                    i += 1;
                    continue;
                }
                // A separator: one of -._:@+ or exactly "--".
                let sep_len = if b[i] == b'-' && b.get(i + 1) == Some(&b'-') {
                    2
                } else {
                    1
                };
                if !matches!(b[i], b'-' | b'.' | b'_' | b':' | b'@' | b'+') {
                    return false;
                }
                i += sep_len;
                if !b.get(i).is_some_and(|c| c.is_ascii_alphanumeric()) {
                    return false;
                }
            }
            true
        })
}

/// `s` made into one image-spec component: runs of anything else become
/// one `-`, and it starts and ends with a letter or digit.
fn ref_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_sep: Option<char> = None;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if let Some(sep) = pending_sep.take() {
                if !out.is_empty() {
                    out.push(sep);
                }
            }
            out.push(c);
        } else {
            let sep = if matches!(c, '.' | '_' | '+' | '-') {
                c
            } else {
                '-'
            };
            pending_sep = Some(match pending_sep {
                None => sep,
                Some(_) => '-',
            });
        }
    }
    if out.is_empty() {
        out.push('x');
    }
    out
}

impl Item {
    /// Checks this item's strings as [`BundleMeta::check`] does for every
    /// item (for an item rebuilt from elsewhere, e.g. a store's annotations).
    pub fn check(&self) -> Result<(), MetaError> {
        check_item(self)
    }

    /// The name index.json gives this item (`org.opencontainers.image.ref.name`):
    /// its reference for registry content; for a file item (named by a URL,
    /// which the image-spec grammar refuses) `ferry.files/<path>`, each path
    /// component made grammar-valid, the URL kept in [`ANN_SOURCE`].
    pub fn index_name(&self) -> String {
        if self.kind.is_registry() {
            return self.reference.clone();
        }
        let path = self.path.as_deref().unwrap_or(&self.reference);
        let components: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(ref_component)
            .collect();
        format!("ferry.files/{}", components.join("/"))
    }
}

/// One blob in the tar, in tar order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobMeta {
    /// Digest (the tar entry is `blobs/sha256/<hex>`).
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Role in the graph.
    pub role: Role,
    /// Media type (always set for manifests and indexes).
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
}

/// A child manifest left out on purpose by a platform filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Absent {
    /// The child's digest.
    pub digest: Digest,
    /// The index that lists it.
    pub parent: Digest,
    /// Its platform, when the index said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// A blob left out because the target already holds it (differential bundles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseBlob {
    /// Digest.
    pub digest: Digest,
    /// Size.
    pub size: u64,
    /// A repository at the target that holds it (from the receipt), so an
    /// import can mount it into the repositories that need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

/// The index.json pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexPin {
    /// sha256 of index.json.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// `ferry/bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMeta {
    /// Bundle format version ([`FORMAT_VERSION`]).
    #[serde(rename = "formatVersion")]
    pub format_version: u32,
    /// `ferry <version>` that wrote it.
    pub tool: String,
    /// The spec's `name`.
    pub name: String,
    /// index.json's digest and size.
    pub index: IndexPin,
    /// Items, sorted by reference.
    pub items: Vec<Item>,
    /// Every blob in the tar, in tar order.
    pub blobs: Vec<BlobMeta>,
    /// Index children intentionally left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent: Vec<Absent>,
    /// Blobs expected at the target already (differential bundles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base: Vec<BaseBlob>,
    /// The signature policy checked at export, what it read, and the verdict
    /// per item (covered by the bundle's own signature; re-checked offline by
    /// `verify`/`import`, docs/verification.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Where a re-exported bundle (`ferry export --from`) came from; absent
    /// in bundles exported from the registries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// What a re-exported bundle was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginKind {
    /// A bundle file (or its parts).
    Bundle,
    /// A mirror store (`import --store`, served by `ferry serve`).
    Store,
}

impl OriginKind {
    /// `bundle` or `store`.
    pub fn as_str(&self) -> &'static str {
        match self {
            OriginKind::Bundle => "bundle",
            OriginKind::Store => "store",
        }
    }
}

/// `bundle.json` `origin`: the source of a re-exported bundle (covered by
/// the bundle's signature like every other field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Origin {
    /// A bundle or a store.
    pub kind: OriginKind,
    /// The source bundle's `name`, or the store directory's name.
    pub name: String,
    /// sha256 of the source bundle as carried (the whole stream, all parts
    /// in order); none for a store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Digest>,
    /// sha256 of the source bundle's `ferry/bundle.json` (what its
    /// signature covers); none for a store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_sha256: Option<Digest>,
    /// The source bundle's `tool` string (`ferry <version>`); none for a store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// The signature policy a bundle carries (`bundle.json` `verification`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Verification {
    /// The spec's `verify:` section as it was checked.
    pub policy: ferry_trust::VerifySpec,
    /// Every file the policy read (key files, the trusted root), path as
    /// written → base64 of the exact bytes, so the isolated side rebuilds
    /// the same policy offline.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub materials: BTreeMap<String, String>,
    /// One verdict per item a rule matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<ItemVerdict>,
}

impl Verification {
    /// Rebuilds the carried policy offline from its recorded materials.
    pub fn load_policy(&self) -> Result<ferry_trust::Policy, ferry_trust::PolicyError> {
        use base64::Engine;
        ferry_trust::Policy::load(&self.policy, |path| {
            let b64 = self.materials.get(path).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("`{path}` is not among the materials the bundle carries"),
                )
            })?;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
    }

    /// The recorded verdict for `reference`, if any.
    pub fn verdict(&self, reference: &str) -> Option<&ItemVerdict> {
        self.verdicts.iter().find(|v| v.reference == reference)
    }
}

/// What the policy decided for one item at export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ItemVerdict {
    /// The item's reference.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Its top manifest or index digest (the signed subject).
    pub digest: Digest,
    /// The decision.
    pub decision: ferry_trust::Decision,
}

impl BundleMeta {
    /// Serialises deterministically (pretty JSON, trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = self.write_json(&mut v);
        v
    }

    /// Writes the bytes of [`BundleMeta::to_json`] into `out`, serialised as
    /// they go (never held whole: at 10,000 references they are over 30 MB).
    /// Give it a buffered writer: the serialiser writes token by token.
    pub fn write_json(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        out.write_all(b"\n")
    }

    /// The size and hashes of [`BundleMeta::to_json`]'s bytes, serialised
    /// once into a sink that keeps nothing: what the tar header, the parts
    /// manifest and the signature need, before the bytes are serialised again
    /// straight into the bundle ([`crate::writer::BundleWriter::write_head_meta`]).
    pub fn json_sums(&self) -> std::io::Result<JsonSums> {
        use std::io::Write as _;
        let mut sink = std::io::BufWriter::with_capacity(
            64 << 10,
            crate::digest::HashingWriter::new(Blake2Sink(Default::default())),
        );
        self.write_json(&mut sink)?;
        sink.flush()?;
        let (sha256, size, blake) = sink.into_inner().map_err(|e| e.into_error())?.finish();
        use blake2::Digest as _;
        Ok(JsonSums {
            size,
            sha256,
            blake2b512: blake.0.finalize().into(),
        })
    }

    /// Checks every string bundle.json carries before anything prints,
    /// emits or acts on it: the name and tool string are single-line text
    /// ([`crate::text::check`]); a registry item's reference parses as an
    /// image reference (the OCI grammar: no `..`, whitespace, userinfo or
    /// tag over 128 characters), a file item's (its source URL) is one token
    /// without whitespace or control characters; file paths are safe
    /// relative paths; media types, platforms and base repositories follow
    /// their grammars. The error names the field and quotes the value
    /// escaped.
    pub fn check(&self) -> Result<(), MetaError> {
        use crate::text::{check, check_token, MAX_TEXT};
        check("the bundle name", &self.name, MAX_TEXT)?;
        if self.name.is_empty() {
            return Err(MetaError::Empty("the bundle name"));
        }
        check("the tool string", &self.tool, MAX_TEXT)?;
        for item in &self.items {
            check_item(item)?;
        }
        for b in &self.blobs {
            if let Some(m) = &b.media_type {
                check_token(&format!("blob {}: media type", b.digest), m.as_ref(), 255)?;
            }
        }
        for a in &self.absent {
            if let Some(p) = &a.platform {
                check_token(&format!("absent child {}: platform", a.digest), p, 255)?;
            }
        }
        if let Some(o) = &self.origin {
            check("the origin name", &o.name, MAX_TEXT)?;
            if o.name.is_empty() {
                return Err(MetaError::Empty("the origin name"));
            }
            if let Some(t) = &o.tool {
                check("the origin tool string", t, MAX_TEXT)?;
            }
        }
        for b in &self.base {
            if let Some(repo) = &b.repository {
                if !crate::reference::is_valid_repository(repo) {
                    return Err(MetaError::BaseRepository {
                        digest: b.digest.clone(),
                        shown: crate::text::escape(repo).into_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Sum of the sizes of the blobs in the tar.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// The size and hashes of `ferry/bundle.json`'s exact bytes
/// ([`BundleMeta::json_sums`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonSums {
    /// Bytes.
    pub size: u64,
    /// Their sha256 (the parts manifest names the bundle by it).
    pub sha256: Digest,
    /// Their BLAKE2b-512, the prehash a signature signs
    /// ([`crate::sign::SigningKey::sign_prehashed`]).
    pub blake2b512: [u8; 64],
}

/// A sink that only feeds BLAKE2b-512.
struct Blake2Sink(blake2::Blake2b512);

impl std::io::Write for Blake2Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        blake2::Digest::update(&mut self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds the `index.json` bytes for a list of items (deterministic).
pub fn index_json(items: &[Item]) -> Vec<u8> {
    let mut v = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_index_json(items, &mut v);
    v
}

/// Writes the bytes of [`index_json`] into `out`, serialised item by item
/// (no document tree is built: at 10,000 references it would be several
/// times the bytes). Keys come out sorted, as the first `serde_json::Value`
/// form of this document wrote them (a unit test compares the two forms).
pub fn write_index_json(items: &[Item], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct Doc<'a> {
        manifests: Entries<'a>,
        #[serde(rename = "mediaType")]
        media_type: &'static str,
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
    }
    struct Entries<'a>(&'a [Item]);
    impl Serialize for Entries<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(IndexEntry))
        }
    }
    serde_json::to_writer_pretty(
        &mut *out,
        &Doc {
            manifests: Entries(items),
            media_type: crate::manifest::OCI_INDEX,
            schema_version: 2,
        },
    )?;
    out.write_all(b"\n")
}

/// One item as an `index.json` descriptor (keys in sorted order).
struct IndexEntry<'a>(&'a Item);

impl Serialize for IndexEntry<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let it = self.0;
        let mut ann: BTreeMap<&str, std::borrow::Cow<'_, str>> = BTreeMap::new();
        ann.insert(ANN_KIND, it.kind.as_str().into());
        if it.kind.is_registry() {
            ann.insert(ANN_IMAGE_NAME, it.reference.as_str().into());
        } else {
            ann.insert(ANN_SOURCE, it.reference.as_str().into());
        }
        if let Some(p) = &it.path {
            ann.insert(ANN_PATH, p.as_str().into());
        }
        if let Some(d) = &it.subject {
            ann.insert(ANN_SUBJECT, d.to_string().into());
            if it.reference.contains('@') {
                ann.insert(ANN_CONTAINERD_SUBJECT, d.to_string().into());
            }
        }
        ann.insert(ANN_REF_NAME, it.index_name().into());
        let mut st = s.serialize_struct("Descriptor", 4)?;
        st.serialize_field("annotations", &ann)?;
        st.serialize_field("digest", &it.digest)?;
        st.serialize_field("mediaType", &it.media_type)?;
        st.serialize_field("size", &it.size)?;
        st.end()
    }
}

/// One item of `bundle.json`: its reference as import will read it, its
/// media type, platforms and file path.
fn check_item(item: &Item) -> Result<(), MetaError> {
    use crate::text::{check, check_token, MAX_TEXT};
    let r = &item.reference;
    if item.kind.is_registry() {
        // The parse first: its error is the one import gives.
        crate::Reference::parse(r).map_err(|e| MetaError::Reference {
            kind: item.kind.as_str(),
            reason: e.to_string(),
        })?;
        check("an item reference", r, MAX_TEXT)?;
        if r.trim() != r {
            return Err(MetaError::Whitespace {
                kind: item.kind.as_str(),
                shown: crate::text::escape(r).into_owned(),
            });
        }
    } else {
        check_token(
            &format!("the {} item reference", item.kind.as_str()),
            r,
            MAX_TEXT,
        )?;
    }
    let what = |field: &str| format!("item `{r}`: {field}");
    check_token(&what("media type"), item.media_type.as_ref(), 255)?;
    for p in &item.platforms {
        check_token(&what("platform"), p, 255)?;
    }
    if let Some(p) = &item.path {
        crate::relpath::RelPath::new(p).map_err(|e| MetaError::UnsafePath {
            reference: r.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Why a `bundle.json` was refused by [`BundleMeta::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// A string that is not single-line text, or too long.
    #[error(transparent)]
    Text(#[from] crate::text::TextError),
    /// A string that must not be empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// A registry item's reference that does not parse.
    #[error("{kind} item: {reason}")]
    Reference {
        /// The item's kind.
        kind: &'static str,
        /// What the reference grammar says.
        reason: String,
    },
    /// A registry item's reference with surrounding whitespace.
    #[error("{kind} item: reference `{shown}` has surrounding whitespace")]
    Whitespace {
        /// The item's kind.
        kind: &'static str,
        /// The reference, escaped.
        shown: String,
    },
    /// A file item's path that is not a safe relative path.
    #[error("item `{reference}` has an unsafe file path: {reason}")]
    UnsafePath {
        /// The item's reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// A base blob's repository hint that is not a repository path.
    #[error("base blob {digest}: repository `{shown}` is not a repository path (lowercase name components separated by `/`)")]
    BaseRepository {
        /// The blob.
        digest: Digest,
        /// The repository, escaped.
        shown: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first form of `index_json`: a `serde_json::Value` document
    /// (sorted keys), the reference the streamed form must equal.
    fn index_json_as_value(items: &[Item]) -> Vec<u8> {
        use serde_json::{json, Map, Value};
        let manifests: Vec<Value> = items
            .iter()
            .map(|it| {
                let mut ann = Map::new();
                ann.insert(ANN_KIND.into(), Value::String(it.kind.as_str().into()));
                if it.kind.is_registry() {
                    ann.insert(ANN_IMAGE_NAME.into(), Value::String(it.reference.clone()));
                } else {
                    ann.insert(ANN_SOURCE.into(), Value::String(it.reference.clone()));
                }
                if let Some(p) = &it.path {
                    ann.insert(ANN_PATH.into(), Value::String(p.clone()));
                }
                if let Some(s) = &it.subject {
                    ann.insert(ANN_SUBJECT.into(), Value::String(s.to_string()));
                    if it.reference.contains('@') {
                        ann.insert(ANN_CONTAINERD_SUBJECT.into(), Value::String(s.to_string()));
                    }
                }
                ann.insert(ANN_REF_NAME.into(), Value::String(it.index_name()));
                json!({
                    "mediaType": it.media_type,
                    "digest": it.digest.to_string(),
                    "size": it.size,
                    "annotations": Value::Object(ann),
                })
            })
            .collect();
        let doc = json!({
            "schemaVersion": 2,
            "mediaType": crate::manifest::OCI_INDEX,
            "manifests": manifests,
        });
        let mut v = serde_json::to_vec_pretty(&doc).unwrap();
        v.push(b'\n');
        v
    }

    #[test]
    fn index_json_is_the_value_form_byte_for_byte() {
        let d = |c: char| Digest::from_hex(&c.to_string().repeat(64)).unwrap();
        let item = |kind, reference: &str, path: Option<&str>, subject: Option<Digest>| Item {
            kind,
            reference: reference.into(),
            digest: d('a'),
            media_type: MediaType::ImageManifest,
            size: 1234,
            platforms: vec!["linux/amd64".into()],
            path: path.map(Into::into),
            subject,
        };
        let items = [
            item(Kind::Image, "docker.io/library/nginx:1.27", None, None),
            item(
                Kind::Chart,
                "ghcr.io/c/chart:1.0",
                Some("charts/chart-1.0.tgz"),
                None,
            ),
            item(
                Kind::File,
                "https://example.com/a b/ü.tar.gz",
                Some("files/a b/ü.tar.gz"),
                None,
            ),
            item(
                Kind::Image,
                "ghcr.io/a/b:sha256-aaaa.sig",
                None,
                Some(d('b')),
            ),
            item(
                Kind::Image,
                &format!("ghcr.io/a/b@{}", d('c')),
                None,
                Some(d('b')),
            ),
            item(Kind::Image, "ghcr.io/a/\"quoted\"\n:1", None, None),
        ];
        for n in [0, 1, items.len()] {
            assert_eq!(
                String::from_utf8(index_json(&items[..n])).unwrap(),
                String::from_utf8(index_json_as_value(&items[..n])).unwrap(),
                "{n} items"
            );
        }
    }

    #[test]
    fn bundle_json_written_streamed_is_to_json_and_its_sums() {
        let s = crate::craft::Sample::new("docker.io/library/nginx:1.27", b"layer bytes");
        let bytes = s.meta.to_json();
        let mut streamed = Vec::new();
        s.meta.write_json(&mut streamed).unwrap();
        assert_eq!(streamed, bytes);
        let sums = s.meta.json_sums().unwrap();
        assert_eq!(sums.size, bytes.len() as u64);
        assert_eq!(sums.sha256, Digest::of(&bytes));
        use blake2::Digest as _;
        let blake: [u8; 64] = blake2::Blake2b512::digest(&bytes).into();
        assert_eq!(sums.blake2b512, blake);
    }

    #[test]
    fn the_origin_is_optional_validated_and_round_trips() {
        let mut s = crate::craft::Sample::new("reg.example/a:1", b"layer");
        // Written before re-export existed: no origin, still read.
        let old = s.meta.to_json();
        assert!(!String::from_utf8_lossy(&old).contains("origin"));
        let back: BundleMeta = serde_json::from_slice(&old).unwrap();
        assert_eq!(back.origin, None);
        s.meta.origin = Some(Origin {
            kind: OriginKind::Bundle,
            name: "outer".into(),
            sha256: Some(Digest::of(b"x")),
            meta_sha256: None,
            tool: Some("ferry 0.1.0".into()),
        });
        s.meta.check().unwrap();
        let json = s.meta.to_json();
        assert!(String::from_utf8_lossy(&json).contains(r#""kind": "bundle""#));
        let back: BundleMeta = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, s.meta);
        for bad in ["", "a\u{1b}[31mb", "line\nbreak"] {
            if let Some(o) = &mut s.meta.origin {
                o.name = bad.into();
            }
            assert!(s.meta.check().is_err(), "{bad:?}");
        }
        // An unknown field inside the origin is refused like any other.
        let tampered = String::from_utf8_lossy(&json)
            .replace(r#""kind": "bundle""#, r#""kind": "bundle", "x": 1"#);
        assert!(serde_json::from_str::<BundleMeta>(&tampered).is_err());
    }

    #[test]
    fn index_names_follow_the_image_spec_grammar() {
        for ok in [
            "a",
            "docker.io/library/nginx:1.27",
            "a/b@sha256:ab",
            "a--b",
            "v1.2+build_3",
        ] {
            assert!(is_ref_name(ok), "{ok}");
        }
        for bad in [
            "",
            "http://x/y",
            "a//b",
            "-a",
            "a-",
            "a__b",
            "a b",
            "a/",
            "ä",
            "a---b",
        ] {
            assert!(!is_ref_name(bad), "{bad}");
        }
        let file = |path: &str| Item {
            kind: Kind::File,
            reference: "https://dl.example/x%2By?q=1".into(),
            digest: Digest::of(b"x"),
            media_type: crate::manifest::OCI_MANIFEST.into(),
            size: 1,
            platforms: vec![],
            path: Some(path.into()),
            subject: None,
        };
        for path in [
            "files/tools/tool-1.0.tar.gz",
            "falco/driver/7.0.0+driver/x86_64/falco_ubuntu-generic_5.15.0-91-generic_101.ko",
            "files/a__b/c d/--x--/é",
            "opensearch/plugins/repository-s3/2.8.0/repository-s3-2.8.0.zip",
        ] {
            let name = file(path).index_name();
            assert!(is_ref_name(&name), "{path} -> {name}");
            assert!(name.starts_with("ferry.files/"), "{name}");
        }
        let index: serde_json::Value =
            serde_json::from_slice(&index_json(&[file("files/x")])).unwrap();
        let ann = &index["manifests"][0]["annotations"];
        assert_eq!(ann[ANN_SOURCE], "https://dl.example/x%2By?q=1");
        assert!(ann.get(ANN_IMAGE_NAME).is_none());
    }
}
