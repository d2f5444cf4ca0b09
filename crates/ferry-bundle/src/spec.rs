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
    /// Helm charts (classic repositories and OCI).
    #[serde(default)]
    pub charts: Vec<ChartEntry>,
    /// Falco drivers, rules/plugin artifacts and the falcoctl index.
    #[serde(default)]
    pub falco: Option<FalcoSpec>,
    /// OpenSearch plugins.
    #[serde(default)]
    pub opensearch: Option<OpenSearchSpec>,
    /// Trivy databases and checks, carried as OCI artifacts.
    #[serde(default)]
    pub trivy: Option<TrivySpec>,
    /// Plain files.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// The signature policy checked at export and carried in the bundle
    /// (docs/verification.md); key and trusted-root paths are relative to
    /// the spec's directory.
    #[serde(default)]
    pub verify: Option<ferry_trust::VerifySpec>,
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

/// Basic-auth credentials for an HTTP source; the password comes from an
/// environment variable so specs can live in Git.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpAuth {
    /// User name.
    pub username: String,
    /// Name of the environment variable holding the password.
    pub password_env: String,
}

/// One `charts:` entry: a classic repository chart or an OCI chart.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChartEntry {
    /// Classic repository URL (its `index.yaml` lists the chart).
    #[serde(default)]
    pub repo: Option<String>,
    /// Chart name (classic repositories).
    #[serde(default)]
    pub name: Option<String>,
    /// Chart version (classic: required; OCI: the tag when `oci:` has none).
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub version: Option<String>,
    /// OCI chart reference, `oci://host/path/name:version`.
    #[serde(default)]
    pub oci: Option<String>,
    /// Also bundle the images the chart references.
    #[serde(default)]
    pub images: bool,
    /// The repository's directory on the file server (`helm/<repoName>/`).
    #[serde(default)]
    pub repo_name: Option<String>,
    /// Basic auth for a classic repository.
    #[serde(default)]
    pub auth: Option<HttpAuth>,
}

impl ChartEntry {
    fn validate(&self) -> Result<(), String> {
        match (&self.repo, &self.oci) {
            (Some(repo), None) => {
                if !(repo.starts_with("https://") || repo.starts_with("http://")) {
                    return Err(format!("repo `{repo}` must be an http(s):// URL"));
                }
                if self.name.as_deref().unwrap_or("").is_empty() {
                    return Err("a classic chart needs `name`".into());
                }
                if self.version.as_deref().unwrap_or("").is_empty() {
                    return Err("a classic chart needs `version`".into());
                }
            }
            (None, Some(oci)) => {
                self.oci_reference().map_err(|e| e.to_string())?;
                let last = oci.rsplit('/').next().unwrap_or("");
                let explicit = last.contains(':') || last.contains('@');
                if !explicit && self.version.is_none() {
                    return Err(format!(
                        "oci `{oci}` needs a version: `oci://host/path/name:1.2.3` or `version:`"
                    ));
                }
                if self.name.is_some() {
                    return Err("`name` is for classic repositories; an OCI chart's name is the last path component".into());
                }
                if self.auth.is_some() {
                    return Err(
                        "`auth` is for classic repositories; OCI registries use the docker config"
                            .into(),
                    );
                }
            }
            (Some(_), Some(_)) => {
                return Err("give either `repo` (with `name`, `version`) or `oci`, not both".into())
            }
            (None, None) => {
                return Err("a chart needs `repo` + `name` + `version`, or `oci`".into())
            }
        }
        if let Some(n) = &self.repo_name {
            crate::relpath::RelPath::new(n).map_err(|e| format!("repoName: {e}"))?;
        }
        Ok(())
    }

