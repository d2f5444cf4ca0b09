//! One part checked on its own against its manifest ([`locate_part`],
//! [`LocatedPart::verify`]).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::Hasher;

use super::error::{PartFault, PartProblem, PartsError};
use super::manifest::{PartEntry, PartsManifest};
use super::names::{dir_of, file_name, manifest_path_for, BundlePath};
use super::MANIFEST_SUFFIX;

/// A part found with its manifest.
#[derive(Debug, Clone)]
pub struct LocatedPart {
    /// The part given.
    pub path: PathBuf,
    /// The manifest beside it.
    pub manifest_path: PathBuf,
    /// The manifest.
    pub manifest: PartsManifest,
    /// Its 0-based position in the manifest.
    pub index: usize,
}

/// What [`LocatedPart::verify`] found: the part is intact.
#[derive(Debug, Clone)]
pub struct PartCheck {
    /// 1-based position.
    pub number: usize,
    /// How many parts.
    pub count: usize,
    /// The part's entry (size and sha256 as listed and found).
    pub entry: PartEntry,
}

impl LocatedPart {
    /// The names of the other parts that are not beside the manifest.
    pub fn missing_others(&self) -> Vec<String> {
        let dir = dir_of(&self.manifest_path);
        self.manifest
            .parts
            .iter()
            .enumerate()
            .filter(|(i, p)| *i != self.index && !dir.join(&p.name).is_file())
            .map(|(_, p)| p.name.clone())
            .collect()
    }

    /// Reads this part alone and checks its size and sha256 against the
    /// manifest.
    pub fn verify(&self) -> Result<PartCheck, PartsError> {
        let entry = self.manifest.parts[self.index].clone();
        let fault = |problem| PartsError::Parts {
            manifest: self.manifest_path.clone(),
            faults: vec![PartFault {
                number: self.index + 1,
                count: self.manifest.parts.len(),
                name: entry.name.clone(),
                path: self.path.clone(),
                problem,
            }],
        };
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(fault(PartProblem::Missing))
            }
            Err(e) => return Err(fault(PartProblem::Unreadable(e.to_string()))),
        };
        let mut hasher = Hasher::new();
        let mut reader = file.take(entry.size + 1);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fault(PartProblem::Unreadable(e.to_string()))),
            }
        }
        let len = hasher.len();
        if len < entry.size {
            return Err(fault(PartProblem::Truncated {
                actual: len,
                expected: entry.size,
            }));
        }
        if len > entry.size {
            let actual = std::fs::metadata(&self.path).ok().map(|m| m.len());
            return Err(fault(PartProblem::TooLong {
                actual,
                expected: entry.size,
            }));
        }
        let actual = hasher.finish();
        if actual != entry.sha256 {
            return Err(fault(PartProblem::Mismatch {
                expected: entry.sha256.clone(),
                actual,
            }));
        }
        Ok(PartCheck {
            number: self.index + 1,
            count: self.manifest.parts.len(),
            entry,
        })
    }
}

/// Finds the manifest of the part at `path` (`demo.tar.zst.part-003` →
/// `demo.parts.json`, else `demo.tar.zst.parts.json`, beside it) and the
/// part's place in it.
pub fn locate_part(path: &Path) -> Result<LocatedPart, PartsError> {
    let BundlePath::Part { bundle, .. } = BundlePath::of(path) else {
        return Err(PartsError::NoManifest {
            part: path.to_path_buf(),
            tried: "nothing: the name does not end in `.part-NNN`".into(),
        });
    };
    let bundle_path = path.with_file_name(&bundle);
    let mut tried = vec![manifest_path_for(&bundle_path)];
    let alt = path.with_file_name(format!("{bundle}{MANIFEST_SUFFIX}"));
    if !tried.contains(&alt) {
        tried.push(alt);
    }
    let Some(manifest_path) = tried.iter().find(|p| p.is_file()).cloned() else {
        return Err(PartsError::NoManifest {
            part: path.to_path_buf(),
            tried: tried
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(" and "),
        });
    };
    let manifest = PartsManifest::load(&manifest_path)?;
    let name = file_name(path);
    let index = manifest
        .parts
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| PartsError::NotListed {
            part: path.to_path_buf(),
            manifest: manifest_path.clone(),
        })?;
    Ok(LocatedPart {
        path: path.to_path_buf(),
        manifest_path,
        manifest,
        index,
    })
}
