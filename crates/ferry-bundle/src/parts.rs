//! Split bundles: a bundle stream cut into parts that fit removable media.
//!
//! `ferry export --split SIZE -o demo.tar.zst` writes the same byte stream an
//! unsplit export writes, cut at byte boundaries into `demo.tar.zst.part-000`,
//! `demo.tar.zst.part-001`, … (each `SIZE` bytes but the last), and a parts
//! manifest `demo.parts.json` beside them ([`manifest_path_for`]) that holds
//! the bundle's identity, the whole stream's size and sha256, and each part's
//! name, size and sha256. The concatenation of the parts is byte for byte the
//! unsplit bundle; a part alone is not decompressible (nor meant to be).
//!
//! - [`PartsWriter`] is the rolling [`Write`] the bundle writer uses: every
//!   part is written under a temporary name and renamed into place only when
//!   the whole export succeeded ([`PartsWriter::finish`]); dropped unfinished,
//!   it removes its temporary files.
//! - [`open_bundle`] opens what an operator names (a plain bundle file, a parts
//!   manifest or the first part) as one [`BundleSource`]. For a split bundle
//!   it checks up front that every part is there with its listed size, then
//!   reads the parts in sequence (never concatenated on disk), hashing each
//!   part as it streams past and refusing to go on past a part whose sha256 is
//!   not the listed one. Every fault names the part
//!   (`part 4 of 7 (`demo.tar.zst.part-003`): sha256 mismatch, …`).
//! - [`locate_part`] and [`LocatedPart::verify`] check one part on its own
//!   against the manifest (a USB stick before it is carried).
//!
//! The parts manifest is a transport check, not a trust anchor: what the
//! parts carry is verified by the bundle reader (every blob hashed, the graph
//! complete, the optional signature over `ferry/bundle.json`) exactly as for
//! an unsplit bundle.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::meta::IndexPin;
use crate::text::escape;
use crate::write_error::WriteError;

/// `parts.json` schema version this build writes and reads.
pub const PARTS_VERSION: u32 = 1;
/// The largest file FAT32 can hold: 4 GiB − 1 byte (its size field is 32
/// bits). `--split fat32` cuts parts of exactly this size.
pub const FAT32_MAX_FILE: u64 = 4 * GIB - 1;
/// The smallest part `--split` accepts ([`parse_part_size`]): smaller parts
/// only multiply files.
pub const MIN_PART_SIZE: u64 = 64 * KIB;
/// Largest parts manifest read.
pub const MAX_MANIFEST: u64 = 16 * 1024 * 1024;
/// Most parts a manifest may list.
pub const MAX_PARTS: usize = 100_000;
/// The suffix of a parts manifest's file name.
pub const MANIFEST_SUFFIX: &str = ".parts.json";

const KIB: u64 = 1024;
const GIB: u64 = 1024 * 1024 * 1024;
/// Bundle suffixes a parts manifest name drops (`demo.tar.zst` → `demo.parts.json`).
const BUNDLE_SUFFIXES: [&str; 4] = [".tar.zst", ".tar.gz", ".tgz", ".tar"];
const PART_MARKER: &str = ".part-";

// ---------------------------------------------------------------------------
// Sizes

/// A size that `--split` does not accept.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    /// Not a size.
    #[error("invalid size `{text}`: {reason} (examples: 700MiB, 4GiB, 4.7G, 1000000, fat32)")]
    Invalid {
        /// What was given.
        text: String,
        /// Why it was refused.
        reason: String,
    },
    /// Below [`MIN_PART_SIZE`].
    #[error("part size `{text}` ({size} bytes) is below the minimum of {min} bytes (64KiB)")]
    TooSmall {
        /// What was given.
        text: String,
        /// Its value.
        size: u64,
        /// The minimum.
        min: u64,
    },
}

