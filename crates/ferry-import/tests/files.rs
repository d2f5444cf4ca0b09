//! File targets: a local directory and nginx WebDAV (with basic auth,
//! `create_full_put_path off`, so parents must be created with MKCOL).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod files_common;

use files_common::tree;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;
use ferry_import::files::{FileTarget, FileTargetOptions, FilesError};
use ferry_testkit::nginx::{require_nginx, Nginx, NginxOptions};
use tokio::sync::mpsc;

const USER: &str = "ferry";
const PASSWORD: &str = "pa55-Word";

fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// Deterministic, non-repeating test content.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// A channel fed with `data` in `chunk`-byte pieces by a separate task.
fn feed(data: &[u8], chunk: usize) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(4);
    let pieces: Vec<Bytes> = data
        .chunks(chunk.max(1))
        .map(Bytes::copy_from_slice)
        .collect();
    tokio::spawn(async move {
        for p in pieces {
            if tx.send(p).await.is_err() {
                return;
            }
        }
    });
    rx
}

fn temps(root: &Path) -> Vec<String> {
    tree(root)
        .into_iter()
        .filter(|p| p.contains(".ferry-tmp-"))
        .collect()
}

fn dir_target(root: &Path) -> FileTarget {
    FileTarget::new(root.to_str().unwrap(), FileTargetOptions::default()).unwrap()
}

/// A WebDAV nginx with basic auth over a fresh root, and a target for it.
struct Dav {
    root: tempfile::TempDir,
    nginx: Nginx,
}

impl Dav {
    fn start() -> Dav {
        Dav::start_with(|_| {})
    }

    fn start_with(tweak: impl FnOnce(&mut NginxOptions)) -> Dav {
        require_nginx();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("mirror")).unwrap();
        let mut opts = NginxOptions::webdav(root.path());
        opts.basic_auth = Some((USER.into(), PASSWORD.into()));
        tweak(&mut opts);
        let nginx = Nginx::start(opts).unwrap();
        Dav { root, nginx }
    }

    /// The directory nginx serves at `/mirror`.
    fn mirror(&self) -> PathBuf {
        self.root.path().join("mirror")
    }

    fn target_with(&self, password: &str) -> FileTarget {
        let opts = FileTargetOptions {
            username: Some(USER.into()),
            password: Some(password.into()),
            attempts: 2,
            ..FileTargetOptions::default()
        };
        FileTarget::new(&format!("{}/mirror/", self.nginx.url()), opts).unwrap()
    }

    fn target(&self) -> FileTarget {
        self.target_with(PASSWORD)
    }
}

// ---------------------------------------------------------------------------
// Behaviour shared by both kinds, checked against the files on disk.

async fn stream_commit_lands_exact_bytes(target: &FileTarget, root: &Path) {
    let path = rel("falco/driver/7.0.0+driver/x86_64/falco_debian_6.1.0_1.ko");
    let data = content(300_000, 1);
    let staged = target
        .write_stream(
            &path,
            &Digest::of(&data),
            data.len() as u64,
            feed(&data, 64 * 1024),
        )
        .await
        .unwrap();
    let on_disk = root.join("falco/driver/7.0.0+driver/x86_64/falco_debian_6.1.0_1.ko");
    assert!(!on_disk.exists(), "visible before commit");
    assert_eq!(temps(root).len(), 1, "{:?}", tree(root));
    staged.commit().await.unwrap();
    assert_eq!(std::fs::read(&on_disk).unwrap(), data);
    assert_eq!(
        tree(root),
        ["falco/driver/7.0.0+driver/x86_64/falco_debian_6.1.0_1.ko"]
    );

    // Replacing an existing file, with a single chunk, at the top level.
    let top = rel("index.yaml");
    std::fs::write(root.join("index.yaml"), b"old").unwrap();
    let new = b"entries: {}\n".to_vec();
    let staged = target
        .write_stream(
            &top,
            &Digest::of(&new),
            new.len() as u64,
            feed(&new, 1 << 20),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(root.join("index.yaml")).unwrap(), b"old");
    staged.commit().await.unwrap();
    assert_eq!(std::fs::read(root.join("index.yaml")).unwrap(), new);

    // An empty file.
    let empty = rel("files/empty");
    target
        .write_stream(&empty, &Digest::of(b""), 0, feed(b"", 1))
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    assert_eq!(std::fs::read(root.join("files/empty")).unwrap(), b"");
    assert!(temps(root).is_empty(), "{:?}", tree(root));
}

