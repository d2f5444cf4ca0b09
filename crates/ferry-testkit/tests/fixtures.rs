//! The fixture generator: deterministic, self-consistent, shaped as documented.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::HashMap;
use std::io::Read;
use std::time::Instant;

use ferry_bundle::Digest;
use ferry_testkit::fixtures::*;
use serde_json::Value;

fn small() -> FixtureSet {
    FixtureSet::generate(&FixtureOptions::default())
}

fn digests(set: &FixtureSet) -> Vec<String> {
    set.all_manifests()
        .map(|m| m.digest.to_string())
        .chain(set.all_blobs().map(|b| b.digest.to_string()))
        .collect()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("layers are valid gzip");
    out
}

#[test]
fn generating_twice_gives_the_same_bytes() {
    let a = small();
    let b = small();
    assert_eq!(digests(&a), digests(&b));
    for (x, y) in a.all_manifests().zip(b.all_manifests()) {
        assert_eq!(x.bytes, y.bytes);
    }
}

#[test]
fn another_seed_gives_other_digests() {
    let a = small();
    let b = FixtureSet::generate(&FixtureOptions {
        seed: 7,
        ..Default::default()
    });
    assert_ne!(
        a.image("fixtures/multiarch").top.digest,
        b.image("fixtures/multiarch").top.digest
    );
    // The empty config is the same everywhere, but no layer is.
    let a_layers: std::collections::HashSet<_> = a.all_blobs().map(|b| b.digest.clone()).collect();
    let shared = b
        .all_blobs()
        .filter(|x| a_layers.contains(&x.digest))
        .map(|x| x.media_type.clone())
        .collect::<Vec<_>>();
    assert_eq!(shared, vec![OCI_EMPTY.to_string()]);
}

#[test]
fn the_set_has_the_documented_images() {
    let set = small();
    let names: Vec<String> = set
        .images
        .iter()
        .map(|i| format!("{}:{}", i.repository, i.tag))
        .collect();
    assert_eq!(
        names,
        [
            "fixtures/multiarch:1.0",
            "fixtures/docker-v2:1.0",
            "fixtures/docker-list:1.0",
            "fixtures/many-layers:1.0",
            "fixtures/trivy-db:2",
            "fixtures/no-mediatype:1.0",
        ]
    );
    assert!(set.get("fixtures/big").is_none());
}

#[test]
fn every_descriptor_matches_its_blob_or_child() {
    let set = small();
    for image in &set.images {
        let blobs: HashMap<&Digest, _> = image.blobs.iter().map(|b| (&b.digest, b)).collect();
        for b in &image.blobs {
            assert_eq!(Digest::of(&b.data), b.digest, "{}", image.repository);
        }
        for m in image.manifests() {
            assert_eq!(Digest::of(&m.bytes), m.digest);
            let doc = m.json();
            if m.is_index() {
                let list = doc["manifests"].as_array().unwrap();
                assert_eq!(list.len(), image.children.len());
                for (d, child) in list.iter().zip(&image.children) {
                    assert_eq!(d["digest"], child.digest.to_string());
                    assert_eq!(d["size"], child.size());
                    assert_eq!(d["mediaType"], child.media_type.as_str());
                    let p = &d["platform"];
                    let mut plat = format!(
                        "{}/{}",
                        p["os"].as_str().unwrap(),
                        p["architecture"].as_str().unwrap()
                    );
                    if let Some(v) = p["variant"].as_str() {
                        plat = format!("{plat}/{v}");
                    }
                    assert_eq!(Some(plat), child.platform);
                }
                continue;
            }
            let descs = std::iter::once(&doc["config"]).chain(doc["layers"].as_array().unwrap());
            for d in descs {
                let digest: Digest = d["digest"].as_str().unwrap().parse().unwrap();
                let blob = blobs.get(&digest).unwrap_or_else(|| {
                    panic!("{}: {digest} is not among the blobs", image.repository)
                });
                assert_eq!(
                    d["size"],
                    blob.size(),
                    "{}: size of {digest}",
                    image.repository
                );
            }
        }
        // Every blob is used by some manifest of the image.
        let used: Vec<String> = image
            .manifests()
            .filter(|m| !m.is_index())
            .flat_map(|m| {
                let doc = m.json();
                std::iter::once(doc["config"]["digest"].as_str().unwrap().to_string())
                    .chain(
                        doc["layers"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|l| l["digest"].as_str().unwrap().to_string()),
                    )
                    .collect::<Vec<_>>()
            })
            .collect();
        for b in &image.blobs {
            assert!(
                used.contains(&b.digest.to_string()),
                "{}: unused blob {}",
                image.repository,
                b.digest
            );
        }
    }
}

