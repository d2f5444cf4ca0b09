//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Carry a Kubernetes platform's dependencies across an air gap.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Print one JSON event per line on stdout instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less output: errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve, pull and write a bundle (+ OUT.sha256).
    Export(ExportArgs),
    /// Resolve tags to digests and write the lock file only.
    Lock(LockArgs),
    /// Check a bundle offline: every byte hashed, graph complete.
    Verify(VerifyArgs),
    /// List what a bundle carries.
    Inspect(InspectArgs),
    /// Verify and stream a bundle into a registry.
    Import(Box<ImportArgs>),
    /// Serve a mirror store as a read-only OCI registry and file server.
    Serve(ServeArgs),
    /// Discover image references in rendered manifests (one per line, usable as a `list:` file).
    Images(ImagesArgs),
    /// Manage bundle signing keys (minisign format).
    Key(KeyArgs),
    /// Take out of a mirror what ferry put there and no kept lock needs: plan, review, apply.
    Prune(PruneArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CompressionArg {
    Zstd,
    Gzip,
    None,
}

/// Connection settings shared by every command that talks to registries.
#[derive(Debug, Args, Clone)]
pub struct NetArgs {
    /// Speak plain HTTP to this registry host[:port] (repeatable; loopback hosts always do).
    #[arg(long = "plain-http", value_name = "HOST")]
    pub plain_http: Vec<String>,
    /// Trust this CA bundle (PEM) for TLS.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(
        long,
        visible_alias = "cert",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS (`--key` is the bundle signing key on `import`).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Do not verify TLS certificates (for testing only).
    #[arg(long)]
    pub insecure: bool,
    /// Concurrent transfers.
    #[arg(long, short = 'j', default_value_t = 4, value_name = "N")]
    pub jobs: usize,
    /// Attempts per request before giving up (retries back off, honour Retry-After).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub attempts: u32,
    /// Seconds a request may go without progress (connecting, waiting for
    /// the answer, between two reads of a body) before it is given up and
    /// retried; uploads also get time for their size at 64 KiB/s.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Docker config with credentials (default: $DOCKER_CONFIG/config.json or ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The bundle spec (with --from: the images to re-export, and the `verify:` policy
    /// re-checked offline over the signatures carried).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "bundle.yaml",
        required_unless_present = "from"
    )]
    pub spec: Option<PathBuf>,
    /// Re-export, offline, from a bundle (file, parts manifest or first part; verified
    /// whole first) or a mirror store directory: a subset given by -f or --lock (digests),
    /// else everything it holds. No registry is contacted.
    #[arg(long, value_name = "BUNDLE|STORE", conflicts_with_all = ["locked", "platforms", "cache", "no_cache", "upstream_mirror", "allow_missing_drivers", "no_referrers", "dry_run", "plan_json"])]
    pub from: Option<PathBuf>,
    /// With --from BUNDLE: its signature must verify with this public key.
    #[arg(long, value_name = "PUB", requires = "from")]
    pub source_key: Option<PathBuf>,
    /// With --from BUNDLE: re-verify its image signatures against this policy file offline
    /// (as `ferry verify --policy`).
    #[arg(long, value_name = "FILE", requires = "from")]
    pub policy: Option<PathBuf>,
    /// Output bundle file.
    #[arg(short, long, value_name = "OUT.tar.zst")]
    pub output: PathBuf,
    /// Lock file: pins tags to digests; created or updated unless --locked. With --from:
    /// the items to re-export, by digest (read only).
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Refuse to export if anything resolves differently from the lock file.
    #[arg(long, requires = "lock")]
    pub locked: bool,
    /// Keep only these platforms of every index (os/arch[/variant], repeatable).
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platforms: Vec<String>,
    /// Outer compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::Zstd)]
    pub compression: CompressionArg,
    /// Compression level (zstd 1-19, gzip 0-9).
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,
    /// Content-addressed blob cache (default: $XDG_CACHE_HOME/ferry or ~/.cache/ferry).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Keep no blob cache: stream every image blob from the registry straight into the
    /// bundle (written once, no second copy on disk). A re-run downloads everything again.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
    /// Fetch SRC's content from URL instead (a pull-through proxy), keeping SRC in the bundle. SRC is a registry host, or an http(s):// URL prefix for charts, drivers, plugins and files.
    #[arg(long = "upstream-mirror", value_name = "SRC=URL")]
    pub upstream_mirror: Vec<String>,
    /// A Falco driver missing upstream is a warning, not an error (exit 3).
    #[arg(long)]
    pub allow_missing_drivers: bool,
    /// Differential bundle: leave out every blob the other side already has, per FILE
    /// (the `--receipt` of an import there, or the lock of the bundle it last imported).
    /// Repeatable, one per destination: a blob any of them lacks travels.
    #[arg(long, value_name = "RECEIPT|LOCK")]
    pub since: Vec<PathBuf>,
    /// Cut the bundle into parts for removable media: OUT.part-000, … plus the parts manifest
    /// (OUT without .tar.zst, + .parts.json). SIZE: 700MiB, 4GiB, 4.7G, bytes, or `fat32`
    /// (4 GiB - 1 byte, the largest file FAT32 holds).
    #[arg(long, value_name = "SIZE", value_parser = parse_split)]
    pub split: Option<u64>,
    /// Sign ferry/bundle.json with this minisign secret key (password from FERRY_KEY_PASSWORD if encrypted).
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    /// Carry no provenance: skip discovering signatures, attestations and SBOMs
    /// (cosign `sha256-<hex>.sig/.att/.sbom` tags, OCI 1.1 referrers) of the images.
    #[arg(long)]
    pub no_referrers: bool,
    /// Resolve and print the plan (what is fetched from where, bytes to download and
    /// to write, room on the output's and the cache's filesystems); download and write
    /// nothing, not even the lock.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the plan as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub plan_json: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// `--split SIZE`, checked at parse time.
