//! [`verify_subject`]: one subject, its rule, its signature artifacts →
//! a [`Decision`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cert::{parse_leaf, verify_chain, verify_sct};
use crate::error::{Failure, TrustError};
use crate::formats::{
    candidates, Candidate, Format, SignatureArtifact, Signed, COSIGN_SIGN_PREDICATE,
};
use crate::policy::{Mode, Policy, Rule, TlogRequirement, Unsigned};
use crate::tlog::{check_binding, verify_entry, Binding, VerifiedEntry};

/// The signed subject: its digest and its manifest's bytes (a Sigstore
/// bundle's `messageSignature` signs those bytes).
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// `sha256:<hex>`.
    pub digest: &'a str,
    /// The manifest or index bytes; they must hash to `digest`.
    pub manifest: &'a [u8],
}

/// Who satisfied the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum SatisfiedBy {
    /// A configured key.
    Key {
        /// sha256 of the key's SubjectPublicKeyInfo DER, hex.
        #[serde(rename = "keyId")]
        key_id: String,
        /// The key file as written in the policy.
        path: String,
    },
    /// A keyless identity.
    Identity {
        /// The certificate's OIDC issuer.
        issuer: String,
        /// The certificate's SAN that matched.
        subject: String,
    },
}

/// One verified attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationVerdict {
    /// The in-toto predicate type.
    pub predicate_type: String,
    /// Who signed it.
    pub satisfied_by: SatisfiedBy,
    /// Where it came from.
    pub format: Format,
    /// The attestation manifest's digest.
    pub artifact: String,
    /// The Rekor log index, when a log entry verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<i64>,
}

/// A subject that satisfied its rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// The subject digest.
    pub subject: String,
    /// The rule's `match`.
    pub rule: String,
    /// Who signed.
    pub satisfied_by: SatisfiedBy,
    /// Which format.
    pub format: Format,
    /// The signature manifest's digest.
    pub artifact: String,
    /// The Rekor log index, when a log entry verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<i64>,
    /// The Rekor integrated time (Unix seconds), when a log entry verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrated_time: Option<i64>,
    /// The attestations the rule required, verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationVerdict>,
}

/// What [`verify_subject`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    /// No rule matches the repository: nothing was checked.
    NoRule,
    /// The rule has `unsigned: allow` and the subject carries no signature.
    AllowedUnsigned {
        /// The rule's `match`.
        rule: String,
    },
    /// Verified.
    Verified(Verdict),
    /// The rule is in `warn` mode and the subject failed it.
    Warned(TrustError),
}

/// Verifies `subject` (in `registry/repository`) against `policy` with
/// `artifacts` — every signature artifact the bundle carries for it
/// (cosign `.sig`/`.att` manifests, OCI referrers) — at the current time.
pub fn verify_subject(
    policy: &Policy,
    registry: &str,
    repository: &str,
    subject: Subject<'_>,
    artifacts: &[SignatureArtifact<'_>],
) -> Result<Decision, TrustError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    verify_subject_at(policy, registry, repository, subject, artifacts, now)
}

