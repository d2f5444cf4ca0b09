//! Writing layers: gzip'd tars of real files and seeded bytes, their diff_ids.

use super::*;
use ferry_bundle::digest::HashingWriter;

pub(super) struct RandomReader {
    pub(super) rng: ChaCha8Rng,
    pub(super) remaining: u64,
}

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        self.rng.fill_bytes(&mut buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

pub(super) fn seed_for(seed: u64, label: &str) -> [u8; 32] {
    let mut h = Hasher::new();
    h.update(b"ferry-testkit dataset\0");
    h.update(&seed.to_le_bytes());
    h.update(label.as_bytes());
    *h.finish().as_bytes()
}

pub(super) fn header(size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    if dir {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
    } else {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
    }
    h
}

/// Appends an entry; long paths get a GNU long-name entry (deterministic).
pub(super) fn append<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    dir: bool,
    data: R,
) -> Result<()> {
    let mut h = header(size, dir);
    tar.append_data(&mut h, path, data)
        .with_context(|| format!("failed to append {path}"))
}

/// A generated layer on disk.
pub(super) struct LayerOut {
    pub(super) digest: Digest,
    pub(super) size: u64,
    pub(super) diff_id: Digest,
}

/// Writes `plan` as a gzip'd tar through the blob directory's write (the
/// compressed bytes hashed and counted as they go), named by its digest.
pub(super) fn write_layer(
    plan: &LayerPlan,
    real: &RealFiles,
    seed: u64,
    blobs: &Path,
) -> Result<LayerOut> {
    let staged = BlobDir::scratch(blobs).stage_new()?;
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(staged, Compression::new(6));
    let mut tar = tar::Builder::new(HashingWriter::new(gz));
    tar.mode(tar::HeaderMode::Deterministic);
    let marker = format!(
        "ferry bench layer {} (real {} B compressed, random {} B)\n",
        plan.name, plan.real, plan.random
    );
    append(&mut tar, "etc/", 0, true, io::empty())?;
    append(
        &mut tar,
        &format!("etc/ferry-bench-{}.txt", plan.name),
        marker.len() as u64,
        false,
        marker.as_bytes(),
    )?;
    // Real files from a start that depends on the layer's name, cyclically.
    let n = real.files.len();
    let start = {
        let s = seed_for(seed, &plan.name);
        u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]) as usize % n
    };
    let mut i = 0usize;
    let mut last_dir = String::new();
    let mut buf = Vec::new();
    while compressed(&tar) < plan.real {
        let (path, rel, _) = &real.files[(start + i) % n];
        let pass = (start + i) / n;
        i += 1;
        let rel = if pass > 0 {
            format!("pass{pass}/{rel}")
        } else {
            rel.clone()
        };
        buf.clear();
        let Ok(f) = File::open(path) else { continue };
        if f.take(MAX_REAL_FILE).read_to_end(&mut buf).is_err() {
            continue;
        }
        if let Some((dir, _)) = rel.rsplit_once('/') {
            if dir != last_dir {
                append(&mut tar, &format!("{dir}/"), 0, true, io::empty())?;
                last_dir = dir.to_string();
            }
        }
        append(&mut tar, &rel, buf.len() as u64, false, buf.as_slice())?;
        if i > n * 64 {
            bail!("the real files do not fill layer {}", plan.name);
        }
    }
    if plan.random > 0 {
        append(&mut tar, "usr/share/ferry-bench/", 0, true, io::empty())?;
        append(
            &mut tar,
            &format!("usr/share/ferry-bench/{}.bin", plan.name),
            plan.random,
            false,
            RandomReader {
                rng: ChaCha8Rng::from_seed(seed_for(seed, &format!("random {}", plan.name))),
                remaining: plan.random,
            },
        )?;
    }
    let dw = tar.into_inner()?;
    let (diff_id, _, gz) = dw.finish();
    let (digest, size) = gz.finish()?.commit()?;
    Ok(LayerOut {
        digest,
        size,
        diff_id,
    })
}

pub(super) fn compressed(
    tar: &tar::Builder<HashingWriter<flate2::write::GzEncoder<StagedBlob>>>,
) -> u64 {
    tar.get_ref().get_ref().get_ref().written()
}
