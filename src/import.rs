//! `compose import`: a Dockerfile to a spec.
//!
//! Owns reading a Dockerfile (parser directives, line continuations, comments, exec and shell
//! forms, `ARG`/`ENV` substitution) and writing the spec that means the same, instruction by
//! instruction, with a note for each: translated exactly, or what to review and why. It never
//! changes meaning silently: what it cannot translate faithfully is listed with its line.
//!
//! - `FROM debian:SUITE[-slim]` becomes an image composed from the archive (`variant "minbase"`,
//!   the suite and its security suite), unless a registry base is asked for; other `FROM`s are
//!   registry bases (Docker Hub names), `FROM scratch` nothing, `FROM STAGE` `base image=`.
//! - `RUN` is split at `&&` and `;`: `apt-get install` becomes `packages`, `groupadd`/`useradd`/
//!   `addgroup`/`adduser` `accounts`, `mkdir`/`chown`/`chmod`/`ln -s` file operations; apt's
//!   updates and clean-ups are dropped. The rest becomes a build step over the stage's image,
//!   whose output is what later stages `COPY --from` it (a step in the last stage is flagged).
//! - `COPY`/`ADD` become `copy` (`--from`, `--chown`, `--chmod`); the other instructions map to
//!   `config`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The exported image's name.
    pub name: String,
    /// Keep `FROM debian:…` as a registry base rather than composing it from the archive.
    pub registry_base: bool,
    /// The build context (the Dockerfile's directory), to expand `COPY` globs.
    pub context: std::path::PathBuf,
}

/// One instruction's translation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Note {
    /// Line of the instruction in the Dockerfile (1-based).
    pub line: usize,
    pub instruction: String,
    /// Translated with the same meaning.
    pub exact: bool,
    /// What it became, or what to review.
    pub message: String,
}

/// A spec and how it was made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub spec: String,
    pub notes: Vec<Note>,
}

impl Imported {
    /// (instructions translated exactly, instructions). Notes about the spec as a whole (line
    /// 0) are not instructions.
    pub fn share(&self) -> (usize, usize) {
        let instructions = self.notes.iter().filter(|n| n.line > 0);
        (instructions.clone().filter(|n| n.exact).count(), instructions.count())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("the Dockerfile has no FROM")]
    NoFrom,
}

/// KDL string literal of `s`.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A name usable for an image or step: lowercase letters, digits, `-`.
fn name_of(s: &str) -> String {
    let mut n: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    while n.contains("--") {
        n = n.replace("--", "-");
    }
    let n = n.trim_matches('-').to_string();
    if n.is_empty() || !n.starts_with(|c: char| c.is_ascii_lowercase()) {
        format!("img-{n}")
    } else {
        n
    }
}

/// One logical instruction.
struct Instr {
    line: usize,
    keyword: String,
    args: String,
    /// The instruction as written, on one line (for notes).
    text: String,
}

/// Lines joined at continuations, comments and blank lines dropped, directives read.
fn instructions(text: &str) -> Result<Vec<Instr>, ImportError> {
    let mut escape = '\\';
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut directives = true;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if directives {
            if let Some(d) = trimmed.strip_prefix('#') {
                if let Some((k, v)) = d.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("escape") {
                        escape = v.trim().chars().next().unwrap_or('\\');
                        continue;
                    }
                }
            } else if !trimmed.is_empty() {
                directives = false;
            }
        }
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_some()) {
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let (body, continues) = match line.strip_suffix(escape) {
            Some(b) => (b, true),
            None => (line, false),
        };
        match &mut current {
            Some((_, acc)) => {
                acc.push(' ');
                acc.push_str(body.trim());
            }
            None => current = Some((i + 1, body.trim().to_string())),
        }
        if !continues {
            if let Some((n, acc)) = current.take() {
                out.push(split_instr(n, acc)?);
            }
        }
    }
    if let Some((n, acc)) = current.take() {
        out.push(split_instr(n, acc)?);
    }
    Ok(out)
}

fn split_instr(line: usize, text: String) -> Result<Instr, ImportError> {
    let (k, rest) = text.split_once(char::is_whitespace).unwrap_or((text.as_str(), ""));
    if !k.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(ImportError::Syntax { line, message: format!("`{k}` is not an instruction") });
    }
    Ok(Instr { line, keyword: k.to_ascii_uppercase(), args: rest.trim().to_string(), text: text.clone() })
}

/// The exec form `["a", "b"]`, if `s` is one.
fn exec_form(s: &str) -> Option<Vec<String>> {
    let s = s.trim();
    if !s.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(s).ok()
}

