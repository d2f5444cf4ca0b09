//! Each manifest's children as the reader keeps them ([`Edges`]), and the
//! end of the stream: every declared blob seen, file layers safe, and each
//! item's graph complete (present with the stated sizes, or declared absent
//! or base), without cycles or nesting past [`super::MAX_DEPTH`].

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use crate::digest::Digest;
use crate::manifest::{self, Parsed};
use crate::meta::{BlobMeta, BundleMeta, Item, META_PATH};

use super::blobs::BlobTable;
use super::{BundleError, ReadOptions, Report, Stage, State, MAX_DEPTH};

/// A digest as the graph names it: below the number of declared blobs, a
/// place in bundle.json's blobs; from there on, one of [`Edges`]'s other
/// digests (base blobs, absent children, missing ones), each once.
type Id = u32;

/// One child of a manifest: its digest, the size its descriptor states,
/// and whether it is walked as a manifest (an index's manifest children).
#[derive(Clone, Copy)]
struct Edge {
    id: Id,
    size: u64,
    manifest: bool,
}

/// A parsed manifest: its edges in [`Edges::edges`], and whether it is an
/// index (whose children may be declared absent).
#[derive(Clone, Copy, Default)]
struct Node {
    parsed: bool,
    index: bool,
    first: u32,
    end: u32,
}

/// What the graph check keeps of the manifests read: per declared blob a
/// node (12 bytes), per child an edge (16 bytes), and the digests that are
/// not declared, interned. The parsed manifests themselves are dropped.
#[derive(Default)]
pub(super) struct Edges {
    /// By place in bundle.json's blobs (grown as manifests come).
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    /// Undeclared digests named by a child, and their ids.
    others: Vec<Digest>,
    other_ids: HashMap<Digest, Id>,
    /// How many blobs bundle.json declares (the first other id).
    declared: u32,
}

impl Edges {
    /// Edges for a bundle that declares `declared` blobs.
    pub(super) fn new(declared: usize) -> Edges {
        Edges {
            declared: declared as Id,
            ..Edges::default()
        }
    }

    /// Records the manifest at `at` (parsed, verified): its children.
    pub(super) fn add(&mut self, at: usize, parsed: &Parsed, blobs: &BlobTable) {
        let first = self.edges.len() as u32;
        let index = parsed.is_index();
        if index {
            for c in &parsed.manifests {
                let manifest = manifest::is_any_manifest(&c.media_type);
                self.push(&c.digest, c.size, manifest, blobs);
            }
        } else {
            for b in parsed.blobs() {
                self.push(&b.digest, b.size, false, blobs);
            }
        }
        if self.nodes.len() <= at {
            self.nodes.resize(at + 1, Node::default());
        }
        self.nodes[at] = Node {
            parsed: true,
            index,
            first,
            end: self.edges.len() as u32,
        };
    }

    fn push(&mut self, d: &Digest, size: u64, manifest: bool, blobs: &BlobTable) {
        let id = self.id(d, blobs);
        self.edges.push(Edge { id, size, manifest });
    }

    /// The id of `d`: its place if declared, else an interned other.
    fn id(&mut self, d: &Digest, blobs: &BlobTable) -> Id {
        if let Some(at) = blobs.place(d) {
            return at as Id;
        }
        if let Some(id) = self.other_ids.get(d) {
            return *id;
        }
        let id = self.declared + self.others.len() as Id;
        self.others.push(d.clone());
        self.other_ids.insert(d.clone(), id);
        id
    }

    fn node(&self, at: usize) -> Node {
        self.nodes.get(at).copied().unwrap_or_default()
    }

    fn children(&self, node: Node) -> &[Edge] {
        self.edges
            .get(node.first as usize..node.end as usize)
            .unwrap_or_default()
    }
}

