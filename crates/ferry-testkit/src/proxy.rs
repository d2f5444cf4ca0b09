//! A fault-injecting HTTP/1.1 proxy to put in front of a real registry.
//!
//! [`FaultProxy`] listens on a loopback port and forwards each request to the
//! upstream unchanged, except those matched by a [`Fault`]: it then answers
//! an error status itself, answers 429 with `Retry-After`, cuts the response
//! after some body bytes, cuts the request body (an upload cut mid-blob),
//! stalls for a while, or holds the request until the test releases it. Clients reach the registry through
//! [`FaultProxy::host`]; the registry builds its upload `Location`s from the
//! `Host` header, which the proxy leaves alone, so upload sessions stay on
//! the proxy too.
//!
//! Each client connection carries one request: the proxy asks the upstream
//! for `Connection: close` and tells the client the same, then streams the
//! rest of the request (a large PUT/PATCH body is never buffered) and the
//! response. The proxy runs on its own thread and runtime, so
//! [`FaultProxy::start`] works from sync and async tests alike.
//!
//! ```no_run
//! use ferry_testkit::proxy::{Action, Fault, FaultProxy};
//! use ferry_testkit::registry::Registry;
//!
//! let registry = Registry::start().unwrap();
//! // The first two blob uploads fail with 503, the third gets through.
//! let proxy = FaultProxy::start(
//!     registry.addr(),
//!     vec![Fault::new(Action::Status(503)).on_path("/blobs/uploads/").times(2)],
//! );
//! let host = proxy.host(); // push to `host` instead of `registry.host()`
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The largest request or response head the proxy accepts.
const MAX_HEAD: usize = 64 * 1024;

/// How long the proxy waits for a request body it discards (before an
/// injected error) or for a client to send its request head.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// What to do with a request a [`Fault`] matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read the request, then answer this status with an OCI-style JSON error
    /// body (`{"errors":[{"code":…,"message":…}]}`); nothing reaches the upstream.
    Status(u16),
    /// Read the request, then answer `429 Too Many Requests` with
    /// `Retry-After: <retry_after_secs>` and a `TOOMANYREQUESTS` error body.
    TooManyRequests {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// Read the request, then answer `503 Service Unavailable` with
    /// `Retry-After: <retry_after_secs>` and an error body (a server in
    /// maintenance, a WebDAV target behind a busy proxy).
    Unavailable {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// Forward the request, pass the response head and this many body bytes
    /// through, then close the connection (a connection cut mid-blob).
    CutAfter(u64),
    /// Accept the request and say nothing for this long, then close the connection.
    Stall(Duration),
    /// Accept the request and say nothing until the test calls
    /// [`FaultProxy::release`] (or drops the proxy), then close the
    /// connection: a deterministic point at which to restart the registry
    /// or kill the client while this request is in flight.
    Hold,
    /// Forward the request head and this many request body bytes, then
    /// close both connections without an answer (an upload cut mid-blob).
    CutRequestAfter(u64),
    /// Forward the request unchanged (recorded without a fault): put it
    /// before another fault on the same requests to let the first `times`
    /// through, e.g. to hold the third chunk of an upload.
    Pass,
}

/// A rule: requests matching `method` and `path_contains` get `action`, for
/// the first `times` matching requests.
///
/// Faults are tried in order; the first one that matches and has uses left
/// is applied (and used up once). Requests no fault takes are forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Only requests whose target (path and query) contains this string.
    pub path_contains: Option<String>,
    /// Only requests with this method (case-insensitive), e.g. `PUT`.
    pub method: Option<String>,
    /// How many requests this fault takes before it is used up
    /// (`usize::MAX`: every one).
    pub times: usize,
    /// What to do.
    pub action: Action,
}

impl Fault {
    /// A fault on the next request of any kind (refine with the builders below).
    pub fn new(action: Action) -> Fault {
        Fault {
            path_contains: None,
            method: None,
            times: 1,
            action,
        }
    }

    /// Only on requests whose target contains `s` (e.g. `/blobs/sha256:`).
    pub fn on_path(mut self, s: &str) -> Fault {
        self.path_contains = Some(s.to_string());
        self
    }