/// Words of a command line, quotes and backslashes undone. `strict`: `None` when the line uses
/// what only a shell can do (substitution, globs, pipes, redirections, braces, variables);
/// otherwise `$` is kept as written (for `ENV`/`LABEL`/`ARG`, which expand later). `None` too
/// for unbalanced quotes.
fn words(s: &str, strict: bool) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        '$' | '`' if strict => return None,
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            '$' | '`' | '*' | '?' | '[' | '{' | '}' | '|' | '>' | '<' | '&' | ';' | '(' | ')' | '~' if strict => return None,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// A shell command split at top-level `&&` and `;` (quotes respected); `None` when it has
/// `||`, pipes or other control flow that the split would change.
fn split_commands(s: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let (mut single, mut double) = (false, false);
    while let Some(c) = chars.next() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '\\' if !single => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                continue;
            }
            '&' if !single && !double && chars.peek() == Some(&'&') => {
                chars.next();
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            ';' if !single && !double => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            '|' if !single && !double => return None,
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    Some(parts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
}

/// Substitute `ARG`s and `ENV`s as Docker does in instructions other than `RUN`.
fn subst(s: &str, vars: &[(String, String)]) -> String {
    let env: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    crate::util::expand_env(s, &env)
}

/// `KEY=VALUE …` (or the legacy `KEY VALUE`), values unquoted.
fn key_values(s: &str) -> Option<Vec<(String, String)>> {
    let words = words(s, false)?;
    if words.len() == 2 && !words[0].contains('=') {
        return Some(vec![(words[0].clone(), words[1].clone())]);
    }
    if !s.contains('=') {
        let (k, v) = s.split_once(char::is_whitespace)?;
        return Some(vec![(k.to_string(), v.trim().to_string())]);
    }
    words.into_iter().map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

/// `path` made absolute against `workdir`, normalised.
fn absolute(path: &str, workdir: &str) -> String {
    let joined = if path.starts_with('/') { path.to_string() } else { format!("{}/{path}", workdir.trim_end_matches('/')) };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut s = format!("/{}", parts.join("/"));
    if path.ends_with('/') && s != "/" {
        s.push('/');
    }
    s
}

#[derive(Debug, Clone)]
enum StageBase {
    Scratch,
    Registry(String),
    Debian { suite: String },
    Stage(usize),
}

#[derive(Debug, Default)]
struct StepDraft {
    line: usize,
    inputs: Vec<String>,
    runs: Vec<Vec<String>>,
    workdir: String,
    env: Vec<(String, String)>,
    network: bool,
}

#[derive(Debug)]
struct Stage {
    alias: Option<String>,
    name: String,
    base: StageBase,
    /// The Debian suite its packages come from, when known.
    suite: Option<String>,
    packages: Vec<String>,
    groups: Vec<(String, Option<u32>)>,
    users: Vec<String>,
    files: Vec<String>,
    /// Destinations made by `mkdir`, `WORKDIR` or `COPY` (for `chown`/`chmod`).
    made: BTreeMap<String, usize>,
    config: Vec<String>,
    step: Option<StepDraft>,
    workdir: String,
    vars: Vec<(String, String)>,
    /// Names in `vars` that ARGs set (ENVs are left for compose to expand).
    arg_names: BTreeSet<String>,
    shell: Vec<String>,
    /// Paths later stages copy out of it.
    copied_out: Vec<String>,
    /// `COPY`s after a step began: the next step's inputs, or the image's, after the step.
    pending: Vec<String>,
    next_system_uid: u32,
    next_uid: u32,
}

const DEBIAN_SUITES: &[&str] = &["buster", "bullseye", "bookworm", "trixie", "forky", "sid"];

/// Translate a Dockerfile.
pub fn import(text: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let instrs = instructions(text)?;
    let mut notes: Vec<Note> = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut global_args: Vec<(String, String)> = Vec::new();
    let mut note = |i: &Instr, exact: bool, message: String| {
        let shown: String = i.text.chars().take(80).collect();
        notes.push(Note { line: i.line, instruction: shown, exact, message });
    };
    let aliases = aliases(&instrs);
    // `COPY --from=IMAGE` of an image that is no stage: (name in the spec, reference).
    let mut external_images: Vec<(String, String)> = Vec::new();
    for ins in &instrs {
        let Some(stage) = stages.last_mut().filter(|_| ins.keyword != "FROM") else {
            match ins.keyword.as_str() {
                "ARG" => {
                    if let Some((k, v)) = ins.args.split_once('=') {
                        global_args.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
                    } else {
                        global_args.push((ins.args.trim().to_string(), String::new()));
                    }
                    note(
                        ins,
                        true,
                        "a build argument: its default is written where it is used (compose has no build arguments yet)".into(),
                    );
                }
                "FROM" => {
                    let words: Vec<&str> = ins.args.split_whitespace().filter(|w| !w.starts_with("--platform")).collect();
                    let image = subst(words.first().copied().unwrap_or(""), &global_args);
                    let alias = match words.as_slice() {
                        [_, as_kw, a] if as_kw.eq_ignore_ascii_case("as") => Some(a.to_string()),
                        _ => None,
                    };
                    let idx = stages.len();
                    let name = alias.as_deref().map(name_of).unwrap_or_else(|| format!("stage-{idx}"));
                    let (base, suite, message, exact) = from_base(&image, &stages, opts.registry_base);
                    stages.push(Stage {
                        alias,
                        name,
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
                    if ins.args.contains("--platform") {
                        note(ins, false, format!("{message}; `--platform` is not translated: set `platforms`"));
                    } else {
                        note(ins, exact, message);
                    }
                }
                _ => note(ins, false, format!("`{}` before the first FROM is not translated", ins.keyword)),
            }
            continue;
        };
        let args = ins.args.as_str();
        match ins.keyword.as_str() {
            "ARG" => {
                let (k, v) = match args.split_once('=') {
                    Some((k, v)) => (k.trim().to_string(), subst(v.trim().trim_matches('"'), &stage.vars)),
                    None => {
                        let k = args.trim().to_string();
                        let v = global_args.iter().find(|(g, _)| *g == k).map(|(_, v)| v.clone()).unwrap_or_default();
                        (k, v)
                    }
                };
                note(
                    ins,
                    true,
                    format!("build argument `{k}`: its value `{v}` is written where it is used (compose has no build arguments yet)"),
                );
                stage.arg_names.insert(k.clone());
                stage.vars.push((k, v));
            }
            "ENV" => match key_values(args) {
                Some(kvs) => {
                    let mut line = String::from("env");
                    for (k, v) in kvs {
                        // ARGs are resolved here; references to ENVs stay, for compose to expand
                        // against the environment so far, as Docker does.
                        let args_now: Vec<(String, String)> =
                            stage.vars.iter().filter(|(n, _)| stage.arg_names.contains(n)).cloned().collect();
                        let v = expand_args_only(&v, &args_now);
                        let _ = write!(line, " {k}={}", q(&v));
                        let value = subst(&v, &stage.vars);
                        stage.arg_names.remove(&k);
                        stage.vars.retain(|(n, _)| *n != k);
                        stage.vars.push((k.clone(), value.clone()));
                        if let Some(step) = &mut stage.step {
                            step.env.retain(|(n, _)| *n != k);
                            step.env.push((k, value));
                        }
                    }
                    stage.config.push(line);
                    note(ins, true, "config env".into());
                }
                None => note(ins, false, "not translated: cannot read its KEY=VALUE pairs".into()),
            },
            "LABEL" | "MAINTAINER" => {
                let kvs =
                    if ins.keyword == "MAINTAINER" { Some(vec![("maintainer".to_string(), args.to_string())]) } else { key_values(args) };
                match kvs {
                    Some(kvs) => {
                        for (k, v) in kvs {
                            stage.config.push(format!("label {}={}", q(&k), q(&subst(&v, &stage.vars))));
                        }
                        note(ins, true, "config label".into());
                    }
                    None => note(ins, false, "not translated: cannot read its KEY=VALUE pairs".into()),
                }
            }
            "WORKDIR" => {
                let w = absolute(&subst(args.trim_matches('"'), &stage.vars), &stage.workdir);
                let w = w.trim_end_matches('/').to_string();
                let w = if w.is_empty() { "/".to_string() } else { w };
                stage.workdir = w.clone();
                stage.config.retain(|c| !c.starts_with("workdir "));
                stage.config.push(format!("workdir {}", q(&w)));
                note(ins, true, "config workdir (compose makes the directory when nothing else does)".into());
            }
            "USER" => {
                let u = subst(args.trim(), &stage.vars);
                stage.config.retain(|c| !c.starts_with("user "));
                stage.config.push(format!("user {}", q(&u)));
                note(ins, true, "config user".into());
            }
            "EXPOSE" => {
                let ports: Vec<String> = args
                    .split_whitespace()
                    .map(|p| subst(p, &stage.vars))
                    .map(|p| if p.ends_with("/tcp") { p.trim_end_matches("/tcp").to_string() } else { p })
                    .collect();
                let shown: Vec<String> =
                    ports.iter().map(|p| if p.chars().all(|c| c.is_ascii_digit()) { p.clone() } else { q(p) }).collect();
                stage.config.push(format!("expose {}", shown.join(" ")));
                note(ins, true, "config expose".into());
            }
            "VOLUME" => {
                let vols = exec_form(args).unwrap_or_else(|| args.split_whitespace().map(str::to_string).collect());
                let shown: Vec<String> = vols.iter().map(|v| q(&subst(v, &stage.vars))).collect();
                stage.config.push(format!("volume {}", shown.join(" ")));
                note(ins, true, "config volume".into());
            }
            "STOPSIGNAL" => {
                stage.config.push(format!("stop-signal {}", q(&subst(args.trim(), &stage.vars))));
                note(ins, true, "config stop-signal".into());
            }
            "CMD" | "ENTRYPOINT" => {
                let key = ins.keyword.to_ascii_lowercase();
                stage.config.retain(|c| !c.starts_with(&format!("{key} ")));
                match exec_form(args) {
                    Some(argv) => {
                        let shown: Vec<String> = argv.iter().map(|a| q(a)).collect();
                        stage.config.push(format!("{key} {}", shown.join(" ")));
                        note(ins, true, format!("config {key}"));
                    }
                    None if stage.shell == ["/bin/sh", "-c"] => {
                        stage.config.push(format!("{key} {} shell=#true", q(args)));
                        note(ins, true, format!("config {key}, shell form (shell=#true)"));
                    }
                    None => {
                        let mut argv = stage.shell.clone();
                        argv.push(args.to_string());
                        let shown: Vec<String> = argv.iter().map(|a| q(a)).collect();
                        stage.config.push(format!("{key} {}", shown.join(" ")));
                        note(ins, true, format!("config {key}, through the stage's SHELL"));
                    }
                }
            }
            "HEALTHCHECK" => match healthcheck(args) {
                Some(line) => {
                    stage.config.retain(|c| !c.starts_with("healthcheck "));
                    stage.config.push(line);
                    note(ins, true, "config healthcheck".into());
                }
                None => note(ins, false, "not translated: an option this importer does not know".into()),
            },
            "SHELL" => match exec_form(args) {
                Some(argv) if !argv.is_empty() => {
                    stage.shell = argv;
                    note(ins, true, "the shell for RUN lines and shell-form commands that follow".into());
                }
                _ => note(ins, false, "not translated: SHELL takes the exec form".into()),
            },
            "ONBUILD" => {
                note(ins, false, "not translated: compose runs no triggers; an image built on this one states those files itself".into())
            }
            "COPY" | "ADD" => {
                let message = copy(ins, stage, &aliases, &mut external_images, opts);
                match message {
                    Ok(m) => note(ins, true, m),
                    Err(m) => note(ins, false, m),
                }
            }
            "RUN" => {
                let (exact, message) = run(ins, stage);
                note(ins, exact, message);
            }
            other => note(ins, false, format!("not translated: `{other}` is not an instruction compose knows")),
        }
    }
    if stages.is_empty() {
        return Err(ImportError::NoFrom);
    }
    // Where later stages copy from, per stage (the outputs of their steps).
    for ins in &instrs {
        if ins.keyword != "COPY" {
            continue;
        }
        let Some(from) = flag(&ins.args, "--from") else { continue };
        let Some(idx) = stage_index(&stages, &from) else { continue };
        let words = words(&strip_flags(&ins.args), false).unwrap_or_default();
        if words.len() >= 2 {
            for src in &words[..words.len() - 1] {
                stages[idx].copied_out.push(absolute(src, "/"));
            }
        }
    }
    let spec = emit(&mut stages, &external_images, opts, &mut notes);
    notes.sort_by_key(|n| n.line);
    Ok(Imported { spec, notes })
}

/// `${VAR}` and `$VAR` of `args` replaced, other references kept as written.
fn expand_args_only(v: &str, args: &[(String, String)]) -> String {
    // Every name the ARGs define is replaced; a name only ENV defines stays a reference.
    let names: BTreeSet<&str> = args.iter().map(|(k, _)| k.as_str()).collect();
    if names.is_empty() || !v.contains('$') {
        return v.to_string();
    }
    let mut out = v.to_string();
    for (k, val) in args {
        for pat in [format!("${{{k}}}"), format!("${k}")] {
            if pat.starts_with("${") {
                out = out.replace(&pat, val);
            } else {
                // `$NAME` only when not followed by more name characters.
                let mut s = String::new();
                let mut rest = out.as_str();
                while let Some(i) = rest.find(&pat) {
                    let after = &rest[i + pat.len()..];
                    s.push_str(&rest[..i]);
                    if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                        s.push_str(&pat);
                    } else {
                        s.push_str(val);
                    }
                    rest = after;
                }
                s.push_str(rest);
                out = s;
            }
        }
    }
    out
}

/// The value of `--NAME=VALUE` among an instruction's flags.
fn flag(args: &str, name: &str) -> Option<String> {
    args.split_whitespace().take_while(|w| w.starts_with("--")).find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// The instruction's arguments without its leading `--flags`.
fn strip_flags(args: &str) -> String {
    args.split_whitespace().skip_while(|w| w.starts_with("--")).collect::<Vec<_>>().join(" ")
}

/// The `AS` name of each stage, in order.
fn aliases(instrs: &[Instr]) -> Vec<Option<String>> {
    instrs
        .iter()
        .filter(|i| i.keyword == "FROM")
        .map(|i| {
            let w: Vec<&str> = i.args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            (w.len() == 3 && w[1].eq_ignore_ascii_case("as")).then(|| w[2].to_string())
        })
        .collect()
}

fn stage_index(stages: &[Stage], from: &str) -> Option<usize> {
    stages
        .iter()
        .position(|s| s.alias.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(from)))
        .or_else(|| from.parse::<usize>().ok().filter(|i| *i < stages.len()))
}

/// What `FROM image` becomes.
fn from_base(image: &str, stages: &[Stage], registry: bool) -> (StageBase, Option<String>, String, bool) {
    if image == "scratch" {
        return (StageBase::Scratch, None, "an image from scratch".into(), true);
    }
    if let Some(i) = stage_index(stages, image) {
        let suite = stages[i].suite.clone();
        return (StageBase::Stage(i), suite, format!("`base image=` the stage `{image}`"), true);
    }
    let (repo, tag) = image
        .rsplit_once(':')
        .filter(|(r, _)| !r.contains('/') || !r.rsplit('/').next().unwrap_or("").is_empty())
        .unwrap_or((image, "latest"));
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let suite = DEBIAN_SUITES.iter().find(|s| tag.split('-').any(|p| p == **s)).map(|s| s.to_string());
    if last == "debian" && !registry {
        if let Some(suite) = &suite {
            let slim = tag.ends_with("-slim");
            return (
                StageBase::Debian { suite: suite.clone() },
                Some(suite.clone()),
                format!(
                    "composed from the Debian archive ({suite} and {suite}-security, variant \"minbase\"{}), pinned in the lockfile; `--registry-base` keeps the registry image",
                    if slim { "" } else { "; the non-slim image also holds documentation and locales" }
                ),
                slim,
            );
        }
    }
    let message = format!("registry base `{image}`, pinned by digest in the lockfile");
    (StageBase::Registry(image.to_string()), suite, message, true)
}

fn healthcheck(args: &str) -> Option<String> {
    let mut words = args.split_whitespace().peekable();
    let mut opts = Vec::new();
    while let Some(w) = words.peek() {
        let Some(f) = w.strip_prefix("--") else { break };
        let (k, v) = f.split_once('=')?;
        match k {
            "interval" | "timeout" | "start-period" | "start-interval" => opts.push(format!("{k}={}", q(v))),
            "retries" => opts.push(format!("retries={}", v.parse::<u64>().ok()?)),
            _ => return None,
        }
        words.next();
    }
    let rest: Vec<&str> = words.collect();
    let rest = rest.join(" ");
    if rest.eq_ignore_ascii_case("NONE") {
        return Some("healthcheck #false".into());
    }
    let cmd = rest.strip_prefix("CMD")?.trim();
    let mut line = match exec_form(cmd) {
        Some(argv) => format!("healthcheck {}", argv.iter().map(|a| q(a)).collect::<Vec<_>>().join(" ")),
        None => format!("healthcheck {} shell=#true", q(cmd)),
    };
    for o in opts {
        line.push(' ');
        line.push_str(&o);
    }
    Some(line)
}

/// `COPY`/`ADD`: Ok(what it became) or Err(what to review).
fn copy(
    ins: &Instr,
    stage: &mut Stage,
    aliases: &[Option<String>],
    external: &mut Vec<(String, String)>,
    opts: &ImportOptions,
) -> Result<String, String> {
    if ins.args.contains("<<") {
        return Err("not translated: here-documents; write the file beside the spec and copy it".into());
    }
    let words = match exec_form(&strip_flags(&ins.args)) {
        Some(w) => w,
        None => words(&strip_flags(&ins.args), false).ok_or("not translated: unbalanced quotes")?,
    };
    if words.len() < 2 {
        return Err("not translated: expected a source and a destination".into());
    }
    let (srcs, dst) = words.split_at(words.len() - 1);
    let dst = subst(&dst[0], &stage.vars);
    let into_dir = dst.ends_with('/') || srcs.len() > 1 || dst == "." || dst == "./";
    let dst_abs = absolute(&dst, &stage.workdir);
    let mut props = String::new();
    let mut review: Vec<String> = Vec::new();
    if let Some(o) = flag(&ins.args, "--chown") {
        let _ = write!(props, " owner={}", q(&subst(&o, &stage.vars)));
    }
    if let Some(m) = flag(&ins.args, "--chmod") {
        match u32::from_str_radix(&m, 8) {
            Ok(n) => {
                let _ = write!(props, " mode=0o{n:o}");
            }
            Err(_) => review.push(format!("`--chmod={m}` is not an octal mode")),
        }
    }
    for f in ins.args.split_whitespace().take_while(|w| w.starts_with("--")) {
        if !(f.starts_with("--chown=") || f.starts_with("--chmod=") || f.starts_with("--from=") || f == "--link") {
            review.push(format!("`{f}` is not translated"));
        }
    }
    let from = flag(&ins.args, "--from");
    let mut lines = Vec::new();
    for src in srcs {
        let src = subst(src, &stage.vars);
        if ins.keyword == "ADD" && (src.contains("://") || src.starts_with("git@")) {
            return Err(format!(
                "not translated: `ADD {src}` downloads; fetch it in a fixed-output step (`network #true`) and `copy from=` it"
            ));
        }
        if ins.keyword == "ADD" && [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar.zst"].iter().any(|x| src.ends_with(x)) {
            return Err(format!("not translated: `ADD {src}` unpacks an archive; unpack it in a step (`run \"tar\" \"-xf\" …`)"));
        }
        // Docker: a file goes into a destination ending in `/` (or several sources); a
        // directory's contents go to the destination.
        let into = format!("{}/", dst_abs.trim_end_matches('/'));
        let file_to = if into_dir { into.clone() } else { dst_abs.clone() };
        let dir_to = if dst_abs == "/" { "/".to_string() } else { dst_abs.trim_end_matches('/').to_string() };
        match &from {
            Some(f) => {
                let abs = absolute(&src, "/");
                let source = match aliases.iter().position(|a| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(f))) {
                    Some(_) => format!("@stage:{}", f.to_ascii_lowercase()),
                    None => {
                        let name = format!("from-{}", name_of(f));
                        if !external.iter().any(|(n, _)| *n == name) {
                            external.push((name.clone(), f.clone()));
                        }
                        name
                    }
                };
                lines.push(format!("copy from={} {} to={}{props}", q(&source), q(&abs), q(&file_to)));
            }
            None => {
                let has_glob = src.contains(['*', '?', '[']);
                if has_glob {
                    let matched = glob_context(&opts.context, &src);
                    if matched.is_empty() {
                        review.push(format!("`{src}` matches nothing in the build context"));
                    }
                    review
                        .push(format!("the glob `{src}` was expanded now, to {} file(s): files added later are not copied", matched.len()));
                    for m in matched {
                        lines.push(format!("copy {} to={}{props}", q(&m), q(&into)));
                    }
                } else {
                    let is_dir = opts.context.join(&src).is_dir() || src == "." || src.ends_with('/');
                    let target = if is_dir { dir_to.clone() } else { file_to.clone() };
                    let source = if is_dir && !src.ends_with('/') && src != "." { format!("{src}/") } else { src.clone() };
                    lines.push(format!("copy {} to={}{props}", q(&source), q(&target)));
                    stage.made.insert(target.trim_end_matches('/').to_string(), stage.files.len() + lines.len() - 1);
                }
            }
        }
    }
    // Before any step: the stage's image has them (a step sees them there). After one: the
    // next step's inputs, or the image's files after the step's output.
    match &stage.step {
        Some(_) => stage.pending.extend(lines.iter().cloned()),
        None => stage.files.extend(lines.iter().cloned()),
    }
    if review.is_empty() {
        Ok(format!("{} file operation(s)", lines.len()))
    } else {
        Err(review.join("; "))
    }
}

/// Files of the context matching a `COPY` glob (relative paths, sorted).
fn glob_context(context: &Path, pattern: &str) -> Vec<String> {
    let Ok(glob) = globset::GlobBuilder::new(pattern.trim_start_matches("./")).literal_separator(true).build() else { return Vec::new() };
    let m = glob.compile_matcher();
    let mut out: Vec<String> = walkdir::WalkDir::new(context)
        .min_depth(1)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.path().strip_prefix(context).ok().and_then(|p| p.to_str()).map(str::to_string))
        .filter(|p| m.is_match(p))
        .collect();
    out.sort();
    out
}

/// `RUN`: (exact, message).
fn run(ins: &Instr, stage: &mut Stage) -> (bool, String) {
    let args = ins.args.as_str();
    let mounts: Vec<&str> = args.split_whitespace().take_while(|w| w.starts_with("--")).collect();
    let body = strip_flags(args);
    if body.contains("<<") {
        stage_step(stage, ins, vec![body.clone()]);
        return (false, "a here-document: kept in a build step as written; review it".into());
    }
    if let Some(argv) = exec_form(&body) {
        stage_step_argv(stage, ins, argv);
        return (false, step_message(stage));
    }
    let body = subst_args_in_run(&body, &stage.vars, &stage.arg_names);
    let Some(parts) = split_commands(&body) else {
        stage_step(stage, ins, vec![body.clone()]);
        return (false, format!("{} (uses `||` or a pipe, kept whole)", step_message(stage)));
    };
    let mut rest: Vec<String> = Vec::new();
    let mut done: Vec<String> = Vec::new();
    for part in parts {
        match classify(&part, stage) {
            Some(what) => done.push(what),
            None => rest.push(part),
        }
    }
    // `set -e`-like parts only matter to the commands left.
    if rest.iter().all(|p| p.starts_with("set ")) {
        rest.clear();
    }
    let mut message = done.join(", ");
    if !mounts.is_empty() {
        message.push_str(&format!("; `{}` is not translated", mounts.join(" ")));
    }
    if rest.is_empty() {
        return (mounts.is_empty(), if message.is_empty() { "nothing to do here".into() } else { message });
    }
    stage_step(stage, ins, vec![rest.join(" && ")]);
    let m = step_message(stage);
    (false, if message.is_empty() { m } else { format!("{message}; the rest: {m}") })
}

/// ARG values substituted in a RUN line (ENVs are the shell's, at run time).
fn subst_args_in_run(body: &str, vars: &[(String, String)], arg_names: &BTreeSet<String>) -> String {
    let args: Vec<(String, String)> = vars.iter().filter(|(n, _)| arg_names.contains(n)).cloned().collect();
    expand_args_only(body, &args)
}

fn step_message(stage: &Stage) -> String {
    let net = stage.step.as_ref().is_some_and(|s| s.network);
    format!(
        "a build step{}; its output is what later stages copy from it (in the last stage: the working directory, review)",
        if net { " with network (fixed-output: its output is pinned on first build)" } else { "" }
    )
}

fn stage_step(stage: &mut Stage, ins: &Instr, lines: Vec<String>) {
    for l in lines {
        let mut argv = stage.shell.clone();
        argv.push(l);
        stage_step_argv(stage, ins, argv);
    }
}

fn stage_step_argv(stage: &mut Stage, ins: &Instr, argv: Vec<String>) {
    const NETWORK: &[&str] = &[
        "pip", "npm", "yarn", "pnpm", "cargo", "go ", "curl", "wget", "git ", "gem ", "bundle", "composer", "mvn", "gradle", "apk", "apt",
    ];
    let joined = argv.join(" ");
    let network = NETWORK.iter().any(|n| joined.contains(n));
    let workdir = stage.workdir.clone();
    // A RUN sees the ENVs so far (not the ARGs: those were written into its line).
    let env: Vec<(String, String)> = stage.vars.iter().filter(|(k, _)| !k.is_empty() && !stage.arg_names.contains(k)).cloned().collect();
    let raw: Vec<String> = stage.pending.drain(..).collect();
    let pending: Vec<String> = raw.iter().map(|l| numeric_owner(l, stage)).collect();
    let step = stage.step.get_or_insert_with(|| StepDraft { line: ins.line, workdir, env, ..StepDraft::default() });
    step.network |= network;
    step.inputs.extend(pending);
    step.runs.push(argv);
}

/// A step input's `owner=` as numeric ids (steps take no names): from the stage's accounts, or
/// dropped when they are not known here.
fn numeric_owner(line: &str, stage: &Stage) -> String {
    let Some(start) = line.find(" owner=\"") else { return line.to_string() };
    let rest = &line[start + 8..];
    let Some(end) = rest.find('"') else { return line.to_string() };
    let owner = &rest[..end];
    let (u, g) = owner.split_once(':').unwrap_or((owner, owner));
    let uid = |n: &str| -> Option<u32> {
        n.parse().ok().or_else(|| {
            stage
                .users
                .iter()
                .find(|l| l.starts_with(&format!("user {} ", q(n))))
                .and_then(|l| l.split(" uid=").nth(1)?.split(' ').next()?.parse().ok())
        })
    };
    let gid = |n: &str| -> Option<u32> { n.parse().ok().or_else(|| stage.groups.iter().find(|(g, _)| g == n).and_then(|(_, g)| *g)) };
    match (uid(u), gid(g).or_else(|| uid(g))) {
        (Some(u), Some(g)) => format!("{} owner=\"{u}:{g}\"{}", &line[..start], &rest[end + 1..]),
        _ => format!("{}{}", &line[..start], &rest[end + 1..]),
    }
}

/// A RUN part that is not a command to run but a statement about the image.
fn classify(part: &str, stage: &mut Stage) -> Option<String> {
    if let Some(rest) = part.strip_prefix("rm ") {
        let paths: Vec<&str> = rest.split_whitespace().filter(|a| !a.starts_with('-')).collect();
        let cleanable = |p: &str| {
            ["/var/lib/apt/lists", "/var/cache/apt", "/var/log/apt", "/var/cache/debconf", "/tmp/*", "/var/tmp/*"]
                .iter()
                .any(|c| p.starts_with(c))
        };
        if !paths.is_empty() && paths.iter().all(|p| cleanable(p)) {
            return Some("apt clean-up dropped (compose writes no lists or caches)".into());
        }
        return None;
    }
    let words = words(part, true)?;
    let (cmd, args) = words.split_first()?;
    let cmd = cmd.rsplit('/').next().unwrap_or(cmd);
    match cmd {
        "apt-get" | "apt" => {
            let sub = args.iter().find(|a| !a.starts_with('-'))?;
            match sub.as_str() {
                "update" | "clean" | "autoclean" | "autoremove" => Some(format!("`apt-get {sub}` dropped (nothing to clean)")),
                "install" => {
                    let mut pkgs = Vec::new();
                    let mut skip = false;
                    for a in args.iter().skip_while(|a| a.as_str() != "install").skip(1) {
                        if skip {
                            skip = false;
                            continue;
                        }
                        match a.as_str() {
                            "-o" => skip = true,
                            "-y"
                            | "--yes"
                            | "--assume-yes"
                            | "-q"
                            | "-qq"
                            | "--quiet"
                            | "--no-install-recommends"
                            | "--no-install-suggests" => {}
                            a if a.starts_with('-') => return None,
                            a => pkgs.push(a.to_string()),
                        }
                    }
                    if args.iter().any(|a| {
                        a.starts_with('-')
                            && !matches!(
                                a.as_str(),
                                "-y" | "--yes"
                                    | "--assume-yes"
                                    | "-q"
                                    | "-qq"
                                    | "--quiet"
                                    | "--no-install-recommends"
                                    | "--no-install-suggests"
                                    | "-o"
                            )
                    }) {
                        return None;
                    }
                    for p in &pkgs {
                        if !stage.packages.contains(p) {
                            stage.packages.push(p.clone());
                        }
                    }
                    Some(format!(
                        "packages {} (their maintainer scripts' effects are emulated; `maintainer-scripts \"run\"` runs them as apt does)",
                        pkgs.join(" ")
                    ))
                }
                _ => None,
            }
        }
        "true" | ":" => Some("no-op".into()),
        "groupadd" | "addgroup" => {
            let mut gid = None;
            let mut name = None;
            let mut it = args.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-g" | "--gid" => gid = Some(it.next()?.parse::<u32>().ok()?),
                    "-r" | "--system" | "-f" | "--force" => {}
                    a if a.starts_with('-') => return None,
                    a => name = Some(a.to_string()),
                }
            }
            let name = name?;
            let gid = gid.unwrap_or_else(|| {
                let g = stage.next_system_uid;
                stage.next_system_uid -= 1;
                g
            });
            stage.groups.push((name.clone(), Some(gid)));
            Some(format!("accounts: group {name}"))
        }
        "useradd" | "adduser" => {
            let (mut uid, mut group, mut home, mut shell, mut gecos, mut system) = (None, None, None, None, None, false);
            let mut name = None;
            let mut it = args.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-u" | "--uid" => uid = Some(it.next()?.parse::<u32>().ok()?),
                    "-g" | "--gid" | "--ingroup" => group = Some(it.next()?.clone()),
                    "-d" | "--home-dir" | "--home" => home = Some(it.next()?.clone()),
                    "-s" | "--shell" => shell = Some(it.next()?.clone()),
                    "-c" | "--comment" | "--gecos" => gecos = Some(it.next()?.clone()),
                    "-r" | "--system" => system = true,
                    "-m"
                    | "--create-home"
                    | "-M"
                    | "--no-create-home"
                    | "--disabled-password"
                    | "--disabled-login"
                    | "-N"
                    | "--no-user-group"
                    | "-U"
                    | "--user-group"
                    | "--group"
                    | "-l"
                    | "--no-log-init"
                    | "-q"
                    | "--quiet" => {}
                    a if a.starts_with('-') => return None,
                    a => name = Some(a.to_string()),
                }
            }
            let name = name?;
            let uid = uid.unwrap_or_else(|| {
                if system {
                    let u = stage.next_system_uid;
                    stage.next_system_uid -= 1;
                    u
                } else {
                    let u = stage.next_uid;
                    stage.next_uid += 1;
                    u
                }
            });
            let gid = match &group {
                None => {
                    if !stage.groups.iter().any(|(g, _)| *g == name) {
                        stage.groups.push((name.clone(), Some(uid)));
                    }
                    stage.groups.iter().find(|(g, _)| *g == name).and_then(|(_, g)| *g).unwrap_or(uid)
                }
                Some(g) => match g.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => stage.groups.iter().find(|(n, _)| n == g).and_then(|(_, g)| *g)?,
                },
            };
            let mut line = format!("user {} uid={uid} gid={gid}", q(&name));
            if let Some(h) = home {
                let _ = write!(line, " home={}", q(&h));
            }
            if let Some(s) = shell {
                let _ = write!(line, " shell={}", q(&s));
            }
            if let Some(c) = gecos {
                let _ = write!(line, " gecos={}", q(&c));
            }
            stage.users.push(line);
            Some(format!("accounts: user {name}"))
        }
        "mkdir" => {
            let mut mode = None;
            let mut paths = Vec::new();
            let mut it = args.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-p" | "--parents" => {}
                    "-m" | "--mode" => mode = Some(u32::from_str_radix(it.next()?, 8).ok()?),
                    a if a.starts_with('-') => return None,
                    a => paths.push(absolute(a, &stage.workdir)),
                }
            }
            for p in &paths {
                let mut line = format!("dir {}", q(p));
                if let Some(m) = mode {
                    let _ = write!(line, " mode=0o{m:o}");
                }
                stage.made.insert(p.clone(), stage.files.len());
                stage.files.push(line);
            }
            Some(format!("files: dir {}", paths.join(" ")))
        }
        "chown" | "chmod" => {
            let mut it = args.iter().filter(|a| !matches!(a.as_str(), "-R" | "--recursive" | "-h"));
            let value = it.next()?.clone();
            if value.starts_with('-') {
                return None;
            }
            let paths: Vec<String> = it.map(|p| absolute(p, &stage.workdir)).collect();
            let prop =
                if cmd == "chown" { format!("owner={}", q(&value)) } else { format!("mode=0o{:o}", u32::from_str_radix(&value, 8).ok()?) };
            // Only what this stage made itself (a `dir` or a `copy`) can carry it.
            let lines: Vec<usize> = paths.iter().map(|p| stage.made.get(p.trim_end_matches('/')).copied()).collect::<Option<Vec<_>>>()?;
            for i in lines {
                let line = stage.files.get_mut(i)?;
                let key = prop.split('=').next().unwrap_or("");
                if line.contains(&format!(" {key}=")) {
                    return None;
                }
                line.push(' ');
                line.push_str(&prop);
            }
            Some(format!("{cmd} on {}", paths.join(" ")))
        }
        "ln" => {
            let flags: Vec<&String> = args.iter().filter(|a| a.starts_with('-')).collect();
            if !flags.iter().all(|f| matches!(f.as_str(), "-s" | "-sf" | "-fs" | "-snf" | "-sfn" | "-f" | "-n"))
                || !flags.iter().any(|f| f.contains('s'))
            {
                return None;
            }
            let rest: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
            let [target, link] = rest.as_slice() else { return None };
            let link = absolute(link, &stage.workdir);
            if link.ends_with('/') {
                return None;
            }
            stage.files.push(format!("symlink {} target={}", q(&link), q(target)));
            Some(format!("files: symlink {link}"))
        }
        _ => None,
    }
}

