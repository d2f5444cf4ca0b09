//! `ferry import`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use serde_json::json;

use ferry_import::target::{MapRule, Mapping, Target};
use ferry_import::{Event, Events, ImportError};

use crate::cli::ImportArgs;
use crate::ui::{esc, esc_path, human_bytes, Ui};
use crate::{net, CmdResult, Failure, EXIT_BAD_INPUT, EXIT_PARTIAL};

fn events(ui: &Arc<Ui>) -> Events {
    let shared = ui.clone();
    Arc::new(move |e: Event| match e {
        Event::Planned {
            items,
            upload,
            upload_bytes,
            present,
        } => {
            shared.line(&format!(
                "plan: {items} item(s); {upload} blob(s) to upload ({}), {present} already at the target",
                human_bytes(upload_bytes)
            ));
            shared.json(json!({"event": "planned", "items": items, "uploadBlobs": upload, "uploadBytes": upload_bytes, "presentBlobs": present}));
            shared.start_bar("upload", upload_bytes);
        }
        Event::UploadProgress { bytes } => shared.inc(bytes),
        Event::CommitStarted { items } => {
            shared.json(json!({"event": "commit-start", "items": items}));
        }
        Event::Committed { reference, target } => {
            shared.line(&format!("loaded {} -> {}", esc(&reference), esc(&target)));
            shared.json(json!({"event": "loaded", "ref": reference, "target": target}));
        }
        Event::Warning { message } => {
            shared.line(&format!("warning: {}", esc(&message)));
            shared.json(json!({"event": "warning", "message": message}));
        }
    })
}

/// Where an import goes: the opened store, the registry target, what the
/// summary calls it, where the emitted configuration points, the file
/// target.
struct Targets {
    store: Option<Arc<ferry_import::store::Store>>,
    target: Option<Target>,
    label: String,
    emit_target: Option<Target>,
    files: Option<ferry_import::files::FileTarget>,
}

impl Targets {
    fn from_args(a: &ImportArgs) -> Result<Targets, Failure> {
        // A dry run opens (creates, locks) no store.
        let store = match &a.store {
            Some(dir) if !a.dry_run => Some(Arc::new(
                ferry_import::store::Store::open(dir).map_err(Failure::env)?,
            )),
            _ => None,
        };
        let target = match (&a.registry, &a.store) {
            (Some(r), _) => Some(Target::parse(r).map_err(Failure::input)?),
            (None, Some(_)) => Some(Target::store()),
            (None, None) => None,
        };
        let label = match (&a.registry, &a.files, &a.store) {
            (_, _, Some(s)) => format!("the store {}", s.display()),
            (Some(r), Some(f), _) => format!("{r} and {f}"),
            (Some(r), None, _) => r.clone(),
            (None, Some(f), _) => f.clone(),
            (None, None, None) => String::new(),
        };
        // With --store, the emitted configuration points at where `ferry serve` will be.
        let emit_target = match (&a.store, &a.mirror_url) {
            (Some(_), Some(u)) => Some(
                Target::parse(u).map_err(|e| Failure::input(anyhow!("--mirror-url `{u}`: {e}")))?,
            ),
            (Some(_), None) => None,
            (None, _) => target.clone(),
        };
        Ok(Targets {
            store,
            target,
            label,
            emit_target,
            files: file_target(a)?,
        })
    }
}

/// `--files` (or the store's file tree).
fn file_target(a: &ImportArgs) -> Result<Option<ferry_import::files::FileTarget>, Failure> {
    let spec = match &a.store {
        Some(dir) => Some(dir.join("files").display().to_string()),
        None => a.files.clone(),
    };
    let Some(spec) = spec else {
        return Ok(None);
    };
    ferry_import::files::FileTarget::new(
        &spec,
        ferry_import::files::FileTargetOptions {
            username: a.files_username.clone(),
            password: std::env::var("FERRY_FILES_PASSWORD").ok(),
            ca_file: a.files_ca.clone(),
            insecure: a.net.insecure,
            attempts: a.net.attempts.max(1),
        },
    )
    .map(Some)
    .map_err(Failure::input)
}

/// `--map`, `--flatten`, `--max-path-depth`.
fn mapping(a: &ImportArgs) -> Result<Mapping, Failure> {
    let mut rules = Vec::new();
    for m in &a.maps {
        rules.push(MapRule::parse(m).map_err(Failure::input)?);
    }
    Ok(Mapping {
        rules,
        flatten: a.flatten,
        max_depth: a.max_path_depth,
    })
}

