//! Bundle signatures: minisign key pairs, signing `ferry/bundle.json`, and
//! checking a signature against a trusted public key.
//!
//! `ferry/bundle.json` pins `index.json` by digest and every blob by digest
//! and size, and the reader enforces every pin and accepts no other byte
//! (fixed tar headers, nothing after the end-of-archive blocks or the
//! compressed frame), so one signature over its exact bytes covers every
//! byte of the tar stream (see docs/signing.md, "What a signature covers"). The signature is a standard
//! minisign signature (Ed25519 over the BLAKE2b-512 hash of the file, the
//! "prehashed" format), stored as `ferry/bundle.json.sig`; the key files are
//! standard minisign key files. The standalone `minisign` tool can therefore
//! check a bundle too: `minisign -Vm bundle.json -x bundle.json.sig -p KEY.pub`.
//!
//! The cryptography is the `minisign` crate's and ring's Ed25519 (signing
//! deterministically, and checking a signature against the BLAKE2b-512 of
//! bundle.json, [`TrustedKey::verify_prehashed`], since the reader never
//! holds its bytes and minisign's own check needs them); this module
//! handles files, passwords, the signature file's fields and errors. It never prompts: an encrypted secret key
//! needs its password passed in.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::digest::Digest;

/// A minisign key id: the 8 random bytes that name a key pair, shown as 16
/// upper-case hex digits the way `minisign` shows them (little-endian u64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub u64);

