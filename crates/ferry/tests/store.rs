//! `ferry import --store DIR`: bundles into a local OCI-layout mirror store.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use ferry_bundle::Digest;
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::registry::{require_tool, Registry};
use ferry_testkit::tools::run_tool;

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .output()
        .unwrap()
}

#[track_caller]
fn ok(o: &Output) -> String {
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "ferry failed ({:?}):\n{t}",
        o.status.code()
    );
    t
}

fn export(dir: &Path, name: &str, refs: &[String]) -> std::path::PathBuf {
    let spec = dir.join(format!("{name}.yaml"));
    let mut s = format!("apiVersion: ferry.dev/v1\nname: {name}\nimages:\n");
    for r in refs {
        s.push_str(&format!("  - {r}\n"));
    }
    std::fs::write(&spec, s).unwrap();
    let out = dir.join(format!("{name}.tar.zst"));
    ok(&ferry(&[
        "export",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--cache",
        dir.join("cache").to_str().unwrap(),
    ]));
    out
}

fn blob_count(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn bundles_accumulate_in_one_store_sharing_blobs_and_skopeo_reads_it() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let upstream = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap();
    rt.block_on(push(&set, &client, &upstream.host())).unwrap();
    let h = upstream.host();
    let multi = set.image("fixtures/multiarch");
    let docker = set.image("fixtures/docker-v2");
    let many = set.image("fixtures/many-layers");
    let a = export(dir, "a", &[multi.reference(&h), docker.reference(&h)]);
    let b = export(dir, "b", &[docker.reference(&h), many.reference(&h)]);
    let store = dir.join("store");
    let s = store.to_str().unwrap();
    ok(&ferry(&[
        "import",
        a.to_str().unwrap(),
        "--store",
        s,
        "--map",
        &format!("{h}=mirror"),
    ]));
    let after_a = blob_count(&store);
    let index_a = std::fs::read(store.join("index.json")).unwrap();
    // Idempotent: a re-import changes nothing.
    let o = ok(&ferry(&[
        "--json",
        "import",
        a.to_str().unwrap(),
        "--store",
        s,
        "--map",
        &format!("{h}=mirror"),
    ]));
    assert!(o.contains("\"blobsUploaded\":0"), "{o}");
    assert_eq!(std::fs::read(store.join("index.json")).unwrap(), index_a);
    // A second bundle shares the docker-v2 blobs.
    ok(&ferry(&[
        "import",
        b.to_str().unwrap(),
        "--store",
        s,
        "--map",
        &format!("{h}=mirror"),
    ]));
    let mut all = std::collections::BTreeSet::new();
    for img in [multi, docker, many] {
        all.extend(img.blobs.iter().map(|b| b.digest.clone()));
        all.extend(img.manifests().map(|m| m.digest.clone()));
    }
    assert!(blob_count(&store) > after_a);
    assert_eq!(
        blob_count(&store),
        all.len(),
        "every blob stored exactly once"
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    // An independent reader: skopeo reads every image from the layout, byte-exact.
    for img in [multi, docker, many] {
        let name = format!("mirror/{}:{}", img.repository, img.tag);
        assert!(names.contains(&name.as_str()), "{name} not in {names:?}");
        let entry = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name.as_str())
            .unwrap();
        assert_eq!(entry["digest"], img.top.digest.to_string());
        assert_eq!(entry["mediaType"], img.top.media_type.as_str());
        let stored = std::fs::read(store.join("blobs/sha256").join(img.top.digest.hex())).unwrap();
        assert_eq!(Digest::of(&stored), img.top.digest);
        // skopeo 1.9 cannot read a Docker schema2 descriptor from a layout.
        if img.top.media_type.contains("oci") {
            let out = run_tool("skopeo", ["inspect", "--raw", &format!("oci:{s}:{name}")]).unwrap();
            assert_eq!(Digest::of(&out.stdout), img.top.digest, "{name}");
        }
    }
    // No temporary files left behind.
    assert!(std::fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".tmp-")));
}

#[test]
fn a_killed_import_leaves_the_store_as_it_was_and_a_rerun_completes() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let upstream = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions {
        big_layer_mib: Some(64),
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap();
    rt.block_on(push(&set, &client, &upstream.host())).unwrap();
    let h = upstream.host();
    let multi = set.image("fixtures/multiarch");
    let big = set.image("fixtures/big");
    let a = export(dir, "a", &[multi.reference(&h)]);
    let b = export(dir, "b", &[big.reference(&h)]);
    let store = dir.join("store");
    let s = store.to_str().unwrap();
    ok(&ferry(&["import", a.to_str().unwrap(), "--store", s]));
    let index_a = std::fs::read(store.join("index.json")).unwrap();
    // Kill -9 while the big layer is being written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "import",
            b.to_str().unwrap(),
            "--store",
            s,
            "--chunk-mib",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let blobs = store.join("blobs/sha256");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut caught = false;
    while std::time::Instant::now() < deadline {
        let tmp_seen = std::fs::read_dir(&blobs).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-")
        });
        if tmp_seen {
            child.kill().unwrap();
            caught = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = child.wait();
    assert!(caught, "the import finished before it could be interrupted");
    // The store is as it was: same index, earlier content still readable.
    assert_eq!(std::fs::read(store.join("index.json")).unwrap(), index_a);
    let name = format!("{}/{}:{}", h.replace(':', "-"), multi.repository, multi.tag);
    let out = run_tool("skopeo", ["inspect", "--raw", &format!("oci:{s}:{name}")]).unwrap();
    assert_eq!(Digest::of(&out.stdout), multi.top.digest);
    // `ferry serve` serves the interrupted store correctly.
    let port = common::free_port();
    let mut serve = common::serve_store(s, port);
    let served = run_tool(
        "skopeo",
        [
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://127.0.0.1:{port}/{name}"),
        ],
    );
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(Digest::of(&served.unwrap().stdout), multi.top.digest);
    // The re-run sweeps the leftovers and completes.
    ok(&ferry(&["import", b.to_str().unwrap(), "--store", s]));
    let big_name = format!("{}/{}:{}", h.replace(':', "-"), big.repository, big.tag);
    let out = run_tool(
        "skopeo",
        ["inspect", "--raw", &format!("oci:{s}:{big_name}")],
    )
    .unwrap();
    assert_eq!(Digest::of(&out.stdout), big.top.digest);
    assert!(std::fs::read_dir(&blobs).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".tmp-")));
    for b in &big.blobs {
        let p = blobs.join(b.digest.hex());
        assert_eq!(Digest::of(&std::fs::read(&p).unwrap()), b.digest);
    }
}
