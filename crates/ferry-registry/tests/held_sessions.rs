//! `Client::hold_push`: the preflight's upload session kept for the
//! repository's first upload (its POST not sent again, no DELETE), a held
//! session that fails handing the upload to a new one, and
//! `Client::cancel_held_uploads` ending those no upload took. Against real
//! docker-registry, whose storage keeps one `_uploads/<id>` directory per
//! open session: a test that counts them sees every session left open.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ferry_bundle::digest::Digest;
use ferry_registry::Client;
use tokio::sync::mpsc;

use common::{bytes_of, fast_config, registry, Action, Proxy, Registry};

fn client() -> Client {
    Client::new(fast_config()).unwrap()
}

/// Upload sessions open in the registry's storage (each an
/// `_uploads/<id>` directory under its repository, with its `startedat`).
fn open_sessions(reg: &Registry) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.file_name().is_some_and(|f| f == "_uploads") {
                // A cancelled session keeps an empty `hashstates/` (2.8):
                // open is what still has its `startedat`.
                *n += std::fs::read_dir(&p)
                    .map(|r| {
                        r.flatten()
                            .filter(|s| s.path().join("startedat").exists())
                            .count()
                    })
                    .unwrap_or(0);
            } else {
                walk(&p, n);
            }
        }
    }
    let mut n = 0;
    walk(
        &reg.dir.path().join("data/docker/registry/v2/repositories"),
        &mut n,
    );
    n
}

/// Requests with `method` to an upload session (not a mount).
fn uploads(p: &Proxy, method: &str) -> usize {
    p.seen()
        .iter()
        .filter(|s| {
            s.method == method
                && s.path().contains("/blobs/uploads")
                && !s.target.contains("mount=")
        })
        .count()
}

/// A blob's chunks on a channel, closed once sent.
fn chunks_of(data: &[u8], chunk: usize) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(64);
    for c in data.chunks(chunk) {
        tx.try_send(Bytes::copy_from_slice(c)).unwrap();
    }
    rx
}

#[tokio::test]
async fn the_first_upload_takes_the_held_session_and_sends_no_post_or_delete() {
    let reg = registry();
    let proxy = Proxy::start(Some(reg.addr), |_| Action::Forward).await;
    let c = client();
    let (a, b) = (proxy.repo("held/a"), proxy.repo("held/b"));
    c.hold_push(&a).await.unwrap();
    c.hold_push(&b).await.unwrap();
    assert_eq!(uploads(&proxy, "POST"), 2);
    assert_eq!(open_sessions(&reg), 2, "both sessions held open");

    // In memory into `a`, streamed into `b`: each on its held session.
    let small = bytes_of(1000, 1);
    c.upload_blob(&a, &Digest::of(&small), Bytes::from(small.clone()))
        .await
        .unwrap();
    let large = bytes_of(300_000, 2);
    let d = Digest::of(&large);
    c.upload_blob_streamed(&b, &d, large.len() as u64, chunks_of(&large, 65536))
        .await
        .unwrap();
    assert_eq!(uploads(&proxy, "POST"), 2, "no POST beyond the preflight's");
    assert_eq!(uploads(&proxy, "PUT"), 2);
    assert_eq!(uploads(&proxy, "DELETE"), 0);
    assert_eq!(c.head_blob(&b, &d).await.unwrap(), Some(large.len() as u64));
    assert_eq!(
        c.head_blob(&a, &Digest::of(&small)).await.unwrap(),
        Some(1000)
    );

    // The next upload into `a` opens its own session, as before.
    let more = bytes_of(2000, 3);
    c.upload_blob(&a, &Digest::of(&more), Bytes::from(more))
        .await
        .unwrap();
    assert_eq!(uploads(&proxy, "POST"), 3);
    assert_eq!(c.cancel_held_uploads().await, 0, "nothing left held");
    assert_eq!(uploads(&proxy, "DELETE"), 0);
    assert_eq!(open_sessions(&reg), 0);
}

#[tokio::test]
async fn sessions_no_upload_took_are_cancelled_and_a_second_hold_cancels_the_first() {
    let reg = registry();
    let proxy = Proxy::start(Some(reg.addr), |_| Action::Forward).await;
    let c = client();
    let (a, b) = (proxy.repo("held/a"), proxy.repo("held/b"));
    c.hold_push(&a).await.unwrap();
    c.hold_push(&a).await.unwrap();
    assert_eq!(uploads(&proxy, "DELETE"), 1, "the older session of `a`");
    c.hold_push(&b).await.unwrap();
    assert_eq!(open_sessions(&reg), 2);
    assert_eq!(c.cancel_held_uploads().await, 2);
    assert_eq!(uploads(&proxy, "DELETE"), 3);
    assert_eq!(open_sessions(&reg), 0, "no session left open");
    assert_eq!(c.cancel_held_uploads().await, 0);

    // `check_push` holds nothing: the next upload opens its own session.
    c.check_push(&a).await.unwrap();
    assert_eq!(open_sessions(&reg), 0);
    let blob = bytes_of(100, 4);
    c.upload_blob(&a, &Digest::of(&blob), Bytes::from(blob))
        .await
        .unwrap();
    assert_eq!(uploads(&proxy, "POST"), 5);
}

