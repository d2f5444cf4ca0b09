//! What is wrong with one part ([`PartFault`]) or a split bundle ([`PartsError`]).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::text::escape;

/// What is wrong with one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartProblem {
    /// Not there.
    Missing,
    /// Could not be opened or read.
    Unreadable(String),
    /// Shorter than listed.
    Truncated {
        /// Bytes there.
        actual: u64,
        /// Bytes listed.
        expected: u64,
    },
    /// Longer than listed.
    TooLong {
        /// Bytes there (when known).
        actual: Option<u64>,
        /// Bytes listed.
        expected: u64,
    },
    /// Other bytes than listed.
    Mismatch {
        /// Listed.
        expected: Digest,
        /// What the part hashes to.
        actual: Digest,
    },
}

impl fmt::Display for PartProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartProblem::Missing => f.write_str("missing"),
            PartProblem::Unreadable(e) => write!(f, "cannot be read: {e}"),
            PartProblem::Truncated { actual, expected } => {
                write!(f, "truncated: {actual} of {expected} bytes")
            }
            PartProblem::TooLong {
                actual: Some(a),
                expected,
            } => write!(f, "{a} bytes, but the parts manifest lists {expected}"),
            PartProblem::TooLong {
                actual: None,
                expected,
            } => write!(
                f,
                "longer than the {expected} bytes the parts manifest lists"
            ),
            PartProblem::Mismatch { expected, actual } => write!(
                f,
                "sha256 mismatch, expected {}, got {}",
                expected.hex(),
                actual.hex()
            ),
        }
    }
}

/// One bad part, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("part {number} of {count} (`{}`): {problem} — copy this part again", escape(.name))]
pub struct PartFault {
    /// 1-based position in the stream.
    pub number: usize,
    /// How many parts the bundle has.
    pub count: usize,
    /// The part's file name.
    pub name: String,
    /// Where it was looked for.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: PartProblem,
}

/// Why a bundle (plain or split) or a part could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum PartsError {
    /// A plain bundle file could not be opened.
    #[error("failed to open bundle `{path}`")]
    Open {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The bundle named does not exist, but was split.
    #[error("bundle `{path}` does not exist, but its parts manifest `{manifest}` does (it was exported with --split): pass the parts manifest or the first part")]
    WasSplit {
        /// The path given.
        path: PathBuf,
        /// The manifest beside it.
        manifest: PathBuf,
    },
    /// The parts manifest could not be read.
    #[error("failed to read parts manifest `{path}`")]
    ManifestRead {
        /// The manifest.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The parts manifest is malformed.
    #[error("parts manifest `{path}` is malformed: {}", escape(.reason))]
    ManifestMalformed {
        /// The manifest.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A part without its manifest.
    #[error("`{part}` is a part of a split bundle, but its parts manifest is not beside it (looked for {tried}): copy the `.parts.json` file too")]
    NoManifest {
        /// The part given.
        part: PathBuf,
        /// The manifest names tried.
        tried: String,
    },
    /// A part the manifest does not list.
    #[error("`{part}` is not listed in the parts manifest `{manifest}`")]
    NotListed {
        /// The part given.
        part: PathBuf,
        /// The manifest.
        manifest: PathBuf,
    },
    /// A part other than the first given as the bundle.
    #[error("`{part}` is part {number} of {count} of a split bundle: pass the first part (`{first}`) or the parts manifest `{manifest}`")]
    NotFirst {
        /// The part given.
        part: PathBuf,
        /// Its 1-based position.
        number: usize,
        /// How many parts.
        count: usize,
        /// The first part's name.
        first: String,
        /// The manifest.
        manifest: PathBuf,
    },
    /// The parts carry another bundle than the manifest names.
    #[error("split bundle `{manifest}`: {mismatch}")]
    Identity {
        /// The manifest.
        manifest: PathBuf,
        /// What differs.
        mismatch: Box<IdentityMismatch>,
    },
    /// Parts that are missing, of the wrong size, or corrupt.
    #[error("split bundle `{manifest}`: {}", describe_faults(.faults))]
    Parts {
        /// The manifest.
        manifest: PathBuf,
        /// Each bad part (at least one).
        faults: Vec<PartFault>,
    },
}

/// How the bundle a parts manifest names differs from the one its parts carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the parts manifest names bundle `{}` ({field} {}), but its parts carry bundle `{}` ({field} {}): the manifest and the parts belong to different bundles", escape(.listed_name), escape(.listed), escape(.carried_name), escape(.carried))]
pub struct IdentityMismatch {
    /// The first field that differs (`bundleJson`, `index`, `name`, …).
    pub field: &'static str,
    /// The bundle name the manifest lists.
    pub listed_name: String,
    /// The field's value in the manifest.
    pub listed: String,
    /// The name in the carried `ferry/bundle.json`.
    pub carried_name: String,
    /// The field's value there.
    pub carried: String,
}

fn describe_faults(faults: &[PartFault]) -> String {
    match faults {
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} parts need copying again:", many.len());
            for f in many {
                s.push_str("\n  ");
                s.push_str(&f.to_string());
            }
            s
        }
    }
}

impl PartsError {
    /// The bad parts, when that is what is wrong.
    pub fn faults(&self) -> &[PartFault] {
        match self {
            PartsError::Parts { faults, .. } => faults,
            _ => &[],
        }
    }
}
