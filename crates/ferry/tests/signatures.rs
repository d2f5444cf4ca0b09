//! Bundle signatures end to end: `ferry key generate`, `ferry export
//! --sign-key`, `ferry verify --key`, `ferry import --key`, against a real
//! upstream registry, and checked with Debian's standalone `minisign`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_bundle::craft::{raw_tar, zstd, RawEntry};
use ferry_bundle::Digest;
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::registry::{require_tool, Registry};

const PASSWORD: &str = "correct horse battery staple";

fn ferry_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.args(args)
        .env_remove("FERRY_KEY_PASSWORD")
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD")
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run ferry")
}

fn ferry(args: &[&str]) -> Output {
    ferry_env(args, &[])
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

/// Asserts exit code `code` and returns the output.
#[track_caller]
fn fails(o: &Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit {code}:\n{}",
        text(o)
    );
    text(o)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `ferry key generate --out DIR/NAME` (encrypted with [`PASSWORD`]).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(name);
    ok(&ferry_env(
        &["key", "generate", "--out", s(&out)],
        &[("FERRY_KEY_PASSWORD", PASSWORD)],
    ));
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// The key id a `.pub` file names (its comment line).
fn key_id(public: &Path) -> String {
    let t = std::fs::read_to_string(public).unwrap();
    t.lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string()
}

/// The bundle's entries, in order, as raw tar entries.
fn entries(bundle: &Path) -> Vec<RawEntry> {
    let f = std::fs::File::open(bundle).unwrap();
    let stream = ferry_bundle::reader::decompress(f).unwrap();
    let mut a = tar::Archive::new(stream);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let kind = e.header().entry_type();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push(RawEntry {
            kind,
            ..RawEntry::file(&name, &data)
        });
    }
    out
}

fn entry<'a>(entries: &'a [RawEntry], name: &str) -> &'a RawEntry {
    entries.iter().find(|e| e.name == name).unwrap()
}

fn entry_mut<'a>(entries: &'a mut [RawEntry], name: &str) -> &'a mut RawEntry {
    entries.iter_mut().find(|e| e.name == name).unwrap()
}

fn write_bundle(path: &Path, entries: &[RawEntry]) -> PathBuf {
    std::fs::write(path, zstd(&raw_tar(entries))).unwrap();
    path.to_path_buf()
}

fn export(dir: &Path, spec: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(out);
    let cache = dir.join("cache");
    let mut args = vec!["export", "-f", s(spec), "-o", s(&out), "--cache", s(&cache)];
    args.extend_from_slice(extra);
    ok(&ferry_env(&args, &[("FERRY_KEY_PASSWORD", PASSWORD)]));
    out
}

fn sha256_file(p: &Path) -> Digest {
    Digest::of(&std::fs::read(p).unwrap())
}

/// Every file under `dir` (relative paths), sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// What a registry stores (blobs and repository links): empty when nothing
/// was ever pushed to it.
fn registry_content(reg: &Registry) -> Vec<String> {
    files_under(&reg.storage_dir().join("docker/registry/v2"))
}

/// Whether the registry has a manifest for `repo:tag`.
fn has_tag(reg: &Registry, repo: &str, tag: &str) -> bool {
    reg.storage_dir()
        .join(format!(
            "docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link"
        ))
        .is_file()
}

