//! A zstd bundle is frames and their seek table (`ferry_bundle::frames`):
//! a large blob's entry is a frame of its own that decodes alone, `zstd -d`
//! reads the file as one stream, and the reader accepts exactly the frames
//! the table lists, and nothing around them.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use ferry_bundle::craft::{self, noise, Sample};
use ferry_bundle::frames::{self, Frame, SeekTable};
use ferry_bundle::meta::BlobMeta;
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, VisitResult, Visitor,
};
use ferry_bundle::writer::{header, BundleWriter, Compression};
use ferry_bundle::Digest;

struct Drain;
impl Visitor for Drain {
    fn head(&mut self, _: &Head) -> VisitResult {
        Ok(())
    }
    fn manifest(&mut self, _: &BlobMeta, _: &[u8]) -> VisitResult {
        Ok(())
    }
    fn blob(&mut self, _: &BlobMeta, _: &mut dyn Read) -> VisitResult {
        Ok(())
    }
    fn blob_end(&mut self, _: &BlobMeta, v: Result<(), &BlobFault>) -> VisitResult {
        assert!(v.is_ok());
        Ok(())
    }
}

fn read(bytes: &[u8]) -> Result<(), BundleError> {
    read_bundle(bytes, ReadOptions::default(), &mut Drain).map(|_| ())
}

/// A one-image bundle whose layer is `layer_len` bytes, written by ferry.
fn written(layer_len: usize, name: &str) -> (Sample, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let s = Sample::new("example.org/team/app:1.0", &noise(layer_len, 1));
    let path = dir.path().join(name);
    let mut w = BundleWriter::create(&path, Compression::default()).unwrap();
    w.write_head(&s.meta.to_json(), None, &s.index).unwrap();
    for b in [&s.manifest, &s.config, &s.layer] {
        w.write_blob(&Digest::of(b), b.len() as u64, &b[..])
            .unwrap();
    }
    w.finish().unwrap();
    (s, std::fs::read(&path).unwrap())
}

/// The table at the end of `bytes`, and where it starts.
fn table_of(bytes: &[u8]) -> (SeekTable, usize) {
    let len = SeekTable::len_from_footer(&bytes[bytes.len() - frames::FOOTER..]).unwrap() as usize;
    let start = bytes.len() - len;
    (SeekTable::parse(&bytes[start..]).unwrap(), start)
}

fn message(e: &BundleError) -> String {
    ferry_bundle::text::error_chain(e)
}

const LARGE: usize = frames::OWN_FRAME_FROM as usize + 4321;

#[test]
fn a_large_blob_is_a_frame_of_its_own_that_decodes_alone() {
    let (s, bytes) = written(LARGE, "b.tar.zst");
    read(&bytes).unwrap();
    let (table, start) = table_of(&bytes);
    // The head, manifest and config; the layer's entry; the end of the tar.
    assert_eq!(table.frames().len(), 3, "{table:?}");
    assert_eq!(table.compressed_len() as usize, start);
    let placed: Vec<_> = table.placed().collect();
    let layer = &placed[1];
    let padded = s.layer.len().div_ceil(512) * 512;
    assert_eq!(layer.frame.decompressed as usize, 512 + padded);
    assert_eq!(
        placed[2].frame.decompressed, 1024,
        "the end-of-archive blocks"
    );
    // The layer's frame alone: its tar header, its bytes, its padding.
    let frame =
        &bytes[layer.offset as usize..(layer.offset + u64::from(layer.frame.compressed)) as usize];
    let alone = zstd::stream::decode_all(frame).unwrap();
    let digest = Digest::of(&s.layer);
    assert_eq!(
        &alone[..512],
        header(&digest.layout_path(), s.layer.len() as u64, false).as_bytes()
    );
    assert_eq!(&alone[512..512 + s.layer.len()], &s.layer[..]);
    assert!(alone[512 + s.layer.len()..].iter().all(|b| *b == 0));
    // Every frame together is the tar, as the reader's decompression gives it.
    let mut tar = Vec::new();
    ferry_bundle::reader::decompress(&bytes[..])
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(
        tar.len() as u64,
        placed
            .iter()
            .map(|p| u64::from(p.frame.decompressed))
            .sum::<u64>()
    );
    // Reproducible.
    assert_eq!(
        Digest::of(&written(LARGE, "again.tar.zst").1),
        Digest::of(&bytes)
    );
}

