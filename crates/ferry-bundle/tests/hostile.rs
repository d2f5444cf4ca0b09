//! Hostile bundles the reader must refuse with a named error, in bounded
//! memory, without reading what it need not read: decompression bombs (tar
//! extension records, zstd frames that lie about their size or ask for a
//! huge window), a 100 MB index.json, nesting deeper than allowed.
//!
//! `reader.rs` covers the rest of the corpus (traversal, absolute paths,
//! links, devices, duplicates, names that are not digests, size mismatches,
//! truncation, a declared-200-MB index.json without content, dangling
//! descriptors); `ferry/tests/hostile.rs` runs these bundles through the CLI.
//!
//! The bombs here are read lazily from [`Lazy`], which refuses to be read
//! past a limit: a reader that regressed into reading a bomb fails the test
//! with that message instead of exhausting the machine's memory.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::{self, Read};

use ferry_bundle::craft::{raw_tar, tar_header, tar_open, zstd_frame, Sample};
use ferry_bundle::digest::Hasher;
use ferry_bundle::meta::{self, BlobMeta, IndexPin};
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, VisitResult, Visitor, MAX_DEPTH,
};
use ferry_bundle::Digest;

/// What the visitor saw.
#[derive(Default)]
struct Seen {
    heads: usize,
    manifests: usize,
    /// Bytes of streamed blobs read.
    blob_bytes: u64,
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
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = data.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.blob_bytes += n as u64;
        }
    }
    fn blob_end(&mut self, _blob: &BlobMeta, _verdict: Result<(), &BlobFault>) -> VisitResult {
        Ok(())
    }
}

/// The error and its causes, joined.
fn chain(e: &BundleError) -> String {
    ferry_bundle::text::error_chain(e)
}

fn refused(source: impl Read + Send) -> (String, Seen) {
    let mut seen = Seen::default();
    match read_bundle(source, ReadOptions::default(), &mut seen) {
        Ok(r) => panic!("the bundle was accepted: {r:?}"),
        Err(e) => (chain(&e), seen),
    }
}

/// A stream made of literal bytes and long runs of one byte, produced as it
/// is read; reading past `limit` bytes is an error that names the bomb.
struct Lazy {
    parts: Vec<(Vec<u8>, u8, u64)>,
    part: usize,
    pos: u64,
    read: u64,
    limit: u64,
}

impl Lazy {
    /// `parts`: (literal bytes, then `count` copies of `fill`).
    fn new(parts: Vec<(Vec<u8>, u8, u64)>, limit: u64) -> Lazy {
        Lazy {
            parts,
            part: 0,
            pos: 0,
            read: 0,
            limit,
        }
    }
}

impl Read for Lazy {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some((bytes, fill, count)) = self.parts.get(self.part) else {
                return Ok(0);
            };
            let len = bytes.len() as u64 + count;
            if self.pos >= len {
                self.part += 1;
                self.pos = 0;
                continue;
            }
            if self.read >= self.limit {
                return Err(io::Error::other(format!(
                    "the reader went on into the bomb: {} bytes read",
                    self.read
                )));
            }
            let n = if self.pos < bytes.len() as u64 {
                let from = &bytes[self.pos as usize..];
                let n = from.len().min(buf.len());
                buf[..n].copy_from_slice(&from[..n]);
                n
            } else {
                let n = (len - self.pos).min(buf.len() as u64) as usize;
                buf[..n].fill(*fill);
                n
            };
            self.pos += n as u64;
            self.read += n as u64;
            return Ok(n);
        }
    }
}

