//! `ferry export --from STORE` carries everything the store holds (issue
//! 16): import records in the store, for every item it commits, the
//! upstream reference, the kind and the file path (`dev.ferry.source`,
//! `dev.ferry.kind`, `dev.ferry.path` on the `index.json` entries; a file
//! item's artifact manifest kept as a blob, its bytes in the file tree).
//! Images with their signatures, a Helm chart and a plain file go upstream →
//! bundle → store; the upstream stops; the re-export from the store
//! verifies under the original signature policy and imports byte-exact
//! into a second registry and file tree, with the same items in
//! `bundle.json`. A hostile annotation is refused (exit 1, named, escaped,
//! nothing written); an older store (no annotations) still re-exports its
//! images and names the entries without an origin.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;
use common::{assert_no_reexport_output as assert_nothing_written, fails, ferry, ok};

use std::path::{Path, PathBuf};

use ferry_bundle::craft::chart_tgz;
use ferry_bundle::meta::{Item, Kind};
use ferry_bundle::{Digest, Reference};
use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::fixtures::{FixtureOptions, FixtureSet};
use ferry_testkit::nginx::{require_nginx, Nginx, NginxOptions};
use ferry_testkit::registry::{require_tool, Registry};
use ferry_testkit::tools::skopeo_inspect_raw;
use serde_json::{json, Value};

const IMAGES: [&str; 2] = ["fixtures/docker-v2", "fixtures/multiarch"];
const DRIVER: &str = "falco_ubuntu-generic_5.15.0-91-generic_101.ko";

/// Upstream (a registry with signed images, nginx with a chart repository
/// and a file) → one bundle → a store; then the upstream is stopped.
struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    set: FixtureSet,
    host: String,
    chart: Vec<u8>,
    tool: Vec<u8>,
    spec: PathBuf,
    bundle: PathBuf,
    lock: PathBuf,
    store: PathBuf,
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn world() -> World {
    require_tool("docker-registry");
    require_tool("skopeo");
    require_tool("openssl");
    require_nginx();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (upstream, set) = common::upstream_with(&FixtureOptions::default());
    let host = upstream.host();
    // Both images signed by the vendor (cosign `.sig` tags).
    let (vendor, vendor_pub) = common::cosign::keypair(&dir, "vendor");
    let client = Client::new(ClientConfig::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for name in IMAGES {
        let repo = Repo {
            host: host.clone(),
            path: name.to_string(),
        };
        let subject = set.image(name).top.digest.clone();
        rt.block_on(common::cosign::push_signature(
            &client, &repo, &dir, &vendor, &subject, &subject,
        ));
    }
    // A classic chart repository and a plain file.
    let www = dir.join("www");
    let chart = chart_tgz("app", "1.0.0", &[("values.yaml", b"replicas: 1\n")]);
    write(&www, "charts/app-1.0.0.tgz", &chart);
    write(
        &www,
        "charts/index.yaml",
        format!(
            "apiVersion: v1\nentries:\n  app:\n  - apiVersion: v2\n    name: app\n    version: 1.0.0\n    digest: {}\n    urls: [app-1.0.0.tgz]\ngenerated: \"2026-01-02T03:04:05Z\"\n",
            Digest::of(&chart).hex()
        )
        .as_bytes(),
    );
    let tool = b"tool bytes ".repeat(500);
    write(&www, "dl/tool-1.0.tar.gz", &tool);
    // A Falco driver, the falcoctl index (rewritten in the tree at import),
    // an OpenSearch plugin with its `.sha512` (two files of one item).
    write(
        &www,
        &format!("driver/7.0.0+driver/x86_64/{DRIVER}"),
        &b"\x7fELF fake kernel module".repeat(100),
    );
    write(
        &www,
        "falcoctl/index.yaml",
        b"- name: not-bundled\n  type: plugin\n  registry: ghcr.io\n  repository: falcosecurity/plugins/plugin/k8saudit\n  description: x\n  home: x\n  keywords: []\n  license: x\n  maintainers: []\n  sources: []\n",
    );
    let plugin = b"PK\x03\x04 fake plugin".repeat(50);
    write(
        &www,
        "os/repository-s3/2.8.0/repository-s3-2.8.0.zip",
        &plugin,
    );
    let sha512 = {
        use sha2::{Digest as _, Sha512};
        hex::encode(Sha512::digest(&plugin))
    };
    write(
        &www,
        "os/repository-s3/2.8.0/repository-s3-2.8.0.zip.sha512",
        format!("{sha512}  repository-s3-2.8.0.zip\n").as_bytes(),
    );
    let files = Nginx::start(NginxOptions::new(&www)).unwrap();
    let spec = dir.join("outer.yaml");
    let doc = json!({
        "apiVersion": "ferry.dev/v1",
        "name": "outer",
        "images": IMAGES.iter().map(|n| set.image(n).reference(&host)).collect::<Vec<_>>(),
        "charts": [{"repo": format!("{}/charts", files.url()), "name": "app", "version": "1.0.0", "repoName": "stable"}],
        "files": [{"url": format!("{}/dl/tool-1.0.tar.gz", files.url()), "sha256": Digest::of(&tool).hex(), "path": "tools/tool-1.0.tar.gz"}],
        "falco": {
            "drivers": {
                "repo": format!("{}/driver", files.url()),
                "version": "7.0.0+driver",
                "arch": ["x86_64"],
                "kernels": [{"target": "ubuntu-generic", "release": "5.15.0-91-generic", "version": "101"}],
            },
            "index": format!("{}/falcoctl/index.yaml", files.url()),
        },
        "opensearch": {"repo": format!("{}/os", files.url()), "version": "2.8.0", "plugins": ["repository-s3"]},
        "verify": {"rules": [{
            "match": format!("{host}/fixtures/*"),
            "keys": [vendor_pub.file_name().unwrap().to_str().unwrap()],
        }]},
    });
    std::fs::write(&spec, serde_json::to_vec(&doc).unwrap()).unwrap();
    let bundle = dir.join("outer.tar.zst");
    let lock = dir.join("outer.lock");
    let cache = dir.join("cache");
    ok(&ferry(&[
        "export",
        "-f",
        s(&spec),
        "-o",
        s(&bundle),
        "--lock",
        s(&lock),
        "--cache",
        s(&cache),
    ]));
    let store = dir.join("store");
    ok(&ferry(&["import", s(&bundle), "--store", s(&store)]));
    // Offline from here on.
    drop(files);
    drop(upstream);
    World {
        _tmp: tmp,
        dir,
        set,
        host,
        chart,
        tool,
        spec,
        bundle,
        lock,
        store,
    }
}

/// The items of a bundle's `bundle.json`, sorted by reference.
fn items(bundle: &Path) -> Vec<Item> {
    let mut items = ferry_import::verify::inspect(bundle)
        .unwrap()
        .head
        .meta
        .items
        .clone();
    items.sort_by(|a, b| a.reference.cmp(&b.reference));
    items
}

fn index(store: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(store.join("index.json")).unwrap()).unwrap()
}

