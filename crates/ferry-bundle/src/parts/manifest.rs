//! The parts manifest (`*.parts.json`): its format, read bounded and checked.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::meta::IndexPin;
use crate::text::escape;

use super::error::PartsError;
use super::{MAX_MANIFEST, MAX_PARTS, PARTS_VERSION};

/// sha256 digests written as bare hex (the way `sha256sum` prints them).
mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::digest::Digest;

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// One part as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    /// File name, in the manifest's directory (`demo.tar.zst.part-000`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the part's bytes, bare hex.
    #[serde(with = "hex_digest")]
    pub sha256: Digest,
}

/// `<OUT stem>.parts.json`: what a split bundle is and how it was cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartsManifest {
    /// Schema version ([`PARTS_VERSION`]).
    pub parts_version: u32,
    /// The unsplit bundle's file name (what the concatenation of the parts is).
    pub bundle: String,
    /// The bundle format version (`formatVersion` of `ferry/bundle.json`).
    pub format_version: u32,
    /// The bundle's name (the spec's).
    pub name: String,
    /// The ferry that wrote it.
    pub tool: String,
    /// sha256 of the exact `ferry/bundle.json` bytes (what a signature covers).
    pub bundle_json: Digest,
    /// The index.json pin of `ferry/bundle.json`.
    pub index: IndexPin,
    /// Size of the whole stream (the sum of the part sizes).
    pub size: u64,
    /// sha256 of the whole stream, bare hex: the `.sha256` of the unsplit bundle.
    #[serde(with = "hex_digest")]
    pub sha256: Digest,
    /// The `--split` size: every part but the last has exactly this size.
    pub part_size: u64,
    /// The parts, in stream order.
    pub parts: Vec<PartEntry>,
}

impl PartsManifest {
    /// Serialises deterministically (pretty JSON, trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses and checks a manifest (`path` only names it in errors): the
    /// version, part names that are plain file names, each listed once,
    /// sizes that add up.
    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<PartsManifest, PartsError> {
        let bad = |reason: String| PartsError::ManifestMalformed {
            path: path.to_path_buf(),
            reason,
        };
        let version = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("partsVersion").and_then(|x| x.as_u64()));
        if let Some(v) = version.filter(|v| *v != PARTS_VERSION as u64) {
            return Err(bad(format!(
                "partsVersion {v} is not supported (this ferry reads version {PARTS_VERSION})"
            )));
        }
        let m: PartsManifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.parts.is_empty() {
            return Err(bad("it lists no parts".into()));
        }
        if m.parts.len() > MAX_PARTS {
            return Err(bad(format!(
                "it lists {} parts, over the limit of {MAX_PARTS}",
                m.parts.len()
            )));
        }
        let mut names = std::collections::HashSet::new();
        let mut total: u64 = 0;
        for p in &m.parts {
            if !is_plain_file_name(&p.name) {
                return Err(bad(format!(
                    "part name `{}` is not a plain file name",
                    escape(&p.name)
                )));
            }
            if !names.insert(p.name.as_str()) {
                return Err(bad(format!("part `{}` is listed twice", p.name)));
            }
            if p.size == 0 {
                return Err(bad(format!("part `{}` has size 0", p.name)));
            }
            total = total
                .checked_add(p.size)
                .ok_or_else(|| bad("part sizes overflow".into()))?;
        }
        // Cut at byte boundaries every `partSize` bytes: every part but
        // the last is exactly that long, the last at most that.
        let last = m.parts.len() - 1;
        for (i, p) in m.parts.iter().enumerate() {
            if (i < last && p.size != m.part_size) || p.size > m.part_size {
                return Err(bad(format!(
                    "part `{}` is listed with {} bytes, but the bundle was cut every {} bytes (partSize): only the last part may be shorter",
                    p.name, p.size, m.part_size
                )));
            }
        }
        if total != m.size {
            return Err(bad(format!(
                "the parts add up to {total} bytes, but the manifest says {}",
                m.size
            )));
        }
        Ok(m)
    }

    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<PartsManifest, PartsError> {
        let read_err = |source| PartsError::ManifestRead {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(PartsError::ManifestMalformed {
                path: path.to_path_buf(),
                reason: format!("over the {MAX_MANIFEST}-byte limit"),
            });
        }
        PartsManifest::from_slice(&bytes, path)
    }
}

/// `e`, its message prefixed with the part it happened on.
pub(super) fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("`{}`: {e}", path.display()))
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(crate::text::is_unsafe_char)
        && name.len() <= 255
}
