//! `cargo xtask fuzz`: runs the cargo-fuzz targets under `fuzz/` for a
//! fixed time each and prints what they found (docs/fuzzing.md).
//!
//! 1. Checks for a nightly toolchain (cargo-fuzz builds with sanitizers, a
//!    nightly-only feature) and says exactly what to install when there is
//!    none; installs `cargo-fuzz` with `cargo install --locked` when missing.
//! 2. Writes seed inputs generated from the project's own fixtures into
//!    `fuzz/corpus/<target>/` (`seed-*`; the directory is not committed):
//!    bundles written by the real [`BundleWriter`] (plain, zstd, gzip,
//!    signed, differential with platform-filtered children), manifests and
//!    indexes from `ferry_testkit::fixtures`, and every spec under
//!    `fixtures/` and in the documentation. The small hand-written seeds in
//!    `fuzz/seeds/<target>/` are passed as a second, read-only corpus.
//! 3. Runs `cargo +nightly fuzz run TARGET -- -max_total_time=N …` for each
//!    target in turn (one job, one process) and prints per target the runs,
//!    whether it found a crash, timeout or out-of-memory input (with the
//!    artifact and the command to minimise it), and the corpus size.
//!
//! Fails when a target found something.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_bundle::craft::Sample;
use ferry_bundle::manifest::{self, MediaType};
use ferry_bundle::meta::{
    self, Absent, BaseBlob, BlobMeta, BundleMeta, IndexPin, Item, Kind, Role, FORMAT_VERSION,
};
use ferry_bundle::sign;
use ferry_bundle::writer::{BundleWriter, Compression};
use ferry_bundle::Digest;
use ferry_testkit::fixtures::{FixtureImage, FixtureOptions, FixtureSet};

use crate::root;

/// The fuzz targets, in the order they run.
pub const TARGETS: &[&str] = &["bundle_reader", "spec_parser", "manifest_parser"];

/// What `cargo xtask fuzz` was asked.
pub struct Options {
    /// Seconds per target.
    pub seconds: u64,
    /// Only this target.
    pub target: Option<String>,
    /// libFuzzer's `-rss_limit_mb` (also its per-allocation limit).
    pub rss_limit_mb: u64,
    /// libFuzzer's `-timeout`: seconds one input may take.
    pub timeout: u64,
}

/// What one run found.
struct Outcome {
    target: String,
    /// Seconds fuzzed (libFuzzer's count; else the wall time with the build).
    seconds: f64,
    runs: Option<u64>,
    /// `None`: nothing found; else the kind (crash, timeout, oom, leak).
    finding: Option<String>,
    artifact: Option<String>,
    corpus_files: usize,
    corpus_bytes: u64,
    exit: Option<i32>,
}

pub fn run(o: &Options) -> Result<()> {
    let targets: Vec<&str> = match &o.target {
        None => TARGETS.to_vec(),
        Some(t) => match TARGETS.iter().find(|x| **x == t.as_str()) {
            Some(t) => vec![*t],
            None => bail!(
                "no fuzz target `{t}`: the targets are {}",
                TARGETS.join(", ")
            ),
        },
    };
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let fuzz = root().join("fuzz");
    for t in &targets {
        let n = write_seeds(t, &fuzz.join("corpus").join(t))
            .with_context(|| format!("writing the seeds of `{t}`"))?;
        eprintln!("xtask: {t}: {n} generated seed(s) in fuzz/corpus/{t}/");
    }
    let mut outcomes = Vec::new();
    for t in &targets {
        outcomes.push(run_target(t, o, &fuzz)?);
    }
    eprintln!();
    eprintln!(
        "{:<16} {:>8} {:>12}  {:<10} corpus",
        "target", "seconds", "runs", "result"
    );
    for r in &outcomes {
        eprintln!(
            "{:<16} {:>8.0} {:>12}  {:<10} {} files, {} KiB",
            r.target,
            r.seconds,
            r.runs.map_or_else(|| "?".into(), |n| n.to_string()),
            r.finding.as_deref().unwrap_or("ok"),
            r.corpus_files,
            r.corpus_bytes.div_ceil(1024),
        );
    }
    let found: Vec<&Outcome> = outcomes.iter().filter(|r| r.finding.is_some()).collect();
    if found.is_empty() {
        return Ok(());
    }
    eprintln!();
    for r in &found {
        match &r.artifact {
            Some(a) => eprintln!(
                "{}: {} input saved as {a}\n  minimise: cargo +nightly fuzz tmin {} {a}\n  replay:   cargo +nightly fuzz run {} {a}\n  then add the minimised input to crates/ferry-bundle/tests/fuzz_regressions.rs",
                r.target,
                r.finding.as_deref().unwrap_or("failing"),
                r.target,
                r.target
            ),
            None => eprintln!(
                "{}: {} (exit {:?}); see the output above",
                r.target,
                r.finding.as_deref().unwrap_or("failed"),
                r.exit
            ),
        }
    }
    bail!("{} fuzz target(s) found a failing input", found.len())
}

