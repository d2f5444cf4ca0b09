//! The image references a chart carries: `values.yaml` (and every subchart's,
//! with the parent's overrides) and literal `image:` lines of the templates.

use super::*;

#[derive(Default)]
pub(super) struct Collector {
    pub(super) images: BTreeSet<String>,
    pub(super) skipped: Vec<SkippedImage>,
}

impl Collector {
    pub(super) fn offer(&mut self, value: &str, location: impl Fn() -> String) {
        match Reference::parse(value) {
            Ok(r) => {
                self.images.insert(r.to_string());
            }
            Err(e) => self.skipped.push(SkippedImage {
                value: value.to_string(),
                location: location(),
                reason: e.reason,
            }),
        }
    }

    pub(super) fn skip(&mut self, value: &str, location: String, reason: &str) {
        self.skipped.push(SkippedImage {
            value: value.to_string(),
            location,
            reason: reason.to_string(),
        });
    }
}

/// Per chart: what image maps need besides themselves.
pub(super) struct ValuesContext<'a> {
    pub(super) app_version: Option<&'a str>,
    /// `global.imageRegistry` / `global.image.registry`, when set.
    pub(super) global_registry: Option<String>,
    pub(super) file: String,
}

/// The values keys under which a parent passes values to each subchart:
/// the dependency's alias, else the subchart's name.
pub(super) fn subchart_keys(chart: &Chart, sub: &Chart) -> Vec<String> {
    let aliases: Vec<String> = chart
        .metadata
        .dependencies
        .iter()
        .filter(|d| d.name == sub.name() && !d.alias.is_empty())
        .map(|d| d.alias.clone())
        .collect();
    if aliases.is_empty() {
        vec![sub.name().to_string()]
    } else {
        aliases
    }
}

pub(super) fn collect_chart(chart: &Chart, values: &Node, out: &mut Collector) {
    let mut sub_keys: BTreeSet<String> = BTreeSet::new();
    let mut subs = Vec::new();
    for sub in &chart.subcharts {
        for key in subchart_keys(chart, sub) {
            sub_keys.insert(key.clone());
            subs.push((sub, key));
        }
    }
    let ctx = ValuesContext {
        app_version: chart.app_version(),
        global_registry: global_registry(values),
        file: format!("{}/values.yaml", chart.path),
    };
    // The parent's section for a subchart is read with the subchart below.
    if let Node::Map(entries) = values {
        for (k, v) in entries {
            let key = key_text(k).unwrap_or_default();
            if sub_keys.contains(&key) {
                continue;
            }
            let mut path = vec![key];
            walk_entry(&mut path, v, &ctx, out);
        }
    }
    for template in &chart.templates {
        scan_template(
            chart,
            &format!("{}/{}", chart.path, template.name),
            &template.data,
            out,
        );
    }
    for (sub, key) in subs {
        let mut sub_values = sub.values.clone();
        if let Some(over @ Node::Map(_)) = values.get(&key) {
            sub_values = coalesce(&sub_values, over);
        }
        if let Some(global @ Node::Map(_)) = values.get("global") {
            let merged = coalesce(sub_values.get("global").unwrap_or(&Node::Null), global);
            sub_values = coalesce(
                &sub_values,
                &Node::Map(vec![(Node::Str("global".into()), merged)]),
            );
        }
        collect_chart(sub, &sub_values, out);
    }
}

pub(super) fn global_registry(values: &Node) -> Option<String> {
    let global = values.get("global")?;
    let non_empty = |n: Option<&Node>| {
        n.and_then(Node::scalar_text)
            .filter(|s| !s.trim().is_empty())
    };
    non_empty(global.get("imageRegistry"))
        .or_else(|| non_empty(global.get("image").and_then(|i| i.get("registry"))))
}

/// Visits the value at `path` (whose last element is its key).
pub(super) fn walk_entry(
    path: &mut Vec<String>,
    v: &Node,
    ctx: &ValuesContext<'_>,
    out: &mut Collector,
) {
    if path.last().map(String::as_str) == Some("image") {
        let location = || format!("{}: {}", ctx.file, path.join("."));
        match v {
            Node::Str(s) => {
                let s = s.trim();
                if s.contains("{{") {
                    out.skip(
                        s,
                        location(),
                        "a template expression, resolved only when rendering",
                    );
                } else if !s.is_empty() {
                    out.offer(s, location);
                }
            }
            Node::Map(_) => {
                if let Some(r) = image_from_map(v, ctx) {
                    if r.contains("{{") {
                        out.skip(
                            &r,
                            location(),
                            "a template expression, resolved only when rendering",
                        );
                    } else {
                        out.offer(&r, location);
                    }
                }
                // Its fields (`image: {image: …, tag: …}`) are read; no deeper.
                return;
            }
            _ => {}
        }
    }
    match v {
        Node::Map(entries) => {
            for (k, child) in entries {
                path.push(key_text(k).unwrap_or_default());
                walk_entry(path, child, ctx, out);
                path.pop();
            }
        }
        Node::Seq(items) => {
            for (i, child) in items.iter().enumerate() {
                if let Some(last) = path.last_mut() {
                    let base = last.clone();
                    *last = format!("{base}[{i}]");
                    walk_seq_item(path, child, ctx, out);
                    if let Some(l) = path.last_mut() {
                        *l = base;
                    }
                }
            }
        }
        _ => {}
    }
}

