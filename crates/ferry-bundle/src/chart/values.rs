//! YAML parsed with a budget (alias expansion cannot blow memory up), and
//! values coalesced the way helm merges them.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The value under a string key (the last one when the key repeats, as
    /// Go's YAML decoding keeps).
    pub(super) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(m) => m
                .iter()
                .rev()
                .find(|(k, _)| key_text(k).as_deref() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A scalar as the text helm would see in a string field.
    pub(super) fn scalar_text(&self) -> Option<String> {
        match self {
            Node::Str(s) => Some(s.clone()),
            Node::Int(i) => Some(i.to_string()),
            Node::UInt(u) => Some(u.to_string()),
            Node::Float(f) => Some(f.to_string()),
            Node::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A map key as a string (Go's YAML-to-JSON conversion of scalar keys).
pub(super) fn key_text(k: &Node) -> Option<String> {
    match k {
        Node::Str(s) => Some(s.clone()),
        Node::Int(i) => Some(i.to_string()),
        Node::UInt(u) => Some(u.to_string()),
        Node::Float(f) => Some(go_format_g32(*f)),
        Node::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[derive(Clone, Copy)]
pub(super) struct NodeSeed<'a> {
    pub(super) cost: &'a Cell<u64>,
}

impl NodeSeed<'_> {
    pub(super) fn charge<E: de::Error>(&self, extra: usize) -> Result<(), E> {
        let c = self.cost.get() + NODE_COST + extra as u64;
        if c > MAX_YAML_COST {
            return Err(E::custom(format!(
                "the chart's YAML expands beyond {MAX_YAML_COST} bytes (aliases?)"
            )));
        }
        self.cost.set(c);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Float(v as f64))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Float(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        self.charge(v.len())?;
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        self.charge(v.len())?;
        Ok(Node::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        self.charge(0)?;
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        self.charge(0)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Node::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        self.charge(0)?;
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry_seed(self, self)? {
            out.push((k, v));
        }
        Ok(Node::Map(out))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        // A custom `!tag`: keep the value, drop the tag.
        let (_tag, variant): (String, _) = data.variant()?;
        variant.newtype_variant_seed(self)
    }
}

/// The first YAML document (what Go's `yaml.Unmarshal` reads); `Null` when empty.
pub(super) fn parse_first_document(bytes: &[u8], cost: &Cell<u64>) -> Result<Node, String> {
    crate::yaml::check_depth(bytes).map_err(|e| e.to_string())?;
    match yaml_serde::Deserializer::from_slice(bytes).next() {
        None => Ok(Node::Null),
        Some(doc) => NodeSeed { cost }
            .deserialize(doc)
            .map_err(|e| e.to_string()),
    }
}

/// `values.yaml`: every document, merged (later wins), as a map.
pub(super) fn parse_values(text: &str, cost: &Cell<u64>) -> Result<Node, String> {
    let mut merged = Node::Map(Vec::new());
    crate::yaml::check_depth(text.as_bytes()).map_err(|e| e.to_string())?;
    for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let node = NodeSeed { cost }
            .deserialize(doc)
            .map_err(|e| e.to_string())?;
        match node {
            Node::Null => {}
            Node::Map(_) => merged = coalesce(&merged, &node),
            _ => return Err(format!("document {} is not a map of values", i + 1)),
        }
    }
    Ok(merged)
}

/// `over` merged onto `base`: maps recursively, `over` winning; a null in
/// `over` deletes the key (helm's coalescing).
pub(super) fn coalesce(base: &Node, over: &Node) -> Node {
    match (base, over) {
        (Node::Map(b), Node::Map(o)) => {
            let mut out: Vec<(Node, Node)> = Vec::with_capacity(b.len() + o.len());
            let mut index: HashMap<String, usize> = HashMap::new();
            for (k, v) in b {
                match key_text(k) {
                    Some(t) => match index.get(&t) {
                        Some(&i) => out[i].1 = v.clone(),
                        None => {
                            index.insert(t, out.len());
                            out.push((k.clone(), v.clone()));
                        }
                    },
                    None => out.push((k.clone(), v.clone())),
                }
            }
            let mut deleted = Vec::new();
            for (k, v) in o {
                let t = key_text(k);
                match t.as_ref().and_then(|t| index.get(t)) {
                    Some(&i) if *v == Node::Null => deleted.push(i),
                    Some(&i) => out[i].1 = coalesce(&out[i].1, v),
                    None if *v == Node::Null => {}
                    None => {
                        if let Some(t) = t {
                            index.insert(t, out.len());
                        }
                        out.push((k.clone(), v.clone()));
                    }
                }
            }
            let out = out
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !deleted.contains(i))
                .map(|(_, kv)| kv)
                .collect();
            Node::Map(out)
        }
        (_, o) => o.clone(),
    }
}
