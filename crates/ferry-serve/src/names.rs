//! The distribution spec's grammars as serve reads them from URLs: repository
//! names and tags (ferry_bundle's, re-exported), digests of any algorithm.

use ferry_bundle::Digest;

/// The repository and tag grammars are the bundle's, defined once in
/// [`ferry_bundle::reference`]: a name the store serves is one a bundle can carry.
pub use ferry_bundle::reference::{is_valid_repository as valid_name, is_valid_tag as valid_tag};

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
