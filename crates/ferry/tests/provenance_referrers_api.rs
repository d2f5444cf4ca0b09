//! Export asks a registry's referrers API once when the registry has none
//! (issue 17): a 404 there means the registry has no referrers API
//! (distribution-spec 1.1 forbids a 404 from one that has it), so every
//! other subject on that registry goes straight to its `sha256-<hex>`
//! fallback tag. Counted by a proxy in front of real registries: Debian's
//! `docker-registry` (no referrers API) and `ferry serve` (which has one).
//! Whatever the registry answers, every image's provenance is carried: its
//! cosign `.sig` tag and its OCI 1.1 referrer (an SBOM with `subject`).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{fails, ferry, inspect_items, ok};
use ferry_bundle::Digest;
use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::dataset::Dataset;
use ferry_testkit::proxy::{Action, Fault, FaultProxy};
use ferry_testkit::registry::{require_tool, Registry};
use serde_json::{json, Value};

/// Images in the set.
const REFS: usize = 4;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SPDX: &str = "application/spdx+json";

/// What was published beside one image: its cosign signature (by tag) and
/// its SBOM (a referrer, listed by the fallback tag).
struct Provenance {
    repository: String,
    tag: String,
    subject: Digest,
    sig: Digest,
    sbom: Digest,
}

struct Upstream {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    registry: Registry,
    published: Vec<Provenance>,
}

async fn put_manifest(
    client: &Client,
    repo: &Repo,
    reference: &str,
    mt: &str,
    v: &Value,
) -> Digest {
    let body = serde_json::to_vec(v).unwrap();
    client
        .put_manifest(repo, reference, mt, Bytes::from(body))
        .await
        .unwrap()
}

/// A cosign `.sig` tag and an SBOM referrer (with its fallback tag, as oras
/// pushes it to a registry without the referrers API) for `subject`.
async fn publish_one(
    client: &Client,
    repo: &Repo,
    subject: &Digest,
    size: u64,
) -> (Digest, Digest) {
    let payload = serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{}", repo.host, repo.path)},
            "image": {"docker-manifest-digest": subject.to_string()},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .unwrap();
    let (pd, ps) = common::put_blob(client, repo, &payload).await;
    let (cd, cs) = common::put_blob(client, repo, b"{}").await;
    let sig = put_manifest(
        client,
        repo,
        &format!("{}.sig", subject.fallback_tag()),
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cs},
            "layers": [{
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "digest": pd.to_string(),
                "size": ps,
                "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQDfakesignatureforthetest=="}
            }]
        }),
    )
    .await;
    let spdx = format!(r#"{{"spdxVersion":"SPDX-2.3","name":"{}"}}"#, repo.path);
    let (sd, ss) = common::put_blob(client, repo, spdx.as_bytes()).await;
    let sbom_doc = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SPDX,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd.to_string(), "size": cs},
        "layers": [{"mediaType": SPDX, "digest": sd.to_string(), "size": ss}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": size}
    });
    let sbom_bytes = serde_json::to_vec(&sbom_doc).unwrap();
    let sbom = put_manifest(
        client,
        repo,
        &Digest::of(&sbom_bytes).to_string(),
        OCI_MANIFEST,
        &sbom_doc,
    )
    .await;
    put_manifest(
        client,
        repo,
        &subject.fallback_tag(),
        OCI_INDEX,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sbom.to_string(), "size": sbom_bytes.len(), "artifactType": SPDX}]
        }),
    )
    .await;
    (sig, sbom)
}

