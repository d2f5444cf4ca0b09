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
/// certificate in the path valid at `at`.
pub(crate) fn verify_chain(
    leaf_der: &[u8],
    root: &TrustedRoot,
    at: i64,
    with_log_entry: bool,
) -> Result<(), Failure> {
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
            Ok(_) => return Ok(()),
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
