//! Text that crossed the gap, made safe to print and to embed.
//!
//! A bundle's name, tool string and item references, and anything an
//! upstream server sent, are untrusted: a line break in them would start a
//! new line in a terminal, a log or a configuration file's comment, and an
//! escape sequence would steer a terminal. [`escape`] renders every such
//! character visibly (`\n`, `\r`, `\t`, `\0`, `\x1b`, `\u{2028}`, …), so
//! what is printed is always exactly one line of inert text. [`check_name`]
//! is the grammar of a bundle name.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must never reach a terminal or a file raw: every Unicode
/// control character (C0, DEL, C1 including NEL U+0085), the line and
/// paragraph separators U+2028/U+2029 (line breaks to YAML 1.1 and to
/// JavaScript), and the bidirectional and zero-width formatting characters
/// that reorder or hide what a reader sees.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// Whether `s` holds any [`is_unsafe_char`].
pub fn has_unsafe_char(s: &str) -> bool {
    s.chars().any(is_unsafe_char)
}

/// `s` with every [`is_unsafe_char`] written as a visible escape: `\n`,
/// `\r`, `\t`, `\0`, `\xNN` below U+0100, `\u{NNNN}` above. Borrowed when
/// there is nothing to escape. The result never contains a line break.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !has_unsafe_char(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// Appends `c`, escaped when it is unsafe.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c if is_unsafe_char(c) && (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if is_unsafe_char(c) => {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// The longest bundle name.
pub const MAX_NAME_LEN: usize = 128;

