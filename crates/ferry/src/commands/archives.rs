//! `ferry import BUNDLE --archives DIR`: images as archives for the first
//! node (the work is [`ferry_import::archives`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use ferry_bundle::sign::TrustedKey;
use ferry_import::archives::{write_archives, ArchiveError, ArchiveOptions};

use crate::cli::ImportArgs;
use crate::ui::{esc, esc_path, human_bytes, Ui};
use crate::{CmdResult, Failure};

pub async fn write(
    a: &ImportArgs,
    dir: &Path,
    key: Option<TrustedKey>,
    ui: &Arc<Ui>,
    started: Instant,
) -> CmdResult {
    let opts = ArchiveOptions {
        bundle: a.bundle.clone(),
        dir: dir.to_path_buf(),
        platforms: a.archive_platforms.clone(),
        key,
    };
    let written = tokio::task::spawn_blocking(move || write_archives(&opts))
        .await
        .map_err(|e| Failure::env(anyhow::anyhow!("the archive writer stopped: {e}")))?
        .map_err(|e| match e {
            ArchiveError::Write { .. } => Failure::env(e),
            ArchiveError::Signature(_) => Failure::input(e).hint(
                "do not load this bundle: it was not signed with the key you trust, or was altered after signing",
            ),
            _ => Failure::input(e).hint("nothing was written; `ferry verify` checks the bundle"),
        })?;
    let mut out = format!(
        "wrote {} archive(s) into {} in {:.1}s:",
        written.len(),
        esc_path(dir),
        started.elapsed().as_secs_f64()
    );
    for w in &written {
        let file = w
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let platforms = if w.platforms.is_empty() {
            String::new()
        } else {
            format!(" [{}]", esc(&w.platforms.join(", ")))
        };
        out.push_str(&format!(
            "\n  {}  {} @ {} ({}){platforms}",
            esc(&file),
            esc(&w.reference),
            w.digest,
            human_bytes(w.size)
        ));
        ui.json(json!({
            "event": "archive",
            "file": w.path,
            "ref": w.reference,
            "digest": w.digest.to_string(),
            "size": w.size,
            "platforms": w.platforms,
        }));
    }
    out.push_str(
        "\nload on a node: `ctr -n k8s.io images import FILE` (containerd), copy into /var/lib/rancher/k3s/agent/images/ (k3s; rke2: /var/lib/rancher/rke2/agent/images/), or `podman load -i FILE`",
    );
    ui.result(&out);
    Ok(0)
}
