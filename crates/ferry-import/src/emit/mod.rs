//! `--emit-config DIR`: the client configuration that points every consumer
//! at the internal mirrors.
//!
//! From the bundle's table of contents and the import's mapping, [`emit`]
//! writes (each file atomically, with deterministic content and a header
//! naming the bundle):
//!
//! | file | for |
//! |---|---|
//! | `containerd/certs.d/<host>/hosts.toml` | every node: one per source registry the bundle's registry content comes from |
//! | `containerd/certs.d/_default/hosts.toml` | every node, with `default_host` only |
//! | `kubespray/containerd_registries_mirrors.yaml` | Kubespray inventory (`group_vars`): the same, as Kubespray's variable |
//! | `trivy.yaml`, `trivy-operator-values.yaml` | the Trivy CLI and the trivy-operator chart (DB, Java DB, checks) |
//! | `falco-values.yaml` | the Falco chart (driver repository, falcoctl index and artifacts) |
//! | `opensearch-values.yaml` | the OpenSearch chart (`plugins.installList`) |
//! | `helm-repositories.yaml` | Helm (`--repository-config`): the classic repositories on the file server |
//! | `ck8s/common-config.yaml`, `ck8s/sc-config.yaml` | Compliant Kubernetes (air-gapped flavour) config snippets |
//! | `README.md` | which file goes where, and what the configuration cannot express |
//!
//! One module per consumer, each adding its renderers to the plan built here
//! (`Plan`: the items, hosts and mirror paths, and `render`, which calls
//! them in a fixed order): `containerd` (hosts.toml), `kubespray`,
//! `runtime_files` (CRI-O/containers, k3s/RKE2, containerd 1.x, docker, Talos,
//! OpenShift, pull secrets, through [`runtimes`], the documents themselves), `trivy`, `falco`,
//! `opensearch`, `helm`, `ck8s` and `readme`.
//!
//! Every file is written by a serializer (`toml` for hosts.toml,
//! yaml_serde for YAML); the comment headers quote the bundle's name,
//! tool and item references, which are untrusted, so every header line is
//! escaped ([`ferry_bundle::text::escape`]) and no line break can end the
//! comment. Option values with control characters are refused.
//!
//! containerd's `hosts.toml` maps a whole source *host* to one mirror path:
//! a `--map` rule finer than a host (`registry.k8s.io/pause=k8s/pause`) cannot
//! be expressed there. The host-level mapping is written, and the items it
//! does not reach are named in a comment in that file and in the README.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use ferry_bundle::meta::{BundleMeta, Item, Kind};
use ferry_bundle::reference::{Reference, ReferenceError, DOCKER_HUB};
use ferry_registry::Repo;
use yaml_serde::{Mapping as YamlMap, Value};

use ferry_bundle::text::escape as esc;

use crate::target::{path_safe_host, Mapping, Target, TargetError};

mod ck8s;
mod containerd;
mod falco;
mod helm;
mod kubespray;
mod opensearch;
mod readme;
mod runtime_files;
pub mod runtimes;
mod trivy;

/// What to emit, and for which target.
#[derive(Debug, Clone, Default)]
pub struct EmitOptions {
    /// The directory to write into (created if missing).
    pub dir: PathBuf,
    /// The target registry; `None` writes only the file-server parts.
    pub target: Option<Target>,
    /// The mapping the import used.
    pub mapping: Mapping,
    /// The file server's base URL as clients see it (`--files-url`).
    pub files_url: Option<String>,
    /// The file server's IP, for CK8s network policies.
    pub files_ip: Option<IpAddr>,
    /// The file server's port, for CK8s network policies (default: from `files_url`).
    pub files_port: Option<u16>,
    /// Also write `containerd/certs.d/_default/hosts.toml`.
    pub default_host: bool,
    /// CA file path as the nodes see it (`ca` in hosts.toml).
    pub ca: Option<String>,
    /// Client certificate and key paths as the nodes see them (`client`).
    pub client: Option<(String, String)>,
    /// Write `skip_verify = true`.
    pub skip_verify: bool,
    /// The target speaks plain HTTP (also implied by an `http://` target).
    pub plain_http: bool,
    /// The pull-only credential the nodes use (`--emit-username`); files
    /// holding it are written mode 0600 and listed as such in the README.
    pub auth: Option<runtimes::PullCredential>,
    /// The CA the import trusted (`--ca`), carried to the nodes when `ca`
    /// (a path on the nodes) is not given: copied beside every `hosts.toml`
    /// (`ca = "ca.crt"`, relative to it), into `containers/certs.d/<mirror>/`,
    /// as `ca.crt` for k3s/RKE2, and inline for Talos.
    pub carry_ca: Option<PathBuf>,
}

/// Where the carried CA goes on the nodes for k3s/RKE2 (`ca_file`).
pub const NODE_CA_PATH: &str = "/etc/ferry/mirror-ca.crt";