/// An import error as the operator reads it: exit code and hint.
fn failure(e: ImportError) -> Failure {
    let env = e.is_environment();
    let hint = match &e {
        ImportError::Unreachable { .. } => {
            Some("check the address, --plain-http / --ca, and that the registry is up")
        }
        ImportError::Unauthorized { .. } => Some(
            "check --username and FERRY_PASSWORD (or --password-stdin) for this registry",
        ),
        ImportError::PushRefused { .. } => Some(
            "check --username/FERRY_PASSWORD and that this account may push to that repository (or --map it elsewhere)",
        ),
        ImportError::NoRoom { .. } => Some("free space where the store is, or import into a larger one"),
        ImportError::Bundle { .. } => Some("copy the bundle again and check it with `ferry verify`"),
        ImportError::Signature { .. } => Some(
            "do not load this bundle: it was not signed with the key you trust, or was altered after signing; get a fresh copy from the export side",
        ),
        ImportError::Parts {
            source: ferry_bundle::parts::PartsError::Parts { .. },
            ..
        } => Some(
            "copy the part(s) named above again from the original, check with `ferry verify`, then re-run",
        ),
        ImportError::MissingBase(_) => Some(
            "import the bundle this delta was made against first (or export a full bundle without --since)",
        ),
        _ => None,
    };
    let f = if env {
        Failure::env(e)
    } else {
        Failure::input(e)
    };
    match hint {
        Some(h) => f.hint(h),
        None => f,
    }
}

pub async fn import(a: ImportArgs, ui: &Arc<Ui>) -> CmdResult {
    let started = Instant::now();
    // The trusted key is loaded before anything else is opened or created.
    let key = a.key.as_deref().map(super::key::trusted_key).transpose()?;
    // The image signature policy, re-verified offline before anything
    // lands (a refusal is exit 1 with nothing written).
    if let Some(lines) =
        super::verify::recheck_policy(&a.bundle, a.policy.as_deref(), a.key.as_deref(), ui).await?
    {
        ui.line(&lines);
    }
    if let Some(dir) = &a.archives {
        return super::archives::write(&a, dir, key, ui, started).await;
    }
    let t = Targets::from_args(&a)?;
    let mapping = mapping(&a)?;
    let creds = net::credentials(a.username.as_ref(), a.password_stdin, &net::PUSH_PASSWORD)?;
    let client = net::client(
        &a.net,
        &Default::default(),
        &Default::default(),
        t.target
            .as_ref()
            .filter(|_| a.store.is_none())
            .map(|t| (t.host.as_str(), t.plain_http, creds)),
    )?;
    let opts = ferry_import::ImportOptions {
        bundle: a.bundle.clone(),
        target: t.target.clone(),
        files: t.files.clone(),
        store: t.store.clone(),
        store_dir: a.store.clone().filter(|_| a.dry_run),
        mapping: mapping.clone(),
        dry_run: a.dry_run,
        jobs: a.net.jobs,
        chunk_size: a.chunk_mib.max(1) * 1024 * 1024,
        key,
        referrers: !a.no_referrers,
    };
    let report = ferry_import::import(&client, &opts, &events(ui))
        .await
        .map_err(failure)?;
    ui.finish_bar();
    show_signature(&report, ui);
    show_preflight(&report, ui);
    if let Some(path) = &a.plan_json {
        write_plan_json(path, &report)?;
    }
    if report.dry_run {
        return dry_run(&a, &t, &mapping, &client, &report, ui);
    }
    let receipt = write_receipt(&a, &report)?;
    let secs = started.elapsed().as_secs_f64();
    ui.json(json!({
        "event": "imported",
        "loaded": report.loaded,
        "failed": report.failed,
        "blobsUploaded": report.blobs_uploaded,
        "bytesUploaded": report.bytes_uploaded,
        "readers": report.readers,
        "blobsLaned": report.blobs_laned,
        "blobsMounted": report.blobs_mounted,
        "blobsPresent": report.blobs_present,
        "manifestsPushed": report.manifests_pushed,
        "manifestsPresent": report.manifests_present,
        "badBlobs": report.bad_blobs,
        "signature": report.signature,
        "skipped": report.skipped,
        "filesWritten": report.files_written,
        "filesPresent": report.files_present,
        "preflight": report.preflight,
        "receipt": receipt,
        "seconds": secs,
    }));
    let mut out = summary(&a, &t.label, &report, secs);
    if let Some(r) = receipt {
        out.push_str(&format!("\nreceipt written to {}", esc_path(r)));
    }
    if report.failed.is_empty() {
        if let Some(list) = emit_config(&a, t.emit_target.as_ref(), &mapping, &client, ui)? {
            out.push_str(&list);
        }
    } else if a.emit_config.is_some() {
        ui.line("not writing --emit-config: some items did not land; re-run the import");
    }
    ui.result(&out);
    exit_code(&report)
}

