//! Import sends each large blob as one streamed PUT, and a blob whose
//! upload failed once its bytes were gone is read again from the bundle in
//! one second pass and uploaded in chunks, before any manifest is pushed.
//! Real `docker-registry` behind the testkit's fault proxy; the layers
//! (6 MiB, incompressible) are larger than the 4 MiB a streamed PUT keeps
//! for a resend, so a fault past them needs the bundle read again.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::crafted::{blob_data, bundle, bundle_and_meta, no_manifest_in, samples, tag_link};
use common::{ferry, text};
use ferry_bundle::craft::Sample;
use ferry_bundle::parts::{Identity, PartsWriter};
use ferry_bundle::Digest;
use ferry_testkit::proxy::{Action, Fault, FaultProxy};
use ferry_testkit::registry::Registry;
use serde_json::Value;

/// Layer size: above the streamed PUT's kept window (4 MiB).
const LAYER_MIB: usize = 6;

/// Bytes of a layer's PUT let through before the cut: past the window.
const CUT_AFTER: u64 = 5_000_000;

/// The import's arguments: 1 MiB chunks (a re-read layer goes in 6
/// PATCHes), 2 attempts per request.
fn import_args<'a>(bundle: &'a str, host: &'a str, jobs: &'a str) -> Vec<&'a str> {
    vec![
        "--json",
        "import",
        bundle,
        "--registry",
        host,
        "--chunk-mib",
        "1",
        "--jobs",
        jobs,
        "--attempts",
        "2",
    ]
}

/// The JSON events of a run.
fn events(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn imported(o: &Output) -> Value {
    events(o)
        .into_iter()
        .find(|v| v["event"] == "imported")
        .unwrap_or_else(|| panic!("no imported event:\n{}", text(o)))
}

/// The warnings that report a second read of the bundle.
fn reread_warnings(o: &Output) -> Vec<String> {
    events(o)
        .into_iter()
        .filter(|v| v["event"] == "warning")
        .filter_map(|v| v["message"].as_str().map(str::to_string))
        .filter(|m| m.contains("did not upload from the first read of the bundle"))
        .collect()
}

fn layer(s: &Sample) -> Digest {
    Digest::of(&s.layer)
}

/// The `PUT …?digest=<d>` of a blob's upload.
fn put_of(d: &Digest) -> Fault {
    Fault::new(Action::Pass)
        .on_method("PUT")
        .on_path(&format!("digest={d}"))
}

fn requests(proxy: &FaultProxy, method: &str) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| r.method == method)
        .count()
}

/// The blob as the registry stores it hashes to its name, and the image's
/// tag points at its manifest.
#[track_caller]
fn landed(target: &Registry, i: usize, s: &Sample) {
    let bytes = std::fs::read(blob_data(target, &layer(s))).unwrap();
    assert_eq!(Digest::of(&bytes), layer(s), "app{i}'s layer");
    assert_eq!(
        tag_link(target, &format!("example.org/once/app{i}"), "1").as_deref(),
        Some(s.manifest_digest().to_string().as_str()),
        "app{i}'s tag"
    );
}

/// Nothing of the image: no layer, no manifest, no tag.
#[track_caller]
fn nothing_of(target: &Registry, i: usize, s: &Sample) {
    let repo = format!("example.org/once/app{i}");
    assert!(!blob_data(target, &layer(s)).exists(), "{repo}'s layer");
    assert_eq!(tag_link(target, &repo, "1"), None, "{repo}'s tag");
    assert!(no_manifest_in(target, &repo), "a manifest of {repo} landed");
}

