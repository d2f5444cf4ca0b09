//! The HTTP (WebDAV) target: `MKCOL` of missing parents, a streamed `PUT`
//! to a temporary name beside the destination (its last chunk held back
//! until the whole file is verified), `MOVE` with `Overwrite: T` on commit,
//! `DELETE` on abort. Every request goes through ferry-registry's
//! [`Transport`] (TLS, retries, origin-bound credentials, capped and masked
//! error bodies); its errors are wrapped as [`FilesError::Transport`].

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_bundle::digest::Hasher;
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;
use ferry_registry::transport::{error_body, Redirects, Transport};
use ferry_registry::{ClientConfig, Credentials, HostConfig, OriginCredentials};
use reqwest::header::{HeaderValue, CONTENT_LENGTH};
use reqwest::{Method, StatusCode};
use tokio::sync::mpsc;
use url::Url;

use super::spec::{encode_component, parse_http, HttpSpec};
use super::staging::{temp_name, verify, Staged, StagedInner};
use super::{FileTargetOptions, FilesError};

/// The first wait between two tries; doubled after each failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two tries, a server's `Retry-After` included.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP (WebDAV) file target, speaking through ferry-registry's
/// [`Transport`].
#[derive(Clone)]
pub struct HttpTarget {
    /// The one HTTP transport: TLS, retries, capped and redacted error bodies.
    pub(super) transport: Transport,
    /// `scheme://host[:port][/path]`, no credentials, no trailing `/`.
    pub(super) base: String,
    pub(super) username: Option<String>,
    /// Sent only to the base's exact origin (scheme, host, port).
    pub(super) credentials: Option<Arc<OriginCredentials>>,
    /// Collections known to exist (relative paths), shared by clones.
    pub(super) collections: Arc<Mutex<HashSet<String>>>,
}

impl fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTarget")
            .field("base", &self.base)
            .field("credentials", &self.credentials)
            .field("transport", &self.transport)
            .finish()
    }
}

/// What a streamed body found wrong, for the error after the request.
type Failure = Arc<Mutex<Option<FilesError>>>;

/// The state of a streamed, verified request body.
struct BodyState {
    rx: mpsc::Receiver<Bytes>,
    hasher: Hasher,
    held: Option<Bytes>,
    received: u64,
    size: u64,
    digest: Digest,
    location: String,
    failure: Failure,
    done: bool,
}

impl BodyState {
    pub(super) fn fail(&mut self, e: FilesError) -> io::Error {
        self.done = true;
        let msg = e.to_string();
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(e);
        }
        io::Error::other(msg)
    }

    /// The next piece of the body: each chunk is passed on only once the
    /// next one (or the end) arrived, so the last one is sent only when the
    /// whole file is verified.
    pub(super) async fn next(mut self) -> Option<(Result<Bytes, io::Error>, BodyState)> {
        if self.done {
            return None;
        }
        loop {
            match self.rx.recv().await {
                Some(chunk) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    self.received += chunk.len() as u64;
                    if self.received > self.size {
                        let e = FilesError::TooLong {
                            location: self.location.clone(),
                            expected: self.size,
                        };
                        let err = self.fail(e);
                        return Some((Err(err), self));
                    }
                    self.hasher.update(&chunk);
                    if let Some(prev) = self.held.replace(chunk) {
                        return Some((Ok(prev), self));
                    }
                }
                None => {
                    self.done = true;
                    let hasher = std::mem::take(&mut self.hasher);
                    let checked = verify(
                        &self.location,
                        &self.digest,
                        self.size,
                        self.received,
                        hasher,
                    );
                    return match checked {
                        Err(e) => {
                            let err = self.fail(e);
                            Some((Err(err), self))
                        }
                        Ok(()) => self.held.take().map(|b| (Ok(b), self)),
                    };
                }
            }
        }
    }
}

pub(super) fn mkcol() -> Method {
    // A valid token: from_bytes cannot fail on it.
    Method::from_bytes(b"MKCOL").unwrap_or(Method::PUT)
}

pub(super) fn move_method() -> Method {
    Method::from_bytes(b"MOVE").unwrap_or(Method::PUT)
}

