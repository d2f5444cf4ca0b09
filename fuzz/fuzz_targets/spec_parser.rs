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
//! Invariants of issue 12: the nesting guard never panics, escaped text
//! holds no control character, and an accepted spec has a name of the
//! grammar and no control, line-break or formatting character anywhere.
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

/// The free strings of a parsed spec (those that travel into the bundle).
fn strings(spec: &Spec) -> Vec<&str> {
    let mut out = vec![spec.name.as_str()];
    for c in &spec.charts {
        out.extend(
            [&c.repo, &c.name, &c.version, &c.oci, &c.repo_name]
                .into_iter()
                .flatten()
                .map(String::as_str),
        );
    }
    for f in &spec.files {
        out.extend([f.url.as_str(), f.path.as_str(), f.sha256.as_str()]);
    }
    if let Some(f) = &spec.falco {
        out.extend(f.index.as_deref());
        if let Some(d) = &f.drivers {
            out.push(d.version.as_str());
            out.extend(d.repo.as_deref());
        }
    }
    if let Some(o) = &spec.opensearch {
        out.push(o.version.as_str());
        out.extend(o.plugins.iter().map(String::as_str));
    }
    for (host, r) in &spec.registries {
        out.push(host.as_str());
        out.extend(r.mirror.as_deref());
    }
    out
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
    // The nesting guard Spec::parse runs first: a linear scan that never panics.
    let _ = ferry_bundle::yaml::check_depth(data);
    // Escaped text is one inert line, whatever went in.
    assert!(
        !ferry_bundle::text::has_unsafe_char(&ferry_bundle::text::escape(text)),
        "escape left a control character"
    );
    if let Ok(mut spec) = parsed {
        // An accepted spec has a name of the grammar and no control,
        // line-break or formatting character in any string.
        ferry_bundle::text::check_name(&spec.name).expect("accepted a name outside the grammar");
        for s in strings(&spec) {
            assert!(
                !ferry_bundle::text::has_unsafe_char(s),
                "accepted a spec string with a control character: {s:?}"
            );
        }
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
