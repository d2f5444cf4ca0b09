//! Retries, through a fault-injecting proxy in front of a real registry.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_bundle::digest::Digest;
use ferry_bundle::manifest::OCI_MANIFEST;
use ferry_registry::{Client, Repo};

use common::{bytes_of, fast_config, files_in, registry, Action, Proxy, Seen};

fn client() -> Client {
    Client::new(fast_config()).unwrap()
}

/// A rule that applies `fault` to the first `times` requests matching
/// `method` + path fragment, and forwards everything else.
fn first_n(
    times: usize,
    method: &'static str,
    path_contains: &'static str,
    fault: impl Fn() -> Action + Send + Sync + 'static,
) -> impl Fn(&Seen) -> Action + Send + Sync + 'static {
    let n = AtomicUsize::new(0);
    move |s: &Seen| {
        if s.method == method
            && s.path().contains(path_contains)
            && n.fetch_add(1, Ordering::SeqCst) < times
        {
            fault()
        } else {
            Action::Forward
        }
    }
}

async fn push_small_manifest(c: &Client, repo: &Repo, tag: &str) -> Bytes {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    c.upload_blob(repo, &Digest::of(config), Bytes::from_static(config))
        .await
        .unwrap();
    let m = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{}"}},"layers":[]}}"#,
        config.len(),
        Digest::of(config)
    ));
    c.put_manifest(repo, tag, OCI_MANIFEST, m.clone())
        .await
        .unwrap();
    m
}

/// Collects log output (the test runtime is single-threaded, so a
/// thread-local subscriber sees the client's events).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn manifest_get_is_retried_after_two_503s_and_each_retry_is_logged() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let reg = registry();
    let proxy = Proxy::start(
        Some(reg.addr),
        first_n(2, "GET", "/manifests/v1", || Action::status(503)),
    )
    .await;
    let c = client();
    let m = push_small_manifest(&c, &proxy.repo("ferry/r503"), "v1").await;
    let got = c
        .get_manifest(&proxy.repo("ferry/r503"), "v1")
        .await
        .unwrap();
    assert_eq!(got.bytes, m);
    assert_eq!(
        proxy.count("GET", "/manifests/v1"),
        3,
        "two 503s, then success"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let retries: Vec<&str> = text.lines().filter(|l| l.contains("retrying")).collect();
    assert_eq!(retries.len(), 2, "{text}");
    let url = format!("GET http://{}/v2/ferry/r503/manifests/v1", proxy.host());
    assert!(retries[0].contains(&url), "{text}");
    assert!(retries[0].contains("503 Service Unavailable"), "{text}");
    assert!(retries[0].contains("(attempt 2/3)"), "{text}");
    assert!(retries[1].contains("(attempt 3/3)"), "{text}");
}

#[tokio::test]
async fn a_429_with_retry_after_is_honoured() {
    let reg = registry();
    let proxy = Proxy::start(
        Some(reg.addr),
        first_n(1, "GET", "/manifests/v1", || {
            Action::json(
                429,
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
            )
            .with_header("Retry-After", "1")
        }),
    )
    .await;
    let c = client();
    let repo = proxy.repo("ferry/r429");
    push_small_manifest(&c, &repo, "v1").await;
    let start = Instant::now();
    c.get_manifest(&repo, "v1").await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    assert_eq!(proxy.count("GET", "/manifests/v1"), 2);
}

