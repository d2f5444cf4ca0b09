//! A real file server for tests: Debian's `nginx` (package `nginx-light`,
//! 1.22, built `--with-http_dav_module`) on a free loopback port, with its own
//! configuration, pid file, logs and temporary directories in a temporary
//! directory.
//!
//! The package's default configuration (`/etc/nginx/nginx.conf`, which
//! listens on port 80 of every interface) is never used: nginx is started as
//! `nginx -c CONF -p PREFIX -e ERROR_LOG -g 'daemon off;'` with
//! `master_process off`, so there is one process, it never switches to
//! another user, and killing it on drop leaves no orphaned worker holding the
//! port.
//!
//! Two uses:
//!
//! - a **WebDAV target** for `ferry import --files http://…`
//!   (`NginxOptions::webdav`): `dav_methods PUT DELETE MKCOL COPY MOVE`,
//!   `create_full_put_path off` by default (so parents must be created with
//!   `MKCOL`), optional basic auth;
//! - a read-only **upstream file server** (a classic Helm repository, a Falco
//!   driver tree, plugin zips): `webdav: false`, `autoindex off`.
//!
//! What nginx 1.22 does, as observed with this harness:
//!
//! - a `+` in the path, literal or as `%2B`, lands as a literal `+` on disk
//!   (nginx decodes `%XX` in the path and never turns `+` into a space);
//! - `PUT` into a missing directory answers **500** (with
//!   `create_full_put_path off`; the error log says `rename() … failed (2: No
//!   such file or directory)`), not 409;
//! - `MKCOL` needs a trailing `/` (409 without one), answers 201 when it
//!   creates the collection, 405 when something already exists at that path
//!   (a collection *or a file*), and 409 when its parent is missing;
//! - `MOVE` needs a `Destination` on the same host as the request's `Host`
//!   header (400 otherwise), answers 201 (new) or 204 (replaced), 412 when
//!   the destination exists and `Overwrite: F`, and creates missing parents of
//!   the destination;
//! - `OPTIONS` answers 405; `HEAD` of a directory answers 403 (no index, no
//!   autoindex) or 301 without the trailing `/`;
//! - an interrupted `PUT` (the client closes the connection before
//!   `Content-Length` bytes) leaves nothing, neither the file nor a body temp;
//! - files are created with `dav_access` permissions (nginx's default is
//!   `user:rw`, i.e. 0600; this harness sets `user:rw group:rw all:r`).
//!
//! [`Nginx`] is synchronous (`std::process`), so it works the same from plain
//! `#[test]`s and from `#[tokio::test]`s.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::registry::{on_path, package_for};

/// The file server binary started by [`Nginx::start`].
pub const NGINX_BIN: &str = "nginx";

/// Where Debian installs [`NGINX_BIN`]; `/usr/sbin` is not on every user's
/// `PATH`.
pub const NGINX_SBIN: &str = "/usr/sbin/nginx";

/// How long [`Nginx::start`] waits for the server to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How many ports [`Nginx::start`] tries when the one it picked is taken.
const PORT_ATTEMPTS: usize = 5;

/// The nginx binary to run: `nginx` on `PATH`, else [`NGINX_SBIN`] when it
/// exists.
pub fn nginx_binary() -> Option<PathBuf> {
    if on_path(NGINX_BIN) {
        return Some(PathBuf::from(NGINX_BIN));
    }
    let sbin = Path::new(NGINX_SBIN);
    sbin.is_file().then(|| sbin.to_path_buf())
}

/// Whether nginx is installed, for tests that need it (like
/// [`crate::registry::require_tool`], but also finds [`NGINX_SBIN`] when
/// `/usr/sbin` is not on `PATH`):
///
/// - found: returns;
/// - missing: the test fails, naming the Debian package to install (never a
///   silent skip).
pub fn require_nginx() {
    if nginx_binary().is_some() {
        return;
    }
    let pkg = package_for(NGINX_BIN);
    panic!(
        "required tool `{NGINX_BIN}` is missing: install it with `apt-get install -y {pkg}` (or run `cargo xtask test`, which installs it)"
    );
}

