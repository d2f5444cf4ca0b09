//! Registry authentication: `WWW-Authenticate` challenges, credentials,
//! bearer tokens and their cache.
//!
//! Secrets live only in [`Creds`] and [`Token`], whose `Debug` output is
//! redacted, and in request headers marked sensitive.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderValue, AUTHORIZATION};

use crate::endpoint::safe_url;
use crate::Error;

/// The shortest token lifetime assumed (distribution's token spec default).
const MIN_TOKEN_LIFETIME: u64 = 60;
/// Largest token body read.
const TOKEN_BODY_LIMIT: usize = 1024 * 1024;

/// A challenge the client knows how to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm="…"`: resend with the user name and password.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`: get a token from `realm`.
    Bearer {
        /// Token service URL.
        realm: String,
        /// `service` parameter to pass on.
        service: Option<String>,
        /// Scope(s) the registry asked for (space-separated in the header).
        scope: Option<String>,
    },
}

/// One parsed challenge: scheme (lowercase) and its parameters (keys lowercase).
type RawChallenge = (String, Vec<(String, String)>);

/// Parses a `WWW-Authenticate` value into its challenges (RFC 7235:
/// `scheme param=value, param="quoted, with commas", …`, challenges
/// separated by commas).
pub(crate) fn parse_www_authenticate(header: &str) -> Vec<RawChallenge> {
    let c: Vec<char> = header.chars().collect();
    let n = c.len();
    let mut i = 0;
    let mut out: Vec<RawChallenge> = Vec::new();
    let is_tchar = |ch: char| !ch.is_whitespace() && ch != ',' && ch != '=' && ch != '"';
    let skip_ws = |i: &mut usize| {
        while *i < n && c[*i].is_whitespace() {
            *i += 1;
        }
    };
    let read_token = |i: &mut usize| -> String {
        let start = *i;
        while *i < n && is_tchar(c[*i]) {
            *i += 1;
        }
        c[start..*i].iter().collect()
    };
    loop {
        while i < n && (c[i].is_whitespace() || c[i] == ',') {
            i += 1;
        }
        if i >= n {
            break;
        }
        let scheme = read_token(&mut i);
        if scheme.is_empty() {
            // Stray character: skip it.
            i += 1;
            continue;
        }
        let mut params = Vec::new();
        loop {
            skip_ws(&mut i);
            let save = i;
            let key = read_token(&mut i);
            skip_ws(&mut i);
            if key.is_empty() || i >= n || c[i] != '=' {
                // Not `key=`: the next challenge's scheme (or a token68,
                // which no scheme handled here uses). The outer loop takes it.
                i = save;
                break;
            }
            i += 1; // '='
            skip_ws(&mut i);
            let mut value = String::new();
            if i < n && c[i] == '"' {
                i += 1;
                while i < n && c[i] != '"' {
                    if c[i] == '\\' && i + 1 < n {
                        i += 1;
                    }
                    value.push(c[i]);
                    i += 1;
                }
                i += 1; // closing quote (or past the end)
            } else {
                while i < n && c[i] != ',' && !c[i].is_whitespace() {
                    value.push(c[i]);
                    i += 1;
                }
            }
            params.push((key.to_ascii_lowercase(), value));
            skip_ws(&mut i);
            if i < n && c[i] == ',' {
                i += 1;
                // A comma followed by `token` without `=` starts the next challenge.
                let mut j = i;
                while j < n && c[j].is_whitespace() {
                    j += 1;
                }
                let mut k = j;
                while k < n && is_tchar(c[k]) {
                    k += 1;
                }
                let mut m = k;
                while m < n && c[m].is_whitespace() {
                    m += 1;
                }
                if k > j && (m >= n || c[m] != '=') {
                    break;
                }
            }
            // Without a comma, be lenient: a following `key=` still belongs here.
            if i >= n {
                break;
            }
        }
        out.push((scheme.to_ascii_lowercase(), params));
    }
    out
}

