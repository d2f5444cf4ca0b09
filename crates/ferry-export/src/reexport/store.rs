//! Re-export from a mirror store: every entry's origin re-checked, its
//! manifests re-hashed, the selection staged from `blobs/` and `files/`.

use super::*;

/// What a store entry is: the item it was imported for, as its origin
/// annotations say (re-checked), else (an entry an older ferry wrote) an
/// image named by the upstream the selection names or the store's path.
pub(super) struct EntryItem {
    pub(super) kind: Kind,
    pub(super) reference: String,
    pub(super) path: Option<String>,
}

/// Reads the store: every entry's origin (re-checked: the store is a file
/// tree anyone on the mirror host could edit), its manifest and the index
/// children it reaches, each re-hashed against its digest as read (a child
/// the store lacks was left out by a platform filter: it is recorded
/// absent), the files of file items in the store's file tree; then selects,
/// and stages the selected blobs (linked, or copied), each hashed.
pub(super) fn stage_store(
    dir: &Path,
    entries: &[StoreEntry],
    upstream: &HashMap<String, String>,
    selection: &Selection,
    blob_dir: &Path,
) -> Result<(Content, Resolved), ReexportError> {
    let mut manifests: HashMap<Digest, Bytes> = HashMap::new();
    let mut items: Vec<Item> = Vec::new();
    let mut absent: Vec<Absent> = Vec::new();
    let mut unannotated: Vec<String> = Vec::new();
    // The file-tree path of every file item's layer, each path claimed once.
    let mut in_tree: HashMap<Digest, PathBuf> = HashMap::new();
    let mut claims = Placements::new();
    for e in entries {
        let it = entry_item(e, upstream)?;
        if e.unannotated() {
            unannotated.push(e.shown());
        }
        let reference = it.reference;
        let bytes = read_store_manifest(dir, &e.digest)?;
        let parsed = parse(&bytes, &e.digest, &reference, Some(e.media_type.as_ref()))?;
        if let Some(path) = &it.path {
            let layers = claims
                .claim_item(it.kind, &reference, path, &parsed)
                .map_err(|err| ReexportError::Annotation {
                    entry: e.shown(),
                    reason: err.to_string(),
                })?;
            for (rel, d) in layers {
                in_tree.insert(d.digest, dir.join(FILES_DIR).join(rel.as_str()));
            }
        }
        let platforms = read_children(dir, e, &reference, &parsed, &mut manifests, &mut absent)?;
        let subject = e
            .tag
            .as_deref()
            .and_then(legacy_subject)
            .or_else(|| parsed.subject.as_ref().map(|s| s.digest.clone()));
        items.push(Item {
            kind: it.kind,
            reference,
            digest: e.digest.clone(),
            media_type: if parsed.media_type.as_ref().is_empty() {
                e.media_type.clone()
            } else {
                parsed.media_type.clone()
            },
            size: bytes.len() as u64,
            platforms,
            path: it.path,
            subject,
        });
        manifests.insert(e.digest.clone(), bytes);
    }
    absent.sort_by(|a, b| (&a.parent, &a.digest).cmp(&(&b.parent, &b.digest)));
    absent.dedup();
    let content = Content {
        origin: Origin {
            kind: OriginKind::Store,
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "store".into()),
            sha256: None,
            meta_sha256: None,
            tool: None,
        },
        items,
        manifests,
        absent,
        verification: None,
        unannotated,
    };
    let selected = select(&content.items, selection, dir)?;
    let resolved = to_resolved(&content, &selected)?;
    for d in needed_blobs(&resolved) {
        stage_store_blob(dir, &d, in_tree.get(&d), blob_dir)?;
    }
    Ok((content, resolved))
}

/// The item a store entry stands for. With origin annotations: all of
/// `dev.ferry.source` and `dev.ferry.kind` present, the kind one ferry
/// knows, the source a reference of that kind (`Item::check`, as a
/// bundle's items are checked) agreeing with the entry's tag or digest, the
/// path in its kind's place. Without any: an image, as before the
/// annotations existed.
pub(super) fn entry_item(
    e: &StoreEntry,
    upstream: &HashMap<String, String>,
) -> Result<EntryItem, ReexportError> {
    if e.unannotated() {
        let name = upstream
            .get(&e.repository)
            .cloned()
            .unwrap_or_else(|| e.repository.clone());
        let reference = match &e.tag {
            Some(t) => format!("{name}:{t}"),
            None => format!("{name}@{}", e.digest),
        };
        Reference::parse(&reference).map_err(|err| ReexportError::Reference {
            reference: reference.clone(),
            error: err.to_string(),
        })?;
        return Ok(EntryItem {
            kind: Kind::Image,
            reference,
            path: None,
        });
    }
    let refused = |key: &str, value: Option<&str>, why: String| ReexportError::Annotation {
        entry: e.shown(),
        reason: match value {
            Some(v) => format!("`{key}` = `{}` {why}", ferry_bundle::text::escape(v)),
            None => format!("`{key}` {why}"),
        },
    };
    let missing = "is missing while other origin annotations are present".to_string();
    let source = e
        .source
        .as_deref()
        .ok_or_else(|| refused(ANN_SOURCE, None, missing.clone()))?;
    let kind_text = e
        .kind
        .as_deref()
        .ok_or_else(|| refused(ANN_KIND, None, missing))?;
    let kind: Kind = serde_json::from_value(serde_json::Value::String(kind_text.to_string()))
        .map_err(|_| {
            refused(
                ANN_KIND,
                Some(kind_text),
                "is not a kind ferry knows".into(),
            )
        })?;
    let probe = Item {
        kind,
        reference: source.to_string(),
        digest: e.digest.clone(),
        media_type: manifest::OCI_MANIFEST.into(),
        size: 0,
        platforms: Vec::new(),
        path: None,
        subject: None,
    };
    probe
        .check()
        .map_err(|err| refused(ANN_SOURCE, Some(source), format!("is refused: {err}")))?;
    if kind.is_registry() {
        if e.repository.is_empty() {
            return Err(refused(
                ANN_KIND,
                Some(kind_text),
                "names a registry kind, but the entry has no repository".into(),
            ));
        }
        if let Ok(r) = Reference::parse(source) {
            // Import tags the entry with the source's tag (none: kept by
            // digest), and a source pinned by digest pins the entry's.
            let agrees = r.tag == e.tag && r.digest.as_ref().is_none_or(|d| d == &e.digest);
            if !agrees {
                return Err(refused(
                    ANN_SOURCE,
                    Some(source),
                    format!(
                        "does not name the entry's {}",
                        match &e.tag {
                            Some(t) => format!("tag `{}`", ferry_bundle::text::escape(t)),
                            None => format!("digest {}", e.digest),
                        }
                    ),
                ));
            }
        }
    }
    match (&e.path, kind.is_registry()) {
        (Some(p), _) => {
            check_path(kind, source, p)
                .map_err(|err| refused(ANN_PATH, Some(p), format!("is refused: {err}")))?;
        }
        (None, false) => {
            return Err(refused(
                ANN_PATH,
                None,
                format!("is missing: a {kind_text} item lands at a path"),
            ));
        }
        (None, true) => {}
    }
    Ok(EntryItem {
        kind,
        reference: source.to_string(),
        path: e.path.clone(),
    })
}

