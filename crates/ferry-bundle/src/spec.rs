//! The bundle spec, `bundle.yaml` (`apiVersion: ferry.dev/v1`).
//!
//! ```yaml
//! apiVersion: ferry.dev/v1
//! name: ck8s-apps
//! platforms: [linux/amd64]
//! images:
//!   - nginx:1.27
//!   - ref: ghcr.io/aquasecurity/trivy-operator:0.17.1
//!     platforms: [linux/amd64, linux/arm64]
//!   - list: images-sc.list
//! registries:
//!   "registry.corp:5000": {plainHttp: true}
//! ```
//!
//! Unknown keys are errors that name the key, the file and the line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::reference::Reference;

/// The only apiVersion this build reads.
pub const API_VERSION: &str = "ferry.dev/v1";

/// A parsed, validated spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Bundle name (recorded in bundle.json).
    pub name: String,
    /// Default platform filter for every index (`os/arch[/variant]`); empty = all.
    #[serde(default, deserialize_with = "platforms")]
    pub platforms: Vec<String>,
    /// Container images.
    #[serde(default)]
    pub images: Vec<ImageEntry>,
    /// Per-registry connection settings.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistrySettings>,
    /// Helm charts (not carried by this version yet).
    #[serde(default)]
    pub charts: Option<serde_yaml_ng::Value>,
    /// Falco drivers and artifacts (not carried by this version yet).
    #[serde(default)]
    pub falco: Option<serde_yaml_ng::Value>,
    /// OpenSearch plugins (not carried by this version yet).
    #[serde(default)]
    pub opensearch: Option<serde_yaml_ng::Value>,
    /// Trivy databases and checks, carried as OCI artifacts.
    #[serde(default)]
    pub trivy: Option<TrivySpec>,
    /// Plain files (not carried by this version yet).
    #[serde(default)]
    pub files: Option<serde_yaml_ng::Value>,
    /// The directory relative paths (list files) resolve against.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the spec came from (for messages).
    #[serde(skip)]
    pub source: PathBuf,
}

/// Trivy's default database repositories (FORMATS.md §5: `mirror.gcr.io` is
/// the upstream default today).
pub const TRIVY_DB: &str = "mirror.gcr.io/aquasec/trivy-db:2";
/// Trivy's default Java database.
pub const TRIVY_JAVA_DB: &str = "mirror.gcr.io/aquasec/trivy-java-db:1";
/// Trivy's default checks bundle.
pub const TRIVY_CHECKS: &str = "mirror.gcr.io/aquasec/trivy-checks:2";

/// `true` (the upstream default), `false`, or an explicit reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toggle {
    /// Off.
    Off,
    /// The upstream default.
    Default,
    /// This reference.
    Ref(Reference),
}

impl<'de> Deserialize<'de> for Toggle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Toggle;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false, or an image reference")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Toggle, E> {
                Ok(if b { Toggle::Default } else { Toggle::Off })
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Toggle, E> {
                Reference::parse(s).map(Toggle::Ref).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The `trivy:` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrivySpec {
    /// The vulnerability database (`trivy-db:2`).
    #[serde(default)]
    pub db: Option<Toggle>,
    /// The Java database (`trivy-java-db:1`).
    #[serde(default)]
    pub java_db: Option<Toggle>,
    /// The misconfiguration checks bundle (`trivy-checks:2`).
    #[serde(default)]
    pub checks: Option<Toggle>,
}

impl TrivySpec {
    /// The references selected, with the default filled in.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        for (t, default) in [
            (&self.db, TRIVY_DB),
            (&self.java_db, TRIVY_JAVA_DB),
            (&self.checks, TRIVY_CHECKS),
        ] {
            match t {
                Some(Toggle::Default) => {
                    if let Ok(r) = Reference::parse(default) {
                        out.push(r);
                    }
                }
                Some(Toggle::Ref(r)) => out.push(r.clone()),
                Some(Toggle::Off) | None => {}
            }
        }
        out
    }
}

/// Connection settings for one registry host.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistrySettings {
    /// Speak plain HTTP.
    #[serde(default)]
    pub plain_http: bool,
    /// Skip TLS verification.
    #[serde(default)]
    pub insecure: bool,
    /// CA bundle file.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate file.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Client key file.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Send this registry's requests to another base URL.
    #[serde(default)]
    pub mirror: Option<String>,
}