#[test]
fn key_generate_writes_a_private_minisign_pair_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("ops");
    // No password and no --no-password: refused, nothing written.
    let o = fails(&ferry(&["key", "generate", "--out", s(&out)]), 1);
    assert!(
        o.contains("FERRY_KEY_PASSWORD") && o.contains("--no-password"),
        "{o}"
    );
    assert!(files_under(dir).is_empty(), "{:?}", files_under(dir));
    // Both: contradictory, refused.
    let o = fails(
        &ferry_env(
            &["key", "generate", "--out", s(&out), "--no-password"],
            &[("FERRY_KEY_PASSWORD", PASSWORD)],
        ),
        1,
    );
    assert!(o.contains("--no-password"), "{o}");
    assert!(files_under(dir).is_empty());

    let (secret, public) = keypair(dir, "ops");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the secret key is private");
    }
    let pub_text = std::fs::read_to_string(&public).unwrap();
    assert!(
        pub_text.starts_with("untrusted comment: minisign public key: "),
        "{pub_text}"
    );
    let sec_text = std::fs::read_to_string(&secret).unwrap();
    // minisign's encrypted secret key: "Ed" + scrypt ("Sc") + BLAKE2b ("B2").
    assert!(
        sec_text.lines().nth(1).unwrap().starts_with("RWRTY0Iy"),
        "{sec_text}"
    );

    // Never overwritten.
    let before = std::fs::read(&secret).unwrap();
    let o = fails(
        &ferry_env(
            &["key", "generate", "--out", s(&out)],
            &[("FERRY_KEY_PASSWORD", "another")],
        ),
        1,
    );
    assert!(o.contains("ops.key") && o.contains("already exists"), "{o}");
    assert_eq!(std::fs::read(&secret).unwrap(), before);

    // Unencrypted for scheduled jobs.
    let o = ok(&ferry(&[
        "--json",
        "key",
        "generate",
        "--out",
        s(&dir.join("nightly")),
        "--no-password",
    ]));
    let v: serde_json::Value = serde_json::from_str(o.lines().next().unwrap()).unwrap();
    assert_eq!(v["event"], "key-generated");
    assert_eq!(v["encrypted"], false);
    assert_eq!(
        v["keyId"].as_str().unwrap(),
        key_id(&dir.join("nightly.pub"))
    );
    let sec_text = std::fs::read_to_string(dir.join("nightly.key")).unwrap();
    assert!(
        sec_text.lines().nth(1).unwrap().starts_with("RWQAAEIy"),
        "{sec_text}"
    );
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    upstream: Registry,
    set: FixtureSet,
    spec: PathBuf,
}

