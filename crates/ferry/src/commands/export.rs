//! `ferry export` and `ferry lock`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use serde_json::json;

use ferry_bundle::lock::Lock;
use ferry_bundle::meta::Kind;
use ferry_bundle::spec::{validate_platform, ImageRequest, Spec, SpecError};
use ferry_bundle::writer::Compression;
use ferry_bundle::Reference;
use ferry_export::{Event, Events, ResolveError, Resolved};
use ferry_registry::Client;

use crate::cli::{CompressionArg, ExportArgs, LockArgs, NetArgs};
use crate::ui::{esc, human_bytes, Ui};
use crate::{net, CmdResult, Failure};

fn load_requests(
    spec_path: &Path,
    platforms: &[String],
) -> Result<(Spec, Vec<ImageRequest>), Failure> {
    let spec = Spec::load(spec_path).map_err(Failure::input)?;
    for p in platforms {
        validate_platform(p).map_err(|e| Failure::input(anyhow!("--platform: {e}")))?;
    }
    let from_manifests = |p: &Path| -> Result<Vec<Reference>, SpecError> {
        ferry_bundle::discover::images_in_file(p).map_err(|e| SpecError::Invalid {
            path: spec_path.to_path_buf(),
            message: format!("fromManifests: {e}"),
        })
    };
    let mut requests = spec
        .image_requests(platforms, &from_manifests)
        .map_err(Failure::input)?;
    if let Some(f) = &spec.falco {
        for r in &f.artifacts {
            // falcoctl artifacts (plugins are indexes) travel whole.
            requests.retain(|q| &q.reference != r);
            requests.push(ImageRequest {
                reference: r.clone(),
                kind: Kind::FalcoArtifact,
                platforms: Vec::new(),
            });
        }
    }
    let has_other = !spec.charts.is_empty()
        || spec.falco.is_some()
        || spec.opensearch.is_some()
        || !spec.files.is_empty();
    if requests.is_empty() && !has_other {
        return Err(Failure::input(anyhow!(
            "spec `{}` lists nothing to carry",
            spec_path.display()
        )));
    }
    Ok((spec, requests))
}

fn events(ui: &Arc<Ui>) -> Events {
    let shared = ui.clone();
    Arc::new(move |e: Event| match e {
        Event::Resolved {
            reference,
            digest,
            platforms,
        } => {
            let plats = if platforms.is_empty() {
                String::new()
            } else {
                format!(" [{}]", esc(&platforms.join(", ")))
            };
            shared.line(&format!(
                "resolved {} -> {digest}{plats}",
                esc(&reference.to_string())
            ));
            shared.json(json!({"event": "resolved", "ref": reference, "digest": digest, "platforms": platforms}));
        }
        Event::FetchStart {
            blobs,
            bytes,
            cached,
        } => {
            shared.line(&format!(
                "fetching {blobs} blob(s), {} ({cached} already cached)",
                human_bytes(bytes)
            ));
            shared.json(
                json!({"event": "fetch-start", "blobs": blobs, "bytes": bytes, "cached": cached}),
            );
            shared.start_bar("fetch", bytes);
        }
        Event::FetchProgress { bytes } => shared.inc(bytes),
        Event::Fetched { digest, size } => {
            shared.json(json!({"event": "fetched", "digest": digest, "size": size}));
        }
        Event::WriteStart { bytes } => {
            // Writing runs alongside fetching: one bar counts both.
            shared.line(&format!("writing bundle ({} of blobs)", human_bytes(bytes)));
            shared.json(json!({"event": "write-start", "bytes": bytes}));
            shared.extend_bar("fetch+write", bytes);
        }
        Event::WriteProgress { bytes } => shared.inc(bytes),
        Event::Warning { message } => {
            shared.line(&format!("warning: {}", esc(&message)));
            shared.json(json!({"event": "warning", "message": message}));
        }
    })
}

fn client_for(net: &NetArgs, spec: &Spec, mirrors: &[String]) -> Result<Client, Failure> {
    let mirrors = net::parse_mirrors(mirrors)?;
    net::client(net, &spec.registries, &mirrors, None)
}