fn set_index(store: &Path, v: &Value) {
    std::fs::write(
        store.join("index.json"),
        serde_json::to_vec_pretty(v).unwrap(),
    )
    .unwrap();
}

/// What a refused re-export must leave: nothing at `out`, no staging.
/// Every item of the outer bundle — two signed images, their signatures, a
/// chart, a file — comes back out of the store with the same `bundle.json`
/// metadata; the re-export verifies under the original policy and lands
/// byte-exact in a second registry and file tree. The file item's store
/// entry names no repository (`ferry serve` lists none for it).
#[test]
fn a_store_reexports_charts_files_and_signatures_as_the_bundle_carried_them() {
    let w = world();
    let idx = index(&w.store);
    let entries = idx["manifests"].as_array().unwrap();
    // Every entry records its origin; the file item's entry has no repository.
    for e in entries {
        let ann = &e["annotations"];
        assert!(
            ann["dev.ferry.source"].is_string() && ann["dev.ferry.kind"].is_string(),
            "{e}"
        );
    }
    let file_entry = entries
        .iter()
        .find(|e| e["annotations"]["dev.ferry.kind"] == "file")
        .expect("the file item is recorded");
    assert!(file_entry["annotations"]
        .get("dev.ferry.repository")
        .is_none());
    assert!(file_entry["annotations"]
        .get("org.opencontainers.image.ref.name")
        .is_none());
    assert_eq!(
        file_entry["annotations"]["dev.ferry.path"],
        "files/tools/tool-1.0.tar.gz"
    );

    let out = w.dir.join("inner.tar.zst");
    let t = ok(&ferry(&[
        "export",
        "--from",
        s(&w.store),
        "--lock",
        s(&w.lock),
        "-o",
        s(&out),
    ]));
    assert!(t.contains("fetched 0 new"), "{t}");
    assert!(!t.contains("without origin annotations"), "{t}");
    // The same items, metadata for metadata (kinds, upstream names, paths,
    // subjects, digests), as the bundle the store was fed from.
    let (outer, inner) = (items(&w.bundle), items(&out));
    assert_eq!(inner, outer);
    for kind in [
        Kind::Image,
        Kind::Chart,
        Kind::File,
        Kind::FalcoDriver,
        Kind::FalcoctlIndex,
        Kind::OpensearchPlugin,
    ] {
        assert!(inner.iter().any(|i| i.kind == kind), "{kind:?}: {inner:?}");
    }
    assert_eq!(inner.iter().filter(|i| i.subject.is_some()).count(), 2);
    // The original signature policy passes on it, offline.
    let t = ok(&ferry(&["verify", s(&out), "--policy", s(&w.spec)]));
    assert!(t.contains("2 verified"), "{t}");

    // Into a second registry and file tree: every item byte-exact.
    let fresh = Registry::start().unwrap();
    let tree = w.dir.join("tree");
    ok(&ferry(&[
        "import",
        s(&out),
        "--registry",
        &fresh.host(),
        "--files",
        s(&tree),
    ]));
    for name in IMAGES {
        let img = w.set.image(name);
        let repo = format!("{}/{}/{name}", fresh.host(), w.host.replace(':', "-"));
        let raw = skopeo_inspect_raw(&format!("{repo}:{}", img.tag)).unwrap();
        assert_eq!(Digest::of(&raw), img.top.digest, "{name}");
        let sig = skopeo_inspect_raw(&format!("{repo}:sha256-{}.sig", img.top.digest.hex()));
        assert!(sig.is_ok(), "{name}: its signature did not land");
    }
    let chart = outer.iter().find(|i| i.kind == Kind::Chart).unwrap();
    let r = Reference::parse(&chart.reference).unwrap();
    let mapped = ferry_import::target::Mapping::default().map_path(&r);
    let raw = skopeo_inspect_raw(&format!(
        "{}/{mapped}:{}",
        fresh.host(),
        r.tag.as_deref().unwrap()
    ))
    .unwrap();
    assert_eq!(Digest::of(&raw), chart.digest, "the chart's manifest");
    assert_eq!(
        std::fs::read(tree.join(chart.path.as_deref().unwrap())).unwrap(),
        w.chart
    );
    assert_eq!(
        std::fs::read(tree.join("files/tools/tool-1.0.tar.gz")).unwrap(),
        w.tool
    );
    // Every file of every file item, byte for byte as in the store's tree
    // (which the outer import wrote from the outer bundle); the falcoctl
    // index, rewritten at each import for its target, is there (its carried
    // bytes are the item's, whose digest is the outer bundle's above).
    assert!(tree.join("falco/index.yaml").is_file());
    for rel in [
        format!("falco/driver/7.0.0+driver/x86_64/{DRIVER}"),
        "opensearch/plugins/repository-s3/2.8.0/repository-s3-2.8.0.zip".into(),
        "opensearch/plugins/repository-s3/2.8.0/repository-s3-2.8.0.zip.sha512".into(),
    ] {
        assert_eq!(
            std::fs::read(tree.join(&rel)).unwrap(),
            std::fs::read(w.store.join("files").join(&rel)).unwrap(),
            "{rel}"
        );
    }
}

