//! A real containerd for tests: Debian's `containerd` (1.6) with its own
//! configuration, root, state and socket in a temporary directory, and
//! `ctr` as its client.
//!
//! It checks what the emitted client configuration is for: that containerd,
//! given `--hosts-dir DIR/containerd/certs.d`, pulls an image by its *source*
//! name (`docker.io/…`) from the mirror, with the digest the source had.
//!
//! The daemon never touches the system paths (`/var/lib/containerd`,
//! `/run/containerd`, `/opt/containerd`): only the plugins a pull needs are
//! loaded (content, metadata, images, leases, the `native` snapshotter, which
//! needs no mounts, and the walking differ); CRI, the overlay/btrfs/zfs/
//! devmapper/aufs snapshotters, the runtimes and tasks are disabled. Tests
//! run as root on the build machines, which `ctr` needs to unpack layers
//! (file ownership).
//!
//! ```no_run
//! use ferry_testkit::containerd::{require_containerd, Containerd};
//!
//! # fn example(hosts_dir: &std::path::Path) -> anyhow::Result<()> {
//! if !require_containerd() {
//!     return Ok(());
//! }
//! let ctd = Containerd::start()?;
//! let digest = ctd.pull("docker.io/fixtures/multiarch:1.0", hosts_dir, true)?;
//! println!("{digest}");
//! # Ok(())
//! # }
//! ```

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::registry::on_path;
use crate::tools::run_tool;

/// The daemon binary.
pub const CONTAINERD_BIN: &str = "containerd";
/// Its client.
pub const CTR_BIN: &str = "ctr";
/// The containerd namespace the harness pulls into.
pub const NAMESPACE: &str = "ferry-test";
/// How long [`Containerd::start`] waits for the daemon to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The platform [`Containerd::pull`] fetches and unpacks.
pub const PLATFORM: &str = "linux/amd64";

/// Plugins a pull does not need, or that would touch system paths or need
/// privileges a test may lack.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.restart",
    "io.containerd.runtime.v1.linux",
    "io.containerd.runtime.v2.task",
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.service.v1.tasks-service",
    "io.containerd.grpc.v1.tasks",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

/// Whether `containerd` and `ctr` are installed, for tests that need them:
/// returns when both are on `PATH`; when one is missing, the test fails with
/// the install line (never a silent skip).
pub fn require_containerd() {
    let missing: Vec<&str> = [CONTAINERD_BIN, CTR_BIN]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    if missing.is_empty() {
        return;
    }
    panic!(
        "required tool(s) {} missing: install them with `apt-get install -y containerd` (or run `cargo xtask test`, which installs them)",
        missing.join(", ")
    );
}

