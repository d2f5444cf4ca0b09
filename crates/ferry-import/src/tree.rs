//! The file tree: which files of which items land where on the file
//! target, and the files ferry derives from them (the classic Helm
//! repository `index.yaml`, the rewritten falcoctl `index.yaml`).

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;

use ferry_bundle::artifact::{HELM_CHART_LAYER, HELM_CONFIG};
use ferry_bundle::manifest::{MediaType, Parsed};
use ferry_bundle::meta::{Item, Kind};
use ferry_bundle::placement::Placements;
use ferry_bundle::relpath::RelPath;
use ferry_bundle::{Digest, Reference};
use ferry_registry::Repo;

use crate::files::FileTarget;

/// Kinds that go to the registry.
pub(crate) fn is_registry_kind(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Image | Kind::TrivyDb | Kind::FalcoArtifact | Kind::Chart
    )
}

/// One file of one item.
#[derive(Debug, Clone)]
pub(crate) struct FileWrite {
    pub path: RelPath,
    pub digest: Digest,
    pub size: u64,
}

/// The file side of one item.
#[derive(Debug, Clone)]
pub(crate) struct FilePlan {
    pub item: Item,
    pub path: RelPath,
    /// Every file the item puts on the target.
    pub files: Vec<FileWrite>,
    /// For charts: the config blob (Chart.yaml as JSON), for the index.
    pub chart_config: Option<Digest>,
    /// For charts: the `org.opencontainers.image.created` annotation.
    pub created: Option<String>,
}

/// Plans the file side: every item with a `dev.ferry.path`.
pub(crate) fn plan(
    items: &[Item],
    manifests: &HashMap<Digest, (MediaType, Bytes, Box<Parsed>)>,
) -> Result<Vec<FilePlan>, String> {
    let mut out = Vec::new();
    // Every file of every item in its kind's place, and on a path of its own
    // (re-checked here whatever the export side checked).
    let mut claims = Placements::new();
    for item in items {
        let Some(p) = &item.path else { continue };
        let path = RelPath::new(p).map_err(|e| format!("{}: {e}", item.reference))?;
        let Some((_, bytes, parsed)) = manifests.get(&item.digest) else {
            return Err(format!(
                "{}: manifest {} is not in the bundle",
                item.reference, item.digest
            ));
        };
        let layers = claims
            .claim_item(item.kind, &item.reference, p, parsed)
            .map_err(|e| e.to_string())?;
        if layers.is_empty() {
            return Err(format!("{}: no file layer to write", item.reference));
        }
        let files = layers
            .into_iter()
            .map(|(path, d)| FileWrite {
                path,
                digest: d.digest,
                size: d.size,
            })
            .collect();
        let chart_config = parsed
            .config
            .as_ref()
            .filter(|c| item.kind == Kind::Chart && c.media_type.as_ref() == HELM_CONFIG)
            .map(|c| c.digest.clone());
        let created = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| {
                v.get("annotations")?
                    .get("org.opencontainers.image.created")?
                    .as_str()
                    .map(str::to_string)
            });
        out.push(FilePlan {
            item: item.clone(),
            path,
            files,
            chart_config,
            created,
        });
    }
    Ok(out)
}

/// Which blobs must be kept in memory after they streamed (chart configs
/// for the Helm index, the falcoctl index to rewrite, OpenSearch `.sha512`
/// files to re-check).
pub(crate) fn captures(plans: &[FilePlan]) -> HashSet<Digest> {
    let mut out = HashSet::new();
    for p in plans {
        if let Some(c) = &p.chart_config {
            out.insert(c.clone());
        }
        if p.item.kind == Kind::FalcoctlIndex {
            out.extend(p.files.iter().map(|f| f.digest.clone()));
        }
        if let Some((_, Some(sum))) = plugin_files(p) {
            out.insert(sum.digest.clone());
        }
    }
    out
}

