//! `ferry import BUNDLE --archives DIR`: the first node, before any registry
//! exists.
//!
//! For every image of a bundle, one OCI image layout as a tar
//! (`DIR/<reference>.tar`) that a node's runtime loads directly, with the
//! upstream manifest bytes and digests intact:
//!
//! - containerd: `ctr -n k8s.io images import FILE` (the image is named by
//!   the `io.containerd.image.name` annotation);
//! - k3s / RKE2: copied into the agent's `images/` directory
//!   (`/var/lib/rancher/k3s/agent/images/`, `/var/lib/rancher/rke2/agent/images/`),
//!   which imports every `*.tar` at start;
//! - podman: `podman load -i FILE` (named by `org.opencontainers.image.ref.name`,
//!   which holds the full reference; the OCI image-spec grammar allows it).
//!
//! A multi-arch index keeps its exact bytes (so `image@sha256:<index>` pins
//! still resolve); with platforms given, only those children and their blobs
//! are carried, and the runtime's default import (current platform only)
//! loads it.
//!
//! The bundle is read once, as a stream, with every check `ferry verify`
//! makes. Blobs are written into every archive that needs them as they
//! stream past; each archive is a temporary file beside its final name until
//! the whole bundle has verified, and then all are renamed in one go: exit 1
//! means no archive was written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use ferry_bundle::digest::Digest;
use ferry_bundle::manifest::{self, MediaType, Parsed, OCI_INDEX};
use ferry_bundle::meta::{BlobMeta, Kind};
use ferry_bundle::parts::{open_bundle, PartsError};
use ferry_bundle::reader::{
    read_bundle, BlobFault, BundleError, Head, ReadOptions, VisitResult, Visitor,
};
use ferry_bundle::sign::{SignError, TrustedKey};

/// The containerd annotation naming an image in an archive's `index.json`.
pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI image-spec annotation naming a reference in `index.json`.
pub const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What to write.
#[derive(Debug, Clone, Default)]
pub struct ArchiveOptions {
    /// The bundle (file, parts manifest or first part).
    pub bundle: PathBuf,
    /// Where the archives go (created if missing).
    pub dir: PathBuf,
    /// Keep only these platforms of every index (`linux/amd64`, …); empty
    /// keeps every platform the bundle carries.
    pub platforms: Vec<String>,
    /// Refuse the bundle unless signed by this key.
    pub key: Option<TrustedKey>,
}

/// One archive written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// The image's source reference (the name runtimes give it).
    pub reference: String,
    /// Its top manifest or index digest (upstream's).
    pub digest: Digest,
    /// The archive file.
    pub path: PathBuf,
    /// The platforms it carries (empty for a single manifest).
    pub platforms: Vec<String>,
    /// Its size in bytes.
    pub size: u64,
}

