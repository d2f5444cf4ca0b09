//! The [`Client`]: requests with auth and retries, and the distribution API
//! operations built on them.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferry_bundle::digest::{Digest, Hasher};
use ferry_bundle::manifest::{Descriptor, MANIFEST_ACCEPT, OCI_INDEX, OCI_MANIFEST};
use futures_util::{Stream, StreamExt};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, LINK, LOCATION, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};
use url::Url;

use crate::auth::{self, AuthCache, Challenge, Creds};
use crate::endpoint::{authority_of, safe_url, Endpoint};
use crate::verify::VerifyingStream;
use crate::{docker_config, retry, ClientConfig, Error, HostConfig, Manifest, Repo};

/// A blob body being received: bytes as they arrive, checked against the
/// digest (and size) asked for. A mismatch is the last item, as an error.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

/// A progress callback, called with the number of bytes that just moved.
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// Largest manifest accepted.
const MANIFEST_LIMIT: usize = 16 << 20;
/// Largest tag-list page accepted.
const TAGS_LIMIT: usize = 16 << 20;
/// How much of an error body is read for its message.
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// The slowest upload rate assumed when sizing the timeout of a request with a body.
const MIN_UPLOAD_RATE: u64 = 64 << 10;
/// Write buffer of [`Client::download_blob`].
const DOWNLOAD_BUFFER: usize = 1 << 20;
/// Stop following tag-list pages after this many.
const MAX_TAG_PAGES: usize = 100_000;
/// Stop following referrers pages after this many.
const MAX_REFERRER_PAGES: usize = 1_000;
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
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// How long a loopback host given without a scheme may take to complete a
/// TLS handshake before it is taken to speak plain HTTP. Real plain-HTTP
/// servers (distribution, nginx, hyper) refuse a TLS hello at once; this only
/// bounds a server that waits.
const LOOPBACK_TLS_PROBE: Duration = Duration::from_secs(3);

/// Whether the connection was refused (nothing listens on the port).
fn refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// Who a request is for: the host's endpoint, HTTP client and auth scopes.
struct Target<'a> {
    /// The host as configured / written in references.
    host: &'a str,
    ep: Endpoint,
    http: &'a reqwest::Client,
    /// Token scopes the operation needs, sorted.
    scopes: Vec<String>,
}

/// How long a request may take.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// `timeout` for the whole exchange, body included (small bodies).
    Total,
    /// `timeout` until the response headers; the body is read with a stall timeout.
    Headers,
    /// `timeout` plus the request body's size at [`MIN_UPLOAD_RATE`].
    Upload,
}

/// A request that can be sent again (the body is shared bytes).
struct Req {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Bytes>,
    limit: Limit,
}

impl Req {
    fn new(method: Method, url: Url) -> Req {
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            limit: Limit::Total,
        }
    }

    fn header(mut self, name: HeaderName, value: &str) -> Req {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    fn body(mut self, body: Bytes) -> Req {
        self.body = Some(body);
        self
    }

    /// An empty body with `Content-Length: 0` (POST/PUT without content).
    fn empty(self) -> Req {
        self.header(CONTENT_LENGTH, "0").body(Bytes::new())
    }

    fn limit(mut self, limit: Limit) -> Req {
        self.limit = limit;
        self
    }

    fn shown(&self) -> String {
        safe_url(&self.url)
    }
}

/// An error's message with its causes, on one line (`a: b: c`).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Reads a whole body of at most `limit` bytes.
pub(crate) async fn read_capped(
    mut resp: Response,
    limit: usize,
    method: &str,
    url: &str,
) -> Result<Vec<u8>, Error> {
    let too_large = || Error::TooLarge {
        url: url.to_string(),
        limit: limit as u64,
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|source| Error::Transport {
        method: method.to_string(),
        url: url.to_string(),
        source: source.without_url(),
    })? {
        if out.len() + c.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Reads up to `limit` bytes of a body, ignoring errors (for error messages).
pub(crate) async fn read_prefix(mut resp: Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(limit - out.len())]),
            _ => break,
        }
    }
    out
}

/// The registry's error code and message from an error body:
/// `{"errors":[{"code","message"}]}`, or a `details`/`error`/`message`
/// string, or the first line of a text body.
pub(crate) fn parse_error_body(body: &[u8]) -> (Option<String>, String) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(errors) = v.get("errors").and_then(|e| e.as_array()) {
            let mut code = None;
            let mut messages = Vec::new();
            for (i, e) in errors.iter().enumerate() {
                let c = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                let m = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
                if i == 0 {
                    if !c.is_empty() {
                        code = Some(c.to_string());
                    }
                    if !m.is_empty() {
                        messages.push(m.to_string());
                    }
                } else if !c.is_empty() || !m.is_empty() {
                    messages.push(format!("{c}: {m}").trim_matches([' ', ':']).to_string());
                }
            }
            return (code, messages.join("; "));
        }
        for key in ["details", "error_description", "error", "message"] {
            if let Some(s) = v
                .get(key)
                .and_then(|s| s.as_str())
                .filter(|s| !s.is_empty())
            {
                return (None, s.to_string());
            }
        }
        return (None, String::new());
    }
    let text = String::from_utf8_lossy(body);
    let first = text.trim().lines().next().unwrap_or("").trim();
    if first.starts_with('<') {
        return (None, String::new());
    }
    (None, first.chars().take(200).collect())
}

/// `Retry-After` of a response, if any.
pub(crate) fn retry_after_of(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()))
}

fn header_str<'r>(resp: &'r Response, name: &str) -> Option<&'r str> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `Content-Length` as sent (also for HEAD, whose body is empty).
fn content_length(resp: &Response) -> Option<u64> {
    header_str(resp, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok())
}

/// The `Location` of a response, resolved against the request URL.
fn location_of(req: &Req, resp: &Response) -> Result<Url, Error> {
    let invalid = |reason: String| Error::InvalidResponse {
        method: req.method.to_string(),
        url: req.shown(),
        reason,
    };
    let value = header_str(resp, LOCATION.as_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            invalid(format!(
                "the {} answer has no Location header",
                resp.status().as_u16()
            ))
        })?;
    req.url
        .join(value)
        .map_err(|e| invalid(format!("the Location header is not a URL ({e})")))
}

/// `<location>` with `digest=<d>` appended to its query (never rebuilt).
pub(crate) fn with_digest(location: &Url, digest: &Digest) -> Url {
    let mut u = location.clone();
    let q = match u.query() {
        Some(q) if !q.is_empty() => format!("{q}&digest={digest}"),
        _ => format!("digest={digest}"),
    };
    u.set_query(Some(&q));
    u
}

