//! The `verify:` section of the spec: its serde model (what the operator
//! writes) and the loaded [`Policy`] (keys parsed, trusted root parsed, globs
//! compiled, regular expressions compiled), with [`Policy::rule_for`].
//!
//! "Most specific wins", precisely: among the rules whose `match` glob
//! matches `registry/repository`, the winner is the one with the most literal
//! (non-wildcard) characters; on a tie, the one with fewer wildcards; on a
//! tie again, the one written first. A pattern without wildcards that
//! matches is therefore always chosen over any glob matching the same name.
//! Globs: `*` matches within one path segment (never `/`), `**` matches
//! across segments, `?` matches one character other than `/`, `[abc]` a
//! class; matching is case-sensitive and anchored at both ends.

use std::collections::BTreeMap;

use globset::{Glob, GlobBuilder, GlobMatcher};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::keys::PublicKey;
use crate::root::TrustedRoot;

/// The `verify:` section as written in the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerifySpec {
    /// Path to a Sigstore `trusted_root.json` (needed by keyless identities
    /// and by `tlog: required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_root: Option<String>,
    /// The rules; the most specific matching one applies.
    pub rules: Vec<RuleSpec>,
}

impl VerifySpec {
    /// Parses a `verify:` section written as JSON (the spec loader parses
    /// YAML and embeds [`VerifySpec`] directly).
    pub fn from_json(text: &str) -> Result<VerifySpec, PolicyError> {
        serde_json::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))
    }
}

/// One rule as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleSpec {
    /// Glob on `registry/repository`.
    #[serde(rename = "match")]
    pub match_: String,
    /// Paths to PEM public keys (SubjectPublicKeyInfo): ECDSA P-256/P-384,
    /// RSA (PKCS#1 v1.5 with SHA-256), Ed25519.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Keyless identities: any one of them satisfies the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<IdentitySpec>,
    /// Annotations the signed payload must carry, all of them, with these
    /// exact values (as `cosign verify -a key=value`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Whether a verified transparency-log entry is required.
    #[serde(default)]
    pub tlog: TlogRequirement,
    /// Predicate types of attestations that must be present and verify
    /// against the same keys or identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<String>,
    /// `enforce` refuses, `warn` carries and reports.
    #[serde(default)]
    pub mode: Mode,
    /// `allow` lets content that carries no signature at all through
    /// (recorded as such); content that carries signatures is still checked.
    #[serde(default)]
    pub unsigned: Unsigned,
}

/// A keyless identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentitySpec {
    /// The OIDC issuer, compared exactly with the certificate's issuer
    /// extension (1.3.6.1.4.1.57264.1.8, or the legacy .1.1).
    pub issuer: String,
    /// The certificate subject (SAN email or URI), exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The certificate subject as a regular expression (Rust `regex`
    /// syntax), anchored at both ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_reg_exp: Option<String>,
}

/// `tlog:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlogRequirement {
    /// A log entry must be present and verify offline.
    Required,
    /// A log entry is checked when present (a bad one still fails).
    #[default]
    Optional,
}

/// `mode:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A failure refuses the item.
    #[default]
    Enforce,
    /// A failure is recorded and reported; the item is carried.
    Warn,
}

/// `unsigned:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unsigned {
    /// Content without any signature is refused.
    #[default]
    Refuse,
    /// Content without any signature passes, recorded as unsigned.
    Allow,
}

/// Why a policy could not be loaded. Every variant names the rule (its
/// `match`) and the key involved.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The YAML/JSON did not parse.
    #[error("verify policy: {0}")]
    Parse(String),
    /// A rule key has a bad value.
    #[error("verify rule `{rule}`: {key}: {reason}")]
    Rule {
        /// The rule's `match`.
        rule: String,
        /// The key, e.g. `match`, `keys[0]`, `identities[1].subjectRegExp`.
        key: String,
        /// Why.
        reason: String,
    },
    /// The trusted root could not be read or parsed.
    #[error("verify policy: trustedRoot {path}: {reason}")]
    TrustedRoot {
        /// The path as written.
        path: String,
        /// Why.
        reason: String,
    },
}

fn rule_err(rule: &str, key: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError::Rule {
        rule: rule.to_owned(),
        key: key.into(),
        reason: reason.into(),
    }
}

/// A keyless identity, compiled.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Exact issuer.
    pub issuer: String,
    /// Exact subject or anchored regular expression.
    pub subject: SubjectMatch,
}

