//! ferry's OCI distribution client (DRAFT API: bodies being implemented).
//!
//! One [`Client`] talks to many registries. It owns the HTTP connection pool,
//! per-host settings (plain HTTP, CA, client certificate, credentials), the
//! bearer-token cache, the retry policy and the concurrency limit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use ferry_bundle::digest::Digest;

/// Per-registry-host settings.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// Speak plain HTTP to this host (loopback hosts default to it, as docker does).
    pub plain_http: bool,
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
        write!(f, "Credentials {{ username: {:?}, password: <redacted> }}", self.username)
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
    /// Concurrent requests in flight across the client (`--jobs`).
    pub jobs: usize,
    /// Blobs larger than this are uploaded in chunks (PATCH) of this size.
    pub chunk_size: u64,
    /// Per-request timeout for non-streaming requests, and the stall timeout for streams.
    pub timeout: Duration,
    /// User-Agent header.
    pub user_agent: String,
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
            chunk_size: 16 * 1024 * 1024,
            timeout: Duration::from_secs(60),
            user_agent: concat!("ferry/", env!("CARGO_PKG_VERSION")).to_string(),
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

/// Errors, each naming the URL / reference / digest involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Placeholder while the client is being written.
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
}
