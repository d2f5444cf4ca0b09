//! Helm's semantic versions: Masterminds/semver's `NewVersion`, the loose
//! form helm accepts for a chart version (`v?MAJOR[.MINOR[.PATCH]][-PRE][+BUILD]`),
//! and SemVer 2.0 precedence between two of them.
//!
//! The `semver` crate accepts only the strict `MAJOR.MINOR.PATCH` form (no
//! `v`, no `1.2`), so this is the one home of ours: the chart reader checks
//! `Chart.yaml`'s version with [`is_valid`], the Helm index orders its
//! entries with [`Version::cmp_precedence`].

use std::cmp::Ordering;

/// A parsed version: the three numbers (missing ones are 0) and the
/// pre-release identifiers. Build metadata is checked and then ignored, as
/// precedence ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version<'a> {
    /// MAJOR, MINOR, PATCH.
    pub core: [u64; 3],
    /// The dot-separated pre-release identifiers, empty for a release.
    pub pre: Vec<&'a str>,
}

/// Parses `v` in the loose Masterminds form, or `None` when it is not one.
pub fn parse(v: &str) -> Option<Version<'_>> {
    let v = v.strip_prefix('v').unwrap_or(v);
    let (v, build) = match v.split_once('+') {
        Some((a, b)) => (a, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match v.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (v, None),
    };
    if !pre.is_none_or(identifiers_ok) || !build.is_none_or(identifiers_ok) {
        return None;
    }
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 {
        return None;
    }
    let mut numbers = [0u64; 3];
    for (slot, p) in numbers.iter_mut().zip(&parts) {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    Some(Version {
        core: numbers,
        pre: pre.map(|p| p.split('.').collect()).unwrap_or_default(),
    })
}

/// Whether `v` is a version helm accepts.
pub fn is_valid(v: &str) -> bool {
    parse(v).is_some()
}

/// Dot-separated, non-empty, `[0-9A-Za-z-]` identifiers.
fn identifiers_ok(s: &str) -> bool {
    s.split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

impl Version<'_> {
    /// SemVer 2.0 precedence: the numbers, then a release above its
    /// pre-releases, then the identifiers one by one (numeric ones
    /// numerically and below alphanumeric ones), then the longer list.
    pub fn cmp_precedence(&self, other: &Version<'_>) -> Ordering {
        self.core
            .cmp(&other.core)
            .then_with(|| cmp_pre(&self.pre, &other.pre))
    }
}

fn cmp_pre(a: &[&str], b: &[&str]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater, // a release sorts above its pre-releases
        (false, true) => return Ordering::Less,
        _ => {}
    }
    for (x, y) in a.iter().zip(b) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_is_the_loose_masterminds_form() {
        for ok in ["1", "1.2", "v1.2.3", "1.2.3-rc.1+build.5", "0.0.0-0"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "v",
            "1.2.3.4",
            "1..2",
            "1.2.3-",
            "1.2.3+a..b",
            "x1.2.3",
            "1.2.3_4",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn parse_fills_missing_numbers_and_keeps_the_pre_release() {
        let v = parse("v2.1-rc.1+b7").unwrap();
        assert_eq!(v.core, [2, 1, 0]);
        assert_eq!(v.pre, ["rc", "1"]);
        assert_eq!(parse("3").unwrap().core, [3, 0, 0]);
    }

    #[test]
    fn precedence_follows_semver() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "v1.0.1",
            "1.10.0",
        ];
        for pair in ordered.windows(2) {
            let (a, b) = (parse(pair[0]).unwrap(), parse(pair[1]).unwrap());
            assert_eq!(a.cmp_precedence(&b), Ordering::Less, "{pair:?}");
            assert_eq!(b.cmp_precedence(&a), Ordering::Greater, "{pair:?}");
        }
        let (a, b) = (parse("1.2.3+x").unwrap(), parse("v1.2.3").unwrap());
        assert_eq!(a.cmp_precedence(&b), Ordering::Equal);
    }
}