    /// Only on requests with method `m` (e.g. `PATCH`).
    pub fn on_method(mut self, m: &str) -> Fault {
        self.method = Some(m.to_string());
        self
    }

    /// For the first `n` matching requests.
    pub fn times(mut self, n: usize) -> Fault {
        self.times = n;
        self
    }

    /// For every matching request.
    pub fn always(self) -> Fault {
        self.times(usize::MAX)
    }

    /// Whether this fault applies to `method target` (ignoring uses left).
    pub fn matches(&self, method: &str, target: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| target.contains(p))
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The fault applied to it, if any.
    pub fault: Option<Action>,
}

struct State {
    upstream: SocketAddr,
    faults: Mutex<Vec<Fault>>,
    requests: Mutex<Vec<RequestRecord>>,
    count: AtomicUsize,
    /// Bumped by [`FaultProxy::release`]: held requests end.
    release: tokio::sync::watch::Sender<u64>,
}

impl State {
    /// Records the request and takes the fault that applies to it, if any.
    fn take_fault(&self, method: &str, target: &str) -> Option<Action> {
        let action = {
            let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
            faults
                .iter_mut()
                .find(|f| f.times > 0 && f.matches(method, target))
                .map(|f| {
                    if f.times != usize::MAX {
                        f.times -= 1;
                    }
                    f.action.clone()
                })
                .filter(|a| *a != Action::Pass)
        };
        self.count.fetch_add(1, Ordering::SeqCst);
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(RequestRecord {
                method: method.to_string(),
                target: target.to_string(),
                fault: action.clone(),
            });
        action
    }
}