fn setup() -> Option<Setup> {
    require_tool("docker-registry");
    require_tool("curl");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let upstream = Registry::start().unwrap();
    let set = FixtureSet::generate(&FixtureOptions {
        many_layers: 2,
        ..FixtureOptions::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = ferry_registry::Client::new(ferry_registry::ClientConfig::default()).unwrap();
    rt.block_on(push(&set, &client, &upstream.host())).unwrap();
    let h = upstream.host();
    let spec = dir.join("bundle.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: ferry.dev/v1\nname: signed\nimages:\n  - {}\n  - {}\n",
            set.image("fixtures/multiarch").reference(&h),
            set.image("fixtures/docker-v2").reference(&h)
        ),
    )
    .unwrap();
    Some(Setup {
        _tmp: tmp,
        dir,
        upstream,
        set,
        spec,
    })
}

#[test]
fn a_signed_bundle_verifies_imports_and_minisign_agrees() {
    let Some(t) = setup() else { return };
    let dir = &t.dir;
    let (secret, public) = keypair(dir, "ops");
    let id = key_id(&public);

    // A wrong password fails before anything is fetched or written.
    let o = ferry_env(
        &[
            "export",
            "-f",
            s(&t.spec),
            "-o",
            s(&dir.join("bad.tar.zst")),
            "--cache",
            s(&dir.join("cache")),
            "--sign-key",
            s(&secret),
        ],
        &[("FERRY_KEY_PASSWORD", "wrong")],
    );
    let o = fails(&o, 1);
    assert!(o.contains("wrong password") && o.contains("ops.key"), "{o}");
    let o = fails(
        &ferry(&[
            "export",
            "-f",
            s(&t.spec),
            "-o",
            s(&dir.join("bad.tar.zst")),
            "--sign-key",
            s(&secret),
        ]),
        1,
    );
    assert!(o.contains("FERRY_KEY_PASSWORD"), "{o}");
    assert!(!dir.join("bad.tar.zst").exists());
    assert!(!dir.join("cache").exists(), "nothing fetched");

    let unsigned_a = export(dir, &t.spec, "unsigned-a.tar.zst", &[]);
    let unsigned_b = export(dir, &t.spec, "unsigned-b.tar.zst", &[]);
    let signed = export(dir, &t.spec, "signed.tar.zst", &["--sign-key", s(&secret)]);
    let signed2 = export(dir, &t.spec, "signed2.tar.zst", &["--sign-key", s(&secret)]);

    // Signing leaves unsigned exports reproducible, and a signed export
    // differs from an unsigned one by the signature entry only.
    assert_eq!(sha256_file(&unsigned_a), sha256_file(&unsigned_b));
    let plain = entries(&unsigned_a);
    let with_sig = entries(&signed);
    let names: Vec<&str> = with_sig.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        &names[..4],
        &[
            "oci-layout",
            "ferry/",
            "ferry/bundle.json",
            "ferry/bundle.json.sig"
        ],
        "the signature follows bundle.json"
    );
    let without: Vec<&RawEntry> = with_sig
        .iter()
        .filter(|e| e.name != "ferry/bundle.json.sig")
        .collect();
    assert_eq!(without.len(), plain.len());
    for (a, b) in without.iter().zip(&plain) {
        assert_eq!((&a.name, &a.data), (&b.name, &b.data), "entry {}", a.name);
    }
    // Signed bundles are reproducible too: the signature is deterministic
    // (issue 15), so two signed exports of the same content are the same
    // bytes, and Debian's minisign verifies it (below).
    assert_eq!(
        sha256_file(&signed),
        sha256_file(&signed2),
        "two signed exports of the same content differ"
    );

    // verify --key.
    let o = ok(&ferry(&["verify", s(&signed), "--key", s(&public)]));
    assert!(
        o.contains(&format!("signed by key id {id} and verified")),
        "{o}"
    );
    let o = ok(&ferry(&[
        "--json",
        "verify",
        s(&signed),
        "--key",
        s(&public),
    ]));
    assert!(o.contains(&format!("\"signedBy\":\"{id}\"")), "{o}");
    assert!(o.contains("\"signatureChecked\":true"), "{o}");
    // Without --key: reported, not required.
    let o = ok(&ferry(&["verify", s(&signed)]));
    assert!(
        o.contains(&format!("signed by key id {id}, not checked: pass --key")),
        "{o}"
    );
    let o = ok(&ferry(&["verify", s(&unsigned_a)]));
    assert!(o.contains("not signed"), "{o}");
    let o = ok(&ferry(&["inspect", s(&signed)]));
    assert!(
        o.contains(&format!("signed by key id {id}, not checked: pass --key")),
        "{o}"
    );

    // import --key into a real registry.
    let target = Registry::start().unwrap();
    let h = t.upstream.host();
    let o = ok(&ferry(&[
        "import",
        s(&signed),
        "--registry",
        &target.host(),
        "--map",
        &format!("{h}=mirror"),
        "--key",
        s(&public),
    ]));
    assert!(
        o.contains(&format!(
            "signature verified: ferry/bundle.json is signed by key id {id}"
        )),
        "{o}"
    );
    for img in ["fixtures/multiarch", "fixtures/docker-v2"] {
        let img = t.set.image(img);
        assert!(has_tag(
            &target,
            &format!("mirror/{}", img.repository),
            &img.tag
        ));
    }

    // The standalone minisign tool agrees, on the bytes as they are in the tar.
    require_tool("minisign");
    {
        let meta = entry(&with_sig, "ferry/bundle.json").data.clone();
        let sig = entry(&with_sig, "ferry/bundle.json.sig").data.clone();
        std::fs::write(dir.join("bundle.json"), &meta).unwrap();
        std::fs::write(dir.join("bundle.json.sig"), &sig).unwrap();
        let m = Command::new("minisign")
            .args([
                "-Vm",
                "bundle.json",
                "-x",
                "bundle.json.sig",
                "-p",
                s(&public),
            ])
            .current_dir(dir)
            .output()
            .unwrap();
        let out = text(&m);
        assert!(m.status.success(), "minisign refused: {out}");
        let head: serde_json::Value = serde_json::from_slice(&meta).unwrap();
        let expected = format!(
            "Trusted comment: ferry bundle signed index {}",
            head["index"]["digest"].as_str().unwrap()
        );
        assert!(out.contains(&expected), "{out}");
        // And refuses an altered bundle.json.
        let mut altered = meta.clone();
        let at = altered.len() / 2;
        altered[at] ^= 0x01;
        std::fs::write(dir.join("bundle.json"), &altered).unwrap();
        let m = Command::new("minisign")
            .args([
                "-Vm",
                "bundle.json",
                "-x",
                "bundle.json.sig",
                "-p",
                s(&public),
            ])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            !m.status.success(),
            "minisign accepted an altered bundle.json"
        );
    }
}