/// The chart archive of every chart item, for the registry as for the file
/// tree: `(item reference, its chart layer, a name for messages)`; `None`
/// when the item's manifest has no chart layer. Read whole as they stream
/// and checked at once with the validation export uses ([`check_chart`]);
/// only the verdict is kept.
pub(crate) fn chart_archives(
    items: &[Item],
    manifests: &HashMap<Digest, (MediaType, Bytes, Box<Parsed>)>,
) -> Vec<(String, Option<(Digest, String)>)> {
    items
        .iter()
        .filter(|i| i.kind == Kind::Chart)
        .map(|i| {
            let layer = manifests.get(&i.digest).and_then(|(_, _, parsed)| {
                parsed
                    .layers
                    .iter()
                    .find(|l| l.media_type.as_ref() == HELM_CHART_LAYER)
            });
            let name = i.path.clone().unwrap_or_else(|| i.reference.clone());
            (i.reference.clone(), layer.map(|l| (l.digest.clone(), name)))
        })
        .collect()
}

/// Reads a chart archive the way export does (no absolute path, `..`,
/// link or device entry, bounded decompression, a valid `Chart.yaml`).
pub(crate) fn check_chart(tgz: &[u8], name: &str) -> Result<(), String> {
    ferry_bundle::chart::read_chart(tgz, name)
        .map(|_| ())
        .map_err(|e| crate::content::chart_refused(name, &e.to_string()))
}

/// Blobs whose sha512 the reader computes while they stream: OpenSearch
/// plugin zips, re-checked against their `.sha512` file.
pub(crate) fn sha512_wanted(plans: &[FilePlan]) -> HashSet<Digest> {
    plans
        .iter()
        .filter_map(plugin_files)
        .map(|(zip, _)| zip.digest.clone())
        .collect()
}

/// An OpenSearch plugin's zip (at the item's path) and its `.sha512`.
fn plugin_files(p: &FilePlan) -> Option<(&FileWrite, Option<&FileWrite>)> {
    if p.item.kind != Kind::OpensearchPlugin {
        return None;
    }
    let zip = p.files.iter().find(|f| f.path == p.path)?;
    let sum_name = format!("{}.sha512", p.path.file_name());
    let sum = p.files.iter().find(|f| f.path.file_name() == sum_name);
    Some((zip, sum))
}

/// Re-checks what export checked, on the bytes that crossed: every chart
/// item's archive must have passed [`check_chart`] (`charts`: from
/// [`chart_archives`]; `verdicts`: on the verified archives), and every
/// OpenSearch plugin's zip must match the sha512 its `.sha512` file states
/// (`captured`: verified `.sha512` files; `sha512`: the sha512, in hex, of
/// verified plugin zips). Returns the items that fail, with the reason.
pub(crate) fn revalidate(
    plans: &[FilePlan],
    charts: &[(String, Option<(Digest, String)>)],
    verdicts: &HashMap<Digest, Result<(), String>>,
    captured: &HashMap<Digest, Bytes>,
    sha512: &HashMap<Digest, String>,
) -> HashMap<String, String> {
    let mut failed = HashMap::new();
    for (reference, archive) in charts {
        let why = match archive {
            None => Some("a chart item with no chart archive layer".to_string()),
            Some((d, name)) => match verdicts.get(d) {
                None => Some(format!(
                    "chart archive `{name}` ({d}) could not be re-checked (it did not arrive whole, or is larger than the {}-byte limit)",
                    crate::run::CAPTURE_LIMIT
                )),
                Some(verdict) => verdict.clone().err(),
            },
        };
        if let Some(why) = why {
            failed.insert(reference.clone(), why);
        }
    }
    for p in plans {
        if let Some((zip, sum)) = plugin_files(p) {
            let why = (|| {
                let sum = sum.ok_or_else(|| {
                    format!("plugin `{}` carries no `.sha512` checksum file", zip.path)
                })?;
                let text = captured
                    .get(&sum.digest)
                    .ok_or_else(|| format!("checksum file `{}` did not arrive", sum.path))?;
                let want = ferry_bundle::placement::parse_sha512(
                    &String::from_utf8_lossy(text),
                    zip.path.file_name(),
                )
                .map_err(|e| format!("`{}`: {e}", sum.path))?;
                let got = sha512
                    .get(&zip.digest)
                    .ok_or_else(|| format!("plugin `{}` did not arrive whole", zip.path))?;
                if *got != want {
                    return Err(crate::content::sha512_mismatch(
                        &zip.path.to_string(),
                        got,
                        &sum.path.to_string(),
                        &want,
                    ));
                }
                Ok(())
            })();
            if let Err(why) = why {
                failed.insert(p.item.reference.clone(), why);
            }
        }
    }
    failed
}

