//! The upload sessions an import opens (issue 17): the preflight's session
//! of each repository a blob is first uploaded into is that upload's
//! session (no second POST, no DELETE); every other session is cancelled,
//! whatever the run's outcome: a dry run, a preflight refusal, blobs that
//! fail their digest. Checked against real docker-registry, whose storage
//! keeps one `_uploads/<id>` directory per open session, and counted by a
//! proxy in front of it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::Path;

use common::crafted::{bundle, no_manifest_in, samples, tag_link};
use common::{ferry, ok, text};
use ferry_testkit::dataset::Dataset;
use ferry_testkit::proxy::{Action, Fault, FaultProxy};
use ferry_testkit::registry::Registry;

/// Upload sessions open in a registry's storage (an `_uploads/<id>`
/// directory with its `startedat`).
fn open_sessions(reg: &Registry) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.file_name().is_some_and(|f| f == "_uploads") {
                // A cancelled session keeps an empty `hashstates/` (2.8):
                // open is what still has its `startedat`.
                for s in std::fs::read_dir(&p).unwrap().flatten() {
                    if s.path().join("startedat").exists() {
                        out.push(s.path().display().to_string());
                    }
                }
            } else {
                walk(&p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &reg.storage_dir().join("docker/registry/v2/repositories"),
        &mut out,
    );
    out
}

/// Requests with `method` to an upload session (mounts not counted).
fn uploads(proxy: &FaultProxy, method: &str) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| {
            r.method == method
                && r.target.contains("/blobs/uploads")
                && !r.target.contains("mount=")
        })
        .count()
}

/// No blob data in a registry's storage.
fn no_blobs(reg: &Registry) -> bool {
    let dir = reg.storage_dir().join("docker/registry/v2/blobs");
    !dir.exists() || walkdir_files(&dir) == 0
}

