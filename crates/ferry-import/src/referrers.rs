//! The OCI referrers fallback tag (distribution-spec 1.1, "referrers tag
//! schema"): on a registry without the referrers API, the referrers of a
//! manifest are listed in an image index tagged `sha256-<subject hex>`,
//! which every client that adds a referrer reads, extends and pushes again.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use ferry_bundle::manifest::OCI_INDEX;
use ferry_bundle::Digest;

/// A fallback index that cannot be read or extended.
#[derive(Debug, thiserror::Error)]
#[error("referrers fallback tag {tag}: {reason}")]
pub struct FallbackError {
    /// The tag (`sha256-<hex>`).
    pub tag: String,
    /// What is wrong.
    pub reason: String,
}

/// The descriptor the referrers API (and so the fallback index) gives a
/// referrer: media type, digest, size, `artifactType` (else the config's
/// media type) and the manifest's own annotations.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    let doc: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let mut d = Map::new();
    d.insert("mediaType".into(), json!(media_type));
    d.insert("digest".into(), json!(Digest::of(bytes).to_string()));
    d.insert("size".into(), json!(bytes.len()));
    let artifact_type = doc
        .get("artifactType")
        .and_then(Value::as_str)
        .or_else(|| doc.pointer("/config/mediaType").and_then(Value::as_str));
    if let Some(t) = artifact_type {
        d.insert("artifactType".into(), json!(t));
    }
    if let Some(a) = doc
        .get("annotations")
        .filter(|a| a.as_object().is_some_and(|o| !o.is_empty()))
    {
        d.insert("annotations".into(), a.clone());
    }
    Value::Object(d)
}

/// The fallback index for `subject` after adding `add` to `existing` (the
/// bytes the tag holds now, if any): every descriptor once, sorted by
/// digest, so the same set always gives the same bytes. Descriptors already
/// listed are kept as they are. `None` when nothing changes.
pub fn merged(
    subject: &Digest,
    existing: Option<&[u8]>,
    add: &[Value],
) -> Result<Option<Vec<u8>>, FallbackError> {
    let bad = |reason: String| FallbackError {
        tag: subject.fallback_tag(),
        reason,
    };
    let mut by_digest: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(bytes) = existing {
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("the index there is not JSON ({e})")))?;
        let list = doc
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("what the tag holds is not an image index".into()))?;
        for d in list {
            let Some(digest) = d.get("digest").and_then(Value::as_str) else {
                return Err(bad("a descriptor there has no digest".into()));
            };
            by_digest
                .entry(digest.to_string())
                .or_insert_with(|| d.clone());
        }
    }
    let before = by_digest.len();
    for d in add {
        let Some(digest) = d.get("digest").and_then(Value::as_str) else {
            continue;
        };
        by_digest
            .entry(digest.to_string())
            .or_insert_with(|| d.clone());
    }
    if existing.is_some() && by_digest.len() == before {
        return Ok(None);
    }
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": by_digest.into_values().collect::<Vec<_>>(),
    });
    serde_json::to_vec(&doc)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referrer(n: u8) -> (Vec<u8>, Value) {
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x-{n}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[],"annotations":{{"n":"{n}"}}}}"#
        )
        .into_bytes();
        let d = descriptor("application/vnd.oci.image.manifest.v1+json", &bytes);
        (bytes, d)
    }

    #[test]
    fn descriptor_carries_artifact_type_and_annotations() {
        let (bytes, d) = referrer(1);
        assert_eq!(d["digest"], json!(Digest::of(&bytes).to_string()));
        assert_eq!(d["size"], json!(bytes.len()));
        assert_eq!(d["artifactType"], json!("application/x-1"));
        assert_eq!(d["annotations"]["n"], json!("1"));
        // Without artifactType, the config's media type stands in.
        let legacy = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.dev.cosign.x","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
        let d = descriptor("application/vnd.oci.image.manifest.v1+json", legacy);
        assert_eq!(d["artifactType"], json!("application/vnd.dev.cosign.x"));
        assert!(d.get("annotations").is_none());
    }

    #[test]
    fn merge_keeps_what_is_there_sorts_by_digest_and_is_deterministic() {
        let subject = Digest::of(b"subject");
        let (_, a) = referrer(1);
        let (_, b) = referrer(2);
        let (_, c) = referrer(3);
        let first = merged(&subject, None, &[b.clone(), a.clone()])
            .unwrap()
            .unwrap();
        // The same set in another order gives the same bytes.
        assert_eq!(
            merged(&subject, None, &[a.clone(), b.clone(), a.clone()])
                .unwrap()
                .unwrap(),
            first
        );
        let doc: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(doc["mediaType"], json!(OCI_INDEX));
        let digests: Vec<&str> = doc["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap())
            .collect();
        let mut sorted = digests.clone();
        sorted.sort();
        assert_eq!(digests, sorted);
        assert_eq!(digests.len(), 2);
        // Nothing new: no push.
        assert_eq!(
            merged(&subject, Some(&first), std::slice::from_ref(&a)).unwrap(),
            None
        );
        // Another client's entry stays; ours joins it.
        let foreign = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":7,"artifactType":"x/foreign"}]}"#;
        let out = merged(&subject, Some(foreign), &[c]).unwrap().unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        let list = doc["manifests"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["artifactType"], json!("x/foreign"));
        assert_eq!(list[1]["artifactType"], json!("application/x-3"));
        // Something else under the tag is an error that names it.
        let e = merged(&subject, Some(b"{\"layers\":[]}"), &[a]).unwrap_err();
        assert!(e.to_string().contains(&subject.fallback_tag()), "{e}");
    }
}
