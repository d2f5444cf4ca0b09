//! The requests each reference costs (issue 17), counted by a proxy in
//! front of real `docker-registry`s, for export and import of many small
//! images (the curve's set: a base layer they all share, a layer and a
//! config of their own, one manifest each).
//!
//! The floor of a reference: export fetches its manifest and its two own
//! blobs (the shared base once in all); import uploads its two own blobs
//! (POST + PUT each), mounts the base and puts its manifest once. What ferry
//! may add per reference is named: export's provenance lookups (one tag
//! listing per repository instead of four tag lookups per manifest; the
//! referrers API once per registry when it answers 404) and import's look
//! at which repositories the target knows: one catalog page per thousand
//! repositories, or one tag listing per repository (`?n=1`) where the
//! registry refuses the catalog (the preflight's upload session per
//! repository is the session of that repository's first blob upload, or is
//! cancelled when none comes): a repository the target does not know gets
//! its blobs without an existence check each, a known one gets a HEAD per
//! blob; a fresh target
//! needs no manifest existence check and one manifest PUT per reference
//! (by its tag).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::collections::BTreeMap;

use common::{ferry, ok};
use ferry_testkit::dataset::Dataset;
use ferry_testkit::proxy::{Action, Fault, FaultProxy};
use ferry_testkit::registry::Registry;

/// References in the set.
const REFS: usize = 24;

/// Requests by (method, what): `manifest`, `blob`, `upload`, `mount`,
/// `tags`, `referrers`, `ping`.
fn tally(proxy: &FaultProxy) -> BTreeMap<(String, &'static str), usize> {
    let mut out = BTreeMap::new();
    for r in proxy.requests() {
        let (path, query) = r.target.split_once('?').unwrap_or((&r.target, ""));
        let what = if path == "/v2/" {
            "ping"
        } else if path.contains("/blobs/uploads") && query.contains("mount=") {
            "mount"
        } else if path.contains("/blobs/uploads") {
            "upload"
        } else if path.contains("/manifests/") {
            "manifest"
        } else if path.contains("/blobs/") {
            "blob"
        } else if path.ends_with("/tags/list") {
            "tags"
        } else if path == "/v2/_catalog" {
            "catalog"
        } else if path.contains("/referrers/") {
            "referrers"
        } else {
            "other"
        };
        *out.entry((r.method.clone(), what)).or_insert(0) += 1;
    }
    out
}