/// Parses a byte size: a whole or decimal number with an optional unit,
/// `K`/`M`/`G`/`T` (also `KB`…) decimal (powers of 1000) and
/// `KiB`/`MiB`/`GiB`/`TiB` binary (powers of 1024), case-insensitive, or
/// `fat32` ([`FAT32_MAX_FILE`]). A bare number is bytes. A fraction is
/// rounded down to whole bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let invalid = |reason: &str| SizeError::Invalid {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let t = text.trim();
    if t.eq_ignore_ascii_case("fat32") {
        return Ok(FAT32_MAX_FILE);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000u64.pow(2),
        "g" | "gb" => 1000u64.pow(3),
        "t" | "tb" => 1000u64.pow(4),
        "ki" | "kib" => 1024,
        "mi" | "mib" => 1024u64.pow(2),
        "gi" | "gib" => 1024u64.pow(3),
        "ti" | "tib" => 1024u64.pow(4),
        _ => return Err(invalid(&format!("unknown unit `{unit}`"))),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("expected a number"));
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit())
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(invalid("expected a number"));
    }
    if fraction.len() > 9 {
        return Err(invalid("too many decimal places"));
    }
    let overflow = || invalid("too large");
    let whole: u64 = whole.parse().map_err(|_| overflow())?;
    let mut size = whole.checked_mul(multiplier).ok_or_else(overflow)?;
    if !fraction.is_empty() {
        if multiplier == 1 {
            return Err(invalid("a byte count must be a whole number"));
        }
        let digits: u64 = fraction.parse().map_err(|_| overflow())?;
        let scale = 10u64.pow(fraction.len() as u32);
        let extra = (digits as u128 * multiplier as u128 / scale as u128) as u64;
        size = size.checked_add(extra).ok_or_else(overflow)?;
    }
    if size == 0 {
        return Err(invalid("the size must be above zero"));
    }
    Ok(size)
}

/// [`parse_size`] for `--split`: also refuses parts below [`MIN_PART_SIZE`].
pub fn parse_part_size(text: &str) -> Result<u64, SizeError> {
    let size = parse_size(text)?;
    if size < MIN_PART_SIZE {
        return Err(SizeError::TooSmall {
            text: text.to_string(),
            size,
            min: MIN_PART_SIZE,
        });
    }
    Ok(size)
}

// ---------------------------------------------------------------------------
// The parts manifest

/// sha256 digests written as bare hex (the way `sha256sum` prints them).
mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::digest::Digest;

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// One part as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    /// File name, in the manifest's directory (`demo.tar.zst.part-000`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the part's bytes, bare hex.
    #[serde(with = "hex_digest")]
    pub sha256: Digest,
}

/// `<OUT stem>.parts.json`: what a split bundle is and how it was cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartsManifest {
    /// Schema version ([`PARTS_VERSION`]).
    pub parts_version: u32,
    /// The unsplit bundle's file name (what the concatenation of the parts is).
    pub bundle: String,
    /// The bundle format version (`formatVersion` of `ferry/bundle.json`).
    pub format_version: u32,
    /// The bundle's name (the spec's).
    pub name: String,
    /// The ferry that wrote it.
    pub tool: String,
    /// sha256 of the exact `ferry/bundle.json` bytes (what a signature covers).
    pub bundle_json: Digest,
    /// The index.json pin of `ferry/bundle.json`.
    pub index: IndexPin,
    /// Size of the whole stream (the sum of the part sizes).
    pub size: u64,
    /// sha256 of the whole stream, bare hex: the `.sha256` of the unsplit bundle.
    #[serde(with = "hex_digest")]
    pub sha256: Digest,
    /// The `--split` size: every part but the last has exactly this size.
    pub part_size: u64,
    /// The parts, in stream order.
    pub parts: Vec<PartEntry>,
}

