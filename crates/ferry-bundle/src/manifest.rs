//! Just enough of OCI / Docker schema2 manifests and indexes to walk the graph.
//!
//! ferry never re-serialises these documents: the bytes the registry served
//! are the bytes stored and pushed. This module only *reads* them to find the
//! children (config, layers, child manifests, subject).
//!
//! # The types at the seam
//!
//! Media types and artifact types are `oci_spec`'s [`MediaType`]; Docker
//! schema2 types, Helm's, ferry's own and anything unknown come through as
//! `MediaType::Other(..)` with the exact string. Compare them by that string
//! ([`is_index`], [`is_manifest`], [`is_any_manifest`], [`is_docker`] and
//! `media_type.as_ref() == CONSTANT`): a `MediaType::Other` holding an OCI
//! string is not `==` to its named variant. Build one with
//! `MediaType::from(&str)`, never `Other(..)` by hand. A platform's `os` and
//! `architecture` are `oci_spec`'s [`Os`] and [`Arch`], read losslessly: a
//! string that `oci_spec` would not give back as it was (0.10 reads `armbe`
//! as `arm64be`) stays `Other` with the exact string.
//!
//! [`Descriptor`] and [`Platform`] are ferry's structs with those typed
//! fields, not `oci_spec`'s own, because `oci_spec` 0.10's would change what
//! ferry accepts and writes:
//! - its `Descriptor` takes any digest algorithm (`sha512`, `multihash+…`)
//!   where ferry's [`Digest`] is the validated sha256 every blob path and
//!   check relies on; it refuses a descriptor with no `mediaType` (ferry's
//!   reading of such a child, as an empty media type, is kept); its
//!   annotations are a `HashMap`, so anything written from them would not be
//!   deterministic;
//! - its `Platform` names the fields `os_version` / `os_features` in JSON (no
//!   `os.` rename), so a real Windows index entry's `os.version` would be lost,
//!   and it reads `armbe` as `arm64be`;
//! - neither keeps per-reference memory as small: both carry fields ferry
//!   never reads (`data`, `features`), and ferry's descriptor boxes its
//!   platform (layers, most descriptors a reader keeps, have none).

use std::collections::BTreeMap;
use std::fmt::Display;

use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::Digest;

/// The OCI media types as the OCI image spec's own crate knows them; a
/// string from a manifest becomes one with `MediaType::from(&str)`
/// (anything unknown is `MediaType::Other`). The constants below are the
/// same strings where a `&'static str` is needed (an `Accept` header, a
/// `match`); a test holds them equal.
pub use oci_spec::image::MediaType;
/// A platform's operating system and CPU architecture, as the OCI image
/// spec's own crate knows them (anything unknown is `Other`).
pub use oci_spec::image::{Arch, Os};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The OCI empty descriptor's media type.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Every manifest media type ferry asks for, in the `Accept` header of every
/// manifest request (a registry that gets no Accept may rewrite to schema1).
pub const MANIFEST_ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Whether a media type (a [`MediaType`] or a string) names an index /
/// manifest list. Compared by the exact string.
pub fn is_index<M: AsRef<str> + ?Sized>(media_type: &M) -> bool {
    matches!(media_type.as_ref(), OCI_INDEX | DOCKER_LIST)
}

/// Whether a media type (a [`MediaType`] or a string) names a single-image
/// manifest. Compared by the exact string.
pub fn is_manifest<M: AsRef<str> + ?Sized>(media_type: &M) -> bool {
    matches!(media_type.as_ref(), OCI_MANIFEST | DOCKER_MANIFEST)
}

/// Whether a media type is any kind of manifest ferry can carry.
pub fn is_any_manifest<M: AsRef<str> + ?Sized>(media_type: &M) -> bool {
    is_index(media_type) || is_manifest(media_type)
}

/// Whether a media type is one of Docker schema2's manifest types (which
/// `oci_spec` holds as `MediaType::Other`).
pub fn is_docker<M: AsRef<str> + ?Sized>(media_type: &M) -> bool {
    matches!(media_type.as_ref(), DOCKER_MANIFEST | DOCKER_LIST)
}

/// An operating system from its name, exactly as written (`Other` for any
/// name `oci_spec` would not give back unchanged).
pub fn os(name: &str) -> Os {
    let os = Os::from(name);
    if os.to_string() == name {
        os
    } else {
        Os::Other(name.to_owned())
    }
}