#[tokio::test]
async fn persistent_503_gives_up_after_max_attempts() {
    let reg = registry();
    let proxy = Proxy::start(
        Some(reg.addr),
        first_n(usize::MAX, "GET", "/manifests/v1", || Action::status(503)),
    )
    .await;
    let c = client();
    let e = c
        .get_manifest(&proxy.repo("ferry/down"), "v1")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(503), "{e}");
    assert!(e.is_retryable());
    assert_eq!(proxy.count("GET", "/manifests/v1"), 3, "max_attempts = 3");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let reg = registry();
    let proxy = Proxy::start(Some(reg.addr), |_: &Seen| Action::Forward).await;
    let c = client();
    let e = c
        .get_manifest(&proxy.repo("ferry/none"), "missing")
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(proxy.count("GET", "/manifests/missing"), 1);
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported_with_the_url() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = client();
    let repo = Repo {
        host: format!("127.0.0.1:{port}"),
        path: "a".into(),
    };
    let e = c.head_blob(&repo, &Digest::of(b"x")).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.status().is_none());
    assert!(
        e.to_string()
            .starts_with(&format!("HEAD http://127.0.0.1:{port}/v2/a/blobs/sha256:")),
        "{e}"
    );
}

#[tokio::test]
async fn download_cut_mid_body_resumes_with_a_range_request() {
    let reg = registry();
    let proxy = Proxy::start(
        Some(reg.addr),
        first_n(1, "GET", "/blobs/sha256:", || {
            Action::ForwardTruncated(300_000)
        }),
    )
    .await;
    let c = client();
    let repo = proxy.repo("ferry/cut");
    let data = bytes_of(1_000_000, 21);
    let d = Digest::of(&data);
    c.upload_blob(&repo, &d, Bytes::from(data.clone()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let reported = AtomicUsize::new(0);
    let progress = |n: u64| {
        reported.fetch_add(n as usize, Ordering::SeqCst);
    };
    let n = c
        .download_blob(&repo, &d, Some(data.len() as u64), &dest, Some(&progress))
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(reported.into_inner(), data.len(), "each byte reported once");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(files_in(dir.path()), vec!["blob".to_string()]);
    let gets: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path().contains("/blobs/"))
        .collect();
    assert_eq!(gets.len(), 2, "one cut transfer, one resumed");
    let range = gets[1].header("range").expect("the retry asks for a range");
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .unwrap()
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 300_000, "{range}");
}

#[tokio::test]
async fn get_blob_stream_reports_a_cut_body_as_an_error_item() {
    let reg = registry();
    let proxy = Proxy::start(
        Some(reg.addr),
        first_n(1, "GET", "/blobs/sha256:", || {
            Action::ForwardTruncated(1000)
        }),
    )
    .await;
    let c = client();
    let repo = proxy.repo("ferry/cut-stream");
    let data = bytes_of(100_000, 22);
    let d = Digest::of(&data);
    c.upload_blob(&repo, &d, Bytes::from(data)).await.unwrap();
    let mut s = c.get_blob(&repo, &d, None).await.unwrap();
    let mut failed = None;
    use futures_util::StreamExt;
    while let Some(item) = s.next().await {
        if let Err(e) = item {
            failed = Some(e);
        }
    }
    let e = failed.expect("the cut must surface");
    assert!(e.is_retryable(), "{e}");
}

#[tokio::test]
async fn upload_blob_retries_the_whole_sequence_after_a_failed_put() {
    let reg = registry();
    let proxy = Proxy::start(
        Some(reg.addr),
        first_n(1, "PUT", "/blobs/uploads/", || Action::status(502)),
    )
    .await;
    let c = client();
    let repo = proxy.repo("ferry/put-retry");
    let data = bytes_of(50_000, 23);
    let d = Digest::of(&data);
    c.upload_blob(&repo, &d, Bytes::from(data)).await.unwrap();
    assert_eq!(proxy.count("POST", "/blobs/uploads/"), 2, "a new session");
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 2);
    let put = proxy
        .seen()
        .into_iter()
        .find(|s| s.method == "PUT")
        .unwrap();
    assert!(
        put.target.contains(&format!("digest={d}")),
        "{}",
        put.target
    );
    assert!(
        put.target.contains("_state="),
        "the Location's query is kept"
    );
    assert_eq!(put.header("content-type"), Some("application/octet-stream"));
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), Some(50_000));
}