/// [`verify_subject`] with "now" given (Unix seconds): the time a keyless
/// certificate must be valid at when no log entry verifies.
pub fn verify_subject_at(
    policy: &Policy,
    registry: &str,
    repository: &str,
    subject: Subject<'_>,
    artifacts: &[SignatureArtifact<'_>],
    now: i64,
) -> Result<Decision, TrustError> {
    let Some(rule) = policy.rule_for(registry, repository) else {
        return Ok(Decision::NoRule);
    };
    match check(policy, rule, subject, artifacts, now) {
        Ok(Some(v)) => Ok(Decision::Verified(v)),
        Ok(None) => Ok(Decision::AllowedUnsigned {
            rule: rule.pattern.clone(),
        }),
        Err((reason, others)) => {
            let err = TrustError {
                subject: subject.digest.to_owned(),
                rule: rule.pattern.clone(),
                reason: Box::new(reason),
                others,
            };
            match rule.mode {
                Mode::Enforce => Err(err),
                Mode::Warn => Ok(Decision::Warned(err)),
            }
        }
    }
}

/// How far a failure got: the most informative one is reported.
fn rank(f: &Failure) -> u8 {
    match f {
        Failure::NoSignature => 0,
        Failure::Malformed(_) => 1,
        Failure::NoMaterial(_) => 2,
        Failure::WrongKey { .. } => 3,
        Failure::BadSignature | Failure::ChainNotTrusted(_) | Failure::BadSct(_) => 4,
        Failure::CertificateExpired { .. } => 5,
        Failure::BadSet(_) | Failure::BadInclusionProof(_) | Failure::TlogRequired => 6,
        Failure::IdentityMismatch { .. } | Failure::IssuerMismatch { .. } => 7,
        Failure::PayloadDigestMismatch { .. } => 8,
        Failure::AnnotationMismatch { .. } | Failure::MissingAttestation { .. } => 9,
    }
}

struct Sat {
    by: SatisfiedBy,
    entry: Option<VerifiedEntry>,
}

type Outcome = Result<Option<Verdict>, (Failure, usize)>;

fn check(
    policy: &Policy,
    rule: &Rule,
    subject: Subject<'_>,
    artifacts: &[SignatureArtifact<'_>],
    now: i64,
) -> Outcome {
    let computed = format!("sha256:{}", hex::encode(Sha256::digest(subject.manifest)));
    if computed != subject.digest {
        return Err((
            Failure::Malformed(format!(
                "subject manifest bytes hash to {computed}, not {}",
                subject.digest
            )),
            0,
        ));
    }
    let mut sigs = Vec::new();
    let mut atts = Vec::new();
    let mut failures: Vec<Failure> = Vec::new();
    for a in artifacts {
        match candidates(a, subject.digest, subject.manifest) {
            Ok((cs, bad)) => {
                failures.extend(bad);
                for c in cs {
                    let is_sig = match &c.signed {
                        Signed::Message { .. } => true,
                        Signed::Dsse { predicate_type, .. } => {
                            predicate_type == COSIGN_SIGN_PREDICATE
                        }
                    };
                    if is_sig {
                        sigs.push(c);
                    } else {
                        atts.push(c);
                    }
                }
            }
            Err(f) => failures.push(f),
        }
    }
    if sigs.is_empty() && failures.is_empty() {
        if rule.unsigned == Unsigned::Allow {
            return Ok(None);
        }
        return Err((Failure::NoSignature, 0));
    }
    if rule.keys.is_empty() && rule.identities.is_empty() {
        // `unsigned: allow` with nothing to check against, and something
        // that looks like a signature: it cannot be verified, refuse.
        return Err((
            Failure::NoMaterial(
                "the rule lets unsigned content through but names no keys or identities to check the carried signature with".into(),
            ),
            (failures.len() + sigs.len()).saturating_sub(1),
        ));
    }
    // Like `cosign verify`: one signature satisfying the rule is enough; an
    // artifact that does not parse counts as a failed signature.
    let mut verdict = None;
    for c in &sigs {
        match verify_candidate(policy, rule, subject.digest, c, now, true) {
            Ok(sat) => {
                verdict = Some((c, sat));
                break;
            }
            Err(f) => failures.push(f),
        }
    }
    let Some((c, sat)) = verdict else {
        let n = failures.len();
        let best = failures
            .into_iter()
            .max_by_key(rank)
            .unwrap_or(Failure::NoSignature);
        return Err((best, n.saturating_sub(1)));
    };
    let mut attestations = Vec::new();
    for pt in &rule.attestations {
        let mut found = None;
        let mut att_failures = Vec::new();
        for a in atts.iter().filter(
            |a| matches!(&a.signed, Signed::Dsse { predicate_type, .. } if predicate_type == pt),
        ) {
            match verify_candidate(policy, rule, subject.digest, a, now, false) {
                Ok(s) => {
                    found = Some((a, s));
                    break;
                }
                Err(f) => att_failures.push(f),
            }
        }
        match found {
            Some((a, s)) => attestations.push(AttestationVerdict {
                predicate_type: pt.clone(),
                satisfied_by: s.by,
                format: a.format,
                artifact: a.artifact.clone(),
                log_index: s.entry.map(|e| e.log_index),
            }),
            None => {
                let n = att_failures.len();
                let reason = att_failures
                    .into_iter()
                    .filter(|f| {
                        rank(f)
                            >= rank(&Failure::WrongKey {
                                keys: String::new(),
                            })
                    })
                    .max_by_key(rank)
                    .unwrap_or(Failure::MissingAttestation {
                        predicate_type: pt.clone(),
                    });
                return Err((reason, n.saturating_sub(1)));
            }
        }
    }
    Ok(Some(Verdict {
        subject: subject.digest.to_owned(),
        rule: rule.pattern.clone(),
        satisfied_by: sat.by,
        format: c.format,
        artifact: c.artifact.clone(),
        log_index: sat.entry.map(|e| e.log_index),
        integrated_time: sat.entry.map(|e| e.integrated_time),
        attestations,
    }))
}

/// Checks one signature: authenticity (key or keyless), what it names, the
/// log entries, the annotations (`check_annotations` for the signature,
/// not for attestations).
fn verify_candidate(
    policy: &Policy,
    rule: &Rule,
    subject_digest: &str,
    c: &Candidate,
    now: i64,
    check_annotations: bool,
) -> Result<Sat, Failure> {
    let ck = Checked::new(policy, c);
    let mut sat = None;
    let mut key_failure = None;
    if !rule.keys.is_empty() {
        match by_key(rule, &ck)? {
            Ok(s) => sat = Some(s),
            Err(f) => key_failure = Some(f),
        }
    }
    if sat.is_none() && !rule.identities.is_empty() {
        sat = Some(by_identity(rule, &ck, now, key_failure.take())?);
    }
    let Some(sat) = sat else {
        return Err(key_failure
            .unwrap_or_else(|| Failure::NoMaterial("the rule has no keys or identities".into())));
    };
    if rule.tlog == TlogRequirement::Required && sat.entry.is_none() {
        return Err(Failure::TlogRequired);
    }
    check_payload(rule, subject_digest, c, check_annotations)?;
    Ok(sat)
}

/// One candidate signature with what its checks share: the bytes signed
/// (a message, or DSSE's PAE), the payload's sha256 the log entry binds,
/// and the trusted root.
struct Checked<'a> {
    c: &'a Candidate,
    signed_bytes: &'a [u8],
    payload_sha256: Vec<u8>,
    dsse: bool,
    root: Option<&'a crate::root::TrustedRoot>,
}

impl<'a> Checked<'a> {
    fn new(policy: &'a Policy, c: &'a Candidate) -> Checked<'a> {
        let (signed_bytes, payload_sha256, dsse): (&[u8], Vec<u8>, bool) = match &c.signed {
            Signed::Message { message, .. } => (message, Sha256::digest(message).to_vec(), false),
            Signed::Dsse {
                pae,
                payload_sha256,
                ..
            } => (pae, payload_sha256.clone(), true),
        };
        Checked {
            c,
            signed_bytes,
            payload_sha256,
            dsse,
            root: policy.trusted_root(),
        }
    }

    fn binding<'b>(&'b self, verifier_der: &'b [u8]) -> Binding<'b> {
        Binding {
            signature: &self.c.signature,
            payload_sha256: &self.payload_sha256,
            verifier_der,
            dsse: self.dsse,
        }
    }

    /// Log entries: every one present must verify and be about this
    /// signature; the first gives the signing time.
    fn entries(&self, verifier_der: &[u8]) -> Result<Option<VerifiedEntry>, Failure> {
        let Some(root) = self.root else {
            return Ok(None);
        };
        let mut first = None;
        for e in &self.c.tlog {
            check_binding(e, &self.binding(verifier_der))?;
            let v = verify_entry(e, root)?;
            first.get_or_insert(v);
        }
        Ok(first)
    }
}

