//! Writing a bundle tarball, reproducibly and atomically.
//!
//! Entries go out in streaming order (`oci-layout`, `ferry/bundle.json`,
//! optional signature, `index.json`, then blobs in the order the caller
//! gives, which should put manifests and configs before layers). Every header
//! is fixed (ustar, mode 0644/0755, uid/gid 0, mtime 0, no user names), the
//! compressor parameters are fixed, so the same content gives the same bytes.
//! The file is written under a temporary name in the destination directory
//! and renamed into place by [`BundleWriter::finish`], next to a
//! `<name>.sha256` file in `sha256sum` format.
//!
//! [`BundleWriter::write_head_meta`] writes the head without holding
//! `ferry/bundle.json` whole (it grows about 3 KB per reference): the bytes
//! are serialised from the [`BundleMeta`] straight into the tar entry, whose
//! size and sha256 were taken from an earlier serialisation
//! ([`BundleMeta::json_sums`], also the signature's prehash) and are
//! checked; the output is byte for byte [`BundleWriter::write_head`]'s.
//!
//! [`BundleWriter::create_split`] writes the same bytes cut into parts
//! instead (see [`crate::parts`]): `<name>.part-000`, … and the parts
//! manifest, all renamed into place only when the bundle is complete.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::frames;
use crate::meta::{BundleMeta, JsonSums, META_PATH, SIG_PATH};
use crate::parts::{Identity, PartsWriter, PartsWritten};

pub use crate::atomic::{write_atomic, write_atomic_mode};
pub use crate::write_error::WriteError;

/// zstd worker threads (fixed so that output bytes never depend on the machine).
const ZSTD_WORKERS: u32 = 4;

/// Input bytes per zstd job. With [`ZSTD_WORKERS`] workers, zstd keeps
/// several jobs' input and output buffers in flight: 1 MiB jobs hold the
/// compressor near 15 MiB (2 MiB jobs: about 30 MiB; zstd's default at
/// level 3, 8 MiB jobs: over 100 MiB), for the same bundle size within
/// 0.01 % on the benchmark's data set.
const ZSTD_JOB_SIZE: u32 = 1 << 20;

/// Blobs at least this large are sampled: already-compressed content
/// (gzip/zstd layers, zip plugins, .tgz charts) goes through zstd's fast
/// mode ([`STORE_LEVEL`]), which stores it at memory speed, instead of the bundle's level, which
/// would spend seconds per GB finding nothing to gain.
const SAMPLE_FROM: u64 = 1 << 20;
/// Bytes sampled at the start of such a blob.
const SAMPLE: usize = 128 << 10;
/// Level for incompressible blobs (or the bundle's level when lower):
/// zstd's fast mode, about 3 GB/s per core on gzip'd layers where level 1
/// manages about 1.1 GB/s, for the same size within 0.5 %.
const STORE_LEVEL: i32 = -5;
/// Level at which a sample is tried.
const SAMPLE_LEVEL: i32 = 1;

/// Compressed bytes go to the output thread in buffers of this size …
const PIPE_BUF: usize = 256 << 10;
/// … at most this many waiting.
const PIPE_DEPTH: usize = 4;

/// Compression of the outer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd at the given level (multi-threaded, deterministic output).
    Zstd {
        /// Level (1..=19). 3 is the default.
        level: i32,
    },
    /// gzip at the given level.
    Gzip {
        /// Level (0..=9).
        level: u32,
    },
    /// A plain tar.
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd { level: 3 }
    }
}

impl Compression {
    /// The conventional file suffix.
    pub fn suffix(&self) -> &'static str {
        match self {
            Compression::Zstd { .. } => ".tar.zst",
            Compression::Gzip { .. } => ".tar.gz",
            Compression::None => ".tar",
        }
    }
}

/// A bundle being written.
pub struct BundleWriter {
    path: PathBuf,
    tmp: Option<tempfile::TempPath>,
    builder: Option<tar::Builder<Encoder>>,
    /// Whether the output is cut into parts.
    split: bool,
    /// Split output: the identity read from `ferry/bundle.json` for the
    /// parts manifest (set by [`BundleWriter::write_head`]).
    identity: Option<Identity>,
    /// zstd: the bundle's level (the level the encoder uses now is
    /// [`FramedZstd`]'s).
    bundle_level: Option<i32>,
}

