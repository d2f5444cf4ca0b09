//! The WebDAV file target speaks through ferry-registry's one HTTP transport:
//! the same per-host TLS settings as the registry client (nginx over TLS with
//! the testkit PKI), credentials only for their exact origin (a redirect is
//! not followed), error bodies capped and without the credentials. Every
//! refused request leaves nothing at the server.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod files_common;

use files_common::tree;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use ferry_bundle::relpath::RelPath;
use ferry_bundle::Digest;
use ferry_import::files::{FileTarget, FileTargetOptions, FilesError};
use ferry_testkit::nginx::{require_nginx, Nginx, NginxOptions};
use ferry_testkit::pki::Pki;
use tokio::sync::mpsc;

const USER: &str = "ferry";
const PASSWORD: &str = "pa55-Word-9f3";

fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// A channel holding `data` in one piece.
fn feed(data: &[u8]) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(1);
    tx.try_send(Bytes::copy_from_slice(data)).unwrap();
    rx
}

/// The Basic token of the test credentials.
fn basic_token() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
}

fn opts() -> FileTargetOptions {
    FileTargetOptions {
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        attempts: 1,
        ..FileTargetOptions::default()
    }
}

/// A WebDAV nginx with basic auth over a fresh root with `/mirror`.
struct Dav {
    root: tempfile::TempDir,
    nginx: Nginx,
}

impl Dav {
    fn start(tls: Option<&Pki>) -> Dav {
        require_nginx();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("mirror")).unwrap();
        let mut o = NginxOptions::webdav(root.path());
        o.basic_auth = Some((USER.into(), PASSWORD.into()));
        o.tls = tls.map(|p| (p.cert.clone(), p.key.clone()));
        let nginx = Nginx::start(o).unwrap();
        Dav { root, nginx }
    }

    fn mirror(&self) -> PathBuf {
        self.root.path().join("mirror")
    }

    fn base(&self) -> String {
        format!("{}/mirror", self.nginx.url())
    }
}

/// A hostile HTTP server on loopback: every request is answered by
/// `respond(request head)` (after its body is read) on a connection closed
/// afterwards; the request heads are kept.
struct Hostile {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Hostile {
    fn start(respond: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let kept = heads.clone();
        let respond = Arc::new(respond);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (kept, respond) = (kept.clone(), respond.clone());
                std::thread::spawn(move || serve_one(stream, &kept, &*respond));
            }
        });
        Hostile { addr, heads }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn serve_one(mut s: TcpStream, kept: &Mutex<Vec<String>>, respond: &dyn Fn(&str) -> Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf.len() - end;
    while body < length {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body += n,
        }
    }
    kept.lock().unwrap().push(head.clone());
    let _ = s.write_all(&respond(&head));
}

fn answer(status: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------
// Per-host TLS, as the registry client applies it

#[tokio::test]
async fn a_tls_file_server_is_refused_without_its_ca_naming_the_url_and_accepted_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let dav = Dav::start(Some(&pki));
    assert!(dav.base().starts_with("https://"), "{}", dav.base());
    let path = rel("files/tools/a.txt");

    // Without the CA: the certificate is refused.
    let t = FileTarget::new(
        &dav.base(),
        FileTargetOptions {
            attempts: 3,
            ..opts()
        },
    )
    .unwrap();
    let e = t.check().await.unwrap_err();
    assert!(matches!(e, FilesError::Transport(_)), "{e:?}");
    let msg = ferry_registry::chain(&e);
    assert!(msg.contains(&dav.base()), "{msg}");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    assert!(!msg.contains(PASSWORD), "{msg}");
    let e = t
        .write_bytes(&path, Bytes::from_static(b"hello"))
        .await
        .unwrap_err();
    assert!(matches!(e, FilesError::Transport(_)), "{e:?}");
    assert!(tree(&dav.mirror()).is_empty(), "{:?}", tree(&dav.mirror()));

    // With the CA (`--files-ca`): the same server is trusted.
    let t = FileTarget::new(
        &dav.base(),
        FileTargetOptions {
            ca_file: Some(pki.ca.clone()),
            ..opts()
        },
    )
    .unwrap();
    t.check().await.unwrap();
    t.write_bytes(&path, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(tree(&dav.mirror()), ["files/tools/a.txt"]);
    assert_eq!(
        std::fs::read(dav.mirror().join("files/tools/a.txt")).unwrap(),
        b"hello"
    );
}

#[tokio::test]
async fn an_unusable_ca_bundle_is_named_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    for ca in [bad, dir.path().join("missing.pem")] {
        let e = FileTarget::new(
            "https://files.invalid/mirror",
            FileTargetOptions {
                ca_file: Some(ca.clone()),
                ..opts()
            },
        )
        .unwrap_err();
        assert!(matches!(e, FilesError::Transport(_)), "{e:?}");
        let msg = ferry_registry::chain(&e);
        assert!(msg.contains(&*ca.to_string_lossy()), "{msg}");
        assert!(msg.contains("CA bundle"), "{msg}");
    }
}

