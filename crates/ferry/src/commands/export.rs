//! `ferry export` and `ferry lock`.

//!
//! The operations are [`ferry_export::ops`]; this renders their events,
//! summaries and errors (exit codes and hints). `export --from` verifies
//! its source (a bundle through `ferry_import::verify`, a store opened
//! through `ferry_import::store`) and runs [`ferry_export::reexport`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;

use ferry_bundle::spec::Spec;
use ferry_bundle::writer::Compression;
use ferry_export::ops::{self, OpError};
use ferry_export::preflight::Preflight;
use ferry_export::sources::CollectError;
use ferry_export::{Event, Events, ExportError, ExportSummary};
use ferry_registry::Client;

use crate::cli::{CompressionArg, ExportArgs, LockArgs, NetArgs};
use crate::ui::{esc, esc_path, human_bytes, Ui};
use crate::{net, CmdResult, Failure};

/// Renders an operation error: its exit code and what to do about it.
fn op_failure(e: OpError, no_cache: bool) -> Failure {
    match e {
        OpError::Collect(e) if e.is_environment() => Failure::env(e)
            .hint("check network access to the sources (or --upstream-mirror), then re-run"),
        OpError::Collect(e @ CollectError::MissingDrivers(_)) => Failure::partial(e).hint(
            "not every kernel has a prebuilt driver: remove those kernels, or pass --allow-missing-drivers",
        ),
        OpError::Resolve(e) if e.is_environment() => Failure::env(e)
            .hint("check network access to the registries (or --upstream-mirror), then re-run"),
        OpError::Provenance(e) if e.is_environment() => Failure::env(e).hint(
            "check network access to the registries, then re-run (or --no-referrers to carry no provenance)",
        ),
        OpError::LockMissing { lock, spec } => {
            let hint = format!(
                "create it with `ferry lock -f {} -o {}`",
                spec.display(),
                lock.display()
            );
            Failure::input(OpError::LockMissing { lock, spec }).hint(hint)
        }
        e @ OpError::Drift { .. } => Failure::input(e).hint(
            "review the change, then update the lock with `ferry lock` (or export without --locked)",
        ),
        e @ (OpError::LockWrite { .. } | OpError::Scratch { .. }) => Failure::env(e),
        OpError::Policy(e) if e.is_environment() => {
            Failure::env(e).hint("check network access to the registries, then re-run")
        }
        OpError::Policy(e) => Failure::input(e).hint(
            "nothing was written; fix the signatures upstream, or change the rule (mode: warn, unsigned: allow) after review",
        ),
        OpError::Since(e) if e.is_environment() => Failure::env(e),
        OpError::Write(e) => match e {
            ExportError::Fetch(_) if !no_cache => {
                Failure::env(e).hint("re-run: blobs already downloaded are kept in the cache")
            }
            ExportError::CorruptCache { .. } => Failure::env(e),
            ExportError::Placement(_) => Failure::input(e),
            ExportError::NoRoom(_) => Failure::env(e).hint(
                "nothing was downloaded: free space, or choose another --output directory or --cache",
            ),
            other => Failure::env(other),
        },
        other => Failure::input(other),
    }
}

/// The preflight, where the events leave it (for `--plan-json`).
type PlanSlot = Arc<Mutex<Option<Preflight>>>;

fn events(ui: &Arc<Ui>, plan: PlanSlot) -> Events {
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
        Event::Preflight(p) => {
            render_preflight(&shared, &p);
            if let Ok(mut slot) = plan.lock() {
                *slot = Some(p);
            }
        }
        Event::PolicyChecked { verdicts } => {
            shared.line(&format!(
                "signature policy: {} item(s) checked: {}",
                verdicts.len(),
                super::verify::verdict_counts(&verdicts)
            ));
        }
        Event::Warning { message } => {
            shared.line(&format!("warning: {}", esc(&message)));
            shared.json(json!({"event": "warning", "message": message}));
        }
    })
}

