//! The signature policy on the isolated side, offline (issue 15): every
//! carried signature re-verified from the bundle's own bytes, before
//! anything lands.
//!
//! The policy is the one given (`--policy FILE`: a spec or a file with a
//! `verify:` section; paths relative to it) or, without one, the policy the
//! bundle carries (`bundle.json` `verification`, covered by the bundle's
//! signature: trust it only with `--key`). One read of the bundle, with
//! every check `ferry verify` makes, keeps the manifests of the subjects
//! and their signature artifacts and the artifacts' blobs; then each subject
//! is verified as at export. A subject the export recorded as verified that
//! no longer verifies (a signature stripped or swapped after export) is
//! refused even under `unsigned: allow`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_bundle::digest::Digest;
use ferry_bundle::meta::{BlobMeta, BundleMeta, ItemVerdict, Kind};
use ferry_bundle::parts::open_bundle;
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, VisitResult, Visitor,
};
use ferry_bundle::reference::Reference;
use ferry_bundle::sign::TrustedKey;
use ferry_trust::{Decision, Policy, SignatureArtifact, Subject, TrustError, VerifySpec};

/// A signature artifact's blobs, by digest.
type ArtifactBlobs = BTreeMap<String, Vec<u8>>;

/// Where the policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `--policy FILE`.
    Given(PathBuf),
    /// The bundle's own `verification` section.
    Carried,
}

/// What the offline check decided.
#[derive(Debug, Clone)]
pub struct TrustReport {
    /// Where the policy came from.
    pub source: PolicySource,
    /// One verdict per item a rule matched.
    pub verdicts: Vec<ItemVerdict>,
    /// `warn` rules that failed: (reference, why).
    pub warnings: Vec<(String, TrustError)>,
}

/// Why the bundle is refused (nothing was loaded).
#[derive(Debug, thiserror::Error)]
pub enum RecheckError {
    /// The bundle could not be opened or read intact.
    #[error("the bundle `{path}` is not intact")]
    Bundle {
        /// The bundle.
        path: PathBuf,
        /// Cause.
        #[source]
        source: BundleError,
    },
    /// The bundle could not be opened.
    #[error("failed to open the bundle `{path}`: {reason}")]
    Open {
        /// The bundle.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A policy that cannot be used.
    #[error("the signature policy {what} cannot be used: {reason}")]
    Policy {
        /// Which policy.
        what: String,
        /// Why.
        reason: String,
    },
    /// Items failed an `enforce` rule, or lost a signature recorded at export.
    #[error("{} item(s) failed the signature policy:\n{}", .0.len(), .0.iter().map(|(r, e)| format!("  {r}: {e}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<(String, String)>),
}

/// Reads a `--policy FILE`: a spec (its `verify:` section) or a document
/// whose top level is `verify:`; key paths are relative to its directory.
pub fn load_policy_file(path: &Path) -> Result<(VerifySpec, PathBuf), RecheckError> {
    let bad = |reason: String| RecheckError::Policy {
        what: format!("`{}`", path.display()),
        reason,
    };
    let text = ferry_bundle::input::read_text(path, ferry_bundle::input::SPEC)
        .map_err(|e| bad(e.to_string()))?;
    ferry_bundle::yaml::check_depth(text.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let doc: yaml_serde::Value = yaml_serde::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let section = doc
        .get("verify")
        .cloned()
        .ok_or_else(|| bad("no `verify:` section".into()))?;
    let spec: VerifySpec = yaml_serde::from_value(section).map_err(|e| bad(e.to_string()))?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((spec, base))
}

/// What the signature check needs from one read of a bundle: the manifests
/// of every item and the blobs of the signature artifacts. Fed by any
/// visitor ([`recheck`]'s own, or `ferry verify`'s, so verify reads the
/// bundle once), then [`SignatureCollector::decide`].
#[derive(Default)]
pub struct SignatureCollector {
    /// bundle.json, shared with the reader's head.
    meta: Option<Arc<BundleMeta>>,
    /// Manifests kept: subjects and signature artifacts.
    keep_manifests: HashSet<Digest>,
    /// The signature artifacts among them (items with a subject).
    artifacts: HashSet<Digest>,
    manifests: HashMap<Digest, Vec<u8>>,
    /// Blobs kept: the artifacts' layers.
    keep_blobs: HashSet<Digest>,
    blobs: HashMap<Digest, Vec<u8>>,
}

impl SignatureCollector {
    /// The bundle's head (checked).
    pub fn head(&mut self, meta: &Arc<BundleMeta>) {
        for item in &meta.items {
            self.keep_manifests.insert(item.digest.clone());
            if item.subject.is_some() {
                self.artifacts.insert(item.digest.clone());
            }
        }
        self.meta = Some(Arc::clone(meta));
    }

    /// A verified manifest.
    pub fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) {
        if !self.keep_manifests.contains(&blob.digest) {
            return;
        }
        self.manifests.insert(blob.digest.clone(), bytes.to_vec());
        // An artifact's layers are what its signature is made of.
        if self.artifacts.contains(&blob.digest) {
            if let Ok(p) =
                ferry_bundle::manifest::parse(bytes, blob.media_type.as_ref().map(AsRef::as_ref))
            {
                for d in p.blobs() {
                    if d.size <= ferry_trust::MAX_ARTIFACT_BLOB {
                        self.keep_blobs.insert(d.digest.clone());
                    }
                }
            }
        }
    }

    /// Whether the check needs this blob's bytes.
    pub fn wants(&self, d: &Digest) -> bool {
        self.keep_blobs.contains(d)
    }

    /// A wanted blob's bytes (before the reader's verdict).
    pub fn blob(&mut self, blob: &BlobMeta, bytes: Vec<u8>) {
        self.blobs.insert(blob.digest.clone(), bytes);
    }

    /// A blob that failed verification is not used.
    pub fn blob_failed(&mut self, d: &Digest) {
        self.blobs.remove(d);
    }

    /// Verifies every subject against `given` or, without it, the policy the
    /// bundle carries; `Ok(None)`: no policy at all.
    pub fn decide(
        self,
        given: Option<(&VerifySpec, &Path, &Path)>,
    ) -> Result<Option<TrustReport>, RecheckError> {
        match self.meta.clone() {
            Some(meta) => decide(&self, &meta, given),
            None => Ok(None),
        }
    }
}

struct Collect<'a> {
    key: Option<&'a TrustedKey>,
    c: SignatureCollector,
}

