//! Hostile signature artifacts: control characters in every string that is
//! printed, truncation at every offset, and the verdicts' serialisation.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::collections::BTreeMap;

use common::*;
use ferry_trust::{verify_subject_at, Decision, SignatureArtifact, Subject, TrustError};
use serde_json::json;

const CONTROLS: [char; 8] = ['\0', '\x07', '\x08', '\x1b', '\n', '\r', '\x7f', '\u{9b}'];

fn run(p: &ferry_trust::Policy, m: &[u8], d: &str, arts: &[Art]) -> Result<Decision, TrustError> {
    let a: Vec<SignatureArtifact<'_>> = arts
        .iter()
        .map(|(m, b)| SignatureArtifact {
            manifest: m,
            blobs: b,
        })
        .collect();
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

fn assert_printable(s: &str) {
    assert!(
        !s.chars().any(char::is_control),
        "control character printed: {s:?}"
    );
}

#[test]
fn control_characters_from_the_bundle_are_printed_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let kp = write(dir.path(), "k.pub", &key.public_pem);
    let p = policy(
        dir.path(),
        json!({"rules": [{"match": "**", "keys": [kp], "annotations": {"env": "prod"}}]}),
    );
    let (m, d) = subject_manifest("hostile");
    for c in CONTROLS {
        let mut cases: Vec<Art> = Vec::new();
        // A payload naming a digest with a control character, signed.
        let payload = simple_signing(&format!("sha256:{c}evil"), None);
        cases.push(cosign_manifest(&[SigLayer::new(
            payload.clone(),
            key.sign(&payload),
        )]));
        // An annotation value with one.
        let value = format!("pr{c}od");
        let payload = simple_signing(&d, Some(BTreeMap::from([("env", value.as_str())])));
        cases.push(cosign_manifest(&[SigLayer::new(
            payload.clone(),
            key.sign(&payload),
        )]));
        // A layer digest with one (the blob is "not carried").
        let (man, blobs) = cosign_manifest(&[SigLayer::new(payload.clone(), key.sign(&payload))]);
        let mut v: serde_json::Value = serde_json::from_slice(&man).unwrap();
        v["layers"][0]["digest"] = json!(format!("sha256:{c}x"));
        cases.push((serde_json::to_vec(&v).unwrap(), blobs));
        // A referrer whose subject has one.
        let b = json!({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": {}});
        cases.push(referrer_manifest(&b, &format!("sha256:{c}"), 1));
        // A bundle media type with one.
        let b = json!({"mediaType": format!("application/vnd.dev.sigstore.bundle.v0.3+json{c}"), "verificationMaterial": {}});
        cases.push(referrer_manifest(&b, &d, m.len()));
        // A log entry index with one.
        let mut l = SigLayer::new(payload.clone(), key.sign(&payload));
        l.rekor_bundle = Some(
            json!({"SignedEntryTimestamp": "", "Payload": {"body": "", "integratedTime": format!("1{c}"), "logIndex": 1, "logID": ""}}),
        );
        cases.push(cosign_manifest(&[l]));
        for (i, art) in cases.iter().enumerate() {
            let err = run(&p, &m, &d, std::slice::from_ref(art))
                .expect_err(&format!("case {i} with {c:?} refused"));
            assert_printable(&err.to_string());
        }
    }
}

#[test]
fn truncated_artifacts_are_refused_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let kp = write(dir.path(), "k.pub", &key.public_pem);
    let p = policy(
        dir.path(),
        json!({"rules": [{"match": "**", "keys": [kp]}]}),
    );
    let (m, d) = subject_manifest("truncate");
    let payload = simple_signing(&d, None);
    let (man, blobs) = cosign_manifest(&[SigLayer::new(payload.clone(), key.sign(&payload))]);
    assert!(matches!(
        run(&p, &m, &d, &[(man.clone(), blobs.clone())]),
        Ok(Decision::Verified(_))
    ));
    for cut in 0..man.len() {
        let r = run(&p, &m, &d, &[(man[..cut].to_vec(), blobs.clone())]);
        assert!(r.is_err(), "manifest cut at {cut}: {r:?}");
    }
    // The payload blob truncated and re-pinned (descriptor updated): the
    // signature no longer verifies or the payload no longer parses.
    for cut in 0..payload.len() {
        let short = payload[..cut].to_vec();
        let r = run(
            &p,
            &m,
            &d,
            &[cosign_manifest(&[SigLayer::new(short, key.sign(&payload))])],
        );
        assert!(r.is_err(), "payload cut at {cut}: {r:?}");
    }
}

#[test]
fn decisions_round_trip_through_json() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let kp = write(dir.path(), "k.pub", &key.public_pem);
    let p = policy(
        dir.path(),
        json!({"rules": [
            {"match": "registry.test/app", "keys": [kp]},
            {"match": "registry.test/warn", "keys": [kp], "mode": "warn"},
            {"match": "registry.test/free", "unsigned": "allow"},
        ]}),
    );
    let (m, d) = subject_manifest("json");
    let payload = simple_signing(&d, None);
    let good = cosign_manifest(&[SigLayer::new(payload.clone(), key.sign(&payload))]);
    let a = [SignatureArtifact {
        manifest: &good.0,
        blobs: &good.1,
    }];
    let s = Subject {
        digest: &d,
        manifest: &m,
    };
    let decisions = [
        verify_subject_at(&p, "registry.test", "app", s, &a, NOW).unwrap(),
        verify_subject_at(&p, "registry.test", "warn", s, &[], NOW).unwrap(),
        verify_subject_at(&p, "registry.test", "free", s, &[], NOW).unwrap(),
        verify_subject_at(&p, "other.test", "app", s, &[], NOW).unwrap(),
    ];
    let tags = ["verified", "warned", "allowed-unsigned", "no-rule"];
    for (dec, tag) in decisions.iter().zip(tags) {
        let j = serde_json::to_value(dec).unwrap();
        assert_eq!(j["decision"], tag, "{j}");
        let back: Decision = serde_json::from_value(j.clone()).unwrap();
        assert_eq!(&back, dec);
    }
    let j = serde_json::to_value(&decisions[0]).unwrap();
    assert_eq!(j["subject"], d);
    assert_eq!(j["satisfiedBy"]["by"], "key");
    assert_eq!(j["satisfiedBy"]["keyId"], key.key_id());
    assert_eq!(j["format"], "cosign-tag");
}
