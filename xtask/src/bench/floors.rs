//! The registry's ingest floors: every blob uploaded with curl (two processes
//! per blob) and by a minimal keep-alive HTTP/1.1 client (POST, then PUT of
//! the file), 1, 2, 4 and 8 in parallel; and the images' ingest floor (the
//! same uploads into the images' repositories, plus the mounts and manifest
//! PUTs an import of the images needs).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_bundle::Digest;
use ferry_testkit::dataset::{DataBlob, DataImage, DataManifest, Dataset};
use ferry_testkit::registry::Registry;

use super::measure::{process_cpu, Runner, Sample};
use super::{p, sh_quote, Results};

/// Every blob of the set uploaded raw with curl into a fresh registry:
/// `POST /v2/<name>/blobs/uploads/`, then `PUT <location>&digest=…` with the
/// file. 1, 2, 4 and 8 uploads in parallel once each; the best count is run
/// until there are `runs` samples.
pub(super) fn ingest_floor(
    set: &Dataset,
    runner: &Runner,
    work: &Path,
    runs: usize,
    r: &mut Results,
) -> Result<()> {
    let list = work.join("ingest.list");
    let mut text = String::new();
    for b in &set.blobs {
        let _ = writeln!(text, "{} {}", b.digest.hex(), p(&set.blob_path(&b.digest)));
    }
    std::fs::write(&list, text)?;
    let upload = work.join("upload.sh");
    std::fs::write(
        &upload,
        r#"set -euo pipefail
base=$1; hex=$2; file=$3
loc=$(curl -sS -f -X POST -o /dev/null -w '%header{location}' "$base/v2/bench/ingest/blobs/uploads/")
case "$loc" in /*) loc="$base$loc" ;; esac
case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
curl -sS -f -X PUT -H 'Expect:' -H 'Content-Type: application/octet-stream' -T "$file" -o /dev/null "$loc${sep}digest=sha256:$hex"
"#,
    )?;
    let once = |label: &str, jobs: usize| -> Result<Sample> {
        let target = Registry::start()?;
        let body = format!(
            "xargs -P {jobs} -L 1 bash {} {} < {}\n",
            sh_quote(&p(&upload)),
            sh_quote(&target.url()),
            sh_quote(&p(&list))
        );
        let s = runner.script(label, work, &body)?;
        let stored = target.storage_dir().join("docker/registry/v2/blobs/sha256");
        let count = set
            .blobs
            .iter()
            .filter(|b| {
                let h = b.digest.hex();
                stored.join(&h[..2]).join(&h).join("data").is_file()
            })
            .count();
        if count != set.blobs.len() {
            bail!(
                "{label}: the registry holds {count} of {} blobs after the upload",
                set.blobs.len()
            );
        }
        Ok(s)
    };
    let mut best: Option<(usize, Sample)> = None;
    for jobs in [1, 2, 4, 8] {
        let s = once(&format!("floor-ingest-j{jobs}"), jobs)?;
        r.ingest_sweep.push((jobs, s.wall));
        if best.is_none_or(|(_, b)| s.wall < b.wall) {
            best = Some((jobs, s));
        }
    }
    let Some((jobs, first)) = best else {
        bail!("no ingest measurement");
    };
    r.ingest_jobs = jobs;
    r.ingest.push(first);
    for run in 1..runs {
        r.ingest
            .push(once(&format!("floor-ingest-j{jobs}-{run}"), jobs)?);
    }
    Ok(())
}

/// The registry's ingest limit without per-request process costs: the same
/// POST then PUT per blob, over one keep-alive HTTP/1.1 connection per
/// worker, the file sent with `std::io::copy` (sendfile), into a fresh
/// registry.
pub(crate) fn raw_ingest_once(set: &Dataset, jobs: usize, label: usize) -> Result<Sample> {
    let target = Registry::start()?;
    let _ = Command::new("sync").status();
    let cpu = || target.pid().and_then(process_cpu).unwrap_or(0.0);
    let before = cpu();
    let t = Instant::now();
    raw_upload(set, target.addr(), jobs)?;
    let wall = t.elapsed().as_secs_f64();
    let registry_cpu = cpu() - before;
    eprintln!("xtask bench: floor-raw-ingest-j{jobs}-{label:<10} {wall:>8.2} s  registry CPU {registry_cpu:.2} s");
    Ok(Sample {
        wall,
        registry_cpu,
        ..Sample::default()
    })
}

/// 1, 2, 4 and 8 raw ingest workers once each: the fastest count.
pub(super) fn raw_ingest_sweep(set: &Dataset, r: &mut Results) -> Result<usize> {
    let mut best: Option<(usize, f64)> = None;
    for jobs in [1, 2, 4, 8] {
        let s = raw_ingest_once(set, jobs, 0)?;
        r.raw_sweep.push((jobs, s.wall));
        if best.is_none_or(|(_, b)| s.wall < b) {
            best = Some((jobs, s.wall));
        }
    }
    let Some((jobs, _)) = best else {
        bail!("no ingest measurement");
    };
    r.raw_jobs = jobs;
    Ok(jobs)
}

/// Uploads every blob of `set` to `bench/ingest` at `addr` with `jobs`
/// workers, each on its own keep-alive connection.
fn raw_upload(set: &Dataset, addr: std::net::SocketAddr, jobs: usize) -> Result<()> {
    on_connections(addr, jobs, &set.blobs, |conn, b| {
        conn.upload("bench/ingest", &set.blob_path(&b.digest), &b.digest, b.size)
    })
}

/// The images' ingest floor: what importing the set's images into a fresh
/// registry needs at the fewest requests, on keep-alive connections with
/// `jobs` workers. Every distinct blob is uploaded once (POST + PUT) into
/// the first repository that has it; then each image mounts the blobs it
/// shares with an earlier repository (one POST each) and puts its manifests
/// (the children by digest, then the top by its tag). The raw ingest
/// ([`raw_ingest_once`]) counts only the blobs' uploads.
pub(crate) fn image_ingest_once(set: &Dataset, jobs: usize, label: usize) -> Result<Sample> {
    let target = Registry::start()?;
    let _ = Command::new("sync").status();
    let (uploads, images) = image_ingest_work(set);
    let t = Instant::now();
    on_connections(target.addr(), jobs, &uploads, |conn, (repo, b)| {
        conn.upload(repo, &set.blob_path(&b.digest), &b.digest, b.size)
    })?;
    on_connections(target.addr(), jobs, &images, |conn, (img, mounts)| {
        for (digest, from) in mounts {
            conn.mount(&img.repository, digest, from)?;
        }
        for m in &img.children {
            conn.put_manifest(
                &img.repository,
                &m.digest.to_string(),
                m,
                &set.blob_path(&m.digest),
            )?;
        }
        conn.put_manifest(
            &img.repository,
            &img.tag,
            &img.top,
            &set.blob_path(&img.top.digest),
        )
    })?;
    let wall = t.elapsed().as_secs_f64();
    eprintln!("xtask bench: floor-image-ingest-j{jobs}-{label:<8} {wall:>8.2} s");
    Ok(Sample {
        wall,
        ..Sample::default()
    })
}

/// An image of the set with the blobs it mounts: (digest, the repository
/// it was uploaded into).
type ImageWork<'a> = (&'a DataImage, Vec<(&'a Digest, &'a str)>);

/// The image ingest's two phases: each distinct blob with the first
/// repository that has it, and each image with the blobs it mounts from
/// another.
fn image_ingest_work(set: &Dataset) -> (Vec<(&str, &DataBlob)>, Vec<ImageWork<'_>>) {
    let by_digest: HashMap<&Digest, &DataBlob> = set.blobs.iter().map(|b| (&b.digest, b)).collect();
    let mut home: HashMap<&Digest, &str> = HashMap::new();
    let mut uploads = Vec::new();
    let mut images = Vec::new();
    for img in &set.images {
        let mut mounts = Vec::new();
        for d in &img.blobs {
            match home.get(d) {
                Some(repo) if *repo == img.repository => {}
                Some(repo) => mounts.push((d, *repo)),
                None => {
                    home.insert(d, &img.repository);
                    if let Some(b) = by_digest.get(d) {
                        uploads.push((img.repository.as_str(), *b));
                    }
                }
            }
        }
        images.push((img, mounts));
    }
    (uploads, images)
}

/// Runs `f` on every item with `jobs` workers, each on its own keep-alive
/// connection to `addr`, taking the next item as it finishes one.
fn on_connections<T: Sync>(
    addr: std::net::SocketAddr,
    jobs: usize,
    items: &[T],
    f: impl Fn(&mut Conn, &T) -> Result<()> + Sync,
) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..jobs.max(1))
            .map(|_| {
                let (next, f) = (&next, &f);
                s.spawn(move || -> Result<()> {
                    let mut conn = Conn::open(addr)?;
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(item) = items.get(i) else {
                            return Ok(());
                        };
                        f(&mut conn, item)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("an upload thread panicked"))??;
        }
        Ok(())
    })
}

/// A minimal HTTP/1.1 keep-alive client for the ingest floor.
struct Conn {
    host: String,
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl Conn {
    fn open(addr: std::net::SocketAddr) -> Result<Conn> {
        let s = std::net::TcpStream::connect(addr)
            .with_context(|| format!("failed to connect to {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            host: addr.to_string(),
            reader: std::io::BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Reads a response: (status, location); the body is skipped.
    fn response(&mut self) -> Result<(u16, Option<String>)> {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("not an HTTP status line: {line:?}"))?;
        let mut location = None;
        let mut length = 0u64;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the connection closed in the headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("location") {
                    location = Some(v.to_string());
                } else if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("unexpected Transfer-Encoding {v}");
                }
            }
        }
        std::io::copy(&mut (&mut self.reader).take(length), &mut std::io::sink())?;
        Ok((status, location))
    }

    /// Sends one request (`target` is its path and query) with the file
    /// at `body`'s path as its body (of that content type and size), or
    /// none, and reads the response: (status, location).
    fn exchange(
        &mut self,
        method: &str,
        target: &str,
        body: Option<(&str, &Path, u64)>,
    ) -> Result<(u16, Option<String>)> {
        use std::io::Write;
        match body {
            None => write!(
                self.writer,
                "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
                self.host
            )?,
            Some((content_type, path, size)) => {
                write!(
                    self.writer,
                    "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n\r\n",
                    self.host
                )?;
                let mut f = File::open(path)
                    .with_context(|| format!("failed to open {}", path.display()))?;
                std::io::copy(&mut f, &mut self.writer)?;
            }
        }
        self.response()
    }

    /// A blob's upload: `POST` a session in `repo`, then `PUT` the file.
    fn upload(&mut self, repo: &str, path: &Path, digest: &Digest, size: u64) -> Result<()> {
        let (status, location) =
            self.exchange("POST", &format!("/v2/{repo}/blobs/uploads/"), None)?;
        let Some(location) = location.filter(|_| status == 202) else {
            bail!("POST upload: status {status}, no Location");
        };
        let path_q = match location.find("/v2/") {
            Some(i) => &location[i..],
            None => location.as_str(),
        };
        let sep = if path_q.contains('?') { '&' } else { '?' };
        let target = format!("{path_q}{sep}digest={digest}");
        let (status, _) = self.exchange(
            "PUT",
            &target,
            Some(("application/octet-stream", path, size)),
        )?;
        if status != 201 {
            bail!("PUT {digest}: status {status}");
        }
        Ok(())
    }

    /// A cross-repository mount of `digest` from `from` into `repo`.
    fn mount(&mut self, repo: &str, digest: &Digest, from: &str) -> Result<()> {
        let target = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let (status, _) = self.exchange("POST", &target, None)?;
        if status != 201 {
            bail!("mount {digest} from {from} into {repo}: status {status}");
        }
        Ok(())
    }

    /// A PUT of the manifest `m` (its bytes at `path`) as `reference` in `repo`.
    fn put_manifest(
        &mut self,
        repo: &str,
        reference: &str,
        m: &DataManifest,
        path: &Path,
    ) -> Result<()> {
        let target = format!("/v2/{repo}/manifests/{reference}");
        let (status, _) = self.exchange("PUT", &target, Some((&m.media_type, path, m.size)))?;
        if status != 201 {
            bail!("PUT manifest {repo}:{reference}: status {status}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use ferry_testkit::dataset::DatasetOptions;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn image(repo: &str, blobs: &[u8]) -> DataImage {
        DataImage {
            repository: repo.into(),
            tag: "1.0".into(),
            top: DataManifest {
                digest: digest(100),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 1,
            },
            children: Vec::new(),
            blobs: blobs.iter().map(|n| digest(*n)).collect(),
        }
    }

    #[test]
    fn the_image_ingest_uploads_each_blob_once_and_mounts_it_elsewhere() {
        let set = Dataset {
            version: 1,
            options: DatasetOptions::default(),
            dir: "/nonexistent".into(),
            images: vec![
                image("a", &[1, 2]),
                image("b", &[1, 3]),
                image("a", &[2, 4]),
                image("c", &[1, 3]),
            ],
            blobs: (1..=4)
                .map(|n| DataBlob {
                    digest: digest(n),
                    size: 1,
                    layer: true,
                })
                .collect(),
        };
        let (uploads, images) = image_ingest_work(&set);
        let up: Vec<(&str, Digest)> = uploads
            .iter()
            .map(|(r, b)| (*r, b.digest.clone()))
            .collect();
        assert_eq!(
            up,
            vec![
                ("a", digest(1)),
                ("a", digest(2)),
                ("b", digest(3)),
                ("a", digest(4))
            ]
        );
        let mounts: Vec<Vec<(Digest, &str)>> = images
            .iter()
            .map(|(_, m)| m.iter().map(|(d, from)| ((*d).clone(), *from)).collect())
            .collect();
        assert_eq!(
            mounts,
            vec![
                vec![],
                vec![(digest(1), "a")],
                vec![],
                vec![(digest(1), "a"), (digest(3), "b")],
            ]
        );
    }
}
