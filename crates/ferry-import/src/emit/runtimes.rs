//! Node runtime configuration for `--emit-config`, beyond containerd's
//! `hosts.toml`: every runtime a platform's nodes may run, from one model of
//! the mirror (which source registry goes to which path of which host, over
//! which TLS, with which pull credential). Each function returns the
//! document as data (a TOML table, a YAML or JSON value); the emitter adds
//! the header and writes it through the serializer.
//!
//! | function | file | consumer, and the format's reference |
//! |---|---|---|
//! | [`registries_conf`] | `containers/registries.conf` | CRI-O, podman, skopeo, buildah: containers-registries.conf(5), v2 format |
//! | [`containers_auth`] | `containers/auth.json` (0600) | the same tools' credentials: containers-auth.json(5) |
//! | [`k3s_registries`] | `k3s/registries.yaml` | k3s and RKE2 (`/etc/rancher/{k3s,rke2}/registries.yaml`): mirrors with rewrites, configs with auth and TLS |
//! | [`talos_patch`] | `talos/registries-patch.yaml` | Talos machine-config patch: `machine.registries` |
//! | [`openshift_mirror_sets`] | `openshift/image-mirror-sets.yaml` | OpenShift 4.13+: `ImageDigestMirrorSet` and `ImageTagMirrorSet` |
//! | [`docker_daemon`] | `docker/daemon.json` | Docker Engine: `registry-mirrors` (only `docker.io` can be mirrored there) |
//! | [`containerd_auth`] | `containerd/conf.d/ferry-registry-auth.toml` (0600) | containerd 1.x CRI `registry.configs."<host>".auth` |
//! | [`pull_secret`] | `kubernetes/pull-secret.yaml` (0600) | a `kubernetes.io/dockerconfigjson` Secret (Trivy's `imagePullSecret`, CK8s) |

use base64::Engine;
use serde_json::json;
use yaml_serde::{Mapping, Value};

use crate::emit::{map, s};

/// One source registry and where the mirror holds its repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMirror {
    /// The source registry as in references (`docker.io`, `registry.k8s.io`).
    pub source: String,
    /// The repository prefix at the mirror (`dockerhub`), empty for none.
    pub path: String,
    /// Every item of this source was referenced by digest only: the mirror
    /// guarantees digests, not tags.
    pub digest_only: bool,
}

/// A read-only credential for the nodes (never the import's push one).
#[derive(Clone, PartialEq, Eq)]
pub struct PullCredential {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for PullCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PullCredential {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

impl PullCredential {
    /// `base64(user:password)`, as docker's `auth` field and HTTP Basic use.
    pub fn basic(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password))
    }
}

/// The mirror as the nodes reach it.
#[derive(Debug, Clone, Default)]
pub struct NodeMirror {
    /// `host[:port]`.
    pub host: String,
    /// Plain HTTP.
    pub plain_http: bool,
    /// Skip certificate verification.
    pub skip_verify: bool,
    /// The CA file's path on the nodes.
    pub ca_path: Option<String>,
    /// The CA's PEM (for formats that take it inline: Talos).
    pub ca_pem: Option<String>,
    /// Client certificate and key paths on the nodes.
    pub client: Option<(String, String)>,
    /// The pull credential, when the mirror needs one.
    pub auth: Option<PullCredential>,
}

impl NodeMirror {
    fn scheme(&self) -> &'static str {
        if self.plain_http {
            "http"
        } else {
            "https"
        }
    }

    /// `https://host`.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme(), self.host)
    }

    /// `host/path` (registries.conf `location`, OpenShift mirrors).
    pub fn location(&self, path: &str) -> String {
        if path.is_empty() {
            self.host.clone()
        } else {
            format!("{}/{path}", self.host)
        }
    }
}

/// containers-registries.conf v2: one `[[registry]]` per source with the
/// mirror as its `[[registry.mirror]]`; `pull-from-mirror = "digest-only"`
/// where the mirror only guarantees digests. The source stays the
/// `location` (the fallback, unreachable on an isolated network).
pub fn registries_conf(mirror: &NodeMirror, sources: &[SourceMirror]) -> toml::Table {
    use toml::Value as T;
    let mut registries = Vec::new();
    for src in sources {
        let mut m = toml::Table::new();
        m.insert("location".into(), T::from(mirror.location(&src.path)));
        if mirror.plain_http || mirror.skip_verify {
            m.insert("insecure".into(), T::Boolean(true));
        }
        if src.digest_only {
            m.insert("pull-from-mirror".into(), T::from("digest-only"));
        }
        let mut r = toml::Table::new();
        r.insert("prefix".into(), T::from(src.source.as_str()));
        r.insert("location".into(), T::from(src.source.as_str()));
        r.insert("mirror".into(), T::Array(vec![T::Table(m)]));
        registries.push(T::Table(r));
    }
    let mut doc = toml::Table::new();
    doc.insert("registry".into(), T::Array(registries));
    doc
}