/// Resolves everything the spec names: charts, drivers, plugins and files
/// first (charts may add images), then the images, then (with `referrers`)
/// the provenance of every registry item.
#[allow(clippy::too_many_arguments)]
async fn resolve(
    client: &Client,
    spec: &Spec,
    requests: &[ImageRequest],
    lock: Option<&Lock>,
    cache_dir: &Path,
    jobs: usize,
    allow_missing_drivers: bool,
    referrers: bool,
    ev: &Events,
) -> Result<Resolved, Failure> {
    let opts = ferry_export::sources::CollectOptions {
        cache_dir: cache_dir.to_path_buf(),
        jobs,
        allow_missing_drivers,
    };
    let collected = ferry_export::sources::collect(client, spec, lock, &opts, ev)
        .await
        .map_err(|e| {
            if e.is_environment() {
                Failure::env(e).hint("check network access to the sources (or --upstream-mirror), then re-run")
            } else if matches!(e, ferry_export::sources::CollectError::MissingDrivers(_)) {
                Failure::partial(e).hint("not every kernel has a prebuilt driver: remove those kernels, or pass --allow-missing-drivers")
            } else {
                Failure::input(e)
            }
        })?;
    for u in &collected.missing_drivers {
        ev(Event::Warning {
            message: format!("no prebuilt Falco driver upstream: {u}"),
        });
    }
    let mut all: Vec<ImageRequest> = requests.to_vec();
    for r in collected.chart_images {
        if !all.iter().any(|q| q.reference == r.reference) {
            all.push(r);
        }
    }
    all.sort();
    let mut resolved = ferry_export::resolve(client, &all, lock, jobs, ev)
        .await
        .map_err(|e: ResolveError| {
            if e.is_environment() {
                Failure::env(e).hint(
                    "check network access to the registries (or --upstream-mirror), then re-run",
                )
            } else {
                Failure::input(e)
            }
        })?;
    resolved.images.extend(collected.items);
    if referrers {
        let found = ferry_export::provenance::discover(client, &resolved.images, lock, jobs, ev)
            .await
            .map_err(|e: ResolveError| {
                if e.is_environment() {
                    Failure::env(e).hint(
                        "check network access to the registries, then re-run (or --no-referrers to carry no provenance)",
                    )
                } else {
                    Failure::input(e)
                }
            })?;
        resolved.images.extend(found);
    }
    resolved.images.sort_by_key(|a| a.name());
    Ok(resolved)
}

/// The blobs the other side holds, from a receipt (with the repository
/// holding each) or from a lock (every config and layer of the manifests it
/// pins, fetched from the source by digest).
async fn load_base(
    path: &Path,
    client: &Client,
) -> Result<std::collections::HashMap<ferry_bundle::Digest, Option<String>>, Failure> {
    use ferry_bundle::manifest;
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::input(anyhow!("--since: failed to read `{}`: {e}", path.display()))
    })?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::input(anyhow!(
            "--since: `{}` is not a receipt or lock file: {e}",
            path.display()
        ))
    })?;
    let mut base = std::collections::HashMap::new();
    if v.get("receiptVersion").is_some() {
        let r: ferry_import::receipt::Receipt = serde_json::from_value(v).map_err(|e| {
            Failure::input(anyhow!(
                "--since: invalid receipt `{}`: {e}",
                path.display()
            ))
        })?;
        for (repo, content) in &r.repositories {
            for d in &content.blobs {
                base.entry(d.clone()).or_insert_with(|| Some(repo.clone()));
            }
        }
        return Ok(base);
    }
    if v.get("lockVersion").is_none() {
        return Err(Failure::input(anyhow!(
            "--since: `{}` is neither a receipt (receiptVersion) nor a lock file (lockVersion)",
            path.display()
        )));
    }
    let lock = Lock::load(path).map_err(Failure::input)?;
    for e in lock.entries() {
        let Ok(r) = Reference::parse(&e.reference) else {
            continue; // file kinds always travel
        };
        let repo = ferry_registry::Repo {
            host: r.registry.clone(),
            path: r.repository.clone(),
        };
        let mut queue = vec![e.digest.clone()];
        queue.extend(e.platforms.iter().map(|p| p.digest.clone()));
        while let Some(d) = queue.pop() {
            let m = client
                .get_manifest(&repo, &d.to_string())
                .await
                .map_err(|err| {
                    Failure::env(anyhow!(
                        "--since: cannot read {}@{d} named by `{}`: {err}",
                        e.reference,
                        path.display()
                    ))
                })?;
            let parsed = manifest::parse(&m.bytes, Some(&m.media_type))
                .map_err(|err| Failure::input(anyhow!("--since: {}@{d}: {err}", e.reference)))?;
            for b in parsed.blobs() {
                base.insert(b.digest.clone(), None);
            }
        }
    }
    Ok(base)
}

fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("ferry");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("ferry"),
        None => std::env::temp_dir().join("ferry-cache"),
    }
}

fn write_lock(path: &Path, lock: &Lock) -> Result<(), Failure> {
    ferry_bundle::writer::write_atomic(path, &lock.to_json()).map_err(|e| {
        Failure::env(
            anyhow::Error::new(e)
                .context(format!("failed to write lock file `{}`", path.display())),
        )
    })
}

pub async fn lock(a: LockArgs, ui: &Arc<Ui>) -> CmdResult {
    let (spec, requests) = load_requests(&a.spec, &a.platforms)?;
    let client = client_for(&a.net, &spec, &a.upstream_mirror)?;
    let ev = events(ui);
    let cache = a.cache.clone().unwrap_or_else(default_cache);
    let resolved = resolve(
        &client,
        &spec,
        &requests,
        None,
        &cache,
        a.net.jobs,
        a.allow_missing_drivers,
        !a.no_referrers,
        &ev,
    )
    .await?;
    let lock = resolved.lock();
    write_lock(&a.output, &lock)?;
    ui.json(json!({"event": "locked", "path": a.output, "images": lock.images.len(), "artifacts": lock.artifacts.len()}));
    ui.result(&format!(
        "wrote {} ({} images, {} other items)",
        a.output.display(),
        lock.images.len(),
        lock.artifacts.len()
    ));
    Ok(0)
}

