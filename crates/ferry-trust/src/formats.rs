//! The two signature formats, from the bytes the bundle carries:
//!
//! - the cosign tag scheme (`sha256-<hex>.sig` / `.att`): an image manifest
//!   whose layers are simple-signing payloads
//!   (`application/vnd.dev.cosign.simplesigning.v1+json`) or DSSE envelopes
//!   (`application/vnd.dsse.envelope.v1+json`), the signature, certificate,
//!   chain and Rekor bundle in layer annotations;
//! - OCI 1.1 referrers whose layer is a Sigstore bundle
//!   (`application/vnd.dev.sigstore.bundle.v0.3+json`, also v0.1/v0.2):
//!   a `messageSignature` over the subject manifest or a `dsseEnvelope`.
//!
//! Every blob is checked against its descriptor's digest and size before it
//! is read; a layer of any other media type (an SBOM, a Notation signature)
//! is not a signature and is ignored.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::Failure;
use crate::tlog::{InclusionProof, LogEntry};

/// The largest blob of a signature artifact read into memory (a DSSE
/// envelope carrying an SBOM can be several MiB); larger blobs are left
/// out, and an artifact that needs one does not verify.
pub const MAX_ARTIFACT_BLOB: u64 = 64 << 20;

/// A signature artifact as the bundle carries it: the manifest's bytes and
/// its blobs (`sha256:<hex>` → bytes). Blobs not present are treated as
/// missing (a layer whose blob is missing makes the artifact malformed).
#[derive(Debug, Clone, Copy)]
pub struct SignatureArtifact<'a> {
    /// The signature manifest's exact bytes.
    pub manifest: &'a [u8],
    /// Its blobs by digest.
    pub blobs: &'a BTreeMap<String, Vec<u8>>,
}

/// Which format a verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `sha256-<hex>.sig` / `.att` tags.
    CosignTag,
    /// OCI 1.1 referrer with a Sigstore bundle.
    SigstoreBundle,
}

pub(crate) const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub(crate) const DSSE_LAYER: &str = "application/vnd.dsse.envelope.v1+json";
pub(crate) const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The predicate type cosign 3 uses when it signs an image as a DSSE
/// statement in a Sigstore bundle.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
const ANN_SIG: &str = "dev.cosignproject.cosign/signature";
const ANN_CERT: &str = "dev.sigstore.cosign/certificate";
const ANN_CHAIN: &str = "dev.sigstore.cosign/chain";
const ANN_BUNDLE: &str = "dev.sigstore.cosign/bundle";

fn is_bundle_type(mt: &str) -> bool {
    matches!(
        mt,
        "application/vnd.dev.sigstore.bundle.v0.3+json"
            | "application/vnd.dev.sigstore.bundle+json;version=0.3"
            | "application/vnd.dev.sigstore.bundle+json;version=0.2"
            | "application/vnd.dev.sigstore.bundle+json;version=0.1"
    )
}

/// What was signed.
#[derive(Debug, Clone)]
pub(crate) enum Signed {
    /// A signature over `message` (a simple-signing payload, or the subject
    /// manifest for a bundle's messageSignature). `digest_named` is the
    /// digest the signed content names; `annotations` the payload's
    /// `optional` map.
    Message {
        message: Vec<u8>,
        digest_named: String,
        annotations: Option<BTreeMap<String, String>>,
    },
    /// A DSSE envelope over an in-toto statement.
    Dsse {
        pae: Vec<u8>,
        payload_sha256: Vec<u8>,
        subjects: Vec<String>,
        predicate_type: String,
    },
}

/// One signature found in an artifact.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub format: Format,
    pub artifact: String,
    pub signed: Signed,
    pub signature: Vec<u8>,
    /// Leaf first, DER.
    pub certs: Vec<Vec<u8>>,
    pub tlog: Vec<LogEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
}

fn blob<'b>(a: &SignatureArtifact<'b>, d: &Descriptor) -> Result<&'b [u8], Failure> {
    let b = a
        .blobs
        .get(&d.digest)
        .ok_or_else(|| Failure::Malformed(format!("blob {} is not carried", d.digest)))?;
    let got = format!("sha256:{}", hex::encode(Sha256::digest(b)));
    if got != d.digest || b.len() as u64 != d.size {
        return Err(Failure::Malformed(format!(
            "blob {} does not match its descriptor (content is {got}, {} bytes)",
            d.digest,
            b.len()
        )));
    }
    Ok(b.as_slice())
}

