//! Key-based cosign signatures made by openssl (`openssl dgst -sha256
//! -sign`, the format cosign documents for key-based signing), in the cosign
//! tag scheme: accepted with the right key of every supported type, refused
//! otherwise, with the named reason.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::collections::BTreeMap;

use common::*;
use ferry_trust::{
    verify_subject_at, Decision, Failure, Format, SatisfiedBy, SignatureArtifact, Subject,
    TrustError,
};
use serde_json::json;

const ALGS: [Alg; 4] = [Alg::P256, Alg::P384, Alg::Rsa, Alg::Ed25519];

fn verify(
    p: &ferry_trust::Policy,
    repo: &str,
    manifest: &[u8],
    digest: &str,
    arts: &[Art],
) -> Result<Decision, TrustError> {
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
        repo,
        Subject { digest, manifest },
        &a,
        NOW,
    )
}

fn key_policy(dir: &std::path::Path, key: &Key, extra: serde_json::Value) -> ferry_trust::Policy {
    let path = write(dir, &format!("{}.pub", key.key_id()), &key.public_pem);
    let mut rule = json!({"match": "registry.test/**", "keys": [path]});
    if let serde_json::Value::Object(m) = extra {
        for (k, v) in m {
            rule[k] = v;
        }
    }
    policy(dir, json!({"rules": [rule]}))
}

fn reason(r: Result<Decision, TrustError>) -> Failure {
    match r {
        Err(e) => *e.reason,
        Ok(d) => panic!("expected a refusal, got {d:?}"),
    }
}

#[test]
fn accepted_with_the_right_key_of_every_type() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ALGS {
        let key = Key::generate(dir.path(), &format!("{alg:?}"), alg);
        let p = key_policy(dir.path(), &key, json!({}));
        let (m, d) = subject_manifest(&format!("{alg:?}"));
        let payload = simple_signing(&d, None);
        let sig = key.sign(&payload);
        let art = cosign_manifest(&[SigLayer::new(payload, sig)]);
        let artifact_digest = digest(&art.0);
        match verify(&p, "app", &m, &d, &[art]) {
            Ok(Decision::Verified(v)) => {
                assert_eq!(v.subject, d);
                assert_eq!(v.rule, "registry.test/**");
                assert_eq!(v.format, Format::CosignTag);
                assert_eq!(v.artifact, artifact_digest);
                assert_eq!(v.log_index, None);
                match v.satisfied_by {
                    SatisfiedBy::Key { key_id, .. } => assert_eq!(key_id, key.key_id(), "{alg:?}"),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{alg:?}: {other:?}"),
        }
    }
}

#[test]
fn unsigned_is_refused_and_so_is_a_non_signature_referrer() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let p = key_policy(dir.path(), &key, json!({}));
    let (m, d) = subject_manifest("unsigned");
    assert_eq!(reason(verify(&p, "app", &m, &d, &[])), Failure::NoSignature);
    // An SBOM layer is not a signature.
    let sbom = b"{\"spdxVersion\":\"SPDX-2.3\"}".to_vec();
    let mut layer = SigLayer::new(sbom, Vec::new());
    layer.media_type = "application/spdx+json";
    let art = cosign_manifest(&[layer]);
    let err = verify(&p, "app", &m, &d, &[art]).unwrap_err();
    assert_eq!(*err.reason, Failure::NoSignature);
    let text = err.to_string();
    assert!(
        text.contains(&d) && text.contains("registry.test/**") && text.contains("no signature"),
        "{text}"
    );
}

#[test]
fn another_key_is_refused_for_every_type() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ALGS {
        let trusted = Key::generate(dir.path(), &format!("trusted-{alg:?}"), alg);
        for other_alg in ALGS {
            let other = Key::generate(
                dir.path(),
                &format!("other-{alg:?}-{other_alg:?}"),
                other_alg,
            );
            let p = key_policy(dir.path(), &trusted, json!({}));
            let (m, d) = subject_manifest("x");
            let payload = simple_signing(&d, None);
            let sig = other.sign(&payload);
            let r = reason(verify(
                &p,
                "app",
                &m,
                &d,
                &[cosign_manifest(&[SigLayer::new(payload, sig)])],
            ));
            assert!(
                matches!(r, Failure::WrongKey { ref keys } if keys.contains(&trusted.key_id())),
                "{alg:?}/{other_alg:?}: {r:?}"
            );
        }
    }
}