pub async fn export(a: ExportArgs, ui: &Arc<Ui>) -> CmdResult {
    let started = Instant::now();
    // Load (and decrypt) the signing key first: a wrong password costs nothing.
    let sign_key = a
        .sign_key
        .as_deref()
        .map(super::key::signing_key)
        .transpose()?;
    let signed_by = sign_key.as_ref().map(|k| k.key_id().to_string());
    let (spec, requests) = load_requests(&a.spec, &a.platforms)?;
    let client = client_for(&a.net, &spec, &a.upstream_mirror)?;
    let ev = events(ui);
    // --no-cache: what resolution fetches (charts, files) goes to a
    // temporary directory beside the bundle, removed when done.
    let scratch = if a.no_cache {
        let dir = match a.output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Some(
            tempfile::Builder::new()
                .prefix(".ferry-export-")
                .tempdir_in(&dir)
                .map_err(|e| {
                    Failure::env(anyhow::Error::new(e).context(format!(
                        "failed to create a scratch directory in `{}`",
                        dir.display()
                    )))
                })?,
        )
    } else {
        None
    };
    let cache = match &scratch {
        Some(d) => d.path().to_path_buf(),
        None => a.cache.clone().unwrap_or_else(default_cache),
    };
    let existing = match &a.lock {
        Some(p) if p.exists() => Some(Lock::load(p).map_err(Failure::input)?),
        Some(p) if a.locked => {
            return Err(Failure::input(anyhow!(
                "--locked: lock file `{}` does not exist",
                p.display()
            ))
            .hint(format!(
                "create it with `ferry lock -f {} -o {}`",
                a.spec.display(),
                p.display()
            )))
        }
        _ => None,
    };
    let resolved = if a.locked {
        let fresh = resolve(
            &client,
            &spec,
            &requests,
            None,
            &cache,
            a.net.jobs,
            a.allow_missing_drivers,
            !a.no_referrers,
            &ev,
        )
        .await?;
        let drift = existing
            .as_ref()
            .map(|l| l.drift(&fresh.lock()))
            .unwrap_or_default();
        if !drift.is_empty() {
            return Err(Failure::input(anyhow!(
                "--locked: the spec resolves differently from `{}`:\n  {}",
                a.lock.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                drift.join("\n  ")
            ))
            .hint("review the change, then update the lock with `ferry lock` (or export without --locked)"));
        }
        fresh
    } else {
        let r = resolve(
            &client,
            &spec,
            &requests,
            existing.as_ref(),
            &cache,
            a.net.jobs,
            a.allow_missing_drivers,
            !a.no_referrers,
            &ev,
        )
        .await?;
        if let Some(p) = &a.lock {
            write_lock(p, &r.lock())?;
        }
        r
    };
    // The signature policy: every matching item verified before a byte of
    // the bundle is written.
    let policy = ferry_export::trust::load_policy(&spec).map_err(Failure::input)?;
    let verification = match (&policy, &spec.verify) {
        (Some(p), Some(v)) => {
            let out = ferry_export::trust::check(&client, &resolved, p, v)
                .await
                .map_err(|e| {
                    if e.is_environment() {
                        Failure::env(e).hint("check network access to the registries, then re-run")
                    } else {
                        Failure::input(e).hint("nothing was written; fix the signatures upstream, or change the rule (mode: warn, unsigned: allow) after review")
                    }
                })?;
            for (r, w) in &out.warnings {
                ev(Event::Warning {
                    message: format!("signature policy (warn): {r}: {w}"),
                });
            }
            ui.line(&format!(
                "signature policy: {} item(s) checked: {}",
                out.verification.verdicts.len(),
                super::verify::verdict_counts(&out.verification.verdicts)
            ));
            Some(out.verification)
        }
        _ => None,
    };
    let compression = match a.compression {
        CompressionArg::Zstd => Compression::Zstd {
            level: a.level.unwrap_or(3).clamp(1, 19),
        },
        CompressionArg::Gzip => Compression::Gzip {
            level: a.level.unwrap_or(6).clamp(0, 9) as u32,
        },
        CompressionArg::None => Compression::None,
    };
    let base = match &a.since {
        Some(p) => load_base(p, &client).await?,
        None => Default::default(),
    };
    let opts = ferry_export::ExportOptions {
        output: a.output.clone(),
        compression,
        cache_dir: cache.clone(),
        stream: a.no_cache,
        jobs: a.net.jobs,
        name: spec.name.clone(),
        base,
        sign_key,
        split: a.split,
        verification,
    };
    let summary = ferry_export::export(&client, &resolved, &opts, &ev)
        .await
        .map_err(|e| match e {
            ferry_export::ExportError::Fetch(_) if !a.no_cache => {
                Failure::env(e).hint("re-run: blobs already downloaded are kept in the cache")
            }
            ferry_export::ExportError::CorruptCache { .. } => Failure::env(e),
            ferry_export::ExportError::Placement(_) => Failure::input(e),
            other => Failure::env(other),
        })?;
    ui.finish_bar();
    let secs = started.elapsed().as_secs_f64();
    ui.json(json!({
        "event": "exported",
        "path": summary.written.path,
        "sha256": summary.written.sha256.hex(),
        "size": summary.written.size,
        "items": summary.items,
        "blobs": summary.blobs,
        "blobBytes": summary.blob_bytes,
        "fetched": summary.fetched,
        "fetchedBytes": summary.fetched_bytes,
        "cached": summary.cached,
        "signedBy": signed_by,
        "baseBlobs": summary.base,
        "baseBytes": summary.base_bytes,
        "seconds": secs,
    }));
    if a.since.is_some() {
        ui.line(&format!(
            "differential: {} blob(s) ({}) left out, the other side has them",
            summary.base,
            human_bytes(summary.base_bytes)
        ));
    }
    if let Some(id) = &signed_by {
        ui.line(&format!(
            "signed ferry/bundle.json with key id {id} (ferry/bundle.json.sig)"
        ));
    }
    ui.result(&format!(
        "wrote {} ({}, {} items, {} blobs, {} of content; fetched {} new, {} cached) in {:.1}s\nsha256 {}  (also in {})",
        summary.written.path.display(),
        human_bytes(summary.written.size),
        summary.items,
        summary.blobs,
        human_bytes(summary.blob_bytes),
        summary.fetched,
        summary.cached,
        secs,
        summary.written.sha256.hex(),
        summary.written.checksum_path.display()
    ));
    if let Some(p) = &summary.written.parts {
        report_parts(ui, p);
    }
    Ok(0)
}

/// `--split`: the parts written and where their checksums are.
fn report_parts(ui: &Arc<Ui>, p: &ferry_bundle::parts::PartsWritten) {
    let parts: Vec<_> = p
        .manifest
        .parts
        .iter()
        .map(|x| json!({"name": x.name, "size": x.size, "sha256": x.sha256.hex()}))
        .collect();
    ui.json(json!({
        "event": "parts",
        "manifest": p.manifest_path,
        "partSize": p.manifest.part_size,
        "parts": parts,
    }));
    let (first, last) = match (p.manifest.parts.first(), p.manifest.parts.last()) {
        (Some(f), Some(l)) => (f.name.as_str(), l.name.as_str()),
        _ => return,
    };
    ui.result(&format!(
        "split into {} part(s) of up to {}: {first}{} (sizes and sha256 of each in {}); carry them all with the manifest",
        parts.len(),
        human_bytes(p.manifest.part_size),
        if parts.len() > 1 {
            format!(" … {last}")
        } else {
            String::new()
        },
        p.manifest_path.display()
    ));
}
