//! Arbitrary manifests and indexes, through [`manifest::parse`] and then
//! through the reader's descriptor and graph checks, by carrying them in a
//! bundle that is otherwise well formed.
//!
//! Input: one mode byte, then up to sixteen documents separated by `\n---\n`.
//! Document 0 is the bundle's item; the others are blobs it may reference.
//! Digests cannot be fuzzed into matching, so a document names a later one
//! by placeholder: `@N` becomes the digest (`sha256:…`) of document N and
//! `#N` its size in bytes (N one hex digit), for N greater than
//! the document's own number
//! (a placeholder naming itself or an earlier one stays as it is, and
//! dangles). So `{"digest":"@1","size":#1}` is a correct descriptor of
//! document 1 and `{"digest":"@1","size":7}` a mis-sized one.
//!
//! Mode byte:
//!
//! - bits 0-2: the media type document 0 is served as (the `served_as` of
//!   [`manifest::parse`] and document 0's declared media type): none, the
//!   four manifest types, `application/json`, the OCI empty type, or empty;
//! - bit 3: `ReadOptions::keep_going`;
//! - bit 4: documents that are not manifests stay out of the tar and are
//!   declared base blobs (a differential bundle);
//! - bit 5: the last child of every index is declared absent (left out by
//!   a platform filter), and a document that is such a child stays out of
//!   the tar.
//!
//! Every document is also parsed alone, as served with the selected media
//! type and with none, and what it lists is walked the way export does.

#![no_main]

use std::collections::HashSet;
use std::io::Read;

use ferry_bundle::craft::{raw_tar, RawEntry};
use ferry_bundle::manifest::{self, MediaType, Parsed};
use ferry_bundle::meta::{
    self, Absent, BaseBlob, BlobMeta, BundleMeta, IndexPin, Item, Kind, Role, FORMAT_VERSION,
};
use ferry_bundle::reader::{read_bundle, BlobFault, Head, ReadOptions, VisitResult, Visitor};
use ferry_bundle::Digest;
use libfuzzer_sys::fuzz_target;

const SERVED_AS: [Option<&str>; 8] = [
    None,
    Some(manifest::OCI_MANIFEST),
    Some(manifest::OCI_INDEX),
    Some(manifest::DOCKER_MANIFEST),
    Some(manifest::DOCKER_LIST),
    Some("application/json"),
    Some(manifest::OCI_EMPTY),
    Some(""),
];

const SEPARATOR: &[u8] = b"\n---\n";
const MAX_DOCS: usize = 16;

