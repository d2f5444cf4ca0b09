//! Every content kind end to end: an upstream registry and an upstream file
//! server (nginx) → export → verify → import into a real registry and into
//! both file targets (a directory and nginx WebDAV) → bytes and digests
//! checked at every destination.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use ferry_bundle::craft::chart_tgz;
use ferry_bundle::Digest;
use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::nginx::{require_nginx, Nginx, NginxOptions};
use ferry_testkit::registry::{require_tool, Registry};
use ferry_testkit::tools::skopeo_inspect_raw;

fn ferry(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.args(args)
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD")
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .env("UPSTREAM_PASSWORD", "s3cret");
    c.output().expect("run ferry")
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

fn tools() {
    require_tool("docker-registry");
    require_tool("skopeo");
    require_nginx();
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client() -> Client {
    Client::new(ClientConfig::default()).unwrap()
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Pushes an artifact (config + layers) and tags it; returns the manifest bytes.
async fn push_artifact(
    c: &Client,
    host: &str,
    path: &str,
    tag: &str,
    config_type: &str,
    config: &[u8],
    layers: &[(&str, &[u8], Option<&str>)],
) -> Bytes {
    let repo = Repo {
        host: host.into(),
        path: path.into(),
    };
    c.upload_blob(&repo, &Digest::of(config), Bytes::copy_from_slice(config))
        .await
        .unwrap();
    let mut ls = Vec::new();
    for (mt, data, title) in layers {
        c.upload_blob(&repo, &Digest::of(data), Bytes::copy_from_slice(data))
            .await
            .unwrap();
        let mut d = serde_json::json!({"mediaType": mt, "digest": Digest::of(data).to_string(), "size": data.len()});
        if let Some(t) = title {
            d["annotations"] = serde_json::json!({"org.opencontainers.image.title": t});
        }
        ls.push(d);
    }
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_type, "digest": Digest::of(config).to_string(), "size": config.len()},
        "layers": ls,
    });
    let bytes = Bytes::from(serde_json::to_vec(&m).unwrap());
    c.put_manifest(
        &repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        bytes.clone(),
    )
    .await
    .unwrap();
    bytes
}

struct Upstream {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    registry: Registry,
    files: Nginx,
    set: FixtureSet,
    app_tgz: Vec<u8>,
    abs_tgz: Vec<u8>,
    oci_chart: Bytes,
    rules: Bytes,
    driver: Vec<u8>,
    plugin: Vec<u8>,
    tool: Vec<u8>,
}

const DRIVER: &str = "falco_ubuntu-generic_5.15.0-91-generic_101.ko";

fn sha512_hex(data: &[u8]) -> String {
    use sha2::{Digest as _, Sha512};
    hex::encode(Sha512::digest(data))
}

