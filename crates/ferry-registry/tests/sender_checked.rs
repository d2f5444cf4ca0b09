//! Uploads of bytes their sender has checked (`BlobBytes` /
//! `BlobChunks::checked_by_sender`, as the import hands the bundle reader's
//! verified bytes): the client does not hash them again, and nothing is
//! given up. A withheld last chunk (the sender's hash failed) leaves the
//! blob short and the upload fails; bytes that do not match although
//! claimed checked are refused by the registry's own check on the final
//! `PUT ?digest=`. In every failure nothing lands.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use bytes::Bytes;
use ferry_bundle::digest::Digest;
use ferry_registry::{BlobBytes, BlobChunks, Client, ClientConfig};

use common::{bytes_of, fast_config, registry};

/// `data` in `piece`-byte chunks on a channel, as checked by their sender.
fn checked_chunks(data: &[u8], piece: usize) -> BlobChunks {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let owned: Vec<Bytes> = data.chunks(piece).map(Bytes::copy_from_slice).collect();
    tokio::spawn(async move {
        for c in owned {
            if tx.send(c).await.is_err() {
                return;
            }
        }
    });
    BlobChunks::checked_by_sender(rx)
}

fn client() -> Client {
    Client::new(ClientConfig {
        chunk_size: 64 << 10,
        ..fast_config()
    })
    .unwrap()
}

#[tokio::test]
async fn sender_checked_blobs_land_whole_by_every_upload() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/checked");
    for (i, upload) in ["whole", "chunked", "streamed"].into_iter().enumerate() {
        let data = bytes_of(300_000, 60 + i as u64);
        let d = Digest::of(&data);
        let size = data.len() as u64;
        match upload {
            "whole" => c
                .upload_blob(&repo, &d, BlobBytes::checked_by_sender(Bytes::from(data)))
                .await
                .unwrap(),
            "chunked" => c
                .upload_blob_chunked(&repo, &d, size, checked_chunks(&data, 100_000))
                .await
                .unwrap(),
            _ => c
                .upload_blob_streamed(&repo, &d, size, checked_chunks(&data, 100_000))
                .await
                .unwrap(),
        }
        assert_eq!(
            c.head_blob(&repo, &d).await.unwrap(),
            Some(size),
            "{upload}"
        );
    }
}

#[tokio::test]
async fn a_withheld_last_chunk_fails_the_upload_and_nothing_lands() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/withheld");
    let data = bytes_of(300_000, 70);
    let d = Digest::of(&data);
    // The sender's hash failed: every chunk but the last one came.
    let sent = &data[..200_000];
    let e = c
        .upload_blob_chunked(&repo, &d, 300_000, checked_chunks(sent, 100_000))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("ended after 200000 of 300000"),
        "{e}"
    );
    let e = c
        .upload_blob_streamed(&repo, &d, 300_000, checked_chunks(sent, 100_000))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("ended after 200000 of 300000"),
        "{e}"
    );
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), None);
    assert_eq!(c.head_blob(&repo, &Digest::of(sent)).await.unwrap(), None);
}

#[tokio::test]
async fn bytes_claimed_checked_that_do_not_match_are_refused_by_the_registry() {
    let reg = registry();
    let c = client();
    let repo = reg.repo("ferry/lying-sender");
    let data = bytes_of(300_000, 80);
    let d = Digest::of(&data);
    // Other bytes of the right size, claimed checked: the client does not
    // hash them, the registry does before it keeps anything.
    let wrong = bytes_of(300_000, 81);
    assert!(c
        .upload_blob(
            &repo,
            &d,
            BlobBytes::checked_by_sender(Bytes::from(wrong.clone()))
        )
        .await
        .is_err());
    assert!(c
        .upload_blob_chunked(&repo, &d, 300_000, checked_chunks(&wrong, 100_000))
        .await
        .is_err());
    assert!(c
        .upload_blob_streamed(&repo, &d, 300_000, checked_chunks(&wrong, 100_000))
        .await
        .is_err());
    assert_eq!(c.head_blob(&repo, &d).await.unwrap(), None);
    assert_eq!(c.head_blob(&repo, &Digest::of(&wrong)).await.unwrap(), None);
}
