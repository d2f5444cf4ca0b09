//! `ferry verify` and `ferry inspect`.
//!
//! The operations are [`ferry_import::verify`]; this renders their reports
//! and errors (escaping what the bundle says).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use serde_json::json;

use ferry_bundle::parts::{LocatedPart, PartsError};
use ferry_bundle::reader::Head;
use ferry_bundle::sign::Verified;
use ferry_import::verify::{GivenPolicy, Progress, VerifyError, VerifyOptions};

use crate::cli::{InspectArgs, VerifyArgs};
use crate::ui::{esc, esc_path, human_bytes, Ui};
use crate::{CmdResult, Failure};

/// A split bundle's manifest or parts are bad: exit 1, with what to re-copy.
fn parts_failure(e: PartsError) -> Failure {
    let hint = match &e {
        PartsError::Parts { .. } => Some(
            "copy the part(s) named above again from the original, then re-run (each part's sha256 is in the parts manifest)",
        ),
        PartsError::NoManifest { .. } => {
            Some("the parts manifest (`*.parts.json`) travels with the parts")
        }
        _ => None,
    };
    let f = Failure::input(e);
    match hint {
        Some(h) => f.hint(h),
        None => f,
    }
}

/// A bundle that failed verification: exit 1, and what to do.
pub(crate) fn verify_failure(e: VerifyError) -> Failure {
    match e {
        VerifyError::Parts(e) => parts_failure(e),
        e @ VerifyError::Signature { .. } => Failure::input(e).hint(
            "do not import this bundle: it was not signed with the key you trust, or was altered after signing; get a fresh copy from the export side",
        ),
        e @ VerifyError::Bundle { .. } if e.is_truncation() => Failure::input(e)
            .hint("the file is truncated: copy it again and compare with its .sha256 file"),
        VerifyError::Content { path, failures } => {
            let list: Vec<String> = failures
                .iter()
                .map(|(r, why)| format!("{}: {}", esc(r), esc(why)))
                .collect();
            Failure::input(anyhow!(
                "bundle `{}` failed verification: {} item(s) fail the checks export made:\n{}",
                esc_path(&path),
                list.len(),
                list.join("\n")
            ))
            .hint("do not load this bundle: its content differs from what was checked at export")
        }
        VerifyError::Policy(e) => policy_failure(e),
        other => Failure::input(other),
    }
}

/// `ferry verify PART` on one part without the whole bundle (a USB stick
/// before it is carried): its size and sha256 against the parts manifest.
fn verify_one_part(
    path: &Path,
    located: &LocatedPart,
    missing: &[String],
    ui: &Arc<Ui>,
) -> CmdResult {
    let started = Instant::now();
    let check = located.verify().map_err(parts_failure)?;
    let secs = started.elapsed().as_secs_f64();
    let m = &located.manifest;
    ui.json(json!({
        "event": "part-verified",
        "path": path,
        "manifest": located.manifest_path,
        "bundle": m.bundle,
        "name": m.name,
        "part": check.number,
        "parts": check.count,
        "size": check.entry.size,
        "sha256": check.entry.sha256.hex(),
        "missingParts": missing,
        "seconds": secs,
    }));
    let whole = if missing.is_empty() {
        format!(
            "to verify the whole bundle: ferry verify {}",
            located.manifest_path.display()
        )
    } else {
        format!(
            "the bundle as a whole is not verified: {} other part(s) are not beside it; run `ferry verify {}` once all {} parts are together",
            missing.len(),
            located.manifest_path.display(),
            check.count
        )
    };
    ui.result(&format!(
        "part {} of {} ({}, {}) is intact: size and sha256 match {} (bundle {}, written by {})
  {}",
        check.number,
        check.count,
        esc_path(path),
        human_bytes(check.entry.size),
        esc_path(&located.manifest_path),
        esc(&m.name),
        esc(&m.tool),
        esc(&whole),
    ));
    Ok(0)
}

