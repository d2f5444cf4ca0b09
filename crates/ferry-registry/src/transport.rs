//! ferry's one HTTP transport: the one place a `reqwest::Client` is built
//! (per-host TLS: CA bundle, client certificate, `insecure`; the redirect
//! policy), the one retry loop ([`Retries::run`]: connection errors,
//! timeouts, 429 and the transient 5xx, honouring `Retry-After`, backoff with
//! jitter), and [`Transport`], a sender for servers that are not registries
//! (the WebDAV file target of ferry-import): credentials sent only to their
//! exact origin, error bodies read capped and with the credentials masked,
//! errors as [`Error`].
//!
//! The registry [`crate::Client`] builds its per-host clients with
//! `build_http` and runs every operation through [`Retries::run`]; plain
//! HTTP fetches (`http_fetch`) do too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_registry::Error> {
//! use ferry_registry::transport::{Redirects, Transport};
//! use ferry_registry::{ClientConfig, Credentials, OriginCredentials};
//!
//! let base = url::Url::parse("https://files.internal/mirror/").unwrap();
//! let t = Transport::new(&base, &ClientConfig::default(), Redirects::None)?;
//! let creds = OriginCredentials::new(&base, Credentials {
//!     username: "ops".into(),
//!     password: "secret".into(),
//! });
//! let url = base.join("index.yaml").unwrap();
//! let resp = t.send(reqwest::Method::HEAD, &url, Some(&creds), |r| r).await?;
//! println!("{}", resp.status());
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use reqwest::{Method, RequestBuilder, Response};
use url::Url;

use crate::endpoint::{authority_of, safe_url};
use crate::error::chain;
use crate::response::{read_prefix, retry_after_of};
use crate::{retry, ClientConfig, Error, HostConfig, OriginCredentials};

/// How many bytes of an error answer are read for its message.
pub const ERROR_BODY_READ: usize = 4096;
/// How many characters of an error answer are quoted in a message.
pub const ERROR_BODY_SHOWN: usize = 200;

/// Whether a client follows redirects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// Up to 10 hops, never from HTTPS down to plain HTTP; reqwest drops
    /// `Authorization` whenever a hop changes host or port (registries send
    /// blobs to storage).
    Follow,
    /// None: a 3xx answer is returned as it is, and nothing (credentials
    /// least of all) is sent to where it points (the WebDAV target).
    None,
}

