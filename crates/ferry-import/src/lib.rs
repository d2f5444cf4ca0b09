//! Import: verify → plan → stream → commit, into an OCI registry.
//!
//! The bundle is read once, as a stream, on a blocking thread
//! ([`ferry_bundle::reader`]), with every check `ferry verify` makes. Once
//! the manifests (which come first) are in, the plan is made: each item's
//! target repository, which blobs the target already has (HEAD), which need
//! uploading and where. Blobs are then uploaded *while they stream past*
//! (small ones whole, large ones in chunks), mounted into the other
//! repositories that need them, and only when every blob an item needs is
//! verified and present are its manifests pushed, children first, tags last.
//! A bad blob means no manifest that references it is pushed; the rest lands.
//!
//! File items (charts, drivers, plugins, files) are staged as they stream and
//! published only once the whole bundle has verified and import has re-made
//! the checks export made (chart archives, OpenSearch `.sha512`): a refused
//! bundle publishes nothing. The plan refuses two sources on one target tag
//! and a file out of its kind's place ([`ferry_bundle::placement`]) before
//! anything is pushed, and every step is near-linear in the number of items.
//!
//! [`verify`] is `ferry verify` and `ferry inspect` as library operations
//! (the same checks, one read, a report). [`receipt`] re-exports the
//! receipt format from [`ferry_bundle::receipt`].
//!
//! [`archives`] is the first node's path instead (`--archives DIR`): one OCI
//! archive per image that `ctr images import`, k3s/RKE2 and `podman load`
//! read directly, written all or nothing from one verified read.
//!
//! Modules:
//!
//! - `run/`: the import run as phases (`mod.rs` the order, `bridge.rs`
//!   reader → uploads, `plan.rs`, `preflight.rs`, `upload.rs`, `commit.rs`
//!   where manifests are pushed, `files.rs`, `report.rs`); `dest.rs` the
//!   destination (a registry or a store); `tree.rs` file items' placement;
//!   [`target`] the reference mapping; [`referrers`] the referrers fallback
//!   tag.
//! - [`files`]: the file target (a directory or a WebDAV server);
//!   [`store`]: the `ferry serve` store; [`content`]: the content re-checks
//!   (chart archives, plugin checksums); [`trust`]: carried signatures
//!   re-verified offline.
//! - [`emit`]: every consumer's configuration; [`helm_index`] and
//!   [`falcoctl`]: the file server's Helm and falcoctl indexes.
//! - [`verify`], [`receipt`], [`archives`] (above) and [`prune`]: the
//!   lifecycle by receipts and kept locks.

pub mod archives;
pub mod content;
pub mod emit;
pub mod falcoctl;
pub mod files;
pub mod helm_index;
pub mod prune;
pub mod receipt;
pub mod referrers;
/// The node runtimes' files (`emit::runtimes`), at their old path.
pub use emit::runtimes;
pub mod target;

mod dest;
mod run;
pub mod store;
mod tree;
pub mod trust;
pub mod verify;

pub use run::{
    import, ImportError, ImportOptions, ImportReport, ItemOutcome, PlanEntry, SignatureCheck,
};

/// Progress reported by import.
#[derive(Debug, Clone)]
pub enum Event {
    /// The plan is made.
    Planned {
        /// Items.
        items: usize,
        /// Blobs to upload.
        upload: usize,
        /// Bytes to upload.
        upload_bytes: u64,
        /// Blobs the target already has.
        present: usize,
    },
    /// Bytes uploaded.
    UploadProgress {
        /// How many.
        bytes: u64,
    },
    /// Every blob is settled and the manifests are about to be pushed
    /// (children first, tags last).
    CommitStarted {
        /// Registry items to commit.
        items: usize,
    },
    /// An item is committed.
    Committed {
        /// Source reference.
        reference: String,
        /// Target reference.
        target: String,
    },
    /// A warning worth showing.
    Warning {
        /// Message.
        message: String,
    },
}

/// Where events go.
pub type Events = std::sync::Arc<dyn Fn(Event) + Send + Sync>;
