//! The parts writer, reader and opener together: round trips, faults named
//! by part, hostile manifests.

use std::io::{self, Read, Write};
use std::path::Path;

use crate::digest::Digest;
use crate::meta::IndexPin;

use super::*;

fn identity() -> Identity {
    Identity {
        format_version: 1,
        name: "demo".into(),
        tool: "ferry test".into(),
        bundle_json: Digest::of(b"{}"),
        index: IndexPin {
            digest: Digest::of(b"index"),
            size: 5,
        },
    }
}

fn stream(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Writes `data` split at `part_size` into `dir/demo.tar.zst.part-*`.
fn split(dir: &Path, data: &[u8], part_size: u64, chunk: usize) -> PartsWritten {
    let bundle = dir.join("demo.tar.zst");
    let mut w = PartsWriter::create(&bundle, part_size).unwrap();
    for c in data.chunks(chunk) {
        w.write_all(c).unwrap();
    }
    w.flush().unwrap();
    w.finish(identity(), data.len() as u64, Digest::of(data))
        .unwrap()
}

fn read_all(path: &Path) -> Result<Vec<u8>, (io::Error, Option<PartsError>)> {
    let mut src = open_bundle(path).map_err(|e| (io::Error::other(e.to_string()), None))?;
    let mut out = Vec::new();
    match src.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) => {
            let d = src.diagnose();
            Err((e, d))
        }
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_writer_rolls_parts_and_the_reader_gives_the_stream_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = stream(10_000);
    // Odd write sizes that straddle part boundaries.
    let w = split(tmp.path(), &data, 4096, 777);
    let sizes: Vec<u64> = w.manifest.parts.iter().map(|p| p.size).collect();
    assert_eq!(sizes, vec![4096, 4096, 1808]);
    assert_eq!(w.manifest.size, 10_000);
    assert_eq!(w.manifest.sha256, Digest::of(&data));
    assert_eq!(w.manifest_path, tmp.path().join("demo.parts.json"));
    assert_eq!(
        listing(tmp.path()),
        vec![
            "demo.parts.json",
            "demo.tar.zst.part-000",
            "demo.tar.zst.part-001",
            "demo.tar.zst.part-002"
        ]
    );
    let mut cat = Vec::new();
    for (p, entry) in w.paths.iter().zip(&w.manifest.parts) {
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(Digest::of(&bytes), entry.sha256);
        cat.extend(bytes);
    }
    assert_eq!(cat, data, "the parts concatenate to the stream");
    // The manifest on disk is the one returned, and parses back.
    let loaded = PartsManifest::load(&w.manifest_path).unwrap();
    assert_eq!(loaded, w.manifest);
    // Through the manifest and through the first part.
    assert_eq!(read_all(&w.manifest_path).unwrap(), data);
    assert_eq!(read_all(&w.paths[0]).unwrap(), data);
}

#[test]
fn an_exact_multiple_has_no_empty_last_part() {
    let tmp = tempfile::tempdir().unwrap();
    let data = stream(8192);
    let w = split(tmp.path(), &data, 4096, 4096);
    assert_eq!(w.manifest.parts.len(), 2);
    assert_eq!(read_all(&w.manifest_path).unwrap(), data);
}

#[test]
fn stale_parts_of_a_longer_earlier_export_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    split(tmp.path(), &stream(20_000), 4096, 1000);
    assert_eq!(listing(tmp.path()).len(), 6);
    let w = split(tmp.path(), &stream(5000), 4096, 1000);
    assert_eq!(w.manifest.parts.len(), 2);
    assert_eq!(
        listing(tmp.path()),
        vec![
            "demo.parts.json",
            "demo.tar.zst.part-000",
            "demo.tar.zst.part-001"
        ]
    );
}

#[test]
fn an_abandoned_writer_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = PartsWriter::create(&tmp.path().join("demo.tar.zst"), 4096).unwrap();
    w.write_all(&stream(10_000)).unwrap();
    drop(w);
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
}