/// The `rel="next"` target of a `Link` header, resolved against `base`.
pub(crate) fn next_link(value: &str, base: &Url) -> Option<Url> {
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let target = &after[..close];
        let params_end = after[close..].find('<').map_or(after.len(), |p| close + p);
        let params = &after[close + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.strip_prefix("rel=").is_some_and(|r| {
                r.trim_matches('"')
                    .split_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next {
            return base.join(target).ok();
        }
        rest = &after[close..];
    }
    None
}

/// The media type of a fetched manifest: the Content-Type unless missing or
/// generic, else the document's `mediaType`, else guessed from its shape.
pub(crate) fn manifest_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    let ct = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty());
    let generic = |c: &str| {
        matches!(
            c,
            "application/json" | "text/plain" | "application/octet-stream" | "binary/octet-stream"
        )
    };
    if let Some(c) = &ct {
        if !generic(c) {
            return c.clone();
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(mt) = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .filter(|s| !s.is_empty())
        {
            return mt.to_string();
        }
        if v.get("manifests").is_some() {
            return OCI_INDEX.to_string();
        }
        if v.get("config").is_some() || v.get("layers").is_some() {
            return OCI_MANIFEST.to_string();
        }
    }
    ct.unwrap_or_else(|| OCTET_STREAM.to_string())
}

/// Parses the upload-status `Range` header (`0-<last byte>`) into the number
/// of bytes the registry holds. `0-0` is ambiguous (distribution sends it for
/// an empty session too); it counts as `0` while nothing was acknowledged.
fn stored_bytes(range: &str, acknowledged: u64) -> Option<u64> {
    let r = range.trim();
    let r = r.strip_prefix("bytes=").unwrap_or(r);
    let (start, end) = r.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    if start != 0 {
        return None;
    }
    if end == 0 && acknowledged == 0 {
        return Some(0);
    }
    Some(end + 1)
}

/// `dest` + `.part-<random>`, in the same directory.
pub(crate) fn part_path(dest: &Path) -> Result<PathBuf, Error> {
    let name = dest.file_name().ok_or_else(|| {
        Error::io(
            "download to",
            dest,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let mut part = name.to_os_string();
    part.push(format!(".part-{:016x}", rand::random::<u64>()));
    Ok(dest.with_file_name(part))
}

/// Removes a temporary file when dropped, unless kept.
pub(crate) struct PartFile {
    pub(crate) path: PathBuf,
    pub(crate) keep: bool,
}

impl PartFile {
    /// Flushes and syncs `out` (this part file), renames it to `dest` and
    /// syncs the directory, so that `dest` holds every byte or nothing.
    pub(crate) async fn persist(
        mut self,
        mut out: BufWriter<tokio::fs::File>,
        dest: &Path,
    ) -> Result<(), Error> {
        let part = self.path.clone();
        out.flush()
            .await
            .map_err(|e| Error::io("write", &part, e))?;
        let file = out.into_inner();
        file.sync_all()
            .await
            .map_err(|e| Error::io("sync", &part, e))?;
        drop(file);
        tokio::fs::rename(&part, dest)
            .await
            .map_err(|e| Error::io(format!("rename {} to", part.display()), dest, e))?;
        self.keep = true;
        if let Some(dir) = dest.parent() {
            // Make the rename durable; not every file system allows this.
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Redirects are followed (registries send blobs to storage, file servers
/// move things) up to 10 hops, but never from HTTPS down to plain HTTP.
/// reqwest drops `Authorization` whenever a hop changes host or port; with
/// downgrades refused, a credential never leaves TLS through a redirect.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            let to = crate::endpoint::safe_url(attempt.url());
            attempt.error(format!(
                "refusing a redirect from HTTPS down to plain HTTP ({to})"
            ))
        } else if attempt.previous().len() > 10 {
            attempt.error("too many redirects (more than 10)")
        } else {
            attempt.follow()
        }
    })
}

/// The HTTP client for one host's settings.
fn build_http(
    cfg: &HostConfig,
    config: &ClientConfig,
    host: &str,
) -> Result<reqwest::Client, Error> {
    let mut b = reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .connect_timeout(config.timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .redirect(redirect_policy());
    if let Some(ca) = &cfg.ca_file {
        let tls = |reason: String| Error::Tls {
            path: ca.clone(),
            what: "the CA bundle",
            reason,
        };
        let pem = std::fs::read(ca).map_err(|e| tls(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| tls(chain(&e)))?;
        if certs.is_empty() {
            return Err(tls("no PEM certificate found".to_string()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let Some((cert, key)) = &cfg.client_cert {
        let read = |p: &PathBuf, what| {
            std::fs::read(p).map_err(|e| Error::Tls {
                path: p.clone(),
                what,
                reason: e.to_string(),
            })
        };
        let mut pem = read(cert, "the client certificate")?;
        pem.push(b'\n');
        pem.extend(read(key, "the client key")?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| Error::Tls {
            path: cert.clone(),
            what: "the client certificate and key",
            reason: format!("{} (key {})", chain(&e), key.display()),
        })?;
        b = b.identity(id);
    }
    if cfg.insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|source| Error::ClientBuild {
        host: host.to_string(),
        source,
    })
}

impl Client {
    /// A client for `config`. Reads the CA bundles and client certificates
    /// now, so a bad file is reported before any request.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let default_http = build_http(&config.default_host, &config, "*")?;
        Endpoint::resolve("registry.invalid", &config.default_host)?;
        let mut host_http = HashMap::new();
        for (host, hc) in &config.hosts {
            Endpoint::resolve(host, hc)?;
            host_http.insert(host.clone(), build_http(hc, &config, host)?);
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
            }),
        })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn host_config(&self, host: &str) -> &HostConfig {
        self.inner
            .config
            .hosts
            .get(host)
            .unwrap_or(&self.inner.config.default_host)
    }

    async fn target<'a>(&'a self, host: &'a str) -> Result<Target<'a>, Error> {
        let mut ep = Endpoint::resolve(host, self.host_config(host))?;
        let http = self
            .inner
            .host_http
            .get(host)
            .unwrap_or(&self.inner.default_http);
        if ep.may_fall_back && self.speaks_plain_http(host, &ep, http).await {
            ep = ep.plain();
        }
        Ok(Target {
            host,
            ep,
            http,
            scopes: Vec::new(),
        })
    }

    /// Whether a loopback host given without a scheme speaks plain HTTP:
    /// HTTPS is tried first (`GET /v2/` without credentials; any HTTP answer
    /// means TLS works), and when the TLS handshake fails or gets no answer
    /// within [`LOOPBACK_TLS_PROBE`], the host is spoken to in plain HTTP, as
    /// docker does for `localhost`. The answer is kept for the client's life,
    /// except when nothing listens (connection refused): then plain HTTP is
    /// used for this request and the next one asks again.
    async fn speaks_plain_http(&self, host: &str, ep: &Endpoint, http: &reqwest::Client) -> bool {
        if let Some(plain) = self.plain_loopback_of(host) {
            return plain;
        }
        let probe = tokio::time::timeout(LOOPBACK_TLS_PROBE, http.get(ep.v2()).send()).await;
        let plain = match probe {
            Ok(Ok(_)) => false,
            Ok(Err(e)) if refused(&e) => return true,
            Ok(Err(_)) | Err(_) => true,
        };
        self.inner
            .plain_loopback
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string(), plain);
        plain
    }

    fn plain_loopback_of(&self, host: &str) -> Option<bool> {
        self.inner
            .plain_loopback
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .copied()
    }

    /// Whether requests to `host` go over plain HTTP: set by
    /// [`HostConfig::plain_http`], or found out for a loopback host given
    /// without a scheme (after a first request). `None` when not known yet.
    pub fn uses_plain_http(&self, host: &str) -> Option<bool> {
        let cfg = self.host_config(host);
        if cfg.plain_http {
            return Some(true);
        }
        match Endpoint::resolve(host, cfg) {
            Ok(ep) if ep.may_fall_back => self.plain_loopback_of(host),
            Ok(ep) => Some(ep.base.scheme() == "http"),
            Err(_) => None,
        }
    }

    /// The target for an operation on `repo`: pull, or pull+push, plus pull on
    /// the source of a mount.
    async fn repo_target<'a>(
        &'a self,
        repo: &'a Repo,
        push: bool,
        from: Option<&Repo>,
    ) -> Result<Target<'a>, Error> {
        let mut t = self.target(&repo.host).await?;
        let actions = if push { "pull,push" } else { "pull" };
        t.scopes
            .push(format!("repository:{}:{actions}", t.ep.name(&repo.path)));
        if let Some(f) = from {
            t.scopes
                .push(format!("repository:{}:pull", t.ep.name(&f.path)));
        }
        t.scopes.sort();
        t.scopes.dedup();
        Ok(t)
    }

    // ---- requests -------------------------------------------------------

    /// Credentials for the target: explicit ones, else the docker config's.
    async fn creds(&self, t: &Target<'_>) -> Result<Option<Creds>, Error> {
        if let Some(c) = &self.host_config(t.host).credentials {
            return Ok(Some(Creds::from(c)));
        }
        let Some(path) = self.inner.config.docker_config.clone() else {
            return Ok(None);
        };
        let host = t.ep.cred_host.clone();
        self.inner
            .auth
            .creds(&host, || async {
                docker_config::lookup(&path, &host).await
            })
            .await
    }

    async fn fetch_token(
        &self,
        t: &Target<'_>,
        realm: &str,
        service: Option<&str>,
        extra_scope: Option<&str>,
    ) -> Result<auth::Token, Error> {
        let mut scopes = t.scopes.clone();
        for s in extra_scope.unwrap_or("").split_whitespace() {
            if !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_string());
            }
        }
        let creds = self.creds(t).await?;
        auth::fetch_token(
            t.http,
            realm,
            service,
            &scopes,
            creds.as_ref(),
            self.inner.config.timeout,
        )
        .await
    }

    /// The `Authorization` header for the target, from what the registry
    /// asked for before.
    async fn auth_header(&self, t: &Target<'_>) -> Result<Option<HeaderValue>, Error> {
        match self.inner.auth.challenge(&t.ep.authority) {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.creds(t).await?.and_then(|c| c.basic_header())),
            Some(Challenge::Bearer { realm, service, .. }) => {
                if let Some(tok) = self.inner.auth.token(&t.ep.authority, &t.scopes) {
                    return Ok(tok.header());
                }
                let tok = self
                    .fetch_token(t, &realm, service.as_deref(), None)
                    .await?;
                let h = tok.header();
                self.inner.auth.set_token(&t.ep.authority, &t.scopes, tok);
                Ok(h)
            }
        }
    }

    /// Answers a 401: learns the challenge, gets a token. `Ok(true)` if the
    /// request should be sent again.
    async fn on_challenge(&self, t: &Target<'_>, resp: &Response) -> Result<bool, Error> {
        let values = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let Some(challenge) = auth::pick_challenge(values) else {
            return Ok(false);
        };
        self.inner
            .auth
            .set_challenge(&t.ep.authority, challenge.clone());
        match challenge {
            Challenge::Basic => Ok(matches!(self.creds(t).await?, Some(Creds::Basic { .. }))),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                self.inner.auth.drop_token(&t.ep.authority, &t.scopes);
                let tok = self
                    .fetch_token(t, &realm, service.as_deref(), scope.as_deref())
                    .await?;
                self.inner.auth.set_token(&t.ep.authority, &t.scopes, tok);
                Ok(true)
            }
        }
    }

    /// Sends once (plus once more after answering an auth challenge). Any
    /// status comes back as `Ok`; retries are the caller's ([`Client::retry_op`]).
    async fn execute(&self, t: &Target<'_>, req: &Req) -> Result<Response, Error> {
        let same_origin = authority_of(&req.url) == t.ep.authority;
        let mut challenged = false;
        loop {
            let auth = if same_origin {
                self.auth_header(t).await?
            } else {
                None
            };
            let resp = self.send_once(t, req, auth).await?;
            tracing::debug!(
                method = %req.method,
                url = %req.shown(),
                status = resp.status().as_u16(),
                "registry response"
            );
            if resp.status() == StatusCode::UNAUTHORIZED && same_origin && !challenged {
                challenged = true;
                if self.on_challenge(t, &resp).await? {
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    async fn send_once(
        &self,
        t: &Target<'_>,
        req: &Req,
        auth: Option<HeaderValue>,
    ) -> Result<Response, Error> {
        let timeout = self.inner.config.timeout;
        let mut rb = t
            .http
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(a) = auth {
            rb = rb.header(AUTHORIZATION, a);
        }
        if let Some(b) = &req.body {
            rb = rb.body(b.clone());
        }
        let transport = |source: reqwest::Error| Error::Transport {
            method: req.method.to_string(),
            url: req.shown(),
            source: source.without_url(),
        };
        // The semaphore is never closed; without a permit the request still goes.
        let _permit = self.inner.jobs.acquire().await.ok();
        let gate = self.gate(t.host);
        let _slot = gate.enter().await;
        let sent = match req.limit {
            Limit::Total => rb.timeout(timeout).send().await.map_err(transport),
            Limit::Upload => {
                let len = req.body.as_ref().map_or(0, |b| b.len() as u64);
                let t = timeout + Duration::from_secs(len / MIN_UPLOAD_RATE);
                rb.timeout(t).send().await.map_err(transport)
            }
            Limit::Headers => match tokio::time::timeout(timeout, rb.send()).await {
                Ok(r) => r.map_err(transport),
                Err(_) => Err(Error::Timeout {
                    method: req.method.to_string(),
                    url: req.shown(),
                    after: timeout,
                }),
            },
        };
        if let Ok(resp) = &sent {
            if resp.status() == StatusCode::TOO_MANY_REQUESTS {
                let limit = gate.throttled(retry_after_of(resp));
                tracing::warn!(
                    host = t.host,
                    "{} is throttling (429): concurrency for it is now {limit}",
                    t.host
                );
            } else if resp.status().is_success() {
                if let Some(limit) = gate.succeeded() {
                    tracing::debug!(host = t.host, "concurrency for {} back to {limit}", t.host);
                }
            }
        }
        sent
    }

    /// The adaptive slots of `host`.
    fn gate(&self, host: &str) -> Arc<crate::gate::HostGate> {
        let mut gates = match self.inner.gates.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        gates
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(crate::gate::HostGate::new(self.inner.config.jobs)))
            .clone()
    }

    /// The error for an answer the operation does not accept.
    async fn http_error(&self, req: &Req, resp: Response) -> Error {
        let status = resp.status().as_u16();
        let retry_after = retry_after_of(&resp);
        let body = if req.method == Method::HEAD {
            Vec::new()
        } else {
            read_prefix(resp, ERROR_BODY_LIMIT).await
        };
        let (code, message) = parse_error_body(&body);
        Error::Http {
            method: req.method.to_string(),
            url: req.shown(),
            status,
            code,
            message,
            retry_after,
        }
    }

    /// Logs a retry and waits: `Retry-After` (429/503) or backoff.
    pub(crate) async fn pause(&self, e: &Error, attempt: u32, max: u32) {
        let cfg = &self.inner.config;
        let retry_after = match e {
            Error::Http {
                status: 429 | 503,
                retry_after,
                ..
            } => *retry_after,
            _ => None,
        };
        let d = retry::delay(cfg.initial_backoff, cfg.max_backoff, attempt, retry_after);
        let wait = if d < Duration::from_secs(1) {
            format!("{}ms", d.as_millis())
        } else {
            format!("{:.1}s", d.as_secs_f32())
        };
        tracing::warn!(
            status = e.status(),
            attempt = attempt + 1,
            max_attempts = max,
            "{}; retrying in {wait} (attempt {}/{})",
            chain(e),
            attempt + 1,
            max
        );
        tokio::time::sleep(d).await;
    }

    pub(crate) fn max_attempts(&self) -> u32 {
        self.inner.config.max_attempts.max(1)
    }

    /// Runs `op` until it succeeds, fails for good, or attempts run out.
    async fn retry_op<T, F, Fut>(&self, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let max = self.max_attempts();
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < max => {
                    self.pause(&e, attempt, max).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    // ---- API ------------------------------------------------------------

    /// Checks that `host` speaks the registry API (`GET /v2/`), authenticating
    /// if it asks to.
    pub async fn ping(&self, host: &str) -> Result<(), Error> {
        let t = self.target(host).await?;
        let req = Req::new(Method::GET, t.ep.v2());
        let (t, req) = (&t, &req);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(self.http_error(req, resp).await)
            }
        })
        .await
    }

    /// Fetches a manifest or index by tag or digest, sending the full Accept
    /// list. When `reference` is a digest the bytes are checked against it.
    /// Manifests over 16 MiB are refused.
    pub async fn get_manifest(&self, repo: &Repo, reference: &str) -> Result<Manifest, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let req = Req::new(
            Method::GET,
            t.ep.repo_url(&repo.path, &format!("manifests/{reference}")),
        )
        .header(ACCEPT, &MANIFEST_ACCEPT.join(", "));
        let (t, req) = (&t, &req);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            if !resp.status().is_success() {
                return Err(self.http_error(req, resp).await);
            }
            let content_type = header_str(&resp, CONTENT_TYPE.as_str()).map(str::to_string);
            let served_digest = header_str(&resp, DOCKER_CONTENT_DIGEST).map(str::to_string);
            let body = read_capped(resp, MANIFEST_LIMIT, "GET", &req.shown()).await?;
            let digest = Digest::of(&body);
            if let Ok(expected) = reference.parse::<Digest>() {
                if expected != digest {
                    return Err(Error::DigestMismatch {
                        url: req.shown(),
                        expected,
                        actual: digest,
                    });
                }
            } else if let Some(served) = served_digest.and_then(|d| d.parse::<Digest>().ok()) {
                if served != digest {
                    tracing::warn!(
                        "GET {}: Docker-Content-Digest says {served} but the body hashes to {digest}; using {digest}",
                        req.shown()
                    );
                }
            }
            Ok(Manifest {
                media_type: manifest_media_type(content_type.as_deref(), &body),
                bytes: Bytes::from(body),
                digest,
            })
        })
        .await
    }

    /// Checks whether a manifest exists (HEAD): `Ok(None)` on 404, else its
    /// digest, media type and size. Falls back to a GET when the registry
    /// leaves out a header.
    pub async fn head_manifest(
        &self,
        repo: &Repo,
        reference: &str,
    ) -> Result<Option<(Digest, String, u64)>, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let req = Req::new(
            Method::HEAD,
            t.ep.repo_url(&repo.path, &format!("manifests/{reference}")),
        )
        .header(ACCEPT, &MANIFEST_ACCEPT.join(", "));
        let (t, req) = (&t, &req);
        let head = self
            .retry_op(|| async move {
                let resp = self.execute(t, req).await?;
                if resp.status() == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                if !resp.status().is_success() {
                    return Err(self.http_error(req, resp).await);
                }
                let digest = header_str(&resp, DOCKER_CONTENT_DIGEST)
                    .and_then(|d| d.parse::<Digest>().ok())
                    .or_else(|| reference.parse::<Digest>().ok());
                let media_type = header_str(&resp, CONTENT_TYPE.as_str())
                    .map(|c| {
                        c.split(';')
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_ascii_lowercase()
                    })
                    .filter(|c| {
                        !c.is_empty()
                            && !matches!(
                                c.as_str(),
                                "application/json" | "text/plain" | "application/octet-stream"
                            )
                    });
                Ok(Some((digest, media_type, content_length(&resp))))
            })
            .await?;
        match head {
            None => Ok(None),
            Some((Some(d), Some(mt), Some(len))) => Ok(Some((d, mt, len))),
            Some(_) => match self.get_manifest(repo, reference).await {
                Ok(m) => {
                    let len = m.bytes.len() as u64;
                    Ok(Some((m.digest, m.media_type, len)))
                }
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Stores a manifest under a tag or digest: `Content-Type: media_type`,
    /// the exact bytes. Checks the registry's `Docker-Content-Digest` (when
    /// sent) against the bytes' digest and returns that digest.
    pub async fn put_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, Error> {
        let t = self.repo_target(repo, true, None).await?;
        let url = t.ep.repo_url(&repo.path, &format!("manifests/{reference}"));
        let digest = Digest::of(&bytes);
        if let Ok(expected) = reference.parse::<Digest>() {
            if expected != digest {
                return Err(Error::DigestMismatch {
                    url: safe_url(&url),
                    expected,
                    actual: digest,
                });
            }
        }
        let req = Req::new(Method::PUT, url)
            .header(CONTENT_TYPE, media_type)
            .body(bytes)
            .limit(Limit::Upload);
        let (t, req, digest_ref) = (&t, &req, &digest);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            if resp.status() != StatusCode::CREATED {
                return Err(self.http_error(req, resp).await);
            }
            check_served_digest(req, &resp, digest_ref)?;
            Ok(digest_ref.clone())
        })
        .await
    }

    /// Deletes a manifest by digest (`DELETE /v2/<name>/manifests/<digest>`),
    /// which removes every tag pointing at it; blobs are freed by the
    /// registry's garbage collection. `Ok(false)` when it was already gone
    /// (404), so a repeated delete is harmless. A registry that does not
    /// allow deletes answers 405 (distribution without
    /// `storage.delete.enabled: true`): an [`Error::Http`] with that status.
    pub async fn delete_manifest(&self, repo: &Repo, digest: &Digest) -> Result<bool, Error> {
        let mut t = self.target(&repo.host).await?;
        t.scopes.push(format!(
            "repository:{}:pull,push,delete",
            t.ep.name(&repo.path)
        ));
        let req = Req::new(
            Method::DELETE,
            t.ep.repo_url(&repo.path, &format!("manifests/{digest}")),
        );
        let (t, req) = (&t, &req);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            match resp.status() {
                StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(self.http_error(req, resp).await),
            }
        })
        .await
    }

    /// Checks whether a blob exists (HEAD): its size, or `Ok(None)` on 404.
    pub async fn head_blob(&self, repo: &Repo, digest: &Digest) -> Result<Option<u64>, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let req = Req::new(
            Method::HEAD,
            t.ep.repo_url(&repo.path, &format!("blobs/{digest}")),
        );
        let (t, req) = (&t, &req);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(self.http_error(req, resp).await);
            }
            content_length(&resp)
                .map(Some)
                .ok_or_else(|| Error::InvalidResponse {
                    method: "HEAD".into(),
                    url: req.shown(),
                    reason: "the answer has no Content-Length".into(),
                })
        })
        .await
    }

    /// Starts receiving a blob. The stream checks the size (when given; too
    /// many bytes fail at once) and the digest, reporting a mismatch as its
    /// last item. Only the initial request is retried.
    pub async fn get_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<BlobStream, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let req = Req::new(
            Method::GET,
            t.ep.repo_url(&repo.path, &format!("blobs/{digest}")),
        )
        .limit(Limit::Headers);
        let (tr, rr) = (&t, &req);
        let resp = self
            .retry_op(|| async move {
                let resp = self.execute(tr, rr).await?;
                if resp.status() != StatusCode::OK {
                    return Err(self.http_error(rr, resp).await);
                }
                if let (Some(want), Some(len)) = (expected_size, resp.content_length()) {
                    if want != len {
                        return Err(Error::SizeMismatch {
                            url: rr.shown(),
                            expected: want,
                            actual: len,
                            at_least: false,
                        });
                    }
                }
                Ok(resp)
            })
            .await?;
        let shown = req.shown();
        let body_url = shown.clone();
        let body = resp.bytes_stream().map(move |r| {
            r.map_err(|source| Error::Transport {
                method: "GET".into(),
                url: body_url.clone(),
                source: source.without_url(),
            })
        });
        Ok(Box::pin(VerifyingStream::new(
            Box::pin(body),
            shown,
            digest.clone(),
            expected_size,
            Some(self.inner.config.timeout),
        )))
    }

    /// Downloads a blob to `dest` atomically: writes `dest.part-<random>` in
    /// the same directory while hashing, checks size and digest, syncs, then
    /// renames. A transfer cut short is resumed with a `Range` request when
    /// the registry answers 206 (else started over). Returns the bytes
    /// written. Nothing is left at `dest` (or beside it) on failure.
    pub async fn download_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: Option<u64>,
        dest: &Path,
        progress: Option<Progress<'_>>,
    ) -> Result<u64, Error> {
        let part = part_path(dest)?;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .await
            .map_err(|e| Error::io("create", &part, e))?;
        let guard = PartFile {
            path: part.clone(),
            keep: false,
        };
        let state = self
            .download(
                repo,
                digest,
                size,
                Download::new(Sink::File {
                    out: BufWriter::with_capacity(DOWNLOAD_BUFFER, file),
                    path: part.clone(),
                }),
                progress,
            )
            .await?;
        let written = state.written;
        let Sink::File { out, .. } = state.sink else {
            return Err(Error::io(
                "write",
                &part,
                std::io::Error::other("download sink changed"),
            ));
        };
        guard.persist(out, dest).await?;
        Ok(written)
    }

    /// Streams a blob into `tx`, in order, in pieces of up to 256 KiB, hashing
    /// it on the way, with the same retries as [`Client::download_blob`]: a
    /// transfer cut short resumes with a `Range` request (a registry that
    /// ignores it sends the whole blob again and the bytes already sent are
    /// dropped). Once the size and digest check out, an empty piece marks
    /// the verified end; a channel closed without it means the download
    /// failed (the error is returned here), and whatever was forwarded must
    /// be thrown away. Waits while the channel is full; stops with
    /// [`Error::Abandoned`] if the receiver goes away.
    pub async fn stream_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        tx: tokio::sync::mpsc::Sender<Bytes>,
        progress: Option<Progress<'_>>,
    ) -> Result<u64, Error> {
        let state = self
            .download(
                repo,
                digest,
                Some(size),
                Download::new(Sink::Stream {
                    tx,
                    buf: bytes::BytesMut::with_capacity(STREAM_PIECE),
                }),
                progress,
            )
            .await?;
        let written = state.written;
        if let Sink::Stream { tx, mut buf } = state.sink {
            let gone = |_| Error::Abandoned {
                url: state.url.clone(),
            };
            if !buf.is_empty() {
                tx.send(buf.split().freeze()).await.map_err(gone)?;
            }
            tx.send(Bytes::new()).await.map_err(gone)?;
        }
        Ok(written)
    }

    /// A download with retries and verification, into `state`'s sink.
    async fn download(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: Option<u64>,
        mut state: Download,
        progress: Option<Progress<'_>>,
    ) -> Result<Download, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let url = t.ep.repo_url(&repo.path, &format!("blobs/{digest}"));
        state.url = safe_url(&url);
        let max = self.max_attempts();
        let mut attempt = 1;
        loop {
            match self
                .download_attempt(&t, &url, size, &mut state, progress)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    // The registry ignored or botched the range: start over now.
                    if attempt >= max {
                        return Err(Error::InvalidResponse {
                            method: "GET".into(),
                            url: safe_url(&url),
                            reason: "the registry answered a resumed download inconsistently"
                                .into(),
                        });
                    }
                    attempt += 1;
                    continue;
                }
                Err(e) if e.is_retryable() && attempt < max => {
                    self.pause(&e, attempt, max).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
            if let Some(s) = size {
                if state.written != s {
                    return Err(Error::SizeMismatch {
                        url: safe_url(&url),
                        expected: s,
                        actual: state.written,
                        at_least: false,
                    });
                }
            }
            let actual = std::mem::take(&mut state.hasher).finish();
            if actual != *digest {
                if state.resumed && state.can_reset() && attempt < max {
                    tracing::warn!(
                        "GET {}: the resumed download hashes to {actual}, not {digest}; downloading again from the start",
                        safe_url(&url)
                    );
                    state.restart().await?;
                    attempt += 1;
                    continue;
                }
                return Err(Error::DigestMismatch {
                    url: safe_url(&url),
                    expected: digest.clone(),
                    actual,
                });
            }
            return Ok(state);
        }
    }

    /// One GET of a download, resuming at `state.written`. `Ok(true)`: the
    /// body was read to its end; `Ok(false)`: state reset, try again at once.
    async fn download_attempt(
        &self,
        t: &Target<'_>,
        url: &Url,
        size: Option<u64>,
        state: &mut Download,
        progress: Option<Progress<'_>>,
    ) -> Result<bool, Error> {
        let mut req = Req::new(Method::GET, url.clone()).limit(Limit::Headers);
        let ranged = state.written > 0 && !state.replay;
        if ranged {
            req = req.header(RANGE, &format!("bytes={}-", state.written));
        }
        state.skip = 0;
        let mut resp = self.execute(t, &req).await?;
        match resp.status() {
            StatusCode::OK => {
                if state.written > 0 {
                    tracing::debug!("GET {}: the whole blob again; starting over", req.shown());
                    state.replay = false;
                    if state.can_reset() {
                        state.restart().await?;
                    } else {
                        // Forwarded bytes stay; the hash goes on from them.
                        state.skip = state.written;
                        state.resumed = true;
                    }
                }
                if let (Some(want), Some(len)) = (size, resp.content_length()) {
                    if want != len {
                        return Err(Error::SizeMismatch {
                            url: req.shown(),
                            expected: want,
                            actual: len,
                            at_least: false,
                        });
                    }
                }
            }
            StatusCode::PARTIAL_CONTENT if ranged => {
                let start = header_str(&resp, CONTENT_RANGE.as_str())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if start != Some(state.written) {
                    state.restart().await?;
                    return Ok(false);
                }
                state.resumed = true;
                tracing::debug!("GET {}: resuming at byte {}", req.shown(), state.written);
            }
            StatusCode::RANGE_NOT_SATISFIABLE if ranged => {
                state.restart().await?;
                return Ok(false);
            }
            _ => return Err(self.http_error(&req, resp).await),
        }
        let stall = self.inner.config.timeout;
        loop {
            let chunk = match tokio::time::timeout(stall, resp.chunk()).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        method: "GET".into(),
                        url: req.shown(),
                        after: stall,
                    })
                }
                Ok(Err(source)) => {
                    return Err(Error::Transport {
                        method: "GET".into(),
                        url: req.shown(),
                        source: source.without_url(),
                    })
                }
                Ok(Ok(None)) => return Ok(true),
                Ok(Ok(Some(c))) => c,
            };
            let len = (chunk.len() as u64).saturating_sub(state.skip);
            if let Some(s) = size {
                if state.written + len > s {
                    return Err(Error::SizeMismatch {
                        url: req.shown(),
                        expected: s,
                        actual: state.written + len,
                        at_least: true,
                    });
                }
            }
            state.accept(chunk).await?;
            // After a restart from zero, report only bytes beyond those already reported.
            if state.written > state.reported {
                if let Some(p) = progress {
                    p(state.written - state.reported);
                }
                state.reported = state.written;
            }
        }
    }

    /// Mounts a blob from another repository of the same registry:
    /// `Ok(true)` when the registry mounted it (201), `Ok(false)` when it
    /// opened an upload session instead (202, cancelled here) or when `from`
    /// is on another host (no request is sent).
    pub async fn mount_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        from: &Repo,
    ) -> Result<bool, Error> {
        if from.host != repo.host {
            tracing::debug!("not mounting {digest} from {from} into {repo}: different hosts");
            return Ok(false);
        }
        let t = self.repo_target(repo, true, Some(from)).await?;
        let mut url = t.ep.repo_url(&repo.path, "blobs/uploads/");
        url.set_query(Some(&format!(
            "mount={digest}&from={}",
            t.ep.name(&from.path)
        )));
        let req = Req::new(Method::POST, url).empty();
        let (t, req) = (&t, &req);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            match resp.status() {
                StatusCode::CREATED => Ok(true),
                StatusCode::ACCEPTED => {
                    if let Ok(loc) = location_of(req, &resp) {
                        self.cancel(t, &loc).await;
                    }
                    Ok(false)
                }
                _ => Err(self.http_error(req, resp).await),
            }
        })
        .await
    }

    /// Opens an upload session: `POST …/blobs/uploads/` → 202 + `Location`.
    async fn start_upload(&self, t: &Target<'_>, repo: &Repo) -> Result<Url, Error> {
        let req = Req::new(Method::POST, t.ep.repo_url(&repo.path, "blobs/uploads/")).empty();
        let resp = self.execute(t, &req).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.http_error(&req, resp).await);
        }
        location_of(&req, &resp)
    }

    /// Cancels an upload session; failures are only logged.
    async fn cancel(&self, t: &Target<'_>, location: &Url) {
        let req = Req::new(Method::DELETE, location.clone());
        match self.execute(t, &req).await {
            Ok(r) => tracing::debug!(
                "cancelled upload session {}: {}",
                req.shown(),
                r.status().as_u16()
            ),
            Err(e) => tracing::debug!(
                "could not cancel upload session {}: {}",
                req.shown(),
                chain(&e)
            ),
        }
    }

    /// Uploads a blob held in memory: POST, then PUT `<location>&digest=` with
    /// the bytes. The whole sequence is retried on retryable failures.
    pub async fn upload_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        data: Bytes,
    ) -> Result<(), Error> {
        let actual = Digest::of(&data);
        if actual != *digest {
            return Err(Error::Upload {
                repository: repo.to_string(),
                digest: digest.clone(),
                reason: format!("the data to send hashes to {actual}"),
            });
        }
        let t = self.repo_target(repo, true, None).await?;
        let t = &t;
        let data = &data;
        self.retry_op(|| async move {
            let location = self.start_upload(t, repo).await?;
            let req = Req::new(Method::PUT, with_digest(&location, digest))
                .header(CONTENT_TYPE, OCTET_STREAM)
                .body(data.clone())
                .limit(Limit::Upload);
            let resp = match self.execute(t, &req).await {
                Ok(r) => r,
                Err(e) => {
                    self.cancel(t, &location).await;
                    return Err(e);
                }
            };
            if resp.status() != StatusCode::CREATED {
                let e = self.http_error(&req, resp).await;
                self.cancel(t, &location).await;
                return Err(e);
            }
            check_served_digest(&req, &resp, digest)
        })
        .await
    }

    /// Uploads a blob in chunks as they arrive on `chunks`: one PATCH per
    /// chunk (empty chunks skipped), each retried until acknowledged, then
    /// `PUT <location>&digest=`. The chunks must add up to `size` bytes
    /// hashing to `digest`; otherwise, or if the channel closes early, the
    /// session is cancelled and an error returned.
    pub async fn upload_blob_chunked(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        mut chunks: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> Result<(), Error> {
        let t = self.repo_target(repo, true, None).await?;
        let tr = &t;
        let mut location = self.retry_op(|| self.start_upload(tr, repo)).await?;
        if let Err(e) = self
            .send_chunks(&t, repo, digest, size, &mut chunks, &mut location)
            .await
        {
            self.cancel(&t, &location).await;
            return Err(e);
        }
        let req = Req::new(Method::PUT, with_digest(&location, digest)).empty();
        let rr = &req;
        let put = self
            .retry_op(|| async move {
                let resp = self.execute(tr, rr).await?;
                if resp.status() != StatusCode::CREATED {
                    return Err(self.http_error(rr, resp).await);
                }
                check_served_digest(rr, &resp, digest)
            })
            .await;
        let Err(e) = put else {
            return Ok(());
        };
        // A retried PUT after a lost 201 finds the session gone: the blob may be there.
        if e.is_not_found()
            && matches!(self.head_blob(repo, digest).await, Ok(Some(n)) if n == size)
        {
            return Ok(());
        }
        self.cancel(&t, &location).await;
        Err(e)
    }

    async fn send_chunks(
        &self,
        t: &Target<'_>,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        chunks: &mut tokio::sync::mpsc::Receiver<Bytes>,
        location: &mut Url,
    ) -> Result<(), Error> {
        let upload_error = |reason: String| Error::Upload {
            repository: repo.to_string(),
            digest: digest.clone(),
            reason,
        };
        let mut hasher = Hasher::new();
        let mut offset = 0u64;
        while let Some(chunk) = chunks.recv().await {
            if chunk.is_empty() {
                continue;
            }
            let end = offset + chunk.len() as u64;
            if end > size {
                return Err(upload_error(format!(
                    "the chunks hold more than the announced {size} bytes ({end} or more)"
                )));
            }
            hasher.update(&chunk);
            self.patch_chunk(t, repo, digest, location, offset, chunk)
                .await?;
            offset = end;
        }
        if offset != size {
            return Err(upload_error(format!(
                "the chunk source ended after {offset} of {size} bytes"
            )));
        }
        let actual = hasher.finish();
        if actual != *digest {
            return Err(upload_error(format!("the chunks hash to {actual}")));
        }
        Ok(())
    }

    /// PATCHes one chunk starting at `offset`, retrying until the registry
    /// holds all of it; after a failure asks the session (`GET <location>`)
    /// how much arrived and sends only the rest.
    async fn patch_chunk(
        &self,
        t: &Target<'_>,
        repo: &Repo,
        digest: &Digest,
        location: &mut Url,
        offset: u64,
        chunk: Bytes,
    ) -> Result<(), Error> {
        let chunk_end = offset + chunk.len() as u64;
        let max = self.max_attempts();
        let mut attempt = 1;
        let mut start = offset;
        let mut pending = chunk.clone();
        loop {
            let last = start + pending.len() as u64 - 1;
            let req = Req::new(Method::PATCH, location.clone())
                .header(CONTENT_TYPE, OCTET_STREAM)
                .header(CONTENT_RANGE, &format!("{start}-{last}"))
                .body(pending.clone())
                .limit(Limit::Upload);
            let result = async {
                let resp = self.execute(t, &req).await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(self.http_error(&req, resp).await);
                }
                location_of(&req, &resp)
            }
            .await;
            let e = match result {
                Ok(next) => {
                    *location = next;
                    return Ok(());
                }
                Err(e) => e,
            };
            let out_of_order = e.status() == Some(416);
            if !(e.is_retryable() || out_of_order) || attempt >= max {
                return Err(e);
            }
            self.pause(&e, attempt, max).await;
            attempt += 1;
            match self.upload_status(t, location, offset).await {
                Ok((next_location, stored)) => {
                    if let Some(l) = next_location {
                        *location = l;
                    }
                    match stored {
                        Some(n) if n >= chunk_end => return Ok(()),
                        Some(n) if n >= offset => {
                            start = n;
                            pending = chunk.slice((n - offset) as usize..);
                        }
                        Some(n) => {
                            return Err(Error::InvalidResponse {
                                method: "GET".into(),
                                url: safe_url(location),
                                reason: format!(
                                    "the upload session holds {n} bytes although {offset} were acknowledged"
                                ),
                            })
                        }
                        None => {}
                    }
                }
                Err(se) if se.is_retryable() => {}
                Err(se) => {
                    // Distribution signs the offset into the Location: once an
                    // answer is lost, the older Location is refused for good.
                    return Err(Error::Upload {
                        repository: repo.to_string(),
                        digest: digest.clone(),
                        reason: format!(
                            "sending bytes {start}-{last} failed ({}) and the upload session cannot be resumed ({})",
                            chain(&e),
                            chain(&se)
                        ),
                    });
                }
            }
        }
    }

    /// `GET <location>`: the session's newest Location and how many bytes it
    /// holds (when it says).
    async fn upload_status(
        &self,
        t: &Target<'_>,
        location: &Url,
        acknowledged: u64,
    ) -> Result<(Option<Url>, Option<u64>), Error> {
        let req = Req::new(Method::GET, location.clone());
        let resp = self.execute(t, &req).await?;
        if !resp.status().is_success() {
            return Err(self.http_error(&req, resp).await);
        }
        let next = location_of(&req, &resp).ok();
        let stored = header_str(&resp, RANGE.as_str()).and_then(|r| stored_bytes(r, acknowledged));
        Ok((next, stored))
    }

    /// Lists a repository's tags, following `Link: <…>; rel="next"` pages.
    /// An unknown repository (404 `NAME_UNKNOWN`) has no tags.
    pub async fn list_tags(&self, repo: &Repo) -> Result<Vec<String>, Error> {
        let t = self.repo_target(repo, false, None).await?;
        let mut url = t.ep.repo_url(&repo.path, "tags/list");
        let mut tags = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..MAX_TAG_PAGES {
            let req = Req::new(Method::GET, url.clone());
            let (tr, rr) = (&t, &req);
            let page = self
                .retry_op(|| async move {
                    let resp = self.execute(tr, rr).await?;
                    if !resp.status().is_success() {
                        let e = self.http_error(rr, resp).await;
                        if e.is_not_found() && e.code() == Some("NAME_UNKNOWN") {
                            return Ok(None);
                        }
                        return Err(e);
                    }
                    let next = resp
                        .headers()
                        .get_all(LINK)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .find_map(|v| next_link(v, &rr.url));
                    let body = read_capped(resp, TAGS_LIMIT, "GET", &rr.shown()).await?;
                    let v: serde_json::Value =
                        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
                            method: "GET".into(),
                            url: rr.shown(),
                            reason: format!("the tag list is not valid JSON ({e})"),
                        })?;
                    let page: Vec<String> = v
                        .get("tags")
                        .and_then(|t| t.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|t| t.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok(Some((page, next)))
                })
                .await?;
            let Some((mut page, next)) = page else {
                return Ok(tags);
            };
            tags.append(&mut page);
            match next {
                Some(n) if seen.insert(n.clone()) => url = n,
                _ => return Ok(tags),
            }
        }
        Ok(tags)
    }

    /// Lists what refers to `digest` in `repo` through the OCI 1.1 referrers
    /// API (`GET /v2/<name>/referrers/<digest>`), following
    /// `Link: <…>; rel="next"` pages: the descriptors of the image index the
    /// registry answers (none when nothing refers to `digest`).
    ///
    /// `Ok(None)` means the registry has no referrers API: it answered the
    /// first page with 404, 400, 405 or 501 (CNCF distribution answers 404).
    /// A registry that supports the API never answers 404 (distribution-spec
    /// 1.1), so the caller then reads the `sha256-<hex>` fallback tag instead.
    pub async fn referrers(
        &self,
        repo: &Repo,
        digest: &Digest,
    ) -> Result<Option<Vec<Descriptor>>, Error> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            manifests: Vec<Descriptor>,
        }
        let t = self.repo_target(repo, false, None).await?;
        let mut url = t.ep.repo_url(&repo.path, &format!("referrers/{digest}"));
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        for page_no in 0..MAX_REFERRER_PAGES {
            let req = Req::new(Method::GET, url.clone()).header(ACCEPT, OCI_INDEX);
            let (tr, rr) = (&t, &req);
            let page = self
                .retry_op(|| async move {
                    let resp = self.execute(tr, rr).await?;
                    let status = resp.status().as_u16();
                    if !resp.status().is_success() {
                        if page_no == 0 && matches!(status, 400 | 404 | 405 | 501) {
                            return Ok(None);
                        }
                        return Err(self.http_error(rr, resp).await);
                    }
                    let next = resp
                        .headers()
                        .get_all(LINK)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .find_map(|v| next_link(v, &rr.url));
                    let body = read_capped(resp, MANIFEST_LIMIT, "GET", &rr.shown()).await?;
                    let page: Page =
                        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
                            method: "GET".into(),
                            url: rr.shown(),
                            reason: format!("the referrers answer is not an image index ({e})"),
                        })?;
                    Ok(Some((page.manifests, next)))
                })
                .await?;
            let Some((mut page, next)) = page else {
                return Ok(None);
            };
            found.append(&mut page);
            match next {
                Some(n) if seen.insert(n.clone()) => url = n,
                _ => break,
            }
        }
        Ok(Some(found))
    }
}

