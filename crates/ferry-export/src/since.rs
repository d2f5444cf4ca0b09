//! `--since`: the blobs the other side already holds, left out of a delta
//! bundle and listed as its base.
//!
//! ```text
//! receipt (import --receipt) ──▶ every blob per repository at the target
//! lock (the last bundle's)   ──▶ every config and layer of the manifests it pins (fetched by digest)
//! several files              ──▶ what every destination holds (a blob any one lacks travels)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ferry_bundle::lock::{Lock, LockError};
use ferry_bundle::receipt::Receipt;
use ferry_bundle::{manifest, Digest, Reference};
use ferry_registry::Client;

/// The blobs the other side holds, each with a repository there that has
/// it when known (from a receipt).
pub type Base = HashMap<Digest, Option<String>>;

/// Why a `--since` file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SinceError {
    /// The file cannot be read.
    #[error("--since: failed to read `{}`: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not JSON.
    #[error("--since: `{}` is not a receipt or lock file: {error}", .path.display())]
    NotJson {
        /// The file.
        path: PathBuf,
        /// Why.
        error: serde_json::Error,
    },
    /// A receipt that does not parse.
    #[error("--since: invalid receipt `{}`: {error}", .path.display())]
    Receipt {
        /// The file.
        path: PathBuf,
        /// Why.
        error: serde_json::Error,
    },
    /// JSON that is neither format.
    #[error("--since: `{}` is neither a receipt (receiptVersion) nor a lock file (lockVersion)", .path.display())]
    Neither {
        /// The file.
        path: PathBuf,
    },
    /// A lock file that does not load.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A manifest the lock pins cannot be fetched (network or registry).
    #[error("--since: cannot read {reference}@{digest} named by `{}`: {error}", .path.display())]
    Fetch {
        /// The lock entry.
        reference: String,
        /// The manifest.
        digest: Digest,
        /// The lock file.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// A lock file given to a re-export, which reaches no registry.
    #[error("--since: `{}` is a lock file; a re-export (--from) reads no registry, give the destination's receipt (import --receipt)", .path.display())]
    LockOffline {
        /// The file.
        path: PathBuf,
    },
    /// A manifest the lock pins does not parse.
    #[error("--since: {reference}@{digest}: {error}")]
    Manifest {
        /// The lock entry.
        reference: String,
        /// The manifest.
        digest: Digest,
        /// Why.
        error: String,
    },
}

impl SinceError {
    /// Network or registry trouble (exit 2), not a bad file.
    pub fn is_environment(&self) -> bool {
        matches!(self, SinceError::Fetch { .. })
    }
}

/// The blobs every destination holds, one receipt or lock per destination:
/// a blob travels unless all of them have it. A repository hint is kept
/// only when every destination names the same one.
pub async fn load(paths: &[PathBuf], client: &Client) -> Result<Base, SinceError> {
    let mut out: Option<Base> = None;
    for p in paths {
        let base = load_one(p, client).await?;
        out = Some(match out {
            None => base,
            Some(acc) => intersect(acc, &base),
        });
    }
    Ok(out.unwrap_or_default())
}

/// What two destinations both hold; the repository hint survives only
/// when both name the same one.
fn intersect(mut acc: Base, other: &Base) -> Base {
    acc.retain(|d, _| other.contains_key(d));
    for (d, repo) in acc.iter_mut() {
        if other.get(d) != Some(repo) {
            *repo = None;
        }
    }
    acc
}

/// One destination's blobs, from a receipt (with the repository holding
/// each) or from a lock (every config and layer of the manifests it pins,
/// fetched from the source by digest).
pub async fn load_one(path: &Path, client: &Client) -> Result<Base, SinceError> {
    match read_since(path)? {
        SinceFile::Receipt(r) => Ok(from_receipt(&r)),
        SinceFile::Lock => {
            let lock = Lock::load(path)?;
            from_lock(&lock, path, client).await
        }
    }
}

/// `--since` for a re-export (`export --from`), which reaches no network:
/// receipts only (a lock's blobs would have to be read upstream).
pub fn load_offline(paths: &[PathBuf]) -> Result<Base, SinceError> {
    let mut out: Option<Base> = None;
    for p in paths {
        let base = match read_since(p)? {
            SinceFile::Receipt(r) => from_receipt(&r),
            SinceFile::Lock => return Err(SinceError::LockOffline { path: p.clone() }),
        };
        out = Some(match out {
            None => base,
            Some(acc) => intersect(acc, &base),
        });
    }
    Ok(out.unwrap_or_default())
}

