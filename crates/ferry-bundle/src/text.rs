//! Text that crossed the gap: escaping it for messages, and the rule every
//! free-form string a bundle carries must follow.
//!
//! A bundle's name, its tool string, item references and annotations are
//! printed by `verify`/`inspect`/`import` and written into emitted
//! configuration. A control character in any of them could add a line to a
//! terminal or a key to a file, so the reader refuses them ([`check`]), and
//! every message that quotes bundle bytes escapes them ([`escape`]) so that
//! what a refusal names can never steer the terminal either.

/// Whether `c` must never appear raw in a message or in a bundle's strings:
/// C0/C1 control characters (NUL, newline, carriage return, ESC, DEL, NEL,
/// …), the Unicode line and paragraph separators, and the bidirectional
/// formatting characters that reorder what a terminal shows.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

/// `s` with every [unsafe character](is_unsafe_char) escaped (`\n`, `\r`,
/// `\t`, `\0`, `\x1b`, `\u{2028}`, …). Idempotent: escaping an escaped
/// text changes nothing, so a message built from escaped parts can be
/// escaped again as a whole.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if is_unsafe_char(c) => {
                let n = c as u32;
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{{{n:x}}}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// [`escape`] of bytes that may not be UTF-8 (invalid sequences become
/// U+FFFD first).
pub fn escape_bytes(b: &[u8]) -> String {
    escape(&String::from_utf8_lossy(b))
}

/// Longest single-line string ferry accepts in a bundle's metadata
/// (a name, a tool string, an annotation value).
pub const MAX_TEXT: usize = 4096;

/// Checks a single-line string from a bundle: no [unsafe
/// character](is_unsafe_char), at most `max` bytes. The error says what is
/// wrong and quotes the value escaped.
pub fn check(what: &str, s: &str, max: usize) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| is_unsafe_char(*c)) {
        return Err(format!(
            "{what} `{}` contains the control character {}: names, references and annotations are single-line text",
            escape(s),
            escape(&c.to_string())
        ));
    }
    if s.len() > max {
        return Err(format!(
            "{what} is {} bytes, over the {max}-byte limit",
            s.len()
        ));
    }
    Ok(())
}

/// [`check`], and no whitespace at all (a reference or URL).
pub fn check_token(what: &str, s: &str, max: usize) -> Result<(), String> {
    check(what, s, max)?;
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!("{what} `{}` contains whitespace", escape(s)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unsafe_character_is_escaped_and_refused() {
        for c in ('\0'..='\u{1f}').chain([
            '\u{7f}', '\u{85}', '\u{9b}', '\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}',
        ]) {
            let s = format!("a{c}b");
            let e = escape(&s);
            assert!(!e.chars().any(is_unsafe_char), "{c:?} -> {e:?}");
            assert!(e.starts_with('a') && e.ends_with('b'), "{e}");
            let err = check("name", &s, MAX_TEXT).unwrap_err();
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
