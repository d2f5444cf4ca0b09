//! Transparency-log (Rekor) entries, checked offline against the trusted
//! root: the signed entry timestamp (SET, an inclusion promise) and the
//! RFC 6962 inclusion proof against a checkpoint signed by the log key; and
//! the binding of the entry's body to the signature it is attached to.
//!
//! **SET.** Rekor signs the canonical JSON (RFC 8785) of
//! `{"body", "integratedTime", "logID", "logIndex"}`: a base64 string, an
//! integer, a hex string and an integer. For these value types RFC 8785 is
//! exactly "keys sorted by UTF-16 code units, no whitespace, strings with
//! JSON's minimal escapes, integers in decimal": [`SetPayload`] declares its
//! fields in that order (`body` < `integratedTime` < `logID` < `logIndex`)
//! and serde_json writes compact output with minimal escaping, and base64
//! and hex strings contain nothing to escape, so its bytes are the canonical
//! form whatever serde_json features the workspace enables.
//!
//! **Inclusion proof.** RFC 9162 §2.1.3.2, the only hand-written piece: the
//! leaf hash is SHA-256(0x00 ‖ body), an inner node SHA-256(0x01 ‖ left ‖
//! right); the proof is walked from the leaf up and must end at the root
//! hash of the checkpoint, whose signed-note signature by the log key is
//! verified (key hint = the first 4 bytes of the log id).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::Failure;
use crate::root::TrustedRoot;

/// One log entry, from either format.
#[derive(Debug, Clone)]
pub(crate) struct LogEntry {
    pub body: Vec<u8>,
    pub integrated_time: i64,
    pub log_index: i64,
    pub log_id: Vec<u8>,
    pub set: Option<Vec<u8>>,
    pub proof: Option<InclusionProof>,
}

#[derive(Debug, Clone)]
pub(crate) struct InclusionProof {
    pub log_index: u64,
    pub tree_size: u64,
    pub root_hash: Vec<u8>,
    pub hashes: Vec<Vec<u8>>,
    pub checkpoint: String,
}

#[derive(Serialize)]
struct SetPayload<'a> {
    body: &'a str,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logID")]
    log_id: &'a str,
    #[serde(rename = "logIndex")]
    log_index: i64,
}

/// The canonical bytes the SET signs.
pub(crate) fn set_payload(e: &LogEntry) -> Result<Vec<u8>, Failure> {
    let body = STANDARD.encode(&e.body);
    let log_id = hex::encode(&e.log_id);
    serde_json::to_vec(&SetPayload {
        body: &body,
        integrated_time: e.integrated_time,
        log_id: &log_id,
        log_index: e.log_index,
    })
    .map_err(|err| Failure::Malformed(format!("log entry: {err}")))
}

fn hash_children(l: &[u8], r: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().to_vec()
}

/// RFC 9162 §2.1.3.2 inclusion verification.
pub(crate) fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[Vec<u8>],
    root: &[u8],
) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = leaf_hash.to_vec();
    for p in proof {
        if p.len() != 32 || sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = hash_children(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = hash_children(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == root
}

/// Verifies a signed-note checkpoint with the log's key and returns
/// (tree size, root hash).
fn verify_checkpoint(text: &str, log: &crate::root::LogKey) -> Result<(u64, Vec<u8>), Failure> {
    let bad = |why: &str| Failure::BadInclusionProof(format!("checkpoint: {why}"));
    let split = text.find("\n\n").ok_or_else(|| bad("no signature block"))?;
    let signed = &text.as_bytes()[..split + 1];
    let body = &text[..split];
    let mut lines = body.split('\n');
    let _origin = lines.next().ok_or_else(|| bad("no origin"))?;
    let size: u64 = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| bad("bad tree size"))?;
    let root = lines
        .next()
        .and_then(|l| STANDARD.decode(l).ok())
        .ok_or_else(|| bad("bad root hash"))?;
    let hint = log
        .log_id
        .get(..4)
        .ok_or_else(|| bad("log id shorter than 4 bytes"))?;
    for line in text[split + 2..].lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            continue;
        };
        let Some((_, sig_b64)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Ok(raw) = STANDARD.decode(sig_b64) else {
            continue;
        };
        if raw.len() > 4 && &raw[..4] == hint && log.key.verify(signed, &raw[4..]) {
            return Ok((size, root));
        }
    }
    Err(bad("no signature by the log key"))
}

/// What a verified entry proves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VerifiedEntry {
    pub integrated_time: i64,
    pub log_index: i64,
}