/// A `--since` file: a receipt (parsed), or a lock file (loaded by its own reader).
enum SinceFile {
    Receipt(Receipt),
    Lock,
}

fn read_since(path: &Path) -> Result<SinceFile, SinceError> {
    let bytes = std::fs::read(path).map_err(|error| SinceError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|error| SinceError::NotJson {
            path: path.to_path_buf(),
            error,
        })?;
    if v.get("receiptVersion").is_some() {
        let r: Receipt = serde_json::from_value(v).map_err(|error| SinceError::Receipt {
            path: path.to_path_buf(),
            error,
        })?;
        return Ok(SinceFile::Receipt(r));
    }
    if v.get("lockVersion").is_none() {
        return Err(SinceError::Neither {
            path: path.to_path_buf(),
        });
    }
    Ok(SinceFile::Lock)
}

/// Every blob of every repository a receipt lists.
pub fn from_receipt(r: &Receipt) -> Base {
    let mut base = Base::new();
    for (repo, content) in &r.repositories {
        for d in &content.blobs {
            base.entry(d.clone()).or_insert_with(|| Some(repo.clone()));
        }
    }
    base
}

async fn from_lock(lock: &Lock, path: &Path, client: &Client) -> Result<Base, SinceError> {
    let mut base = Base::new();
    for e in lock.entries() {
        let Ok(r) = Reference::parse(&e.reference) else {
            continue; // file kinds always travel
        };
        let repo = ferry_registry::Repo {
            host: r.registry.clone(),
            path: r.repository.clone(),
        };
        let mut queue = vec![e.digest.clone()];
        queue.extend(e.platforms.iter().map(|p| p.digest.clone()));
        while let Some(d) = queue.pop() {
            let m = client
                .get_manifest(&repo, &d.to_string())
                .await
                .map_err(|err| SinceError::Fetch {
                    reference: e.reference.clone(),
                    digest: d.clone(),
                    path: path.to_path_buf(),
                    error: err.to_string(),
                })?;
            let parsed = manifest::parse(&m.bytes, Some(&m.media_type)).map_err(|err| {
                SinceError::Manifest {
                    reference: e.reference.clone(),
                    digest: d.clone(),
                    error: err.to_string(),
                }
            })?;
            for b in parsed.blobs() {
                base.insert(b.digest.clone(), None);
            }
        }
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_bundle::receipt::{RepoContent, RECEIPT_VERSION};

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn receipt(repos: &[(&str, &[u8])]) -> Receipt {
        Receipt {
            receipt_version: RECEIPT_VERSION,
            target: "t".into(),
            bundle: "b".into(),
            repositories: repos
                .iter()
                .map(|(r, blobs)| {
                    (
                        r.to_string(),
                        RepoContent {
                            blobs: blobs.iter().map(|n| d(*n)).collect(),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            files: Default::default(),
        }
    }

    #[test]
    fn a_blob_any_destination_lacks_travels() {
        let a = from_receipt(&receipt(&[("app", &[1, 2, 3])]));
        let b = from_receipt(&receipt(&[("app", &[2]), ("other", &[3, 4])]));
        let both = intersect(a, &b);
        assert_eq!(both.len(), 2, "{both:?}");
        // Same repository at both: kept; different ones: no hint.
        assert_eq!(both.get(&d(2)), Some(&Some("app".to_string())));
        assert_eq!(both.get(&d(3)), Some(&None));
        assert!(!both.contains_key(&d(1)) && !both.contains_key(&d(4)));
    }

    #[tokio::test]
    async fn receipts_on_disk_are_read_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, bad) = (
            dir.path().join("a.json"),
            dir.path().join("b.json"),
            dir.path().join("bad.json"),
        );
        std::fs::write(&a, receipt(&[("app", &[1, 2])]).to_json()).unwrap();
        std::fs::write(&b, receipt(&[("app", &[2, 3])]).to_json()).unwrap();
        std::fs::write(&bad, b"{\"hello\": 1}").unwrap();
        let client = Client::new(ferry_registry::ClientConfig::default()).unwrap();
        let base = load(&[a.clone(), b], &client).await.unwrap();
        assert_eq!(base.keys().collect::<Vec<_>>(), vec![&d(2)]);
        let e = load(&[a, bad.clone()], &client).await.unwrap_err();
        assert!(matches!(e, SinceError::Neither { .. }), "{e}");
        assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
    }
}
