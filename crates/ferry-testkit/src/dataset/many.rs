//! The many-small-images set of the scaling curve.

use super::*;

/// Bytes of the base layer every small image shares (seeded random, stored).
pub(super) const SMALL_BASE: usize = 256 << 10;
/// Bytes of each small image's own file.
pub(super) const SMALL_OWN: usize = 8 << 10;

/// A gzip'd tar (level 6, mtime 0) of one file: (blob bytes, diff_id).
pub(super) fn small_layer(path: &str, content: &[u8]) -> Result<(Vec<u8>, Digest)> {
    let mut tar_bytes = Vec::new();
    {
        let mut tar = tar::Builder::new(&mut tar_bytes);
        append(&mut tar, path, content.len() as u64, false, content)?;
        tar.finish().context("failed to finish a small layer")?;
    }
    let diff_id = Digest::of(&tar_bytes);
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::new(6));
    gz.write_all(&tar_bytes)?;
    Ok((gz.finish()?, diff_id))
}

pub(super) fn seeded(seed: u64, label: &str, len: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::from_seed(seed_for(seed, label));
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Writes `opts.small_images` images `small/app-<n>:1.0`, each the shared
/// base layer, a small layer of its own and its config.
pub(super) fn generate_many(
    dir: &Path,
    opts: &DatasetOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Dataset> {
    let blobs_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir)
        .with_context(|| format!("failed to create {}", blobs_dir.display()))?;
    let mut w = Writer {
        blobs: &blobs_dir,
        all: BTreeMap::new(),
    };
    let (base, base_diff) = small_layer("base/data", &seeded(opts.seed, "small-base", SMALL_BASE))?;
    let (bd, bs) = w.blob(&base, true)?;
    let base = LayerOut {
        digest: bd,
        size: bs,
        diff_id: base_diff,
    };
    let mut images = Vec::with_capacity(opts.small_images);
    for n in 0..opts.small_images {
        let name = format!("app-{n:05}");
        let (own, own_diff) =
            small_layer(&format!("app/{name}"), &seeded(opts.seed, &name, SMALL_OWN))?;
        let (od, os) = w.blob(&own, true)?;
        let layers = [
            LayerOut {
                digest: base.digest.clone(),
                size: base.size,
                diff_id: base.diff_id.clone(),
            },
            LayerOut {
                digest: od,
                size: os,
                diff_id: own_diff,
            },
        ];
        let plan = ManifestPlan {
            platform: "linux/amd64",
            layers: vec![0, 1],
        };
        let (top, blobs) = w.manifest(&name, Kind::Oci, &plan, &layers)?;
        images.push(DataImage {
            repository: format!("small/{name}"),
            tag: "1.0".into(),
            top,
            children: Vec::new(),
            blobs,
        });
        if (n + 1) % 1000 == 0 {
            progress(&format!(
                "data set: {}/{} small images",
                n + 1,
                opts.small_images
            ));
        }
    }
    finish_set(dir, opts, images, w.all, progress)
}
