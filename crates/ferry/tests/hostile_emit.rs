//! Issue 12, classes 1, 9 and 10 through the CLI: untrusted text must not
//! steer what ferry writes or prints, YAML nesting is refused early, and the
//! spec's own files are read with bounds.
//!
//! - A spec string with a control, line-break or formatting character (in
//!   `name` and everywhere else) is refused by `ferry export`: exit 1, the
//!   named error, no bundle written.
//! - A bundle crafted by hand with such characters in its name, tool string
//!   or item reference: `ferry verify` and `ferry inspect` print no raw
//!   control character and no injected line; `ferry import --emit-config`
//!   writes files that real parsers (the `toml` crate, yaml_serde,
//!   Python's tomllib and PyYAML) read with exactly the expected hosts and
//!   keys, or (when the reader refuses the bundle) exits 1 and writes
//!   nothing.
//! - The falcoctl index comment cannot be broken out of by `\r` or any
//!   other line break; deep falcoctl and Helm indexes are refused.
//! - `-f`, `list:` and `fromManifests:` naming `/dev/zero`, a FIFO, a 1 GiB
//!   file or an overlong line: exit 1 quickly, the path and the limit named,
//!   in bounded memory (peak RSS measured with `/usr/bin/time`).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_bundle::craft::{raw_tar, zstd, Sample};
use ferry_bundle::text::{escape, is_unsafe_char};
use ferry_testkit::registry::Registry;

/// The characters every check runs over: line breaks of every kind, tab,
/// ESC, NUL, DEL, BEL, NEL, the Unicode separators and a bidi override.
const HOSTILE: [char; 11] = [
    '\n', '\r', '\t', '\x1b', '\0', '\x7f', '\u{7}', '\u{85}', '\u{2028}', '\u{2029}', '\u{202e}',
];

/// Peak RSS allowed while refusing an endless or oversize input.
const MAX_RSS_KIB: u64 = 64 * 1024;

const TIME: &str = "/usr/bin/time";

struct Run {
    code: Option<i32>,
    text: String,
    rss_kib: Option<u64>,
    secs: f64,
}

