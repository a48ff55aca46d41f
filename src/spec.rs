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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

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
    /// Normalized `PORT/PROTO`, in order, without duplicates.
    pub expose: Vec<String>,
    /// Normalized absolute paths, in order, without duplicates.
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One located problem in a spec file. Carries its own copy of the (shared)
/// source so it renders on its own or as a related diagnostic.
#[derive(Debug, Clone)]
pub struct SpecDiagnostic {
    /// Like `compose::spec::unknown_node`.
    pub code: &'static str,
    pub message: String,
    /// The first label is the primary one.
    pub labels: Vec<LabeledSpan>,
    pub help: Option<String>,
    pub source: NamedSource<Arc<String>>,
}

impl SpecDiagnostic {
    fn new(
        source: &NamedSource<Arc<String>>,
        code: &'static str,
        message: String,
        labels: Vec<(SourceSpan, String)>,
        help: Option<String>,
    ) -> Self {
        let labels =
            labels
                .into_iter()
                .enumerate()
                .map(|(i, (span, label))| {
                    if i == 0 {
                        LabeledSpan::new_primary_with_span(Some(label), span)
                    } else {
                        LabeledSpan::new_with_span(Some(label), span)
                    }
                })
                .collect();
        SpecDiagnostic { code, message, labels, help, source: source.clone() }
    }

    /// The primary span, if the diagnostic has labels.
    pub fn primary_span(&self) -> Option<SourceSpan> {
        self.labels.first().map(|l| *l.inner())
    }
}

impl fmt::Display for SpecDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecDiagnostic {}

impl Diagnostic for SpecDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }
}

/// Why a spec file could not be turned into a [`SpecFile`] (or, from
/// [`SpecFile::error_at`], why a later stage rejects it).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read (missing, a directory, no permission…).
    #[error("cannot read spec file `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8. `line` and `column` locate the first bad byte;
    /// both are 1-based and the column counts bytes, as miette's
    /// `[path:line:col]` header does.
    #[error(
        "spec file `{}` is not valid UTF-8: invalid byte 0x{byte:02x} at line {line}, column {column}",
        path.display()
    )]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        column: usize,
        byte: u8,
        /// The same, located in a lossy decoding of the file.
        detail: Box<SpecDiagnostic>,
    },
    /// One or more problems in the text, in source order. With one problem
    /// the error *is* that diagnostic; with several it is a summary whose
    /// related diagnostics are the problems.
    #[error("{}", invalid_message(path, diagnostics))]
    Invalid { path: PathBuf, diagnostics: Vec<SpecDiagnostic> },
}

fn invalid_message(path: &Path, diagnostics: &[SpecDiagnostic]) -> String {
    match diagnostics {
        [one] => one.message.clone(),
        many => format!("{} errors in spec file `{}`", many.len(), path.display()),
    }
}

impl SpecError {
    /// An error made of one diagnostic (from a later stage).
    pub fn from_diagnostic(d: SpecDiagnostic) -> SpecError {
        let path = PathBuf::from(d.source.name());
        finish(&path, vec![d])
    }

    /// The located problems (empty for [`SpecError::Read`]).
    pub fn diagnostics(&self) -> &[SpecDiagnostic] {
        match self {
            SpecError::Read { .. } => &[],
            SpecError::NotUtf8 { detail, .. } => std::slice::from_ref(&**detail),
            SpecError::Invalid { diagnostics, .. } => diagnostics,
        }
    }

    /// The single diagnostic this error stands for, if it is one.
    fn single(&self) -> Option<&SpecDiagnostic> {
        match self {
            SpecError::Read { .. } => None,
            SpecError::NotUtf8 { detail, .. } => Some(detail),
            SpecError::Invalid { diagnostics, .. } => match diagnostics.as_slice() {
                [one] => Some(one),
                _ => None,
            },
        }
    }
}

impl Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        let code = match self {
            SpecError::Read { .. } => "compose::spec::read",
            SpecError::NotUtf8 { .. } => "compose::spec::not_utf8",
            SpecError::Invalid { diagnostics, .. } => match diagnostics.as_slice() {
                [one] => one.code,
                _ => "compose::spec::invalid",
            },
        };
        Some(Box::new(code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.single().and_then(|d| d.help())
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.single().map(|d| &d.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.single().and_then(|d| d.labels())
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        match self {
            SpecError::Invalid { diagnostics, .. } if diagnostics.len() > 1 => {
                Some(Box::new(diagnostics.iter().map(|d| d as &dyn Diagnostic)))
            }
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// Reads and parses the spec file at `path`.
pub fn parse_file(path: &Path) -> Result<SpecFile, SpecError> {
    let bytes = std::fs::read(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => parse_str(path, text),
        Err(e) => Err(not_utf8(path, &bytes, e.valid_up_to())),
    }
}

fn not_utf8(path: &Path, bytes: &[u8], bad: usize) -> SpecError {
    let before = &bytes[..bad];
    let line_start = before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = bad - line_start + 1;
    let byte = bytes[bad];
    let lossy = Arc::new(String::from_utf8_lossy(bytes).into_owned());
    let source = NamedSource::new(path.display().to_string(), lossy);
    let message = format!("spec file `{}` is not valid UTF-8: invalid byte 0x{byte:02x} at line {line}, column {column}", path.display());
    let detail = SpecDiagnostic::new(
        &source,
        "compose::spec::not_utf8",
        message,
        vec![(SourceSpan::new(bad.into(), '\u{fffd}'.len_utf8()), "not UTF-8".to_owned())],
        Some("spec files must be encoded as UTF-8".to_owned()),
    );
    SpecError::NotUtf8 { path: path.to_path_buf(), line, column, byte, detail: Box::new(detail) }
}

/// Parses spec text; `path` names the file in diagnostics (kept as given)
/// and locates the spec directory. Does not touch the file system.
pub fn parse_str(path: &Path, text: &str) -> Result<SpecFile, SpecError> {
    let text = Arc::new(text.to_owned());
    let source = NamedSource::new(path.display().to_string(), text.clone());
    let mut dec = Decoder { source: source.clone(), diags: Vec::new() };
    let images = match KdlDocument::parse(&text) {
        Ok(doc) => dec.document(&doc),
        Err(err) => {
            for d in err.diagnostics {
                let message = d.message.unwrap_or_else(|| "invalid KDL".to_owned());
                let label = d.label.unwrap_or_else(|| "here".to_owned());
                dec.push("compose::spec::syntax", message, vec![(d.span, label)], d.help);
            }
            Vec::new()
        }
    };
    if !dec.diags.is_empty() {
        return Err(finish(path, dec.diags));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(SpecFile { path: path.to_path_buf(), dir, source, images })
}

fn finish(path: &Path, mut diagnostics: Vec<SpecDiagnostic>) -> SpecError {
    diagnostics.sort_by_key(|d| d.primary_span().map_or(usize::MAX, |s| s.offset()));
    SpecError::Invalid { path: path.to_path_buf(), diagnostics }
}

impl SpecFile {
    /// The image named `name`.
    pub fn image(&self, name: &str) -> Option<&ImageSpec> {
        self.images.iter().find(|i| i.name == name)
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

// ---------------------------------------------------------------------------
// The vocabulary
// ---------------------------------------------------------------------------

const TOP_CHILDREN: &[&str] = &["image"];
const IMAGE_CHILDREN: &[&str] = &["tag", "platforms", "base", "epoch", "repository", "packages", "accounts", "files", "layer", "config"];
const ACCOUNT_CHILDREN: &[&str] = &["group", "user"];
const FILE_CHILDREN: &[&str] = &["copy", "text", "symlink", "dir"];
const CONFIG_CHILDREN: &[&str] = &["env", "workdir", "user", "entrypoint", "cmd", "expose", "volume", "label", "stop-signal"];

const USAGE_IMAGE: &str = "image \"NAME\" { ... }";
const USAGE_TAG: &str = "tag \"1.0\"";
const USAGE_PLATFORMS: &str = "platforms \"linux/amd64\" \"linux/arm64\"";
const USAGE_BASE: &str =
    "base \"REGISTRY/REPO:TAG\" (or \"oci:PATH\", \"oci-archive:PATH\", \"docker-archive:PATH\", \"scratch\"), or base image=\"OTHER\"";
const USAGE_EPOCH: &str = "epoch 1700000000";
const USAGE_REPOSITORY: &str = "repository \"debian\" suite=\"bookworm\" components=\"main\" keyring=\"/path/to/keyring.gpg\"";
const USAGE_PACKAGES: &str = "packages \"busybox-static\" \"ca-certificates=20230311\"";
const USAGE_ACCOUNTS: &str = "accounts { group ...; user ... }";
const USAGE_GROUP: &str = "group \"app\" gid=10001 members=\"alice bob\"";
const USAGE_USER: &str = "user \"app\" uid=10001 gid=10001 home=\"/home/app\" shell=\"/bin/sh\" gecos=\"App\"";
const USAGE_FILES: &str = "files { copy ...; text ...; symlink ...; dir ... }";
const USAGE_LAYER: &str = "layer \"NAME\" { copy ...; text ...; symlink ...; dir ... }";
const USAGE_COPY: &str = "copy \"SOURCE\" to=\"/DEST\" mode=0o644 dir-mode=0o755 owner=\"NAME\"";
const USAGE_TEXT: &str = "text \"/PATH\" \"CONTENT\" mode=0o644 owner=\"NAME\"";
const USAGE_SYMLINK: &str = "symlink \"/PATH\" target=\"TARGET\" owner=\"NAME\"";
const USAGE_DIR: &str = "dir \"/PATH\" mode=0o755 owner=\"NAME\"";
const USAGE_CONFIG: &str = "config { env ...; workdir ...; user ...; cmd ...; ... }";
const USAGE_ENV: &str = "env NAME=\"value\" OTHER=\"value\"";
const USAGE_WORKDIR: &str = "workdir \"/PATH\"";
const USAGE_CONFIG_USER: &str = "user \"NAME\" (or \"UID\" or \"UID:GID\")";
const USAGE_ENTRYPOINT: &str = "entrypoint \"/usr/bin/app\" \"--flag\"";
const USAGE_CMD: &str = "cmd \"--port\" \"8080\"";
const USAGE_EXPOSE: &str = "expose 8080 \"53/udp\"";
const USAGE_VOLUME: &str = "volume \"/data\"";
const USAGE_LABEL: &str = "label \"org.example.key\"=\"value\"";
const USAGE_STOP_SIGNAL: &str = "stop-signal \"SIGTERM\"";

/// Where a node name that is valid somewhere belongs.
fn home_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "image" => "the top level of the file",
        "tag" | "platforms" | "base" | "epoch" | "repository" | "packages" | "accounts" | "files" | "layer" | "config" => {
            "an `image` block"
        }
        "copy" | "text" | "symlink" | "dir" => "a `files` or `layer` block",
        "group" => "an `accounts` block",
        "user" => "an `accounts` block (to create it) or a `config` block (to run as it)",
        "env" | "workdir" | "entrypoint" | "cmd" | "expose" | "volume" | "label" | "stop-signal" => "a `config` block",
        _ => return None,
    })
}

const GOOS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
];
const GOARCH: &[&str] =
    &["386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle", "ppc64", "ppc64le", "riscv64", "s390x", "wasm"];

/// Common non-Go spellings of architectures.
fn arch_alias(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" | "x86-64" | "x64" => "amd64",
        "aarch64" | "armv8" => "arm64",
        "armhf" | "armel" | "armv7" | "armv7l" | "armv6" | "armv6l" | "armv5" => "arm",
        "i386" | "i486" | "i586" | "i686" | "x86" => "386",
        "ppc64el" => "ppc64le",
        "riscv" => "riscv64",
        "loongarch64" => "loong64",
        _ => return None,
    })
}

/// The closest candidate to a misspelled `word`: within an edit distance of
/// a third of its length (at least 1, counting transpositions), or with a
/// Jaro-Winkler similarity of at least 0.85; the fewest edits win.
fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(usize, f64, &'a str)> = None;
    for &c in candidates {
        let distance = strsim::osa_distance(word, c);
        let similarity = strsim::jaro_winkler(word, c);
        if distance > (c.chars().count() / 3).max(1) && similarity < 0.85 {
            continue;
        }
        let better = best.is_none_or(|(d, s, _)| (distance, -similarity) < (d, -s));
        if better {
            best = Some((distance, similarity, c));
        }
    }
    best.map(|(_, _, c)| c)
}

fn one_of(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------
// Syntax checks on strings
// ---------------------------------------------------------------------------

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Image and layer names: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 bytes.
fn valid_image_name(s: &str) -> bool {
    s.len() <= 128 && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && s.chars().all(is_name_char)
}

/// OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn valid_tag(s: &str) -> bool {
    s.len() <= 128 && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && s.chars().all(is_name_char)
}

/// User and group names: `[A-Za-z_][A-Za-z0-9._-]*`, at most 32 bytes.
fn valid_account_name(s: &str) -> bool {
    s.len() <= 32 && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && s.chars().all(is_name_char)
}

/// Debian package names: `[a-z0-9][a-z0-9+.-]+`.
fn valid_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '-'))
}