#[test]
fn a_payload_naming_another_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ALGS {
        let key = Key::generate(dir.path(), &format!("{alg:?}"), alg);
        let p = key_policy(dir.path(), &key, json!({}));
        let (m, d) = subject_manifest("real");
        let (_, other) = subject_manifest("other");
        let payload = simple_signing(&other, None);
        let sig = key.sign(&payload);
        let r = reason(verify(
            &p,
            "app",
            &m,
            &d,
            &[cosign_manifest(&[SigLayer::new(payload, sig)])],
        ));
        assert_eq!(
            r,
            Failure::PayloadDigestMismatch {
                expected: d.clone(),
                found: other.clone()
            },
            "{alg:?}"
        );
    }
}

#[test]
fn altered_signatures_payloads_and_blobs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let p = key_policy(dir.path(), &key, json!({}));
    let (m, d) = subject_manifest("alter");
    let payload = simple_signing(&d, None);
    let sig = key.sign(&payload);
    // Every single-byte change of the signature, every truncation.
    for i in 0..sig.len() {
        let mut s = sig.clone();
        s[i] ^= 0x01;
        let r = reason(verify(
            &p,
            "app",
            &m,
            &d,
            &[cosign_manifest(&[SigLayer::new(payload.clone(), s)])],
        ));
        assert!(matches!(r, Failure::WrongKey { .. }), "flip {i}: {r:?}");
        let r = reason(verify(
            &p,
            "app",
            &m,
            &d,
            &[cosign_manifest(&[SigLayer::new(
                payload.clone(),
                sig[..i].to_vec(),
            )])],
        ));
        assert!(matches!(r, Failure::WrongKey { .. }), "truncate {i}: {r:?}");
    }
    // A payload re-pinned (its digest updated in the manifest) but not
    // re-signed: every byte position flipped.
    for i in (0..payload.len()).step_by(7) {
        let mut pl = payload.clone();
        pl[i] ^= 0x20;
        let r = reason(verify(
            &p,
            "app",
            &m,
            &d,
            &[cosign_manifest(&[SigLayer::new(pl, sig.clone())])],
        ));
        assert!(
            matches!(r, Failure::WrongKey { .. } | Failure::Malformed(_)),
            "payload byte {i}: {r:?}"
        );
    }
    // A blob swapped under its descriptor: the digest check refuses it.
    let (man, mut blobs) = cosign_manifest(&[SigLayer::new(payload.clone(), sig.clone())]);
    let pd = digest(&payload);
    blobs.insert(
        pd.clone(),
        simple_signing(&d, Some(BTreeMap::from([("x", "y")]))),
    );
    let r = reason(verify(&p, "app", &m, &d, &[(man.clone(), blobs)]));
    assert!(
        matches!(r, Failure::Malformed(ref s) if s.contains(&pd)),
        "{r:?}"
    );
    // A blob missing.
    let r = reason(verify(&p, "app", &m, &d, &[(man, BTreeMap::new())]));
    assert!(
        matches!(r, Failure::Malformed(ref s) if s.contains("not carried")),
        "{r:?}"
    );
    // Signature annotation not base64, manifest not JSON.
    for bad in [b"not json".to_vec(), b"{\"layers\": 5}".to_vec()] {
        let r = reason(verify(&p, "app", &m, &d, &[(bad, BTreeMap::new())]));
        assert!(matches!(r, Failure::Malformed(_)), "{r:?}");
    }
    // The subject bytes must be the subject's.
    let r = reason(verify(
        &p,
        "app",
        b"{}",
        &d,
        &[cosign_manifest(&[SigLayer::new(payload, sig)])],
    ));
    assert!(
        matches!(r, Failure::Malformed(ref s) if s.contains("hash to")),
        "{r:?}"
    );
}

