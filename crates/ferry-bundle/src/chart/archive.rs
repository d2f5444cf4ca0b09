//! Reading the chart archive: the tar.gz walk, entry by entry, with helm's
//! limits (sizes, names, nesting), into the files a chart is made of.

use super::*;

pub(super) struct Budget {
    /// File content bytes still allowed, shared by the whole chart tree.
    pub(super) remaining: u64,
    /// Parsed YAML cost so far, shared by the whole chart tree.
    pub(super) yaml_cost: Cell<u64>,
}

/// Errors once more than `remaining` decompressed bytes went through.
pub(super) struct Capped<'a, R> {
    pub(super) inner: R,
    pub(super) remaining: u64,
    pub(super) tripped: &'a Cell<bool>,
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
pub(super) fn keep(rel: &str) -> bool {
    rel == "Chart.yaml"
        || rel == "values.yaml"
        || rel == "requirements.yaml"
        || rel.starts_with("templates/")
        || rel.starts_with("charts/")
}

/// Reads one archive; `path` is where it sits in the outermost archive
/// (`None` for the outermost: its top directory).
// Long on purpose: one pass over the tar entries, each validated in order
// (path, type, size, nesting, the bomb budget) against state the whole pass
// shares; split, the checks would hand the same cursor and budgets around.
pub(super) fn read_archive(
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

pub(super) const UTF8_BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

pub(super) fn unsafe_entry(what: &str, entry: &str, reason: &'static str) -> ChartError {
    ChartError::UnsafeEntry {
        what: what.into(),
        entry: entry.into(),
        reason,
    }
}

pub(super) fn entry_kind(kind: tar::EntryType) -> String {
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
pub(super) fn split_entry(
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

pub(super) fn is_drive(component: &str) -> bool {
    let b = component.as_bytes();
    b.len() == 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// Assembles a chart from its files (paths relative to the chart directory).
/// `path` is where the chart sits in the outermost archive (for image
/// locations); `dir` is its directory inside the archive `what` (for errors).
pub(super) fn build_chart(
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