impl Visitor for Collect<'_> {
    fn head(&mut self, head: &Head) -> VisitResult {
        if let Some(k) = self.key {
            k.verify_prehashed(&head.meta_prehash, head.signature.as_deref())
                .map_err(|e| Box::new(e) as Box<_>)?;
        }
        self.c.head(&head.meta);
        Ok(())
    }

    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult {
        self.c.manifest(blob, bytes);
        Ok(())
    }

    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        if self.c.wants(&blob.digest) {
            let mut v = Vec::with_capacity(blob.size as usize);
            data.take(ferry_trust::MAX_ARTIFACT_BLOB)
                .read_to_end(&mut v)?;
            self.c.blob(blob, v);
        }
        Ok(())
    }

    fn blob_end(&mut self, blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        if verdict.is_err() {
            self.c.blob_failed(&blob.digest);
        }
        verdict.map_err(|f| format!("blob {}: {}", f.digest, f.reason).into())
    }
}

/// Re-verifies the bundle's signatures offline against `given` (a policy
/// and the directory its paths are relative to) or, without it, the policy
/// the bundle carries. `Ok(None)`: no policy at all. Reads the whole bundle
/// (every check `ferry verify` makes; with `key`, the bundle's signature
/// first).
pub fn recheck(
    bundle: &Path,
    given: Option<(&VerifySpec, &Path, &Path)>,
    key: Option<&TrustedKey>,
) -> Result<Option<TrustReport>, RecheckError> {
    let mut src = open_bundle(bundle).map_err(|e| RecheckError::Open {
        path: bundle.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut c = Collect {
        key,
        c: SignatureCollector::default(),
    };
    let read = read_bundle(
        std::io::BufReader::with_capacity(1 << 20, &mut src),
        ReadOptions { keep_going: false },
        &mut c,
    );
    if let Err(source) = read {
        return Err(RecheckError::Bundle {
            path: bundle.to_path_buf(),
            source,
        });
    }
    src.finish().map_err(|e| RecheckError::Open {
        path: bundle.to_path_buf(),
        reason: e.to_string(),
    })?;
    c.c.decide(given)
}

fn decide(
    c: &SignatureCollector,
    meta: &BundleMeta,
    given: Option<(&VerifySpec, &Path, &Path)>,
) -> Result<Option<TrustReport>, RecheckError> {
    let (policy, source): (Policy, PolicySource) = match given {
        Some((spec, base, file)) => (
            Policy::load_from_dir(spec, base).map_err(|e| RecheckError::Policy {
                what: format!("`{}`", file.display()),
                reason: e.to_string(),
            })?,
            PolicySource::Given(file.to_path_buf()),
        ),
        None => match &meta.verification {
            Some(v) => (
                v.load_policy().map_err(|e| RecheckError::Policy {
                    what: "the bundle carries".into(),
                    reason: e.to_string(),
                })?,
                PolicySource::Carried,
            ),
            None => return Ok(None),
        },
    };
    let mut verdicts = Vec::new();
    let mut warnings = Vec::new();
    let mut refused = Vec::new();
    let mut by_subject: HashMap<&Digest, Vec<&ferry_bundle::meta::Item>> = HashMap::new();
    for a in &meta.items {
        if let Some(s) = &a.subject {
            by_subject.entry(s).or_default().push(a);
        }
    }
    for item in meta
        .items
        .iter()
        .filter(|i| i.subject.is_none() && i.path.is_none() && i.kind != Kind::FalcoctlIndex)
    {
        let Ok(r) = Reference::parse(&item.reference) else {
            continue;
        };
        if policy.rule_for(&r.registry, &r.repository).is_none() {
            continue;
        }
        let Some(subject_bytes) = c.manifests.get(&item.digest) else {
            continue;
        };
        let owned: Vec<(&Vec<u8>, ArtifactBlobs)> = by_subject
            .get(&item.digest)
            .into_iter()
            .flatten()
            .filter_map(|a| {
                let m = c.manifests.get(&a.digest)?;
                let parsed = ferry_bundle::manifest::parse(m, Some(a.media_type.as_ref())).ok()?;
                let blobs = parsed
                    .blobs()
                    .filter_map(|d| Some((d.digest.to_string(), c.blobs.get(&d.digest)?.clone())))
                    .collect();
                Some((m, blobs))
            })
            .collect();
        let artifacts: Vec<SignatureArtifact<'_>> = owned
            .iter()
            .map(|(m, b)| SignatureArtifact {
                manifest: m,
                blobs: b,
            })
            .collect();
        let digest = item.digest.to_string();
        let decision = ferry_trust::verify_subject(
            &policy,
            &r.registry,
            &r.repository,
            Subject {
                digest: &digest,
                manifest: subject_bytes,
            },
            &artifacts,
        );
        let recorded_verified = meta
            .verification
            .as_ref()
            .and_then(|v| v.verdict(&item.reference))
            .is_some_and(|v| matches!(v.decision, Decision::Verified(_)));
        match decision {
            Ok(Decision::NoRule) => {}
            Ok(Decision::Verified(v)) => verdicts.push(ItemVerdict {
                reference: item.reference.clone(),
                digest: item.digest.clone(),
                decision: Decision::Verified(v),
            }),
            Ok(other) if recorded_verified => refused.push((
                item.reference.clone(),
                format!(
                    "the export recorded a verified signature, and it does not verify now ({}): stripped or swapped after export",
                    match &other {
                        Decision::Warned(e) => e.to_string(),
                        _ => "no signature".into(),
                    }
                ),
            )),
            Ok(other) => {
                if let Decision::Warned(e) = &other {
                    warnings.push((item.reference.clone(), e.clone()));
                }
                verdicts.push(ItemVerdict {
                    reference: item.reference.clone(),
                    digest: item.digest.clone(),
                    decision: other,
                });
            }
            Err(e) => refused.push((item.reference.clone(), e.to_string())),
        }
    }
    if !refused.is_empty() {
        return Err(RecheckError::Refused(refused));
    }
    Ok(Some(TrustReport {
        source,
        verdicts,
        warnings,
    }))
}

/// One line per verdict for human output: who signed what.
pub fn describe(v: &ItemVerdict) -> String {
    match &v.decision {
        Decision::Verified(verdict) => {
            let by = match &verdict.satisfied_by {
                ferry_trust::SatisfiedBy::Key { key_id, path } => {
                    format!("key {path} (id {})", &key_id[..key_id.len().min(16)])
                }
                ferry_trust::SatisfiedBy::Identity { issuer, subject } => {
                    format!("{subject} (issuer {issuer})")
                }
            };
            let log = verdict
                .log_index
                .map(|i| format!(", Rekor log index {i}"))
                .unwrap_or_default();
            let att = if verdict.attestations.is_empty() {
                String::new()
            } else {
                format!(
                    ", attestations {}",
                    verdict
                        .attestations
                        .iter()
                        .map(|a| a.predicate_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            format!("signed by {by}{log}{att} (rule {})", verdict.rule)
        }
        Decision::AllowedUnsigned { rule } => format!("unsigned, allowed by rule {rule}"),
        Decision::Warned(e) => format!("WARNING: {e}"),
        Decision::NoRule => "no rule".into(),
    }
}