/// Runs ferry (under `/usr/bin/time` when installed), killed after 120 s.
fn ferry(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    let timed = Path::new(TIME).exists();
    let mut c = if timed {
        let mut c = Command::new(TIME);
        c.args(["-f", "FERRY-MAXRSS-KIB=%M", env!("CARGO_BIN_EXE_ferry")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
    };
    c.args(args)
        .env_remove("FERRY_USERNAME")
        .env_remove("FERRY_PASSWORD")
        .env_remove("FERRY_LOG")
        .env("DOCKER_CONFIG", "/nonexistent-ferry-test")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let started = Instant::now();
    let mut child = c.spawn().expect("run ferry");
    let mut status = None;
    for _ in 0..12_000 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("ferry {args:?} did not finish (killed after 120 s)");
    };
    let secs = started.elapsed().as_secs_f64();
    let mut text = String::from_utf8_lossy(&std::fs::read(&out).unwrap()).into_owned();
    text.push_str(&String::from_utf8_lossy(&std::fs::read(&err).unwrap()));
    let rss_kib = text
        .lines()
        .find_map(|l| l.strip_prefix("FERRY-MAXRSS-KIB="))
        .and_then(|v| v.trim().parse().ok());
    let text = text
        .lines()
        .filter(|l| !l.starts_with("FERRY-MAXRSS-KIB="))
        .collect::<Vec<_>>()
        .join("\n");
    Run {
        code: status.code(),
        text,
        rss_kib,
        secs,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The raw control, line-break or formatting characters in `text`, other
/// than the `\n` that ends ferry's own lines.
fn raw_unsafe(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| c != '\n' && is_unsafe_char(c))
        .collect()
}

/// How `c` is written inside a YAML double-quoted string.
fn yaml_escape(c: char) -> String {
    match c {
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        '\t' => "\\t".into(),
        '\x1b' => "\\e".into(),
        '\0' => "\\0".into(),
        '\u{85}' => "\\N".into(),
        '\u{2028}' => "\\L".into(),
        '\u{2029}' => "\\P".into(),
        c => format!("\\u{:04X}", c as u32),
    }
}

/// Every file under `dir`, relative.
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
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn spec_strings_with_control_characters_are_refused_by_export_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sha = "b".repeat(64);
    let mut n = 0;
    for c in HOSTILE {
        let e = yaml_escape(c);
        for (field, body) in [
            ("name", format!("name: \"apps{e}signed by key id 0 and verified\"\nimages: [nginx]\n")),
            ("images[0]", format!("name: t\nimages: [\"nginx:1{e}\"]\n")),
            ("files[0].path", format!("name: t\nfiles:\n  - url: https://x.example/a\n    sha256: {sha}\n    path: \"a{e}b\"\n")),
            ("charts[0].repo", format!("name: t\ncharts:\n  - repo: \"https://c.example/{e}\"\n    name: a\n    version: 1.0.0\n")),
        ] {
            let spec = d.join("bundle.yaml");
            std::fs::write(&spec, format!("apiVersion: ferry.dev/v1\n{body}")).unwrap();
            let out = d.join("out.tar.zst");
            let r = ferry(&["export", "-f", s(&spec), "-o", s(&out), "--cache", s(&d.join("cache"))]);
            assert_eq!(r.code, Some(1), "{field} with {c:?}: {}", r.text);
            assert!(
                r.text.contains("invalid spec") && r.text.contains(field) && r.text.contains("control, line-break or formatting character"),
                "{field} with {c:?}: {}",
                r.text
            );
            assert!(raw_unsafe(&r.text).is_empty(), "{field} with {c:?}: {:?}", r.text);
            assert_eq!(files_under(d), ["bundle.yaml"], "{field} with {c:?}: something was written");
            n += 1;
        }
    }
    for bad in ["a b", "a/b", "../x", "`x`", "-x"] {
        let spec = d.join("bundle.yaml");
        std::fs::write(
            &spec,
            format!("apiVersion: ferry.dev/v1\nname: \"{bad}\"\nimages: [nginx]\n"),
        )
        .unwrap();
        let out = d.join("out.tar.zst");
        let r = ferry(&[
            "export",
            "-f",
            s(&spec),
            "-o",
            s(&out),
            "--cache",
            s(&d.join("cache")),
        ]);
        assert_eq!(r.code, Some(1), "{bad}: {}", r.text);
        assert!(
            r.text.contains("must match [A-Za-z0-9][A-Za-z0-9._+-]*"),
            "{bad}: {}",
            r.text
        );
        assert_eq!(files_under(d), ["bundle.yaml"]);
        n += 1;
    }
    eprintln!("hostile emit: {n} hostile specs refused by export, nothing written");
}

/// A hand-made bundle (the reader of this build may accept or refuse it).
fn crafted(dir: &Path, file: &str, name: &str, tool: &str, reference: &str) -> PathBuf {
    let mut sample = Sample::new(reference, &[7u8; 2000]);
    sample.meta.name = name.to_string();
    sample.meta.tool = tool.to_string();
    let path = dir.join(file);
    std::fs::write(&path, zstd(&raw_tar(&sample.entries()))).unwrap();
    path
}

/// The fake line a hostile string tries to print.
const FAKE: &str = "signed by key id 0000000000000000 and verified with --key trusted.pub";

/// (field, name, tool, reference) for one hostile character.
fn variants(c: char) -> Vec<(&'static str, String, String, String)> {
    let good_ref = "example.org/team/app:1.0".to_string();
    vec![
        (
            "name",
            format!("apps{c}{FAKE}{c}[host.\"https://evil.example\"]{c}evil: 1{c}\x1b[2J"),
            "ferry 0.1.0".into(),
            good_ref.clone(),
        ),
        (
            "tool",
            "apps".into(),
            format!("ferry{c}{FAKE}{c}injected: 1"),
            good_ref,
        ),
        (
            "reference",
            "apps".into(),
            "ferry 0.1.0".into(),
            format!("example.org/team/app:1.0{c}{FAKE}"),
        ),
    ]
}

/// No line of `text` starts (after indentation) with the fake line.
fn no_injected_line(text: &str) -> bool {
    !text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with(FAKE) || l.starts_with("evil: 1") || l.starts_with("injected: 1")
    })
}

