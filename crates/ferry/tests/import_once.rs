//! Import reads the bundle once: the bytes the process reads (`/proc/PID/io`)
//! are the bundle's once, whatever `--jobs` is; and one hash per blob, the
//! reader's, is the check: a streamed blob whose bytes do not match its
//! digest never completes its upload.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ferry, text};
use ferry_bundle::craft::{raw_tar, zstd, RawEntry, Sample};
use ferry_bundle::Digest;
use ferry_testkit::registry::Registry;

/// One bundle of `samples` (each one image with one layer; they share the
/// config), the layer of `corrupt` (if any) with its last byte flipped.
fn bundle(samples: &[Sample], corrupt: Option<usize>) -> Vec<u8> {
    let mut meta = samples[0].meta.clone();
    meta.name = "once".into();
    meta.items = samples.iter().flat_map(|s| s.meta.items.clone()).collect();
    meta.items.sort_by(|x, y| x.reference.cmp(&y.reference));
    // Manifests first, then the one config, then the layers.
    let mut blobs: Vec<_> = samples.iter().map(|s| s.meta.blobs[0].clone()).collect();
    blobs.push(samples[0].meta.blobs[1].clone());
    blobs.extend(samples.iter().map(|s| s.meta.blobs[2].clone()));
    meta.blobs = blobs;
    let index = ferry_bundle::meta::index_json(&meta.items);
    meta.index = ferry_bundle::meta::IndexPin {
        digest: Digest::of(&index),
        size: index.len() as u64,
    };
    let blob = |x: &[u8]| RawEntry::file(&Digest::of(x).layout_path(), x);
    let mut entries = vec![
        RawEntry::file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        RawEntry::file("ferry/bundle.json", &meta.to_json()),
        RawEntry::file("index.json", &index),
    ];
    entries.extend(samples.iter().map(|s| blob(&s.manifest)));
    entries.push(blob(&samples[0].config));
    for (i, s) in samples.iter().enumerate() {
        let mut entry = blob(&s.layer);
        if corrupt == Some(i) {
            let last = entry.data.len() - 1;
            entry.data[last] ^= 1;
        }
        entries.push(entry);
    }
    zstd(&raw_tar(&entries))
}

/// Images whose 3 MiB layers are streamed in 1 MiB chunks.
fn samples(n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            // Incompressible (xorshift): the bundle is as large as its layers.
            let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let layer: Vec<u8> = (0..3usize << 20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            Sample::new(&format!("example.org/once/app{i}:1"), &layer)
        })
        .collect()
}

/// The registry storage path of a blob (present once an upload completed).
fn blob_data(reg: &Registry, d: &Digest) -> std::path::PathBuf {
    let hex = d.to_string()[7..].to_string();
    reg.storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data")
}

/// The digest the registry's tag points at, if the tag exists.
fn tag_link(reg: &Registry, repo: &str, tag: &str) -> Option<String> {
    let p = reg
        .storage_dir()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags")
        .join(tag)
        .join("current/link");
    std::fs::read_to_string(p).ok()
}

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
    let set = samples(4);
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
    let set = samples(2);
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
    let manifests = target
        .storage_dir()
        .join("docker/registry/v2/repositories/example.org/once/app1/_manifests");
    assert!(
        !manifests.exists() || dir_is_empty_of_revisions(&manifests),
        "a manifest of the bad image landed"
    );
}

/// No manifest revision under a repository's `_manifests`.
fn dir_is_empty_of_revisions(manifests: &Path) -> bool {
    let revisions = manifests.join("revisions/sha256");
    std::fs::read_dir(revisions)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}
