//! Building the registry client from flags, the spec's `registries:` and the environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ferry_bundle::spec::RegistrySettings;
use ferry_registry::{Client, ClientConfig, Credentials, HostConfig};

use crate::cli::NetArgs;
use crate::Failure;

fn docker_config(args: &NetArgs) -> Option<PathBuf> {
    if let Some(p) = &args.docker_config {
        return Some(p.clone());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// Parses `SRC=URL` mirror flags.
pub fn parse_mirrors(values: &[String]) -> Result<BTreeMap<String, url::Url>, Failure> {
    let mut out = BTreeMap::new();
    for v in values {
        let (src, u) = v
            .split_once('=')
            .ok_or_else(|| Failure::input(anyhow::anyhow!("invalid --upstream-mirror `{v}`: expected SRC=URL, e.g. docker.io=https://proxy.corp/dockerhub")))?;
        let url = url::Url::parse(u).map_err(|e| {
            Failure::input(anyhow::anyhow!(
                "invalid --upstream-mirror `{v}`: `{u}` is not a URL: {e}"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Failure::input(anyhow::anyhow!(
                "invalid --upstream-mirror `{v}`: only http and https URLs"
            )));
        }
        out.insert(src.trim().to_string(), url);
    }
    Ok(out)
}

/// The client config for a run.
pub fn client(
    args: &NetArgs,
    spec_registries: &BTreeMap<String, RegistrySettings>,
    mirrors: &BTreeMap<String, url::Url>,
    target: Option<(&str, Option<bool>, Option<Credentials>)>,
) -> Result<Client, Failure> {
    let base = HostConfig {
        plain_http: false,
        https: false,
        insecure_skip_verify: args.insecure,
        ca_file: args.ca.clone(),
        client_cert: args.client_cert.clone().zip(args.client_key.clone()),
        credentials: None,
        mirror: None,
    };
    let mut config = ClientConfig {
        default_host: base.clone(),
        docker_config: docker_config(args),
        max_attempts: args.attempts.max(1),
        jobs: args.jobs.max(1),
        ..ClientConfig::default()
    };
    for (host, s) in spec_registries {
        let mut h = base.clone();
        h.plain_http = s.plain_http;
        // TLS settings written for this host ask for TLS, loopback included.
        h.https = !s.plain_http && (s.insecure || s.ca.is_some() || s.cert.is_some());
        h.insecure_skip_verify |= s.insecure;
        if s.ca.is_some() {
            h.ca_file = s.ca.clone();
        }
        if let (Some(c), Some(k)) = (&s.cert, &s.key) {
            h.client_cert = Some((c.clone(), k.clone()));
        }
        if let Some(m) = &s.mirror {
            h.mirror = Some(
                url::Url::parse(m)
                    .with_context(|| format!("registries.{host}.mirror `{m}` is not a URL"))
                    .map_err(Failure::input)?,
            );
        }
        config.hosts.insert(host.clone(), h);
    }
    for host in &args.plain_http {
        config
            .hosts
            .entry(host.clone())
            .or_insert_with(|| base.clone())
            .plain_http = true;
    }
    for (src, url) in mirrors {
        if src.starts_with("http://") || src.starts_with("https://") {
            // A URL prefix: plain HTTP fetches (charts, drivers, plugins, files).
            config.url_mirrors.push((src.clone(), url.clone()));
            continue;
        }
        config
            .hosts
            .entry(src.clone())
            .or_insert_with(|| base.clone())
            .mirror = Some(url.clone());
    }
    if let Some((host, plain, creds)) = target {
        let h = config
            .hosts
            .entry(host.to_string())
            .or_insert_with(|| base.clone());
        if let Some(p) = plain {
            // `http://` or `https://` given: exactly that scheme.
            h.plain_http = p;
            h.https = !p;
        }
        if creds.is_some() {
            h.credentials = creds;
        }
    }
    config.timeout = Duration::from_secs(args.timeout);
    Client::new(config)
        .context("failed to set up the registry client")
        .map_err(Failure::input)
}

/// Where a password comes from, for the messages.
pub struct PasswordFlags {
    /// The user flag (`--username`).
    pub user_flag: &'static str,
    /// The stdin flag (`--password-stdin`).
    pub stdin_flag: &'static str,
    /// The environment variable (`FERRY_PASSWORD`).
    pub env: &'static str,
}

/// `--username` / `--password-stdin` / `FERRY_PASSWORD`, and their
/// `--emit-…` twins: the credentials, `None` without a user, an input error
/// for a user without a password or stdin without a user.
pub fn credentials(
    user: Option<&String>,
    stdin: bool,
    flags: &PasswordFlags,
) -> Result<Option<Credentials>, Failure> {
    use std::io::Read;
    let Some(u) = user else {
        return if stdin {
            Err(Failure::input(anyhow::anyhow!(
                "{} needs {}",
                flags.stdin_flag,
                flags.user_flag
            )))
        } else {
            Ok(None)
        };
    };
    let password = if stdin {
        let mut p = String::new();
        std::io::stdin().read_to_string(&mut p).map_err(|e| {
            Failure::input(anyhow::anyhow!(
                "failed to read the {} password from stdin: {e}",
                flags.user_flag
            ))
        })?;
        p.trim_end_matches(['\n', '\r']).to_string()
    } else {
        std::env::var(flags.env).map_err(|_| {
            Failure::input(anyhow::anyhow!(
                "{} given without a password",
                flags.user_flag
            ))
            .hint(format!(
                "pass it in {}, or on stdin with {}",
                flags.env, flags.stdin_flag
            ))
        })?
    };
    Ok(Some(Credentials {
        username: u.clone(),
        password,
    }))
}

/// The flags of the registry credential (`--username`).
pub const PUSH_PASSWORD: PasswordFlags = PasswordFlags {
    user_flag: "--username",
    stdin_flag: "--password-stdin",
    env: "FERRY_PASSWORD",
};
