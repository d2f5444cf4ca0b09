//! Keyless signatures: a private PKI shaped like Fulcio's (root,
//! intermediate, leaf with the SAN identity and the OIDC issuer extensions,
//! made by rcgen), signatures by openssl with the leaf's key, a fake Rekor
//! whose key signs SETs; checked against a matching trusted_root.json.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::*;
use ferry_trust::{
    verify_subject_at, Decision, Failure, Policy, SatisfiedBy, SignatureArtifact, Subject,
    TrustError,
};
use serde_json::{json, Value};

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const WORKFLOW: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0.0";
const LEAF_START: i64 = EPOCH_2020 + 365 * 86400; // 2021
const LEAF_END: i64 = LEAF_START + 600; // Fulcio leaves live ten minutes

struct World {
    dir: tempfile::TempDir,
    pki: Pki,
    log: Log,
    root_path: String,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new("fulcio");
        let log = Log::new(dir.path(), "rekor");
        let root_path = write(
            dir.path(),
            "trusted_root.json",
            &trusted_root(&[(&pki, EPOCH_2020, None)], &[&log]),
        );
        World {
            dir,
            pki,
            log,
            root_path,
        }
    }

    fn policy(&self, identities: Value, extra: Value) -> Policy {
        let mut rule = json!({"match": "registry.test/**", "identities": identities});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                rule[k] = v;
            }
        }
        policy(
            self.dir.path(),
            json!({"trustedRoot": self.root_path, "rules": [rule]}),
        )
    }

    fn leaf(&self, san: &str, issuer: &str, ext: IssuerExt) -> Leaf {
        self.pki
            .leaf(self.dir.path(), san, issuer, LEAF_START, LEAF_END, ext)
    }

    /// A `.sig` manifest signed by `leaf`, with a SET at `t` if given.
    fn signed(&self, leaf: &Leaf, digest: &str, set_at: Option<i64>) -> Art {
        let payload = simple_signing(digest, None);
        let sig = leaf.key.sign(&payload);
        let mut l = SigLayer::new(payload.clone(), sig.clone());
        l.certificate_pem = Some(leaf.pem.clone());
        l.chain_pem = Some(self.pki.chain_pem());
        if let Some(t) = set_at {
            let body = hashedrekord(&sig, &payload, leaf.pem.as_bytes());
            l.rekor_bundle = Some(self.log.cosign_bundle(&body, t, 1234));
        }
        cosign_manifest(&[l])
    }
}

fn run(p: &Policy, m: &[u8], d: &str, art: &Art, now: i64) -> Result<Decision, TrustError> {
    verify_subject_at(
        p,
        "registry.test",
        "app",
        Subject {
            digest: d,
            manifest: m,
        },
        &[SignatureArtifact {
            manifest: &art.0,
            blobs: &art.1,
        }],
        now,
    )
}

fn reason(r: Result<Decision, TrustError>) -> Failure {
    match r {
        Err(e) => *e.reason,
        Ok(d) => panic!("expected a refusal, got {d:?}"),
    }
}

