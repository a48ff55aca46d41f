//! The spec language: reading a KDL spec file and turning it into checked,
//! typed image specifications.
//!
//! This module owns everything between the bytes of a spec file and the
//! [`ImageSpec`] values the rest of compose works from:
//!
//! * reading the file (unreadable files, directories and non-UTF-8 text are
//!   reported with the file's name and, for bad bytes, line and column);
//! * parsing it as a KDL v2 document (KDL's own diagnostics are passed on);
//! * decoding the document by hand into [`SpecFile`] / [`ImageSpec`], keeping
//!   the source span of every node and value that a later stage may need to
//!   point at;
//! * every check that can be made from the text alone: unknown nodes and
//!   properties (with "did you mean"), value types, argument counts,
//!   duplicates, modes, image paths, copy sources, owners, platforms, ports,
//!   environment names and base references.
//!
//! All problems found in a file are reported together, in source order, as a
//! single [`SpecError`] whose [`miette::Diagnostic`] rendering shows the file
//! name, line and column and the offending line. Later stages that find a
//! problem with a spec (a missing copy source, an unknown owner) build their
//! errors with [`SpecFile::error_at`] or [`SpecFile::diagnostic`] so they
//! look the same.
//!
//! Spans are byte ranges into [`SpecFile::source`]. A "node span" (the `span`
//! field of [`ImageSpec`], [`Repository`], [`Accounts`], [`Group`], [`User`],
//! [`FileOp`], [`LayerSpec`]) covers the node's name and its arguments and
//! properties, not its children block; value spans ([`PackageReq::span`],
//! [`OwnerSpec::span`], the spans inside [`Base`], `src_span`, the span in
//! [`ConfigSpec::user`]) cover just the value as written.
//!
//! The module is split by job:
//!
//! * this file holds the public data model ([`SpecFile`], [`ImageSpec`] and
//!   the types they are made of) and the entry points [`parse_file`] and
//!   [`parse_str`];
//! * `diagnostic` owns the errors: [`SpecDiagnostic`], [`SpecError`] and
//!   their [`miette::Diagnostic`] rendering;
//! * `values` owns the value grammars: pure checks of the strings a spec
//!   writes (names, tags, packages, image paths, copy sources, owners,
//!   platforms, ports, signals, base references) and "did you mean"
//!   suggestions (`compose import` checks what it writes with the same
//!   functions);
//! * `decode` owns the KDL decoder: the vocabulary of node names, usage
//!   strings, span helpers and the walk from a KDL document to
//!   [`ImageSpec`]s, collecting every problem as it goes; its submodules
//!   decode one kind of node each (the top level, images, accounts, files,
//!   config, steps, single values).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kdl::KdlDocument;
use miette::{NamedSource, SourceSpan};

mod decode;
mod diagnostic;
#[cfg(test)]
mod tests;
pub(crate) mod values;

use decode::Decoder;
use diagnostic::{finish, not_utf8};
pub use diagnostic::{SpecDiagnostic, SpecError};

// ---------------------------------------------------------------------------
// Public data model
// ---------------------------------------------------------------------------

/// A parsed and checked spec file.
#[derive(Debug, Clone)]
pub struct SpecFile {
    /// The path as given by the caller.
    pub path: PathBuf,
    /// The directory relative copy sources are resolved against: the parent
    /// of `path` (lexically; `.` when `path` has no parent component).
    pub dir: PathBuf,
    /// The file's text, named by `path` as given, for diagnostics.
    pub source: NamedSource<Arc<String>>,
    /// The `image` nodes, in file order. Never empty.
    pub images: Vec<ImageSpec>,
    /// The `step` nodes, in file order (v1.1). Names are unique among images and steps.
    pub steps: Vec<StepSpec>,
    /// The top-level `build` block: options that change outputs, kept with the spec so that
    /// every teammate builds the same thing.
    pub build: BuildOptions,
}

/// `build { max-layers N; compression "…"; epoch N }`. A flag (`--max-layers`,
/// `--compression`) or `SOURCE_DATE_EPOCH` wins over it; an image's own `compression` and
/// `epoch` win over it for that image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    pub max_layers: Option<usize>,
    pub compression: Option<crate::layer::Compression>,
    pub epoch: Option<u64>,
}

