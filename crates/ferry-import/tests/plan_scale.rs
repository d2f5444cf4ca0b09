//! Planning and committing are near-linear in the number of items: a dry
//! run over a bundle of 30,000 items (images, provenance chains on them,
//! file items) plans every one of them, and an import of 14,000 into a
//! store lands every one. Nothing here times the run; a watchdog far above
//! what a linear run takes catches a quadratic step coming back (at these
//! sizes one costs minutes).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_bundle::artifact::{file_manifest, FileLayer, EMPTY_CONFIG};
use ferry_bundle::craft::{raw_tar, RawEntry};
use ferry_bundle::manifest::{OCI_EMPTY, OCI_MANIFEST};
use ferry_bundle::meta::{self, BlobMeta, BundleMeta, IndexPin, Item, Kind, Role};
use ferry_bundle::Digest;
use ferry_import::files::{FileTarget, FileTargetOptions};
use ferry_import::target::{Mapping, Target};
use ferry_import::ImportOptions;
use ferry_registry::{Client, ClientConfig};

const IMAGES: usize = 18_000;
const SIGNATURES: usize = 4_000;
const SIGNATURES_OF_SIGNATURES: usize = 1_000;
const FILES: usize = 7_000;
const ITEMS: usize = IMAGES + SIGNATURES + SIGNATURES_OF_SIGNATURES + FILES;

const IMAGE_CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

struct Built {
    items: Vec<Item>,
    manifests: Vec<Vec<u8>>,
    blobs: Vec<(BlobMeta, Vec<u8>)>,
}

impl Built {
    fn image_manifest(layer: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG_TYPE, "digest": Digest::of(IMAGE_CONFIG).to_string(), "size": IMAGE_CONFIG.len()},
            "layers": [{"mediaType": LAYER_TYPE, "digest": Digest::of(layer).to_string(), "size": layer.len()}],
        }))
        .unwrap()
    }

    fn push(
        &mut self,
        kind: Kind,
        reference: String,
        manifest: Vec<u8>,
        subject: Option<Digest>,
        path: Option<String>,
    ) -> Digest {
        let digest = Digest::of(&manifest);
        self.items.push(Item {
            kind,
            reference,
            digest: digest.clone(),
            media_type: OCI_MANIFEST.into(),
            size: manifest.len() as u64,
            platforms: vec![],
            path,
            subject,
        });
        self.manifests.push(manifest);
        digest
    }

    fn layer(&mut self, data: Vec<u8>, media_type: &str) {
        self.blobs.push((
            BlobMeta {
                digest: Digest::of(&data),
                size: data.len() as u64,
                role: Role::Layer,
                media_type: Some(media_type.into()),
            },
            data,
        ));
    }
}

/// How many items of each shape.
#[derive(Clone, Copy)]
struct Shape {
    images: usize,
    signatures: usize,
    signatures_of_signatures: usize,
    files: usize,
}

impl Shape {
    fn items(&self) -> usize {
        self.images + self.signatures + self.signatures_of_signatures + self.files
    }
}

const DRY_RUN: Shape = Shape {
    images: IMAGES,
    signatures: SIGNATURES,
    signatures_of_signatures: SIGNATURES_OF_SIGNATURES,
    files: FILES,
};

