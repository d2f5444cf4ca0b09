//! The nesting-depth guard every YAML ferry reads passes first.
//!
//! The YAML library (libyaml underneath `yaml_serde`) tokenises a whole
//! document before its recursion limit applies, and that tokenising is
//! quadratic in flow nesting inside a block value (`a: [[[[…`: 40 000 levels
//! take 1.4 s, a million would take minutes) and slow even when linear.
//! [`check_depth`] is one linear pass over the bytes that follows YAML's
//! structure closely enough to know the nesting depth everywhere (flow
//! brackets outside quotes, comments and block scalars; the block
//! indentation stack the scanner keeps, including compact `- - -`) and
//! refuses input nested deeper than [`MAX_DEPTH`] before the library sees
//! it. Where it is unsure it counts a level rather than skip one, so it may
//! over-count odd but valid YAML; real files stay far below the limit.

/// The deepest nesting accepted. `yaml_serde` itself stops at 128.
pub const MAX_DEPTH: usize = 256;

/// YAML nested deeper than the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("YAML nested deeper than {limit} levels (at line {line}, column {column}): refused before parsing")]
pub struct DepthError {
    /// The limit that was exceeded.
    pub limit: usize,
    /// 1-based line of the opening that went past it.
    pub line: usize,
    /// 1-based byte column.
    pub column: usize,
}

/// Refuses `bytes` when a YAML stream nests deeper than [`MAX_DEPTH`].
pub fn check_depth(bytes: &[u8]) -> Result<(), DepthError> {
    check_depth_limit(bytes, MAX_DEPTH)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    Single,
    Double,
}

struct Scan {
    limit: usize,
    flow: usize,
    /// The block indentation stack (columns), as libyaml keeps it.
    indents: Vec<usize>,
    line: usize,
}

impl Scan {
    fn check(&self, column: usize) -> Result<(), DepthError> {
        if self.flow + self.indents.len() > self.limit {
            Err(DepthError {
                limit: self.limit,
                line: self.line,
                column: column + 1,
            })
        } else {
            Ok(())
        }
    }

    /// A block collection opened at `column` (only deeper than the last).
    fn push(&mut self, column: usize) -> Result<(), DepthError> {
        if self.indents.last().is_none_or(|&top| column > top) {
            self.indents.push(column);
        }
        self.check(column)
    }
}

fn is_blank(b: Option<&u8>) -> bool {
    matches!(b, None | Some(b' ' | b'\t'))
}

/// [`check_depth`] with another limit.
// Long on purpose: one linear scanner over the bytes (flow and block
// nesting, quotes, comments, block scalars) whose states share the cursor
// and the depth; a split would pass them all to every piece.
pub fn check_depth_limit(bytes: &[u8], limit: usize) -> Result<(), DepthError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut s = Scan {
        limit,
        flow: 0,
        indents: Vec::new(),
        line: 0,
    };
    let mut quote: Option<Quote> = None;
    // Inside a block scalar whose parent indentation is this (-1: top level).
    let mut block_scalar: Option<isize> = None;
    for line in bytes.split(|&b| b == b'\n' || b == b'\r') {
        s.line += 1;
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let blank = line[indent..].iter().all(|&b| b == b' ' || b == b'\t');
        if let Some(parent) = block_scalar {
            if blank || indent as isize > parent {
                continue;
            }
            block_scalar = None;
        }
        let mut i = 0;
        let mut at_token = true;
        let mut node_col = 0usize;
        // After a quoted scalar or a closing bracket, `:` is a value indicator
        // even when glued to what follows (JSON style).
        let mut json_key = false;
        if let Some(q) = quote {
            match end_of_quote(line, 0, q) {
                Some(end) => {
                    quote = None;
                    i = end;
                    at_token = false;
                    json_key = true;
                }
                None => continue,
            }
        } else if s.flow == 0 {
            if blank || line.get(indent) == Some(&b'#') {
                continue;
            }
            if indent == 0
                && (line.starts_with(b"---") || line.starts_with(b"..."))
                && is_blank(line.get(3))
            {
                s.indents.clear();
                i = 3;
            } else if indent == 0 && line.first() == Some(&b'%') {
                continue;
            } else {
                while s.indents.last().is_some_and(|&top| top > indent) {
                    s.indents.pop();
                }
                i = indent;
            }
        }
        while i < line.len() {
            let c = line[i];
            let next = line.get(i + 1);
            if at_token {
                match c {
                    b' ' | b'\t' => {}
                    b'#' => break,
                    b'"' | b'\'' => {
                        let q = if c == b'"' {
                            Quote::Double
                        } else {
                            Quote::Single
                        };
                        node_col = i;
                        match end_of_quote(line, i + 1, q) {
                            Some(end) => {
                                i = end;
                                at_token = false;
                                json_key = true;
                                continue;
                            }
                            None => {
                                quote = Some(q);
                                break;
                            }
                        }
                    }
                    b'[' | b'{' => {
                        s.flow += 1;
                        s.check(i)?;
                    }
                    b']' | b'}' => {
                        s.flow = s.flow.saturating_sub(1);
                        at_token = false;
                        json_key = true;
                    }
                    b',' if s.flow > 0 => {}
                    b'-' | b'?' | b':' if is_blank(next) || (s.flow > 0 && c != b'-') => {
                        if s.flow == 0 {
                            s.push(i)?;
                        }
                    }
                    b'|' | b'>' if s.flow == 0 => {
                        block_scalar = Some(s.indents.last().map_or(-1, |&t| t as isize));
                        break;
                    }
                    b'&' | b'!' | b'*' => {
                        // An anchor, tag or alias runs to the next blank.
                        node_col = i;
                        while i < line.len() && !matches!(line[i], b' ' | b'\t') {
                            if s.flow > 0 && matches!(line[i], b',' | b'[' | b']' | b'{' | b'}') {
                                break;
                            }
                            i += 1;
                        }
                        at_token = c != b'*';
                        json_key = false;
                        continue;
                    }
                    _ => {
                        node_col = i;
                        at_token = false;
                        json_key = false;
                    }
                }
                i += 1;
                continue;
            }
            // Inside a plain scalar, or after a quoted scalar or a bracket.
            match c {
                b':' if is_blank(next)
                    || json_key
                    || (s.flow > 0 && matches!(next, Some(b',' | b'[' | b']' | b'{' | b'}'))) =>
                {
                    if s.flow == 0 {
                        s.push(node_col)?;
                    }
                    at_token = true;
                }
                b'#' if i > 0 && matches!(line[i - 1], b' ' | b'\t') => break,
                b',' if s.flow > 0 => at_token = true,
                b'[' | b'{' if s.flow > 0 => {
                    s.flow += 1;
                    s.check(i)?;
                    at_token = true;
                }
                b']' | b'}' if s.flow > 0 => {
                    s.flow -= 1;
                    json_key = true;
                }
                b' ' | b'\t' => {}
                _ => json_key = false,
            }
            i += 1;
        }
    }
    Ok(())
}

