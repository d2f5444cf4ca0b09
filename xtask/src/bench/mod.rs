//! `cargo xtask bench`: ferry against the incumbent path and the machine's
//! floors, on a realistic data set served by a real `docker-registry`.
//!
//! 1. Builds `ferry` (`cargo build --release -p ferry`, only here) and the
//!    data set ([`ferry_testkit::dataset`], cached under
//!    `target/bench/data-<scale>gb-v<N>/`).
//! 2. Lays the set out in the storage of a `docker-registry` on loopback
//!    (hard links: serving gigabytes costs nothing) and checks every
//!    reference with `skopeo inspect --raw`.
//! 3. Measures, `--runs` times each, wall time (monotonic clock around the
//!    command), peak RSS and bytes written to the file system
//!    (`/usr/bin/time -v`: maximum resident set size of the largest process,
//!    file system outputs × 512):
//!    - export: `ferry export` (empty blob cache each run) and `ferry export
//!      --no-cache` vs `skopeo copy --all` of every reference into one
//!      `oci:` layout, then `tar | zstd -T0`;
//!    - import into an empty registry (a fresh one per run): `ferry import`
//!      vs `zstd -d | tar -x` then `skopeo copy --all --preserve-digests`
//!      of every reference;
//!    - verify: `ferry verify` vs `sha256sum`, `openssl dgst -sha256`,
//!      `zstd -d` and `zstd -d | sha256sum` over the same bundle;
//!    - floors: `dd if=/dev/zero … conv=fdatasync` of the bundle's size and
//!      the source registry serving every blob to curl (beside each export),
//!      and the registry's ingest limit: every blob uploaded raw (POST, then
//!      PUT of the file), 1, 2, 4 and 8 in parallel, the best kept (beside
//!      each import), and the same with curl.
//!
//!    Ratios are medians of run-by-run ratios: the machine is shared.
//! 4. Counts the references whose digest survived each path (`skopeo inspect
//!    --raw` at the target, sha256 compared with the source's) and writes
//!    `docs/benchmarks.md` (or `--out`).
//!
//! Every command's output goes to `target/bench/run/logs/`.
//!
//! Modules: `measure` (a run's figures, series, medians, the timed runner),
//! `datasets` (the data set, its spec, digests kept), `floors` (the
//! registry's ingest floors), `render` (the report and the scaling points);
//! this file holds the options and the script in the order it runs.

mod datasets;
mod floors;
mod measure;
mod render;

pub(crate) use datasets::spec_text;
pub(crate) use floors::{image_ingest_once, raw_ingest_once};
pub(crate) use measure::{children_cpu, median, process_cpu, time_field, timed_command};

use datasets::{digests_kept, layout_digests_kept, load_set};
use floors::{ingest_floor, raw_ingest_sweep};
use measure::{Runner, Series};
pub(crate) use render::{loadavg, utc_now};
use render::{record_scale, render};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use ferry_testkit::dataset::{Dataset, GENERATOR_VERSION};
use ferry_testkit::registry::Registry;

/// What `cargo xtask bench` was asked for.
pub struct Options {
    /// Unique compressed layer bytes of the data set, in GB.
    pub scale: f64,
    /// Runs of every measurement (the median is reported).
    pub runs: usize,
    /// The Markdown report.
    pub out: PathBuf,
    /// Measure ferry and the floors only.
    pub no_skopeo: bool,
    /// Also profile one ferry export, import and verify with `perf record`.
    pub perf: bool,
    /// Only generate (or check) the data set, measure nothing.
    pub generate_only: bool,
    /// Serve the data set from the source registry and wait (for measuring
    /// or profiling by hand), measure nothing.
    pub serve: bool,
    /// The scaling curve instead (see `curve/`): these data-set sizes in GB …
    pub sizes: Vec<f64>,
    /// … and these reference counts of the many-small-images set.
    pub refs: Vec<usize>,
    /// The curve's report.
    pub curve_out: PathBuf,
    /// The curve also times the skopeo path at each point (long: one
    /// `skopeo copy` per reference, one after another, each way).
    pub curve_skopeo: bool,
    /// Measure this ferry binary instead of building one (before/after
    /// comparisons against another build).
    pub ferry_bin: Option<PathBuf>,
}

