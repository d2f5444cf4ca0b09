//! End to end against real registries: upstream → export → verify → import →
//! target, checked with skopeo (an independent client).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_bundle::craft::{raw_tar, zstd, RawEntry, Sample};
use ferry_bundle::Digest;
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::registry::{require_tool, Registry};
use ferry_testkit::tools::{skopeo_copy_all, skopeo_inspect_raw};

fn ferry(args: &[&str]) -> Output {
    ferry_env(args, &[])
}

fn ferry_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.args(args)
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD");
    // No credentials from the developer's own docker config.
    c.env("DOCKER_CONFIG", "/nonexistent-ferry-test");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run ferry")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "ferry failed ({:?}):\n{}",
        o.status.code(),
        text(o)
    );
    text(o)
}

fn tools() {
    require_tool("docker-registry");
    require_tool("skopeo");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client() -> ferry_registry::Client {
    ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap()
}

fn write_spec(dir: &Path, refs: &[String], extra: &str) -> PathBuf {
    let mut s = String::from("apiVersion: ferry.dev/v1\nname: e2e\n");
    s.push_str(extra);
    s.push_str("images:\n");
    for r in refs {
        s.push_str(&format!("  - {r}\n"));
    }
    let p = dir.join("bundle.yaml");
    std::fs::write(&p, s).unwrap();
    p
}

/// The repositories the target registry holds (empty when none).
fn catalog(reg: &Registry) -> Vec<String> {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{}/v2/_catalog", reg.host())])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            v["repositories"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        }
        _ => {
            // Fall back to the storage directory: repositories appear under docker/registry/v2/repositories.
            let dir = reg.storage_dir().join("docker/registry/v2/repositories");
            walk_repos(&dir)
        }
    }
}