/// containers-auth.json / docker `config.json` `auths` for the mirror.
pub fn containers_auth(mirror: &NodeMirror, cred: &PullCredential) -> serde_json::Value {
    json!({"auths": {mirror.host.clone(): {"auth": cred.basic()}}})
}

/// k3s / RKE2 `registries.yaml`: each source mirrored to the mirror's
/// endpoint with a rewrite adding the path, and the mirror's auth and TLS.
pub fn k3s_registries(mirror: &NodeMirror, sources: &[SourceMirror]) -> Value {
    let mut mirrors = Mapping::new();
    for src in sources {
        let mut m = vec![("endpoint", Value::Sequence(vec![s(mirror.endpoint())]))];
        if !src.path.is_empty() {
            let mut rw = Mapping::new();
            rw.insert(s("^(.*)$"), s(format!("{}/$1", src.path)));
            m.push(("rewrite", Value::Mapping(rw)));
        }
        mirrors.insert(s(src.source.as_str()), map(m));
    }
    let mut config = Vec::new();
    config.extend(auth_entry(mirror));
    let mut tls = Vec::new();
    if let Some(ca) = &mirror.ca_path {
        tls.push(("ca_file", s(ca.as_str())));
    }
    if let Some((c, k)) = &mirror.client {
        tls.push(("cert_file", s(c.as_str())));
        tls.push(("key_file", s(k.as_str())));
    }
    if mirror.skip_verify {
        tls.push(("insecure_skip_verify", Value::Bool(true)));
    }
    if !tls.is_empty() {
        config.push(("tls", map(tls)));
    }
    let mut doc = vec![("mirrors", Value::Mapping(mirrors))];
    if !config.is_empty() {
        let mut configs = Mapping::new();
        configs.insert(s(mirror.host.as_str()), map(config));
        doc.push(("configs", Value::Mapping(configs)));
    }
    map(doc)
}

/// The `auth` entry (username and password) of k3s's and Talos's
/// per-registry `config`, when the mirror has a pull credential.
fn auth_entry(mirror: &NodeMirror) -> Option<(&'static str, Value)> {
    mirror.auth.as_ref().map(|a| {
        (
            "auth",
            map(vec![
                ("username", s(a.username.as_str())),
                ("password", s(a.password.as_str())),
            ]),
        )
    })
}

/// A Talos machine-config patch: `machine.registries.mirrors` (with
/// `overridePath` when the mirror adds a path) and `.config` (auth, the CA
/// inline, client identity paths are not supported by Talos: only inline).
pub fn talos_patch(mirror: &NodeMirror, sources: &[SourceMirror]) -> Value {
    let mut mirrors = Mapping::new();
    for src in sources {
        let (endpoint, override_path) = if src.path.is_empty() {
            (mirror.endpoint(), false)
        } else {
            (format!("{}/v2/{}", mirror.endpoint(), src.path), true)
        };
        let mut m = vec![("endpoints", Value::Sequence(vec![s(endpoint)]))];
        if override_path {
            m.push(("overridePath", Value::Bool(true)));
        }
        mirrors.insert(s(src.source.as_str()), map(m));
    }
    let mut registries = vec![("mirrors", Value::Mapping(mirrors))];
    let mut config = Vec::new();
    config.extend(auth_entry(mirror));
    let mut tls = Vec::new();
    if let Some(pem) = &mirror.ca_pem {
        tls.push((
            "ca",
            s(base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())),
        ));
    }
    if mirror.skip_verify {
        tls.push(("insecureSkipVerify", Value::Bool(true)));
    }
    if !tls.is_empty() {
        config.push(("tls", map(tls)));
    }
    if !config.is_empty() {
        let mut c = Mapping::new();
        c.insert(s(mirror.host.as_str()), map(config));
        registries.push(("config", Value::Mapping(c)));
    }
    map(vec![(
        "machine",
        map(vec![("registries", map(registries))]),
    )])
}

