//! The import side against hostile bundles, through the CLI, with a real
//! `docker-registry`, `--files` directories and `--store` stores:
//!
//! - a refused import publishes no file (file items are staged and only
//!   published once the whole bundle verified), writes no receipt, no
//!   `--emit-config` output, no store index entry and no tag;
//! - two sources mapped to one target tag are refused before anything is
//!   pushed, naming both;
//! - file items stay in their kind's place (no dot-file, no other kind's
//!   subtree, no generated Helm index, one item per path), refused by
//!   `verify` and `import` alike;
//! - import re-checks what export checked: chart archives for unsafe
//!   entries, OpenSearch plugins against their `.sha512`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ferry_bundle::artifact::{file_manifest, FileLayer, HELM_CHART_LAYER, HELM_CONFIG};
use ferry_bundle::craft::{raw_tar, raw_tgz, zstd, RawEntry};
use ferry_bundle::manifest::OCI_MANIFEST;
use ferry_bundle::meta::{self, BlobMeta, BundleMeta, IndexPin, Item, Kind, Role};
use ferry_bundle::Digest;
use ferry_testkit::registry::Registry;

// ---------------------------------------------------------------------------
// Running ferry

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD")
        .env_remove("FERRY_LOG")
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .stdin(Stdio::null())
        .output()
        .expect("run ferry")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Everything under `root` (files and directories, relative), sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                stack.push(p);
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// Manifest revisions and tags the registry stores (empty when no manifest
/// was ever pushed; verified blobs may be uploaded before a refusal, never
/// a manifest or a tag).
fn registry_manifests(reg: &Registry) -> Vec<String> {
    tree(&reg.storage_dir().join("docker/registry/v2/repositories"))
        .into_iter()
        .filter(|p| p.contains("_manifests/") && p.ends_with("/link"))
        .collect()
}

/// The manifests a store's index.json lists (none when absent).
fn store_entries(store: &Path) -> usize {
    match std::fs::read(store.join("index.json")) {
        Ok(b) => {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            v["manifests"].as_array().map_or(0, Vec::len)
        }
        Err(_) => 0,
    }
}

// ---------------------------------------------------------------------------
// Building bundles

/// A bundle built item by item: manifests first, then the other blobs in
/// the order they were added (so a test decides which blob comes last).
#[derive(Default, Clone)]
struct Bundle {
    items: Vec<Item>,
    manifests: Vec<(BlobMeta, Vec<u8>)>,
    blobs: Vec<(BlobMeta, Vec<u8>)>,
}

impl Bundle {
    fn blob(&mut self, data: &[u8], role: Role, media_type: &str) -> Digest {
        let d = Digest::of(data);
        let known = self
            .blobs
            .iter()
            .chain(self.manifests.iter())
            .any(|(b, _)| b.digest == d);
        if !known {
            let b = BlobMeta {
                digest: d.clone(),
                size: data.len() as u64,
                role,
                media_type: Some(media_type.into()),
            };
            if role.is_manifest() {
                self.manifests.push((b, data.to_vec()));
            } else {
                self.blobs.push((b, data.to_vec()));
            }
        }
        d
    }

    fn item(&mut self, kind: Kind, reference: &str, manifest: &[u8], path: Option<&str>) {
        let digest = self.blob(manifest, Role::Manifest, OCI_MANIFEST);
        self.items.push(Item {
            kind,
            reference: reference.into(),
            digest,
            media_type: OCI_MANIFEST.into(),
            size: manifest.len() as u64,
            platforms: vec![],
            path: path.map(str::to_string),
            subject: None,
        });
    }