fn bundle(shape: Shape) -> Vec<u8> {
    let mut b = Built {
        items: Vec::new(),
        manifests: Vec::new(),
        blobs: Vec::new(),
    };
    for (data, mt) in [(IMAGE_CONFIG, CONFIG_TYPE), (EMPTY_CONFIG, OCI_EMPTY)] {
        b.blobs.push((
            BlobMeta {
                digest: Digest::of(data),
                size: data.len() as u64,
                role: Role::Config,
                media_type: Some(mt.into()),
            },
            data.to_vec(),
        ));
    }
    let mut images = Vec::new();
    for i in 0..shape.images {
        let layer = format!("layer {i}").into_bytes();
        let m = Built::image_manifest(&layer);
        b.layer(layer, LAYER_TYPE);
        // Many repositories, several tags in each.
        images.push(b.push(
            Kind::Image,
            format!("r.example/team{}/app{}:v{i}", i % 7, i / 5),
            m,
            None,
            None,
        ));
    }
    let mut sigs = Vec::new();
    for (i, subject) in images.iter().take(shape.signatures).enumerate() {
        let layer = format!("signature {i}").into_bytes();
        let m = Built::image_manifest(&layer);
        b.layer(layer, LAYER_TYPE);
        let repo = format!("r.example/team{}/app{}", i % 7, i / 5);
        sigs.push(b.push(
            Kind::Image,
            format!("{repo}:sha256-{}.sig", subject.hex()),
            m,
            Some(subject.clone()),
            None,
        ));
    }
    for (i, subject) in sigs.iter().take(shape.signatures_of_signatures).enumerate() {
        let layer = format!("signature of a signature {i}").into_bytes();
        let m = Built::image_manifest(&layer);
        b.layer(layer, LAYER_TYPE);
        let repo = format!("r.example/team{}/app{}", i % 7, i / 5);
        b.push(
            Kind::Image,
            format!("{repo}:sha256-{}.sig", subject.hex()),
            m,
            Some(subject.clone()),
            None,
        );
    }
    for i in 0..shape.files {
        let data = format!("file {i}").into_bytes();
        let layer = FileLayer {
            digest: Digest::of(&data),
            size: data.len() as u64,
            media_type: "application/octet-stream".into(),
            title: format!("f{i}"),
        };
        b.layer(data, "application/octet-stream");
        let m = file_manifest(Kind::File, &[layer], &Default::default());
        b.push(
            Kind::File,
            format!("https://f.example/{i}"),
            m,
            None,
            Some(format!("files/d{}/f{i}", i / 100)),
        );
    }
    b.items.sort_by(|x, y| x.reference.cmp(&y.reference));
    let index = meta::index_json(&b.items);
    let mut blob_metas: Vec<BlobMeta> = b
        .manifests
        .iter()
        .map(|m| BlobMeta {
            digest: Digest::of(m),
            size: m.len() as u64,
            role: Role::Manifest,
            media_type: Some(OCI_MANIFEST.into()),
        })
        .collect();
    blob_metas.extend(b.blobs.iter().map(|(m, _)| m.clone()));
    let m = BundleMeta {
        format_version: meta::FORMAT_VERSION,
        tool: "ferry test".into(),
        name: "scale".into(),
        index: IndexPin {
            digest: Digest::of(&index),
            size: index.len() as u64,
        },
        items: b.items,
        blobs: blob_metas,
        absent: vec![],
        base: vec![],
        verification: None,
        origin: None,
    };
    let mut entries = vec![
        RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        RawEntry::file(meta::META_PATH, &m.to_json()),
        RawEntry::file("index.json", &index),
    ];
    entries.extend(
        b.manifests
            .iter()
            .map(|m| RawEntry::file(&Digest::of(m).layout_path(), m)),
    );
    entries.extend(
        b.blobs
            .iter()
            .map(|(m, d)| RawEntry::file(&m.digest.layout_path(), d)),
    );
    raw_tar(&entries)
}