#[test]
fn one_good_signature_among_bad_ones_is_enough() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let other = Key::generate(dir.path(), "o", Alg::P256);
    let p = key_policy(dir.path(), &key, json!({}));
    let (m, d) = subject_manifest("many");
    let payload = simple_signing(&d, None);
    let bad = SigLayer::new(payload.clone(), other.sign(&payload));
    let good = SigLayer::new(payload.clone(), key.sign(&payload));
    let arts = [cosign_manifest(&[bad, good])];
    assert!(matches!(
        verify(&p, "app", &m, &d, &arts),
        Ok(Decision::Verified(_))
    ));
    // A malformed artifact next to a good one (a broken tool's leftover
    // upstream) does not hide the good one.
    let arts = [(b"not json".to_vec(), BTreeMap::new()), arts[0].clone()];
    assert!(matches!(
        verify(&p, "app", &m, &d, &arts),
        Ok(Decision::Verified(_))
    ));
    // The same within one manifest: a layer with a broken Rekor bundle
    // annotation next to a good layer.
    let mut broken = SigLayer::new(payload.clone(), key.sign(&payload));
    broken.rekor_bundle = Some(json!("not a Rekor bundle"));
    let good = SigLayer::new(payload.clone(), key.sign(&payload));
    let one = [cosign_manifest(&[broken, good])];
    assert!(matches!(
        verify(&p, "app", &m, &d, &one),
        Ok(Decision::Verified(_))
    ));
    // Alone, each is a failure, not "unsigned".
    let r = reason(verify(&p, "app", &m, &d, &arts[..1]));
    assert!(matches!(r, Failure::Malformed(_)), "{r:?}");
    let mut broken = SigLayer::new(payload.clone(), key.sign(&payload));
    broken.rekor_bundle = Some(json!("not a Rekor bundle"));
    let r = reason(verify(&p, "app", &m, &d, &[cosign_manifest(&[broken])]));
    assert!(
        matches!(r, Failure::Malformed(ref s) if s.contains("dev.sigstore.cosign/bundle")),
        "{r:?}"
    );
    // Two bad ones: the error says one more failed.
    let b1 = SigLayer::new(payload.clone(), other.sign(&payload));
    let (_, od) = subject_manifest("elsewhere");
    let p2 = simple_signing(&od, None);
    let b2 = SigLayer::new(p2.clone(), key.sign(&p2));
    let err = verify(
        &p,
        "app",
        &m,
        &d,
        &[cosign_manifest(&[b1]), cosign_manifest(&[b2])],
    )
    .unwrap_err();
    // The one that got furthest (right key, wrong digest) is reported.
    assert!(
        matches!(*err.reason, Failure::PayloadDigestMismatch { .. }),
        "{err}"
    );
    assert_eq!(err.others, 1);
    assert!(err.to_string().contains("1 other signature"), "{err}");
}

#[test]
fn annotations_must_all_match() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let p = key_policy(
        dir.path(),
        &key,
        json!({"annotations": {"env": "prod", "team": "platform"}}),
    );
    let (m, d) = subject_manifest("ann");
    #[allow(clippy::type_complexity)]
    let cases: Vec<(Option<BTreeMap<&str, &str>>, Option<(&str, Option<&str>)>)> = vec![
        (
            Some(BTreeMap::from([("env", "prod"), ("team", "platform")])),
            None,
        ),
        (
            Some(BTreeMap::from([
                ("env", "prod"),
                ("team", "platform"),
                ("extra", "ok"),
            ])),
            None,
        ),
        (
            Some(BTreeMap::from([("env", "dev"), ("team", "platform")])),
            Some(("env", Some("dev"))),
        ),
        (
            Some(BTreeMap::from([("env", "prod")])),
            Some(("team", None)),
        ),
        (
            Some(BTreeMap::from([("env", "prod "), ("team", "platform")])),
            Some(("env", Some("prod "))),
        ),
        (None, Some(("env", None))),
    ];
    for (ann, want) in cases {
        let payload = simple_signing(&d, ann.clone());
        let sig = key.sign(&payload);
        let r = verify(
            &p,
            "app",
            &m,
            &d,
            &[cosign_manifest(&[SigLayer::new(payload, sig)])],
        );
        match want {
            None => assert!(matches!(r, Ok(Decision::Verified(_))), "{ann:?}: {r:?}"),
            Some((k, found)) => assert_eq!(
                reason(r),
                Failure::AnnotationMismatch {
                    key: k.into(),
                    expected: if k == "env" {
                        "prod".into()
                    } else {
                        "platform".into()
                    },
                    found: found.map(String::from)
                },
                "{ann:?}"
            ),
        }
    }
}