/// One `step` node: commands run in a sandbox over an image of the file, yielding a directory
/// tree (v1.1, "Build steps").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    pub name: String,
    pub span: SourceSpan,
    /// The image of this file whose root filesystem the commands run in, with the value's span.
    pub image: (String, SourceSpan),
    /// Where it runs, for each platform an image copying from it is built for.
    pub platform: StepPlatform,
    /// Inputs: file operations applied over the root filesystem before the commands run.
    pub inputs: Vec<FileOp>,
    pub workdir: Option<String>,
    /// Added to the fixed environment, in first-definition order.
    pub env: Vec<(String, String)>,
    /// Numeric `uid:gid` the commands run as; default `0:0`.
    pub user: (u32, u32),
    /// One argv per `run`, in order; never empty.
    pub runs: Vec<Vec<String>>,
    /// The directory the step yields (absolute, normalized, not `/`).
    pub output: String,
    /// `network #true`: a fixed-output step (its output's hash is pinned in the lockfile).
    pub network: bool,
    /// More host environment variables passed through by name (fixed-output steps only): their
    /// values, never what they point at.
    pub pass_env: Vec<String>,
    /// `limits { … }`: what the step may use; unset ones take the defaults.
    pub limits: StepLimits,
    /// `secret "ID" …`: values given to the build (`--secret`), present while the step runs.
    pub secrets: Vec<SecretSpec>,
    /// `mount-from-host "HOST" to="DEST"`: host paths mounted read-only (fixed-output steps only;
    /// a documented hole in the sandbox).
    pub host_mounts: Vec<(String, String)>,
    /// `cache "/PATH"… sharing="…"`: directories kept between runs of the step on this machine;
    /// never part of its key nor of its output.
    pub caches: Vec<CacheSpec>,
}

/// Where a step runs for an image of platform P that copies from it (`platform` in a step).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StepPlatform {
    /// On P, in its image for P (emulated where P is not this machine's): the default.
    #[default]
    Target,
    /// `platform "build"`: on the build machine's platform, once for each P, with
    /// `TARGETPLATFORM` and the like saying P (a cross build).
    Build,
    /// `platform "OS/ARCH"`: on that platform alone, whatever P is (its output is the same for
    /// every platform, as the spec says by naming one).
    Fixed(Platform),
}

/// Where a step's inputs, output and caches cannot go, and why: the step's own `/tmp` (empty at
/// each run) and the kernel's file systems. Checked on the spec, and again where a link in the
/// step's root leads.
pub const STEP_RESERVED: &[(&str, &str)] = &[
    ("/tmp", "`/tmp` is the step's own, empty at each run of it"),
    ("/proc", "`/proc` is the kernel's"),
    ("/sys", "`/sys` is the kernel's"),
    ("/dev", "`/dev` is the sandbox's"),
];

/// Is the absolute, normalized path `p` the directory `dir` or below it?
pub fn path_within(p: &str, dir: &str) -> bool {
    dir == "/" || p == dir || p.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// One directory a step declares as a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    /// Absolute and normalized; not `/`, not under `/tmp`, `/proc`, `/sys` or `/dev`, and apart
    /// from the step's output and inputs.
    pub path: String,
    pub sharing: Sharing,
    pub span: SourceSpan,
}

/// How runs of a step at once use its cache (BuildKit's `sharing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// One run at a time; the others wait (the default: tools rarely expect company).
    #[default]
    Locked,
    /// Every run at once.
    Shared,
    /// A run that finds it in use gets another copy of its own.
    Private,
}

impl Sharing {
    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Locked => "locked",
            Sharing::Shared => "shared",
            Sharing::Private => "private",
        }
    }
}

/// A step's `limits` block. None of it is part of the step's key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepLimits {
    /// Processes and threads at once.
    pub pids: Option<u64>,
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// Thousandths of a CPU.
    pub millicpus: Option<u64>,
    /// Wall-clock time of each command, in nanoseconds.
    pub time: Option<u64>,
    /// Bytes the step may write.
    pub disk: Option<u64>,
}