/// A running fault-injecting proxy on `127.0.0.1:<port>`; stopped on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port that forwards to `upstream`
    /// (e.g. [`crate::registry::Registry::addr`]) and applies `faults`.
    ///
    /// # Panics
    /// If no loopback port can be bound or the proxy thread cannot start.
    pub fn start(upstream: SocketAddr, faults: Vec<Fault>) -> FaultProxy {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("fault proxy: failed to bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("fault proxy: failed to make the listener non-blocking");
        let addr = listener
            .local_addr()
            .expect("fault proxy: no local address");
        let state = Arc::new(State {
            upstream,
            faults: Mutex::new(faults),
            requests: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            release: tokio::sync::watch::Sender::new(0),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fault proxy: failed to build a runtime");
                rt.block_on(serve(listener, st, rx));
            })
            .expect("fault proxy: failed to spawn its thread");
        FaultProxy {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:<port>`, to use as the registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.state.upstream
    }

    /// How many requests the proxy has seen (forwarded or faulted).
    pub fn request_count(&self) -> usize {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many requests got a fault so far.
    pub fn faults_applied(&self) -> usize {
        self.requests().iter().filter(|r| r.fault.is_some()).count()
    }

    /// Replaces the fault list (uses left start afresh).
    pub fn set_faults(&self, faults: Vec<Fault>) {
        *self.state.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Appends a fault to the list.
    pub fn add_fault(&self, fault: Fault) {
        self.state
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    /// Ends every request held by [`Action::Hold`] so far (their
    /// connections close without an answer); later ones are held again.
    pub fn release(&self) {
        self.state.release.send_modify(|g| *g += 1);
    }

    /// How many requests got [`Action::Hold`] so far (released or not).
    pub fn held(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.fault == Some(Action::Hold))
            .count()
    }

    /// The faults with their uses left.
    pub fn faults(&self) -> Vec<Fault> {
        self.state
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.state.upstream)
            .finish()
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("fault proxy: cannot use its listener: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((conn, _)) = accepted else { continue };
                let st = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(conn, st).await {
                        tracing::debug!("fault proxy: connection ended: {e}");
                    }
                });
            }
        }
    }
}

/// A parsed request or response head.
struct Head {
    /// The first line, without CRLF.
    first: String,
    /// Header (name, value) pairs in order.
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The head with `Connection: close` instead of any connection options.
    fn with_close(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str(&self.first);
        out.push_str("\r\n");
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case("connection")
                || n.eq_ignore_ascii_case("keep-alive")
                || n.eq_ignore_ascii_case("proxy-connection")
            {
                continue;
            }
            out.push_str(n);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// Reads a head from `s`, starting with the bytes already read in `buf`;
/// returns it and the bytes read past it. `None` when the peer closed before
/// sending anything.
async fn read_head<R: AsyncRead + Unpin>(
    s: &mut R,
    mut buf: Vec<u8>,
) -> std::io::Result<Option<(Head, Vec<u8>)>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(pos + 4);
            let text = String::from_utf8_lossy(&buf[..pos]).into_owned();
            let mut lines = text.split("\r\n");
            let first = lines.next().unwrap_or_default().to_string();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect();
            return Ok(Some((Head { first, headers }, rest)));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("HTTP head too large"));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed inside an HTTP head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        // A TLS handshake record (a client trying HTTPS first on loopback):
        // closed at once, as a plain HTTP server refuses it; never recorded.
        if buf[0] == 0x16 {
            return Ok(None);
        }
    }
}

async fn handle(mut client: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let Some((head, rest)) = tokio::time::timeout(IO_TIMEOUT, read_head(&mut client, Vec::new()))
        .await
        .map_err(|_| std::io::Error::other("timed out waiting for a request"))??
    else {
        return Ok(());
    };
    let mut parts = head.first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    // Subscribed before the request is recorded: a release that follows the
    // record (what a test waits for) is never missed.
    let mut release = state.release.subscribe();
    match state.take_fault(&method, &target) {
        None | Some(Action::Pass) => forward(client, &state, &head, rest, None).await,
        Some(Action::CutAfter(n)) => forward(client, &state, &head, rest, Some(n)).await,
        Some(Action::CutRequestAfter(n)) => cut_request(client, &state, &head, rest, n).await,
        Some(Action::Stall(d)) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        Some(Action::Hold) => {
            let _ = release.changed().await;
            drop(client);
            Ok(())
        }
        Some(Action::Status(code)) => {
            let body = error_body(code);
            reply(client, &head, &method, rest, code, &[], &body).await
        }
        Some(Action::TooManyRequests { retry_after_secs }) => {
            let body = error_body(429);
            let retry = retry_after_secs.to_string();
            reply(
                client,
                &head,
                &method,
                rest,
                429,
                &[("Retry-After", &retry)],
                &body,
            )
            .await
        }
        Some(Action::Unavailable { retry_after_secs }) => {
            let body = error_body(503);
            let retry = retry_after_secs.to_string();
            reply(
                client,
                &head,
                &method,
                rest,
                503,
                &[("Retry-After", &retry)],
                &body,
            )
            .await
        }
    }
}

/// The OCI error code for an injected status.
fn error_code(code: u16) -> &'static str {
    match code {
        400 => "BLOB_UPLOAD_INVALID",
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "NAME_UNKNOWN",
        405 => "UNSUPPORTED",
        429 => "TOOMANYREQUESTS",
        _ => "UNKNOWN",
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}

fn error_body(code: u16) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "errors": [{
            "code": error_code(code),
            "message": format!("fault injected by the ferry-testkit proxy: {code} {}", reason(code)),
            "detail": {"status": code},
        }]
    }))
    .unwrap_or_default()
}

/// Discards the request body (so the client sees the answer, not a reset),
/// then answers `code` with `body` and closes.
async fn reply(
    mut client: TcpStream,
    head: &Head,
    method: &str,
    rest: Vec<u8>,
    code: u16,
    extra: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let expects_continue = head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if !expects_continue {
        let (r, _) = client.split();
        let _ = tokio::time::timeout(IO_TIMEOUT, discard_body(head, rest, r)).await;
    }
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json; charset=utf-8\r\nDocker-Distribution-Api-Version: registry/2.0\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(code),
        body.len()
    );
    for (n, v) in extra {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !method.eq_ignore_ascii_case("HEAD") {
        bytes.extend_from_slice(body);
    }
    client.write_all(&bytes).await?;
    client.flush().await?;
    let _ = client.shutdown().await;
    Ok(())
}

/// Reads and drops a request body framed by `Content-Length` or chunked.
async fn discard_body<R: AsyncRead + Unpin>(
    head: &Head,
    rest: Vec<u8>,
    r: R,
) -> std::io::Result<()> {
    let mut reader = BufReader::new((&rest[..]).chain(r));
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let size_hex = line.trim().split(';').next().unwrap_or_default();
            let size = u64::from_str_radix(size_hex, 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let mut t = String::new();
                    if reader.read_line(&mut t).await? == 0 || t.trim().is_empty() {
                        return Ok(());
                    }
                }
            }
            tokio::io::copy(&mut (&mut reader).take(size + 2), &mut tokio::io::sink()).await?;
        }
    }
    let len: u64 = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    tokio::io::copy(&mut reader.take(len), &mut tokio::io::sink()).await?;
    Ok(())
}

/// Forwards the request head and `n` bytes of its body to the upstream, then
/// closes both connections: neither side sees the request end.
async fn cut_request(
    client: TcpStream,
    state: &State,
    head: &Head,
    rest: Vec<u8>,
    n: u64,
) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(state.upstream).await?;
    let mut client = client;
    upstream.write_all(&head.with_close()).await?;
    let first = (rest.len() as u64).min(n) as usize;
    upstream.write_all(&rest[..first]).await?;
    let left = n - first as u64;
    if left > 0 {
        let (cr, _) = client.split();
        tokio::time::timeout(
            IO_TIMEOUT,
            tokio::io::copy(&mut cr.take(left), &mut upstream),
        )
        .await
        .map_err(|_| std::io::Error::other("timed out relaying the request body"))??;
    }
    upstream.flush().await?;
    // Both connections close here: the upstream sees the body end short of
    // its declared length, the client sees no answer.
    drop(upstream);
    drop(client);
    Ok(())
}

/// Forwards the request to the upstream and the response back, closing the
/// connection after `cut_after` response body bytes if set.
async fn forward(
    client: TcpStream,
    state: &State,
    head: &Head,
    rest: Vec<u8>,
    cut_after: Option<u64>,
) -> std::io::Result<()> {
    let upstream = TcpStream::connect(state.upstream).await?;
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    uw.write_all(&head.with_close()).await?;
    uw.write_all(&rest).await?;
    // The rest of the request body streams on its own while the response comes back.
    let upload = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut uw).await;
        let _ = uw.shutdown().await;
    });
    let result = relay_response(&mut ur, &mut cw, cut_after).await;
    upload.abort();
    let _ = cw.shutdown().await;
    result
}

async fn relay_response<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    ur: &mut R,
    cw: &mut W,
    cut_after: Option<u64>,
) -> std::io::Result<()> {
    let mut pending = Vec::new();
    loop {
        let Some((head, rest)) = read_head(ur, pending).await? else {
            return Ok(());
        };
        let interim = head
            .first
            .split_whitespace()
            .nth(1)
            .is_some_and(|c| c.starts_with('1') && c != "101");
        if !interim {
            return send_final(head, rest, ur, cw, cut_after).await;
        }
        // `100 Continue` and friends pass through as they are.
        let mut raw = head.first.clone().into_bytes();
        raw.extend_from_slice(b"\r\n");
        for (n, v) in &head.headers {
            raw.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        cw.write_all(&raw).await?;
        pending = rest;
    }
}

async fn send_final<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    head: Head,
    rest: Vec<u8>,
    ur: &mut R,
    cw: &mut W,
    cut_after: Option<u64>,
) -> std::io::Result<()> {
    cw.write_all(&head.with_close()).await?;
    match cut_after {
        None => {
            cw.write_all(&rest).await?;
            tokio::io::copy(ur, cw).await?;
        }
        Some(n) => {
            let first = (rest.len() as u64).min(n) as usize;
            cw.write_all(&rest[..first]).await?;
            let left = n - first as u64;
            if left > 0 {
                tokio::io::copy(&mut ur.take(left), cw).await?;
            }
        }
    }
    cw.flush().await
}
