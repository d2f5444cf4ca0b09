//! Provenance travels with the images: cosign's legacy `sha256-<hex>.sig` /
//! `.att` / `.sbom` tags and OCI 1.1 referrers, discovered at export (the
//! referrers API, else the `sha256-<hex>` fallback tag), pushed after their
//! subjects at import with the fallback tag kept on a registry without the
//! referrers API (Debian's docker-registry), and served from a store by
//! `ferry serve`'s referrers API. Checked with skopeo and curl.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use ferry_bundle::Digest;
use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet, OCI_INDEX, OCI_MANIFEST};
use ferry_testkit::registry::{require_tool, Registry};
use ferry_testkit::tools::{run_tool, skopeo_inspect_raw, skopeo_list_tags};
use serde_json::Value;

const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const SPDX: &str = "application/spdx+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
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

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "ferry failed ({:?}):\n{}",
        o.status.code(),
        text(o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// JSON events printed on stdout.
fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn manifest(
    client: &Client,
    repo: &Repo,
    reference: &str,
    media_type: &str,
    body: &str,
) -> Digest {
    client
        .put_manifest(repo, reference, media_type, Bytes::from(body.to_string()))
        .await
        .unwrap()
}

/// What was published upstream next to `fixtures/multiarch:1.0`.
struct Published {
    /// The index (subject of the signature and the SBOM).
    index: Digest,
    index_size: u64,
    /// Its linux/amd64 child (subject of the attestation).
    amd64: Digest,
    sig: Digest,
    att: Digest,
    sbom: Digest,
}

/// A cosign legacy signature manifest for `subject`.
async fn signature(client: &Client, repo: &Repo, subject: &Digest) -> String {
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"fixtures/multiarch"}},"image":{{"docker-manifest-digest":"{subject}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    let (pd, ps) = common::put_blob(client, repo, payload.as_bytes()).await;
    let config = format!(
        r#"{{"architecture":"","config":{{}},"created":"0001-01-01T00:00:00Z","history":[{{"created":"0001-01-01T00:00:00Z"}}],"os":"","rootfs":{{"type":"layers","diff_ids":["{pd}"]}}}}"#
    );
    let (cd, cs) = common::put_blob(client, repo, config.as_bytes()).await;
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","size":{cs},"digest":"{cd}"}},"layers":[{{"mediaType":"{SIMPLESIGNING}","size":{ps},"digest":"{pd}","annotations":{{"dev.cosignproject.cosign/signature":"MEUCIQDfakesignatureforthetest=="}}}}]}}"#
    )
}

/// Publishes the provenance of `fixtures/multiarch:1.0` on `host` the way
/// cosign and oras do on a registry without the referrers API.
async fn publish(set: &FixtureSet, host: &str) -> Published {
    let client = Client::new(ClientConfig::default()).unwrap();
    let img = set.image("fixtures/multiarch");
    let repo = Repo {
        host: host.into(),
        path: img.repository.clone(),
    };
    let index = img.top.digest.clone();
    let amd64 = img.child("linux/amd64").unwrap().digest.clone();

    // cosign sign (legacy): the `.sig` tag of the index.
    let body = signature(&client, &repo, &index).await;
    let sig = manifest(
        &client,
        &repo,
        &format!("{}.sig", index.fallback_tag()),
        OCI_MANIFEST,
        &body,
    )
    .await;

    // cosign attest (legacy): the `.att` tag of the amd64 child.
    let envelope = br#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"sig":"ZmFrZQ=="}]}"#;
    let (ed, es) = common::put_blob(&client, &repo, envelope).await;
    let (cd, cs) = common::put_blob(
        &client,
        &repo,
        br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
    .await;
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","size":{cs},"digest":"{cd}"}},"layers":[{{"mediaType":"{DSSE}","size":{es},"digest":"{ed}","annotations":{{"predicateType":"https://slsa.dev/provenance/v0.2"}}}}]}}"#
    );
    let att = manifest(
        &client,
        &repo,
        &format!("{}.att", amd64.fallback_tag()),
        OCI_MANIFEST,
        &body,
    )
    .await;

    // oras attach (OCI 1.1): an SBOM with `subject`, plus the fallback index.
    let (empty, _) = common::put_blob(&client, &repo, b"{}").await;
    let (sd, ss) = common::put_blob(
        &client,
        &repo,
        br#"{"spdxVersion":"SPDX-2.3","name":"multiarch"}"#,
    )
    .await;
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{SPDX}","config":{{"mediaType":"{EMPTY}","size":2,"digest":"{empty}"}},"layers":[{{"mediaType":"{SPDX}","size":{ss},"digest":"{sd}"}}],"subject":{{"mediaType":"{OCI_INDEX}","size":{},"digest":"{index}"}},"annotations":{{"org.opencontainers.image.created":"2026-01-01T00:00:00Z"}}}}"#,
        img.top.size()
    );
    let sbom = manifest(
        &client,
        &repo,
        &Digest::of(body.as_bytes()).to_string(),
        OCI_MANIFEST,
        &body,
    )
    .await;
    let fallback = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{sbom}","size":{},"artifactType":"{SPDX}","annotations":{{"org.opencontainers.image.created":"2026-01-01T00:00:00Z"}}}}]}}"#,
        body.len()
    );
    manifest(&client, &repo, &index.fallback_tag(), OCI_INDEX, &fallback).await;
    Published {
        index,
        index_size: img.top.size(),
        amd64,
        sig,
        att,
        sbom,
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    upstream: Registry,
    set: FixtureSet,
    published: Published,
    spec: PathBuf,
}

