//! Planning: `Spec` + fingerprints of local sources → a petgraph DAG of derivations.
//!
//! Owns the derivation model: what each derivation kind is, its exact inputs, and its `DrvHash`
//! (blake3 over [`crate::hash::Encoder`]: kind, parameters, input hashes; never an absolute path,
//! host name, user name, clock or thread count). Owns the layering of an image (metadata layer,
//! `files`, then each `layer` block, in spec order) and the rules that merge file operations into one
//! layer's entry list (implicit parents, later operation wins, file/directory clashes refused), and
//! the resolution of owners against `accounts`. Does no I/O: local files arrive already fingerprinted
//! from [`crate::source`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use miette::SourceSpan;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::hash::{ContentHash, DrvHash, Encoder};
use crate::source::{Scanned, SourceKind};
use crate::spec::{Accounts, FileOp, ImageSpec, Owner, OwnerSpec, Platform, SpecDiagnostic, SpecFile};

/// Default epoch when neither `SOURCE_DATE_EPOCH` nor the spec gives one: 1980-01-01T00:00:00Z
/// (not 0, which some tools read as "missing").
pub const DEFAULT_EPOCH: u64 = 315_532_800;

/// Identity of the layer byte format (tar rules + compressor); part of every layer's hash.
pub type CompressorId = &'static str;

/// What an entry in a planned layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { size: u64, content: Content },
    Symlink { target: String },
}

/// Where a planned file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Generated or written in the spec.
    Inline(Arc<Vec<u8>>),
    /// A local file; `abs` says where to read it and is never hashed.
    Local { abs: PathBuf, hash: ContentHash },
}

/// One entry of a planned layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEntry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A layer built from files: its entries, byte-sorted by path, parents first.
#[derive(Debug, Clone)]
pub struct LayerDrv {
    pub entries: Vec<PlannedEntry>,
    pub epoch: u64,
    /// Shown in the image history (`created_by`).
    pub created_by: String,
}

/// The runtime configuration of an image, resolved from the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub exposed: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// One platform's image: config + manifest over its layers.
#[derive(Debug, Clone)]
pub struct ImageDrv {
    pub platform: Platform,
    pub layers: Vec<NodeIndex>,
    pub config: RuntimeConfig,
    pub epoch: u64,
}

/// A multi-platform index over per-platform images.
#[derive(Debug, Clone)]
pub struct IndexDrv {
    pub images: Vec<NodeIndex>,
}

#[derive(Debug, Clone)]
pub enum DrvKind {
    Layer(LayerDrv),
    Image(Box<ImageDrv>),
    Index(IndexDrv),
}

impl DrvKind {
    pub fn name(&self) -> &'static str {
        match self {
            DrvKind::Layer(_) => "layer",
            DrvKind::Image(_) => "image",
            DrvKind::Index(_) => "index",
        }
    }
}

/// A node of the plan.
#[derive(Debug, Clone)]
pub struct Derivation {
    pub hash: DrvHash,
    /// Human-readable name, e.g. `web: layer "assets"`.
    pub name: String,
    pub kind: DrvKind,
}

/// An image of the spec and the node that produces it (an image, or an index when it has several
/// platforms).
#[derive(Debug, Clone)]
pub struct PlannedImage {
    pub name: String,
    pub tag: String,
    pub root: NodeIndex,
}

/// The DAG. Edges go from a dependency to its dependent.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub graph: DiGraph<Derivation, ()>,
    pub images: Vec<PlannedImage>,
}

/// Inputs to planning besides the spec.
pub struct PlanInputs<'a> {
    /// Scanned copy sources, keyed by the spec's source string.
    pub sources: &'a HashMap<String, Scanned>,
    /// `SOURCE_DATE_EPOCH`, if set.
    pub source_date_epoch: Option<u64>,
    /// Identity of the layer format (tar rules + compressor).
    pub layer_format: &'a str,
}

struct Builder<'a> {
    spec: &'a SpecFile,
    inputs: &'a PlanInputs<'a>,
    plan: Plan,
    by_hash: HashMap<DrvHash, NodeIndex>,
    errors: Vec<SpecDiagnostic>,
}

