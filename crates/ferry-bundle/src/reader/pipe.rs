//! The two-thread pipeline of [`super::read_bundle`]: a thread decompresses
//! into a few reused buffers while the reading thread parses and hashes.

use std::io::{self, Read};

use super::compression::TrailingData;

/// Decompressed bytes handed from the decompressing thread to the reading
/// one at a time, and how many such buffers may wait: a few MiB whatever
/// the bundle's size.
const PIPE_BUFFER: usize = 512 << 10;
pub(super) const PIPE_DEPTH: usize = 4;

/// The reading end of [`read_bundle`](super::read_bundle)'s pipeline: buffers filled by the
/// decompressing thread, in order; its errors arrive in order too.
pub(super) struct PipeReader {
    pub(super) rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Emptied buffers go back to be filled again (no allocation per buffer).
    pub(super) back: std::sync::mpsc::Sender<Vec<u8>>,
    pub(super) cur: Vec<u8>,
    pub(super) pos: usize,
    pub(super) done: bool,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    let old = std::mem::replace(&mut self.cur, buf);
                    let _ = self.back.send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The decompressing end: fills buffers until the stream ends, fails, or
/// the reading end is gone (it stopped early).
pub(super) fn pump(
    mut stream: Box<dyn Read + Send + '_>,
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
) {
    let mut offset = 0u64;
    loop {
        let mut buf = back.try_recv().unwrap_or_default();
        buf.resize(PIPE_BUFFER, 0);
        let mut filled = 0;
        let r = loop {
            match stream.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.truncate(filled);
        offset += filled as u64;
        let end = filled < PIPE_BUFFER;
        if filled > 0 && tx.send(Ok(buf)).is_err() {
            return;
        }
        if let Err(e) = r {
            if e.get_ref().is_some_and(|i| i.is::<TrailingData>()) {
                let _ = tx.send(Err(e));
                return;
            }
            // Where it broke, in the decompressed stream: the decompressor
            // runs ahead of the tar reader (and may refuse a frame before
            // handing out any of it), so the entry named by the reader can
            // be the one before.
            let _ = tx.send(Err(io::Error::new(
                e.kind(),
                format!("decompression failed at byte {offset} of the tar stream: {e}"),
            )));
            return;
        }
        if end {
            return;
        }
    }
}
