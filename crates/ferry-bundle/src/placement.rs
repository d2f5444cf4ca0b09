//! Where each kind of file item may land on the file server.
//!
//! Every file kind owns one subtree of the file tree, and writes nothing
//! outside it:
//!
//! | kind                | place                                   |
//! |---------------------|-----------------------------------------|
//! | `chart`             | `helm/<repo>/…/<name>-<version>.tgz`    |
//! | `falco-driver`      | `falco/driver/…`                        |
//! | `falcoctl-index`    | exactly `falco/index.yaml`              |
//! | `opensearch-plugin` | `opensearch/plugins/…`                  |
//! | `file`              | `files/…`                               |
//!
//! The other kinds (images, Trivy databases, falcoctl artifacts) have no
//! place on the file server and may not carry a path. On top of that:
//!
//! - no component of a path may start with `.` (`.htaccess`, `.git/…`,
//!   and ferry's own staging names);
//! - no file under `helm/` may be named `index.yaml` (ferry regenerates the
//!   repository index itself);
//! - every path is written by one item only, and no path is a directory of
//!   another one.
//!
//! Export checks this before it writes a bundle; `ferry verify` and
//! `ferry import` check it again at the head ([`check_items`]), and import
//! checks every file an item's layers put on the target ([`Placements`])
//! before it writes anything.

use std::collections::HashMap;

use crate::manifest::{Descriptor, Parsed};
use crate::meta::{Item, Kind};
use crate::relpath::RelPath;

/// Why a file item's place was refused. Names the item(s) and the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The path is not in the place of the item's kind.
    #[error("item `{reference}` ({kind}) may not write `{path}`: {reason}")]
    Misplaced {
        /// The item's reference (control characters escaped).
        reference: String,
        /// Its kind.
        kind: &'static str,
        /// The path (control characters escaped).
        path: String,
        /// Why.
        reason: String,
    },
    /// Two items (or two files of one item) claim one path.
    #[error("items `{first}` and `{second}` both write `{path}`")]
    Collision {
        /// The item that claimed it first.
        first: String,
        /// The other one.
        second: String,
        /// The path.
        path: String,
    },
    /// One item's file is a directory of another's.
    #[error("item `{file}` writes the file `{path}`, which item `{under}` needs as a directory for `{inside}`")]
    FileIsDirectory {
        /// The item writing the file.
        file: String,
        /// The file's path.
        path: String,
        /// The item writing below it.
        under: String,
        /// The path below it.
        inside: String,
    },
}

fn shown(s: &str) -> String {
    s.escape_debug().to_string()
}

/// The subtree a kind writes under (`None`: the kind has no file).
pub fn kind_root(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Chart => Some("helm/"),
        Kind::FalcoDriver => Some("falco/driver/"),
        Kind::FalcoctlIndex => Some("falco/index.yaml"),
        Kind::OpensearchPlugin => Some("opensearch/plugins/"),
        Kind::File => Some("files/"),
        Kind::Image | Kind::TrivyDb | Kind::FalcoArtifact => None,
    }
}

/// Checks that `path` is a safe relative path in the place of `kind`
/// (see the module documentation).
pub fn check_path(kind: Kind, reference: &str, path: &str) -> Result<RelPath, PlacementError> {
    let misplaced = |reason: String| PlacementError::Misplaced {
        reference: shown(reference),
        kind: kind.as_str(),
        path: shown(path),
        reason,
    };
    let rel = RelPath::new(path).map_err(|e| misplaced(e.reason.to_string()))?;
    if let Some(part) = path.split('/').find(|p| p.starts_with('.')) {
        return Err(misplaced(format!(
            "component `{}` is a dot-file or dot-directory",
            shown(part)
        )));
    }
    let Some(root) = kind_root(kind) else {
        return Err(misplaced(format!(
            "a {} has no place on the file server",
            kind.as_str()
        )));
    };
    match kind {
        Kind::FalcoctlIndex if path != root => {
            return Err(misplaced(format!("the falcoctl index lands at `{root}`")));
        }
        Kind::FalcoctlIndex => {}
        _ => {
            let inside = path.strip_prefix(root).unwrap_or_default();
            if inside.is_empty() {
                return Err(misplaced(format!(
                    "a {} writes under `{root}`",
                    kind.as_str()
                )));
            }
            if kind == Kind::Chart && !inside.contains('/') {
                return Err(misplaced(
                    "a chart lands in a repository directory: `helm/<repo>/<file>`".into(),
                ));
            }
        }
    }
    if path.starts_with("helm/") && rel.file_name() == "index.yaml" {
        return Err(misplaced(
            "`index.yaml` in a Helm repository is generated by ferry".into(),
        ));
    }
    Ok(rel)
}

