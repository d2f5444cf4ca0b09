//! File kinds as OCI artifacts.
//!
//! A Falco driver, an OpenSearch plugin zip, the falcoctl index or a plain
//! file travels as an OCI artifact: a manifest with the empty config, an
//! `artifactType` per kind, and one layer per file, each with the
//! `org.opencontainers.image.title` annotation giving its file name. The
//! item's `dev.ferry.path` is the path of the main file on the file server;
//! every layer lands beside it under its title. A Helm chart is Helm's own
//! OCI layout (config + chart layer, no title): its layer lands at the path.
//!
//! The manifest bytes are deterministic (sorted keys, no timestamps), so the
//! same file gives the same digest on every export. Layer media types are
//! `oci_spec`'s [`MediaType`]; the `artifactType` strings are ferry's own.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::manifest::{Descriptor, MediaType, Parsed, OCI_EMPTY, OCI_MANIFEST};
use crate::meta::Kind;
use crate::relpath::{RelPath, RelPathError};
use crate::Digest;

/// The layer annotation that names a file.
pub const ANN_TITLE: &str = oci_spec::image::ANNOTATION_TITLE;
/// Manifest annotation: where the file was fetched from.
pub const ANN_SOURCE_URL: &str = "dev.ferry.url";
/// The empty config's bytes (`{}`).
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// Helm's media types (chart layer, provenance layer, config).
pub use crate::chart::{
    CHART_LAYER_MEDIA_TYPE as HELM_CHART_LAYER, CONFIG_MEDIA_TYPE as HELM_CONFIG,
    PROVENANCE_MEDIA_TYPE as HELM_PROV_LAYER,
};

/// The `artifactType` ferry gives a file kind.
pub fn artifact_type(kind: Kind) -> &'static str {
    match kind {
        Kind::FalcoDriver => "application/vnd.dev.ferry.falco.driver.v1",
        Kind::FalcoctlIndex => "application/vnd.dev.ferry.falcoctl.index.v1",
        Kind::OpensearchPlugin => "application/vnd.dev.ferry.opensearch.plugin.v1",
        _ => "application/vnd.dev.ferry.file.v1",
    }
}

/// One file of an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayer {
    /// sha256 of the bytes.
    pub digest: Digest,
    /// Size.
    pub size: u64,
    /// Layer media type.
    pub media_type: MediaType,
    /// File name (no `/`).
    pub title: String,
}

/// The manifest bytes of a file artifact.
pub fn file_manifest(
    kind: Kind,
    layers: &[FileLayer],
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| {
            json!({
                "mediaType": l.media_type,
                "digest": l.digest.to_string(),
                "size": l.size,
                "annotations": { ANN_TITLE: l.title },
            })
        })
        .collect();
    let mut doc = Map::new();
    doc.insert("schemaVersion".into(), json!(2));
    doc.insert("mediaType".into(), json!(OCI_MANIFEST));
    doc.insert("artifactType".into(), json!(artifact_type(kind)));
    doc.insert(
        "config".into(),
        json!({
            "mediaType": OCI_EMPTY,
            "digest": Digest::of(EMPTY_CONFIG).to_string(),
            "size": EMPTY_CONFIG.len(),
        }),
    );
    doc.insert("layers".into(), Value::Array(layers));
    if !annotations.is_empty() {
        doc.insert("annotations".into(), json!(annotations));
    }
    serde_json::to_vec(&Value::Object(doc)).unwrap_or_default()
}

/// Where each layer of a file item lands: `(path, layer)`. `path` is the
/// item's `dev.ferry.path`. Layers with a title land beside it under their
/// title; a Helm chart layer lands at `path`, its provenance at `path.prov`;
/// other untitled layers are not files and are skipped.
pub fn file_layers(
    path: &RelPath,
    manifest: &Parsed,
) -> Result<Vec<(RelPath, Descriptor)>, RelPathError> {
    let mut out = Vec::new();
    for l in &manifest.layers {
        let dest = match l.annotations.get(ANN_TITLE) {
            Some(title) => {
                if title.contains('/') {
                    return Err(RelPathError {
                        path: title.escape_debug().to_string(),
                        reason: "a layer title must be a file name",
                    });
                }
                path.sibling(title)?
            }
            None if l.media_type.as_ref() == HELM_CHART_LAYER => path.clone(),
            None if l.media_type.as_ref() == HELM_PROV_LAYER => {
                path.sibling(&format!("{}.prov", path.file_name()))?
            }
            None => continue,
        };
        out.push((dest, l.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_manifests_are_deterministic_and_map_titles_to_paths() {
        let zip = FileLayer {
            digest: Digest::of(b"zip"),
            size: 3,
            media_type: "application/zip".into(),
            title: "repository-s3-2.8.0.zip".into(),
        };
        let sum = FileLayer {
            digest: Digest::of(b"sum"),
            size: 3,
            media_type: "text/plain".into(),
            title: "repository-s3-2.8.0.zip.sha512".into(),
        };
        let ann = BTreeMap::from([(ANN_SOURCE_URL.to_string(), "https://x/y.zip".to_string())]);
        let a = file_manifest(Kind::OpensearchPlugin, &[zip.clone(), sum.clone()], &ann);
        assert_eq!(a, file_manifest(Kind::OpensearchPlugin, &[zip, sum], &ann));
        let parsed = crate::manifest::parse(&a, None).unwrap();
        assert_eq!(
            parsed.artifact_type_str(),
            Some(artifact_type(Kind::OpensearchPlugin))
        );
        let path =
            RelPath::new("opensearch/plugins/repository-s3/2.8.0/repository-s3-2.8.0.zip").unwrap();
        let files = file_layers(&path, &parsed).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].0, path);
        assert_eq!(
            files[1].0.as_str(),
            "opensearch/plugins/repository-s3/2.8.0/repository-s3-2.8.0.zip.sha512"
        );
    }

    #[test]
    fn hostile_titles_are_refused() {
        let bad = FileLayer {
            digest: Digest::of(b"x"),
            size: 1,
            media_type: "application/octet-stream".into(),
            title: "../../etc/passwd".into(),
        };
        let m = file_manifest(Kind::File, &[bad], &BTreeMap::new());
        let parsed = crate::manifest::parse(&m, None).unwrap();
        let path = RelPath::new("files/a").unwrap();
        assert!(file_layers(&path, &parsed).is_err());
    }
}