#[test]
fn verify_and_inspect_print_hostile_bundle_strings_escaped_and_inject_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let (mut accepted, mut refused) = (0, 0);
    for c in HOSTILE {
        for (field, name, tool, reference) in variants(c) {
            let b = crafted(dir.path(), "b.tar.zst", &name, &tool, &reference);
            for cmd in ["verify", "inspect"] {
                let r = ferry(&[cmd, s(&b)]);
                let what = format!("{cmd} with {c:?} in the {field}");
                assert!(
                    raw_unsafe(&r.text).is_empty(),
                    "{what}: raw {:?} in {:?}",
                    raw_unsafe(&r.text),
                    r.text
                );
                assert!(
                    no_injected_line(&r.text),
                    "{what}: injected line in:\n{}",
                    r.text
                );
                match r.code {
                    Some(0) => {
                        let shown = match field {
                            "name" => escape(&name).into_owned(),
                            "tool" => escape(&tool).into_owned(),
                            _ => escape(&reference).into_owned(),
                        };
                        // Escaped, not dropped: the officer sees what is there.
                        if cmd == "inspect" || field != "reference" {
                            assert!(
                                r.text.contains(&shown),
                                "{what}: {shown} not in:\n{}",
                                r.text
                            );
                        }
                        accepted += 1;
                    }
                    Some(1) => {
                        assert!(r.text.contains("error:"), "{what}: {}", r.text);
                        assert!(!r.text.contains("is intact"), "{what}: {}", r.text);
                        refused += 1;
                    }
                    other => panic!("{what}: exit {other:?}: {}", r.text),
                }
            }
        }
    }
    eprintln!(
        "hostile emit: verify/inspect of {} hostile bundles: {accepted} printed escaped, {refused} refused (exit 1), no raw control character, no injected line",
        HOSTILE.len() * 3
    );
}

