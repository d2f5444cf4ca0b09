//! The signature policy end to end (issue 15), with signatures made by a
//! tool that is not ferry: openssl signs cosign simple-signing payloads
//! (ECDSA P-256, as cosign's documentation does), the `.sig` manifests are
//! pushed to a real `docker-registry`, and ferry's export accepts the signed
//! image and refuses an unsigned one, one signed by another key and one whose
//! payload names another digest. On the isolated side `verify` and `import`
//! re-verify offline, and a bundle whose signature was stripped after export
//! (re-pinned so its own table of contents is consistent) is refused with
//! nothing landed.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;
use common::cosign::{keypair, push_signature};
use common::{ferry, ok, text};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

use ferry_bundle::craft::{raw_tar, zstd, RawEntry};
use ferry_bundle::Digest;
use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::registry::{require_tool, Registry};
use serde_json::json;

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    set: FixtureSet,
    upstream: Registry,
    trusted_pub: PathBuf,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let upstream = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions::default());
    let client = Client::new(ClientConfig::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(push(&set, &client, &upstream.host())).unwrap();
    let (trusted, trusted_pub) = keypair(&dir, "vendor");
    let (other, _) = keypair(&dir, "other");
    let repo = |name: &str| Repo {
        host: upstream.host(),
        path: name.to_string(),
    };
    let d = |name: &str| set.image(name).top.digest.clone();
    rt.block_on(async {
        // docker-v2: signed by the trusted key.
        push_signature(
            &client,
            &repo("fixtures/docker-v2"),
            &dir,
            &trusted,
            &d("fixtures/docker-v2"),
            &d("fixtures/docker-v2"),
        )
        .await;
        // many-layers: signed by another key.
        push_signature(
            &client,
            &repo("fixtures/many-layers"),
            &dir,
            &other,
            &d("fixtures/many-layers"),
            &d("fixtures/many-layers"),
        )
        .await;
        // docker-list: the trusted key, but the payload names another digest.
        push_signature(
            &client,
            &repo("fixtures/docker-list"),
            &dir,
            &trusted,
            &d("fixtures/docker-list"),
            &d("fixtures/docker-v2"),
        )
        .await;
        // multiarch: no signature at all.
    });
    World {
        _tmp: tmp,
        dir,
        set,
        upstream,
        trusted_pub,
    }
}

impl World {
    fn reference(&self, name: &str) -> String {
        self.set.image(name).reference(&self.upstream.host())
    }

    /// Writes a spec with `names` and the policy; returns its path.
    fn spec(&self, label: &str, names: &[&str], extra_rules: serde_json::Value) -> PathBuf {
        let mut rules = vec![json!({
            "match": format!("{}/fixtures/*", self.upstream.host()),
            "keys": [self.trusted_pub.file_name().unwrap().to_str().unwrap()],
        })];
        if let Some(extra) = extra_rules.as_array() {
            rules.extend(extra.iter().cloned());
        }
        let spec = self.dir.join(format!("{label}.yaml"));
        std::fs::write(
            &spec,
            serde_json::to_vec(&json!({
                "apiVersion": "ferry.dev/v1",
                "name": label,
                "images": names.iter().map(|n| self.reference(n)).collect::<Vec<_>>(),
                "verify": {"rules": rules},
            }))
            .unwrap(),
        )
        .unwrap();
        spec
    }

    fn export(&self, spec: &Path, out: &Path) -> Output {
        ferry(&[
            "export",
            "-f",
            spec.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--cache",
            self.dir.join("cache").to_str().unwrap(),
        ])
    }
}

#[test]
fn export_accepts_signed_images_and_refuses_unsigned_foreign_and_misdirected_ones() {
    require_tool("docker-registry");
    require_tool("openssl");
    let w = world();
    // The signed image crosses; the verdict is in bundle.json.
    let out = w.dir.join("signed.tar.zst");
    let t = ok(&w.export(&w.spec("signed", &["fixtures/docker-v2"], json!([])), &out));
    assert!(t.contains("1 verified"), "{t}");
    let t = ok(&ferry(&["inspect", out.to_str().unwrap()]));
    assert!(t.contains("signed by key vendor.pub"), "{t}");
    // Each bad one is refused, named with its reason, and nothing is written.
    for (name, why) in [
        ("fixtures/multiarch", "no signature"),
        ("fixtures/many-layers", "key"),
        ("fixtures/docker-list", "digest"),
    ] {
        let out = w
            .dir
            .join(format!("bad-{}.tar.zst", name.replace('/', "-")));
        let o = w.export(&w.spec("bad", &[name], json!([])), &out);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {t}");
        assert!(t.contains(&w.reference(name)), "{name}: {t}");
        assert!(t.to_lowercase().contains(why), "{name} ({why}): {t}");
        assert!(!out.exists(), "{name}: nothing written");
    }
    // An explicit rule lets the unsigned third-party image through, recorded.
    let allow = json!([{
        "match": format!("{}/fixtures/multiarch", w.upstream.host()),
        "unsigned": "allow",
    }]);
    let out = w.dir.join("allowed.tar.zst");
    let t = ok(&w.export(
        &w.spec(
            "allowed",
            &["fixtures/multiarch", "fixtures/docker-v2"],
            allow,
        ),
        &out,
    ));
    assert!(t.contains("1 verified, 1 allowed unsigned"), "{t}");
    // warn mode carries and reports.
    let warn = json!([{
        "match": format!("{}/fixtures/many-layers", w.upstream.host()),
        "keys": [w.trusted_pub.file_name().unwrap().to_str().unwrap()],
        "mode": "warn",
    }]);
    let out = w.dir.join("warned.tar.zst");
    let t = ok(&w.export(&w.spec("warned", &["fixtures/many-layers"], warn), &out));
    assert!(t.contains("1 warned") && t.contains("warning"), "{t}");
}

