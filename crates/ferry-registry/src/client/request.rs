//! One request to a registry: the target (endpoint, HTTP client, token
//! scopes), auth (credentials, challenges, bearer tokens), sending under the
//! concurrency limits, the error for an answer not accepted, and retries.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_bundle::digest::Digest;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::streamed::Feed;
use super::{Client, DOCKER_CONTENT_DIGEST};
use crate::auth::{self, Challenge, Creds};
use crate::endpoint::{authority_of, safe_url, Endpoint};
use crate::response::{header_str, parse_error_body, read_prefix, retry_after_of};
use crate::transport::Retries;
use crate::{docker_config, Error};

/// How much of an error body is read for its message.
pub(super) const ERROR_BODY_LIMIT: usize = 64 << 10;
/// The slowest upload rate assumed when sizing the timeout of a request with a body.
pub(super) const MIN_UPLOAD_RATE: u64 = 64 << 10;

/// Who a request is for: the host's endpoint, HTTP client and auth scopes.
pub(super) struct Target<'a> {
    /// The host as configured / written in references.
    pub(super) host: &'a str,
    pub(super) ep: Endpoint,
    pub(super) http: &'a reqwest::Client,
    /// Token scopes the operation needs, sorted.
    pub(super) scopes: Vec<String>,
}

/// How long a request may take.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    /// `timeout` for the whole exchange, body included (small bodies).
    Total,
    /// `timeout` until the response headers; the body is read with a stall timeout.
    Headers,
    /// `timeout` plus the request body's size at [`MIN_UPLOAD_RATE`].
    Upload,
}

/// A request that can be sent again (the body is shared bytes).
pub(super) struct Req {
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) headers: HeaderMap,
    pub(super) body: Option<Bytes>,
    /// A streamed body instead (a fresh one for each send).
    pub(super) stream: Option<Arc<Feed>>,
    pub(super) limit: Limit,
}

impl Req {
    pub(super) fn new(method: Method, url: Url) -> Req {
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            stream: None,
            limit: Limit::Total,
        }
    }

    pub(super) fn header(mut self, name: HeaderName, value: &str) -> Req {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    pub(super) fn body(mut self, body: Bytes) -> Req {
        self.body = Some(body);
        self
    }

    /// An empty body with `Content-Length: 0` (POST/PUT without content).
    pub(super) fn empty(self) -> Req {
        self.header(CONTENT_LENGTH, "0").body(Bytes::new())
    }

    /// Sends `feed`'s bytes as the body (sent again only while it holds them).
    pub(super) fn stream(mut self, feed: Arc<Feed>) -> Req {
        self.stream = Some(feed);
        self
    }

    pub(super) fn limit(mut self, limit: Limit) -> Req {
        self.limit = limit;
        self
    }

    pub(super) fn shown(&self) -> String {
        safe_url(&self.url)
    }
}

/// The `Location` of a response, resolved against the request URL.
pub(super) fn location_of(req: &Req, resp: &Response) -> Result<Url, Error> {
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

/// Checks `Docker-Content-Digest` (when sent) against the digest sent.
pub(super) fn check_served_digest(
    req: &Req,
    resp: &Response,
    expected: &Digest,
) -> Result<(), Error> {
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

impl Client {
    /// Credentials for the target: explicit ones, else the docker config's.
    pub(super) async fn creds(&self, t: &Target<'_>) -> Result<Option<Creds>, Error> {
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

    pub(super) async fn fetch_token(
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
    pub(super) async fn auth_header(&self, t: &Target<'_>) -> Result<Option<HeaderValue>, Error> {
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
    pub(super) async fn on_challenge(
        &self,
        t: &Target<'_>,
        resp: &Response,
    ) -> Result<bool, Error> {
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
    pub(super) async fn execute(&self, t: &Target<'_>, req: &Req) -> Result<Response, Error> {
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

    pub(super) async fn send_once(
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
        } else if let Some(feed) = &req.stream {
            rb = rb.body(feed.body());
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
                let len = match (&req.body, &req.stream) {
                    (Some(b), _) => b.len() as u64,
                    (None, Some(feed)) => feed.size(),
                    (None, None) => 0,
                };
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
    pub(super) fn gate(&self, host: &str) -> Arc<crate::gate::HostGate> {
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
    pub(super) async fn http_error(&self, req: &Req, resp: Response) -> Error {
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

    /// Logs a retry and waits: `Retry-After` (429/503) or backoff (the
    /// retry policy's pause, for loops that also resume or replay).
    pub(crate) async fn pause(&self, e: &Error, attempt: u32, max: u32) {
        let retries = Retries {
            max_attempts: max,
            ..Retries::of(&self.inner.config)
        };
        retries.pause(e, attempt).await;
    }

    pub(crate) fn max_attempts(&self) -> u32 {
        self.inner.config.max_attempts.max(1)
    }

    /// Runs `op` until it succeeds, fails for good, or attempts run out
    /// (the one retry loop, [`Retries::run`]).
    pub(crate) async fn retry_op<T, F, Fut>(&self, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        Retries::of(&self.inner.config).run(|_| op()).await
    }

    // ---- API ------------------------------------------------------------
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