/// Top-level keys of each YAML and TOML file under `dir`, as read by
/// Python's PyYAML and tomllib (one `file: key,key` line each).
fn python_keys(dir: &Path, files: &[String]) -> Vec<String> {
    let script = r#"
import json, sys, tomllib, yaml
base = sys.argv[1]
for rel in sys.argv[2:]:
    p = base + "/" + rel
    if rel.endswith(".toml") or rel.endswith(".conf"):
        with open(p, "rb") as f:
            doc = tomllib.load(f)
        hosts = sorted(doc.get("host", {}).keys())
        print(rel + ": " + ",".join(sorted(doc.keys())) + " hosts=" + ",".join(hosts))
    else:
        with open(p, "r", encoding="utf-8") as f:
            docs = list(yaml.safe_load_all(f))
        print(rel + ": " + " | ".join(",".join(sorted(d.keys())) for d in docs))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .args(files)
        .output()
        .expect("python3 (with PyYAML) is needed for this test: apt-get install python3-yaml");
    assert!(
        out.status.success(),
        "python3 could not read the emitted files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn emitted_configuration_from_a_hostile_bundle_holds_exactly_the_expected_hosts_and_keys() {
    let target = Registry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut emitted, mut refused) = (0, 0);
    for c in HOSTILE {
        // Name and tool reach every emitted file's header. (A hostile item
        // reference never reaches a file raw: emit parses it first; verify
        // and inspect print it, checked above.)
        for (field, name, tool, reference) in variants(c).into_iter().take(2) {
            let what = format!("{c:?} in the {field}");
            let b = crafted(dir.path(), "b.tar.zst", &name, &tool, &reference);
            let emit = dir.path().join("emit");
            let _ = std::fs::remove_dir_all(&emit);
            let r = ferry(&[
                "import",
                s(&b),
                "--registry",
                &target.host(),
                "--emit-config",
                s(&emit),
                "--emit-default",
            ]);
            assert!(
                raw_unsafe(&r.text).is_empty(),
                "{what}: raw {:?} in {:?}",
                raw_unsafe(&r.text),
                r.text
            );
            assert!(
                no_injected_line(&r.text),
                "{what}: injected line in:\n{}",
                r.text
            );
            if r.code != Some(0) {
                assert_eq!(r.code, Some(1), "{what}: {}", r.text);
                assert!(
                    files_under(&emit).is_empty(),
                    "{what}: {:?}",
                    files_under(&emit)
                );
                refused += 1;
                continue;
            }
            let files = files_under(&emit);
            assert_eq!(
                files,
                [
                    "README.md",
                    "ck8s/common-config.yaml",
                    "containerd/certs.d/_default/hosts.toml",
                    "containerd/certs.d/example.org/hosts.toml",
                    "containers/registries.conf",
                    "k3s/registries.yaml",
                    "kubespray/containerd_registries_mirrors.yaml",
                    "openshift/image-mirror-sets.yaml",
                    "talos/registries-patch.yaml",
                ],
                "{what}"
            );
            for f in &files {
                let text = std::fs::read_to_string(emit.join(f)).unwrap();
                assert!(
                    raw_unsafe(&text).is_empty(),
                    "{what}: {f} holds raw {:?}",
                    raw_unsafe(&text)
                );
                assert!(no_injected_line(&text), "{what}: {f}:\n{text}");
            }
            // The toml crate: exactly `server` and one `host`, the mirror.
            let mirror = format!("http://{}/v2/example.org", target.host());
            let t: toml::Table =
                std::fs::read_to_string(emit.join("containerd/certs.d/example.org/hosts.toml"))
                    .unwrap()
                    .parse()
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(t.keys().collect::<Vec<_>>(), ["host", "server"], "{what}");
            let hosts: Vec<&String> = t["host"].as_table().unwrap().keys().collect();
            assert_eq!(hosts, [&mirror], "{what}");
            let t: toml::Table =
                std::fs::read_to_string(emit.join("containerd/certs.d/_default/hosts.toml"))
                    .unwrap()
                    .parse()
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(t.keys().collect::<Vec<_>>(), ["host"], "{what}");
            assert_eq!(t["host"].as_table().unwrap().len(), 1, "{what}");
            // yaml_serde: one key, two entries (example.org and _default).
            let k: yaml_serde::Value = yaml_serde::from_str(
                &std::fs::read_to_string(emit.join("kubespray/containerd_registries_mirrors.yaml"))
                    .unwrap(),
            )
            .unwrap();
            let m = k.as_mapping().unwrap();
            assert_eq!(m.len(), 1, "{what}: {m:?}");
            assert_eq!(
                m.get("containerd_registries_mirrors")
                    .and_then(|v| v.as_sequence())
                    .map(Vec::len),
                Some(2),
                "{what}"
            );
            // Python's parsers agree.
            let parsed: Vec<String> = files
                .iter()
                .filter(|f| !f.ends_with(".md"))
                .cloned()
                .collect();
            assert_eq!(
                python_keys(&emit, &parsed),
                [
                    "ck8s/common-config.yaml: trivy".to_string(),
                    "containerd/certs.d/_default/hosts.toml: host hosts=".to_string()
                        + &format!("http://{}", target.host()),
                    format!(
                        "containerd/certs.d/example.org/hosts.toml: host,server hosts={mirror}"
                    ),
                    "containers/registries.conf: registry hosts=".to_string(),
                    "k3s/registries.yaml: mirrors".to_string(),
                    "kubespray/containerd_registries_mirrors.yaml: containerd_registries_mirrors"
                        .to_string(),
                    "openshift/image-mirror-sets.yaml: apiVersion,kind,metadata,spec | apiVersion,kind,metadata,spec".to_string(),
                    "talos/registries-patch.yaml: machine".to_string(),
                ],
                "{what}"
            );
            // The README names the bundle escaped, on its own heading line.
            let readme = std::fs::read_to_string(emit.join("README.md")).unwrap();
            if field == "name" {
                assert!(
                    readme.starts_with(&format!(
                        "# Client configuration for bundle `{}`\n",
                        escape(&name)
                    )),
                    "{what}:\n{readme}"
                );
            }
            emitted += 1;
        }
    }
    eprintln!(
        "hostile emit: import --emit-config of {} hostile bundles: {emitted} emitted with exactly the expected hosts and keys (toml, yaml_serde, tomllib, PyYAML), {refused} refused with nothing written",
        HOSTILE.len() * 2
    );
}

