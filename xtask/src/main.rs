//! Project tasks: `cargo xtask test`, `cargo xtask demo`, `cargo xtask dist`, `cargo xtask bench`,
//! `cargo xtask fuzz`.
//!
//! - `test`: installs what the tests need (Debian's docker-registry, skopeo,
//!   nginx-light, containerd, minisign, curl, openssl and zstd, with apt-get when running as root), then
//!   runs the format check, clippy, every test (one dev build shared by all),
//!   and the demo.
//! - `demo`: the main job end to end on generated content: two local
//!   registries (upstream and target), export → verify → inspect → import,
//!   then checks every digest at the target.
//! - `bench`: ferry against skopeo and the machine's floors on a generated
//!   data set; writes `docs/benchmarks.md` (see `bench/mod.rs`); its
//!   scaling curve (sizes and reference counts, phase times) in `curve/`.
//! - `fuzz`: the cargo-fuzz targets under `fuzz/` for N seconds each, on
//!   nightly (not part of `test` or CI; see `fuzz.rs`, docs/fuzzing.md).

mod bench;
mod curve;
mod demo;
mod dist;
mod fuzz;

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// fmt check, clippy, all tests, the demo.
    Test {
        /// Skip the fmt and clippy checks.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for the test runner (e.g. a filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the main job end to end on generated content.
    Demo {
        /// Keep the registries running until Ctrl-C.
        #[arg(long)]
        keep: bool,
        /// Add an image with one layer of this many MiB.
        #[arg(long, value_name = "MiB")]
        big: Option<u64>,
    },
    /// Build one static ferry binary (musl, else glibc crt-static) under target/dist/.
    Dist,
    /// ferry vs skopeo and the machine's floors; writes docs/benchmarks.md.
    Bench {
        /// Unique compressed layer bytes of the data set, in GB (0.5 to 8).
        #[arg(long, default_value_t = 2.0, value_name = "GB")]
        scale: f64,
        /// Runs of every measurement (the median is reported).
        #[arg(long, default_value_t = 3, value_name = "N")]
        runs: usize,
        /// Where to write the report.
        #[arg(long, default_value = "docs/benchmarks.md", value_name = "FILE")]
        out: std::path::PathBuf,
        /// Measure ferry and the floors only (no skopeo path).
        #[arg(long)]
        no_skopeo: bool,
        /// Also profile one ferry export, import and verify with `perf record`.
        #[arg(long)]
        perf: bool,
        /// Only generate the data set (cached under target/bench/), measure nothing.
        #[arg(long)]
        generate_only: bool,
        /// Serve the data set (or with one `--refs N`, that many small
        /// images) from a registry and wait, for measuring by hand.
        #[arg(long, conflicts_with = "generate_only")]
        serve: bool,
        /// Run the scaling curve at these data-set sizes in GB (e.g. 0.5,2,8)
        /// instead of the comparison with skopeo.
        #[arg(long, value_delimiter = ',', value_name = "GB,...")]
        sizes: Vec<f64>,
        /// … and at these counts of small images (e.g. 25,500,2000,10000).
        #[arg(long, value_delimiter = ',', value_name = "N,...")]
        refs: Vec<usize>,
        /// Where the curve's report goes.
        #[arg(long, default_value = "target/bench/curve.md", value_name = "FILE")]
        curve_out: std::path::PathBuf,
        /// The curve also times the skopeo path at each count of references
        /// up to 2,000 (one `skopeo copy` per reference, sequential: minutes
        /// at 2,000 references).
        #[arg(long)]
        skopeo: bool,
        /// Measure this ferry binary instead of building one.
        #[arg(long, value_name = "PATH")]
        ferry_bin: Option<std::path::PathBuf>,
    },
    /// Run the cargo-fuzz targets (nightly) for N seconds each; see docs/fuzzing.md.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60, value_name = "N")]
        seconds: u64,
        /// Only this target (bundle_reader, spec_parser, manifest_parser).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// libFuzzer's -rss_limit_mb: memory one run may use.
        #[arg(long, default_value_t = 2048, value_name = "MB")]
        rss_limit_mb: u64,
        /// libFuzzer's -timeout: seconds one input may take.
        #[arg(long, default_value_t = 30, value_name = "S")]
        timeout: u64,
    },
}