/// How [`Nginx::start`] configures the server.
#[derive(Clone)]
pub struct NginxOptions {
    /// The directory served (`root`); it must exist.
    pub root: PathBuf,
    /// Accept `PUT DELETE MKCOL COPY MOVE` (WebDAV, `ngx_http_dav_module`).
    /// Without it the server is read-only (GET and HEAD).
    pub webdav: bool,
    /// `create_full_put_path`: when `false` (the default), a `PUT` into a
    /// missing directory fails (500) and clients must `MKCOL` the parents.
    pub create_full_put_path: bool,
    /// The `dav_methods` when `NginxOptions::webdav`; `None` means
    /// `PUT DELETE MKCOL COPY MOVE` (e.g. `Some("PUT DELETE MKCOL")` for a
    /// server without `MOVE`).
    pub dav_methods: Option<String>,
    /// Basic auth user and password for every request (an
    /// `auth_basic_user_file` with a `{PLAIN}` entry). Never printed.
    pub basic_auth: Option<(String, String)>,
    /// Serve HTTPS with this PEM certificate and key (e.g. from
    /// [`crate::pki::Pki`]); [`Nginx::url`] is then `https://`.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl NginxOptions {
    /// A read-only server of `root`, no auth.
    pub fn new(root: impl Into<PathBuf>) -> NginxOptions {
        NginxOptions {
            root: root.into(),
            webdav: false,
            create_full_put_path: false,
            dav_methods: None,
            basic_auth: None,
            tls: None,
        }
    }

    /// A WebDAV server of `root` (`create_full_put_path off`), no auth.
    pub fn webdav(root: impl Into<PathBuf>) -> NginxOptions {
        NginxOptions {
            webdav: true,
            ..NginxOptions::new(root)
        }
    }
}

impl fmt::Debug for NginxOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NginxOptions")
            .field("root", &self.root)
            .field("webdav", &self.webdav)
            .field("create_full_put_path", &self.create_full_put_path)
            .field("dav_methods", &self.dav_methods)
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("tls", &self.tls)
            .finish()
    }
}

/// A running nginx on `127.0.0.1:<port>`, killed on drop.
///
/// Its configuration, logs, pid file and temporary directories live in a
/// temporary directory removed on drop; the served root is the caller's.
pub struct Nginx {
    dir: tempfile::TempDir,
    options: NginxOptions,
    port: u16,
    child: Option<Child>,
    /// Length of the error log when the current process was started.
    log_start: usize,
}