fn count(t: &BTreeMap<(String, &'static str), usize>, method: &str, what: &str) -> usize {
    t.get(&(method.to_string(), what)).copied().unwrap_or(0)
}

fn total(t: &BTreeMap<(String, &'static str), usize>) -> usize {
    t.values().sum()
}

/// `ferry --json import BUNDLE --registry <proxy> --flatten`, which must
/// succeed: its output.
fn import_into(bundle: &str, proxy: &FaultProxy) -> String {
    ok(&ferry(&[
        "--json",
        "import",
        bundle,
        "--registry",
        &proxy.host(),
        "--flatten",
    ]))
}

/// Every image of `set` is tagged at `reg` with its digest (`when` says
/// which import, for the message).
fn assert_all_landed(reg: &Registry, set: &Dataset, when: &str) {
    for i in &set.images {
        assert_eq!(
            tagged(reg, &i.repository, &i.tag),
            i.top.digest.to_string(),
            "{}:{} did not land {when}",
            i.repository,
            i.tag
        );
    }
}

/// The digest `repo:tag` points at in a registry's storage.
fn tagged(reg: &Registry, repo: &str, tag: &str) -> String {
    let link = reg.storage_dir().join(format!(
        "docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link"
    ));
    std::fs::read_to_string(&link).unwrap_or_default()
}

#[test]
fn each_reference_costs_the_floor_plus_named_lookups() {
    let tmp = tempfile::tempdir().unwrap();
    let set = Dataset::load_or_generate_many(&tmp.path().join("set"), REFS, 0, &|_| {}).unwrap();
    assert_eq!(set.images.len(), REFS);
    let source = Registry::start().unwrap();
    set.populate_registry_storage(&source.storage_dir())
        .unwrap();
    let upstream = FaultProxy::start(source.addr(), Vec::new());
    let mut spec = String::from("apiVersion: ferry.dev/v1\nname: perref\nimages:\n");
    for i in &set.images {
        spec.push_str(&format!("  - {}\n", i.reference(&upstream.host())));
    }
    let spec_path = tmp.path().join("bundle.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let bundle = tmp.path().join("b.tar.zst");
    let bundle_s = bundle.to_str().unwrap();

    // Export: one manifest GET per reference, each blob once, one tag
    // listing per repository and one referrers request in all (its 404
    // says the registry has no referrers API); no cosign tag is asked for
    // one by one.
    ok(&ferry(&[
        "export",
        "-f",
        spec_path.to_str().unwrap(),
        "-o",
        bundle_s,
        "--no-cache",
    ]));
    let ex = tally(&upstream);
    let blobs = set.blobs.len();
    assert_eq!(count(&ex, "GET", "blob"), blobs, "{ex:?}");
    assert_eq!(count(&ex, "GET", "manifest"), REFS, "{ex:?}");
    assert_eq!(count(&ex, "HEAD", "manifest"), 0, "{ex:?}");
    assert_eq!(count(&ex, "GET", "tags"), REFS, "{ex:?}");
    assert_eq!(count(&ex, "GET", "referrers"), 1, "{ex:?}");
    let export_floor = REFS + blobs;
    assert!(
        total(&ex) <= export_floor + REFS + 2,
        "export sent {} requests for a floor of {export_floor}: {ex:?}",
        total(&ex)
    );

    // Import into a fresh registry: each blob uploaded once, the shared
    // base mounted into every other repository, one manifest PUT (by its
    // tag) per reference and no manifest existence check.
    let target = Registry::start().unwrap();
    let proxy = FaultProxy::start(target.addr(), Vec::new());
    let out = import_into(bundle_s, &proxy);
    assert!(
        out.contains(&format!("\"manifestsPushed\":{REFS},")),
        "{out}"
    );
    assert!(out.contains("\"manifestsPresent\":0,"), "{out}");
    let im = tally(&proxy);
    assert_eq!(count(&im, "PUT", "manifest"), REFS, "{im:?}");
    assert_eq!(count(&im, "HEAD", "manifest"), 0, "{im:?}");
    assert_eq!(count(&im, "POST", "mount"), REFS - 1, "{im:?}");
    // One session (POST) and one PUT per blob uploaded: the preflight's
    // session of each repository is its first upload's, none is cancelled.
    assert_eq!(count(&im, "POST", "upload"), blobs, "{im:?}");
    assert_eq!(count(&im, "DELETE", "upload"), 0, "{im:?}");
    assert_eq!(count(&im, "PUT", "upload"), blobs, "{im:?}");
    // Every repository is new, which one catalog page says: no tag
    // listing, no blob HEAD.
    let pairs = 3 * REFS;
    assert_eq!(count(&im, "GET", "catalog"), 1, "{im:?}");
    assert_eq!(count(&im, "GET", "tags"), 0, "{im:?}");
    assert_eq!(count(&im, "HEAD", "blob"), 0, "{im:?}");
    let import_floor = 2 * blobs + (pairs - blobs) + REFS;
    assert!(
        total(&im) <= import_floor + 3,
        "import sent {} requests for a floor of {import_floor}: {im:?}",
        total(&im)
    );
    assert_all_landed(&target, &set, "");

    // Again into the same registry: everything is there, nothing is put.
    let again = FaultProxy::start(target.addr(), Vec::new());
    let out = import_into(bundle_s, &again);
    let re = tally(&again);
    // Known repositories (the catalog lists them): their blobs are asked
    // about, each once.
    assert_eq!(count(&re, "GET", "catalog"), 1, "{re:?}");
    assert_eq!(count(&re, "GET", "tags"), 0, "{re:?}");
    assert_eq!(count(&re, "HEAD", "blob"), pairs, "{re:?}");
    assert_eq!(count(&re, "PUT", "manifest"), 0, "{re:?}");
    assert_eq!(count(&re, "PUT", "upload"), 0, "{re:?}");
    assert_eq!(count(&re, "POST", "mount"), 0, "{re:?}");
    // Nothing to upload: each repository's preflight session is cancelled
    // at once.
    assert_eq!(count(&re, "POST", "upload"), REFS, "{re:?}");
    assert_eq!(count(&re, "DELETE", "upload"), REFS, "{re:?}");
    assert!(
        out.contains(&format!("\"manifestsPresent\":{REFS},")),
        "{out}"
    );
    assert!(out.contains("\"manifestsPushed\":0,"), "{out}");

    // A repository that holds blobs and manifests but no tag: the catalog
    // lists it (distribution lists every repository holding a blob), so
    // its blobs are asked about and found, its manifest is found by its
    // digest, and only the tag is put again.
    let untagged = &set.images[0];
    let tags_dir = target.storage_dir().join(format!(
        "docker/registry/v2/repositories/{}/_manifests/tags",
        untagged.repository
    ));
    std::fs::remove_dir_all(&tags_dir).unwrap();
    assert_eq!(tagged(&target, &untagged.repository, &untagged.tag), "");
    let third = FaultProxy::start(target.addr(), Vec::new());
    let out = import_into(bundle_s, &third);
    assert!(out.contains("\"manifestsPushed\":0,"), "{out}");
    assert!(
        out.contains(&format!("\"manifestsPresent\":{REFS},")),
        "{out}"
    );
    let th = tally(&third);
    assert_eq!(count(&th, "HEAD", "blob"), pairs, "{th:?}");
    assert_eq!(count(&th, "PUT", "manifest"), 1, "{th:?}");
    assert_eq!(count(&th, "PUT", "upload"), 0, "{th:?}");
    assert_eq!(count(&th, "POST", "mount"), 0, "{th:?}");
    assert_all_landed(&target, &set, "again");

    // A fresh registry that refuses the catalog (as Harbor does to anyone
    // but an administrator): one tag listing per repository instead, no
    // blob HEAD, and every reference lands.
    let fresh = Registry::start().unwrap();
    let refusing = FaultProxy::start(
        fresh.addr(),
        vec![Fault::new(Action::Status(401))
            .on_path("/v2/_catalog")
            .always()],
    );
    import_into(bundle_s, &refusing);
    let fb = tally(&refusing);
    assert_eq!(count(&fb, "GET", "catalog"), 1, "{fb:?}");
    assert_eq!(count(&fb, "GET", "tags"), REFS, "{fb:?}");
    assert_eq!(count(&fb, "HEAD", "blob"), 0, "{fb:?}");
    assert_eq!(count(&fb, "PUT", "manifest"), REFS, "{fb:?}");
    assert_all_landed(&fresh, &set, "with the catalog refused");
}
