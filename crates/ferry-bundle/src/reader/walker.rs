//! [`TarWalker`]: the tar stream walked block by block, every byte
//! accounted for (exact headers, entry data and padding, the two
//! end-of-archive blocks and nothing after them).

use std::io::{self, Read};

use crate::text::escape;

use super::entry::{accept_header, EntryKind, TarEntry};
use super::error::{stream_error, Truncation};
use super::BundleError;

/// Walks a tar stream entry by entry, accepting each header with
/// [`accept_header`], and accounts for every byte: each header whole, each
/// entry's data and padding, then exactly two zero blocks and the end of the
/// stream. A cut anywhere is [`BundleError::Truncated`] (naming the offset
/// and what was expected there); anything after the two zero blocks is
/// [`BundleError::Trailing`]. The reader's own walker.
pub struct TarWalker<R> {
    inner: R,
    /// Bytes of the tar stream consumed.
    offset: u64,
    /// Data bytes of the current entry not read yet.
    left: u64,
    /// Its size.
    size: u64,
    /// Padding after it.
    pad: u64,
    /// The last entry's name (for messages).
    last: Option<String>,
    /// The end-of-archive blocks have been read.
    done: bool,
}

/// Bytes in a tar block.
const BLOCK: u64 = 512;

impl<R: Read> TarWalker<R> {
    /// Walks `inner`, a tar stream.
    pub fn new(inner: R) -> TarWalker<R> {
        TarWalker {
            inner,
            offset: 0,
            left: 0,
            size: 0,
            pad: 0,
            last: None,
            done: false,
        }
    }

    /// Bytes of the tar stream consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn after(&self) -> String {
        match &self.last {
            Some(n) => format!("after entry `{n}`"),
            None => "before the first entry".into(),
        }
    }

    fn read_err(&self, source: io::Error) -> BundleError {
        stream_error(format!("the tar stream at byte {}", self.offset), source)
    }

    /// Reads up to `buf.len()` bytes, as many as there are: fewer only at
    /// the end of the stream.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_err(e)),
            }
        }
        Ok(got)
    }

    /// Skips what is left of the current entry: its unread data and padding.
    fn skip_rest(&mut self) -> Result<(), BundleError> {
        let mut buf = [0u8; 8192];
        while self.left > 0 {
            let want = self.left.min(buf.len() as u64) as usize;
            let got = self.fill(&mut buf[..want])?;
            if got == 0 {
                return Err(self.cut_in_data());
            }
            self.left -= got as u64;
        }
        if self.pad > 0 {
            let pad = self.pad as usize;
            let got = self.fill(&mut buf[..pad])?;
            self.pad = 0;
            if got < pad {
                return Err(BundleError::Truncated {
                    detail: format!(
                        "the stream ends at byte {} inside the padding {}, before the next tar header",
                        self.offset,
                        self.after()
                    ),
                });
            }
        }
        Ok(())
    }

    fn cut_in_data(&self) -> BundleError {
        let name = self.last.clone().unwrap_or_default();
        BundleError::Truncated {
            detail: format!(
                "the stream ends at byte {} inside entry `{name}`, after {} of its {} bytes",
                self.offset,
                self.size - self.left,
                self.size
            ),
        }
    }

    /// The next entry, or `None` after the end-of-archive blocks (and the
    /// end of the stream right after them).
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, BundleError> {
        if self.done {
            return Ok(None);
        }
        self.skip_rest()?;
        let at = self.offset;
        let mut block = [0u8; BLOCK as usize];
        let got = self.fill(&mut block)?;
        if got == 0 {
            return Err(BundleError::Truncated {
                detail: format!(
                    "the stream ends at byte {at} {}, where another tar header or the two end-of-archive blocks were expected",
                    self.after()
                ),
            });
        }
        if got < block.len() {
            return Err(BundleError::Truncated {
                detail: format!(
                    "the stream ends at byte {} inside the tar header that starts at byte {at} ({}): {got} of its 512 bytes",
                    self.offset,
                    self.after()
                ),
            });
        }
        if block.iter().all(|b| *b == 0) {
            self.end(at)?;
            return Ok(None);
        }
        let header = tar::Header::from_byte_slice(&block);
        check_header_sum(header, at, &self.after())?;
        let entry = accept_header(header, at)?;
        check_canonical(&block, &entry)?;
        self.size = entry.size;
        self.left = entry.size;
        self.pad = (BLOCK - entry.size % BLOCK) % BLOCK;
        self.last = Some(entry.name.clone());
        Ok(Some(entry))
    }

    /// After the first zero block (at `at`): a second one, then nothing.
    fn end(&mut self, at: u64) -> Result<(), BundleError> {
        let mut block = [0u8; BLOCK as usize];
        let got = self.fill(&mut block)?;
        if got < block.len() {
            return Err(BundleError::Truncated {
                detail: format!(
                    "the stream ends at byte {} inside the end-of-archive blocks that start at byte {at}: {} of their 1024 bytes",
                    self.offset,
                    BLOCK as usize + got
                ),
            });
        }
        if block.iter().any(|b| *b != 0) {
            return Err(BundleError::Trailing {
                detail: format!(
                    "{} at byte {} of the tar stream, between the two end-of-archive blocks",
                    describe_block(&block),
                    at + BLOCK
                ),
            });
        }
        let after = self.offset;
        let mut probe = [0u8; BLOCK as usize];
        let got = self.fill(&mut probe)?;
        if got > 0 {
            let what = if got == probe.len() {
                describe_block(&probe)
            } else if probe[..got].iter().all(|b| *b == 0) {
                format!("{got} zero bytes")
            } else {
                format!("{got} bytes of data")
            };
            return Err(BundleError::Trailing {
                detail: format!(
                    "{what} at byte {after} of the tar stream, after the two end-of-archive blocks"
                ),
            });
        }
        self.done = true;
        Ok(())
    }

    /// The current entry's data (only its data: never more than its size).
    /// `name` names it in errors.
    pub fn data<'w>(&'w mut self, name: &'w str) -> EntryData<'w, R> {
        EntryData { walker: self, name }
    }
}

