//! The WebDAV target's retries follow ferry-registry's retry policy: a
//! server's `Retry-After` is honoured (nginx WebDAV behind the fault proxy).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod files_common;

use files_common::tree;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_bundle::relpath::RelPath;
use ferry_import::files::{FileTarget, FileTargetOptions};
use ferry_testkit::nginx::{require_nginx, Nginx, NginxOptions};
use ferry_testkit::proxy::{Action, Fault, FaultProxy};

/// nginx WebDAV over a fresh root with `/mirror`, the fault proxy in front of
/// it, and a target through the proxy.
fn dav_behind(
    faults: Vec<Fault>,
    attempts: u32,
) -> (tempfile::TempDir, Nginx, FaultProxy, FileTarget) {
    require_nginx();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("mirror")).unwrap();
    let nginx = Nginx::start(NginxOptions::webdav(root.path())).unwrap();
    let proxy = FaultProxy::start(nginx.addr(), faults);
    let opts = FileTargetOptions {
        attempts,
        ..FileTargetOptions::default()
    };
    let target = FileTarget::new(&format!("{}/mirror/", proxy.url()), opts).unwrap();
    (root, nginx, proxy, target)
}

#[tokio::test]
async fn a_dav_put_answered_503_with_retry_after_is_retried_after_that_delay() {
    let fault = Fault::new(Action::Unavailable {
        retry_after_secs: 2,
    })
    .on_method("PUT")
    .times(1);
    let (root, _nginx, proxy, target) = dav_behind(vec![fault], 3);
    let path = RelPath::new("files/tools/a.txt").unwrap();
    let started = Instant::now();
    target
        .write_bytes(&path, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let took = started.elapsed();
    // The backoff alone would wait at most 200 ms before the second try.
    assert!(took >= Duration::from_secs(2), "retried after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let mirror = root.path().join("mirror");
    assert_eq!(
        std::fs::read(mirror.join("files/tools/a.txt")).unwrap(),
        b"hello"
    );
    assert_eq!(tree(&mirror), ["files/tools/a.txt"]);
    let puts: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert_eq!(
        puts[0].fault,
        Some(Action::Unavailable {
            retry_after_secs: 2
        })
    );
    assert_eq!(puts[1].fault, None);
    assert_eq!(
        puts[0].target, puts[1].target,
        "the same temporary name again"
    );
}

#[tokio::test]
async fn a_dav_put_still_503_after_every_try_fails_and_nothing_lands() {
    let fault = Fault::new(Action::Unavailable {
        retry_after_secs: 1,
    })
    .on_method("PUT")
    .always();
    let (root, _nginx, proxy, target) = dav_behind(vec![fault], 2);
    let path = RelPath::new("files/tools/a.txt").unwrap();
    let started = Instant::now();
    let e = target
        .write_bytes(&path, Bytes::from_static(b"hello"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "gave up after {took:?}");
    let msg = e.to_string();
    assert!(msg.contains("503"), "{msg}");
    assert!(msg.contains(&proxy.url()), "{msg}");
    let puts = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(puts, 2);
    assert!(tree(&root.path().join("mirror")).is_empty());
}