/// Checks `Docker-Content-Digest` (when sent) against the digest sent.
fn check_served_digest(req: &Req, resp: &Response, expected: &Digest) -> Result<(), Error> {
    let Some(served) = header_str(resp, DOCKER_CONTENT_DIGEST) else {
        return Ok(());
    };
    let served: Digest = served.parse().map_err(|e| Error::InvalidResponse {
        method: req.method.to_string(),
        url: req.shown(),
        reason: format!("the Docker-Content-Digest header is invalid: {e}"),
    })?;
    if served != *expected {
        return Err(Error::DigestMismatch {
            url: req.shown(),
            expected: expected.clone(),
            actual: served,
        });
    }
    Ok(())
}

/// The state of a download kept across attempts.
struct Download {
    sink: Sink,
    hasher: Hasher,
    written: u64,
    /// Bytes already passed to the progress callback (never reported twice).
    reported: u64,
    resumed: bool,
    /// Streamed: bytes at the start of this response already forwarded by
    /// an earlier one (a registry that ignored the `Range`), dropped here.
    skip: u64,
    /// Streamed: the next request asks for the whole blob again (and drops
    /// what was already forwarded), the registry having botched a range.
    replay: bool,
    /// The blob's URL (credentials removed), for errors.
    url: String,
}

/// Where a download's bytes go.
enum Sink {
    /// A part file, renamed into place once verified.
    File {
        out: BufWriter<tokio::fs::File>,
        path: PathBuf,
    },
    /// A channel, in pieces of [`STREAM_PIECE`] bytes.
    Stream {
        tx: tokio::sync::mpsc::Sender<Bytes>,
        buf: bytes::BytesMut,
    },
}

