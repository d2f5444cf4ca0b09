//! Test material made by tools that are not ferry: keys and signatures by
//! `openssl`, a Fulcio-shaped PKI by rcgen, a fake Rekor log whose key
//! (openssl) signs SETs and checkpoints; manifests and bundles written with
//! serde_json.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ferry_trust::{Policy, VerifySpec};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A signature artifact: manifest bytes and blobs by digest.
pub type Art = (Vec<u8>, BTreeMap<String, Vec<u8>>);

pub const EPOCH_2020: i64 = 1_577_836_800;
pub const NOW: i64 = 1_780_000_000; // 2026-05-28

pub fn sha256(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha256(b)))
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("run openssl");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Alg {
    P256,
    P384,
    Rsa,
    Ed25519,
}

/// A private key file and its public key PEM, made by openssl.
pub struct Key {
    pub alg: Alg,
    pub private: PathBuf,
    pub public_pem: Vec<u8>,
    pub dir: PathBuf,
}

impl Key {
    pub fn generate(dir: &Path, name: &str, alg: Alg) -> Key {
        let private = dir.join(format!("{name}.key"));
        let mut c = Command::new("openssl");
        c.arg("genpkey");
        match alg {
            Alg::P256 => c.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
            Alg::P384 => c.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]),
            Alg::Rsa => c.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
            Alg::Ed25519 => c.args(["-algorithm", "ED25519"]),
        };
        c.arg("-out").arg(&private);
        run(&mut c);
        Key::from_private(dir, &private, alg)
    }

    pub fn from_private(dir: &Path, private: &Path, alg: Alg) -> Key {
        let public_pem = run(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(private));
        Key {
            alg,
            private: private.to_owned(),
            public_pem,
            dir: dir.to_owned(),
        }
    }

    /// The public key's SPKI DER (openssl).
    pub fn spki_der(&self) -> Vec<u8> {
        run(Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&self.private))
    }

    pub fn key_id(&self) -> String {
        hex::encode(sha256(&self.spki_der()))
    }

    /// openssl's signature over `data`: `dgst -sha256 -sign` (P-256, RSA),
    /// `-sha384` (P-384), `pkeyutl -sign -rawin` (Ed25519).
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let input = tempfile::NamedTempFile::new_in(&self.dir).unwrap();
        std::fs::write(input.path(), data).unwrap();
        let mut c = Command::new("openssl");
        match self.alg {
            Alg::P256 | Alg::Rsa => c.args(["dgst", "-sha256", "-sign"]).arg(&self.private),
            Alg::P384 => c.args(["dgst", "-sha384", "-sign"]).arg(&self.private),
            Alg::Ed25519 => c
                .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
                .arg(&self.private)
                .arg("-in"),
        };
        c.arg(input.path());
        run(&mut c)
    }
}

/// A subject manifest and its digest.
pub fn subject_manifest(tag: &str) -> (Vec<u8>, String) {
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", hex::encode(sha256(tag.as_bytes()))), "size": tag.len()},
        "layers": [],
        "annotations": {"test": tag},
    }))
    .unwrap();
    let d = digest(&m);
    (m, d)
}

/// A cosign simple-signing payload naming `digest`.
pub fn simple_signing(digest: &str, annotations: Option<BTreeMap<&str, &str>>) -> Vec<u8> {
    let mut v = json!({
        "critical": {
            "identity": {"docker-reference": "registry.test/app"},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    });
    if let Some(a) = annotations {
        v["optional"] = serde_json::to_value(a).unwrap();
    }
    serde_json::to_vec(&v).unwrap()
}

/// One layer of a cosign `.sig` manifest.
pub struct SigLayer {
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    pub certificate_pem: Option<String>,
    pub chain_pem: Option<String>,
    pub rekor_bundle: Option<Value>,
    pub media_type: &'static str,
}

impl SigLayer {
    pub fn new(payload: Vec<u8>, signature: Vec<u8>) -> SigLayer {
        SigLayer {
            payload,
            signature,
            certificate_pem: None,
            chain_pem: None,
            rekor_bundle: None,
            media_type: "application/vnd.dev.cosign.simplesigning.v1+json",
        }
    }
}

/// The cosign `.sig` manifest bytes and its blobs.
pub fn cosign_manifest(layers: &[SigLayer]) -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let mut blobs = BTreeMap::new();
    let config = b"{}".to_vec();
    let mut descs = Vec::new();
    for l in layers {
        let mut ann = serde_json::Map::new();
        ann.insert(
            "dev.cosignproject.cosign/signature".into(),
            Value::String(STANDARD.encode(&l.signature)),
        );
        if let Some(c) = &l.certificate_pem {
            ann.insert(
                "dev.sigstore.cosign/certificate".into(),
                Value::String(c.clone()),
            );
        }
        if let Some(c) = &l.chain_pem {
            ann.insert("dev.sigstore.cosign/chain".into(), Value::String(c.clone()));
        }
        if let Some(b) = &l.rekor_bundle {
            ann.insert(
                "dev.sigstore.cosign/bundle".into(),
                Value::String(serde_json::to_string(b).unwrap()),
            );
        }
        descs.push(json!({
            "mediaType": l.media_type,
            "digest": digest(&l.payload),
            "size": l.payload.len(),
            "annotations": ann,
        }));
        blobs.insert(digest(&l.payload), l.payload.clone());
    }
    blobs.insert(digest(&config), config.clone());
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    (m, blobs)
}

