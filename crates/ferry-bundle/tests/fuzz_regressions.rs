//! Inputs the fuzz targets under `fuzz/` found (docs/fuzzing.md), kept as
//! tests on stable so that what they taught stays true. Each feeds the exact
//! input a target reported, or its minimised form, to the product code the
//! target drives, and asserts a clean outcome: a named error, never a panic.
//!
//! Binary inputs live in `fixtures/fuzz/`, named `<target>-<what>.bin`,
//! first byte the target's mode byte as the target reads it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::Read;
use std::path::Path;

use ferry_bundle::craft;
use ferry_bundle::manifest;
use ferry_bundle::meta::BlobMeta;
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, VisitResult, Visitor,
};
use ferry_bundle::spec::validate_platform;

/// A visitor that reads every blob to its end, as import does.
struct ReadAll;

impl Visitor for ReadAll {
    fn head(&mut self, _head: &Head) -> VisitResult {
        Ok(())
    }
    fn manifest(&mut self, _blob: &BlobMeta, _bytes: &[u8]) -> VisitResult {
        Ok(())
    }
    fn blob(&mut self, _blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        std::io::copy(data, &mut std::io::sink())?;
        Ok(())
    }
    fn blob_end(&mut self, _blob: &BlobMeta, _verdict: Result<(), &BlobFault>) -> VisitResult {
        Ok(())
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/fuzz")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// bundle_reader, mode 0x05 (the rest zstd-compressed by the target, every
/// blob read): a multi-arch bundle whose `ferry/bundle.json` was mangled.
/// LeakSanitizer once reported 32 bytes from glibc's thread-exit record here:
/// the reader gives up on the head while its decompression thread is still
/// running, and `thread::scope` returns before that OS thread has quite
/// exited. Not reproducible on the same input and not a leak (the target now
/// runs with `-detect_leaks=0`); what is kept is that the early error is
/// clean and that a read that stops early never waits on the decompressor,
/// however often it is repeated.
#[test]
fn bundle_reader_early_error_in_a_zstd_stream() {
    let input = fixture("bundle_reader-early-error-zstd.bin");
    let (&mode, rest) = input.split_first().expect("an input");
    assert_eq!(mode, 0x05);
    let file = craft::zstd(rest);
    for _ in 0..50 {
        let err = read_bundle(file.as_slice(), ReadOptions::default(), &mut ReadAll)
            .expect_err("a mangled bundle.json is refused");
        assert!(
            matches!(&err, BundleError::Malformed { entry, .. } if entry == "ferry/bundle.json"),
            "{err}"
        );
    }
    // The same bytes uncompressed take the single-threaded path to the same verdict.
    let err = read_bundle(rest, ReadOptions::default(), &mut ReadAll).expect_err("refused");
    assert!(
        matches!(&err, BundleError::Malformed { entry, .. } if entry == "ferry/bundle.json"),
        "{err}"
    );
}

/// manifest_parser (minimised): an index child whose platform has a `/`
/// inside a field. Its short form `windows/amd/4` reads as another platform
/// (architecture `amd`, variant `4`), so the platform does not match its own
/// short form. Harmless, and pinned here: the short form only labels
/// (messages, `absent` entries), and a platform filter, always a validated
/// `os/arch[/variant]`, compares field by field and never selects it.
#[test]
fn manifest_parser_platform_field_with_a_slash() {
    let doc = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"sha256:{}","size":1,"platform":{{"os":"windows","architecture":"amd/4","os.version":"10.0.17763.1234"}}}}]}}"#,
        manifest::DOCKER_LIST,
        manifest::DOCKER_MANIFEST,
        "a".repeat(64)
    );
    let parsed = manifest::parse(doc.as_bytes(), Some(manifest::DOCKER_LIST)).expect("parses");
    let platform = parsed.manifests[0].platform.as_ref().expect("a platform");
    assert_eq!(platform.architecture.to_string(), "amd/4");
    assert_eq!(platform.to_short(), "windows/amd/4");
    for filter in ["windows/amd/4", "windows/amd", "windows/amd/4/x"] {
        assert!(
            !platform.matches(filter),
            "`{filter}` selected architecture `amd/4`"
        );
    }
    // The one filter spelling that could look like it is valid, and still
    // does not select it.
    assert!(validate_platform("windows/amd/4").is_ok());
}

/// bundle_reader, mode bits 5-7 (data around the file): what the target
/// asserts — a file with a skippable frame, a second zstd frame or bytes
/// after (or before) it is never read as intact, and no error message
/// carries a raw control character — on the seeds' shapes, on stable.
#[test]
fn bundle_reader_data_around_the_file_is_never_read_as_intact() {
    let s = craft::Sample::new("example.org/team/app:1.0", &[42u8; 3000]);
    let tar = craft::raw_tar(&s.entries());
    let zst = craft::zstd(&tar);
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
        e.write_all(&tar).unwrap();
        e.finish().unwrap();
    }
    let mut n = 0;
    for file in [&tar, &zst, &gz] {
        assert!(read_bundle(&file[..], ReadOptions::default(), &mut ReadAll).is_ok());
        for extra in [
            &b""[..],
            b"x",
            b"\0\0\0\0",
            b"smuggled \x1b[2J across\n",
            &[0u8; 255],
        ] {
            for shape in 1..=3u8 {
                for before in [false, true] {
                    let piece = match shape {
                        1 => {
                            let mut f = vec![0x5e, 0x2a, 0x4d, 0x18];
                            f.extend_from_slice(&(extra.len() as u32).to_le_bytes());
                            f.extend_from_slice(extra);
                            f
                        }
                        2 => craft::zstd(extra),
                        _ if extra.is_empty() => continue,
                        _ => extra.to_vec(),
                    };
                    let bytes = if before {
                        [&piece[..], &file[..]].concat()
                    } else {
                        [&file[..], &piece[..]].concat()
                    };
                    for keep_going in [false, true] {
                        let err = read_bundle(&bytes[..], ReadOptions { keep_going }, &mut ReadAll)
                            .expect_err("read as intact");
                        let mut msg = err.to_string();
                        let mut src = std::error::Error::source(&err);
                        while let Some(c) = src {
                            msg.push_str(&c.to_string());
                            src = c.source();
                        }
                        assert!(
                            !msg.chars().any(ferry_bundle::text::is_unsafe_char),
                            "{msg:?}"
                        );
                        n += 1;
                    }
                }
            }
        }
    }
    assert!(n > 100, "{n}");
}