/// `cargo` as found on `PATH` (rustup's proxy, which understands
/// `+nightly`), not the toolchain's own binary that runs this xtask.
fn rustup_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    c.current_dir(root());
    c
}

fn ensure_nightly() -> Result<()> {
    let ok = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!(
            "cargo xtask fuzz needs a nightly Rust toolchain (cargo-fuzz builds with sanitizers, \
             a nightly-only feature) and there is none: install it with \
             `rustup toolchain install nightly` (and rustup itself from https://rustup.rs if \
             `rustup` is missing); the project's own build stays on stable"
        );
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = rustup_cargo()
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    let mut c = rustup_cargo();
    c.args(["install", "cargo-fuzz", "--locked"]);
    crate::run(c, "cargo install cargo-fuzz --locked")
}

fn run_target(target: &str, o: &Options, fuzz: &Path) -> Result<Outcome> {
    let corpus = fuzz.join("corpus").join(target);
    let seeds = fuzz.join("seeds").join(target);
    let mut c = rustup_cargo();
    c.args(["+nightly", "fuzz", "run", "--release", "--debug-assertions"])
        .arg("--target-dir")
        .arg(fuzz.join("target"))
        .arg(target)
        .arg(&corpus);
    if seeds.is_dir() {
        c.arg(&seeds);
    }
    c.arg("--").args([
        format!("-max_total_time={}", o.seconds),
        format!("-rss_limit_mb={}", o.rss_limit_mb),
        format!("-timeout={}", o.timeout),
        "-print_final_stats=1".into(),
    ]);
    if target == "bundle_reader" {
        // read_bundle decompresses on a scoped thread. `thread::scope`
        // returns once the thread's closure is done, before the OS thread
        // has run its TLS destructors and exited, so LeakSanitizer may catch
        // glibc's 32-byte thread-exit record still allocated and report a
        // leak that is not one (found by this target, not reproducible on
        // the same input). Leaks are not memory-safety bugs in Rust anyway.
        c.arg("-detect_leaks=0");
    }
    c.stderr(Stdio::piped());
    eprintln!(
        "xtask: fuzzing {target} for {}s (cargo +nightly fuzz run {target} -- -max_total_time={} -rss_limit_mb={} -timeout={})",
        o.seconds, o.seconds, o.rss_limit_mb, o.timeout
    );
    let started = Instant::now();
    let mut child = c
        .spawn()
        .context("failed to start `cargo +nightly fuzz run`")?;
    let mut log = Vec::new();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line.unwrap_or_default();
            eprintln!("{line}");
            log.push(line);
        }
    }
    let status = child.wait()?;
    let (files, bytes) = corpus_size(&corpus);
    let (runs, fuzzed, finding, artifact) = parse_log(&log);
    let seconds = fuzzed.unwrap_or_else(|| started.elapsed().as_secs_f64());
    let finding = match (finding, status.success()) {
        (Some(f), _) => Some(f),
        (None, true) => None,
        (None, false) => Some("error".to_string()),
    };
    Ok(Outcome {
        target: target.into(),
        seconds,
        runs,
        finding,
        artifact,
        corpus_files: files,
        corpus_bytes: bytes,
        exit: status.code(),
    })
}

type Parsed = (Option<u64>, Option<f64>, Option<String>, Option<String>);

/// Runs, seconds, what was found and the artifact, from libFuzzer's output.
fn parse_log(log: &[String]) -> Parsed {
    let mut runs = None;
    let mut seconds = None;
    let mut finding = None;
    let mut artifact = None;
    for line in log {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            runs = n.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // `Done 117560 runs in 61 second(s)`
            let words: Vec<&str> = rest.split_whitespace().collect();
            if runs.is_none() {
                runs = words.first().and_then(|n| n.parse().ok());
            }
            seconds = words.get(3).and_then(|n| n.parse().ok());
        }
        let kind = if line.contains("ERROR: libFuzzer: timeout") {
            Some("timeout")
        } else if line.contains("ERROR: libFuzzer: out-of-memory") {
            Some("oom")
        } else if line.contains("ERROR: LeakSanitizer") {
            Some("leak")
        } else if line.contains("ERROR: libFuzzer: deadly signal")
            || line.contains("ERROR: AddressSanitizer")
            || line.contains("ERROR: libFuzzer: fuzz target exited")
        {
            Some("crash")
        } else {
            None
        };
        if finding.is_none() {
            if let Some(k) = kind {
                finding = Some(k.to_string());
            }
        }
        if let Some(i) = line.find("Test unit written to ") {
            artifact = Some(line[i + "Test unit written to ".len()..].trim().to_string());
        }
    }
    if finding.is_none() && artifact.is_some() {
        finding = Some("crash".into());
    }
    (runs, seconds, finding, artifact)
}

