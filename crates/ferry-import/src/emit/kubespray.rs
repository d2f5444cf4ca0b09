//! Kubespray's `containerd_registries_mirrors` variable.

use super::*;

impl<'a> Plan<'a> {
    pub(super) fn kubespray_mirror(&self, url: String, override_path: bool) -> Value {
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

    pub(super) fn kubespray(
        &self,
        target: &Target,
        hosts: &[HostPlan],
    ) -> Result<String, EmitError> {
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
}
