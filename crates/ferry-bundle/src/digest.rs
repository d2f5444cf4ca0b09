//! Content digests (`sha256:<64 hex>`) and hashing helpers.
//!
//! Every sha256 ferry computes goes through [`Digest::of`] or [`Hasher`]:
//! with the feature `hash-count` (tests only) [`hashed_bytes`] tells how
//! many bytes the process has hashed, so a test can count the hashes of an
//! operation (one per blob on import).

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A validated `sha256:<64 lowercase hex>` content digest.
///
/// ferry only produces and accepts sha256 digests: every registry and every
/// OCI layout in the field uses them, and a second algorithm would be a second
/// verification path to get wrong.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// A string that is not a valid sha256 digest.
#[derive(Debug, thiserror::Error)]
#[error("invalid digest `{value}`: {reason}")]
pub struct DigestError {
    /// The text that failed to parse.
    pub value: String,
    /// Why it was refused.
    pub reason: &'static str,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        count(bytes.len());
        Digest(Sha256::digest(bytes).into())
    }

    /// Parses the 64-character lowercase hex part alone.
    pub fn from_hex(hex_part: &str) -> Result<Digest, DigestError> {
        let err = |reason| DigestError {
            value: hex_part.to_string(),
            reason,
        };
        if hex_part.len() != 64 {
            return Err(err("the hex part must be 64 characters"));
        }
        if !hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(err("the hex part must be lowercase hexadecimal"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| err("bad hex"))?;
        Ok(Digest(out))
    }

    /// The 64-character lowercase hex part (`<hex>` of `sha256:<hex>`).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The path of this blob inside an OCI layout: `blobs/sha256/<hex>`.
    pub fn layout_path(&self) -> String {
        format!("blobs/sha256/{}", self.hex())
    }

    /// The OCI referrers fallback tag for this digest: `sha256-<hex>`.
    pub fn fallback_tag(&self) -> String {
        format!("sha256-{}", self.hex())
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("sha256", hex_part)) => Digest::from_hex(hex_part).map_err(|e| DigestError {
                value: s.to_string(),
                reason: e.reason,
            }),
            Some((_, _)) => Err(DigestError {
                value: s.to_string(),
                reason: "only sha256 digests are supported",
            }),
            None => Err(DigestError {
                value: s.to_string(),
                reason: "expected `sha256:<64 hex characters>`",
            }),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "hash-count")]
static HASHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes hashed by this process so far, by [`Digest::of`] and [`Hasher`]
/// (feature `hash-count`, for tests that count hashes).
#[cfg(feature = "hash-count")]
pub fn hashed_bytes() -> u64 {
    HASHED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Adds `n` to [`hashed_bytes`] (nothing without the feature).
#[inline]
fn count(n: usize) {
    #[cfg(feature = "hash-count")]
    HASHED.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(feature = "hash-count"))]
    let _ = n;
}

/// Who checks that a blob's bytes hash to its digest, where bytes are
/// handed on (an upload, a blob directory): each blob is hashed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The receiver hashes the bytes as they pass and refuses a mismatch:
    /// bytes from anywhere.
    Hash,
    /// The sender has hashed them against the digest and withholds the
    /// last byte of a blob that does not match (the bundle reader on
    /// import): the receiver only counts them against the size, which a
    /// withheld byte fails.
    Sender,
}

/// An incremental sha256 that also counts bytes.
#[derive(Clone, Default)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Hasher {
        Hasher::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        count(bytes.len());
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }
    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest(self.inner.finalize().into())
    }
}

/// A reader that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(),
        }
    }
    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }
    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }
    /// The digest and length of what was read, and the inner reader.
    pub fn finish(self) -> (Digest, u64, R) {
        let len = self.hasher.len();
        (self.hasher.finish(), len, self.inner)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
        }
    }
    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
    /// The digest and length of what was written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        let len = self.hasher.len();
        (self.hasher.finish(), len, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_json_object_is_the_oci_empty_descriptor() {
        assert_eq!(
            Digest::of(b"{}").to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn parse_refuses_other_algorithms_uppercase_and_short_hex() {
        assert!("sha512:abcd".parse::<Digest>().is_err());
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(upper.parse::<Digest>().is_err());
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!("abc".parse::<Digest>().is_err());
        let ok = format!("sha256:{}", "a".repeat(64));
        assert_eq!(ok.parse::<Digest>().unwrap().to_string(), ok);
    }

    #[test]
    fn hashing_reader_matches_one_shot_digest() {
        let data = vec![7u8; 100_000];
        let mut r = HashingReader::new(&data[..]);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        let (d, n, _) = r.finish();
        assert_eq!(n, 100_000);
        assert_eq!(d, Digest::of(&data));
    }
}