/// `path` as given when absolute, else under the project's root (where
/// `cargo xtask` runs from is not always the root).
fn from_root(path: std::path::PathBuf) -> std::path::PathBuf {
    if path.is_absolute() {
        path
    } else {
        root().join(path)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Test { no_lint, args } => test(no_lint, &args),
        Task::Demo { keep, big } => demo::run(keep, big),
        Task::Bench {
            scale,
            runs,
            out,
            no_skopeo,
            perf,
            generate_only,
            serve,
            sizes,
            refs,
            curve_out,
            skopeo,
            ferry_bin,
        } => {
            let opts = bench::Options {
                scale,
                runs,
                out: from_root(out),
                no_skopeo,
                perf,
                generate_only,
                serve,
                sizes,
                refs,
                curve_out: from_root(curve_out),
                curve_skopeo: skopeo,
                ferry_bin,
            };
            // The curve stands on the bench's data sets, floors and tools;
            // serving a set or generating one is the bench's own.
            if serve || generate_only || (opts.sizes.is_empty() && opts.refs.is_empty()) {
                return bench::run(&opts);
            }
            let curve = curve::CurveOptions {
                sizes: opts.sizes.clone(),
                refs: opts.refs.clone(),
                runs: opts.runs.max(1),
                out: opts.curve_out.clone(),
                skopeo: opts.curve_skopeo,
            };
            curve.check()?;
            bench::ensure_bench_tools(&opts)?;
            curve::run(
                &curve,
                &bench::ferry_under_test(&opts)?,
                &bench::bench_dir(),
            )
        }
        Task::Dist => dist::run(),
        Task::Fuzz {
            seconds,
            target,
            rss_limit_mb,
            timeout,
        } => fuzz::run(&fuzz::Options {
            seconds,
            target,
            rss_limit_mb,
            timeout,
        }),
    }
}

/// The workspace root (the directory above `xtask/`).
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| ".".into())
}

/// Whether `tool` is installed: on `PATH`, or in `/usr/sbin` or `/sbin`
/// (where Debian puts `nginx`; not on every user's `PATH`).
fn on_path(tool: &str) -> bool {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    on_path
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).is_file())
}

/// [`on_path`], for the other tasks.
pub fn on_path_pub(tool: &str) -> bool {
    on_path(tool)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Makes sure Debian's packages providing `tools` are installed.
pub fn ensure_tools(tools: &[(&str, &str)], required: bool) -> Result<()> {
    let missing: Vec<&(&str, &str)> = tools.iter().filter(|(bin, _)| !on_path(bin)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    // One package may ship several tools (containerd: `containerd`, `ctr`).
    let mut pkgs: Vec<&str> = Vec::new();
    for (_, p) in &missing {
        if !pkgs.contains(p) {
            pkgs.push(p);
        }
    }
    if is_root() && on_path("apt-get") {
        eprintln!("xtask: installing {} with apt-get", pkgs.join(" "));
        let update = Command::new("apt-get").args(["update", "-qq"]).status()?;
        if !update.success() {
            bail!("`apt-get update` failed");
        }
        let st = Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if !st.success() {
            bail!("`apt-get install -y {}` failed", pkgs.join(" "));
        }
        return Ok(());
    }
    let msg = format!(
        "missing {}: install with `sudo apt-get install -y {}`",
        missing
            .iter()
            .map(|(b, _)| *b)
            .collect::<Vec<_>>()
            .join(", "),
        pkgs.join(" ")
    );
    if required {
        bail!(msg)
    }
    eprintln!("xtask: warning: {msg} (tests that need them are skipped)");
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut c: Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    let st = c
        .status()
        .with_context(|| format!("failed to start {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

/// PyYAML, the YAML 1.1 reader (as Helm and Ansible read) that checks the
/// emitted YAML: installed with pip when missing, else the install line.
fn ensure_pyyaml(required: bool) -> Result<()> {
    let has = |py: &str| {
        Command::new(py)
            .args(["-c", "import yaml"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if has("python3") {
        return Ok(());
    }
    eprintln!("xtask: installing PyYAML with pip");
    let st = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "pyyaml"])
        .status();
    if matches!(st, Ok(s) if s.success()) && has("python3") {
        return Ok(());
    }
    if required {
        bail!("missing PyYAML: install with `python3 -m pip install pyyaml` (or `apt-get install -y python3-yaml`)");
    }
    eprintln!("xtask: PyYAML is missing; the tests that read emitted YAML as YAML 1.1 will fail: `python3 -m pip install pyyaml`");
    Ok(())
}

fn test(no_lint: bool, args: &[String]) -> Result<()> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    ensure_tools(
        &[
            ("docker-registry", "docker-registry"),
            ("skopeo", "skopeo"),
            ("nginx", "nginx-light"),
            ("containerd", "containerd"),
            ("ctr", "containerd"),
            ("minisign", "minisign"),
            ("curl", "curl"),
            ("openssl", "openssl"),
            ("zstd", "zstd"),
        ],
        ci,
    )?;
    ensure_pyyaml(ci)?;
    if !no_lint {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        run(fmt, "cargo fmt --check")?;
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        run(clippy, "cargo clippy")?;
    }
    // The demo is the README's main command: it must not rot. It runs before
    // the tests so that the test runner's summary is the last thing printed.
    if args.is_empty() {
        demo::run(false, None)?;
    }
    let nextest = cargo()
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let mut t = cargo();
    if nextest {
        t.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        t.args(["test", "--workspace", "--no-fail-fast"]);
    }
    t.args(args);
    run(t, "tests")
}
