//! The command line's grammar: clap's definitions of the commands and their flags, and how the
//! flags every spec command shares become `compose::ops::SpecOptions`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use compose::ops::{self, SpecOptions};

#[derive(Parser)]
#[command(name = "compose", version, about = "Declarative, reproducible OCI image composer")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Clone)]
pub struct SpecArgs {
    /// The spec file.
    #[arg(default_value = "compose.kdl")]
    pub spec: PathBuf,
    /// Only this image of the spec (and what it needs).
    #[arg(long)]
    pub image: Option<String>,
    /// The store (default `cache/` in the current directory).
    #[arg(long, env = "COMPOSE_CACHE_DIR", default_value = "cache")]
    pub cache_dir: PathBuf,
    /// Worker threads (default: one per core).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Where to download a repository's packages from: NAME=URL (repeatable). Before
    /// COMPOSE_MIRROR_<NAME> and the host's apt sources.
    #[arg(long = "mirror", value_name = "NAME=URL", value_parser = parse_mirror)]
    pub mirrors: Vec<(String, String)>,
    /// A value for the spec's `arg "NAME"` (repeatable), as `docker build --build-arg`.
    #[arg(long = "build-arg", value_name = "NAME=VALUE", value_parser = parse_build_arg)]
    pub build_args: Vec<(String, String)>,
    /// A secret for the steps that declare it (repeatable), as BuildKit's: `id=ID,src=FILE`,
    /// `id=ID,env=VARIABLE`, or `ID` (the variable of that name). Never in a key, an output, a
    /// log or a record.
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    pub secrets: Vec<String>,
    /// Fail rather than change the lockfile.
    #[arg(long)]
    pub locked: bool,
    /// Speak plain HTTP to this registry (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure: Vec<String>,
    /// A cache shared by a team: `http(s)://…` (Bazel remote-cache protocol: bazel-remote,
    /// nginx WebDAV, S3 gateways) or `oci://REGISTRY/REPO` (an OCI registry repository).
    #[arg(long, env = "COMPOSE_REMOTE_CACHE", value_name = "URL")]
    pub remote_cache: Option<String>,
    /// Read-only (`ro`) or read-write (`rw`, the default) use of the remote cache.
    #[arg(long, env = "COMPOSE_REMOTE_CACHE_MODE", value_enum, default_value = "rw")]
    pub remote_cache_mode: RemoteMode,
    /// Accept remote records signed by this public key (`NAME:BASE64`, repeatable; also
    /// COMPOSE_TRUSTED_KEYS, separated by spaces). With any, unsigned records are ignored.
    #[arg(long = "trusted-key", value_name = "NAME:KEY")]
    pub trusted_keys: Vec<String>,
    /// Sign the records uploaded to the remote cache with this secret key (default: the one key
    /// `compose cache keygen` put in CACHE/keys/).
    #[arg(long, env = "COMPOSE_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Use no network: everything must be locked and in the store.
    #[arg(long)]
    pub offline: bool,
    /// Compress every image's layers so, whatever the spec's `compression` says.
    #[arg(long, value_enum, value_name = "gzip|zstd")]
    pub compression: Option<CompressionArg>,
    /// Most layers an image may have (packages are merged past it); the spec's `build {
    /// max-layers N }` otherwise, else 99.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=127))]
    pub max_layers: Option<u64>,
}

