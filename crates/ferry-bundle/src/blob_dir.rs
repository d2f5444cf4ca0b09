//! The blob directory, `ROOT/blobs/sha256/<hex>`, and the one verified write
//! into it, shared by the store (`ferry import --store`), the export cache
//! (`--cache-dir`), re-export's staging and the test data sets.
//!
//! A blob is written to a temporary file in the directory itself (named
//! [`BLOB_TMP_PREFIX`]`<hex>-<random>`), checked, synced (unless the
//! directory is [scratch](BlobDir::scratch)), and renamed to its digest's
//! name: a reader sees the whole blob or nothing, and a blob under its name
//! always hashes to it. What is dropped before [`StagedBlob::commit`], or
//! fails it, is removed; what a crash leaves is removed by
//! [`BlobDir::sweep`]. Two writers of the same digest each write their own
//! temporary file and the last rename wins with the same bytes.
//!
//! Who checks the bytes against the digest:
//! - [`BlobDir::stage`] hashes them as they are written (bytes from anywhere);
//! - [`BlobDir::stage_verified`] only counts them against the size: for bytes
//!   a sender has already hashed and whose last byte it withholds when they
//!   do not match (the bundle reader on import and on re-export), so that a
//!   blob is hashed once;
//! - [`BlobDir::stage_new`] hashes them to learn the digest (content written
//!   before its digest is known, such as a generated layer).

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Check, Digest, Hasher};

/// The prefix of a blob being written (swept when the next import opens the store).
pub const BLOB_TMP_PREFIX: &str = ".tmp-";

/// Write buffer of a staged blob.
const WRITE_BUFFER: usize = 256 << 10;

/// A blob directory operation that failed; names the path and the digest.
#[derive(Debug, thiserror::Error)]
pub enum BlobDirError {
    /// A file system error.
    #[error("failed to {op} `{}`: {source}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Bytes that are not as many as the blob has.
    #[error("blob {digest} (`{}`): expected {expected} bytes, got {actual}{}", path.display(), if *.at_least { " or more" } else { "" })]
    Size {
        /// The blob.
        digest: Digest,
        /// Where it was being written.
        path: PathBuf,
        /// Its size.
        expected: u64,
        /// Bytes written.
        actual: u64,
        /// Whether more bytes were offered than `actual` (the write was cut).
        at_least: bool,
    },
    /// Bytes that do not hash to the blob's digest.
    #[error("blob {digest} (`{}`): the bytes hash to {actual}", path.display())]
    Digest {
        /// The blob.
        digest: Digest,
        /// Where it was being written.
        path: PathBuf,
        /// What the bytes hash to.
        actual: Digest,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlobDirError + 'a {
    move |source| BlobDirError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A directory of blobs named by their digest, `ROOT/blobs/sha256/<hex>`:
/// the store's and the export cache's (`--cache-dir`) layout alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDir {
    dir: PathBuf,
    /// Whether a blob is synced to disk before it is renamed into place.
    durable: bool,
}

impl BlobDir {
    /// The blob directory under `root` (`root/blobs/sha256`); blobs are
    /// synced before they are renamed into place.
    pub fn under(root: &Path) -> BlobDir {
        BlobDir {
            dir: root.join("blobs").join("sha256"),
            durable: true,
        }
    }