fn upstream() -> Upstream {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let registry = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions::default());
    let c = client();
    rt().block_on(push(&set, &c, &registry.host())).unwrap();
    let img = set.image("fixtures/multiarch");
    let image_ref = img.reference(&registry.host());
    let (img_repo, img_tag) = image_ref.rsplit_once(':').unwrap();
    let (img_host, img_path) = img_repo.split_once('/').unwrap();
    // A classic repository: one chart with a relative URL that references
    // an upstream image, one with an absolute URL.
    let values =
        format!("image:\n  registry: {img_host}\n  repository: {img_path}\n  tag: \"{img_tag}\"\n");
    let app_tgz = chart_tgz(
        "app",
        "1.2.3+build.1",
        &[
            ("values.yaml", values.as_bytes()),
            (
                "templates/deploy.yaml",
                b"image: {{ .Values.image.repository }}\n",
            ),
        ],
    );
    let abs_tgz = chart_tgz("abs", "0.1.0", &[]);
    write(&root, "charts/app-1.2.3+build.1.tgz", &app_tgz);
    write(&root, "elsewhere/abs-0.1.0.tgz", &abs_tgz);
    let index = format!(
        "apiVersion: v1\nentries:\n  app:\n  - apiVersion: v2\n    name: app\n    version: 1.2.3+build.1\n    created: \"2026-01-02T03:04:05Z\"\n    digest: {}\n    urls: [app-1.2.3+build.1.tgz]\n  - apiVersion: v2\n    name: app\n    version: 1.0.0\n    urls: [app-1.0.0.tgz]\n  abs:\n  - apiVersion: v2\n    name: abs\n    version: 0.1.0\n    digest: {}\n    urls: [\"{}/elsewhere/abs-0.1.0.tgz\"]\ngenerated: \"2026-01-02T03:04:05Z\"\n",
        Digest::of(&app_tgz).hex(),
        Digest::of(&abs_tgz).hex(),
        "URLBASE"
    );
    // Falco: a driver under a version with `+`; the falcoctl index.
    let driver = b"\x7fELF fake kernel module".repeat(100);
    write(
        &root,
        &format!("driver/7.0.0+driver/x86_64/{DRIVER}"),
        &driver,
    );
    // OpenSearch: a plugin zip and its .sha512.
    let plugin = b"PK\x03\x04 fake plugin".repeat(50);
    write(
        &root,
        "os/repository-s3/2.8.0/repository-s3-2.8.0.zip",
        &plugin,
    );
    write(
        &root,
        "os/repository-s3/2.8.0/repository-s3-2.8.0.zip.sha512",
        format!("{}  repository-s3-2.8.0.zip\n", sha512_hex(&plugin)).as_bytes(),
    );
    let tool = b"tool bytes".repeat(1000);
    write(&root, "dl/tool-1.0.tar.gz", &tool);
    let files = Nginx::start(NginxOptions::new(&root)).unwrap();
    write(
        &root,
        "charts/index.yaml",
        index.replace("URLBASE", &files.url()).as_bytes(),
    );
    // OCI artifacts on the upstream registry: a Helm chart and falcoctl rules.
    let oci_tgz = chart_tgz("ocichart", "2.0.0+x", &[]);
    let host = registry.host();
    let (oci_chart, rules) = rt().block_on(async {
        let chart = push_artifact(
            &c,
            &host,
            "charts/ocichart",
            "2.0.0_x",
            "application/vnd.cncf.helm.config.v1+json",
            br#"{"name":"ocichart","version":"2.0.0+x","apiVersion":"v2"}"#,
            &[(
                "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                &oci_tgz,
                None,
            )],
        )
        .await;
        let rules = push_artifact(
            &c,
            &host,
            "falcosecurity/rules/falco-rules",
            "3",
            "application/vnd.cncf.falco.rulesfile.config.v1+json",
            br#"{"name":"falco-rules","version":"3.0.0"}"#,
            &[(
                "application/vnd.cncf.falco.rulesfile.layer.v1+tar.gz",
                b"rules tgz",
                Some("falco_rules.yaml.tar.gz"),
            )],
        )
        .await;
        (chart, rules)
    });
    let falco_index = format!(
        "- name: falco-rules\n  type: rulesfile\n  registry: {host}\n  repository: falcosecurity/rules/falco-rules\n  signature:\n    cosign:\n      certificate-oidc-issuer: https://token.actions.githubusercontent.com\n  description: Falco rules\n  home: https://falco.org\n  keywords: [falco-rules]\n  license: apache-2.0\n  maintainers: []\n  sources: []\n- name: not-bundled\n  type: plugin\n  registry: ghcr.io\n  repository: falcosecurity/plugins/plugin/k8saudit\n  description: x\n  home: x\n  keywords: []\n  license: x\n  maintainers: []\n  sources: []\n"
    );
    write(&root, "falcoctl/index.yaml", falco_index.as_bytes());
    Upstream {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        registry,
        files,
        set,
        app_tgz,
        abs_tgz,
        oci_chart,
        rules,
        driver,
        plugin,
        tool,
    }
}

