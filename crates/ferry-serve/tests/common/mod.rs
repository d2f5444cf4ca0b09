//! A store built by hand (the layout `ferry import --store` writes) and a
//! server over it on a free loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ferry_bundle::Digest;
use ferry_serve::{ServeOptions, Server};
use ferry_testkit::fixtures::{
    FixtureOptions, FixtureSet, OCI_EMPTY, OCI_EMPTY_DIGEST, OCI_MANIFEST,
};
use serde_json::{json, Value};

/// The prefix every fixture repository gets in the store (a `--map
/// docker.io=.../dockerhub` import would produce it).
pub const PREFIX: &str = "dockerhub";
/// Extra tags of `dockerhub/fixtures/multiarch`, all on its index.
pub const MULTIARCH_TAGS: [&str; 4] = ["1.0", "1.1", "1.2", "latest"];
/// The artifact types of the two referrers.
pub const SBOM_TYPE: &str = "application/vnd.example.sbom.v1+json";
pub const SIG_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Content of the secret next to `DIR/files`, which must never be served.
pub const SECRET: &str = "TOP-SECRET-do-not-serve";
/// The Falco driver file, under a directory with a literal `+`.
pub const DRIVER_PATH: &str = "falco/driver/7.0.0+driver/x86_64/falco_test_1.0_1.ko";

/// A manifest written into the store by the test (not a fixture).
#[derive(Debug, Clone)]
pub struct Doc {
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// The store on disk and what is in it.
pub struct TestStore {
    /// Holds `store/` (DIR) and `outside-secret`.
    pub root: tempfile::TempDir,
    pub set: FixtureSet,
    /// The subject of both referrers: the linux/amd64 child of multiarch.
    pub subject: Digest,
    /// The SBOM referrer (kept by digest, with a repository annotation).
    pub sbom: Doc,
    /// The signature referrer (no repository annotation: it joins the
    /// repository through its `subject`).
    pub sig: Doc,
    /// Bytes of [`DRIVER_PATH`].
    pub driver: Vec<u8>,
}

impl TestStore {
    pub fn dir(&self) -> PathBuf {
        self.root.path().join("store")
    }

    /// The store repository of a fixture repository.
    pub fn repo(fixture_repo: &str) -> String {
        format!("{PREFIX}/{fixture_repo}")
    }

    /// Rewrites index.json atomically (temp file, then rename), as the
    /// importer does.
    pub fn write_index(&self, manifests: &[Value]) {
        write_index(&self.dir(), manifests);
    }

    /// The index.json entries written by [`build_store`].
    pub fn index_entries(&self) -> Vec<Value> {
        let v: Value =
            serde_json::from_slice(&std::fs::read(self.dir().join("index.json")).unwrap()).unwrap();
        v["manifests"].as_array().unwrap().clone()
    }
}

pub fn write_index(dir: &Path, manifests: &[Value]) {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let tmp = dir.join(".index.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::rename(&tmp, dir.join("index.json")).unwrap();
}

/// An index.json entry the way the importer writes it.
pub fn entry(repo: &str, tag: Option<&str>, media_type: &str, digest: &Digest, size: u64) -> Value {
    let name = match tag {
        Some(t) => format!("{repo}:{t}"),
        None => format!("{repo}@{digest}"),
    };
    let mut ann = BTreeMap::from([
        (
            "org.opencontainers.image.ref.name".to_string(),
            name.clone(),
        ),
        ("io.containerd.image.name".to_string(), name),
        (ferry_serve::ANN_REPOSITORY.to_string(), repo.to_string()),
    ]);
    if let Some(t) = tag {
        ann.insert(ferry_serve::ANN_TAG.to_string(), t.to_string());
    }
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size, "annotations": ann})
}

fn put_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    d
}

fn referrer(
    dir: &Path,
    subject: &Digest,
    subject_size: u64,
    artifact_type: &str,
    payload: &[u8],
) -> Doc {
    let layer = put_blob(dir, payload);
    put_blob(dir, b"{}");
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": OCI_EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": artifact_type, "digest": layer.to_string(), "size": payload.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": subject_size},
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z", "kind": artifact_type},
    });
    let bytes = serde_json::to_vec(&doc).unwrap();
    Doc {
        digest: put_blob(dir, &bytes),
        bytes,
    }
}

