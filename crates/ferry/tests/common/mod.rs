//! What the CLI suites share: run the `ferry` binary with a clean
//! environment (no docker config, no credentials from the caller's shell),
//! and read its output.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(dead_code)]

pub mod cosign;
pub mod crafted;

use std::process::{Command, Output};

/// Runs `ferry args` with `envs` set, and nothing of the caller's docker
/// config or ferry credentials.
pub fn ferry_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.args(args)
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD")
        .env_remove("FERRY_EMIT_PASSWORD");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run ferry")
}

/// Runs `ferry args`.
pub fn ferry(args: &[&str]) -> Output {
    ferry_env(args, &[])
}

/// stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The output of a run that must have succeeded.
#[track_caller]
pub fn ok(o: &Output) -> String {
    let t = text(o);
    assert!(
        o.status.success(),
        "ferry failed ({:?}):\n{t}",
        o.status.code()
    );
    t
}

/// The output of a run that must have ended with exit `code`.
#[track_caller]
pub fn fails(o: &Output, code: i32) -> String {
    let t = text(o);
    assert_eq!(o.status.code(), Some(code), "expected exit {code}:\n{t}");
    t
}

/// A refused `export --from` left nothing beside its output `out`: no
/// output file or part of it, no staging directory.
#[track_caller]
pub fn assert_no_reexport_output(out: &std::path::Path) {
    let stem = out.file_name().unwrap().to_str().unwrap();
    let left: Vec<String> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(stem) || n.starts_with(".ferry-reexport-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// An upstream `docker-registry` holding the fixture set made with `opts`
/// (pushed by ferry's own client).
pub fn upstream_with(
    opts: &ferry_testkit::fixtures::FixtureOptions,
) -> (
    ferry_testkit::registry::Registry,
    ferry_testkit::fixtures::FixtureSet,
) {
    ferry_testkit::registry::require_tool("docker-registry");
    let registry = ferry_testkit::registry::Registry::start().expect("start docker-registry");
    let set = ferry_testkit::fixtures::FixtureSet::generate(opts);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default())
        .expect("registry client");
    rt.block_on(ferry_testkit::fixtures::push(
        &set,
        &client,
        &registry.host(),
    ))
    .expect("push the fixtures");
    (registry, set)
}

/// `ferry --json inspect BUNDLE`, which must succeed: (ref, subject) of
/// every item.
#[track_caller]
pub fn inspect_items(bundle: &str) -> Vec<(String, Option<String>)> {
    let o = ferry(&["--json", "inspect", bundle]);
    ok(&o);
    let v = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "inspect")
        .expect("an inspect event");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["ref"].as_str().unwrap().to_string(),
                i["subject"].as_str().map(String::from),
            )
        })
        .collect()
}

/// Uploads `data` to `repo`: its digest and size.
pub async fn put_blob(
    client: &ferry_registry::Client,
    repo: &ferry_registry::Repo,
    data: &[u8],
) -> (ferry_bundle::Digest, usize) {
    let d = ferry_bundle::Digest::of(data);
    client
        .upload_blob(repo, &d, bytes::Bytes::copy_from_slice(data))
        .await
        .unwrap();
    (d, data.len())
}

/// A TCP port free on 127.0.0.1 when asked.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ferry serve STORE --listen 127.0.0.1:PORT`, once it accepts
/// connections (at most 20 s); the caller stops it.
pub fn serve_store(store: &str, port: u16) -> std::process::Child {
    let serve = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", store, "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_serving(port);
    serve
}

/// Waits until `ferry serve` accepts connections on `127.0.0.1:PORT` (at
/// most 20 s).
pub fn wait_serving(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "ferry serve did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
