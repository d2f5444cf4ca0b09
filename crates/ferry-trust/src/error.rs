//! Why a subject failed its rule.
//!
//! Every string that may come from the bundle (digests, certificate
//! subjects, parse errors quoting hostile input) is printed escaped
//! (`escape_debug`): a control character cannot reach a terminal.

use serde::{Deserialize, Serialize};

/// One reason a signature (or the subject as a whole) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Failure {
    /// Nothing signed the subject.
    #[error("no signature")]
    NoSignature,
    /// Signatures exist, none verifies with any configured key.
    #[error("wrong key: no signature verifies with {}", .keys.escape_debug())]
    WrongKey {
        /// The configured key ids, comma-separated.
        keys: String,
    },
    /// The certificate's subject is not an accepted one.
    #[error("identity mismatch: certificate subject {found:?} (issuer {issuer:?}) is not accepted by the rule")]
    IdentityMismatch {
        /// The SAN values found.
        found: String,
        /// The issuer found.
        issuer: String,
    },
    /// The subject matched, the OIDC issuer did not.
    #[error("issuer mismatch: certificate issuer {found:?}, the rule wants {expected:?}")]
    IssuerMismatch {
        /// Issuer in the certificate.
        found: String,
        /// Issuer(s) the matching identities want.
        expected: String,
    },
    /// The signed payload names another digest.
    #[error("payload digest mismatch: the signature is for {}, not {}", .found.escape_debug(), .expected.escape_debug())]
    PayloadDigestMismatch {
        /// The subject digest.
        expected: String,
        /// What the payload names.
        found: String,
    },
    /// The leaf certificate was not valid at the signing time.
    #[error("certificate expired or not yet valid at {at}{}", if *with_log_entry { " (the transparency-log time)" } else { " (now: there is no verified transparency-log entry)" })]
    CertificateExpired {
        /// The time checked, RFC 3339.
        at: String,
        /// Whether that time came from a verified log entry.
        with_log_entry: bool,
    },
    /// The certificate does not chain to a CA of the trusted root valid at
    /// the signing time.
    #[error("certificate chain not trusted: {}", .0.escape_debug())]
    ChainNotTrusted(String),
    /// The trusted root lists CT logs and the leaf carries no SCT that
    /// verifies with one of them.
    #[error("certificate transparency: {}", .0.escape_debug())]
    BadSct(String),
    /// The signature does not verify with the certificate's key.
    #[error("signature does not verify with the certificate's key")]
    BadSignature,
    /// The SET or log entry is bad.
    #[error("bad transparency-log entry (SET): {}", .0.escape_debug())]
    BadSet(String),
    /// The inclusion proof is bad.
    #[error("bad transparency-log inclusion proof: {}", .0.escape_debug())]
    BadInclusionProof(String),
    /// The rule requires a log entry and there is none.
    #[error("no transparency-log entry (the rule has tlog: required)")]
    TlogRequired,
    /// A required annotation is absent or different.
    #[error("annotation mismatch: {key:?} is {found:?}, the rule wants {expected:?}")]
    AnnotationMismatch {
        /// The annotation key.
        key: String,
        /// The rule's value.
        expected: String,
        /// The payload's value, if any.
        found: Option<String>,
    },
    /// A required attestation is absent or does not verify.
    #[error("missing attestation: no verified attestation of predicate type {predicate_type:?}")]
    MissingAttestation {
        /// The predicate type.
        predicate_type: String,
    },
    /// A signature carries a certificate but the rule has no identities, or
    /// no certificate and the rule has no keys.
    #[error("no usable verification material: {}", .0.escape_debug())]
    NoMaterial(String),
    /// A signature artifact that does not parse.
    #[error("malformed signature artifact: {}", .0.escape_debug())]
    Malformed(String),
}

/// A subject refused by its rule (mode `enforce`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: rule `{}`: {reason}{}", .subject.escape_debug(), .rule.escape_debug(), if *others > 0 { format!(" (and {others} other signature(s) failed too)") } else { String::new() })]
pub struct TrustError {
    /// The subject digest.
    pub subject: String,
    /// The rule's `match`.
    pub rule: String,
    /// Why: the most informative failure among the signatures tried (the
    /// one that got furthest), or the subject's as a whole.
    pub reason: Box<Failure>,
    /// How many more signatures failed.
    pub others: usize,
}
