//! The export and lock operations, whole: what `ferry export` and `ferry
//! lock` run, callable without the CLI (cargo's `ops` layer is the model).
//! Options in, a summary or a typed error out, progress through [`Events`];
//! nothing is printed.
//!
//! ```text
//! load (spec → requests) ─▶ collect (sources) ─▶ resolve ─▶ provenance
//!   ─▶ lock (write or check --locked) ─▶ signature policy (trust)
//!   ─▶ base (--since) ─▶ plan ─▶ preflight (counts, room; --dry-run stops here) ─▶ write
//! ```

use std::path::{Path, PathBuf};

use ferry_bundle::lock::{Lock, LockError};
use ferry_bundle::meta::Kind;
use ferry_bundle::spec::{validate_platform, ImageRequest, Spec, SpecError};
use ferry_bundle::writer::Compression;
use ferry_bundle::Reference;
use ferry_registry::Client;

use crate::preflight::Preflight;
use crate::since::SinceError;
use crate::sources::{CollectError, CollectOptions};
use crate::trust::PolicyCheckError;
use crate::{Event, Events, ExportError, ExportOptions, ExportSummary, ResolveError, Resolved};

/// Why an export or lock operation failed. Each variant keeps the phase's
/// own error, so a caller can tell bad input from a failing network
/// (`is_environment` on the inner errors).
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The spec does not load.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A `--platform` is not `os/arch[/variant]`.
    #[error("--platform: {0}")]
    Platform(ferry_bundle::spec::ValueError),
    /// The spec carries nothing.
    #[error("spec `{}` lists nothing to carry", .0.display())]
    Empty(PathBuf),
    /// Charts, drivers, plugins or files could not be collected.
    #[error(transparent)]
    Collect(CollectError),
    /// Images could not be resolved.
    #[error(transparent)]
    Resolve(ResolveError),
    /// Provenance (signatures, attestations, referrers) could not be discovered.
    #[error(transparent)]
    Provenance(ResolveError),
    /// The lock file does not load.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// `--locked` and the lock file does not exist.
    #[error("--locked: lock file `{}` does not exist", .lock.display())]
    LockMissing {
        /// The lock file.
        lock: PathBuf,
        /// The spec (for the command that creates the lock).
        spec: PathBuf,
    },
    /// `--locked` and the spec resolves differently.
    #[error("--locked: the spec resolves differently from `{}`:\n  {}", .lock.display(), .drift.join("\n  "))]
    Drift {
        /// The lock file.
        lock: PathBuf,
        /// One line per difference.
        drift: Vec<String>,
    },
    /// The lock file cannot be written.
    #[error("failed to write lock file `{}`", .path.display())]
    LockWrite {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--no-cache`: the scratch directory cannot be made.
    #[error("failed to create a scratch directory in `{}`", .dir.display())]
    Scratch {
        /// Where.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The spec's `verify:` section cannot be used.
    #[error(transparent)]
    PolicyLoad(PolicyCheckError),
    /// The signature policy refused an item, or a signature could not be fetched.
    #[error(transparent)]
    Policy(PolicyCheckError),
    /// A `--since` file cannot be used.
    #[error(transparent)]
    Since(#[from] SinceError),
    /// Fetching or writing the bundle failed.
    #[error(transparent)]
    Write(#[from] ExportError),
}

/// A spec loaded and turned into image requests: the first phase, before
/// a client exists (the spec names the registries' settings).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The spec.
    pub spec: Spec,
    /// Its images (plus Falco artifacts, which travel whole).
    pub requests: Vec<ImageRequest>,
}

/// Loads the spec at `spec_path` and lists its image requests for `platforms`.
pub fn load(spec_path: &Path, platforms: &[String]) -> Result<Loaded, OpError> {
    let spec = Spec::load(spec_path)?;
    for p in platforms {
        validate_platform(p).map_err(OpError::Platform)?;
    }
    let from_manifests = |p: &Path| -> Result<Vec<Reference>, SpecError> {
        ferry_bundle::discover::images_in_file(p).map_err(|e| SpecError::Invalid {
            path: spec_path.to_path_buf(),
            message: format!("fromManifests: {e}"),
        })
    };
    let mut requests = spec.image_requests(platforms, &from_manifests)?;
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
        return Err(OpError::Empty(spec_path.to_path_buf()));
    }
    Ok(Loaded { spec, requests })
}

/// How to resolve (shared by export and lock).
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Where charts and files fetched to resolve them go.
    pub cache_dir: PathBuf,
    /// Concurrent fetches.
    pub jobs: usize,
    /// A Falco driver missing upstream is a warning.
    pub allow_missing_drivers: bool,
    /// Discover provenance (signatures, attestations, referrers).
    pub referrers: bool,
}

/// Resolves everything the spec names: charts, drivers, plugins and files
/// first (charts may add images), then the images, then (with `referrers`)
/// the provenance of every registry item.
pub async fn resolve_all(
    client: &Client,
    loaded: &Loaded,
    lock: Option<&Lock>,
    opts: &ResolveOptions,
    ev: &Events,
) -> Result<Resolved, OpError> {
    let collect_opts = CollectOptions {
        cache_dir: opts.cache_dir.clone(),
        jobs: opts.jobs,
        allow_missing_drivers: opts.allow_missing_drivers,
    };
    let collected = crate::sources::collect(client, &loaded.spec, lock, &collect_opts, ev)
        .await
        .map_err(OpError::Collect)?;
    for u in &collected.missing_drivers {
        ev(Event::Warning {
            message: format!("no prebuilt Falco driver upstream: {u}"),
        });
    }
    let mut all: Vec<ImageRequest> = loaded.requests.clone();
    for r in collected.chart_images {
        if !all.iter().any(|q| q.reference == r.reference) {
            all.push(r);
        }
    }
    all.sort();
    let mut resolved = crate::resolve(client, &all, lock, opts.jobs, ev)
        .await
        .map_err(OpError::Resolve)?;
    resolved.images.extend(collected.items);
    if opts.referrers {
        let found = crate::provenance::discover(client, &resolved.images, lock, opts.jobs, ev)
            .await
            .map_err(OpError::Provenance)?;
        resolved.images.extend(found);
    }
    resolved.images.sort_by_key(|a| a.name());
    Ok(resolved)
}

/// Writes a lock file (atomically).
pub fn write_lock(path: &Path, lock: &Lock) -> Result<(), OpError> {
    ferry_bundle::writer::write_atomic(path, &lock.to_json()).map_err(|source| OpError::LockWrite {
        path: path.to_path_buf(),
        source,
    })
}

/// `ferry lock`: resolves the spec and writes the lock to `output`.
pub async fn lock(
    client: &Client,
    loaded: &Loaded,
    opts: &ResolveOptions,
    output: &Path,
    ev: &Events,
) -> Result<Lock, OpError> {
    let resolved = resolve_all(client, loaded, None, opts, ev).await?;
    let lock = resolved.lock();
    write_lock(output, &lock)?;
    Ok(lock)
}

/// The cache when none is given: `$XDG_CACHE_HOME/ferry`, else `~/.cache/ferry`.
pub fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("ferry");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("ferry"),
        None => std::env::temp_dir().join("ferry-cache"),
    }
}

/// What `ferry export` does, as options.
#[derive(Debug, Clone)]
pub struct ExportRun {
    /// Spec file (named in `--locked` hints).
    pub spec_path: PathBuf,
    /// Output bundle file.
    pub output: PathBuf,
    /// Lock file: pins tags; created or updated unless `locked`.
    pub lock: Option<PathBuf>,
    /// Refuse if anything resolves differently from the lock.
    pub locked: bool,
    /// Blob cache (`None`: [`default_cache`]).
    pub cache: Option<PathBuf>,
    /// Keep no cache: stream blobs into the bundle, resolve into a scratch
    /// directory beside the output (removed when done).
    pub no_cache: bool,
    /// Concurrent fetches.
    pub jobs: usize,
    /// A Falco driver missing upstream is a warning.
    pub allow_missing_drivers: bool,
    /// Discover provenance.
    pub referrers: bool,
    /// `--since`: receipts or locks of the destinations.
    pub since: Vec<PathBuf>,
    /// Outer compression.
    pub compression: Compression,
    /// Sign `ferry/bundle.json` with this key.
    pub sign_key: Option<ferry_bundle::sign::SigningKey>,
    /// Cut into parts of this many bytes.
    pub split: Option<u64>,
    /// Resolve and count, fetch and write nothing (not even the lock).
    pub dry_run: bool,
}

/// What [`export`] did.
#[derive(Debug, Clone)]
pub enum Exported {
    /// `dry_run`: the plan, nothing fetched or written.
    Planned(Preflight),
    /// The bundle was written.
    Written(Box<ExportSummary>),
}

/// `ferry export`: resolve (against the lock), check the signature policy,
/// compute the base, count the plan and check the room (a
/// [`Event::Preflight`]), then fetch and write the bundle.
pub async fn export(
    client: &Client,
    loaded: &Loaded,
    run: ExportRun,
    ev: &Events,
) -> Result<Exported, OpError> {
    let scratch = if run.no_cache {
        Some(scratch_dir(&run.output)?)
    } else {
        None
    };
    let cache = match &scratch {
        Some(d) => d.path().to_path_buf(),
        None => run.cache.clone().unwrap_or_else(default_cache),
    };
    let opts = ResolveOptions {
        cache_dir: cache.clone(),
        jobs: run.jobs,
        allow_missing_drivers: run.allow_missing_drivers,
        referrers: run.referrers,
    };
    let resolved = resolve_locked(client, loaded, &run, &opts, ev).await?;
    let verification = signature_policy(client, &loaded.spec, &resolved, ev).await?;
    let base = crate::since::load(&run.since, client).await?;
    let opts = ExportOptions {
        output: run.output,
        compression: run.compression,
        cache_dir: cache,
        stream: run.no_cache,
        jobs: run.jobs,
        name: loaded.spec.name.clone(),
        base,
        sign_key: run.sign_key,
        split: run.split,
        verification,
        origin: None,
    };
    if run.dry_run {
        let plan = crate::preflight(&resolved, &opts)?;
        ev(Event::Preflight(plan.clone()));
        return Ok(Exported::Planned(plan));
    }
    let summary = crate::export(client, resolved, &opts, ev).await?;
    drop(scratch);
    Ok(Exported::Written(Box::new(summary)))
}

/// `--no-cache`: a temporary directory beside the bundle for what
/// resolution fetches (charts, files).
fn scratch_dir(output: &Path) -> Result<tempfile::TempDir, OpError> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".ferry-export-")
        .tempdir_in(&dir)
        .map_err(|source| OpError::Scratch { dir, source })
}

/// Resolves against the lock file: with `locked`, a fresh resolution that
/// must match it; otherwise the lock pins what it names and is rewritten.
async fn resolve_locked(
    client: &Client,
    loaded: &Loaded,
    run: &ExportRun,
    opts: &ResolveOptions,
    ev: &Events,
) -> Result<Resolved, OpError> {
    let existing = match &run.lock {
        Some(p) if p.exists() => Some(Lock::load(p)?),
        Some(p) if run.locked => {
            return Err(OpError::LockMissing {
                lock: p.clone(),
                spec: run.spec_path.clone(),
            })
        }
        _ => None,
    };
    if run.locked {
        let fresh = resolve_all(client, loaded, None, opts, ev).await?;
        let drift = existing
            .as_ref()
            .map(|l| l.drift(&fresh.lock()))
            .unwrap_or_default();
        if !drift.is_empty() {
            return Err(OpError::Drift {
                lock: run.lock.clone().unwrap_or_default(),
                drift,
            });
        }
        return Ok(fresh);
    }
    let r = resolve_all(client, loaded, existing.as_ref(), opts, ev).await?;
    if let Some(p) = run.lock.as_ref().filter(|_| !run.dry_run) {
        write_lock(p, &r.lock())?;
    }
    Ok(r)
}

/// The spec's signature policy: every matching item verified before a byte
/// of the bundle is written; the verdicts for `bundle.json`.
async fn signature_policy(
    client: &Client,
    spec: &Spec,
    resolved: &Resolved,
    ev: &Events,
) -> Result<Option<ferry_bundle::meta::Verification>, OpError> {
    let policy = crate::trust::load_policy(spec).map_err(OpError::PolicyLoad)?;
    let (Some(p), Some(v)) = (&policy, &spec.verify) else {
        return Ok(None);
    };
    let out = crate::trust::check(client, resolved, p, v, None)
        .await
        .map_err(OpError::Policy)?;
    for (r, w) in &out.warnings {
        ev(Event::Warning {
            message: format!("signature policy (warn): {r}: {w}"),
        });
    }
    ev(Event::PolicyChecked {
        verdicts: out.verification.verdicts.clone(),
    });
    Ok(Some(out.verification))
}