impl KeyId {
    fn from_keynum(keynum: &[u8]) -> KeyId {
        let mut b = [0u8; 8];
        let n = keynum.len().min(8);
        b[..n].copy_from_slice(&keynum[..n]);
        KeyId(u64::from_le_bytes(b))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

/// Why a key could not be made or used, or a signature was refused. Every
/// variant names the key file and, where known, the key ids involved.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A key file could not be read or written.
    #[error("failed to {op} key file `{path}`")]
    Io {
        /// What was being done (`read`, `create`, `write`).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `generate` would overwrite a file.
    #[error("key file `{path}` already exists; refusing to overwrite it (remove it or choose another --out)")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A key file that is not a minisign key of the expected kind.
    #[error("`{path}` is not a minisign {kind} key file: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// `public` or `secret`.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The secret key is encrypted and no password was given.
    #[error("secret key `{path}` is encrypted and no password was given (set FERRY_KEY_PASSWORD)")]
    PasswordRequired {
        /// The key file.
        path: PathBuf,
    },
    /// The password does not decrypt the secret key.
    #[error("wrong password for secret key `{path}`")]
    WrongPassword {
        /// The key file.
        path: PathBuf,
    },
    /// Key generation failed (random source, key derivation).
    #[error("failed to generate a key pair for `{path}`: {reason}")]
    Generate {
        /// The secret key path being generated.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
    /// Signing failed.
    #[error("failed to sign with secret key `{path}` (key id {key_id}): {reason}")]
    Sign {
        /// The key file.
        path: PathBuf,
        /// Its key id.
        key_id: KeyId,
        /// Cause.
        reason: String,
    },
    /// A signature that is not in minisign format.
    #[error("`{SIG}` is not a minisign signature: {reason}")]
    MalformedSignature {
        /// What is wrong.
        reason: String,
    },
    /// A key was required but the bundle carries no signature.
    #[error("the bundle is not signed, but --key `{key}` (key id {key_id}) requires a signature by that key")]
    Unsigned {
        /// The public key file.
        key: PathBuf,
        /// Its key id.
        key_id: KeyId,
    },
    /// Signed, but by another key.
    #[error("the bundle is signed by key id {signer}, not by --key `{key}` (key id {key_id})")]
    WrongKey {
        /// The public key file.
        key: PathBuf,
        /// Its key id.
        key_id: KeyId,
        /// The key id in the signature.
        signer: KeyId,
    },
    /// The signature does not verify: `bundle.json` (or the signature's
    /// trusted comment) was altered after signing.
    #[error("`{META}` does not match its signature by key id {key_id} (--key `{key}`): it was altered after signing ({reason})")]
    Altered {
        /// The public key file.
        key: PathBuf,
        /// Its key id.
        key_id: KeyId,
        /// What minisign reported.
        reason: String,
    },
}

const SIG: &str = crate::meta::SIG_PATH;
const META: &str = crate::meta::META_PATH;

/// The trusted comment ferry puts in a bundle signature:
/// `ferry bundle <name> index <index digest>`. It is covered by the
/// signature and shown by `minisign -V`; control characters in the name
/// become `?` (a signature file is line-based).
pub fn bundle_comment(name: &str, index: &Digest) -> String {
    let name: String = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("ferry bundle {name} index {index}")
}

/// The files [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// `NAME.key`, the secret key (mode 0600).
    pub secret: PathBuf,
    /// `NAME.pub`, the public key.
    pub public: PathBuf,
    /// The pair's key id.
    pub key_id: KeyId,
}

fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut s = out.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Creates `path` exclusively (never overwriting), mode 0600 on Unix.
fn create_new(path: &Path, private: bool) -> Result<fs::File, SignError> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    o.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            SignError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            SignError::Io {
                op: "create",
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), SignError> {
    let mut f = create_new(path, private)?;
    let io_err = |source| SignError::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    };
    f.write_all(bytes).map_err(io_err)?;
    f.sync_all().map_err(io_err)
}

/// Generates a minisign key pair and writes `OUT.key` (the secret key,
/// created with mode 0600) and `OUT.pub` (the public key). With a password
/// the secret key is encrypted (scrypt, as minisign does); without one it
/// is stored unencrypted (for scheduled jobs whose key is protected by
/// other means). Refuses to overwrite either file.
pub fn generate(out: &Path, password: Option<&str>) -> Result<Generated, SignError> {
    let secret = with_suffix(out, ".key");
    let public = with_suffix(out, ".pub");
    for p in [&secret, &public] {
        if p.symlink_metadata().is_ok() {
            return Err(SignError::Exists { path: p.clone() });
        }
    }
    let gen_err = |e: minisign::PError| SignError::Generate {
        path: secret.clone(),
        reason: e.to_string(),
    };
    let kp = match password {
        Some(p) => minisign::KeyPair::generate_encrypted_keypair(Some(p.to_string())),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(gen_err)?;
    let key_id = KeyId::from_keynum(kp.pk.keynum());
    let comment = match password {
        Some(_) => format!("ferry encrypted secret key {key_id}"),
        None => format!("ferry unencrypted secret key {key_id}"),
    };
    let sk_box = kp.sk.to_box(Some(&comment)).map_err(gen_err)?;
    let pk_box = kp.pk.to_box().map_err(gen_err)?;
    write_file(&secret, &sk_box.to_bytes(), true)?;
    if let Err(e) = write_file(&public, &pk_box.to_bytes(), false) {
        // Never leave half a pair behind.
        let _ = fs::remove_file(&secret);
        return Err(e);
    }
    Ok(Generated {
        secret,
        public,
        key_id,
    })
}

fn read_text(path: &Path, kind: &'static str) -> Result<String, SignError> {
    let bytes = fs::read(path).map_err(|source| SignError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| SignError::BadKeyFile {
        path: path.to_path_buf(),
        kind,
        reason: "not UTF-8 text".into(),
    })
}

/// A secret key loaded (and decrypted) for signing.
#[derive(Clone)]
pub struct SigningKey {
    path: PathBuf,
    key_id: KeyId,
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
}

impl fmt::Debug for SigningKey {
    // Never print the key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("path", &self.path)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads the secret key file at `path`. An encrypted key needs
    /// `password` (it is never prompted for); an unencrypted key ignores it.
    pub fn load(path: &Path, password: Option<&str>) -> Result<SigningKey, SignError> {
        let text = read_text(path, "secret")?;
        let bad = |reason: String| SignError::BadKeyFile {
            path: path.to_path_buf(),
            kind: "secret",
            reason,
        };
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        if !first.starts_with("untrusted comment:") {
            return Err(bad("the first line is not an `untrusted comment:`".into()));
        }
        let encoded = lines.next().unwrap_or_default().trim();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| bad(format!("the key line is not base64: {e}")))?;
        let probe = minisign::SecretKey::from_bytes(&raw)
            .map_err(|e| bad(format!("the key line is not a secret key: {e}")))?;
        let sk_box = minisign::SecretKeyBox::from_string(&text).map_err(|e| bad(e.to_string()))?;
        let sk = if probe.is_encrypted() {
            let Some(password) = password else {
                return Err(SignError::PasswordRequired {
                    path: path.to_path_buf(),
                });
            };
            minisign::SecretKey::from_box(sk_box, Some(password.to_string())).map_err(
                |e| match e.kind() {
                    minisign::ErrorKind::Verify => SignError::WrongPassword {
                        path: path.to_path_buf(),
                    },
                    _ => bad(e.to_string()),
                },
            )?
        } else {
            minisign::SecretKey::from_unencrypted_box(sk_box).map_err(|e| {
                // minisign 0.11's `-G -W` leaves the checksum of an
                // unencrypted key zeroed, which the library refuses.
                if raw.len() >= 32 && raw[raw.len() - 32..].iter().all(|b| *b == 0) {
                    bad("an unencrypted key with no checksum (as `minisign -G -W` writes) is not supported; use `ferry key generate --no-password`, or a password-protected minisign key".into())
                } else {
                    bad(e.to_string())
                }
            })?
        };
        let pk = minisign::PublicKey::from_secret_key(&sk).map_err(|e| bad(e.to_string()))?;
        Ok(SigningKey {
            path: path.to_path_buf(),
            key_id: KeyId::from_keynum(sk.keynum()),
            sk,
            pk,
        })
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Signs `bytes` with `trusted_comment` and returns the signature file
    /// (minisign format, prehashed: Ed25519 over BLAKE2b-512 of the bytes,
    /// and a global signature over that signature and the trusted comment).
    ///
    /// Deterministic (RFC 8032 Ed25519, by ring): the same key, bytes and
    /// comment always give the same signature file, so a signed bundle is as
    /// reproducible as an unsigned one. minisign's own signer adds random
    /// noise (hedged signatures); both verify the same way, and the result
    /// is checked with minisign before it is returned.
    pub fn sign(&self, bytes: &[u8], trusted_comment: &str) -> Result<Vec<u8>, SignError> {
        use blake2::Digest as _;
        let prehash: [u8; 64] = blake2::Blake2b512::digest(bytes).into();
        let text = self.signature_text(&prehash, trusted_comment)?;
        self.self_check(&text, Cursor::new(bytes))?;
        Ok(text.into_bytes())
    }

    /// Signs bytes known only by their BLAKE2b-512 `prehash` (what
    /// [`SigningKey::sign`] computes first), so that a large file never has
    /// to be held whole: the same signature file `sign` returns for those
    /// bytes. `again` writes the same bytes a second time (a serialiser run
    /// again): minisign checks the signature against them before it is
    /// returned, as `sign` does, so a prehash of other bytes, or a second
    /// serialisation that differs from the first, is an error. The bytes go
    /// from `again` (on a thread of its own) to minisign in small chunks.
    pub fn sign_prehashed(
        &self,
        prehash: &[u8; 64],
        trusted_comment: &str,
        again: impl FnOnce(&mut dyn Write) -> io::Result<()> + Send,
    ) -> Result<Vec<u8>, SignError> {
        let text = self.signature_text(prehash, trusted_comment)?;
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
            let writer = scope.spawn(move || {
                let mut out = ChunkSender {
                    tx,
                    buf: Vec::with_capacity(CHUNK),
                };
                again(&mut out)?;
                out.send()
            });
            let checked = self.self_check(
                &text,
                ChunkReader {
                    rx,
                    chunk: Vec::new(),
                    at: 0,
                },
            );
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the serialiser panicked")));
            match (checked, written) {
                (Ok(()), Ok(())) => Ok(text.into_bytes()),
                // The check stopped reading first: its error is the cause.
                (Err(e), Err(w)) if w.kind() == io::ErrorKind::BrokenPipe => Err(e),
                (_, Err(e)) => {
                    Err(self
                        .sign_error(format!("the bytes to sign could not be written again: {e}")))
                }
                (Err(e), Ok(())) => Err(e),
            }
        })
    }