#[test]
fn configs_diff_ids_are_the_uncompressed_layer_digests() {
    let set = small();
    for image in set
        .images
        .iter()
        .filter(|i| i.repository != "fixtures/trivy-db")
    {
        for m in image.manifests().filter(|m| !m.is_index()) {
            let doc = m.json();
            let config_digest: Digest = doc["config"]["digest"].as_str().unwrap().parse().unwrap();
            let config: Value =
                serde_json::from_slice(&image.blob(&config_digest).unwrap().data).unwrap();
            assert_eq!(config["rootfs"]["type"], "layers");
            assert!(config["architecture"].is_string() && config["os"] == "linux");
            assert!(config["config"]["Cmd"].is_array());
            let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_string())
                .collect();
            let layers = doc["layers"].as_array().unwrap();
            assert_eq!(diff_ids.len(), layers.len());
            for (l, diff_id) in layers.iter().zip(&diff_ids) {
                let digest: Digest = l["digest"].as_str().unwrap().parse().unwrap();
                let tar = gunzip(&image.blob(&digest).unwrap().data);
                assert_eq!(&Digest::of(&tar).to_string(), diff_id);
            }
            if let Some(p) = &m.platform {
                let arch = p.split('/').nth(1).unwrap();
                assert_eq!(config["architecture"], arch);
            }
        }
    }
}

#[test]
fn layers_are_reproducible_tars_with_a_fixed_gzip_header() {
    let set = small();
    for blob in set.all_blobs().filter(|b| b.media_type.contains("tar")) {
        let d = &blob.data;
        assert_eq!(&d[..3], &[0x1f, 0x8b, 8], "gzip magic and deflate");
        assert_eq!(d[3], 0, "no FNAME or other flags");
        assert_eq!(&d[4..8], &[0, 0, 0, 0], "mtime 0");
        let tar = gunzip(d);
        let mut archive = tar::Archive::new(&tar[..]);
        let mut paths = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.gid().unwrap(), 0);
            paths.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert!(!paths.is_empty());
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "entries are sorted");
    }
}

#[test]
fn the_multiarch_index_children_share_the_base_layer() {
    let set = small();
    let image = set.image("fixtures/multiarch");
    assert_eq!(image.top.media_type, OCI_INDEX);
    assert_eq!(image.top.json()["mediaType"], OCI_INDEX);
    let platforms: Vec<_> = image
        .children
        .iter()
        .map(|c| c.platform.clone().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8", "linux/s390x"]);
    let first_layers: Vec<Value> = image
        .children
        .iter()
        .map(|c| c.json()["layers"][0].clone())
        .collect();
    assert!(first_layers.iter().all(|l| l == &first_layers[0]));
    assert_eq!(
        image.child("linux/arm64/v8").unwrap().json()["mediaType"],
        OCI_MANIFEST
    );
}

#[test]
fn base_layers_are_shared_across_images() {
    let set = small();
    let base = set.image("fixtures/multiarch").children[0].json()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let users: Vec<&str> = set
        .images
        .iter()
        .filter(|i| i.blobs.iter().any(|b| b.digest.to_string() == base))
        .map(|i| i.repository.as_str())
        .collect();
    assert_eq!(
        users,
        [
            "fixtures/multiarch",
            "fixtures/docker-v2",
            "fixtures/docker-list",
            "fixtures/many-layers",
            "fixtures/no-mediatype"
        ]
    );
    // all_blobs lists it once; the per-image lists add up to more.
    let per_image: usize = set.images.iter().map(|i| i.blobs.len()).sum();
    assert!(set.all_blobs().count() < per_image);
    assert_eq!(
        set.total_blob_bytes(),
        set.all_blobs().map(|b| b.size()).sum::<u64>()
    );
}

#[test]
fn the_docker_images_use_schema2_media_types() {
    let set = small();
    let v2 = set.image("fixtures/docker-v2");
    let doc = v2.top.json();
    assert_eq!(v2.top.media_type, DOCKER_MANIFEST);
    assert_eq!(doc["mediaType"], DOCKER_MANIFEST);
    assert_eq!(doc["config"]["mediaType"], DOCKER_CONFIG);
    assert!(doc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["mediaType"] == DOCKER_LAYER_GZIP));

    let list = set.image("fixtures/docker-list");
    assert_eq!(list.top.media_type, DOCKER_LIST);
    assert_eq!(list.top.json()["mediaType"], DOCKER_LIST);
    assert_eq!(list.children.len(), 2);
    for c in &list.children {
        assert_eq!(c.media_type, DOCKER_MANIFEST);
        assert_eq!(c.json()["config"]["mediaType"], DOCKER_CONFIG);
    }
    assert_eq!(list.top.json()["manifests"][1]["platform"]["variant"], "v8");
}

