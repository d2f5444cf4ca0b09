//! Import preflight (issue 16): once planned and before the first upload,
//! every target repository must accept a push (an upload session opened
//! and cancelled) and a store must have room. A refusal is exit 2 naming
//! the repository or the numbers, with nothing at the target; a dry run
//! makes the same checks and `--plan-json` writes them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::{Path, PathBuf};

use common::{ferry, ferry_env, ok, text};
use ferry_testkit::fixtures::{write_spec_images, FixtureOptions};
use ferry_testkit::registry::require_tool;
use ferry_testkit::registry::{Registry, RegistryOptions};
use ferry_testkit::tmpfs::Tmpfs;

struct World {
    _upstream: Registry,
    dir: tempfile::TempDir,
    bundle: PathBuf,
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A bundle of the fixtures, one 2 MiB layer among them.
fn world() -> World {
    require_tool("curl");
    let (upstream, set) = common::upstream_with(&FixtureOptions {
        big_layer_mib: Some(2),
        ..FixtureOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bundle.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: ferry.dev/v1\nname: preflight\nimages:\n{}",
            write_spec_images(&set, &upstream.host())
        ),
    )
    .unwrap();
    let bundle = dir.path().join("b.tar.zst");
    ok(&ferry(&[
        "export",
        "-f",
        s(&spec),
        "-o",
        s(&bundle),
        "--cache",
        s(&dir.path().join("cache")),
    ]));
    World {
        _upstream: upstream,
        dir,
        bundle,
    }
}

/// The repositories a registry holds (its catalog, asked with `user` by
/// curl, a client of its own).
fn catalog(reg: &Registry, user: (&str, &str)) -> Vec<String> {
    let o = std::process::Command::new("curl")
        .args(["-sf", "-u", &format!("{}:{}", user.0, user.1)])
        .arg(format!("http://{}/v2/_catalog", reg.host()))
        .output()
        .expect("curl");
    assert!(o.status.success(), "curl: {o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["repositories"]
        .as_array()
        .map(|a| a.iter().map(|r| r.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn a_target_that_refuses_pushes_is_found_before_anything_is_pushed() {
    let w = world();
    let target = Registry::start_with(RegistryOptions {
        htpasswd: Some(("ops".into(), "right".into())),
        ..Default::default()
    })
    .unwrap();
    let url = format!("http://{}", target.host());
    let receipt = w.dir.path().join("receipt.json");
    // The dry run plans without the registry's answers and finds the
    // refusal in its preflight's push check; the import finds it when it
    // first asks.
    for (what, args, said) in [
        ("dry run", vec!["--dry-run"], "refuses pushes to"),
        (
            "import",
            vec!["--receipt", s(&receipt)],
            "refuses these credentials",
        ),
    ] {
        let mut argv = vec![
            "import",
            s(&w.bundle),
            "--registry",
            &url,
            "--username",
            "ops",
        ];
        argv.extend(args);
        let o = ferry_env(&argv, &[("FERRY_PASSWORD", "wrong")]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {t}");
        assert!(t.contains(said), "{what}: {t}");
        assert!(t.contains("nothing was pushed"), "{what}: {t}");
        assert!(
            catalog(&target, ("ops", "right")).is_empty(),
            "{what}: something landed"
        );
        assert!(!receipt.exists(), "{what}: a receipt was written");
    }
    // The right password: the preflight passes and says what it checked.
    let plan = w.dir.path().join("plan.json");
    let o = ferry_env(
        &[
            "import",
            s(&w.bundle),
            "--registry",
            &url,
            "--username",
            "ops",
            "--dry-run",
            "--plan-json",
            s(&plan),
        ],
        &[("FERRY_PASSWORD", "right")],
    );
    let t = ok(&o);
    assert!(t.contains("target repositories accept a push"), "{t}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    assert_eq!(doc["dryRun"], true);
    assert!(
        doc["preflight"]["repositories"].as_u64().unwrap() >= 2,
        "{doc}"
    );
    assert!(!doc["items"].as_array().unwrap().is_empty());
    assert!(
        catalog(&target, ("ops", "right")).is_empty(),
        "the dry run pushed"
    );
    let o = ferry_env(
        &[
            "import",
            s(&w.bundle),
            "--registry",
            &url,
            "--username",
            "ops",
        ],
        &[("FERRY_PASSWORD", "right")],
    );
    ok(&o);
    assert!(!catalog(&target, ("ops", "right")).is_empty());
}

#[test]
fn a_store_without_room_is_refused_before_anything_is_written() {
    let w = world();
    let mnt = w.dir.path().join("small");
    let _tmpfs = Tmpfs::mount(&mnt, "1m").unwrap();
    let store = mnt.join("store");
    // The dry run names the numbers and creates nothing.
    let o = ferry(&["import", s(&w.bundle), "--store", s(&store), "--dry-run"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("not enough room in"), "{t}");
    assert!(!store.exists(), "the dry run created the store");
    // The import refuses before writing a blob.
    let o = ferry(&["import", s(&w.bundle), "--store", s(&store)]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("not enough room in"), "{t}");
    assert!(t.contains("nothing was written"), "{t}");
    let blobs: Vec<_> = std::fs::read_dir(store.join("blobs/sha256"))
        .map(|rd| rd.flatten().collect())
        .unwrap_or_default();
    assert!(blobs.is_empty(), "blobs landed: {blobs:?}");
    assert!(!store.join("index.json").exists());
    // With room, the same import lands and reports what it measured.
    let big = w.dir.path().join("store");
    let t = ok(&ferry(&["import", s(&w.bundle), "--store", s(&big)]));
    assert!(t.contains("preflight: the store"), "{t}");
    assert!(big.join("index.json").exists());
}