/// The paths claimed so far, to refuse a second claim of one path (or a
/// file where another item needs a directory). Each claim costs the depth
/// of its path: checking n paths is linear in n.
#[derive(Debug, Default)]
pub struct Placements {
    files: HashMap<String, String>,
    /// Every parent directory of a claimed file, with one item below it.
    dirs: HashMap<String, (String, String)>,
}

impl Placements {
    /// No path claimed.
    pub fn new() -> Placements {
        Placements::default()
    }

    /// Checks `path` for `kind` ([`check_path`]) and claims it for
    /// `reference`.
    pub fn claim(
        &mut self,
        kind: Kind,
        reference: &str,
        path: &str,
    ) -> Result<RelPath, PlacementError> {
        let rel = check_path(kind, reference, path)?;
        if let Some(first) = self.files.get(path) {
            return Err(PlacementError::Collision {
                first: shown(first),
                second: shown(reference),
                path: shown(path),
            });
        }
        if let Some((under, inside)) = self.dirs.get(path) {
            return Err(PlacementError::FileIsDirectory {
                file: shown(reference),
                path: shown(path),
                under: shown(under),
                inside: shown(inside),
            });
        }
        let mut ancestors = Vec::new();
        let mut cur = path;
        while let Some((parent, _)) = cur.rsplit_once('/') {
            if let Some(owner) = self.files.get(parent) {
                return Err(PlacementError::FileIsDirectory {
                    file: shown(owner),
                    path: shown(parent),
                    under: shown(reference),
                    inside: shown(path),
                });
            }
            if self.dirs.contains_key(parent) {
                break; // its own parents are recorded already
            }
            ancestors.push(parent);
            cur = parent;
        }
        for a in ancestors {
            self.dirs
                .insert(a.to_string(), (reference.to_string(), path.to_string()));
        }
        self.files.insert(path.to_string(), reference.to_string());
        Ok(rel)
    }
}

impl Placements {
    /// Checks an item's own path, then claims every file its manifest puts
    /// on the file server ([`crate::artifact::file_layers`]); returns them.
    pub fn claim_item(
        &mut self,
        kind: Kind,
        reference: &str,
        path: &str,
        manifest: &Parsed,
    ) -> Result<Vec<(RelPath, Descriptor)>, PlacementError> {
        let rel = check_path(kind, reference, path)?;
        let layers = crate::artifact::file_layers(&rel, manifest).map_err(|e| {
            PlacementError::Misplaced {
                reference: shown(reference),
                kind: kind.as_str(),
                path: shown(&e.path),
                reason: e.reason.to_string(),
            }
        })?;
        for (p, _) in &layers {
            self.claim(kind, reference, p.as_str())?;
        }
        Ok(layers)
    }
}

/// Checks the `dev.ferry.path` of every item: in its kind's place, no
/// dot-file, each path written by one item only. Linear in the number of
/// items.
pub fn check_items(items: &[Item]) -> Result<(), PlacementError> {
    let mut claims = Placements::new();
    for item in items {
        if let Some(p) = &item.path {
            claims.claim(item.kind, &item.reference, p)?;
        }
    }
    Ok(())
}

/// Checks every file each item's manifest puts on the file server
/// ([`Placements::claim_item`]), for the items whose manifest is in
/// `manifests` (the graph check names a missing one). Linear in the number
/// of files.
pub fn check_layers(
    items: &[Item],
    manifests: &HashMap<crate::Digest, Parsed>,
) -> Result<(), PlacementError> {
    let mut claims = Placements::new();
    for item in items {
        if let (Some(p), Some(m)) = (&item.path, manifests.get(&item.digest)) {
            claims.claim_item(item.kind, &item.reference, p, m)?;
        }
    }
    Ok(())
}