/// Where a quoted scalar that is open at `from` ends on `line` (the index
/// after its closing quote), or `None` when it goes on to the next line.
fn end_of_quote(line: &[u8], from: usize, q: Quote) -> Option<usize> {
    let mut i = from;
    while i < line.len() {
        match (q, line[i]) {
            (Quote::Double, b'\\') => i += 2,
            (Quote::Double, b'"') => return Some(i + 1),
            (Quote::Single, b'\'') if line.get(i + 1) == Some(&b'\'') => i += 2,
            (Quote::Single, b'\'') => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Why a document could not be rendered as YAML.
#[derive(Debug, thiserror::Error)]
#[error("failed to render YAML: {0}")]
pub struct RenderError(String);

/// Renders `value` as YAML that YAML 1.1 readers (Helm's
/// `sigs.k8s.io/yaml`, PyYAML, Ansible) read back as the same strings:
/// every string a 1.1 resolver would take for something else (`on`, `yes`,
/// `n`, `~`, `1_000`, `1:20`, `0o17`, `2001-01-01`, `<<`, `=`, …) is quoted.
/// The one YAML writer of ferry's emitted files (serde-saphyr, which quotes
/// by the YAML 1.1 and 1.2 resolvers both).
pub fn to_string_yaml11<T: serde::Serialize>(value: &T) -> Result<String, RenderError> {
    serde_saphyr::to_string(value).map_err(|e| RenderError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, limit: usize) -> bool {
        check_depth_limit(text.as_bytes(), limit).is_ok()
    }

    #[test]
    fn ordinary_yaml_passes_at_its_depth_and_fails_one_below() {
        let values = "a:\n  b:\n    c: [1, {d: e}]\n  f: |\n    [[[[[[ not nesting\n      {{{{\n  g: \"[[[[\" # [[[[\n  h: it's [[[\n- - - x\n";
        assert!(depth_ok(values, 5), "{values}");
        assert!(!depth_ok(values, 3), "{values}");
        // A quoted scalar over two lines hides its brackets.
        assert!(depth_ok("a: \"x [[[\n  [[[[ y\"\nb: 1\n", 2));
        // Brackets in a plain scalar are text; in a flow they nest.
        assert!(depth_ok("a: b[[[[[c\n", 2));
        assert!(!depth_ok("a: [b, [[[[c]]]]]\n", 3));
        // Compact sequences nest on one line.
        assert!(!depth_ok("- - - - - - x\n", 5));
        assert!(depth_ok("- - - - - - x\n", 6));
    }

    #[test]
    fn every_shape_of_deep_nesting_is_refused_with_its_position() {
        let n = 10_000;
        let mut indented = String::new();
        for i in 0..300 {
            indented.push_str(&" ".repeat(i));
            indented.push_str("k:\n");
        }
        for text in [
            "[".repeat(n),
            "{".repeat(n),
            format!("a: {}", "[".repeat(n)),
            "- ".repeat(n),
            "? ".repeat(n),
            "- [{a: ".repeat(n),
            indented,
        ] {
            let e = check_depth(text.as_bytes()).unwrap_err();
            assert_eq!(e.limit, MAX_DEPTH);
            assert!(e.to_string().contains("nested deeper than 256"), "{e}");
        }
    }
}