fn parse_mirror(s: &str) -> Result<(String, String), String> {
    compose::debian::repository::sources::parse_mirror_flag(s).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RemoteMode {
    Ro,
    Rw,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Oci,
    OciArchive,
    DockerArchive,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build the images of a spec into `out/`.
    Build {
        #[command(flatten)]
        spec: SpecArgs,
        /// Output directory.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "oci")]
        format: FormatArg,
        /// Also push the image to REF (`REGISTRY/REPO:TAG`).
        #[arg(long, value_name = "REF")]
        push: Option<String>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Run every build step again, even when cached, and fail naming those whose output
        /// differs (with the first differing path).
        #[arg(long)]
        check: bool,
    },
    /// Build (if needed) and push an image of the spec to a registry.
    // `push [SPEC] REF`: an optional positional before the required one (`push REF` takes the
    // default spec).
    #[command(allow_missing_positional = true)]
    Push {
        #[command(flatten)]
        spec: SpecArgs,
        /// Where to: `REGISTRY/REPO:TAG`.
        reference: String,
        #[arg(long)]
        json: bool,
    },
    /// Resolve the spec's packages and write its lockfile (`SPEC.lock`).
    Lock {
        #[command(flatten)]
        spec: SpecArgs,
        /// Re-resolve to the newest versions: every image, or those holding these packages.
        #[arg(long, num_args = 0.., value_name = "PKG")]
        update: Option<Vec<String>>,
    },
    /// Show the derivation DAG and what is cached.
    Plan {
        #[command(flatten)]
        spec: SpecArgs,
        /// Graphviz output.
        #[arg(long, conflicts_with = "json")]
        dot: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Say why each derivation the next build would run is not in the store: what changed in
    /// its inputs since it last built here.
    Explain {
        #[command(flatten)]
        spec: SpecArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Write the spec a Dockerfile means, listing what needs review.
    Import {
        /// The Dockerfile (its directory is the build context).
        dockerfile: PathBuf,
        /// Where to write the spec (default: compose.kdl beside the Dockerfile).
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
        /// Keep `FROM debian:…` as a registry base instead of composing it from the archive.
        #[arg(long)]
        registry_base: bool,
        /// Replace an existing spec.
        #[arg(long)]
        force: bool,
        /// JSON output (the notes).
        #[arg(long)]
        json: bool,
    },
    /// Inspect and maintain the store.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
}

impl Command {
    /// Does it run build steps, or remove what they made (which, for a user other than root,
    /// belongs to its subordinate ids)?
    pub fn may_run_steps(&self) -> bool {
        match self {
            Command::Build { .. } | Command::Lock { .. } | Command::Push { .. } => true,
            Command::Cache { action } => matches!(action, CacheAction::Gc { .. } | CacheAction::Verify { .. }),
            _ => false,
        }
    }
}

#[derive(Subcommand)]
pub enum CacheAction {
    /// Re-hash every blob and check every record.
    Verify {
        #[arg(long, env = "COMPOSE_CACHE_DIR", default_value = "cache")]
        cache_dir: PathBuf,
        /// Remove what is damaged (it will be rebuilt).
        #[arg(long)]
        repair: bool,
    },
    /// Remove what no build used recently.
    Gc {
        #[arg(long, env = "COMPOSE_CACHE_DIR", default_value = "cache")]
        cache_dir: PathBuf,
        /// Keep what was used within this many days.
        #[arg(long, default_value_t = 7.0)]
        max_age_days: f64,
    },
    /// Make a key pair for signing remote cache records: the secret key goes to
    /// CACHE/keys/NAME.secret (or --out), the public key (for --trusted-key) to stdout.
    Keygen {
        /// The key's name (letters, digits, `.`, `_`, `-`), e.g. `ci-1`; default: this host's name.
        name: Option<String>,
        #[arg(long, env = "COMPOSE_CACHE_DIR", default_value = "cache")]
        cache_dir: PathBuf,
        /// Where to write the secret key (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Sizes and counts.
    Stats {
        #[arg(long, env = "COMPOSE_CACHE_DIR", default_value = "cache")]
        cache_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn parse_build_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{s}`")),
    }
}

pub fn spec_options(a: &SpecArgs) -> Result<SpecOptions, ops::Error> {
    if let Some(j) = a.jobs {
        if j == 0 {
            return Err(ops::Error::Usage("--jobs must be at least 1".into()));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(j)
            .build_global()
            .map_err(|e| ops::Error::Usage(format!("cannot start {j} worker threads: {e}")))?;
    }
    let mut o = SpecOptions::new(a.spec.clone(), a.cache_dir.clone());
    o.image = a.image.clone();
    o.mirrors = a.mirrors.clone();
    o.args = a.build_args.clone();
    for s in &a.secrets {
        let (id, value) = ops::parse_secret(s, &|v| std::env::var(v).ok())?;
        o.secrets.insert(id, value);
    }
    o.locked = a.locked;
    o.offline = a.offline;
    o.max_layers = a.max_layers.map(|n| n as usize);
    o.compression = a.compression.map(|c| match c {
        CompressionArg::Gzip => compose::layer::Compression::Gzip,
        CompressionArg::Zstd => compose::layer::Compression::Zstd,
    });
    o.insecure = a.insecure.clone();
    o.remote_cache = a.remote_cache.clone().filter(|u| !u.is_empty());
    o.trusted_keys = a.trusted_keys.clone();
    if let Ok(v) = std::env::var("COMPOSE_TRUSTED_KEYS") {
        if !v.trim().is_empty() {
            o.trusted_keys.push(v);
        }
    }
    o.signing_key = a.signing_key.clone().filter(|p| !p.as_os_str().is_empty());
    o.remote_mode = match a.remote_cache_mode {
        RemoteMode::Ro => compose::remote::Mode::ReadOnly,
        RemoteMode::Rw => compose::remote::Mode::ReadWrite,
    };
    Ok(o)
}