/// How the subject is matched.
#[derive(Debug, Clone)]
pub enum SubjectMatch {
    /// Exact comparison.
    Exact(String),
    /// Anchored regular expression (the source as written is kept).
    RegExp(Regex, String),
}

impl SubjectMatch {
    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        match self {
            SubjectMatch::Exact(e) => e == s,
            SubjectMatch::RegExp(r, _) => r.is_match(s),
        }
    }
    /// The subject or the expression as written.
    pub fn as_written(&self) -> &str {
        match self {
            SubjectMatch::Exact(e) => e,
            SubjectMatch::RegExp(_, s) => s,
        }
    }
}

/// A loaded rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The `match` glob as written.
    pub pattern: String,
    matcher: GlobMatcher,
    specificity: (usize, std::cmp::Reverse<usize>),
    /// Keys, each with the path it came from.
    pub keys: Vec<(String, PublicKey)>,
    /// Keyless identities.
    pub identities: Vec<Identity>,
    /// Required annotations.
    pub annotations: BTreeMap<String, String>,
    /// Log requirement.
    pub tlog: TlogRequirement,
    /// Required attestation predicate types.
    pub attestations: Vec<String>,
    /// Enforce or warn.
    pub mode: Mode,
    /// Whether content without signatures passes.
    pub unsigned: Unsigned,
}

/// A loaded policy.
#[derive(Debug, Clone)]
pub struct Policy {
    spec: VerifySpec,
    rules: Vec<Rule>,
    trusted_root: Option<TrustedRoot>,
    materials: BTreeMap<String, Vec<u8>>,
}

/// Literal characters and wildcard count of a glob.
fn specificity(pattern: &str) -> (usize, usize) {
    let mut literal = 0;
    let mut wild = 0;
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        if in_class {
            if c == ']' {
                in_class = false;
            }
            continue;
        }
        match c {
            '*' => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                wild += 1;
            }
            '?' => wild += 1,
            '[' => {
                in_class = true;
                wild += 1;
            }
            '{' | '}' | ',' => wild += 1,
            '\\' => {
                chars.next();
                literal += 1;
            }
            _ => literal += 1,
        }
    }
    (literal, wild)
}

