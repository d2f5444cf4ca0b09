//! What the bundle reader keeps per reference: small, and flat in the
//! number of references (issue 17: peak RSS ≤ 64 MiB at 10,000 references).
//!
//! A counting global allocator ([`cap::Cap`], tests only) gives the bytes
//! live at any moment. The visitor keeps nothing and samples them at every
//! call (the head, each manifest, each blob and its end) and once more
//! with the report in hand, so the peak is what the reader itself holds:
//! bundle.json, the blob table, the manifests' edges, the report. One test
//! in this binary, so no other test allocates beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::{Cursor, Read};

use cap::Cap;
use ferry_bundle::craft::{many_images, raw_tar};
use ferry_bundle::meta::BlobMeta;
use ferry_bundle::reader::{read_bundle, BlobFault, Head, ReadOptions, VisitResult, Visitor};

#[global_allocator]
static ALLOC: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// A visitor that keeps nothing and samples the live bytes at each call.
struct Sampling {
    base: usize,
    /// The most live at any call: at the head, bundle.json's and
    /// index.json's parse are live too.
    peak: usize,
    /// The most live after the head: what the reader keeps to the end.
    kept: usize,
    past_head: bool,
}

impl Sampling {
    fn sample(&mut self) {
        let live = ALLOC.allocated().saturating_sub(self.base);
        self.peak = self.peak.max(live);
        if self.past_head {
            self.kept = self.kept.max(live);
        }
    }
}

impl Visitor for Sampling {
    fn head(&mut self, _head: &Head) -> VisitResult {
        self.sample();
        self.past_head = true;
        Ok(())
    }
    fn manifest(&mut self, _blob: &BlobMeta, _bytes: &[u8]) -> VisitResult {
        self.sample();
        Ok(())
    }
    fn blob(&mut self, _blob: &BlobMeta, data: &mut dyn Read) -> VisitResult {
        // Read a little, as an uploader would, then leave the rest to the reader.
        let mut first = [0u8; 16];
        let _ = data.read(&mut first)?;
        self.sample();
        Ok(())
    }
    fn blob_end(&mut self, _blob: &BlobMeta, verdict: Result<(), &BlobFault>) -> VisitResult {
        assert!(verdict.is_ok());
        self.sample();
        Ok(())
    }
}

/// The most bytes live during a read of `n` references, above what was
/// live before it (the bundle's own bytes), and the most after the head.
fn peak_of_read(n: usize) -> (usize, usize) {
    let tar = raw_tar(&many_images(n));
    let mut v = Sampling {
        base: ALLOC.allocated(),
        peak: 0,
        kept: 0,
        past_head: false,
    };
    let report = read_bundle(Cursor::new(&tar[..]), ReadOptions::default(), &mut v).unwrap();
    v.sample();
    assert_eq!(report.good_items.len(), n);
    assert_eq!(report.blobs as usize, 3 * n + 1);
    (v.peak, v.kept)
}

#[test]
fn the_reader_keeps_little_per_reference_and_flat_in_their_number() {
    // Warm up what is allocated once (thread-locals, the drain buffer's
    // first use) so both points start alike.
    peak_of_read(10);
    let (peak_small, kept_small) = peak_of_read(500);
    let (peak_large, kept_large) = peak_of_read(2000);
    let per_ref = |small: usize, large: usize| (large as f64 - small as f64) / 1500.0;
    let (peak, kept) = (
        per_ref(peak_small, peak_large),
        per_ref(kept_small, kept_large),
    );
    eprintln!(
        "reader: peak {peak_small} B at 500 references, {peak_large} B at 2,000 ({peak:.0} B per reference); \
         kept after the head {kept_small} B and {kept_large} B ({kept:.0} B per reference)"
    );
    // What the reader must keep to the end is bundle.json once (parsed:
    // about 1 KiB per reference on this set) and a few dozen bytes per
    // blob (its place, its status, a manifest's edges). Before issue 17's
    // pass it also kept every manifest parsed, the blob table twice,
    // index.json and every entry name: 5,488 B per reference here.
    assert!(
        kept <= 1536.0,
        "the reader keeps {kept:.0} B per reference after the head (500 → 2,000), over 1.5 KiB"
    );
    // At the head, bundle.json's bytes and index.json's parse are live
    // beside it for a moment (handed to the visitor, then dropped).
    assert!(
        peak <= 3584.0,
        "the reader's peak grows {peak:.0} B per reference (500 → 2,000), over 3.5 KiB"
    );
}
