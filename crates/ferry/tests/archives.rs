//! `ferry import BUNDLE --archives DIR`: the first node, before any registry
//! exists (issue 13). A real containerd (`ctr images import`) loads every
//! archive, with the upstream digest; skopeo reads each as an OCI archive; a
//! refused bundle leaves no archive.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;
use common::{ferry, ok, text};

use std::path::{Path, PathBuf};

use ferry_testkit::containerd::{require_containerd, Containerd};
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::registry::{require_tool, Registry};
use ferry_testkit::tools::run_tool;

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    set: FixtureSet,
    upstream: Registry,
}

fn world() -> World {
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

const IMAGES: [&str; 3] = [
    "fixtures/multiarch",
    "fixtures/docker-v2",
    "fixtures/docker-list",
];

impl World {
    fn export(&self) -> PathBuf {
        let refs: Vec<String> = IMAGES
            .iter()
            .map(|n| self.set.image(n).reference(&self.upstream.host()))
            .collect();
        let spec = self.dir.join("bundle.yaml");
        // JSON is YAML: the spec goes through a serializer.
        std::fs::write(
            &spec,
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "ferry.dev/v1",
                "name": "first-node",
                "images": refs,
            }))
            .unwrap(),
        )
        .unwrap();
        let out = self.dir.join("bundle.tar.zst");
        ok(&ferry(&[
            "export",
            "-f",
            spec.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--cache",
            self.dir.join("cache").to_str().unwrap(),
        ]));
        out
    }
}

fn tars(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn ctr_imports_every_archive_with_upstream_digests() {
    require_tool("docker-registry");
    require_tool("skopeo");
    require_containerd();
    let w = world();
    let bundle = w.export();
    for (sub, platform_args) in [
        ("all", vec![]),
        ("amd64", vec!["--archive-platform", "linux/amd64"]),
    ] {
        let out = w.dir.join(sub);
        let mut args = vec![
            "import",
            bundle.to_str().unwrap(),
            "--archives",
            out.to_str().unwrap(),
        ];
        args.extend(platform_args.iter().copied());
        let t = ok(&ferry(&args));
        assert!(t.contains("wrote 3 archive(s)"), "{t}");
        assert_eq!(tars(&out).len(), 3, "{:?}", tars(&out));
        let ctd = Containerd::start().unwrap();
        for name in IMAGES {
            let img = w.set.image(name);
            let reference = img.reference(&w.upstream.host());
            let file = out.join(ferry_import::archives::file_name(&reference));
            assert!(file.exists(), "{}", file.display());
            ctd.import(&file, false).unwrap();
            assert_eq!(
                ctd.image_digest(&reference).unwrap(),
                img.top.digest.to_string(),
                "{reference}: containerd recorded another digest"
            );
            // skopeo (containers/image) reads the same file as an OCI archive,
            // named by its full reference. skopeo 1.9 skips Docker schema2
            // entries in any OCI layout (docs/bundle-format.md), so only the
            // OCI-typed images are checked with it.
            if !img.top.media_type.starts_with("application/vnd.oci.") {
                continue;
            }
            let raw = run_tool(
                "skopeo",
                [
                    "inspect",
                    "--raw",
                    &format!("oci-archive:{}:{reference}", file.display()),
                ],
            )
            .unwrap();
            assert_eq!(raw.stdout, img.top.bytes.to_vec(), "{reference}");
        }
        // Every image the archives named, and no URL-shaped name.
        let images = ctd.images().unwrap();
        assert_eq!(images.len(), IMAGES.len(), "{images:?}");
        assert!(images.iter().all(|i| !i.contains("://")), "{images:?}");
    }
    // Narrowed to amd64, the multi-arch archive holds only that child's blobs:
    // it is smaller than the full one, and --all-platforms cannot load it.
    let multi = w
        .set
        .image("fixtures/multiarch")
        .reference(&w.upstream.host());
    let name = ferry_import::archives::file_name(&multi);
    let full = std::fs::metadata(w.dir.join("all").join(&name))
        .unwrap()
        .len();
    let narrow = std::fs::metadata(w.dir.join("amd64").join(&name))
        .unwrap()
        .len();
    assert!(narrow < full, "{narrow} < {full}");
    let ctd = Containerd::start().unwrap();
    assert!(ctd.import(&w.dir.join("amd64").join(&name), true).is_err());
}

#[test]
fn a_refused_bundle_writes_no_archive() {
    require_tool("docker-registry");
    let w = world();
    let bundle = w.export();
    // Truncated at every tenth of its length: never an archive left behind.
    let bytes = std::fs::read(&bundle).unwrap();
    for cut in 1..10 {
        let bad = w.dir.join(format!("cut-{cut}.tar.zst"));
        std::fs::write(&bad, &bytes[..bytes.len() * cut / 10]).unwrap();
        let out = w.dir.join(format!("out-{cut}"));
        let o = ferry(&[
            "import",
            bad.to_str().unwrap(),
            "--archives",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "cut {cut}/10: {}", text(&o));
        assert!(tars(&out).is_empty(), "cut {cut}/10 left {:?}", tars(&out));
    }
    // A foreign key: refused before anything is written.
    let keys = w.dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    ok(&ferry(&[
        "key",
        "generate",
        "--out",
        keys.join("other").to_str().unwrap(),
        "--no-password",
    ]));
    let out = w.dir.join("out-key");
    let o = ferry(&[
        "import",
        bundle.to_str().unwrap(),
        "--archives",
        out.to_str().unwrap(),
        "--key",
        keys.join("other.pub").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("signature"), "{}", text(&o));
    assert!(tars(&out).is_empty(), "{:?}", tars(&out));
    // A platform the bundle does not carry is named.
    let out = w.dir.join("out-platform");
    let o = ferry(&[
        "import",
        bundle.to_str().unwrap(),
        "--archives",
        out.to_str().unwrap(),
        "--archive-platform",
        "windows/amd64",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("windows/amd64"), "{}", text(&o));
    assert!(tars(&out).is_empty(), "{:?}", tars(&out));
}
