//! Split bundles through the bundle writer and the verifying reader.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::Read;
use std::path::{Path, PathBuf};

use ferry_bundle::craft::Sample;
use ferry_bundle::meta::BlobMeta;
use ferry_bundle::parts::{open_bundle, BundleSource, PartsError, PartsManifest};
use ferry_bundle::reader::{
    read_bundle, BlobFault, Head, ReadOptions, Report, VisitResult, Visitor,
};
use ferry_bundle::writer::{BundleWriter, Compression, Written};
use ferry_bundle::Digest;

struct Quiet;

impl Visitor for Quiet {
    fn head(&mut self, _head: &Head) -> VisitResult {
        Ok(())
    }
    fn manifest(&mut self, _blob: &BlobMeta, _bytes: &[u8]) -> VisitResult {
        Ok(())
    }
    fn blob(&mut self, _blob: &BlobMeta, _data: &mut dyn Read) -> VisitResult {
        Ok(())
    }
    fn blob_end(&mut self, _blob: &BlobMeta, _verdict: Result<(), &BlobFault>) -> VisitResult {
        Ok(())
    }
}

/// Incompressible bytes, so a compressed bundle still spans several parts.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sample() -> Sample {
    Sample::new("example.org/team/app:1.0", &noise(300_000))
}

fn write(s: &Sample, path: &Path, compression: Compression, split: Option<u64>) -> Written {
    let mut w = match split {
        Some(size) => BundleWriter::create_split(path, compression, size).unwrap(),
        None => BundleWriter::create(path, compression).unwrap(),
    };
    w.write_head(&s.meta.to_json(), None, &s.index).unwrap();
    for b in [&s.manifest, &s.config, &s.layer] {
        w.write_blob(&Digest::of(b), b.len() as u64, &b[..])
            .unwrap();
    }
    w.finish().unwrap()
}

/// Reads the bundle at `path` the way verify and import do.
fn verify(path: &Path) -> Result<Report, String> {
    let mut src: BundleSource = open_bundle(path).map_err(|e| e.to_string())?;
    match read_bundle(&mut src, ReadOptions::default(), &mut Quiet) {
        Ok(r) => {
            src.finish().map_err(|e| e.to_string())?;
            Ok(r)
        }
        Err(e) => Err(match src.diagnose() {
            Some(part) => part.to_string(),
            None => e.to_string(),
        }),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_parts_concatenate_to_the_unsplit_bundle_in_every_compression() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    for (i, c) in [
        Compression::Zstd { level: 3 },
        Compression::Gzip { level: 6 },
        Compression::None,
    ]
    .into_iter()
    .enumerate()
    {
        let whole = write(&s, &dir.path().join(format!("w{i}.tar")), c, None);
        assert!(whole.parts.is_none());
        let bytes = std::fs::read(&whole.path).unwrap();
        let split = write(
            &s,
            &dir.path().join(format!("s{i}.tar")),
            c,
            Some(64 * 1024),
        );
        let parts = split.parts.as_ref().expect("split output");
        assert!(parts.paths.len() >= 4, "{:?}", parts.paths);
        let mut cat = Vec::new();
        for p in &parts.paths {
            cat.extend(std::fs::read(p).unwrap());
        }
        assert_eq!(cat, bytes, "compression {c:?}");
        assert_eq!(split.sha256, whole.sha256);
        assert_eq!(split.size, whole.size);
        assert_eq!(split.path, dir.path().join(format!("s{i}.parts.json")));
        // The manifest carries the bundle's identity and the whole stream's hash.
        let m = PartsManifest::load(&split.path).unwrap();
        assert_eq!(m.bundle, format!("s{i}.tar"));
        assert_eq!(m.name, s.meta.name);
        assert_eq!(m.format_version, s.meta.format_version);
        assert_eq!(m.bundle_json, Digest::of(&s.meta.to_json()));
        assert_eq!(m.index, s.meta.index);
        assert_eq!(m.sha256, whole.sha256);
        assert_eq!(m.size, bytes.len() as u64);
        assert_eq!(m.part_size, 64 * 1024);
        // No `.sha256` file and no temporary files for the split bundle.
        assert!(!dir.path().join(format!("s{i}.tar.sha256")).exists());
        // Read back through the manifest and through the first part.
        let r = verify(&split.path).unwrap();
        assert_eq!(r.good_items, vec![s.reference.clone()]);
        verify(&parts.paths[0]).unwrap();
    }
    assert!(
        names(dir.path()).iter().all(|n| !n.ends_with(".tmp")),
        "{:?}",
        names(dir.path())
    );
}

#[test]
fn a_corrupt_part_is_named_whatever_the_bad_bytes_decode_to() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    let w = write(
        &s,
        &dir.path().join("b.tar.zst"),
        Compression::default(),
        Some(64 * 1024),
    );
    let parts = w.parts.unwrap();
    for offset in [0usize, 100, 30_000, 65_535] {
        let victim: &PathBuf = &parts.paths[1];
        let good = std::fs::read(victim).unwrap();
        let mut bad = good.clone();
        bad[offset] ^= 0x5a;
        std::fs::write(victim, &bad).unwrap();
        let err = verify(&w.path).unwrap_err();
        let want = format!(
            "part 2 of {} (`b.tar.zst.part-001`): sha256 mismatch",
            parts.paths.len()
        );
        assert!(err.contains(&want), "offset {offset}: {err}");
        std::fs::write(victim, &good).unwrap();
    }
    verify(&w.path).unwrap();
}

#[test]
fn an_abandoned_split_export_leaves_no_part_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sample();
    let layer_digest = Digest::of(&s.layer);
    s.layer[0] ^= 1;
    let path = dir.path().join("x.tar");
    let mut w = BundleWriter::create_split(&path, Compression::None, 64 * 1024).unwrap();
    w.write_head(&s.meta.to_json(), None, &s.index).unwrap();
    for b in [&s.manifest, &s.config] {
        w.write_blob(&Digest::of(b), b.len() as u64, &b[..])
            .unwrap();
    }
    // The writer refuses bytes that are not their digest: nothing is left.
    let e = w
        .write_blob(&layer_digest, s.layer.len() as u64, &s.layer[..])
        .unwrap_err();
    assert!(e.to_string().contains(&layer_digest.to_string()), "{e}");
    drop(w);
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
}

#[test]
fn a_missing_part_stops_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample();
    let w = write(
        &s,
        &dir.path().join("b.tar.zst"),
        Compression::default(),
        Some(64 * 1024),
    );
    let parts = w.parts.unwrap();
    let last = parts.paths.last().unwrap();
    std::fs::remove_file(last).unwrap();
    let err = open_bundle(&w.path).unwrap_err();
    assert!(matches!(err, PartsError::Parts { .. }));
    let n = parts.paths.len();
    assert!(
        err.to_string().contains(&format!(
            "part {n} of {n} (`b.tar.zst.part-{:03}`): missing",
            n - 1
        )),
        "{err}"
    );
}
