//! `ferry prune`: plan (`--plan FILE`) or apply (`--apply FILE`); the work is
//! [`ferry_import::prune`].

use std::sync::Arc;

use anyhow::anyhow;
use serde_json::json;

use ferry_import::prune::{self, Mirror, PruneError, PrunePlan, PruneTarget};
use ferry_import::store::Store;
use ferry_import::target::Target;

use crate::cli::PruneArgs;
use crate::ui::{esc, human_bytes, Ui};
use crate::{net, CmdResult, Failure};

fn failure(e: PruneError) -> Failure {
    match e {
        PruneError::Read { .. } | PruneError::Write { .. } => Failure::env(e),
        PruneError::Changed { .. } | PruneError::ReceiptChanged { .. } => {
            Failure::input(e).hint("run `ferry prune --plan` again and review the new plan")
        }
        _ => Failure::input(e),
    }
}

pub async fn prune(a: PruneArgs, ui: &Arc<Ui>) -> CmdResult {
    let plan_in = match &a.apply {
        Some(p) => Some(prune::load_plan(p).map_err(failure)?),
        None => None,
    };
    let target = match (&plan_in, &a.registry, &a.store) {
        (Some(p), _, _) => p.target.clone(),
        (None, Some(r), _) => {
            let t = Target::parse(r).map_err(Failure::input)?;
            PruneTarget::Registry(t.host)
        }
        (None, None, Some(s)) => PruneTarget::Store(s.clone()),
        (None, None, None) => {
            return Err(Failure::input(anyhow!("--registry or --store is needed")))
        }
    };
    let plain = a
        .registry
        .as_deref()
        .and_then(|r| Target::parse(r).ok())
        .and_then(|t| t.plain_http);
    let creds = net::credentials(a.username.as_ref(), a.password_stdin, &net::PUSH_PASSWORD)?;
    let client;
    let store;
    let mirror = match &target {
        PruneTarget::Registry(host) => {
            client = net::client(
                &a.net,
                &Default::default(),
                &Default::default(),
                Some((host.as_str(), plain, creds)),
            )?;
            Mirror::Registry {
                client: &client,
                host: host.clone(),
            }
        }
        PruneTarget::Store(dir) => {
            // The store's lock: waits for a running import, keeps one out.
            store = Store::open(dir).map_err(Failure::env)?;
            Mirror::Store(&store)
        }
    };
    match plan_in {
        None => plan(&a, &mirror, ui).await,
        Some(p) => apply(&mirror, &p, ui).await,
    }
}

async fn plan(a: &PruneArgs, mirror: &Mirror<'_>, ui: &Arc<Ui>) -> CmdResult {
    let plan = prune::plan(mirror, &a.receipts, &a.keep)
        .await
        .map_err(failure)?;
    let Some(out) = &a.plan else {
        return Err(Failure::input(anyhow!("--plan FILE is needed")));
    };
    ferry_bundle::writer::write_atomic(out, &plan.to_json())
        .map_err(|e| Failure::env(anyhow!("failed to write the plan `{}`: {e}", out.display())))?;
    let repos: std::collections::BTreeSet<&str> =
        plan.delete.iter().map(|d| d.repository.as_str()).collect();
    ui.json(json!({
        "event": "prunePlan",
        "plan": out,
        "manifests": plan.delete.len(),
        "repositories": repos.len(),
        "blobsFreed": plan.blobs_freed,
        "bytesFreed": plan.bytes_freed,
    }));
    let mut text = format!(
        "prune plan for {}: {} manifest(s) in {} repository(ies) to delete, {} blob(s) ({}) freed; written to {}",
        esc(&plan.target.to_string()),
        plan.delete.len(),
        repos.len(),
        plan.blobs_freed,
        human_bytes(plan.bytes_freed),
        out.display()
    );
    for d in &plan.delete {
        let tags = if d.tags.is_empty() {
            String::new()
        } else {
            format!(" (tags {})", esc(&d.tags.join(", ")))
        };
        text.push_str(&format!(
            "\n  delete {}@{}{tags}",
            esc(&d.repository),
            d.digest
        ));
    }
    for (why, n) in &plan.kept {
        text.push_str(&format!("\n  keep {n} manifest(s): {why}"));
    }
    text.push_str(&format!(
        "\nreview it, then run `ferry prune --apply {}`",
        out.display()
    ));
    ui.result(&text);
    Ok(0)
}

async fn apply(mirror: &Mirror<'_>, plan: &PrunePlan, ui: &Arc<Ui>) -> CmdResult {
    let r = prune::apply(mirror, plan).await.map_err(failure)?;
    ui.json(json!({
        "event": "pruned",
        "deleted": r.deleted,
        "alreadyGone": r.already_gone,
        "blobsRemoved": r.blobs_removed,
        "bytesRemoved": r.bytes_removed,
        "receiptsWritten": r.receipts_written,
    }));
    let mut text = format!(
        "pruned {}: {} manifest(s) deleted, {} already gone; {} receipt(s) rewritten",
        esc(&plan.target.to_string()),
        r.deleted,
        r.already_gone,
        r.receipts_written
    );
    match &plan.target {
        PruneTarget::Store(_) => text.push_str(&format!(
            "; {} blob(s) removed ({})",
            r.blobs_removed,
            human_bytes(r.bytes_removed)
        )),
        PruneTarget::Registry(_) => text.push_str(&format!(
            "\nthe registry frees the blobs ({} planned) in its garbage collection: distribution `registry garbage-collect CONFIG` with the registry read-only or stopped (not `--delete-untagged`: distribution 2.8 then also deletes the children of multi-arch indexes), Harbor: Administration → Garbage Collection",
            human_bytes(plan.bytes_freed)
        )),
    }
    ui.result(&text);
    Ok(0)
}
