//! `ferry serve`: the store as a read-only registry and file server, until
//! Ctrl-C or SIGTERM.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use anyhow::anyhow;
use ferry_serve::{ServeError, ServeOptions};
use serde_json::json;

use crate::cli::ServeArgs;
use crate::ui::Ui;
use crate::{CmdResult, Failure};

pub async fn serve(args: ServeArgs, ui: &Arc<Ui>) -> CmdResult {
    let listen = parse_addr(&args.listen, "--listen")?;
    let files_listen = match &args.files_listen {
        Some(a) => Some(parse_addr(a, "--files-listen")?),
        None => None,
    };
    let opts = ServeOptions {
        dir: args.dir.clone(),
        listen,
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        htpasswd: args.htpasswd.clone(),
        files_listen,
        insecure_listen: args.insecure_listen,
    };
    let server = ferry_serve::bind(opts).await.map_err(failure)?;
    let shutdown = shutdown_signal();
    let registry = server.registry_url();
    let files = server.files_url();
    ui.result(&format!("serving {}", args.dir.display()));
    ui.result(&format!(
        "registry  {registry}  (OCI distribution API under /v2/, read-only)"
    ));
    ui.result(&format!("files     {files}"));
    ui.json(json!({
        "event": "serving",
        "dir": args.dir,
        "registry": registry,
        "files": files,
        "tls": server.is_tls(),
        "auth": args.htpasswd.is_some(),
    }));
    ui.line("Ctrl-C or SIGTERM stops the server; -v logs every request");
    server
        .run(shutdown)
        .await
        .map_err(|e| Failure::env(anyhow!(e)))?;
    ui.line("stopped");
    ui.json(json!({"event": "stopped"}));
    Ok(0)
}

/// `HOST:PORT` as a socket address (`127.0.0.1:5000`, `[::1]:5000`,
/// `localhost:5000`: the first address the name resolves to).
fn parse_addr(value: &str, flag: &str) -> Result<SocketAddr, Failure> {
    if let Ok(a) = value.parse() {
        return Ok(a);
    }
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| {
            Failure::input(anyhow!("{flag} `{value}` is not an address"))
                .hint(format!("give HOST:PORT, e.g. {flag} 127.0.0.1:5000"))
        })
}

fn failure(e: ServeError) -> Failure {
    match e {
        ServeError::InsecureListen { .. } => Failure::input(anyhow!(e)).hint(
            "add --tls-cert/--tls-key and --htpasswd, or listen on 127.0.0.1 behind your own proxy",
        ),
        ServeError::NotADirectory { .. } => {
            Failure::input(anyhow!(e)).hint("create a store with `ferry import BUNDLE --store DIR`")
        }
        ServeError::Bind { .. } | ServeError::Read { .. } => Failure::env(anyhow!(e)),
        _ => Failure::input(anyhow!(e)),
    }
}

/// A future that completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are
/// installed now, before the URLs are printed, so a supervisor that signals
/// as soon as it reads them still gets a clean stop.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(int) => {}
            _ = wait(term) => {}
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
