//! `cargo xtask bench --sizes … --refs …`: the scaling curve of issue 17.
//!
//! One point per data-set size (GB of unique compressed layers, the
//! realistic set of [`ferry_testkit::dataset`]) and per reference count (the
//! many-small-images set, [`Dataset::load_or_generate_many`]). At each
//! point, `--runs` times: `ferry export --no-cache`, `ferry verify` and
//! `ferry import` into a fresh registry, each with `--json` so that the
//! time of each phase comes from ferry's own events, stamped as they arrive
//! on stdout (the wall clock is measured around the command and peak RSS
//! with `/usr/bin/time -v`):
//!
//! - export: resolve (start → `fetch-start`), fetch (→ `write-start`),
//!   write (→ exit);
//! - import: verify + plan (start → `planned`), upload (→ `commit-start`),
//!   commit (→ exit);
//! - verify: its wall time.
//!
//! Beside each command, its floor on the same bytes: `dd … conv=fdatasync`
//! of the bundle's size (export), every blob served to curl 4 at a time
//! (export's requests), the raw ingest of every blob by keep-alive POST +
//! PUT with 4 workers and the images' ingest (the same uploads into the
//! images' repositories, plus their mounts and manifest PUTs) (import),
//! `openssl dgst -sha256` and `zstd -d` of the bundle (verify; the bundle is
//! read once before verify, untimed, so that all three read it from
//! memory). Per reference, the wall time and the floor of the requests each
//! reference needs are reported in ms.
//!
//! With `--skopeo`, at the reference counts up to 2,000, the skopeo path
//! beside them at each run (the main
//! bench's: `skopeo copy --all` per reference, one after another, into an
//! `oci:` layout, then `tar | zstd -T0`; `zstd -d | tar -x`, then `skopeo
//! copy --all --preserve-digests` per reference into a fresh registry),
//! its ms per reference and the ≥ 8× export / ≥ 6× import targets.
//!
//! Once per point, one more export and import go through a counting proxy
//! ([`FaultProxy`], not timed): the requests each reference sent, by kind,
//! beside the fewest the references need ([`request_floors`]).
//!
//! At the sized points, who is busy during export (ferry's CPU and the
//! source registry's) and verify, beside the CPU `dd` needs for the same
//! bytes: what the shortest export is on this machine's cores.
//!
//! The report (`--curve-out`, default `target/bench/curve.md`) holds the
//! curve, the phase times and the targets table: met or not, by how much
//! and, where measured, why.
//! A point's bundle is kept under `target/bench/curve/` when it is small
//! (the many-small-images points), to measure or profile import by hand.

mod commands;
mod point;
mod report;
mod requests;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferry_testkit::dataset::{Dataset, DatasetOptions, GENERATOR_VERSION};
use ferry_testkit::registry::Registry;

use crate::bench::{
    image_ingest_once, loadavg, output, process_cpu, raw_ingest_once, skopeo_export_script,
    skopeo_import_script, spec_text, utc_now,
};
use commands::{export_args, floor, floor_cpu, import_args, q, run_events, warm};
use point::Point;
use report::render;
use requests::count_requests;

/// What the curve was asked for.
pub struct CurveOptions {
    /// Data-set sizes in GB (the realistic set).
    pub sizes: Vec<f64>,
    /// Reference counts (the many-small-images set).
    pub refs: Vec<usize>,
    /// Runs per point (medians reported).
    pub runs: usize,
    /// The Markdown report.
    pub out: PathBuf,
    /// Also time the skopeo path at each count of references up to
    /// [`SKOPEO_REFS_MAX`] (one `skopeo copy` per reference, one after
    /// another, each way: minutes at 2,000 references).
    pub skopeo: bool,
}

impl CurveOptions {
    /// Refuses what the curve cannot measure, before anything is built.
    pub fn check(&self) -> Result<()> {
        if let Some(bad) = self.sizes.iter().find(|&&gb| !(gb > 0.0 && gb <= 64.0)) {
            bail!("--sizes must be in (0, 64] GB (got {bad})");
        }
        Ok(())
    }
}

