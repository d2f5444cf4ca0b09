//! `cargo xtask demo`: the main job end to end, on generated content.
//!
//! Two local registries stand in for the two sides: an *upstream* holding
//! generated images (a multi-arch OCI index, a Docker schema2 image and
//! manifest list, shared base layers, many small layers, a Trivy-shaped
//! artifact), and an empty *target*. The spec names the content by
//! real-looking `docker.io/…` and `ghcr.io/…` references, fetched through
//! `--upstream-mirror` from the upstream registry. Then: export → verify →
//! inspect → import → every digest at the target compared with upstream's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ferry_bundle::Digest;
use ferry_registry::{Client, ClientConfig, Repo};
use ferry_testkit::fixtures::{push, FixtureOptions, FixtureSet};
use ferry_testkit::registry::Registry;

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
    println!("\n$ ferry {}", args.join(" "));
    let out = Command::new(ferry)
        .args(args)
        .output()
        .context("failed to run ferry")?;
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

/// Demo names for the generated repositories: (fixture repository, source reference).
fn names(set: &FixtureSet) -> Vec<(String, String)> {
    set.images
        .iter()
        .map(|i| {
            let host = if i.repository.contains("trivy") {
                "ghcr.io"
            } else {
                "docker.io"
            };
            (
                i.repository.clone(),
                format!("{host}/{}:{}", i.repository, i.tag),
            )
        })
        .collect()
}

pub fn run(keep: bool, big_mib: Option<u64>) -> Result<()> {
    crate::ensure_tools(&[("docker-registry", "docker-registry")], true)?;
    let started = Instant::now();
    let ferry = build_ferry()?;
    let out = crate::root().join("target").join("demo");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;

    println!("== starting two local registries (Debian's docker-registry): upstream and target");
    let upstream = Registry::start()?;
    let target = Registry::start()?;
    println!(
        "upstream: http://{}   target: http://{}",
        upstream.host(),
        target.host()
    );

    let set = FixtureSet::generate(&FixtureOptions {
        big_layer_mib: big_mib,
        ..FixtureOptions::default()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client = Client::new(ClientConfig::default())?;
    rt.block_on(push(&set, &client, &upstream.host()))?;
    println!(
        "generated and pushed {} images ({} blobs, {} bytes) to the upstream",
        set.images.len(),
        set.all_blobs().count(),
        set.total_blob_bytes()
    );

    let names = names(&set);
    let mut spec = String::from("apiVersion: ferry.dev/v1\nname: demo\nimages:\n");
    for (_, r) in &names {
        spec.push_str(&format!("  - {r}\n"));
    }
    let spec_path = out.join("bundle.yaml");
    std::fs::write(&spec_path, &spec)?;
    println!("\nspec {}:\n{spec}", spec_path.display());

    let mirror_docker = format!("docker.io=http://{}", upstream.host());
    let mirror_ghcr = format!("ghcr.io=http://{}", upstream.host());
    let bundle = out.join("demo.tar.zst");
    let lock = out.join("ferry.lock");
    let t = Instant::now();
    step(
        &ferry,
        &[
            "export",
            "-f",
            &spec_path.to_string_lossy(),
            "-o",
            &bundle.to_string_lossy(),
            "--lock",
            &lock.to_string_lossy(),
            "--cache",
            &out.join("cache").to_string_lossy(),
            "--upstream-mirror",
            &mirror_docker,
            "--upstream-mirror",
            &mirror_ghcr,
        ],
    )?;
    let export_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    step(&ferry, &["verify", &bundle.to_string_lossy()])?;
    let verify_secs = t.elapsed().as_secs_f64();
    step(&ferry, &["inspect", &bundle.to_string_lossy()])?;
    let t = Instant::now();
    let receipt = out.join("receipt.json");
    step(
        &ferry,
        &[
            "import",
            &bundle.to_string_lossy(),
            "--registry",
            &target.host(),
            "--map",
            "docker.io=dockerhub",
            "--receipt",
            &receipt.to_string_lossy(),
        ],
    )?;
    let import_secs = t.elapsed().as_secs_f64();

    println!("\n== checking every digest at the target against the upstream");
    let mut checked = 0;
    rt.block_on(async {
        for (i, (_, source)) in set.images.iter().zip(&names) {
            let path = if source.starts_with("docker.io/") {
                format!("dockerhub/{}", i.repository)
            } else {
                format!("ghcr.io/{}", i.repository)
            };
            let repo = Repo {
                host: target.host(),
                path,
            };
            let m = client.get_manifest(&repo, &i.tag).await?;
            if Digest::of(&m.bytes) != i.top.digest {
                bail!(
                    "{source}: target has {}, upstream {}",
                    Digest::of(&m.bytes),
                    i.top.digest
                );
            }
            checked += 1;
            for c in &i.children {
                let m = client.get_manifest(&repo, &c.digest.to_string()).await?;
                if Digest::of(&m.bytes) != c.digest {
                    bail!("{source}@{}: digest differs at the target", c.digest);
                }
                checked += 1;
            }
            println!(
                "  {source} -> {}/{}:{}  {}",
                repo.host, repo.path, i.tag, i.top.digest
            );
        }
        Ok(())
    })?;
    let size = std::fs::metadata(&bundle).map(|m| m.len()).unwrap_or(0);
    println!("\n== demo summary");
    println!(
        "bundled   {} images ({} manifests checked byte-exact at the target)",
        set.images.len(),
        checked
    );
    println!("bundle    {} ({} bytes) + .sha256", bundle.display(), size);
    println!("timings   export {export_secs:.1}s, verify {verify_secs:.1}s, import {import_secs:.1}s, total {:.1}s", started.elapsed().as_secs_f64());
    println!(
        "mirror    http://{} (docker.io → dockerhub/…, ghcr.io → ghcr.io/…)",
        target.host()
    );
    println!("receipt   {}", receipt.display());
    println!("lock      {}", lock.display());
    if keep {
        println!("\nregistries kept running; press Ctrl-C to stop");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    Ok(())
}