    /// `dir` itself as a blob directory whose blobs are not synced: a
    /// staging directory that does not outlive its run (re-export), or test
    /// data regenerated when incomplete.
    pub fn scratch(dir: &Path) -> BlobDir {
        BlobDir {
            dir: dir.to_path_buf(),
            durable: false,
        }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `digest` lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// The size of the blob `digest`, when the directory holds it.
    pub fn size_of(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(digest))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Creates the directory (and its parents) when missing.
    pub fn create(&self) -> Result<(), BlobDirError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))
    }

    /// Removes the temporary files of writes that never finished (a crash):
    /// every name starting with [`BLOB_TMP_PREFIX`]. Returns how many.
    pub fn sweep(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(BLOB_TMP_PREFIX))
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count()
    }

    /// A new temporary path in the directory for a writer that verifies on
    /// its own (a download), to be [adopted](BlobDir::adopt) once it has;
    /// swept like every temporary blob.
    pub fn temp_path(&self, label: &str) -> PathBuf {
        self.dir
            .join(format!("{BLOB_TMP_PREFIX}{label}-{:016x}", rand_u64(label)))
    }

    /// Renames `file`, whose bytes the caller has verified to hash to
    /// `digest` (a download checked as it arrived), into place.
    pub fn adopt(&self, file: &Path, digest: &Digest) -> Result<PathBuf, BlobDirError> {
        let dest = self.path(digest);
        if let Err(e) = std::fs::rename(file, &dest) {
            let _ = std::fs::remove_file(file);
            return Err(io_err("rename", &dest)(e));
        }
        Ok(dest)
    }

    /// Starts writing the blob `digest`, hashing the bytes as they are
    /// written; [`StagedBlob::commit`] refuses them unless they hash to it
    /// (and are `size` bytes, when given).
    pub fn stage(&self, digest: &Digest, size: Option<u64>) -> Result<StagedBlob, BlobDirError> {
        self.open(Some(digest.clone()), size, true)
    }

    /// Starts writing the blob `digest` from bytes the sender has already
    /// hashed against it and withholds the last byte of when they do not
    /// match (the bundle reader's check): they are only counted, and
    /// [`StagedBlob::commit`] refuses anything but exactly `size` bytes.
    pub fn stage_verified(&self, digest: &Digest, size: u64) -> Result<StagedBlob, BlobDirError> {
        self.open(Some(digest.clone()), Some(size), false)
    }

    /// [`BlobDir::stage`] or [`BlobDir::stage_verified`], as `check` says.
    pub fn stage_checked(
        &self,
        digest: &Digest,
        size: u64,
        check: Check,
    ) -> Result<StagedBlob, BlobDirError> {
        match check {
            Check::Hash => self.stage(digest, Some(size)),
            Check::Sender => self.stage_verified(digest, size),
        }
    }

    /// Starts writing a blob whose digest is learnt from its bytes (hashed
    /// as they are written): [`StagedBlob::commit`] names it so.
    pub fn stage_new(&self) -> Result<StagedBlob, BlobDirError> {
        self.open(None, None, true)
    }

    /// Writes the blob `digest` from `data` (hashed; `size` bytes when
    /// given) and returns its size. Nothing is left on failure.
    pub fn write(
        &self,
        digest: &Digest,
        size: Option<u64>,
        data: impl Read,
    ) -> Result<u64, BlobDirError> {
        let mut staged = self.stage(digest, size)?;
        staged.copy_from(data)?;
        staged.commit().map(|(_, n)| n)
    }

    /// Writes `bytes` under their digest (unless the directory holds a
    /// blob of that digest and size already) and returns the digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, BlobDirError> {
        let digest = Digest::of(bytes);
        if self.size_of(&digest) == Some(bytes.len() as u64) {
            return Ok(digest);
        }
        // Hashed already: only counted on the way.
        let mut staged = self.stage_verified(&digest, bytes.len() as u64)?;
        staged.write_chunk(bytes)?;
        staged.commit()?;
        Ok(digest)
    }

    fn open(
        &self,
        digest: Option<Digest>,
        size: Option<u64>,
        hash: bool,
    ) -> Result<StagedBlob, BlobDirError> {
        use std::os::unix::fs::PermissionsExt;
        let label = digest
            .as_ref()
            .map_or_else(|| "new".to_string(), Digest::hex);
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{BLOB_TMP_PREFIX}{label}-"))
            // The mode File::create gives (the umask applies), not 0600.
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(&self.dir)
            .map_err(io_err("create a temporary file in", &self.dir))?;
        Ok(StagedBlob {
            out: BufWriter::with_capacity(WRITE_BUFFER, tmp),
            dir: self.clone(),
            digest,
            size,
            hasher: hash.then(Hasher::new),
            written: 0,
        })
    }
}

/// A blob being written to a temporary file of its [`BlobDir`]: hashed (or
/// counted) as bytes are written, renamed into place by
/// [`StagedBlob::commit`] once checked, removed when dropped before.
pub struct StagedBlob {
    out: BufWriter<tempfile::NamedTempFile>,
    dir: BlobDir,
    /// The digest it must have (`None`: learnt from the bytes).
    digest: Option<Digest>,
    size: Option<u64>,
    /// `None`: the sender checked the bytes; only counted.
    hasher: Option<Hasher>,
    written: u64,
}

impl std::fmt::Debug for StagedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedBlob")
            .field("path", &self.tmp_path())
            .field("digest", &self.digest)
            .field("written", &self.written)
            .finish()
    }
}

impl StagedBlob {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The temporary file's path.
    pub fn tmp_path(&self) -> PathBuf {
        self.out.get_ref().path().to_path_buf()
    }

