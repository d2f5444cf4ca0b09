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

// ---------------------------------------------------------------------------
// Reading the archive

struct Budget {
    /// File content bytes still allowed, shared by the whole chart tree.
    remaining: u64,
    /// Parsed YAML cost so far, shared by the whole chart tree.
    yaml_cost: Cell<u64>,
}

/// Errors once more than `remaining` decompressed bytes went through.
struct Capped<'a, R> {
    inner: R,
    remaining: u64,
    tripped: &'a Cell<bool>,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // One byte more than allowed tells a full stream from a bomb.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.tripped.set(true);
                    Err(io::Error::other("decompressed stream over the limit"))
                }
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Files kept in memory: what the chart model needs. Everything else is
/// counted and dropped.
fn keep(rel: &str) -> bool {
    rel == "Chart.yaml"
        || rel == "values.yaml"
        || rel == "requirements.yaml"
        || rel.starts_with("templates/")
        || rel.starts_with("charts/")
}

/// Reads one archive; `path` is where it sits in the outermost archive
/// (`None` for the outermost: its top directory).
fn read_archive(
    tgz: &[u8],
    what: &str,
    path: Option<&str>,
    depth: usize,
    budget: &mut Budget,
) -> Result<Chart, ChartError> {
    if !tgz.starts_with(&[0x1f, 0x8b]) {
        return Err(ChartError::NotGzip { what: what.into() });
    }
    let tripped = Cell::new(false);
    let stream = Capped {
        inner: flate2::read::MultiGzDecoder::new(tgz),
        remaining: MAX_CHART_SIZE + STREAM_OVERHEAD,
        tripped: &tripped,
    };
    let mut current = String::new();
    let read_err = |source: io::Error, current: &str| {
        if tripped.get() {
            ChartError::ChartTooLarge {
                what: what.into(),
                entry: current.to_string(),
                limit: MAX_CHART_SIZE,
            }
        } else {
            ChartError::Read {
                what: what.into(),
                source,
            }
        }
    };
    let mut archive = tar::Archive::new(stream);
    let mut top: Option<String> = None;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut any_file = false;
    {
        let entries = archive.entries().map_err(|e| read_err(e, ""))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| read_err(e, &current))?;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).escape_debug().to_string();
            current.clone_from(&shown);
            let kind = entry.header().entry_type();
            let name = match String::from_utf8(raw) {
                Ok(n) => n,
                Err(_) => return Err(unsafe_entry(what, &shown, "has a name that is not UTF-8")),
            };
            let is_dir = match kind {
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
                tar::EntryType::Directory => true,
                tar::EntryType::Regular | tar::EntryType::Continuous => name.ends_with('/'),
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|l| String::from_utf8_lossy(&l).escape_debug().to_string())
                        .unwrap_or_default();
                    let what_kind = if kind == tar::EntryType::Symlink {
                        "symbolic link"
                    } else {
                        "hard link"
                    };
                    return Err(ChartError::NotAFile {
                        what: what.into(),
                        entry: shown,
                        kind: format!("{what_kind} to `{target}`"),
                    });
                }
                other => {
                    return Err(ChartError::NotAFile {
                        what: what.into(),
                        entry: shown,
                        kind: entry_kind(other),
                    })
                }
            };
            let (t, rel) = split_entry(&name, what, &shown)?;
            match &top {
                None => top = Some(t.clone()),
                Some(first) if *first != t => {
                    return Err(ChartError::SecondTopLevel {
                        what: what.into(),
                        entry: shown,
                        top: first.clone(),
                    })
                }
                Some(_) => {}
            }
            if is_dir {
                continue;
            }
            let rel =
                match rel {
                    Some(r) => r,
                    None if t == "Chart.yaml" => {
                        return Err(ChartError::ChartYamlNotInBase {
                            what: what.into(),
                            entry: shown,
                        })
                    }
                    None => return Err(unsafe_entry(
                        what,
                        &shown,
                        "is a file at the root of the archive, outside the chart's base directory",
                    )),
                };
            any_file = true;
            // The size after PAX overrides, as the reader will deliver it.
            let declared = entry.size();
            if declared > MAX_FILE_SIZE {
                return Err(ChartError::FileTooLarge {
                    what: what.into(),
                    entry: shown,
                    size: declared,
                    limit: MAX_FILE_SIZE,
                });
            }
            if declared > budget.remaining {
                return Err(ChartError::ChartTooLarge {
                    what: what.into(),
                    entry: shown,
                    limit: MAX_CHART_SIZE,
                });
            }
            // Never more than the limits, whatever the header says.
            let cap = MAX_FILE_SIZE.min(budget.remaining);
            let mut limited = (&mut entry).take(cap + 1);
            let (count, data) = if keep(&rel) {
                let mut buf = Vec::with_capacity(usize::try_from(declared.min(cap)).unwrap_or(0));
                limited
                    .read_to_end(&mut buf)
                    .map_err(|e| read_err(e, &shown))?;
                (buf.len() as u64, Some(buf))
            } else {
                let n = io::copy(&mut limited, &mut io::sink()).map_err(|e| read_err(e, &shown))?;
                (n, None)
            };
            if count > MAX_FILE_SIZE {
                return Err(ChartError::FileTooLarge {
                    what: what.into(),
                    entry: shown,
                    size: count,
                    limit: MAX_FILE_SIZE,
                });
            }
            if count > budget.remaining {
                return Err(ChartError::ChartTooLarge {
                    what: what.into(),
                    entry: shown,
                    limit: MAX_CHART_SIZE,
                });
            }
            budget.remaining -= count;
            if !seen.insert(rel.clone()) {
                return Err(ChartError::Duplicate {
                    what: what.into(),
                    entry: shown,
                });
            }
            if let Some(mut data) = data {
                if data.starts_with(UTF8_BOM) {
                    data.drain(..UTF8_BOM.len());
                }
                files.push((rel, data));
            }
        }
    }
    // Read the gzip stream to its end: a truncated download or a bad
    // checksum is refused even when the tar end marker was intact.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| read_err(e, "(end of archive)"))?;
    let top = match top {
        Some(t) if any_file => t,
        _ => return Err(ChartError::Empty { what: what.into() }),
    };
    build_chart(files, &top, path.unwrap_or(&top), &top, what, depth, budget)
}

