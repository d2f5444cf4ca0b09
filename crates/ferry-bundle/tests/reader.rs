//! The verifying reader against valid and hostile bundles.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::Read;

use ferry_bundle::craft::{raw_tar, zstd, RawEntry, Sample};
use ferry_bundle::meta::{BlobMeta, Role};
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, Report, VisitResult, Visitor,
};
use ferry_bundle::writer::{BundleWriter, Compression};
use ferry_bundle::Digest;

#[derive(Default)]
struct Collect {
    heads: usize,
    manifests: Vec<Digest>,
    blobs: Vec<(Digest, Vec<u8>)>,
    ends: Vec<(Digest, bool)>,
}

impl Visitor for Collect {
    fn head(&mut self, _head: &Head) -> VisitResult {
        self.heads += 1;
        Ok(())
    }
    fn manifest(&mut self, blob: &BlobMeta, _bytes: &[u8]) -> VisitResult {
        self.manifests.push(blob.digest.clone());
        Ok(())
    }
    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        let mut v = Vec::new();
        data.read_to_end(&mut v)?;
        self.blobs.push((blob.digest.clone(), v));
        Ok(())
    }
    fn blob_end(&mut self, blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        self.ends.push((blob.digest.clone(), verdict.is_ok()));
        Ok(())
    }
}

fn read(bytes: &[u8]) -> Result<Report, BundleError> {
    read_bundle(bytes, ReadOptions::default(), &mut Collect::default())
}

fn err(bytes: &[u8]) -> String {
    match read(bytes) {
        Ok(r) => panic!("bundle was accepted: {r:?}"),
        Err(e) => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        }
    }
}

fn sample() -> Sample {
    Sample::new("example.org/team/app:1.0", &vec![42u8; 3000])
}

fn write_sample(
    s: &Sample,
    compression: Compression,
    dir: &std::path::Path,
    name: &str,
) -> Vec<u8> {
    let path = dir.join(name);
    let mut w = BundleWriter::create(&path, compression).unwrap();
    w.write_head(&s.meta.to_json(), None, &s.index).unwrap();
    for b in [&s.manifest, &s.config, &s.layer] {
        w.write_blob(&Digest::of(b), b.len() as u64, &b[..])
            .unwrap();
    }
    let written = w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(Digest::of(&bytes), written.sha256);
    let sum = std::fs::read_to_string(&written.checksum_path).unwrap();
    assert_eq!(sum, format!("{}  {name}\n", written.sha256.hex()));
    bytes
}

#[test]
fn written_bundles_read_back_in_every_compression() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    for (i, c) in [
        Compression::Zstd { level: 3 },
        Compression::Gzip { level: 6 },
        Compression::None,
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = write_sample(&s, c, dir.path(), &format!("b{i}"));
        let mut v = Collect::default();
        let r = read_bundle(&bytes[..], ReadOptions::default(), &mut v).unwrap();
        assert_eq!(v.heads, 1);
        assert_eq!(v.manifests, vec![s.manifest_digest()]);
        assert_eq!(v.blobs.len(), 2);
        assert_eq!(v.blobs[1].1, s.layer);
        assert!(v.ends.iter().all(|(_, ok)| *ok));
        assert_eq!(r.good_items, vec![s.reference.clone()]);
        assert_eq!(r.blobs, 3);
    }
}

#[test]
fn same_content_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    let a = write_sample(&s, Compression::default(), dir.path(), "a.tar.zst");
    let b = write_sample(&s, Compression::default(), dir.path(), "b.tar.zst");
    assert_eq!(Digest::of(&a), Digest::of(&b));
}

#[test]
fn writer_refuses_a_blob_that_is_not_its_digest_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.tar.zst");
    let mut w = BundleWriter::create(&path, Compression::default()).unwrap();
    let d = Digest::of(b"hello");
    let e = w.write_blob(&d, 5, &b"jello"[..]).unwrap_err();
    assert!(e.to_string().contains(&d.to_string()), "{e}");
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temp file left behind"
    );
}

#[test]
fn plain_and_zstd_raw_bundles_are_accepted() {
    let s = sample();
    let tar = raw_tar(&s.entries());
    read(&tar).unwrap();
    read(&zstd(&tar)).unwrap();
}

fn with(mut entries: Vec<RawEntry>, f: impl FnOnce(&mut Vec<RawEntry>)) -> Vec<u8> {
    f(&mut entries);
    raw_tar(&entries)
}

#[test]
fn path_traversal_is_refused() {
    let s = sample();
    let b = with(s.entries(), |e| {
        e.push(RawEntry::file("blobs/../../etc/passwd", b"x"))
    });
    assert!(
        err(&b).contains("`blobs/../../etc/passwd` is not allowed"),
        "{}",
        err(&b)
    );
}