/// The plan, before any download: totals, sources, room.
fn render_preflight(ui: &Ui, p: &Preflight) {
    ui.json(json!({"event": "preflight", "plan": p}));
    ui.line(&format!(
        "plan: {} item(s), {} blob(s); fetch {} blob(s) ({}) from {} source(s), {} cached; write up to {} to {}",
        p.items,
        p.blobs,
        p.fetch_blobs,
        human_bytes(p.fetch_bytes),
        p.sources.len(),
        p.cached_blobs,
        human_bytes(p.write_bytes),
        esc_path(&p.output)
    ));
    for (source, s) in &p.sources {
        ui.line(&format!(
            "  from {}: {} blob(s), {}",
            esc(source),
            s.blobs,
            human_bytes(s.bytes)
        ));
    }
    for r in &p.rooms {
        ui.line(&format!(
            "  room: {} `{}` needs {}, {} available{}",
            r.what,
            esc_path(&r.path),
            human_bytes(r.needed),
            human_bytes(r.available),
            if r.fits() { "" } else { ": NOT ENOUGH" }
        ));
    }
}

/// `--plan-json FILE`: the plan as JSON, written atomically.
fn write_plan(path: &Path, plan: &PlanSlot) -> Result<(), Failure> {
    let Some(p) = plan.lock().ok().and_then(|g| g.clone()) else {
        return Ok(());
    };
    let mut bytes = serde_json::to_vec_pretty(&p)
        .map_err(|e| Failure::env(anyhow::anyhow!("failed to serialise the plan: {e}")))?;
    bytes.push(b'\n');
    ferry_bundle::writer::write_atomic(path, &bytes).map_err(|e| {
        Failure::env(
            anyhow::Error::new(e).context(format!("failed to write the plan `{}`", path.display())),
        )
    })
}

fn client_for(net: &NetArgs, spec: &Spec, mirrors: &[String]) -> Result<Client, Failure> {
    let mirrors = net::parse_mirrors(mirrors)?;
    net::client(net, &spec.registries, &mirrors, None)
}

pub async fn lock(a: LockArgs, ui: &Arc<Ui>) -> CmdResult {
    let loaded = ops::load(&a.spec, &a.platforms).map_err(|e| op_failure(e, false))?;
    let client = client_for(&a.net, &loaded.spec, &a.upstream_mirror)?;
    let ev = events(ui, Default::default());
    let opts = ops::ResolveOptions {
        cache_dir: a.cache.clone().unwrap_or_else(ops::default_cache),
        jobs: a.net.jobs,
        allow_missing_drivers: a.allow_missing_drivers,
        referrers: !a.no_referrers,
    };
    let lock = ops::lock(&client, &loaded, &opts, &a.output, &ev)
        .await
        .map_err(|e| op_failure(e, false))?;
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
    if let Some(from) = a.from.clone() {
        return export_from(a, &from, ui).await;
    }
    let started = Instant::now();
    // Load (and decrypt) the signing key first: a wrong password costs nothing.
    let sign_key = a
        .sign_key
        .as_deref()
        .map(super::key::signing_key)
        .transpose()?;
    let signed_by = sign_key.as_ref().map(|k| k.key_id().to_string());
    let spec_path = a
        .spec
        .clone()
        .ok_or_else(|| Failure::input(anyhow::anyhow!("-f/--file SPEC is required (or --from)")))?;
    let loaded = ops::load(&spec_path, &a.platforms).map_err(|e| op_failure(e, a.no_cache))?;
    let client = client_for(&a.net, &loaded.spec, &a.upstream_mirror)?;
    let plan = PlanSlot::default();
    let ev = events(ui, plan.clone());
    let compression = compression(&a);
    let run = ops::ExportRun {
        spec_path,
        output: a.output.clone(),
        lock: a.lock.clone(),
        locked: a.locked,
        cache: a.cache.clone(),
        no_cache: a.no_cache,
        jobs: a.net.jobs,
        allow_missing_drivers: a.allow_missing_drivers,
        referrers: !a.no_referrers,
        since: a.since.clone(),
        compression,
        sign_key,
        split: a.split,
        dry_run: a.dry_run,
    };
    let outcome = ops::export(&client, &loaded, run, &ev).await;
    // The plan is written whether the run went ahead or was refused for room.
    if let Some(path) = &a.plan_json {
        write_plan(path, &plan)?;
    }
    let summary = match outcome.map_err(|e| op_failure(e, a.no_cache))? {
        ops::Exported::Written(s) => *s,
        ops::Exported::Planned(p) => {
            ui.json(json!({"event": "planned", "planJson": a.plan_json}));
            ui.result(&format!(
                "dry run: nothing downloaded or written; {} blob(s) ({}) to fetch, up to {} to write{}",
                p.fetch_blobs,
                human_bytes(p.fetch_bytes),
                human_bytes(p.write_bytes),
                match &a.plan_json {
                    Some(f) => format!("; plan in {}", esc_path(f)),
                    None => String::new(),
                }
            ));
            return Ok(0);
        }
    };
    report_written(
        ui,
        &summary,
        signed_by.as_deref(),
        !a.since.is_empty(),
        started,
    );
    Ok(0)
}