fn spec(u: &Upstream, extra_kernel: bool) -> PathBuf {
    let f = u.files.url();
    let h = u.registry.host();
    let kernels = if extra_kernel {
        "      - {target: ubuntu-generic, release: 5.15.0-91-generic, version: \"101\"}\n      - {target: debian, release: 6.1.0-99-amd64, version: \"1\"}\n"
    } else {
        "      - {target: ubuntu-generic, release: 5.15.0-91-generic, version: \"101\"}\n"
    };
    let text = format!(
        "apiVersion: ferry.dev/v1\nname: kinds\ncharts:\n  - repo: {f}/charts\n    name: app\n    version: 1.2.3+build.1\n    images: true\n    repoName: stable\n  - repo: {f}/charts\n    name: abs\n    version: \"0.1.0\"\n    repoName: stable\n  - oci: oci://{h}/charts/ocichart:2.0.0+x\nfalco:\n  drivers:\n    repo: {f}/driver\n    version: 7.0.0+driver\n    arch: [x86_64]\n    kernels:\n{kernels}  artifacts: [{h}/falcosecurity/rules/falco-rules:3]\n  index: {f}/falcoctl/index.yaml\nopensearch:\n  repo: {f}/os\n  version: 2.8.0\n  plugins: [repository-s3]\nfiles:\n  - url: {f}/dl/tool-1.0.tar.gz\n    sha256: {}\n    path: tools/tool-1.0.tar.gz\n",
        Digest::of(&u.tool).hex()
    );
    let p = u.dir.join("bundle.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn check_tree(root: &Path, u: &Upstream, target_host: &str) {
    let read = |rel: &str| {
        std::fs::read(root.join(rel))
            .unwrap_or_else(|e| panic!("{rel} missing at the file target: {e}"))
    };
    assert_eq!(read("helm/stable/app-1.2.3+build.1.tgz"), u.app_tgz);
    assert_eq!(read("helm/stable/abs-0.1.0.tgz"), u.abs_tgz);
    assert_eq!(
        read(&format!("falco/driver/7.0.0+driver/x86_64/{DRIVER}")),
        u.driver
    );
    assert_eq!(
        read("opensearch/plugins/repository-s3/2.8.0/repository-s3-2.8.0.zip"),
        u.plugin
    );
    assert!(String::from_utf8(read(
        "opensearch/plugins/repository-s3/2.8.0/repository-s3-2.8.0.zip.sha512"
    ))
    .unwrap()
    .starts_with(&sha512_hex(&u.plugin)));
    assert_eq!(read("files/tools/tool-1.0.tar.gz"), u.tool);
    // The regenerated Helm index parses and its digests match the files.
    let index: yaml_serde::Value = yaml_serde::from_slice(&read("helm/stable/index.yaml")).unwrap();
    assert_eq!(index["apiVersion"].as_str(), Some("v1"));
    for (name, file, bytes) in [
        ("app", "app-1.2.3+build.1.tgz", &u.app_tgz),
        ("abs", "abs-0.1.0.tgz", &u.abs_tgz),
    ] {
        let e = &index["entries"][name][0];
        assert_eq!(
            e["digest"].as_str(),
            Some(Digest::of(bytes).hex().as_ref()),
            "{name}"
        );
        assert_eq!(e["urls"][0].as_str(), Some(file), "{name}: relative url");
    }
    // The falcoctl index points at the mirror, lists only what is bundled, unsigned.
    let idx = String::from_utf8(read("falco/index.yaml")).unwrap();
    let v: yaml_serde::Value = yaml_serde::from_str(&idx).unwrap();
    let list = v.as_sequence().unwrap();
    assert_eq!(list.len(), 1, "{idx}");
    assert_eq!(list[0]["registry"].as_str(), Some(target_host), "{idx}");
    assert!(list[0].get("signature").is_none(), "{idx}");
}

/// Every `org.opencontainers.image.ref.name` in the bundle's index.json
/// follows the image-spec grammar (file items are `ferry.files/<path>`,
/// their URL in `dev.ferry.source`), and containerd importing the
/// decompressed bundle creates no image named by a URL (issue 13).
fn index_names_follow_the_grammar_and_ctr_names_no_url(bundle: &Path, dir: &Path) {
    use std::io::Read;
    let mut raw = Vec::new();
    ferry_bundle::reader::decompress(std::fs::File::open(bundle).unwrap())
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap();
    let mut index = None;
    for e in tar::Archive::new(&raw[..]).entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("index.json") {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            index = Some(v);
        }
    }
    let index: serde_json::Value = serde_json::from_slice(&index.unwrap()).unwrap();
    let mut files = 0;
    for m in index["manifests"].as_array().unwrap() {
        let name = m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap();
        assert!(ferry_bundle::meta::is_ref_name(name), "{name}");
        if let Some(src) = m["annotations"]["dev.ferry.source"].as_str() {
            assert!(src.starts_with("http"), "{src}");
            assert!(name.starts_with("ferry.files/"), "{name}");
            assert!(m["annotations"].get("io.containerd.image.name").is_none());
            files += 1;
        }
    }
    assert!(
        files >= 3,
        "drivers, plugins and files carry their URL: {index:#}"
    );
    ferry_testkit::containerd::require_containerd();
    let tar_path = dir.join("bundle-decompressed.tar");
    std::fs::write(&tar_path, &raw).unwrap();
    let ctd = ferry_testkit::containerd::Containerd::start().unwrap();
    // Content and names only: the bundle also holds artifacts (charts,
    // drivers) that are not images to unpack.
    ctd.import_with(&tar_path, true, false).unwrap();
    let images = ctd.images().unwrap();
    assert!(!images.is_empty());
    assert!(images.iter().all(|i| !i.contains("://")), "{images:?}");
}

