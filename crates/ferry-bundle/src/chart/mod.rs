//! Helm chart archives: validation, Helm's OCI encoding, and the images a
//! chart references.
//!
//! [`read_chart`] reads a chart `.tgz` held in memory the way helm's
//! `pkg/chart/loader/archive` does, but stricter where helm is lax: every
//! entry must be a regular file (or directory) under one top-level directory,
//! with no absolute path, no `..`, no link and no device. Decompression is
//! bounded: 100 MiB of file content for the whole chart (subcharts included)
//! and 5 MiB per file, counted while streaming, so a decompression bomb is
//! refused with bounded memory. `Chart.yaml` is read with helm's rules
//! (sigs.k8s.io/yaml onto Go's `chart.Metadata`, then `Metadata.Validate`).
//!
//! A [`Chart`] then gives:
//!
//! - [`Chart::config_json`]: the config blob `helm push` stores, byte for byte
//!   (Go's `json.Marshal` of `chart.Metadata`);
//! - [`Chart::oci_manifest`]: the OCI manifest of a Helm OCI artifact, with the
//!   annotations helm's `pkg/registry/chart.go` derives from `Chart.yaml`;
//! - [`Chart::images`]: the image references in `values.yaml` (and every
//!   subchart's, with the parent's overrides applied) and in literal
//!   `image:` lines of the templates.
//!
//! This module holds the types and the [`Chart`] API; the work is in one
//! module per concern: `archive` (the tar.gz walk with helm's limits),
//! `values` (YAML with an alias budget, helm's coalescing), `metadata`
//! (`Chart.yaml` with helm's rules), `go_json` (Go's JSON encoding of the
//! config blob) and `images` (image references in values and templates);
//! Helm's semver is [`crate::semver`].
//!
//! ```
//! use ferry_bundle::chart::read_chart;
//! use ferry_bundle::craft::chart_tgz;
//!
//! let tgz = chart_tgz("app", "1.2.3", &[("values.yaml", b"image: nginx:1.27\n")]);
//! let chart = read_chart(&tgz, "app-1.2.3.tgz").unwrap();
//! assert_eq!(chart.name(), "app");
//! assert_eq!(chart.images().images, ["docker.io/library/nginx:1.27"]);
//! ```

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::io::{self, Read};

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

use crate::digest::Digest;
use crate::manifest::OCI_MANIFEST;
use crate::reference::Reference;

mod archive;
mod go_json;
mod images;
mod metadata;
mod values;

use archive::*;
use go_json::*;
use images::*;
use values::*;

/// Media type of the config blob of a Helm OCI artifact (`Chart.yaml` as JSON).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
/// Media type of the chart layer of a Helm OCI artifact (the `.tgz` bytes).
pub const CHART_LAYER_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// Media type of the provenance layer of a Helm OCI artifact.
pub const PROVENANCE_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.provenance.v1.prov";

/// Most bytes of file content a chart may decompress to, subcharts included.
pub const MAX_CHART_SIZE: u64 = 100 * 1024 * 1024;
/// Most bytes one file in a chart may hold.
pub const MAX_FILE_SIZE: u64 = 5 * 1024 * 1024;
/// Deepest nesting of subcharts (`charts/a/charts/b/…`) accepted.
pub const MAX_DEPTH: usize = 10;

/// Tar headers, padding and PAX records allowed on top of the file content
/// before a stream of empty entries counts as a bomb too.
const STREAM_OVERHEAD: u64 = 16 * 1024 * 1024;
/// Budget for the parsed YAML of a whole chart tree (alias expansion included).
const MAX_YAML_COST: u64 = 64 * 1024 * 1024;
/// What one parsed YAML node costs against [`MAX_YAML_COST`].
const NODE_COST: u64 = 32;

/// OCI annotation keys helm sets on a chart manifest.
const ANN_TITLE: &str = "org.opencontainers.image.title";
const ANN_VERSION: &str = "org.opencontainers.image.version";
const ANN_DESCRIPTION: &str = "org.opencontainers.image.description";
const ANN_URL: &str = "org.opencontainers.image.url";
const ANN_CREATED: &str = "org.opencontainers.image.created";
const ANN_SOURCE: &str = "org.opencontainers.image.source";
const ANN_AUTHORS: &str = "org.opencontainers.image.authors";