/// What [`BundleWriter::finish`] produced.
#[derive(Debug, Clone)]
pub struct Written {
    /// The bundle file (split: the parts manifest).
    pub path: PathBuf,
    /// The `.sha256` file beside it (split: the parts manifest, which holds
    /// the whole stream's sha256).
    pub checksum_path: PathBuf,
    /// Bundle size on disk (split: the sum of the parts).
    pub size: u64,
    /// sha256 of the bundle file (split: of the whole stream, the parts
    /// concatenated).
    pub sha256: Digest,
    /// Split output: the parts and their manifest.
    pub parts: Option<PartsWritten>,
}

type Sink = Pipe;

/// The output on a thread of its own: the bundle's sha256 and the writes
/// to disk run beside compression instead of after it. Buffers go back and
/// forth (never more than `PIPE_DEPTH` + 3 of them).
struct Pipe {
    buf: Vec<u8>,
    /// Bytes written so far (the offset in the file of the next one).
    written: u64,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<io::Result<(Digest, u64, Output)>>>,
}

impl Pipe {
    fn new(out: Output) -> io::Result<Pipe> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH);
        let (back_tx, back) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH + 2);
        let thread = std::thread::Builder::new()
            .name("ferry-bundle-out".into())
            .spawn(move || {
                let mut out = HashingWriter::new(out);
                for mut b in rx {
                    out.write_all(&b)?;
                    b.clear();
                    let _ = back_tx.try_send(b);
                }
                out.flush()?;
                Ok(out.finish())
            })?;
        Ok(Pipe {
            buf: Vec::with_capacity(PIPE_BUF),
            written: 0,
            tx: Some(tx),
            back,
            thread: Some(thread),
        })
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(PIPE_BUF));
        let full = std::mem::replace(&mut self.buf, next);
        let sent = match &self.tx {
            Some(tx) => tx.send(full).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.stopped())
        }
    }

    /// The output thread stopped: its error.
    fn stopped(&mut self) -> io::Error {
        match self.join() {
            Err(e) => e,
            Ok(_) => io::Error::other("the bundle's output stopped early"),
        }
    }

    /// Closes the channel and waits for the thread: the digest and length
    /// of everything written, and the output.
    fn join(&mut self) -> io::Result<(Digest, u64, Output)> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the bundle's output thread panicked")),
            None => Err(io::Error::other("the bundle's output is closed")),
        }
    }

    /// Sends what is left and waits for the thread.
    fn finish(mut self) -> io::Result<(Digest, u64, Output)> {
        self.send()?;
        self.join()
    }
}

impl Drop for Pipe {
    /// An abandoned bundle: the thread ends once the channel is empty, and
    /// the output (its temporary file or parts) is dropped before this
    /// returns, so nothing outlives the writer.
    fn drop(&mut self) {
        let _ = self.join();
    }
}

impl Write for Pipe {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > PIPE_BUF {
            self.send()?;
        }
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= PIPE_BUF {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Where the compressed bytes go: one file, or rolling parts.
enum Output {
    File(BufWriter<File>),
    Parts(Box<PartsWriter>),
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File(f) => f.write(buf),
            Output::Parts(p) => p.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(f) => f.flush(),
            Output::Parts(p) => p.flush(),
        }
    }
}

enum Encoder {
    Zstd(FramedZstd),
    Gzip(flate2::write::GzEncoder<Sink>),
    Plain(Sink),
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Plain(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Plain(e) => e.flush(),
        }
    }
}

impl Encoder {
    /// Ends the zstd frame here (nothing for gzip or a plain tar).
    fn end_frame(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.end_frame(),
            _ => Ok(()),
        }
    }

    fn finish(self) -> io::Result<Sink> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Plain(e) => Ok(e),
        }
    }
}

/// A zstd encoder that writes a sequence of frames and their seek table
/// ([`crate::frames`]): a frame ends where the writer asks
/// ([`FramedZstd::end_frame`], around large blobs) and wherever it
/// reaches [`frames::MAX_FRAME`] bytes; the next frame's encoder starts
/// with the next byte, so no frame is empty.
struct FramedZstd {
    state: FrameState,
    /// The level the next frame starts with.
    level: i32,
    /// Bytes fed into the current frame.
    fed: u64,
    /// Offset in the file where the current frame starts.
    start: u64,
    frames: Vec<frames::Frame>,
}

