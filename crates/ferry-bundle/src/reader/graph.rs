//! The end of the stream: every declared blob seen, file layers safe, and
//! each item's graph complete (present with the stated sizes, or declared
//! absent or base), without cycles or nesting past [`super::MAX_DEPTH`].

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::digest::Digest;
use crate::manifest::{self, Descriptor, Parsed};
use crate::meta::{BlobMeta, BundleMeta, Item, META_PATH};

use super::head::{index_key, legacy_names};
use super::{BundleError, Head, ReadOptions, Report, Stage, State, MAX_DEPTH};

impl State {
    pub(super) fn finish(mut self, options: ReadOptions) -> Result<Report, BundleError> {
        let Some(head) = self.head.take() else {
            let expected = match self.stage {
                Stage::Start => "oci-layout",
                Stage::Layout => META_PATH,
                _ => "index.json",
            };
            return Err(BundleError::HeadOrder {
                expected,
                found: "the end of the stream".into(),
            });
        };
        if self.stage != Stage::Index {
            return Err(BundleError::HeadOrder {
                expected: "index.json",
                found: "the end of the stream".into(),
            });
        }
        let missing: Vec<&BlobMeta> = head
            .meta
            .blobs
            .iter()
            .filter(|b| !self.verified.contains(&b.digest) && !self.bad.contains_key(&b.digest))
            .collect();
        if let Some(first) = missing.first() {
            return Err(BundleError::Missing {
                count: missing.len(),
                first: first.digest.clone(),
            });
        }
        crate::placement::check_layers(&head.meta.items, &self.parsed).map_err(|e| {
            BundleError::Malformed {
                entry: "index.json".into(),
                reason: format!("unsafe file path: {e}"),
            }
        })?;
        let graph = Graph {
            meta: &head.meta,
            declared: &self.declared,
            verified: &self.verified,
            bad: &self.bad,
            parsed: &self.parsed,
            absent: head
                .meta
                .absent
                .iter()
                .map(|a| (a.parent.clone(), a.digest.clone()))
                .collect(),
            base: head
                .meta
                .base
                .iter()
                .map(|b| (b.digest.clone(), b.size))
                .collect(),
            checked: Default::default(),
        };
        for (item, desc) in head.meta.items.iter().zip(sorted_index(&head)) {
            match graph.check_item(item, desc) {
                Ok(()) => self.report.good_items.push(item.reference.clone()),
                Err(reason) => {
                    if !options.keep_going {
                        return Err(BundleError::Graph {
                            item: item.reference.clone(),
                            reason,
                        });
                    }
                    self.report
                        .failed_items
                        .push((item.reference.clone(), reason));
                }
            }
        }
        Ok(self.report)
    }
}

/// index.json descriptors in the order of bundle.json's items.
fn sorted_index(head: &Head) -> Vec<&Descriptor> {
    let legacy = legacy_names(&head.meta);
    let by_key: BTreeMap<(String, Digest), &Descriptor> = head
        .index
        .iter()
        .map(|d| ((index_key(&legacy, d), d.digest.clone()), d))
        .collect();
    head.meta
        .items
        .iter()
        .filter_map(|i| by_key.get(&(i.index_name(), i.digest.clone())).copied())
        .collect()
}

struct Graph<'a> {
    meta: &'a BundleMeta,
    declared: &'a HashMap<Digest, BlobMeta>,
    verified: &'a HashSet<Digest>,
    bad: &'a HashMap<Digest, String>,
    parsed: &'a HashMap<Digest, Parsed>,
    absent: HashSet<(Digest, Digest)>,
    base: HashMap<Digest, u64>,
    /// Manifests whose whole graph checked out, with the deepest nesting
    /// they were found at: a manifest listed many times (an index listing
    /// the same child index over and over, level after level) is walked
    /// once, not once per path to it.
    checked: std::cell::RefCell<HashMap<Digest, usize>>,
}

impl Graph<'_> {
    fn check_item(&self, item: &Item, desc: &Descriptor) -> Result<(), String> {
        let _ = self.meta;
        if desc.size != item.size || desc.media_type.as_ref() != item.media_type.as_ref() {
            return Err(format!(
                "index.json descriptor ({} bytes, `{}`) disagrees with bundle.json ({} bytes, `{}`)",
                desc.size, desc.media_type, item.size, item.media_type
            ));
        }
        let mut path = Vec::new();
        self.check(desc, true, &mut path)
    }

    fn check(
        &self,
        desc: &Descriptor,
        want_manifest: bool,
        path: &mut Vec<Digest>,
    ) -> Result<(), String> {
        let d = &desc.digest;
        if path.contains(d) {
            return Err(format!("manifest cycle through {d}"));
        }
        if path.len() > MAX_DEPTH {
            return Err(format!(
                "manifests nested deeper than {MAX_DEPTH} levels at {d}"
            ));
        }
        // Checked already, at this depth or deeper: its graph holds here too.
        if want_manifest
            && self
                .checked
                .borrow()
                .get(d)
                .is_some_and(|at| path.len() <= *at)
        {
            return Ok(());
        }
        if let Some(reason) = self.bad.get(d) {
            return Err(format!("blob {d} failed verification: {reason}"));
        }
        if let Some(size) = self.base.get(d) {
            if want_manifest {
                return Err(format!(
                    "manifest {d} is listed as a base blob; manifests always travel in the bundle"
                ));
            }
            if *size != desc.size {
                return Err(format!(
                    "descriptor for base blob {d} says {} bytes, bundle.json says {size}",
                    desc.size
                ));
            }
            return Ok(());
        }
        let Some(meta) = self.declared.get(d) else {
            return Err(format!("{d} is referenced but not in the bundle"));
        };
        if meta.size != desc.size {
            return Err(format!(
                "descriptor for {d} says {} bytes, the blob is {}",
                desc.size, meta.size
            ));
        }
        if !self.verified.contains(d) {
            return Err(format!("blob {d} was not verified"));
        }
        if !want_manifest {
            return Ok(());
        }
        let Some(parsed) = self.parsed.get(d) else {
            return Err(format!(
                "{d} is referenced as a manifest but stored as a {:?} blob",
                meta.role
            ));
        };
        path.push(d.clone());
        if parsed.is_index() {
            for child in &parsed.manifests {
                if self.absent.contains(&(d.clone(), child.digest.clone())) {
                    continue;
                }
                if manifest::is_any_manifest(&child.media_type) {
                    self.check(child, true, path)?;
                } else {
                    // A non-manifest child (e.g. an attestation blob) is a plain blob.
                    self.check(child, false, path)?;
                }
            }
        } else {
            for blob in parsed.blobs() {
                self.check(blob, false, path)?;
            }
        }
        if let Some(subject) = &parsed.subject {
            let _ = subject; // referrers point at subjects that may live elsewhere: not required here.
        }
        path.pop();
        let mut checked = self.checked.borrow_mut();
        let at = checked.entry(d.clone()).or_insert(path.len());
        *at = (*at).max(path.len());
        Ok(())
    }
}
