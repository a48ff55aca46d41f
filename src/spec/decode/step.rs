//! A `step` block: its children (image, platform, inputs, environment, user,
//! commands, output, network, pass-env), the checks on the whole step (where its inputs,
//! output and caches may go), and its `limits`, `secret`, `mount-from-host` and `cache` nodes.

use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use super::super::values::{byte_size, go_duration, owner, platform};
use super::super::{
    path_within as under, CacheSpec, FileOp, Owner, SecretSpec, Sharing, StepLimits, StepPlatform, StepSpec, STEP_RESERVED,
};
use super::{
    head_span, value_span, Decoder, Node, Seen, LIMIT_CHILDREN, STEP_CHILDREN, USAGE_CACHE, USAGE_HOST_MOUNT, USAGE_LIMITS, USAGE_NETWORK,
    USAGE_OUTPUT, USAGE_PASS_ENV, USAGE_RUN, USAGE_SECRET, USAGE_STEP, USAGE_STEP_IMAGE, USAGE_STEP_PLATFORM, USAGE_STEP_USER,
};

/// The children of a step that may be given once.
const STEP_SINGLETONS: &[&str] = &["image", "platform", "workdir", "user", "output", "network", "limits"];

/// A step's children as decoded so far.
#[derive(Default)]
struct StepBody {
    image: Option<(String, SourceSpan)>,
    platform: StepPlatform,
    inputs: Vec<FileOp>,
    workdir: Option<String>,
    env: Vec<(String, String)>,
    user: (u32, u32),
    runs: Vec<Vec<String>>,
    /// A `run` was refused (so its absence is not reported as well).
    bad_run: bool,
    output: Option<String>,
    output_span: Option<SourceSpan>,
    network: bool,
    pass_env: Vec<String>,
    limits: StepLimits,
    secrets: Vec<SecretSpec>,
    host_mounts: Vec<(String, String)>,
    caches: Vec<CacheSpec>,
}

/// Where a step input lands.
fn input_path(op: &FileOp) -> &str {
    match op {
        FileOp::Copy { to, .. } => to,
        FileOp::Text { path, .. } | FileOp::Symlink { path, .. } | FileOp::Dir { path, .. } => path,
    }
}

impl Decoder {
    /// A `step` block, and the span of its name.
    pub(super) fn step(&mut self, kdl: &KdlNode) -> Option<(StepSpec, SourceSpan)> {
        let node = self.open(kdl, USAGE_STEP);
        self.props(&node, &[]);
        let args = self.args(&node, 1, Some(1), "a step name");
        let name_e = args.first().copied();
        let name = name_e.and_then(|e| self.name(e, "step"));
        let mut body = StepBody::default();
        let mut seen = Seen::new();
        let children = kdl.children().map_or(&[][..], |d| d.nodes());
        for c in children {
            if STEP_SINGLETONS.contains(&c.name().value()) && !self.once(&mut seen, c) {
                continue;
            }
            self.step_child(&mut body, c);
        }
        self.check_step(&node, &body, &seen);
        let StepBody {
            image,
            platform,
            inputs,
            workdir,
            env,
            user,
            runs,
            bad_run: _,
            output,
            network,
            pass_env,
            limits,
            secrets,
            host_mounts,
            caches,
            output_span: _,
        } = body;
        let step = StepSpec {
            name: name?,
            span: node.head,
            image: image?,
            platform,
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
            caches,
        };
        Some((step, value_span(name_e?)))
    }

