//! The verifying [`PartsReader`]: the parts read in sequence, each hashed as
//! it streams past, refusing to go on past a part that is not the listed one.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};

use super::error::{PartFault, PartProblem};
use super::manifest::PartsManifest;
use super::names::dir_of;

struct ReadingPart {
    file: File,
    hasher: PartHasher,
    /// Bytes read so far.
    got: u64,
    expected: u64,
}

/// A part's sha256, computed on a helper thread so that the part check
/// runs beside decompression and blob hashing rather than adding to them
/// (inline when no thread can be started).
enum PartHasher {
    Inline(Hasher),
    Thread {
        tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
        handle: std::thread::JoinHandle<Digest>,
    },
}

impl PartHasher {
    fn new() -> PartHasher {
        // At most 8 chunks (a few MiB) in flight.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let spawned = std::thread::Builder::new()
            .name("ferry-part-hash".into())
            .spawn(move || {
                let mut h = Hasher::new();
                for chunk in rx {
                    h.update(&chunk);
                }
                h.finish()
            });
        match spawned {
            Ok(handle) => PartHasher::Thread {
                tx: Some(tx),
                handle,
            },
            Err(_) => PartHasher::Inline(Hasher::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            PartHasher::Inline(h) => h.update(bytes),
            PartHasher::Thread { tx, .. } => {
                if tx.as_ref().is_some_and(|t| t.send(bytes.to_vec()).is_err()) {
                    // The thread is gone: finish() reports it.
                    *tx = None;
                }
            }
        }
    }

    /// The digest, or `None` when the hashing thread failed.
    fn finish(self) -> Option<Digest> {
        match self {
            PartHasher::Inline(h) => Some(h.finish()),
            PartHasher::Thread { tx, handle } => {
                drop(tx);
                handle.join().ok()
            }
        }
    }
}

/// A [`Read`] over the parts of a split bundle, in order, verifying each
/// part's size and sha256 as it is consumed. The check of a part happens
/// when its last byte has been read and before any byte of the next part is
/// returned; a bad part stops the stream with its [`PartFault`] (as an
/// [`io::Error`] whose inner error is the fault).
pub struct PartsReader {
    manifest_path: PathBuf,
    manifest: PartsManifest,
    dir: PathBuf,
    next: usize,
    current: Option<ReadingPart>,
    fault: Option<PartFault>,
}

impl PartsReader {
    /// Reads the parts `manifest` lists, in `dir`.
    pub fn new(manifest_path: &Path, manifest: PartsManifest) -> PartsReader {
        PartsReader {
            dir: dir_of(manifest_path),
            manifest_path: manifest_path.to_path_buf(),
            manifest,
            next: 0,
            current: None,
            fault: None,
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &PartsManifest {
        &self.manifest
    }

    /// The manifest's path.
    pub fn manifest_path(&self) -> &Path {
        &self.manifest_path
    }

    fn fault_at(&self, index: usize, problem: PartProblem) -> PartFault {
        let name = self.manifest.parts[index].name.clone();
        PartFault {
            number: index + 1,
            count: self.manifest.parts.len(),
            path: self.dir.join(&name),
            name,
            problem,
        }
    }

    fn fail(&mut self, index: usize, problem: PartProblem) -> io::Error {
        let f = self.fault_at(index, problem);
        self.fault = Some(f.clone());
        self.current = None;
        io::Error::other(f)
    }

    /// Checks that every part is present with its listed size (a `stat` of
    /// each, no reading). Returns every bad part.
    pub fn check_present(&self) -> Vec<PartFault> {
        let mut faults = Vec::new();
        for (i, p) in self.manifest.parts.iter().enumerate() {
            let path = self.dir.join(&p.name);
            let problem = match std::fs::metadata(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Some(PartProblem::Missing),
                Err(e) => Some(PartProblem::Unreadable(e.to_string())),
                Ok(m) if !m.is_file() => Some(PartProblem::Unreadable("not a regular file".into())),
                Ok(m) if m.len() < p.size => Some(PartProblem::Truncated {
                    actual: m.len(),
                    expected: p.size,
                }),
                Ok(m) if m.len() > p.size => Some(PartProblem::TooLong {
                    actual: Some(m.len()),
                    expected: p.size,
                }),
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                faults.push(self.fault_at(i, problem));
            }
        }
        faults
    }

    /// The fault that stopped the stream, if any.
    pub fn fault(&self) -> Option<&PartFault> {
        self.fault.as_ref()
    }

    /// After a reader downstream failed (bad bytes decode to anything):
    /// reads the rest of the part being read and checks it, so the failure
    /// is blamed on the part when the part is bad. `None` when no part is
    /// known to be bad (the bundle itself is).
    pub fn diagnose(&mut self) -> Option<PartFault> {
        if self.fault.is_none() && self.current.is_some() {
            let index = self.next;
            let mut buf = vec![0u8; 1 << 16];
            while self.fault.is_none() && self.next == index {
                match self.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        self.fault.clone()
    }

    /// Reads the rest of the stream, checking every remaining part (a tar
    /// reader stops at the end-of-archive marker, before the last bytes).
    pub fn finish(&mut self) -> Result<(), Box<PartFault>> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(_) => {
                    if let Some(f) = &self.fault {
                        return Err(Box::new(f.clone()));
                    }
                }
            }
        }
    }

    /// Ends the current part: it must end here and hash to its listed sha256.
    fn end_part(&mut self) -> io::Result<()> {
        let index = self.next;
        let Some(mut part) = self.current.take() else {
            return Ok(());
        };
        let mut probe = [0u8; 1];
        loop {
            match part.file.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => {
                    return Err(self.fail(
                        index,
                        PartProblem::TooLong {
                            actual: None,
                            expected: part.expected,
                        },
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail(index, PartProblem::Unreadable(e.to_string()))),
            }
        }
        let Some(actual) = part.hasher.finish() else {
            return Err(self.fail(
                index,
                PartProblem::Unreadable("its hashing thread failed".into()),
            ));
        };
        let expected = self.manifest.parts[index].sha256.clone();
        if actual != expected {
            return Err(self.fail(index, PartProblem::Mismatch { expected, actual }));
        }
        self.next += 1;
        Ok(())
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(f) = &self.fault {
                return Err(io::Error::other(f.clone()));
            }
            let index = self.next;
            if index >= self.manifest.parts.len() {
                return Ok(0);
            }
            let Some(part) = self.current.as_mut() else {
                let entry = &self.manifest.parts[index];
                let path = self.dir.join(&entry.name);
                let expected = entry.size;
                match File::open(&path) {
                    Ok(file) => {
                        self.current = Some(ReadingPart {
                            file,
                            hasher: PartHasher::new(),
                            got: 0,
                            expected,
                        })
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(self.fail(index, PartProblem::Missing))
                    }
                    Err(e) => return Err(self.fail(index, PartProblem::Unreadable(e.to_string()))),
                }
                continue;
            };
            let remaining = part.expected - part.got;
            if remaining == 0 {
                self.end_part()?;
                continue;
            }
            let want = (buf.len() as u64).min(remaining) as usize;
            match part.file.read(&mut buf[..want]) {
                Ok(0) => {
                    let (actual, expected) = (part.got, part.expected);
                    return Err(self.fail(index, PartProblem::Truncated { actual, expected }));
                }
                Ok(n) => {
                    part.hasher.update(&buf[..n]);
                    part.got += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail(index, PartProblem::Unreadable(e.to_string()))),
            }
        }
    }
}
