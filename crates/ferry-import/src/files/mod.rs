//! File targets: where `ferry import` writes the file tree (`falco/…`,
//! `opensearch/…`, `helm/…`, `files/…`).
//!
//! Two kinds, chosen by `--files`:
//!
//! - a local **directory** (`--files /srv/mirror`): each file is written to a
//!   temporary name in the staging directory `<root>/.ferry-staging/`
//!   (`.<name>.ferry-tmp-<random>`, on the same file system as its
//!   destination), hashed as it is written and `fsync`ed; it is a
//!   [`Staged`] file, renamed over its destination (its missing parents
//!   created then) only by [`Staged::commit`], which the import calls once
//!   the whole bundle verified. Nothing is ever written outside the root:
//!   paths are [`RelPath`]s, and a path whose existing component under the
//!   root is a symbolic link is refused. Staged and temporary files left by
//!   a crash are removed by [`FileTarget::check`] ([`FileTarget::sweep_temp`]),
//!   so one import at a time should write to a given directory;
//! - an **HTTP file server** speaking WebDAV (`--files
//!   https://files.internal/mirror`), e.g. nginx with `dav_methods PUT DELETE
//!   MKCOL MOVE`: missing parent collections are created with `MKCOL`, the
//!   bytes are `PUT` (streamed) to a temporary name beside the destination,
//!   and `MOVE`d over the destination by [`Staged::commit`] (or `DELETE`d by
//!   [`Staged::abort`]). The server lists no directory, so temporary files of
//!   a killed run are not swept (they are never served under a final name). The streamed body holds
//!   back its last chunk until the whole file is hashed, so a file whose
//!   digest or size is wrong is never completely sent and the server stores
//!   nothing. `MOVE` is required: a server that answers it 405/501 is
//!   reported as such. Every request goes through ferry-registry's one HTTP
//!   transport ([`ferry_registry::transport::Transport`]): the registry
//!   client's per-host TLS rules, its retry loop (`Retry-After` honoured),
//!   credentials for the target's exact origin only, no redirect followed,
//!   error bodies capped with the credentials masked.
//!
//! Path components are percent-encoded in URLs (everything but RFC 3986's
//! unreserved characters), so `7.0.0+driver` is sent as `7.0.0%2Bdriver`,
//! which every server decodes to a literal `+` (nginx also keeps a literal
//! `+` in a path as `+`, but some servers read it as a space).

//!
//! Modules:
//!
//! - `error`: [`FilesError`];
//! - `spec`: the `--files` value: redaction of a password in it,
//!   percent-encoding of path components;
//! - `local`: the directory target ([`DirTarget`]);
//! - `webdav`: the HTTP (WebDAV) target ([`HttpTarget`]);
//! - `staging`: temporary names, verification of what was received, the
//!   [`Staged`] file and its commit or abort, the sweep of a directory
//!   target's leftovers.

use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;
use tokio::sync::mpsc;

mod error;
mod local;
mod spec;
mod staging;
mod webdav;

pub use error::FilesError;
pub use local::DirTarget;
pub use staging::Staged;
pub use webdav::HttpTarget;

use spec::redact_spec;
use staging::sweep_dir;

/// Marker in the name of every temporary file ferry writes in a file target.
pub const TEMP_MARKER: &str = ".ferry-tmp-";

/// The directory under a directory target's root where files wait, under
/// temporary names, until the whole bundle has verified.
pub const STAGING_DIR: &str = ".ferry-staging";

/// Default for [`FileTargetOptions::attempts`].
pub const DEFAULT_ATTEMPTS: u32 = 4;

/// Settings of a file target.
#[derive(Clone)]
pub struct FileTargetOptions {
    /// Basic auth user for an HTTP target (overrides one in the URL).
    pub username: Option<String>,
    /// Basic auth password for an HTTP target (overrides one in the URL).
    /// Never printed.
    pub password: Option<String>,
    /// Extra PEM CA bundle trusted for an `https://` target.
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate (testing only).
    pub insecure: bool,
    /// How many times a non-streaming request is tried (connection errors,
    /// 429, 5xx); 0 counts as 1.
    pub attempts: u32,
}

impl Default for FileTargetOptions {
    fn default() -> Self {
        FileTargetOptions {
            username: None,
            password: None,
            ca_file: None,
            insecure: false,
            attempts: DEFAULT_ATTEMPTS,
        }
    }
}

impl fmt::Debug for FileTargetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileTargetOptions")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// Where the file tree is written.
#[derive(Debug, Clone)]
pub enum FileTarget {
    /// A local directory.
    Dir(DirTarget),
    /// A WebDAV-capable HTTP file server.
    Http(HttpTarget),
}