impl State {
    pub(super) fn finish(mut self, options: ReadOptions) -> Result<Report, BundleError> {
        let Some(meta) = self.meta.take() else {
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
        let missing: Vec<&BlobMeta> = meta
            .blobs
            .iter()
            .enumerate()
            .filter(|(at, _)| !self.blobs.done(*at))
            .map(|(_, b)| b)
            .collect();
        if let Some(first) = missing.first() {
            return Err(BundleError::Missing {
                count: missing.len(),
                first: first.digest.clone(),
            });
        }
        crate::placement::check_layers(&meta.items, &self.file_manifests).map_err(|e| {
            BundleError::Malformed {
                entry: "index.json".into(),
                reason: format!("unsafe file path: {e}"),
            }
        })?;
        // Each item's top, as an id (interned if bundle.json does not
        // declare it: the walk then says how it is missing).
        let tops: Vec<Id> = meta
            .items
            .iter()
            .map(|i| self.edges.id(&i.digest, &self.blobs))
            .collect();
        let graph = Graph {
            meta: &meta,
            blobs: &self.blobs,
            edges: &self.edges,
            absent: meta
                .absent
                .iter()
                .map(|a| (a.parent.clone(), a.digest.clone()))
                .collect(),
            base: meta
                .base
                .iter()
                .map(|b| (b.digest.clone(), b.size))
                .collect(),
            checked: Default::default(),
        };
        for (at, (item, top)) in meta.items.iter().zip(tops).enumerate() {
            let verdict = match self.index_disagrees.remove(&at) {
                Some(reason) => Err(reason),
                None => graph.check_item(item, top),
            };
            match verdict {
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

struct Graph<'a> {
    meta: &'a BundleMeta,
    blobs: &'a BlobTable,
    edges: &'a Edges,
    absent: HashSet<(Digest, Digest)>,
    base: HashMap<Digest, u64>,
    /// Manifests whose whole graph checked out, with the deepest nesting
    /// they were found at: a manifest listed many times (an index listing
    /// the same child index over and over, level after level) is walked
    /// once, not once per path to it.
    checked: RefCell<HashMap<Id, usize>>,
}

impl Graph<'_> {
    /// The digest an id names.
    fn digest(&self, id: Id) -> &Digest {
        match self.declared(id) {
            Some(b) => &b.digest,
            None => &self.edges.others[(id - self.edges.declared) as usize],
        }
    }

    /// The declared blob an id names.
    fn declared(&self, id: Id) -> Option<&BlobMeta> {
        if id < self.edges.declared {
            self.meta.blobs.get(id as usize)
        } else {
            None
        }
    }

    fn check_item(&self, item: &Item, top: Id) -> Result<(), String> {
        let mut path = Vec::new();
        self.check(
            Edge {
                id: top,
                size: item.size,
                manifest: true,
            },
            &mut path,
        )
    }

    fn check(&self, edge: Edge, path: &mut Vec<Id>) -> Result<(), String> {
        let Edge {
            id,
            size,
            manifest: want_manifest,
        } = edge;
        let d = self.digest(id);
        if path.contains(&id) {
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
                .get(&id)
                .is_some_and(|at| path.len() <= *at)
        {
            return Ok(());
        }
        let at = id as usize;
        if let Some(reason) = self.declared(id).and_then(|_| self.blobs.bad(at)) {
            return Err(format!("blob {d} failed verification: {reason}"));
        }
        if let Some(base) = self.base.get(d) {
            if want_manifest {
                return Err(format!(
                    "manifest {d} is listed as a base blob; manifests always travel in the bundle"
                ));
            }
            if *base != size {
                return Err(format!(
                    "descriptor for base blob {d} says {size} bytes, bundle.json says {base}"
                ));
            }
            return Ok(());
        }
        let Some(meta) = self.declared(id) else {
            return Err(format!("{d} is referenced but not in the bundle"));
        };
        if meta.size != size {
            return Err(format!(
                "descriptor for {d} says {size} bytes, the blob is {}",
                meta.size
            ));
        }
        if !self.blobs.verified(at) {
            return Err(format!("blob {d} was not verified"));
        }
        if !want_manifest {
            return Ok(());
        }
        let node = self.edges.node(at);
        if !node.parsed {
            return Err(format!(
                "{d} is referenced as a manifest but stored as a {:?} blob",
                meta.role
            ));
        }
        path.push(id);
        for child in self.edges.children(node) {
            if node.index
                && self
                    .absent
                    .contains(&(d.clone(), self.digest(child.id).clone()))
            {
                continue;
            }
            self.check(*child, path)?;
        }
        path.pop();
        let mut checked = self.checked.borrow_mut();
        let depth = checked.entry(id).or_insert(path.len());
        *depth = (*depth).max(path.len());
        Ok(())
    }
}
