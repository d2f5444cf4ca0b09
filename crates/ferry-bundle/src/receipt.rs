//! The receipt: what the target now holds, per repository.
//!
//! Written by `import --receipt FILE`; read by a later `export --since` and
//! by `ferry prune`. Its home is here, beside the other formats, so export
//! reads it without depending on import (`ferry_import::receipt` re-exports it).
//!
//! An import holds a receipt entry for every repository it touched, to the
//! end of the run: one repository per image is common, so a repository's
//! content is kept as sorted, deduplicated vectors ([`SortedSet`],
//! [`SortedMap`]), not B-trees (whose first leaf holds room for eleven
//! entries). Their JSON is a B-tree's: an array or object in sorted order,
//! and reading one normalises it as a B-tree does (sorted, duplicates
//! merged), so older receipts read as before.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Digest;

/// Receipt format version.
pub const RECEIPT_VERSION: u32 = 1;

/// One repository's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoContent {
    /// Blobs present (configs and layers).
    pub blobs: SortedSet<Digest>,
    /// Manifests and indexes present.
    pub manifests: SortedSet<Digest>,
    /// Tags and what they point at.
    #[serde(default, skip_serializing_if = "SortedMap::is_empty")]
    pub tags: SortedMap<String, Digest>,
}

/// `--receipt` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Receipt {
    /// [`RECEIPT_VERSION`].
    pub receipt_version: u32,
    /// The target (`host[/prefix]`).
    pub target: String,
    /// The bundle's name.
    pub bundle: String,
    /// Per repository.
    pub repositories: BTreeMap<String, RepoContent>,
    /// Files on the file target: path → sha256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, Digest>,
}

impl Receipt {
    /// Deterministic bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Below this many new values, [`SortedSet::extend`] inserts one by one;
/// from it, it appends and sorts once.
const BULK: usize = 16;

/// A set as a sorted vector without duplicates: a `BTreeSet`'s order and
/// JSON (an array), a vector's size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SortedSet<T>(Vec<T>);

impl<T> Default for SortedSet<T> {
    fn default() -> Self {
        SortedSet(Vec::new())
    }
}

impl<T: Ord> SortedSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        SortedSet(Vec::new())
    }
    /// Adds `value`; `false` if it was there already.
    pub fn insert(&mut self, value: T) -> bool {
        match self.0.binary_search(&value) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, value);
                true
            }
        }
    }
    /// Whether `value` is in the set.
    pub fn contains(&self, value: &T) -> bool {
        self.0.binary_search(value).is_ok()
    }
    /// The values, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
    /// How many values.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Keeps the values `keep` says yes to (the order stays).
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.0.retain(keep);
    }
    /// The values in order, as a slice.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }
    fn normalise(mut values: Vec<T>) -> Self {
        values.sort_unstable();
        values.dedup();
        values.shrink_to_fit();
        SortedSet(values)
    }
}

impl<T: Ord> Extend<T> for SortedSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        let new: Vec<T> = iter.into_iter().collect();
        if new.len() < BULK {
            for v in new {
                self.insert(v);
            }
        } else {
            let mut all = std::mem::take(&mut self.0);
            all.extend(new);
            *self = SortedSet::normalise(all);
        }
    }
}

impl<T: Ord> FromIterator<T> for SortedSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        SortedSet::normalise(iter.into_iter().collect())
    }
}

impl<'a, T> IntoIterator for &'a SortedSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T> IntoIterator for SortedSet<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<T: Serialize> Serialize for SortedSet<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.0)
    }
}

impl<'de, T: Ord + Deserialize<'de>> Deserialize<'de> for SortedSet<T> {
    /// Read as a `BTreeSet` is: in any order, duplicates merged.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SortedSet::normalise(Vec::deserialize(d)?))
    }
}

/// A map as a vector of entries sorted by key, keys unique: a
/// `BTreeMap`'s order and JSON (an object), a vector's size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SortedMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        SortedMap(Vec::new())
    }
}

