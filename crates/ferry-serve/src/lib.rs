//! `ferry serve`: a read-only OCI registry and file server over a mirror
//! store written by `ferry import --store DIR`.
//!
//! The store is an OCI image layout plus a file tree:
//!
//! ```text
//! DIR/oci-layout         {"imageLayoutVersion":"1.0.0"}
//! DIR/index.json         one descriptor per (repository, tag) and per manifest kept by digest,
//!                        annotated dev.ferry.repository / dev.ferry.tag
//! DIR/blobs/sha256/<hex> every manifest, index, config and layer
//! DIR/files/<tree>       falco/, helm/, opensearch/, files/
//! ```
//!
//! Served:
//!
//! - the read side of the OCI distribution API under `/v2/`: manifests and
//!   blobs by tag and digest (GET and HEAD, `Range` on blobs), tag lists and
//!   the catalog with `n`/`last` pagination, and the referrers API built from
//!   the `subject` fields in the store. Push methods answer 405 `UNSUPPORTED`;
//! - every other path as a file under `DIR/files` (or every path on a second
//!   listener, [`ServeOptions::files_listen`]), with `Range`, never a
//!   directory listing, never anything outside `DIR/files`.
//!
//! Bytes stream from disk in bounded chunks. `index.json` is re-read when the
//! importer replaces it, so a running server sees new imports without a
//! restart. Each request is logged once (`tracing::info!`, target
//! `ferry_serve::http`) with method, path, status, bytes sent and duration.
//!
//! Modules: `oci` (the distribution API's read side), `store` (the
//! registry view built from `index.json`), `files` (the file tree),
//! `http` (ranges, streaming, the access log), `names` (the URL grammars),
//! `auth` (htpasswd), `tls` (rustls from PEM files).
//!
//! ```no_run
//! # async fn example() -> Result<(), ferry_serve::ServeError> {
//! let opts = ferry_serve::ServeOptions::new("/srv/mirror", "127.0.0.1:0".parse().unwrap());
//! let server = ferry_serve::bind(opts).await?;
//! println!("registry at {}", server.registry_url());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod auth;
mod files;
mod http;
mod names;
mod oci;
mod store;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use auth::CHALLENGE;
pub use store::{ANN_REPOSITORY, ANN_TAG};

use crate::auth::Htpasswd;
use crate::http::Peer;
use crate::store::Store;

/// How long open connections may finish their responses after shutdown
/// was asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What to serve, where and how.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The store directory (`ferry import --store DIR`).
    pub dir: PathBuf,
    /// Where the registry (and, without `files_listen`, the file tree) listens.
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate chain and private key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require HTTP Basic credentials from this htpasswd file (bcrypt entries).
    pub htpasswd: Option<PathBuf>,
    /// Serve the file tree on this second address (every path is a file
    /// there), leaving `listen` to the registry alone.
    pub files_listen: Option<SocketAddr>,
    /// Allow a non-loopback address without both TLS and htpasswd.
    pub insecure_listen: bool,
}

