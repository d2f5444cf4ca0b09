//! Connections: which endpoint a host is reached at (plain HTTP or HTTPS, the loopback
//! TLS probe), and `ping`.

use std::time::Duration;

use reqwest::Method;

use super::request::{Req, Target};
use super::Client;
use crate::endpoint::Endpoint;
use crate::{Error, HostConfig, Repo};

/// How long a loopback host given without a scheme may take to complete a
/// TLS handshake before it is taken to speak plain HTTP. Real plain-HTTP
/// servers (distribution, nginx, hyper) refuse a TLS hello at once; this only
/// bounds a server that waits.
pub(super) const LOOPBACK_TLS_PROBE: Duration = Duration::from_secs(3);

/// Whether the connection was refused (nothing listens on the port).
pub(super) fn refused(e: &reqwest::Error) -> bool {
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

impl Client {
    pub(super) fn host_config(&self, host: &str) -> &HostConfig {
        self.inner
            .config
            .hosts
            .get(host)
            .unwrap_or(&self.inner.config.default_host)
    }

    pub(super) async fn target<'a>(&'a self, host: &'a str) -> Result<Target<'a>, Error> {
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
    pub(super) async fn speaks_plain_http(
        &self,
        host: &str,
        ep: &Endpoint,
        http: &reqwest::Client,
    ) -> bool {
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

    pub(super) fn plain_loopback_of(&self, host: &str) -> Option<bool> {
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
    pub(super) async fn repo_target<'a>(
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
}
