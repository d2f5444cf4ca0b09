//! Export: resolve a spec to digests, pull every blob once, write the bundle.
//!
//! ```text
//! Spec ──resolve──▶ Lock + resolved graphs ──fetch──▶ blob cache ──write──▶ bundle.tar.zst
//! ```
//!
//! Resolution fetches every manifest (exact bytes, full Accept list) and keeps
//! it in memory; blobs go to a content-addressed cache (`--cache`), verified
//! while they download, so a nightly run only downloads what changed. The
//! bundle is then written in streaming order from memory and the cache.
//!
//! The phases, one file each, in the order [`ops::export`] runs them:
//!
//! - [`ops`]: the operations `ferry export` and `ferry lock` run, whole
//!   (options in, a summary or a typed [`ops::OpError`] out, [`Event`]s
//!   through a callback); loading the spec into image requests;
//! - [`sources`]: collect charts, Falco drivers and plugins, OpenSearch
//!   plugins and files (fetched over HTTP, checked, cached); `local` wraps
//!   them as OCI artifacts;
//! - `resolve`: images to digests and manifests ([`resolve()`]);
//! - [`provenance`]: signatures, attestations, SBOMs and OCI 1.1 referrers;
//! - [`trust`]: the spec's signature policy, checked before anything is written;
//! - [`since`]: `--since`, the blobs the destinations already hold;
//! - `plan`: items, manifests and blobs in bundle order, the base, file placement;
//! - [`mod@preflight`]: what will be fetched from where, the bytes to download
//!   and to write, and the room on the output's and the cache's filesystems;
//! - `write`: fetch what the cache lacks and write the bundle ([`export()`]);
//! - [`reexport`]: `export --from`, offline: a subset of a verified bundle or
//!   of a mirror store, staged (every blob hashed) and written by the same writer.

mod local;
pub mod ops;
mod plan;
pub mod preflight;
pub mod provenance;
pub mod reexport;
mod resolve;
pub mod since;
pub mod sources;
pub mod trust;
mod write;

use ferry_bundle::digest::Digest;

pub use resolve::{resolve, ResolveError, Resolved, ResolvedImage, ResolvedManifest};
pub use write::{export, preflight, ExportError, ExportOptions, ExportSummary};

/// Progress reported by export (the binary renders it; the library never prints).
#[derive(Debug, Clone)]
pub enum Event {
    /// A reference was resolved.
    Resolved {
        /// Source reference.
        reference: String,
        /// Its digest.
        digest: Digest,
        /// Platforms selected (empty for single manifests).
        platforms: Vec<String>,
    },
    /// Blob fetching starts.
    FetchStart {
        /// Blobs to fetch (not in the cache).
        blobs: usize,
        /// Their bytes.
        bytes: u64,
        /// Blobs already in the cache.
        cached: usize,
    },
    /// Bytes arrived.
    FetchProgress {
        /// How many.
        bytes: u64,
    },
    /// One blob is in the cache.
    Fetched {
        /// Its digest.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// The plan, counted before any blob is downloaded (the export stops
    /// here when a filesystem lacks room).
    Preflight(preflight::Preflight),
    /// The signature policy checked every item it matches (before writing).
    PolicyChecked {
        /// The verdicts, as `bundle.json` records them.
        verdicts: Vec<ferry_bundle::meta::ItemVerdict>,
    },
    /// Something the operator should know (a driver missing upstream, …).
    Warning {
        /// The message.
        message: String,
    },
    /// Writing the bundle starts.
    WriteStart {
        /// Total blob bytes to write.
        bytes: u64,
    },
    /// Bytes written (uncompressed).
    WriteProgress {
        /// How many.
        bytes: u64,
    },
}

/// Where events go.
pub type Events = std::sync::Arc<dyn Fn(Event) + Send + Sync>;
