//! `Client::upload_blob_streamed`: one streamed PUT per blob against a real
//! registry (plain, htpasswd over TLS), through fault proxies for 5xx, 429,
//! a refused PUT, a reset in the middle of the body and a lost answer.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_bundle::digest::Digest;
use ferry_registry::{Client, ClientConfig, Credentials, HostConfig, Repo};
use ferry_testkit::proxy::{Action as Fault, Fault as FaultRule, FaultProxy};

use common::{bytes_of, fast_config, registry, Action, Proxy, Seen};

/// A client whose streamed uploads keep at most `window` bytes for a resend.
fn client_with_window(window: u64) -> Client {
    Client::new(ClientConfig {
        chunk_size: window,
        ..fast_config()
    })
    .unwrap()
}

/// Sends `data` in `piece`-byte chunks on a channel, as the import does.
fn chunks_of(data: &[u8], piece: usize) -> tokio::sync::mpsc::Receiver<Bytes> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let owned: Vec<Bytes> = data.chunks(piece).map(Bytes::copy_from_slice).collect();
    tokio::spawn(async move {
        for c in owned {
            if tx.send(c).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The blob's bytes as the registry serves them.
async fn fetched(c: &Client, repo: &Repo, d: &Digest, size: u64) -> Vec<u8> {
    let mut s = c.get_blob(repo, d, Some(size)).await.unwrap();
    let mut out = Vec::new();
    use futures_util::StreamExt;
    while let Some(piece) = s.next().await {
        out.extend_from_slice(&piece.unwrap());
    }
    out
}

fn puts_with_body(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| s.method == "PUT" && s.header("content-length") != Some("0"))
        .collect()
}

#[tokio::test]
async fn a_blob_goes_as_one_put_with_the_whole_body() {
    let reg = registry();
    let proxy = Proxy::start(Some(reg.addr), |_: &Seen| Action::Forward).await;
    let c = client_with_window(64 << 10);
    let repo = proxy.repo("ferry/streamed");
    let data = bytes_of(1_500_000, 41);
    let d = Digest::of(&data);
    c.upload_blob_streamed(&repo, &d, data.len() as u64, chunks_of(&data, 100_000))
        .await
        .unwrap();
    let seen = proxy.seen();
    assert_eq!(proxy.count("POST", "/blobs/uploads/"), 1);
    assert_eq!(proxy.count("PATCH", "/blobs/uploads/"), 0, "no chunks");
    let puts = puts_with_body(&seen);
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].header("content-length"), Some("1500000"));
    assert!(puts[0].target.contains(&format!("digest={d}")));
    assert_eq!(puts[0].body, data, "the body is the blob, in order");
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), Some(1_500_000));
    assert_eq!(fetched(&c, &repo, &d, 1_500_000).await, data);
}

#[tokio::test]
async fn a_5xx_answered_while_the_blob_is_still_held_is_retried_on_a_new_session() {
    let reg = registry();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n2 = n.clone();
    let proxy = Proxy::start(Some(reg.addr), move |s: &Seen| {
        if s.method == "PUT" && n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Action::status(503)
        } else {
            Action::Forward
        }
    })
    .await;
    // The whole blob fits the resend window.
    let c = client_with_window(1 << 20);
    let repo = proxy.repo("ferry/streamed-503");
    let data = bytes_of(300_000, 42);
    let d = Digest::of(&data);
    c.upload_blob_streamed(&repo, &d, data.len() as u64, chunks_of(&data, 64_000))
        .await
        .unwrap();
    assert_eq!(proxy.count("POST", "/blobs/uploads/"), 2, "a new session");
    let seen = proxy.seen();
    let puts = puts_with_body(&seen);
    assert_eq!(puts.len(), 2);
    assert!(puts.iter().all(|p| p.body == data), "the same bytes twice");
    assert_eq!(fetched(&c, &repo, &d, 300_000).await, data);
}

#[tokio::test]
async fn a_429_with_retry_after_is_honoured_before_the_resend() {
    let reg = registry();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n2 = n.clone();
    let proxy = Proxy::start(Some(reg.addr), move |s: &Seen| {
        if s.method == "PUT" && n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Action::status(429).with_header("Retry-After", "1")
        } else {
            Action::Forward
        }
    })
    .await;
    let c = client_with_window(1 << 20);
    let repo = proxy.repo("ferry/streamed-429");
    let data = bytes_of(200_000, 43);
    let d = Digest::of(&data);
    let t = Instant::now();
    c.upload_blob_streamed(&repo, &d, data.len() as u64, chunks_of(&data, 50_000))
        .await
        .unwrap();
    // fast_config's backoff starts at 10 ms: only Retry-After explains a second.
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(puts_with_body(&proxy.seen()).len(), 2);
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), Some(200_000));
}

