//! What the curve measures: one command's run, one point's runs and
//! floors, and the requests counted at the registries.

use std::collections::BTreeMap;

use crate::bench::median;

/// One command's run: wall, peak RSS and when each event kind first came.
#[derive(Debug, Clone, Default)]
pub(super) struct Run {
    pub(super) wall: f64,
    pub(super) rss_mib: f64,
    /// User + system CPU seconds (`/usr/bin/time -v`).
    pub(super) cpu: f64,
    pub(super) events: BTreeMap<String, f64>,
}

impl Run {
    pub(super) fn at(&self, event: &str) -> Option<f64> {
        self.events.get(event).copied()
    }

    /// Seconds from `from` (or the start) to `to` (or the end).
    pub(super) fn span(&self, from: Option<&str>, to: Option<&str>) -> Option<f64> {
        let a = match from {
            Some(e) => self.at(e)?,
            None => 0.0,
        };
        let b = match to {
            Some(e) => self.at(e)?,
            None => self.wall,
        };
        Some((b - a).max(0.0))
    }
}

/// The measurements of one point.
#[derive(Debug, Default)]
pub(super) struct Point {
    pub(super) label: String,
    pub(super) refs: usize,
    pub(super) blobs: usize,
    pub(super) bytes: u64,
    pub(super) bundle: u64,
    pub(super) export: Vec<Run>,
    pub(super) verify: Vec<Run>,
    pub(super) import: Vec<Run>,
    pub(super) dd: Vec<f64>,
    pub(super) fetch: Vec<f64>,
    pub(super) ingest: Vec<f64>,
    /// The images' ingest floor: the blobs' uploads plus the mounts and
    /// manifest PUTs an import needs.
    pub(super) image_ingest: Vec<f64>,
    pub(super) openssl: Vec<f64>,
    pub(super) zstd_d: Vec<f64>,
    /// The skopeo path (`--skopeo`): export and import wall seconds per run.
    pub(super) skopeo_export: Vec<f64>,
    pub(super) skopeo_import: Vec<f64>,
    /// `ferry export --no-cache --no-referrers` (`--skopeo`): the same work
    /// as the skopeo path, which carries no signatures, attestations or
    /// SBOMs.
    pub(super) export_plain: Vec<Run>,
    /// CPU seconds the target registry used during each import.
    pub(super) import_registry_cpu: Vec<f64>,
    /// CPU seconds the source registry used during each export.
    pub(super) export_registry_cpu: Vec<f64>,
    /// CPU seconds `dd` used writing the bundle's size (the kernel's copy
    /// into the page cache and the file system's work: the part of the
    /// export's CPU that writing the bytes alone costs).
    pub(super) dd_cpu: Vec<f64>,
    /// CPU seconds the registry used during each raw ingest (4 uploads at
    /// a time).
    pub(super) ingest_registry_cpu: Vec<f64>,
    /// The raw ingest with one upload at a time (the sized sets): what one
    /// upload stream gets from the registry.
    pub(super) ingest_one: Vec<f64>,
    /// Requests counted at the registries in one more export and import.
    pub(super) requests: Option<Counted>,
}

pub(super) fn med_of(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| median(v))
}

/// The requests one ferry export and one import sent, by kind, counted by
/// a proxy in front of the source and of the target registry, beside the
/// fewest requests the same references need (`requests::request_floors`).
#[derive(Debug, Default, Clone)]
pub(super) struct Counted {
    pub(super) export: BTreeMap<&'static str, usize>,
    pub(super) import: BTreeMap<&'static str, usize>,
    pub(super) export_floor: usize,
    pub(super) import_floor: usize,
}