#[test]
fn a_dry_run_plans_thirty_thousand_items() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scale.tar");
    std::fs::write(&path, bundle(DRY_RUN)).unwrap();
    let store_dir = dir.path().join("store");
    let store = Arc::new(ferry_import::store::Store::open(&store_dir).unwrap());
    let files = FileTarget::new(
        store_dir.join("files").to_str().unwrap(),
        FileTargetOptions::default(),
    )
    .unwrap();
    let opts = ImportOptions {
        bundle: path,
        target: Some(Target {
            host: "store".into(),
            prefix: String::new(),
            plain_http: None,
        }),
        files: Some(files),
        store: Some(store),
        store_dir: None,
        mapping: Mapping::default(),
        dry_run: true,
        jobs: 4,
        chunk_size: 16 << 20,
        key: None,
        referrers: true,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let report = rt
        .block_on(async {
            let client = Client::new(ClientConfig::default()).unwrap();
            let events: ferry_import::Events = Arc::new(|_| {});
            // Only a hang or a quadratic step comes near this.
            tokio::time::timeout(
                Duration::from_secs(120),
                ferry_import::import(&client, &opts, &events),
            )
            .await
        })
        .expect("planning 30,000 items took over 120 s: a quadratic step is back")
        .unwrap();
    eprintln!(
        "planned {} items in {:.2} s",
        report.plan.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(report.dry_run);
    assert_eq!(report.plan.len(), ITEMS);
    let targets: HashSet<&str> = report.plan.iter().map(|p| p.target.as_str()).collect();
    assert_eq!(targets.len(), ITEMS, "every item has a target of its own");
    let files = report.plan.iter().filter(|p| p.kind == "file").count();
    assert_eq!(files, FILES);
    // Each image, signature and file brings one blob of its own; the shared
    // image config is uploaded once.
    let uploads: usize = report
        .plan
        .iter()
        .filter(|p| p.kind == "image")
        .map(|p| p.upload_blobs)
        .sum();
    assert_eq!(uploads, IMAGES + SIGNATURES + SIGNATURES_OF_SIGNATURES + 1);
    // Provenance comes after its subject, and a signature of a signature
    // after the signature.
    let position: std::collections::HashMap<&ferry_bundle::Digest, usize> = report
        .plan
        .iter()
        .enumerate()
        .map(|(i, p)| (&p.digest, i))
        .collect();
    let sig_positions: Vec<usize> = report
        .plan
        .iter()
        .enumerate()
        .filter(|(_, p)| p.source.ends_with(".sig"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(sig_positions.len(), SIGNATURES + SIGNATURES_OF_SIGNATURES);
    let first_sig = sig_positions[0];
    assert!(report.plan[..first_sig]
        .iter()
        .all(|p| !p.source.ends_with(".sig")));
    for &i in &sig_positions {
        let source = &report.plan[i].source;
        let hex = source
            .rsplit_once(":sha256-")
            .and_then(|(_, t)| t.strip_suffix(".sig"))
            .unwrap();
        let subject = position[&ferry_bundle::Digest::from_hex(hex).unwrap()];
        assert!(subject < i, "{source} planned before its subject");
    }
}

#[test]
fn an_import_into_a_store_lands_fourteen_thousand_items() {
    // The commit side too: a tag lookup per item, the store's index, the
    // receipt, the file tree. (Before the store kept its tags in a map, each
    // lookup read index.json again: 12,000 items took 143 s, against 19 s
    // now, both in a debug build.)
    let shape = Shape {
        images: 10_000,
        signatures: 1_000,
        signatures_of_signatures: 1_000,
        files: 2_000,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scale.tar");
    std::fs::write(&path, bundle(shape)).unwrap();
    let store_dir = dir.path().join("store");
    let store = Arc::new(ferry_import::store::Store::open(&store_dir).unwrap());
    let files = FileTarget::new(
        store_dir.join("files").to_str().unwrap(),
        FileTargetOptions::default(),
    )
    .unwrap();
    let opts = ImportOptions {
        bundle: path,
        target: Some(Target {
            host: "store".into(),
            prefix: String::new(),
            plain_http: None,
        }),
        files: Some(files),
        store: Some(store),
        store_dir: None,
        mapping: Mapping::default(),
        dry_run: false,
        jobs: 4,
        chunk_size: 16 << 20,
        key: None,
        referrers: true,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let report = rt
        .block_on(async {
            let client = Client::new(ClientConfig::default()).unwrap();
            let events: ferry_import::Events = Arc::new(|_| {});
            tokio::time::timeout(
                Duration::from_secs(150),
                ferry_import::import(&client, &opts, &events),
            )
            .await
        })
        .expect("importing 14,000 items took over 150 s: a quadratic step is back")
        .unwrap();
    eprintln!(
        "imported {} items in {:.2} s",
        report.loaded.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(report.failed.is_empty(), "{:?}", &report.failed[..1]);
    assert_eq!(report.loaded.len(), shape.items());
    assert_eq!(report.files_written, shape.files);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store_dir.join("index.json")).unwrap()).unwrap();
    // One entry per registry item, and one per file item (its origin, for
    // `export --from` the store).
    assert_eq!(
        index["manifests"].as_array().unwrap().len(),
        shape.images + shape.signatures + shape.signatures_of_signatures + shape.files
    );
    assert_eq!(
        std::fs::read(store_dir.join("files/files/d19/f1999")).unwrap(),
        b"file 1999"
    );
}
