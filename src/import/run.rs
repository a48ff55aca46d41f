//! `RUN`: a shell line split into parts, each classified (see [`super::classify`]); what is
//! left becomes the stage's build step, with the step's inputs, environment and network.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::classify::classify;
use super::parse::{exec_form, split_commands, strip_flags, Instr};
use super::stage::{Stage, StepDraft};
use super::values::expand_args_only;
use super::writer::Node;

/// `RUN`: (exact, message).
pub(super) fn run(ins: &Instr, stage: &mut Stage) -> (bool, String) {
    let args = ins.args.as_str();
    let mounts: Vec<&str> = args.split_whitespace().take_while(|w| w.starts_with("--")).collect();
    let body = strip_flags(args).to_string();
    if !ins.heredocs.is_empty() {
        // A line that is only a here-document is a script (BuildKit's rule); otherwise the
        // shell reads the here-documents after the line.
        let script = match ins.heredocs.as_slice() {
            [(_, content)] if body.starts_with("<<") && !body.contains(char::is_whitespace) => content.clone(),
            docs => {
                let mut s = body.clone();
                for (word, content) in docs {
                    let _ = write!(s, "\n{content}{word}");
                }
                s
            }
        };
        stage_step(stage, ins, vec![script]);
        return (false, "a here-document: kept in a build step as written; review it".into());
    }
    if let Some(argv) = exec_form(&body) {
        if argv.is_empty() {
            return (false, "not translated: `RUN []` runs nothing".into());
        }
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
        match classify(&part, stage, ins.line) {
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
        let _ = write!(message, "; `{}` is not translated", mounts.join(" "));
    }
    if rest.is_empty() {
        return (mounts.is_empty(), if message.is_empty() { "nothing to do here".into() } else { message });
    }
    stage_step(stage, ins, vec![rest.join(" && ")]);
    let m = step_message(stage);
    (false, if message.is_empty() { m } else { format!("{message}; the rest: {m}") })
}

/// ARG values substituted in a RUN line (ENVs are the shell's, at run time).
pub(super) fn subst_args_in_run(body: &str, vars: &[(String, String)], arg_names: &BTreeSet<String>) -> String {
    let args: Vec<(String, String)> = vars.iter().filter(|(n, _)| arg_names.contains(n)).cloned().collect();
    expand_args_only(body, &args)
}

pub(super) fn step_message(stage: &Stage) -> String {
    let net = stage.step.as_ref().is_some_and(|s| s.network);
    format!(
        "a build step{}; its output is what later stages copy from it (in the last stage: the working directory, review)",
        if net { " with network (fixed-output: its output is pinned on first build)" } else { "" }
    )
}

pub(super) fn stage_step(stage: &mut Stage, ins: &Instr, lines: Vec<String>) {
    for l in lines {
        let mut argv = stage.shell.clone();
        argv.push(l);
        stage_step_argv(stage, ins, argv);
    }
}

pub(super) fn stage_step_argv(stage: &mut Stage, ins: &Instr, argv: Vec<String>) {
    const NETWORK: &[&str] = &[
        "pip", "npm", "yarn", "pnpm", "cargo", "go ", "curl", "wget", "git ", "gem ", "bundle", "composer", "mvn", "gradle", "apk", "apt",
    ];
    let joined = argv.join(" ");
    let network = NETWORK.iter().any(|n| joined.contains(n));
    let workdir = stage.workdir.clone();
    // A RUN sees the ENVs so far (not the ARGs: those were written into its line).
    let env: Vec<(String, String)> = stage.vars.iter().filter(|(k, _)| !stage.arg_names.contains(k)).cloned().collect();
    let raw: Vec<Node> = stage.pending.drain(..).collect();
    let pending: Vec<Node> = raw.into_iter().map(|n| numeric_owner(n, stage)).collect();
    let step = stage.step.get_or_insert_with(|| StepDraft { line: ins.line, workdir, env, ..StepDraft::default() });
    step.network |= network;
    step.inputs.extend(pending);
    step.runs.push(argv);
}

/// A step input's `owner=` as numeric ids (steps take no names): from the stage's accounts, or
/// dropped when they are not known here.
pub(super) fn numeric_owner(mut n: Node, stage: &Stage) -> Node {
    let Some(owner) = n.str_prop("owner").map(str::to_string) else { return n };
    let (u, g) = owner.split_once(':').unwrap_or((&owner, &owner));
    let uid =
        |name: &str| -> Option<u32> { name.parse().ok().or_else(|| stage.users.iter().find(|(n, _, _)| n == name).map(|(_, u, _)| *u)) };
    let gid = |name: &str| -> Option<u32> { name.parse().ok().or_else(|| stage.groups.iter().find(|(n, _)| n == name).map(|(_, g)| *g)) };
    match (uid(u), gid(g).or_else(|| uid(g))) {
        (Some(u), Some(g)) => n.set("owner", format!("{u}:{g}")),
        _ => n.unset("owner"),
    }
    n
}
