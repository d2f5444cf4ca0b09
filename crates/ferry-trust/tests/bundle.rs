//! OCI 1.1 referrers carrying Sigstore bundles (v0.3): messageSignature and
//! DSSE envelopes, keyless (Fulcio-shaped PKI) and key-based (openssl),
//! transparency-log entries with SETs and RFC 6962 inclusion proofs against
//! signed checkpoints.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use ferry_trust::{
    verify_subject_at, Decision, Failure, Format, Policy, SatisfiedBy, SignatureArtifact, Subject,
    TrustError,
};
use serde_json::{json, Value};

const ISSUER: &str = "https://accounts.test";
const SAN: &str = "release@acme.test";
const T0: i64 = EPOCH_2020 + 400 * 86400;
const SLSA: &str = "https://slsa.dev/provenance/v1";
const SPDX: &str = "https://spdx.dev/Document";

struct World {
    dir: tempfile::TempDir,
    pki: Pki,
    log: Log,
    root: String,
    leaf: Leaf,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new("fulcio");
        let log = Log::new(dir.path(), "rekor");
        let root = write(
            dir.path(),
            "trusted_root.json",
            &trusted_root(&[(&pki, EPOCH_2020, None)], &[&log]),
        );
        let leaf = pki.leaf(dir.path(), SAN, ISSUER, T0 - 60, T0 + 540, IssuerExt::Utf8);
        World {
            dir,
            pki,
            log,
            root,
            leaf,
        }
    }

    fn policy(&self, extra: Value) -> Policy {
        let mut rule = json!({"match": "registry.test/**", "identities": [{"issuer": ISSUER, "subject": SAN}]});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                rule[k] = v;
            }
        }
        policy(
            self.dir.path(),
            json!({"trustedRoot": self.root, "rules": [rule]}),
        )
    }

    /// A tlog entry for `body`, at `index` in a tree of `size` leaves (the
    /// others are random), with a SET and/or an inclusion proof.
    fn entry(&self, body: &[u8], index: usize, size: usize, set: bool, proof: bool) -> Value {
        let mut leaves: Vec<Vec<u8>> = (0..size)
            .map(|i| format!("other leaf {i}").into_bytes())
            .collect();
        leaves[index] = body.to_vec();
        let root = mth(&leaves);
        let mut e = json!({
            "logIndex": (1000 + index).to_string(),
            "logId": {"keyId": STANDARD.encode(self.log.log_id())},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
            "integratedTime": T0.to_string(),
            "canonicalizedBody": STANDARD.encode(body),
        });
        if set {
            e["inclusionPromise"] = json!({"signedEntryTimestamp": STANDARD.encode(self.log.set(body, T0, (1000 + index) as i64))});
        }
        if proof {
            e["inclusionProof"] = json!({
                "logIndex": index.to_string(),
                "rootHash": STANDARD.encode(&root),
                "treeSize": size.to_string(),
                "hashes": path(index, &leaves).iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
                "checkpoint": {"envelope": self.log.checkpoint(size as u64, &root)},
            });
        }
        e
    }

    /// A keyless messageSignature bundle over the subject manifest.
    fn message_bundle(
        &self,
        subject_manifest: &[u8],
        entries: impl Fn(&[u8]) -> Vec<Value>,
    ) -> Value {
        let sig = self.leaf.key.sign(subject_manifest);
        let body = hashedrekord(&sig, subject_manifest, self.leaf.pem.as_bytes());
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": STANDARD.encode(&self.leaf.der)},
                "tlogEntries": entries(&body),
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(sha256(subject_manifest))},
                "signature": STANDARD.encode(&sig),
            }
        })
    }

    /// A keyless DSSE bundle over an in-toto statement.
    fn dsse_bundle(&self, leaf: &Leaf, about: &str, predicate_type: &str) -> Value {
        let payload = statement(about, predicate_type);
        let sig = leaf
            .key
            .sign(&pae("application/vnd.in-toto+json", &payload));
        let envelope = json!({
            "payload": STANDARD.encode(&payload),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": STANDARD.encode(&sig)}],
        });
        let body = dsse_body(
            &sig,
            &payload,
            &serde_json::to_vec(&envelope).unwrap(),
            leaf.pem.as_bytes(),
        );
        let mut e = self.entry(&body, 2, 5, true, true);
        e["kindVersion"] = json!({"kind": "dsse", "version": "0.0.1"});
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": STANDARD.encode(&leaf.der)},
                "tlogEntries": [e],
            },
            "dsseEnvelope": envelope,
        })
    }
}

