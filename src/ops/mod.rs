//! Top-level operations behind each command (cargo's `ops`): load the spec, scan sources, plan,
//! execute, export. `main.rs` parses flags, calls one of these and prints the result.
//!
//! This module (`mod.rs`) owns what every command shares: the options, the one error type with
//! its exit codes, and [`load_and_plan`] (parse, load bases, scan sources, lock, plan). Each
//! command's operation has a file of its own: [`build`](mod@build) (build and push), [`lock`](mod@lock), [`plan`]
//! (`compose plan`), [`explain`](mod@explain), [`cache`] (keys and the shared cache).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clients::Clients;
use crate::exec::BuildError;
use crate::image::{Format, ImageError};
use crate::lock::{LockError, Lockfile};
use crate::plan::Plan;
use crate::resolution::{MirrorConfig, ResolutionError};
use crate::source::{Scanned, Scanner, SourceError};
use crate::spec::{self, FileOp, SpecDiagnostic, SpecError, SpecFile};
use crate::store::{Store, StoreError};
use crate::util::chain_message;

pub mod build;
pub mod cache;
pub mod explain;
pub mod import;
pub mod lock;
pub mod plan;

pub use self::build::{build, BuildSummary, BuiltImage};
pub use self::cache::{default_key_name, keygen, keys_dir, open_remote};
pub use self::explain::{explain, Explanation};
pub use self::import::import;
pub use self::lock::{lock, LockMode};
pub use self::plan::{plan_report, PlanNode, PlanReport};
pub use crate::image::Pushed;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] SpecError),
    #[error("{0}")]
    #[diagnostic(code(compose::usage))]
    Usage(String),
    /// A base image could not be had: the network, the registry or credentials (exit 1).
    #[error(transparent)]
    #[diagnostic(code(compose::base_unavailable), help("check the network, the registry's address and the credentials (registry auth.json, --insecure-registry); --offline builds from the store"))]
    BaseUnavailable(Box<crate::base::LoadError>),
    #[error("the store at `{path}` could not be used")]
    #[diagnostic(code(compose::store))]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    #[diagnostic(code(compose::store))]
    StoreOp(#[from] StoreError),
    /// A bug: something that cannot happen did.
    #[error("internal error: {0}")]
    #[diagnostic(code(compose::internal))]
    Internal(String),
    #[error("{message}")]
    #[diagnostic(code(compose::key))]
    Key {
        message: String,
        #[source]
        source: crate::remote::sign::KeyError,
    },
    #[error("cannot use the shared cache")]
    #[diagnostic(code(compose::remote))]
    Remote(#[source] crate::remote::RemoteError),
    #[error(transparent)]
    #[diagnostic(code(compose::source))]
    Source(#[from] SourceError),
    #[error(transparent)]
    #[diagnostic(code(compose::build))]
    Build(BuildError),
    /// A step failed, or its result differs from its pin.
    #[error("{error}")]
    #[diagnostic(code(compose::step))]
    Step {
        error: Box<BuildError>,
        #[help]
        help: Option<String>,
    },
    #[error("{} step(s) are not reproducible: {}", .0.len(), .0.iter().map(|m| format!("{} (first difference: {}; {} then {})", m.step, m.path, m.before, m.after)).collect::<Vec<_>>().join("; "))]
    #[diagnostic(code(compose::check), help("a step must give the same bytes from the same inputs: look for clocks, random numbers, unordered output or host data in what it writes; with caches, for what it takes from them, and for input mtimes written into its output (tar, zip, .pyc: a changed input has the time it changed while caches are kept)"))]
    NotReproducible(Vec<crate::exec::Mismatch>),
    #[error("{} fixed-output step(s) gave another result when run again, so there is nothing to pin: {}", .0.len(), .0.iter().map(|m| format!("{} (first difference: {}; {} then {})", m.step, m.path, m.before, m.after)).collect::<Vec<_>>().join("; "))]
    #[diagnostic(code(compose::lock::not_reproducible), help("a fixed-output step must give the same bytes each time it runs. The usual causes: pip byte-compiles (`pip install --no-compile`, or `env PYTHONDONTWRITEBYTECODE=\"1\"`); npm/yarn write timestamps or caches into the output (`npm ci --no-audit --no-fund`, keep `~/.npm` and yarn's cache out of `output`); archives and logs hold times (`tar --mtime=@0 --sort=name`, `zip -X`); downloads of a moving version (pin it)"))]
    PinNotReproducible(Vec<crate::exec::Mismatch>),
    #[error("fixed-output step `{step}` has no pin in `{path}` for its current recipe, and --locked forbids changing the lockfile")]
    #[diagnostic(code(compose::lock::locked), help("run `compose lock` (or build without --locked) to run it and pin its result"))]
    StepUnpinned { path: PathBuf, step: String },
    #[error(transparent)]
    #[diagnostic(code(compose::output))]
    Image(#[from] ImageError),
    #[error(transparent)]
    #[diagnostic(code(compose::lock))]
    Lock(#[from] LockError),
    #[error("the lockfile `{path}` is out of date for image `{image}` ({why}), and --locked forbids changing it")]
    #[diagnostic(code(compose::lock::locked), help("run `compose lock` (or build without --locked) to update it"))]
    Locked { path: PathBuf, image: String, why: String },
    #[error("cannot push to `{target}`")]
    #[diagnostic(code(compose::push))]
    Push {
        target: String,
        #[source]
        source: Box<crate::image::PushError>,
        #[help]
        help: Option<String>,
    },
    #[error("cannot resolve the packages of image `{image}`")]
    #[diagnostic(code(compose::resolve))]
    Resolution {
        image: String,
        #[source]
        source: Box<ResolutionError>,
    },
}

/// The help for a push to `target` that failed with `source`: a registry that answers in plain
/// HTTP where TLS was spoken (rustls's "received corrupt message of type InvalidContentType")
/// is one to name with `--insecure-registry`.
pub(crate) fn push_help(target: &str, source: &crate::image::PushError) -> Option<String> {
    let words = crate::util::chain_message(source);
    let plain_http = ["InvalidContentType", "corrupt message", "wrong version number", "http2 error: connection error"];
    plain_http.iter().any(|w| words.contains(w)).then(|| {
        let host = target.split('/').next().unwrap_or(target);
        format!(
            "`{host}` answered in plain HTTP, not TLS: if it is a registry you trust on your own network (a local one on \
             127.0.0.1:5000), push with `--insecure-registry {host}`"
        )
    })
}

impl From<BuildError> for Error {
    fn from(e: BuildError) -> Error {
        match e {
            BuildError::StepFailed { .. }
            | BuildError::StepStopped { .. }
            | BuildError::MissingSecret { .. }
            | BuildError::FixedOutputChanged { .. }
            | BuildError::Sandbox { .. } => {
                let help = e.help();
                Error::Step { error: Box::new(e), help }
            }
            e => Error::Build(e),
        }
    }
}

impl Error {
    /// User errors (the spec, lockfile or command line is wrong) exit with 2, the rest with 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec(_)
            | Error::Usage(_)
            | Error::Locked { .. }
            | Error::StepUnpinned { .. }
            | Error::Lock(LockError::Parse { .. } | LockError::Version { .. })
            | Error::Source(SourceError::BadIgnore { .. }) => 2,
            Error::Resolution { source, .. } if matches!(**source, ResolutionError::Spec(_) | ResolutionError::Mirror(_)) => 2,
            // A key that does not parse, a key file named on the command line that is not there,
            // a cache URL that is not one: the command line is wrong. A key file that exists but
            // cannot be read or written is the machine's problem.
            Error::Key { source: crate::remote::sign::KeyError::Io(e), .. } if e.source.kind() != std::io::ErrorKind::NotFound => 1,
            Error::Key { .. } => 2,
            Error::Remote(crate::remote::RemoteError::Url(_) | crate::remote::RemoteError::Failed { .. }) => 2,
            // A secret the command line did not give.
            Error::Step { error, .. } if matches!(**error, BuildError::MissingSecret { .. }) => 2,
            // As a shell reports a command ended by SIGINT.
            Error::Build(BuildError::Interrupted) => 130,
            _ => 1,
        }
    }
}

/// Options shared by commands that load a spec.
#[derive(Debug, Clone, Default)]
pub struct SpecOptions {
    pub spec: PathBuf,
    pub image: Option<String>,
    pub cache_dir: PathBuf,
    /// Where images are exported (`--out`, default `out`): never read as a copy source.
    pub out_dir: PathBuf,
    /// `--mirror NAME=URL`.
    pub mirrors: Vec<(String, String)>,
    /// `--build-arg NAME=VALUE`: values of the spec's `arg`s.
    pub args: Vec<(String, String)>,
    /// Fail rather than change the lockfile.
    pub locked: bool,
    /// Use no network.
    pub offline: bool,
    /// `--max-layers`: layer budget per image, over the spec's `build { max-layers }`.
    pub max_layers: Option<usize>,
    /// `--compression`: every image's layers compressed so, whatever the spec says.
    pub compression: Option<crate::layer::Compression>,
    /// Root of the filesystem whose apt sources give mirrors (`/`).
    pub host_root: PathBuf,
    /// Registries (`HOST[:PORT]`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// A shared cache (`http(s)://…`, Bazel remote-cache protocol).
    pub remote_cache: Option<String>,
    pub remote_mode: crate::remote::Mode,
    /// Public keys (`NAME:BASE64`) whose signed records are accepted; none = unsigned accepted.
    pub trusted_keys: Vec<String>,
    /// Secret key file to sign uploaded records with (default: the one key in `CACHE/keys/`).
    pub signing_key: Option<PathBuf>,
    /// `--secret`: values of the steps' secrets.
    pub secrets: crate::exec::Secrets,
}

/// One `--secret` argument, as BuildKit takes it: `id=ID,src=FILE`, `id=ID,env=VARIABLE`, or `ID`
/// alone (the variable of that name); `env` looks a variable up. Returns the id and the value.
pub fn parse_secret(arg: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(String, Vec<u8>), Error> {
    let bad = |why: String| Error::Usage(format!("--secret `{arg}`: {why} (expected id=ID,src=FILE or id=ID,env=VARIABLE)"));
    let (mut id, mut src, mut var) = (None, None, None);
    if !arg.contains('=') {
        id = Some(arg.to_string());
        var = Some(arg.to_string());
    } else {
        for part in arg.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("env", v)) => var = Some(v.to_string()),
                Some(("type", "file" | "env")) => {}
                _ => return Err(bad(format!("`{part}` is not id=, src= or env="))),
            }
        }
    }
    let id = id.filter(|i| !i.is_empty()).ok_or_else(|| bad("no id".into()))?;
    let value = match (src, var) {
        (Some(_), Some(_)) => return Err(bad("both src= and env=".into())),
        (Some(path), None) => std::fs::read(&path).map_err(|e| bad(format!("cannot read `{}`: {e}", path.display())))?,
        (None, Some(v)) => env(&v).ok_or_else(|| bad(format!("the variable `{v}` is not set")))?.into_bytes(),
        (None, None) => env(&id).ok_or_else(|| bad(format!("no src= or env=, and no variable `{id}` is set")))?.into_bytes(),
    };
    Ok((id, value))
}