    fn sign_error(&self, reason: String) -> SignError {
        SignError::Sign {
            path: self.path.clone(),
            key_id: self.key_id,
            reason,
        }
    }

    /// The minisign signature file over `prehash` (Ed25519, RFC 8032, by
    /// ring) with `trusted_comment` and its global signature.
    fn signature_text(
        &self,
        prehash: &[u8; 64],
        trusted_comment: &str,
    ) -> Result<String, SignError> {
        use base64::Engine;
        let fail = |reason: String| self.sign_error(reason);
        // The decrypted secret key (libsodium layout: 32-byte seed, then the
        // public key) follows algorithms, KDF salt and limits, and the key id.
        let raw = self.sk.to_bytes();
        const SK_AT: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8;
        let (Some(keynum), Some(sk)) = (raw.get(SK_AT - 8..SK_AT), raw.get(SK_AT..SK_AT + 64))
        else {
            return Err(fail("the secret key is shorter than a minisign key".into()));
        };
        let pair = ring::signature::Ed25519KeyPair::from_seed_and_public_key(&sk[..32], &sk[32..])
            .map_err(|e| fail(format!("the secret key is not an Ed25519 key pair: {e}")))?;
        let sig = pair.sign(prehash);
        let mut sig_line = Vec::with_capacity(2 + 8 + 64);
        sig_line.extend_from_slice(b"ED");
        sig_line.extend_from_slice(keynum);
        sig_line.extend_from_slice(sig.as_ref());
        let mut global_input = sig.as_ref().to_vec();
        global_input.extend_from_slice(trusted_comment.as_bytes());
        let global = pair.sign(&global_input);
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        Ok(format!(
            "untrusted comment: signature of {META} by ferry key id {}\n{}\ntrusted comment: {trusted_comment}\n{}\n",
            self.key_id,
            b64(&sig_line),
            b64(global.as_ref())
        ))
    }

