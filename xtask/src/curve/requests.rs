//! The requests one export and one import send, counted by a proxy in
//! front of each registry, by kind, beside the fewest the references need.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use ferry_testkit::dataset::Dataset;
use ferry_testkit::proxy::FaultProxy;
use ferry_testkit::registry::Registry;

use super::commands::{export_args, import_args, run_events};
use super::point::Counted;
use crate::bench::spec_text;

/// What a registry request does, from its method and target.
fn request_kind(method: &str, target: &str) -> &'static str {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/v2/" || path == "/v2" {
        return "ping";
    }
    if path.contains("/blobs/uploads") {
        return match method {
            "POST" if query.contains("mount=") => "blob mount",
            "POST" => "upload POST",
            "PATCH" => "upload PATCH",
            "PUT" => "upload PUT",
            "DELETE" => "upload DELETE",
            _ => "upload other",
        };
    }
    if path.contains("/manifests/") {
        return match method {
            "HEAD" => "manifest HEAD",
            "GET" => "manifest GET",
            "PUT" => "manifest PUT",
            _ => "manifest other",
        };
    }
    if path.contains("/blobs/") {
        return match method {
            "HEAD" => "blob HEAD",
            "GET" => "blob GET",
            _ => "blob other",
        };
    }
    if path.ends_with("/tags/list") {
        return "tags/list";
    }
    if path == "/v2/_catalog" {
        return "catalog";
    }
    if path.contains("/referrers/") {
        return "referrers";
    }
    "other"
}

/// The fewest requests `set`'s references need: export fetches every
/// reference's manifests and every distinct blob once; import uploads every
/// distinct blob once (POST + PUT), mounts it into each other repository
/// that needs it and puts each reference's manifests once (a tag's `PUT`
/// stores its manifest too).
fn request_floors(set: &Dataset) -> (usize, usize) {
    let manifests: usize = set.images.iter().map(|i| i.manifests().count()).sum();
    let pairs: std::collections::HashSet<(&str, &ferry_bundle::Digest)> = set
        .images
        .iter()
        .flat_map(|i| i.blobs.iter().map(move |b| (i.repository.as_str(), b)))
        .collect();
    let blobs = set.blobs.len();
    (
        manifests + blobs,
        2 * blobs + pairs.len().saturating_sub(blobs) + manifests,
    )
}

fn tally(proxy: &FaultProxy) -> BTreeMap<&'static str, usize> {
    let mut by_kind = BTreeMap::new();
    for r in proxy.requests() {
        *by_kind
            .entry(request_kind(&r.method, &r.target))
            .or_insert(0) += 1;
    }
    by_kind
}

/// One more export and import of `set`, each through a counting proxy (not
/// timed: the proxy costs time of its own).
pub(super) fn count_requests(
    ferry: &str,
    set: &Dataset,
    source: &Registry,
    label: &str,
    work: &Path,
    logs: &Path,
) -> Result<Counted> {
    let proxy = FaultProxy::start(source.addr(), Vec::new());
    let spec = work.join(format!("{label}-counted.yaml"));
    std::fs::write(&spec, spec_text(set, &proxy.host()))?;
    let bundle = work.join(format!("{label}-counted.tar.zst"));
    let _ = std::fs::remove_file(&bundle);
    run_events(
        logs,
        &format!("{label}-counted-export"),
        ferry,
        &export_args(&spec, &bundle, &[]),
    )?;
    let export = tally(&proxy);
    drop(proxy);
    let target = Registry::start()?;
    let proxy = FaultProxy::start(target.addr(), Vec::new());
    let imported = run_events(
        logs,
        &format!("{label}-counted-import"),
        ferry,
        &import_args(&bundle, &proxy.host()),
    );
    let _ = std::fs::remove_file(&bundle);
    imported?;
    let (export_floor, import_floor) = request_floors(set);
    Ok(Counted {
        export,
        import: tally(&proxy),
        export_floor,
        import_floor,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn requests_are_told_apart_by_what_they_do() {
        let cases = [
            ("GET", "/v2/", "ping"),
            (
                "POST",
                "/v2/app-1/blobs/uploads/?mount=sha256:ab&from=app-0",
                "blob mount",
            ),
            ("POST", "/v2/app-1/blobs/uploads/", "upload POST"),
            (
                "PUT",
                "/v2/app-1/blobs/uploads/u1?digest=sha256:ab",
                "upload PUT",
            ),
            ("DELETE", "/v2/app-1/blobs/uploads/u1", "upload DELETE"),
            ("HEAD", "/v2/app-1/blobs/sha256:ab", "blob HEAD"),
            ("GET", "/v2/app-1/blobs/sha256:ab", "blob GET"),
            ("HEAD", "/v2/app-1/manifests/1.0", "manifest HEAD"),
            ("PUT", "/v2/small/app-1/manifests/1.0", "manifest PUT"),
            ("GET", "/v2/small/app-1/tags/list", "tags/list"),
            ("GET", "/v2/_catalog?n=1000", "catalog"),
            ("GET", "/v2/small/app-1/referrers/sha256:ab", "referrers"),
        ];
        for (method, target, kind) in cases {
            assert_eq!(request_kind(method, target), kind, "{method} {target}");
        }
    }

    #[test]
    fn the_request_floor_counts_each_blob_once_and_each_mount_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let set = Dataset::load_or_generate_many(dir.path(), 3, 0, &|_| {}).unwrap();
        // 3 references: a shared base, a layer and a config each (7 blobs),
        // one manifest each.
        assert_eq!(set.blobs.len(), 7);
        let (export, import) = request_floors(&set);
        // Export: 3 manifests + 7 blobs.
        assert_eq!(export, 10);
        // Import: 7 blobs × (POST + PUT), the base mounted into 2 more
        // repositories, 3 manifest PUTs.
        assert_eq!(import, 14 + 2 + 3);
    }
}