/// An OCI 1.1 referrer manifest carrying one Sigstore bundle.
pub fn referrer_manifest(
    bundle: &Value,
    subject: &str,
    subject_size: usize,
) -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let bytes = serde_json::to_vec(bundle).unwrap();
    let empty = b"{}".to_vec();
    let mut blobs = BTreeMap::new();
    blobs.insert(digest(&bytes), bytes.clone());
    blobs.insert(digest(&empty), empty.clone());
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(&empty), "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "digest": digest(&bytes), "size": bytes.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": subject_size},
    }))
    .unwrap();
    (m, blobs)
}

/// Loads a policy from JSON with files in `dir`.
pub fn policy(dir: &Path, spec: Value) -> Policy {
    let spec: VerifySpec = serde_json::from_value(spec).expect("spec parses");
    Policy::load_from_dir(&spec, dir).expect("policy loads")
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    std::fs::write(dir.join(name), bytes).unwrap();
    name.to_owned()
}

// ---------------------------------------------------------------- keyless

pub struct Pki {
    pub root_cert: rcgen::Certificate,
    pub root_key: rcgen::KeyPair,
    pub inter_cert: rcgen::Certificate,
    pub inter_key: rcgen::KeyPair,
}

fn ca_params(cn: &str, not_before: i64, not_after: i64) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "sigstore.test");
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    p
}

impl Pki {
    /// Root and intermediate shaped like Fulcio's (the intermediate has the
    /// code-signing extended key usage).
    pub fn new(name: &str) -> Pki {
        let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let root_cert = ca_params(
            &format!("{name}-root"),
            EPOCH_2020,
            EPOCH_2020 + 20 * 365 * 86400,
        )
        .self_signed(&root_key)
        .unwrap();
        let inter_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut ip = ca_params(
            &format!("{name}-intermediate"),
            EPOCH_2020,
            EPOCH_2020 + 20 * 365 * 86400,
        );
        ip.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ip.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
        ip.use_authority_key_identifier_extension = true;
        let inter_cert = ip.signed_by(&inter_key, &root_cert, &root_key).unwrap();
        Pki {
            root_cert,
            root_key,
            inter_cert,
            inter_key,
        }
    }

    /// A leaf for `san` (an email or a URI) and `issuer`, valid
    /// `[not_before, not_after]`, its private key written under `dir` for
    /// openssl to sign with.
    pub fn leaf(
        &self,
        dir: &Path,
        san: &str,
        issuer: &str,
        not_before: i64,
        not_after: i64,
        issuer_ext: IssuerExt,
    ) -> Leaf {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let p = leaf_params(san, issuer, not_before, not_after, issuer_ext);
        let cert = p
            .signed_by(&key, &self.inter_cert, &self.inter_key)
            .unwrap();
        leaf_files(dir, &key, &cert)
    }

