//! `Client::repository_known`: `false` only on 404 `NAME_UNKNOWN` (the
//! importer then uploads a repository's blobs without asking about each),
//! `true` on every other answer, so a doubt keeps the existence checks.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use bytes::Bytes;
use ferry_bundle::digest::Digest;
use ferry_bundle::manifest::OCI_MANIFEST;
use ferry_registry::Client;

use common::{fast_config, registry, Action, Proxy};

/// What the proxy answers a tag listing with.
type Answer = fn() -> Action;

fn client() -> Client {
    Client::new(fast_config()).unwrap()
}

#[tokio::test]
async fn a_repository_is_known_once_it_has_a_tag_and_untagged_blobs_leave_it_unknown() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/known");
    assert!(!c.repository_known(&repo).await, "a fresh repository");

    // A blob without a tag: distribution still answers NAME_UNKNOWN, which
    // is why the importer's default for such a repository is to upload.
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    c.upload_blob(&repo, &Digest::of(config), Bytes::from_static(config))
        .await
        .unwrap();
    assert!(!c.repository_known(&repo).await, "blobs but no tag");

    let m = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{}"}},"layers":[]}}"#,
        config.len(),
        Digest::of(config)
    ));
    c.put_manifest(&repo, "v1", OCI_MANIFEST, m).await.unwrap();
    assert!(c.repository_known(&repo).await, "a tagged repository");
}

#[tokio::test]
async fn any_answer_but_name_unknown_counts_as_known() {
    let reg = registry();
    let cases: Vec<(&str, Answer)> = vec![
        ("a bare 404", || Action::status(404)),
        ("404 with another code", || {
            Action::json(
                404,
                r#"{"errors":[{"code":"NOT_FOUND","message":"no such route"}]}"#,
            )
        }),
        ("403", || {
            Action::json(
                403,
                r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#,
            )
        }),
        ("a lasting 500", || Action::status(500)),
    ];
    for (what, answer) in cases {
        let proxy = Proxy::start(Some(reg.addr), move |s: &common::Seen| {
            if s.path().contains("/tags/list") {
                answer()
            } else {
                Action::Forward
            }
        })
        .await;
        let c = client();
        // The repository does not exist behind the proxy: only the
        // proxy's answer decides.
        assert!(
            c.repository_known(&proxy.repo("ferry/unknown")).await,
            "{what}"
        );
        assert!(proxy.count("GET", "/tags/list") >= 1, "{what}");
    }
}
