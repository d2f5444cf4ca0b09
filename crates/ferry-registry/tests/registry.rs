//! The client against a real `docker-registry` 2.8.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use bytes::Bytes;
use ferry_bundle::digest::Digest;
use ferry_bundle::manifest::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use ferry_registry::{Client, ClientConfig, Error};
use futures_util::StreamExt;

use common::{bytes_of, fast_config, files_in, registry};

fn client() -> Client {
    Client::new(fast_config()).unwrap()
}

const CONFIG_JSON: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

/// A manifest with unusual (but valid) formatting, so a re-serialisation
/// anywhere would change its digest.
fn image_manifest(
    media_type: &str,
    config_type: &str,
    config: &[u8],
    layer_type: &str,
    layer: &[u8],
) -> Bytes {
    Bytes::from(format!(
        "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"{media_type}\",\n   \"config\": {{\"mediaType\": \"{config_type}\", \"size\": {}, \"digest\": \"{}\"}},\n   \"layers\": [ {{\"mediaType\": \"{layer_type}\", \"size\": {}, \"digest\": \"{}\"}} ]\n}}\n",
        config.len(),
        Digest::of(config),
        layer.len(),
        Digest::of(layer),
    ))
}

#[tokio::test]
async fn ping_answers_for_a_running_registry() {
    let reg = registry();
    client().ping(&reg.host()).await.unwrap();
}

#[tokio::test]
async fn oci_manifest_referencing_uploaded_blobs_round_trips_byte_exact() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/oci");
    let layer = bytes_of(300_000, 1);
    c.upload_blob(
        &repo,
        &Digest::of(CONFIG_JSON),
        Bytes::from_static(CONFIG_JSON),
    )
    .await
    .unwrap();
    c.upload_blob(&repo, &Digest::of(&layer), Bytes::from(layer.clone()))
        .await
        .unwrap();
    let m = image_manifest(
        OCI_MANIFEST,
        "application/vnd.oci.image.config.v1+json",
        CONFIG_JSON,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &layer,
    );
    let d = c
        .put_manifest(&repo, "v1", OCI_MANIFEST, m.clone())
        .await
        .unwrap();
    assert_eq!(d, Digest::of(&m));

    let by_tag = c.get_manifest(&repo, "v1").await.unwrap();
    assert_eq!(by_tag.bytes, m, "the registry must serve the exact bytes");
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    assert_eq!(by_tag.digest, d);

    let by_digest = c.get_manifest(&repo, &d.to_string()).await.unwrap();
    assert_eq!(by_digest.bytes, m);

    let head = c.head_manifest(&repo, "v1").await.unwrap();
    assert_eq!(
        head,
        Some((d.clone(), OCI_MANIFEST.to_string(), m.len() as u64))
    );
}

#[tokio::test]
async fn docker_schema2_manifest_round_trips_byte_exact() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/docker");
    let layer = bytes_of(10_000, 2);
    c.upload_blob(
        &repo,
        &Digest::of(CONFIG_JSON),
        Bytes::from_static(CONFIG_JSON),
    )
    .await
    .unwrap();
    c.upload_blob(&repo, &Digest::of(&layer), Bytes::from(layer.clone()))
        .await
        .unwrap();
    let m = image_manifest(
        DOCKER_MANIFEST,
        "application/vnd.docker.container.image.v1+json",
        CONFIG_JSON,
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        &layer,
    );
    let d = c
        .put_manifest(&repo, "v1", DOCKER_MANIFEST, m.clone())
        .await
        .unwrap();
    let got = c.get_manifest(&repo, "v1").await.unwrap();
    assert_eq!(got.bytes, m);
    assert_eq!(got.media_type, DOCKER_MANIFEST);
    assert_eq!(got.digest, d);
}

