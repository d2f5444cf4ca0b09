//! Everything that is not a plain image: Helm charts (classic repositories
//! and OCI), Falco drivers, rules/plugins and the falcoctl index, OpenSearch
//! plugins and plain files.
//!
//! Registry-borne content (OCI charts) is resolved like an image; content
//! fetched over HTTP is checked (chart digest against the repository index,
//! plugin sha512 against its `.sha512`, file sha256 against the spec), put in
//! the blob cache and wrapped in an OCI artifact.

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use url::Url;

use ferry_bundle::artifact::FileLayer;
use ferry_bundle::lock::Lock;
use ferry_bundle::meta::Kind;
use ferry_bundle::spec::{
    ChartEntry, FalcoDrivers, FileEntry, ImageRequest, OpenSearchSpec, Spec, FALCO_DRIVER_REPO,
    OPENSEARCH_REPO,
};
use ferry_bundle::{chart, Digest, Reference};
use ferry_registry::Client;

use crate::local::{self, cache_blob, credentials, fetch_doc, fetch_file, put_bytes};
use crate::resolve::{resolve_one, ResolvedImage};
use crate::{Event, Events};

/// What [`collect`] found.
#[derive(Debug, Default)]
pub struct Collected {
    /// Resolved items (charts, drivers, plugins, the index, files).
    pub items: Vec<ResolvedImage>,
    /// Images referenced by charts marked `images: true`.
    pub chart_images: Vec<ImageRequest>,
    /// Driver URLs that do not exist upstream (when allowed to be missing).
    pub missing_drivers: Vec<String>,
}

/// Options of [`collect`].
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Blob cache.
    pub cache_dir: std::path::PathBuf,
    /// Concurrent fetches.
    pub jobs: usize,
    /// A driver 404 is reported, not an error.
    pub allow_missing_drivers: bool,
}

/// Why collection failed: every failing entry, named.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Entries failed.
    #[error("failed to fetch {} item(s):\n{}", .0.len(), .0.iter().map(|(r, e)| format!("  {r}: {e}")).collect::<Vec<_>>().join("\n"))]
    Items(Vec<(String, String)>),
    /// Prebuilt drivers missing upstream.
    #[error("{} Falco driver(s) have no prebuilt module upstream:\n{}", .0.len(), .0.iter().map(|u| format!("  {u}")).collect::<Vec<_>>().join("\n"))]
    MissingDrivers(Vec<String>),
}

impl CollectError {
    /// Whether every failure is a network / server failure (exit 2).
    pub fn is_environment(&self) -> bool {
        match self {
            CollectError::Items(v) => v.iter().all(|(_, e)| e.starts_with("network:")),
            CollectError::MissingDrivers(_) => false,
        }
    }
}

fn parse_url(s: &str) -> Result<Url, String> {
    Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))
}

/// Makes a URL's host and path into a repository-ish path: lowercase, with
/// characters a repository name cannot hold replaced by `-`.
fn sanitize_path(s: &str) -> String {
    let mut out = String::new();
    for part in s.split('/').filter(|p| !p.is_empty()) {
        let clean: String = part
            .to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let clean = clean
            .trim_matches(|c| c == '.' || c == '_' || c == '-')
            .to_string();
        if clean.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(&clean);
    }
    out
}

fn url_host_port(u: &Url) -> String {
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => "unknown".into(),
    }
}

/// The repository name of a classic chart repository on the file server.
fn classic_repo_name(entry: &ChartEntry, repo: &Url) -> String {
    if let Some(n) = &entry.repo_name {
        return n.clone();
    }
    sanitize_path(&format!(
        "{}/{}",
        url_host_port(repo).replace(':', "-"),
        repo.path()
    ))
}

#[derive(Deserialize)]
struct RepoIndex {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    #[serde(default)]
    entries: BTreeMap<String, Vec<IndexEntry>>,
}

#[derive(Deserialize)]
struct IndexEntry {
    #[serde(default, deserialize_with = "loose_string")]
    version: String,
    #[serde(default)]
    urls: Vec<String>,
    /// The upstream's text, kept raw on purpose: Helm writes bare hex (any
    /// case, sometimes `sha256:`-prefixed), and only the chosen version's
    /// digest is parsed into a `Digest` (`classic_chart`), so a bad digest
    /// on another version does not refuse the whole index.
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    created: Option<String>,
}