const UTF8_BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

fn unsafe_entry(what: &str, entry: &str, reason: &'static str) -> ChartError {
    ChartError::UnsafeEntry {
        what: what.into(),
        entry: entry.into(),
        reason,
    }
}

fn entry_kind(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Fifo => "FIFO".into(),
        tar::EntryType::GNUSparse => "sparse file".into(),
        other => format!("tar entry of type {:?}", other.as_byte() as char),
    }
}

/// Splits an entry name into its top-level directory and the normalised
/// path below it (`None` for the top directory itself or a root file).
fn split_entry(
    name: &str,
    what: &str,
    shown: &str,
) -> Result<(String, Option<String>), ChartError> {
    let refuse = |reason| Err(unsafe_entry(what, shown, reason));
    if name.chars().any(char::is_control) {
        return refuse("has a control character in its name");
    }
    // Archives made on Windows use `\` (helm accepts them).
    let name = name.replace('\\', "/");
    if name.starts_with('/') {
        return refuse("has an absolute path");
    }
    let mut parts = name.split('/').filter(|p| !p.is_empty());
    let top = match parts.next() {
        Some(".") | None => return refuse("is outside the chart's base directory"),
        Some("..") => return refuse("references the parent directory"),
        Some(t) => t.to_string(),
    };
    if is_drive(&top) {
        return refuse("has a Windows drive path");
    }
    let mut rest = Vec::new();
    for p in parts {
        match p {
            "." => {}
            ".." => return refuse("references the parent directory"),
            p => rest.push(p),
        }
    }
    if rest.first().is_some_and(|p| is_drive(p)) {
        return refuse("has a Windows drive path");
    }
    let rel = if rest.is_empty() {
        None
    } else {
        Some(rest.join("/"))
    };
    Ok((top, rel))
}

