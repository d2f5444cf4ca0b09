//! Building bundles by hand, valid or deliberately broken, for tests and
//! fuzzing. Nothing here checks anything: that is its purpose. Behind the
//! `craft` feature (enabled by the dev-dependencies, testkit users, xtask and
//! the fuzz targets), so the ferry binary does not carry it.

use std::io::Write;

use crate::digest::Digest;
use crate::manifest::{self, Descriptor};
use crate::meta::{self, BlobMeta, BundleMeta, IndexPin, Item, Kind, Role, FORMAT_VERSION};

/// One raw tar entry.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// Name as written in the header (may be hostile).
    pub name: String,
    /// Entry type.
    pub kind: tar::EntryType,
    /// Content.
    pub data: Vec<u8>,
    /// Link target for links.
    pub link: Option<String>,
    /// Size written in the header (defaults to `data.len()`).
    pub header_size: Option<u64>,
}

impl RawEntry {
    /// A regular file.
    pub fn file(name: &str, data: &[u8]) -> RawEntry {
        RawEntry {
            name: name.into(),
            kind: tar::EntryType::Regular,
            data: data.to_vec(),
            link: None,
            header_size: None,
        }
    }
}

/// Writes entries as a plain tar, with no validation at all, in the
/// headers ferry's writer makes (ustar, mode 0644, 0755 for directories,
/// uid/gid 0, mtime 0). Names longer than 100 bytes use GNU long-name
/// records.
pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(e.kind);
        h.set_mode(if e.kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let size = e.header_size.unwrap_or(e.data.len() as u64);
        h.set_size(size);
        let name = e.name.as_bytes();
        if name.len() > 100 {
            let mut l = tar::Header::new_gnu();
            l.set_entry_type(tar::EntryType::GNULongName);
            l.set_size(name.len() as u64 + 1);
            if let Some(g) = l.as_gnu_mut() {
                g.name[..13].copy_from_slice(b"././@LongLink");
            }
            l.set_cksum();
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(name);
            out.push(0);
            pad(&mut out);
        }
        {
            let n = name.len().min(100);
            let raw = &mut h.as_old_mut().name;
            raw[..n].copy_from_slice(&name[..n]);
        }
        if let Some(link) = &e.link {
            let lb = link.as_bytes();
            let n = lb.len().min(100);
            h.as_old_mut().linkname[..n].copy_from_slice(&lb[..n]);
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        pad(&mut out);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The tar bytes of `entries` without the end-of-archive blocks (more may
/// follow: a hand-made frame, another tar).
pub fn tar_open(entries: &[RawEntry]) -> Vec<u8> {
    let mut t = raw_tar(entries);
    t.truncate(t.len() - 1024);
    t
}

/// One open header: `name` of `kind`, declaring `size` bytes, none given.
pub fn tar_header(name: &str, kind: tar::EntryType, size: u64) -> Vec<u8> {
    let mut e = RawEntry::file(name, b"");
    e.kind = kind;
    e.header_size = Some(size);
    tar_open(&[e])
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// zstd-compresses bytes.
pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    let mut e = match zstd::stream::write::Encoder::new(Vec::new(), 3) {
        Ok(e) => e,
        Err(_) => return Vec::new(),
    };
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// `len` bytes zstd cannot shrink (xorshift from `seed`): blobs as large in
/// a bundle as they are.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A small valid single-image bundle, as entries, for tests to break.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The bundle.json.
    pub meta: BundleMeta,
    /// index.json bytes.
    pub index: Vec<u8>,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// Config bytes.
    pub config: Vec<u8>,
    /// Layer bytes.
    pub layer: Vec<u8>,
    /// The reference.
    pub reference: String,
}

impl Sample {
    /// A sample image `reference` with a layer of `layer` bytes.
    pub fn new(reference: &str, layer: &[u8]) -> Sample {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let cd = Digest::of(&config);
        let ld = Digest::of(layer);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{ld}","size":{}}}]}}"#,
            manifest::OCI_MANIFEST,
            config.len(),
            layer.len()
        )
        .into_bytes();
        let md = Digest::of(&manifest);
        let items = vec![Item {
            kind: Kind::Image,
            reference: reference.into(),
            digest: md.clone(),
            media_type: manifest::OCI_MANIFEST.into(),
            size: manifest.len() as u64,
            platforms: vec![],
            path: None,
            subject: None,
        }];
        let index = meta::index_json(&items);
        let meta = BundleMeta {
            format_version: FORMAT_VERSION,
            tool: "ferry test".into(),
            name: "sample".into(),
            index: IndexPin {
                digest: Digest::of(&index),
                size: index.len() as u64,
            },
            items,
            blobs: vec![
                BlobMeta {
                    digest: md,
                    size: manifest.len() as u64,
                    role: Role::Manifest,
                    media_type: Some(manifest::OCI_MANIFEST.into()),
                },
                BlobMeta {
                    digest: cd,
                    size: config.len() as u64,
                    role: Role::Config,
                    media_type: Some("application/vnd.oci.image.config.v1+json".into()),
                },
                BlobMeta {
                    digest: ld,
                    size: layer.len() as u64,
                    role: Role::Layer,
                    media_type: Some("application/vnd.oci.image.layer.v1.tar+gzip".into()),
                },
            ],
            absent: vec![],
            base: vec![],
            verification: None,
            origin: None,
        };
        Sample {
            meta,
            index,
            manifest,
            config,
            layer: layer.to_vec(),
            reference: reference.into(),
        }
    }

    /// Recomputes the index pin after `meta.items` or `index` changed.
    pub fn repin(&mut self) {
        self.meta.index = IndexPin {
            digest: Digest::of(&self.index),
            size: self.index.len() as u64,
        };
    }

    /// The manifest's digest.
    pub fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }

    /// The entries of the valid bundle, in streaming order.
    pub fn entries(&self) -> Vec<RawEntry> {
        let blob = |b: &[u8]| RawEntry::file(&Digest::of(b).layout_path(), b);
        vec![
            RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            RawEntry::file(meta::META_PATH, &self.meta.to_json()),
            RawEntry::file("index.json", &self.index),
            blob(&self.manifest),
            blob(&self.config),
            blob(&self.layer),
        ]
    }

    /// The entries of a bundle whose one item is a chain of `levels`
    /// indexes, each listing the next `width` times, down to this image.
    pub fn nested_indexes(&self, levels: usize, width: usize) -> Vec<RawEntry> {
        let mut child = self.descriptor();
        let mut chain: Vec<Vec<u8>> = Vec::new();
        for _ in 0..levels {
            let list: Vec<serde_json::Value> = (0..width)
                .map(|_| serde_json::to_value(&child).unwrap_or_default())
                .collect();
            let bytes = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": manifest::OCI_INDEX,
                "manifests": list,
            }))
            .unwrap_or_default();
            child = Descriptor {
                media_type: manifest::OCI_INDEX.into(),
                digest: Digest::of(&bytes),
                size: bytes.len() as u64,
                ..child
            };
            chain.push(bytes);
        }
        let top: &[u8] = chain.last().map(|t| &t[..]).unwrap_or(&self.manifest);
        let items = vec![Item {
            kind: Kind::Image,
            reference: self.reference.clone(),
            digest: Digest::of(top),
            media_type: manifest::OCI_INDEX.into(),
            size: top.len() as u64,
            platforms: vec![],
            path: None,
            subject: None,
        }];
        let index = meta::index_json(&items);
        let mut m = self.meta.clone();
        m.items = items;
        m.index = IndexPin {
            digest: Digest::of(&index),
            size: index.len() as u64,
        };
        let mut blobs: Vec<BlobMeta> = chain
            .iter()
            .rev()
            .map(|b| BlobMeta {
                digest: Digest::of(b),
                size: b.len() as u64,
                role: Role::Index,
                media_type: Some(manifest::OCI_INDEX.into()),
            })
            .collect();
        blobs.extend(self.meta.blobs.iter().cloned());
        m.blobs = blobs;
        let blob = |b: &[u8]| RawEntry::file(&Digest::of(b).layout_path(), b);
        let mut entries = vec![
            RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            RawEntry::file(meta::META_PATH, &m.to_json()),
            RawEntry::file("index.json", &index),
        ];
        entries.extend(chain.iter().rev().map(|b| blob(b)));
        entries.extend([blob(&self.manifest), blob(&self.config), blob(&self.layer)]);
        entries
    }

    /// A descriptor of the manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: manifest::OCI_MANIFEST.into(),
            digest: self.manifest_digest(),
            size: self.manifest.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: Default::default(),
            urls: vec![],
        }
    }
}

