//! The hostile corpus through the CLI: decompression bombs, a 100 MB
//! index.json, deeply nested JSON, indexes nested too deep or listing the
//! same child over and over. `ferry verify` and `ferry import` must refuse
//! each with exit 1 and a named error, in bounded memory (peak RSS measured
//! with `/usr/bin/time` when it is installed), and the target registry must
//! hold nothing afterwards.
//!
//! `e2e.rs` (`hostile_bundles_are_refused_and_nothing_is_pushed`) already
//! runs traversal, absolute paths, symlinks, duplicates, digest and size
//! mismatches, a missing blob, a wrong index.json and truncation through
//! the CLI; `signatures.rs` a wrong or missing signature; `parts.rs` a
//! missing, truncated or corrupt part. The library-level checks of the
//! bundles here are in `ferry-bundle/tests/hostile.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_bundle::craft::{raw_tar, tar_header, tar_open, zstd, zstd_frame, Sample};
use ferry_bundle::digest::Hasher;
use ferry_bundle::meta::{self, IndexPin};
use ferry_bundle::reader::{MAX_DEPTH, MAX_INDEX};
use ferry_bundle::Digest;
use ferry_testkit::registry::{require_tool, Registry};

/// Peak RSS allowed for refusing any of these bundles (the issue's bound).
const MAX_RSS_KIB: u64 = 64 * 1024;

const GIB: u64 = 1 << 30;

const TIME: &str = "/usr/bin/time";

struct Run {
    code: Option<i32>,
    text: String,
    /// Peak RSS in KiB, when `/usr/bin/time` measured it.
    rss_kib: Option<u64>,
}

/// Runs ferry (under `/usr/bin/time` when installed), killing it if it has
/// not finished after a very generous while: that only catches a hang.
fn ferry(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    let timed = Path::new(TIME).exists();
    let mut c = if timed {
        let mut c = Command::new(TIME);
        c.args(["-f", "FERRY-MAXRSS-KIB=%M", env!("CARGO_BIN_EXE_ferry")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
    };
    c.args(args)
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD")
        .env_remove("FERRY_LOG")
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = c.spawn().expect("run ferry");
    let mut status = None;
    for _ in 0..30_000 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("ferry {args:?} did not finish (killed after 300 s)");
    };
    let mut text = std::fs::read_to_string(&out).unwrap_or_default();
    text.push_str(&std::fs::read_to_string(&err).unwrap_or_default());
    let rss_kib = text
        .lines()
        .find_map(|l| l.strip_prefix("FERRY-MAXRSS-KIB="))
        .and_then(|v| v.trim().parse().ok());
    Run {
        code: status.code(),
        text,
        rss_kib,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Everything the registry stores: manifest revisions, tags and blobs
/// (empty when nothing was ever pushed).
fn stored(reg: &Registry) -> Vec<String> {
    let root = reg.storage_dir().join("docker/registry/v2");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                // Upload sessions (`_uploads`) are not content.
                if e.file_name() != "_uploads" {
                    stack.push(p);
                }
            } else {
                let rel = p
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if rel.ends_with("/link") || rel.ends_with("/data") {
                    out.push(rel);
                }
            }
        }
    }
    out.sort();
    out
}

struct Case {
    name: &'static str,
    bundle: Vec<u8>,
    /// Each must appear in the output of verify and of import.
    names: Vec<String>,
    /// Blobs that verified before the stream was refused: an import may
    /// have uploaded them already (never a manifest, never a tag).
    may_land: Vec<Digest>,
}