/// The tools every measurement needs, installed where they are missing
/// (and `perf` with `--perf`).
pub(crate) fn ensure_bench_tools(opts: &Options) -> Result<()> {
    crate::ensure_tools(
        &[
            ("docker-registry", "docker-registry"),
            ("skopeo", "skopeo"),
            ("zstd", "zstd"),
            ("curl", "curl"),
            ("time", "time"),
            ("openssl", "openssl"),
        ],
        true,
    )?;
    if opts.perf {
        crate::ensure_tools(&[("perf", "linux-perf")], true)?;
    }
    Ok(())
}

/// The ferry binary to measure: `--ferry-bin`, or a release build.
pub(crate) fn ferry_under_test(opts: &Options) -> Result<PathBuf> {
    match &opts.ferry_bin {
        Some(bin) => Ok(bin.clone()),
        None => build_ferry(),
    }
}

/// Where the data sets, the runs and the curve live: `target/bench/`.
pub(crate) fn bench_dir() -> PathBuf {
    target_dir().join("bench")
}

/// The skopeo path's export, as a user's script does it: `skopeo copy
/// --all` of every reference, one after another, into one `oci:` layout,
/// then `tar | zstd -T0` of the layout into `out`.
pub(crate) fn skopeo_export_script(
    set: &ferry_testkit::dataset::Dataset,
    host: &str,
    layout: &Path,
    out: &Path,
) -> String {
    let mut body = String::new();
    for i in &set.images {
        let _ = writeln!(
            body,
            "skopeo --insecure-policy copy --all --src-tls-verify=false {} {}",
            sh_quote(&format!("docker://{}", i.reference(host))),
            sh_quote(&format!("oci:{}:{}:{}", p(layout), i.repository, i.tag)),
        );
    }
    let _ = writeln!(
        body,
        "tar -C {} -cf - . | zstd -T0 -q -o {}",
        sh_quote(&p(layout)),
        sh_quote(&p(out))
    );
    body
}

/// The skopeo path's import: `zstd -d | tar -x` of `bundle` into `untar`,
/// A registry serving `set` straight from its storage (every reference
/// checked to come back with its digest), and the export spec of it
/// written under `work`.
fn start_source(set: &Dataset, work: &Path) -> Result<(Registry, PathBuf)> {
    let source = Registry::start()?;
    set.populate_registry_storage(&source.storage_dir())?;
    let host = source.host();
    let served = digests_kept(&set.images, &host);
    if served != set.images.len() {
        bail!(
            "the source registry serves {served} of {} references with their digest; its log:\n{}",
            set.images.len(),
            source.log()
        );
    }
    eprintln!(
        "xtask bench: source registry {} serves {} references",
        source.url(),
        set.images.len()
    );
    let spec_path = work.join("bundle.yaml");
    std::fs::write(&spec_path, spec_text(set, &host))
        .with_context(|| format!("failed to write {}", spec_path.display()))?;
    Ok((source, spec_path))
}