/// A store whose origin annotations were edited (an unknown kind with a
/// terminal escape, a path out of the file tree, a source naming another
/// tag, a source removed) is refused: exit 1, the entry and the value named
/// (escaped), nothing written, the store untouched.
#[test]
fn a_store_with_a_hostile_origin_annotation_is_refused_and_nothing_is_written() {
    let w = world();
    let pristine = index(&w.store);
    let out = w.dir.join("inner.tar.zst");
    let is_kind = |k: &'static str| move |e: &Value| e["annotations"]["dev.ferry.kind"] == k;
    type Edit = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);
    let edits: Vec<Edit> = vec![
        (
            "file",
            Box::new(|e| e["annotations"]["dev.ferry.kind"] = json!("file\u{1b}[2J")),
            "is not a kind ferry knows",
        ),
        (
            "file",
            Box::new(|e| e["annotations"]["dev.ferry.path"] = json!("files/../../../etc/passwd")),
            "dev.ferry.path",
        ),
        (
            "chart",
            Box::new(|e| {
                let src = e["annotations"]["dev.ferry.source"].as_str().unwrap();
                let other = format!("{}9", src);
                e["annotations"]["dev.ferry.source"] = json!(other);
            }),
            "does not name the entry's tag",
        ),
        (
            "image",
            Box::new(|e| {
                e["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove("dev.ferry.source");
            }),
            "is missing",
        ),
    ];
    for (kind, edit, says) in edits {
        let mut v = pristine.clone();
        let e = v["manifests"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|e| is_kind(kind)(e))
            .unwrap();
        edit(e);
        set_index(&w.store, &v);
        let o = ferry(&[
            "export",
            "--from",
            s(&w.store),
            "--lock",
            s(&w.lock),
            "-o",
            s(&out),
        ]);
        let t = fails(&o, 1);
        assert!(
            t.contains(says) && t.contains("the store was edited") && t.contains("store entry"),
            "{kind}: {t}"
        );
        assert!(
            !t.contains('\u{1b}'),
            "an escape reached the terminal: {t:?}"
        );
        assert_nothing_written(&out);
        assert_eq!(index(&w.store), v, "the refusal changed the store");
    }
}

