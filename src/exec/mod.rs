//! Executing a plan: store lookups, then the missing derivations, in parallel.
//!
//! Owns the execution order (dependencies first; independent derivations run at the same time
//! on rayon's pool, whose size is `--jobs`), the store ▸ execute lookup stack, the per-derivation
//! build lock (two processes never build the same derivation twice), progress reporting through
//! [`Reporter`], and assembling a finished image (the blobs an export needs) from store records.
//!
//! It also says which records fit their derivation, wherever they come from: [`fits`] (from the
//! record alone, for every lookup: kind, output names and media types, what the derivation pins)
//! and [`record_problem`] (from the blobs, for `compose cache verify`: `diff_id`s, manifests, and
//! trees compose wrote, which must keep [`crate::tarcheck::Rules::Compose`]). A remote record's
//! trees are checked by those rules as they stream in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use petgraph::graph::NodeIndex;
use rayon::prelude::*;

use crate::clients::Clients;
use crate::hash::{CheckedReader, Sha256};
use crate::layer::{self, Compression, LayerWriter};
use crate::oci::{self as image, ConfigFields, Descriptor};
use crate::plan::{Content, Derivation, DrvKind, EntryKind, ImageBase, ImageDrv, Plan, PlannedEntry};
use crate::store::{self, Output, Record, Store, StoreError, RECORD_VERSION};
use crate::tarcheck;

pub mod packages;
pub mod sandbox;
mod seccomp;
mod step;
pub mod trees;

pub use step::shell_words;

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
    StepFailed { step: String, command: String, code: i32, tail: String, log: Option<PathBuf>, hermetic: bool },
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