/// A bundle name: 1 to [`MAX_NAME_LEN`] characters from `A-Z a-z 0-9 . _ + -`,
/// starting with a letter or digit (`ck8s-apps`, `platform_v1.2+build.3`).
/// It is written into file names' neighbourhood, comments, signatures'
/// trusted comments and terminal output, so it holds nothing that could
/// mean anything there.
pub fn check_name(name: &str) -> Result<(), TextError> {
    if name.is_empty() {
        return Err(TextError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(TextError::NameTooLong { len: name.len() });
    }
    let first_ok = name.as_bytes()[0].is_ascii_alphanumeric();
    let rest_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if !first_ok || !rest_ok {
        return Err(TextError::BadName {
            shown: escape(name).into_owned(),
        });
    }
    Ok(())
}

/// Why a string from a spec or a bundle was refused ([`check_name`],
/// [`check`], [`check_token`]). The value is quoted [`escape`]d.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// An empty bundle name.
    #[error("`name` must not be empty")]
    EmptyName,
    /// A bundle name over [`MAX_NAME_LEN`] bytes.
    #[error("`name` is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    NameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A bundle name outside the grammar.
    #[error("`name` `{shown}` must match [A-Za-z0-9][A-Za-z0-9._+-]* (letters, digits, `.`, `_`, `+`, `-`; no spaces or control characters)")]
    BadName {
        /// The name, escaped.
        shown: String,
    },
    /// A string holding an [unsafe character](is_unsafe_char).
    #[error("{what} `{shown}` contains the control character {char}: names, references and annotations are single-line text")]
    Unsafe {
        /// What the string is (`annotation `x``, `a signature line`, …).
        what: String,
        /// The string, escaped.
        shown: String,
        /// The first unsafe character, escaped.
        char: String,
    },
    /// A string over its length limit.
    #[error("{what} is {len} bytes, over the {max}-byte limit")]
    TooLong {
        /// What the string is.
        what: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An empty token.
    #[error("{what} is empty")]
    Empty {
        /// What the string is.
        what: String,
    },
    /// A token (a reference, a media type, a URL) with whitespace.
    #[error("{what} `{shown}` contains whitespace")]
    Whitespace {
        /// What the string is.
        what: String,
        /// The string, escaped.
        shown: String,
    },
}

/// [`escape`]d text is idempotent: escaping it again changes nothing, so a
/// message built from escaped parts can be escaped again as a whole.
/// [`escape`] of bytes that may not be UTF-8 (invalid sequences become
/// U+FFFD first).
pub fn escape_bytes(b: &[u8]) -> String {
    escape(&String::from_utf8_lossy(b)).into_owned()
}

/// Longest single-line string ferry accepts in a bundle's metadata
/// (a name, a tool string, an annotation value).
pub const MAX_TEXT: usize = 4096;

/// Checks a single-line string from a bundle: no [unsafe
/// character](is_unsafe_char), at most `max` bytes. The error says what is
/// wrong and quotes the value escaped.
pub fn check(what: &str, s: &str, max: usize) -> Result<(), TextError> {
    if let Some(c) = s.chars().find(|c| is_unsafe_char(*c)) {
        return Err(TextError::Unsafe {
            what: what.to_string(),
            shown: escape(s).into_owned(),
            char: escape(&c.to_string()).into_owned(),
        });
    }
    if s.len() > max {
        return Err(TextError::TooLong {
            what: what.to_string(),
            len: s.len(),
            max,
        });
    }
    Ok(())
}

/// [`check`], and no whitespace at all (a reference or URL).
pub fn check_token(what: &str, s: &str, max: usize) -> Result<(), TextError> {
    check(what, s, max)?;
    if s.is_empty() {
        return Err(TextError::Empty {
            what: what.to_string(),
        });
    }
    if s.chars().any(char::is_whitespace) {
        return Err(TextError::Whitespace {
            what: what.to_string(),
            shown: escape(s).into_owned(),
        });
    }
    Ok(())
}

/// An error's message with its causes, on one line (`a: b: c`): what a
/// report or a task's error carries where the chain itself cannot go.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unsafe_character_is_escaped_to_one_inert_line() {
        for (c, want) in [
            ('\n', "\\n"),
            ('\r', "\\r"),
            ('\t', "\\t"),
            ('\0', "\\0"),
            ('\x1b', "\\x1b"),
            ('\x7f', "\\x7f"),
            ('\u{85}', "\\x85"),
            ('\u{2028}', "\\u{2028}"),
            ('\u{2029}', "\\u{2029}"),
            ('\u{202e}', "\\u{202e}"),
        ] {
            let s = format!("a{c}b");
            assert_eq!(escape(&s), format!("a{want}b"), "{c:?}");
            assert!(!escape(&s).chars().any(is_unsafe_char));
        }
        assert!(matches!(escape("plain ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn names_follow_the_grammar() {
        for ok in ["a", "ck8s-apps", "v1.2+build_3", &"x".repeat(128)] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a\nb",
            "a/b",
            "a`b",
            "ä",
            &"x".repeat(129),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_unsafe_character_is_escaped_and_refused() {
        for c in ('\0'..='\u{1f}').chain([
            '\u{7f}', '\u{85}', '\u{9b}', '\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}',
        ]) {
            let s = format!("a{c}b");
            let e = escape(&s);
            assert!(!e.chars().any(is_unsafe_char), "{c:?} -> {e:?}");
            assert!(e.starts_with('a') && e.ends_with('b'), "{e}");
            let err = check("name", &s, MAX_TEXT).unwrap_err().to_string();
            assert!(!err.chars().any(is_unsafe_char), "{err:?}");
            assert!(err.contains("control character"), "{err}");
        }
    }

    #[test]
    fn plain_text_passes_unchanged() {
        for s in ["ck8s-apps", "ferry 0.1.0", "Größe", "a\\b"] {
            assert!(check("name", s, MAX_TEXT).is_ok());
        }
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape(&escape("a\nb\x1b")), escape("a\nb\x1b"));
        assert_eq!(escape("x\x1b[2Jy"), "x\\x1b[2Jy");
        assert!(check_token("reference", "a b", 100).is_err());
        assert!(check("name", &"x".repeat(MAX_TEXT + 1), MAX_TEXT).is_err());
    }
}