// ---------------------------------------------------------------------------
// Credentials stay with their origin

#[tokio::test]
async fn a_redirect_is_not_followed_and_the_credentials_never_reach_the_other_server() {
    // The other server accepts these very credentials: had the redirect been
    // followed with them, the file would land there.
    let other = Dav::start(None);
    let to = other.base();
    let first = Hostile::start(move |head| {
        let target = head.split_whitespace().nth(1).unwrap_or("/");
        let path = target.strip_prefix("/mirror").unwrap_or(target);
        answer(
            "307 Temporary Redirect",
            &format!("Location: {to}{path}\r\n"),
            b"moved",
        )
    });
    let base = format!("{}/mirror", first.url());
    let t = FileTarget::new(&base, opts()).unwrap();

    // A nested path: MKCOL of its parent is answered 307.
    let e = t
        .write_bytes(&rel("files/tools/a.txt"), Bytes::from_static(b"hello"))
        .await
        .unwrap_err();
    let FilesError::Status { status, url, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(status.as_u16(), 307);
    assert!(url.starts_with(&base), "{url}");
    // A top-level file: the streamed PUT is answered 307.
    let data = b"streamed".to_vec();
    let e = t
        .write_stream(&rel("a.txt"), &Digest::of(&data), 8, feed(&data))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, FilesError::Status { status, .. } if status.as_u16() == 307),
        "{e:?}"
    );

    let heads = first.heads();
    assert!(heads.len() >= 2, "{heads:?}");
    let sent = format!("authorization: basic {}", basic_token()).to_lowercase();
    assert!(
        heads.iter().all(|h| h.to_lowercase().contains(&sent)),
        "the credentials go to their own origin: {heads:?}"
    );
    // Only testkit's readiness probe (`HEAD /`) ever reached the other server.
    let log = other.nginx.access_log();
    assert!(!log.contains("/mirror"), "{log}");
    assert!(!log.contains(USER), "{log}");
    assert!(
        tree(&other.mirror()).is_empty(),
        "{:?}",
        tree(&other.mirror())
    );
}

// ---------------------------------------------------------------------------
// Error bodies: capped, credentials masked

#[tokio::test]
async fn an_error_body_is_capped_and_never_shows_the_credentials() {
    // The server echoes the request (its Authorization header included) and
    // the password, then 100 KB more.
    let server = Hostile::start(|head| {
        let mut body = format!("denied {USER}:{PASSWORD} pw={PASSWORD} ").into_bytes();
        body.extend_from_slice(head.as_bytes());
        body.extend(std::iter::repeat_n(b'x', 100_000));
        answer("403 Forbidden", "", &body)
    });
    let base = format!("{}/mirror", server.url());
    let t = FileTarget::new(&base, opts()).unwrap();
    let e = t.check().await.unwrap_err();
    let FilesError::Status { status, body, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(status.as_u16(), 403);
    assert!(body.starts_with("denied *** pw=***"), "{body}");
    assert!(
        body.chars().count() <= 201,
        "{} chars",
        body.chars().count()
    );
    let e2 = t
        .write_bytes(&rel("files/a.txt"), Bytes::from_static(b"hello"))
        .await
        .unwrap_err();
    for shown in [
        e.to_string(),
        format!("{e:?}"),
        e2.to_string(),
        format!("{e2:?}"),
    ] {
        assert!(shown.contains("403"), "{shown}");
        assert!(shown.contains(&base), "{shown}");
        assert!(shown.len() < 1_000, "{} bytes: {shown}", shown.len());
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(!shown.contains(&basic_token()), "{shown}");
    }
    // Nothing was published: no MOVE was ever sent.
    let heads = server.heads();
    assert!(!heads.is_empty());
    assert!(heads.iter().all(|h| !h.starts_with("MOVE ")), "{heads:?}");
}