/// `--skopeo` times the skopeo path at reference counts up to this one
/// (the targets' point is 2,000).
const SKOPEO_REFS_MAX: usize = 2000;

/// Bundles up to this size stay under `target/bench/curve/` after their
/// point (`<n>refs.tar.zst`); larger ones are removed.
const KEEP_BUNDLE_MAX: u64 = 256 << 20;

/// Measures one point on `set`.
// Long on purpose: one point's runs in the order they go (export beside its
// floors, verify beside its floors, import beside the ingest floor, the
// skopeo path), then the counted pass; each step is a call.
fn measure(
    ferry: &str,
    set: &Dataset,
    label: &str,
    sized: bool,
    opts: &CurveOptions,
    work: &Path,
    logs: &Path,
) -> Result<Point> {
    let runs = opts.runs.max(1);
    let source = Registry::start()?;
    set.populate_registry_storage(&source.storage_dir())?;
    let host = source.host();
    let spec = work.join(format!("{label}.yaml"));
    std::fs::write(&spec, spec_text(set, &host))?;
    // Without an Accept list distribution answers 404 for OCI manifests.
    let mut curl = String::from(
        "header = \"Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
         application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json\"\n",
    );
    for i in &set.images {
        for m in i.manifests() {
            let _ = writeln!(
                curl,
                "url = \"http://{host}/v2/{}/manifests/{}\"\noutput = \"/dev/null\"",
                i.repository, m.digest
            );
        }
        for b in &i.blobs {
            let _ = writeln!(
                curl,
                "url = \"http://{host}/v2/{}/blobs/{b}\"\noutput = \"/dev/null\"",
                i.repository
            );
        }
    }
    let curl_cfg = work.join(format!("{label}.curl"));
    std::fs::write(&curl_cfg, curl)?;
    let bundle = work.join(format!("{label}.tar.zst"));
    let dd = work.join("dd.bin");
    let mut pt = Point {
        label: label.to_string(),
        refs: set.images.len(),
        blobs: set.blobs.len(),
        bytes: set.blob_bytes(),
        ..Point::default()
    };
    let source_cpu = || source.pid().and_then(process_cpu).unwrap_or(0.0);
    // The skopeo path at 10,000 references would take about an hour a run.
    let skopeo = opts.skopeo && !sized && set.images.len() <= SKOPEO_REFS_MAX;
    for run in 0..runs {
        let _ = std::fs::remove_file(&bundle);
        let before = source_cpu();
        pt.export.push(run_events(
            logs,
            &format!("{label}-export-{run}"),
            ferry,
            &export_args(&spec, &bundle, &[]),
        )?);
        pt.export_registry_cpu.push(source_cpu() - before);
        pt.bundle = std::fs::metadata(&bundle).map(|m| m.len()).unwrap_or(0);
        let blocks = pt.bundle.div_ceil(4 << 20).max(1);
        let (dd_wall, dd_cpu) = floor_cpu(
            logs,
            &format!("{label}-floor-dd-{run}"),
            &format!(
                "dd if=/dev/zero of={} bs=4M count={blocks} conv=fdatasync\nrm -f {}",
                q(&dd),
                q(&dd)
            ),
        )?;
        pt.dd.push(dd_wall);
        pt.dd_cpu.push(dd_cpu);
        pt.fetch.push(floor(
            logs,
            &format!("{label}-floor-fetch-{run}"),
            &format!("curl -sSf -Z --parallel-max 4 -K {}", q(&curl_cfg)),
        )?);
        // dd's zeros and the registry serving every blob have pushed the
        // bundle out of the page cache at the larger sizes: read it once,
        // untimed, so that verify and its floors (which run after it) all
        // read it from memory.
        warm(&bundle)?;
        pt.verify.push(run_events(
            logs,
            &format!("{label}-verify-{run}"),
            ferry,
            &[
                "verify".into(),
                "--json".into(),
                bundle.to_string_lossy().into_owned(),
            ],
        )?);
        pt.openssl.push(floor(
            logs,
            &format!("{label}-floor-openssl-{run}"),
            &format!("openssl dgst -sha256 {} >/dev/null", q(&bundle)),
        )?);
        pt.zstd_d.push(floor(
            logs,
            &format!("{label}-floor-zstd-d-{run}"),
            &format!("zstd -d -q -c {} >/dev/null", q(&bundle)),
        )?);
        let target = Registry::start()?;
        let registry_cpu = || target.pid().and_then(process_cpu).unwrap_or(0.0);
        let before = registry_cpu();
        pt.import.push(run_events(
            logs,
            &format!("{label}-import-{run}"),
            ferry,
            &import_args(&bundle, &target.host()),
        )?);
        pt.import_registry_cpu.push(registry_cpu() - before);
        drop(target);
        let raw = raw_ingest_once(set, 4, run)?;
        pt.ingest.push(raw.wall);
        pt.ingest_registry_cpu.push(raw.registry_cpu);
        if sized {
            pt.ingest_one.push(raw_ingest_once(set, 1, run)?.wall);
        }
        pt.image_ingest.push(image_ingest_once(set, 4, run)?.wall);
        if skopeo {
            let plain = work.join(format!("{label}-no-referrers.tar.zst"));
            pt.export_plain.push(run_events(
                logs,
                &format!("{label}-export-no-referrers-{run}"),
                ferry,
                &export_args(&spec, &plain, &["--no-referrers"]),
            )?);
            let _ = std::fs::remove_file(&plain);
            let _ = std::fs::remove_file(plain.with_extension("zst.sha256"));
            let (export, import) = skopeo_once(set, &host, label, run, work, logs)?;
            pt.skopeo_export.push(export);
            pt.skopeo_import.push(import);
        }
    }
    pt.requests = Some(count_requests(ferry, set, &source, label, work, logs)?);
    // A small bundle (the many-small-images points) is kept for measuring
    // or profiling import by hand; the next curve removes it.
    if pt.bundle > KEEP_BUNDLE_MAX {
        let _ = std::fs::remove_file(&bundle);
    }
    Ok(pt)
}

