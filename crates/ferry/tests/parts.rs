//! `ferry export --split`: a bundle carried in parts, verified and imported
//! part by part (never concatenated on disk), against a real registry.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_bundle::Digest;
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::registry::{require_tool, Registry};
use ferry_testkit::tools::skopeo_inspect_raw;

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD")
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .output()
        .expect("run ferry")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "ferry failed ({:?}):\n{}",
        o.status.code(),
        text(o)
    );
    text(o)
}

/// Exit 1 with `want` in the output.
#[track_caller]
fn refused(o: &Output, want: &str) -> String {
    let t = text(o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(want), "expected `{want}` in:\n{t}");
    t
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    upstream: Registry,
    set: FixtureSet,
    spec: PathBuf,
}

fn world(opts: &FixtureOptions) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let upstream = Registry::start().unwrap();
    let set = FixtureSet::generate(opts);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap();
    rt.block_on(push(&set, &client, &upstream.host())).unwrap();
    let mut spec = String::from("apiVersion: ferry.dev/v1\nname: parts\nimages:\n");
    for r in set.references(&upstream.host()) {
        spec.push_str(&format!("  - {r}\n"));
    }
    let spec_path = dir.join("bundle.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    World {
        _tmp: tmp,
        dir,
        upstream,
        set,
        spec: spec_path,
    }
}

impl World {
    /// Exports to `DIR/NAME.tar.zst` with `extra` arguments.
    fn export(&self, name: &str, extra: &[&str]) -> PathBuf {
        let out = self.dir.join(format!("{name}.tar.zst"));
        let cache = self.dir.join("cache");
        let mut args = vec![
            "export",
            "-f",
            s(&self.spec),
            "-o",
            s(&out),
            "--cache",
            s(&cache),
        ];
        args.extend_from_slice(extra);
        ok(&ferry(&args));
        out
    }
}