fn sample() -> Sample {
    Sample::new("example.org/team/app:1.0", &[42u8; 3000])
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[test]
fn tar_extension_records_are_refused_by_their_header_unread() {
    // A GNU long name, long link or PAX header is read whole into memory by
    // the tar crate before the entry it describes: declared 16 GiB, it
    // would take 16 GiB. The reader refuses it on sight.
    let s = sample();
    let good = s.entries();
    for (kind, name) in [
        (tar::EntryType::GNULongName, "././@LongLink"),
        (tar::EntryType::GNULongLink, "././@LongLink"),
        (tar::EntryType::XHeader, "PaxHeaders/oci-layout"),
        (tar::EntryType::XGlobalHeader, "pax_global_header"),
    ] {
        for at in [0, 3, 6] {
            // Before the head, inside it, and after the last blob.
            let mut prefix = tar_open(&good[..at]);
            prefix.extend(tar_header(name, kind, 16 * GIB));
            let (msg, seen) = refused(Lazy::new(vec![(prefix, 0, 16 * GIB)], 16 * MIB));
            assert!(
                msg.contains(&format!("entry `{name}` is not allowed"))
                    && msg.contains("GNU long names and PAX extended headers are not allowed"),
                "{kind:?} at {at}: {msg}"
            );
            assert!(msg.contains("17179869184-byte"), "{msg}");
            let before: u64 = good[3.min(at)..at]
                .iter()
                .skip(1)
                .map(|e| e.data.len() as u64)
                .sum();
            assert_eq!(seen.blob_bytes, before, "{kind:?} at {at}");
        }
    }
    // The same record inside a real zstd stream (a 2 MB file that expands
    // to 256 MiB): refused as well.
    let mut prefix = tar_open(&good[..1]);
    prefix.extend(tar_header(
        "././@LongLink",
        tar::EntryType::GNULongName,
        256 * MIB,
    ));
    let bomb = zstd_frame(&prefix, 0, 256 * MIB, 20, None);
    assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
    let (msg, _) = refused(&bomb[..]);
    assert!(msg.contains("268435456-byte GNULongName record"), "{msg}");
}

/// The sample bundle whose layer is declared `size` bytes (in bundle.json
/// and in its tar header), as the tar bytes up to and including that header.
fn up_to_a_layer_of(size: u64) -> Vec<u8> {
    let mut s = sample();
    s.meta.blobs[2].size = size;
    let mut e = s.entries();
    e[5].header_size = Some(size);
    e[5].data.clear();
    tar_open(&e)
}

#[test]
fn a_zstd_frame_that_declares_a_small_size_and_expands_huge_is_refused_early() {
    // The layer is declared 4 GiB, but the frame carrying it says its
    // content is 3 KB: the decoder stops at the lie, not 4 GiB later.
    // One frame (a second frame would be refused as data after the first,
    // before it is decoded): the head in raw blocks, then the layer.
    let tar = up_to_a_layer_of(4 * GIB);
    let head_len = tar.len() as u64 - 512;
    let bomb = zstd_frame(&tar, 0, 4 * GIB, 20, Some(head_len + 512 + 3000));
    assert!(bomb.len() < 200 * 1024, "{}", bomb.len());
    let (msg, seen) = refused(&bomb[..]);
    // The decompressor runs on its own thread, ahead of the tar reader, in
    // 512 KiB reads: zstd refuses the lying frame as a whole before handing
    // out any of it (a single frame: the head included), so the reader
    // names the start of the tar stream and the offset where it broke.
    assert!(
        msg.contains("failed to read the bundle stream at the tar stream at byte 0")
            && msg.contains("decompression failed at byte 0"),
        "{msg}"
    );
    assert_eq!(seen.heads, 0, "{msg}");
    // What was decoded before the lie showed is bounded by the decoder's
    // buffer (about 2 MiB), whatever the frame would expand to.
    assert!(
        seen.blob_bytes < 16 * MIB,
        "read {} bytes of the layer",
        seen.blob_bytes
    );
}

#[test]
fn a_zstd_frame_that_asks_for_a_2_gib_window_is_refused_not_obeyed() {
    // A decoder that honours a 2^31 window holds up to 2 GiB while the
    // (all-zero) layer streams; the reader refuses the frame instead.
    // One frame (a second frame would be refused as data after the first,
    // before it is decoded).
    let tar = up_to_a_layer_of(4 * GIB);
    for declared in [None, Some(tar.len() as u64 + 4 * GIB)] {
        let bomb = zstd_frame(&tar, 0, 4 * GIB, 31, declared);
        let (msg, seen) = refused(&bomb[..]);
        assert!(msg.contains("failed to read the bundle stream"), "{msg}");
        assert!(
            msg.to_ascii_lowercase().contains("memory") || msg.contains("window"),
            "{msg}"
        );
        // The frame header asks for the window: refused before its first
        // byte is decoded, so not one byte of the layer (nor of anything
        // else) streamed.
        assert_eq!(seen.blob_bytes, 0, "{msg}");
        assert_eq!(seen.heads, 0, "{msg}");
    }
}

#[test]
fn a_100_mb_index_json_is_refused_by_its_size_before_it_is_read() {
    // A real 100 MB index.json (valid JSON: the index padded with spaces),
    // pinned by bundle.json with its true digest and size.
    let mut s = sample();
    let pad: u64 = 100 * 1000 * 1000;
    let index = s.index.clone();
    let (open, close) = index.split_at(index.len() - 1);
    let mut h = Hasher::new();
    h.update(open);
    let spaces = vec![b' '; 1 << 20];
    let mut left = pad;
    while left > 0 {
        let n = left.min(spaces.len() as u64) as usize;
        h.update(&spaces[..n]);
        left -= n as u64;
    }
    h.update(close);
    let size = open.len() as u64 + pad + close.len() as u64;
    s.meta.index = IndexPin {
        digest: h.finish(),
        size,
    };
    let mut e = s.entries();
    e[2].header_size = Some(size);
    e[2].data.clear();
    let mut before = tar_open(&e[..3]);
    before.extend_from_slice(open);
    let mut after = close.to_vec();
    after.resize(after.len() + (512 - size as usize % 512) % 512, 0);
    after.extend(raw_tar(&e[3..]));
    let (msg, seen) = refused(Lazy::new(vec![(before, b' ', pad), (after, 0, 0)], 8 * MIB));
    assert!(
        msg.contains(&format!(
            "entry `index.json` is {size} bytes, over the {}-byte limit",
            ferry_bundle::reader::MAX_INDEX
        )),
        "{msg}"
    );
    assert_eq!(seen.heads, 0);
}

#[test]
fn indexes_nested_deeper_than_the_limit_are_refused_by_name() {
    // Content addressing rules out a true cycle (an index cannot hold its
    // own digest); the nearest thing, a chain index → index → … whose
    // layers sit deeper than MAX_DEPTH, is refused, one level less accepted.
    let ok = raw_tar(&sample().nested_indexes(MAX_DEPTH - 1, 1));
    read_bundle(&ok[..], ReadOptions::default(), &mut Seen::default()).unwrap();
    let (msg, _) = refused(&raw_tar(&sample().nested_indexes(MAX_DEPTH, 1))[..]);
    assert!(
        msg.contains("example.org/team/app:1.0")
            && msg.contains(&format!("nested deeper than {MAX_DEPTH} levels")),
        "{msg}"
    );
}

#[test]
fn an_index_listing_the_same_child_over_and_over_is_checked_in_linear_time() {
    // Seven levels, each listing the next 64 times: 64^7 paths to the
    // image (a 100 KB bundle). A graph check that walks every path never
    // ends; one that remembers what it checked is instant. The wait below
    // only catches such a hang: it is not a timing assertion.
    let bundle = raw_tar(&sample().nested_indexes(MAX_DEPTH - 1, 64));
    assert!(bundle.len() < 200 * 1024, "{}", bundle.len());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = read_bundle(&bundle[..], ReadOptions::default(), &mut Seen::default());
        let _ = tx.send(r.map(|r| r.good_items).map_err(|e| chain(&e)));
    });
    let good = rx
        .recv_timeout(std::time::Duration::from_secs(300))
        .expect("the graph check of a repetitive index did not finish: an exponential walk?")
        .unwrap();
    assert_eq!(good, vec!["example.org/team/app:1.0".to_string()]);
}