impl PartsManifest {
    /// Serialises deterministically (pretty JSON, trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses and checks a manifest (`path` only names it in errors): the
    /// version, part names that are plain file names, each listed once,
    /// sizes that add up.
    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<PartsManifest, PartsError> {
        let bad = |reason: String| PartsError::ManifestMalformed {
            path: path.to_path_buf(),
            reason,
        };
        let version = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("partsVersion").and_then(|x| x.as_u64()));
        if let Some(v) = version.filter(|v| *v != PARTS_VERSION as u64) {
            return Err(bad(format!(
                "partsVersion {v} is not supported (this ferry reads version {PARTS_VERSION})"
            )));
        }
        let m: PartsManifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.parts.is_empty() {
            return Err(bad("it lists no parts".into()));
        }
        if m.parts.len() > MAX_PARTS {
            return Err(bad(format!(
                "it lists {} parts, over the limit of {MAX_PARTS}",
                m.parts.len()
            )));
        }
        let mut names = std::collections::HashSet::new();
        let mut total: u64 = 0;
        for p in &m.parts {
            if !is_plain_file_name(&p.name) {
                return Err(bad(format!(
                    "part name `{}` is not a plain file name",
                    escape(&p.name)
                )));
            }
            if !names.insert(p.name.as_str()) {
                return Err(bad(format!("part `{}` is listed twice", p.name)));
            }
            if p.size == 0 {
                return Err(bad(format!("part `{}` has size 0", p.name)));
            }
            total = total
                .checked_add(p.size)
                .ok_or_else(|| bad("part sizes overflow".into()))?;
        }
        // Cut at byte boundaries every `partSize` bytes: every part but
        // the last is exactly that long, the last at most that.
        let last = m.parts.len() - 1;
        for (i, p) in m.parts.iter().enumerate() {
            if (i < last && p.size != m.part_size) || p.size > m.part_size {
                return Err(bad(format!(
                    "part `{}` is listed with {} bytes, but the bundle was cut every {} bytes (partSize): only the last part may be shorter",
                    p.name, p.size, m.part_size
                )));
            }
        }
        if total != m.size {
            return Err(bad(format!(
                "the parts add up to {total} bytes, but the manifest says {}",
                m.size
            )));
        }
        Ok(m)
    }

    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<PartsManifest, PartsError> {
        let read_err = |source| PartsError::ManifestRead {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(PartsError::ManifestMalformed {
                path: path.to_path_buf(),
                reason: format!("over the {MAX_MANIFEST}-byte limit"),
            });
        }
        PartsManifest::from_slice(&bytes, path)
    }
}

