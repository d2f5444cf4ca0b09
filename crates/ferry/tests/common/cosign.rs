//! Cosign signatures made by openssl for the signature-policy suites: an
//! ECDSA P-256 key pair, and a `sha256-<hex>.sig` manifest pushed for a
//! subject (the simple-signing payload, signed).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use bytes::Bytes;
use ferry_bundle::Digest;
use ferry_registry::{Client, Repo};
use serde_json::json;

pub fn openssl(args: &[&str]) -> Vec<u8> {
    let o = Command::new("openssl").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// An ECDSA P-256 key pair made by openssl: (private, public PEM path).
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-pubout",
        "-in",
        private.to_str().unwrap(),
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, public)
}

/// `openssl dgst -sha256 -sign` over `data` (DER ECDSA signature).
pub fn sign(dir: &Path, private: &Path, data: &[u8]) -> Vec<u8> {
    let input = dir.join("payload.tmp");
    std::fs::write(&input, data).unwrap();
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        private.to_str().unwrap(),
        input.to_str().unwrap(),
    ])
}

/// Pushes a cosign `sha256-<hex>.sig` manifest for `subject` in `repo`: one
/// simple-signing payload naming `names`, signed with `private`.
pub async fn push_signature(
    client: &Client,
    repo: &Repo,
    dir: &Path,
    private: &Path,
    subject: &Digest,
    names: &Digest,
) {
    let payload = serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{}", repo.host, repo.path)},
            "image": {"docker-manifest-digest": names.to_string()},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .unwrap();
    let signature = sign(dir, private, &payload);
    let config = b"{}".to_vec();
    for blob in [&payload, &config] {
        client
            .upload_blob(repo, &Digest::of(blob), Bytes::from(blob.clone()))
            .await
            .unwrap();
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(&config).to_string(), "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": Digest::of(&payload).to_string(),
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": base64::engine::general_purpose::STANDARD.encode(&signature)},
        }],
    }))
    .unwrap();
    client
        .put_manifest(
            repo,
            &format!("sha256-{}.sig", subject.hex()),
            "application/vnd.oci.image.manifest.v1+json",
            Bytes::from(manifest),
        )
        .await
        .unwrap();
}
