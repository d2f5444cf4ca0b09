//! Go's JSON encoding, byte for byte: the config blob `helm push` stores.

use super::*;

/// A JSON string as Go's `encoding/json` writes it (HTML-safe: `<`, `>`, `&`,
/// U+2028 and U+2029 escaped).
pub(super) fn go_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`.
pub(super) fn go_format_g32(f: f64) -> String {
    let f = f as f32;
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    go_format_g(&format!("{f:e}"))
}

/// `%g` with the shortest digits, from Rust's shortest `{:e}` rendering.
pub(super) fn go_format_g(sci: &str) -> String {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if digits == "0" {
        out.push('0');
        return out;
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
        return out;
    }
    let dp = exp + 1; // digits before the decimal point
    if dp <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', dp.unsigned_abs() as usize));
        out.push_str(&digits);
    } else {
        let dp = dp as usize;
        if digits.len() <= dp {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', dp - digits.len()));
        } else {
            out.push_str(&digits[..dp]);
            out.push('.');
            out.push_str(&digits[dp..]);
        }
    }
    out
}

/// A float64 as Go's `encoding/json` writes it.
pub(super) fn go_json_f64(out: &mut String, f: f64) {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let sci = format!("{f:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        if exp < 0 {
            let _ = write!(out, "{mantissa}e-{}", exp.unsigned_abs());
        } else {
            let _ = write!(out, "{mantissa}e+{exp:02}");
        }
    } else {
        let _ = write!(out, "{f}");
    }
}

pub(super) fn go_json_value(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => go_json_f64(out, n.as_f64().unwrap_or(0.0)),
        J::String(s) => go_str(out, s),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_value(out, item);
            }
            out.push(']');
        }
        J::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_str(out, k);
                out.push(':');
                if let Some(v) = map.get(k) {
                    go_json_value(out, v);
                }
            }
            out.push('}');
        }
    }
}

pub(super) fn string_list_json(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        go_str(out, s);
    }
    out.push(']');
}

pub(super) fn string_map_json(out: &mut String, map: &BTreeMap<String, String>) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        go_str(out, k);
        out.push(':');
        go_str(out, v);
    }
    out.push('}');
}

pub(super) fn descriptor_json(out: &mut String, media_type: &str, digest: &Digest, size: u64) {
    out.push_str("{\"mediaType\":");
    go_str(out, media_type);
    out.push_str(",\"digest\":");
    go_str(out, &digest.to_string());
    let _ = write!(out, ",\"size\":{size}}}");
}

/// Writes `{"k":v,…}` fields one at a time, Go struct order, `omitempty`
/// decided by the caller.
pub(super) struct Obj<'a> {
    pub(super) out: &'a mut String,
    pub(super) first: bool,
}

impl<'a> Obj<'a> {
    pub(super) fn new(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }
    pub(super) fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        go_str(self.out, k);
        self.out.push(':');
        self.out
    }
    pub(super) fn str(&mut self, k: &str, v: &str, omitempty: bool) {
        if !(omitempty && v.is_empty()) {
            let out = self.key(k);
            go_str(out, v);
        }
    }
    pub(super) fn list(&mut self, k: &str, v: &[String]) {
        if !v.is_empty() {
            let out = self.key(k);
            string_list_json(out, v);
        }
    }
    pub(super) fn flag(&mut self, k: &str, v: bool) {
        if v {
            self.key(k).push_str("true");
        }
    }
    pub(super) fn end(self) {
        self.out.push('}');
    }
}

pub(super) fn metadata_json(m: &Metadata) -> String {
    let mut s = String::new();
    let mut o = Obj::new(&mut s);
    o.str("name", &m.name, true);
    o.str("home", &m.home, true);
    o.list("sources", &m.sources);
    o.str("version", &m.version, true);
    o.str("description", &m.description, true);
    o.list("keywords", &m.keywords);
    if !m.maintainers.is_empty() {
        let out = o.key("maintainers");
        out.push('[');
        for (i, mt) in m.maintainers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut mo = Obj::new(out);
            mo.str("name", &mt.name, true);
            mo.str("email", &mt.email, true);
            mo.str("url", &mt.url, true);
            mo.end();
        }
        out.push(']');
    }
    o.str("icon", &m.icon, true);
    o.str("apiVersion", &m.api_version, true);
    o.str("condition", &m.condition, true);
    o.str("tags", &m.tags, true);
    o.str("appVersion", &m.app_version, true);
    o.flag("deprecated", m.deprecated);
    if !m.annotations.is_empty() {
        let out = o.key("annotations");
        string_map_json(out, &m.annotations);
    }
    o.str("kubeVersion", &m.kube_version, true);
    if !m.dependencies.is_empty() {
        let out = o.key("dependencies");
        out.push('[');
        for (i, d) in m.dependencies.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut d_o = Obj::new(out);
            d_o.str("name", &d.name, false);
            d_o.str("version", &d.version, true);
            d_o.str("repository", &d.repository, false);
            d_o.str("condition", &d.condition, true);
            d_o.list("tags", &d.tags);
            d_o.flag("enabled", d.enabled);
            if !d.import_values.is_empty() {
                let out = d_o.key("import-values");
                go_json_value(out, &serde_json::Value::Array(d.import_values.clone()));
            }
            d_o.str("alias", &d.alias, true);
            d_o.end();
        }
        out.push(']');
    }
    o.str("type", &m.chart_type, true);
    o.end();
    s
}