/// Why no archive was written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The bundle could not be opened.
    #[error("failed to open the bundle `{path}`")]
    Open {
        /// The bundle path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: PartsError,
    },
    /// The bundle is not intact (what `ferry verify` would say).
    #[error("the bundle `{path}` is not intact")]
    Bundle {
        /// The bundle path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: BundleError,
    },
    /// A part of a split bundle is bad.
    #[error("the bundle `{path}` is not intact")]
    Part {
        /// The bundle path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: PartsError,
    },
    /// The signature does not verify against `--key`.
    #[error("the bundle's signature does not verify")]
    Signature(#[source] SignError),
    /// An image cannot be written as an archive.
    #[error("cannot write an archive for `{reference}`: {reason}")]
    Image {
        /// The image's reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// Two images would be written to one file.
    #[error("`{first}` and `{second}` would both be written to `{file}`")]
    Collision {
        /// One reference.
        first: String,
        /// The other.
        second: String,
        /// The file name.
        file: String,
    },
    /// The bundle carries no image.
    #[error("the bundle carries no image to write as an archive")]
    NoImages,
    /// A file could not be written.
    #[error("failed to write `{path}`")]
    Write {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// The archive file name for `reference`: every character outside
/// `[A-Za-z0-9._-]` becomes `_`, then `.tar`.
pub fn file_name(reference: &str) -> String {
    let mut s: String = reference
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Never a dot-file, never `..`.
    if s.starts_with('.') {
        s.insert(0, '_');
    }
    s.push_str(".tar");
    s
}

/// One archive being written.
struct Open {
    reference: String,
    top: Digest,
    top_media_type: MediaType,
    platforms: Vec<String>,
    /// Manifests (top first, then kept children) to add at the end.
    manifests: Vec<Digest>,
    /// Blobs still expected from the stream.
    pending: HashSet<Digest>,
    final_path: PathBuf,
    temp: tempfile::NamedTempFile,
    out: Option<BufWriter<File>>,
    written: u64,
}

impl Open {
    fn out(&mut self) -> Result<&mut BufWriter<File>, std::io::Error> {
        self.out
            .as_mut()
            .ok_or_else(|| std::io::Error::other("archive already finished"))
    }

    /// A tar header for `path`: the one ferry's bundle writer makes.
    fn header_for(&mut self, path: &str, size: u64) -> std::io::Result<()> {
        let h = ferry_bundle::writer::header(path, size, false);
        self.out()?.write_all(h.as_bytes())?;
        self.written += 512;
        Ok(())
    }

    fn header(&mut self, digest: &Digest, size: u64) -> std::io::Result<()> {
        self.header_for(&digest.layout_path(), size)
    }

    fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out()?.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, size: u64) -> std::io::Result<()> {
        let rem = (512 - size % 512) % 512;
        self.data(&vec![0u8; rem as usize])
    }

    fn entry(&mut self, digest: &Digest, bytes: &[u8]) -> std::io::Result<()> {
        self.named(&digest.layout_path(), bytes)
    }

    fn named(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.header_for(name, bytes.len() as u64)?;
        self.data(bytes)?;
        self.pad(bytes.len() as u64)
    }
}

struct ArchiveVisitor<'a> {
    opts: &'a ArchiveOptions,
    head: Option<Head>,
    manifests: HashMap<Digest, (MediaType, Vec<u8>)>,
    archives: Vec<Open>,
    /// Which archives need each blob.
    wanted: HashMap<Digest, Vec<usize>>,
    planned: bool,
}

/// The children of an index to keep, with their platforms.
fn keep_children<'p>(
    parsed: &'p Parsed,
    have: &HashMap<Digest, (MediaType, Vec<u8>)>,
    platforms: &[String],
) -> Vec<&'p manifest::Descriptor> {
    parsed
        .manifests
        .iter()
        .filter(|d| have.contains_key(&d.digest))
        .filter(|d| {
            platforms.is_empty()
                || d.platform
                    .as_ref()
                    .is_some_and(|p| platforms.iter().any(|f| p.matches(f)))
        })
        .collect()
}

