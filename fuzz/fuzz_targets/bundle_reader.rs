//! Arbitrary bytes as a bundle file, through the reader `ferry verify`,
//! `ferry inspect` and `ferry import` use: [`read_bundle`].
//!
//! The first byte is the mode, the rest the file:
//!
//! - bit 0: clear, the rest is fed as it is (the reader detects zstd, gzip
//!   or a plain tar from its first bytes, so a raw seed may be any of the
//!   three); set, the rest is a tar that is zstd-compressed here first, so
//!   mutations of the tar structure also reach the reader through a valid
//!   zstd stream;
//! - bit 1: `ReadOptions::keep_going` (import) instead of stopping at the
//!   first bad blob (verify);
//! - bits 2-3: what the visitor does with a streamed blob: nothing (verify),
//!   read it to the end (import), read one chunk and leave the rest to the
//!   reader, or stop the read with an error (inspect stops after the
//!   manifests);
//! - bit 4: the rest is a tar whose header checksums are recomputed here
//!   first (before compressing, with bit 0), so that mutated header fields
//!   (sizes, types, names) reach the reader's own checks instead of the tar
//!   crate's checksum test;
//! - bits 5-6: data appended after the file, its bytes taken from the end
//!   of the input (the byte after the mode says how many, up to 255):
//!   nothing, a zstd skippable frame carrying them, a second zstd frame of
//!   them, or the bytes as they are. A file with anything appended must
//!   never be read successfully (the whole file is accounted for), unless
//!   what follows a zstd frame is exactly the seek table that lists it
//!   (`ferry_bundle::frames`: its bytes are the frame's sizes);
//! - bit 7: the appended data goes before the file instead (a skippable
//!   frame or bytes in front of the stream), which must be refused too.
//!
//! The visitor does what the CLI's do with what it is handed: parses every
//! manifest again, reads the signer's key id from a signature.
//!
//! Beyond "no panic, no hang, bounded memory", a successful read must agree
//! with itself: a strict read reports no bad blob and no failed item, and
//! every item of the head is reported good or failed; the head it hands on
//! carries no control character in any string (name, tool, references,
//! paths, annotations); and no error message carries a raw control
//! character (everything quoted from the bundle is escaped).

#![no_main]

use std::io::Read;

use ferry_bundle::craft;
use ferry_bundle::frames::{Frame, SeekTable};
use ferry_bundle::manifest;
use ferry_bundle::meta::BlobMeta;
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, VisitResult, Visitor,
};
use ferry_bundle::sign;
use ferry_bundle::text::is_unsafe_char;
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct Stop;
impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped by the visitor")
    }
}
impl std::error::Error for Stop {}

struct Harness {
    /// Bits 2-3 of the mode.
    blobs: u8,
    items: Option<usize>,
    open_blobs: usize,
}

impl Visitor for Harness {
    fn head(&mut self, head: &Head) -> VisitResult {
        assert!(self.items.is_none(), "head visited twice");
        // Nothing that could steer a terminal or an emitted file gets past
        // the reader.
        assert!(head.meta.check().is_ok(), "a head that fails its own check");
        let meta = &head.meta;
        for text in [&meta.name, &meta.tool]
            .into_iter()
            .chain(meta.items.iter().map(|i| &i.reference))
            .chain(meta.items.iter().filter_map(|i| i.path.as_ref()))
            .chain(
                head.index
                    .iter()
                    .flat_map(|d| d.annotations.iter().flat_map(|(k, v)| [k, v])),
            )
        {
            assert!(
                !text.chars().any(is_unsafe_char),
                "a control character handed on: {text:?}"
            );
        }
        self.items = Some(head.meta.items.len());
        if let Some(sig) = &head.signature {
            let _ = sign::signature_key_id(sig).map(|k| k.to_string());
        }
        let _ = head.meta.blob_bytes();
        Ok(())
    }

    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult {
        assert!(self.items.is_some(), "manifest visited before the head");
        assert!(blob.role.is_manifest(), "a non-manifest handed over as one");
        assert_eq!(bytes.len() as u64, blob.size, "manifest of another size");
        if let Ok(p) = manifest::parse(bytes, blob.media_type.as_ref().map(AsRef::as_ref)) {
            for d in p.manifests.iter().chain(p.blobs()) {
                if let Some(platform) = &d.platform {
                    let _ = (platform.to_short(), platform.matches("linux/amd64"));
                }
            }
        }
        Ok(())
    }

    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        assert!(self.items.is_some(), "blob visited before the head");
        self.open_blobs += 1;
        let mut buf = vec![0u8; 4096];
        match self.blobs {
            0 => Ok(()),
            1 => {
                let n = std::io::copy(data, &mut std::io::sink())?;
                assert!(n <= blob.size, "blob {} longer than declared", blob.digest);
                Ok(())
            }
            2 => {
                let _ = data.read(&mut buf)?;
                Ok(())
            }
            _ => Err(Box::new(Stop)),
        }
    }

    fn blob_end(&mut self, _blob: &BlobMeta, _verdict: Result<(), &BlobFault>) -> VisitResult {
        assert!(self.open_blobs > 0, "blob_end without blob");
        self.open_blobs -= 1;
        Ok(())
    }
}

