//! `Chart.yaml` read with helm's rules (Go's JSON decoding of
//! `chart.Metadata`): fields, names, versions, dependencies.

use super::*;

pub(super) type Entries<'a> = Vec<(String, &'a Node)>;

/// A YAML map as Go's JSON decoding sees it: keys as strings, sorted
/// (`json.Marshal` of a Go map), so that a later duplicate wins.
pub(super) fn go_entries<'a>(m: &'a [(Node, Node)], what: &str) -> Result<Entries<'a>, String> {
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m {
        let key =
            key_text(k).ok_or_else(|| format!("{what}: unsupported map key {}", kind_name(k)))?;
        out.push((key, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The Go struct field a JSON key lands in: exact name first, then
/// case-insensitively (encoding/json).
pub(super) fn field_of<'f>(key: &str, fields: &[&'f str]) -> Option<&'f str> {
    fields
        .iter()
        .find(|f| **f == key)
        .or_else(|| fields.iter().find(|f| f.eq_ignore_ascii_case(key)))
        .copied()
}

pub(super) fn kind_name(n: &Node) -> &'static str {
    match n {
        Node::Null => "null",
        Node::Bool(_) => "bool",
        Node::Int(_) | Node::UInt(_) | Node::Float(_) => "number",
        Node::Str(_) => "string",
        Node::Seq(_) => "array",
        Node::Map(_) => "object",
    }
}

pub(super) fn type_error(n: &Node, field: &str, go_type: &str) -> String {
    format!(
        "cannot unmarshal {} into field `{field}` of type {go_type}",
        kind_name(n)
    )
}

/// A Go `string` field: scalars convert (sigs.k8s.io/yaml: numbers with
/// `FormatFloat(f, 'g', -1, 32)`); `None` for null (Go leaves the field).
pub(super) fn go_string(n: &Node, field: &str) -> Result<Option<String>, String> {
    Ok(match n {
        Node::Null => None,
        Node::Str(s) => Some(s.clone()),
        Node::Int(i) => Some(i.to_string()),
        Node::UInt(u) => Some(u.to_string()),
        Node::Float(f) => Some(go_format_g32(*f)),
        Node::Bool(b) => Some(b.to_string()),
        Node::Seq(_) | Node::Map(_) => return Err(type_error(n, field, "string")),
    })
}

pub(super) fn go_string_list(n: &Node, field: &str) -> Result<Vec<String>, String> {
    match n {
        Node::Null => Ok(Vec::new()),
        Node::Seq(items) => items
            .iter()
            .map(|i| go_string(i, field).map(Option::unwrap_or_default))
            .collect(),
        _ => Err(type_error(n, field, "[]string")),
    }
}

pub(super) fn go_bool(n: &Node, field: &str) -> Result<Option<bool>, String> {
    match n {
        Node::Null => Ok(None),
        Node::Bool(b) => Ok(Some(*b)),
        // YAML 1.1 booleans, which helm's YAML parser still reads as such.
        Node::Str(s) => match s.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(Some(true)),
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(Some(false)),
            _ => Err(type_error(n, field, "bool")),
        },
        _ => Err(type_error(n, field, "bool")),
    }
}

/// Any JSON value, numbers as float64 (Go's `interface{}`).
pub(super) fn go_any(n: &Node, field: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match n {
        Node::Null => J::Null,
        Node::Bool(b) => J::Bool(*b),
        Node::Str(s) => J::String(s.clone()),
        Node::Int(i) => number(*i as f64, field)?,
        Node::UInt(u) => number(*u as f64, field)?,
        Node::Float(f) => number(*f, field)?,
        Node::Seq(items) => J::Array(
            items
                .iter()
                .map(|i| go_any(i, field))
                .collect::<Result<_, _>>()?,
        ),
        Node::Map(m) => {
            let mut obj = serde_json::Map::new();
            for (k, v) in go_entries(m, field)? {
                obj.insert(k, go_any(v, field)?);
            }
            J::Object(obj)
        }
    })
}

pub(super) fn number(f: f64, field: &str) -> Result<serde_json::Value, String> {
    serde_json::Number::from_f64(f)
        .map(serde_json::Value::Number)
        .ok_or_else(|| format!("`{field}`: unsupported value {f}"))
}