fn walkdir_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        walkdir_files(&p)
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A bundle of `refs` small images (the curve's set: each a layer and a
/// config of its own over a shared base), exported from a registry.
fn small_images(dir: &Path, refs: usize) -> (Dataset, std::path::PathBuf) {
    let set = Dataset::load_or_generate_many(&dir.join("set"), refs, 0, &|_| {}).unwrap();
    let source = Registry::start().unwrap();
    set.populate_registry_storage(&source.storage_dir())
        .unwrap();
    let mut spec = String::from("apiVersion: ferry.dev/v1\nname: sessions\nimages:\n");
    for i in &set.images {
        spec.push_str(&format!("  - {}\n", i.reference(&source.host())));
    }
    let spec_path = dir.join("bundle.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let bundle = dir.join("b.tar.zst");
    ok(&ferry(&[
        "export",
        "-f",
        spec_path.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
        "--no-cache",
    ]));
    (set, bundle)
}

#[test]
fn an_import_uploads_on_the_preflight_sessions_and_a_dry_run_leaves_none_open() {
    const REFS: usize = 6;
    let tmp = tempfile::tempdir().unwrap();
    let (set, bundle) = small_images(tmp.path(), REFS);
    let bundle = bundle.to_str().unwrap();
    let target = Registry::start().unwrap();

    // A dry run asks every repository (a session opened and cancelled
    // each) and leaves nothing: no session, no blob, no tag.
    let dry = FaultProxy::start(target.addr(), Vec::new());
    ok(&ferry(&[
        "import",
        bundle,
        "--registry",
        &dry.host(),
        "--flatten",
        "--dry-run",
    ]));
    assert_eq!(uploads(&dry, "POST"), REFS);
    assert_eq!(uploads(&dry, "DELETE"), REFS);
    assert_eq!(uploads(&dry, "PUT"), 0);
    assert_eq!(open_sessions(&target), Vec::<String>::new());
    assert!(no_blobs(&target), "the dry run uploaded");

    // The import: one session per blob uploaded, the first of each
    // repository the preflight's; nothing cancelled, nothing left open.
    let proxy = FaultProxy::start(target.addr(), Vec::new());
    ok(&ferry(&[
        "import",
        bundle,
        "--registry",
        &proxy.host(),
        "--flatten",
    ]));
    let blobs = set.blobs.len();
    assert_eq!(uploads(&proxy, "POST"), blobs);
    assert_eq!(uploads(&proxy, "PUT"), blobs);
    assert_eq!(uploads(&proxy, "DELETE"), 0);
    assert_eq!(open_sessions(&target), Vec::<String>::new());
    for i in &set.images {
        assert_eq!(
            tag_link(&target, &i.repository, &i.tag).as_deref(),
            Some(i.top.digest.to_string().as_str()),
            "{}:{} did not land",
            i.repository,
            i.tag
        );
    }
}

#[test]
fn a_preflight_refusal_cancels_the_sessions_it_held() {
    const REFS: usize = 6;
    let tmp = tempfile::tempdir().unwrap();
    let (set, bundle) = small_images(tmp.path(), REFS);
    let target = Registry::start().unwrap();
    // The last repository refuses pushes; the others' sessions were held.
    let refused = &set.images[REFS - 1].repository;
    let proxy = FaultProxy::start(
        target.addr(),
        vec![Fault::new(Action::Status(403))
            .on_method("POST")
            .on_path(&format!("/v2/{refused}/blobs/uploads/"))
            .always()],
    );
    let o = ferry(&[
        "import",
        bundle.to_str().unwrap(),
        "--registry",
        &proxy.host(),
        "--flatten",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("nothing was pushed"), "{t}");
    assert!(t.contains(refused.as_str()), "{t}");
    // Every session the registry opened was cancelled.
    let opened = uploads(&proxy, "POST") - proxy.faults_applied();
    assert_eq!(opened, REFS - 1);
    assert_eq!(uploads(&proxy, "DELETE"), opened);
    assert_eq!(uploads(&proxy, "PUT"), 0);
    assert_eq!(open_sessions(&target), Vec::<String>::new());
    assert!(no_blobs(&target), "something was uploaded");
    for i in &set.images {
        assert_eq!(tag_link(&target, &i.repository, &i.tag), None);
    }
}

#[test]
fn a_repository_whose_blobs_all_fail_their_digest_gets_its_held_session_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let target = Registry::start().unwrap();
    // Two images sharing their config (uploaded into the first one's
    // repository); the second one's only own blob, its 1 MiB layer, fails
    // its digest: it is never sent, and its repository's session is not
    // taken by any upload.
    let set = samples(2, 1);
    let path = tmp.path().join("bad.tar.zst");
    std::fs::write(&path, bundle(&set, Some(1))).unwrap();
    let proxy = FaultProxy::start(target.addr(), Vec::new());
    let o = ferry(&[
        "import",
        path.to_str().unwrap(),
        "--registry",
        &proxy.host(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains("example.org/once/app1:1"), "{t}");
    assert_eq!(tag_link(&target, "example.org/once/app1", "1"), None);
    assert!(no_manifest_in(&target, "example.org/once/app1"));
    assert_eq!(
        tag_link(&target, "example.org/once/app0", "1").as_deref(),
        Some(set[0].manifest_digest().to_string().as_str())
    );
    // app0's two blobs went up on one session each, the first app0's held
    // one; app1's held session was cancelled at the end of the run.
    let put_into = |repo: &str| {
        proxy
            .requests()
            .iter()
            .filter(|r| {
                r.method == "PUT" && r.target.contains(&format!("/v2/{repo}/blobs/uploads/"))
            })
            .count()
    };
    assert_eq!(put_into("example.org/once/app0"), 2);
    assert_eq!(put_into("example.org/once/app1"), 0);
    assert_eq!(uploads(&proxy, "POST"), 3);
    assert_eq!(uploads(&proxy, "DELETE"), 1);
    assert_eq!(open_sessions(&target), Vec::<String>::new());
}
