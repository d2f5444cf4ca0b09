//! Running one measured command: ferry with its events stamped as they
//! arrive, a floor as a shell script, the arguments of export and import.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::point::Run;
use crate::bench::{children_cpu, time_field, timed_command};

/// Runs `program args` under `/usr/bin/time -v`, stamping each JSON event
/// line of its stdout with the seconds since the start.
pub(super) fn run_events(logs: &Path, label: &str, program: &str, args: &[String]) -> Result<Run> {
    let _ = Command::new("sync").status();
    let tv = logs.join(format!("{label}.time"));
    let log_path = logs.join(format!("{label}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("failed to create {}", log_path.display()))?;
    let t = Instant::now();
    let mut child = timed_command("/usr/bin/time", &tv, program, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("failed to run {program}"))?;
    let mut events = BTreeMap::new();
    let mut kept = String::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let line = line.with_context(|| format!("{label}: reading stdout"))?;
            let at = t.elapsed().as_secs_f64();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if let Some(e) = v.get("event").and_then(|e| e.as_str()) {
                    events.entry(e.to_string()).or_insert(at);
                }
            }
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    let st = child.wait().context("failed to wait for the command")?;
    let wall = t.elapsed().as_secs_f64();
    std::fs::write(logs.join(format!("{label}.out")), &kept)?;
    if !st.success() {
        bail!(
            "{label}: `{program} {}` failed ({st}); see {}",
            args.join(" "),
            log_path.display()
        );
    }
    let text = std::fs::read_to_string(&tv).unwrap_or_default();
    let field = |name: &str| time_field::<f64>(&text, name);
    let r = Run {
        wall,
        rss_mib: field("Maximum resident set size (kbytes):") / 1024.0,
        cpu: field("User time (seconds):") + field("System time (seconds):"),
        events,
    };
    eprintln!(
        "xtask bench: {label:<32} {:>8.2} s  {:>7.1} MiB RSS",
        r.wall, r.rss_mib
    );
    Ok(r)
}

/// `ferry export --json -f SPEC -o BUNDLE --no-cache` and `extra`.
pub(super) fn export_args(spec: &Path, bundle: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "export".into(),
        "--json".into(),
        "-f".into(),
        spec.to_string_lossy().into_owned(),
        "-o".into(),
        bundle.to_string_lossy().into_owned(),
        "--no-cache".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `ferry import --json BUNDLE --registry HOST --flatten`.
pub(super) fn import_args(bundle: &Path, host: &str) -> Vec<String> {
    vec![
        "import".into(),
        "--json".into(),
        bundle.to_string_lossy().into_owned(),
        "--registry".into(),
        host.into(),
        "--flatten".into(),
    ]
}

/// Wall seconds of a shell script (a floor, or the skopeo path), run from
/// `logs/<label>.sh` (a script of one line per reference is longer than an
/// argument may be).
pub(super) fn floor(logs: &Path, label: &str, body: &str) -> Result<f64> {
    Ok(floor_cpu(logs, label, body)?.0)
}

/// [`floor`], and the CPU seconds (user + system) the script and
/// everything it waited for used.
pub(super) fn floor_cpu(logs: &Path, label: &str, body: &str) -> Result<(f64, f64)> {
    let script = logs.join(format!("{label}.sh"));
    std::fs::write(&script, format!("set -euo pipefail\n{body}"))
        .with_context(|| format!("failed to write {}", script.display()))?;
    let _ = Command::new("sync").status();
    let log = std::fs::File::create(logs.join(format!("{label}.log")))?;
    let cpu = children_cpu();
    let t = Instant::now();
    let st = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("failed to run the {label} floor"))?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = children_cpu()
        .zip(cpu)
        .map_or(0.0, |(after, before)| after - before);
    if !st.success() {
        bail!("{label}: floor failed ({st})");
    }
    eprintln!("xtask bench: {label:<32} {wall:>8.2} s");
    Ok((wall, cpu))
}

pub(super) fn q(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"))
}

/// Reads `path` once, to bring it into the page cache.
pub(super) fn warm(path: &Path) -> Result<()> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::copy(&mut f, &mut std::io::sink())
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(())
}
