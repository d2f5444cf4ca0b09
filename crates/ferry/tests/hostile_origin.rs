//! A hostile chart repository cannot collect the credentials given for it
//! from another origin (issue 12, class 5).
//!
//! A spec's `auth:` belongs to the origin (scheme, host, port) of the
//! repository or file URL it is written for. A chart repository's
//! `index.yaml` may point a chart's download at any URL; ferry sends the
//! password only when that URL has exactly the repository's origin. The
//! tests use two real nginx servers guarded by the *same* password on two
//! ports of 127.0.0.1: if ferry sent the password to the second port the
//! download would succeed, so the refusal (401 from the second server)
//! proves the credential was not sent there.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_bundle::craft::chart_tgz;
use ferry_bundle::Digest;
use ferry_testkit::nginx::{require_nginx, Nginx, NginxOptions};

const PASSWORD: &str = "origin-bound-s3cret";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn guarded(root: &Path) -> Nginx {
    Nginx::start(NginxOptions {
        basic_auth: Some(("ci".into(), PASSWORD.into())),
        ..NginxOptions::new(root)
    })
    .unwrap()
}

fn export(dir: &Path, spec: &str) -> (Output, PathBuf) {
    let spec_path = dir.join("bundle.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let out = dir.join("out.tar.zst");
    let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "export",
            "-f",
            spec_path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--cache",
            dir.join("cache").to_str().unwrap(),
        ])
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .env("CHARTS_PW", PASSWORD)
        .output()
        .unwrap();
    (o, out)
}

/// Writes a repository whose only chart is downloaded from `chart_url`.
fn repository(root: &Path, chart_url: &str) -> Vec<u8> {
    let tgz = chart_tgz("app", "1.0.0", &[]);
    write(root, "charts/app-1.0.0.tgz", &tgz);
    let index = format!(
        "apiVersion: v1\nentries:\n  app:\n  - apiVersion: v2\n    name: app\n    version: 1.0.0\n    digest: {}\n    urls: [\"{chart_url}\"]\n",
        Digest::of(&tgz).hex()
    );
    write(root, "charts/index.yaml", index.as_bytes());
    tgz
}

fn chart_spec(repo: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1\nname: origin\ncharts:\n  - repo: {repo}/charts\n    name: app\n    version: 1.0.0\n    auth: {{username: ci, passwordEnv: CHARTS_PW}}\n"
    )
}

#[test]
fn chart_credentials_are_not_sent_to_another_port_of_the_same_host() {
    require_nginx();
    let dir = tempfile::tempdir().unwrap();
    let root_a = dir.path().join("a");
    let root_b = dir.path().join("b");
    std::fs::create_dir_all(&root_a).unwrap();
    std::fs::create_dir_all(&root_b).unwrap();
    let repo = guarded(&root_a);
    let other = guarded(&root_b);
    // The chart lives on the other server, same host name, another port.
    let tgz = repository(&root_a, &format!("{}/charts/app-1.0.0.tgz", other.url()));
    write(&root_b, "charts/app-1.0.0.tgz", &tgz);
    let (o, out) = export(dir.path(), &chart_spec(&repo.url()));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("401"),
        "the other port must have been asked without credentials: {t}"
    );
    assert!(
        t.contains(&format!("{}/charts/app-1.0.0.tgz", other.url())),
        "the error names the chart URL: {t}"
    );
    assert!(!t.contains(PASSWORD), "{t}");
    assert!(!out.exists(), "nothing written on a refused export");
    // The other server saw the download, without an Authorization that
    // nginx accepted: its access log shows the 401.
    let log = other.access_log();
    assert!(
        log.contains("app-1.0.0.tgz") && log.contains(" 401 "),
        "{log}"
    );
    assert!(!log.contains(" 200 "), "{log}");
}

#[test]
fn chart_credentials_go_to_an_absolute_url_of_the_same_origin() {
    require_nginx();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a");
    std::fs::create_dir_all(&root).unwrap();
    let repo = guarded(&root);
    // An absolute URL with exactly the repository's origin keeps working.
    repository(&root, &format!("{}/charts/app-1.0.0.tgz", repo.url()));
    let (o, out) = export(dir.path(), &chart_spec(&repo.url()));
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.exists());
}