#[tokio::test]
async fn a_5xx_after_the_held_bytes_fails_and_the_blob_is_not_reported_present() {
    let reg = registry();
    // The proxy reads the whole body, then answers 503 itself: the blob
    // never reaches the registry, and the client no longer holds it.
    let proxy = FaultProxy::start(
        reg.addr,
        vec![FaultRule::new(Fault::Status(503)).on_method("PUT").always()],
    );
    let c = client_with_window(64 << 10);
    let repo = Repo {
        host: proxy.host(),
        path: "ferry/streamed-lost".into(),
    };
    let data = bytes_of(1_000_000, 44);
    let d = Digest::of(&data);
    let e = c
        .upload_blob_streamed(&repo, &d, data.len() as u64, chunks_of(&data, 100_000))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&d.to_string()), "{msg}");
    assert!(msg.contains("ferry/streamed-lost"), "{msg}");
    assert!(msg.contains("upload the blob again"), "{msg}");
    let puts = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(puts, 1, "no resend without the bytes");
    let direct = Repo {
        host: reg.host(),
        path: "ferry/streamed-lost".into(),
    };
    assert_eq!(c.head_blob(&direct, &d).await.unwrap(), None);
}

#[tokio::test]
async fn a_reset_in_the_middle_of_the_put_fails_and_nothing_lands() {
    let reg = registry();
    let proxy = FaultProxy::start(
        reg.addr,
        vec![FaultRule::new(Fault::CutRequestAfter(400_000))
            .on_method("PUT")
            .always()],
    );
    let c = client_with_window(64 << 10);
    let repo = Repo {
        host: proxy.host(),
        path: "ferry/streamed-reset".into(),
    };
    let data = bytes_of(2_000_000, 45);
    let d = Digest::of(&data);
    let e = c
        .upload_blob_streamed(&repo, &d, data.len() as u64, chunks_of(&data, 100_000))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&d.to_string()), "{msg}");
    assert!(msg.contains("upload the blob again"), "{msg}");
    let direct = Repo {
        host: reg.host(),
        path: "ferry/streamed-reset".into(),
    };
    assert_eq!(c.head_blob(&direct, &d).await.unwrap(), None);
}

#[tokio::test]
async fn a_reset_while_the_blob_is_still_held_is_retried() {
    let reg = registry();
    let proxy = FaultProxy::start(
        reg.addr,
        vec![FaultRule::new(Fault::CutRequestAfter(50_000)).on_method("PUT")],
    );
    let c = client_with_window(1 << 20);
    let repo = Repo {
        host: proxy.host(),
        path: "ferry/streamed-reset-held".into(),
    };
    let data = bytes_of(300_000, 46);
    let d = Digest::of(&data);
    c.upload_blob_streamed(&repo, &d, data.len() as u64, chunks_of(&data, 100_000))
        .await
        .unwrap();
    assert_eq!(proxy.faults_applied(), 1);
    assert_eq!(fetched(&c, &repo, &d, 300_000).await, data);
}

#[tokio::test]
async fn a_lost_answer_after_the_whole_body_counts_only_if_the_registry_has_the_blob() {
    let reg = registry();
    let proxy = Proxy::start(Some(reg.addr), |s: &Seen| {
        if s.method == "PUT" {
            Action::ForwardThenDrop
        } else {
            Action::Forward
        }
    })
    .await;
    let c = client_with_window(64 << 10);
    let repo = proxy.repo("ferry/streamed-lost-201");
    let data = bytes_of(500_000, 47);
    let d = Digest::of(&data);
    c.upload_blob_streamed(&repo, &d, data.len() as u64, chunks_of(&data, 100_000))
        .await
        .unwrap();
    assert_eq!(puts_with_body(&proxy.seen()).len(), 1);
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), Some(500_000));
    assert_eq!(fetched(&c, &repo, &d, 500_000).await, data);
}

#[tokio::test]
async fn a_registry_refusing_a_large_put_gets_the_blob_in_chunks_from_then_on() {
    let reg = registry();
    let proxy = Proxy::start(Some(reg.addr), |s: &Seen| {
        if s.method == "PUT" && s.header("content-length") != Some("0") {
            Action::status(413)
        } else {
            Action::Forward
        }
    })
    .await;
    let c = client_with_window(4 << 20);
    let repo = proxy.repo("ferry/streamed-413");
    let data = bytes_of(400_000, 48);
    let d = Digest::of(&data);
    c.upload_blob_streamed(&repo, &d, data.len() as u64, chunks_of(&data, 100_000))
        .await
        .unwrap();
    assert_eq!(puts_with_body(&proxy.seen()).len(), 1, "one refused PUT");
    assert_eq!(proxy.count("PATCH", "/blobs/uploads/"), 4, "then chunks");
    assert_eq!(fetched(&c, &repo, &d, 400_000).await, data);
    // The next blob to that host goes in chunks at once.
    let other = bytes_of(200_000, 49);
    let od = Digest::of(&other);
    c.upload_blob_streamed(&repo, &od, other.len() as u64, chunks_of(&other, 100_000))
        .await
        .unwrap();
    assert_eq!(puts_with_body(&proxy.seen()).len(), 1);
    assert_eq!(proxy.count("PATCH", "/blobs/uploads/"), 6);
    assert_eq!(fetched(&c, &repo, &od, 200_000).await, other);
}