impl Nginx {
    /// Starts nginx serving `options.root` on a free loopback port and waits
    /// until it answers HTTP (any status; at most [`READY_TIMEOUT`]).
    ///
    /// The error names the port and carries nginx's error log.
    pub fn start(options: NginxOptions) -> Result<Nginx> {
        if !options.root.is_dir() {
            bail!(
                "the nginx root {} is not a directory",
                options.root.display()
            );
        }
        if let Some((user, password)) = &options.basic_auth {
            if user.is_empty()
                || user.contains([':', '\n', '\r'])
                || password.contains(['\n', '\r'])
            {
                bail!("the basic auth user must be non-empty, without `:` or line breaks, and the password without line breaks");
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("ferry-nginx-")
            .tempdir()
            .context("failed to create nginx's temporary directory")?;
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            let p = dir.path().join("temp").join(sub);
            std::fs::create_dir_all(&p)
                .with_context(|| format!("failed to create {}", p.display()))?;
        }
        let mut nginx = Nginx {
            dir,
            options,
            port: 0,
            child: None,
            log_start: 0,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            nginx.port = free_port()?;
            match nginx.spawn_and_wait() {
                Ok(()) => return Ok(nginx),
                Err(e) => {
                    let in_use = nginx.current_log().contains("Address already in use");
                    nginx.kill();
                    if !in_use || attempt >= PORT_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// `http://127.0.0.1:<port>` (`https://` with [`NginxOptions::tls`]; no
    /// trailing `/`).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port nginx listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address nginx listens on (for [`crate::proxy::FaultProxy`]).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.options.root
    }

    /// nginx's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    /// nginx's error log (also its stdout and stderr).
    pub fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    /// nginx's access log.
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The error log so far (empty if unreadable).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    /// The access log so far, one request a line (empty if unreadable).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.access_log_path()).unwrap_or_default()
    }

    /// The error log written since the current process was started.
    fn current_log(&self) -> String {
        let log = self.error_log();
        log.get(self.log_start..).unwrap_or(&log).to_string()
    }

    /// Whether the nginx process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills nginx and waits for it to exit. Stopping a stopped server does
    /// nothing.
    pub fn stop(&mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn config(&self) -> String {
        let tmp = |sub: &str| quote(&self.dir.path().join("temp").join(sub));
        let mut location = String::new();
        if self.options.webdav {
            let methods = self
                .options
                .dav_methods
                .as_deref()
                .unwrap_or("PUT DELETE MKCOL COPY MOVE");
            location.push_str(&format!(
                "            dav_methods {methods};\n\
                 \x20           dav_access user:rw group:rw all:r;\n"
            ));
            location.push_str(&format!(
                "            create_full_put_path {};\n",
                if self.options.create_full_put_path {
                    "on"
                } else {
                    "off"
                }
            ));
        }
        if self.options.basic_auth.is_some() {
            location.push_str(&format!(
                "            auth_basic \"ferry test\";\n\
                 \x20           auth_basic_user_file {};\n",
                quote(&self.htpasswd_path())
            ));
        }
        format!(
            "# written by ferry-testkit; never the package's default configuration\n\
             master_process off;\n\
             pid {pid};\n\
             error_log {error_log} info;\n\
             events {{\n    worker_connections 256;\n}}\n\
             http {{\n\
             \x20   access_log {access_log};\n\
             \x20   client_body_temp_path {body};\n\
             \x20   proxy_temp_path {proxy};\n\
             \x20   fastcgi_temp_path {fastcgi};\n\
             \x20   uwsgi_temp_path {uwsgi};\n\
             \x20   scgi_temp_path {scgi};\n\
             \x20   default_type application/octet-stream;\n\
             \x20   types {{\n\
             \x20       application/x-yaml yaml yml;\n\
             \x20       application/gzip tgz gz;\n\
             \x20       application/zip zip;\n\
             \x20       text/plain txt sha256 sha512;\n\
             \x20   }}\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port}{ssl};\n\
             {tls}\
             \x20       server_name localhost;\n\
             \x20       root {root};\n\
             \x20       autoindex off;\n\
             \x20       client_max_body_size 0;\n\
             \x20       location / {{\n\
             {location}\
             \x20       }}\n\
             \x20   }}\n\
             }}\n",
            pid = quote(&self.dir.path().join("nginx.pid")),
            error_log = quote(&self.error_log_path()),
            access_log = quote(&self.access_log_path()),
            body = tmp("body"),
            proxy = tmp("proxy"),
            fastcgi = tmp("fastcgi"),
            uwsgi = tmp("uwsgi"),
            scgi = tmp("scgi"),
            port = self.port,
            ssl = if self.options.tls.is_some() {
                " ssl"
            } else {
                ""
            },
            tls = match &self.options.tls {
                Some((cert, key)) => format!(
                    "        ssl_certificate {};\n        ssl_certificate_key {};\n",
                    quote(cert),
                    quote(key)
                ),
                None => String::new(),
            },
            root = quote(&self.options.root),
        )
    }

    fn htpasswd_path(&self) -> PathBuf {
        self.dir.path().join("htpasswd")
    }

    fn write_config(&self) -> Result<()> {
        if let Some((user, password)) = &self.options.basic_auth {
            // nginx accepts `{PLAIN}` entries in auth_basic_user_file.
            std::fs::write(
                self.htpasswd_path(),
                format!("{user}:{{PLAIN}}{password}\n"),
            )
            .with_context(|| format!("failed to write {}", self.htpasswd_path().display()))?;
        }
        std::fs::write(self.config_path(), self.config())
            .with_context(|| format!("failed to write {}", self.config_path().display()))
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.write_config()?;
        let bin = nginx_binary().with_context(|| {
            format!(
                "`{NGINX_BIN}` is not installed (install it with `apt-get install -y {}`)",
                package_for(NGINX_BIN)
            )
        })?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.error_log_path())
            .with_context(|| format!("failed to open {}", self.error_log_path().display()))?;
        self.log_start = log.metadata().map(|m| m.len() as usize).unwrap_or_default();
        let log2 = log
            .try_clone()
            .context("failed to duplicate the log file handle")?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(self.config_path())
            .arg("-p")
            .arg(self.dir.path())
            .arg("-e")
            .arg(self.error_log_path())
            .args(["-g", "daemon off;"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .with_context(|| {
                format!(
                    "failed to run `{}` (install it with `apt-get install -y {}`)",
                    bin.display(),
                    package_for(NGINX_BIN)
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
                        "{NGINX_BIN} on {} exited with {status} before answering; its error log:\n{}",
                        self.host(),
                        self.current_log()
                    );
                }
            }
            // Any HTTP answer (403 for the root without autoindex, 401 with
            // auth) means nginx is serving.
            match http_head_status(addr, "/") {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("HEAD / failed: {e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{NGINX_BIN} on {} did not answer within {:?} ({last}); its error log:\n{}",
            self.host(),
            READY_TIMEOUT,
            self.current_log()
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

impl fmt::Debug for Nginx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nginx")
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .field("options", &self.options)
            .finish()
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("failed to bind 127.0.0.1:0")?;
    Ok(l.local_addr()
        .context("failed to read the bound address")?
        .port())
}

/// An nginx configuration string holding `path` (double-quoted).
fn quote(path: &Path) -> String {
    let s = path.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The status code of a plain `HEAD path` on `addr` (HTTP/1.1, no keep-alive).
fn http_head_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "HEAD {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn read_only_server_serves_files_and_refuses_writes() {
        require_nginx();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("charts")).unwrap();
        std::fs::write(root.path().join("charts/index.yaml"), b"apiVersion: v1\n").unwrap();
        let nginx = Nginx::start(NginxOptions::new(root.path())).unwrap();
        let c = client();
        let r = c
            .get(format!("{}/charts/index.yaml", nginx.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"apiVersion: v1\n");
        // autoindex off: a directory listing is not served.
        let r = c
            .get(format!("{}/charts/", nginx.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = c
            .put(format!("{}/charts/new", nginx.url()))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        assert!(!root.path().join("charts/new").exists());
        assert!(nginx.access_log().contains("GET /charts/index.yaml"));
    }

    #[tokio::test]
    async fn webdav_needs_mkcol_and_keeps_plus_literal() {
        require_nginx();
        let root = tempfile::tempdir().unwrap();
        let mut opts = NginxOptions::webdav(root.path());
        opts.basic_auth = Some(("ferry".into(), "s3cret".into()));
        assert!(!format!("{opts:?}").contains("s3cret"));
        let nginx = Nginx::start(opts).unwrap();
        let c = client();
        let url = |p: &str| format!("{}/{p}", nginx.url());
        let r = c.put(url("a/f")).body("x").send().await.unwrap();
        assert_eq!(r.status(), 401);
        let put = |p: &str| c.put(url(p)).basic_auth("ferry", Some("s3cret"));
        let mkcol = |p: &str| {
            c.request(reqwest::Method::from_bytes(b"MKCOL").unwrap(), url(p))
                .basic_auth("ferry", Some("s3cret"))
        };
        // create_full_put_path off: no parent, no file.
        let r = put("a/f").body("x").send().await.unwrap();
        assert_eq!(r.status(), 500);
        assert_eq!(mkcol("a/").send().await.unwrap().status(), 201);
        assert_eq!(mkcol("a/").send().await.unwrap().status(), 405);
        assert_eq!(mkcol("a/7.0.0+x/").send().await.unwrap().status(), 201);
        let r = put("a/7.0.0+x/lit").body("lit").send().await.unwrap();
        assert_eq!(r.status(), 201);
        let r = put("a/7.0.0%2Bx/enc").body("enc").send().await.unwrap();
        assert_eq!(r.status(), 201);
        let dir = root.path().join("a").join("7.0.0+x");
        assert_eq!(std::fs::read(dir.join("lit")).unwrap(), b"lit");
        assert_eq!(std::fs::read(dir.join("enc")).unwrap(), b"enc");
    }
}