/// Checks one hostile bundle through verify and import; returns a line for
/// the log.
fn refuse(dir: &Path, target: &Registry, case: &Case) -> String {
    let path = dir.join(format!("{}.tar.zst", case.name));
    std::fs::write(&path, &case.bundle).unwrap();
    let mut rss = Vec::new();
    for (what, args) in [
        ("verify", vec!["verify", s(&path)]),
        (
            "import",
            vec![
                "import",
                s(&path),
                "--registry",
                &target.host(),
                "--attempts",
                "1",
            ],
        ),
    ] {
        let r = ferry(&args);
        assert_eq!(
            r.code,
            Some(1),
            "{} ({what}): expected exit 1:\n{}",
            case.name,
            r.text
        );
        assert!(
            r.text.contains("error:"),
            "{} ({what}): {}",
            case.name,
            r.text
        );
        for n in &case.names {
            assert!(
                r.text.contains(n.as_str()),
                "{} ({what}): the message does not name `{n}`:\n{}",
                case.name,
                r.text
            );
        }
        if let Some(kib) = r.rss_kib {
            assert!(
                kib <= MAX_RSS_KIB,
                "{} ({what}): peak RSS {kib} KiB is over {MAX_RSS_KIB} KiB",
                case.name
            );
            rss.push(format!("{what} {} MiB", kib.div_ceil(1024)));
        }
        let unexpected: Vec<String> = stored(target)
            .into_iter()
            .filter(|p| !case.may_land.iter().any(|d| p.contains(&d.hex())))
            .collect();
        assert_eq!(
            unexpected,
            Vec::<String>::new(),
            "{} ({what}): the target holds something",
            case.name
        );
    }
    if rss.is_empty() {
        format!("{}: refused by verify and import", case.name)
    } else {
        format!(
            "{}: refused by verify and import (peak RSS: {})",
            case.name,
            rss.join(", ")
        )
    }
}

// ---------------------------------------------------------------- the bundles

fn sample() -> Sample {
    Sample::new("example.org/team/app:1.0", &[42u8; 3000])
}

/// A GNU long-name or PAX record declaring `size` bytes (all zeros, in
/// a hand-made zstd frame) right after `oci-layout`.
fn extension_bomb(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
    let mut prefix = tar_open(&sample().entries()[..1]);
    prefix.extend(tar_header(name, kind, size));
    zstd_frame(&prefix, 0, size, 20, None)
}

/// The sample bundle whose layer is declared 4 GiB, its bytes (zeros) in a
/// frame with window log `window_log` that declares `declared` bytes.
fn layer_bomb(window_log: u8, declared: Option<u64>) -> Vec<u8> {
    let mut s = sample();
    s.meta.blobs[2].size = 4 * GIB;
    let mut e = s.entries();
    e[5].header_size = Some(4 * GIB);
    e[5].data.clear();
    // One frame: a second one would be refused as data after the first,
    // before it is decoded.
    let t = tar_open(&e);
    let declared = declared.map(|d| d + t.len() as u64 - 512);
    zstd_frame(&t, 0, 4 * GIB, window_log, declared)
}

/// A real 100 MB index.json (the index padded with spaces, in a hand-made
/// frame), pinned by bundle.json with its true digest and size.
fn big_index() -> (Vec<u8>, u64) {
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
    let mut out = zstd(&before);
    out.extend(zstd_frame(&[], b' ', pad, 20, None));
    out.extend(zstd(&after));
    (out, size)
}

