//! The fault matrix: `ferry export` through a fault-injecting proxy in front
//! of the real upstream registry, and `ferry import` through one in front of
//! a real target registry (plus a registry restarted mid-import, `kill -9`
//! of ferry mid-import, and a full disk on export).
//!
//! Every scenario must end in success or in a clear error (exit 2 or 3, the
//! message naming the URL, path or blob); afterwards the target holds no
//! manifest that references missing or unverified content, and a re-run
//! without the fault completes with the upstream digests (an export re-run
//! is byte-identical to a fault-free export). The counts of scenarios and
//! outcomes are printed at the end.
//!
//! `e2e.rs` already covers 503 on manifest GETs, 429 and 500 on blob GETs
//! (export), and 503 on the upload PUT and 429 on the manifest PUT (import),
//! each followed by success: the statuses here hit other requests (tag
//! resolution, chunk PATCHes, upload POSTs, plan-time tag listings, mounts) and add
//! the faults that do not go away.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use ferry_bundle::Digest;
use ferry_testkit::fixtures::{push, FixtureImage, FixtureOptions, FixtureSet};
use ferry_testkit::proxy::{Action, Fault, FaultProxy};
use ferry_testkit::registry::{require_tool, under_ci, Registry};
use ferry_testkit::tmpfs::Tmpfs;

/// Size of `fixtures/big`'s layer: one streamed PUT; read again after a
/// fault past its first 4 MiB, it goes in 8 PATCHes with `--chunk-mib 1`.
const BIG_MIB: u64 = 8;

/// Bytes of the big layer's streamed PUT let through before a cut: past
/// the 4 MiB the upload keeps for a resend, so the bundle is read again.
const BIG_CUT: u64 = 5_000_000;

/// Attempts per request in every run (the default is 5; fewer keeps the
/// faults that never go away short).
const ATTEMPTS: &str = "3";

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

// ---------------------------------------------------------------- running ferry

fn ferry_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.args(args)
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD")
        .env_remove("FERRY_LOG")
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test");
    c
}