#[test]
fn identity_rules_exact_regexp_wrong_subject_wrong_issuer() {
    let w = World::new();
    let (m, d) = subject_manifest("keyless");
    let during = LEAF_START + 60;
    // (SAN in the leaf, issuer in the leaf, extension form, identities, expected)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, &str, IssuerExt, Value, Result<(&str, &str), &str>)> = vec![
        (
            "dev@acme.test",
            "https://accounts.test",
            IssuerExt::Utf8,
            json!([{"issuer": "https://accounts.test", "subject": "dev@acme.test"}]),
            Ok(("https://accounts.test", "dev@acme.test")),
        ),
        (
            "dev@acme.test",
            "https://accounts.test",
            IssuerExt::Legacy,
            json!([{"issuer": "https://accounts.test", "subject": "dev@acme.test"}]),
            Ok(("https://accounts.test", "dev@acme.test")),
        ),
        (
            WORKFLOW,
            ISSUER,
            IssuerExt::Both,
            json!([{"issuer": ISSUER, "subjectRegExp": r"https://github\.com/acme/app/\.github/workflows/release\.yml@refs/tags/v.*"}]),
            Ok((ISSUER, WORKFLOW)),
        ),
        // The regexp is anchored: a prefix match is not enough.
        (
            WORKFLOW,
            ISSUER,
            IssuerExt::Utf8,
            json!([{"issuer": ISSUER, "subjectRegExp": r"https://github\.com/acme/app"}]),
            Err("identity"),
        ),
        (
            "dev@acme.test",
            "https://accounts.test",
            IssuerExt::Utf8,
            json!([{"issuer": "https://accounts.test", "subject": "ops@acme.test"}]),
            Err("identity"),
        ),
        (
            "dev@acme.test.evil",
            "https://accounts.test",
            IssuerExt::Utf8,
            json!([{"issuer": "https://accounts.test", "subjectRegExp": r"dev@acme\.test"}]),
            Err("identity"),
        ),
        (
            "dev@acme.test",
            "https://accounts.evil",
            IssuerExt::Utf8,
            json!([{"issuer": "https://accounts.test", "subject": "dev@acme.test"}]),
            Err("issuer"),
        ),
        (
            "dev@acme.test",
            "https://accounts.test/",
            IssuerExt::Legacy,
            json!([{"issuer": "https://accounts.test", "subject": "dev@acme.test"}]),
            Err("issuer"),
        ),
        // Second identity matches.
        (
            "dev@acme.test",
            "https://accounts.test",
            IssuerExt::Utf8,
            json!([{"issuer": ISSUER, "subject": "x@y"}, {"issuer": "https://accounts.test", "subject": "dev@acme.test"}]),
            Ok(("https://accounts.test", "dev@acme.test")),
        ),
    ];
    for (san, issuer, ext, ids, want) in cases {
        let p = w.policy(ids.clone(), json!({}));
        let leaf = w.leaf(san, issuer, ext);
        let art = w.signed(&leaf, &d, None);
        let r = run(&p, &m, &d, &art, during);
        match want {
            Ok((wi, ws)) => match r {
                Ok(Decision::Verified(v)) => assert_eq!(
                    v.satisfied_by,
                    SatisfiedBy::Identity {
                        issuer: wi.into(),
                        subject: ws.into()
                    },
                    "{san} {issuer}"
                ),
                other => panic!("{san} {issuer} {ids}: {other:?}"),
            },
            Err("identity") => {
                let r = reason(r);
                assert!(
                    matches!(r, Failure::IdentityMismatch { ref found, .. } if found == san),
                    "{san} {ids}: {r:?}"
                )
            }
            Err(_) => {
                let r = reason(r);
                assert!(
                    matches!(r, Failure::IssuerMismatch { ref found, .. } if found == issuer),
                    "{san} {issuer}: {r:?}"
                )
            }
        }
    }
}

#[test]
fn expired_leaf_without_a_log_entry_fails_and_with_one_passes() {
    let w = World::new();
    let (m, d) = subject_manifest("expiry");
    let p = w.policy(json!([{"issuer": ISSUER, "subject": WORKFLOW}]), json!({}));
    let leaf = w.leaf(WORKFLOW, ISSUER, IssuerExt::Utf8);
    // Now (2026) the ten-minute leaf of 2021 has expired.
    let no_entry = w.signed(&leaf, &d, None);
    let r = reason(run(&p, &m, &d, &no_entry, NOW));
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
    // Inside the leaf's ten minutes with no entry: accepted (time = now).
    assert!(matches!(
        run(&p, &m, &d, &no_entry, LEAF_START + 1),
        Ok(Decision::Verified(_))
    ));
    // With a log entry integrated while the leaf was valid: accepted now
    // (RFC 5280 validity includes both notBefore and notAfter).
    for t in [LEAF_START, LEAF_START + 1, LEAF_START + 300, LEAF_END] {
        match run(&p, &m, &d, &w.signed(&leaf, &d, Some(t)), NOW) {
            Ok(Decision::Verified(v)) => {
                assert_eq!(v.log_index, Some(1234));
                assert_eq!(v.integrated_time, Some(t));
            }
            other => panic!("t={t}: {other:?}"),
        }
    }
    // A log entry integrated after (or before) the leaf's validity.
    for t in [LEAF_END + 1, LEAF_END + 60, LEAF_START - 1, NOW] {
        let r = reason(run(&p, &m, &d, &w.signed(&leaf, &d, Some(t)), NOW));
        assert!(
            matches!(
                r,
                Failure::CertificateExpired {
                    with_log_entry: true,
                    ..
                }
            ),
            "t={t}: {r:?}"
        );
    }
    // tlog: required refuses the valid-now leaf without an entry.
    let p = w.policy(
        json!([{"issuer": ISSUER, "subject": WORKFLOW}]),
        json!({"tlog": "required"}),
    );
    assert_eq!(
        reason(run(&p, &m, &d, &no_entry, LEAF_START + 1)),
        Failure::TlogRequired
    );
}