/// The rule's keys: `Ok(Ok(sat))` when one verifies the signature,
/// `Ok(Err(WrongKey))` when none does (identities may still satisfy the
/// rule), `Err` when a key verifies but its log entries do not.
fn by_key(rule: &Rule, ck: &Checked<'_>) -> Result<Result<Sat, Failure>, Failure> {
    let c = ck.c;
    let Some((path, key)) = rule
        .keys
        .iter()
        .find(|(_, k)| k.verify(ck.signed_bytes, &c.signature))
    else {
        return Ok(Err(Failure::WrongKey {
            keys: rule
                .keys
                .iter()
                .map(|(p, k)| format!("{p} ({})", k.key_id()))
                .collect::<Vec<_>>()
                .join(", "),
        }));
    };
    let verifier = match c.certs.first() {
        // cosign with a key and a certificate: Rekor records the
        // certificate. Accept either as the entry's verifier.
        Some(leaf) => {
            let ok_key = c
                .tlog
                .iter()
                .all(|e| check_binding(e, &ck.binding(key.spki_der())).is_ok());
            if ok_key {
                key.spki_der().to_vec()
            } else {
                leaf.clone()
            }
        }
        None => key.spki_der().to_vec(),
    };
    let entry = ck.entries(&verifier)?;
    Ok(Ok(Sat {
        by: SatisfiedBy::Key {
            key_id: key.key_id().to_owned(),
            path: path.clone(),
        },
        entry,
    }))
}

