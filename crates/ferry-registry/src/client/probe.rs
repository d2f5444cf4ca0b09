//! Preflight: whether a repository accepts a push, asked before any byte
//! is sent (an upload session opened, then cancelled, or held for the
//! repository's first upload: [`Client::hold_push`]), and whether the
//! registry knows a repository at all (one tag listing), so that a fresh
//! repository's blobs are uploaded without an existence check each.

use futures_util::stream::{self, StreamExt};
use reqwest::{Method, StatusCode};
use url::Url;

use super::request::{location_of, Req, Target};
use super::Client;
use crate::{Error, Repo};

impl Client {
    /// Whether `repo` accepts a push with this client's credentials: opens
    /// an upload session (`POST …/blobs/uploads/`, the request every push
    /// starts with, so the registry applies its own permission rules) and
    /// cancels it at once. `Ok(())` when the registry answered 202; the
    /// registry's refusal (401/403/405/…) otherwise, naming the repository.
    /// Nothing is stored: a session that is never written to holds no data.
    pub async fn check_push(&self, repo: &Repo) -> Result<(), Error> {
        let t = self.repo_target(repo, true, None).await?;
        if let Some(loc) = self.open_session(&t, repo).await? {
            self.cancel(&t, &loc).await;
        }
        Ok(())
    }

    /// [`Client::check_push`], keeping the session it opened for the next
    /// blob uploaded into `repo` by this client (its `POST` is then not
    /// sent again, nor the `DELETE` that would cancel it). The session's
    /// URL is the registry's `Location`, used like any upload session's:
    /// credentials go with it only to the registry's own origin. A session
    /// no upload takes must be ended with [`Client::cancel_held_uploads`];
    /// one that fails when an upload uses it is cancelled and the upload
    /// starts again on a new session. Holding again for the same
    /// repository cancels the older session.
    pub async fn hold_push(&self, repo: &Repo) -> Result<(), Error> {
        let t = self.repo_target(repo, true, None).await?;
        let Some(loc) = self.open_session(&t, repo).await? else {
            return Ok(());
        };
        let older = self
            .held()
            .insert(repo.clone(), String::from(loc).into_boxed_str());
        if let Some(older) = older.as_deref().and_then(held_url) {
            self.cancel(&t, &older).await;
        }
        Ok(())
    }

    /// Cancels (`DELETE`) every session [`Client::hold_push`] kept that no
    /// upload took; returns how many. Failures are only logged: a session
    /// never written to holds no data.
    pub async fn cancel_held_uploads(&self) -> usize {
        let held: Vec<(Repo, Box<str>)> = self.held().drain().collect();
        let n = held.len();
        stream::iter(held)
            .for_each_concurrent(self.inner.config.jobs.max(1), |(repo, loc)| async move {
                let Some(loc) = held_url(&loc) else {
                    return;
                };
                match self.repo_target(&repo, true, None).await {
                    Ok(t) => self.cancel(&t, &loc).await,
                    Err(e) => tracing::debug!(
                        "could not cancel the upload session held for {repo}: {}",
                        crate::error::chain(&e)
                    ),
                }
            })
            .await;
        n
    }

    /// The session held for `repo`, taken (an upload's first attempt).
    pub(super) fn take_held(&self, repo: &Repo) -> Option<Url> {
        self.held().remove(repo).as_deref().and_then(held_url)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Repo, Box<str>>> {
        match self.inner.held_uploads.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// `POST …/blobs/uploads/` until answered: the session's `Location`
    /// (`None` when a 202 came without one), or the registry's refusal.
    async fn open_session(&self, t: &Target<'_>, repo: &Repo) -> Result<Option<Url>, Error> {
        let req = Req::new(Method::POST, t.ep.repo_url(&repo.path, "blobs/uploads/")).empty();
        let req = &req;
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(self.http_error(req, resp).await);
            }
            Ok(location_of(req, &resp).ok())
        })
        .await
    }

    /// Whether `repo` may hold anything: `false` only when the registry
    /// answers its tag listing (`GET …/tags/list?n=1`) with 404
    /// `NAME_UNKNOWN`, the answer of a repository it does not know;
    /// `true` for any other answer, an error included. The importer uses
    /// it to skip the blob existence checks in a repository that answered
    /// `false`, uploading what it needs instead: distribution answers
    /// `NAME_UNKNOWN` also for a repository that holds blobs but no tags,
    /// and uploading a blob the registry has is harmless (same digest,
    /// idempotent), while every doubt keeps the checks.
    pub async fn repository_known(&self, repo: &Repo) -> bool {
        let Ok(t) = self.repo_target(repo, false, None).await else {
            return true;
        };
        let mut url = t.ep.repo_url(&repo.path, "tags/list");
        url.query_pairs_mut().append_pair("n", "1");
        let req = Req::new(Method::GET, url);
        let (t, req) = (&t, &req);
        let unknown = self
            .retry_op(|| async move {
                let resp = self.execute(t, req).await?;
                if resp.status().is_success() {
                    return Ok(false);
                }
                let e = self.http_error(req, resp).await;
                Ok(e.is_not_found() && e.code() == Some("NAME_UNKNOWN"))
            })
            .await;
        !matches!(unknown, Ok(true))
    }
}

/// A held session's URL, read back from the text it was kept as (a
/// [`Url`]'s own serialisation, which parses to the same URL; kept as text
/// because a parsed URL's fields and spare capacity cost as much again,
/// once per repository: issue 17).
fn held_url(text: &str) -> Option<Url> {
    Url::parse(text).ok()
}