/// Parses a `.sha512` file (`<128 hex>  <file name>`, the name optional
/// and, when present, `file`); returns the lowercase hex digest.
pub fn parse_sha512(text: &str, file: &str) -> Result<String, ChecksumError> {
    let line = text.lines().next().unwrap_or("").trim();
    let mut parts = line.split_whitespace();
    let hex = parts.next().unwrap_or("").to_ascii_lowercase();
    if hex.len() != 128 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ChecksumError::NotSha512);
    }
    if let Some(name) = parts.next() {
        let name = name.trim_start_matches('*');
        if name != file {
            return Err(ChecksumError::OtherFile {
                named: shown(name),
                file: shown(file),
            });
        }
    }
    Ok(hex)
}

/// Why a `.sha512` file was refused ([`parse_sha512`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// The first word is not 128 hex digits.
    #[error("not a sha512 checksum file")]
    NotSha512,
    /// The file names another file.
    #[error("the checksum is for `{named}`, not `{file}`")]
    OtherFile {
        /// The name in the checksum file, escaped.
        named: String,
        /// The file it should name, escaped.
        file: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_stays_in_its_place() {
        let ok = [
            (Kind::Chart, "helm/stable/nginx-1.2.3.tgz"),
            (Kind::Chart, "helm/example.org-8443/charts/nginx-1.2.3.tgz"),
            (Kind::FalcoDriver, "falco/driver/7.0.0+driver/x86_64/f.ko"),
            (Kind::FalcoctlIndex, "falco/index.yaml"),
            (Kind::OpensearchPlugin, "opensearch/plugins/s3/2.8.0/s3.zip"),
            (Kind::File, "files/tools/helm.tar.gz"),
        ];
        for (kind, path) in ok {
            check_path(kind, "r", path).unwrap_or_else(|e| panic!("{kind:?} {path}: {e}"));
        }
        let bad = [
            (Kind::File, "helm/stable/index.yaml"),
            (Kind::File, "helm/stable/nginx-1.2.3.tgz"),
            (Kind::File, "falco/index.yaml"),
            (Kind::File, "index.html"),
            (Kind::File, "files"),
            (Kind::File, "files/.htaccess"),
            (Kind::File, "files/.git/config"),
            (Kind::File, "files/a/.ferry-staging/x"),
            (Kind::Chart, "helm/stable/index.yaml"),
            (Kind::Chart, "helm/x.tgz"),
            (Kind::Chart, "files/x.tgz"),
            (Kind::FalcoDriver, "falco/index.yaml"),
            (Kind::FalcoctlIndex, "falco/driver/index.yaml"),
            (Kind::OpensearchPlugin, "opensearch/x.zip"),
            (Kind::Image, "files/a"),
            (Kind::TrivyDb, "files/a"),
            (Kind::FalcoArtifact, "falco/driver/a"),
            (Kind::File, "files/../helm/stable/index.yaml"),
        ];
        for (kind, path) in bad {
            assert!(
                check_path(kind, "r", path).is_err(),
                "{kind:?} {path} accepted"
            );
        }
    }

    #[test]
    fn a_path_is_claimed_once_and_never_both_file_and_directory() {
        let mut c = Placements::new();
        c.claim(Kind::File, "a", "files/x/y").unwrap();
        let e = c.claim(Kind::File, "b", "files/x/y").unwrap_err();
        assert_eq!(e.to_string(), "items `a` and `b` both write `files/x/y`");
        let e = c.claim(Kind::File, "c", "files/x").unwrap_err();
        assert!(matches!(e, PlacementError::FileIsDirectory { .. }), "{e}");
        assert!(e.to_string().contains("`c`") && e.to_string().contains("`a`"));
        let e = c.claim(Kind::File, "d", "files/x/y/z").unwrap_err();
        assert!(e.to_string().contains("`d`") && e.to_string().contains("`a`"));
        c.claim(Kind::File, "e", "files/x/w").unwrap();
    }

    #[test]
    fn sha512_files_parse_like_upstream_writes_them() {
        let hex = "a".repeat(128);
        assert_eq!(
            parse_sha512(&format!("{hex}  p.zip\n"), "p.zip").unwrap(),
            hex
        );
        assert_eq!(
            parse_sha512(&format!("{hex} *p.zip"), "p.zip").unwrap(),
            hex
        );
        assert_eq!(parse_sha512(&hex.to_uppercase(), "p.zip").unwrap(), hex);
        assert!(parse_sha512(&format!("{hex}  q.zip"), "p.zip").is_err());
        assert!(parse_sha512("abc", "p.zip").is_err());
        assert!(parse_sha512("", "p.zip").is_err());
    }
}
