//! The regenerated Helm `index.yaml` survives a YAML 1.1 reader (issue 13):
//! Helm decodes indexes with `sigs.k8s.io/yaml` (YAML 1.1 rules), which reads
//! `on`, `yes`, `n`, `1_000`, `1:20`, `2001-01-01`, `~`, … as other types and
//! then refuses the whole index. Every string ferry writes must come back as
//! the same string from PyYAML, which follows the same YAML 1.1 resolver.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::process::Command;

use ferry_import::helm_index::{helm_index, ChartEntry};

/// Strings a YAML 1.1 resolver takes for booleans, null, numbers,
/// timestamps or special keys, and their neighbours.
const AMBIGUOUS: &[&str] = &[
    "on",
    "On",
    "ON",
    "off",
    "Off",
    "yes",
    "Yes",
    "YES",
    "no",
    "No",
    "NO",
    "y",
    "Y",
    "n",
    "N",
    "true",
    "True",
    "false",
    "FALSE",
    "~",
    "null",
    "Null",
    "NULL",
    "",
    "1_000",
    "1_0.5",
    "+1",
    "-1",
    "017",
    "0o17",
    "0x1F",
    "0b101",
    "1e3",
    "1.0",
    ".5",
    "-.5",
    "+.5",
    ".inf",
    "-.Inf",
    ".NaN",
    "1:20",
    "12:30:45",
    "-1:20",
    "2001-01-01",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10 -5",
    "<<",
    "=",
    "- x",
    "? x",
    ": x",
    "#x",
    "x #y",
    "a: b",
    "[a]",
    "{a}",
    "!x",
    "&x",
    "*x",
    "|",
    ">",
    "%x",
    "@x",
    "`x",
    "'q",
    "\"dq",
    " lead",
    "trail ",
];

fn pyyaml_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import yaml"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("python3 with PyYAML is needed: apt-get install -y python3-yaml (or pip install pyyaml)");
    }
    ok
}

#[test]
fn every_ambiguous_scalar_reads_back_as_the_same_string_in_yaml_1_1() {
    assert!(
        pyyaml_available(),
        "python3 with PyYAML is needed: apt-get install -y python3-yaml (or pip install pyyaml)"
    );
    let charts: Vec<ChartEntry> = AMBIGUOUS
        .iter()
        .enumerate()
        .map(|(i, v)| ChartEntry {
            metadata_json: serde_json::to_vec(&serde_json::json!({
                "apiVersion": "v2",
                "name": format!("chart{i}"),
                "version": format!("1.0.{i}"),
                "appVersion": v,
                "description": v,
                "keywords": [v, "plain"],
                "annotations": {(*v).to_string(): *v},
            }))
            .unwrap(),
            digest: ferry_bundle::digest::Digest::from_hex(&"a".repeat(64)).unwrap(),
            file_name: format!("chart{i}-1.0.{i}.tgz"),
            created: Some("2026-01-02T03:04:05Z".into()),
        })
        .collect();
    let index = helm_index(None, &charts, "2026-01-02T03:04:05Z").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.yaml");
    std::fs::write(&path, &index).unwrap();
    // PyYAML (YAML 1.1): every value must be a str equal to what was written.
    let script = r#"
import json, sys, yaml
doc = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
out = {}
for name, versions in doc["entries"].items():
    v = versions[0]
    for key in ("appVersion", "description"):
        if not isinstance(v[key], str):
            print("NOT A STRING", name, key, repr(v[key])); sys.exit(1)
    for k in v["keywords"]:
        if not isinstance(k, str):
            print("NOT A STRING", name, "keyword", repr(k)); sys.exit(1)
    for k, val in v["annotations"].items():
        if not isinstance(k, str) or not isinstance(val, str):
            print("NOT A STRING", name, "annotation", repr(k), repr(val)); sys.exit(1)
    out[name] = [v["appVersion"], v["description"], v["keywords"][0], list(v["annotations"].items())[0]]
print(json.dumps(out))
"#;
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "PyYAML misread the index: {}{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&index)
    );
    let back: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (i, v) in AMBIGUOUS.iter().enumerate() {
        let got = &back[format!("chart{i}")];
        assert_eq!(got[0], *v, "appVersion {v:?}");
        assert_eq!(got[1], *v, "description {v:?}");
        assert_eq!(got[2], *v, "keyword {v:?}");
        assert_eq!(got[3], serde_json::json!([v, v]), "annotation {v:?}");
    }
}