    /// Writes `bytes` (a chunk of the blob), with the typed error: more
    /// bytes than the blob's size are refused before they are written.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), BlobDirError> {
        self.write_all(bytes).map_err(|e| self.refused(e, "write"))
    }

    /// Writes everything `data` yields; returns the bytes copied.
    pub fn copy_from(&mut self, mut data: impl Read) -> Result<u64, BlobDirError> {
        let mut buf = vec![0u8; WRITE_BUFFER];
        let mut n = 0u64;
        loop {
            let got = match data.read(&mut buf) {
                Ok(0) => return Ok(n),
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read the bytes of", &self.tmp_path())(e)),
            };
            self.write_chunk(&buf[..got])?;
            n += got as u64;
        }
    }

    /// A write error as the typed error: a size overrun, or the I/O error.
    fn refused(&self, e: io::Error, op: &'static str) -> BlobDirError {
        match (e.kind(), &self.digest, self.size) {
            (io::ErrorKind::InvalidInput, Some(d), Some(size)) => BlobDirError::Size {
                digest: d.clone(),
                path: self.dir.path(d),
                expected: size,
                actual: self.written,
                at_least: true,
            },
            _ => io_err(op, &self.tmp_path())(e),
        }
    }

    /// Checks the bytes (size, then digest), syncs them (unless the
    /// directory is scratch) and renames the blob into place: its digest
    /// and size. On error nothing is left, neither the blob nor the
    /// temporary file.
    pub fn commit(self) -> Result<(Digest, u64), BlobDirError> {
        let StagedBlob {
            out,
            dir,
            digest,
            size,
            hasher,
            written,
        } = self;
        let actual = hasher.map(Hasher::finish);
        let digest = match (digest, actual) {
            (Some(d), Some(a)) if a != d => {
                if let Some(expected) = size.filter(|s| *s != written) {
                    return Err(size_error(&dir, d, expected, written));
                }
                return Err(BlobDirError::Digest {
                    path: dir.path(&d),
                    digest: d,
                    actual: a,
                });
            }
            (Some(d), _) => d,
            (None, Some(a)) => a,
            // Neither claimed nor hashed: never built by `BlobDir::open`.
            (None, None) => {
                return Err(io_err("name", dir.dir())(io::Error::other(
                    "a staged blob with neither a digest nor a hash",
                )))
            }
        };
        if let Some(expected) = size.filter(|s| *s != written) {
            return Err(size_error(&dir, digest, expected, written));
        }
        let dest = dir.path(&digest);
        let tmp = out
            .into_inner()
            .map_err(|e| io_err("write", &dest)(e.into_error()))?;
        if dir.durable {
            tmp.as_file()
                .sync_all()
                .map_err(io_err("sync", tmp.path()))?;
        }
        tmp.persist(&dest)
            .map_err(|e| io_err("rename into", &dest)(e.error))?;
        Ok((digest, written))
    }
}

fn size_error(dir: &BlobDir, digest: Digest, expected: u64, actual: u64) -> BlobDirError {
    BlobDirError::Size {
        path: dir.path(&digest),
        digest,
        expected,
        actual,
        at_least: false,
    }
}

