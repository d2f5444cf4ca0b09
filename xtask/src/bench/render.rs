//! The report: the machine, the versions, the data set, the results table,
//! the targets (met or not, and why) and the scaling points kept under
//! `target/bench/results/`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use ferry_testkit::dataset::Dataset;

use super::measure::{paired, Series};
use super::{output, p, target_dir, Options, Results};

/// How the scaling curve is run (kept in the report, see `curve/`).
const CURVE_NOTE: &str = "The scaling curve (issue 17) runs apart from this comparison: `cargo xtask bench --sizes 0.5,2,8 --refs \
25,500,2000,10000 [--runs N] [--skopeo] [--curve-out FILE] [--ferry-bin PATH]` measures, at each \
data-set size (GB, the set above) and each count of small images (`small/app-<n>:1.0`: a 256 KiB base \
layer all share, an 8 KiB layer and a config of its own), `ferry export --no-cache`, `ferry verify` and \
`ferry import` with the time of each phase from their `--json` events (resolve, fetch, write; verify; \
plan, upload, commit), each beside its floor (`dd`, curl fetching every manifest and blob, the raw \
keep-alive ingest of every blob and the images' ingest (the same uploads into the images' own \
repositories, plus the mounts and manifest PUTs an import of the images needs), `openssl dgst -sha256` \
and `zstd -d`), the cost per reference in ms beside the floor \
of the requests each reference needs, the requests each reference sent (counted by a proxy in front of \
the source and the target registry in one more export and import, by kind, beside the fewest the \
references need), who is busy during import (ferry's CPU and the target registry's, beside the \
registry's under the raw ingest, and at the sized points the raw ingest with one upload at a time), who \
is busy during export and verify (ferry's CPU and the source registry's, the CPU `dd` needs to write \
the same bytes), and the targets table, met or not, by how much and why; it writes \
`target/bench/curve.md`. The last full curve is [scaling.md](scaling.md) (`--curve-out docs/scaling.md`), \
and the dated measurements behind each design choice are in \
[benchmarks-journal.md](benchmarks-journal.md). `--skopeo` also times the \
skopeo path at each count of references up to 2,000 (`skopeo copy` per reference, one after another, \
each way: minutes at 2,000 references, an hour at 10,000) and `ferry export --no-referrers` (the same work: `skopeo copy` carries no signatures or \
SBOMs), and reports ms per reference and how many times faster ferry is, against the ≥ 8× export and \
≥ 6× import targets; `--ferry-bin` measures another build (before/after). Pick points with `--sizes` and \
`--refs` to keep it small on a shared machine.";

/// The time now, to the minute, as the reports print it.
pub(crate) fn utc_now() -> String {
    output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

/// `/proc/loadavg`'s first three fields.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| words(&t, 3))
        .unwrap_or_else(|_| "?".into())
}

fn words(s: &str, n: usize) -> String {
    s.split_whitespace().take(n).collect::<Vec<_>>().join(" ")
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / 1048576.0)
}

fn machine() -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        })
        .map(|kib| format!("{:.1} GiB", kib / 1048576.0))
        .unwrap_or_else(|| "?".into());
    vec![
        ("CPU".into(), format!("{} × {cpu}", output("nproc", &[]))),
        ("memory".into(), mem),
        ("kernel".into(), output("uname", &["-r"])),
        (
            "file system (target/)".into(),
            output("stat", &["-f", "-c", "%T", &p(&target_dir())]),
        ),
    ]
}

/// Saves this run's ferry figures under `target/bench/results/` and returns
/// those of the last run at every scale on this machine, by scale.
pub(super) fn record_scale(
    bench: &Path,
    scale: f64,
    set: &Dataset,
    r: &Results,
) -> Result<Vec<serde_json::Value>> {
    let dir = bench.join("results");
    std::fs::create_dir_all(&dir)?;
    let point = serde_json::json!({
        "scale": scale,
        "blob_bytes": set.blob_bytes(),
        "date": utc_now(),
        "export_s": r.ferry_export.wall(),
        "export_rss_mib": r.ferry_export.rss_mib(),
        "export_stream_s": r.ferry_export_stream.wall(),
        "export_stream_rss_mib": r.ferry_export_stream.rss_mib(),
        "import_s": r.ferry_import.wall(),
        "import_rss_mib": r.ferry_import.rss_mib(),
        "verify_s": r.ferry_verify.wall(),
        "verify_rss_mib": r.ferry_verify.rss_mib(),
    });
    std::fs::write(
        dir.join(format!("scale-{scale}gb.json")),
        serde_json::to_vec_pretty(&point)?,
    )?;
    let mut points: Vec<serde_json::Value> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|t| serde_json::from_slice(&t).ok())
        .collect();
    points.sort_by(|a: &serde_json::Value, b| {
        a["scale"]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&b["scale"].as_f64().unwrap_or(0.0))
    });
    Ok(points)
}

