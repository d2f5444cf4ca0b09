//! `ferry/bundle.json` written without being held whole (issue 17): its
//! sums from one serialisation, the signature from their prehash, the tar
//! entry from another serialisation. The bundle and the signature are the
//! bytes the whole-buffer path writes, and a serialisation that differs
//! from the one hashed is refused with nothing left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::Path;

use ferry_bundle::craft::Sample;
use ferry_bundle::sign::{bundle_comment, generate, SignError, SigningKey, TrustedKey};
use ferry_bundle::writer::{BundleWriter, Compression};
use ferry_bundle::Digest;

/// A sample bundle with several items, so `bundle.json` spans more than a
/// serialiser buffer's worth of tokens.
fn sample() -> Sample {
    let mut s = Sample::new("docker.io/library/nginx:1.27", b"layer bytes");
    let first = s.meta.items[0].clone();
    for n in 0..200 {
        let mut it = first.clone();
        it.reference = format!("ghcr.io/many/app-{n}:1.0");
        s.meta.items.push(it);
    }
    s.index = ferry_bundle::meta::index_json(&s.meta.items);
    s.repin();
    s
}

fn blobs(w: &mut BundleWriter, s: &Sample) {
    for b in [&s.manifest, &s.config, &s.layer] {
        w.write_blob(&Digest::of(b), b.len() as u64, &b[..])
            .unwrap();
    }
}

/// Writes `s` with the whole-buffer head or the streamed one.
fn write(dir: &Path, name: &str, s: &Sample, streamed: bool, sig: Option<&[u8]>, c: Compression) {
    let mut w = BundleWriter::create(&dir.join(name), c).unwrap();
    if streamed {
        let sums = s.meta.json_sums().unwrap();
        w.write_head_meta(&s.meta, &sums, sig, &s.index).unwrap();
    } else {
        w.write_head(&s.meta.to_json(), sig, &s.index).unwrap();
    }
    blobs(&mut w, s);
    w.finish().unwrap();
}

fn key(dir: &Path) -> (SigningKey, TrustedKey) {
    let g = generate(&dir.join("k"), None).unwrap();
    (
        SigningKey::load(&g.secret, None).unwrap(),
        TrustedKey::load(&g.public).unwrap(),
    )
}

#[test]
fn a_streamed_head_is_the_same_bundle_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    for (n, c) in [
        Compression::None,
        Compression::Zstd { level: 3 },
        Compression::Gzip { level: 6 },
    ]
    .into_iter()
    .enumerate()
    {
        write(dir.path(), &format!("whole-{n}"), &s, false, None, c);
        write(dir.path(), &format!("streamed-{n}"), &s, true, None, c);
        let whole = std::fs::read(dir.path().join(format!("whole-{n}"))).unwrap();
        let streamed = std::fs::read(dir.path().join(format!("streamed-{n}"))).unwrap();
        assert!(whole == streamed, "{c:?}: the bundles differ");
    }
}

#[test]
fn a_split_bundle_names_the_same_identity_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    let mut manifests = Vec::new();
    for (name, streamed) in [("whole.tar", false), ("streamed.tar", true)] {
        let mut w =
            BundleWriter::create_split(&dir.path().join(name), Compression::None, 4096).unwrap();
        if streamed {
            let sums = s.meta.json_sums().unwrap();
            w.write_head_meta(&s.meta, &sums, None, &s.index).unwrap();
        } else {
            w.write_head(&s.meta.to_json(), None, &s.index).unwrap();
        }
        blobs(&mut w, &s);
        let written = w.finish().unwrap().parts.unwrap();
        manifests.push(written.manifest);
    }
    let json = |m: &ferry_bundle::parts::PartsManifest| {
        String::from_utf8(m.to_json())
            .unwrap()
            .replace("streamed.tar", "whole.tar")
    };
    assert_eq!(json(&manifests[0]), json(&manifests[1]));
    assert_eq!(
        manifests[1].bundle_json,
        Digest::of(&s.meta.to_json()),
        "the parts manifest pins the exact bundle.json"
    );
}

#[test]
fn a_prehashed_signature_is_the_signature_of_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = key(dir.path());
    let s = sample();
    let comment = bundle_comment(&s.meta.name, &s.meta.index.digest);
    let sums = s.meta.json_sums().unwrap();
    let streamed = sk
        .sign_prehashed(&sums.blake2b512, &comment, |out| s.meta.write_json(out))
        .unwrap();
    let whole = sk.sign(&s.meta.to_json(), &comment).unwrap();
    assert_eq!(streamed, whole);
    let v = pk.verify(&s.meta.to_json(), Some(&streamed)).unwrap();
    assert_eq!(v.trusted_comment, comment);
    // And a bundle signed so is the bundle signed whole.
    write(dir.path(), "a", &s, false, Some(&whole), Compression::None);
    write(
        dir.path(),
        "b",
        &s,
        true,
        Some(&streamed),
        Compression::None,
    );
    assert!(
        std::fs::read(dir.path().join("a")).unwrap()
            == std::fs::read(dir.path().join("b")).unwrap()
    );
}

#[test]
fn a_second_serialisation_that_differs_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, _) = key(dir.path());
    let s = sample();
    let sums = s.meta.json_sums().unwrap();
    // Other bytes the second time: minisign's check fails.
    let err = sk
        .sign_prehashed(&sums.blake2b512, "c", |out| out.write_all(b"other bytes"))
        .unwrap_err();
    assert!(matches!(err, SignError::Sign { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&sk.path().display().to_string()), "{text}");
    let reason = format!("{:?}", err);
    assert!(reason.contains("does not verify"), "{reason}");
    // A serialiser that fails the second time: its error is named.
    let err = sk
        .sign_prehashed(&sums.blake2b512, "c", |out| {
            out.write_all(b"{")?;
            Err(std::io::Error::other("the serialiser broke"))
        })
        .unwrap_err();
    let reason = format!("{:?}", err);
    assert!(reason.contains("the serialiser broke"), "{reason}");
}

#[test]
fn sums_of_other_bytes_are_refused_and_nothing_lands() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    let good = s.meta.json_sums().unwrap();
    let mut other_size = good.clone();
    other_size.size += 1;
    let mut other_hash = good.clone();
    other_hash.sha256 = Digest::of(b"not bundle.json");
    for (n, sums) in [other_size, other_hash].into_iter().enumerate() {
        let out = dir.path().join(format!("b{n}.tar"));
        let mut w = BundleWriter::create(&out, Compression::None).unwrap();
        let err = w
            .write_head_meta(&s.meta, &sums, None, &s.index)
            .unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("ferry/bundle.json serialised to"), "{text}");
        assert!(
            err.to_string().contains(&out.display().to_string()),
            "{err}"
        );
        drop(w);
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
