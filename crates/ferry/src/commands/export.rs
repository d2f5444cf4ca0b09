//! `ferry export` and `ferry lock`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use serde_json::json;

use ferry_bundle::lock::Lock;
use ferry_bundle::spec::{validate_platform, ImageRequest, Spec, SpecError};
use ferry_bundle::writer::Compression;
use ferry_bundle::Reference;
use ferry_export::{Event, Events, ResolveError, Resolved};
use ferry_registry::Client;

use crate::cli::{CompressionArg, ExportArgs, LockArgs, NetArgs};
use crate::ui::{human_bytes, Ui};
use crate::{net, CmdResult, Failure};

fn load_requests(
    spec_path: &Path,
    platforms: &[String],
) -> Result<(Spec, Vec<ImageRequest>), Failure> {
    let spec = Spec::load(spec_path).map_err(Failure::input)?;
    if let Some(section) = spec.unsupported_sections().first() {
        return Err(Failure::input(anyhow!(
            "spec `{}`: section `{section}` is not supported by this version of ferry yet (only `images` is carried)",
            spec_path.display()
        ))
        .hint(format!("remove `{section}:` from the spec for now")));
    }
    for p in platforms {
        validate_platform(p).map_err(|e| Failure::input(anyhow!("--platform: {e}")))?;
    }
    let no_manifests = |p: &Path| -> Result<Vec<Reference>, SpecError> {
        Err(SpecError::Invalid {
            path: p.to_path_buf(),
            message: "`fromManifests` is not supported by this version of ferry yet".into(),
        })
    };
    let requests = spec
        .image_requests(platforms, &no_manifests)
        .map_err(Failure::input)?;
    if requests.is_empty() {
        return Err(Failure::input(anyhow!(
            "spec `{}` lists no images",
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
                format!(" [{}]", platforms.join(", "))
            };
            shared.line(&format!("resolved {reference} -> {digest}{plats}"));
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
            shared.finish_bar();
            shared.line(&format!("writing bundle ({} of blobs)", human_bytes(bytes)));
            shared.json(json!({"event": "write-start", "bytes": bytes}));
            shared.start_bar("write", bytes);
        }
        Event::WriteProgress { bytes } => shared.inc(bytes),
    })
}

fn client_for(net: &NetArgs, spec: &Spec, mirrors: &[String]) -> Result<Client, Failure> {
    let mirrors = net::parse_mirrors(mirrors)?;
    net::client(net, &spec.registries, &mirrors, None)
}

async fn resolve(
    client: &Client,
    requests: &[ImageRequest],
    lock: Option<&Lock>,
    jobs: usize,
    ev: &Events,
) -> Result<Resolved, Failure> {
    ferry_export::resolve(client, requests, lock, jobs, ev)
        .await
        .map_err(|e: ResolveError| {
            if e.is_environment() {
                Failure::env(e).hint(
                    "check network access to the registries (or --upstream-mirror), then re-run",
                )
            } else {
                Failure::input(e)
            }
        })
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
    let resolved = resolve(&client, &requests, None, a.net.jobs, &ev).await?;
    let lock = resolved.lock();
    write_lock(&a.output, &lock)?;
    ui.json(json!({"event": "locked", "path": a.output, "images": lock.images.len()}));
    ui.result(&format!(
        "wrote {} ({} images)",
        a.output.display(),
        lock.images.len()
    ));
    Ok(0)
}

pub async fn export(a: ExportArgs, ui: &Arc<Ui>) -> CmdResult {
    let started = Instant::now();
    let (spec, requests) = load_requests(&a.spec, &a.platforms)?;
    let client = client_for(&a.net, &spec, &a.upstream_mirror)?;
    let ev = events(ui);
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
        let fresh = resolve(&client, &requests, None, a.net.jobs, &ev).await?;
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
        let r = resolve(&client, &requests, existing.as_ref(), a.net.jobs, &ev).await?;
        if let Some(p) = &a.lock {
            write_lock(p, &r.lock())?;
        }
        r
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
    let opts = ferry_export::ExportOptions {
        output: a.output.clone(),
        compression,
        cache_dir: a.cache.clone().unwrap_or_else(default_cache),
        jobs: a.net.jobs,
        name: spec.name.clone(),
    };
    let summary = ferry_export::export(&client, &resolved, &opts, &ev)
        .await
        .map_err(|e| match e {
            ferry_export::ExportError::Fetch(_) => {
                Failure::env(e).hint("re-run: blobs already downloaded are kept in the cache")
            }
            ferry_export::ExportError::CorruptCache { .. } => Failure::env(e),
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
        "seconds": secs,
    }));
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
    Ok(0)
}
