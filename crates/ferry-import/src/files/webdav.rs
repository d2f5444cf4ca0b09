//! The HTTP (WebDAV) target: `MKCOL` of missing parents, a streamed `PUT`
//! to a temporary name beside the destination (its last chunk held back
//! until the whole file is verified), `MOVE` with `Overwrite: T` on commit,
//! `DELETE` on abort.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_bundle::digest::Hasher;
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;
use ferry_registry::retry;
use reqwest::header::{HeaderValue, CONTENT_LENGTH};
use reqwest::{Method, StatusCode};
use tokio::sync::mpsc;

use super::spec::{decode_percent, encode_component, redact_spec};
use super::staging::{temp_name, verify, Staged, StagedInner};
use super::{FileTargetOptions, FilesError};

/// How many bytes of an error response body are quoted in errors.
pub(super) const BODY_PREFIX: usize = 200;

/// An HTTP (WebDAV) file target.
#[derive(Clone)]
pub struct HttpTarget {
    pub(super) client: reqwest::Client,
    /// `scheme://host[:port][/path]`, no credentials, no trailing `/`.
    pub(super) base: String,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) attempts: u32,
    /// Collections known to exist (relative paths), shared by clones.
    pub(super) collections: Arc<Mutex<HashSet<String>>>,
}

impl fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTarget")
            .field("base", &self.base)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("attempts", &self.attempts)
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

/// The first wait between two tries; doubled after each failure.
pub(super) const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two tries, a server's `Retry-After` included.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long to wait after try `attempt` was answered `resp` (retryable): the
/// server's `Retry-After` when it sent one, else the backoff; ferry-registry's
/// retry policy, the same as the registry client's.
pub(super) fn retry_delay(attempt: u32, resp: Option<&reqwest::Response>) -> Duration {
    let retry_after = resp
        .and_then(|r| r.headers().get(reqwest::header::RETRY_AFTER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()));
    retry::delay(INITIAL_BACKOFF, MAX_BACKOFF, attempt, retry_after)
}

/// The start of a response body, whitespace collapsed, for errors.
pub(super) async fn body_prefix(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < BODY_PREFIX * 4 {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut out: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > BODY_PREFIX {
        out = out.chars().take(BODY_PREFIX).collect::<String>() + "…";
    }
    if out.is_empty() {
        out = "(empty body)".to_string();
    }
    out
}

pub(super) fn mkcol() -> Method {
    // A valid token: from_bytes cannot fail on it.
    Method::from_bytes(b"MKCOL").unwrap_or(Method::PUT)
}

pub(super) fn move_method() -> Method {
    Method::from_bytes(b"MOVE").unwrap_or(Method::PUT)
}

impl HttpTarget {
    pub(super) fn new(spec: &str, opts: FileTargetOptions) -> Result<HttpTarget, FilesError> {
        let invalid = |reason: &str| FilesError::InvalidSpec {
            spec: redact_spec(spec),
            reason: reason.to_string(),
        };
        let mut url = url::Url::parse(spec).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("only http:// and https:// are supported"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a query or fragment is not supported"));
        }
        let url_user = (!url.username().is_empty()).then(|| decode_percent(url.username()));
        let url_password = url.password().map(decode_percent);
        let username = opts.username.clone().or(url_user);
        let password = opts.password.clone().or(url_password);
        if password.is_some() && username.is_none() {
            return Err(invalid("a password needs a username"));
        }
        url.set_username("")
            .map_err(|()| invalid("cannot remove the user from the URL"))?;
        url.set_password(None)
            .map_err(|()| invalid("cannot remove the password from the URL"))?;
        let base = url.as_str().trim_end_matches('/').to_string();

        let mut b = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .tcp_keepalive(Some(Duration::from_secs(30)));
        if let Some(ca) = &opts.ca_file {
            let ca_err = |reason: String| FilesError::Ca {
                path: ca.clone(),
                reason,
            };
            let pem = std::fs::read(ca).map_err(|e| ca_err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(chain(&e)))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate found".to_string()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if opts.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let client = b.build().map_err(|e| FilesError::Client {
            url: base.clone(),
            reason: chain(&e),
        })?;
        Ok(HttpTarget {
            client,
            base,
            username,
            password,
            attempts: opts.attempts.max(1),
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

    pub(super) fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, url);
        match &self.username {
            Some(u) => r.basic_auth(u, self.password.as_deref()),
            None => r,
        }
    }

    /// Sends a request without a streamed body, retrying connection errors,
    /// 429 and 5xx. The last answer is returned whatever its status.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, FilesError> {
        let mut attempt = 1;
        loop {
            let req = build(self.request(method.clone(), url));
            let wait = match req.send().await {
                Ok(resp)
                    if retry::is_retryable_status(resp.status().as_u16())
                        && attempt < self.attempts =>
                {
                    let wait = retry_delay(attempt, Some(&resp));
                    tracing::debug!(%method, url, status = %resp.status(), attempt, ?wait, "retrying");
                    wait
                }
                Ok(resp) => return Ok(resp),
                Err(e) if retry::is_retryable_transport(&e) && attempt < self.attempts => {
                    tracing::debug!(%method, url, error = %chain(&e), attempt, "retrying");
                    retry_delay(attempt, None)
                }
                Err(e) => {
                    return Err(FilesError::Transport {
                        method,
                        url: url.to_string(),
                        reason: chain(&e),
                    })
                }
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
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
            body: body_prefix(resp).await,
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
        let dest = HeaderValue::from_str(to).map_err(|e| FilesError::Transport {
            method: move_method(),
            url: from.to_string(),
            reason: format!("the destination {to} is not a valid header value: {e}"),
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
                Err(e) => {
                    return Err(FilesError::Transport {
                        method: Method::GET,
                        url,
                        reason: chain(&e),
                    })
                }
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
                Err(e) => {
                    return Err(FilesError::Transport {
                        method: Method::GET,
                        url: url.clone(),
                        reason: chain(&e),
                    })
                }
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
        let sent = self
            .request(Method::PUT, &temp)
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
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
                return Err(FilesError::Transport {
                    method: Method::PUT,
                    url: temp,
                    reason: chain(&e),
                });
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

/// An error and its causes, on one line.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
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
        assert_eq!(h.password.as_deref(), Some("s3cret"));
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