#[test]
fn the_falcoctl_index_comment_cannot_be_broken_out_of() {
    use ferry_import::falcoctl::rewrite_index;
    let upstream = b"- name: falco-rules\n  type: rulesfile\n  registry: ghcr.io\n  repository: falcosecurity/rules/falco-rules\n";
    let bundled = vec![(
        ferry_bundle::Reference::parse("ghcr.io/falcosecurity/rules/falco-rules:3").unwrap(),
        ferry_registry::Repo {
            host: "registry.internal".into(),
            path: "ghcr.io/falcosecurity/rules/falco-rules".into(),
        },
    )];
    let dir = tempfile::tempdir().unwrap();
    for c in HOSTILE {
        let note = format!("Rewritten from index (bundle `x{c}- name: injected{c}  registry: evil.example{c}  repository: x{c}`)");
        let out = rewrite_index(upstream, &bundled, &note).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(raw_unsafe(&text).is_empty(), "{c:?}: {text:?}");
        let v: Vec<yaml_serde::Mapping> = yaml_serde::from_str(&text).unwrap();
        assert_eq!(v.len(), 1, "{c:?}: {text}");
        assert_eq!(
            v[0].get("name").and_then(|n| n.as_str()),
            Some("falco-rules")
        );
        assert_eq!(
            v[0].get("registry").and_then(|n| n.as_str()),
            Some("registry.internal")
        );
        // PyYAML reads the same single entry.
        let p = dir.path().join("index.yaml");
        std::fs::write(&p, &text).unwrap();
        let o = Command::new("python3")
            .args(["-c", "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); print(len(d), d[0]['name'], d[0]['registry'])"])
            .arg(&p)
            .output()
            .expect("python3 with PyYAML");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "1 falco-rules registry.internal",
            "{c:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn deep_falcoctl_and_helm_indexes_are_refused_before_parsing() {
    for n in [50_000usize, 1_000_000] {
        for body in [
            "[".repeat(n),
            format!("- name: x\n  keywords: {}", "[".repeat(n)),
            "- ".repeat(n),
        ] {
            let started = Instant::now();
            let e = ferry_import::falcoctl::rewrite_index(body.as_bytes(), &[], "n").unwrap_err();
            assert!(
                e.to_string().contains("YAML nested deeper than 256 levels"),
                "{e}"
            );
            let existing = format!("apiVersion: v1\nentries: {body}");
            let e = ferry_import::helm_index::helm_index(
                Some(existing.as_bytes()),
                &[],
                "2026-01-01T00:00:00Z",
            )
            .unwrap_err();
            assert!(
                e.to_string().contains("YAML nested deeper than 256 levels"),
                "{e}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
        }
    }
}

#[test]
fn spec_list_and_from_manifests_files_that_never_end_are_refused_quickly_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let gib = d.join("one-gib");
    std::fs::File::create(&gib)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let long_list = d.join("long.list");
    std::fs::write(&long_list, format!("nginx:1.27\n{}\n", "a".repeat(8 << 10))).unwrap();
    let long_yaml = d.join("long.yaml");
    std::fs::write(
        &long_yaml,
        format!("image: nginx:1.27\nx: {}\n", "a".repeat(2 << 20)),
    )
    .unwrap();
    let zero = PathBuf::from("/dev/zero");
    let mut cases: Vec<(String, PathBuf, String)> = Vec::new();
    for (p, want) in [
        (&zero, "is not a regular file (it is a character device)"),
        (&fifo, "is not a regular file (it is a FIFO)"),
        (&gib, "is larger than the limit of"),
    ] {
        cases.push((format!("-f {}", p.display()), p.clone(), want.to_string()));
        for key in ["list", "fromManifests"] {
            let spec = d.join(format!(
                "{key}-{}.yaml",
                p.file_name().unwrap().to_string_lossy()
            ));
            std::fs::write(
                &spec,
                format!(
                    "apiVersion: ferry.dev/v1\nname: t\nimages:\n  - {key}: {}\n",
                    p.display()
                ),
            )
            .unwrap();
            cases.push((format!("{key}: {}", p.display()), spec, want.to_string()));
        }
    }
    for (key, p, want) in [
        (
            "list",
            &long_list,
            "line 2 is longer than the limit of 4096 bytes",
        ),
        (
            "fromManifests",
            &long_yaml,
            "line 2 is longer than the limit of 1048576 bytes",
        ),
    ] {
        let spec = d.join(format!("{key}-long.yaml"));
        std::fs::write(
            &spec,
            format!(
                "apiVersion: ferry.dev/v1\nname: t\nimages:\n  - {key}: {}\n",
                p.display()
            ),
        )
        .unwrap();
        cases.push((format!("{key}: overlong line"), spec, want.to_string()));
    }
    for (what, spec, want) in &cases {
        let out = d.join("out.tar.zst");
        let r = ferry(&[
            "export",
            "-f",
            s(spec),
            "-o",
            s(&out),
            "--cache",
            s(&d.join("cache")),
        ]);
        assert_eq!(r.code, Some(1), "{what}: {}", r.text);
        assert!(r.text.contains(want.as_str()), "{what}: {}", r.text);
        assert!(!out.exists(), "{what}: a bundle was written");
        assert!(r.secs < 30.0, "{what}: {:.1}s", r.secs);
        if let Some(rss) = r.rss_kib {
            assert!(rss < MAX_RSS_KIB, "{what}: peak RSS {rss} KiB");
        }
        eprintln!(
            "hostile input: {what}: refused in {:.2}s, peak RSS {} KiB",
            r.secs,
            r.rss_kib
                .map(|k| k.to_string())
                .unwrap_or_else(|| "?".into())
        );
    }
}