/// `verified 3, allowed unsigned 1, warned 0`.
pub fn verdict_counts(v: &[ferry_bundle::meta::ItemVerdict]) -> String {
    use ferry_trust::Decision;
    let n = |f: fn(&Decision) -> bool| v.iter().filter(|x| f(&x.decision)).count();
    format!(
        "{} verified, {} allowed unsigned, {} warned",
        n(|d| matches!(d, Decision::Verified(_))),
        n(|d| matches!(d, Decision::AllowedUnsigned { .. })),
        n(|d| matches!(d, Decision::Warned(_))),
    )
}

/// Re-verifies the bundle's image signatures offline (`--policy FILE`, else
/// the policy it carries, if any); returns the lines to print. A refusal
/// is exit 1 and nothing else happens.
/// A refusal by the signature policy: exit 1, and what to do.
fn policy_failure(e: ferry_import::trust::RecheckError) -> Failure {
    match e {
        ferry_import::trust::RecheckError::Refused(_) => Failure::input(e).hint(
            "do not load this bundle: its image signatures do not satisfy the policy (see docs/verification.md)",
        ),
        other => Failure::input(other),
    }
}

/// Renders what the offline signature check decided: the JSON event, the
/// warnings, and the lines of the human summary.
fn policy_lines(r: &ferry_import::trust::TrustReport, ui: &Arc<Ui>) -> String {
    use ferry_import::trust::{describe, PolicySource};
    let source = match &r.source {
        PolicySource::Given(p) => format!("--policy {}", esc_path(p)),
        PolicySource::Carried => {
            "the policy the bundle carries (trust it only with --key)".to_string()
        }
    };
    ui.json(json!({
        "event": "signaturePolicy",
        "verdicts": r.verdicts,
    }));
    let mut out = format!(
        "image signatures re-verified offline against {source}: {}",
        verdict_counts(&r.verdicts)
    );
    for v in &r.verdicts {
        out.push_str(&format!(
            "\n    {}: {}",
            esc(&v.reference),
            esc(&describe(v))
        ));
    }
    for (reference, w) in &r.warnings {
        ui.line(&format!(
            "warning: signature policy (warn): {}: {}",
            esc(reference),
            esc(&w.to_string())
        ));
    }
    out
}

/// Import's offline signature check, before anything lands: one read of
/// the bundle when it carries a policy or `--policy` is given (import's own
/// read uploads as it goes, so the check comes first); the lines to print.
pub async fn recheck_policy(
    bundle: &Path,
    policy: Option<&Path>,
    key: Option<&Path>,
    ui: &Arc<Ui>,
) -> Result<Option<String>, Failure> {
    let carried = ferry_bundle::head::read_head(bundle)
        .map(|h| h.meta.verification.is_some())
        .unwrap_or(false);
    if policy.is_none() && !carried {
        return Ok(None);
    }
    let given = policy
        .map(GivenPolicy::load)
        .transpose()
        .map_err(Failure::input)?;
    let key = key.map(super::key::trusted_key).transpose()?;
    let bundle = bundle.to_path_buf();
    let report = tokio::task::spawn_blocking(move || {
        ferry_import::trust::recheck(
            &bundle,
            given.as_ref().map(GivenPolicy::as_parts),
            key.as_ref(),
        )
    })
    .await
    .map_err(|e| Failure::env(anyhow!("the signature check stopped: {e}")))?
    .map_err(policy_failure)?;
    Ok(report.map(|r| policy_lines(&r, ui)))
}