// The report page, section by section in the order it reads.
pub(super) fn render(
    set: &Dataset,
    opts: &Options,
    runs: usize,
    ferry: &Path,
    r: &Results,
    points: &[serde_json::Value],
) -> String {
    let mut o = String::new();
    let floors = Floors::of(r);
    let data = set.blob_bytes() as f64;
    let bundle = r.ferry_bundle as f64;
    header(&mut o, opts, runs, ferry, r);
    data_set(&mut o, set, opts, r);
    results(&mut o, r, &floors, data, bundle);
    digests_kept(&mut o, set.images.len(), r);
    let ratios = targets(&mut o, r, &floors, bundle, points);
    not_met(&mut o, r, &floors, bundle, &ratios);
    scaling(&mut o, points);
    profile(&mut o, r);
    notes(&mut o, r, bundle);
    o
}

/// The floors ferry's commands are compared with.
struct Floors<'a> {
    /// The registry's ingest limit: the faster of the two uploaders.
    ingest: &'a Series,
    /// The disk-write floor: the faster of the two `dd`s (zeros, or the
    /// bundle's own bytes): on some virtual disks one is far slower.
    disk: &'a Series,
    /// Verify's floor (issue 17): the faster of `openssl dgst -sha256` and
    /// single-core `zstd -d` on the same bundle.
    verify: &'a Series,
}

impl<'a> Floors<'a> {
    fn of(r: &'a Results) -> Floors<'a> {
        let faster = |a: &'a Series, b: &'a Series| {
            if !a.is_empty() && (b.is_empty() || a.wall() < b.wall()) {
                a
            } else {
                b
            }
        };
        Floors {
            ingest: faster(&r.raw_ingest, &r.ingest),
            disk: faster(&r.dd_copy, &r.dd),
            verify: faster(&r.openssl, &r.zstd_d),
        }
    }
}

/// The run-by-run ratios the targets were judged on.
struct Ratios {
    /// `export --no-cache` against the disk floor.
    export: f64,
    /// Import against the ingest floor.
    import: f64,
    /// Verify's throughput as a share of its floor's.
    verify: f64,
}

/// The title, the machine and the tools' versions.
fn header(o: &mut String, opts: &Options, runs: usize, ferry: &Path, r: &Results) {
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Generated by `cargo xtask bench --scale {} --runs {runs}` on {}; every figure below comes from that run \
         (medians of {runs} runs; min–max in brackets). Re-run the command to regenerate this file.\n",
        opts.scale,
        utc_now()
    );