fn run(p: &Policy, m: &[u8], d: &str, arts: &[Art]) -> Result<Decision, TrustError> {
    let a: Vec<SignatureArtifact<'_>> = arts
        .iter()
        .map(|(m, b)| SignatureArtifact {
            manifest: m,
            blobs: b,
        })
        .collect();
    // "Now" is years after the ten-minute leaf: only a verified log entry
    // makes it acceptable.
    verify_subject_at(
        p,
        "registry.test",
        "app",
        Subject {
            digest: d,
            manifest: m,
        },
        &a,
        NOW,
    )
}

fn reason(r: Result<Decision, TrustError>) -> Failure {
    match r {
        Err(e) => *e.reason,
        Ok(d) => panic!("expected a refusal, got {d:?}"),
    }
}

#[test]
fn message_signature_with_set_and_inclusion_proof() {
    let w = World::new();
    let p = w.policy(json!({"tlog": "required"}));
    let (m, d) = subject_manifest("bundle");
    for (set, proof) in [(true, true), (true, false), (false, true)] {
        let b = w.message_bundle(&m, |body| vec![w.entry(body, 3, 7, set, proof)]);
        match run(&p, &m, &d, &[referrer_manifest(&b, &d, m.len())]) {
            Ok(Decision::Verified(v)) => {
                assert_eq!(v.format, Format::SigstoreBundle);
                assert_eq!(v.log_index, Some(1003));
                assert_eq!(v.integrated_time, Some(T0));
                assert_eq!(
                    v.satisfied_by,
                    SatisfiedBy::Identity {
                        issuer: ISSUER.into(),
                        subject: SAN.into()
                    }
                );
            }
            other => panic!("set={set} proof={proof}: {other:?}"),
        }
    }
    // Neither: the entry proves nothing.
    let b = w.message_bundle(&m, |body| vec![w.entry(body, 3, 7, false, false)]);
    let r = reason(run(&p, &m, &d, &[referrer_manifest(&b, &d, m.len())]));
    assert!(matches!(r, Failure::BadSet(_)), "{r:?}");
    // No entry: the ten-minute leaf is long expired.
    let b = w.message_bundle(&m, |_| vec![]);
    let r = reason(run(
        &w.policy(json!({})),
        &m,
        &d,
        &[referrer_manifest(&b, &d, m.len())],
    ));
    assert!(
        matches!(
            r,
            Failure::CertificateExpired {
                with_log_entry: false,
                ..
            }
        ),
        "{r:?}"
    );
}

