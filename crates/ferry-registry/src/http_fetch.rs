//! Plain HTTP(S) fetches of files: chart repositories, Falco drivers,
//! OpenSearch plugins, the falcoctl index and `files:` entries.
//!
//! The same per-host TLS settings, retry policy and concurrency limit as the
//! registry API apply (a host's settings are looked up by `host[:port]` of the
//! URL); URL mirrors ([`crate::ClientConfig::url_mirrors`]) rewrite a URL
//! prefix to a proxy. Bodies stream to disk while they are hashed.

use std::path::Path;

use bytes::Bytes;
use ferry_bundle::digest::{Digest, Hasher};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncWriteExt, BufWriter};
use url::Url;

use crate::endpoint::safe_url;
use crate::part_file::PartFile;
use crate::response::{read_capped, read_prefix, retry_after_of};
use crate::{Client, Credentials, Error};

/// A file fetched to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// sha256 of the bytes.
    pub digest: Digest,
    /// Their size.
    pub size: u64,
}

fn authority(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

/// Basic-auth credentials bound to the origin (scheme, host, port) they were
/// given for. They are sent with a request only when its URL, after URL
/// mirrors, has exactly that origin (the rule browsers and reqwest's redirect
/// policy apply): never to another port of the same host, never over plain
/// HTTP when they were given for HTTPS.
#[derive(Clone)]
pub struct OriginCredentials {
    given_for: Url,
    credentials: Credentials,
}

impl std::fmt::Debug for OriginCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OriginCredentials {{ origin: {}, credentials: {:?} }}",
            self.given_for.origin().ascii_serialization(),
            self.credentials
        )
    }
}

impl OriginCredentials {
    /// `credentials` for the origin of `url` (path and query are ignored).
    pub fn new(url: &Url, credentials: Credentials) -> OriginCredentials {
        OriginCredentials {
            given_for: url.clone(),
            credentials,
        }
    }

    /// The origin these credentials belong to, as `scheme://host[:port]`.
    pub fn origin(&self) -> String {
        self.given_for.origin().ascii_serialization()
    }

    /// The credentials, if `requested` (a URL as actually requested, after
    /// URL mirrors) has the same origin as `given_for` after the same
    /// mirrors. An opaque origin (no host) never matches.
    fn for_request(&self, client: &Client, requested: &Url) -> Option<&Credentials> {
        let scope = client.mirrored_url(&self.given_for).origin();
        let origin = requested.origin();
        (origin.is_tuple() && origin == scope).then_some(&self.credentials)
    }

    /// Whether `url` has exactly the origin these credentials were given
    /// for (no URL mirrors: the [`crate::transport::Transport`]'s rule). An
    /// opaque origin never matches.
    pub fn matches(&self, url: &Url) -> bool {
        let origin = url.origin();
        origin.is_tuple() && origin == self.given_for.origin()
    }

    /// The credentials (for a caller that must show the user name).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// `Authorization: Basic …`, marked sensitive (never logged by the
    /// HTTP stack).
    pub(crate) fn basic_header(&self) -> HeaderValue {
        use base64::Engine;
        let raw = format!(
            "{}:{}",
            self.credentials.username, self.credentials.password
        );
        let token = base64::engine::general_purpose::STANDARD.encode(raw);
        // Base64 is always a valid header value.
        let mut v = HeaderValue::from_str(&format!("Basic {token}"))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        v.set_sensitive(true);
        v
    }

    /// What must never appear in a message: the password, `user:password`
    /// and its Basic token (empty strings left out).
    pub(crate) fn secrets(&self) -> Vec<String> {
        use base64::Engine;
        let c = &self.credentials;
        if c.password.is_empty() {
            return Vec::new();
        }
        let pair = format!("{}:{}", c.username, c.password);
        let token = base64::engine::general_purpose::STANDARD.encode(&pair);
        vec![token, pair, c.password.clone()]
    }
}