/// Plan every image of `spec` (or only `only`, and what it needs).
pub fn plan(spec: &SpecFile, only: Option<&str>, inputs: &PlanInputs<'_>) -> Result<Plan, Vec<SpecDiagnostic>> {
    let mut b = Builder { spec, inputs, plan: Plan::default(), by_hash: HashMap::new(), errors: Vec::new() };
    for image in &spec.images {
        if only.is_some_and(|n| n != image.name) {
            continue;
        }
        b.image(image);
    }
    if b.errors.is_empty() {
        Ok(b.plan)
    } else {
        Err(b.errors)
    }
}

impl Builder<'_> {
    fn add(&mut self, drv: Derivation, deps: &[NodeIndex]) -> NodeIndex {
        if let Some(&n) = self.by_hash.get(&drv.hash) {
            return n;
        }
        let hash = drv.hash;
        let n = self.plan.graph.add_node(drv);
        for &d in deps {
            self.plan.graph.add_edge(d, n, ());
        }
        self.by_hash.insert(hash, n);
        n
    }

    fn image(&mut self, image: &ImageSpec) {
        let epoch = self.inputs.source_date_epoch.or(image.epoch).unwrap_or(DEFAULT_EPOCH);
        let ids = Ids::new(image.accounts.as_ref());
        let mut layers: Vec<NodeIndex> = Vec::new();

        if let Some(accounts) = &image.accounts {
            let entries = accounts_entries(accounts);
            layers.push(self.layer(&image.name, "accounts", entries, epoch));
        }
        if !image.files.is_empty() {
            if let Some(entries) = self.merge_ops(&image.files, &ids) {
                layers.push(self.layer(&image.name, "files", entries, epoch));
            }
        }
        for l in &image.layers {
            if let Some(entries) = self.merge_ops(&l.ops, &ids) {
                layers.push(self.layer(&image.name, &format!("layer \"{}\"", l.name), entries, epoch));
            }
        }
        let config = self.runtime_config(image, &ids);
        let mut images = Vec::new();
        for platform in &image.platforms {
            let drv = ImageDrv { platform: platform.clone(), layers: layers.clone(), config: config.clone(), epoch };
            let hash = self.image_hash(&drv);
            let name = if image.platforms.len() > 1 {
                format!("{}: image {}", image.name, platform)
            } else {
                format!("{}: image", image.name)
            };
            images.push(self.add(Derivation { hash, name, kind: DrvKind::Image(Box::new(drv)) }, &layers));
        }
        let root = if images.len() == 1 {
            images[0]
        } else {
            let mut e = Encoder::new("index");
            e.list(images.len());
            for &i in &images {
                e.drv(&self.plan.graph[i].hash);
            }
            let drv = Derivation {
                hash: e.finish(),
                name: format!("{}: index", image.name),
                kind: DrvKind::Index(IndexDrv { images: images.clone() }),
            };
            self.add(drv, &images)
        };
        self.plan.images.push(PlannedImage { name: image.name.clone(), tag: image.tag.clone(), root });
    }

    fn layer(&mut self, image: &str, what: &str, entries: Vec<PlannedEntry>, epoch: u64) -> NodeIndex {
        let mut e = Encoder::new("files-layer");
        e.str(self.inputs.layer_format).u64(epoch).list(entries.len());
        for entry in &entries {
            e.str(&entry.path).u64(entry.mode as u64).u64(entry.uid as u64).u64(entry.gid as u64);
            match &entry.kind {
                EntryKind::Dir => {
                    e.str("dir");
                }
                EntryKind::Symlink { target } => {
                    e.str("symlink").str(target);
                }
                EntryKind::File { size, content } => {
                    e.str("file").u64(*size);
                    match content {
                        Content::Inline(bytes) => e.content(&ContentHash::of(bytes)),
                        Content::Local { hash, .. } => e.content(hash),
                    };
                }
            }
        }
        let created_by = format!("compose: {what}");
        let drv = Derivation {
            hash: e.finish(),
            name: format!("{image}: {what}"),
            kind: DrvKind::Layer(LayerDrv { entries, epoch, created_by }),
        };
        self.add(drv, &[])
    }

    fn image_hash(&self, drv: &ImageDrv) -> DrvHash {
        let mut e = Encoder::new("image");
        e.str(&drv.platform.os).str(&drv.platform.architecture).opt_str(drv.platform.variant.as_deref());
        e.u64(drv.epoch);
        e.list(drv.layers.len());
        for &l in &drv.layers {
            e.drv(&self.plan.graph[l].hash);
        }
        let c = &drv.config;
        e.list(c.env.len());
        for v in &c.env {
            e.str(v);
        }
        for list in [&c.entrypoint, &c.cmd] {
            match list {
                None => {
                    e.opt_str(None);
                }
                Some(v) => {
                    e.list(v.len());
                    for s in v {
                        e.str(s);
                    }
                }
            }
        }
        e.opt_str(c.workdir.as_deref()).opt_str(c.user.as_deref()).opt_str(c.stop_signal.as_deref());
        for set in [&c.exposed, &c.volumes] {
            e.list(set.len());
            for s in set {
                e.str(s);
            }
        }
        e.list(c.labels.len());
        for (k, v) in &c.labels {
            e.str(k).str(v);
        }
        e.finish()
    }

    fn runtime_config(&mut self, image: &ImageSpec, ids: &Ids) -> RuntimeConfig {
        let c = &image.config;
        let mut env: Vec<(String, String)> = Vec::new();
        for (k, v) in &c.env {
            match env.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v.clone(),
                None => env.push((k.clone(), v.clone())),
            }
        }
        if let Some((user, span)) = &c.user {
            if let Err(msg) = ids.check_user(user) {
                self.errors.push(self.spec.diagnostic("compose::spec::unknown_user", *span, msg, "this user", Some(ids.help())));
            }
        }
        RuntimeConfig {
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            workdir: c.workdir.clone(),
            user: c.user.as_ref().map(|(u, _)| u.clone()),
            exposed: c.expose.iter().cloned().collect(),
            volumes: c.volumes.iter().cloned().collect(),
            labels: c.labels.clone(),
            stop_signal: c.stop_signal.clone(),
        }
    }

    /// Merge file operations into one layer's sorted entry list.
    fn merge_ops(&mut self, ops: &[FileOp], ids: &Ids) -> Option<Vec<PlannedEntry>> {
        let mut layer = LayerEntries::default();
        let errors_before = self.errors.len();
        for op in ops {
            match op {
                FileOp::Copy { src, src_span, to, to_dir, mode, dir_mode, owner, span } => {
                    let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { continue };
                    let Some(scanned) = self.inputs.sources.get(src) else {
                        self.errors.push(self.spec.diagnostic("compose::spec::source", *src_span, format!("copy source `{src}` was not scanned"), "here", None));
                        continue;
                    };
                    let dest_root = if scanned.root_is_dir() || !to_dir {
                        to.clone()
                    } else {
                        let base = src.trim_end_matches('/').rsplit('/').next().unwrap_or(src);
                        join(to, base)
                    };
                    for se in &scanned.entries {
                        let path = if se.rel.is_empty() { dest_root.clone() } else { join(&dest_root, &se.rel) };
                        let (kind, mode) = match &se.kind {
                            SourceKind::Dir => (EntryKind::Dir, dir_mode.unwrap_or(0o755)),
                            SourceKind::Symlink { target } => (EntryKind::Symlink { target: target.clone() }, 0o777),
                            SourceKind::File { size, hash, executable } => (
                                EntryKind::File {
                                    size: *size,
                                    content: Content::Local { abs: se.abs.clone(), hash: *hash },
                                },
                                mode.unwrap_or(if *executable { 0o755 } else { 0o644 }),
                            ),
                        };
                        let entry = PlannedEntry { path, kind, mode, uid, gid };
                        if let Err(msg) = layer.insert(entry, *span) {
                            self.errors.push(self.conflict(msg));
                        }
                    }
                }
                FileOp::Text { path, content, mode, owner, span } => {
                    let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { continue };
                    let bytes = Arc::new(content.as_bytes().to_vec());
                    let entry = PlannedEntry {
                        path: path.clone(),
                        kind: EntryKind::File { size: bytes.len() as u64, content: Content::Inline(bytes) },
                        mode: mode.unwrap_or(0o644),
                        uid,
                        gid,
                    };
                    if let Err(msg) = layer.insert(entry, *span) {
                        self.errors.push(self.conflict(msg));
                    }
                }
                FileOp::Symlink { path, target, owner, span } => {
                    let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { continue };
                    let entry = PlannedEntry {
                        path: path.clone(),
                        kind: EntryKind::Symlink { target: target.clone() },
                        mode: 0o777,
                        uid,
                        gid,
                    };
                    if let Err(msg) = layer.insert(entry, *span) {
                        self.errors.push(self.conflict(msg));
                    }
                }
                FileOp::Dir { path, mode, owner, span } => {
                    let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { continue };
                    let entry = PlannedEntry { path: path.clone(), kind: EntryKind::Dir, mode: mode.unwrap_or(0o755), uid, gid };
                    if let Err(msg) = layer.insert(entry, *span) {
                        self.errors.push(self.conflict(msg));
                    }
                }
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(layer.finish())
    }

    fn conflict(&self, c: Conflict) -> SpecDiagnostic {
        self.spec.diagnostic("compose::spec::path_conflict", c.span, c.message, "this operation", c.help)
    }

    fn owner(&mut self, owner: Option<&OwnerSpec>, ids: &Ids) -> Option<(u32, u32)> {
        let Some(o) = owner else { return Some((0, 0)) };
        match ids.resolve(&o.owner) {
            Ok(ids) => Some(ids),
            Err(msg) => {
                self.errors.push(self.spec.diagnostic("compose::spec::unknown_owner", o.span, msg, "unknown owner", Some(ids.help())));
                None
            }
        }
    }
}

fn join(dir: &str, rel: &str) -> String {
    if dir == "/" {
        format!("/{rel}")
    } else {
        format!("{dir}/{rel}")
    }
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

struct Conflict {
    span: SourceSpan,
    message: String,
    help: Option<String>,
}

#[derive(Default)]
struct LayerEntries {
    /// path → (entry, span of the op that wrote it; None for implicit parents)
    map: BTreeMap<String, (PlannedEntry, Option<SourceSpan>)>,
}

impl LayerEntries {
    fn insert(&mut self, entry: PlannedEntry, span: SourceSpan) -> Result<(), Conflict> {
        // Parents: implicit directories, unless something is already there.
        let mut p = parent(&entry.path);
        let mut missing = Vec::new();
        while let Some(dir) = p {
            if dir == "/" {
                break;
            }
            match self.map.get(dir) {
                Some((e, _)) if e.kind == EntryKind::Dir => break,
                Some((e, _)) => {
                    return Err(Conflict {
                        span,
                        message: format!(
                            "`{}` needs `{dir}` to be a directory, but this layer already has a {} there",
                            entry.path,
                            kind_word(&e.kind)
                        ),
                        help: None,
                    });
                }
                None => missing.push(dir.to_string()),
            }
            p = parent(dir);
        }
        match self.map.get(&entry.path) {
            Some((old, _)) if old.kind == EntryKind::Dir && entry.kind == EntryKind::Dir => {}
            Some((old, _)) if (old.kind == EntryKind::Dir) != (entry.kind == EntryKind::Dir) => {
                return Err(Conflict {
                    span,
                    message: format!(
                        "`{}` is a {} here but an earlier operation made it a {}",
                        entry.path,
                        kind_word(&entry.kind),
                        kind_word(&old.kind)
                    ),
                    help: Some("a path can't be both a directory and a file in one layer; put one of them in a `layer` block of its own".into()),
                });
            }
            _ => {}
        }
        for dir in missing {
            let implicit = PlannedEntry { path: dir.clone(), kind: EntryKind::Dir, mode: 0o755, uid: 0, gid: 0 };
            self.map.insert(dir, (implicit, None));
        }
        // Later operations win.
        self.map.insert(entry.path.clone(), (entry, Some(span)));
        Ok(())
    }

    fn finish(self) -> Vec<PlannedEntry> {
        // BTreeMap<String> iterates in byte order of the path: parents before children.
        self.map.into_values().map(|(e, _)| e).collect()
    }
}

fn kind_word(k: &EntryKind) -> &'static str {
    match k {
        EntryKind::Dir => "directory",
        EntryKind::File { .. } => "file",
        EntryKind::Symlink { .. } => "symlink",
    }
}

/// Users and groups known to an image: `root` plus `accounts`.
struct Ids {
    users: Vec<(String, u32, u32)>,
    groups: Vec<(String, u32)>,
}

impl Ids {
    fn new(accounts: Option<&Accounts>) -> Ids {
        let mut users = vec![("root".to_string(), 0, 0)];
        let mut groups = vec![("root".to_string(), 0)];
        if let Some(a) = accounts {
            for u in &a.users {
                users.retain(|(n, _, _)| n != &u.name);
                users.push((u.name.clone(), u.uid, u.gid));
            }
            for g in &a.groups {
                groups.retain(|(n, _)| n != &g.name);
                groups.push((g.name.clone(), g.gid));
            }
        }
        Ids { users, groups }
    }

    fn user(&self, name: &str) -> Option<(u32, u32)> {
        self.users.iter().find(|(n, _, _)| n == name).map(|(_, u, g)| (*u, *g))
    }

    fn group(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|(n, _)| n == name).map(|(_, g)| *g)
    }

    /// `NAME`, `UID`, `NAME:GROUP`, `UID:GID` and mixes.
    fn resolve(&self, owner: &Owner) -> Result<(u32, u32), String> {
        match owner {
            Owner::Ids(u, g) => Ok((*u, *g)),
            Owner::Name(s) => {
                let (u, g) = match s.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (s.as_str(), None),
                };
                let (uid, primary) = match u.parse::<u32>() {
                    Ok(n) => (n, n),
                    Err(_) => self
                        .user(u)
                        .ok_or_else(|| format!("unknown owner `{s}`: there is no user `{u}` in `accounts`"))?,
                };
                let gid = match g {
                    None => primary,
                    Some(g) => match g.parse::<u32>() {
                        Ok(n) => n,
                        Err(_) => self
                            .group(g)
                            .ok_or_else(|| format!("unknown owner `{s}`: there is no group `{g}` in `accounts`"))?,
                    },
                };
                Ok((uid, gid))
            }
        }
    }

    fn check_user(&self, user: &str) -> Result<(), String> {
        let (u, g) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        if u.parse::<u32>().is_err() && self.user(u).is_none() {
            return Err(format!("unknown user `{u}`: it is not in `accounts`"));
        }
        if let Some(g) = g {
            if g.parse::<u32>().is_err() && self.group(g).is_none() {
                return Err(format!("unknown group `{g}`: it is not in `accounts`"));
            }
        }
        Ok(())
    }

    fn help(&self) -> String {
        let names: Vec<&str> = self.users.iter().map(|(n, _, _)| n.as_str()).collect();
        format!("known users: {}; or give numeric ids as \"UID:GID\"", names.join(", "))
    }
}

