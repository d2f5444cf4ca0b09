//! Export and import against a TLS registry with htpasswd on a loopback
//! address (issue 13, item 2): the `kubectl port-forward` / SSH-tunnel way
//! into Harbor. The registry is Debian's `docker-registry` serving HTTPS with
//! a private CA; it is addressed as `localhost:PORT` and `127.0.0.1:PORT`,
//! with and without `https://`. skopeo (not ferry) checks what landed.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;
use common::{ferry_env as ferry, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::pki::Pki;
use ferry_testkit::registry::{require_tool, Registry, RegistryOptions};
use ferry_testkit::tools::run_tool;

const USER: &str = "pusher";
const PASSWORD: &str = "tls-loopback-pw";

#[track_caller]
fn ok(o: &Output) -> String {
    let t = common::ok(o);
    assert!(!t.contains(PASSWORD), "the password is never printed:\n{t}");
    t
}

/// skopeo's view of a manifest's raw bytes at the TLS registry.
fn skopeo_raw(cert_dir: &Path, reference: &str) -> Vec<u8> {
    let out = run_tool(
        "skopeo",
        [
            "inspect",
            "--raw",
            "--cert-dir",
            cert_dir.to_str().unwrap(),
            "--creds",
            &format!("{USER}:{PASSWORD}"),
            &format!("docker://{reference}"),
        ],
    )
    .unwrap_or_else(|e| panic!("skopeo inspect {reference}: {e}"));
    out.stdout
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    pki: Pki,
    cert_dir: PathBuf,
    set: FixtureSet,
    upstream: Registry,
    target: Registry,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let pki = Pki::generate(&dir).unwrap();
    // skopeo/containers-image read `*.crt` CAs from a directory.
    let cert_dir = dir.join("certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(&pki.ca, cert_dir.join("ca.crt")).unwrap();
    let upstream = Registry::start().unwrap();
    let target = Registry::start_with(RegistryOptions {
        tls: Some((pki.cert.clone(), pki.key.clone())),
        htpasswd: Some((USER.into(), PASSWORD.into())),
        ..RegistryOptions::default()
    })
    .unwrap();
    let set = FixtureSet::generate(&FixtureOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap();
    rt.block_on(push(&set, &client, &upstream.host())).unwrap();
    Setup {
        _tmp: tmp,
        dir,
        pki,
        cert_dir,
        set,
        upstream,
        target,
    }
}

fn export(
    s: &Setup,
    name: &str,
    spec_extra: &str,
    refs: &[String],
    envs: &[(&str, &str)],
) -> PathBuf {
    let spec = s.dir.join(format!("{name}.yaml"));
    let mut doc = serde_json::json!({
        "apiVersion": "ferry.dev/v1",
        "name": name,
        "images": refs,
    });
    if !spec_extra.is_empty() {
        doc["registries"] = serde_json::from_str(spec_extra).unwrap();
    }
    // JSON is YAML: the spec goes through a serializer.
    std::fs::write(&spec, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = s.dir.join(format!("{name}.tar.zst"));
    ok(&ferry(
        &[
            "export",
            "-f",
            spec.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--cache",
            s.dir.join("cache").to_str().unwrap(),
        ],
        envs,
    ));
    out
}

#[test]
fn import_into_a_tls_registry_on_localhost_and_127_0_0_1() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let s = setup();
    let h = s.upstream.host();
    let multi = s.set.image("fixtures/multiarch");
    let docker = s.set.image("fixtures/docker-v2");
    // The plain-HTTP upstream on loopback, given without a scheme: HTTPS is
    // tried first, then plain HTTP.
    let bundle = export(
        &s,
        "tls",
        "",
        &[multi.reference(&h), docker.reference(&h)],
        &[],
    );
    let port = s.target.port();
    let ca = s.pki.ca.to_str().unwrap();
    for (registry, prefix) in [
        (format!("https://localhost:{port}"), "via-localhost"),
        (format!("127.0.0.1:{port}"), "via-ip"),
    ] {
        ok(&ferry(
            &[
                "import",
                bundle.to_str().unwrap(),
                "--registry",
                &registry,
                "--ca",
                ca,
                "--username",
                USER,
                "--map",
                &format!("{h}={prefix}"),
            ],
            &[("FERRY_PASSWORD", PASSWORD)],
        ));
        let host = registry.trim_start_matches("https://");
        for img in [multi, docker] {
            let path = img.repository.clone();
            let at = format!("{host}/{prefix}/{path}:{}", img.tag);
            assert_eq!(skopeo_raw(&s.cert_dir, &at), img.top.bytes.to_vec(), "{at}");
        }
    }
    // Without the CA the certificate is refused: TLS was spoken, no silent
    // plain-HTTP downgrade, and nothing landed.
    let o = ferry(
        &[
            "import",
            bundle.to_str().unwrap(),
            "--registry",
            &format!("https://localhost:{port}"),
            "--username",
            USER,
            "--map",
            &format!("{h}=no-ca"),
        ],
        &[("FERRY_PASSWORD", PASSWORD)],
    );
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).to_lowercase().contains("certificate"),
        "{}",
        text(&o)
    );
    let o = run_tool(
        "skopeo",
        [
            "list-tags",
            "--cert-dir",
            s.cert_dir.to_str().unwrap(),
            "--creds",
            &format!("{USER}:{PASSWORD}"),
            &format!("docker://localhost:{port}/no-ca/{}", multi.repository),
        ],
    );
    assert!(o.is_err(), "nothing landed under no-ca/: {o:?}");
}

#[test]
fn export_from_a_tls_registry_on_localhost_with_its_ca() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let s = setup();
    let port = s.target.port();
    let multi = s.set.image("fixtures/multiarch");
    // Put an image on the TLS registry (as a mirror would hold it), then
    // export from it by `localhost:PORT` with the CA set for that host.
    let seed = export(&s, "seed", "", &[multi.reference(&s.upstream.host())], &[]);
    ok(&ferry(
        &[
            "import",
            seed.to_str().unwrap(),
            "--registry",
            &format!("https://localhost:{port}"),
            "--ca",
            s.pki.ca.to_str().unwrap(),
            "--username",
            USER,
            "--map",
            &format!("{}=team", s.upstream.host()),
        ],
        &[("FERRY_PASSWORD", PASSWORD)],
    ));
    let docker_config = s.dir.join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        docker_config.join("config.json"),
        serde_json::to_vec(
            &serde_json::json!({"auths": {format!("localhost:{port}"): {"auth": auth}}}),
        )
        .unwrap(),
    )
    .unwrap();
    let registries = serde_json::json!({
        format!("localhost:{port}"): {"ca": s.pki.ca}
    })
    .to_string();
    let reference = format!("localhost:{port}/team/{}:{}", multi.repository, multi.tag);
    let spec = s.dir.join("from-tls.yaml");
    std::fs::write(
        &spec,
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "ferry.dev/v1",
            "name": "from-tls",
            "images": [reference],
            "registries": serde_json::from_str::<serde_json::Value>(&registries).unwrap(),
        }))
        .unwrap(),
    )
    .unwrap();
    let out = s.dir.join("from-tls.tar.zst");
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.args([
        "export",
        "-f",
        spec.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--cache",
        s.dir.join("cache2").to_str().unwrap(),
    ])
    .env("DOCKER_CONFIG", &docker_config);
    let o = c.output().unwrap();
    ok(&o);
    let v = ferry(&["inspect", out.to_str().unwrap()], &[]);
    let t = ok(&v);
    // inspect shows the digest's first 12 hex digits.
    let short = &multi.top.digest.to_string()[..19];
    assert!(t.contains(&reference) && t.contains(short), "{t}");
}