#[test]
fn warn_mode_returns_the_failure_as_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let other = Key::generate(dir.path(), "o", Alg::P256);
    let p = key_policy(dir.path(), &key, json!({"mode": "warn"}));
    let (m, d) = subject_manifest("warn");
    let payload = simple_signing(&d, None);
    let arts = [cosign_manifest(&[SigLayer::new(
        payload.clone(),
        other.sign(&payload),
    )])];
    match verify(&p, "app", &m, &d, &arts) {
        Ok(Decision::Warned(e)) => {
            assert!(matches!(*e.reason, Failure::WrongKey { .. }));
            assert_eq!(e.rule, "registry.test/**");
        }
        other => panic!("{other:?}"),
    }
    match verify(&p, "app", &m, &d, &[]) {
        Ok(Decision::Warned(e)) => assert_eq!(*e.reason, Failure::NoSignature),
        other => panic!("{other:?}"),
    }
    // A good signature in warn mode is a plain verdict.
    let good = [cosign_manifest(&[SigLayer::new(
        payload.clone(),
        key.sign(&payload),
    )])];
    assert!(matches!(
        verify(&p, "app", &m, &d, &good),
        Ok(Decision::Verified(_))
    ));
    // The warning serialises (it goes into bundle.json).
    let j = serde_json::to_value(verify(&p, "app", &m, &d, &arts).unwrap()).unwrap();
    assert_eq!(j["decision"], "warned");
    assert_eq!(j["reason"]["reason"], "wrong-key");
}

#[test]
fn unsigned_allow_lets_only_unsigned_content_through() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let other = Key::generate(dir.path(), "o", Alg::P256);
    let kp = write(dir.path(), "k.pub", &key.public_pem);
    let p = policy(
        dir.path(),
        json!({"rules": [
            {"match": "registry.test/**", "keys": [kp]},
            {"match": "registry.test/third-party/*", "keys": [kp], "unsigned": "allow"},
            {"match": "registry.test/vendor/blob", "unsigned": "allow"},
        ]}),
    );
    let (m, d) = subject_manifest("tp");
    match verify(&p, "third-party/redis", &m, &d, &[]) {
        Ok(Decision::AllowedUnsigned { rule }) => assert_eq!(rule, "registry.test/third-party/*"),
        other => panic!("{other:?}"),
    }
    match verify(&p, "vendor/blob", &m, &d, &[]) {
        Ok(Decision::AllowedUnsigned { rule }) => assert_eq!(rule, "registry.test/vendor/blob"),
        other => panic!("{other:?}"),
    }
    // Not named: refused.
    assert_eq!(reason(verify(&p, "app", &m, &d, &[])), Failure::NoSignature);
    // `*` does not cross `/`: a deeper repository falls to the broad rule.
    assert_eq!(
        reason(verify(&p, "third-party/x/redis", &m, &d, &[])),
        Failure::NoSignature
    );
    // Signed content under an allow rule is still checked.
    let payload = simple_signing(&d, None);
    let bad = [cosign_manifest(&[SigLayer::new(
        payload.clone(),
        other.sign(&payload),
    )])];
    assert!(matches!(
        reason(verify(&p, "third-party/redis", &m, &d, &bad)),
        Failure::WrongKey { .. }
    ));
    let good = [cosign_manifest(&[SigLayer::new(
        payload.clone(),
        key.sign(&payload),
    )])];
    assert!(matches!(
        verify(&p, "third-party/redis", &m, &d, &good),
        Ok(Decision::Verified(_))
    ));
    // A rule with nothing to check against refuses a carried signature.
    assert!(matches!(
        reason(verify(&p, "vendor/blob", &m, &d, &good)),
        Failure::NoMaterial(_)
    ));
}

#[test]
fn no_matching_rule_checks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let kp = write(dir.path(), "k.pub", &key.public_pem);
    let p = policy(
        dir.path(),
        json!({"rules": [{"match": "registry.test/app", "keys": [kp]}]}),
    );
    let (m, d) = subject_manifest("nr");
    for repo in ["app2", "ap", "app/x", "App"] {
        assert!(
            matches!(verify(&p, repo, &m, &d, &[]), Ok(Decision::NoRule)),
            "{repo}"
        );
    }
    assert!(verify(&p, "app", &m, &d, &[]).is_err());
}

