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
//! - [`PartsWriter`] is the rolling [`Write`](std::io::Write) the bundle writer uses: every
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
//!
//! The rooms: [`size`] (`--split SIZE`), [`manifest`] (the parts manifest
//! format), [`names`] (part and manifest file names, what a path names),
//! [`error`] (what is wrong with a part or a split bundle), [`writer`] (the
//! rolling [`PartsWriter`]), [`reader`] (the verifying [`PartsReader`]),
//! [`open`] ([`open_bundle`], [`BundleSource`]) and [`locate`] (one part
//! checked alone).

mod error;
mod locate;
mod manifest;
mod names;
mod open;
mod ranges;
mod reader;
mod size;
#[cfg(test)]
mod tests;
mod writer;

pub use error::{IdentityMismatch, PartFault, PartProblem, PartsError};
pub use locate::{locate_part, LocatedPart, PartCheck};
pub use manifest::{PartEntry, PartsManifest};
pub use names::{manifest_path_for, part_name, BundlePath};
pub use open::{open_bundle, BundleSource};
pub use ranges::{RangeReader, Ranges};
pub use reader::PartsReader;
pub use size::{parse_part_size, parse_size, SizeError};
pub use writer::{Identity, PartsWriter, PartsWritten};

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
