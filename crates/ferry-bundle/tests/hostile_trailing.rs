//! Every byte of a bundle file accounted for (issue 12, classes 6, 7, 11,
//! 12 and the reader side of 1), at library level: data after the archive
//! in every shape, cuts at every offset, every tar entry type, hostile
//! names, references, annotations and file titles, and parts manifests
//! that do not add up. Each case asserts the named error; the CLI side
//! (exit codes, nothing at the registry) is in `ferry/tests/hostile_format.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::{Read, Write};

use ferry_bundle::craft::{self, raw_tar, tar_header, tar_open, zstd, RawEntry, Sample};
use ferry_bundle::meta::{BlobMeta, Kind, ANN_IMAGE_NAME};
use ferry_bundle::parts::{open_bundle, PartEntry, PartsError, PartsManifest};
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, Report, TarWalker, VisitResult, Visitor,
};
use ferry_bundle::text::is_unsafe_char;
use ferry_bundle::writer::{BundleWriter, Compression};
use ferry_bundle::{Digest, Reference};

#[derive(Default)]
struct Seen {
    heads: usize,
    manifests: usize,
    blobs: usize,
}

impl Visitor for Seen {
    fn head(&mut self, _head: &Head) -> VisitResult {
        self.heads += 1;
        Ok(())
    }
    fn manifest(&mut self, _blob: &BlobMeta, _bytes: &[u8]) -> VisitResult {
        self.manifests += 1;
        Ok(())
    }
    fn blob(&mut self, _blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        let mut v = Vec::new();
        data.read_to_end(&mut v)?;
        Ok(())
    }
    fn blob_end(&mut self, _blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        if verdict.is_ok() {
            self.blobs += 1;
        }
        Ok(())
    }
}

/// The error and its causes, as the CLI prints them.
fn chain(e: &dyn std::error::Error) -> String {
    ferry_bundle::text::error_chain(e)
}

