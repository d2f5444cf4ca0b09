//! Measuring one command: a run's wall time, peak RSS, bytes written and CPU
//! time ([`Sample`]), the runs of one command ([`Series`]), medians and
//! run-by-run ratios, and the [`Runner`] that times (`/usr/bin/time -v`) or
//! profiles (`perf record`) a command.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// One measured run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    pub(crate) wall: f64,
    pub(super) rss_kib: u64,
    pub(super) written: u64,
    /// User + system CPU seconds of the command (all its threads).
    pub(super) cpu: f64,
    /// User + system CPU seconds of the registry the command talked to,
    /// over the run (where measured: the raw ingest).
    pub(crate) registry_cpu: f64,
}

/// User + system CPU seconds a running process has used so far (all its
/// threads, from `/proc/<pid>/stat`), or none where it cannot be read.
pub(crate) fn process_cpu(pid: u32) -> Option<f64> {
    // utime and stime, the 14th and 15th fields of the line.
    stat_cpu(&format!("/proc/{pid}/stat"), 11)
}

/// Two CPU tick fields of a `/proc/…/stat` file added up, in seconds:
/// `first` and the one after it, counted from the field after the command
/// name (which may hold spaces, in parentheses), so the line's 3rd field,
/// the state, is 0.
fn stat_cpu(path: &str, first: usize) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks =
        fields.get(first)?.parse::<f64>().ok()? + fields.get(first + 1)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// One field of a `/usr/bin/time -v` report (`name` is its label with the
/// colon), or zero where the report lacks it.
pub(crate) fn time_field<T: std::str::FromStr + Default>(report: &str, name: &str) -> T {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_default()
}

/// User + system CPU seconds of this process's children that have ended
/// and been waited for (`cutime` + `cstime` of `/proc/self/stat`): read
/// before and after a command, the CPU it and everything it waited for
/// used (a shell script's `dd`, say).
pub(crate) fn children_cpu() -> Option<f64> {
    // cutime and cstime, the 16th and 17th fields of the line.
    stat_cpu("/proc/self/stat", 13)
}

/// `time_bin -v -o report program args`: the command every measured run
/// goes through (its report read with [`time_field`]).
pub(crate) fn timed_command(
    time_bin: &str,
    report: &Path,
    program: &str,
    args: &[String],
) -> Command {
    let mut c = Command::new(time_bin);
    c.arg("-v").arg("-o").arg(report).arg(program).args(args);
    c
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 where it
/// cannot be asked, which is every Linux architecture ferry is built for).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// The runs of one measured command.
#[derive(Debug, Clone, Default)]
pub(super) struct Series {
    pub(super) samples: Vec<Sample>,
}

impl Series {
    pub(super) fn push(&mut self, s: Sample) {
        self.samples.push(s);
    }
    pub(super) fn wall(&self) -> f64 {
        median(self.samples.iter().map(|s| s.wall).collect())
    }
    pub(super) fn min(&self) -> f64 {
        self.samples
            .iter()
            .map(|s| s.wall)
            .fold(f64::INFINITY, f64::min)
    }
    pub(super) fn max(&self) -> f64 {
        self.samples.iter().map(|s| s.wall).fold(0.0, f64::max)
    }
    /// The largest peak RSS of any run, in MiB.
    pub(super) fn rss_mib(&self) -> f64 {
        self.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0
    }
    /// The median of the bytes written.
    pub(super) fn written(&self) -> f64 {
        median(self.samples.iter().map(|s| s.written as f64).collect())
    }
    pub(super) fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
    /// The median CPU seconds (user + system).
    pub(super) fn cpu(&self) -> f64 {
        median(self.samples.iter().map(|s| s.cpu).collect())
    }
}

/// The median of the run-by-run ratios `a[i] / b[i]`: runs measured side
/// by side saw the same machine, which a ratio of medians taken minutes
/// apart on a shared machine does not.
pub(super) fn paired(a: &Series, b: &Series) -> f64 {
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
pub(super) struct Runner {
    pub(super) logs: PathBuf,
    pub(super) time_bin: String,
}

impl Runner {
    pub(super) fn timed(&self, label: &str, program: &str, args: &[String]) -> Result<Sample> {
        // Start every measurement with no dirty pages left from the last one.
        let _ = Command::new("sync").status();
        let tv = self.logs.join(format!("{label}.time"));
        let log_path = self.logs.join(format!("{label}.log"));
        let log = File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let log2 = log.try_clone()?;
        let t = Instant::now();
        let st = timed_command(&self.time_bin, &tv, program, args)
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
        let s = Sample {
            wall,
            rss_kib: time_field::<u64>(&text, "Maximum resident set size (kbytes):"),
            written: time_field::<u64>(&text, "File system outputs:") * 512,
            cpu: time_field::<f64>(&text, "User time (seconds):")
                + time_field::<f64>(&text, "System time (seconds):"),
            registry_cpu: 0.0,
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
    pub(super) fn profile(
        &self,
        label: &str,
        program: &str,
        args: &[String],
    ) -> Result<Vec<String>> {
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

    pub(super) fn script(&self, label: &str, dir: &Path, body: &str) -> Result<Sample> {
        let path = dir.join(format!("{label}.sh"));
        std::fs::write(&path, format!("set -euo pipefail\n{body}"))
            .with_context(|| format!("failed to write {}", path.display()))?;
        self.timed(label, "bash", &[path.to_string_lossy().into_owned()])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn a_process_cpu_time_is_read_and_grows_with_work() {
        let me = std::process::id();
        let before = process_cpu(me).unwrap();
        // Work until the kernel's counter moves (ticks are 10 ms): this
        // asserts the reading, not a speed.
        let mut x = 0u64;
        let mut after = before;
        for _ in 0..1000 {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            after = process_cpu(me).unwrap();
            if after > before {
                break;
            }
        }
        assert!(after > before, "{before} -> {after} ({x})");
        // No such process: nothing, rather than a number.
        assert_eq!(process_cpu(u32::MAX), None);
    }

    #[test]
    fn a_time_v_report_s_fields_are_read_by_their_label() {
        let report = "\tUser time (seconds): 1.25\n\tSystem time (seconds): 0.50\n\tMaximum resident set size (kbytes): 49152\n";
        assert_eq!(time_field::<f64>(report, "User time (seconds):"), 1.25);
        assert_eq!(
            time_field::<u64>(report, "Maximum resident set size (kbytes):"),
            49152
        );
        // A field the report lacks, or one that is not a number, reads as zero.
        assert_eq!(time_field::<u64>(report, "File system outputs:"), 0);
        assert_eq!(time_field::<u64>(report, "User time (seconds):"), 0);
    }

    #[test]
    fn a_waited_for_child_s_cpu_is_counted_once_it_ends() {
        let before = children_cpu().unwrap();
        // A shell that works until its own CPU counter has moved, then
        // ends: its CPU shows in this process's children's only then.
        let st = Command::new("bash")
            .arg("-c")
            .arg("t0=$(awk '{print $14}' /proc/$$/stat); while [ \"$(awk '{print $14}' /proc/$$/stat)\" = \"$t0\" ]; do :; done")
            .status()
            .unwrap();
        assert!(st.success());
        let after = children_cpu().unwrap();
        assert!(after > before, "{before} -> {after}");
    }
}
