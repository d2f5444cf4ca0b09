//! Output: progress bars on a TTY, plain lines otherwise, JSON lines with `--json`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

/// Set once stdout was closed by its reader (`ferry inspect … | head`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `bytes` and a newline to stdout. A reader that went away (a closed
/// pipe) ends output quietly: nothing more is written to stdout, no panic,
/// and the command runs to its own end and exit code (an import piped into
/// `head` still completes, and says so in its exit code).
pub fn stdout_line(bytes: &[u8]) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let r = out
        .write_all(bytes)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush());
    if r.is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// A line on stderr; a closed stderr is ignored, never a panic.
fn stderr_line(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{msg}");
}

/// How output is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Progress bars and colour-free human text.
    Tty,
    /// Line-oriented logs (cron, CI, pipes).
    Plain,
    /// One JSON object per line on stdout.
    Json,
    /// Errors only.
    Quiet,
}

pub struct Ui {
    pub mode: Mode,
    bar: Mutex<Option<ProgressBar>>,
}

impl Ui {
    pub fn new(json: bool, quiet: bool) -> Ui {
        let mode = if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Tty
        } else {
            Mode::Plain
        };
        Ui {
            mode,
            bar: Mutex::new(None),
        }
    }

    /// A human progress line (stderr), or a JSON `log` event.
    pub fn line(&self, msg: &str) {
        match self.mode {
            Mode::Tty => {
                let bar = self.bar.lock().ok().and_then(|b| b.clone());
                match bar {
                    Some(b) => b.println(msg),
                    None => stderr_line(msg),
                }
            }
            Mode::Plain => stderr_line(msg),
            Mode::Json => self.json(json!({"event": "log", "message": msg})),
            Mode::Quiet => {}
        }
    }

    /// A JSON event (only in JSON mode).
    pub fn json(&self, v: Value) {
        if self.mode == Mode::Json {
            if let Ok(line) = serde_json::to_vec(&v) {
                stdout_line(&line);
            }
        }
    }

    /// Starts a byte progress bar (TTY only).
    pub fn start_bar(&self, label: &str, total: u64) {
        if self.mode != Mode::Tty {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        if let Ok(mut b) = self.bar.lock() {
            if let Some(old) = b.take() {
                old.finish_and_clear();
            }
            *b = Some(bar);
        }
    }

    /// Adds `n` to the current bar's total, relabelled `label` (a second
    /// phase that runs alongside the first); starts a bar when there is none.
    pub fn extend_bar(&self, label: &str, n: u64) {
        if self.mode != Mode::Tty {
            return;
        }
        let extended = match self.bar.lock() {
            Ok(b) => match b.as_ref() {
                Some(bar) => {
                    bar.inc_length(n);
                    bar.set_message(label.to_string());
                    true
                }
                None => false,
            },
            Err(_) => true,
        };
        if !extended {
            self.start_bar(label, n);
        }
    }

    pub fn inc(&self, n: u64) {
        if let Ok(b) = self.bar.lock() {
            if let Some(bar) = b.as_ref() {
                bar.inc(n);
            }
        }
    }

    pub fn finish_bar(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        }
    }

    /// The final human summary on stdout (suppressed in JSON and quiet modes).
    pub fn result(&self, msg: &str) {
        if matches!(self.mode, Mode::Tty | Mode::Plain) {
            stdout_line(msg.as_bytes());
        }
    }
}

/// Every string that came from a bundle, an upstream server or a file name
/// goes through this before it is printed: control, line-break and
/// formatting characters become visible escapes (`\n`, `\x1b`,
/// `\u{2028}`), so a value is always one inert line and cannot add a line,
/// rewrite one, or send the terminal an escape sequence.
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    ferry_bundle::text::escape(s)
}

/// [`esc`] for a path.
pub fn esc_path(p: &std::path::Path) -> String {
    esc(&p.display().to_string()).into_owned()
}

/// Prints an error message (or a cause, or a hint) to stderr: `label` and
/// its first line, then each further line of a message made of several
/// (one failure per line) after `indent` and a `| ` margin. Every line is
/// [`esc`]aped, and the margin marks continuation lines as part of the
/// message above: nothing inside an error can print a line of its own.
pub fn eprint_block(label: &str, indent: &str, msg: &str) {
    let mut lines = msg.split('\n');
    eprintln!("{label}{}", esc(lines.next().unwrap_or_default()));
    for l in lines {
        eprintln!("{indent}| {}", esc(l));
    }
}

/// `1.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