impl Policy {
    /// Loads a policy: every key file and the trusted root are read through
    /// `read` (a path as written in the spec → its bytes), parsed and kept
    /// byte for byte so they can travel with the bundle
    /// ([`Policy::materials`]).
    // Long on purpose: the policy's fields are read and checked in the order
    // the spec gives them, each error naming its rule, and every key and root
    // file goes into the one materials map the bundle carries.
    pub fn load(
        spec: &VerifySpec,
        mut read: impl FnMut(&str) -> std::io::Result<Vec<u8>>,
    ) -> Result<Policy, PolicyError> {
        let mut materials = BTreeMap::new();
        let trusted_root = match &spec.trusted_root {
            None => None,
            Some(path) => {
                let bytes = read(path).map_err(|e| PolicyError::TrustedRoot {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let root =
                    TrustedRoot::from_bytes(&bytes).map_err(|e| PolicyError::TrustedRoot {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                materials.insert(path.clone(), bytes);
                Some(root)
            }
        };
        if spec.rules.is_empty() {
            return Err(PolicyError::Parse("`rules` is empty".into()));
        }
        let mut rules = Vec::with_capacity(spec.rules.len());
        for r in &spec.rules {
            let name = r.match_.as_str();
            if name.is_empty() {
                return Err(rule_err(name, "match", "empty pattern"));
            }
            if name.chars().any(char::is_control) {
                return Err(rule_err(
                    &name.escape_debug().to_string(),
                    "match",
                    "control character in pattern",
                ));
            }
            let glob: Glob = GlobBuilder::new(name)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| rule_err(name, "match", e.to_string()))?;
            let (lit, wild) = specificity(name);
            let mut keys = Vec::new();
            for (i, path) in r.keys.iter().enumerate() {
                let bytes = read(path)
                    .map_err(|e| rule_err(name, format!("keys[{i}]"), format!("{path}: {e}")))?;
                let key = PublicKey::from_pem(&bytes)
                    .map_err(|e| rule_err(name, format!("keys[{i}]"), format!("{path}: {e}")))?;
                materials.insert(path.clone(), bytes);
                keys.push((path.clone(), key));
            }
            let mut identities = Vec::new();
            for (i, id) in r.identities.iter().enumerate() {
                if id.issuer.is_empty() {
                    return Err(rule_err(name, format!("identities[{i}].issuer"), "empty"));
                }
                let subject = match (&id.subject, &id.subject_reg_exp) {
                    (Some(s), None) if !s.is_empty() => SubjectMatch::Exact(s.clone()),
                    (None, Some(re)) => {
                        let anchored = format!("^(?:{re})$");
                        let compiled = Regex::new(&anchored).map_err(|e| {
                            rule_err(
                                name,
                                format!("identities[{i}].subjectRegExp"),
                                e.to_string(),
                            )
                        })?;
                        SubjectMatch::RegExp(compiled, re.clone())
                    }
                    (Some(_), Some(_)) => {
                        return Err(rule_err(
                            name,
                            format!("identities[{i}]"),
                            "give `subject` or `subjectRegExp`, not both",
                        ))
                    }
                    _ => {
                        return Err(rule_err(
                            name,
                            format!("identities[{i}]"),
                            "needs a non-empty `subject` or `subjectRegExp`",
                        ))
                    }
                };
                identities.push(Identity {
                    issuer: id.issuer.clone(),
                    subject,
                });
            }
            if !identities.is_empty() && trusted_root.is_none() {
                return Err(rule_err(
                    name,
                    "identities",
                    "keyless identities need `trustedRoot` (a Sigstore trusted_root.json)",
                ));
            }
            if r.tlog == TlogRequirement::Required && trusted_root.is_none() {
                return Err(rule_err(
                    name,
                    "tlog",
                    "`required` needs `trustedRoot` (the log keys are in it)",
                ));
            }
            if keys.is_empty() && identities.is_empty() && r.unsigned != Unsigned::Allow {
                return Err(rule_err(
                    name,
                    "keys",
                    "a rule needs `keys` or `identities`, or `unsigned: allow` to let content through unchecked",
                ));
            }
            if keys.is_empty() && identities.is_empty() {
                for (k, empty) in [
                    ("annotations", r.annotations.is_empty()),
                    ("attestations", r.attestations.is_empty()),
                    ("tlog", r.tlog == TlogRequirement::Optional),
                ] {
                    if !empty {
                        return Err(rule_err(
                            name,
                            k,
                            "has no effect without `keys` or `identities`",
                        ));
                    }
                }
            }
            for (i, p) in r.attestations.iter().enumerate() {
                if p.is_empty() {
                    return Err(rule_err(name, format!("attestations[{i}]"), "empty"));
                }
            }
            rules.push(Rule {
                pattern: r.match_.clone(),
                matcher: glob.compile_matcher(),
                specificity: (lit, std::cmp::Reverse(wild)),
                keys,
                identities,
                annotations: r.annotations.clone(),
                tlog: r.tlog,
                attestations: r.attestations.clone(),
                mode: r.mode,
                unsigned: r.unsigned,
            });
        }
        for (i, a) in rules.iter().enumerate() {
            if rules[..i].iter().any(|b| b.pattern == a.pattern) {
                return Err(rule_err(
                    &a.pattern,
                    "match",
                    "the same pattern appears twice",
                ));
            }
        }
        Ok(Policy {
            spec: spec.clone(),
            rules,
            trusted_root,
            materials,
        })
    }

    /// Loads a policy whose paths are relative to `base`.
    pub fn load_from_dir(spec: &VerifySpec, base: &std::path::Path) -> Result<Policy, PolicyError> {
        Policy::load(spec, |p| std::fs::read(base.join(p)))
    }

    /// The rule for `registry/repository`: the most specific match (see the
    /// module documentation), or `None`.
    pub fn rule_for(&self, registry: &str, repository: &str) -> Option<&Rule> {
        let name = format!("{registry}/{repository}");
        let mut best: Option<&Rule> = None;
        for r in &self.rules {
            if r.matcher.is_match(&name) && best.is_none_or(|b| r.specificity > b.specificity) {
                best = Some(r);
            }
        }
        best
    }

    /// The rules in the order written.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The spec it was loaded from.
    pub fn spec(&self) -> &VerifySpec {
        &self.spec
    }

    /// The trusted root, if one was configured.
    pub fn trusted_root(&self) -> Option<&TrustedRoot> {
        self.trusted_root.as_ref()
    }

    /// Every file the policy read (key files and the trusted root), path as
    /// written → exact bytes, for the bundle to carry; [`Policy::load`] with
    /// a reader over this map rebuilds the same policy offline.
    pub fn materials(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.materials
    }
}