fn loose_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = yaml_serde::Value::deserialize(d)?;
    Ok(match v {
        yaml_serde::Value::String(s) => s,
        yaml_serde::Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}

async fn classic_chart(
    client: &Client,
    cache: &Path,
    entry: &ChartEntry,
) -> Result<(ResolvedImage, Vec<String>), String> {
    let (Some(repo), Some(name), Some(version)) = (&entry.repo, &entry.name, &entry.version) else {
        return Err("a classic chart needs repo, name and version".into());
    };
    let base = parse_url(&format!("{}/", repo.trim_end_matches('/')))?;
    // Bound to the repository's origin: a chart URL on another scheme, host
    // or port gets no credentials.
    let auth = credentials(entry.auth.as_ref(), &base)?;
    let index_url = base
        .join("index.yaml")
        .map_err(|e| format!("{repo}: {e}"))?;
    let text = fetch_doc(client, &index_url, auth.as_ref()).await?;
    ferry_bundle::yaml::check_depth(&text)
        .map_err(|e| format!("{index_url}: not a Helm repository index: {e}"))?;
    let index: RepoIndex = yaml_serde::from_slice(&text)
        .map_err(|e| format!("{index_url}: not a Helm repository index: {e}"))?;
    if index.api_version.is_none() {
        return Err(format!(
            "{index_url}: no apiVersion (not a Helm repository index)"
        ));
    }
    let versions = index
        .entries
        .get(name)
        .ok_or_else(|| format!("{index_url}: no chart `{name}` in the repository index"))?;
    let found = versions
        .iter()
        .find(|v| &v.version == version)
        .ok_or_else(|| {
            let mut have: Vec<&str> = versions
                .iter()
                .map(|v| v.version.as_str())
                .take(10)
                .collect();
            have.sort();
            format!(
                "{index_url}: chart `{name}` has no version `{version}` (some it has: {})",
                have.join(", ")
            )
        })?;
    let first = found
        .urls
        .first()
        .ok_or_else(|| format!("{index_url}: {name} {version} has no urls"))?;
    // Relative URLs resolve against the repository URL (Helm's ResolveReferenceURL).
    let chart_url = base
        .join(first)
        .map_err(|e| format!("{index_url}: bad chart URL `{first}`: {e}"))?;
    let expected: Option<Digest> = match &found.digest {
        Some(hex) if !hex.is_empty() => Some(
            format!(
                "sha256:{}",
                hex.trim_start_matches("sha256:").to_ascii_lowercase()
            )
            .parse()
            .map_err(|_| format!("{index_url}: {name} {version}: bad digest `{hex}`"))?,
        ),
        _ => None,
    };
    let f = fetch_file(client, cache, &chart_url, auth.as_ref(), expected.as_ref()).await?;
    let tgz = std::fs::read(cache_blob(cache, &f.digest))
        .map_err(|e| format!("failed to read the cached chart: {e}"))?;
    let ch = chart::read_chart(&tgz, chart_url.as_str()).map_err(|e| e.to_string())?;
    if ch.name() != name || ch.version() != version {
        return Err(format!(
            "{chart_url}: the archive holds {} {}, not {name} {version}",
            ch.name(),
            ch.version()
        ));
    }
    let config = ch.config_json();
    let config_digest = put_bytes(cache, &config)?;
    let manifest = ch.oci_manifest(
        &config_digest,
        config.len() as u64,
        &f.digest,
        f.size,
        found.created.as_deref(),
    );
    let repo_name = classic_repo_name(entry, &base);
    let reference = format!(
        "{}/{}:{}",
        sanitize_path(&format!("{}/{}", url_host_port(&base), base.path())),
        sanitize_path(name),
        version.replace('+', "_")
    );
    Reference::parse(&reference)
        .map_err(|e| format!("{chart_url}: cannot name the chart `{reference}`: {e}"))?;
    let images = if entry.images {
        chart_images(&ch)
    } else {
        Vec::new()
    };
    let path = format!("helm/{repo_name}/{name}-{version}.tgz");
    let mut item = local::local_item(
        Kind::Chart,
        &reference,
        manifest,
        Some(path),
        Some(f.digest.clone()),
        Some(chart_url.to_string()),
    )?;
    item.display = None;
    Ok((item, images))
}

async fn oci_chart(
    client: &Client,
    cache: &Path,
    entry: &ChartEntry,
    lock: Option<&Lock>,
) -> Result<(ResolvedImage, Vec<String>), String> {
    let reference = entry.oci_reference().map_err(|e| e.to_string())?;
    let req = ImageRequest {
        reference: reference.clone(),
        kind: Kind::Chart,
        platforms: Vec::new(),
    };
    let mut item = resolve_one(client, &req, lock).await?;
    let layer = item
        .top
        .parsed
        .layers
        .iter()
        .find(|l| l.media_type.as_ref() == ferry_bundle::artifact::HELM_CHART_LAYER)
        .cloned()
        .ok_or_else(|| {
            format!(
                "{reference}: not a Helm chart (no `{}` layer)",
                ferry_bundle::artifact::HELM_CHART_LAYER
            )
        })?;
    let name = reference
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(&reference.repository)
        .to_string();
    let version = reference
        .tag
        .clone()
        .unwrap_or_else(|| layer.digest.hex()[..12].to_string())
        .replace('_', "+");
    let parent = reference
        .repository
        .rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .unwrap_or_default();
    let repo_name = entry.repo_name.clone().unwrap_or_else(|| {
        sanitize_path(&format!(
            "{}/{parent}",
            reference.registry.replace(':', "-")
        ))
    });
    item.path = Some(format!("helm/{repo_name}/{name}-{version}.tgz"));
    item.content = Some(layer.digest.clone());
    let images = if entry.images {
        let dest = cache_blob(cache, &layer.digest);
        if std::fs::metadata(&dest).ok().map(|m| m.len()) != Some(layer.size) {
            std::fs::create_dir_all(ferry_bundle::store_layout::BlobDir::under(cache).dir())
                .map_err(|e| format!("failed to prepare the cache: {e}"))?;
            client
                .download_blob(&item.repo, &layer.digest, Some(layer.size), &dest, None)
                .await
                .map_err(|e| crate::resolve::describe(&e))?;
        }
        let tgz =
            std::fs::read(&dest).map_err(|e| format!("failed to read the cached chart: {e}"))?;
        let ch = chart::read_chart(&tgz, &reference.to_string()).map_err(|e| e.to_string())?;
        chart_images(&ch)
    } else {
        Vec::new()
    };
    Ok((item, images))
}

/// The chart's images; values that are not references come back as
/// `!warning` lines (reported, not fatal).
fn chart_images(ch: &chart::Chart) -> Vec<String> {
    let found = ch.images();
    let mut out = found.images;
    out.extend(found.skipped.iter().map(|s| format!("!{}: {s}", ch.name())));
    out
}

/// The URL of one driver: `<repo>/<version, query-escaped>/<arch>/<file>`.
pub(crate) fn driver_url(repo: &str, version: &str, arch: &str, file: &str) -> Result<Url, String> {
    let escaped: String = url::form_urlencoded::byte_serialize(version.as_bytes()).collect();
    parse_url(&format!(
        "{}/{}/{}/{}",
        repo.trim_end_matches('/'),
        escaped,
        arch,
        file
    ))
}

struct DriverJob {
    url: Url,
    path: String,
    file: String,
}

fn driver_jobs(d: &FalcoDrivers) -> Result<Vec<DriverJob>, String> {
    let repo = d
        .repo
        .clone()
        .unwrap_or_else(|| FALCO_DRIVER_REPO.to_string());
    let name = d.name.clone().unwrap_or_else(|| "falco".into());
    let mut out = Vec::new();
    for arch in &d.arch {
        for k in &d.kernels {
            let file = format!("{name}_{}_{}_{}.ko", k.target, k.release, k.version);
            out.push(DriverJob {
                url: driver_url(&repo, &d.version, arch, &file)?,
                path: format!("falco/driver/{}/{arch}/{file}", d.version),
                file,
            });
        }
    }
    Ok(out)
}

async fn driver(
    client: &Client,
    cache: &Path,
    job: &DriverJob,
) -> Result<Option<ResolvedImage>, String> {
    let Some(f) = local::fetch_file_opt(client, cache, &job.url, None, None).await? else {
        return Ok(None);
    };
    local::file_artifact(
        cache,
        Kind::FalcoDriver,
        job.url.as_str(),
        &job.path,
        &[FileLayer {
            digest: f.digest,
            size: f.size,
            media_type: "application/octet-stream".into(),
            title: job.file.clone(),
        }],
    )
    .map(Some)
}

async fn falcoctl_index(client: &Client, cache: &Path, url: &str) -> Result<ResolvedImage, String> {
    let u = parse_url(url)?;
    let bytes = fetch_doc(client, &u, None).await?;
    ferry_bundle::yaml::check_depth(&bytes)
        .map_err(|e| format!("{url}: not a falcoctl index: {e}"))?;
    let v: yaml_serde::Value =
        yaml_serde::from_slice(&bytes).map_err(|e| format!("{url}: not a falcoctl index: {e}"))?;
    if !v.is_sequence() {
        return Err(format!(
            "{url}: not a falcoctl index (expected a YAML list of entries)"
        ));
    }
    let digest = put_bytes(cache, &bytes)?;
    local::file_artifact(
        cache,
        Kind::FalcoctlIndex,
        url,
        "falco/index.yaml",
        &[FileLayer {
            digest,
            size: bytes.len() as u64,
            media_type: "application/yaml".into(),
            title: "index.yaml".into(),
        }],
    )
}

/// Parses a `.sha512` file with the parser import re-checks it with.
fn parse_sha512(text: &str, url: &Url, file: &str) -> Result<String, String> {
    ferry_bundle::placement::parse_sha512(text, file).map_err(|e| format!("{url}: {e}"))
}

fn sha512_file(path: &Path) -> Result<String, String> {
    use sha2::{Digest as _, Sha512};
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| format!("failed to read `{}`: {e}", path.display()))?;
    let mut h = Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("failed to read `{}`: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

async fn opensearch_plugin(
    client: &Client,
    cache: &Path,
    spec: &OpenSearchSpec,
    id: &str,
) -> Result<ResolvedImage, String> {
    let repo = spec
        .repo
        .clone()
        .unwrap_or_else(|| OPENSEARCH_REPO.to_string());
    let v = &spec.version;
    let file = format!("{id}-{v}.zip");
    let zip_url = parse_url(&format!("{}/{id}/{v}/{file}", repo.trim_end_matches('/')))?;
    let sum_url = parse_url(&format!("{zip_url}.sha512"))?;
    let sig_url = parse_url(&format!("{zip_url}.sig"))?;
    let sum_text = fetch_doc(client, &sum_url, None).await?;
    let want = parse_sha512(&String::from_utf8_lossy(&sum_text), &sum_url, &file)?;
    let zip = fetch_file(client, cache, &zip_url, None, None).await?;
    let got = sha512_file(&cache_blob(cache, &zip.digest))?;
    if got != want {
        return Err(format!(
            "{zip_url}: sha512 mismatch: {sum_url} says {want}, the download is {got}"
        ));
    }
    let sum_digest = put_bytes(cache, &sum_text)?;
    let mut layers = vec![
        FileLayer {
            digest: zip.digest.clone(),
            size: zip.size,
            media_type: "application/zip".into(),
            title: file.clone(),
        },
        FileLayer {
            digest: sum_digest,
            size: sum_text.len() as u64,
            media_type: "text/plain".into(),
            title: format!("{file}.sha512"),
        },
    ];
    // The PGP signature travels too when upstream has one (installers from
    // a URL do not check it; operators can).
    if let Some(sig) = local::fetch_file_opt(client, cache, &sig_url, None, None).await? {
        layers.push(FileLayer {
            digest: sig.digest,
            size: sig.size,
            media_type: "application/pgp-signature".into(),
            title: format!("{file}.sig"),
        });
    }
    local::file_artifact(
        cache,
        Kind::OpensearchPlugin,
        zip_url.as_str(),
        &format!("opensearch/plugins/{id}/{v}/{file}"),
        &layers,
    )
}

async fn plain_file(client: &Client, cache: &Path, f: &FileEntry) -> Result<ResolvedImage, String> {
    let url = parse_url(&f.url)?;
    let expected = f.digest().map_err(|e| e.to_string())?;
    let auth = credentials(f.auth.as_ref(), &url)?;
    let got = fetch_file(client, cache, &url, auth.as_ref(), Some(&expected))
        .await
        .map_err(|e| {
            if e.contains("expected digest") {
                format!("{e} (the spec's sha256 does not match the download)")
            } else {
                e
            }
        })?;
    let title = f.path.rsplit('/').next().unwrap_or(&f.path).to_string();
    local::file_artifact(
        cache,
        Kind::File,
        url.as_str(),
        &format!("files/{}", f.path),
        &[FileLayer {
            digest: got.digest,
            size: got.size,
            media_type: "application/octet-stream".into(),
            title,
        }],
    )
}

enum Job<'a> {
    Chart(&'a ChartEntry),
    Driver(DriverJob),
    Index(String),
    Plugin(&'a OpenSearchSpec, String),
    File(&'a FileEntry),
}

impl Job<'_> {
    fn name(&self) -> String {
        match self {
            Job::Chart(c) => match (&c.oci, &c.repo, &c.name, &c.version) {
                (Some(o), ..) => o.clone(),
                (None, Some(r), Some(n), Some(v)) => format!("chart {n} {v} from {r}"),
                _ => "chart".into(),
            },
            Job::Driver(d) => d.url.to_string(),
            Job::Index(u) => u.clone(),
            Job::Plugin(_, id) => format!("opensearch plugin {id}"),
            Job::File(f) => f.url.clone(),
        }
    }
}

enum Done {
    Item(Box<ResolvedImage>, Vec<String>),
    MissingDriver(String),
}

/// Resolves and fetches every non-image entry of `spec`.
pub async fn collect(
    client: &Client,
    spec: &Spec,
    lock: Option<&Lock>,
    opts: &CollectOptions,
    events: &Events,
) -> Result<Collected, CollectError> {
    let cache = opts.cache_dir.as_path();
    let mut jobs: Vec<Job> = spec.charts.iter().map(Job::Chart).collect();
    let mut bad = Vec::new();
    if let Some(f) = &spec.falco {
        if let Some(d) = &f.drivers {
            match driver_jobs(d) {
                Ok(v) => jobs.extend(v.into_iter().map(Job::Driver)),
                Err(e) => bad.push(("falco.drivers".to_string(), e)),
            }
        }
        if let Some(i) = &f.index {
            jobs.push(Job::Index(i.clone()));
        }
    }
    if let Some(o) = &spec.opensearch {
        jobs.extend(o.plugins.iter().map(|p| Job::Plugin(o, p.clone())));
    }
    jobs.extend(spec.files.iter().map(Job::File));
    let results: Vec<(String, Result<Done, String>)> = stream::iter(jobs)
        .map(|job| async move {
            let name = job.name();
            let r = match &job {
                Job::Chart(c) if c.oci.is_some() => oci_chart(client, cache, c, lock)
                    .await
                    .map(|(i, imgs)| Done::Item(Box::new(i), imgs)),
                Job::Chart(c) => classic_chart(client, cache, c)
                    .await
                    .map(|(i, imgs)| Done::Item(Box::new(i), imgs)),
                Job::Driver(d) => match driver(client, cache, d).await {
                    Ok(Some(i)) => Ok(Done::Item(Box::new(i), Vec::new())),
                    Ok(None) => Ok(Done::MissingDriver(d.url.to_string())),
                    Err(e) => Err(e),
                },
                Job::Index(u) => falcoctl_index(client, cache, u)
                    .await
                    .map(|i| Done::Item(Box::new(i), Vec::new())),
                Job::Plugin(o, id) => opensearch_plugin(client, cache, o, id)
                    .await
                    .map(|i| Done::Item(Box::new(i), Vec::new())),
                Job::File(f) => plain_file(client, cache, f)
                    .await
                    .map(|i| Done::Item(Box::new(i), Vec::new())),
            };
            (name, r)
        })
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;
    let mut out = Collected::default();
    let mut images = std::collections::BTreeSet::new();
    for (name, r) in results {
        match r {
            Ok(Done::Item(item, imgs)) => {
                events(Event::Resolved {
                    reference: item.name(),
                    digest: item.top.digest.clone(),
                    platforms: Vec::new(),
                });
                out.items.push(*item);
                images.extend(imgs);
            }
            Ok(Done::MissingDriver(u)) => out.missing_drivers.push(u),
            Err(e) => bad.push((name, e)),
        }
    }
    if !bad.is_empty() {
        bad.sort();
        return Err(CollectError::Items(bad));
    }
    out.missing_drivers.sort();
    if !out.missing_drivers.is_empty() && !opts.allow_missing_drivers {
        return Err(CollectError::MissingDrivers(out.missing_drivers));
    }
    let platforms = spec.platforms.clone();
    for i in images {
        if let Some(w) = i.strip_prefix('!') {
            events(Event::Warning {
                message: format!("chart image skipped: {w}"),
            });
            continue;
        }
        match Reference::parse(&i) {
            Ok(reference) => out.chart_images.push(ImageRequest {
                reference,
                kind: Kind::Image,
                platforms: platforms.clone(),
            }),
            Err(e) => {
                return Err(CollectError::Items(vec![(
                    "chart images".into(),
                    format!("`{i}`: {e}"),
                )]))
            }
        }
    }
    out.items.sort_by_key(|a| a.name());
    Ok(out)
}