/// A step's `secret` node: BuildKit's `--mount=type=secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The name `--secret id=ID,…` gives it a value by.
    pub id: String,
    /// A variable set to the value while the commands run.
    pub env: Option<String>,
    /// A file holding the value while the commands run (default `/run/secrets/ID` when no `env`).
    pub target: Option<String>,
    /// `required=#false`: a missing value is skipped rather than an error.
    pub required: bool,
}

/// One `image` node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub name: String,
    pub span: SourceSpan,
    /// Default `latest`.
    pub tag: String,
    /// Default `[linux/amd64]`. Never empty, no duplicates.
    pub platforms: Vec<Platform>,
    /// Default [`Base::Scratch`].
    pub base: Base,
    /// `SOURCE_DATE_EPOCH`-style timestamp in seconds.
    pub epoch: Option<u64>,
    pub repositories: Vec<Repository>,
    pub packages: Vec<PackageReq>,
    pub accounts: Option<Accounts>,
    /// Operations of all `files` blocks, in order.
    pub files: Vec<FileOp>,
    pub layers: Vec<LayerSpec>,
    pub config: ConfigSpec,
    /// `export #false`: built for steps and `copy from=`, not written to `out/` (default true).
    pub export: bool,
    /// `variant "NAME"`: the Debian base set added to the packages (default `custom`: none).
    pub variant: Variant,
    /// `maintainer-scripts "run"`: configure the packages by running their scripts (default
    /// `emulate`: never run them).
    pub run_scripts: bool,
    /// `compression "zstd"`: how its layers are compressed (default gzip).
    pub compression: crate::layer::Compression,
}

/// A standard Debian base set, with mmdebstrap's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// Only the requested packages and their dependencies.
    #[default]
    Custom,
    /// Plus every `Essential: yes` package.
    Essential,
    /// Plus the Essential packages, every `Priority: required` one, and apt (what
    /// `debian:bookworm-slim` is made from).
    Minbase,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Custom => "custom",
            Variant::Essential => "essential",
            Variant::Minbase => "minbase",
        }
    }
}

/// An OCI platform such as `linux/amd64` or `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`, the default platform.
    pub fn linux_amd64() -> Self {
        Platform { os: "linux".to_owned(), architecture: "amd64".to_owned(), variant: None }
    }

    /// The platform of the machine compose runs on (Go's names, as OCI's), where steps with
    /// `platform "build"` run.
    pub fn build_machine() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform { os: "linux".to_owned(), architecture: architecture.to_owned(), variant: variant.map(str::to_owned) }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What an image is built on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Base {
    /// An empty root file system.
    #[default]
    Scratch,
    /// `REGISTRY/REPO:TAG`, `REGISTRY/REPO@sha256:…` or
    /// `REGISTRY/REPO:TAG@sha256:…`, exactly as written.
    Registry { reference: String, span: SourceSpan },
    /// `oci:PATH[:TAG]`: an OCI image layout directory.
    OciLayout { path: String, tag: Option<String>, span: SourceSpan },
    /// `oci-archive:PATH`: a tar of an OCI image layout.
    OciArchive { path: String, span: SourceSpan },
    /// `docker-archive:PATH`: a `docker save` tarball.
    DockerArchive { path: String, span: SourceSpan },
    /// `base image="NAME"`: another image of the same file (checked to exist,
    /// not to be the image itself, and not to form a cycle).
    Image { name: String, span: SourceSpan },
}

/// A `repository` node: an APT source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub name: String,
    pub suite: String,
    /// Never empty.
    pub components: Vec<String>,
    pub keyring: Option<String>,
    pub span: SourceSpan,
}

/// One argument of a `packages` node: `name` or `name=version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageReq {
    pub name: String,
    pub version: Option<String>,
    pub span: SourceSpan,
}

/// The `accounts` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    pub groups: Vec<Group>,
    pub users: Vec<User>,
    pub span: SourceSpan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
    pub span: SourceSpan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// Defaults to `uid`. Need not name a group of the `accounts` block.
    pub gid: u32,
    /// Defaults to `/home/NAME`.
    pub home: String,
    /// Defaults to `/sbin/nologin`.
    pub shell: String,
    /// Defaults to empty.
    pub gecos: String,
    pub span: SourceSpan,
}

