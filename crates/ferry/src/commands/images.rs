//! `ferry images`: discover image references.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use serde_json::json;

use crate::cli::{ImagesArgs, ImagesSource};
use crate::ui::{Mode, Ui};
use crate::{CmdResult, Failure};

pub async fn images(a: ImagesArgs, ui: &Arc<Ui>) -> CmdResult {
    match a.source {
        ImagesSource::FromManifests { files } => {
            let mut all = BTreeSet::new();
            for f in &files {
                let refs = if f.as_os_str() == "-" {
                    let mut text = String::new();
                    std::io::stdin().read_to_string(&mut text).map_err(|e| {
                        Failure::input(anyhow!("failed to read standard input: {e}"))
                    })?;
                    ferry_bundle::discover::images_in_yaml(&text, Path::new("<stdin>"))
                } else {
                    ferry_bundle::discover::images_in_file(f)
                }
                .map_err(Failure::input)?;
                all.extend(refs.into_iter().map(|r| r.to_string()));
            }
            if ui.mode == Mode::Json {
                ui.json(json!({"event": "images", "refs": all}));
            } else {
                // One reference per line on stdout, even with --quiet: this is the output.
                for r in &all {
                    crate::ui::stdout_line(r.as_bytes());
                }
            }
            Ok(0)
        }
        ImagesSource::FromChart { chart } => from_chart(&chart, ui),
    }
}

/// The images a chart archive references: one per line on stdout (a `list:`
/// file), values that are not references as warnings on stderr.
fn from_chart(path: &Path, ui: &Ui) -> CmdResult {
    let tgz = std::fs::read(path)
        .map_err(|e| Failure::input(anyhow!("failed to read chart `{}`: {e}", path.display())))?;
    let chart = ferry_bundle::chart::read_chart(&tgz, &path.display().to_string())
        .map_err(Failure::input)?;
    let found = chart.images();
    if ui.mode == Mode::Json {
        let skipped: Vec<_> = found
            .skipped
            .iter()
            .map(|s| json!({"value": s.value, "location": s.location, "reason": s.reason}))
            .collect();
        ui.json(json!({
            "event": "images",
            "chart": chart.name(),
            "version": chart.version(),
            "refs": found.images,
            "skipped": skipped,
        }));
    } else {
        for s in &found.skipped {
            ui.line(&format!("warning: skipped {s}"));
        }
        // One reference per line on stdout, even with --quiet: this is the output.
        for r in &found.images {
            crate::ui::stdout_line(r.to_string().as_bytes());
        }
    }
    Ok(0)
}