/// A `docker-registry` holding `REFS` small images (the curve's set), each
/// with a cosign signature and an SBOM referrer.
fn upstream() -> Upstream {
    require_tool("docker-registry");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let set = Dataset::load_or_generate_many(&dir.join("set"), REFS, 0, &|_| {}).unwrap();
    let registry = Registry::start().unwrap();
    set.populate_registry_storage(&registry.storage_dir())
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(ClientConfig::default()).unwrap();
    let published = rt.block_on(async {
        let mut out = Vec::new();
        for img in &set.images {
            let repo = Repo {
                host: registry.host(),
                path: img.repository.clone(),
            };
            let (sig, sbom) = publish_one(&client, &repo, &img.top.digest, img.top.size).await;
            out.push(Provenance {
                repository: img.repository.clone(),
                tag: img.tag.clone(),
                subject: img.top.digest.clone(),
                sig,
                sbom,
            });
        }
        out
    });
    Upstream {
        _tmp: tmp,
        dir,
        registry,
        published,
    }
}

/// The spec of every published image at `host` (under `prefix/`).
fn write_spec(
    dir: &Path,
    name: &str,
    host: &str,
    prefix: &str,
    published: &[Provenance],
) -> String {
    let mut text = format!("apiVersion: ferry.dev/v1\nname: {name}\nimages:\n");
    for p in published {
        text.push_str(&format!("  - {host}/{prefix}{}:{}\n", p.repository, p.tag));
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn export(dir: &Path, spec: &str, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = ["export", "-f", spec, "-o", out]
        .into_iter()
        .map(String::from)
        .collect();
    if !extra.contains(&"--no-cache") {
        args.push("--cache".into());
        args.push(dir.join("cache").to_str().unwrap().into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ferry(&args)
}

/// GET requests for the referrers API the proxy saw.
fn referrers_asked(proxy: &FaultProxy) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.target.contains("/referrers/"))
        .count()
}

/// Every image of `published`, its `.sig` tag and its SBOM are items of
/// `bundle`, the provenance with the image as its subject.
#[track_caller]
fn carries_everything(bundle: &str, host: &str, prefix: &str, published: &[Provenance]) {
    let got = inspect_items(bundle);
    for p in published {
        let name = format!("{host}/{prefix}{}", p.repository);
        let has = |reference: &str, subject: Option<&Digest>| {
            got.iter().any(|(r, s)| {
                r == reference && s.as_deref() == subject.map(|d| d.to_string()).as_deref()
            })
        };
        assert!(has(&format!("{name}:{}", p.tag), None), "{name}: {got:?}");
        assert!(
            has(
                &format!("{name}:{}.sig", p.subject.fallback_tag()),
                Some(&p.subject)
            ),
            "{name}: the signature {} is missing: {got:?}",
            p.sig
        );
        assert!(
            has(&format!("{name}@{}", p.sbom), Some(&p.subject)),
            "{name}: the referrer {} is missing: {got:?}",
            p.sbom
        );
    }
    assert_eq!(got.len(), 3 * published.len(), "{got:?}");
}

#[test]
fn a_registry_without_the_referrers_api_is_asked_once() {
    let up = upstream();
    let proxy = FaultProxy::start(up.registry.addr(), Vec::new());
    let spec = write_spec(&up.dir, "once", &proxy.host(), "", &up.published);
    let out = up.dir.join("once.tar.zst");
    let out_s = out.to_str().unwrap();
    ok(&export(&up.dir, &spec, out_s, &["--no-cache"]));
    // One 404 for the whole registry, though 3 × REFS manifests (the
    // images, their signatures and SBOMs) had their provenance looked for.
    assert_eq!(referrers_asked(&proxy), 1, "{:?}", proxy.requests());
    // Each image's fallback tag was read instead.
    for p in &up.published {
        let fallback = format!("/manifests/{}", p.subject.fallback_tag());
        assert_eq!(
            proxy
                .requests()
                .iter()
                .filter(|r| r.method == "GET" && r.target.ends_with(&fallback))
                .count(),
            1,
            "{fallback}"
        );
    }
    carries_everything(out_s, &proxy.host(), "", &up.published);

    // Jobs at once do not ask it more than once either.
    let again = FaultProxy::start(up.registry.addr(), Vec::new());
    let spec = write_spec(&up.dir, "jobs", &again.host(), "", &up.published);
    let out = up.dir.join("jobs.tar.zst");
    ok(&export(
        &up.dir,
        &spec,
        out.to_str().unwrap(),
        &["--jobs", "8"],
    ));
    assert_eq!(referrers_asked(&again), 1, "{:?}", again.requests());
    carries_everything(out.to_str().unwrap(), &again.host(), "", &up.published);
}

#[test]
fn another_refusal_falls_back_for_each_subject() {
    let up = upstream();
    // 405 is not the 404 that says "no referrers API": each subject is
    // asked, and each falls back to its tag.
    let proxy = FaultProxy::start(
        up.registry.addr(),
        vec![Fault::new(Action::Status(405))
            .on_method("GET")
            .on_path("/referrers/")
            .always()],
    );
    let spec = write_spec(&up.dir, "refused", &proxy.host(), "", &up.published);
    let out = up.dir.join("refused.tar.zst");
    ok(&export(&up.dir, &spec, out.to_str().unwrap(), &[]));
    assert_eq!(referrers_asked(&proxy), 3 * REFS, "{:?}", proxy.requests());
    carries_everything(out.to_str().unwrap(), &proxy.host(), "", &up.published);
}

#[test]
fn a_network_failure_of_the_referrers_api_still_fails_the_export() {
    let up = upstream();
    // Closed without an answer, every time: a network failure (exit 2),
    // never taken for "no referrers API"; nothing is written.
    let proxy = FaultProxy::start(
        up.registry.addr(),
        vec![Fault::new(Action::Stall(Duration::from_millis(1)))
            .on_method("GET")
            .on_path("/referrers/")
            .always()],
    );
    let spec = write_spec(&up.dir, "cut", &proxy.host(), "", &up.published);
    let out = up.dir.join("cut.tar.zst");
    let o = ferry(&[
        "export",
        "--attempts",
        "1",
        "-f",
        &spec,
        "-o",
        out.to_str().unwrap(),
        "--no-cache",
    ]);
    let text = fails(&o, 2);
    assert!(text.contains("referrers of sha256:"), "{text}");
    assert!(referrers_asked(&proxy) >= 1);
    let left: Vec<String> = std::fs::read_dir(&up.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("cut.tar.zst"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_registry_with_the_referrers_api_is_asked_for_each_subject() {
    let up = upstream();
    let h = up.registry.host();
    let spec_up = write_spec(&up.dir, "first", &h, "", &up.published);
    let first = up.dir.join("first.tar.zst");
    ok(&export(&up.dir, &spec_up, first.to_str().unwrap(), &[]));
    // A store keeps the SBOMs by digest with no fallback tag: `ferry
    // serve` lists them only through its referrers API.
    let store = up.dir.join("store");
    ok(&ferry(&[
        "import",
        first.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--map",
        &format!("{h}=mirror"),
    ]));
    let port = common::free_port();
    let mut serve = common::serve_store(store.to_str().unwrap(), port);
    let proxy = FaultProxy::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Vec::new(),
    );
    let spec = write_spec(&up.dir, "served", &proxy.host(), "mirror/", &up.published);
    let out = up.dir.join("served.tar.zst");
    let o = export(&up.dir, &spec, out.to_str().unwrap(), &["--no-cache"]);
    let asked = referrers_asked(&proxy);
    let _ = serve.kill();
    let _ = serve.wait();
    ok(&o);
    // Each manifest's referrers are asked for: the images, their
    // signatures and their SBOMs.
    assert_eq!(asked, 3 * REFS, "{:?}", proxy.requests());
    // The referrers came from the API: no fallback tag was asked for.
    for p in &up.published {
        let fallback = format!("/manifests/{}", p.subject.fallback_tag());
        assert!(
            !proxy
                .requests()
                .iter()
                .any(|r| r.target.ends_with(&fallback)),
            "{fallback} was asked for"
        );
    }
    carries_everything(
        out.to_str().unwrap(),
        &proxy.host(),
        "mirror/",
        &up.published,
    );
}