fn walk_repos(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

fn sha(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

struct World {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    upstream: Registry,
    target: Registry,
    set: FixtureSet,
}

fn world(big: bool) -> World {
    world_with(&FixtureOptions {
        big_layer_mib: if big { Some(64) } else { None },
        ..Default::default()
    })
}

fn world_with(opts: &FixtureOptions) -> World {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Registry::start().unwrap();
    let target = Registry::start().unwrap();
    let set = FixtureSet::generate(opts);
    rt().block_on(push(&set, &client(), &upstream.host()))
        .unwrap();
    World {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        upstream,
        target,
        set,
    }
}

impl World {
    fn refs(&self) -> Vec<String> {
        self.set
            .images
            .iter()
            .map(|i| format!("{}/{}:{}", self.upstream.host(), i.repository, i.tag))
            .collect()
    }
    fn target_repo(&self, repository: &str) -> String {
        format!(
            "{}/{}/{}",
            self.target.host(),
            self.upstream.host().replace(':', "-"),
            repository
        )
    }
    fn export(&self, extra: &[&str]) -> PathBuf {
        let spec = write_spec(&self.dir, &self.refs(), "");
        let out = self.dir.join("bundle.tar.zst");
        let cache = self.dir.join("cache");
        let mut args = vec![
            "export",
            "-f",
            spec.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(&ferry(&args));
        out
    }
}

#[test]
fn images_arrive_byte_exact_at_the_target_and_a_second_import_changes_nothing() {
    tools();
    let w = world(true);
    let bundle = w.export(&[]);
    let b = bundle.to_str().unwrap();
    assert!(Path::new(&format!("{b}.sha256")).exists());
    let verify = ok(&ferry(&["verify", b]));
    assert!(verify.contains("is intact"), "{verify}");
    let inspect = ok(&ferry(&["inspect", b]));
    for i in &w.set.images {
        assert!(inspect.contains(&i.repository), "{inspect}");
    }
    let receipt = w.dir.join("receipt.json");
    let first = ok(&ferry(&[
        "--json",
        "import",
        b,
        "--registry",
        &w.target.host(),
        "--receipt",
        receipt.to_str().unwrap(),
    ]));
    let done: serde_json::Value = first
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "imported")
        .expect("imported event");
    assert_eq!(done["failed"].as_array().unwrap().len(), 0, "{first}");
    assert!(done["blobsUploaded"].as_u64().unwrap() > 0);

    // Every reference and every platform child: the bytes at the target hash to the upstream digest.
    for i in &w.set.images {
        let repo = w.target_repo(&i.repository);
        let raw = skopeo_inspect_raw(&format!("{repo}:{}", i.tag)).unwrap();
        assert_eq!(sha(&raw), i.top.digest.to_string(), "{repo}:{}", i.tag);
        for c in &i.children {
            let raw = skopeo_inspect_raw(&format!("{repo}@{}", c.digest)).unwrap();
            assert_eq!(sha(&raw), c.digest.to_string(), "{repo}@{}", c.digest);
        }
        // skopeo 1.9 cannot keep a Docker schema2 manifest in an `oci:` layout
        // (it would convert it), so Docker-typed images go to a `dir:` copy.
        let dest = w
            .dir
            .join(format!("copy-{}", i.repository.replace('/', "-")));
        let transport = if i.top.media_type.contains("docker") {
            "dir"
        } else {
            "oci"
        };
        skopeo_copy_all(
            &format!("docker://{repo}:{}", i.tag),
            &format!("{transport}:{}", dest.display()),
        )
        .unwrap();
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(
        r["repositories"].as_object().unwrap().len(),
        w.set.images.len()
    );

    // Idempotent: nothing uploaded, nothing pushed the second time.
    let second = ok(&ferry(&[
        "--json",
        "import",
        b,
        "--registry",
        &w.target.host(),
    ]));
    let done: serde_json::Value = second
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "imported")
        .expect("imported event");
    assert_eq!(done["blobsUploaded"], 0, "{second}");
    assert_eq!(done["manifestsPushed"], 0, "{second}");
}

#[test]
fn the_decompressed_bundle_is_an_oci_archive_skopeo_reads() {
    tools();
    let w = world(false);
    let bundle = w.export(&["--compression", "none"]);
    for i in w
        .set
        .images
        .iter()
        .filter(|i| i.top.media_type.contains("oci"))
    {
        let r = format!("{}/{}:{}", w.upstream.host(), i.repository, i.tag);
        let dest = w
            .dir
            .join(format!("out-{}", i.repository.replace('/', "-")));
        skopeo_copy_all(
            &format!("oci-archive:{}:{r}", bundle.display()),
            &format!("oci:{}", dest.display()),
        )
        .unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["digest"].as_str().unwrap(),
            i.top.digest.to_string()
        );
    }
}

#[test]
fn two_exports_of_the_same_content_are_byte_identical() {
    tools();
    let w = world(false);
    let a = std::fs::read(w.export(&[])).unwrap();
    let b = std::fs::read(w.export(&[])).unwrap();
    assert_eq!(sha(&a), sha(&b));
}

#[test]
fn a_platform_filter_keeps_the_index_bytes_and_records_what_is_absent() {
    tools();
    let w = world(false);
    let multi = w.set.image("fixtures/multiarch");
    let spec = write_spec(
        &w.dir,
        &[format!(
            "{}/{}:{}",
            w.upstream.host(),
            multi.repository,
            multi.tag
        )],
        "platforms: [linux/amd64]\n",
    );
    let out = w.dir.join("filtered.tar.zst");
    ok(&ferry(&[
        "export",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--cache",
        w.dir.join("c").to_str().unwrap(),
    ]));
    let verify = ok(&ferry(&["verify", out.to_str().unwrap()]));
    assert!(verify.contains("left out by the export filter"), "{verify}");
    let inspect = ok(&ferry(&["--json", "inspect", out.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(inspect.lines().last().unwrap()).unwrap();
    assert_eq!(v["items"][0]["digest"], multi.top.digest.to_string());
    assert_eq!(
        v["items"][0]["platforms"],
        serde_json::json!(["linux/amd64"])
    );
    assert!(v["absentChildren"].as_u64().unwrap() >= 1);
    // Debian's registry refuses a sparse index: the tag lands on the amd64 manifest.
    let imp = ok(&ferry(&[
        "import",
        out.to_str().unwrap(),
        "--registry",
        &w.target.host(),
    ]));
    assert!(imp.contains("note:"), "{imp}");
    let amd64 = multi
        .children
        .iter()
        .find(|c| c.platform.as_deref() == Some("linux/amd64"))
        .unwrap();
    let raw = skopeo_inspect_raw(&format!(
        "{}:{}",
        w.target_repo(&multi.repository),
        multi.tag
    ))
    .unwrap();
    assert_eq!(sha(&raw), amd64.digest.to_string());
}

#[test]
fn locked_export_refuses_when_a_tag_moved_and_names_it() {
    tools();
    let w = world(false);
    let refs = w.refs();
    let spec = write_spec(&w.dir, &refs, "");
    let lock = w.dir.join("ferry.lock");
    ok(&ferry(&[
        "lock",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        lock.to_str().unwrap(),
    ]));
    let before = std::fs::read(&lock).unwrap();
    ok(&ferry(&[
        "lock",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        lock.to_str().unwrap(),
    ]));
    assert_eq!(
        before,
        std::fs::read(&lock).unwrap(),
        "the lock is deterministic"
    );
    let out = w.dir.join("x.tar.zst");
    let cache = w.dir.join("cache");
    ok(&ferry(&[
        "export",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--lock",
        lock.to_str().unwrap(),
        "--locked",
        "--cache",
        cache.to_str().unwrap(),
    ]));
    // Move one tag upstream: point docker-v2's tag at the many-layers image.
    let moved = w.set.image("fixtures/docker-v2");
    let other = w.set.image("fixtures/many-layers");
    let c = client();
    rt().block_on(async {
        let src = ferry_registry::Repo {
            host: w.upstream.host(),
            path: other.repository.clone(),
        };
        let dst = ferry_registry::Repo {
            host: w.upstream.host(),
            path: moved.repository.clone(),
        };
        for b in &other.blobs {
            assert!(c.mount_blob(&dst, &b.digest, &src).await.unwrap());
        }
        c.put_manifest(
            &dst,
            &moved.tag,
            &other.top.media_type,
            other.top.bytes.clone(),
        )
        .await
        .unwrap();
    });
    let o = ferry(&[
        "export",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--lock",
        lock.to_str().unwrap(),
        "--locked",
        "--cache",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains(&format!(
            "{}/{}:{}",
            w.upstream.host(),
            moved.repository,
            moved.tag
        )),
        "{msg}"
    );
    assert!(
        msg.contains("now resolves to") && msg.contains(&other.top.digest.to_string()),
        "{msg}"
    );
}

/// Crafted bundles: each verification rule gives exit 1, names the problem,
/// and leaves the target without any manifest.
#[test]
fn hostile_bundles_are_refused_and_nothing_is_pushed() {
    require_tool("docker-registry");
    let dir = tempfile::tempdir().unwrap();
    let target = Registry::start().unwrap();
    let s = Sample::new("example.org/team/app:1.0", &vec![7u8; 5000]);
    let good = s.entries();
    let cases: Vec<(&str, Vec<RawEntry>, &str)> = vec![
        (
            "traversal",
            {
                let mut e = good.clone();
                e.push(RawEntry::file("blobs/../../x", b"x"));
                e
            },
            "is not allowed",
        ),
        (
            "absolute",
            {
                let mut e = good.clone();
                e.insert(0, RawEntry::file("/etc/x", b"x"));
                e
            },
            "absolute paths",
        ),
        (
            "symlink",
            {
                let mut e = good.clone();
                let mut l = RawEntry::file("blobs/sha256/l", b"");
                l.kind = tar::EntryType::Symlink;
                l.link = Some("/etc/passwd".into());
                e.push(l);
                e
            },
            "symbolic links",
        ),
        (
            "duplicate",
            {
                let mut e = good.clone();
                let d = e[5].clone();
                e.push(d);
                e
            },
            "appears twice",
        ),
        (
            "digest",
            {
                let mut e = good.clone();
                e[3].data[20] ^= 1;
                e
            },
            "hashes to",
        ),
        (
            "size",
            {
                let mut e = good.clone();
                e[5].data.push(1);
                e
            },
            "declares",
        ),
        (
            "missing",
            {
                let mut e = good.clone();
                e.pop();
                e
            },
            "missing",
        ),
        (
            "index",
            {
                let mut e = good.clone();
                e[2].data.push(b'\n');
                e
            },
            "index.json digest mismatch",
        ),
        ("truncated", vec![], "failed to read"),
    ];
    let count = cases.len();
    for (name, entries, expect) in cases {
        let bytes = if name == "truncated" {
            let z = zstd(&raw_tar(&good));
            z[..z.len() / 2].to_vec()
        } else {
            zstd(&raw_tar(&entries))
        };
        let path = dir.path().join(format!("{name}.tar.zst"));
        std::fs::write(&path, bytes).unwrap();
        let v = ferry(&["verify", path.to_str().unwrap()]);
        assert_eq!(v.status.code(), Some(1), "verify {name}: {}", text(&v));
        assert!(text(&v).contains(expect), "verify {name}: {}", text(&v));
        let i = ferry(&[
            "import",
            path.to_str().unwrap(),
            "--registry",
            &target.host(),
        ]);
        assert_eq!(i.status.code(), Some(1), "import {name}: {}", text(&i));
        assert!(text(&i).contains(expect), "import {name}: {}", text(&i));
        assert!(
            text(&i).starts_with("error:") || text(&i).contains("\nerror:"),
            "{}",
            text(&i)
        );
        let why = text(&i)
            .lines()
            .find(|l| l.contains(expect))
            .unwrap_or_default()
            .trim()
            .chars()
            .take(120)
            .collect::<String>();
        eprintln!("hostile bundle: {name}: refused by verify and import (exit 1: {why})");
    }
    // No manifest anywhere at the target.
    let repos = catalog(&target);
    for r in &repos {
        let tags = Command::new("curl")
            .args(["-sf", &format!("http://{}/v2/{r}/tags/list", target.host())])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap_or_default();
        assert!(
            v["tags"].is_null() || v["tags"].as_array().unwrap().is_empty(),
            "{r} has tags: {v}"
        );
    }
    eprintln!(
        "hostile bundle: {count} bundles refused by verify and import, no manifest at the target"
    );
}

#[test]
fn a_corrupt_layer_keeps_its_image_out_and_lets_the_rest_land_with_exit_3() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let target = Registry::start().unwrap();
    // Two images in one hand-made bundle: the second's layer is corrupted.
    let a = Sample::new("example.org/good/app:1", &vec![1u8; 4000]);
    let b = Sample::new("example.org/bad/app:1", &vec![2u8; 4000]);
    let mut meta = a.meta.clone();
    meta.items.extend(b.meta.items.clone());
    meta.items.sort_by(|x, y| x.reference.cmp(&y.reference));
    let mut blobs = vec![a.meta.blobs[0].clone(), b.meta.blobs[0].clone()];
    blobs.extend(a.meta.blobs[1..].iter().cloned());
    blobs.extend(b.meta.blobs[2..].iter().cloned());
    meta.blobs = blobs;
    let index = ferry_bundle::meta::index_json(&meta.items);
    meta.index = ferry_bundle::meta::IndexPin {
        digest: Digest::of(&index),
        size: index.len() as u64,
    };
    let blob = |x: &[u8]| RawEntry::file(&Digest::of(x).layout_path(), x);
    let mut bad_layer = b.layer.clone();
    bad_layer[0] ^= 1;
    let mut bad_entry = blob(&b.layer);
    bad_entry.data = bad_layer;
    let entries = vec![
        RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        RawEntry::file("ferry/bundle.json", &meta.to_json()),
        RawEntry::file("index.json", &index),
        blob(&a.manifest),
        blob(&b.manifest),
        blob(&a.config),
        blob(&a.layer),
        bad_entry,
    ];
    let path = dir.path().join("mixed.tar.zst");
    std::fs::write(&path, zstd(&raw_tar(&entries))).unwrap();
    let o = ferry(&[
        "import",
        path.to_str().unwrap(),
        "--registry",
        &target.host(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains("example.org/bad/app:1") && msg.contains("FAILED"),
        "{msg}"
    );
    let good = skopeo_inspect_raw(&format!("{}/example.org/good/app:1", target.host())).unwrap();
    assert_eq!(sha(&good), a.manifest_digest().to_string());
    assert!(skopeo_inspect_raw(&format!("{}/example.org/bad/app:1", target.host())).is_err());
}

#[test]
fn an_unreachable_target_exits_2_and_credentials_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sample::new("example.org/team/app:1.0", &[7u8; 100]);
    let path = dir.path().join("ok.tar.zst");
    std::fs::write(&path, zstd(&raw_tar(&s.entries()))).unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = ferry_env(
        &[
            "import",
            path.to_str().unwrap(),
            "--registry",
            &format!("127.0.0.1:{port}"),
            "--username",
            "alice",
            "--attempts",
            "1",
        ],
        &[("FERRY_PASSWORD", "s3cret-Pa55word")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("127.0.0.1:{port}")),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("s3cret-Pa55word"), "{}", text(&o));
    assert!(text(&o).contains("hint:"), "{}", text(&o));
}

#[test]
fn bad_specs_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bundle.yaml");
    std::fs::write(&spec, "apiVersion: ferry.dev/v1\nname: x\nimages:\n  - ref: nginx\n    platfroms: [linux/amd64]\n").unwrap();
    let o = ferry(&[
        "export",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        dir.path().join("o.tar.zst").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let msg = text(&o);
    assert!(
        msg.contains("bundle.yaml") && msg.contains("platfroms") && msg.contains("line 5"),
        "{msg}"
    );
    std::fs::write(
        &spec,
        "apiVersion: ferry.dev/v1\nname: x\nimages:\n  - list: refs.list\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("refs.list"),
        "# ok\nnginx:1.27\nNOT/A:REF:\n",
    )
    .unwrap();
    let o = ferry(&["lock", "-f", spec.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("refs.list:3:"), "{}", text(&o));
    std::fs::write(
        &spec,
        "apiVersion: ferry.dev/v1\nname: x\ncharts:\n  - repo: https://charts.example.org\n    name: app\n",
    )
    .unwrap();
    let o = ferry(&["export", "-f", spec.to_str().unwrap(), "-o", "x.tar.zst"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("charts[0]: a classic chart needs `version`"),
        "{}",
        text(&o)
    );
    std::fs::write(
        &spec,
        "apiVersion: ferry.dev/v1\nname: x\nopensearch:\n  version: 2.10\n  plugins: [repository-s3]\n",
    )
    .unwrap();
    let o = ferry(&["export", "-f", spec.to_str().unwrap(), "-o", "x.tar.zst"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("put the version `2.1` in quotes") && text(&o).contains("line 4"),
        "{}",
        text(&o)
    );
    std::fs::write(
        &spec,
        "apiVersion: ferry.dev/v1\nname: x\nfiles:\n  - url: https://x/y\n    sha256: abc\n    path: ../etc/passwd\n",
    )
    .unwrap();
    let o = ferry(&["export", "-f", spec.to_str().unwrap(), "-o", "x.tar.zst"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("files[0]: sha256 `abc` is not 64 hex digits"),
        "{}",
        text(&o)
    );
    let o = ferry(&["serve", "."]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("is not a ferry store"), "{}", text(&o));
}

/// Export through a fault-injecting proxy in front of the real upstream
/// (503 twice, then 429 with Retry-After), and import through one in front of
/// the real target: both succeed, and the retries happened.
#[test]
fn transient_registry_errors_are_retried_on_both_sides() {
    use ferry_testkit::proxy::{Action, Fault, FaultProxy};
    tools();
    let w = world(false);
    let proxy = FaultProxy::start(
        w.upstream.addr(),
        vec![
            Fault::new(Action::Status(503))
                .on_path("/manifests/")
                .times(2),
            Fault::new(Action::TooManyRequests {
                retry_after_secs: 1,
            })
            .on_path("/blobs/sha256:")
            .times(1),
            Fault::new(Action::Status(500))
                .on_path("/blobs/sha256:")
                .times(1),
        ],
    );
    let image = w.set.image("fixtures/many-layers");
    let spec = write_spec(
        &w.dir,
        &[format!(
            "{}/{}:{}",
            proxy.host(),
            image.repository,
            image.tag
        )],
        "",
    );
    let out = w.dir.join("retry.tar.zst");
    let o = ferry(&[
        "export",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--cache",
        w.dir.join("rc").to_str().unwrap(),
    ]);
    let msg = ok(&o);
    assert_eq!(proxy.faults_applied(), 4, "{msg}");
    assert!(
        msg.contains("503") || msg.contains("retry") || msg.contains("retrying"),
        "retries are logged: {msg}"
    );

    let tproxy = FaultProxy::start(
        w.target.addr(),
        vec![
            Fault::new(Action::Status(503))
                .on_method("PUT")
                .on_path("/blobs/uploads/")
                .times(2),
            Fault::new(Action::TooManyRequests {
                retry_after_secs: 1,
            })
            .on_method("PUT")
            .on_path("/manifests/")
            .times(1),
        ],
    );
    let o = ferry(&[
        "import",
        out.to_str().unwrap(),
        "--registry",
        &tproxy.host(),
    ]);
    ok(&o);
    assert_eq!(tproxy.faults_applied(), 3);
    let target_repo = format!(
        "{}/{}/{}",
        w.target.host(),
        proxy.host().replace(':', "-"),
        image.repository
    );
    let raw = skopeo_inspect_raw(&format!("{target_repo}:{}", image.tag)).unwrap();
    assert_eq!(sha(&raw), image.top.digest.to_string());
}

#[test]
fn dry_run_prints_the_plan_and_pushes_nothing() {
    tools();
    let w = world(false);
    let bundle = w.export(&[]);
    let o = ok(&ferry(&[
        "import",
        bundle.to_str().unwrap(),
        "--registry",
        &format!("{}/mirror", w.target.host()),
        "--map",
        &format!("{}=up", w.upstream.host()),
        "--dry-run",
    ]));
    assert!(o.contains("dry run: nothing pushed"), "{o}");
    let multi = w.set.image("fixtures/multiarch");
    assert!(
        o.contains(&format!(
            "{}/mirror/up/{}:{}",
            w.target.host(),
            multi.repository,
            multi.tag
        )),
        "{o}"
    );
    assert!(
        catalog(&w.target).is_empty(),
        "the dry run pushed something"
    );
}

#[test]
fn images_from_manifests_prints_a_list_file_and_from_manifests_feeds_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(
        &rendered,
        "---\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - image: nginx:1.27\n        - image: ghcr.io/a/b:1\n---\nkind: Pod\nspec:\n  containers:\n    - image: nginx:1.27\n",
    )
    .unwrap();
    let o = ferry(&["images", "from-manifests", rendered.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "docker.io/library/nginx:1.27\nghcr.io/a/b:1\n"
    );
    // The output is a valid list file, and `fromManifests:` reads the same stream.
    std::fs::write(dir.path().join("bad.yaml"), "image: Not/Valid\n").unwrap();
    let spec = dir.path().join("bundle.yaml");
    std::fs::write(
        &spec,
        "apiVersion: ferry.dev/v1\nname: x\nimages:\n  - fromManifests: bad.yaml\n",
    )
    .unwrap();
    let o = ferry(&["lock", "-f", spec.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("fromManifests") && text(&o).contains("bad.yaml"),
        "{}",
        text(&o)
    );
    let o = ferry(&["images", "from-chart", "x.tgz"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("x.tgz"), "{}", text(&o));
}

#[test]
fn from_manifests_in_the_spec_resolves_every_image_found() {
    tools();
    let w = world(false);
    let a = w
        .set
        .image("fixtures/multiarch")
        .reference(&w.upstream.host());
    let b = w
        .set
        .image("fixtures/docker-v2")
        .reference(&w.upstream.host());
    std::fs::write(
        w.dir.join("rendered.yaml"),
        format!(
            "---
kind: Pod
spec:
  containers:
    - image: {a}
---
kind: Job
spec:
  template:
    spec:
      containers:
        - image: \"{b}\"
"
        ),
    )
    .unwrap();
    let spec = w.dir.join("fm.yaml");
    std::fs::write(
        &spec,
        "apiVersion: ferry.dev/v1\nname: fm\nimages:\n  - fromManifests: rendered.yaml\n",
    )
    .unwrap();
    let lock = w.dir.join("fm.lock");
    ok(&ferry(&[
        "lock",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        lock.to_str().unwrap(),
    ]));
    let l = std::fs::read_to_string(&lock).unwrap();
    assert!(l.contains(&a) && l.contains(&b), "{l}");
}

#[test]
fn trivy_databases_travel_as_byte_exact_artifacts() {
    tools();
    let w = world(false);
    let db = w.set.image("fixtures/trivy-db");
    let spec = w.dir.join("trivy.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: ferry.dev/v1\nname: trivy\ntrivy:\n  db: {}/{}:{}\n  javaDb: false\n",
            w.upstream.host(),
            db.repository,
            db.tag
        ),
    )
    .unwrap();
    let out = w.dir.join("trivy.tar.zst");
    ok(&ferry(&[
        "export",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--cache",
        w.dir.join("tc").to_str().unwrap(),
    ]));
    let inspect = ok(&ferry(&["--json", "inspect", out.to_str().unwrap()]));
    let v: serde_json::Value = serde_json::from_str(inspect.lines().last().unwrap()).unwrap();
    assert_eq!(v["items"][0]["kind"], "trivy-db", "{inspect}");
    ok(&ferry(&[
        "import",
        out.to_str().unwrap(),
        "--registry",
        &w.target.host(),
    ]));
    let raw = skopeo_inspect_raw(&format!("{}:{}", w.target_repo(&db.repository), db.tag)).unwrap();
    assert_eq!(sha(&raw), db.top.digest.to_string());
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"
    );
    assert_eq!(
        m["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "db.tar.gz"
    );
}

#[test]
fn large_blobs_stream_side_by_side_from_several_readers_byte_exact() {
    tools();
    // Four 6 MiB layers: with 1 MiB chunks every one is streamed, and with
    // --jobs 3 their uploads overlap, all fed by one read of the bundle.
    let w = world_with(&FixtureOptions {
        big_layer_mib: Some(6),
        big_layers: 4,
        ..Default::default()
    });
    let bundle = w.export(&[]);
    let b = bundle.to_str().unwrap();
    let import = |jobs: &str| -> serde_json::Value {
        let out = ok(&ferry(&[
            "--json",
            "import",
            b,
            "--registry",
            &w.target.host(),
            "--chunk-mib",
            "1",
            "--jobs",
            jobs,
        ]));
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "imported")
            .expect("imported event")
    };
    let done = import("3");
    assert_eq!(done["failed"].as_array().unwrap().len(), 0, "{done}");
    assert_eq!(done["readers"], 1, "{done}");
    let big = w.set.image("fixtures/big");
    assert_eq!(big.top.json()["layers"].as_array().unwrap().len(), 5);
    for i in &w.set.images {
        let repo = w.target_repo(&i.repository);
        let raw = skopeo_inspect_raw(&format!("{repo}:{}", i.tag)).unwrap();
        assert_eq!(sha(&raw), i.top.digest.to_string(), "{repo}:{}", i.tag);
    }
    // Every layer of the big image, as the target serves it, hashes to its
    // name (skopeo checks each blob's digest while copying).
    let dest = w.dir.join("copy-big");
    skopeo_copy_all(
        &format!("docker://{}:1.0", w.target_repo("fixtures/big")),
        &format!("oci:{}", dest.display()),
    )
    .unwrap();
    for l in big.top.json()["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        let bytes = std::fs::read(dest.join("blobs/sha256").join(&d[7..])).unwrap();
        assert_eq!(sha(&bytes), d);
    }
    // Again: nothing to upload, one reader.
    let again = import("3");
    assert_eq!(again["blobsUploaded"], 0, "{again}");
}
