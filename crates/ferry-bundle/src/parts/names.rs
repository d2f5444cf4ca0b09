//! Part and parts-manifest file names, and what a path given as BUNDLE names.

use std::path::{Path, PathBuf};

use super::{BUNDLE_SUFFIXES, MANIFEST_SUFFIX, PART_MARKER};

/// The parts manifest of a bundle written to `bundle`:
/// `demo.tar.zst` → `demo.parts.json` (the `.tar.zst`, `.tar.gz`, `.tgz` or
/// `.tar` suffix dropped; another name keeps its suffix: `demo.bundle` →
/// `demo.bundle.parts.json`).
pub fn manifest_path_for(bundle: &Path) -> PathBuf {
    let name = file_name(bundle);
    let stem = BUNDLE_SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(s).filter(|x| !x.is_empty()))
        .unwrap_or(&name);
    bundle.with_file_name(format!("{stem}{MANIFEST_SUFFIX}"))
}

/// The name of part `index` (0-based) of the bundle file `bundle_name`:
/// `demo.tar.zst.part-000`.
pub fn part_name(bundle_name: &str, index: usize) -> String {
    format!("{bundle_name}{PART_MARKER}{index:03}")
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What a path given as BUNDLE names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundlePath {
    /// A bundle file (or something that is not a bundle at all).
    Plain,
    /// A parts manifest (`*.parts.json`).
    Manifest,
    /// A part (`*.part-NNN`): its index and the unsplit bundle's file name.
    Part {
        /// 0-based index from the name.
        index: usize,
        /// The name without `.part-NNN`.
        bundle: String,
    },
}

impl BundlePath {
    /// Classifies `path` by its file name.
    pub fn of(path: &Path) -> BundlePath {
        let name = file_name(path);
        if name.ends_with(MANIFEST_SUFFIX) {
            return BundlePath::Manifest;
        }
        if let Some((bundle, digits)) = name.rsplit_once(PART_MARKER) {
            if !bundle.is_empty()
                && !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
            {
                if let Ok(index) = digits.parse() {
                    return BundlePath::Part {
                        index,
                        bundle: bundle.to_string(),
                    };
                }
            }
        }
        BundlePath::Plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_drop_the_bundle_suffix() {
        let p = |s: &str| manifest_path_for(Path::new(s));
        assert_eq!(p("/x/demo.tar.zst"), PathBuf::from("/x/demo.parts.json"));
        assert_eq!(p("demo.tar.gz"), PathBuf::from("demo.parts.json"));
        assert_eq!(p("demo.tar"), PathBuf::from("demo.parts.json"));
        assert_eq!(p("demo.bundle"), PathBuf::from("demo.bundle.parts.json"));
        assert_eq!(p(".tar.zst"), PathBuf::from(".tar.zst.parts.json"));
        assert_eq!(part_name("demo.tar.zst", 3), "demo.tar.zst.part-003");
        assert_eq!(part_name("demo.tar.zst", 1234), "demo.tar.zst.part-1234");
    }

    #[test]
    fn paths_are_classified_by_name() {
        assert_eq!(
            BundlePath::of(Path::new("a/demo.parts.json")),
            BundlePath::Manifest
        );
        assert_eq!(
            BundlePath::of(Path::new("a/demo.tar.zst.part-002")),
            BundlePath::Part {
                index: 2,
                bundle: "demo.tar.zst".into()
            }
        );
        assert_eq!(BundlePath::of(Path::new("demo.tar.zst")), BundlePath::Plain);
        assert_eq!(BundlePath::of(Path::new("demo.part-x")), BundlePath::Plain);
        assert_eq!(BundlePath::of(Path::new(".part-001")), BundlePath::Plain);
    }
}
