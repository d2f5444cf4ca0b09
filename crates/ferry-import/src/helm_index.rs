//! A classic Helm repository `index.yaml` for the charts on the file server.
//!
//! Harbor (2.8 and later) serves charts over OCI only, so `helm repo add`
//! needs a classic repository elsewhere: the file server's `helm/<repo>/`
//! directory, with the `.tgz` files and this index. Each entry is the
//! chart's `Chart.yaml` metadata (as Helm's OCI config blob carries it, in
//! JSON) plus `urls` (the file name, relative to the index, so the tree can
//! move between servers), `digest` (sha256 hex of the `.tgz`, no prefix)
//! and `created`. Entries of an existing index are kept, so a second bundle
//! or a re-import adds to it; the same name and version is replaced.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use ferry_bundle::digest::Digest;
use ferry_bundle::semver;
use serde_json::Value as Json;
use yaml_serde::{Mapping, Value};

/// One chart to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartEntry {
    /// The Helm OCI config blob: the chart's `Chart.yaml` metadata as JSON.
    pub metadata_json: Vec<u8>,
    /// The `.tgz`'s digest (the index lists its hex, no `sha256:` prefix).
    pub digest: Digest,
    /// The `.tgz` file name, relative to the index (`falco-9.1.0.tgz`).
    pub file_name: String,
    /// When the chart was packaged (RFC 3339); the index's `generated` time when unknown.
    pub created: Option<String>,
}

/// Why an index could not be written.
#[derive(Debug, thiserror::Error)]
pub enum HelmIndexError {
    /// A chart's metadata is not a JSON object.
    #[error("chart `{file}`: its metadata (the Helm config blob) is not a JSON object")]
    Metadata {
        /// The chart file.
        file: String,
        /// Cause, when it did not parse at all.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// A chart's metadata lacks `name` or `version`.
    #[error("chart `{file}`: its metadata has no string `{field}`")]
    MissingField {
        /// The chart file.
        file: String,
        /// `name` or `version`.
        field: &'static str,
    },
    /// A file name that is empty or not a plain name.
    #[error("chart file name `{file}` must be a plain file name (no `/`, not empty)")]
    FileName {
        /// The value.
        file: String,
    },
    /// The existing index is not YAML.
    #[error("the existing index.yaml is not valid YAML")]
    ExistingParse(#[source] yaml_serde::Error),
    /// The existing index is not a Helm v1 index.
    #[error("the existing index.yaml is not a Helm repository index: {reason}")]
    ExistingShape {
        /// What is wrong.
        reason: String,
    },
    /// Serialisation failed.
    #[error("failed to write the Helm index")]
    Write(#[source] ferry_bundle::yaml::RenderError),
}

/// Orders versions the way an index lists them: highest semver first;
/// strings that are not semver after every semver one, in reverse lexical order.
fn version_desc(a: &str, b: &str) -> Ordering {
    match (semver::parse(a), semver::parse(b)) {
        (Some(x), Some(y)) => y.cmp_precedence(&x).then_with(|| b.cmp(a)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => b.cmp(a),
    }
}

fn json_to_yaml(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Number(u.into())
            } else {
                Value::Number(n.as_f64().unwrap_or_default().into())
            }
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Sequence(a.iter().map(json_to_yaml).collect()),
        Json::Object(o) => {
            // Sorted keys, as Helm writes them.
            let sorted: BTreeMap<&String, &Json> = o.iter().collect();
            let mut m = Mapping::new();
            for (k, v) in sorted {
                m.insert(Value::String(k.clone()), json_to_yaml(v));
            }
            Value::Mapping(m)
        }
    }
}

fn version_of(v: &Value) -> &str {
    v.get("version").and_then(Value::as_str).unwrap_or_default()
}

/// One chart version as an index entry: metadata + urls + digest + created, keys sorted.
fn chart_version(c: &ChartEntry, generated: &str) -> Result<(String, Value), HelmIndexError> {
    let meta: Json =
        serde_json::from_slice(&c.metadata_json).map_err(|e| HelmIndexError::Metadata {
            file: c.file_name.clone(),
            source: Some(e),
        })?;
    let Json::Object(mut obj) = meta else {
        return Err(HelmIndexError::Metadata {
            file: c.file_name.clone(),
            source: None,
        });
    };
    if c.file_name.is_empty() || c.file_name.contains('/') {
        return Err(HelmIndexError::FileName {
            file: c.file_name.clone(),
        });
    }
    let name = match obj.get("name") {
        Some(Json::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(HelmIndexError::MissingField {
                file: c.file_name.clone(),
                field: "name",
            })
        }
    };
    if !matches!(obj.get("version"), Some(Json::String(s)) if !s.is_empty()) {
        return Err(HelmIndexError::MissingField {
            file: c.file_name.clone(),
            field: "version",
        });
    }
    obj.insert(
        "urls".into(),
        Json::Array(vec![Json::String(c.file_name.clone())]),
    );
    obj.insert("digest".into(), Json::String(c.digest.hex()));
    obj.insert(
        "created".into(),
        Json::String(c.created.clone().unwrap_or_else(|| generated.to_string())),
    );
    Ok((name, json_to_yaml(&Json::Object(obj))))
}

fn existing_entries(bytes: &[u8]) -> Result<BTreeMap<String, Vec<Value>>, HelmIndexError> {
    let shape = |reason: &str| HelmIndexError::ExistingShape {
        reason: reason.into(),
    };
    ferry_bundle::yaml::check_depth(bytes).map_err(|e| shape(&e.to_string()))?;
    let doc: Value = yaml_serde::from_slice(bytes).map_err(HelmIndexError::ExistingParse)?;
    let Value::Mapping(doc) = doc else {
        return Err(shape("not a mapping"));
    };
    match doc.get("apiVersion").and_then(Value::as_str) {
        Some("v1") => {}
        Some(other) => return Err(shape(&format!("apiVersion is `{other}`, not `v1`"))),
        None => return Err(shape("no apiVersion")),
    }
    let mut out = BTreeMap::new();
    match doc.get("entries") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(entries)) => {
            for (k, v) in entries {
                let Some(name) = k.as_str() else {
                    return Err(shape("a chart name in `entries` is not a string"));
                };
                let list = match v {
                    Value::Sequence(s) => s.clone(),
                    Value::Null => Vec::new(),
                    _ => return Err(shape(&format!("entries.{name} is not a list"))),
                };
                out.insert(name.to_string(), list);
            }
        }
        Some(_) => return Err(shape("`entries` is not a mapping")),
    }
    Ok(out)
}

