//! Differential bundles (`export --since RECEIPT|LOCK`) against real registries.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use ferry_bundle::Digest;
use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::registry::{require_tool, Registry};
use ferry_testkit::tools::skopeo_inspect_raw;

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .output()
        .unwrap()
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

/// Pushes `app:1.0` = a shared base layer + one layer of its own; returns the manifest digest.
async fn push_app(c: &Client, host: &str, own: &[u8]) -> (Digest, Digest) {
    let repo = Repo {
        host: host.into(),
        path: "team/app".into(),
    };
    let base = vec![7u8; 300_000];
    let config = format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"own\":{}}}",
        own.len()
    );
    for b in [&base[..], own, config.as_bytes()] {
        c.upload_blob(&repo, &Digest::of(b), Bytes::copy_from_slice(b))
            .await
            .unwrap();
    }
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(config.as_bytes()).to_string(), "size": config.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::of(&base).to_string(), "size": base.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::of(own).to_string(), "size": own.len()},
        ],
    });
    let bytes = Bytes::from(serde_json::to_vec(&m).unwrap());
    c.put_manifest(
        &repo,
        "1.0",
        "application/vnd.oci.image.manifest.v1+json",
        bytes.clone(),
    )
    .await
    .unwrap();
    (Digest::of(&bytes), Digest::of(own))
}

fn export(dir: &Path, name: &str, spec: &Path, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{name}.tar.zst"));
    let cache = dir.join("cache");
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

fn bundle_meta(bundle: &Path) -> serde_json::Value {
    let head = ferry_bundle::head::read_head(bundle).unwrap();
    serde_json::to_value(&*head.meta).unwrap()
}

#[test]
fn a_delta_carries_only_what_changed_and_needs_its_base() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let upstream = Registry::start().unwrap();
    let target = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = Client::new(ClientConfig::default()).unwrap();
    let h = upstream.host();
    rt.block_on(push(&set, &c, &h)).unwrap();
    let (v1, _) = rt.block_on(push_app(&c, &h, &vec![1u8; 200_000]));
    let multi = set.image("fixtures/multiarch");
    let spec = dir.join("bundle.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: ferry.dev/v1\nname: delta\nimages:\n  - {}\n  - {h}/team/app:1.0\n",
            multi.reference(&h)
        ),
    )
    .unwrap();
    let lock = dir.join("first.lock");
    let full = export(dir, "full", &spec, &["--lock", lock.to_str().unwrap()]);
    let receipt = dir.join("receipt.json");
    let th = target.host();
    ok(&ferry(&[
        "import",
        full.to_str().unwrap(),
        "--registry",
        &th,
        "--receipt",
        receipt.to_str().unwrap(),
    ]));
    let safe = h.replace(':', "-");
    assert_eq!(
        Digest::of(&skopeo_inspect_raw(&format!("{th}/{safe}/team/app:1.0")).unwrap()),
        v1
    );

    // One image changes upstream: a new layer of its own, a new config.
    let (v2, own2) = rt.block_on(push_app(&c, &h, &vec![2u8; 150_000]));
    assert_ne!(v1, v2);
    let delta = export(dir, "delta", &spec, &["--since", receipt.to_str().unwrap()]);
    let meta = bundle_meta(&delta);
    let blobs: Vec<String> = meta["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["role"] == "layer" || b["role"] == "config")
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        blobs.len(),
        2,
        "only the new config and layer travel: {blobs:?}"
    );
    assert!(blobs.contains(&own2.to_string()));
    assert!(!meta["base"].as_array().unwrap().is_empty());
    let full_size = std::fs::metadata(&full).unwrap().len();
    let delta_size = std::fs::metadata(&delta).unwrap().len();
    assert!(
        delta_size < full_size / 2,
        "delta {delta_size} vs full {full_size}"
    );
    println!("full bundle {full_size} bytes, delta {delta_size} bytes");
    ok(&ferry(&["verify", delta.to_str().unwrap()]));

    // The same from the old lock.
    let from_lock = export(
        dir,
        "from-lock",
        &spec,
        &["--since", lock.to_str().unwrap()],
    );
    let meta_lock = bundle_meta(&from_lock);
    assert_eq!(meta_lock["blobs"], meta["blobs"]);

    // Onto an empty registry: refused, nothing pushed.
    let empty = Registry::start().unwrap();
    let o = ferry(&[
        "import",
        delta.to_str().unwrap(),
        "--registry",
        &empty.host(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("base blob(s)"), "{}", text(&o));
    let cat = Command::new("curl")
        .args(["-sf", &format!("http://{}/v2/_catalog", empty.host())])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&cat.stdout).unwrap();
    assert!(
        v["repositories"].as_array().is_none_or(|a| a.is_empty()),
        "{v}"
    );

    // Onto the mirror: the same digests as a full import.
    ok(&ferry(&[
        "import",
        delta.to_str().unwrap(),
        "--registry",
        &th,
    ]));
    assert_eq!(
        Digest::of(&skopeo_inspect_raw(&format!("{th}/{safe}/team/app:1.0")).unwrap()),
        v2
    );
    assert_eq!(
        Digest::of(
            &skopeo_inspect_raw(&format!("{th}/{safe}/{}:{}", multi.repository, multi.tag))
                .unwrap()
        ),
        multi.top.digest
    );
}