#[test]
fn every_kind_lands_where_its_consumer_looks() {
    tools();
    let u = upstream();
    let target = Registry::start().unwrap();
    let spec = spec(&u, false);
    let out = u.dir.join("kinds.tar.zst");
    let cache = u.dir.join("cache");
    let lock = u.dir.join("ferry.lock");
    ok(&ferry(&[
        "export",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--lock",
        lock.to_str().unwrap(),
    ]));
    ok(&ferry(&["verify", out.to_str().unwrap()]));
    index_names_follow_the_grammar_and_ctr_names_no_url(&out, &u.dir);
    // `--no-cache` streams the image blobs into the bundle (charts, drivers
    // and files come through a scratch directory): the same bytes, and
    // nothing left beside the bundle.
    let streamed_dir = u.dir.join("streamed");
    std::fs::create_dir_all(&streamed_dir).unwrap();
    let streamed = streamed_dir.join("kinds.tar.zst");
    ok(&ferry(&[
        "export",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        streamed.to_str().unwrap(),
        "--no-cache",
        "--lock",
        lock.to_str().unwrap(),
        "--locked",
    ]));
    assert_eq!(
        Digest::of(&std::fs::read(&streamed).unwrap()),
        Digest::of(&std::fs::read(&out).unwrap()),
        "--no-cache wrote other bytes than the cached export"
    );
    let mut left: Vec<String> = std::fs::read_dir(&streamed_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["kinds.tar.zst", "kinds.tar.zst.sha256"]);
    let both = ferry(&[
        "export",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        streamed.to_str().unwrap(),
        "--no-cache",
        "--cache",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(both.status.code(), Some(2), "{}", text(&both));
    assert!(text(&both).contains("--no-cache"), "{}", text(&both));
    // The lock pins every kind; a locked re-export is identical.
    let l: serde_json::Value = serde_json::from_slice(&std::fs::read(&lock).unwrap()).unwrap();
    let kinds: Vec<&str> = l["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    for k in [
        "chart",
        "falco-driver",
        "falcoctl-index",
        "falco-artifact",
        "opensearch-plugin",
        "file",
    ] {
        assert!(kinds.contains(&k), "{k} not in the lock: {kinds:?}");
    }
    let inspect = ok(&ferry(&["inspect", out.to_str().unwrap()]));
    // `images: true` brought the chart's image along.
    assert!(inspect.contains("fixtures/multiarch"), "{inspect}");
    // Import into the registry and a directory.
    let tree = u.dir.join("docroot");
    let emit = u.dir.join("emit");
    let th = target.host();
    ok(&ferry(&[
        "import",
        out.to_str().unwrap(),
        "--registry",
        &th,
        "--files",
        tree.to_str().unwrap(),
        "--emit-config",
        emit.to_str().unwrap(),
        "--files-url",
        "http://files.internal",
    ]));
    check_tree(&tree, &u, &th);
    // Charts and falco artifacts are in the registry too, byte-exact.
    let up = u.registry.host();
    let safe = up.replace(':', "-");
    let raw = skopeo_inspect_raw(&format!("{th}/{safe}/charts/ocichart:2.0.0_x")).unwrap();
    assert_eq!(Digest::of(&raw), Digest::of(&u.oci_chart));
    let raw =
        skopeo_inspect_raw(&format!("{th}/{safe}/falcosecurity/rules/falco-rules:3")).unwrap();
    assert_eq!(Digest::of(&raw), Digest::of(&u.rules));
    let files_host = u.files.host().replace(':', "-");
    let raw = skopeo_inspect_raw(&format!("{th}/{files_host}/charts/app:1.2.3_build.1")).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
    );
    assert_eq!(m["layers"][0]["digest"], Digest::of(&u.app_tgz).to_string());
    // The image the chart references.
    let img = u.set.image("fixtures/multiarch");
    let raw = skopeo_inspect_raw(&format!("{th}/{safe}/fixtures/multiarch:{}", img.tag)).unwrap();
    assert_eq!(Digest::of(&raw), img.top.digest);
    assert!(emit.join("falco-values.yaml").is_file());
    // A second import writes nothing new.
    let again = ok(&ferry(&[
        "--json",
        "import",
        out.to_str().unwrap(),
        "--registry",
        &th,
        "--files",
        tree.to_str().unwrap(),
    ]));
    let last: serde_json::Value =
        serde_json::from_str(again.lines().rfind(|l| l.contains("\"imported\"")).unwrap()).unwrap();
    assert_eq!(last["blobsUploaded"], 0, "{again}");
    assert!(last["filesPresent"].as_u64().unwrap() >= 6, "{again}");

    // The same bundle into nginx WebDAV (files only; registry items skipped).
    let dav_root = u.dir.join("dav");
    std::fs::create_dir_all(dav_root.join("mirror")).unwrap();
    let dav = Nginx::start(NginxOptions::webdav(&dav_root)).unwrap();
    let o = ok(&ferry(&[
        "import",
        out.to_str().unwrap(),
        "--files",
        &format!("{}/mirror", dav.url()),
    ]));
    assert!(o.contains("skipped"), "{o}");
    let dav_tree = dav_root.join("mirror");
    let read = |rel: &str| std::fs::read(dav_tree.join(rel)).unwrap();
    assert_eq!(read("helm/stable/app-1.2.3+build.1.tgz"), u.app_tgz);
    assert_eq!(
        read(&format!("falco/driver/7.0.0+driver/x86_64/{DRIVER}")),
        u.driver
    );
    assert_eq!(read("files/tools/tool-1.0.tar.gz"), u.tool);
    assert!(
        std::fs::read_to_string(dav_tree.join("helm/stable/index.yaml"))
            .unwrap()
            .contains(&Digest::of(&u.app_tgz).hex().to_string())
    );
}

#[test]
fn bad_sources_are_refused_naming_what_is_wrong() {
    tools();
    let u = upstream();
    let root = u.files.root().to_path_buf();
    let base = spec(&u, false);
    let spec_text = std::fs::read_to_string(&base).unwrap();
    let run = |name: &str, text: &str| -> (Output, PathBuf) {
        let p = u.dir.join(format!("{name}.yaml"));
        std::fs::write(&p, text).unwrap();
        let out = u.dir.join(format!("{name}.tar.zst"));
        let o = ferry(&[
            "export",
            "-f",
            p.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--cache",
            u.dir.join(format!("cache-{name}")).to_str().unwrap(),
        ]);
        (o, out)
    };
    // A driver missing upstream: exit 3 with the URL; allowed with the flag.
    let missing = spec(&u, true);
    let text = std::fs::read_to_string(&missing).unwrap();
    let (o, out) = run("missing-driver", &text);
    assert_eq!(o.status.code(), Some(3), "{}", text_of(&o));
    assert!(
        text_of(&o).contains("falco_debian_6.1.0-99-amd64_1.ko")
            && text_of(&o).contains("--allow-missing-drivers"),
        "{}",
        text_of(&o)
    );
    assert!(!out.exists());
    let o = ferry(&[
        "export",
        "-f",
        missing.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--allow-missing-drivers",
        "--cache",
        u.dir.join("cache-allow").to_str().unwrap(),
    ]);
    assert!(
        text_of(&o).contains("warning: no prebuilt Falco driver"),
        "{}",
        text_of(&o)
    );
    assert!(o.status.success(), "{}", text_of(&o));

    // A file whose sha256 does not match.
    let bad_sha = spec_text.replace(&Digest::of(&u.tool).hex().to_string(), &"0".repeat(64));
    let (o, out) = run("bad-file", &bad_sha);
    assert_eq!(o.status.code(), Some(1), "{}", text_of(&o));
    assert!(
        text_of(&o).contains("tool-1.0.tar.gz") && text_of(&o).contains("expected digest"),
        "{}",
        text_of(&o)
    );
    assert!(!out.exists());

    // A plugin whose .sha512 does not match: both values named.
    let sum = root.join("os/repository-s3/2.8.0/repository-s3-2.8.0.zip.sha512");
    let good = std::fs::read(&sum).unwrap();
    std::fs::write(
        &sum,
        format!("{}  repository-s3-2.8.0.zip\n", "a".repeat(128)),
    )
    .unwrap();
    let (o, out) = run("bad-plugin", &spec_text);
    std::fs::write(&sum, good).unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text_of(&o));
    assert!(
        text_of(&o).contains("sha512 mismatch")
            && text_of(&o).contains(&"a".repeat(128))
            && text_of(&o).contains(&sha512_hex(&u.plugin)),
        "{}",
        text_of(&o)
    );
    assert!(!out.exists());

    // A chart with a path outside its directory.
    let evil = ferry_bundle::craft::raw_tgz(&[
        ferry_bundle::craft::RawEntry::file(
            "evil/Chart.yaml",
            b"apiVersion: v2\nname: evil\nversion: 1.0.0\n",
        ),
        ferry_bundle::craft::RawEntry::file("evil/../../escape.txt", b"x"),
    ]);
    write(&root, "charts/evil-1.0.0.tgz", &evil);
    let idx = root.join("charts/index.yaml");
    let mut index = std::fs::read_to_string(&idx).unwrap();
    index = index.replace(
        "entries:\n",
        &format!(
            "entries:\n  evil:\n  - name: evil\n    version: 1.0.0\n    digest: {}\n    urls: [evil-1.0.0.tgz]\n",
            Digest::of(&evil).hex()
        ),
    );
    std::fs::write(&idx, index).unwrap();
    let evil_spec = format!(
        "apiVersion: ferry.dev/v1\nname: evil\ncharts:\n  - repo: {}/charts\n    name: evil\n    version: 1.0.0\n",
        u.files.url()
    );
    let (o, out) = run("evil-chart", &evil_spec);
    assert_eq!(o.status.code(), Some(1), "{}", text_of(&o));
    assert!(text_of(&o).contains("escape.txt"), "{}", text_of(&o));
    assert!(!out.exists());
    assert!(!u.dir.join("escape.txt").exists());
}

