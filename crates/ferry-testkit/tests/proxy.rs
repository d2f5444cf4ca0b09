//! The fault-injecting proxy in front of a real registry: forwards unchanged,
//! injects statuses, 429 with Retry-After, cuts and stalls, and streams large
//! uploads.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::time::{Duration, Instant};

use ferry_bundle::Digest;
use ferry_testkit::proxy::{Action, Fault, FaultProxy};
use ferry_testkit::registry::{require_tool, Registry};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Uploads `data` as a blob of `repo` at `base` with POST + PUT; returns the PUT status.
async fn upload(base: &str, repo: &str, data: Vec<u8>) -> (Digest, u16) {
    let digest = Digest::of(&data);
    let c = http();
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = location(base, &r);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{loc}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap();
    (digest, r.status().as_u16())
}

fn location(base: &str, r: &reqwest::Response) -> String {
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    if loc.starts_with('/') {
        format!("{base}{loc}")
    } else {
        loc
    }
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn start(faults: Vec<Fault>) -> (Registry, FaultProxy) {
    require_tool("docker-registry");
    let reg = Registry::start().unwrap();
    let proxy = FaultProxy::start(reg.addr(), faults);
    (reg, proxy)
}

#[tokio::test]
async fn requests_without_a_fault_are_forwarded_unchanged() {
    let (reg, proxy) = start(vec![]);
    let r = http()
        .get(format!("{}/v2/", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert_eq!(r.headers()["connection"], "close");
    // An upload through the proxy lands in the registry behind it, and the
    // upload session's Location points back at the proxy.
    let data = b"through the proxy".to_vec();
    let (digest, status) = upload(&proxy.url(), "t/fwd", data.clone()).await;
    assert_eq!(status, 201);
    let got = http()
        .get(format!("{}/v2/t/fwd/blobs/{digest}", reg.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], &data[..]);
    assert_eq!(proxy.request_count(), 3);
    let methods: Vec<String> = proxy.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["GET", "POST", "PUT"]);
    assert_eq!(proxy.faults_applied(), 0);
}

#[tokio::test]
async fn a_status_fault_answers_an_oci_error_then_lets_requests_through() {
    let (_reg, proxy) = start(vec![Fault::new(Action::Status(503))
        .on_path("/v2/")
        .times(2)]);
    let c = http();
    for _ in 0..2 {
        let r = c.get(format!("{}/v2/", proxy.url())).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["errors"][0]["code"], "UNKNOWN");
        assert!(body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("503"));
    }
    let r = c.get(format!("{}/v2/", proxy.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(proxy.request_count(), 3);
    assert_eq!(proxy.faults_applied(), 2);
    assert_eq!(proxy.faults()[0].times, 0);
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let (_reg, proxy) = start(vec![Fault::new(Action::TooManyRequests {
        retry_after_secs: 3,
    })]);
    let r = http()
        .get(format!("{}/v2/", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    let r = http()
        .get(format!("{}/v2/", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn faults_match_on_method_and_path_in_order() {
    let (_reg, proxy) = start(vec![
        Fault::new(Action::Status(500))
            .on_method("PUT")
            .on_path("/blobs/uploads/"),
        Fault::new(Action::Status(502)).on_method("PUT"),
    ]);
    // GET and POST pass; the first PUT gets the first fault (after its body
    // was read, so the client sees the answer), the second PUT the second.
    let (_, status) = upload(&proxy.url(), "t/order", pseudo_random(300_000)).await;
    assert_eq!(status, 500);
    let (_, status) = upload(&proxy.url(), "t/order", pseudo_random(1000)).await;
    assert_eq!(status, 502);
    let (digest, status) = upload(&proxy.url(), "t/order", pseudo_random(1000)).await;
    assert_eq!(status, 201);
    let head = http()
        .head(format!("{}/v2/t/order/blobs/{digest}", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let faulted: Vec<Option<Action>> = proxy.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faulted,
        [
            None,
            Some(Action::Status(500)),
            None,
            Some(Action::Status(502)),
            None,
            None,
            None
        ]
    );
}

#[tokio::test]
async fn a_cut_closes_the_response_after_the_given_body_bytes() {
    let (reg, proxy) = start(vec![Fault::new(Action::CutAfter(1000))
        .on_method("GET")
        .on_path("/blobs/sha256:")]);
    let data = pseudo_random(1 << 20);
    let (digest, status) = upload(&reg.url(), "t/cut", data.clone()).await;
    assert_eq!(status, 201);
    let url = format!("{}/v2/t/cut/blobs/{digest}", proxy.url());
    let r = http().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(1 << 20));
    assert!(
        r.bytes().await.is_err(),
        "a cut body must not read as complete"
    );
    // The next GET is whole.
    let got = http()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(Digest::of(&got), digest);
}

#[tokio::test]
async fn a_stall_says_nothing_until_the_client_gives_up() {
    let (_reg, proxy) = start(vec![Fault::new(Action::Stall(Duration::from_secs(5)))]);
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let t = Instant::now();
    let r = c.get(format!("{}/v2/", proxy.url())).send().await;
    assert!(r.unwrap_err().is_timeout());
    assert!(t.elapsed() < Duration::from_secs(3));
    let r = http()
        .get(format!("{}/v2/", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn large_uploads_stream_through_the_proxy() {
    let (reg, proxy) = start(vec![]);
    // A chunked upload: POST, one 24 MiB PATCH, then PUT.
    let data = pseudo_random(24 << 20);
    let digest = Digest::of(&data);
    let c = http();
    let base = proxy.url();
    let r = c
        .post(format!("{base}/v2/t/big/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = location(&base, &r);
    let r = c
        .patch(&loc)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", data.len() - 1))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let loc = location(&base, &r);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{loc}{sep}digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let head = c
        .head(format!("{}/v2/t/big/blobs/{digest}", reg.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        (24u64 << 20).to_string().as_str()
    );
}
