//! Writes fixture images into a ferry store (an OCI image layout with
//! `dev.ferry.repository` / `dev.ferry.tag` annotations, plus `files/`), the
//! layout `ferry import --store` writes and `ferry serve` serves. Used as the
//! offline upstream of `cargo xtask demo` and by serve tests.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::fixtures::FixtureImage;

/// Writes `images` (each under the repository name given) into the store at
/// `dir`, plus `files` (path relative to `dir/files`, bytes).
pub fn write_store(
    dir: &Path,
    images: &[(&FixtureImage, String)],
    files: &[(String, Vec<u8>)],
) -> Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("create {}", blobs.display()))?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .context("write oci-layout")?;
    let mut manifests = Vec::new();
    for (img, repo) in images {
        for m in img.manifests() {
            std::fs::write(blobs.join(m.digest.hex()), &m.bytes)
                .with_context(|| format!("write {}", m.digest))?;
        }
        for b in &img.blobs {
            std::fs::write(blobs.join(b.digest.hex()), &b.data)
                .with_context(|| format!("write {}", b.digest))?;
        }
        let name = format!("{repo}:{}", img.tag);
        manifests.push(json!({
            "mediaType": img.top.media_type,
            "digest": img.top.digest.to_string(),
            "size": img.top.bytes.len(),
            "annotations": {
                "org.opencontainers.image.ref.name": name,
                "io.containerd.image.name": name,
                "dev.ferry.repository": repo,
                "dev.ferry.tag": img.tag,
            }
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index)?)
        .context("write index.json")?;
    for (path, data) in files {
        let p = dir.join("files").join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(&p, data).with_context(|| format!("write {}", p.display()))?;
    }
    Ok(())
}
