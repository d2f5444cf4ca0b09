//! Test support: a real `docker-registry` process, a fault-injecting proxy in
//! front of it, and a scripted HTTP server for auth flows.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_registry::{ClientConfig, Repo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A `docker-registry` 2.8 serving from a temporary directory on a free
/// loopback port. Killed on drop.
pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Starts a registry, or returns `None` (with a message) when the binary is
/// missing. Under `CI=true` a missing binary fails the test.
pub fn registry() -> Registry {
    registry_available();
    Registry::start(tempfile::tempdir().expect("tempdir"), None)
}

/// Like [`registry`], serving HTTPS with `tls` (the YAML of `http.tls`,
/// paths inside `dir`).
pub fn registry_with_tls(dir: tempfile::TempDir, tls: &str) -> Registry {
    registry_available();
    Registry::start(dir, Some(tls))
}

/// Makes sure the registry binary is there: returns, or the test fails with
/// the install line (never a silent skip; `cargo xtask test` installs it).
pub fn registry_available() {
    if Path::new(REGISTRY_BIN).exists() {
        return;
    }
    panic!("{REGISTRY_BIN} is missing: install it with `apt-get install -y docker-registry` (or run `cargo xtask test`, which installs it)");
}

impl Registry {
    fn start(dir: tempfile::TempDir, tls: Option<&str>) -> Registry {
        let port = free_port();
        let config = dir.path().join("config.yml");
        let tls_yaml = tls.map(|t| format!(", tls: {t}")).unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}{tls_yaml}}}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut reg = Registry { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = if tls.is_some() {
                StdStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            } else {
                raw_get_status(addr, "/v2/") == Some(200)
            };
            if up {
                return reg;
            }
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!(
                    "docker-registry exited with {status}: {}",
                    std::fs::read_to_string(reg.dir.path().join("registry.log"))
                        .unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!("docker-registry did not answer GET /v2/ within 20s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn repo(&self, path: &str) -> Repo {
        Repo {
            host: self.host(),
            path: path.to_string(),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raw_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = StdStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// A client config with fast retries for tests.
pub fn fast_config() -> ClientConfig {
    ClientConfig {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(2),
        timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    }
}

/// Deterministic pseudo-random bytes (xorshift, `craft::noise`).
pub fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    ferry_bundle::craft::noise(len, seed)
}

/// Files in `dir` (names only).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ---- HTTP plumbing for the proxy and the scripted server -----------------

/// A request as the proxy or server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What to do with a request.
pub enum Action {
    /// Pass it to the upstream registry and the answer back.
    Forward,
    /// Answer directly.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Forward, but cut the answer after this many body bytes.
    ForwardTruncated(usize),
    /// Forward, let the registry act on it, then close without answering.
    ForwardThenDrop,
    /// Close the connection without answering.
    Drop,
}

impl Action {
    pub fn status(status: u16) -> Action {
        Action::Respond {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    pub fn json(status: u16, body: &str) -> Action {
        Action::Respond {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Action {
        if let Action::Respond { headers, .. } = &mut self {
            headers.push((k.to_string(), v.to_string()));
        }
        self
    }
}

type Rule = Arc<dyn Fn(&Seen) -> Action + Send + Sync>;

/// A tiny HTTP/1.1 server on a free loopback port that records every request
/// and answers according to a rule, optionally forwarding to an upstream.
pub struct Proxy {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (or a plain scripted server when `None`).
    pub async fn start(
        upstream: Option<SocketAddr>,
        rule: impl Fn(&Seen) -> Action + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rule: Rule = Arc::new(rule);
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (rule, seen) = (rule.clone(), seen2.clone());
                tokio::spawn(async move {
                    let _ = serve_conn(sock, upstream, rule, seen).await;
                });
            }
        });
        Proxy { addr, seen, task }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn repo(&self, path: &str) -> Repo {
        Repo {
            host: self.host(),
            path: path.to_string(),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// How many requests matched `method` and a path ending with `suffix`
    /// (or containing it).
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path().contains(path_contains))
            .count()
    }
}

async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(p + 4);
        }
        let mut tmp = [0u8; 8192];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        // A TLS handshake record: a plain HTTP server refuses it at once.
        if buf[0] == 0x16 {
            return None;
        }
    }
}

async fn serve_conn(
    mut sock: TcpStream,
    upstream: Option<SocketAddr>,
    rule: Rule,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let Some(head_len) = read_head(&mut sock, &mut buf).await else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_len..].to_vec();
    while body.len() < len {
        let mut tmp = vec![0u8; 65536];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let req = Seen {
        method: method.clone(),
        target: target.clone(),
        headers: headers.clone(),
        body,
    };
    seen.lock().expect("lock").push(req.clone());
    let action = rule(&req);
    match action {
        Action::Drop => drop(sock),
        Action::Respond {
            status,
            headers,
            body,
        } => {
            let mut out = format!("HTTP/1.1 {status} Status\r\n");
            for (k, v) in &headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ));
            sock.write_all(out.as_bytes()).await?;
            if method != "HEAD" {
                sock.write_all(&body).await?;
            }
            sock.shutdown().await?;
        }
        forward => {
            let Some(up) = upstream else {
                return Ok(());
            };
            let mut upstream = TcpStream::connect(up).await?;
            let mut out = format!("{method} {target} HTTP/1.1\r\n");
            for (k, v) in &headers {
                if k != "connection" {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
            }
            out.push_str("connection: close\r\n\r\n");
            upstream.write_all(out.as_bytes()).await?;
            upstream.write_all(&req.body).await?;
            let mut resp = Vec::new();
            upstream.read_to_end(&mut resp).await?;
            match forward {
                Action::ForwardThenDrop => {
                    // The registry acted on it; the client never hears.
                    drop(sock);
                }
                Action::ForwardTruncated(n) => {
                    let head_end = resp
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(resp.len(), |p| p + 4);
                    let end = (head_end + n).min(resp.len());
                    sock.write_all(&resp[..end]).await?;
                    sock.flush().await?;
                    // Close abruptly (no FIN-delimited "complete" body: the length says more).
                    drop(sock);
                }
                _ => {
                    sock.write_all(&resp).await?;
                    sock.shutdown().await?;
                }
            }
        }
    }
    Ok(())
}

/// A temporary file path that does not exist yet.
pub fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