async fn bad_data_leaves_nothing(target: &FileTarget, root: &Path) {
    let path =
        rel("opensearch/plugins/prometheus-exporter/2.11.1.0/prometheus-exporter-2.11.1.0.zip");
    let data = content(200_000, 2);
    let other = content(200_000, 3);
    let size = data.len() as u64;
    let on_disk = path.under(root);

    // Same size, other bytes.
    let e = target
        .write_stream(&path, &Digest::of(&data), size, feed(&other, 50_000))
        .await
        .unwrap_err();
    assert!(matches!(e, FilesError::DigestMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&Digest::of(&data).to_string()), "{msg}");
    assert!(msg.contains("prometheus-exporter-2.11.1.0.zip"), "{msg}");

    // The channel closes early.
    let e = target
        .write_stream(
            &path,
            &Digest::of(&data),
            size,
            feed(&data[..150_000], 50_000),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            FilesError::Short {
                received: 150_000,
                expected: 200_000,
                ..
            }
        ),
        "{e}"
    );

    // More bytes than announced.
    let mut longer = data.clone();
    longer.extend_from_slice(b"tail");
    let e = target
        .write_stream(&path, &Digest::of(&data), size, feed(&longer, 50_000))
        .await
        .unwrap_err();
    assert!(matches!(e, FilesError::TooLong { .. }), "{e}");

    assert!(!on_disk.exists());
    assert!(temps(root).is_empty(), "{:?}", tree(root));
    assert!(
        tree(root).iter().all(|p| !p.ends_with(".zip")),
        "{:?}",
        tree(root)
    );
}

async fn abort_leaves_nothing(target: &FileTarget, root: &Path) {
    let path = rel("helm/stable/nginx-1.2.3.tgz");
    std::fs::create_dir_all(root.join("helm/stable")).unwrap();
    std::fs::write(root.join("helm/stable/nginx-1.2.3.tgz"), b"previous").unwrap();
    let data = content(10_000, 4);
    let staged = target
        .write_stream(
            &path,
            &Digest::of(&data),
            data.len() as u64,
            feed(&data, 3000),
        )
        .await
        .unwrap();
    assert_eq!(temps(root).len(), 1);
    staged.abort().await;
    assert!(temps(root).is_empty(), "{:?}", tree(root));
    assert_eq!(
        std::fs::read(root.join("helm/stable/nginx-1.2.3.tgz")).unwrap(),
        b"previous"
    );

    // Dropped without commit or abort: the temporary file goes too.
    let staged = target
        .write_stream(
            &rel("files/dropped"),
            &Digest::of(&data),
            data.len() as u64,
            feed(&data, 3000),
        )
        .await
        .unwrap();
    drop(staged);
    for _ in 0..100 {
        if temps(root).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(temps(root).is_empty(), "{:?}", tree(root));
    assert!(!root.join("files/dropped").exists());
}

async fn has_compares_size_and_content(target: &FileTarget, root: &Path) {
    let path = rel("files/tools/helm.tar.gz");
    let data = content(5000, 5);
    let digest = Digest::of(&data);
    assert!(!target.has(&path, &digest, 5000).await.unwrap(), "absent");
    assert!(
        !target
            .has(&rel("nowhere/at/all"), &digest, 5000)
            .await
            .unwrap(),
        "absent parents"
    );
    target
        .write_bytes(&path, Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(std::fs::read(path.under(root)).unwrap(), data);
    assert!(target.has(&path, &digest, 5000).await.unwrap());
    // Same size, other content.
    let other = content(5000, 6);
    assert!(!target.has(&path, &Digest::of(&other), 5000).await.unwrap());
    // Other size.
    assert!(!target.has(&path, &digest, 4999).await.unwrap());
    // The file changed on the target under the same size.
    std::fs::write(path.under(root), &other).unwrap();
    assert!(!target.has(&path, &digest, 5000).await.unwrap());
    assert!(temps(root).is_empty());
}

async fn read_returns_content_or_none(target: &FileTarget) {
    assert_eq!(
        target.read(&rel("falco/index.yaml"), 1000).await.unwrap(),
        None
    );
    assert_eq!(
        target.read(&rel("no/such/dir/x"), 1000).await.unwrap(),
        None
    );
    let index = Bytes::from_static(b"- name: falcosecurity\n  type: rulesfile\n");
    target
        .write_bytes(&rel("falco/index.yaml"), index.clone())
        .await
        .unwrap();
    assert_eq!(
        target.read(&rel("falco/index.yaml"), 1000).await.unwrap(),
        Some(index.clone())
    );
    let e = target.read(&rel("falco/index.yaml"), 10).await.unwrap_err();
    assert!(matches!(e, FilesError::TooLarge { limit: 10, .. }), "{e}");
    assert!(e.to_string().contains("falco/index.yaml"), "{e}");
}

// ---------------------------------------------------------------------------
// Directory targets

#[tokio::test]
async fn dir_stream_commit_lands_exact_bytes() {
    let root = tempfile::tempdir().unwrap();
    let target = dir_target(root.path());
    target.check().await.unwrap();
    stream_commit_lands_exact_bytes(&target, root.path()).await;
}

#[tokio::test]
async fn dir_bad_data_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    bad_data_leaves_nothing(&dir_target(root.path()), root.path()).await;
}

#[tokio::test]
async fn dir_abort_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    abort_leaves_nothing(&dir_target(root.path()), root.path()).await;
}