/// Debian versions: `[A-Za-z0-9.+~:-]+` starting with a digit.
fn valid_package_version(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | ':' | '-'))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A problem with a string value: message, label, help.
struct Bad {
    message: String,
    label: String,
    help: Option<String>,
}

impl Bad {
    fn new(message: impl Into<String>, label: impl Into<String>) -> Self {
        Bad { message: message.into(), label: label.into(), help: None }
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Checks and normalizes an absolute path inside the image. Returns the
/// normalized path and whether it was written with a trailing slash.
fn image_path(s: &str) -> Result<(String, bool), Bad> {
    if s.contains('\0') {
        return Err(Bad::new("image paths must not contain NUL", "contains a NUL character"));
    }
    let Some(rest) = s.strip_prefix('/') else {
        return Err(Bad::new(format!("image path `{s}` is not absolute"), "must start with `/`")
            .help(format!("paths in the image are absolute: write \"/{s}\"")));
    };
    if rest.is_empty() {
        return Ok(("/".to_owned(), true));
    }
    let trailing = rest.ends_with('/');
    let body = rest.strip_suffix('/').unwrap_or(rest);
    let mut parts = Vec::new();
    for part in body.split('/') {
        match part {
            "" => {
                return Err(Bad::new(format!("image path `{s}` has an empty component"), "contains `//`")
                    .help("write a single `/` between components"))
            }
            "." | ".." => {
                return Err(Bad::new(format!("image path `{s}` contains a `{part}` component"), format!("`{part}` is not allowed here"))
                    .help("write the path without `.` and `..` components"))
            }
            p => parts.push(p),
        }
    }
    Ok((format!("/{}", parts.join("/")), trailing))
}

/// Checks a copy source: absolute, or relative without escaping the spec
/// directory. Errors come with their code.
fn copy_source(s: &str) -> Result<(), (&'static str, Bad)> {
    if s.is_empty() {
        return Err((
            "compose::spec::bad_source",
            Bad::new("copy source is empty", "empty path").help("write \".\" to copy the spec directory itself"),
        ));
    }
    if s.contains('\0') {
        return Err(("compose::spec::bad_source", Bad::new("copy source must not contain NUL", "contains a NUL character")));
    }
    if s.starts_with('/') {
        return Ok(());
    }
    let mut depth: usize = 0;
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth == 0 {
                    return Err((
                        "compose::spec::source_escapes",
                        Bad::new(format!("copy source `{s}` is outside the spec directory"), "escapes the spec directory").help(
                            "relative sources are resolved against the directory holding the \
                             spec file and must stay inside it; use an absolute path to copy \
                             from elsewhere",
                        ),
                    ));
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

fn owner(s: &str) -> Result<Owner, Bad> {
    if let Some((u, g)) = s.split_once(':') {
        let ids = (all_digits(u) && all_digits(g)).then(|| (u.parse::<u32>(), g.parse::<u32>()));
        let help = if ids.is_some() || u.is_empty() || g.is_empty() || all_digits(u) || all_digits(g) {
            "numeric owners are two ids from 0 to 4294967295, like \"1000:1000\""
        } else {
            "write an account name alone (the file gets that user's group) or numeric \"UID:GID\""
        };
        return match ids {
            Some((Ok(u), Ok(g))) => Ok(Owner::Ids(u, g)),
            _ => Err(Bad::new(format!("invalid owner `{s}`"), "expected an account name or \"UID:GID\"").help(help)),
        };
    }
    if all_digits(s) {
        return Err(Bad::new(format!("invalid owner `{s}`: numeric owners need a group id"), "expected an account name or \"UID:GID\"")
            .help(format!("write \"{s}:{s}\" (UID:GID)")));
    }
    if valid_account_name(s) {
        Ok(Owner::Name(s.to_owned()))
    } else {
        Err(Bad::new(format!("invalid owner `{s}`"), "expected an account name or \"UID:GID\"")
            .help("account names are letters, digits, `.`, `_` and `-`, starting with a letter or `_`"))
    }
}

fn config_user(s: &str) -> Result<(), Bad> {
    let ok = match s.split_once(':') {
        Some((u, g)) => all_digits(u) && all_digits(g) && u.parse::<u32>().is_ok() && g.parse::<u32>().is_ok(),
        None => (all_digits(s) && s.parse::<u32>().is_ok()) || valid_account_name(s),
    };
    if ok {
        Ok(())
    } else {
        Err(Bad::new(format!("invalid user `{s}`"), "expected a name, \"UID\" or \"UID:GID\""))
    }
}

fn platform(s: &str) -> Result<Platform, Bad> {
    let parts: Vec<&str> = s.split('/').collect();
    let (os, arch, variant) = match parts.as_slice() {
        [os, arch] => (*os, *arch, None),
        [os, arch, v] => (*os, *arch, Some(*v)),
        _ => {
            return Err(Bad::new(format!("invalid platform `{s}`"), "expected OS/ARCH or OS/ARCH/VARIANT")
                .help("write platforms like \"linux/amd64\" or \"linux/arm/v7\""))
        }
    };
    if !GOOS.contains(&os) {
        let b = Bad::new(format!("unknown operating system `{os}` in platform `{s}`"), "unknown operating system");
        return Err(match suggest(os, GOOS) {
            Some(m) => b.help(format!("did you mean `{m}`?")),
            None => b.help(format!("known systems: {}", GOOS.join(", "))),
        });
    }
    if !GOARCH.contains(&arch) {
        let b = Bad::new(format!("unknown architecture `{arch}` in platform `{s}`"), "unknown architecture");
        return Err(match arch_alias(arch).or_else(|| suggest(arch, GOARCH)) {
            Some(m) => b.help(format!("did you mean `{m}`? (platforms use Go's architecture names)")),
            None => b.help(format!("known architectures: {}", GOARCH.join(", "))),
        });
    }
    if let Some(v) = variant {
        let known: &[&str] = match arch {
            "arm" => &["v5", "v6", "v7", "v8"],
            "arm64" => &[
                "v8", "v8.0", "v8.1", "v8.2", "v8.3", "v8.4", "v8.5", "v8.6", "v8.7", "v8.8", "v8.9", "v9", "v9.0", "v9.1", "v9.2", "v9.3",
                "v9.4", "v9.5",
            ],
            "amd64" => &["v1", "v2", "v3", "v4"],
            _ => &[],
        };
        if !known.contains(&v) {
            let b = Bad::new(format!("unknown variant `{v}` for architecture `{arch}` in platform `{s}`"), "unknown variant");
            return Err(if known.is_empty() {
                b.help(format!("`{arch}` has no variants: write \"{os}/{arch}\""))
            } else {
                b.help(format!("variants of `{arch}`: {}", known.join(", ")))
            });
        }
    }
    Ok(Platform { os: os.to_owned(), architecture: arch.to_owned(), variant: variant.map(str::to_owned) })
}

fn port_number(p: &str, written: &str) -> Result<u16, Bad> {
    if !all_digits(p) {
        return Err(Bad::new(format!("invalid port `{written}`"), "expected PORT or PORT/PROTOCOL")
            .help("write ports like 8080, \"8080/tcp\" or \"53/udp\""));
    }
    match p.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(Bad::new(format!("port `{p}` is out of range"), "ports are 1 to 65535")),
    }
}

fn expose_string(s: &str) -> Result<String, Bad> {
    let (p, proto) = match s.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (s, "tcp".to_owned()),
    };
    let n = port_number(p, s)?;
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(Bad::new(format!("unknown protocol in port `{s}`"), "expected tcp, udp or sctp"));
    }
    Ok(format!("{n}/{proto}"))
}

fn stop_signal(s: &str) -> Result<(), Bad> {
    let ok = if all_digits(s) {
        s.parse::<u8>().is_ok_and(|n| n > 0)
    } else {
        s.strip_prefix("SIG").is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, '+' | '-'))
        })
    };
    if ok {
        Ok(())
    } else {
        Err(Bad::new(format!("invalid stop signal `{s}`"), "expected a signal name like \"SIGTERM\" or a number"))
    }
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

fn valid_registry_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    !host.is_empty()
        && host.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && port.is_none_or(|p| all_digits(p) && p.parse::<u16>().is_ok())
}

/// A repository path component: lowercase alphanumerics separated by single
/// `.`, `_`, `__` or runs of `-`.
fn valid_repo_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    c.split(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        .all(|sep| sep.is_empty() || sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-'))
}

const TAG_HELP: &str = "tags are letters, digits, `_`, `.` and `-`, at most 128 characters, not \
     starting with `.` or `-`";

const BASE_HELP: &str = "write \"REGISTRY/REPO:TAG\", \"REGISTRY/REPO@sha256:DIGEST\", \"oci:PATH[:TAG]\", \
     \"oci-archive:PATH\", \"docker-archive:PATH\" or \"scratch\"";

fn base_reference(s: &str, span: SourceSpan) -> Result<Base, Bad> {
    if s == "scratch" {
        return Ok(Base::Scratch);
    }
    let needs_path = |kind: &str| Bad::new(format!("base reference `{s}` has no path"), format!("expected {kind}:PATH"));
    if let Some(rest) = s.strip_prefix("oci:") {
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') && !p.is_empty() => (p, Some(t)),
            _ => (rest, None),
        };
        if path.is_empty() {
            return Err(needs_path("oci"));
        }
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(Bad::new(format!("invalid tag `{t}` in base reference `{s}`"), "invalid tag").help(TAG_HELP));
            }
        }
        return Ok(Base::OciLayout { path: path.to_owned(), tag: tag.map(str::to_owned), span });
    }
    if let Some(path) = s.strip_prefix("oci-archive:") {
        if path.is_empty() {
            return Err(needs_path("oci-archive"));
        }
        return Ok(Base::OciArchive { path: path.to_owned(), span });
    }
    if let Some(path) = s.strip_prefix("docker-archive:") {
        if path.is_empty() {
            return Err(needs_path("docker-archive"));
        }
        return Ok(Base::DockerArchive { path: path.to_owned(), span });
    }
    let bad = |msg: String, label: &str| Bad::new(msg, label).help(BASE_HELP);
    if s.contains("://") {
        return Err(bad(format!("unsupported base reference `{s}`"), "URLs are not image references"));
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        if !valid_digest(d) {
            return Err(bad(format!("invalid digest `{d}` in base reference `{s}`"), "expected sha256: and 64 lowercase hex digits"));
        }
    }
    let last_slash = name_tag.rfind('/');
    let (name, tag) = match name_tag.rfind(':') {
        Some(i) if last_slash.is_none_or(|j| i > j) => (&name_tag[..i], Some(&name_tag[i + 1..])),
        _ => (name_tag, None),
    };
    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err(bad(format!("invalid tag `{t}` in base reference `{s}`"), "invalid tag"));
        }
    }
    let mut parts = name.split('/');
    let host = parts.next().unwrap_or_default();
    let repo: Vec<&str> = parts.collect();
    let looks_like_host = host.contains('.') || host.contains(':') || host == "localhost";
    if !looks_like_host || repo.is_empty() {
        return Err(Bad::new(format!("base reference `{s}` does not name a registry"), "expected REGISTRY/REPO")
            .help(format!("write the registry out, e.g. \"docker.io/library/{}\"", s.rsplit('/').next().unwrap_or(s))));
    }
    if !valid_registry_host(host) {
        return Err(bad(format!("invalid registry `{host}` in base reference `{s}`"), "invalid registry host"));
    }
    if let Some(c) = repo.iter().find(|c| !valid_repo_component(c)) {
        return Err(bad(
            format!("invalid repository component `{c}` in base reference `{s}`"),
            "repository names are lowercase letters, digits and separators",
        ));
    }
    if tag.is_none() && digest.is_none() {
        return Err(Bad::new(format!("base reference `{s}` has neither a tag nor a digest"), "expected :TAG or @sha256:DIGEST")
            .help(format!("pin the base: \"{s}:TAG\" or \"{s}@sha256:DIGEST\"")));
    }
    Ok(Base::Registry { reference: s.to_owned(), span })
}

