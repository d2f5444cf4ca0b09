//! ferry's formats, synchronous and free of networking.
//!
//! - [`digest`]: sha256 digests and hashing readers/writers;
//! - [`reference`]: image references normalised the way docker does;
//! - [`manifest`]: reading OCI / Docker schema2 manifests and indexes (never rewriting them);
//! - [`spec`]: the `bundle.yaml` spec; [`lock`]: the `ferry.lock` file;
//! - [`meta`]: `ferry/bundle.json`, the bundle's signed table of contents;
//! - [`writer`] and [`reader`]: the bundle tarball, written reproducibly and
//!   read as one verifying stream;
//! - [`parts`]: split bundles (rolling part writer, verifying part reader,
//!   and [`parts::open_bundle`] for a bundle file, parts manifest or first part);
//! - [`sign`]: minisign key pairs and the signature over `ferry/bundle.json`;
//! - [`text`]: the single-line text rule for strings a bundle carries,
//!   escaping untrusted text for output, the bundle-name grammar;
//!   [`yaml`]: the nesting-depth guard every YAML read passes first;
//!   [`input`]: bounded reading of the operator's text files.

pub mod digest;
pub mod manifest;
pub mod reference;

pub use digest::Digest;
pub use reference::Reference;
pub mod artifact;
pub mod chart;
#[cfg(any(test, feature = "craft"))]
pub mod craft;
pub mod discover;
pub mod head;
pub mod input;
pub mod lock;
pub mod meta;
pub mod parts;
pub mod placement;
pub mod reader;
pub mod relpath;
pub mod semver;
pub mod sign;
pub mod spec;
pub mod text;
pub mod writer;
pub mod yaml;
