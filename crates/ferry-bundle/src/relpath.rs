//! Validated relative paths for the file tree (`dev.ferry.path`, chart
//! entries, file targets).
//!
//! A [`RelPath`] is `/`-separated, non-empty, relative, and has no `.`, `..`
//! or empty components, no backslashes, NUL or other control characters. It
//! can be joined onto a directory or a URL without escaping it.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest accepted path (bytes).
pub const MAX_LEN: usize = 1024;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path `{path}`: {reason}")]
pub struct RelPathError {
    /// The path as given (control characters escaped).
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A safe relative path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    /// Validates `s`.
    pub fn new(s: &str) -> Result<RelPath, RelPathError> {
        let err = |reason| RelPathError {
            path: s.escape_debug().to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.len() > MAX_LEN {
            return Err(err("it is longer than 1024 bytes"));
        }
        if s.starts_with('/') {
            return Err(err("it is absolute"));
        }
        if s.contains('\\') {
            return Err(err("it contains a backslash"));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(err("it contains a control character"));
        }
        for part in s.split('/') {
            match part {
                "" => return Err(err("it has an empty component")),
                "." | ".." => return Err(err("it has a `.` or `..` component")),
                _ => {}
            }
        }
        Ok(RelPath(s.to_string()))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The parent, when there is one.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(p, _)| RelPath(p.to_string()))
    }

    /// `self/name` (validated).
    pub fn join(&self, name: &str) -> Result<RelPath, RelPathError> {
        RelPath::new(&format!("{}/{}", self.0, name))
    }

    /// The sibling `name` in the same directory (validated).
    pub fn sibling(&self, name: &str) -> Result<RelPath, RelPathError> {
        match self.parent() {
            Some(p) => p.join(name),
            None => RelPath::new(name),
        }
    }

    /// The path under `root` on the local file system.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for part in self.0.split('/') {
            p.push(part);
        }
        p
    }

    /// The components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RelPath {
    type Err = RelPathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RelPath::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        let p = RelPath::new("falco/driver/7.0.0+driver/x86_64/falco_a_b_1.ko").unwrap();
        assert_eq!(p.file_name(), "falco_a_b_1.ko");
        assert_eq!(
            p.parent().unwrap().as_str(),
            "falco/driver/7.0.0+driver/x86_64"
        );
        assert_eq!(
            p.sibling("x.sha512").unwrap().as_str(),
            "falco/driver/7.0.0+driver/x86_64/x.sha512"
        );
        assert_eq!(
            p.under(Path::new("/srv")),
            PathBuf::from("/srv/falco/driver/7.0.0+driver/x86_64/falco_a_b_1.ko")
        );
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            "a\nb",
            "..",
        ] {
            let e = RelPath::new(bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid path"), "{bad:?}: {e}");
        }
        assert!(RelPath::new(&"a".repeat(2000)).is_err());
    }
}