    /// A leaf with an embedded SCT (RFC 6962 precertificate entry) signed
    /// by `ct`, as Fulcio issues them: the SCT signs the leaf's TBS without
    /// the SCT extension, so the leaf is built twice from the same
    /// parameters (fixed serial), the second time with the SCT.
    pub fn leaf_with_sct(
        &self,
        dir: &Path,
        san: &str,
        issuer: &str,
        not_before: i64,
        not_after: i64,
        ct: &Key,
    ) -> Leaf {
        use x509_cert::der::{Decode, Encode};
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pre = leaf_params(san, issuer, not_before, not_after, IssuerExt::Both)
            .signed_by(&key, &self.inter_cert, &self.inter_key)
            .unwrap();
        let tbs = x509_cert::Certificate::from_der(pre.der())
            .unwrap()
            .tbs_certificate
            .to_der()
            .unwrap();
        let inter = x509_cert::Certificate::from_der(self.inter_cert.der()).unwrap();
        let issuer_key_hash = sha256(
            &inter
                .tbs_certificate
                .subject_public_key_info
                .to_der()
                .unwrap(),
        );
        let ts_ms = (not_before as u64 + 1) * 1000;
        // RFC 6962 §3.2 digitally-signed struct, precert_entry.
        let mut signed = vec![0u8, 0u8];
        signed.extend_from_slice(&ts_ms.to_be_bytes());
        signed.extend_from_slice(&1u16.to_be_bytes());
        signed.extend_from_slice(&issuer_key_hash);
        signed.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]);
        signed.extend_from_slice(&tbs);
        signed.extend_from_slice(&0u16.to_be_bytes());
        let sig = ct.sign(&signed);
        let mut sct = vec![0u8];
        sct.extend_from_slice(&sha256(&ct.spki_der()));
        sct.extend_from_slice(&ts_ms.to_be_bytes());
        sct.extend_from_slice(&0u16.to_be_bytes());
        sct.extend_from_slice(&[4, 3]);
        sct.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        sct.extend_from_slice(&sig);
        let mut list = ((sct.len() + 2) as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&(sct.len() as u16).to_be_bytes());
        list.extend_from_slice(&sct);
        let octets = x509_cert::der::asn1::OctetString::new(list)
            .unwrap()
            .to_der()
            .unwrap();
        let mut p = leaf_params(san, issuer, not_before, not_after, IssuerExt::Both);
        p.custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2],
                octets,
            ));
        let cert = p
            .signed_by(&key, &self.inter_cert, &self.inter_key)
            .unwrap();
        leaf_files(dir, &key, &cert)
    }

    /// The chain PEM (intermediate then root), as cosign's chain annotation.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.inter_cert.pem(), self.root_cert.pem())
    }
}

fn leaf_files(dir: &Path, key: &rcgen::KeyPair, cert: &rcgen::Certificate) -> Leaf {
    let private = dir.join(format!(
        "leaf-{}.key",
        hex::encode(&sha256(cert.der())[..6])
    ));
    std::fs::write(&private, key.serialize_pem()).unwrap();
    Leaf {
        key: Key::from_private(dir, &private, Alg::P256),
        pem: cert.pem(),
        der: cert.der().to_vec(),
    }
}

fn leaf_params(
    san: &str,
    issuer: &str,
    not_before: i64,
    not_after: i64,
    issuer_ext: IssuerExt,
) -> rcgen::CertificateParams {
    use x509_cert::der::Encode;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.serial_number = Some(rcgen::SerialNumber::from_slice(
        &sha256(format!("{san} {issuer} {not_before}").as_bytes())[..16],
    ));
    p.use_authority_key_identifier_extension = true;
    p.subject_alt_names = vec![if san.contains("://") {
        rcgen::SanType::URI(san.try_into().unwrap())
    } else {
        rcgen::SanType::Rfc822Name(san.try_into().unwrap())
    }];
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    if matches!(issuer_ext, IssuerExt::Legacy | IssuerExt::Both) {
        p.custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
                issuer.as_bytes().to_vec(),
            ));
    }
    if matches!(issuer_ext, IssuerExt::Utf8 | IssuerExt::Both) {
        let der = x509_cert::der::asn1::Utf8StringRef::new(issuer)
            .unwrap()
            .to_der()
            .unwrap();
        p.custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
                der,
            ));
    }
    p
}

#[derive(Clone, Copy)]
pub enum IssuerExt {
    Legacy,
    Utf8,
    Both,
}

pub struct Leaf {
    pub key: Key,
    pub pem: String,
    pub der: Vec<u8>,
}

/// A fake Rekor: an openssl P-256 key.
pub struct Log {
    pub key: Key,
}

impl Log {
    pub fn new(dir: &Path, name: &str) -> Log {
        Log {
            key: Key::generate(dir, name, Alg::P256),
        }
    }

    pub fn log_id(&self) -> Vec<u8> {
        sha256(&self.key.spki_der())
    }

    /// The SET over the canonical JSON of the entry (keys sorted, compact).
    pub fn set(&self, body: &[u8], integrated_time: i64, log_index: i64) -> Vec<u8> {
        let mut m = BTreeMap::new();
        m.insert("body", json!(STANDARD.encode(body)));
        m.insert("integratedTime", json!(integrated_time));
        m.insert("logID", json!(hex::encode(self.log_id())));
        m.insert("logIndex", json!(log_index));
        self.key.sign(&serde_json::to_vec(&m).unwrap())
    }

    /// cosign's `dev.sigstore.cosign/bundle` annotation.
    pub fn cosign_bundle(&self, body: &[u8], integrated_time: i64, log_index: i64) -> Value {
        json!({
            "SignedEntryTimestamp": STANDARD.encode(self.set(body, integrated_time, log_index)),
            "Payload": {
                "body": STANDARD.encode(body),
                "integratedTime": integrated_time,
                "logIndex": log_index,
                "logID": hex::encode(self.log_id()),
            }
        })
    }

