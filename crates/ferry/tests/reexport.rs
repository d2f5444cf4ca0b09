//! `ferry export --from BUNDLE|STORE` (issue 16): a bundle for the next
//! network, built offline from a verified bundle or a mirror store, with
//! the upstream registry stopped. The re-exported bundle imports byte-exact
//! into a fresh registry, keeps its signatures (the original policy passes
//! on it), records its origin, and a hostile source (a store blob or a
//! bundle byte altered, an item it lacks) is refused with no output left.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;
use common::{
    assert_no_reexport_output as assert_nothing_written, fails, ferry, ferry_env, ok, text,
};

use std::path::{Path, PathBuf};

use ferry_bundle::Digest;
use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::fixtures::{push, FixtureImage, FixtureOptions, FixtureSet};
use ferry_testkit::registry::{require_tool, Registry};
use ferry_testkit::tools::skopeo_inspect_raw;
use serde_json::json;

const PASSWORD: &str = "reexport-test";

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    set: FixtureSet,
    upstream: Option<Registry>,
    host: String,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let upstream = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions::default());
    let client = Client::new(ClientConfig::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(push(&set, &client, &upstream.host())).unwrap();
    let host = upstream.host();
    World {
        _tmp: tmp,
        dir,
        set,
        upstream: Some(upstream),
        host,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

impl World {
    fn image(&self, name: &str) -> &FixtureImage {
        self.set.image(name)
    }

    /// A spec naming `names` (plus `extra` YAML-as-JSON top-level keys).
    fn spec(&self, label: &str, names: &[&str], extra: serde_json::Value) -> PathBuf {
        let mut v = json!({
            "apiVersion": "ferry.dev/v1",
            "name": label,
            "images": names.iter().map(|n| self.image(n).reference(&self.host)).collect::<Vec<_>>(),
        });
        if let Some(o) = extra.as_object() {
            for (k, x) in o {
                v[k] = x.clone();
            }
        }
        let spec = self.dir.join(format!("{label}.yaml"));
        std::fs::write(&spec, serde_json::to_vec(&v).unwrap()).unwrap();
        spec
    }

    /// Exports from the upstream.
    fn export(&self, spec: &Path, out: &Path, extra: &[&str]) {
        let cache = self.dir.join("cache");
        let mut args = vec!["export", "-f", s(spec), "-o", s(out), "--cache", s(&cache)];
        args.extend_from_slice(extra);
        ok(&ferry_env(&args, &[("FERRY_KEY_PASSWORD", PASSWORD)]));
    }

    /// Stops the upstream: everything after is offline.
    fn stop_upstream(&mut self) {
        drop(self.upstream.take());
    }

    /// `host/<upstream host with dashes>/repository`: where import puts it.
    fn target_repo(&self, target: &Registry, name: &str) -> String {
        format!(
            "{}/{}/{}",
            target.host(),
            self.host.replace(':', "-"),
            self.image(name).repository
        )
    }
}

/// `ferry key generate --out DIR/NAME`: (secret, public).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(name);
    ok(&ferry_env(
        &["key", "generate", "--out", s(&out)],
        &[("FERRY_KEY_PASSWORD", PASSWORD)],
    ));
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// Every manifest of `img` at `repo` is byte-exact (skopeo reads them), and
/// every config and layer reads back as the fixture's bytes.
fn assert_byte_exact(target: &Registry, repo: &str, img: &FixtureImage) {
    let raw = skopeo_inspect_raw(&format!("{repo}:{}", img.tag)).unwrap();
    assert_eq!(Digest::of(&raw), img.top.digest, "{repo}:{}", img.tag);
    for c in &img.children {
        let raw = skopeo_inspect_raw(&format!("{repo}@{}", c.digest)).unwrap();
        assert_eq!(Digest::of(&raw), c.digest, "{repo}@{}", c.digest);
    }
    let client = Client::new(ClientConfig::default()).unwrap();
    let r = Repo {
        host: target.host(),
        path: repo.split_once('/').unwrap().1.to_string(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    for b in &img.blobs {
        let dest = scratch.path().join(b.digest.hex());
        rt.block_on(client.download_blob(&r, &b.digest, Some(b.data.len() as u64), &dest, None))
            .unwrap();
        let data = std::fs::read(&dest).unwrap();
        assert_eq!(data, b.data.to_vec(), "blob {} of {repo}", b.digest);
    }
}

/// What a refused re-export must leave: nothing at `out`, no part, no
/// checksum, no staging directory.
/// Upstream → bundle → store; the upstream stops; a subset is re-exported
/// from the store by spec and imported into a fresh registry: every manifest
/// digest and every blob as upstream, what was not selected absent.
#[test]
fn a_subset_of_a_store_reexports_offline_and_imports_byte_exact() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let mut w = world();
    let all = [
        "fixtures/multiarch",
        "fixtures/docker-v2",
        "fixtures/many-layers",
    ];
    let spec = w.spec("outer", &all, json!({}));
    let bundle = w.dir.join("outer.tar.zst");
    w.export(&spec, &bundle, &[]);
    let store = w.dir.join("store");
    ok(&ferry(&["import", s(&bundle), "--store", s(&store)]));
    w.stop_upstream();

    let inner = w.spec(
        "inner",
        &["fixtures/multiarch", "fixtures/docker-v2"],
        json!({}),
    );
    let out = w.dir.join("inner.tar.zst");
    let t = ok(&ferry(&[
        "export",
        "--from",
        s(&store),
        "-f",
        s(&inner),
        "-o",
        s(&out),
    ]));
    assert!(t.contains("fetched 0 new"), "{t}");
    ok(&ferry(&["verify", s(&out)]));
    let fresh = Registry::start().unwrap();
    ok(&ferry(&["import", s(&out), "--registry", &fresh.host()]));
    for name in ["fixtures/multiarch", "fixtures/docker-v2"] {
        assert_byte_exact(&fresh, &w.target_repo(&fresh, name), w.image(name));
    }
    let many = w.image("fixtures/many-layers");
    assert!(
        skopeo_inspect_raw(&format!(
            "{}:{}",
            w.target_repo(&fresh, "fixtures/many-layers"),
            many.tag
        ))
        .is_err(),
        "an item not selected was carried"
    );
    // The origin is recorded and shown.
    let j = ok(&ferry(&["--json", "inspect", s(&out)]));
    assert!(
        j.contains(r#""kind":"store""#) && j.contains(r#""name":"store""#),
        "{j}"
    );
    let t = ok(&ferry(&["inspect", s(&out)]));
    assert!(t.contains("re-exported from store `store`"), "{t}");
    // Reproducible: the same re-export again is the same bytes.
    let again = w.dir.join("again.tar.zst");
    ok(&ferry(&[
        "export",
        "--from",
        s(&store),
        "-f",
        s(&inner),
        "-o",
        s(&again),
    ]));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
}

/// A signed bundle re-exported: its signature must verify with
/// `--source-key` (a wrong key is refused, nothing written); the output is
/// signed with another key, verifies with it, and shows its origin.
#[test]
fn a_signed_bundle_reexports_signed_with_another_key_and_records_its_origin() {
    require_tool("docker-registry");
    let mut w = world();
    let (outer_key, outer_pub) = keypair(&w.dir, "outer");
    let (inner_key, inner_pub) = keypair(&w.dir, "inner");
    let spec = w.spec(
        "outer",
        &["fixtures/multiarch", "fixtures/docker-v2"],
        json!({}),
    );
    let bundle = w.dir.join("outer.tar.zst");
    w.export(&spec, &bundle, &["--sign-key", s(&outer_key)]);
    w.stop_upstream();

    let sub = w.spec("inner", &["fixtures/docker-v2"], json!({}));
    let out = w.dir.join("inner.tar.zst");
    let reexport = |source_pub: &Path| {
        ferry_env(
            &[
                "export",
                "--from",
                s(&bundle),
                "--source-key",
                s(source_pub),
                "-f",
                s(&sub),
                "-o",
                s(&out),
                "--sign-key",
                s(&inner_key),
            ],
            &[("FERRY_KEY_PASSWORD", PASSWORD)],
        )
    };
    // The wrong source key: refused, nothing written.
    let t = fails(&reexport(&inner_pub), 1);
    assert!(t.contains("failed verification"), "{t}");
    assert_nothing_written(&out);

    ok(&reexport(&outer_pub));
    ok(&ferry(&["verify", s(&out), "--key", s(&inner_pub)]));
    let o = ferry(&["verify", s(&out), "--key", s(&outer_pub)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let sha = std::fs::read_to_string(w.dir.join("outer.tar.zst.sha256")).unwrap();
    let sha = sha.split_whitespace().next().unwrap().to_string();
    let j = ok(&ferry(&["--json", "inspect", s(&out)]));
    let v: serde_json::Value = j
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "inspect")
        .unwrap();
    assert_eq!(v["origin"]["kind"], "bundle", "{j}");
    assert_eq!(v["origin"]["name"], "outer", "{j}");
    assert_eq!(v["origin"]["sha256"], format!("sha256:{sha}"), "{j}");
    assert_eq!(v["name"], "inner", "{j}");
    let items: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        items,
        [w.image("fixtures/docker-v2").reference(&w.host)],
        "{j}"
    );
    let t = ok(&ferry(&["inspect", s(&out)]));
    assert!(t.contains("re-exported from bundle `outer`"), "{t}");
}

/// A store altered at rest (one layer's bytes), a bundle with one byte
/// flipped, an item the source does not hold: exit 1, the error names
/// what is wrong, and no output file is left.
#[test]
fn a_hostile_source_is_refused_and_nothing_is_written() {
    require_tool("docker-registry");
    let mut w = world();
    let spec = w.spec(
        "outer",
        &["fixtures/docker-v2", "fixtures/many-layers"],
        json!({}),
    );
    let bundle = w.dir.join("outer.tar.zst");
    w.export(&spec, &bundle, &["--compression", "none"]);
    let store = w.dir.join("store");
    ok(&ferry(&["import", s(&bundle), "--store", s(&store)]));
    w.stop_upstream();
    let out = w.dir.join("inner.tar.zst");

    // An item the source lacks.
    let missing = w.spec("missing", &["fixtures/multiarch"], json!({}));
    for source in [&store, &bundle] {
        let t = fails(
            &ferry(&[
                "export",
                "--from",
                s(source),
                "-f",
                s(&missing),
                "-o",
                s(&out),
            ]),
            1,
        );
        assert!(
            t.contains("is not in the source") && t.contains("fixtures/multiarch"),
            "{t}"
        );
        assert_nothing_written(&out);
    }

    // One layer of the store altered (same size).
    let layer = &w.image("fixtures/many-layers").blobs.last().unwrap().digest;
    let path = store.join("blobs/sha256").join(layer.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let sub = w.spec("inner", &["fixtures/many-layers"], json!({}));
    let t = fails(
        &ferry(&["export", "--from", s(&store), "-f", s(&sub), "-o", s(&out)]),
        1,
    );
    assert!(
        t.contains(&layer.to_string()) && t.contains("altered"),
        "{t}"
    );
    assert_nothing_written(&out);
    // The store itself was not touched by the refusal.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    // One byte of the bundle flipped, in the middle of a layer.
    let data = &w.image("fixtures/many-layers").blobs.last().unwrap().data;
    let mut raw = std::fs::read(&bundle).unwrap();
    let at = raw
        .windows(data.len().min(64))
        .position(|x| x == &data[..data.len().min(64)])
        .unwrap();
    raw[at] ^= 0x01;
    let flipped = w.dir.join("flipped.tar");
    std::fs::write(&flipped, &raw).unwrap();
    let t = fails(&ferry(&["export", "--from", s(&flipped), "-o", s(&out)]), 1);
    assert!(t.contains("failed verification"), "{t}");
    assert_nothing_written(&out);
}

// ---------------------------------------------------------- signatures

/// Signed images through a store: the re-export carries their cosign
/// signatures, so the re-exported bundle verifies under the original
/// policy (`verify --policy`), and a spec with that policy re-checks it
/// offline at re-export; the re-export of an image without its signature
/// (altered away from the store) fails the policy.
#[test]
fn a_reexport_from_a_store_keeps_the_signatures_the_original_policy_checks() {
    require_tool("docker-registry");
    require_tool("openssl");
    let mut w = world();
    let (vendor, vendor_pub) = common::cosign::keypair(&w.dir, "vendor");
    let client = Client::new(ClientConfig::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for name in ["fixtures/docker-v2", "fixtures/multiarch"] {
        let repo = Repo {
            host: w.host.clone(),
            path: name.to_string(),
        };
        let subject = w.image(name).top.digest.clone();
        rt.block_on(common::cosign::push_signature(
            &client, &repo, &w.dir, &vendor, &subject, &subject,
        ));
    }
    let policy = json!({"verify": {"rules": [{
        "match": format!("{}/fixtures/*", w.host),
        "keys": [vendor_pub.file_name().unwrap().to_str().unwrap()],
    }]}});
    let spec = w.spec(
        "outer",
        &["fixtures/docker-v2", "fixtures/multiarch"],
        policy.clone(),
    );
    let bundle = w.dir.join("outer.tar.zst");
    let lock = w.dir.join("outer.lock");
    w.export(&spec, &bundle, &["--lock", s(&lock)]);
    let store = w.dir.join("store");
    ok(&ferry(&["import", s(&bundle), "--store", s(&store)]));
    w.stop_upstream();

    // A subset by spec with the policy: re-checked offline at re-export.
    let inner = w.spec("inner", &["fixtures/docker-v2"], policy);
    let out = w.dir.join("inner.tar.zst");
    let t = ok(&ferry(&[
        "export",
        "--from",
        s(&store),
        "-f",
        s(&inner),
        "-o",
        s(&out),
    ]));
    assert!(t.contains("signature policy: 1 item(s) checked"), "{t}");
    let t = ok(&ferry(&["verify", s(&out), "--policy", s(&spec)]));
    assert!(
        t.contains("re-verified offline") && t.contains("1 verified"),
        "{t}"
    );
    let j = ok(&ferry(&["--json", "inspect", s(&out)]));
    let sig_tag = format!(
        "sha256-{}.sig",
        w.image("fixtures/docker-v2").top.digest.hex()
    );
    assert!(j.contains(&sig_tag), "the signature was not carried: {j}");

    // By the outer bundle's lock (digests): everything it pinned, named as
    // upstream, still verifies under the original policy.
    let everything = w.dir.join("everything.tar.zst");
    let t = ok(&ferry(&[
        "export",
        "--from",
        s(&store),
        "--lock",
        s(&lock),
        "-o",
        s(&everything),
    ]));
    assert!(t.contains("4 items"), "{t}");
    let t = ok(&ferry(&["verify", s(&everything), "--policy", s(&spec)]));
    assert!(t.contains("2 verified"), "{t}");

    // From the carried bundle, its signatures re-verified offline against the
    // policy file first: the bundle's recorded verdicts travel with the items.
    let from_bundle = w.dir.join("from-bundle.tar.zst");
    let t = ok(&ferry(&[
        "export",
        "--from",
        s(&bundle),
        "--policy",
        s(&spec),
        "-o",
        s(&from_bundle),
    ]));
    assert!(t.contains("verified"), "{t}");
    let t = ok(&ferry(&["inspect", s(&from_bundle)]));
    assert!(
        t.contains("image signatures as recorded at export") && t.contains("fixtures/docker-v2"),
        "{t}"
    );
    let t = ok(&ferry(&["verify", s(&from_bundle)]));
    assert!(
        t.contains("the policy the bundle carries") && t.contains("2 verified"),
        "{t}"
    );

    // The signature's tag removed from the store's index: the policy refuses,
    // nothing is written.
    let index_path = store.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["annotations"]["dev.ferry.tag"] != sig_tag.as_str());
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let refused = w.dir.join("refused.tar.zst");
    let t = fails(
        &ferry(&[
            "export",
            "--from",
            s(&store),
            "-f",
            s(&inner),
            "-o",
            s(&refused),
        ]),
        1,
    );
    assert!(t.contains("signature"), "{t}");
    assert_nothing_written(&refused);
}

/// `--since` the inner network's receipt: what it holds is left out of the
/// re-export (listed as base), the delta imports there complete; a lock
/// file is refused for `--since` (reading it needs the upstream).
#[test]
fn a_reexport_with_since_leaves_out_what_the_inner_network_holds() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let mut w = world();
    let both = ["fixtures/multiarch", "fixtures/docker-v2"];
    let spec = w.spec("outer", &both, json!({}));
    let bundle = w.dir.join("outer.tar.zst");
    let lock = w.dir.join("outer.lock");
    w.export(&spec, &bundle, &["--lock", s(&lock)]);
    let store = w.dir.join("store");
    ok(&ferry(&["import", s(&bundle), "--store", s(&store)]));
    w.stop_upstream();

    // The inner network first receives docker-v2 alone.
    let inner = Registry::start().unwrap();
    let first = w.dir.join("first.tar.zst");
    let one = w.spec("first", &["fixtures/docker-v2"], json!({}));
    ok(&ferry(&[
        "export",
        "--from",
        s(&store),
        "-f",
        s(&one),
        "-o",
        s(&first),
    ]));
    let receipt = w.dir.join("inner.receipt.json");
    ok(&ferry(&[
        "import",
        s(&first),
        "--registry",
        &inner.host(),
        "--receipt",
        s(&receipt),
    ]));

    // Then both, since its receipt: docker-v2's blobs stay home.
    let delta = w.dir.join("delta.tar.zst");
    let two = w.spec("second", &both, json!({}));
    let t = ok(&ferry(&[
        "export",
        "--from",
        s(&store),
        "-f",
        s(&two),
        "--since",
        s(&receipt),
        "-o",
        s(&delta),
    ]));
    let docker = w.image("fixtures/docker-v2");
    assert!(
        t.contains(&format!("differential: {} blob(s)", docker.blobs.len())),
        "{t}"
    );
    ok(&ferry(&["import", s(&delta), "--registry", &inner.host()]));
    for name in both {
        assert_byte_exact(&inner, &w.target_repo(&inner, name), w.image(name));
    }

    // A lock for --since: refused before anything is written.
    let out = w.dir.join("refused.tar.zst");
    let t = fails(
        &ferry(&[
            "export",
            "--from",
            s(&store),
            "--since",
            s(&lock),
            "-o",
            s(&out),
        ]),
        1,
    );
    assert!(t.contains("is a lock file"), "{t}");
    assert_nothing_written(&out);
}