/// Why the configuration could not be emitted. Nothing is written then.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// File-server content without `--files-url`.
    #[error("--files-url is needed: the bundle carries {what}, and the configuration that points clients at them needs the file server's address as clients see it (e.g. --files-url https://files.internal)")]
    NeedsFilesUrl {
        /// What needs it.
        what: String,
    },
    /// A `--files-url` that is not an http(s) URL.
    #[error("invalid --files-url `{value}`: expected http://HOST[:PORT][/PATH] or https://…")]
    FilesUrl {
        /// The value.
        value: String,
    },
    /// An option value with a control, line-break or formatting character.
    #[error("{option} `{}` holds a control, line-break or formatting character", ferry_bundle::text::escape(.value))]
    UnsafeOption {
        /// The option.
        option: &'static str,
        /// Its value.
        value: String,
    },
    /// A bundle item whose reference does not parse.
    #[error("bundle item `{}` has an invalid reference", ferry_bundle::text::escape(.reference))]
    Reference {
        /// The reference.
        reference: String,
        /// Cause.
        #[source]
        source: ReferenceError,
    },
    /// The mapping produced an invalid repository name.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The CA to carry could not be read.
    #[error("failed to read the CA `{path}` to carry into the node configuration")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// TOML serialisation failed.
    #[error("failed to render `{file}`")]
    Toml {
        /// The file.
        file: String,
        /// Cause.
        #[source]
        source: toml::ser::Error,
    },
    /// YAML serialisation failed.
    #[error("failed to render `{file}`")]
    Yaml {
        /// The file.
        file: String,
        /// Cause.
        #[source]
        source: ferry_bundle::yaml::RenderError,
    },
    /// A file or directory could not be written.
    #[error("failed to write `{path}`")]
    Write {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Where Kubespray, Helm and CK8s files go, relative to the emit directory.
pub const KUBESPRAY_FILE: &str = "kubespray/containerd_registries_mirrors.yaml";

/// Whether `host` (`name[:port]`) is a loopback address, which ferry (like
/// docker) speaks plain HTTP to when no scheme was given: the one loopback
/// policy, [`ferry_registry::is_loopback`], under the name callers know.
pub use ferry_registry::is_loopback as is_loopback_host;

/// Writes the client configuration for `meta` into `opts.dir` and returns the
/// paths written, in a fixed order. Everything is rendered before anything is
/// written, so an error leaves the directory as it was.
pub fn emit(opts: &EmitOptions, meta: &BundleMeta) -> Result<Vec<PathBuf>, EmitError> {
    let plan = Plan::new(opts, meta)?;
    let files = plan.render()?;
    let mut written = Vec::with_capacity(files.len());
    for (rel, content) in files {
        let path = opts.dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| EmitError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let secret = plan.is_secret(&content);
        // A file holding the credential is created 0600 before a byte of it
        // is written.
        let mode = if secret { 0o600 } else { 0o644 };
        ferry_bundle::writer::write_atomic_mode(&path, content.as_bytes(), mode).map_err(
            |source| EmitError::Write {
                path: path.clone(),
                source,
            },
        )?;
        written.push(path);
    }
    Ok(written)
}

/// A registry item with its parsed source and (with a target) its target repository.
struct RegItem<'a> {
    item: &'a Item,
    source: Reference,
    target: Option<Repo>,
}

/// One source host's containerd mirror.
struct HostPlan {
    /// Source registry host (`docker.io`, `127.0.0.1:5001`).
    host: String,
    /// Repository path prefix at the target for this host (may be empty).
    path: String,
    /// Items of this host a finer mapping sent elsewhere: (source ref, target repo).
    exceptions: Vec<(String, String)>,
}

/// Whether an item lives in the registry (as opposed to the file server).
fn in_registry(item: &Item) -> bool {
    match item.kind {
        Kind::Image | Kind::TrivyDb | Kind::FalcoArtifact => true,
        Kind::Chart => item.path.is_none(),
        _ => false,
    }
}

fn join_path(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (false, true) => a.to_string(),
        (false, false) => format!("{a}/{b}"),
    }
}

fn upstream_server(host: &str) -> String {
    if host == DOCKER_HUB {
        "https://registry-1.docker.io".to_string()
    } else {
        format!("https://{host}")
    }
}

/// A YAML string value.
pub(crate) fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn seq(v: Vec<Value>) -> Value {
    Value::Sequence(v)
}

/// A YAML mapping, keys in the order given.
pub(crate) fn map(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = YamlMap::new();
    for (k, v) in pairs {
        m.insert(Value::String(k.to_string()), v);
    }
    Value::Mapping(m)
}

/// A comment block: one `# ` line per entry. Entries carry untrusted text
/// (the bundle's name and tool, item references), so each is escaped
/// ([`ferry_bundle::text::escape`]): no line break of any kind (`\n`, `\r`,
/// NEL, U+2028) can end the comment and start a key, a table or a host.
fn comment(lines: &[String]) -> String {
    let mut out = String::new();
    for l in lines {
        if l.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str("# ");
            out.push_str(&ferry_bundle::text::escape(l));
            out.push('\n');
        }
    }
    out
}

/// A TOML document rendered by the `toml` serializer.
fn toml_doc(file: &str, table: &toml::Table) -> Result<String, EmitError> {
    toml::to_string(table).map_err(|source| EmitError::Toml {
        file: file.to_string(),
        source,
    })
}

fn yaml(file: &str, head: &[String], v: &Value) -> Result<String, EmitError> {
    let body = ferry_bundle::yaml::to_string_yaml11(v).map_err(|source| EmitError::Yaml {
        file: file.to_string(),
        source,
    })?;
    Ok(format!("{}{body}", comment(head)))
}

