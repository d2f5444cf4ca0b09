//! The fault proxy's deterministic hooks: a request held until the test
//! releases it, and a request body cut mid-upload.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::time::Duration;

use ferry_bundle::Digest;
use ferry_testkit::proxy::{Action, Fault, FaultProxy};
use ferry_testkit::registry::{require_tool, Registry};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn start(faults: Vec<Fault>) -> (Registry, FaultProxy) {
    require_tool("docker-registry");
    let reg = Registry::start().unwrap();
    let proxy = FaultProxy::start(reg.addr(), faults);
    (reg, proxy)
}

/// Waits (without a deadline that could fail on a slow machine, but with a
/// generous one that catches a hang) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test]
async fn a_held_request_gets_no_answer_until_released_and_the_next_one_passes() {
    let (_reg, proxy) = start(vec![Fault::new(Action::Hold).on_path("/v2/")]);
    let url = format!("{}/v2/", proxy.url());
    let held = tokio::spawn({
        let url = url.clone();
        async move { http().get(&url).send().await }
    });
    until("the request to be held", || proxy.held() == 1).await;
    assert!(!held.is_finished(), "a held request was answered");
    proxy.release();
    let r = held.await.unwrap();
    assert!(r.is_err(), "a released request must end without an answer");
    // The fault is used up: the next request is forwarded.
    let r = http().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(proxy.held(), 1);
    assert_eq!(proxy.request_count(), 2);
}

#[tokio::test]
async fn a_request_cut_mid_body_reaches_the_registry_short_and_stores_nothing() {
    let (reg, proxy) = start(vec![Fault::new(Action::CutRequestAfter(100_000))
        .on_method("PUT")
        .on_path("/blobs/uploads/")]);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = Digest::of(&data);
    let c = http();
    let base = proxy.url();
    let post = |c: reqwest::Client| {
        let base = base.clone();
        let digest = digest.clone();
        async move {
            let r = c
                .post(format!("{base}/v2/t/cut/blobs/uploads/"))
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
            format!("{loc}{sep}digest={digest}")
        }
    };
    let put = post(c.clone()).await;
    let r = c
        .put(&put)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await;
    assert!(r.is_err(), "a cut upload must not get an answer: {r:?}");
    let head = c
        .head(format!("{}/v2/t/cut/blobs/{digest}", reg.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404, "a cut upload must not land");
    // A fresh session gets through whole.
    let put = post(c.clone()).await;
    let r = c
        .put(&put)
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.fault == Some(Action::CutRequestAfter(100_000)))
            .count(),
        1
    );
}

#[tokio::test]
async fn pass_lets_the_first_requests_through_before_the_next_fault() {
    let (_reg, proxy) = start(vec![
        Fault::new(Action::Pass).on_path("/v2/").times(2),
        Fault::new(Action::Status(503)).on_path("/v2/"),
    ]);
    let url = format!("{}/v2/", proxy.url());
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(http().get(&url).send().await.unwrap().status().as_u16());
    }
    assert_eq!(codes, vec![200, 200, 503, 200]);
    assert_eq!(proxy.faults_applied(), 1);
}