fn setup() -> Option<Setup> {
    require_tool("docker-registry");
    require_tool("skopeo");
    require_tool("curl");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let upstream = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions {
        many_layers: 2,
        ..FixtureOptions::default()
    });
    let h = upstream.host();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(ClientConfig::default()).unwrap();
    rt.block_on(push(&set, &client, &h)).unwrap();
    let published = rt.block_on(publish(&set, &h));
    let spec = dir.join("bundle.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: ferry.dev/v1\nname: provenance\nimages:\n  - {}\n  - {}\n",
            set.image("fixtures/multiarch").reference(&h),
            set.image("fixtures/docker-v2").reference(&h)
        ),
    )
    .unwrap();
    Some(Setup {
        _tmp: tmp,
        dir,
        upstream,
        set,
        published,
        spec,
    })
}

fn export(t: &Setup, out: &str, extra: &[&str]) -> PathBuf {
    let out = t.dir.join(out);
    let cache = t.dir.join("cache");
    let mut args = vec![
        "export",
        "-f",
        s(&t.spec),
        "-o",
        s(&out),
        "--cache",
        s(&cache),
    ];
    args.extend_from_slice(extra);
    ok(&ferry(&args));
    out
}

/// The bundle's index.json.
fn index_json(bundle: &Path) -> Value {
    let f = std::fs::File::open(bundle).unwrap();
    let stream = ferry_bundle::reader::decompress(f).unwrap();
    let mut a = tar::Archive::new(stream);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("index.json") {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            return serde_json::from_slice(&v).unwrap();
        }
    }
    panic!("no index.json in {}", bundle.display());
}

fn digest_at(reference: &str) -> Digest {
    Digest::of(&skopeo_inspect_raw(reference).unwrap())
}

