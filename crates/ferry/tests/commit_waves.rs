//! The commit's waves under a fault: items that share no manifest push side
//! by side (`--jobs`), so a registry outage meets several pushes at once.
//! An item whose push failed in a wave is pushed once more alone after the
//! wave; the import then lands everything, counts each manifest once, and
//! reports outcomes in plan order.
//!
//! The outage is made deterministic with the fault proxy: the first
//! manifest PUT is held (the registry "restarting"), and every try of the
//! other push of its wave (`--jobs 2`) fails with 500 until its retries are
//! spent; only then is the held PUT released.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{ferry, ok, upstream_with};
use ferry_bundle::Digest;
use ferry_testkit::fixtures::FixtureOptions;
use ferry_testkit::proxy::{Action, Fault, FaultProxy};
use ferry_testkit::registry::Registry;

/// Tries per request (`--attempts`): the 500s below spend them all.
const ATTEMPTS: usize = 3;

#[test]
fn a_push_that_failed_beside_an_outage_is_pushed_again_alone() {
    let (upstream, set) = upstream_with(&FixtureOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = String::from("apiVersion: ferry.dev/v1\nname: waves\nimages:\n");
    for r in set.references(&upstream.host()) {
        spec.push_str(&format!("  - {r}\n"));
    }
    let spec_path = tmp.path().join("bundle.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let bundle = tmp.path().join("b.tar.zst");
    let bundle_s = bundle.to_str().unwrap();
    ok(&ferry(&[
        "export",
        "-f",
        spec_path.to_str().unwrap(),
        "-o",
        bundle_s,
        "--no-cache",
    ]));

    let target = Registry::start().unwrap();
    let puts = "/manifests/";
    let proxy = FaultProxy::start(
        target.addr(),
        vec![
            Fault::new(Action::Hold).on_method("PUT").on_path(puts),
            Fault::new(Action::Status(500))
                .on_method("PUT")
                .on_path(puts)
                .times(ATTEMPTS),
        ],
    );
    let host = proxy.host();
    let out = tmp.path().join("out");
    let err = tmp.path().join("err");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--json", "import", bundle_s, "--registry", &host])
        .args(["--jobs", "2", "--attempts", &ATTEMPTS.to_string()])
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // The held PUT and every try of the push beside it; the limit only
    // catches a hang.
    let mut waited = 0;
    while (proxy.held() == 0 || proxy.faults_applied() < 1 + ATTEMPTS)
        && child.try_wait().unwrap().is_none()
    {
        assert!(waited < 60_000, "the held PUT and the 500s never came");
        std::thread::sleep(Duration::from_millis(10));
        waited += 10;
    }
    assert_eq!(proxy.held(), 1, "the first manifest PUT is held");
    assert_eq!(
        proxy.faults_applied(),
        1 + ATTEMPTS,
        "the push beside the held one spent its {ATTEMPTS} tries on 500s"
    );
    proxy.release();
    let status = child.wait().unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let text = format!("{stdout}{}", std::fs::read_to_string(&err).unwrap());
    assert!(status.success(), "the import failed ({status}):\n{text}");

    // Everything landed with the upstream digests.
    let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let prefix = upstream.host().replace(':', "-");
    for i in &set.images {
        let repo = ferry_registry::Repo {
            host: target.host(),
            path: format!("{prefix}/{}", i.repository),
        };
        let got = rt
            .block_on(client.get_manifest(&repo, &i.tag))
            .unwrap_or_else(|e| panic!("{}:{} is not at the target: {e}", repo.path, i.tag));
        assert_eq!(
            Digest::of(&got.bytes),
            i.top.digest,
            "{}:{}",
            repo.path,
            i.tag
        );
    }

    // Each manifest counted once, as pushed (what the first try of the
    // failed push sent is not "present"); outcomes in plan order, which
    // is the bundle's order of references here.
    let done: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "imported")
        .unwrap_or_else(|| panic!("no imported event:\n{text}"));
    let all = set.all_manifests().count() as u64;
    assert_eq!(done["manifestsPushed"], all, "{text}");
    assert_eq!(done["manifestsPresent"], 0, "{text}");
    assert_eq!(done["failed"].as_array().map(Vec::len), Some(0), "{text}");
    let loaded: Vec<&str> = done["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["source"].as_str().unwrap())
        .collect();
    let mut in_order = loaded.clone();
    in_order.sort();
    assert_eq!(loaded, in_order, "outcomes in plan order");
    assert_eq!(loaded.len(), set.images.len());
}
