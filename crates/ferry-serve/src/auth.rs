//! HTTP Basic authentication against an htpasswd file of bcrypt entries
//! (`user:$2y$...`, as `htpasswd -B` writes them).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::ServeError;

/// The challenge sent with every 401.
pub const CHALLENGE: &str = "Basic realm=\"ferry\"";

/// Successful checks remembered (so a pull of many layers costs one bcrypt
/// run, not one per request); the set is cleared when it reaches this size.
const CACHE_MAX: usize = 1024;

/// The users of an htpasswd file.
pub struct Htpasswd {
    path: PathBuf,
    users: HashMap<String, String>,
    /// A real entry's hash, checked for unknown users so that an unknown
    /// name costs as much time as a wrong password.
    decoy: String,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("path", &self.path)
            .field("users", &self.users.len())
            .finish()
    }
}

impl Htpasswd {
    /// Reads `path`: one `user:hash` per line, blank lines and `#` comments
    /// ignored; every hash must be bcrypt (`$2a$`, `$2b$`, `$2x$`, `$2y$`).
    pub fn load(path: &Path) -> Result<Htpasswd, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Htpasswd, ServeError> {
        let bad = |line: usize, reason: &str| ServeError::Htpasswd {
            path: path.to_path_buf(),
            line,
            reason: reason.to_string(),
        };
        let mut users = HashMap::new();
        let mut decoy = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(bad(i + 1, "expected `user:hash`"));
            };
            if user.is_empty() {
                return Err(bad(i + 1, "empty user name"));
            }
            if !["$2a$", "$2b$", "$2x$", "$2y$"]
                .iter()
                .any(|p| hash.starts_with(p))
            {
                return Err(bad(
                    i + 1,
                    "only bcrypt entries are supported (create them with `htpasswd -B`)",
                ));
            }
            decoy.get_or_insert_with(|| hash.to_string());
            // The first entry for a user wins, as with Apache.
            users
                .entry(user.to_string())
                .or_insert_with(|| hash.to_string());
        }
        let Some(decoy) = decoy else {
            return Err(bad(0, "no entries"));
        };
        Ok(Htpasswd {
            path: path.to_path_buf(),
            users,
            decoy,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether an `Authorization` header carries valid Basic credentials.
    pub async fn check(&self, header: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return false;
        };
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(user.as_bytes());
            h.update([0]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        if self.verified.lock().is_ok_and(|v| v.contains(&key)) {
            return true;
        }
        let known = self.users.get(&user);
        let hash = known.unwrap_or(&self.decoy).clone();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        let ok = ok && known.is_some();
        if ok {
            if let Ok(mut v) = self.verified.lock() {
                if v.len() >= CACHE_MAX {
                    v.clear();
                }
                v.insert(key);
            }
        }
        ok
    }
}

/// `(user, password)` from `Basic base64(user:password)`.
fn basic_credentials(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Middleware: when an htpasswd file is configured, every request needs
/// valid Basic credentials; otherwise 401 with `WWW-Authenticate`.
pub async fn require(
    State(auth): State<Option<Arc<Htpasswd>>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(auth) = auth {
        if !auth.check(req.headers().get(AUTHORIZATION)).await {
            return unauthorized(req.uri().path());
        }
    }
    next.run(req).await
}

fn unauthorized(path: &str) -> Response {
    let registry = path == "/v2" || path.starts_with("/v2/");
    let mut resp = if registry {
        let body = json!({"errors": [{
            "code": "UNAUTHORIZED",
            "message": "authentication required",
            "detail": null,
        }]});
        (
            StatusCode::UNAUTHORIZED,
            [(CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            "401 unauthorized\n",
        )
            .into_response()
    };
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    if registry {
        resp.headers_mut().insert(
            crate::oci::API_VERSION_HEADER,
            HeaderValue::from_static("registry/2.0"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> HeaderValue {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        HeaderValue::from_str(&format!("Basic {v}")).unwrap()
    }

    #[tokio::test]
    async fn bcrypt_entries_check_users_and_passwords() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let text = format!(
            "# comment\n\nalice:{hash}\nbob:{}\n",
            bcrypt::hash("x", 4).unwrap()
        );
        let h = Htpasswd::parse(Path::new("htpasswd"), &text).unwrap();
        assert!(h.check(Some(&basic("alice", "s3cret"))).await);
        // Cached, still right.
        assert!(h.check(Some(&basic("alice", "s3cret"))).await);
        assert!(!h.check(Some(&basic("alice", "wrong"))).await);
        assert!(!h.check(Some(&basic("bob", "s3cret"))).await);
        assert!(!h.check(Some(&basic("carol", "s3cret"))).await);
        assert!(!h.check(None).await);
        assert!(!h.check(Some(&HeaderValue::from_static("Bearer abc"))).await);
    }

    #[test]
    fn non_bcrypt_entries_are_refused_naming_the_line() {
        let err = Htpasswd::parse(
            Path::new("/etc/ferry/htpasswd"),
            "ok:$2y$04$abcdefghijklmnopqrstuu5Fz1s0Jq8C0C0C0C0C0C0C0C0C0C0C\nmd5:$apr1$x$y\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`/etc/ferry/htpasswd` line 2"), "{err}");
        assert!(err.contains("bcrypt"), "{err}");
        let err = Htpasswd::parse(Path::new("h"), "\n# nothing\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no entries"), "{err}");
    }
}