/// Walks the tar headers of `bytes` and rewrites each one's checksum.
fn fix_checksums(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut at = 0usize;
    while at + 512 <= out.len() {
        let block = &mut out[at..at + 512];
        if block.iter().all(|b| *b == 0) {
            break;
        }
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(block);
        header.set_cksum();
        block.copy_from_slice(header.as_bytes());
        let size = header.entry_size().unwrap_or(0);
        let padded = size.div_ceil(512).saturating_mul(512);
        match usize::try_from(padded)
            .ok()
            .and_then(|p| at.checked_add(512)?.checked_add(p))
        {
            Some(next) => at = next,
            None => break,
        }
    }
    out
}

/// `FERRY_FUZZ_DEBUG=1 cargo +nightly fuzz run TARGET FILE` prints what
/// happened to one input (triage; off while fuzzing).
fn debug() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FERRY_FUZZ_DEBUG").is_some())
}

/// The data bits 5-7 of the mode put around the file, and where.
/// The size of the compressed stream of `rest` (mode bit 0).
fn compressed_len(mode: u8, rest: &[u8]) -> usize {
    if mode & 1 == 1 {
        craft::zstd(rest).len()
    } else {
        rest.len()
    }
}

fn surround(mode: u8, file: &[u8], extra: &[u8]) -> Option<Vec<u8>> {
    let piece = match (mode >> 5) & 3 {
        0 => return None,
        1 => {
            let mut f = vec![
                0x50 | (extra.first().copied().unwrap_or(0) & 0x0f),
                0x2a,
                0x4d,
                0x18,
            ];
            f.extend_from_slice(&(extra.len() as u32).to_le_bytes());
            f.extend_from_slice(extra);
            f
        }
        2 => craft::zstd(extra),
        _ if extra.is_empty() => return None,
        _ => extra.to_vec(),
    };
    Some(if mode & 128 != 0 {
        [&piece[..], file].concat()
    } else {
        [file, &piece[..]].concat()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Bits 5-6: the last `n` bytes are the data put around the file.
    let (rest, extra) = if (mode >> 5) & 3 != 0 {
        let Some((&n, rest)) = rest.split_first() else {
            return;
        };
        let n = (n as usize).min(rest.len());
        rest.split_at(rest.len() - n)
    } else {
        (rest, &[][..])
    };
    let fixed;
    let rest: &[u8] = if mode & 16 != 0 {
        fixed = fix_checksums(rest);
        &fixed
    } else {
        rest
    };
    let compressed;
    let file: &[u8] = if mode & 1 == 1 {
        compressed = craft::zstd(rest);
        &compressed
    } else {
        rest
    };
    let surrounded = surround(mode, file, extra);
    let file: &[u8] = surrounded.as_deref().unwrap_or(file);
    let options = ReadOptions {
        keep_going: mode & 2 != 0,
    };
    let mut harness = Harness {
        blobs: (mode >> 2) & 3,
        items: None,
        open_blobs: 0,
    };
    let result = read_bundle(file, options, &mut harness);
    if debug() {
        eprintln!("mode {mode:#04x}: {result:#?}");
    }
    match result {
        Ok(report) => {
            // The one thing that may follow a zstd frame: the seek table
            // that lists exactly it (its bytes are the frame's sizes, so it
            // carries nothing).
            let its_table = mode & 1 == 1 && mode & 128 == 0 && (mode >> 5) & 3 == 1 && {
                let table = SeekTable::new(vec![Frame {
                    compressed: compressed_len(mode, rest) as u32,
                    decompressed: rest.len() as u32,
                }])
                .encode();
                file.ends_with(&table) && file.len() == compressed_len(mode, rest) + table.len()
            };
            assert!(
                surrounded.is_none() || its_table,
                "a file with data around it was read as intact"
            );
            let items = harness.items.expect("a bundle read without a head");
            assert_eq!(
                report.good_items.len() + report.failed_items.len(),
                items,
                "items neither good nor failed"
            );
            if !options.keep_going {
                assert!(report.bad_blobs.is_empty(), "strict read with bad blobs");
                assert!(
                    report.failed_items.is_empty(),
                    "strict read with failed items"
                );
            }
            assert_eq!(harness.open_blobs, 0, "a streamed blob without its verdict");
        }
        Err(e) => {
            // What the CLI prints: the message and its causes.
            let _ = e.is_truncation();
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&s.to_string());
                source = s.source();
            }
            assert!(
                !msg.chars().any(is_unsafe_char),
                "an error message with a raw control character: {msg:?}"
            );
            if let BundleError::Visitor(v) = &e {
                let _ = v.is::<Stop>();
            }
        }
    }
});