/// `e`, its message prefixed with the part it happened on.
fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("`{}`: {e}", path.display()))
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(crate::text::is_unsafe_char)
        && name.len() <= 255
}

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

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn dir_of(path: &Path) -> PathBuf {
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

// ---------------------------------------------------------------------------
// Errors

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

// ---------------------------------------------------------------------------
// Writing

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

// ---------------------------------------------------------------------------
// Reading

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

// ---------------------------------------------------------------------------
// Opening what the operator names

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
    let carried = Identity::from_meta_json(&head.meta_bytes).ok();
    let Some(carried) = carried else {
        return Ok(());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            format_version: 1,
            name: "demo".into(),
            tool: "ferry test".into(),
            bundle_json: Digest::of(b"{}"),
            index: IndexPin {
                digest: Digest::of(b"index"),
                size: 5,
            },
        }
    }

    fn stream(len: usize) -> Vec<u8> {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    /// Writes `data` split at `part_size` into `dir/demo.tar.zst.part-*`.
    fn split(dir: &Path, data: &[u8], part_size: u64, chunk: usize) -> PartsWritten {
        let bundle = dir.join("demo.tar.zst");
        let mut w = PartsWriter::create(&bundle, part_size).unwrap();
        for c in data.chunks(chunk) {
            w.write_all(c).unwrap();
        }
        w.flush().unwrap();
        w.finish(identity(), data.len() as u64, Digest::of(data))
            .unwrap()
    }

    fn read_all(path: &Path) -> Result<Vec<u8>, (io::Error, Option<PartsError>)> {
        let mut src = open_bundle(path).map_err(|e| (io::Error::other(e.to_string()), None))?;
        let mut out = Vec::new();
        match src.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(e) => {
                let d = src.diagnose();
                Err((e, d))
            }
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("1000000").unwrap(), 1_000_000);
        assert_eq!(parse_size("700MiB").unwrap(), 700 * 1024 * 1024);
        assert_eq!(parse_size("4GiB").unwrap(), 4 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("4G").unwrap(), 4_000_000_000);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("64k").unwrap(), 64_000);
        assert_eq!(parse_size("2 MB").unwrap(), 2_000_000);
        assert_eq!(parse_size("1.5GiB").unwrap(), 1536 * 1024 * 1024);
        assert_eq!(parse_size("4.7G").unwrap(), 4_700_000_000);
        assert_eq!(parse_size("1TiB").unwrap(), 1 << 40);
        assert_eq!(parse_size(" 10b ").unwrap(), 10);
    }

    #[test]
    fn fat32_is_the_largest_file_fat32_holds() {
        assert_eq!(parse_size("fat32").unwrap(), 4_294_967_295);
        assert_eq!(parse_size("FAT32").unwrap(), u32::MAX as u64);
    }

    #[test]
    fn bad_sizes_are_refused_naming_the_text() {
        for bad in [
            "",
            "MiB",
            "4XB",
            "-1",
            "1.5",
            "0",
            "0KiB",
            "1..5G",
            "4.G",
            "99999999999999999999",
            "18446744073709551615KiB",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{bad}`")),
                "{bad}: {err}"
            );
        }
        let err = parse_part_size("1000").unwrap_err();
        assert!(
            matches!(err, SizeError::TooSmall { size: 1000, .. }),
            "{err}"
        );
        assert_eq!(parse_part_size("64KiB").unwrap(), MIN_PART_SIZE);
    }

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

    #[test]
    fn the_writer_rolls_parts_and_the_reader_gives_the_stream_back() {
        let tmp = tempfile::tempdir().unwrap();
        let data = stream(10_000);
        // Odd write sizes that straddle part boundaries.
        let w = split(tmp.path(), &data, 4096, 777);
        let sizes: Vec<u64> = w.manifest.parts.iter().map(|p| p.size).collect();
        assert_eq!(sizes, vec![4096, 4096, 1808]);
        assert_eq!(w.manifest.size, 10_000);
        assert_eq!(w.manifest.sha256, Digest::of(&data));
        assert_eq!(w.manifest_path, tmp.path().join("demo.parts.json"));
        assert_eq!(
            listing(tmp.path()),
            vec![
                "demo.parts.json",
                "demo.tar.zst.part-000",
                "demo.tar.zst.part-001",
                "demo.tar.zst.part-002"
            ]
        );
        let mut cat = Vec::new();
        for (p, entry) in w.paths.iter().zip(&w.manifest.parts) {
            let bytes = std::fs::read(p).unwrap();
            assert_eq!(Digest::of(&bytes), entry.sha256);
            cat.extend(bytes);
        }
        assert_eq!(cat, data, "the parts concatenate to the stream");
        // The manifest on disk is the one returned, and parses back.
        let loaded = PartsManifest::load(&w.manifest_path).unwrap();
        assert_eq!(loaded, w.manifest);
        // Through the manifest and through the first part.
        assert_eq!(read_all(&w.manifest_path).unwrap(), data);
        assert_eq!(read_all(&w.paths[0]).unwrap(), data);
    }

    #[test]
    fn an_exact_multiple_has_no_empty_last_part() {
        let tmp = tempfile::tempdir().unwrap();
        let data = stream(8192);
        let w = split(tmp.path(), &data, 4096, 4096);
        assert_eq!(w.manifest.parts.len(), 2);
        assert_eq!(read_all(&w.manifest_path).unwrap(), data);
    }

    #[test]
    fn stale_parts_of_a_longer_earlier_export_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        split(tmp.path(), &stream(20_000), 4096, 1000);
        assert_eq!(listing(tmp.path()).len(), 6);
        let w = split(tmp.path(), &stream(5000), 4096, 1000);
        assert_eq!(w.manifest.parts.len(), 2);
        assert_eq!(
            listing(tmp.path()),
            vec![
                "demo.parts.json",
                "demo.tar.zst.part-000",
                "demo.tar.zst.part-001"
            ]
        );
    }

    #[test]
    fn an_abandoned_writer_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = PartsWriter::create(&tmp.path().join("demo.tar.zst"), 4096).unwrap();
        w.write_all(&stream(10_000)).unwrap();
        drop(w);
        assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
    }

    #[test]
    fn a_missing_part_is_named_before_anything_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let w = split(tmp.path(), &stream(10_000), 4096, 4096);
        std::fs::remove_file(&w.paths[1]).unwrap();
        let err = open_bundle(&w.manifest_path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("part 2 of 3 (`demo.tar.zst.part-001`): missing — copy this part again"),
            "{text}"
        );
        assert_eq!(err.faults().len(), 1);
    }

    #[test]
    fn a_truncated_part_is_named_before_anything_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let w = split(tmp.path(), &stream(10_000), 4096, 4096);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&w.paths[2])
            .unwrap();
        f.set_len(100).unwrap();
        let err = open_bundle(&w.paths[0]).unwrap_err();
        assert!(
            err.to_string()
                .contains("part 3 of 3 (`demo.tar.zst.part-002`): truncated: 100 of 1808 bytes"),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_part_stops_the_stream_at_its_end_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let data = stream(10_000);
        let w = split(tmp.path(), &data, 4096, 4096);
        let mut bytes = std::fs::read(&w.paths[1]).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(&w.paths[1], &bytes).unwrap();
        let mut src = open_bundle(&w.manifest_path).unwrap();
        let mut out = Vec::new();
        let err = src.read_to_end(&mut out).unwrap_err();
        // Nothing of the next part was handed out.
        assert_eq!(out.len(), 8192);
        let text = err.to_string();
        assert!(
            text.contains("part 2 of 3 (`demo.tar.zst.part-001`): sha256 mismatch, expected "),
            "{text}"
        );
        assert!(text.contains(&w.manifest.parts[1].sha256.hex()), "{text}");
        assert!(text.contains(&Digest::of(&bytes).hex()), "{text}");
        assert!(text.ends_with("copy this part again"), "{text}");
        // The error stays: reading on gives it again.
        assert!(src.read(&mut [0u8; 16]).is_err());
    }

    #[test]
    fn a_downstream_failure_mid_part_is_blamed_on_the_corrupt_part() {
        let tmp = tempfile::tempdir().unwrap();
        let w = split(tmp.path(), &stream(10_000), 4096, 4096);
        let mut bytes = std::fs::read(&w.paths[1]).unwrap();
        bytes[4000] ^= 1;
        std::fs::write(&w.paths[1], &bytes).unwrap();
        let mut src = open_bundle(&w.manifest_path).unwrap();
        // A consumer that gives up in the middle of part 2 (as a decompressor
        // does on bad bytes).
        let mut buf = vec![0u8; 5000];
        src.read_exact(&mut buf).unwrap();
        let err = src.diagnose().expect("the part is blamed");
        assert!(
            err.to_string()
                .contains("part 2 of 3 (`demo.tar.zst.part-001`): sha256 mismatch"),
            "{err}"
        );
    }

    #[test]
    fn intact_parts_are_not_blamed_for_a_downstream_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let w = split(tmp.path(), &stream(10_000), 4096, 4096);
        let mut src = open_bundle(&w.manifest_path).unwrap();
        let mut buf = vec![0u8; 5000];
        src.read_exact(&mut buf).unwrap();
        assert!(src.diagnose().is_none());
        // finish() reads and checks the rest.
        src.finish().unwrap();
    }

    #[test]
    fn finish_checks_the_bytes_a_consumer_left_unread() {
        let tmp = tempfile::tempdir().unwrap();
        let w = split(tmp.path(), &stream(10_000), 4096, 4096);
        let mut bytes = std::fs::read(&w.paths[2]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&w.paths[2], &bytes).unwrap();
        let mut src = open_bundle(&w.manifest_path).unwrap();
        let mut buf = vec![0u8; 100];
        src.read_exact(&mut buf).unwrap();
        let err = src.finish().unwrap_err();
        assert!(err.to_string().contains("part 3 of 3"), "{err}");
    }

    #[test]
    fn a_part_that_shrinks_while_read_is_truncated() {
        let tmp = tempfile::tempdir().unwrap();
        let w = split(tmp.path(), &stream(10_000), 4096, 4096);
        let mut src = open_bundle(&w.manifest_path).unwrap();
        // Passed the up-front check, then the medium lost bytes.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&w.paths[0])
            .unwrap();
        f.set_len(1000).unwrap();
        let mut out = Vec::new();
        let err = src.read_to_end(&mut out).unwrap_err();
        assert!(
            err.to_string()
                .contains("part 1 of 3 (`demo.tar.zst.part-000`): truncated: 1000 of 4096 bytes"),
            "{err}"
        );
    }

    #[test]
    fn one_part_is_verified_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let w = split(tmp.path(), &stream(10_000), 4096, 4096);
        // Only part 2 and the manifest on this "stick".
        let stick = tmp.path().join("stick");
        std::fs::create_dir(&stick).unwrap();
        std::fs::copy(&w.paths[1], stick.join("demo.tar.zst.part-001")).unwrap();
        std::fs::copy(&w.manifest_path, stick.join("demo.parts.json")).unwrap();
        let located = locate_part(&stick.join("demo.tar.zst.part-001")).unwrap();
        assert_eq!(located.index, 1);
        assert_eq!(
            located.missing_others(),
            vec!["demo.tar.zst.part-000", "demo.tar.zst.part-002"]
        );
        let check = located.verify().unwrap();
        assert_eq!((check.number, check.count), (2, 3));
        assert_eq!(check.entry, w.manifest.parts[1]);
        // A flipped byte is caught.
        let mut bytes = std::fs::read(stick.join("demo.tar.zst.part-001")).unwrap();
        bytes[0] ^= 1;
        std::fs::write(stick.join("demo.tar.zst.part-001"), &bytes).unwrap();
        let err = located.verify().unwrap_err();
        assert!(
            err.to_string()
                .contains("part 2 of 3 (`demo.tar.zst.part-001`): sha256 mismatch"),
            "{err}"
        );
        // A later part is not a bundle on its own.
        let err = open_bundle(&stick.join("demo.tar.zst.part-001")).unwrap_err();
        assert!(
            matches!(
                err,
                PartsError::NotFirst {
                    number: 2,
                    count: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_part_without_its_manifest_says_what_to_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let w = split(tmp.path(), &stream(10_000), 4096, 4096);
        std::fs::remove_file(&w.manifest_path).unwrap();
        let err = open_bundle(&w.paths[0]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PartsError::NoManifest { .. }), "{text}");
        assert!(text.contains("demo.parts.json"), "{text}");
    }

    #[test]
    fn the_unsplit_name_points_at_the_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let w = split(tmp.path(), &stream(10_000), 4096, 4096);
        let err = open_bundle(&tmp.path().join("demo.tar.zst")).unwrap_err();
        assert!(matches!(err, PartsError::WasSplit { .. }), "{err}");
        assert!(err
            .to_string()
            .contains(&w.manifest_path.display().to_string()));
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let w = split(tmp.path(), &stream(10_000), 4096, 4096);
        let base: serde_json::Value = serde_json::from_slice(&w.manifest.to_json()).unwrap();
        type Mutate = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Mutate)> = vec![
            (
                "not a plain file name",
                Box::new(|v| v["parts"][0]["name"] = "../etc/passwd".into()),
            ),
            (
                "not a plain file name",
                Box::new(|v| v["parts"][0]["name"] = "/abs".into()),
            ),
            (
                "listed twice",
                Box::new(|v| v["parts"][1]["name"] = v["parts"][0]["name"].clone()),
            ),
            ("add up", Box::new(|v| v["size"] = 5.into())),
            ("no parts", Box::new(|v| v["parts"] = serde_json::json!([]))),
            ("partsVersion 2", Box::new(|v| v["partsVersion"] = 2.into())),
            ("hex", Box::new(|v| v["parts"][0]["sha256"] = "XYZ".into())),
        ];
        for (want, mutate) in cases {
            let mut v = base.clone();
            mutate(&mut v);
            let path = tmp.path().join("bad.parts.json");
            std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
            let err = open_bundle(&path).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("bad.parts.json") && text.contains(want),
                "{want}: {text}"
            );
        }
    }
}
