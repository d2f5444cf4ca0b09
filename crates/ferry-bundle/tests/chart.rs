//! Chart archives as an attacker would write them: every hostile archive is
//! refused with an error that names the archive and the entry, and a
//! decompression bomb is refused without the memory it asks for.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ferry_bundle::chart::{read_chart, ChartError, MAX_CHART_SIZE, MAX_FILE_SIZE};
use ferry_bundle::craft::{chart_tgz, raw_tgz, RawEntry};
use ferry_bundle::Digest;

/// Counts this thread's live heap bytes and their peak, so a test measures
/// its own allocations even when tests run in parallel threads.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add_signed(delta);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting beside it touches only thread-locals.
#[allow(
    unsafe_code,
    reason = "a counting allocator measures this test's peak memory"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak heap growth (bytes) on this thread while `f` runs.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get) - base)
}

const CHART_YAML: &[u8] = b"apiVersion: v2\nname: app\nversion: 1.0.0\n";

fn refused(tgz: &[u8]) -> ChartError {
    match read_chart(tgz, "hostile.tgz") {
        Ok(c) => panic!("accepted a hostile chart: {c:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn names(e: &ChartError, entry: &str) {
    let msg = e.to_string();
    assert!(
        msg.contains("hostile.tgz") && msg.contains(entry),
        "message names neither the archive nor `{entry}`: {msg}"
    );
}

#[test]
fn a_valid_chart_gives_its_name_version_config_and_manifest() {
    let tgz = chart_tgz(
        "falco",
        "9.1.0",
        &[
            (
                "Chart.yaml",
                b"apiVersion: v2\nname: falco\nversion: 9.1.0\nappVersion: 0.44.1\ndescription: Falco\ntype: application\n",
            ),
            ("values.yaml", b"image:\n  registry: docker.io\n  repository: falcosecurity/falco\n  tag: ''\n"),
            ("templates/daemonset.yaml", b"kind: DaemonSet\n"),
        ],
    );
    let chart = read_chart(&tgz, "falco-9.1.0.tgz").unwrap();
    assert_eq!((chart.name(), chart.version()), ("falco", "9.1.0"));
    assert_eq!(chart.app_version(), Some("0.44.1"));
    let config = chart.config_json();
    assert_eq!(
        String::from_utf8(config.clone()).unwrap(),
        r#"{"name":"falco","version":"9.1.0","description":"Falco","apiVersion":"v2","appVersion":"0.44.1","type":"application"}"#
    );
    let manifest = chart.oci_manifest(
        &Digest::of(&config),
        config.len() as u64,
        &Digest::of(&tgz),
        tgz.len() as u64,
        None,
    );
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.cncf.helm.config.v1+json"
    );
    assert_eq!(m["config"]["digest"], Digest::of(&config).to_string());
    assert_eq!(m["layers"][0]["digest"], Digest::of(&tgz).to_string());
    assert_eq!(m["layers"][0]["size"], tgz.len() as u64);
    assert_eq!(m["annotations"]["org.opencontainers.image.title"], "falco");
    assert_eq!(
        m["annotations"]["org.opencontainers.image.version"],
        "9.1.0"
    );
    assert_eq!(
        chart.images().images,
        ["docker.io/falcosecurity/falco:0.44.1"]
    );
    // The same archive bytes every time.
    assert_eq!(tgz, chart_tgz("falco", "9.1.0", &[
        (
            "Chart.yaml",
            b"apiVersion: v2\nname: falco\nversion: 9.1.0\nappVersion: 0.44.1\ndescription: Falco\ntype: application\n",
        ),
        ("values.yaml", b"image:\n  registry: docker.io\n  repository: falcosecurity/falco\n  tag: ''\n"),
        ("templates/daemonset.yaml", b"kind: DaemonSet\n"),
    ]));
}

#[test]
fn chart_yaml_at_the_root_is_refused() {
    let e = refused(&raw_tgz(&[RawEntry::file("Chart.yaml", CHART_YAML)]));
    assert!(matches!(e, ChartError::ChartYamlNotInBase { .. }), "{e}");
    assert!(
        e.to_string().contains("chart yaml not in base directory"),
        "{e}"
    );
}

#[test]
fn a_parent_directory_entry_is_refused() {
    for name in ["../x", "app/../../x", "app/templates/../../x"] {
        let e = refused(&raw_tgz(&[
            RawEntry::file("app/Chart.yaml", CHART_YAML),
            RawEntry::file(name, b"x"),
        ]));
        assert!(matches!(e, ChartError::UnsafeEntry { .. }), "{name}: {e}");
        names(&e, name);
    }
}

#[test]
fn an_absolute_path_is_refused() {
    let e = refused(&raw_tgz(&[
        RawEntry::file("app/Chart.yaml", CHART_YAML),
        RawEntry::file("/etc/x", b"x"),
    ]));
    assert!(matches!(e, ChartError::UnsafeEntry { .. }), "{e}");
    names(&e, "/etc/x");
    assert!(e.to_string().contains("absolute"), "{e}");
}

#[test]
fn a_second_top_level_directory_is_refused() {
    let e = refused(&raw_tgz(&[
        RawEntry::file("app/Chart.yaml", CHART_YAML),
        RawEntry::file("other/values.yaml", b"a: 1\n"),
    ]));
    assert!(matches!(e, ChartError::SecondTopLevel { .. }), "{e}");
    names(&e, "other/values.yaml");
}

#[test]
fn a_file_at_the_root_is_refused() {
    let e = refused(&raw_tgz(&[
        RawEntry::file("app/Chart.yaml", CHART_YAML),
        RawEntry::file("README.md", b"x"),
    ]));
    names(&e, "README.md");
}

#[test]
fn a_symlink_is_refused_naming_entry_and_target() {
    let mut link = RawEntry::file("app/templates/secret.yaml", b"");
    link.kind = tar::EntryType::Symlink;
    link.link = Some("/etc/shadow".into());
    let e = refused(&raw_tgz(&[
        RawEntry::file("app/Chart.yaml", CHART_YAML),
        link,
    ]));
    assert!(matches!(e, ChartError::NotAFile { .. }), "{e}");
    names(&e, "app/templates/secret.yaml");
    assert!(
        e.to_string().contains("symbolic link to `/etc/shadow`"),
        "{e}"
    );
}

#[test]
fn hard_links_and_devices_are_refused() {
    for (kind, what) in [
        (tar::EntryType::Link, "hard link"),
        (tar::EntryType::Char, "character device"),
        (tar::EntryType::Block, "block device"),
        (tar::EntryType::Fifo, "FIFO"),
    ] {
        let mut entry = RawEntry::file("app/dev", b"");
        entry.kind = kind;
        entry.link = Some("app/Chart.yaml".into());
        let e = refused(&raw_tgz(&[
            RawEntry::file("app/Chart.yaml", CHART_YAML),
            entry,
        ]));
        names(&e, "app/dev");
        assert!(e.to_string().contains(what), "{e}");
    }
}

#[test]
fn a_file_over_5_mib_is_refused() {
    let big = vec![b'a'; 6 * 1024 * 1024];
    let e = refused(&raw_tgz(&[
        RawEntry::file("app/Chart.yaml", CHART_YAML),
        RawEntry::file("app/files/big.txt", &big),
    ]));
    match &e {
        ChartError::FileTooLarge { size, limit, .. } => {
            assert_eq!((*size, *limit), (big.len() as u64, MAX_FILE_SIZE));
        }
        other => panic!("expected FileTooLarge, got {other}"),
    }
    names(&e, "app/files/big.txt");
}

#[test]
fn not_gzip_is_refused() {
    let e = refused(b"apiVersion: v2\nname: app\n");
    assert!(matches!(e, ChartError::NotGzip { .. }), "{e}");
    names(&e, "hostile.tgz");
    // gzip, but not a tar inside.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&[0x42; 2000]).unwrap();
    let e = refused(&gz.finish().unwrap());
    assert!(matches!(e, ChartError::Read { .. }), "{e}");
}

#[test]
fn a_truncated_archive_is_refused() {
    let tgz = chart_tgz("app", "1.0.0", &[("values.yaml", &[b'x'; 4000])]);
    let e = refused(&tgz[..tgz.len() - 6]);
    assert!(matches!(e, ChartError::Read { .. }), "{e}");
}

#[test]
fn a_missing_chart_yaml_is_refused() {
    let e = refused(&raw_tgz(&[RawEntry::file("app/values.yaml", b"a: 1\n")]));
    assert!(matches!(e, ChartError::MissingChartYaml { .. }), "{e}");
    assert!(e.to_string().contains("app/Chart.yaml"), "{e}");
    let e = refused(&raw_tgz(&[]));
    assert!(matches!(e, ChartError::Empty { .. }), "{e}");
}

/// A gzip stream of `entries` files of `size` zero bytes each under
/// `app/<dir>/`, compressed while written: small on disk, huge inflated.
fn bomb(dir: &str, entries: usize, size: u64) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(CHART_YAML.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "app/Chart.yaml", CHART_YAML).unwrap();
    for i in 0..entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        b.append_data(
            &mut h,
            format!("app/{dir}/f{i}"),
            std::io::repeat(0).take(size),
        )
        .unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn a_gzip_bomb_is_refused_quickly_with_bounded_memory() {
    // 30 files of 4 MiB: each under the per-file limit, 120 MiB in all.
    let tgz = bomb("files", 30, 4 * 1024 * 1024);
    assert!(tgz.len() < 1024 * 1024, "the bomb is small: {}", tgz.len());
    let started = Instant::now();
    let (result, peak) = peak_during(|| read_chart(&tgz, "hostile.tgz"));
    let e = result.unwrap_err();
    assert!(
        matches!(e, ChartError::ChartTooLarge { limit, .. } if limit == MAX_CHART_SIZE),
        "{e}"
    );
    names(&e, "app/files/f");
    assert!(
        peak < 16 * 1024 * 1024,
        "peak heap {peak} bytes for a 120 MiB bomb"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_bomb_in_kept_files_is_bounded_by_the_chart_limit() {
    // Templates are kept in memory, so this is the worst case: never more
    // than the 100 MiB limit (plus bookkeeping), whatever the archive claims.
    let tgz = bomb("templates", 30, 4 * 1024 * 1024);
    let (result, peak) = peak_during(|| read_chart(&tgz, "hostile.tgz"));
    assert!(matches!(result, Err(ChartError::ChartTooLarge { .. })));
    // The counter sees the kept 100 MiB (so the bounded figure above is real)…
    assert!(peak > 90 * 1024 * 1024, "peak heap {peak} bytes");
    // …and never much more.
    assert!(
        peak < (MAX_CHART_SIZE + 16 * 1024 * 1024) as usize,
        "peak heap {peak} bytes"
    );
}

#[test]
fn a_stream_of_empty_entries_is_a_bomb_too() {
    // No content at all, but an endless run of headers.
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(CHART_YAML.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "app/Chart.yaml", CHART_YAML).unwrap();
    let mut d = tar::Header::new_gnu();
    d.set_entry_type(tar::EntryType::Directory);
    d.set_size(0);
    d.set_mode(0o755);
    for _ in 0..((MAX_CHART_SIZE + 17 * 1024 * 1024) / 512) {
        b.append_data(&mut d, "app/d/", std::io::empty()).unwrap();
    }
    let tgz = b.into_inner().unwrap().finish().unwrap();
    let e = refused(&tgz);
    assert!(matches!(e, ChartError::ChartTooLarge { .. }), "{e}");
}
