//! `ferry verify` and `ferry inspect` as library operations: one verifying
//! read of a bundle (a file, a parts manifest or a first part), with every
//! check import makes before anything lands, and a report the caller
//! renders. Nothing is printed.
//!
//! ```text
//! bundle ──read_bundle (layout, tar, pins, every blob hashed and sized, graphs)──▶ Report
//!   ├─ --key: the signature over ferry/bundle.json, before anything past the head
//!   ├─ content re-checks (chart archives, plugin sha512)   [content]
//!   └─ image signatures re-verified offline (--policy, else the carried policy) [trust]
//! one part alone (a USB stick before it is carried) ──▶ its size and sha256 against the parts manifest
//! inspect ──▶ the head and the manifests only: items and the bytes each reaches
//! ```

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_bundle::manifest::{self, Parsed};
use ferry_bundle::meta::{BlobMeta, Item};
use ferry_bundle::parts::{
    locate_part, open_bundle, BundlePath, BundleSource, LocatedPart, PartsError,
};
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, Report, VisitResult, Visitor,
};
use ferry_bundle::sign::{SignError, TrustedKey, Verified};
use ferry_bundle::Digest;
use ferry_trust::VerifySpec;

use crate::content::ContentChecks;
use crate::trust::{RecheckError, SignatureCollector, TrustReport};

/// Progress of a verifying read.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The head is read: this many blob bytes follow.
    Start {
        /// Blob bytes the bundle lists.
        bytes: u64,
    },
    /// A blob or manifest was read.
    Read {
        /// Its size.
        bytes: u64,
    },
}

/// Where progress goes.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A signature policy given by the operator (`--policy FILE`).
#[derive(Debug, Clone)]
pub struct GivenPolicy {
    /// Its `verify:` section.
    pub spec: VerifySpec,
    /// The directory its paths are relative to.
    pub base: PathBuf,
    /// The file.
    pub file: PathBuf,
}

impl GivenPolicy {
    /// Loads `--policy FILE` (refused before any bundle is read).
    pub fn load(file: &Path) -> Result<GivenPolicy, RecheckError> {
        let (spec, base) = crate::trust::load_policy_file(file)?;
        Ok(GivenPolicy {
            spec,
            base,
            file: file.to_path_buf(),
        })
    }

    /// The form [`crate::trust`] takes.
    pub fn as_parts(&self) -> (&VerifySpec, &Path, &Path) {
        (&self.spec, self.base.as_path(), self.file.as_path())
    }
}

/// What to check beyond the bundle's own integrity.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The signature over `ferry/bundle.json` must verify with this key.
    pub key: Option<TrustedKey>,
    /// Re-verify image signatures against this policy file (`--policy`;
    /// else the policy the bundle carries, if any). Loaded once the bundle
    /// is open, before it is read.
    pub policy: Option<PathBuf>,
}

/// A bundle that verified.
#[derive(Debug)]
pub struct VerifyReport {
    /// What the read checked.
    pub read: Report,
    /// The head (`bundle.json` and its signature; `index.json`'s
    /// descriptors, checked against `bundle.json` by the read, are not kept).
    pub head: Head,
    /// The signature that verified with [`VerifyOptions::key`].
    pub signature: Option<Verified>,
    /// The bundle's size on disk (all parts).
    pub size: u64,
    /// A split bundle: its parts manifest and how many parts.
    pub split: Option<(PathBuf, usize)>,
    /// The offline image-signature check, when a policy applied.
    pub policy: Option<TrustReport>,
}

/// Why a bundle failed verification (nothing may be loaded from it).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A split bundle's manifest or a part is bad (named).
    #[error(transparent)]
    Parts(#[from] PartsError),
    /// The bundle stream failed a check.
    #[error("bundle `{}` failed verification", .path.display())]
    Bundle {
        /// The bundle.
        path: PathBuf,
        /// What failed.
        #[source]
        source: BundleError,
    },
    /// The signature does not verify with the trusted key.
    #[error("bundle `{}` failed verification", .path.display())]
    Signature {
        /// The bundle.
        path: PathBuf,
        /// Why.
        #[source]
        source: SignError,
    },
    /// Items fail the checks export made (chart archives, plugin sha512).
    #[error("bundle `{}` failed verification: {} item(s) fail the checks export made:\n{}", .path.display(), .failures.len(), .failures.iter().map(|(r, w)| format!("{r}: {w}")).collect::<Vec<_>>().join("\n"))]
    Content {
        /// The bundle.
        path: PathBuf,
        /// reference → why, per item.
        failures: std::collections::BTreeMap<String, String>,
    },
    /// The image signatures do not satisfy the policy.
    #[error(transparent)]
    Policy(#[from] RecheckError),
    /// The stream ended before a head.
    #[error("bundle has no head")]
    NoHead,
}

impl VerifyError {
    /// The bundle file is cut short (copy it again).
    pub fn is_truncation(&self) -> bool {
        matches!(self, VerifyError::Bundle { source, .. } if source.is_truncation())
    }
}

/// The visitor of both reads: keeps the head and the manifests it needs,
/// feeds the content re-checks and the signature collector.
struct Reading {
    progress: Option<ProgressFn>,
    head: Option<Head>,
    /// The manifests kept, parsed: every one for `inspect` (it sums what
    /// each item reaches); for `verify`, only the items' whose content is
    /// checked again ([`ContentChecks::reads_manifest`]), the others are
    /// checked by the reader and not kept (they grow with the references).
    manifests: HashMap<Digest, Parsed>,
    /// `verify`: the manifests to keep (`None`: `inspect`, all of them).
    keep: Option<HashSet<Digest>>,
    stop_after_manifests: bool,
    /// A `--policy` was given: the signature collector is fed even when
    /// the bundle carries no policy (it keeps nothing otherwise).
    policy_given: bool,
    key: Option<TrustedKey>,
    verified: Option<Verified>,
    content: Option<ContentChecks>,
    signatures: SignatureCollector,
}

#[derive(Debug)]
struct Enough;
impl std::fmt::Display for Enough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped after the manifests")
    }
}
impl std::error::Error for Enough {}