/// `generated` timestamp in RFC 3339 (UTC) for `now`.
pub(crate) fn rfc3339(now: std::time::SystemTime) -> String {
    // Whole seconds: the index's `generated`/`created` carry no fraction.
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Writes `helm/<repo>/index.yaml` for every repository directory that
/// holds charts now at the target (merged with the index already there).
pub(crate) async fn write_helm_indexes(
    files: &FileTarget,
    plans: &[FilePlan],
    landed: &HashSet<String>,
    captured: &HashMap<Digest, Bytes>,
    now: &str,
) -> Result<Vec<RelPath>, String> {
    let mut by_dir: BTreeMap<RelPath, Vec<crate::helm_index::ChartEntry>> = BTreeMap::new();
    for p in plans {
        if p.item.kind != Kind::Chart || !landed.contains(&p.item.reference) {
            continue;
        }
        let (Some(cfg), Some(dir)) = (&p.chart_config, p.path.parent()) else {
            continue;
        };
        let Some(meta) = captured.get(cfg) else {
            return Err(format!(
                "{}: chart metadata {cfg} did not arrive",
                p.item.reference
            ));
        };
        let Some(tgz) = p.files.iter().find(|f| f.path == p.path) else {
            continue;
        };
        by_dir
            .entry(dir)
            .or_default()
            .push(crate::helm_index::ChartEntry {
                metadata_json: meta.to_vec(),
                digest: tgz.digest.clone(),
                file_name: p.path.file_name().to_string(),
                created: p.created.clone(),
            });
    }
    let mut written = Vec::new();
    for (dir, charts) in by_dir {
        let index_path = dir
            .join("index.yaml")
            .map_err(|e| format!("helm index: {e}"))?;
        let existing = files
            .read(&index_path, 64 << 20)
            .await
            .map_err(|e| e.to_string())?;
        let text = crate::helm_index::helm_index(existing.as_deref(), &charts, now)
            .map_err(|e| format!("{}: {e}", files.location(&index_path)))?;
        files
            .write_bytes(&index_path, Bytes::from(text))
            .await
            .map_err(|e| e.to_string())?;
        written.push(index_path);
    }
    Ok(written)
}

/// Writes `falco/index.yaml`: the bundled falcoctl index, rewritten to the
/// mirror's registry when there is one.
pub(crate) async fn write_falcoctl_index(
    files: &FileTarget,
    plans: &[FilePlan],
    captured: &HashMap<Digest, Bytes>,
    bundled: &[(Reference, Repo)],
    bundle_name: &str,
) -> Result<Option<RelPath>, String> {
    let Some(p) = plans.iter().find(|p| p.item.kind == Kind::FalcoctlIndex) else {
        return Ok(None);
    };
    let Some(f) = p.files.first() else {
        return Ok(None);
    };
    let Some(original) = captured.get(&f.digest) else {
        return Err(format!(
            "{}: the index {} did not arrive",
            p.item.reference, f.digest
        ));
    };
    let note = format!(
        "Rewritten by ferry from {} (bundle `{bundle_name}`): entries point at the internal registry; only bundled artifacts are listed; signatures are dropped because keyless cosign verification cannot work offline.",
        p.item.reference
    );
    let text = crate::falcoctl::rewrite_index(original, bundled, &note)
        .map_err(|e| format!("{}: {e}", p.item.reference))?;
    files
        .write_bytes(&p.path, Bytes::from(text))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(p.path.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        let t = |s: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(t(0), "1970-01-01T00:00:00Z");
        assert_eq!(t(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(t(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(t(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(t(253_402_300_799), "9999-12-31T23:59:59Z");
        // A fraction of a second is dropped, not rounded.
        let frac = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_999);
        assert_eq!(rfc3339(frac), "1970-01-01T00:00:01Z");
    }
}