#[test]
fn a_missing_part_is_named_before_anything_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let w = split(tmp.path(), &stream(10_000), 4096, 4096);
    std::fs::remove_file(&w.paths[1]).unwrap();
    let err = open_bundle(&w.manifest_path).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("part 2 of 3 (`demo.tar.zst.part-001`): missing — copy this part again"),
        "{text}"
    );
    assert_eq!(err.faults().len(), 1);
}

#[test]
fn a_truncated_part_is_named_before_anything_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let w = split(tmp.path(), &stream(10_000), 4096, 4096);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&w.paths[2])
        .unwrap();
    f.set_len(100).unwrap();
    let err = open_bundle(&w.paths[0]).unwrap_err();
    assert!(
        err.to_string()
            .contains("part 3 of 3 (`demo.tar.zst.part-002`): truncated: 100 of 1808 bytes"),
        "{err}"
    );
}

#[test]
fn a_corrupt_part_stops_the_stream_at_its_end_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = stream(10_000);
    let w = split(tmp.path(), &data, 4096, 4096);
    let mut bytes = std::fs::read(&w.paths[1]).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&w.paths[1], &bytes).unwrap();
    let mut src = open_bundle(&w.manifest_path).unwrap();
    let mut out = Vec::new();
    let err = src.read_to_end(&mut out).unwrap_err();
    // Nothing of the next part was handed out.
    assert_eq!(out.len(), 8192);
    let text = err.to_string();
    assert!(
        text.contains("part 2 of 3 (`demo.tar.zst.part-001`): sha256 mismatch, expected "),
        "{text}"
    );
    assert!(text.contains(&w.manifest.parts[1].sha256.hex()), "{text}");
    assert!(text.contains(&Digest::of(&bytes).hex()), "{text}");
    assert!(text.ends_with("copy this part again"), "{text}");
    // The error stays: reading on gives it again.
    assert!(src.read(&mut [0u8; 16]).is_err());
}

#[test]
fn a_downstream_failure_mid_part_is_blamed_on_the_corrupt_part() {
    let tmp = tempfile::tempdir().unwrap();
    let w = split(tmp.path(), &stream(10_000), 4096, 4096);
    let mut bytes = std::fs::read(&w.paths[1]).unwrap();
    bytes[4000] ^= 1;
    std::fs::write(&w.paths[1], &bytes).unwrap();
    let mut src = open_bundle(&w.manifest_path).unwrap();
    // A consumer that gives up in the middle of part 2 (as a decompressor
    // does on bad bytes).
    let mut buf = vec![0u8; 5000];
    src.read_exact(&mut buf).unwrap();
    let err = src.diagnose().expect("the part is blamed");
    assert!(
        err.to_string()
            .contains("part 2 of 3 (`demo.tar.zst.part-001`): sha256 mismatch"),
        "{err}"
    );
}

#[test]
fn intact_parts_are_not_blamed_for_a_downstream_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let w = split(tmp.path(), &stream(10_000), 4096, 4096);
    let mut src = open_bundle(&w.manifest_path).unwrap();
    let mut buf = vec![0u8; 5000];
    src.read_exact(&mut buf).unwrap();
    assert!(src.diagnose().is_none());
    // finish() reads and checks the rest.
    src.finish().unwrap();
}

#[test]
fn finish_checks_the_bytes_a_consumer_left_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let w = split(tmp.path(), &stream(10_000), 4096, 4096);
    let mut bytes = std::fs::read(&w.paths[2]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&w.paths[2], &bytes).unwrap();
    let mut src = open_bundle(&w.manifest_path).unwrap();
    let mut buf = vec![0u8; 100];
    src.read_exact(&mut buf).unwrap();
    let err = src.finish().unwrap_err();
    assert!(err.to_string().contains("part 3 of 3"), "{err}");
}

