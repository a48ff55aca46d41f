//! The KDL decoder: the vocabulary (node names and usage strings), span
//! helpers, and [`Decoder`], which walks a KDL document into
//! [`ImageSpec`]s and records a [`SpecDiagnostic`] for every problem.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::layer::Compression;
use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::{NamedSource, SourceSpan};

use super::values::{
    base_reference, byte_size, config_user, copy_source, expose_string, go_duration, home_of, image_path, one_of, owner, platform,
    stop_signal, suggest, valid_account_name, valid_image_name, valid_package_name, valid_package_version, valid_tag, Bad, TAG_HELP,
};
use super::{
    Accounts, Base, ConfigSpec, FileOp, Group, Healthcheck, ImageSpec, LayerSpec, Owner, OwnerSpec, PackageReq, Platform, Repository,
    SecretSpec, SpecDiagnostic, StepLimits, StepSpec, User, Variant,
};

/// A `base image=` child installs from its ancestors' repositories too: each repository its
/// parent chain names that it does not name itself is appended (nearest ancestor first), with the
/// span where it is written, so every later check points at the right node.
fn inherit_repositories(images: &mut [ImageSpec]) {
    let snapshot: Vec<(String, Base, Vec<Repository>)> =
        images.iter().map(|i| (i.name.clone(), i.base.clone(), i.repositories.clone())).collect();
    for img in images.iter_mut() {
        let mut base = img.base.clone();
        for _ in 0..snapshot.len() {
            let Base::Image { name, .. } = &base else { break };
            let Some((_, parent_base, repos)) = snapshot.iter().find(|(n, _, _)| n == name) else { break };
            for r in repos {
                if !img.repositories.iter().any(|mine| mine.name == r.name) {
                    img.repositories.push(r.clone());
                }
            }
            base = parent_base.clone();
        }
    }
}

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

const TOP_CHILDREN: &[&str] = &["arg", "image", "step"];
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
const USAGE_STEP_PLATFORM: &str = "platform \"linux/amd64\"";
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

pub(super) struct Decoder {
    pub(super) source: NamedSource<Arc<String>>,
    pub(super) diags: Vec<SpecDiagnostic>,
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

/// A command as written: an argv, or one line for the shell.
enum Argv {
    Exec(Vec<String>),
    Shell(String),
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

    pub(super) fn document(&mut self, doc: &KdlDocument) -> (Vec<ImageSpec>, Vec<StepSpec>) {
        let mut images: Vec<ImageSpec> = Vec::new();
        let mut steps: Vec<StepSpec> = Vec::new();
        // Images and steps share one namespace: `copy from="NAME"` names either.
        let mut names: Seen<String> = Seen::new();
        for n in doc.nodes() {
            let (name, name_span, what) = match n.name().value() {
                "image" => {
                    let (img, name_span) = self.image(n);
                    let name = img.name.clone();
                    images.push(img);
                    (name, name_span, "image")
                }
                // Read (and substituted) before decoding: see `spec::build_args`.
                "arg" => continue,
                "step" => {
                    let Some((step, name_span)) = self.step(n) else { continue };
                    let name = step.name.clone();
                    steps.push(step);
                    (name, Some(name_span), "step")
                }
                _ => {
                    self.unknown_node(n, "", TOP_CHILDREN);
                    continue;
                }
            };
            if let Some(at) = name_span {
                if let Some(first) = names.first(name.clone(), at) {
                    let first_is_image = images.iter().filter(|i| i.name == name).count() > usize::from(what == "image");
                    let (code, message) = match (what, first_is_image) {
                        ("image", true) => ("compose::spec::duplicate_image", format!("image `{name}` is defined more than once")),
                        ("step", false) => ("compose::spec::duplicate_step", format!("step `{name}` is defined more than once")),
                        _ => (
                            "compose::spec::duplicate_name",
                            format!("`{name}` names both an image and a step; `copy from=\"{name}\"` could not tell them apart"),
                        ),
                    };
                    self.duplicate(code, message, at, first, "defined");
                }
            }
        }
        if images.is_empty() && self.diags.is_empty() {
            self.push("compose::spec::no_images", "the spec file defines no image", Vec::new(), Some(format!("add one: {USAGE_IMAGE}")));
        }
        self.check_bases(&images);
        self.check_steps(&images, &steps);
        if self.diags.is_empty() {
            inherit_repositories(&mut images);
            for img in &images {
                if img.run_scripts && img.packages.is_empty() {
                    self.push(
                        "compose::spec::scripts_without_packages",
                        format!("image `{}` has `maintainer-scripts \"run\"` but no `packages`", img.name),
                        vec![(img.span, "this image".to_owned())],
                        Some("maintainer scripts are the packages': list at least one package".to_owned()),
                    );
                }
                if img.variant != Variant::Custom && img.packages.is_empty() {
                    self.push(
                        "compose::spec::variant_without_packages",
                        format!("image `{}` has `variant \"{}\"` but no `packages`", img.name, img.variant.name()),
                        vec![(img.span, "this image".to_owned())],
                        Some("a variant adds Debian's base set to an image's packages: list at least one package".to_owned()),
                    );
                }
                if let (Some(first), true) = (img.packages.first(), img.repositories.is_empty()) {
                    self.push(
                        "compose::spec::no_repository",
                        format!("image `{}` lists packages but has no `repository` to install them from", img.name),
                        vec![(first.span, "no repository to install this from".to_owned())],
                        Some(format!("add one to the image (or to its `base image=`): {USAGE_REPOSITORY}")),
                    );
                }
            }
        }
        (images, steps)
    }

