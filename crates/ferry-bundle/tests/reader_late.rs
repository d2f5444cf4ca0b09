//! The reader with a visitor that takes its verdicts late
//! ([`Visitor::late_verdicts`], what verify does): large blobs are hashed
//! by worker threads while the walk moves on. Its checks, its errors and
//! which failure it reports must be exactly those of a visitor that takes
//! each verdict before the next blob (every blob hashed on the reading
//! thread): the same bundles, good and broken, read both ways.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::Read;

use ferry_bundle::craft::{raw_tar, zstd, RawEntry};
use ferry_bundle::manifest;
use ferry_bundle::meta::{
    self, BlobMeta, BundleMeta, IndexPin, Item, Kind, Role, FORMAT_VERSION, META_PATH,
};
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, Report, VisitResult, Visitor,
};
use ferry_bundle::Digest;

const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What a visitor saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Blob(Digest, Vec<u8>),
    End(Digest, bool),
}

/// Keeps every call; reads `read` bytes of each blob (all of it with
/// `usize::MAX`), leaving the rest to the reader; stops at `stop_at`.
struct Record {
    late: bool,
    read: usize,
    stop_at: Option<Digest>,
    calls: Vec<Call>,
}

impl Record {
    fn new(late: bool) -> Record {
        Record {
            late,
            read: 1000,
            stop_at: None,
            calls: Vec::new(),
        }
    }
}

impl Visitor for Record {
    fn head(&mut self, _head: &Head) -> VisitResult {
        Ok(())
    }
    fn manifest(&mut self, _blob: &BlobMeta, _bytes: &[u8]) -> VisitResult {
        Ok(())
    }
    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        if self.stop_at.as_ref() == Some(&blob.digest) {
            return Err("the visitor stops here".into());
        }
        let mut got = Vec::new();
        data.take(self.read as u64).read_to_end(&mut got)?;
        self.calls.push(Call::Blob(blob.digest.clone(), got));
        Ok(())
    }
    fn blob_end(&mut self, blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        self.calls
            .push(Call::End(blob.digest.clone(), verdict.is_ok()));
        Ok(())
    }
    fn late_verdicts(&self) -> bool {
        self.late
    }
}

/// One image whose layers are `layers`, in streaming order: the entries
/// and the streamed blobs (config, then layers) in bundle order.
fn image(layers: &[Vec<u8>]) -> (Vec<RawEntry>, Vec<Vec<u8>>) {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let desc = |media: &str, b: &[u8]| {
        format!(
            r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
            Digest::of(b),
            b.len()
        )
    };
    let list: Vec<String> = layers.iter().map(|l| desc(LAYER, l)).collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[{}]}}"#,
        manifest::OCI_MANIFEST,
        desc(CONFIG, &config),
        list.join(",")
    )
    .into_bytes();
    let items = vec![Item {
        kind: Kind::Image,
        reference: "example.org/team/many-layers:1.0".into(),
        digest: Digest::of(&manifest),
        media_type: manifest::OCI_MANIFEST.into(),
        size: manifest.len() as u64,
        platforms: vec![],
        path: None,
        subject: None,
    }];
    let index = meta::index_json(&items);
    let blob_meta = |b: &[u8], role: Role, media: &str| BlobMeta {
        digest: Digest::of(b),
        size: b.len() as u64,
        role,
        media_type: Some(media.into()),
    };
    let mut streamed = vec![config];
    streamed.extend(layers.iter().cloned());
    let mut blobs = vec![blob_meta(&manifest, Role::Manifest, manifest::OCI_MANIFEST)];
    blobs.push(blob_meta(&streamed[0], Role::Config, CONFIG));
    blobs.extend(layers.iter().map(|l| blob_meta(l, Role::Layer, LAYER)));
    let meta = BundleMeta {
        format_version: FORMAT_VERSION,
        tool: "ferry test".into(),
        name: "late".into(),
        index: IndexPin {
            digest: Digest::of(&index),
            size: index.len() as u64,
        },
        items,
        blobs,
        absent: vec![],
        base: vec![],
        verification: None,
        origin: None,
    };
    let blob = |b: &[u8]| RawEntry::file(&Digest::of(b).layout_path(), b);
    let mut entries = vec![
        RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        RawEntry::file(META_PATH, &meta.to_json()),
        RawEntry::file("index.json", &index),
        blob(&manifest),
    ];
    entries.extend(streamed.iter().map(|b| blob(b)));
    (entries, streamed)
}