/// The rule's keyless identities: the certificate chains to the trusted
/// root at the signing time (the log's, or now), its SCT verifies where
/// required, and one identity names its issuer and a subject.
fn by_identity(
    rule: &Rule,
    ck: &Checked<'_>,
    now: i64,
    key_failure: Option<Failure>,
) -> Result<Sat, Failure> {
    let c = ck.c;
    let Some(leaf_der) = c.certs.first() else {
        return Err(key_failure.unwrap_or_else(|| {
            Failure::NoMaterial(
                "the signature carries no certificate and the rule has no keys".into(),
            )
        }));
    };
    let Some(root) = ck.root else {
        return Err(Failure::ChainNotTrusted("no trusted root".into()));
    };
    let leaf = parse_leaf(leaf_der)?;
    if !leaf.key.verify(ck.signed_bytes, &c.signature) {
        return Err(Failure::BadSignature);
    }
    let entry = ck.entries(&leaf.der)?;
    let at = entry.map_or(now, |e| e.integrated_time);
    let issuer_der = verify_chain(&leaf.der, root, at, entry.is_some())?;
    if root.requires_sct {
        verify_sct(&leaf.der, &issuer_der, root)?;
    }
    let issuer = leaf.issuer.clone().unwrap_or_default();
    let mut subject_matched = Vec::new();
    for id in &rule.identities {
        for san in &leaf.sans {
            if id.subject.matches(san) {
                if leaf.issuer.as_deref() == Some(id.issuer.as_str()) {
                    let by = SatisfiedBy::Identity {
                        issuer,
                        subject: san.clone(),
                    };
                    return Ok(Sat { by, entry });
                }
                subject_matched.push(id.issuer.clone());
            }
        }
    }
    if subject_matched.is_empty() {
        Err(Failure::IdentityMismatch {
            found: leaf.sans.join(", "),
            issuer,
        })
    } else {
        Err(Failure::IssuerMismatch {
            found: issuer,
            expected: subject_matched.join(", "),
        })
    }
}

/// What was signed is about this subject (and carries the rule's
/// annotations, where they are checked).
fn check_payload(
    rule: &Rule,
    subject_digest: &str,
    c: &Candidate,
    check_annotations: bool,
) -> Result<(), Failure> {
    match &c.signed {
        Signed::Message {
            digest_named,
            annotations,
            ..
        } => {
            if digest_named != subject_digest {
                return Err(Failure::PayloadDigestMismatch {
                    expected: subject_digest.to_owned(),
                    found: digest_named.clone(),
                });
            }
            if check_annotations {
                for (k, want) in &rule.annotations {
                    let got = annotations.as_ref().and_then(|m| m.get(k));
                    if got != Some(want) {
                        return Err(Failure::AnnotationMismatch {
                            key: k.clone(),
                            expected: want.clone(),
                            found: got.cloned(),
                        });
                    }
                }
            }
        }
        Signed::Dsse { subjects, .. } => {
            if !subjects.iter().any(|s| s == subject_digest) {
                return Err(Failure::PayloadDigestMismatch {
                    expected: subject_digest.to_owned(),
                    found: subjects.join(", "),
                });
            }
            if check_annotations {
                if let Some((k, want)) = rule.annotations.iter().next() {
                    return Err(Failure::AnnotationMismatch {
                        key: k.clone(),
                        expected: want.clone(),
                        found: None,
                    });
                }
            }
        }
    }
    Ok(())
}
