//! The Falco chart's `falco-values.yaml` (driver repository, falcoctl index
//! and artifacts).

use super::*;

impl<'a> Plan<'a> {
    pub(super) fn falco_refs(&self) -> Vec<Value> {
        self.registry
            .iter()
            .filter(|r| r.item.kind == Kind::FalcoArtifact)
            .filter_map(|r| Self::target_ref(r).map(s))
            .collect()
    }

    pub(super) fn falco(&self) -> Result<String, EmitError> {
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
}
