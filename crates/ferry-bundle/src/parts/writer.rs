//! The rolling [`PartsWriter`]: parts under temporary names, renamed into place
//! with their manifest only when the whole export succeeded.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::{Digest, Hasher};
use crate::meta::IndexPin;
use crate::write_error::WriteError;

use super::manifest::{with_path, PartEntry, PartsManifest};
use super::names::{dir_of, file_name, manifest_path_for, part_name};
use super::PARTS_VERSION;

struct OpenPart {
    name: String,
    tmp: tempfile::TempPath,
    out: BufWriter<File>,
    hasher: Hasher,
}

/// A [`Write`] that rolls over to a new part every `part_size` bytes.
///
/// Parts are written under temporary names in the destination directory;
/// [`PartsWriter::finish`] renames them into place and writes the manifest.
/// Dropped unfinished, the temporary files are removed.
pub struct PartsWriter {
    bundle: PathBuf,
    dir: PathBuf,
    bundle_name: String,
    part_size: u64,
    current: Option<OpenPart>,
    done: Vec<(tempfile::TempPath, PartEntry)>,
}

/// What the bundle's `ferry/bundle.json` says it is (for the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `formatVersion`.
    pub format_version: u32,
    /// The bundle's name.
    pub name: String,
    /// The ferry that wrote it.
    pub tool: String,
    /// sha256 of the exact `ferry/bundle.json` bytes.
    pub bundle_json: Digest,
    /// The index pin.
    pub index: IndexPin,
}

impl Identity {
    /// Reads the identity from the exact `ferry/bundle.json` bytes.
    pub fn from_meta_json(meta_json: &[u8]) -> Result<Identity, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Fields {
            format_version: u32,
            name: String,
            tool: String,
            index: IndexPin,
        }
        let f: Fields = serde_json::from_slice(meta_json)?;
        Ok(Identity {
            format_version: f.format_version,
            name: f.name,
            tool: f.tool,
            bundle_json: Digest::of(meta_json),
            index: f.index,
        })
    }
}

/// What [`PartsWriter::finish`] produced.
#[derive(Debug, Clone)]
pub struct PartsWritten {
    /// The parts manifest.
    pub manifest_path: PathBuf,
    /// Its content.
    pub manifest: PartsManifest,
    /// The part files, in order.
    pub paths: Vec<PathBuf>,
}

impl PartsWriter {
    /// Starts writing the parts of `bundle` (`demo.tar.zst` →
    /// `demo.tar.zst.part-000`, …), `part_size` bytes each (at least 1).
    /// The first part's temporary file is created at once, so an unusable
    /// destination fails here.
    pub fn create(bundle: &Path, part_size: u64) -> io::Result<PartsWriter> {
        let mut w = PartsWriter {
            bundle: bundle.to_path_buf(),
            dir: dir_of(bundle),
            bundle_name: file_name(bundle),
            part_size: part_size.max(1),
            current: None,
            done: Vec::new(),
        };
        w.current = Some(w.open_part()?);
        Ok(w)
    }

    fn open_part(&self) -> io::Result<OpenPart> {
        let name = part_name(&self.bundle_name, self.done.len());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(|e| with_path(e, &self.dir.join(&name)))?;
        let (file, tmp) = tmp.into_parts();
        Ok(OpenPart {
            name,
            tmp,
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: Hasher::new(),
        })
    }

    fn close_part(&mut self) -> io::Result<()> {
        let Some(part) = self.current.take() else {
            return Ok(());
        };
        let path = self.dir.join(&part.name);
        let file = part
            .out
            .into_inner()
            .map_err(|e| with_path(e.into_error(), &path))?;
        file.sync_all().map_err(|e| with_path(e, &path))?;
        let size = part.hasher.len();
        self.done.push((
            part.tmp,
            PartEntry {
                name: part.name,
                size,
                sha256: part.hasher.finish(),
            },
        ));
        Ok(())
    }

    /// Closes the last part, renames every part into place, writes the
    /// manifest (`sha256` and `size` are the whole stream's, as the bundle
    /// writer hashed it) and removes stale parts of an earlier, longer
    /// export of the same name. The manifest is removed first and written
    /// last, so a crash in between leaves no manifest that vouches for a
    /// mix of old and new parts.
    pub fn finish(
        mut self,
        identity: Identity,
        size: u64,
        sha256: Digest,
    ) -> Result<PartsWritten, WriteError> {
        let manifest_path = manifest_path_for(&self.bundle);
        let at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WriteError::Io { path, source }
        };
        let bundle = self.bundle.clone();
        self.close_part().map_err(at(&bundle))?;
        match std::fs::remove_file(&manifest_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(&manifest_path)(e)),
        }
        let mut entries = Vec::with_capacity(self.done.len());
        let mut paths = Vec::with_capacity(self.done.len());
        for (tmp, entry) in std::mem::take(&mut self.done) {
            let path = self.dir.join(&entry.name);
            tmp.persist(&path).map_err(|e| at(&path)(e.error))?;
            paths.push(path);
            entries.push(entry);
        }
        let manifest = PartsManifest {
            parts_version: PARTS_VERSION,
            bundle: self.bundle_name.clone(),
            format_version: identity.format_version,
            name: identity.name,
            tool: identity.tool,
            bundle_json: identity.bundle_json,
            index: identity.index,
            size,
            sha256,
            part_size: self.part_size,
            parts: entries,
        };
        crate::atomic::write_atomic(&manifest_path, &manifest.to_json())
            .map_err(at(&manifest_path))?;
        // Parts beyond the new last one are left from an earlier export.
        let mut stale = manifest.parts.len();
        loop {
            let path = self.dir.join(part_name(&self.bundle_name, stale));
            match std::fs::remove_file(&path) {
                Ok(()) => stale += 1,
                Err(_) => break,
            }
        }
        Ok(PartsWritten {
            manifest_path,
            manifest,
            paths,
        })
    }
}

impl Write for PartsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.current.is_none() {
            self.current = Some(self.open_part()?);
        }
        let part_size = self.part_size;
        let Some(part) = self.current.as_mut() else {
            return Err(io::Error::other("no open part"));
        };
        let room = part_size - part.hasher.len();
        let want = (buf.len() as u64).min(room) as usize;
        let n = match part.out.write(&buf[..want]) {
            Ok(n) => n,
            Err(e) => return Err(with_path(e, &self.dir.join(&part.name))),
        };
        part.hasher.update(&buf[..n]);
        if part.hasher.len() >= part_size {
            self.close_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.current.as_mut() {
            Some(p) => p.out.flush(),
            None => Ok(()),
        }
    }
}
