//! `Client::catalog_lists`: which of a set of repositories the registry's
//! catalog (`GET /v2/_catalog`) lists, following its pages; no answer at
//! all (rather than a partial one) when the registry refuses the catalog,
//! answers something else, or would take more pages than allowed. The
//! importer then asks each repository instead.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::collections::HashSet;

use bytes::Bytes;
use ferry_bundle::digest::Digest;
use ferry_registry::{Client, Repo};

use common::{fast_config, registry, Action, Proxy};

fn client() -> Client {
    Client::new(fast_config()).unwrap()
}

async fn blob_into(c: &Client, repo: &Repo) {
    let data = b"in the catalog";
    c.upload_blob(repo, &Digest::of(data), Bytes::from_static(data))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_catalog_lists_every_repository_holding_a_blob_across_its_pages() {
    let reg = registry();
    let c = client();
    // An empty registry lists nothing: an answer, not a refusal.
    let paths: HashSet<&str> = ["ferry/a", "ferry/c", "ferry/new"].into();
    assert_eq!(
        c.catalog_lists(&reg.host(), &paths, 1000, 4).await,
        Some(HashSet::new())
    );
    // Blobs without a tag are enough to be listed.
    for p in ["ferry/a", "ferry/b", "ferry/c"] {
        blob_into(&c, &reg.repo(p)).await;
    }
    let proxy = Proxy::start(Some(reg.addr), |_| Action::Forward).await;
    let listed = c
        .catalog_lists(&proxy.host(), &paths, 1, 10)
        .await
        .expect("a catalog");
    assert_eq!(listed, HashSet::from(["ferry/a", "ferry/c"]));
    // One name per page: every page was followed.
    let pages = proxy.count("GET", "/v2/_catalog");
    assert!(pages >= 3, "{pages} catalog requests");
    // Fewer pages allowed than the registry has: no answer, not a part.
    assert_eq!(c.catalog_lists(&proxy.host(), &paths, 1, 2).await, None);
    // One page holds them all.
    assert_eq!(
        c.catalog_lists(&reg.host(), &paths, 1000, 1).await,
        Some(HashSet::from(["ferry/a", "ferry/c"]))
    );
}

/// What the scripted catalog answers.
type Answer = fn() -> Action;

#[tokio::test]
async fn a_refused_or_strange_catalog_is_no_answer() {
    let reg = registry();
    let c = client();
    blob_into(&c, &reg.repo("ferry/a")).await;
    let page = r#"{"repositories":["ferry/a"]}"#;
    let cases: Vec<(&str, Answer)> = vec![
        (
            "401 (no rights, as Harbor answers non-administrators)",
            || {
                Action::json(
                    401,
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                )
            },
        ),
        ("403", || Action::status(403)),
        ("404 (no catalog API)", || Action::status(404)),
        ("a lasting 500", || Action::status(500)),
        ("204", || Action::status(204)),
        ("not a catalog", || {
            Action::json(200, r#"{"tags":["ferry/a"]}"#)
        }),
        ("a name that is not text", || {
            Action::json(200, r#"{"repositories":["ferry/a",1]}"#)
        }),
        ("not JSON", || Action::json(200, "repositories: [ferry/a]")),
        ("a next page on another origin", || {
            Action::json(200, r#"{"repositories":["ferry/a"]}"#).with_header(
                "Link",
                r#"<http://127.0.0.2:9/v2/_catalog?last=ferry%2Fa&n=1000>; rel="next""#,
            )
        }),
        ("the same page again", || {
            Action::json(200, r#"{"repositories":["ferry/a"]}"#)
                .with_header("Link", r#"</v2/_catalog?n=1000>; rel="next""#)
        }),
    ];
    let paths: HashSet<&str> = ["ferry/a"].into();
    for (what, answer) in cases {
        let proxy = Proxy::start(Some(reg.addr), move |s: &common::Seen| {
            if s.path() == "/v2/_catalog" {
                answer()
            } else {
                Action::Forward
            }
        })
        .await;
        assert_eq!(
            c.catalog_lists(&proxy.host(), &paths, 1000, 10).await,
            None,
            "{what}"
        );
        assert!(proxy.count("GET", "/v2/_catalog") >= 1, "{what}");
    }
    // The same page, answered plainly, is an answer.
    let proxy = Proxy::start(Some(reg.addr), move |s: &common::Seen| {
        if s.path() == "/v2/_catalog" {
            Action::json(200, page)
        } else {
            Action::Forward
        }
    })
    .await;
    assert_eq!(
        c.catalog_lists(&proxy.host(), &paths, 1000, 10).await,
        Some(paths.clone())
    );
}