impl HttpTarget {
    /// The target `spec` names (see [`parse_http`]), with a transport
    /// built from the same per-host settings as the registry client's: the
    /// scheme as given, `ca_file` and `insecure` for its host, the retry
    /// policy with `attempts` tries, and no redirect followed.
    pub(super) fn new(spec: &str, opts: FileTargetOptions) -> Result<HttpTarget, FilesError> {
        let HttpSpec {
            base,
            username,
            password,
        } = parse_http(spec, &opts)?;
        let tls = base.scheme() == "https";
        let config = ClientConfig {
            default_host: HostConfig {
                plain_http: !tls,
                https: tls,
                insecure_skip_verify: opts.insecure,
                ca_file: opts.ca_file.clone(),
                ..HostConfig::default()
            },
            max_attempts: opts.attempts.max(1),
            initial_backoff: INITIAL_BACKOFF,
            max_backoff: MAX_BACKOFF,
            timeout: CONNECT_TIMEOUT,
            ..ClientConfig::default()
        };
        let transport = Transport::new(&base, &config, Redirects::None)?;
        let credentials = username.clone().map(|username| {
            Arc::new(OriginCredentials::new(
                &base,
                Credentials {
                    username,
                    password: password.unwrap_or_default(),
                },
            ))
        });
        Ok(HttpTarget {
            transport,
            base: base.as_str().trim_end_matches('/').to_string(),
            username,
            credentials,
            collections: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// The base URL (no credentials, no trailing `/`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of the file `path`.
    pub(super) fn url_of(&self, path: &RelPath) -> String {
        let mut s = self.base.clone();
        for c in path.components() {
            s.push('/');
            s.push_str(&encode_component(c));
        }
        s
    }

    /// The URL of the temporary file beside `path`.
    pub(super) fn temp_url_of(&self, path: &RelPath) -> String {
        let mut s = match path.parent() {
            Some(p) => self.url_of(&p),
            None => self.base.clone(),
        };
        s.push('/');
        s.push_str(&encode_component(&temp_name(path.file_name())));
        s
    }

    /// `url` (one this target built) as a URL.
    fn parse(url: &str) -> Result<Url, FilesError> {
        Url::parse(url).map_err(|e| {
            FilesError::Transport(ferry_registry::Error::InvalidUrl {
                host: url.to_string(),
                reason: e.to_string(),
            })
        })
    }

    /// Sends a request without a streamed body through the transport
    /// (retrying connection errors, 429 and 5xx, `Retry-After` honoured).
    /// The last answer is returned whatever its status.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, FilesError> {
        let url = Self::parse(url)?;
        Ok(self
            .transport
            .send(method, &url, self.credentials.as_deref(), build)
            .await?)
    }

    /// The error for an answer that is not the expected one.
    pub(super) async fn unexpected(
        &self,
        method: Method,
        url: &str,
        resp: reqwest::Response,
    ) -> FilesError {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return FilesError::Unauthorized {
                url: url.to_string(),
                status,
                user: self.username.clone(),
            };
        }
        FilesError::Status {
            method,
            url: url.to_string(),
            status,
            body: error_body(resp, self.credentials.as_deref()).await,
        }
    }

    pub(super) async fn delete_quietly(&self, url: &str) {
        match self.send(Method::DELETE, url, |r| r).await {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {}
            Ok(r) => {
                tracing::debug!(url, status = %r.status(), "DELETE of a temporary file failed")
            }
            Err(e) => tracing::debug!(url, error = %e, "DELETE of a temporary file failed"),
        }
    }

    pub(super) async fn check(&self) -> Result<(), FilesError> {
        let probe =
            RelPath::new(&temp_name("ferry-probe")).map_err(|e| FilesError::InvalidSpec {
                spec: self.base.clone(),
                reason: e.to_string(),
            })?;
        let temp = self.url_of(&probe);
        let resp = self
            .send(Method::PUT, &temp, |r| {
                r.body(Bytes::from_static(b"ferry probe\n"))
            })
            .await?;
        if !resp.status().is_success() {
            if resp.status() != StatusCode::UNAUTHORIZED {
                let base = format!("{}/", self.base);
                if let Ok(head) = self.send(Method::HEAD, &base, |r| r).await {
                    if head.status() == StatusCode::NOT_FOUND {
                        return Err(FilesError::MissingBase {
                            url: base,
                            status: head.status(),
                        });
                    }
                }
            }
            return Err(self.unexpected(Method::PUT, &temp, resp).await);
        }
        let moved = format!("{temp}.moved");
        let result = self.move_to(&temp, &moved).await;
        match result {
            Ok(()) => {
                self.delete_quietly(&moved).await;
                Ok(())
            }
            Err(e) => {
                self.delete_quietly(&temp).await;
                Err(e)
            }
        }
    }

    /// `MOVE from` → `to`, overwriting. 405/501 mean no MOVE support.
    pub(super) async fn move_to(&self, from: &str, to: &str) -> Result<(), FilesError> {
        let dest = HeaderValue::from_str(to).map_err(|e| {
            FilesError::Transport(ferry_registry::Error::InvalidUrl {
                host: to.to_string(),
                reason: format!("not a valid Destination header: {e}"),
            })
        })?;
        let resp = self
            .send(move_method(), from, |r| {
                r.header("Destination", dest.clone())
                    .header("Overwrite", "T")
            })
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        if matches!(status.as_u16(), 405 | 501) {
            return Err(FilesError::NoMove {
                url: from.to_string(),
                status,
            });
        }
        Err(self.unexpected(move_method(), from, resp).await)
    }

    /// `MKCOL`s the parents of `path` that are not known to exist, top down
    /// (201 created, 405 already there).
    pub(super) async fn ensure_parents(&self, path: &RelPath) -> Result<(), FilesError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let mut rel = String::new();
        let mut url = self.base.clone();
        for comp in parent.components() {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(comp);
            url.push('/');
            url.push_str(&encode_component(comp));
            let known = self
                .collections
                .lock()
                .map(|c| c.contains(&rel))
                .unwrap_or(false);
            if known {
                continue;
            }
            let coll = format!("{url}/");
            let resp = self.send(mkcol(), &coll, |r| r).await?;
            match resp.status().as_u16() {
                200 | 201 | 204 | 405 => {
                    if let Ok(mut c) = self.collections.lock() {
                        c.insert(rel.clone());
                    }
                }
                _ => return Err(self.unexpected(mkcol(), &coll, resp).await),
            }
        }
        Ok(())
    }