    /// minisign itself must accept what was written, over the bytes `data`
    /// reads.
    fn self_check(&self, text: &str, data: impl io::Read + io::Seek) -> Result<(), SignError> {
        let sig_box = minisign::SignatureBox::from_string(text)
            .map_err(|e| self.sign_error(e.to_string()))?;
        minisign::verify(&self.pk, &sig_box, data, true, false, false).map_err(|e| {
            self.sign_error(format!(
                "the signature does not verify with its own public key: {e}"
            ))
        })
    }
}

/// Bytes per chunk from [`SigningKey::sign_prehashed`]'s serialiser to minisign …
const CHUNK: usize = 64 << 10;
/// … at most this many waiting.
const CHUNKS_IN_FLIGHT: usize = 2;

/// The writing end: chunks of [`CHUNK`] bytes into the channel.
struct ChunkSender {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the check stopped reading"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading end, for minisign (which reads to the end once; it would
/// only seek to print the data, which ferry never asks).
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.chunk = next;
                    self.at = 0;
                }
                // The writer is done (or failed: its error is reported).
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl io::Seek for ChunkReader {
    fn seek(&mut self, _: io::SeekFrom) -> io::Result<u64> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the bytes to sign stream past once",
        ))
    }
}

/// A public key that signatures are checked against.
#[derive(Clone)]
pub struct TrustedKey {
    path: PathBuf,
    key_id: KeyId,
    pk: minisign::PublicKey,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("path", &self.path)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The key id that signed.
    pub key_id: KeyId,
    /// The signed trusted comment (ferry writes
    /// `ferry bundle <name> index <digest>`; one made by hand with
    /// `minisign -S` has minisign's own).
    pub trusted_comment: String,
}