/// A valid bundle of `n` small images `registry.test/many/app-<i>:1.0`, as
/// the benchmark's many-small-images set shapes them: each a manifest, a
/// config and a small layer of its own, all sharing one base layer; in
/// streaming order (manifests first). For tests that measure what a read
/// keeps per reference.
pub fn many_images(n: usize) -> Vec<RawEntry> {
    const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    let base = vec![7u8; 4096];
    let desc = |media: &str, b: &[u8]| {
        format!(
            r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
            Digest::of(b),
            b.len()
        )
    };
    let blob_meta = |b: &[u8], role: Role, media: &str| BlobMeta {
        digest: Digest::of(b),
        size: b.len() as u64,
        role,
        media_type: Some(media.into()),
    };
    let (mut items, mut manifests, mut blobs, mut rest) = (vec![], vec![], vec![], vec![]);
    let mut rest_meta = vec![blob_meta(&base, Role::Layer, LAYER)];
    for i in 0..n {
        let own = format!("app-{i:05} own layer").into_bytes();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"app":{i}}}"#
        )
        .into_bytes();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[{},{}]}}"#,
            manifest::OCI_MANIFEST,
            desc(CONFIG, &config),
            desc(LAYER, &base),
            desc(LAYER, &own)
        )
        .into_bytes();
        items.push(Item {
            kind: Kind::Image,
            reference: format!("registry.test/many/app-{i:05}:1.0"),
            digest: Digest::of(&manifest),
            media_type: manifest::OCI_MANIFEST.into(),
            size: manifest.len() as u64,
            platforms: vec![],
            path: None,
            subject: None,
        });
        blobs.push(blob_meta(&manifest, Role::Manifest, manifest::OCI_MANIFEST));
        rest_meta.push(blob_meta(&config, Role::Config, CONFIG));
        rest_meta.push(blob_meta(&own, Role::Layer, LAYER));
        manifests.push(manifest);
        rest.push(config);
        rest.push(own);
    }
    blobs.extend(rest_meta);
    let index = meta::index_json(&items);
    let mut entries = head_entries("many", &index, items, blobs);
    let blob = |b: &[u8]| RawEntry::file(&Digest::of(b).layout_path(), b);
    entries.extend(manifests.iter().map(|b| blob(b)));
    entries.push(blob(&base));
    entries.extend(rest.iter().map(|b| blob(b)));
    entries
}