/// A sequence item: only its children can be `image:` keys.
pub(super) fn walk_seq_item(
    path: &mut Vec<String>,
    v: &Node,
    ctx: &ValuesContext<'_>,
    out: &mut Collector,
) {
    match v {
        Node::Map(entries) => {
            for (k, child) in entries {
                path.push(key_text(k).unwrap_or_default());
                walk_entry(path, child, ctx, out);
                path.pop();
            }
        }
        Node::Seq(items) => {
            for child in items {
                walk_seq_item(path, child, ctx, out);
            }
        }
        _ => {}
    }
}

/// An image map: `{registry, repository, tag, digest}` and its kin. An empty
/// tag (and no digest) falls back to the chart's `appVersion`, the
/// `{{ .Values.image.tag | default .Chart.AppVersion }}` idiom.
pub(super) fn image_from_map(m: &Node, ctx: &ValuesContext<'_>) -> Option<String> {
    let text = |k: &str| {
        m.get(k)
            .and_then(Node::scalar_text)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let repository = m
        .get("repository")
        .or_else(|| m.get("image"))
        .or_else(|| m.get("name"))
        .and_then(|n| match n {
            Node::Str(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => None,
        })?;
    let registry = match (m.get("registry").is_some(), &ctx.global_registry) {
        (true, Some(global)) => Some(global.trim().to_string()),
        _ => text("registry"),
    };
    let digest = text("digest");
    let tag = text("tag").or_else(|| match digest {
        None => ctx.app_version.map(str::to_string),
        Some(_) => None,
    });
    let mut s = match registry {
        Some(r) => format!("{}/{repository}", r.trim_end_matches('/')),
        None => repository,
    };
    if let Some(t) = tag {
        s.push(':');
        s.push_str(&t);
    }
    if let Some(d) = digest {
        s.push('@');
        s.push_str(&d);
    }
    Some(s)
}

/// Literal `image: <ref>` lines of a template. `{{ .Chart.AppVersion }}`,
/// `{{ .Chart.Version }}` and `{{ .Chart.Name }}` are filled in; a line with
/// any other `{{ … }}` is left to rendering.
pub(super) fn scan_template(chart: &Chart, location: &str, data: &[u8], out: &mut Collector) {
    if location.ends_with("/NOTES.txt") {
        return;
    }
    let text = String::from_utf8_lossy(data);
    for (i, line) in text.lines().enumerate() {
        let mut l = line.trim_start();
        while let Some(rest) = l.strip_prefix("- ") {
            l = rest.trim_start();
        }
        let Some(rest) = l.strip_prefix("image:") else {
            continue;
        };
        let rest = expand_chart_fields(rest, chart);
        if rest.contains("{{") {
            continue;
        }
        let value = match rest.trim_start() {
            r if r.starts_with('"') => r[1..].split('"').next().unwrap_or_default(),
            r if r.starts_with('\'') => r[1..].split('\'').next().unwrap_or_default(),
            r => r.split(" #").next().unwrap_or_default(),
        }
        .trim();
        if value.is_empty() || value.starts_with(['{', '[', '|', '>', '&', '*', '#']) {
            continue;
        }
        out.offer(value, || format!("{location}:{}", i + 1));
    }
}

/// Replaces the `.Chart` fields a template can only mean one way.
pub(super) fn expand_chart_fields(s: &str, chart: &Chart) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let action = &rest[start..start + len + 2];
        let inner = action[2..action.len() - 2].trim_matches('-').trim();
        let value = match inner {
            ".Chart.AppVersion" => chart.app_version(),
            ".Chart.Version" => Some(chart.version()),
            ".Chart.Name" => Some(chart.name()),
            _ => None,
        };
        out.push_str(&rest[..start]);
        out.push_str(value.unwrap_or(action));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}