/// The owner of a file: an account name (resolved by a later stage) or
/// numeric ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    Name(String),
    Ids(u32, u32),
}

/// An [`Owner`] with the span of the `owner=` value that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSpec {
    pub owner: Owner,
    pub span: SourceSpan,
}

/// One child of a `files` or `layer` block. Paths in the image are absolute
/// and normalized; `mode`s are at most `0o7777`; `None` means "the default"
/// (decided by the stage that writes the layer; the owner default is 0:0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    Copy {
        /// As written (relative to [`SpecFile::dir`] unless absolute; may end
        /// in `/`). Relative sources never escape the spec directory.
        src: String,
        src_span: SourceSpan,
        /// Normalized: no trailing slash except for `/` itself.
        to: String,
        /// `to` was written with a trailing `/` (or is `/`): a file source
        /// goes *into* that directory.
        to_dir: bool,
        mode: Option<u32>,
        /// Mode of directories created by a directory copy (default 0o755).
        dir_mode: Option<u32>,
        owner: Option<OwnerSpec>,
        /// `from="NAME"`: `src` is an absolute path in step `NAME`'s output or in image `NAME`'s
        /// file system (checked to name one), with the span of the value.
        from: Option<(String, SourceSpan)>,
        span: SourceSpan,
    },
    Text {
        path: String,
        content: String,
        mode: Option<u32>,
        owner: Option<OwnerSpec>,
        span: SourceSpan,
    },
    Symlink {
        path: String,
        /// As written (absolute or relative); never empty.
        target: String,
        owner: Option<OwnerSpec>,
        span: SourceSpan,
    },
    Dir {
        path: String,
        mode: Option<u32>,
        owner: Option<OwnerSpec>,
        span: SourceSpan,
    },
}

impl FileOp {
    /// The node span of the operation.
    pub fn span(&self) -> SourceSpan {
        match self {
            FileOp::Copy { span, .. } | FileOp::Text { span, .. } | FileOp::Symlink { span, .. } | FileOp::Dir { span, .. } => *span,
        }
    }

    /// The `owner=` of the operation, if given.
    pub fn owner(&self) -> Option<&OwnerSpec> {
        match self {
            FileOp::Copy { owner, .. } | FileOp::Text { owner, .. } | FileOp::Symlink { owner, .. } | FileOp::Dir { owner, .. } => {
                owner.as_ref()
            }
        }
    }
}

/// A `layer` block: operations that go into a layer of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    pub name: String,
    pub ops: Vec<FileOp>,
    pub span: SourceSpan,
}

/// The `config` block (all fields empty/`None` when absent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigSpec {
    /// In first-definition order; a later definition of a name replaces the
    /// value in place.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// A name, `UID` or `UID:GID`, with the span of the value.
    pub user: Option<(String, SourceSpan)>,
    pub entrypoint: Option<Vec<String>>,
    /// `Some(vec![])` for an explicit empty `cmd`.
    pub cmd: Option<Vec<String>>,
    /// Where `cmd` is written (for the shell-form check, made when planning).
    pub cmd_span: Option<SourceSpan>,
    /// Normalized `PORT/PROTO`, in order, without duplicates.
    pub expose: Vec<String>,
    /// Normalized absolute paths, in order, without duplicates.
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<Healthcheck>,
}

/// `config { healthcheck … }`: Docker's `HEALTHCHECK`, as the image config holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", argv…]` or `["CMD-SHELL", line]`.
    pub test: Vec<String>,
    /// Nanoseconds; 0 leaves the runtime's default.
    pub interval: u64,
    pub timeout: u64,
    pub start_period: u64,
    pub start_interval: u64,
    /// 0 leaves the runtime's default.
    pub retries: u64,
}

