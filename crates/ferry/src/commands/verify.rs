//! `ferry verify` and `ferry inspect`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use serde_json::json;

use ferry_bundle::manifest::{self, Parsed};
use ferry_bundle::meta::BlobMeta;
use ferry_bundle::parts::{
    locate_part, open_bundle, BundlePath, BundleSource, LocatedPart, PartsError,
};
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, VisitResult, Visitor,
};
use ferry_bundle::sign::{SignError, TrustedKey, Verified};
use ferry_bundle::Digest;

use crate::cli::{InspectArgs, VerifyArgs};
use crate::ui::{esc, esc_path, human_bytes, Ui};
use crate::{CmdResult, Failure};

struct Progress {
    ui: Arc<Ui>,
    head: Option<Head>,
    manifests: HashMap<Digest, Parsed>,
    stop_after_manifests: bool,
    /// `--key`: the signature must verify before anything past the head is read.
    key: Option<TrustedKey>,
    /// The signature that verified with `key`.
    verified: Option<Verified>,
    /// Import's content re-checks (chart archives, plugin sha512), planned
    /// once the manifests are in.
    content: Option<ferry_import::content::ContentChecks>,
    /// What the offline signature check needs, from this same read.
    signatures: ferry_import::trust::SignatureCollector,
}

#[derive(Debug)]
struct Enough;
impl std::fmt::Display for Enough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped after the manifests")
    }
}
impl std::error::Error for Enough {}

impl Visitor for Progress {
    fn head(&mut self, head: &Head) -> VisitResult {
        if let Some(key) = &self.key {
            self.verified = Some(key.verify(&head.meta_bytes, head.signature.as_deref())?);
        }
        if !self.stop_after_manifests {
            self.ui.start_bar("verify", head.meta.blob_bytes());
        }
        self.signatures.head(&head.meta);
        self.head = Some(head.clone());
        Ok(())
    }
    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult {
        self.ui.inc(blob.size);
        self.signatures.manifest(blob, bytes);
        if let Ok(p) = manifest::parse(bytes, blob.media_type.as_deref()) {
            self.manifests.insert(blob.digest.clone(), p);
        }
        Ok(())
    }
    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        if self.stop_after_manifests {
            return Err(Box::new(Enough));
        }
        if self.content.is_none() {
            if let Some(h) = &self.head {
                self.content = Some(ferry_import::content::ContentChecks::plan(
                    &h.meta.items,
                    &self.manifests,
                ));
            }
        }
        if self.signatures.wants(&blob.digest) {
            // Small signature blobs: read once, handed to both checks.
            let mut bytes = Vec::with_capacity(blob.size as usize);
            data.take(ferry_trust::MAX_ARTIFACT_BLOB)
                .read_to_end(&mut bytes)?;
            if let Some(c) = &mut self.content {
                c.consume(blob, &mut std::io::Cursor::new(&bytes))?;
            }
            self.signatures.blob(blob, bytes);
        } else if let Some(c) = &mut self.content {
            c.consume(blob, data)?;
        }
        Ok(())
    }
    fn blob_end(&mut self, blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        self.ui.inc(blob.size);
        if verdict.is_err() {
            self.signatures.blob_failed(&blob.digest);
        }
        Ok(())
    }
}

fn open(path: &Path) -> Result<BundleSource, Failure> {
    open_bundle(path).map_err(parts_failure)
}

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

/// Why a read of the bundle stream failed: the bundle, or a part it came in.
enum ReadFailure {
    Bundle(BundleError),
    Parts(PartsError),
}

impl ReadFailure {
    /// After `read_bundle` failed on `src`: a bad part explains it better
    /// than what the bad bytes decoded to.
    fn of(src: &mut BundleSource, e: BundleError) -> ReadFailure {
        match src.diagnose() {
            Some(p) => ReadFailure::Parts(p),
            None => ReadFailure::Bundle(e),
        }
    }