/// Write the spec.
fn emit(stages: &mut [Stage], external: &[(String, String)], opts: &ImportOptions, notes: &mut Vec<Note>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "// Imported from a Dockerfile by `compose import`: review the notes it printed.");
    let last = stages.len() - 1;
    let names: Vec<String> = stages.iter().enumerate().map(|(i, s)| if i == last { name_of(&opts.name) } else { s.name.clone() }).collect();
    for (name, image) in external {
        let _ = writeln!(out, "\nimage {} {{\n    export #false\n    base {}\n}}", q(name), q(image));
    }
    for i in 0..stages.len() {
        let has_step = stages[i].step.is_some();
        let image_name = if has_step { format!("{}-build", names[i]) } else { names[i].clone() };
        let step_name = format!("{}-run", names[i]);
        // The output of its step: what later stages copy from it, else the working directory.
        let output = if has_step {
            let outs = &stages[i].copied_out;
            let parents: Vec<String> =
                outs.iter().map(|p| Path::new(p).parent().and_then(|p| p.to_str()).unwrap_or("/").to_string()).collect();
            let mut common = parents.first().cloned().unwrap_or_else(|| stages[i].workdir.clone());
            for p in &parents {
                while !(p == &common || p.starts_with(&format!("{}/", common.trim_end_matches('/')))) {
                    common = Path::new(&common).parent().and_then(|p| p.to_str()).unwrap_or("/").to_string();
                }
            }
            if common == "/" {
                common = outs.first().cloned().unwrap_or_else(|| "/out".into());
            }
            if common == "/" {
                "/out".to_string()
            } else {
                common
            }
        } else {
            String::new()
        };
        let s = &stages[i];
        let _ = writeln!(out, "\nimage {} {{", q(&image_name));
        if i != last || has_step {
            let _ = writeln!(out, "    export #false");
        }
        match &s.base {
            StageBase::Scratch => {}
            StageBase::Registry(r) => {
                let _ = writeln!(out, "    base {}", q(r));
            }
            StageBase::Stage(j) => {
                let _ = writeln!(out, "    base image={}", q(&names[*j]));
            }
            StageBase::Debian { suite } => {
                let _ = writeln!(out, "    variant \"minbase\"");
                repositories(&mut out, suite);
            }
        }
        if s.packages.is_empty() && matches!(s.base, StageBase::Debian { .. }) {
            // The variant is the image; it needs one package named (minbase has base-files).
            let _ = writeln!(out, "    packages \"base-files\"");
        }
        if !s.packages.is_empty() {
            if !matches!(s.base, StageBase::Debian { .. }) {
                match &s.suite {
                    Some(suite) => {
                        repositories(&mut out, suite);
                    }
                    None => notes.push(Note {
                        line: 0,
                        instruction: format!("image {image_name}"),
                        exact: false,
                        message: "its base's Debian suite is not in its tag: add the `repository` lines its packages come from".into(),
                    }),
                }
            }
            let pk: Vec<String> = s.packages.iter().map(|p| q(p)).collect();
            let _ = writeln!(out, "    packages {}", pk.join(" "));
        }
        if !s.groups.is_empty() || !s.users.is_empty() {
            let _ = writeln!(out, "    accounts {{");
            for (g, gid) in &s.groups {
                match gid {
                    Some(n) => {
                        let _ = writeln!(out, "        group {} gid={n}", q(g));
                    }
                    None => {
                        let _ = writeln!(out, "        group {}", q(g));
                    }
                }
            }
            for u in &s.users {
                let _ = writeln!(out, "        {u}");
            }
            let _ = writeln!(out, "    }}");
        }
        if !s.files.is_empty() {
            let _ = writeln!(out, "    files {{");
            for f in &s.files {
                let _ = writeln!(out, "        {}", resolve_from(f, stages, &names));
            }
            let _ = writeln!(out, "    }}");
        }
        if !s.config.is_empty() && !has_step {
            let _ = writeln!(out, "    config {{");
            for c in &s.config {
                let _ = writeln!(out, "        {c}");
            }
            let _ = writeln!(out, "    }}");
        }
        let _ = writeln!(out, "}}");
        if let Some(step) = &s.step {
            let _ = writeln!(out, "\nstep {} {{", q(&step_name));
            let _ = writeln!(out, "    image {}", q(&image_name));
            for input in &step.inputs {
                let _ = writeln!(out, "    {}", resolve_from(input, stages, &names));
            }
            if step.workdir != "/" {
                let _ = writeln!(out, "    workdir {}", q(&step.workdir));
            }
            let env: Vec<String> = step
                .env
                .iter()
                .filter(|(k, _)| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .map(|(k, v)| format!("{k}={}", q(v)))
                .collect();
            if !env.is_empty() {
                let _ = writeln!(out, "    env {}", env.join(" "));
            }
            for r in &step.runs {
                let _ = writeln!(out, "    run {}", r.iter().map(|a| q(a)).collect::<Vec<_>>().join(" "));
            }
            let _ = writeln!(out, "    output {}", q(&output));
            if step.network {
                let _ = writeln!(out, "    network #true");
            }
            let _ = writeln!(out, "}}");
            // The stage as later instructions see it: its image with the step's output.
            let _ = writeln!(out, "\nimage {} {{", q(&names[i]));
            if i != last {
                let _ = writeln!(out, "    export #false");
            }
            let _ = writeln!(out, "    base image={}", q(&image_name));
            let _ = writeln!(out, "    layer \"run\" {{\n        copy from={} {} to={}", q(&step_name), q(&output), q(&output));
            // What was copied after the last RUN comes after its output.
            for f in &s.pending {
                let _ = writeln!(out, "        {}", resolve_from(f, stages, &names));
            }
            let _ = writeln!(out, "    }}");
            if !s.config.is_empty() {
                let _ = writeln!(out, "    config {{");
                for c in &s.config {
                    let _ = writeln!(out, "        {c}");
                }
                let _ = writeln!(out, "    }}");
            }
            let _ = writeln!(out, "}}");
            if i == last {
                let message = format!("the last stage's RUN lines become step `{step_name}`; only `{output}` is kept from what they change: check that it holds what the image needs");
                // Said of the step's first RUN, whose note this completes.
                match notes.iter_mut().find(|n| n.line == step.line) {
                    Some(n) => {
                        n.exact = false;
                        n.message = format!("{}; {message}", n.message);
                    }
                    None => notes.push(Note { line: step.line, instruction: "RUN".into(), exact: false, message }),
                }
            }
        }
    }
    out
}