impl Client {
    /// The URL actually requested for `url` (after URL mirrors).
    pub fn mirrored_url(&self, url: &Url) -> Url {
        let s = url.as_str();
        let best = self
            .inner
            .config
            .url_mirrors
            .iter()
            .filter(|(prefix, _)| {
                let p = prefix.trim_end_matches('/');
                s == p || s.starts_with(&format!("{p}/"))
            })
            .max_by_key(|(prefix, _)| prefix.len());
        match best {
            Some((prefix, to)) => {
                let rest = &s[prefix.trim_end_matches('/').len()..];
                let joined = format!("{}{}", to.as_str().trim_end_matches('/'), rest);
                Url::parse(&joined).unwrap_or_else(|_| url.clone())
            }
            None => url.clone(),
        }
    }

    fn http_for(&self, url: &Url) -> &reqwest::Client {
        self.inner
            .host_http
            .get(&authority(url))
            .unwrap_or(&self.inner.default_http)
    }

    async fn get_once(
        &self,
        url: &Url,
        auth: Option<&OriginCredentials>,
    ) -> Result<reqwest::Response, Error> {
        let shown = safe_url(url);
        let mut rb = self
            .http_for(url)
            .request(Method::GET, url.clone())
            .header(reqwest::header::ACCEPT_ENCODING, "identity");
        if let Some(a) = auth.filter(|a| a.for_request(self, url).is_some()) {
            rb = rb.header(AUTHORIZATION, a.basic_header());
        }
        let timeout = self.inner.config.timeout;
        let _permit = self.inner.jobs.acquire().await.ok();
        let resp = match tokio::time::timeout(timeout, rb.send()).await {
            Ok(r) => r.map_err(|source| Error::Transport {
                method: "GET".into(),
                url: shown.clone(),
                source: source.without_url(),
            })?,
            Err(_) => {
                return Err(Error::Timeout {
                    method: "GET".into(),
                    url: shown,
                    after: timeout,
                })
            }
        };
        if resp.status() != StatusCode::OK {
            let status = resp.status().as_u16();
            let retry_after = retry_after_of(&resp);
            let body = read_prefix(resp, 4096).await;
            let message = String::from_utf8_lossy(&body)
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            return Err(Error::Http {
                method: "GET".into(),
                url: shown,
                status,
                code: None,
                message,
                retry_after,
            });
        }
        Ok(resp)
    }

    /// GETs a small document (an `index.yaml`, a `.sha512`) of at most
    /// `limit` bytes, with retries. A 404 is an [`Error::Http`] for which
    /// [`Error::is_not_found`] holds.
    pub async fn fetch_bytes(
        &self,
        url: &Url,
        auth: Option<&OriginCredentials>,
        limit: usize,
    ) -> Result<Bytes, Error> {
        let url = self.mirrored_url(url);
        let shown = safe_url(&url);
        let (url, shown) = (&url, &shown);
        self.retry_op(|| async move {
            let resp = self.get_once(url, auth).await?;
            read_capped(resp, limit, "GET", shown)
                .await
                .map(Bytes::from)
        })
        .await
    }

    /// GETs `url` into `dest` (written to a temporary name beside it, renamed
    /// when complete), hashing while the bytes stream. With `expected`, a
    /// different sha256 is an [`Error::DigestMismatch`] and nothing is left at
    /// `dest`. Retries start the download over.
    pub async fn fetch_to_file(
        &self,
        url: &Url,
        auth: Option<&OriginCredentials>,
        dest: &Path,
        expected: Option<&Digest>,
        limit: u64,
    ) -> Result<Fetched, Error> {
        let url = self.mirrored_url(url);
        let shown = safe_url(&url);
        let (url, shown) = (&url, &shown);
        self.retry_op(|| self.fetch_attempt(url, shown, auth, dest, expected, limit))
            .await
    }

