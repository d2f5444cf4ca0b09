//! Where requests for a registry host go: scheme, authority, mirror prefix.

use std::net::{IpAddr, Ipv4Addr};

use url::Url;

use crate::{Error, HostConfig};

/// The API endpoint of Docker Hub, which references name `docker.io`.
const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// The resolved address of one registry host.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `scheme://authority/`, no path, no user info.
    pub base: Url,
    /// Mirror path put before the repository path (`dockerhub-proxy/`), or empty.
    pub prefix: String,
    /// `host[:port]` of `base`: the key of the auth caches.
    pub authority: String,
    /// The name credentials are looked up under (`docker.io`, the mirror's authority, …).
    pub cred_host: String,
    /// HTTPS was chosen by default for a loopback host: if that host turns
    /// out to speak plain HTTP, plain HTTP is used instead (as docker does).
    pub may_fall_back: bool,
}

/// Whether `host[:port]` names the local machine: `localhost` (any case),
/// `127.0.0.0/8`, `::1` (bare or bracketed, with or without a port) and the
/// IPv4-mapped `::ffff:127.x.y.z`. The one loopback policy: the client's
/// HTTPS-then-plain fallback and the emitted client configuration use it.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if host.matches(':').count() > 1 {
        // A bare IPv6 address without brackets or port.
        host
    } else {
        host.split(':').next().unwrap_or("")
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v| Ipv4Addr::is_loopback(&v))
        }
        Err(_) => false,
    }
}

/// Whether `host` is one of Docker Hub's names.
pub(crate) fn is_docker_hub(host: &str) -> bool {
    matches!(
        host.to_ascii_lowercase().as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// `host[:port]` of a URL, as used for auth caches and same-origin checks.
pub(crate) fn authority_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// A URL fit for messages and logs: no user info, signed query values masked.
pub(crate) fn safe_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let sensitive = |k: &str| {
        let lower = k.to_ascii_lowercase();
        matches!(
            lower.as_str(),
            "_state" | "signature" | "sig" | "token" | "access_token" | "code" | "se" | "st"
        ) || lower.starts_with("x-amz-")
            || lower.starts_with("x-goog-")
    };
    if u.query_pairs().any(|(k, _)| sensitive(&k)) {
        // Rebuilt only for display; requests use the URL as given.
        let q: Vec<String> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if sensitive(&k) { "...".into() } else { v };
                format!("{k}={v}")
            })
            .collect();
        u.set_query(Some(&q.join("&")));
    }
    u.to_string()
}

