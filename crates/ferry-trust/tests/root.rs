//! Trusted roots: Sigstore's own (public-good and staging, as shipped by
//! sigstore-python 4.5.1 in its embedded TUF store), and hostile variants.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::*;
use ferry_trust::TrustedRoot;
use serde_json::{json, Value};

const PUBLIC_GOOD: &[u8] = include_bytes!("data/public-good-trusted_root.json");
const STAGING: &[u8] = include_bytes!("data/staging-trusted_root.json");

#[test]
fn sigstores_own_trusted_roots_parse() {
    let r = TrustedRoot::from_bytes(PUBLIC_GOOD).unwrap();
    assert_eq!(r.bytes(), PUBLIC_GOOD);
    assert_eq!(r.certificate_authorities.len(), 2);
    assert_eq!(r.tlogs.len(), 2, "{:?}", r.skipped);
    assert_eq!(r.ctlogs.len(), 2);
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    // The first Fulcio CA was retired at the end of 2022.
    let first = &r.certificate_authorities[0];
    assert!(first.valid_for.contains(1_650_000_000));
    assert!(!first.valid_for.contains(1_700_000_000));
    // Rekor v1's log id is the sha256 of its key (c0d23d6a…); Rekor v2's
    // (Ed25519) is derived otherwise: the id is taken from the file.
    assert_eq!(hex::encode(&r.tlogs[0].log_id), r.tlogs[0].key.key_id());
    assert!(hex::encode(&r.tlogs[0].log_id).starts_with("c0d23d6a"));
    for l in &r.tlogs {
        assert!(std::ptr::eq(r.tlog(&l.log_id).unwrap(), l));
    }
    // Staging lists a CT key in PKCS#1 form: left out, named, the rest kept.
    let s = TrustedRoot::from_bytes(STAGING).unwrap();
    assert_eq!(s.tlogs.len(), 4);
    assert_eq!(s.ctlogs.len(), 3);
    assert_eq!(s.skipped.len(), 1);
    assert!(s.skipped[0].starts_with("ctlogs[0]"), "{:?}", s.skipped);
}

#[test]
fn hostile_trusted_roots_are_refused_naming_the_field() {
    let base: Value = serde_json::from_slice(PUBLIC_GOOD).unwrap();
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "media type",
            |v| v["mediaType"] = json!("application/json"),
            "media type",
        ),
        (
            "tlog key base64",
            |v| v["tlogs"][0]["publicKey"]["rawBytes"] = json!("!!"),
            "tlogs[0].publicKey.rawBytes",
        ),
        (
            "log id base64",
            |v| v["tlogs"][1]["logId"]["keyId"] = json!("%%"),
            "tlogs[1].logId.keyId",
        ),
        (
            "no validity",
            |v| {
                v["tlogs"][0]["publicKey"]
                    .as_object_mut()
                    .unwrap()
                    .remove("validFor");
            },
            "tlogs[0].publicKey.validFor: missing",
        ),
        (
            "end before start",
            |v| v["tlogs"][0]["publicKey"]["validFor"]["end"] = json!("2020-01-01T00:00:00Z"),
            "end is not after start",
        ),
        (
            "bad time",
            |v| v["certificateAuthorities"][1]["validFor"]["start"] = json!("yesterday"),
            "certificateAuthorities[1].validFor",
        ),
        (
            "certificate not DER",
            |v| {
                v["certificateAuthorities"][0]["certChain"]["certificates"][0]["rawBytes"] =
                    json!("AAAA")
            },
            "certificateAuthorities[0].certChain.certificates[0]",
        ),
        (
            "empty chain",
            |v| v["certificateAuthorities"][0]["certChain"]["certificates"] = json!([]),
            "no certificates",
        ),
        (
            "not an object",
            |v| *v = json!([1, 2]),
            "not a Sigstore trusted root",
        ),
    ];
    for (name, mutate, want) in cases {
        let mut v = base.clone();
        mutate(&mut v);
        let err = TrustedRoot::from_bytes(&serde_json::to_vec(&v).unwrap())
            .expect_err(name)
            .to_string();
        assert!(err.contains(want), "{name}: {err}");
    }
    let end = PUBLIC_GOOD.trim_ascii_end().len();
    for cut in (0..end).step_by(13).chain([end - 1]) {
        assert!(
            TrustedRoot::from_bytes(&PUBLIC_GOOD[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn an_entry_of_a_left_out_log_does_not_verify() {
    // A log whose key ferry cannot use is left out of the root; a SET by it
    // is then refused, not trusted.
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let log = Log::new(dir.path(), "rekor");
    let mut root: Value = serde_json::from_slice(&trusted_root(&[], &[&log])).unwrap();
    // Replace the log's key by a secp256k1 key (not supported), keeping its id.
    let k1 = dir.path().join("k1.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:secp256k1",
            "-out",
        ])
        .arg(&k1)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let der = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&k1)
        .output()
        .unwrap()
        .stdout;
    use base64::Engine as _;
    root["tlogs"][0]["publicKey"]["rawBytes"] =
        json!(base64::engine::general_purpose::STANDARD.encode(der));
    let rp = write(dir.path(), "tr.json", &serde_json::to_vec(&root).unwrap());
    let parsed = TrustedRoot::from_bytes(&std::fs::read(dir.path().join(&rp)).unwrap()).unwrap();
    assert!(parsed.tlogs.is_empty());
    assert!(
        parsed.skipped[0].contains("unsupported"),
        "{:?}",
        parsed.skipped
    );
    let kp = write(dir.path(), "k.pub", &key.public_pem);
    let p = policy(
        dir.path(),
        json!({"trustedRoot": rp, "rules": [{"match": "**", "keys": [kp]}]}),
    );
    let (m, d) = subject_manifest("left out");
    let payload = simple_signing(&d, None);
    let sig = key.sign(&payload);
    let mut l = SigLayer::new(payload.clone(), sig.clone());
    l.rekor_bundle = Some(log.cosign_bundle(
        &hashedrekord(&sig, &payload, &key.public_pem),
        EPOCH_2020 + 5,
        1,
    ));
    let (man, blobs) = cosign_manifest(&[l]);
    let err = ferry_trust::verify_subject_at(
        &p,
        "r",
        "a",
        ferry_trust::Subject {
            digest: &d,
            manifest: &m,
        },
        &[ferry_trust::SignatureArtifact {
            manifest: &man,
            blobs: &blobs,
        }],
        NOW,
    )
    .unwrap_err();
    assert!(
        matches!(*err.reason, ferry_trust::Failure::BadSet(_)),
        "{err}"
    );
}