    /// A step's `image` names an image of the file; `copy from=` names an image or a step; no
    /// image or step depends on itself through bases, step images and `copy from=`.
    fn check_steps(&mut self, images: &[ImageSpec], steps: &[StepSpec]) {
        let image_names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        let all: Vec<&str> = image_names.iter().copied().chain(steps.iter().map(|s| s.name.as_str())).collect();
        let mut deps: HashMap<&str, Vec<(&str, SourceSpan)>> = HashMap::new();
        for step in steps {
            let (image, at) = &step.image;
            if image_names.contains(&image.as_str()) {
                deps.entry(step.name.as_str()).or_default().push((image.as_str(), *at));
            } else {
                let help = known_names_help(image, &image_names, "images in this file");
                self.push(
                    "compose::spec::unknown_image",
                    format!("step `{}` runs in image `{image}`, which this file does not define", step.name),
                    vec![(*at, "unknown image".to_owned())],
                    Some(help),
                );
            }
        }
        let ops = images
            .iter()
            .flat_map(|i| i.files.iter().chain(i.layers.iter().flat_map(|l| l.ops.iter())).map(move |op| (i.name.as_str(), op)))
            .chain(steps.iter().flat_map(|s| s.inputs.iter().map(move |op| (s.name.as_str(), op))));
        for (owner, op) in ops {
            let FileOp::Copy { from: Some((from, at)), src, src_span, .. } = op else { continue };
            if !all.contains(&from.as_str()) {
                let help = known_names_help(from, &all, "images and steps in this file");
                self.push(
                    "compose::spec::unknown_from",
                    format!("`copy from=\"{from}\"` names no image or step of this file"),
                    vec![(*at, "unknown name".to_owned())],
                    Some(help),
                );
                continue;
            }
            if let Some(step) = steps.iter().find(|s| s.name == *from) {
                let inside = src == &step.output || src.strip_prefix(step.output.as_str()).is_some_and(|r| r.starts_with('/'));
                if !inside {
                    self.push(
                        "compose::spec::outside_output",
                        format!("`{src}` is not in the output of step `{from}`, which is `{}`", step.output),
                        vec![(*src_span, "not under the step's output".to_owned())],
                        Some(format!("copy a path under `{}`", step.output)),
                    );
                }
            }
            deps.entry(owner).or_default().push((from.as_str(), *at));
        }
        for img in images {
            if let Base::Image { name, span } = &img.base {
                deps.entry(img.name.as_str()).or_default().push((name.as_str(), *span));
            }
        }
        // A cycle through steps (cycles of bases alone are reported by `check_bases`).
        let mut reported = false;
        for start in steps.iter().map(|s| s.name.as_str()) {
            let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, vec![start])];
            let mut seen: Vec<&str> = Vec::new();
            while let Some((cur, path)) = stack.pop() {
                for (next, at) in deps.get(cur).map(Vec::as_slice).unwrap_or_default() {
                    if *next == start && !reported {
                        reported = true;
                        let mut p = path.clone();
                        p.push(start);
                        self.push(
                            "compose::spec::step_cycle",
                            format!("steps and images depend on each other in a cycle: {}", p.join(" -> ")),
                            vec![(*at, "closes the cycle".to_owned())],
                            Some("a step cannot use, directly or through its image, what is made from its own output".to_owned()),
                        );
                    } else if !seen.contains(next) {
                        seen.push(next);
                        let mut p = path.clone();
                        p.push(next);
                        stack.push((next, p));
                    }
                }
            }
        }
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
                let help = if others.is_empty() {
                    "this file defines no other image".to_owned()
                } else {
                    known_names_help(name, &others, "images in this file")
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
            export: true,
            variant: Variant::Custom,
            run_scripts: false,
            compression: Compression::Gzip,
        };
        let mut seen = Seen::new();
        let mut packages: Seen<String> = Seen::new();
        let mut layers: Seen<String> = Seen::new();
        let children = kdl.children().map_or(&[][..], |d| d.nodes());
        for c in children {
            let cname = c.name().value();
            if matches!(
                cname,
                "tag"
                    | "platforms"
                    | "base"
                    | "epoch"
                    | "accounts"
                    | "config"
                    | "export"
                    | "variant"
                    | "maintainer-scripts"
                    | "compression"
            ) && !self.once(&mut seen, c)
            {
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
                "export" => {
                    if let Some(b) = self.flag(c, USAGE_EXPORT) {
                        img.export = b;
                    }
                }
                "maintainer-scripts" => {
                    if let Some(e) = self.single_string(c, USAGE_SCRIPTS, "`run` or `emulate`") {
                        match e.value().as_string().unwrap_or_default() {
                            "run" => img.run_scripts = true,
                            "emulate" => img.run_scripts = false,
                            other => self.push(
                                "compose::spec::bad_scripts",
                                format!("unknown maintainer-scripts mode `{other}`"),
                                vec![(value_span(e), "not a mode".to_owned())],
                                Some(known_names_help(other, &["run", "emulate"], "modes")),
                            ),
                        }
                    }
                }
                "variant" => {
                    if let Some(e) = self.single_string(c, USAGE_VARIANT, "a variant") {
                        match e.value().as_string().unwrap_or_default() {
                            "custom" => img.variant = Variant::Custom,
                            "essential" => img.variant = Variant::Essential,
                            "minbase" => img.variant = Variant::Minbase,
                            other => {
                                let known = ["custom", "essential", "minbase"];
                                let help = known_names_help(other, &known, "variants");
                                self.push(
                                    "compose::spec::bad_variant",
                                    format!("unknown variant `{other}`"),
                                    vec![(value_span(e), "not a variant".to_owned())],
                                    Some(help),
                                );
                            }
                        }
                    }
                }
                "compression" => {
                    if let Some(e) = self.single_string(c, USAGE_COMPRESSION, "`gzip` or `zstd`") {
                        let name = e.value().as_string().unwrap_or_default();
                        match Compression::parse(name) {
                            Some(codec) => img.compression = codec,
                            None => self.push(
                                "compose::spec::bad_compression",
                                format!("unknown compression `{name}`"),
                                vec![(value_span(e), "not a compression".to_owned())],
                                Some(known_names_help(name, &Compression::NAMES, "compressions")),
                            ),
                        }
                    }
                }
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
        let props = self.props(&node, &["to", "mode", "dir-mode", "owner", "from"]);
        let args = self.args(&node, 1, Some(1), "a source path");
        let from = props.get("from").map(|e| self.name(e, "step or image").map(|n| (n, value_span(e))));
        let src = args.first().and_then(|e| {
            if from.is_some() {
                // A path in the step's output or the image's file system.
                return self.path(e, "the path to copy").map(|(p, _)| (p, value_span(e)));
            }
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
            from: match from {
                Some(f) => Some(f?),
                None => None,
            },
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

    /// A leaf node with one boolean argument (`#true` / `#false`).
    fn flag(&mut self, kdl: &KdlNode, usage: &'static str) -> Option<bool> {
        let node = self.open(kdl, usage);
        self.leaf(&node);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), "#true or #false");
        let e = args.first()?;
        match e.value() {
            KdlValue::Bool(b) => Some(*b),
            _ => {
                self.wrong_type(e, "#true or #false", "the value");
                None
            }
        }
    }

    fn step(&mut self, kdl: &KdlNode) -> Option<(StepSpec, SourceSpan)> {
        let node = self.open(kdl, USAGE_STEP);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), "a step name");
        let name_e = args.first().copied();
        let name = name_e.and_then(|e| self.name(e, "step"));
        let mut image: Option<(String, SourceSpan)> = None;
        let mut platform_v = None;
        let mut inputs = Vec::new();
        let mut workdir = None;
        let mut env: Vec<(String, String)> = Vec::new();
        let mut user = (0, 0);
        let mut runs = Vec::new();
        let mut output: Option<String> = None;
        let mut network = false;
        let mut pass_env = Vec::new();
        let mut limits = StepLimits::default();
        let mut secrets: Vec<SecretSpec> = Vec::new();
        let mut host_mounts: Vec<(String, String)> = Vec::new();
        let mut seen = Seen::new();
        let mut ok = true;
        let children = kdl.children().map_or(&[][..], |d| d.nodes());
        for c in children {
            let cname = c.name().value();
            if matches!(cname, "image" | "platform" | "workdir" | "user" | "output" | "network" | "limits") && !self.once(&mut seen, c) {
                continue;
            }
            match cname {
                "image" => {
                    if let Some(e) = self.single_string(c, USAGE_STEP_IMAGE, "an image name") {
                        image = self.name(e, "image").map(|n| (n, value_span(e)));
                    }
                }
                "platform" => {
                    if let Some(e) = self.single_string(c, USAGE_STEP_PLATFORM, "a platform") {
                        match platform(e.value().as_string().unwrap_or_default()) {
                            Ok(p) => platform_v = Some(p),
                            Err(b) => self.bad("compose::spec::bad_platform", value_span(e), b),
                        }
                    }
                }
                "copy" | "text" | "symlink" | "dir" => {
                    let op = match cname {
                        "copy" => self.copy(c),
                        "text" => self.text(c),
                        "symlink" => self.symlink(c),
                        _ => self.dir(c),
                    };
                    if let Some(op) = op {
                        if let Some(o) = op.owner().filter(|o| matches!(o.owner, Owner::Name(_))) {
                            self.push(
                                "compose::spec::bad_owner",
                                "a step's inputs take numeric owners",
                                vec![(o.span, "a name".to_owned())],
                                Some("write owner=\"UID:GID\"".to_owned()),
                            );
                            continue;
                        }
                        inputs.push(op);
                    }
                }
                "workdir" => {
                    if let Some(e) = self.single_string(c, USAGE_WORKDIR, "a directory") {
                        workdir = self.path(e, "the working directory").map(|p| p.0);
                    }
                }
                "env" => {
                    for (k, v) in self.key_values(c, USAGE_ENV, true) {
                        match env.iter_mut().find(|(name, _)| *name == k) {
                            Some(slot) => slot.1 = v,
                            None => env.push((k, v)),
                        }
                    }
                }
                "user" => {
                    if let Some(e) = self.single_string(c, USAGE_STEP_USER, "a user") {
                        let s = e.value().as_string().unwrap_or_default();
                        match owner(s) {
                            Ok(Owner::Ids(u, g)) => user = (u, g),
                            _ => self.push(
                                "compose::spec::bad_user",
                                format!("`{s}` is not a numeric `UID:GID`"),
                                vec![(value_span(e), "not UID:GID".to_owned())],
                                Some(format!("usage: {USAGE_STEP_USER}")),
                            ),
                        }
                    }
                }
                "run" => match self.strings(c, USAGE_RUN, 1) {
                    Some(argv) => runs.push(argv),
                    None => ok = false,
                },
                "output" => {
                    if let Some(e) = self.single_string(c, USAGE_OUTPUT, "a directory") {
                        match self.path(e, "the output directory") {
                            Some((p, _)) if p == "/" => self.push(
                                "compose::spec::bad_path",
                                "a step's output cannot be `/`",
                                vec![(value_span(e), "the whole root filesystem".to_owned())],
                                Some("write the results to a directory of their own, such as /out".to_owned()),
                            ),
                            Some((p, _)) => output = Some(p),
                            None => {}
                        }
                    }
                }
                "network" => {
                    if let Some(b) = self.flag(c, USAGE_NETWORK) {
                        network = b;
                    }
                }
                "pass-env" => {
                    if let Some(names) = self.strings(c, USAGE_PASS_ENV, 1) {
                        for n in names {
                            if n.is_empty() || n.contains('=') || n.contains('\0') {
                                self.push(
                                    "compose::spec::bad_env",
                                    format!("`{n}` is not an environment variable name"),
                                    vec![(head_span(c), "here".to_owned())],
                                    None,
                                );
                            } else if !pass_env.contains(&n) {
                                pass_env.push(n);
                            }
                        }
                    }
                }
                "limits" => limits = self.limits(c),
                "secret" => {
                    if let Some(sec) = self.secret(c) {
                        if secrets.iter().any(|x| x.id == sec.id) {
                            self.push(
                                "compose::spec::duplicate_secret",
                                format!("secret `{}` is given twice", sec.id),
                                vec![(head_span(c), "again here".to_owned())],
                                None,
                            );
                        } else {
                            secrets.push(sec);
                        }
                    }
                }
                "mount-from-host" => {
                    let node = self.open(c, USAGE_HOST_MOUNT);
                    self.leaf(&node);
                    let props = self.props(&node, &["to"]);
                    let args = self.args(&node, 1, Some(1), "a host path");
                    let host = args.first().and_then(|e| {
                        let s = self.string(e, "the host path")?;
                        if s.starts_with('/') && !s.contains('\0') && !s.split('/').any(|p| p == "..") {
                            Some(s.to_owned())
                        } else {
                            self.push(
                                "compose::spec::bad_path",
                                format!("`{s}` is not an absolute host path"),
                                vec![(value_span(e), "expected an absolute path without `..`".to_owned())],
                                None,
                            );
                            None
                        }
                    });
                    let to = self.require(&node, &props, "to").and_then(|e| self.path(e, "the mount point"));
                    if let (Some(h), Some((t, _))) = (host, to) {
                        host_mounts.push((h, t));
                    }
                }
                _ => self.unknown_node(c, "step", STEP_CHILDREN),
            }
        }
        let missing = |what: &str, usage: &str| (format!("step needs `{what}`"), format!("add `{usage}`"));
        for (absent, (message, help)) in [
            (image.is_none() && !seen.0.contains_key("image"), missing("image", USAGE_STEP_IMAGE)),
            (runs.is_empty() && ok, missing("run", USAGE_RUN)),
            (output.is_none() && !seen.0.contains_key("output"), missing("output", USAGE_OUTPUT)),
        ] {
            if absent {
                self.push("compose::spec::missing_node", message, vec![(node.head, "this step".to_owned())], Some(help));
            }
        }
        if !network && !pass_env.is_empty() {
            self.push(
                "compose::spec::pass_env_hermetic",
                "`pass-env` is only for fixed-output steps",
                vec![(node.head, "this step is hermetic".to_owned())],
                Some("a hermetic step sees no host environment; add `network #true` to make it fixed-output".to_owned()),
            );
        }
        if !network && !host_mounts.is_empty() {
            self.push(
                "compose::spec::host_mount_hermetic",
                "`mount-from-host` is only for fixed-output steps",
                vec![(node.head, "this step is hermetic".to_owned())],
                Some(
                    "a hermetic step's key is its inputs; a host path is not one. Copy the file in with `copy`, or add `network #true`"
                        .to_owned(),
                ),
            );
        }
        let step = StepSpec {
            name: name?,
            span: node.head,
            image: image?,
            platform: platform_v,
            inputs,
            workdir,
            env,
            user,
            runs,
            output: output?,
            network,
            pass_env,
            limits,
            secrets,
            host_mounts,
        };
        Some((step, value_span(name_e?)))
    }

