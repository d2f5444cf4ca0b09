//! The bundle format's hostile cases through the CLI (issue 12, classes 6,
//! 7, 11, 12 and the reader side of 1): data after the archive, with and
//! without a signature; what import would refuse, refused by `verify`
//! first with the same error; truncations and a parts manifest naming
//! another bundle; control characters that must never reach the terminal.
//! Every case runs `ferry verify` and `ferry import` against a real
//! `docker-registry` and asserts exit 1, the named error, and that nothing
//! landed: no manifest or tag at the registry (blobs that verified may have
//! been uploaded, never referenced), nothing under `--files`, no
//! `--emit-config` output, no receipt. The library-level variants (every
//! shape, offset and entry type) are in `ferry-bundle/tests/hostile_trailing.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ferry_bundle::craft::{self, raw_tar, tar_open, zstd, RawEntry, Sample};
use ferry_bundle::meta::{self, BlobMeta, Kind, Role, SIG_PATH};
use ferry_bundle::parts::PartsManifest;
use ferry_bundle::text::is_unsafe_char;
use ferry_bundle::writer::{BundleWriter, Compression};
use ferry_bundle::Digest;
use ferry_testkit::registry::{require_tool, Registry};

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD")
        .env_remove("FERRY_KEY_PASSWORD")
        .env_remove("FERRY_LOG")
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .stdin(Stdio::null())
        .output()
        .expect("run ferry")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The registry's manifests and tags (what would make anything visible):
/// empty when nothing landed. Blobs are listed apart.
fn registry_state(reg: &Registry) -> (Vec<String>, Vec<String>) {
    let root = reg.storage_dir().join("docker/registry/v2");
    let mut refs = Vec::new();
    let mut blobs = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if e.file_name() != "_uploads" {
                    stack.push(p);
                }
                continue;
            }
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.contains("/_manifests/") {
                refs.push(rel);
            } else if rel.ends_with("/data") || rel.ends_with("/link") {
                blobs.push(rel);
            }
        }
    }
    refs.sort();
    blobs.sort();
    (refs, blobs)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

struct Case {
    name: String,
    /// The bundle file (a `.tar.zst`, `.tar.gz`, `.tar`, or a parts manifest).
    path: PathBuf,
    /// Text every refusal must contain (verify's and import's).
    named: Vec<String>,
    /// Blobs that may have been uploaded before the refusal (verified, and
    /// never referenced by a manifest or tag).
    may_upload: Vec<Digest>,
    /// Extra arguments for import (e.g. lanes).
    import_args: Vec<String>,
    /// Extra arguments for both (e.g. `--key`).
    key: Option<PathBuf>,
}

impl Case {
    fn new(name: &str, path: PathBuf, named: &[&str]) -> Case {
        Case {
            name: name.into(),
            path,
            named: named.iter().map(|n| n.to_string()).collect(),
            may_upload: Vec::new(),
            import_args: Vec::new(),
            key: None,
        }
    }
}

/// Runs verify and import on `case`; asserts exit 1, the named error, no
/// raw control character in the output, and that nothing landed.
/// Adds a case's allowed uploads to [`EARLIER_UPLOADS`] when the case ends.
struct RecordUploads(Vec<Digest>);

impl Drop for RecordUploads {
    fn drop(&mut self) {
        let mine = std::mem::take(&mut self.0);
        EARLIER_UPLOADS.with(|e| e.borrow_mut().extend(mine));
    }
}

