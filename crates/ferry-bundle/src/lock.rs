//! The lock file, `ferry.lock`: every tag resolved to its digest.
//!
//! Deterministic (sorted, no timestamps) so it diffs well in Git.
//!
//! Media types are `oci_spec`'s [`MediaType`] (the same string in the JSON).
//! The platform filter and `LockedPlatform::platform` stay strings: the
//! filter is the spec's user input (checked by
//! [`crate::spec::validate_platform`]) and the platform is the
//! `os/arch[/variant]` short form (or `unknown/unknown`) a reader sees.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::manifest::MediaType;

/// The lock format version.
pub const LOCK_VERSION: u32 = 1;

/// A resolved image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LockedImage {
    /// The reference as in the spec, normalised.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The digest the tag pointed at.
    pub digest: Digest,
    /// Its media type.
    pub media_type: MediaType,
    /// Its size.
    pub size: u64,
    /// The platform filter applied (empty = all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<String>,
    /// For indexes: the per-platform manifests selected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<LockedPlatform>,
    /// For entries other than images: the kind (`chart`, `falco-driver`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For file-like entries: sha256 of the file itself (the chart `.tgz`,
    /// the driver, the plugin zip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Digest>,
    /// Where a file-like entry was fetched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Provenance (signature, attestation, SBOM, referrer): the manifest it
    /// belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
}

/// One platform child of an index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LockedPlatform {
    /// `os/arch[/variant]`, or `unknown/unknown` for attestation entries.
    pub platform: String,
    /// The child manifest's digest.
    pub digest: Digest,
}

/// `ferry.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Lock {
    /// [`LOCK_VERSION`].
    pub lock_version: u32,
    /// Images, sorted by reference.
    #[serde(default)]
    pub images: Vec<LockedImage>,
    /// Everything else (charts, Trivy DBs, Falco drivers and artifacts,
    /// OpenSearch plugins, files), sorted by reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<LockedImage>,
}