/// One refused bundle: verify --key and import --key (registry and store)
/// must refuse it with exit 1, naming the bundle and `must_name`, and load
/// nothing.
fn assert_refused(t: &Setup, public: &Path, bundle: &Path, must_name: &[&str]) {
    let o = fails(&ferry(&["verify", s(bundle), "--key", s(public)]), 1);
    assert!(o.contains(s(bundle)), "names the bundle: {o}");
    for m in must_name {
        assert!(o.contains(m), "names `{m}`: {o}");
    }
    let target = Registry::start().unwrap();
    let o = fails(
        &ferry(&[
            "import",
            s(bundle),
            "--registry",
            &target.host(),
            "--map",
            &format!("{}=mirror", t.upstream.host()),
            "--key",
            s(public),
        ]),
        1,
    );
    assert!(o.contains(s(bundle)), "names the bundle: {o}");
    for m in must_name {
        assert!(o.contains(m), "names `{m}`: {o}");
    }
    assert!(
        registry_content(&target).is_empty(),
        "nothing pushed: {:?}",
        registry_content(&target)
    );
    let store = t.dir.join(format!(
        "store-{}",
        bundle.file_name().unwrap().to_string_lossy()
    ));
    let o = fails(
        &ferry(&[
            "import",
            s(bundle),
            "--store",
            s(&store),
            "--key",
            s(public),
        ]),
        1,
    );
    for m in must_name {
        assert!(o.contains(m), "names `{m}`: {o}");
    }
    let stored: Vec<String> = files_under(&store)
        .into_iter()
        .filter(|f| f != "oci-layout" && f != ".ferry-lock")
        .collect();
    assert!(
        stored.is_empty(),
        "nothing written to the store: {stored:?}"
    );
}