thread_local! {
    /// Blobs the cases run so far on this test's registry were allowed to
    /// upload (each test has its own registry and runs on one thread).
    static EARLIER_UPLOADS: std::cell::RefCell<Vec<Digest>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn refuse(case: &Case, reg: &Registry, work: &Path) -> String {
    let _record = RecordUploads(case.may_upload.clone());
    let mut verify = vec!["verify".to_string(), ps(&case.path).to_string()];
    if let Some(k) = &case.key {
        verify.extend(["--key".into(), ps(k).into()]);
    }
    let files = work.join(format!("files-{}", case.name));
    let emit = work.join(format!("emit-{}", case.name));
    let receipt = work.join(format!("receipt-{}.json", case.name));
    let mut import = vec![
        "import".to_string(),
        ps(&case.path).to_string(),
        "--registry".into(),
        reg.host(),
        "--attempts".into(),
        "1".into(),
        "--files".into(),
        ps(&files).into(),
        "--emit-config".into(),
        ps(&emit).into(),
        "--files-url".into(),
        "http://files.example".into(),
        "--receipt".into(),
        ps(&receipt).into(),
    ];
    if let Some(k) = &case.key {
        import.extend(["--key".into(), ps(k).into()]);
    }
    import.extend(case.import_args.iter().cloned());
    std::fs::create_dir_all(&files).unwrap();
    let mut lines = Vec::new();
    for (what, args) in [("verify", verify), ("import", import)] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = ferry(&args);
        let t = text(&o);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{} ({what}): expected exit 1:\n{t}",
            case.name
        );
        for n in &case.named {
            assert!(
                t.contains(n.as_str()),
                "{} ({what}): the message does not name `{n}`:\n{t}",
                case.name
            );
        }
        let raw: Vec<char> = t
            .chars()
            .filter(|c| *c != '\n' && is_unsafe_char(*c))
            .collect();
        assert!(
            raw.is_empty(),
            "{} ({what}): raw {raw:?} in\n{t}",
            case.name
        );
        let (refs, blobs) = registry_state(reg);
        assert_eq!(
            refs,
            Vec::<String>::new(),
            "{} ({what}): a manifest or tag landed",
            case.name
        );
        // A blob an earlier case of this registry was allowed to upload may
        // still be finishing at the registry after that ferry exited (the
        // registry completes a PUT whose body it already has): allowed.
        let earlier = EARLIER_UPLOADS.with(|e| e.borrow().clone());
        let stray: Vec<&String> = blobs
            .iter()
            .filter(|b| {
                !case
                    .may_upload
                    .iter()
                    .chain(earlier.iter())
                    .any(|d| b.contains(&d.hex()))
            })
            .collect();
        assert!(
            stray.is_empty(),
            "{} ({what}): blobs landed: {stray:?}",
            case.name
        );
        assert_eq!(
            files_under(&files),
            Vec::<String>::new(),
            "{} ({what})",
            case.name
        );
        assert_eq!(
            files_under(&emit),
            Vec::<String>::new(),
            "{} ({what})",
            case.name
        );
        assert!(
            !receipt.exists(),
            "{} ({what}): a receipt was written",
            case.name
        );
        let first = t.lines().find(|l| l.contains("error")).unwrap_or_default();
        lines.push(format!("{what}: {first}"));
    }
    format!("{}: {}", case.name, lines.join(" | "))
}

fn registry() -> Registry {
    // No silent skip: the suite needs the real registry.
    require_tool("docker-registry");
    Registry::start().expect("start docker-registry")
}

fn sample() -> Sample {
    Sample::new("example.org/team/app:1.0", &[42u8; 3000])
}

fn skippable(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x5a, 0x2a, 0x4d, 0x18];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn declared(s: &Sample) -> Vec<Digest> {
    s.meta.blobs.iter().map(|b| b.digest.clone()).collect()
}

#[test]
fn data_after_the_archive_is_refused_and_nothing_lands() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = sample();
    let tar = raw_tar(&s.entries());
    let smuggled = raw_tar(&[RawEntry::file("smuggled.txt", b"across the gap")]);
    let z = zstd(&tar);
    let shapes: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "entry-after-end",
            "tar.zst",
            zstd(&[&tar[..], &smuggled[..]].concat()),
            "another tar entry (`smuggled.txt`)",
        ),
        (
            "extra-zero-block",
            "tar",
            [&tar[..], &[0u8; 512][..]].concat(),
            "more zero padding",
        ),
        (
            "trailing-garbage",
            "tar.zst",
            [&z[..], b"garbage"].concat(),
            "other bytes at byte",
        ),
        (
            "skippable-frame",
            "tar.zst",
            [&z[..], &skippable(b"smuggled")[..]].concat(),
            "a zstd skippable frame",
        ),
        (
            "second-zstd-stream",
            "tar.zst",
            [&z[..], &zstd(&smuggled)[..]].concat(),
            "another tar entry (`smuggled.txt`)",
        ),
        (
            "second-gzip-member",
            "tar.gz",
            [
                &craft::raw_tgz(&s.entries())[..],
                &craft::raw_tgz(&[RawEntry::file("smuggled.txt", b"across the gap")])[..],
            ]
            .concat(),
            "a gzip member",
        ),
    ];
    let mut log = Vec::new();
    for (name, ext, bytes, named) in shapes {
        let path = write(dir, &format!("{name}.{ext}"), &bytes);
        let mut case = Case::new(
            name,
            path,
            &["unexpected data after the end of the archive", named],
        );
        case.may_upload = declared(&s);
        log.push(refuse(&case, &reg, dir));
    }
    eprintln!("{}", log.join("\n"));
}

