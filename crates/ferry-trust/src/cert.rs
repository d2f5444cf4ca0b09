//! Keyless: the leaf certificate's identity (SAN email or URI, OIDC issuer
//! extension) and its chain to a certificate authority of the trusted root,
//! valid at the signing time. Path building and validation is
//! rustls-webpki's (signatures, validity of every certificate in the path,
//! basic constraints, key usage, the code-signing extended key usage);
//! parsing the identity is x509-cert's.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_cert::der::asn1::{Ia5String, ObjectIdentifier, Utf8StringRef};
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

use crate::error::Failure;
use crate::keys::PublicKey;
use crate::root::TrustedRoot;

const SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
/// Fulcio's legacy issuer extension: the raw issuer string.
pub const ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Fulcio's issuer extension: a DER UTF8String.
pub const ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), content octets.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// What a leaf certificate says.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub der: Vec<u8>,
    pub sans: Vec<String>,
    pub issuer: Option<String>,
    pub key: PublicKey,
}

fn ia5(s: &Ia5String) -> String {
    s.to_string()
}

pub(crate) fn parse_leaf(der: &[u8]) -> Result<Leaf, Failure> {
    let cert =
        Certificate::from_der(der).map_err(|e| Failure::Malformed(format!("certificate: {e}")))?;
    let tbs = &cert.tbs_certificate;
    let key = PublicKey::from_spki(&tbs.subject_public_key_info)
        .map_err(|e| Failure::Malformed(format!("certificate key: {e}")))?;
    let mut sans = Vec::new();
    let mut v1 = None;
    let mut v2 = None;
    for ext in tbs.extensions.iter().flatten() {
        let value = ext.extn_value.as_bytes();
        if ext.extn_id == SAN {
            let san = SubjectAltName::from_der(value)
                .map_err(|e| Failure::Malformed(format!("certificate SAN: {e}")))?;
            for name in san.0 {
                match name {
                    GeneralName::Rfc822Name(s) => sans.push(ia5(&s)),
                    GeneralName::UniformResourceIdentifier(s) => sans.push(ia5(&s)),
                    _ => {}
                }
            }
        } else if ext.extn_id == ISSUER_V2 {
            let s = Utf8StringRef::from_der(value)
                .map_err(|e| Failure::Malformed(format!("certificate issuer extension: {e}")))?;
            v2 = Some(s.as_str().to_owned());
        } else if ext.extn_id == ISSUER_V1 {
            let s = std::str::from_utf8(value)
                .map_err(|e| Failure::Malformed(format!("certificate issuer extension: {e}")))?;
            v1 = Some(s.to_owned());
        }
    }
    if let (Some(a), Some(b)) = (&v1, &v2) {
        if a != b {
            return Err(Failure::Malformed(format!(
                "certificate issuer extensions disagree: {a:?} and {b:?}"
            )));
        }
    }
    Ok(Leaf {
        der: der.to_vec(),
        sans,
        issuer: v2.or(v1),
        key,
    })
}

pub(crate) fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// The leaf chains to a CA of `root` that was valid at `at`, every
/// certificate in the path valid at `at`. Returns the DER of the leaf's
/// issuer (the CA chain's first certificate), for the SCT.
pub(crate) fn verify_chain(
    leaf_der: &[u8],
    root: &TrustedRoot,
    at: i64,
    with_log_entry: bool,
) -> Result<Vec<u8>, Failure> {
    let secs = u64::try_from(at)
        .map_err(|_| Failure::ChainNotTrusted(format!("signing time {at} before 1970")))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(secs));
    let leaf = CertificateDer::from(leaf_der);
    let ee = EndEntityCert::try_from(&leaf)
        .map_err(|e| Failure::Malformed(format!("certificate: {e:?}")))?;
    let mut last: Option<Failure> = None;
    let mut any_ca = false;
    for ca in &root.certificate_authorities {
        if !ca.valid_for.contains(at) {
            continue;
        }
        any_ca = true;
        let Some((anchor_der, intermediates)) = ca.chain.split_last() else {
            continue;
        };
        let issuer = ca.chain.first().unwrap_or(anchor_der);
        let anchor_cert = CertificateDer::from(anchor_der.as_slice());
        let anchor = match webpki::anchor_from_trusted_cert(&anchor_cert) {
            Ok(a) => a.to_owned(),
            Err(e) => {
                last = Some(Failure::ChainNotTrusted(format!(
                    "trusted root CA {}: {e:?}",
                    ca.uri
                )));
                continue;
            }
        };
        let inter: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        match ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &inter,
            time,
            KeyUsage::required(CODE_SIGNING),
            None,
            None,
        ) {
            Ok(_) => return Ok(issuer.clone()),
            Err(webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. }) => {
                last = Some(Failure::CertificateExpired {
                    at: rfc3339(at),
                    with_log_entry,
                });
            }
            Err(e) => {
                if !matches!(last, Some(Failure::CertificateExpired { .. })) {
                    last = Some(Failure::ChainNotTrusted(format!("{e:?}")));
                }
            }
        }
    }
    if !any_ca {
        return Err(Failure::ChainNotTrusted(format!(
            "no certificate authority of the trusted root is valid at {}",
            rfc3339(at)
        )));
    }
    Err(last.unwrap_or_else(|| Failure::ChainNotTrusted("no usable certificate authority".into())))
}