/// One entry of `images:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageEntry {
    /// A reference, with an optional platform filter.
    Ref {
        /// The reference.
        reference: Reference,
        /// Platform filter overriding the spec-wide one.
        platforms: Option<Vec<String>>,
    },
    /// A file of references, one per line.
    List {
        /// Path relative to the spec.
        path: PathBuf,
        /// Platform filter for every ref in the file.
        platforms: Option<Vec<String>>,
    },
    /// Every `image:` in a rendered YAML stream.
    FromManifests {
        /// Path relative to the spec.
        path: PathBuf,
        /// Platform filter for every ref found.
        platforms: Option<Vec<String>>,
    },
}

/// Checks `os/arch[/variant]`.
pub fn validate_platform(p: &str) -> Result<(), String> {
    let parts: Vec<&str> = p.split('/').collect();
    let ok_part = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    };
    if (parts.len() == 2 || parts.len() == 3) && parts.iter().all(|s| ok_part(s)) {
        Ok(())
    } else {
        Err(format!("invalid platform `{p}`: expected `os/arch` or `os/arch/variant`, e.g. `linux/arm64/v8`"))
    }
}

fn platforms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v: Vec<String> = Vec::deserialize(d)?;
    for p in &v {
        validate_platform(p).map_err(de::Error::custom)?;
    }
    Ok(v)
}