#[tokio::test]
async fn dir_has_compares_size_and_content() {
    let root = tempfile::tempdir().unwrap();
    has_compares_size_and_content(&dir_target(root.path()), root.path()).await;
}

#[tokio::test]
async fn dir_read_returns_content_or_none() {
    let root = tempfile::tempdir().unwrap();
    read_returns_content_or_none(&dir_target(root.path())).await;
}

#[tokio::test]
async fn dir_check_creates_the_root_and_sweeps_stray_temp_files() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("new/mirror");
    let target = dir_target(&root);
    target.check().await.unwrap();
    assert!(root.is_dir());

    std::fs::create_dir_all(root.join("falco/driver")).unwrap();
    let stray = [
        ".index.yaml.ferry-tmp-0123456789abcdef",
        "falco/driver/.falco.ko.ferry-tmp-00000000000000aa",
    ];
    for s in stray {
        std::fs::write(root.join(s), b"half").unwrap();
    }
    let kept = [
        "falco/driver/falco.ko",
        "falco/.hidden",
        "files/ferry-tmp-looking",
    ];
    for k in kept {
        std::fs::create_dir_all(root.join(k).parent().unwrap()).unwrap();
        std::fs::write(root.join(k), b"keep").unwrap();
    }
    target.check().await.unwrap();
    let mut expected: Vec<String> = kept.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(tree(&root), expected);
    assert_eq!(target.sweep_temp().await.unwrap(), 0);
}

#[tokio::test]
async fn dir_refuses_symlinked_components_under_the_root() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("falco")).unwrap();
    std::fs::write(outside.join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("index.yaml")).unwrap();
    let target = dir_target(&root);
    let data = b"payload".to_vec();
    let d = Digest::of(&data);

    let e = target
        .write_stream(&rel("falco/driver/x/f.ko"), &d, 7, feed(&data, 3))
        .await
        .unwrap_err();
    assert!(matches!(e, FilesError::Symlink { .. }), "{e}");
    assert!(e.to_string().contains("falco"), "{e}");
    let e = target
        .write_bytes(&rel("index.yaml"), Bytes::from(data.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, FilesError::Symlink { .. }), "{e}");
    assert!(matches!(
        target.read(&rel("falco/secret"), 100).await,
        Err(FilesError::Symlink { .. })
    ));
    assert!(matches!(
        target.read(&rel("index.yaml"), 100).await,
        Err(FilesError::Symlink { .. })
    ));
    assert!(matches!(
        target.has(&rel("falco/secret"), &d, 7).await,
        Err(FilesError::Symlink { .. })
    ));
    // Nothing was written outside, nor inside.
    assert_eq!(tree(&outside), ["secret"]);
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"outside");
    assert!(!outside.join("driver").exists());
    assert!(temps(&root).is_empty());
}

#[tokio::test]
async fn dir_refuses_a_file_where_a_directory_is_needed() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("helm"), b"a file").unwrap();
    let e = dir_target(root.path())
        .write_bytes(&rel("helm/stable/index.yaml"), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(e, FilesError::NotADirectory { .. }), "{e}");
    assert!(e.to_string().contains("helm"), "{e}");
}

// ---------------------------------------------------------------------------
// nginx WebDAV targets

