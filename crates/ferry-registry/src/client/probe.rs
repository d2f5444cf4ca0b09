//! Preflight: whether a repository accepts a push, asked before any byte
//! is sent (an upload session opened, then cancelled), and whether the
//! registry knows a repository at all (one tag listing), so that a fresh
//! repository's blobs are uploaded without an existence check each.

use reqwest::{Method, StatusCode};

use super::request::{location_of, Req};
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
        let req = Req::new(Method::POST, t.ep.repo_url(&repo.path, "blobs/uploads/")).empty();
        let (t, req) = (&t, &req);
        self.retry_op(|| async move {
            let resp = self.execute(t, req).await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(self.http_error(req, resp).await);
            }
            if let Ok(loc) = location_of(req, &resp) {
                self.cancel(t, &loc).await;
            }
            Ok(())
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