impl ServeOptions {
    /// Plain HTTP on `listen`, no authentication, files on the same port.
    pub fn new(dir: impl Into<PathBuf>, listen: SocketAddr) -> ServeOptions {
        ServeOptions {
            dir: dir.into(),
            listen,
            tls: None,
            htpasswd: None,
            files_listen: None,
            insecure_listen: false,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store directory is missing or not a directory.
    #[error("store directory `{}` does not exist or is not a directory", path.display())]
    NotADirectory {
        /// The directory.
        path: PathBuf,
    },
    /// The directory holds none of a store's entries.
    #[error("`{}` is not a ferry store: it has no oci-layout, index.json or files/ (create one with `ferry import BUNDLE --store DIR`)", path.display())]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },
    /// `oci-layout` is not `{"imageLayoutVersion":"1.0.0"}`.
    #[error("`{}`: {reason}", path.display())]
    Layout {
        /// The oci-layout file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `index.json` is not an OCI image index.
    #[error("`{}` is not a valid OCI image index: {reason}", path.display())]
    Index {
        /// The index.json file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read.
    #[error("failed to read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line of the htpasswd file is not a bcrypt entry.
    #[error("htpasswd `{}` line {line}: {reason}", path.display())]
    Htpasswd {
        /// The htpasswd file.
        path: PathBuf,
        /// The 1-based line (0: the whole file).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The certificate file is unusable.
    #[error("TLS certificate `{}`: {reason}", path.display())]
    TlsCert {
        /// The PEM file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file is unusable.
    #[error("TLS key `{}`: {reason}", path.display())]
    TlsKey {
        /// The PEM file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate and key do not make a TLS configuration.
    #[error("TLS with certificate `{}` and key `{}`: {reason}", cert.display(), key.display())]
    Tls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// A non-loopback address without TLS and authentication.
    #[error("refusing to listen on {addr}: it is not a loopback address, and serving beyond this host needs both TLS (--tls-cert/--tls-key) and authentication (--htpasswd); pass --insecure-listen to do it anyway")]
    InsecureListen {
        /// The address.
        addr: SocketAddr,
    },
    /// The address could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Which part of the service a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `/v2/...` is the registry, every other path a file.
    RegistryAndFiles,
    /// Only `/v2/...` (the files have their own listener).
    Registry,
    /// Every path is a file.
    Files,
}

/// A bound server, not yet accepting connections: [`Server::local_addr`]
/// tells where it listens (useful with port 0), [`Server::run`] serves.
pub struct Server {
    registry: TcpListener,
    registry_addr: SocketAddr,
    registry_app: Router,
    files: Option<(TcpListener, SocketAddr, Router)>,
    tls: Option<TlsAcceptor>,
    dir: PathBuf,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("dir", &self.dir)
            .field("registry_addr", &self.registry_addr)
            .field("files_addr", &self.files_addr())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Checks the store and the options, reads `index.json`, loads TLS and
/// htpasswd, and binds the listener(s).
pub async fn bind(opts: ServeOptions) -> Result<Server, ServeError> {
    check_store(&opts.dir)?;
    for addr in std::iter::once(opts.listen).chain(opts.files_listen) {
        let protected = opts.tls.is_some() && opts.htpasswd.is_some();
        if !addr.ip().is_loopback() && !protected && !opts.insecure_listen {
            return Err(ServeError::InsecureListen { addr });
        }
    }
    let tls = match &opts.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let auth = match &opts.htpasswd {
        Some(p) => Some(Arc::new(Htpasswd::load(p)?)),
        None => None,
    };
    let store = Arc::new(Store::new(opts.dir.clone()));
    let repositories = store.preload().await?;
    let listen = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let registry = listen(opts.listen).await?;
    let registry_addr = local_addr(&registry, opts.listen);
    let files = match opts.files_listen {
        Some(addr) => {
            let l = listen(addr).await?;
            let a = local_addr(&l, addr);
            Some((l, a, app(store.clone(), Role::Files, auth.clone())))
        }
        None => None,
    };
    let role = if files.is_some() {
        Role::Registry
    } else {
        Role::RegistryAndFiles
    };
    tracing::info!(
        dir = %opts.dir.display(),
        repositories,
        registry = %registry_addr,
        files = %files.as_ref().map_or(registry_addr, |f| f.1),
        tls = tls.is_some(),
        auth = auth.is_some(),
        "serving the store"
    );
    Ok(Server {
        registry,
        registry_addr,
        registry_app: app(store, role, auth),
        files,
        tls,
        dir: opts.dir,
    })
}

/// [`bind`], then [`Server::run`] until `shutdown` completes.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    bind(opts).await?.run(shutdown).await
}

fn local_addr(l: &TcpListener, asked: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(asked)
}

impl Server {
    /// The registry's address (the port the OS chose when asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.registry_addr
    }

    /// The separate file server's address, when `files_listen` was given.
    pub fn files_addr(&self) -> Option<SocketAddr> {
        self.files.as_ref().map(|f| f.1)
    }

    /// Whether the listeners speak TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// The registry's base URL, e.g. `http://127.0.0.1:5000` (the API is
    /// under `/v2/`).
    pub fn registry_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.registry_addr)
    }

    /// The file tree's base URL, ending in `/`: `DIR/files/a/b` is
    /// `<files_url>a/b`.
    pub fn files_url(&self) -> String {
        format!(
            "{}://{}/",
            self.scheme(),
            self.files_addr().unwrap_or(self.registry_addr)
        )
    }

    /// Serves until `shutdown` completes, then stops accepting connections
    /// and gives open ones [`SHUTDOWN_GRACE`] to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let graceful = GracefulShutdown::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
        let registry = accept_loop(
            self.registry,
            self.registry_app,
            self.tls.clone(),
            stop_rx.clone(),
            &graceful,
        );
        let files = async {
            if let Some((listener, _, app)) = self.files {
                accept_loop(listener, app, self.tls.clone(), stop_rx.clone(), &graceful).await;
            }
        };
        let stop = async move {
            shutdown.await;
            let _ = stop_tx.send(());
        };
        tokio::join!(registry, files, stop);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "connections still open {SHUTDOWN_GRACE:?} after shutdown; closing them"
            );
        }
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    mut stop: tokio::sync::watch::Receiver<()>,
    graceful: &GracefulShutdown,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let watcher = graceful.watcher();
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(tcp), app, peer, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(TokioIo::new(stream), app, peer, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(io: TokioIo<I>, app: Router, peer: SocketAddr, watcher: Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(app);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        svc.call(req)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(io, svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

fn app(store: Arc<Store>, role: Role, auth: Option<Arc<Htpasswd>>) -> Router {
    Router::new()
        .fallback(move |req: Request| {
            let store = store.clone();
            async move { dispatch(&store, role, req).await }
        })
        .layer(axum::middleware::from_fn_with_state(auth, auth::require))
        .layer(axum::middleware::from_fn(http::access_log))
}

async fn dispatch(store: &Store, role: Role, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path();
    let registry_path = path == "/v2" || path.starts_with("/v2/");
    match role {
        Role::Files => {
            files::handle(
                &store.files_dir(),
                &parts.method,
                &parts.uri,
                &parts.headers,
            )
            .await
        }
        _ if registry_path => oci::handle(store, &parts.method, &parts.uri, &parts.headers).await,
        Role::RegistryAndFiles => {
            files::handle(
                &store.files_dir(),
                &parts.method,
                &parts.uri,
                &parts.headers,
            )
            .await
        }
        Role::Registry => files::not_found(),
    }
}

/// Refuses a directory that is not a store, or a layout of another version.
fn check_store(dir: &Path) -> Result<(), ServeError> {
    if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Err(ServeError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let store = ferry_bundle::store_layout::StoreLayout::new(dir);
    let layout = store.oci_layout();
    if ![store.oci_layout(), store.index_json(), store.files()]
        .iter()
        .any(|p| p.exists())
    {
        return Err(ServeError::NotAStore {
            path: dir.to_path_buf(),
        });
    }
    if layout.exists() {
        let bytes = std::fs::read(&layout).map_err(|source| ServeError::Read {
            path: layout.clone(),
            source,
        })?;
        let version = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["imageLayoutVersion"].as_str().map(str::to_string));
        if version.as_deref() != Some("1.0.0") {
            return Err(ServeError::Layout {
                path: layout,
                reason: format!(
                    "expected {{\"imageLayoutVersion\":\"1.0.0\"}}, found imageLayoutVersion {}",
                    version.as_deref().unwrap_or("(none)")
                ),
            });
        }
    }
    Ok(())
}