impl Reading {
    fn new(key: Option<TrustedKey>, progress: Option<ProgressFn>, stop: bool) -> Reading {
        Reading {
            progress,
            head: None,
            manifests: HashMap::new(),
            keep: None,
            stop_after_manifests: stop,
            policy_given: false,
            key,
            verified: None,
            content: None,
            signatures: SignatureCollector::default(),
        }
    }

    fn report(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(p);
        }
    }
}

impl Visitor for Reading {
    fn head(&mut self, head: &Head) -> VisitResult {
        if let Some(key) = &self.key {
            self.verified =
                Some(key.verify_prehashed(&head.meta_prehash, head.signature.as_deref())?);
        }
        if !self.stop_after_manifests {
            self.report(Progress::Start {
                bytes: head.meta.blob_bytes(),
            });
        }
        // Without a policy to apply, the collector is not fed: it would
        // keep every item's manifest for nothing.
        if self.policy_given || head.meta.verification.is_some() {
            self.signatures.head(&head.meta);
        }
        if !self.stop_after_manifests {
            self.keep = Some(
                head.meta
                    .items
                    .iter()
                    .filter(|i| ContentChecks::reads_manifest(i))
                    .map(|i| i.digest.clone())
                    .collect(),
            );
        }
        let mut head = head.clone();
        if !self.stop_after_manifests {
            // The reader checked index.json against bundle.json; the report
            // does not need it again, and it grows with the references.
            head.index = Arc::default();
        }
        self.head = Some(head);
        Ok(())
    }
    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult {
        self.report(Progress::Read { bytes: blob.size });
        self.signatures.manifest(blob, bytes);
        if self
            .keep
            .as_ref()
            .is_some_and(|k| !k.contains(&blob.digest))
        {
            return Ok(());
        }
        if let Ok(p) = manifest::parse(bytes, blob.media_type.as_ref().map(AsRef::as_ref)) {
            self.manifests.insert(blob.digest.clone(), p);
        }
        Ok(())
    }
    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        if self.stop_after_manifests {
            return Err(Box::new(Enough));
        }
        if self.content.is_none() {
            if let Some(h) = &self.head {
                self.content = Some(ContentChecks::plan(&h.meta.items, &self.manifests));
            }
        }
        if self.signatures.wants(&blob.digest) {
            // Small signature blobs: read once, handed to both checks.
            let mut bytes = Vec::with_capacity(blob.size as usize);
            data.take(ferry_trust::MAX_ARTIFACT_BLOB)
                .read_to_end(&mut bytes)?;
            if let Some(c) = &mut self.content {
                c.consume(blob, &mut std::io::Cursor::new(&bytes))?;
            }
            self.signatures.blob(blob, bytes);
        } else if let Some(c) = &mut self.content {
            c.consume(blob, data)?;
        }
        Ok(())
    }
    fn blob_end(&mut self, blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        self.report(Progress::Read { bytes: blob.size });
        if verdict.is_err() {
            self.signatures.blob_failed(&blob.digest);
        }
        Ok(())
    }
    /// Verify holds no blob's bytes until its verdict (a failure stops the
    /// read), so the reader may hash large blobs on several threads, where
    /// that pays (3 cores or more).
    fn late_verdicts(&self) -> bool {
        ferry_bundle::reader::workers_pay()
    }
}