/// A lock file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Unreadable.
    #[error("failed to read lock file `{path}`")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a lock file of this version.
    #[error("invalid lock file `{path}`: {message}")]
    Invalid {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Lock {
    /// A lock from resolved images (sorted here).
    pub fn new(entries: Vec<LockedImage>) -> Lock {
        let (mut artifacts, mut images): (Vec<_>, Vec<_>) =
            entries.into_iter().partition(|e| e.kind.is_some());
        for list in [&mut images, &mut artifacts] {
            list.sort_by(|a, b| a.reference.cmp(&b.reference));
            for i in list.iter_mut() {
                i.platforms.sort();
                i.filter.sort();
            }
        }
        Lock {
            lock_version: LOCK_VERSION,
            images,
            artifacts,
        }
    }

    /// Every entry, images first.
    pub fn entries(&self) -> impl Iterator<Item = &LockedImage> {
        self.images.iter().chain(self.artifacts.iter())
    }

    /// Reads a lock file.
    pub fn load(path: &Path) -> Result<Lock, LockError> {
        let bytes = std::fs::read(path).map_err(|source| LockError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let lock: Lock = serde_json::from_slice(&bytes).map_err(|e| LockError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if lock.lock_version != LOCK_VERSION {
            return Err(LockError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "lockVersion {} is not supported (expected {LOCK_VERSION})",
                    lock.lock_version
                ),
            });
        }
        Ok(lock)
    }

    /// Deterministic bytes (pretty JSON, trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Finds an entry by reference.
    pub fn get(&self, reference: &str) -> Option<&LockedImage> {
        self.entries().find(|i| i.reference == reference)
    }

    /// What differs between `self` (the lock on disk) and `fresh` (a new
    /// resolution): one line per moved, added or removed reference.
    pub fn drift(&self, fresh: &Lock) -> Vec<String> {
        let mut out = Vec::new();
        for new in fresh.entries() {
            match self.get(&new.reference) {
                None => out.push(match &new.subject {
                    Some(s) => format!(
                        "{}: new provenance of {s} upstream, not in the lock file (resolves to {})",
                        new.reference, new.digest
                    ),
                    None => format!(
                        "{}: not in the lock file (resolves to {})",
                        new.reference, new.digest
                    ),
                }),
                Some(old) if old.content.is_some() && old.content != new.content => {
                    out.push(format!(
                        "{}: content locked at {}, now {}",
                        new.reference,
                        old.content
                            .as_ref()
                            .map(|d| d.to_string())
                            .unwrap_or_default(),
                        new.content
                            .as_ref()
                            .map(|d| d.to_string())
                            .unwrap_or_default()
                    ))
                }
                Some(old) if old.digest != new.digest => out.push(format!(
                    "{}: locked at {}, now resolves to {}",
                    new.reference, old.digest, new.digest
                )),
                Some(old) if old.platforms != new.platforms || old.filter != new.filter => out
                    .push(format!(
                        "{}: platform selection changed (locked {:?}, now {:?})",
                        new.reference,
                        old.platforms
                            .iter()
                            .map(|p| &p.platform)
                            .collect::<Vec<_>>(),
                        new.platforms
                            .iter()
                            .map(|p| &p.platform)
                            .collect::<Vec<_>>()
                    )),
                Some(_) => {}
            }
        }
        for old in self.entries() {
            if fresh.get(&old.reference).is_none() {
                out.push(match &old.subject {
                    Some(s) => format!(
                        "{}: provenance of {s} in the lock file but no longer found upstream",
                        old.reference
                    ),
                    None => format!(
                        "{}: in the lock file but no longer in the spec",
                        old.reference
                    ),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(r: &str, d: char) -> LockedImage {
        LockedImage {
            reference: r.into(),
            digest: format!("sha256:{}", d.to_string().repeat(64))
                .parse()
                .unwrap(),
            media_type: crate::manifest::OCI_MANIFEST.into(),
            size: 10,
            filter: vec![],
            platforms: vec![],
            kind: None,
            content: None,
            url: None,
            subject: None,
        }
    }

    #[test]
    fn lock_is_sorted_and_round_trips() {
        let l = Lock::new(vec![img("z.io/b:1", 'a'), img("a.io/a:1", 'b')]);
        assert_eq!(l.images[0].reference, "a.io/a:1");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ferry.lock");
        std::fs::write(&p, l.to_json()).unwrap();
        assert_eq!(Lock::load(&p).unwrap(), l);
        assert_eq!(
            Lock::new(vec![img("a.io/a:1", 'b'), img("z.io/b:1", 'a')]).to_json(),
            l.to_json()
        );
    }

    #[test]
    fn drift_names_what_moved() {
        let old = Lock::new(vec![img("a.io/a:1", 'a'), img("b.io/b:1", 'b')]);
        let new = Lock::new(vec![img("a.io/a:1", 'c'), img("c.io/c:1", 'd')]);
        let d = old.drift(&new);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].contains("a.io/a:1") && d[0].contains("now resolves to sha256:ccc"));
        assert!(d
            .iter()
            .any(|l| l.contains("b.io/b:1") && l.contains("no longer")));
    }

    #[test]
    fn drift_names_provenance_that_appeared_or_went_away() {
        let sig = |r: &str, d: char| LockedImage {
            subject: Some(img("a.io/a:1", 'a').digest),
            ..img(r, d)
        };
        let old = Lock::new(vec![img("a.io/a:1", 'a'), sig("a.io/a:sha256-x.sig", 'b')]);
        let new = Lock::new(vec![img("a.io/a:1", 'a'), sig("a.io/a:sha256-x.att", 'c')]);
        let d = old.drift(&new);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d.iter()
                .any(|l| l.starts_with("a.io/a:sha256-x.att: new provenance of sha256:aaa")),
            "{d:?}"
        );
        assert!(
            d.iter().any(
                |l| l.starts_with("a.io/a:sha256-x.sig: provenance of sha256:aaa")
                    && l.contains("no longer found upstream")
            ),
            "{d:?}"
        );
    }
}