    fn failure(self, path: &Path) -> Failure {
        match self {
            ReadFailure::Bundle(e) => bundle_failure(path, e),
            ReadFailure::Parts(e) => parts_failure(e),
        }
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

fn bundle_failure(path: &Path, e: BundleError) -> Failure {
    let truncated = e.is_truncation();
    let context = format!("bundle `{}` failed verification", path.display());
    // A refused signature is the cause itself (not wrapped twice).
    let e = match e {
        BundleError::Visitor(v) => match v.downcast::<SignError>() {
            Ok(sig) => {
                return Failure::input(anyhow::Error::new(*sig).context(context)).hint(
                    "do not import this bundle: it was not signed with the key you trust, or was altered after signing; get a fresh copy from the export side",
                )
            }
            Err(v) => BundleError::Visitor(v),
        },
        other => other,
    };
    let f = Failure::input(anyhow::Error::new(e).context(context));
    if truncated {
        f.hint("the file is truncated: copy it again and compare with its .sha256 file")
    } else {
        f
    }
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

/// The policy given with `--policy FILE` (its `verify:` section and the
/// directory its paths are relative to).
type GivenPolicy = Option<(ferry_trust::VerifySpec, std::path::PathBuf)>;

fn load_given(policy: Option<&Path>) -> Result<GivenPolicy, Failure> {
    policy
        .map(ferry_import::trust::load_policy_file)
        .transpose()
        .map_err(Failure::input)
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
    let given = load_given(policy)?;
    let key = key.map(super::key::trusted_key).transpose()?;
    let (bundle, file) = (bundle.to_path_buf(), policy.map(Path::to_path_buf));
    let report = tokio::task::spawn_blocking(move || {
        let g = given
            .as_ref()
            .zip(file.as_ref())
            .map(|((spec, base), f)| (spec, base.as_path(), f.as_path()));
        ferry_import::trust::recheck(&bundle, g, key.as_ref())
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
    // A part other than the first, or a first part with none of the others
    // beside it (a USB stick before it is carried): check that part alone.
    // A first part with some of the others is the bundle, and a missing
    // one is named.
    if let BundlePath::Part { .. } = BundlePath::of(&a.bundle) {
        let located = locate_part(&a.bundle).map_err(parts_failure)?;
        let missing = located.missing_others();
        let alone = !missing.is_empty() && missing.len() + 1 == located.manifest.parts.len();
        if located.index != 0 || alone {
            if a.key.is_some() {
                ui.line("note: --key is checked on the whole bundle (all parts together), not on one part");
            }
            return verify_one_part(&a.bundle, &located, &missing, ui);
        }
    }
    let mut src = open(&a.bundle)?;
    let size = src.size();
    let split = src.parts().map(|(p, m)| (p.to_path_buf(), m.parts.len()));
    let ui2 = ui.clone();
    let path = a.bundle.clone();
    // A bad --policy file is refused before the bundle is read.
    let given = load_given(a.policy.as_deref())?;
    let (report, head, verified, content_failures, signatures) =
        tokio::task::spawn_blocking(move || {
            let mut v = Progress {
                ui: ui2,
                head: None,
                manifests: HashMap::new(),
                stop_after_manifests: false,
                key,
                verified: None,
                content: None,
                signatures: Default::default(),
            };
            let r = read_bundle(
                std::io::BufReader::with_capacity(1 << 20, &mut src),
                ReadOptions::default(),
                &mut v,
            );
            match r {
                // The tar ends before the stream does: check the parts to their last byte.
                Ok(r) => match src.finish() {
                    Ok(()) => Ok((
                        r,
                        v.head,
                        v.verified,
                        v.content.map(|c| c.finish()).unwrap_or_default(),
                        v.signatures,
                    )),
                    Err(e) => Err(ReadFailure::Parts(e)),
                },
                Err(e) => Err(ReadFailure::of(&mut src, e)),
            }
        })
        .await
        .map_err(|e| Failure::env(anyhow!("verify thread failed: {e}")))?
        .map_err(|e| e.failure(&path))?;
    ui.finish_bar();
    let head = head.ok_or_else(|| Failure::input(anyhow!("bundle has no head")))?;
    // What import re-checks (chart archives, plugin sha512), verify refuses
    // first, with import's words.
    if !content_failures.is_empty() {
        let list: Vec<String> = content_failures
            .iter()
            .map(|(r, why)| format!("{}: {}", esc(r), esc(why)))
            .collect();
        return Err(Failure::input(anyhow!(
            "bundle `{}` failed verification: {} item(s) fail the checks export made:\n{}",
            esc_path(&a.bundle),
            list.len(),
            list.join("\n")
        ))
        .hint("do not load this bundle: its content differs from what was checked at export"));
    }
    // The image signatures, re-verified offline from what this read kept.
    let policy_lines = signatures
        .decide(
            given
                .as_ref()
                .zip(a.policy.as_deref())
                .map(|((spec, base), f)| (spec, base.as_path(), f)),
        )
        .map_err(policy_failure)?
        .map(|r| policy_lines(&r, ui));
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
        "signedBy": signer_json(&head, verified.as_ref()),
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
        signature_line(&head, verified.as_ref(), key_path.as_deref()),
        secs,
        human_bytes((report.blob_bytes as f64 / secs.max(0.001)) as u64),
    ));
    if let Some(lines) = policy_lines {
        ui.result(&format!("  {lines}"));
    }
    Ok(0)
}

pub async fn inspect(a: InspectArgs, ui: &Arc<Ui>) -> CmdResult {
    let mut src = open(&a.bundle)?;
    let ui2 = ui.clone();
    let path = a.bundle.clone();
    let (head, manifests) = tokio::task::spawn_blocking(move || {
        let mut v = Progress {
            ui: ui2,
            head: None,
            manifests: HashMap::new(),
            stop_after_manifests: true,
            key: None,
            verified: None,
            content: None,
            signatures: Default::default(),
        };
        match read_bundle(
            std::io::BufReader::new(&mut src),
            ReadOptions::default(),
            &mut v,
        ) {
            Ok(_) => Ok((v.head, v.manifests)),
            Err(BundleError::Visitor(e)) if e.is::<Enough>() => Ok((v.head, v.manifests)),
            Err(e) => Err(ReadFailure::of(&mut src, e)),
        }
    })
    .await
    .map_err(|e| Failure::env(anyhow!("inspect thread failed: {e}")))?
    .map_err(|e| e.failure(&path))?;
    let head = head.ok_or_else(|| Failure::input(anyhow!("bundle has no head")))?;
    let sizes: HashMap<&Digest, u64> = head
        .meta
        .blobs
        .iter()
        .map(|b| (&b.digest, b.size))
        .collect();
    let absent: HashSet<(&Digest, &Digest)> = head
        .meta
        .absent
        .iter()
        .map(|x| (&x.parent, &x.digest))
        .collect();
    let mut rows = Vec::new();
    for item in &head.meta.items {
        // Unique bytes reachable from the item.
        let mut seen = HashSet::new();
        let mut stack = vec![item.digest.clone()];
        let mut total = 0u64;
        while let Some(d) = stack.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            total += sizes.get(&d).copied().unwrap_or(0);
            if let Some(p) = manifests.get(&d) {
                for c in &p.manifests {
                    if !absent.contains(&(&d, &c.digest)) {
                        stack.push(c.digest.clone());
                    }
                }
                for b in p.blobs() {
                    stack.push(b.digest.clone());
                }
            }
        }
        rows.push((item, total));
    }
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
            "signedBy": signer_json(&head, None),
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
    for (i, size) in &rows {
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
