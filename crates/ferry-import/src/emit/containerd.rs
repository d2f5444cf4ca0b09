//! containerd's `certs.d/<host>/hosts.toml` and `_default/hosts.toml`.

use super::*;

impl<'a> Plan<'a> {
    /// `[host."<url>"]`: the mirror, as a TOML table.
    pub(super) fn host_block(&self, url: &str, override_path: bool) -> toml::Table {
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

    pub(super) fn hosts_toml(&self, target: &Target, hp: &HostPlan) -> Result<String, EmitError> {
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

    pub(super) fn default_toml(&self, target: &Target) -> Result<String, EmitError> {
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
}