/// `http://host[:port][/path]` → (scheme, authority) for port defaults.
fn url_parts(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return None;
    }
    Some((scheme, authority))
}

struct Plan<'a> {
    opts: &'a EmitOptions,
    meta: &'a BundleMeta,
    header: Vec<String>,
    registry: Vec<RegItem<'a>>,
    files_url: Option<String>,
    scheme: &'static str,
    /// The carried CA's PEM (`carry_ca`, when `ca` is not given).
    ca_pem: Option<String>,
}

impl<'a> Plan<'a> {
    fn new(opts: &'a EmitOptions, meta: &'a BundleMeta) -> Result<Plan<'a>, EmitError> {
        let (cert, key) = match &opts.client {
            Some((c, k)) => (Some(c), Some(k)),
            None => (None, None),
        };
        for (option, value) in [
            ("--emit-ca", opts.ca.as_ref()),
            ("--emit-client", cert),
            ("--emit-client", key),
            ("--files-url", opts.files_url.as_ref()),
        ] {
            if let Some(v) = value.filter(|v| ferry_bundle::text::has_unsafe_char(v)) {
                return Err(EmitError::UnsafeOption {
                    option,
                    value: v.clone(),
                });
            }
        }
        let mut registry = Vec::new();
        for item in meta.items.iter().filter(|i| in_registry(i)) {
            let source =
                Reference::parse(&item.reference).map_err(|source| EmitError::Reference {
                    reference: item.reference.clone(),
                    source,
                })?;
            let target = match &opts.target {
                Some(t) => Some(opts.mapping.map(t, &source)?),
                None => None,
            };
            registry.push(RegItem {
                item,
                source,
                target,
            });
        }
        let files_url = match &opts.files_url {
            Some(u) => {
                let u = u.trim().trim_end_matches('/').to_string();
                if url_parts(&u).is_none() {
                    return Err(EmitError::FilesUrl { value: u });
                }
                Some(u)
            }
            None => None,
        };
        if files_url.is_none() {
            let mut needs = Vec::new();
            let has = |k: Kind| meta.items.iter().any(|i| i.kind == k);
            if has(Kind::FalcoDriver) {
                needs.push("Falco drivers");
            }
            if has(Kind::FalcoctlIndex) {
                needs.push("the falcoctl index");
            }
            if has(Kind::OpensearchPlugin) {
                needs.push("OpenSearch plugins");
            }
            if meta
                .items
                .iter()
                .any(|i| i.kind == Kind::Chart && i.path.is_some())
            {
                needs.push("charts of classic Helm repositories");
            }
            if !needs.is_empty() {
                return Err(EmitError::NeedsFilesUrl {
                    what: needs.join(", "),
                });
            }
        }
        let plain =
            opts.plain_http || opts.target.as_ref().and_then(|t| t.plain_http) == Some(true);
        let header = vec![
            format!(
                "Generated by ferry {} (`ferry import --emit-config`) for bundle `{}`",
                env!("CARGO_PKG_VERSION"),
                meta.name
            ),
            format!(
                "(index.json {}, written by {}). Re-run the import to regenerate; edits are lost.",
                meta.index.digest, meta.tool
            ),
        ];
        let ca_pem = match (&opts.ca, &opts.carry_ca) {
            (None, Some(path)) if opts.target.is_some() => Some(
                std::fs::read_to_string(path).map_err(|source| EmitError::Ca {
                    path: path.clone(),
                    source,
                })?,
            ),
            _ => None,
        };
        Ok(Plan {
            opts,
            meta,
            header,
            registry,
            files_url,
            scheme: if plain { "http" } else { "https" },
            ca_pem,
        })
    }

    /// Whether `content` holds the pull credential (in any encoding the
    /// emitted files use): such files are written mode 0600.
    fn is_secret(&self, content: &str) -> bool {
        let Some(a) = &self.opts.auth else {
            return false;
        };
        let mirror = self.node_mirror();
        let secret = mirror
            .as_ref()
            .map(|m| runtimes::pull_secret("x", m, a))
            .and_then(|v| v["data"][".dockerconfigjson"].as_str().map(str::to_string));
        content.contains(&a.password)
            || content.contains(&a.basic())
            || secret.is_some_and(|x| content.contains(&x))
    }

    fn insecure(&self) -> bool {
        self.scheme == "http" || self.opts.skip_verify
    }

    fn has(&self, k: Kind) -> bool {
        self.meta.items.iter().any(|i| i.kind == k)
    }

    fn files(&self, path: &str) -> String {
        format!("{}/{}", self.files_url.as_deref().unwrap_or_default(), path)
    }

    /// The host-level repository prefix (target prefix included) for a source host.
    fn host_path(&self, target: &Target, host: &str) -> String {
        let base = match self.opts.mapping.rules.iter().find(|r| r.source == host) {
            Some(rule) => rule.dest.clone(),
            None if self.opts.mapping.flatten => String::new(),
            None => path_safe_host(host),
        };
        join_path(&target.prefix, &base)
    }

    fn hosts(&self) -> Vec<HostPlan> {
        let Some(target) = &self.opts.target else {
            return Vec::new();
        };
        let mut by_host: BTreeMap<String, HostPlan> = BTreeMap::new();
        for r in &self.registry {
            let host = r.source.registry.clone();
            let hp = by_host.entry(host.clone()).or_insert_with(|| HostPlan {
                path: self.host_path(target, &host),
                host,
                exceptions: Vec::new(),
            });
            if let Some(repo) = &r.target {
                let expected = join_path(&hp.path, &r.source.repository);
                if repo.path != expected {
                    let e = (
                        r.item.reference.clone(),
                        format!("{}/{}", repo.host, repo.path),
                    );
                    if !hp.exceptions.contains(&e) {
                        hp.exceptions.push(e);
                    }
                }
            }
        }
        by_host.into_values().collect()
    }

    fn mirror_url(&self, target: &Target, path: &str) -> String {
        if path.is_empty() {
            format!("{}://{}", self.scheme, target.host)
        } else {
            format!("{}://{}/v2/{}", self.scheme, target.host, path)
        }
    }

    /// `host/path` of a host mirror, for tools that take a registry + prefix.
    fn mirror_name(target: &Target, path: &str) -> String {
        join_path(&target.host, path)
    }

    fn target_ref(r: &RegItem<'_>) -> Option<String> {
        let repo = r.target.as_ref()?;
        let base = format!("{}/{}", repo.host, repo.path);
        Some(match (&r.source.tag, &r.source.digest) {
            (Some(t), _) => format!("{base}:{t}"),
            (None, Some(d)) => format!("{base}@{d}"),
            (None, None) => base,
        })
    }

    fn render(&self) -> Result<Vec<(String, String)>, EmitError> {
        let mut out = Vec::new();
        let hosts = self.hosts();
        if let Some(target) = &self.opts.target {
            for hp in &hosts {
                out.push((
                    format!("containerd/certs.d/{}/hosts.toml", hp.host),
                    self.hosts_toml(target, hp)?,
                ));
                if let Some(pem) = &self.ca_pem {
                    out.push((
                        format!("containerd/certs.d/{}/ca.crt", hp.host),
                        pem.clone(),
                    ));
                }
            }
            if self.opts.default_host {
                out.push((
                    "containerd/certs.d/_default/hosts.toml".to_string(),
                    self.default_toml(target)?,
                ));
                if let Some(pem) = &self.ca_pem {
                    out.push((
                        "containerd/certs.d/_default/ca.crt".to_string(),
                        pem.clone(),
                    ));
                }
            }
            if !hosts.is_empty() || self.opts.default_host {
                out.push((KUBESPRAY_FILE.to_string(), self.kubespray(target, &hosts)?));
            }
            if self.registry.iter().any(|r| r.item.kind == Kind::TrivyDb) {
                out.push(("trivy.yaml".to_string(), self.trivy_cli()?));
                out.push((
                    "trivy-operator-values.yaml".to_string(),
                    self.trivy_operator(target, &hosts)?,
                ));
            }
        }
        if self.has(Kind::FalcoDriver)
            || self.has(Kind::FalcoctlIndex)
            || (self.opts.target.is_some() && self.has(Kind::FalcoArtifact))
        {
            out.push(("falco-values.yaml".to_string(), self.falco()?));
        }
        if self.has(Kind::OpensearchPlugin) {
            out.push(("opensearch-values.yaml".to_string(), self.opensearch()?));
        }
        if !self.classic_repos().is_empty() {
            out.push(("helm-repositories.yaml".to_string(), self.helm_repos()?));
        }
        if let Some(common) = self.ck8s_common(&hosts)? {
            out.push(("ck8s/common-config.yaml".to_string(), common));
        }
        if let Some(sc) = self.ck8s_sc()? {
            out.push(("ck8s/sc-config.yaml".to_string(), sc));
        }
        out.extend(self.runtime_files(&hosts)?);
        out.push(("README.md".to_string(), self.readme(&hosts, &out)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::MapRule;
    use ferry_bundle::meta::IndexPin;
    use ferry_bundle::Digest;
    use std::path::Path;

    fn item(kind: Kind, reference: &str, path: Option<&str>) -> Item {
        Item {
            kind,
            reference: reference.into(),
            digest: Digest::of(reference.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 1,
            platforms: vec![],
            path: path.map(String::from),
            subject: None,
        }
    }

    fn meta(items: Vec<Item>) -> BundleMeta {
        BundleMeta {
            format_version: 1,
            tool: "ferry 0.1.0".into(),
            name: "ck8s-apps".into(),
            index: IndexPin {
                digest: Digest::of(b"index"),
                size: 5,
            },
            items,
            blobs: vec![],
            absent: vec![],
            base: vec![],
            verification: None,
            origin: None,
        }
    }

    fn full_meta() -> BundleMeta {
        meta(vec![
            item(Kind::Image, "docker.io/library/nginx:1.27", None),
            item(Kind::Image, "registry.k8s.io/pause:3.9", None),
            item(Kind::Image, "registry.k8s.io/coredns/coredns:v1.11.1", None),
            item(Kind::Chart, "ghcr.io/example/charts/app:1.2.3", None),
            item(
                Kind::Chart,
                "https://charts.example.org/stable/falco:9.1.0",
                Some("helm/stable/falco-9.1.0.tgz"),
            ),
            item(Kind::TrivyDb, "ghcr.io/aquasecurity/trivy-db:2", None),
            item(Kind::TrivyDb, "ghcr.io/aquasecurity/trivy-java-db:1", None),
            item(Kind::TrivyDb, "mirror.gcr.io/aquasec/trivy-checks:1", None),
            item(
                Kind::FalcoArtifact,
                "ghcr.io/falcosecurity/rules/falco-rules:3",
                None,
            ),
            item(
                Kind::FalcoctlIndex,
                "https://falcosecurity.github.io/falcoctl/index.yaml",
                Some("falco/index.yaml"),
            ),
            item(
                Kind::FalcoDriver,
                "https://download.falco.org/driver/7.0.0%2Bdriver/x86_64/falco_ubuntu-generic_5.15.0-91-generic_101.ko",
                Some("falco/driver/7.0.0+driver/x86_64/falco_ubuntu-generic_5.15.0-91-generic_101.ko"),
            ),
            item(
                Kind::OpensearchPlugin,
                "https://artifacts.opensearch.org/releases/plugins/repository-s3/2.8.0/repository-s3-2.8.0.zip",
                Some("opensearch/plugins/repository-s3/2.8.0/repository-s3-2.8.0.zip"),
            ),
            item(Kind::File, "https://example.org/tool-1.0.tar.gz", Some("files/tools/tool-1.0.tar.gz")),
        ])
    }

    fn opts(dir: &Path) -> EmitOptions {
        EmitOptions {
            dir: dir.to_path_buf(),
            target: Some(Target::parse("harbor.internal/mirror").unwrap()),
            mapping: Mapping {
                max_depth: None,
                rules: vec![
                    MapRule::parse("docker.io=dockerhub").unwrap(),
                    MapRule::parse("registry.k8s.io/pause=k8s/pause").unwrap(),
                ],
                flatten: false,
            },
            files_url: Some("https://files.internal:8080/".into()),
            files_ip: Some("10.65.131.137".parse().unwrap()),
            files_port: None,
            default_host: false,
            ca: Some("/etc/containerd/certs.d/harbor-ca.crt".into()),
            client: None,
            skip_verify: false,
            plain_http: false,
            auth: None,
            carry_ca: None,
        }
    }

    fn read(dir: &Path, rel: &str) -> String {
        std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn yaml_of(dir: &Path, rel: &str) -> Value {
        yaml_serde::from_str(&read(dir, rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn toml_of(dir: &Path, rel: &str) -> toml::Table {
        read(dir, rel)
            .parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    #[test]
    fn hosts_toml_per_source_host_with_override_path_and_the_mapping_caveat() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        let written = emit(&o, &full_meta()).unwrap();
        let rels: Vec<String> = written
            .iter()
            .map(|p| {
                p.strip_prefix(tmp.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        for want in [
            "containerd/certs.d/docker.io/hosts.toml",
            "containerd/certs.d/ghcr.io/hosts.toml",
            "containerd/certs.d/mirror.gcr.io/hosts.toml",
            "containerd/certs.d/registry.k8s.io/hosts.toml",
            KUBESPRAY_FILE,
            "trivy.yaml",
            "trivy-operator-values.yaml",
            "falco-values.yaml",
            "opensearch-values.yaml",
            "helm-repositories.yaml",
            "ck8s/common-config.yaml",
            "ck8s/sc-config.yaml",
            "README.md",
        ] {
            assert!(
                rels.contains(&want.to_string()),
                "{want} missing from {rels:?}"
            );
        }
        assert!(!rels.iter().any(|r| r.contains("_default")));

        let docker = toml_of(tmp.path(), "containerd/certs.d/docker.io/hosts.toml");
        assert_eq!(
            docker["server"].as_str(),
            Some("https://registry-1.docker.io")
        );
        let host = docker["host"]["https://harbor.internal/v2/mirror/dockerhub"]
            .as_table()
            .unwrap();
        assert_eq!(host["override_path"].as_bool(), Some(true));
        assert_eq!(
            host["capabilities"].as_array().unwrap(),
            &vec![toml::Value::from("pull"), toml::Value::from("resolve")]
        );
        assert_eq!(
            host["ca"].as_str(),
            Some("/etc/containerd/certs.d/harbor-ca.crt")
        );
        assert!(host.get("skip_verify").is_none());
        let text = read(tmp.path(), "containerd/certs.d/docker.io/hosts.toml");
        assert!(text.starts_with("# Generated by ferry"), "{text}");
        assert!(text.contains("ck8s-apps"), "{text}");

        // registry.k8s.io: host default keeps the host in the path; pause was mapped finer.
        let k8s = toml_of(tmp.path(), "containerd/certs.d/registry.k8s.io/hosts.toml");
        assert_eq!(k8s["server"].as_str(), Some("https://registry.k8s.io"));
        assert!(k8s["host"]
            .get("https://harbor.internal/v2/mirror/registry.k8s.io")
            .is_some());
        let text = read(tmp.path(), "containerd/certs.d/registry.k8s.io/hosts.toml");
        assert!(
            text.contains("registry.k8s.io/pause:3.9 -> harbor.internal/mirror/k8s/pause"),
            "{text}"
        );
        assert!(!text.contains("coredns"), "{text}");
        let readme = read(tmp.path(), "README.md");
        assert!(readme.contains("cannot express"), "{readme}");
        assert!(
            readme.contains("`registry.k8s.io/pause:3.9` -> `harbor.internal/mirror/k8s/pause`")
        );
    }

    #[test]
    fn kubespray_variable_matches_the_hosts_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = opts(tmp.path());
        o.client = Some(("/etc/ssl/client.crt".into(), "/etc/ssl/client.key".into()));
        o.skip_verify = true;
        o.default_host = true;
        emit(&o, &full_meta()).unwrap();
        let v = yaml_of(tmp.path(), KUBESPRAY_FILE);
        let list = v["containerd_registries_mirrors"].as_sequence().unwrap();
        let prefixes: Vec<&str> = list.iter().filter_map(|e| e["prefix"].as_str()).collect();
        assert_eq!(
            prefixes,
            [
                "docker.io",
                "ghcr.io",
                "mirror.gcr.io",
                "registry.k8s.io",
                "_default"
            ]
        );
        let d = &list[0];
        assert_eq!(d["server"], s("https://registry-1.docker.io"));
        let m = &d["mirrors"][0];
        assert_eq!(m["host"], s("https://harbor.internal/v2/mirror/dockerhub"));
        assert_eq!(m["override_path"], Value::Bool(true));
        assert_eq!(m["skip_verify"], Value::Bool(true));
        assert_eq!(m["ca"][0], s("/etc/containerd/certs.d/harbor-ca.crt"));
        assert_eq!(m["client"][0][1], s("/etc/ssl/client.key"));
        assert_eq!(list[4]["server"], s("https://harbor.internal"));
        // The hosts.toml has the same client pair and skip_verify.
        let t = toml_of(tmp.path(), "containerd/certs.d/docker.io/hosts.toml");
        let h = &t["host"]["https://harbor.internal/v2/mirror/dockerhub"];
        assert_eq!(h["skip_verify"].as_bool(), Some(true));
        assert_eq!(h["client"][0][0].as_str(), Some("/etc/ssl/client.crt"));
        let d = toml_of(tmp.path(), "containerd/certs.d/_default/hosts.toml");
        assert!(d.get("server").is_none());
        assert!(d["host"].get("https://harbor.internal/v2/mirror").is_some());
    }

    #[test]
    fn no_path_means_no_override_path_and_plain_http_gives_http() {
        let tmp = tempfile::tempdir().unwrap();
        let o = EmitOptions {
            dir: tmp.path().to_path_buf(),
            target: Some(Target::parse("127.0.0.1:5000").unwrap()),
            mapping: Mapping {
                max_depth: None,
                rules: vec![],
                flatten: true,
            },
            plain_http: true,
            ..Default::default()
        };
        let m = meta(vec![
            item(Kind::Image, "127.0.0.1:5001/fixtures/multiarch:1.0", None),
            item(Kind::Image, "quay.io/a/b:1", None),
        ]);
        emit(&o, &m).unwrap();
        let t = toml_of(tmp.path(), "containerd/certs.d/127.0.0.1:5001/hosts.toml");
        assert_eq!(t["server"].as_str(), Some("https://127.0.0.1:5001"));
        let h = t["host"]["http://127.0.0.1:5000"].as_table().unwrap();
        assert!(h.get("override_path").is_none());
        let q = toml_of(tmp.path(), "containerd/certs.d/quay.io/hosts.toml");
        assert!(q["host"].get("http://127.0.0.1:5000").is_some());
        // Only images: no trivy, falco, opensearch or helm files.
        for absent in [
            "trivy.yaml",
            "falco-values.yaml",
            "opensearch-values.yaml",
            "helm-repositories.yaml",
            "ck8s/sc-config.yaml",
        ] {
            assert!(!tmp.path().join(absent).exists(), "{absent}");
        }
    }

    #[test]
    fn default_mapping_keeps_the_path_safe_host_under_the_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let o = EmitOptions {
            dir: tmp.path().to_path_buf(),
            target: Some(Target::parse("http://127.0.0.1:5000/mirror").unwrap()),
            ..Default::default()
        };
        let m = meta(vec![item(Kind::Image, "127.0.0.1:5001/a/b:1", None)]);
        emit(&o, &m).unwrap();
        let t = toml_of(tmp.path(), "containerd/certs.d/127.0.0.1:5001/hosts.toml");
        let h = t["host"]["http://127.0.0.1:5000/v2/mirror/127.0.0.1-5001"]
            .as_table()
            .unwrap();
        assert_eq!(h["override_path"].as_bool(), Some(true));
    }

    #[test]
    fn trivy_files_point_at_the_mapped_repositories() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = opts(tmp.path());
        o.target = Some(Target::parse("http://registry.internal:5000").unwrap());
        emit(&o, &full_meta()).unwrap();
        let cli = yaml_of(tmp.path(), "trivy.yaml");
        assert_eq!(
            cli["db"]["repository"][0],
            s("registry.internal:5000/ghcr.io/aquasecurity/trivy-db:2")
        );
        assert_eq!(
            cli["db"]["java-repository"][0],
            s("registry.internal:5000/ghcr.io/aquasecurity/trivy-java-db:1")
        );
        assert_eq!(
            cli["misconfiguration"]["checks-bundle-repository"],
            s("registry.internal:5000/mirror.gcr.io/aquasec/trivy-checks:1")
        );
        assert_eq!(cli["insecure"], Value::Bool(true));
        let op = yaml_of(tmp.path(), "trivy-operator-values.yaml");
        assert_eq!(op["trivy"]["dbRegistry"], s("registry.internal:5000"));
        assert_eq!(
            op["trivy"]["dbRepository"],
            s("ghcr.io/aquasecurity/trivy-db")
        );
        assert_eq!(
            op["trivy"]["javaDbRepository"],
            s("ghcr.io/aquasecurity/trivy-java-db")
        );
        assert_eq!(op["trivy"]["dbRepositoryInsecure"], s("true"));
        assert_eq!(
            op["trivy"]["registry"]["mirror"]["docker.io"],
            s("registry.internal:5000/dockerhub")
        );
        assert_eq!(
            op["trivy"]["registry"]["mirror"]["index.docker.io"],
            s("registry.internal:5000/dockerhub")
        );
        assert_eq!(
            op["trivy"]["registry"]["mirror"]["registry.k8s.io"],
            s("registry.internal:5000/registry.k8s.io")
        );
        assert_eq!(
            op["policiesBundle"]["registry"],
            s("registry.internal:5000")
        );
        assert_eq!(
            op["policiesBundle"]["repository"],
            s("mirror.gcr.io/aquasec/trivy-checks")
        );
        assert_eq!(op["policiesBundle"]["tag"], s("1"));
        let ck = yaml_of(tmp.path(), "ck8s/common-config.yaml");
        let sc = &ck["trivy"]["scanner"];
        assert_eq!(sc["offlineScanEnabled"], Value::Bool(true));
        assert_eq!(sc["dbRegistry"], s("registry.internal:5000"));
        assert_eq!(sc["dbRepositoryInsecure"], Value::Bool(true));
        assert_eq!(
            sc["javaDbRepository"],
            s("ghcr.io/aquasecurity/trivy-java-db")
        );
        assert_eq!(
            sc["registry"]["mirror"]["ghcr.io"],
            s("registry.internal:5000/ghcr.io")
        );
    }

    #[test]
    fn falco_opensearch_helm_and_ck8s_use_the_file_server() {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path());
        emit(&o, &full_meta()).unwrap();
        let f = yaml_of(tmp.path(), "falco-values.yaml");
        let env = &f["driver"]["loader"]["initContainer"]["env"][0];
        assert_eq!(env["name"], s("FALCOCTL_DRIVER_REPOS"));
        assert_eq!(env["value"], s("https://files.internal:8080/falco/driver"));
        assert_eq!(
            f["falcoctl"]["config"]["indexes"][0],
            map(vec![
                ("name", s("ferry")),
                ("url", s("https://files.internal:8080/falco/index.yaml"))
            ])
        );
        let want = s("harbor.internal/mirror/ghcr.io/falcosecurity/rules/falco-rules:3");
        assert_eq!(
            f["falcoctl"]["config"]["artifact"]["install"]["refs"][0],
            want
        );
        assert_eq!(
            f["falcoctl"]["config"]["artifact"]["follow"]["refs"][0],
            want
        );
        // https target: no --plain-http args.
        assert!(f["falcoctl"].get("artifact").is_none());

        let os = yaml_of(tmp.path(), "opensearch-values.yaml");
        assert_eq!(os["plugins"]["enabled"], Value::Bool(true));
        assert_eq!(
            os["plugins"]["installList"][0],
            s("https://files.internal:8080/opensearch/plugins/repository-s3/2.8.0/repository-s3-2.8.0.zip")
        );

        let h = yaml_of(tmp.path(), "helm-repositories.yaml");
        assert_eq!(h["repositories"][0]["name"], s("stable"));
        assert_eq!(
            h["repositories"][0]["url"],
            s("https://files.internal:8080/helm/stable")
        );

        let ck = yaml_of(tmp.path(), "ck8s/common-config.yaml");
        assert_eq!(
            ck["falco"]["artifact"]["install"]["enabled"],
            Value::Bool(true)
        );
        assert_eq!(
            ck["falco"]["customIndexes"][0]["url"],
            s("https://files.internal:8080/falco/index.yaml")
        );
        assert_eq!(ck["falco"]["driver"]["kind"], s("module"));
        assert_eq!(
            ck["falco"]["driver"]["module"]["repoURL"],
            s("https://files.internal:8080/falco/driver")
        );
        assert_eq!(
            ck["networkPolicies"]["falco"]["plugins"],
            map(vec![
                ("ips", seq(vec![s("10.65.131.137/32")])),
                ("ports", seq(vec![Value::Number(8080.into())]))
            ])
        );
        let sc = yaml_of(tmp.path(), "ck8s/sc-config.yaml");
        assert_eq!(
            sc["opensearch"]["plugins"]["installExternalObjectStoragePlugin"],
            Value::Bool(false)
        );
        assert_eq!(
            sc["opensearch"]["plugins"]["additionalPlugins"][0],
            s("https://files.internal:8080/opensearch/plugins/repository-s3/2.8.0/repository-s3-2.8.0.zip")
        );
        assert_eq!(
            sc["networkPolicies"]["opensearch"]["plugins"]["ips"][0],
            s("10.65.131.137/32")
        );

        let readme = read(tmp.path(), "README.md");
        assert!(readme.contains("helm repo add stable https://files.internal:8080/helm/stable"));
        assert!(readme.contains(
            "helm pull oci://harbor.internal/mirror/ghcr.io/example/charts/app --version 1.2.3"
        ));
        assert!(readme.contains("https://files.internal:8080/files/tools/tool-1.0.tar.gz"));
        assert!(readme.contains("ctr --namespace k8s.io images pull --hosts-dir /etc/containerd/certs.d docker.io/library/nginx:1.27"));
        assert!(readme.contains("| `ck8s/sc-config.yaml` |"));
    }

    #[test]
    fn plain_http_adds_falcoctl_plain_http_and_port_defaults_follow_the_scheme() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = opts(tmp.path());
        o.target = Some(Target::parse("http://registry.internal").unwrap());
        o.files_url = Some("http://files.internal".into());
        o.files_ip = Some("fd00::7".parse().unwrap());
        emit(&o, &full_meta()).unwrap();
        let f = yaml_of(tmp.path(), "falco-values.yaml");
        assert_eq!(
            f["falcoctl"]["artifact"]["install"]["args"],
            seq(vec![s("--log-format=json"), s("--plain-http")])
        );
        let ck = yaml_of(tmp.path(), "ck8s/common-config.yaml");
        assert_eq!(
            ck["networkPolicies"]["falco"]["plugins"],
            map(vec![
                ("ips", seq(vec![s("fd00::7/128")])),
                ("ports", seq(vec![Value::Number(80.into())]))
            ])
        );
    }

    #[test]
    fn file_server_content_without_files_url_is_refused_and_nothing_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = opts(tmp.path());
        o.dir = tmp.path().join("out");
        o.files_url = None;
        let err = emit(&o, &full_meta()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--files-url"), "{text}");
        assert!(
            text.contains("Falco drivers") && text.contains("OpenSearch plugins"),
            "{text}"
        );
        assert!(!o.dir.exists());
        o.files_url = Some("ftp://files".into());
        assert!(matches!(
            emit(&o, &full_meta()),
            Err(EmitError::FilesUrl { .. })
        ));
    }

    #[test]
    fn without_a_target_only_file_server_parts_are_written() {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = opts(tmp.path());
        o.target = None;
        let written = emit(&o, &full_meta()).unwrap();
        assert!(!tmp.path().join("containerd").exists());
        assert!(!tmp.path().join(KUBESPRAY_FILE).exists());
        assert!(!tmp.path().join("trivy.yaml").exists());
        assert!(tmp.path().join("opensearch-values.yaml").exists());
        let f = yaml_of(tmp.path(), "falco-values.yaml");
        assert!(f["falcoctl"]["config"].get("artifact").is_none());
        assert_eq!(
            f["driver"]["loader"]["initContainer"]["env"][0]["value"],
            s("https://files.internal:8080/falco/driver")
        );
        assert!(written.last().unwrap().ends_with("README.md"));
    }

    #[test]
    fn output_is_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        emit(&opts(a.path()), &full_meta()).unwrap();
        let mut ob = opts(b.path());
        ob.dir = b.path().to_path_buf();
        emit(&ob, &full_meta()).unwrap();
        for e in walk(a.path()) {
            let rel = e.strip_prefix(a.path()).unwrap();
            assert_eq!(
                std::fs::read(&e).unwrap(),
                std::fs::read(b.path().join(rel)).unwrap(),
                "{}",
                rel.display()
            );
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn no_name_tool_or_option_breaks_out_of_a_comment_or_a_value() {
        for brk in [
            "\n", "\r", "\r\n", "\u{85}", "\u{2028}", "\u{2029}", "\x1b", "\0",
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let mut o = opts(tmp.path());
            o.ca = Some(format!("/ca{brk}[host.\"https://evil\"]"));
            let e = emit(&o, &full_meta()).unwrap_err();
            assert!(e.to_string().starts_with("--emit-ca `/ca\\"), "{e}");
            assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
            o.ca = Some("/etc/ca.crt".into());
            let mut m = full_meta();
            m.name = format!("x{brk}[host.\"https://evil\"]{brk}evil: 1");
            m.tool = format!("t{brk}injected: 1");
            emit(&o, &m).unwrap();
            let docker = toml_of(tmp.path(), "containerd/certs.d/docker.io/hosts.toml");
            let keys: Vec<&String> = docker.keys().collect();
            assert_eq!(keys, ["host", "server"], "{brk:?}");
            let hosts = docker["host"].as_table().unwrap();
            assert_eq!(hosts.len(), 1, "{brk:?}: {hosts:?}");
            let h = hosts.values().next().unwrap();
            assert_eq!(h["ca"].as_str(), o.ca.as_deref(), "{brk:?}");
            for rel in [
                KUBESPRAY_FILE,
                "falco-values.yaml",
                "ck8s/common-config.yaml",
            ] {
                let v = yaml_of(tmp.path(), rel);
                let m = v.as_mapping().unwrap();
                assert!(
                    m.get("evil").is_none() && m.get("injected").is_none(),
                    "{rel} {brk:?}"
                );
                let text = read(tmp.path(), rel);
                if brk != "\n" {
                    assert!(!text.contains(brk), "{rel} {brk:?}:\n{text}");
                }
            }
        }
    }
}
