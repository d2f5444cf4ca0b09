//! Arbitrary text as a bundle spec (`bundle.yaml`), through what `ferry lock`
//! and `ferry export` do with one before any network access:
//! [`Spec::parse`] (YAML, schema, every section's validation), then what the
//! parsed spec is asked for: the image requests with and without a
//! `--platform` override, each OCI chart's reference, each file's digest,
//! the Trivy references.
//!
//! The same text also goes through the two other parsers of spec-side input:
//! an `images: - list:` file ([`parse_list`]) and a `fromManifests:` rendered
//! YAML stream ([`images_in_yaml`]).
//!
//! No file is read: list entries are dropped before expanding the image
//! requests (a fuzzed spec could name `/dev/zero`), and `fromManifests:`
//! expands to nothing.

#![no_main]

use std::path::Path;

use ferry_bundle::discover::images_in_yaml;
use ferry_bundle::spec::{parse_list, ImageEntry, Spec};
use ferry_bundle::Reference;
use libfuzzer_sys::fuzz_target;

/// A reference prints as text that parses back to it: the lock file and
/// bundle.json store references as that text.
fn round_trip(r: &Reference) {
    let text = r.to_string();
    match Reference::parse(&text) {
        Ok(again) => assert_eq!(&again, r, "`{text}` parses to another reference"),
        Err(e) => panic!("`{text}`, printed from a parsed reference, does not parse: {e}"),
    }
}

/// `FERRY_FUZZ_DEBUG=1 cargo +nightly fuzz run TARGET FILE` prints what
/// happened to one input (triage; off while fuzzing).
fn debug() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FERRY_FUZZ_DEBUG").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Path::new("bundle.yaml");
    let parsed = Spec::parse(text, source, Path::new("/nonexistent-fuzz-dir"));
    if debug() {
        eprintln!("{parsed:#?}");
    }
    if let Ok(mut spec) = parsed {
        for chart in &spec.charts {
            if chart.oci.is_some() {
                if let Ok(r) = chart.oci_reference() {
                    round_trip(&r);
                }
            }
        }
        for file in &spec.files {
            file.digest()
                .expect("a validated spec has a bad file digest");
        }
        if let Some(t) = &spec.trivy {
            t.references().iter().for_each(round_trip);
        }
        spec.images
            .retain(|i| !matches!(i, ImageEntry::List { .. }));
        let none = |_: &Path| Ok(Vec::new());
        for cli in [&[][..], &["linux/arm64/v8".to_string()][..]] {
            if let Ok(requests) = spec.image_requests(cli, &none) {
                for r in requests {
                    let _ = (r.reference.name(), r.reference.reference_str());
                    round_trip(&r.reference);
                }
            }
        }
    }
    if let Ok(refs) = parse_list(text, Path::new("images.list")) {
        refs.iter().for_each(round_trip);
    }
    if let Ok(refs) = images_in_yaml(text, Path::new("rendered.yaml")) {
        refs.iter().for_each(round_trip);
    }
});