fn parse_split(text: &str) -> Result<u64, String> {
    ferry_bundle::parts::parse_part_size(text).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The bundle spec.
    #[arg(short = 'f', long = "file", value_name = "bundle.yaml")]
    pub spec: PathBuf,
    /// Where to write the lock.
    #[arg(short, long, default_value = "ferry.lock", value_name = "FILE")]
    pub output: PathBuf,
    /// Keep only these platforms of every index.
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platforms: Vec<String>,
    /// Fetch SRC's content from URL instead.
    #[arg(long = "upstream-mirror", value_name = "SRC=URL")]
    pub upstream_mirror: Vec<String>,
    /// A Falco driver missing upstream is a warning, not an error (exit 3).
    #[arg(long)]
    pub allow_missing_drivers: bool,
    /// Content-addressed blob cache (charts and files are fetched to resolve them).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Lock no provenance (signatures, attestations, SBOMs, OCI 1.1 referrers).
    #[arg(long)]
    pub no_referrers: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle file, or a split bundle's parts manifest (*.parts.json) or first part (*.part-000).
    pub bundle: PathBuf,
    /// Require a valid signature by this minisign public key; checked before anything else is read.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
    /// Re-verify every carried image signature offline against this signature policy (a spec or a
    /// file with a `verify:` section); without it, the policy the bundle carries is re-checked.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The registry to prune: [http(s)://]HOST[:PORT] (the receipts' target).
    #[arg(long, value_name = "URL", conflicts_with_all = ["store", "apply"], required_unless_present_any = ["store", "apply"])]
    pub registry: Option<String>,
    /// The `ferry serve` store to prune.
    #[arg(long, value_name = "DIR", conflicts_with = "apply")]
    pub store: Option<PathBuf>,
    /// A receipt ferry wrote at this target (`import --receipt`); repeatable. Only what receipts list may go.
    #[arg(
        long = "receipt",
        value_name = "FILE",
        required_unless_present = "apply"
    )]
    pub receipts: Vec<PathBuf>,
    /// A lock file whose content stays (repeatable); everything it pins, and everything that references, stays.
    #[arg(long = "keep", value_name = "LOCK", required_unless_present = "apply")]
    pub keep: Vec<PathBuf>,
    /// Write the plan here (JSON, reviewable) and change nothing.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "apply",
        conflicts_with = "apply"
    )]
    pub plan: Option<PathBuf>,
    /// Execute exactly this plan, after checking the target has not changed since.
    #[arg(long, value_name = "FILE")]
    pub apply: Option<PathBuf>,
    /// Registry user (password in FERRY_PASSWORD or on stdin).
    #[arg(long, env = "FERRY_USERNAME", value_name = "USER")]
    pub username: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle file, or a split bundle's parts manifest (*.parts.json) or first part (*.part-000).
    pub bundle: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The bundle file, or a split bundle's parts manifest (*.parts.json) or first part (*.part-000).
    pub bundle: PathBuf,
    /// Target registry: [http(s)://]HOST[:PORT][/PREFIX].
    #[arg(long, value_name = "URL", required_unless_present_any = ["files", "store", "archives"])]
    pub registry: Option<String>,
    /// The first node, before any registry exists: write one OCI archive per image into DIR
    /// (`ctr -n k8s.io images import`, the k3s/RKE2 agent `images/` directory, `podman load`),
    /// digests intact; nothing else is imported.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["registry", "store", "files", "emit_config", "dry_run", "receipt"])]
    pub archives: Option<PathBuf>,
    /// With --archives: keep only this platform of every multi-arch image (repeatable), e.g. linux/amd64.
    #[arg(
        long = "archive-platform",
        value_name = "OS/ARCH",
        requires = "archives"
    )]
    pub archive_platforms: Vec<String>,
    /// Import into a local mirror store (an OCI layout plus the file tree) that `ferry serve` serves.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["registry", "files"])]
    pub store: Option<PathBuf>,
    /// With --store: the URL clients will reach `ferry serve` at (for --emit-config: registry and file server).
    #[arg(long, value_name = "URL", requires = "store")]
    pub mirror_url: Option<String>,
    /// File server target for charts, drivers, plugins and files: a directory, or http(s)://HOST/PATH (HTTP PUT / WebDAV).
    #[arg(long, value_name = "DIR|URL")]
    pub files: Option<String>,
    /// File server user (password from FERRY_FILES_PASSWORD).
    #[arg(long, env = "FERRY_FILES_USERNAME", value_name = "USER")]
    pub files_username: Option<String>,
    /// Trust this CA bundle (PEM) for an https:// file server.
    #[arg(long, value_name = "FILE")]
    pub files_ca: Option<PathBuf>,
    /// Write client configuration (containerd hosts.toml, Trivy, Falco, OpenSearch, Helm, CK8s) into DIR.
    #[arg(long, value_name = "DIR")]
    pub emit_config: Option<PathBuf>,
    /// The file server's address as clients see it (for the emitted configuration).
    #[arg(long, value_name = "URL")]
    pub files_url: Option<String>,
    /// The file server's IP, for the emitted CK8s network policy.
    #[arg(long, value_name = "IP")]
    pub files_ip: Option<std::net::IpAddr>,
    /// The file server's port, for the emitted CK8s network policy.
    #[arg(long, value_name = "PORT")]
    pub files_port: Option<u16>,
    /// Also emit a containerd `_default` hosts.toml (every other registry through the mirror).
    #[arg(long)]
    pub emit_default: bool,
    /// CA file path as the nodes see it, written into hosts.toml (`ca`).
    #[arg(long, value_name = "PATH")]
    pub emit_ca: Option<String>,
    /// Client certificate and key paths as the nodes see them, written into hosts.toml (`client`).
    #[arg(long, value_name = "CERT,KEY", value_delimiter = ',', num_args = 2)]
    pub emit_client: Vec<String>,
    /// With --emit-config: the pull-only user the nodes authenticate as (password in
    /// FERRY_EMIT_PASSWORD, or on stdin with --emit-password-stdin). Never the import's push credential.
    #[arg(long, value_name = "USER", requires = "emit_config")]
    pub emit_username: Option<String>,
    /// Read the --emit-username password from stdin.
    #[arg(long, requires = "emit_username", conflicts_with = "password_stdin")]
    pub emit_password_stdin: bool,
    /// Write `skip_verify = true` into hosts.toml.
    #[arg(long)]
    pub emit_skip_verify: bool,
    /// Map a source host or host/path prefix to a repository prefix in the target (repeatable).
    #[arg(long = "map", value_name = "SRC=DST")]
    pub maps: Vec<String>,
    /// Drop the source host from target repository names.
    #[arg(long)]
    pub flatten: bool,
    /// Keep every target repository within N path components (GitLab, Harbor): the deeper
    /// components are joined with `-` into the last; two sources on one name are refused.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub max_path_depth: Option<usize>,
    /// Print the plan and stop: what lands where, what the target already has, and the
    /// preflight (every target repository accepts a push; the store has room).
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the plan and the preflight as JSON to FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "archives")]
    pub plan_json: Option<PathBuf>,
    /// Write what the target now holds (per repository) to FILE.
    #[arg(long, value_name = "FILE")]
    pub receipt: Option<PathBuf>,
    /// Target registry user (password from FERRY_PASSWORD or --password-stdin).
    #[arg(long, env = "FERRY_USERNAME", value_name = "USER")]
    pub username: Option<String>,
    /// Read the target registry password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Upload blobs larger than this in chunks of this many MiB.
    #[arg(long, default_value_t = 4, value_name = "MiB")]
    pub chunk_mib: u64,
    /// Require a valid signature by this minisign public key; an unsigned, wrongly signed or altered bundle is refused before anything is loaded.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
    /// Re-verify every carried image signature offline against this signature policy before
    /// anything lands (a spec or a file with a `verify:` section); without it, the policy the
    /// bundle carries is re-checked.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Push no provenance from the bundle (signatures, attestations, SBOMs,
    /// OCI 1.1 referrers), and leave the sha256-<hex> referrers fallback tags alone.
    #[arg(long)]
    pub no_referrers: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The store directory (written by `ferry import BUNDLE --store DIR`).
    pub dir: PathBuf,
    /// Listen address of the registry (and of the file tree, without --files-listen).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: String,
    /// Serve HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require HTTP Basic credentials from this htpasswd file (bcrypt entries, `htpasswd -B`).
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// Serve the file tree on this second address instead of the registry's.
    #[arg(long, value_name = "ADDR")]
    pub files_listen: Option<String>,
    /// Allow a non-loopback address without both TLS and --htpasswd.
    #[arg(long)]
    pub insecure_listen: bool,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    pub source: ImagesSource,
}

