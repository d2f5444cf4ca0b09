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
//!   reported as such.
//!
//! Path components are percent-encoded in URLs (everything but RFC 3986's
//! unreserved characters), so `7.0.0+driver` is sent as `7.0.0%2Bdriver`,
//! which every server decodes to a literal `+` (nginx also keeps a literal
//! `+` in a path as `+`, but some servers read it as a space).

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_bundle::digest::Hasher;
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;
use ferry_registry::retry;
use reqwest::header::{HeaderValue, CONTENT_LENGTH};
use reqwest::{Method, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Marker in the name of every temporary file ferry writes in a file target.
pub const TEMP_MARKER: &str = ".ferry-tmp-";

/// The directory under a directory target's root where files wait, under
/// temporary names, until the whole bundle has verified.
pub const STAGING_DIR: &str = ".ferry-staging";

/// Default for [`FileTargetOptions::attempts`].
pub const DEFAULT_ATTEMPTS: u32 = 4;

/// How many bytes of an error response body are quoted in errors.
const BODY_PREFIX: usize = 200;

/// The longest part of a file name kept in its temporary name (so that the
/// temporary name stays under the usual 255-byte limit).
const TEMP_NAME_KEEP: usize = 100;

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

/// Why a file target operation failed. Every variant names the path or URL.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// `--files` cannot be used.
    #[error("invalid file target `{spec}`: {reason}")]
    InvalidSpec {
        /// The value, with any password replaced by `***`.
        spec: String,
        /// Why.
        reason: String,
    },
    /// A local file system operation failed.
    #[error("failed to {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `rename … to`, …).
        op: String,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A component of the destination under the root is a symbolic link.
    #[error("refusing to write through {}: it is a symbolic link under the file target root {}", path.display(), root.display())]
    Symlink {
        /// The symbolic link.
        path: PathBuf,
        /// The file target root.
        root: PathBuf,
    },
    /// A component of the destination exists and is not a directory.
    #[error("{} exists and is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The data ended before the expected size.
    #[error("the data for {location} ended after {received} of {expected} bytes")]
    Short {
        /// The destination (path or URL).
        location: String,
        /// Expected size.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The data is longer than the expected size.
    #[error("the data for {location} is longer than the expected {expected} bytes")]
    TooLong {
        /// The destination (path or URL).
        location: String,
        /// Expected size.
        expected: u64,
    },
    /// The data's sha256 is not the expected one.
    #[error("the data for {location} has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// The destination (path or URL).
        location: String,
        /// Expected digest.
        expected: Digest,
        /// Digest of what was received.
        actual: Digest,
    },
    /// [`FileTarget::read`] found a file larger than its limit.
    #[error("{location} is larger than the {limit}-byte limit")]
    TooLarge {
        /// The path or URL.
        location: String,
        /// The limit.
        limit: u64,
    },
    /// The server refused the credentials (401).
    #[error("the file server refused the credentials for {url} ({status}); {}", who(.user))]
    Unauthorized {
        /// The URL (without credentials).
        url: String,
        /// The status.
        status: StatusCode,
        /// The user sent, if any.
        user: Option<String>,
    },
    /// The server does not implement `MOVE`.
    #[error("the file server does not support WebDAV MOVE (MOVE {url} answered {status}); enable `dav_methods PUT DELETE MKCOL MOVE` (nginx) or the equivalent")]
    NoMove {
        /// The URL moved.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// The base collection of an HTTP target does not exist.
    #[error("the file server has no collection at {url} (HEAD answered {status}); create it (or fix the --files URL)")]
    MissingBase {
        /// The base URL.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// An unexpected HTTP status.
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        /// The method.
        method: Method,
        /// The URL (without credentials).
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the response body (whitespace collapsed).
        body: String,
    },
    /// The request could not be sent or its answer not read.
    #[error("{method} {url} failed: {reason}")]
    Transport {
        /// The method.
        method: Method,
        /// The URL (without credentials).
        url: String,
        /// The error and its causes.
        reason: String,
    },
    /// The CA bundle cannot be used.
    #[error("failed to use the CA bundle {}: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("failed to set up the HTTP client for {url}: {reason}")]
    Client {
        /// The base URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("the file operation on {location} was interrupted: {reason}")]
    Interrupted {
        /// The path or URL.
        location: String,
        /// Why.
        reason: String,
    },
}

fn who(user: &Option<String>) -> String {
    match user {
        Some(u) => format!("check the password of user `{u}`"),
        None => "no username was given (use --files-user / a user in the URL)".to_string(),
    }
}

fn io_err(op: impl Into<String>, path: &Path, source: io::Error) -> FilesError {
    FilesError::Io {
        op: op.into(),
        path: path.to_path_buf(),
        source,
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

/// A local directory file target.
#[derive(Debug, Clone)]
pub struct DirTarget {
    root: PathBuf,
}

/// An HTTP (WebDAV) file target.
#[derive(Clone)]
pub struct HttpTarget {
    client: reqwest::Client,
    /// `scheme://host[:port][/path]`, no credentials, no trailing `/`.
    base: String,
    username: Option<String>,
    password: Option<String>,
    attempts: u32,
    /// Collections known to exist (relative paths), shared by clones.
    collections: Arc<Mutex<HashSet<String>>>,
}

impl fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTarget")
            .field("base", &self.base)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// A file written under a temporary name and verified, waiting for
/// [`Staged::commit`] (which makes it visible at its destination) or
/// [`Staged::abort`].
///
/// Dropping it without either removes the temporary file (for an HTTP
/// target, with a `DELETE` spawned on the current Tokio runtime, best
/// effort).
#[derive(Debug)]
pub struct Staged {
    inner: Option<StagedInner>,
}

#[derive(Debug)]
enum StagedInner {
    Dir {
        temp: PathBuf,
        root: PathBuf,
        path: RelPath,
    },
    Http {
        target: HttpTarget,
        path: RelPath,
        temp: String,
        dest: String,
        digest: Digest,
        size: u64,
    },
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

impl Staged {
    /// Puts the verified file at its destination (rename over it / `MOVE`
    /// with `Overwrite: T`).
    pub async fn commit(mut self) -> Result<(), FilesError> {
        let Some(inner) = self.inner.take() else {
            return Ok(());
        };
        match inner {
            StagedInner::Dir { temp, root, path } => {
                let t = temp.clone();
                let dest = path.under(&root);
                let result = blocking(&dest.display().to_string(), move || {
                    // The parents are created only now: a refused import
                    // leaves no directory behind either.
                    walk_parents(&root, &path, true)?;
                    commit_dir(&temp, &path.under(&root))
                })
                .await;
                if result.is_err() {
                    let _ = tokio::fs::remove_file(&t).await;
                }
                result
            }
            StagedInner::Http {
                target,
                path,
                temp,
                dest,
                digest,
                size,
            } => target.commit(&path, &temp, &dest, &digest, size).await,
        }
    }

    /// Removes the temporary file; the destination is left as it was.
    pub async fn abort(mut self) {
        match self.inner.take() {
            Some(StagedInner::Dir { temp, .. }) => {
                let _ = tokio::fs::remove_file(&temp).await;
            }
            Some(StagedInner::Http { target, temp, .. }) => target.delete_quietly(&temp).await,
            None => {}
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        match self.inner.take() {
            Some(StagedInner::Dir { temp, .. }) => {
                let _ = std::fs::remove_file(&temp);
            }
            Some(StagedInner::Http { target, temp, .. }) => {
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move { target.delete_quietly(&temp).await });
                }
            }
            None => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Shared helpers

/// Runs blocking file system work off the async threads.
async fn blocking<T, F>(location: &str, f: F) -> Result<T, FilesError>
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

/// Compares what was received with what was expected.
fn verify(
    location: &str,
    digest: &Digest,
    size: u64,
    received: u64,
    hasher: Hasher,
) -> Result<(), FilesError> {
    if received < size {
        return Err(FilesError::Short {
            location: location.to_string(),
            expected: size,
            received,
        });
    }
    if received > size {
        return Err(FilesError::TooLong {
            location: location.to_string(),
            expected: size,
        });
    }
    let actual = hasher.finish();
    if &actual != digest {
        return Err(FilesError::DigestMismatch {
            location: location.to_string(),
            expected: digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// `.<name>.ferry-tmp-<16 hex>` for `name` (shortened when long).
fn temp_name(name: &str) -> String {
    let mut keep = name.len().min(TEMP_NAME_KEEP);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(
        ".{}{TEMP_MARKER}{:016x}",
        &name[..keep],
        rand::random::<u64>()
    )
}

/// Whether `name` is a temporary file name ferry writes.
fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

/// `spec` with the password of a URL's user info replaced by `***`.
fn redact_spec(spec: &str) -> String {
    let Some((scheme, rest)) = spec.split_once("://") else {
        return spec.to_string();
    };
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{shown}@{host}{tail}")
        }
        None => spec.to_string(),
    }
}

/// Everything but RFC 3986's unreserved characters (`A-Za-z0-9-._~`).
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_component(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// Decodes `%XX` sequences (user info taken from a URL).
fn decode_percent(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// An error and its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

// ---------------------------------------------------------------------------
// Directory targets

impl DirTarget {
    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn check(&self) -> Result<(), FilesError> {
        let root = self.root.clone();
        blocking(&self.root.display().to_string(), move || {
            std::fs::create_dir_all(&root).map_err(|e| io_err("create", &root, e))?;
            let probe = root.join(temp_name("ferry-probe"));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .map_err(|e| io_err("write a probe file in", &root, e))?;
            std::fs::remove_file(&probe).map_err(|e| io_err("remove", &probe, e))?;
            Ok(())
        })
        .await
    }

    async fn has(&self, path: &RelPath, digest: &Digest, size: u64) -> Result<bool, FilesError> {
        let root = self.root.clone();
        let path = path.clone();
        let digest = digest.clone();
        blocking(&self.root.display().to_string(), move || {
            if !walk_parents(&root, &path, false)? {
                return Ok(false);
            }
            let dest = path.under(&root);
            let meta = match std::fs::symlink_metadata(&dest) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_err("inspect", &dest, e)),
            };
            if meta.file_type().is_symlink() {
                return Err(FilesError::Symlink { path: dest, root });
            }
            if !meta.is_file() || meta.len() != size {
                return Ok(false);
            }
            let file = std::fs::File::open(&dest).map_err(|e| io_err("open", &dest, e))?;
            let mut reader = ferry_bundle::digest::HashingReader::new(file);
            io::copy(&mut reader, &mut io::sink()).map_err(|e| io_err("read", &dest, e))?;
            let (actual, len, _) = reader.finish();
            Ok(len == size && actual == digest)
        })
        .await
    }

    async fn read(&self, path: &RelPath, limit: u64) -> Result<Option<Bytes>, FilesError> {
        let root = self.root.clone();
        let path = path.clone();
        blocking(&self.root.display().to_string(), move || {
            if !walk_parents(&root, &path, false)? {
                return Ok(None);
            }
            let dest = path.under(&root);
            match std::fs::symlink_metadata(&dest) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(FilesError::Symlink { path: dest, root })
                }
                Ok(m) if m.len() > limit => {
                    return Err(FilesError::TooLarge {
                        location: dest.display().to_string(),
                        limit,
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("inspect", &dest, e)),
            }
            let file = match std::fs::File::open(&dest) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("open", &dest, e)),
            };
            let mut buf = Vec::new();
            file.take(limit.saturating_add(1))
                .read_to_end(&mut buf)
                .map_err(|e| io_err("read", &dest, e))?;
            if buf.len() as u64 > limit {
                return Err(FilesError::TooLarge {
                    location: dest.display().to_string(),
                    limit,
                });
            }
            Ok(Some(Bytes::from(buf)))
        })
        .await
    }

    async fn write_stream(
        &self,
        path: &RelPath,
        digest: &Digest,
        size: u64,
        mut chunks: mpsc::Receiver<Bytes>,
    ) -> Result<Staged, FilesError> {
        let root = self.root.clone();
        let p = path.clone();
        let dest = path.under(&self.root);
        let location = dest.display().to_string();
        let staged_root = self.root.clone();
        let staged_path = path.clone();
        let temp = blocking(&location, move || {
            std::fs::create_dir_all(&root).map_err(|e| io_err("create", &root, e))?;
            // Existing parents must be directories, not links; missing ones
            // are created when the file is committed.
            walk_parents(&root, &p, false)?;
            let dest = p.under(&root);
            match std::fs::symlink_metadata(&dest) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(FilesError::Symlink { path: dest, root })
                }
                Ok(m) if m.is_dir() => {
                    return Err(io_err(
                        "replace",
                        &dest,
                        io::Error::other("it is a directory"),
                    ))
                }
                _ => {}
            }
            let staging = staging_dir(&root)?;
            Ok(staging.join(temp_name(p.file_name())))
        })
        .await?;

        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await
            .map_err(|e| io_err("create", &temp, e))?;
        let result: Result<(), FilesError> = async {
            let mut hasher = Hasher::new();
            let mut received = 0u64;
            while let Some(chunk) = chunks.recv().await {
                received += chunk.len() as u64;
                if received > size {
                    return Err(FilesError::TooLong {
                        location: location.clone(),
                        expected: size,
                    });
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| io_err("write", &temp, e))?;
            }
            verify(&location, digest, size, received, hasher)?;
            file.flush().await.map_err(|e| io_err("write", &temp, e))?;
            file.sync_all()
                .await
                .map_err(|e| io_err("sync", &temp, e))?;
            Ok(())
        }
        .await;
        drop(file);
        match result {
            Ok(()) => Ok(Staged {
                inner: Some(StagedInner::Dir {
                    temp,
                    root: staged_root,
                    path: staged_path,
                }),
            }),
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }
}

/// Checks the parents of `path` under `root`: none may be a symbolic link or
/// something other than a directory. Missing ones are created when `create`;
/// otherwise returns `false` at the first missing one.
fn walk_parents(root: &Path, path: &RelPath, create: bool) -> Result<bool, FilesError> {
    let Some(parent) = path.parent() else {
        return Ok(true);
    };
    let mut dir = root.to_path_buf();
    for comp in parent.components() {
        dir.push(comp);
        let meta = match std::fs::symlink_metadata(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Ok(false);
                }
                match std::fs::create_dir(&dir) {
                    Ok(()) => continue,
                    // Created meanwhile by a concurrent write: look again.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        std::fs::symlink_metadata(&dir).map_err(|e| io_err("inspect", &dir, e))?
                    }
                    Err(e) => return Err(io_err("create", &dir, e)),
                }
            }
            Err(e) => return Err(io_err("inspect", &dir, e)),
        };
        if meta.file_type().is_symlink() {
            return Err(FilesError::Symlink {
                path: dir,
                root: root.to_path_buf(),
            });
        }
        if !meta.is_dir() {
            return Err(FilesError::NotADirectory { path: dir });
        }
    }
    Ok(true)
}

/// Renames `temp` over `dest` and syncs the directory.
fn commit_dir(temp: &Path, dest: &Path) -> Result<(), FilesError> {
    if let Ok(m) = std::fs::symlink_metadata(dest) {
        if m.file_type().is_symlink() {
            let root = dest.parent().map(Path::to_path_buf).unwrap_or_default();
            return Err(FilesError::Symlink {
                path: dest.to_path_buf(),
                root,
            });
        }
    }
    std::fs::rename(temp, dest)
        .map_err(|e| io_err(format!("rename {} to", temp.display()), dest, e))?;
    if let Some(parent) = dest.parent() {
        // Makes the rename durable; not every file system allows it.
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `root/.ferry-staging`, created if missing: where a directory target
/// holds files until the import publishes them (same file system as their
/// destinations, so publishing is a rename). `ferry serve` never serves a
/// dot-directory, and [`sweep_dir`] empties it.
fn staging_dir(root: &Path) -> Result<PathBuf, FilesError> {
    let dir = root.join(STAGING_DIR);
    match std::fs::create_dir(&dir) {
        Ok(()) => return Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create", &dir, e)),
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| io_err("inspect", &dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(FilesError::Symlink {
            path: dir,
            root: root.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(FilesError::NotADirectory { path: dir });
    }
    Ok(dir)
}

/// Removes temporary files under `root` (not following symbolic links),
/// and the staging directory once it is empty.
fn sweep_dir(root: &Path) -> Result<usize, FilesError> {
    let removed = sweep_temps(root)?;
    let staging = root.join(STAGING_DIR);
    if std::fs::symlink_metadata(&staging).is_ok_and(|m| m.is_dir()) {
        // Fails (and is left) when something other than ours is inside.
        let _ = std::fs::remove_dir(&staging);
    }
    Ok(removed)
}

fn sweep_temps(root: &Path) -> Result<usize, FilesError> {
    let mut removed = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list", &dir, e))?;
            let ft = entry
                .file_type()
                .map_err(|e| io_err("inspect", &entry.path(), e))?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() && is_temp_name(&entry.file_name().to_string_lossy()) {
                let p = entry.path();
                match std::fs::remove_file(&p) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove", &p, e)),
                }
            }
        }
    }
    Ok(removed)
}

// ---------------------------------------------------------------------------
// HTTP targets

/// What a streamed body found wrong, for the error after the request.
type Failure = Arc<Mutex<Option<FilesError>>>;

/// The state of a streamed, verified request body.
struct BodyState {
    rx: mpsc::Receiver<Bytes>,
    hasher: Hasher,
    held: Option<Bytes>,
    received: u64,
    size: u64,
    digest: Digest,
    location: String,
    failure: Failure,
    done: bool,
}

impl BodyState {
    fn fail(&mut self, e: FilesError) -> io::Error {
        self.done = true;
        let msg = e.to_string();
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(e);
        }
        io::Error::other(msg)
    }

    /// The next piece of the body: each chunk is passed on only once the
    /// next one (or the end) arrived, so the last one is sent only when the
    /// whole file is verified.
    async fn next(mut self) -> Option<(Result<Bytes, io::Error>, BodyState)> {
        if self.done {
            return None;
        }
        loop {
            match self.rx.recv().await {
                Some(chunk) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    self.received += chunk.len() as u64;
                    if self.received > self.size {
                        let e = FilesError::TooLong {
                            location: self.location.clone(),
                            expected: self.size,
                        };
                        let err = self.fail(e);
                        return Some((Err(err), self));
                    }
                    self.hasher.update(&chunk);
                    if let Some(prev) = self.held.replace(chunk) {
                        return Some((Ok(prev), self));
                    }
                }
                None => {
                    self.done = true;
                    let hasher = std::mem::take(&mut self.hasher);
                    let checked = verify(
                        &self.location,
                        &self.digest,
                        self.size,
                        self.received,
                        hasher,
                    );
                    return match checked {
                        Err(e) => {
                            let err = self.fail(e);
                            Some((Err(err), self))
                        }
                        Ok(()) => self.held.take().map(|b| (Ok(b), self)),
                    };
                }
            }
        }
    }
}

/// The first wait between two tries; doubled after each failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two tries, a server's `Retry-After` included.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long to wait after try `attempt` was answered `resp` (retryable): the
/// server's `Retry-After` when it sent one, else the backoff; ferry-registry's
/// retry policy, the same as the registry client's.
fn retry_delay(attempt: u32, resp: Option<&reqwest::Response>) -> Duration {
    let retry_after = resp
        .and_then(|r| r.headers().get(reqwest::header::RETRY_AFTER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()));
    retry::delay(INITIAL_BACKOFF, MAX_BACKOFF, attempt, retry_after)
}

/// The start of a response body, whitespace collapsed, for errors.
async fn body_prefix(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < BODY_PREFIX * 4 {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut out: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > BODY_PREFIX {
        out = out.chars().take(BODY_PREFIX).collect::<String>() + "…";
    }
    if out.is_empty() {
        out = "(empty body)".to_string();
    }
    out
}

fn mkcol() -> Method {
    // A valid token: from_bytes cannot fail on it.
    Method::from_bytes(b"MKCOL").unwrap_or(Method::PUT)
}

fn move_method() -> Method {
    Method::from_bytes(b"MOVE").unwrap_or(Method::PUT)
}

impl HttpTarget {
    fn new(spec: &str, opts: FileTargetOptions) -> Result<HttpTarget, FilesError> {
        let invalid = |reason: &str| FilesError::InvalidSpec {
            spec: redact_spec(spec),
            reason: reason.to_string(),
        };
        let mut url = url::Url::parse(spec).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("only http:// and https:// are supported"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a query or fragment is not supported"));
        }
        let url_user = (!url.username().is_empty()).then(|| decode_percent(url.username()));
        let url_password = url.password().map(decode_percent);
        let username = opts.username.clone().or(url_user);
        let password = opts.password.clone().or(url_password);
        if password.is_some() && username.is_none() {
            return Err(invalid("a password needs a username"));
        }
        url.set_username("")
            .map_err(|()| invalid("cannot remove the user from the URL"))?;
        url.set_password(None)
            .map_err(|()| invalid("cannot remove the password from the URL"))?;
        let base = url.as_str().trim_end_matches('/').to_string();

        let mut b = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .tcp_keepalive(Some(Duration::from_secs(30)));
        if let Some(ca) = &opts.ca_file {
            let ca_err = |reason: String| FilesError::Ca {
                path: ca.clone(),
                reason,
            };
            let pem = std::fs::read(ca).map_err(|e| ca_err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(chain(&e)))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate found".to_string()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if opts.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let client = b.build().map_err(|e| FilesError::Client {
            url: base.clone(),
            reason: chain(&e),
        })?;
        Ok(HttpTarget {
            client,
            base,
            username,
            password,
            attempts: opts.attempts.max(1),
            collections: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// The base URL (no credentials, no trailing `/`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of the file `path`.
    fn url_of(&self, path: &RelPath) -> String {
        let mut s = self.base.clone();
        for c in path.components() {
            s.push('/');
            s.push_str(&encode_component(c));
        }
        s
    }

    /// The URL of the temporary file beside `path`.
    fn temp_url_of(&self, path: &RelPath) -> String {
        let mut s = match path.parent() {
            Some(p) => self.url_of(&p),
            None => self.base.clone(),
        };
        s.push('/');
        s.push_str(&encode_component(&temp_name(path.file_name())));
        s
    }

    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, url);
        match &self.username {
            Some(u) => r.basic_auth(u, self.password.as_deref()),
            None => r,
        }
    }

    /// Sends a request without a streamed body, retrying connection errors,
    /// 429 and 5xx. The last answer is returned whatever its status.
    async fn send(
        &self,
        method: Method,
        url: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, FilesError> {
        let mut attempt = 1;
        loop {
            let req = build(self.request(method.clone(), url));
            let wait = match req.send().await {
                Ok(resp)
                    if retry::is_retryable_status(resp.status().as_u16())
                        && attempt < self.attempts =>
                {
                    let wait = retry_delay(attempt, Some(&resp));
                    tracing::debug!(%method, url, status = %resp.status(), attempt, ?wait, "retrying");
                    wait
                }
                Ok(resp) => return Ok(resp),
                Err(e) if retry::is_retryable_transport(&e) && attempt < self.attempts => {
                    tracing::debug!(%method, url, error = %chain(&e), attempt, "retrying");
                    retry_delay(attempt, None)
                }
                Err(e) => {
                    return Err(FilesError::Transport {
                        method,
                        url: url.to_string(),
                        reason: chain(&e),
                    })
                }
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The error for an answer that is not the expected one.
    async fn unexpected(&self, method: Method, url: &str, resp: reqwest::Response) -> FilesError {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return FilesError::Unauthorized {
                url: url.to_string(),
                status,
                user: self.username.clone(),
            };
        }
        FilesError::Status {
            method,
            url: url.to_string(),
            status,
            body: body_prefix(resp).await,
        }
    }

    async fn delete_quietly(&self, url: &str) {
        match self.send(Method::DELETE, url, |r| r).await {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {}
            Ok(r) => {
                tracing::debug!(url, status = %r.status(), "DELETE of a temporary file failed")
            }
            Err(e) => tracing::debug!(url, error = %e, "DELETE of a temporary file failed"),
        }
    }

    async fn check(&self) -> Result<(), FilesError> {
        let probe =
            RelPath::new(&temp_name("ferry-probe")).map_err(|e| FilesError::InvalidSpec {
                spec: self.base.clone(),
                reason: e.to_string(),
            })?;
        let temp = self.url_of(&probe);
        let resp = self
            .send(Method::PUT, &temp, |r| {
                r.body(Bytes::from_static(b"ferry probe\n"))
            })
            .await?;
        if !resp.status().is_success() {
            if resp.status() != StatusCode::UNAUTHORIZED {
                let base = format!("{}/", self.base);
                if let Ok(head) = self.send(Method::HEAD, &base, |r| r).await {
                    if head.status() == StatusCode::NOT_FOUND {
                        return Err(FilesError::MissingBase {
                            url: base,
                            status: head.status(),
                        });
                    }
                }
            }
            return Err(self.unexpected(Method::PUT, &temp, resp).await);
        }
        let moved = format!("{temp}.moved");
        let result = self.move_to(&temp, &moved).await;
        match result {
            Ok(()) => {
                self.delete_quietly(&moved).await;
                Ok(())
            }
            Err(e) => {
                self.delete_quietly(&temp).await;
                Err(e)
            }
        }
    }

    /// `MOVE from` → `to`, overwriting. 405/501 mean no MOVE support.
    async fn move_to(&self, from: &str, to: &str) -> Result<(), FilesError> {
        let dest = HeaderValue::from_str(to).map_err(|e| FilesError::Transport {
            method: move_method(),
            url: from.to_string(),
            reason: format!("the destination {to} is not a valid header value: {e}"),
        })?;
        let resp = self
            .send(move_method(), from, |r| {
                r.header("Destination", dest.clone())
                    .header("Overwrite", "T")
            })
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        if matches!(status.as_u16(), 405 | 501) {
            return Err(FilesError::NoMove {
                url: from.to_string(),
                status,
            });
        }
        Err(self.unexpected(move_method(), from, resp).await)
    }

    /// `MKCOL`s the parents of `path` that are not known to exist, top down
    /// (201 created, 405 already there).
    async fn ensure_parents(&self, path: &RelPath) -> Result<(), FilesError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let mut rel = String::new();
        let mut url = self.base.clone();
        for comp in parent.components() {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(comp);
            url.push('/');
            url.push_str(&encode_component(comp));
            let known = self
                .collections
                .lock()
                .map(|c| c.contains(&rel))
                .unwrap_or(false);
            if known {
                continue;
            }
            let coll = format!("{url}/");
            let resp = self.send(mkcol(), &coll, |r| r).await?;
            match resp.status().as_u16() {
                200 | 201 | 204 | 405 => {
                    if let Ok(mut c) = self.collections.lock() {
                        c.insert(rel.clone());
                    }
                }
                _ => return Err(self.unexpected(mkcol(), &coll, resp).await),
            }
        }
        Ok(())
    }

    fn forget_parents(&self, path: &RelPath) {
        if let (Some(parent), Ok(mut c)) = (path.parent(), self.collections.lock()) {
            c.retain(|k| !parent.as_str().starts_with(k.as_str()));
        }
    }

    async fn has(&self, path: &RelPath, digest: &Digest, size: u64) -> Result<bool, FilesError> {
        let url = self.url_of(path);
        let resp = self.send(Method::HEAD, &url, |r| r).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(false),
            StatusCode::OK => {}
            _ => return Err(self.unexpected(Method::HEAD, &url, resp).await),
        }
        // Content-Length of a HEAD answer: read the header, not the
        // (empty) body's length.
        let len = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if len.is_some_and(|l| l != size) {
            return Ok(false);
        }
        let mut resp = self.send(Method::GET, &url, |r| r).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(false),
            StatusCode::OK => {}
            _ => return Err(self.unexpected(Method::GET, &url, resp).await),
        }
        let mut hasher = Hasher::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    hasher.update(&c);
                    if hasher.len() > size {
                        return Ok(false);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(FilesError::Transport {
                        method: Method::GET,
                        url,
                        reason: chain(&e),
                    })
                }
            }
        }
        Ok(hasher.len() == size && &hasher.finish() == digest)
    }

    async fn read(&self, path: &RelPath, limit: u64) -> Result<Option<Bytes>, FilesError> {
        let url = self.url_of(path);
        let mut resp = self.send(Method::GET, &url, |r| r).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            StatusCode::OK => {}
            _ => return Err(self.unexpected(Method::GET, &url, resp).await),
        }
        let too_large = || FilesError::TooLarge {
            location: url.clone(),
            limit,
        };
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|l| l > limit) {
            return Err(too_large());
        }
        let mut buf = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if (buf.len() + c.len()) as u64 > limit {
                        return Err(too_large());
                    }
                    buf.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(FilesError::Transport {
                        method: Method::GET,
                        url: url.clone(),
                        reason: chain(&e),
                    })
                }
            }
        }
        Ok(Some(Bytes::from(buf)))
    }

    async fn write_stream(
        &self,
        path: &RelPath,
        digest: &Digest,
        size: u64,
        chunks: mpsc::Receiver<Bytes>,
    ) -> Result<Staged, FilesError> {
        self.ensure_parents(path).await?;
        let temp = self.temp_url_of(path);
        let dest = self.url_of(path);
        let failure: Failure = Arc::new(Mutex::new(None));
        let state = BodyState {
            rx: chunks,
            hasher: Hasher::new(),
            held: None,
            received: 0,
            size,
            digest: digest.clone(),
            location: dest.clone(),
            failure: failure.clone(),
            done: false,
        };
        let stream = futures_util::stream::unfold(state, BodyState::next);
        let sent = self
            .request(Method::PUT, &temp)
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        let found = failure.lock().ok().and_then(|mut f| f.take());
        if let Some(e) = found {
            // The body was cut short, so the server should have stored
            // nothing; delete in case it kept a partial file.
            self.delete_quietly(&temp).await;
            return Err(e);
        }
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                self.delete_quietly(&temp).await;
                return Err(FilesError::Transport {
                    method: Method::PUT,
                    url: temp,
                    reason: chain(&e),
                });
            }
        };
        if !resp.status().is_success() {
            if matches!(resp.status().as_u16(), 409 | 500) {
                // Perhaps a parent went away: look again next time.
                self.forget_parents(path);
            }
            let err = self.unexpected(Method::PUT, &temp, resp).await;
            self.delete_quietly(&temp).await;
            return Err(err);
        }
        Ok(Staged {
            inner: Some(StagedInner::Http {
                target: self.clone(),
                path: path.clone(),
                temp,
                dest,
                digest: digest.clone(),
                size,
            }),
        })
    }

    /// `PUT`s `data` to a temporary name beside `path` (creating parents;
    /// on 409 the parents are created again and the `PUT` retried once).
    async fn put_bytes_staged(
        &self,
        path: &RelPath,
        digest: &Digest,
        data: Bytes,
    ) -> Result<Staged, FilesError> {
        self.ensure_parents(path).await?;
        let temp = self.temp_url_of(path);
        let mut retried = false;
        loop {
            let body = data.clone();
            let resp = self
                .send(Method::PUT, &temp, |r| r.body(body.clone()))
                .await?;
            let status = resp.status();
            if status.is_success() {
                break;
            }
            if !retried && matches!(status.as_u16(), 409 | 500) {
                // 409 (or nginx's 500 from a failed rename) when a parent
                // collection is missing.
                retried = true;
                self.forget_parents(path);
                self.ensure_parents(path).await?;
                continue;
            }
            return Err(self.unexpected(Method::PUT, &temp, resp).await);
        }
        Ok(Staged {
            inner: Some(StagedInner::Http {
                target: self.clone(),
                path: path.clone(),
                temp,
                dest: self.url_of(path),
                digest: digest.clone(),
                size: data.len() as u64,
            }),
        })
    }

    async fn commit(
        &self,
        path: &RelPath,
        temp: &str,
        dest: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), FilesError> {
        match self.move_to(temp, dest).await {
            Ok(()) => Ok(()),
            Err(FilesError::Status { status, .. })
                if status == StatusCode::NOT_FOUND
                    && self.has(path, digest, size).await.unwrap_or(false) =>
            {
                // An earlier try moved it and its answer was lost.
                Ok(())
            }
            Err(e) => {
                self.delete_quietly(temp).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_percent_encoded_except_unreserved() {
        assert_eq!(encode_component("7.0.0+driver"), "7.0.0%2Bdriver");
        assert_eq!(encode_component("a b%c/ü"), "a%20b%25c%2F%C3%BC");
        assert_eq!(encode_component("A-z_0.9~"), "A-z_0.9~");
    }

    #[test]
    fn user_info_is_percent_decoded_to_the_last_escape() {
        // An escape at the very end is decoded too; a broken one stays as it is.
        assert_eq!(decode_percent("p%40ss%3A%41"), "p@ss:A");
        assert_eq!(decode_percent("100%"), "100%");
        assert_eq!(decode_percent("%zz%C3%BC"), "%zzü");
    }

    #[test]
    fn user_info_is_decoded_and_redacted() {
        assert_eq!(decode_percent("p%40ss%3Aw"), "p@ss:w");
        assert_eq!(decode_percent("100%"), "100%");
        assert_eq!(decode_percent("%zz%4"), "%zz%4");
        assert_eq!(
            redact_spec("https://u:s3cret@h:8443/x?y"),
            "https://u:***@h:8443/x?y"
        );
        assert_eq!(redact_spec("https://h/x@y"), "https://h/x@y");
        assert_eq!(redact_spec("/srv/files"), "/srv/files");
    }

    #[test]
    fn temp_names_are_hidden_marked_and_short() {
        let t = temp_name("index.yaml");
        assert!(t.starts_with(".index.yaml.ferry-tmp-"), "{t}");
        assert!(is_temp_name(&t));
        assert!(!is_temp_name("index.yaml"));
        let long = "é".repeat(120);
        assert!(temp_name(&long).len() < 255);
    }

    #[test]
    fn http_spec_takes_credentials_out_of_the_url() {
        let t = FileTarget::new(
            "http://ops:s3cret@files.internal:8080/mirror/",
            FileTargetOptions::default(),
        )
        .unwrap();
        let FileTarget::Http(h) = &t else {
            panic!("not http: {t:?}");
        };
        assert_eq!(h.base(), "http://files.internal:8080/mirror");
        assert_eq!(h.username.as_deref(), Some("ops"));
        assert_eq!(h.password.as_deref(), Some("s3cret"));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(!t.describe().contains("s3cret"));
        let p = RelPath::new("falco/driver/7.0.0+driver/x86_64/f.ko").unwrap();
        assert_eq!(
            t.location(&p),
            "http://files.internal:8080/mirror/falco/driver/7.0.0%2Bdriver/x86_64/f.ko"
        );
    }

    #[test]
    fn bad_specs_are_refused_without_echoing_the_password() {
        for spec in [
            "ftp://h/x",
            "",
            "http://u:s3cret@/x",
            "https://u:s3cret@h/x?q=1",
        ] {
            let e = FileTarget::new(spec, FileTargetOptions::default()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("invalid file target"), "{spec}: {msg}");
            assert!(!msg.contains("s3cret"), "{msg}");
        }
        let opts = FileTargetOptions {
            password: Some("s3cret".into()),
            ..FileTargetOptions::default()
        };
        assert!(!format!("{opts:?}").contains("s3cret"));
        let e = FileTarget::new("http://h/x", opts).unwrap_err();
        assert!(e.to_string().contains("needs a username"), "{e}");
    }
}
