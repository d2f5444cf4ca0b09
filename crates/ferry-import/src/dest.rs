//! Where registry items go: a registry, or the local mirror store.
//!
//! Every blob handed here comes from the import's one bundle reader, which
//! hashed it and releases a blob (or a streamed blob's last chunk) only once
//! it matched: the uploads and the store take it as checked by its sender
//! ([`Check::Sender`]), counting its bytes, so each blob is hashed once.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use tokio::sync::mpsc;

use ferry_bundle::digest::Check;
use ferry_bundle::Digest;
use ferry_registry::{chain, BlobBytes, BlobChunks, Client, Repo};

use crate::store::{Entry, Store};

/// Why a blob did not land at the target, and whether it may land when its
/// bytes are supplied again (re-read from the bundle).
#[derive(Debug)]
pub(crate) struct UploadFailed {
    /// The error, with its causes.
    pub(crate) reason: String,
    /// The bytes sent were no longer held, or the retries ran out on a
    /// failure that may pass ([`ferry_registry::Error::needs_bytes_again`]):
    /// one more upload from the bytes read again may succeed.
    pub(crate) again: bool,
}

impl UploadFailed {
    /// A registry's refusal.
    fn registry(e: &ferry_registry::Error) -> UploadFailed {
        UploadFailed {
            reason: chain(e),
            again: e.needs_bytes_again(),
        }
    }

    /// The store's (a local write: supplying the bytes again changes nothing).
    fn store(e: &dyn std::error::Error) -> UploadFailed {
        UploadFailed {
            reason: chain(e),
            again: false,
        }
    }
}

/// The registry side of an import.
#[derive(Clone)]
pub(crate) enum Dest {
    /// An OCI distribution registry.
    Registry(Client),
    /// The local store (content-addressed: every blob is in every repository).
    Store(Arc<Store>),
}

/// How a streamed blob goes to a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sending {
    /// One streamed `PUT` (the main pass).
    OnePut,
    /// Chunks, each retried alone (the re-read pass).
    Chunks,
}

/// The fewest repositories for which the catalog is asked first: below
/// it, a tag listing each costs about as few requests.
const CATALOG_MIN_REPOS: usize = 8;

/// Names asked per catalog page.
const CATALOG_PAGE: usize = 1000;

/// The repositories of `distinct` the registry's catalog does not list,
/// when they are all on one host, are at least [`CATALOG_MIN_REPOS`], and
/// the catalog answers within a quarter of the requests a tag listing each
/// would take; `None` otherwise (the caller asks each repository).
async fn unknown_by_catalog<'r>(
    c: &Client,
    distinct: &HashSet<&'r Repo>,
) -> Option<HashSet<&'r Repo>> {
    if distinct.len() < CATALOG_MIN_REPOS {
        return None;
    }
    let host = distinct.iter().next()?.host.as_str();
    if distinct.iter().any(|r| r.host != host) {
        return None;
    }
    let paths: HashSet<&str> = distinct.iter().map(|r| r.path.as_str()).collect();
    let max_pages = (distinct.len() / 4).max(1);
    let listed = c
        .catalog_lists(host, &paths, CATALOG_PAGE, max_pages)
        .await?;
    Some(
        distinct
            .iter()
            .filter(|r| !listed.contains(r.path.as_str()))
            .copied()
            .collect(),
    )
}