impl BuildError {
    /// A hint for the user, where one helps.
    pub fn help(&self) -> Option<String> {
        match self {
            BuildError::Sandbox { source: sandbox::SandboxError::NotRoot(_), .. } => Some(
                "run compose as root (as CI jobs do, or with sudo); steps need runc and an overlay mount, and rootless \
                 steps (user namespaces) are not supported yet"
                    .into(),
            ),
            BuildError::Sandbox { source: sandbox::SandboxError::NoRunc, .. } => {
                Some("install runc (Debian and Ubuntu: `apt-get install runc`)".into())
            }
            BuildError::MissingSecret { id, .. } => {
                Some(format!("give it with `--secret id={id},src=FILE` or `--secret id={id},env=VARIABLE` (or mark it `required=#false`)"))
            }
            BuildError::StepFailed { hermetic: true, .. } => Some(
                "the step is hermetic: it has no network. If it downloads something, make it a fixed-output step \
                 with `network #true` (its result is then pinned in the lockfile)"
                    .into(),
            ),
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
    /// Values of the steps' secrets (`--secret`).
    pub secrets: Secrets,
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

/// Remote cache requests (record lookups, blob downloads) in flight at once.
const REMOTE_REQUESTS: usize = 16;

/// Which derivations this build needs, top down: a root is needed; a needed derivation that
/// must run needs all its dependencies; one that comes from the store or the remote cache
/// needs none, except images and indexes, whose dependencies' blobs are exported with them, and
/// whose packages' layers are wanted whatever the cache has (their licences feed the SBOM).
/// With `asked`, derivations the remote has not been asked about yet count as cached (their
/// dependencies wait for the answer). With `check`, steps always run.
fn needed(
    plan: &Plan,
    order: &[NodeIndex],
    roots: &[NodeIndex],
    done: &HashMap<NodeIndex, Record>,
    offered: &HashMap<NodeIndex, Record>,
    asked: Option<&HashSet<NodeIndex>>,
    check: bool,
) -> HashSet<NodeIndex> {
    let mut need: HashSet<NodeIndex> = roots.iter().copied().collect();
    for &n in order.iter().rev() {
        let drv = &plan.graph[n];
        if !need.contains(&n) {
            continue;
        }
        let unknown = asked.is_some_and(|a| !a.contains(&n));
        let cached = (done.contains_key(&n) || offered.contains_key(&n) || unknown) && !(check && matches!(drv.kind, DrvKind::Step(_)));
        if !cached || matches!(drv.kind, DrvKind::Image(_) | DrvKind::Index(_)) {
            need.extend(plan.dependencies(n));
        }
        if let DrvKind::Image(img) = &drv.kind {
            need.extend(img.packages.iter().map(|p| p.layer));
        }
    }
    need
}

/// Media type of build logs and dpkg status texts.
pub const TEXT_MEDIA_TYPE: &str = "text/plain; charset=utf-8";

/// What a record of kind `kind` holds: each output's name (sorted), its media type (`None`:
/// the derivation's to say, as a base layer's; [`OUR_LAYER`]: one of the layer types compose
/// writes, the derivation's compression saying which) and whether it is a layer (with a
/// `diff_id`).
type Shape = &'static [(&'static str, Option<&'static str>, bool)];

/// In a [`Shape`]: a layer compose wrote, gzip or zstd as its derivation says.
const OUR_LAYER: &str = "(a compose layer)";

fn shape(kind: &str) -> Option<Shape> {
    use packages::{DEB_MEDIA_TYPE, FACTS_MEDIA_TYPE, FILES_MEDIA_TYPE, LICENCES_MEDIA_TYPE};
    const GZ: Option<&str> = Some(OUR_LAYER);
    Some(match kind {
        "layer" | "meta" => &[("layer", GZ, true)],
        "fetch" => &[("file", Some(DEB_MEDIA_TYPE), false)],
        "blob" => &[("file", None, true)],
        "deb" => &[
            ("facts", Some(FACTS_MEDIA_TYPE), false),
            ("files", Some(FILES_MEDIA_TYPE), false),
            ("layer", GZ, true),
            ("licences", Some(LICENCES_MEDIA_TYPE), false),
            ("status", Some(TEXT_MEDIA_TYPE), false),
        ],
        "merged" => &[("files", Some(FILES_MEDIA_TYPE), false), ("layer", GZ, true)],
        "image" => &[("config", Some(image::CONFIG_MEDIA_TYPE), false), ("manifest", Some(image::MANIFEST_MEDIA_TYPE), false)],
        "index" => &[("index", Some(image::INDEX_MEDIA_TYPE), false)],
        "step" => &[("log", Some(TEXT_MEDIA_TYPE), false), ("tree", Some(layer::GZIP_MEDIA_TYPE), true)],
        "scripts" => &[("layer", GZ, true), ("log", Some(TEXT_MEDIA_TYPE), false)],
        // What compose read from an external base (passwd, group, dpkg database): written by
        // `base`, not by a derivation of the plan; local only.
        crate::base::BASE_FILES_KIND => &[("files", Some(crate::base::BASE_FILES_MEDIA_TYPE), false)],
        _ => return None,
    })
}

/// Is output `name` of a record of kind `kind` a tree compose wrote (a layer, a step's output):
/// one that must keep [`tarcheck::Rules::Compose`]? A base's layer (kind `blob`) is the base's,
/// pinned by its digest.
fn compose_tree(kind: &str, name: &str) -> bool {
    shape(kind).is_some_and(|s| s.iter().any(|&(n, media_type, is_layer)| n == name && is_layer && media_type.is_some()))
}

/// What is wrong with `rec` for its kind, from the record alone: unknown kind, other outputs,
/// a media type not of that output, a layer without a `diff_id` or another output with one.
fn shape_problem(rec: &Record) -> Option<String> {
    let Some(shape) = shape(&rec.kind) else { return Some(format!("unknown kind `{}`", rec.kind)) };
    if !rec.outputs.keys().map(String::as_str).eq(shape.iter().map(|s| s.0)) {
        let names: Vec<&str> = rec.outputs.keys().map(String::as_str).collect();
        return Some(format!("its outputs are {names:?}, not {:?}", shape.iter().map(|s| s.0).collect::<Vec<_>>()));
    }
    shape.iter().find_map(|&(name, media_type, is_layer)| {
        let o = &rec.outputs[name];
        let ours = [layer::GZIP_MEDIA_TYPE, layer::ZSTD_MEDIA_TYPE];
        let fits = match media_type {
            Some(OUR_LAYER) => ours.contains(&o.media_type.as_str()),
            Some(m) => m == o.media_type,
            None => layer::DiffIdWriter::new(&o.media_type).is_some(),
        };
        if !fits {
            Some(format!("output `{name}` has media type `{}`", o.media_type))
        } else if is_layer != o.diff_id.is_some() {
            Some(format!("output `{name}` {} a diff_id", if is_layer { "lacks" } else { "has" }))
        } else {
            None
        }
    })
}

/// Does `rec` fit derivation `drv`? Its kind and the shape of its outputs, and what the
/// derivation itself fixes: a `.deb`'s sha256 and size, a base layer's digest, size, media type
/// and diff_id, a fixed-output step's pinned tree. A record (remote, or in a store from an
/// older compose) that does not is ignored rather than allowed to fail the build later.
pub fn fits(drv: &Derivation, rec: &Record) -> bool {
    if rec.kind != drv.kind.name() || shape_problem(rec).is_some() {
        return false;
    }
    let out = |name: &str| &rec.outputs[name];
    match &drv.kind {
        DrvKind::Fetch(f) => out("file").digest == f.sha256 && out("file").size == f.size,
        DrvKind::Blob(b) => {
            let o = out("file");
            (o.digest, o.size, o.media_type.as_str(), o.diff_id)
                == (b.layer.digest, b.layer.size, b.layer.media_type.as_str(), Some(b.layer.diff_id))
        }
        DrvKind::Step(s) => s.pin.is_none_or(|pin| out("tree").diff_id == Some(pin)),
        kind => kind.compression().is_none_or(|c| out("layer").media_type == c.media_type()),
    }
}

/// What `compose cache verify` finds wrong with stored record `rec` beyond its blobs' digests:
/// a shape that does not fit its kind, a layer whose uncompressed bytes are not its `diff_id`,
/// a tree compose wrote (a step's output, a layer) that breaks the rules of one
/// ([`tarcheck::Rules::Compose`]: what could damage a later build), an image whose manifest does
/// not parse or does not name its config and stored layers, an index that does not parse or
/// names manifests the store lacks, base files that do not parse.
pub fn record_problem(store: &Store, rec: &Record) -> Option<String> {
    if let Some(p) = shape_problem(rec) {
        return Some(p);
    }
    for (name, o) in &rec.outputs {
        let Some(want) = o.diff_id else { continue };
        let path = store.blob_path(&o.digest);
        let got = if compose_tree(&rec.kind, name) {
            match tarcheck::check_file(&path, &o.media_type, tarcheck::Rules::Compose) {
                Ok(s) => s.diff_id.unwrap_or_default(),
                Err(Ok(why)) => return Some(format!("its `{name}` breaks the rules of a tree: {why}")),
                Err(Err(e)) => return Some(format!("layer `{name}` cannot be read: {e}")),
            }
        } else {
            match layer::DiffIdWriter::of_file(&path, &o.media_type) {
                Ok(got) => got,
                Err(e) => return Some(format!("layer `{name}` does not decompress: {e}")),
            }
        };
        if Sha256(got) != want {
            return Some(format!("layer `{name}` has diff_id {}, not {want}", Sha256(got)));
        }
    }
    let read = |o: &Output| store.read_blob(&o.digest).ok();
    match rec.kind.as_str() {
        "image" => {
            let (config, manifest) = (&rec.outputs["config"], &rec.outputs["manifest"]);
            let Some(doc) = read(manifest).and_then(|b| image::read::<image::ManifestDoc>("the manifest", &b).ok()) else {
                return Some("its manifest does not parse".into());
            };
            if (doc.config.digest, doc.config.size) != (config.digest, config.size) {
                return Some("its manifest names another config".into());
            }
            if read(config).and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).is_none() {
                return Some("its config does not parse".into());
            }
            doc.layers
                .iter()
                .find(|l| store.checked_size(&l.digest) != Some(l.size))
                .map(|l| format!("layer {} of its manifest is not in the store", l.digest))
        }
        "index" => {
            let Some(doc) = read(&rec.outputs["index"]).and_then(|b| image::read::<image::IndexDoc>("the index", &b).ok()) else {
                return Some("its index does not parse".into());
            };
            doc.manifests
                .iter()
                .find(|m| store.checked_size(&m.digest) != Some(m.size))
                .map(|m| format!("manifest {} of its index is not in the store", m.digest))
        }
        crate::base::BASE_FILES_KIND => {
            read(&rec.outputs["files"]).and_then(|b| crate::base::parse_base_files(&b)).is_none().then(|| "its files do not parse".into())
        }
        _ => None,
    }
}

enum Step {
    Done(NodeIndex, Record, Outcome),
    /// The remote record could not be used and dependencies are missing: plan again.
    Replan(NodeIndex),
}

fn execute_inner(
    plan: &Plan,
    store: &Store,
    remote: Option<&crate::remote::RemoteCache>,
    clients: &Clients,
    reporter: &dyn Reporter,
    options: &ExecOptions,
    uploads: &std::sync::mpsc::Sender<(Record, bool)>,
) -> Result<Executed, BuildError> {
    let order = plan.topo_order();
    let mut roots = options.roots.clone().unwrap_or_else(|| plan.roots());
    let check = options.check;
    if check {
        // Every step the roots are made from, whatever is cached downstream of it.
        let mut seen: HashSet<NodeIndex> = HashSet::new();
        let mut todo = roots.clone();
        while let Some(n) = todo.pop() {
            if seen.insert(n) {
                todo.extend(plan.dependencies(n));
            }
        }
        roots.extend(seen.into_iter().filter(|&n| matches!(plan.graph[n].kind, DrvKind::Step(_))));
    }
    let mismatches: Mutex<Vec<Mismatch>> = Mutex::new(Vec::new());
    let mut done: HashMap<NodeIndex, Record> = HashMap::new();
    let mut counts = Counts { total: order.len(), ..Counts::default() };
    for &n in &order {
        if let Some(r) = store.lookup(&plan.graph[n].hash)?.filter(|r| fits(&plan.graph[n], r)) {
            done.insert(n, r);
        }
    }
    // Remote requests wait on the network, not the CPU: more in flight than there are cores.
    let io_pool = remote
        .filter(|_| done.len() < order.len())
        .and_then(|_| rayon::ThreadPoolBuilder::new().num_threads(REMOTE_REQUESTS).thread_name(|i| format!("remote-{i}")).build().ok());
    // What the remote cache offers, asked top-down in rounds: only for derivations this build
    // needs given the answers so far (an image found remotely spares asking about the files and
    // packages it was made from). Records only; blobs are fetched later.
    let mut offered: HashMap<NodeIndex, Record> = HashMap::new();
    if let Some(rc) = remote {
        let mut asked: HashSet<NodeIndex> = HashSet::new();
        loop {
            let ask: Vec<NodeIndex> = needed(plan, &order, &roots, &done, &offered, Some(&asked), check)
                .into_iter()
                .filter(|n| !done.contains_key(n) && !asked.contains(n))
                .collect();
            if ask.is_empty() || !rc.usable() {
                break;
            }
            asked.extend(ask.iter().copied());
            let query = || -> Vec<(NodeIndex, Record)> {
                ask.par_iter().filter_map(|&n| rc.record(&plan.graph[n].hash).filter(|r| fits(&plan.graph[n], r)).map(|r| (n, r))).collect()
            };
            offered.extend(match &io_pool {
                Some(pool) => pool.install(query),
                None => query(),
            });
        }
    }
    if check {
        // Steps run again whatever the caches hold; what they held is compared below.
        offered.retain(|n, _| !matches!(plan.graph[*n].kind, DrvKind::Step(_)));
        done.retain(|n, _| !matches!(plan.graph[*n].kind, DrvKind::Step(_)));
    }
    let need = needed(plan, &order, &roots, &done, &offered, None, check);
    reporter.planned(order.len(), need.iter().filter(|n| !done.contains_key(n) && !offered.contains_key(n)).count());
    for &n in &order {
        if let Some(r) = done.get(&n) {
            counts.local += 1;
            reporter.finished(&plan.graph[n], Outcome::Local, main_size(r));
            // Results built before this store used the cache (or while it was down) are shared
            // too; a marker in the store says which the cache already has.
            if let Some(rc) = remote.filter(|rc| rc.mode() == crate::remote::Mode::ReadWrite) {
                if !rc.known_to_have(store, &r.drv) {
                    let _ = uploads.send((r.clone(), true));
                }
            }
        }
    }
    // Waves by depth: every node's dependencies are in earlier waves.
    let mut depth: HashMap<NodeIndex, usize> = HashMap::new();
    for &n in &order {
        let d = plan.dependencies(n).iter().map(|p| depth[p] + 1).max().unwrap_or(0);
        depth.insert(n, d);
    }
    let max_depth = depth.values().copied().max().unwrap_or(0);
    let records = Mutex::new(done);
    // Each pass runs what is needed; a remote record that turns out unusable (a damaged or
    // missing blob, a server that died) is dropped and the needs are worked out again.
    loop {
        let need = {
            let done = records.lock().unwrap_or_else(|e| e.into_inner());
            needed(plan, &order, &roots, &done, &offered, None, check)
        };
        let mut replan = Vec::new();
        for wave in 0..=max_depth {
            let todo: Vec<NodeIndex> = {
                let done = records.lock().unwrap_or_else(|e| e.into_inner());
                order.iter().copied().filter(|n| depth[n] == wave && need.contains(n) && !done.contains_key(n)).collect()
            };
            let step = |&n: &NodeIndex| -> Result<Step, BuildError> {
                let drv = &plan.graph[n];
                let deps: HashMap<NodeIndex, Record> = {
                    let done = records.lock().unwrap_or_else(|e| e.into_inner());
                    plan.dependencies(n).into_iter().filter_map(|d| done.get(&d).map(|r| (d, r.clone()))).collect()
                };
                let _guard = store.lock_derivation(&drv.hash)?;
                if let (true, DrvKind::Step(_), Some(before)) = (check, &drv.kind, store.lookup(&drv.hash)?) {
                    // `--check`: run it again and compare; what the store has stays.
                    reporter.started(drv);
                    let again = run(plan, n, &deps, store, clients, options, reporter)?;
                    let (a, b) = (output(&before, "tree")?, output(&again, "tree")?);
                    if a.diff_id != b.diff_id {
                        let path = trees::first_difference(store, a, b)?.unwrap_or_else(|| "(the tree's encoding)".into());
                        let show = |o: &Output| o.diff_id.map(|d| d.to_string()).unwrap_or_default();
                        mismatches.lock().unwrap_or_else(|e| e.into_inner()).push(Mismatch {
                            step: drv.name.clone(),
                            path,
                            before: show(a),
                            after: show(b),
                        });
                    }
                    return Ok(Step::Done(n, before, Outcome::Built));
                }
                // Another process may have built it while we waited for the lock.
                if let Some(r) = store.lookup(&drv.hash)?.filter(|r| fits(drv, r)) {
                    return Ok(Step::Done(n, r, Outcome::Local));
                }
                if let (DrvKind::Image(_) | DrvKind::Index(_), Some(rec)) = (&drv.kind, offered.get(&n)) {
                    // An image or index is checked by making it again from its layers' records
                    // (milliseconds, no download): a cache cannot make it name other blobs.
                    let r = run(plan, n, &deps, store, clients, options, reporter)?;
                    store.put_record(&r)?;
                    if r.outputs == rec.outputs {
                        if let Some(rc) = remote {
                            store.mark_shared(&rc.id(), &r.drv);
                        }
                        return Ok(Step::Done(n, r, Outcome::Remote));
                    }
                    let _ = uploads.send((r.clone(), false));
                    return Ok(Step::Done(n, r, Outcome::Built));
                }
                if let (Some(rc), Some(rec)) = (remote, offered.get(&n)) {
                    if rc.fetch_outputs(store, rec, &|name| compose_tree(&rec.kind, name)) {
                        return Ok(Step::Done(n, rec.clone(), Outcome::Remote));
                    }
                    if deps.len() != plan.dependencies(n).len() {
                        return Ok(Step::Replan(n));
                    }
                }
                reporter.started(drv);
                let r = run(plan, n, &deps, store, clients, options, reporter)?;
                store.put_record(&r)?;
                let _ = uploads.send((r.clone(), false));
                Ok(Step::Done(n, r, Outcome::Built))
            };
            // Downloads wait on the network: they go first, many at once, on the I/O pool;
            // builds then share the cores.
            let (fetch, build): (Vec<NodeIndex>, Vec<NodeIndex>) = todo.iter().partition(|n| offered.contains_key(n));
            let mut results: Vec<Result<Step, BuildError>> = match &io_pool {
                Some(pool) if !fetch.is_empty() => pool.install(|| fetch.par_iter().map(step).collect()),
                _ => fetch.par_iter().map(step).collect(),
            };
            results.extend(build.par_iter().map(step).collect::<Vec<_>>());
            let mut done = records.lock().unwrap_or_else(|e| e.into_inner());
            for r in results {
                match r? {
                    Step::Done(n, rec, outcome) => {
                        match outcome {
                            Outcome::Built => counts.built += 1,
                            Outcome::Local => counts.local += 1,
                            Outcome::Remote => counts.remote += 1,
                        }
                        reporter.finished(&plan.graph[n], outcome, main_size(&rec));
                        done.insert(n, rec);
                    }
                    Step::Replan(n) => replan.push(n),
                }
            }
            if !replan.is_empty() {
                break;
            }
        }
        if replan.is_empty() {
            break;
        }
        for n in replan {
            offered.remove(&n);
        }
        if remote.is_some_and(|r| !r.usable()) {
            offered.clear();
        }
    }
    let records = records.into_inner().unwrap_or_else(|e| e.into_inner());
    counts.skipped = counts.total.saturating_sub(counts.local + counts.remote + counts.built);
    let mut mismatches = mismatches.into_inner().unwrap_or_else(|e| e.into_inner());
    mismatches.sort_by(|a, b| a.step.cmp(&b.step));
    Ok(Executed { records, counts, mismatches })
}

fn main_size(r: &Record) -> u64 {
    r.outputs.values().map(|o| o.size).max().unwrap_or(0)
}

pub(crate) fn output<'r>(r: &'r Record, key: &'static str) -> Result<&'r Output, BuildError> {
    r.outputs.get(key).ok_or_else(|| BuildError::MissingOutput(r.drv.to_string(), key))
}

fn run(
    plan: &Plan,
    n: NodeIndex,
    deps: &HashMap<NodeIndex, Record>,
    store: &Store,
    clients: &Clients,
    options: &ExecOptions,
    reporter: &dyn Reporter,
) -> Result<Record, BuildError> {
    let drv = &plan.graph[n];
    let mut outputs = BTreeMap::new();
    match &drv.kind {
        DrvKind::Layer(l) if l.parts.is_empty() => {
            outputs.insert("layer".to_string(), build_layer(&drv.name, &l.entries, l.epoch, l.compression, store)?);
        }
        DrvKind::Layer(l) => {
            outputs.insert("layer".to_string(), layer_with_copies(plan, &drv.name, l, deps, store)?);
        }
        DrvKind::Scripts(sc) => {
            let (log, layer) = step::run_scripts(drv, sc, deps, store, reporter)?;
            outputs.insert("log".to_string(), log);
            outputs.insert("layer".to_string(), layer);
        }
        DrvKind::Step(s) => {
            let (log, tree) = step::run_step(drv, s, deps, store, &options.secrets, reporter)?;
            outputs.insert("log".to_string(), log);
            outputs.insert("tree".to_string(), tree);
        }
        DrvKind::Fetch(f) => {
            outputs.insert("file".to_string(), packages::fetch(f, store, clients)?);
        }
        DrvKind::Blob(b) => {
            outputs.insert("file".to_string(), packages::base_blob(b, store, clients)?);
        }
        DrvKind::DebLayer(d) => {
            let o = packages::deb_layer(plan, d, deps, store)?;
            outputs.insert("layer".to_string(), o.layer);
            outputs.insert("files".to_string(), o.files);
            outputs.insert("licences".to_string(), o.licences);
            outputs.insert("status".to_string(), o.status);
            outputs.insert("facts".to_string(), o.facts);
        }
        DrvKind::MergedLayer(m) => {
            let (layer, files) = packages::merged_layer(&drv.name, plan, m, deps, store)?;
            outputs.insert("layer".to_string(), layer);
            outputs.insert("files".to_string(), files);
        }
        DrvKind::Meta(m) => {
            let entries = packages::meta_entries(m, deps, store)?;
            outputs.insert("layer".to_string(), build_layer(&drv.name, &entries, m.epoch, m.compression, store)?);
        }
        DrvKind::Image(img) => {
            let (config, manifest) = build_image(plan, img, deps, store)?;
            outputs.insert("config".to_string(), config);
            outputs.insert("manifest".to_string(), manifest);
        }
        DrvKind::Index(ix) => {
            let mut manifests = Vec::new();
            for &i in &ix.images {
                let rec = deps.get(&i).ok_or_else(|| BuildError::MissingOutput(plan.graph[i].name.clone(), "manifest"))?;
                let m = output(rec, "manifest")?;
                let mut d = Descriptor::new(image::MANIFEST_MEDIA_TYPE, m.digest, m.size);
                if let DrvKind::Image(img) = &plan.graph[i].kind {
                    d.platform = Some(oci_platform(&img.platform));
                }
                manifests.push(d);
            }
            let bytes = image::index_json(&manifests);
            let digest = store.put_bytes(&bytes)?;
            outputs.insert(
                "index".to_string(),
                Output { digest, size: bytes.len() as u64, media_type: image::INDEX_MEDIA_TYPE.into(), diff_id: None },
            );
        }
    }
    Ok(Record { version: RECORD_VERSION, drv: drv.hash, kind: drv.kind.name().into(), outputs, inputs: crate::plan::describe(plan, n) })
}

/// A layer with `copy from=`: each source tree made available (a step's output unpacked, an
/// image's root filesystem), the copies' entries read from it, and every operation merged in order.
fn layer_with_copies(
    plan: &Plan,
    name: &str,
    l: &crate::plan::LayerDrv,
    deps: &HashMap<NodeIndex, Record>,
    store: &Store,
) -> Result<Output, BuildError> {
    let mut unpacked: HashMap<NodeIndex, (PathBuf, Option<tempfile::TempDir>)> = HashMap::new();
    // What this layer copies from each step: only that is unpacked.
    let mut wanted: HashMap<NodeIndex, Vec<&str>> = HashMap::new();
    for part in &l.parts {
        if let crate::plan::LayerPart::From(c) = part {
            wanted.entry(c.source).or_default().push(&c.src);
        }
    }
    let mut parts: Vec<Vec<PlannedEntry>> = Vec::new();
    for part in &l.parts {
        match part {
            crate::plan::LayerPart::Entries(e) => parts.push(e.clone()),
            crate::plan::LayerPart::From(c) => {
                let source = &plan.graph[c.source];
                let rec = deps.get(&c.source).ok_or_else(|| BuildError::MissingOutput(source.name.clone(), "tree"))?;
                if let std::collections::hash_map::Entry::Vacant(slot) = unpacked.entry(c.source) {
                    let entry = match &source.kind {
                        DrvKind::Step(_) => {
                            let tree = output(rec, "tree")?;
                            let tmp_root = store.tmp_dir();
                            let dir = tempfile::Builder::new()
                                .prefix("tree-")
                                .tempdir_in(&tmp_root)
                                .map_err(trees::io_error(&tmp_root, "cannot create a directory in"))?;
                            let srcs = wanted.get(&c.source).map(Vec::as_slice).unwrap_or_default();
                            trees::unpack_for(&store.blob_path(&tree.digest), &tree.media_type, dir.path(), srcs)
                                .map_err(|e| drop_tree(store, source, e))?;
                            (dir.path().to_path_buf(), Some(dir))
                        }
                        _ => (trees::image_rootfs(store, rec)?, None),
                    };
                    slot.insert(entry);
                }
                let root = unpacked.get(&c.source).map(|(p, _)| p.clone()).unwrap_or_default();
                let (what, shown) = match &source.kind {
                    DrvKind::Step(s) if c.src.is_empty() => (format!("the output of step `{}`", s.step), s.output.clone()),
                    DrvKind::Step(s) => {
                        (format!("the output of step `{}`", s.step), format!("{}/{}", s.output.trim_end_matches('/'), c.src))
                    }
                    _ => (format!("image {}", source.name), c.src.clone()),
                };
                let copied = trees::copy_entries(c, &root, &what, &shown);
                parts.push(if matches!(source.kind, DrvKind::Step(_)) {
                    copied.map_err(|e| drop_tree(store, source, e))?
                } else {
                    copied?
                });
            }
        }
    }
    let entries =
        crate::plan::merge_parts(l.merged_usr, parts).map_err(|message| BuildError::CopyFrom { message: format!("{name}: {message}") })?;
    build_layer(name, &entries, l.epoch, l.compression, store)
}

/// A copy from step `source`'s tree failed (the path is missing, or the tree leads out of
/// itself): drop the step's record, so that a tree a cache handed out cannot fail every later
/// build; the next build runs the step here and copies from what it makes.
fn drop_tree(store: &Store, source: &Derivation, e: BuildError) -> BuildError {
    store.forget(&source.hash);
    BuildError::CopyFrom {
        message: format!(
            "{}; the stored output of {} was dropped: if it came from a cache, the next build runs the step here",
            crate::util::chain_message(&e),
            source.name
        ),
    }
}

fn oci_platform(p: &crate::spec::Platform) -> image::Platform {
    image::Platform::of(p)
}

/// Writes `entries` as a layer compressed with `codec` into the store, reusing the chunks the
/// store keeps and keeping the new ones.
pub(crate) fn build_layer(
    name: &str,
    entries: &[PlannedEntry],
    epoch: u64,
    codec: Compression,
    store: &Store,
) -> Result<Output, BuildError> {
    let tmp = store.temp_file()?;
    let sink = store::buffered(&tmp)?;
    let mut w = LayerWriter::with(sink, codec, Some(store.chunk_cache()));
    w.identify_with(crate::util::file_identity);
    let layer_err = |source| BuildError::Layer { name: name.to_string(), source };
    // The kernel reads files ahead of the writer (see `read_ahead`).
    let written = std::sync::atomic::AtomicU64::new(0);
    let finished = std::sync::atomic::AtomicBool::new(false);
    let file_bytes: u64 = entries.iter().map(|e| if let EntryKind::File { size, .. } = e.kind { size } else { 0 }).sum();
    std::thread::scope(|scope| {
        if file_bytes >= READ_AHEAD_FROM {
            scope.spawn(|| read_ahead(entries, &written, &finished));
        }
        let result = write_entries(&mut w, entries, epoch, &written, layer_err);
        finished.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })?;
    let (mut sink, digests, chunks) = w.finish_with_chunks().map_err(layer_err)?;
    sink.flush().map_err(|source| BuildError::Write { name: name.to_string(), source })?;
    drop(sink);
    let digest = Sha256(digests.digest);
    store.commit_blob(tmp, &digest)?;
    store.keep_chunks(&digest, &chunks);
    Ok(Output { digest, size: digests.size, media_type: codec.media_type().into(), diff_id: Some(Sha256(digests.diff_id)) })
}

/// Layers with fewer bytes of files than this are read without a helper asking for read-ahead.
const READ_AHEAD_FROM: u64 = 8 << 20;

/// How far ahead of the writer files are asked for.
const READ_AHEAD: u64 = 64 << 20;

/// Asks the kernel to read the layer's files (in the writer's order) into the page cache up to
/// [`READ_AHEAD`] bytes ahead of the writer, so that a layer of files not in the page cache
/// reads from the disk while the writer hashes and compresses, not before. Only hints: errors
/// are the writer's to find.
fn read_ahead(entries: &[PlannedEntry], written: &std::sync::atomic::AtomicU64, finished: &std::sync::atomic::AtomicBool) {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering::Relaxed;
    let mut asked: u64 = 0;
    for e in entries {
        let EntryKind::File { size, content: Content::Local { abs, .. } | Content::Tree { abs } } = &e.kind else { continue };
        while asked > written.load(Relaxed) + READ_AHEAD {
            if finished.load(Relaxed) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if finished.load(Relaxed) {
            return;
        }
        if let Ok(f) = File::open(abs) {
            // SAFETY: posix_fadvise only reads its arguments; `f` is an open descriptor.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
        }
        asked += size;
    }
}

/// Appends `entries` to `w`, counting the file bytes written in `written`.
fn write_entries<W: Write>(
    w: &mut LayerWriter<W>,
    entries: &[PlannedEntry],
    epoch: u64,
    written: &std::sync::atomic::AtomicU64,
    layer_err: impl Fn(layer::LayerError) -> BuildError + Copy,
) -> Result<(), BuildError> {
    for e in entries {
        if let EntryKind::File { size, .. } = e.kind {
            written.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        }
        let (kind, data): (layer::EntryKind, Option<&Content>) = match &e.kind {
            EntryKind::Dir => (layer::EntryKind::Dir, None),
            EntryKind::Symlink { target } => (layer::EntryKind::Symlink { target: target.clone() }, None),
            EntryKind::File { size, content } => (layer::EntryKind::File { size: *size }, Some(content)),
        };
        let entry = layer::Entry { path: e.path.clone(), kind, mode: e.mode, uid: e.uid, gid: e.gid, mtime: epoch };
        match data {
            None => w.append(&entry, None).map_err(layer_err)?,
            Some(Content::Inline(bytes)) => {
                let mut r: &[u8] = bytes;
                w.append(&entry, Some(&mut r)).map_err(layer_err)?
            }
            Some(Content::Tree { abs }) => {
                let f = File::open(abs).map_err(|source| BuildError::Read { path: abs.clone(), source })?;
                let mut r = f;
                w.append(&entry, Some(&mut r)).map_err(|source| match source {
                    layer::LayerError::DataLength { .. } => BuildError::Changed { path: abs.clone() },
                    other => layer_err(other),
                })?;
            }
            Some(Content::Local { abs, hash, settled }) => {
                if let Some(identity) = settled {
                    // Unchanged since it was hashed: read only if its chunk is not kept.
                    let file = layer::KnownFile { path: abs.clone(), hash: hash.0, identity: identity.clone() };
                    w.append_known(&entry, file).map_err(|source| match source {
                        layer::LayerError::Changed { path } => BuildError::Changed { path },
                        other => layer_err(other),
                    })?;
                    continue;
                }
                let f = File::open(abs).map_err(|source| BuildError::Read { path: abs.clone(), source })?;
                let mut r = CheckedReader::new(f);
                w.append(&entry, Some(&mut r)).map_err(|source| match source {
                    layer::LayerError::DataLength { .. } => BuildError::Changed { path: abs.clone() },
                    other => layer_err(other),
                })?;
                // The file must be at its end and have the planned content.
                if !r.ended_with(hash).map_err(|source| BuildError::Read { path: abs.clone(), source })? {
                    return Err(BuildError::Changed { path: abs.clone() });
                }
            }
        }
    }
    Ok(())
}

/// A base's config, layer descriptors and diff_ids.
type BaseParts = (serde_json::Value, Vec<Descriptor>, Vec<Sha256>);

/// The base an image starts from: its config, layer descriptors and diff_ids.
fn base_of(plan: &Plan, img: &ImageDrv, deps: &HashMap<NodeIndex, Record>, store: &Store) -> Result<Option<BaseParts>, BuildError> {
    let damaged = |what: &str| BuildError::MissingOutput(format!("base image ({what})"), "config");
    match &img.base {
        None => Ok(None),
        Some(ImageBase::External { config, layers, .. }) => {
            let descs = layers.iter().map(|(l, _)| Descriptor::new(&l.media_type, l.digest, l.size)).collect();
            let diff_ids = layers.iter().map(|(l, _)| l.diff_id).collect();
            Ok(Some(((**config).clone(), descs, diff_ids)))
        }
        Some(ImageBase::Image(parent)) => {
            let rec = deps.get(parent).ok_or_else(|| BuildError::MissingOutput(plan.graph[*parent].name.clone(), "manifest"))?;
            let config_bytes = store.read_blob(&output(rec, "config")?.digest)?;
            let config: serde_json::Value = serde_json::from_slice(&config_bytes).map_err(|_| damaged("config"))?;
            let typed: image::ConfigDoc = image::read("the config", &config_bytes).map_err(|_| damaged("config"))?;
            let manifest: image::ManifestDoc =
                image::read("the manifest", &store.read_blob(&output(rec, "manifest")?.digest)?).map_err(|_| damaged("manifest"))?;
            let descs = manifest
                .layers
                .iter()
                .map(|l| Descriptor::new(l.media_type.as_deref().unwrap_or(layer::GZIP_MEDIA_TYPE), l.digest, l.size))
                .collect();
            Ok(Some((config, descs, typed.rootfs.diff_ids)))
        }
    }
}

fn build_image(plan: &Plan, img: &ImageDrv, deps: &HashMap<NodeIndex, Record>, store: &Store) -> Result<(Output, Output), BuildError> {
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    let mut history = Vec::new();
    packages::check_conflicts(plan, img, deps, store)?;
    let base = base_of(plan, img, deps, store)?;
    if let Some((_, descs, ids)) = &base {
        layers.extend(descs.iter().cloned());
        diff_ids.extend(ids.iter().copied());
    }
    for &l in &img.layers {
        let rec = deps.get(&l).ok_or_else(|| BuildError::MissingOutput(plan.graph[l].name.clone(), "layer"))?;
        let o = output(rec, "layer")?;
        let diff_id = o.diff_id.ok_or_else(|| BuildError::MissingOutput(plan.graph[l].name.clone(), "diff_id"))?;
        diff_ids.push(diff_id);
        layers.push(Descriptor::new(&o.media_type, o.digest, o.size));
        history.push(match &plan.graph[l].kind {
            DrvKind::Layer(ld) => ld.created_by.clone(),
            DrvKind::DebLayer(d) => format!("compose: package {}", d.package),
            DrvKind::MergedLayer(m) => format!("compose: {} packages", m.parts.len()),
            DrvKind::Meta(_) => "compose: metadata".to_string(),
            DrvKind::Scripts(_) => "compose: maintainer scripts (dpkg --configure -a)".to_string(),
            _ => "compose".to_string(),
        });
    }
    let c = &img.config;
    let fields = ConfigFields {
        env: c.env.clone(),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        workdir: c.workdir.clone(),
        user: c.user.clone(),
        exposed: c.exposed.iter().cloned().collect(),
        volumes: c.volumes.iter().cloned().collect(),
        labels: c.labels.clone(),
        stop_signal: c.stop_signal.clone(),
        healthcheck: c.healthcheck.as_ref().map(|h| {
            let mut o = serde_json::Map::new();
            o.insert("Test".into(), serde_json::json!(h.test));
            for (key, n) in [
                ("Interval", h.interval),
                ("Timeout", h.timeout),
                ("StartPeriod", h.start_period),
                ("StartInterval", h.start_interval),
                ("Retries", h.retries),
            ] {
                if n > 0 {
                    o.insert(key.into(), serde_json::json!(n));
                }
            }
            serde_json::Value::Object(o)
        }),
    };
    let config = image::config_json(&oci_platform(&img.platform), &fields, base.as_ref().map(|b| &b.0), &diff_ids, &history, img.epoch);
    let config_digest = store.put_bytes(&config)?;
    let config_desc = Descriptor::new(image::CONFIG_MEDIA_TYPE, config_digest, config.len() as u64);
    let manifest = image::manifest_json(&config_desc, &layers);
    let manifest_digest = store.put_bytes(&manifest)?;
    Ok((
        Output { digest: config_digest, size: config.len() as u64, media_type: image::CONFIG_MEDIA_TYPE.into(), diff_id: None },
        Output { digest: manifest_digest, size: manifest.len() as u64, media_type: image::MANIFEST_MEDIA_TYPE.into(), diff_id: None },
    ))
}