/// `n` bytes that differ from blob to blob (`seed`) and within one.
fn bytes(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Layers of mixed sizes: empty, small (hashed on the reading thread),
/// around the handover size and over a chunk, and several MiB (hashed by
/// a worker while the next ones are read).
fn mixed_layers(n: usize) -> Vec<Vec<u8>> {
    const SIZES: [usize; 10] = [
        3 << 20,
        100,
        (64 << 10) - 1,
        64 << 10,
        700 << 10,
        0,
        5 << 20,
        (256 << 10) + 1,
        1,
        2 << 20,
    ];
    // Each round of sizes a few bytes longer: no two layers alike.
    (0..n)
        .map(|i| bytes(i as u32 + 1, SIZES[i % SIZES.len()] + 7 * (i / SIZES.len())))
        .collect()
}

/// The error with its sources, as the CLI prints it.
fn chain(e: &BundleError) -> String {
    ferry_bundle::text::error_chain(e)
}

/// Reads `bundle` with a late visitor and an in-order one: the outcome
/// (the error, or the report's counts and items) must be the same; the
/// late visitor's calls are returned with it.
fn both(bundle: &[u8], options: ReadOptions, stop_at: Option<&Digest>) -> (String, Vec<Call>) {
    let run = |late: bool| {
        let mut v = Record::new(late);
        v.stop_at = stop_at.cloned();
        let r = read_bundle(bundle, options, &mut v);
        (outcome(&r), v.calls)
    };
    let (late, late_calls) = run(true);
    let (in_order, in_order_calls) = run(false);
    assert_eq!(late, in_order, "late and in-order verdicts disagree");
    if !late.starts_with("error") {
        // Nothing failed: every call the same, only the ends' places may
        // differ; each blob's end after its blob, the ends in bundle order.
        let ends = |c: &[Call]| -> Vec<Call> {
            c.iter()
                .filter(|c| matches!(c, Call::End(..)))
                .cloned()
                .collect()
        };
        let blobs = |c: &[Call]| -> Vec<Call> {
            c.iter()
                .filter(|c| matches!(c, Call::Blob(..)))
                .cloned()
                .collect()
        };
        assert_eq!(ends(&late_calls), ends(&in_order_calls));
        assert_eq!(blobs(&late_calls), blobs(&in_order_calls));
        check_call_order(&late_calls);
    }
    (late, late_calls)
}

fn outcome(r: &Result<Report, BundleError>) -> String {
    match r {
        Ok(r) => format!(
            "ok: entries {} blobs {} bytes {} bad {:?} failed {:?} good {:?}",
            r.entries,
            r.blobs,
            r.blob_bytes,
            r.bad_blobs
                .iter()
                .map(|b| (&b.digest, &b.reason))
                .collect::<Vec<_>>(),
            r.failed_items,
            r.good_items
        ),
        Err(e) => format!("error: {}", chain(e)),
    }
}

/// Each blob's end comes after its own blob call, and the ends come in
/// the order of the blob calls.
fn check_call_order(calls: &[Call]) {
    let blob_order: Vec<&Digest> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Blob(d, _) => Some(d),
            Call::End(..) => None,
        })
        .collect();
    let mut ends = 0;
    for (at, c) in calls.iter().enumerate() {
        if let Call::End(d, _) = c {
            assert_eq!(blob_order.get(ends), Some(&d), "ends out of bundle order");
            let began = calls
                .iter()
                .position(|x| matches!(x, Call::Blob(b, _) if b == d))
                .expect("an end without its blob");
            assert!(began < at, "{d}: its end came before its blob");
            ends += 1;
        }
    }
    assert_eq!(ends, blob_order.len(), "a blob without its end");
}