/// Reads `bytes` strictly (verify) and with `keep_going` (import): both
/// must agree. Returns the strict result and what the visitor saw.
fn read(bytes: &[u8]) -> (Result<Report, BundleError>, Seen) {
    let mut seen = Seen::default();
    let strict = read_bundle(bytes, ReadOptions::default(), &mut seen);
    let mut other = Seen::default();
    let lenient = read_bundle(bytes, ReadOptions { keep_going: true }, &mut other);
    match (&strict, &lenient) {
        (Ok(_), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(chain(a), chain(b), "verify and import disagree"),
        _ => panic!(
            "verify and import disagree: {:?} / {:?}",
            strict.as_ref().map(|_| ()),
            lenient.as_ref().map(|_| ())
        ),
    }
    (strict, seen)
}

/// The refusal of `bytes` (panics when accepted), checked to carry no raw
/// control character.
fn refused(bytes: &[u8]) -> (BundleError, String, Seen) {
    let (r, seen) = read(bytes);
    let e = match r {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(e) => e,
    };
    let msg = chain(&e);
    assert!(
        !msg.chars().any(is_unsafe_char),
        "the message carries a raw control character: {msg:?}"
    );
    (e, msg, seen)
}

fn sample() -> Sample {
    Sample::new("example.org/team/app:1.0", &[42u8; 3000])
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A zstd skippable frame with magic nibble `n` carrying `payload`.
fn skippable(n: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x50 | (n & 0x0f), 0x2a, 0x4d, 0x18];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Bytes that compress poorly (a fixed pseudo-random sequence).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Comp {
    Plain,
    Zstd,
    Gzip,
}

fn compress(c: Comp, tar: &[u8]) -> Vec<u8> {
    match c {
        Comp::Plain => tar.to_vec(),
        Comp::Zstd => zstd(tar),
        Comp::Gzip => gzip(tar),
    }
}

const COMPS: [Comp; 3] = [Comp::Plain, Comp::Zstd, Comp::Gzip];

#[test]
fn valid_bundles_are_accepted_in_every_compression() {
    let tar = raw_tar(&sample().entries());
    for c in COMPS {
        let (r, seen) = read(&compress(c, &tar));
        let r = r.unwrap_or_else(|e| panic!("{c:?}: {}", chain(&e)));
        assert_eq!(r.good_items.len(), 1, "{c:?}");
        assert_eq!(seen.heads, 1);
    }
    // The writer's own zstd output is one frame even when it switches
    // levels between blobs (an incompressible 2 MiB blob goes through the
    // fast mode, a compressible one at the bundle's level): the reader that
    // refuses a second frame reads it whole.
    let dir = tempfile::tempdir().unwrap();
    let s = Sample::new("example.org/team/app:2", &noise(2 << 20, 7));
    for (name, compression) in [
        ("z.tar.zst", Compression::Zstd { level: 3 }),
        ("g.tar.gz", Compression::Gzip { level: 6 }),
        ("p.tar", Compression::None),
    ] {
        let path = dir.path().join(name);
        let mut w = BundleWriter::create(&path, compression).unwrap();
        w.write_head(&s.meta.to_json(), None, &s.index).unwrap();
        for b in [&s.manifest, &s.config, &s.layer] {
            w.write_blob(&Digest::of(b), b.len() as u64, &b[..])
                .unwrap();
        }
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (r, _) = read(&bytes);
        r.unwrap_or_else(|e| panic!("{name}: {}", chain(&e)));
    }
}

#[test]
fn data_after_the_archive_is_refused_in_every_shape() {
    let entries = sample().entries();
    let tar = raw_tar(&entries);
    let smuggled = raw_tar(&[RawEntry::file("smuggled.txt", b"across the gap")]);
    let mut between = tar_open(&entries);
    between.extend_from_slice(&[0u8; 512]);
    between.extend(raw_tar(&[RawEntry::file("smuggled.txt", b"x")]));
    let mut gnu_record = tar.clone();
    gnu_record.resize(tar.len().div_ceil(10240) * 10240 + 10240, 0);
    // Shapes of the tar stream itself: each goes through every compression.
    let tar_shapes: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an entry after the end-of-archive blocks",
            [&tar[..], &smuggled[..]].concat(),
            "another tar entry (`smuggled.txt`)",
        ),
        (
            "a second bundle appended",
            [&tar[..], &tar[..]].concat(),
            "another tar entry (`oci-layout`)",
        ),
        (
            "an entry between the two zero blocks",
            between,
            "between the two end-of-archive blocks",
        ),
        (
            "a third zero block",
            [&tar[..], &[0u8; 512][..]].concat(),
            "more zero padding",
        ),
        (
            "padding to a GNU tar record",
            gnu_record,
            "more zero padding",
        ),
        (
            "seven zero bytes",
            [&tar[..], &[0u8; 7][..]].concat(),
            "7 zero bytes",
        ),
        (
            "one byte of garbage",
            [&tar[..], &b"x"[..]].concat(),
            "1 bytes of data",
        ),
        (
            "a block of garbage",
            [&tar[..], &[0xaa; 512][..]].concat(),
            "data at byte",
        ),
        (
            "a zstd frame after the tar",
            [&tar[..], &zstd(b"smuggled")[..]].concat(),
            "after the two end-of-archive blocks",
        ),
    ];
    let mut n = 0;
    for (shape, bytes, named) in &tar_shapes {
        for c in COMPS {
            let (e, msg, _) = refused(&compress(c, bytes));
            assert!(
                matches!(e, BundleError::Trailing { .. }) && !e.is_truncation(),
                "{shape} ({c:?}): {msg}"
            );
            assert!(
                msg.contains("unexpected data after the end of the archive") && msg.contains(named),
                "{shape} ({c:?}): {msg}"
            );
            n += 1;
        }
    }
    // Shapes of the compressed file: after the one zstd frame or gzip member.
    let z = zstd(&tar);
    let g = gzip(&tar);
    let mut file_shapes: Vec<(String, Vec<u8>, &str)> = vec![
        (
            "zstd + a garbage byte".into(),
            [&z[..], b"x"].concat(),
            "other bytes",
        ),
        (
            "zstd + zero bytes".into(),
            [&z[..], &[0u8; 100][..]].concat(),
            "zero bytes",
        ),
        (
            "zstd + a second zstd frame".into(),
            [&z[..], &zstd(b"smuggled")[..]].concat(),
            "a second zstd frame",
        ),
        (
            "zstd + an empty zstd frame".into(),
            [&z[..], &zstd(b"")[..]].concat(),
            "a second zstd frame",
        ),
        (
            "zstd + a gzip stream".into(),
            [&z[..], &gzip(b"smuggled")[..]].concat(),
            "a gzip member",
        ),
        (
            "gzip + a second gzip member".into(),
            [&g[..], &gzip(b"smuggled")[..]].concat(),
            "a gzip member",
        ),
        (
            "gzip + an empty gzip member".into(),
            [&g[..], &gzip(b"")[..]].concat(),
            "a gzip member",
        ),
        (
            "gzip + a zstd frame".into(),
            [&g[..], &zstd(b"smuggled")[..]].concat(),
            "a second zstd frame",
        ),
        (
            "gzip + garbage".into(),
            [&g[..], b"garbage"].concat(),
            "other bytes",
        ),
    ];
    for nibble in 0..16u8 {
        for payload in [&b""[..], b"smuggled across the gap"] {
            file_shapes.push((
                format!(
                    "zstd + skippable frame {nibble:x} ({} bytes)",
                    payload.len()
                ),
                [&z[..], &skippable(nibble, payload)[..]].concat(),
                "a zstd skippable frame",
            ));
        }
    }
    for (shape, bytes, named) in &file_shapes {
        let (e, msg, _) = refused(bytes);
        assert!(matches!(e, BundleError::Trailing { .. }), "{shape}: {msg}");
        let after = if shape.starts_with("zstd") {
            "after the end of the zstd frame"
        } else {
            "after the end of the gzip member"
        };
        assert!(msg.contains(named) && msg.contains(after), "{shape}: {msg}");
        // The offset named is where the extra bytes start in the file.
        let start = if shape.starts_with("zstd") {
            z.len()
        } else {
            g.len()
        };
        assert!(
            msg.contains(&format!("at byte {start} of the file")),
            "{shape}: {msg}"
        );
        n += 1;
    }
    // A second frame is read (zstd bundles are frames and their seek
    // table now): one that carries the bundle again decodes to entries
    // after the end-of-archive blocks, which the tar reader refuses.
    let (e, msg, _) = refused(&[&z[..], &z[..]].concat());
    assert!(matches!(e, BundleError::Trailing { .. }), "{msg}");
    assert!(
        msg.contains("another tar entry (`oci-layout`)")
            && msg.contains("after the two end-of-archive blocks"),
        "{msg}"
    );
    eprintln!("{} trailing-data shapes refused", n + 1);
}