#[test]
fn inclusion_proofs_at_every_position_and_their_alterations() {
    let w = World::new();
    let p = w.policy(json!({"tlog": "required"}));
    let (m, d) = subject_manifest("proofs");
    for size in 1..=9usize {
        for index in 0..size {
            let b = w.message_bundle(&m, |body| vec![w.entry(body, index, size, false, true)]);
            let r = run(&p, &m, &d, &[referrer_manifest(&b, &d, m.len())]);
            assert!(
                matches!(r, Ok(Decision::Verified(_))),
                "size {size} index {index}: {r:?}"
            );
            let proof = &b["verificationMaterial"]["tlogEntries"][0]["inclusionProof"];
            let hashes = proof["hashes"].as_array().unwrap().clone();
            // Each path hash altered, each dropped; the index and the size moved.
            let mut variants: Vec<Value> = Vec::new();
            for i in 0..hashes.len() {
                let mut h = STANDARD.decode(hashes[i].as_str().unwrap()).unwrap();
                h[i % 32] ^= 1;
                let mut v = b.clone();
                v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][i] =
                    json!(STANDARD.encode(&h));
                variants.push(v);
                let mut v = b.clone();
                v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"]
                    .as_array_mut()
                    .unwrap()
                    .remove(i);
                variants.push(v);
            }
            for other in [index + 1, index.wrapping_sub(1), size] {
                if other != index && other < 64 {
                    let mut v = b.clone();
                    v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["logIndex"] =
                        json!(other.to_string());
                    variants.push(v);
                }
            }
            let mut v = b.clone();
            v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["treeSize"] =
                json!((size + 1).to_string());
            variants.push(v);
            for (n, v) in variants.iter().enumerate() {
                let r = reason(run(&p, &m, &d, &[referrer_manifest(v, &d, m.len())]));
                assert!(
                    matches!(r, Failure::BadInclusionProof(_) | Failure::Malformed(_)),
                    "size {size} index {index} variant {n}: {r:?}"
                );
            }
        }
    }
}

