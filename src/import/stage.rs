//! The stage model: what import knows of each `FROM` stage as it reads it ([`Stage`], its base
//! and its build step), `FROM` itself and what comes before the first one.

use std::collections::{BTreeMap, BTreeSet};

use super::parse::Instr;
use super::values::{name_of, registry_ref, subst};
use super::writer::Node;
use super::ImportOptions;

#[derive(Debug, Clone)]
pub(super) enum StageBase {
    Scratch,
    Registry(String),
    Debian { suite: String },
    Stage(usize),
}

#[derive(Debug, Default)]
pub(super) struct StepDraft {
    pub(super) line: usize,
    pub(super) inputs: Vec<Node>,
    pub(super) runs: Vec<Vec<String>>,
    pub(super) workdir: String,
    pub(super) env: Vec<(String, String)>,
    pub(super) network: bool,
}

#[derive(Debug)]
pub(super) struct Stage {
    pub(super) alias: Option<String>,
    pub(super) name: String,
    /// Its `FROM` line.
    pub(super) line: usize,
    pub(super) base: StageBase,
    /// The Debian suite its packages come from, when known.
    pub(super) suite: Option<String>,
    pub(super) packages: Vec<String>,
    /// (name, gid)
    pub(super) groups: Vec<(String, u32)>,
    /// (name, uid, its `user` node)
    pub(super) users: Vec<(String, u32, Node)>,
    pub(super) files: Vec<Node>,
    /// Destinations made by `mkdir` or `COPY` (for `chown`/`chmod`): their node in `files`.
    pub(super) made: BTreeMap<String, usize>,
    pub(super) config: Vec<Node>,
    pub(super) step: Option<StepDraft>,
    pub(super) workdir: String,
    pub(super) vars: Vec<(String, String)>,
    /// Names in `vars` that ARGs set (ENVs are left for compose to expand).
    pub(super) arg_names: BTreeSet<String>,
    pub(super) shell: Vec<String>,
    /// Paths later stages copy out of it.
    pub(super) copied_out: Vec<String>,
    /// `COPY`s after a step began: the next step's inputs, or the image's, after the step.
    pub(super) pending: Vec<Node>,
    pub(super) next_system_uid: u32,
    pub(super) next_uid: u32,
}

impl Stage {
    /// Sets the config node named `n.name()`, replacing one set before.
    pub(super) fn set_config(&mut self, n: Node) {
        self.config.retain(|c| c.name() != n.name());
        self.config.push(n);
    }
}

/// Linux's signal names, without `SIG`, as Docker knows them (and `RTMIN+N`, `RTMAX-N`).
pub(super) const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT",
    "RTMAX", "RTMIN", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM",
    "WINCH", "XCPU", "XFSZ",
];

pub(super) const DEBIAN_SUITES: &[&str] = &["buster", "bullseye", "bookworm", "trixie", "forky", "sid"];

/// An instruction before the first `FROM`: (exact, message).
pub(super) fn before_from(ins: &Instr, global_args: &mut Vec<(String, String)>) -> (bool, String) {
    if ins.keyword != "ARG" {
        return (false, format!("`{}` before the first FROM is not translated", ins.keyword));
    }
    let (k, v) = match ins.args.split_once('=') {
        Some((k, v)) => (k.trim().to_string(), v.trim().trim_matches('"').to_string()),
        None => (ins.args.trim().to_string(), String::new()),
    };
    if k.is_empty() {
        return (false, "not translated: the ARG names no variable".into());
    }
    global_args.push((k, v));
    (true, "a build argument: its default is written where it is used (compose has no build arguments yet)".into())
}

/// `FROM`'s image and `AS` name, and what is wrong with its shape, if anything.
pub(super) fn from_words(args: &str) -> (String, Option<String>, Option<String>) {
    let words: Vec<&str> = args.split_whitespace().skip_while(|w| w.starts_with("--")).collect();
    let image = words.first().map(|w| w.to_string()).unwrap_or_default();
    match words.as_slice() {
        [] | [_] => (image, None, None),
        [_, as_kw, a] if as_kw.eq_ignore_ascii_case("as") => (image, Some(a.to_string()), None),
        [_, as_kw] if as_kw.eq_ignore_ascii_case("as") => (image, None, Some("`AS` names no stage".into())),
        [_, rest @ ..] => (image, None, Some(format!("`{}` after the image is not `AS NAME`", rest.join(" ")))),
    }
}

