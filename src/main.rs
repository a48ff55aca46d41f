//! The `compose` command line: parse flags, call one operation of `compose::ops`, print.
//! This is the only place that prints; progress arrives through [`compose::exec::Reporter`].

// The only place that prints: the lints that keep the library silent do not apply here.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use compose::exec::{Outcome, Reporter};
use compose::image::Format;
use compose::ops::{self, BuildOptions, SpecOptions};
use compose::plan::Derivation;

#[derive(Parser)]
#[command(name = "compose", version, about = "Declarative, reproducible OCI image composer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct SpecArgs {
    /// The spec file.
    #[arg(default_value = "compose.kdl")]
    spec: PathBuf,
    /// Only this image of the spec (and what it needs).
    #[arg(long)]
    image: Option<String>,
    /// The store (default `cache/` in the current directory).
    #[arg(long, env = "COMPOSE_CACHE_DIR", default_value = "cache")]
    cache_dir: PathBuf,
    /// Worker threads (default: one per core).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Where to download a repository's packages from: NAME=URL (repeatable). Before
    /// COMPOSE_MIRROR_<NAME> and the host's apt sources.
    #[arg(long = "mirror", value_name = "NAME=URL", value_parser = parse_mirror)]
    mirrors: Vec<(String, String)>,
    /// A value for the spec's `arg "NAME"` (repeatable), as `docker build --build-arg`.
    #[arg(long = "build-arg", value_name = "NAME=VALUE", value_parser = parse_build_arg)]
    build_args: Vec<(String, String)>,
    /// A secret for the steps that declare it (repeatable), as BuildKit's: `id=ID,src=FILE`,
    /// `id=ID,env=VARIABLE`, or `ID` (the variable of that name). Never in a key, an output, a
    /// log or a record.
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    secrets: Vec<String>,
    /// Fail rather than change the lockfile.
    #[arg(long)]
    locked: bool,
    /// Speak plain HTTP to this registry (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure: Vec<String>,
    /// A cache shared by a team: `http(s)://…` (Bazel remote-cache protocol: bazel-remote,
    /// nginx WebDAV, S3 gateways) or `oci://REGISTRY/REPO` (an OCI registry repository).
    #[arg(long, env = "COMPOSE_REMOTE_CACHE", value_name = "URL")]
    remote_cache: Option<String>,
    /// Read-only (`ro`) or read-write (`rw`, the default) use of the remote cache.
    #[arg(long, env = "COMPOSE_REMOTE_CACHE_MODE", value_enum, default_value = "rw")]
    remote_cache_mode: RemoteMode,
    /// Accept remote records signed by this public key (`NAME:BASE64`, repeatable; also
    /// COMPOSE_TRUSTED_KEYS, separated by spaces). With any, unsigned records are ignored.
    #[arg(long = "trusted-key", value_name = "NAME:KEY")]
    trusted_keys: Vec<String>,
    /// Sign the records uploaded to the remote cache with this secret key (default: the one key
    /// `compose cache keygen` put in CACHE/keys/).
    #[arg(long, env = "COMPOSE_SIGNING_KEY", value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// Use no network: everything must be locked and in the store.
    #[arg(long)]
    offline: bool,
    /// Compress every image's layers so, whatever the spec's `compression` says.
    #[arg(long, value_enum, value_name = "gzip|zstd")]
    compression: Option<CompressionArg>,
    /// Most layers an image may have (packages are merged past it).
    #[arg(long, default_value_t = compose::plan::DEFAULT_MAX_LAYERS as u64, value_parser = clap::value_parser!(u64).range(2..=127))]
    max_layers: u64,
}

fn parse_mirror(s: &str) -> Result<(String, String), String> {
    compose::debian::repository::sources::parse_mirror_flag(s).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, ValueEnum)]
enum RemoteMode {
    Ro,
    Rw,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Oci,
    OciArchive,
    DockerArchive,
}

