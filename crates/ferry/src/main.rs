//! The `ferry` binary: argument parsing, output, exit codes. Thin by design:
//! the work lives in ferry-export, ferry-import and ferry-bundle.
//!
//! Modules: `alloc` (glibc's allocator tuned to keep RSS near what is in
//! use), `cli` (the arguments, clap), `commands/` (one file per
//! subcommand), `net` (the registry client from the flags, the spec's
//! `registries:` and the environment), `ui` (events rendered, every untrusted string escaped).

mod alloc;
mod cli;
mod commands;
mod net;
mod ui;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes (DESIGN.md): 0 success, 1 bad input or bundle, 2 environment or
/// network, 3 partial success. Exit code 1: bad input or bundle, nothing landed.
pub const EXIT_BAD_INPUT: u8 = 1;
/// Exit code 2: the environment or the network failed.
pub const EXIT_ENVIRONMENT: u8 = 2;
/// Exit code 3: part of the work landed (the report says which).
pub const EXIT_PARTIAL: u8 = 3;

/// A failure with its exit code and an optional hint.
#[derive(Debug)]
pub struct Failure {
    /// The exit code (one of the `EXIT_*` constants).
    pub code: u8,
    /// What failed, printed with its causes.
    pub error: anyhow::Error,
    /// What the operator can do about it, printed after the error.
    pub hint: Option<String>,
}

impl Failure {
    /// Bad input or bundle (exit 1): nothing landed.
    pub fn input(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_BAD_INPUT,
            error: error.into(),
            hint: None,
        }
    }
    /// Partial success (exit 3).
    pub fn partial(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_PARTIAL,
            ..Failure::input(error)
        }
    }

    /// The environment or the network failed (exit 2).
    pub fn env(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_ENVIRONMENT,
            error: error.into(),
            hint: None,
        }
    }
    /// Adds what the operator can do about it.
    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }
}

/// What a command returns: its exit code, or a failure.
pub type CmdResult = Result<u8, Failure>;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info,ferry=debug",
        (false, _) => "debug",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: logs, pipes and files get
        // plain text (and `NO_COLOR` is honoured).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_target(false)
        .without_time()
        .try_init();
    // Before the runtime starts its threads.
    alloc::tune();
    let ui = std::sync::Arc::new(ui::Ui::new(cli.json, cli.quiet));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::from(EXIT_ENVIRONMENT);
        }
    };
    let result = runtime.block_on(commands::run(cli.command, &ui));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            ui.finish_bar();
            if ui.mode == ui::Mode::Json {
                let causes: Vec<String> = f.error.chain().skip(1).map(|c| c.to_string()).collect();
                ui.json(serde_json::json!({
                    "event": "error",
                    "message": f.error.to_string(),
                    "causes": causes,
                    "hint": f.hint,
                    "exitCode": f.code,
                }));
            }
            // Errors name references, paths and values from the other side:
            // escaped, so none can print a line of its own or steer the terminal.
            ui::eprint_block("error: ", "  ", &f.error.to_string());
            for cause in f.error.chain().skip(1) {
                ui::eprint_block("  caused by: ", "    ", &cause.to_string());
            }
            if let Some(h) = &f.hint {
                ui::eprint_block("hint: ", "  ", h);
            }
            ExitCode::from(f.code)
        }
    }
}