#[test]
fn provenance_travels_to_a_registry_without_referrers_api() {
    let Some(t) = setup() else { return };
    let h = t.upstream.host();
    let p = &t.published;
    let multi = format!("{h}/fixtures/multiarch");
    let sig_ref = format!("{multi}:{}.sig", p.index.fallback_tag());
    let att_ref = format!("{multi}:{}.att", p.amd64.fallback_tag());
    let sbom_ref = format!("{multi}@{}", p.sbom);
    let lock = t.dir.join("ferry.lock");

    // Export: the signature, the attestation of a platform child and the
    // OCI 1.1 referrer (found through the fallback tag) travel, each with
    // its subject.
    let bundle = export(&t, "full.tar.zst", &["--lock", s(&lock)]);
    let mut got = common::inspect_items(s(&bundle));
    got.sort();
    let mut want = vec![
        (t.set.image("fixtures/docker-v2").reference(&h), None),
        (t.set.image("fixtures/multiarch").reference(&h), None),
        (sig_ref.clone(), Some(p.index.to_string())),
        (att_ref.clone(), Some(p.amd64.to_string())),
        (sbom_ref.clone(), Some(p.index.to_string())),
    ];
    want.sort();
    assert_eq!(got, want);
    // index.json marks the referrer the containerd way.
    let idx = index_json(&bundle);
    let referrer = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == sbom_ref.as_str())
        .expect("the referrer is in index.json");
    assert_eq!(
        referrer["annotations"]["io.containerd.manifest.subject"],
        p.index.to_string()
    );
    ok(&ferry(&["verify", s(&bundle)]));
    // The lock records them with their digests.
    let l: Value = serde_json::from_slice(&std::fs::read(&lock).unwrap()).unwrap();
    let sig_entry = l["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ref"] == sig_ref.as_str())
        .expect("the signature is locked");
    assert_eq!(sig_entry["digest"], p.sig.to_string());
    assert_eq!(sig_entry["subject"], p.index.to_string());

    // --no-referrers carries none.
    let bare = export(&t, "bare.tar.zst", &["--no-referrers"]);
    let bare_items = common::inspect_items(s(&bare));
    assert_eq!(bare_items.len(), 2, "{bare_items:?}");
    assert!(bare_items.iter().all(|(_, subject)| subject.is_none()));

    // The target already lists a referrer of another tool under the
    // fallback tag: ferry merges, never drops it.
    let target = Registry::start().unwrap();
    let th = target.host();
    let mirror = Repo {
        host: th.clone(),
        path: "mirror/fixtures/multiarch".into(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let foreign = rt.block_on(async {
        let c = Client::new(ClientConfig::default()).unwrap();
        let (empty, _) = common::put_blob(&c, &mirror, b"{}").await;
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x-foreign","config":{{"mediaType":"{EMPTY}","size":2,"digest":"{empty}"}},"layers":[],"subject":{{"mediaType":"{OCI_INDEX}","size":{},"digest":"{}"}}}}"#,
            p.index_size, p.index
        );
        let d = manifest(&c, &mirror, &Digest::of(body.as_bytes()).to_string(), OCI_MANIFEST, &body).await;
        let fallback = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":{},"artifactType":"application/x-foreign"}}]}}"#,
            body.len()
        );
        manifest(&c, &mirror, &p.index.fallback_tag(), OCI_INDEX, &fallback).await;
        d
    });

    // Import: subjects first, then provenance.
    let import = |extra: &[&str]| {
        let mut args = vec!["--json", "import", s(&bundle), "--registry", &th, "--map"];
        let map = format!("{h}=mirror");
        args.push(&map);
        args.extend_from_slice(extra);
        ok(&ferry(&args))
    };
    let out = import(&[]);
    let loaded: Vec<String> = events(&out)
        .iter()
        .filter(|e| e["event"] == "loaded")
        .map(|e| e["ref"].as_str().unwrap_or_default().to_string())
        .collect();
    let pos = |r: &str| {
        loaded
            .iter()
            .position(|x| x == r)
            .unwrap_or_else(|| panic!("{r} not loaded: {loaded:?}"))
    };
    let subject_at = pos(&t.set.image("fixtures/multiarch").reference(&h));
    assert!(subject_at < pos(&sig_ref), "{loaded:?}");
    assert!(subject_at < pos(&att_ref), "{loaded:?}");
    assert!(subject_at < pos(&sbom_ref), "{loaded:?}");

    // Everything at the mirror with its upstream digest (skopeo reads it).
    let at = format!("{th}/mirror/fixtures/multiarch");
    assert_eq!(digest_at(&format!("{at}:1.0")), p.index);
    assert_eq!(
        digest_at(&format!("{at}:{}.sig", p.index.fallback_tag())),
        p.sig
    );
    assert_eq!(
        digest_at(&format!("{at}:{}.att", p.amd64.fallback_tag())),
        p.att
    );
    assert_eq!(digest_at(&format!("{at}@{}", p.sbom)), p.sbom);
    // The fallback tag lists ours and the other tool's, sorted by digest.
    let fallback_tag = format!("{at}:{}", p.index.fallback_tag());
    let fallback = skopeo_inspect_raw(&fallback_tag).unwrap();
    let doc: Value = serde_json::from_slice(&fallback).unwrap();
    assert_eq!(doc["mediaType"], OCI_INDEX);
    let listed: Vec<String> = doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    let mut expected = vec![foreign.to_string(), p.sbom.to_string()];
    expected.sort();
    assert_eq!(listed, expected);
    let ours = doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == p.sbom.to_string())
        .unwrap();
    assert_eq!(ours["artifactType"], SPDX);

    // A re-run changes nothing: the same fallback index, byte for byte.
    import(&[]);
    assert_eq!(skopeo_inspect_raw(&fallback_tag).unwrap(), fallback);

    // import --no-referrers: the images only.
    let out = import(&["--no-referrers", "--map", &format!("{h}=plain")]);
    assert!(out.contains("--no-referrers"), "{out}");
    let plain = format!("{th}/plain/fixtures/multiarch");
    assert_eq!(digest_at(&format!("{plain}:1.0")), p.index);
    assert_eq!(skopeo_list_tags(&plain).unwrap(), vec!["1.0".to_string()]);

    // A new SBOM tag upstream is drift for --locked, named.
    rt.block_on(async {
        let c = Client::new(ClientConfig::default()).unwrap();
        let repo = Repo {
            host: h.clone(),
            path: "fixtures/multiarch".into(),
        };
        let body = signature(&c, &repo, &p.index).await;
        manifest(
            &c,
            &repo,
            &format!("{}.sbom", p.index.fallback_tag()),
            OCI_MANIFEST,
            &body,
        )
        .await;
    });
    let o = ferry(&[
        "export",
        "-f",
        s(&t.spec),
        "-o",
        s(&t.dir.join("drift.tar.zst")),
        "--cache",
        s(&t.dir.join("cache")),
        "--lock",
        s(&lock),
        "--locked",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{multi}:{}.sbom", p.index.fallback_tag())),
        "{}",
        text(&o)
    );
    assert!(!t.dir.join("drift.tar.zst").exists());
}

