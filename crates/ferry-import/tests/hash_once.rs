//! Each blob is hashed once on import: the bundle reader's hash is the
//! check, and neither the uploads (into a registry) nor the store's blob
//! directory hash the bytes again. Counted with `ferry-bundle`'s
//! `hash-count` feature: every sha256 ferry computes goes through
//! `ferry_bundle::digest`, which then counts the bytes it hashed.
//!
//! One test in this file on purpose: the count is process-wide, so nothing
//! else may hash in this test binary while it runs.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::Arc;

use ferry_bundle::craft::{noise, raw_tar, zstd, RawEntry, Sample};
use ferry_bundle::digest::hashed_bytes;
use ferry_bundle::Digest;
use ferry_import::target::{Mapping, Target};
use ferry_import::ImportOptions;
use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::registry::Registry;

/// One bundle of `samples` (they share the config): manifests, the
/// config, then the layers, as the writer orders them.
fn bundle(samples: &[Sample]) -> Vec<u8> {
    let mut meta = samples[0].meta.clone();
    meta.name = "hash-once".into();
    meta.items = samples.iter().flat_map(|s| s.meta.items.clone()).collect();
    meta.items.sort_by(|x, y| x.reference.cmp(&y.reference));
    let mut blobs: Vec<_> = samples.iter().map(|s| s.meta.blobs[0].clone()).collect();
    blobs.push(samples[0].meta.blobs[1].clone());
    blobs.extend(samples.iter().map(|s| s.meta.blobs[2].clone()));
    meta.blobs = blobs;
    let index = ferry_bundle::meta::index_json(&meta.items);
    meta.index = ferry_bundle::meta::IndexPin {
        digest: Digest::of(&index),
        size: index.len() as u64,
    };
    let blob = |x: &[u8]| RawEntry::file(&Digest::of(x).layout_path(), x);
    let mut entries = vec![
        RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        RawEntry::file("ferry/bundle.json", &meta.to_json()),
        RawEntry::file("index.json", &index),
    ];
    entries.extend(samples.iter().map(|s| blob(&s.manifest)));
    entries.push(blob(&samples[0].config));
    entries.extend(samples.iter().map(|s| blob(&s.layer)));
    zstd(&raw_tar(&entries))
}

fn options(bundle: &std::path::Path, host: &str) -> ImportOptions {
    ImportOptions {
        bundle: bundle.to_path_buf(),
        target: Some(Target {
            host: host.into(),
            prefix: String::new(),
            plain_http: None,
        }),
        files: None,
        store: None,
        store_dir: None,
        mapping: Mapping::default(),
        dry_run: false,
        jobs: 3,
        // Blobs above 1 MiB stream in 1 MiB chunks; smaller ones go whole.
        chunk_size: 1 << 20,
        key: None,
        referrers: true,
    }
}

/// Bytes hashed while `f` runs.
async fn hashed_during<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    let before = hashed_bytes();
    let out = f.await;
    (out, hashed_bytes() - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_blob_is_hashed_once_on_import_into_a_registry_and_a_store() {
    let registry = Registry::start().expect("docker-registry (apt-get install docker-registry)");
    let dir = tempfile::tempdir().unwrap();
    // A streamed layer (3 MiB in 1 MiB chunks), a layer sent whole, and
    // the config they share.
    let set = [
        Sample::new("example.org/once/big:1", &noise(3 << 20, 1)),
        Sample::new("example.org/once/small:1", &noise(300 << 10, 2)),
    ];
    let path = dir.path().join("once.tar.zst");
    std::fs::write(&path, bundle(&set)).unwrap();
    let blob_bytes: u64 =
        set.iter().map(|s| s.layer.len() as u64).sum::<u64>() + set[0].config.len() as u64;
    // Everything else hashed (bundle.json, index.json, the manifests, each
    // a few times as the import plans and pushes them) is a few KiB.
    let slack = 64 << 10;
    let client = Client::new(ClientConfig::default()).unwrap();
    let events: ferry_import::Events = Arc::new(|_| {});

    // Into a registry: the uploads send the reader's checked bytes.
    let opts = options(&path, &registry.host());
    let (report, hashed) = hashed_during(ferry_import::import(&client, &opts, &events)).await;
    let report = report.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.blobs_uploaded, 3);
    assert!(
        hashed >= blob_bytes && hashed < blob_bytes + slack,
        "{hashed} bytes hashed for {blob_bytes} bytes of blobs (twice would be {})",
        2 * blob_bytes
    );
    // Every blob is at the registry, whole (it checked each digest).
    for s in &set {
        let repo = Repo {
            host: registry.host(),
            path: s.reference.split(':').next().unwrap().into(),
        };
        let layer = Digest::of(&s.layer);
        assert_eq!(
            client.head_blob(&repo, &layer).await.unwrap(),
            Some(s.layer.len() as u64)
        );
    }

    // Into a store: the blob directory counts the reader's checked bytes.
    let store_dir = dir.path().join("store");
    let store = Arc::new(ferry_import::store::Store::open(&store_dir).unwrap());
    let opts = ImportOptions {
        store: Some(store),
        ..options(&path, "store")
    };
    let (report, hashed) = hashed_during(ferry_import::import(&client, &opts, &events)).await;
    let report = report.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(
        hashed >= blob_bytes && hashed < blob_bytes + slack,
        "{hashed} bytes hashed for {blob_bytes} bytes of blobs (twice would be {})",
        2 * blob_bytes
    );
    for s in &set {
        for bytes in [&s.layer, &s.config, &s.manifest] {
            let p = store_dir.join("blobs/sha256").join(Digest::of(bytes).hex());
            assert_eq!(&std::fs::read(&p).unwrap(), bytes, "{}", p.display());
        }
    }
}