/// A signed bundle (minisign key `dir/ops.{key,pub}`), as entries.
fn signed(dir: &Path, s: &Sample) -> (Vec<RawEntry>, PathBuf) {
    let generated = ferry_bundle::sign::generate(&dir.join("ops"), None).unwrap();
    let meta_json = s.meta.to_json();
    let comment = ferry_bundle::sign::bundle_comment(&s.meta.name, &s.meta.index.digest);
    let sig = ferry_bundle::sign::sign(&generated.secret, None, &meta_json, &comment).unwrap();
    let mut e = s.entries();
    e.insert(2, RawEntry::file(SIG_PATH, &sig));
    (e, generated.public)
}

#[test]
fn a_signed_bundle_with_an_appended_archive_fails_verify_key() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = sample();
    let (entries, public) = signed(dir, &s);
    let good = zstd(&raw_tar(&entries));
    let good_path = write(dir, "good.tar.zst", &good);
    let o = ferry(&["verify", ps(&good_path), "--key", ps(&public)]);
    assert!(o.status.success(), "{}", text(&o));
    // minisign still verifies the signature over bundle.json (the format of
    // the signature did not change) ...
    require_tool("minisign");
    let x = dir.join("x");
    std::fs::create_dir_all(&x).unwrap();
    std::fs::write(x.join("bundle.json"), s.meta.to_json()).unwrap();
    std::fs::write(
        x.join("bundle.json.sig"),
        &entries.iter().find(|e| e.name == SIG_PATH).unwrap().data,
    )
    .unwrap();
    let m = Command::new("minisign")
        .args([
            "-Vm",
            ps(&x.join("bundle.json")),
            "-x",
            ps(&x.join("bundle.json.sig")),
            "-p",
            ps(&public),
        ])
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", text(&m));
    // ... and the same signed bundle with an archive appended, in the tar
    // or after the frame, is refused with --key as without it.
    let other = raw_tar(&Sample::new("evil.example/x:1", b"smuggled").entries());
    let mut log = Vec::new();
    for (name, bytes, named) in [
        (
            "signed-appended-tar",
            zstd(&[&raw_tar(&entries)[..], &other[..]].concat()),
            "another tar entry (`oci-layout`)",
        ),
        (
            // A second frame is read (frames and their seek table): what it
            // carries comes after the end-of-archive blocks.
            "signed-appended-frame",
            [&good[..], &zstd(&other)[..]].concat(),
            "another tar entry (`oci-layout`)",
        ),
        (
            "signed-appended-skippable",
            [&good[..], &skippable(&other)[..]].concat(),
            "a zstd skippable frame",
        ),
    ] {
        let path = write(dir, &format!("{name}.tar.zst"), &bytes);
        let mut case = Case::new(
            name,
            path,
            &["unexpected data after the end of the archive", named],
        );
        case.key = Some(public.clone());
        case.may_upload = declared(&s);
        log.push(refuse(&case, &reg, dir));
    }
    eprintln!("{}", log.join("\n"));
}

