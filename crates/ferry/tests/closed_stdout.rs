//! A reader that closes ferry's stdout early (`ferry … | head`) ends the
//! output quietly: no panic, no error text, the command's own exit code.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_ferry_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // Far more output than a pipe buffers (64 KiB): writes after the reader
    // left hit a closed pipe.
    let mut doc = String::new();
    for i in 0..20_000 {
        doc.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - image: registry.example/team/app-{i}:1.0\n"
        ));
    }
    let manifests = dir.path().join("rendered.yaml");
    std::fs::write(&manifests, doc).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["images", "from-manifests", manifests.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader goes away after one line, as `head -1` does.
    assert!(first.starts_with("registry.example/team/app-"), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}