/// The `repository` lines of a Debian suite and its security suite.
fn repositories(out: &mut String, suite: &str) {
    for (name, suite) in [("debian", suite.to_string()), ("debian-security", format!("{suite}-security"))] {
        let _ = writeln!(
            out,
            "    repository {} suite={} components=\"main\" keyring=\"/usr/share/keyrings/debian-archive-keyring.gpg\"",
            q(name),
            q(&suite)
        );
    }
}

/// `copy from="@stage:ALIAS"` → the stage's step or image.
fn resolve_from(line: &str, stages: &[Stage], names: &[String]) -> String {
    let Some(start) = line.find("from=\"@stage:") else { return line.to_string() };
    let rest = &line[start + 13..];
    let Some(end) = rest.find('"') else { return line.to_string() };
    let alias = &rest[..end];
    let Some(i) = stages.iter().position(|s| s.alias.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(alias))) else {
        return line.to_string();
    };
    let target = if stages[i].step.is_some() { format!("{}-run", names[i]) } else { names[i].clone() };
    format!("{}from={}{}", &line[..start], q(&target), &rest[end + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imported(dockerfile: &str) -> Imported {
        let opts = ImportOptions { name: "app".into(), registry_base: false, context: std::env::temp_dir() };
        let i = import(dockerfile, &opts).expect("imports");
        crate::spec::parse_str(Path::new("compose.kdl"), &i.spec).unwrap_or_else(|e| panic!("{e:?}\n{}", i.spec));
        i
    }

    #[test]
    fn continuations_args_shell_forms_and_stages() {
        let i = imported(
            "# escape=\\\nARG SUITE=bookworm\nFROM debian:${SUITE}-slim AS build\nARG V=1.2\nENV PATH=/opt/bin:$PATH \\\n    VERSION=${V}\n\
             RUN apt-get update && apt-get install -y --no-install-recommends \\\n      make gcc \\\n && rm -rf /var/lib/apt/lists/*\n\
             COPY src/ /src/\nWORKDIR /src\nRUN make -j2 PREFIX=/out install\n\
             FROM scratch\nCOPY --from=build /out/bin/tool /usr/bin/tool\nHEALTHCHECK --interval=5s CMD [\"/usr/bin/tool\", \"check\"]\n\
             CMD tool --serve\nONBUILD RUN x\n",
        );
        let s = &i.spec;
        assert!(s.contains("suite=\"bookworm\""), "{s}");
        assert!(s.contains("packages \"make\" \"gcc\""), "{s}");
        assert!(s.contains("env PATH=\"/opt/bin:$PATH\" VERSION=\"1.2\""), "{s}");
        assert!(s.contains("run \"/bin/sh\" \"-c\" \"make -j2 PREFIX=/out install\""), "{s}");
        assert!(s.contains("output \"/out/bin\""), "{s}");
        assert!(s.contains("copy from=\"build-run\" \"/out/bin/tool\" to=\"/usr/bin/tool\""), "{s}");
        assert!(s.contains("healthcheck \"/usr/bin/tool\" \"check\" interval=\"5s\""), "{s}");
        assert!(s.contains("cmd \"tool --serve\" shell=#true"), "{s}");
        let review: Vec<usize> = i.notes.iter().filter(|n| !n.exact).map(|n| n.line).collect();
        // The step (line 12) and ONBUILD (line 17) need review; the rest is exact.
        assert_eq!(review, [12, 17], "{:#?}", i.notes);
    }
}
