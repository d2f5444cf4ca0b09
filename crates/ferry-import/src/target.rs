//! Where items land: the target registry and the mapping rules.
//!
//! Default: `<registry>/<prefix>/<source host>/<source path>`, with a port in
//! the source host made path-safe (`127.0.0.1:5001` → `127.0.0.1-5001`).
//! `--map SRC=DST` (SRC a source host or host/path prefix, DST a repository
//! path prefix inside the target; the longest SRC wins) and `--flatten`
//! (drop the source host) change that.

use ferry_bundle::digest::Digest;
use ferry_bundle::reference::{is_valid_repository, Reference};
use ferry_registry::Repo;

/// The host name a store target's repositories are written under
/// (`store/<repository>`); never a registry to connect to.
pub const STORE_HOST: &str = "store";

/// The target registry: host and optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]`.
    pub host: String,
    /// Repository prefix inside the registry (no leading/trailing `/`), may be empty.
    pub prefix: String,
    /// `Some(true)` for `http://`, `Some(false)` for `https://`, `None` when no scheme was given.
    pub plain_http: Option<bool>,
}

/// A `--registry` or `--map` value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Bad `--registry`.
    #[error("invalid --registry `{value}`: {reason}")]
    Registry {
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// Bad `--map`.
    #[error("invalid --map `{value}`: {reason}")]
    Map {
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A mapped name that is not a valid repository.
    #[error("{reference} maps to `{repository}`, which is not a valid repository name (lowercase components separated by `/`); adjust --map")]
    BadName {
        /// Source reference.
        reference: String,
        /// What it mapped to.
        repository: String,
    },
    /// Two sources with different content map to one target tag (boxed:
    /// two digests and three names would make every `Result` carry them).
    #[error(transparent)]
    Collision(Box<Collision>),
}

/// Two sources with different content that map to one target tag.
#[derive(Debug, thiserror::Error)]
#[error("two sources map to one target `{}`: `{}` ({first_digest}) and `{}` ({second_digest}); nothing was pushed. Give them distinct targets with --map (or drop --flatten)", .target.escape_debug(), .first.escape_debug(), .second.escape_debug())]
pub struct Collision {
    /// The target reference (`host/path:tag`).
    pub target: String,
    /// The source that claimed it first.
    pub first: String,
    /// Its digest.
    pub first_digest: Digest,
    /// The other source.
    pub second: String,
    /// Its digest.
    pub second_digest: Digest,
}

impl Target {
    /// The target of an import into a store.
    pub fn store() -> Target {
        Target {
            host: STORE_HOST.into(),
            prefix: String::new(),
            plain_http: None,
        }
    }

    /// Whether this is a store's target (nothing to connect to).
    pub fn is_store(&self) -> bool {
        self.host == STORE_HOST
    }

    /// Parses `[http(s)://]HOST[:PORT][/PREFIX]`.
    pub fn parse(value: &str) -> Result<Target, TargetError> {
        let err = |reason: &str| TargetError::Registry {
            value: value.into(),
            reason: reason.into(),
        };
        let (plain_http, rest) = if let Some(r) = value.strip_prefix("http://") {
            (Some(true), r)
        } else if let Some(r) = value.strip_prefix("https://") {
            (Some(false), r)
        } else if value.contains("://") {
            return Err(err("only http:// and https:// are supported"));
        } else {
            (None, value)
        };
        let rest = rest.trim_end_matches('/');
        let (host, prefix) = match rest.split_once('/') {
            Some((h, p)) => (h, p),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        // Reuse reference parsing to validate the host.
        Reference::parse(&format!("{host}/x")).map_err(|_| err("not a valid host[:port]"))?;
        if !prefix.is_empty() && !is_valid_repository(prefix) {
            return Err(err(
                "the path prefix must be lowercase repository components",
            ));
        }
        Ok(Target {
            host: host.into(),
            prefix: prefix.into(),
            plain_http,
        })
    }
}

/// One `--map SRC=DST` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRule {
    /// Source host or host/path prefix.
    pub source: String,
    /// Target repository path prefix (may be empty).
    pub dest: String,
}

impl MapRule {
    /// Parses `SRC=DST`.
    pub fn parse(value: &str) -> Result<MapRule, TargetError> {
        let err = |reason: &str| TargetError::Map {
            value: value.into(),
            reason: reason.into(),
        };
        let (s, d) = value
            .split_once('=')
            .ok_or_else(|| err("expected SRC=DST, e.g. docker.io=dockerhub"))?;
        let s = s.trim().trim_end_matches('/');
        let d = d.trim().trim_matches('/');
        if s.is_empty() {
            return Err(err("SRC is empty"));
        }
        if !d.is_empty() && !is_valid_repository(d) {
            return Err(err("DST must be a repository path prefix of lowercase components, e.g. `dockerhub` or `k8s/pause`"));
        }
        Ok(MapRule {
            source: s.into(),
            dest: d.into(),
        })
    }
}

/// The mapping rules of one import.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// `--map` rules.
    pub rules: Vec<MapRule>,
    /// `--flatten`.
    pub flatten: bool,
    /// `--max-path-depth N`: every target repository keeps at most this
    /// many path components (registries such as GitLab or Harbor limit
    /// nesting); the components past the limit are joined with `-` into the
    /// last one (`a/b/c/d` at 2 → `a/b-c-d`). Two sources that end up on one
    /// name are refused by the plan, naming both.
    pub max_depth: Option<usize>,
}