#[tokio::test]
async fn chunked_upload_resends_a_chunk_after_a_503() {
    let reg = registry();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let proxy = Proxy::start(Some(reg.addr), move |s: &Seen| {
        // The second PATCH fails once without reaching the registry.
        if s.method == "PATCH" && n2.fetch_add(1, Ordering::SeqCst) == 1 {
            Action::status(503)
        } else {
            Action::Forward
        }
    })
    .await;
    let c = client();
    let repo = proxy.repo("ferry/patch-503");
    let data = bytes_of(300_000, 24);
    let d = Digest::of(&data);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for chunk in data.chunks(100_000) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    drop(tx);
    c.upload_blob_chunked(&repo, &d, data.len() as u64, rx)
        .await
        .unwrap();
    let patches: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "PATCH")
        .collect();
    let ranges: Vec<&str> = patches
        .iter()
        .map(|p| p.header("content-range").unwrap())
        .collect();
    assert_eq!(
        ranges,
        vec!["0-99999", "100000-199999", "100000-199999", "200000-299999"]
    );
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), Some(300_000));
    assert_eq!(
        c.get_manifest(&repo, "none").await.unwrap_err().status(),
        Some(404)
    );
}

#[tokio::test]
async fn chunked_upload_to_registry_2_8_fails_clearly_when_an_accepted_patch_loses_its_answer() {
    // Distribution signs the offset into each Location (`_state`): after a
    // lost answer the older Location is refused, so the session cannot go
    // on. The client must say so instead of retrying blindly.
    let reg = registry();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let proxy = Proxy::start(Some(reg.addr), move |s: &Seen| {
        if s.method == "PATCH" && n2.fetch_add(1, Ordering::SeqCst) == 1 {
            Action::ForwardThenDrop
        } else {
            Action::Forward
        }
    })
    .await;
    let c = client();
    let repo = proxy.repo("ferry/patch-lost");
    let data = bytes_of(300_000, 25);
    let d = Digest::of(&data);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for chunk in data.chunks(100_000) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    drop(tx);
    let e = c
        .upload_blob_chunked(&repo, &d, data.len() as u64, rx)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&d.to_string()) && msg.contains("ferry/patch-lost"),
        "{msg}"
    );
    assert!(msg.contains("bytes 100000-199999"), "{msg}");
    assert!(msg.contains("cannot be resumed"), "{msg}");
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), None);
}

/// Collects what `stream_blob` sends: the pieces, and whether the verified
/// end (an empty piece) came.
async fn collect(mut rx: tokio::sync::mpsc::Receiver<Bytes>) -> (Vec<u8>, usize, bool) {
    let (mut data, mut largest, mut ended) = (Vec::new(), 0, false);
    while let Some(p) = rx.recv().await {
        assert!(!ended, "nothing may follow the end mark");
        if p.is_empty() {
            ended = true;
        }
        largest = largest.max(p.len());
        data.extend_from_slice(&p);
    }
    (data, largest, ended)
}

#[tokio::test]
async fn stream_cut_mid_body_resumes_with_a_range_request() {
    let reg = registry();
    let proxy = Proxy::start(
        Some(reg.addr),
        first_n(1, "GET", "/blobs/sha256:", || {
            Action::ForwardTruncated(300_000)
        }),
    )
    .await;
    let c = client();
    let repo = proxy.repo("ferry/stream-cut");
    let data = bytes_of(1_000_000, 23);
    let d = Digest::of(&data);
    c.upload_blob(&repo, &d, Bytes::from(data.clone()))
        .await
        .unwrap();
    // A small channel: the download waits for its reader.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let reader = tokio::spawn(collect(rx));
    let reported = AtomicUsize::new(0);
    let progress = |n: u64| {
        reported.fetch_add(n as usize, Ordering::SeqCst);
    };
    let n = c
        .stream_blob(&repo, &d, data.len() as u64, tx, Some(&progress))
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    let (got, largest, ended) = reader.await.unwrap();
    assert!(ended, "the verified end is marked");
    assert!(got == data, "the bytes arrive once each, in order");
    assert!(largest <= 256 << 10, "pieces of at most 256 KiB: {largest}");
    assert_eq!(reported.into_inner(), data.len(), "each byte reported once");
    let gets: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path().contains("/blobs/"))
        .collect();
    assert_eq!(gets.len(), 2, "one cut transfer, one resumed");
    assert!(
        gets[1].header("range").is_some(),
        "the retry asks for a range"
    );
}

