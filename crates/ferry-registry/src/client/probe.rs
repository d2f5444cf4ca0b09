//! Preflight: whether a repository accepts a push, asked before any byte
//! is sent (an upload session opened, then cancelled).

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
}
