//! What an import reports: the plan, what landed and what did not
//! ([`ImportReport`], [`ItemOutcome`], [`PlanEntry`]), and why a run stopped
//! before committing anything ([`ImportError`]).

use std::path::PathBuf;

use ferry_bundle::digest::Digest;
use ferry_bundle::parts::PartsError;
use ferry_bundle::reader::BundleError;

use crate::receipt::Receipt;
use crate::target::TargetError;

/// The bundle's signature, as the import saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureCheck {
    /// The key id the signature names.
    pub key_id: String,
    /// Verified with `key` (without a key, a signature is only reported).
    pub verified: bool,
}

/// One planned item.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanEntry {
    /// Kind.
    pub kind: String,
    /// Source reference.
    pub source: String,
    /// Target reference.
    pub target: String,
    /// The item's digest (`sha256:<hex>` in JSON).
    pub digest: Digest,
    /// Blobs to upload for it (not already at the target).
    pub upload_blobs: usize,
}

/// What happened to one item.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemOutcome {
    /// Source reference.
    pub source: String,
    /// Target reference (repository + tag, or @digest).
    pub target: String,
    /// The item's digest; `None` for what is not one item of the bundle (a
    /// Helm repository index, a referrers fallback tag). JSON keeps the key:
    /// `sha256:<hex>`, or `""` when there is none.
    #[serde(serialize_with = "digest_or_empty")]
    pub digest: Option<Digest>,
    /// Why it failed, or a note on how it landed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An absent digest as JSON has always shown it: an empty string.
