//! Export preflight (issue 16): the plan is counted and the room checked
//! after resolution, before any blob is downloaded; `--dry-run` prints the
//! plan and `--plan-json` writes it. A fault-free proxy in front of a real
//! registry records every request, so "nothing downloaded" is observed.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::{Path, PathBuf};

use common::{ferry, ok, text};
use ferry_testkit::fixtures::{write_spec_images, FixtureOptions, FixtureSet};
use ferry_testkit::proxy::FaultProxy;
use ferry_testkit::registry::Registry;
use ferry_testkit::tmpfs::Tmpfs;

/// An upstream registry with the fixtures (one 2 MiB layer among them),
/// seen through a recording proxy.
struct World {
    _registry: Registry,
    proxy: FaultProxy,
    set: FixtureSet,
    dir: tempfile::TempDir,
    spec: PathBuf,
}

fn world() -> World {
    let (registry, set) = common::upstream_with(&FixtureOptions {
        big_layer_mib: Some(2),
        ..FixtureOptions::default()
    });
    let proxy = FaultProxy::start(registry.addr(), vec![]);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bundle.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: ferry.dev/v1\nname: preflight\nimages:\n{}",
            write_spec_images(&set, &proxy.host())
        ),
    )
    .unwrap();
    World {
        _registry: registry,
        proxy,
        set,
        dir,
        spec,
    }
}

impl World {
    /// Blob GETs the proxy saw (manifests are fetched to resolve; blobs
    /// only once the export goes ahead).
    fn blob_gets(&self) -> usize {
        self.proxy
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.target.contains("/blobs/"))
            .count()
    }
    fn manifest_gets(&self) -> usize {
        self.proxy
            .requests()
            .iter()
            .filter(|r| r.target.contains("/manifests/"))
            .count()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn plan(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn an_export_too_big_for_its_disk_is_refused_before_any_download() {
    let w = world();
    let mnt = w.dir.path().join("small");
    let _tmpfs = Tmpfs::mount(&mnt, "1m").unwrap();
    let out = mnt.join("b.tar.zst");
    let plan_file = w.dir.path().join("plan.json");
    let o = ferry(&[
        "export",
        "-f",
        s(&w.spec),
        "-o",
        s(&out),
        "--cache",
        s(&w.dir.path().join("cache")),
        "--plan-json",
        s(&plan_file),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("not enough room"), "{t}");
    assert!(
        t.contains(&format!("output `{}` needs", mnt.display())),
        "{t}"
    );
    assert!(
        t.contains("room: output"),
        "the plan is printed first:\n{t}"
    );
    // Resolved (manifests read, sizes known), then refused: no blob fetched.
    assert!(w.manifest_gets() > 0);
    assert_eq!(w.blob_gets(), 0, "a blob was downloaded before the refusal");
    assert_eq!(
        std::fs::read_dir(&mnt).unwrap().count(),
        0,
        "output left behind"
    );
    // The plan names the numbers: needed over what the tmpfs has.
    let p = plan(&plan_file);
    let room = p["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["what"] == "output")
        .expect("an output room");
    assert!(room["needed"].as_u64().unwrap() > room["available"].as_u64().unwrap());
    assert!(room["available"].as_u64().unwrap() <= 1 << 20);
    assert!(p["fetchBytes"].as_u64().unwrap() >= 2 << 20);
}

#[test]
fn dry_run_prints_and_writes_the_plan_and_downloads_nothing() {
    let w = world();
    let out = w.dir.path().join("b.tar.zst");
    let lock = w.dir.path().join("ferry.lock");
    let cache = w.dir.path().join("cache");
    let plan_file = w.dir.path().join("plan.json");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "export",
            "-f",
            s(&w.spec),
            "-o",
            s(&out),
            "--lock",
            s(&lock),
            "--cache",
            s(&cache),
        ];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        ferry(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let t = ok(&run(&["--dry-run", "--plan-json", s(&plan_file)]));
    assert!(t.contains("dry run: nothing downloaded or written"), "{t}");
    assert!(
        t.contains(&format!("from {}/fixtures/", w.proxy.host())),
        "{t}"
    );
    assert!(
        !out.exists() && !lock.exists(),
        "a dry run wrote the bundle or the lock"
    );
    assert_eq!(w.blob_gets(), 0, "a dry run downloaded a blob");
    let p = plan(&plan_file);
    assert_eq!(p["items"].as_u64().unwrap() as usize, w.set.images.len());
    assert_eq!(p["fetchBytes"].as_u64().unwrap(), w.set.total_blob_bytes());
    assert_eq!(p["cachedBlobs"], 0);
    let sources = p["sources"].as_object().unwrap();
    assert!(sources
        .keys()
        .all(|k| k.starts_with(&format!("{}/", w.proxy.host()))));
    let per_source: u64 = sources.values().map(|v| v["bytes"].as_u64().unwrap()).sum();
    assert_eq!(per_source, w.set.total_blob_bytes());

    // The real run fetches what the plan said; a second plan finds it cached.
    ok(&run(&[]));
    assert!(out.is_file());
    assert!(w.blob_gets() > 0);
    let fetched = w.blob_gets();
    ok(&run(&["--dry-run", "--plan-json", s(&plan_file)]));
    let p2 = plan(&plan_file);
    assert_eq!(p2["fetchBytes"], 0);
    assert_eq!(p2["fetchBlobs"], 0);
    assert_eq!(p2["cachedBlobs"], p["fetchBlobs"]);
    assert_eq!(w.blob_gets(), fetched);
}