/// A chart archive that ferry refuses.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// Not gzip at all (a values file or an HTML error page, typically).
    #[error("`{what}` is not a gzip-compressed chart archive")]
    NotGzip {
        /// The archive (file name or URL).
        what: String,
    },
    /// Corrupt gzip or tar data, or a truncated archive.
    #[error("failed to read chart archive `{what}`")]
    Read {
        /// The archive.
        what: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// No files at all.
    #[error("chart archive `{what}` holds no files")]
    Empty {
        /// The archive.
        what: String,
    },
    /// A name that could escape the chart directory or is not a plain path.
    #[error("chart archive `{what}`: entry `{entry}` {reason}")]
    UnsafeEntry {
        /// The archive.
        what: String,
        /// The entry's name as written in the archive.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry outside the first entry's top-level directory.
    #[error(
        "chart archive `{what}`: entry `{entry}` is outside the chart's base directory `{top}/` \
         (a chart archive has exactly one top-level directory)"
    )]
    SecondTopLevel {
        /// The archive.
        what: String,
        /// The entry.
        entry: String,
        /// The top-level directory seen first.
        top: String,
    },
    /// A `Chart.yaml` at the root of the archive instead of under `<name>/`.
    #[error("chart archive `{what}`: chart yaml not in base directory (`{entry}` must be under `<name>/`)")]
    ChartYamlNotInBase {
        /// The archive.
        what: String,
        /// The entry.
        entry: String,
    },
    /// A link, device, FIFO or other entry that is not a regular file.
    #[error(
        "chart archive `{what}`: entry `{entry}` is a {kind}; a chart holds regular files only"
    )]
    NotAFile {
        /// The archive.
        what: String,
        /// The entry.
        entry: String,
        /// What it is (e.g. "symbolic link to `/etc/passwd`").
        kind: String,
    },
    /// One file over [`MAX_FILE_SIZE`].
    #[error("chart archive `{what}`: file `{entry}` is {size} bytes, over the limit of {limit} bytes per file")]
    FileTooLarge {
        /// The archive.
        what: String,
        /// The entry.
        entry: String,
        /// Its size (declared or counted).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The chart decompresses to more than [`MAX_CHART_SIZE`].
    #[error("chart archive `{what}`: decompressed chart is larger than the maximum size {limit} bytes (at `{entry}`)")]
    ChartTooLarge {
        /// The archive.
        what: String,
        /// The entry being read when the budget ran out.
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// The same path twice.
    #[error("chart archive `{what}`: entry `{entry}` appears more than once")]
    Duplicate {
        /// The archive.
        what: String,
        /// The entry.
        entry: String,
    },
    /// No `<top>/Chart.yaml`.
    #[error("chart archive `{what}`: `{top}/Chart.yaml` is missing")]
    MissingChartYaml {
        /// The archive.
        what: String,
        /// The chart directory.
        top: String,
    },
    /// `Chart.yaml` does not parse or fails helm's validation.
    #[error("chart archive `{what}`: `{path}`: {message}")]
    InvalidChartYaml {
        /// The archive.
        what: String,
        /// The file, e.g. `app/Chart.yaml` or `app/charts/db/Chart.yaml`.
        path: String,
        /// What is wrong (with line and column when YAML does not parse).
        message: String,
    },
    /// `values.yaml` does not parse.
    #[error("chart archive `{what}`: `{path}`: {message}")]
    InvalidValues {
        /// The archive.
        what: String,
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A file directly under `charts/` that is neither a `.tgz` nor a directory.
    #[error("chart archive `{what}`: `{entry}` is not a chart (`charts/` holds chart directories and `.tgz` archives)")]
    NotAChart {
        /// The archive.
        what: String,
        /// The entry.
        entry: String,
    },
    /// Subcharts nested deeper than [`MAX_DEPTH`].
    #[error("chart archive `{what}`: subchart `{entry}` nests deeper than {limit} levels")]
    TooDeep {
        /// The archive.
        what: String,
        /// The subchart.
        entry: String,
        /// The limit.
        limit: usize,
    },
}

// ---------------------------------------------------------------------------
// The chart

/// One file of a chart, by its path relative to the chart directory
/// (e.g. `templates/deployment.yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartFile {
    /// Path relative to the chart directory.
    pub name: String,
    /// Content, a UTF-8 byte order mark removed (as helm does).
    pub data: Vec<u8>,
}

/// A `Chart.yaml` maintainer (helm's `chart.Maintainer`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Maintainer {
    /// Name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// URL.
    pub url: String,
}

/// A `Chart.yaml` dependency (helm v3's `chart.Dependency`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dependency {
    /// Chart name.
    pub name: String,
    /// Version or range.
    pub version: String,
    /// Repository URL (or `@alias`, `file://…`, `oci://…`).
    pub repository: String,
    /// Values path enabling it.
    pub condition: String,
    /// Tags enabling it.
    pub tags: Vec<String>,
    /// Whether enabled (only ever set by helm itself).
    pub enabled: bool,
    /// `import-values`, as JSON (numbers are float64 in helm).
    pub import_values: Vec<serde_json::Value>,
    /// Alias: the name (and values key) the subchart is used under.
    pub alias: String,
}