#[test]
fn a_chain_from_an_untrusted_ca_is_refused() {
    let w = World::new();
    let rogue = Pki::new("rogue");
    let (m, d) = subject_manifest("rogue");
    let p = w.policy(json!([{"issuer": ISSUER, "subject": WORKFLOW}]), json!({}));
    let leaf = rogue.leaf(
        w.dir.path(),
        WORKFLOW,
        ISSUER,
        LEAF_START,
        LEAF_END,
        IssuerExt::Utf8,
    );
    let payload = simple_signing(&d, None);
    let sig = leaf.key.sign(&payload);
    let mut l = SigLayer::new(payload.clone(), sig.clone());
    l.certificate_pem = Some(leaf.pem.clone());
    // The rogue chain is carried; it is not trusted (only the trusted root's
    // chains are).
    l.chain_pem = Some(rogue.chain_pem());
    let body = hashedrekord(&sig, &payload, leaf.pem.as_bytes());
    l.rekor_bundle = Some(w.log.cosign_bundle(&body, LEAF_START + 5, 9));
    let art = cosign_manifest(&[l]);
    let r = reason(run(&p, &m, &d, &art, NOW));
    assert!(matches!(r, Failure::ChainNotTrusted(_)), "{r:?}");
}

#[test]
fn a_ca_outside_its_validity_in_the_trusted_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("fulcio");
    let log = Log::new(dir.path(), "rekor");
    // The CA was retired before the leaf was issued.
    let root = write(
        dir.path(),
        "tr.json",
        &trusted_root(&[(&pki, EPOCH_2020, Some(LEAF_START - 100))], &[&log]),
    );
    let p = policy(
        dir.path(),
        json!({"trustedRoot": root, "rules": [{"match": "**", "identities": [{"issuer": ISSUER, "subject": WORKFLOW}]}]}),
    );
    let (m, d) = subject_manifest("retired");
    let leaf = pki.leaf(
        dir.path(),
        WORKFLOW,
        ISSUER,
        LEAF_START,
        LEAF_END,
        IssuerExt::Utf8,
    );
    let payload = simple_signing(&d, None);
    let sig = leaf.key.sign(&payload);
    let mut l = SigLayer::new(payload.clone(), sig.clone());
    l.certificate_pem = Some(leaf.pem.clone());
    l.rekor_bundle = Some(log.cosign_bundle(
        &hashedrekord(&sig, &payload, leaf.pem.as_bytes()),
        LEAF_START + 5,
        9,
    ));
    let r = reason(run(&p, &m, &d, &cosign_manifest(&[l]), NOW));
    assert!(
        matches!(r, Failure::ChainNotTrusted(ref s) if s.contains("no certificate authority")),
        "{r:?}"
    );
}

#[test]
fn a_signature_not_made_by_the_certificate_key_is_refused() {
    let w = World::new();
    let (m, d) = subject_manifest("swap");
    let p = w.policy(json!([{"issuer": ISSUER, "subject": WORKFLOW}]), json!({}));
    let leaf = w.leaf(WORKFLOW, ISSUER, IssuerExt::Utf8);
    let thief = Key::generate(w.dir.path(), "thief", Alg::P256);
    let payload = simple_signing(&d, None);
    let mut l = SigLayer::new(payload.clone(), thief.sign(&payload));
    l.certificate_pem = Some(leaf.pem.clone());
    assert_eq!(
        reason(run(&p, &m, &d, &cosign_manifest(&[l]), LEAF_START + 1)),
        Failure::BadSignature
    );
    // No certificate at all, and no keys in the rule.
    let l = SigLayer::new(payload.clone(), leaf.key.sign(&payload));
    let r = reason(run(&p, &m, &d, &cosign_manifest(&[l]), LEAF_START + 1));
    assert!(matches!(r, Failure::NoMaterial(_)), "{r:?}");
}