#[test]
fn a_stream_that_does_not_start_with_a_bundle_is_refused_by_name() {
    let z = zstd(&raw_tar(&sample().entries()));
    for nibble in 0..16u8 {
        let bytes = [&skippable(nibble, b"hidden")[..], &z[..]].concat();
        let (e, msg, seen) = refused(&bytes);
        assert!(matches!(e, BundleError::Format(_)), "{msg}");
        assert!(msg.contains("zstd skippable frame"), "{msg}");
        assert!(!msg.contains("numeric field"), "{msg}");
        assert_eq!(seen.heads, 0);
    }
    for (magic, name) in [
        (&b"\xfd7zXZ\x00rest"[..], "xz"),
        (b"BZh91AY&SY", "bzip2"),
        (b"\x04\x22\x4d\x18rest", "lz4"),
        (b"PK\x03\x04rest", "zip"),
    ] {
        let (e, msg, _) = refused(magic);
        assert!(
            matches!(e, BundleError::Format(_)) && msg.contains(name),
            "{msg}"
        );
    }
}

#[test]
fn every_cut_says_the_bundle_is_truncated() {
    let tar = raw_tar(&sample().entries());
    // Every offset of the plain tar: inside a header, at an entry boundary,
    // inside an entry, inside the padding, inside the end-of-archive blocks.
    for cut in 0..tar.len() {
        let (e, msg, seen) = refused(&tar[..cut]);
        assert!(
            e.is_truncation() && msg.contains("truncated"),
            "cut at {cut}: {msg}"
        );
        assert!(
            matches!(e, BundleError::Truncated { .. }),
            "cut at {cut}: {msg}"
        );
        assert!(
            msg.contains(&format!("at byte {cut}")),
            "cut at {cut}: the offset is not named: {msg}"
        );
        assert!(seen.heads <= 1);
    }
    // The compressed streams, cut: the decompressor says its input ended.
    for c in [Comp::Zstd, Comp::Gzip] {
        let z = compress(c, &tar);
        for cut in (1..z.len()).step_by(7) {
            let (e, msg, _) = refused(&z[..cut]);
            assert!(
                e.is_truncation()
                    && matches!(e, BundleError::Truncated { .. })
                    && msg.starts_with("the bundle is truncated: "),
                "{c:?} cut at {cut}: {msg}"
            );
        }
    }
}

