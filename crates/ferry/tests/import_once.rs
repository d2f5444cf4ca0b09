//! Import reads the bundle once: the bytes the process reads (`/proc/PID/io`)
//! are the bundle's once, whatever `--jobs` is; and one hash per blob, the
//! reader's, is the check: a streamed blob whose bytes do not match its
//! digest never completes its upload.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::crafted::{blob_data, bundle, no_manifest_in, samples, tag_link};
use common::{ferry, text};
use ferry_bundle::Digest;
use ferry_testkit::registry::Registry;

/// Bytes the process `pid` has read (`rchar` of `/proc/PID/io`: files and
/// sockets alike), once it has exited but is not yet reaped.
fn read_bytes_at_exit(child: &mut std::process::Child) -> (u64, std::process::ExitStatus) {
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The state follows the command name in parentheses.
        let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
        if state == Some("Z") {
            break;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("import did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let rchar = io
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (rchar, child.wait().unwrap())
}

#[test]
fn import_reads_the_bundle_once_with_uploads_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let target = Registry::start().unwrap();
    let set = samples(4, 3);
    let bytes = bundle(&set, None);
    let path = dir.path().join("once.tar.zst");
    std::fs::write(&path, &bytes).unwrap();
    let out = dir.path().join("out.json");
    let err = dir.path().join("err.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--json", "import"])
        .arg(&path)
        .args([
            "--registry",
            &target.host(),
            "--chunk-mib",
            "1",
            "--jobs",
            "3",
        ])
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let (read, status) = read_bytes_at_exit(&mut child);
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert!(
        status.success(),
        "{stdout}{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    // The bundle's bytes once (the layers are incompressible, so the bundle
    // is as large as they are), plus the head the CLI reads first and the
    // registry's small responses; a second decompression of the bundle
    // would read it again.
    let len = bytes.len() as u64;
    assert!(
        read >= len && read < len + len / 2,
        "ferry read {read} bytes for a bundle of {len}"
    );
    let done: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "imported")
        .expect("imported event");
    assert_eq!(done["readers"], 1, "{done}");
    assert_eq!(done["failed"].as_array().unwrap().len(), 0, "{done}");
    // Every layer and the config were uploaded, byte-exact (the registry
    // checks each digest), and every tag points at its manifest.
    assert_eq!(done["blobsUploaded"], 5, "{done}");
    for (i, s) in set.iter().enumerate() {
        assert!(blob_data(&target, &Digest::of(&s.layer)).is_file());
        assert_eq!(
            tag_link(&target, &format!("example.org/once/app{i}"), "1").as_deref(),
            Some(s.manifest_digest().to_string().as_str())
        );
    }
}

#[test]
fn a_streamed_layer_that_fails_its_digest_never_completes_its_upload() {
    let dir = tempfile::tempdir().unwrap();
    let target = Registry::start().unwrap();
    let set = samples(2, 3);
    // The second image's layer differs from its digest in its last byte
    // only: every chunk but the last matches what the upload expects.
    let path = dir.path().join("bad.tar.zst");
    std::fs::write(&path, bundle(&set, Some(1))).unwrap();
    let o = ferry(&[
        "import",
        path.to_str().unwrap(),
        "--registry",
        &target.host(),
        "--chunk-mib",
        "1",
        "--jobs",
        "3",
    ]);
    let msg = text(&o);
    assert_eq!(o.status.code(), Some(3), "{msg}");
    assert!(
        msg.contains("example.org/once/app1:1") && msg.contains("FAILED"),
        "{msg}"
    );
    // The good image landed; of the bad one, neither its layer nor its tag.
    assert_eq!(
        tag_link(&target, "example.org/once/app0", "1").as_deref(),
        Some(set[0].manifest_digest().to_string().as_str())
    );
    assert!(blob_data(&target, &Digest::of(&set[0].layer)).is_file());
    assert!(!blob_data(&target, &Digest::of(&set[1].layer)).exists());
    assert_eq!(tag_link(&target, "example.org/once/app1", "1"), None);
    assert!(
        no_manifest_in(&target, "example.org/once/app1"),
        "a manifest of the bad image landed"
    );
}
