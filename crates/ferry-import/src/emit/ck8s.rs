//! Compliant Kubernetes: `ck8s/common-config.yaml` and `ck8s/sc-config.yaml`.

use super::trivy::TrivyKind;
use super::*;

impl<'a> Plan<'a> {
    /// The file server's network policy entry, when its IP or port is known.
    pub(super) fn file_server_policy(&self) -> Option<Value> {
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

    pub(super) fn ck8s_common(&self, hosts: &[HostPlan]) -> Result<Option<String>, EmitError> {
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

    pub(super) fn ck8s_sc(&self) -> Result<Option<String>, EmitError> {
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
}
