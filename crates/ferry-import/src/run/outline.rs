//! What the registry side keeps of each manifest from the read to its
//! commit: its media type, its exact bytes (pushed as they are) and an
//! [`Outline`] of what the plan and the commit read of it (the children it
//! names, whether it is an index, its subject), instead of its parsed form.
//!
//! A parsed manifest keeps every descriptor whole (media types,
//! annotations, platforms, URLs) though the registry side reads only
//! digests, sizes and whether a child is a manifest: at 10,000 references
//! the parsed forms were 6.7 MB of the import's peak (issue 17). The file
//! side, which reads the descriptors themselves, keeps the parsed form of
//! its own items' manifests ([`for_files`]).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use ferry_bundle::manifest::{self, MediaType, Parsed};
use ferry_bundle::meta::{Item, Kind};
use ferry_bundle::Digest;

/// One child a manifest names: a config or layer blob, or an index's
/// entry (a manifest, or a blob).
pub(super) struct Child {
    /// Its digest.
    pub(super) digest: Digest,
    /// Its size in bytes.
    pub(super) size: u64,
    /// An index entry whose media type is a manifest's or an index's.
    pub(super) manifest: bool,
}

/// A manifest as the registry side holds it until its commit.
pub(super) struct Outline {
    /// The media type it came with.
    pub(super) media_type: MediaType,
    /// Its exact bytes (never re-serialised).
    pub(super) bytes: Bytes,
    /// An index (its children are its entries) or a manifest (its
    /// children are its config, then its layers).
    pub(super) index: bool,
    /// What it names, in document order.
    pub(super) children: Box<[Child]>,
    /// The digest of its `subject`, when it has one.
    pub(super) subject: Option<Digest>,
}

impl Outline {
    /// The outline of `parsed`, the parsed form of `bytes`.
    pub(super) fn new(media_type: MediaType, bytes: Bytes, parsed: &Parsed) -> Outline {
        let index = parsed.is_index();
        let children = match index {
            true => parsed
                .manifests
                .iter()
                .map(|c| Child {
                    digest: c.digest.clone(),
                    size: c.size,
                    manifest: manifest::is_any_manifest(&c.media_type),
                })
                .collect(),
            false => parsed
                .blobs()
                .map(|b| Child {
                    digest: b.digest.clone(),
                    size: b.size,
                    manifest: false,
                })
                .collect(),
        };
        Outline {
            media_type,
            bytes,
            index,
            children,
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
        }
    }

    /// A manifest (not an index) that names at least one blob.
    pub(super) fn names_blobs(&self) -> bool {
        !self.index && !self.children.is_empty()
    }
}

/// Every manifest of the bundle by digest, outlined. Boxed: the table's
/// slots (and its spare ones, which stay once the commit lets manifests
/// go) are then a key and a pointer.
pub(super) type Outlines = HashMap<Digest, Box<Outline>>;

/// The manifests whose parsed form the file side reads: those of the items
/// it plans (a `path`) and of charts (their archive is checked whatever
/// the target).
pub(super) fn for_files(items: &[Item]) -> HashSet<Digest> {
    items
        .iter()
        .filter(|i| i.path.is_some() || i.kind == Kind::Chart)
        .map(|i| i.digest.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outline(text: &str, media_type: &str) -> Outline {
        let bytes = Bytes::from(text.to_string());
        let parsed = manifest::parse(&bytes, Some(media_type)).unwrap();
        Outline::new(MediaType::from(media_type), bytes, &parsed)
    }

    #[test]
    fn a_manifest_outlines_its_config_then_its_layers_and_its_subject() {
        let (c, l, s) = (Digest::of(b"c"), Digest::of(b"l"), Digest::of(b"s"));
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{m}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":3}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":7,"annotations":{{"a":"b"}}}}],"subject":{{"mediaType":"{m}","digest":"{s}","size":9}}}}"#,
            m = manifest::OCI_MANIFEST
        );
        let o = outline(&text, manifest::OCI_MANIFEST);
        assert!(!o.index && o.names_blobs());
        let children: Vec<(&Digest, u64, bool)> = o
            .children
            .iter()
            .map(|c| (&c.digest, c.size, c.manifest))
            .collect();
        assert_eq!(children, vec![(&c, 3, false), (&l, 7, false)]);
        assert_eq!(o.subject, Some(s));
        assert_eq!(o.bytes, text.as_bytes(), "the exact bytes are kept");
        assert_eq!(o.media_type.as_ref(), manifest::OCI_MANIFEST);
    }

    #[test]
    fn an_index_outlines_which_entries_are_manifests() {
        let (m, b) = (Digest::of(b"m"), Digest::of(b"b"));
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{i}","manifests":[{{"mediaType":"{mm}","digest":"{m}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}},{{"mediaType":"application/octet-stream","digest":"{b}","size":6}}]}}"#,
            i = manifest::OCI_INDEX,
            mm = manifest::OCI_MANIFEST
        );
        let o = outline(&text, manifest::OCI_INDEX);
        assert!(o.index && !o.names_blobs(), "an index names manifests");
        let children: Vec<(&Digest, u64, bool)> = o
            .children
            .iter()
            .map(|c| (&c.digest, c.size, c.manifest))
            .collect();
        assert_eq!(children, vec![(&m, 5, true), (&b, 6, false)]);
        assert_eq!(o.subject, None);
    }
}
