//! Executing a plan: store lookups, then the missing derivations, in parallel.
//!
//! Owns the types a build reports and returns ([`Reporter`], [`Outcome`], [`BuildError`],
//! [`Executed`]) and [`execute`]; the parts, one job a file: `schedule` (what a build needs, the
//! lookup stack store ▸ shared cache ▸ run, the parallel runs under per-derivation build locks),
//! `run` (what running each kind of derivation means), `layers` and `assemble` (writing layers
//! and images into the store), `packages` (package layers), `job`, `step` and `scripts` (jobs
//! run through the [`executor`] seam, runc behind it: [`sandbox`], `seccomp`; `emulation` for
//! steps of another architecture) and [`trees`]
//! (unpacked images, captured outputs, the one walker). Whether a record fits its derivation is
//! [`crate::record`]'s to say, for every lookup; a remote record's trees are checked by the rules
//! of [`crate::tarcheck`] as they stream in.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use petgraph::graph::NodeIndex;

use crate::clients::Clients;
use crate::layer::{self};
use crate::plan::{Derivation, Plan};
use crate::store::{Record, Store, StoreError};

mod assemble;
mod caches;
mod diagnose;
mod emulation;
pub mod executor;
mod job;
mod layers;
pub mod packages;
mod run;
pub mod sandbox;
mod schedule;
mod scripts;
mod seccomp;
mod step;
pub mod trees;

pub use job::shell_words;

/// How a derivation's output was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Found in the local store.
    Local,
    /// Found in a shared cache.
    Remote,
    /// Executed here.
    Built,
}

/// Progress events. Library code never prints; the CLI implements this.
pub trait Reporter: Sync {
    /// The plan is known: `total` derivations, `to_build` of them not in the store.
    fn planned(&self, _total: usize, _to_build: usize) {}
    fn started(&self, _drv: &Derivation) {}
    /// `bytes` is the size of the main output.
    fn finished(&self, _drv: &Derivation, _outcome: Outcome, _bytes: u64) {}
    /// Something the user should know that did not stop the build.
    fn warning(&self, _message: &str) {}
    /// A line a build step printed (stdout or stderr).
    fn step_line(&self, _drv: &Derivation, _line: &str) {}
    /// Nothing more can start: `waiting` derivations wait for what is `running` (said when what
    /// runs changes and something waits).
    fn waiting(&self, _running: &[&Derivation], _waiting: usize) {}
}

/// A reporter that reports nothing.
pub struct Silent;
impl Reporter for Silent {}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to build {name}")]
    Layer {
        name: String,
        #[source]
        source: layer::LayerError,
    },
    #[error("failed to read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{path}` changed during the build; build again")]
    Changed { path: PathBuf },
    #[error("failed to write {name} into the store")]
    Write {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("derivation {0} has no output `{1}` (damaged store record?)")]
    MissingOutput(String, &'static str),
    #[error(transparent)]
    Package(#[from] packages::PackageError),
    #[error(transparent)]
    Base(#[from] crate::base::BaseError),
    #[error("{message}")]
    Tree {
        message: String,
        #[source]
        source: io::Error,
    },
    /// A tree (an image's, a step's output, what maintainer scripts left) that breaks a rule;
    /// the message says which, and there is no other cause to show.
    #[error("{0}")]
    BadTree(String),
    #[error("{message}")]
    CopyFrom { message: String },
    #[error("step `{step}` cannot run: {}", crate::util::chain_message(source))]
    Sandbox {
        step: String,
        #[source]
        source: sandbox::SandboxError,
    },
    #[error(
        "step `{step}` failed: `{command}` exited with code {code}{}\n--- last lines of its log ---\n{tail}",
        log.as_ref().map(|p| format!(" (whole log: {})", p.display())).unwrap_or_default()
    )]
    StepFailed {
        step: String,
        command: String,
        code: i32,
        tail: String,
        log: Option<PathBuf>,
        /// It had no network.
        hermetic: bool,
        diagnosis: Box<Diagnosis>,
    },
    #[error(
        "fixed-output step `{step}` yielded {got}, but the lockfile pins {pinned}: its result changed (a moved download, \
         an unpinned version); if the new result is right, pin it again with `compose lock --update {step}`"
    )]
    FixedOutputChanged { step: String, pinned: String, got: String },
    /// Stopped at a limit: `message` says which, with the command and the end of its log.
    #[error("step `{step}` was stopped: {message}")]
    StepStopped { step: String, message: String },
    #[error("step `{step}` needs the secret `{id}`, and none was given")]
    MissingSecret { step: String, id: String },
    #[error("the build was interrupted")]
    Interrupted,
}

