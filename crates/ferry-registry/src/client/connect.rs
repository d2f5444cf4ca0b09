//! Connections: the HTTP client of each host's settings (TLS, redirects),
//! which endpoint a host is reached at (plain HTTP or HTTPS, the loopback
//! TLS probe), and `ping`.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;

use super::request::{Req, Target};
use super::Client;
use crate::endpoint::Endpoint;
use crate::error::chain;
use crate::{ClientConfig, Error, HostConfig, Repo};

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

/// Redirects are followed (registries send blobs to storage, file servers
/// move things) up to 10 hops, but never from HTTPS down to plain HTTP.
/// reqwest drops `Authorization` whenever a hop changes host or port; with
/// downgrades refused, a credential never leaves TLS through a redirect.
pub(super) fn redirect_policy() -> reqwest::redirect::Policy {
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
pub(super) fn build_http(
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

#[cfg(test)]
mod tests {
    use super::*;

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