    /// The OCI reference (`+` in the version becomes `_` in the tag, as Helm does).
    pub fn oci_reference(&self) -> Result<Reference, ValueError> {
        let Some(oci) = &self.oci else {
            return Err(ValueError::NotOci);
        };
        let rest = oci
            .strip_prefix("oci://")
            .ok_or_else(|| ValueError::NoOciScheme { oci: oci.clone() })?;
        let has_tag = rest
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':') || last.contains('@'));
        let full = match (&self.version, has_tag) {
            (Some(v), false) => format!("{rest}:{}", v.replace('+', "_")),
            (Some(_), true) => return Err(ValueError::TagAndVersion { oci: oci.clone() }),
            (None, _) => {
                // A `+` in the tag is Helm's version syntax.
                match rest.rsplit_once(':') {
                    Some((head, tag)) if !tag.contains('/') => {
                        format!("{head}:{}", tag.replace('+', "_"))
                    }
                    _ => rest.to_string(),
                }
            }
        };
        Reference::parse(&full).map_err(|e| ValueError::BadOciReference {
            oci: oci.clone(),
            reason: e.to_string(),
        })
    }
}

/// The `falco:` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FalcoSpec {
    /// Prebuilt kernel modules.
    #[serde(default)]
    pub drivers: Option<FalcoDrivers>,
    /// falcoctl OCI artifacts (rules files, plugins).
    #[serde(default)]
    pub artifacts: Vec<Reference>,
    /// The falcoctl index (`index.yaml`) URL.
    #[serde(default)]
    pub index: Option<String>,
}

/// Default Falco driver repository.
pub const FALCO_DRIVER_REPO: &str = "https://download.falco.org/driver";

/// `falco.drivers`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FalcoDrivers {
    /// Driver repository base URL (default [`FALCO_DRIVER_REPO`]).
    #[serde(default)]
    pub repo: Option<String>,
    /// Driver version, e.g. `7.0.0+driver`.
    #[serde(deserialize_with = "scalar_string")]
    pub version: String,
    /// Driver name (default `falco`).
    #[serde(default)]
    pub name: Option<String>,
    /// Architectures (`x86_64`, `aarch64`).
    pub arch: Vec<String>,
    /// Kernels.
    pub kernels: Vec<FalcoKernel>,
}

/// One kernel a driver is needed for.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FalcoKernel {
    /// falcoctl's target id (`ubuntu-generic`, `debian`, …).
    pub target: String,
    /// Kernel release (`uname -r`).
    #[serde(deserialize_with = "scalar_string")]
    pub release: String,
    /// Kernel version (the number from `uname -v`).
    #[serde(deserialize_with = "scalar_string")]
    pub version: String,
}

fn file_component_ok(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s.contains('/')
        && !s.contains('\\')
        && !s.chars().any(|c| c.is_control())
}

impl FalcoSpec {
    fn validate(&self) -> Result<(), String> {
        if let Some(d) = &self.drivers {
            if let Some(r) = &d.repo {
                if !(r.starts_with("https://") || r.starts_with("http://")) {
                    return Err(format!("drivers.repo `{r}` must be an http(s):// URL"));
                }
            }
            if !file_component_ok(&d.version) {
                return Err(format!(
                    "drivers.version `{}` is not a valid version",
                    d.version
                ));
            }
            if d.arch.is_empty() {
                return Err("drivers.arch is empty (e.g. [x86_64])".into());
            }
            for a in &d.arch {
                if !matches!(a.as_str(), "x86_64" | "aarch64") {
                    return Err(format!("drivers.arch `{a}`: expected x86_64 or aarch64"));
                }
            }
            if d.kernels.is_empty() {
                return Err("drivers.kernels is empty".into());
            }
            for k in &d.kernels {
                for v in [&k.target, &k.release, &k.version] {
                    if !file_component_ok(v) {
                        return Err(format!(
                            "drivers.kernels: `{v}` cannot be part of a file name"
                        ));
                    }
                }
            }
            if let Some(n) = &d.name {
                if !file_component_ok(n) {
                    return Err(format!("drivers.name `{n}` cannot be part of a file name"));
                }
            }
        }
        if let Some(i) = &self.index {
            if !(i.starts_with("https://") || i.starts_with("http://")) {
                return Err(format!("index `{i}` must be an http(s):// URL"));
            }
        }
        Ok(())
    }
}

/// Default OpenSearch plugin repository.
pub const OPENSEARCH_REPO: &str = "https://artifacts.opensearch.org/releases/plugins";