#[test]
fn a_part_that_shrinks_while_read_is_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let w = split(tmp.path(), &stream(10_000), 4096, 4096);
    let mut src = open_bundle(&w.manifest_path).unwrap();
    // Passed the up-front check, then the medium lost bytes.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&w.paths[0])
        .unwrap();
    f.set_len(1000).unwrap();
    let mut out = Vec::new();
    let err = src.read_to_end(&mut out).unwrap_err();
    assert!(
        err.to_string()
            .contains("part 1 of 3 (`demo.tar.zst.part-000`): truncated: 1000 of 4096 bytes"),
        "{err}"
    );
}

#[test]
fn one_part_is_verified_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let w = split(tmp.path(), &stream(10_000), 4096, 4096);
    // Only part 2 and the manifest on this "stick".
    let stick = tmp.path().join("stick");
    std::fs::create_dir(&stick).unwrap();
    std::fs::copy(&w.paths[1], stick.join("demo.tar.zst.part-001")).unwrap();
    std::fs::copy(&w.manifest_path, stick.join("demo.parts.json")).unwrap();
    let located = locate_part(&stick.join("demo.tar.zst.part-001")).unwrap();
    assert_eq!(located.index, 1);
    assert_eq!(
        located.missing_others(),
        vec!["demo.tar.zst.part-000", "demo.tar.zst.part-002"]
    );
    let check = located.verify().unwrap();
    assert_eq!((check.number, check.count), (2, 3));
    assert_eq!(check.entry, w.manifest.parts[1]);
    // A flipped byte is caught.
    let mut bytes = std::fs::read(stick.join("demo.tar.zst.part-001")).unwrap();
    bytes[0] ^= 1;
    std::fs::write(stick.join("demo.tar.zst.part-001"), &bytes).unwrap();
    let err = located.verify().unwrap_err();
    assert!(
        err.to_string()
            .contains("part 2 of 3 (`demo.tar.zst.part-001`): sha256 mismatch"),
        "{err}"
    );
    // A later part is not a bundle on its own.
    let err = open_bundle(&stick.join("demo.tar.zst.part-001")).unwrap_err();
    assert!(
        matches!(
            err,
            PartsError::NotFirst {
                number: 2,
                count: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_part_without_its_manifest_says_what_to_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let w = split(tmp.path(), &stream(10_000), 4096, 4096);
    std::fs::remove_file(&w.manifest_path).unwrap();
    let err = open_bundle(&w.paths[0]).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PartsError::NoManifest { .. }), "{text}");
    assert!(text.contains("demo.parts.json"), "{text}");
}

#[test]
fn the_unsplit_name_points_at_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let w = split(tmp.path(), &stream(10_000), 4096, 4096);
    let err = open_bundle(&tmp.path().join("demo.tar.zst")).unwrap_err();
    assert!(matches!(err, PartsError::WasSplit { .. }), "{err}");
    assert!(err
        .to_string()
        .contains(&w.manifest_path.display().to_string()));
}

#[test]
fn hostile_manifests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = split(tmp.path(), &stream(10_000), 4096, 4096);
    let base: serde_json::Value = serde_json::from_slice(&w.manifest.to_json()).unwrap();
    type Mutate = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutate)> = vec![
        (
            "not a plain file name",
            Box::new(|v| v["parts"][0]["name"] = "../etc/passwd".into()),
        ),
        (
            "not a plain file name",
            Box::new(|v| v["parts"][0]["name"] = "/abs".into()),
        ),
        (
            "listed twice",
            Box::new(|v| v["parts"][1]["name"] = v["parts"][0]["name"].clone()),
        ),
        ("add up", Box::new(|v| v["size"] = 5.into())),
        ("no parts", Box::new(|v| v["parts"] = serde_json::json!([]))),
        ("partsVersion 2", Box::new(|v| v["partsVersion"] = 2.into())),
        ("hex", Box::new(|v| v["parts"][0]["sha256"] = "XYZ".into())),
    ];
    for (want, mutate) in cases {
        let mut v = base.clone();
        mutate(&mut v);
        let path = tmp.path().join("bad.parts.json");
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let err = open_bundle(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bad.parts.json") && text.contains(want),
            "{want}: {text}"
        );
    }
}