#[test]
fn unsigned_foreign_and_tampered_bundles_are_refused_before_anything_is_loaded() {
    let Some(t) = setup() else { return };
    let dir = &t.dir;
    let (secret, public) = keypair(dir, "ops");
    let id = key_id(&public);
    let (other_secret, other_public) = keypair(dir, "other");
    let other_id = key_id(&other_public);
    let signed = export(dir, &t.spec, "signed.tar.zst", &["--sign-key", s(&secret)]);
    let good = entries(&signed);
    let meta: serde_json::Value =
        serde_json::from_slice(&entry(&good, "ferry/bundle.json").data).unwrap();

    // Unsigned.
    let unsigned = export(dir, &t.spec, "unsigned.tar.zst", &[]);
    assert_refused(&t, &public, &unsigned, &["not signed", "ops.pub", &id]);

    // Signed by another key.
    let foreign = export(
        dir,
        &t.spec,
        "foreign.tar.zst",
        &["--sign-key", s(&other_secret)],
    );
    assert_refused(&t, &public, &foreign, &["ops.pub", &id, &other_id]);
    let _ = other_public;

    // bundle.json altered (one field; it cannot be re-signed without the key).
    let mut e = good.clone();
    {
        let m = entry_mut(&mut e, "ferry/bundle.json");
        let t = String::from_utf8(m.data.clone()).unwrap();
        let altered = t.replacen("\"tool\": \"ferry ", "\"tool\": \"ferri ", 1);
        assert!(t != altered, "the tool field is where it was expected");
        m.data = altered.into_bytes();
    }
    let b = write_bundle(&dir.join("altered-meta.tar.zst"), &e);
    assert_refused(&t, &public, &b, &["altered after signing", "ops.pub", &id]);

    // index.json altered: it no longer hashes to what bundle.json pins …
    let mut e = good.clone();
    entry_mut(&mut e, "index.json").data.push(b'\n');
    let b = write_bundle(&dir.join("altered-index.tar.zst"), &e);
    assert_refused(&t, &public, &b, &["index.json digest mismatch"]);
    // … and re-pinning it in bundle.json breaks the signature.
    let new_index = entry(&e, "index.json").data.clone();
    let mut m = meta.clone();
    m["index"]["digest"] = Digest::of(&new_index).to_string().into();
    m["index"]["size"] = new_index.len().into();
    entry_mut(&mut e, "ferry/bundle.json").data = serde_json::to_vec(&m).unwrap();
    let b = write_bundle(&dir.join("repinned-index.tar.zst"), &e);
    assert_refused(&t, &public, &b, &["altered after signing", "ops.pub"]);

    // A blob replaced, with its new digest declared in bundle.json: the
    // signature fails at the head, before the blob is ever read.
    let docker = t.set.image("fixtures/docker-v2");
    let multi = t.set.image("fixtures/multiarch");
    let layer = docker
        .blobs
        .iter()
        .filter(|b| !multi.blobs.iter().any(|m| m.digest == b.digest))
        .find(|b| !b.media_type.contains("config"))
        .expect("a layer only docker-v2 has");
    let evil = b"an attacker's layer".to_vec();
    let evil_digest = Digest::of(&evil);
    let mut e = good.clone();
    {
        let x = entry_mut(&mut e, &layer.digest.layout_path());
        x.name = evil_digest.layout_path();
        x.data = evil.clone();
    }
    let mut m = meta.clone();
    for b in m["blobs"].as_array_mut().unwrap() {
        if b["digest"] == layer.digest.to_string().as_str() {
            b["digest"] = evil_digest.to_string().into();
            b["size"] = evil.len().into();
        }
    }
    entry_mut(&mut e, "ferry/bundle.json").data = serde_json::to_vec(&m).unwrap();
    let b = write_bundle(&dir.join("replaced-blob.tar.zst"), &e);
    assert_refused(&t, &public, &b, &["altered after signing", "ops.pub"]);

    // A blob's bytes altered in place: bundle.json still pins its digest, so
    // verify refuses it, and import never pushes a manifest that needs it.
    let mut e = good.clone();
    {
        let x = entry_mut(&mut e, &layer.digest.layout_path());
        let at = x.data.len() / 2;
        x.data[at] ^= 0xff;
    }
    let b = write_bundle(&dir.join("tampered-blob.tar.zst"), &e);
    let o = fails(&ferry(&["verify", s(&b), "--key", s(&public)]), 1);
    assert!(
        o.contains(&layer.digest.hex()) && o.contains("content hashes to"),
        "{o}"
    );
    let target = Registry::start().unwrap();
    let o = ferry(&[
        "import",
        s(&b),
        "--registry",
        &target.host(),
        "--map",
        &format!("{}=mirror", t.upstream.host()),
        "--key",
        s(&public),
    ]);
    let out = fails(&o, 3);
    assert!(out.contains(&layer.digest.hex()), "{out}");
    assert!(
        !has_tag(&target, "mirror/fixtures/docker-v2", &docker.tag),
        "the image with the tampered layer was not pushed"
    );
    assert!(
        !target
            .storage_dir()
            .join(format!(
                "docker/registry/v2/blobs/sha256/{}/{}",
                &layer.digest.hex()[..2],
                layer.digest.hex()
            ))
            .exists(),
        "the tampered layer is not at the target"
    );
    // The intact image still landed (exit 3: partial).
    assert!(has_tag(&target, "mirror/fixtures/multiarch", &multi.tag));
}
