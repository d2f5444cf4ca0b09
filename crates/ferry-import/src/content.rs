//! The content checks export made, made again on the bytes that crossed, as
//! a part of any read of a bundle: every chart item's archive is read with
//! export's chart validation, and every OpenSearch plugin's zip must have
//! the sha512 its `.sha512` file states. `ferry verify` runs them too, so it
//! refuses what import would, with the same words (import's own pass is in
//! the crate's `tree` module; the messages are shared here).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use sha2::{Digest as _, Sha512};

use ferry_bundle::artifact::{ANN_TITLE, HELM_CHART_LAYER};
use ferry_bundle::digest::Digest;
use ferry_bundle::manifest::Parsed;
use ferry_bundle::meta::{BlobMeta, Item, Kind};

/// The largest chart archive or checksum file read whole (as import).
pub const CAPTURE_LIMIT: u64 = 64 << 20;

/// The message for a chart archive that fails export's validation.
pub fn chart_refused(name: &str, why: &str) -> String {
    format!("chart archive `{name}` is refused: {why}")
}

/// The message for a plugin whose zip does not match its `.sha512`.
pub fn sha512_mismatch(zip: &str, got: &str, sum: &str, want: &str) -> String {
    format!("plugin `{zip}` has sha512 {got}, but `{sum}` says {want}")
}

struct Plugin {
    reference: String,
    zip: (Digest, String),
    sum: Option<(Digest, String)>,
}

/// What to check while a bundle streams.
#[derive(Default)]
pub struct ContentChecks {
    /// Chart layer digest → (item reference, name for messages).
    charts: HashMap<Digest, Vec<(String, String)>>,
    plugins: Vec<Plugin>,
    /// Plugin zip digests to hash with sha512.
    zips: HashMap<Digest, Option<String>>,
    /// `.sha512` files to keep.
    sums: HashMap<Digest, Option<Vec<u8>>>,
    failures: BTreeMap<String, String>,
}

fn title(parsed: &Parsed, name: &str) -> Option<Digest> {
    parsed
        .layers
        .iter()
        .find(|l| l.annotations.get(ANN_TITLE).map(String::as_str) == Some(name))
        .map(|l| l.digest.clone())
}

impl ContentChecks {
    /// Whether [`ContentChecks::plan`] reads this item's manifest (charts
    /// and OpenSearch plugins): a reader keeps only those.
    pub fn reads_manifest(item: &Item) -> bool {
        matches!(item.kind, Kind::Chart | Kind::OpensearchPlugin)
    }

    /// The checks for `items`, from their manifests (read before any blob).
    pub fn plan(items: &[Item], manifests: &HashMap<Digest, Parsed>) -> ContentChecks {
        let mut c = ContentChecks::default();
        for i in items.iter().filter(|i| ContentChecks::reads_manifest(i)) {
            let Some(parsed) = manifests.get(&i.digest) else {
                continue;
            };
            match i.kind {
                Kind::Chart => {
                    let name = i.path.clone().unwrap_or_else(|| i.reference.clone());
                    match parsed
                        .layers
                        .iter()
                        .find(|l| l.media_type.as_ref() == HELM_CHART_LAYER)
                    {
                        Some(l) => c
                            .charts
                            .entry(l.digest.clone())
                            .or_default()
                            .push((i.reference.clone(), name)),
                        None => {
                            c.failures.insert(
                                i.reference.clone(),
                                "a chart item with no chart archive layer".into(),
                            );
                        }
                    }
                }
                Kind::OpensearchPlugin => {
                    let Some(path) = &i.path else { continue };
                    let file = path.rsplit('/').next().unwrap_or(path);
                    let dir = path.strip_suffix(file).unwrap_or("");
                    let Some(zip) = title(parsed, file) else {
                        continue;
                    };
                    let sum_name = format!("{file}.sha512");
                    let sum = title(parsed, &sum_name).map(|d| (d, format!("{dir}{sum_name}")));
                    c.zips.insert(zip.clone(), None);
                    if let Some((d, _)) = &sum {
                        c.sums.insert(d.clone(), None);
                    }
                    c.plugins.push(Plugin {
                        reference: i.reference.clone(),
                        zip: (zip, path.clone()),
                        sum,
                    });
                }
                _ => {}
            }
        }
        c
    }

    /// Reads what a check needs from a streaming blob (the reader verifies
    /// its digest after); blobs no check needs are left untouched.
    pub fn consume(&mut self, blob: &BlobMeta, data: &mut dyn Read) -> std::io::Result<()> {
        let chart = self.charts.contains_key(&blob.digest);
        let sum = self.sums.contains_key(&blob.digest);
        if (chart || sum) && blob.size <= CAPTURE_LIMIT {
            let mut bytes = Vec::with_capacity(blob.size as usize);
            data.take(CAPTURE_LIMIT).read_to_end(&mut bytes)?;
            if let Some(slot) = self.sums.get_mut(&blob.digest) {
                *slot = Some(bytes.clone());
            }
            if let Some(users) = self.charts.get(&blob.digest) {
                for (reference, name) in users {
                    if let Err(e) = ferry_bundle::chart::read_chart(&bytes, name) {
                        self.failures
                            .insert(reference.clone(), chart_refused(name, &e.to_string()));
                    }
                }
                // Checked: only the verdict is kept.
                self.charts.remove(&blob.digest);
            }
        } else if self.zips.contains_key(&blob.digest) {
            let mut h = Sha512::new();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = data.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            self.zips
                .insert(blob.digest.clone(), Some(hex::encode(h.finalize())));
        }
        Ok(())
    }

    /// The items that fail, with why (import's words).
    pub fn finish(mut self) -> BTreeMap<String, String> {
        for (_, users) in self.charts.drain() {
            for (reference, name) in users {
                self.failures.entry(reference).or_insert_with(|| {
                    format!(
                        "chart archive `{name}` could not be re-checked (it did not arrive whole, or is larger than the {CAPTURE_LIMIT}-byte limit)"
                    )
                });
            }
        }
        for p in &self.plugins {
            let why = (|| {
                let (sum_digest, sum_path) = p.sum.as_ref().ok_or_else(|| {
                    format!("plugin `{}` carries no `.sha512` checksum file", p.zip.1)
                })?;
                let text = self
                    .sums
                    .get(sum_digest)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| format!("checksum file `{sum_path}` did not arrive"))?;
                let file = p.zip.1.rsplit('/').next().unwrap_or(&p.zip.1);
                let want =
                    ferry_bundle::placement::parse_sha512(&String::from_utf8_lossy(&text), file)
                        .map_err(|e| format!("`{sum_path}`: {e}"))?;
                let got = self
                    .zips
                    .get(&p.zip.0)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| format!("plugin `{}` did not arrive whole", p.zip.1))?;
                if got != want {
                    return Err(sha512_mismatch(&p.zip.1, &got, sum_path, &want));
                }
                Ok(())
            })();
            if let Err(why) = why {
                self.failures.insert(p.reference.clone(), why);
            }
        }
        self.failures
    }
}