fn corpus_size(dir: &Path) -> (usize, u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    rd.flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}

// ---------------------------------------------------------------- seeds

/// Writes the generated seeds of `target` into `dir`; returns how many.
fn write_seeds(target: &str, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir)?;
    let seeds = match target {
        "bundle_reader" => bundle_seeds()?,
        "spec_parser" => spec_seeds()?,
        "manifest_parser" => manifest_seeds(),
        _ => Vec::new(),
    };
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(seeds.len())
}

/// A bundle in memory, as the writer lays it out.
struct Bundle {
    meta: BundleMeta,
    index: Vec<u8>,
    /// Blobs in tar order (manifests first).
    blobs: Vec<Vec<u8>>,
}

impl Bundle {
    fn sample() -> Bundle {
        let s = Sample::new("docker.io/library/sample:1", b"a small layer\n");
        Bundle {
            blobs: vec![s.manifest.clone(), s.config.clone(), s.layer.clone()],
            meta: s.meta,
            index: s.index,
        }
    }

    /// `image` as export writes it, with the children of platforms in
    /// `drop` left out (declared absent) and, when `layers_as_base`, the
    /// layers declared base blobs instead of carried.
    fn of(image: &FixtureImage, drop: &[&str], layers_as_base: bool) -> Bundle {
        let top = &image.top;
        let mut manifests = vec![(
            top.digest.clone(),
            top.bytes.to_vec(),
            top.media_type.clone(),
        )];
        let mut absent = Vec::new();
        let mut kept = vec![&image.top];
        for c in &image.children {
            if c.platform.as_deref().is_some_and(|p| drop.contains(&p)) {
                absent.push(Absent {
                    digest: c.digest.clone(),
                    parent: top.digest.clone(),
                    platform: c.platform.clone(),
                });
            } else {
                manifests.push((c.digest.clone(), c.bytes.to_vec(), c.media_type.clone()));
                kept.push(c);
            }
        }
        // The configs and layers the kept manifests reference, each once.
        let mut configs = Vec::new();
        let mut layers = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for m in &kept {
            let Ok(p) = manifest::parse(&m.bytes, Some(&m.media_type)) else {
                continue;
            };
            for (i, d) in p.blobs().enumerate() {
                if !seen.insert(d.digest.clone()) {
                    continue;
                }
                if let Some(b) = image.blob(&d.digest) {
                    let entry = (b.digest.clone(), b.data.to_vec(), b.media_type.clone());
                    if i == 0 {
                        configs.push(entry);
                    } else {
                        layers.push(entry);
                    }
                }
            }
        }
        let mut blobs_meta = Vec::new();
        let mut blobs = Vec::new();
        let mut base = Vec::new();
        for (role_of, list) in [(0, manifests), (1, configs), (2, layers)] {
            for (digest, bytes, media_type) in list {
                let role = match role_of {
                    0 if manifest::is_index(&media_type) => Role::Index,
                    0 => Role::Manifest,
                    1 => Role::Config,
                    _ => Role::Layer,
                };
                if role == Role::Layer && layers_as_base {
                    base.push(BaseBlob {
                        digest,
                        size: bytes.len() as u64,
                        repository: Some(image.repository.clone()),
                    });
                    continue;
                }
                blobs_meta.push(BlobMeta {
                    digest,
                    size: bytes.len() as u64,
                    role,
                    media_type: Some(MediaType::from(media_type.as_str())),
                });
                blobs.push(bytes);
            }
        }
        let platforms: Vec<String> = kept.iter().filter_map(|m| m.platform.clone()).collect();
        let items = vec![Item {
            kind: Kind::Image,
            reference: format!("docker.io/{}:{}", image.repository, image.tag),
            digest: top.digest.clone(),
            media_type: MediaType::from(top.media_type.as_str()),
            size: top.size(),
            platforms,
            path: None,
            subject: None,
        }];
        let index = meta::index_json(&items);
        Bundle {
            meta: BundleMeta {
                format_version: FORMAT_VERSION,
                tool: "ferry xtask fuzz".into(),
                name: "seed".into(),
                index: IndexPin {
                    digest: Digest::of(&index),
                    size: index.len() as u64,
                },
                items,
                blobs: blobs_meta,
                absent,
                base,
                verification: None,
                origin: None,
            },
            index,
            blobs,
        }
    }