fn opt_platforms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    platforms(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ImageMap {
    #[serde(rename = "ref", default)]
    reference: Option<Reference>,
    #[serde(default)]
    list: Option<PathBuf>,
    #[serde(default)]
    from_manifests: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt_platforms")]
    platforms: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for ImageEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ImageEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an image reference, or a map with one of `ref`, `list`, `fromManifests`",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ImageEntry, E> {
                Ok(ImageEntry::Ref {
                    reference: Reference::parse(s).map_err(E::custom)?,
                    platforms: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ImageEntry, A::Error> {
                let m = ImageMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match (m.reference, m.list, m.from_manifests) {
                    (Some(reference), None, None) => Ok(ImageEntry::Ref {
                        reference,
                        platforms: m.platforms,
                    }),
                    (None, Some(path), None) => Ok(ImageEntry::List {
                        path,
                        platforms: m.platforms,
                    }),
                    (None, None, Some(path)) => Ok(ImageEntry::FromManifests {
                        path,
                        platforms: m.platforms,
                    }),
                    _ => Err(de::Error::custom(
                        "an image entry needs exactly one of `ref`, `list` or `fromManifests`",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A spec that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("failed to read spec `{path}`")]
    Read {
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// YAML or schema error; the message names the key and the line.
    #[error("invalid spec `{path}`: {message}")]
    Invalid {
        /// Its path.
        path: PathBuf,
        /// What is wrong, with its location.
        message: String,
    },
    /// A bad line in a list file.
    #[error("{path}:{line}: {message}")]
    ListLine {
        /// The list file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A list file that could not be read.
    #[error("failed to read image list `{path}` (named in `{spec}`)")]
    ListRead {
        /// The list file.
        path: PathBuf,
        /// The spec naming it.
        spec: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl Spec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Spec::parse(&text, path, &base)
    }

    /// Parses spec text; `source` names it in messages, `base_dir` anchors relative paths.
    pub fn parse(text: &str, source: &Path, base_dir: &Path) -> Result<Spec, SpecError> {
        let invalid = |message: String| SpecError::Invalid {
            path: source.to_path_buf(),
            message,
        };
        let mut spec: Spec = serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if spec.api_version != API_VERSION {
            return Err(invalid(format!(
                "apiVersion `{}` is not supported (expected `{API_VERSION}`)",
                spec.api_version
            )));
        }
        if spec.name.trim().is_empty() {
            return Err(invalid("`name` must not be empty".into()));
        }
        for host in spec.registries.keys() {
            if host.contains('/') || host.is_empty() {
                return Err(invalid(format!(
                    "registries: `{host}` must be a host[:port] without scheme or path"
                )));
            }
        }
        spec.base_dir = base_dir.to_path_buf();
        spec.source = source.to_path_buf();
        Ok(spec)
    }

    /// The sections this build cannot carry yet, by key.
    pub fn unsupported_sections(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (key, present) in [
            ("charts", self.charts.is_some()),
            ("falco", self.falco.is_some()),
            ("opensearch", self.opensearch.is_some()),
            ("files", self.files.is_some()),
        ] {
            if present {
                v.push(key);
            }
        }
        v
    }
}

/// One image to carry, with the platform filter that applies to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageRequest {
    /// The reference.
    pub reference: Reference,
    /// What it is (an image, or an OCI artifact of another kind).
    pub kind: crate::meta::Kind,
    /// Platforms to keep (empty = all).
    pub platforms: Vec<String>,
}

/// Parses a list file's text: one reference per line; blank lines, `#`
/// comments, YAML document markers and `- ` list prefixes are allowed.
pub fn parse_list(text: &str, path: &Path) -> Result<Vec<Reference>, SpecError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let mut line = raw.trim();
        if let Some(pos) = line.find(" #") {
            line = line[..pos].trim();
        }
        if line.is_empty()
            || line.starts_with('#')
            || line == "---"
            || line == "..."
            || line == "null"
        {
            continue;
        }
        if let Some(rest) = line.strip_prefix("- ") {
            line = rest.trim();
        }
        let line = line.trim_matches(|c| c == '"' || c == '\'');
        let r = Reference::parse(line).map_err(|e| SpecError::ListLine {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(r);
    }
    Ok(out)
}

impl Spec {
    /// Expands `images:` (reading list files) into requests, deduplicated and
    /// sorted. `extra_platforms` (from `--platform`) overrides the spec-wide filter.
    /// `from_manifests` finds image references in a rendered YAML stream.
    pub fn image_requests(
        &self,
        cli_platforms: &[String],
        from_manifests: &dyn Fn(&Path) -> Result<Vec<Reference>, SpecError>,
    ) -> Result<Vec<ImageRequest>, SpecError> {
        let default: Vec<String> = if cli_platforms.is_empty() {
            self.platforms.clone()
        } else {
            cli_platforms.to_vec()
        };
        // None = every platform.
        let mut out: BTreeMap<Reference, Option<std::collections::BTreeSet<String>>> =
            BTreeMap::new();
        let mut add = |r: Reference, p: &Option<Vec<String>>| {
            let plats = if !cli_platforms.is_empty() {
                cli_platforms.to_vec()
            } else {
                p.clone().unwrap_or_else(|| default.clone())
            };
            let new = if plats.is_empty() {
                None
            } else {
                Some(plats.into_iter().collect())
            };
            match out.get_mut(&r) {
                None => {
                    out.insert(r, new);
                }
                Some(existing) => match (existing.as_mut(), new) {
                    (None, _) => {}
                    (Some(_), None) => *existing = None,
                    (Some(set), Some(more)) => set.extend(more),
                },
            }
        };
        for entry in &self.images {
            match entry {
                ImageEntry::Ref {
                    reference,
                    platforms,
                } => add(reference.clone(), platforms),
                ImageEntry::List { path, platforms } => {
                    let full = self.base_dir.join(path);
                    let text =
                        std::fs::read_to_string(&full).map_err(|source| SpecError::ListRead {
                            path: full.clone(),
                            spec: self.source.clone(),
                            source,
                        })?;
                    for r in parse_list(&text, &full)? {
                        add(r, platforms);
                    }
                }
                ImageEntry::FromManifests { path, platforms } => {
                    let full = self.base_dir.join(path);
                    for r in from_manifests(&full)? {
                        add(r, platforms);
                    }
                }
            }
        }
        let trivy: Vec<Reference> = self
            .trivy
            .as_ref()
            .map(TrivySpec::references)
            .unwrap_or_default();
        for r in &trivy {
            // Artifacts have no platforms: never filter them.
            out.insert(r.clone(), None);
        }
        Ok(out
            .into_iter()
            .map(|(reference, platforms)| ImageRequest {
                kind: if trivy.contains(&reference) {
                    crate::meta::Kind::TrivyDb
                } else {
                    crate::meta::Kind::Image
                },
                reference,
                platforms: platforms
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(text, Path::new("bundle.yaml"), Path::new("."))
    }

    #[test]
    fn parses_refs_with_platforms_digests_and_lists() {
        let d = format!("sha256:{}", "c".repeat(64));
        let s = parse(&format!(
            "apiVersion: ferry.dev/v1\nname: t\nplatforms: [linux/amd64]\nimages:\n  - nginx:1.27\n  - ref: ghcr.io/a/b:1\n    platforms: [linux/arm64/v8]\n  - registry.k8s.io/pause@{d}\n  - list: more.list\n"
        ))
        .unwrap();
        assert_eq!(s.images.len(), 4);
        assert!(
            matches!(&s.images[1], ImageEntry::Ref { platforms: Some(p), .. } if p == &vec!["linux/arm64/v8".to_string()])
        );
        assert!(matches!(&s.images[3], ImageEntry::List { .. }));
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = parse("apiVersion: ferry.dev/v1\nname: t\nimages:\n  - ref: nginx\n    platfroms: [linux/amd64]\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("platfroms"), "{msg}");
        assert!(msg.contains("line 5"), "{msg}");
        assert!(msg.contains("bundle.yaml"), "{msg}");
        let e = parse("apiVersion: ferry.dev/v1\nname: t\nimagez: []\n").unwrap_err();
        assert!(
            e.to_string().contains("imagez") && e.to_string().contains("line 3"),
            "{e}"
        );
    }

    #[test]
    fn bad_references_name_the_line() {
        let e = parse("apiVersion: ferry.dev/v1\nname: t\nimages:\n  - nginx\n  - Bad/Ref\n")
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("Bad/Ref") && msg.contains("line 5"), "{msg}");
    }

    #[test]
    fn wrong_api_version_and_bad_platform_are_refused() {
        assert!(parse("apiVersion: ferry.dev/v2\nname: t\n")
            .unwrap_err()
            .to_string()
            .contains("ferry.dev/v2"));
        let e = parse("apiVersion: ferry.dev/v1\nname: t\nplatforms: [amd64]\n").unwrap_err();
        assert!(e.to_string().contains("amd64"), "{e}");
    }

    #[test]
    fn list_files_allow_comments_blank_lines_and_yq_output() {
        let text = "# images\n\ndocker.io/library/nginx:1.27\n---\n\"quay.io/a/b:2\"\n- ghcr.io/c/d:3 # trailing\n";
        let refs = parse_list(text, Path::new("x.list")).unwrap();
        let s: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            s,
            [
                "docker.io/library/nginx:1.27",
                "quay.io/a/b:2",
                "ghcr.io/c/d:3"
            ]
        );
        let e = parse_list("nginx\nBAD REF\n", Path::new("x.list")).unwrap_err();
        assert!(e.to_string().starts_with("x.list:2:"), "{e}");
    }

    #[test]
    fn requests_are_deduplicated_and_platform_filters_merged() {
        let s = parse("apiVersion: ferry.dev/v1\nname: t\nimages:\n  - nginx\n  - docker.io/library/nginx:latest\n  - ref: a.io/x:1\n    platforms: [linux/amd64]\n  - ref: a.io/x:1\n    platforms: [linux/arm64]\n").unwrap();
        let none = |_: &Path| -> Result<Vec<Reference>, SpecError> { Ok(vec![]) };
        let reqs = s.image_requests(&[], &none).unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].reference.to_string(), "a.io/x:1");
        assert_eq!(reqs[0].platforms, ["linux/amd64", "linux/arm64"]);
        assert!(reqs[1].platforms.is_empty());
    }
}

#[cfg(test)]
mod trivy_tests {
    use super::*;

    #[test]
    fn trivy_section_selects_defaults_explicit_refs_and_none() {
        let s = Spec::parse(
            "apiVersion: ferry.dev/v1\nname: t\nplatforms: [linux/amd64]\ntrivy:\n  db: true\n  javaDb: ghcr.io/aquasecurity/trivy-java-db:1\n  checks: false\n",
            Path::new("b.yaml"),
            Path::new("."),
        )
        .unwrap();
        let none = |_: &Path| -> Result<Vec<Reference>, SpecError> { Ok(vec![]) };
        let reqs = s.image_requests(&[], &none).unwrap();
        let got: Vec<(String, crate::meta::Kind, usize)> = reqs
            .iter()
            .map(|r| (r.reference.to_string(), r.kind, r.platforms.len()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "ghcr.io/aquasecurity/trivy-java-db:1".to_string(),
                    crate::meta::Kind::TrivyDb,
                    0
                ),
                (TRIVY_DB.to_string(), crate::meta::Kind::TrivyDb, 0),
            ]
        );
        let e = Spec::parse(
            "apiVersion: ferry.dev/v1\nname: t\ntrivy:\n  dbb: true\n",
            Path::new("b.yaml"),
            Path::new("."),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("dbb") && e.to_string().contains("line 4"),
            "{e}"
        );
    }
}