#[test]
fn checkpoints_must_be_signed_by_the_log_and_name_the_root() {
    let w = World::new();
    let p = w.policy(json!({"tlog": "required"}));
    let (m, d) = subject_manifest("checkpoint");
    let rogue = Log::new(w.dir.path(), "rogue");
    let good = w.message_bundle(&m, |body| vec![w.entry(body, 1, 4, false, true)]);
    let cp = good["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]
        ["envelope"]
        .as_str()
        .unwrap()
        .to_owned();
    let root = STANDARD
        .decode(
            good["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["rootHash"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let mut other_root = root.clone();
    other_root[0] ^= 1;
    let body_end = cp.find("\n\n").unwrap();
    for (name, envelope) in [
        ("rogue key", rogue.checkpoint(4, &root)),
        ("other size", w.log.checkpoint(5, &root)),
        ("other root", w.log.checkpoint(4, &other_root)),
        ("no signature", cp[..body_end + 2].to_owned()),
        (
            "body edited",
            cp.replacen("rekor.test - 1", "rekor.test - 2", 1),
        ),
        ("empty", String::new()),
    ] {
        let mut b = good.clone();
        b["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]["envelope"] =
            json!(envelope);
        let r = reason(run(&p, &m, &d, &[referrer_manifest(&b, &d, m.len())]));
        assert!(matches!(r, Failure::BadInclusionProof(_)), "{name}: {r:?}");
    }
}

#[test]
fn required_attestations_verify_against_the_same_identities() {
    let w = World::new();
    let p = w.policy(json!({"attestations": [SLSA, SPDX]}));
    let (m, d) = subject_manifest("att");
    let (_, other_d) = subject_manifest("someone else");
    let sig = referrer_manifest(
        &w.message_bundle(&m, |body| vec![w.entry(body, 0, 3, true, true)]),
        &d,
        m.len(),
    );
    let slsa = referrer_manifest(&w.dsse_bundle(&w.leaf, &d, SLSA), &d, m.len());
    let spdx = referrer_manifest(&w.dsse_bundle(&w.leaf, &d, SPDX), &d, m.len());
    match run(&p, &m, &d, &[sig.clone(), slsa.clone(), spdx.clone()]) {
        Ok(Decision::Verified(v)) => {
            let types: Vec<&str> = v
                .attestations
                .iter()
                .map(|a| a.predicate_type.as_str())
                .collect();
            assert_eq!(types, [SLSA, SPDX]);
            assert!(v
                .attestations
                .iter()
                .all(|a| a.log_index == Some(1002) && a.format == Format::SigstoreBundle));
        }
        other => panic!("{other:?}"),
    }
    // One missing.
    let r = reason(run(&p, &m, &d, &[sig.clone(), slsa.clone()]));
    assert_eq!(
        r,
        Failure::MissingAttestation {
            predicate_type: SPDX.into()
        }
    );
    // About another image.
    let wrong = referrer_manifest(&w.dsse_bundle(&w.leaf, &other_d, SPDX), &d, m.len());
    let r = reason(run(&p, &m, &d, &[sig.clone(), slsa.clone(), wrong]));
    assert!(matches!(r, Failure::PayloadDigestMismatch { .. }), "{r:?}");
    // Signed by someone else (valid chain, other identity).
    let mallory = w.pki.leaf(
        w.dir.path(),
        "mallory@acme.test",
        ISSUER,
        T0 - 60,
        T0 + 540,
        IssuerExt::Utf8,
    );
    let foreign = referrer_manifest(&w.dsse_bundle(&mallory, &d, SPDX), &d, m.len());
    let r = reason(run(&p, &m, &d, &[sig.clone(), slsa.clone(), foreign]));
    assert!(matches!(r, Failure::IdentityMismatch { .. }), "{r:?}");
    // The envelope's payload swapped after signing.
    let mut tampered = w.dsse_bundle(&w.leaf, &d, SPDX);
    let altered = String::from_utf8(statement(&d, SPDX))
        .unwrap()
        .replace("\"test\"", "\"evil\"");
    tampered["dsseEnvelope"]["payload"] = json!(STANDARD.encode(altered));
    let r = reason(run(
        &p,
        &m,
        &d,
        &[
            sig.clone(),
            slsa.clone(),
            referrer_manifest(&tampered, &d, m.len()),
        ],
    ));
    assert!(matches!(r, Failure::BadSignature), "{r:?}");
    // Attestations alone are not a signature.
    let r = reason(run(&p, &m, &d, &[slsa, spdx]));
    assert_eq!(r, Failure::NoSignature);
}

#[test]
fn a_cosign_sign_statement_in_a_bundle_is_a_signature() {
    let w = World::new();
    let p = w.policy(json!({}));
    let (m, d) = subject_manifest("cosign3");
    let b = w.dsse_bundle(&w.leaf, &d, "https://sigstore.dev/cosign/sign/v1");
    match run(&p, &m, &d, &[referrer_manifest(&b, &d, m.len())]) {
        Ok(Decision::Verified(v)) => assert_eq!(v.format, Format::SigstoreBundle),
        other => panic!("{other:?}"),
    }
    // Annotations cannot be checked on it: refused when required.
    let p = w.policy(json!({"annotations": {"env": "prod"}}));
    let r = reason(run(&p, &m, &d, &[referrer_manifest(&b, &d, m.len())]));
    assert!(
        matches!(r, Failure::AnnotationMismatch { found: None, .. }),
        "{r:?}"
    );
}

#[test]
fn key_based_bundles_and_legacy_attestation_tags() {
    let dir = tempfile::tempdir().unwrap();
    let (m, d) = subject_manifest("keyed");
    for alg in [Alg::P256, Alg::P384, Alg::Ed25519, Alg::Rsa] {
        let key = Key::generate(dir.path(), &format!("{alg:?}"), alg);
        let kp = write(dir.path(), &format!("{alg:?}.pub"), &key.public_pem);
        let p = policy(
            dir.path(),
            json!({"rules": [{"match": "registry.test/**", "keys": [kp], "attestations": [SLSA]}]}),
        );
        let bundle = json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": key.key_id()}, "tlogEntries": []},
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(sha256(&m))},
                "signature": STANDARD.encode(key.sign(&m)),
            }
        });
        // A legacy `.att` tag: a DSSE envelope layer.
        let payload = statement(&d, SLSA);
        let env = serde_json::to_vec(&json!({
            "payloadType": "application/vnd.in-toto+json",
            "payload": STANDARD.encode(&payload),
            "signatures": [{"keyid": "", "sig": STANDARD.encode(key.sign(&pae("application/vnd.in-toto+json", &payload)))}],
        }))
        .unwrap();
        let mut layer = SigLayer::new(env, Vec::new());
        layer.media_type = "application/vnd.dsse.envelope.v1+json";
        let att = cosign_manifest(&[layer]);
        match run(
            &p,
            &m,
            &d,
            &[referrer_manifest(&bundle, &d, m.len()), att.clone()],
        ) {
            Ok(Decision::Verified(v)) => {
                assert_eq!(v.format, Format::SigstoreBundle);
                assert_eq!(v.attestations.len(), 1);
                assert_eq!(v.attestations[0].format, Format::CosignTag);
                assert!(
                    matches!(v.satisfied_by, SatisfiedBy::Key { ref key_id, .. } if *key_id == key.key_id())
                );
            }
            other => panic!("{alg:?}: {other:?}"),
        }
        // A messageDigest naming another manifest.
        let mut b2 = bundle.clone();
        b2["messageSignature"]["messageDigest"]["digest"] =
            json!(STANDARD.encode(sha256(b"other")));
        let r = reason(run(
            &p,
            &m,
            &d,
            &[referrer_manifest(&b2, &d, m.len()), att.clone()],
        ));
        assert!(
            matches!(r, Failure::PayloadDigestMismatch { .. }),
            "{alg:?}: {r:?}"
        );
        // A referrer whose subject is another manifest.
        let (_, od) = subject_manifest("not me");
        let r = reason(run(&p, &m, &d, &[referrer_manifest(&bundle, &od, 10), att]));
        assert!(
            matches!(r, Failure::Malformed(ref s) if s.contains("has subject")),
            "{alg:?}: {r:?}"
        );
    }
}

