//! Image references, normalised the way docker does.
//!
//! `nginx` → `docker.io/library/nginx:latest`, `ghcr.io/a/b` →
//! `ghcr.io/a/b:latest`, `registry.k8s.io/pause@sha256:…` keeps its digest.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Digest;

/// The registry that short names resolve to.
pub const DOCKER_HUB: &str = "docker.io";

/// A fully qualified image reference: registry, repository, tag and/or digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `host[:port]`, normalised (`index.docker.io` → `docker.io`).
    pub registry: String,
    /// The repository path inside the registry, e.g. `library/nginx`.
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The digest, if any. When both are set the digest wins when pulling.
    pub digest: Option<Digest>,
}

/// A reference that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid image reference `{}`: {}",
    crate::text::escape(.value),
    crate::text::escape(.reason)
)]
pub struct ReferenceError {
    /// The text that was refused.
    pub value: String,
    /// Why.
    pub reason: String,
}

fn is_name_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // separator run
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Whether `tag` matches `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-')
}

/// Whether `path` is a valid repository path (`/`-separated name components).
pub fn is_valid_repository(path: &str) -> bool {
    !path.is_empty() && path.len() <= 255 && path.split('/').all(is_name_component)
}

fn is_valid_host(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        // [ipv6]:port
        return match rest.split_once(']') {
            Some((addr, port)) => {
                !addr.is_empty()
                    && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
                    && (port.is_empty()
                        || port.strip_prefix(':').is_some_and(|p| {
                            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
                        }))
            }
            None => false,
        };
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 {
            return false;
        }
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl Reference {
    /// Parses and normalises a reference the way docker does.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            value: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty reference"));
        }
        if s.contains(char::is_whitespace) {
            return Err(err("references contain no whitespace"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|e| err(&e.to_string()))?),
            ),
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if !is_valid_tag(t) {
                return Err(err(&format!(
                    "tag `{t}` must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"
                )));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        if !is_valid_host(&registry) {
            return Err(err(&format!("`{registry}` is not a valid registry host")));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("repository names must be lowercase"));
        }
        if !is_valid_repository(&repository) {
            return Err(err(&format!(
                "repository `{repository}` must be lowercase name components separated by `/`"
            )));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag or digest to ask the registry for (the digest when both exist).
    pub fn reference_str(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same repository with another digest and no tag.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Reference::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_distribution_grammar() {
        for ok in [
            "a",
            "dockerhub/library/nginx",
            "a.b/c_d/e__f/g-h/i---j",
            "0/9",
            "ghcr.io/falcosecurity/rules/falco-rules",
        ] {
            assert!(is_valid_repository(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a/../b",
            "a/.",
            "a b",
            "a:b",
            "a%2fb",
            &"a".repeat(256),
        ] {
            assert!(!is_valid_repository(bad), "{bad}");
        }
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        assert!(is_valid_tag("1.27"));
        assert!(is_valid_tag("_x"));
        assert!(is_valid_tag("v1.0.0-rc.1_build"));
        assert!(is_valid_tag(&"a".repeat(128)));
        assert!(!is_valid_tag(&"a".repeat(129)));
        assert!(!is_valid_tag(".x"));
        assert!(!is_valid_tag("-x"));
        assert!(!is_valid_tag(""));
        assert!(!is_valid_tag("a+b"));
    }

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_short_names_normalise_as_docker_does() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("nginx:1.27"), "docker.io/library/nginx:1.27");
        assert_eq!(norm("bitnami/redis:7"), "docker.io/bitnami/redis:7");
        assert_eq!(
            norm("index.docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx:latest");
    }

    #[test]
    fn registries_with_ports_and_localhost_are_hosts() {
        let r = Reference::parse("127.0.0.1:5001/team/app:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5001");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("ghcr.io/a/b/c"), "ghcr.io/a/b/c:latest");
    }

    #[test]
    fn digest_references_keep_digest_and_no_default_tag() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("registry.k8s.io/pause@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.reference_str(), d);
        let both = Reference::parse(&format!("nginx:1.27@{d}")).unwrap();
        assert_eq!(
            both.to_string(),
            format!("docker.io/library/nginx:1.27@{d}")
        );
        assert_eq!(both.reference_str(), d);
    }

    #[test]
    fn bad_references_are_refused_with_a_reason() {
        for bad in [
            "",
            "Nginx",
            "ghcr.io/Org/app",
            "nginx:",
            "nginx:-bad",
            "nginx@sha256:123",
            "a b",
            "ghcr.io//app",
            "ghcr.io/app/",
        ] {
            let e = Reference::parse(bad);
            assert!(e.is_err(), "{bad:?} should be refused");
        }
        let e = Reference::parse("ghcr.io/Org/app").unwrap_err();
        assert!(e.to_string().contains("ghcr.io/Org/app"), "{e}");
    }
}
