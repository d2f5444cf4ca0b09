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
pub use formats::{Format, SignatureArtifact};
pub use keys::{KeyError, KeyKind, PublicKey};
pub use policy::{Mode, Policy, PolicyError, Rule, TlogRequirement, Unsigned, VerifySpec};
pub use root::{RootError, TrustedRoot};
pub use verify::{
    verify_subject, verify_subject_at, AttestationVerdict, Decision, SatisfiedBy, Subject, Verdict,
};