/// `Chart.yaml` as helm reads it (`chart.Metadata`): empty strings and lists
/// mean "not set", exactly as in Go.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata {
    /// Chart name.
    pub name: String,
    /// Project home page.
    pub home: String,
    /// Source URLs.
    pub sources: Vec<String>,
    /// Chart version (SemVer).
    pub version: String,
    /// One-line description.
    pub description: String,
    /// Keywords.
    pub keywords: Vec<String>,
    /// Maintainers.
    pub maintainers: Vec<Maintainer>,
    /// Icon URL.
    pub icon: String,
    /// Chart API version (`v1` when the file has none, as helm assumes).
    pub api_version: String,
    /// Condition (v1 charts).
    pub condition: String,
    /// Tags (v1 charts).
    pub tags: String,
    /// Version of the packaged application.
    pub app_version: String,
    /// Whether the chart is deprecated.
    pub deprecated: bool,
    /// Free-form annotations.
    pub annotations: BTreeMap<String, String>,
    /// Kubernetes version constraint.
    pub kube_version: String,
    /// Dependencies.
    pub dependencies: Vec<Dependency>,
    /// `application` or `library` (or empty).
    pub chart_type: String,
}

/// A validated chart archive and its subcharts.
#[derive(Debug, Clone)]
pub struct Chart {
    metadata: Metadata,
    top_dir: String,
    path: String,
    chart_yaml: Vec<u8>,
    values_yaml: Option<String>,
    values: Node,
    templates: Vec<ChartFile>,
    subcharts: Vec<Chart>,
}

/// Reads and validates a chart archive (`.tgz` bytes); `what` names it in
/// errors (a file name or URL).
pub fn read_chart(tgz: &[u8], what: &str) -> Result<Chart, ChartError> {
    let mut budget = Budget {
        remaining: MAX_CHART_SIZE,
        yaml_cost: Cell::new(0),
    };
    read_archive(tgz, what, None, 0, &mut budget)
}

impl Chart {
    /// The chart's name (`Chart.yaml` `name`).
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The chart's version (`Chart.yaml` `version`).
    pub fn version(&self) -> &str {
        &self.metadata.version
    }

    /// The application version (`Chart.yaml` `appVersion`), when set.
    pub fn app_version(&self) -> Option<&str> {
        Some(self.metadata.app_version.as_str()).filter(|s| !s.is_empty())
    }

    /// The whole of `Chart.yaml` as helm reads it.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The tag `helm push` gives the chart: its version with `+` written `_`.
    pub fn oci_tag(&self) -> String {
        self.metadata.version.replace('+', "_")
    }

    /// The archive's top-level directory (for a subchart: its directory
    /// under `charts/`, or the top directory of its nested archive).
    pub fn top_dir(&self) -> &str {
        &self.top_dir
    }

    /// Where the chart sits in the outermost archive, e.g. `app` or
    /// `app/charts/redis` (used in messages).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `Chart.yaml`'s bytes (a UTF-8 byte order mark removed).
    pub fn chart_yaml(&self) -> &[u8] {
        &self.chart_yaml
    }

    /// `values.yaml`'s text, when the chart has one.
    pub fn values_yaml(&self) -> Option<&str> {
        self.values_yaml.as_deref()
    }

    /// Every file under `templates/`, sorted by name.
    pub fn templates(&self) -> &[ChartFile] {
        &self.templates
    }

    /// The subcharts (directories under `charts/` and `charts/*.tgz`), sorted
    /// by their name under `charts/`.
    pub fn subcharts(&self) -> &[Chart] {
        &self.subcharts
    }

    /// The config blob `helm push` writes (`application/vnd.cncf.helm.config.v1+json`):
    /// Go's `json.Marshal` of helm's `chart.Metadata`, in the Go struct's
    /// field order, with `omitempty` and Go's string escaping.
    pub fn config_json(&self) -> Vec<u8> {
        metadata_json(&self.metadata).into_bytes()
    }