#[test]
fn policy_errors_name_the_rule_and_the_key() {
    let w = World::new();
    let dir = w.dir.path();
    let k = Key::generate(dir, "k", Alg::P256);
    let kp = write(dir, "k.pub", &k.public_pem);
    write(
        dir,
        "garbage.pub",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"rules": [{"match": "a/*", "identities": [{"issuer": "i", "subject": "s"}]}]}),
            "verify rule `a/*`: identities: keyless identities need `trustedRoot`",
        ),
        (
            json!({"rules": [{"match": "a/*", "keys": [kp], "tlog": "required"}]}),
            "verify rule `a/*`: tlog:",
        ),
        (
            json!({"trustedRoot": w.root_path, "rules": [{"match": "a/*", "identities": [{"issuer": "i", "subjectRegExp": "("}]}]}),
            "verify rule `a/*`: identities[0].subjectRegExp:",
        ),
        (
            json!({"trustedRoot": w.root_path, "rules": [{"match": "a/*", "identities": [{"issuer": "i"}]}]}),
            "verify rule `a/*`: identities[0]: needs",
        ),
        (
            json!({"trustedRoot": w.root_path, "rules": [{"match": "a/*", "identities": [{"issuer": "i", "subject": "s", "subjectRegExp": "s"}]}]}),
            "not both",
        ),
        (
            json!({"trustedRoot": w.root_path, "rules": [{"match": "a/*", "identities": [{"issuer": "", "subject": "s"}]}]}),
            "identities[0].issuer: empty",
        ),
        (
            json!({"rules": [{"match": "a/*", "keys": ["missing.pub"]}]}),
            "verify rule `a/*`: keys[0]: missing.pub:",
        ),
        (
            json!({"rules": [{"match": "a/*", "keys": [kp, "garbage.pub"]}]}),
            "verify rule `a/*`: keys[1]: garbage.pub:",
        ),
        (
            json!({"rules": [{"match": "a/*"}]}),
            "verify rule `a/*`: keys: a rule needs",
        ),
        (
            json!({"rules": [{"match": "a/*", "unsigned": "allow", "annotations": {"a": "b"}}]}),
            "verify rule `a/*`: annotations: has no effect",
        ),
        (
            json!({"rules": [{"match": "a/[", "keys": [kp]}]}),
            "verify rule `a/[`: match:",
        ),
        (
            json!({"rules": [{"match": "", "keys": [kp]}]}),
            "match: empty",
        ),
        (
            json!({"rules": [{"match": "a\u{7}b", "keys": [kp]}]}),
            "control character",
        ),
        (
            json!({"rules": [{"match": "a/*", "keys": [kp]}, {"match": "a/*", "keys": [kp]}]}),
            "appears twice",
        ),
        (json!({"rules": []}), "`rules` is empty"),
        (
            json!({"trustedRoot": "k.pub", "rules": [{"match": "a", "keys": [kp]}]}),
            "trustedRoot k.pub:",
        ),
    ];
    for (spec, want) in cases {
        let spec: ferry_trust::VerifySpec =
            serde_json::from_value(spec.clone()).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let err = Policy::load_from_dir(&spec, dir)
            .expect_err(want)
            .to_string();
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }
    // Unknown keys are refused at every level, naming the key.
    for (spec, key) in [
        (r#"{"rules": [], "rule": 1}"#, "rule"),
        (r#"{"rules": [{"match": "a", "key": ["x"]}]}"#, "key"),
        (
            r#"{"rules": [{"match": "a", "keys": [], "identities": [{"issuer": "i", "subjectRegex": "x"}]}]}"#,
            "subjectRegex",
        ),
        (r#"{"rules": [{"match": "a", "mode": "audit"}]}"#, "audit"),
        (r#"{"rules": [{"match": "a", "tlog": "yes"}]}"#, "yes"),
        (r#"{"rules": [{"match": "a", "unsigned": "true"}]}"#, "true"),
    ] {
        let err = ferry_trust::VerifySpec::from_json(spec)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn most_specific_rule_wins() {
    let dir = tempfile::tempdir().unwrap();
    let k = Key::generate(dir.path(), "k", Alg::P256);
    let kp = write(dir.path(), "k.pub", &k.public_pem);
    let rules: Vec<Value> = [
        "**",
        "docker.io/**",
        "docker.io/library/*",
        "docker.io/library/nginx",
        "docker.io/*/nginx",
        "ghcr.io/acme/*",
        "ghcr.io/acme/app-?",
        "ghcr.io/acme/app-[0-9]",
    ]
    .iter()
    .map(|m| json!({"match": m, "keys": [kp]}))
    .collect();
    let p = policy(dir.path(), json!({"rules": rules}));
    for (reg, repo, want) in [
        (
            "docker.io",
            "library/nginx",
            Some("docker.io/library/nginx"),
        ),
        ("docker.io", "library/redis", Some("docker.io/library/*")),
        ("docker.io", "bitnami/nginx", Some("docker.io/*/nginx")),
        ("docker.io", "bitnami/redis", Some("docker.io/**")),
        ("docker.io", "a/b/c", Some("docker.io/**")),
        ("quay.io", "x", Some("**")),
        ("ghcr.io", "acme/app-1", Some("ghcr.io/acme/app-?")),
        ("ghcr.io", "acme/app-x", Some("ghcr.io/acme/app-?")),
        ("ghcr.io", "acme/tool", Some("ghcr.io/acme/*")),
        ("ghcr.io", "acme/x/y", Some("**")),
    ] {
        assert_eq!(
            p.rule_for(reg, repo).map(|r| r.pattern.as_str()),
            want,
            "{reg}/{repo}"
        );
    }
    let p = policy(
        dir.path(),
        json!({"rules": [{"match": "ghcr.io/acme/*", "keys": [kp]}]}),
    );
    assert!(p.rule_for("ghcr.io", "acme/x/y").is_none());
    assert!(p.rule_for("ghcr.io.evil", "acme/x").is_none());
    // Materials are the exact key bytes, rebuildable offline.
    assert_eq!(p.materials().get(&kp), Some(&k.public_pem));
    let mats = p.materials().clone();
    let again = Policy::load(p.spec(), |path| {
        mats.get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::other("absent"))
    })
    .unwrap();
    assert_eq!(again.rules()[0].keys[0].1.key_id(), k.key_id());
}

#[test]
fn an_sct_is_required_when_the_trusted_root_lists_ct_logs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("fulcio");
    let log = Log::new(dir.path(), "rekor");
    let ct = Key::generate(dir.path(), "ct", Alg::P256);
    let rogue_ct = Key::generate(dir.path(), "rogue-ct", Alg::P256);
    let root = write(
        dir.path(),
        "tr.json",
        &trusted_root_ct(&[(&pki, EPOCH_2020, None)], &[&log], &[&ct]),
    );
    let p = policy(
        dir.path(),
        json!({"trustedRoot": root, "rules": [{"match": "**", "identities": [{"issuer": ISSUER, "subject": WORKFLOW}]}]}),
    );
    let (m, d) = subject_manifest("sct");
    let sign = |leaf: &Leaf| {
        let payload = simple_signing(&d, None);
        let mut l = SigLayer::new(payload.clone(), leaf.key.sign(&payload));
        l.certificate_pem = Some(leaf.pem.clone());
        cosign_manifest(&[l])
    };
    let during = LEAF_START + 60;
    let with_sct = pki.leaf_with_sct(dir.path(), WORKFLOW, ISSUER, LEAF_START, LEAF_END, &ct);
    assert!(matches!(
        run(&p, &m, &d, &sign(&with_sct), during),
        Ok(Decision::Verified(_))
    ));
    let without = w_leaf(&pki, dir.path());
    let r = reason(run(&p, &m, &d, &sign(&without), during));
    assert!(
        matches!(r, Failure::BadSct(ref s) if s.contains("0 SCT list extensions")),
        "{r:?}"
    );
    let rogue = pki.leaf_with_sct(
        dir.path(),
        WORKFLOW,
        ISSUER,
        LEAF_START,
        LEAF_END,
        &rogue_ct,
    );
    let r = reason(run(&p, &m, &d, &sign(&rogue), during));
    assert!(
        matches!(r, Failure::BadSct(ref s) if s.contains("not a CT log of the trusted root")),
        "{r:?}"
    );
    // An SCT dated before the CT log key's validity (which starts in 2020).
    let early = pki.leaf_with_sct(
        dir.path(),
        WORKFLOW,
        ISSUER,
        EPOCH_2020 - 1000,
        EPOCH_2020 + 1000,
        &ct,
    );
    let r = reason(run(&p, &m, &d, &sign(&early), EPOCH_2020 + 100));
    assert!(
        matches!(r, Failure::BadSct(ref s) if s.contains("validity")),
        "{r:?}"
    );
    // Without CT logs in the trusted root, an SCT is not required.
    let root2 = write(
        dir.path(),
        "tr2.json",
        &trusted_root(&[(&pki, EPOCH_2020, None)], &[&log]),
    );
    let p2 = policy(
        dir.path(),
        json!({"trustedRoot": root2, "rules": [{"match": "**", "identities": [{"issuer": ISSUER, "subject": WORKFLOW}]}]}),
    );
    assert!(matches!(
        run(&p2, &m, &d, &sign(&without), during),
        Ok(Decision::Verified(_))
    ));
}

fn w_leaf(pki: &Pki, dir: &std::path::Path) -> Leaf {
    pki.leaf(dir, WORKFLOW, ISSUER, LEAF_START, LEAF_END, IssuerExt::Both)
}