/// What a failed step's log says of why it failed.
#[derive(Debug, Default)]
pub struct Diagnosis {
    /// It tried the network (a name it could not resolve, a network it could not reach).
    pub network: bool,
    /// Why the command could not start, and what to do (`diagnose::start_failure`).
    pub cannot_start: Option<String>,
}

impl BuildError {
    /// A hint for the user, where one helps.
    pub fn help(&self) -> Option<String> {
        match self {
            BuildError::Sandbox { source: sandbox::SandboxError::NotRoot(_), .. } => Some(
                "a user other than root builds steps in a user namespace of its own, over its subordinate ids: give it a \
                 range in /etc/subuid and /etc/subgid (`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 \
                 USER`; `useradd` gives new users one) and install Debian's uidmap (newuidmap); or run compose as root"
                    .into(),
            ),
            BuildError::Sandbox { source: sandbox::SandboxError::NoRunc, .. } => {
                Some("install runc (Debian and Ubuntu: `apt-get install runc`)".into())
            }
            BuildError::MissingSecret { id, .. } => {
                Some(format!("give it with `--secret id={id},src=FILE` or `--secret id={id},env=VARIABLE` (or mark it `required=#false`)"))
            }
            BuildError::StepFailed { hermetic, diagnosis, .. } => {
                let Diagnosis { network, cannot_start } = &**diagnosis;
                let mut help = Vec::new();
                if let Some(why) = cannot_start {
                    help.push(why.clone());
                } else if *hermetic && *network {
                    help.push(
                        "the step is hermetic: it has no network, and its log says it tried to reach one. If it downloads \
                         something, make it a fixed-output step with `network #true` (its result is then pinned in the lockfile)"
                            .to_string(),
                    );
                }
                if sandbox::rootless() {
                    help.push(
                        "it ran rootless, in this user's namespace: only uids and gids 0-65535 exist there (as many as the \
                         user's subordinate ids), and device nodes cannot be made; as root they can"
                            .to_string(),
                    );
                }
                (!help.is_empty()).then(|| help.join("; "))
            }
            _ => None,
        }
    }
}

/// How to execute a plan.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Build these instead of the plan's exported images.
    pub roots: Option<Vec<NodeIndex>>,
    /// `--check`: run cached steps again and compare their outputs.
    pub check: bool,
    /// Run these again and compare too (fixed-output steps being pinned: a pin must reproduce).
    pub check_also: Vec<NodeIndex>,
    /// Values of the steps' secrets (`--secret`).
    pub secrets: Secrets,
    /// Whose steps' caches these are: the spec file's canonical path. Another spec's steps never
    /// see them, whatever their names.
    pub cache_scope: String,
}

/// Secret values by id, given to the build (`--secret`), never part of a key, an output, a log or
/// a record. Shown as their ids only.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, Vec<u8>>);

impl Secrets {
    pub fn insert(&mut self, id: String, value: Vec<u8>) {
        self.0.insert(id, value);
    }

