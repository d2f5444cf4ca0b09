//! Independent clients pull from `ferry serve` and get the exact digests:
//! skopeo (containers/image) and Debian's containerd through a `hosts.toml`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::*;
use ferry_bundle::Digest;
use ferry_serve::ServeOptions;
use ferry_testkit::containerd::{require_containerd, Containerd};
use ferry_testkit::registry::require_tool;
use ferry_testkit::tools::{run_tool, skopeo_inspect_raw, skopeo_list_tags};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_inspects_every_image_with_its_digest() {
    require_tool("skopeo");
    let store = build_store();
    let srv = start(ServeOptions::new(store.dir(), loopback())).await;
    for image in store.set.images.clone() {
        let reference = format!(
            "{}/{}:{}",
            srv.host(),
            TestStore::repo(&image.repository),
            image.tag
        );
        let raw = blocking(move || skopeo_inspect_raw(&reference))
            .await
            .unwrap();
        assert_eq!(Digest::of(&raw), image.top.digest, "{}", image.repository);
        for child in &image.children {
            let by_digest = format!(
                "{}/{}@{}",
                srv.host(),
                TestStore::repo(&image.repository),
                child.digest
            );
            let raw = blocking(move || skopeo_inspect_raw(&by_digest))
                .await
                .unwrap();
            assert_eq!(Digest::of(&raw), child.digest);
        }
    }
    let repo = format!("{}/{}", srv.host(), TestStore::repo("fixtures/multiarch"));
    let tags = blocking(move || skopeo_list_tags(&repo)).await.unwrap();
    assert_eq!(tags, MULTIARCH_TAGS);
    srv.stop().await;
}

/// `skopeo copy --all --preserve-digests`, with TLS verification off on the
/// source (plain HTTP falls back).
fn skopeo_copy(src: &str, dst: &str) -> anyhow::Result<()> {
    run_tool(
        "skopeo",
        [
            "--insecure-policy",
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            src,
            dst,
        ],
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_whole_images_out_with_their_digests() {
    require_tool("skopeo");
    let store = build_store();
    let srv = start(ServeOptions::new(store.dir(), loopback())).await;
    let out = tempfile::tempdir().unwrap();
    // OCI images into an OCI layout (skopeo 1.9 would convert a Docker
    // schema2 manifest there, so those go to `dir:`, which keeps bytes).
    for (repo, oci) in [
        ("fixtures/multiarch", true),
        ("fixtures/many-layers", true),
        ("fixtures/trivy-db", true),
        ("fixtures/docker-list", false),
        ("fixtures/docker-v2", false),
    ] {
        let image = store.set.image(repo).clone();
        let src = format!(
            "docker://{}/{}:{}",
            srv.host(),
            TestStore::repo(repo),
            image.tag
        );
        let name = repo.replace('/', "-");
        if oci {
            let layout = out.path().join("oci");
            let dst = format!("oci:{}:{name}", layout.display());
            blocking(move || skopeo_copy(&src, &dst)).await.unwrap();
            let index: serde_json::Value =
                serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
            let found = index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name.as_str())
                .unwrap_or_else(|| panic!("{name} not in the copied layout: {index}"))
                .clone();
            assert_eq!(
                found["digest"],
                image.top.digest.to_string().as_str(),
                "{repo}"
            );
            for m in image.manifests() {
                let copied =
                    std::fs::read(layout.join("blobs/sha256").join(m.digest.hex())).unwrap();
                assert_eq!(copied, m.bytes, "{repo}: manifest {}", m.digest);
            }
            for b in &image.blobs {
                let copied =
                    std::fs::read(layout.join("blobs/sha256").join(b.digest.hex())).unwrap();
                assert_eq!(Digest::of(&copied), b.digest, "{repo}: blob");
            }
        } else {
            let target = out.path().join(&name);
            let dst = format!("dir:{}", target.display());
            blocking(move || skopeo_copy(&src, &dst)).await.unwrap();
            let top = std::fs::read(target.join("manifest.json")).unwrap();
            assert_eq!(Digest::of(&top), image.top.digest, "{repo}");
        }
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_docker_io_names_through_a_hosts_toml() {
    require_containerd();
    let store = build_store();
    let srv = start(ServeOptions::new(store.dir(), loopback())).await;
    let hosts = tempfile::tempdir().unwrap();
    let docker_io = hosts.path().join("docker.io");
    std::fs::create_dir_all(&docker_io).unwrap();
    std::fs::write(
        docker_io.join("hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n\
             [host.\"http://{}/v2/{PREFIX}\"]\n  \
             capabilities = [\"pull\", \"resolve\"]\n  \
             override_path = true\n",
            srv.host()
        ),
    )
    .unwrap();
    let ctd = blocking(Containerd::start).await.unwrap();
    let ctd = std::sync::Arc::new(ctd);
    for repo in [
        "fixtures/multiarch",
        "fixtures/docker-list",
        "fixtures/docker-v2",
    ] {
        let image = store.set.image(repo).clone();
        let reference = format!("docker.io/{}:{}", image.repository, image.tag);
        let hosts_dir = hosts.path().to_path_buf();
        let c = ctd.clone();
        let digest = blocking(move || c.pull(&reference, &hosts_dir, true))
            .await
            .unwrap();
        assert_eq!(digest, image.top.digest.to_string(), "{repo}");
    }
    srv.stop().await;
}