/// The skopeo path once on `set` (export from `host`, import into a fresh
/// registry): its two wall times.
fn skopeo_once(
    set: &Dataset,
    host: &str,
    label: &str,
    run: usize,
    work: &Path,
    logs: &Path,
) -> Result<(f64, f64)> {
    let layout = work.join(format!("{label}-skopeo-layout"));
    let bundle = work.join(format!("{label}-skopeo.tar.zst"));
    let untar = work.join(format!("{label}-skopeo-untar"));
    let clean = || {
        let _ = std::fs::remove_dir_all(&layout);
        let _ = std::fs::remove_dir_all(&untar);
    };
    clean();
    let export = floor(
        logs,
        &format!("{label}-skopeo-export-{run}"),
        &skopeo_export_script(set, host, &layout, &bundle),
    );
    let import = export.and_then(|export| {
        let target = Registry::start()?;
        let import = floor(
            logs,
            &format!("{label}-skopeo-import-{run}"),
            &skopeo_import_script(set, &bundle, &untar, &target.host()),
        )?;
        Ok((export, import))
    });
    clean();
    let _ = std::fs::remove_file(&bundle);
    import
}

/// Runs the curve's points and writes the report.
pub fn run(opts: &CurveOptions, ferry: &Path, bench: &Path) -> Result<()> {
    opts.check()?;
    let runs = opts.runs.max(1);
    let work = bench.join("curve");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("failed to remove {}", work.display()))?;
    }
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let ferry_s = ferry.to_string_lossy().into_owned();
    let progress = |line: &str| eprintln!("xtask bench: {line}");
    let started = Started {
        command: command_line(opts),
        at: utc_now(),
        load: loadavg(),
        ferry: format!("`{}` ({ferry_s})", output(&ferry_s, &["--version"])),
    };
    let mut sizes = Vec::new();
    for &gb in &opts.sizes {
        let dir = bench.join(format!("data-{gb}gb-v{GENERATOR_VERSION}"));
        let set = Dataset::load_or_generate(
            &dir,
            &DatasetOptions {
                scale_gb: gb,
                ..DatasetOptions::default()
            },
            &progress,
        )?;
        sizes.push(measure(
            &ferry_s,
            &set,
            &format!("{gb}gb"),
            true,
            opts,
            &work,
            &logs,
        )?);
        write_report(opts, &started, &sizes, &[], runs)?;
    }
    let mut counts = Vec::new();
    for &n in &opts.refs {
        let dir = bench.join(format!("data-small-{n}-v{GENERATOR_VERSION}"));
        let set = Dataset::load_or_generate_many(&dir, n, 0, &progress)?;
        counts.push(measure(
            &ferry_s,
            &set,
            &format!("{n}refs"),
            false,
            opts,
            &work,
            &logs,
        )?);
        write_report(opts, &started, &sizes, &counts, runs)?;
    }
    eprintln!("xtask bench: wrote {}", opts.out.display());
    Ok(())
}