/// The sample bundle with `manifest` as its image manifest (everything that
/// pins it updated).
fn with_manifest(manifest: Vec<u8>) -> Vec<u8> {
    let mut s = sample();
    let d = Digest::of(&manifest);
    s.meta.items[0].digest = d.clone();
    s.meta.items[0].size = manifest.len() as u64;
    s.meta.blobs[0].digest = d;
    s.meta.blobs[0].size = manifest.len() as u64;
    s.manifest = manifest;
    s.index = meta::index_json(&s.meta.items);
    s.repin();
    raw_tar(&s.entries())
}

/// The sample's manifest with `"extra": <value>` added.
fn manifest_with(value: &str) -> Vec<u8> {
    let m = sample().manifest;
    let mut out = m[..m.len() - 1].to_vec();
    out.extend_from_slice(format!(r#","extra":{value}}}"#).as_bytes());
    out
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn deeply_nested_json_is_refused_by_name_without_a_stack_overflow() {
    // In a manifest, in a field ferry does not read (a million levels).
    let m = manifest_with(&nested(1_000_000));
    let md = Digest::of(&m);
    let (msg, seen) = refused(&with_manifest(m)[..]);
    assert!(
        msg.contains(&format!("entry `{}` is malformed", md.layout_path()))
            && msg.contains("more than 128 levels deep"),
        "{msg}"
    );
    assert_eq!(seen.manifests, 0);
    // Objects count as much as arrays.
    let objects = format!("{}{}", r#"{"a":"#.repeat(200), "}".repeat(200));
    let (msg, _) = refused(&with_manifest(manifest_with(&objects))[..]);
    assert!(msg.contains("more than 128 levels deep"), "{msg}");
    // Nesting within the limit, and brackets inside strings, are fine.
    for fine in [nested(100), format!("\"{}\\\"\"", "[{".repeat(10_000))] {
        let b = with_manifest(manifest_with(&fine));
        read_bundle(&b[..], ReadOptions::default(), &mut Seen::default())
            .unwrap_or_else(|e| panic!("{}: {}", &fine[..20], chain(&e)));
    }
    // In index.json (parsed like a manifest).
    let mut s = sample();
    let mut index = s.index[..s.index.len() - 1].to_vec();
    index.extend_from_slice(format!(r#","extra":{}}}"#, nested(100_000)).as_bytes());
    s.index = index;
    s.repin();
    let (msg, seen) = refused(&raw_tar(&s.entries())[..]);
    assert!(
        msg.contains("entry `index.json` is malformed") && msg.contains("levels deep"),
        "{msg}"
    );
    assert_eq!(seen.heads, 0);
    // In ferry/bundle.json: refused as malformed (its fields are typed).
    let s = sample();
    let json = String::from_utf8(s.meta.to_json()).unwrap();
    for bad in [
        json.replacen('{', &format!(r#"{{"extra":{},"#, nested(100_000)), 1),
        json.replacen(
            r#""items":"#,
            &format!(r#""items":{}"#, "[".repeat(100_000)),
            1,
        ),
    ] {
        let mut e = s.entries();
        e[1].data = bad.into_bytes();
        let (msg, seen) = refused(&raw_tar(&e)[..]);
        assert!(
            msg.contains("entry `ferry/bundle.json` is malformed"),
            "{}",
            &msg[..msg.len().min(400)]
        );
        assert_eq!(seen.heads, 0);
    }
}
