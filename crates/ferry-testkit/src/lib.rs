//! Test support for ferry: a real registry, deterministic images, faults.
//!
//! Integration tests in the other crates and `cargo xtask test` / `demo` use
//! these pieces:
//!
//! - [`registry`]: starts Debian's CNCF distribution server
//!   (`/usr/bin/docker-registry`) on a free loopback port with its own
//!   configuration and temporary storage ([`registry::Registry`]), and
//!   [`registry::require_tool`], which fails a test with the install line
//!   when a tool is missing (never a skip);
//! - [`fixtures`]: a deterministic generator of images (a multi-arch OCI
//!   index, Docker schema2 images and lists, shared base layers, many small
//!   layers, a Trivy-DB-shaped artifact, an optional large layer) with their
//!   exact manifest bytes and blobs, and [`fixtures::push`] to put them in a
//!   registry; one file each for the set a test holds (`set.rs`), the
//!   images (`images.rs`), their layers (`layers.rs`), the manifest and
//!   config shapes (`documents.rs`) and the push (`push.rs`);
//! - [`proxy`]: [`proxy::FaultProxy`], an HTTP/1.1 proxy in front of a real
//!   registry that injects error statuses, 429 with `Retry-After`, cut
//!   connections and stalls;
//! - [`pki`]: a private CA and a server certificate for loopback, for the
//!   TLS registry ([`registry::RegistryOptions`]) and `ferry serve --tls-*`;
//! - [`tools`]: `skopeo` as an independent client, to check what a registry
//!   holds;
//! - [`nginx`]: Debian's nginx on a free loopback port, read-only (an
//!   upstream file server) or with WebDAV (a file target);
//! - [`containerd`]: Debian's containerd with its own root, state and
//!   socket, to pull through emitted `hosts.toml` files (a real consumer);
//! - [`dataset`]: the benchmark's image sets; [`store`]: a `ferry serve`
//!   store written directly; [`tmpfs`]: a small tmpfs for full-disk tests.
//!
//! ```no_run
//! use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
//! use ferry_testkit::registry::{require_tool, Registry};
//! use ferry_testkit::tools::skopeo_inspect_raw;
//!
//! # async fn example() -> anyhow::Result<()> {
//! if !require_tool("docker-registry") || !require_tool("skopeo") {
//!     return Ok(());
//! }
//! let registry = Registry::start()?;
//! let set = FixtureSet::generate(&FixtureOptions::default());
//! let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default())?;
//! push(&set, &client, &registry.host()).await?;
//! let image = set.image("fixtures/multiarch");
//! let raw = skopeo_inspect_raw(&image.reference(&registry.host()))?;
//! assert_eq!(ferry_bundle::Digest::of(&raw), image.top.digest);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed set-up fails the test that asked for it"
)]

pub mod containerd;
pub mod dataset;
pub mod fixtures;
pub mod nginx;
pub mod pki;
pub mod proxy;
pub mod registry;
pub mod store;
pub mod tmpfs;
pub mod tools;