fn is_drive(component: &str) -> bool {
    let b = component.as_bytes();
    b.len() == 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// Assembles a chart from its files (paths relative to the chart directory).
/// `path` is where the chart sits in the outermost archive (for image
/// locations); `dir` is its directory inside the archive `what` (for errors).
fn build_chart(
    files: Vec<(String, Vec<u8>)>,
    top: &str,
    path: &str,
    dir: &str,
    what: &str,
    depth: usize,
    budget: &mut Budget,
) -> Result<Chart, ChartError> {
    let mut chart_yaml = None;
    let mut values_raw = None;
    let mut requirements = None;
    let mut templates = Vec::new();
    let mut sub_dirs: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    let mut sub_tgz: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (rel, data) in files {
        if rel == "Chart.yaml" {
            chart_yaml = Some(data);
        } else if rel == "values.yaml" {
            values_raw = Some(data);
        } else if rel == "requirements.yaml" {
            requirements = Some(data);
        } else if rel.starts_with("templates/") {
            templates.push(ChartFile { name: rel, data });
        } else if let Some(under) = rel.strip_prefix("charts/") {
            if rel.ends_with(".prov") {
                continue;
            }
            let (cname, inner) = match under.split_once('/') {
                Some((c, i)) => (c, Some(i)),
                None => (under, None),
            };
            if cname.starts_with('_') || cname.starts_with('.') {
                continue;
            }
            match inner {
                None if cname.ends_with(".tgz") => {
                    sub_tgz.insert(cname.to_string(), data);
                }
                Some(inner) if !cname.ends_with(".tgz") => {
                    sub_dirs
                        .entry(cname.to_string())
                        .or_default()
                        .push((inner.to_string(), data));
                }
                _ => {
                    return Err(ChartError::NotAChart {
                        what: what.into(),
                        entry: format!("{dir}/{rel}"),
                    })
                }
            }
        }
    }
    let chart_yaml = chart_yaml.ok_or_else(|| ChartError::MissingChartYaml {
        what: what.into(),
        top: dir.into(),
    })?;
    let bad_chart_yaml = |message: String| ChartError::InvalidChartYaml {
        what: what.into(),
        path: format!("{dir}/Chart.yaml"),
        message,
    };
    let doc = parse_first_document(&chart_yaml, &budget.yaml_cost).map_err(bad_chart_yaml)?;
    let mut metadata = Metadata::default();
    metadata
        .decode_onto(&doc, "Chart.yaml")
        .map_err(bad_chart_yaml)?;
    // helm 2 charts had no apiVersion; helm 3 loads them as v1.
    if metadata.api_version.is_empty() {
        metadata.api_version = "v1".into();
    }
    // Dependencies of apiVersion v1 charts: helm decodes the file onto the
    // same metadata, so they end up in the config blob too.
    if let Some(req) = requirements {
        let bad = |message: String| ChartError::InvalidChartYaml {
            what: what.into(),
            path: format!("{dir}/requirements.yaml"),
            message,
        };
        let doc = parse_first_document(&req, &budget.yaml_cost).map_err(bad)?;
        metadata
            .decode_onto(&doc, "requirements.yaml")
            .map_err(bad)?;
    }
    let metadata = metadata.finish().map_err(bad_chart_yaml)?;

    let (values_yaml, values) = match values_raw {
        None => (None, Node::Map(Vec::new())),
        Some(raw) => {
            let bad = |message: String| ChartError::InvalidValues {
                what: what.into(),
                path: format!("{dir}/values.yaml"),
                message,
            };
            let text = String::from_utf8(raw).map_err(|_| bad("is not UTF-8 text".into()))?;
            let values = parse_values(&text, &budget.yaml_cost).map_err(bad)?;
            (Some(text), values)
        }
    };
    templates.sort_by(|a, b| a.name.cmp(&b.name));

    let mut subcharts = Vec::new();
    let names: BTreeSet<String> = sub_dirs.keys().chain(sub_tgz.keys()).cloned().collect();
    for cname in names {
        let sub_path = format!("{path}/charts/{cname}");
        let sub_dir = format!("{dir}/charts/{cname}");
        if depth + 1 > MAX_DEPTH {
            return Err(ChartError::TooDeep {
                what: what.into(),
                entry: sub_dir,
                limit: MAX_DEPTH,
            });
        }
        let sub = if let Some(files) = sub_dirs.remove(&cname) {
            build_chart(files, &cname, &sub_path, &sub_dir, what, depth + 1, budget)?
        } else if let Some(tgz) = sub_tgz.remove(&cname) {
            let nested_what = format!("{what} > {sub_dir}");
            read_archive(&tgz, &nested_what, Some(&sub_path), depth + 1, budget)?
        } else {
            continue;
        };
        subcharts.push(sub);
    }
    Ok(Chart {
        metadata,
        top_dir: top.to_string(),
        path: path.to_string(),
        chart_yaml,
        values_yaml,
        values,
        templates,
        subcharts,
    })
}

// ---------------------------------------------------------------------------
// YAML, parsed with a budget (alias expansion cannot blow memory up)

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The value under a string key (the last one when the key repeats, as
    /// Go's YAML decoding keeps).
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(m) => m
                .iter()
                .rev()
                .find(|(k, _)| key_text(k).as_deref() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A scalar as the text helm would see in a string field.
    fn scalar_text(&self) -> Option<String> {
        match self {
            Node::Str(s) => Some(s.clone()),
            Node::Int(i) => Some(i.to_string()),
            Node::UInt(u) => Some(u.to_string()),
            Node::Float(f) => Some(f.to_string()),
            Node::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A map key as a string (Go's YAML-to-JSON conversion of scalar keys).
fn key_text(k: &Node) -> Option<String> {
    match k {
        Node::Str(s) => Some(s.clone()),
        Node::Int(i) => Some(i.to_string()),
        Node::UInt(u) => Some(u.to_string()),
        Node::Float(f) => Some(go_format_g32(*f)),
        Node::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct NodeSeed<'a> {
    cost: &'a Cell<u64>,
}

impl NodeSeed<'_> {
    fn charge<E: de::Error>(&self, extra: usize) -> Result<(), E> {
        let c = self.cost.get() + NODE_COST + extra as u64;
        if c > MAX_YAML_COST {
            return Err(E::custom(format!(
                "the chart's YAML expands beyond {MAX_YAML_COST} bytes (aliases?)"
            )));
        }
        self.cost.set(c);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Float(v as f64))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Float(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        self.charge(v.len())?;
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        self.charge(v.len())?;
        Ok(Node::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        self.charge(0)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Node::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        self.charge(0)?;
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry_seed(self, self)? {
            out.push((k, v));
        }
        Ok(Node::Map(out))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        // A custom `!tag`: keep the value, drop the tag.
        let (_tag, variant): (String, _) = data.variant()?;
        variant.newtype_variant_seed(self)
    }
}

/// The first YAML document (what Go's `yaml.Unmarshal` reads); `Null` when empty.
fn parse_first_document(bytes: &[u8], cost: &Cell<u64>) -> Result<Node, String> {
    crate::yaml::check_depth(bytes).map_err(|e| e.to_string())?;
    match yaml_serde::Deserializer::from_slice(bytes).next() {
        None => Ok(Node::Null),
        Some(doc) => NodeSeed { cost }
            .deserialize(doc)
            .map_err(|e| e.to_string()),
    }
}

/// `values.yaml`: every document, merged (later wins), as a map.
fn parse_values(text: &str, cost: &Cell<u64>) -> Result<Node, String> {
    let mut merged = Node::Map(Vec::new());
    crate::yaml::check_depth(text.as_bytes()).map_err(|e| e.to_string())?;
    for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let node = NodeSeed { cost }
            .deserialize(doc)
            .map_err(|e| e.to_string())?;
        match node {
            Node::Null => {}
            Node::Map(_) => merged = coalesce(&merged, &node),
            _ => return Err(format!("document {} is not a map of values", i + 1)),
        }
    }
    Ok(merged)
}

/// `over` merged onto `base`: maps recursively, `over` winning; a null in
/// `over` deletes the key (helm's coalescing).
fn coalesce(base: &Node, over: &Node) -> Node {
    match (base, over) {
        (Node::Map(b), Node::Map(o)) => {
            let mut out: Vec<(Node, Node)> = Vec::with_capacity(b.len() + o.len());
            let mut index: HashMap<String, usize> = HashMap::new();
            for (k, v) in b {
                match key_text(k) {
                    Some(t) => match index.get(&t) {
                        Some(&i) => out[i].1 = v.clone(),
                        None => {
                            index.insert(t, out.len());
                            out.push((k.clone(), v.clone()));
                        }
                    },
                    None => out.push((k.clone(), v.clone())),
                }
            }
            let mut deleted = Vec::new();
            for (k, v) in o {
                let t = key_text(k);
                match t.as_ref().and_then(|t| index.get(t)) {
                    Some(&i) if *v == Node::Null => deleted.push(i),
                    Some(&i) => out[i].1 = coalesce(&out[i].1, v),
                    None if *v == Node::Null => {}
                    None => {
                        if let Some(t) = t {
                            index.insert(t, out.len());
                        }
                        out.push((k.clone(), v.clone()));
                    }
                }
            }
            let out = out
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !deleted.contains(i))
                .map(|(_, kv)| kv)
                .collect();
            Node::Map(out)
        }
        (_, o) => o.clone(),
    }
}

// ---------------------------------------------------------------------------
// Chart.yaml with helm's rules

type Entries<'a> = Vec<(String, &'a Node)>;

/// A YAML map as Go's JSON decoding sees it: keys as strings, sorted
/// (`json.Marshal` of a Go map), so that a later duplicate wins.
fn go_entries<'a>(m: &'a [(Node, Node)], what: &str) -> Result<Entries<'a>, String> {
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m {
        let key =
            key_text(k).ok_or_else(|| format!("{what}: unsupported map key {}", kind_name(k)))?;
        out.push((key, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The Go struct field a JSON key lands in: exact name first, then
/// case-insensitively (encoding/json).
fn field_of<'f>(key: &str, fields: &[&'f str]) -> Option<&'f str> {
    fields
        .iter()
        .find(|f| **f == key)
        .or_else(|| fields.iter().find(|f| f.eq_ignore_ascii_case(key)))
        .copied()
}

fn kind_name(n: &Node) -> &'static str {
    match n {
        Node::Null => "null",
        Node::Bool(_) => "bool",
        Node::Int(_) | Node::UInt(_) | Node::Float(_) => "number",
        Node::Str(_) => "string",
        Node::Seq(_) => "array",
        Node::Map(_) => "object",
    }
}

fn type_error(n: &Node, field: &str, go_type: &str) -> String {
    format!(
        "cannot unmarshal {} into field `{field}` of type {go_type}",
        kind_name(n)
    )
}

/// A Go `string` field: scalars convert (sigs.k8s.io/yaml: numbers with
/// `FormatFloat(f, 'g', -1, 32)`); `None` for null (Go leaves the field).
fn go_string(n: &Node, field: &str) -> Result<Option<String>, String> {
    Ok(match n {
        Node::Null => None,
        Node::Str(s) => Some(s.clone()),
        Node::Int(i) => Some(i.to_string()),
        Node::UInt(u) => Some(u.to_string()),
        Node::Float(f) => Some(go_format_g32(*f)),
        Node::Bool(b) => Some(b.to_string()),
        Node::Seq(_) | Node::Map(_) => return Err(type_error(n, field, "string")),
    })
}

fn go_string_list(n: &Node, field: &str) -> Result<Vec<String>, String> {
    match n {
        Node::Null => Ok(Vec::new()),
        Node::Seq(items) => items
            .iter()
            .map(|i| go_string(i, field).map(Option::unwrap_or_default))
            .collect(),
        _ => Err(type_error(n, field, "[]string")),
    }
}

fn go_bool(n: &Node, field: &str) -> Result<Option<bool>, String> {
    match n {
        Node::Null => Ok(None),
        Node::Bool(b) => Ok(Some(*b)),
        // YAML 1.1 booleans, which helm's YAML parser still reads as such.
        Node::Str(s) => match s.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(Some(true)),
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(Some(false)),
            _ => Err(type_error(n, field, "bool")),
        },
        _ => Err(type_error(n, field, "bool")),
    }
}

/// Any JSON value, numbers as float64 (Go's `interface{}`).
fn go_any(n: &Node, field: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match n {
        Node::Null => J::Null,
        Node::Bool(b) => J::Bool(*b),
        Node::Str(s) => J::String(s.clone()),
        Node::Int(i) => number(*i as f64, field)?,
        Node::UInt(u) => number(*u as f64, field)?,
        Node::Float(f) => number(*f, field)?,
        Node::Seq(items) => J::Array(
            items
                .iter()
                .map(|i| go_any(i, field))
                .collect::<Result<_, _>>()?,
        ),
        Node::Map(m) => {
            let mut obj = serde_json::Map::new();
            for (k, v) in go_entries(m, field)? {
                obj.insert(k, go_any(v, field)?);
            }
            J::Object(obj)
        }
    })
}

