//! The container runtimes' files (CRI-O/containers registries.conf, k3s/RKE2,
//! containerd 1.x, docker, Talos, OpenShift, pull secrets), rendered by
//! [`crate::runtimes`] from the emit plan.

use super::*;

impl<'a> Plan<'a> {
    /// The mirror as the node runtimes see it.
    pub(super) fn node_mirror(&self) -> Option<super::runtimes::NodeMirror> {
        let t = self.opts.target.as_ref()?;
        Some(super::runtimes::NodeMirror {
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
    pub(super) fn source_mirrors(&self, hosts: &[HostPlan]) -> Vec<super::runtimes::SourceMirror> {
        hosts
            .iter()
            .map(|hp| super::runtimes::SourceMirror {
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
    pub(super) fn runtime_files(
        &self,
        hosts: &[HostPlan],
    ) -> Result<Vec<(String, String)>, EmitError> {
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
}