/// The `opensearch:` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenSearchSpec {
    /// Plugin repository base URL (default [`OPENSEARCH_REPO`]).
    #[serde(default)]
    pub repo: Option<String>,
    /// The OpenSearch version (plugins must match it exactly).
    #[serde(deserialize_with = "scalar_string")]
    pub version: String,
    /// Plugin ids, e.g. `repository-s3`.
    pub plugins: Vec<String>,
}

impl OpenSearchSpec {
    fn validate(&self) -> Result<(), String> {
        if let Some(r) = &self.repo {
            if !(r.starts_with("https://") || r.starts_with("http://")) {
                return Err(format!("repo `{r}` must be an http(s):// URL"));
            }
        }
        if !file_component_ok(&self.version) {
            return Err(format!("version `{}` is not a valid version", self.version));
        }
        if self.plugins.is_empty() {
            return Err("plugins is empty".into());
        }
        for p in &self.plugins {
            if !file_component_ok(p) || p.contains(':') {
                return Err(format!(
                    "plugin `{p}` is not a plugin id (e.g. repository-s3)"
                ));
            }
        }
        Ok(())
    }
}

/// One `files:` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileEntry {
    /// Where to fetch it.
    pub url: String,
    /// Its sha256 (hex, optionally `sha256:`-prefixed); required.
    pub sha256: String,
    /// Its path on the file server, under `files/`.
    pub path: String,
    /// Basic auth.
    #[serde(default)]
    pub auth: Option<HttpAuth>,
}

impl FileEntry {
    fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(format!("url `{}` must be an http(s):// URL", self.url));
        }
        self.digest().map_err(|e| e.to_string())?;
        crate::relpath::RelPath::new(&self.path).map_err(|e| format!("path: {e}"))?;
        Ok(())
    }

    /// The expected digest.
    pub fn digest(&self) -> Result<crate::Digest, ValueError> {
        let hex = self.sha256.strip_prefix("sha256:").unwrap_or(&self.sha256);
        format!("sha256:{}", hex.to_ascii_lowercase())
            .parse()
            .map_err(|_| ValueError::BadSha256 {
                given: self.sha256.clone(),
            })
    }
}

/// Reads a YAML scalar (string or number) as its text.
fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = yaml_serde::Value::deserialize(d)?;
    match v {
        yaml_serde::Value::String(s) => Ok(s),
        yaml_serde::Value::Number(n) if !n.is_f64() => Ok(n.to_string()),
        yaml_serde::Value::Number(n) => Err(de::Error::custom(format!(
            "put the version `{n}` in quotes: YAML reads an unquoted 2.10 as the number 2.1"
        ))),
        _ => Err(de::Error::custom("expected a string or number")),
    }
}

fn opt_scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    scalar_string(d).map(Some)
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

/// Why one value of a spec entry was refused (a platform, a chart's
/// `oci:` reference, a file's `sha256`). Spec values are quoted as written:
/// the spec checks every string for unsafe characters before this runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A platform that is not `os/arch[/variant]`.
    #[error("invalid platform `{given}`: expected `os/arch` or `os/arch/variant`, e.g. `linux/arm64/v8`")]
    BadPlatform {
        /// The platform as written.
        given: String,
    },
    /// `oci_reference` of a chart that has no `oci:`.
    #[error("not an OCI chart")]
    NotOci,
    /// An `oci:` without the `oci://` scheme.
    #[error("oci `{oci}` must start with oci://")]
    NoOciScheme {
        /// The `oci:` value.
        oci: String,
    },
    /// An `oci:` with a tag and a `version:` too.
    #[error("oci `{oci}` has a tag and `version` is set too; give one")]
    TagAndVersion {
        /// The `oci:` value.
        oci: String,
    },
    /// An `oci:` that is not a valid reference.
    #[error("oci `{oci}`: {reason}")]
    BadOciReference {
        /// The `oci:` value.
        oci: String,
        /// What the reference grammar says.
        reason: String,
    },
    /// A `sha256:` that is not 64 hex digits.
    #[error("sha256 `{given}` is not 64 hex digits")]
    BadSha256 {
        /// The value as written.
        given: String,
    },
}

