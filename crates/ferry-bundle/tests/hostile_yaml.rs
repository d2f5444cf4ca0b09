//! Hostile YAML and hostile spec inputs at the library level (issue 12,
//! classes 1, 9 and 10):
//!
//! - every YAML entry point (the spec, `fromManifests` streams, a chart's
//!   `Chart.yaml` and `values.yaml`) refuses nesting deeper than
//!   `yaml::MAX_DEPTH` before the YAML library sees it, for every shape
//!   (`[[[[`, `{{{{`, `a: [[[[` (the quadratic one), compact `- - -` and
//!   `? ? ?`, block indentation, mixed), at 50 000 and 1 000 000 levels, and
//!   a 5 MiB input is refused within a watchdog;
//! - the spec refuses control, line-break and formatting characters in its
//!   name and in every other string, and names outside the name grammar;
//! - `list:` and `fromManifests:` files that are devices, FIFOs, over the
//!   size limit or with an overlong line are refused quickly, naming the
//!   path and the limit.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry_bundle::chart::read_chart;
use ferry_bundle::craft::chart_tgz;
use ferry_bundle::discover::{images_in_file, images_in_yaml};
use ferry_bundle::input::{InputError, LIST, MANIFESTS};
use ferry_bundle::spec::{Spec, SpecError};
use ferry_bundle::yaml::{check_depth, MAX_DEPTH};
use ferry_bundle::Reference;

/// The control, line-break and formatting characters every check is run over.
const HOSTILE: [char; 11] = [
    '\n', '\r', '\t', '\x1b', '\0', '\x7f', '\u{85}', '\u{2028}', '\u{2029}', '\u{202e}', '\u{7}',
];

/// How the character is written inside a YAML double-quoted string.
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

/// Runs `f` on another thread; fails the test if it takes longer than
/// `limit` (a hang or a super-linear scan), and returns its result.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("{what}: not refused within {limit:?}"),
    }
}

/// Deep inputs of every shape, `n` levels each.
fn shapes(n: usize) -> Vec<(&'static str, String)> {
    let mut indented = String::new();
    // Block indentation needs n(n+1)/2 bytes: as deep as 5 MiB allows.
    for i in 0..n.min(3000) {
        indented.push_str(&" ".repeat(i));
        indented.push_str("k:\n");
    }
    vec![
        ("flow sequences", "[".repeat(n)),
        ("flow mappings", "{".repeat(n)),
        ("flow in a block value", format!("key: {}", "[".repeat(n))),
        ("flow mapping values", "{a: ".repeat(n)),
        ("compact sequences", "- ".repeat(n)),
        ("compact keys", "? ".repeat(n)),
        ("mixed", "- [{a: ".repeat(n / 3)),
        ("block indentation", indented),
    ]
}

fn spec_err(text: &str) -> String {
    Spec::parse(text, Path::new("bundle.yaml"), Path::new("."))
        .err()
        .unwrap_or_else(|| panic!("accepted: {:?}", &text[..text.len().min(80)]))
        .to_string()
}

#[test]
fn deep_yaml_is_refused_by_every_entry_point_in_every_shape_at_50k_and_1m_levels() {
    let mut refused = 0;
    for n in [50_000usize, 1_000_000] {
        for (shape, body) in shapes(n) {
            let what = format!("{shape} x{n}");
            let started = Instant::now();
            let e = check_depth(body.as_bytes()).unwrap_err();
            assert_eq!(e.limit, MAX_DEPTH, "{what}");
            // Refused at the first level past the limit, not at the end.
            assert!(e.line <= MAX_DEPTH + 2, "{what}: {e}");

            let spec = format!("apiVersion: ferry.dev/v1\nname: t\nx: {body}");
            let msg = spec_err(&spec);
            assert!(
                msg.contains("invalid spec `bundle.yaml`")
                    && msg.contains("YAML nested deeper than 256 levels"),
                "{what}: {msg}"
            );

            let e = images_in_yaml(&body, Path::new("rendered.yaml")).unwrap_err();
            assert!(e.to_string().contains("nested deeper than"), "{what}: {e}");

            for file in ["values.yaml", "Chart.yaml"] {
                let tgz = if file == "Chart.yaml" {
                    let chart = format!("apiVersion: v2\nname: app\nversion: 1.0.0\nx: {body}");
                    chart_tgz("app", "1.0.0", &[("Chart.yaml", chart.as_bytes())])
                } else {
                    chart_tgz("app", "1.0.0", &[("values.yaml", body.as_bytes())])
                };
                if tgz.len() > 4 << 20 {
                    continue;
                }
                let e = read_chart(&tgz, "app-1.0.0.tgz").unwrap_err().to_string();
                assert!(
                    e.contains(&format!("app/{file}")) && e.contains("nested deeper than"),
                    "{what} in {file}: {e}"
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what}: {:?}",
                started.elapsed()
            );
            refused += 1;
        }
    }
    eprintln!("hostile yaml: {refused} deep inputs refused by the spec, fromManifests, Chart.yaml and values.yaml");
}

