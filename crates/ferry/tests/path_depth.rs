//! `import --max-path-depth N` (issue 16): registries that limit nesting
//! (GitLab, Harbor's project/repository) get every target within N path
//! components; two sources that collapse onto one name are refused before
//! anything is pushed, naming both.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;
use common::{ferry, text};

use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::registry::{require_tool, Registry};

#[test]
fn targets_stay_within_the_depth_and_collapsing_collisions_are_refused() {
    require_tool("docker-registry");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let upstream = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions::default());
    let client = Client::new(ClientConfig::default()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(push(&set, &client, &upstream.host())).unwrap();
    // Another image under a name that collapses like fixtures/docker-v2
    // once depth 1 joins the components: fixtures-docker/v2.
    let other = set.image("fixtures/many-layers");
    rt.block_on(async {
        let repo = Repo {
            host: upstream.host(),
            path: "fixtures-docker/v2".into(),
        };
        for b in &other.blobs {
            client
                .upload_blob(&repo, &b.digest, b.data.clone())
                .await
                .unwrap();
        }
        client
            .put_manifest(
                &repo,
                &other.tag,
                &other.top.media_type,
                other.top.bytes.clone(),
            )
            .await
            .unwrap();
    });
    let h = upstream.host();
    let docker = set.image("fixtures/docker-v2");
    let export = |name: &str, refs: &[String]| {
        let spec = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &spec,
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "ferry.dev/v1", "name": name, "images": refs,
            }))
            .unwrap(),
        )
        .unwrap();
        let out = dir.join(format!("{name}.tar.zst"));
        let o = ferry(&[
            "export",
            "-f",
            spec.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--cache",
            dir.join("cache").to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        out
    };
    // Depth 2 under a project: project/<the rest joined>.
    let one = export("one", &[docker.reference(&h)]);
    let target = Registry::start().unwrap();
    let o = ferry(&[
        "import",
        one.to_str().unwrap(),
        "--registry",
        &format!("{}/project", target.host()),
        "--max-path-depth",
        "2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let landed = Repo {
        host: target.host(),
        path: format!("project/{}-fixtures-docker-v2", h.replace(':', "-")),
    };
    let got = rt
        .block_on(client.get_manifest(&landed, &docker.tag))
        .unwrap();
    assert_eq!(got.digest, docker.top.digest, "byte-exact at {landed}");
    // Two sources collapsing onto one name: refused, both named, nothing pushed.
    let two = export(
        "two",
        &[
            docker.reference(&h),
            format!("{h}/fixtures-docker/v2:{}", other.tag),
        ],
    );
    let fresh = Registry::start().unwrap();
    let o = ferry(&[
        "import",
        two.to_str().unwrap(),
        "--registry",
        &fresh.host(),
        "--flatten",
        "--max-path-depth",
        "1",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("two sources map to one target"), "{t}");
    assert!(
        t.contains("fixtures/docker-v2") && t.contains("fixtures-docker/v2"),
        "{t}"
    );
    let tags = rt
        .block_on(client.list_tags(&Repo {
            host: fresh.host(),
            path: "fixtures-docker-v2".into(),
        }))
        .unwrap();
    assert!(tags.is_empty(), "nothing pushed: {tags:?}");
}
