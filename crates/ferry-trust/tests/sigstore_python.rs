//! Cross-check with an independent verifier: sigstore-python (the `sigstore`
//! package from PyPI) verifies offline against a custom trusted root. A
//! Sigstore bundle built from a Fulcio-shaped PKI (with an embedded SCT,
//! which sigstore-python requires), a fake Rekor (SET and inclusion proof)
//! and an openssl signature must be accepted by both; altered, it must be
//! refused by both.
//!
//! The Python environment: `FERRY_SIGSTORE_PYTHON` (a python with
//! `sigstore` installed), or a venv created under the target directory with
//! `pip install sigstore==4.5.1`. Only when pip cannot reach PyPI is the
//! test skipped, and it says so on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::PathBuf;
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use ferry_trust::{verify_subject_at, Decision, SatisfiedBy, SignatureArtifact, Subject};
use serde_json::{json, Value};

const ISSUER: &str = "https://accounts.test";
const SAN: &str = "release@acme.test";
const T0: i64 = EPOCH_2020 + 400 * 86400;

const SCRIPT: &str = r#"
import sys
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier
from sigstore.verify.policy import Identity
root = TrustedRoot.from_file(sys.argv[1])
bundle = Bundle.from_json(open(sys.argv[2], "rb").read())
artifact = open(sys.argv[3], "rb").read()
Verifier(trusted_root=root).verify_artifact(artifact, bundle, Identity(identity=sys.argv[4], issuer=sys.argv[5]))
print("sigstore-python: OK")
"#;

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FERRY_SIGSTORE_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sigstore-venv");
    let py = venv.join("bin/python");
    let has = |py: &PathBuf| {
        Command::new(py)
            .args(["-c", "import sigstore.verify"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has(&py) {
        return Some(py);
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 -m venv failed (python3 and its venv module are required)"
    );
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "sigstore==4.5.1"])
        .output()
        .expect("run pip");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("Could not find a version")
            || err.contains("NewConnectionError")
            || err.contains("Temporary failure in name resolution")
            || err.contains("Network is unreachable")
        {
            eprintln!(
                "\n*** SKIPPED: the sigstore-python cross-check: pip cannot reach PyPI:\n{err}\n"
            );
            return None;
        }
        panic!("pip install sigstore failed: {err}");
    }
    assert!(has(&py), "sigstore installed but not importable");
    Some(py)
}

#[test]
fn a_bundle_both_ferry_and_sigstore_python_accept_and_both_refuse_altered() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("fulcio");
    let log = Log::new(dir.path(), "rekor");
    let ct = Key::generate(dir.path(), "ctlog", Alg::P256);
    let root = write(
        dir.path(),
        "trusted_root.json",
        &trusted_root_ct(&[(&pki, EPOCH_2020, None)], &[&log], &[&ct]),
    );
    let leaf = pki.leaf_with_sct(dir.path(), SAN, ISSUER, T0 - 60, T0 + 540, &ct);
    let (m, d) = subject_manifest("cross-check");
    let sig = leaf.key.sign(&m);
    let body = hashedrekord(&sig, &m, leaf.pem.as_bytes());
    let mut leaves: Vec<Vec<u8>> = (0..6).map(|i| format!("leaf {i}").into_bytes()).collect();
    leaves[4] = body.clone();
    let tree_root = mth(&leaves);
    let bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "certificate": {"rawBytes": STANDARD.encode(&leaf.der)},
            "tlogEntries": [{
                "logIndex": "4",
                "logId": {"keyId": STANDARD.encode(log.log_id())},
                "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
                "integratedTime": T0.to_string(),
                "inclusionPromise": {"signedEntryTimestamp": STANDARD.encode(log.set(&body, T0, 4))},
                "inclusionProof": {
                    "logIndex": "4",
                    "rootHash": STANDARD.encode(&tree_root),
                    "treeSize": "6",
                    "hashes": path(4, &leaves).iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
                    "checkpoint": {"envelope": log.checkpoint(6, &tree_root)},
                },
                "canonicalizedBody": STANDARD.encode(&body),
            }],
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(sha256(&m))},
            "signature": STANDARD.encode(&sig),
        }
    });
    let p = policy(
        dir.path(),
        json!({"trustedRoot": root, "rules": [{"match": "**", "identities": [{"issuer": ISSUER, "subject": SAN}], "tlog": "required"}]}),
    );
    let artifact = write(dir.path(), "artifact", &m);
    let ferry = |b: &Value| {
        let (man, blobs) = referrer_manifest(b, &d, m.len());
        verify_subject_at(
            &p,
            "registry.test",
            "app",
            Subject {
                digest: &d,
                manifest: &m,
            },
            &[SignatureArtifact {
                manifest: &man,
                blobs: &blobs,
            }],
            NOW,
        )
    };
    let sigstore = |b: &Value| {
        write(dir.path(), "bundle.json", &serde_json::to_vec(b).unwrap());
        let out = Command::new(&py)
            .args(["-c", SCRIPT])
            .arg(dir.path().join(&root))
            .arg(dir.path().join("bundle.json"))
            .arg(dir.path().join(&artifact))
            .args([SAN, ISSUER])
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.success(),
            stdout.contains("sigstore-python: OK"),
            "exit status and output disagree: {stdout}"
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    match ferry(&bundle) {
        Ok(Decision::Verified(v)) => {
            assert_eq!(
                v.satisfied_by,
                SatisfiedBy::Identity {
                    issuer: ISSUER.into(),
                    subject: SAN.into()
                }
            );
            assert_eq!(v.log_index, Some(4));
        }
        other => panic!("ferry: {other:?}"),
    }
    let (ok, err) = sigstore(&bundle);
    assert!(
        ok,
        "sigstore-python refused the bundle ferry accepts: {err}"
    );

    // Altered: both refuse.
    let mut variants: Vec<(&str, Value)> = Vec::new();
    let mut v = bundle.clone();
    let mut s = sig.clone();
    let last = s.len() - 1;
    s[last] ^= 1;
    v["messageSignature"]["signature"] = json!(STANDARD.encode(&s));
    variants.push(("signature", v));
    let mut v = bundle.clone();
    v["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = json!((T0 + 1).to_string());
    variants.push(("integrated time", v));
    let mut v = bundle.clone();
    v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][0] =
        json!(STANDARD.encode([0u8; 32]));
    variants.push(("inclusion proof", v));
    let mut v = bundle.clone();
    v["verificationMaterial"]["tlogEntries"][0]["integratedTime"] =
        json!((T0 + 100_000).to_string());
    v["verificationMaterial"]["tlogEntries"][0]["inclusionPromise"]["signedEntryTimestamp"] =
        json!(STANDARD.encode(log.set(&body, T0 + 100_000, 4)));
    variants.push(("signed after the leaf expired", v));
    for (name, v) in variants {
        assert!(ferry(&v).is_err(), "ferry accepted altered {name}");
        let (ok, err) = sigstore(&v);
        assert!(!ok, "sigstore-python accepted altered {name}");
        assert!(
            err.contains("Error") || err.contains("error"),
            "{name}: {err}"
        );
    }
}
