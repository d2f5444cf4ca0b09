//! Helm's `helm-repositories.yaml`: the classic repositories on the file server.

use super::*;

impl<'a> Plan<'a> {
    /// Names of the classic Helm repositories on the file server (`helm/<name>/…`).
    pub(super) fn classic_repos(&self) -> BTreeSet<String> {
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

    pub(super) fn helm_repos(&self) -> Result<String, EmitError> {
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
}