/// The sample bundle with its layer entry given tar type `byte`.
fn with_layer_type(byte: u8) -> Vec<u8> {
    let mut e = sample().entries();
    e[5].kind = tar::EntryType::new(byte);
    raw_tar(&e)
}

/// What the shared walker (import's lanes) says of the same bytes: `None`
/// when it walks them to the end.
fn walk(bytes: &[u8]) -> Option<String> {
    let mut w = TarWalker::new(bytes);
    loop {
        match w.next_entry() {
            Ok(Some(entry)) => {
                let name = entry.name.clone();
                let mut data = w.data(&name);
                if let Err(e) = std::io::copy(&mut data, &mut std::io::sink()) {
                    return Some(e.to_string());
                }
            }
            Ok(None) => return None,
            Err(e) => return Some(chain(&e)),
        }
    }
}

#[test]
fn only_regular_files_are_accepted_and_lanes_agree_with_the_reader() {
    let mut accepted = Vec::new();
    for byte in 0..=255u8 {
        let bytes = with_layer_type(byte);
        let (r, _) = read(&bytes);
        let lane = walk(&bytes);
        match r {
            Ok(_) => {
                assert!(lane.is_none(), "type {byte}: lane refuses {lane:?}");
                accepted.push(byte);
            }
            Err(e) => {
                let msg = chain(&e);
                assert!(!msg.chars().any(is_unsafe_char), "type {byte}: {msg:?}");
                assert!(
                    matches!(e, BundleError::ForbiddenEntry { .. }),
                    "type {byte}: {msg}"
                );
                // The lane stops at the same entry with the same error.
                assert_eq!(lane.as_deref(), Some(msg.as_str()), "type {byte}");
                match byte {
                    b'7' => assert!(msg.contains("entry type `7` (contiguous file)"), "{msg}"),
                    b'S' => assert!(
                        msg.contains("GNU sparse file) is not supported")
                            && !msg.contains("bad size field"),
                        "{msg}"
                    ),
                    _ => {}
                }
            }
        }
    }
    assert_eq!(accepted, vec![0, b'0'], "only regular files");
}

#[test]
fn a_sparse_entry_with_a_garbage_size_field_is_reported_by_its_type() {
    let mut e = sample().entries();
    e.truncate(5);
    let mut tar = tar_open(&e);
    let mut h = tar_header("blobs/sha256/00", tar::EntryType::GNUSparse, 0);
    // A terminal escape and NULs where the size should be.
    h[124..136].copy_from_slice(b"1\x1b[31m\0\0\0\0\0\0");
    let mut header = tar::Header::new_old();
    header.as_mut_bytes().copy_from_slice(&h[..512]);
    header.set_cksum();
    tar.extend_from_slice(header.as_bytes());
    tar.extend_from_slice(&[0u8; 1024]);
    let (_, msg, _) = refused(&tar);
    assert!(
        msg.contains("not supported") && !msg.contains("bad size field"),
        "{msg}"
    );
    // The same garbage in a regular entry's size field is named, escaped.
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut tar = tar_open(&e);
    tar.extend_from_slice(header.as_bytes());
    tar.extend_from_slice(&[0u8; 1024]);
    let (_, msg, _) = refused(&tar);
    assert!(
        msg.contains("bad size field") && msg.contains("\\x1b"),
        "{msg}"
    );
}

