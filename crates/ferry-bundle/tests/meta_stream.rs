//! bundle.json is parsed as it streams (never held whole) and hashed on the
//! way: the head carries its digests, and the parse refuses what a parse
//! of the whole bytes refused (over the bound, cut, anything after the
//! JSON value, unknown fields, a newer format named by its version).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::Read;

use ferry_bundle::craft::{raw_tar, RawEntry, Sample};
use ferry_bundle::meta::{BlobMeta, META_PATH};
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, VisitResult, Visitor, MAX_META,
};
use ferry_bundle::Digest;

/// Keeps the head's digests; reads every blob.
#[derive(Default)]
struct Heads(Vec<(Digest, [u8; 64])>);

impl Visitor for Heads {
    fn head(&mut self, head: &Head) -> VisitResult {
        self.0.push((head.meta_sha256.clone(), head.meta_prehash));
        Ok(())
    }
    fn manifest(&mut self, _: &BlobMeta, _: &[u8]) -> VisitResult {
        Ok(())
    }
    fn blob(&mut self, _: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        std::io::copy(data, &mut std::io::sink())?;
        Ok(())
    }
    fn blob_end(&mut self, _: &BlobMeta, _: Result<(), &BlobFault>) -> VisitResult {
        Ok(())
    }
}

fn sample() -> Sample {
    Sample::new("example.org/team/app:1.0", &vec![42u8; 3000])
}

/// The sample's entries with bundle.json's bytes replaced by `f`'s.
fn with_meta(f: impl FnOnce(Vec<u8>) -> Vec<u8>) -> Vec<RawEntry> {
    let mut entries = sample().entries();
    let at = entries.iter().position(|e| e.name == META_PATH).unwrap();
    entries[at].data = f(std::mem::take(&mut entries[at].data));
    entries
}

fn read(tar: &[u8]) -> Result<Vec<(Digest, [u8; 64])>, BundleError> {
    let mut heads = Heads::default();
    read_bundle(tar, ReadOptions::default(), &mut heads)?;
    Ok(heads.0)
}

#[test]
fn the_head_carries_the_digests_of_the_exact_bytes() {
    // Whitespace after the value is JSON's and stays accepted; the digests
    // are of the bytes as they are, not of a re-serialisation.
    let mut exact = Vec::new();
    let entries = with_meta(|mut b| {
        b.extend_from_slice(b" \n");
        exact = b.clone();
        b
    });
    let heads = read(&raw_tar(&entries)).unwrap();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].0, Digest::of(&exact));
    assert_eq!(heads[0].1, ferry_bundle::sign::prehash(&exact));
}

#[test]
fn bytes_after_the_json_value_are_refused() {
    for tail in [&b"x"[..], b"{}", b"\n{\"formatVersion\":1}", b"\0"] {
        let entries = with_meta(|mut b| {
            b.extend_from_slice(tail);
            b
        });
        let e = read(&raw_tar(&entries)).unwrap_err();
        assert!(
            matches!(&e, BundleError::Malformed { entry, reason }
                if entry == META_PATH && reason.contains("trailing characters")),
            "{tail:?}: {e}"
        );
    }
}

#[test]
fn a_bundle_json_over_the_bound_is_refused_by_its_header() {
    let mut entries = sample().entries();
    let at = entries.iter().position(|e| e.name == META_PATH).unwrap();
    entries[at].header_size = Some(MAX_META + 1);
    let e = read(&raw_tar(&entries)).unwrap_err();
    assert!(
        matches!(&e, BundleError::TooLarge { entry, size, limit }
            if entry == META_PATH && *size == MAX_META + 1 && *limit == MAX_META),
        "{e}"
    );
}

#[test]
fn a_stream_cut_inside_bundle_json_is_truncated_not_malformed() {
    let tar = raw_tar(&sample().entries());
    // oci-layout's header and block, then bundle.json's header: its data
    // starts at byte 1536.
    for cut in [1536 + 1, 1536 + 40] {
        let e = read(&tar[..cut]).unwrap_err();
        assert!(
            matches!(e, BundleError::Truncated { .. }),
            "cut at {cut}: {e}"
        );
    }
}

#[test]
fn a_cut_json_value_or_an_unknown_field_is_malformed() {
    let cut = with_meta(|b| b[..b.len() / 2].to_vec());
    let e = read(&raw_tar(&cut)).unwrap_err();
    assert!(
        matches!(&e, BundleError::Malformed { entry, .. } if entry == META_PATH),
        "{e}"
    );
    let unknown = with_meta(|b| {
        let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        v["surprise"] = true.into();
        serde_json::to_vec(&v).unwrap()
    });
    let e = read(&raw_tar(&unknown)).unwrap_err();
    assert!(
        matches!(&e, BundleError::Malformed { entry, reason }
            if entry == META_PATH && reason.contains("surprise")),
        "{e}"
    );
}

#[test]
fn a_newer_format_with_fields_this_ferry_does_not_know_is_named_by_version() {
    // As ferry writes it: `formatVersion` first.
    let newer = with_meta(|b| {
        let text = String::from_utf8(b).unwrap();
        assert!(text.contains("\"formatVersion\": 1,"), "{text}");
        text.replacen(
            "\"formatVersion\": 1,",
            "\"formatVersion\": 7,\n  \"somethingNew\": true,",
            1,
        )
        .into_bytes()
    });
    let e = read(&raw_tar(&newer)).unwrap_err();
    assert!(matches!(e, BundleError::Version(7)), "{e}");
}
