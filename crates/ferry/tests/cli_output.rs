//! What the operator reads: the human output of `export`, `inspect`,
//! `verify`, `import` (dry run, store, registry) and a refusal, held as
//! insta snapshots (`tests/snapshots/`). Only what changes from run to run
//! is filtered: the temporary directory, the registries' ports, durations,
//! rates and dates. A change to what ferry prints shows up as a snapshot
//! diff to review (`INSTA_UPDATE=always` rewrites them).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;
use common::{ferry, text};

use std::path::{Path, PathBuf};
use std::process::Output;

use ferry_testkit::fixtures::{FixtureOptions, FixtureSet};
use ferry_testkit::registry::Registry;

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    set: FixtureSet,
    upstream: Registry,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (upstream, set) = common::upstream_with(&FixtureOptions::default());
    World {
        _tmp: tmp,
        dir,
        set,
        upstream,
    }
}

const IMAGES: [&str; 2] = ["fixtures/multiarch", "fixtures/docker-v2"];

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The exit code and everything printed, with what varies between runs
/// replaced by a name.
fn shown(w: &World, o: &Output) -> String {
    format!("exit {:?}\n{}", o.status.code(), text(o)).replace(p(&w.dir), "[tmp]")
}

fn settings(w: &World) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    s.add_filter(&regex_escape(&w.upstream.host()), "[upstream]");
    s.add_filter(r"127\.0\.0\.1:\d+", "[registry]");
    // The upstream's host and port, as a repository path component.
    s.add_filter(r"127\.0\.0\.1-\d+", "[upstream-repo]");
    // The bundle's own digest and index.json's name the upstream's port.
    s.add_filter(
        r"sha256 [0-9a-f]{64}  \(also",
        "sha256 [bundle digest]  (also",
    );
    s.add_filter(
        r"pins index.json \(sha256:[0-9a-f]{64}\)",
        "pins index.json ([digest])",
    );
    s.add_filter(r"\b\d+(\.\d+)?\s?(ms|s|µs)\b", "[duration]");
    s.add_filter(r"\b\d+(\.\d+)?\s?[KMG]i?B/s\b", "[rate]");
    // Free space on the machine's disk.
    s.add_filter(r"[\d.]+ [KMGT]?i?B available", "[free] available");
    s.add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "[date]");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = ".+*?()|[]{}^$\\".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

impl World {
    fn spec(&self) -> PathBuf {
        let refs: Vec<String> = IMAGES
            .iter()
            .map(|n| self.set.image(n).reference(&self.upstream.host()))
            .collect();
        let spec = self.dir.join("bundle.yaml");
        std::fs::write(
            &spec,
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "ferry.dev/v1",
                "name": "snapshots",
                "images": refs,
            }))
            .unwrap(),
        )
        .unwrap();
        spec
    }
}

#[test]
fn the_operator_sees_the_same_words_for_every_step() {
    let w = world();
    let spec = w.spec();
    let bundle = w.dir.join("bundle.tar.zst");
    let cache = w.dir.join("cache");
    let _guard = settings(&w).bind_to_scope();

    let o = ferry(&[
        "export",
        "-f",
        p(&spec),
        "-o",
        p(&bundle),
        "--cache",
        p(&cache),
    ]);
    insta::assert_snapshot!("export", shown(&w, &o));
    assert!(o.status.success());

    let o = ferry(&["inspect", p(&bundle)]);
    insta::assert_snapshot!("inspect", shown(&w, &o));
    assert!(o.status.success());

    let o = ferry(&["verify", p(&bundle)]);
    insta::assert_snapshot!("verify", shown(&w, &o));
    assert!(o.status.success());

    let store = w.dir.join("store");
    let o = ferry(&["import", p(&bundle), "--store", p(&store), "--dry-run"]);
    insta::assert_snapshot!("import_store_dry_run", shown(&w, &o));
    assert!(o.status.success());
    assert!(
        !store.join("index.json").exists(),
        "a dry run wrote the store"
    );

    let o = ferry(&["import", p(&bundle), "--store", p(&store)]);
    insta::assert_snapshot!("import_store", shown(&w, &o));
    assert!(o.status.success());

    let target = Registry::start().unwrap();
    let url = format!("http://{}", target.host());
    let o = ferry(&["import", p(&bundle), "--registry", &url, "--dry-run"]);
    insta::assert_snapshot!("import_registry_dry_run", shown(&w, &o));
    assert!(o.status.success());
    let o = ferry(&["import", p(&bundle), "--registry", &url]);
    insta::assert_snapshot!("import_registry", shown(&w, &o));
    assert!(o.status.success());

    // A bundle cut short: the refusal the operator reads, and exit 1.
    let bytes = std::fs::read(&bundle).unwrap();
    let cut = w.dir.join("cut.tar.zst");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = ferry(&["verify", p(&cut)]);
    insta::assert_snapshot!("verify_truncated", shown(&w, &o));
    assert_eq!(o.status.code(), Some(1));
}
