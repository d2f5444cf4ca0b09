//! [`Ranges`]: independent readers of byte ranges of a bundle stream, a
//! plain file or the parts of a split bundle, for import's lanes (each
//! decodes one large blob's zstd frames from their offset, see
//! [`crate::frames`]). Only the ordered read checks the parts' sha256: a
//! range read is as good as the ordered read's verdict on what it covers.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// The files a bundle stream is made of, in order, with their sizes.
#[derive(Debug, Clone)]
pub struct Ranges {
    files: Vec<(PathBuf, u64)>,
}

impl Ranges {
    pub(super) fn new(files: Vec<(PathBuf, u64)>) -> Ranges {
        Ranges { files }
    }

    /// Size of the whole stream.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|(_, s)| s).sum()
    }

    /// A reader of `len` bytes from `offset` of the stream, on files of its
    /// own (opened as it goes). Fails if the range is not inside the
    /// stream.
    pub fn open(&self, offset: u64, len: u64) -> io::Result<RangeReader> {
        let end = offset.checked_add(len).filter(|e| *e <= self.size());
        if end.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "bytes {offset}+{len} are outside the bundle's {} bytes",
                    self.size()
                ),
            ));
        }
        Ok(RangeReader {
            files: self.files.clone(),
            offset,
            left: len,
            current: None,
        })
    }

    /// `len` bytes from `offset`, read whole (small reads only: the seek
    /// table, a header).
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len);
        self.open(offset, len as u64)?.read_to_end(&mut buf)?;
        if buf.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the bundle is shorter than its size",
            ));
        }
        Ok(buf)
    }
}

/// See [`Ranges::open`].
#[derive(Debug)]
pub struct RangeReader {
    files: Vec<(PathBuf, u64)>,
    /// Offset in the stream of the next byte.
    offset: u64,
    left: u64,
    /// The file being read, and the bytes of it left.
    current: Option<(File, u64)>,
}

impl RangeReader {
    /// Opens the file holding `self.offset`, seeked there.
    fn open_next(&mut self) -> io::Result<()> {
        let mut start = 0u64;
        for (path, size) in &self.files {
            if self.offset < start + size {
                let mut f = File::open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                let at = self.offset - start;
                f.seek(SeekFrom::Start(at))?;
                self.current = Some((f, size - at));
                return Ok(());
            }
            start += size;
        }
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the bundle ends before the range",
        ))
    }
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        if self.current.is_none() {
            self.open_next()?;
        }
        let Some((f, in_file)) = &mut self.current else {
            return Ok(0);
        };
        let want = (buf.len() as u64).min(self.left).min(*in_file) as usize;
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a bundle file is shorter than listed",
            ));
        }
        *in_file -= n as u64;
        if *in_file == 0 {
            self.current = None;
        }
        self.offset += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn a_range_reads_across_parts() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut files = Vec::new();
        for (i, piece) in data.chunks(300).enumerate() {
            let p = dir.path().join(format!("p{i}"));
            std::fs::write(&p, piece).unwrap();
            files.push((p, piece.len() as u64));
        }
        let r = Ranges::new(files);
        assert_eq!(r.size(), 1000);
        for (off, len) in [(0u64, 1000u64), (299, 2), (250, 600), (999, 1), (1000, 0)] {
            let mut got = Vec::new();
            r.open(off, len).unwrap().read_to_end(&mut got).unwrap();
            assert_eq!(
                got,
                &data[off as usize..(off + len) as usize],
                "{off}+{len}"
            );
        }
        assert!(r.open(990, 11).is_err());
        assert_eq!(r.read_at(10, 5).unwrap(), &data[10..15]);
    }
}
