//! The zstd frames of a bundle and their seek table: the one home of the
//! framing rules the writer follows, the reader checks and import's lanes
//! use.
//!
//! A zstd bundle is a sequence of zstd frames followed by a seek table in
//! the [zstd seekable format] (a skippable frame, magic `0x184D2A5E`, that
//! `zstd -d` and `tar --zstd` pass over; one entry of compressed and
//! decompressed size per frame, no checksums, then the footer: the number
//! of frames, a descriptor byte of 0 and the magic `0x8F92EAB1`). The
//! frames decompress, one after another, to the bundle's tar.
//!
//! Where frames end follows the content, so bundles stay reproducible:
//!
//! - before and after the tar entry (header, data, padding) of every blob
//!   of [`OWN_FRAME_FROM`] bytes or more, so such a blob's entry starts a
//!   frame and ends one, and can be decoded on its own from its frame's
//!   offset (import's lanes, several large uploads at once);
//! - wherever a frame reaches [`MAX_FRAME`] decompressed bytes (the
//!   seekable format's limit), inside an entry too.
//!
//! Bundles written before the seek table (one frame, nothing after it)
//! are still read.
//!
//! [zstd seekable format]: https://github.com/facebook/zstd/blob/dev/contrib/seekable_format/zstd_seekable_compression_format.md

use std::fmt;

/// A zstd frame's magic number (`0xFD2FB528`, little-endian on disk).
pub const FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The largest window a frame may ask for (log2): zstd's own default limit
/// (128 MiB, what `zstd -d` accepts without `--long`). ferry writes at most
/// 8 MiB windows (level 19); a frame that asks for more memory than this is
/// refused, not obeyed (the reader and the lanes alike).
pub const WINDOW_LOG_MAX: u32 = 27;

/// Blobs at least this large get frames of their own.
pub const OWN_FRAME_FROM: u64 = 8 << 20;

/// The most decompressed bytes in one frame (the seekable format's
/// `ZSTD_SEEKABLE_MAX_FRAME_DECOMPRESSED_SIZE`).
pub const MAX_FRAME: u64 = 1 << 30;

/// The most frames a seek table may list (the seekable format's
/// `ZSTD_SEEKABLE_MAXFRAMES`).
pub const MAX_FRAMES: usize = 0x800_0000;

/// The skippable frame's magic (little-endian on disk).
pub const TABLE_MAGIC: u32 = 0x184D_2A5E;

/// The seek table footer's magic (little-endian on disk).
pub const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;

/// Bytes of the skippable frame's header (magic, size).
pub const TABLE_HEADER: usize = 8;

/// Bytes of the footer (frame count, descriptor, magic).
pub const FOOTER: usize = 9;

/// Bytes per frame in the table.
pub const ENTRY: usize = 8;

/// One frame: its size in the file and decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Bytes in the file.
    pub compressed: u32,
    /// Bytes it decompresses to.
    pub decompressed: u32,
}

/// A frame and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Its place in the table (0 is the first frame).
    pub index: usize,
    /// Offset of its first byte in the file.
    pub offset: u64,
    /// Offset of its first decompressed byte in the tar.
    pub tar_offset: u64,
    /// Its sizes.
    pub frame: Frame,
}

/// What is wrong with a seek table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError(pub String);

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TableError {}

/// The frames of a zstd bundle, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeekTable {
    frames: Vec<Frame>,
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

impl SeekTable {
    /// A table of `frames`.
    pub fn new(frames: Vec<Frame>) -> SeekTable {
        SeekTable { frames }
    }

