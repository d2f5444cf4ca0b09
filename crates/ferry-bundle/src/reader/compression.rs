//! Opening a bundle stream: the compression detected from its first bytes
//! (zstd, gzip or none, anything else refused), and the whole-file
//! accounting: zstd frames and the seek table that lists exactly them
//! ([`crate::frames`]; or one frame alone, as bundles were written before
//! the table), or one gzip member, and nothing after it.

use std::io::{self, BufRead, BufReader, Read};

use super::BundleError;
use crate::frames::{self, FRAME_MAGIC as ZSTD_MAGIC};

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

impl TrailingData {
    /// As the decompressed stream's error.
    fn error(offset: u64, after: &'static str, what: impl Into<String>) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            TrailingData {
                offset,
                after,
                what: what.into(),
            },
        )
    }
}

type Buffered<R> = BufReader<Counting<R>>;

/// The offset in the file of the next byte `buf` hands out.
fn offset_of<R: Read>(buf: &Buffered<R>) -> u64 {
    buf.get_ref().count - buf.buffer().len() as u64
}

/// Bytes that may not follow what came before, `after` it.
fn trailing<R: Read>(buf: &mut Buffered<R>, after: &'static str) -> io::Result<io::Error> {
    let left = buf.fill_buf()?;
    let what = describe_bytes(&left[..left.len().min(4)]);
    Ok(TrailingData::error(offset_of(buf), after, what))
}

/// One gzip member, and then nothing: when the decompressor reaches the
/// end of its member, the file must end too.
struct OneMember<R: Read> {
    decoder: flate2::bufread::GzDecoder<Buffered<R>>,
    ended: bool,
}

impl<R: Read> Read for OneMember<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.ended {
            return Ok(0);
        }
        let n = self.decoder.read(buf)?;
        if n == 0 {
            let src = self.decoder.get_mut();
            if !src.fill_buf()?.is_empty() {
                return Err(trailing(src, "gzip member")?);
            }
            self.ended = true;
        }
        Ok(n)
    }
}

/// zstd frames, one after another, then their seek table and the end of
/// the file (or, as bundles were written before the table, one frame and
/// the end of the file). Every frame's sizes are kept and must be what
/// the table lists, entry for entry; a skippable frame anywhere else, a
/// second frame without a table, and any byte after the table are
/// refused.
struct ZstdFrames<R: Read> {
    src: Buffered<R>,
    decoder: zstd::stream::raw::Decoder<'static>,
    /// The frames read to their end.
    frames: Vec<frames::Frame>,
    /// Inside a frame: where it started, and the bytes it gave so far.
    current: Option<(u64, u64)>,
    /// Where the second frame starts, if there is one (named when no
    /// table follows).
    second: Option<u64>,
    /// The first frame is larger than a table may list (a bundle written
    /// before the seek table): nothing may follow it.
    unlisted_first: bool,
    ended: bool,
}

