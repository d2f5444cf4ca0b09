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

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_bundle::Digest;
use ferry_testkit::dataset::{Dataset, DatasetOptions, GENERATOR_VERSION};
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
    /// The scaling curve instead (see `curve.rs`): these data-set sizes in GB …
    pub sizes: Vec<f64>,
    /// … and these reference counts of the many-small-images set.
    pub refs: Vec<usize>,
    /// The curve's report.
    pub curve_out: PathBuf,
}

/// One measured run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    pub(crate) wall: f64,
    rss_kib: u64,
    written: u64,
    /// User + system CPU seconds of the command (all its threads).
    cpu: f64,
}

/// The runs of one measured command.
#[derive(Debug, Clone, Default)]
struct Series {
    samples: Vec<Sample>,
}

impl Series {
    fn push(&mut self, s: Sample) {
        self.samples.push(s);
    }
    fn wall(&self) -> f64 {
        median(self.samples.iter().map(|s| s.wall).collect())
    }
    fn min(&self) -> f64 {
        self.samples
            .iter()
            .map(|s| s.wall)
            .fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.samples.iter().map(|s| s.wall).fold(0.0, f64::max)
    }
    /// The largest peak RSS of any run, in MiB.
    fn rss_mib(&self) -> f64 {
        self.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0
    }
    /// The median of the bytes written.
    fn written(&self) -> f64 {
        median(self.samples.iter().map(|s| s.written as f64).collect())
    }
    fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
    /// The median CPU seconds (user + system).
    fn cpu(&self) -> f64 {
        median(self.samples.iter().map(|s| s.cpu).collect())
    }
}

/// The median of the run-by-run ratios `a[i] / b[i]`: runs measured side
/// by side saw the same machine, which a ratio of medians taken minutes
/// apart on a shared machine does not.
fn paired(a: &Series, b: &Series) -> f64 {
    median(
        a.samples
            .iter()
            .zip(&b.samples)
            .map(|(x, y)| x.wall / y.wall)
            .collect(),
    )
}

/// The median of `v` (`NaN` when empty).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs a command under `/usr/bin/time -v`, its output to `logs/<label>.log`.
struct Runner {
    logs: PathBuf,
    time_bin: String,
}

impl Runner {
    fn timed(&self, label: &str, program: &str, args: &[String]) -> Result<Sample> {
        // Start every measurement with no dirty pages left from the last one.
        let _ = Command::new("sync").status();
        let tv = self.logs.join(format!("{label}.time"));
        let log_path = self.logs.join(format!("{label}.log"));
        let log = File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let log2 = log.try_clone()?;
        let t = Instant::now();
        let st = Command::new(&self.time_bin)
            .arg("-v")
            .arg("-o")
            .arg(&tv)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .with_context(|| format!("failed to run {} {program}", self.time_bin))?;
        let wall = t.elapsed().as_secs_f64();
        if !st.success() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "{label}: `{program} {}` failed ({st}); {}:\n{}",
                args.join(" "),
                log_path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let text = std::fs::read_to_string(&tv)
            .with_context(|| format!("failed to read {}", tv.display()))?;
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let seconds = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let s = Sample {
            wall,
            rss_kib: field("Maximum resident set size (kbytes):"),
            written: field("File system outputs:") * 512,
            cpu: seconds("User time (seconds):") + seconds("System time (seconds):"),
        };
        eprintln!(
            "xtask bench: {label:<28} {:>8.2} s  {:>7.1} MiB RSS  {:>8.1} MiB written",
            s.wall,
            s.rss_kib as f64 / 1024.0,
            s.written as f64 / 1048576.0
        );
        Ok(s)
    }