impl ArchiveVisitor<'_> {
    fn plan(&mut self) -> Result<(), ArchiveError> {
        self.planned = true;
        let Some(head) = &self.head else {
            return Ok(());
        };
        let images: Vec<_> = head
            .meta
            .items
            .iter()
            .filter(|i| i.kind == Kind::Image && i.subject.is_none())
            .cloned()
            .collect();
        if images.is_empty() {
            return Err(ArchiveError::NoImages);
        }
        std::fs::create_dir_all(&self.opts.dir).map_err(write_err(&self.opts.dir))?;
        let in_bundle: HashSet<&Digest> = head.meta.blobs.iter().map(|b| &b.digest).collect();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for item in images {
            let image_err = |reason: String| ArchiveError::Image {
                reference: item.reference.clone(),
                reason,
            };
            let file = file_name(&item.reference);
            if let Some(first) = names.insert(file.clone(), item.reference.clone()) {
                return Err(ArchiveError::Collision {
                    first,
                    second: item.reference.clone(),
                    file,
                });
            }
            let (media_type, bytes) =
                self.manifests.get(&item.digest).cloned().ok_or_else(|| {
                    image_err(format!("its manifest {} is not in the bundle", item.digest))
                })?;
            let parsed = manifest::parse(&bytes, Some(media_type.as_ref()))
                .map_err(|e| image_err(format!("manifest {}: {e}", item.digest)))?;
            let mut manifests = vec![item.digest.clone()];
            let mut blobs: Vec<&manifest::Descriptor> = Vec::new();
            let mut platforms = Vec::new();
            let children: Vec<(Digest, Parsed)>;
            if parsed.is_index() {
                let kept = keep_children(&parsed, &self.manifests, &self.opts.platforms);
                if kept.is_empty() {
                    return Err(image_err(if self.opts.platforms.is_empty() {
                        "the bundle carries none of its platforms".to_string()
                    } else {
                        format!(
                            "the bundle carries none of the platforms {} for it (it carries {})",
                            self.opts.platforms.join(", "),
                            item.platforms.join(", ")
                        )
                    }));
                }
                let mut c = Vec::new();
                for d in kept {
                    if let Some(p) = &d.platform {
                        platforms.push(p.to_short());
                    }
                    let (mt, b) = &self.manifests[&d.digest];
                    let child = manifest::parse(b, Some(mt.as_ref()))
                        .map_err(|e| image_err(format!("manifest {}: {e}", d.digest)))?;
                    if child.is_index() {
                        return Err(image_err(format!(
                            "{} is an index inside an index, which runtimes do not load",
                            d.digest
                        )));
                    }
                    manifests.push(d.digest.clone());
                    c.push((d.digest.clone(), child));
                }
                children = c;
            } else {
                children = Vec::new();
                blobs.extend(parsed.blobs());
            }
            for (_, child) in &children {
                blobs.extend(child.blobs());
            }
            let mut pending = HashSet::new();
            for b in blobs {
                if !in_bundle.contains(&b.digest) {
                    return Err(image_err(format!(
                        "blob {} is not in the bundle (a differential bundle carries only what the mirror lacked; archives need a full one)",
                        b.digest
                    )));
                }
                pending.insert(b.digest.clone());
            }
            let final_path = self.opts.dir.join(&file);
            let temp = tempfile::Builder::new()
                .prefix(".ferry-archive-")
                .tempfile_in(&self.opts.dir)
                .map_err(write_err(&self.opts.dir))?;
            let out = temp.reopen().map_err(write_err(temp.path()))?;
            let idx = self.archives.len();
            for d in &pending {
                self.wanted.entry(d.clone()).or_default().push(idx);
            }
            self.archives.push(Open {
                reference: item.reference.clone(),
                top: item.digest.clone(),
                top_media_type: media_type,
                platforms,
                manifests,
                pending,
                final_path,
                temp,
                out: Some(BufWriter::with_capacity(256 * 1024, out)),
                written: 0,
            });
        }
        Ok(())
    }

    fn stream(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> Result<(), ArchiveError> {
        let Some(targets) = self.wanted.get(&blob.digest).cloned() else {
            return Ok(());
        };
        for &i in &targets {
            let a = &mut self.archives[i];
            a.header(&blob.digest, blob.size)
                .map_err(write_err(a.temp.path()))?;
        }
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = data.read(&mut buf).map_err(|source| ArchiveError::Bundle {
                path: self.opts.bundle.clone(),
                source: BundleError::Read {
                    at: format!("blob {}", blob.digest),
                    source,
                },
            })?;
            if n == 0 {
                break;
            }
            total += n as u64;
            for &i in &targets {
                let a = &mut self.archives[i];
                a.data(&buf[..n]).map_err(write_err(a.temp.path()))?;
            }
        }
        if total != blob.size {
            return Err(ArchiveError::Image {
                reference: self.archives[targets[0]].reference.clone(),
                reason: format!("blob {} is {total} bytes, not {}", blob.digest, blob.size),
            });
        }
        for &i in &targets {
            let a = &mut self.archives[i];
            a.pad(blob.size).map_err(write_err(a.temp.path()))?;
            a.pending.remove(&blob.digest);
        }
        Ok(())
    }
}

impl Visitor for ArchiveVisitor<'_> {
    fn head(&mut self, head: &Head) -> VisitResult {
        if let Some(key) = &self.opts.key {
            key.verify_prehashed(&head.meta_prehash, head.signature.as_deref())
                .map_err(|e| Box::new(ArchiveError::Signature(e)) as Box<_>)?;
        }
        self.head = Some(head.clone());
        Ok(())
    }

    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult {
        let media_type = blob
            .media_type
            .clone()
            .unwrap_or_else(|| MediaType::from(""));
        self.manifests
            .insert(blob.digest.clone(), (media_type, bytes.to_vec()));
        Ok(())
    }

    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        if !self.planned {
            self.plan().map_err(Box::new)?;
        }
        self.stream(blob, data).map_err(|e| Box::new(e) as Box<_>)
    }

    fn blob_end(&mut self, _blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        // Without keep_going the reader stops at a bad blob itself.
        verdict.map_err(|f| format!("blob {}: {}", f.digest, f.reason).into())
    }
}

