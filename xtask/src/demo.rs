//! `cargo xtask demo`: the main job end to end, offline, with nothing but cargo.
//!
//! 1. Generate content (a multi-arch OCI index, Docker schema2 images and a
//!    manifest list, shared base layers, many small layers, a Trivy-shaped
//!    artifact, a Helm chart repository, a Falco driver, an OpenSearch
//!    plugin, a plain file) into a store, and `ferry serve` it as the
//!    *upstream* on a free loopback port.
//!    One image (`docker.io/fixtures/docker-v2`) carries a vendor's cosign
//!    signature (ECDSA P-256, a `sha256-<hex>.sig` tag).
//! 2. `ferry export` with `fixtures/demo/bundle.yaml` plus a `verify:` policy
//!    (the vendor's key for that image, `unsigned: allow` for the others),
//!    signed with an operator key; the verdicts travel in the bundle. Its real-looking
//!    `docker.io/…` references and `https://…` URLs are fetched from that
//!    upstream through `--upstream-mirror`.
//! 3. `ferry verify --key` (the image signatures re-verified offline),
//!    `ferry inspect`, `ferry import --key --store` into a mirror
//!    store (with `--emit-config` for an authenticated TLS mirror: a private
//!    CA carried to the nodes, a pull-only user), `ferry serve` over the
//!    mirror with TLS and htpasswd, and pull every image and a file back
//!    through it with the pull credential: digests and bytes compared with
//!    the upstream's; the runtime files written are listed.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ferry_bundle::craft::chart_tgz;
use ferry_bundle::Digest;
use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::fixtures::{FixtureOptions, FixtureSet};
use ferry_testkit::store::write_store;

fn build_ferry() -> Result<PathBuf> {
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(crate::root())
        .args(["build", "--quiet", "-p", "ferry"])
        .status()
        .context("failed to run cargo build")?;
    if !st.success() {
        bail!("cargo build -p ferry failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"));
    Ok(target.join("debug").join("ferry"))
}

fn step(ferry: &Path, args: &[&str]) -> Result<String> {
    step_env(ferry, args, &[])
}

/// [`step`] with environment variables (shown by name only: they carry secrets).
fn step_env(ferry: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<String> {
    let names: Vec<String> = envs.iter().map(|(k, _)| format!("{k}=…")).collect();
    let prefix = if names.is_empty() {
        String::new()
    } else {
        format!("{} ", names.join(" "))
    };
    println!("\n$ {prefix}ferry {}", args.join(" "));
    let mut c = Command::new(ferry);
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().context("failed to run ferry")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines() {
        println!("  {line}");
    }
    if !out.status.success() {
        bail!("`ferry {}` failed with {}", args.join(" "), out.status);
    }
    Ok(stdout)
}

fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(l.local_addr()?)
}

/// `ferry serve DIR` on a free port, killed on drop.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(ferry: &Path, dir: &Path, log: &Path) -> Result<Served> {
    serve_on(ferry, dir, log, None, &[])
}