fn number(f: f64, field: &str) -> Result<serde_json::Value, String> {
    serde_json::Number::from_f64(f)
        .map(serde_json::Value::Number)
        .ok_or_else(|| format!("`{field}`: unsupported value {f}"))
}

impl Metadata {
    const FIELDS: &'static [&'static str] = &[
        "name",
        "home",
        "sources",
        "version",
        "description",
        "keywords",
        "maintainers",
        "icon",
        "apiVersion",
        "condition",
        "tags",
        "appVersion",
        "deprecated",
        "annotations",
        "kubeVersion",
        "dependencies",
        "type",
    ];

    /// Decodes one YAML document onto `self` the way sigs.k8s.io/yaml and
    /// Go's `json.Unmarshal` do: fields present replace, others stay.
    fn decode_onto(&mut self, doc: &Node, file: &str) -> Result<(), String> {
        let m = self;
        let map = match doc {
            Node::Null => &[][..],
            Node::Map(map) => map.as_slice(),
            other => {
                return Err(format!(
                    "cannot unmarshal {} into chart metadata",
                    kind_name(other)
                ))
            }
        };
        for (key, v) in go_entries(map, file)? {
            let Some(field) = field_of(&key, Self::FIELDS) else {
                continue;
            };
            let set = |slot: &mut String| -> Result<(), String> {
                if let Some(s) = go_string(v, field)? {
                    *slot = s;
                }
                Ok(())
            };
            match field {
                "name" => set(&mut m.name)?,
                "home" => set(&mut m.home)?,
                "version" => set(&mut m.version)?,
                "description" => set(&mut m.description)?,
                "icon" => set(&mut m.icon)?,
                "apiVersion" => set(&mut m.api_version)?,
                "condition" => set(&mut m.condition)?,
                "tags" => set(&mut m.tags)?,
                "appVersion" => set(&mut m.app_version)?,
                "kubeVersion" => set(&mut m.kube_version)?,
                "type" => set(&mut m.chart_type)?,
                "sources" => m.sources = go_string_list(v, field)?,
                "keywords" => m.keywords = go_string_list(v, field)?,
                "deprecated" => {
                    if let Some(b) = go_bool(v, field)? {
                        m.deprecated = b;
                    }
                }
                "annotations" => m.annotations = annotations(v)?,
                "maintainers" => m.maintainers = maintainers(v)?,
                "dependencies" => m.dependencies = dependencies(v)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Sanitises and validates like helm's `Metadata.Validate`.
    fn finish(mut self) -> Result<Metadata, String> {
        self.sanitize();
        self.validate()?;
        Ok(self)
    }

    /// `Metadata.Validate`'s sanitising: whitespace becomes a space,
    /// unprintable characters go.
    fn sanitize(&mut self) {
        for s in [
            &mut self.name,
            &mut self.description,
            &mut self.home,
            &mut self.icon,
            &mut self.condition,
            &mut self.tags,
            &mut self.app_version,
            &mut self.kube_version,
        ] {
            *s = sanitize(s);
        }
        for s in self.sources.iter_mut().chain(self.keywords.iter_mut()) {
            *s = sanitize(s);
        }
        for mt in &mut self.maintainers {
            mt.name = sanitize(&mt.name);
            mt.email = sanitize(&mt.email);
            mt.url = sanitize(&mt.url);
        }
        for d in &mut self.dependencies {
            d.name = sanitize(&d.name);
            d.version = sanitize(&d.version);
            d.repository = sanitize(&d.repository);
            d.condition = sanitize(&d.condition);
            for t in &mut d.tags {
                *t = sanitize(t);
            }
        }
    }

    /// The checks of helm's `Metadata.Validate`, in its order.
    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("chart.metadata.name is required".into());
        }
        if self.name == "." || self.name == ".." {
            return Err(format!(
                "chart.metadata.name {:?} is not allowed",
                self.name
            ));
        }
        if self.name.contains('/') {
            return Err(format!("chart.metadata.name {:?} is invalid", self.name));
        }
        if self.version.is_empty() {
            return Err("chart.metadata.version is required".into());
        }
        if !crate::semver::is_valid(&self.version) {
            return Err(format!(
                "chart.metadata.version {:?} is invalid",
                self.version
            ));
        }
        if !matches!(self.chart_type.as_str(), "" | "application" | "library") {
            return Err("chart.metadata.type must be application or library".into());
        }
        let mut names = BTreeSet::new();
        for d in &self.dependencies {
            if !d.alias.is_empty()
                && !d
                    .alias
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "dependency {:?} has disallowed characters in the alias",
                    d.name
                ));
            }
            let key = if d.alias.is_empty() {
                &d.name
            } else {
                &d.alias
            };
            if !names.insert(key.clone()) {
                return Err(format!(
                    "more than one dependency with name or alias {key:?}"
                ));
            }
        }
        Ok(())
    }
}

