//! The registry harness: starts Debian's docker-registry on loopback with its
//! own storage, stops, restarts on the same port, and cleans up.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::time::Duration;

use ferry_bundle::Digest;
use ferry_testkit::registry::{on_path, require_tool, Registry};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Uploads `data` as a blob of `repo` with POST + PUT (no ferry code involved).
async fn upload(base: &str, repo: &str, data: &[u8]) -> Digest {
    let digest = Digest::of(data);
    let c = http();
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let loc = if loc.starts_with('/') {
        format!("{base}{loc}")
    } else {
        loc
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{loc}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

async fn blob_status(base: &str, repo: &str, digest: &Digest) -> u16 {
    http()
        .head(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn the_registry_starts_on_loopback_and_answers_v2() {
    require_tool("docker-registry");
    let reg = Registry::start().unwrap();
    assert!(reg.host().starts_with("127.0.0.1:"));
    assert_eq!(reg.url(), format!("http://{}", reg.host()));
    assert_eq!(reg.addr().to_string(), reg.host());
    let status = rt().block_on(async {
        http()
            .get(format!("{}/v2/", reg.url()))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    // The configuration is JSON (a YAML subset), written by a serializer.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reg.config_path()).unwrap()).unwrap();
    assert_eq!(config["http"]["addr"], reg.host().as_str(), "{config}");
    assert_eq!(
        config["storage"]["filesystem"]["rootdirectory"],
        reg.storage_dir().to_string_lossy().as_ref()
    );
}

#[test]
fn two_registries_get_their_own_ports_and_storage() {
    require_tool("docker-registry");
    let a = Registry::start().unwrap();
    let b = Registry::start().unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.storage_dir(), b.storage_dir());
    rt().block_on(async {
        let d = upload(&a.url(), "t/one", b"only in a").await;
        assert_eq!(blob_status(&a.url(), "t/one", &d).await, 200);
        assert_eq!(blob_status(&b.url(), "t/one", &d).await, 404);
    });
    assert!(a
        .storage_dir()
        .join("docker/registry/v2/repositories/t/one")
        .is_dir());
}

#[test]
fn a_restarted_registry_keeps_its_port_and_content() {
    require_tool("docker-registry");
    let mut reg = Registry::start().unwrap();
    let host = reg.host();
    let rt = rt();
    let d = rt.block_on(upload(&reg.url(), "t/restart", b"kept across restarts"));
    reg.stop();
    assert!(!reg.is_running());
    assert_eq!(
        rt.block_on(blob_status(&reg.url(), "t/restart", &d)),
        0,
        "nothing answers while stopped"
    );
    reg.restart().unwrap();
    assert!(reg.is_running());
    assert_eq!(reg.host(), host);
    assert_eq!(rt.block_on(blob_status(&reg.url(), "t/restart", &d)), 200);
    // Restarting a running registry works too.
    reg.restart().unwrap();
    assert_eq!(rt.block_on(blob_status(&reg.url(), "t/restart", &d)), 200);
}

#[test]
fn dropping_the_registry_stops_it_and_removes_its_storage() {
    require_tool("docker-registry");
    let reg = Registry::start().unwrap();
    let url = reg.url();
    let dir = reg.storage_dir();
    assert!(dir.is_dir());
    drop(reg);
    assert!(!dir.exists());
    let r = rt().block_on(async { http().get(format!("{url}/v2/")).send().await });
    assert!(r.is_err(), "the registry still answers after drop");
}

#[test]
fn require_tool_finds_installed_tools() {
    assert!(on_path("sh"));
    require_tool("sh"); // returns: sh is installed
    assert!(!on_path("ferry-no-such-tool"));
}

#[test]
fn a_missing_tool_fails_the_test_with_the_install_line() {
    // Never a silent skip, with or without CI=true.
    let r = std::panic::catch_unwind(|| require_tool("ferry-no-such-tool"));
    let msg = r.unwrap_err();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains(
            "required tool `ferry-no-such-tool` is missing: install it with `apt-get install -y"
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn a_tls_registry_with_htpasswd_asks_for_credentials_over_https() {
    require_tool("docker-registry");
    let dir = tempfile::tempdir().unwrap();
    let pki = ferry_testkit::pki::Pki::generate(dir.path()).unwrap();
    let reg =
        ferry_testkit::registry::Registry::start_with(ferry_testkit::registry::RegistryOptions {
            tls: Some((pki.cert.clone(), pki.key.clone())),
            htpasswd: Some(("puller".into(), "pull-pw".into())),
            ..Default::default()
        })
        .unwrap();
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .build()
        .unwrap();
    for host in [
        format!("127.0.0.1:{}", reg.port()),
        format!("localhost:{}", reg.port()),
    ] {
        let url = format!("https://{host}/v2/");
        let status = |r: reqwest::Response| r.status().as_u16();
        assert_eq!(status(client.get(&url).send().await.unwrap()), 401, "{url}");
        let ok = client
            .get(&url)
            .basic_auth("puller", Some("pull-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(status(ok), 200, "{url}");
        let bad = client
            .get(&url)
            .basic_auth("puller", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(status(bad), 401, "{url}");
    }
}