/// The entry index of streamed blob `k` (0: the config) in `image`'s entries.
fn entry_of(k: usize) -> usize {
    4 + k
}

#[test]
fn many_blobs_of_mixed_sizes_verify_and_the_visitor_sees_every_byte() {
    let layers = mixed_layers(30);
    let (entries, streamed) = image(&layers);
    let tar = raw_tar(&entries);
    for bundle in [tar.clone(), zstd(&tar)] {
        for read in [0, 1000, usize::MAX] {
            let mut v = Record::new(true);
            v.read = read;
            let r = read_bundle(&bundle[..], ReadOptions::default(), &mut v).unwrap();
            assert_eq!(r.blobs as usize, streamed.len() + 1);
            let total: usize = streamed.iter().map(Vec::len).sum();
            assert!(r.blob_bytes as usize > total);
            assert_eq!(r.good_items, vec!["example.org/team/many-layers:1.0"]);
            // The visitor got each blob's first bytes, as they are.
            let seen: Vec<&Vec<u8>> = v
                .calls
                .iter()
                .filter_map(|c| match c {
                    Call::Blob(_, b) => Some(b),
                    Call::End(..) => None,
                })
                .collect();
            assert_eq!(seen.len(), streamed.len());
            for (got, want) in seen.iter().zip(&streamed) {
                assert_eq!(&got[..], &want[..want.len().min(read)]);
            }
            assert!(v.calls.iter().all(|c| !matches!(c, Call::End(_, false))));
            check_call_order(&v.calls);
        }
        both(&bundle, ReadOptions::default(), None);
    }
}

#[test]
fn of_two_corrupt_blobs_the_first_in_bundle_order_is_reported() {
    let layers = mixed_layers(10);
    let (entries, streamed) = image(&layers);
    // Every pair of corrupt streamed blobs (a large one hashed by a worker
    // and a small one known at once, and the other way round): the first
    // is reported, never the one whose hash was ready first.
    for first in 0..streamed.len() {
        if streamed[first].is_empty() {
            continue; // nothing to corrupt
        }
        for second in first + 1..streamed.len() {
            let mut e = entries.clone();
            for k in [first, second] {
                let data = &mut e[entry_of(k)].data;
                if let Some(b) = data.last_mut() {
                    *b ^= 1;
                }
            }
            let bad = |k: usize| Digest::of(&streamed[k]);
            let (out, _) = both(&raw_tar(&e), ReadOptions::default(), None);
            assert!(
                out.contains(&format!(
                    "`{}`: content hashes to",
                    bad(first).layout_path()
                )),
                "blobs {first} and {second} corrupt: {out}"
            );
        }
    }
}