struct Run {
    status: ExitStatus,
    text: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

fn run(args: &[&str]) -> Run {
    let o = ferry_cmd(args).output().expect("run ferry");
    Run {
        status: o.status,
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

#[track_caller]
fn ok(r: &Run, what: &str) {
    assert!(
        r.status.success(),
        "{what}: ferry failed ({:?}):\n{}",
        r.code(),
        r.text
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Polls `f` every 10 ms; the limit only catches a hang (it is not a timing
/// assertion: a slow machine just polls longer).
fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..30_000 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("gave up waiting for {what}");
}

// ---------------------------------------------------------------- a tiny HTTP client

/// One plain HTTP/1.1 exchange (no keep-alive): status, headers (lower-case
/// names), body. Independent of ferry's own client on purpose.
fn http(method: &str, addr: SocketAddr, path: &str) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut sock = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        sock,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {ACCEPT}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP head in the answer"));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head:?}"));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap().trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

// ---------------------------------------------------------------- the target's invariant

/// What a registry's storage says it holds: per repository, its manifest
/// revisions and its tags.
#[derive(Debug, Default)]
struct Held {
    revisions: BTreeMap<String, BTreeSet<Digest>>,
    tags: BTreeMap<String, BTreeMap<String, Digest>>,
}

fn read_link(p: &Path) -> Option<Digest> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn held(reg: &Registry) -> Held {
    let root = reg.storage_dir().join("docker/registry/v2/repositories");
    let mut out = Held::default();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if e.file_name() != "_manifests" {
                if !e.file_name().to_string_lossy().starts_with('_') {
                    stack.push(p);
                }
                continue;
            }
            let repo = dir
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let revs = out.revisions.entry(repo.clone()).or_default();
            if let Ok(rd) = std::fs::read_dir(p.join("revisions/sha256")) {
                for r in rd.flatten() {
                    if let Some(d) = read_link(&r.path().join("link")) {
                        revs.insert(d);
                    }
                }
            }
            let tags = out.tags.entry(repo).or_default();
            if let Ok(rd) = std::fs::read_dir(p.join("tags")) {
                for t in rd.flatten() {
                    if let Some(d) = read_link(&t.path().join("current/link")) {
                        tags.insert(t.file_name().to_string_lossy().into_owned(), d);
                    }
                }
            }
        }
    }
    out
}

/// Checks that every manifest the target holds (every revision of every
/// repository, tagged or not) is served with bytes that hash to its digest,
/// and that everything it references is there: child manifests answer, and
/// blobs answer with the descriptor's size and bytes that hash to their
/// digest. Every tag points at one of those manifests. Returns how many
/// manifests were checked.
fn assert_consistent(reg: &Registry, scenario: &str) -> usize {
    let addr = reg.addr();
    let h = held(reg);
    let mut hashed: BTreeSet<Digest> = BTreeSet::new();
    let mut checked = 0;
    for (repo, revs) in &h.revisions {
        for d in revs {
            let (code, _, bytes) = http("GET", addr, &format!("/v2/{repo}/manifests/{d}"));
            assert_eq!(code, 200, "{scenario}: {repo}@{d} is linked but not served");
            assert_eq!(
                &Digest::of(&bytes),
                d,
                "{scenario}: {repo}@{d} is served with other bytes"
            );
            let m: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{scenario}: {repo}@{d} is not JSON: {e}"));
            if let Some(children) = m["manifests"].as_array() {
                for c in children {
                    let cd = c["digest"].as_str().unwrap();
                    let (code, _, _) = http("HEAD", addr, &format!("/v2/{repo}/manifests/{cd}"));
                    assert_eq!(
                        code, 200,
                        "{scenario}: index {repo}@{d} references {cd}, which the target lacks"
                    );
                }
            }
            let blobs = m["config"]
                .as_object()
                .map(|c| serde_json::Value::Object(c.clone()))
                .into_iter()
                .chain(m["layers"].as_array().cloned().unwrap_or_default());
            for b in blobs {
                let bd: Digest = b["digest"].as_str().unwrap().parse().unwrap();
                let size = b["size"].as_u64().unwrap();
                let path = format!("/v2/{repo}/blobs/{bd}");
                let (code, headers, _) = http("HEAD", addr, &path);
                assert_eq!(
                    code, 200,
                    "{scenario}: manifest {repo}@{d} references blob {bd}, which the target lacks"
                );
                assert_eq!(
                    headers.get("content-length").map(String::as_str),
                    Some(size.to_string().as_str()),
                    "{scenario}: blob {repo}@{bd} has another size than {repo}@{d} says"
                );
                if hashed.insert(bd.clone()) {
                    let (code, _, data) = http("GET", addr, &path);
                    assert_eq!(code, 200, "{scenario}: GET {path}");
                    assert_eq!(
                        Digest::of(&data),
                        bd,
                        "{scenario}: blob {repo}@{bd} holds other bytes"
                    );
                }
            }
            checked += 1;
        }
    }
    for (repo, tags) in &h.tags {
        for (tag, d) in tags {
            assert!(
                h.revisions.get(repo).is_some_and(|r| r.contains(d)),
                "{scenario}: tag {repo}:{tag} points at {d}, which the repository does not hold"
            );
        }
    }
    checked
}

// ---------------------------------------------------------------- the world

struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// Kept alive for the proxy in front of it.
    _upstream: Registry,
    set: FixtureSet,
    /// Every export goes through this proxy, so that every bundle names the
    /// same source host (and fault-free exports are byte-identical).
    proxy: FaultProxy,
    spec: PathBuf,
    /// A fault-free export through `proxy`, and its sha256.
    baseline: PathBuf,
    baseline_sha: Digest,
}

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let upstream = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions {
        big_layer_mib: Some(BIG_MIB),
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap();
    rt.block_on(push(&set, &client, &upstream.host())).unwrap();
    let proxy = FaultProxy::start(upstream.addr(), vec![]);
    let mut spec = String::from("apiVersion: ferry.dev/v1\nname: faults\nimages:\n");
    for r in set.references(&proxy.host()) {
        spec.push_str(&format!("  - {r}\n"));
    }
    let spec_path = dir.join("bundle.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let baseline = dir.join("baseline.tar.zst");
    ok(
        &run(&[
            "export",
            "-f",
            s(&spec_path),
            "-o",
            s(&baseline),
            "--cache",
            s(&dir.join("cache-baseline")),
        ]),
        "baseline export",
    );
    ok(&run(&["verify", s(&baseline)]), "baseline verify");
    let baseline_sha = Digest::of(&std::fs::read(&baseline).unwrap());
    World {
        _tmp: tmp,
        dir,
        _upstream: upstream,
        set,
        proxy,
        spec: spec_path,
        baseline,
        baseline_sha,
    }
}

impl World {
    fn image(&self, repository: &str) -> &FixtureImage {
        self.set.image(repository)
    }

    /// The big layer's digest.
    fn big_layer(&self) -> Digest {
        let big = self.image("fixtures/big");
        big.blobs
            .iter()
            .max_by_key(|b| b.size())
            .unwrap()
            .digest
            .clone()
    }

    /// The target repository an image lands in.
    fn target_repo(&self, image: &FixtureImage) -> String {
        format!(
            "{}/{}",
            self.proxy.host().replace(':', "-"),
            image.repository
        )
    }

    /// Every image is at `target` under its tag with the upstream digest,
    /// and so is every child manifest.
    fn assert_all_landed(&self, target: &Registry, scenario: &str) {
        for i in &self.set.images {
            let repo = self.target_repo(i);
            let (code, _, bytes) = http(
                "GET",
                target.addr(),
                &format!("/v2/{repo}/manifests/{}", i.tag),
            );
            assert_eq!(
                code, 200,
                "{scenario}: {repo}:{} missing after the re-run",
                i.tag
            );
            assert_eq!(
                Digest::of(&bytes),
                i.top.digest,
                "{scenario}: {repo}:{} has another digest than upstream",
                i.tag
            );
            for c in &i.children {
                let (code, _, bytes) = http(
                    "GET",
                    target.addr(),
                    &format!("/v2/{repo}/manifests/{}", c.digest),
                );
                assert_eq!(code, 200, "{scenario}: {repo}@{} missing", c.digest);
                assert_eq!(Digest::of(&bytes), c.digest);
            }
        }
    }
}

// ---------------------------------------------------------------- scenarios

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exit 0, the faults having been met and retried.
    Success,
    /// Exit 2 or 3 with a message naming what failed.
    CleanFailure,
    /// ferry killed with SIGKILL at the hook.
    Killed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    None,
    /// When the proxy holds a request: restart the target registry, then
    /// release the request.
    RestartTarget,
    /// When the proxy holds a request: `kill -9` ferry, then release it.
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disk {
    /// The bundle goes to a tmpfs too small for it.
    FullOutput,
    /// The blob cache is on a tmpfs too small for it.
    FullCache,
}

enum Side {
    Export { disk: Option<Disk> },
    Import { hook: Hook },
}

struct Scenario {
    name: &'static str,
    side: Side,
    faults: Vec<Fault>,
    expect: Expect,
    /// On a clean failure, every one of these must appear in the output.
    names: Vec<String>,
    /// Import: how many manifests the target must hold right after the
    /// fault (so that the consistency check has something to check).
    min_held: usize,
    /// Extra arguments for the faulted run (not the re-run).
    args: Vec<&'static str>,
}

impl Scenario {
    fn holding(mut self, n: usize) -> Scenario {
        self.min_held = n;
        self
    }
    fn with_args(mut self, args: &[&'static str]) -> Scenario {
        self.args = args.to_vec();
        self
    }
}

fn export(name: &'static str, faults: Vec<Fault>, expect: Expect, names: Vec<String>) -> Scenario {
    Scenario {
        name,
        side: Side::Export { disk: None },
        faults,
        expect,
        names,
        min_held: 0,
        args: Vec::new(),
    }
}

fn import(
    name: &'static str,
    hook: Hook,
    faults: Vec<Fault>,
    expect: Expect,
    names: Vec<String>,
) -> Scenario {
    Scenario {
        name,
        side: Side::Import { hook },
        faults,
        expect,
        names,
        min_held: 0,
        args: Vec::new(),
    }
}

fn scenarios(w: &World) -> Vec<Scenario> {
    use Expect::*;
    let big = w.big_layer();
    let big_path = format!("/blobs/{big}");
    // The big layer's upload PUT (`…/blobs/uploads/…?digest=`).
    let big_put = format!("digest={big}");
    let proxy_url = format!("{}/v2/fixtures/big/blobs/{big}", w.proxy.host());
    let docker_v2 = w.target_repo(w.image("fixtures/docker-v2"));
    vec![
        // ---- export: the proxy in front of the upstream registry.
        export(
            "export: 500 on tag resolution (twice)",
            vec![Fault::new(Action::Status(500))
                .on_path("/manifests/1.0")
                .times(2)],
            Success,
            vec![],
        ),
        export(
            "export: 503 on the big layer's GET (twice)",
            vec![Fault::new(Action::Status(503))
                .on_method("GET")
                .on_path(&big_path)
                .times(2)],
            Success,
            vec![],
        ),
        export(
            "export: 429 Retry-After: 1 on child manifests (twice)",
            vec![Fault::new(Action::TooManyRequests {
                retry_after_secs: 1,
            })
            .on_path("/manifests/sha256:")
            .times(2)],
            Success,
            vec![],
        ),
        export(
            "export: connection cut 100 kB into the big layer",
            vec![Fault::new(Action::CutAfter(100_000))
                .on_method("GET")
                .on_path(&big_path)
                .times(1)],
            Success,
            vec![],
        ),
        export(
            "export: connection cut at every GET of the big layer",
            vec![Fault::new(Action::CutAfter(100_000))
                .on_method("GET")
                .on_path(&big_path)
                .always()],
            CleanFailure,
            vec![big.to_string()],
        ),
        export(
            "export: stalled blob GET (2 s, then closed)",
            vec![Fault::new(Action::Stall(Duration::from_secs(2)))
                .on_method("GET")
                .on_path("/blobs/sha256:")
                .times(1)],
            Success,
            vec![],
        ),
        // Never answered and never closed: only the client's own timeout
        // (`--timeout 2`) gets it past, to the retry that succeeds.
        export(
            "export: blob GET never answered (--timeout 2, then retried)",
            vec![Fault::new(Action::Hold)
                .on_method("GET")
                .on_path("/blobs/sha256:")
                .times(1)],
            Success,
            vec![],
        )
        .with_args(&["--timeout", "2"]),
        export(
            "export: 503 on every GET of the big layer",
            vec![Fault::new(Action::Status(503)).on_path(&big_path).always()],
            CleanFailure,
            vec![proxy_url, "503".into()],
        ),
        Scenario {
            name: "export: full disk under the bundle (1 MiB tmpfs)",
            side: Side::Export {
                disk: Some(Disk::FullOutput),
            },
            faults: vec![],
            expect: CleanFailure,
            names: vec!["No space left on device".into()],
            min_held: 0,
            args: Vec::new(),
        },
        // ---- export --no-cache: blobs stream from the registry into the
        // bundle; the same faults, the same bundle.
        export(
            "export --no-cache: 503 on the big layer's GET (twice)",
            vec![Fault::new(Action::Status(503))
                .on_method("GET")
                .on_path(&big_path)
                .times(2)],
            Success,
            vec![],
        )
        .with_args(&["--no-cache"]),
        export(
            "export --no-cache: connection cut 100 kB into the big layer (resumed)",
            vec![Fault::new(Action::CutAfter(100_000))
                .on_method("GET")
                .on_path(&big_path)
                .times(1)],
            Success,
            vec![],
        )
        .with_args(&["--no-cache"]),
        export(
            "export --no-cache: connection cut at every GET of the big layer",
            vec![Fault::new(Action::CutAfter(100_000))
                .on_method("GET")
                .on_path(&big_path)
                .always()],
            CleanFailure,
            vec![big.to_string()],
        )
        .with_args(&["--no-cache"]),
        export(
            "export --no-cache: blob GET never answered (--timeout 2, then retried)",
            vec![Fault::new(Action::Hold)
                .on_method("GET")
                .on_path("/blobs/sha256:")
                .times(1)],
            Success,
            vec![],
        )
        .with_args(&["--no-cache", "--timeout", "2"]),
        Scenario {
            name: "export --no-cache: full disk under the bundle (1 MiB tmpfs)",
            side: Side::Export {
                disk: Some(Disk::FullOutput),
            },
            faults: vec![],
            expect: CleanFailure,
            names: vec!["No space left on device".into()],
            min_held: 0,
            args: vec!["--no-cache"],
        },
        Scenario {
            name: "export: full disk under the blob cache (1 MiB tmpfs)",
            side: Side::Export {
                disk: Some(Disk::FullCache),
            },
            faults: vec![],
            expect: CleanFailure,
            names: vec!["No space left on device".into()],
            min_held: 0,
            args: Vec::new(),
        },
        // ---- import: the proxy in front of the target registry.
        import(
            "import: 500 on the big layer's streamed PUT (read whole, then answered)",
            Hook::None,
            // Past the 4 MiB it keeps: the layer is read again from the
            // bundle and goes in chunks.
            vec![Fault::new(Action::Status(500))
                .on_method("PUT")
                .on_path(&big_put)
                .times(1)],
            Success,
            vec![],
        ),
        import(
            "import: 500 on a chunk PATCH of the big layer's re-read upload",
            Hook::None,
            vec![
                Fault::new(Action::CutRequestAfter(BIG_CUT))
                    .on_method("PUT")
                    .on_path(&big_put)
                    .times(1),
                Fault::new(Action::Status(500)).on_method("PATCH").times(1),
            ],
            Success,
            vec![],
        ),
        import(
            "import: 503 on upload POSTs (twice)",
            Hook::None,
            vec![Fault::new(Action::Status(503))
                .on_method("POST")
                .on_path("/blobs/uploads/")
                .times(2)],
            Success,
            vec![],
        ),
        import(
            // A fresh target's plan asks one tag listing per repository
            // (the fixtures' 7 are fewer than the catalog is asked for),
            // no blob HEAD (see docs/import.md, step 2).
            "import: 429 Retry-After: 1 on plan-time tag listings (twice)",
            Hook::None,
            vec![Fault::new(Action::TooManyRequests {
                retry_after_secs: 1,
            })
            .on_method("GET")
            .on_path("/tags/list")
            .times(2)],
            Success,
            vec![],
        ),
        import(
            "import: 429 Retry-After: 1 on a cross-repository mount",
            Hook::None,
            vec![Fault::new(Action::TooManyRequests {
                retry_after_secs: 1,
            })
            .on_method("POST")
            .on_path("mount=")
            .times(1)],
            Success,
            vec![],
        ),
        import(
            "import: upload cut 5 MB into the big layer's streamed PUT",
            Hook::None,
            // Past the 4 MiB it keeps: read again from the bundle, in chunks.
            vec![Fault::new(Action::CutRequestAfter(BIG_CUT))
                .on_method("PUT")
                .on_path(&big_put)
                .times(1)],
            Success,
            vec![],
        ),
        import(
            "import: the big layer's PUT cut 5 MB in, then its re-read cut 300 kB into a chunk",
            Hook::None,
            vec![
                Fault::new(Action::CutRequestAfter(BIG_CUT))
                    .on_method("PUT")
                    .on_path(&big_put)
                    .times(1),
                Fault::new(Action::CutRequestAfter(300_000))
                    .on_method("PATCH")
                    .times(1),
            ],
            // Distribution 2.8 cannot resume a session whose PATCH broke
            // off, and the bundle is read again once: the blob (and its
            // image) fails by name, the rest lands.
            CleanFailure,
            vec![big.to_string(), "cannot be resumed".into()],
        )
        .holding(11),
        import(
            "import: upload cut 1 kB into a monolithic blob PUT",
            Hook::None,
            vec![Fault::new(Action::CutRequestAfter(1_000))
                .on_method("PUT")
                .on_path("/blobs/uploads/")
                .times(1)],
            Success,
            vec![],
        ),
        import(
            "import: stalled manifest PUT (2 s, then closed)",
            Hook::None,
            vec![Fault::new(Action::Stall(Duration::from_secs(2)))
                .on_method("PUT")
                .on_path("/manifests/")
                .times(1)],
            Success,
            vec![],
        ),
        import(
            "import: 500 on every manifest PUT of one repository",
            Hook::None,
            vec![Fault::new(Action::Status(500))
                .on_method("PUT")
                .on_path(&format!("{docker_v2}/manifests/"))
                .always()],
            CleanFailure,
            vec![docker_v2.clone(), "500".into()],
        )
        .holding(11),
        import(
            "import: target restarted between streaming and commit",
            Hook::RestartTarget,
            vec![Fault::new(Action::Hold)
                .on_method("PUT")
                .on_path("/manifests/")
                .times(1)],
            Success,
            vec![],
        ),
        import(
            "import: target restarted while the big layer streams",
            Hook::RestartTarget,
            // The held PUT ends with the restart: sent again on a new
            // session (from the bytes kept) or read again from the bundle.
            vec![Fault::new(Action::Hold)
                .on_method("PUT")
                .on_path(&big_put)
                .times(1)],
            Success,
            vec![],
        ),
        import(
            "import: target restarted while the big layer's re-read upload streams",
            Hook::RestartTarget,
            vec![
                Fault::new(Action::CutRequestAfter(BIG_CUT))
                    .on_method("PUT")
                    .on_path(&big_put)
                    .times(1),
                Fault::new(Action::Pass).on_method("PATCH").times(3),
                Fault::new(Action::Hold).on_method("PATCH").times(1),
            ],
            // The restarted registry has a new upload secret (none is
            // configured): the session is gone, the blob fails by name.
            CleanFailure,
            vec![big.to_string(), "cannot be resumed".into()],
        )
        .holding(11),
        import(
            "import: kill -9 while the big layer streams",
            Hook::Kill,
            vec![Fault::new(Action::Hold)
                .on_method("PUT")
                .on_path(&big_put)
                .times(1)],
            Killed,
            vec![],
        ),
        import(
            "import: kill -9 mid-commit (after two manifest PUTs)",
            Hook::Kill,
            vec![
                Fault::new(Action::Pass)
                    .on_method("PUT")
                    .on_path("/manifests/")
                    .times(2),
                Fault::new(Action::Hold)
                    .on_method("PUT")
                    .on_path("/manifests/")
                    .times(1),
            ],
            Killed,
            vec![],
        )
        .holding(1),
    ]
}

// ---------------------------------------------------------------- running a scenario

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether a scenario ran, and how it ended (with a note for the log).
enum Outcome {
    Ran(Expect, String),
    Skipped(String),
}

fn check_failure(sc: &Scenario, r: &Run) {
    assert!(
        matches!(r.code(), Some(2) | Some(3)),
        "{}: expected exit 2 or 3, got {:?}:\n{}",
        sc.name,
        r.code(),
        r.text
    );
    assert!(
        r.text.contains("error:") || r.text.contains("FAILED"),
        "{}: no error line:\n{}",
        sc.name,
        r.text
    );
    for n in &sc.names {
        assert!(
            r.text.contains(n.as_str()),
            "{}: the message does not name `{n}`:\n{}",
            sc.name,
            r.text
        );
    }
}

/// `(exit N: the first error line)` of a failed run, empty for a success.
fn first_error(r: &Run) -> String {
    if r.status.success() || r.code().is_none() {
        return String::new();
    }
    let line = r
        .text
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    let mut short: String = line.chars().take(240).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    format!("(exit {:?}: {short})", r.code().unwrap_or(-1))
}

fn classify(sc: &Scenario, r: &Run) -> Expect {
    if r.status.success() {
        Expect::Success
    } else {
        check_failure(sc, r);
        Expect::CleanFailure
    }
}

/// Bundle-like files left in `dir` (finished or temporary).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.contains(".tar")
                        || n.ends_with(".tmp")
                        || n.contains("sha256")
                        || n.starts_with(".ferry-export-")
                })
                .collect()
        })
        .unwrap_or_default()
}