/// The challenge to answer among all `WWW-Authenticate` values: Bearer before Basic.
pub(crate) fn pick_challenge<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for v in values {
        for (scheme, params) in parse_www_authenticate(v) {
            let get = |k: &str| {
                params
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
            };
            match scheme.as_str() {
                "bearer" => {
                    if let Some(realm) = get("realm") {
                        return Some(Challenge::Bearer {
                            realm,
                            service: get("service"),
                            scope: get("scope"),
                        });
                    }
                }
                "basic" => basic = true,
                _ => {}
            }
        }
    }
    basic.then_some(Challenge::Basic)
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Creds {
    /// User name and password (or personal access token).
    Basic {
        /// User name (not secret; appears in messages).
        username: String,
        /// Password. Never printed.
        password: String,
    },
    /// An OAuth refresh token (docker config `identitytoken`, or a helper's
    /// `<token>` user name).
    IdentityToken(String),
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Creds::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Creds::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

impl Creds {
    /// From a user name and secret, following docker's convention that the
    /// user name `<token>` marks an identity token.
    pub(crate) fn from_user_secret(username: String, secret: String) -> Creds {
        if username == "<token>" {
            Creds::IdentityToken(secret)
        } else {
            Creds::Basic {
                username,
                password: secret,
            }
        }
    }

    /// `Authorization: Basic …`, for user name + password credentials.
    pub(crate) fn basic_header(&self) -> Option<HeaderValue> {
        match self {
            Creds::Basic { username, password } => {
                let raw = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                sensitive(&format!("Basic {raw}"))
            }
            Creds::IdentityToken(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Creds::Basic { username, .. } => format!("the credentials of user `{username}`"),
            Creds::IdentityToken(_) => "the identity token".to_string(),
        }
    }
}

impl From<&crate::Credentials> for Creds {
    fn from(c: &crate::Credentials) -> Creds {
        Creds::from_user_secret(c.username.clone(), c.password.clone())
    }
}

/// A header value marked sensitive (hidden from `Debug` of requests).
fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// A bearer token and when to stop using it.
#[derive(Clone)]
pub(crate) struct Token {
    value: String,
    expires: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(<redacted>, expires {:?})", self.expires)
    }
}

impl Token {
    /// `Authorization: Bearer …`.
    pub(crate) fn header(&self) -> Option<HeaderValue> {
        sensitive(&format!("Bearer {}", self.value))
    }
}

/// Challenges seen per registry authority, tokens per (authority, scopes),
/// credentials per host.
#[derive(Default)]
pub(crate) struct AuthCache {
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<HashMap<(String, String), Token>>,
    creds: tokio::sync::Mutex<HashMap<String, Option<Creds>>>,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthCache { .. }")
    }
}

fn scope_key(scopes: &[String]) -> String {
    scopes.join(" ")
}

impl AuthCache {
    /// The challenge last seen from `authority` (without its scope).
    pub(crate) fn challenge(&self, authority: &str) -> Option<Challenge> {
        lock(&self.challenges).get(authority).cloned()
    }

    /// Remembers the challenge `authority` answered with.
    pub(crate) fn set_challenge(&self, authority: &str, challenge: Challenge) {
        let stored = match challenge {
            Challenge::Bearer { realm, service, .. } => Challenge::Bearer {
                realm,
                service,
                scope: None,
            },
            other => other,
        };
        lock(&self.challenges).insert(authority.to_string(), stored);
    }