/// A bundle with one file item of `kind` named `reference` (its source
/// URL) at `path`, whose artifact manifest lists one layer per `(title,
/// bytes)` (titles as given: they may be hostile), in streaming order.
pub fn file_item_bundle(
    kind: Kind,
    reference: &str,
    path: &str,
    files: &[(&str, &[u8])],
) -> Vec<RawEntry> {
    let layers: Vec<crate::artifact::FileLayer> = files
        .iter()
        .map(|(title, bytes)| crate::artifact::FileLayer {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            media_type: "application/octet-stream".into(),
            title: (*title).to_string(),
        })
        .collect();
    let manifest =
        crate::artifact::file_manifest(kind, &layers, &std::collections::BTreeMap::new());
    let md = Digest::of(&manifest);
    let items = vec![Item {
        kind,
        reference: reference.into(),
        digest: md.clone(),
        media_type: manifest::OCI_MANIFEST.into(),
        size: manifest.len() as u64,
        platforms: vec![],
        path: Some(path.into()),
        subject: None,
    }];
    let index = meta::index_json(&items);
    let empty = crate::artifact::EMPTY_CONFIG;
    let mut blobs = vec![
        BlobMeta {
            digest: md,
            size: manifest.len() as u64,
            role: Role::Manifest,
            media_type: Some(manifest::OCI_MANIFEST.into()),
        },
        BlobMeta {
            digest: Digest::of(empty),
            size: empty.len() as u64,
            role: Role::Config,
            media_type: Some(manifest::OCI_EMPTY.into()),
        },
    ];
    let mut seen = std::collections::HashSet::new();
    let mut data = Vec::new();
    for (_, bytes) in files {
        if seen.insert(Digest::of(bytes)) {
            blobs.push(BlobMeta {
                digest: Digest::of(bytes),
                size: bytes.len() as u64,
                role: Role::Layer,
                media_type: Some("application/octet-stream".into()),
            });
            data.push(bytes.to_vec());
        }
    }
    let blob = |b: &[u8]| RawEntry::file(&Digest::of(b).layout_path(), b);
    let mut entries = head_entries("files", &index, items, blobs);
    entries.push(blob(&manifest));
    entries.push(blob(empty));
    entries.extend(data.iter().map(|d| blob(d)));
    entries
}

