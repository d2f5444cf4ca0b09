//! The plan of a bundle: every item, manifest and blob in bundle order
//! (manifests in item order, then configs, then layers), what `--since`
//! leaves out as base, and the placement of every file item, made from the
//! resolution before anything is fetched. Its sizes are what a preflight
//! counts (bytes to fetch, bytes to write).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_bundle::manifest::Descriptor;
use ferry_bundle::meta::{self, BlobMeta, BundleMeta, IndexPin, Item, Role, FORMAT_VERSION};
use ferry_bundle::placement::PlacementError;
use ferry_bundle::Digest;
use ferry_registry::Repo;

use crate::resolve::Resolved;

/// A config or layer to fetch (or read from the cache) and write.
pub(crate) struct PlannedBlob {
    pub(crate) meta: BlobMeta,
    /// The repository it comes from (one per image, shared by its blobs).
    pub(crate) source: Arc<Repo>,
    /// Fetched over HTTP at resolution: only ever read from the cache.
    pub(crate) local: bool,
}

/// What the bundle will hold, in the order it is written.
pub(crate) struct Plan {
    /// `bundle.json` items.
    pub(crate) items: Vec<Item>,
    /// Platform children left out by the filter.
    pub(crate) absent: Vec<meta::Absent>,
    /// Blobs left out because the target has them (`--since`).
    pub(crate) base: Vec<meta::BaseBlob>,
    /// Manifests and indexes with their exact bytes, in item order.
    pub(crate) manifests: Vec<(BlobMeta, bytes::Bytes)>,
    /// Configs, then layers.
    pub(crate) blobs: Vec<PlannedBlob>,
}

/// The plan as it is written: `bundle.json` (which owns every item and
/// blob description: nothing is kept twice), `index.json`, and beside
/// `meta.blobs` in its order the manifests' bytes, then the repository each
/// other blob comes from.
pub(crate) struct Bundle {
    /// `bundle.json`.
    pub(crate) meta: BundleMeta,
    /// `index.json`'s bytes.
    pub(crate) index: Vec<u8>,
    /// The bytes of `meta.blobs[..manifests.len()]`.
    pub(crate) manifests: Vec<bytes::Bytes>,
    /// Where `meta.blobs[manifests.len()..]` come from.
    pub(crate) sources: Vec<Arc<Repo>>,
}

impl Plan {
    /// Plans the bundle of `resolved`, leaving out what `base` names;
    /// refuses a file item out of its kind's place (as import would).
    pub(crate) fn new(
        resolved: &Resolved,
        base_at_target: &HashMap<Digest, Option<String>>,
    ) -> Result<Plan, PlacementError> {
        let mut seen: HashSet<Digest> = HashSet::new();
        let mut manifests: Vec<(BlobMeta, bytes::Bytes)> = Vec::new();
        let mut configs: Vec<PlannedBlob> = Vec::new();
        let mut layers: Vec<PlannedBlob> = Vec::new();
        let mut items = Vec::new();
        let mut absent = Vec::new();
        let mut base: Vec<meta::BaseBlob> = Vec::new();
        for img in &resolved.images {
            let repo = Arc::new(img.repo.clone());
            items.push(Item {
                kind: img.kind,
                reference: img.name(),
                digest: img.top.digest.clone(),
                media_type: img.top.media_type.clone(),
                size: img.top.bytes.len() as u64,
                platforms: img.platforms(),
                path: img.path.clone(),
                subject: img.subject.clone(),
            });
            absent.extend(img.absent.iter().cloned());
            for m in std::iter::once(&img.top).chain(img.children.iter()) {
                if seen.insert(m.digest.clone()) {
                    manifests.push((
                        BlobMeta {
                            digest: m.digest.clone(),
                            size: m.bytes.len() as u64,
                            role: if m.parsed.is_index() {
                                Role::Index
                            } else {
                                Role::Manifest
                            },
                            media_type: Some(m.media_type.clone()),
                        },
                        m.bytes.clone(),
                    ));
                }
                let config_digest = m.parsed.config.as_ref().map(|c| c.digest.clone());
                let descriptors: Vec<Descriptor> = if m.parsed.is_index() {
                    m.parsed
                        .manifests
                        .iter()
                        .filter(|d| !ferry_bundle::manifest::is_any_manifest(&d.media_type))
                        .cloned()
                        .collect()
                } else {
                    m.parsed.blobs().cloned().collect()
                };
                for d in descriptors {
                    if !seen.insert(d.digest.clone()) {
                        continue;
                    }
                    // Only registry-bound content may be left out: a file kind's
                    // bytes (and a chart's .tgz) must travel to the file server.
                    if img.path.is_none() {
                        if let Some(repo) = base_at_target.get(&d.digest) {
                            base.push(meta::BaseBlob {
                                digest: d.digest.clone(),
                                size: d.size,
                                repository: repo.clone(),
                            });
                            continue;
                        }
                    }
                    let is_config = config_digest.as_ref() == Some(&d.digest);
                    let planned = PlannedBlob {
                        meta: BlobMeta {
                            digest: d.digest.clone(),
                            size: d.size,
                            role: if is_config { Role::Config } else { Role::Layer },
                            media_type: (!d.media_type.as_ref().is_empty())
                                .then(|| d.media_type.clone()),
                        },
                        source: repo.clone(),
                        local: img.local,
                    };
                    if is_config {
                        configs.push(planned);
                    } else {
                        layers.push(planned);
                    }
                }
            }
        }
        // Every file lands in its kind's place, once: what import would refuse
        // is refused here, before anything is fetched.
        let mut claims = ferry_bundle::placement::Placements::new();
        for img in &resolved.images {
            if let Some(path) = &img.path {
                claims.claim_item(img.kind, &img.name(), path, &img.top.parsed)?;
            }
        }
        absent.sort_by(|a: &meta::Absent, b| (&a.parent, &a.digest).cmp(&(&b.parent, &b.digest)));
        absent.dedup();

        base.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(Plan {
            items,
            absent,
            base,
            manifests,
            blobs: configs.into_iter().chain(layers).collect(),
        })
    }

    /// `bundle.json` and `index.json` (everything they need is known
    /// before any blob arrives), the plan's parts moved into them.
    pub(crate) fn into_bundle(
        self,
        name: &str,
        verification: Option<meta::Verification>,
        origin: Option<meta::Origin>,
    ) -> Bundle {
        let index = meta::index_json(&self.items);
        let mut all_blobs = Vec::with_capacity(self.manifests.len() + self.blobs.len());
        let mut manifests = Vec::with_capacity(self.manifests.len());
        for (m, bytes) in self.manifests {
            all_blobs.push(m);
            manifests.push(bytes);
        }
        let mut sources = Vec::with_capacity(self.blobs.len());
        for b in self.blobs {
            all_blobs.push(b.meta);
            sources.push(b.source);
        }
        let meta = BundleMeta {
            format_version: FORMAT_VERSION,
            tool: format!("ferry {}", env!("CARGO_PKG_VERSION")),
            name: name.to_string(),
            index: IndexPin {
                digest: Digest::of(&index),
                size: index.len() as u64,
            },
            items: self.items,
            blobs: all_blobs,
            absent: self.absent,
            base: self.base,
            verification,
            origin,
        };
        Bundle {
            meta,
            index,
            manifests,
            sources,
        }
    }
}