/// Redirects are followed (registries send blobs to storage, file servers
/// move things) up to 10 hops, but never from HTTPS down to plain HTTP.
/// reqwest drops `Authorization` whenever a hop changes host or port; with
/// downgrades refused, a credential never leaves TLS through a redirect.
fn redirect_policy(redirects: Redirects) -> reqwest::redirect::Policy {
    if redirects == Redirects::None {
        return reqwest::redirect::Policy::none();
    }
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            let to = safe_url(attempt.url());
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

/// The HTTP client for one host's settings: the only place ferry builds a
/// `reqwest::Client`. Reads the CA bundle and client certificate now, so a
/// bad file is reported (naming it) before any request.
pub(crate) fn build_http(
    cfg: &HostConfig,
    config: &ClientConfig,
    host: &str,
    redirects: Redirects,
) -> Result<reqwest::Client, Error> {
    let mut b = reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .connect_timeout(config.timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .redirect(redirect_policy(redirects));
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

/// The retry policy's numbers: how many tries, the first wait and the
/// longest (an honoured `Retry-After` included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Tries in all, the first included (0 counts as 1).
    pub max_attempts: u32,
    /// The first wait; doubled after each failure, with jitter.
    pub initial_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

/// One try of [`Retries::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based.
    pub number: u32,
    /// Whether no try follows this one, whatever it gives.
    pub last: bool,
}

impl Retries {
    /// The numbers of `config` (`max_attempts`, `initial_backoff`, `max_backoff`).
    pub fn of(config: &ClientConfig) -> Retries {
        Retries {
            max_attempts: config.max_attempts,
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
        }
    }

    fn max(&self) -> u32 {
        self.max_attempts.max(1)
    }

    /// Runs `op` until it succeeds, fails with an error that is not
    /// [`Error::is_retryable`], or the tries run out; between two tries it
    /// waits the server's `Retry-After` (429/503) or the backoff, and logs
    /// why (a warning naming the method and URL, never a credential).
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, Error>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let max = self.max();
        let mut number = 1;
        loop {
            let attempt = Attempt {
                number,
                last: number >= max,
            };
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && !attempt.last => {
                    self.pause(&e, number).await;
                    number += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Logs a retry and waits: `Retry-After` (429/503) or backoff.
    pub(crate) async fn pause(&self, e: &Error, attempt: u32) {
        let retry_after = match e {
            Error::Http {
                status: 429 | 503,
                retry_after,
                ..
            } => *retry_after,
            _ => None,
        };
        let d = retry::delay(self.initial_backoff, self.max_backoff, attempt, retry_after);
        let wait = if d < Duration::from_secs(1) {
            format!("{}ms", d.as_millis())
        } else {
            format!("{:.1}s", d.as_secs_f32())
        };
        let max = self.max();
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
}

/// An HTTP sender for one server that is not a registry, with the same
/// per-host TLS settings, retry policy and secret handling as the registry
/// client. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    http: reqwest::Client,
    retries: Retries,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport for the server of `base`, with the settings `config` has
    /// for its `host[:port]` (else `config.default_host`), as the registry
    /// client and plain HTTP fetches look them up, and `config`'s retry
    /// policy.
    pub fn new(
        base: &Url,
        config: &ClientConfig,
        redirects: Redirects,
    ) -> Result<Transport, Error> {
        let host = authority_of(base);
        let cfg = config.hosts.get(&host).unwrap_or(&config.default_host);
        Ok(Transport {
            http: build_http(cfg, config, &host, redirects)?,
            retries: Retries::of(config),
        })
    }

    /// The retry policy.
    pub fn retries(&self) -> Retries {
        self.retries
    }

    /// A request to `url`, with `credentials` only when `url` has exactly
    /// their origin (scheme, host, port). For a body that can be sent only
    /// once (a stream); send it with [`Transport::send_once`].
    pub fn request(
        &self,
        method: Method,
        url: &Url,
        credentials: Option<&OriginCredentials>,
    ) -> RequestBuilder {
        let rb = self.http.request(method, url.clone());
        match credentials.filter(|c| c.matches(url)) {
            Some(c) => rb.header(AUTHORIZATION, c.basic_header()),
            None => rb,
        }
    }

    /// Sends a built request once; a failure to send or to get an answer is
    /// an [`Error::Transport`] naming the method and URL.
    pub async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        request: RequestBuilder,
    ) -> Result<Response, Error> {
        request.send().await.map_err(|source| Error::Transport {
            method: method.to_string(),
            url: safe_url(url),
            source: source.without_url(),
        })
    }

    /// Sends a request whose body `build` can make again, retrying
    /// connection errors, timeouts, 429 and the transient 5xx with the retry
    /// policy (`Retry-After` honoured). Any other answer, and the last try's
    /// answer whatever its status, comes back as `Ok` for the caller to
    /// judge.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        credentials: Option<&OriginCredentials>,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, Error> {
        let (method, build) = (&method, &build);
        self.retries
            .run(|attempt| async move {
                let rb = build(self.request(method.clone(), url, credentials));
                let resp = self.send_once(method, url, rb).await?;
                let status = resp.status().as_u16();
                if attempt.last || !retry::is_retryable_status(status) {
                    return Ok(resp);
                }
                let retry_after = retry_after_of(&resp);
                let message = error_body(resp, credentials).await;
                Err(Error::Http {
                    method: method.to_string(),
                    url: safe_url(url),
                    status,
                    code: None,
                    message,
                    retry_after,
                })
            })
            .await
    }
}

/// The start of an error answer's body for a message: at most
/// [`ERROR_BODY_READ`] bytes read, whitespace collapsed, cut at
/// [`ERROR_BODY_SHOWN`] characters, `(empty body)` when there is none, and
/// `credentials` (the password, the `user:password` pair and its Basic
/// token, as a server may echo a request) replaced by `***`.
pub async fn error_body(resp: Response, credentials: Option<&OriginCredentials>) -> String {
    let raw = read_prefix(resp, ERROR_BODY_READ).await;
    let mut text = String::from_utf8_lossy(&raw).into_owned();
    if let Some(c) = credentials {
        for secret in c.secrets() {
            if !secret.is_empty() {
                text = text.replace(&secret, "***");
            }
        }
    }
    let mut out = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > ERROR_BODY_SHOWN {
        out = out.chars().take(ERROR_BODY_SHOWN).collect::<String>() + "…";
    }
    if out.is_empty() {
        out = "(empty body)".to_string();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_retry_loop_stops_at_the_last_attempt_and_on_a_final_error() {
        let retries = Retries {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        };
        let http = |status| Error::Http {
            method: "PUT".into(),
            url: "http://h/x".into(),
            status,
            code: None,
            message: String::new(),
            retry_after: None,
        };
        let seen = std::sync::Mutex::new(Vec::new());
        let r: Result<(), Error> = retries
            .run(|a| {
                seen.lock().unwrap().push((a.number, a.last));
                async { Err(http(503)) }
            })
            .await;
        assert_eq!(r.unwrap_err().status(), Some(503));
        assert_eq!(*seen.lock().unwrap(), [(1, false), (2, false), (3, true)]);
        seen.lock().unwrap().clear();
        let r: Result<(), Error> = retries
            .run(|a| {
                seen.lock().unwrap().push((a.number, a.last));
                async { Err(http(404)) }
            })
            .await;
        assert!(r.unwrap_err().is_not_found());
        assert_eq!(seen.lock().unwrap().len(), 1, "a 404 is not tried again");
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
        let e = crate::Client::new(config).unwrap_err();
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
        let e = crate::Client::new(config).unwrap_err();
        assert!(e.to_string().contains(&*bad.to_string_lossy()), "{e}");
    }
}