/// The sample with its manifest given an `"extra"` field nested `depth`
/// arrays deep.
fn deep_manifest(depth: usize) -> (Vec<u8>, Digest) {
    let mut s = sample();
    let mut m = s.manifest[..s.manifest.len() - 1].to_vec();
    m.extend_from_slice(
        format!(r#","extra":{}{}}}"#, "[".repeat(depth), "]".repeat(depth)).as_bytes(),
    );
    let d = Digest::of(&m);
    s.meta.items[0].digest = d.clone();
    s.meta.items[0].size = m.len() as u64;
    s.meta.blobs[0].digest = d.clone();
    s.meta.blobs[0].size = m.len() as u64;
    s.manifest = m;
    s.index = meta::index_json(&s.meta.items);
    s.repin();
    (zstd(&raw_tar(&s.entries())), d)
}

fn cases() -> Vec<Case> {
    let (index, index_size) = big_index();
    let (deep, deep_digest) = deep_manifest(1_000_000);
    vec![
        Case {
            name: "gnu-long-name-bomb",
            bundle: extension_bomb(tar::EntryType::GNULongName, "././@LongLink", 16 * GIB),
            names: vec![
                "entry `././@LongLink` is not allowed".into(),
                "17179869184-byte GNULongName record".into(),
            ],
            may_land: vec![],
        },
        Case {
            name: "pax-header-bomb",
            bundle: extension_bomb(tar::EntryType::XHeader, "PaxHeaders/oci-layout", 16 * GIB),
            names: vec!["17179869184-byte XHeader record".into()],
            may_land: vec![],
        },
        Case {
            name: "zstd-frame-declared-small",
            bundle: layer_bomb(20, Some(512 + 3000)),
            // zstd refuses the frame as a whole (it declares the head and
            // 3512 bytes and holds far more) before handing out any of it,
            // so the reader names the start of the tar stream.
            names: vec![
                "failed to read the bundle stream at the tar stream at byte 0".into(),
                "decompression failed at byte 0".into(),
                "Destination buffer is too small".into(),
            ],
            may_land: vec![],
        },
        Case {
            name: "zstd-frame-2-gib-window",
            bundle: layer_bomb(31, None),
            names: vec!["Frame requires too much memory for decoding".into()],
            may_land: vec![],
        },
        Case {
            name: "100-mb-index-json",
            bundle: index,
            names: vec![format!(
                "entry `index.json` is {index_size} bytes, over the {MAX_INDEX}-byte limit"
            )],
            may_land: vec![],
        },
        Case {
            name: "deeply-nested-manifest",
            bundle: deep,
            names: vec![
                format!("entry `{}` is malformed", deep_digest.layout_path()),
                "more than 128 levels deep".into(),
            ],
            may_land: vec![],
        },
        Case {
            name: "indexes-nested-too-deep",
            bundle: zstd(&raw_tar(&sample().nested_indexes(MAX_DEPTH, 1))),
            names: vec![
                "example.org/team/app:1.0".into(),
                format!("nested deeper than {MAX_DEPTH} levels"),
            ],
            may_land: vec![],
        },
    ]
}

#[test]
fn hostile_bundles_are_refused_in_bounded_memory_and_nothing_is_pushed() {
    require_tool("docker-registry");
    if !Path::new(TIME).exists() {
        eprintln!("note: {TIME} not installed (Debian package `time`): peak RSS not measured");
    }
    let dir = tempfile::tempdir().unwrap();
    let all = cases();
    for case in &all {
        // A registry of its own: what an earlier case was allowed to leave
        // (verified blobs) must not count against this one.
        let target = Registry::start().unwrap();
        assert!(
            case.bundle.len() < 2 << 20,
            "{}: {} bytes",
            case.name,
            case.bundle.len()
        );
        say(&format!(
            "hostile corpus: {}",
            refuse(dir.path(), &target, case)
        ));
    }
    say(&format!(
        "hostile corpus: {} bundles refused by verify and import, no manifest and no unverified blob pushed",
        all.len()
    ));
}

/// Straight to stderr: seen with or without `--nocapture`.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[test]
fn an_index_listing_one_child_over_and_over_verifies_and_imports_without_hanging() {
    // Seven levels of indexes, each listing the next 64 times: 64^7 paths
    // to one image. Valid, so accepted; the point is that it finishes.
    require_tool("docker-registry");
    require_tool("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let target = Registry::start().unwrap();
    let path: PathBuf = dir.path().join("repetitive.tar.zst");
    std::fs::write(
        &path,
        zstd(&raw_tar(&sample().nested_indexes(MAX_DEPTH - 1, 64))),
    )
    .unwrap();
    let v = ferry(&["verify", s(&path)]);
    assert_eq!(v.code, Some(0), "{}", v.text);
    assert!(v.text.contains("is intact"), "{}", v.text);
    let i = ferry(&["import", s(&path), "--registry", &target.host()]);
    assert_eq!(i.code, Some(0), "{}", i.text);
    let raw = ferry_testkit::tools::skopeo_inspect_raw(&format!(
        "{}/example.org/team/app:1.0",
        target.host()
    ))
    .unwrap();
    let top: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(top["manifests"].as_array().unwrap().len(), 64);
}