impl<K: Ord, V> SortedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        SortedMap(Vec::new())
    }
    fn find(&self, key: &K) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }
    /// Sets `key` to `value`, returning the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (key, value));
                None
            }
        }
    }
    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.find(key).ok().map(|at| &self.0[at].1)
    }
    /// Whether `key` is set.
    pub fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }
    /// The entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.iter().map(|(k, _)| k)
    }
    /// The values, in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }
    /// How many entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Keeps the entries `keep` says yes to (the order stays).
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SortedMap<K, V> {
    /// As a `BTreeMap` collects: the last value of a key wins.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let map: BTreeMap<K, V> = iter.into_iter().collect();
        SortedMap(map.into_iter().collect())
    }
}

impl<K: Ord, V> Extend<(K, V)> for SortedMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Serialize, V: Serialize> Serialize for SortedMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for SortedMap<K, V> {
    /// Read as a `BTreeMap` is: in any order, the last value of a key wins.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<K, V>::deserialize(d)?;
        let mut entries: Vec<(K, V)> = map.into_iter().collect();
        entries.shrink_to_fit();
        Ok(SortedMap(entries))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn a_set_and_a_map_keep_order_without_duplicates_however_filled() {
        let mut s = SortedSet::new();
        for v in [5, 1, 3, 1, 5] {
            s.insert(v);
        }
        s.extend([4, 2, 3]);
        s.extend((0..40).rev());
        assert_eq!(s.as_slice(), (0..40).collect::<Vec<_>>().as_slice());
        assert!(s.contains(&39) && !s.contains(&40));
        let mut m = SortedMap::new();
        assert_eq!(m.insert("b", 1), None);
        assert_eq!(m.insert("a", 2), None);
        assert_eq!(m.insert("b", 3), Some(1));
        assert_eq!(m.iter().collect::<Vec<_>>(), [(&"a", &2), (&"b", &3)]);
    }

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn the_json_is_a_b_trees_and_an_older_receipt_reads_normalised() {
        // Written out of order: the JSON is sorted, as B-trees wrote it.
        let mut content = RepoContent::default();
        content.blobs.extend([d('b'), d('a'), d('b')]);
        content.manifests.insert(d('c'));
        content.tags.insert("v2".into(), d('c'));
        content.tags.insert("v1".into(), d('c'));
        let receipt = Receipt {
            receipt_version: RECEIPT_VERSION,
            target: "registry.local".into(),
            bundle: "demo".into(),
            repositories: [("team/app".to_string(), content)].into(),
            files: BTreeMap::new(),
        };
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let c = "c".repeat(64);
        let expected = format!(
            r#"{{
  "receiptVersion": 1,
  "target": "registry.local",
  "bundle": "demo",
  "repositories": {{
    "team/app": {{
      "blobs": [
        "sha256:{a}",
        "sha256:{b}"
      ],
      "manifests": [
        "sha256:{c}"
      ],
      "tags": {{
        "v1": "sha256:{c}",
        "v2": "sha256:{c}"
      }}
    }}
  }}
}}
"#
        );
        assert_eq!(String::from_utf8(receipt.to_json()).unwrap(), expected);
        // A receipt written in another order, with duplicates, reads as the
        // same content (and a repeated tag keeps its last value, as a
        // B-tree did).
        let older = format!(
            r#"{{"receiptVersion":1,"target":"registry.local","bundle":"demo",
            "repositories":{{"team/app":{{"blobs":["sha256:{b}","sha256:{a}","sha256:{b}"],
            "manifests":["sha256:{c}","sha256:{c}"],
            "tags":{{"v2":"sha256:{c}","v1":"sha256:{a}","v1":"sha256:{c}"}}}}}}}}"#
        );
        let read: Receipt = serde_json::from_str(&older).unwrap();
        assert_eq!(read, receipt);
        assert_eq!(read.to_json(), receipt.to_json());
    }
}