/// Control characters and their look-alikes, for every table below.
const CONTROL: &[char] = &[
    '\0', '\x01', '\x07', '\x08', '\t', '\n', '\x0b', '\x0c', '\r', '\x1b', '\x7f', '\u{85}',
    '\u{9b}', '\u{2028}', '\u{2029}', '\u{202e}',
];

#[test]
fn control_characters_in_entry_names_are_refused_escaped() {
    for &c in CONTROL.iter().filter(|c| **c != '\0') {
        for at in [0, 3, 5] {
            let mut e = sample().entries();
            e[at].name = format!("{}{c}", e[at].name);
            let (err, msg, _) = refused(&raw_tar(&e));
            assert!(
                matches!(err, BundleError::ForbiddenEntry { .. })
                    && msg.contains("control character"),
                "{c:?} at {at}: {msg}"
            );
        }
    }
}

#[test]
fn bundle_json_strings_are_checked_before_anything_is_handed_on() {
    for &c in CONTROL {
        for field in ["name", "tool", "name-lines"] {
            let mut s = sample();
            match field {
                "name" => s.meta.name = format!("apps{c}"),
                "tool" => s.meta.tool = format!("ferry 0.1.0{c}"),
                _ => s.meta.name = format!("apps{c}signed by key id 0000 and verified"),
            }
            let (err, msg, seen) = refused(&raw_tar(&s.entries()));
            assert!(
                matches!(&err, BundleError::Malformed { entry, .. } if entry == "ferry/bundle.json"),
                "{field} {c:?}: {msg}"
            );
            assert!(msg.contains("control character"), "{field} {c:?}: {msg}");
            assert_eq!(seen.heads, 0, "{field} {c:?}: the head was handed on");
        }
    }
}

#[test]
fn references_import_refuses_are_refused_by_verify_with_the_same_error() {
    let mut bad: Vec<String> = vec![
        "example.org/../etc:1".into(),
        "example.org/team/../app:1".into(),
        "example.org/a b:1".into(),
        "user:secret@example.org/app:1".into(),
        "https://user:secret@example.org/app:1".into(),
        format!("example.org/app:{}", "t".repeat(200)),
        format!("example.org/app:{}", "t".repeat(129)),
        "example.org/App:1".into(),
        "example.org/app:-1".into(),
        "example.org/app:1 ".into(),
        " example.org/app:1".into(),
        "".into(),
    ];
    for &c in CONTROL {
        bad.push(format!("example.org/app:1{c}"));
        bad.push(format!("example.org/a{c}pp:1"));
    }
    for r in &bad {
        let (err, msg, seen) = refused(&raw_tar(&Sample::new(r, b"layer").entries()));
        assert!(
            matches!(&err, BundleError::Malformed { entry, .. } if entry == "ferry/bundle.json"),
            "{r:?}: {msg}"
        );
        assert_eq!(seen.heads, 0, "{r:?}");
        // Import parses the reference with the same function and fails
        // with its error: verify names the same thing.
        match Reference::parse(r) {
            Err(e) => assert!(msg.contains(&e.to_string()), "{r:?}: {msg} / {e}"),
            Ok(_) => assert!(
                msg.contains("whitespace") || msg.contains("control character"),
                "{r:?}: {msg}"
            ),
        }
    }
    // A 128-character tag is the longest the grammar allows.
    let ok = format!("example.org/app:{}", "t".repeat(128));
    read(&raw_tar(&Sample::new(&ok, b"layer").entries()))
        .0
        .unwrap();
    // A file item is named by its URL: one token, no control characters.
    for r in [
        "https://example.org/a b.txt",
        "https://example.org/a\n.txt",
        "",
    ] {
        let e = craft::file_item_bundle(Kind::File, r, "files/a/a.txt", &[("a.txt", b"a")]);
        let (_, msg, seen) = refused(&raw_tar(&e));
        assert!(msg.contains("file item reference"), "{r:?}: {msg}");
        assert_eq!(seen.heads, 0);
    }
}