    async fn fetch_attempt(
        &self,
        url: &Url,
        shown: &str,
        auth: Option<&OriginCredentials>,
        dest: &Path,
        expected: Option<&Digest>,
        limit: u64,
    ) -> Result<Fetched, Error> {
        let mut resp = self.get_once(url, auth).await?;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(Error::TooLarge {
                url: shown.to_string(),
                limit,
            });
        }
        let (file, guard) = PartFile::create(dest).await?;
        let part = guard.path.clone();
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Hasher::new();
        let mut size = 0u64;
        let timeout = self.inner.config.timeout;
        loop {
            let chunk = match tokio::time::timeout(timeout, resp.chunk()).await {
                Ok(r) => r.map_err(|source| Error::Transport {
                    method: "GET".into(),
                    url: shown.to_string(),
                    source: source.without_url(),
                })?,
                Err(_) => {
                    return Err(Error::Timeout {
                        method: "GET".into(),
                        url: shown.to_string(),
                        after: timeout,
                    })
                }
            };
            let Some(c) = chunk else { break };
            size += c.len() as u64;
            if size > limit {
                return Err(Error::TooLarge {
                    url: shown.to_string(),
                    limit,
                });
            }
            hasher.update(&c);
            out.write_all(&c)
                .await
                .map_err(|e| Error::io("write", &part, e))?;
        }
        let digest = hasher.finish();
        if let Some(want) = expected {
            if &digest != want {
                return Err(Error::DigestMismatch {
                    url: shown.to_string(),
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        guard.persist(out, dest).await?;
        Ok(Fetched { digest, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientConfig;

    fn creds() -> Credentials {
        Credentials {
            username: "ci".into(),
            password: "pw".into(),
        }
    }

    #[test]
    fn credentials_go_only_to_their_exact_origin() {
        let client = Client::new(ClientConfig::default()).unwrap();
        let given = Url::parse("https://charts.example:8443/repo/").unwrap();
        let c = OriginCredentials::new(&given, creds());
        let sent = |u: &str| c.for_request(&client, &Url::parse(u).unwrap()).is_some();
        assert!(sent("https://charts.example:8443/repo/app-1.0.0.tgz"));
        assert!(sent("https://charts.example:8443/elsewhere/x.tgz"));
        for other in [
            "https://charts.example:8444/repo/app.tgz", // another port
            "https://charts.example/repo/app.tgz",      // default port
            "http://charts.example:8443/repo/app.tgz",  // downgrade
            "https://other.example:8443/repo/app.tgz",  // another host
            "https://charts.example.evil:8443/repo/a.tgz", // suffix
            "https://ci:pw@evil.example:8443/",         // userinfo trick
        ] {
            assert!(!sent(other), "{other} must not get the credentials");
        }
        // The default port is the same origin written either way.
        let d = OriginCredentials::new(&Url::parse("https://h.example/").unwrap(), creds());
        let u = Url::parse("https://h.example:443/x").unwrap();
        assert!(d.for_request(&client, &u).is_some());
        assert!(!format!("{c:?}").contains("pw\""), "{c:?}");
    }

    #[test]
    fn url_mirrors_rewrite_the_longest_prefix() {
        let cfg = ClientConfig {
            url_mirrors: vec![
                (
                    "https://download.falco.org".into(),
                    Url::parse("http://127.0.0.1:8080/falco").unwrap(),
                ),
                (
                    "https://download.falco.org/driver".into(),
                    Url::parse("http://127.0.0.1:8080/drivers/").unwrap(),
                ),
            ],
            ..ClientConfig::default()
        };
        let c = Client::new(cfg).unwrap();
        let m = |s: &str| c.mirrored_url(&Url::parse(s).unwrap()).to_string();
        assert_eq!(
            m("https://download.falco.org/driver/7.0.0%2Bdriver/x86_64/f.ko"),
            "http://127.0.0.1:8080/drivers/7.0.0%2Bdriver/x86_64/f.ko"
        );
        assert_eq!(
            m("https://download.falco.org/other"),
            "http://127.0.0.1:8080/falco/other"
        );
        assert_eq!(
            m("https://download.falco.orgx/a"),
            "https://download.falco.orgx/a"
        );
    }
}
