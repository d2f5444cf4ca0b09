//! The read endpoints of the distribution API and the file server, checked
//! with a plain HTTP client against a store built by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::*;
use ferry_bundle::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use ferry_serve::ServeOptions;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LINK, RANGE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn started() -> (TestStore, Running) {
    let store = build_store();
    let running = start(ServeOptions::new(store.dir(), loopback())).await;
    (store, running)
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {r:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn base_endpoint_answers_with_the_api_version() {
    let (_store, srv) = started().await;
    for path in ["/v2/", "/v2"] {
        let r = client()
            .get(format!("{}{path}", srv.registry_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&r, "docker-distribution-api-version"),
            "registry/2.0"
        );
    }
    // Not an endpoint: 404 (and not a file either).
    for path in ["/v2/a/b", "/v2/a/manifests/", "/v2/a/manifests/x/y"] {
        let r = client()
            .get(format!("{}{path}", srv.registry_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn manifests_by_tag_and_digest_are_the_stored_bytes() {
    let (store, srv) = started().await;
    let c = client();
    for image in &store.set.images {
        let repo = TestStore::repo(&image.repository);
        let refs = std::iter::once((image.tag.clone(), &image.top))
            .chain(image.manifests().map(|m| (m.digest.to_string(), m)));
        for (reference, m) in refs {
            let url = format!("{}/v2/{repo}/manifests/{reference}", srv.registry_url);
            let r = c
                .get(&url)
                .header(ACCEPT, full_accept())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            assert_eq!(header(&r, "content-type"), m.media_type, "{url}");
            assert_eq!(header(&r, "docker-content-digest"), m.digest.to_string());
            assert_eq!(header(&r, "content-length"), m.size().to_string());
            assert_eq!(r.bytes().await.unwrap(), m.bytes, "{url}");

            let r = c
                .head(&url)
                .header(ACCEPT, full_accept())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "HEAD {url}");
            assert_eq!(header(&r, "docker-content-digest"), m.digest.to_string());
            assert_eq!(header(&r, "content-length"), m.size().to_string());
            assert_eq!(header(&r, "content-type"), m.media_type);
            assert!(r.bytes().await.unwrap().is_empty(), "HEAD has no body");
        }
    }
    srv.stop().await;
}

#[tokio::test]
async fn accept_negotiation_never_rewrites() {
    let (store, srv) = started().await;
    let c = client();
    let get = |repo: &str, accept: Option<&str>| {
        let mut req = c.get(format!(
            "{}/v2/{}/manifests/1.0",
            srv.registry_url,
            TestStore::repo(repo)
        ));
        if let Some(a) = accept {
            req = req.header(ACCEPT, a.to_string());
        }
        req.send()
    };
    // An OCI index to a client that only takes Docker types: 404, as distribution.
    let r = get(
        "fixtures/multiarch",
        Some(&format!("{DOCKER_MANIFEST}, {DOCKER_LIST}")),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(&r.bytes().await.unwrap()), "MANIFEST_UNKNOWN");
    // A Docker list to a client without list support: refused, never the amd64 child.
    let r = get("fixtures/docker-list", Some(OCI_MANIFEST))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(&r.bytes().await.unwrap()), "MANIFEST_UNKNOWN");
    // A Docker schema2 manifest is served whatever is listed (distribution does too).
    let docker = store.set.image("fixtures/docker-v2");
    let r = get("fixtures/docker-v2", Some(OCI_MANIFEST)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), docker.top.bytes);
    // No Accept at all (and */*): the stored bytes, stored type.
    let multi = store.set.image("fixtures/multiarch");
    let r = c
        .get(format!(
            "{}/v2/{}/manifests/1.0",
            srv.registry_url,
            TestStore::repo("fixtures/multiarch")
        ))
        .header(ACCEPT, "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert_eq!(r.bytes().await.unwrap(), multi.top.bytes);
    let r = get("fixtures/multiarch", Some(OCI_INDEX)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The manifest without a mediaType field keeps its descriptor's type.
    let r = get("fixtures/no-mediatype", Some(&full_accept()))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
    srv.stop().await;
}

#[tokio::test]
async fn manifests_by_digest_are_served_whatever_accept_lists() {
    // Content addressed by digest is served as stored, as distribution does:
    // a Docker manifest list or an OCI index fetched by digest by a client
    // whose Accept lacks the list type (the case a tag request refuses).
    let (store, srv) = started().await;
    let c = client();
    let accepts = [
        Some(OCI_MANIFEST.to_string()),
        Some(DOCKER_MANIFEST.to_string()),
        Some(format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}")),
        Some("text/plain".to_string()),
        None,
    ];
    for name in ["fixtures/docker-list", "fixtures/multiarch"] {
        let image = store.set.image(name);
        let repo = TestStore::repo(name);
        for accept in &accepts {
            for method in [Method::GET, Method::HEAD] {
                let url = format!(
                    "{}/v2/{repo}/manifests/{}",
                    srv.registry_url, image.top.digest
                );
                let mut req = c.request(method.clone(), &url);
                if let Some(a) = accept {
                    req = req.header(ACCEPT, a.clone());
                }
                let r = req.send().await.unwrap();
                assert_eq!(
                    r.status(),
                    StatusCode::OK,
                    "{method} {url} Accept {accept:?}"
                );
                assert_eq!(header(&r, "content-type"), image.top.media_type);
                assert_eq!(
                    header(&r, "docker-content-digest"),
                    image.top.digest.to_string()
                );
                let body = r.bytes().await.unwrap();
                if method == Method::GET {
                    assert_eq!(body, image.top.bytes, "{url}");
                } else {
                    assert!(body.is_empty());
                }
            }
        }
        // By tag, the same Accept that lacks the list type is still refused:
        // never a rewrite to a child.
        let r = c
            .get(format!(
                "{}/v2/{repo}/manifests/{}",
                srv.registry_url, image.tag
            ))
            .header(ACCEPT, OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{name} by tag");
    }
    srv.stop().await;
}

#[tokio::test]
async fn blobs_stream_with_ranges_and_heads() {
    let (store, srv) = started().await;
    let c = client();
    let image = store.set.image("fixtures/many-layers");
    let repo = TestStore::repo(&image.repository);
    for blob in &image.blobs {
        let r = c
            .get(format!(
                "{}/v2/{repo}/blobs/{}",
                srv.registry_url, blob.digest
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "docker-content-digest"), blob.digest.to_string());
        assert_eq!(header(&r, "content-length"), blob.size().to_string());
        assert_eq!(r.bytes().await.unwrap(), blob.data);
    }
    let blob = image.blobs.iter().max_by_key(|b| b.size()).unwrap();
    let url = format!("{}/v2/{repo}/blobs/{}", srv.registry_url, blob.digest);
    let len = blob.size();

    let r = c
        .get(&url)
        .header(RANGE, "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), format!("bytes 10-19/{len}"));
    assert_eq!(header(&r, "content-length"), "10");
    assert_eq!(r.bytes().await.unwrap(), blob.data.slice(10..20));

    let r = c.get(&url).header(RANGE, "bytes=-5").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.bytes().await.unwrap(),
        blob.data.slice(len as usize - 5..)
    );

    let r = c
        .get(&url)
        .header(RANGE, "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), blob.data.slice(100..));

    let r = c
        .get(&url)
        .header(RANGE, format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range"), format!("bytes */{len}"));

    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_LENGTH], len.to_string().as_str());
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(header(&r, "docker-content-digest"), blob.digest.to_string());
    assert!(r.bytes().await.unwrap().is_empty());

    let r = c
        .head(&url)
        .header(RANGE, "bytes=0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()[CONTENT_RANGE],
        format!("bytes 0-0/{len}").as_str()
    );
    assert!(r.bytes().await.unwrap().is_empty());

    // Manifests are blobs too.
    let r = c
        .get(format!(
            "{}/v2/{repo}/blobs/{}",
            srv.registry_url, image.top.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), image.top.bytes);
    srv.stop().await;
}

#[tokio::test]
async fn errors_carry_spec_codes() {
    let (store, srv) = started().await;
    let c = client();
    let multi = TestStore::repo("fixtures/multiarch");
    let trivy = store.set.image("fixtures/trivy-db");
    let unknown = format!("sha256:{}", "0".repeat(64));
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            format!("/v2/{multi}/manifests/nope"),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/{multi}/manifests/{unknown}"),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        // A manifest that exists, but in another repository.
        (
            format!("/v2/{multi}/manifests/{}", trivy.top.digest),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/{multi}/manifests/sha256:xyz"),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{multi}/blobs/{unknown}"),
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
        ),
        // A blob that exists, but is not held by this repository.
        (
            format!("/v2/{multi}/blobs/{}", trivy.blobs[1].digest),
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
        ),
        (
            format!("/v2/{multi}/blobs/sha256:12"),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/{multi}/blobs/nodigest"),
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
        ),
        (
            "/v2/dockerhub/nope/manifests/1.0".into(),
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
        (
            "/v2/dockerhub/nope/tags/list".into(),
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
        (
            format!("/v2/dockerhub/nope/blobs/{unknown}"),
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
        ),
        (
            "/v2/Dockerhub/Upper/manifests/1.0".into(),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            "/v2/a..b/tags/list".into(),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            format!("/v2/a__-b/blobs/{unknown}"),
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
        ),
        (
            format!("/v2/{multi}/tags/list?n=abc"),
            StatusCode::BAD_REQUEST,
            "PAGINATION_NUMBER_INVALID",
        ),
    ];
    for (path, status, code) in cases {
        for method in [Method::GET, Method::HEAD] {
            let r = c
                .request(method.clone(), format!("{}{path}", srv.registry_url))
                .header(ACCEPT, full_accept())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), status, "{method} {path}");
            assert_eq!(
                header(&r, "docker-distribution-api-version"),
                "registry/2.0"
            );
            let body = r.bytes().await.unwrap();
            if method == Method::GET {
                assert_eq!(error_code(&body), code, "{path}");
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert!(v["errors"][0]["message"].is_string(), "{v}");
                assert!(v["errors"][0].get("detail").is_some(), "{v}");
            } else {
                assert!(body.is_empty(), "HEAD {path} has no body");
            }
        }
    }
    srv.stop().await;
}

#[tokio::test]
async fn push_methods_are_refused_with_405() {
    let (store, srv) = started().await;
    let c = client();
    let multi = TestStore::repo("fixtures/multiarch");
    let digest = &store.set.image("fixtures/multiarch").top.digest;
    let cases = [
        (Method::PUT, format!("/v2/{multi}/manifests/2.0")),
        (Method::DELETE, format!("/v2/{multi}/manifests/{digest}")),
        (Method::POST, format!("/v2/{multi}/blobs/uploads/")),
        (
            Method::PATCH,
            format!("/v2/{multi}/blobs/uploads/some-session"),
        ),
        (
            Method::PUT,
            format!("/v2/{multi}/blobs/uploads/some-session?digest={digest}"),
        ),
        (Method::DELETE, format!("/v2/{multi}/blobs/{digest}")),
        (
            Method::GET,
            format!("/v2/{multi}/blobs/uploads/some-session"),
        ),
    ];
    for (method, path) in cases {
        let r = c
            .request(method.clone(), format!("{}{path}", srv.registry_url))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(error_code(&r.bytes().await.unwrap()), "UNSUPPORTED");
    }
    // Still there.
    let r = c
        .get(format!(
            "{}/v2/{multi}/manifests/{digest}",
            srv.registry_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // And the file tree is read-only too.
    let r = c
        .put(format!("{}/helm/stable/index.yaml", srv.registry_url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    srv.stop().await;
}

async fn get_json(c: &reqwest::Client, url: &str) -> (Value, Option<String>) {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    assert_eq!(header(&r, "content-type"), "application/json");
    let link = r
        .headers()
        .get(LINK)
        .map(|v| v.to_str().unwrap().to_string());
    (
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
        link,
    )
}

#[tokio::test]
async fn tag_lists_paginate_with_link_headers() {
    let (_store, srv) = started().await;
    let c = client();
    let repo = TestStore::repo("fixtures/multiarch");
    let (all, link) = get_json(&c, &format!("{}/v2/{repo}/tags/list", srv.registry_url)).await;
    assert_eq!(all["name"], repo.as_str());
    assert_eq!(all["tags"], serde_json::json!(MULTIARCH_TAGS));
    assert_eq!(link, None);

    let (page, link) = get_json(&c, &format!("{}/v2/{repo}/tags/list?n=2", srv.registry_url)).await;
    assert_eq!(page["tags"], serde_json::json!(["1.0", "1.1"]));
    let link = link.expect("a Link header when more tags remain");
    assert_eq!(
        link,
        format!("</v2/{repo}/tags/list?n=2&last=1.1>; rel=\"next\"")
    );
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    let (page, link) = get_json(&c, &format!("{}{next}", srv.registry_url)).await;
    assert_eq!(page["tags"], serde_json::json!(["1.2", "latest"]));
    assert_eq!(link, None, "no Link on the last page");

    let (page, _) = get_json(
        &c,
        &format!("{}/v2/{repo}/tags/list?last=1.2", srv.registry_url),
    )
    .await;
    assert_eq!(page["tags"], serde_json::json!(["latest"]));
    srv.stop().await;
}

#[tokio::test]
async fn the_catalog_lists_every_repository_in_pages() {
    let (store, srv) = started().await;
    let c = client();
    let mut expected: Vec<String> = store
        .set
        .images
        .iter()
        .map(|i| TestStore::repo(&i.repository))
        .collect();
    expected.sort();
    let (all, link) = get_json(&c, &format!("{}/v2/_catalog", srv.registry_url)).await;
    assert_eq!(all["repositories"], serde_json::json!(expected));
    assert_eq!(link, None);

    let mut seen = Vec::new();
    let mut url = format!("{}/v2/_catalog?n=4", srv.registry_url);
    for _ in 0..10 {
        let (page, link) = get_json(&c, &url).await;
        let names = page["repositories"].as_array().unwrap();
        assert!(names.len() <= 4);
        seen.extend(names.iter().map(|n| n.as_str().unwrap().to_string()));
        match link {
            Some(l) => {
                let path = l.trim_start_matches('<').split('>').next().unwrap();
                url = format!("{}{path}", srv.registry_url);
            }
            None => break,
        }
    }
    assert_eq!(seen, expected);
    srv.stop().await;
}

#[tokio::test]
async fn referrers_come_from_subject_fields_with_artifact_type_filtering() {
    let (store, srv) = started().await;
    let c = client();
    let repo = TestStore::repo("fixtures/multiarch");
    let url = format!("{}/v2/{repo}/referrers/{}", srv.registry_url, store.subject);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let index: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    let mut digests: Vec<&str> = manifests
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    digests.sort();
    let mut expected = vec![store.sbom.digest.to_string(), store.sig.digest.to_string()];
    expected.sort();
    assert_eq!(digests, expected);
    for m in manifests {
        let (doc, at) = if m["digest"] == store.sbom.digest.to_string().as_str() {
            (&store.sbom, SBOM_TYPE)
        } else {
            (&store.sig, SIG_TYPE)
        };
        assert_eq!(m["mediaType"], OCI_MANIFEST);
        assert_eq!(m["size"], doc.bytes.len());
        assert_eq!(m["artifactType"], at);
        assert_eq!(m["annotations"]["kind"], at);
    }

    // The referrer without a repository annotation joined through its subject.
    let r = c
        .get(format!(
            "{}/v2/{repo}/manifests/{}",
            srv.registry_url, store.sig.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), store.sig.bytes);

    let r = c
        .get(format!(
            "{url}?artifactType={}",
            SIG_TYPE.replace('+', "%2B")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let index: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(
        manifests[0]["digest"],
        store.sig.digest.to_string().as_str()
    );

    // A digest nothing refers to: an empty index, never 404.
    let other = &store.set.image("fixtures/multiarch").top.digest;
    let r = c
        .get(format!("{}/v2/{repo}/referrers/{other}", srv.registry_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let index: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));

    // Another repository does not see them.
    let r = c
        .get(format!(
            "{}/v2/{}/referrers/{}",
            srv.registry_url,
            TestStore::repo("fixtures/docker-v2"),
            store.subject
        ))
        .send()
        .await
        .unwrap();
    let index: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));

    let r = c
        .get(format!(
            "{}/v2/{repo}/referrers/sha256:bad",
            srv.registry_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&r.bytes().await.unwrap()), "DIGEST_INVALID");
    srv.stop().await;
}

#[tokio::test]
async fn files_are_served_with_types_and_ranges() {
    let (store, srv) = started().await;
    let c = client();
    let r = c
        .get(format!("{}helm/stable/index.yaml", srv.files_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/yaml");
    assert_eq!(r.text().await.unwrap(), "apiVersion: v1\nentries: {}\n");

    // `+` both literal and percent-encoded (falcoctl sends %2B).
    let encoded = DRIVER_PATH.replace('+', "%2B");
    for path in [DRIVER_PATH.to_string(), encoded.clone()] {
        let r = c
            .get(format!("{}{path}", srv.files_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/octet-stream");
        assert_eq!(header(&r, "content-length"), store.driver.len().to_string());
        assert_eq!(header(&r, "accept-ranges"), "bytes");
        assert_eq!(r.bytes().await.unwrap(), store.driver);
    }
    let url = format!("{}{encoded}", srv.files_url);
    let r = c
        .get(&url)
        .header(RANGE, "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 1000-1999/{}", store.driver.len())
    );
    assert_eq!(r.bytes().await.unwrap(), store.driver[1000..2000]);
    let r = c
        .get(&url)
        .header(RANGE, "bytes=999999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), store.driver.len().to_string());
    assert!(r.headers().get("last-modified").is_some());
    assert!(r.bytes().await.unwrap().is_empty());

    // A link that stays inside the tree is fine.
    let r = c
        .get(format!("{}link-inside.yaml", srv.files_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    srv.stop().await;
}

/// Sends `path` verbatim (no client-side normalisation of `..`), returns
/// the status line's code and the whole response.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

#[tokio::test]
async fn traversal_attempts_on_files_are_404_and_read_nothing_outside() {
    let (_store, srv) = started().await;
    let attempts = [
        "/../secret.txt",
        "/../../outside-secret",
        "/helm/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2E%2E/outside-secret",
        "/helm/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/..\\secret.txt",
        "/..%5csecret.txt",
        "/helm/..%5c..%5csecret.txt",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/link-to-secret",
        "/link-to-store/secret.txt",
        "/link-to-store/oci-layout",
        "/helm/stable/",
        "/helm",
        "/",
        "/./helm/stable/index.yaml",
        "/helm/./stable/index.yaml",
        "/secret.txt%00.yaml",
        "/index.json",
        "/oci-layout",
        "/blobs/sha256",
    ];
    for path in attempts {
        let (code, text) = raw_get(srv.addr, path).await;
        assert_eq!(code, 404, "{path}: {text}");
        assert!(!text.contains(SECRET), "{path} leaked the secret");
        assert!(!text.contains("root:"), "{path} leaked /etc/passwd");
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_separate_files_listener_takes_the_tree_off_the_registry_port() {
    let store = build_store();
    let mut opts = ServeOptions::new(store.dir(), loopback());
    opts.files_listen = Some(loopback());
    let srv = start(opts).await;
    let files = srv.files_addr.expect("a files address");
    assert_ne!(files, srv.addr);
    assert_eq!(srv.files_url, format!("http://{files}/"));
    let c = client();
    let r = c
        .get(format!("{}{DRIVER_PATH}", srv.files_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), store.driver);
    let r = c
        .get(format!("{}/{DRIVER_PATH}", srv.registry_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c
        .get(format!("{}/v2/", srv.registry_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(format!("{}v2/", srv.files_url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    srv.stop().await;
}

#[tokio::test]
async fn a_replaced_index_is_picked_up_without_a_restart() {
    let (store, srv) = started().await;
    let c = client();
    let repo = TestStore::repo("fixtures/multiarch");
    let url = format!("{}/v2/{repo}/manifests/2.0", srv.registry_url);
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let top = &store.set.image("fixtures/multiarch").top;
    let mut entries = store.index_entries();
    entries.push(entry(
        &repo,
        Some("2.0"),
        OCI_INDEX,
        &top.digest,
        top.size(),
    ));
    entries.push(entry(
        "brand/new",
        Some("1"),
        OCI_INDEX,
        &top.digest,
        top.size(),
    ));
    store.write_index(&entries);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), top.bytes);
    let (cat, _) = get_json(&c, &format!("{}/v2/_catalog", srv.registry_url)).await;
    assert!(cat["repositories"]
        .as_array()
        .unwrap()
        .contains(&Value::from("brand/new")));
    // A broken replacement keeps the last good view.
    std::fs::write(store.dir().join(".tmp"), b"{not json").unwrap();
    std::fs::rename(store.dir().join(".tmp"), store.dir().join("index.json")).unwrap();
    assert_eq!(c.get(&url).send().await.unwrap().status(), StatusCode::OK);
    srv.stop().await;
}

#[tokio::test]
async fn parallel_pulls_of_a_large_blob_keep_memory_flat() {
    use sha2::{Digest as _, Sha256};
    // A 96 MiB layer, pulled 4 times at once: a server that buffered blobs
    // would need hundreds of MiB more.
    const MIB: usize = 1024 * 1024;
    let store = build_store();
    let dir = store.dir();
    let chunk: Vec<u8> = (0..MIB).map(|i| (i * 7 % 253) as u8).collect();
    let mut hasher = Sha256::new();
    let tmp = dir.join("big.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).unwrap();
        for _ in 0..96 {
            f.write_all(&chunk).unwrap();
            hasher.update(&chunk);
        }
    }
    let big = ferry_bundle::Digest::from_hex(&hex_of(&hasher.finalize())).unwrap();
    std::fs::rename(&tmp, dir.join("blobs/sha256").join(big.hex())).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": ferry_testkit::fixtures::OCI_EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": big.to_string(), "size": 96 * MIB}],
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let md = ferry_bundle::Digest::of(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(md.hex()), &bytes).unwrap();
    let mut entries = store.index_entries();
    entries.push(entry(
        "big/layer",
        Some("1"),
        OCI_MANIFEST,
        &md,
        bytes.len() as u64,
    ));
    store.write_index(&entries);

    let srv = start(ServeOptions::new(dir, loopback())).await;
    let url = format!("{}/v2/big/layer/blobs/{big}", srv.registry_url);
    let before = peak_rss_kib();
    let pulls = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut r = client().get(&url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let mut h = Sha256::new();
            let mut n = 0usize;
            while let Some(c) = r.chunk().await.unwrap() {
                n += c.len();
                h.update(&c);
            }
            (n, hex_of(&h.finalize()))
        })
    });
    for p in pulls.collect::<Vec<_>>() {
        let (n, hex) = p.await.unwrap();
        assert_eq!(n, 96 * MIB);
        assert_eq!(hex, big.hex());
    }
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        grown_mib < 64,
        "peak RSS grew by {grown_mib} MiB while serving 4 x 96 MiB"
    );
    srv.stop().await;
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// VmHWM (peak resident set) of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
