//! Preflight: once planned, before the first byte is uploaded, the target
//! is asked what would otherwise fail halfway: every target repository
//! must accept a push (an upload session opened, so the registry's own
//! credentials and permission rules answer), and a store must have room for
//! the blobs it lacks. A dry run makes the same checks; a refusal stops the
//! run with nothing pushed.
//!
//! A repository a blob is first uploaded into keeps its session for that
//! upload ([`Client::hold_push`]: the upload's `POST` is not sent again,
//! nor the preflight's `DELETE`); the others' sessions, and every session
//! of a dry run, are cancelled at once ([`Client::check_push`]). Whatever
//! is still held when the run ends (a failed run, an upload that never
//! came) is cancelled then ([`super::import`]).

use std::collections::{BTreeSet, HashMap, HashSet};

use futures_util::stream::{self, StreamExt};

use ferry_bundle::room::{room, Room};
use ferry_bundle::Digest;
use ferry_registry::{Client, Repo};

use super::plan::{ItemPlan, SharedRepo};
use super::report::{ImportError, Preflight};
use super::ImportOptions;
use crate::dest::Dest;

/// Checks push permission on every target repository (registry) or the
/// room of the store, for the `upload_bytes` the plan will upload; each
/// repository of `first_repo` (where a blob is uploaded first) keeps its
/// session for that upload, unless this is a dry run.
pub(super) async fn check(
    client: &Client,
    dest: &Dest,
    opts: &ImportOptions,
    plans: &[ItemPlan],
    first_repo: &HashMap<Digest, SharedRepo>,
    upload_bytes: u64,
) -> Result<Preflight, ImportError> {
    let store_dir = match (dest, &opts.store_dir) {
        (Dest::Store(store), _) => Some(store.dir()),
        (Dest::Registry(_), Some(dir)) => Some(dir.as_path()),
        (Dest::Registry(_), None) => None,
    };
    match store_dir {
        Some(dir) => {
            let room = store_room(dir, upload_bytes)?;
            Ok(Preflight {
                repositories: 0,
                room,
            })
        }
        None => {
            let uploads_into: HashSet<&Repo> = match opts.dry_run {
                true => HashSet::new(),
                false => first_repo.values().map(|r| &**r).collect(),
            };
            let repositories = check_pushes(client, opts, plans, &uploads_into).await?;
            Ok(Preflight {
                repositories,
                room: None,
            })
        }
    }
}

/// The store's room for `needed` bytes: refused when short.
// `ImportError` is the crate's public error, returned as is.
#[allow(clippy::result_large_err)]
fn store_room(dir: &std::path::Path, needed: u64) -> Result<Option<Room>, ImportError> {
    match room("store", dir, needed) {
        Some(r) if !r.fits() => Err(ImportError::NoRoom {
            path: r.path,
            needed: r.needed,
            available: r.available,
        }),
        r => Ok(r),
    }
}

/// Every distinct target repository accepts a push; the number checked.
/// The sessions of `uploads_into` are held for their first upload.
async fn check_pushes(
    client: &Client,
    opts: &ImportOptions,
    plans: &[ItemPlan],
    uploads_into: &HashSet<&Repo>,
) -> Result<usize, ImportError> {
    let repos: BTreeSet<&Repo> = plans.iter().map(|p| &*p.repo).collect();
    let n = repos.len();
    let results: Vec<(String, Result<(), ferry_registry::Error>)> = stream::iter(repos)
        .map(|repo| async move {
            let r = match uploads_into.contains(repo) {
                true => client.hold_push(repo).await,
                false => client.check_push(repo).await,
            };
            (repo.to_string(), r)
        })
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;
    let mut refused: Vec<(String, ferry_registry::Error)> = results
        .into_iter()
        .filter_map(|(r, res)| res.err().map(|e| (r, e)))
        .collect();
    refused.sort_by(|a, b| a.0.cmp(&b.0));
    match refused.into_iter().next() {
        Some((repository, source)) => Err(ImportError::PushRefused { repository, source }),
        None => Ok(n),
    }
}
