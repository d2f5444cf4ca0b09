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
//! Every file is written by a serializer (`toml` for hosts.toml,
//! serde_yaml_ng for YAML); the comment headers quote the bundle's name,
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
use serde_yaml_ng::{Mapping as YamlMap, Value};

use ferry_bundle::text::escape as esc;

use crate::target::{path_safe_host, Mapping, Target, TargetError};

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
    pub auth: Option<crate::runtimes::PullCredential>,
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
/// docker) speaks plain HTTP to when no scheme was given.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        }
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

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

/// Which Trivy artifact an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrivyKind {
    Db,
    JavaDb,
    Checks,
}

fn trivy_kind(r: &Reference) -> Option<TrivyKind> {
    if r.repository.ends_with("trivy-java-db") {
        Some(TrivyKind::JavaDb)
    } else if r.repository.ends_with("trivy-checks") {
        Some(TrivyKind::Checks)
    } else if r.repository.ends_with("trivy-db") {
        Some(TrivyKind::Db)
    } else {
        None
    }
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
            .map(|m| crate::runtimes::pull_secret("x", m, a))
            .and_then(|v| v["data"][".dockerconfigjson"].as_str().map(str::to_string));
        content.contains(&a.password)
            || content.contains(&a.basic())
            || secret.is_some_and(|x| content.contains(&x))
    }

    /// The mirror as the node runtimes see it.
    fn node_mirror(&self) -> Option<crate::runtimes::NodeMirror> {
        let t = self.opts.target.as_ref()?;
        Some(crate::runtimes::NodeMirror {
            host: t.host.clone(),
            plain_http: self.scheme == "http",
            skip_verify: self.opts.skip_verify,
            ca_path: self
                .opts
                .ca
                .clone()
                .or_else(|| self.ca_pem.as_ref().map(|_| NODE_CA_PATH.to_string())),
            ca_pem: self.ca_pem.clone(),
            client: self.opts.client.clone(),
            auth: self.opts.auth.clone(),
        })
    }

    /// Each source host and where the mirror holds it, for the runtimes.
    fn source_mirrors(&self, hosts: &[HostPlan]) -> Vec<crate::runtimes::SourceMirror> {
        hosts
            .iter()
            .map(|hp| crate::runtimes::SourceMirror {
                source: hp.host.clone(),
                path: hp.path.clone(),
                digest_only: self
                    .registry
                    .iter()
                    .filter(|r| r.source.registry == hp.host)
                    .all(|r| r.source.tag.is_none()),
            })
            .collect()
    }

    /// Every node runtime's file (see [`crate::runtimes`]).
    fn runtime_files(&self, hosts: &[HostPlan]) -> Result<Vec<(String, String)>, EmitError> {
        use crate::runtimes as rt;
        let Some(m) = self.node_mirror() else {
            return Ok(Vec::new());
        };
        let sources = self.source_mirrors(hosts);
        let mut out = Vec::new();
        if sources.is_empty() {
            return Ok(out);
        }
        let head = |lines: &[&str]| {
            let mut h = self.header.clone();
            h.push(String::new());
            h.extend(lines.iter().map(|l| l.to_string()));
            h
        };
        let file = "containers/registries.conf";
        out.push((
            file.to_string(),
            format!(
                "{}\n{}",
                comment(&head(&[
                    "CRI-O, podman, skopeo, buildah: install as /etc/containers/registries.conf.d/50-ferry.conf",
                    "(containers-registries.conf v2). Each source registry is pulled from the mirror; the",
                    "source stays as the fallback, unreachable on an isolated network.",
                ])),
                toml_doc(file, &rt::registries_conf(&m, &sources))?
            ),
        ));
        if let Some(pem) = &self.ca_pem {
            out.push((format!("containers/certs.d/{}/ca.crt", m.host), pem.clone()));
            out.push(("ca.crt".to_string(), pem.clone()));
        }
        if let Some(a) = &self.opts.auth {
            let v = rt::containers_auth(&m, a);
            out.push((
                "containers/auth.json".to_string(),
                serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
            ));
            let file = "containerd/conf.d/ferry-registry-auth.toml";
            out.push((
                file.to_string(),
                format!(
                    "{}\n{}",
                    comment(&head(&[
                        "containerd 1.x: install in /etc/containerd/conf.d/ with",
                        "imports = [\"/etc/containerd/conf.d/*.toml\"] in config.toml (restart containerd).",
                        "The credential is also in every hosts.toml (authorization header). Mode 0600.",
                    ])),
                    toml_doc(file, &rt::containerd_auth(&m, a))?
                ),
            ));
            let file = "kubernetes/pull-secret.yaml";
            out.push((
                file.to_string(),
                yaml(
                    file,
                    &head(&[
                        "A kubernetes.io/dockerconfigjson Secret for the mirror: `kubectl -n NS apply -f`,",
                        "then imagePullSecrets: [{name: ferry-mirror-pull}] (Trivy: trivy.imagePullSecret).",
                    ]),
                    &rt::pull_secret("ferry-mirror-pull", &m, a),
                )?,
            ));
        }
        let file = "k3s/registries.yaml";
        out.push((
            file.to_string(),
            yaml(
                file,
                &head(&[
                    "k3s: /etc/rancher/k3s/registries.yaml; RKE2: /etc/rancher/rke2/registries.yaml (restart the service).",
                    "With a carried CA, copy ca.crt to /etc/ferry/mirror-ca.crt on every node.",
                ]),
                &rt::k3s_registries(&m, &sources),
            )?,
        ));
        let file = "talos/registries-patch.yaml";
        out.push((
            file.to_string(),
            yaml(
                file,
                &head(&["Talos: `talosctl patch machineconfig --patch @registries-patch.yaml` (or at generation)."]),
                &rt::talos_patch(&m, &sources),
            )?,
        ));
        let file = "openshift/image-mirror-sets.yaml";
        let mut docs = comment(&head(&[
            "OpenShift 4.13+: `oc apply -f image-mirror-sets.yaml` (the Machine Config Operator rolls the nodes).",
            "The mirror's CA goes in the cluster's additionalTrustedCA; its credential in the global pull secret.",
        ]));
        for (i, d) in rt::openshift_mirror_sets("ferry-mirror", &m, &sources)
            .iter()
            .enumerate()
        {
            if i > 0 {
                docs.push_str("---\n");
            }
            docs.push_str(&yaml(file, &[], d)?);
        }
        out.push((file.to_string(), docs));
        if let Some(d) = rt::docker_daemon(&m, &sources) {
            out.push((
                "docker/daemon.json".to_string(),
                serde_json::to_string_pretty(&d).unwrap_or_default() + "\n",
            ));
        }
        Ok(out)
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

    /// `[host."<url>"]`: the mirror, as a TOML table.
    fn host_block(&self, url: &str, override_path: bool) -> toml::Table {
        use toml::Value as T;
        let mut h = toml::Table::new();
        h.insert(
            "capabilities".into(),
            T::Array(vec![T::from("pull"), T::from("resolve")]),
        );
        if override_path {
            h.insert("override_path".into(), T::Boolean(true));
        }
        if let Some(ca) = &self.opts.ca {
            h.insert("ca".into(), T::from(ca.as_str()));
        } else if self.ca_pem.is_some() {
            // Copied beside this hosts.toml; containerd resolves a relative
            // `ca` against the host's directory.
            h.insert("ca".into(), T::from("ca.crt"));
        }
        if let Some(a) = &self.opts.auth {
            let mut header = toml::Table::new();
            header.insert(
                "authorization".into(),
                T::from(format!("Basic {}", a.basic())),
            );
            h.insert("header".into(), T::Table(header));
        }
        if let Some((cert, key)) = &self.opts.client {
            h.insert(
                "client".into(),
                T::Array(vec![T::Array(vec![
                    T::from(cert.as_str()),
                    T::from(key.as_str()),
                ])]),
            );
        }
        if self.opts.skip_verify {
            h.insert("skip_verify".into(), T::Boolean(true));
        }
        let mut hosts = toml::Table::new();
        hosts.insert(url.to_string(), T::Table(h));
        hosts
    }

    fn hosts_toml(&self, target: &Target, hp: &HostPlan) -> Result<String, EmitError> {
        let mut head = self.header.clone();
        head.push(String::new());
        head.push(format!(
            "Install as /etc/containerd/certs.d/{}/hosts.toml on every node; containerd must have",
            hp.host
        ));
        head.push(
            "config_path = \"/etc/containerd/certs.d\" in its CRI registry section (no restart needed)."
                .to_string(),
        );
        head.push(format!(
            "Pulls of {}/… go to the mirror first; `server` (upstream) is only the fallback.",
            hp.host
        ));
        if !hp.exceptions.is_empty() {
            head.push(String::new());
            head.push(format!(
                "NOTE: a --map rule finer than the host sent these items elsewhere; hosts.toml maps a whole host \
                 to one path ({}), so pulls of them by their source name do not reach the mirror:",
                if hp.path.is_empty() { "the registry root" } else { hp.path.as_str() }
            ));
            for (src, dst) in &hp.exceptions {
                head.push(format!("  {src} -> {dst}"));
            }
            head.push(
                "Pull those by their target name, or import them with a host-level mapping."
                    .to_string(),
            );
        }
        let mut doc = toml::Table::new();
        doc.insert(
            "server".into(),
            toml::Value::from(upstream_server(&hp.host)),
        );
        doc.insert(
            "host".into(),
            toml::Value::Table(
                self.host_block(&self.mirror_url(target, &hp.path), !hp.path.is_empty()),
            ),
        );
        let file = format!("containerd/certs.d/{}/hosts.toml", hp.host);
        Ok(format!("{}\n{}", comment(&head), toml_doc(&file, &doc)?))
    }

    fn default_toml(&self, target: &Target) -> Result<String, EmitError> {
        let path = target.prefix.clone();
        let mut head = self.header.clone();
        head.push(String::new());
        head.push("Install as /etc/containerd/certs.d/_default/hosts.toml on every node: registries without".to_string());
        head.push(
            "their own directory are pulled through the mirror, at <mirror>/<repository>."
                .to_string(),
        );
        if !self.opts.mapping.flatten {
            head.push(
                "NOTE: this import kept the source host in target names (no --flatten), which a"
                    .to_string(),
            );
            head.push(
                "host-independent entry cannot add: only content stored without it is found here."
                    .to_string(),
            );
        }
        let mut doc = toml::Table::new();
        doc.insert(
            "host".into(),
            toml::Value::Table(self.host_block(&self.mirror_url(target, &path), !path.is_empty())),
        );
        Ok(format!(
            "{}\n{}",
            comment(&head),
            toml_doc("containerd/certs.d/_default/hosts.toml", &doc)?
        ))
    }

    fn kubespray_mirror(&self, url: String, override_path: bool) -> Value {
        let mut m = YamlMap::new();
        m.insert(s("host"), s(url));
        m.insert(s("capabilities"), seq(vec![s("pull"), s("resolve")]));
        m.insert(s("override_path"), Value::Bool(override_path));
        m.insert(s("skip_verify"), Value::Bool(self.opts.skip_verify));
        if let Some(ca) = &self.opts.ca {
            m.insert(s("ca"), seq(vec![s(ca.clone())]));
        }
        if let Some((cert, key)) = &self.opts.client {
            m.insert(
                s("client"),
                seq(vec![seq(vec![s(cert.clone()), s(key.clone())])]),
            );
        }
        Value::Mapping(m)
    }

    fn kubespray(&self, target: &Target, hosts: &[HostPlan]) -> Result<String, EmitError> {
        let mut items = Vec::new();
        for hp in hosts {
            items.push(map(vec![
                ("prefix", s(hp.host.clone())),
                ("server", s(upstream_server(&hp.host))),
                (
                    "mirrors",
                    seq(vec![self.kubespray_mirror(
                        self.mirror_url(target, &hp.path),
                        !hp.path.is_empty(),
                    )]),
                ),
            ]));
        }
        if self.opts.default_host {
            items.push(map(vec![
                ("prefix", s("_default")),
                // Kubespray renders `https://<prefix>` without one.
                ("server", s(format!("{}://{}", self.scheme, target.host))),
                (
                    "mirrors",
                    seq(vec![self.kubespray_mirror(
                        self.mirror_url(target, &target.prefix),
                        !target.prefix.is_empty(),
                    )]),
                ),
            ]));
        }
        let mut head = self.header.clone();
        head.push(String::new());
        head.push(
            "Kubespray: put this variable in the inventory (e.g. group_vars/all/containerd.yml);"
                .to_string(),
        );
        head.push(
            "Kubespray writes each entry to /etc/containerd/certs.d/<prefix>/hosts.toml. Releases"
                .to_string(),
        );
        head.push(
            "that predate `override_path`, `ca` and `client` in hosts.toml.j2 ignore those keys."
                .to_string(),
        );
        if self.opts.default_host {
            head.push(
                "The `_default` entry names the mirror as `server`, because Kubespray needs one."
                    .to_string(),
            );
        }
        if hosts.iter().any(|h| !h.exceptions.is_empty()) {
            head.push(
                "NOTE: some items were mapped finer than their host; see README.md.".to_string(),
            );
        }
        yaml(KUBESPRAY_FILE, &head, &{
            let mut doc = vec![("containerd_registries_mirrors", seq(items))];
            if let Some(a) = &self.opts.auth {
                doc.push((
                    "containerd_registry_auth",
                    seq(vec![map(vec![
                        ("registry", s(target.host.clone())),
                        ("username", s(a.username.clone())),
                        ("password", s(a.password.clone())),
                    ])]),
                ));
            }
            map(doc)
        })
    }

    fn trivy_items(&self, kind: TrivyKind) -> Vec<&RegItem<'a>> {
        self.registry
            .iter()
            .filter(|r| r.item.kind == Kind::TrivyDb && trivy_kind(&r.source) == Some(kind))
            .collect()
    }

    fn unknown_trivy(&self) -> Vec<String> {
        self.registry
            .iter()
            .filter(|r| r.item.kind == Kind::TrivyDb && trivy_kind(&r.source).is_none())
            .map(|r| r.item.reference.clone())
            .collect()
    }

    fn trivy_cli(&self) -> Result<String, EmitError> {
        let refs = |k| -> Vec<Value> {
            self.trivy_items(k)
                .into_iter()
                .filter_map(|r| Self::target_ref(r).map(s))
                .collect()
        };
        let mut doc = YamlMap::new();
        let mut db = YamlMap::new();
        let dbs = refs(TrivyKind::Db);
        if !dbs.is_empty() {
            db.insert(s("repository"), seq(dbs));
        }
        let java = refs(TrivyKind::JavaDb);
        if !java.is_empty() {
            db.insert(s("java-repository"), seq(java));
        }
        if !db.is_empty() {
            doc.insert(s("db"), Value::Mapping(db));
        }
        if let Some(first) = refs(TrivyKind::Checks).into_iter().next() {
            doc.insert(
                s("misconfiguration"),
                map(vec![("checks-bundle-repository", first)]),
            );
        }
        if self.insecure() {
            doc.insert(s("insecure"), Value::Bool(true));
        }
        let mut head = self.header.clone();
        head.push(String::new());
        head.push("Trivy CLI: `trivy --config trivy.yaml …`, or merge into your trivy.yaml. Setting these".to_string());
        head.push("replaces Trivy's default (public) repositories.".to_string());
        let unknown = self.unknown_trivy();
        if !unknown.is_empty() {
            head.push(format!(
                "Not recognised as DB, Java DB or checks (left out): {}",
                unknown.join(", ")
            ));
        }
        yaml("trivy.yaml", &head, &Value::Mapping(doc))
    }

    fn trivy_operator(&self, target: &Target, hosts: &[HostPlan]) -> Result<String, EmitError> {
        let mut trivy = YamlMap::new();
        if let Some(r) = self.trivy_items(TrivyKind::Db).first() {
            if let Some(repo) = &r.target {
                trivy.insert(s("dbRegistry"), s(repo.host.clone()));
                trivy.insert(s("dbRepository"), s(repo.path.clone()));
            }
        }
        if let Some(r) = self.trivy_items(TrivyKind::JavaDb).first() {
            if let Some(repo) = &r.target {
                trivy.insert(s("javaDbRegistry"), s(repo.host.clone()));
                trivy.insert(s("javaDbRepository"), s(repo.path.clone()));
            }
        }
        // The chart keeps this one as a string.
        trivy.insert(
            s("dbRepositoryInsecure"),
            s(if self.insecure() { "true" } else { "false" }),
        );
        trivy.insert(s("offlineScan"), Value::Bool(true));
        if self.opts.auth.is_some() {
            // The pull Secret of kubernetes/pull-secret.yaml, for the
            // scan jobs that pull the images from the mirror.
            trivy.insert(s("imagePullSecret"), s("ferry-mirror-pull"));
        }
        if self.scheme == "http" {
            trivy.insert(
                s("nonSslRegistries"),
                map(vec![("ferry", s(target.host.clone()))]),
            );
        }
        if self.opts.skip_verify {
            trivy.insert(
                s("insecureRegistries"),
                map(vec![("ferry", s(target.host.clone()))]),
            );
        }
        let mirrors = self.registry_mirrors(target, hosts);
        if !mirrors.is_empty() {
            trivy.insert(
                s("registry"),
                map(vec![("mirror", Value::Mapping(mirrors))]),
            );
        }
        let checks = self.trivy_items(TrivyKind::Checks);
        if !checks.is_empty() {
            trivy.insert(s("useBuiltinRegoPolicies"), s("true"));
            trivy.insert(s("useEmbeddedRegoPolicies"), s("false"));
        }
        let mut doc = YamlMap::new();
        doc.insert(s("trivy"), Value::Mapping(trivy));
        if let Some(r) = checks.first() {
            if let Some(repo) = &r.target {
                let mut pb = YamlMap::new();
                pb.insert(s("registry"), s(repo.host.clone()));
                pb.insert(s("repository"), s(repo.path.clone()));
                if let Some(tag) = &r.source.tag {
                    pb.insert(s("tag"), s(tag.clone()));
                }
                if self.insecure() {
                    pb.insert(s("insecure"), Value::Bool(true));
                }
                doc.insert(s("policiesBundle"), Value::Mapping(pb));
            }
        }
        let mut head = self.header.clone();
        head.push(String::new());
        head.push("trivy-operator chart values: `helm upgrade --install … -f trivy-operator-values.yaml`.".to_string());
        head.push(
            "`trivy.registry.mirror` sends the images it scans through the mirror too.".to_string(),
        );
        yaml("trivy-operator-values.yaml", &head, &Value::Mapping(doc))
    }

    /// Source host → `mirror host/prefix`, for Trivy's registry mirrors.
    fn registry_mirrors(&self, target: &Target, hosts: &[HostPlan]) -> YamlMap {
        let mut m = YamlMap::new();
        for hp in hosts {
            let mirror = Self::mirror_name(target, &hp.path);
            m.insert(s(hp.host.clone()), s(mirror.clone()));
            if hp.host == DOCKER_HUB {
                // go-containerregistry names Docker Hub images index.docker.io/….
                m.insert(s("index.docker.io"), s(mirror));
            }
        }
        m
    }

    fn falco_refs(&self) -> Vec<Value> {
        self.registry
            .iter()
            .filter(|r| r.item.kind == Kind::FalcoArtifact)
            .filter_map(|r| Self::target_ref(r).map(s))
            .collect()
    }

    fn falco(&self) -> Result<String, EmitError> {
        let mut doc = YamlMap::new();
        if self.has(Kind::FalcoDriver) {
            doc.insert(
                s("driver"),
                map(vec![
                    ("kind", s("kmod")),
                    (
                        "loader",
                        map(vec![(
                            "initContainer",
                            map(vec![(
                                "env",
                                seq(vec![map(vec![
                                    ("name", s("FALCOCTL_DRIVER_REPOS")),
                                    ("value", s(self.files("falco/driver"))),
                                ])]),
                            )]),
                        )]),
                    ),
                ]),
            );
        }
        let refs = self.falco_refs();
        let mut falcoctl = YamlMap::new();
        if !refs.is_empty() && self.scheme == "http" {
            let args = seq(vec![s("--log-format=json"), s("--plain-http")]);
            falcoctl.insert(
                s("artifact"),
                map(vec![
                    ("install", map(vec![("args", args.clone())])),
                    ("follow", map(vec![("args", args)])),
                ]),
            );
        }
        let mut config = YamlMap::new();
        if self.has(Kind::FalcoctlIndex) {
            config.insert(
                s("indexes"),
                seq(vec![map(vec![
                    ("name", s("ferry")),
                    ("url", s(self.files("falco/index.yaml"))),
                ])]),
            );
        }
        if !refs.is_empty() {
            config.insert(
                s("artifact"),
                map(vec![
                    ("install", map(vec![("refs", seq(refs.clone()))])),
                    ("follow", map(vec![("refs", seq(refs))])),
                ]),
            );
        }
        if !config.is_empty() {
            falcoctl.insert(s("config"), Value::Mapping(config));
        }
        if !falcoctl.is_empty() {
            doc.insert(s("falcoctl"), Value::Mapping(falcoctl));
        }
        let mut head = self.header.clone();
        head.push(String::new());
        head.push(
            "Falco chart values: `helm upgrade --install falco … -f falco-values.yaml`. The driver"
                .to_string(),
        );
        head.push("loader asks <repo>/<driver version, `+` escaped as %2B>/<arch>/<file>: the file server".to_string());
        head.push("must decode %2B to the literal `+` directory ferry wrote.".to_string());
        if self.has(Kind::FalcoctlIndex) {
            head.push("The falcoctl index on the file server lists only the bundled artifacts, at the mirror,".to_string());
            head.push(
                "without signatures (keyless cosign verification needs the internet).".to_string(),
            );
        }
        yaml("falco-values.yaml", &head, &Value::Mapping(doc))
    }

    fn plugin_urls(&self) -> Vec<Value> {
        self.meta
            .items
            .iter()
            .filter(|i| i.kind == Kind::OpensearchPlugin)
            .filter_map(|i| i.path.as_deref().map(|p| s(self.files(p))))
            .collect()
    }

    fn opensearch(&self) -> Result<String, EmitError> {
        let doc = map(vec![(
            "plugins",
            map(vec![
                ("enabled", Value::Bool(true)),
                ("installList", seq(self.plugin_urls())),
            ]),
        )]);
        let mut head = self.header.clone();
        head.push(String::new());
        head.push("OpenSearch chart values: `opensearch-plugin install -b <url>` runs for each entry before".to_string());
        head.push("OpenSearch starts. URL installs skip checksum and signature checks: ferry verified the".to_string());
        head.push(
            "zip against its .sha512 and .sig at export, and the .sha512 sits next to it."
                .to_string(),
        );
        yaml("opensearch-values.yaml", &head, &doc)
    }

    /// Names of the classic Helm repositories on the file server (`helm/<name>/…`).
    fn classic_repos(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for i in self.meta.items.iter().filter(|i| i.kind == Kind::Chart) {
            let Some(p) = &i.path else { continue };
            let mut parts = p.splitn(3, '/');
            if let (Some("helm"), Some(repo), Some(_file)) =
                (parts.next(), parts.next(), parts.next())
            {
                out.insert(repo.to_string());
            }
        }
        out
    }

    fn helm_repos(&self) -> Result<String, EmitError> {
        let repos: Vec<Value> = self
            .classic_repos()
            .iter()
            .map(|name| {
                map(vec![
                    ("name", s(name.clone())),
                    ("url", s(self.files(&format!("helm/{name}")))),
                    ("caFile", s("")),
                    ("certFile", s("")),
                    ("keyFile", s("")),
                    ("insecure_skip_tls_verify", Value::Bool(false)),
                    ("pass_credentials_all", Value::Bool(false)),
                    ("username", s("")),
                    ("password", s("")),
                ])
            })
            .collect();
        let doc = map(vec![
            ("apiVersion", s("")),
            ("generated", s("0001-01-01T00:00:00Z")),
            ("repositories", seq(repos)),
        ]);
        let mut head = self.header.clone();
        head.push(String::new());
        head.push(
            "Helm repository file: `helm --repository-config helm-repositories.yaml repo update`,"
                .to_string(),
        );
        head.push("or add each with `helm repo add` (see README.md).".to_string());
        yaml("helm-repositories.yaml", &head, &doc)
    }

    /// The file server's network policy entry, when its IP or port is known.
    fn file_server_policy(&self) -> Option<Value> {
        if self.opts.files_ip.is_none() && self.opts.files_port.is_none() {
            return None;
        }
        let ip = match self.opts.files_ip {
            Some(IpAddr::V4(v4)) => format!("{v4}/32"),
            Some(IpAddr::V6(v6)) => format!("{v6}/128"),
            None => "set-me".to_string(),
        };
        let port = self.opts.files_port.or_else(|| {
            let (scheme, authority) = url_parts(self.files_url.as_deref()?)?;
            match authority.rsplit_once(':') {
                Some((_, p)) if !authority.ends_with(']') => p.parse().ok(),
                _ => Some(if scheme == "https" { 443 } else { 80 }),
            }
        });
        let port = match port {
            Some(p) => Value::Number(p.into()),
            None => s("set-me"),
        };
        Some(map(vec![
            ("ips", seq(vec![s(ip)])),
            ("ports", seq(vec![port])),
        ]))
    }

    fn ck8s_common(&self, hosts: &[HostPlan]) -> Result<Option<String>, EmitError> {
        let mut doc = YamlMap::new();
        // falco
        let mut falco = YamlMap::new();
        if self.has(Kind::FalcoctlIndex)
            || (self.opts.target.is_some() && self.has(Kind::FalcoArtifact))
        {
            falco.insert(
                s("artifact"),
                map(vec![("install", map(vec![("enabled", Value::Bool(true))]))]),
            );
        }
        if self.has(Kind::FalcoctlIndex) {
            falco.insert(
                s("customIndexes"),
                seq(vec![map(vec![
                    ("name", s("ferry")),
                    ("url", s(self.files("falco/index.yaml"))),
                ])]),
            );
        }
        if self.has(Kind::FalcoDriver) {
            falco.insert(
                s("driver"),
                map(vec![
                    ("kind", s("module")),
                    (
                        "module",
                        map(vec![("repoURL", s(self.files("falco/driver")))]),
                    ),
                ]),
            );
        }
        let falco_files = self.has(Kind::FalcoDriver) || self.has(Kind::FalcoctlIndex);
        if !falco.is_empty() {
            doc.insert(s("falco"), Value::Mapping(falco));
        }
        // trivy
        if let Some(target) = &self.opts.target {
            let mut scanner = YamlMap::new();
            let has_trivy = self.registry.iter().any(|r| r.item.kind == Kind::TrivyDb);
            if has_trivy {
                scanner.insert(s("offlineScanEnabled"), Value::Bool(true));
                if let Some(repo) = self
                    .trivy_items(TrivyKind::Db)
                    .first()
                    .and_then(|r| r.target.as_ref())
                {
                    scanner.insert(s("dbRegistry"), s(repo.host.clone()));
                    scanner.insert(s("dbRepository"), s(repo.path.clone()));
                }
                scanner.insert(s("dbRepositoryInsecure"), Value::Bool(self.insecure()));
                if let Some(repo) = self
                    .trivy_items(TrivyKind::JavaDb)
                    .first()
                    .and_then(|r| r.target.as_ref())
                {
                    scanner.insert(s("javaDbRegistry"), s(repo.host.clone()));
                    scanner.insert(s("javaDbRepository"), s(repo.path.clone()));
                }
            }
            let mirrors = self.registry_mirrors(target, hosts);
            if !mirrors.is_empty() {
                scanner.insert(
                    s("registry"),
                    map(vec![("mirror", Value::Mapping(mirrors))]),
                );
            }
            if !scanner.is_empty() {
                doc.insert(s("trivy"), map(vec![("scanner", Value::Mapping(scanner))]));
            }
        }
        if falco_files {
            if let Some(policy) = self.file_server_policy() {
                doc.insert(
                    s("networkPolicies"),
                    map(vec![("falco", map(vec![("plugins", policy)]))]),
                );
            }
        }
        if doc.is_empty() {
            return Ok(None);
        }
        let mut head = self.header.clone();
        head.push(String::new());
        head.push(
            "Compliant Kubernetes: merge into common-config.yaml (air-gapped flavour).".to_string(),
        );
        if self.has(Kind::FalcoDriver) {
            head.push(
                "CK8s releases that pass falco.driver.module.repoURL as FALCOCTL_DRIVER_NAME need"
                    .to_string(),
            );
            head.push("falco-values.yaml's FALCOCTL_DRIVER_REPOS instead; `module` is what CK8s calls kmod.".to_string());
        }
        yaml("ck8s/common-config.yaml", &head, &Value::Mapping(doc)).map(Some)
    }

    fn ck8s_sc(&self) -> Result<Option<String>, EmitError> {
        if !self.has(Kind::OpensearchPlugin) {
            return Ok(None);
        }
        let mut doc = YamlMap::new();
        doc.insert(
            s("opensearch"),
            map(vec![(
                "plugins",
                map(vec![
                    ("installExternalObjectStoragePlugin", Value::Bool(false)),
                    ("additionalPlugins", seq(self.plugin_urls())),
                ]),
            )]),
        );
        if let Some(policy) = self.file_server_policy() {
            doc.insert(
                s("networkPolicies"),
                map(vec![("opensearch", map(vec![("plugins", policy)]))]),
            );
        }
        let mut head = self.header.clone();
        head.push(String::new());
        head.push("Compliant Kubernetes: merge into sc-config.yaml (service cluster).".to_string());
        yaml("ck8s/sc-config.yaml", &head, &Value::Mapping(doc)).map(Some)
    }

    fn readme(&self, hosts: &[HostPlan], files: &[(String, String)]) -> String {
        let mut r = String::new();
        r.push_str(&format!(
            "# Client configuration for bundle `{}`\n\n",
            esc(&self.meta.name)
        ));
        r.push_str(&format!(
            "Generated by ferry {} (`ferry import --emit-config`) from the bundle whose index.json is\n`{}` (written by {}). Re-run the import to regenerate it.\n\n",
            env!("CARGO_PKG_VERSION"),
            self.meta.index.digest,
            esc(&self.meta.tool)
        ));
        if let Some(t) = &self.opts.target {
            r.push_str(&format!(
                "Registry mirror: `{}://{}`{}.\n",
                self.scheme,
                t.host,
                if t.prefix.is_empty() {
                    String::new()
                } else {
                    format!(", under `{}/`", t.prefix)
                }
            ));
        } else {
            r.push_str("No target registry was given: only the file-server parts are written.\n");
        }
        if let Some(u) = &self.files_url {
            r.push_str(&format!("File server: `{u}`.\n"));
        }
        r.push_str("\n## Where each file goes\n\n| file | where it goes |\n|---|---|\n");
        for (f, _) in files {
            let what = if let Some(host) = f
                .strip_prefix("containerd/certs.d/")
                .and_then(|x| x.strip_suffix("/hosts.toml"))
            {
                format!("every node: `/etc/containerd/certs.d/{host}/hosts.toml` (needs `config_path = \"/etc/containerd/certs.d\"` in containerd's CRI registry config)")
            } else {
                match f.as_str() {
                    KUBESPRAY_FILE => "Kubespray inventory, e.g. `group_vars/all/containerd.yml` (variable `containerd_registries_mirrors`; Kubespray writes the hosts.toml files)".to_string(),
                    "trivy.yaml" => "Trivy CLI: `trivy --config trivy.yaml` (`db.repository`, `db.java-repository`, `misconfiguration.checks-bundle-repository`)".to_string(),
                    "trivy-operator-values.yaml" => "trivy-operator chart: `-f trivy-operator-values.yaml`".to_string(),
                    "falco-values.yaml" => "Falco chart: `-f falco-values.yaml`".to_string(),
                    "opensearch-values.yaml" => "OpenSearch chart: `-f opensearch-values.yaml`".to_string(),
                    "helm-repositories.yaml" => "Helm: `helm --repository-config helm-repositories.yaml repo update`".to_string(),
                    "ck8s/common-config.yaml" => "Compliant Kubernetes: merge into `common-config.yaml`".to_string(),
                    "ck8s/sc-config.yaml" => "Compliant Kubernetes: merge into `sc-config.yaml`".to_string(),
                    "containers/registries.conf" => "CRI-O, podman, skopeo: `/etc/containers/registries.conf.d/50-ferry.conf`".to_string(),
                    "containers/auth.json" => "CRI-O, podman, skopeo: `/etc/containers/auth.json` (or `REGISTRY_AUTH_FILE`); CRI-O: `global_auth_file`".to_string(),
                    "containerd/conf.d/ferry-registry-auth.toml" => "containerd 1.x CRI credential: `/etc/containerd/conf.d/` with `imports` in config.toml".to_string(),
                    "kubernetes/pull-secret.yaml" => "a pull Secret: `kubectl -n NAMESPACE apply -f`, then `imagePullSecrets` (Trivy: `trivy.imagePullSecret`)".to_string(),
                    "k3s/registries.yaml" => "k3s: `/etc/rancher/k3s/registries.yaml`; RKE2: `/etc/rancher/rke2/registries.yaml`".to_string(),
                    "talos/registries-patch.yaml" => "Talos: `talosctl patch machineconfig --patch @registries-patch.yaml`".to_string(),
                    "openshift/image-mirror-sets.yaml" => "OpenShift 4.13+: `oc apply -f` (ImageDigestMirrorSet, ImageTagMirrorSet)".to_string(),
                    "docker/daemon.json" => "Docker Engine: merge into `/etc/docker/daemon.json` (Docker mirrors only Docker Hub)".to_string(),
                    "ca.crt" => "the mirror's CA for k3s/RKE2: `/etc/ferry/mirror-ca.crt` on every node".to_string(),
                    x if x.ends_with("/ca.crt") => format!("the mirror's CA, beside its configuration: `/etc/{x}`"),
                    _ => "-".to_string(),
                }
            };
            let secret = if self.is_secret(
                &files
                    .iter()
                    .find(|(n, _)| n == f)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default(),
            ) {
                " **Holds the pull credential: mode 0600, keep it so.**"
            } else {
                ""
            };
            r.push_str(&format!("| `{f}` | {what}{secret} |\n"));
        }
        r.push_str("| `README.md` | this file |\n");
        if self.opts.auth.is_some() {
            r.push_str("\nThe mirror needs credentials: the pull-only credential given with `--emit-username` is in the\nfiles marked above (mode 0600). ferry never prints it; distribute those files as secrets.\n");
        } else {
            r.push_str("\nNo credential was given (`--emit-username`): if the mirror needs one, nodes get 401 until it is configured.\n");
        }
        if self.opts.target.is_some()
            && self.scheme == "https"
            && self.opts.ca.is_none()
            && self.ca_pem.is_none()
        {
            r.push_str("No CA was given or carried: nodes must already trust the mirror's certificate (the system trust store), or pulls fail x509 verification.\n");
        }
        if self.opts.target.is_some() && !files.iter().any(|(f, _)| f == "docker/daemon.json") {
            r.push_str("No `docker/daemon.json`: Docker Engine can mirror only `docker.io`, and only to a mirror serving it at its root (this mapping gives it a path, or the bundle has no docker.io content).\n");
        }
        let exceptions: Vec<&(String, String)> =
            hosts.iter().flat_map(|h| h.exceptions.iter()).collect();
        if !exceptions.is_empty() {
            r.push_str("\n## What containerd's hosts.toml cannot express\n\n");
            r.push_str("A hosts.toml maps a whole source host to one path at the mirror. These items were sent\nelsewhere by a `--map` rule finer than their host, so a pull by their source name does not\nreach them; pull them by their target name, or import them with a host-level mapping:\n\n");
            for (src, dst) in exceptions {
                r.push_str(&format!("- `{}` -> `{}`\n", esc(src), esc(dst)));
            }
        }
        let repos = self.classic_repos();
        let oci: Vec<&RegItem<'_>> = self
            .registry
            .iter()
            .filter(|x| x.item.kind == Kind::Chart)
            .collect();
        if !repos.is_empty() || !oci.is_empty() {
            r.push_str("\n## Helm charts\n\n");
            if !repos.is_empty() {
                r.push_str("Classic repositories on the file server:\n\n```sh\n");
                for name in &repos {
                    r.push_str(&format!(
                        "helm repo add {} {}\n",
                        esc(name),
                        esc(&self.files(&format!("helm/{name}")))
                    ));
                }
                r.push_str("```\n");
            }
            let oci_lines: Vec<String> = oci
                .iter()
                .filter_map(|x| {
                    let repo = x.target.as_ref()?;
                    let version = x
                        .source
                        .tag
                        .as_deref()
                        .map(|t| format!(" --version {}", t.replace('_', "+")))
                        .unwrap_or_default();
                    Some(format!(
                        "helm pull oci://{}/{}{version}{}",
                        repo.host,
                        repo.path,
                        if self.scheme == "http" {
                            " --plain-http"
                        } else {
                            ""
                        }
                    ))
                })
                .collect();
            if !oci_lines.is_empty() {
                r.push_str("\nCharts in the registry (OCI):\n\n```sh\n");
                for l in oci_lines {
                    r.push_str(&l);
                    r.push('\n');
                }
                r.push_str("```\n");
            }
        }
        let plain_files: Vec<&str> = self
            .meta
            .items
            .iter()
            .filter(|i| i.kind == Kind::File)
            .filter_map(|i| i.path.as_deref())
            .collect();
        if !plain_files.is_empty() {
            r.push_str("\n## Files\n\n");
            for p in plain_files {
                if self.files_url.is_some() {
                    r.push_str(&format!("- {}\n", esc(&self.files(p))));
                } else {
                    r.push_str(&format!("- `{}` (on the file server)\n", esc(p)));
                }
            }
        }
        if self.has(Kind::FalcoArtifact) && !self.has(Kind::FalcoctlIndex) {
            r.push_str("\n## Falco\n\nThe bundle carries falco artifacts but no falcoctl index: refer to them by their full\nmirror reference (as `falco-values.yaml` does), not by index name (`falco-rules:3`).\n");
        }
        if let Some(first) = self.registry.iter().find(|x| x.item.kind == Kind::Image) {
            r.push_str("\n## Check from a node\n\n```sh\n");
            r.push_str(&format!(
                "ctr --namespace k8s.io images pull --hosts-dir /etc/containerd/certs.d{} {}\n",
                if self.scheme == "http" {
                    " --plain-http"
                } else {
                    ""
                },
                esc(&first.item.reference)
            ));
            r.push_str("```\n\nThe pull uses the source name; containerd finds the mirror through hosts.toml.\n");
        }
        r
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
        serde_yaml_ng::from_str(&read(dir, rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
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

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in ["127.0.0.1:5000", "localhost", "[::1]:5000", "127.1.2.3"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["registry.internal:5000", "10.0.0.1", "[fd00::1]:443"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
