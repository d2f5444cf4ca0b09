//! Import's lanes (`run/lanes.rs`): a zstd bundle's large blobs, each a
//! frame of its own, are streamed to the target beside the ordered read;
//! the ordered read still verifies each, and a blob whose bytes do not
//! match its digest never lands. Against Debian's `docker-registry`.
//!
//! One test in this file on purpose: the hash count is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_bundle::craft::{noise, Sample};
use ferry_bundle::digest::hashed_bytes;
use ferry_bundle::frames::{self, Frame, SeekTable};
use ferry_bundle::writer::{BundleWriter, Compression};
use ferry_bundle::Digest;
use ferry_import::target::{Mapping, Target};
use ferry_import::ImportOptions;
use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::registry::Registry;

const LARGE: usize = frames::OWN_FRAME_FROM as usize + 1000;

/// Images `app-0` … with a layer of `LARGE` bytes each and `small` with a
/// small one, each in its own repository (they share one config).
fn samples(n: u64) -> Vec<Sample> {
    let mut set: Vec<Sample> = (0..n)
        .map(|i| {
            Sample::new(
                &format!("example.org/lanes/app-{i}:1"),
                &noise(LARGE, i + 1),
            )
        })
        .collect();
    set.push(Sample::new("example.org/lanes/small:1", &noise(3000, 99)));
    set
}

/// One bundle of `set`, written by ferry's writer (frames and their seek
/// table): manifests, configs, then layers. `bad` layers are written with
/// other bytes of the same size under their digest. Cut into parts of
/// `split` bytes if asked; returns what to import.
fn write_bundle(set: &[Sample], path: &Path, bad: &[usize]) -> PathBuf {
    write_bundle_split(set, path, bad, None)
}

fn write_bundle_split(set: &[Sample], path: &Path, bad: &[usize], split: Option<u64>) -> PathBuf {
    let mut meta = set[0].meta.clone();
    meta.name = "lanes".into();
    meta.items = set.iter().flat_map(|s| s.meta.items.clone()).collect();
    meta.items.sort_by(|x, y| x.reference.cmp(&y.reference));
    let mut blobs: Vec<_> = set.iter().map(|s| s.meta.blobs[0].clone()).collect();
    // The samples share their config.
    blobs.push(set[0].meta.blobs[1].clone());
    blobs.extend(set.iter().map(|s| s.meta.blobs[2].clone()));
    meta.blobs = blobs;
    let index = ferry_bundle::meta::index_json(&meta.items);
    meta.index = ferry_bundle::meta::IndexPin {
        digest: Digest::of(&index),
        size: index.len() as u64,
    };
    let mut w = match split {
        Some(size) => BundleWriter::create_split(path, Compression::default(), size).unwrap(),
        None => BundleWriter::create(path, Compression::default()).unwrap(),
    };
    w.write_head(&meta.to_json(), None, &index).unwrap();
    for s in set {
        w.write_blob(
            &Digest::of(&s.manifest),
            s.manifest.len() as u64,
            &s.manifest[..],
        )
        .unwrap();
    }
    let config = &set[0].config;
    w.write_blob(&Digest::of(config), config.len() as u64, &config[..])
        .unwrap();
    for (i, s) in set.iter().enumerate() {
        let d = Digest::of(&s.layer);
        if bad.contains(&i) {
            let other = noise(s.layer.len(), 1000 + i as u64);
            w.write_verified_blob(&d, s.layer.len() as u64, &other[..])
                .unwrap();
        } else {
            w.write_blob(&d, s.layer.len() as u64, &s.layer[..])
                .unwrap();
        }
    }
    w.finish().unwrap().path
}

fn options(bundle: &Path, host: &str) -> ImportOptions {
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
        jobs: 4,
        chunk_size: 1 << 20,
        key: None,
        referrers: true,
    }
}