/// After `read_bundle` failed on `src`: a bad part explains it better than
/// what the bad bytes decoded to; a refused signature is the cause itself.
fn read_failure(src: &mut BundleSource, path: &Path, e: BundleError) -> VerifyError {
    if let Some(p) = src.diagnose() {
        return VerifyError::Parts(p);
    }
    match e {
        BundleError::Visitor(v) => match v.downcast::<SignError>() {
            Ok(sig) => VerifyError::Signature {
                path: path.to_path_buf(),
                source: *sig,
            },
            Err(v) => VerifyError::Bundle {
                path: path.to_path_buf(),
                source: BundleError::Visitor(v),
            },
        },
        source => VerifyError::Bundle {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// `path` names one part to check alone: a part other than the first, or
/// a first part with none of the others beside it. Returns the part and
/// the names of the parts not beside it; `None` when `path` is a bundle
/// (a file, a parts manifest, or a first part with some of the others: a
/// missing one is then named by [`verify`]).
pub fn lone_part(path: &Path) -> Result<Option<(LocatedPart, Vec<String>)>, PartsError> {
    if !matches!(BundlePath::of(path), BundlePath::Part { .. }) {
        return Ok(None);
    }
    let located = locate_part(path)?;
    let missing = located.missing_others();
    let alone = !missing.is_empty() && missing.len() + 1 == located.manifest.parts.len();
    if located.index != 0 || alone {
        return Ok(Some((located, missing)));
    }
    Ok(None)
}

/// Verifies the bundle at `path` in one read (blocking: run it on a
/// blocking thread): every entry, pin, blob and graph; the signature with
/// [`VerifyOptions::key`]; import's content re-checks; the image
/// signatures against the given or carried policy.
pub fn verify(
    path: &Path,
    opts: &VerifyOptions,
    progress: Option<ProgressFn>,
) -> Result<VerifyReport, VerifyError> {
    let mut src = open_bundle(path)?;
    let size = src.size();
    let split = src.parts().map(|(p, m)| (p.to_path_buf(), m.parts.len()));
    // A bad --policy file is refused before the bundle is read.
    let given = opts.policy.as_deref().map(GivenPolicy::load).transpose()?;
    let mut v = Reading::new(opts.key.clone(), progress, false);
    v.policy_given = given.is_some();
    let read = match read_bundle(
        std::io::BufReader::with_capacity(1 << 20, &mut src),
        ReadOptions::default(),
        &mut v,
    ) {
        // The tar ends before the stream does: check the parts to their last byte.
        Ok(r) => {
            src.finish()?;
            r
        }
        Err(e) => return Err(read_failure(&mut src, path, e)),
    };
    let head = v.head.ok_or(VerifyError::NoHead)?;
    let failures = v.content.map(|c| c.finish()).unwrap_or_default();
    if !failures.is_empty() {
        return Err(VerifyError::Content {
            path: path.to_path_buf(),
            failures,
        });
    }
    let policy = v
        .signatures
        .decide(given.as_ref().map(GivenPolicy::as_parts))?;
    Ok(VerifyReport {
        read,
        head,
        signature: v.verified,
        size,
        split,
        policy,
    })
}

/// What `ferry inspect` shows: the head and, per item, the unique bytes it
/// reaches (absent platform children left out).
#[derive(Debug)]
pub struct Inspection {
    /// The head.
    pub head: Head,
    /// Each item with its bytes, in `bundle.json` order.
    pub items: Vec<(Item, u64)>,
}

/// Reads the bundle's head and manifests only (blocking); no blob is
/// verified (that is [`verify`]).
pub fn inspect(path: &Path) -> Result<Inspection, VerifyError> {
    let mut src = open_bundle(path)?;
    let mut v = Reading::new(None, None, true);
    match read_bundle(
        std::io::BufReader::new(&mut src),
        ReadOptions::default(),
        &mut v,
    ) {
        Ok(_) => {}
        Err(BundleError::Visitor(e)) if e.is::<Enough>() => {}
        Err(e) => return Err(read_failure(&mut src, path, e)),
    }
    let head = v.head.ok_or(VerifyError::NoHead)?;
    let items = item_sizes(&head, &v.manifests);
    Ok(Inspection { head, items })
}

/// Unique bytes reachable from each item.
fn item_sizes(head: &Head, manifests: &HashMap<Digest, Parsed>) -> Vec<(Item, u64)> {
    let sizes: HashMap<&Digest, u64> = head
        .meta
        .blobs
        .iter()
        .map(|b| (&b.digest, b.size))
        .collect();
    let absent: HashSet<(&Digest, &Digest)> = head
        .meta
        .absent
        .iter()
        .map(|x| (&x.parent, &x.digest))
        .collect();
    let mut rows = Vec::new();
    for item in &head.meta.items {
        let mut seen = HashSet::new();
        let mut stack = vec![item.digest.clone()];
        let mut total = 0u64;
        while let Some(d) = stack.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            total += sizes.get(&d).copied().unwrap_or(0);
            if let Some(p) = manifests.get(&d) {
                for c in &p.manifests {
                    if !absent.contains(&(&d, &c.digest)) {
                        stack.push(c.digest.clone());
                    }
                }
                for b in p.blobs() {
                    stack.push(b.digest.clone());
                }
            }
        }
        rows.push((item.clone(), total));
    }
    rows
}