fn annotations(n: &Node) -> Result<BTreeMap<String, String>, String> {
    match n {
        Node::Null => Ok(BTreeMap::new()),
        Node::Map(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in go_entries(m, "annotations")? {
                out.insert(k, go_string(v, "annotations")?.unwrap_or_default());
            }
            Ok(out)
        }
        _ => Err(type_error(n, "annotations", "map[string]string")),
    }
}

fn maintainers(n: &Node) -> Result<Vec<Maintainer>, String> {
    let items = match n {
        Node::Null => return Ok(Vec::new()),
        Node::Seq(items) => items,
        _ => return Err(type_error(n, "maintainers", "[]*chart.Maintainer")),
    };
    let mut out = Vec::new();
    for item in items {
        let map = match item {
            Node::Null => return Err("maintainers must not contain empty or null nodes".into()),
            Node::Map(m) => m,
            other => return Err(type_error(other, "maintainers", "chart.Maintainer")),
        };
        let mut mt = Maintainer::default();
        for (key, v) in go_entries(map, "maintainers")? {
            let slot = match field_of(&key, &["name", "email", "url"]) {
                Some("name") => &mut mt.name,
                Some("email") => &mut mt.email,
                Some("url") => &mut mt.url,
                _ => continue,
            };
            if let Some(s) = go_string(v, "maintainers")? {
                *slot = s;
            }
        }
        out.push(mt);
    }
    Ok(out)
}

