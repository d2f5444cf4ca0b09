//! `ferry verify`'s PEAK memory, flat in the number of references (issue
//! 17): the highest count of live bytes during a verify (cap's
//! `max_allocated()`), at two counts, its growth per reference bounded.
//! One test in this binary; run again as a child, it writes the bundles
//! aside (`memory::write_in_child`).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod memory;

use cap::Cap;
use ferry_import::verify::{verify, VerifyOptions};

#[global_allocator]
static ALLOC: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// The highest count of live bytes while verifying a bundle of `n`
/// references, above what was live before.
fn peak_of_verify(n: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.tar");
    memory::write_in_child(TEST, &path, n);
    let opts = VerifyOptions {
        key: None,
        policy: None,
    };
    let base = ALLOC.allocated();
    let before = ALLOC.max_allocated();
    let report = verify(&path, &opts, None).unwrap();
    let peak = ALLOC.max_allocated();
    assert_eq!(report.read.good_items.len(), n);
    drop(report);
    assert!(
        peak > before,
        "verifying {n} references never went above an earlier peak ({before} B): measure in increasing sizes"
    );
    peak - base
}

/// This test's name, for its child.
const TEST: &str = "a_verify_peak_grows_little_per_reference";

#[test]
fn a_verify_peak_grows_little_per_reference() {
    if memory::write_if_child() {
        return;
    }
    peak_of_verify(10);
    let small = peak_of_verify(500);
    let large = peak_of_verify(4000);
    let per_ref = (large as f64 - small as f64) / 3500.0;
    eprintln!(
        "verify: peak {small} B at 500 references, {large} B at 4,000 ({per_ref:.0} B per reference)"
    );
    // Measured 1,887 B per reference here: the parsed bundle.json, the
    // reader's blob table and edges, index.json while its checks run.
    // bundle.json's exact bytes (read whole beside the parsed form before
    // this pass) are no longer part of it.
    assert!(
        per_ref <= 2_400.0,
        "verify's peak grows by {per_ref:.0} B per reference (500 → 4,000), over 2,400 B"
    );
}
