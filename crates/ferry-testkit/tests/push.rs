//! Pushing the fixtures into a real registry keeps every byte: skopeo, an
//! independent client, reads back manifests whose digests are the fixtures'.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::time::Duration;

use ferry_bundle::Digest;
use ferry_registry::{Client, ClientConfig};
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet, OCI_INDEX, OCI_MANIFEST};
use ferry_testkit::proxy::{Action, Fault, FaultProxy};
use ferry_testkit::registry::{require_tool, Registry};
use ferry_testkit::tools::{skopeo_copy_all, skopeo_inspect_raw, skopeo_list_tags};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client() -> Client {
    Client::new(ClientConfig::default()).unwrap()
}

#[test]
fn pushed_fixtures_read_back_byte_exact_with_skopeo() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let reg = Registry::start().unwrap();
    let host = reg.host();
    let set = FixtureSet::generate(&FixtureOptions {
        big_layer_mib: Some(64),
        ..Default::default()
    });
    let rt = rt();
    rt.block_on(push(&set, &client(), &host)).unwrap();

    for image in &set.images {
        let raw = skopeo_inspect_raw(&image.reference(&host)).unwrap();
        assert_eq!(
            Digest::of(&raw),
            image.top.digest,
            "{}",
            image.reference(&host)
        );
        assert_eq!(raw, image.top.bytes);
        for child in &image.children {
            let r = image.digest_reference(&host, &child.digest);
            let raw = skopeo_inspect_raw(&r).unwrap();
            assert_eq!(Digest::of(&raw), child.digest, "{r}");
        }
        let tags = skopeo_list_tags(&format!("{host}/{}", image.repository)).unwrap();
        assert_eq!(tags, vec![image.tag.as_str()]);
    }

    // Every blob is there with its exact size.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    rt.block_on(async {
        for image in &set.images {
            for b in &image.blobs {
                let r = http
                    .head(format!(
                        "{}/v2/{}/blobs/{}",
                        reg.url(),
                        image.repository,
                        b.digest
                    ))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{} {}", image.repository, b.digest);
                assert_eq!(
                    r.headers()["content-length"],
                    b.size().to_string().as_str(),
                    "{} {}",
                    image.repository,
                    b.digest
                );
            }
        }
    });

    // Pushing again finds everything and changes nothing.
    rt.block_on(push(&set, &client(), &host)).unwrap();
    let multi = set.image("fixtures/multiarch");
    assert_eq!(
        Digest::of(&skopeo_inspect_raw(&multi.reference(&host)).unwrap()),
        multi.top.digest
    );
}

#[test]
fn skopeo_copies_the_pushed_images_keeping_digests() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let a = Registry::start().unwrap();
    let b = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions::default());
    rt().block_on(push(&set, &client(), &a.host())).unwrap();

    // Registry to registry: every image, Docker ones included.
    for image in &set.images {
        skopeo_copy_all(
            &format!("docker://{}", image.reference(&a.host())),
            &format!("docker://{}", image.reference(&b.host())),
        )
        .unwrap();
        let raw = skopeo_inspect_raw(&image.reference(&b.host())).unwrap();
        assert_eq!(Digest::of(&raw), image.top.digest, "{}", image.repository);
    }

    // Registry to an OCI layout: the OCI images keep their digests there too.
    let dir = tempfile::tempdir().unwrap();
    for image in set
        .images
        .iter()
        .filter(|i| i.top.media_type == OCI_INDEX || i.top.media_type == OCI_MANIFEST)
    {
        let layout = dir.path().join(image.repository.replace('/', "_"));
        skopeo_copy_all(
            &format!("docker://{}", image.reference(&a.host())),
            &format!("oci:{}:{}", layout.display(), image.tag),
        )
        .unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            image.top.digest.to_string(),
            "{}",
            image.repository
        );
    }
}

#[test]
fn a_push_through_the_fault_proxy_survives_retryable_faults() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let reg = Registry::start().unwrap();
    let proxy = FaultProxy::start(
        reg.addr(),
        vec![
            Fault::new(Action::Status(503))
                .on_method("POST")
                .on_path("/blobs/uploads/"),
            Fault::new(Action::TooManyRequests {
                retry_after_secs: 1,
            })
            .on_method("PUT")
            .on_path("/manifests/"),
        ],
    );
    // A 20 MiB layer goes up in PATCH chunks, streamed through the proxy.
    let set = FixtureSet::generate(&FixtureOptions {
        big_layer_mib: Some(20),
        many_layers: 3,
        ..Default::default()
    });
    let client = Client::new(ClientConfig {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        ..Default::default()
    })
    .unwrap();
    rt().block_on(push(&set, &client, &proxy.host())).unwrap();
    assert_eq!(proxy.faults_applied(), 2);
    assert!(proxy.requests().iter().any(|r| r.method == "PATCH"));
    for image in &set.images {
        let raw = skopeo_inspect_raw(&image.reference(&reg.host())).unwrap();
        assert_eq!(Digest::of(&raw), image.top.digest, "{}", image.repository);
    }
}

#[test]
fn tool_errors_carry_the_tools_stderr() {
    require_tool("skopeo");
    let err = skopeo_inspect_raw("127.0.0.1:1/nothing/here:1").unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("skopeo inspect --raw"), "{msg}");
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
}
