//! The KDL decoder's core: the vocabulary (node names and usage strings), span
//! helpers, and [`Decoder`] with its generic node handling (arguments,
//! properties, singletons, unknown nodes). Each kind of node is decoded in a
//! module of its own:
//!
//! * `document`: the top level, and the checks that need every image and step;
//! * `image`: an `image` block and its leaf children (tag, platforms, base,
//!   repositories, packages, variant, compression);
//! * `accounts`: an image's `accounts { group …; user … }`;
//! * `files`: `files` and `layer` blocks and their file operations;
//! * `config`: an image's `config { … }` (commands, health check, ports);
//! * `step`: a `step` block with its limits, secrets and host mounts;
//! * `entries`: one entry into a checked value (string, integer, mode, owner,
//!   path, name) and the leaf shapes shared by the others.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use kdl::{KdlEntry, KdlNode};
use miette::{NamedSource, SourceSpan};

use super::values::{home_of, one_of, suggest, Bad};
use super::SpecDiagnostic;

mod accounts;
mod config;
mod document;
mod entries;
mod files;
mod image;
mod step;

/// "did you mean `X`?" when a known name is close to `name`, else `what: A, B or C`.
fn known_names_help(name: &str, known: &[&str], what: &str) -> String {
    match suggest(name, known) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("{what}: {}", one_of(known)),
    }
}

// ---------------------------------------------------------------------------
// The vocabulary
// ---------------------------------------------------------------------------

const TOP_CHILDREN: &[&str] = &["arg", "build", "image", "repository", "step"];
const BUILD_CHILDREN: &[&str] = &["max-layers", "compression", "epoch"];
pub(super) const IMAGE_CHILDREN: &[&str] = &[
    "tag",
    "platforms",
    "base",
    "epoch",
    "repository",
    "packages",
    "accounts",
    "files",
    "layer",
    "config",
    "export",
    "variant",
    "maintainer-scripts",
    "compression",
];
pub(super) const STEP_CHILDREN: &[&str] = &[
    "image",
    "platform",
    "copy",
    "text",
    "symlink",
    "dir",
    "workdir",
    "env",
    "user",
    "run",
    "output",
    "network",
    "pass-env",
    "limits",
    "secret",
    "mount-from-host",
    "cache",
];
const LIMIT_CHILDREN: &[&str] = &["pids", "memory", "cpus", "time", "disk"];
const ACCOUNT_CHILDREN: &[&str] = &["group", "user"];
pub(super) const FILE_CHILDREN: &[&str] = &["copy", "text", "symlink", "dir"];
pub(super) const CONFIG_CHILDREN: &[&str] =
    &["env", "workdir", "user", "entrypoint", "cmd", "expose", "volume", "label", "stop-signal", "healthcheck"];

const USAGE_IMAGE: &str = "image \"NAME\" { ... }";
const USAGE_TAG: &str = "tag \"1.0\"";
const USAGE_PLATFORMS: &str = "platforms \"linux/amd64\" \"linux/arm64\"";
const USAGE_BASE: &str =
    "base \"REGISTRY/REPO:TAG\" (or \"oci:PATH\", \"oci-archive:PATH\", \"docker-archive:PATH\", \"scratch\"), or base image=\"OTHER\"";
const USAGE_EPOCH: &str = "epoch 1700000000";
const USAGE_BUILD: &str = "build { max-layers 8; compression \"zstd\"; epoch 1700000000 }";
const USAGE_MAX_LAYERS: &str = "max-layers 8 (from 2 to 127)";
const USAGE_REPOSITORY: &str = "repository \"debian\" suite=\"bookworm\" components=\"main\" keyring=\"/path/to/keyring.gpg\"";
const USAGE_PACKAGES: &str = "packages \"busybox-static\" \"ca-certificates=20230311\"";
const USAGE_ACCOUNTS: &str = "accounts { group ...; user ... }";
const USAGE_GROUP: &str = "group \"app\" gid=10001 members=\"alice bob\"";
const USAGE_USER: &str = "user \"app\" uid=10001 gid=10001 home=\"/home/app\" shell=\"/bin/sh\" gecos=\"App\"";
const USAGE_FILES: &str = "files { copy ...; text ...; symlink ...; dir ... }";
const USAGE_LAYER: &str = "layer \"NAME\" { copy ...; text ...; symlink ...; dir ... }";
const USAGE_COPY: &str =
    "copy \"SOURCE\" to=\"/DEST\" mode=0o644 dir-mode=0o755 owner=\"NAME\" (or copy from=\"STEP-OR-IMAGE\" \"/PATH\" to=\"/DEST\")";