    /// A step's `limits { … }` block.
    fn limits(&mut self, kdl: &KdlNode) -> StepLimits {
        let node = self.open(kdl, USAGE_LIMITS);
        self.props(&node, &[]);
        self.args(&node, 0, Some(0), "");
        let mut l = StepLimits::default();
        let mut seen = Seen::new();
        for c in kdl.children().map_or(&[][..], |d| d.nodes()) {
            let cname = c.name().value();
            if LIMIT_CHILDREN.contains(&cname) && !self.once(&mut seen, c) {
                continue;
            }
            let leaf = |d: &mut Self, what: &str| {
                let n = d.open(c, USAGE_LIMITS);
                d.leaf(&n);
                d.props(&n, &[]);
                d.args(&n, 1, Some(1), what).first().copied()
            };
            match cname {
                "pids" => {
                    if let Some(e) = leaf(self, "a number of processes") {
                        match self.unsigned(e, "`pids`", 1 << 22) {
                            Some(v) if v < 8 => self.push(
                                "compose::spec::out_of_range",
                                format!("`pids {v}` leaves no room for the step's own processes"),
                                vec![(value_span(e), "at least 8".to_owned())],
                                None,
                            ),
                            v => l.pids = v,
                        }
                    }
                }
                "cpus" => {
                    if let Some(e) = leaf(self, "a number of CPUs") {
                        let v = match e.value() {
                            KdlValue::Integer(i) => Some(*i as f64),
                            KdlValue::Float(f) => Some(*f),
                            _ => {
                                self.wrong_type(e, "a number", "`cpus`");
                                None
                            }
                        };
                        match v {
                            Some(v) if (0.01..=4096.0).contains(&v) => l.millicpus = Some((v * 1000.0).round() as u64),
                            Some(v) => self.push(
                                "compose::spec::out_of_range",
                                format!("`cpus {v}` is out of range"),
                                vec![(value_span(e), "between 0.01 and 4096".to_owned())],
                                None,
                            ),
                            None => {}
                        }
                    }
                }
                "memory" | "disk" => {
                    if let Some(e) = leaf(self, "a size") {
                        let v = match e.value() {
                            KdlValue::Integer(i) if *i > 0 => Some(*i as u64),
                            KdlValue::String(s) => match byte_size(s) {
                                Ok(v) => Some(v),
                                Err(b) => {
                                    self.bad("compose::spec::bad_size", value_span(e), b);
                                    None
                                }
                            },
                            _ => {
                                self.wrong_type(e, "a size such as \"4GiB\"", &format!("`{cname}`"));
                                None
                            }
                        };
                        match (cname, v) {
                            ("memory", Some(v)) if v < 16 << 20 => self.push(
                                "compose::spec::out_of_range",
                                format!("`memory` of {v} bytes is too little to start a process"),
                                vec![(value_span(e), "at least 16MiB".to_owned())],
                                None,
                            ),
                            ("memory", v) => l.memory = v.or(l.memory),
                            (_, v) => l.disk = v.or(l.disk),
                        }
                    }
                }
                "time" => {
                    if let Some(e) = leaf(self, "a duration") {
                        if let Some(v) = self.string(e, "`time`") {
                            match go_duration(v) {
                                Ok(ns) if ns >= 1_000_000_000 => l.time = Some(ns),
                                Ok(_) => self.push(
                                    "compose::spec::out_of_range",
                                    format!("`time \"{v}\"` is less than a second"),
                                    vec![(value_span(e), "at least 1s".to_owned())],
                                    None,
                                ),
                                Err(b) => self.bad("compose::spec::bad_duration", value_span(e), b),
                            }
                        }
                    }
                }
                _ => self.unknown_node(c, "limits", LIMIT_CHILDREN),
            }
        }
        l
    }