enum FrameState {
    /// Inside a frame.
    In(zstd::stream::write::Encoder<'static, Sink>),
    /// Between frames.
    Between(Sink),
    /// Only while a frame is being finished (an error there leaves it so).
    Broken,
}

/// A zstd encoder with ferry's fixed parameters.
fn zstd_encoder(sink: Sink, level: i32) -> io::Result<zstd::stream::write::Encoder<'static, Sink>> {
    let mut e = zstd::stream::write::Encoder::new(sink, level)?;
    e.include_checksum(true)?;
    // A fixed worker count keeps the output identical on every machine.
    e.multithread(ZSTD_WORKERS)?;
    e.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    Ok(e)
}

fn broken() -> io::Error {
    io::Error::other("the bundle's zstd frame could not be finished")
}

impl FramedZstd {
    fn new(sink: Sink, level: i32) -> FramedZstd {
        FramedZstd {
            state: FrameState::Between(sink),
            level,
            fed: 0,
            start: 0,
            frames: Vec::new(),
        }
    }

    /// The encoder of the current frame, started if need be.
    fn encoder(&mut self) -> io::Result<&mut zstd::stream::write::Encoder<'static, Sink>> {
        if let FrameState::Between(_) = self.state {
            let FrameState::Between(sink) = std::mem::replace(&mut self.state, FrameState::Broken)
            else {
                return Err(broken());
            };
            self.start = sink.written;
            self.state = FrameState::In(zstd_encoder(sink, self.level)?);
        }
        match &mut self.state {
            FrameState::In(e) => Ok(e),
            _ => Err(broken()),
        }
    }

    /// Ends the current frame, if anything went into it.
    fn end_frame(&mut self) -> io::Result<()> {
        if !matches!(self.state, FrameState::In(_)) {
            return Ok(());
        }
        let FrameState::In(e) = std::mem::replace(&mut self.state, FrameState::Broken) else {
            return Err(broken());
        };
        let sink = e.finish()?;
        let compressed = u32::try_from(sink.written - self.start)
            .map_err(|_| io::Error::other("a zstd frame of 4 GiB or more"))?;
        self.frames.push(frames::Frame {
            compressed,
            decompressed: self.fed as u32,
        });
        self.fed = 0;
        self.state = FrameState::Between(sink);
        Ok(())
    }

    /// Sets the level, if it changes: at once inside a frame (flushed
    /// first, so the next job starts here whatever the workers' timing), or
    /// for the next one.
    fn set_level(&mut self, level: i32) -> io::Result<()> {
        if level == self.level {
            return Ok(());
        }
        self.level = level;
        if let FrameState::In(e) = &mut self.state {
            e.flush()?;
            e.set_parameter(zstd::stream::raw::CParameter::CompressionLevel(level))?;
        }
        Ok(())
    }

    /// Ends the last frame and writes the seek table after it.
    fn finish(mut self) -> io::Result<Sink> {
        self.end_frame()?;
        let FrameState::Between(mut sink) = self.state else {
            return Err(broken());
        };
        sink.write_all(&frames::SeekTable::new(self.frames).encode())?;
        Ok(sink)
    }
}

impl Write for FramedZstd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let room = (frames::MAX_FRAME - self.fed).min(buf.len() as u64) as usize;
        let n = self.encoder()?.write(&buf[..room])?;
        self.fed += n as u64;
        if self.fed == frames::MAX_FRAME {
            self.end_frame()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.state {
            FrameState::In(e) => e.flush(),
            FrameState::Between(s) => s.flush(),
            FrameState::Broken => Err(broken()),
        }
    }
}