    /// The frames, in order.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Each frame with its offsets in the file and in the tar.
    pub fn placed(&self) -> impl Iterator<Item = Placed> + '_ {
        let (mut offset, mut tar_offset) = (0u64, 0u64);
        self.frames.iter().enumerate().map(move |(index, frame)| {
            let p = Placed {
                index,
                offset,
                tar_offset,
                frame: *frame,
            };
            offset += u64::from(frame.compressed);
            tar_offset += u64::from(frame.decompressed);
            p
        })
    }

    /// The bytes of the frames together (where the table starts).
    pub fn compressed_len(&self) -> u64 {
        self.frames.iter().map(|f| u64::from(f.compressed)).sum()
    }

    /// The whole skippable frame.
    pub fn encode(&self) -> Vec<u8> {
        let body = self.frames.len() * ENTRY + FOOTER;
        let mut out = Vec::with_capacity(TABLE_HEADER + body);
        out.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
        out.extend_from_slice(&(body as u32).to_le_bytes());
        for f in &self.frames {
            out.extend_from_slice(&f.compressed.to_le_bytes());
            out.extend_from_slice(&f.decompressed.to_le_bytes());
        }
        out.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        out.push(0);
        out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        out
    }

    /// The length of the whole table from its last [`FOOTER`] bytes (the
    /// end of the file), or why they are not a ferry seek table's footer.
    pub fn len_from_footer(footer: &[u8]) -> Result<u64, TableError> {
        if footer.len() != FOOTER {
            return Err(TableError(format!(
                "a seek table footer is {FOOTER} bytes, not {}",
                footer.len()
            )));
        }
        if le32(&footer[5..9]) != SEEKABLE_MAGIC {
            return Err(TableError("no seek table at the end of the file".into()));
        }
        if footer[4] != 0 {
            return Err(TableError(format!(
                "seek table descriptor {:#04x}; ferry writes 0 (no checksums)",
                footer[4]
            )));
        }
        let n = le32(&footer[0..4]) as usize;
        if n == 0 || n > MAX_FRAMES {
            return Err(TableError(format!("a seek table of {n} frames")));
        }
        Ok((TABLE_HEADER + n * ENTRY + FOOTER) as u64)
    }

    /// Parses a whole table (the skippable frame, header to footer) and
    /// checks it: its magic, its size field, its frame count, its
    /// descriptor, and that no frame is empty or larger than
    /// [`MAX_FRAME`] decompressed.
    pub fn parse(bytes: &[u8]) -> Result<SeekTable, TableError> {
        if bytes.len() < TABLE_HEADER + FOOTER {
            return Err(TableError(format!(
                "a seek table of {} bytes is too short",
                bytes.len()
            )));
        }
        if le32(&bytes[0..4]) != TABLE_MAGIC {
            return Err(TableError(format!(
                "a skippable frame with magic {:#010x}, not the seek table's {TABLE_MAGIC:#010x}",
                le32(&bytes[0..4])
            )));
        }
        let len = Self::len_from_footer(&bytes[bytes.len() - FOOTER..])?;
        if len != bytes.len() as u64 {
            return Err(TableError(format!(
                "the seek table's footer lists frames for {len} bytes, the table is {}",
                bytes.len()
            )));
        }
        if u64::from(le32(&bytes[4..8])) != len - TABLE_HEADER as u64 {
            return Err(TableError(format!(
                "the seek table's frame size field says {} bytes, its footer {}",
                le32(&bytes[4..8]),
                len - TABLE_HEADER as u64
            )));
        }
        let entries = &bytes[TABLE_HEADER..bytes.len() - FOOTER];
        let mut frames = Vec::with_capacity(entries.len() / ENTRY);
        for (i, e) in entries.chunks_exact(ENTRY).enumerate() {
            let frame = Frame {
                compressed: le32(&e[0..4]),
                decompressed: le32(&e[4..8]),
            };
            if frame.compressed == 0
                || frame.decompressed == 0
                || u64::from(frame.decompressed) > MAX_FRAME
            {
                return Err(TableError(format!(
                    "seek table frame {}: {} bytes decompressing to {}",
                    i + 1,
                    frame.compressed,
                    frame.decompressed
                )));
            }
            frames.push(frame);
        }
        Ok(SeekTable { frames })
    }
}

/// The seek table of a zstd bundle of `size` bytes, read with `read_at`
/// (offset, length), if the file is zstd frames and a table that adds up
/// to the file: `None` for a bundle of another shape (gzip, a plain tar,
/// one frame written before the table) or a table that does not add up.
/// A hint only: the reader checks the table against the frames it reads
/// and refuses the bundle if they differ.
pub fn read_table(
    size: u64,
    read_at: impl Fn(u64, usize) -> std::io::Result<Vec<u8>>,
) -> Option<SeekTable> {
    if size < (TABLE_HEADER + FOOTER) as u64 + 4 {
        return None;
    }
    let magic = read_at(0, 4).ok()?;
    if magic != FRAME_MAGIC {
        return None;
    }
    let footer = read_at(size - FOOTER as u64, FOOTER).ok()?;
    let len = SeekTable::len_from_footer(&footer).ok()?;
    if len >= size {
        return None;
    }
    let table = SeekTable::parse(&read_at(size - len, len as usize).ok()?).ok()?;
    (table.compressed_len() == size - len).then_some(table)
}

/// A decoder of the frames `source` holds (a range of a bundle, from a
/// frame's start), with the reader's window limit ([`WINDOW_LOG_MAX`]).
pub fn decoder<'a, R: std::io::Read + Send + 'a>(
    source: R,
) -> std::io::Result<Box<dyn std::io::Read + Send + 'a>> {
    let mut d = zstd::stream::read::Decoder::new(source)?;
    d.window_log_max(WINDOW_LOG_MAX)?;
    Ok(Box::new(d))
}