#[test]
fn malformed_bundles_are_refused_not_skipped() {
    let w = World::new();
    let p = w.policy(json!({}));
    let (m, d) = subject_manifest("malformed");
    let good = w.message_bundle(&m, |body| vec![w.entry(body, 0, 1, true, false)]);
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut v = good.clone();
    v["mediaType"] = json!("application/vnd.dev.sigstore.bundle.v9+json");
    cases.push(("media type", v));
    let mut v = good.clone();
    v["dsseEnvelope"] = json!({"payload": "", "payloadType": "x", "signatures": []});
    cases.push(("both contents", v));
    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("messageSignature");
    cases.push(("no content", v));
    let mut v = good.clone();
    v["messageSignature"]["messageDigest"]["algorithm"] = json!("SHA2_512");
    cases.push(("digest algorithm", v));
    for field in ["logIndex", "integratedTime"] {
        for bad in ["", "-", "1e3", "99999999999999999999999", " 1"] {
            let mut v = good.clone();
            v["verificationMaterial"]["tlogEntries"][0][field] = json!(bad);
            cases.push((field, v));
        }
    }
    let mut v = good.clone();
    v["verificationMaterial"]["certificate"]["rawBytes"] = json!("!!");
    cases.push(("certificate base64", v));
    for (name, b) in cases {
        let r = reason(run(&p, &m, &d, &[referrer_manifest(&b, &d, m.len())]));
        assert!(matches!(r, Failure::Malformed(_)), "{name}: {r:?}");
    }
    assert!(matches!(
        run(&p, &m, &d, &[referrer_manifest(&good, &d, m.len())]),
        Ok(Decision::Verified(_))
    ));
}

