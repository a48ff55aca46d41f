//! The instructions of a stage: one function per instruction, most of them setting the image's
//! `config` (`ENV`, `LABEL`, `WORKDIR`, `USER`, `EXPOSE`, `VOLUME`, `STOPSIGNAL`, `CMD`,
//! `ENTRYPOINT`, `HEALTHCHECK`, `SHELL`), and [`in_stage`], which dispatches to them and to
//! `COPY`/`ADD` and `RUN`.

use kdl::KdlValue;

use crate::spec::values as check;

use super::copy::copy;
use super::parse::{exec_form, key_values, Instr};
use super::run::run;
use super::stage::{Stage, SIGNALS};
use super::values::{absolute, env_name_problem, expand_args_only, image_path_ok, subst};
use super::writer::{int, Node};
use super::ImportOptions;

/// An instruction of a stage: (exact, message).
pub(super) fn in_stage(
    ins: &Instr,
    stage: &mut Stage,
    earlier: &mut [Stage],
    global_args: &[(String, String)],
    aliases: &[String],
    external: &mut Vec<String>,
    opts: &ImportOptions,
) -> (bool, String) {
    let args = ins.args.as_str();
    let line = ins.line;
    match ins.keyword.as_str() {
        "ARG" => arg(ins, stage, global_args),
        "ENV" => env(ins, stage),
        "LABEL" | "MAINTAINER" => label(ins, stage),
        "WORKDIR" => workdir(ins, stage),
        "USER" => user(ins, stage),
        "EXPOSE" => expose(ins, stage),
        "VOLUME" => volume(ins, stage),
        "STOPSIGNAL" => stop_signal(ins, stage),
        "CMD" | "ENTRYPOINT" => command(ins, stage),
        "HEALTHCHECK" => match healthcheck(args, line) {
            Ok(node) => {
                stage.set_config(node);
                (true, "config healthcheck".into())
            }
            Err(why) => (false, format!("not translated: {why}")),
        },
        "SHELL" => match exec_form(args) {
            Some(argv) if !argv.is_empty() => {
                stage.shell = argv;
                (true, "the shell for RUN lines and shell-form commands that follow".into())
            }
            _ => (false, "not translated: SHELL takes the exec form".into()),
        },
        "ONBUILD" => (false, "not translated: compose runs no triggers; an image built on this one states those files itself".into()),
        "COPY" | "ADD" => match copy(ins, stage, earlier, aliases, external, opts) {
            Ok(m) => (true, m),
            Err(m) => (false, m),
        },
        "RUN" => run(ins, stage),
        other => (false, format!("not translated: `{other}` is not an instruction compose knows")),
    }
}

/// `ARG NAME[=DEFAULT]`: a build argument, its value written where it is used; (exact, message).
fn arg(ins: &Instr, stage: &mut Stage, global_args: &[(String, String)]) -> (bool, String) {
    let args = ins.args.as_str();
    let (k, v) = match args.split_once('=') {
        Some((k, v)) => (k.trim().to_string(), subst(v.trim().trim_matches('"'), &stage.vars)),
        None => {
            let k = args.trim().to_string();
            let v = global_args.iter().find(|(g, _)| *g == k).map(|(_, v)| v.clone()).unwrap_or_default();
            (k, v)
        }
    };
    if k.is_empty() {
        return (false, "not translated: the ARG names no variable".into());
    }
    let message = format!("build argument `{k}`: its value `{v}` is written where it is used (compose has no build arguments yet)");
    stage.arg_names.insert(k.clone());
    stage.vars.push((k, v));
    (true, message)
}

/// `ENV`: `config env`, ARGs in the values resolved, ENVs left for compose to expand: (exact,
/// message).
fn env(ins: &Instr, stage: &mut Stage) -> (bool, String) {
    let args = ins.args.as_str();
    let line = ins.line;
    let Some(kvs) = key_values(args) else { return (false, "not translated: cannot read its KEY=VALUE pairs".into()) };
    let mut node = Node::new("env", line);
    let mut problems = Vec::new();
    for (k, v) in kvs {
        if let Some(p) = env_name_problem(&k) {
            problems.push(p);
            continue;
        }
        // ARGs are resolved here; references to ENVs stay, for compose to expand
        // against the environment so far, as Docker does.
        let args_now: Vec<(String, String)> = stage.vars.iter().filter(|(n, _)| stage.arg_names.contains(n)).cloned().collect();
        let v = expand_args_only(&v, &args_now);
        let value = subst(&v, &stage.vars);
        if v.contains('\0') || value.contains('\0') {
            problems.push(format!("the value of `{k}` holds a NUL character"));
            continue;
        }
        node = node.prop(&k, v.as_str());
        stage.arg_names.remove(&k);
        stage.vars.retain(|(n, _)| *n != k);
        stage.vars.push((k.clone(), value.clone()));
        if let Some(step) = &mut stage.step {
            step.env.retain(|(n, _)| *n != k);
            step.env.push((k, value));
        }
    }
    if !node.kdl.entries().is_empty() {
        stage.config.push(node);
    }
    match problems.is_empty() {
        true => (true, "config env".into()),
        false => (false, format!("config env; not translated: {}", problems.join("; "))),
    }
}

