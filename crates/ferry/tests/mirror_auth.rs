//! Every node pulls from an authenticated TLS mirror through the emitted
//! configuration, with no hand edits (issue 13): a real containerd 1.6
//! through `hosts.toml` (the CA carried beside it, the credential in its
//! authorization header), and skopeo through `registries.conf` and
//! `auth.json`, both with the upstream stopped. Mirrors: Debian's
//! `docker-registry` with htpasswd over TLS, and `ferry serve --tls-cert
//! --tls-key --htpasswd`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;
use common::ferry_env as ferry;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ferry_testkit::containerd::{require_containerd, Containerd};
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::pki::Pki;
use ferry_testkit::registry::{require_tool, Registry, RegistryOptions};
use ferry_testkit::tools::run_tool;

const USER: &str = "node-puller";
const PASSWORD: &str = "pull-only-s3cret";
const PULLED: [&str; 2] = ["fixtures/multiarch", "fixtures/docker-v2"];

#[track_caller]
fn ok(o: &Output) -> String {
    let t = common::ok(o);
    assert!(!t.contains(PASSWORD), "the password is never printed:\n{t}");
    t
}

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    pki: Pki,
    set: FixtureSet,
    upstream: Registry,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let pki = Pki::generate(&dir).unwrap();
    let upstream = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions::default());
    let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(push(&set, &client, &upstream.host()))
        .unwrap();
    World {
        _tmp: tmp,
        dir,
        pki,
        set,
        upstream,
    }
}

impl World {
    /// Exports the fixtures under their `docker.io/…` names (fetched from
    /// the upstream through `--upstream-mirror`).
    fn export(&self) -> PathBuf {
        let refs: Vec<String> = PULLED
            .iter()
            .map(|n| {
                let i = self.set.image(n);
                format!("docker.io/{}:{}", i.repository, i.tag)
            })
            .collect();
        let spec = self.dir.join("bundle.yaml");
        std::fs::write(
            &spec,
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "ferry.dev/v1", "name": "auth-e2e", "images": refs,
            }))
            .unwrap(),
        )
        .unwrap();
        let out = self.dir.join("bundle.tar.zst");
        ok(&ferry(
            &[
                "export",
                "-f",
                spec.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--cache",
                self.dir.join("cache").to_str().unwrap(),
                "--upstream-mirror",
                &format!("docker.io=http://{}", self.upstream.host()),
            ],
            &[],
        ));
        out
    }

    /// containerd pulls every fixture by its source name through the emitted
    /// certs.d, over TLS (no --plain-http), with the upstream stopped.
    fn containerd_pulls(&self, emit: &Path) {
        let certs = emit.join("containerd").join("certs.d");
        let ctd = Containerd::start().unwrap();
        for n in PULLED {
            let i = self.set.image(n);
            let reference = format!("docker.io/{}:{}", i.repository, i.tag);
            assert_eq!(
                ctd.pull(&reference, &certs, false).unwrap(),
                i.top.digest.to_string(),
                "{reference}"
            );
        }
    }

    /// skopeo (containers/image) resolves the source names through the
    /// emitted registries.conf, auth.json and CA: the exact upstream bytes.
    fn skopeo_reads(&self, emit: &Path, mirror_host: &str) {
        for n in PULLED {
            let i = self.set.image(n);
            let out = run_tool(
                "skopeo",
                [
                    "--registries-conf",
                    emit.join("containers/registries.conf").to_str().unwrap(),
                    "inspect",
                    "--raw",
                    "--authfile",
                    emit.join("containers/auth.json").to_str().unwrap(),
                    "--cert-dir",
                    emit.join("containers/certs.d")
                        .join(mirror_host)
                        .to_str()
                        .unwrap(),
                    &format!("docker://docker.io/{}:{}", i.repository, i.tag),
                ],
            )
            .unwrap();
            assert_eq!(out.stdout, i.top.bytes.to_vec(), "{n}");
        }
    }
}