#[test]
fn a_5_mib_deep_document_is_refused_within_a_watchdog() {
    // Before the guard, `key: [[[[…` took 1.4 s at 40 000 levels and grew
    // with the square: 5 MiB of it would take minutes. The scan is one pass.
    for (shape, body) in [
        (
            "flow in a block value",
            format!("key: {}", "[".repeat(5 << 20)),
        ),
        ("compact sequences", "- ".repeat(5 << 19)),
        ("flow mappings", "{a: ".repeat(5 << 18)),
    ] {
        let text = format!("apiVersion: ferry.dev/v1\nname: t\nx: {body}");
        let len = text.len();
        let started = Instant::now();
        let msg = within(Duration::from_secs(10), shape, move || {
            Spec::parse(&text, Path::new("bundle.yaml"), Path::new("."))
                .err()
                .map(|e| e.to_string())
        });
        let msg = msg.unwrap_or_else(|| panic!("{shape}: accepted"));
        assert!(msg.contains("nested deeper than"), "{shape}: {msg}");
        eprintln!(
            "hostile yaml: {shape}, {len} bytes: refused in {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn yaml_just_under_the_limit_is_still_read() {
    // The guard refuses nesting, not ordinary YAML: 100 levels of every shape parse.
    let deep_ok = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    check_depth(deep_ok.as_bytes()).unwrap();
    let v: yaml_serde::Value = yaml_serde::from_str(&deep_ok).unwrap();
    assert!(v.is_sequence());
    let refs = images_in_yaml(
        "a:\n  b:\n    c:\n      - image: nginx:1.27\n        note: \"[[[[[[[[\"\n      - script: |\n          [[[[[[[[[[[[\n",
        Path::new("r.yaml"),
    )
    .unwrap();
    assert_eq!(refs, [Reference::parse("nginx:1.27").unwrap()]);
}

#[test]
fn spec_strings_with_control_line_break_or_formatting_characters_are_refused() {
    let sha = "a".repeat(64);
    let mut refused = 0;
    for c in HOSTILE {
        let e = yaml_escape(c);
        for (field, spec) in [
            ("name", format!("name: \"app{e}evil: 1\"\nimages: [nginx]\n")),
            ("images[0]", format!("name: t\nimages: [\"nginx:1{e}\"]\n")),
            ("charts[0].repo", format!("name: t\ncharts:\n  - repo: \"https://c.example/x{e}\"\n    name: a\n    version: 1.0.0\n")),
            ("charts[0].repoName", format!("name: t\ncharts:\n  - repo: https://c.example/x\n    name: a\n    version: 1.0.0\n    repoName: \"r{e}\"\n")),
            ("files[0].url", format!("name: t\nfiles:\n  - url: \"https://x.example/a{e}\"\n    sha256: {sha}\n    path: a\n")),
            ("files[0].path", format!("name: t\nfiles:\n  - url: https://x.example/a\n    sha256: {sha}\n    path: \"a{e}b\"\n")),
            ("falco.index", format!("name: t\nfalco:\n  index: \"https://x.example/i{e}\"\n")),
            ("opensearch.plugins[0]", format!("name: t\nopensearch:\n  version: 2.8.0\n  plugins: [\"s3{e}\"]\n")),
            ("registries", format!("name: t\nimages: [nginx]\nregistries:\n  \"r.example{e}\": {{plainHttp: true}}\n")),
            ("registries.r.example.mirror", format!("name: t\nimages: [nginx]\nregistries:\n  r.example: {{mirror: \"https://m{e}\"}}\n")),
        ] {
            let text = format!("apiVersion: ferry.dev/v1\n{spec}");
            let msg = spec_err(&text);
            assert!(
                msg.contains("invalid spec `bundle.yaml`")
                    && (msg.contains("control, line-break or formatting character")
                        || msg.contains("control characters are not allowed")),
                "{field} with {c:?}: {msg}"
            );
            assert!(msg.contains(field.split('.').next().unwrap_or(field)), "{field} with {c:?}: {msg}");
            // The message itself shows the character escaped, never raw.
            assert!(!msg.chars().any(ferry_bundle::text::is_unsafe_char), "{field} with {c:?}: {msg:?}");
            refused += 1;
        }
        // The same characters raw in the file (not escaped in YAML).
        let raw = format!("apiVersion: ferry.dev/v1\nname: \"a{c}b\"\nimages: [nginx]\n");
        let msg = spec_err(&raw);
        assert!(
            !msg.chars().any(ferry_bundle::text::is_unsafe_char),
            "raw {c:?}: {msg:?}"
        );
    }
    eprintln!("hostile spec: {refused} spec strings with control characters refused");
}

#[test]
fn bundle_names_outside_the_grammar_are_refused_and_good_names_pass() {
    for bad in [
        "a b", "a/b", "../x", "`x`", "-x", ".x", "a:b", "ä", "a#b", "a\"b",
    ] {
        let text = format!(
            "apiVersion: ferry.dev/v1\nname: {}\nimages: [nginx]\n",
            serde_json::to_string(bad).unwrap()
        );
        let msg = spec_err(&text);
        assert!(
            msg.contains("must match [A-Za-z0-9][A-Za-z0-9._+-]*"),
            "{bad}: {msg}"
        );
    }
    let long = format!(
        "apiVersion: ferry.dev/v1\nname: {}\nimages: [nginx]\n",
        "a".repeat(129)
    );
    assert!(spec_err(&long).contains("the limit is 128"));
    for good in ["ck8s-apps", "v1.2+build_3", "A"] {
        let text = format!("apiVersion: ferry.dev/v1\nname: {good}\nimages: [nginx]\n");
        let s = Spec::parse(&text, Path::new("b.yaml"), Path::new(".")).unwrap();
        assert_eq!(s.name, good);
    }
}

/// A FIFO made with mkfifo(1).
fn fifo(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let st = std::process::Command::new("mkfifo")
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo failed");
    p
}

/// A sparse file of `len` zero bytes (no disk, no memory).
fn sparse(dir: &Path, name: &str, len: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(len).unwrap();
    p
}

/// One line of `len` bytes.
fn long_line(dir: &Path, name: &str, len: usize) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("nginx:1\n{}\n", "a".repeat(len))).unwrap();
    p
}