fn parse_signature(sig: &[u8]) -> Result<minisign::SignatureBox, SignError> {
    let text = std::str::from_utf8(sig).map_err(|_| SignError::MalformedSignature {
        reason: "not UTF-8 text".into(),
    })?;
    minisign::SignatureBox::from_string(text).map_err(|e| SignError::MalformedSignature {
        reason: e.to_string(),
    })
}

/// The key id a signature names, without checking it (for reporting a
/// signature when no key was given).
pub fn signature_key_id(sig: &[u8]) -> Result<KeyId, SignError> {
    Ok(KeyId::from_keynum(parse_signature(sig)?.keynum()))
}

impl TrustedKey {
    /// Loads the public key file at `path` (a minisign `.pub` file).
    pub fn load(path: &Path) -> Result<TrustedKey, SignError> {
        let text = read_text(path, "public")?;
        let pk = minisign::PublicKey::from_box(
            minisign::PublicKeyBox::from_string(&text).map_err(|e| SignError::BadKeyFile {
                path: path.to_path_buf(),
                kind: "public",
                reason: e.to_string(),
            })?,
        )
        .map_err(|e| SignError::BadKeyFile {
            path: path.to_path_buf(),
            kind: "public",
            reason: e.to_string(),
        })?;
        Ok(TrustedKey {
            path: path.to_path_buf(),
            key_id: KeyId::from_keynum(pk.keynum()),
            pk,
        })
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The signature file, parsed, and its key id, when there is one and
    /// it names this key: an unsigned bundle and another key's signature
    /// are refused here, before anything is checked against a key.
    fn signed_by_this_key<'s>(
        &self,
        sig: Option<&'s [u8]>,
    ) -> Result<(&'s [u8], minisign::SignatureBox, KeyId), SignError> {
        let Some(sig) = sig else {
            return Err(SignError::Unsigned {
                key: self.path.clone(),
                key_id: self.key_id,
            });
        };
        let sig_box = parse_signature(sig)?;
        let signer = KeyId::from_keynum(sig_box.keynum());
        if signer != self.key_id {
            return Err(SignError::WrongKey {
                key: self.path.clone(),
                key_id: self.key_id,
                signer,
            });
        }
        Ok((sig, sig_box, signer))
    }

    /// Checks that `sig` is a signature of exactly `bytes` by this key.
    /// `None` (an unsigned bundle) is refused, as are a signature by
    /// another key, legacy (non-prehashed) signatures, and any alteration
    /// of `bytes` or of the signed trusted comment.
    pub fn verify(&self, bytes: &[u8], sig: Option<&[u8]>) -> Result<Verified, SignError> {
        let (sig, sig_box, signer) = self.signed_by_this_key(sig)?;
        // minisign 0.10 panics on a global signature shorter than 64 bytes:
        // the lengths are checked first.
        SignatureParts::of(sig)?;
        minisign::verify(&self.pk, &sig_box, Cursor::new(bytes), true, false, false).map_err(
            |e| SignError::Altered {
                key: self.path.clone(),
                key_id: self.key_id,
                reason: e.to_string(),
            },
        )?;
        let trusted_comment =
            sig_box
                .trusted_comment()
                .map_err(|e| SignError::MalformedSignature {
                    reason: e.to_string(),
                })?;
        Ok(Verified {
            key_id: signer,
            trusted_comment,
        })
    }
}