#[derive(Debug, Subcommand)]
pub enum ImagesSource {
    /// Every `image:` in rendered YAML streams (`helm template`, `helmfile template` output); `-` reads stdin.
    FromManifests {
        /// The files.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// The images a chart references.
    FromChart {
        /// The chart archive.
        chart: std::path::PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a minisign key pair: NAME.key (secret, mode 0600) and NAME.pub.
    ///
    /// The secret key is encrypted with the password in FERRY_KEY_PASSWORD;
    /// --no-password writes it unencrypted (for scheduled jobs). Existing files are never overwritten.
    Generate {
        /// Base name of the key files (NAME.key and NAME.pub).
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
        /// Store the secret key unencrypted (protect the file by other means).
        #[arg(long)]
        no_password: bool,
    },
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn import_key_is_the_signing_key_and_mtls_has_its_own_flags() {
        let cli = Cli::try_parse_from([
            "ferry",
            "import",
            "b.tar.zst",
            "--registry",
            "r:5000",
            "--key",
            "ops.pub",
            "--cert",
            "c.pem",
            "--client-key",
            "c.key",
        ])
        .unwrap();
        let Command::Import(a) = cli.command else {
            panic!("not import")
        };
        assert_eq!(a.key.as_deref(), Some(std::path::Path::new("ops.pub")));
        assert_eq!(
            a.net.client_cert.as_deref(),
            Some(std::path::Path::new("c.pem"))
        );
        assert_eq!(
            a.net.client_key.as_deref(),
            Some(std::path::Path::new("c.key"))
        );
    }
}
