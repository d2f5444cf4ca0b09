//! Opening a bundle stream: the compression detected from its first bytes
//! (zstd, gzip or none, anything else refused), and the whole-file
//! accounting: one zstd frame or one gzip member, and nothing after it.

use std::io::{self, BufRead, BufReader, Read};

use super::BundleError;

/// Opens the decompressor a stream needs, detected from its first bytes.
/// The decompressed stream ends with an error ([`TrailingData`] inside an
/// [`io::Error`]) when anything follows the one zstd frame or gzip member.
pub fn decompress<'a, R: Read + Send + 'a>(source: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    open(source).map(|s| s.inner).map_err(|e| match e {
        BundleError::Read { source, .. } => source,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    })
}

/// A stream with its decompressor, if it has one.
pub(super) struct Opened<'a> {
    pub(super) inner: Box<dyn Read + Send + 'a>,
    pub(super) compressed: bool,
}

/// zstd frame magic number (little-endian `0xFD2FB528`).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// gzip member magic.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `b` starts a zstd skippable frame (magic `0x184D2A50` to
/// `0x184D2A5F`): a frame any zstd decoder skips unread, whatever it holds.
fn is_skippable(b: &[u8]) -> bool {
    b.len() >= 4 && b[0] & 0xf0 == 0x50 && b[1..4] == [0x2a, 0x4d, 0x18]
}

/// What a run of bytes that should not be there looks like.
fn describe_bytes(b: &[u8]) -> String {
    if b.starts_with(&ZSTD_MAGIC) {
        "a second zstd frame".into()
    } else if is_skippable(b) {
        "a zstd skippable frame".into()
    } else if b.starts_with(&GZIP_MAGIC) {
        "a gzip member".into()
    } else if b.iter().all(|x| *x == 0) {
        "zero bytes".into()
    } else {
        "other bytes".into()
    }
}

/// Counts the bytes read from the file (for offsets in messages).
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Data after the end of the compressed stream (carried inside an
/// [`io::Error`] from the decompressor; the reader turns it into
/// [`BundleError::Trailing`]).
#[derive(Debug, thiserror::Error)]
#[error("{what} at byte {offset} of the file, after the end of the {after}")]
pub struct TrailingData {
    /// Offset in the file (the compressed stream) where it starts.
    pub offset: u64,
    /// `zstd frame` or `gzip member`.
    pub after: &'static str,
    /// What it looks like.
    pub what: String,
}

type Buffered<R> = BufReader<Counting<R>>;

enum Decoder<'a, R: Read> {
    Zstd(zstd::stream::read::Decoder<'a, Buffered<R>>),
    Gzip(flate2::bufread::GzDecoder<Buffered<R>>),
}

/// One zstd frame or one gzip member, and then nothing: when the
/// decompressor reaches the end of its frame, the file must end too.
struct OneStream<'a, R: Read> {
    decoder: Decoder<'a, R>,
    ended: bool,
}

impl<R: Read> OneStream<'_, R> {
    fn check_end(&mut self) -> io::Result<()> {
        let (buf, after) = match &mut self.decoder {
            Decoder::Zstd(d) => (d.get_mut(), "zstd frame"),
            Decoder::Gzip(d) => (d.get_mut(), "gzip member"),
        };
        let left = buf.fill_buf()?;
        if left.is_empty() {
            return Ok(());
        }
        let what = describe_bytes(&left[..left.len().min(4)]);
        let offset = buf.get_ref().count - buf.buffer().len() as u64;
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            TrailingData {
                offset,
                after,
                what,
            },
        ))
    }
}

impl<R: Read> Read for OneStream<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.ended {
            return Ok(0);
        }
        let n = match &mut self.decoder {
            Decoder::Zstd(d) => d.read(buf)?,
            Decoder::Gzip(d) => d.read(buf)?,
        };
        if n == 0 {
            self.check_end()?;
            self.ended = true;
        }
        Ok(n)
    }
}

pub(super) fn open<'a, R: Read + Send + 'a>(source: R) -> Result<Opened<'a>, BundleError> {
    let read_err = |source| BundleError::Read {
        at: "the start of the stream".into(),
        source,
    };
    let mut buf = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: source,
            count: 0,
        },
    );
    let head = buf.fill_buf().map_err(read_err)?;
    let refuse = |what: &str| {
        Err(BundleError::Format(format!(
            "the file starts with {what}; a bundle is a tar archive, plain or in one zstd frame or one gzip member"
        )))
    };
    if is_skippable(head) {
        return refuse(
            "a zstd skippable frame (a frame zstd decoders pass over unread, so nothing checks what it carries)",
        );
    }
    for (magic, name) in [
        (&b"\xfd7zXZ\x00"[..], "xz compression"),
        (&b"BZh"[..], "bzip2 compression"),
        (&b"\x04\x22\x4d\x18"[..], "lz4 compression"),
        (&b"PK\x03\x04"[..], "a zip archive"),
    ] {
        if head.starts_with(magic) {
            return refuse(name);
        }
    }
    let (inner, compressed): (Box<dyn Read + Send + 'a>, bool) = if head.starts_with(&ZSTD_MAGIC) {
        let mut d = zstd::stream::read::Decoder::with_buffer(buf)
            .map_err(read_err)?
            .single_frame();
        // zstd's own default limit (128 MiB windows, what `zstd -d` accepts
        // without `--long`): ferry writes at most 8 MiB windows (level 19), and a
        // frame that asks for more memory than this is refused, not obeyed.
        d.window_log_max(27).map_err(read_err)?;
        (
            Box::new(OneStream {
                decoder: Decoder::Zstd(d),
                ended: false,
            }),
            true,
        )
    } else if head.starts_with(&GZIP_MAGIC) {
        (
            Box::new(OneStream {
                decoder: Decoder::Gzip(flate2::bufread::GzDecoder::new(buf)),
                ended: false,
            }),
            true,
        )
    } else {
        (Box::new(buf), false)
    };
    Ok(Opened { inner, compressed })
}