    /// Runs the command once under `perf record` (cpu-clock samples, call
    /// graphs) and returns the top of `perf report` by symbol; the full
    /// report is kept next to the logs.
    fn profile(&self, label: &str, program: &str, args: &[String]) -> Result<Vec<String>> {
        let data = self.logs.join(format!("{label}.perf.data"));
        let log = File::create(self.logs.join(format!("{label}.log")))?;
        let st = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "499", "-g", "-o"])
            .arg(&data)
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("failed to run perf record")?;
        if !st.success() {
            bail!("{label}: perf record failed ({st})");
        }
        let out = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "-g", "none"])
            .args(["--sort", "dso,sym", "--percent-limit", "1"])
            .arg("-i")
            .arg(&data)
            .stderr(Stdio::null())
            .output()
            .context("failed to run perf report")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        std::fs::write(self.logs.join(format!("{label}.perf.txt")), &text)?;
        let _ = std::fs::remove_file(&data);
        eprintln!("xtask bench: profiled {label}");
        Ok(text
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .take(15)
            .map(|l| l.trim_end().to_string())
            .collect())
    }

    fn script(&self, label: &str, dir: &Path, body: &str) -> Result<Sample> {
        let path = dir.join(format!("{label}.sh"));
        std::fs::write(&path, format!("set -euo pipefail\n{body}"))
            .with_context(|| format!("failed to write {}", path.display()))?;
        self.timed(label, "bash", &[path.to_string_lossy().into_owned()])
    }
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