impl SpecOptions {
    pub fn new(spec: PathBuf, cache_dir: PathBuf) -> SpecOptions {
        SpecOptions { spec, cache_dir, out_dir: PathBuf::from("out"), host_root: PathBuf::from("/"), ..Default::default() }
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub spec: SpecOptions,
    pub out: PathBuf,
    pub format: Format,
    /// Push the built image to this reference (`REGISTRY/REPO:TAG`).
    pub push: Option<String>,
    /// Registries (`HOST[:PORT]`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// `--check`: run cached steps again and compare their outputs.
    pub check: bool,
}

/// A loaded, planned spec.
pub struct Planned {
    pub lock: Option<Lockfile>,
    pub spec: SpecFile,
    pub store: Store,
    pub plan: Plan,
    /// The command's network clients (made on first use).
    pub clients: Arc<Clients>,
    /// What the user should hear about the sources (stores and output directories that
    /// directory copies left out).
    pub warnings: Vec<String>,
    scanner_stats: (u64, u64),
}

impl SpecOptions {
    /// The network clients these options describe.
    pub fn clients(&self) -> Clients {
        Clients::from_env(&self.insecure, self.offline)
    }

    fn load_options<'a>(&'a self, existing: Option<&'a Lockfile>, update: bool) -> crate::base::LoadOptions<'a> {
        crate::base::LoadOptions { existing, update, locked: self.locked, cache_dir: &self.cache_dir }
    }
}

/// Load every base the selected images need (`--locked`: a registry base must be pinned).
fn load_bases<'s>(
    spec: &'s SpecFile,
    selected: &[&'s spec::ImageSpec],
    opts: &SpecOptions,
    existing: Option<&Lockfile>,
    update: bool,
    clients: &Clients,
) -> Result<crate::base::Loaded<'s>, Error> {
    crate::base::load(spec, selected, &opts.load_options(existing, update), clients).map_err(|e| match e {
        crate::base::LoadError::Spec(e) => Error::Spec(e),
        crate::base::LoadError::Unpinned { image, why } => Error::Locked { path: crate::lock::path_for(&opts.spec), image, why },
        e @ crate::base::LoadError::Unavailable { .. } => Error::BaseUnavailable(Box::new(e)),
    })
}

