//! TLS settings against a real registry serving HTTPS with client-certificate
//! checks: custom CA, client certificate, skip-verify.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use ferry_bundle::digest::Digest;
use ferry_registry::{Client, ClientConfig, HostConfig, Repo};

use common::{fast_config, registry_with_tls};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all
/// signed by the CA.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ferry-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    for (name, eku, san) in [
        (
            "server",
            "serverAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        ),
        ("client", "clientAuth", ""),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=ferry-test"]);
        openssl(dir, &req);
        std::fs::write(
            dir.join(&ext),
            format!("{san}basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\n"),
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

fn host_config(url: &str) -> HostConfig {
    HostConfig {
        mirror: Some(url::Url::parse(url).unwrap()),
        ..HostConfig::default()
    }
}

fn client_with(h: HostConfig) -> Client {
    let mut config: ClientConfig = fast_config();
    config.hosts.insert("secure.test".into(), h);
    Client::new(config).unwrap()
}

#[tokio::test]
async fn custom_ca_and_client_certificate_reach_an_https_registry() {
    assert!(
        Command::new("openssl").arg("version").output().is_ok(),
        "openssl is missing: install it with `apt-get install -y openssl`"
    );
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let p = dir.path();
    let tls = format!(
        "{{certificate: {}, key: {}, clientcas: [{}]}}",
        p.join("server.pem").display(),
        p.join("server.key").display(),
        p.join("ca.pem").display()
    );
    let (ca, cert, key) = (p.join("ca.pem"), p.join("client.pem"), p.join("client.key"));
    let reg = registry_with_tls(dir, &tls);
    // The mirror setting sends `secure.test` to the registry over HTTPS.
    let url = format!("https://{}", reg.addr);

    let full = client_with(HostConfig {
        ca_file: Some(ca.clone()),
        client_cert: Some((cert.clone(), key.clone())),
        ..host_config(&url)
    });
    full.ping("secure.test").await.unwrap();
    let repo = Repo {
        host: "secure.test".into(),
        path: "tls/blob".into(),
    };
    let data = Bytes::from_static(b"over tls");
    let d = Digest::of(&data);
    full.upload_blob(&repo, &d, data).await.unwrap();
    assert_eq!(full.head_blob(&repo, &d).await.unwrap(), Some(8));

    // Without the CA the server certificate is refused, and not retried.
    let no_ca = client_with(HostConfig {
        client_cert: Some((cert.clone(), key.clone())),
        ..host_config(&url)
    });
    let e = no_ca.ping("secure.test").await.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    let chain = ferry_registry::chain(&e);
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");

    // Skipping verification works without the CA.
    let insecure = client_with(HostConfig {
        insecure_skip_verify: true,
        client_cert: Some((cert.clone(), key.clone())),
        ..host_config(&url)
    });
    insecure.ping("secure.test").await.unwrap();

    // Without a client certificate the registry refuses the handshake.
    let no_cert = client_with(HostConfig {
        ca_file: Some(ca.clone()),
        ..host_config(&url)
    });
    assert!(no_cert.ping("secure.test").await.is_err());
}

/// A TLS registry on a loopback address, addressed as `127.0.0.1:PORT` and as
/// `localhost:PORT` (the `kubectl port-forward` / SSH tunnel case): without a
/// scheme HTTPS is tried first and works with the CA; with `https` asked
/// for it is the only scheme; a plain-HTTP loopback registry still works
/// without a scheme, and refuses to be spoken to when HTTPS was asked for.
#[tokio::test]
async fn tls_registries_on_loopback_are_spoken_to_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let p = dir.path();
    let tls = format!(
        "{{certificate: {}, key: {}}}",
        p.join("server.pem").display(),
        p.join("server.key").display(),
    );
    let ca = p.join("ca.pem");
    let reg = registry_with_tls(dir, &tls);
    let port = reg.addr.port();
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        for https in [false, true] {
            let mut config = fast_config();
            config.hosts.insert(
                host.clone(),
                HostConfig {
                    ca_file: Some(ca.clone()),
                    https,
                    ..HostConfig::default()
                },
            );
            let client = Client::new(config).unwrap();
            client.ping(&host).await.unwrap_or_else(|e| {
                panic!("{host} (https: {https}): {}", ferry_registry::chain(&e))
            });
            let repo = Repo {
                host: host.clone(),
                path: "tls/loopback".into(),
            };
            let data = Bytes::from(format!("over tls to {host}"));
            let d = Digest::of(&data);
            client.upload_blob(&repo, &d, data.clone()).await.unwrap();
            assert_eq!(
                client.head_blob(&repo, &d).await.unwrap(),
                Some(data.len() as u64)
            );
            assert_eq!(client.uses_plain_http(&host), Some(false), "{host}");
        }
    }
    // Without the CA, TLS is still what is spoken (the certificate is
    // refused), never a silent fall back to plain HTTP.
    let mut config = fast_config();
    let host = format!("127.0.0.1:{port}");
    config.hosts.insert(
        host.clone(),
        HostConfig {
            https: true,
            ..HostConfig::default()
        },
    );
    let e = Client::new(config).unwrap().ping(&host).await.unwrap_err();
    assert!(
        ferry_registry::chain(&e)
            .to_lowercase()
            .contains("certificate"),
        "{}",
        ferry_registry::chain(&e)
    );

    // A plain-HTTP registry on loopback: found out without a scheme...
    let plain = common::registry();
    let client = Client::new(fast_config()).unwrap();
    client.ping(&plain.host()).await.unwrap();
    assert_eq!(client.uses_plain_http(&plain.host()), Some(true));
    // ...and refused when HTTPS was asked for.
    let mut config = fast_config();
    config.hosts.insert(
        plain.host(),
        HostConfig {
            https: true,
            ..HostConfig::default()
        },
    );
    assert!(Client::new(config)
        .unwrap()
        .ping(&plain.host())
        .await
        .is_err());
}

#[test]
fn unreadable_client_key_is_named_in_the_error() {
    let mut config = fast_config();
    config.hosts.insert(
        "r".into(),
        HostConfig {
            client_cert: Some(("/nonexistent/c.pem".into(), "/nonexistent/k.pem".into())),
            ..HostConfig::default()
        },
    );
    let e = Client::new(config).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/c.pem"), "{e}");
}
