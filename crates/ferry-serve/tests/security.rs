//! Serving beyond loopback: htpasswd, TLS, the refusal to expose an
//! unprotected server, and refusals of stores that are not stores.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::*;
use ferry_serve::{ServeError, ServeOptions};
use reqwest::StatusCode;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn write_htpasswd(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("htpasswd");
    let text = format!(
        "# users\nalice:{}\nbob:{}\n",
        bcrypt::hash("wonderland", 4).unwrap(),
        bcrypt::hash("builder", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn htpasswd_guards_every_request() {
    let store = build_store();
    let mut opts = ServeOptions::new(store.dir(), loopback());
    opts.htpasswd = Some(write_htpasswd(store.root.path()));
    let srv = start(opts).await;
    let c = client();
    let manifest = format!(
        "{}/v2/{}/manifests/1.0",
        srv.registry_url,
        TestStore::repo("fixtures/multiarch")
    );
    let file = format!("{}helm/stable/index.yaml", srv.files_url);
    for url in [
        format!("{}/v2/", srv.registry_url),
        manifest.clone(),
        file.clone(),
    ] {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{url}");
        assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"ferry\"");
        let r = c
            .get(&url)
            .basic_auth("alice", Some("queen"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "wrong password: {url}"
        );
        let r = c
            .get(&url)
            .basic_auth("mallory", Some("wonderland"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "unknown user: {url}");
        let r = c
            .get(&url)
            .basic_auth("alice", Some("wonderland"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "right password: {url}");
        // A `$2y$` entry (what `htpasswd -B` writes) works too.
        let r = c
            .get(&url)
            .basic_auth("bob", Some("builder"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "$2y$ entry: {url}");
    }
    let r = c
        .get(format!("{}/v2/", srv.registry_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        common::error_code(&r.bytes().await.unwrap()),
        "UNAUTHORIZED"
    );
    srv.stop().await;
}

struct Pki {
    ca_pem: String,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

/// A CA and a certificate it signed for 127.0.0.1 and localhost.
fn pki(dir: &std::path::Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ferry test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "ferry serve");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert,
        key,
    }
}

#[tokio::test]
async fn tls_serves_https_with_the_given_certificate() {
    let store = build_store();
    let pki = pki(store.root.path());
    let mut opts = ServeOptions::new(store.dir(), loopback());
    opts.tls = Some((pki.cert.clone(), pki.key.clone()));
    let srv = start(opts).await;
    assert!(
        srv.registry_url.starts_with("https://"),
        "{}",
        srv.registry_url
    );
    let trusting = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let image = store.set.image("fixtures/docker-v2");
    let r = trusting
        .get(format!(
            "{}/v2/{}/manifests/1.0",
            srv.registry_url,
            TestStore::repo(&image.repository)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), image.top.bytes);
    let r = trusting
        .get(format!("{}{DRIVER_PATH}", srv.files_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), store.driver);

    // A client that does not trust the CA fails the handshake.
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(untrusting
        .get(format!("{}/v2/", srv.registry_url))
        .send()
        .await
        .is_err());
    // Plain HTTP to the TLS port gets nothing useful.
    let plain = client()
        .get(format!("http://{}/v2/", srv.addr))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != StatusCode::OK);
    srv.stop().await;
}

#[tokio::test]
async fn tls_and_htpasswd_together() {
    let store = build_store();
    let pki = pki(store.root.path());
    let mut opts = ServeOptions::new(store.dir(), loopback());
    opts.tls = Some((pki.cert.clone(), pki.key.clone()));
    opts.htpasswd = Some(write_htpasswd(store.root.path()));
    let srv = start(opts).await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("{}/v2/_catalog", srv.registry_url);
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = c
        .get(&url)
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    srv.stop().await;
}

#[tokio::test]
async fn bad_tls_files_are_errors_naming_the_file() {
    let store = build_store();
    let pki = pki(store.root.path());
    let junk = store.root.path().join("junk.pem");
    std::fs::write(&junk, "not a pem\n").unwrap();
    let mut opts = ServeOptions::new(store.dir(), loopback());
    opts.tls = Some((junk.clone(), pki.key.clone()));
    let err = ferry_serve::bind(opts).await.unwrap_err();
    assert!(matches!(err, ServeError::TlsCert { .. }), "{err}");
    assert!(err.to_string().contains("junk.pem"), "{err}");
    let mut opts = ServeOptions::new(store.dir(), loopback());
    opts.tls = Some((pki.cert.clone(), junk));
    let err = ferry_serve::bind(opts).await.unwrap_err();
    assert!(matches!(err, ServeError::TlsKey { .. }), "{err}");
    assert!(err.to_string().contains("junk.pem"), "{err}");
}

#[tokio::test]
async fn a_non_loopback_address_needs_tls_and_htpasswd_or_the_flag() {
    let store = build_store();
    let pki = pki(store.root.path());
    let everywhere: std::net::SocketAddr = "0.0.0.0:0".parse().unwrap();
    let mut opts = ServeOptions::new(store.dir(), everywhere);
    let err = ferry_serve::bind(opts.clone()).await.unwrap_err();
    assert!(matches!(err, ServeError::InsecureListen { .. }), "{err}");
    assert!(err.to_string().contains("--insecure-listen"), "{err}");
    assert!(err.to_string().contains("0.0.0.0"), "{err}");
    // TLS alone is not enough, nor is htpasswd alone.
    opts.tls = Some((pki.cert.clone(), pki.key.clone()));
    assert!(matches!(
        ferry_serve::bind(opts.clone()).await.unwrap_err(),
        ServeError::InsecureListen { .. }
    ));
    opts.tls = None;
    opts.htpasswd = Some(write_htpasswd(store.root.path()));
    assert!(matches!(
        ferry_serve::bind(opts).await.unwrap_err(),
        ServeError::InsecureListen { .. }
    ));
    // The files listener is checked too.
    let mut opts = ServeOptions::new(store.dir(), loopback());
    opts.files_listen = Some(everywhere);
    assert!(matches!(
        ferry_serve::bind(opts).await.unwrap_err(),
        ServeError::InsecureListen { .. }
    ));
}

#[tokio::test]
async fn directories_that_are_not_stores_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("missing");
    let err = ferry_serve::bind(ServeOptions::new(&missing, loopback()))
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::NotADirectory { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = ferry_serve::bind(ServeOptions::new(&empty, loopback()))
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::NotAStore { .. }), "{err}");

    let broken = root.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(
        broken.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(broken.join("index.json"), b"{\"manifests\": 7}").unwrap();
    let err = ferry_serve::bind(ServeOptions::new(&broken, loopback()))
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Index { .. }), "{err}");
    assert!(err.to_string().contains("index.json"), "{err}");

    std::fs::write(
        broken.join("oci-layout"),
        br#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    let err = ferry_serve::bind(ServeOptions::new(&broken, loopback()))
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Layout { .. }), "{err}");

    // A fresh store with only files/ (nothing imported yet) serves an empty registry.
    let fresh = root.path().join("fresh");
    std::fs::create_dir_all(fresh.join("files")).unwrap();
    let srv = start(ServeOptions::new(&fresh, loopback())).await;
    let r = client()
        .get(format!("{}/v2/_catalog", srv.registry_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"repositories":[]}"#);
    srv.stop().await;
}

#[tokio::test]
async fn a_port_in_use_is_an_error_naming_the_address() {
    let store = build_store();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = ferry_serve::bind(ServeOptions::new(store.dir(), addr))
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Bind { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