/// Largest piece of a streamed download.
const STREAM_PIECE: usize = 256 << 10;
/// Pieces from the network at least this large are passed on without
/// being gathered.
const STREAM_DIRECT: usize = 32 << 10;

impl Download {
    fn new(sink: Sink) -> Download {
        Download {
            sink,
            hasher: Hasher::new(),
            written: 0,
            reported: 0,
            resumed: false,
            skip: 0,
            replay: false,
            url: String::new(),
        }
    }

    /// Whether the download can start over from the first byte (a file can
    /// be emptied; forwarded pieces cannot be taken back).
    fn can_reset(&self) -> bool {
        matches!(self.sink, Sink::File { .. }) || self.written == 0
    }

    /// Starts over from the first byte: a file is emptied; a stream asks for
    /// the whole blob again and drops the bytes it already forwarded.
    async fn restart(&mut self) -> Result<(), Error> {
        match &mut self.sink {
            Sink::File { out, path } => {
                let io = |e| Error::io("truncate", &*path, e);
                out.flush().await.map_err(io)?;
                let f = out.get_mut();
                f.set_len(0).await.map_err(io)?;
                f.seek(SeekFrom::Start(0)).await.map_err(io)?;
                self.hasher = Hasher::new();
                self.written = 0;
                self.resumed = false;
            }
            Sink::Stream { .. } => self.replay = true,
        }
        Ok(())
    }