    pub(super) fn forget_parents(&self, path: &RelPath) {
        if let (Some(parent), Ok(mut c)) = (path.parent(), self.collections.lock()) {
            c.retain(|k| !parent.as_str().starts_with(k.as_str()));
        }
    }

    pub(super) async fn has(
        &self,
        path: &RelPath,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, FilesError> {
        let url = self.url_of(path);
        let resp = self.send(Method::HEAD, &url, |r| r).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(false),
            StatusCode::OK => {}
            _ => return Err(self.unexpected(Method::HEAD, &url, resp).await),
        }
        // Content-Length of a HEAD answer: read the header, not the
        // (empty) body's length.
        let len = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if len.is_some_and(|l| l != size) {
            return Ok(false);
        }
        let mut resp = self.send(Method::GET, &url, |r| r).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(false),
            StatusCode::OK => {}
            _ => return Err(self.unexpected(Method::GET, &url, resp).await),
        }
        let mut hasher = Hasher::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    hasher.update(&c);
                    if hasher.len() > size {
                        return Ok(false);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(cut(&Method::GET, &url, e)),
            }
        }
        Ok(hasher.len() == size && &hasher.finish() == digest)
    }

    pub(super) async fn read(
        &self,
        path: &RelPath,
        limit: u64,
    ) -> Result<Option<Bytes>, FilesError> {
        let url = self.url_of(path);
        let mut resp = self.send(Method::GET, &url, |r| r).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            StatusCode::OK => {}
            _ => return Err(self.unexpected(Method::GET, &url, resp).await),
        }
        let too_large = || FilesError::TooLarge {
            location: url.clone(),
            limit,
        };
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|l| l > limit) {
            return Err(too_large());
        }
        let mut buf = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if (buf.len() + c.len()) as u64 > limit {
                        return Err(too_large());
                    }
                    buf.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => return Err(cut(&Method::GET, &url, e)),
            }
        }
        Ok(Some(Bytes::from(buf)))
    }

    pub(super) async fn write_stream(
        &self,
        path: &RelPath,
        digest: &Digest,
        size: u64,
        chunks: mpsc::Receiver<Bytes>,
    ) -> Result<Staged, FilesError> {
        self.ensure_parents(path).await?;
        let temp = self.temp_url_of(path);
        let dest = self.url_of(path);
        let failure: Failure = Arc::new(Mutex::new(None));
        let state = BodyState {
            rx: chunks,
            hasher: Hasher::new(),
            held: None,
            received: 0,
            size,
            digest: digest.clone(),
            location: dest.clone(),
            failure: failure.clone(),
            done: false,
        };
        let stream = futures_util::stream::unfold(state, BodyState::next);
        let temp_url = Self::parse(&temp)?;
        let request = self
            .transport
            .request(Method::PUT, &temp_url, self.credentials.as_deref())
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(stream));
        let sent = self
            .transport
            .send_once(&Method::PUT, &temp_url, request)
            .await;
        let found = failure.lock().ok().and_then(|mut f| f.take());
        if let Some(e) = found {
            // The body was cut short, so the server should have stored
            // nothing; delete in case it kept a partial file.
            self.delete_quietly(&temp).await;
            return Err(e);
        }
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                self.delete_quietly(&temp).await;
                return Err(e.into());
            }
        };
        if !resp.status().is_success() {
            if matches!(resp.status().as_u16(), 409 | 500) {
                // Perhaps a parent went away: look again next time.
                self.forget_parents(path);
            }
            let err = self.unexpected(Method::PUT, &temp, resp).await;
            self.delete_quietly(&temp).await;
            return Err(err);
        }
        Ok(Staged {
            inner: Some(StagedInner::Http {
                target: self.clone(),
                path: path.clone(),
                temp,
                dest,
                digest: digest.clone(),
                size,
            }),
        })
    }

    /// `PUT`s `data` to a temporary name beside `path` (creating parents;
    /// on 409 the parents are created again and the `PUT` retried once).
    pub(super) async fn put_bytes_staged(
        &self,
        path: &RelPath,
        digest: &Digest,
        data: Bytes,
    ) -> Result<Staged, FilesError> {
        self.ensure_parents(path).await?;
        let temp = self.temp_url_of(path);
        let mut retried = false;
        loop {
            let body = data.clone();
            let resp = self
                .send(Method::PUT, &temp, |r| r.body(body.clone()))
                .await?;
            let status = resp.status();
            if status.is_success() {
                break;
            }
            if !retried && matches!(status.as_u16(), 409 | 500) {
                // 409 (or nginx's 500 from a failed rename) when a parent
                // collection is missing.
                retried = true;
                self.forget_parents(path);
                self.ensure_parents(path).await?;
                continue;
            }
            return Err(self.unexpected(Method::PUT, &temp, resp).await);
        }
        Ok(Staged {
            inner: Some(StagedInner::Http {
                target: self.clone(),
                path: path.clone(),
                temp,
                dest: self.url_of(path),
                digest: digest.clone(),
                size: data.len() as u64,
            }),
        })
    }

    pub(super) async fn commit(
        &self,
        path: &RelPath,
        temp: &str,
        dest: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), FilesError> {
        match self.move_to(temp, dest).await {
            Ok(()) => Ok(()),
            Err(FilesError::Status { status, .. })
                if status == StatusCode::NOT_FOUND
                    && self.has(path, digest, size).await.unwrap_or(false) =>
            {
                // An earlier try moved it and its answer was lost.
                Ok(())
            }
            Err(e) => {
                self.delete_quietly(temp).await;
                Err(e)
            }
        }
    }
}

