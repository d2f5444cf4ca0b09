//! The distribution spec's grammars: repository names, tags, digests.

use ferry_bundle::Digest;

/// The longest repository name accepted (CNCF distribution's limit).
pub const MAX_NAME_LEN: usize = 255;

/// Whether `name` matches the spec's repository grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Whether `tag` matches `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// A digest from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestRef {
    /// A valid sha256 digest (the only algorithm a ferry store holds).
    Sha256(Digest),
    /// Grammatical, but of another algorithm: nothing in the store has it.
    OtherAlgorithm,
    /// Not a digest at all (or a malformed sha256): `DIGEST_INVALID`.
    Invalid,
}

/// Parses `algorithm:encoded` per the image spec's descriptor grammar;
/// sha256 must be 64 lowercase hex characters.
pub fn parse_digest(s: &str) -> DigestRef {
    let Some((alg, enc)) = s.split_once(':') else {
        return DigestRef::Invalid;
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '_', '-']).all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
        });
    let enc_ok = !enc.is_empty()
        && enc
            .bytes()
            .all(|x| x.is_ascii_alphanumeric() || x == b'=' || x == b'_' || x == b'-');
    if !alg_ok || !enc_ok {
        return DigestRef::Invalid;
    }
    if alg == "sha256" {
        return match Digest::from_hex(enc) {
            Ok(d) => DigestRef::Sha256(d),
            Err(_) => DigestRef::Invalid,
        };
    }
    DigestRef::OtherAlgorithm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        for ok in [
            "a",
            "dockerhub/library/nginx",
            "a.b/c_d/e__f/g-h/i---j",
            "0/9",
            "ghcr.io/falcosecurity/rules/falco-rules",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a/../b",
            "a/.",
            "a b",
            "a:b",
            "a%2fb",
            &"a".repeat(256),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        assert!(valid_tag("1.27"));
        assert!(valid_tag("_x"));
        assert!(valid_tag("v1.0.0-rc.1_build"));
        assert!(valid_tag(&"a".repeat(128)));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag(""));
        assert!(!valid_tag("a+b"));
    }

    #[test]
    fn digests_are_sha256_other_or_invalid() {
        let hex = "a".repeat(64);
        assert_eq!(
            parse_digest(&format!("sha256:{hex}")),
            DigestRef::Sha256(Digest::from_hex(&hex).unwrap())
        );
        assert_eq!(
            parse_digest(&format!("sha512:{}", "b".repeat(128))),
            DigestRef::OtherAlgorithm
        );
        assert_eq!(parse_digest("sha256:abc"), DigestRef::Invalid);
        assert_eq!(
            parse_digest(&format!("sha256:{}", "A".repeat(64))),
            DigestRef::Invalid
        );
        assert_eq!(parse_digest("nocolon"), DigestRef::Invalid);
        assert_eq!(parse_digest("SHA256:abc"), DigestRef::Invalid);
        assert_eq!(parse_digest("sha256:"), DigestRef::Invalid);
        assert_eq!(parse_digest("sha256:a/b"), DigestRef::Invalid);
    }
}
