//! `cargo xtask dist`: one static `ferry` binary that crosses the gap alone.
//!
//! Preferred: `x86_64-unknown-linux-musl` (rustup target + Debian's
//! `musl-tools` for the C parts: zstd, ring). Where that target cannot be
//! installed, a glibc build with `crt-static`. Either way the result is
//! checked with `ldd` ("not a dynamic executable" / "statically linked") and
//! by running `ferry --version`, and written with its sha256 under
//! `target/dist/`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use ferry_bundle::Digest;

const MUSL: &str = "x86_64-unknown-linux-musl";
const GNU: &str = "x86_64-unknown-linux-gnu";

fn musl_ready() -> bool {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == MUSL)
        })
        .unwrap_or(false);
    if !installed {
        println!("xtask: adding the {MUSL} target with rustup");
        let ok = Command::new("rustup")
            .args(["target", "add", MUSL])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            println!("xtask: rustup could not add {MUSL}; falling back to a static glibc build");
            return false;
        }
    }
    if crate::ensure_tools(&[("musl-gcc", "musl-tools")], false).is_err()
        || !crate::on_path_pub("musl-gcc")
    {
        println!("xtask: musl-gcc (Debian's musl-tools) is missing; falling back to a static glibc build");
        return false;
    }
    true
}

pub fn run() -> Result<()> {
    let musl = musl_ready();
    let target = if musl { MUSL } else { GNU };
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.current_dir(crate::root()).args([
        "build",
        "--release",
        "-p",
        "ferry",
        "--target",
        target,
    ]);
    if musl {
        build.env("CC_x86_64_unknown_linux_musl", "musl-gcc");
    } else {
        build.env("RUSTFLAGS", "-C target-feature=+crt-static");
    }
    println!("xtask: cargo build --release -p ferry --target {target}");
    let st = build.status().context("failed to run cargo build")?;
    if !st.success() {
        bail!("the release build for {target} failed");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"));
    let bin = target_dir.join(target).join("release").join("ferry");
    let ldd = Command::new("ldd")
        .arg(&bin)
        .output()
        .context("failed to run ldd")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    if !(said.contains("not a dynamic executable") || said.contains("statically linked")) {
        bail!("{} is not static; ldd says:\n{said}", bin.display());
    }
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .context("failed to run the built binary")?;
    if !version.status.success() {
        bail!("{} --version failed", bin.display());
    }
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let dist = target_dir.join("dist");
    std::fs::create_dir_all(&dist)?;
    let name = format!(
        "ferry-{}-{}",
        env!("CARGO_PKG_VERSION"),
        if musl {
            "x86_64-linux-musl"
        } else {
            "x86_64-linux-gnu-static"
        }
    );
    let out = dist.join(&name);
    std::fs::copy(&bin, &out).with_context(|| format!("copy to {}", out.display()))?;
    let bytes = std::fs::read(&out)?;
    let sum = format!("{}  {name}\n", Digest::of(&bytes).hex());
    std::fs::write(dist.join(format!("{name}.sha256")), &sum)?;
    println!("\n{version}: {} ({} bytes)", out.display(), bytes.len());
    println!("ldd: {}", said.trim());
    print!("sha256: {sum}");
    Ok(())
}