impl TrustedKey {
    /// Checks that `sig` is a signature by this key of the bytes whose
    /// BLAKE2b-512 is `prehash` ([`prehash`]; the bundle reader computes it
    /// while bundle.json streams, [`crate::reader::Head::meta_prehash`]).
    ///
    /// minisign's own `verify` needs the bytes themselves, so this makes
    /// the checks it makes on a prehashed signature, in its order, with
    /// minisign's parser and ring's Ed25519: the file parses as a minisign
    /// signature; it names this key; its algorithm is `ED` (prehashed:
    /// legacy `Ed` signatures are refused); the signature over the prehash
    /// verifies; the global signature over that signature and the trusted
    /// comment verifies. Its answers are [`TrustedKey::verify`]'s.
    pub fn verify_prehashed(
        &self,
        prehash: &[u8; 64],
        sig: Option<&[u8]>,
    ) -> Result<Verified, SignError> {
        use ring::signature::{UnparsedPublicKey, ED25519};
        let (sig, sig_box, signer) = self.signed_by_this_key(sig)?;
        let altered = |reason: &str| SignError::Altered {
            key: self.path.clone(),
            key_id: self.key_id,
            reason: reason.into(),
        };
        if !sig_box.is_prehashed() {
            return Err(altered("Legacy signatures are not accepted"));
        }
        let parts = SignatureParts::of(sig)?;
        // The public key file's bytes: algorithm (2), key id (8), key (32).
        let pk_raw = self.pk.to_bytes();
        let Some(pk) = pk_raw.get(10..42) else {
            return Err(SignError::MalformedSignature {
                reason: "the public key is shorter than a minisign key".into(),
            });
        };
        let key = UnparsedPublicKey::new(&ED25519, pk);
        key.verify(prehash, &parts.signature)
            .map_err(|_| altered("Signature verification failed"))?;
        let trusted_comment =
            sig_box
                .trusted_comment()
                .map_err(|e| SignError::MalformedSignature {
                    reason: e.to_string(),
                })?;
        let mut global_input = parts.signature.to_vec();
        global_input.extend_from_slice(trusted_comment.as_bytes());
        key.verify(&global_input, &parts.global)
            .map_err(|_| altered("Comment signature verification failed"))?;
        Ok(Verified {
            key_id: signer,
            trusted_comment,
        })
    }
}

/// The BLAKE2b-512 of `bytes`: what a minisign prehashed signature signs
/// (see [`TrustedKey::verify_prehashed`]).
pub fn prehash(bytes: &[u8]) -> [u8; 64] {
    use blake2::Digest as _;
    blake2::Blake2b512::digest(bytes).into()
}

/// The binary parts of a minisign signature file that minisign's
/// `SignatureBox` does not hand out: the Ed25519 signature (its second
/// line: algorithm, key id, signature) and the global signature (its
/// fourth line). Read after minisign's parser accepted the file.
struct SignatureParts {
    signature: [u8; 64],
    global: [u8; 64],
}

impl SignatureParts {
    fn of(sig: &[u8]) -> Result<SignatureParts, SignError> {
        use base64::Engine;
        let malformed = |reason: String| SignError::MalformedSignature { reason };
        let text = std::str::from_utf8(sig).map_err(|_| malformed("not UTF-8 text".into()))?;
        let lines: Vec<&str> = text.lines().collect();
        let decode = |at: usize, what: &str| {
            let line = lines
                .get(at)
                .ok_or_else(|| malformed(format!("no {what} line")))?;
            base64::engine::general_purpose::STANDARD
                .decode(line.trim())
                .map_err(|e| malformed(format!("the {what} line is not base64: {e}")))
        };
        let line = decode(1, "signature")?;
        let global = decode(3, "global signature")?;
        let (Some(Ok(signature)), Ok(global)) = (
            line.get(10..).map(<[u8; 64]>::try_from),
            <[u8; 64]>::try_from(global.as_slice()),
        ) else {
            return Err(malformed(
                "a signature line is not the length of an Ed25519 signature".into(),
            ));
        };
        Ok(SignatureParts { signature, global })
    }
}

/// Signs `bytes` with the secret key file at `secret_key` (see
/// [`SigningKey::load`] and [`SigningKey::sign`]).
pub fn sign(
    secret_key: &Path,
    password: Option<&str>,
    bytes: &[u8],
    trusted_comment: &str,
) -> Result<Vec<u8>, SignError> {
    SigningKey::load(secret_key, password)?.sign(bytes, trusted_comment)
}