/// Verifies the entry's SET and/or inclusion proof against the trusted root.
/// At least one must be present and every one present must verify.
pub(crate) fn verify_entry(e: &LogEntry, root: &TrustedRoot) -> Result<VerifiedEntry, Failure> {
    let log = root.tlog(&e.log_id).ok_or_else(|| {
        Failure::BadSet(format!(
            "log id {} is not a log of the trusted root",
            hex::encode(&e.log_id)
        ))
    })?;
    if !log.valid_for.contains(e.integrated_time) {
        return Err(Failure::BadSet(format!(
            "integrated time {} is outside the log key's validity",
            e.integrated_time
        )));
    }
    if e.set.is_none() && e.proof.is_none() {
        return Err(Failure::BadSet(
            "log entry has neither a signed entry timestamp nor an inclusion proof".into(),
        ));
    }
    if let Some(set) = &e.set {
        let payload = set_payload(e)?;
        if !log.key.verify(&payload, set) {
            return Err(Failure::BadSet(format!(
                "signed entry timestamp does not verify with log key {}",
                log.key.key_id()
            )));
        }
    }
    if let Some(p) = &e.proof {
        // Rekor v1 gives the proof's index within the log shard and the
        // entry's index across shards: the proof is checked on its own terms.
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(&e.body);
        let leaf = h.finalize().to_vec();
        if !verify_inclusion(p.log_index, p.tree_size, &leaf, &p.hashes, &p.root_hash) {
            return Err(Failure::BadInclusionProof(
                "the Merkle path does not lead to the root hash".into(),
            ));
        }
        let (size, root_hash) = verify_checkpoint(&p.checkpoint, log)?;
        if size != p.tree_size || root_hash != p.root_hash {
            return Err(Failure::BadInclusionProof(
                "checkpoint names another tree size or root hash".into(),
            ));
        }
    }
    Ok(VerifiedEntry {
        integrated_time: e.integrated_time,
        log_index: e.log_index,
    })
}

/// What the entry's body must bind to.
pub(crate) struct Binding<'a> {
    /// The raw signature bytes.
    pub signature: &'a [u8],
    /// SHA-256 of what was signed (hashedrekord: the payload; dsse/intoto:
    /// the DSSE payload).
    pub payload_sha256: &'a [u8],
    /// DER of the leaf certificate or of the public key.
    pub verifier_der: &'a [u8],
    /// Whether this is a DSSE envelope.
    pub dsse: bool,
}

fn pem_or_der_to_der(b: &[u8]) -> Option<Vec<u8>> {
    if let Ok(text) = std::str::from_utf8(b) {
        if text.contains("-----BEGIN") {
            let start = text.find("-----BEGIN")?;
            let (_, der) = x509_cert::der::pem::decode_vec(&text.as_bytes()[start..]).ok()?;
            return Some(der);
        }
    }
    Some(b.to_vec())
}

fn str_at<'v>(v: &'v serde_json::Value, path: &[&str]) -> Option<&'v str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Checks that the entry's body is about this signature: the same
/// signature bytes, the same signed content and the same verifier.
pub(crate) fn check_binding(e: &LogEntry, b: &Binding<'_>) -> Result<(), Failure> {
    let mismatch = |what: &str| {
        Failure::BadSet(format!(
            "log entry body does not match the signature: {what}"
        ))
    };
    let body: serde_json::Value = serde_json::from_slice(&e.body)
        .map_err(|err| Failure::BadSet(format!("log entry body is not JSON: {err}")))?;
    let kind = body.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let want_hash = hex::encode(b.payload_sha256);
    let spec = body.get("spec").ok_or_else(|| mismatch("no spec"))?;
    let b64_der = |s: &str| STANDARD.decode(s).ok().and_then(|p| pem_or_der_to_der(&p));
    match (kind, b.dsse) {
        ("hashedrekord", false) => {
            let sig = str_at(spec, &["signature", "content"]).and_then(|s| STANDARD.decode(s).ok());
            if sig.as_deref() != Some(b.signature) {
                return Err(mismatch("signature"));
            }
            let key = str_at(spec, &["signature", "publicKey", "content"]).and_then(b64_der);
            if key.as_deref() != Some(b.verifier_der) {
                return Err(mismatch("public key or certificate"));
            }
            let alg = str_at(spec, &["data", "hash", "algorithm"]);
            let val = str_at(spec, &["data", "hash", "value"]);
            if alg != Some("sha256") || val != Some(want_hash.as_str()) {
                return Err(mismatch("signed data hash"));
            }
            Ok(())
        }
        ("dsse", true) => {
            let alg = str_at(spec, &["payloadHash", "algorithm"]);
            let val = str_at(spec, &["payloadHash", "value"]);
            if alg != Some("sha256") || val != Some(want_hash.as_str()) {
                return Err(mismatch("payload hash"));
            }
            let sigs = spec
                .get("signatures")
                .and_then(|s| s.as_array())
                .ok_or_else(|| mismatch("no signatures"))?;
            let found = sigs.iter().any(|s| {
                let sig = s
                    .get("signature")
                    .and_then(|x| x.as_str())
                    .and_then(|x| STANDARD.decode(x).ok());
                let ver = s.get("verifier").and_then(|x| x.as_str()).and_then(b64_der);
                sig.as_deref() == Some(b.signature) && ver.as_deref() == Some(b.verifier_der)
            });
            if found {
                Ok(())
            } else {
                Err(mismatch("signature or verifier"))
            }
        }
        ("intoto", true) => {
            let alg = str_at(spec, &["content", "payloadHash", "algorithm"]);
            let val = str_at(spec, &["content", "payloadHash", "value"]);
            if alg != Some("sha256") || val != Some(want_hash.as_str()) {
                return Err(mismatch("payload hash"));
            }
            let key = str_at(spec, &["publicKey"]).and_then(b64_der);
            if key.as_deref() != Some(b.verifier_der) {
                return Err(mismatch("public key or certificate"));
            }
            Ok(())
        }
        (k, _) => Err(Failure::BadSet(format!(
            "log entry kind {:?} does not fit this signature",
            k.escape_debug().to_string()
        ))),
    }
}