impl<R: Read> ZstdFrames<R> {
    fn invalid(what: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, what)
    }

    /// Between frames: the next frame, the seek table (and the end), or
    /// the end of a one-frame bundle. `Ok(true)` once the stream ended.
    fn between(&mut self) -> io::Result<bool> {
        let offset = offset_of(&self.src);
        let head = self.src.fill_buf()?;
        if head.is_empty() {
            return match self.second {
                None => Ok(true),
                // Frames the table should have listed: refused as the
                // second frame they start with.
                Some(at) => Err(TrailingData::error(
                    at,
                    "zstd frame",
                    "a second zstd frame with no seek table after the frames",
                )),
            };
        }
        if head.starts_with(&ZSTD_MAGIC) {
            if self.unlisted_first {
                return Err(trailing(&mut self.src, "zstd frame")?);
            }
            if self.frames.len() >= frames::MAX_FRAMES {
                return Err(Self::invalid(format!(
                    "more than {} zstd frames",
                    frames::MAX_FRAMES
                )));
            }
            if !self.frames.is_empty() {
                self.second.get_or_insert(offset);
            }
            self.current = Some((offset, 0));
            return Ok(false);
        }
        if head.len() >= 4 && head[..4] == frames::TABLE_MAGIC.to_le_bytes() {
            self.seek_table(offset)?;
            return Ok(true);
        }
        Err(trailing(&mut self.src, "zstd frame")?)
    }

    /// The seek table at `offset`: exactly the frames read, then the end.
    fn seek_table(&mut self, offset: u64) -> io::Result<()> {
        let want =
            (frames::TABLE_HEADER + self.frames.len() * frames::ENTRY + frames::FOOTER) as u64;
        let mut bytes = Vec::with_capacity(want as usize);
        (&mut self.src).take(want).read_to_end(&mut bytes)?;
        let n = self.frames.len();
        let refuse = |why: String| {
            TrailingData::error(
                offset,
                "zstd frame",
                format!(
                    "a zstd skippable frame that is not the seek table of the {n} frames before it ({why})"
                ),
            )
        };
        if (bytes.len() as u64) < want {
            return Err(refuse(format!("it ends after {} bytes", bytes.len())));
        }
        let table = frames::SeekTable::parse(&bytes).map_err(|e| refuse(e.0))?;
        if let Some((i, (listed, read))) = table
            .frames()
            .iter()
            .zip(&self.frames)
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            return Err(refuse(format!(
                "frame {} is {} bytes decompressing to {}, the table says {} and {}",
                i + 1,
                read.compressed,
                read.decompressed,
                listed.compressed,
                listed.decompressed
            )));
        }
        if !self.src.fill_buf()?.is_empty() {
            return Err(trailing(&mut self.src, "zstd seek table")?);
        }
        Ok(())
    }

    /// The frame being read ends here.
    fn frame_ended(&mut self) -> io::Result<()> {
        let Some((start, out)) = self.current.take() else {
            return Ok(());
        };
        let end = offset_of(&self.src);
        match (u32::try_from(end - start), u32::try_from(out)) {
            (Ok(compressed), Ok(decompressed)) if out > 0 && out <= frames::MAX_FRAME => {
                self.frames.push(frames::Frame {
                    compressed,
                    decompressed,
                });
                Ok(())
            }
            // The first frame of a bundle written before the seek table
            // may be any size; a table could not list it, so nothing may
            // follow it.
            _ if self.frames.is_empty() && start == 0 => {
                self.unlisted_first = true;
                self.frames.push(frames::Frame {
                    compressed: 0,
                    decompressed: 0,
                });
                Ok(())
            }
            // An empty frame: never written by ferry, refused as what it
            // is, a frame that adds nothing.
            _ if out == 0 => Err(TrailingData::error(
                start,
                "zstd frame",
                "a second zstd frame, empty",
            )),
            _ => Err(Self::invalid(format!(
                "the zstd frame at byte {start} of the file is {} bytes decompressing to {out}; a bundle's frames decompress to 1 byte to 1 GiB",
                end - start
            ))),
        }
    }
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.ended {
                return Ok(0);
            }
            if self.current.is_none() {
                if self.between()? {
                    self.ended = true;
                }
                continue;
            }
            let input = self.src.fill_buf()?;
            if input.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ends inside a zstd frame",
                ));
            }
            let mut inb = InBuffer::around(input);
            let mut outb = OutBuffer::around(&mut *buf);
            let hint = self.decoder.run(&mut inb, &mut outb)?;
            let (used, made) = (inb.pos(), outb.pos());
            self.src.consume(used);
            if let Some((_, out)) = &mut self.current {
                *out += made as u64;
            }
            if hint == 0 {
                self.frame_ended()?;
            }
            if made > 0 {
                return Ok(made);
            }
        }
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
        let mut decoder = zstd::stream::raw::Decoder::new().map_err(read_err)?;
        decoder
            .set_parameter(zstd::stream::raw::DParameter::WindowLogMax(
                frames::WINDOW_LOG_MAX,
            ))
            .map_err(read_err)?;
        (
            Box::new(ZstdFrames {
                src: buf,
                decoder,
                frames: Vec::new(),
                current: None,
                second: None,
                unlisted_first: false,
                ended: false,
            }),
            true,
        )
    } else if head.starts_with(&GZIP_MAGIC) {
        (
            Box::new(OneMember {
                decoder: flate2::bufread::GzDecoder::new(buf),
                ended: false,
            }),
            true,
        )
    } else {
        (Box::new(buf), false)
    };
    Ok(Opened { inner, compressed })
}
