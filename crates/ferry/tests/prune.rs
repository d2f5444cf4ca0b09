//! `ferry prune` (issue 16): two bundles imported in turn, prune keeping only
//! the second's lock. Against Debian's `docker-registry` (deletes enabled;
//! its garbage collection run to show the space comes back) and a `ferry
//! serve` store. skopeo and containerd (not ferry) check what stays.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;
use common::{ferry, ok, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ferry_testkit::containerd::{require_containerd, Containerd};
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::proxy::{Action, Fault, FaultProxy};
use ferry_testkit::registry::{require_tool, Registry, RegistryOptions};
use ferry_testkit::tools::run_tool;

/// A: multiarch + docker-v2 + many-layers; B: multiarch + docker-list.
const A: [&str; 3] = [
    "fixtures/multiarch",
    "fixtures/docker-v2",
    "fixtures/many-layers",
];
const B: [&str; 2] = ["fixtures/multiarch", "fixtures/docker-list"];

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    set: FixtureSet,
    upstream: Registry,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let upstream = Registry::start().unwrap();
        let set = FixtureSet::generate(&FixtureOptions::default());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap();
        rt.block_on(push(&set, &client, &upstream.host())).unwrap();
        World {
            _tmp: tmp,
            dir,
            set,
            upstream,
        }
    }

    fn reference(&self, name: &str) -> String {
        self.set.image(name).reference(&self.upstream.host())
    }

    /// Locks and exports `names`: (bundle, lock).
    fn bundle(&self, label: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let refs: Vec<String> = names.iter().map(|n| self.reference(n)).collect();
        let spec = self.dir.join(format!("{label}.yaml"));
        std::fs::write(
            &spec,
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "ferry.dev/v1", "name": label, "images": refs,
            }))
            .unwrap(),
        )
        .unwrap();
        let lock = self.dir.join(format!("{label}.lock"));
        ok(&ferry(&[
            "lock",
            "-f",
            spec.to_str().unwrap(),
            "-o",
            lock.to_str().unwrap(),
        ]));
        let out = self.dir.join(format!("{label}.tar.zst"));
        ok(&ferry(&[
            "export",
            "-f",
            spec.to_str().unwrap(),
            "--lock",
            lock.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--cache",
            self.dir.join("cache").to_str().unwrap(),
        ]));
        (out, lock)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The target repository a default import gives an upstream image.
fn target_repo(w: &World, name: &str) -> String {
    format!("{}/{name}", w.upstream.host().replace(':', "-"))
}

fn skopeo_raw(host: &str, repo: &str, tag: &str) -> Option<Vec<u8>> {
    run_tool(
        "skopeo",
        [
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{host}/{repo}:{tag}"),
        ],
    )
    .ok()
    .map(|o| o.stdout)
}