/// The credential is only in files written 0600, and the README says so.
fn check_secrets(emit: &Path) {
    let mut stack = vec![emit.to_path_buf()];
    let mut secret_files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            let holds =
                text.contains(PASSWORD) || text.contains(&base64_of(&format!("{USER}:{PASSWORD}")));
            if holds {
                secret_files += 1;
                assert_eq!(mode, 0o600, "{} holds the credential", p.display());
            }
        }
    }
    assert!(
        secret_files >= 4,
        "hosts.toml, auth.json, k3s, pull secret…"
    );
    let readme = std::fs::read_to_string(emit.join("README.md")).unwrap();
    assert!(readme.contains("mode 0600"), "{readme}");
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn nodes_pull_from_a_tls_registry_with_htpasswd_through_the_emitted_config() {
    require_tool("docker-registry");
    require_tool("skopeo");
    require_containerd();
    let mut w = world();
    let bundle = w.export();
    let target = Registry::start_with(RegistryOptions {
        tls: Some((w.pki.cert.clone(), w.pki.key.clone())),
        htpasswd: Some((USER.into(), PASSWORD.into())),
        ..RegistryOptions::default()
    })
    .unwrap();
    let emit = w.dir.join("emit");
    let host = format!("127.0.0.1:{}", target.port());
    let t = ok(&ferry(
        &[
            "import",
            bundle.to_str().unwrap(),
            "--registry",
            &format!("https://{host}"),
            "--ca",
            w.pki.ca.to_str().unwrap(),
            "--username",
            USER,
            "--map",
            "docker.io=dockerhub",
            "--emit-config",
            emit.to_str().unwrap(),
            "--emit-username",
            USER,
        ],
        &[
            ("FERRY_PASSWORD", PASSWORD),
            ("FERRY_EMIT_PASSWORD", PASSWORD),
        ],
    ));
    assert!(t.contains("containers/registries.conf"), "{t}");
    let toml =
        std::fs::read_to_string(emit.join("containerd/certs.d/docker.io/hosts.toml")).unwrap();
    assert!(toml.contains("ca = \"ca.crt\""), "{toml}");
    assert!(emit.join("containerd/certs.d/docker.io/ca.crt").exists());
    check_secrets(&emit);
    w.upstream.stop();
    w.containerd_pulls(&emit);
    w.skopeo_reads(&emit, &host);
    // Without the credential a node gets 401: the emitted header is what works.
    let bare = w.dir.join("bare");
    std::fs::create_dir_all(bare.join("docker.io")).unwrap();
    std::fs::write(
        bare.join("docker.io/hosts.toml"),
        toml.lines()
            .filter(|l| !l.contains("authorization") && !l.contains(".header]"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    std::fs::copy(
        emit.join("containerd/certs.d/docker.io/ca.crt"),
        bare.join("docker.io/ca.crt"),
    )
    .unwrap();
    let ctd = Containerd::start().unwrap();
    let i = w.set.image(PULLED[0]);
    assert!(ctd
        .pull(
            &format!("docker.io/{}:{}", i.repository, i.tag),
            &bare,
            false
        )
        .is_err());
}

#[test]
fn nodes_pull_from_ferry_serve_with_tls_and_htpasswd_through_the_emitted_config() {
    require_tool("docker-registry");
    require_tool("skopeo");
    require_containerd();
    let mut w = world();
    let bundle = w.export();
    let store = w.dir.join("store");
    let emit = w.dir.join("emit");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    ok(&ferry(
        &[
            "import",
            bundle.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--map",
            "docker.io=dockerhub",
            "--mirror-url",
            &format!("https://{host}"),
            "--ca",
            w.pki.ca.to_str().unwrap(),
            "--emit-config",
            emit.to_str().unwrap(),
            "--emit-username",
            USER,
        ],
        &[("FERRY_EMIT_PASSWORD", PASSWORD)],
    ));
    check_secrets(&emit);
    let htpasswd = w.dir.join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!(
            "{USER}:{}\n",
            ferry_testkit::registry::bcrypt_entry(PASSWORD)
        ),
    )
    .unwrap();
    w.upstream.stop();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "serve",
            store.to_str().unwrap(),
            "--listen",
            &host,
            "--tls-cert",
            w.pki.cert.to_str().unwrap(),
            "--tls-key",
            w.pki.key.to_str().unwrap(),
            "--htpasswd",
            htpasswd.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_serving(port);
    w.containerd_pulls(&emit);
    w.skopeo_reads(&emit, &host);
    let _ = serve.kill();
    let _ = serve.wait();
}
