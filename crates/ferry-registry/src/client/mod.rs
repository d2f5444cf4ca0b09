//! The [`Client`]: one value holding the per-host HTTP clients, auth
//! caches and concurrency limits, with the distribution API operations in
//! submodules:
//!
//! - `connect`: choosing the endpoint (plain HTTP or HTTPS, the loopback
//!   TLS probe), `ping` (the per-host HTTP clients are built by
//!   [`crate::transport`]);
//! - `request`: one request with auth and retries (challenges, tokens,
//!   the adaptive per-host gate, error answers);
//! - `manifests`: get/head/put/delete manifests;
//! - `blobs`: head, get, download and stream blobs, resumed and verified;
//! - `uploads`: mount, monolithic and chunked uploads, and their byte
//!   sources ([`BlobBytes`], [`BlobChunks`]: hashed here, or by their sender);
//! - `streamed`: one streamed PUT per blob, falling back to chunks;
//! - `listing`: tag lists and referrers, page by page.
//! - `probe`: whether a repository accepts a push (the import's
//!   preflight), the upload session it opened held for that repository's
//!   first upload (cancelled when none comes), and whether the registry
//!   knows a repository at all.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use futures_util::Stream;

use crate::auth::AuthCache;
use crate::endpoint::Endpoint;
use crate::transport::{build_http, Redirects};
use crate::{ClientConfig, Error, Repo};

mod blobs;
mod connect;
mod listing;
mod manifests;
mod probe;
mod request;
mod streamed;
mod uploads;

pub use uploads::{BlobBytes, BlobChunks};

/// A blob body being received: bytes as they arrive, checked against the
/// digest (and size) asked for. A mismatch is the last item, as an error.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

/// A progress callback, called with the number of bytes that just moved.
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// Largest manifest accepted.
const MANIFEST_LIMIT: usize = 16 << 20;
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const OCTET_STREAM: &str = "application/octet-stream";

/// An OCI distribution client for many registries. Cheap to clone (the state
/// is shared), `Send` and `Sync`.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    /// The HTTP client for hosts without their own settings.
    pub(crate) default_http: reqwest::Client,
    /// One HTTP client per configured host (TLS settings are per host).
    pub(crate) host_http: HashMap<String, reqwest::Client>,
    auth: AuthCache,
    /// Bounds requests being sent at once (`jobs`).
    pub(crate) jobs: tokio::sync::Semaphore,
    /// Adaptive slots per host (see [`crate::gate`]).
    gates: std::sync::Mutex<HashMap<String, Arc<crate::gate::HostGate>>>,
    /// Loopback hosts given without a scheme, by whether they turned out to
    /// speak plain HTTP (`true`) or HTTPS (`false`).
    plain_loopback: std::sync::Mutex<HashMap<String, bool>>,
    /// Hosts that refused a streamed PUT (their uploads go in chunks).
    no_streamed_put: std::sync::Mutex<HashSet<String>>,
    /// Upload sessions opened by [`Client::hold_push`] and not written to
    /// yet, one per repository: the next upload into it starts there
    /// instead of opening one ([`Client::cancel_held_uploads`] ends those
    /// never used). Each is kept as its URL's text (see `probe.rs`).
    held_uploads: std::sync::Mutex<HashMap<Repo, Box<str>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `config`. Reads the CA bundles and client certificates
    /// now, so a bad file is reported before any request.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let default_http = build_http(&config.default_host, &config, "*", Redirects::Follow)?;
        Endpoint::resolve("registry.invalid", &config.default_host)?;
        let mut host_http = HashMap::new();
        for (host, hc) in &config.hosts {
            Endpoint::resolve(host, hc)?;
            host_http.insert(
                host.clone(),
                build_http(hc, &config, host, Redirects::Follow)?,
            );
        }
        let jobs = tokio::sync::Semaphore::new(config.jobs.max(1));
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                default_http,
                host_http,
                auth: AuthCache::default(),
                jobs,
                gates: std::sync::Mutex::new(HashMap::new()),
                plain_loopback: std::sync::Mutex::new(HashMap::new()),
                no_streamed_put: std::sync::Mutex::new(HashSet::new()),
                held_uploads: std::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostConfig;

    #[test]
    fn client_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Client>();
    }

    #[test]
    fn client_debug_never_shows_passwords() {
        let mut config = ClientConfig::default();
        config.hosts.insert(
            "r.corp".into(),
            HostConfig {
                credentials: Some(crate::Credentials {
                    username: "u".into(),
                    password: "hunter2".into(),
                }),
                ..HostConfig::default()
            },
        );
        let c = Client::new(config).unwrap();
        let d = format!("{c:?}");
        assert!(d.contains("r.corp") && !d.contains("hunter2"), "{d}");
    }
}