#[tokio::test]
async fn index_pushed_by_digest_round_trips_and_children_first_is_required() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/index");
    let layer = bytes_of(1000, 3);
    c.upload_blob(
        &repo,
        &Digest::of(CONFIG_JSON),
        Bytes::from_static(CONFIG_JSON),
    )
    .await
    .unwrap();
    c.upload_blob(&repo, &Digest::of(&layer), Bytes::from(layer.clone()))
        .await
        .unwrap();
    let child = image_manifest(
        OCI_MANIFEST,
        "application/vnd.oci.image.config.v1+json",
        CONFIG_JSON,
        "application/vnd.oci.image.layer.v1.tar",
        &layer,
    );
    let index = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","size":{},"digest":"{}","platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        child.len(),
        Digest::of(&child)
    ));
    // The child is not there yet: the registry refuses, naming the problem.
    let e = c
        .put_manifest(&repo, "multi", OCI_INDEX, index.clone())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert_eq!(e.code(), Some("MANIFEST_BLOB_UNKNOWN"), "{e}");
    assert!(e.to_string().contains("MANIFEST_BLOB_UNKNOWN"), "{e}");
    assert!(!e.is_retryable());

    let cd = c
        .put_manifest(
            &repo,
            &Digest::of(&child).to_string(),
            OCI_MANIFEST,
            child.clone(),
        )
        .await
        .unwrap();
    assert_eq!(cd, Digest::of(&child));
    c.put_manifest(&repo, "multi", OCI_INDEX, index.clone())
        .await
        .unwrap();
    let got = c.get_manifest(&repo, "multi").await.unwrap();
    assert_eq!(got.bytes, index);
    assert_eq!(got.media_type, OCI_INDEX);
}

#[tokio::test]
async fn put_manifest_by_digest_refuses_bytes_of_another_digest() {
    let reg = registry();
    let c = client();
    let e = c
        .put_manifest(
            &reg.repo("ferry/x"),
            &Digest::of(b"other").to_string(),
            OCI_MANIFEST,
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
}

#[tokio::test]
async fn unknown_manifest_is_not_found_and_head_says_none() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/nothing");
    let e = c.get_manifest(&repo, "nope").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(!e.is_retryable());
    assert!(
        e.to_string().contains("/v2/ferry/nothing/manifests/nope"),
        "{e}"
    );
    assert_eq!(c.head_manifest(&repo, "nope").await.unwrap(), None);
}

#[tokio::test]
async fn uploaded_blob_is_found_by_head_and_streams_back_verified() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/blobs");
    let data = bytes_of(2_500_000, 4);
    let d = Digest::of(&data);
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), None);
    c.upload_blob(&repo, &d, Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(
        c.head_blob(&repo, &d).await.unwrap(),
        Some(data.len() as u64)
    );

    let mut s = c
        .get_blob(&repo, &d, Some(data.len() as u64))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = s.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, data);
}

#[tokio::test]
async fn get_blob_with_a_wrong_expected_size_fails() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/size");
    let data = bytes_of(1000, 5);
    let d = Digest::of(&data);
    c.upload_blob(&repo, &d, Bytes::from(data)).await.unwrap();
    let e = match c.get_blob(&repo, &d, Some(999)).await {
        Err(e) => e,
        Ok(mut s) => {
            let mut err = None;
            while let Some(item) = s.next().await {
                if let Err(e) = item {
                    err = Some(e);
                }
            }
            err.expect("an error item")
        }
    };
    assert!(
        matches!(
            e,
            Error::SizeMismatch {
                expected: 999,
                actual: 1000,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn upload_blob_refuses_data_that_does_not_match_the_digest() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/wrong");
    let claimed = Digest::of(b"a");
    let e = c
        .upload_blob(&repo, &claimed, Bytes::from_static(b"b"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&claimed.to_string()), "{e}");
    assert!(e.to_string().contains(&Digest::of(b"b").to_string()), "{e}");
    assert_eq!(c.head_blob(&repo, &claimed).await.unwrap(), None);
}

#[tokio::test]
async fn chunked_upload_of_3_mib_in_1_mib_chunks_stores_the_blob() {
    let reg = registry();
    let c = Client::new(ClientConfig {
        chunk_size: 1 << 20,
        ..fast_config()
    })
    .unwrap();
    let repo = reg.repo("ferry/chunked");
    let data = bytes_of(3 << 20, 6);
    let d = Digest::of(&data);
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let feed = {
        let data = data.clone();
        tokio::spawn(async move {
            for chunk in data.chunks(1 << 20) {
                tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
        })
    };
    c.upload_blob_chunked(&repo, &d, data.len() as u64, rx)
        .await
        .unwrap();
    feed.await.unwrap();
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), Some(3 << 20));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    c.download_blob(&repo, &d, Some(3 << 20), &dest, None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

#[tokio::test]
async fn chunked_upload_with_wrong_content_is_refused_and_nothing_is_stored() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/chunked-bad");
    let data = bytes_of(100_000, 7);
    let claimed = Digest::of(b"something else");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for chunk in data.chunks(40_000) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    drop(tx);
    let e = c
        .upload_blob_chunked(&repo, &claimed, data.len() as u64, rx)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&Digest::of(&data).to_string()),
        "{e}"
    );
    assert_eq!(c.head_blob(&repo, &claimed).await.unwrap(), None);
    assert_eq!(c.head_blob(&repo, &Digest::of(&data)).await.unwrap(), None);
}