/// A store written before the origin annotations (none on any entry, no
/// file item entries) still re-exports its images, named by the store's
/// repositories, and the run names every entry it found without an origin.
#[test]
fn an_older_store_reexports_its_images_and_names_the_entries_without_origin() {
    let w = world();
    let mut v = index(&w.store);
    let entries = v["manifests"].as_array_mut().unwrap();
    entries.retain(|e| e["annotations"].get("dev.ferry.repository").is_some());
    for e in entries.iter_mut() {
        let ann = e["annotations"].as_object_mut().unwrap();
        for key in ["dev.ferry.source", "dev.ferry.kind", "dev.ferry.path"] {
            ann.remove(key);
        }
    }
    let count = entries.len();
    set_index(&w.store, &v);
    let out = w.dir.join("older.tar.zst");
    let t = ok(&ferry(&["export", "--from", s(&w.store), "-o", s(&out)]));
    assert!(
        t.contains(&format!("{count} store entries without origin annotations")),
        "{t}"
    );
    let docker = w.set.image("fixtures/docker-v2");
    let store_repo = format!("{}/fixtures/docker-v2", w.host.replace(':', "-"));
    assert!(
        t.contains(&format!("{store_repo}:{}", docker.tag)),
        "the entry is not named: {t}"
    );
    ok(&ferry(&["verify", s(&out)]));
    let got = items(&out);
    assert_eq!(got.len(), count);
    assert!(got.iter().all(|i| i.kind == Kind::Image), "{got:?}");
    let named = got
        .iter()
        .find(|i| i.digest == docker.top.digest)
        .expect("docker-v2 carried");
    assert_eq!(named.reference, format!("{store_repo}:{}", docker.tag));
}

/// `ferry prune` on a store holding file items' entries: planned and
/// applied, it keeps them and their blobs (no receipt names them as
/// manifests), and the store still re-exports every item afterwards.
#[test]
fn a_pruned_store_keeps_its_file_items_and_still_reexports_them() {
    let w = world();
    let receipt = w.dir.join("store.receipt.json");
    ok(&ferry(&[
        "import",
        s(&w.bundle),
        "--store",
        s(&w.store),
        "--receipt",
        s(&receipt),
    ]));
    let before = index(&w.store);
    let plan = w.dir.join("prune.json");
    ok(&ferry(&[
        "prune",
        "--store",
        s(&w.store),
        "--receipt",
        s(&receipt),
        "--keep",
        s(&w.lock),
        "--plan",
        s(&plan),
    ]));
    ok(&ferry(&["prune", "--apply", s(&plan)]));
    assert_eq!(index(&w.store), before);
    let out = w.dir.join("after-prune.tar.zst");
    ok(&ferry(&[
        "export",
        "--from",
        s(&w.store),
        "--lock",
        s(&w.lock),
        "-o",
        s(&out),
    ]));
    assert_eq!(items(&out), items(&w.bundle));
}