/// The parts of `DIR/NAME.tar.zst`, in order, as the manifest lists them.
fn parts(dir: &Path, name: &str) -> (PathBuf, Vec<PathBuf>) {
    let manifest = dir.join(format!("{name}.parts.json"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let paths = v["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| dir.join(p["name"].as_str().unwrap()))
        .collect();
    (manifest, paths)
}

/// The store's index.json entries (none when it has no index.json).
fn store_entries(store: &Path) -> Vec<serde_json::Value> {
    match std::fs::read(store.join("index.json")) {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b).unwrap()["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn store_blobs(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store.join("blobs/sha256"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every tag at the target registry.
fn target_tags(reg: &Registry) -> Vec<String> {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{}/v2/_catalog", reg.host())])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut tags = Vec::new();
    for r in v["repositories"].as_array().cloned().unwrap_or_default() {
        let r = r.as_str().unwrap_or_default();
        let t = Command::new("curl")
            .args(["-sf", &format!("http://{}/v2/{r}/tags/list", reg.host())])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap_or_default();
        for tag in v["tags"].as_array().cloned().unwrap_or_default() {
            tags.push(format!("{r}:{}", tag.as_str().unwrap_or_default()));
        }
    }
    tags
}

#[test]
fn a_split_bundle_verifies_and_imports_like_the_unsplit_one() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let w = world(&FixtureOptions::default());
    let whole = w.export("whole", &[]);
    let split_out = w.export("split", &["--split", "64KiB"]);
    let (manifest, part_paths) = parts(&w.dir, "split");
    assert!(part_paths.len() >= 3, "{part_paths:?}");
    assert_eq!(
        part_paths[0].file_name().unwrap(),
        "split.tar.zst.part-000",
        "{part_paths:?}"
    );
    // Only the parts and the manifest: no unsplit file, no temporary files.
    assert!(!split_out.exists());
    assert!(!w.dir.join("split.tar.zst.sha256").exists());
    let leftovers: Vec<String> = std::fs::read_dir(&w.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The unsplit export is byte-identical to the parts concatenated, each
    // part but the last is exactly 64 KiB, and the manifest holds the
    // unsplit bundle's sha256.
    let whole_bytes = std::fs::read(&whole).unwrap();
    let mut cat = Vec::new();
    for (i, p) in part_paths.iter().enumerate() {
        let b = std::fs::read(p).unwrap();
        if i + 1 < part_paths.len() {
            assert_eq!(b.len(), 64 * 1024, "{}", p.display());
        }
        cat.extend(b);
    }
    assert!(
        cat == whole_bytes,
        "parts do not concatenate to the unsplit bundle"
    );
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let sum = std::fs::read_to_string(w.dir.join("whole.tar.zst.sha256")).unwrap();
    assert_eq!(m["sha256"].as_str().unwrap(), &sum[..64]);
    assert_eq!(m["size"], whole_bytes.len() as u64);
    assert_eq!(m["name"], "parts");
    assert_eq!(m["bundle"], "split.tar.zst");
    assert_eq!(m["partSize"], 65536);

    // Verify through the manifest and through the first part.
    let n = part_paths.len();
    let v = ok(&ferry(&["verify", s(&manifest)]));
    assert!(v.contains("is intact"), "{v}");
    assert!(v.contains(&format!("{n} part(s) listed")), "{v}");
    let v = ok(&ferry(&["verify", s(&part_paths[0])]));
    assert!(v.contains("is intact"), "{v}");
    let i = ok(&ferry(&["inspect", s(&part_paths[0])]));
    for img in &w.set.images {
        assert!(i.contains(&img.repository), "{i}");
    }
    // The unsplit name says where the manifest is.
    refused(&ferry(&["verify", s(&split_out)]), "split.parts.json");

    // Import into stores: the split bundle lands exactly what the unsplit one does.
    let a = w.dir.join("store-whole");
    let b = w.dir.join("store-split");
    ok(&ferry(&["import", s(&whole), "--store", s(&a)]));
    ok(&ferry(&["import", s(&manifest), "--store", s(&b)]));
    assert!(!store_entries(&a).is_empty());
    assert_eq!(
        std::fs::read(a.join("index.json")).unwrap(),
        std::fs::read(b.join("index.json")).unwrap()
    );
    assert_eq!(store_blobs(&a), store_blobs(&b));

    // And into a registry, through the first part: upstream digests at the target.
    let target = Registry::start().unwrap();
    ok(&ferry(&[
        "import",
        s(&part_paths[0]),
        "--registry",
        &target.host(),
    ]));
    for img in &w.set.images {
        let repo = format!(
            "{}/{}/{}",
            target.host(),
            w.upstream.host().replace(':', "-"),
            img.repository
        );
        let raw = skopeo_inspect_raw(&format!("{repo}:{}", img.tag)).unwrap();
        assert_eq!(Digest::of(&raw), img.top.digest, "{repo}:{}", img.tag);
    }
}

#[test]
fn a_missing_truncated_or_corrupt_part_is_named_and_nothing_lands() {
    require_tool("docker-registry");
    let w = world(&FixtureOptions::default());
    w.export("b", &["--split", "64KiB"]);
    let (manifest, part_paths) = parts(&w.dir, "b");
    let n = part_paths.len();
    assert!(n >= 3, "{part_paths:?}");
    let target = Registry::start().unwrap();
    let victim = &part_paths[1];
    let good = std::fs::read(victim).unwrap();
    let label = format!("part 2 of {n} (`b.tar.zst.part-001`)");

    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage, String)> = vec![
        (
            "missing",
            Box::new(|p: &Path| std::fs::remove_file(p).unwrap()),
            format!("{label}: missing — copy this part again"),
        ),
        (
            "truncated",
            Box::new(|p: &Path| {
                let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                f.set_len(1000).unwrap();
            }),
            format!("{label}: truncated: 1000 of 65536 bytes — copy this part again"),
        ),
        (
            "corrupt",
            Box::new(|p: &Path| {
                let mut b = std::fs::read(p).unwrap();
                b[30_000] ^= 0x55;
                std::fs::write(p, b).unwrap();
            }),
            format!(
                "{label}: sha256 mismatch, expected {}, got ",
                Digest::of(&good).hex()
            ),
        ),
    ];
    for (name, damage, want) in cases {
        damage(victim);
        let store = w.dir.join(format!("store-{name}"));
        for bundle in [&manifest, &part_paths[0]] {
            refused(&ferry(&["verify", s(bundle)]), &want);
            refused(&ferry(&["import", s(bundle), "--store", s(&store)]), &want);
            refused(
                &ferry(&["import", s(bundle), "--registry", &target.host()]),
                &want,
            );
        }
        if name == "corrupt" {
            let t = refused(&ferry(&["verify", s(&manifest)]), &want);
            assert!(t.contains("copy this part again"), "{t}");
        }
        // Nothing was loaded: no store entry, no tag at the target; a part
        // missing or cut short is found before any byte is read.
        assert!(store_entries(&store).is_empty(), "{name}");
        if name != "corrupt" {
            assert!(
                store_blobs(&store).is_empty(),
                "{name}: {:?}",
                store_blobs(&store)
            );
        }
        assert!(
            target_tags(&target).is_empty(),
            "{name}: {:?}",
            target_tags(&target)
        );
        std::fs::write(victim, &good).unwrap();
    }
    // Copied again: the bundle is whole.
    ok(&ferry(&["verify", s(&manifest)]));
}

#[test]
fn one_part_is_verified_on_its_own() {
    require_tool("docker-registry");
    let w = world(&FixtureOptions::default());
    w.export("b", &["--split", "64KiB"]);
    let (manifest, part_paths) = parts(&w.dir, "b");
    let n = part_paths.len();
    // A USB stick with part 2 and the manifest.
    let stick = w.dir.join("stick");
    std::fs::create_dir(&stick).unwrap();
    let part = stick.join("b.tar.zst.part-001");
    std::fs::copy(&part_paths[1], &part).unwrap();
    std::fs::copy(&manifest, stick.join("b.parts.json")).unwrap();
    let o = ok(&ferry(&["verify", s(&part)]));
    assert!(
        o.contains(&format!(
            "part 2 of {n} ({}, 64.0 KiB) is intact",
            part.display()
        )),
        "{o}"
    );
    assert!(o.contains("the bundle as a whole is not verified"), "{o}");
    let j = ok(&ferry(&["--json", "verify", s(&part)]));
    let ev: serde_json::Value = j
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "part-verified")
        .expect("part-verified event");
    assert_eq!(ev["part"], 2);
    assert_eq!(ev["parts"], n);
    assert_eq!(ev["missingParts"].as_array().unwrap().len(), n - 1);
    // The first part alone on its stick is checked alone too.
    let stick0 = w.dir.join("stick0");
    std::fs::create_dir(&stick0).unwrap();
    std::fs::copy(&part_paths[0], stick0.join("b.tar.zst.part-000")).unwrap();
    std::fs::copy(&manifest, stick0.join("b.parts.json")).unwrap();
    let o = ok(&ferry(&["verify", s(&stick0.join("b.tar.zst.part-000"))]));
    assert!(o.contains(&format!("part 1 of {n}")), "{o}");
    // Import never takes a lone first part for the bundle.
    refused(
        &ferry(&[
            "import",
            s(&stick0.join("b.tar.zst.part-000")),
            "--store",
            s(&w.dir.join("store")),
        ]),
        &format!("part 2 of {n} (`b.tar.zst.part-001`): missing"),
    );
    // A flipped byte on the stick is caught and named.
    let mut b = std::fs::read(&part).unwrap();
    b[100] ^= 1;
    std::fs::write(&part, b).unwrap();
    refused(
        &ferry(&["verify", s(&part)]),
        &format!("part 2 of {n} (`b.tar.zst.part-001`): sha256 mismatch"),
    );
    // Without the manifest, the part says what to copy.
    std::fs::remove_file(stick.join("b.parts.json")).unwrap();
    refused(&ferry(&["verify", s(&part)]), "b.parts.json");
    // A later part is not a bundle.
    refused(
        &ferry(&[
            "import",
            s(&part_paths[2]),
            "--store",
            s(&w.dir.join("store")),
        ]),
        "pass the first part",
    );
}

#[test]
fn bad_split_sizes_are_refused_before_any_work() {
    let o = ferry(&[
        "export",
        "-f",
        "/nonexistent.yaml",
        "-o",
        "x.tar.zst",
        "--split",
        "4XB",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("invalid size `4XB`"), "{}", text(&o));
    let o = ferry(&[
        "export",
        "-f",
        "/nonexistent.yaml",
        "-o",
        "x.tar.zst",
        "--split",
        "1000",
    ]);
    assert!(text(&o).contains("below the minimum"), "{}", text(&o));
}