    /// One child of a step block, decoded into `body`.
    fn step_child(&mut self, body: &mut StepBody, c: &KdlNode) {
        match c.name().value() {
            "image" => {
                if let Some(e) = self.single_string(c, USAGE_STEP_IMAGE, "an image name") {
                    body.image = self.name(e, "image").map(|n| (n, value_span(e)));
                }
            }
            "platform" => {
                if let Some(p) = self.step_platform(c) {
                    body.platform = p;
                }
            }
            "copy" | "text" | "symlink" | "dir" => body.inputs.extend(self.step_input(c)),
            "workdir" => body.workdir = self.workdir(c),
            "env" => self.env_into(c, &mut body.env),
            "user" => {
                if let Some(user) = self.step_user(c) {
                    body.user = user;
                }
            }
            "run" => match self.strings(c, USAGE_RUN, 1) {
                Some(argv) => body.runs.push(argv),
                None => body.bad_run = true,
            },
            "output" => {
                if let Some(p) = self.step_output(c) {
                    body.output = Some(p);
                    body.output_span = c.entries().first().map(value_span);
                }
            }
            "network" => {
                if let Some(b) = self.flag(c, USAGE_NETWORK) {
                    body.network = b;
                }
            }
            "pass-env" => self.pass_env(c, &mut body.pass_env),
            "limits" => body.limits = self.limits(c),
            "secret" => self.add_secret(c, &mut body.secrets),
            "mount-from-host" => body.host_mounts.extend(self.host_mount(c)),
            "cache" => self.caches(c, &mut body.caches),
            _ => self.unknown_node(c, "step", STEP_CHILDREN),
        }
    }