fn digest_or_empty<S: serde::Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.collect_str(d),
        None => s.serialize_str(""),
    }
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportReport {
    /// The plan.
    pub plan: Vec<PlanEntry>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Items now at the target.
    pub loaded: Vec<ItemOutcome>,
    /// Items that did not land, with the reason in `note`.
    pub failed: Vec<ItemOutcome>,
    /// Items left alone because no target of their kind was given.
    pub skipped: Vec<ItemOutcome>,
    /// Files written to the file target (derived ones included).
    pub files_written: usize,
    /// Files the file target already had.
    pub files_present: usize,
    /// Blobs uploaded.
    pub blobs_uploaded: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Ordered readers of the bundle: 1 (each blob hashed once, whatever
    /// `--jobs` is; the lanes decode large blobs' frames a second time, see
    /// `blobs_laned`).
    pub readers: usize,
    /// Large blobs a lane streamed to the target beside the ordered read,
    /// from their own zstd frames (the ordered read still verified each;
    /// see `run/lanes.rs`).
    pub blobs_laned: usize,
    /// Blobs read again from the bundle after their first upload failed
    /// once their bytes were gone (0 when every upload went through).
    pub blobs_reread: usize,
    /// Blobs mounted from another repository.
    pub blobs_mounted: usize,
    /// Blobs the target already had.
    pub blobs_present: usize,
    /// Manifests pushed.
    pub manifests_pushed: usize,
    /// Manifests the target already had.
    pub manifests_present: usize,
    /// Blobs that failed verification.
    pub bad_blobs: Vec<String>,
    /// The bundle's signature, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureCheck>,
    /// What the preflight checked before the first upload (`None` when
    /// there was nothing to push).
    pub preflight: Option<Preflight>,
    /// What the target holds of this bundle, per repository.
    #[serde(skip)]
    pub receipt: Receipt,
}

/// Why an import stopped before committing anything.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The bundle could not be opened.
    #[error("failed to open bundle `{path}`")]
    Open {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The bundle failed verification (nothing was pushed).
    #[error("bundle `{path}` failed verification; no manifest was pushed")]
    Bundle {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: BundleError,
    },
    /// A split bundle's manifest or a part is bad: missing, truncated or
    /// corrupt (nothing was pushed; the error names the part).
    #[error("bundle `{path}` failed verification; no manifest was pushed")]
    Parts {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: PartsError,
    },
    /// `--key` was given and the signature over `ferry/bundle.json` does
    /// not verify (unsigned, another key, altered): nothing was loaded.
    #[error("bundle `{path}` is refused: its signature does not verify; nothing was loaded")]
    Signature {
        /// Path.
        path: PathBuf,
        /// Cause (names the key file and key ids).
        #[source]
        source: ferry_bundle::sign::SignError,
    },
    /// A mapping produced an invalid name.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The bundle holds content this version cannot import.
    #[error("bundle item `{reference}` is of kind `{kind}`, which this version of ferry cannot import yet")]
    UnsupportedKind {
        /// Item.
        reference: String,
        /// Kind.
        kind: String,
    },
    /// The file target cannot be used.
    #[error("file target `{target}` is not usable")]
    Files {
        /// The target.
        target: String,
        /// Cause.
        #[source]
        source: crate::files::FilesError,
    },
    /// The bundle's file items cannot be planned.
    #[error("bad file item in the bundle: {0}")]
    FileItem(String),
    /// A differential bundle's base is not at the target.
    #[error("this is a differential bundle, and {} base blob(s) it relies on are not at the target; nothing was pushed:\n{}", .0.len(), .0.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
    MissingBase(Vec<Digest>),
    /// The target registry cannot be reached.
    #[error("target registry `{host}` is not reachable")]
    Unreachable {
        /// Host.
        host: String,
        /// Cause.
        #[source]
        source: ferry_registry::Error,
    },
    /// The target registry answers, and refuses these credentials.
    #[error("target registry `{host}` refuses these credentials; nothing was pushed")]
    Unauthorized {
        /// Host.
        host: String,
        /// Its answer.
        #[source]
        source: ferry_registry::Error,
    },
    /// A target repository refuses pushes (credentials or permissions),
    /// found before anything was pushed.
    #[error("the target refuses pushes to `{repository}`; nothing was pushed")]
    PushRefused {
        /// The repository.
        repository: String,
        /// The registry's answer.
        #[source]
        source: ferry_registry::Error,
    },
    /// The store's filesystem lacks room for the blobs to write, found
    /// before anything was written.
    #[error("not enough room in `{}`: the import writes {needed} bytes there and {available} are available; nothing was written", path.display())]
    NoRoom {
        /// The directory measured.
        path: std::path::PathBuf,
        /// Bytes the import writes.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// An internal task failed.
    #[error("import task failed: {0}")]
    Task(String),
}

/// What an import checked before its first upload.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preflight {
    /// Target repositories that accepted an upload session (a push).
    pub repositories: usize,
    /// The store's room (a store target).
    pub room: Option<ferry_bundle::room::Room>,
}

impl ImportError {
    /// Whether the cause is the environment (network, registry) rather than the input.
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            ImportError::Unreachable { .. }
                | ImportError::PushRefused { .. }
                | ImportError::Unauthorized { .. }
                | ImportError::NoRoom { .. }
                | ImportError::Files { .. }
                | ImportError::Task(_)
                | ImportError::Open { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "3b1f0e6b3a0c2d9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817";

    fn digest() -> Digest {
        Digest::from_hex(HEX).unwrap()
    }

    #[test]
    fn a_plan_entry_serializes_its_digest_as_the_sha256_string() {
        let entry = PlanEntry {
            kind: "image".into(),
            source: "quay.io/falco/falco:0.44.1".into(),
            target: "mirror.local/quay.io/falco/falco:0.44.1".into(),
            digest: digest(),
            upload_blobs: 3,
        };
        assert_eq!(
            serde_json::to_string(&entry).unwrap(),
            format!(
                r#"{{"kind":"image","source":"quay.io/falco/falco:0.44.1","target":"mirror.local/quay.io/falco/falco:0.44.1","digest":"sha256:{HEX}","upload_blobs":3}}"#
            )
        );
    }

    #[test]
    fn an_outcome_with_a_digest_serializes_as_before() {
        let outcome = ItemOutcome {
            source: "quay.io/falco/falco:0.44.1".into(),
            target: "mirror.local/quay.io/falco/falco:0.44.1".into(),
            digest: Some(digest()),
            note: None,
        };
        assert_eq!(
            serde_json::to_string(&outcome).unwrap(),
            format!(
                r#"{{"source":"quay.io/falco/falco:0.44.1","target":"mirror.local/quay.io/falco/falco:0.44.1","digest":"sha256:{HEX}"}}"#
            )
        );
    }

    #[test]
    fn an_outcome_without_a_digest_keeps_the_key_with_an_empty_string() {
        let outcome = ItemOutcome {
            source: "helm repository index".into(),
            target: String::new(),
            digest: None,
            note: Some("failed to write `helm/index.yaml`".into()),
        };
        assert_eq!(
            serde_json::to_string(&outcome).unwrap(),
            r#"{"source":"helm repository index","target":"","digest":"","note":"failed to write `helm/index.yaml`"}"#
        );
    }

    #[test]
    fn a_missing_base_lists_each_digest_in_full() {
        let e = ImportError::MissingBase(vec![digest()]);
        assert!(e.to_string().ends_with(&format!("\n  sha256:{HEX}")), "{e}");
    }
}
