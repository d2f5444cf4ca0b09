//! The signature policy at export (issue 15): every item a rule of the
//! spec's `verify:` section matches is verified, from the signatures the
//! bundle will carry, before anything is written.
//!
//! ```text
//! spec verify: ──load──▶ Policy (+ the exact bytes of its keys and trusted root)
//! resolved items + their provenance (cosign tags, referrers) ──fetch signature blobs──▶ verify_subject
//!   ──▶ verdicts (bundle.json `verification`) or a refusal naming reference, rule and why
//! ```
//!
//! The signatures checked are the provenance items discovered for the
//! subject (`sha256-<hex>.sig/.att` tags and OCI 1.1 referrers): exactly what
//! the bundle carries, so the isolated side re-checks the same bytes
//! offline. A rule applies to the item's top digest (an index's digest for a
//! multi-arch image); a signature made on a platform child does not satisfy
//! it (docs/verification.md).

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use futures_util::StreamExt;

use ferry_bundle::meta::{ItemVerdict, Kind, Verification};
use ferry_bundle::spec::Spec;
use ferry_bundle::Digest;
use ferry_registry::Client;
use ferry_trust::{
    Decision, Policy, PolicyError, SignatureArtifact, Subject, TrustError, VerifySpec,
};

use crate::{Resolved, ResolvedImage};

/// Why the policy refused the export (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum PolicyCheckError {
    /// The spec's `verify:` section cannot be used.
    #[error("the spec's `verify:` section (`{spec}`) cannot be used")]
    Policy {
        /// The spec file.
        spec: String,
        /// Why.
        #[source]
        source: PolicyError,
    },
    /// Items failed an `enforce` rule.
    #[error("{} item(s) failed the signature policy:\n{}", .0.len(), .0.iter().map(|(r, e)| format!("  {r}: {e}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<(String, TrustError)>),
    /// A signature artifact's blob could not be fetched.
    #[error("failed to fetch signature blob {digest} of {reference}: {reason}")]
    Fetch {
        /// The signed item.
        reference: String,
        /// The blob.
        digest: Digest,
        /// Why.
        reason: String,
    },
}

impl PolicyCheckError {
    /// Network trouble, not a verdict.
    pub fn is_environment(&self) -> bool {
        matches!(self, PolicyCheckError::Fetch { .. })
    }
}

/// Loads the spec's policy (paths relative to the spec's directory).
pub fn load_policy(spec: &Spec) -> Result<Option<Policy>, PolicyCheckError> {
    let Some(v) = &spec.verify else {
        return Ok(None);
    };
    Policy::load_from_dir(v, &spec.base_dir)
        .map(Some)
        .map_err(|source| PolicyCheckError::Policy {
            spec: spec.source.display().to_string(),
            source,
        })
}

/// What the policy decided, item by item, plus the warnings of `warn` rules.
#[derive(Debug, Clone)]
pub struct PolicyOutcome {
    /// For `bundle.json`.
    pub verification: Verification,
    /// `warn` rules that failed: (reference, why).
    pub warnings: Vec<(String, TrustError)>,
}

/// The items a policy looks at: registry content that is not itself
/// provenance.
/// With `staged` (a re-export: every item is local, its blobs staged),
/// local items are subjects too; else they are ferry's own file artifacts.
fn subjects(resolved: &Resolved, staged: bool) -> impl Iterator<Item = &ResolvedImage> {
    resolved.images.iter().filter(move |i| {
        (staged || !i.local) && i.subject.is_none() && i.kind != Kind::FalcoctlIndex
    })
}

/// Verifies every matching item against `policy`; `Err` lists every item
/// an `enforce` rule refused (reference, rule and why). `local_blobs`: a
/// re-export's staging directory, where the signatures' blobs are read
/// (nothing is fetched).
pub async fn check(
    client: &Client,
    resolved: &Resolved,
    policy: &Policy,
    spec: &VerifySpec,
    local_blobs: Option<&std::path::Path>,
) -> Result<PolicyOutcome, PolicyCheckError> {
    let mut verdicts = Vec::new();
    let mut refused = Vec::new();
    let mut warnings = Vec::new();
    // The provenance the bundle carries, by the subject it belongs to.
    let mut by_subject: HashMap<&Digest, Vec<&ResolvedImage>> = HashMap::new();
    for a in &resolved.images {
        if let Some(s) = &a.subject {
            by_subject.entry(s).or_default().push(a);
        }
    }
    for item in subjects(resolved, local_blobs.is_some()) {
        let registry = item.reference.registry.as_str();
        let repository = item.reference.repository.as_str();
        if policy.rule_for(registry, repository).is_none() {
            continue;
        }
        let name = item.name();
        // The provenance the bundle carries for this subject, with blobs.
        let mut owned: Vec<(bytes::Bytes, BTreeMap<String, Vec<u8>>)> = Vec::new();
        for art in by_subject.get(&item.top.digest).into_iter().flatten() {
            let mut blobs = BTreeMap::new();
            for d in art.top.parsed.blobs() {
                if d.size > ferry_trust::MAX_ARTIFACT_BLOB {
                    continue;
                }
                let fetch_err = |reason: String| PolicyCheckError::Fetch {
                    reference: name.clone(),
                    digest: d.digest.clone(),
                    reason,
                };
                let data = match local_blobs.filter(|_| art.local) {
                    // A re-export: the blob is staged (hashed) already.
                    Some(dir) => {
                        let path = dir.join("blobs").join("sha256").join(d.digest.hex());
                        std::fs::read(&path).map_err(|e| {
                            fetch_err(format!("failed to read `{}`: {e}", path.display()))
                        })?
                    }
                    None => {
                        let mut stream = client
                            .get_blob(&art.repo, &d.digest, Some(d.size))
                            .await
                            .map_err(|e| fetch_err(ferry_registry::chain(&e)))?;
                        let mut data = Vec::with_capacity(d.size as usize);
                        while let Some(chunk) = stream.next().await {
                            data.extend_from_slice(
                                &chunk.map_err(|e| fetch_err(ferry_registry::chain(&e)))?,
                            );
                        }
                        data
                    }
                };
                blobs.insert(d.digest.to_string(), data);
            }
            owned.push((art.top.bytes.clone(), blobs));
        }
        let artifacts: Vec<SignatureArtifact<'_>> = owned
            .iter()
            .map(|(m, b)| SignatureArtifact {
                manifest: m,
                blobs: b,
            })
            .collect();
        let digest = item.top.digest.to_string();
        let subject = Subject {
            digest: &digest,
            manifest: &item.top.bytes,
        };
        match ferry_trust::verify_subject(policy, registry, repository, subject, &artifacts) {
            Ok(Decision::NoRule) => {}
            Ok(decision) => {
                if let Decision::Warned(e) = &decision {
                    warnings.push((name.clone(), e.clone()));
                }
                verdicts.push(ItemVerdict {
                    reference: name,
                    digest: item.top.digest.clone(),
                    decision,
                });
            }
            Err(e) => refused.push((name, e)),
        }
    }
    if !refused.is_empty() {
        return Err(PolicyCheckError::Refused(refused));
    }
    let materials = policy
        .materials()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD.encode(v),
            )
        })
        .collect();
    Ok(PolicyOutcome {
        verification: Verification {
            policy: spec.clone(),
            materials,
            verdicts,
        },
        warnings,
    })
}