impl Dest {
    /// The repositories among `repos` the target registry does not know:
    /// none can hold a blob the plan must check, so their blobs are
    /// uploaded without a HEAD each (an upload of a blob already there is
    /// harmless). From the registry's catalog when it gives one and there
    /// are at least [`CATALOG_MIN_REPOS`] repositories
    /// ([`Client::catalog_lists`]: one request per thousand names instead
    /// of one per repository, issue 17), else one tag listing per
    /// repository ([`Client::repository_known`]). A store knows every
    /// repository. The answer borrows `repos` (a copy of each would be one
    /// more per reference: issue 17).
    pub(crate) async fn unknown_repos<'r>(
        &self,
        repos: impl IntoIterator<Item = &'r Repo>,
        jobs: usize,
    ) -> HashSet<&'r Repo> {
        let Dest::Registry(c) = self else {
            return HashSet::new();
        };
        let distinct: HashSet<&Repo> = repos.into_iter().collect();
        if let Some(unknown) = unknown_by_catalog(c, &distinct).await {
            return unknown;
        }
        stream::iter(distinct)
            .map(|repo| async move { (repo, c.repository_known(repo).await) })
            .buffer_unordered(jobs.max(1))
            .filter_map(|(repo, known)| async move { (!known).then_some(repo) })
            .collect()
            .await
    }

    pub(crate) async fn head_blob(&self, repo: &Repo, d: &Digest) -> bool {
        match self {
            Dest::Registry(c) => matches!(c.head_blob(repo, d).await, Ok(Some(_))),
            Dest::Store(s) => s.has_blob(d).is_some(),
        }
    }

    /// Uploads a blob held in memory, checked by the reader.
    pub(crate) async fn upload_blob(
        &self,
        repo: &Repo,
        d: &Digest,
        data: Bytes,
    ) -> Result<(), UploadFailed> {
        match self {
            Dest::Registry(c) => c
                .upload_blob(repo, d, BlobBytes::checked_by_sender(data))
                .await
                .map_err(|e| UploadFailed::registry(&e)),
            Dest::Store(s) => s
                .put_blob(d, data, Check::Sender)
                .await
                .map_err(|e| UploadFailed::store(&e)),
        }
    }

    /// Uploads a blob as its chunks stream past, checked by the reader: to a
    /// registry in one streamed PUT (chunks where the registry refuses it)
    /// or, for the re-read pass, in chunks each kept until acknowledged
    /// (retried alone); to the store in one local write either way.
    pub(crate) async fn upload_blob_stream(
        &self,
        repo: &Repo,
        d: &Digest,
        size: u64,
        chunks: mpsc::Receiver<Bytes>,
        how: Sending,
    ) -> Result<(), UploadFailed> {
        match self {
            Dest::Registry(c) => {
                let chunks = BlobChunks::checked_by_sender(chunks);
                match how {
                    Sending::OnePut => c.upload_blob_streamed(repo, d, size, chunks).await,
                    Sending::Chunks => c.upload_blob_chunked(repo, d, size, chunks).await,
                }
                .map_err(|e| UploadFailed::registry(&e))
            }
            Dest::Store(s) => s
                .put_blob_stream(d, size, chunks, Check::Sender)
                .await
                .map_err(|e| UploadFailed::store(&e)),
        }
    }

    pub(crate) async fn mount_blob(
        &self,
        repo: &Repo,
        d: &Digest,
        from: &Repo,
    ) -> Result<bool, String> {
        match self {
            Dest::Registry(c) => c.mount_blob(repo, d, from).await.map_err(|e| chain(&e)),
            Dest::Store(s) => Ok(s.has_blob(d).is_some()),
        }
    }

    /// The digest `reference` (a tag or digest) points at, when present.
    pub(crate) async fn head_manifest(&self, repo: &Repo, reference: &str) -> Option<Digest> {
        match self {
            Dest::Registry(c) => match c.head_manifest(repo, reference).await {
                Ok(Some((d, _, _))) => Some(d),
                _ => None,
            },
            Dest::Store(s) => match reference.parse::<Digest>() {
                Ok(d) => s.has_blob(&d).map(|_| d),
                Err(_) => s.tag(&repo.path, reference),
            },
        }
    }

    /// Pushes a manifest by digest or tag.
    pub(crate) async fn put_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<(), String> {
        match self {
            Dest::Registry(c) => c
                .put_manifest(repo, reference, media_type, bytes)
                .await
                .map(|_| ())
                .map_err(|e| chain(&e)),
            Dest::Store(s) => {
                let d = Digest::of(&bytes);
                let size = bytes.len() as u64;
                // Just hashed: the digest is these bytes'.
                s.put_blob(&d, bytes, Check::Sender)
                    .await
                    .map_err(|e| chain(&e))?;
                if reference.parse::<Digest>().is_err() {
                    s.add_entry(Entry {
                        repository: repo.path.clone(),
                        tag: Some(reference.to_string()),
                        digest: d,
                        media_type: ferry_bundle::manifest::MediaType::from(media_type),
                        size,
                        origin: None, // set when the item is recorded (run/commit.rs)
                    });
                }
                Ok(())
            }
        }
    }
}