impl Write for StagedBlob {
    /// Writes `buf`, hashing or counting it; more bytes than the blob's size
    /// are refused ([`io::ErrorKind::InvalidInput`]) before they are written.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.written + buf.len() as u64;
        if self.size.is_some_and(|s| end > s) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "more bytes than the blob's size",
            ));
        }
        let n = self.out.write(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A random-enough number for a temporary name (the process's hasher keys).
fn rand_u64(label: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(label.as_bytes());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &BlobDir) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn blob_dir() -> (tempfile::TempDir, BlobDir) {
        let root = tempfile::tempdir().unwrap();
        let dir = BlobDir::under(root.path());
        dir.create().unwrap();
        (root, dir)
    }

    #[test]
    fn a_blob_lands_under_its_digest_with_its_bytes() {
        let (_root, dir) = blob_dir();
        let data = vec![5u8; 700_000];
        let d = Digest::of(&data);
        assert_eq!(dir.write(&d, Some(700_000), &data[..]).unwrap(), 700_000);
        assert_eq!(std::fs::read(dir.path(&d)).unwrap(), data);
        assert_eq!(dir.size_of(&d), Some(700_000));
        assert_eq!(names(&dir), [d.hex()]);
        // Unknown size, and a blob whose digest is learnt from its bytes.
        let other = b"other".to_vec();
        let od = Digest::of(&other);
        dir.write(&od, None, &other[..]).unwrap();
        let mut staged = dir.stage_new().unwrap();
        staged.write_all(b"learnt").unwrap();
        let (ld, n) = staged.commit().unwrap();
        assert_eq!((ld.clone(), n), (Digest::of(b"learnt"), 6));
        assert_eq!(std::fs::read(dir.path(&ld)).unwrap(), b"learnt");
    }

    #[test]
    fn a_wrong_digest_leaves_nothing_in_the_directory() {
        let (_root, dir) = blob_dir();
        let claimed = Digest::of(b"right");
        let e = dir.write(&claimed, Some(5), &b"wrong"[..]).unwrap_err();
        assert!(
            matches!(&e, BlobDirError::Digest { digest, actual, .. }
                if *digest == claimed && *actual == Digest::of(b"wrong")),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&claimed.to_string()) && msg.contains(&claimed.hex()),
            "{msg}"
        );
        let e = dir.write(&claimed, None, &b"wrong"[..]).unwrap_err();
        assert!(matches!(e, BlobDirError::Digest { .. }), "{e}");
        // A staged blob dropped before its commit leaves nothing either.
        let mut staged = dir.stage(&claimed, Some(5)).unwrap();
        staged.write_all(b"rig").unwrap();
        let tmp = staged.tmp_path();
        assert!(tmp.is_file());
        assert!(tmp
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{BLOB_TMP_PREFIX}{}-", claimed.hex())));
        drop(staged);
        assert!(names(&dir).is_empty(), "{:?}", names(&dir));
    }

    #[test]
    fn a_short_or_long_write_is_refused_and_leaves_nothing() {
        let (_root, dir) = blob_dir();
        let data = b"0123456789".to_vec();
        let d = Digest::of(&data);
        // Short: the right prefix, one byte missing.
        let e = dir.write(&d, Some(10), &data[..9]).unwrap_err();
        assert!(
            matches!(
                e,
                BlobDirError::Size {
                    expected: 10,
                    actual: 9,
                    at_least: false,
                    ..
                }
            ),
            "{e}"
        );
        // Long: refused at the first byte too many, before it is written.
        let mut long = data.clone();
        long.push(b'!');
        let e = dir.write(&d, Some(10), &long[..]).unwrap_err();
        assert!(
            matches!(
                e,
                BlobDirError::Size {
                    expected: 10,
                    at_least: true,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("or more"), "{e}");
        // Verified bytes are only counted: the size is their check.
        let mut staged = dir.stage_verified(&d, 10).unwrap();
        staged.write_all(&data[..9]).unwrap();
        let e = staged.commit().unwrap_err();
        assert!(matches!(e, BlobDirError::Size { actual: 9, .. }), "{e}");
        let mut staged = dir.stage_verified(&d, 10).unwrap();
        assert!(staged.write_all(&long).is_err());
        drop(staged);
        assert!(names(&dir).is_empty(), "{:?}", names(&dir));
        // The exact bytes land.
        let mut staged = dir.stage_verified(&d, 10).unwrap();
        staged.write_all(&data).unwrap();
        assert_eq!(staged.commit().unwrap(), (d.clone(), 10));
        assert_eq!(names(&dir), [d.hex()]);
    }

    #[test]
    fn concurrent_writes_of_one_digest_end_with_one_correct_file() {
        let (_root, dir) = blob_dir();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(&data);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    // In small pieces, so that the writes interleave.
                    let mut staged = dir.stage(&d, Some(data.len() as u64)).unwrap();
                    for piece in data.chunks(4096) {
                        staged.write_all(piece).unwrap();
                    }
                    staged.commit().unwrap();
                });
            }
        });
        assert_eq!(names(&dir), [d.hex()]);
        assert_eq!(std::fs::read(dir.path(&d)).unwrap(), data);
    }

    #[test]
    fn a_crash_leftover_is_swept_and_blobs_stay() {
        let (_root, dir) = blob_dir();
        let d = dir.put(b"kept").unwrap();
        assert_eq!(dir.put(b"kept").unwrap(), d);
        // What a crash leaves: a temporary file never committed nor dropped.
        let staged = dir.stage(&Digest::of(b"lost"), None).unwrap();
        let tmp = staged.tmp_path();
        std::mem::forget(staged);
        let download = dir.temp_path("fetch");
        std::fs::write(&download, b"partial").unwrap();
        assert!(tmp.is_file());
        assert_eq!(dir.sweep(), 2);
        assert_eq!(names(&dir), [d.hex()]);
        // A verified download is adopted under its digest.
        let fetched = dir.temp_path("fetch");
        std::fs::write(&fetched, b"fetched").unwrap();
        let fd = Digest::of(b"fetched");
        assert_eq!(dir.adopt(&fetched, &fd).unwrap(), dir.path(&fd));
        assert_eq!(dir.size_of(&fd), Some(7));
        assert_eq!(dir.sweep(), 0);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = BlobDir::under(&root.path().join("none"));
        let e = dir.stage(&Digest::of(b"x"), None).unwrap_err();
        assert!(e.to_string().contains("none/blobs/sha256"), "{e}");
    }
}