fn write_bundle(dir: &Path, set: &[Sample]) -> String {
    let path = dir.join("streamed.tar.zst");
    std::fs::write(&path, bundle(set, None)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_streamed_put_cut_past_its_kept_bytes_is_read_again_and_lands_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let target = Registry::start().unwrap();
    let set = samples(2, LAYER_MIB);
    let path = write_bundle(dir.path(), &set);
    let mut cut = put_of(&layer(&set[0]));
    cut.action = Action::CutRequestAfter(CUT_AFTER);
    let proxy = FaultProxy::start(target.addr(), vec![cut]);
    let host = proxy.host();
    let o = ferry(&import_args(&path, &host, "2"));
    assert!(o.status.success(), "{}", text(&o));
    let done = imported(&o);
    assert_eq!(done["failed"].as_array().unwrap().len(), 0, "{done}");
    assert_eq!(done["blobsUploaded"], 3, "{done}");
    landed(&target, 0, &set[0]);
    landed(&target, 1, &set[1]);
    // The second pass is reported, naming how many blobs it read again.
    let warned = reread_warnings(&o);
    assert_eq!(warned.len(), 1, "{}", text(&o));
    assert!(warned[0].starts_with("1 blob(s)"), "{}", warned[0]);
    // The cut PUT was the layer's first attempt; it went again as the six
    // 1 MiB PATCHes of the re-read, and the other layer as one PUT.
    let first = proxy
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT" && r.target.contains(&layer(&set[0]).to_string()))
        .unwrap();
    assert_eq!(first.fault, Some(Action::CutRequestAfter(CUT_AFTER)));
    assert_eq!(requests(&proxy, "PATCH"), 6, "{:#?}", proxy.requests());
}

#[test]
fn a_blob_changed_in_the_bundle_between_the_reads_fails_and_nothing_of_its_image_lands() {
    let dir = tempfile::tempdir().unwrap();
    let target = Registry::start().unwrap();
    let set = samples(2, LAYER_MIB);
    let path = write_bundle(dir.path(), &set);
    // The first layer's PUT is cut past its kept bytes; the second's is
    // held, so the first read cannot end before the bundle is replaced.
    let mut cut = put_of(&layer(&set[0]));
    cut.action = Action::CutRequestAfter(CUT_AFTER);
    let mut hold = put_of(&layer(&set[1]));
    hold.action = Action::Hold;
    let proxy = FaultProxy::start(target.addr(), vec![cut, hold]);
    let host = proxy.host();
    let out = dir.path().join("out.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(import_args(&path, &host, "2"))
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(proxy.held() > 0 && proxy.faults_applied() >= 2) {
        assert!(child.try_wait().unwrap().is_none(), "ferry ended early");
        assert!(Instant::now() < deadline, "{:#?}", proxy.requests());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The bundle on disk now lies about the first layer (its last byte).
    let changed = dir.path().join("changed.tar.zst");
    std::fs::write(&changed, bundle(&set, Some(0))).unwrap();
    std::fs::rename(&changed, &path).unwrap();
    proxy.release();
    let status = child.wait().unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let o = Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: Vec::new(),
    };
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!reread_warnings(&o).is_empty(), "{}", text(&o));
    let done = imported(&o);
    let failed = done["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{done}");
    assert_eq!(failed[0]["source"], "example.org/once/app0:1", "{done}");
    let note = failed[0]["note"].as_str().unwrap();
    assert!(note.contains("no longer matches"), "{note}");
    assert!(note.contains(&layer(&set[0]).to_string()), "{note}");
    nothing_of(&target, 0, &set[0]);
    landed(&target, 1, &set[1]);
}

#[test]
fn a_registry_that_keeps_failing_the_blob_fails_it_after_the_second_read_and_nothing_lands() {
    let dir = tempfile::tempdir().unwrap();
    let target = Registry::start().unwrap();
    let set = samples(1, LAYER_MIB);
    let path = write_bundle(dir.path(), &set);
    // Every PUT of the layer (the streamed one, the re-read's final one)
    // is read whole and answered 503.
    let mut fail = put_of(&layer(&set[0])).always();
    fail.action = Action::Status(503);
    let proxy = FaultProxy::start(target.addr(), vec![fail]);
    let host = proxy.host();
    let o = ferry(&import_args(&path, &host, "2"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(reread_warnings(&o).len(), 1, "{}", text(&o));
    let done = imported(&o);
    assert_eq!(done["loaded"].as_array().unwrap().len(), 0, "{done}");
    let failed = done["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{done}");
    let note = failed[0]["note"].as_str().unwrap();
    assert!(note.contains("503"), "{note}");
    assert!(note.contains("uploaded again from the bundle"), "{note}");
    // The re-read went in chunks, and its final PUT was refused too.
    assert_eq!(requests(&proxy, "PATCH"), 6, "{:#?}", proxy.requests());
    nothing_of(&target, 0, &set[0]);
}

#[test]
fn a_413_to_the_streamed_put_sends_the_blob_in_chunks_and_it_lands() {
    let dir = tempfile::tempdir().unwrap();
    let target = Registry::start().unwrap();
    let set = samples(2, LAYER_MIB);
    let path = write_bundle(dir.path(), &set);
    // A proxy's body limit: the first layer's PUT is read whole, then 413.
    let mut refuse = put_of(&layer(&set[0]));
    refuse.action = Action::Status(413);
    let proxy = FaultProxy::start(target.addr(), vec![refuse]);
    let host = proxy.host();
    // One upload at a time: the second layer starts once the 413 came.
    let o = ferry(&import_args(&path, &host, "1"));
    assert!(o.status.success(), "{}", text(&o));
    let done = imported(&o);
    assert_eq!(done["failed"].as_array().unwrap().len(), 0, "{done}");
    landed(&target, 0, &set[0]);
    landed(&target, 1, &set[1]);
    assert_eq!(reread_warnings(&o).len(), 1, "{}", text(&o));
    // The refused layer went again in chunks from the re-read, and the
    // host is remembered: the second layer went in chunks at once.
    assert_eq!(requests(&proxy, "PATCH"), 12, "{:#?}", proxy.requests());
    let puts = |d: &Digest| {
        proxy
            .requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.target.contains(&format!("digest={d}")))
            .count()
    };
    // The refused PUT and the re-read's final one; the second layer's final one.
    assert_eq!(puts(&layer(&set[0])), 2, "{:#?}", proxy.requests());
    assert_eq!(puts(&layer(&set[1])), 1, "{:#?}", proxy.requests());
}

#[test]
fn a_split_bundle_is_read_again_from_its_parts() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let target = Registry::start().unwrap();
    let set = samples(2, LAYER_MIB);
    // Parts of 5 MiB: the second layer starts in the third part.
    let (bytes, meta_json) = bundle_and_meta(&set, None);
    let path = dir.path().join("split.tar.zst");
    let mut w = PartsWriter::create(&path, 5 << 20).unwrap();
    w.write_all(&bytes).unwrap();
    let written = w
        .finish(
            Identity::from_meta_json(&meta_json).unwrap(),
            bytes.len() as u64,
            Digest::of(&bytes),
        )
        .unwrap();
    assert!(written.paths.len() >= 3, "{:?}", written.paths);
    let manifest = written.manifest_path.to_str().unwrap().to_string();
    let mut cut = put_of(&layer(&set[1]));
    cut.action = Action::CutRequestAfter(CUT_AFTER);
    let proxy = FaultProxy::start(target.addr(), vec![cut]);
    let host = proxy.host();
    let o = ferry(&import_args(&manifest, &host, "2"));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(reread_warnings(&o).len(), 1, "{}", text(&o));
    assert_eq!(imported(&o)["failed"].as_array().unwrap().len(), 0);
    landed(&target, 0, &set[0]);
    landed(&target, 1, &set[1]);
    assert_eq!(requests(&proxy, "PATCH"), 6, "{:#?}", proxy.requests());
}