/// A rule: the first blob GET is cut after 300 kB, the second is answered
/// 200 with `body` (a registry that ignores the `Range`).
fn cut_then_whole(body: Vec<u8>) -> impl Fn(&Seen) -> Action + Send + Sync + 'static {
    let n = AtomicUsize::new(0);
    move |s: &Seen| {
        if s.method != "GET" || !s.path().contains("/blobs/sha256:") {
            return Action::Forward;
        }
        match n.fetch_add(1, Ordering::SeqCst) {
            0 => Action::ForwardTruncated(300_000),
            1 => Action::Respond {
                status: 200,
                headers: vec![],
                body: body.clone(),
            },
            _ => Action::Forward,
        }
    }
}

#[tokio::test]
async fn stream_from_a_registry_that_ignores_the_range_drops_what_was_already_sent() {
    let reg = registry();
    let data = bytes_of(1_000_000, 24);
    let d = Digest::of(&data);
    let proxy = Proxy::start(Some(reg.addr), cut_then_whole(data.clone())).await;
    let c = client();
    let repo = proxy.repo("ferry/stream-norange");
    c.upload_blob(&repo, &d, Bytes::from(data.clone()))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let reader = tokio::spawn(collect(rx));
    c.stream_blob(&repo, &d, data.len() as u64, tx, None)
        .await
        .unwrap();
    let (got, _, ended) = reader.await.unwrap();
    assert!(ended);
    assert!(got == data, "the replayed prefix is not sent twice");
}

#[tokio::test]
async fn stream_resumed_with_other_bytes_fails_without_the_end_mark() {
    let reg = registry();
    let data = bytes_of(1_000_000, 25);
    let d = Digest::of(&data);
    let mut other = data.clone();
    other[900_000] ^= 1;
    let proxy = Proxy::start(Some(reg.addr), cut_then_whole(other)).await;
    let c = client();
    let repo = proxy.repo("ferry/stream-changed");
    c.upload_blob(&repo, &d, Bytes::from(data.clone()))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let reader = tokio::spawn(collect(rx));
    let e = c
        .stream_blob(&repo, &d, data.len() as u64, tx, None)
        .await
        .expect_err("the bytes changed under the download");
    assert!(
        matches!(e, ferry_registry::Error::DigestMismatch { .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&d.to_string()), "{e}");
    let (_, _, ended) = reader.await.unwrap();
    assert!(!ended, "no end mark for bytes that failed verification");
}

#[tokio::test]
async fn stream_stops_when_its_reader_goes_away() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/stream-gone");
    let data = bytes_of(2_000_000, 26);
    let d = Digest::of(&data);
    c.upload_blob(&repo, &d, Bytes::from(data.clone()))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let reader = tokio::spawn(async move {
        let first = rx.recv().await;
        drop(rx);
        first.map(|p| p.len())
    });
    let e = c
        .stream_blob(&repo, &d, data.len() as u64, tx, None)
        .await
        .expect_err("nobody reads");
    assert!(matches!(e, ferry_registry::Error::Abandoned { .. }), "{e}");
    assert!(e.to_string().contains(&d.to_string()), "{e}");
    let first = reader.await.unwrap().expect("a first piece");
    assert!(first > 0 && first <= 256 << 10, "{first}");
}