fn run_export(w: &World, i: usize, sc: &Scenario, disk: Option<Disk>) -> Outcome {
    let dir = w.dir.join(format!("export-{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut out_dir = dir.join("out");
    let mut cache = dir.join("cache");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut tmpfs = None;
    if let Some(d) = disk {
        if !is_root() {
            return Outcome::Skipped("not root: cannot mount a tmpfs".into());
        }
        let mnt = dir.join("tmpfs");
        match Tmpfs::mount(&mnt, "1m") {
            Ok(t) => tmpfs = Some(t),
            Err(e) if under_ci() => panic!("{}: mounting a tmpfs failed under CI: {e}", sc.name),
            Err(e) => return Outcome::Skipped(format!("mounting a tmpfs failed: {e}")),
        }
        match d {
            Disk::FullOutput => out_dir = mnt,
            Disk::FullCache => cache = mnt,
        }
    }
    let out = out_dir.join("b.tar.zst");
    w.proxy.set_faults(sc.faults.clone());
    let mark = w.proxy.requests().len();
    // `--no-cache` scenarios stream blobs into the bundle; the re-run too.
    let no_cache = sc.args.contains(&"--no-cache");
    let args = |out: &Path| {
        let mut a = vec![
            "export".to_string(),
            "-f".into(),
            s(&w.spec).into(),
            "-o".into(),
            s(out).into(),
            "--attempts".into(),
            ATTEMPTS.into(),
        ];
        if !no_cache {
            a.extend(["--cache".to_string(), s(&cache).into()]);
        } else {
            a.push("--no-cache".into());
        }
        a
    };
    let mut a = args(&out);
    a.extend(
        sc.args
            .iter()
            .filter(|x| **x != "--no-cache")
            .map(|x| x.to_string()),
    );
    let r = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    w.proxy.release();
    let applied = w.proxy.requests()[mark..]
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    w.proxy.set_faults(vec![]);
    if disk.is_none() {
        assert!(applied > 0, "{}: no fault was met:\n{}", sc.name, r.text);
    }
    let got = classify(sc, &r);
    assert_eq!(got, sc.expect, "{}:\n{}", sc.name, r.text);
    match got {
        Expect::Success => {
            assert_eq!(
                Digest::of(&std::fs::read(&out).unwrap()),
                w.baseline_sha,
                "{}: the bundle differs from a fault-free export",
                sc.name
            );
        }
        _ => {
            // Nothing that looks like a bundle is left behind.
            assert_eq!(
                leftovers(&out_dir),
                Vec::<String>::new(),
                "{}: a failed export left files behind:\n{}",
                sc.name,
                r.text
            );
            // Said where it failed: the bundle or cache path for a disk.
            if let Some(d) = disk {
                let p = match d {
                    Disk::FullOutput => out_dir.clone(),
                    Disk::FullCache => cache.clone(),
                };
                assert!(
                    r.text.contains(s(&p)),
                    "{}: the message does not name `{}`:\n{}",
                    sc.name,
                    p.display(),
                    r.text
                );
            }
        }
    }
    // The re-run without the fault: same cache (with whatever the failed
    // run left in it), same output path, with room on the tmpfs.
    if let Some(t) = &tmpfs {
        t.grow("256m").unwrap();
    }
    let r2 = run(&args(&out).iter().map(String::as_str).collect::<Vec<_>>());
    ok(&r2, &format!("{}: re-run", sc.name));
    assert_eq!(
        Digest::of(&std::fs::read(&out).unwrap()),
        w.baseline_sha,
        "{}: the re-run's bundle differs from a fault-free export",
        sc.name
    );
    let _ = std::fs::remove_file(&out);
    drop(tmpfs);
    Outcome::Ran(got, first_error(&r))
}

fn run_import(w: &World, i: usize, sc: &Scenario, hook: Hook) -> Outcome {
    let dir = w.dir.join(format!("import-{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut target = Registry::start().unwrap();
    let proxy = FaultProxy::start(target.addr(), sc.faults.clone());
    let host = proxy.host();
    let args = [
        "import",
        s(&w.baseline),
        "--registry",
        &host,
        "--chunk-mib",
        "1",
        "--attempts",
        ATTEMPTS,
    ];
    let log = dir.join("log");
    let mut child = ferry_cmd(&args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("err")).unwrap())
        .spawn()
        .unwrap();
    if hook != Hook::None {
        until(&format!("{}: the held request", sc.name), || {
            proxy.held() > 0 || child.try_wait().unwrap().is_some()
        });
        assert!(
            proxy.held() > 0,
            "{}: ferry finished before the hook point",
            sc.name
        );
        match hook {
            Hook::RestartTarget => target.restart().unwrap(),
            Hook::Kill => {
                // Pushes run side by side (the commit's waves): the PUTs let
                // through before the held one may still be on their way, so
                // the kill waits until what the scenario needs has landed.
                until(
                    &format!("{}: {} manifest(s) landed", sc.name, sc.min_held),
                    || {
                        held(&target)
                            .revisions
                            .values()
                            .map(BTreeSet::len)
                            .sum::<usize>()
                            >= sc.min_held
                    },
                );
                child.kill().unwrap();
                child.wait().unwrap();
            }
            Hook::None => unreachable!(),
        }
        proxy.release();
    }
    let status = child.wait().unwrap();
    let r = Run {
        status,
        text: format!(
            "{}{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(dir.join("err")).unwrap_or_default()
        ),
    };
    assert!(
        proxy.faults_applied() > 0,
        "{}: no fault was met:\n{}",
        sc.name,
        r.text
    );
    let got = if hook == Hook::Kill {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(r.status.signal(), Some(9), "{}: {:?}", sc.name, r.status);
        Expect::Killed
    } else {
        classify(sc, &r)
    };
    assert_eq!(got, sc.expect, "{}:\n{}", sc.name, r.text);
    // Whatever happened, the target holds nothing half-made.
    let n = assert_consistent(&target, sc.name);
    assert!(
        n >= sc.min_held,
        "{}: the target holds {n} manifest(s), expected at least {}:\n{}",
        sc.name,
        sc.min_held,
        r.text
    );
    let all = w.set.all_manifests().count();
    if got == Expect::Success {
        assert_eq!(n, all, "{}", sc.name);
        w.assert_all_landed(&target, sc.name);
    }
    // The re-run without the fault completes.
    proxy.set_faults(vec![]);
    ok(&run(&args), &format!("{}: re-run", sc.name));
    assert_eq!(assert_consistent(&target, sc.name), all, "{}", sc.name);
    w.assert_all_landed(&target, sc.name);
    Outcome::Ran(
        got,
        format!(
            "{} [{n} manifest(s) at the target after the fault, all consistent]",
            first_error(&r)
        ),
    )
}

/// Writes straight to the process's stderr: seen with or without
/// `--nocapture` (the test harness only captures `print!`/`eprint!`).
fn say(line: &str) {
    let mut e = std::io::stderr();
    let _ = writeln!(e, "{line}");
    let _ = e.flush();
}

#[test]
fn fault_matrix() {
    require_tool("docker-registry");
    require_tool("skopeo");
    let w = world();
    let all = scenarios(&w);
    let (mut succeeded, mut failed, mut killed, mut skipped) = (0, 0, 0, Vec::new());
    for (i, sc) in all.iter().enumerate() {
        let outcome = match sc.side {
            Side::Export { disk } => run_export(&w, i, sc, disk),
            Side::Import { hook } => run_import(&w, i, sc, hook),
        };
        let word = match &outcome {
            Outcome::Ran(Expect::Success, note) => {
                succeeded += 1;
                format!("succeeded after retries {note}")
            }
            Outcome::Ran(Expect::CleanFailure, note) => {
                failed += 1;
                format!("failed cleanly, re-run completed {note}")
            }
            Outcome::Ran(Expect::Killed, note) => {
                killed += 1;
                format!("killed, re-run completed {note}")
            }
            Outcome::Skipped(why) => {
                skipped.push(sc.name);
                format!("SKIPPED: {why}")
            }
        };
        say(&format!("fault matrix: {}: {word}", sc.name));
    }
    let ran = all.len() - skipped.len();
    let mut summary = format!(
        "fault matrix: {ran} scenarios: {succeeded} succeeded after retries, {failed} failed cleanly and recovered on re-run, {killed} killed with kill -9 and recovered on re-run"
    );
    if !skipped.is_empty() {
        summary.push_str(&format!(
            " ({} skipped: {})",
            skipped.len(),
            skipped.join("; ")
        ));
    }
    say(&summary);
    // What each scenario did (observed) must be what it was written to
    // provoke, and none may be left out.
    let want = |e: Expect| all.iter().filter(|sc| sc.expect == e).count();
    assert_eq!(
        (succeeded, failed, killed),
        (
            want(Expect::Success),
            want(Expect::CleanFailure),
            want(Expect::Killed)
        ),
        "the outcomes differ from the scenarios' expectations"
    );
    assert!(
        skipped.is_empty(),
        "scenarios were not run: {} (the disk-full ones mount a tmpfs: run as root, as `cargo xtask test` in CI does)",
        skipped.join("; ")
    );
}
