//! Credentials from the docker config file (`~/.docker/config.json`).
//!
//! Order, per registry host: `credHelpers[host]`, then an `auths` entry that
//! holds credentials (`auth` = base64 `user:pass`, `username`/`password`,
//! `identitytoken`), then `credsStore`. Keys of `auths` may be a host or a URL
//! (`https://index.docker.io/v1/` is Docker Hub's); they are matched by host.
//! A helper is the program `docker-credential-<name>`, run as `get` with the
//! server on stdin; a missing helper is a warning, and the host is then
//! accessed anonymously.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::AsyncWriteExt;

use crate::auth::Creds;
use crate::endpoint::is_docker_hub;
use crate::Error;

/// The server name docker uses for Docker Hub in `auths` and with helpers.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";
/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// `host[:port]` of an `auths` / `credHelpers` key: scheme and path removed,
/// Docker Hub's names folded to `docker.io`.
fn normalize(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let k = k.split('/').next().unwrap_or("").to_ascii_lowercase();
    if is_docker_hub(&k) {
        "docker.io".to_string()
    } else {
        k
    }
}

/// What to do for one host according to the config.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    Helper(String),
    Inline(Creds),
    None,
}

/// Picks the credential source for `host` from the parsed config.
fn source_for(config: &serde_json::Value, host: &str, path: &Path) -> Result<Source, Error> {
    let want = normalize(host);
    if let Some(helpers) = config.get("credHelpers").and_then(|v| v.as_object()) {
        // An exact key first, then any key naming the same host.
        let found = helpers.get(host).or_else(|| {
            helpers
                .iter()
                .find(|(k, _)| normalize(k) == want)
                .map(|(_, v)| v)
        });
        if let Some(name) = found.and_then(|v| v.as_str()).filter(|s| !s.is_empty()) {
            return Ok(Source::Helper(name.to_string()));
        }
    }
    if let Some(auths) = config.get("auths").and_then(|v| v.as_object()) {
        let mut keys: Vec<&String> = auths.keys().filter(|k| normalize(k) == want).collect();
        // Prefer the key written exactly as the host, then the rest in order.
        keys.sort_by_key(|k| (k.as_str() != host, k.as_str()));
        for key in keys {
            if let Some(c) = inline_creds(&auths[key], key, path)? {
                return Ok(Source::Inline(c));
            }
        }
    }
    if let Some(store) = config
        .get("credsStore")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
    {
        return Ok(Source::Helper(store.to_string()));
    }
    Ok(Source::None)
}

/// Credentials written in an `auths` entry, if any.
fn inline_creds(entry: &serde_json::Value, key: &str, path: &Path) -> Result<Option<Creds>, Error> {
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if let Some(token) = field("identitytoken") {
        return Ok(Some(Creds::IdentityToken(token)));
    }
    if let Some(auth) = field("auth") {
        let bad = |what: &str| Error::DockerConfig {
            path: path.to_path_buf(),
            reason: format!("the `auth` value of `auths.{key}` {what}"),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("is not valid base64"))?;
        let text = String::from_utf8(raw).map_err(|_| bad("is not UTF-8 text"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| bad("is not `user:password` encoded in base64"))?;
        return Ok(Some(Creds::from_user_secret(
            user.to_string(),
            pass.to_string(),
        )));
    }
    if let (Some(user), Some(pass)) = (field("username"), field("password")) {
        return Ok(Some(Creds::from_user_secret(user, pass)));
    }
    Ok(None)
}

/// The server argument docker passes to helpers for `host`.
fn helper_server(host: &str) -> String {
    if is_docker_hub(host) {
        DOCKER_HUB_SERVER.to_string()
    } else {
        host.to_string()
    }
}

/// Credentials for `host` from the docker config at `path`. A missing file
/// means none.
pub(crate) async fn lookup(path: &Path, host: &str) -> Result<Option<Creds>, Error> {
    let text = match tokio::fs::read(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read the docker config", path, e)),
    };
    let config: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        // Only the position: the error text could quote a secret.
        Error::DockerConfig {
            path: path.to_path_buf(),
            reason: format!("invalid JSON at line {} column {}", e.line(), e.column()),
        }
    })?;
    match source_for(&config, host, path)? {
        Source::Inline(c) => Ok(Some(c)),
        Source::None => Ok(None),
        Source::Helper(name) => {
            let program = PathBuf::from(format!("docker-credential-{name}"));
            Ok(run_helper(&program, &helper_server(host), host).await)
        }
    }
}

