//! The falcoctl `index.yaml` as the isolated side needs it.
//!
//! falcoctl resolves an artifact name (`falco-rules:3`) through its indexes:
//! a YAML list of entries `name, type, registry, repository, signature?,
//! description, home, keywords, license, maintainers, sources`. The upstream
//! index names ghcr.io; the internal one must name the mirror, and list only
//! what the bundle carries. [`rewrite_index`] keeps the entries whose
//! `registry/repository` the bundle carries, points them at their target
//! repository, and drops `signature`: keyless cosign verification needs
//! Sigstore's public services, which an air-gapped cluster cannot reach.

use ferry_bundle::Reference;
use ferry_registry::Repo;
use yaml_serde::{Mapping, Value};

/// Why an index could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum FalcoctlError {
    /// The original is not YAML.
    #[error("the falcoctl index is not valid YAML")]
    Parse(#[source] yaml_serde::Error),
    /// The original nests deeper than any index does (refused before parsing).
    #[error("the falcoctl index is refused: {0}")]
    TooDeep(#[source] ferry_bundle::yaml::DepthError),
    /// The original is YAML but not a list of entries.
    #[error("the falcoctl index is not a list of entries (found {found})")]
    NotAList {
        /// What was found instead.
        found: String,
    },
    /// An entry lacks a field the rewrite needs.
    #[error("falcoctl index entry {position} (`{name}`) has no string `{field}`")]
    Entry {
        /// 1-based position in the list.
        position: usize,
        /// The entry's `name`, when it has one.
        name: String,
        /// The missing field.
        field: &'static str,
    },
    /// The rewritten index could not be serialised.
    #[error("failed to write the rewritten falcoctl index")]
    Write(#[source] ferry_bundle::yaml::RenderError),
}

fn str_field<'a>(entry: &'a Mapping, key: &str) -> Option<&'a str> {
    entry.get(key).and_then(Value::as_str)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Rewrites a falcoctl `index.yaml` for the mirror.
///
/// `bundled` pairs each falco artifact's source reference with the target
/// repository it was imported to. Entries whose `registry`/`repository`
/// match a bundled source (after docker-style normalisation) are kept, in
/// their original order, with `registry` and `repository` replaced by the
/// target's and `signature` removed; every other field is kept as it was.
/// Entries for artifacts the bundle does not carry are dropped. `note` is
/// written as a leading YAML comment (one `# ` line per line of `note`),
/// followed by a comment saying what was changed and why.
pub fn rewrite_index(
    original: &[u8],
    bundled: &[(Reference, Repo)],
    note: &str,
) -> Result<Vec<u8>, FalcoctlError> {
    ferry_bundle::yaml::check_depth(original).map_err(FalcoctlError::TooDeep)?;
    let doc: Value = yaml_serde::from_slice(original).map_err(FalcoctlError::Parse)?;
    let entries = match doc {
        Value::Sequence(s) => s,
        Value::Null => Vec::new(),
        other => {
            return Err(FalcoctlError::NotAList {
                found: kind_of(&other).to_string(),
            })
        }
    };
    let mut kept: Vec<Value> = Vec::new();
    let mut dropped = 0usize;
    for (i, entry) in entries.into_iter().enumerate() {
        let Value::Mapping(mut m) = entry else {
            return Err(FalcoctlError::NotAList {
                found: format!("entry {} is {}", i + 1, kind_of(&entry)),
            });
        };
        let name = str_field(&m, "name").unwrap_or_default().to_string();
        let err = |field| FalcoctlError::Entry {
            position: i + 1,
            name: name.clone(),
            field,
        };
        let registry = str_field(&m, "registry").ok_or_else(|| err("registry"))?;
        let repository = str_field(&m, "repository").ok_or_else(|| err("repository"))?;
        // Normalise the way the bundle's references are (docker.io, case).
        let source = Reference::parse(&format!("{registry}/{repository}")).ok();
        let target = source.as_ref().and_then(|s| {
            bundled
                .iter()
                .find(|(r, _)| r.registry == s.registry && r.repository == s.repository)
                .map(|(_, repo)| repo)
        });
        let Some(target) = target else {
            dropped += 1;
            continue;
        };
        m.insert("registry".into(), Value::String(target.host.clone()));
        m.insert("repository".into(), Value::String(target.path.clone()));
        m.remove("signature");
        kept.push(Value::Mapping(m));
    }
    // The note names the bundle and the index's source: untrusted text. Each
    // line is escaped, so no `\r`, `\n`, NEL or U+2028 can end the comment.
    let mut out = String::new();
    for line in note.lines() {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str(&format!("# {}\n", ferry_bundle::text::escape(line)));
        }
    }
    out.push_str(&format!(
        "# This index lists only the {} artifact(s) the bundle carries ({} upstream \
         entr{} left out), with `registry`/`repository` pointing at the internal mirror.\n\
         # `signature` was removed from every entry: keyless cosign verification needs \
         Sigstore's public services, which an air-gapped cluster cannot reach.\n",
        kept.len(),
        dropped,
        if dropped == 1 { "y" } else { "ies" }
    ));
    let body = if kept.is_empty() {
        "[]\n".to_string()
    } else {
        ferry_bundle::yaml::to_string_yaml11(&Value::Sequence(kept))
            .map_err(FalcoctlError::Write)?
    };
    out.push_str(&body);
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = r#"- name: falco-rules
  type: rulesfile
  registry: ghcr.io
  repository: falcosecurity/rules/falco-rules
  description: Falco rules that are loaded by default
  home: https://github.com/falcosecurity/rules/blob/main/rules/falco_rules.yaml
  keywords:
    - falco-rules
  license: apache-2.0
  maintainers:
    - email: cncf-falco-dev@lists.cncf.io
      name: The Falco Authors
  sources:
    - https://github.com/falcosecurity/rules/blob/main/rules/falco_rules.yaml
  signature:
    cosign:
      certificate-oidc-issuer: https://token.actions.githubusercontent.com
      certificate-identity-regexp: https://github.com/falcosecurity/rules/
- name: falco-incubating-rules
  type: rulesfile
  registry: ghcr.io
  repository: falcosecurity/rules/falco-incubating-rules
  description: Incubating rules
  home: https://github.com/falcosecurity/rules
  keywords: [falco-incubating-rules]
  license: apache-2.0
  maintainers: []
  sources: []
- name: k8saudit
  type: plugin
  registry: ghcr.io
  repository: falcosecurity/plugins/plugin/k8saudit
  description: Kubernetes audit events
  home: https://github.com/falcosecurity/plugins
  keywords: [audit]
  license: apache-2.0
  maintainers: []
  sources: []
"#;

    fn bundled() -> Vec<(Reference, Repo)> {
        vec![
            (
                Reference::parse("ghcr.io/falcosecurity/plugins/plugin/k8saudit:0.7").unwrap(),
                Repo {
                    host: "registry.internal:5000".into(),
                    path: "mirror/ghcr.io/falcosecurity/plugins/plugin/k8saudit".into(),
                },
            ),
            (
                Reference::parse("ghcr.io/falcosecurity/rules/falco-rules:3").unwrap(),
                Repo {
                    host: "registry.internal:5000".into(),
                    path: "mirror/ghcr.io/falcosecurity/rules/falco-rules".into(),
                },
            ),
        ]
    }

    #[test]
    fn keeps_bundled_entries_in_order_points_them_at_the_mirror_and_drops_signatures() {
        let out = rewrite_index(UPSTREAM.as_bytes(), &bundled(), "Written by ferry.").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("# Written by ferry.\n"), "{text}");
        assert!(text.contains("1 upstream entry left out"), "{text}");
        assert!(text.contains("# `signature` was removed"), "{text}");
        let v: Vec<Mapping> = yaml_serde::from_str(&text).unwrap();
        assert_eq!(v.len(), 2);
        // Original order: falco-rules before k8saudit.
        assert_eq!(str_field(&v[0], "name"), Some("falco-rules"));
        assert_eq!(str_field(&v[1], "name"), Some("k8saudit"));
        assert_eq!(str_field(&v[0], "registry"), Some("registry.internal:5000"));
        assert_eq!(
            str_field(&v[0], "repository"),
            Some("mirror/ghcr.io/falcosecurity/rules/falco-rules")
        );
        assert!(v[0].get("signature").is_none());
        // Other fields are kept, and in their original key order.
        assert_eq!(str_field(&v[0], "license"), Some("apache-2.0"));
        assert_eq!(
            v[0]["maintainers"][0]["name"],
            Value::String("The Falco Authors".into())
        );
        let keys: Vec<&str> = v[0].keys().filter_map(Value::as_str).collect();
        assert_eq!(
            keys,
            [
                "name",
                "type",
                "registry",
                "repository",
                "description",
                "home",
                "keywords",
                "license",
                "maintainers",
                "sources"
            ]
        );
    }

    #[test]
    fn an_index_with_nothing_bundled_is_an_empty_list() {
        let out = rewrite_index(UPSTREAM.as_bytes(), &[], "n").unwrap();
        let v: Vec<Mapping> = yaml_serde::from_slice(&out).unwrap();
        assert!(v.is_empty());
        assert!(String::from_utf8_lossy(&out).contains("3 upstream entries left out"));
    }

    #[test]
    fn docker_hub_names_are_normalised_before_matching() {
        let idx = "- name: x\n  type: rulesfile\n  registry: index.docker.io\n  repository: falcosecurity/x\n";
        let b = vec![(
            Reference::parse("docker.io/falcosecurity/x:1").unwrap(),
            Repo {
                host: "h".into(),
                path: "dockerhub/falcosecurity/x".into(),
            },
        )];
        let out = rewrite_index(idx.as_bytes(), &b, "").unwrap();
        let v: Vec<Mapping> = yaml_serde::from_slice(&out).unwrap();
        assert_eq!(
            str_field(&v[0], "repository"),
            Some("dockerhub/falcosecurity/x")
        );
    }

    #[test]
    fn malformed_indexes_are_refused_by_entry() {
        assert!(matches!(
            rewrite_index(b"name: x\n", &[], ""),
            Err(FalcoctlError::NotAList { .. })
        ));
        let err = rewrite_index(b"- name: broken\n  registry: ghcr.io\n", &[], "").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("broken") && text.contains("repository"),
            "{text}"
        );
        assert!(matches!(
            rewrite_index(b"- [unclosed", &[], ""),
            Err(FalcoctlError::Parse(_))
        ));
    }
}
