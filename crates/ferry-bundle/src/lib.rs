//! ferry's formats, synchronous and free of networking.
//!
//! - [`digest`]: sha256 digests and hashing readers/writers;
//! - [`reference`]: image references normalised the way docker does;
//! - [`manifest`]: reading OCI / Docker schema2 manifests and indexes (never rewriting them);
//! - [`spec`]: the `bundle.yaml` spec; [`lock`]: the `ferry.lock` file;
//! - [`meta`]: `ferry/bundle.json`, the bundle's signed table of contents;
//! - [`receipt`]: what an import left at the target (`import --receipt`),
//!   the base of `export --since` and the input of `ferry prune`;
//! - [`writer`] and [`reader`]: the bundle tarball, written reproducibly and
//!   read as one verifying stream; [`frames`]: a zstd bundle's frames and
//!   their seek table; [`head`]: reading only the bundle's head;
//!   [`write_error`]: the error of writing a bundle, whole or in parts;
//! - [`parts`]: split bundles (rolling part writer, verifying part reader,
//!   and [`parts::open_bundle`] for a bundle file, parts manifest or first part);
//! - [`atomic`]: the atomic whole-file write (temporary file, fsync, rename);
//!   [`room`]: room on a local filesystem (`statvfs`), for preflights;
//!   [`store_layout`]: the store's paths and index annotations (import writes,
//!   serve reads); [`blob_dir`]: the blob directory and its one verified
//!   write (store, export cache, re-export staging, test data);
//! - [`sign`]: minisign key pairs and the signature over `ferry/bundle.json`;
//! - [`artifact`]: file kinds as OCI artifacts; [`placement`]: where each
//!   file kind may land; [`relpath`]: validated relative paths of the file tree;
//! - [`chart`]: Helm chart archives (validation, Helm's OCI encoding, the
//!   images a chart references); [`semver`]: Helm's loose semantic versions;
//!   [`discover`]: image references in rendered Kubernetes manifests;
//! - [`text`]: the single-line text rule for strings a bundle carries,
//!   escaping untrusted text for output, the bundle-name grammar;
//!   [`yaml`]: the nesting-depth guard every YAML read passes first;
//!   [`input`]: bounded reading of the operator's text files;
//! - `craft` (feature `craft`, tests and fuzzing only): hand-made bundles,
//!   valid or deliberately broken.

pub mod digest;
pub mod manifest;
pub mod reference;

pub use digest::Digest;
pub use reference::Reference;
pub mod artifact;
pub mod atomic;
pub mod blob_dir;
pub mod chart;
#[cfg(any(test, feature = "craft"))]
pub mod craft;
pub mod discover;
pub mod frames;
pub mod head;
pub mod input;
pub mod lock;
pub mod meta;
pub mod parts;
pub mod placement;
pub mod reader;
pub mod receipt;
pub mod relpath;
pub mod room;
pub mod semver;
pub mod sign;
pub mod spec;
pub mod store_layout;
pub mod text;
pub mod write_error;
pub mod writer;
pub mod yaml;
