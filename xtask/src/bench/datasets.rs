//! The data set: generated or loaded, the export spec that names it, and how
//! many of its references kept their digest at a target.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use ferry_bundle::Digest;
use ferry_testkit::dataset::{Dataset, DatasetOptions};

use super::Options;

/// The data set of `opts.scale` under `data_dir`, generated if missing.
pub(super) fn load_set(opts: &Options, data_dir: &Path) -> Result<Dataset> {
    let t = Instant::now();
    let set = Dataset::load_or_generate(
        data_dir,
        &DatasetOptions {
            scale_gb: opts.scale,
            ..DatasetOptions::default()
        },
        &|line| eprintln!("xtask bench: {line}"),
    )?;
    eprintln!(
        "xtask bench: data set ready in {:.1} s under {}: {} images, {} blobs, {:.1} MB",
        t.elapsed().as_secs_f64(),
        data_dir.display(),
        set.images.len(),
        set.blobs.len(),
        set.blob_bytes() as f64 / 1e6
    );
    Ok(set)
}

/// How many of `images` the registry at `host` serves with the source's digest.
pub(super) fn digests_kept(images: &[ferry_testkit::dataset::DataImage], host: &str) -> usize {
    images
        .iter()
        .filter(|i| {
            ferry_testkit::tools::skopeo_inspect_raw(&i.reference(host))
                .map(|raw| Digest::of(&raw) == i.top.digest)
                .unwrap_or(false)
        })
        .count()
}

/// How many references of `set` an OCI layout's `index.json` records with
/// the source's digest (`org.opencontainers.image.ref.name` = `repo:tag`).
pub(super) fn layout_digests_kept(set: &Dataset, layout: &Path) -> usize {
    let Ok(text) = std::fs::read(layout.join("index.json")) else {
        return 0;
    };
    let Ok(index) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return 0;
    };
    let empty = Vec::new();
    let manifests = index["manifests"].as_array().unwrap_or(&empty);
    set.images
        .iter()
        .filter(|i| {
            let name = format!("{}:{}", i.repository, i.tag);
            manifests.iter().any(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(&name)
                    && m["digest"].as_str() == Some(&i.top.digest.to_string())
            })
        })
        .count()
}

/// The export spec of `set` served at `host`: every image, the Trivy-DB
/// artifact as `trivy.db`.
pub(crate) fn spec_text(set: &Dataset, host: &str) -> String {
    let trivy = set
        .images
        .iter()
        .find(|i| i.repository.ends_with("trivy-db"));
    let mut spec = String::from("apiVersion: ferry.dev/v1\nname: bench\nimages:\n");
    for i in set.images.iter().filter(|i| Some(*i) != trivy) {
        let _ = writeln!(spec, "  - {}", i.reference(host));
    }
    if let Some(t) = trivy {
        let _ = write!(
            spec,
            "trivy:\n  db: {}\n  javaDb: false\n  checks: false\n",
            t.reference(host)
        );
    }
    spec
}