#[test]
fn index_json_annotations_must_be_text_and_agree_with_bundle_json() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let edits: Vec<(&str, Edit, &str)> = vec![
        (
            "another image name",
            Box::new(|ann| ann[ANN_IMAGE_NAME] = "evil.example/x:1".into()),
            "annotation `io.containerd.image.name` is `evil.example/x:1`",
        ),
        (
            "another kind",
            Box::new(|ann| ann["dev.ferry.kind"] = "file".into()),
            "annotation `dev.ferry.kind`",
        ),
        (
            "a path the item does not have",
            Box::new(|ann| ann["dev.ferry.path"] = "files/x".into()),
            "annotation `dev.ferry.path`",
        ),
        (
            "a newline in an extra annotation",
            Box::new(|ann| ann["org.example.note"] = "a\nserver = evil".into()),
            "control character",
        ),
        (
            "an escape in an annotation key",
            Box::new(|ann| ann["org.example\x1b[2J"] = "x".into()),
            "control character",
        ),
    ];
    for (what, edit, named) in edits {
        let mut s = sample();
        let mut index: serde_json::Value = serde_json::from_slice(&s.index).unwrap();
        edit(&mut index["manifests"][0]["annotations"]);
        s.index = serde_json::to_vec(&index).unwrap();
        s.repin();
        let (err, msg, seen) = refused(&raw_tar(&s.entries()));
        assert!(
            matches!(&err, BundleError::Malformed { entry, .. } if entry == "index.json"),
            "{what}: {msg}"
        );
        assert!(msg.contains(named), "{what}: {msg}");
        assert_eq!(seen.heads, 0, "{what}");
    }
}

#[test]
fn file_titles_import_refuses_are_refused_by_verify() {
    let good = craft::file_item_bundle(
        Kind::File,
        "https://example.org/a.txt",
        "files/a/a.txt",
        &[("a.txt", b"a"), ("a.txt.sha256", b"b")],
    );
    read(&raw_tar(&good)).0.unwrap();
    for title in [
        "..",
        ".",
        "../x",
        "a/b",
        "/etc/passwd",
        "a\\b",
        "",
        "a\nb",
        "a\rb",
        "a\x1bb",
        "a\0b",
    ] {
        let e = craft::file_item_bundle(
            Kind::File,
            "https://example.org/a.txt",
            "files/a/a.txt",
            &[(title, b"a")],
        );
        let (err, msg, seen) = refused(&raw_tar(&e));
        assert!(
            matches!(err, BundleError::Malformed { .. }),
            "{title:?}: {msg}"
        );
        assert!(
            msg.contains("invalid path") && msg.contains("https://example.org/a.txt"),
            "{title:?}: {msg}"
        );
        // Refused when the manifest is read: no blob was handed on.
        assert_eq!(seen.blobs, 0, "{title:?}");
        assert_eq!(seen.manifests, 0, "{title:?}");
    }
}

/// A split bundle written by the writer: (parts manifest path, its content).
fn split(dir: &std::path::Path, s: &Sample, part: u64) -> (std::path::PathBuf, PartsManifest) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("demo.tar.zst");
    let mut w = BundleWriter::create_split(&path, Compression::Zstd { level: 3 }, part).unwrap();
    w.write_head(&s.meta.to_json(), None, &s.index).unwrap();
    for b in [&s.manifest, &s.config, &s.layer] {
        w.write_blob(&Digest::of(b), b.len() as u64, &b[..])
            .unwrap();
    }
    let written = w.finish().unwrap();
    let parts = written.parts.unwrap();
    (parts.manifest_path, parts.manifest)
}

fn read_source(path: &std::path::Path) -> Result<Report, String> {
    let mut src = open_bundle(path).map_err(|e| chain(&e))?;
    let r = read_bundle(&mut src, ReadOptions::default(), &mut Seen::default());
    match r {
        Ok(r) => {
            src.finish().map_err(|e| chain(&e))?;
            Ok(r)
        }
        Err(e) => Err(src
            .diagnose()
            .map(|p| chain(&p))
            .unwrap_or_else(|| chain(&e))),
    }
}