pub async fn verify(a: VerifyArgs, ui: &Arc<Ui>) -> CmdResult {
    let started = Instant::now();
    let key = a.key.as_deref().map(super::key::trusted_key).transpose()?;
    let key_path = a.key.clone();
    // One part alone (a USB stick before it is carried): check that part.
    if let Some((located, missing)) =
        ferry_import::verify::lone_part(&a.bundle).map_err(parts_failure)?
    {
        if a.key.is_some() {
            ui.line(
                "note: --key is checked on the whole bundle (all parts together), not on one part",
            );
        }
        return verify_one_part(&a.bundle, &located, &missing, ui);
    }
    let shared = ui.clone();
    let progress: ferry_import::verify::ProgressFn = Arc::new(move |p| match p {
        Progress::Start { bytes } => shared.start_bar("verify", bytes),
        Progress::Read { bytes } => shared.inc(bytes),
    });
    let opts = VerifyOptions {
        key,
        policy: a.policy.clone(),
    };
    let path = a.bundle.clone();
    let r = tokio::task::spawn_blocking(move || {
        ferry_import::verify::verify(&path, &opts, Some(progress))
    })
    .await
    .map_err(|e| Failure::env(anyhow!("verify thread failed: {e}")))?
    .map_err(verify_failure)?;
    ui.finish_bar();
    let (report, head, verified, split, size) =
        (&r.read, &r.head, r.signature.as_ref(), &r.split, r.size);
    let policy_lines = r.policy.as_ref().map(|p| policy_lines(p, ui));
    let secs = started.elapsed().as_secs_f64();
    let meta = &head.meta;
    ui.json(json!({
        "event": "verified",
        "path": a.bundle,
        "name": meta.name,
        "items": meta.items.len(),
        "blobs": report.blobs,
        "blobBytes": report.blob_bytes,
        "entries": report.entries,
        "absentChildren": meta.absent.len(),
        "baseBlobs": meta.base.len(),
        "signed": head.signature.is_some(),
        "signedBy": signer_json(head, verified),
        "signatureChecked": verified.is_some(),
        "parts": split.as_ref().map(|(_, n)| n),
        "seconds": secs,
    }));
    let parts_line = match &split {
        Some((manifest, n)) => format!(
            "\n  {n} part(s) listed in {}: each present, sized and hashed as listed, read in sequence",
            esc_path(manifest)
        ),
        None => String::new(),
    };
    ui.result(&format!(
        "bundle {} is intact: {} ({}), written by {}{}\n  \
         checked: the layout header; {} tar entries, all regular files at allowed paths, no duplicates; \
         bundle.json pins index.json ({}); {} blobs ({}) hashed and sized; \
         the graph of {} item(s) is complete{}{}\n  \
         {} in {:.1}s ({}/s)",
        esc_path(&a.bundle),
        esc(&meta.name),
        human_bytes(size),
        esc(&meta.tool),
        parts_line,
        report.entries,
        meta.index.digest,
        report.blobs,
        human_bytes(report.blob_bytes),
        meta.items.len(),
        if meta.absent.is_empty() {
            String::new()
        } else {
            format!(" ({} platform manifest(s) left out by the export filter)", meta.absent.len())
        },
        if meta.base.is_empty() {
            String::new()
        } else {
            format!(" ({} base blob(s) expected at the target)", meta.base.len())
        },
        signature_line(head, verified, key_path.as_deref()),
        secs,
        human_bytes((report.blob_bytes as f64 / secs.max(0.001)) as u64),
    ));
    if let Some(lines) = policy_lines {
        ui.result(&format!("  {lines}"));
    }
    Ok(0)
}