#[tokio::test]
async fn dav_stream_commit_lands_exact_bytes_with_a_literal_plus() {
    let dav = Dav::start();
    let target = dav.target();
    target.check().await.unwrap();
    assert!(temps(&dav.mirror()).is_empty(), "the probe is cleaned up");
    stream_commit_lands_exact_bytes(&target, &dav.mirror()).await;
    // The parents were created with MKCOL (create_full_put_path is off),
    // the `+` sent as %2B, and the file moved into place.
    let log = dav.nginx.access_log();
    assert!(
        log.contains("\"MKCOL /mirror/falco/driver/7.0.0%2Bdriver/ "),
        "{log}"
    );
    assert!(
        log.contains("\"MOVE /mirror/falco/driver/7.0.0%2Bdriver/x86_64/."),
        "{log}"
    );
    assert!(!target.describe().contains(PASSWORD));
}

#[tokio::test]
async fn dav_bad_data_leaves_nothing() {
    let dav = Dav::start();
    bad_data_leaves_nothing(&dav.target(), &dav.mirror()).await;
}

#[tokio::test]
async fn dav_abort_leaves_nothing() {
    let dav = Dav::start();
    abort_leaves_nothing(&dav.target(), &dav.mirror()).await;
}

#[tokio::test]
async fn dav_has_compares_size_and_content() {
    let dav = Dav::start();
    has_compares_size_and_content(&dav.target(), &dav.mirror()).await;
}

#[tokio::test]
async fn dav_read_returns_content_or_none() {
    let dav = Dav::start();
    read_returns_content_or_none(&dav.target()).await;
}

#[tokio::test]
async fn dav_wrong_password_is_a_clear_error_without_the_password() {
    let dav = Dav::start();
    let wrong = "not-the-Pa55word";
    let target = dav.target_with(wrong);
    let url = format!("{}/mirror", dav.nginx.url());
    let e = target.check().await.unwrap_err();
    assert!(matches!(e, FilesError::Unauthorized { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains(USER), "{msg}");
    assert!(!msg.contains(wrong) && !msg.contains(PASSWORD), "{msg}");
    assert!(!format!("{e:?}").contains(wrong));
    assert!(!format!("{target:?}").contains(wrong));

    let data = b"x".to_vec();
    let e = target
        .write_stream(&rel("files/a/b"), &Digest::of(&data), 1, feed(&data, 1))
        .await
        .unwrap_err();
    assert!(matches!(e, FilesError::Unauthorized { .. }), "{e}");
    assert!(!e.to_string().contains(wrong));
    assert!(tree(&dav.mirror()).is_empty());

    // The same credentials in the URL work like the options.
    let in_url = dav
        .nginx
        .url()
        .replace("http://", &format!("http://{USER}:{PASSWORD}@"));
    let t = FileTarget::new(&format!("{in_url}/mirror"), FileTargetOptions::default()).unwrap();
    t.check().await.unwrap();
    assert!(!t.describe().contains(PASSWORD));
}

#[tokio::test]
async fn dav_server_without_move_is_reported() {
    let dav = Dav::start_with(|o| o.dav_methods = Some("PUT DELETE MKCOL".into()));
    let e = dav.target().check().await.unwrap_err();
    assert!(matches!(e, FilesError::NoMove { .. }), "{e}");
    assert!(
        e.to_string().contains("does not support WebDAV MOVE"),
        "{e}"
    );
    assert!(e.to_string().contains("/mirror/"), "{e}");
    assert!(temps(&dav.mirror()).is_empty(), "{:?}", tree(&dav.mirror()));
}

#[tokio::test]
async fn dav_missing_base_collection_is_reported() {
    let dav = Dav::start();
    let opts = FileTargetOptions {
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        attempts: 1,
        ..FileTargetOptions::default()
    };
    let t = FileTarget::new(&format!("{}/nope", dav.nginx.url()), opts).unwrap();
    let e = t.check().await.unwrap_err();
    assert!(matches!(e, FilesError::MissingBase { .. }), "{e}");
    assert!(e.to_string().contains("/nope/"), "{e}");
}

#[tokio::test]
async fn dav_unreachable_server_names_the_url() {
    let dav = Dav::start();
    let url = format!("{}/mirror", dav.nginx.url());
    let mut dav = dav;
    dav.nginx.stop();
    let opts = FileTargetOptions {
        attempts: 2,
        ..FileTargetOptions::default()
    };
    let e = FileTarget::new(&url, opts)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(matches!(e, FilesError::Transport { .. }), "{e}");
    assert!(e.to_string().contains(&url), "{e}");
}
