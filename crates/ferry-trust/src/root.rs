//! The Sigstore trusted root (`trusted_root.json`, media type
//! `application/vnd.dev.sigstore.trustedroot+json;version=0.1`): Fulcio
//! certificate authorities, Rekor transparency-log keys and CT log keys,
//! each with its validity period. The exact file bytes are kept so the
//! bundle can carry them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::keys::PublicKey;

/// Why a trusted root was refused.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// Not JSON of the expected shape.
    #[error("not a Sigstore trusted root: {0}")]
    Parse(String),
    /// Another media type.
    #[error("unsupported trusted root media type {0:?}")]
    MediaType(String),
    /// A field that does not decode.
    #[error("trusted root {what}: {reason}")]
    Field {
        /// Which entry, e.g. `tlogs[0].publicKey`.
        what: String,
        /// Why.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    media_type: String,
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawCa>,
    #[serde(default)]
    ctlogs: Vec<RawLog>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    hash_algorithm: String,
    public_key: RawKey,
    log_id: RawLogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKey {
    raw_bytes: String,
    #[serde(default)]
    key_details: String,
    #[serde(default)]
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawValidity {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCa {
    #[serde(default)]
    uri: String,
    cert_chain: RawChain,
    #[serde(default)]
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

/// A validity period in Unix seconds, `[start, end)`; an open end is
/// unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First second of validity.
    pub start: i64,
    /// First second no longer valid, if any.
    pub end: Option<i64>,
}

impl Validity {
    /// Whether `t` (Unix seconds) is inside.
    pub fn contains(&self, t: i64) -> bool {
        t >= self.start && self.end.is_none_or(|e| t < e)
    }
}

/// A transparency log (Rekor) or CT log.
#[derive(Debug, Clone)]
pub struct LogKey {
    /// The log's URL (informative).
    pub base_url: String,
    /// As written (`SHA2_256`).
    pub hash_algorithm: String,
    /// The log's public key.
    pub key: PublicKey,
    /// As written, e.g. `PKIX_ECDSA_P256_SHA_256`.
    pub key_details: String,
    /// The log id (sha256 of the key's SPKI DER, as the file gives it).
    pub log_id: Vec<u8>,
    /// When the key may have signed.
    pub valid_for: Validity,
}

/// A Fulcio-like certificate authority.
#[derive(Debug, Clone)]
pub struct CertificateAuthority {
    /// The CA's URL (informative).
    pub uri: String,
    /// The chain, leaf-most first (intermediates), the root last; DER.
    pub chain: Vec<Vec<u8>>,
    /// When the CA may have issued.
    pub valid_for: Validity,
}

/// A parsed trusted root, with its exact bytes.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    bytes: Vec<u8>,
    /// Rekor logs.
    pub tlogs: Vec<LogKey>,
    /// Fulcio CAs.
    pub certificate_authorities: Vec<CertificateAuthority>,
    /// CT logs: a keyless leaf's embedded SCT must verify with one of them
    /// when the file lists any ([`TrustedRoot::requires_sct`]).
    pub ctlogs: Vec<LogKey>,
    /// Log entries left out because of their key type, for a warning.
    pub skipped: Vec<String>,
    /// Whether the file lists CT logs: then a keyless leaf must carry an
    /// SCT that verifies with one of them (even if every listed CT key was
    /// left out: that fails closed).
    pub requires_sct: bool,
}

/// RFC 3339 → Unix seconds.
pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("{s:?}: {e}"))
}

