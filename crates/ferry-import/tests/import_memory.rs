//! What an import keeps per reference: small, and flat in the number of
//! references (issue 17: peak RSS ≤ 64 MiB at 10,000 references).
//!
//! A counting global allocator ([`cap::Cap`], tests only) gives the bytes
//! live at any moment. The run's events sample them (the plan made, the
//! commit started, each item committed) and once more with the report in
//! hand, so the peak is what the run holds beside the bundle reader: its
//! plan, the manifests, the store's index, the report. Imported into a
//! store (no registry needed). One test in this binary, so no other test
//! allocates beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod memory;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cap::Cap;
use ferry_registry::{Client, ClientConfig};

#[global_allocator]
static ALLOC: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// The most bytes live at any event of an import of `n` references into
/// a fresh store, above what was live before it.
fn peak_of_import(n: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.tar");
    memory::write_bundle(&path, n);
    let opts = memory::store_import(path, &dir.path().join("store"));
    let rt = memory::runtime();
    let client = Client::new(ClientConfig::default()).unwrap();
    let base = ALLOC.allocated();
    let peak = Arc::new(AtomicUsize::new(0));
    let sample = {
        let peak = peak.clone();
        move || {
            let live = ALLOC.allocated().saturating_sub(base);
            peak.fetch_max(live, Ordering::Relaxed);
        }
    };
    let events: ferry_import::Events = {
        let sample = sample.clone();
        Arc::new(move |_| sample())
    };
    let report = rt
        .block_on(ferry_import::import(&client, &opts, &events))
        .unwrap();
    sample();
    assert!(report.failed.is_empty(), "{:?}", &report.failed[..1]);
    assert_eq!(report.loaded.len(), n);
    peak.load(Ordering::Relaxed)
}

#[test]
fn an_import_keeps_little_per_reference() {
    // Warm up what is allocated once (thread-locals, lazy statics) so both
    // points start alike.
    peak_of_import(10);
    let small = peak_of_import(500);
    let large = peak_of_import(2000);
    let per_ref = (large as f64 - small as f64) / 1500.0;
    eprintln!(
        "import: peak {small} B at 500 references, {large} B at 2,000 ({per_ref:.0} B per reference)"
    );
    // Measured 3,835 B per reference here (images in repositories of their
    // own, into a store). Of that, the receipt is about 1.5 KiB (three
    // B-tree nodes per repository), then the store's pending entries, the
    // report's plan and outcomes, and the run's own state: the plans, and
    // the manifests (exact bytes and parsed) until their items commit.
    // Before issue 17's pass the run also kept a copy of each bundle.json
    // item, a copy of the repository per blob, each blob's verdict and
    // first repository into the commit, every manifest to the end and in
    // the subject maps: 6,060 B.
    assert!(
        per_ref <= 4500.0,
        "an import keeps {per_ref:.0} B per reference (500 → 2,000), over 4,500 B"
    );
}