/// `path` with at most `max` components: the first `max - 1` kept, the
/// rest joined with `-` into the last.
pub fn limit_depth(path: &str, max: usize) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    if max == 0 || parts.len() <= max {
        return path.to_string();
    }
    let (keep, rest) = parts.split_at(max - 1);
    let mut out: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    out.push(rest.join("-"));
    out.join("/")
}

/// Makes a source host path-safe: `127.0.0.1:5001` → `127.0.0.1-5001`.
pub fn path_safe_host(host: &str) -> String {
    host.replace(':', "-")
        .trim_matches(|c| c == '[' || c == ']')
        .to_string()
}

impl Mapping {
    /// The repository path (without the target prefix) for a source reference.
    pub fn map_path(&self, r: &Reference) -> String {
        let full = format!("{}/{}", r.registry, r.repository);
        let best = self
            .rules
            .iter()
            .filter(|rule| full == rule.source || full.starts_with(&format!("{}/", rule.source)))
            .max_by_key(|rule| rule.source.len());
        match best {
            Some(rule) => {
                let rest = full[rule.source.len()..].trim_start_matches('/');
                match (rule.dest.is_empty(), rest.is_empty()) {
                    (true, _) => rest.to_string(),
                    (false, true) => rule.dest.clone(),
                    (false, false) => format!("{}/{}", rule.dest, rest),
                }
            }
            None if self.flatten => r.repository.clone(),
            None => format!("{}/{}", path_safe_host(&r.registry), r.repository),
        }
    }