#[test]
fn list_and_from_manifests_files_are_bounded_and_must_be_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "/dev/zero",
            PathBuf::from("/dev/zero"),
            "is not a regular file (it is a character device)",
        ),
        (
            "a FIFO",
            fifo(d, "fifo"),
            "is not a regular file (it is a FIFO)",
        ),
        (
            "a directory",
            d.to_path_buf(),
            "is not a regular file (it is a directory)",
        ),
        (
            "oversize list",
            sparse(d, "big.list", LIST.max_bytes + 1),
            "is larger than the limit of 16777216 bytes",
        ),
        (
            "oversize manifests",
            sparse(d, "big.yaml", MANIFESTS.max_bytes + 1),
            "is larger than the limit of 67108864 bytes",
        ),
        (
            "overlong list line",
            long_line(d, "long.list", LIST.max_line + 1),
            "line 2 is longer than the limit of 4096 bytes",
        ),
        (
            "overlong manifests line",
            long_line(d, "long.yaml", MANIFESTS.max_line + 1),
            "line 2 is longer than the limit of 1048576 bytes",
        ),
    ];
    for (what, path, want) in cases {
        let is_list = !what.contains("manifests");
        let is_manifests = !what.contains("list");
        let shown = path.display().to_string();
        if is_list {
            let spec_text =
                format!("apiVersion: ferry.dev/v1\nname: t\nimages:\n  - list: {shown}\n");
            let spec = Spec::parse(&spec_text, Path::new("b.yaml"), d).unwrap();
            let none = |_: &Path| -> Result<Vec<Reference>, SpecError> { Ok(vec![]) };
            let msg = within(Duration::from_secs(10), what, move || {
                let e = spec.image_requests(&[], &none).unwrap_err();
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                msg
            });
            assert!(
                msg.contains(&format!("failed to read image list `{shown}`")) && msg.contains(want),
                "list {what}: {msg}"
            );
        }
        if is_manifests {
            let p = path.clone();
            let e = within(Duration::from_secs(10), what, move || {
                images_in_file(&p).unwrap_err().to_string()
            });
            assert!(
                e.contains(&format!("`{shown}`")) && e.contains(want),
                "fromManifests {what}: {e}"
            );
        }
    }
    // A regular file under the limits is read as before.
    let ok = d.join("ok.list");
    std::fs::write(&ok, "nginx:1.27\n").unwrap();
    let t = ferry_bundle::input::read_text(&ok, LIST).unwrap();
    assert_eq!(t, "nginx:1.27\n");
    assert!(matches!(
        ferry_bundle::input::read_text(&d.join("missing"), LIST),
        Err(InputError::Io { .. })
    ));
}

#[test]
fn the_spec_file_itself_is_bounded_and_must_be_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (what, path, want) in [
        (
            "/dev/zero",
            PathBuf::from("/dev/zero"),
            "it is a character device",
        ),
        ("a FIFO", fifo(d, "spec-fifo"), "it is a FIFO"),
        (
            "oversize",
            sparse(d, "big.yaml", (5 << 20) + 1),
            "larger than the limit of 5242880 bytes",
        ),
    ] {
        let p = path.clone();
        let e = within(Duration::from_secs(10), what, move || {
            Spec::load(&p).unwrap_err()
        });
        let msg = format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        assert!(
            msg.contains(&format!("failed to read spec `{}`", path.display()))
                && msg.contains(want),
            "{what}: {msg}"
        );
    }
}
