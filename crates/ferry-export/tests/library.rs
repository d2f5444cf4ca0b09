//! A library user runs export → verify → import with no CLI: the
//! operations of `ferry_export::ops`, `ferry_import::verify` and
//! `ferry_import::import`, against a real registry and a real store.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ferry_bundle::writer::Compression;
use ferry_export::ops::{self, ExportRun};
use ferry_export::{Event, Events};
use ferry_import::target::{Mapping, Target};
use ferry_import::verify::{VerifyError, VerifyOptions};
use ferry_registry::{Client, ClientConfig};
use ferry_testkit::fixtures::{push, write_spec_images, FixtureOptions, FixtureSet};
use ferry_testkit::registry::Registry;

fn run(dir: &Path, output: &Path) -> ExportRun {
    ExportRun {
        spec_path: dir.join("bundle.yaml"),
        output: output.to_path_buf(),
        lock: Some(dir.join("ferry.lock")),
        locked: false,
        cache: Some(dir.join("cache")),
        no_cache: false,
        jobs: 4,
        allow_missing_drivers: false,
        referrers: true,
        since: Vec::new(),
        compression: Compression::Zstd { level: 3 },
        sign_key: None,
        split: None,
        dry_run: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_verify_and_import_into_a_store_through_the_libraries() {
    let registry = Registry::start().expect("docker-registry (apt-get install docker-registry)");
    let set = FixtureSet::generate(&FixtureOptions::default());
    let client = Client::new(ClientConfig::default()).unwrap();
    push(&set, &client, &registry.host()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bundle.yaml"),
        format!(
            "apiVersion: ferry.dev/v1\nname: lib\nimages:\n{}",
            write_spec_images(&set, &registry.host())
        ),
    )
    .unwrap();

    // Export: events arrive through the callback, nothing is printed.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let ev: Events = Arc::new(move |e: Event| {
        if let Event::Resolved { reference, .. } = e {
            sink.lock().unwrap().push(reference);
        }
    });
    let loaded = ops::load(&dir.path().join("bundle.yaml"), &[]).unwrap();
    let out = dir.path().join("lib.tar.zst");
    let summary = match ops::export(&client, &loaded, run(dir.path(), &out), &ev)
        .await
        .unwrap()
    {
        ops::Exported::Written(s) => *s,
        other => panic!("not written: {other:?}"),
    };
    assert_eq!(summary.items, set.images.len());
    assert_eq!(seen.lock().unwrap().len(), set.images.len());
    assert!(out.is_file() && dir.path().join("ferry.lock").is_file());

    // Verify: one read, a report.
    let path = out.clone();
    let report = tokio::task::spawn_blocking(move || {
        ferry_import::verify::verify(&path, &VerifyOptions::default(), None)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.head.meta.items.len(), set.images.len());
    assert_eq!(report.read.blobs as usize, summary.blobs);
    assert!(report.signature.is_none() && report.policy.is_none());

    // A damaged copy is refused with a typed error naming the bundle.
    let bad = dir.path().join("bad.tar.zst");
    let mut bytes = std::fs::read(&out).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    let b = bad.clone();
    let refused = tokio::task::spawn_blocking(move || {
        ferry_import::verify::verify(&b, &VerifyOptions::default(), None)
    })
    .await
    .unwrap();
    match refused {
        Err(e @ VerifyError::Bundle { .. }) => {
            assert!(e.to_string().contains("bad.tar.zst"), "{e}")
        }
        other => panic!("a damaged bundle verified or failed otherwise: {other:?}"),
    }

    // Import into a store: every blob lands byte-exact.
    let store_dir = dir.path().join("store");
    let store = Arc::new(ferry_import::store::Store::open(&store_dir).unwrap());
    let opts = ferry_import::ImportOptions {
        bundle: out.clone(),
        target: Some(Target {
            host: "store".into(),
            prefix: String::new(),
            plain_http: None,
        }),
        files: None,
        store: Some(store),
        store_dir: None,
        mapping: Mapping::default(),
        dry_run: false,
        jobs: 4,
        chunk_size: 8 << 20,
        key: None,
        referrers: true,
    };
    let iev: ferry_import::Events = Arc::new(|_| {});
    let imported = ferry_import::import(&client, &opts, &iev).await.unwrap();
    assert!(imported.failed.is_empty(), "{:?}", imported.failed);
    assert_eq!(imported.loaded.len(), set.images.len());
    for blob in set.all_blobs() {
        let p = store_dir.join("blobs/sha256").join(blob.digest.hex());
        assert_eq!(
            std::fs::read(&p).unwrap(),
            blob.data.as_ref(),
            "{}",
            p.display()
        );
    }
    for m in set.all_manifests() {
        let p = store_dir.join("blobs/sha256").join(m.digest.hex());
        assert_eq!(
            std::fs::read(&p).unwrap(),
            m.bytes.as_ref(),
            "{}",
            p.display()
        );
    }
}