#[test]
fn a_parts_manifest_naming_another_bundle_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Sample::new("example.org/team/a:1", &noise(300 << 10, 1));
    let mut b = Sample::new("example.org/team/b:1", &noise(300 << 10, 2));
    b.meta.name = "other".into();
    let (a_path, a_manifest) = split(&tmp.path().join("a"), &a, 64 << 10);
    let (b_path, b_manifest) = split(&tmp.path().join("b"), &b, 64 << 10);
    read_source(&a_path).unwrap();
    read_source(&b_path).unwrap();
    // A's manifest, listing B's parts (copied beside it under their names).
    let mut hybrid = a_manifest.clone();
    hybrid.parts = b_manifest.parts.clone();
    hybrid.size = b_manifest.size;
    hybrid.sha256 = b_manifest.sha256.clone();
    let dir = tmp.path().join("hybrid");
    std::fs::create_dir_all(&dir).unwrap();
    for p in &b_manifest.parts {
        std::fs::copy(tmp.path().join("b").join(&p.name), dir.join(&p.name)).unwrap();
    }
    let manifest = dir.join("demo.parts.json");
    std::fs::write(&manifest, hybrid.to_json()).unwrap();
    let err = open_bundle(&manifest).unwrap_err();
    assert!(matches!(err, PartsError::Identity { .. }), "{err}");
    let msg = chain(&err);
    assert!(
        msg.contains("names bundle `sample`")
            && msg.contains("carry bundle `other`")
            && msg.contains(&a_manifest.bundle_json.to_string())
            && msg.contains(&b_manifest.bundle_json.to_string()),
        "{msg}"
    );
}

#[test]
fn parts_must_add_up_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Sample::new("example.org/team/a:1", &noise(300 << 10, 3));
    let (path, manifest) = split(&tmp.path().join("s"), &s, 64 << 10);
    let dir = path.parent().unwrap().to_path_buf();
    // An extra part after a short last one: the manifest does not add up.
    let extra = b"smuggled across the gap".to_vec();
    std::fs::write(dir.join("demo.tar.zst.part-999"), &extra).unwrap();
    let mut m = manifest.clone();
    m.parts.push(PartEntry {
        name: "demo.tar.zst.part-999".into(),
        size: extra.len() as u64,
        sha256: Digest::of(&extra),
    });
    m.size += extra.len() as u64;
    std::fs::write(&path, m.to_json()).unwrap();
    let err = chain(&open_bundle(&path).unwrap_err());
    assert!(err.contains("only the last part may be shorter"), "{err}");
    // An extra part after a full last one (the stream cut so that its last
    // part is exactly partSize): its bytes follow the zstd frame.
    let whole: Vec<u8> = manifest
        .parts
        .iter()
        .flat_map(|p| std::fs::read(dir.join(&p.name)).unwrap())
        .collect();
    let exact = tmp.path().join("exact");
    std::fs::create_dir_all(&exact).unwrap();
    let part_size = whole.len() as u64;
    for (name, bytes) in [
        ("demo.tar.zst.part-000", &whole),
        ("demo.tar.zst.part-001", &extra),
    ] {
        std::fs::write(exact.join(name), bytes).unwrap();
    }
    let mut m = manifest.clone();
    m.part_size = part_size;
    m.parts = vec![
        PartEntry {
            name: "demo.tar.zst.part-000".into(),
            size: part_size,
            sha256: Digest::of(&whole),
        },
        PartEntry {
            name: "demo.tar.zst.part-001".into(),
            size: extra.len() as u64,
            sha256: Digest::of(&extra),
        },
    ];
    m.size = part_size + extra.len() as u64;
    let mp = exact.join("demo.parts.json");
    std::fs::write(&mp, m.to_json()).unwrap();
    let err = read_source(&mp).unwrap_err();
    assert!(
        err.contains("unexpected data after the end of the archive")
            && err.contains(&format!("at byte {part_size} of the file")),
        "{err}"
    );
    // Without the extra part, the same stream in one part reads.
    m.parts.truncate(1);
    m.size = part_size;
    std::fs::write(&mp, m.to_json()).unwrap();
    read_source(&mp).unwrap();
}