fn pem_certs(text: &str) -> Result<Vec<Vec<u8>>, Failure> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let tail = &rest[start..];
        let end_marker = "-----END CERTIFICATE-----";
        let end = tail
            .find(end_marker)
            .ok_or_else(|| Failure::Malformed("unterminated PEM certificate".into()))?
            + end_marker.len();
        let (label, der) = x509_cert::der::pem::decode_vec(&tail.as_bytes()[..end])
            .map_err(|e| Failure::Malformed(format!("PEM certificate: {e}")))?;
        if label != "CERTIFICATE" {
            return Err(Failure::Malformed(format!("PEM label {label:?}")));
        }
        out.push(der);
        rest = &tail[end..];
    }
    Ok(out)
}

/// The legacy Rekor bundle annotation.
#[derive(Deserialize)]
struct RekorBundle {
    #[serde(rename = "SignedEntryTimestamp")]
    set: String,
    #[serde(rename = "Payload")]
    payload: RekorPayload,
}

#[derive(Deserialize)]
struct RekorPayload {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logIndex")]
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, Failure> {
    STANDARD
        .decode(s.trim())
        .map_err(|e| Failure::Malformed(format!("{what}: not base64: {e}")))
}

fn legacy_tlog(ann: &BTreeMap<String, String>) -> Result<Vec<LogEntry>, Failure> {
    let Some(text) = ann.get(ANN_BUNDLE) else {
        return Ok(Vec::new());
    };
    let rb: RekorBundle =
        serde_json::from_str(text).map_err(|e| Failure::Malformed(format!("{ANN_BUNDLE}: {e}")))?;
    Ok(vec![LogEntry {
        body: b64(&rb.payload.body, "Rekor body")?,
        integrated_time: rb.payload.integrated_time,
        log_index: rb.payload.log_index,
        log_id: hex::decode(&rb.payload.log_id)
            .map_err(|e| Failure::Malformed(format!("Rekor logID: {e}")))?,
        set: Some(b64(&rb.set, "SignedEntryTimestamp")?),
        proof: None,
    }])
}

fn legacy_certs(ann: &BTreeMap<String, String>) -> Result<Vec<Vec<u8>>, Failure> {
    let mut certs = Vec::new();
    if let Some(c) = ann.get(ANN_CERT).filter(|c| !c.is_empty()) {
        let leaf = pem_certs(c)?;
        if leaf.len() != 1 {
            return Err(Failure::Malformed(format!(
                "{ANN_CERT}: {} certificates",
                leaf.len()
            )));
        }
        certs.extend(leaf);
        if let Some(chain) = ann.get(ANN_CHAIN) {
            certs.extend(pem_certs(chain)?);
        }
    }
    Ok(certs)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload_type: String,
    payload: String,
    signatures: Vec<EnvSig>,
}

#[derive(Deserialize)]
struct EnvSig {
    sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(rename = "_type")]
    type_: String,
    subject: Vec<StatementSubject>,
    predicate_type: String,
}

#[derive(Deserialize)]
struct StatementSubject {
    #[serde(default)]
    digest: BTreeMap<String, String>,
}

/// DSSE pre-authentication encoding (DSSE v1 protocol).
pub(crate) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// An envelope → (signed, signatures). Exactly one signature is accepted
/// per envelope (what cosign and Sigstore write).
fn dsse(env: &Envelope) -> Result<(Signed, Vec<u8>), Failure> {
    if env.payload_type != IN_TOTO {
        return Err(Failure::Malformed(format!(
            "DSSE payload type {:?}, not {IN_TOTO}",
            env.payload_type
        )));
    }
    if env.signatures.len() != 1 {
        return Err(Failure::Malformed(format!(
            "DSSE envelope with {} signatures (one expected)",
            env.signatures.len()
        )));
    }
    let payload = b64(&env.payload, "DSSE payload")?;
    let sig = b64(&env.signatures[0].sig, "DSSE signature")?;
    let st: Statement = serde_json::from_slice(&payload)
        .map_err(|e| Failure::Malformed(format!("in-toto statement: {e}")))?;
    if !st.type_.starts_with("https://in-toto.io/Statement/") {
        return Err(Failure::Malformed(format!(
            "in-toto statement type {:?}",
            st.type_
        )));
    }
    let subjects = st
        .subject
        .iter()
        .filter_map(|s| s.digest.get("sha256").map(|h| format!("sha256:{h}")))
        .collect();
    Ok((
        Signed::Dsse {
            pae: pae(&env.payload_type, &payload),
            payload_sha256: Sha256::digest(&payload).to_vec(),
            subjects,
            predicate_type: st.predicate_type,
        },
        sig,
    ))
}

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
    #[serde(default)]
    optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct Critical {
    image: CriticalImage,
}