    /// The manifest annotations helm derives from `Chart.yaml`
    /// (`pkg/registry/chart.go`): title, version, description, url (home),
    /// created (only when given), source (first of `sources`), authors
    /// (maintainers), then `Chart.yaml`'s own `annotations`, which may
    /// override all but title and version. Empty values are left out.
    pub fn oci_annotations(&self, created: Option<&str>) -> BTreeMap<String, String> {
        let m = &self.metadata;
        let mut out = BTreeMap::new();
        let mut add = |k: &str, v: &str| {
            if !v.trim().is_empty() {
                out.insert(k.to_string(), v.to_string());
            }
        };
        add(ANN_DESCRIPTION, &m.description);
        add(ANN_TITLE, &m.name);
        add(ANN_VERSION, &m.version);
        add(ANN_URL, &m.home);
        if let Some(c) = created {
            add(ANN_CREATED, c);
        }
        if let Some(s) = m.sources.first() {
            add(ANN_SOURCE, s);
        }
        if !m.maintainers.is_empty() {
            let mut authors = String::new();
            for (i, mt) in m.maintainers.iter().enumerate() {
                authors.push_str(&mt.name);
                if !mt.email.is_empty() {
                    let _ = write!(authors, " ({})", mt.email);
                }
                if i + 1 < m.maintainers.len() {
                    authors.push_str(", ");
                }
            }
            add(ANN_AUTHORS, &authors);
        }
        for (k, v) in &m.annotations {
            if k != ANN_TITLE && k != ANN_VERSION {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }

    /// The OCI image manifest of the chart as a Helm OCI artifact: the
    /// config blob ([`Chart::config_json`]) and one layer, the `.tgz` itself.
    /// Deterministic: the same inputs give the same bytes. `created` becomes
    /// `org.opencontainers.image.created` when given (helm would use the
    /// current time).
    ///
    /// Unlike `helm push`, the manifest names its own `mediaType` (helm
    /// leaves the field out); otherwise field order and escaping are Go's.
    pub fn oci_manifest(
        &self,
        config_digest: &Digest,
        config_size: u64,
        tgz_digest: &Digest,
        tgz_size: u64,
        created: Option<&str>,
    ) -> Vec<u8> {
        let mut s = String::new();
        s.push_str("{\"schemaVersion\":2,\"mediaType\":");
        go_str(&mut s, OCI_MANIFEST);
        s.push_str(",\"config\":");
        descriptor_json(&mut s, CONFIG_MEDIA_TYPE, config_digest, config_size);
        s.push_str(",\"layers\":[");
        descriptor_json(&mut s, CHART_LAYER_MEDIA_TYPE, tgz_digest, tgz_size);
        s.push_str("],\"annotations\":");
        string_map_json(&mut s, &self.oci_annotations(created));
        s.push('}');
        s.into_bytes()
    }

    /// The images the chart and its subcharts reference, normalised, sorted
    /// and deduplicated, with what could not be read listed in `skipped`.
    ///
    /// Sources: every `image:` in `values.yaml` (a string, or a map such as
    /// `{registry, repository, tag, digest}`, `{repository, tag}`,
    /// `{image, tag}`, `{name, tag}`), with the parent chart's values for a
    /// subchart applied over the subchart's own; and every literal `image:`
    /// line in the templates that holds no `{{ … }}`.
    pub fn images(&self) -> ChartImages {
        let mut out = Collector::default();
        collect_chart(self, &self.values, &mut out);
        let mut skipped = Vec::new();
        let mut seen = BTreeSet::new();
        for s in out.skipped {
            if seen.insert((s.value.clone(), s.location.clone())) {
                skipped.push(s);
            }
        }
        ChartImages {
            images: out.images.into_iter().collect(),
            skipped,
        }
    }
}

/// What [`Chart::images`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChartImages {
    /// Normalised references (`docker.io/library/nginx:1.27`), sorted, unique.
    pub images: Vec<String>,
    /// Image values that are not valid references, in discovery order.
    pub skipped: Vec<SkippedImage>,
}

/// An image value that was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedImage {
    /// The value as found (or as assembled from an image map).
    pub value: String,
    /// Where: `app/values.yaml: controller.image` or `app/templates/job.yaml:12`.
    pub location: String,
    /// Why it was skipped.
    pub reason: String,
}