fn repo(host: &str, s: &Sample) -> Repo {
    Repo {
        host: host.into(),
        path: s.reference.split(':').next().unwrap().into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blobs_go_up_beside_the_ordered_read_and_only_when_verified() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(ClientConfig::default()).unwrap();
    let events: ferry_import::Events = Arc::new(|_| {});
    let set = samples(4);

    // A good bundle: every image lands, lanes streamed some of the large
    // layers, and each blob was still hashed once (by the ordered read;
    // a lane does not hash, the registry checks each digest).
    let registry = Registry::start().expect("docker-registry (apt-get install docker-registry)");
    let good = dir.path().join("good.tar.zst");
    write_bundle(&set, &good, &[]);
    let blob_bytes: u64 =
        set.iter().map(|s| s.layer.len() as u64).sum::<u64>() + set[0].config.len() as u64;
    let before = hashed_bytes();
    let report = ferry_import::import(&client, &options(&good, &registry.host()), &events)
        .await
        .unwrap();
    let hashed = hashed_bytes() - before;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.loaded.len(), set.len());
    assert!(report.blobs_laned >= 1, "no lane took a blob: {report:?}");
    assert!(report.blobs_laned <= 4);
    assert!(
        hashed >= blob_bytes && hashed < blob_bytes + (64 << 10),
        "{hashed} bytes hashed for {blob_bytes} bytes of blobs"
    );
    for s in &set {
        let r = repo(&registry.host(), s);
        assert_eq!(
            client.head_blob(&r, &Digest::of(&s.layer)).await.unwrap(),
            Some(s.layer.len() as u64),
            "{}",
            s.reference
        );
        assert!(client
            .list_tags(&r)
            .await
            .unwrap()
            .contains(&"1".to_string()));
    }

    // A bundle whose large layers do not match their digests, in valid
    // frames: the lanes stream them, but their uploads never complete (the
    // reader's verdict holds each last chunk back, and the registry checks
    // the digest), so they never land; the small image does.
    let registry = Registry::start().unwrap();
    let bad = dir.path().join("bad.tar.zst");
    write_bundle(&set, &bad, &[0, 1, 2, 3]);
    let report = ferry_import::import(&client, &options(&bad, &registry.host()), &events)
        .await
        .unwrap();
    let failed: Vec<&str> = report.failed.iter().map(|f| f.source.as_str()).collect();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert!(report.blobs_laned >= 1, "no lane took a blob: {report:?}");
    for (i, s) in set.iter().enumerate() {
        let r = repo(&registry.host(), s);
        let layer = client.head_blob(&r, &Digest::of(&s.layer)).await.unwrap();
        let tags = client.list_tags(&r).await.unwrap_or_default();
        if i < 4 {
            assert_eq!(layer, None, "{} landed with wrong bytes", s.reference);
            assert!(tags.is_empty(), "{}: {tags:?}", s.reference);
        } else {
            assert_eq!(layer, Some(s.layer.len() as u64), "{}", s.reference);
            assert_eq!(tags, vec!["1".to_string()]);
        }
    }

    // `--jobs 1`: one upload at a time, so no lane.
    let registry = Registry::start().unwrap();
    let one = ImportOptions {
        jobs: 1,
        ..options(&good, &registry.host())
    };
    let report = ferry_import::import(&client, &one, &events).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.blobs_laned, 0);

    // A split bundle: the lanes read their frames across the parts (cut
    // at 5 MB, inside the large layers' frames).
    let registry = Registry::start().unwrap();
    let parts = write_bundle_split(
        &set,
        &dir.path().join("split.tar.zst"),
        &[],
        Some(5_000_000),
    );
    assert!(parts.to_string_lossy().ends_with(".parts.json"));
    let report = ferry_import::import(&client, &options(&parts, &registry.host()), &events)
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(report.blobs_laned >= 1, "no lane took a blob: {report:?}");
    for s in &set {
        let r = repo(&registry.host(), s);
        assert_eq!(
            client.head_blob(&r, &Digest::of(&s.layer)).await.unwrap(),
            Some(s.layer.len() as u64)
        );
    }

    // A seek table that lies (a frame boundary moved by a byte, the file's
    // size kept): the lanes find no frame where it says and leave it to
    // the reader, which refuses the bundle; no manifest or tag lands.
    let registry = Registry::start().unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let len = SeekTable::len_from_footer(&bytes[bytes.len() - frames::FOOTER..]).unwrap() as usize;
    let table_at = bytes.len() - len;
    let mut lying: Vec<Frame> = SeekTable::parse(&bytes[table_at..])
        .unwrap()
        .frames()
        .to_vec();
    let big = lying
        .iter()
        .position(|f| u64::from(f.decompressed) >= frames::OWN_FRAME_FROM)
        .unwrap();
    lying[big - 1].compressed += 1;
    lying[big].compressed -= 1;
    let liar = dir.path().join("liar.tar.zst");
    std::fs::write(
        &liar,
        [&bytes[..table_at], &SeekTable::new(lying).encode()[..]].concat(),
    )
    .unwrap();
    let e = ferry_import::import(&client, &options(&liar, &registry.host()), &events)
        .await
        .expect_err("a lying seek table is refused");
    assert!(
        e.to_string().contains("bundle") && format!("{e:?}").contains("seek table"),
        "{e:?}"
    );
    for s in &set {
        let r = repo(&registry.host(), s);
        assert!(client.list_tags(&r).await.unwrap_or_default().is_empty());
        assert_eq!(
            client
                .head_manifest(&r, &Digest::of(&s.manifest).to_string())
                .await
                .ok()
                .flatten()
                .map(|(d, _, _)| d),
            None
        );
    }
}