impl Endpoint {
    /// Resolves `host[:port]` with its settings.
    pub(crate) fn resolve(host: &str, cfg: &HostConfig) -> Result<Endpoint, Error> {
        let invalid = |reason: String| Error::InvalidUrl {
            host: host.to_string(),
            reason,
        };
        if let Some(mirror) = &cfg.mirror {
            if !matches!(mirror.scheme(), "http" | "https") {
                return Err(invalid(format!(
                    "the mirror URL must be http or https, not `{}`",
                    mirror.scheme()
                )));
            }
            let mut base = mirror.clone();
            let _ = base.set_username("");
            let _ = base.set_password(None);
            base.set_query(None);
            base.set_fragment(None);
            let path = mirror.path().trim_matches('/').to_string();
            base.set_path("/");
            let prefix = if path.is_empty() {
                String::new()
            } else {
                format!("{path}/")
            };
            let authority = authority_of(&base);
            if authority.is_empty() {
                return Err(invalid("the mirror URL has no host".to_string()));
            }
            return Ok(Endpoint {
                base,
                prefix,
                cred_host: authority.clone(),
                authority,
                may_fall_back: false,
            });
        }
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return Err(invalid("expected `host[:port]`".to_string()));
        }
        let target = if is_docker_hub(host) {
            DOCKER_HUB_ENDPOINT
        } else {
            host
        };
        let scheme = if cfg.plain_http { "http" } else { "https" };
        let may_fall_back = !cfg.plain_http && !cfg.https && is_loopback(host);
        let base =
            Url::parse(&format!("{scheme}://{target}/")).map_err(|e| invalid(e.to_string()))?;
        let cred_host = if is_docker_hub(host) {
            "docker.io".to_string()
        } else {
            host.to_string()
        };
        Ok(Endpoint {
            authority: authority_of(&base),
            base,
            prefix: String::new(),
            cred_host,
            may_fall_back,
        })
    }

    /// This endpoint over plain HTTP (after a loopback host answered the
    /// HTTPS attempt in plain HTTP).
    pub(crate) fn plain(mut self) -> Endpoint {
        let _ = self.base.set_scheme("http");
        self.may_fall_back = false;
        self
    }

    /// `<base>/v2/`.
    pub(crate) fn v2(&self) -> Url {
        let mut u = self.base.clone();
        u.set_path("/v2/");
        u
    }

    /// The repository name as the registry sees it (mirror prefix included).
    pub(crate) fn name(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path)
    }

    /// `<base>/v2/<prefix><path>/<tail>`.
    pub(crate) fn repo_url(&self, path: &str, tail: &str) -> Url {
        let mut u = self.base.clone();
        u.set_path(&format!("/v2/{}/{}", self.name(path), tail));
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, cfg: HostConfig) -> Endpoint {
        Endpoint::resolve(host, &cfg).unwrap()
    }

    #[test]
    fn docker_io_goes_to_registry_1_over_https() {
        let e = ep("docker.io", HostConfig::default());
        assert_eq!(
            e.repo_url("library/nginx", "manifests/1.27").as_str(),
            "https://registry-1.docker.io/v2/library/nginx/manifests/1.27"
        );
        assert_eq!(e.cred_host, "docker.io");
        assert_eq!(e.authority, "registry-1.docker.io");
    }

    #[test]
    fn other_hosts_use_https_with_their_port() {
        let e = ep("registry.corp:8443", HostConfig::default());
        assert_eq!(e.v2().as_str(), "https://registry.corp:8443/v2/");
        assert_eq!(e.authority, "registry.corp:8443");
        assert_eq!(e.cred_host, "registry.corp:8443");
    }

    #[test]
    fn the_loopback_policy_knows_every_loopback_spelling() {
        for h in [
            "localhost",
            "LocalHost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "[::1]",
            "::1",
            "0:0:0:0:0:0:0:1",
            "::ffff:127.0.0.1",
            "[::ffff:127.9.8.7]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry.internal:5000",
            "10.0.0.1",
            "[fd00::1]:443",
            "::ffff:10.0.0.1",
            "[::ffff:10.0.0.1]:5000",
            "localhost.corp",
            "128.0.0.1",
            "",
            "[",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn loopback_hosts_use_plain_http_as_docker_does() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
            // HTTPS first; plain HTTP only once the host answers in plain HTTP.
            let e = ep(h, HostConfig::default());
            assert_eq!(e.base.scheme(), "https", "{h}");
            assert!(e.may_fall_back, "{h}");
            assert_eq!(e.plain().base.scheme(), "http", "{h}");
            // TLS asked for: no fallback, loopback included.
            let cfg = HostConfig {
                https: true,
                ..HostConfig::default()
            };
            let e = ep(h, cfg);
            assert_eq!(e.base.scheme(), "https", "{h}");
            assert!(!e.may_fall_back, "{h}");
        }
        for h in [
            "registry.corp",
            "10.0.0.1:5000",
            "localhost.corp",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
        assert_eq!(
            ep("[::1]:5000", HostConfig::default())
                .plain()
                .v2()
                .as_str(),
            "http://[::1]:5000/v2/"
        );
        assert!(!ep("registry.corp", HostConfig::default()).may_fall_back);
    }

    #[test]
    fn plain_http_setting_switches_any_host_to_http() {
        let cfg = HostConfig {
            plain_http: true,
            ..HostConfig::default()
        };
        assert_eq!(
            ep("registry.corp:5000", cfg).v2().as_str(),
            "http://registry.corp:5000/v2/"
        );
    }

    #[test]
    fn mirror_path_goes_before_the_repository_path() {
        let cfg = HostConfig {
            mirror: Some(Url::parse("https://harbor.corp/dockerhub-proxy/").unwrap()),
            ..HostConfig::default()
        };
        let e = ep("docker.io", cfg);
        assert_eq!(
            e.repo_url("library/nginx", "manifests/1.27").as_str(),
            "https://harbor.corp/v2/dockerhub-proxy/library/nginx/manifests/1.27"
        );
        assert_eq!(e.v2().as_str(), "https://harbor.corp/v2/");
        assert_eq!(e.name("library/nginx"), "dockerhub-proxy/library/nginx");
        assert_eq!(e.cred_host, "harbor.corp");
    }

    #[test]
    fn mirror_without_path_keeps_scheme_and_port_and_drops_user_info() {
        let cfg = HostConfig {
            mirror: Some(Url::parse("http://user:secret@mirror.local:5000").unwrap()),
            ..HostConfig::default()
        };
        let e = ep("ghcr.io", cfg);
        assert_eq!(
            e.repo_url("a/b", "blobs/uploads/").as_str(),
            "http://mirror.local:5000/v2/a/b/blobs/uploads/"
        );
        assert_eq!(e.authority, "mirror.local:5000");
        assert!(!e.base.as_str().contains("secret"));
    }

    #[test]
    fn safe_url_masks_signed_query_values_and_user_info() {
        let u = Url::parse(
            "https://u:pw@s3.example/blob?X-Amz-Signature=abc&X-Amz-Credential=k&n=1&_state=xyz",
        )
        .unwrap();
        let s = safe_url(&u);
        assert!(!s.contains("pw"), "{s}");
        assert!(
            !s.contains("abc") && !s.contains("xyz") && !s.contains("=k"),
            "{s}"
        );
        assert!(s.contains("n=1"), "{s}");
        let plain = Url::parse("http://r/v2/a/tags/list?last=b%26c&n=2").unwrap();
        assert_eq!(
            safe_url(&plain),
            plain.as_str(),
            "other queries are kept verbatim"
        );
    }

    #[test]
    fn hosts_with_paths_are_refused() {
        assert!(Endpoint::resolve("a/b", &HostConfig::default()).is_err());
        assert!(Endpoint::resolve("", &HostConfig::default()).is_err());
    }
}