impl FileTarget {
    /// Parses `--files`: `http://…` / `https://…` (`HOST[:PORT]/PATH`, a
    /// `user:password@` in the URL is accepted and never printed) is an HTTP
    /// target, anything else a local directory. Touches nothing: see
    /// [`FileTarget::check`].
    pub fn new(spec: &str, opts: FileTargetOptions) -> Result<FileTarget, FilesError> {
        let lower = spec.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return HttpTarget::new(spec, opts).map(FileTarget::Http);
        }
        if spec.contains("://") {
            return Err(FilesError::InvalidSpec {
                spec: redact_spec(spec),
                reason: "only a directory, http:// or https:// is supported".into(),
            });
        }
        if spec.is_empty() {
            return Err(FilesError::InvalidSpec {
                spec: String::new(),
                reason: "it is empty".into(),
            });
        }
        Ok(FileTarget::Dir(DirTarget {
            root: PathBuf::from(spec),
        }))
    }

    /// The target for messages: the directory, or the base URL (never a
    /// password).
    pub fn describe(&self) -> String {
        match self {
            FileTarget::Dir(d) => d.root.display().to_string(),
            FileTarget::Http(h) => match &h.username {
                Some(u) => format!("{} (as {u})", h.base),
                None => h.base.clone(),
            },
        }
    }

    /// Where `path` lands: a local path or a URL (for messages and client
    /// configuration).
    pub fn location(&self, path: &RelPath) -> String {
        match self {
            FileTarget::Dir(d) => path.under(&d.root).display().to_string(),
            FileTarget::Http(h) => h.url_of(path),
        }
    }

    /// Makes sure the target can be written before anything is streamed.
    ///
    /// A directory is created (with its parents), probed with a temporary
    /// file, and swept of temporary files left by an earlier crash
    /// ([`FileTarget::sweep_temp`]). An HTTP target gets a probe file `PUT`,
    /// `MOVE`d and `DELETE`d at its base, which checks that it is reachable,
    /// accepts the credentials and supports the methods an import needs.
    pub async fn check(&self) -> Result<(), FilesError> {
        match self {
            FileTarget::Dir(d) => {
                d.check().await?;
                let swept = self.sweep_temp().await?;
                if swept > 0 {
                    tracing::info!(
                        root = %d.root.display(),
                        swept,
                        "removed temporary files left by an earlier run"
                    );
                }
                Ok(())
            }
            FileTarget::Http(h) => h.check().await,
        }
    }

    /// Removes the temporary files (`.*.ferry-tmp-*`) an interrupted run left
    /// anywhere under a directory target; returns how many. Symbolic links
    /// are not followed. Does nothing for an HTTP target.
    pub async fn sweep_temp(&self) -> Result<usize, FilesError> {
        match self {
            FileTarget::Dir(d) => {
                let root = d.root.clone();
                blocking(&d.root.display().to_string(), move || sweep_dir(&root)).await
            }
            FileTarget::Http(_) => Ok(0),
        }
    }

    /// Whether the target already holds `path` with exactly `size` bytes
    /// whose sha256 is `digest` (the size is compared first; the content is
    /// hashed only when it matches).
    pub async fn has(
        &self,
        path: &RelPath,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, FilesError> {
        match self {
            FileTarget::Dir(d) => d.has(path, digest, size).await,
            FileTarget::Http(h) => h.has(path, digest, size).await,
        }
    }

    /// The content of `path`, or `None` when it does not exist (ENOENT /
    /// 404). A file larger than `limit` bytes is an error.
    pub async fn read(&self, path: &RelPath, limit: u64) -> Result<Option<Bytes>, FilesError> {
        match self {
            FileTarget::Dir(d) => d.read(path, limit).await,
            FileTarget::Http(h) => h.read(path, limit).await,
        }
    }

    /// Writes the bytes received on `chunks` to a temporary name beside
    /// `path` (creating missing parents), hashing them as they pass.
    ///
    /// When the channel closes, the data must be exactly `size` bytes with
    /// sha256 `digest`; otherwise (including a channel closed early) the
    /// temporary file is removed and the error says what differed. On success
    /// the file is staged: [`Staged::commit`] puts it at `path`.
    pub async fn write_stream(
        &self,
        path: &RelPath,
        digest: &Digest,
        size: u64,
        chunks: mpsc::Receiver<Bytes>,
    ) -> Result<Staged, FilesError> {
        match self {
            FileTarget::Dir(d) => d.write_stream(path, digest, size, chunks).await,
            FileTarget::Http(h) => h.write_stream(path, digest, size, chunks).await,
        }
    }

    /// Writes `data` at `path` atomically (temporary name, then rename /
    /// `MOVE`), creating missing parents.
    pub async fn write_bytes(&self, path: &RelPath, data: Bytes) -> Result<(), FilesError> {
        self.stage_bytes(path, data).await?.commit().await
    }

    /// Writes `data` under a temporary name for `path` (in the staging
    /// directory of a directory target, beside the destination on an HTTP
    /// target): nothing is visible at `path` until [`Staged::commit`].
    pub async fn stage_bytes(&self, path: &RelPath, data: Bytes) -> Result<Staged, FilesError> {
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        match self {
            FileTarget::Dir(d) => {
                let (tx, rx) = mpsc::channel(1);
                // Capacity 1 and one message: this send never waits.
                let _ = tx.try_send(data);
                drop(tx);
                d.write_stream(path, &digest, size, rx).await
            }
            FileTarget::Http(h) => h.put_bytes_staged(path, &digest, data).await,
        }
    }

    /// Removes the (empty) staging directory of a directory target after
    /// an import published or dropped everything it staged.
    pub async fn tidy(&self) {
        if let FileTarget::Dir(d) = self {
            let _ = tokio::fs::remove_dir(d.root.join(STAGING_DIR)).await;
        }
    }
}

/// Runs blocking file system work off the async threads.
pub(super) async fn blocking<T, F>(location: &str, f: F) -> Result<T, FilesError>
where
    F: FnOnce() -> Result<T, FilesError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(FilesError::Interrupted {
            location: location.to_string(),
            reason: e.to_string(),
        }),
    }
}