impl Metadata {
    const FIELDS: &'static [&'static str] = &[
        "name",
        "home",
        "sources",
        "version",
        "description",
        "keywords",
        "maintainers",
        "icon",
        "apiVersion",
        "condition",
        "tags",
        "appVersion",
        "deprecated",
        "annotations",
        "kubeVersion",
        "dependencies",
        "type",
    ];

    /// Decodes one YAML document onto `self` the way sigs.k8s.io/yaml and
    /// Go's `json.Unmarshal` do: fields present replace, others stay.
    pub(super) fn decode_onto(&mut self, doc: &Node, file: &str) -> Result<(), String> {
        let m = self;
        let map = match doc {
            Node::Null => &[][..],
            Node::Map(map) => map.as_slice(),
            other => {
                return Err(format!(
                    "cannot unmarshal {} into chart metadata",
                    kind_name(other)
                ))
            }
        };
        for (key, v) in go_entries(map, file)? {
            let Some(field) = field_of(&key, Self::FIELDS) else {
                continue;
            };
            let set = |slot: &mut String| -> Result<(), String> {
                if let Some(s) = go_string(v, field)? {
                    *slot = s;
                }
                Ok(())
            };
            match field {
                "name" => set(&mut m.name)?,
                "home" => set(&mut m.home)?,
                "version" => set(&mut m.version)?,
                "description" => set(&mut m.description)?,
                "icon" => set(&mut m.icon)?,
                "apiVersion" => set(&mut m.api_version)?,
                "condition" => set(&mut m.condition)?,
                "tags" => set(&mut m.tags)?,
                "appVersion" => set(&mut m.app_version)?,
                "kubeVersion" => set(&mut m.kube_version)?,
                "type" => set(&mut m.chart_type)?,
                "sources" => m.sources = go_string_list(v, field)?,
                "keywords" => m.keywords = go_string_list(v, field)?,
                "deprecated" => {
                    if let Some(b) = go_bool(v, field)? {
                        m.deprecated = b;
                    }
                }
                "annotations" => m.annotations = annotations(v)?,
                "maintainers" => m.maintainers = maintainers(v)?,
                "dependencies" => m.dependencies = dependencies(v)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Sanitises and validates like helm's `Metadata.Validate`.
    pub(super) fn finish(mut self) -> Result<Metadata, String> {
        self.sanitize();
        self.validate()?;
        Ok(self)
    }

    /// `Metadata.Validate`'s sanitising: whitespace becomes a space,
    /// unprintable characters go.
    pub(super) fn sanitize(&mut self) {
        for s in [
            &mut self.name,
            &mut self.description,
            &mut self.home,
            &mut self.icon,
            &mut self.condition,
            &mut self.tags,
            &mut self.app_version,
            &mut self.kube_version,
        ] {
            *s = sanitize(s);
        }
        for s in self.sources.iter_mut().chain(self.keywords.iter_mut()) {
            *s = sanitize(s);
        }
        for mt in &mut self.maintainers {
            mt.name = sanitize(&mt.name);
            mt.email = sanitize(&mt.email);
            mt.url = sanitize(&mt.url);
        }
        for d in &mut self.dependencies {
            d.name = sanitize(&d.name);
            d.version = sanitize(&d.version);
            d.repository = sanitize(&d.repository);
            d.condition = sanitize(&d.condition);
            for t in &mut d.tags {
                *t = sanitize(t);
            }
        }
    }

    /// The checks of helm's `Metadata.Validate`, in its order.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("chart.metadata.name is required".into());
        }
        if self.name == "." || self.name == ".." {
            return Err(format!(
                "chart.metadata.name {:?} is not allowed",
                self.name
            ));
        }
        if self.name.contains('/') {
            return Err(format!("chart.metadata.name {:?} is invalid", self.name));
        }
        if self.version.is_empty() {
            return Err("chart.metadata.version is required".into());
        }
        if !crate::semver::is_valid(&self.version) {
            return Err(format!(
                "chart.metadata.version {:?} is invalid",
                self.version
            ));
        }
        if !matches!(self.chart_type.as_str(), "" | "application" | "library") {
            return Err("chart.metadata.type must be application or library".into());
        }
        let mut names = BTreeSet::new();
        for d in &self.dependencies {
            if !d.alias.is_empty()
                && !d
                    .alias
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "dependency {:?} has disallowed characters in the alias",
                    d.name
                ));
            }
            let key = if d.alias.is_empty() {
                &d.name
            } else {
                &d.alias
            };
            if !names.insert(key.clone()) {
                return Err(format!(
                    "more than one dependency with name or alias {key:?}"
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn annotations(n: &Node) -> Result<BTreeMap<String, String>, String> {
    match n {
        Node::Null => Ok(BTreeMap::new()),
        Node::Map(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in go_entries(m, "annotations")? {
                out.insert(k, go_string(v, "annotations")?.unwrap_or_default());
            }
            Ok(out)
        }
        _ => Err(type_error(n, "annotations", "map[string]string")),
    }
}

pub(super) fn maintainers(n: &Node) -> Result<Vec<Maintainer>, String> {
    let items = match n {
        Node::Null => return Ok(Vec::new()),
        Node::Seq(items) => items,
        _ => return Err(type_error(n, "maintainers", "[]*chart.Maintainer")),
    };
    let mut out = Vec::new();
    for item in items {
        let map = match item {
            Node::Null => return Err("maintainers must not contain empty or null nodes".into()),
            Node::Map(m) => m,
            other => return Err(type_error(other, "maintainers", "chart.Maintainer")),
        };
        let mut mt = Maintainer::default();
        for (key, v) in go_entries(map, "maintainers")? {
            let slot = match field_of(&key, &["name", "email", "url"]) {
                Some("name") => &mut mt.name,
                Some("email") => &mut mt.email,
                Some("url") => &mut mt.url,
                _ => continue,
            };
            if let Some(s) = go_string(v, "maintainers")? {
                *slot = s;
            }
        }
        out.push(mt);
    }
    Ok(out)
}

pub(super) fn dependencies(n: &Node) -> Result<Vec<Dependency>, String> {
    const FIELDS: &[&str] = &[
        "name",
        "version",
        "repository",
        "condition",
        "tags",
        "enabled",
        "import-values",
        "alias",
    ];
    let items = match n {
        Node::Null => return Ok(Vec::new()),
        Node::Seq(items) => items,
        _ => return Err(type_error(n, "dependencies", "[]*chart.Dependency")),
    };
    let mut out = Vec::new();
    for item in items {
        let map = match item {
            Node::Null => return Err("dependencies must not contain empty or null nodes".into()),
            Node::Map(m) => m,
            other => return Err(type_error(other, "dependencies", "chart.Dependency")),
        };
        let mut d = Dependency::default();
        for (key, v) in go_entries(map, "dependencies")? {
            let Some(field) = field_of(&key, FIELDS) else {
                continue;
            };
            let set = |slot: &mut String| -> Result<(), String> {
                if let Some(s) = go_string(v, field)? {
                    *slot = s;
                }
                Ok(())
            };
            match field {
                "name" => set(&mut d.name)?,
                "version" => set(&mut d.version)?,
                "repository" => set(&mut d.repository)?,
                "condition" => set(&mut d.condition)?,
                "alias" => set(&mut d.alias)?,
                "tags" => d.tags = go_string_list(v, field)?,
                "enabled" => {
                    if let Some(b) = go_bool(v, field)? {
                        d.enabled = b;
                    }
                }
                "import-values" => {
                    d.import_values = match v {
                        Node::Null => Vec::new(),
                        Node::Seq(items) => items
                            .iter()
                            .map(|i| go_any(i, field))
                            .collect::<Result<_, _>>()?,
                        other => return Err(type_error(other, field, "[]interface {}")),
                    }
                }
                _ => {}
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// Go's `sanitizeString`: `unicode.IsSpace` → ' ', drop what
/// `unicode.IsPrint` refuses. Without Unicode category tables, "refuses" is
/// approximated by control, format and private-use characters (unassigned
/// code points are kept).
pub(super) fn sanitize(s: &str) -> String {
    s.chars()
        .filter_map(|c| {
            if c.is_whitespace() {
                Some(' ')
            } else if c.is_control() || is_format_char(c) || is_private_use(c) {
                None
            } else {
                Some(c)
            }
        })
        .collect()
}

/// Unicode general category Cf (format characters).
pub(super) fn is_format_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

pub(super) fn is_private_use(c: char) -> bool {
    matches!(c as u32, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD)
}