/// A running containerd on a socket in a temporary directory, killed and
/// removed on drop.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A TOML basic string holding `s`.
fn toml_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Containerd {
    /// Writes the configuration, starts the daemon and waits (at most
    /// [`READY_TIMEOUT`]) until `ctr version` answers on its socket.
    /// The error carries the daemon's log.
    pub fn start() -> Result<Containerd> {
        // Short prefix: a unix socket path must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ferry-ctd-")
            .tempdir()
            .context("failed to create containerd's temporary directory")?;
        let mut c = Containerd { dir, child: None };
        c.write_config()?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(c.log_path())
            .with_context(|| format!("failed to open {}", c.log_path().display()))?;
        let log2 = log
            .try_clone()
            .context("failed to duplicate the log file handle")?;
        let child = Command::new(CONTAINERD_BIN)
            .arg("--config")
            .arg(c.config_path())
            .current_dir(c.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .with_context(|| {
                format!("failed to run `{CONTAINERD_BIN}` (install it with `apt-get install -y containerd`)")
            })?;
        c.child = Some(child);
        c.wait_ready()?;
        Ok(c)
    }

    /// The daemon's gRPC socket.
    pub fn address(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The file receiving the daemon's output.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// The daemon's log so far (empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn write_config(&self) -> Result<()> {
        let p = |s: &str| toml_quote(&self.dir.path().join(s).to_string_lossy());
        let disabled: Vec<String> = DISABLED_PLUGINS.iter().map(|x| toml_quote(x)).collect();
        let config = format!(
            "version = 2\n\
             root = {root}\n\
             state = {state}\n\
             disabled_plugins = [{disabled}]\n\
             \n\
             [grpc]\n  address = {sock}\n\n\
             [ttrpc]\n  address = {ttrpc}\n\n\
             [debug]\n  address = \"\"\n  level = \"info\"\n\n\
             [metrics]\n  address = \"\"\n",
            root = p("root"),
            state = p("state"),
            disabled = disabled.join(", "),
            sock = toml_quote(&self.address().to_string_lossy()),
            ttrpc = p("containerd.sock.ttrpc"),
        );
        std::fs::write(self.config_path(), config)
            .with_context(|| format!("failed to write {}", self.config_path().display()))
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new(CTR_BIN);
        c.arg("--address")
            .arg(self.address())
            .arg("--connect-timeout")
            .arg("2s")
            .arg("--namespace")
            .arg(NAMESPACE);
        c
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut last = String::from("no socket yet");
        while start.elapsed() < READY_TIMEOUT {
            if let Some(c) = &mut self.child {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!(
                        "{CONTAINERD_BIN} exited with {status} before answering; its log:\n{}",
                        self.log()
                    );
                }
            }
            if self.address().exists() {
                match self.ctr().arg("version").stdin(Stdio::null()).output() {
                    Ok(o) if o.status.success() => return Ok(()),
                    Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => last = format!("failed to run `{CTR_BIN}`: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{CONTAINERD_BIN} did not answer on {} within {:?} ({last}); its log:\n{}",
            self.address().display(),
            READY_TIMEOUT,
            self.log()
        )
    }

    fn ctr_args(&self) -> Vec<String> {
        vec![
            "--address".into(),
            self.address().to_string_lossy().into_owned(),
            "--namespace".into(),
            NAMESPACE.into(),
        ]
    }

    /// Pulls `reference` the way a node would, resolving registries through
    /// `hosts_dir` (a `certs.d` directory): `ctr images pull --hosts-dir DIR
    /// [--plain-http] --platform linux/amd64 --snapshotter native REF`, then
    /// returns the digest containerd recorded for the image (the index or
    /// manifest digest). The error carries ctr's output and the daemon's log.
    pub fn pull(&self, reference: &str, hosts_dir: &Path, plain_http: bool) -> Result<String> {
        let mut args = self.ctr_args();
        args.extend([
            "images".into(),
            "pull".into(),
            "--hosts-dir".into(),
            hosts_dir.to_string_lossy().into_owned(),
        ]);
        if plain_http {
            args.push("--plain-http".into());
        }
        args.extend([
            "--platform".into(),
            PLATFORM.into(),
            "--snapshotter".into(),
            "native".into(),
            reference.into(),
        ]);
        run_tool(CTR_BIN, &args).map_err(|e| {
            e.context(format!(
                "containerd could not pull {reference} through {}; containerd's log:\n{}",
                hosts_dir.display(),
                self.log()
            ))
        })?;
        self.image_digest(reference)
    }

    /// Loads an image archive the way a first node would: `ctr images import
    /// --snapshotter native [--all-platforms] FILE` (the current platform
    /// only, unless `all_platforms`). The error carries ctr's output.
    pub fn import(&self, archive: &Path, all_platforms: bool) -> Result<String> {
        self.import_with(archive, all_platforms, true)
    }

    /// [`Containerd::import`], unpacking the images or not (`--no-unpack`:
    /// content and names only, for archives that hold artifacts too).
    pub fn import_with(&self, archive: &Path, all_platforms: bool, unpack: bool) -> Result<String> {
        let mut args = self.ctr_args();
        args.extend([
            "images".into(),
            "import".into(),
            "--snapshotter".into(),
            "native".into(),
        ]);
        if all_platforms {
            args.push("--all-platforms".into());
        }
        if !unpack {
            args.push("--no-unpack".into());
        }
        args.push(archive.to_string_lossy().into_owned());
        let out = run_tool(CTR_BIN, &args).map_err(|e| {
            e.context(format!(
                "containerd could not import {}; containerd's log:\n{}",
                archive.display(),
                self.log()
            ))
        })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The digest containerd holds for `reference`, from `ctr images ls`.
    pub fn image_digest(&self, reference: &str) -> Result<String> {
        let mut args = self.ctr_args();
        args.extend(["images".into(), "ls".into()]);
        let out = run_tool(CTR_BIN, &args)?;
        let text = String::from_utf8_lossy(&out.stdout);
        // REF TYPE DIGEST SIZE PLATFORMS LABELS
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.first() == Some(&reference) {
                if let Some(d) = cols.get(2) {
                    return Ok((*d).to_string());
                }
            }
        }
        bail!("containerd holds no image {reference}; `ctr images ls` printed:\n{text}")
    }

    /// Names of the images containerd holds.
    pub fn images(&self) -> Result<Vec<String>> {
        let mut args = self.ctr_args();
        args.extend(["images".into(), "ls".into(), "--quiet".into()]);
        let out = run_tool(CTR_BIN, &args)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("address", &self.address())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_its_own_socket_and_holds_no_images() {
        require_containerd();
        let c = Containerd::start().unwrap();
        assert!(c.address().starts_with(std::env::temp_dir()));
        assert!(c.images().unwrap().is_empty());
        let err = c.image_digest("docker.io/library/nope:1").unwrap_err();
        assert!(
            err.to_string().contains("docker.io/library/nope:1"),
            "{err}"
        );
        let config = std::fs::read_to_string(c.config_path()).unwrap();
        assert!(config.contains("io.containerd.grpc.v1.cri"));
    }

    #[test]
    fn a_pull_without_a_reachable_registry_fails_naming_the_reference() {
        require_containerd();
        let c = Containerd::start().unwrap();
        let hosts = tempfile::tempdir().unwrap();
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let reference = format!("127.0.0.1:{port}/a/b:1");
        let err = c.pull(&reference, hosts.path(), true).unwrap_err();
        assert!(format!("{err:#}").contains(&reference), "{err:#}");
    }

    #[test]
    fn the_daemon_is_gone_after_drop() {
        require_containerd();
        let mut c = Containerd::start().unwrap();
        let pid = c.child.as_ref().map(|ch| ch.id()).unwrap();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        let dir = c.dir.path().to_path_buf();
        c.kill();
        // Killed and reaped: no such process any more.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        drop(c);
        assert!(!dir.exists());
    }
}