/// The `from=` of a `copy from=` operation.
fn from_of(op: &FileOp) -> Option<&str> {
    match op {
        FileOp::Copy { from: Some((n, _)), .. } => Some(n.as_str()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// How deep children blocks (`{ … }`) and block comments (`/* /* … */ */`) may nest. The
/// spec language needs four levels; the KDL parser recurses once per level, so a bound keeps a
/// hostile file from overflowing the stack.
pub const MAX_NESTING: usize = 32;

/// Where `text` first nests children blocks or block comments deeper than [`MAX_NESTING`], and
/// which: a scan that knows KDL's strings (quoted, raw `#"…"#`, multi-line `"""…"""`) and
/// comments. What it cannot make sense of is left to the parser to report.
fn too_deep(text: &str) -> Option<(usize, &'static str)> {
    let b = text.as_bytes();
    let (mut braces, mut comments) = (0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if comments > 0 {
            if rest.starts_with(b"/*") {
                comments += 1;
                if comments > MAX_NESTING {
                    return Some((i, "block comments"));
                }
                i += 2;
            } else if rest.starts_with(b"*/") {
                comments -= 1;
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        match b[i] {
            b'/' if rest.starts_with(b"//") => {
                i += rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            }
            b'/' if rest.starts_with(b"/*") => {
                comments = 1;
                i += 2;
            }
            b'"' => {
                // A quoted string (`"""` multi-line or `"`), with backslash escapes.
                let close: &[u8] = if rest.starts_with(b"\"\"\"") { b"\"\"\"" } else { b"\"" };
                i += close.len();
                while i < b.len() && !b[i..].starts_with(close) {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += close.len();
            }
            b'#' | b'r'
                if {
                    let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count() + usize::from(b[i] == b'#');
                    rest.get(hashes + usize::from(b[i] == b'r')).is_some_and(|&c| c == b'"')
                } =>
            {
                // A raw string: `#"…"#` (or r#"…"# in KDL 1), ended by `"` and as many `#`.
                let start = i + usize::from(b[i] == b'r');
                let hashes = b[start..].iter().take_while(|&&c| c == b'#').count();
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                i = start + hashes + 1;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
            }
            b'{' => {
                braces += 1;
                if braces > MAX_NESTING {
                    return Some((i, "children blocks"));
                }
                i += 1;
            }
            b'}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// Reads and parses the spec file at `path`.
pub fn parse_file(path: &Path) -> Result<SpecFile, SpecError> {
    let bytes = std::fs::read(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => parse_str(path, text),
        Err(e) => Err(not_utf8(path, &bytes, e.valid_up_to())),
    }
}

/// Parses spec text; `path` names the file in diagnostics (kept as given)
/// and locates the spec directory. Does not touch the file system.
pub fn parse_str(path: &Path, text: &str) -> Result<SpecFile, SpecError> {
    parse_str_with(path, text, &[])
}

/// [`parse_file`] with build arguments (`--build-arg NAME=VALUE`).
pub fn parse_file_with(path: &Path, args: &[(String, String)]) -> Result<SpecFile, SpecError> {
    let bytes = std::fs::read(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => parse_str_with(path, text, args),
        Err(e) => Err(not_utf8(path, &bytes, e.valid_up_to())),
    }
}

/// Build arguments, as Dockerfile's `ARG`: top-level `arg "NAME" default="VALUE"` nodes; each
/// `${NAME}` in any string of the file is replaced by the value given on the command line
/// (`--build-arg NAME=VALUE`), else the default. An `arg` without a default must be given; a
/// `--build-arg` the file does not declare is an error. Only the braced form of declared names
/// is replaced, so `$VAR` and `${VAR}` of anything else (environment variables, shell lines)
/// stay as written. A value goes in as given, in one pass over the string: a `${…}` inside a
/// value is never replaced in turn, whatever the order the arguments are declared in.
fn build_args(doc: &mut KdlDocument, given: &[(String, String)], dec: &mut Decoder) {
    let mut values: Vec<(String, String)> = Vec::new();
    for n in doc.nodes().iter().filter(|n| n.name().value() == "arg") {
        let head = SourceSpan::new(n.span().offset().into(), n.name().span().len());
        let name = n.entries().iter().find(|e| e.name().is_none()).and_then(|e| e.value().as_string());
        let default = n.entries().iter().find(|e| e.name().is_some_and(|k| k.value() == "default")).and_then(|e| e.value().as_string());
        let bad_entry = n.entries().iter().any(|e| e.name().is_some_and(|k| k.value() != "default")) || n.children().is_some();
        let Some(name) = name.filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) else {
            dec.push(
                "compose::spec::bad_arg",
                "`arg` needs a name: letters, digits and `_`",
                vec![(head, "here".into())],
                Some("usage: arg \"VERSION\" default=\"1.0\"".into()),
            );
            continue;
        };
        if bad_entry {
            dec.push(
                "compose::spec::bad_arg",
                format!("`arg \"{name}\"` takes only `default=`"),
                vec![(head, "here".into())],
                Some("usage: arg \"VERSION\" default=\"1.0\"".into()),
            );
        }
        match given.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).or(default) {
            Some(v) => values.push((name.to_string(), v.to_string())),
            None => dec.push(
                "compose::spec::missing_arg",
                format!("build argument `{name}` has no default and was not given"),
                vec![(head, "declared here".into())],
                Some(format!("pass --build-arg {name}=VALUE, or give it a default=")),
            ),
        }
    }
    for (k, _) in given {
        if !doc
            .nodes()
            .iter()
            .any(|n| n.name().value() == "arg" && n.entries().iter().any(|e| e.name().is_none() && e.value().as_string() == Some(k)))
        {
            dec.push(
                "compose::spec::unknown_arg",
                format!("--build-arg {k}: the spec declares no `arg \"{k}\"`"),
                vec![(SourceSpan::new(0.into(), 0), "this file".into())],
                Some(format!("declare it at the top level: arg \"{k}\" default=\"…\"")),
            );
        }
    }
    if values.is_empty() {
        return;
    }
    fn walk(doc: &mut KdlDocument, values: &[(String, String)]) {
        for n in doc.nodes_mut() {
            if n.name().value() == "arg" {
                continue;
            }
            for e in n.entries_mut() {
                let replaced = match e.value().as_string() {
                    Some(s) if s.contains("${") => {
                        let out = substitute(s, values);
                        (out != s).then_some(out)
                    }
                    _ => None,
                };
                if let Some(v) = replaced {
                    e.set_value(kdl::KdlValue::String(v));
                }
            }
            if let Some(children) = n.children_mut() {
                walk(children, values);
            }
        }
    }
    walk(doc, &values);
}

/// `s` with each `${NAME}` of a declared argument replaced by its value, in one pass: what a
/// value holds is never replaced again.
fn substitute(s: &str, values: &[(String, String)]) -> String {
    crate::util::expand(s, crate::util::Expansion::KNOWN_BRACED, |name: &str| {
        values.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    })
}

/// [`parse_str`] with build arguments.
pub fn parse_str_with(path: &Path, text: &str, args: &[(String, String)]) -> Result<SpecFile, SpecError> {
    let text = Arc::new(text.to_owned());
    let source = NamedSource::new(path.display().to_string(), text.clone());
    let mut dec = Decoder { source: source.clone(), diags: Vec::new(), build: BuildOptions::default() };
    if let Some((offset, what)) = too_deep(&text) {
        dec.push(
            "compose::spec::too_deep",
            format!("{what} nested more than {MAX_NESTING} deep"),
            vec![(SourceSpan::new(offset.into(), 2), format!("level {} starts here", MAX_NESTING + 1))],
            Some("a spec needs a few levels (image { layer { … } }); this is not a spec".into()),
        );
        return Err(finish(path, dec.diags));
    }
    let (images, steps) = match KdlDocument::parse(&text) {
        Ok(mut doc) => {
            build_args(&mut doc, args, &mut dec);
            // Values left as `${NAME}` would only give errors that follow from these.
            if dec.diags.is_empty() {
                dec.document(&doc)
            } else {
                (Vec::new(), Vec::new())
            }
        }
        Err(err) => {
            for d in err.diagnostics {
                let message = d.message.unwrap_or_else(|| "invalid KDL".to_owned());
                let label = d.label.unwrap_or_else(|| "here".to_owned());
                dec.push("compose::spec::syntax", message, vec![(d.span, label)], d.help);
            }
            (Vec::new(), Vec::new())
        }
    };
    if !dec.diags.is_empty() {
        return Err(finish(path, dec.diags));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(SpecFile { path: path.to_path_buf(), dir, source, images, steps, build: dec.build })
}

impl SpecFile {
    /// The image named `name`.
    pub fn image(&self, name: &str) -> Option<&ImageSpec> {
        self.images.iter().find(|i| i.name == name)
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The images and steps that image or step `name` uses directly: its base image, a step's
    /// image, the sources of its `copy from=`.
    pub fn uses(&self, name: &str) -> Vec<&str> {
        let mut v = Vec::new();
        if let Some(img) = self.image(name) {
            if let Base::Image { name, .. } = &img.base {
                v.push(name.as_str());
            }
            v.extend(img.files.iter().chain(img.layers.iter().flat_map(|l| l.ops.iter())).filter_map(from_of));
        } else if let Some(step) = self.step(name) {
            v.push(step.image.0.as_str());
            v.extend(step.inputs.iter().filter_map(from_of));
        }
        v
    }

    /// The images `selected` need (themselves, and every image they use through bases, steps
    /// and `copy from=`), selected first, then in the order found.
    pub fn images_needed<'s>(&'s self, selected: &[&'s ImageSpec]) -> Vec<&'s ImageSpec> {
        self.needed_names(selected).into_iter().filter_map(|n| self.image(n)).collect()
    }

    /// The steps `selected` need, in the order found.
    pub fn steps_needed<'s>(&'s self, selected: &[&'s ImageSpec]) -> Vec<&'s StepSpec> {
        self.needed_names(selected).into_iter().filter_map(|n| self.step(n)).collect()
    }

    fn needed_names<'s>(&'s self, selected: &[&'s ImageSpec]) -> Vec<&'s str> {
        let mut names: Vec<&str> = selected.iter().map(|i| i.name.as_str()).collect();
        let mut i = 0;
        while i < names.len() {
            for u in self.uses(names[i]) {
                if !names.contains(&u) {
                    names.push(u);
                }
            }
            i += 1;
        }
        names
    }

    /// Warnings about the spec that do not stop a build, one per problem: a Debian release
    /// installed from without its security suite (`bookworm` without `bookworm-security`) misses
    /// every security update.
    pub fn warnings(&self) -> Vec<String> {
        let mut missing: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for img in self.images.iter().filter(|i| !i.packages.is_empty()) {
            for r in &img.repositories {
                let debian = r.name == "debian" || r.keyring.as_deref().is_some_and(|k| k.contains("debian-archive-keyring"));
                let release = !r.suite.contains('-')
                    && !r.suite.contains('/')
                    && !matches!(r.suite.as_str(), "sid" | "unstable" | "experimental" | "testing" | "rc-buggy");
                if !debian || !release {
                    continue;
                }
                let security = format!("{}-security", r.suite);
                let images = missing.entry(r.suite.clone()).or_default();
                if !img.repositories.iter().any(|o| o.suite == security) && !images.contains(&img.name.as_str()) {
                    images.push(img.name.as_str());
                }
            }
        }
        missing
            .into_iter()
            .filter(|(_, images)| !images.is_empty())
            .map(|(suite, images)| {
                format!(
                    "{} install{} from Debian `{suite}` without `{suite}-security`: security updates are missed; add \
                     `repository \"debian-security\" suite=\"{suite}-security\" components=\"main\" keyring=…`",
                    images.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", "),
                    if images.len() == 1 { "s" } else { "" }
                )
            })
            .collect()
    }

    /// The text of the file.
    pub fn text(&self) -> &str {
        self.source.inner()
    }

    /// A located diagnostic about this spec, for later stages that collect
    /// several before failing (see [`SpecFile::report`]).
    pub fn diagnostic(
        &self,
        code: &'static str,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> SpecDiagnostic {
        SpecDiagnostic::new(&self.source, code, message.into(), vec![(span, label.into())], help)
    }

    /// An error pointing at `span` of this spec, with the code
    /// `compose::spec::invalid`.
    pub fn error_at(&self, span: SourceSpan, message: impl Into<String>, label: impl Into<String>, help: Option<String>) -> SpecError {
        let d = self.diagnostic("compose::spec::invalid", span, message, label, help);
        finish(&self.path, vec![d])
    }

    /// `Ok` when `diagnostics` is empty, else one error holding all of them
    /// in source order.
    pub fn report(&self, diagnostics: Vec<SpecDiagnostic>) -> Result<(), SpecError> {
        if diagnostics.is_empty() {
            Ok(())
        } else {
            Err(finish(&self.path, diagnostics))
        }
    }
}