fn split_docs(bytes: &[u8]) -> Vec<&[u8]> {
    let mut docs = Vec::new();
    let mut rest = bytes;
    while docs.len() + 1 < MAX_DOCS {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => {
                docs.push(&rest[..i]);
                rest = &rest[i + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    docs.push(rest);
    docs
}

/// `@N` → digest of `done[N]`, `#N` → its size, for the N that are done.
fn substitute(doc: &[u8], done: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(doc.len());
    let mut i = 0;
    while i < doc.len() {
        let b = doc[i];
        let n = doc.get(i + 1).and_then(|d| (*d as char).to_digit(16));
        if let (b'@' | b'#', Some(n)) = (b, n) {
            if let Some(Some(target)) = done.get(n as usize) {
                if b == b'@' {
                    out.extend_from_slice(Digest::of(target).to_string().as_bytes());
                } else {
                    out.extend_from_slice(target.len().to_string().as_bytes());
                }
                i += 2;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// What export does with a parsed manifest: walk what it lists.
fn walk(p: &Parsed) {
    let _ = p.is_index();
    for d in p.manifests.iter().chain(p.blobs()).chain(p.subject.iter()) {
        let _ = manifest::is_any_manifest(&d.media_type);
        if let Some(platform) = &d.platform {
            // Not asserted to match its own short form: a hostile index
            // may put `/` in a field (found by this target; harmless, as
            // filters are validated `os/arch[/variant]` and the short form
            // only labels).
            let _ = (platform.to_short(), platform.matches("linux/arm64/v8"));
        }
    }
}

struct Drain;

impl Visitor for Drain {
    fn head(&mut self, _head: &Head) -> VisitResult {
        Ok(())
    }
    fn manifest(&mut self, blob: &BlobMeta, bytes: &[u8]) -> VisitResult {
        // The reader parsed it with this media type already: so must we.
        let p = manifest::parse(bytes, blob.media_type.as_ref().map(AsRef::as_ref))
            .expect("a manifest the reader accepted does not parse");
        walk(&p);
        Ok(())
    }
    fn blob(&mut self, _blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        std::io::copy(data, &mut std::io::sink())?;
        Ok(())
    }
    fn blob_end(&mut self, _blob: &BlobMeta, _verdict: Result<(), &BlobFault>) -> VisitResult {
        Ok(())
    }
}

/// `FERRY_FUZZ_DEBUG=1 cargo +nightly fuzz run TARGET FILE` prints what
/// happened to one input (triage; off while fuzzing).
fn debug() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FERRY_FUZZ_DEBUG").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let served = SERVED_AS[(mode & 7) as usize];
    let keep_going = mode & 8 != 0;
    let base_blobs = mode & 16 != 0;
    let absent_last = mode & 32 != 0;

    let raw = split_docs(rest);
    let mut done: Vec<Option<Vec<u8>>> = vec![None; raw.len()];
    for i in (0..raw.len()).rev() {
        done[i] = Some(substitute(raw[i], &done));
    }
    let docs: Vec<Vec<u8>> = done.into_iter().flatten().collect();

    // Each document alone.
    let mut parsed: Vec<Option<Parsed>> = Vec::new();
    for doc in &docs {
        if let Ok(p) = manifest::parse(doc, served) {
            walk(&p);
        }
        let p = manifest::parse(doc, None).ok();
        if let Some(p) = &p {
            walk(p);
        }
        parsed.push(p);
    }

    // The bundle: document 0 the item, the others its blobs.
    let digests: Vec<Digest> = docs.iter().map(|d| Digest::of(d)).collect();
    let top_type = match (served, &parsed[0]) {
        (Some(s), _) if manifest::is_any_manifest(s) => Some(MediaType::from(s)),
        (_, Some(p)) => Some(p.media_type.clone()),
        (Some(s), None) => Some(MediaType::from(s)),
        (None, None) => None,
    };
    let mut absent = Vec::new();
    if absent_last {
        for (i, p) in parsed.iter().enumerate() {
            if let Some(last) = p.as_ref().and_then(|p| p.manifests.last()) {
                absent.push(Absent {
                    digest: last.digest.clone(),
                    parent: digests[i].clone(),
                    platform: last.platform.as_ref().map(|p| p.to_short()),
                });
            }
        }
    }
    let left_out: HashSet<&Digest> = absent.iter().map(|a| &a.digest).collect();
    let mut seen = HashSet::new();
    let mut manifests = Vec::new();
    let mut others = Vec::new();
    let mut base = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        if (i != 0 && left_out.contains(&digests[i])) || !seen.insert(digests[i].clone()) {
            continue;
        }
        let (role, media_type) = if i == 0 {
            match &top_type {
                Some(t) if manifest::is_index(t) => (Role::Index, Some(t.clone())),
                Some(t) if manifest::is_manifest(t) => (Role::Manifest, Some(t.clone())),
                t => (Role::Layer, t.clone()),
            }
        } else {
            match &parsed[i] {
                Some(p) if p.is_index() => (Role::Index, Some(p.media_type.clone())),
                Some(p) => (Role::Manifest, Some(p.media_type.clone())),
                None => (Role::Layer, Some("application/octet-stream".into())),
            }
        };
        let blob = BlobMeta {
            digest: digests[i].clone(),
            size: doc.len() as u64,
            role,
            media_type,
        };
        if role.is_manifest() {
            manifests.push((blob, doc));
        } else if base_blobs && i != 0 {
            base.push(BaseBlob {
                digest: blob.digest,
                size: blob.size,
                repository: None,
            });
        } else {
            others.push((blob, doc));
        }
    }
    let items = vec![Item {
        kind: Kind::Image,
        reference: "fuzz.example/graph:1".into(),
        digest: digests[0].clone(),
        media_type: top_type.unwrap_or_else(|| MediaType::from("")),
        size: docs[0].len() as u64,
        platforms: vec![],
        path: None,
        subject: None,
    }];
    let index = meta::index_json(&items);
    let blobs: Vec<(BlobMeta, &Vec<u8>)> = manifests.into_iter().chain(others).collect();
    let bundle_meta = BundleMeta {
        format_version: FORMAT_VERSION,
        tool: "ferry fuzz".into(),
        name: "fuzz".into(),
        index: IndexPin {
            digest: Digest::of(&index),
            size: index.len() as u64,
        },
        items,
        blobs: blobs.iter().map(|(b, _)| b.clone()).collect(),
        absent,
        base,
        verification: None,
        origin: None,
    };
    let mut entries = vec![
        RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        RawEntry::file(meta::META_PATH, &bundle_meta.to_json()),
        RawEntry::file("index.json", &index),
    ];
    for (b, doc) in &blobs {
        entries.push(RawEntry::file(&b.digest.layout_path(), doc));
    }
    let tar = raw_tar(&entries);
    let result = read_bundle(tar.as_slice(), ReadOptions { keep_going }, &mut Drain);
    if debug() {
        for (i, doc) in docs.iter().enumerate() {
            eprintln!("document {i}: {}", String::from_utf8_lossy(doc));
        }
        eprintln!(
            "bundle.json: {}",
            String::from_utf8_lossy(&bundle_meta.to_json())
        );
        eprintln!("mode {mode:#04x}: {result:#?}");
    }
    if let Ok(report) = &result {
        assert_eq!(
            report.good_items.len() + report.failed_items.len(),
            1,
            "the item is neither good nor failed"
        );
        if !keep_going {
            assert_eq!(report.good_items.len(), 1, "strict read with a failed item");
        }
    }
    if let Err(e) = &result {
        let _ = e.to_string();
    }
});
