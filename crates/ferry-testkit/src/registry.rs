//! A real registry for tests: Debian's `docker-registry` (CNCF distribution
//! 2.8) on a free loopback port, with its own configuration and storage in a
//! temporary directory.
//!
//! The package's default configuration (`/etc/docker/registry/config.yml`)
//! listens on every interface with htpasswd auth; it is never used here.
//!
//! [`Registry`] is synchronous (`std::process`), so it works the same from
//! plain `#[test]`s and from `#[tokio::test]`s.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The registry binary started by [`Registry::start`].
pub const REGISTRY_BIN: &str = "docker-registry";

/// How long [`Registry::start`] waits for `GET /v2/` to answer 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How many ports [`Registry::start`] tries when the one it picked is taken.
const PORT_ATTEMPTS: usize = 5;

/// How [`Registry::start_with`] configures the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with this PEM certificate and key (`http.tls`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require this user and password (`auth.htpasswd`, a bcrypt entry).
    /// Never printed.
    pub htpasswd: Option<(String, String)>,
    /// Refuse manifest deletes (405), as distribution does by default;
    /// [`Registry::start`] enables them (`storage.delete.enabled`).
    pub no_delete: bool,
}

/// A running `docker-registry serve` on `127.0.0.1:<port>`, killed on drop.
///
/// Its storage and log live in a temporary directory removed on drop.
/// [`Registry::stop`] and [`Registry::restart`] keep the port and the storage,
/// for tests of a registry that goes away in the middle of an operation.
pub struct Registry {
    dir: tempfile::TempDir,
    options: RegistryOptions,
    port: u16,
    child: Option<Child>,
    /// Length of the log file when the current process was started.
    log_start: usize,
}

impl Registry {
    /// Starts a registry on a free loopback port with empty storage, and waits
    /// until `GET /v2/` answers 200 (at most [`READY_TIMEOUT`]).
    ///
    /// The error names the port and carries the registry's log.
    pub fn start() -> Result<Registry> {
        Registry::start_with(RegistryOptions::default())
    }

