//! ferry-trust: the signature policy of issue 15, checked from bytes only,
//! offline and synchronously.
//!
//! - [`policy`]: the spec's `verify:` section ([`VerifySpec`], serde, unknown
//!   keys refused) and the loaded [`Policy`] with [`Policy::rule_for`]
//!   (glob on `registry/repository`, most specific wins).
//! - [`root`]: the Sigstore `trusted_root.json` ([`TrustedRoot`]), kept byte
//!   for byte so the bundle can carry it.
//! - [`formats`]: the cosign tag scheme (`sha256-<hex>.sig`/`.att`) and OCI
//!   1.1 referrers carrying Sigstore bundles, parsed from the manifest and
//!   blob bytes the bundle carries ([`SignatureArtifact`]).
//! - [`verify_subject`]: one subject, its rule, its artifacts → a
//!   [`Decision`] (no rule, allowed unsigned, [`Verdict`], or a warning) or a
//!   [`TrustError`] naming the rule and why ([`Failure`]).
//!
//! # Integration
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use ferry_trust::{verify_subject, Decision, Policy, SignatureArtifact, Subject, VerifySpec};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Connected side: the spec's `verify:` section, paths relative to the spec.
//! let spec: VerifySpec = VerifySpec::from_json(r#"{"rules": [{"match": "**", "keys": ["k.pub"]}]}"#)?;
//! let policy = Policy::load_from_dir(&spec, std::path::Path::new("."))?;
//! // Carry `policy.spec()` and `policy.materials()` (path → exact bytes) in
//! // bundle.json; on the isolated side rebuild the same policy from them:
//! let carried = policy.materials().clone();
//! let offline = Policy::load(policy.spec(), |p| {
//!     carried.get(p).cloned().ok_or_else(|| std::io::Error::other(format!("{p} not carried")))
//! })?;
//! // Per item: its digest and manifest bytes, and every signature artifact
//! // the bundle carries with that digest as `subject` (legacy
//! // `sha256-<hex>.sig`/`.att` tags and OCI 1.1 referrers), each as its
//! // manifest bytes and blobs by digest.
//! let (manifest, sig_manifest, blobs) = (Vec::new(), Vec::new(), BTreeMap::new());
//! let digest = "sha256:…";
//! match verify_subject(
//!     &offline,
//!     "docker.io",
//!     "library/nginx",
//!     Subject { digest, manifest: &manifest },
//!     &[SignatureArtifact { manifest: &sig_manifest, blobs: &blobs }],
//! ) {
//!     Ok(Decision::Verified(verdict)) => { /* record in bundle.json, show in inspect */ }
//!     Ok(Decision::Warned(failure)) => { /* record and report; carry the item */ }
//!     Ok(Decision::AllowedUnsigned { .. } | Decision::NoRule) => { /* record */ }
//!     Err(refused) => { /* exit 1 naming the reference: `refused` names digest, rule, reason */ }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! For an index, pass the index digest and the artifacts whose subject is
//! the index: a signature on a platform child does not satisfy the rule
//! (docs/verification.md, "Indexes and per-platform signatures").
//!
//! Cryptography is ring's (ECDSA P-256/P-384, RSA PKCS#1 v1.5, Ed25519),
//! certificate path validation rustls-webpki's, certificate parsing
//! x509-cert's. The only hand-written algorithm is the RFC 6962 Merkle
//! inclusion walk (see [`tlog`]). What is and is not checked:
//! docs/verification.md.

mod cert;
pub mod error;
pub mod formats;
pub mod keys;
pub mod policy;
pub mod root;
pub mod tlog;
mod verify;

pub use error::{Failure, TrustError};
pub use formats::{Format, SignatureArtifact, MAX_ARTIFACT_BLOB};
pub use keys::{KeyError, KeyKind, PublicKey};
pub use policy::{Mode, Policy, PolicyError, Rule, TlogRequirement, Unsigned, VerifySpec};
pub use root::{RootError, TrustedRoot};
pub use verify::{
    verify_subject, verify_subject_at, AttestationVerdict, Decision, SatisfiedBy, Subject, Verdict,
};