fn validity(v: Option<&RawValidity>, what: &str) -> Result<Validity, RootError> {
    let field = |reason: String| RootError::Field {
        what: format!("{what}.validFor"),
        reason,
    };
    let Some(v) = v else {
        return Err(field("missing".into()));
    };
    let start =
        parse_time(v.start.as_deref().ok_or_else(|| field("no start".into()))?).map_err(field)?;
    let end = v
        .end
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(field)?;
    if let Some(e) = end {
        if e <= start {
            return Err(field("end is not after start".into()));
        }
    }
    Ok(Validity { start, end })
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, RootError> {
    STANDARD.decode(s).map_err(|e| RootError::Field {
        what: what.to_owned(),
        reason: format!("not base64: {e}"),
    })
}

/// Parses the logs; an entry whose key ferry cannot use (another key type,
/// or not a SubjectPublicKeyInfo, like the PKCS#1 RSA CT key of Sigstore's
/// staging root) is left out, named in `skipped`, rather than failing the
/// whole root. That fails closed: an entry of a left-out log does not
/// verify. Bad base64 or validity periods are errors.
fn logs(raw: &[RawLog], name: &str, skipped: &mut Vec<String>) -> Result<Vec<LogKey>, RootError> {
    let mut out = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let what = format!("{name}[{i}]");
        let der = b64(
            &l.public_key.raw_bytes,
            &format!("{what}.publicKey.rawBytes"),
        )?;
        let key = match PublicKey::from_pem(&der) {
            Ok(k) => k,
            Err(e) => {
                skipped.push(format!(
                    "{what} ({}, {}): {e}",
                    l.base_url.escape_debug(),
                    l.public_key.key_details.escape_debug()
                ));
                continue;
            }
        };
        let log_id = b64(&l.log_id.key_id, &format!("{what}.logId.keyId"))?;
        out.push(LogKey {
            base_url: l.base_url.clone(),
            hash_algorithm: l.hash_algorithm.clone(),
            key,
            key_details: l.public_key.key_details.clone(),
            log_id,
            valid_for: validity(
                l.public_key.valid_for.as_ref(),
                &format!("{what}.publicKey"),
            )?,
        });
    }
    Ok(out)
}

impl TrustedRoot {
    /// Parses `trusted_root.json` bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<TrustedRoot, RootError> {
        let raw: RawRoot =
            serde_json::from_slice(bytes).map_err(|e| RootError::Parse(e.to_string()))?;
        let mt = raw.media_type.as_str();
        if mt != "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
            && mt != "application/vnd.dev.sigstore.trustedroot.v0.2+json"
        {
            return Err(RootError::MediaType(raw.media_type));
        }
        let mut cas = Vec::new();
        for (i, ca) in raw.certificate_authorities.iter().enumerate() {
            let what = format!("certificateAuthorities[{i}]");
            let mut chain = Vec::new();
            for (j, c) in ca.cert_chain.certificates.iter().enumerate() {
                let der = b64(&c.raw_bytes, &format!("{what}.certChain.certificates[{j}]"))?;
                x509_cert::Certificate::from_der_checked(&der).map_err(|e| RootError::Field {
                    what: format!("{what}.certChain.certificates[{j}]"),
                    reason: e,
                })?;
                chain.push(der);
            }
            if chain.is_empty() {
                return Err(RootError::Field {
                    what: format!("{what}.certChain"),
                    reason: "no certificates".into(),
                });
            }
            cas.push(CertificateAuthority {
                uri: ca.uri.clone(),
                chain,
                valid_for: validity(ca.valid_for.as_ref(), &what)?,
            });
        }
        let mut skipped = Vec::new();
        let tlogs = logs(&raw.tlogs, "tlogs", &mut skipped)?;
        let ctlogs = logs(&raw.ctlogs, "ctlogs", &mut skipped)?;
        Ok(TrustedRoot {
            bytes: bytes.to_vec(),
            tlogs,
            certificate_authorities: cas,
            ctlogs,
            skipped,
            requires_sct: !raw.ctlogs.is_empty(),
        })
    }

    /// The file's exact bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The CT log whose id is `log_id`.
    pub fn ctlog(&self, log_id: &[u8]) -> Option<&LogKey> {
        self.ctlogs.iter().find(|l| l.log_id == log_id)
    }

    /// The Rekor log whose id is `log_id`.
    pub fn tlog(&self, log_id: &[u8]) -> Option<&LogKey> {
        self.tlogs.iter().find(|l| l.log_id == log_id)
    }
}

/// A small extension so the parse error is a string.
trait CheckedDer {
    fn from_der_checked(der: &[u8]) -> Result<(), String>;
}

impl CheckedDer for x509_cert::Certificate {
    fn from_der_checked(der: &[u8]) -> Result<(), String> {
        use x509_cert::der::Decode;
        x509_cert::Certificate::from_der(der)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