/// OpenShift `ImageDigestMirrorSet` and `ImageTagMirrorSet` (two documents),
/// `mirrorSourcePolicy: NeverContactSource` (the source is on the other
/// side of the gap). Tags are mirrored only for sources that were not all
/// digest references.
pub fn openshift_mirror_sets(
    name: &str,
    mirror: &NodeMirror,
    sources: &[SourceMirror],
) -> Vec<Value> {
    let entry = |src: &SourceMirror, key: &str| {
        let _ = key;
        map(vec![
            ("source", s(src.source.as_str())),
            (
                "mirrors",
                Value::Sequence(vec![s(mirror.location(&src.path))]),
            ),
            ("mirrorSourcePolicy", s("NeverContactSource")),
        ])
    };
    let digests: Vec<Value> = sources.iter().map(|src| entry(src, "digest")).collect();
    let tags: Vec<Value> = sources
        .iter()
        .filter(|src| !src.digest_only)
        .map(|src| entry(src, "tag"))
        .collect();
    let doc = |kind: &str, field: &str, list: Vec<Value>| {
        map(vec![
            ("apiVersion", s("config.openshift.io/v1")),
            ("kind", s(kind)),
            ("metadata", map(vec![("name", s(name))])),
            ("spec", map(vec![(field, Value::Sequence(list))])),
        ])
    };
    let mut out = vec![doc("ImageDigestMirrorSet", "imageDigestMirrors", digests)];
    if !tags.is_empty() {
        out.push(doc("ImageTagMirrorSet", "imageTagMirrors", tags));
    }
    out
}

/// Docker Engine `daemon.json`: Docker mirrors only Docker Hub, and only to
/// a mirror serving it at its root. `None` when the mapping gives
/// `docker.io` a path (or the bundle has no `docker.io` content): the README
/// says why.
pub fn docker_daemon(mirror: &NodeMirror, sources: &[SourceMirror]) -> Option<serde_json::Value> {
    let hub = sources.iter().find(|s| s.source == "docker.io")?;
    if !hub.path.is_empty() {
        return None;
    }
    let mut doc = json!({"registry-mirrors": [mirror.endpoint()]});
    if mirror.plain_http || mirror.skip_verify {
        doc["insecure-registries"] = json!([mirror.host]);
    }
    Some(doc)
}

/// A containerd 1.x configuration drop-in with the CRI plugin's credential
/// for the mirror (`imports = ["/etc/containerd/conf.d/*.toml"]` in
/// `config.toml`): `plugins."io.containerd.grpc.v1.cri".registry.configs."<host>".auth`.
pub fn containerd_auth(mirror: &NodeMirror, cred: &PullCredential) -> toml::Table {
    use toml::Value as T;
    let mut auth = toml::Table::new();
    auth.insert("username".into(), T::from(cred.username.as_str()));
    auth.insert("password".into(), T::from(cred.password.as_str()));
    let mut host = toml::Table::new();
    host.insert("auth".into(), T::Table(auth));
    let mut configs = toml::Table::new();
    configs.insert(mirror.host.clone(), T::Table(host));
    let mut registry = toml::Table::new();
    registry.insert("configs".into(), T::Table(configs));
    let mut cri = toml::Table::new();
    cri.insert("registry".into(), T::Table(registry));
    let mut plugins = toml::Table::new();
    plugins.insert("io.containerd.grpc.v1.cri".into(), T::Table(cri));
    let mut doc = toml::Table::new();
    doc.insert("version".into(), T::Integer(2));
    doc.insert("plugins".into(), T::Table(plugins));
    doc
}