    /// A token still valid for exactly these scopes.
    pub(crate) fn token(&self, authority: &str, scopes: &[String]) -> Option<Token> {
        let mut map = lock(&self.tokens);
        let key = (authority.to_string(), scope_key(scopes));
        match map.get(&key) {
            Some(t) if t.expires > Instant::now() => Some(t.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Caches a token for these scopes.
    pub(crate) fn set_token(&self, authority: &str, scopes: &[String], token: Token) {
        lock(&self.tokens).insert((authority.to_string(), scope_key(scopes)), token);
    }

    /// Forgets the token for these scopes (the registry refused it).
    pub(crate) fn drop_token(&self, authority: &str, scopes: &[String]) {
        lock(&self.tokens).remove(&(authority.to_string(), scope_key(scopes)));
    }

    /// Credentials for `host`, looked up once with `lookup` and then cached
    /// (a failed lookup is not cached).
    pub(crate) async fn creds<F, Fut>(&self, host: &str, lookup: F) -> Result<Option<Creds>, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Creds>, Error>>,
    {
        let mut map = self.creds.lock().await;
        if let Some(c) = map.get(host) {
            return Ok(c.clone());
        }
        let c = lookup().await?;
        map.insert(host.to_string(), c.clone());
        Ok(c)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Asks the token service `realm` for a token covering `scopes`.
///
/// Transport failures and 5xx/429 answers come back as [`Error::Transport`] /
/// [`Error::Http`] (so they can be retried); a refusal as [`Error::Auth`].
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    creds: Option<&Creds>,
    timeout: Duration,
) -> Result<Token, Error> {
    let mut url = url::Url::parse(realm).map_err(|e| Error::Auth {
        registry: realm.to_string(),
        reason: format!("the token service URL is invalid: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Auth {
            registry: realm.to_string(),
            reason: "the token service URL must be http or https".to_string(),
        });
    }
    let shown = safe_url(&url);
    let request = match creds {
        Some(Creds::IdentityToken(refresh)) => {
            // OAuth2 refresh-token grant, as docker does for identity tokens.
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("client_id", "ferry");
            if let Some(s) = service {
                form.append_pair("service", s);
            }
            if !scopes.is_empty() {
                form.append_pair("scope", &scopes.join(" "));
            }
            form.append_pair("refresh_token", refresh);
            http.post(url.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form.finish())
        }
        _ => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scopes {
                    q.append_pair("scope", s);
                }
            }
            let mut rb = http.get(url.clone());
            if let Some(h) = creds.and_then(Creds::basic_header) {
                rb = rb.header(AUTHORIZATION, h);
            }
            rb
        }
    };
    let method = if matches!(creds, Some(Creds::IdentityToken(_))) {
        "POST"
    } else {
        "GET"
    };
    let resp = request
        .timeout(timeout)
        .send()
        .await
        .map_err(|source| Error::Transport {
            method: method.to_string(),
            url: shown.clone(),
            source: source.without_url(),
        })?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::retry::parse_retry_after(v, std::time::SystemTime::now()));
    let body = crate::response::read_capped(resp, TOKEN_BODY_LIMIT, method, &shown).await?;
    if !(200..300).contains(&status) {
        let (code, message) = crate::response::parse_error_body(&body);
        if crate::retry::is_retryable_status(status) {
            return Err(Error::Http {
                method: method.to_string(),
                url: shown,
                status,
                code,
                message,
                retry_after,
            });
        }
        let who = creds.map_or_else(|| "anonymous access".to_string(), Creds::describe);
        let mut reason = format!("the token service refused {who} with status {status}");
        if !message.is_empty() {
            reason.push_str(&format!(": {message}"));
        }
        return Err(Error::Auth {
            registry: shown,
            reason,
        });
    }
    parse_token_response(&body).map_err(|reason| Error::Auth {
        registry: shown,
        reason,
    })
}

/// Reads `{"token"|"access_token", "expires_in"}`.
pub(crate) fn parse_token_response(body: &[u8]) -> Result<Token, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the token service answered invalid JSON ({e})"))?;
    let token = ["token", "access_token"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(|t| t.as_str()))
        .find(|t| !t.is_empty())
        .ok_or_else(|| "the token service answered without a token".to_string())?;
    let expires_in = v
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .unwrap_or(MIN_TOKEN_LIFETIME)
        .max(MIN_TOKEN_LIFETIME);
    // Stop using the token a little before it expires.
    let margin = (expires_in / 10).min(30);
    Ok(Token {
        value: token.to_string(),
        expires: Instant::now() + Duration::from_secs(expires_in - margin),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parses_a_bearer_challenge_whose_scope_contains_commas() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#;
        assert_eq!(
            parse_www_authenticate(h),
            vec![(
                "bearer".to_string(),
                params(&[
                    ("realm", "https://auth.docker.io/token"),
                    ("service", "registry.docker.io"),
                    ("scope", "repository:samalba/my-app:pull,push"),
                ])
            )]
        );
        assert_eq!(
            pick_challenge([h].into_iter()),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            })
        );
    }

    #[test]
    fn parses_basic_and_harbor_challenges() {
        assert_eq!(
            pick_challenge([r#"Basic realm="Registry Realm""#].into_iter()),
            Some(Challenge::Basic)
        );
        assert_eq!(
            pick_challenge(
                [r#"Bearer realm="https://harbor.corp/service/token",service="harbor-registry""#]
                    .into_iter()
            ),
            Some(Challenge::Bearer {
                realm: "https://harbor.corp/service/token".into(),
                service: Some("harbor-registry".into()),
                scope: None,
            })
        );
    }

    #[test]
    fn parses_unquoted_values_spaces_escapes_and_case() {
        let h = r#"BEARER Realm = "https://a/t\"x" , service=reg , scope="a b""#;
        assert_eq!(
            parse_www_authenticate(h),
            vec![(
                "bearer".to_string(),
                params(&[
                    ("realm", "https://a/t\"x"),
                    ("service", "reg"),
                    ("scope", "a b")
                ])
            )]
        );
    }

    #[test]
    fn several_challenges_in_one_header_prefer_bearer() {
        let h = r#"Basic realm="r", Bearer realm="https://auth/t",service="s""#;
        let all = parse_www_authenticate(h);
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[0], ("basic".to_string(), params(&[("realm", "r")])));
        assert_eq!(
            all[1],
            (
                "bearer".to_string(),
                params(&[("realm", "https://auth/t"), ("service", "s")])
            )
        );
        assert!(matches!(
            pick_challenge([h].into_iter()),
            Some(Challenge::Bearer { .. })
        ));
    }

    #[test]
    fn challenges_without_params_and_unknown_schemes() {
        assert_eq!(
            parse_www_authenticate("Negotiate, Basic"),
            vec![
                ("negotiate".to_string(), vec![]),
                ("basic".to_string(), vec![])
            ]
        );
        assert_eq!(pick_challenge(["Negotiate"].into_iter()), None);
        assert_eq!(pick_challenge([""].into_iter()), None);
        // A bearer challenge without a realm cannot be answered.
        assert_eq!(pick_challenge([r#"Bearer service="x""#].into_iter()), None);
    }

    #[test]
    fn token_response_accepts_token_or_access_token_and_defaults_expiry() {
        let t = parse_token_response(br#"{"token":"abc"}"#).unwrap();
        assert_eq!(t.value, "abc");
        let left = t.expires - Instant::now();
        assert!(left > Duration::from_secs(50) && left <= Duration::from_secs(60));
        let t = parse_token_response(br#"{"access_token":"xyz","expires_in":300}"#).unwrap();
        assert_eq!(t.value, "xyz");
        assert!(t.expires - Instant::now() > Duration::from_secs(260));
        assert!(parse_token_response(br#"{"expires_in":300}"#).is_err());
        assert!(parse_token_response(b"<html>").is_err());
    }

    #[test]
    fn debug_of_secrets_is_redacted() {
        let c = Creds::Basic {
            username: "alice".into(),
            password: "hunter2".into(),
        };
        let d = format!("{c:?}");
        assert!(d.contains("alice") && !d.contains("hunter2"), "{d}");
        let c = Creds::IdentityToken("tok-secret".into());
        assert!(!format!("{c:?}").contains("tok-secret"));
        let t = parse_token_response(br#"{"token":"bearer-secret"}"#).unwrap();
        assert!(!format!("{t:?}").contains("bearer-secret"));
        let h = Creds::Basic {
            username: "alice".into(),
            password: "hunter2".into(),
        }
        .basic_header()
        .unwrap();
        assert!(h.is_sensitive());
        assert!(!format!("{h:?}").contains("aHVudGVyMg"));
    }

    #[test]
    fn token_user_name_marks_an_identity_token() {
        assert_eq!(
            Creds::from_user_secret("<token>".into(), "r".into()),
            Creds::IdentityToken("r".into())
        );
    }

    #[test]
    fn cached_tokens_are_per_authority_and_scope_set() {
        let cache = AuthCache::default();
        let scopes = vec!["repository:a:pull".to_string()];
        cache.set_token(
            "h",
            &scopes,
            parse_token_response(br#"{"token":"t"}"#).unwrap(),
        );
        assert!(cache.token("h", &scopes).is_some());
        assert!(cache.token("other", &scopes).is_none());
        assert!(cache
            .token("h", &["repository:a:pull,push".to_string()])
            .is_none());
        cache.drop_token("h", &scopes);
        assert!(cache.token("h", &scopes).is_none());
        let expired = Token {
            value: "old".into(),
            expires: Instant::now() - Duration::from_secs(1),
        };
        cache.set_token("h", &scopes, expired);
        assert!(cache.token("h", &scopes).is_none());
    }
}