    /// Takes the next piece of the body (after any bytes to drop).
    async fn accept(&mut self, mut chunk: Bytes) -> Result<(), Error> {
        if self.skip > 0 {
            let n = (self.skip as usize).min(chunk.len());
            self.skip -= n as u64;
            let _ = chunk.split_to(n);
            if chunk.is_empty() {
                return Ok(());
            }
        }
        self.hasher.update(&chunk);
        self.written += chunk.len() as u64;
        match &mut self.sink {
            Sink::File { out, path } => out
                .write_all(&chunk)
                .await
                .map_err(|e| Error::io("write", &*path, e)),
            Sink::Stream { tx, buf } => {
                let gone = |_| Error::Abandoned {
                    url: self.url.clone(),
                };
                // Large pieces go on as they came (slicing a `Bytes` copies
                // nothing); small ones are gathered first.
                let mut rest = chunk;
                if !buf.is_empty() {
                    let n = (STREAM_PIECE - buf.len()).min(rest.len());
                    buf.extend_from_slice(&rest.split_to(n));
                    if buf.len() < STREAM_PIECE {
                        return Ok(());
                    }
                    tx.send(buf.split().freeze()).await.map_err(gone)?;
                }
                while rest.len() >= STREAM_PIECE {
                    tx.send(rest.split_to(STREAM_PIECE)).await.map_err(gone)?;
                }
                if rest.len() >= STREAM_DIRECT {
                    tx.send(rest).await.map_err(gone)
                } else {
                    buf.extend_from_slice(&rest);
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Client>();
    }

    #[test]
    fn digest_is_appended_to_the_location_query_without_rebuilding_it() {
        let d = Digest::of(b"x");
        let rel = Url::parse("http://r:5000/v2/a/blobs/uploads/u1?_state=abc%3D%3D").unwrap();
        assert_eq!(
            with_digest(&rel, &d).as_str(),
            format!("http://r:5000/v2/a/blobs/uploads/u1?_state=abc%3D%3D&digest={d}")
        );
        let plain = Url::parse("https://r/upload/u1").unwrap();
        assert_eq!(
            with_digest(&plain, &d).as_str(),
            format!("https://r/upload/u1?digest={d}")
        );
    }

    #[test]
    fn locations_may_be_relative_or_absolute() {
        let base = Url::parse("http://r:5000/v2/a/blobs/uploads/").unwrap();
        assert_eq!(
            base.join("/v2/a/blobs/uploads/u1?x=1").unwrap().as_str(),
            "http://r:5000/v2/a/blobs/uploads/u1?x=1"
        );
        assert_eq!(
            base.join("https://other/up/u1").unwrap().as_str(),
            "https://other/up/u1"
        );
    }

    #[test]
    fn link_header_next_page_is_found_and_resolved() {
        let base = Url::parse("https://r/v2/a/tags/list").unwrap();
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#, &base)
                .unwrap()
                .as_str(),
            "https://r/v2/a/tags/list?last=b&n=2"
        );
        assert_eq!(
            next_link(
                r#"<https://r/x?a=1,2>; rel="prev", <https://r/y>; rel=next"#,
                &base
            )
            .unwrap()
            .as_str(),
            "https://r/y"
        );
        assert!(next_link(r#"</v2/a/tags/list?last=b>; rel="prev""#, &base).is_none());
        assert!(next_link("garbage", &base).is_none());
    }

    #[test]
    fn error_bodies_give_code_and_message() {
        let (c, m) = parse_error_body(
            br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:x"}]}"#,
        );
        assert_eq!(c.as_deref(), Some("MANIFEST_BLOB_UNKNOWN"));
        assert_eq!(m, "blob unknown to registry");
        let (c, m) = parse_error_body(br#"{"details":"incorrect username or password"}"#);
        assert_eq!((c, m.as_str()), (None, "incorrect username or password"));
        let (c, m) = parse_error_body(b"<html><body>413 Request Entity Too Large</body></html>");
        assert_eq!((c, m.as_str()), (None, ""));
        let (c, m) = parse_error_body(b"upstream connect error\nmore");
        assert_eq!((c, m.as_str()), (None, "upstream connect error"));
    }

    #[test]
    fn manifest_media_type_prefers_a_specific_content_type() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(
            manifest_media_type(
                Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
                body
            ),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            manifest_media_type(Some("application/json"), body),
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            manifest_media_type(None, br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            OCI_MANIFEST
        );
        assert_eq!(manifest_media_type(None, br#"{"manifests":[]}"#), OCI_INDEX);
    }

    #[test]
    fn upload_status_range_counts_stored_bytes() {
        assert_eq!(stored_bytes("0-1048575", 0), Some(1 << 20));
        assert_eq!(stored_bytes("bytes=0-9", 0), Some(10));
        assert_eq!(stored_bytes("0-0", 0), Some(0));
        assert_eq!(stored_bytes("0-0", 1), Some(1));
        assert_eq!(stored_bytes("5-9", 0), None);
        assert_eq!(stored_bytes("x", 0), None);
    }

    #[test]
    fn part_file_sits_beside_the_destination() {
        let p = part_path(Path::new("/cache/blobs/sha256/abc")).unwrap();
        assert_eq!(p.parent(), Some(Path::new("/cache/blobs/sha256")));
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("abc.part-") && name.len() == "abc.part-".len() + 16,
            "{name}"
        );
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

    #[test]
    fn unreadable_ca_file_is_named_in_the_error() {
        let config = ClientConfig {
            default_host: HostConfig {
                ca_file: Some(PathBuf::from("/nonexistent/ferry-ca.pem")),
                ..HostConfig::default()
            },
            ..ClientConfig::default()
        };
        let e = Client::new(config).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ferry-ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let config = ClientConfig {
            default_host: HostConfig {
                ca_file: Some(bad.clone()),
                ..HostConfig::default()
            },
            ..ClientConfig::default()
        };
        let e = Client::new(config).unwrap_err();
        assert!(e.to_string().contains(&*bad.to_string_lossy()), "{e}");
    }
}