    /// The target repository for a source reference.
    pub fn map(&self, target: &Target, r: &Reference) -> Result<Repo, TargetError> {
        let path = self.map_path(r);
        let path = if target.prefix.is_empty() {
            path
        } else if path.is_empty() {
            target.prefix.clone()
        } else {
            format!("{}/{}", target.prefix, path)
        };
        let path = match self.max_depth {
            Some(max) => limit_depth(&path, max),
            None => path,
        };
        if !is_valid_repository(&path) {
            return Err(TargetError::BadName {
                reference: r.to_string(),
                repository: path,
            });
        }
        Ok(Repo {
            host: target.host.clone(),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn max_depth_joins_the_deepest_components() {
        assert_eq!(limit_depth("a/b/c/d", 2), "a/b-c-d");
        assert_eq!(limit_depth("a/b/c/d", 3), "a/b/c-d");
        assert_eq!(limit_depth("a/b", 2), "a/b");
        assert_eq!(limit_depth("a", 1), "a");
        assert_eq!(limit_depth("a/b/c", 1), "a-b-c");
        let t = Target::parse("harbor.internal/project").unwrap();
        let m = Mapping {
            max_depth: Some(2),
            ..Mapping::default()
        };
        assert_eq!(
            m.map(&t, &r("registry.k8s.io/sig-storage/csi-provisioner:v5"))
                .unwrap()
                .path,
            "project/registry.k8s.io-sig-storage-csi-provisioner"
        );
    }

    #[test]
    fn default_mapping_keeps_the_source_host_under_the_prefix() {
        let t = Target::parse("registry.internal/mirror").unwrap();
        let m = Mapping::default();
        assert_eq!(
            m.map(&t, &r("nginx:1.27")).unwrap().path,
            "mirror/docker.io/library/nginx"
        );
        assert_eq!(
            m.map(&t, &r("127.0.0.1:5001/a/b:1")).unwrap().path,
            "mirror/127.0.0.1-5001/a/b"
        );
        let t = Target::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(t.plain_http, Some(true));
        assert_eq!(m.map(&t, &r("ghcr.io/x/y:1")).unwrap().path, "ghcr.io/x/y");
    }

    #[test]
    fn map_rules_pick_the_longest_prefix_and_flatten_drops_the_host() {
        let t = Target::parse("harbor.internal").unwrap();
        let m = Mapping {
            max_depth: None,
            rules: vec![
                MapRule::parse("docker.io=dockerhub").unwrap(),
                MapRule::parse("registry.k8s.io=k8s").unwrap(),
                MapRule::parse("registry.k8s.io/pause=k8s/pause").unwrap(),
            ],
            flatten: false,
        };
        assert_eq!(
            m.map(&t, &r("nginx")).unwrap().path,
            "dockerhub/library/nginx"
        );
        assert_eq!(
            m.map(&t, &r("registry.k8s.io/pause:3.9")).unwrap().path,
            "k8s/pause"
        );
        assert_eq!(
            m.map(&t, &r("registry.k8s.io/coredns/coredns:1"))
                .unwrap()
                .path,
            "k8s/coredns/coredns"
        );
        assert_eq!(
            m.map(&t, &r("registry.k8s.io/pausex:1")).unwrap().path,
            "k8s/pausex"
        );
        let f = Mapping {
            max_depth: None,
            rules: vec![],
            flatten: true,
        };
        assert_eq!(f.map(&t, &r("ghcr.io/a/b:1")).unwrap().path, "a/b");
    }

    #[test]
    fn bad_targets_and_maps_are_refused_by_value() {
        assert!(Target::parse("ftp://x")
            .unwrap_err()
            .to_string()
            .contains("ftp://x"));
        assert!(Target::parse("host/UPPER").is_err());
        assert!(MapRule::parse("docker.io")
            .unwrap_err()
            .to_string()
            .contains("SRC=DST"));
        assert!(MapRule::parse("docker.io=Bad").is_err());
    }

    #[test]
    fn a_collision_names_the_target_both_sources_and_both_digests_in_full() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let e = TargetError::Collision(Box::new(Collision {
            target: "mirror.local/falco:1.0".into(),
            first: "quay.io/falco:1.0".into(),
            first_digest: a.clone(),
            second: "docker.io/falco:1.0".into(),
            second_digest: b.clone(),
        }));
        assert_eq!(
            e.to_string(),
            format!(
                "two sources map to one target `mirror.local/falco:1.0`: `quay.io/falco:1.0` ({a}) and `docker.io/falco:1.0` ({b}); nothing was pushed. Give them distinct targets with --map (or drop --flatten)"
            )
        );
        assert!(a.to_string().starts_with("sha256:") && a.to_string().len() == 71);
    }
}