/// Writes a classic Helm repository `index.yaml` listing `charts`, merged
/// into `existing` (the index already on the file server, if any).
///
/// Entries are grouped by chart name (sorted), each name's versions highest
/// semver first. A chart whose name and version are already listed replaces
/// that entry. `generated` is the index's `generated` time (RFC 3339), also
/// the `created` time of charts that do not carry one.
pub fn helm_index(
    existing: Option<&[u8]>,
    charts: &[ChartEntry],
    generated: &str,
) -> Result<Vec<u8>, HelmIndexError> {
    let mut entries = match existing {
        Some(b) => existing_entries(b)?,
        None => BTreeMap::new(),
    };
    // The new versions per chart name (a later one of the same version
    // wins), then one pass over each name's list: linear in the entries.
    let mut incoming: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for c in charts {
        let (name, entry) = chart_version(c, generated)?;
        let version = version_of(&entry).to_string();
        incoming.entry(name).or_default().insert(version, entry);
    }
    for (name, versions) in incoming {
        let list = entries.entry(name).or_default();
        list.retain(|e| !versions.contains_key(version_of(e)));
        list.extend(versions.into_values());
    }
    let mut out_entries = Mapping::new();
    for (name, mut list) in entries {
        list.sort_by(|a, b| version_desc(version_of(a), version_of(b)));
        out_entries.insert(Value::String(name), Value::Sequence(list));
    }
    let mut doc = Mapping::new();
    doc.insert("apiVersion".into(), "v1".into());
    doc.insert("entries".into(), Value::Mapping(out_entries));
    doc.insert("generated".into(), generated.into());
    let text = ferry_bundle::yaml::to_string_yaml11(&Value::Mapping(doc))
        .map_err(HelmIndexError::Write)?;
    Ok(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "3b1f0e6b3a0c2d9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817";
    const D2: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    fn chart(name: &str, version: &str, digest: &str) -> ChartEntry {
        ChartEntry {
            metadata_json: format!(
                r#"{{"name":"{name}","version":"{version}","apiVersion":"v2","appVersion":"0.44.1","description":"Falco","type":"application","maintainers":[{{"name":"The Falco Authors"}}]}}"#
            )
            .into_bytes(),
            digest: Digest::from_hex(digest).unwrap(),
            file_name: format!("{name}-{version}.tgz"),
            created: None,
        }
    }

    fn parse(bytes: &[u8]) -> Value {
        yaml_serde::from_slice(bytes).unwrap()
    }

    fn versions(doc: &Value, name: &str) -> Vec<String> {
        doc["entries"][name]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| version_of(e).to_string())
            .collect()
    }

    #[test]
    fn an_index_helm_can_read() {
        let out = helm_index(None, &[chart("falco", "9.1.0", D1)], "2026-07-21T16:50:00Z").unwrap();
        let doc = parse(&out);
        assert_eq!(doc["apiVersion"], Value::from("v1"));
        assert_eq!(doc["generated"], Value::from("2026-07-21T16:50:00Z"));
        let e = &doc["entries"]["falco"][0];
        assert_eq!(e["name"], Value::from("falco"));
        assert_eq!(e["version"], Value::from("9.1.0"));
        assert_eq!(e["appVersion"], Value::from("0.44.1"));
        assert_eq!(e["digest"], Value::from(D1));
        assert_eq!(e["urls"][0], Value::from("falco-9.1.0.tgz"));
        assert_eq!(e["created"], Value::from("2026-07-21T16:50:00Z"));
        assert_eq!(
            e["maintainers"][0]["name"],
            Value::from("The Falco Authors")
        );
        // Keys sorted, as helm writes them.
        let keys: Vec<&str> = e
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(Value::as_str)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn versions_sort_highest_semver_first_and_names_alphabetically() {
        let charts = [
            chart("zeta", "1.0.0", D1),
            chart("falco", "9.1.0", D1),
            chart("falco", "10.0.0", D1),
            chart("falco", "10.0.0-rc.2", D1),
            chart("falco", "10.0.0-rc.10", D1),
            chart("falco", "9.1.0-alpha", D1),
            chart("falco", "v2.0.0", D1),
        ];
        let doc = parse(&helm_index(None, &charts, "t").unwrap());
        let names: Vec<&str> = doc["entries"]
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(names, ["falco", "zeta"]);
        assert_eq!(
            versions(&doc, "falco"),
            [
                "10.0.0",
                "10.0.0-rc.10",
                "10.0.0-rc.2",
                "9.1.0",
                "9.1.0-alpha",
                "v2.0.0"
            ]
        );
    }

    #[test]
    fn merging_keeps_other_entries_and_replaces_the_same_version() {
        let first = helm_index(
            None,
            &[chart("falco", "9.1.0", D1), chart("app", "1.0.0", D1)],
            "2026-01-01T00:00:00Z",
        )
        .unwrap();
        let second = helm_index(
            Some(&first),
            &[chart("falco", "9.1.0", D2), chart("falco", "9.2.0", D2)],
            "2026-02-01T00:00:00Z",
        )
        .unwrap();
        let doc = parse(&second);
        assert_eq!(versions(&doc, "falco"), ["9.2.0", "9.1.0"]);
        assert_eq!(versions(&doc, "app"), ["1.0.0"]);
        assert_eq!(doc["entries"]["falco"][1]["digest"], Value::from(D2));
        // The kept entry keeps its own created time.
        assert_eq!(
            doc["entries"]["app"][0]["created"],
            Value::from("2026-01-01T00:00:00Z")
        );
        assert_eq!(doc["generated"], Value::from("2026-02-01T00:00:00Z"));
    }

    #[test]
    fn a_chart_created_time_is_kept() {
        let mut c = chart("falco", "9.1.0", D1);
        c.created = Some("2025-12-24T10:00:00Z".into());
        let doc = parse(&helm_index(None, &[c], "2026-01-01T00:00:00Z").unwrap());
        assert_eq!(
            doc["entries"]["falco"][0]["created"],
            Value::from("2025-12-24T10:00:00Z")
        );
    }

    #[test]
    fn bad_input_is_refused_naming_the_chart() {
        // A digest that is not sha256 hex cannot reach the index: the
        // entry carries a `Digest`, validated where it was parsed.
        let mut c = chart("falco", "9.1.0", D1);
        c.metadata_json = br#"{"name":"falco"}"#.to_vec();
        let e = helm_index(None, &[c.clone()], "t").unwrap_err();
        assert!(e.to_string().contains("falco-9.1.0.tgz"), "{e}");
        assert!(e.to_string().contains("version"), "{e}");
        c.metadata_json = b"[1,2]".to_vec();
        assert!(matches!(
            helm_index(None, &[c.clone()], "t"),
            Err(HelmIndexError::Metadata { .. })
        ));
        c.metadata_json = br#"{"name":"falco","version":"1.0.0"}"#.to_vec();
        c.file_name = "../falco.tgz".into();
        assert!(matches!(
            helm_index(None, &[c], "t"),
            Err(HelmIndexError::FileName { .. })
        ));
        let e = helm_index(Some(b"apiVersion: v2\nentries: {}\n"), &[], "t").unwrap_err();
        assert!(e.to_string().contains("v2"), "{e}");
        assert!(helm_index(Some(b"entries: {}\n"), &[], "t").is_err());
    }

    #[test]
    fn an_empty_index_is_valid() {
        let doc = parse(&helm_index(None, &[], "t").unwrap());
        assert_eq!(doc["apiVersion"], Value::from("v1"));
        assert!(doc["entries"].as_mapping().unwrap().is_empty());
    }
}