#[test]
fn absolute_paths_are_refused() {
    let s = sample();
    let b = with(s.entries(), |e| {
        e.insert(0, RawEntry::file("/etc/passwd", b"x"))
    });
    assert!(
        err(&b).contains("`/etc/passwd` is not allowed: absolute"),
        "{}",
        err(&b)
    );
}

#[test]
fn symlinks_hardlinks_and_devices_are_refused() {
    let s = sample();
    for (kind, word) in [
        (tar::EntryType::Symlink, "symbolic links"),
        (tar::EntryType::Link, "hard links"),
        (tar::EntryType::Char, "device files"),
        (tar::EntryType::Block, "device files"),
        (tar::EntryType::Fifo, "FIFOs"),
    ] {
        let b = with(s.entries(), |e| {
            let mut l = RawEntry::file("blobs/sha256/link", b"");
            l.kind = kind;
            l.link = Some("/etc/shadow".into());
            e.push(l);
        });
        let msg = err(&b);
        assert!(
            msg.contains("blobs/sha256/link") && msg.contains(word),
            "{msg}"
        );
    }
}

#[test]
fn duplicate_entries_are_refused() {
    let s = sample();
    let b = with(s.entries(), |e| {
        let again = e[5].clone();
        e.push(again);
    });
    assert!(err(&b).contains("appears twice"), "{}", err(&b));
}

#[test]
fn a_blob_whose_content_is_not_its_name_is_refused() {
    let s = sample();
    let good = Digest::of(&s.layer);
    let b = with(s.entries(), |e| e[5].data[0] ^= 1);
    let msg = err(&b);
    assert!(
        msg.contains(&good.layout_path()) && msg.contains("hashes to"),
        "{msg}"
    );
    let b = with(s.entries(), |e| e[3].data[10] ^= 1);
    let msg = err(&b);
    assert!(
        msg.contains(&s.manifest_digest().layout_path()) && msg.contains("hashes to"),
        "{msg}"
    );
}

#[test]
fn a_size_mismatch_is_refused_before_reading() {
    let s = sample();
    let b = with(s.entries(), |e| {
        e[5].data.push(0);
    });
    let msg = err(&b);
    assert!(
        msg.contains("size 3001 bytes, but bundle.json declares 3000"),
        "{msg}"
    );
}

#[test]
fn names_that_are_not_digests_and_unknown_files_are_refused() {
    let s = sample();
    let b = with(s.entries(), |e| {
        e.push(RawEntry::file("blobs/sha256/NOTHEX", b"x"))
    });
    assert!(err(&b).contains("not a blob name"), "{}", err(&b));
    let b = with(s.entries(), |e| {
        e.push(RawEntry::file("manifest.json", b"[]"))
    });
    assert!(
        err(&b).contains("`manifest.json` is not allowed"),
        "{}",
        err(&b)
    );
    let stray = Digest::of(b"stray");
    let b = with(s.entries(), |e| {
        e.push(RawEntry::file(&stray.layout_path(), b"stray"))
    });
    assert!(
        err(&b).contains("not declared in ferry/bundle.json"),
        "{}",
        err(&b)
    );
}

#[test]
fn truncation_at_several_points_is_refused() {
    let s = sample();
    let tar = raw_tar(&s.entries());
    let total_content = tar.len() - 1024;
    // Every cut says the bundle is truncated, a cut exactly before the
    // end-of-archive blocks (or inside them) too: the whole file is
    // accounted for, not only the declared blobs.
    for cut in [
        10,
        600,
        1500,
        total_content / 2,
        total_content - 100,
        total_content,
        total_content + 512,
        tar.len() - 1,
    ] {
        let msg = err(&tar[..cut]);
        assert!(msg.contains("truncated"), "cut at {cut}: {msg}");
    }
    let z = zstd(&tar);
    let msg = err(&z[..z.len() / 2]);
    assert!(msg.contains("failed to read"), "{msg}");
}

#[test]
fn a_missing_blob_is_refused() {
    let s = sample();
    let b = with(s.entries(), |e| {
        e.pop();
    });
    let msg = err(&b);
    assert!(
        msg.contains("1 declared blob(s) missing")
            && msg.contains(&Digest::of(&s.layer).to_string()),
        "{msg}"
    );
}

#[test]
fn index_json_not_matching_bundle_json_is_refused() {
    let s = sample();
    let b = with(s.entries(), |e| e[2].data.push(b' '));
    assert!(
        err(&b).contains("index.json digest mismatch"),
        "{}",
        err(&b)
    );
}

#[test]
fn head_out_of_order_is_refused() {
    let s = sample();
    let b = with(s.entries(), |e| e.swap(1, 2));
    assert!(
        err(&b).contains("expected `ferry/bundle.json`, found `index.json`"),
        "{}",
        err(&b)
    );
}