/// Checks `os/arch[/variant]`.
pub fn validate_platform(p: &str) -> Result<(), ValueError> {
    let parts: Vec<&str> = p.split('/').collect();
    let ok_part = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    };
    if (parts.len() == 2 || parts.len() == 3) && parts.iter().all(|s| ok_part(s)) {
        Ok(())
    } else {
        Err(ValueError::BadPlatform {
            given: p.to_string(),
        })
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
    /// The file could not be read (missing, not a regular file, over the limit).
    #[error("failed to read spec `{path}`")]
    Read {
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: crate::input::InputError,
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
    /// A list file that could not be read (missing, not a regular file,
    /// over the size or line limit).
    #[error("failed to read image list `{path}` (named in `{spec}`)")]
    ListRead {
        /// The list file.
        path: PathBuf,
        /// The spec naming it.
        spec: PathBuf,
        /// Cause.
        #[source]
        source: crate::input::InputError,
    },
}

impl Spec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = crate::input::read_text(path, crate::input::SPEC).map_err(|source| {
            SpecError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Spec::parse(&text, path, &base)
    }

    /// Parses spec text; `source` names it in messages, `base_dir` anchors relative paths.
    pub fn parse(text: &str, source: &Path, base_dir: &Path) -> Result<Spec, SpecError> {
        // Messages quote values from the file: escaped, never raw.
        let invalid = |message: String| SpecError::Invalid {
            path: source.to_path_buf(),
            message: crate::text::escape(&message).into_owned(),
        };
        crate::yaml::check_depth(text.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        // Every string of the spec may end up in a bundle, a comment or a
        // terminal: none may hold a line break, escape or other control.
        // (YAML that does not parse is reported by the typed parse below.)
        if let Ok(tree) = yaml_serde::from_str::<yaml_serde::Value>(text) {
            unsafe_strings(&tree, "").map_err(|(at, value)| {
                invalid(format!(
                    "{at}: `{}` holds a control, line-break or formatting character; spec strings may not",
                    crate::text::escape(&value)
                ))
            })?;
        }
        let mut spec: Spec = yaml_serde::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if spec.api_version != API_VERSION {
            return Err(invalid(format!(
                "apiVersion `{}` is not supported (expected `{API_VERSION}`)",
                spec.api_version
            )));
        }
        crate::text::check_name(&spec.name).map_err(|e| invalid(e.to_string()))?;
        for host in spec.registries.keys() {
            if host.contains('/') || host.is_empty() {
                return Err(invalid(format!(
                    "registries: `{host}` must be a host[:port] without scheme or path"
                )));
            }
        }
        spec.validate_sections().map_err(invalid)?;
        spec.base_dir = base_dir.to_path_buf();
        spec.source = source.to_path_buf();
        Ok(spec)
    }

    fn validate_sections(&self) -> Result<(), String> {
        for (i, c) in self.charts.iter().enumerate() {
            c.validate().map_err(|e| format!("charts[{i}]: {e}"))?;
        }
        if let Some(f) = &self.falco {
            f.validate().map_err(|e| format!("falco: {e}"))?;
        }
        if let Some(o) = &self.opensearch {
            o.validate().map_err(|e| format!("opensearch: {e}"))?;
        }
        let mut paths = std::collections::BTreeSet::new();
        for (i, f) in self.files.iter().enumerate() {
            f.validate().map_err(|e| format!("files[{i}]: {e}"))?;
            if !paths.insert(f.path.clone()) {
                return Err(format!("files[{i}]: path `{}` is used twice", f.path));
            }
        }
        Ok(())
    }
}

/// The first string in `v` (a key or a value) with an unsafe character, as
/// (where, the string).
fn unsafe_strings(v: &yaml_serde::Value, at: &str) -> Result<(), (String, String)> {
    use yaml_serde::Value;
    let here = || {
        if at.is_empty() {
            "(top level)".to_string()
        } else {
            at.to_string()
        }
    };
    match v {
        Value::String(s) if crate::text::has_unsafe_char(s) => Err((here(), s.clone())),
        Value::Sequence(items) => {
            for (i, x) in items.iter().enumerate() {
                unsafe_strings(x, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        Value::Mapping(m) => {
            for (k, x) in m {
                let key = match k {
                    Value::String(k) => {
                        if crate::text::has_unsafe_char(k) {
                            return Err((format!("a key in {}", here()), k.clone()));
                        }
                        k.clone()
                    }
                    other => yaml_serde::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let next = if at.is_empty() {
                    key
                } else {
                    format!("{at}.{key}")
                };
                unsafe_strings(k, &next)?;
                unsafe_strings(x, &next)?;
            }
            Ok(())
        }
        Value::Tagged(t) => unsafe_strings(&t.value, at),
        _ => Ok(()),
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
        if raw
            .chars()
            .any(|c| c != '\t' && crate::text::is_unsafe_char(c))
        {
            return Err(SpecError::ListLine {
                path: path.to_path_buf(),
                line: i + 1,
                message: format!(
                    "`{}` holds a control, line-break or formatting character",
                    crate::text::escape(raw)
                ),
            });
        }
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
                        crate::input::read_text(&full, crate::input::LIST).map_err(|source| {
                            SpecError::ListRead {
                                path: full.clone(),
                                spec: self.source.clone(),
                                source,
                            }
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

#[cfg(test)]
mod section_tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(text, Path::new("b.yaml"), Path::new("."))
    }

    #[test]
    fn every_section_parses_and_bad_values_name_the_entry() {
        let sha = "a".repeat(64);
        let s = parse(&format!(
            "apiVersion: ferry.dev/v1\nname: t\ncharts:\n  - repo: https://c.example/stable\n    name: falco\n    version: 9.1.0\n    images: true\n  - oci: oci://ghcr.io/x/charts/app:1.2.3+b\nfalco:\n  drivers:\n    version: 7.0.0+driver\n    arch: [x86_64]\n    kernels:\n      - {{target: ubuntu-generic, release: 5.15.0-91-generic, version: 101}}\n  artifacts: [ghcr.io/falcosecurity/rules/falco-rules:3]\n  index: https://falcosecurity.github.io/falcoctl/index.yaml\nopensearch:\n  version: 2.8.0\n  plugins: [repository-s3]\nfiles:\n  - url: https://x.example/t.tgz\n    sha256: {sha}\n    path: tools/t.tgz\n"
        ))
        .unwrap();
        assert_eq!(s.charts.len(), 2);
        assert_eq!(
            s.charts[1].oci_reference().unwrap().to_string(),
            "ghcr.io/x/charts/app:1.2.3_b"
        );
        let d = s.falco.as_ref().unwrap().drivers.as_ref().unwrap();
        assert_eq!(d.kernels[0].version, "101");
        assert_eq!(s.files[0].digest().unwrap().hex(), sha);
        for (bad, want) in [
            (
                format!("files:\n  - url: https://x/y\n    sha256: {sha}\n    path: ../etc/passwd\n"),
                "files[0]: path: invalid path `../etc/passwd`",
            ),
            (
                "falco:\n  drivers:\n    version: 1\n    arch: [i386]\n    kernels: [{target: a, release: b, version: c}]\n".to_string(),
                "drivers.arch `i386`",
            ),
            (
                "falco:\n  drivers:\n    version: 1\n    arch: [x86_64]\n    kernels: [{target: a/b, release: b, version: c}]\n".to_string(),
                "cannot be part of a file name",
            ),
            (
                "charts:\n  - oci: oci://ghcr.io/x/app\n".to_string(),
                "needs a version",
            ),
            (
                "charts:\n  - repo: https://a\n    name: x\n    version: 1.0.0\n    oci: oci://a/b:1\n".to_string(),
                "not both",
            ),
            (
                "opensearch:\n  version: 2.8.0\n  plugins: [\"../x\"]\n".to_string(),
                "is not a plugin id",
            ),
        ] {
            let e = parse(&format!("apiVersion: ferry.dev/v1\nname: t\n{bad}")).unwrap_err();
            assert!(e.to_string().contains(want), "{bad}: {e}");
        }
    }
}