/// `ferry serve DIR` on `addr` (else a free port) with extra flags.
fn serve_on(
    ferry: &Path,
    dir: &Path,
    log: &Path,
    addr: Option<SocketAddr>,
    extra: &[String],
) -> Result<Served> {
    let mut last = None;
    for _ in 0..5 {
        let addr = match addr {
            Some(a) => a,
            None => free_addr()?,
        };
        let log_file = std::fs::File::create(log)?;
        let child = Command::new(ferry)
            .args([
                "serve",
                &dir.to_string_lossy(),
                "--listen",
                &addr.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("failed to start ferry serve")?;
        let mut s = Served { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(s);
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                last = Some(format!(
                    "ferry serve exited with {st}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    bail!(
        "ferry serve did not start: {}",
        last.unwrap_or_else(|| "timed out".into())
    )
}

const DRIVER: &str = "falco_ubuntu-generic_5.15.0-91-generic_101.ko";

/// The demo mirror's pull-only user (a demo value, not a secret).
const DEMO_USER: &str = "demo-puller";
const DEMO_PASSWORD: &str = "demo-pull-password";

/// A cosign signature of `image` by a fresh vendor key (ECDSA P-256, as
/// `cosign generate-key-pair` makes): the public key PEM and the
/// `sha256-<hex>.sig` image (a simple-signing payload layer, its signature
/// in the `dev.cosignproject.cosign/signature` annotation).
fn vendor_signature(
    image: &ferry_testkit::fixtures::FixtureImage,
) -> Result<(String, ferry_testkit::fixtures::FixtureImage)> {
    use base64::Engine;
    use ferry_testkit::fixtures::{Blob, FixtureImage, FixtureManifest};
    let key = rcgen::KeyPair::generate().context("failed to generate the vendor key")?;
    let rng = ring::rand::SystemRandom::new();
    let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &key.serialize_der(),
        &rng,
    )
    .map_err(|e| anyhow::anyhow!("the vendor key: {e}"))?;
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": format!("docker.io/{}", image.repository)},
            "image": {"docker-manifest-digest": image.top.digest.to_string()},
            "type": "cosign container image signature"
        },
        "optional": null
    }))?;
    let signature = signer
        .sign(&rng, &payload)
        .map_err(|e| anyhow::anyhow!("signing failed: {e}"))?;
    let config = b"{}".to_vec();
    let blob = |data: &[u8], media_type: &str| Blob {
        digest: Digest::of(data),
        media_type: media_type.to_string(),
        data: bytes::Bytes::copy_from_slice(data),
    };
    let payload_blob = blob(&payload, "application/vnd.dev.cosign.simplesigning.v1+json");
    let config_blob = blob(&config, "application/vnd.oci.image.config.v1+json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_blob.media_type, "digest": config_blob.digest.to_string(), "size": config.len()},
        "layers": [{
            "mediaType": payload_blob.media_type,
            "digest": payload_blob.digest.to_string(),
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": base64::engine::general_purpose::STANDARD.encode(signature.as_ref())},
        }],
    }))?;
    let sig_image = FixtureImage {
        repository: image.repository.clone(),
        tag: format!("sha256-{}.sig", image.top.digest.hex()),
        top: FixtureManifest {
            digest: Digest::of(&manifest),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes: bytes::Bytes::from(manifest),
            platform: None,
        },
        children: Vec::new(),
        blobs: vec![payload_blob, config_blob],
    };
    Ok((key.public_key_pem(), sig_image))
}

/// Files under `dir`, relative, sorted.
fn walk_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn sha512_hex(data: &[u8]) -> String {
    use sha2::{Digest as _, Sha512};
    hex::encode(Sha512::digest(data))
}

/// The upstream's file tree: (path under `files/`, bytes).
fn upstream_files() -> Vec<(String, Vec<u8>)> {
    let chart = chart_tgz(
        "demo-app",
        "1.0.0",
        &[(
            "values.yaml",
            b"image:\n  registry: docker.io\n  repository: fixtures/multiarch\n  tag: \"1.0\"\n",
        )],
    );
    let index = format!(
        "apiVersion: v1\nentries:\n  demo-app:\n  - apiVersion: v2\n    name: demo-app\n    version: 1.0.0\n    appVersion: 1.0.0\n    created: \"2026-01-01T00:00:00Z\"\n    digest: {}\n    urls: [demo-app-1.0.0.tgz]\ngenerated: \"2026-01-01T00:00:00Z\"\n",
        Digest::of(&chart).hex()
    );
    let driver = b"\x7fELF demo kernel module\n".repeat(2048);
    let plugin = b"PK\x03\x04 demo opensearch plugin\n".repeat(1024);
    let tool = b"ferry demo tool 1.0\n".repeat(512);
    vec![
        ("charts/stable/index.yaml".into(), index.into_bytes()),
        ("charts/stable/demo-app-1.0.0.tgz".into(), chart),
        (format!("driver/7.0.0+driver/x86_64/{DRIVER}"), driver),
        (
            "os/repository-s3/2.8.0/repository-s3-2.8.0.zip.sha512".into(),
            format!("{}  repository-s3-2.8.0.zip\n", sha512_hex(&plugin)).into_bytes(),
        ),
        (
            "os/repository-s3/2.8.0/repository-s3-2.8.0.zip".into(),
            plugin,
        ),
        ("dl/tool-1.0.tar.gz".into(), tool),
    ]
}