#[derive(Deserialize)]
struct CriticalImage {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

fn simple_signing(payload: &[u8]) -> Result<Signed, Failure> {
    let ss: SimpleSigning = serde_json::from_slice(payload)
        .map_err(|e| Failure::Malformed(format!("simple-signing payload: {e}")))?;
    let annotations = ss.optional.map(|m| {
        m.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect()
    });
    Ok(Signed::Message {
        message: payload.to_vec(),
        digest_named: ss.critical.image.digest,
        annotations,
    })
}

// ---- Sigstore bundle ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    verification_material: VerificationMaterial,
    #[serde(default)]
    message_signature: Option<MessageSignature>,
    #[serde(default)]
    dsse_envelope: Option<Envelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterial {
    #[serde(default)]
    certificate: Option<RawBytes>,
    #[serde(default)]
    x509_certificate_chain: Option<CertChain>,
    #[serde(default)]
    tlog_entries: Vec<TlogEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct CertChain {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageSignature {
    message_digest: MessageDigest,
    signature: String,
}

#[derive(Deserialize)]
struct MessageDigest {
    algorithm: String,
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogEntry {
    log_index: String,
    log_id: KeyId,
    integrated_time: String,
    #[serde(default)]
    inclusion_promise: Option<Promise>,
    #[serde(default)]
    inclusion_proof: Option<Proof>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Promise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Proof {
    log_index: String,
    root_hash: String,
    tree_size: String,
    hashes: Vec<String>,
    checkpoint: Checkpoint,
}

#[derive(Deserialize)]
struct Checkpoint {
    envelope: String,
}

fn int<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, Failure> {
    s.parse().map_err(|_| {
        Failure::Malformed(format!(
            "{what}: not an integer: {:?}",
            s.escape_debug().to_string()
        ))
    })
}

fn bundle_candidate(
    bytes: &[u8],
    subject_manifest: &[u8],
    artifact: &str,
) -> Result<Candidate, Failure> {
    let b: Bundle = serde_json::from_slice(bytes)
        .map_err(|e| Failure::Malformed(format!("Sigstore bundle: {e}")))?;
    if !is_bundle_type(&b.media_type) {
        return Err(Failure::Malformed(format!(
            "Sigstore bundle media type {:?}",
            b.media_type
        )));
    }
    let vm = &b.verification_material;
    let mut certs = Vec::new();
    if let Some(c) = &vm.certificate {
        certs.push(b64(&c.raw_bytes, "bundle certificate")?);
    } else if let Some(chain) = &vm.x509_certificate_chain {
        for c in &chain.certificates {
            certs.push(b64(&c.raw_bytes, "bundle certificate chain")?);
        }
    }
    let mut tlog = Vec::new();
    for e in &vm.tlog_entries {
        let proof = match &e.inclusion_proof {
            None => None,
            Some(p) => Some(InclusionProof {
                log_index: int(&p.log_index, "inclusionProof.logIndex")?,
                tree_size: int(&p.tree_size, "inclusionProof.treeSize")?,
                root_hash: b64(&p.root_hash, "inclusionProof.rootHash")?,
                hashes: p
                    .hashes
                    .iter()
                    .map(|h| b64(h, "inclusionProof.hashes"))
                    .collect::<Result<_, _>>()?,
                checkpoint: p.checkpoint.envelope.clone(),
            }),
        };
        tlog.push(LogEntry {
            body: b64(&e.canonicalized_body, "canonicalizedBody")?,
            integrated_time: int(&e.integrated_time, "integratedTime")?,
            log_index: int(&e.log_index, "logIndex")?,
            log_id: b64(&e.log_id.key_id, "logId.keyId")?,
            set: e
                .inclusion_promise
                .as_ref()
                .map(|p| b64(&p.signed_entry_timestamp, "signedEntryTimestamp"))
                .transpose()?,
            proof,
        });
    }
    let (signed, signature) = match (&b.message_signature, &b.dsse_envelope) {
        (Some(ms), None) => {
            if ms.message_digest.algorithm != "SHA2_256" {
                return Err(Failure::Malformed(format!(
                    "messageDigest algorithm {:?}",
                    ms.message_digest.algorithm
                )));
            }
            let d = b64(&ms.message_digest.digest, "messageDigest")?;
            (
                Signed::Message {
                    message: subject_manifest.to_vec(),
                    digest_named: format!("sha256:{}", hex::encode(d)),
                    annotations: None,
                },
                b64(&ms.signature, "messageSignature.signature")?,
            )
        }
        (None, Some(env)) => dsse(env)?,
        _ => {
            return Err(Failure::Malformed(
                "Sigstore bundle needs exactly one of messageSignature and dsseEnvelope".into(),
            ))
        }
    };
    Ok(Candidate {
        format: Format::SigstoreBundle,
        artifact: artifact.to_owned(),
        signed,
        signature,
        certs,
        tlog,
    })
}

/// Every signature in one artifact, and a failure for each signature
/// layer that does not parse (one bad layer does not hide a good one next
/// to it). `Err` when the manifest itself does not parse or names another
/// subject. Layers that are not signatures are ignored.
pub(crate) fn candidates(
    a: &SignatureArtifact<'_>,
    subject_digest: &str,
    subject_manifest: &[u8],
) -> Result<(Vec<Candidate>, Vec<Failure>), Failure> {
    let artifact = format!("sha256:{}", hex::encode(Sha256::digest(a.manifest)));
    let m: Manifest = serde_json::from_slice(a.manifest)
        .map_err(|e| Failure::Malformed(format!("signature manifest {artifact}: {e}")))?;
    if let Some(s) = &m.subject {
        if s.digest != subject_digest {
            return Err(Failure::Malformed(format!(
                "referrer {artifact} has subject {}, not {subject_digest}",
                s.digest
            )));
        }
    }
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for layer in &m.layers {
        match layer_candidate(a, layer, &artifact, subject_manifest) {
            Ok(Some(c)) => out.push(c),
            Ok(None) => {}
            Err(f) => failures.push(f),
        }
    }
    Ok((out, failures))
}

fn layer_candidate(
    a: &SignatureArtifact<'_>,
    layer: &Descriptor,
    artifact: &str,
    subject_manifest: &[u8],
) -> Result<Option<Candidate>, Failure> {
    let mt = layer.media_type.as_str();
    if mt == SIMPLESIGNING {
        let payload = blob(a, layer)?;
        let sig = layer.annotations.get(ANN_SIG).ok_or_else(|| {
            Failure::Malformed(format!("layer {} has no {ANN_SIG}", layer.digest))
        })?;
        Ok(Some(Candidate {
            format: Format::CosignTag,
            artifact: artifact.to_owned(),
            signed: simple_signing(payload)?,
            signature: b64(sig, ANN_SIG)?,
            certs: legacy_certs(&layer.annotations)?,
            tlog: legacy_tlog(&layer.annotations)?,
        }))
    } else if mt == DSSE_LAYER {
        let env: Envelope = serde_json::from_slice(blob(a, layer)?)
            .map_err(|e| Failure::Malformed(format!("DSSE envelope {}: {e}", layer.digest)))?;
        let (signed, signature) = dsse(&env)?;
        Ok(Some(Candidate {
            format: Format::CosignTag,
            artifact: artifact.to_owned(),
            signed,
            signature,
            certs: legacy_certs(&layer.annotations)?,
            tlog: legacy_tlog(&layer.annotations)?,
        }))
    } else if is_bundle_type(mt) {
        Ok(Some(bundle_candidate(
            blob(a, layer)?,
            subject_manifest,
            artifact,
        )?))
    } else {
        Ok(None)
    }
}
