//! `compose import`: a Dockerfile to a spec.
//!
//! Owns reading a Dockerfile (parser directives, line continuations, comments, here-documents,
//! exec and shell forms, `ARG`/`ENV` substitution) and writing the spec that means the same,
//! instruction by instruction, with a note for each: translated exactly, or what to review and
//! why. It never changes meaning silently: what it cannot translate faithfully is listed with its
//! line.
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
//!
//! The Dockerfile is untrusted input. A `COPY` source is a path in the build context whatever it
//! says, as in Docker: a leading `/` and `..` never leave it, so the spec only ever copies
//! relative paths from its own directory. `FROM` and `--from` name registry images only. The
//! spec is written through `kdl`'s document model: every name and value from the Dockerfile is
//! one KDL string (control characters escaped), never spliced into the text. A value the spec
//! would refuse is not written but noted, and what is written is parsed before it is returned:
//! whatever still fails is dropped and noted, so import always gives a spec compose reads.
//!
//! Its parts: `parse` reads the Dockerfile into instructions; `stage` holds what is known of
//! each stage and reads `FROM`; `config` translates the other instructions, `copy` `COPY` and
//! `ADD`, `run` `RUN` (whose parts `classify` reads); `values` makes names, paths and references
//! fit for the spec; `emit` turns the stages into the spec's nodes and `writer` writes them.

mod classify;
mod config;
mod copy;
mod emit;
mod parse;
mod run;
mod stage;
#[cfg(test)]
mod tests;
mod values;
mod writer;

use std::fmt::Write as _;

use self::config::in_stage;
use self::emit::emit;
use self::parse::instructions;
use self::stage::{before_from, from, from_words, Stage};
use self::writer::{kdl_escaped, settle};

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The exported image's name.
    pub name: String,
    /// Keep `FROM debian:…` as a registry base rather than composing it from the archive.
    pub registry_base: bool,
    /// The build context (the Dockerfile's directory): `COPY` sources are resolved in it, and
    /// its globs expanded against it.
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

/// What import refuses outright; anything else it cannot translate is a note.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the Dockerfile has no FROM")]
    NoFrom,
}

/// Marks the note of `line` for review, adding `message` (a new note when there is none).
fn review(notes: &mut Vec<Note>, line: usize, instruction: &str, message: String) {
    match notes.iter_mut().find(|n| line > 0 && n.line == line) {
        Some(n) => {
            n.exact = false;
            n.message = if n.message.is_empty() { message } else { format!("{}; {message}", n.message) };
        }
        None => notes.push(Note { line, instruction: instruction.to_string(), exact: false, message }),
    }
}

/// `s` safe to print: control and invisible characters as `\u{…}` (see [`kdl_escaped`]).
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if kdl_escaped(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Translate a Dockerfile.
pub fn import(text: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let (instrs, mut notes) = instructions(text);
    let mut stages: Vec<Stage> = Vec::new();
    let mut global_args: Vec<(String, String)> = Vec::new();
    // Registry images `COPY --from` names that are no stage.
    let mut external: Vec<String> = Vec::new();
    let aliases: Vec<String> = instrs.iter().filter(|i| i.keyword == "FROM").filter_map(|i| from_words(&i.args).1).collect();
    for ins in &instrs {
        let (mut exact, mut message) = if ins.keyword == "FROM" {
            from(ins, &mut stages, &global_args, opts)
        } else if let Some((stage, earlier)) = stages.split_last_mut() {
            in_stage(ins, stage, earlier, &global_args, &aliases, &mut external, opts)
        } else {
            before_from(ins, &mut global_args)
        };
        if let Some(p) = &ins.heredoc_problem {
            exact = false;
            message = format!("{message}; {p}");
        }
        notes.push(Note { line: ins.line, instruction: ins.text.chars().take(80).collect(), exact, message });
    }
    if stages.is_empty() {
        return Err(ImportError::NoFrom);
    }
    let (nodes, name) = emit(&stages, &external, opts, &mut notes);
    let spec = settle(nodes, &name, &mut notes);
    notes.sort_by_key(|n| n.line);
    for n in &mut notes {
        n.instruction = printable(&n.instruction);
        n.message = printable(&n.message);
    }
    Ok(Imported { spec, notes })
}