#[test]
fn key_signature_with_a_rekor_set() {
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let log = Log::new(dir.path(), "rekor");
    let other_log = Log::new(dir.path(), "rogue");
    let root = write(dir.path(), "trusted_root.json", &trusted_root(&[], &[&log]));
    let kp = write(dir.path(), "k.pub", &key.public_pem);
    let p = policy(
        dir.path(),
        json!({"trustedRoot": root, "rules": [{"match": "registry.test/**", "keys": [kp], "tlog": "required"}]}),
    );
    let (m, d) = subject_manifest("set");
    let payload = simple_signing(&d, None);
    let sig = key.sign(&payload);
    let body = hashedrekord(&sig, &payload, &key.public_pem);
    let with = |b: serde_json::Value| {
        let mut l = SigLayer::new(payload.clone(), sig.clone());
        l.rekor_bundle = Some(b);
        vec![cosign_manifest(&[l])]
    };
    match verify(
        &p,
        "app",
        &m,
        &d,
        &with(log.cosign_bundle(&body, EPOCH_2020 + 1000, 42)),
    ) {
        Ok(Decision::Verified(v)) => {
            assert_eq!(v.log_index, Some(42));
            assert_eq!(v.integrated_time, Some(EPOCH_2020 + 1000));
        }
        other => panic!("{other:?}"),
    }
    // No entry: tlog required.
    let r = reason(verify(
        &p,
        "app",
        &m,
        &d,
        &[cosign_manifest(&[SigLayer::new(
            payload.clone(),
            sig.clone(),
        )])],
    ));
    assert_eq!(r, Failure::TlogRequired);
    // Entry signed by a log not in the trusted root.
    let r = reason(verify(
        &p,
        "app",
        &m,
        &d,
        &with(other_log.cosign_bundle(&body, EPOCH_2020 + 1000, 42)),
    ));
    assert!(
        matches!(r, Failure::BadSet(ref s) if s.contains("not a log of the trusted root")),
        "{r:?}"
    );
    // Each field of the promise changed after signing.
    let good = log.cosign_bundle(&body, EPOCH_2020 + 1000, 42);
    for (field, value) in [
        ("integratedTime", json!(EPOCH_2020 + 1001)),
        ("logIndex", json!(43)),
        (
            "body",
            json!(base64_of(
                &hashedrekord(&sig, &payload, &key.public_pem)[1..]
            )),
        ),
    ] {
        let mut b = good.clone();
        b["Payload"][field] = value;
        let r = reason(verify(&p, "app", &m, &d, &with(b)));
        assert!(matches!(r, Failure::BadSet(_)), "{field}: {r:?}");
    }
    // A valid SET for another signature's entry (the body binds it).
    let other_body = hashedrekord(
        &key.sign(b"something else"),
        b"something else",
        &key.public_pem,
    );
    let r = reason(verify(
        &p,
        "app",
        &m,
        &d,
        &with(log.cosign_bundle(&other_body, EPOCH_2020 + 1000, 7)),
    ));
    assert!(
        matches!(r, Failure::BadSet(ref s) if s.contains("does not match the signature")),
        "{r:?}"
    );
    // A log entry dated before the log key's validity.
    let r = reason(verify(
        &p,
        "app",
        &m,
        &d,
        &with(log.cosign_bundle(&body, EPOCH_2020 - 10, 42)),
    ));
    assert!(
        matches!(r, Failure::BadSet(ref s) if s.contains("validity")),
        "{r:?}"
    );
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn a_signature_on_a_platform_child_does_not_satisfy_the_index() {
    // The rule applies to the digest as bundled: for a multi-arch image the
    // index. A signature of one platform manifest says nothing about the
    // others, nor about the index that binds them.
    let dir = tempfile::tempdir().unwrap();
    let key = Key::generate(dir.path(), "k", Alg::P256);
    let p = key_policy(dir.path(), &key, json!({}));
    let (child, child_d) = subject_manifest("linux/amd64");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": child_d, "size": child.len(),
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    }))
    .unwrap();
    let index_d = digest(&index);
    let payload = simple_signing(&child_d, None);
    let child_sig = cosign_manifest(&[SigLayer::new(payload.clone(), key.sign(&payload))]);
    // The child's signature verifies for the child…
    assert!(matches!(
        verify(
            &p,
            "app",
            &child,
            &child_d,
            std::slice::from_ref(&child_sig)
        ),
        Ok(Decision::Verified(_))
    ));
    // …and not for the index.
    let r = reason(verify(&p, "app", &index, &index_d, &[child_sig]));
    assert_eq!(
        r,
        Failure::PayloadDigestMismatch {
            expected: index_d.clone(),
            found: child_d.clone()
        }
    );
    // The index signed: verified.
    let payload = simple_signing(&index_d, None);
    let index_sig = cosign_manifest(&[SigLayer::new(payload.clone(), key.sign(&payload))]);
    assert!(matches!(
        verify(&p, "app", &index, &index_d, &[index_sig]),
        Ok(Decision::Verified(_))
    ));
}
