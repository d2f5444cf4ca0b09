//! Bundles made by hand (`ferry_bundle::craft`) of images with large,
//! incompressible layers, and what a `docker-registry` target holds of them
//! (read from its storage directory).

use std::path::{Path, PathBuf};

use ferry_bundle::craft::{raw_tar, zstd, RawEntry, Sample};
use ferry_bundle::Digest;
use ferry_testkit::registry::Registry;

/// One bundle of `samples` (each one image with one layer; they share the
/// config), the layer of `corrupt` (if any) with its last byte flipped.
pub fn bundle(samples: &[Sample], corrupt: Option<usize>) -> Vec<u8> {
    bundle_and_meta(samples, corrupt).0
}

/// [`bundle`], and its exact `ferry/bundle.json` bytes.
pub fn bundle_and_meta(samples: &[Sample], corrupt: Option<usize>) -> (Vec<u8>, Vec<u8>) {
    let mut meta = samples[0].meta.clone();
    meta.name = "once".into();
    meta.items = samples.iter().flat_map(|s| s.meta.items.clone()).collect();
    meta.items.sort_by(|x, y| x.reference.cmp(&y.reference));
    // Manifests first, then the one config, then the layers.
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
    let meta_json = meta.to_json();
    let mut entries = vec![
        RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        RawEntry::file("ferry/bundle.json", &meta_json),
        RawEntry::file("index.json", &index),
    ];
    entries.extend(samples.iter().map(|s| blob(&s.manifest)));
    entries.push(blob(&samples[0].config));
    for (i, s) in samples.iter().enumerate() {
        let mut entry = blob(&s.layer);
        if corrupt == Some(i) {
            let last = entry.data.len() - 1;
            entry.data[last] ^= 1;
        }
        entries.push(entry);
    }
    (zstd(&raw_tar(&entries)), meta_json)
}

/// `n` images `example.org/once/app<i>:1`, each with an incompressible
/// (xorshift) layer of `mib` MiB: the bundle is as large as its layers.
pub fn samples(n: usize, mib: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let layer: Vec<u8> = (0..mib << 20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            Sample::new(&format!("example.org/once/app{i}:1"), &layer)
        })
        .collect()
}

/// The registry storage path of a blob (present once an upload completed).
pub fn blob_data(reg: &Registry, d: &Digest) -> PathBuf {
    let hex = d.to_string()[7..].to_string();
    reg.storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data")
}

/// The digest the registry's tag points at, if the tag exists.
pub fn tag_link(reg: &Registry, repo: &str, tag: &str) -> Option<String> {
    let p = reg
        .storage_dir()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags")
        .join(tag)
        .join("current/link");
    std::fs::read_to_string(p).ok()
}

/// No manifest revision under the repository `repo` of `reg`.
pub fn no_manifest_in(reg: &Registry, repo: &str) -> bool {
    let revisions = reg
        .storage_dir()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/revisions/sha256");
    dir_is_empty(&revisions)
}

/// A directory that does not exist or holds nothing.
fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}