    /// A step's `secret "ID" env=… target=… required=…`.
    fn secret(&mut self, kdl: &KdlNode) -> Option<SecretSpec> {
        let node = self.open(kdl, USAGE_SECRET);
        self.leaf(&node);
        let props = self.props(&node, &["env", "target", "required"]);
        let args = self.args(&node, 1, Some(1), "the secret's id");
        let id = args.first().and_then(|e| {
            let s = self.string(e, "the secret's id")?;
            if !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                Some(s.to_owned())
            } else {
                self.push(
                    "compose::spec::bad_secret",
                    format!("`{s}` is not a secret id"),
                    vec![(value_span(e), "letters, digits, `-`, `_` and `.`".to_owned())],
                    None,
                );
                None
            }
        });
        let env = match props.get("env") {
            Some(e) => {
                let s = self.string(e, "`env`")?;
                if s.is_empty() || s.contains(['=', '\0']) {
                    self.push(
                        "compose::spec::bad_env",
                        format!("`{s}` is not an environment variable name"),
                        vec![(value_span(e), "here".to_owned())],
                        None,
                    );
                    return None;
                }
                Some(s.to_owned())
            }
            None => None,
        };
        let target = match props.get("target") {
            Some(e) => Some(self.file_path(e, "the secret's file")?),
            None => None,
        };
        let required = match props.get("required") {
            Some(e) => match e.value() {
                KdlValue::Bool(b) => *b,
                _ => {
                    self.wrong_type(e, "#true or #false", "`required`");
                    return None;
                }
            },
            None => true,
        };
        let id = id?;
        let target = match (&env, target) {
            (None, None) => Some(format!("/run/secrets/{id}")),
            (_, t) => t,
        };
        Some(SecretSpec { id, env, target, required })
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
            if matches!(cname, "workdir" | "user" | "entrypoint" | "cmd" | "stop-signal" | "healthcheck") && !self.once(&mut seen, c) {
                continue;
            }
            match cname {
                "healthcheck" => cfg.healthcheck = self.healthcheck(c),
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
                "entrypoint" => cfg.entrypoint = self.command(c, USAGE_ENTRYPOINT, 1, false),
                "cmd" => {
                    // One line may be the argument of an entrypoint that is a shell's `-c`
                    // (this config's or the base's): checked when planning, where both are known.
                    cfg.cmd = self.command(c, USAGE_CMD, 0, true);
                    cfg.cmd_span = Some(head_span(c));
                }
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

    /// `cmd`/`entrypoint`: an argv (`min`+ strings) or, with `shell=#true`, one line run by
    /// `/bin/sh -c` (Docker's shell form). One argument holding whitespace without `shell` is
    /// refused: it would be taken as one program name.
    fn command(&mut self, kdl: &KdlNode, usage: &'static str, min: usize, one_line_ok: bool) -> Option<Vec<String>> {
        let node = self.open(kdl, usage);
        self.leaf(&node);
        let props = self.props(&node, &["shell"]);
        let args = self.args(&node, min, None, "at least one argument");
        let argv = self.argv(&node, &props, &args, one_line_ok)?;
        if args.len() < min {
            return None;
        }
        Some(match argv {
            Argv::Exec(v) => v,
            Argv::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line],
        })
    }