/// `LABEL` and `MAINTAINER`: `config label`: (exact, message).
fn label(ins: &Instr, stage: &mut Stage) -> (bool, String) {
    let args = ins.args.as_str();
    let line = ins.line;
    let kvs = if ins.keyword == "MAINTAINER" { Some(vec![("maintainer".to_string(), args.to_string())]) } else { key_values(args) };
    let Some(kvs) = kvs else { return (false, "not translated: cannot read its KEY=VALUE pairs".into()) };
    let mut problems = Vec::new();
    for (k, v) in kvs {
        let v = subst(&v, &stage.vars);
        if k.is_empty() {
            problems.push("a label without a key".to_string());
        } else if k.contains('\0') || v.contains('\0') {
            problems.push(format!("the label `{k}` holds a NUL character"));
        } else {
            stage.config.push(Node::new("label", line).prop(&k, v));
        }
    }
    match problems.is_empty() {
        true => (true, "config label".into()),
        false => (false, format!("config label; not translated: {}", problems.join("; "))),
    }
}

/// `WORKDIR`: `config workdir`, and the directory later relative paths are in: (exact, message).
fn workdir(ins: &Instr, stage: &mut Stage) -> (bool, String) {
    let args = ins.args.as_str();
    let line = ins.line;
    let w = absolute(&subst(args.trim_matches('"'), &stage.vars), &stage.workdir);
    let w = w.trim_end_matches('/').to_string();
    let w = if w.is_empty() { "/".to_string() } else { w };
    if !image_path_ok(&w) {
        return (false, format!("not translated: `{w}` is no path in the image; the working directory stays `{}`", stage.workdir));
    }
    stage.workdir = w.clone();
    stage.set_config(Node::new("workdir", line).arg(w));
    (true, "config workdir (compose makes the directory when nothing else does)".into())
}

/// `USER`: `config user`: (exact, message).
fn user(ins: &Instr, stage: &mut Stage) -> (bool, String) {
    let args = ins.args.as_str();
    let line = ins.line;
    let u = subst(args.trim(), &stage.vars);
    match check::config_user(&u) {
        Ok(()) => {
            stage.set_config(Node::new("user", line).arg(u));
            (true, "config user".into())
        }
        Err(b) => (false, format!("not translated: {}; the image runs as the user before it (root unless set)", b.message)),
    }
}

/// `EXPOSE`: `config expose`: (exact, message).
fn expose(ins: &Instr, stage: &mut Stage) -> (bool, String) {
    let args = ins.args.as_str();
    let line = ins.line;
    let mut node = Node::new("expose", line);
    let mut problems = Vec::new();
    for p in args.split_whitespace() {
        let p = subst(p, &stage.vars);
        let p = p.strip_suffix("/tcp").unwrap_or(&p);
        match (check::expose_string(p), p.parse::<u16>()) {
            (Ok(_), Ok(n)) => node = node.arg(int(n)),
            (Ok(_), Err(_)) => node = node.arg(p),
            (Err(b), _) => problems.push(b.message),
        }
    }
    list_config(stage, node, problems, "EXPOSE names no port")
}

/// `VOLUME`: `config volume`: (exact, message).
fn volume(ins: &Instr, stage: &mut Stage) -> (bool, String) {
    let args = ins.args.as_str();
    let line = ins.line;
    let vols = exec_form(args).unwrap_or_else(|| args.split_whitespace().map(str::to_string).collect());
    let mut node = Node::new("volume", line);
    let mut problems = Vec::new();
    for v in vols {
        let v = subst(&v, &stage.vars);
        let abs = absolute(&v, "/");
        if v.starts_with('/') && image_path_ok(&abs) {
            node = node.arg(abs);
        } else {
            problems.push(format!("`{v}` is not an absolute path"));
        }
    }
    list_config(stage, node, problems, "VOLUME names no path")
}

/// A config node listing what an instruction names (`expose`, `volume`), set when it lists
/// anything; `none`: the problem when it names nothing. (exact, message).
fn list_config(stage: &mut Stage, node: Node, mut problems: Vec<String>, none: &str) -> (bool, String) {
    let listed = !node.kdl.entries().is_empty();
    if !listed && problems.is_empty() {
        problems.push(none.into());
    }
    let message = format!("config {}", node.name());
    if listed {
        stage.config.push(node);
    }
    match problems.is_empty() {
        true => (true, message),
        false => (false, format!("not translated: {}", problems.join("; "))),
    }
}