fn show_signature(report: &ferry_import::ImportReport, ui: &Arc<Ui>) {
    match &report.signature {
        Some(s) if s.verified => ui.line(&format!(
            "signature verified: ferry/bundle.json is signed by key id {}",
            s.key_id
        )),
        Some(s) => ui.line(&format!(
            "bundle signed by key id {}, not checked: pass --key",
            s.key_id
        )),
        None => {}
    }
}

/// What the preflight checked before the first upload.
fn show_preflight(report: &ferry_import::ImportReport, ui: &Arc<Ui>) {
    let Some(p) = &report.preflight else {
        return;
    };
    ui.json(json!({"event": "preflight", "preflight": p}));
    if p.repositories > 0 {
        ui.line(&format!(
            "preflight: {} target repositor{} accept a push",
            p.repositories,
            if p.repositories == 1 { "y" } else { "ies" }
        ));
    }
    if let Some(r) = &p.room {
        ui.line(&format!(
            "preflight: the store `{}` needs {}, {} available",
            esc_path(&r.path),
            human_bytes(r.needed),
            human_bytes(r.available)
        ));
    }
}

/// `--plan-json FILE`: the plan and the preflight, through the serializer.
fn write_plan_json(
    path: &std::path::Path,
    report: &ferry_import::ImportReport,
) -> Result<(), Failure> {
    let doc = json!({
        "dryRun": report.dry_run,
        "items": report.plan,
        "preflight": report.preflight,
    });
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| Failure::env(anyhow!(e)))?;
    ferry_bundle::writer::write_atomic(path, &bytes).map_err(|e| {
        Failure::env(anyhow::Error::new(e).context(format!("failed to write `{}`", path.display())))
    })
}

/// A dry run's report: what would land where.
fn dry_run(
    a: &ImportArgs,
    t: &Targets,
    mapping: &Mapping,
    client: &ferry_registry::Client,
    report: &ferry_import::ImportReport,
    ui: &Arc<Ui>,
) -> CmdResult {
    ui.json(json!({"event": "plan", "items": report.plan}));
    let mut out = format!(
        "dry run: nothing pushed; {} item(s) would land at {}:\n",
        report.plan.len(),
        t.label
    );
    for p in &report.plan {
        out.push_str(&format!(
            "  {} -> {} ({} blob(s) to upload)\n",
            esc(&p.source),
            esc(&p.target),
            p.upload_blobs
        ));
    }
    out.push_str("run `ferry verify` to check every byte before the real import");
    if let Some(list) = emit_config(a, t.emit_target.as_ref(), mapping, client, ui)? {
        out.push_str(&list);
    }
    ui.result(&out);
    Ok(0)
}

/// `--receipt FILE`, unless nothing landed (exit 1 writes no receipt).
fn write_receipt<'a>(
    a: &'a ImportArgs,
    report: &ferry_import::ImportReport,
) -> Result<Option<&'a std::path::PathBuf>, Failure> {
    let nothing_landed = report.loaded.is_empty() && !report.failed.is_empty();
    let receipt = a.receipt.as_ref().filter(|_| !nothing_landed);
    if let Some(path) = receipt {
        ferry_bundle::writer::write_atomic(path, &report.receipt.to_json()).map_err(|e| {
            Failure::env(
                anyhow::Error::new(e)
                    .context(format!("failed to write receipt `{}`", path.display())),
            )
        })?;
    }
    Ok(receipt)
}

/// The summary: counts, then one line per item.
fn summary(a: &ImportArgs, label: &str, report: &ferry_import::ImportReport, secs: f64) -> String {
    let mut out = format!(
        "imported {} of {} item(s) into {} in {:.1}s: {} blob(s) uploaded ({}), {} mounted, {} manifest(s) pushed, {} already present",
        report.loaded.len(),
        report.loaded.len() + report.failed.len(),
        label,
        secs,
        report.blobs_uploaded,
        human_bytes(report.bytes_uploaded),
        report.blobs_mounted,
        report.manifests_pushed,
        report.manifests_present
    );
    if a.files.is_some() {
        out.push_str(&format!(
            "; {} file(s) written, {} already there",
            report.files_written, report.files_present
        ));
    }
    for l in &report.loaded {
        out.push_str(&format!(
            "\n  ok      {} -> {}",
            esc(&l.source),
            esc(&l.target)
        ));
        if let Some(n) = &l.note {
            out.push_str(&format!("\n          note: {}", esc(n)));
        }
    }
    for sk in &report.skipped {
        out.push_str(&format!(
            "\n  skipped {}: {}",
            esc(&sk.source),
            esc(sk.note.as_deref().unwrap_or_default())
        ));
    }
    for f in &report.failed {
        out.push_str(&format!(
            "\n  FAILED  {}: {}",
            esc(&f.source),
            esc(f.note.as_deref().unwrap_or_default())
        ));
    }
    out
}