    /// An image with one layer.
    fn image(&mut self, reference: &str, layer: &[u8]) -> &mut Self {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cd = self.blob(
            config,
            Role::Config,
            "application/vnd.oci.image.config.v1+json",
        );
        let ld = self.blob(
            layer,
            Role::Layer,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        );
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld.to_string(), "size": layer.len()}],
        }))
        .unwrap();
        self.item(Kind::Image, reference, &manifest, None);
        self
    }

    /// A file kind: one layer per `(title, bytes)`, the item at `path`.
    fn file(
        &mut self,
        kind: Kind,
        reference: &str,
        path: &str,
        layers: &[(&str, &[u8])],
    ) -> &mut Self {
        self.blob(
            ferry_bundle::artifact::EMPTY_CONFIG,
            Role::Config,
            ferry_bundle::manifest::OCI_EMPTY,
        );
        let layers: Vec<FileLayer> = layers
            .iter()
            .map(|(title, data)| FileLayer {
                digest: self.blob(data, Role::Layer, "application/octet-stream"),
                size: data.len() as u64,
                media_type: "application/octet-stream".into(),
                title: title.to_string(),
            })
            .collect();
        let manifest = file_manifest(kind, &layers, &BTreeMap::new());
        self.item(kind, reference, &manifest, Some(path));
        self
    }

    /// A Helm chart: its config and its archive (`tgz`, as given).
    fn chart(&mut self, reference: &str, path: &str, name: &str, tgz: &[u8]) -> &mut Self {
        self.chart_at(reference, Some(path), name, tgz)
    }

    /// A Helm chart, with or without a place on the file server.
    fn chart_at(
        &mut self,
        reference: &str,
        path: Option<&str>,
        name: &str,
        tgz: &[u8],
    ) -> &mut Self {
        let config = serde_json::to_vec(
            &serde_json::json!({"apiVersion": "v2", "name": name, "version": "1.0.0"}),
        )
        .unwrap();
        let cd = self.blob(&config, Role::Config, HELM_CONFIG);
        let ld = self.blob(tgz, Role::Layer, HELM_CHART_LAYER);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": HELM_CONFIG, "digest": cd.to_string(), "size": config.len()},
            "layers": [{"mediaType": HELM_CHART_LAYER, "digest": ld.to_string(), "size": tgz.len()}],
        }))
        .unwrap();
        self.item(Kind::Chart, reference, &manifest, path);
        self
    }

    fn entries(&self) -> Vec<RawEntry> {
        let mut items = self.items.clone();
        items.sort_by(|a, b| a.reference.cmp(&b.reference));
        let index = meta::index_json(&items);
        let all: Vec<&(BlobMeta, Vec<u8>)> =
            self.manifests.iter().chain(self.blobs.iter()).collect();
        let m = BundleMeta {
            format_version: meta::FORMAT_VERSION,
            tool: "ferry test".into(),
            name: "hostile-import".into(),
            index: IndexPin {
                digest: Digest::of(&index),
                size: index.len() as u64,
            },
            items,
            blobs: all.iter().map(|(b, _)| b.clone()).collect(),
            absent: vec![],
            base: vec![],
            verification: None,
            origin: None,
        };
        let mut out = vec![
            RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            RawEntry::file(meta::META_PATH, &m.to_json()),
            RawEntry::file("index.json", &index),
        ];
        out.extend(
            all.iter()
                .map(|(b, data)| RawEntry::file(&b.digest.layout_path(), data)),
        );
        out
    }

    /// An uncompressed bundle (the reader takes it as it is), so that a
    /// cut lands exactly where a test puts it.
    fn tar(&self) -> Vec<u8> {
        raw_tar(&self.entries())
    }
}

fn sha512_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha512::digest(data))
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn valid_chart() -> Vec<u8> {
    ferry_bundle::craft::chart_tgz("app", "1.0.0", &[("values.yaml", b"replicas: 1\n")])
}

/// Every file kind (chart, driver, plugin, plain file) first, then an
/// image whose layer is the last blob of the bundle.
fn mixed(last_layer: &[u8]) -> Bundle {
    let zip = noise(3000, 7);
    let sum = format!("{}  p-1.0.0.zip\n", sha512_hex(&zip));
    let mut b = Bundle::default();
    b.chart(
        "charts.example/stable/app:1.0.0",
        "helm/stable/app-1.0.0.tgz",
        "app",
        &valid_chart(),
    )
    .file(
        Kind::FalcoDriver,
        "https://download.example/driver/f.ko",
        "falco/driver/7.0.0/x86_64/f.ko",
        &[("f.ko", b"driver bytes")],
    )
    .file(
        Kind::OpensearchPlugin,
        "https://plugins.example/p/1.0.0/p-1.0.0.zip",
        "opensearch/plugins/p/1.0.0/p-1.0.0.zip",
        &[
            ("p-1.0.0.zip", &zip),
            ("p-1.0.0.zip.sha512", sum.as_bytes()),
        ],
    )
    .file(
        Kind::File,
        "https://files.example/tool.tar.gz",
        "files/tools/tool.tar.gz",
        &[("tool.tar.gz", b"tool bytes")],
    )
    .image("registry.example/team/app:1.0", last_layer);
    b
}

/// Where one import run writes, and what each must hold after a refusal.
struct Sink {
    _dir: tempfile::TempDir,
    files: PathBuf,
    store: PathBuf,
    emit: PathBuf,
    receipt: PathBuf,
}

impl Sink {
    fn new() -> Sink {
        let dir = tempfile::tempdir().unwrap();
        Sink {
            files: dir.path().join("files"),
            store: dir.path().join("store"),
            emit: dir.path().join("emit"),
            receipt: dir.path().join("receipt.json"),
            _dir: dir,
        }
    }