    let _ = writeln!(o, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in machine() {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    let _ = writeln!(
        o,
        "| load average (1, 5, 15 min) | {} (other jobs on a shared machine show here) |",
        r.load
    );
    let _ = writeln!(o, "\n## Versions\n\n| tool | version |\n|---|---|");
    for (k, v) in [
        ("ferry", output(&p(ferry), &["--version"])),
        ("skopeo", output("skopeo", &["--version"])),
        ("docker-registry", output("docker-registry", &["--version"])),
        (
            "zstd",
            output("zstd", &["--version"])
                .trim_matches('*')
                .trim()
                .to_string(),
        ),
        ("curl", words(&output("curl", &["--version"]), 2)),
        ("GNU tar", output("tar", &["--version"])),
        ("OpenSSL", words(&output("openssl", &["version"]), 2)),
    ] {
        let _ = writeln!(o, "| {k} | {v} |");
    }
}

/// What the data set holds.
fn data_set(o: &mut String, set: &Dataset, opts: &Options, r: &Results) {
    let data = set.blob_bytes() as f64;
    let bundle = r.ferry_bundle as f64;

    let layers = set.blobs.iter().filter(|b| b.layer).count();
    let indexes = set.images.iter().filter(|i| !i.children.is_empty()).count();
    let _ = writeln!(
        o,
        "\n## Data set\n\n\
         Generated by `ferry_testkit::dataset` (deterministic, no container engine; cached under \
         `target/bench/`): gzip'd tars (level 6) of real files from a sorted walk of `{}` followed by \
         seeded ChaCha8 bytes (incompressible), shared base and runtime layers, a multi-arch OCI index, a \
         Docker schema2 image and manifest list, a Trivy-DB-shaped artifact and an image with 40 small layers. \
         Served by `docker-registry` on loopback from its own storage.\n",
        set.options.real_root.display()
    );
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| scale | {} GB |", opts.scale);
    let _ = writeln!(
        o,
        "| references | {} ({} indexes / manifest lists; {} manifests in all) |",
        set.images.len(),
        indexes,
        set.manifest_count()
    );
    let _ = writeln!(
        o,
        "| blobs | {} ({layers} layers, {} configs) |",
        set.blobs.len(),
        set.blobs.len() - layers
    );
    let _ = writeln!(
        o,
        "| unique blob bytes | {:.0} MB ({} MiB) |",
        data / 1e6,
        mib(data)
    );
    let _ = writeln!(
        o,
        "| bundle | ferry {} MiB; skopeo + tar + zstd {} |",
        mib(bundle),
        if r.skopeo_bundle > 0 {
            format!("{} MiB", mib(r.skopeo_bundle as f64))
        } else {
            "not measured".into()
        }
    );
}

/// The results table: every command beside its floor and its incumbent.
// Long: one `row` call per line of the table, in the table's order.
fn results(o: &mut String, r: &Results, floors: &Floors<'_>, data: f64, bundle: f64) {
    let (ingest, disk) = (floors.ingest, floors.disk);
    let _ = writeln!(
        o,
        "\n## Results\n\n\
         Wall time is a monotonic clock around the command; peak RSS and bytes written come from \
         `/usr/bin/time -v` (largest single process; file system outputs × 512). MB/s is over the data \
         set's unique blob bytes for export, import and ingest, over the bundle's bytes for verify and `dd`.\n"
    );
    let _ = writeln!(
        o,
        "| step | command | wall s | MB/s | peak RSS MiB | written MiB | vs floor | vs skopeo |\n|---|---|---|---|---|---|---|---|"
    );
    row(
        o,
        "export",
        "`ferry export` (empty cache)",
        &r.ferry_export,
        data,
        Some(disk),
        inc(&r.skopeo_export),
    );
    row(
        o,
        "export",
        "`ferry export --no-cache` (blobs stream into the bundle)",
        &r.ferry_export_stream,
        data,
        Some(disk),
        inc(&r.skopeo_export),
    );
    row(
        o,
        "(export)",
        "`ferry export`, every blob already cached (writing the bundle only)",
        &r.ferry_export_warm,
        data,
        Some(disk),
        None,
    );
    row(
        o,
        "(export)",
        "`ferry export --compression none`, every blob already cached",
        &r.ferry_export_warm_plain,
        data,
        Some(disk),
        None,
    );
    row(
        o,
        "export",
        "`skopeo copy --all` ×N → `oci:`, `tar | zstd -T0`",
        &r.skopeo_export,
        data,
        Some(disk),
        None,
    );
    row(
        o,
        "import",
        "`ferry import` (fresh registry)",
        &r.ferry_import,
        data,
        Some(ingest),
        inc(&r.skopeo_import),
    );
    row(
        o,
        "import",
        "`zstd -d | tar -x`, `skopeo copy --all --preserve-digests` ×N",
        &r.skopeo_import,
        data,
        Some(ingest),
        None,
    );
    row(
        o,
        "verify",
        "`ferry verify`",
        &r.ferry_verify,
        bundle,
        Some(floors.verify),
        None,
    );
    row(o, "verify", "`sha256sum`", &r.sha256sum, bundle, None, None);
    row(
        o,
        "verify",
        "`openssl dgst -sha256`",
        &r.openssl,
        bundle,
        None,
        None,
    );
    row(
        o,
        "verify",
        "`zstd -d -T1 > /dev/null`",
        &r.zstd_d,
        bundle,
        None,
        None,
    );
    row(
        o,
        "verify",
        "`zstd -d | sha256sum`",
        &r.zstd_sha,
        bundle,
        None,
        None,
    );
    row(
        o,
        "floor",
        "`dd if=/dev/zero bs=4M conv=fdatasync` (bundle size)",
        &r.dd,
        bundle,
        None,
        None,
    );
    row(
        o,
        "floor",
        "`dd if=BUNDLE bs=4M conv=fdatasync` (the bundle's bytes, from the page cache)",
        &r.dd_copy,
        bundle,
        None,
        None,
    );
    row(
        o,
        "floor",
        "registry serving: curl GET of every blob, 4 in parallel, to /dev/null",
        &r.fetch,
        data,
        None,
        None,
    );
    row(
        o,
        "floor",
        &format!(
            "registry ingest: curl POST + PUT of every blob, {} in parallel",
            r.ingest_jobs
        ),
        &r.ingest,
        data,
        None,
        None,
    );
    row(
        o,
        "floor",
        &format!(
            "registry ingest: POST + PUT (sendfile) of every blob on keep-alive connections, {} in parallel",
            r.raw_jobs
        ),
        &r.raw_ingest,
        data,
        None,
        None,
    );
    let sweep: Vec<String> = r
        .ingest_sweep
        .iter()
        .map(|(j, w)| format!("{j}: {w:.2} s"))
        .collect();
    let raw_sweep: Vec<String> = r
        .raw_sweep
        .iter()
        .map(|(j, w)| format!("{j}: {w:.2} s"))
        .collect();
    let _ = writeln!(
        o,
        "\n\"vs floor\": export against the faster `dd` (the disk-write floor), import against the faster registry ingest, verify against the faster of \
         `openssl dgst -sha256` and single-core `zstd -d` (issue 17). Registry ingest by uploads in parallel (one run each): \
         curl (two processes per blob) {}; keep-alive {}.\n",
        sweep.join(", "),
        raw_sweep.join(", ")
    );
}

/// One row of the results table: `s` beside its floor and its incumbent.
fn row(
    o: &mut String,
    step: &str,
    cmd: &str,
    s: &Series,
    bytes: f64,
    floor: Option<&Series>,
    incumbent: Option<&Series>,
) {
    if s.is_empty() {
        return;
    }
    // The keep-alive uploader runs inside xtask: no RSS or writes of its own.
    let in_process = s.samples.iter().all(|x| x.rss_kib == 0);
    let ratio = |other: Option<&Series>| -> String {
        match other {
            Some(x) if !x.is_empty() => format!("{:.2}×", paired(s, x)),
            _ => "".into(),
        }
    };
    let _ = writeln!(
        o,
        "| {step} | {cmd} | {:.2} [{:.2}–{:.2}] | {:.0} | {} | {} | {} | {} |",
        s.wall(),
        s.min(),
        s.max(),
        bytes / s.wall() / 1e6,
        if in_process {
            "–".to_string()
        } else {
            format!("{:.1}", s.rss_mib())
        },
        if in_process {
            "–".to_string()
        } else {
            mib(s.written())
        },
        ratio(floor),
        ratio(incumbent)
    );
}

/// A comparison with the incumbent, when it ran.
fn inc(s: &Series) -> Option<&Series> {
    (!s.is_empty()).then_some(s)
}

/// Which path keeps the manifests' digests.
fn digests_kept(o: &mut String, n: usize, r: &Results) {
    let kept = |k: usize| {
        if k == usize::MAX {
            "not measured".to_string()
        } else {
            format!("{k} / {n}")
        }
    };
    let _ = writeln!(
        o,
        "## Digests kept\n\nReferences whose manifest digest at the target (`skopeo inspect --raw`, sha256) equals the \
         source's.\n\n| path | kept |\n|---|---|\n\
         | ferry export → ferry import | {} |\n\
         | skopeo copy --all → `oci:` layout (index.json) | {} |\n\
         | … → tar, zstd, untar → skopeo copy --all --preserve-digests | {} |\n",
        kept(r.kept_ferry),
        kept(r.kept_skopeo_layout),
        kept(r.kept_skopeo)
    );
}

/// The targets table (issue 17's), met or not, by how much.
fn targets(
    o: &mut String,
    r: &Results,
    floors: &Floors<'_>,
    bundle: f64,
    points: &[serde_json::Value],
) -> Ratios {
    let (ingest, disk) = (floors.ingest, floors.disk);
    let _ = writeln!(
        o,
        "## Targets (issue 17)\n\n| target | measured | met |\n|---|---|---|"
    );
    let met = |b: bool| if b { "met" } else { "**not met**" };
    // Export is judged by its one-pass form (`--no-cache`, written once,
    // like the floor); the cached form is in the same row.
    // Ratios are medians of run-by-run ratios (see `paired`).
    let ex = paired(&r.ferry_export_stream, disk);
    let _ = writeln!(
        o,
        "| export (`--no-cache`, and the default) ≤ 1.2 × disk-write floor | `--no-cache` {:.2} s, {ex:.2} × `dd` ({:.2} s) run by run (with the cache: {:.2} s, {:.2}×) | {} |",
        r.ferry_export_stream.wall(),
        disk.wall(),
        r.ferry_export.wall(),
        paired(&r.ferry_export, disk),
        met(ex <= 1.2 && paired(&r.ferry_export, disk) <= 1.2)
    );
    if !r.skopeo_export.is_empty() {
        let x = paired(&r.skopeo_export, &r.ferry_export_stream);
        let _ = writeln!(
            o,
            "| export about 3× faster than the skopeo path | `--no-cache` {x:.2}× faster (with the cache: {:.2}×) | {} |",
            paired(&r.skopeo_export, &r.ferry_export),
            met(x >= 3.0)
        );
    }
    let im = paired(&r.ferry_import, ingest);
    let _ = writeln!(
        o,
        "| import ≤ 1.3 × registry-ingest floor | {:.2} s, {im:.2} × ingest ({:.2} s) run by run | {} |",
        r.ferry_import.wall(),
        ingest.wall(),
        met(im <= 1.3)
    );
    if !r.skopeo_import.is_empty() {
        let x = paired(&r.skopeo_import, &r.ferry_import);
        let _ = writeln!(
            o,
            "| import about 2× faster than the skopeo path | {x:.2}× faster | {} |",
            met(x >= 2.0)
        );
    }
    let vf = floors.verify.wall() / r.ferry_verify.wall();
    let _ = writeln!(
        o,
        "| verify ≥ 100 % of the faster of `openssl dgst -sha256` and single-core `zstd -d` | {:.0} % ({:.0} MB/s vs {:.0} MB/s) | {} |",
        vf * 100.0,
        bundle / r.ferry_verify.wall() / 1e6,
        bundle / floors.verify.wall() / 1e6,
        met(vf >= 1.0)
    );
    let rss = [
        &r.ferry_export,
        &r.ferry_export_stream,
        &r.ferry_import,
        &r.ferry_verify,
    ]
    .iter()
    .map(|s| s.rss_mib())
    .fold(0.0, f64::max);
    let _ = writeln!(
        o,
        "| peak RSS ≤ 64 MiB | export {:.1} (`--no-cache` {:.1}), import {:.1}, verify {:.1} MiB | {} |",
        r.ferry_export.rss_mib(),
        r.ferry_export_stream.rss_mib(),
        r.ferry_import.rss_mib(),
        r.ferry_verify.rss_mib(),
        met(rss <= 64.0)
    );
    if points.len() >= 2 {
        let span = format!(
            "{}–{} GB",
            num(&points[0], "scale"),
            num(&points[points.len() - 1], "scale")
        );
        let mut worst = 0.0f64;
        let mut growth = 1.0f64;
        for k in [
            "export_rss_mib",
            "export_stream_rss_mib",
            "import_rss_mib",
            "verify_rss_mib",
        ] {
            let v: Vec<f64> = points.iter().map(|p| num(p, k)).collect();
            let (lo, hi) = (
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(0.0, f64::max),
            );
            worst = worst.max(hi);
            growth = growth.max(hi / lo.max(1.0));
        }
        let _ = writeln!(
            o,
            "| peak RSS ≤ 64 MiB and flat from 0.5 GB to 8 GB | measured over {span} (see Scaling): at most {worst:.1} MiB, largest/smallest {growth:.2} | {} |",
            met(worst <= 64.0 && growth <= 1.2)
        );
    } else {
        let _ = writeln!(
            o,
            "| peak RSS flat from 0.5 GB to 8 GB | this comparison ran at one scale; the curve measures 0.5, 2 and 8 GB side by side: [scaling.md](scaling.md) | not measured here |"
        );
    }
    let staged = r.ferry_import.written();
    let _ = writeln!(
        o,
        "| zero staging bytes on import | `ferry import` wrote {} MiB to the file system | {} |",
        mib(staged),
        met(staged < 1048576.0)
    );
    Ratios {
        export: ex,
        import: im,
        verify: vf,
    }
}

/// A number field of a scaling point (NaN when absent).
fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(f64::NAN)
}

/// Where a target is not met: what the figures say stands in the way.
fn not_met(o: &mut String, r: &Results, floors: &Floors<'_>, bundle: f64, ratios: &Ratios) {
    let (ingest, disk) = (floors.ingest, floors.disk);
    let (ex, im, vf) = (ratios.export, ratios.import, ratios.verify);
    // Where a target is not met: what the figures say stands in the way.
    let mut why = Vec::new();
    if ex > 1.2 || paired(&r.ferry_export, disk) > 1.2 {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        why.push(format!(
            "- **export**: `ferry export --no-cache` takes {:.2} s, {ex:.2}× `dd` run by run. The floor only \
             writes; the export must also get every byte from the registry, which on its own takes {:.2} s \
             to serve them to curl ({:.2}× `dd` run by run, see the floors): the export takes {:.2}× \
             that serving floor. It is CPU-bound: ferry used {:.2} s of CPU (user + system) in {:.2} s \
             on a machine of {} cores that also runs the registry. Every byte is received, hashed \
             for its digest, compressed at zstd's fast mode, hashed again for the bundle's sha256 and written: \
             the two sha256 passes alone are {:.2} s of one core at this machine's `openssl` speed. \
             With the cache (the default, which makes a scheduled re-run fetch only what changed) every blob \
             is written twice, {} MiB for a {} MiB bundle: {:.2} s, {:.2}× `dd`. What would close it: more \
             cores (the registry, the downloads' hashing, the compressor and the bundle's hashing and \
             writing each keep a core busy and all run at once), or a registry on another machine, as in \
             production.",
            r.ferry_export_stream.wall(),
            r.fetch.wall(),
            paired(&r.fetch, disk),
            paired(&r.ferry_export_stream, &r.fetch),
            r.ferry_export_stream.cpu(),
            r.ferry_export_stream.wall(),
            cores,
            2.0 * r.openssl.wall(),
            mib(r.ferry_export.written()),
            mib(bundle),
            r.ferry_export.wall(),
            paired(&r.ferry_export, disk),
        ));
    }
    if im > 1.3 {
        why.push(format!(
            "- **import**: {:.2} s against {:.2} s for the bare uploads ({im:.2}× run by run). This registry's ingest is \
             CPU-bound (it hashes every byte; see the uploads in parallel above) and ferry shares the same \
             {} cores with it, using {:.2} s of CPU itself: one ordered read decompresses the bundle (issue 14) \
             and hashes every byte once to verify it (the uploads only count the bytes the reader \
             checked), and two lanes decode the large blobs' own zstd frames a second time to upload them \
             beside it (issue 17). The bare uploads send each blob in one `PUT` \
             ({} at a time), as ferry does for every blob above `--chunk-mib` (a blob whose `PUT` fails \
             once its bytes are gone is read again from the bundle in one second pass; none does here). \
             What would close it: more cores (the floor measures the registry alone).",
            r.ferry_import.wall(),
            ingest.wall(),
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            r.ferry_import.cpu(),
            r.raw_jobs,
        ));
    }
    if vf < 1.0 {
        let verify = bundle / r.ferry_verify.wall() / 1e6;
        let sha = bundle / r.openssl.wall() / 1e6;
        let floor = bundle / floors.verify.wall() / 1e6;
        why.push(format!(
            "- **verify**: {verify:.0} MB/s, {:.0} % of `openssl dgst -sha256` on one core ({sha:.0} MB/s). \
             Decompression runs on its own thread; with 3 cores or more, blobs of 64 KiB and more are \
             hashed on worker threads side by side (`ferry_bundle::reader::workers_pay`), and with 2, \
             where the workers measured slower, the reading thread hashes every byte, so verify runs \
             at the speed of one core's sha256. The floor is {floor:.0} MB/s: reaching it means \
             hashing the blobs on about {:.0} cores side by side, beside the one that decompresses; \
             this machine has {}.",
            100.0 * verify / sha,
            (floor / sha).ceil(),
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        ));
    }
    if !why.is_empty() {
        let _ = writeln!(o, "\nWhere a target is not met:\n\n{}", why.join("\n"));
    }
}

/// ferry's medians at every scale measured on this machine.
fn scaling(o: &mut String, points: &[serde_json::Value]) {
    let _ = writeln!(
        o,
        "\n## Scaling\n\nferry's medians at every scale measured on this machine (the last run at each; \
         kept under `target/bench/results/`).\n\n\
         | scale GB | data MB | export s | export RSS MiB | export --no-cache s | export --no-cache RSS MiB | import s | import RSS MiB | verify s | verify RSS MiB | run |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for pt in points {
        let _ = writeln!(
            o,
            "| {} | {:.0} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {} |",
            num(pt, "scale"),
            num(pt, "blob_bytes") / 1e6,
            num(pt, "export_s"),
            num(pt, "export_rss_mib"),
            num(pt, "export_stream_s"),
            num(pt, "export_stream_rss_mib"),
            num(pt, "import_s"),
            num(pt, "import_rss_mib"),
            num(pt, "verify_s"),
            num(pt, "verify_rss_mib"),
            pt["date"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(o, "\n{CURVE_NOTE}");
}

/// The CPU profiles, when `--perf` ran.
fn profile(o: &mut String, r: &Results) {
    if !r.profiles.is_empty() {
        let _ = writeln!(
            o,
            "\n## Profile\n\nOne run of each under `perf record -e cpu-clock -g` (`--perf`); the symbols above 1 % \
             of the samples (`perf report --no-children --sort dso,sym`; full reports under `target/bench/run/logs/`)."
        );
        for (what, top) in &r.profiles {
            let _ = writeln!(o, "\n{what}:\n\n```text");
            for l in top {
                let _ = writeln!(o, "{l}");
            }
            let _ = writeln!(o, "```");
        }
    }
}

/// How to read the figures.
fn notes(o: &mut String, r: &Results, bundle: f64) {
    let _ = writeln!(
        o,
        "\n## Notes\n\n\
         - This machine is shared: the same `dd` can take several times as long from one minute to the \
         next. So each floor runs right beside what it is compared with (`dd` and the registry's serving \
         after each export, the raw ingest after each import), and every ratio (\"vs floor\", \"vs skopeo\", \
         the targets) is the median of the run-by-run ratios, not a ratio of medians.\n\
         - The page cache is warm for every command (the data set and the bundles were just written or read); \
         each command starts after `sync`. `ferry export` starts with an empty blob cache every run, like \
         the skopeo path, which starts with an empty layout.\n\
         - `ferry export` wrote {} MiB for a {} MiB bundle ({:.2}× the bundle): what it writes besides the \
         bundle is the blob cache. It fetches blobs into the cache and writes the bundle at once (each \
         blob goes into the bundle, in order, as soon as it is in the cache). \
         By the fastest runs (the least disturbed on a shared machine): the export takes {:.2} s from an \
         empty cache and {:.2} s with every blob already cached, so fetching adds about {:.2} s to writing \
         the bundle ({:.2} s), of which zstd accounts for about {:.2} s and {:.0} MiB of peak RSS (the same \
         export with `--compression none`: {:.2} s, {:.1} MiB).\n\
         - `ferry export` and `dd … conv=fdatasync` flush their output to disk before they exit; \
         `zstd -o` in the skopeo path does not.\n\
         - Every command's output and `/usr/bin/time -v` report are under `target/bench/run/logs/`.",
        mib(r.ferry_export.written()),
        mib(bundle),
        r.ferry_export.written() / bundle.max(1.0),
        r.ferry_export.min(),
        r.ferry_export_warm.min(),
        (r.ferry_export.min() - r.ferry_export_warm.min()).max(0.0),
        r.ferry_export_warm.min(),
        (r.ferry_export_warm.min() - r.ferry_export_warm_plain.min()).max(0.0),
        r.ferry_export_warm.rss_mib() - r.ferry_export_warm_plain.rss_mib(),
        r.ferry_export_warm_plain.min(),
        r.ferry_export_warm_plain.rss_mib()
    );
}