/// Writes one archive per image of the bundle (see the module docs). All or
/// nothing: on any error no archive is left in `opts.dir`.
pub fn write_archives(opts: &ArchiveOptions) -> Result<Vec<Archive>, ArchiveError> {
    let mut src = open_bundle(&opts.bundle).map_err(|source| ArchiveError::Open {
        path: opts.bundle.clone(),
        source,
    })?;
    let mut visitor = ArchiveVisitor {
        opts,
        head: None,
        manifests: HashMap::new(),
        archives: Vec::new(),
        wanted: HashMap::new(),
        planned: false,
    };
    let read = read_bundle(
        std::io::BufReader::with_capacity(1 << 20, &mut src),
        ReadOptions { keep_going: false },
        &mut visitor,
    );
    if let Err(e) = read {
        return Err(match e {
            BundleError::Visitor(inner) => match inner.downcast::<ArchiveError>() {
                Ok(a) => *a,
                Err(other) => ArchiveError::Bundle {
                    path: opts.bundle.clone(),
                    source: BundleError::Visitor(other),
                },
            },
            source => match src.diagnose() {
                Some(part) => ArchiveError::Part {
                    path: opts.bundle.clone(),
                    source: part,
                },
                None => ArchiveError::Bundle {
                    path: opts.bundle.clone(),
                    source,
                },
            },
        });
    }
    src.finish().map_err(|source| ArchiveError::Part {
        path: opts.bundle.clone(),
        source,
    })?;
    // A bundle of manifests only (no blob entry) is planned here.
    if !visitor.planned {
        visitor.plan()?;
    }
    finish(visitor)
}

fn finish(mut v: ArchiveVisitor<'_>) -> Result<Vec<Archive>, ArchiveError> {
    let mut done = Vec::new();
    for mut a in std::mem::take(&mut v.archives) {
        if let Some(missing) = a.pending.iter().next() {
            return Err(ArchiveError::Image {
                reference: a.reference.clone(),
                reason: format!("blob {missing} never came in the bundle"),
            });
        }
        for d in a.manifests.clone() {
            let (_, bytes) = &v.manifests[&d];
            a.entry(&d, bytes).map_err(write_err(a.temp.path()))?;
        }
        let top = &v.manifests[&a.top].1;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": a.top_media_type,
                "digest": a.top.to_string(),
                "size": top.len(),
                "annotations": {
                    CONTAINERD_IMAGE_NAME: a.reference,
                    OCI_REF_NAME: a.reference,
                },
            }],
        });
        let index = serde_json::to_vec(&index).map_err(|e| write_err(a.temp.path())(e.into()))?;
        let layout = serde_json::to_vec(&serde_json::json!({"imageLayoutVersion": "1.0.0"}))
            .map_err(|e| write_err(a.temp.path())(e.into()))?;
        a.named("oci-layout", &layout)
            .and_then(|_| a.named("index.json", &index))
            .and_then(|_| a.data(&[0u8; 1024]))
            .map_err(write_err(a.temp.path()))?;
        let mut out = a.out.take().ok_or_else(|| {
            write_err(a.temp.path())(std::io::Error::other("archive already finished"))
        })?;
        out.flush()
            .and_then(|_| out.get_ref().sync_all())
            .map_err(write_err(a.temp.path()))?;
        done.push(a);
    }
    // Everything verified and written: publish all at once (and take back
    // what was published if a rename fails half-way).
    let mut written: Vec<Archive> = Vec::new();
    for a in done {
        let size = a.written;
        if let Err(e) = a.temp.persist(&a.final_path) {
            for w in &written {
                let _ = std::fs::remove_file(&w.path);
            }
            return Err(write_err(&a.final_path)(e.error));
        }
        written.push(Archive {
            reference: a.reference,
            digest: a.top,
            path: a.final_path,
            platforms: a.platforms,
            size,
        });
    }
    if let Ok(d) = File::open(&v.opts.dir) {
        let _ = d.sync_all();
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_flat_and_never_dot_files() {
        assert_eq!(
            file_name("docker.io/library/nginx:1.27"),
            "docker.io_library_nginx_1.27.tar"
        );
        assert_eq!(
            file_name("127.0.0.1:5000/a/b@sha256:ab"),
            "127.0.0.1_5000_a_b_sha256_ab.tar"
        );
        assert_eq!(file_name("../x"), "_.._x.tar");
        assert!(!file_name("a/../../etc/passwd").contains('/'));
    }
}