fn dependencies(n: &Node) -> Result<Vec<Dependency>, String> {
    const FIELDS: &[&str] = &[
        "name",
        "version",
        "repository",
        "condition",
        "tags",
        "enabled",
        "import-values",
        "alias",
    ];
    let items = match n {
        Node::Null => return Ok(Vec::new()),
        Node::Seq(items) => items,
        _ => return Err(type_error(n, "dependencies", "[]*chart.Dependency")),
    };
    let mut out = Vec::new();
    for item in items {
        let map = match item {
            Node::Null => return Err("dependencies must not contain empty or null nodes".into()),
            Node::Map(m) => m,
            other => return Err(type_error(other, "dependencies", "chart.Dependency")),
        };
        let mut d = Dependency::default();
        for (key, v) in go_entries(map, "dependencies")? {
            let Some(field) = field_of(&key, FIELDS) else {
                continue;
            };
            let set = |slot: &mut String| -> Result<(), String> {
                if let Some(s) = go_string(v, field)? {
                    *slot = s;
                }
                Ok(())
            };
            match field {
                "name" => set(&mut d.name)?,
                "version" => set(&mut d.version)?,
                "repository" => set(&mut d.repository)?,
                "condition" => set(&mut d.condition)?,
                "alias" => set(&mut d.alias)?,
                "tags" => d.tags = go_string_list(v, field)?,
                "enabled" => {
                    if let Some(b) = go_bool(v, field)? {
                        d.enabled = b;
                    }
                }
                "import-values" => {
                    d.import_values = match v {
                        Node::Null => Vec::new(),
                        Node::Seq(items) => items
                            .iter()
                            .map(|i| go_any(i, field))
                            .collect::<Result<_, _>>()?,
                        other => return Err(type_error(other, field, "[]interface {}")),
                    }
                }
                _ => {}
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// Go's `sanitizeString`: `unicode.IsSpace` → ' ', drop what
/// `unicode.IsPrint` refuses. Without Unicode category tables, "refuses" is
/// approximated by control, format and private-use characters (unassigned
/// code points are kept).
fn sanitize(s: &str) -> String {
    s.chars()
        .filter_map(|c| {
            if c.is_whitespace() {
                Some(' ')
            } else if c.is_control() || is_format_char(c) || is_private_use(c) {
                None
            } else {
                Some(c)
            }
        })
        .collect()
}

/// Unicode general category Cf (format characters).
fn is_format_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

fn is_private_use(c: char) -> bool {
    matches!(c as u32, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD)
}

// ---------------------------------------------------------------------------
// Go's JSON encoding

/// A JSON string as Go's `encoding/json` writes it (HTML-safe: `<`, `>`, `&`,
/// U+2028 and U+2029 escaped).
fn go_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`.
fn go_format_g32(f: f64) -> String {
    let f = f as f32;
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    go_format_g(&format!("{f:e}"))
}

/// `%g` with the shortest digits, from Rust's shortest `{:e}` rendering.
fn go_format_g(sci: &str) -> String {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if digits == "0" {
        out.push('0');
        return out;
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
        return out;
    }
    let dp = exp + 1; // digits before the decimal point
    if dp <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', dp.unsigned_abs() as usize));
        out.push_str(&digits);
    } else {
        let dp = dp as usize;
        if digits.len() <= dp {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', dp - digits.len()));
        } else {
            out.push_str(&digits[..dp]);
            out.push('.');
            out.push_str(&digits[dp..]);
        }
    }
    out
}

/// A float64 as Go's `encoding/json` writes it.
fn go_json_f64(out: &mut String, f: f64) {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let sci = format!("{f:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        if exp < 0 {
            let _ = write!(out, "{mantissa}e-{}", exp.unsigned_abs());
        } else {
            let _ = write!(out, "{mantissa}e+{exp:02}");
        }
    } else {
        let _ = write!(out, "{f}");
    }
}

fn go_json_value(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => go_json_f64(out, n.as_f64().unwrap_or(0.0)),
        J::String(s) => go_str(out, s),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_value(out, item);
            }
            out.push(']');
        }
        J::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_str(out, k);
                out.push(':');
                if let Some(v) = map.get(k) {
                    go_json_value(out, v);
                }
            }
            out.push('}');
        }
    }
}

fn string_list_json(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        go_str(out, s);
    }
    out.push(']');
}

fn string_map_json(out: &mut String, map: &BTreeMap<String, String>) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        go_str(out, k);
        out.push(':');
        go_str(out, v);
    }
    out.push('}');
}

fn descriptor_json(out: &mut String, media_type: &str, digest: &Digest, size: u64) {
    out.push_str("{\"mediaType\":");
    go_str(out, media_type);
    out.push_str(",\"digest\":");
    go_str(out, &digest.to_string());
    let _ = write!(out, ",\"size\":{size}}}");
}

/// Writes `{"k":v,…}` fields one at a time, Go struct order, `omitempty`
/// decided by the caller.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }
    fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        go_str(self.out, k);
        self.out.push(':');
        self.out
    }
    fn str(&mut self, k: &str, v: &str, omitempty: bool) {
        if !(omitempty && v.is_empty()) {
            let out = self.key(k);
            go_str(out, v);
        }
    }
    fn list(&mut self, k: &str, v: &[String]) {
        if !v.is_empty() {
            let out = self.key(k);
            string_list_json(out, v);
        }
    }
    fn flag(&mut self, k: &str, v: bool) {
        if v {
            self.key(k).push_str("true");
        }
    }
    fn end(self) {
        self.out.push('}');
    }
}

fn metadata_json(m: &Metadata) -> String {
    let mut s = String::new();
    let mut o = Obj::new(&mut s);
    o.str("name", &m.name, true);
    o.str("home", &m.home, true);
    o.list("sources", &m.sources);
    o.str("version", &m.version, true);
    o.str("description", &m.description, true);
    o.list("keywords", &m.keywords);
    if !m.maintainers.is_empty() {
        let out = o.key("maintainers");
        out.push('[');
        for (i, mt) in m.maintainers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut mo = Obj::new(out);
            mo.str("name", &mt.name, true);
            mo.str("email", &mt.email, true);
            mo.str("url", &mt.url, true);
            mo.end();
        }
        out.push(']');
    }
    o.str("icon", &m.icon, true);
    o.str("apiVersion", &m.api_version, true);
    o.str("condition", &m.condition, true);
    o.str("tags", &m.tags, true);
    o.str("appVersion", &m.app_version, true);
    o.flag("deprecated", m.deprecated);
    if !m.annotations.is_empty() {
        let out = o.key("annotations");
        string_map_json(out, &m.annotations);
    }
    o.str("kubeVersion", &m.kube_version, true);
    if !m.dependencies.is_empty() {
        let out = o.key("dependencies");
        out.push('[');
        for (i, d) in m.dependencies.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut d_o = Obj::new(out);
            d_o.str("name", &d.name, false);
            d_o.str("version", &d.version, true);
            d_o.str("repository", &d.repository, false);
            d_o.str("condition", &d.condition, true);
            d_o.list("tags", &d.tags);
            d_o.flag("enabled", d.enabled);
            if !d.import_values.is_empty() {
                let out = d_o.key("import-values");
                go_json_value(out, &serde_json::Value::Array(d.import_values.clone()));
            }
            d_o.str("alias", &d.alias, true);
            d_o.end();
        }
        out.push(']');
    }
    o.str("type", &m.chart_type, true);
    o.end();
    s
}

// ---------------------------------------------------------------------------
// Images

#[derive(Default)]
struct Collector {
    images: BTreeSet<String>,
    skipped: Vec<SkippedImage>,
}

impl Collector {
    fn offer(&mut self, value: &str, location: impl Fn() -> String) {
        match Reference::parse(value) {
            Ok(r) => {
                self.images.insert(r.to_string());
            }
            Err(e) => self.skipped.push(SkippedImage {
                value: value.to_string(),
                location: location(),
                reason: e.reason,
            }),
        }
    }

    fn skip(&mut self, value: &str, location: String, reason: &str) {
        self.skipped.push(SkippedImage {
            value: value.to_string(),
            location,
            reason: reason.to_string(),
        });
    }
}

/// Per chart: what image maps need besides themselves.
struct ValuesContext<'a> {
    app_version: Option<&'a str>,
    /// `global.imageRegistry` / `global.image.registry`, when set.
    global_registry: Option<String>,
    file: String,
}

/// The values keys under which a parent passes values to each subchart:
/// the dependency's alias, else the subchart's name.
fn subchart_keys(chart: &Chart, sub: &Chart) -> Vec<String> {
    let aliases: Vec<String> = chart
        .metadata
        .dependencies
        .iter()
        .filter(|d| d.name == sub.name() && !d.alias.is_empty())
        .map(|d| d.alias.clone())
        .collect();
    if aliases.is_empty() {
        vec![sub.name().to_string()]
    } else {
        aliases
    }
}

fn collect_chart(chart: &Chart, values: &Node, out: &mut Collector) {
    let mut sub_keys: BTreeSet<String> = BTreeSet::new();
    let mut subs = Vec::new();
    for sub in &chart.subcharts {
        for key in subchart_keys(chart, sub) {
            sub_keys.insert(key.clone());
            subs.push((sub, key));
        }
    }
    let ctx = ValuesContext {
        app_version: chart.app_version(),
        global_registry: global_registry(values),
        file: format!("{}/values.yaml", chart.path),
    };
    // The parent's section for a subchart is read with the subchart below.
    if let Node::Map(entries) = values {
        for (k, v) in entries {
            let key = key_text(k).unwrap_or_default();
            if sub_keys.contains(&key) {
                continue;
            }
            let mut path = vec![key];
            walk_entry(&mut path, v, &ctx, out);
        }
    }
    for template in &chart.templates {
        scan_template(
            chart,
            &format!("{}/{}", chart.path, template.name),
            &template.data,
            out,
        );
    }
    for (sub, key) in subs {
        let mut sub_values = sub.values.clone();
        if let Some(over @ Node::Map(_)) = values.get(&key) {
            sub_values = coalesce(&sub_values, over);
        }
        if let Some(global @ Node::Map(_)) = values.get("global") {
            let merged = coalesce(sub_values.get("global").unwrap_or(&Node::Null), global);
            sub_values = coalesce(
                &sub_values,
                &Node::Map(vec![(Node::Str("global".into()), merged)]),
            );
        }
        collect_chart(sub, &sub_values, out);
    }
}

fn global_registry(values: &Node) -> Option<String> {
    let global = values.get("global")?;
    let non_empty = |n: Option<&Node>| {
        n.and_then(Node::scalar_text)
            .filter(|s| !s.trim().is_empty())
    };
    non_empty(global.get("imageRegistry"))
        .or_else(|| non_empty(global.get("image").and_then(|i| i.get("registry"))))
}

/// Visits the value at `path` (whose last element is its key).
fn walk_entry(path: &mut Vec<String>, v: &Node, ctx: &ValuesContext<'_>, out: &mut Collector) {
    if path.last().map(String::as_str) == Some("image") {
        let location = || format!("{}: {}", ctx.file, path.join("."));
        match v {
            Node::Str(s) => {
                let s = s.trim();
                if s.contains("{{") {
                    out.skip(
                        s,
                        location(),
                        "a template expression, resolved only when rendering",
                    );
                } else if !s.is_empty() {
                    out.offer(s, location);
                }
            }
            Node::Map(_) => {
                if let Some(r) = image_from_map(v, ctx) {
                    if r.contains("{{") {
                        out.skip(
                            &r,
                            location(),
                            "a template expression, resolved only when rendering",
                        );
                    } else {
                        out.offer(&r, location);
                    }
                }
                // Its fields (`image: {image: …, tag: …}`) are read; no deeper.
                return;
            }
            _ => {}
        }
    }
    match v {
        Node::Map(entries) => {
            for (k, child) in entries {
                path.push(key_text(k).unwrap_or_default());
                walk_entry(path, child, ctx, out);
                path.pop();
            }
        }
        Node::Seq(items) => {
            for (i, child) in items.iter().enumerate() {
                if let Some(last) = path.last_mut() {
                    let base = last.clone();
                    *last = format!("{base}[{i}]");
                    walk_seq_item(path, child, ctx, out);
                    if let Some(l) = path.last_mut() {
                        *l = base;
                    }
                }
            }
        }
        _ => {}
    }
}

/// A sequence item: only its children can be `image:` keys.
fn walk_seq_item(path: &mut Vec<String>, v: &Node, ctx: &ValuesContext<'_>, out: &mut Collector) {
    match v {
        Node::Map(entries) => {
            for (k, child) in entries {
                path.push(key_text(k).unwrap_or_default());
                walk_entry(path, child, ctx, out);
                path.pop();
            }
        }
        Node::Seq(items) => {
            for child in items {
                walk_seq_item(path, child, ctx, out);
            }
        }
        _ => {}
    }
}

/// An image map: `{registry, repository, tag, digest}` and its kin. An empty
/// tag (and no digest) falls back to the chart's `appVersion`, the
/// `{{ .Values.image.tag | default .Chart.AppVersion }}` idiom.
fn image_from_map(m: &Node, ctx: &ValuesContext<'_>) -> Option<String> {
    let text = |k: &str| {
        m.get(k)
            .and_then(Node::scalar_text)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let repository = m
        .get("repository")
        .or_else(|| m.get("image"))
        .or_else(|| m.get("name"))
        .and_then(|n| match n {
            Node::Str(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => None,
        })?;
    let registry = match (m.get("registry").is_some(), &ctx.global_registry) {
        (true, Some(global)) => Some(global.trim().to_string()),
        _ => text("registry"),
    };
    let digest = text("digest");
    let tag = text("tag").or_else(|| match digest {
        None => ctx.app_version.map(str::to_string),
        Some(_) => None,
    });
    let mut s = match registry {
        Some(r) => format!("{}/{repository}", r.trim_end_matches('/')),
        None => repository,
    };
    if let Some(t) = tag {
        s.push(':');
        s.push_str(&t);
    }
    if let Some(d) = digest {
        s.push('@');
        s.push_str(&d);
    }
    Some(s)
}

/// Literal `image: <ref>` lines of a template. `{{ .Chart.AppVersion }}`,
/// `{{ .Chart.Version }}` and `{{ .Chart.Name }}` are filled in; a line with
/// any other `{{ … }}` is left to rendering.
fn scan_template(chart: &Chart, location: &str, data: &[u8], out: &mut Collector) {
    if location.ends_with("/NOTES.txt") {
        return;
    }
    let text = String::from_utf8_lossy(data);
    for (i, line) in text.lines().enumerate() {
        let mut l = line.trim_start();
        while let Some(rest) = l.strip_prefix("- ") {
            l = rest.trim_start();
        }
        let Some(rest) = l.strip_prefix("image:") else {
            continue;
        };
        let rest = expand_chart_fields(rest, chart);
        if rest.contains("{{") {
            continue;
        }
        let value = match rest.trim_start() {
            r if r.starts_with('"') => r[1..].split('"').next().unwrap_or_default(),
            r if r.starts_with('\'') => r[1..].split('\'').next().unwrap_or_default(),
            r => r.split(" #").next().unwrap_or_default(),
        }
        .trim();
        if value.is_empty() || value.starts_with(['{', '[', '|', '>', '&', '*', '#']) {
            continue;
        }
        out.offer(value, || format!("{location}:{}", i + 1));
    }
}

/// Replaces the `.Chart` fields a template can only mean one way.
fn expand_chart_fields(s: &str, chart: &Chart) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let action = &rest[start..start + len + 2];
        let inner = action[2..action.len() - 2].trim_matches('-').trim();
        let value = match inner {
            ".Chart.AppVersion" => chart.app_version(),
            ".Chart.Version" => Some(chart.version()),
            ".Chart.Name" => Some(chart.name()),
            _ => None,
        };
        out.push_str(&rest[..start]);
        out.push_str(value.unwrap_or(action));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
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
        assert_eq!(parsed.media_type, OCI_MANIFEST);
        assert_eq!(parsed.blobs().count(), 2);
        assert_eq!(parsed.layers[0].media_type, CHART_LAYER_MEDIA_TYPE);
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