/// Writes the report of the points measured so far, after each point: a
/// curve that fails late (a full disk at 8 GB, a registry that died) keeps
/// what it measured.
fn write_report(
    opts: &CurveOptions,
    started: &Started,
    sizes: &[Point],
    counts: &[Point],
    runs: usize,
) -> Result<()> {
    if let Some(parent) = opts.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let text = render(sizes, counts, runs, &started.line(&utc_now(), &loadavg()));
    std::fs::write(&opts.out, text)
        .with_context(|| format!("failed to write {}", opts.out.display()))
}

/// What the report says of the run that made it.
struct Started {
    command: String,
    at: String,
    load: String,
    ferry: String,
}

impl Started {
    /// Where the report comes from: the command, when, which ferry, the
    /// machine's load.
    fn line(&self, now: &str, load: &str) -> String {
        format!(
            "Generated by `{}` (xtask/src/curve/) from {} to {}, measuring {}; load average {} at the start, {load} at the end.",
            self.command, self.at, now, self.ferry, self.load
        )
    }
}

/// The command that runs this curve again.
fn command_line(opts: &CurveOptions) -> String {
    let list = |v: Vec<String>| v.join(",");
    let mut c = String::from("cargo xtask bench");
    if !opts.sizes.is_empty() {
        c += &format!(
            " --sizes {}",
            list(opts.sizes.iter().map(f64::to_string).collect())
        );
    }
    if !opts.refs.is_empty() {
        c += &format!(
            " --refs {}",
            list(opts.refs.iter().map(usize::to_string).collect())
        );
    }
    c += &format!(" --runs {}", opts.runs.max(1));
    if opts.skopeo {
        c += " --skopeo";
    }
    c + &format!(" --curve-out {}", opts.out.display())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn the_report_says_how_it_was_made_and_how_to_run_it_again() {
        let opts = CurveOptions {
            sizes: vec![0.5, 8.0],
            refs: vec![25, 2000],
            runs: 3,
            out: "docs/scaling.md".into(),
            skopeo: true,
        };
        let command = command_line(&opts);
        assert_eq!(
            command,
            "cargo xtask bench --sizes 0.5,8 --refs 25,2000 --runs 3 --skopeo --curve-out docs/scaling.md"
        );
        let started = Started {
            command,
            at: "2026-12-05 18:52 UTC".into(),
            load: "0.5 1.8 2.6".into(),
            ferry: "`ferry 0.1.0` (target/release/ferry)".into(),
        };
        let text = render(
            &[],
            &[],
            3,
            &started.line("2026-12-05 19:50 UTC", "2.1 2.2 2.3"),
        );
        assert!(text.starts_with("# ferry scaling curve\n\nGenerated by `cargo xtask bench --sizes 0.5,8 --refs 25,2000 --runs 3 --skopeo --curve-out docs/scaling.md` (xtask/src/curve/) from 2026-12-05 18:52 UTC to 2026-12-05 19:50 UTC, measuring `ferry 0.1.0` (target/release/ferry); load average 0.5 1.8 2.6 at the start, 2.1 2.2 2.3 at the end. Medians of 3 run(s)."), "{text}");
    }
}