const USAGE_STEP: &str = "step \"NAME\" { image \"IMAGE\"; copy ...; run \"PROGRAM\" \"ARG\"...; output \"/out\" }";
const USAGE_STEP_IMAGE: &str = "image \"NAME\" (an image of this file)";
const USAGE_STEP_PLATFORM: &str = "platform \"build\" (or one platform, such as \"linux/amd64\")";
const USAGE_RUN: &str = "run \"go\" \"build\" \"-o\" \"/out/app\" \".\"";
const USAGE_OUTPUT: &str = "output \"/out\"";
const USAGE_STEP_USER: &str = "user \"UID:GID\" (numeric, e.g. \"1000:1000\")";
const USAGE_NETWORK: &str = "network #true";
const USAGE_EXPORT: &str = "export #false";
const USAGE_SCRIPTS: &str = "maintainer-scripts \"run\" (or \"emulate\")";
const USAGE_VARIANT: &str = "variant \"minbase\" (or \"essential\", \"custom\")";
const USAGE_COMPRESSION: &str = "compression \"zstd\" (or \"gzip\")";
const USAGE_PASS_ENV: &str = "pass-env \"PIP_INDEX_URL\" \"HTTPS_PROXY\"";
const USAGE_LIMITS: &str = "limits { pids 4096; memory \"4GiB\"; cpus 2; time \"30m\"; disk \"10GiB\" }";
const USAGE_SECRET: &str = "secret \"npm-token\" env=\"NPM_TOKEN\" (or target=\"/run/secrets/npm-token\", required=#false)";
const USAGE_CACHE: &str = "cache \"/root/.cargo/registry\" \"/src/target\" sharing=\"locked\" (or \"shared\", \"private\")";
const USAGE_HOST_MOUNT: &str = "mount-from-host \"/run/host.sock\" to=\"/run/host.sock\"";
const USAGE_TEXT: &str = "text \"/PATH\" \"CONTENT\" mode=0o644 owner=\"NAME\"";
const USAGE_SYMLINK: &str = "symlink \"/PATH\" target=\"TARGET\" owner=\"NAME\"";
const USAGE_DIR: &str = "dir \"/PATH\" mode=0o755 owner=\"NAME\"";
const USAGE_CONFIG: &str = "config { env ...; workdir ...; user ...; cmd ...; ... }";
const USAGE_ENV: &str = "env NAME=\"value\" OTHER=\"value\"";
const USAGE_WORKDIR: &str = "workdir \"/PATH\"";
const USAGE_CONFIG_USER: &str = "user \"NAME\" (or \"UID\" or \"UID:GID\")";
const USAGE_ENTRYPOINT: &str = "entrypoint \"/usr/bin/app\" \"--flag\"";
const USAGE_CMD: &str = "cmd \"--port\" \"8080\"";
const USAGE_HEALTHCHECK: &str = "healthcheck \"curl\" \"-f\" \"http://localhost/\" interval=\"30s\" timeout=\"5s\" retries=3";
const USAGE_EXPOSE: &str = "expose 8080 \"53/udp\"";
const USAGE_VOLUME: &str = "volume \"/data\"";
const USAGE_LABEL: &str = "label \"org.example.key\"=\"value\"";
const USAGE_STOP_SIGNAL: &str = "stop-signal \"SIGTERM\"";

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

// ---------------------------------------------------------------------------
// The decoder
// ---------------------------------------------------------------------------

pub(super) struct Decoder {
    pub(super) source: NamedSource<Arc<String>>,
    pub(super) diags: Vec<SpecDiagnostic>,
    /// The top-level `build` block, read before the images (it gives their defaults).
    pub(super) build: super::BuildOptions,
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
    pub(super) fn push(&mut self, code: &'static str, message: impl Into<String>, labels: Vec<(SourceSpan, String)>, help: Option<String>) {
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
}
