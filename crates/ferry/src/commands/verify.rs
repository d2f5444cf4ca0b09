//! `ferry verify` and `ferry inspect`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context};
use serde_json::json;

use ferry_bundle::manifest::{self, Parsed};
use ferry_bundle::meta::BlobMeta;
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, VisitResult, Visitor,
};
use ferry_bundle::Digest;

use crate::cli::{InspectArgs, VerifyArgs};
use crate::ui::{human_bytes, Ui};
use crate::{CmdResult, Failure};

struct Progress {
    ui: Arc<Ui>,
    head: Option<Head>,
    manifests: HashMap<Digest, Parsed>,
    stop_after_manifests: bool,
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
        if !self.stop_after_manifests {
            self.ui.start_bar("verify", head.meta.blob_bytes());
        }
        self.head = Some(head.clone());
        Ok(())
    }
    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult {
        self.ui.inc(blob.size);
        if let Ok(p) = manifest::parse(bytes, blob.media_type.as_deref()) {
            self.manifests.insert(blob.digest.clone(), p);
        }
        Ok(())
    }
    fn blob(&mut self, _blob: &BlobMeta, _data: &mut dyn Read) -> VisitResult {
        if self.stop_after_manifests {
            return Err(Box::new(Enough));
        }
        Ok(())
    }
    fn blob_end(&mut self, blob: &BlobMeta, _verdict: Result<(), &BlobFault>) -> VisitResult {
        self.ui.inc(blob.size);
        Ok(())
    }
}

fn open(path: &Path) -> Result<std::fs::File, Failure> {
    std::fs::File::open(path)
        .with_context(|| format!("failed to open bundle `{}`", path.display()))
        .map_err(Failure::input)
}

fn bundle_failure(path: &Path, e: BundleError) -> Failure {
    let truncated = e.is_truncation();
    let f = Failure::input(
        anyhow::Error::new(e).context(format!("bundle `{}` failed verification", path.display())),
    );
    if truncated {
        f.hint("the file is truncated: copy it again and compare with its .sha256 file")
    } else {
        f
    }
}

pub async fn verify(a: VerifyArgs, ui: &Arc<Ui>) -> CmdResult {
    let started = Instant::now();
    let file = open(&a.bundle)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let ui2 = ui.clone();
    let path = a.bundle.clone();
    let (report, head) = tokio::task::spawn_blocking(move || {
        let mut v = Progress {
            ui: ui2,
            head: None,
            manifests: HashMap::new(),
            stop_after_manifests: false,
        };
        let r = read_bundle(
            std::io::BufReader::with_capacity(1 << 20, file),
            ReadOptions::default(),
            &mut v,
        );
        r.map(|r| (r, v.head))
    })
    .await
    .map_err(|e| Failure::env(anyhow!("verify thread failed: {e}")))?
    .map_err(|e| bundle_failure(&path, e))?;
    ui.finish_bar();
    let head = head.ok_or_else(|| Failure::input(anyhow!("bundle has no head")))?;
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
        "seconds": secs,
    }));
    ui.result(&format!(
        "bundle {} is intact: {} ({}), written by {}\n  \
         checked: the layout header; {} tar entries, all regular files at allowed paths, no duplicates; \
         bundle.json pins index.json ({}); {} blobs ({}) hashed and sized; \
         the graph of {} item(s) is complete{}{}\n  \
         {} in {:.1}s ({}/s)",
        a.bundle.display(),
        meta.name,
        human_bytes(size),
        meta.tool,
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
        if head.signature.is_some() {
            "signature present (not checked: no --key)"
        } else {
            "not signed"
        },
        secs,
        human_bytes((report.blob_bytes as f64 / secs.max(0.001)) as u64),
    ));
    Ok(0)
}

pub async fn inspect(a: InspectArgs, ui: &Arc<Ui>) -> CmdResult {
    let file = open(&a.bundle)?;
    let ui2 = ui.clone();
    let path = a.bundle.clone();
    let (head, manifests) = tokio::task::spawn_blocking(move || {
        let mut v = Progress {
            ui: ui2,
            head: None,
            manifests: HashMap::new(),
            stop_after_manifests: true,
        };
        match read_bundle(
            std::io::BufReader::new(file),
            ReadOptions::default(),
            &mut v,
        ) {
            Ok(_) => Ok((v.head, v.manifests)),
            Err(BundleError::Visitor(e)) if e.is::<Enough>() => Ok((v.head, v.manifests)),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(|e| Failure::env(anyhow!("inspect thread failed: {e}")))?
    .map_err(|e| bundle_failure(&path, e))?;
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
                json!({"kind": i.kind.as_str(), "ref": i.reference, "digest": i.digest, "mediaType": i.media_type, "platforms": i.platforms, "size": size})
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
        }));
        return Ok(0);
    }
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = format!(
        "bundle {} (written by {}, format {})\n",
        head.meta.name, head.meta.tool, head.meta.format_version
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
            i.reference,
            format!("{}…", &i.digest.to_string()[..19]),
            human_bytes(*size),
            if i.platforms.is_empty() {
                "-".to_string()
            } else {
                i.platforms.join(",")
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
        if head.signature.is_some() {
            ", signed"
        } else {
            ""
        }
    ));
    ui.result(&out);
    Ok(0)
}