#[tokio::test]
async fn chunked_upload_whose_source_ends_early_fails() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/chunked-short");
    let data = bytes_of(100_000, 8);
    let d = Digest::of(&data);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Bytes::copy_from_slice(&data[..50_000]))
        .await
        .unwrap();
    drop(tx);
    let e = c
        .upload_blob_chunked(&repo, &d, data.len() as u64, rx)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("50000 of 100000"), "{e}");
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), None);
}

#[tokio::test]
async fn empty_blob_uploads_chunked_with_no_chunks() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/empty");
    let d = Digest::of(b"");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(tx);
    c.upload_blob_chunked(&repo, &d, 0, rx).await.unwrap();
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), Some(0));
}

#[tokio::test]
async fn mount_across_repositories_links_the_blob() {
    let reg = registry();
    let c = client();
    let src = reg.repo("ferry/mount-src");
    let dst = reg.repo("ferry/mount-dst");
    let data = bytes_of(5000, 9);
    let d = Digest::of(&data);
    c.upload_blob(&src, &d, Bytes::from(data)).await.unwrap();
    assert!(c.mount_blob(&dst, &d, &src).await.unwrap());
    assert_eq!(c.head_blob(&dst, &d).await.unwrap(), Some(5000));

    // Unknown in the source: the registry opens a session instead (202).
    let missing = Digest::of(b"not uploaded anywhere");
    assert!(!c.mount_blob(&dst, &missing, &src).await.unwrap());
    // Another host: no mount attempted.
    let other = ferry_registry::Repo {
        host: "127.0.0.2:1".into(),
        path: "x".into(),
    };
    assert!(!c.mount_blob(&dst, &d, &other).await.unwrap());
}

#[tokio::test]
async fn download_blob_writes_the_file_atomically_and_reports_progress() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/download");
    let data = bytes_of(1_234_567, 10);
    let d = Digest::of(&data);
    c.upload_blob(&repo, &d, Bytes::from(data.clone()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join(d.hex());
    let total = std::sync::atomic::AtomicU64::new(0);
    let progress = |n: u64| {
        total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    };
    let n = c
        .download_blob(&repo, &d, Some(data.len() as u64), &dest, Some(&progress))
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(total.into_inner(), data.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(
        files_in(dir.path()),
        vec![d.hex()],
        "no temporary file is left"
    );
}

#[tokio::test]
async fn download_blob_with_a_wrong_size_leaves_nothing_behind() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/download-bad");
    let data = bytes_of(10_000, 11);
    let d = Digest::of(&data);
    c.upload_blob(&repo, &d, Bytes::from(data)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("blob");
    let e = c
        .download_blob(&repo, &d, Some(10_001), &dest, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::SizeMismatch {
                expected: 10_001,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );

    let missing = Digest::of(b"missing");
    let e = c
        .download_blob(&repo, &missing, None, &dest, None)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(files_in(dir.path()).is_empty());
}

#[tokio::test]
async fn list_tags_returns_all_tags_and_nothing_for_an_unknown_repository() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/tags");
    c.upload_blob(
        &repo,
        &Digest::of(CONFIG_JSON),
        Bytes::from_static(CONFIG_JSON),
    )
    .await
    .unwrap();
    let m = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{}"}},"layers":[]}}"#,
        CONFIG_JSON.len(),
        Digest::of(CONFIG_JSON)
    ));
    for tag in ["b", "a", "c"] {
        c.put_manifest(&repo, tag, OCI_MANIFEST, m.clone())
            .await
            .unwrap();
    }
    // Registry 2.8 lists in directory order, not lexically: compare as sets.
    let mut tags = c.list_tags(&repo).await.unwrap();
    tags.sort();
    assert_eq!(tags, vec!["a", "b", "c"]);
    assert!(c
        .list_tags(&reg.repo("ferry/none"))
        .await
        .unwrap()
        .is_empty());
}
