//! The receipt: what the target now holds, per repository.
//!
//! Written by `import --receipt FILE`; read by a later `export --since` and
//! by `ferry prune`. Its home is here, beside the other formats, so export
//! reads it without depending on import (`ferry_import::receipt` re-exports it).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::Digest;

/// Receipt format version.
pub const RECEIPT_VERSION: u32 = 1;

/// One repository's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoContent {
    /// Blobs present (configs and layers).
    pub blobs: BTreeSet<Digest>,
    /// Manifests and indexes present.
    pub manifests: BTreeSet<Digest>,
    /// Tags and what they point at.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, Digest>,
}

/// `--receipt` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Receipt {
    /// [`RECEIPT_VERSION`].
    pub receipt_version: u32,
    /// The target (`host[/prefix]`).
    pub target: String,
    /// The bundle's name.
    pub bundle: String,
    /// Per repository.
    pub repositories: BTreeMap<String, RepoContent>,
    /// Files on the file target: path → sha256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, Digest>,
}

impl Receipt {
    /// Deterministic bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}