impl fmt::Display for SkippedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({}): {}", self.value, self.location, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{chart_tgz, raw_tgz, RawEntry};

    fn chart(files: &[(&str, &[u8])]) -> Chart {
        read_chart(&chart_tgz("app", "1.2.3", files), "app-1.2.3.tgz").unwrap()
    }

    fn with_chart_yaml(yaml: &str) -> Chart {
        chart(&[("Chart.yaml", yaml.as_bytes())])
    }

    fn config(yaml: &str) -> String {
        String::from_utf8(with_chart_yaml(yaml).config_json()).unwrap()
    }

    #[test]
    fn reads_name_version_and_app_version() {
        let c = chart(&[
            ("values.yaml", b"replicas: 1\n"),
            ("templates/a.yaml", b"kind: A\n"),
        ]);
        assert_eq!(c.name(), "app");
        assert_eq!(c.version(), "1.2.3");
        assert_eq!(c.app_version(), Some("1.2.3"));
        assert_eq!(c.top_dir(), "app");
        assert_eq!(c.values_yaml(), Some("replicas: 1\n"));
        assert_eq!(c.templates().len(), 1);
        assert_eq!(c.templates()[0].name, "templates/a.yaml");
        assert!(c.subcharts().is_empty());
    }

    #[test]
    fn config_json_is_go_json_marshal_of_chart_metadata() {
        // Keys in Go struct order, not file order; omitempty; sorted annotations.
        let yaml = r#"
type: application
annotations:
  z: last
  a: "<b>&</b>"
dependencies:
  - name: redis
    repository: https://charts.example/
    version: ~17.0
    condition: redis.enabled
    alias: cache
    import-values: [data, {child: a, parent: b}, 5, 1.5]
  - name: bare
appVersion: 1.27
kubeVersion: ">=1.25.0-0"
deprecated: true
maintainers:
  - name: Jane
    email: jane@example.org
  - {}
keywords: [web, "a\tb"]
description: "An app\nwith two lines"
version: 1.2.3
sources: [https://github.com/example/app]
home: https://example.org
name: app
apiVersion: v2
icon: https://example.org/icon.png
unknown: ignored
"#;
        let expected = concat!(
            r#"{"name":"app","home":"https://example.org","sources":["https://github.com/example/app"],"#,
            r#""version":"1.2.3","description":"An app with two lines","keywords":["web","a b"],"#,
            r#""maintainers":[{"name":"Jane","email":"jane@example.org"},{}],"#,
            r#""icon":"https://example.org/icon.png","apiVersion":"v2","appVersion":"1.27","deprecated":true,"#,
            r#""annotations":{"a":"\u003cb\u003e\u0026\u003c/b\u003e","z":"last"},"kubeVersion":"\u003e=1.25.0-0","#,
            r#""dependencies":[{"name":"redis","version":"~17.0","repository":"https://charts.example/","#,
            r#""condition":"redis.enabled","import-values":["data",{"child":"a","parent":"b"},5,1.5],"alias":"cache"},"#,
            r#"{"name":"bare","repository":""}],"type":"application"}"#
        );
        assert_eq!(config(yaml), expected);
    }

    #[test]
    fn config_json_of_a_minimal_chart() {
        assert_eq!(
            config("name: app\nversion: 1.2.3\n"),
            r#"{"name":"app","version":"1.2.3","apiVersion":"v1"}"#
        );
    }

    #[test]
    fn numbers_in_string_fields_read_like_sigs_k8s_io_yaml() {
        // FormatFloat(f, 'g', -1, 32): 1.10 is 1.1, 1.0 is 1, big values go exponential.
        let c = with_chart_yaml(
            "name: app\nversion: 1.0\nappVersion: 1.10\nkubeVersion: 1234567.0\ntags: 7\n",
        );
        assert_eq!(c.version(), "1");
        assert_eq!(c.app_version(), Some("1.1"));
        assert_eq!(c.metadata().kube_version, "1.234567e+06");
        assert_eq!(c.metadata().tags, "7");
        assert_eq!(go_format_g32(0.0001), "0.0001");
        assert_eq!(go_format_g32(0.00001), "1e-05");
        assert_eq!(go_format_g32(123456.0), "123456");
        assert_eq!(go_format_g32(-2.5), "-2.5");
    }

    #[test]
    fn go_json_floats_match_encoding_json() {
        let f = |x: f64| {
            let mut s = String::new();
            go_json_f64(&mut s, x);
            s
        };
        assert_eq!(f(5.0), "5");
        assert_eq!(f(0.000001), "0.000001");
        assert_eq!(f(0.0000001), "1e-7");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(123456789.0), "123456789");
    }

    #[test]
    fn go_string_escaping() {
        let mut s = String::new();
        go_str(&mut s, "a\"b\\c\u{1}\u{8}\u{c}\u{2028}<>&é\u{7f}");
        assert_eq!(
            s,
            r#""a\"b\\c\u0001\b\f\u2028\u003c\u003e\u0026é"#.to_string() + "\u{7f}\""
        );
    }

    #[test]
    fn sanitises_like_metadata_validate() {
        // Whitespace becomes a space, zero-width and control characters go;
        // version is not sanitised by helm (and must be SemVer).
        let c = with_chart_yaml(
            "name: app\nversion: 1.2.3\ndescription: \"a\\u200bb\\u0007c\\u00a0d\"\n",
        );
        assert_eq!(c.metadata().description, "abc d");
    }

    #[test]
    fn keys_match_case_insensitively_and_the_exact_name_wins() {
        let c = with_chart_yaml("Name: other\nname: app\nVERSION: 1.2.3\n");
        assert_eq!(c.name(), "app");
        assert_eq!(c.version(), "1.2.3");
    }

    #[test]
    fn chart_yaml_validation_follows_helm() {
        let bad = |yaml: &str, needle: &str| {
            let tgz = chart_tgz("app", "1.2.3", &[("Chart.yaml", yaml.as_bytes())]);
            let e = read_chart(&tgz, "app.tgz").unwrap_err().to_string();
            assert!(
                e.contains("app/Chart.yaml") && e.contains(needle),
                "{yaml:?}: {e}"
            );
        };
        bad("version: 1.2.3\n", "chart.metadata.name is required");
        bad("name: app\n", "chart.metadata.version is required");
        bad(
            "name: app\nversion: one\n",
            "chart.metadata.version \"one\" is invalid",
        );
        bad("name: ../x\nversion: 1.2.3\n", "is invalid");
        bad(
            "name: app\nversion: 1.2.3\ntype: plugin\n",
            "type must be application or library",
        );
        bad(
            "name: app\nversion: 1.2.3\nkeywords: web\n",
            "cannot unmarshal string into field `keywords`",
        );
        bad(
            "name: app\nversion: 1.2.3\nmaintainers: [~]\n",
            "maintainers must not contain empty or null nodes",
        );
        bad(
            "name: app\nversion: 1.2.3\ndependencies: [{name: a}, {name: b, alias: a}]\n",
            "more than one dependency with name or alias \"a\"",
        );
        bad("name: [\n", "app/Chart.yaml");
        bad("- a\n", "cannot unmarshal array");
    }

    #[test]
    fn oci_manifest_bytes_are_deterministic_and_carry_helm_annotations() {
        let c = with_chart_yaml(
            "apiVersion: v2\nname: app\nversion: 1.2.3+up\ndescription: An app\nhome: https://example.org\n\
             sources: [https://src.example/app, https://other]\n\
             maintainers: [{name: Jane, email: j@example.org}, {name: Joe}]\n\
             annotations:\n  org.opencontainers.image.title: ignored\n  org.opencontainers.image.url: https://override\n  category: web\n",
        );
        let cfg = c.config_json();
        let cd = Digest::of(&cfg);
        let ld = Digest::of(b"tgz");
        let m = c.oci_manifest(&cd, cfg.len() as u64, &ld, 3, Some("2024-01-02T03:04:05Z"));
        let expected = format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
                r#""config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{}","size":{}}},"#,
                r#""layers":[{{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"{}","size":3}}],"#,
                r#""annotations":{{"category":"web","#,
                r#""org.opencontainers.image.authors":"Jane (j@example.org), Joe","#,
                r#""org.opencontainers.image.created":"2024-01-02T03:04:05Z","#,
                r#""org.opencontainers.image.description":"An app","#,
                r#""org.opencontainers.image.source":"https://src.example/app","#,
                r#""org.opencontainers.image.title":"app","#,
                r#""org.opencontainers.image.url":"https://override","#,
                r#""org.opencontainers.image.version":"1.2.3+up"}}}}"#
            ),
            cd,
            cfg.len(),
            ld
        );
        assert_eq!(String::from_utf8(m.clone()).unwrap(), expected);
        assert_eq!(
            m,
            c.oci_manifest(&cd, cfg.len() as u64, &ld, 3, Some("2024-01-02T03:04:05Z"))
        );
        assert_eq!(c.oci_tag(), "1.2.3_up");
        // The manifest is one ferry's own reader understands.
        let parsed = crate::manifest::parse(&m, None).unwrap();
        assert_eq!(parsed.media_type.as_ref(), OCI_MANIFEST);
        assert_eq!(parsed.blobs().count(), 2);
        assert_eq!(parsed.layers[0].media_type.as_ref(), CHART_LAYER_MEDIA_TYPE);
        let without = String::from_utf8(c.oci_manifest(&cd, 1, &ld, 3, None)).unwrap();
        assert!(!without.contains("created"), "{without}");
    }

    #[test]
    fn images_from_values_shapes() {
        let values = br#"
image:
  repository: ghcr.io/example/app
  tag: ""
sidecar:
  image: "busybox:1.36"
bitnami:
  image:
    registry: docker.io
    repository: bitnami/redis
    tag: 7.2.4-debian-12-r9
    digest: ""
ingress:
  image:
    registry: registry.k8s.io
    image: ingress-nginx/controller
    tag: "v1.10.0"
    digest: sha256:42b3f0e5d0846876b1791cd3afeb5f1cbbe4259d6f35651dcc1b5c980925379c
numeric:
  image: {repository: nginx, tag: 1.27}
named:
  image: {name: quay.io/prometheus/node-exporter, tag: v1.8.0}
jobs:
  - name: migrate
    image: alpine:3.20
empty:
  image: ""
partial:
  image: {tag: "9"}
templated:
  image: "{{ .Values.global.registry }}/x:1"
bad:
  image: Not/Valid
"#;
        let c = chart(&[("values.yaml", values)]);
        let found = c.images();
        assert_eq!(
            found.images,
            [
                "docker.io/bitnami/redis:7.2.4-debian-12-r9",
                "docker.io/library/alpine:3.20",
                "docker.io/library/busybox:1.36",
                "docker.io/library/nginx:1.27",
                "ghcr.io/example/app:1.2.3",
                "quay.io/prometheus/node-exporter:v1.8.0",
                "registry.k8s.io/ingress-nginx/controller:v1.10.0@sha256:42b3f0e5d0846876b1791cd3afeb5f1cbbe4259d6f35651dcc1b5c980925379c",
            ]
        );
        let skipped: Vec<(&str, &str)> = found
            .skipped
            .iter()
            .map(|s| (s.value.as_str(), s.location.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [
                (
                    "{{ .Values.global.registry }}/x:1",
                    "app/values.yaml: templated.image"
                ),
                ("Not/Valid", "app/values.yaml: bad.image"),
            ]
        );
    }

    #[test]
    fn global_image_registry_overrides_bitnami_style_maps() {
        let values = b"global:\n  imageRegistry: mirror.internal\nimage:\n  registry: docker.io\n  repository: bitnami/redis\n  tag: '7'\nplain:\n  image: {repository: quay.io/x/y, tag: '1'}\n";
        let c = chart(&[("values.yaml", values)]);
        assert_eq!(
            c.images().images,
            ["mirror.internal/bitnami/redis:7", "quay.io/x/y:1"]
        );
    }

    #[test]
    fn images_from_templates_skip_templated_lines() {
        let t = br#"apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
        - name: app
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
        - image: 'ghcr.io/example/helper:2.0'   # a comment
        - image: "ghcr.io/example/{{ .Chart.Name }}-agent:{{- .Chart.AppVersion }}"
        - image: "ghcr.io/example/x:{{ .Chart.AppVersion | default \"1\" }}"
        - name: x
          image: registry.k8s.io/pause:3.9 # pinned
      initContainers:
        - image: bad image
"#;
        let c = chart(&[
            ("templates/deploy.yaml", t),
            ("templates/NOTES.txt", b"image: not-an-image:x\n"),
        ]);
        let found = c.images();
        assert_eq!(
            found.images,
            [
                "ghcr.io/example/app-agent:1.2.3",
                "ghcr.io/example/helper:2.0",
                "registry.k8s.io/pause:3.9"
            ]
        );
        assert_eq!(found.skipped.len(), 1);
        assert_eq!(found.skipped[0].location, "app/templates/deploy.yaml:15");
    }

    #[test]
    fn subchart_values_take_the_parents_overrides_and_own_app_version() {
        let sub = chart_tgz(
            "redis",
            "17.0.0",
            &[
                ("Chart.yaml", b"apiVersion: v2\nname: redis\nversion: 17.0.0\nappVersion: 7.0.5\n"),
                ("values.yaml", b"image:\n  repository: bitnami/redis\n  tag: ''\nexporter:\n  image: {repository: bitnami/redis-exporter, tag: '1.0'}\n"),
            ],
        );
        let c = chart(&[
            (
                "Chart.yaml",
                b"apiVersion: v2\nname: app\nversion: 1.2.3\nappVersion: 9.9.9\ndependencies:\n- name: db\n  repository: file://x\n",
            ),
            // The parent pins the exporter's tag; the cache subchart is a directory.
            ("values.yaml", b"redis:\n  exporter:\n    image:\n      tag: '2.0'\ndb:\n  image: {repository: postgres}\n"),
            ("charts/redis-17.0.0.tgz", &sub),
            ("charts/db/Chart.yaml", b"apiVersion: v2\nname: db\nversion: 1.0.0\nappVersion: '16.2'\n"),
            ("charts/db/values.yaml", b"image: {repository: bitnami/postgresql, tag: '16.1'}\n"),
            ("charts/db/templates/job.yaml", b"image: busybox:1.36\n"),
        ]);
        assert_eq!(c.subcharts().len(), 2);
        assert_eq!(c.subcharts()[0].name(), "db");
        assert_eq!(c.subcharts()[0].path(), "app/charts/db");
        assert_eq!(c.subcharts()[1].name(), "redis");
        assert_eq!(
            c.images().images,
            [
                "docker.io/bitnami/redis-exporter:2.0",
                "docker.io/bitnami/redis:7.0.5",
                "docker.io/library/busybox:1.36",
                "docker.io/library/postgres:16.1",
            ]
        );
    }

    #[test]
    fn requirements_yaml_dependencies_land_in_the_config_like_helm() {
        let c = chart(&[
            ("Chart.yaml", b"apiVersion: v1\nname: app\nversion: 1.0.0\n"),
            (
                "requirements.yaml",
                b"dependencies:\n- name: db\n  version: 1.x\n  repository: https://charts.example\n",
            ),
        ]);
        assert_eq!(
            String::from_utf8(c.config_json()).unwrap(),
            concat!(
                r#"{"name":"app","version":"1.0.0","apiVersion":"v1","#,
                r#""dependencies":[{"name":"db","version":"1.x","repository":"https://charts.example"}]}"#
            )
        );
    }

    #[test]
    fn nested_archives_are_located_in_the_outer_archive() {
        let sub = chart_tgz("db", "1.0.0", &[("values.yaml", b"image: Bad/Ref\n")]);
        let c = chart(&[("charts/db-1.0.0.tgz", &sub)]);
        assert_eq!(c.subcharts()[0].path(), "app/charts/db-1.0.0.tgz");
        assert_eq!(c.subcharts()[0].top_dir(), "db");
        let found = c.images();
        assert_eq!(
            found.skipped[0].location,
            "app/charts/db-1.0.0.tgz/values.yaml: image"
        );
        // A broken directory subchart is named by its path in the archive.
        let tgz = chart_tgz(
            "app",
            "1.2.3",
            &[("charts/cache/Chart.yaml", b"name: cache\n")],
        );
        let e = read_chart(&tgz, "app.tgz").unwrap_err().to_string();
        assert!(
            e.contains("`app/charts/cache/Chart.yaml`") && e.contains("version is required"),
            "{e}"
        );
    }

    #[test]
    fn a_stray_file_in_charts_is_not_a_chart() {
        let tgz = chart_tgz("app", "1.2.3", &[("charts/README.md", b"hi")]);
        let e = read_chart(&tgz, "app.tgz").unwrap_err();
        assert!(matches!(e, ChartError::NotAChart { .. }), "{e}");
        assert!(e.to_string().contains("app/charts/README.md"), "{e}");
        // Ignored like helm does: provenance files and `_`/`.` names.
        let tgz = chart_tgz(
            "app",
            "1.2.3",
            &[("charts/x.tgz.prov", b"sig"), ("charts/_skip", b"x")],
        );
        assert!(read_chart(&tgz, "app.tgz").unwrap().subcharts().is_empty());
    }

    #[test]
    fn a_subchart_error_names_the_nested_archive() {
        let sub = chart_tgz("db", "1.0.0", &[("Chart.yaml", b"name: db\n")]);
        let tgz = chart_tgz("app", "1.2.3", &[("charts/db-1.0.0.tgz", &sub)]);
        let e = read_chart(&tgz, "app.tgz").unwrap_err().to_string();
        assert!(
            e.contains("app.tgz > app/charts/db-1.0.0.tgz") && e.contains("`db/Chart.yaml`"),
            "{e}"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let mut tgz = chart_tgz("c0", "1.0.0", &[]);
        for i in 1..=MAX_DEPTH + 1 {
            tgz = chart_tgz(&format!("c{i}"), "1.0.0", &[("charts/sub.tgz", &tgz)]);
        }
        let e = read_chart(&tgz, "deep.tgz").unwrap_err();
        assert!(matches!(e, ChartError::TooDeep { .. }), "{e}");
    }

    #[test]
    fn yaml_alias_bombs_are_refused() {
        let mut y = String::from("a: &a [");
        y.push_str(&"x,".repeat(1000));
        y.push_str("x]\nb: &b [");
        y.push_str(&"*a,".repeat(1000));
        y.push_str("*a]\nc: [");
        y.push_str(&"*b,".repeat(1000));
        y.push_str("*b]\n");
        let tgz = chart_tgz("app", "1.2.3", &[("values.yaml", y.as_bytes())]);
        let e = read_chart(&tgz, "app.tgz").unwrap_err();
        assert!(matches!(e, ChartError::InvalidValues { .. }), "{e}");
        assert!(e.to_string().contains("app/values.yaml"), "{e}");
    }

    #[test]
    fn duplicate_entries_are_refused() {
        let tgz = raw_tgz(&[
            RawEntry::file("app/Chart.yaml", b"name: app\nversion: 1.0.0\n"),
            RawEntry::file("app/values.yaml", b"a: 1\n"),
            RawEntry::file("app//values.yaml", b"a: 2\n"),
        ]);
        let e = read_chart(&tgz, "dup.tgz").unwrap_err();
        assert!(matches!(e, ChartError::Duplicate { .. }), "{e}");
    }

    #[test]
    fn backslash_archives_and_a_bom_are_accepted_like_helm() {
        let mut chart_yaml = UTF8_BOM.to_vec();
        chart_yaml.extend_from_slice(b"name: app\nversion: 1.0.0\n");
        let tgz = raw_tgz(&[
            RawEntry::file("app\\Chart.yaml", &chart_yaml),
            RawEntry::file("app\\templates\\a.yaml", b"image: nginx:1\n"),
        ]);
        let c = read_chart(&tgz, "win.tgz").unwrap();
        assert_eq!(c.name(), "app");
        assert_eq!(c.templates()[0].name, "templates/a.yaml");
        assert_eq!(c.images().images, ["docker.io/library/nginx:1"]);
    }
}