#[tokio::test]
async fn chunks_that_are_not_the_blob_fail_and_nothing_lands() {
    let reg = registry();
    let c = client_with_window(64 << 10);
    let repo = reg.repo("ferry/streamed-bad");
    let data = bytes_of(300_000, 50);
    let d = Digest::of(&data);
    // Other bytes of the right size.
    let wrong = bytes_of(300_000, 51);
    let e = c
        .upload_blob_streamed(&repo, &d, 300_000, chunks_of(&wrong, 100_000))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the chunks hash to"), "{e}");
    // Fewer bytes than announced.
    let e = c
        .upload_blob_streamed(&repo, &d, 300_000, chunks_of(&data[..200_000], 100_000))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("ended after 200000 of 300000"),
        "{e}"
    );
    // More bytes than announced, the announced ones hashing right: the
    // blob is never completed.
    let head = Digest::of(&data[..200_000]);
    let e = c
        .upload_blob_streamed(&repo, &head, 200_000, chunks_of(&data, 100_000))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than the announced"), "{e}");
    assert_eq!(c.head_blob(&repo, &head).await.unwrap(), None);
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), None);
    assert_eq!(c.head_blob(&repo, &Digest::of(&wrong)).await.unwrap(), None);
}

#[tokio::test]
async fn a_streamed_put_reaches_an_htpasswd_registry_over_tls() {
    common::registry_available();
    let dir = tempfile::tempdir().unwrap();
    let pki = ferry_testkit::pki::Pki::generate(dir.path()).unwrap();
    let reg =
        ferry_testkit::registry::Registry::start_with(ferry_testkit::registry::RegistryOptions {
            tls: Some((pki.cert.clone(), pki.key.clone())),
            htpasswd: Some(("pusher".into(), "push-pw".into())),
            ..Default::default()
        })
        .unwrap();
    let host = reg.host();
    let mut hosts = std::collections::HashMap::new();
    hosts.insert(
        host.clone(),
        HostConfig {
            https: true,
            ca_file: Some(pki.ca.clone()),
            credentials: Some(Credentials {
                username: "pusher".into(),
                password: "push-pw".into(),
            }),
            ..HostConfig::default()
        },
    );
    let c = Client::new(ClientConfig {
        hosts,
        chunk_size: 64 << 10,
        ..fast_config()
    })
    .unwrap();
    let repo = Repo {
        host: host.clone(),
        path: "ferry/streamed-tls".into(),
    };
    let data = bytes_of(1_200_000, 52);
    let d = Digest::of(&data);
    c.upload_blob_streamed(&repo, &d, data.len() as u64, chunks_of(&data, 100_000))
        .await
        .unwrap();
    assert_eq!(fetched(&c, &repo, &d, 1_200_000).await, data);
    // Without the password the registry refuses, and nothing is reported present.
    let mut anon_hosts = std::collections::HashMap::new();
    anon_hosts.insert(
        host.clone(),
        HostConfig {
            https: true,
            ca_file: Some(pki.ca.clone()),
            ..HostConfig::default()
        },
    );
    let anon = Client::new(ClientConfig {
        hosts: anon_hosts,
        chunk_size: 64 << 10,
        ..fast_config()
    })
    .unwrap();
    let other = bytes_of(100_000, 53);
    let od = Digest::of(&other);
    let e = anon
        .upload_blob_streamed(&repo, &od, other.len() as u64, chunks_of(&other, 50_000))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert_eq!(c.head_blob(&repo, &od).await.unwrap(), None);
}

#[tokio::test]
async fn credentials_stay_with_their_origin_when_the_upload_goes_elsewhere() {
    // Storage on another origin takes the PUT; it must not see the password.
    let storage = Proxy::start(None, |s: &Seen| {
        if s.method == "PUT" {
            Action::status(201)
                .with_header("Docker-Content-Digest", &Digest::of(&s.body).to_string())
        } else {
            Action::status(404)
        }
    })
    .await;
    let storage_host = storage.host();
    let registry = Proxy::start(None, move |s: &Seen| {
        if s.header("authorization").is_none() {
            return Action::status(401).with_header("WWW-Authenticate", "Basic realm=\"r\"");
        }
        match s.method.as_str() {
            "POST" => Action::status(202).with_header(
                "Location",
                &format!("http://{storage_host}/upload/session-1?sig=abc"),
            ),
            _ => Action::status(404),
        }
    })
    .await;
    let mut config = fast_config();
    config.hosts.insert(
        registry.host(),
        HostConfig {
            credentials: Some(Credentials {
                username: "u".into(),
                password: "secret-pw".into(),
            }),
            ..HostConfig::default()
        },
    );
    let c = Client::new(config).unwrap();
    let data = bytes_of(100_000, 54);
    let d = Digest::of(&data);
    c.upload_blob_streamed(
        &registry.repo("ferry/elsewhere"),
        &d,
        data.len() as u64,
        chunks_of(&data, 30_000),
    )
    .await
    .unwrap();
    let posts: Vec<Seen> = registry
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert!(posts.iter().any(|s| s.header("authorization").is_some()));
    let puts = storage.seen();
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].header("authorization"),
        None,
        "no credentials off origin"
    );
    assert_eq!(puts[0].body, data);
    assert!(puts[0].target.contains(&format!("sig=abc&digest={d}")));
}