// Long on purpose: the demo is a narrated script (export, carry, verify,
// import, serve, emit, prune) that an operator reads in order; each step is
// a call and a line of output.
/// The demo's working state, passed from phase to phase.
struct Demo {
    ferry: PathBuf,
    out: PathBuf,
    big_mib: Option<u64>,
}

/// The upstream: the generated content, served by `ferry serve`.
struct Upstream {
    set: FixtureSet,
    files: Vec<(String, Vec<u8>)>,
    served: Served,
}

/// What the connected side produced.
struct Exported {
    bundle: PathBuf,
    lock: PathBuf,
    ops_pub: PathBuf,
    export_secs: f64,
}

/// The imported mirror: its store, the PKI and credential it is served with.
struct Imported {
    mirror_dir: PathBuf,
    config_dir: PathBuf,
    receipt: PathBuf,
    pki: ferry_testkit::pki::Pki,
    htpasswd: PathBuf,
    addr: SocketAddr,
    import_secs: f64,
}

impl Imported {
    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// What pulling back through the mirror checked.
struct Checked {
    images: usize,
    manifests: usize,
}

pub fn run(keep: bool, big_mib: Option<u64>) -> Result<()> {
    let started = Instant::now();
    let out = crate::root().join("target").join("demo");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let demo = Demo {
        ferry: build_ferry()?,
        out,
        big_mib,
    };

    let upstream = demo.start_upstream()?;
    let spec_path = demo.write_spec()?;
    let exported = demo.export(&spec_path, &upstream)?;
    // The connected side is done: the upstream goes away.
    let Upstream { set, files, served } = upstream;
    drop(served);
    let verify_secs = demo.verify(&exported)?;
    let imported = demo.import(&exported)?;
    let mirror = demo.serve_mirror(&imported)?;
    let checked = demo.pull_back(&set, &files, &imported, &mirror)?;
    demo.summary(
        &exported,
        &imported,
        &checked,
        [
            exported.export_secs,
            verify_secs,
            imported.import_secs,
            started.elapsed().as_secs_f64(),
        ],
    );
    if keep {
        println!(
            "\nthe mirror keeps serving at {}; press Ctrl-C to stop",
            imported.url()
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(())
}

impl Demo {
    /// Generates the upstream content (one image signed by a vendor) and
    /// serves it.
    fn start_upstream(&self) -> Result<Upstream> {
        println!("== generating the upstream content and serving it with `ferry serve`");
        let set = FixtureSet::generate(&FixtureOptions {
            big_layer_mib: self.big_mib,
            ..FixtureOptions::default()
        });
        let upstream_dir = self.out.join("upstream");
        let mut images: Vec<_> = set
            .images
            .iter()
            .map(|i| (i, i.repository.clone()))
            .collect();
        let files = upstream_files();
        // A vendor signs one upstream image (docker.io/fixtures/docker-v2) with
        // a cosign key: the signature is an ordinary `sha256-<hex>.sig` tag.
        let signed = set.image("fixtures/docker-v2");
        let (vendor_pub, sig_image) = vendor_signature(signed)?;
        std::fs::write(self.out.join("vendor-cosign.pub"), vendor_pub)?;
        images.push((&sig_image, sig_image.repository.clone()));
        write_store(&upstream_dir, &images, &files)?;
        let served = serve(
            &self.ferry,
            &upstream_dir,
            &self.out.join("upstream-serve.log"),
        )?;
        println!(
            "upstream: http://{} ({} images, {} blobs, {} bytes; {} files)",
            served.addr,
            set.images.len(),
            set.all_blobs().count(),
            set.total_blob_bytes(),
            files.len()
        );
        Ok(Upstream { set, files, served })
    }

    /// The demo spec with its signature policy: the vendor's image must
    /// carry the vendor's signature; the other demo images are unsigned
    /// third-party content, let through by name and recorded as such.
    fn write_spec(&self) -> Result<PathBuf> {
        let mut spec = std::fs::read_to_string(crate::root().join("fixtures/demo/bundle.yaml"))
            .context("read fixtures/demo/bundle.yaml")?;
        if self.big_mib.is_some() {
            spec = spec.replace("images:\n", "images:\n  - docker.io/fixtures/big:1.0\n");
        }
        spec.push_str(
            "verify:\n  rules:\n    - match: docker.io/fixtures/docker-v2\n      keys: [vendor-cosign.pub]\n    - match: docker.io/fixtures/*\n      unsigned: allow\n",
        );
        let spec_path = self.out.join("bundle.yaml");
        std::fs::write(&spec_path, &spec)?;
        println!(
            "\nspec {} (from fixtures/demo/bundle.yaml)",
            spec_path.display()
        );
        Ok(spec_path)
    }

    /// `ferry key generate`, then `ferry export` through the upstream
    /// mirrors. The bundle is signed by the operator's key (the policy and
    /// its verdicts travel inside it, covered by that signature).
    fn export(&self, spec_path: &Path, upstream: &Upstream) -> Result<Exported> {
        let u = format!("http://{}", upstream.served.addr);
        let mirrors = [
            format!("docker.io={u}"),
            format!("ghcr.io={u}"),
            format!("https://charts.demo.example={u}/charts"),
            format!("https://download.falco.org/driver={u}/driver"),
            format!("https://artifacts.opensearch.org/releases/plugins={u}/os"),
            format!("https://downloads.demo.example={u}/dl"),
        ];
        let ops = self.out.join("ops");
        step(
            &self.ferry,
            &[
                "key",
                "generate",
                "--out",
                &ops.to_string_lossy(),
                "--no-password",
            ],
        )?;
        let ops_key = self.out.join("ops.key");
        let bundle = self.out.join("demo.tar.zst");
        let lock = self.out.join("ferry.lock");
        let cache = self.out.join("cache");
        let mut args: Vec<String> = [
            "export",
            "-f",
            &spec_path.to_string_lossy(),
            "-o",
            &bundle.to_string_lossy(),
            "--lock",
            &lock.to_string_lossy(),
            "--cache",
            &cache.to_string_lossy(),
            "--sign-key",
            &ops_key.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for m in &mirrors {
            args.push("--upstream-mirror".into());
            args.push(m.clone());
        }
        let t = Instant::now();
        step(
            &self.ferry,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        Ok(Exported {
            bundle,
            lock,
            ops_pub: self.out.join("ops.pub"),
            export_secs: t.elapsed().as_secs_f64(),
        })
    }

    /// `ferry verify --key` and `ferry inspect`, offline; the verify's
    /// seconds.
    fn verify(&self, exported: &Exported) -> Result<f64> {
        let bundle = exported.bundle.to_string_lossy();
        let t = Instant::now();
        step(
            &self.ferry,
            &[
                "verify",
                &bundle,
                "--key",
                &exported.ops_pub.to_string_lossy(),
            ],
        )?;
        let secs = t.elapsed().as_secs_f64();
        step(&self.ferry, &["inspect", &bundle])?;
        Ok(secs)
    }

    /// `ferry import --key --store` with `--emit-config` for an
    /// authenticated TLS mirror, as a production one is: a private CA, a
    /// pull-only user for the nodes.
    fn import(&self, exported: &Exported) -> Result<Imported> {
        let mirror_dir = self.out.join("mirror");
        let config_dir = self.out.join("client-config");
        let receipt = self.out.join("receipt.json");
        let pki = ferry_testkit::pki::Pki::generate(&self.out)?;
        let htpasswd = self.out.join("mirror.htpasswd");
        std::fs::write(
            &htpasswd,
            format!(
                "{DEMO_USER}:{}\n",
                ferry_testkit::registry::bcrypt_entry(DEMO_PASSWORD)
            ),
        )?;
        let addr = free_addr()?;
        let m = format!("https://{addr}");
        let t = Instant::now();
        step_env(
            &self.ferry,
            &[
                "import",
                &exported.bundle.to_string_lossy(),
                "--store",
                &mirror_dir.to_string_lossy(),
                "--map",
                "docker.io=dockerhub",
                "--receipt",
                &receipt.to_string_lossy(),
                "--emit-config",
                &config_dir.to_string_lossy(),
                "--mirror-url",
                &m,
                "--ca",
                &pki.ca.to_string_lossy(),
                "--emit-username",
                DEMO_USER,
                "--key",
                &exported.ops_pub.to_string_lossy(),
            ],
            &[("FERRY_EMIT_PASSWORD", DEMO_PASSWORD)],
        )?;
        Ok(Imported {
            mirror_dir,
            config_dir,
            receipt,
            pki,
            htpasswd,
            addr,
            import_secs: t.elapsed().as_secs_f64(),
        })
    }

    /// `ferry serve` over the mirror with TLS and htpasswd.
    fn serve_mirror(&self, imported: &Imported) -> Result<Served> {
        println!("\n== serving the mirror with `ferry serve` (TLS, htpasswd) and pulling everything back with the pull credential");
        serve_on(
            &self.ferry,
            &imported.mirror_dir,
            &self.out.join("mirror-serve.log"),
            Some(imported.addr),
            &[
                "--tls-cert".into(),
                imported.pki.cert.to_string_lossy().into_owned(),
                "--tls-key".into(),
                imported.pki.key.to_string_lossy().into_owned(),
                "--htpasswd".into(),
                imported.htpasswd.to_string_lossy().into_owned(),
            ],
        )
    }

    /// Pulls every image (manifests by digest, every blob hashed) and the
    /// driver file back through the mirror with the pull credential, and
    /// compares them with the upstream's; an anonymous pull must be refused.
    fn pull_back(
        &self,
        set: &FixtureSet,
        files: &[(String, Vec<u8>)],
        imported: &Imported,
        mirror: &Served,
    ) -> Result<Checked> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let host = mirror.addr.to_string();
        let creds = ferry_registry::Credentials {
            username: DEMO_USER.into(),
            password: DEMO_PASSWORD.into(),
        };
        let client = mirror_client(&host, &imported.pki.ca, Some(creds.clone()))?;
        // Without the credential the mirror refuses: the emitted one is what works.
        let anonymous = mirror_client(&host, &imported.pki.ca, None)?;
        if rt.block_on(anonymous.ping(&host)).is_ok() {
            bail!("the mirror answered without credentials");
        }
        println!("  without credentials: refused (401), as it should be");
        let m = imported.url();
        let images: Vec<_> = set
            .images
            .iter()
            .filter(|i| self.big_mib.is_some() || i.repository != "fixtures/big")
            .collect();
        let mut manifests = 0;
        rt.block_on(async {
            for i in &images {
                manifests += pull_image(&client, &host, &m, i).await?;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        let driver_url = format!("{m}/falco/driver/7.0.0+driver/x86_64/{DRIVER}");
        let got = rt.block_on(async {
            let url = url::Url::parse(&driver_url)?;
            let auth = ferry_registry::OriginCredentials::new(&url, creds.clone());
            client
                .fetch_bytes(&url, Some(&auth), 64 << 20)
                .await
                .map_err(anyhow::Error::from)
        })?;
        let want = files
            .iter()
            .find(|(p, _)| p.ends_with(DRIVER))
            .map(|(_, d)| d.clone())
            .unwrap_or_default();
        if got.as_ref() != want.as_slice() {
            bail!("{driver_url}: the file differs from the upstream's");
        }
        println!("  {driver_url}  (bytes equal)");
        Ok(Checked {
            images: images.len(),
            manifests,
        })
    }

    /// What the demo did, where everything is, and how long each step took
    /// (`[export, verify, import, total]` seconds).
    fn summary(&self, exported: &Exported, imported: &Imported, checked: &Checked, secs: [f64; 4]) {
        let bundle = &exported.bundle;
        let size = std::fs::metadata(bundle).map(|m| m.len()).unwrap_or(0);
        let [export_secs, verify_secs, import_secs, total] = secs;
        let config_dir = &imported.config_dir;
        println!("\n== demo summary");
        println!(
            "bundled   {} images and artifacts, a Helm chart (+ its image), a Falco driver, an OpenSearch plugin, a file",
            checked.images
        );
        println!("checked   {} manifests byte-exact and every blob through the mirror; the driver file byte-exact", checked.manifests);
        println!("bundle    {} ({size} bytes) + .sha256", bundle.display());
        println!(
            "timings   export {export_secs:.1}s, verify {verify_secs:.1}s, import {import_secs:.1}s, total {total:.1}s"
        );
        println!("mirror    {}  (store {}; docker.io → dockerhub/…, files under /falco, /helm, /opensearch, /files)", imported.url(), imported.mirror_dir.display());
        println!(
            "mirror    TLS with a private CA ({}), htpasswd; nodes use the pull-only user `{DEMO_USER}`",
            imported.pki.ca.display()
        );
        println!("config    {}:", config_dir.display());
        for f in walk_files(config_dir) {
            let mode = {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(config_dir.join(&f))
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0)
            };
            let note = if mode == 0o600 {
                "  (holds the pull credential: mode 0600)"
            } else {
                ""
            };
            println!("            {f}{note}");
        }
        println!("receipt   {}", imported.receipt.display());
        println!("lock      {}", exported.lock.display());
    }
}

/// A client of the TLS mirror at `host` trusting `ca`, with or without the
/// pull credential.
fn mirror_client(
    host: &str,
    ca: &Path,
    credentials: Option<ferry_registry::Credentials>,
) -> Result<Client> {
    let mut config = ClientConfig::default();
    config.hosts.insert(
        host.to_string(),
        ferry_registry::HostConfig {
            https: true,
            ca_file: Some(ca.to_path_buf()),
            credentials,
            ..ferry_registry::HostConfig::default()
        },
    );
    Ok(Client::new(config)?)
}

/// Pulls one image back through the mirror: its manifest and children by
/// digest (compared with the upstream's), every blob hashed while it
/// streams. Returns the manifests checked.
async fn pull_image(
    client: &Client,
    host: &str,
    mirror_url: &str,
    image: &ferry_testkit::fixtures::FixtureImage,
) -> Result<usize> {
    let (source, path) = if image.repository.contains("trivy") {
        (
            format!("ghcr.io/{}", image.repository),
            format!("ghcr.io/{}", image.repository),
        )
    } else {
        (
            format!("docker.io/{}", image.repository),
            format!("dockerhub/{}", image.repository),
        )
    };
    let repo = Repo {
        host: host.to_string(),
        path,
    };
    let got = client.get_manifest(&repo, &image.tag).await?;
    if got.digest != image.top.digest {
        bail!(
            "{source}: the mirror serves {}, upstream {}",
            got.digest,
            image.top.digest
        );
    }
    let mut checked = 1;
    for c in &image.children {
        let got = client.get_manifest(&repo, &c.digest.to_string()).await?;
        if got.digest != c.digest {
            bail!("{source}@{}: digest differs at the mirror", c.digest);
        }
        checked += 1;
    }
    let dir = tempfile::tempdir()?;
    for b in &image.blobs {
        client
            .download_blob(
                &repo,
                &b.digest,
                Some(b.size()),
                &dir.path().join("b"),
                None,
            )
            .await?;
        std::fs::remove_file(dir.path().join("b"))?;
    }
    println!(
        "  {source}:{} -> {mirror_url}/{}:{}  {}",
        image.tag, repo.path, image.tag, image.top.digest
    );
    Ok(checked)
}