/// `--serve`: says where the set is served and how to export it, and
/// waits (the registry stops with Ctrl-C).
fn serve_forever(data_dir: &Path, spec_path: &Path, ferry: &str) -> ! {
    eprintln!(
        "xtask bench: serving {}; the spec is {}\n\
         xtask bench: e.g. {ferry} export -f {} -o /tmp/b.tar.zst --no-cache\n\
         xtask bench: stop with Ctrl-C",
        data_dir.display(),
        spec_path.display(),
        spec_path.display()
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// then `skopeo copy --all --preserve-digests` of every reference, one
/// after another, to `host`.
pub(crate) fn skopeo_import_script(
    set: &ferry_testkit::dataset::Dataset,
    bundle: &Path,
    untar: &Path,
    host: &str,
) -> String {
    let mut body = format!(
        "mkdir -p {u}\nzstd -dc {b} | tar -x -C {u}\n",
        u = sh_quote(&p(untar)),
        b = sh_quote(&p(bundle))
    );
    for i in &set.images {
        let _ = writeln!(
            body,
            "skopeo --insecure-policy copy --all --preserve-digests --dest-tls-verify=false {} {}",
            sh_quote(&format!("oci:{}:{}:{}", p(untar), i.repository, i.tag)),
            sh_quote(&format!("docker://{}", i.reference(host))),
        );
    }
    body
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn build_ferry() -> Result<PathBuf> {
    eprintln!("xtask bench: cargo build --release -p ferry");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(crate::root())
        .args(["build", "--release", "--quiet", "-p", "ferry"])
        .status()
        .context("failed to run cargo build")?;
    if !st.success() {
        bail!("cargo build --release -p ferry failed");
    }
    Ok(target_dir().join("release").join("ferry"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"))
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("failed to remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))
}

fn remove(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

pub(crate) fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            if s.trim().is_empty() {
                s = String::from_utf8_lossy(&o.stderr).into_owned();
            }
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|| "?".into())
}

struct Results {
    ferry_export: Series,
    ferry_export_warm: Series,
    ferry_export_warm_plain: Series,
    ferry_export_stream: Series,
    skopeo_export: Series,
    ferry_import: Series,
    skopeo_import: Series,
    ferry_verify: Series,
    sha256sum: Series,
    openssl: Series,
    zstd_d: Series,
    zstd_sha: Series,
    dd: Series,
    dd_copy: Series,
    /// Every blob fetched from the source registry with curl, to /dev/null.
    fetch: Series,
    ingest: Series,
    ingest_jobs: usize,
    ingest_sweep: Vec<(usize, f64)>,
    raw_ingest: Series,
    raw_jobs: usize,
    raw_sweep: Vec<(usize, f64)>,
    ferry_bundle: u64,
    skopeo_bundle: u64,
    kept_ferry: usize,
    kept_skopeo_layout: usize,
    kept_skopeo: usize,
    /// (command, top of `perf report`).
    profiles: Vec<(String, Vec<String>)>,
    /// The load averages around the measurements.
    load: String,
}

// Long on purpose: the benchmark's script in the order it runs (build, data
// set, registries, each command beside its floor, the report); each step is
// a call, and the sequence is the point.
pub fn run(opts: &Options) -> Result<()> {
    if !(opts.scale > 0.0 && opts.scale <= 64.0) {
        bail!("--scale must be in (0, 64] GB (got {})", opts.scale);
    }
    let runs = opts.runs.max(1);
    ensure_bench_tools(opts)?;
    let time_bin = if Path::new("/usr/bin/time").is_file() {
        "/usr/bin/time".to_string()
    } else {
        "time".to_string()
    };
    let bench = bench_dir();
    let data_dir = bench.join(format!("data-{}gb-v{GENERATOR_VERSION}", opts.scale));
    if opts.generate_only {
        load_set(opts, &data_dir)?;
        return Ok(());
    }
    let ferry = ferry_under_test(opts)?;
    if opts.serve && !opts.refs.is_empty() {
        let &[n] = &opts.refs[..] else {
            bail!("--serve serves one set: give one --refs count");
        };
        let dir = bench.join(format!("data-small-{n}-v{GENERATOR_VERSION}"));
        let set =
            Dataset::load_or_generate_many(&dir, n, 0, &|line| eprintln!("xtask bench: {line}"))?;
        let work = bench.join("run");
        fresh_dir(&work)?;
        let (_source, spec_path) = start_source(&set, &work)?;
        serve_forever(&dir, &spec_path, &p(&ferry));
    }
    let load_start = loadavg();
    let ferry_s = p(&ferry);

    let work = bench.join("run");
    fresh_dir(&work)?;
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let runner = Runner { logs, time_bin };
    let set = load_set(opts, &data_dir)?;

    let (source, spec_path) = start_source(&set, &work)?;
    let host = source.host();
    if opts.serve {
        serve_forever(&data_dir, &spec_path, &ferry_s);
    }

    let mut r = Results {
        ferry_export: Series::default(),
        ferry_export_warm: Series::default(),
        ferry_export_warm_plain: Series::default(),
        ferry_export_stream: Series::default(),
        skopeo_export: Series::default(),
        ferry_import: Series::default(),
        skopeo_import: Series::default(),
        ferry_verify: Series::default(),
        sha256sum: Series::default(),
        openssl: Series::default(),
        zstd_d: Series::default(),
        zstd_sha: Series::default(),
        dd: Series::default(),
        dd_copy: Series::default(),
        fetch: Series::default(),
        ingest: Series::default(),
        ingest_jobs: 0,
        ingest_sweep: Vec::new(),
        raw_ingest: Series::default(),
        raw_jobs: 0,
        raw_sweep: Vec::new(),
        ferry_bundle: 0,
        skopeo_bundle: 0,
        kept_ferry: usize::MAX,
        kept_skopeo_layout: usize::MAX,
        kept_skopeo: usize::MAX,
        profiles: Vec::new(),
        load: String::new(),
    };

    // The registry's serving limit: every blob once, with curl, 4 at a time
    // (as many as ferry's default --jobs), to /dev/null.
    let mut curl_config = String::new();
    let mut seen = std::collections::HashSet::new();
    for i in &set.images {
        for b in &i.blobs {
            if seen.insert(b.clone()) {
                let _ = writeln!(
                    curl_config,
                    "url = \"http://{host}/v2/{}/blobs/{b}\"\noutput = \"/dev/null\"",
                    i.repository
                );
            }
        }
    }
    let curl_config_path = work.join("fetch-floor.curl");
    std::fs::write(&curl_config_path, curl_config)?;
    // (a) export.
    let bundle = work.join("ferry.tar.zst");
    let cache = work.join("ferry-cache");
    let layout = work.join("skopeo-layout");
    let skopeo_bundle = work.join("skopeo.tar.zst");
    for run in 0..runs {
        remove(&bundle);
        remove(&cache);
        let s = runner.timed(
            &format!("export-ferry-{run}"),
            &ferry_s,
            &[
                "export".into(),
                "-f".into(),
                p(&spec_path),
                "-o".into(),
                p(&bundle),
                "--cache".into(),
                p(&cache),
            ],
        )?;
        r.ferry_export.push(s);
        // Diagnostics: the same export with every blob in the cache (what is
        // left is writing the bundle), with zstd and without compression.
        let warm_bundle = work.join("ferry-warm.tar");
        for (label, extra, series) in [
            ("export-ferry-warm", None, &mut r.ferry_export_warm),
            (
                "export-ferry-warm-plain",
                Some("none"),
                &mut r.ferry_export_warm_plain,
            ),
        ] {
            remove(&warm_bundle);
            let mut args: Vec<String> = vec![
                "export".into(),
                "-f".into(),
                p(&spec_path),
                "-o".into(),
                p(&warm_bundle),
                "--cache".into(),
                p(&cache),
            ];
            if let Some(c) = extra {
                args.push("--compression".into());
                args.push(c.into());
            }
            series.push(runner.timed(&format!("{label}-{run}"), &ferry_s, &args)?);
        }
        remove(&warm_bundle);
        remove(&cache);
        // The same export with no cache: every blob streams from the
        // registry into the bundle.
        remove(&bundle);
        r.ferry_export_stream.push(runner.timed(
            &format!("export-ferry-no-cache-{run}"),
            &ferry_s,
            &[
                "export".into(),
                "-f".into(),
                p(&spec_path),
                "-o".into(),
                p(&bundle),
                "--no-cache".into(),
            ],
        )?);
        // The floors of this run: writing the bundle's size to disk, from
        // zeros and from the bundle's own (incompressible) bytes in the page
        // cache, and the registry serving every blob.
        let dd_file = work.join("dd.bin");
        let size = std::fs::metadata(&bundle).map(|m| m.len()).unwrap_or(0);
        let blocks = size.div_ceil(4 << 20).max(1);
        remove(&dd_file);
        r.dd.push(runner.timed(
            &format!("floor-dd-{run}"),
            "dd",
            &[
                "if=/dev/zero".into(),
                format!("of={}", p(&dd_file)),
                "bs=4M".into(),
                format!("count={blocks}"),
                "conv=fdatasync".into(),
            ],
        )?);
        remove(&dd_file);
        r.dd_copy.push(runner.timed(
            &format!("floor-dd-bundle-{run}"),
            "dd",
            &[
                format!("if={}", p(&bundle)),
                format!("of={}", p(&dd_file)),
                "bs=4M".into(),
                "conv=fdatasync".into(),
            ],
        )?);
        remove(&dd_file);
        r.fetch.push(runner.script(
            &format!("floor-fetch-{run}"),
            &work,
            &format!(
                "curl -sSf -Z --parallel-max 4 -K {}\n",
                sh_quote(&p(&curl_config_path))
            ),
        )?);
        if !opts.no_skopeo {
            remove(&layout);
            remove(&skopeo_bundle);
            let body = skopeo_export_script(&set, &host, &layout, &skopeo_bundle);
            let s = runner.script(&format!("export-skopeo-{run}"), &work, &body)?;
            r.skopeo_export.push(s);
            r.kept_skopeo_layout = r.kept_skopeo_layout.min(layout_digests_kept(&set, &layout));
            remove(&layout);
        }
    }
    if opts.perf {
        remove(&cache);
        let prof_bundle = work.join("ferry-profile.tar.zst");
        let top = runner.profile(
            "profile-export",
            &ferry_s,
            &[
                "export".into(),
                "-f".into(),
                p(&spec_path),
                "-o".into(),
                p(&prof_bundle),
                "--cache".into(),
                p(&cache),
            ],
        )?;
        r.profiles.push(("ferry export (empty cache)".into(), top));
        remove(&prof_bundle);
        remove(&cache);
    }
    drop(source);
    r.ferry_bundle = std::fs::metadata(&bundle).map(|m| m.len()).unwrap_or(0);
    r.skopeo_bundle = std::fs::metadata(&skopeo_bundle)
        .map(|m| m.len())
        .unwrap_or(0);

    // (b) import, into a fresh registry every run, each run beside the
    // registry's raw ingest (the best count of uploads in parallel, from a
    // sweep first).
    let raw_jobs = raw_ingest_sweep(&set, &mut r)?;
    let untar = work.join("skopeo-untar");
    for run in 0..runs {
        let target = Registry::start()?;
        let s = runner.timed(
            &format!("import-ferry-{run}"),
            &ferry_s,
            &[
                "import".into(),
                p(&bundle),
                "--registry".into(),
                target.host(),
                "--flatten".into(),
            ],
        )?;
        r.ferry_import.push(s);
        r.kept_ferry = r.kept_ferry.min(digests_kept(&set.images, &target.host()));
        drop(target);
        r.raw_ingest.push(raw_ingest_once(&set, raw_jobs, run)?);
        if !opts.no_skopeo {
            let target = Registry::start()?;
            remove(&untar);
            let body = skopeo_import_script(&set, &skopeo_bundle, &untar, &target.host());
            let s = runner.script(&format!("import-skopeo-{run}"), &work, &body)?;
            r.skopeo_import.push(s);
            r.kept_skopeo = r.kept_skopeo.min(digests_kept(&set.images, &target.host()));
            remove(&untar);
        }
    }

    if opts.perf {
        let target = Registry::start()?;
        let top = runner.profile(
            "profile-import",
            &ferry_s,
            &[
                "import".into(),
                p(&bundle),
                "--registry".into(),
                target.host(),
                "--flatten".into(),
            ],
        )?;
        r.profiles.push(("ferry import".into(), top));
        let top = runner.profile("profile-verify", &ferry_s, &["verify".into(), p(&bundle)])?;
        r.profiles.push(("ferry verify".into(), top));
    }

    // (c) verify.
    for run in 0..runs {
        r.ferry_verify.push(runner.timed(
            &format!("verify-ferry-{run}"),
            &ferry_s,
            &["verify".into(), p(&bundle)],
        )?);
        r.sha256sum.push(runner.timed(
            &format!("verify-sha256sum-{run}"),
            "sha256sum",
            &[p(&bundle)],
        )?);
        r.openssl.push(runner.timed(
            &format!("verify-openssl-{run}"),
            "openssl",
            &["dgst".into(), "-sha256".into(), p(&bundle)],
        )?);
        r.zstd_d.push(runner.timed(
            &format!("verify-zstd-d-{run}"),
            "zstd",
            &[
                "-T1".into(),
                "-d".into(),
                "-q".into(),
                "-c".into(),
                p(&bundle),
                "-o".into(),
                "/dev/null".into(),
            ],
        )?);
        r.zstd_sha.push(runner.script(
            &format!("verify-zstd-sha256-{run}"),
            &work,
            &format!("zstd -dc {} | sha256sum\n", sh_quote(&p(&bundle))),
        )?);
    }

    // (d) floors: `dd` and the registry's serving ran beside each export,
    // the raw ingest beside each import (so that a ratio compares runs that
    // saw the same machine); the curl ingest sweep here.
    ingest_floor(&set, &runner, &work, runs, &mut r)?;

    r.load = format!("{load_start} at the start, {} at the end", loadavg());
    let points = record_scale(&bench, opts.scale, &set, &r)?;
    let report = render(&set, opts, runs, &ferry, &r, &points);
    if let Some(dir) = opts.out.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(&opts.out, &report)
        .with_context(|| format!("failed to write {}", opts.out.display()))?;
    println!("{report}");
    eprintln!("xtask bench: wrote {}", opts.out.display());
    remove(&bundle);
    remove(&skopeo_bundle);
    Ok(())
}