/// A CPU architecture from its name, exactly as written (`Other` for any
/// name `oci_spec` would not give back unchanged: 0.10 reads `armbe` as
/// `arm64be`).
pub fn arch(name: &str) -> Arch {
    let arch = Arch::from(name);
    if arch.to_string() == name {
        arch
    } else {
        Arch::Other(name.to_owned())
    }
}

fn de_os<'de, D: Deserializer<'de>>(d: D) -> Result<Os, D::Error> {
    Ok(os(&String::deserialize(d)?))
}

fn de_arch<'de, D: Deserializer<'de>>(d: D) -> Result<Arch, D::Error> {
    Ok(arch(&String::deserialize(d)?))
}

/// The media type of a descriptor that names none (read as the empty
/// string, as before the types were `oci_spec`'s).
fn unset_media_type() -> MediaType {
    MediaType::Other(String::new())
}

/// Whether `value` prints as exactly `s` (an [`Os`] or [`Arch`] against a
/// filter's component).
fn shows_as(value: &impl Display, s: &str) -> bool {
    value.to_string() == s
}

/// A platform as found in an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// e.g. `linux`
    #[serde(deserialize_with = "de_os")]
    pub os: Os,
    /// e.g. `amd64`
    #[serde(deserialize_with = "de_arch")]
    pub architecture: Arch,
    /// e.g. `v8`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// e.g. `10.0.17763.1234`
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// e.g. `["win32k"]`
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
}