#[test]
fn prune_a_registry_keeps_the_second_bundle_and_frees_the_first_ones_extras() {
    require_tool("docker-registry");
    require_tool("skopeo");
    require_containerd();
    let w = World::new();
    let (bundle_a, _lock_a) = w.bundle("a", &A);
    let (bundle_b, lock_b) = w.bundle("b", &B);
    let mut target = Registry::start().unwrap();
    // Every request goes through a proxy that can hold one DELETE (kill -9 below).
    let proxy = FaultProxy::start(target.addr(), vec![]);
    let host = proxy.host();
    let (ra, rb) = (w.path("a.receipt.json"), w.path("b.receipt.json"));
    for (bundle, receipt) in [(&bundle_a, &ra), (&bundle_b, &rb)] {
        ok(&ferry(&[
            "import",
            s(bundle),
            "--registry",
            &host,
            "--receipt",
            s(receipt),
        ]));
    }
    let plan_file = w.path("plan.json");
    let plan_args = [
        "prune",
        "--registry",
        &host,
        "--receipt",
        s(&ra),
        "--receipt",
        s(&rb),
        "--keep",
        s(&lock_b),
        "--plan",
        s(&plan_file),
    ];
    let t = ok(&ferry(&plan_args));
    assert!(t.contains("ferry prune --apply"), "{t}");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plan_file).unwrap()).unwrap();
    let deleted: Vec<(String, String)> = plan["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["repository"].as_str().unwrap().to_string(),
                d["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Exactly the first bundle's extras: docker-v2 and many-layers.
    let mut repos: Vec<&str> = deleted.iter().map(|(r, _)| r.as_str()).collect();
    repos.dedup();
    assert_eq!(
        repos,
        vec![
            target_repo(&w, "fixtures/docker-v2").as_str(),
            target_repo(&w, "fixtures/many-layers").as_str()
        ],
        "{plan:#}"
    );
    for name in ["fixtures/docker-v2", "fixtures/many-layers"] {
        assert!(deleted.contains(&(
            target_repo(&w, name),
            w.set.image(name).top.digest.to_string()
        )));
    }
    assert!(plan["bytesFreed"].as_u64().unwrap() > 0, "{plan:#}");

    // A concurrent change between plan and apply: a new tag appears in an
    // affected repository. The apply refuses and deletes nothing.
    let many = w.set.image("fixtures/many-layers");
    let many_repo = target_repo(&w, "fixtures/many-layers");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap();
    rt.block_on(client.put_manifest(
        &ferry_registry::Repo {
            host: target.host(),
            path: many_repo.clone(),
        },
        "pinned-by-someone",
        &many.top.media_type,
        many.top.bytes.clone(),
    ))
    .unwrap();
    let o = ferry(&["prune", "--apply", s(&plan_file)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("pinned-by-someone") && text(&o).contains("appeared"),
        "{}",
        text(&o)
    );
    let docker = w.set.image("fixtures/docker-v2");
    let docker_repo = target_repo(&w, "fixtures/docker-v2");
    assert!(
        skopeo_raw(&host, &docker_repo, &docker.tag).is_some(),
        "nothing deleted"
    );

    // Plan again: someone else's tag keeps many-layers; docker-v2 goes.
    ok(&ferry(&plan_args));
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plan_file).unwrap()).unwrap();
    assert!(plan["delete"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["repository"] != many_repo.as_str()));

    // kill -9 in the middle of the apply (its first DELETE held), then a
    // re-run completes.
    proxy.set_faults(vec![Fault::new(Action::Hold).on_method("DELETE").times(1)]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["prune", "--apply", s(&plan_file)])
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while proxy.held() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the DELETE never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.release();
    proxy.set_faults(vec![]);
    let t = ok(&ferry(&["prune", "--apply", s(&plan_file)]));
    assert!(t.contains("manifest(s) deleted"), "{t}");
    // Idempotent: once more changes nothing.
    let t = ok(&ferry(&["prune", "--apply", s(&plan_file)]));
    assert!(t.contains("0 manifest(s) deleted"), "{t}");

    // Gone: docker-v2. Intact and byte-exact: the second bundle and the
    // foreign-tagged image.
    assert!(skopeo_raw(&host, &docker_repo, &docker.tag).is_none());
    for name in B {
        let img = w.set.image(name);
        assert_eq!(
            skopeo_raw(&host, &target_repo(&w, name), &img.tag).as_deref(),
            Some(&img.top.bytes[..]),
            "{name}"
        );
    }
    assert_eq!(
        skopeo_raw(&host, &many_repo, "pinned-by-someone").as_deref(),
        Some(&many.top.bytes[..])
    );
    // The receipts no longer list what left.
    let receipt = std::fs::read_to_string(&ra).unwrap();
    assert!(
        !receipt.contains(&docker.top.digest.to_string()),
        "{receipt}"
    );

    // The registry's garbage collection gives the space back; every kept
    // image still pulls with containerd, digests intact.
    drop(proxy);
    let (before, after) = target.garbage_collect().unwrap();
    assert!(
        after < before,
        "garbage collection freed nothing: {before} -> {after}"
    );
    let ctd = Containerd::start().unwrap();
    let empty = w.path("no-hosts");
    std::fs::create_dir_all(&empty).unwrap();
    for name in B {
        let img = w.set.image(name);
        let r = format!("{}/{}:{}", target.host(), target_repo(&w, name), img.tag);
        assert_eq!(
            ctd.pull(&r, &empty, true).unwrap(),
            img.top.digest.to_string(),
            "{r}"
        );
    }
}