/// Checks `sig` over `bytes` against the public key file at `public_key`
/// (see [`TrustedKey::verify`]).
pub fn verify(public_key: &Path, bytes: &[u8], sig: Option<&[u8]>) -> Result<Verified, SignError> {
    TrustedKey::load(public_key)?.verify(bytes, sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str, password: Option<&str>) -> Generated {
        generate(&dir.join(name), password).unwrap()
    }

    #[test]
    fn a_generated_pair_signs_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let g = pair(dir.path(), "ops", None);
        assert_eq!(g.secret, dir.path().join("ops.key"));
        assert_eq!(g.public, dir.path().join("ops.pub"));
        let comment = bundle_comment("apps", &Digest::of(b"index"));
        let sig = sign(&g.secret, None, b"bundle.json bytes", &comment).unwrap();
        let v = verify(&g.public, b"bundle.json bytes", Some(&sig)).unwrap();
        assert_eq!(v.key_id, g.key_id);
        assert_eq!(v.trusted_comment, comment);
        assert!(comment.starts_with("ferry bundle apps index sha256:"));
        assert_eq!(signature_key_id(&sig).unwrap(), g.key_id);
    }

    #[test]
    fn the_files_are_minisign_format() {
        let dir = tempfile::tempdir().unwrap();
        let g = pair(dir.path(), "k", None);
        let public = fs::read_to_string(&g.public).unwrap();
        let lines: Vec<&str> = public.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            format!("untrusted comment: minisign public key: {}", g.key_id)
        );
        assert_eq!(lines[1].len(), 56);
        let sig = sign(&g.secret, None, b"x", "ferry bundle a index b").unwrap();
        let text = String::from_utf8(sig).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("untrusted comment: "));
        assert!(
            lines[1].starts_with("RU"),
            "prehashed Ed25519: {}",
            lines[1]
        );
        assert_eq!(lines[2], "trusted comment: ferry bundle a index b");
    }

    #[cfg(unix)]
    #[test]
    fn the_secret_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let g = pair(dir.path(), "k", None);
        let mode = fs::metadata(&g.secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn generate_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("k.pub"), b"keep me").unwrap();
        let err = generate(&dir.path().join("k"), None).unwrap_err();
        assert!(matches!(err, SignError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("k.pub"), "{err}");
        assert!(!dir.path().join("k.key").exists());
        assert_eq!(fs::read(dir.path().join("k.pub")).unwrap(), b"keep me");
        let g = pair(dir.path(), "j", None);
        let before = fs::read(&g.secret).unwrap();
        let err = generate(&dir.path().join("j"), None).unwrap_err();
        assert!(err.to_string().contains("j.key"), "{err}");
        assert_eq!(fs::read(&g.secret).unwrap(), before);
    }

    #[test]
    fn an_encrypted_key_needs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let g = pair(dir.path(), "enc", Some("correct horse"));
        let err = SigningKey::load(&g.secret, None).unwrap_err();
        assert!(matches!(err, SignError::PasswordRequired { .. }), "{err}");
        assert!(err.to_string().contains("enc.key"), "{err}");
        let err = SigningKey::load(&g.secret, Some("battery staple")).unwrap_err();
        assert!(matches!(err, SignError::WrongPassword { .. }), "{err}");
        let key = SigningKey::load(&g.secret, Some("correct horse")).unwrap();
        assert_eq!(key.key_id(), g.key_id);
        let sig = key.sign(b"data", "c").unwrap();
        assert_eq!(
            verify(&g.public, b"data", Some(&sig)).unwrap().key_id,
            g.key_id
        );
        // Debug never shows key material.
        let dbg = format!("{key:?}");
        assert!(dbg.contains("enc.key") && dbg.len() < 200, "{dbg}");
    }

    #[test]
    fn an_unsigned_input_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let g = pair(dir.path(), "k", None);
        let err = verify(&g.public, b"data", None).unwrap_err();
        assert!(matches!(err, SignError::Unsigned { .. }));
        let text = err.to_string();
        assert!(
            text.contains("k.pub") && text.contains(&g.key_id.to_string()),
            "{text}"
        );
    }

    #[test]
    fn another_keys_signature_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ours = pair(dir.path(), "ours", None);
        let theirs = pair(dir.path(), "theirs", None);
        let sig = sign(&theirs.secret, None, b"data", "c").unwrap();
        let err = verify(&ours.public, b"data", Some(&sig)).unwrap_err();
        match &err {
            SignError::WrongKey { key_id, signer, .. } => {
                assert_eq!(*key_id, ours.key_id);
                assert_eq!(*signer, theirs.key_id);
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains(&theirs.key_id.to_string()));
    }

    #[test]
    fn altered_bytes_or_comment_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let g = pair(dir.path(), "k", None);
        let sig = sign(&g.secret, None, b"{\"name\":\"a\"}", "ferry bundle a").unwrap();
        let err = verify(&g.public, b"{\"name\":\"b\"}", Some(&sig)).unwrap_err();
        assert!(matches!(err, SignError::Altered { .. }), "{err}");
        assert!(err.to_string().contains("altered"), "{err}");
        let text = String::from_utf8(sig).unwrap();
        let forged = text.replace(
            "trusted comment: ferry bundle a",
            "trusted comment: ferry bundle b",
        );
        let err = verify(&g.public, b"{\"name\":\"a\"}", Some(forged.as_bytes())).unwrap_err();
        assert!(matches!(err, SignError::Altered { .. }), "{err}");
    }

    #[test]
    fn garbage_signatures_and_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let g = pair(dir.path(), "k", None);
        let err = verify(&g.public, b"data", Some(b"not a signature")).unwrap_err();
        assert!(matches!(err, SignError::MalformedSignature { .. }), "{err}");
        assert!(err.to_string().contains("bundle.json.sig"), "{err}");
        let err = verify(&g.public, b"data", Some(&[0xff, 0xfe])).unwrap_err();
        assert!(matches!(err, SignError::MalformedSignature { .. }), "{err}");
        // A secret key where a public one belongs, and the reverse.
        let err = TrustedKey::load(&g.secret).unwrap_err();
        assert!(
            matches!(err, SignError::BadKeyFile { kind: "public", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("k.key"), "{err}");
        let err = SigningKey::load(&g.public, None).unwrap_err();
        assert!(
            matches!(err, SignError::BadKeyFile { kind: "secret", .. }),
            "{err}"
        );
        let err = TrustedKey::load(&dir.path().join("missing.pub")).unwrap_err();
        assert!(matches!(err, SignError::Io { .. }));
        assert!(err.to_string().contains("missing.pub"), "{err}");
    }

    #[test]
    fn signatures_are_deterministic_and_verify() {
        // Issue 15: signed bundles reproduce, so the same key, bytes and
        // comment give the same signature file; other bytes or another
        // comment give another one, and every one verifies.
        let dir = tempfile::tempdir().unwrap();
        let g = pair(dir.path(), "k", None);
        let a = sign(&g.secret, None, b"same", "c").unwrap();
        let b = sign(&g.secret, None, b"same", "c").unwrap();
        assert_eq!(a, b);
        let other_bytes = sign(&g.secret, None, b"other", "c").unwrap();
        let other_comment = sign(&g.secret, None, b"same", "d").unwrap();
        assert_ne!(a, other_bytes);
        assert_ne!(a, other_comment);
        assert!(verify(&g.public, b"same", Some(&a)).is_ok());
        assert!(verify(&g.public, b"other", Some(&other_bytes)).is_ok());
        assert!(verify(&g.public, b"same", Some(&other_comment)).is_ok());
        assert!(verify(&g.public, b"other", Some(&a)).is_err());
        // An encrypted key signs the same way once unlocked.
        let e = pair(dir.path(), "e", Some("pw"));
        let x = sign(&e.secret, Some("pw"), b"same", "c").unwrap();
        assert_eq!(x, sign(&e.secret, Some("pw"), b"same", "c").unwrap());
        assert!(verify(&e.public, b"same", Some(&x)).is_ok());
    }

    #[test]
    fn control_characters_never_reach_the_comment() {
        let c = bundle_comment("a\nb\r", &Digest::of(b""));
        assert!(!c.contains('\n') && !c.contains('\r'));
        assert!(c.starts_with("ferry bundle a?b? index sha256:"));
    }
}