#[derive(Subcommand)]
enum Command {
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

#[derive(Subcommand)]
enum CacheAction {
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

/// Progress on stderr: a live bar on a terminal, plain lines otherwise.
/// Progress on stderr. On a terminal: one live line (a bar, and what is being built now), and a
/// line for each derivation that took a second or more; in logs: one line per derivation built
/// or fetched, when it ends. Times are each derivation's own, from its start.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    start: Instant,
    lines: Mutex<()>,
    /// Derivations being built, by name, with when each started.
    running: Mutex<Vec<(String, Instant)>>,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {wide_msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        Progress { bar, start: Instant::now(), lines: Mutex::new(()), running: Mutex::new(Vec::new()) }
    }

    /// The live line: how many are building, and the oldest of them.
    fn show_running(&self, running: &[(String, Instant)]) {
        if let Some(b) = &self.bar {
            b.set_message(match running {
                [] => String::new(),
                [(one, _)] => format!("building {one}"),
                [(first, _), rest @ ..] => format!("building {first} and {} more", rest.len()),
            });
        }
    }

    fn line(&self, s: String) {
        match &self.bar {
            Some(b) if !b.is_finished() => b.println(s),
            _ => {
                let _g = self.lines.lock();
                let _ = writeln!(std::io::stderr(), "{s}");
            }
        }
    }

    fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn human(n: u64) -> String {
    compose::util::human_bytes(n)
}

impl Reporter for Progress {
    fn planned(&self, total: usize, to_build: usize) {
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
        }
        self.line(format!("plan: {total} derivations, {to_build} to build"));
    }
    fn started(&self, drv: &Derivation) {
        // A step's output streams as `[step] line`: say first which step it is.
        if matches!(drv.kind, compose::plan::DrvKind::Step(_) | compose::plan::DrvKind::Scripts(_)) {
            self.line(format!("building {}", drv.name));
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.push((drv.name.clone(), Instant::now()));
        self.show_running(&running);
    }
    fn warning(&self, message: &str) {
        self.line(format!("warning: {message}"));
    }
    fn step_line(&self, drv: &Derivation, line: &str) {
        let name = drv.name.strip_prefix("step ").unwrap_or(&drv.name);
        self.line(format!("[{name}] {line}"));
    }
    fn finished(&self, drv: &Derivation, outcome: Outcome, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        let what = match outcome {
            Outcome::Built => "built",
            Outcome::Local => "cached",
            Outcome::Remote => "fetched",
        };
        let took = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let took = running.iter().position(|(n, _)| *n == drv.name).map(|i| running.remove(i).1.elapsed());
            self.show_running(&running);
            took
        };
        let slow = took.is_some_and(|t| t >= Duration::from_secs(1));
        if outcome != Outcome::Local && (self.bar.is_none() || slow) {
            let time = took.map(|t| format!(" in {:.2}s", t.as_secs_f64())).unwrap_or_default();
            self.line(format!("{what:>7} {} ({}){time}", drv.name, human(bytes)));
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // On a terminal, reports wrap to its width; in logs and pipes, lines stay whole (greppable).
    let wrap = std::io::stderr().is_terminal();
    let _ = miette::set_hook(Box::new(move |_| Box::new(miette::MietteHandlerOpts::new().wrap_lines(wrap).build())));
    stop_steps_on_signals();
    let result = run(cli);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            eprintln!("{:?}", miette::Report::new(e));
            ExitCode::from(code as u8)
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: stop every running build step with its whole process tree
/// (waiting a few seconds at most for them to go), then exit as a shell reports a command ended
/// by SIGINT (130). What the killed build leaves in the store's `tmp/` goes with the next build.
fn stop_steps_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else { return };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("interrupted: stopping running build steps");
            compose::exec::sandbox::interrupt(std::time::Duration::from_secs(4));
            std::process::exit(130);
        }
    });
}