/// A `kubernetes.io/dockerconfigjson` Secret for the mirror.
pub fn pull_secret(name: &str, mirror: &NodeMirror, cred: &PullCredential) -> Value {
    let config = containers_auth(mirror, cred);
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&config).unwrap_or_default());
    map(vec![
        ("apiVersion", s("v1")),
        ("kind", s("Secret")),
        ("type", s("kubernetes.io/dockerconfigjson")),
        ("metadata", map(vec![("name", s(name))])),
        ("data", map(vec![(".dockerconfigjson", s(encoded))])),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror() -> NodeMirror {
        NodeMirror {
            host: "harbor.internal:8443".into(),
            ca_path: Some("/etc/ferry/ca.crt".into()),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n".into()),
            auth: Some(PullCredential {
                username: "puller".into(),
                password: "p\"w\n#x".into(),
            }),
            ..NodeMirror::default()
        }
    }

    fn sources() -> Vec<SourceMirror> {
        vec![
            SourceMirror {
                source: "docker.io".into(),
                path: "dockerhub".into(),
                digest_only: false,
            },
            SourceMirror {
                source: "registry.k8s.io".into(),
                path: String::new(),
                digest_only: true,
            },
        ]
    }

    #[test]
    fn registries_conf_mirrors_each_source_and_round_trips() {
        let doc = registries_conf(&mirror(), &sources());
        let text = toml::to_string(&doc).unwrap();
        let back: toml::Table = toml::from_str(&text).unwrap();
        let regs = back["registry"].as_array().unwrap();
        assert_eq!(regs.len(), 2);
        assert_eq!(regs[0]["prefix"].as_str(), Some("docker.io"));
        assert_eq!(
            regs[0]["mirror"][0]["location"].as_str(),
            Some("harbor.internal:8443/dockerhub")
        );
        assert!(regs[0]["mirror"][0].get("pull-from-mirror").is_none());
        assert_eq!(
            regs[1]["mirror"][0]["pull-from-mirror"].as_str(),
            Some("digest-only")
        );
    }

    #[test]
    fn credentials_survive_any_characters_through_the_serializers() {
        let m = mirror();
        let k3s = yaml_serde::to_string(&k3s_registries(&m, &sources())).unwrap();
        let back: Value = yaml_serde::from_str(&k3s).unwrap();
        assert_eq!(
            back["configs"]["harbor.internal:8443"]["auth"]["password"].as_str(),
            Some("p\"w\n#x")
        );
        assert_eq!(
            back["mirrors"]["docker.io"]["rewrite"]["^(.*)$"].as_str(),
            Some("dockerhub/$1")
        );
        let ctd = toml::to_string(&containerd_auth(&m, m.auth.as_ref().unwrap())).unwrap();
        let back: toml::Table = toml::from_str(&ctd).unwrap();
        assert_eq!(
            back["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["configs"]
                ["harbor.internal:8443"]["auth"]["password"]
                .as_str(),
            Some("p\"w\n#x")
        );
    }

    #[test]
    fn docker_mirrors_only_docker_hub_at_the_root() {
        let m = mirror();
        assert!(
            docker_daemon(&m, &sources()).is_none(),
            "a path is not possible"
        );
        let root = vec![SourceMirror {
            source: "docker.io".into(),
            path: String::new(),
            digest_only: false,
        }];
        assert_eq!(
            docker_daemon(&m, &root).unwrap(),
            json!({"registry-mirrors": ["https://harbor.internal:8443"]})
        );
    }

    #[test]
    fn openshift_gets_digest_and_tag_mirror_sets() {
        let docs = openshift_mirror_sets("ferry-platform", &mirror(), &sources());
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["kind"].as_str(), Some("ImageDigestMirrorSet"));
        assert_eq!(
            docs[0]["spec"]["imageDigestMirrors"]
                .as_sequence()
                .unwrap()
                .len(),
            2
        );
        // registry.k8s.io was digest-only: no tag mirror for it.
        assert_eq!(
            docs[1]["spec"]["imageTagMirrors"]
                .as_sequence()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn talos_carries_the_ca_inline_and_override_path() {
        let v = talos_patch(&mirror(), &sources());
        let hub = &v["machine"]["registries"]["mirrors"]["docker.io"];
        assert_eq!(
            hub["endpoints"][0].as_str(),
            Some("https://harbor.internal:8443/v2/dockerhub")
        );
        assert_eq!(hub["overridePath"].as_bool(), Some(true));
        let ca = v["machine"]["registries"]["config"]["harbor.internal:8443"]["tls"]["ca"]
            .as_str()
            .unwrap();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .unwrap();
        assert!(String::from_utf8(pem)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn the_pull_secret_decodes_to_a_docker_config() {
        let m = mirror();
        let v = pull_secret("ferry-pull", &m, m.auth.as_ref().unwrap());
        assert_eq!(v["type"].as_str(), Some("kubernetes.io/dockerconfigjson"));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["data"][".dockerconfigjson"].as_str().unwrap())
            .unwrap();
        let cfg: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let auth = cfg["auths"]["harbor.internal:8443"]["auth"]
            .as_str()
            .unwrap();
        let plain = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap();
        assert_eq!(plain, b"puller:p\"w\n#x");
    }
}
