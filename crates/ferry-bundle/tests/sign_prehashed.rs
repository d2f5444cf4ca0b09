//! `TrustedKey::verify_prehashed` (what import and verify use: the reader
//! hands the BLAKE2b-512 of bundle.json, never its bytes) answers as
//! `TrustedKey::verify` (minisign's own check over the bytes) does: a
//! signature by ferry's signer or by minisign's own (hedged) signer
//! verifies, and every alteration is refused, with the same error.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use base64::Engine as _;
use ferry_bundle::sign::{self, prehash, SignError, SigningKey, TrustedKey};

const BYTES: &[u8] = b"{\"formatVersion\":1,\"name\":\"demo\"}\n";

struct Pair {
    _dir: tempfile::TempDir,
    signing: SigningKey,
    trusted: TrustedKey,
    secret_path: std::path::PathBuf,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let g = sign::generate(&dir.path().join("k"), None).unwrap();
    Pair {
        signing: SigningKey::load(&g.secret, None).unwrap(),
        trusted: TrustedKey::load(&g.public).unwrap(),
        secret_path: g.secret,
        _dir: dir,
    }
}

/// A signature made by the `minisign` crate's own signer (random noise,
/// its own Ed25519), as `minisign -S` makes it.
fn minisign_signed(p: &Pair, bytes: &[u8], comment: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(&p.secret_path).unwrap();
    let sk = minisign::SecretKeyBox::from_string(&text)
        .unwrap()
        .into_unencrypted_secret_key()
        .unwrap();
    let sig = minisign::sign(None, &sk, bytes, Some(comment), None).unwrap();
    sig.into_string().into_bytes()
}

/// Both checks, which must agree: `Ok` with the same answer, or the same
/// error.
fn both(key: &TrustedKey, bytes: &[u8], sig: Option<&[u8]>) -> Result<String, String> {
    let whole = key.verify(bytes, sig);
    let hashed = key.verify_prehashed(&prehash(bytes), sig);
    match (whole, hashed) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            Ok(a.trusted_comment)
        }
        (Err(a), Err(b)) => {
            assert_eq!(
                std::mem::discriminant(&a),
                std::mem::discriminant(&b),
                "{a} / {b}"
            );
            if matches!(a, SignError::Altered { .. } | SignError::WrongKey { .. }) {
                assert_eq!(a.to_string(), b.to_string());
            }
            Err(b.to_string())
        }
        (a, b) => panic!("the checks disagree: over the bytes {a:?}, over the prehash {b:?}"),
    }
}

/// The signature file with line `at` decoded, changed by `f`, re-encoded.
fn edit_line(sig: &[u8], at: usize, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = String::from_utf8(sig.to_vec()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut raw = b64.decode(&lines[at]).unwrap();
    f(&mut raw);
    lines[at] = b64.encode(raw);
    (lines.join("\n") + "\n").into_bytes()
}

#[test]
fn signatures_by_ferry_and_by_minisign_verify_by_their_prehash() {
    let p = pair();
    let ours = p.signing.sign(BYTES, "ferry bundle demo").unwrap();
    assert_eq!(
        both(&p.trusted, BYTES, Some(&ours)).unwrap(),
        "ferry bundle demo"
    );
    let theirs = minisign_signed(&p, BYTES, "signed by minisign");
    assert_ne!(ours, theirs);
    assert_eq!(
        both(&p.trusted, BYTES, Some(&theirs)).unwrap(),
        "signed by minisign"
    );
}

#[test]
fn every_alteration_is_refused_by_both_checks() {
    let p = pair();
    let other = pair();
    let sigs = [
        p.signing.sign(BYTES, "ferry bundle demo").unwrap(),
        minisign_signed(&p, BYTES, "signed by minisign"),
    ];
    for sig in &sigs {
        let text = String::from_utf8(sig.clone()).unwrap();
        let mut altered_bytes = BYTES.to_vec();
        altered_bytes[3] ^= 1;
        let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
            ("altered bytes", altered_bytes, sig.clone()),
            (
                "altered trusted comment",
                BYTES.to_vec(),
                text.replacen("\ntrusted comment: ", "\ntrusted comment: x", 1)
                    .into_bytes(),
            ),
            (
                "altered signature",
                BYTES.to_vec(),
                edit_line(sig, 1, |raw| raw[40] ^= 1),
            ),
            (
                "altered global signature",
                BYTES.to_vec(),
                edit_line(sig, 3, |raw| raw[5] ^= 1),
            ),
            (
                "another key id",
                BYTES.to_vec(),
                edit_line(sig, 1, |raw| raw[2] ^= 1),
            ),
            (
                "legacy algorithm",
                BYTES.to_vec(),
                edit_line(sig, 1, |raw| raw[1] = b'd'),
            ),
            (
                "unknown algorithm",
                BYTES.to_vec(),
                edit_line(sig, 1, |raw| raw[1] = b'X'),
            ),
            (
                "short signature",
                BYTES.to_vec(),
                edit_line(sig, 1, |raw| raw.truncate(70)),
            ),
            (
                "short global signature",
                BYTES.to_vec(),
                edit_line(sig, 3, |raw| raw.truncate(63)),
            ),
            ("not a signature", BYTES.to_vec(), b"hello\n".to_vec()),
        ];
        for (what, bytes, sig) in cases {
            assert!(
                both(&p.trusted, &bytes, Some(&sig)).is_err(),
                "{what} was accepted"
            );
        }
        let e = both(&other.trusted, BYTES, Some(sig)).unwrap_err();
        assert!(e.contains("is signed by key id"), "{e}");
        let e = both(&p.trusted, BYTES, None).unwrap_err();
        assert!(e.contains("not signed"), "{e}");
    }
}

#[test]
fn a_legacy_signature_made_over_the_bytes_themselves_is_refused() {
    // A minisign "Ed" signature: Ed25519 over the bytes, not their hash,
    // validly made by the right key. Both checks refuse it by algorithm.
    let p = pair();
    let sig = p.signing.sign(BYTES, "c").unwrap();
    let raw_sk = std::fs::read_to_string(&p.secret_path).unwrap();
    let sk = minisign::SecretKeyBox::from_string(&raw_sk)
        .unwrap()
        .into_unencrypted_secret_key()
        .unwrap()
        .to_bytes();
    const SK_AT: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8;
    let pair = ring::signature::Ed25519KeyPair::from_seed_and_public_key(
        &sk[SK_AT..SK_AT + 32],
        &sk[SK_AT + 32..SK_AT + 64],
    )
    .unwrap();
    let legacy = pair.sign(BYTES);
    let sig = edit_line(&sig, 1, |raw| {
        raw[1] = b'd';
        raw[10..].copy_from_slice(legacy.as_ref());
    });
    let global = {
        let mut input = legacy.as_ref().to_vec();
        input.extend_from_slice(b"c");
        pair.sign(&input)
    };
    let sig = edit_line(&sig, 3, |raw| raw.copy_from_slice(global.as_ref()));
    let e = both(&p.trusted, BYTES, Some(&sig)).unwrap_err();
    assert!(e.contains("Legacy signatures are not accepted"), "{e}");
}