pub async fn inspect(a: InspectArgs, ui: &Arc<Ui>) -> CmdResult {
    let path = a.bundle.clone();
    let inspection = tokio::task::spawn_blocking(move || ferry_import::verify::inspect(&path))
        .await
        .map_err(|e| Failure::env(anyhow!("inspect thread failed: {e}")))?
        .map_err(verify_failure)?;
    let head = &inspection.head;
    let rows = &inspection.items;
    let total: u64 = head.meta.blob_bytes();
    if ui.mode == crate::ui::Mode::Json {
        let items: Vec<_> = rows
            .iter()
            .map(|(i, size)| {
                json!({"kind": i.kind.as_str(), "ref": i.reference, "digest": i.digest, "mediaType": i.media_type, "platforms": i.platforms, "size": size, "subject": i.subject})
            })
            .collect();
        ui.json(json!({
            "event": "inspect",
            "name": head.meta.name,
            "tool": head.meta.tool,
            "formatVersion": head.meta.format_version,
            "items": items,
            "blobs": head.meta.blobs.len(),
            "blobBytes": total,
            "absentChildren": head.meta.absent.len(),
            "baseBlobs": head.meta.base.len(),
            "signed": head.signature.is_some(),
            "signedBy": signer_json(head, None),
            "origin": head.meta.origin,
        }));
        return Ok(0);
    }
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = format!(
        "bundle {} (written by {}, format {})\n",
        esc(&head.meta.name),
        esc(&head.meta.tool),
        head.meta.format_version
    );
    out.push_str(&format!(
        "{:<8} {:<60} {:<20} {:>10}  platforms\n",
        "KIND", "REFERENCE", "DIGEST", "SIZE"
    ));
    for (i, size) in rows {
        *by_kind.entry(i.kind.as_str()).or_default() += 1;
        out.push_str(&format!(
            "{:<8} {:<60} {:<20} {:>10}  {}\n",
            i.kind.as_str(),
            esc(&i.reference),
            format!("{}…", &i.digest.to_string()[..19]),
            human_bytes(*size),
            match (&i.subject, i.platforms.is_empty()) {
                (Some(subject), _) => format!("provenance of {}…", &subject.to_string()[..19]),
                (None, true) => "-".to_string(),
                (None, false) => esc(&i.platforms.join(",")).into_owned(),
            }
        ));
    }
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
    out.push_str(&format!(
        "total: {} item(s) ({}), {} blobs, {} of content{}",
        rows.len(),
        kinds.join(", "),
        head.meta.blobs.len(),
        human_bytes(total),
        match &head.signature {
            Some(sig) => format!("; {}", esc(&super::key::unchecked(sig))),
            None => "; not signed".to_string(),
        }
    ));
    if let Some(o) = &head.meta.origin {
        out.push_str(&format!(
            "\nre-exported from {} `{}`{}",
            o.kind.as_str(),
            esc(&o.name),
            match &o.sha256 {
                Some(d) => format!(" (sha256 {})", d.hex()),
                None => String::new(),
            }
        ));
    }
    if let Some(v) = &head.meta.verification {
        out.push_str(&format!(
            "\nimage signatures as recorded at export (not re-checked here; `ferry verify --key … [--policy …]` re-verifies them offline): {}",
            verdict_counts(&v.verdicts)
        ));
        for verdict in &v.verdicts {
            out.push_str(&format!(
                "\n  {}: {}",
                esc(&verdict.reference),
                esc(&ferry_import::trust::describe(verdict))
            ));
        }
    }
    ui.result(&out);
    Ok(0)
}

/// The key id a bundle's signature names (verified or not), for JSON output.
fn signer_json(head: &Head, verified: Option<&Verified>) -> Option<String> {
    match (verified, &head.signature) {
        (Some(v), _) => Some(v.key_id.to_string()),
        (None, Some(sig)) => ferry_bundle::sign::signature_key_id(sig)
            .ok()
            .map(|id| id.to_string()),
        (None, None) => None,
    }
}

/// What `ferry verify` says about the signature.
fn signature_line(head: &Head, verified: Option<&Verified>, key: Option<&Path>) -> String {
    match (verified, &head.signature) {
        (Some(v), _) => format!(
            "signed by key id {} and verified with --key {} (trusted comment: {}); checked",
            v.key_id,
            key.map(esc_path).unwrap_or_default(),
            esc(&v.trusted_comment)
        ),
        (None, Some(sig)) => format!("{}; checked", esc(&super::key::unchecked(sig))),
        (None, None) => "not signed; checked".to_string(),
    }
}
