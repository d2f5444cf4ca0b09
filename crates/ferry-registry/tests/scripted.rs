//! Protocol behaviours checked against a scripted HTTP server: auth flows,
//! mirrors, pagination, verification, upload-session recovery.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use ferry_bundle::digest::Digest;
use ferry_bundle::manifest::OCI_MANIFEST;
use ferry_registry::{Client, ClientConfig, Credentials, Error, HostConfig, Repo};

use common::{fast_config, Action, Proxy, Seen};

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#;

fn manifest_ok() -> Action {
    Action::Respond {
        status: 200,
        headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
        body: MANIFEST.as_bytes().to_vec(),
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn query(s: &Seen) -> Vec<(String, String)> {
    url::Url::parse(&format!("http://x{}", s.target))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn with_creds(host: &str, user: &str, pass: &str) -> ClientConfig {
    let mut config = fast_config();
    config.hosts.insert(
        host.to_string(),
        HostConfig {
            credentials: Some(Credentials {
                username: user.into(),
                password: pass.into(),
            }),
            ..HostConfig::default()
        },
    );
    config
}

/// A registry that wants bearer tokens from its own `/token` endpoint.
async fn bearer_server(require_basic: Option<String>) -> Proxy {
    let addr_cell: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let cell = addr_cell.clone();
    let issued = AtomicUsize::new(0);
    let proxy = Proxy::start(None, move |s: &Seen| {
        let addr = cell.lock().unwrap().clone();
        if s.path() == "/token" {
            if let Some(expected) = &require_basic {
                if s.header("authorization") != Some(expected.as_str()) {
                    return Action::json(401, r#"{"details":"incorrect username or password"}"#);
                }
            }
            let n = issued.fetch_add(1, Ordering::SeqCst);
            return Action::json(200, &format!(r#"{{"token":"tok-{n}","expires_in":300}}"#));
        }
        let authorized = s
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer tok-"));
        if !authorized {
            return Action::json(
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
            .with_header(
                "WWW-Authenticate",
                &format!(
                    r#"Bearer realm="http://{addr}/token",service="fake-registry",scope="repository:a/b:pull""#
                ),
            );
        }
        match (s.method.as_str(), s.path()) {
            ("GET", p) if p.contains("/manifests/") => manifest_ok(),
            ("PUT", p) if p.contains("/manifests/") => Action::status(201),
            ("POST", p) if p.ends_with("/blobs/uploads/") => Action::status(201),
            _ => Action::status(404),
        }
    })
    .await;
    *addr_cell.lock().unwrap() = proxy.host();
    proxy
}

#[tokio::test]
async fn bearer_token_is_fetched_once_with_basic_credentials_and_reused() {
    let expected = format!("Basic {}", b64("alice:s3cret"));
    let server = bearer_server(Some(expected.clone())).await;
    let c = Client::new(with_creds(&server.host(), "alice", "s3cret")).unwrap();
    let repo = server.repo("a/b");
    let m = c.get_manifest(&repo, "v1").await.unwrap();
    assert_eq!(m.bytes, MANIFEST.as_bytes());
    c.get_manifest(&repo, "v2").await.unwrap();

    let tokens: Vec<Seen> = server
        .seen()
        .into_iter()
        .filter(|s| s.path() == "/token")
        .collect();
    assert_eq!(tokens.len(), 1, "the token is cached");
    assert_eq!(tokens[0].header("authorization"), Some(expected.as_str()));
    let q = query(&tokens[0]);
    assert!(
        q.contains(&("service".into(), "fake-registry".into())),
        "{q:?}"
    );
    assert!(
        q.contains(&("scope".into(), "repository:a/b:pull".into())),
        "{q:?}"
    );
    let gets = server.count("GET", "/manifests/");
    assert_eq!(gets, 3, "one 401, then two authorized requests");
}

#[tokio::test]
async fn push_asks_for_pull_push_and_mount_adds_pull_on_the_source() {
    let server = bearer_server(None).await;
    let c = Client::new(fast_config()).unwrap();
    let repo = server.repo("a/b");
    c.put_manifest(
        &repo,
        "v1",
        OCI_MANIFEST,
        Bytes::from_static(MANIFEST.as_bytes()),
    )
    .await
    .unwrap();
    let from = server.repo("c/d");
    assert!(c.mount_blob(&repo, &Digest::of(b"x"), &from).await.unwrap());

    let scopes: Vec<Vec<String>> = server
        .seen()
        .into_iter()
        .filter(|s| s.path() == "/token")
        .map(|s| {
            let mut v: Vec<String> = query(&s)
                .into_iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v)
                .collect();
            v.sort();
            v
        })
        .collect();
    assert_eq!(
        scopes,
        vec![
            vec![
                "repository:a/b:pull".to_string(),
                "repository:a/b:pull,push".to_string()
            ],
            // The challenge is known by now: the token is asked for up front.
            vec![
                "repository:a/b:pull,push".to_string(),
                "repository:c/d:pull".to_string()
            ],
        ],
        "the first request adds the challenge's scope to the operation's"
    );
    assert_eq!(
        server.count("POST", "/blobs/uploads/"),
        1,
        "no 401 round trip"
    );
    let mount = server
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.header("authorization").is_some())
        .unwrap();
    let q = query(&mount);
    assert!(q.contains(&("from".into(), "c/d".into())), "{q:?}");
    assert!(
        q.contains(&("mount".into(), Digest::of(b"x").to_string())),
        "{q:?}"
    );
}

#[tokio::test]
async fn refused_token_credentials_give_an_auth_error_without_the_password() {
    let server = bearer_server(Some(format!("Basic {}", b64("alice:right")))).await;
    let c = Client::new(with_creds(&server.host(), "alice", "wrong-pass")).unwrap();
    let e = c.get_manifest(&server.repo("a/b"), "v1").await.unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(text.contains("alice"), "{text}");
    assert!(text.contains("incorrect username or password"), "{text}");
    assert!(!text.contains("wrong-pass"), "{text}");
    assert!(!text.contains(&b64("alice:wrong-pass")), "{text}");
}

#[tokio::test]
async fn basic_auth_uses_a_url_keyed_docker_config_entry() {
    let good = format!("Basic {}", b64("bob:pa55"));
    let good2 = good.clone();
    let server = Proxy::start(None, move |s: &Seen| {
        if s.header("authorization") == Some(good2.as_str()) {
            manifest_ok()
        } else {
            Action::status(401).with_header("WWW-Authenticate", r#"Basic realm="Registry Realm""#)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"http://{}/v1/":{{"auth":"{}"}}}}}}"#,
            server.host(),
            b64("bob:pa55")
        ),
    )
    .unwrap();
    let c = Client::new(ClientConfig {
        docker_config: Some(cfg.clone()),
        ..fast_config()
    })
    .unwrap();
    c.get_manifest(&server.repo("x/y"), "v1").await.unwrap();
    c.get_manifest(&server.repo("x/y"), "v2").await.unwrap();
    // 401 once; after that the client sends Basic up front.
    assert_eq!(server.count("GET", "/manifests/"), 3);

    // Without credentials the 401 comes back as an error, after one try.
    let anon = Client::new(fast_config()).unwrap();
    let e = anon
        .get_manifest(&server.repo("x/y"), "v1")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn manifest_fetched_by_digest_must_hash_to_it() {
    let wanted = Digest::of(b"the real manifest");
    let server = Proxy::start(None, |_: &Seen| manifest_ok()).await;
    let c = Client::new(fast_config()).unwrap();
    let e = c
        .get_manifest(&server.repo("a"), &wanted.to_string())
        .await
        .unwrap_err();
    match &e {
        Error::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wanted);
            assert_eq!(actual, &Digest::of(MANIFEST.as_bytes()));
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains(&wanted.to_string()), "{msg}");
    assert!(
        msg.contains(&Digest::of(MANIFEST.as_bytes()).to_string()),
        "{msg}"
    );
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn oversized_manifest_is_refused() {
    let big = vec![b' '; 17 << 20];
    let server = Proxy::start(None, move |_: &Seen| Action::Respond {
        status: 200,
        headers: vec![("Content-Type".into(), OCI_MANIFEST.into())],
        body: big.clone(),
    })
    .await;
    let c = Client::new(fast_config()).unwrap();
    let e = c.get_manifest(&server.repo("a"), "big").await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}

#[tokio::test]
async fn accept_lists_every_manifest_type_and_generic_content_type_falls_back_to_media_type() {
    let server = Proxy::start(None, |_: &Seen| Action::Respond {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: MANIFEST.as_bytes().to_vec(),
    })
    .await;
    let c = Client::new(fast_config()).unwrap();
    let m = c.get_manifest(&server.repo("a"), "v1").await.unwrap();
    assert_eq!(m.media_type, OCI_MANIFEST);
    let accept = server.seen()[0].header("accept").unwrap().to_string();
    for t in ferry_bundle::manifest::MANIFEST_ACCEPT {
        assert!(accept.contains(t), "{accept}");
    }
}

#[tokio::test]
async fn tag_list_follows_link_pagination() {
    let server = Proxy::start(None, |s: &Seen| {
        if s.target.contains("last=2") {
            Action::json(200, r#"{"name":"a","tags":["3"]}"#)
        } else {
            Action::json(200, r#"{"name":"a","tags":["1","2"]}"#)
                .with_header("Link", r#"</v2/a/tags/list?last=2&n=2>; rel="next""#)
        }
    })
    .await;
    let c = Client::new(fast_config()).unwrap();
    assert_eq!(
        c.list_tags(&server.repo("a")).await.unwrap(),
        vec!["1", "2", "3"]
    );
    assert_eq!(server.count("GET", "/tags/list"), 2);
}

#[tokio::test]
async fn unknown_repository_has_no_tags_but_other_404s_are_errors() {
    let server = Proxy::start(None, |s: &Seen| {
        if s.path().starts_with("/v2/known/") {
            Action::json(404, r#"{"errors":[{"code":"NOT_FOUND","message":"proxy path"}]}"#)
        } else {
            Action::json(404, r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#)
        }
    })
    .await;
    let c = Client::new(fast_config()).unwrap();
    assert!(c.list_tags(&server.repo("nope")).await.unwrap().is_empty());
    let e = c.list_tags(&server.repo("known")).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn mirror_path_is_put_before_the_repository_path() {
    let server = Proxy::start(None, |_: &Seen| manifest_ok()).await;
    let mut config = fast_config();
    config.hosts.insert(
        "docker.io".into(),
        HostConfig {
            mirror: Some(
                url::Url::parse(&format!("http://{}/dockerhub-proxy/", server.host())).unwrap(),
            ),
            ..HostConfig::default()
        },
    );
    let c = Client::new(config).unwrap();
    let repo = Repo {
        host: "docker.io".into(),
        path: "library/nginx".into(),
    };
    c.get_manifest(&repo, "1.27").await.unwrap();
    assert_eq!(
        server.seen()[0].target,
        "/v2/dockerhub-proxy/library/nginx/manifests/1.27"
    );
}

#[tokio::test]
async fn absolute_upload_location_with_query_is_used_as_given() {
    let data = Bytes::from_static(b"some blob");
    let d = Digest::of(&data);
    let addr_cell: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let cell = addr_cell.clone();
    let server = Proxy::start(None, move |s: &Seen| {
        let addr = cell.lock().unwrap().clone();
        match s.method.as_str() {
            "POST" => Action::status(202).with_header(
                "Location",
                &format!("http://{addr}/elsewhere/session-1?sig=abc&x=1"),
            ),
            "PUT" => Action::status(201)
                .with_header("Docker-Content-Digest", &Digest::of(&s.body).to_string()),
            _ => Action::status(404),
        }
    })
    .await;
    *addr_cell.lock().unwrap() = server.host();
    let c = Client::new(fast_config()).unwrap();
    c.upload_blob(&server.repo("a"), &d, data.clone())
        .await
        .unwrap();
    let put = server
        .seen()
        .into_iter()
        .find(|s| s.method == "PUT")
        .unwrap();
    assert_eq!(
        put.target,
        format!("/elsewhere/session-1?sig=abc&x=1&digest={d}")
    );
    assert_eq!(put.body, data.to_vec());
}

#[tokio::test]
async fn put_manifest_checks_the_digest_the_registry_computed() {
    let server = Proxy::start(None, |_: &Seen| {
        Action::status(201).with_header("Docker-Content-Digest", &Digest::of(b"else").to_string())
    })
    .await;
    let c = Client::new(fast_config()).unwrap();
    let e = c
        .put_manifest(
            &server.repo("a"),
            "v1",
            OCI_MANIFEST,
            Bytes::from_static(MANIFEST.as_bytes()),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
}

/// A registry whose upload Location is stable and whose status GET reports
/// the stored range (unlike distribution's signed `_state`).
#[tokio::test]
async fn lost_patch_answer_is_recovered_from_the_session_status() {
    let stored: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let st = stored.clone();
    let patches = AtomicUsize::new(0);
    let server = Proxy::start(None, move |s: &Seen| {
        let mut stored = st.lock().unwrap();
        let range = |n: usize| format!("0-{}", n.saturating_sub(1));
        match (s.method.as_str(), s.path()) {
            ("POST", _) => Action::status(202).with_header("Location", "/upload/1"),
            ("PATCH", "/upload/1") => {
                let start: usize = s
                    .header("content-range")
                    .and_then(|r| r.split('-').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap();
                if start != stored.len() {
                    return Action::status(416);
                }
                stored.extend_from_slice(&s.body);
                if patches.fetch_add(1, Ordering::SeqCst) == 1 {
                    // Stored, but the answer never arrives.
                    return Action::Drop;
                }
                Action::status(202)
                    .with_header("Location", "/upload/1")
                    .with_header("Range", &range(stored.len()))
            }
            ("GET", "/upload/1") => Action::status(204)
                .with_header("Location", "/upload/1")
                .with_header("Range", &range(stored.len())),
            ("PUT", "/upload/1") => Action::status(201)
                .with_header("Docker-Content-Digest", &Digest::of(&stored).to_string()),
            _ => Action::status(404),
        }
    })
    .await;
    let data = common::bytes_of(300_000, 31);
    let d = Digest::of(&data);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for chunk in data.chunks(100_000) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    drop(tx);
    let c = Client::new(fast_config()).unwrap();
    c.upload_blob_chunked(&server.repo("a"), &d, 300_000, rx)
        .await
        .unwrap();
    assert_eq!(*stored.lock().unwrap(), data);
    let calls: Vec<String> = server
        .seen()
        .into_iter()
        .map(|s| match s.header("content-range") {
            Some(r) => format!("{} {}", s.method, r),
            None => s.method,
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            "POST",
            "PATCH 0-99999",
            "PATCH 100000-199999",
            "GET",
            "PATCH 200000-299999",
            "PUT"
        ]
    );
}

#[tokio::test]
async fn credentials_never_show_in_debug_output() {
    let creds = Credentials {
        username: "u".into(),
        password: "topsecret".into(),
    };
    assert!(!format!("{creds:?}").contains("topsecret"));
    let mut hosts = HashMap::new();
    hosts.insert(
        "r".to_string(),
        HostConfig {
            credentials: Some(creds),
            ..HostConfig::default()
        },
    );
    let config = ClientConfig {
        hosts,
        ..fast_config()
    };
    assert!(!format!("{config:?}").contains("topsecret"));
    let c = Client::new(config).unwrap();
    assert!(!format!("{c:?}").contains("topsecret"));
}

#[tokio::test]
async fn referrers_follow_pages_and_a_404_means_no_referrers_api() {
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let page = |digest: String| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":10,"artifactType":"application/spdx+json"}}]}}"#
        )
    };
    let (first, second) = (page(d('b')), page(d('c')));
    let server = Proxy::start(None, move |s: &Seen| {
        if s.path().starts_with("/v2/old/") {
            Action::json(404, "404 page not found")
        } else if s.target.contains("page=2") {
            Action::json(200, &second)
        } else {
            Action::json(200, &first).with_header(
                "Link",
                &format!(r#"</v2/new/referrers/{}?page=2>; rel="next""#, d('a')),
            )
        }
    })
    .await;
    let c = Client::new(fast_config()).unwrap();
    let subject: Digest = d('a').parse().unwrap();
    let got = c
        .referrers(&server.repo("new"), &subject)
        .await
        .unwrap()
        .expect("the registry has the referrers API");
    let digests: Vec<String> = got.iter().map(|x| x.digest.to_string()).collect();
    assert_eq!(digests, vec![d('b'), d('c')]);
    assert_eq!(
        got[0].artifact_type.as_ref().map(AsRef::as_ref),
        Some("application/spdx+json")
    );
    assert_eq!(server.count("GET", "/referrers/"), 2);
    assert!(c
        .referrers(&server.repo("old"), &subject)
        .await
        .unwrap()
        .is_none());
}