#[test]
fn many_layers_has_forty_layers() {
    let set = small();
    let doc = set.image("fixtures/many-layers").top.json();
    assert_eq!(doc["layers"].as_array().unwrap().len(), 40);
    let set = FixtureSet::generate(&FixtureOptions {
        many_layers: 5,
        ..Default::default()
    });
    assert_eq!(
        set.image("fixtures/many-layers").top.json()["layers"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn the_trivy_artifact_has_the_shape_trivy_requires() {
    let set = small();
    let image = set.image("fixtures/trivy-db");
    assert_eq!(image.tag, "2");
    let doc = image.top.json();
    assert_eq!(doc["mediaType"], OCI_MANIFEST);
    assert_eq!(doc["artifactType"], TRIVY_ARTIFACT_TYPE);
    assert_eq!(
        doc["config"],
        serde_json::json!({"mediaType": OCI_EMPTY, "digest": OCI_EMPTY_DIGEST, "size": 2})
    );
    let layers = doc["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], TRIVY_DB_LAYER);
    assert_eq!(layers[0]["annotations"][TITLE_ANNOTATION], "db.tar.gz");
    let empty = image.blob(&OCI_EMPTY_DIGEST.parse().unwrap()).unwrap();
    assert_eq!(&empty.data[..], b"{}");
    let db = image
        .blob(&layers[0]["digest"].as_str().unwrap().parse().unwrap())
        .unwrap();
    let tar = gunzip(&db.data);
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["metadata.json", "trivy.db"]);
}

#[test]
fn one_manifest_has_no_media_type_field() {
    let set = small();
    let image = set.image("fixtures/no-mediatype");
    let doc = image.top.json();
    assert!(doc.get("mediaType").is_none());
    assert_eq!(doc["schemaVersion"], 2);
    assert_eq!(
        image.top.media_type, OCI_MANIFEST,
        "pushed as an OCI manifest"
    );
}

#[test]
fn the_big_image_has_a_large_valid_layer_and_is_fast_to_make() {
    let t = Instant::now();
    let set = FixtureSet::generate(&FixtureOptions {
        big_layer_mib: Some(64),
        ..Default::default()
    });
    let took = t.elapsed();
    eprintln!("generated the set with a 64 MiB layer in {took:?}");
    let big = set.image("fixtures/big");
    let doc = big.top.json();
    let layer = &doc["layers"][1];
    assert!(layer["size"].as_u64().unwrap() >= 64 * 1024 * 1024);
    let blob = big
        .blob(&layer["digest"].as_str().unwrap().parse().unwrap())
        .unwrap();
    let tar = gunzip(&blob.data);
    assert!(tar.len() as u64 >= 64 * 1024 * 1024);
    let config: Value = serde_json::from_slice(
        &big.blob(&doc["config"]["digest"].as_str().unwrap().parse().unwrap())
            .unwrap()
            .data,
    )
    .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][1],
        Digest::of(&tar).to_string()
    );
    // The rest of the set does not change when the big image is added.
    let small = small();
    for i in &small.images {
        assert_eq!(set.image(&i.repository).top.digest, i.top.digest);
    }
}

#[test]
fn generating_the_small_set_is_quick() {
    let t = Instant::now();
    let set = small();
    let took = t.elapsed();
    eprintln!(
        "generated {} blobs ({} bytes) in {took:?}",
        set.all_blobs().count(),
        set.total_blob_bytes()
    );
    assert!(set.total_blob_bytes() > 0);
}

#[test]
fn spec_lines_name_every_image_at_the_host() {
    let set = small();
    let lines = write_spec_images(&set, "127.0.0.1:5001");
    assert!(lines.starts_with("  - 127.0.0.1:5001/fixtures/multiarch:1.0\n"));
    assert!(lines.contains("  - 127.0.0.1:5001/fixtures/trivy-db:2\n"));
    assert_eq!(lines.lines().count(), set.images.len());
    assert_eq!(set.references("h:1")[1], "h:1/fixtures/docker-v2:1.0");
}