#[test]
fn oversized_metadata_is_refused_without_reading_it() {
    let s = sample();
    let b = with(s.entries(), |e| {
        e[2].header_size = Some(200 * 1024 * 1024);
        e.truncate(3);
    });
    let msg = err(&b);
    assert!(
        msg.contains("index.json") && msg.contains("over the"),
        "{msg}"
    );
}

#[test]
fn a_descriptor_pointing_at_a_blob_not_in_the_bundle_is_refused() {
    let mut s = sample();
    let layer = vec![42u8; 2999];
    s.meta.blobs[2] = BlobMeta {
        digest: Digest::of(&layer),
        size: 2999,
        role: Role::Layer,
        media_type: None,
    };
    s.layer = layer;
    let msg = err(&raw_tar(&s.entries()));
    assert!(
        msg.contains("example.org/team/app:1.0") && msg.contains("not in the bundle"),
        "{msg}"
    );
}

#[test]
fn keep_going_reports_bad_blobs_and_failed_items_instead_of_stopping() {
    let s = sample();
    let b = with(s.entries(), |e| e[5].data[0] ^= 1);
    let mut v = Collect::default();
    let r = read_bundle(&b[..], ReadOptions { keep_going: true }, &mut v).unwrap();
    assert_eq!(r.bad_blobs.len(), 1);
    assert_eq!(r.failed_items.len(), 1);
    assert!(r.good_items.is_empty());
    assert!(v.ends.iter().any(|(_, ok)| !ok));
}

#[test]
fn unknown_format_versions_are_refused_by_name() {
    let mut s = sample();
    s.meta.format_version = 99;
    let msg = err(&raw_tar(&s.entries()));
    assert!(msg.contains("format version 99"), "{msg}");
}

#[test]
fn manifests_after_layers_are_refused_as_out_of_streaming_order() {
    let s = sample();
    let b = with(s.entries(), |e| e.swap(3, 5));
    let msg = err(&b);
    assert!(msg.contains("not in streaming order"), "{msg}");
}

#[test]
fn an_item_with_an_unsafe_file_path_is_refused() {
    for bad in ["../../etc/cron.d/x", "/etc/passwd", "a//b"] {
        let mut s = sample();
        s.meta.items[0].path = Some(bad.into());
        s.index = ferry_bundle::meta::index_json(&s.meta.items);
        s.repin();
        let b = raw_tar(&s.entries());
        let e = err(&b);
        assert!(
            e.contains("unsafe file path") && e.contains(bad),
            "{bad}: {e}"
        );
    }
}

/// Large blobs switch the zstd level by content (already-compressed bytes
/// go through a fast level, compressible ones through the bundle's): the
/// output is still the same bytes on every write, whatever the workers'
/// timing, and every blob reads back intact.
#[test]
fn level_switching_by_content_stays_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    // Incompressible (xorshift bytes) and compressible (text) blobs of 3 MiB,
    // alternating, so the level changes at every one of them.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = |n: usize| {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(n);
        v
    };
    let text = |phrase: &[u8]| -> Vec<u8> {
        (0..2usize << 20)
            .map(|i| phrase[i % phrase.len()])
            .collect()
    };
    let blobs = vec![
        noise(2 << 20),
        text(b"usr/lib/x86_64-linux-gnu/libc.so.6 "),
        noise(2 << 20),
        text(b"etc/ssl/certs/ca-certificates.crt\n"),
        noise(3 << 20),
    ];
    let write = |name: &str| {
        let path = dir.path().join(name);
        let mut w = BundleWriter::create(&path, Compression::Zstd { level: 9 }).unwrap();
        w.write_head(&s.meta.to_json(), None, &s.index).unwrap();
        for b in &blobs {
            w.write_blob(&Digest::of(b), b.len() as u64, &b[..])
                .unwrap();
        }
        w.finish().unwrap();
        std::fs::read(&path).unwrap()
    };
    let first = write("a.tar.zst");
    for i in 0..3 {
        assert_eq!(
            Digest::of(&write(&format!("b{i}.tar.zst"))),
            Digest::of(&first),
            "write {i} differs"
        );
    }
    // The random blobs are stored (zstd cannot shrink them), the text ones
    // shrink to almost nothing.
    let random: usize = blobs.iter().step_by(2).map(Vec::len).sum();
    assert!(first.len() > random, "{} <= {random}", first.len());
    assert!(first.len() < random + (256 << 10), "{} bytes", first.len());
    // Every blob is in the tar, byte for byte.
    let tar_bytes = ::zstd::stream::decode_all(&first[..]).unwrap();
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut found = 0;
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if let Some(b) = blobs.iter().find(|b| name == Digest::of(b).layout_path()) {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            assert!(&v == b, "{name} differs");
            found += 1;
        }
    }
    assert_eq!(found, blobs.len());
}