/// The head entries of a crafted bundle (`oci-layout`, bundle.json with
/// these items and blobs, index.json), in the order the reader wants them.
fn head_entries(name: &str, index: &[u8], items: Vec<Item>, blobs: Vec<BlobMeta>) -> Vec<RawEntry> {
    let meta = BundleMeta {
        format_version: FORMAT_VERSION,
        tool: "ferry test".into(),
        name: name.into(),
        index: IndexPin {
            digest: Digest::of(index),
            size: index.len() as u64,
        },
        items,
        blobs,
        absent: vec![],
        base: vec![],
        verification: None,
        origin: None,
    };
    vec![
        RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        RawEntry::file(meta::META_PATH, &meta.to_json()),
        RawEntry::file("index.json", index),
    ]
}

/// gzip with a fixed header (no name, mtime 0), so equal input gives equal bytes.
fn gzip_fixed(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// [`raw_tar`], gzip-compressed: a chart archive with hostile entries.
pub fn raw_tgz(entries: &[RawEntry]) -> Vec<u8> {
    gzip_fixed(&raw_tar(entries))
}

/// A deterministic chart archive `<name>/…`: `Chart.yaml` (apiVersion v2,
/// `name`, `version`, and `appVersion` equal to `version`) unless `files`
/// brings its own, plus `files` (paths relative to the chart directory,
/// e.g. `templates/deployment.yaml` or `charts/db-1.0.0.tgz`). Entries are
/// sorted, with mtime 0, uid/gid 0 and mode 0644.
pub fn chart_tgz(name: &str, version: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut all: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, d)| (format!("{name}/{p}"), d.to_vec()))
        .collect();
    if !files.iter().any(|(p, _)| *p == "Chart.yaml") {
        let chart_yaml = format!(
            "apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"{version}\"\n"
        );
        all.push((format!("{name}/Chart.yaml"), chart_yaml.into_bytes()));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for (path, data) in &all {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        if builder.append_data(&mut h, path, data.as_slice()).is_err() {
            return Vec::new();
        }
    }
    match builder.into_inner() {
        Ok(tar) => gzip_fixed(&tar),
        Err(_) => Vec::new(),
    }
}

/// A zstd frame written by hand, for decompression bombs: `data` in raw
/// blocks, then `count` copies of the byte `fill` in RLE blocks (4 bytes of
/// frame per 128 KiB of output), with window log `window_log` (10 to 31)
/// and, when `declared` is set, that number written as the frame's content
/// size (whether or not it is true). Frames concatenate: append one to
/// [`zstd`] output to go on with the same stream.
pub fn zstd_frame(
    data: &[u8],
    fill: u8,
    count: u64,
    window_log: u8,
    declared: Option<u64>,
) -> Vec<u8> {
    let window_log = window_log.clamp(10, 31);
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd];
    // Frame header descriptor: an 8-byte content size or none; not single
    // segment (so a window descriptor follows); no checksum, no dictionary.
    out.push(if declared.is_some() { 3 << 6 } else { 0 });
    out.push((window_log - 10) << 3);
    if let Some(n) = declared {
        out.extend_from_slice(&n.to_le_bytes());
    }
    let max_block = (128 * 1024).min(1usize << window_log);
    let mut blocks: Vec<(bool, usize, Option<&[u8]>)> = data
        .chunks(max_block)
        .map(|c| (false, c.len(), Some(c)))
        .collect();
    let mut left = count;
    while left > 0 {
        let n = left.min(max_block as u64) as usize;
        blocks.push((true, n, None));
        left -= n as u64;
    }
    if blocks.is_empty() {
        blocks.push((false, 0, Some(&[])));
    }
    let last = blocks.len() - 1;
    for (i, (rle, n, bytes)) in blocks.into_iter().enumerate() {
        let header = ((n as u32) << 3) | (u32::from(rle) << 1) | u32::from(i == last);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        match bytes {
            Some(b) => out.extend_from_slice(b),
            None => out.push(fill),
        }
    }
    out
}