/// A rule answering the first PUT to an upload session with 404
/// `BLOB_UPLOAD_UNKNOWN` (a session the registry purged or lost).
fn first_put_unknown() -> impl Fn(&common::Seen) -> Action + Send + Sync {
    let puts = Arc::new(AtomicUsize::new(0));
    move |s: &common::Seen| {
        if s.method == "PUT"
            && s.path().contains("/blobs/uploads/")
            && puts.fetch_add(1, Ordering::SeqCst) == 0
        {
            Action::json(
                404,
                r#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}"#,
            )
        } else {
            Action::Forward
        }
    }
}

#[tokio::test]
async fn a_held_session_the_registry_no_longer_knows_hands_the_upload_to_a_new_one() {
    let reg = registry();
    for streamed in [false, true] {
        let proxy = Proxy::start(Some(reg.addr), first_put_unknown()).await;
        let c = client();
        let repo = proxy.repo(if streamed {
            "gone/streamed"
        } else {
            "gone/whole"
        });
        c.hold_push(&repo).await.unwrap();
        let data = bytes_of(200_000, 5 + streamed as u64);
        let d = Digest::of(&data);
        if streamed {
            c.upload_blob_streamed(&repo, &d, data.len() as u64, chunks_of(&data, 65536))
                .await
                .unwrap();
        } else {
            c.upload_blob(&repo, &d, Bytes::from(data.clone()))
                .await
                .unwrap();
        }
        assert_eq!(
            c.head_blob(&repo, &d).await.unwrap(),
            Some(data.len() as u64),
            "streamed: {streamed}"
        );
        // The held session's PUT failed: it was cancelled, a new one opened.
        assert_eq!(uploads(&proxy, "POST"), 2, "streamed: {streamed}");
        assert_eq!(uploads(&proxy, "PUT"), 2, "streamed: {streamed}");
        assert_eq!(uploads(&proxy, "DELETE"), 1, "streamed: {streamed}");
        assert_eq!(c.cancel_held_uploads().await, 0);
    }
    assert_eq!(open_sessions(&reg), 0, "no session left open");
}

#[tokio::test]
async fn a_held_session_is_used_only_for_its_own_repository() {
    let reg = registry();
    let proxy = Proxy::start(Some(reg.addr), |_| Action::Forward).await;
    let c = client();
    let (a, b) = (proxy.repo("own/a"), proxy.repo("own/b"));
    c.hold_push(&a).await.unwrap();
    let blob = bytes_of(500, 7);
    c.upload_blob(&b, &Digest::of(&blob), Bytes::from(blob))
        .await
        .unwrap();
    let puts: Vec<String> = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "PUT")
        .map(|s| s.path().to_string())
        .collect();
    assert_eq!(puts.len(), 1);
    assert!(puts[0].starts_with("/v2/own/b/blobs/uploads/"), "{puts:?}");
    assert_eq!(open_sessions(&reg), 1, "the session of `a` is still held");
    assert_eq!(c.cancel_held_uploads().await, 1);
    assert_eq!(open_sessions(&reg), 0);
}

#[tokio::test]
async fn a_held_session_elsewhere_gets_no_credentials_for_its_upload_or_its_cancel() {
    use common::Seen;
    use ferry_registry::{Credentials, HostConfig};
    // The registry's sessions live on another origin: the held session's
    // PUT (and the DELETE of one no upload took) must not carry the password.
    let storage = Proxy::start(None, |s: &Seen| match s.method.as_str() {
        "PUT" => Action::status(201)
            .with_header("Docker-Content-Digest", &Digest::of(&s.body).to_string()),
        "DELETE" => Action::status(204),
        _ => Action::status(404),
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
                &format!("http://{storage_host}/upload/{}?sig=abc", s.path().len()),
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
    let (whole, streamed, unused) = (
        registry.repo("ferry/whole"),
        registry.repo("ferry/streamed"),
        registry.repo("ferry/unused-one"),
    );
    for r in [&whole, &streamed, &unused] {
        c.hold_push(r).await.unwrap();
    }
    let small = bytes_of(100, 60);
    c.upload_blob(&whole, &Digest::of(&small), Bytes::from(small))
        .await
        .unwrap();
    let large = bytes_of(100_000, 61);
    c.upload_blob_streamed(
        &streamed,
        &Digest::of(&large),
        large.len() as u64,
        chunks_of(&large, 30_000),
    )
    .await
    .unwrap();
    assert_eq!(c.cancel_held_uploads().await, 1);
    let seen = storage.seen();
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(
        methods.iter().filter(|m| **m == "PUT").count(),
        2,
        "{methods:?}"
    );
    assert_eq!(
        methods.iter().filter(|m| **m == "DELETE").count(),
        1,
        "{methods:?}"
    );
    for s in &seen {
        assert_eq!(
            s.header("authorization"),
            None,
            "credentials off origin: {s:?}"
        );
    }
    // Only the three preflight POSTs reached the registry (with credentials).
    let posts: Vec<Seen> = registry
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.header("authorization").is_some())
        .collect();
    assert_eq!(posts.len(), 3);
}