fn ps(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The sample image with a second large layer, so that import with
/// `--chunk-mib 1 --jobs 4` hands the large layers to parallel lanes.
fn two_large_layers() -> (Sample, Vec<u8>) {
    let mut s = Sample::new("example.org/team/big:1", &vec![1u8; 2 << 20]);
    let second = vec![2u8; 3 << 20];
    let mut m: serde_json::Value = serde_json::from_slice(&s.manifest).unwrap();
    m["layers"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": Digest::of(&second).to_string(),
        "size": second.len(),
    }));
    s.manifest = serde_json::to_vec(&m).unwrap();
    let md = Digest::of(&s.manifest);
    s.meta.items[0].digest = md.clone();
    s.meta.items[0].size = s.manifest.len() as u64;
    s.meta.blobs[0].digest = md;
    s.meta.blobs[0].size = s.manifest.len() as u64;
    s.meta.blobs.push(BlobMeta {
        digest: Digest::of(&second),
        size: second.len() as u64,
        role: Role::Layer,
        media_type: Some("application/vnd.oci.image.layer.v1.tar+gzip".into()),
    });
    s.index = meta::index_json(&s.meta.items);
    s.repin();
    (s, second)
}

#[test]
fn what_import_would_refuse_verify_refuses_first_with_the_same_error() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = Vec::new();
    let long_tag = format!("example.org/team/app:{}", "t".repeat(200));
    for (name, reference, named) in [
        (
            "ref-dotdot",
            "example.org/../etc:1",
            "invalid image reference `example.org/../etc:1`",
        ),
        (
            "ref-space",
            "example.org/team/a b:1",
            "invalid image reference `example.org/team/a b:1`",
        ),
        (
            "ref-userinfo",
            "user:secret@example.org/app:1",
            "invalid image reference `user:secret@example.org/app:1`",
        ),
        (
            "ref-long-tag",
            long_tag.as_str(),
            "must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}",
        ),
        (
            "ref-newline",
            "example.org/team/app:1\nexample.org/evil:2",
            "invalid image reference `example.org/team/app:1\\nexample.org/evil:2`",
        ),
    ] {
        let s = Sample::new(reference, b"layer");
        let path = write(
            dir,
            &format!("{name}.tar.zst"),
            &zstd(&raw_tar(&s.entries())),
        );
        log.push(refuse(
            &Case::new(
                name,
                path,
                &["entry `ferry/bundle.json` is malformed", named],
            ),
            &reg,
            dir,
        ));
    }
    // A file item whose layer title is `..`.
    for (name, title) in [("title-dotdot", ".."), ("title-slash", "../../etc/passwd")] {
        let e = craft::file_item_bundle(
            Kind::File,
            "https://example.org/data.txt",
            "files/example/data.txt",
            &[(title, b"data")],
        );
        let path = write(dir, &format!("{name}.tar.zst"), &zstd(&raw_tar(&e)));
        log.push(refuse(
            &Case::new(
                name,
                path,
                &["https://example.org/data.txt", "invalid path"],
            ),
            &reg,
            dir,
        ));
    }
    // A large layer stored as tar type 7 (contiguous file), read by
    // parallel lanes and by the reader: both refuse the same entry, and
    // import exits 1 (it used to exit 3 with lanes).
    let (s, second) = two_large_layers();
    let mut e = s.entries();
    e.push(RawEntry::file(&Digest::of(&second).layout_path(), &second));
    e[5].kind = tar::EntryType::Continuous;
    let path = write(dir, "type-7.tar.zst", &zstd(&raw_tar(&e)));
    let mut case = Case::new(
        "type-7-with-lanes",
        path,
        &["entry type `7` (contiguous file) is not allowed"],
    );
    case.import_args = ["--chunk-mib", "1", "--jobs", "4"]
        .map(String::from)
        .to_vec();
    case.may_upload = vec![Digest::of(&s.config)];
    log.push(refuse(&case, &reg, dir));
    // A sparse entry: named by its type, not as a bad size field.
    let mut e = sample().entries();
    e[5].kind = tar::EntryType::GNUSparse;
    let path = write(dir, "sparse.tar.zst", &zstd(&raw_tar(&e)));
    let mut case = Case::new(
        "sparse",
        path,
        &["entry type `S` (GNU sparse file) is not supported"],
    );
    case.may_upload = vec![Digest::of(&sample().config)];
    log.push(refuse(&case, &reg, dir));
    eprintln!("{}", log.join("\n"));
}

