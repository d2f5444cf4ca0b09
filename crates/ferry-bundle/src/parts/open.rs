//! [`open_bundle`]: a bundle file, a parts manifest or the first part opened
//! as one [`BundleSource`], a split bundle checked up front.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::meta::IndexPin;

use super::error::{IdentityMismatch, PartsError};
use super::locate::locate_part;
use super::manifest::PartsManifest;
use super::names::{manifest_path_for, BundlePath};
use super::ranges::Ranges;
use super::reader::PartsReader;
use super::writer::Identity;

enum Inner {
    Plain(File),
    Parts(Box<PartsReader>),
}

/// A bundle stream as [`open_bundle`] opened it: a plain file or the parts
/// of a split bundle read in sequence.
pub struct BundleSource {
    path: PathBuf,
    size: u64,
    inner: Inner,
}

impl BundleSource {
    /// The path the bundle was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the whole stream.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Independent readers of byte ranges of the stream (the same files,
    /// opened again: import's lanes).
    pub fn ranges(&self) -> Ranges {
        match &self.inner {
            Inner::Plain(_) => Ranges::new(vec![(self.path.clone(), self.size)]),
            Inner::Parts(r) => {
                let dir = super::names::dir_of(r.manifest_path());
                Ranges::new(
                    r.manifest()
                        .parts
                        .iter()
                        .map(|p| (dir.join(&p.name), p.size))
                        .collect(),
                )
            }
        }
    }

    /// The parts manifest and its path, for a split bundle.
    pub fn parts(&self) -> Option<(&Path, &PartsManifest)> {
        match &self.inner {
            Inner::Plain(_) => None,
            Inner::Parts(r) => Some((r.manifest_path(), r.manifest())),
        }
    }

    /// After a read of the stream failed: the bad part that explains it, if
    /// the bundle is split and a part is bad (the rest of the part being
    /// read is hashed to find out). Report this rather than what the bad
    /// bytes decoded to.
    pub fn diagnose(&mut self) -> Option<PartsError> {
        match &mut self.inner {
            Inner::Plain(_) => None,
            Inner::Parts(r) => r.diagnose().map(|f| PartsError::Parts {
                manifest: r.manifest_path().to_path_buf(),
                faults: vec![f],
            }),
        }
    }

    /// After a successful read: reads what is left of the stream so every
    /// part is checked to its last byte. Nothing to do for a plain file.
    pub fn finish(&mut self) -> Result<(), PartsError> {
        match &mut self.inner {
            Inner::Plain(_) => Ok(()),
            Inner::Parts(r) => r.finish().map_err(|f| PartsError::Parts {
                manifest: r.manifest_path().to_path_buf(),
                faults: vec![*f],
            }),
        }
    }
}

impl Read for BundleSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(f) => f.read(buf),
            Inner::Parts(r) => r.read(buf),
        }
    }
}

impl fmt::Debug for BundleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleSource")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("split", &self.parts().map(|(p, m)| (p, m.parts.len())))
            .finish()
    }
}

fn open_parts(
    path: &Path,
    manifest_path: &Path,
    manifest: PartsManifest,
) -> Result<BundleSource, PartsError> {
    let size = manifest.size;
    let reader = PartsReader::new(manifest_path, manifest);
    let faults = reader.check_present();
    if !faults.is_empty() {
        return Err(PartsError::Parts {
            manifest: manifest_path.to_path_buf(),
            faults,
        });
    }
    check_identity(manifest_path, reader.manifest())?;
    Ok(BundleSource {
        path: path.to_path_buf(),
        size,
        inner: Inner::Parts(Box::new(reader)),
    })
}

/// Reads the head the parts carry (the first kilobytes of the stream) and
/// checks that it is the bundle the manifest names: same `ferry/bundle.json`
/// digest, index pin, name, tool and format version. A mismatch is blamed
/// on the first part when that part is bad; a head that cannot be read is
/// left to the full read to report.
fn check_identity(manifest_path: &Path, manifest: &PartsManifest) -> Result<(), PartsError> {
    let mut probe = PartsReader::new(manifest_path, manifest.clone());
    let Ok(head) = crate::head::read_head_from(&mut probe, manifest_path) else {
        return Ok(());
    };
    let carried = Identity {
        format_version: head.meta.format_version,
        name: head.meta.name.clone(),
        tool: head.meta.tool.clone(),
        bundle_json: head.meta_sha256.clone(),
        index: head.meta.index.clone(),
    };
    let pin = |p: &IndexPin| format!("{} ({} bytes)", p.digest, p.size);
    let differs: Option<(&'static str, String, String)> =
        if carried.bundle_json != manifest.bundle_json {
            Some((
                "bundleJson",
                manifest.bundle_json.to_string(),
                carried.bundle_json.to_string(),
            ))
        } else if carried.index != manifest.index {
            Some(("index", pin(&manifest.index), pin(&carried.index)))
        } else if carried.name != manifest.name {
            Some(("name", manifest.name.clone(), carried.name.clone()))
        } else if carried.tool != manifest.tool {
            Some(("tool", manifest.tool.clone(), carried.tool.clone()))
        } else if carried.format_version != manifest.format_version {
            Some((
                "formatVersion",
                manifest.format_version.to_string(),
                carried.format_version.to_string(),
            ))
        } else {
            None
        };
    let Some((field, listed, carried_value)) = differs else {
        return Ok(());
    };
    if let Some(fault) = probe.diagnose() {
        return Err(PartsError::Parts {
            manifest: manifest_path.to_path_buf(),
            faults: vec![fault],
        });
    }
    Err(PartsError::Identity {
        manifest: manifest_path.to_path_buf(),
        mismatch: Box::new(IdentityMismatch {
            field,
            listed_name: manifest.name.clone(),
            listed,
            carried_name: carried.name,
            carried: carried_value,
        }),
    })
}

/// Opens the bundle an operator names: a bundle file, a parts manifest
/// (`*.parts.json`) or the first part (`*.part-000`, its manifest beside it).
/// A split bundle is checked up front (every part present, with its listed
/// size: a missing or truncated part is named before anything is read) and
/// then read part after part, each checked as it is consumed.
pub fn open_bundle(path: &Path) -> Result<BundleSource, PartsError> {
    match BundlePath::of(path) {
        BundlePath::Manifest => {
            let manifest = PartsManifest::load(path)?;
            open_parts(path, path, manifest)
        }
        BundlePath::Part { .. } => {
            let located = locate_part(path)?;
            if located.index != 0 {
                return Err(PartsError::NotFirst {
                    part: path.to_path_buf(),
                    number: located.index + 1,
                    count: located.manifest.parts.len(),
                    first: located.manifest.parts[0].name.clone(),
                    manifest: located.manifest_path,
                });
            }
            open_parts(path, &located.manifest_path, located.manifest)
        }
        BundlePath::Plain => match File::open(path) {
            Ok(file) => {
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                Ok(BundleSource {
                    path: path.to_path_buf(),
                    size,
                    inner: Inner::Plain(file),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && manifest_path_for(path).is_file() => {
                Err(PartsError::WasSplit {
                    path: path.to_path_buf(),
                    manifest: manifest_path_for(path),
                })
            }
            Err(source) => Err(PartsError::Open {
                path: path.to_path_buf(),
                source,
            }),
        },
    }
}