    /// Like [`Registry::start`], with TLS and/or htpasswd auth. Ready means
    /// `GET /v2/` answers (200, or 401 with htpasswd) over the configured
    /// scheme.
    pub fn start_with(options: RegistryOptions) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("ferry-registry-")
            .tempdir()
            .context("failed to create the registry's temporary directory")?;
        std::fs::create_dir_all(dir.path().join("data"))
            .context("failed to create the registry's storage directory")?;
        if let Some((user, password)) = &options.htpasswd {
            let hash = bcrypt_entry(password);
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n"))
                .context("failed to write the registry's htpasswd file")?;
        }
        let mut reg = Registry {
            dir,
            options,
            port: 0,
            child: None,
            log_start: 0,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            reg.port = free_port()?;
            match reg.spawn_and_wait() {
                Ok(()) => return Ok(reg),
                Err(e) => {
                    let in_use = reg.current_log().contains("address already in use");
                    reg.kill();
                    if !in_use || attempt >= PORT_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// `127.0.0.1:<port>`, the registry host as written in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The running registry's process id (none while it is stopped): the
    /// bench reads its CPU time beside a command it serves.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The socket address the registry listens on (for [`crate::proxy::FaultProxy`]).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// Runs the registry's garbage collection (`docker-registry
    /// garbage-collect CONFIG`) on its storage; the registry
    /// is stopped for it and started again on the same port. Returns the
    /// bytes under the storage before and after.
    pub fn garbage_collect(&mut self) -> Result<(u64, u64)> {
        let before = dir_bytes(&self.storage_dir());
        self.kill();
        let out = Command::new(REGISTRY_BIN)
            .arg("garbage-collect")
            .arg(self.config_path())
            .output()
            .with_context(|| format!("failed to run `{REGISTRY_BIN} garbage-collect`"))?;
        if !out.status.success() {
            bail!(
                "`{REGISTRY_BIN} garbage-collect` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let after = dir_bytes(&self.storage_dir());
        self.restart()?;
        Ok((before, after))
    }

    /// The port the registry listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The filesystem storage root (`storage.filesystem.rootdirectory`);
    /// repositories appear under `docker/registry/v2/repositories/`.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The registry's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// The file that receives the registry's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The registry's log so far (empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The log written since the current (or last) process was started.
    fn current_log(&self) -> String {
        let log = self.log();
        log.get(self.log_start..).unwrap_or(&log).to_string()
    }

    /// Whether the registry process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the registry and waits for it to exit; the port and the storage
    /// are kept for [`Registry::restart`]. Stopping a stopped registry does nothing.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Stops the registry if it runs, then starts it again on the same port
    /// with the same storage, and waits until it answers.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let in_use = self.current_log().contains("address already in use");
                    self.kill();
                    if !in_use || Instant::now() > deadline {
                        return Err(e.context(format!(
                            "failed to restart the registry on {}",
                            self.host()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn write_config(&self) -> Result<()> {
        // JSON is YAML: the configuration goes through a serializer.
        let mut http = serde_json::json!({"addr": format!("127.0.0.1:{}", self.port)});
        if let Some((cert, key)) = &self.options.tls {
            http["tls"] = serde_json::json!({"certificate": cert, "key": key});
        }
        let mut config = serde_json::json!({
            "version": "0.1",
            "log": {"level": "warn", "accesslog": {"disabled": true}},
            "storage": {
                "filesystem": {"rootdirectory": self.storage_dir()},
                "delete": {"enabled": !self.options.no_delete},
            },
            "http": http,
        });
        if self.options.htpasswd.is_some() {
            config["auth"] = serde_json::json!({
                "htpasswd": {"realm": "ferry-test", "path": self.dir.path().join("htpasswd")}
            });
        }
        let text =
            serde_json::to_vec_pretty(&config).context("failed to render the registry config")?;
        std::fs::write(self.config_path(), text)
            .with_context(|| format!("failed to write {}", self.config_path().display()))
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.write_config()?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("failed to open {}", self.log_path().display()))?;
        self.log_start = log.metadata().map(|m| m.len() as usize).unwrap_or_default();
        let log2 = log
            .try_clone()
            .context("failed to duplicate the log file handle")?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .with_context(|| {
                format!(
                    "failed to run `{REGISTRY_BIN}` (install it with `apt-get install -y {}`)",
                    package_for(REGISTRY_BIN)
                )
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        let addr = self.addr();
        let mut last = String::from("no answer yet");
        while start.elapsed() < READY_TIMEOUT {
            if let Some(c) = &mut self.child {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!(
                        "{REGISTRY_BIN} on {} exited with {status} before answering; its log:\n{}",
                        self.host(),
                        self.current_log()
                    );
                }
            }
            if self.options.tls.is_some() {
                // TLS: listening is enough (the client side is what is tested).
                if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            match http_get_status(addr, "/v2/") {
                Ok(200) => return Ok(()),
                Ok(401) if self.options.htpasswd.is_some() => return Ok(()),
                Ok(code) => last = format!("GET /v2/ answered {code}"),
                Err(e) => last = format!("GET /v2/ failed: {e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{REGISTRY_BIN} on {} did not answer 200 on /v2/ within {:?} ({last}); its log:\n{}",
            self.host(),
            READY_TIMEOUT,
            self.current_log()
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host())
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// A bcrypt hash for an htpasswd line (`user:<hash>`), as `htpasswd -B`
/// writes; cost 4, for tests.
pub fn bcrypt_entry(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap_or_default()
}

/// Bytes of the regular files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("failed to bind 127.0.0.1:0")?;
    Ok(l.local_addr()
        .context("failed to read the bound address")?
        .port())
}

/// The status code of a plain `GET path` on `addr` (HTTP/1.1, no keep-alive).
fn http_get_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {line:?}")))
}

/// The Debian package that ships `tool`.
pub fn package_for(tool: &str) -> &str {
    match tool {
        "docker-registry" => "docker-registry",
        "skopeo" => "skopeo",
        "curl" => "curl",
        "zstd" => "zstd",
        "nginx" => "nginx-light",
        "containerd" | "ctr" => "containerd",
        "minisign" => "minisign",
        other => other,
    }
}

/// Whether an executable called `name` is on `PATH`.
pub fn on_path(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Ok(m) => m.is_file() && m.permissions().mode() & 0o111 != 0,
        Err(_) => false,
    }
}

/// Whether the `CI` environment variable says this is a CI run (`true` or `1`).
pub fn under_ci() -> bool {
    std::env::var("CI")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false)
}

/// Makes sure the tool `name` is installed, for tests that need it: returns
/// when it is on `PATH`, and otherwise fails the test with the line
/// that installs it. A test never passes by skipping: `cargo xtask test`
/// installs every tool the tests use (as root, with apt-get).
///
/// ```no_run
/// # use ferry_testkit::registry::require_tool;
/// require_tool("docker-registry");
/// ```
pub fn require_tool(name: &str) {
    if on_path(name) {
        return;
    }
    panic!(
        "required tool `{name}` is missing: install it with `apt-get install -y {}` (or run `cargo xtask test`, which installs it)",
        package_for(name)
    );
}