fn text_of(o: &Output) -> String {
    text(o)
}

#[test]
fn classic_repositories_with_basic_auth() {
    tools();
    let u = upstream();
    let guarded = Nginx::start(NginxOptions {
        basic_auth: Some(("ci".into(), "s3cret".into())),
        ..NginxOptions::new(u.files.root())
    })
    .unwrap();
    let spec = |env: &str| {
        let p = u.dir.join(format!("auth-{env}.yaml"));
        std::fs::write(
            &p,
            format!(
                "apiVersion: ferry.dev/v1\nname: auth\ncharts:\n  - repo: {}/charts\n    name: app\n    version: 1.2.3+build.1\n    auth: {{username: ci, passwordEnv: {env}}}\n",
                guarded.url()
            ),
        )
        .unwrap();
        p
    };
    let out = u.dir.join("auth.tar.zst");
    let run = |p: &Path, env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.args([
            "export",
            "-f",
            p.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--cache",
            u.dir.join("cache-auth").to_str().unwrap(),
        ])
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // The right password from the named variable: the chart travels.
    ok(&run(&spec("CHARTS_PW"), &[("CHARTS_PW", "s3cret")]));
    assert!(out.exists());
    std::fs::remove_file(&out).unwrap();
    // A wrong one: refused with the status and URL, the password never printed.
    let o = run(&spec("CHARTS_PW"), &[("CHARTS_PW", "wrong-pw-123")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("401") && text(&o).contains("index.yaml"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("wrong-pw-123"), "{}", text(&o));
    assert!(!out.exists());
    // A variable that is not set is named.
    let o = run(&spec("NOT_SET_PW"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("NOT_SET_PW"), "{}", text(&o));
}