fn source_date_epoch() -> Result<Option<u64>, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            // Up to the end of year 9999: image configs write it as an RFC 3339 date.
            .filter(|&t| t <= 253_402_300_799)
            .map(Some)
            .ok_or_else(|| Error::Usage(format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds since 1970 before year 10000"))),
    }
}

/// Parse, check, scan and plan.
pub fn load_and_plan(opts: &SpecOptions) -> Result<Planned, Error> {
    let spec = spec::parse_file_with(&opts.spec, &opts.args)?;
    if let Some(name) = &opts.image {
        if spec.image(name).is_none() {
            let names: Vec<&str> = spec.images.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::Usage(format!("`{}` has no image `{name}`; it has: {}", opts.spec.display(), names.join(", "))));
        }
    }
    let selected: Vec<&spec::ImageSpec> = spec.images.iter().filter(|i| opts.image.as_ref().is_none_or(|n| *n == i.name)).collect();
    let existing_lock = Lockfile::read(&crate::lock::path_for(&opts.spec))?;
    let clients = Arc::new(opts.clients());
    let crate::base::Loaded { needed, bases, pins } = load_bases(&spec, &selected, opts, existing_lock.as_ref(), false, &clients)?;
    let mut errors: Vec<SpecDiagnostic> = Vec::new();
    // The spec file and its lockfile are the build's description, not its content.
    let own: Vec<String> = [opts.spec.clone(), crate::lock::path_for(&opts.spec)]
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect();
    let mut scanner = Scanner::new(&opts.cache_dir, &spec.dir, &opts.out_dir, &own)?;
    let mut sources: HashMap<String, Scanned> = HashMap::new();
    // Local copy sources of the images and steps planned (`copy from=` reads no local file):
    // without --image, every step is planned.
    let steps: Vec<&spec::StepSpec> = if opts.image.is_some() { spec.steps_needed(&selected) } else { spec.steps.iter().collect() };
    let ops = needed
        .iter()
        .flat_map(|img| img.files.iter().chain(img.layers.iter().flat_map(|l| l.ops.iter())))
        .chain(steps.iter().flat_map(|s| s.inputs.iter()));
    {
        for op in ops {
            let FileOp::Copy { src, src_span, from: None, .. } = op else { continue };
            if sources.contains_key(src) {
                continue;
            }
            match scanner.scan(src) {
                Ok(s) => {
                    sources.insert(src.clone(), s);
                }
                // A file written to while it was read: the machine's doing, not the spec's.
                Err(e @ SourceError::Changed { .. }) => return Err(Error::Source(e)),
                Err(e) => errors.push(source_error(&spec, *src_span, e)),
            }
        }
    }
    spec.report(std::mem::take(&mut errors))?;
    let epoch = source_date_epoch()?;
    let env = |name: &str| std::env::var(name).ok();
    let mirrors = MirrorConfig { flags: &opts.mirrors, env: &env, root: &opts.host_root };
    let lockfile = self::lock::ensure_locked(&spec, &needed, opts, &mirrors, LockMode::Build, &bases, &pins, existing_lock, &clients)?;
    let mirror = |repo: &str, suite: &str| -> Result<String, String> {
        if opts.offline {
            return Err("--offline is set and the package is not in the store".into());
        }
        mirrors.mirror(repo, suite).map(|m| m.url).map_err(|e| e.to_string())
    };
    let inputs = crate::plan::PlanInputs {
        sources: &sources,
        source_date_epoch: epoch,
        layer_format: crate::layer::Compression::layer_format_id,
        compression: opts.compression,
        lock: lockfile.as_ref(),
        mirror: &mirror,
        max_layers: opts.max_layers.or(spec.build.max_layers).unwrap_or(crate::plan::DEFAULT_MAX_LAYERS),
        bases: &bases,
        default_accounts: (crate::debian::effects::accounts::DEBIAN_PASSWD, crate::debian::effects::accounts::DEBIAN_GROUP),
    };
    let plan = match crate::plan::plan(&spec, opts.image.as_deref(), &inputs) {
        Ok(p) => p,
        Err(diagnostics) => {
            return Err(match spec.report(diagnostics) {
                Err(e) => Error::Spec(e),
                Ok(()) => Error::Internal("planning failed without a diagnostic".into()),
            })
        }
    };
    // Only a valid spec touches the store (resolution, above, opens it when it must).
    let store = open_store(&opts.cache_dir)?;
    let scanner_stats = (scanner.hashed_files, scanner.hashed_bytes);
    let warnings = scanner.warnings();
    scanner.save(&store)?;
    drop(sources);
    Ok(Planned { spec, store, plan, warnings, scanner_stats, lock: lockfile, clients })
}

fn source_error(spec: &SpecFile, span: miette::SourceSpan, e: SourceError) -> SpecDiagnostic {
    let (label, help) = match &e {
        SourceError::Missing { .. } => ("no such file or directory", None),
        SourceError::Escapes { .. } => (
            "leaves the spec directory",
            Some("copy the file into the spec directory, or give an absolute path to copy from outside it".to_string()),
        ),
        SourceError::Unsupported { .. } => ("unsupported file type", None),
        SourceError::NonUtf8 { .. } => ("non-UTF-8 file name", Some("rename the file; image paths must be UTF-8".to_string())),
        _ => ("cannot be read", None),
    };
    spec.diagnostic("compose::spec::source", span, chain_message(&e), label, help)
}

/// How many images a spec holds (for commands that need one).
pub fn image_count(opts: &SpecOptions) -> Result<usize, Error> {
    Ok(spec::parse_file_with(&opts.spec, &opts.args)?.images.iter().filter(|i| i.export).count())
}

/// Open the store for `compose cache …`.
pub fn open_store(dir: &Path) -> Result<Store, Error> {
    Store::open(dir).map_err(|source| Error::Store { path: dir.to_path_buf(), source })
}
