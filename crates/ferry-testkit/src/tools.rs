//! External tools as independent clients: `skopeo` reads and copies what a
//! registry holds without any ferry code involved.
//!
//! Every helper runs the tool synchronously and, on failure, returns an error
//! that carries the command line, the exit status and the tool's stderr.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `program args…` to completion with no stdin and returns its output;
/// fails (with the command, the status and the stderr) unless it exits 0.
pub fn run_tool<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(out)
}

/// `docker://REF` for a bare reference, the reference itself when it already
/// names the `docker://` transport.
fn docker_ref(reference: &str) -> String {
    if reference.starts_with("docker://") {
        reference.to_string()
    } else {
        format!("docker://{reference}")
    }
}

/// The exact manifest (or index) bytes a registry serves for `reference`
/// (`host/repo:tag` or `host/repo@sha256:…`, with or without `docker://`):
/// `skopeo inspect --raw --tls-verify=false docker://REF`.
pub fn skopeo_inspect_raw(reference: &str) -> Result<Vec<u8>> {
    let out = run_tool(
        "skopeo",
        [
            "inspect",
            "--raw",
            "--tls-verify=false",
            &docker_ref(reference),
        ],
    )?;
    Ok(out.stdout)
}

/// Copies everything `src` names (an index with all its children) to `dst`,
/// keeping digests: `skopeo copy --all --preserve-digests SRC DST`, with TLS
/// verification off on whichever side is a `docker://` registry.
///
/// Both arguments carry their transport (`docker://…`, `oci:DIR[:REF]`,
/// `oci-archive:FILE[:REF]`, `dir:DIR`). The default signature policy is not
/// consulted (`--insecure-policy`), so a machine without
/// `/etc/containers/policy.json` works too.
pub fn skopeo_copy_all(src: &str, dst: &str) -> Result<()> {
    let mut args = vec![
        "--insecure-policy".to_string(),
        "copy".into(),
        "--all".into(),
        "--preserve-digests".into(),
    ];
    if src.starts_with("docker://") {
        args.push("--src-tls-verify=false".into());
    }
    if dst.starts_with("docker://") {
        args.push("--dest-tls-verify=false".into());
    }
    args.push(src.into());
    args.push(dst.into());
    run_tool("skopeo", &args)?;
    Ok(())
}

/// The tags of `repository` (`host/repo`, with or without `docker://`):
/// `skopeo list-tags --tls-verify=false docker://REPO`, in the order skopeo gives.
pub fn skopeo_list_tags(repository: &str) -> Result<Vec<String>> {
    let out = run_tool(
        "skopeo",
        ["list-tags", "--tls-verify=false", &docker_ref(repository)],
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("skopeo list-tags printed non-JSON for {repository}"))?;
    Ok(v["Tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}