#[test]
fn prune_refuses_a_registry_without_deletes_and_deletes_nothing() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let w = World::new();
    let (bundle_a, _) = w.bundle("a", &A);
    let (_, lock_b) = w.bundle("b", &B);
    let target = Registry::start_with(RegistryOptions {
        no_delete: true,
        ..RegistryOptions::default()
    })
    .unwrap();
    let ra = w.path("a.receipt.json");
    ok(&ferry(&[
        "import",
        s(&bundle_a),
        "--registry",
        &target.host(),
        "--receipt",
        s(&ra),
    ]));
    let plan_file = w.path("plan.json");
    ok(&ferry(&[
        "prune",
        "--registry",
        &target.host(),
        "--receipt",
        s(&ra),
        "--keep",
        s(&lock_b),
        "--plan",
        s(&plan_file),
    ]));
    let receipt_before = std::fs::read(&ra).unwrap();
    let o = ferry(&["prune", "--apply", s(&plan_file)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("405") && text(&o).contains("storage"),
        "{}",
        text(&o)
    );
    for name in A {
        let img = w.set.image(name);
        assert!(
            skopeo_raw(&target.host(), &target_repo(&w, name), &img.tag).is_some(),
            "{name} is still there"
        );
    }
    assert_eq!(
        std::fs::read(&ra).unwrap(),
        receipt_before,
        "receipt untouched"
    );
}

#[test]
fn prune_a_store_frees_blobs_and_refuses_after_a_concurrent_import() {
    require_tool("docker-registry");
    let w = World::new();
    let (bundle_a, _) = w.bundle("a", &A);
    let (bundle_b, lock_b) = w.bundle("b", &B);
    let (bundle_c, _) = w.bundle("c", &["fixtures/no-mediatype"]);
    let store = w.path("store");
    let (ra, rb) = (w.path("a.receipt.json"), w.path("b.receipt.json"));
    for (bundle, receipt) in [(&bundle_a, &ra), (&bundle_b, &rb)] {
        ok(&ferry(&[
            "import",
            s(bundle),
            "--store",
            s(&store),
            "--receipt",
            s(receipt),
        ]));
    }
    let blob_count = || {
        std::fs::read_dir(store.join("blobs/sha256"))
            .unwrap()
            .count()
    };
    let before = blob_count();
    let plan_file = w.path("plan.json");
    let plan_args = [
        "prune",
        "--store",
        s(&store),
        "--receipt",
        s(&ra),
        "--receipt",
        s(&rb),
        "--keep",
        s(&lock_b),
        "--plan",
        s(&plan_file),
    ];
    ok(&ferry(&plan_args));
    // A concurrent import lands between plan and apply: refused.
    ok(&ferry(&["import", s(&bundle_c), "--store", s(&store)]));
    let index_before = std::fs::read(store.join("index.json")).unwrap();
    let o = ferry(&["prune", "--apply", s(&plan_file)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("changed since the plan"), "{}", text(&o));
    assert_eq!(
        std::fs::read(store.join("index.json")).unwrap(),
        index_before
    );
    // Plan again and apply: the first bundle's extras leave, blobs are freed.
    ok(&ferry(&plan_args));
    let t = ok(&ferry(&["prune", "--apply", s(&plan_file)]));
    assert!(t.contains("blob(s) removed"), "{t}");
    assert!(blob_count() < before, "{} < {before}", blob_count());
    let index = std::fs::read_to_string(store.join("index.json")).unwrap();
    assert!(
        !index.contains("docker-v2") && !index.contains("many-layers"),
        "{index}"
    );
    assert!(
        index.contains("docker-list") && index.contains("multiarch"),
        "{index}"
    );
    assert!(
        index.contains("no-mediatype"),
        "the concurrent import stays: {index}"
    );
    // Every blob every remaining entry needs is there and hashes to its name.
    for name in [
        "fixtures/multiarch",
        "fixtures/docker-list",
        "fixtures/no-mediatype",
    ] {
        let img = w.set.image(name);
        for b in img
            .blobs
            .iter()
            .map(|b| &b.digest)
            .chain(img.manifests().map(|m| &m.digest))
        {
            let p = store.join("blobs/sha256").join(b.hex());
            let bytes = std::fs::read(&p).unwrap_or_else(|_| panic!("{name}: {b} missing"));
            assert_eq!(&ferry_bundle::Digest::of(&bytes), b);
        }
    }
}