fn output(program: &str, args: &[&str]) -> String {
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

/// How many of `images` the registry at `host` serves with the source's digest.
fn digests_kept(images: &[ferry_testkit::dataset::DataImage], host: &str) -> usize {
    images
        .iter()
        .filter(|i| {
            ferry_testkit::tools::skopeo_inspect_raw(&i.reference(host))
                .map(|raw| Digest::of(&raw) == i.top.digest)
                .unwrap_or(false)
        })
        .count()
}

/// How many references of `set` an OCI layout's `index.json` records with
/// the source's digest (`org.opencontainers.image.ref.name` = `repo:tag`).
fn layout_digests_kept(set: &Dataset, layout: &Path) -> usize {
    let Ok(text) = std::fs::read(layout.join("index.json")) else {
        return 0;
    };
    let Ok(index) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return 0;
    };
    let empty = Vec::new();
    let manifests = index["manifests"].as_array().unwrap_or(&empty);
    set.images
        .iter()
        .filter(|i| {
            let name = format!("{}:{}", i.repository, i.tag);
            manifests.iter().any(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(&name)
                    && m["digest"].as_str() == Some(&i.top.digest.to_string())
            })
        })
        .count()
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
    let time_bin = if Path::new("/usr/bin/time").is_file() {
        "/usr/bin/time".to_string()
    } else {
        "time".to_string()
    };
    let bench = target_dir().join("bench");
    let data_dir = bench.join(format!("data-{}gb-v{GENERATOR_VERSION}", opts.scale));
    if opts.generate_only {
        load_set(opts, &data_dir)?;
        return Ok(());
    }
    let ferry = build_ferry()?;
    if !opts.sizes.is_empty() || !opts.refs.is_empty() {
        if let Some(bad) = opts.sizes.iter().find(|&&gb| !(gb > 0.0 && gb <= 64.0)) {
            bail!("--sizes must be in (0, 64] GB (got {bad})");
        }
        return crate::curve::run(
            &crate::curve::CurveOptions {
                sizes: opts.sizes.clone(),
                refs: opts.refs.clone(),
                runs,
                out: opts.curve_out.clone(),
            },
            &ferry,
            &bench,
        );
    }
    let load_start = loadavg();
    let ferry_s = p(&ferry);

    let work = bench.join("run");
    fresh_dir(&work)?;
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let runner = Runner { logs, time_bin };
    let set = load_set(opts, &data_dir)?;

    // The source registry serves the set straight from its storage.
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

    let spec = spec_text(&set, &host);
    let spec_path = work.join("bundle.yaml");
    std::fs::write(&spec_path, &spec)?;
    if opts.serve {
        eprintln!(
            "xtask bench: serving {} at {host}; the spec is {}\n\
             xtask bench: e.g. {ferry_s} export -f {} -o /tmp/b.tar.zst --no-cache\n\
             xtask bench: stop with Ctrl-C",
            data_dir.display(),
            spec_path.display(),
            spec_path.display()
        );
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
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
            let mut body = String::new();
            for i in &set.images {
                let _ = writeln!(
                    body,
                    "skopeo --insecure-policy copy --all --src-tls-verify=false {} {}",
                    sh_quote(&format!("docker://{}", i.reference(&host))),
                    sh_quote(&format!("oci:{}:{}:{}", p(&layout), i.repository, i.tag)),
                );
            }
            let _ = writeln!(
                body,
                "tar -C {} -cf - . | zstd -T0 -q -o {}",
                sh_quote(&p(&layout)),
                sh_quote(&p(&skopeo_bundle))
            );
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
            let mut body = format!(
                "mkdir -p {u}\nzstd -dc {b} | tar -x -C {u}\n",
                u = sh_quote(&p(&untar)),
                b = sh_quote(&p(&skopeo_bundle))
            );
            for i in &set.images {
                let _ = writeln!(
                    body,
                    "skopeo --insecure-policy copy --all --preserve-digests --dest-tls-verify=false {} {}",
                    sh_quote(&format!("oci:{}:{}:{}", p(&untar), i.repository, i.tag)),
                    sh_quote(&format!("docker://{}", i.reference(&target.host()))),
                );
            }
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

/// The data set of `opts.scale` under `data_dir`, generated if missing.
fn load_set(opts: &Options, data_dir: &Path) -> Result<Dataset> {
    let t = Instant::now();
    let set = Dataset::load_or_generate(
        data_dir,
        &DatasetOptions {
            scale_gb: opts.scale,
            ..DatasetOptions::default()
        },
        &|line| eprintln!("xtask bench: {line}"),
    )?;
    eprintln!(
        "xtask bench: data set ready in {:.1} s under {}: {} images, {} blobs, {:.1} MB",
        t.elapsed().as_secs_f64(),
        data_dir.display(),
        set.images.len(),
        set.blobs.len(),
        set.blob_bytes() as f64 / 1e6
    );
    Ok(set)
}

/// Every blob of the set uploaded raw with curl into a fresh registry:
/// `POST /v2/<name>/blobs/uploads/`, then `PUT <location>&digest=…` with the
/// file. 1, 2, 4 and 8 uploads in parallel once each; the best count is run
/// until there are `runs` samples.
fn ingest_floor(
    set: &Dataset,
    runner: &Runner,
    work: &Path,
    runs: usize,
    r: &mut Results,
) -> Result<()> {
    let list = work.join("ingest.list");
    let mut text = String::new();
    for b in &set.blobs {
        let _ = writeln!(text, "{} {}", b.digest.hex(), p(&set.blob_path(&b.digest)));
    }
    std::fs::write(&list, text)?;
    let upload = work.join("upload.sh");
    std::fs::write(
        &upload,
        r#"set -euo pipefail
base=$1; hex=$2; file=$3
loc=$(curl -sS -f -X POST -o /dev/null -w '%header{location}' "$base/v2/bench/ingest/blobs/uploads/")
case "$loc" in /*) loc="$base$loc" ;; esac
case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
curl -sS -f -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$file" -o /dev/null "$loc${sep}digest=sha256:$hex"
"#,
    )?;
    let once = |label: &str, jobs: usize| -> Result<Sample> {
        let target = Registry::start()?;
        let body = format!(
            "xargs -P {jobs} -L 1 bash {} {} < {}\n",
            sh_quote(&p(&upload)),
            sh_quote(&target.url()),
            sh_quote(&p(&list))
        );
        let s = runner.script(label, work, &body)?;
        let stored = target.storage_dir().join("docker/registry/v2/blobs/sha256");
        let count = set
            .blobs
            .iter()
            .filter(|b| {
                let h = b.digest.hex();
                stored.join(&h[..2]).join(&h).join("data").is_file()
            })
            .count();
        if count != set.blobs.len() {
            bail!(
                "{label}: the registry holds {count} of {} blobs after the upload",
                set.blobs.len()
            );
        }
        Ok(s)
    };
    let mut best: Option<(usize, Sample)> = None;
    for jobs in [1, 2, 4, 8] {
        let s = once(&format!("floor-ingest-j{jobs}"), jobs)?;
        r.ingest_sweep.push((jobs, s.wall));
        if best.is_none_or(|(_, b)| s.wall < b.wall) {
            best = Some((jobs, s));
        }
    }
    let Some((jobs, first)) = best else {
        bail!("no ingest measurement");
    };
    r.ingest_jobs = jobs;
    r.ingest.push(first);
    for run in 1..runs {
        r.ingest
            .push(once(&format!("floor-ingest-j{jobs}-{run}"), jobs)?);
    }
    Ok(())
}

/// The registry's ingest limit without per-request process costs: the same
/// POST then PUT per blob, over one keep-alive HTTP/1.1 connection per
/// worker, the file sent with `std::io::copy` (sendfile), into a fresh
/// registry.
pub(crate) fn raw_ingest_once(set: &Dataset, jobs: usize, label: usize) -> Result<Sample> {
    let target = Registry::start()?;
    let _ = Command::new("sync").status();
    let t = Instant::now();
    raw_upload(set, target.addr(), jobs)?;
    let wall = t.elapsed().as_secs_f64();
    eprintln!("xtask bench: floor-raw-ingest-j{jobs}-{label:<10} {wall:>8.2} s");
    Ok(Sample {
        wall,
        ..Sample::default()
    })
}

/// 1, 2, 4 and 8 raw ingest workers once each: the fastest count.
fn raw_ingest_sweep(set: &Dataset, r: &mut Results) -> Result<usize> {
    let mut best: Option<(usize, f64)> = None;
    for jobs in [1, 2, 4, 8] {
        let s = raw_ingest_once(set, jobs, 0)?;
        r.raw_sweep.push((jobs, s.wall));
        if best.is_none_or(|(_, b)| s.wall < b) {
            best = Some((jobs, s.wall));
        }
    }
    let Some((jobs, _)) = best else {
        bail!("no ingest measurement");
    };
    r.raw_jobs = jobs;
    Ok(jobs)
}

/// Uploads every blob of `set` to `bench/ingest` at `addr` with `jobs`
/// workers, each on its own keep-alive connection.
fn raw_upload(set: &Dataset, addr: std::net::SocketAddr, jobs: usize) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..jobs)
            .map(|_| {
                let next = &next;
                s.spawn(move || -> Result<()> {
                    let mut conn = Conn::open(addr)?;
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(b) = set.blobs.get(i) else {
                            return Ok(());
                        };
                        conn.upload(&set.blob_path(&b.digest), &b.digest, b.size)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("an upload thread panicked"))??;
        }
        Ok(())
    })
}

/// The export spec of `set` served at `host`: every image, the Trivy-DB
/// artifact as `trivy.db`.
pub(crate) fn spec_text(set: &Dataset, host: &str) -> String {
    let trivy = set
        .images
        .iter()
        .find(|i| i.repository.ends_with("trivy-db"));
    let mut spec = String::from("apiVersion: ferry.dev/v1\nname: bench\nimages:\n");
    for i in set.images.iter().filter(|i| Some(*i) != trivy) {
        let _ = writeln!(spec, "  - {}", i.reference(host));
    }
    if let Some(t) = trivy {
        let _ = write!(
            spec,
            "trivy:\n  db: {}\n  javaDb: false\n  checks: false\n",
            t.reference(host)
        );
    }
    spec
}

/// How the scaling curve is run (kept in the report, see `curve.rs`).
const CURVE_NOTE: &str = "The scaling curve (issue 17) runs apart from this comparison: \
`cargo xtask bench --sizes 0.5,2,8 --refs 25,500,2000,10000 [--runs N] [--curve-out FILE]` measures, at \
each data-set size (GB, the set above) and each count of small images (`small/app-<n>:1.0`: a 256 KiB \
base layer all share, an 8 KiB layer and a config of its own), `ferry export --no-cache`, `ferry verify` \
and `ferry import` with the time of each phase from their `--json` events (resolve, fetch, write; verify; \
plan, upload, commit), each beside its floor (`dd`, curl fetching every manifest and blob, the raw \
keep-alive ingest, `openssl dgst -sha256` and `zstd -d`), the cost per reference in ms beside the floor of \
the requests each reference needs, and the targets table; it writes `target/bench/curve.md`. Pick points \
with `--sizes` and `--refs` to keep it small on a shared machine.";

/// A minimal HTTP/1.1 keep-alive client for the ingest floor.
struct Conn {
    host: String,
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl Conn {
    fn open(addr: std::net::SocketAddr) -> Result<Conn> {
        let s = std::net::TcpStream::connect(addr)
            .with_context(|| format!("failed to connect to {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            host: addr.to_string(),
            reader: std::io::BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Reads a response: (status, location); the body is skipped.
    fn response(&mut self) -> Result<(u16, Option<String>)> {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("not an HTTP status line: {line:?}"))?;
        let mut location = None;
        let mut length = 0u64;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the connection closed in the headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("location") {
                    location = Some(v.to_string());
                } else if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("unexpected Transfer-Encoding {v}");
                }
            }
        }
        std::io::copy(&mut (&mut self.reader).take(length), &mut std::io::sink())?;
        Ok((status, location))
    }

    fn upload(&mut self, path: &Path, digest: &Digest, size: u64) -> Result<()> {
        use std::io::Write;
        write!(
            self.writer,
            "POST /v2/bench/ingest/blobs/uploads/ HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            self.host
        )?;
        let (status, location) = self.response()?;
        let Some(location) = location.filter(|_| status == 202) else {
            bail!("POST upload: status {status}, no Location");
        };
        let path_q = match location.find("/v2/") {
            Some(i) => &location[i..],
            None => location.as_str(),
        };
        let sep = if path_q.contains('?') { '&' } else { '?' };
        write!(
            self.writer,
            "PUT {path_q}{sep}digest={digest} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n",
            self.host
        )?;
        let mut f =
            File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
        std::io::copy(&mut f, &mut self.writer)?;
        let (status, _) = self.response()?;
        if status != 201 {
            bail!("PUT {digest}: status {status}");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The report

/// `/proc/loadavg`'s first three fields.
fn loadavg() -> String {
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
fn record_scale(
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
        "date": output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
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

// Long on purpose: the report page written top to bottom, one section
// after another, so the code reads in the order the page does.
fn render(
    set: &Dataset,
    opts: &Options,
    runs: usize,
    ferry: &Path,
    r: &Results,
    points: &[serde_json::Value],
) -> String {
    let mut o = String::new();
    let data = set.blob_bytes() as f64;
    let bundle = r.ferry_bundle as f64;
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Generated by `cargo xtask bench --scale {} --runs {runs}` on {}; every figure below comes from that run \
         (medians of {runs} runs; min–max in brackets). Re-run the command to regenerate this file.\n",
        opts.scale,
        output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
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

    let _ = writeln!(
        o,
        "\n## Results\n\n\
         Wall time is a monotonic clock around the command; peak RSS and bytes written come from \
         `/usr/bin/time -v` (largest single process; file system outputs × 512). MB/s is over the data \
         set's unique blob bytes for export, import and ingest, over the bundle's bytes for verify and `dd`.\n"
    );
    // The registry's ingest limit is the faster of the two uploaders.
    let ingest = if !r.raw_ingest.is_empty() && r.raw_ingest.wall() < r.ingest.wall() {
        &r.raw_ingest
    } else {
        &r.ingest
    };
    // The disk-write floor is the faster of the two `dd`s (zeros, or the
    // bundle's own bytes): on some virtual disks one is far slower.
    let disk = if !r.dd_copy.is_empty() && r.dd_copy.wall() < r.dd.wall() {
        &r.dd_copy
    } else {
        &r.dd
    };
    let _ = writeln!(
        o,
        "| step | command | wall s | MB/s | peak RSS MiB | written MiB | vs floor | vs skopeo |\n|---|---|---|---|---|---|---|---|"
    );
    let row = |o: &mut String,
               step: &str,
               cmd: &str,
               s: &Series,
               bytes: f64,
               floor: Option<&Series>,
               incumbent: Option<&Series>| {
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
    };
    fn inc(s: &Series) -> Option<&Series> {
        (!s.is_empty()).then_some(s)
    }
    row(
        &mut o,
        "export",
        "`ferry export` (empty cache)",
        &r.ferry_export,
        data,
        Some(disk),
        inc(&r.skopeo_export),
    );
    row(
        &mut o,
        "export",
        "`ferry export --no-cache` (blobs stream into the bundle)",
        &r.ferry_export_stream,
        data,
        Some(disk),
        inc(&r.skopeo_export),
    );
    row(
        &mut o,
        "(export)",
        "`ferry export`, every blob already cached (writing the bundle only)",
        &r.ferry_export_warm,
        data,
        Some(disk),
        None,
    );
    row(
        &mut o,
        "(export)",
        "`ferry export --compression none`, every blob already cached",
        &r.ferry_export_warm_plain,
        data,
        Some(disk),
        None,
    );
    row(
        &mut o,
        "export",
        "`skopeo copy --all` ×N → `oci:`, `tar | zstd -T0`",
        &r.skopeo_export,
        data,
        Some(disk),
        None,
    );
    row(
        &mut o,
        "import",
        "`ferry import` (fresh registry)",
        &r.ferry_import,
        data,
        Some(ingest),
        inc(&r.skopeo_import),
    );
    row(
        &mut o,
        "import",
        "`zstd -d | tar -x`, `skopeo copy --all --preserve-digests` ×N",
        &r.skopeo_import,
        data,
        Some(ingest),
        None,
    );
    let sha_best = if r.openssl.wall() < r.sha256sum.wall() {
        &r.openssl
    } else {
        &r.sha256sum
    };
    let slower = if sha_best.wall() > r.zstd_d.wall() {
        sha_best
    } else {
        &r.zstd_d
    };
    row(
        &mut o,
        "verify",
        "`ferry verify`",
        &r.ferry_verify,
        bundle,
        Some(slower),
        None,
    );
    row(
        &mut o,
        "verify",
        "`sha256sum`",
        &r.sha256sum,
        bundle,
        None,
        None,
    );
    row(
        &mut o,
        "verify",
        "`openssl dgst -sha256`",
        &r.openssl,
        bundle,
        None,
        None,
    );
    row(
        &mut o,
        "verify",
        "`zstd -d -T1 > /dev/null`",
        &r.zstd_d,
        bundle,
        None,
        None,
    );
    row(
        &mut o,
        "verify",
        "`zstd -d | sha256sum`",
        &r.zstd_sha,
        bundle,
        None,
        None,
    );
    row(
        &mut o,
        "floor",
        "`dd if=/dev/zero bs=4M conv=fdatasync` (bundle size)",
        &r.dd,
        bundle,
        None,
        None,
    );
    row(
        &mut o,
        "floor",
        "`dd if=BUNDLE bs=4M conv=fdatasync` (the bundle's bytes, from the page cache)",
        &r.dd_copy,
        bundle,
        None,
        None,
    );
    row(
        &mut o,
        "floor",
        "registry serving: curl GET of every blob, 4 in parallel, to /dev/null",
        &r.fetch,
        data,
        None,
        None,
    );
    row(
        &mut o,
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
        &mut o,
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
        "\n\"vs floor\": export against the faster `dd` (the disk-write floor), import against the faster registry ingest, verify against the slower of \
         single-core `zstd -d` and the faster sha256 tool. Registry ingest by uploads in parallel (one run each): \
         curl (two processes per blob) {}; keep-alive {}.\n",
        sweep.join(", "),
        raw_sweep.join(", ")
    );

    let n = set.images.len();
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

    // Targets.
    let _ = writeln!(
        o,
        "## Targets (issue 6)\n\n| target | measured | met |\n|---|---|---|"
    );
    let met = |b: bool| if b { "met" } else { "**not met**" };
    // Export is judged by its one-pass form (`--no-cache`, written once,
    // like the floor); the cached form is in the same row.
    // Ratios are medians of run-by-run ratios (see `paired`).
    let ex = paired(&r.ferry_export_stream, disk);
    let _ = writeln!(
        o,
        "| export ≤ 1.15 × disk-write floor | `--no-cache` {:.2} s, {ex:.2} × `dd` ({:.2} s) run by run (with the cache: {:.2} s, {:.2}×) | {} |",
        r.ferry_export_stream.wall(),
        disk.wall(),
        r.ferry_export.wall(),
        paired(&r.ferry_export, disk),
        met(ex <= 1.15)
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
        "| import ≤ 1.15 × registry-ingest floor | {:.2} s, {im:.2} × ingest ({:.2} s) run by run | {} |",
        r.ferry_import.wall(),
        ingest.wall(),
        met(im <= 1.15)
    );
    if !r.skopeo_import.is_empty() {
        let x = paired(&r.skopeo_import, &r.ferry_import);
        let _ = writeln!(
            o,
            "| import about 2× faster than the skopeo path | {x:.2}× faster | {} |",
            met(x >= 2.0)
        );
    }
    let vf = slower.wall() / r.ferry_verify.wall();
    let _ = writeln!(
        o,
        "| verify ≥ 90 % of the slower of `zstd -d` and sha256 | {:.0} % ({:.0} MB/s vs {:.0} MB/s) | {} |",
        vf * 100.0,
        bundle / r.ferry_verify.wall() / 1e6,
        bundle / slower.wall() / 1e6,
        met(vf >= 0.9)
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
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    if points.len() >= 2 {
        let span = format!(
            "{}–{} GB",
            f(&points[0], "scale"),
            f(&points[points.len() - 1], "scale")
        );
        let mut worst = 0.0f64;
        let mut growth = 1.0f64;
        for k in [
            "export_rss_mib",
            "export_stream_rss_mib",
            "import_rss_mib",
            "verify_rss_mib",
        ] {
            let v: Vec<f64> = points.iter().map(|p| f(p, k)).collect();
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
            met(worst <= 64.0 && growth <= 1.25)
        );
    } else {
        let _ = writeln!(
            o,
            "| peak RSS flat from 0.5 GB to 8 GB | only this scale measured so far (run `cargo xtask bench --scale 2` etc.; every scale's last run is listed) | not measured |"
        );
    }
    let staged = r.ferry_import.written();
    let _ = writeln!(
        o,
        "| zero staging bytes on import | `ferry import` wrote {} MiB to the file system | {} |",
        mib(staged),
        met(staged < 1048576.0)
    );
    // Where a target is not met: what the figures say stands in the way.
    let mut why = Vec::new();
    if ex > 1.15 {
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
    if im > 1.15 {
        why.push(format!(
            "- **import**: {:.2} s against {:.2} s for the bare uploads ({im:.2}× run by run). This registry's ingest is \
             CPU-bound (it hashes every byte; see the uploads in parallel above) and ferry shares the same \
             {} cores with it, using {:.2} s of CPU itself: it decompresses the bundle once (one reader, \
             issue 14) and hashes every byte once to verify it, and the registry client hashes each \
             uploaded blob again before the final `PUT`. The bare uploads send each blob in one `PUT` \
             ({} at a time), where ferry sends 4 MiB `PATCH`es, each one retried on its own after a fault \
             (a streamed single `PUT`, `Client::upload_blob_streamed`, is built and measured 74–109 MiB/s \
             against 46–53 MiB/s chunked, but cannot resume in the middle of a blob: the bundle is one zstd \
             stream, so a retry would have to read it again from the start). What would close it: more \
             cores (the floor measures the registry alone); the streamed `PUT` with a retry that falls back \
             to chunks from the failed offset; and the upload trusting the reader's hash instead of hashing \
             again.",
            r.ferry_import.wall(),
            ingest.wall(),
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            r.ferry_import.cpu(),
            r.raw_jobs,
        ));
    }
    if vf < 0.9 {
        why.push(format!(
            "- **verify**: decompression runs on its own thread; the reading thread copies the \
             decompressed bytes once and hashes them ({:.0} MB/s). What would close it: handing the \
             decompressed buffers to the hash without the copy.",
            bundle / r.ferry_verify.wall() / 1e6
        ));
    }
    if !why.is_empty() {
        let _ = writeln!(o, "\nWhere a target is not met:\n\n{}", why.join("\n"));
    }
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
            f(pt, "scale"),
            f(pt, "blob_bytes") / 1e6,
            f(pt, "export_s"),
            f(pt, "export_rss_mib"),
            f(pt, "export_stream_s"),
            f(pt, "export_stream_rss_mib"),
            f(pt, "import_s"),
            f(pt, "import_rss_mib"),
            f(pt, "verify_s"),
            f(pt, "verify_rss_mib"),
            pt["date"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(o, "\n{CURVE_NOTE}");
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
    o
}
