//! The receipt: what the target now holds, per repository.
//!
//! The format lives in [`ferry_bundle::receipt`] (export reads it for
//! `--since` without depending on import); re-exported here so import's
//! callers keep their paths.

pub use ferry_bundle::receipt::{Receipt, RepoContent, RECEIPT_VERSION};
