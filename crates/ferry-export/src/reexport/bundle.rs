//! Re-export from a bundle: the verified bundle read again, its selection
//! staged as it streams.

use super::*;

/// Reads the verified bundle again: the head must be the verified one
/// (same `bundle.json` bytes); manifests are kept; once they are all in
/// (the bundle puts them first), the selection is made and its blobs are
/// staged as they stream, each renamed into place only once the reader
/// found it matches its digest. The whole stream is hashed for the origin.
pub(super) fn stage_bundle(
    path: &Path,
    verified: &Head,
    selection: &Selection,
    blob_dir: &Path,
) -> Result<(Content, Resolved), ReexportError> {
    let src = ferry_bundle::parts::open_bundle(path).map_err(|e| ReexportError::Io {
        op: "open",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut hashing = HashingReader::new(src);
    let mut stager = Stager {
        path,
        verified_meta: verified.meta_sha256.clone(),
        selection,
        blob_dir,
        head: None,
        manifests: HashMap::new(),
        chosen: None,
        open: None,
        failed: None,
    };
    let read = read_bundle(
        std::io::BufReader::with_capacity(1 << 20, &mut hashing),
        ReadOptions::default(),
        &mut stager,
    );
    if let Some(e) = stager.failed.take() {
        return Err(e);
    }
    read.map_err(|source| ReexportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // What the tar did not consume (padding, the end of the last part).
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io("read", path))?;
    let (sha256, _, _) = hashing.finish();
    let head = stager.head.take().ok_or_else(|| ReexportError::Changed {
        path: path.to_path_buf(),
    })?;
    if stager.chosen.is_none() {
        // No blob followed the manifests: select now.
        stager.choose();
        if let Some(e) = stager.failed.take() {
            return Err(e);
        }
    }
    let (_, resolved, _) = stager.chosen.take().ok_or_else(|| ReexportError::Changed {
        path: path.to_path_buf(),
    })?;
    let content = Content {
        origin: Origin {
            kind: OriginKind::Bundle,
            name: head.meta.name.clone(),
            sha256: Some(sha256),
            meta_sha256: Some(head.meta_sha256.clone()),
            tool: Some(head.meta.tool.clone()),
        },
        items: head.meta.items.clone(),
        manifests: std::mem::take(&mut stager.manifests),
        absent: head.meta.absent.clone(),
        verification: head.meta.verification.clone(),
        unannotated: Vec::new(),
    };
    Ok((content, resolved))
}

/// The visitor of the second read.
struct Stager<'a> {
    path: &'a Path,
    verified_meta: Digest,
    selection: &'a Selection,
    blob_dir: &'a Path,
    head: Option<Head>,
    manifests: HashMap<Digest, Bytes>,
    /// The selection, its resolution and the blobs to stage.
    chosen: Option<(Vec<Item>, Resolved, BTreeSet<Digest>)>,
    /// The blob being staged.
    open: Option<StagedBlob>,
    /// Why the read was stopped.
    failed: Option<ReexportError>,
}

#[derive(Debug)]
struct Stop;
impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("re-export stopped")
    }
}
impl std::error::Error for Stop {}

impl Stager<'_> {
    fn fail(&mut self, e: ReexportError) -> VisitResult {
        self.failed = Some(e);
        Err(Box::new(Stop))
    }

    /// Selects once the manifests are in.
    fn choose(&mut self) {
        let Some(head) = &self.head else { return };
        let content = Content {
            origin: Origin {
                kind: OriginKind::Bundle,
                name: String::new(),
                sha256: None,
                meta_sha256: None,
                tool: None,
            },
            items: Vec::new(),
            manifests: std::mem::take(&mut self.manifests),
            absent: head.meta.absent.clone(),
            verification: None,
            unannotated: Vec::new(),
        };
        let r = select(&head.meta.items, self.selection, self.path).and_then(|items| {
            let resolved = to_resolved(&content, &items)?;
            let needed = needed_blobs(&resolved);
            Ok((items, resolved, needed))
        });
        self.manifests = content.manifests;
        match r {
            Ok(c) => self.chosen = Some(c),
            Err(e) => self.failed = Some(e),
        }
    }
}

impl ferry_bundle::reader::Visitor for Stager<'_> {
    fn head(&mut self, head: &Head) -> VisitResult {
        if head.meta_sha256 != self.verified_meta {
            let e = ReexportError::Changed {
                path: self.path.to_path_buf(),
            };
            return self.fail(e);
        }
        self.head = Some(head.clone());
        Ok(())
    }
    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult {
        self.manifests
            .insert(blob.digest.clone(), Bytes::copy_from_slice(bytes));
        Ok(())
    }
    fn blob(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        if self.chosen.is_none() {
            self.choose();
            if self.failed.is_some() {
                return Err(Box::new(Stop));
            }
        }
        let wanted = self
            .chosen
            .as_ref()
            .is_some_and(|(_, _, n)| n.contains(&blob.digest));
        if !wanted {
            return Ok(());
        }
        // The reader hashes it: the staged copy is only counted.
        let staging = BlobDir::scratch(self.blob_dir);
        match staging
            .stage_verified(&blob.digest, blob.size)
            .and_then(|mut s| s.copy_from(&mut *data).map(|_| s))
        {
            Ok(staged) => self.open = Some(staged),
            Err(e) => return self.fail(io("stage", self.blob_dir)(std::io::Error::other(e))),
        }
        Ok(())
    }
    fn blob_end(&mut self, blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        let Some(staged) = self.open.take() else {
            return Ok(());
        };
        if verdict.is_err() {
            return Ok(()); // dropped: removed
        }
        if let Err(e) = staged.commit() {
            let dest = self.blob_dir.join(blob.digest.hex());
            return self.fail(io("rename", &dest)(std::io::Error::other(e)));
        }
        Ok(())
    }
}