    /// The arguments of a command node: exec form, or one shell line with `shell=#true`.
    fn argv(&mut self, node: &Node<'_>, props: &Props<'_>, args: &[&KdlEntry], one_line_ok: bool) -> Option<Argv> {
        let shell = match props.get("shell") {
            None => false,
            Some(e) => match e.value() {
                KdlValue::Bool(b) => *b,
                _ => {
                    self.wrong_type(e, "#true or #false", "`shell`");
                    return None;
                }
            },
        };
        let mut out = Vec::new();
        for e in args {
            out.push(self.string(e, "each argument")?.to_owned());
        }
        if shell {
            if out.len() != 1 {
                self.push(
                    "compose::spec::shell_form",
                    format!("`{} shell=#true` takes one command line, not {} arguments", node.name, out.len()),
                    vec![(node.head, "one string expected".to_owned())],
                    Some(format!("join them into one line, or drop `shell=#true` to give an argv; usage: {}", node.usage)),
                );
                return None;
            }
            return out.pop().map(Argv::Shell);
        }
        if let ([line], [e], false) = (out.as_slice(), args, one_line_ok) {
            if line.trim().contains(char::is_whitespace) {
                let words: Vec<String> = line.split_whitespace().map(|w| format!("\"{w}\"")).collect();
                self.push(
                    "compose::spec::shell_form",
                    format!("`{}` is an argv, so `{line}` would be one program name", node.name),
                    vec![(value_span(e), "one argument holding spaces".to_owned())],
                    Some(format!(
                        "give each word as its own argument ({} {}), or run the line through a shell as Docker's shell form does: {} \"…\" shell=#true{}",
                        node.name,
                        words.join(" "),
                        node.name,
                        if node.name == "cmd" { " (a `cmd` line is fine under `entrypoint \"/bin/sh\" \"-c\"`)" } else { "" }
                    )),
                );
                return None;
            }
        }
        Some(Argv::Exec(out))
    }