fn parse_build_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{s}`")),
    }
}

fn spec_options(a: &SpecArgs) -> Result<SpecOptions, ops::Error> {
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
    o.max_layers = a.max_layers as usize;
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

fn run(cli: Cli) -> Result<u8, ops::Error> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Lock { spec, update } => {
            let opts = spec_options(&spec)?;
            let mode = match update {
                None => ops::LockMode::Build,
                Some(names) => ops::LockMode::Update(names),
            };
            let progress = Progress::new();
            let path = ops::lock(&opts, mode, &progress);
            progress.done();
            let path = path?;
            let _ = writeln!(stdout, "{}", path.display());
        }
        Command::Push { spec, reference, json } => {
            let opts = BuildOptions {
                spec: spec_options(&spec)?,
                out: PathBuf::from("out"),
                format: Format::Oci,
                push: Some(reference),
                insecure: spec.insecure.clone(),
                check: false,
            };
            if opts.spec.image.is_none() && ops::image_count(&opts.spec)? > 1 {
                return Err(ops::Error::Usage("the spec has several images: choose one with --image NAME".into()));
            }
            let progress = Progress::new();
            let summary = ops::build(&opts, &progress);
            progress.done();
            let summary = summary?;
            for img in &summary.images {
                if let Some(p) = &img.pushed {
                    progress.line(format!(
                        "pushed {} ({} uploaded, {} mounted, {} already there; {})",
                        p.reference,
                        p.uploaded,
                        p.mounted,
                        p.existing,
                        human(p.uploaded_bytes)
                    ));
                    if !json {
                        let _ = writeln!(stdout, "{}", p.digest);
                    }
                }
            }
            if json {
                let _ = writeln!(stdout, "{}", serde_json::to_string(&summary).unwrap_or_default());
            }
        }
        Command::Build { spec, out, format, push, json, check } => {
            let format = match format {
                FormatArg::Oci => Format::Oci,
                FormatArg::OciArchive => Format::OciArchive,
                FormatArg::DockerArchive => Format::DockerArchive,
            };
            let mut spec_opts = spec_options(&spec)?;
            spec_opts.out_dir = out.clone();
            let opts = BuildOptions { spec: spec_opts, out, format, push, insecure: spec.insecure.clone(), check };
            let progress = Progress::new();
            let summary = ops::build(&opts, &progress);
            progress.done();
            let summary = summary?;
            let c = summary.derivations;
            progress.line(format!(
                "done in {:.2}s: {} derivations, {} built, {} cached, {} from the remote cache{}",
                progress.start.elapsed().as_secs_f64(),
                c.total,
                c.built,
                c.local,
                c.remote,
                if c.skipped > 0 { format!(", {} not needed", c.skipped) } else { String::new() }
            ));
            if json {
                let _ = writeln!(stdout, "{}", serde_json::to_string(&summary).unwrap_or_default());
            } else {
                for img in &summary.images {
                    progress.line(format!("{}:{} → {}", img.name, img.tag, img.output));
                    if let Some(p) = &img.pushed {
                        progress.line(format!(
                            "pushed {} ({} uploaded, {} mounted, {} already there; {})",
                            p.reference,
                            p.uploaded,
                            p.mounted,
                            p.existing,
                            human(p.uploaded_bytes)
                        ));
                    }
                    let _ = writeln!(stdout, "{}", img.digest);
                }
            }
        }
        Command::Plan { spec, dot, json } => {
            let report = ops::plan_report(&spec_options(&spec)?)?;
            if json {
                let _ = writeln!(stdout, "{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else if dot {
                let _ = writeln!(stdout, "digraph plan {{\n  rankdir=LR;");
                for n in &report.nodes {
                    let style = if n.cached { "filled" } else { "solid" };
                    let _ = writeln!(stdout, "  n{} [label=\"{}\\n{}\", style={style}];", n.id, n.name.replace('"', "\\\""), &n.hash[..16]);
                    for d in &n.deps {
                        let _ = writeln!(stdout, "  n{d} -> n{};", n.id);
                    }
                }
                let _ = writeln!(stdout, "}}");
            } else {
                for n in &report.nodes {
                    let state = if n.cached {
                        "cached"
                    } else if n.remote {
                        "remote"
                    } else {
                        "build "
                    };
                    let deps: Vec<String> = n.deps.iter().map(|d| format!("#{d}")).collect();
                    let after = if deps.is_empty() { String::new() } else { format!(" ← {}", deps.join(" ")) };
                    let _ = writeln!(stdout, "#{:<3} {state} {:<7} {} {}{after}", n.id, n.kind, &n.hash[4..20], n.name);
                }
            }
        }
        Command::Import { dockerfile, out, registry_base, force, json } => {
            let (dest, imported) = ops::import(&dockerfile, out.as_deref(), registry_base, force)?;
            let (exact, total) = imported.share();
            if json {
                let _ = writeln!(
                    stdout,
                    "{}",
                    serde_json::json!({"spec": dest, "exact": exact, "instructions": total, "notes": imported.notes})
                );
            } else {
                let mut err = std::io::stderr().lock();
                for n in &imported.notes {
                    let mark = if n.exact { "ok    " } else { "review" };
                    let _ = writeln!(err, "{mark} {}:{}: {} → {}", dockerfile.display(), n.line, n.instruction, n.message);
                }
                let _ = writeln!(err, "{exact} of {total} instructions translated exactly; review the others");
                let _ = writeln!(stdout, "{}", dest.display());
            }
        }
        Command::Explain { spec, json } => {
            let e = ops::explain(&spec_options(&spec)?)?;
            if json {
                let _ = writeln!(stdout, "{}", serde_json::to_string_pretty(&e).unwrap_or_default());
            } else {
                for r in &e.rebuild {
                    let _ = writeln!(stdout, "{} ({}):", r.name, r.kind);
                    for why in &r.reasons {
                        let _ = writeln!(stdout, "    {why}");
                    }
                }
                let _ = writeln!(stdout, "{} of {} derivations would run; {} are in the store", e.rebuild.len(), e.derivations, e.cached);
            }
        }
        Command::Cache { action } => match action {
            CacheAction::Verify { cache_dir, repair } => {
                let store = ops::open_store(&cache_dir)?;
                let r = store.verify(repair, &compose::trust::problem).map_err(ops::Error::from)?;
                for d in &r.damage {
                    let _ = writeln!(stdout, "damaged: {d}");
                }
                let _ = writeln!(
                    stdout,
                    "checked {} blobs ({}) and {} records: {} problems{}",
                    r.blobs_checked,
                    human(r.bytes_checked),
                    r.records_checked,
                    r.damage.len(),
                    if repair { format!(", {} removed", r.repaired) } else { String::new() }
                );
                if !r.damage.is_empty() {
                    return Ok(1);
                }
            }
            CacheAction::Gc { cache_dir, max_age_days } => {
                let store = ops::open_store(&cache_dir)?;
                let age = Duration::from_secs_f64((max_age_days.max(0.0)) * 86_400.0);
                let r = store.gc(age).map_err(ops::Error::from)?;
                let _ = writeln!(
                    stdout,
                    "removed {} records and {} blobs ({}), {} temporary files; kept {} records and {} blobs",
                    r.records_removed,
                    r.blobs_removed,
                    human(r.bytes_freed),
                    r.temp_removed,
                    r.records_kept,
                    r.blobs_kept
                );
            }
            CacheAction::Keygen { name, cache_dir, out } => {
                let name = name.unwrap_or_else(ops::default_key_name);
                let (public, path) = ops::keygen(&cache_dir, &name, out.as_deref())?;
                let _ = writeln!(
                    std::io::stderr(),
                    "secret key written to {}; builds with this cache dir sign the records they upload with it.\n\
                     Give the public key below to the machines that should trust them (--trusted-key or COMPOSE_TRUSTED_KEYS):",
                    path.display()
                );
                let _ = writeln!(stdout, "{public}");
            }
            CacheAction::Stats { cache_dir, json } => {
                let store = ops::open_store(&cache_dir)?;
                let s = store.stats().map_err(ops::Error::from)?;
                if json {
                    let _ = writeln!(stdout, "{}", serde_json::to_string(&s).unwrap_or_default());
                } else {
                    let _ = writeln!(
                        stdout,
                        "{}: {} blobs ({}), {} records, {} stat caches, {} temporary files",
                        cache_dir.display(),
                        s.blobs,
                        human(s.blob_bytes),
                        s.records,
                        s.stat_caches,
                        s.temp_files
                    );
                }
            }
        },
    }
    Ok(0)
}