#[test]
fn truncations_and_mismatched_parts_are_named() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = sample();
    let entries = s.entries();
    let tar = raw_tar(&entries);
    let mut log = Vec::new();
    let at_boundary = tar_open(&entries[..5]);
    let in_header = &tar[..tar_open(&entries[..5]).len() + 100];
    for (name, bytes, named) in [
        (
            "cut-at-entry-boundary",
            at_boundary.clone(),
            format!(
                "the stream ends at byte {} after entry `{}`",
                at_boundary.len(),
                entries[4].name
            ),
        ),
        (
            "cut-before-end-blocks",
            tar_open(&entries),
            format!(
                "the stream ends at byte {} after entry `{}`",
                tar.len() - 1024,
                entries[5].name
            ),
        ),
        (
            "cut-inside-a-header",
            in_header.to_vec(),
            "inside the tar header".to_string(),
        ),
    ] {
        let path = write(dir, &format!("{name}.tar"), &bytes);
        let mut case = Case::new(name, path, &["the bundle is truncated", &named]);
        case.may_upload = declared(&s);
        log.push(refuse(&case, &reg, dir));
    }
    // A parts manifest naming bundle A, listing bundle B's parts.
    let split = |sub: &str, s: &Sample| -> (PathBuf, PartsManifest) {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let mut w = BundleWriter::create_split(
            &d.join("demo.tar.zst"),
            Compression::Zstd { level: 3 },
            64 << 10,
        )
        .unwrap();
        w.write_head(&s.meta.to_json(), None, &s.index).unwrap();
        for b in [&s.manifest, &s.config, &s.layer] {
            w.write_blob(&Digest::of(b), b.len() as u64, &b[..])
                .unwrap();
        }
        let p = w.finish().unwrap().parts.unwrap();
        (p.manifest_path, p.manifest)
    };
    let noise = |seed: u64| -> Vec<u8> {
        let mut x = seed | 1;
        (0..300 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    let a = Sample::new("example.org/team/a:1", &noise(1));
    let mut b = Sample::new("example.org/team/b:1", &noise(2));
    b.meta.name = "bundle-b".into();
    let (_, am) = split("a", &a);
    let (_, bm) = split("b", &b);
    let mut hybrid = am.clone();
    hybrid.parts = bm.parts.clone();
    hybrid.size = bm.size;
    hybrid.sha256 = bm.sha256.clone();
    let h = dir.join("hybrid");
    std::fs::create_dir_all(&h).unwrap();
    for p in &bm.parts {
        std::fs::copy(dir.join("b").join(&p.name), h.join(&p.name)).unwrap();
    }
    let mp = h.join("demo.parts.json");
    std::fs::write(&mp, hybrid.to_json()).unwrap();
    log.push(refuse(
        &Case::new(
            "parts-of-another-bundle",
            mp,
            &[
                "names bundle `sample`",
                "carry bundle `bundle-b`",
                "belong to different bundles",
            ],
        ),
        &reg,
        dir,
    ));
    eprintln!("{}", log.join("\n"));
}

#[test]
fn control_characters_in_bundle_strings_never_reach_the_terminal() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut log = Vec::new();
    for (i, c) in [
        '\n', '\r', '\x1b', '\0', '\x7f', '\u{85}', '\u{2028}', '\u{202e}',
    ]
    .into_iter()
    .enumerate()
    {
        let payload =
            format!("apps{c}  signed by key id 0123456789ABCDEF and verified with --key ops.pub");
        for field in ["name", "tool"] {
            let mut s = sample();
            if field == "name" {
                s.meta.name = payload.clone();
            } else {
                s.meta.tool = payload.clone();
            }
            let path = write(
                dir,
                &format!("ctl-{field}-{i}.tar.zst"),
                &zstd(&raw_tar(&s.entries())),
            );
            let case = Case::new(
                &format!("control-{field}-{i}"),
                path,
                &[
                    "entry `ferry/bundle.json` is malformed",
                    "control character",
                ],
            );
            let line = refuse(&case, &reg, dir);
            // The injected text never starts a line of its own.
            let o = ferry(&["verify", ps(&case.path)]);
            assert!(
                !text(&o)
                    .lines()
                    .any(|l| l.trim_start().starts_with("signed by")),
                "{}",
                text(&o)
            );
            log.push(line);
        }
    }
    eprintln!("{}", log.join("\n"));
}