#[test]
fn a_log_entry_of_another_signature_does_not_count() {
    // A genuine, validly signed log entry proves a time only for the
    // signature it records: borrowing another entry (to make an expired
    // or stolen leaf look timely) is refused.
    let w = World::new();
    let p = w.policy(json!({}));
    let (m, d) = subject_manifest("borrowed");
    let sig = w.leaf.key.sign(&m);
    let other_leaf = w.pki.leaf(
        w.dir.path(),
        SAN,
        ISSUER,
        T0 - 60,
        T0 + 540,
        IssuerExt::Utf8,
    );
    let mut other_sig = sig.clone();
    other_sig[10] ^= 1;
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "other signature",
            hashedrekord(&other_sig, &m, w.leaf.pem.as_bytes()),
        ),
        (
            "other data",
            hashedrekord(&sig, b"other data", w.leaf.pem.as_bytes()),
        ),
        (
            "other certificate",
            hashedrekord(&sig, &m, other_leaf.pem.as_bytes()),
        ),
        (
            "dsse kind for a message",
            dsse_body(&sig, &m, b"{}", w.leaf.pem.as_bytes()),
        ),
        ("not JSON", b"not json".to_vec()),
        (
            "unknown kind",
            serde_json::to_vec(&json!({"kind": "rekord", "apiVersion": "0.0.1", "spec": {}}))
                .unwrap(),
        ),
    ];
    for (name, body) in bodies {
        for (set, proof) in [(true, false), (false, true), (true, true)] {
            let mut b = w.message_bundle(&m, |_| vec![]);
            b["verificationMaterial"]["tlogEntries"] = json!([w.entry(&body, 2, 5, set, proof)]);
            let r = reason(run(&p, &m, &d, &[referrer_manifest(&b, &d, m.len())]));
            assert!(
                matches!(r, Failure::BadSet(_)),
                "{name} set={set} proof={proof}: {r:?}"
            );
        }
    }
    // A DSSE attestation whose entry records another payload.
    let p = w.policy(json!({"attestations": [SLSA]}));
    let sig_art = referrer_manifest(
        &w.message_bundle(&m, |body| vec![w.entry(body, 0, 3, true, true)]),
        &d,
        m.len(),
    );
    let mut att = w.dsse_bundle(&w.leaf, &d, SLSA);
    let env_sig = STANDARD
        .decode(
            att["dsseEnvelope"]["signatures"][0]["sig"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let body = dsse_body(&env_sig, b"another payload", b"{}", w.leaf.pem.as_bytes());
    let mut e = w.entry(&body, 2, 5, true, true);
    e["kindVersion"] = json!({"kind": "dsse", "version": "0.0.1"});
    att["verificationMaterial"]["tlogEntries"] = json!([e]);
    let r = reason(run(
        &p,
        &m,
        &d,
        &[sig_art, referrer_manifest(&att, &d, m.len())],
    ));
    assert!(matches!(r, Failure::BadSet(_)), "{r:?}");
}

#[test]
fn every_byte_of_a_bundle_altered_never_panics_nor_changes_who_signed() {
    let w = World::new();
    let p = w.policy(json!({"tlog": "required"}));
    let (m, d) = subject_manifest("flips");
    let b = serde_json::to_vec(&w.message_bundle(&m, |body| vec![w.entry(body, 1, 3, true, true)]))
        .unwrap();
    let (mut refused, mut accepted) = (0, 0);
    for i in 0..b.len() {
        for bit in [0x01u8, 0x20, 0x80] {
            let mut v = b.clone();
            v[i] ^= bit;
            // Re-pinned: the referrer manifest names the altered blob.
            let Ok(value) = serde_json::from_slice::<Value>(&v) else {
                refused += 1;
                continue;
            };
            match run(&p, &m, &d, &[referrer_manifest(&value, &d, m.len())]) {
                Ok(Decision::Verified(verdict)) => {
                    accepted += 1;
                    assert_eq!(verdict.subject, d);
                    assert_eq!(
                        verdict.satisfied_by,
                        SatisfiedBy::Identity {
                            issuer: ISSUER.into(),
                            subject: SAN.into()
                        }
                    );
                }
                Ok(other) => panic!("byte {i}: {other:?}"),
                Err(_) => refused += 1,
            }
        }
    }
    // Most alterations are refused; the few accepted ones change nothing
    // that is signed (e.g. a renamed optional key such as the promise,
    // while the inclusion proof still proves the entry).
    eprintln!(
        "{} alterations: refused {refused}, accepted {accepted}",
        3 * b.len()
    );
    assert!(
        refused > accepted * 10,
        "refused {refused}, accepted {accepted}"
    );
}
