//! Finding image references in rendered Kubernetes manifests.
//!
//! `helm template` / `helmfile template` print a multi-document YAML stream;
//! every `image:` whose value is a string is an image reference (containers,
//! init containers, ephemeral containers, and any CRD that uses the same key).
//! Values-style maps (`image: {registry, repository, tag, digest}`) are read
//! too, as charts often carry them into custom resources.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use yaml_serde::Value;

use crate::reference::Reference;

/// A manifest stream that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// Unreadable file.
    #[error("failed to read `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file, or over the size or line limit ([`crate::input::MANIFESTS`]).
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// Not YAML.
    #[error("`{path}` is not a YAML stream: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        message: String,
    },
    /// An `image:` that is not a valid reference.
    #[error("`{path}`: document {document}: {source}")]
    BadReference {
        /// The file.
        path: PathBuf,
        /// 1-based document number in the stream.
        document: usize,
        /// Why.
        #[source]
        source: crate::reference::ReferenceError,
    },
}

fn str_of<'a>(m: &'a yaml_serde::Mapping, key: &str) -> Option<&'a str> {
    m.get(Value::String(key.into()))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A values-style image map, e.g. `{registry: docker.io, repository: bitnami/redis, tag: "7"}`.
fn from_map(m: &yaml_serde::Mapping) -> Option<String> {
    let repository = str_of(m, "repository").or_else(|| str_of(m, "name"))?;
    let mut s = match str_of(m, "registry") {
        Some(r) => format!("{r}/{repository}"),
        None => repository.to_string(),
    };
    if let Some(t) = str_of(m, "tag") {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = str_of(m, "digest") {
        s.push('@');
        s.push_str(d);
    }
    Some(s)
}

fn walk(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                if k.as_str() == Some("image") {
                    match val {
                        Value::String(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
                        Value::Mapping(im) => {
                            if let Some(s) = from_map(im) {
                                out.push(s);
                            }
                        }
                        _ => {}
                    }
                }
                walk(val, out);
            }
        }
        Value::Sequence(seq) => seq.iter().for_each(|x| walk(x, out)),
        Value::Tagged(t) => walk(&t.value, out),
        _ => {}
    }
}

/// Every image reference in a YAML stream's text, normalised, sorted, deduplicated.
pub fn images_in_yaml(text: &str, path: &Path) -> Result<Vec<Reference>, DiscoverError> {
    let mut found = BTreeSet::new();
    crate::yaml::check_depth(text.as_bytes()).map_err(|e| DiscoverError::Yaml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| DiscoverError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut raw = Vec::new();
        walk(&value, &mut raw);
        for r in raw {
            let reference = Reference::parse(&r).map_err(|source| DiscoverError::BadReference {
                path: path.to_path_buf(),
                document: i + 1,
                source,
            })?;
            found.insert(reference);
        }
    }
    Ok(found.into_iter().collect())
}

/// Every image reference in a rendered manifest file.
pub fn images_in_file(path: &Path) -> Result<Vec<Reference>, DiscoverError> {
    let text = crate::input::read_text(path, crate::input::MANIFESTS)?;
    images_in_yaml(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_image_in_a_rendered_stream_sorted_and_deduplicated() {
        let text = r#"
---
# Source: app/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: "busybox:1.36"
      containers:
        - name: app
          image: ghcr.io/example/app:1.2.3
        - name: sidecar
          image: nginx
---
apiVersion: v1
kind: Pod
spec:
  containers:
    - image: ghcr.io/example/app:1.2.3
---
apiVersion: example.com/v1
kind: Thing
spec:
  image:
    registry: quay.io
    repository: prometheus/node-exporter
    tag: v1.8.0
---
"#;
        let refs: Vec<String> = images_in_yaml(text, Path::new("r.yaml"))
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            refs,
            [
                "docker.io/library/busybox:1.36",
                "docker.io/library/nginx:latest",
                "ghcr.io/example/app:1.2.3",
                "quay.io/prometheus/node-exporter:v1.8.0"
            ]
        );
    }

    #[test]
    fn a_bad_reference_names_the_file_and_document() {
        let e = images_in_yaml("a: 1\n---\nimage: Not/Valid\n", Path::new("r.yaml")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("r.yaml") && msg.contains("document 2"),
            "{msg}"
        );
        let e = images_in_yaml("a: [\n", Path::new("bad.yaml")).unwrap_err();
        assert!(e.to_string().contains("bad.yaml"), "{e}");
    }
}