#[test]
fn keep_going_reports_every_corrupt_blob_in_bundle_order() {
    let layers = mixed_layers(10);
    let (mut entries, streamed) = image(&layers);
    // Streamed blobs 2 and 5 (layers 1 and 4): 100 bytes (hashed on the
    // reading thread), 700 KiB (a worker's).
    let (second, fifth) = (2, 5);
    for k in [second, fifth] {
        entries[entry_of(k)].data[0] ^= 0xff;
    }
    let (out, calls) = both(&raw_tar(&entries), ReadOptions { keep_going: true }, None);
    let bad: Vec<Digest> = [second, fifth]
        .iter()
        .map(|k| Digest::of(&streamed[*k]))
        .collect();
    let (at0, at1) = (out.find(&bad[0].to_string()), out.find(&bad[1].to_string()));
    assert!(at0.is_some() && at0 < at1, "{out}");
    assert!(
        out.contains("failed [(\"example.org/team/many-layers:1.0\""),
        "{out}"
    );
    let failed_ends: Vec<&Digest> = calls
        .iter()
        .filter_map(|c| match c {
            Call::End(d, false) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(failed_ends, vec![&bad[0], &bad[1]]);
}

#[test]
fn a_cut_or_a_visitor_stop_after_a_corrupt_blob_reports_the_corrupt_blob() {
    let layers = mixed_layers(10);
    let (mut entries, streamed) = image(&layers);
    // Layer 0 (3 MiB, a worker's) is corrupt; the walk goes on while it is
    // hashed and meets a cut, or a visitor that stops.
    entries[entry_of(1)].data[1000] ^= 1;
    let corrupt = Digest::of(&streamed[1]).layout_path();
    let tar = raw_tar(&entries);
    let later = tar.len() - (2 << 20);
    for bundle in [tar[..later].to_vec(), zstd(&tar[..later])] {
        let (out, _) = both(&bundle, ReadOptions::default(), None);
        assert!(
            out.contains(&format!("`{corrupt}`: content hashes to")),
            "{out}"
        );
    }
    let stop = Digest::of(&streamed[8]);
    let (out, _) = both(&tar, ReadOptions::default(), Some(&stop));
    assert!(
        out.contains(&format!("`{corrupt}`: content hashes to")),
        "{out}"
    );
    // Without the corrupt blob, the cut and the stop are what is reported.
    let (good, _) = image(&layers);
    let tar = raw_tar(&good);
    let (out, _) = both(&tar[..later], ReadOptions::default(), None);
    assert!(out.contains("the bundle is truncated"), "{out}");
    let (out, _) = both(&tar, ReadOptions::default(), Some(&stop));
    assert!(out.contains("the visitor stops here"), "{out}");
}

#[test]
fn hostile_changes_anywhere_give_the_same_error_late_and_in_order() {
    let layers = mixed_layers(12);
    let (entries, _) = image(&layers);
    let tar = raw_tar(&entries);
    let step = tar.len() / 61;
    let (mut refused, mut flips) = (0, 0);
    // A flipped byte and a cut every `step` bytes: headers, data, padding.
    for at in (0..tar.len()).step_by(step) {
        flips += 1;
        let mut flipped = tar.clone();
        flipped[at] ^= 0x20;
        let (out, _) = both(&flipped, ReadOptions::default(), None);
        refused += usize::from(out.starts_with("error"));
        let (out, _) = both(&tar[..at], ReadOptions::default(), None);
        assert!(out.starts_with("error"), "cut at {at}: {out}");
        let (out, _) = both(&flipped, ReadOptions { keep_going: true }, None);
        assert!(!out.is_empty());
    }
    // Nearly every flip lands in a blob's bytes, a header or the head.
    assert!(
        refused * 10 >= flips * 9,
        "only {refused} of {flips} flips refused"
    );
    // Blobs repeated, out of order, undeclared or oversized after a blob
    // that a worker is still hashing.
    let mut dup = entries.clone();
    let again = dup[entry_of(1)].clone();
    dup.insert(entry_of(3), again);
    let mut swapped = entries.clone();
    swapped.swap(entry_of(6), entry_of(7));
    let mut undeclared = entries.clone();
    undeclared.insert(
        entry_of(8),
        RawEntry::file(&Digest::of(b"x").layout_path(), b"x"),
    );
    let mut oversized = entries.clone();
    oversized[entry_of(9)].header_size = Some(1 << 40);
    let mut extra = raw_tar(&entries);
    extra.extend_from_slice(&[0u8; 512]);
    for (what, bundle, expect) in [
        ("a repeated blob", raw_tar(&dup), "appears twice"),
        (
            "blobs out of order",
            raw_tar(&swapped),
            "not in streaming order",
        ),
        ("an undeclared blob", raw_tar(&undeclared), "not declared"),
        (
            "an oversized blob",
            raw_tar(&oversized),
            "bundle.json declares",
        ),
        (
            "padding after the end",
            extra,
            "unexpected data after the end",
        ),
    ] {
        let (out, _) = both(&bundle, ReadOptions::default(), None);
        assert!(out.contains(expect), "{what}: {out}");
    }
}