#[test]
fn a_bundle_of_small_blobs_is_one_frame_and_its_table() {
    let (_, bytes) = written(3000, "small.tar.zst");
    let (table, _) = table_of(&bytes);
    assert_eq!(table.frames().len(), 1);
    read(&bytes).unwrap();
}

#[test]
fn zstd_reads_the_frames_as_one_stream_and_passes_over_the_table() {
    assert!(
        Command::new("zstd").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success()),
        "required tool `zstd` is missing: install it with `apt-get install -y zstd` (or run `cargo xtask test`, which installs it)"
    );
    let (_, bytes) = written(LARGE, "cli.tar.zst");
    let mut child = Command::new("zstd")
        .args(["-d", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.clone();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success());
    let mut tar = Vec::new();
    ferry_bundle::reader::decompress(&bytes[..])
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(Digest::of(&out.stdout), Digest::of(&tar));
}

#[test]
fn frames_the_table_does_not_list_exactly_are_refused() {
    let (s, bytes) = written(LARGE, "h.tar.zst");
    let (table, start) = table_of(&bytes);
    let frames_only = &bytes[..start];
    let f = table.frames().to_vec();
    let with_table = |t: Vec<Frame>| [frames_only, &SeekTable::new(t).encode()[..]].concat();
    let skippable = |payload: &[u8]| {
        let mut b = vec![0x50, 0x2a, 0x4d, 0x18];
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(payload);
        b
    };
    let mut shifted = f.clone();
    shifted[0].compressed += 1;
    shifted[1].compressed -= 1;
    let mut bigger = f.clone();
    bigger[2].decompressed += 512;
    let mut one_more = f.clone();
    one_more.push(f[2]);
    let layer_frame = table.placed().nth(1).unwrap();
    let (a, b) = (
        layer_frame.offset as usize,
        (layer_frame.offset + u64::from(layer_frame.frame.compressed)) as usize,
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no table",
            frames_only.to_vec(),
            "a second zstd frame with no seek table",
        ),
        (
            "a frame's bounds moved",
            with_table(shifted),
            "not the seek table of the 3 frames before it",
        ),
        (
            "a frame's size",
            with_table(bigger),
            "not the seek table of the 3 frames before it",
        ),
        (
            "a frame too few",
            with_table(f[..2].to_vec()),
            "not the seek table of the 3 frames before it",
        ),
        (
            "a frame too many",
            with_table(one_more),
            "not the seek table of the 3 frames before it",
        ),
        (
            "bytes after the table",
            [&bytes[..], b"x"].concat(),
            "after the end of the zstd seek table",
        ),
        (
            "the table twice",
            [&bytes[..], &bytes[start..]].concat(),
            "after the end of the zstd seek table",
        ),
        (
            "another skippable frame before the table",
            [frames_only, &skippable(b"smuggled")[..], &bytes[start..]].concat(),
            "a zstd skippable frame",
        ),
        (
            "a skippable frame between frames",
            [&bytes[..a], &skippable(b"smuggled")[..], &bytes[a..]].concat(),
            "a zstd skippable frame",
        ),
        (
            "the layer's frame twice",
            [&bytes[..b], &bytes[a..]].concat(),
            "",
        ),
        (
            "the layer's frame left out",
            [&bytes[..a], &bytes[b..]].concat(),
            "",
        ),
    ];
    for (what, bad, named) in cases {
        let e = read(&bad).expect_err(what);
        let msg = message(&e);
        assert!(msg.contains(named), "{what}: {msg}");
        assert!(
            !msg.chars().any(|c| c.is_control() && c != '\n'),
            "{what}: {msg}"
        );
    }
    // A table of checksums (the format allows them; ferry writes none).
    let mut flagged = bytes.clone();
    let n = flagged.len();
    flagged[n - 5] = 0x80;
    let msg = message(&read(&flagged).unwrap_err());
    assert!(msg.contains("descriptor 0x80"), "{msg}");
    // A one-frame bundle (as written before the table) reads, with or
    // without a table listing its frame.
    let tar = craft::raw_tar(&s.entries());
    let one = craft::zstd(&tar);
    read(&one).unwrap();
    let listed = SeekTable::new(vec![Frame {
        compressed: one.len() as u32,
        decompressed: tar.len() as u32,
    }]);
    read(&[&one[..], &listed.encode()[..]].concat()).unwrap();
}