/// The one tar header ferry writes for an entry (ustar, mode 0644 or 0755,
/// uid/gid 0, mtime 0, no user or group names, no link, no prefix). The
/// reader accepts no other: every byte of the tar stream is then a function
/// of the entries' names, sizes and contents, all of which bundle.json pins.
pub fn header(path: &str, size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    // Paths are ASCII and short (`blobs/sha256/<64 hex>` is 77 bytes).
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

impl BundleWriter {
    /// Starts writing `path` (under a temporary name beside it).
    pub fn create(path: &Path, compression: Compression) -> Result<BundleWriter, WriteError> {
        let io_err = |source| WriteError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bundle".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(io_err)?;
        let (file, tmp_path) = tmp.into_parts();
        let out = Output::File(BufWriter::with_capacity(1 << 20, file));
        BundleWriter::start(path, compression, out, Some(tmp_path))
    }

    /// Starts writing `path` cut into parts of `part_size` bytes
    /// (`<path>.part-000`, …, each under a temporary name until
    /// [`BundleWriter::finish`]) and the parts manifest
    /// ([`crate::parts::manifest_path_for`]). The bytes are those
    /// [`BundleWriter::create`] would write, cut at byte boundaries.
    pub fn create_split(
        path: &Path,
        compression: Compression,
        part_size: u64,
    ) -> Result<BundleWriter, WriteError> {
        let parts = PartsWriter::create(path, part_size).map_err(|source| WriteError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        BundleWriter::start(path, compression, Output::Parts(Box::new(parts)), None)
    }

    fn start(
        path: &Path,
        compression: Compression,
        out: Output,
        tmp_path: Option<tempfile::TempPath>,
    ) -> Result<BundleWriter, WriteError> {
        let io_err = |source| WriteError::Io {
            path: path.to_path_buf(),
            source,
        };
        let sink = Pipe::new(out).map_err(io_err)?;
        let enc = match compression {
            Compression::Zstd { level } => Encoder::Zstd(FramedZstd::new(sink, level)),
            Compression::Gzip { level } => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(sink, flate2::Compression::new(level)),
            ),
            Compression::None => Encoder::Plain(sink),
        };
        let mut builder = tar::Builder::new(enc);
        builder.mode(tar::HeaderMode::Deterministic);
        Ok(BundleWriter {
            path: path.to_path_buf(),
            split: tmp_path.is_none(),
            tmp: tmp_path,
            builder: Some(builder),
            identity: None,
            bundle_level: match compression {
                Compression::Zstd { level } => Some(level),
                _ => None,
            },
        })
    }

    fn io_err(&self, source: io::Error) -> WriteError {
        WriteError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn builder(&mut self) -> Result<&mut tar::Builder<Encoder>, WriteError> {
        let path = self.path.clone();
        self.builder.as_mut().ok_or_else(|| WriteError::Io {
            path,
            source: io::Error::other("bundle writer already finished"),
        })
    }

    fn append_bytes(&mut self, path: &str, bytes: &[u8]) -> Result<(), WriteError> {
        let h = header(path, bytes.len() as u64, false);
        let r = self.builder()?.append(&h, bytes);
        r.map_err(|e| self.io_err(e))
    }

    fn append_dir(&mut self, path: &str) -> Result<(), WriteError> {
        let h = header(path, 0, true);
        let r = self.builder()?.append(&h, io::empty());
        r.map_err(|e| self.io_err(e))
    }

    /// Writes the head: `oci-layout`, `ferry/bundle.json`, the optional
    /// signature, and `index.json`.
    pub fn write_head(
        &mut self,
        meta_json: &[u8],
        signature: Option<&[u8]>,
        index_json: &[u8],
    ) -> Result<(), WriteError> {
        if self.split {
            // Split: the parts manifest names the bundle it carries.
            let identity = Identity::from_meta_json(meta_json).map_err(|e| {
                self.io_err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("ferry/bundle.json has no identity for the parts manifest: {e}"),
                ))
            })?;
            self.identity = Some(identity);
        }
        self.append_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        self.append_dir("ferry/")?;
        self.append_bytes(META_PATH, meta_json)?;
        self.append_head_rest(signature, index_json)
    }

    /// Writes the same head as [`BundleWriter::write_head`] given
    /// `meta.to_json()`, without those bytes ever held whole:
    /// `ferry/bundle.json` is serialised from `meta` straight into its tar
    /// entry, whose header takes the size `sums` gives
    /// ([`BundleMeta::json_sums`], the same bytes the signature signed).
    /// Bytes that come out different from `sums` (size or sha256) are
    /// refused: the bundle is then abandoned.
    pub fn write_head_meta(
        &mut self,
        meta: &BundleMeta,
        sums: &JsonSums,
        signature: Option<&[u8]>,
        index_json: &[u8],
    ) -> Result<(), WriteError> {
        if self.split {
            // The identity `Identity::from_meta_json` would read from the bytes.
            self.identity = Some(Identity {
                format_version: meta.format_version,
                name: meta.name.clone(),
                tool: meta.tool.clone(),
                bundle_json: sums.sha256.clone(),
                index: meta.index.clone(),
            });
        }
        self.append_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        self.append_dir("ferry/")?;
        let h = header(META_PATH, sums.size, false);
        let path = self.path.clone();
        let out_err = |source| WriteError::Io {
            path: path.clone(),
            source,
        };
        let enc = self.builder()?.get_mut();
        enc.write_all(h.as_bytes()).map_err(out_err)?;
        let mut entry = BufWriter::with_capacity(64 << 10, HashingWriter::new(&mut *enc));
        meta.write_json(&mut entry).map_err(out_err)?;
        // `into_inner` writes what is buffered without flushing the
        // compressor (a flush would end a zstd block here, and the bytes
        // would no longer be those of `write_head`).
        let (sha256, len, enc) = entry
            .into_inner()
            .map_err(|e| out_err(e.into_error()))?
            .finish();
        if len != sums.size || sha256 != sums.sha256 {
            return Err(out_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{META_PATH} serialised to {len} bytes ({sha256}), not the {} bytes ({}) hashed and signed",
                    sums.size, sums.sha256
                ),
            )));
        }
        let pad = (512 - len % 512) % 512;
        enc.write_all(&[0u8; 512][..pad as usize])
            .map_err(out_err)?;
        self.append_head_rest(signature, index_json)
    }

    /// The head after `ferry/bundle.json`: the signature, `index.json`, the
    /// blob directories.
    fn append_head_rest(
        &mut self,
        signature: Option<&[u8]>,
        index_json: &[u8],
    ) -> Result<(), WriteError> {
        if let Some(sig) = signature {
            self.append_bytes(SIG_PATH, sig)?;
        }
        self.append_bytes("index.json", index_json)?;
        self.append_dir("blobs/")?;
        self.append_dir("blobs/sha256/")
    }

    /// Appends one blob, hashing it on the way; refuses bytes that do not
    /// match `digest` and `size` (the bundle is then abandoned). The
    /// source's buffers go straight to the compressor.
    pub fn write_blob(
        &mut self,
        digest: &Digest,
        size: u64,
        source: impl BufRead,
    ) -> Result<(), WriteError> {
        self.append_blob(digest, size, source, true)
    }

    /// Appends one blob whose source checks its digest itself (a download
    /// that hashes as it streams and fails the read otherwise); only the
    /// size is checked here. The caller must abandon the bundle if the
    /// source later reports that the bytes were wrong.
    pub fn write_verified_blob(
        &mut self,
        digest: &Digest,
        size: u64,
        source: impl BufRead,
    ) -> Result<(), WriteError> {
        self.append_blob(digest, size, source, false)
    }

    /// The tar entry written by hand (header, data, padding to 512 bytes, as
    /// `tar::Builder::append` does) so that each of the source's buffers
    /// goes to the compressor as it is, with no copy in between.
    fn append_blob(
        &mut self,
        digest: &Digest,
        size: u64,
        mut source: impl BufRead,
        hash: bool,
    ) -> Result<(), WriteError> {
        let src_err = |e| WriteError::Source {
            digest: digest.clone(),
            source: e,
        };
        // A large blob's entry is a frame of its own (ended before and
        // after it), so that it decodes alone (`crate::frames`); its
        // frame starts with the level its sample chooses, no flush needed.
        let own_frame = size >= frames::OWN_FRAME_FROM;
        if own_frame {
            let r = self.builder()?.get_mut().end_frame();
            r.map_err(|e| self.io_err(e))?;
        }
        let mut sample = Vec::new();
        if let Some(bundle_level) = self.bundle_level {
            if size >= SAMPLE_FROM {
                (&mut source)
                    .take(SAMPLE as u64)
                    .read_to_end(&mut sample)
                    .map_err(src_err)?;
                let level = if incompressible(&sample) {
                    bundle_level.min(STORE_LEVEL)
                } else {
                    bundle_level
                };
                self.set_level(level)?;
            }
        }
        let h = header(&digest.layout_path(), size, false);
        let mut hasher = hash.then(crate::digest::Hasher::new);
        let path = self.path.clone();
        let out_err = |source| WriteError::Io {
            path: path.clone(),
            source,
        };
        let enc = self.builder()?.get_mut();
        enc.write_all(h.as_bytes()).map_err(out_err)?;
        let mut source = io::Cursor::new(sample).chain(source);
        let mut len = 0u64;
        while len < size {
            let buf = source.fill_buf().map_err(src_err)?;
            if buf.is_empty() {
                // Short: the length check below names it; the entry is
                // never finished, and the bundle is abandoned.
                break;
            }
            let n = buf.len().min((size - len) as usize);
            if let Some(h) = &mut hasher {
                h.update(&buf[..n]);
            }
            enc.write_all(&buf[..n]).map_err(out_err)?;
            source.consume(n);
            len += n as u64;
        }
        if len == size {
            let pad = (512 - size % 512) % 512;
            enc.write_all(&[0u8; 512][..pad as usize])
                .map_err(out_err)?;
            if own_frame {
                enc.end_frame().map_err(out_err)?;
            }
        }
        let actual = match hasher {
            Some(h) => h.finish(),
            None => digest.clone(),
        };
        if &actual != digest || len != size {
            return Err(WriteError::BlobMismatch {
                expected: digest.clone(),
                actual,
                len,
                size,
            });
        }
        Ok(())
    }

    /// Switches the zstd level at this point of the stream (see
    /// [`FramedZstd::set_level`]): the output stays reproducible.
    fn set_level(&mut self, level: i32) -> Result<(), WriteError> {
        let path = self.path.clone();
        if let Encoder::Zstd(e) = self.builder()?.get_mut() {
            e.set_level(level)
                .map_err(|source| WriteError::Io { path, source })?;
        }
        Ok(())
    }

    /// Finishes the archive, fsyncs, renames into place and writes the
    /// `.sha256` file.
    pub fn finish(mut self) -> Result<Written, WriteError> {
        let builder = self
            .builder
            .take()
            .ok_or_else(|| self.io_err(io::Error::other("finished twice")))?;
        let enc = builder.into_inner().map_err(|e| self.io_err(e))?;
        let sink = enc.finish().map_err(|e| self.io_err(e))?;
        let (sha256, size, out) = sink.finish().map_err(|e| self.io_err(e))?;
        let buf = match out {
            Output::File(buf) => buf,
            Output::Parts(parts) => {
                let identity = self.identity.take().ok_or_else(|| {
                    self.io_err(io::Error::other("the bundle head was never written"))
                })?;
                let written = parts.finish(identity, size, sha256.clone())?;
                return Ok(Written {
                    path: written.manifest_path.clone(),
                    checksum_path: written.manifest_path.clone(),
                    size,
                    sha256,
                    parts: Some(written),
                });
            }
        };
        let file = buf.into_inner().map_err(|e| self.io_err(e.into_error()))?;
        file.sync_all().map_err(|e| self.io_err(e))?;
        drop(file);
        let tmp = self
            .tmp
            .take()
            .ok_or_else(|| self.io_err(io::Error::other("no temp file")))?;
        tmp.persist(&self.path).map_err(|e| self.io_err(e.error))?;
        let checksum_path = PathBuf::from(format!("{}.sha256", self.path.display()));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let line = format!("{}  {}\n", sha256.hex(), name);
        write_atomic(&checksum_path, line.as_bytes()).map_err(|source| WriteError::Io {
            path: checksum_path.clone(),
            source,
        })?;
        Ok(Written {
            path: self.path.clone(),
            checksum_path,
            size,
            sha256,
            parts: None,
        })
    }
}

/// Whether zstd would gain under 2 % on `sample` (already-compressed data).
fn incompressible(sample: &[u8]) -> bool {
    match zstd::bulk::compress(sample, SAMPLE_LEVEL) {
        Ok(out) => out.len() as u64 * 100 >= sample.len() as u64 * 98,
        Err(_) => false,
    }
}
