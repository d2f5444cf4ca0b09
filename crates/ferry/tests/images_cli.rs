//! `ferry images from-chart`, driven through the built binary.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::Path;
use std::process::{Command, Output};

use ferry_bundle::craft::chart_tgz;

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("run ferry")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

fn sample_chart() -> Vec<u8> {
    let sub = chart_tgz(
        "redis",
        "17.0.0",
        &[
            (
                "Chart.yaml",
                b"apiVersion: v2\nname: redis\nversion: 17.0.0\nappVersion: 7.0.5\n",
            ),
            (
                "values.yaml",
                b"image:\n  registry: docker.io\n  repository: bitnami/redis\n  tag: ''\n",
            ),
        ],
    );
    chart_tgz(
        "app",
        "1.2.3",
        &[
            (
                "values.yaml",
                b"image:\n  repository: ghcr.io/example/app\n  tag: ''\nhelper:\n  image: nginx:1.27\nbroken:\n  image: Not/Valid\n",
            ),
            (
                "templates/deploy.yaml",
                b"containers:\n  - image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"\n  - image: registry.k8s.io/pause:3.9\n  - image: nginx:1.27\n",
            ),
            ("charts/redis-17.0.0.tgz", &sub),
        ],
    )
}

#[test]
fn from_chart_prints_each_image_once_sorted_with_skipped_values_as_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let chart = write(dir.path(), "app-1.2.3.tgz", &sample_chart());
    let o = ferry(&["images", "from-chart", &chart]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "docker.io/bitnami/redis:7.0.5\n\
         docker.io/library/nginx:1.27\n\
         ghcr.io/example/app:1.2.3\n\
         registry.k8s.io/pause:3.9\n"
    );
    let err = stderr(&o);
    assert!(
        err.contains("warning: skipped `Not/Valid` (app/values.yaml: broken.image): "),
        "{err}"
    );
    assert!(
        !err.contains("{{"),
        "templated lines are not warnings: {err}"
    );
}

#[test]
fn from_chart_output_is_a_usable_list_file() {
    let dir = tempfile::tempdir().unwrap();
    let chart = write(dir.path(), "app-1.2.3.tgz", &sample_chart());
    let o = ferry(&["--quiet", "images", "from-chart", &chart]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // --quiet keeps the list and drops the warnings.
    assert_eq!(stderr(&o), "");
    for line in stdout(&o).lines() {
        let r = ferry_bundle::Reference::parse(line).unwrap();
        assert_eq!(r.to_string(), line);
    }
}

#[test]
fn from_chart_json_reports_refs_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let chart = write(dir.path(), "app-1.2.3.tgz", &sample_chart());
    let o = ferry(&["--json", "images", "from-chart", &chart]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let event: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(event["event"], "images");
    assert_eq!(event["chart"], "app");
    assert_eq!(event["refs"].as_array().unwrap().len(), 4);
    assert_eq!(event["skipped"][0]["value"], "Not/Valid");
    assert_eq!(
        event["skipped"][0]["location"],
        "app/values.yaml: broken.image"
    );
}

#[test]
fn a_bad_chart_exits_1_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_gzip = write(dir.path(), "values.yaml", b"image: nginx\n");
    let o = ferry(&["images", "from-chart", &not_gzip]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    let err = stderr(&o);
    assert!(
        err.contains("error:") && err.contains(&not_gzip) && err.contains("not a gzip"),
        "{err}"
    );

    let no_version = chart_tgz("app", "1.0.0", &[("Chart.yaml", b"name: app\n")]);
    let path = write(dir.path(), "app.tgz", &no_version);
    let o = ferry(&["images", "from-chart", &path]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&path) && err.contains("chart.metadata.version is required"),
        "{err}"
    );

    let missing = dir.path().join("absent.tgz").display().to_string();
    let o = ferry(&["images", "from-chart", &missing]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&missing), "{}", stderr(&o));
}