impl Platform {
    /// `os/arch[/variant]`.
    pub fn to_short(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.architecture, v),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// Whether this platform is selected by a filter such as `linux/arm64`
    /// (a filter without variant matches every variant).
    pub fn matches(&self, filter: &str) -> bool {
        let mut parts = filter.split('/');
        let os = parts.next().unwrap_or_default();
        let arch = parts.next().unwrap_or_default();
        let variant = parts.next();
        shows_as(&self.os, os)
            && shows_as(&self.architecture, arch)
            && match variant {
                None => true,
                Some(v) => self.variant.as_deref() == Some(v),
            }
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type of the referenced content (empty when the descriptor
    /// names none).
    #[serde(rename = "mediaType", default = "unset_media_type")]
    pub media_type: MediaType,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Platform, for index entries (boxed: most descriptors are layers and
    /// have none, and a reader keeps every manifest's descriptors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Box<Platform>>,
    /// Artifact type, when set.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<MediaType>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// External URLs (non-distributable layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

#[derive(Deserialize)]
struct RawDoc {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<MediaType>,
}

/// What a manifest or index points at.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The media type (from the document, else the one it was served with).
    pub media_type: MediaType,
    /// Config descriptor (manifests only).
    pub config: Option<Descriptor>,
    /// Layer descriptors (manifests only).
    pub layers: Vec<Descriptor>,
    /// Child manifests (indexes only).
    pub manifests: Vec<Descriptor>,
    /// The `subject`, for referrers.
    pub subject: Option<Descriptor>,
    /// `artifactType`, when set.
    pub artifact_type: Option<MediaType>,
}

impl Parsed {
    /// Whether this is an index / manifest list.
    pub fn is_index(&self) -> bool {
        is_index(&self.media_type)
    }

    /// `artifactType` as a string, when set.
    pub fn artifact_type_str(&self) -> Option<&str> {
        self.artifact_type.as_ref().map(AsRef::as_ref)
    }

    /// Every blob (config and layers) a manifest references.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter())
    }
}

/// A manifest that ferry cannot read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or not the expected shape.
    #[error("manifest is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    /// Neither OCI nor Docker schema2 (e.g. schema1).
    #[error("unsupported manifest media type `{0}` (ferry carries OCI and Docker schema2 manifests and indexes)")]
    UnsupportedMediaType(String),
    /// The document's own mediaType disagrees with what it was served as.
    #[error("manifest says mediaType `{inner}` but was served as `{outer}`")]
    MediaTypeMismatch {
        /// In the JSON.
        inner: String,
        /// In Content-Type or the parent descriptor.
        outer: String,
    },
    /// schemaVersion is not 2.
    #[error("unsupported schemaVersion {0:?} (expected 2)")]
    SchemaVersion(Option<u32>),
    /// Arrays and objects nested deeper than [`MAX_JSON_DEPTH`].
    #[error("manifest nests arrays and objects more than {MAX_JSON_DEPTH} levels deep")]
    TooDeep,
}

/// The deepest nesting of arrays and objects accepted in a manifest. Real
/// manifests nest about five deep; serde_json's own values stop at 128 (and
/// Go's encoding/json, in registries and containerd, at 10000), while the
/// fields ferry does not read would otherwise be skipped at any depth.
pub const MAX_JSON_DEPTH: usize = 128;

/// Whether `bytes`, read as JSON, nest arrays and objects deeper than `max`
/// (strings are skipped; malformed JSON is left to the parser).
fn nests_deeper_than(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a manifest or index. `served_as` is the Content-Type or the parent
/// descriptor's media type (used when the document has no `mediaType`).
pub fn parse(bytes: &[u8], served_as: Option<&str>) -> Result<Parsed, ManifestError> {
    if nests_deeper_than(bytes, MAX_JSON_DEPTH) {
        return Err(ManifestError::TooDeep);
    }
    let raw: RawDoc = serde_json::from_slice(bytes)?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion(raw.schema_version));
    }
    let media_type = match (&raw.media_type, served_as) {
        (Some(inner), Some(outer)) if is_any_manifest(outer) && inner != outer => {
            return Err(ManifestError::MediaTypeMismatch {
                inner: inner.clone(),
                outer: outer.to_string(),
            })
        }
        (Some(inner), _) => inner.clone(),
        (None, Some(outer)) if is_any_manifest(outer) => outer.to_string(),
        // No mediaType anywhere: guess from the shape (OCI allows omitting it).
        (None, _) => {
            if raw.manifests.is_some() {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        }
    };
    if !is_any_manifest(&media_type) {
        return Err(ManifestError::UnsupportedMediaType(media_type));
    }
    Ok(Parsed {
        config: if is_manifest(&media_type) {
            raw.config
        } else {
            None
        },
        // Without the slack of the growing vectors: readers keep one
        // `Parsed` per manifest (issue 17, memory flat in references).
        layers: if is_manifest(&media_type) {
            shrunk(raw.layers)
        } else {
            Vec::new()
        },
        manifests: if is_index(&media_type) {
            shrunk(raw.manifests)
        } else {
            Vec::new()
        },
        subject: raw.subject,
        artifact_type: raw.artifact_type,
        media_type: MediaType::from(media_type.as_str()),
    })
}

/// The descriptors, or none, with no spare capacity.
fn shrunk(v: Option<Vec<Descriptor>>) -> Vec<Descriptor> {
    let mut v = v.unwrap_or_default();
    v.shrink_to_fit();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_oci_index_and_keeps_platforms() {
        let d = format!("sha256:{}", "a".repeat(64));
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":7,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        let p = parse(doc.as_bytes(), None).unwrap();
        assert!(p.is_index());
        assert_eq!(p.manifests.len(), 1);
        let plat = p.manifests[0].platform.as_ref().unwrap();
        assert_eq!(plat.to_short(), "linux/arm64/v8");
        assert!(plat.matches("linux/arm64"));
        assert!(plat.matches("linux/arm64/v8"));
        assert!(!plat.matches("linux/arm64/v7"));
        assert!(!plat.matches("linux/amd64"));
    }

    #[test]
    fn refuses_schema1_and_mismatched_media_types() {
        assert!(matches!(
            parse(br#"{"schemaVersion":1,"name":"x"}"#, None),
            Err(ManifestError::SchemaVersion(Some(1)))
        ));
        let doc = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(matches!(
            parse(doc.as_bytes(), Some(OCI_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
    }

    #[test]
    fn the_media_type_constants_are_the_oci_specs_own() {
        assert_eq!(MediaType::ImageManifest.to_string(), OCI_MANIFEST);
        assert_eq!(MediaType::ImageIndex.to_string(), OCI_INDEX);
        assert_eq!(MediaType::EmptyJSON.to_string(), OCI_EMPTY);
        for (mt, index, manifest) in [
            (OCI_INDEX, true, false),
            (DOCKER_LIST, true, false),
            (OCI_MANIFEST, false, true),
            (DOCKER_MANIFEST, false, true),
            ("application/vnd.oci.image.config.v1+json", false, false),
            (
                "application/vnd.oci.image.index.v1+json; charset=x",
                false,
                false,
            ),
            ("", false, false),
        ] {
            assert_eq!(is_index(mt), index, "{mt}");
            assert_eq!(is_manifest(mt), manifest, "{mt}");
        }
    }
}