/// Frames that hold one tar entry and nothing else: where the entry of
/// `entry_len` bytes (header, data, padding) that starts frame `first`
/// ends, if it ends with a frame. Returns the offset in the file of its
/// first frame and the compressed length of its frames.
pub fn entry_frames(table: &SeekTable, first: usize, entry_len: u64) -> Option<(u64, u64)> {
    let offset: u64 = table
        .frames
        .get(..first)?
        .iter()
        .map(|f| u64::from(f.compressed))
        .sum();
    let (mut out, mut len) = (0u64, 0u64);
    for f in table.frames.get(first..)? {
        out += u64::from(f.decompressed);
        len += u64::from(f.compressed);
        if out >= entry_len {
            return (out == entry_len).then_some((offset, len));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn table() -> SeekTable {
        SeekTable::new(vec![
            Frame {
                compressed: 100,
                decompressed: 2048,
            },
            Frame {
                compressed: 9_000_000,
                decompressed: 9_000_448,
            },
        ])
    }

    #[test]
    fn a_table_round_trips_and_places_its_frames() {
        let t = table();
        let bytes = t.encode();
        assert_eq!(bytes.len(), TABLE_HEADER + 2 * ENTRY + FOOTER);
        assert_eq!(&bytes[0..4], &[0x5e, 0x2a, 0x4d, 0x18]);
        assert_eq!(&bytes[bytes.len() - 4..], &[0xb1, 0xea, 0x92, 0x8f]);
        assert_eq!(
            SeekTable::len_from_footer(&bytes[bytes.len() - FOOTER..]).unwrap(),
            bytes.len() as u64
        );
        assert_eq!(SeekTable::parse(&bytes).unwrap(), t);
        let placed: Vec<Placed> = t.placed().collect();
        assert_eq!((placed[1].offset, placed[1].tar_offset), (100, 2048));
        assert_eq!(t.compressed_len(), 9_000_100);
    }

    #[test]
    fn an_entry_owns_its_frames_only_if_it_ends_with_one() {
        let t = SeekTable::new(vec![
            Frame {
                compressed: 10,
                decompressed: 1024,
            },
            Frame {
                compressed: 20,
                decompressed: 1 << 30,
            },
            Frame {
                compressed: 30,
                decompressed: 4096,
            },
            Frame {
                compressed: 40,
                decompressed: 1024,
            },
        ]);
        assert_eq!(entry_frames(&t, 1, (1 << 30) + 4096), Some((10, 50)));
        assert_eq!(entry_frames(&t, 2, 4096), Some((30, 30)));
        assert_eq!(entry_frames(&t, 2, 4095), None);
        assert_eq!(entry_frames(&t, 2, 4097), None);
        assert_eq!(entry_frames(&t, 3, 2048), None);
        assert_eq!(entry_frames(&t, 9, 1), None);
        let bytes = [&FRAME_MAGIC[..], &[0u8; 96][..], &t.encode()[..]].concat();
        let read_at = |o: u64, n: usize| Ok(bytes[o as usize..o as usize + n].to_vec());
        assert_eq!(read_table(bytes.len() as u64, read_at), Some(t.clone()));
        let short = &bytes[1..];
        let read_short = |o: u64, n: usize| Ok(short[o as usize..o as usize + n].to_vec());
        assert_eq!(read_table(short.len() as u64, read_short), None);
    }

    #[test]
    fn a_table_that_lies_about_itself_is_refused() {
        let good = table().encode();
        let n = good.len();
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut b = good.clone();
        b[0] = 0x50;
        cases.push(("another skippable magic", b));
        let mut b = good.clone();
        b[4] += 1;
        cases.push(("size field", b));
        let mut b = good.clone();
        b[n - 9] = 3;
        cases.push(("frame count", b));
        let mut b = good.clone();
        b[n - 5] = 0x80;
        cases.push(("checksum flag", b));
        let mut b = good.clone();
        b[n - 1] = 0;
        cases.push(("footer magic", b));
        let mut b = good.clone();
        b[TABLE_HEADER + 4..TABLE_HEADER + 8].copy_from_slice(&0u32.to_le_bytes());
        cases.push(("an empty frame", b));
        let mut b = good.clone();
        b[TABLE_HEADER + 12..TABLE_HEADER + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        cases.push(("a frame over 1 GiB", b));
        cases.push(("cut short", good[..n - 1].to_vec()));
        cases.push(("nothing", Vec::new()));
        for (what, bytes) in cases {
            assert!(SeekTable::parse(&bytes).is_err(), "{what}");
        }
    }
}