fn compression(a: &ExportArgs) -> Compression {
    match a.compression {
        CompressionArg::Zstd => Compression::Zstd {
            level: a.level.unwrap_or(3).clamp(1, 19),
        },
        CompressionArg::Gzip => Compression::Gzip {
            level: a.level.unwrap_or(6).clamp(0, 9) as u32,
        },
        CompressionArg::None => Compression::None,
    }
}

/// The bundle written: its path, size, counts and checksum (and parts).
fn report_written(
    ui: &Arc<Ui>,
    summary: &ExportSummary,
    signed_by: Option<&str>,
    differential: bool,
    started: Instant,
) {
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
    if differential {
        ui.line(&format!(
            "differential: {} blob(s) ({}) left out, the other side has them",
            summary.base,
            human_bytes(summary.base_bytes)
        ));
    }
    if let Some(id) = signed_by {
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

/// `export --from`: verify the source (a bundle whole, with `--source-key`
/// and `--policy`; a store is re-hashed as it is read), select, write.
async fn export_from(a: ExportArgs, from: &Path, ui: &Arc<Ui>) -> CmdResult {
    use ferry_export::reexport::{self, ReexportRun};
    let started = Instant::now();
    let sign_key = a
        .sign_key
        .as_deref()
        .map(super::key::signing_key)
        .transpose()?;
    let signed_by = sign_key.as_ref().map(|k| k.key_id().to_string());
    let loaded = match &a.spec {
        Some(p) => Some(ops::load(p, &[]).map_err(|e| op_failure(e, false))?),
        None => None,
    };
    let selection = selection(&a, loaded.as_ref())?;
    // The store's lock is held until the bundle is written (no import
    // changes it meanwhile).
    let mut _store = None;
    let source = if from.is_dir() {
        let (store, source) = open_store(from, &selection)?;
        _store = Some(store);
        source
    } else {
        verified_bundle(&a, from, ui).await?
    };
    let ev = events(ui, Default::default());
    let run = ReexportRun {
        output: a.output.clone(),
        name: loaded.as_ref().map(|l| l.spec.name.clone()),
        selection,
        since: a.since.clone(),
        compression: compression(&a),
        sign_key,
        split: a.split,
        policy: loaded.map(|l| l.spec),
    };
    let summary = reexport::reexport(source, run, &ev)
        .await
        .map_err(reexport_failure)?;
    report_written(
        ui,
        &summary,
        signed_by.as_deref(),
        !a.since.is_empty(),
        started,
    );
    Ok(0)
}

/// What `-f` (its images) or `--lock` (its digests) names, else everything.
fn selection(
    a: &ExportArgs,
    loaded: Option<&ops::Loaded>,
) -> Result<ferry_export::reexport::Selection, Failure> {
    use ferry_export::reexport::Selection;
    if let Some(lock) = &a.lock {
        let lock = ferry_bundle::lock::Lock::load(lock).map_err(Failure::input)?;
        let pins = lock
            .images
            .iter()
            .chain(lock.artifacts.iter())
            .map(|l| (l.reference.clone(), l.digest.clone()))
            .collect();
        return Ok(Selection::Digests(pins));
    }
    let Some(l) = loaded else {
        return Ok(Selection::All);
    };
    let s = &l.spec;
    if !s.charts.is_empty() || !s.files.is_empty() || s.opensearch.is_some() {
        return Err(Failure::input(anyhow::anyhow!(
            "export --from -f selects the spec's images; charts, OpenSearch plugins and files are selected by digest with --lock"
        ))
        .hint("select them with the lock of the bundle: export --from SOURCE --lock LOCK"));
    }
    Ok(Selection::References(
        l.requests.iter().map(|r| r.reference.clone()).collect(),
    ))
}

/// A store: its entries, and the upstream name of each repository the
/// selection names (the store keeps `host-with-dashes/repository`).
fn open_store(
    dir: &Path,
    selection: &ferry_export::reexport::Selection,
) -> Result<
    (
        ferry_import::store::Store,
        ferry_export::reexport::FromSource,
    ),
    Failure,
> {
    use ferry_export::reexport::{FromSource, Selection, StoreEntry};
    if !dir.join("index.json").is_file() || !dir.join("blobs").join("sha256").is_dir() {
        return Err(Failure::input(anyhow::anyhow!(
            "`{}` is not a ferry store (no index.json and blobs/sha256)",
            dir.display()
        )));
    }
    let store = ferry_import::store::Store::open(dir).map_err(Failure::input)?;
    let entries = store
        .entries()
        .map_err(Failure::input)?
        .into_iter()
        .map(|e| {
            let origin = e.origin.unwrap_or_default();
            StoreEntry {
                repository: e.repository,
                tag: e.tag,
                digest: e.digest,
                media_type: e.media_type,
                source: origin.source,
                kind: origin.kind,
                path: origin.path,
            }
        })
        .collect();
    let wanted: Vec<ferry_bundle::Reference> = match selection {
        Selection::All => Vec::new(),
        Selection::References(r) => r.clone(),
        Selection::Digests(pins) => pins
            .iter()
            .filter_map(|(r, _)| ferry_bundle::Reference::parse(r).ok())
            .collect(),
    };
    let mapping = ferry_import::target::Mapping::default();
    let upstream = wanted
        .iter()
        .map(|r| {
            (
                mapping.map_path(r),
                format!("{}/{}", r.registry, r.repository),
            )
        })
        .collect();
    Ok((
        store,
        FromSource::Store {
            dir: dir.to_path_buf(),
            entries,
            upstream,
        },
    ))
}

/// A bundle, verified whole (as `ferry verify` does) before anything is taken from it.
async fn verified_bundle(
    a: &ExportArgs,
    from: &Path,
    ui: &Arc<Ui>,
) -> Result<ferry_export::reexport::FromSource, Failure> {
    let key = a
        .source_key
        .as_deref()
        .map(super::key::trusted_key)
        .transpose()?;
    let opts = ferry_import::verify::VerifyOptions {
        key,
        policy: a.policy.clone(),
    };
    let path = from.to_path_buf();
    let report =
        tokio::task::spawn_blocking(move || ferry_import::verify::verify(&path, &opts, None))
            .await
            .map_err(|e| Failure::env(anyhow::anyhow!("verify thread failed: {e}")))?
            .map_err(super::verify::verify_failure)?;
    ui.line(&format!(
        "verified {} ({} blobs{})",
        esc_path(from),
        report.read.blobs,
        match &report.signature {
            Some(v) => format!(", signed by {}", v.key_id),
            None => String::new(),
        }
    ));
    Ok(ferry_export::reexport::FromSource::Bundle {
        path: from.to_path_buf(),
        head: Box::new(report.head),
    })
}

/// A re-export that failed: exit 1 for a source that does not hold or
/// match what was asked (nothing was written), 2 for the environment.
fn reexport_failure(e: ferry_export::reexport::ReexportError) -> Failure {
    use ferry_export::reexport::ReexportError as R;
    match e {
        R::Io { .. } | R::Join(_) | R::Client(_) => Failure::env(e),
        R::Write(w) => op_failure(OpError::Write(w), true),
        e @ R::Tampered { .. } => Failure::input(e)
            .hint("the source was altered since it was written: nothing was written; re-import the bundle into the store, or carry the bundle again"),
        e @ R::Annotation { .. } => Failure::input(e)
            .hint("the store's index.json was edited: nothing was written; import the bundle into the store again to record every item's origin"),
        e @ R::Missing { .. } => Failure::input(e)
            .hint("nothing was written; `ferry inspect` lists what a bundle holds"),
        other => Failure::input(other),
    }
}