    /// A signed checkpoint note.
    pub fn checkpoint(&self, size: u64, root: &[u8]) -> String {
        let body = format!("rekor.test - 1\n{size}\n{}\n", STANDARD.encode(root));
        let sig = self.key.sign(body.as_bytes());
        let mut raw = self.log_id()[..4].to_vec();
        raw.extend_from_slice(&sig);
        format!("{body}\n\u{2014} rekor.test {}\n", STANDARD.encode(raw))
    }
}

/// A hashedrekord v0.0.1 body.
pub fn hashedrekord(signature: &[u8], data: &[u8], verifier_pem: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hex::encode(sha256(data))}},
            "signature": {"content": STANDARD.encode(signature), "publicKey": {"content": STANDARD.encode(verifier_pem)}}
        }
    }))
    .unwrap()
}

/// A dsse v0.0.1 body.
pub fn dsse_body(
    signature: &[u8],
    payload: &[u8],
    envelope: &[u8],
    verifier_pem: &[u8],
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": hex::encode(sha256(envelope))},
            "payloadHash": {"algorithm": "sha256", "value": hex::encode(sha256(payload))},
            "signatures": [{"signature": STANDARD.encode(signature), "verifier": STANDARD.encode(verifier_pem)}]
        }
    }))
    .unwrap()
}

/// RFC 6962 §2.1 Merkle tree hash, written from the RFC's recursive
/// definition (the crate walks the proof iteratively, RFC 9162 §2.1.3.2).
pub fn mth(leaves: &[Vec<u8>]) -> Vec<u8> {
    if leaves.len() == 1 {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(&leaves[0]);
        return h.finalize().to_vec();
    }
    let k = leaves.len().next_power_of_two() / 2;
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(mth(&leaves[..k]));
    h.update(mth(&leaves[k..]));
    h.finalize().to_vec()
}

/// RFC 6962 §2.1.1 audit path PATH(m, D[n]).
pub fn path(m: usize, leaves: &[Vec<u8>]) -> Vec<Vec<u8>> {
    if leaves.len() == 1 {
        return Vec::new();
    }
    let k = leaves.len().next_power_of_two() / 2;
    if m < k {
        let mut p = path(m, &leaves[..k]);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = path(m - k, &leaves[k..]);
        p.push(mth(&leaves[..k]));
        p
    }
}

/// A trusted_root.json for `pki` (valid from `ca_start`), `log` as Rekor.
pub fn trusted_root(pkis: &[(&Pki, i64, Option<i64>)], logs: &[&Log]) -> Vec<u8> {
    trusted_root_ct(pkis, logs, &[])
}

/// The same with CT log keys.
pub fn trusted_root_ct(
    pkis: &[(&Pki, i64, Option<i64>)],
    logs: &[&Log],
    ctlogs: &[&Key],
) -> Vec<u8> {
    let ts = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let cas: Vec<Value> = pkis
        .iter()
        .map(|(p, start, end)| {
            let mut valid = json!({"start": ts(*start)});
            if let Some(e) = end {
                valid["end"] = json!(ts(*e));
            }
            json!({
                "subject": {"organization": "sigstore.test", "commonName": "test"},
                "uri": "https://fulcio.test",
                "certChain": {"certificates": [
                    {"rawBytes": STANDARD.encode(p.inter_cert.der())},
                    {"rawBytes": STANDARD.encode(p.root_cert.der())}
                ]},
                "validFor": valid
            })
        })
        .collect();
    let log_json = |k: &Key| {
        json!({
            "baseUrl": "https://ct.test",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": STANDARD.encode(k.spki_der()),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": ts(EPOCH_2020)}
            },
            "logId": {"keyId": STANDARD.encode(sha256(&k.spki_der()))}
        })
    };
    let ct: Vec<Value> = ctlogs.iter().map(|k| log_json(k)).collect();
    let tlogs: Vec<Value> = logs
        .iter()
        .map(|l| {
            json!({
                "baseUrl": "https://rekor.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": STANDARD.encode(l.key.spki_der()),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": ts(EPOCH_2020)}
                },
                "logId": {"keyId": STANDARD.encode(l.log_id())}
            })
        })
        .collect();
    serde_json::to_vec_pretty(&json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": tlogs,
        "certificateAuthorities": cas,
        "ctlogs": ct,
        "timestampAuthorities": []
    }))
    .unwrap()
}

/// DSSE PAE, written here from the DSSE spec.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    v.extend_from_slice(payload);
    v
}

/// An in-toto statement about `digest`.
pub fn statement(digest: &str, predicate_type: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "registry.test/app", "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": {"builder": {"id": "test"}}
    }))
    .unwrap()
}