/// Rewrites a bundle without its signature items (and their blobs), with
/// bundle.json and index.json re-pinned so the bundle is self-consistent:
/// what an attacker who strips signatures in transit would produce.
fn strip_signatures(bundle: &Path, out: &Path) {
    let mut raw = Vec::new();
    ferry_bundle::reader::decompress(std::fs::File::open(bundle).unwrap())
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    let mut entries: Vec<(String, Vec<u8>, tar::EntryType)> = Vec::new();
    let mut ar = tar::Archive::new(&raw[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let kind = e.header().entry_type();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push((name, data, kind));
    }
    let meta_bytes = &entries
        .iter()
        .find(|(n, _, _)| n == "ferry/bundle.json")
        .unwrap()
        .1;
    let mut meta: ferry_bundle::meta::BundleMeta = serde_json::from_slice(meta_bytes).unwrap();
    let gone: Vec<Digest> = meta
        .items
        .iter()
        .filter(|i| i.subject.is_some())
        .map(|i| i.digest.clone())
        .collect();
    assert!(!gone.is_empty(), "the bundle carried a signature");
    let mut drop_blobs: Vec<Digest> = gone.clone();
    for (name, data, _) in &entries {
        if gone.iter().any(|d| name.ends_with(&d.hex().to_string())) {
            let p = ferry_bundle::manifest::parse(data, None).unwrap();
            drop_blobs.extend(p.blobs().map(|b| b.digest.clone()));
        }
    }
    meta.items.retain(|i| i.subject.is_none());
    meta.blobs.retain(|b| !drop_blobs.contains(&b.digest));
    let index = ferry_bundle::meta::index_json(&meta.items);
    meta.index.digest = Digest::of(&index);
    meta.index.size = index.len() as u64;
    let mut out_entries = Vec::new();
    for (name, data, kind) in &entries {
        let data = match name.as_str() {
            "ferry/bundle.json" => meta.to_json(),
            "index.json" => index.clone(),
            n if drop_blobs
                .iter()
                .any(|d| n == format!("blobs/sha256/{}", d.hex())) =>
            {
                continue
            }
            _ => data.clone(),
        };
        let mut e = RawEntry::file(name, &data);
        e.kind = *kind;
        out_entries.push(e);
    }
    std::fs::write(out, zstd(&raw_tar(&out_entries))).unwrap();
}

#[test]
fn verify_and_import_re_verify_offline_and_refuse_a_stripped_signature() {
    require_tool("docker-registry");
    require_tool("openssl");
    let w = world();
    let spec = w.spec("signed", &["fixtures/docker-v2"], json!([]));
    let bundle = w.dir.join("signed.tar.zst");
    ok(&w.export(&spec, &bundle));
    // The upstream is gone: everything below is offline.
    let upstream_host = w.upstream.host();
    drop(w.upstream);
    let target = Registry::start().unwrap();
    let t = ok(&ferry(&[
        "verify",
        bundle.to_str().unwrap(),
        "--policy",
        spec.to_str().unwrap(),
    ]));
    assert!(
        t.contains("re-verified offline") && t.contains("1 verified"),
        "{t}"
    );
    let t = ok(&ferry(&["verify", bundle.to_str().unwrap()]));
    assert!(t.contains("the policy the bundle carries"), "{t}");
    let t = ok(&ferry(&[
        "import",
        bundle.to_str().unwrap(),
        "--registry",
        &target.host(),
        "--policy",
        spec.to_str().unwrap(),
    ]));
    assert!(t.contains("1 verified"), "{t}");

    // Stripped in transit, the table of contents re-pinned: refused by the
    // carried policy (it recorded a verified signature) and by --policy.
    let stripped = w.dir.join("stripped.tar.zst");
    strip_signatures(&bundle, &stripped);
    let fresh = Registry::start().unwrap();
    let fresh_host = fresh.host();
    for extra in [vec![], vec!["--policy", spec.to_str().unwrap()]] {
        let mut args = vec!["verify", stripped.to_str().unwrap()];
        args.extend(extra.iter().copied());
        let o = ferry(&args);
        assert_eq!(o.status.code(), Some(1), "verify {extra:?}: {}", text(&o));
        assert!(text(&o).contains("signature policy"), "{}", text(&o));
        let mut args = vec![
            "import",
            stripped.to_str().unwrap(),
            "--registry",
            &fresh_host,
        ];
        args.extend(extra.iter().copied());
        let o = ferry(&args);
        assert_eq!(o.status.code(), Some(1), "import {extra:?}: {}", text(&o));
        let repo = Repo {
            host: fresh.host(),
            path: format!("{}/fixtures/docker-v2", upstream_host.replace(':', "-")),
        };
        let tags = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(
                Client::new(ClientConfig::default())
                    .unwrap()
                    .list_tags(&repo),
            )
            .unwrap();
        assert!(tags.is_empty(), "nothing landed: {tags:?}");
    }
}