#[test]
fn provenance_in_a_store_is_served_through_the_referrers_api() {
    let Some(t) = setup() else { return };
    let h = t.upstream.host();
    let p = &t.published;
    let bundle = export(&t, "store.tar.zst", &[]);
    let store = t.dir.join("store");
    ok(&ferry(&[
        "import",
        s(&bundle),
        "--store",
        s(&store),
        "--map",
        &format!("{h}=mirror"),
    ]));
    // The referrer is kept by digest, and no fallback tag is written.
    let index: Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    let referrer = entries
        .iter()
        .find(|e| e["digest"] == p.sbom.to_string())
        .expect("the referrer is in the store's index.json");
    assert!(referrer["annotations"]["dev.ferry.tag"].is_null());
    assert_eq!(
        referrer["annotations"]["dev.ferry.repository"],
        "mirror/fixtures/multiarch"
    );
    assert!(!entries
        .iter()
        .any(|e| e["annotations"]["dev.ferry.tag"] == p.index.fallback_tag()));

    let port = common::free_port();
    let mut serve = common::serve_store(s(&store), port);
    let base = format!("http://127.0.0.1:{port}/v2/mirror/fixtures/multiarch");
    let referrers = run_tool("curl", ["-sf", &format!("{base}/referrers/{}", p.index)]);
    let sig = run_tool(
        "curl",
        [
            "-sf",
            "-H",
            &format!("Accept: {OCI_MANIFEST}"),
            &format!("{base}/manifests/{}.sig", p.index.fallback_tag()),
        ],
    );
    let _ = serve.kill();
    let _ = serve.wait();
    let doc: Value = serde_json::from_slice(&referrers.unwrap().stdout).unwrap();
    let listed: Vec<(String, String)> = doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["artifactType"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(listed, vec![(p.sbom.to_string(), SPDX.to_string())]);
    assert_eq!(Digest::of(&sig.unwrap().stdout), p.sig);
}
