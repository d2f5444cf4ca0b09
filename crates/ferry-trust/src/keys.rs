//! Public keys: PEM or DER SubjectPublicKeyInfo → a ring verifier, with the
//! algorithm cosign and Sigstore pair with each key type:
//!
//! | key | signature |
//! |---|---|
//! | ECDSA P-256 | ECDSA with SHA-256, ASN.1 DER signature |
//! | ECDSA P-384 | ECDSA with SHA-384, ASN.1 DER signature |
//! | RSA (2048–8192 bits) | PKCS#1 v1.5 with SHA-256 |
//! | Ed25519 | Ed25519 (pure) |
//!
//! The key id is the lowercase hex SHA-256 of the SubjectPublicKeyInfo DER.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use sha2::{Digest, Sha256};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::spki::SubjectPublicKeyInfoOwned;

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The key types ferry verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA.
    Rsa,
    /// Ed25519.
    Ed25519,
}

/// A parsed public key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    kind: KeyKind,
    spki_der: Vec<u8>,
    raw: Vec<u8>,
    key_id: String,
}

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not PEM/DER SubjectPublicKeyInfo.
    #[error("not a PEM or DER public key (SubjectPublicKeyInfo): {0}")]
    Parse(String),
    /// An algorithm or curve ferry does not verify.
    #[error("unsupported public key algorithm {0} (supported: ECDSA P-256/P-384, RSA, Ed25519)")]
    Unsupported(String),
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` block (or DER).
    pub fn from_pem(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let spki = match SubjectPublicKeyInfoOwned::from_pem(bytes) {
            Ok(s) => s,
            Err(pem_err) => SubjectPublicKeyInfoOwned::from_der(bytes)
                .map_err(|_| KeyError::Parse(pem_err.to_string()))?,
        };
        PublicKey::from_spki(&spki)
    }

    /// From a decoded SubjectPublicKeyInfo.
    pub fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<PublicKey, KeyError> {
        let oid = spki.algorithm.oid;
        let kind = if oid == EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or_else(|| KeyError::Unsupported("EC key without a named curve".into()))?;
            if curve == P256 {
                KeyKind::EcdsaP256
            } else if curve == P384 {
                KeyKind::EcdsaP384
            } else {
                return Err(KeyError::Unsupported(format!("EC curve {curve}")));
            }
        } else if oid == RSA {
            KeyKind::Rsa
        } else if oid == ED25519 {
            KeyKind::Ed25519
        } else {
            return Err(KeyError::Unsupported(oid.to_string()));
        };
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| KeyError::Parse("public key bit string is not byte-aligned".into()))?
            .to_vec();
        let spki_der = spki.to_der().map_err(|e| KeyError::Parse(e.to_string()))?;
        let key_id = hex::encode(Sha256::digest(&spki_der));
        Ok(PublicKey {
            kind,
            spki_der,
            raw,
            key_id,
        })
    }

    /// The key type.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// sha256 of the SubjectPublicKeyInfo DER, lowercase hex.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    fn algorithm(&self) -> &'static dyn VerificationAlgorithm {
        match self.kind {
            KeyKind::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
            KeyKind::EcdsaP384 => &signature::ECDSA_P384_SHA384_ASN1,
            KeyKind::Rsa => &signature::RSA_PKCS1_2048_8192_SHA256,
            KeyKind::Ed25519 => &signature::ED25519,
        }
    }

    /// Whether `sig` is this key's signature over `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(self.algorithm(), &self.raw)
            .verify(message, sig)
            .is_ok()
    }
}
