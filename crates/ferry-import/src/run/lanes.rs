//! Lanes: extra readers of the bundle file that stream large blobs to
//! their uploads side by side with the main reader (which still verifies
//! every byte).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use ferry_bundle::meta::BlobMeta;
use ferry_bundle::parts::open_bundle;
use ferry_bundle::reader::Head;
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;

use super::bridge::{Feeder, Msg};
use super::ImportOptions;

/// Bundle readers that upload large blobs, the main one included: each
/// extra one (a lane) opens the bundle file again, decompresses it on its
/// own and streams its share of the large blobs, so that several large
/// uploads run side by side within [`BUFFER_BUDGET`](super::bridge::BUFFER_BUDGET)
/// (a registry ingests one upload far slower than several). Bounded by `--jobs`.
pub(super) const MAX_STREAMS: usize = 3;

/// How lanes get a [`Feeder`]: `proto`'s budget and settings with a
/// sender made from the weak one while the reader still holds its own.
pub(super) struct LaneSeed {
    pub(super) tx: mpsc::WeakSender<Msg>,
    pub(super) proto: Feeder,
}

/// Hands the large uploads among the main reader and up to
/// [`MAX_STREAMS`]` - 1` lanes (only for a bundle that is a file or parts
/// on disk, and `--jobs` over 1) and starts the lanes. Returns the blobs
/// the lanes upload.
pub(super) fn start_lanes(
    opts: &ImportOptions,
    head: &Head,
    upload: &HashSet<Digest>,
    files: &HashMap<Digest, Vec<RelPath>>,
    capture: &HashSet<Digest>,
    seed: &LaneSeed,
    lanes: &mut Vec<std::thread::JoinHandle<()>>,
) -> HashSet<Digest> {
    let streams = opts.jobs.clamp(1, MAX_STREAMS);
    let chunk = seed.proto.chunk;
    // In stream order: the large blobs that go to the registry only.
    let large: Vec<&BlobMeta> = head
        .meta
        .blobs
        .iter()
        .filter(|b| {
            b.size > chunk
                && upload.contains(&b.digest)
                && !files.contains_key(&b.digest)
                && !capture.contains(&b.digest)
        })
        .collect();
    let mut delegated = HashSet::new();
    if streams < 2 || large.len() < 2 {
        return delegated;
    }
    // Greedy by bytes, the main reader counted as already carrying the
    // small blobs and the verification of everything.
    let mut load = vec![0u64; streams];
    let mut shares: Vec<Vec<BlobMeta>> = vec![Vec::new(); streams];
    for b in large {
        let (i, _) = load
            .iter()
            .enumerate()
            .min_by_key(|(i, l)| (**l, *i))
            .unwrap_or((0, &0));
        load[i] += b.size;
        shares[i].push(b.clone());
    }
    for share in shares.into_iter().skip(1) {
        if share.is_empty() {
            continue;
        }
        // Opened here so that a bundle that cannot be opened again keeps
        // its blobs on the main reader.
        let Ok(src) = open_bundle(&opts.bundle) else {
            continue;
        };
        let Some(tx) = seed.tx.upgrade() else {
            break;
        };
        let feed = seed.proto.with_tx(tx);
        delegated.extend(share.iter().map(|b| b.digest.clone()));
        lanes.push(std::thread::spawn(move || lane(src, share, feed)));
    }
    delegated
}

/// A lane: reads the bundle from the start and streams its blobs to their
/// uploads, skipping everything else. It verifies nothing itself (the main
/// reader does, and each upload checks its digest before the final PUT);
/// on anything unexpected it stops, and the main reader's verdict names it.
fn lane(src: ferry_bundle::parts::BundleSource, share: Vec<BlobMeta>, feed: Feeder) {
    let mut want: HashMap<String, BlobMeta> = share
        .into_iter()
        .map(|b| (b.digest.layout_path(), b))
        .collect();
    let Ok(stream) =
        ferry_bundle::reader::decompress(std::io::BufReader::with_capacity(256 << 10, src))
    else {
        return;
    };
    // The reader's own walker: a lane accepts exactly the entries the
    // reader accepts (same header checks), and stops at the first it refuses.
    let mut walker = ferry_bundle::reader::TarWalker::new(stream);
    while let Ok(Some(entry)) = walker.next_entry() {
        if want.is_empty() || feed.cancelled.load(Ordering::Relaxed) {
            return;
        }
        let Some(blob) = want.remove(&entry.name) else {
            continue;
        };
        if entry.kind != ferry_bundle::reader::EntryKind::File || entry.size != blob.size {
            return;
        }
        if feed
            .stream_large(&blob, &mut walker.data(&entry.name), true, Vec::new(), None)
            .is_err()
        {
            return;
        }
    }
}