    /// The bundle file, written by the real writer.
    fn write(&self, compression: Compression, signature: Option<&[u8]>) -> Result<Vec<u8>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("seed.tar");
        let mut w = BundleWriter::create(&path, compression)?;
        w.write_head(&self.meta.to_json(), signature, &self.index)?;
        for (b, bytes) in self.meta.blobs.iter().zip(&self.blobs) {
            w.write_blob(&b.digest, b.size, bytes.as_slice())?;
        }
        let written = w.finish()?;
        Ok(std::fs::read(written.path)?)
    }
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(mode);
    v.extend_from_slice(bytes);
    v
}

/// bundle_reader: mode byte + bundle file (see its doc comment).
fn bundle_seeds() -> Result<Vec<(String, Vec<u8>)>> {
    let set = FixtureSet::generate(&FixtureOptions {
        many_layers: 3,
        ..FixtureOptions::default()
    });
    let sample = Bundle::sample();
    let tar = sample.write(Compression::None, None)?;
    let zst = sample.write(Compression::Zstd { level: 3 }, None)?;
    let gz = sample.write(Compression::Gzip { level: 6 }, None)?;
    let keys = tempfile::tempdir()?;
    let generated = sign::generate(&keys.path().join("seed"), None)?;
    let signer = sign::SigningKey::load(&generated.secret, None)?;
    let meta_json = sample.meta.to_json();
    let signature = signer.sign(
        &meta_json,
        &sign::bundle_comment(&sample.meta.name, &sample.meta.index.digest),
    )?;
    let signed = sample.write(Compression::None, Some(&signature))?;
    let multi = Bundle::of(set.image("fixtures/multiarch"), &["linux/s390x"], true)
        .write(Compression::None, None)?;
    let list =
        Bundle::of(set.image("fixtures/docker-list"), &[], true).write(Compression::None, None)?;
    let trivy =
        Bundle::of(set.image("fixtures/trivy-db"), &[], true).write(Compression::None, None)?;
    let mut seeds = vec![
        // As the file is: plain tar, zstd, gzip.
        ("sample-tar".to_string(), with_mode(0, &tar)),
        ("sample-zst".into(), with_mode(0, &zst)),
        ("sample-gz".into(), with_mode(0, &gz)),
        // The tar, compressed by the harness.
        ("sample-tar-zstd".into(), with_mode(1, &tar)),
        // keep_going, and the visitor modes (read all, one chunk, stop).
        ("sample-keep-going".into(), with_mode(2, &tar)),
        ("sample-read-all".into(), with_mode(4, &tar)),
        ("sample-read-chunk".into(), with_mode(8 | 1, &tar)),
        ("sample-stop".into(), with_mode(12, &zst)),
        ("signed".into(), with_mode(0, &signed)),
        ("multiarch-filtered-diff".into(), with_mode(0, &multi)),
        (
            "multiarch-filtered-diff-zstd".into(),
            with_mode(1 | 4, &multi),
        ),
        ("docker-list-diff".into(), with_mode(2 | 4, &list)),
        ("trivy-artifact".into(), with_mode(4, &trivy)),
        // Header checksums fixed up by the harness after each mutation.
        ("sample-tar-cksum".into(), with_mode(16, &tar)),
        ("sample-tar-cksum-zstd".into(), with_mode(16 | 4 | 1, &tar)),
        ("signed-cksum".into(), with_mode(16 | 2, &signed)),
        ("multiarch-cksum".into(), with_mode(16 | 4, &multi)),
    ];
    // Data around the file (bits 5-7): the byte after the mode says how
    // many of the input's last bytes are put after (or before) it, as a
    // skippable frame, a second zstd frame or as they are.
    for (name, mode, file) in [
        ("sample-zst-skippable-after", 32, &zst),
        ("sample-zst-frame-after", 64, &zst),
        ("sample-zst-bytes-after", 96, &zst),
        ("sample-tar-bytes-after", 96, &tar),
        ("sample-gz-frame-after", 64, &gz),
        ("sample-zst-skippable-before", 128 | 32, &zst),
        ("signed-frame-after", 64, &signed),
    ] {
        let mut input = vec![mode, 16];
        input.extend_from_slice(file);
        input.extend_from_slice(b"smuggled across");
        seeds.push((name.into(), input));
    }
    seeds.retain(|(_, b)| b.len() <= 64 * 1024);
    Ok(seeds)
}