/// `FROM`: a new stage; (exact, message).
pub(super) fn from(ins: &Instr, stages: &mut Vec<Stage>, global_args: &[(String, String)], opts: &ImportOptions) -> (bool, String) {
    let (image, alias, shape) = from_words(&ins.args);
    let image = subst(&image, global_args);
    let idx = stages.len();
    let mut review: Vec<String> = shape.into_iter().collect();
    if let Some(a) = &alias {
        if stage_by_name(stages, a).is_some() {
            review.push(format!("a stage named `{a}` comes before: Docker refuses the Dockerfile"));
        }
    }
    for f in ins.args.split_whitespace().take_while(|w| w.starts_with("--")) {
        if f.starts_with("--platform") {
            review.push("`--platform` is not translated: set `platforms`".into());
        } else {
            review.push(format!("`{f}` is not translated"));
        }
    }
    let (base, suite, message, exact) = match from_base(&image, stages, opts.registry_base) {
        Ok(b) => b,
        Err(why) => (StageBase::Scratch, None, format!("not translated: {why}; the stage starts from nothing (scratch)"), false),
    };
    stages.push(Stage {
        name: alias.as_deref().map(name_of).unwrap_or_else(|| format!("stage-{idx}")),
        alias,
        line: ins.line,
        base,
        suite,
        packages: Vec::new(),
        groups: Vec::new(),
        users: Vec::new(),
        files: Vec::new(),
        made: BTreeMap::new(),
        config: Vec::new(),
        step: None,
        workdir: "/".into(),
        vars: Vec::new(),
        arg_names: BTreeSet::new(),
        shell: vec!["/bin/sh".into(), "-c".into()],
        copied_out: Vec::new(),
        pending: Vec::new(),
        next_system_uid: 999,
        next_uid: 1000,
    });
    if review.is_empty() {
        (exact, message)
    } else {
        (false, format!("{message}; {}", review.join("; ")))
    }
}

/// The last stage named `name` (Docker compares stage names without case).
pub(super) fn stage_by_name(stages: &[Stage], name: &str) -> Option<usize> {
    stages.iter().rposition(|s| s.alias.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(name)))
}

/// What `FROM image` becomes: (base, suite, message, exact), or why it is no image.
pub(super) fn from_base(image: &str, stages: &[Stage], registry: bool) -> Result<(StageBase, Option<String>, String, bool), String> {
    if image == "scratch" {
        return Ok((StageBase::Scratch, None, "an image from scratch".into(), true));
    }
    if let Some(i) = stage_by_name(stages, image) {
        let suite = stages.get(i).and_then(|s| s.suite.clone());
        return Ok((StageBase::Stage(i), suite, format!("`base image=` the stage `{image}`"), true));
    }
    let reference = registry_ref(image)?;
    let (repo, tag) = reference
        .rsplit_once(':')
        .filter(|(r, _)| !r.contains('/') || !r.rsplit('/').next().unwrap_or("").is_empty())
        .unwrap_or((reference.as_str(), "latest"));
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let suite = DEBIAN_SUITES.iter().find(|s| tag.split('-').any(|p| p == **s)).map(|s| s.to_string());
    if last == "debian" && !registry {
        if let Some(suite) = &suite {
            let slim = tag.ends_with("-slim");
            return Ok((
                StageBase::Debian { suite: suite.clone() },
                Some(suite.clone()),
                format!(
                    "composed from the Debian archive ({suite} and {suite}-security, variant \"minbase\"{}), pinned in the lockfile; `--registry-base` keeps the registry image",
                    if slim { "" } else { "; the non-slim image also holds documentation and locales" }
                ),
                slim,
            ));
        }
    }
    let message = if reference == image {
        format!("registry base `{image}`, pinned by digest in the lockfile")
    } else {
        format!("registry base `{reference}` (no tag is Docker's `latest`), pinned by digest in the lockfile")
    };
    Ok((StageBase::Registry(reference), suite, message, true))
}