/// `STOPSIGNAL`: `config stop-signal`, a signal Docker knows: (exact, message).
fn stop_signal(ins: &Instr, stage: &mut Stage) -> (bool, String) {
    let args = ins.args.as_str();
    let line = ins.line;
    let s = subst(args.trim(), &stage.vars);
    // Docker reads a name it knows in any case, with or without `SIG`, or a number.
    let signal = match s.chars().all(|c| c.is_ascii_digit()) {
        true => s.clone(),
        false => {
            let up = s.to_ascii_uppercase();
            format!("SIG{}", up.strip_prefix("SIG").unwrap_or(&up))
        }
    };
    let known = signal.strip_prefix("SIG").is_none_or(|n| {
        SIGNALS.contains(&n)
            || ["RTMIN+", "RTMAX-"].iter().any(|p| n.strip_prefix(p).is_some_and(|k| k.parse::<u8>().is_ok_and(|k| (1..=15).contains(&k))))
    });
    match check::stop_signal(&signal) {
        Ok(()) if !known => (false, format!("not translated: `{s}` is no signal Docker knows")),
        Ok(()) => {
            stage.set_config(Node::new("stop-signal", line).arg(signal));
            (true, "config stop-signal".into())
        }
        Err(b) => (false, format!("not translated: {}", b.message)),
    }
}

/// `CMD` and `ENTRYPOINT`: exec form as is, shell form through the stage's shell: (exact, message).
fn command(ins: &Instr, stage: &mut Stage) -> (bool, String) {
    let args = ins.args.as_str();
    let line = ins.line;
    let key = ins.keyword.to_ascii_lowercase();
    let (node, message) = match exec_form(args) {
        Some(argv) if key == "entrypoint" && argv.is_empty() => {
            return (
                false,
                "not translated: `ENTRYPOINT []` clears the base's entrypoint, which compose cannot say: set `entrypoint` to what runs"
                    .into(),
            )
        }
        Some(argv) if key == "entrypoint" && argv.len() == 1 && argv.iter().any(|a| a.trim().contains(char::is_whitespace)) => {
            return (false, "not translated: a program name holding spaces, which compose takes for a mistaken shell form".into())
        }
        Some(argv) => (argv.into_iter().fold(Node::new(&key, line), Node::arg), format!("config {key}")),
        None if stage.shell == ["/bin/sh", "-c"] => {
            (Node::new(&key, line).arg(args).prop("shell", true), format!("config {key}, shell form (shell=#true)"))
        }
        None => {
            let node = stage.shell.iter().fold(Node::new(&key, line), |n, a| n.arg(a.as_str())).arg(args);
            (node, format!("config {key}, through the stage's SHELL"))
        }
    };
    stage.set_config(node);
    (true, message)
}

/// `HEALTHCHECK`'s node, or why it has none.
pub(super) fn healthcheck(args: &str, line: usize) -> Result<Node, String> {
    let mut rest = args.trim_start();
    let mut opts: Vec<(String, KdlValue)> = Vec::new();
    while let Some(f) = rest.strip_prefix("--") {
        let (word, after) = f.split_once(char::is_whitespace).unwrap_or((f, ""));
        let (k, v) = word.split_once('=').ok_or_else(|| format!("`--{word}` has no value"))?;
        match k {
            "interval" | "timeout" | "start-period" | "start-interval" => {
                check::go_duration(v).map_err(|b| b.message)?;
                opts.push((k.to_string(), v.into()));
            }
            "retries" => {
                let n = v.parse::<u32>().ok().filter(|n| *n <= 1_000_000).ok_or_else(|| format!("`--retries={v}` is not a count"))?;
                opts.push((k.to_string(), int(n)));
            }
            _ => return Err(format!("`--{word}` is an option this importer does not know")),
        }
        rest = after.trim_start();
    }
    if rest.eq_ignore_ascii_case("NONE") {
        return Ok(Node::new("healthcheck", line).arg(false));
    }
    let (keyword, cmd) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if !keyword.eq_ignore_ascii_case("CMD") {
        return Err("HEALTHCHECK takes `NONE` or `CMD …`".into());
    }
    let cmd = cmd.trim();
    let mut node = match exec_form(cmd) {
        Some(argv) if argv.is_empty() => return Err("`CMD []` names no command".into()),
        Some(argv) if argv.len() == 1 && argv.iter().any(|a| a.trim().contains(char::is_whitespace)) => {
            return Err("a program name holding spaces, which compose takes for a mistaken shell form".into())
        }
        Some(argv) => argv.into_iter().fold(Node::new("healthcheck", line), Node::arg),
        None if cmd.is_empty() => return Err("`HEALTHCHECK CMD` names no command".into()),
        None => Node::new("healthcheck", line).arg(cmd).prop("shell", true),
    };
    for (k, v) in opts {
        node = node.prop(&k, v);
    }
    Ok(node)
}