/// manifest_parser: mode byte + documents joined by `\n---\n`, document 0
/// the top manifest, later ones what it references, by `@N`/`#N`
/// placeholders (see its doc comment). Layers are replaced by short
/// stand-ins: only their digest and size matter to the graph.
fn manifest_seeds() -> Vec<(String, Vec<u8>)> {
    let set = FixtureSet::generate(&FixtureOptions {
        many_layers: 3,
        ..FixtureOptions::default()
    });
    let served = |t: &str| match t {
        manifest::OCI_MANIFEST => 1u8,
        manifest::OCI_INDEX => 2,
        manifest::DOCKER_MANIFEST => 3,
        manifest::DOCKER_LIST => 4,
        _ => 0,
    };
    let mut seeds = Vec::new();
    for image in &set.images {
        let name = image.repository.trim_start_matches("fixtures/").to_string();
        // Documents: top, children, then blobs; layers as stand-ins.
        let mut docs: Vec<(Digest, Vec<u8>)> = image
            .manifests()
            .map(|m| (m.digest.clone(), m.bytes.to_vec()))
            .collect();
        for b in &image.blobs {
            let bytes = if b.data.first() == Some(&b'{') && b.data.len() < 4096 {
                b.data.to_vec()
            } else {
                format!("layer {}\n", &b.digest.hex()[..12]).into_bytes()
            };
            docs.push((b.digest.clone(), bytes));
        }
        if docs.len() > 16 {
            continue;
        }
        // Every descriptor of a document by a later one becomes a placeholder.
        let mut text: Vec<Vec<u8>> = docs.iter().map(|(_, b)| b.clone()).collect();
        for (i, t) in text.iter_mut().enumerate() {
            for (n, (digest, original)) in docs.iter().enumerate().skip(i + 1) {
                let size = image
                    .manifests()
                    .find(|m| &m.digest == digest)
                    .map(|m| m.size())
                    .or_else(|| image.blob(digest).map(|b| b.size()))
                    .unwrap_or(original.len() as u64);
                let from = format!(r#""digest":"{digest}","size":{size}"#);
                let to = format!(r#""digest":"@{n:x}","size":#{n:x}"#);
                *t = replace(t, from.as_bytes(), to.as_bytes());
                let from = format!(r#""{digest}""#);
                let to = format!(r#""@{n:x}""#);
                *t = replace(t, from.as_bytes(), to.as_bytes());
            }
        }
        let joined = text.join(&b"\n---\n"[..]);
        let mode = served(&image.top.media_type);
        seeds.push((format!("{name}-graph"), with_mode(mode, &joined)));
        seeds.push((format!("{name}-graph-untyped"), with_mode(0, &joined)));
        seeds.push((format!("{name}-graph-base"), with_mode(mode | 16, &joined)));
        if image.top.is_index() {
            seeds.push((
                format!("{name}-graph-absent"),
                with_mode(mode | 32, &joined),
            ));
        }
        // Each manifest alone, as served, real digests (dangling in the graph).
        for (i, m) in image.manifests().enumerate() {
            seeds.push((
                format!("{name}-manifest-{i}"),
                with_mode(served(&m.media_type) | 8, &m.bytes),
            ));
        }
    }
    seeds
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// spec_parser: every spec under `fixtures/`, every YAML block of the
/// documentation that is a spec, a list file and a rendered manifest.
fn spec_seeds() -> Result<Vec<(String, Vec<u8>)>> {
    let root = root();
    let mut seeds = Vec::new();
    let mut yaml_files = Vec::new();
    collect(&root.join("fixtures"), "yaml", &mut yaml_files);
    collect(&root.join("fixtures"), "yml", &mut yaml_files);
    yaml_files.sort();
    for p in &yaml_files {
        let rel = p.strip_prefix(&root).unwrap_or(p);
        seeds.push((flat_name(rel), std::fs::read(p)?));
    }
    let mut docs = vec![root.join("README.md")];
    collect(&root.join("docs"), "md", &mut docs);
    docs.sort();
    for p in &docs {
        let Ok(text) = std::fs::read_to_string(p) else {
            continue;
        };
        let rel = flat_name(p.strip_prefix(&root).unwrap_or(p));
        for (i, block) in yaml_blocks(&text).into_iter().enumerate() {
            seeds.push((format!("{rel}-{i}"), block.into_bytes()));
        }
    }
    Ok(seeds)
}

fn collect(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

fn flat_name(p: &Path) -> String {
    p.to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The ```yaml blocks of a Markdown text.
fn yaml_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```yaml") || fence.starts_with("```yml") => {
                current = Some(String::new())
            }
            Some(block) if fence.starts_with("```") => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}