// ---------------------------------------------------------------------------
// Spans
// ---------------------------------------------------------------------------

fn end_of(s: SourceSpan) -> usize {
    s.offset() + s.len()
}

fn span(start: usize, end: usize) -> SourceSpan {
    SourceSpan::new(start.into(), end.saturating_sub(start))
}

/// The span of the value of an entry as written (without `key=` or a type
/// annotation).
fn value_span(e: &KdlEntry) -> SourceSpan {
    let s = e.span();
    match e.format() {
        Some(f) if !f.value_repr.is_empty() && f.value_repr.len() <= s.len() => span(end_of(s) - f.value_repr.len(), end_of(s)),
        _ => s,
    }
}

/// The span of a property's key, or of the entry.
fn key_span(e: &KdlEntry) -> SourceSpan {
    e.name().map_or_else(|| e.span(), |n| n.span())
}

/// Name, arguments and properties of a node: not its children or the
/// whitespace after it.
fn head_span(n: &KdlNode) -> SourceSpan {
    let start = n.span().offset();
    let end = n.entries().iter().map(|e| end_of(e.span())).fold(end_of(n.name().span()), usize::max);
    span(start, end)
}

fn type_name(v: &KdlValue) -> &'static str {
    match v {
        KdlValue::String(_) => "string",
        KdlValue::Integer(_) => "integer",
        KdlValue::Float(_) => "float",
        KdlValue::Bool(_) => "boolean",
        KdlValue::Null => "null",
    }
}

// ---------------------------------------------------------------------------
// The decoder
// ---------------------------------------------------------------------------

struct Decoder {
    source: NamedSource<Arc<String>>,
    diags: Vec<SpecDiagnostic>,
}

/// A node being decoded.
struct Node<'n> {
    kdl: &'n KdlNode,
    name: &'n str,
    head: SourceSpan,
    args: Vec<&'n KdlEntry>,
    props: Vec<&'n KdlEntry>,
    usage: &'static str,
}

/// Checked properties of a node.
struct Props<'n>(Vec<(&'n str, &'n KdlEntry)>);

impl<'n> Props<'n> {
    fn get(&self, key: &str) -> Option<&'n KdlEntry> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, e)| *e)
    }
}

/// First occurrences of keys, for duplicate checks.
struct Seen<K>(HashMap<K, SourceSpan>);

impl<K: Eq + Hash> Seen<K> {
    fn new() -> Self {
        Seen(HashMap::new())
    }

    /// Records `key` at `span`; returns the first span if already present.
    fn first(&mut self, key: K, span: SourceSpan) -> Option<SourceSpan> {
        match self.0.get(&key) {
            Some(first) => Some(*first),
            None => {
                self.0.insert(key, span);
                None
            }
        }
    }
}

impl Decoder {
    fn push(&mut self, code: &'static str, message: impl Into<String>, labels: Vec<(SourceSpan, String)>, help: Option<String>) {
        let d = SpecDiagnostic::new(&self.source, code, message.into(), labels, help);
        self.diags.push(d);
    }

    fn bad(&mut self, code: &'static str, at: SourceSpan, bad: Bad) {
        self.push(code, bad.message, vec![(at, bad.label)], bad.help);
    }

    fn duplicate(&mut self, code: &'static str, message: String, again: SourceSpan, first: SourceSpan, verb: &str) {
        self.push(code, message, vec![(again, format!("{verb} again here")), (first, format!("first {verb} here"))], None);
    }

    // -- generic node handling ---------------------------------------------

    fn open<'n>(&mut self, kdl: &'n KdlNode, usage: &'static str) -> Node<'n> {
        if let Some(ty) = kdl.ty() {
            self.type_annotation(ty.span());
        }
        let mut args = Vec::new();
        let mut props = Vec::new();
        for e in kdl.entries() {
            if let Some(ty) = e.ty() {
                self.type_annotation(ty.span());
            }
            if e.name().is_some() {
                props.push(e);
            } else {
                args.push(e);
            }
        }
        Node { kdl, name: kdl.name().value(), head: head_span(kdl), args, props, usage }
    }

    fn type_annotation(&mut self, at: SourceSpan) {
        self.push(
            "compose::spec::type_annotation",
            "type annotations are not used in compose specs",
            vec![(at, "type annotation".to_owned())],
            Some("remove the `(...)`".to_owned()),
        );
    }

    fn usage(node: &Node) -> Option<String> {
        Some(format!("usage: {}", node.usage))
    }

    /// Rejects a children block on a leaf node.
    fn leaf(&mut self, node: &Node) {
        if let Some(children) = node.kdl.children() {
            let at = if children.nodes().is_empty() { node.head } else { head_span(&children.nodes()[0]) };
            self.push(
                "compose::spec::unexpected_children",
                format!("`{}` does not take a children block", node.name),
                vec![(at, "unexpected block".to_owned())],
                Self::usage(node),
            );
        }
    }