    pub fn get(&self, id: &str) -> Option<&[u8]> {
        self.0.get(id).map(Vec::as_slice)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A step whose output differs when run again (`--check`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Mismatch {
    pub step: String,
    pub path: String,
    pub before: String,
    pub after: String,
}

/// Counts for `--json` and the summary line.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Counts {
    pub total: usize,
    pub built: usize,
    pub local: usize,
    pub remote: usize,
    /// Not needed: everything that depends on them came from a cache.
    pub skipped: usize,
}

/// The result of executing a plan: a record for every node that was needed.
pub struct Executed {
    pub records: HashMap<NodeIndex, Record>,
    pub counts: Counts,
    /// With `--check`: steps whose output differed.
    pub mismatches: Vec<Mismatch>,
    /// With `--check`: what was compared, and what was not run again.
    pub check: Option<CheckReport>,
}

/// What `--check` did: the steps and maintainer-scripts layers it ran again and compared (by
/// name), and what it did not run again: downloads (checked against their pinned digests
/// instead) and what compose makes itself from checked inputs (layers, images, indexes).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CheckReport {
    pub compared: Vec<String>,
    pub downloads: usize,
    pub made_by_compose: usize,
}

/// Can this machine run every step of `plan`? A step on another architecture needs a
/// `binfmt_misc` handler (`emulation`): registered here when missing and possible (what was
/// registered is said to `reporter`), else the step is refused before anything is built.
pub fn check_emulation(plan: &Plan, reporter: &dyn Reporter) -> Result<(), BuildError> {
    for n in plan.graph.node_indices() {
        if let crate::plan::DrvKind::Step(s) = &plan.graph[n].kind {
            if let Some(said) = emulation::check(&s.step, &run::step_platform(plan, s), true)? {
                reporter.warning(&said);
            }
        }
    }
    Ok(())
}

/// Run `plan` against `store`, with `remote` as the second level of the lookup stack.
pub fn execute(
    plan: &Plan,
    store: &Store,
    remote: Option<&crate::remote::RemoteCache>,
    clients: &Clients,
    reporter: &dyn Reporter,
) -> Result<Executed, BuildError> {
    execute_then(plan, store, remote, clients, reporter, &ExecOptions::default(), Ok)
}

/// [`execute`], then `then` (exporting, pushing) while results are still being written back to
/// the remote cache in the background; returns once both are done.
pub fn execute_then<T, E: From<BuildError>>(
    plan: &Plan,
    store: &Store,
    remote: Option<&crate::remote::RemoteCache>,
    clients: &Clients,
    reporter: &dyn Reporter,
    options: &ExecOptions,
    then: impl FnOnce(Executed) -> Result<T, E>,
) -> Result<T, E> {
    // (record, found in the store rather than built here)
    let (tx, rx) = std::sync::mpsc::channel::<(Record, bool)>();
    let rx = Mutex::new(rx);
    let result = std::thread::scope(|scope| {
        // Results are written back to the remote cache in the background, a few at a time
        // (each waits on the network); the build goes on meanwhile.
        let rx = &rx;
        let uploaders: Vec<_> = remote
            .filter(|r| r.mode() == crate::remote::Mode::ReadWrite)
            .map(|r| {
                (0..UPLOADERS)
                    .map(|_| {
                        scope.spawn(move || loop {
                            let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            match next {
                                Ok((rec, check)) => r.upload(store, &rec, check),
                                Err(_) => break,
                            }
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let result = execute_inner(plan, store, remote, clients, reporter, options, &tx);
        drop(tx);
        let result = result.map_err(E::from).and_then(then);
        // Every job's root unmounted and its directory gone before the build returns.
        job::settle();
        for u in uploaders {
            let _ = u.join();
        }
        result
    });
    for w in remote.map(|r| r.warnings()).unwrap_or_default() {
        reporter.warning(&w);
    }
    result
}

/// Background threads writing results back to a read-write remote cache.
const UPLOADERS: usize = 4;

pub use crate::record::shape::TEXT_MEDIA_TYPE;

use assemble::build_image;
use caches::CacheUse;
pub(crate) use layers::build_layer;
pub(crate) use run::output;
use run::run;
use schedule::execute_inner;
pub use schedule::{predict, Prediction};
