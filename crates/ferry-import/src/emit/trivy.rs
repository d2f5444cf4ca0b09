//! Trivy: `trivy.yaml` for the CLI and `trivy-operator-values.yaml` for the
//! operator chart (DB, Java DB, checks), and the registry mirrors they share
//! with Compliant Kubernetes.

use super::*;

/// Which Trivy artifact an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TrivyKind {
    Db,
    JavaDb,
    Checks,
}

pub(super) fn trivy_kind(r: &Reference) -> Option<TrivyKind> {
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

impl<'a> Plan<'a> {
    pub(super) fn trivy_items(&self, kind: TrivyKind) -> Vec<&RegItem<'a>> {
        self.registry
            .iter()
            .filter(|r| r.item.kind == Kind::TrivyDb && trivy_kind(&r.source) == Some(kind))
            .collect()
    }

    pub(super) fn unknown_trivy(&self) -> Vec<String> {
        self.registry
            .iter()
            .filter(|r| r.item.kind == Kind::TrivyDb && trivy_kind(&r.source).is_none())
            .map(|r| r.item.reference.clone())
            .collect()
    }

    pub(super) fn trivy_cli(&self) -> Result<String, EmitError> {
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

    pub(super) fn trivy_operator(
        &self,
        target: &Target,
        hosts: &[HostPlan],
    ) -> Result<String, EmitError> {
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
    pub(super) fn registry_mirrors(&self, target: &Target, hosts: &[HostPlan]) -> YamlMap {
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
}