const SCT_LIST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2");

/// The leaf's embedded SCT (RFC 6962 §3.3, a precertificate entry) verifies
/// with a CT log of the trusted root valid at the SCT's time. The SCT list
/// is parsed by x509-cert (tls_codec); the signed structure (§3.2) is
/// assembled here: version 0, signature type 0, the timestamp, entry type 1,
/// the sha256 of the issuer's SubjectPublicKeyInfo, the 24-bit length and
/// the leaf's TBSCertificate without the SCT extension (re-encoded by
/// x509-cert; DER is canonical), the 16-bit length and the SCT extensions.
pub(crate) fn verify_sct(
    leaf_der: &[u8],
    issuer_der: &[u8],
    root: &TrustedRoot,
) -> Result<(), Failure> {
    use sha2::{Digest, Sha256};
    use x509_cert::der::Encode;
    use x509_cert::ext::pkix::sct::{SignedCertificateTimestampList, Version};
    let bad = |why: String| Failure::BadSct(why);
    let cert = Certificate::from_der(leaf_der)
        .map_err(|e| Failure::Malformed(format!("certificate: {e}")))?;
    let issuer =
        Certificate::from_der(issuer_der).map_err(|e| bad(format!("issuer certificate: {e}")))?;
    let issuer_key_hash = Sha256::digest(
        issuer
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| bad(format!("issuer key: {e}")))?,
    );
    let mut tbs = cert.tbs_certificate.clone();
    let exts = tbs.extensions.take().unwrap_or_default();
    let (sct_exts, others): (Vec<_>, Vec<_>) =
        exts.into_iter().partition(|e| e.extn_id == SCT_LIST);
    let [sct_ext] = sct_exts.as_slice() else {
        return Err(bad(format!(
            "the certificate carries {} SCT list extensions (one expected)",
            sct_exts.len()
        )));
    };
    tbs.extensions = if others.is_empty() {
        None
    } else {
        Some(others)
    };
    let precert = tbs
        .to_der()
        .map_err(|e| bad(format!("precertificate: {e}")))?;
    let len24 = u32::try_from(precert.len())
        .ok()
        .filter(|l| *l < (1 << 24))
        .ok_or_else(|| bad("precertificate too large".into()))?
        .to_be_bytes();
    let list = SignedCertificateTimestampList::from_der(sct_ext.extn_value.as_bytes())
        .map_err(|e| bad(format!("SCT list: {e}")))?;
    let scts = list
        .parse_timestamps()
        .map_err(|e| bad(format!("SCT list: {e:?}")))?;
    let mut reasons = Vec::new();
    for serialized in scts {
        let sct = match serialized.parse_timestamp() {
            Ok(s) => s,
            Err(e) => {
                reasons.push(format!("SCT: {e:?}"));
                continue;
            }
        };
        if sct.version != Version::V1 {
            reasons.push("SCT version is not v1".into());
            continue;
        }
        let Some(log) = root.ctlog(&sct.log_id.key_id) else {
            reasons.push(format!(
                "SCT from log {}, not a CT log of the trusted root",
                hex::encode(sct.log_id.key_id)
            ));
            continue;
        };
        let secs = i64::try_from(sct.timestamp / 1000).unwrap_or(i64::MAX);
        if !log.valid_for.contains(secs) {
            reasons.push(format!(
                "SCT time {} outside the CT log key's validity",
                rfc3339(secs)
            ));
            continue;
        }
        let ext = sct.extensions.as_slice();
        let mut signed = Vec::with_capacity(precert.len() + ext.len() + 50);
        signed.extend_from_slice(&[0, 0]);
        signed.extend_from_slice(&sct.timestamp.to_be_bytes());
        signed.extend_from_slice(&1u16.to_be_bytes());
        signed.extend_from_slice(&issuer_key_hash);
        signed.extend_from_slice(&len24[1..]);
        signed.extend_from_slice(&precert);
        signed.extend_from_slice(
            &u16::try_from(ext.len())
                .map_err(|_| bad("SCT extensions too large".into()))?
                .to_be_bytes(),
        );
        signed.extend_from_slice(ext);
        if log.key.verify(&signed, sct.signature.signature.as_slice()) {
            return Ok(());
        }
        reasons.push(format!(
            "SCT signature does not verify with CT log {}",
            log.key.key_id()
        ));
    }
    Err(bad(if reasons.is_empty() {
        "no SCT in the certificate".into()
    } else {
        reasons.join("; ")
    }))
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
