//! The emitted containerd configuration, checked by a real containerd.
//!
//! Export fixture images under their `docker.io/…` source names (fetched
//! through `--upstream-mirror` from a local upstream registry), import them
//! into a target registry with `--emit-config`, stop the upstream, and have
//! containerd pull the *source* names through the emitted `certs.d`: the
//! digest it records must be the upstream's.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_testkit::containerd::{require_containerd, Containerd};
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::registry::{require_tool, Registry};

/// The fixture images pulled by containerd (an OCI index and a Docker schema2 image).
const PULLED: &[&str] = &["fixtures/multiarch", "fixtures/docker-v2"];

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD")
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .output()
        .expect("run ferry")
}

#[track_caller]
fn ok(o: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "ferry failed ({:?}):\n{text}",
        o.status.code()
    );
    text
}

fn tools() {
    require_tool("docker-registry");
    require_containerd();
}

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    upstream: Registry,
    target: Registry,
    set: FixtureSet,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let upstream = Registry::start().unwrap();
    let target = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions::default());
    let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(push(&set, &client, &upstream.host()))
        .unwrap();
    World {
        dir: tmp.path().to_path_buf(),
        _tmp: tmp,
        upstream,
        target,
        set,
    }
}

impl World {
    /// Exports the pulled fixtures under `<source_host>/<repository>:<tag>`;
    /// for a source host other than the upstream's own, through `--upstream-mirror`.
    fn export(&self, source_host: &str) -> PathBuf {
        let mut spec = String::from("apiVersion: ferry.dev/v1\nname: containerd-e2e\nimages:\n");
        for r in PULLED {
            let i = self.set.image(r);
            spec.push_str(&format!("  - {source_host}/{}:{}\n", i.repository, i.tag));
        }
        let spec_path = self.dir.join("bundle.yaml");
        std::fs::write(&spec_path, spec).unwrap();
        let out = self.dir.join("bundle.tar.zst");
        let cache = self.dir.join("cache");
        let mirror = format!("{source_host}=http://{}", self.upstream.host());
        let mut args = vec![
            "export",
            "-f",
            spec_path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ];
        if source_host != self.upstream.host() {
            args.extend(["--upstream-mirror", &mirror]);
        }
        ok(&ferry(&args));
        out
    }

    /// Imports with `extra` flags and `--emit-config`; returns the emit directory.
    fn import(&self, bundle: &Path, registry: &str, extra: &[&str]) -> PathBuf {
        let emit = self.dir.join("emit");
        let mut args = vec![
            "import",
            bundle.to_str().unwrap(),
            "--registry",
            registry,
            "--emit-config",
            emit.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = ok(&ferry(&args));
        assert!(
            out.contains("client configuration written to"),
            "the import did not report the emitted files:\n{out}"
        );
        emit
    }

    /// containerd pulls each fixture by its source name through the emitted
    /// certs.d; the recorded digest must be the upstream's.
    fn pull_all(&self, source_host: &str, emit: &Path) {
        let certs = emit.join("containerd").join("certs.d");
        let ctd = Containerd::start().unwrap();
        for r in PULLED {
            let i = self.set.image(r);
            let reference = format!("{source_host}/{}:{}", i.repository, i.tag);
            let digest = ctd.pull(&reference, &certs, true).unwrap();
            assert_eq!(
                digest,
                i.top.digest.to_string(),
                "{reference}: containerd pulled a different digest through the mirror"
            );
        }
    }
}

fn hosts_toml(emit: &Path, host: &str) -> String {
    let p = emit
        .join("containerd")
        .join("certs.d")
        .join(host)
        .join("hosts.toml");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn containerd_pulls_docker_hub_names_through_a_mapped_mirror() {
    tools();
    let mut w = world();
    let bundle = w.export("docker.io");
    let emit = w.import(&bundle, &w.target.host(), &["--map", "docker.io=dockerhub"]);
    let toml = hosts_toml(&emit, "docker.io");
    assert!(
        toml.contains(&format!(
            "[host.\"http://{}/v2/dockerhub\"]",
            w.target.host()
        )),
        "{toml}"
    );
    assert!(toml.contains("override_path = true"), "{toml}");
    assert!(emit
        .join("kubespray/containerd_registries_mirrors.yaml")
        .exists());
    // The source is gone: only the mirror can serve the pulls.
    w.upstream.stop();
    w.pull_all("docker.io", &emit);
}

#[test]
fn containerd_pulls_through_the_default_mapping_under_a_target_prefix() {
    tools();
    let mut w = world();
    let bundle = w.export("docker.io");
    let registry = format!("{}/mirror", w.target.host());
    let emit = w.import(&bundle, &registry, &[]);
    let toml = hosts_toml(&emit, "docker.io");
    assert!(
        toml.contains(&format!(
            "[host.\"http://{}/v2/mirror/docker.io\"]",
            w.target.host()
        )),
        "{toml}"
    );
    w.upstream.stop();
    w.pull_all("docker.io", &emit);
}

#[test]
fn containerd_finds_a_source_host_with_a_port_in_its_host_port_directory() {
    tools();
    let mut w = world();
    // The upstream's own address is the source registry: host:port.
    let source = w.upstream.host();
    let bundle = w.export(&source);
    let emit = w.import(&bundle, &w.target.host(), &[]);
    let toml = hosts_toml(&emit, &source);
    assert!(
        toml.contains(&format!(
            "[host.\"http://{}/v2/{}\"]",
            w.target.host(),
            source.replace(':', "-")
        )),
        "{toml}"
    );
    // With the source down, a pull succeeds only if containerd 1.6 found
    // certs.d/<host>:<port>/hosts.toml.
    w.upstream.stop();
    w.pull_all(&source, &emit);
}

/// The embedded mirror: import into a store with `--mirror-url`, serve it
/// with `ferry serve`, and containerd pulls through the emitted hosts.toml.
#[test]
fn containerd_pulls_from_ferry_serve_through_the_emitted_config() {
    tools();
    let mut w = world();
    let bundle = w.export("docker.io");
    let store = w.dir.join("store");
    let emit = w.dir.join("emit-store");
    let port = common::free_port();
    let mirror = format!("http://127.0.0.1:{port}");
    ok(&ferry(&[
        "import",
        bundle.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--map",
        "docker.io=dockerhub",
        "--emit-config",
        emit.to_str().unwrap(),
        "--mirror-url",
        &mirror,
    ]));
    let toml = hosts_toml(&emit, "docker.io");
    assert!(
        toml.contains(&format!("[host.\"{mirror}/v2/dockerhub\"]")),
        "{toml}"
    );
    w.upstream.stop();
    let mut serve = common::serve_store(store.to_str().unwrap(), port);
    w.pull_all("docker.io", &emit);
    let _ = serve.kill();
    let _ = serve.wait();
}