    /// Positional arguments: reports fewer than `min` (naming `what`) or more
    /// than `max`, and returns at most `max`.
    fn args<'n>(&mut self, node: &Node<'n>, min: usize, max: Option<usize>, what: &str) -> Vec<&'n KdlEntry> {
        let n = node.args.len();
        if n < min {
            self.push(
                "compose::spec::missing_argument",
                format!("`{}` is missing {what}", node.name),
                vec![(node.head, format!("expected {what}"))],
                Self::usage(node),
            );
        }
        match max {
            Some(max) if n > max => {
                let extra = &node.args[max..];
                let message = match max {
                    0 => format!("`{}` takes no arguments", node.name),
                    1 => format!("too many arguments to `{}`: expected 1, found {n}", node.name),
                    _ => format!("too many arguments to `{}`: expected at most {max}, found {n}", node.name),
                };
                let labels = extra.iter().map(|e| (e.span(), "unexpected argument".to_owned())).collect();
                self.push("compose::spec::too_many_arguments", message, labels, Self::usage(node));
                node.args[..max].to_vec()
            }
            _ => node.args.clone(),
        }
    }

    /// Properties: reports unknown and repeated ones.
    fn props<'n>(&mut self, node: &Node<'n>, allowed: &[&str]) -> Props<'n> {
        let mut out: Vec<(&'n str, &'n KdlEntry)> = Vec::new();
        for &e in &node.props {
            let Some(id) = e.name() else { continue };
            let key = id.value();
            if !allowed.contains(&key) {
                let help = match suggest(key, allowed) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if allowed.is_empty() => {
                        format!("`{}` takes no properties; usage: {}", node.name, node.usage)
                    }
                    None => format!("`{}` accepts {}", node.name, one_of(allowed)),
                };
                self.push(
                    "compose::spec::unknown_property",
                    format!("unknown property `{key}` on `{}`", node.name),
                    vec![(id.span(), "unknown property".to_owned())],
                    Some(help),
                );
                continue;
            }
            if let Some((_, first)) = out.iter().find(|(k, _)| *k == key) {
                let first = key_span(first);
                self.duplicate(
                    "compose::spec::duplicate_property",
                    format!("property `{key}` is given more than once"),
                    id.span(),
                    first,
                    "given",
                );
                continue;
            }
            out.push((key, e));
        }
        Props(out)
    }

    fn require<'n>(&mut self, node: &Node<'n>, props: &Props<'n>, key: &str) -> Option<&'n KdlEntry> {
        let e = props.get(key);
        if e.is_none() {
            self.push(
                "compose::spec::missing_property",
                format!("`{}` is missing the `{key}` property", node.name),
                vec![(node.head, format!("expected {key}=..."))],
                Self::usage(node),
            );
        }
        e
    }

    /// Records a singleton; reports and returns false on a repeat.
    fn once(&mut self, seen: &mut Seen<String>, node: &KdlNode) -> bool {
        let head = head_span(node);
        let name = node.name().value();
        match seen.first(name.to_owned(), head) {
            None => true,
            Some(first) => {
                self.push(
                    "compose::spec::duplicate_node",
                    format!("`{name}` is given more than once"),
                    vec![(head, "given again here".to_owned()), (first, "first given here".to_owned())],
                    Some(format!("keep one `{name}`")),
                );
                false
            }
        }
    }

    fn unknown_node(&mut self, node: &KdlNode, context: &str, valid: &[&str]) {
        let name = node.name().value();
        let at = node.name().span();
        let place = if context.is_empty() { "at the top level".to_owned() } else { format!("in `{context}`") };
        if let Some(home) = home_of(name) {
            self.push(
                "compose::spec::misplaced_node",
                format!("`{name}` is not allowed {place}"),
                vec![(at, "misplaced node".to_owned())],
                Some(format!("`{name}` belongs in {home}")),
            );
            return;
        }
        let help = match suggest(name, valid) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("expected {}", one_of(valid)),
        };
        self.push(
            "compose::spec::unknown_node",
            format!("unknown node `{name}` {place}"),
            vec![(at, "unknown node".to_owned())],
            Some(help),
        );
    }

    // -- values -------------------------------------------------------------

    fn wrong_type(&mut self, e: &KdlEntry, expected: &str, what: &str) {
        let v = e.value();
        let help = match (expected, v) {
            ("a string", KdlValue::Integer(_) | KdlValue::Float(_)) => {
                let repr = e.format().map_or_else(|| v.to_string(), |f| f.value_repr.clone());
                Some(format!("quote it: \"{repr}\""))
            }
            _ => None,
        };
        self.push(
            "compose::spec::wrong_type",
            format!("expected {expected}, found {}", type_name(v)),
            vec![(value_span(e), format!("{what} must be {expected}"))],
            help,
        );
    }

    fn string<'n>(&mut self, e: &'n KdlEntry, what: &str) -> Option<&'n str> {
        match e.value() {
            KdlValue::String(s) => Some(s),
            _ => {
                self.wrong_type(e, "a string", what);
                None
            }
        }
    }

    fn unsigned(&mut self, e: &KdlEntry, what: &str, max: u64) -> Option<u64> {
        match e.value() {
            KdlValue::Integer(i) => match u64::try_from(*i) {
                Ok(v) if v <= max => Some(v),
                _ => {
                    self.push(
                        "compose::spec::out_of_range",
                        format!("{what} {i} is out of range"),
                        vec![(value_span(e), format!("must be between 0 and {max}"))],
                        None,
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(e, "an integer", what);
                None
            }
        }
    }

    fn id(&mut self, e: &KdlEntry, what: &str) -> Option<u32> {
        self.unsigned(e, what, u64::from(u32::MAX)).map(|v| v as u32)
    }

    fn mode(&mut self, e: &KdlEntry) -> Option<u32> {
        let KdlValue::Integer(v) = *e.value() else {
            let help = match e.value() {
                KdlValue::String(s) if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
                    format!("write it as an octal integer: 0o{}", s.trim_start_matches('0'))
                }
                _ => "modes are octal integers, like 0o644".to_owned(),
            };
            self.push(
                "compose::spec::wrong_type",
                format!("expected an integer, found {}", type_name(e.value())),
                vec![(value_span(e), "modes must be octal integers".to_owned())],
                Some(help),
            );
            return None;
        };
        let at = value_span(e);
        let repr = e.format().map_or("", |f| f.value_repr.as_str());
        let digits = repr.trim_start_matches(['+', '-']);
        let octal = digits.starts_with("0o");
        if v < 0 {
            self.push(
                "compose::spec::bad_mode",
                format!("mode `{repr}` is negative"),
                vec![(at, "must be between 0o0 and 0o7777".to_owned())],
                None,
            );
            return None;
        }
        if !octal && v > 7 {
            let plain: String = digits.chars().filter(|c| *c != '_').collect();
            let base = if plain.starts_with("0x") {
                "hexadecimal"
            } else if plain.starts_with("0b") {
                "binary"
            } else {
                "decimal"
            };
            let suggestion = if base == "decimal" && plain.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                Some(format!("0o{}", plain.trim_start_matches('0')))
            } else if base != "decimal" && v <= 0o7777 {
                Some(format!("0o{v:o}"))
            } else {
                None
            };
            let message = match &suggestion {
                Some(s) => format!("modes are octal: write {s}"),
                None => "modes are octal: write them with the `0o` prefix, like 0o755".to_owned(),
            };
            self.push(
                "compose::spec::bad_mode",
                message,
                vec![(at, format!("written in {base}"))],
                Some(format!("`{repr}` is read as the {base} number {v}, not as an octal mode")),
            );
            return None;
        }
        if v > 0o7777 {
            self.push(
                "compose::spec::bad_mode",
                format!("mode {repr} is out of range"),
                vec![(at, "must be at most 0o7777".to_owned())],
                None,
            );
            return None;
        }
        Some(v as u32)
    }

    fn owner(&mut self, e: &KdlEntry) -> Option<OwnerSpec> {
        let s = self.string(e, "the owner")?;
        let at = value_span(e);
        match owner(s) {
            Ok(owner) => Some(OwnerSpec { owner, span: at }),
            Err(b) => {
                self.bad("compose::spec::bad_owner", at, b);
                None
            }
        }
    }

    fn path(&mut self, e: &KdlEntry, what: &str) -> Option<(String, bool)> {
        let s = self.string(e, what)?;
        match image_path(s) {
            Ok(p) => Some(p),
            Err(b) => {
                self.bad("compose::spec::bad_path", value_span(e), b);
                None
            }
        }
    }

    /// An image path naming a file (not `/`).
    fn file_path(&mut self, e: &KdlEntry, what: &str) -> Option<String> {
        let (p, _) = self.path(e, what)?;
        if p == "/" {
            self.push("compose::spec::bad_path", "`/` is the root directory", vec![(value_span(e), format!("{what} cannot be `/`"))], None);
            return None;
        }
        Some(p)
    }

    fn name(&mut self, e: &KdlEntry, what: &str) -> Option<String> {
        let s = self.string(e, &format!("the {what} name"))?;
        if valid_image_name(s) {
            Some(s.to_owned())
        } else {
            self.push(
                "compose::spec::bad_name",
                format!("invalid {what} name `{s}`"),
                vec![(value_span(e), "invalid name".to_owned())],
                Some("names are letters, digits, `.`, `_` and `-`, starting with a letter or digit".to_owned()),
            );
            None
        }
    }

    fn account_name(&mut self, e: &KdlEntry, what: &str) -> Option<String> {
        let s = self.string(e, &format!("the {what} name"))?;
        if valid_account_name(s) {
            Some(s.to_owned())
        } else {
            self.push(
                "compose::spec::bad_name",
                format!("invalid {what} name `{s}`"),
                vec![(value_span(e), "invalid name".to_owned())],
                Some(
                    "account names are at most 32 letters, digits, `.`, `_` and `-`, starting with \
                     a letter or `_`"
                        .to_owned(),
                ),
            );
            None
        }
    }

    // -- the document -------------------------------------------------------

    fn document(&mut self, doc: &KdlDocument) -> Vec<ImageSpec> {
        let mut images: Vec<ImageSpec> = Vec::new();
        let mut names: Seen<String> = Seen::new();
        let mut name_spans = Vec::new();
        for n in doc.nodes() {
            if n.name().value() != "image" {
                self.unknown_node(n, "", TOP_CHILDREN);
                continue;
            }
            let (img, name_span) = self.image(n);
            if let Some(at) = name_span {
                if let Some(first) = names.first(img.name.clone(), at) {
                    self.duplicate(
                        "compose::spec::duplicate_image",
                        format!("image `{}` is defined more than once", img.name),
                        at,
                        first,
                        "defined",
                    );
                }
            }
            name_spans.push(name_span);
            images.push(img);
        }
        if images.is_empty() && self.diags.is_empty() {
            self.push("compose::spec::no_images", "the spec file defines no image", Vec::new(), Some(format!("add one: {USAGE_IMAGE}")));
        }
        self.check_bases(&images);
        images
    }

    /// `base image=` must name another image of the file, without cycles.
    fn check_bases(&mut self, images: &[ImageSpec]) {
        let index: HashMap<&str, usize> = images.iter().enumerate().rev().map(|(i, img)| (img.name.as_str(), i)).collect();
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        for (i, img) in images.iter().enumerate() {
            let Base::Image { name, span } = &img.base else {
                continue;
            };
            if *name == img.name {
                self.push(
                    "compose::spec::self_base",
                    format!("image `{name}` uses itself as its base"),
                    vec![(*span, "this is the image being defined".to_owned())],
                    Some("name another image of this file, or a registry reference".to_owned()),
                );
                continue;
            }
            if !index.contains_key(name.as_str()) {
                let others: Vec<&str> = names.iter().copied().filter(|n| *n != img.name).collect();
                let help = match suggest(name, &others) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if others.is_empty() => "this file defines no other image".to_owned(),
                    None => format!("images in this file: {}", one_of(&others)),
                };
                self.push(
                    "compose::spec::unknown_image",
                    format!("no image named `{name}` in this file"),
                    vec![(*span, "unknown image".to_owned())],
                    Some(help),
                );
                continue;
            }
            // Follow the chain; report a cycle once, at its first image.
            let mut chain = vec![i];
            let mut cur = i;
            while let Base::Image { name, .. } = &images[cur].base {
                let Some(&next) = index.get(name.as_str()) else {
                    break;
                };
                if next == i {
                    if chain.iter().all(|&c| c >= i) {
                        let path: Vec<&str> =
                            chain.iter().map(|&c| images[c].name.as_str()).chain(std::iter::once(img.name.as_str())).collect();
                        self.push(
                            "compose::spec::base_cycle",
                            format!("base images form a cycle: {}", path.join(" -> ")),
                            vec![(*span, "cycle starts here".to_owned())],
                            None,
                        );
                    }
                    break;
                }
                if chain.contains(&next) {
                    break;
                }
                chain.push(next);
                cur = next;
            }
        }
    }

    fn image(&mut self, kdl: &KdlNode) -> (ImageSpec, Option<SourceSpan>) {
        let node = self.open(kdl, USAGE_IMAGE);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), "an image name");
        let name_entry = args.first().copied();
        let name = name_entry.and_then(|e| self.name(e, "image"));
        let name_span = name.as_ref().and(name_entry.map(value_span));
        let mut img = ImageSpec {
            name: name.unwrap_or_default(),
            span: node.head,
            tag: "latest".to_owned(),
            platforms: vec![Platform::linux_amd64()],
            base: Base::Scratch,
            epoch: None,
            repositories: Vec::new(),
            packages: Vec::new(),
            accounts: None,
            files: Vec::new(),
            layers: Vec::new(),
            config: ConfigSpec::default(),
        };
        let mut seen = Seen::new();
        let mut packages: Seen<String> = Seen::new();
        let mut layers: Seen<String> = Seen::new();
        let children = kdl.children().map_or(&[][..], |d| d.nodes());
        for c in children {
            let cname = c.name().value();
            if matches!(cname, "tag" | "platforms" | "base" | "epoch" | "accounts" | "config") && !self.once(&mut seen, c) {
                continue;
            }
            match cname {
                "tag" => {
                    if let Some(t) = self.tag(c) {
                        img.tag = t;
                    }
                }
                "platforms" => {
                    if let Some(p) = self.platforms(c) {
                        img.platforms = p;
                    }
                }
                "base" => {
                    if let Some(b) = self.base(c) {
                        img.base = b;
                    }
                }
                "epoch" => img.epoch = self.epoch(c),
                "repository" => {
                    if let Some(r) = self.repository(c) {
                        img.repositories.push(r);
                    }
                }
                "packages" => {
                    for p in self.packages(c) {
                        if let Some(first) = packages.first(p.name.clone(), p.span) {
                            self.duplicate(
                                "compose::spec::duplicate_package",
                                format!("package `{}` is listed more than once", p.name),
                                p.span,
                                first,
                                "listed",
                            );
                        } else {
                            img.packages.push(p);
                        }
                    }
                }
                "accounts" => img.accounts = Some(self.accounts(c)),
                "files" => {
                    let node = self.open(c, USAGE_FILES);
                    self.props(&node, &[]);
                    self.args(&node, 0, Some(0), "");
                    img.files.extend(self.ops(c));
                }
                "layer" => {
                    if let Some((layer, at)) = self.layer(c) {
                        if let Some(first) = layers.first(layer.name.clone(), at) {
                            self.duplicate(
                                "compose::spec::duplicate_layer",
                                format!("layer `{}` is defined more than once in image `{}`", layer.name, img.name),
                                at,
                                first,
                                "defined",
                            );
                        } else {
                            img.layers.push(layer);
                        }
                    }
                }
                "config" => img.config = self.config(c),
                _ => self.unknown_node(c, "image", IMAGE_CHILDREN),
            }
        }
        (img, name_span)
    }

    /// A leaf node with exactly one string argument and no properties.
    fn single_string<'n>(&mut self, kdl: &'n KdlNode, usage: &'static str, what: &str) -> Option<&'n KdlEntry> {
        let node = self.open(kdl, usage);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), what);
        let e = args.first().copied()?;
        self.string(e, &format!("the {}", node.name))?;
        Some(e)
    }

    fn tag(&mut self, kdl: &KdlNode) -> Option<String> {
        let e = self.single_string(kdl, USAGE_TAG, "a tag")?;
        let t = e.value().as_string()?;
        if valid_tag(t) {
            Some(t.to_owned())
        } else {
            self.push(
                "compose::spec::bad_tag",
                format!("invalid tag `{t}`"),
                vec![(value_span(e), "invalid tag".to_owned())],
                Some(TAG_HELP.to_owned()),
            );
            None
        }
    }

    fn platforms(&mut self, kdl: &KdlNode) -> Option<Vec<Platform>> {
        let node = self.open(kdl, USAGE_PLATFORMS);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, None, "at least one platform");
        let mut out = Vec::new();
        let mut seen = Seen::new();
        let mut ok = !args.is_empty();
        for e in args {
            let Some(s) = self.string(e, "a platform") else {
                ok = false;
                continue;
            };
            match platform(s) {
                Ok(p) => {
                    if let Some(first) = seen.first(p.clone(), value_span(e)) {
                        self.duplicate(
                            "compose::spec::duplicate_platform",
                            format!("platform `{p}` is listed more than once"),
                            value_span(e),
                            first,
                            "listed",
                        );
                    } else {
                        out.push(p);
                    }
                }
                Err(b) => {
                    ok = false;
                    self.bad("compose::spec::bad_platform", value_span(e), b);
                }
            }
        }
        ok.then_some(out)
    }

    fn base(&mut self, kdl: &KdlNode) -> Option<Base> {
        let node = self.open(kdl, USAGE_BASE);
        self.leaf(&node);
        let props = self.props(&node, &["image"]);
        let args = self.args(&node, 0, Some(1), "");
        match (args.first(), props.get("image")) {
            (Some(a), Some(p)) => {
                self.push(
                    "compose::spec::bad_base",
                    "`base` takes a reference or `image=`, not both",
                    vec![(value_span(a), "a reference".to_owned()), (key_span(p), "and an image".to_owned())],
                    Self::usage(&node),
                );
                None
            }
            (None, None) => {
                if node.props.is_empty() {
                    self.push(
                        "compose::spec::missing_argument",
                        "`base` is missing a reference",
                        vec![(node.head, "expected a reference or image=\"NAME\"".to_owned())],
                        Self::usage(&node),
                    );
                }
                None
            }
            (Some(a), None) => {
                let s = self.string(a, "the base reference")?;
                match base_reference(s, value_span(a)) {
                    Ok(b) => Some(b),
                    Err(b) => {
                        self.bad("compose::spec::bad_base", value_span(a), b);
                        None
                    }
                }
            }
            (None, Some(p)) => {
                let s = self.string(p, "the base image name")?;
                if s.is_empty() {
                    self.push(
                        "compose::spec::bad_base",
                        "`base image=` needs an image name",
                        vec![(value_span(p), "empty name".to_owned())],
                        None,
                    );
                    return None;
                }
                Some(Base::Image { name: s.to_owned(), span: value_span(p) })
            }
        }
    }

    fn epoch(&mut self, kdl: &KdlNode) -> Option<u64> {
        let node = self.open(kdl, USAGE_EPOCH);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), "a time in seconds");
        let e = args.first()?;
        self.unsigned(e, "the epoch", u64::MAX)
    }

    fn repository(&mut self, kdl: &KdlNode) -> Option<Repository> {
        let node = self.open(kdl, USAGE_REPOSITORY);
        self.leaf(&node);
        let props = self.props(&node, &["suite", "components", "keyring"]);
        let args = self.args(&node, 1, Some(1), "a repository name");
        let name = args.first().and_then(|e| self.nonempty(e, "the repository name"));
        let suite = self.require(&node, &props, "suite").and_then(|e| self.nonempty(e, "the suite"));
        let components = self
            .require(&node, &props, "components")
            .and_then(|e| self.nonempty(e, "components"))
            .map(|s| s.split_whitespace().map(str::to_owned).collect());
        let keyring = match props.get("keyring") {
            Some(e) => Some(self.nonempty(e, "the keyring")?),
            None => None,
        };
        Some(Repository { name: name?, suite: suite?, components: components?, keyring, span: node.head })
    }

    /// A non-empty (not all-blank) string without NUL.
    fn nonempty(&mut self, e: &KdlEntry, what: &str) -> Option<String> {
        let s = self.string(e, what)?;
        if s.trim().is_empty() || s.contains('\0') {
            self.push("compose::spec::bad_value", format!("{what} must not be empty"), vec![(value_span(e), "empty".to_owned())], None);
            return None;
        }
        Some(s.to_owned())
    }

    fn packages(&mut self, kdl: &KdlNode) -> Vec<PackageReq> {
        let node = self.open(kdl, USAGE_PACKAGES);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, None, "at least one package");
        let mut out = Vec::new();
        for e in args {
            let Some(s) = self.string(e, "a package") else {
                continue;
            };
            let at = value_span(e);
            let (name, version) = match s.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (s, None),
            };
            if !valid_package_name(name) {
                self.push(
                    "compose::spec::bad_package",
                    format!("invalid package name `{name}`"),
                    vec![(at, "invalid package name".to_owned())],
                    Some(
                        "package names are lowercase letters, digits, `+`, `-` and `.`; pin a \
                         version with \"NAME=VERSION\""
                            .to_owned(),
                    ),
                );
                continue;
            }
            if let Some(v) = version {
                if !valid_package_version(v) {
                    self.push(
                        "compose::spec::bad_package",
                        format!("invalid version `{v}` for package `{name}`"),
                        vec![(at, "invalid version".to_owned())],
                        Some("versions start with a digit, like \"NAME=1.36.1-6\"".to_owned()),
                    );
                    continue;
                }
            }
            out.push(PackageReq { name: name.to_owned(), version: version.map(str::to_owned), span: at });
        }
        out
    }

    /// Records an account's name and id, reporting a name or id defined before. True when both
    /// are new.
    fn unique_account(
        &mut self,
        kind: &str,
        (name, name_at): (&String, SourceSpan),
        (id, id_at): (u32, SourceSpan),
        names: &mut Seen<String>,
        ids: &mut Seen<u32>,
    ) -> bool {
        let mut ok = true;
        if let Some(first) = names.first(name.clone(), name_at) {
            ok = false;
            let msg = format!("{kind} `{name}` is defined more than once");
            self.duplicate("compose::spec::duplicate_account", msg, name_at, first, "defined");
        }
        if let Some(first) = ids.first(id, id_at) {
            ok = false;
            let msg = format!("{kind} id {id} is used by more than one {kind}");
            self.duplicate("compose::spec::duplicate_account", msg, id_at, first, "used");
        }
        ok
    }
    fn accounts(&mut self, kdl: &KdlNode) -> Accounts {
        let node = self.open(kdl, USAGE_ACCOUNTS);
        self.props(&node, &[]);
        self.args(&node, 0, Some(0), "");
        let mut acc = Accounts { groups: Vec::new(), users: Vec::new(), span: node.head };
        let mut group_names = Seen::new();
        let mut gids = Seen::new();
        let mut user_names = Seen::new();
        let mut uids = Seen::new();
        let children = kdl.children().map_or(&[][..], |d| d.nodes());
        for c in children {
            match c.name().value() {
                "group" => {
                    let Some((g, name_at, id_at)) = self.group(c) else {
                        continue;
                    };
                    let ids = (g.gid, id_at);
                    if self.unique_account("group", (&g.name, name_at), ids, &mut group_names, &mut gids) {
                        acc.groups.push(g);
                    }
                }
                "user" => {
                    let Some((u, name_at, id_at)) = self.user(c) else {
                        continue;
                    };
                    let ids = (u.uid, id_at);
                    if self.unique_account("user", (&u.name, name_at), ids, &mut user_names, &mut uids) {
                        acc.users.push(u);
                    }
                }
                _ => self.unknown_node(c, "accounts", ACCOUNT_CHILDREN),
            }
        }
        acc
    }

    fn group(&mut self, kdl: &KdlNode) -> Option<(Group, SourceSpan, SourceSpan)> {
        let node = self.open(kdl, USAGE_GROUP);
        self.leaf(&node);
        let props = self.props(&node, &["gid", "members"]);
        let args = self.args(&node, 1, Some(1), "a group name");
        let name_e = args.first().copied();
        let name = name_e.and_then(|e| self.account_name(e, "group"));
        let gid_e = self.require(&node, &props, "gid");
        let gid = gid_e.and_then(|e| self.id(e, "the group id"));
        let mut members = Vec::new();
        let mut members_ok = true;
        if let Some(e) = props.get("members") {
            match self.string(e, "members") {
                Some(s) => {
                    for m in s.split_whitespace() {
                        if valid_account_name(m) {
                            members.push(m.to_owned());
                        } else {
                            members_ok = false;
                            self.push(
                                "compose::spec::bad_name",
                                format!("invalid member name `{m}`"),
                                vec![(value_span(e), "invalid name".to_owned())],
                                Some("members are user names separated by spaces".to_owned()),
                            );
                        }
                    }
                }
                None => members_ok = false,
            }
        }
        let (name, gid, name_e, gid_e) = (name?, gid?, name_e?, gid_e?);
        members_ok.then(|| (Group { name, gid, members, span: node.head }, value_span(name_e), value_span(gid_e)))
    }

    fn user(&mut self, kdl: &KdlNode) -> Option<(User, SourceSpan, SourceSpan)> {
        let node = self.open(kdl, USAGE_USER);
        self.leaf(&node);
        let props = self.props(&node, &["uid", "gid", "home", "shell", "gecos"]);
        let args = self.args(&node, 1, Some(1), "a user name");
        let name_e = args.first().copied();
        let name = name_e.and_then(|e| self.account_name(e, "user"));
        let uid_e = self.require(&node, &props, "uid");
        let uid = uid_e.and_then(|e| self.id(e, "the user id"));
        let mut ok = true;
        let gid = match props.get("gid") {
            Some(e) => {
                let g = self.id(e, "the group id");
                ok &= g.is_some();
                g
            }
            None => None,
        };
        let mut path_prop = |this: &mut Self, key: &str| match props.get(key) {
            Some(e) => {
                let p = this.file_path(e, &format!("the {key} directory"));
                ok &= p.is_some();
                p
            }
            None => None,
        };
        let home = path_prop(self, "home");
        let shell = path_prop(self, "shell");
        let gecos = match props.get("gecos") {
            Some(e) => match self.string(e, "gecos") {
                Some(s) if s.contains([':', '\n', '\0']) => {
                    ok = false;
                    self.push(
                        "compose::spec::bad_value",
                        "gecos must not contain `:` or line breaks",
                        vec![(value_span(e), "not allowed in /etc/passwd".to_owned())],
                        None,
                    );
                    None
                }
                Some(s) => Some(s.to_owned()),
                None => {
                    ok = false;
                    None
                }
            },
            None => None,
        };
        let (name, uid, name_e, uid_e) = (name?, uid?, name_e?, uid_e?);
        if !ok {
            return None;
        }
        let home = home.unwrap_or_else(|| format!("/home/{name}"));
        Some((
            User {
                gid: gid.unwrap_or(uid),
                home,
                shell: shell.unwrap_or_else(|| "/sbin/nologin".to_owned()),
                gecos: gecos.unwrap_or_default(),
                name,
                uid,
                span: node.head,
            },
            value_span(name_e),
            value_span(uid_e),
        ))
    }

    fn layer(&mut self, kdl: &KdlNode) -> Option<(LayerSpec, SourceSpan)> {
        let node = self.open(kdl, USAGE_LAYER);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), "a layer name");
        let name_e = args.first().copied();
        let name = name_e.and_then(|e| self.name(e, "layer"));
        let ops = self.ops(kdl);
        Some((LayerSpec { name: name?, ops, span: node.head }, value_span(name_e?)))
    }

    /// The children of a `files` or `layer` block.
    fn ops(&mut self, parent: &KdlNode) -> Vec<FileOp> {
        let context = parent.name().value();
        let children = parent.children().map_or(&[][..], |d| d.nodes());
        let mut out = Vec::new();
        for c in children {
            let op = match c.name().value() {
                "copy" => self.copy(c),
                "text" => self.text(c),
                "symlink" => self.symlink(c),
                "dir" => self.dir(c),
                _ => {
                    self.unknown_node(c, context, FILE_CHILDREN);
                    None
                }
            };
            out.extend(op);
        }
        out
    }

    fn opt_mode(&mut self, props: &Props, key: &str) -> Result<Option<u32>, ()> {
        match props.get(key) {
            Some(e) => self.mode(e).map(Some).ok_or(()),
            None => Ok(None),
        }
    }

    fn opt_owner(&mut self, props: &Props) -> Result<Option<OwnerSpec>, ()> {
        match props.get("owner") {
            Some(e) => self.owner(e).map(Some).ok_or(()),
            None => Ok(None),
        }
    }

    fn copy(&mut self, kdl: &KdlNode) -> Option<FileOp> {
        let node = self.open(kdl, USAGE_COPY);
        self.leaf(&node);
        let props = self.props(&node, &["to", "mode", "dir-mode", "owner"]);
        let args = self.args(&node, 1, Some(1), "a source path");
        let src = args.first().and_then(|e| {
            let s = self.string(e, "the copy source")?;
            match copy_source(s) {
                Ok(()) => Some((s.to_owned(), value_span(e))),
                Err((code, b)) => {
                    self.bad(code, value_span(e), b);
                    None
                }
            }
        });
        let to = self.require(&node, &props, "to").and_then(|e| self.path(e, "the destination"));
        let mode = self.opt_mode(&props, "mode");
        let dir_mode = self.opt_mode(&props, "dir-mode");
        let owner = self.opt_owner(&props);
        let ((src, src_span), (to, trailing)) = (src?, to?);
        Some(FileOp::Copy {
            src,
            src_span,
            to_dir: trailing,
            to,
            mode: mode.ok()?,
            dir_mode: dir_mode.ok()?,
            owner: owner.ok()?,
            span: node.head,
        })
    }

    fn text(&mut self, kdl: &KdlNode) -> Option<FileOp> {
        let node = self.open(kdl, USAGE_TEXT);
        self.leaf(&node);
        let props = self.props(&node, &["mode", "owner"]);
        let what = if node.args.is_empty() { "a path and the file's content" } else { "the file's content" };
        let args = self.args(&node, 2, Some(2), what);
        let path = args.first().and_then(|e| self.file_path(e, "the path"));
        let content = args.get(1).and_then(|e| self.string(e, "the content")).map(str::to_owned);
        let mode = self.opt_mode(&props, "mode");
        let owner = self.opt_owner(&props);
        Some(FileOp::Text { path: path?, content: content?, mode: mode.ok()?, owner: owner.ok()?, span: node.head })
    }

    fn symlink(&mut self, kdl: &KdlNode) -> Option<FileOp> {
        let node = self.open(kdl, USAGE_SYMLINK);
        self.leaf(&node);
        let props = self.props(&node, &["target", "owner"]);
        let args = self.args(&node, 1, Some(1), "a path");
        let path = args.first().and_then(|e| self.file_path(e, "the link path"));
        let target = self.require(&node, &props, "target").and_then(|e| self.nonempty(e, "the link target"));
        let owner = self.opt_owner(&props);
        Some(FileOp::Symlink { path: path?, target: target?, owner: owner.ok()?, span: node.head })
    }

    fn dir(&mut self, kdl: &KdlNode) -> Option<FileOp> {
        let node = self.open(kdl, USAGE_DIR);
        self.leaf(&node);
        let props = self.props(&node, &["mode", "owner"]);
        let args = self.args(&node, 1, Some(1), "a path");
        let path = args.first().and_then(|e| self.path(e, "the directory"));
        let mode = self.opt_mode(&props, "mode");
        let owner = self.opt_owner(&props);
        Some(FileOp::Dir { path: path?.0, mode: mode.ok()?, owner: owner.ok()?, span: node.head })
    }

    fn config(&mut self, kdl: &KdlNode) -> ConfigSpec {
        let node = self.open(kdl, USAGE_CONFIG);
        self.props(&node, &[]);
        self.args(&node, 0, Some(0), "");
        let mut cfg = ConfigSpec::default();
        let mut seen = Seen::new();
        let children = kdl.children().map_or(&[][..], |d| d.nodes());
        for c in children {
            let cname = c.name().value();
            if matches!(cname, "workdir" | "user" | "entrypoint" | "cmd" | "stop-signal") && !self.once(&mut seen, c) {
                continue;
            }
            match cname {
                "env" => {
                    for (k, v) in self.key_values(c, USAGE_ENV, true) {
                        match cfg.env.iter_mut().find(|(name, _)| *name == k) {
                            Some(slot) => slot.1 = v,
                            None => cfg.env.push((k, v)),
                        }
                    }
                }
                "label" => cfg.labels.extend(self.key_values(c, USAGE_LABEL, false)),
                "workdir" => {
                    if let Some(e) = self.single_string(c, USAGE_WORKDIR, "a directory") {
                        cfg.workdir = self.path(e, "the working directory").map(|p| p.0);
                    }
                }
                "user" => {
                    if let Some(e) = self.single_string(c, USAGE_CONFIG_USER, "a user") {
                        let s = e.value().as_string().unwrap_or_default();
                        match config_user(s) {
                            Ok(()) => cfg.user = Some((s.to_owned(), value_span(e))),
                            Err(b) => self.bad("compose::spec::bad_user", value_span(e), b),
                        }
                    }
                }
                "stop-signal" => {
                    if let Some(e) = self.single_string(c, USAGE_STOP_SIGNAL, "a signal") {
                        let s = e.value().as_string().unwrap_or_default();
                        match stop_signal(s) {
                            Ok(()) => cfg.stop_signal = Some(s.to_owned()),
                            Err(b) => self.bad("compose::spec::bad_signal", value_span(e), b),
                        }
                    }
                }
                "entrypoint" => cfg.entrypoint = self.strings(c, USAGE_ENTRYPOINT, 1),
                "cmd" => cfg.cmd = self.strings(c, USAGE_CMD, 0),
                "expose" => {
                    for p in self.expose(c) {
                        if !cfg.expose.contains(&p) {
                            cfg.expose.push(p);
                        }
                    }
                }
                "volume" => {
                    let node = self.open(c, USAGE_VOLUME);
                    self.leaf(&node);
                    self.props(&node, &[]);
                    for e in self.args(&node, 1, None, "at least one path") {
                        if let Some((p, _)) = self.path(e, "the volume") {
                            if !cfg.volumes.contains(&p) {
                                cfg.volumes.push(p);
                            }
                        }
                    }
                }
                _ => self.unknown_node(c, "config", CONFIG_CHILDREN),
            }
        }
        cfg
    }

    /// `min`+ string arguments, no properties.
    fn strings(&mut self, kdl: &KdlNode, usage: &'static str, min: usize) -> Option<Vec<String>> {
        let node = self.open(kdl, usage);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, min, None, "at least one argument");
        let mut out = Vec::new();
        let mut ok = args.len() >= min;
        for e in args {
            match self.string(e, "each argument") {
                Some(s) => out.push(s.to_owned()),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `env` and `label`: string properties, in order, no arguments.
    fn key_values(&mut self, kdl: &KdlNode, usage: &'static str, env: bool) -> Vec<(String, String)> {
        let node = self.open(kdl, usage);
        self.leaf(&node);
        self.args(&node, 0, Some(0), "");
        if node.props.is_empty() {
            self.push(
                "compose::spec::missing_property",
                format!("`{}` needs at least one NAME=\"value\" property", node.name),
                vec![(node.head, "nothing to set".to_owned())],
                Self::usage(&node),
            );
        }
        let mut out = Vec::new();
        for &e in &node.props {
            let Some(id) = e.name() else { continue };
            let key = id.value();
            let value = self.string(e, "the value");
            let problem = if key.is_empty() {
                Some(if env { "environment variable name is empty".to_owned() } else { "label key is empty".to_owned() })
            } else if env && key.contains('=') {
                Some(format!("environment variable name `{key}` contains `=`"))
            } else if key.contains('\0') || value.is_some_and(|v| v.contains('\0')) {
                Some("NUL characters are not allowed here".to_owned())
            } else {
                None
            };
            if let Some(message) = problem {
                let code = if env { "compose::spec::bad_env" } else { "compose::spec::bad_label" };
                self.push(code, message, vec![(id.span(), "invalid name".to_owned())], None);
                continue;
            }
            if let Some(v) = value {
                out.push((key.to_owned(), v.to_owned()));
            }
        }
        out
    }

    fn expose(&mut self, kdl: &KdlNode) -> Vec<String> {
        let node = self.open(kdl, USAGE_EXPOSE);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, None, "at least one port");
        let mut out = Vec::new();
        for e in args {
            let at = value_span(e);
            let port = match e.value() {
                KdlValue::Integer(i) => match u16::try_from(*i) {
                    Ok(n) if n > 0 => Ok(format!("{n}/tcp")),
                    _ => Err(Bad::new(format!("port `{i}` is out of range"), "ports are 1 to 65535")),
                },
                KdlValue::String(s) => expose_string(s),
                _ => {
                    self.wrong_type(e, "an integer or a string", "a port");
                    continue;
                }
            };
            match port {
                Ok(p) => out.push(p),
                Err(b) => self.bad("compose::spec::bad_port", at, b),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the language description, verbatim.
    const EXAMPLE: &str = r#"image "web" {
    tag "1.4.2"                                  // default "latest"
    platforms "linux/amd64" "linux/arm64"        // default: linux/amd64 (also accept variants like linux/arm/v7)
    base "scratch"                               // default scratch; or "REGISTRY/REPO:TAG", "...@sha256:<64hex>", "oci:PATH[:TAG]", "oci-archive:PATH", "docker-archive:PATH", or base image="NAME" (another image of this file)
    epoch 1700000000                             // u64 seconds
    repository "debian" suite="bookworm" components="main" keyring="/usr/share/keyrings/debian-archive-keyring.gpg"  // components: space-separated string; keyring optional
    packages "busybox-static" "ca-certificates"  // may repeat; "name=version" pins a version
    accounts {
        group "app" gid=10001                    // optional members="a b"? (accept optional `members` list as space-separated string)
        user "app" uid=10001 gid=10001 home="/home/app" shell="/bin/sh"   // gid, home, shell optional (defaults: gid=uid, home="/home/NAME", shell="/sbin/nologin"); optional gecos="..."
    }
    files {
        copy "site/" to="/srv/www"                             // a directory, recursively (or a file)
        copy "bin/server" to="/usr/local/bin/server" mode=0o755
        text "/etc/motd" "built with compose\n" mode=0o644
        symlink "/bin/sh" target="/bin/busybox"
        dir "/var/cache/app" mode=0o750 owner="app"
    }
    layer "assets" {                             // same children as files; its files go in a layer of their own; names unique within the image
        copy "assets/" to="/srv/assets"
    }
    config {
        env PATH="/usr/local/bin:/usr/bin:/bin" TZ="Etc/UTC"   // properties; may repeat; keep order; later same name replaces
        workdir "/srv"
        user "app"                                             // a name, "uid", or "uid:gid"
        entrypoint "/usr/local/bin/server"                     // 1+ string args
        cmd "--port" "8080"                                    // 0+ string args (cmd with no args = explicit empty cmd)
        expose 8080 "53/udp"                                   // ints or "PORT[/tcp|/udp|/sctp]"; normalize to "8080/tcp"
        volume "/data"                                         // 1+ absolute paths
        label "org.opencontainers.image.source"="https://example.invalid/web"   // properties, may repeat
        stop-signal "SIGTERM"
    }
}
"#;

    fn render(diagnostic: &dyn Diagnostic) -> String {
        let mut out = String::new();
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .render_report(&mut out, diagnostic)
            .expect("rendering into a String does not fail");
        out
    }

    fn parse_err(text: &str) -> SpecError {
        match parse_str(Path::new("web.kdl"), text) {
            Ok(spec) => panic!("expected errors, parsed {} image(s)", spec.images.len()),
            Err(e) => e,
        }
    }

    fn parse_ok(text: &str) -> SpecFile {
        match parse_str(Path::new("web.kdl"), text) {
            Ok(spec) => spec,
            Err(e) => panic!("expected success:\n{}", render(&e)),
        }
    }

    fn codes(e: &SpecError) -> Vec<&'static str> {
        e.diagnostics().iter().map(|d| d.code.trim_start_matches("compose::spec::")).collect()
    }

    /// Snapshot at `src/snapshots/<name>.snap` whatever the module path.
    fn snapshot(name: &str, value: &str) {
        let mut settings = insta::Settings::clone_current();
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| insta::assert_snapshot!(name, value));
    }

    /// Parses `text`, expects exactly the error codes `expected` (in source
    /// order) and snapshots the rendered report.
    fn check(name: &str, text: &str, expected: &[&str]) {
        let e = parse_err(text);
        assert_eq!(codes(&e), expected, "\n{}", render(&e));
        snapshot(name, &render(&e));
    }

    fn span_text(spec: &SpecFile, span: SourceSpan) -> &str {
        &spec.text()[span.offset()..span.offset() + span.len()]
    }

    #[test]
    fn example_decodes() {
        let spec = parse_ok(EXAMPLE);
        assert_eq!(spec.path, Path::new("web.kdl"));
        assert_eq!(spec.dir, Path::new("."));
        assert_eq!(spec.images.len(), 1);
        let img = spec.image("web").expect("image web");
        assert_eq!(img.name, "web");
        assert_eq!(span_text(&spec, img.span), "image \"web\"");
        assert_eq!(img.tag, "1.4.2");
        let platforms: Vec<String> = img.platforms.iter().map(|p| p.to_string()).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
        assert_eq!(img.base, Base::Scratch);
        assert_eq!(img.epoch, Some(1_700_000_000));

        assert_eq!(img.repositories.len(), 1);
        let repo = &img.repositories[0];
        assert_eq!(repo.name, "debian");
        assert_eq!(repo.suite, "bookworm");
        assert_eq!(repo.components, ["main"]);
        assert_eq!(repo.keyring.as_deref(), Some("/usr/share/keyrings/debian-archive-keyring.gpg"));
        assert!(span_text(&spec, repo.span).starts_with("repository \"debian\" suite="));
        assert!(span_text(&spec, repo.span).ends_with(".gpg\""));

        let pkgs: Vec<(&str, Option<&str>)> = img.packages.iter().map(|p| (p.name.as_str(), p.version.as_deref())).collect();
        assert_eq!(pkgs, [("busybox-static", None), ("ca-certificates", None)]);
        assert_eq!(span_text(&spec, img.packages[1].span), "\"ca-certificates\"");

        let acc = img.accounts.as_ref().expect("accounts");
        assert_eq!(span_text(&spec, acc.span), "accounts");
        assert_eq!(acc.groups.len(), 1);
        assert_eq!((acc.groups[0].name.as_str(), acc.groups[0].gid, acc.groups[0].members.len()), ("app", 10001, 0));
        assert_eq!(span_text(&spec, acc.groups[0].span), "group \"app\" gid=10001");
        let u = &acc.users[0];
        assert_eq!(
            (u.name.as_str(), u.uid, u.gid, u.home.as_str(), u.shell.as_str(), u.gecos.as_str()),
            ("app", 10001, 10001, "/home/app", "/bin/sh", "")
        );

        assert_eq!(img.files.len(), 5);
        match &img.files[0] {
            FileOp::Copy { src, src_span, to, to_dir, mode, dir_mode, owner, span } => {
                assert_eq!((src.as_str(), to.as_str(), *to_dir), ("site/", "/srv/www", false));
                assert_eq!((*mode, *dir_mode, owner), (None, None, &None));
                assert_eq!(span_text(&spec, *src_span), "\"site/\"");
                assert_eq!(span_text(&spec, *span), "copy \"site/\" to=\"/srv/www\"");
            }
            other => panic!("expected copy, got {other:?}"),
        }
        match &img.files[1] {
            FileOp::Copy { src, to, mode, .. } => {
                assert_eq!((src.as_str(), to.as_str(), *mode), ("bin/server", "/usr/local/bin/server", Some(0o755)));
            }
            other => panic!("expected copy, got {other:?}"),
        }
        match &img.files[2] {
            FileOp::Text { path, content, mode, owner, .. } => {
                assert_eq!((path.as_str(), content.as_str(), *mode, owner), ("/etc/motd", "built with compose\n", Some(0o644), &None));
            }
            other => panic!("expected text, got {other:?}"),
        }
        match &img.files[3] {
            FileOp::Symlink { path, target, owner, .. } => {
                assert_eq!((path.as_str(), target.as_str(), owner), ("/bin/sh", "/bin/busybox", &None));
            }
            other => panic!("expected symlink, got {other:?}"),
        }
        match &img.files[4] {
            FileOp::Dir { path, mode, owner, .. } => {
                assert_eq!((path.as_str(), *mode), ("/var/cache/app", Some(0o750)));
                let owner = owner.as_ref().expect("owner");
                assert_eq!(owner.owner, Owner::Name("app".to_owned()));
                assert_eq!(span_text(&spec, owner.span), "\"app\"");
            }
            other => panic!("expected dir, got {other:?}"),
        }

        assert_eq!(img.layers.len(), 1);
        assert_eq!(img.layers[0].name, "assets");
        assert_eq!(span_text(&spec, img.layers[0].span), "layer \"assets\"");
        assert!(matches!(
            img.layers[0].ops.as_slice(),
            [FileOp::Copy { src, to, .. }] if src == "assets/" && to == "/srv/assets"
        ));

        let c = &img.config;
        assert_eq!(c.env, [("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()), ("TZ".to_owned(), "Etc/UTC".to_owned())]);
        assert_eq!(c.workdir.as_deref(), Some("/srv"));
        let (user, user_span) = c.user.as_ref().expect("user");
        assert_eq!(user, "app");
        assert_eq!(span_text(&spec, *user_span), "\"app\"");
        assert_eq!(c.entrypoint.as_deref(), Some(&["/usr/local/bin/server".to_owned()][..]));
        assert_eq!(c.cmd.as_deref(), Some(&["--port".to_owned(), "8080".to_owned()][..]));
        assert_eq!(c.expose, ["8080/tcp", "53/udp"]);
        assert_eq!(c.volumes, ["/data"]);
        assert_eq!(c.labels.get("org.opencontainers.image.source").map(String::as_str), Some("https://example.invalid/web"));
        assert_eq!(c.labels.len(), 1);
        assert_eq!(c.stop_signal.as_deref(), Some("SIGTERM"));
    }

    #[test]
    fn defaults_and_normalization() {
        let spec = parse_ok(
            r#"
image "min"
image "app" {
    base image="min"
    platforms "linux/arm/v7" "linux/arm64/v8"
    packages "curl=7.88.1-10+deb12u5"
    packages "libc6"
    accounts {
        group "staff" gid=50 members="alice  bob"
        user "alice" uid=1000 gecos="Alice A"
        user "bob" uid=1001 gid=4242
    }
    files {
        copy "conf" to="/etc/app/"
        copy "." to="/"
        text "/srv/x/" ""
        dir "/" mode=0 owner="0:0"
        dir "/opt/" mode=7
    }
    files {
        symlink "/usr/bin/python" target="python3" owner="1:2"
    }
    config {
        env A="1" B="2"
        env A="3"
        label "x"="1"
        label "x"="2"
        cmd
        expose "8080" "8080/TCP" 8080 "9/sctp"
        volume "/data/" "/data"
        user "1000:1000"
        stop-signal "9"
    }
}
image "c" { base "registry.example.invalid:5000/team/app:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; }
image "d" { base "oci:layouts/app:v2"; }
image "e" { base "oci:/abs/layout"; }
image "f" { base "oci-archive:app.tar"; }
image "g" { base "docker-archive:app.tar"; }
image "h" { base "localhost/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; }
"#,
        );
        let min = spec.image("min").expect("min");
        assert_eq!(min.tag, "latest");
        assert_eq!(min.platforms, [Platform::linux_amd64()]);
        assert_eq!(min.base, Base::Scratch);
        assert_eq!(min.epoch, None);
        assert!(min.accounts.is_none() && min.files.is_empty() && min.layers.is_empty());
        assert_eq!(min.config, ConfigSpec::default());

        let app = spec.image("app").expect("app");
        assert!(matches!(&app.base, Base::Image { name, span } if name == "min" && span_text(&spec, *span) == "\"min\""));
        let platforms: Vec<String> = app.platforms.iter().map(|p| p.to_string()).collect();
        assert_eq!(platforms, ["linux/arm/v7", "linux/arm64/v8"]);
        assert_eq!(app.platforms[0].variant.as_deref(), Some("v7"));
        assert_eq!(app.packages[0].version.as_deref(), Some("7.88.1-10+deb12u5"));
        assert_eq!(app.packages[1].name, "libc6");
        let acc = app.accounts.as_ref().expect("accounts");
        assert_eq!(acc.groups[0].members, ["alice", "bob"]);
        let alice = &acc.users[0];
        assert_eq!(
            (alice.gid, alice.home.as_str(), alice.shell.as_str(), alice.gecos.as_str()),
            (1000, "/home/alice", "/sbin/nologin", "Alice A")
        );
        // A gid that names no group of the block is fine.
        assert_eq!((acc.users[1].name.as_str(), acc.users[1].gid), ("bob", 4242));
        let ops: Vec<String> = app
            .files
            .iter()
            .map(|op| match op {
                FileOp::Copy { src, to, to_dir, .. } => format!("copy {src} {to} {to_dir}"),
                FileOp::Text { path, content, .. } => format!("text {path} {content:?}"),
                FileOp::Symlink { path, target, owner, .. } => {
                    format!("symlink {path} {target} {:?}", owner.as_ref().map(|o| &o.owner))
                }
                FileOp::Dir { path, mode, owner, .. } => {
                    format!("dir {path} {mode:?} {:?}", owner.as_ref().map(|o| &o.owner))
                }
            })
            .collect();
        assert_eq!(
            ops,
            [
                "copy conf /etc/app true",
                "copy . / true",
                "text /srv/x \"\"",
                "dir / Some(0) Some(Ids(0, 0))",
                "dir /opt Some(7) None",
                "symlink /usr/bin/python python3 Some(Ids(1, 2))",
            ]
        );
        let c = &app.config;
        assert_eq!(c.env, [("A".to_owned(), "3".to_owned()), ("B".to_owned(), "2".to_owned())]);
        assert_eq!(c.labels.get("x").map(String::as_str), Some("2"));
        assert_eq!(c.cmd, Some(Vec::new()));
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.expose, ["8080/tcp", "9/sctp"]);
        assert_eq!(c.volumes, ["/data"]);
        assert_eq!(c.user.as_ref().map(|u| u.0.as_str()), Some("1000:1000"));
        assert_eq!(c.stop_signal.as_deref(), Some("9"));

        assert!(
            matches!(&spec.image("c").expect("c").base, Base::Registry { reference, .. } if reference.starts_with("registry.example.invalid:5000/team/app:v1@sha256:"))
        );
        assert!(
            matches!(&spec.image("d").expect("d").base, Base::OciLayout { path, tag: Some(t), .. } if path == "layouts/app" && t == "v2")
        );
        assert!(matches!(&spec.image("e").expect("e").base, Base::OciLayout { path, tag: None, .. } if path == "/abs/layout"));
        assert!(matches!(&spec.image("f").expect("f").base, Base::OciArchive { path, .. } if path == "app.tar"));
        assert!(matches!(&spec.image("g").expect("g").base, Base::DockerArchive { path, .. } if path == "app.tar"));
        assert!(matches!(&spec.image("h").expect("h").base, Base::Registry { .. }));
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("tga", IMAGE_CHILDREN), Some("tag"));
        assert_eq!(suggest("platform", IMAGE_CHILDREN), Some("platforms"));
        assert_eq!(suggest("package", IMAGE_CHILDREN), Some("packages"));
        assert_eq!(suggest("cp", FILE_CHILDREN), Some("copy"));
        assert_eq!(suggest("stopsignal", CONFIG_CHILDREN), Some("stop-signal"));
        assert_eq!(suggest("entry-point", CONFIG_CHILDREN), Some("entrypoint"));
        assert_eq!(suggest("volumes", CONFIG_CHILDREN), Some("volume"));
        assert_eq!(suggest("dirmode", &["to", "mode", "dir-mode", "owner"]), Some("dir-mode"));
        assert_eq!(suggest("homedir", &["uid", "gid", "home", "shell", "gecos"]), Some("home"));
        assert_eq!(suggest("frobnicate", FILE_CHILDREN), None);
        assert_eq!(suggest("from", IMAGE_CHILDREN), None);
        assert_eq!(suggest("x", FILE_CHILDREN), None);
    }

    #[test]
    fn kdl_syntax_error() {
        check("spec_syntax", "image \"web\" {\n    tag 1.\n    cmd \"unterminated\n}\n", &["syntax", "syntax"]);
    }

    #[test]
    fn unknown_node() {
        check(
            "spec_unknown_node",
            r#"image "web" {
    tga "1.0"
    files {
        coppy "site/" to="/srv/www"
        frobnicate "x"
    }
    env TZ="UTC"
}
imag "other"
"#,
            &["unknown_node", "unknown_node", "unknown_node", "misplaced_node", "unknown_node"],
        );
    }

    #[test]
    fn unknown_property() {
        check(
            "spec_unknown_property",
            r#"image "web" {
    files {
        copy "site/" to="/srv" mdoe=0o644
        dir "/var/x" colour="red"
    }
    tag "1" latest=#true
    accounts {
        user "app" uid=1 homedir="/app"
    }
}
"#,
            &["unknown_property", "unknown_property", "unknown_property", "unknown_property"],
        );
    }

    #[test]
    fn wrong_type() {
        check(
            "spec_wrong_type",
            r#"image "web" {
    tag 1
    epoch "1700000000"
    platforms #true
    accounts {
        group "app" gid="10"
    }
    config {
        env PORT=8080
        expose 1.5
        cmd "--port" 8080
    }
}
"#,
            &["wrong_type"; 7],
        );
    }

    #[test]
    fn missing_arguments_and_properties() {
        check(
            "spec_missing",
            r#"image {
    tag
    files {
        copy "site/"
        text "/etc/motd"
        symlink "/bin/sh"
    }
    repository "debian" suite="bookworm"
    accounts {
        user "app"
    }
    config {
        entrypoint
        env
    }
}
"#,
            &[
                "missing_argument",
                "missing_argument",
                "missing_property",
                "missing_argument",
                "missing_property",
                "missing_property",
                "missing_property",
                "missing_argument",
                "missing_property",
            ],
        );
    }

    #[test]
    fn too_many_arguments() {
        check(
            "spec_too_many_arguments",
            r#"image "web" "extra" {
    tag "a" "b" "c"
    files "x" {
        dir "/a" "/b"
    }
    config {
        workdir "/srv" "/tmp"
        env "PATH" PATH="/bin"
    }
}
"#,
            &["too_many_arguments"; 6],
        );
    }

    #[test]
    fn duplicates_of_singletons_and_properties() {
        check(
            "spec_duplicate_node",
            r#"image "web" {
    tag "1"
    config {
        cmd "a"
    }
    tag "2"
    config {
        cmd "b"
    }
    files {
        copy "a" to="/a" mode=0o644 mode=0o600
    }
    platforms "linux/amd64" "linux/amd64"
    config
}
"#,
            &["duplicate_node", "duplicate_node", "duplicate_property", "duplicate_platform", "duplicate_node"],
        );
    }

    #[test]
    fn bad_modes() {
        check(
            "spec_bad_mode",
            r#"image "web" {
    files {
        text "/a" "x" mode=755
        text "/b" "x" mode=0o17777
        dir "/c" mode="0755"
        dir "/d" mode=0x1ed
        copy "e" to="/e" dir-mode=-1
        dir "/f" mode=0
        dir "/g" mode=0o750
        dir "/h" mode=999
        dir "/i" mode=0b111111
    }
}
"#,
            &["bad_mode", "bad_mode", "wrong_type", "bad_mode", "bad_mode", "bad_mode", "bad_mode"],
        );
    }

    #[test]
    fn bad_paths() {
        check(
            "spec_bad_path",
            r#"image "web" {
    files {
        copy "site/" to="srv/www"
        text "/etc/../passwd" "x"
        dir "/var//cache"
        symlink "/./bin" target="busybox"
        text "/" "x"
    }
    accounts {
        user "app" uid=1 home="home/app"
    }
    config {
        workdir "srv"
        volume "/data" "relative"
    }
}
"#,
            &["bad_path"; 8],
        );
    }

    #[test]
    fn copy_source_escapes() {
        check(
            "spec_source_escapes",
            r#"image "web" {
    files {
        copy "../secret" to="/x"
        copy "a/../../b" to="/y"
        copy "a/../b" to="/ok"
        copy "/etc/hosts" to="/etc/hosts"
        copy "" to="/empty"
    }
}
"#,
            &["source_escapes", "source_escapes", "bad_source"],
        );
    }

    #[test]
    fn duplicate_image() {
        check(
            "spec_duplicate_image",
            r#"image "web" {
    tag "1"
}
image "api"
image "web" {
    tag "2"
}
"#,
            &["duplicate_image"],
        );
    }

    #[test]
    fn duplicate_layer_and_bad_names() {
        check(
            "spec_duplicate_layer",
            r#"image "web" {
    layer "assets" {
        copy "a" to="/a"
    }
    layer "code"
    layer "assets" {
        copy "b" to="/b"
    }
    layer "two words"
}
image "-web"
"#,
            &["duplicate_layer", "bad_name", "bad_name"],
        );
    }

    #[test]
    fn duplicate_accounts() {
        check(
            "spec_duplicate_accounts",
            r#"image "web" {
    accounts {
        group "app" gid=10001
        group "app" gid=10002
        group "other" gid=10001
        user "app" uid=10001
        user "app" uid=10002
        user "svc" uid=10001 gid=20000
        user "ok" uid=10003 gid=20000
        user "root!" uid=-1
    }
}
"#,
            &["duplicate_account", "duplicate_account", "duplicate_account", "duplicate_account", "bad_name", "out_of_range"],
        );
    }

    #[test]
    fn bad_owners() {
        check(
            "spec_bad_owner",
            r#"image "web" {
    files {
        dir "/a" owner="1000"
        dir "/b" owner="app:staff"
        dir "/c" owner="bad name"
        dir "/d" owner="1000:"
        dir "/e" owner="0:0"
        dir "/f" owner="app"
        dir "/g" owner="1:99999999999"
    }
}
"#,
            &["bad_owner"; 5],
        );
    }

    #[test]
    fn bad_platforms() {
        check(
            "spec_bad_platform",
            r#"image "web" {
    platforms "linux/amd46" "linx/amd64" "linux" "linux/arm/v9" "linux/x86_64" "linux/s390x/v1" "linux/arm64"
}
"#,
            &["bad_platform"; 6],
        );
    }

    #[test]
    fn bad_expose() {
        check(
            "spec_bad_port",
            r#"image "web" {
    config {
        expose 0 70000 "53/icmp" "http" "8080/TCP" 8080 "0/udp" #false
    }
}
"#,
            &["bad_port", "bad_port", "bad_port", "bad_port", "bad_port", "wrong_type"],
        );
    }

    #[test]
    fn bad_env_and_labels() {
        check(
            "spec_bad_env",
            r#"image "web" {
    config {
        env ""="x" "A=B"="y" PATH="/bin"
        env PORT=8080
        label ""="x"
        label
    }
}
"#,
            &["bad_env", "bad_env", "wrong_type", "bad_label", "missing_property"],
        );
    }

    #[test]
    fn bad_base_references() {
        check(
            "spec_bad_base",
            r#"image "a" { base "debian:bookworm"; }
image "b" { base "docker.io/library/debian"; }
image "c" { base "docker.io/library/debian@sha256:1234"; }
image "d" { base "oci:"; }
image "e" { base "https://example.invalid/x:1"; }
image "f" { base "docker.io/Library/Debian:12"; }
image "g" { base "docker.io/library/debian:bookworm" image="a"; }
image "h" { base "oci:layout:-bad"; }
image "i" { base; }
"#,
            &["bad_base"; 8].iter().copied().chain(["missing_argument"]).collect::<Vec<_>>(),
        );
    }

    #[test]
    fn base_image_references() {
        check(
            "spec_base_image",
            r#"image "web" { base image="web"; }
image "api" { base image="wbe"; }
image "x" { base image="y"; }
image "y" { base image="z"; }
image "z" { base image="x"; }
image "ok" { base image="web"; }
"#,
            &["self_base", "unknown_image", "base_cycle"],
        );
    }

    #[test]
    fn packages_tags_users_signals() {
        check(
            "spec_bad_values",
            r#"image "web" {
    tag "-bad"
    repository "debian" suite="bookworm" components="  "
    packages "busybox" "BusyBox" "curl=7.88" "curl" "x=" "libc6=abc"
    config {
        user "app:staff"
        stop-signal "TERM"
    }
}
"#,
            &["bad_tag", "bad_value", "bad_package", "duplicate_package", "bad_package", "bad_package", "bad_user", "bad_signal"],
        );
    }

    #[test]
    fn children_and_type_annotations() {
        check(
            "spec_unexpected_children",
            r#"image "web" {
    tag "1" {
        latest
    }
    (u8)epoch 5
    files {
        dir (path)"/x" {}
    }
}
"#,
            &["unexpected_children", "type_annotation", "unexpected_children", "type_annotation"],
        );
    }

    #[test]
    fn no_images() {
        check("spec_no_images", "// nothing here\n", &["no_images"]);
    }

    #[test]
    fn spans_are_bytes_after_non_ascii() {
        let text = "image \"web\" {\n    files {\n        text \"/etc/motd\" \"héllo wörld ✓\" mode=644\n    }\n}\n";
        let e = parse_err(text);
        assert_eq!(codes(&e), ["bad_mode"]);
        let span = e.diagnostics()[0].primary_span().expect("span");
        assert_eq!(&text[span.offset()..span.offset() + span.len()], "644");
        snapshot("spec_non_ascii", &render(&e));
    }

    #[test]
    fn single_error_renders_flat() {
        let e = parse_err("image \"web\" {\n    tga \"1\"\n}\n");
        assert_eq!(e.to_string(), "unknown node `tga` in `image`");
        assert_eq!(e.code().map(|c| c.to_string()).as_deref(), Some("compose::spec::unknown_node"));
        let e = parse_err("image \"web\" {\n    tga \"1\"\n    tga \"2\"\n}\n");
        assert_eq!(e.to_string(), "2 errors in spec file `web.kdl`");
        assert_eq!(e.code().map(|c| c.to_string()).as_deref(), Some("compose::spec::invalid"));
        // Usable with `?` in code returning miette::Result.
        let report: miette::Report = e.into();
        assert_eq!(report.to_string(), "2 errors in spec file `web.kdl`");
    }

    #[test]
    fn later_stage_errors() {
        let spec = parse_ok(EXAMPLE);
        let img = spec.image("web").expect("web");
        let FileOp::Copy { src_span, .. } = &img.files[1] else { panic!("expected copy") };
        let e = spec.error_at(
            *src_span,
            "copy source `bin/server` does not exist",
            "no such file",
            Some("paths are relative to the spec directory `.`".to_owned()),
        );
        snapshot("spec_error_at", &render(&e));
        let owner = img.files[4].owner().expect("owner").span;
        let diags = vec![
            spec.diagnostic("compose::build::unknown_owner", owner, "unknown owner `app`", "not a user of the image", None),
            spec.diagnostic("compose::build::missing_source", *src_span, "copy source `bin/server` does not exist", "no such file", None),
        ];
        let e = spec.report(diags).expect_err("two diagnostics");
        assert_eq!(codes(&e), ["compose::build::missing_source", "compose::build::unknown_owner"]);
        snapshot("spec_report", &render(&e));
        assert!(spec.report(Vec::new()).is_ok());
    }

    #[test]
    fn parse_file_reads_and_names_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("web.kdl");
        std::fs::write(&path, EXAMPLE).expect("write");
        let spec = parse_file(&path).expect("parses");
        assert_eq!(spec.dir, tmp.path());
        assert_eq!(spec.source.name(), path.display().to_string());
        assert_eq!(spec.images[0].name, "web");
    }

    #[test]
    fn non_utf8_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("bad.kdl");
        // Line 3 is `    // hé <0xff> here`: the bad byte is the 12th byte of the
        // line (the 11th character: `é` takes two bytes).
        let bytes = b"image \"web\" {\n    tag \"1\"\n    // h\xc3\xa9 \xff here\n}\n";
        std::fs::write(&path, bytes).expect("write");
        let e = parse_file(&path).expect_err("not UTF-8");
        match &e {
            SpecError::NotUtf8 { line, column, byte, .. } => {
                assert_eq!((*line, *column, *byte), (3, 12, 0xff));
            }
            other => panic!("expected NotUtf8, got {other:?}"),
        }
        let message = e.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("line 3, column 12"), "{message}");
        let shown = render(&e).replace(&tmp.path().display().to_string(), "<tmp>");
        snapshot("spec_not_utf8", &shown);
    }

    #[test]
    fn unreadable_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let e = parse_file(tmp.path()).expect_err("a directory");
        assert!(matches!(e, SpecError::Read { .. }));
        let shown = render(&e).replace(&tmp.path().display().to_string(), "<tmp>");
        snapshot("spec_read_directory", &shown);

        let missing = tmp.path().join("missing.kdl");
        let e = parse_file(&missing).expect_err("missing");
        assert!(e.to_string().contains(&missing.display().to_string()));
        let shown = render(&e).replace(&tmp.path().display().to_string(), "<tmp>");
        snapshot("spec_read_missing", &shown);
    }
}