/// Reads the index children an entry reaches (each re-hashed) into
/// `manifests`; a child the store lacks is recorded in `absent`. Returns
/// the platforms present.
fn read_children(
    dir: &Path,
    e: &StoreEntry,
    reference: &str,
    top: &Parsed,
    manifests: &mut HashMap<Digest, Bytes>,
    absent: &mut Vec<Absent>,
) -> Result<Vec<String>, ReexportError> {
    let mut platforms: Vec<String> = Vec::new();
    let mut queue = vec![(e.digest.clone(), top.clone())];
    while let Some((parent, p)) = queue.pop() {
        for d in p.manifests.iter() {
            if !manifest::is_any_manifest(&d.media_type) {
                continue;
            }
            let platform = d.platform.as_ref().map(|x| x.to_short());
            if !store_path(dir, &d.digest).is_file() {
                absent.push(Absent {
                    digest: d.digest.clone(),
                    parent: parent.clone(),
                    platform,
                });
                continue;
            }
            platforms.extend(platform);
            let child = read_store_manifest(dir, &d.digest)?;
            let cp = parse(&child, &d.digest, reference, Some(d.media_type.as_ref()))?;
            manifests.insert(d.digest.clone(), child);
            queue.push((d.digest.clone(), cp));
        }
    }
    platforms.sort();
    platforms.dedup();
    Ok(platforms)
}

/// `sha256-<hex>.sig|.att|.sbom` (cosign's tags): the digest they belong to.
pub(super) fn legacy_subject(tag: &str) -> Option<Digest> {
    let rest = tag.strip_prefix("sha256-")?;
    let (hex, suffix) = rest.split_once('.')?;
    if !matches!(suffix, "sig" | "att" | "sbom") {
        return None;
    }
    Digest::from_hex(hex).ok()
}

fn store_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(d.hex())
}

/// A manifest of the store, bounded and re-hashed.
fn read_store_manifest(dir: &Path, d: &Digest) -> Result<Bytes, ReexportError> {
    let path = store_path(dir, d);
    let file = std::fs::File::open(&path).map_err(io("open", &path))?;
    let mut bytes = Vec::new();
    file.take(MANIFEST_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(io("read", &path))?;
    if bytes.len() as u64 > MANIFEST_LIMIT {
        return Err(ReexportError::Tampered {
            digest: d.clone(),
            path,
            reason: format!("is larger than a manifest may be ({MANIFEST_LIMIT} bytes)"),
        });
    }
    let got = Digest::of(&bytes);
    if &got != d {
        return Err(ReexportError::Tampered {
            digest: d.clone(),
            path,
            reason: format!("hashes to {got}"),
        });
    }
    Ok(Bytes::from(bytes))
}

/// Links (else copies) a store blob into the staging directory and hashes
/// the staged bytes: a blob altered in the store is refused here, named.
/// A blob the store's blob directory lacks is a file item's layer: read
/// from where the item put it in the file tree (`tree`).
fn stage_store_blob(
    dir: &Path,
    d: &Digest,
    tree: Option<&PathBuf>,
    blob_dir: &Path,
) -> Result<(), ReexportError> {
    let src = match (store_path(dir, d), tree) {
        (blob, Some(file)) if !blob.is_file() => file.clone(),
        (blob, _) => blob,
    };
    let dest = blob_dir.join(d.hex());
    if !src.is_file() {
        return Err(ReexportError::Tampered {
            digest: d.clone(),
            path: src,
            reason: "is missing".into(),
        });
    }
    if std::fs::hard_link(&src, &dest).is_err() {
        std::fs::copy(&src, &dest).map_err(io("copy", &src))?;
    }
    let file = std::fs::File::open(&dest).map_err(io("open", &dest))?;
    let mut hashing = HashingReader::new(std::io::BufReader::with_capacity(256 << 10, file));
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io("read", &src))?;
    let (got, _, _) = hashing.finish();
    if &got != d {
        let _ = std::fs::remove_file(&dest);
        return Err(ReexportError::Tampered {
            digest: d.clone(),
            path: src,
            reason: format!("hashes to {got}"),
        });
    }
    Ok(())
}