/// Writes the store: every fixture image under `dockerhub/<repo>`, extra
/// tags on multiarch, two referrers of multiarch's amd64 child, the file
/// tree, and secrets next to it.
pub fn build_store() -> TestStore {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let set = FixtureSet::generate(&FixtureOptions::default());
    let mut entries = Vec::new();
    for image in &set.images {
        for m in image.manifests() {
            put_blob(&dir, &m.bytes);
        }
        for b in &image.blobs {
            put_blob(&dir, &b.data);
        }
        let repo = TestStore::repo(&image.repository);
        let tags: Vec<&str> = if image.repository == "fixtures/multiarch" {
            MULTIARCH_TAGS.to_vec()
        } else {
            vec![image.tag.as_str()]
        };
        for tag in tags {
            entries.push(entry(
                &repo,
                Some(tag),
                &image.top.media_type,
                &image.top.digest,
                image.top.size(),
            ));
        }
    }
    let multiarch = set.image("fixtures/multiarch");
    let child = multiarch.child("linux/amd64").unwrap();
    let sbom = referrer(
        &dir,
        &child.digest,
        child.size(),
        SBOM_TYPE,
        b"{\"sbom\":true}",
    );
    let sig = referrer(
        &dir,
        &child.digest,
        child.size(),
        SIG_TYPE,
        b"{\"sig\":true}",
    );
    entries.push(entry(
        &TestStore::repo("fixtures/multiarch"),
        None,
        OCI_MANIFEST,
        &sbom.digest,
        sbom.bytes.len() as u64,
    ));
    entries.push(json!({
        "mediaType": OCI_MANIFEST,
        "digest": sig.digest.to_string(),
        "size": sig.bytes.len(),
        "annotations": {"io.containerd.manifest.subject": child.digest.to_string()},
    }));
    write_index(&dir, &entries);

    // The file tree.
    let files = dir.join("files");
    let driver: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let driver_file = files.join(DRIVER_PATH);
    std::fs::create_dir_all(driver_file.parent().unwrap()).unwrap();
    std::fs::write(&driver_file, &driver).unwrap();
    std::fs::create_dir_all(files.join("helm/stable")).unwrap();
    std::fs::write(
        files.join("helm/stable/index.yaml"),
        "apiVersion: v1\nentries: {}\n",
    )
    .unwrap();
    std::fs::create_dir_all(files.join("files/tools")).unwrap();
    std::fs::write(files.join("files/tools/tool-1.0.tar.gz"), b"tool").unwrap();
    // Secrets: next to DIR/files, outside DIR, and links to them from inside.
    std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
    std::fs::write(root.path().join("outside-secret"), SECRET).unwrap();
    std::os::unix::fs::symlink(dir.join("secret.txt"), files.join("link-to-secret")).unwrap();
    std::os::unix::fs::symlink(&dir, files.join("link-to-store")).unwrap();
    std::os::unix::fs::symlink("helm/stable/index.yaml", files.join("link-inside.yaml")).unwrap();
    let subject = child.digest.clone();
    TestStore {
        root,
        set,
        subject,
        sbom,
        sig,
        driver,
    }
}

/// A server running in the background; stopped on drop.
pub struct Running {
    pub addr: SocketAddr,
    pub files_addr: Option<SocketAddr>,
    pub registry_url: String,
    pub files_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ferry_serve::ServeError>>>,
}

impl Running {
    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Binds `opts` and runs the server on the current runtime.
pub async fn start(opts: ServeOptions) -> Running {
    let server: Server = ferry_serve::bind(opts).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let addr = server.local_addr();
    let files_addr = server.files_addr();
    let registry_url = server.registry_url();
    let files_url = server.files_url();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        files_addr,
        registry_url,
        files_url,
        stop: Some(tx),
        task: Some(task),
    }
}

/// Every manifest type, as a registry client sends them.
pub fn full_accept() -> String {
    ferry_bundle::manifest::MANIFEST_ACCEPT.join(", ")
}

/// The `errors[0].code` of a spec error body.
pub fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "not a JSON error body ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