/// `/etc/passwd`, `/etc/group` and home directories for `accounts` (root always present).
fn accounts_entries(a: &Accounts) -> Vec<PlannedEntry> {
    let mut passwd = String::new();
    let mut group = String::new();
    if !a.users.iter().any(|u| u.name == "root") {
        passwd.push_str("root:x:0:0:root:/root:/sbin/nologin\n");
    }
    if !a.groups.iter().any(|g| g.name == "root") {
        group.push_str("root:x:0:\n");
    }
    for u in &a.users {
        let _ = writeln!(passwd, "{}:x:{}:{}:{}:{}:{}", u.name, u.uid, u.gid, u.gecos, u.home, u.shell);
    }
    for g in &a.groups {
        let _ = writeln!(group, "{}:x:{}:{}", g.name, g.gid, g.members.join(","));
    }
    let file = |path: &str, text: String| PlannedEntry {
        path: path.into(),
        kind: EntryKind::File { size: text.len() as u64, content: Content::Inline(Arc::new(text.into_bytes())) },
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let mut layer = LayerEntries::default();
    let span = a.span;
    let mut push = |e: PlannedEntry| {
        // Home directories may clash with nothing here but each other; first one wins.
        let _ = layer.insert(e, span);
    };
    push(file("/etc/passwd", passwd));
    push(file("/etc/group", group));
    if !a.users.iter().any(|u| u.name == "root") {
        push(PlannedEntry { path: "/root".into(), kind: EntryKind::Dir, mode: 0o700, uid: 0, gid: 0 });
    }
    for u in &a.users {
        if u.home == "/" || u.home == "/nonexistent" || !u.home.starts_with('/') || u.home.contains("/..") {
            continue;
        }
        let mode = if u.uid == 0 { 0o700 } else { 0o755 };
        push(PlannedEntry { path: u.home.clone(), kind: EntryKind::Dir, mode, uid: u.uid, gid: u.gid });
    }
    layer.finish()
}

impl Plan {
    /// Nodes in a deterministic topological order (dependencies first).
    pub fn topo_order(&self) -> Vec<NodeIndex> {
        petgraph::algo::toposort(&self.graph, None).unwrap_or_default()
    }

    pub fn dependencies(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut v: Vec<NodeIndex> = self.graph.neighbors_directed(n, petgraph::Direction::Incoming).collect();
        v.sort();
        v
    }
}