#[test]
fn tar_header_fields_ferry_does_not_write_are_refused_so_nothing_rides_in_them() {
    // Every free field of a header could carry bytes across the gap that no
    // hash covers: each is refused, naming the field, by the reader and by
    // import's lanes alike.
    let fields: &[(&str, std::ops::Range<usize>, &[u8])] = &[
        ("mode", 100..108, b"0000600\0"),
        ("uid", 108..116, b"0001750\0"),
        ("gid", 116..124, b"0001750\0"),
        ("mtime", 136..148, b"14712345670\0"),
        ("link name", 157..257, b"smuggled"),
        ("magic", 257..263, b"ustar "),
        ("version", 263..265, b" \0"),
        ("user name", 265..297, b"smuggled"),
        ("group name", 297..329, b"wheel"),
        ("device major", 329..337, b"0000001\0"),
        ("device minor", 337..345, b"0000001\0"),
        // The prefix is part of the name in ustar: the name read is then
        // `smuggled/…`, which ferry would have written in the name field.
        ("name", 345..500, b"smuggled"),
        ("padding", 500..512, b"smuggled"),
    ];
    let entries = sample().entries();
    let layer_at = tar_open(&entries[..5]).len();
    for at in [0, 3, 5] {
        let header_at = tar_open(&entries[..at]).len();
        for (field, range, value) in fields {
            let mut tar = raw_tar(&entries);
            let h = &mut tar[header_at..header_at + 512];
            h[range.start..range.start + value.len()].copy_from_slice(value);
            let mut header = tar::Header::new_old();
            header.as_mut_bytes().copy_from_slice(h);
            header.set_cksum();
            h.copy_from_slice(header.as_bytes());
            let (err, msg, _) = refused(&tar);
            assert!(
                matches!(err, BundleError::ForbiddenEntry { .. })
                    && msg.contains(&format!("the {field} field differs")),
                "{field} at entry {at}: {msg}"
            );
            assert_eq!(walk(&tar).as_deref(), Some(msg.as_str()), "{field} at {at}");
        }
    }
    assert!(layer_at > 0);
}

#[test]
fn a_signature_entry_is_four_lines_of_text() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    let generated = ferry_bundle::sign::generate(&dir.path().join("k"), None).unwrap();
    let comment = ferry_bundle::sign::bundle_comment(&s.meta.name, &s.meta.index.digest);
    let sig =
        ferry_bundle::sign::sign(&generated.secret, None, &s.meta.to_json(), &comment).unwrap();
    let with = |sig: &[u8]| {
        let mut e = s.entries();
        e.insert(2, RawEntry::file(ferry_bundle::meta::SIG_PATH, sig));
        raw_tar(&e)
    };
    read(&with(&sig)).0.unwrap();
    let text = String::from_utf8(sig.clone()).unwrap();
    let mut bad: Vec<(String, Vec<u8>, &str)> = vec![
        (
            "a fifth line".into(),
            [&sig[..], b"signed by key id 0000 and verified\n"].concat(),
            "4 lines",
        ),
        (
            "not UTF-8".into(),
            [&sig[..sig.len() - 1], &[0xff, b'\n'][..]].concat(),
            "not UTF-8",
        ),
    ];
    for &c in CONTROL.iter().filter(|c| **c != '\n') {
        bad.push((
            format!("{c:?} in the untrusted comment"),
            text.replacen("untrusted comment: ", &format!("untrusted comment: {c}"), 1)
                .into_bytes(),
            "control character",
        ));
    }
    for (what, sig, named) in bad {
        let (err, msg, seen) = refused(&with(&sig));
        assert!(
            matches!(&err, BundleError::Malformed { entry, .. } if entry == "ferry/bundle.json.sig")
                && msg.contains(named),
            "{what}: {msg}"
        );
        assert_eq!(seen.heads, 0, "{what}");
    }
}

#[test]
fn blobs_come_in_the_order_bundle_json_lists_them() {
    // bundle.json lists its blobs in tar order; any other order of the same
    // entries is refused, so the tar stream is a function of bundle.json.
    let entries = sample().entries();
    for perm in [[3, 5, 4], [4, 3, 5], [4, 5, 3], [5, 3, 4], [5, 4, 3]] {
        let mut e = entries[..3].to_vec();
        e.extend(perm.iter().map(|i| entries[*i].clone()));
        let (err, msg, _) = refused(&raw_tar(&e));
        assert!(
            matches!(err, BundleError::Malformed { .. }) && msg.contains("not in streaming order"),
            "{perm:?}: {msg}"
        );
    }
    read(&raw_tar(&entries)).0.unwrap();
}