    /// `import` into the registry and `--files`, then into the store.
    fn import(&self, bundle: &Path, reg: &Registry, extra: &[&str]) -> [Output; 2] {
        let host = reg.host();
        let mut a = vec![
            "import",
            s(bundle),
            "--registry",
            &host,
            "--files",
            s(&self.files),
            "--receipt",
            s(&self.receipt),
            "--emit-config",
            s(&self.emit),
            "--files-url",
            "https://files.internal",
            "--attempts",
            "1",
        ];
        a.extend_from_slice(extra);
        let to_registry = ferry(&a);
        let mut b = vec![
            "import",
            s(bundle),
            "--store",
            s(&self.store),
            "--emit-config",
            s(&self.emit),
            "--mirror-url",
            "https://mirror.internal",
        ];
        b.extend_from_slice(extra);
        let to_store = ferry(&b);
        [to_registry, to_store]
    }

    /// Asserts that nothing landed anywhere: no file, no store entry, no
    /// emitted configuration, no tag or manifest, and no receipt (exit 1
    /// writes none, even when the bundle verified and only its items failed).
    fn assert_nothing_landed(&self, reg: &Registry, case: &str) {
        self.assert_nothing_at_all(reg, case);
    }

    /// No file, no store entry, no emitted configuration, no tag or
    /// manifest, no receipt.
    fn assert_nothing_at_all(&self, reg: &Registry, case: &str) {
        assert_eq!(tree(&self.files), Vec::<String>::new(), "{case}: --files");
        assert_eq!(
            tree(&self.store.join("files")),
            Vec::<String>::new(),
            "{case}: store files/"
        );
        assert_eq!(store_entries(&self.store), 0, "{case}: store index.json");
        assert!(
            !self.emit.exists(),
            "{case}: --emit-config wrote {:?}",
            tree(&self.emit)
        );
        assert!(!self.receipt.exists(), "{case}: receipt written");
        assert_eq!(
            registry_manifests(reg),
            Vec::<String>::new(),
            "{case}: registry"
        );
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

// ---------------------------------------------------------------------------
// Class 2: a refused import writes no file

#[test]
fn a_bundle_refused_after_its_files_streamed_publishes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let layer = noise(200_000, 1);
    let good = mixed(&layer);
    let tar = good.tar();
    // The last entry: the image layer (its header, then its data).
    let last_data = tar.len() - 1024 - layer.len().div_ceil(512) * 512;
    let last_header = last_data - 512;
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [
        last_header + 100,
        last_data,
        last_data + 1,
        last_data + layer.len() / 2,
        last_data + layer.len() - 1,
    ] {
        cases.push((format!("cut at byte {cut}"), tar[..cut].to_vec()));
    }
    // Entries after the last blob that the reader refuses.
    let body = &tar[..tar.len() - 1024];
    let tail = |extra: RawEntry| {
        let mut t = body.to_vec();
        t.extend_from_slice(&raw_tar(&[extra]));
        t
    };
    let undeclared = b"not declared";
    cases.push((
        "an undeclared blob at the end".into(),
        tail(RawEntry::file(
            &Digest::of(undeclared).layout_path(),
            undeclared,
        )),
    ));
    let (first_blob, first_bytes) = &good.blobs[0];
    cases.push((
        "an early blob again at the end".into(),
        tail(RawEntry::file(
            &first_blob.digest.layout_path(),
            first_bytes,
        )),
    ));
    let mut link = RawEntry::file("blobs/sha256/evil", b"");
    link.kind = tar::EntryType::Symlink;
    link.link = Some("/etc/passwd".into());
    cases.push(("a symbolic link at the end".into(), tail(link)));
    // Compressed: the files' blocks decompress before the cut one.
    let z = zstd(&tar);
    for keep in [z.len() - 100_000, z.len() - 10_000] {
        cases.push((
            format!(
                "zstd cut at {keep} of {} bytes, inside the last blob",
                z.len()
            ),
            z[..keep].to_vec(),
        ));
    }

    for (case, bytes) in &cases {
        let reg = Registry::start().unwrap();
        let sink = Sink::new();
        let bundle = write(work.path(), "b.tar", bytes);
        let v = ferry(&["verify", s(&bundle)]);
        assert_eq!(v.status.code(), Some(1), "{case}: verify\n{}", text(&v));
        for o in sink.import(&bundle, &reg, &[]) {
            assert_eq!(o.status.code(), Some(1), "{case}:\n{}", text(&o));
            assert!(
                text(&o).contains("failed verification"),
                "{case}:\n{}",
                text(&o)
            );
        }
        sink.assert_nothing_at_all(&reg, case);
        eprintln!("refused with nothing landed: {case}");
    }

    // The same bundle whole lands everything, and leaves no staging behind.
    let reg = Registry::start().unwrap();
    let sink = Sink::new();
    let bundle = write(work.path(), "good.tar", &tar);
    for o in sink.import(&bundle, &reg, &[]) {
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let want = [
        "falco/",
        "falco/driver/",
        "falco/driver/7.0.0/",
        "falco/driver/7.0.0/x86_64/",
        "falco/driver/7.0.0/x86_64/f.ko",
        "files/",
        "files/tools/",
        "files/tools/tool.tar.gz",
        "helm/",
        "helm/stable/",
        "helm/stable/app-1.0.0.tgz",
        "helm/stable/index.yaml",
        "opensearch/",
        "opensearch/plugins/",
        "opensearch/plugins/p/",
        "opensearch/plugins/p/1.0.0/",
        "opensearch/plugins/p/1.0.0/p-1.0.0.zip",
        "opensearch/plugins/p/1.0.0/p-1.0.0.zip.sha512",
    ];
    assert_eq!(tree(&sink.files), want);
    assert_eq!(tree(&sink.store.join("files")), want);
    assert!(sink.receipt.exists());
    // The two registry items, and (since the store records file items for
    // `export --from`) the driver, the file and the plugin.
    assert_eq!(store_entries(&sink.store), 2 + 3);
    assert!(!registry_manifests(&reg).is_empty());
}

#[test]
fn a_refused_bundle_publishes_nothing_on_a_webdav_file_server() {
    use ferry_testkit::nginx::{Nginx, NginxOptions};
    let work = tempfile::tempdir().unwrap();
    let served = tempfile::tempdir().unwrap();
    std::fs::create_dir(served.path().join("mirror")).unwrap();
    let nginx = Nginx::start(NginxOptions::webdav(served.path())).unwrap();
    let url = format!("{}/mirror/", nginx.url());
    let mirror = served.path().join("mirror");
    let regular = |root: &Path| -> Vec<String> {
        tree(root)
            .into_iter()
            .filter(|p| !p.ends_with('/'))
            .collect()
    };
    let layer = noise(200_000, 2);
    let tar = mixed(&layer).tar();
    let last_data = tar.len() - 1024 - layer.len().div_ceil(512) * 512;
    for cut in [last_data - 400, last_data + 1, last_data + layer.len() - 1] {
        let bundle = write(work.path(), "cut.tar", &tar[..cut]);
        let o = ferry(&["import", s(&bundle), "--files", &url]);
        assert_eq!(o.status.code(), Some(1), "cut at {cut}:\n{}", text(&o));
        // No file, staged or published (collections may have been made).
        assert_eq!(regular(&mirror), Vec::<String>::new(), "cut at {cut}");
    }
    let bundle = write(work.path(), "good.tar", &tar);
    let o = ferry(&["import", s(&bundle), "--files", &url]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        regular(&mirror),
        [
            "falco/driver/7.0.0/x86_64/f.ko",
            "files/tools/tool.tar.gz",
            "helm/stable/app-1.0.0.tgz",
            "helm/stable/index.yaml",
            "opensearch/plugins/p/1.0.0/p-1.0.0.zip",
            "opensearch/plugins/p/1.0.0/p-1.0.0.zip.sha512",
        ]
    );
}

#[test]
fn a_bundle_whose_every_item_fails_publishes_nothing() {
    // Bad bytes under a good name: the reader keeps going, each item that
    // needs the blob fails; a file whose own blob is bad is never
    // published, and one whose item fails is not either.
    let work = tempfile::tempdir().unwrap();
    let mut b = Bundle::default();
    b.file(
        Kind::File,
        "https://files.example/a",
        "files/a",
        &[("a", b"first file")],
    )
    .file(
        Kind::File,
        "https://files.example/b",
        "files/b",
        &[("b", b"second file")],
    );
    let tar = b.tar();
    for victim in [&b"first file"[..], &b"second file"[..]] {
        // Flip one byte of one file's blob in place, then of both.
        let mut bad = tar.clone();
        let at = bad.windows(victim.len()).position(|w| w == victim).unwrap();
        bad[at] ^= 0x20;
        let reg = Registry::start().unwrap();
        let sink = Sink::new();
        let bundle = write(work.path(), "b.tar", &bad);
        let [to_files, to_store] = sink.import(&bundle, &reg, &[]);
        for o in [&to_files, &to_store] {
            // One item fails, the other lands: partial.
            assert_eq!(o.status.code(), Some(3), "{}", text(o));
        }
        let landed = tree(&sink.files);
        assert_eq!(landed.len(), 2, "{landed:?}");
        assert!(
            !landed
                .iter()
                .any(|p| p.ends_with(if victim == b"first file" { "/a" } else { "/b" })),
            "{landed:?}"
        );
    }
    let mut both = tar.clone();
    for victim in [&b"first file"[..], &b"second file"[..]] {
        let at = both
            .windows(victim.len())
            .position(|w| w == victim)
            .unwrap();
        both[at] ^= 0x20;
    }
    let reg = Registry::start().unwrap();
    let sink = Sink::new();
    let bundle = write(work.path(), "both.tar", &both);
    for o in sink.import(&bundle, &reg, &[]) {
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("did not land"), "{}", text(&o));
    }
    sink.assert_nothing_landed(&reg, "both file blobs corrupt");
}

#[test]
fn stray_staging_from_a_killed_import_is_swept_by_the_next_one() {
    let work = tempfile::tempdir().unwrap();
    let sink = Sink::new();
    let staging = sink.files.join(".ferry-staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join(".f.ko.ferry-tmp-00000000000000aa"), b"half").unwrap();
    std::fs::create_dir_all(sink.files.join("files")).unwrap();
    std::fs::write(
        sink.files.join("files/.x.ferry-tmp-00000000000000bb"),
        b"half",
    )
    .unwrap();
    let mut b = Bundle::default();
    b.file(
        Kind::File,
        "https://files.example/a",
        "files/a",
        &[("a", b"content")],
    );
    let bundle = write(work.path(), "b.tar", &b.tar());
    let o = ferry(&["import", s(&bundle), "--files", s(&sink.files)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(tree(&sink.files), ["files/", "files/a"]);
}

// ---------------------------------------------------------------------------
// Class 3: two sources on one target

#[test]
fn two_sources_mapped_to_one_tag_are_refused_before_anything_is_pushed() {
    let work = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        (
            "--flatten",
            "a.example/team/app:1.0",
            "b.example/team/app:1.0",
            vec!["--flatten"],
        ),
        (
            "hosts that map alike",
            "127.0.0.1:5001/x/app:1.0",
            "127.0.0.1-5001/x/app:1.0",
            vec![],
        ),
        (
            "--map onto one prefix",
            "a.example/team/app:1.0",
            "b.example/team/app:1.0",
            vec!["--map", "a.example=mirror", "--map", "b.example=mirror"],
        ),
        (
            "--map onto another source's place",
            "a.example/team/app:1.0",
            "b.example/team/app:1.0",
            vec!["--map", "a.example=b.example"],
        ),
    ];
    for (case, first, second, args) in cases {
        let mut b = Bundle::default();
        b.image(first, b"first layer")
            .image(second, b"second layer");
        let bundle = write(work.path(), "b.tar", &b.tar());
        let reg = Registry::start().unwrap();
        let host = reg.host();
        let mut runs = Vec::new();
        for dry in [true, false] {
            let mut a = vec!["import", s(&bundle), "--registry", &host];
            a.extend(args.iter().copied());
            if dry {
                a.push("--dry-run");
            }
            runs.push(ferry(&a));
        }
        let store = work.path().join("store");
        let mut a = vec!["import", s(&bundle), "--store", s(&store)];
        a.extend(args.iter().copied());
        runs.push(ferry(&a));
        for o in &runs {
            let t = text(o);
            assert_eq!(o.status.code(), Some(1), "{case}:\n{t}");
            assert!(t.contains("two sources map to one target"), "{case}:\n{t}");
            assert!(t.contains(first) && t.contains(second), "{case}:\n{t}");
        }
        let stored = tree(&reg.storage_dir());
        assert!(
            !stored.iter().any(|p| p.ends_with("/data")),
            "{case}: the registry holds {stored:?}"
        );
        assert_eq!(store_entries(&store), 0, "{case}");
        let _ = std::fs::remove_dir_all(&store);
        eprintln!("refused before pushing: {case}");
    }

    // One content under two source names is no conflict.
    let mut b = Bundle::default();
    b.image("a.example/team/app:1.0", b"same layer")
        .image("b.example/team/app:1.0", b"same layer");
    let bundle = write(work.path(), "same.tar", &b.tar());
    let reg = Registry::start().unwrap();
    let o = ferry(&["import", s(&bundle), "--registry", &reg.host(), "--flatten"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(text(&o).matches("\n  ok ").count(), 2, "{}", text(&o));
}

// ---------------------------------------------------------------------------
// Class 4: file items in their kind's place

#[test]
fn file_items_out_of_their_place_are_refused_by_verify_and_import() {
    let work = tempfile::tempdir().unwrap();
    // (case, bundle, words the error must contain)
    let mut cases: Vec<(String, Bundle, Vec<String>)> = Vec::new();
    // Registry kinds carry a reference the reader parses (a URL there is
    // refused earlier, as an invalid reference); file kinds their URL.
    let single = |kind: Kind, path: &str, title: &str| {
        let mut b = Bundle::default();
        let reference = if kind.is_registry() {
            "evil.example/x:1"
        } else {
            "https://evil.example/x"
        };
        b.file(kind, reference, path, &[(title, b"payload")]);
        b
    };
    for (kind, path) in [
        (Kind::File, "helm/stable/index.yaml"),
        (Kind::File, "helm/stable/app-1.0.0.tgz"),
        (Kind::File, "falco/index.yaml"),
        (Kind::File, "opensearch/plugins/p/1/p.zip"),
        (Kind::File, "index.html"),
        (Kind::File, ".htaccess"),
        (Kind::File, "files/.htaccess"),
        (Kind::File, "files/.git/config"),
        (Kind::File, "files/a/.ferry-staging/x"),
        (Kind::FalcoDriver, "falco/index.yaml"),
        (Kind::FalcoDriver, "files/f.ko"),
        (Kind::FalcoctlIndex, "falco/driver/index.yaml"),
        (Kind::OpensearchPlugin, "files/p.zip"),
        (Kind::Chart, "helm/stable/index.yaml"),
        (Kind::Chart, "helm/app.tgz"),
        (Kind::Image, "files/a"),
        (Kind::TrivyDb, "files/db"),
        (Kind::FalcoArtifact, "falco/driver/rules"),
    ] {
        let title = path.rsplit('/').next().unwrap();
        cases.push((
            format!("{} at {path}", kind.as_str()),
            single(kind, path, title),
            vec![path.to_string()],
        ));
    }
    // A layer title that lands on a dot-file or the Helm index beside a
    // well-placed item path.
    {
        // A chart whose second layer is titled `index.yaml`: it would land
        // on the repository index ferry generates.
        let mut b = Bundle::default();
        b.file(
            Kind::Chart,
            "charts.example/stable/app:1.0.0",
            "helm/stable/app-1.0.0.tgz",
            &[
                ("app-1.0.0.tgz", &valid_chart()),
                ("index.yaml", b"entries: {}\n"),
            ],
        );
        cases.push((
            "a chart layer titled index.yaml".into(),
            b,
            vec!["helm/stable/index.yaml".into()],
        ));
    }
    for title in [".htaccess", ".git", ".ferry-staging"] {
        let mut b = Bundle::default();
        b.file(
            Kind::File,
            "https://evil.example/x",
            "files/x",
            &[("x", b"x"), (title, b"y")],
        );
        cases.push((
            format!("a layer titled {title}"),
            b,
            vec![format!("files/{title}")],
        ));
    }
    {
        let mut b = Bundle::default();
        b.chart(
            "charts.example/stable/app:1.0.0",
            "helm/stable/index.yaml",
            "app",
            &valid_chart(),
        );
        cases.push((
            "a chart over the Helm index".into(),
            b,
            vec!["helm/stable/index.yaml".into()],
        ));
    }
    // Two items, one path: the second names the first.
    {
        let mut b = Bundle::default();
        b.file(
            Kind::File,
            "https://one.example/tool",
            "files/tool",
            &[("tool", b"one")],
        )
        .file(
            Kind::File,
            "https://two.example/tool",
            "files/tool",
            &[("tool", b"two")],
        );
        cases.push((
            "two items with one path".into(),
            b,
            vec![
                "https://one.example/tool".into(),
                "https://two.example/tool".into(),
                "files/tool".into(),
            ],
        ));
    }
    // Two items, one landing path through a layer title.
    {
        let mut b = Bundle::default();
        b.file(
            Kind::File,
            "https://one.example/tool",
            "files/tool",
            &[("tool", b"one")],
        )
        .file(
            Kind::File,
            "https://two.example/other",
            "files/other",
            &[("other", b"two"), ("tool", b"three")],
        );
        cases.push((
            "a layer on another item's path".into(),
            b,
            vec![
                "https://one.example/tool".into(),
                "https://two.example/other".into(),
            ],
        ));
    }
    // A file where another item needs a directory.
    {
        let mut b = Bundle::default();
        b.file(
            Kind::File,
            "https://one.example/a",
            "files/a",
            &[("a", b"one")],
        )
        .file(
            Kind::File,
            "https://two.example/a-b",
            "files/a/b",
            &[("b", b"two")],
        );
        cases.push((
            "a file over another's directory".into(),
            b,
            vec![
                "https://one.example/a".into(),
                "https://two.example/a-b".into(),
            ],
        ));
    }
    // With an image that would land otherwise: refused as a whole.
    for (case, b, words) in &mut cases {
        b.image("registry.example/team/app:1.0", b"layer");
        let bundle = write(work.path(), "b.tar", &b.tar());
        let v = ferry(&["verify", s(&bundle)]);
        let vt = text(&v);
        assert_eq!(v.status.code(), Some(1), "{case}: verify\n{vt}");
        let reg = Registry::start().unwrap();
        let sink = Sink::new();
        for o in sink.import(&bundle, &reg, &[]) {
            let t = text(&o);
            assert_eq!(o.status.code(), Some(1), "{case}:\n{t}");
            for w in words.iter() {
                assert!(t.contains(w.as_str()), "{case}: `{w}` not named:\n{t}");
                assert!(
                    vt.contains(w.as_str()),
                    "{case}: verify does not name `{w}`:\n{vt}"
                );
            }
        }
        sink.assert_nothing_landed(&reg, case);
        eprintln!("refused by verify and import: {case}");
    }
}

#[test]
fn import_rechecks_chart_archives_and_plugin_checksums() {
    let work = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, Bundle, &str)> = Vec::new();
    // Chart archives export would have refused.
    let chart_yaml = b"apiVersion: v2\nname: app\nversion: 1.0.0\n".to_vec();
    let mut link = RawEntry::file("app/templates/link.yaml", b"");
    link.kind = tar::EntryType::Symlink;
    link.link = Some("/etc/passwd".into());
    let mut hard = RawEntry::file("app/templates/hard.yaml", b"");
    hard.kind = tar::EntryType::Link;
    hard.link = Some("app/Chart.yaml".into());
    let mut fifo = RawEntry::file("app/fifo", b"");
    fifo.kind = tar::EntryType::Fifo;
    for (what, evil) in [
        (
            "a `..` entry",
            RawEntry::file("app/../../evil.yaml", b"x: 1\n"),
        ),
        (
            "an absolute entry",
            RawEntry::file("/etc/evil.yaml", b"x: 1\n"),
        ),
        ("a symbolic link", link),
        ("a hard link", hard),
        ("a fifo", fifo),
        (
            "a second top directory",
            RawEntry::file("other/values.yaml", b"x: 1\n"),
        ),
    ] {
        let tgz = raw_tgz(&[RawEntry::file("app/Chart.yaml", &chart_yaml), evil]);
        let mut b = Bundle::default();
        b.chart(
            "charts.example/stable/app:1.0.0",
            "helm/stable/app-1.0.0.tgz",
            "app",
            &tgz,
        );
        cases.push((format!("a chart with {what}"), b, "chart archive"));
        // Without a file path, bound for the registry only: re-checked all
        // the same.
        let mut b = Bundle::default();
        b.chart_at("charts.example/stable/app:1.0.0", None, "app", &tgz);
        cases.push((
            format!("a registry-only chart with {what}"),
            b,
            "chart archive",
        ));
    }
    {
        let mut b = Bundle::default();
        b.chart(
            "charts.example/stable/app:1.0.0",
            "helm/stable/app-1.0.0.tgz",
            "app",
            b"not a gzip stream",
        );
        cases.push(("a chart that is not a .tgz".into(), b, "chart archive"));
    }
    {
        // A chart whose manifest carries no chart layer at all.
        let mut b = Bundle::default();
        b.file(
            Kind::Chart,
            "charts.example/stable/app:1.0.0",
            "helm/stable/app-1.0.0.tgz",
            &[("app-1.0.0.tgz", &valid_chart())],
        );
        cases.push((
            "a chart without a chart layer".into(),
            b,
            "no chart archive layer",
        ));
    }
    // OpenSearch plugins whose checksum file does not vouch for the zip.
    let zip = noise(5000, 3);
    let right = sha512_hex(&zip);
    let other = sha512_hex(b"other");
    for (what, sum) in [
        ("another sha512", format!("{other}  p-1.0.0.zip\n")),
        ("another file's sha512", format!("{right}  q-1.0.0.zip\n")),
        ("no sha512 at all", "hello\n".to_string()),
        ("an empty checksum file", String::new()),
    ] {
        let mut b = Bundle::default();
        b.file(
            Kind::OpensearchPlugin,
            "https://plugins.example/p/1.0.0/p-1.0.0.zip",
            "opensearch/plugins/p/1.0.0/p-1.0.0.zip",
            &[
                ("p-1.0.0.zip", &zip),
                ("p-1.0.0.zip.sha512", sum.as_bytes()),
            ],
        );
        cases.push((format!("a plugin with {what}"), b, "sha512"));
    }
    {
        let mut b = Bundle::default();
        b.file(
            Kind::OpensearchPlugin,
            "https://plugins.example/p/1.0.0/p-1.0.0.zip",
            "opensearch/plugins/p/1.0.0/p-1.0.0.zip",
            &[("p-1.0.0.zip", &zip)],
        );
        cases.push(("a plugin without its .sha512".into(), b, ".sha512"));
    }
    // A large plugin zip (streamed in chunks, not held in memory).
    {
        let big = noise(3 << 20, 5);
        let mut b = Bundle::default();
        b.file(
            Kind::OpensearchPlugin,
            "https://plugins.example/p/1.0.0/p-1.0.0.zip",
            "opensearch/plugins/p/1.0.0/p-1.0.0.zip",
            &[
                ("p-1.0.0.zip", &big),
                (
                    "p-1.0.0.zip.sha512",
                    format!("{}  p-1.0.0.zip\n", sha512_hex(&zip)).as_bytes(),
                ),
            ],
        );
        cases.push(("a large plugin with another sha512".into(), b, "sha512"));
    }
    for (case, b, word) in &cases {
        let bundle = write(work.path(), "b.tar", &b.tar());
        // verify refuses first, with import's words (class 7).
        let v = ferry(&["verify", s(&bundle)]);
        let vt = text(&v);
        assert_eq!(v.status.code(), Some(1), "{case}: verify\n{vt}");
        assert!(
            vt.contains(word),
            "{case}: verify does not name `{word}`:\n{vt}"
        );
        let reg = Registry::start().unwrap();
        let sink = Sink::new();
        for o in sink.import(&bundle, &reg, &["--chunk-mib", "1"]) {
            let t = text(&o);
            assert_eq!(o.status.code(), Some(1), "{case}:\n{t}");
            assert!(t.contains(word), "{case}: `{word}` not named:\n{t}");
        }
        sink.assert_nothing_landed(&reg, case);
        eprintln!("re-checked and refused by verify and import: {case}");
    }

    // The right checksum, small and large, lands.
    for size in [5000, 3 << 20] {
        let zip = noise(size, 9);
        let mut b = Bundle::default();
        b.file(
            Kind::OpensearchPlugin,
            "https://plugins.example/p/1.0.0/p-1.0.0.zip",
            "opensearch/plugins/p/1.0.0/p-1.0.0.zip",
            &[
                ("p-1.0.0.zip", &zip),
                (
                    "p-1.0.0.zip.sha512",
                    format!("{}  p-1.0.0.zip\n", sha512_hex(&zip)).as_bytes(),
                ),
            ],
        );
        let bundle = write(work.path(), "ok.tar", &b.tar());
        let v = ferry(&["verify", s(&bundle)]);
        assert_eq!(v.status.code(), Some(0), "{}", text(&v));
        let files = work.path().join(format!("ok-{size}"));
        let o = ferry(&[
            "import",
            s(&bundle),
            "--files",
            s(&files),
            "--chunk-mib",
            "1",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(
            std::fs::read(files.join("opensearch/plugins/p/1.0.0/p-1.0.0.zip")).unwrap(),
            zip
        );
    }
}

#[test]
fn export_refuses_a_spec_whose_files_would_land_out_of_place() {
    use ferry_testkit::nginx::{Nginx, NginxOptions};
    let served = tempfile::tempdir().unwrap();
    let tool = b"tool bytes";
    std::fs::write(served.path().join("tool"), tool).unwrap();
    let nginx = Nginx::start(NginxOptions::new(served.path())).unwrap();
    let work = tempfile::tempdir().unwrap();
    for path in [".htaccess", "a/.git/config", "docs/.well-known/x"] {
        let spec = work.path().join("bundle.yaml");
        let yaml = format!(
            "apiVersion: ferry.dev/v1\nname: placed\nfiles:\n  - url: {}/tool\n    sha256: {}\n    path: {path}\n",
            nginx.url(),
            Digest::of(tool).hex()
        );
        std::fs::write(&spec, yaml).unwrap();
        let out = work.path().join("out.tar.zst");
        let o = ferry(&[
            "export",
            "-f",
            s(&spec),
            "-o",
            s(&out),
            "--cache",
            s(&work.path().join("cache")),
        ]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{path}:\n{t}");
        assert!(t.contains("refusing to export"), "{path}:\n{t}");
        assert!(t.contains(&format!("files/{path}")), "{path}:\n{t}");
        assert!(!out.exists(), "{path}: a bundle was written");
    }
}