/// Runs `<program> get` with `server` on stdin. Problems are logged and give
/// no credentials, as a missing helper does for docker.
pub(crate) async fn run_helper(program: &Path, server: &str, host: &str) -> Option<Creds> {
    let shown = program.display();
    let child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                "credential helper `{shown}` is not installed; accessing {host} without credentials"
            );
            return None;
        }
        Err(e) => {
            tracing::warn!(
                "credential helper `{shown}` could not be started ({e}); accessing {host} without credentials"
            );
            return None;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its output below.
        let _ = stdin.write_all(server.as_bytes()).await;
        let _ = stdin.shutdown().await;
    }
    let output = match tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            tracing::warn!(
                "credential helper `{shown}` failed ({e}); accessing {host} without credentials"
            );
            return None;
        }
        Err(_) => {
            tracing::warn!(
                "credential helper `{shown}` did not answer within {}s; accessing {host} without credentials",
                HELPER_TIMEOUT.as_secs()
            );
            return None;
        }
    };
    if !output.status.success() {
        let out = String::from_utf8_lossy(&output.stdout);
        if out.to_ascii_lowercase().contains("credentials not found") {
            tracing::debug!("credential helper `{shown}` has no credentials for {host}");
        } else {
            tracing::warn!(
                "credential helper `{shown}` failed ({}); accessing {host} without credentials",
                output.status
            );
        }
        return None;
    }
    let parsed: serde_json::Value = match serde_json::from_slice(&output.stdout) {
        Ok(v) => v,
        Err(_) => {
            tracing::warn!(
                "credential helper `{shown}` printed something other than JSON; accessing {host} without credentials"
            );
            return None;
        }
    };
    let get = |k: &str| {
        parsed
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (user, secret) = (get("Username"), get("Secret"));
    if secret.is_empty() {
        return None;
    }
    Some(Creds::from_user_secret(user, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    fn basic(u: &str, p: &str) -> Option<Creds> {
        Some(Creds::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[tokio::test]
    async fn auths_entry_with_base64_auth_is_found_by_host() {
        let dir = tempfile::tempdir().unwrap();
        // "alice:s3cr:et" — the password may itself contain a colon.
        let p = write(
            dir.path(),
            r#"{"auths":{"registry.corp:5000":{"auth":"YWxpY2U6czNjcjpldA=="}}}"#,
        );
        assert_eq!(
            lookup(&p, "registry.corp:5000").await.unwrap(),
            basic("alice", "s3cr:et")
        );
        assert_eq!(lookup(&p, "registry.corp").await.unwrap(), None);
        assert_eq!(lookup(&p, "other.corp:5000").await.unwrap(), None);
    }

    #[tokio::test]
    async fn docker_hub_entry_is_keyed_by_the_v1_url() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"Ym9iOnB3"}}}"#,
        );
        assert_eq!(lookup(&p, "docker.io").await.unwrap(), basic("bob", "pw"));
    }

    #[tokio::test]
    async fn url_keys_match_by_host_and_username_password_fields_work() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            r#"{"auths":{"https://ghcr.io/v2/":{"username":"carol","password":"tok"},
                         "quay.io":{"identitytoken":"refresh-me"}}}"#,
        );
        assert_eq!(lookup(&p, "ghcr.io").await.unwrap(), basic("carol", "tok"));
        assert_eq!(
            lookup(&p, "quay.io").await.unwrap(),
            Some(Creds::IdentityToken("refresh-me".into()))
        );
    }

    #[tokio::test]
    async fn missing_file_means_anonymous_and_bad_json_names_the_file_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            lookup(&dir.path().join("nope.json"), "a").await.unwrap(),
            None
        );
        let p = write(
            dir.path(),
            r#"{"auths":{"a":{"auth":"hunter2-not-base64!"}}"#,
        );
        let e = lookup(&p, "a").await.unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
        let p = write(
            dir.path(),
            r#"{"auths":{"a":{"auth":"hunter2-not-base64!"}}}"#,
        );
        let e = lookup(&p, "a").await.unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(text.contains("auths.a"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn helpers_win_over_auths_and_creds_store_comes_last() {
        let path = Path::new("c.json");
        let cfg: serde_json::Value = serde_json::from_str(
            r#"{"auths":{"a.io":{"auth":"dTpw"},"b.io":{}},
                "credHelpers":{"a.io":"ecr-login","https://index.docker.io/v1/":"hub"},
                "credsStore":"desktop"}"#,
        )
        .unwrap();
        assert_eq!(
            source_for(&cfg, "a.io", path).unwrap(),
            Source::Helper("ecr-login".into())
        );
        assert_eq!(
            source_for(&cfg, "docker.io", path).unwrap(),
            Source::Helper("hub".into())
        );
        // An entry without credentials (as docker writes with a store) defers to the store.
        assert_eq!(
            source_for(&cfg, "b.io", path).unwrap(),
            Source::Helper("desktop".into())
        );
        let cfg: serde_json::Value =
            serde_json::from_str(r#"{"auths":{"a.io":{"auth":"dTpw"}}}"#).unwrap();
        assert_eq!(
            source_for(&cfg, "a.io", path).unwrap(),
            Source::Inline(Creds::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(source_for(&cfg, "c.io", path).unwrap(), Source::None);
    }

    #[tokio::test]
    async fn missing_helper_gives_no_credentials() {
        let c = run_helper(
            Path::new("docker-credential-ferry-test-does-not-exist"),
            "x.io",
            "x.io",
        )
        .await;
        assert_eq!(c, None);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn helper_output_is_parsed_and_receives_the_server_on_stdin() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        let seen = dir.path().join("seen");
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\n[ \"$1\" = get ] || exit 3\ncat > '{}'\n\
                 printf '{{\"ServerURL\":\"x\",\"Username\":\"dave\",\"Secret\":\"pw\"}}'\n",
                seen.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = run_helper(&helper, &helper_server("docker.io"), "docker.io").await;
        assert_eq!(c, basic("dave", "pw"));
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap(),
            "https://index.docker.io/v1/"
        );

        let failing = dir.path().join("docker-credential-none");
        std::fs::write(
            &failing,
            "#!/bin/sh\ncat >/dev/null\necho 'credentials not found in native keychain'\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(run_helper(&failing, "a.io", "a.io").await, None);
    }
}
