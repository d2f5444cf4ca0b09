//! ferry's OCI distribution client.
//!
//! One [`Client`] talks to many registries. It owns the HTTP connection pools
//! (one per configured host, because TLS settings are per host), the per-host
//! settings (plain HTTP, CA, client certificate, credentials, pull-through
//! mirror), the credential and bearer-token caches, the retry policy and the
//! concurrency limit.
//!
//! - Addresses: `docker.io` is reached at `registry-1.docker.io`; loopback
//!   hosts and hosts marked [`HostConfig::plain_http`] speak plain HTTP,
//!   everything else HTTPS; a [`HostConfig::mirror`] redirects a host to a
//!   pull-through registry, its path put before the repository path.
//! - Auth: `WWW-Authenticate` challenges are followed (Basic, Bearer token
//!   service); credentials come from [`HostConfig::credentials`], else the
//!   docker config (`auths`, `credHelpers`, `credsStore`), else none.
//!   Passwords and tokens never appear in errors, logs or `Debug` output.
//! - Retries: connection errors, timeouts, 429 and 500/502/503/504 are retried
//!   with exponential backoff and jitter, honouring `Retry-After`.
//! - Integrity: manifests fetched by digest and every blob are hashed as they
//!   arrive and compared with the digest (and size) they were asked for.
//!   Blobs stream; only [`Client::upload_blob`] takes a whole blob in memory.
//!
//! Modules:
//!
//! - `client`: the [`Client`] and the distribution API, one submodule each
//!   for the endpoint probe (`connect`), one request with
//!   auth and retries (`request`), `manifests`, `blobs` (downloads),
//!   `uploads` (mount, whole, chunked), `streamed` (one streamed PUT per
//!   blob), and tag/referrer `listing`;
//! - `auth`: `WWW-Authenticate` challenges, credentials, bearer tokens and
//!   their cache (uses `response`, never the client);
//! - `docker_config`: credentials from the docker config file;
//! - `endpoint`: scheme, authority and mirror prefix of a host;
//! - `error`: the [`Error`] type and [`chain`];
//! - `gate`: adaptive concurrency per host (429);
//! - `http_fetch`: plain HTTP(S) file fetches;
//! - `part_file`: `.part-<random>` files beside a destination;
//! - `response`: capped body reads, error bodies, `Retry-After`, headers;
//! - `retry`: which failures are retried and the wait before the next try;
//! - `transport`: the one place a `reqwest::Client` is built (per-host TLS,
//!   redirects), the one retry loop, and [`transport::Transport`], the
//!   sender of the WebDAV file target (credentials for their exact origin
//!   only, capped and redacted error bodies);
//! - `verify`: a byte stream checked against size and digest.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_registry::Error> {
//! use ferry_registry::{Client, ClientConfig, Repo};
//!
//! let client = Client::new(ClientConfig::default())?;
//! let repo = Repo { host: "docker.io".into(), path: "library/nginx".into() };
//! let manifest = client.get_manifest(&repo, "1.27").await?;
//! // The digest is always that of the exact bytes served.
//! assert_eq!(manifest.digest, ferry_bundle::digest::Digest::of(&manifest.bytes));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod auth;
mod client;
mod docker_config;
mod endpoint;
mod error;
mod gate;
mod http_fetch;
mod part_file;
mod response;
pub mod retry;
pub mod transport;
mod verify;

pub use client::{BlobBytes, BlobChunks, BlobStream, Client, Progress};
pub use endpoint::is_loopback;
pub use error::{chain, Error};
pub use http_fetch::{Fetched, OriginCredentials};

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use ferry_bundle::digest::Digest;

/// Per-registry-host settings.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// Speak plain HTTP to this host (`http://`, `--plain-http`).
    pub plain_http: bool,
    /// Speak only HTTPS to this host, loopback included (TLS was asked for:
    /// an explicit `https://`, or a CA, client certificate or `insecure` set
    /// for this host). Without either flag HTTPS is used too, except that a
    /// loopback host (`localhost`, `127.0.0.0/8`, `::1`) whose port does not
    /// complete a TLS handshake is spoken to in plain HTTP, as docker does.
    pub https: bool,
    /// Do not verify the TLS certificate.
    pub insecure_skip_verify: bool,
    /// Extra CA bundle (PEM) trusted for this host.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Explicit credentials (else ~/.docker/config.json, else anonymous).
    pub credentials: Option<Credentials>,
    /// Send requests for this host to another base URL instead
    /// (`--upstream-mirror docker.io=https://proxy.corp/dockerhub`): scheme,
    /// host and an optional path prefix put before the repository path.
    pub mirror: Option<url::Url>,
}

/// Username + password (or identity token as password).
#[derive(Clone, Default)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token. Never printed.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

/// Client-wide settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Settings per `host[:port]` as written in references (`docker.io`, `127.0.0.1:5000`).
    pub hosts: HashMap<String, HostConfig>,
    /// Settings for hosts not listed (CA/cert flags given without a host apply here).
    pub default_host: HostConfig,
    /// Path of the docker config to read credentials from (default `~/.docker/config.json`,
    /// or `$DOCKER_CONFIG/config.json`). `None` disables it.
    pub docker_config: Option<PathBuf>,
    /// Maximum attempts per request (first try included).
    pub max_attempts: u32,
    /// First backoff delay; doubles each retry, with jitter, capped at `max_backoff`.
    pub initial_backoff: Duration,
    /// Upper bound of one backoff delay (also caps an honoured Retry-After).
    pub max_backoff: Duration,
    /// Requests being sent at once across the client (`--jobs`): a request
    /// holds a slot until its response headers arrive; bodies streamed
    /// afterwards do not count.
    pub jobs: usize,
    /// Blobs larger than this are uploaded in chunks (PATCH) of this size.
    /// Callers split the blob; [`Client::upload_blob_chunked`] sends each
    /// chunk it receives as one PATCH.
    pub chunk_size: u64,
    /// Connect timeout; total timeout of small requests (uploads get one more
    /// second per 64 KiB of body); time allowed until response headers and
    /// between two reads of a streamed body. Never a limit on a whole large
    /// download.
    pub timeout: Duration,
    /// User-Agent header.
    pub user_agent: String,
    /// URL prefix rewrites for plain HTTP fetches (`--upstream-mirror
    /// https://download.falco.org=https://proxy.corp/falco`): a URL starting
    /// with the first string is fetched from the second instead.
    pub url_mirrors: Vec<(String, url::Url)>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            hosts: HashMap::new(),
            default_host: HostConfig::default(),
            docker_config: None,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            jobs: 4,
            chunk_size: 4 * 1024 * 1024,
            timeout: Duration::from_secs(60),
            user_agent: concat!("ferry/", env!("CARGO_PKG_VERSION")).to_string(),
            url_mirrors: Vec::new(),
        }
    }
}

/// A repository on a registry: `host[:port]` + path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repo {
    /// `host[:port]` as written in references (`docker.io` is mapped to its API endpoint).
    pub host: String,
    /// Repository path, e.g. `library/nginx`.
    pub path: String,
}

/// A manifest as served: exact bytes, media type, digest (computed from the bytes).
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The exact bytes the registry served.
    pub bytes: Bytes,
    /// Content-Type as served (or the document's mediaType).
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.path)
    }
}