    /// What a step needs (`image`, `run`, `output`), and what only a fixed-output step
    /// (`network #true`) may have (`pass-env`, `mount-from-host`).
    fn check_step(&mut self, node: &Node<'_>, body: &StepBody, seen: &Seen<String>) {
        let missing = |what: &str, usage: &str| (format!("step needs `{what}`"), format!("add `{usage}`"));
        for (absent, (message, help)) in [
            (body.image.is_none() && !seen.0.contains_key("image"), missing("image", USAGE_STEP_IMAGE)),
            (body.runs.is_empty() && !body.bad_run, missing("run", USAGE_RUN)),
            (body.output.is_none() && !seen.0.contains_key("output"), missing("output", USAGE_OUTPUT)),
        ] {
            if absent {
                self.push("compose::spec::missing_node", message, vec![(node.head, "this step".to_owned())], Some(help));
            }
        }
        if !body.network && !body.pass_env.is_empty() {
            self.push(
                "compose::spec::pass_env_hermetic",
                "`pass-env` is only for fixed-output steps",
                vec![(node.head, "this step is hermetic".to_owned())],
                Some("a hermetic step sees no host environment; add `network #true` to make it fixed-output".to_owned()),
            );
        }
        self.check_places(body);
        self.check_cache_host_mounts(body);
        if !body.network && !body.host_mounts.is_empty() {
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
    }

    /// Where a step's inputs, output and caches go: none in a reserved place, no cache at, above
    /// or below the output (it would be captured), and no input at or below a cache (it would be
    /// hidden).
    fn check_places(&mut self, body: &StepBody) {
        let mut places: Vec<(&str, SourceSpan, &str)> = body.inputs.iter().map(|op| (input_path(op), op.span(), "an input")).collect();
        if let (Some(o), Some(span)) = (&body.output, body.output_span) {
            places.push((o.as_str(), span, "the output"));
        }
        places.extend(body.caches.iter().map(|c| (c.path.as_str(), c.span, "a cache")));
        for &(path, span, what) in &places {
            if let Some((dir, why)) = STEP_RESERVED.iter().find(|(dir, _)| under(path, dir)) {
                self.push(
                    "compose::spec::reserved_path",
                    format!("{what} of a step cannot be under `{dir}`: {why}"),
                    vec![(span, format!("`{path}`"))],
                    Some("use a directory of its own, such as /src, /out or /cache".to_owned()),
                );
            }
        }
        // A cache may lie inside an input directory (`/src/target` in `/src`): it is mounted
        // over it. An input at or below a cache would be hidden by it.
        for cache in &body.caches {
            let clash = places.iter().find(|(p, _, what)| match *what {
                "the output" => under(p, &cache.path) || under(&cache.path, p),
                "an input" => under(p, &cache.path),
                _ => false,
            });
            if let Some((p, span, what)) = clash {
                self.push(
                    "compose::spec::cache_overlap",
                    format!("cache `{}` overlaps {what} of the step (`{p}`)", cache.path),
                    vec![(cache.span, "this cache".to_owned()), (*span, what.to_string())],
                    Some("a cache stays out of the step's output and hides what is below it: give it a directory of its own".to_owned()),
                );
            }
        }
    }

    /// No cache at, above or below a `mount-from-host` destination (the host's files, read-only).
    fn check_cache_host_mounts(&mut self, body: &StepBody) {
        for cache in &body.caches {
            if let Some((_, to)) = body.host_mounts.iter().find(|(_, to)| under(to, &cache.path) || under(&cache.path, to)) {
                self.push(
                    "compose::spec::cache_overlap",
                    format!("cache `{}` overlaps the host mount at `{to}`", cache.path),
                    vec![(cache.span, "this cache".to_owned())],
                    Some("a host mount is read-only and the host's: give the cache a directory of its own".to_owned()),
                );
            }
        }
    }

    /// A step's `cache "/PATH"… sharing="…"` onto `caches`, each path once and none inside another.
    fn caches(&mut self, c: &KdlNode, caches: &mut Vec<CacheSpec>) {
        let node = self.open(c, USAGE_CACHE);
        self.leaf(&node);
        let props = self.props(&node, &["sharing"]);
        let args = self.args(&node, 1, None, "a directory");
        let sharing = match props.get("sharing") {
            None => Sharing::default(),
            Some(e) => match self.string(e, "`sharing`") {
                Some("locked") => Sharing::Locked,
                Some("shared") => Sharing::Shared,
                Some("private") => Sharing::Private,
                Some(other) => {
                    self.push(
                        "compose::spec::bad_sharing",
                        format!("unknown cache sharing `{other}`"),
                        vec![(value_span(e), "expected \"locked\", \"shared\" or \"private\"".to_owned())],
                        Some(format!("usage: {USAGE_CACHE}")),
                    );
                    return;
                }
                None => return,
            },
        };
        for e in args {
            let Some(path) = self.file_path(e, "the cache directory") else { continue };
            let span = value_span(e);
            if let Some(other) = caches.iter().find(|x| under(&x.path, &path) || under(&path, &x.path)) {
                let message = if other.path == path {
                    format!("cache `{path}` is given twice")
                } else {
                    format!("caches `{}` and `{path}` are one inside the other", other.path)
                };
                self.push(
                    "compose::spec::duplicate_cache",
                    message,
                    vec![(span, "this one".to_owned()), (other.span, "and this one".to_owned())],
                    None,
                );
                continue;
            }
            caches.push(CacheSpec { path, sharing, span });
        }
    }

    /// A step's `platform "build"` or `platform "OS/ARCH"`.
    fn step_platform(&mut self, c: &KdlNode) -> Option<StepPlatform> {
        let e = self.single_string(c, USAGE_STEP_PLATFORM, "a platform")?;
        let text = e.value().as_string().unwrap_or_default();
        if text == "build" {
            return Some(StepPlatform::Build);
        }
        match platform(text) {
            Ok(p) => Some(StepPlatform::Fixed(p)),
            Err(b) => {
                self.bad("compose::spec::bad_platform", value_span(e), b);
                None
            }
        }
    }

    /// A file operation into a step's root: owners must be numeric (a step has no accounts).
    fn step_input(&mut self, c: &KdlNode) -> Option<FileOp> {
        let op = self.file_op(c)?;
        if let Some(o) = op.owner().filter(|o| matches!(o.owner, Owner::Name(_))) {
            self.push(
                "compose::spec::bad_owner",
                "a step's inputs take numeric owners",
                vec![(o.span, "a name".to_owned())],
                Some("write owner=\"UID:GID\"".to_owned()),
            );
            return None;
        }
        Some(op)
    }

    /// A step's `user "UID:GID"`.
    fn step_user(&mut self, c: &KdlNode) -> Option<(u32, u32)> {
        let e = self.single_string(c, USAGE_STEP_USER, "a user")?;
        let s = e.value().as_string().unwrap_or_default();
        match owner(s) {
            Ok(Owner::Ids(u, g)) => Some((u, g)),
            _ => {
                self.push(
                    "compose::spec::bad_user",
                    format!("`{s}` is not a numeric `UID:GID`"),
                    vec![(value_span(e), "not UID:GID".to_owned())],
                    Some(format!("usage: {USAGE_STEP_USER}")),
                );
                None
            }
        }
    }

    /// A step's `output "/DIR"`: an image path other than `/`.
    fn step_output(&mut self, c: &KdlNode) -> Option<String> {
        let e = self.single_string(c, USAGE_OUTPUT, "a directory")?;
        match self.path(e, "the output directory") {
            Some((p, _)) if p == "/" => {
                self.push(
                    "compose::spec::bad_path",
                    "a step's output cannot be `/`",
                    vec![(value_span(e), "the whole root filesystem".to_owned())],
                    Some("write the results to a directory of their own, such as /out".to_owned()),
                );
                None
            }
            Some((p, _)) => Some(p),
            None => None,
        }
    }

    /// A `pass-env` node's variable names onto `pass_env`, each once.
    fn pass_env(&mut self, c: &KdlNode, pass_env: &mut Vec<String>) {
        let Some(names) = self.strings(c, USAGE_PASS_ENV, 1) else { return };
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

    /// A `secret` node onto `secrets`, each id once.
    fn add_secret(&mut self, c: &KdlNode, secrets: &mut Vec<SecretSpec>) {
        let Some(sec) = self.secret(c) else { return };
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

    /// A step's `mount-from-host "/HOST/PATH" to="/PATH"`: an absolute host path without `..`.
    fn host_mount(&mut self, c: &KdlNode) -> Option<(String, String)> {
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
        match (host, to) {
            (Some(h), Some((t, _))) => Some((h, t)),
            _ => None,
        }
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
            match cname {
                "pids" => {
                    if let Some(e) = self.limit_value(c, "a number of processes") {
                        self.pids_limit(e, &mut l);
                    }
                }
                "cpus" => {
                    if let Some(e) = self.limit_value(c, "a number of CPUs") {
                        self.cpus_limit(e, &mut l);
                    }
                }
                "memory" | "disk" => {
                    if let Some(e) = self.limit_value(c, "a size") {
                        self.size_limit(cname, e, &mut l);
                    }
                }
                "time" => {
                    if let Some(e) = self.limit_value(c, "a duration") {
                        self.time_limit(e, &mut l);
                    }
                }
                _ => self.unknown_node(c, "limits", LIMIT_CHILDREN),
            }
        }
        l
    }

    /// The one argument of a limit (`pids 512`), no properties or children.
    fn limit_value<'n>(&mut self, c: &'n KdlNode, what: &str) -> Option<&'n KdlEntry> {
        let n = self.open(c, USAGE_LIMITS);
        self.leaf(&n);
        self.props(&n, &[]);
        self.args(&n, 1, Some(1), what).first().copied()
    }

    /// `pids N`: at least 8, at most 2^22.
    fn pids_limit(&mut self, e: &KdlEntry, l: &mut StepLimits) {
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

    /// `cpus N`: an integer or a fraction, from 0.01 to 4096.
    fn cpus_limit(&mut self, e: &KdlEntry, l: &mut StepLimits) {
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

    /// `memory SIZE` (at least 16MiB) or `disk SIZE`: bytes, or a size such as "4GiB".
    fn size_limit(&mut self, cname: &str, e: &KdlEntry, l: &mut StepLimits) {
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

    /// `time "DURATION"`: each command's wall-clock limit, at least a second.
    fn time_limit(&mut self, e: &KdlEntry, l: &mut StepLimits) {
        let Some(v) = self.string(e, "`time`") else { return };
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
}