/// 0 when everything landed; 3 when some did; 1 when none did.
fn exit_code(report: &ferry_import::ImportReport) -> CmdResult {
    if report.failed.is_empty() {
        return Ok(0);
    }
    for f in &report.failed {
        eprintln!(
            "error: {} did not land: {}",
            esc(&f.source),
            esc(f.note.as_deref().unwrap_or_default())
        );
    }
    Ok(if report.loaded.is_empty() {
        EXIT_BAD_INPUT
    } else {
        EXIT_PARTIAL
    })
}

/// `--emit-config DIR`: writes the client configuration for the bundle's
/// content and returns the list of written files for the summary (`None`
/// without `--emit-config`). `target` is `None` when there is no registry
/// (only the file-server parts are written then).
fn emit_config(
    a: &ImportArgs,
    target: Option<&Target>,
    mapping: &Mapping,
    client: &ferry_registry::Client,
    ui: &Arc<Ui>,
) -> Result<Option<String>, Failure> {
    use ferry_bundle::head::{read_head, HeadError};
    use ferry_import::emit::{emit, is_loopback_host, EmitError, EmitOptions};

    let Some(dir) = &a.emit_config else {
        return Ok(None);
    };
    let head = read_head(&a.bundle).map_err(|e| match e {
        HeadError::Open { .. } => Failure::env(e),
        _ => Failure::input(e),
    })?;
    // The scheme the nodes use is the one the import used: given
    // (`http://`, `https://`, `--plain-http`), else what the client found out
    // for a loopback host (HTTPS first); a `--mirror-url` loopback host
    // without a scheme is `ferry serve`'s plain HTTP default.
    let plain_http = target.is_some_and(|t| {
        t.plain_http
            .or_else(|| {
                (a.mirror_url.is_none())
                    .then(|| client.uses_plain_http(&t.host))
                    .flatten()
            })
            .unwrap_or_else(|| {
                a.net.plain_http.iter().any(|h| h == &t.host) || is_loopback_host(&t.host)
            })
    });
    // An http(s) --files target is also where clients find the files, unless told otherwise.
    let files_url = a
        .files_url
        .clone()
        .or_else(|| {
            a.files
                .as_ref()
                .filter(|f| f.starts_with("http://") || f.starts_with("https://"))
                .cloned()
        })
        .or_else(|| a.mirror_url.clone());
    let client_cert = match a.emit_client.as_slice() {
        [cert, key] => Some((cert.clone(), key.clone())),
        _ => None,
    };
    let auth = net::credentials(
        a.emit_username.as_ref(),
        a.emit_password_stdin,
        &net::PasswordFlags {
            user_flag: "--emit-username",
            stdin_flag: "--emit-password-stdin",
            env: "FERRY_EMIT_PASSWORD",
        },
    )?
    .map(|c| ferry_import::runtimes::PullCredential {
        username: c.username,
        password: c.password,
    });
    let opts = EmitOptions {
        dir: dir.clone(),
        target: target.cloned(),
        mapping: mapping.clone(),
        files_url,
        files_ip: a.files_ip,
        files_port: a.files_port,
        default_host: a.emit_default,
        ca: a.emit_ca.clone(),
        client: client_cert,
        skip_verify: a.emit_skip_verify,
        plain_http,
        auth,
        // The CA this import trusted goes to the nodes unless --emit-ca names
        // where the nodes already have it.
        carry_ca: a.net.ca.clone(),
    };
    let written = emit(&opts, &head.meta).map_err(|e| match e {
        EmitError::Write { .. } => Failure::env(e),
        EmitError::NeedsFilesUrl { .. } => Failure::input(e)
            .hint("--files-url is the file server's base URL as the cluster reaches it"),
        _ => Failure::input(e),
    })?;
    let rel: Vec<String> = written
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
        .collect();
    ui.json(json!({"event": "emitted", "dir": dir, "files": rel}));
    let mut out = format!(
        "\nclient configuration written to {} (see its README.md):",
        esc_path(dir)
    );
    for r in &rel {
        out.push_str(&format!("\n  {}", esc(r)));
    }
    Ok(Some(out))
}