/// A body that could not be read to its end, as the transport's error.
fn cut(method: &Method, url: &str, source: reqwest::Error) -> FilesError {
    FilesError::Transport(ferry_registry::Error::Transport {
        method: method.to_string(),
        url: url.to_string(),
        source: source.without_url(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::FileTarget;

    #[test]
    fn http_spec_takes_credentials_out_of_the_url() {
        let t = FileTarget::new(
            "http://ops:s3cret@files.internal:8080/mirror/",
            FileTargetOptions::default(),
        )
        .unwrap();
        let FileTarget::Http(h) = &t else {
            panic!("not http: {t:?}");
        };
        assert_eq!(h.base(), "http://files.internal:8080/mirror");
        assert_eq!(h.username.as_deref(), Some("ops"));
        let sent = h
            .credentials
            .as_ref()
            .map(|c| c.credentials().password.as_str());
        assert_eq!(sent, Some("s3cret"));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(!t.describe().contains("s3cret"));
        let p = RelPath::new("falco/driver/7.0.0+driver/x86_64/f.ko").unwrap();
        assert_eq!(
            t.location(&p),
            "http://files.internal:8080/mirror/falco/driver/7.0.0%2Bdriver/x86_64/f.ko"
        );
    }

    #[test]
    fn bad_specs_are_refused_without_echoing_the_password() {
        for spec in [
            "ftp://h/x",
            "",
            "http://u:s3cret@/x",
            "https://u:s3cret@h/x?q=1",
        ] {
            let e = FileTarget::new(spec, FileTargetOptions::default()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("invalid file target"), "{spec}: {msg}");
            assert!(!msg.contains("s3cret"), "{msg}");
        }
        let opts = FileTargetOptions {
            password: Some("s3cret".into()),
            ..FileTargetOptions::default()
        };
        assert!(!format!("{opts:?}").contains("s3cret"));
        let e = FileTarget::new("http://h/x", opts).unwrap_err();
        assert!(e.to_string().contains("needs a username"), "{e}");
    }
}