/// The fields of a ustar header, by byte range, for messages.
const HEADER_FIELDS: [(&str, std::ops::Range<usize>); 17] = [
    ("name", 0..100),
    ("mode", 100..108),
    ("uid", 108..116),
    ("gid", 116..124),
    ("size", 124..136),
    ("mtime", 136..148),
    ("type", 156..157),
    ("link name", 157..257),
    ("magic", 257..263),
    ("version", 263..265),
    ("user name", 265..297),
    ("group name", 297..329),
    ("device major", 329..337),
    ("device minor", 337..345),
    ("prefix", 345..500),
    ("padding", 500..512),
    // Last: any other change changes it too.
    ("checksum", 148..156),
];

/// An accepted entry's header must be byte for byte the one ferry's writer
/// makes for it ([`crate::writer::header`]): no free field (mtime, ids,
/// user names, link name, prefix, padding) can carry bytes no check covers.
fn check_canonical(block: &[u8; BLOCK as usize], entry: &TarEntry) -> Result<(), BundleError> {
    let expected = crate::writer::header(&entry.name, entry.size, entry.kind == EntryKind::Dir);
    let expected = expected.as_bytes();
    if &expected[..] == block {
        return Ok(());
    }
    let (field, range) = HEADER_FIELDS
        .iter()
        .find(|(_, r)| block[r.clone()] != expected[r.clone()])
        .cloned()
        .unwrap_or(("checksum", 148..156));
    let show = |b: &[u8]| escape(String::from_utf8_lossy(b).trim_end_matches('\0')).into_owned();
    Err(BundleError::ForbiddenEntry {
        entry: entry.name.clone(),
        reason: format!(
            "its tar header (at byte {}) is not the one ferry writes: the {field} field differs (`{}`, expected `{}`); bundle headers are fixed (ustar, mode 0644/0755, uid/gid 0, mtime 0, no user names, links or prefix)",
            entry.offset,
            show(&block[range.clone()]),
            show(&expected[range]),
        ),
    })
}

/// What a 512-byte block after the end of the archive looks like.
fn describe_block(block: &[u8; BLOCK as usize]) -> String {
    if block.iter().all(|b| *b == 0) {
        return "more zero padding".into();
    }
    let header = tar::Header::from_byte_slice(block);
    if check_header_sum(header, 0, "").is_ok() {
        return format!(
            "another tar entry (`{}`)",
            escape(&String::from_utf8_lossy(&header.path_bytes()))
        );
    }
    "data".into()
}

/// The tar header checksum: the sum of the header's bytes with the checksum
/// field itself counted as spaces (POSIX ustar).
fn check_header_sum(header: &tar::Header, at: u64, after: &str) -> Result<(), BundleError> {
    let bytes = header.as_bytes();
    let sum: u64 = bytes[..148]
        .iter()
        .chain(&bytes[156..])
        .map(|b| u64::from(*b))
        .sum::<u64>()
        + 8 * 32;
    let bad = |reason: String| BundleError::Malformed {
        entry: format!("the tar header at byte {at} ({after})"),
        reason,
    };
    let stored = header
        .cksum()
        .map_err(|e| bad(format!("bad checksum field: {e}")))?;
    if u64::from(stored) != sum {
        return Err(bad(format!(
            "header checksum mismatch (stored {stored}, computed {sum}): not a tar header, or a corrupt one"
        )));
    }
    Ok(())
}

/// One entry's data, from [`TarWalker::data`]. A stream that ends inside
/// it fails with [`io::ErrorKind::UnexpectedEof`], saying the bundle is
/// truncated.
pub struct EntryData<'w, R> {
    walker: &'w mut TarWalker<R>,
    name: &'w str,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let w = &mut *self.walker;
        if w.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(w.left) as usize;
        loop {
            match w.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        Truncation(format!(
                        "the stream ends at byte {} inside entry `{}`, after {} of its {} bytes",
                        w.offset,
                        escape(self.name),
                        w.size - w.left,
                        w.size
                    )),
                    ))
                }
                Ok(n) => {
                    w.left -= n as u64;
                    w.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