    /// `healthcheck ARGV… [shell=#true] [interval= timeout= start-period= start-interval= retries=]`
    /// or `healthcheck #false` (Docker's `HEALTHCHECK NONE`).
    fn healthcheck(&mut self, kdl: &KdlNode) -> Option<Healthcheck> {
        let node = self.open(kdl, USAGE_HEALTHCHECK);
        self.leaf(&node);
        let props = self.props(&node, &["shell", "interval", "timeout", "start-period", "start-interval", "retries"]);
        let args = self.args(&node, 1, None, "a command, or #false");
        if let [e] = args.as_slice() {
            if let KdlValue::Bool(b) = e.value() {
                if *b {
                    self.wrong_type(e, "a command or #false", "the health check");
                    return None;
                }
                return Some(Healthcheck { test: vec!["NONE".into()], ..Healthcheck::default() });
            }
        }
        let test = match self.argv(&node, &props, &args, false)? {
            Argv::Exec(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
            Argv::Shell(line) => vec!["CMD-SHELL".into(), line],
        };
        let mut h = Healthcheck { test, ..Healthcheck::default() };
        for (key, slot) in [
            ("interval", &mut h.interval),
            ("timeout", &mut h.timeout),
            ("start-period", &mut h.start_period),
            ("start-interval", &mut h.start_interval),
        ] {
            if let Some(e) = props.get(key) {
                let v = self.string(e, key)?;
                match go_duration(v) {
                    Ok(ns) => *slot = ns,
                    Err(b) => {
                        self.bad("compose::spec::bad_duration", value_span(e), b);
                        return None;
                    }
                }
            }
        }
        if let Some(e) = props.get("retries") {
            h.retries = self.unsigned(e, "`retries`", 1_000_000)?;
        }
        Some(h)
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
