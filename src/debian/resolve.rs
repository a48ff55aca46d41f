//! Dependency resolution: from requested package names (and optional exact versions) to the
//! closed set of `.deb`s to install, the way `apt-get install --no-install-recommends` would
//! choose them, but deterministically and without running anything.
//!
//! This module owns:
//! - [`Universe`]: every package of every configured repository for one architecture (plus
//!   `all`), indexed once by name (candidates, best first) and by provided virtual name;
//! - [`resolve`]: the closure of `Pre-Depends` and `Depends` over the requests, with
//!   alternatives, virtual packages, versioned provides, architecture qualifiers, `Conflicts`,
//!   `Breaks`, packages already installed in a base image, and bounded backtracking;
//! - [`parse_relations`] and friends: a small parser for relation fields (`a (>= 1) | b, c:any`);
//! - [`ResolveError`]: why a request cannot be met, with the dependency chain that led there.
//!
//! # Semantics
//!
//! - **Candidates** of a name are all packages of that name whose architecture is the native
//!   one or `all`, best first: highest version (Debian ordering), then lowest repository
//!   index, then filename (then sha256 and architecture, for full determinism).
//! - **Requests** select the best candidate, or exactly the pinned version. A request for a
//!   name that has no real package but is provided by exactly one package selects that
//!   provider; several providers are an error, as with apt. A requested package already
//!   installed at the pinned version, or (unpinned) at a version at least as high as the best
//!   candidate, is not added again; otherwise it replaces the installed one. `name:ARCH` is
//!   accepted for the native architecture.
//! - **Dependencies**: `Pre-Depends` then `Depends` of each selected package, breadth first
//!   in selection order. For each group (`a | b | c`): if any alternative is already satisfied
//!   by a selected or installed package, nothing is added. Otherwise the options, in order, are
//!   for each alternative: the best candidate of that name satisfying the version constraint,
//!   then the packages providing the name (a versioned relation is only met by a versioned
//!   `Provides` whose version satisfies it; an unversioned `Provides` only meets unversioned
//!   relations). Providers are ordered by `Priority` (required, important, standard,
//!   optional, extra, none), then name, then candidate order; one version per provider name.
//!   Options that would conflict with (or break, or be broken by) something already selected
//!   or installed, or whose name is already selected at another version, are skipped. The first
//!   remaining option is taken.
//! - **Backtracking**: when a group has several options, a choice point is recorded. When a
//!   later group cannot be satisfied, the resolver jumps back to the most recent choice point
//!   that contributed to the failure (conflict-directed backjumping: the choices that brought
//!   in the failing package or the packages blocking it) and takes its next option. Choice
//!   points that did not contribute are not revisited, so independent alternatives do not
//!   multiply. The search is bounded ([`MAX_BACKJUMPS`]); when it gives up or runs out of
//!   options, the error reported is the first failure met, i.e. the one on the path apt
//!   itself would have taken. Versions of one name are never a choice: only the best
//!   candidate meeting the relation is tried, so a broken new version never silently falls
//!   back to an old one.
//! - **Architecture qualifiers**: `foo:any` and `foo:native` are met by native or `all`
//!   packages (`:any` also by `Multi-Arch: allowed` installed packages of other
//!   architectures); `foo:ARCH` for a foreign architecture can only be met by an installed
//!   package of that architecture, otherwise it fails with a clear detail. An unqualified
//!   relation is also met by an installed `Multi-Arch: foreign` package of another
//!   architecture.
//! - **Installed packages** (the base image) satisfy relations when their version does; if
//!   not, a candidate is selected in their place (an upgrade; downgrades are refused).
//!   Their `Provides`, `Conflicts` and `Breaks` are known when the universe holds the same
//!   name, version and architecture. Their own dependencies are not re-checked.
//! - **Essential** packages are only added when requested, depended upon, or when
//!   [`ResolveOptions::add_essential`] is set.
//! - `Recommends`, `Suggests`, `Enhances` and `Replaces` play no part.
//! - The result is a function of the inputs only: hash maps are used for look-ups, never
//!   iterated to decide anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use thiserror::Error;

use super::types::{ArchQual, Dep, DepList, MultiArch, Op, Package, Provide, Version};

/// How many times the resolver may jump back to an earlier choice before giving up.
pub const MAX_BACKJUMPS: usize = 1_000;

/// How many dependency groups may be evaluated after the first failure before giving up.
const MAX_WORK_AFTER_FAILURE: usize = 200_000;

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// Index of a package in its [`Universe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PkgId(pub usize);

/// One package to install: `name`, or `name=version` with `version` set. `name` may carry
/// the native architecture (`curl:amd64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    /// Exact version pin.
    pub version: Option<String>,
}

impl Request {
    /// `name` or `name=version`.
    pub fn parse(s: &str) -> Request {
        match s.split_once('=') {
            Some((name, version)) => Request { name: name.trim().to_string(), version: Some(version.trim().to_string()) },
            None => Request { name: s.trim().to_string(), version: None },
        }
    }
}

/// Knobs of [`resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Add every `Essential: yes` package (best candidate) not already installed. Default:
    /// essential packages are only added when requested or depended upon.
    pub add_essential: bool,
}

/// The packages to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Packages to add, sorted by (name, version, architecture). Installed packages that
    /// already satisfy everything are not listed.
    pub packages: Vec<PkgId>,
    /// Why each package is there. The first entry is how it was brought in: `requested`,
    /// `essential`, or the chain of package names from a request (`curl → libcurl4`; a
    /// virtual package shows as `… → mail-transport-agent → exim4-daemon-light`). Further
    /// entries, sorted, are the other selected packages whose dependencies it satisfies.
    pub reasons: BTreeMap<PkgId, Vec<String>>,
}

/// `Conflicts` or `Breaks`: both forbid the two packages in one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Conflicts,
    Breaks,
}

impl RelationKind {
    fn verb(self) -> &'static str {
        match self {
            RelationKind::Conflicts => "conflicts with",
            RelationKind::Breaks => "breaks",
        }
    }
}

impl fmt::Display for RelationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelationKind::Conflicts => "Conflicts",
            RelationKind::Breaks => "Breaks",
        })
    }
}

/// Why [`resolve`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    /// A requested name is neither a package nor provided by one.
    #[error("unknown package `{name}`{}", did_you_mean(suggestion))]
    UnknownPackage { name: String, suggestion: Option<String> },

    /// A pinned version does not exist.
    #[error("no version {version} of `{name}`; available: {}", list_or_none(available))]
    NoVersion { name: String, version: String, available: Vec<String> },

    /// The same name was requested with two different pins.
    #[error("`{name}` is requested as both {first} and {second}")]
    ConflictingRequests { name: String, first: String, second: String },

    /// A requested virtual package has several providers and none is installed or requested.
    #[error(
        "`{name}` is a virtual package provided by {}; request one of them",
        providers.join(", ")
    )]
    AmbiguousVirtual { name: String, providers: Vec<String> },

    /// A relation cannot be met. `chain` leads from the request to the package holding the
    /// relation: the requested name, then each relation followed.
    #[error("{}{relation}: {detail}", chain_prefix(chain))]
    Unsatisfiable { chain: Vec<String>, relation: String, detail: String },

    /// Two packages that must both be installed cannot be: `a` holds `kind: relation` against
    /// `b`. Both are `name version` (prefixed `installed ` for base image packages).
    #[error("{a} {} {b} ({kind}: {relation})", kind.verb())]
    Conflict { a: String, b: String, kind: RelationKind, relation: String },
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

fn chain_prefix(chain: &[String]) -> String {
    chain.iter().map(|c| format!("{c} → ")).collect()
}

/// A relation field that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid relation `{relation}`: {reason}")]
pub struct RelationError {
    pub relation: String,
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------
// Relation parsing
// ---------------------------------------------------------------------------------------------

fn rel_err(relation: &str, reason: impl Into<String>) -> RelationError {
    RelationError { relation: relation.to_string(), reason: reason.into() }
}

/// Parses a `Depends:`-style field: `a (>= 1) | b, c:any` (the index parser's grammar).
pub fn parse_relations(s: &str) -> Result<DepList, RelationError> {
    super::repository::index::parse_relations(s).map_err(|e| rel_err(s, e.to_string()))
}

/// Parses a `Conflicts:`/`Breaks:`-style field: a comma-separated list without alternatives.
pub fn parse_relation_list(s: &str) -> Result<Vec<Dep>, RelationError> {
    parse_relations(s)?
        .into_iter()
        .map(|mut group| match group.len() {
            1 => Ok(group.remove(0)),
            _ => Err(rel_err(s, "alternatives (`|`) are not allowed here")),
        })
        .collect()
}

/// Parses a `Provides:` field: `foo, bar (= 1.2)`.
pub fn parse_provides(s: &str) -> Result<Vec<Provide>, RelationError> {
    parse_relation_list(s)?
        .into_iter()
        .map(|d| match d.constraint {
            None => Ok(Provide { name: d.name, version: None }),
            Some((Op::Eq, v)) => Ok(Provide { name: d.name, version: Some(v) }),
            Some((op, v)) => Err(rel_err(&format!("{} ({} {v})", d.name, op.as_str()), "a Provides may only carry `=`")),
        })
        .collect()
}

/// Parses one relation: `name[:arch] [(op version)]`.
pub fn parse_relation(s: &str) -> Result<Dep, RelationError> {
    let mut list = parse_relation_list(s)?;
    match list.len() {
        1 => Ok(list.remove(0)),
        0 => Err(rel_err(s, "empty relation")),
        _ => Err(rel_err(s, "expected one relation")),
    }
}

// ---------------------------------------------------------------------------------------------
// Universe
// ---------------------------------------------------------------------------------------------

/// All packages of all configured repositories for one architecture, plus `all`.
#[derive(Debug, Clone)]
pub struct Universe {
    packages: Vec<Package>,
    native_arch: String,
    /// Name → packages of native or `all` architecture, best first.
    candidates: HashMap<String, Vec<PkgId>>,
    /// Virtual name → (provider, index in its `provides`), in provider preference order.
    providers: HashMap<String, Vec<(PkgId, usize)>>,
}

fn priority_rank(p: &Package) -> u8 {
    match p.priority.as_deref() {
        Some("required") => 0,
        Some("important") => 1,
        Some("standard") => 2,
        Some("optional") => 3,
        Some("extra") => 4,
        _ => 5,
    }
}

/// Candidate order: highest version, then lowest repository, then filename (then anything
/// else that tells two entries apart).
fn candidate_order(a: &Package, b: &Package) -> std::cmp::Ordering {
    b.version
        .cmp(&a.version)
        .then(a.repository.cmp(&b.repository))
        .then_with(|| a.filename.cmp(&b.filename))
        .then_with(|| a.sha256.cmp(&b.sha256))
        .then_with(|| a.architecture.cmp(&b.architecture))
}

impl Universe {
    /// Indexes `packages` for `native_arch`. Packages of other architectures are kept (their
    /// [`PkgId`]s stay valid) but are never candidates.
    pub fn new(packages: Vec<Package>, native_arch: &str) -> Universe {
        let mut candidates: HashMap<String, Vec<PkgId>> = HashMap::new();
        let mut providers: HashMap<String, Vec<(PkgId, usize)>> = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            if p.architecture != native_arch && p.architecture != "all" {
                continue;
            }
            candidates.entry(p.name.clone()).or_default().push(PkgId(i));
            for (j, prov) in p.provides.iter().enumerate() {
                providers.entry(prov.name.clone()).or_default().push((PkgId(i), j));
            }
        }
        for ids in candidates.values_mut() {
            ids.sort_by(|a, b| candidate_order(&packages[a.0], &packages[b.0]).then(a.cmp(b)));
        }
        for entries in providers.values_mut() {
            entries.sort_by(|(a, i), (b, j)| {
                let (pa, pb) = (&packages[a.0], &packages[b.0]);
                priority_rank(pa)
                    .cmp(&priority_rank(pb))
                    .then_with(|| pa.name.cmp(&pb.name))
                    .then_with(|| candidate_order(pa, pb))
                    .then(a.cmp(b))
                    .then(i.cmp(j))
            });
        }
        Universe { packages, native_arch: native_arch.to_string(), candidates, providers }
    }

    /// The package `id` names.
    ///
    /// # Panics
    /// If `id` does not come from this universe.
    pub fn get(&self, id: PkgId) -> &Package {
        &self.packages[id.0]
    }

    /// All packages, indexed by [`PkgId`].
    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    pub fn native_arch(&self) -> &str {
        &self.native_arch
    }

    /// Candidates of `name` (native or `all`), best first.
    pub fn candidates(&self, name: &str) -> &[PkgId] {
        self.candidates.get(name).map_or(&[], Vec::as_slice)
    }

    /// Candidates providing `name`, in provider preference order, with the index of the
    /// matching entry in their `provides`.
    pub fn providers(&self, name: &str) -> &[(PkgId, usize)] {
        self.providers.get(name).map_or(&[], Vec::as_slice)
    }

    fn native_like(&self, arch: &str) -> bool {
        arch == self.native_arch || arch == "all"
    }

    /// Can a package of `arch` with `ma` meet a relation with qualifier `qual`?
    fn arch_ok(&self, qual: Option<&ArchQual>, arch: &str, ma: MultiArch) -> bool {
        let native = self.native_like(arch);
        match qual {
            None => native || ma == MultiArch::Foreign,
            Some(ArchQual::Native) => native,
            Some(ArchQual::Any) => native || ma == MultiArch::Allowed,
            Some(ArchQual::Arch(a)) => arch == a || (a == &self.native_arch && arch == "all"),
        }
    }

    /// `foo:ARCH` for an architecture the universe does not hold.
    fn foreign_qualifier<'d>(&self, d: &'d Dep) -> Option<&'d str> {
        match &d.arch {
            Some(ArchQual::Arch(a)) if a != &self.native_arch => Some(a),
            _ => None,
        }
    }

    /// The closest known name to `name`, for "did you mean".
    fn suggest(&self, name: &str) -> Option<String> {
        if let Some((base, _)) = name.split_once(':') {
            if self.candidates.contains_key(base) || self.providers.contains_key(base) {
                return Some(base.to_string());
            }
        }
        let limit = (name.chars().count() / 3).clamp(1, 3);
        let mut best: Option<(usize, &str)> = None;
        for cand in self.candidates.keys().chain(self.providers.keys()) {
            if cand.len().abs_diff(name.len()) > limit {
                continue;
            }
            let d = levenshtein(name, cand);
            if d > limit {
                continue;
            }
            let better = match best {
                None => true,
                Some((bd, bn)) => (d, cand.as_str()) < (bd, bn),
            };
            if better {
                best = Some((d, cand));
            }
        }
        best.map(|(_, n)| n.to_string())
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn version_ok(d: &Dep, v: &Version) -> bool {
    d.constraint.as_ref().is_none_or(|(op, bound)| op.matches(v, bound))
}

/// Does a `Provides` entry with version `pv` meet `d`? Unversioned relations take any
/// provide; versioned ones only a versioned provide satisfying them.
fn provide_ok(d: &Dep, pv: Option<&Version>) -> bool {
    match (&d.constraint, pv) {
        (None, _) => true,
        (Some((op, bound)), Some(v)) => op.matches(v, bound),
        (Some(_), None) => false,
    }
}

fn label(p: &Package) -> String {
    format!("{} {}", p.name, p.version)
}

fn group_text(g: &[Dep]) -> String {
    g.iter().map(Dep::to_string).collect::<Vec<_>>().join(" | ")
}

// ---------------------------------------------------------------------------------------------
// Resolver
// ---------------------------------------------------------------------------------------------

/// A package of the base image.
struct Installed<'a> {
    name: &'a str,
    version: &'a Version,
    arch: &'a str,
    /// The same package in the universe, when it is there: tells its provides and conflicts.
    pkg: Option<&'a Package>,
}

impl Installed<'_> {
    fn multi_arch(&self) -> MultiArch {
        self.pkg.map(|p| p.multi_arch).unwrap_or_default()
    }
    fn label(&self) -> String {
        format!("installed {} {}", self.name, self.version)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Requested,
    Essential,
    Dependency,
}

/// Bookkeeping of one selected package (parallel to `Resolver::order`).
struct Sel<'a> {
    origin: Origin,
    /// Index (in `order`) of the package whose relation brought this one in.
    parent: Option<usize>,
    /// The relation alternative that was followed.
    dep: Option<&'a Dep>,
    /// Selected as a provider of `dep.name` rather than as that name itself.
    via_provider: bool,
    /// Choice points (indices in the stack) this selection depends on.
    culprits: BTreeSet<usize>,
}

/// One way to satisfy a group.
#[derive(Clone, Copy)]
struct Opt<'a> {
    id: PkgId,
    dep: &'a Dep,
    via_provider: bool,
}

struct ChoicePoint<'a> {
    /// State to restore: `order` length and the group being processed.
    order_len: usize,
    cursor: usize,
    group: usize,
    options: Vec<Opt<'a>>,
    next: usize,
    /// Culprits of the group itself (its holder's and those of blocked options).
    base: BTreeSet<usize>,
    /// `base` plus the culprits of every failure below this point.
    conflict_set: BTreeSet<usize>,
    /// The first failure met below this point: reported if all its options fail.
    error: Option<ResolveError>,
}

enum Outcome<'a> {
    Satisfied,
    Options(Vec<Opt<'a>>, BTreeSet<usize>),
    Fail(String, BTreeSet<usize>),
}

/// A conflict found between a package and the current state.
struct Hit {
    holder: String,
    other: String,
    kind: RelationKind,
    dep: String,
    culprits: BTreeSet<usize>,
}

impl Hit {
    fn describe(&self) -> String {
        format!("{} {} {} ({}: {})", self.holder, self.kind.verb(), self.other, self.kind, self.dep)
    }
    fn into_error(self) -> ResolveError {
        ResolveError::Conflict { a: self.holder, b: self.other, kind: self.kind, relation: self.dep }
    }
}

enum Satisfier {
    Selected(usize),
    Installed,
}

struct Resolver<'a> {
    u: &'a Universe,
    installed: Vec<Installed<'a>>,
    inst_by_name: HashMap<&'a str, Vec<usize>>,
    inst_provided: HashMap<&'a str, Vec<(usize, usize)>>,
    inst_conflicts_on: HashMap<&'a str, Vec<(usize, RelationKind, &'a Dep)>>,

    order: Vec<PkgId>,
    sel: Vec<Sel<'a>>,
    by_name: HashMap<&'a str, usize>,
    provided: HashMap<&'a str, Vec<(usize, usize)>>,
    conflicts_on: HashMap<&'a str, Vec<(usize, RelationKind, &'a Dep)>>,

    stack: Vec<ChoicePoint<'a>>,
    first_error: Option<ResolveError>,
    backjumps: usize,
    work_after_failure: usize,
}

fn relations(p: &Package) -> impl Iterator<Item = (RelationKind, &Dep)> {
    p.conflicts.iter().map(|d| (RelationKind::Conflicts, d)).chain(p.breaks.iter().map(|d| (RelationKind::Breaks, d)))
}

fn group_at(p: &Package, i: usize) -> Option<&[Dep]> {
    match p.pre_depends.get(i) {
        Some(g) => Some(g),
        None => p.depends.get(i - p.pre_depends.len()).map(Vec::as_slice),
    }
}

impl<'a> Resolver<'a> {
    fn new(u: &'a Universe, installed: &'a [(String, Version, String)]) -> Resolver<'a> {
        let mut r = Resolver {
            u,
            installed: Vec::new(),
            inst_by_name: HashMap::new(),
            inst_provided: HashMap::new(),
            inst_conflicts_on: HashMap::new(),
            order: Vec::new(),
            sel: Vec::new(),
            by_name: HashMap::new(),
            provided: HashMap::new(),
            conflicts_on: HashMap::new(),
            stack: Vec::new(),
            first_error: None,
            backjumps: 0,
            work_after_failure: 0,
        };
        for (i, (name, version, arch)) in installed.iter().enumerate() {
            let pkg = u.candidates(name).iter().map(|&id| u.get(id)).find(|p| &p.version == version && &p.architecture == arch);
            r.inst_by_name.entry(name.as_str()).or_default().push(i);
            if let Some(p) = pkg {
                for (j, prov) in p.provides.iter().enumerate() {
                    r.inst_provided.entry(&prov.name).or_default().push((i, j));
                }
                for (kind, d) in relations(p) {
                    r.inst_conflicts_on.entry(&d.name).or_default().push((i, kind, d));
                }
            }
            r.installed.push(Installed { name, version, arch, pkg });
        }
        r
    }

    fn pkg(&self, idx: usize) -> &'a Package {
        self.u.get(self.order[idx])
    }

    /// An installed package still counts unless a selected package of its name replaces it.
    fn inst_active(&self, i: usize) -> bool {
        let inst = &self.installed[i];
        !(self.u.native_like(inst.arch) && self.by_name.contains_key(inst.name))
    }

    fn installed_named(&self, name: &str) -> impl Iterator<Item = &Installed<'a>> + '_ {
        self.inst_by_name.get(name).into_iter().flatten().filter(|&&i| self.inst_active(i)).map(|&i| &self.installed[i])
    }

    // --- state changes --------------------------------------------------------------------

    fn select(&mut self, id: PkgId, sel: Sel<'a>) {
        let p = self.u.get(id);
        let idx = self.order.len();
        self.order.push(id);
        self.sel.push(sel);
        self.by_name.insert(&p.name, idx);
        for (j, prov) in p.provides.iter().enumerate() {
            self.provided.entry(&prov.name).or_default().push((idx, j));
        }
        for (kind, d) in relations(p) {
            self.conflicts_on.entry(&d.name).or_default().push((idx, kind, d));
        }
    }

    fn truncate(&mut self, len: usize) {
        while self.order.len() > len {
            let Some(id) = self.order.pop() else { break };
            self.sel.pop();
            let p = self.u.get(id);
            self.by_name.remove(p.name.as_str());
            for prov in &p.provides {
                if let Some(v) = self.provided.get_mut(prov.name.as_str()) {
                    v.pop();
                }
            }
            for (_, d) in relations(p) {
                if let Some(v) = self.conflicts_on.get_mut(d.name.as_str()) {
                    v.pop();
                }
            }
        }
    }

    // --- queries --------------------------------------------------------------------------

    /// What already meets `d`, if anything.
    fn satisfier(&self, d: &Dep) -> Option<Satisfier> {
        let u = self.u;
        let qual = d.arch.as_ref();
        if let Some(&idx) = self.by_name.get(d.name.as_str()) {
            let p = self.pkg(idx);
            if u.arch_ok(qual, &p.architecture, p.multi_arch) && version_ok(d, &p.version) {
                return Some(Satisfier::Selected(idx));
            }
        }
        if self.installed_named(&d.name).any(|i| u.arch_ok(qual, i.arch, i.multi_arch()) && version_ok(d, i.version)) {
            return Some(Satisfier::Installed);
        }
        for &(idx, j) in self.provided.get(d.name.as_str()).into_iter().flatten() {
            let p = self.pkg(idx);
            if u.arch_ok(qual, &p.architecture, p.multi_arch) && provide_ok(d, p.provides[j].version.as_ref()) {
                return Some(Satisfier::Selected(idx));
            }
        }
        for &(i, j) in self.inst_provided.get(d.name.as_str()).into_iter().flatten() {
            let inst = &self.installed[i];
            if !self.inst_active(i) {
                continue;
            }
            if let Some(p) = inst.pkg {
                if u.arch_ok(qual, inst.arch, p.multi_arch) && provide_ok(d, p.provides[j].version.as_ref()) {
                    return Some(Satisfier::Installed);
                }
            }
        }
        None
    }

    /// The first conflict (or break) between `c`, were it selected, and the current state;
    /// its `culprits` are those of every conflicting selected package, not only the first.
    fn conflict(&self, c: &'a Package) -> Option<Hit> {
        let mut first: Option<Hit> = None;
        let mut culprits = BTreeSet::new();
        let mut record = |holder: String, other: String, kind, d: &Dep, found: Option<usize>| {
            if let Some(idx) = found {
                culprits.extend(self.sel[idx].culprits.iter().copied());
            }
            first.get_or_insert_with(|| Hit { holder, other, kind, dep: d.to_string(), culprits: BTreeSet::new() });
        };
        // Relations `c` holds.
        for (kind, d) in relations(c) {
            if d.name != c.name {
                if let Some(&idx) = self.by_name.get(d.name.as_str()) {
                    let t = self.pkg(idx);
                    if version_ok(d, &t.version) {
                        record(label(c), label(t), kind, d, Some(idx));
                    }
                }
                for i in self.installed_named(&d.name).filter(|i| version_ok(d, i.version)) {
                    record(label(c), i.label(), kind, d, None);
                }
            }
            for &(idx, j) in self.provided.get(d.name.as_str()).into_iter().flatten() {
                let t = self.pkg(idx);
                if t.name != c.name && provide_ok(d, t.provides[j].version.as_ref()) {
                    record(label(c), label(t), kind, d, Some(idx));
                }
            }
            for &(i, j) in self.inst_provided.get(d.name.as_str()).into_iter().flatten() {
                let inst = &self.installed[i];
                let Some(t) = inst.pkg else { continue };
                if self.inst_active(i) && inst.name != c.name && provide_ok(d, t.provides[j].version.as_ref()) {
                    record(label(c), inst.label(), kind, d, None);
                }
            }
        }
        // Relations held against `c`, by its name or by a name it provides.
        let targets =
            std::iter::once((c.name.as_str(), None)).chain(c.provides.iter().map(|p| (p.name.as_str(), Some(p.version.as_ref()))));
        for (name, provide) in targets {
            let matches = |d: &Dep| match provide {
                None => version_ok(d, &c.version),
                Some(pv) => provide_ok(d, pv),
            };
            for &(idx, kind, d) in self.conflicts_on.get(name).into_iter().flatten() {
                let h = self.pkg(idx);
                if h.name != c.name && matches(d) {
                    record(label(h), label(c), kind, d, Some(idx));
                }
            }
            for &(i, kind, d) in self.inst_conflicts_on.get(name).into_iter().flatten() {
                let inst = &self.installed[i];
                if self.inst_active(i) && inst.name != c.name && matches(d) {
                    record(inst.label(), label(c), kind, d, None);
                }
            }
        }
        first.map(|hit| Hit { culprits, ..hit })
    }

    /// `requested`, `essential`, or `curl → libcurl4` (names, with virtual hops).
    fn reason_chain(&self, idx: usize) -> String {
        let mut parts = Vec::new();
        let mut cur = Some(idx);
        while let Some(i) = cur {
            let s = &self.sel[i];
            let name = &self.pkg(i).name;
            match (s.dep, s.via_provider) {
                (Some(d), true) => parts.push(format!("{} → {name}", d.name)),
                _ => parts.push(name.clone()),
            }
            cur = s.parent;
        }
        parts.reverse();
        parts.join(" → ")
    }

    /// For errors: the requested name, then each relation followed down to `idx`.
    fn error_chain(&self, idx: usize) -> Vec<String> {
        let mut parts = Vec::new();
        let mut cur = Some(idx);
        while let Some(i) = cur {
            let s = &self.sel[i];
            let p = self.pkg(i);
            parts.push(match s.dep {
                None => p.name.clone(),
                Some(d) if s.via_provider => format!("{d} → {}", p.name),
                Some(d) => d.to_string(),
            });
            cur = s.parent;
        }
        parts.reverse();
        parts
    }

    fn origin_text(&self, idx: usize) -> String {
        match self.sel[idx].origin {
            Origin::Requested => "requested".to_string(),
            Origin::Essential => "essential".to_string(),
            Origin::Dependency => self.reason_chain(idx),
        }
    }

    // --- one group ------------------------------------------------------------------------

    fn evaluate(&self, group: &'a [Dep]) -> Outcome<'a> {
        if group.iter().any(|d| self.satisfier(d).is_some()) {
            return Outcome::Satisfied;
        }
        let mut options = Vec::new();
        let mut blockers = BTreeSet::new();
        let mut details = Vec::new();
        for d in group {
            let before = options.len();
            let notes = self.options_for(d, &mut options, &mut blockers);
            if options.len() == before {
                details.push((d, notes));
            }
        }
        if !options.is_empty() {
            return Outcome::Options(options, blockers);
        }
        let detail = if group.len() == 1 {
            details.into_iter().flat_map(|(_, n)| n).collect::<Vec<_>>().join("; ")
        } else {
            details.into_iter().map(|(d, n)| format!("{d}: {}", n.join("; "))).collect::<Vec<_>>().join("; ")
        };
        Outcome::Fail(detail, blockers)
    }

    /// Appends the ways of meeting `d` to `out`; returns notes on why others are not.
    fn options_for(&self, d: &'a Dep, out: &mut Vec<Opt<'a>>, blockers: &mut BTreeSet<usize>) -> Vec<String> {
        let u = self.u;
        let mut notes = Vec::new();
        if let Some(arch) = u.foreign_qualifier(d) {
            notes.push(format!("no candidate for architecture {arch} (only {} and all are available)", u.native_arch));
            return notes;
        }
        let qual = d.arch.as_ref();

        // The real package of that name.
        let cands = u.candidates(&d.name);
        if let Some(&idx) = self.by_name.get(d.name.as_str()) {
            notes.push(format!("{} is already selected ({})", label(self.pkg(idx)), self.origin_text(idx)));
            blockers.extend(self.sel[idx].culprits.iter().copied());
        } else if !cands.is_empty() {
            let best = cands
                .iter()
                .map(|&id| (id, u.get(id)))
                .find(|(_, p)| u.arch_ok(qual, &p.architecture, p.multi_arch) && version_ok(d, &p.version));
            match best {
                None => {
                    let mut available: Vec<String> = Vec::new();
                    for &id in cands {
                        let v = u.get(id).version.to_string();
                        if !available.contains(&v) {
                            available.push(v);
                        }
                    }
                    notes.push(format!("no version matches (available: {})", available.join(", ")));
                }
                Some((id, p)) => {
                    if let Some(i) = self.installed_named(&d.name).find(|i| u.native_like(i.arch) && i.version > &p.version) {
                        notes.push(format!("{} would have to be downgraded to {}", i.label(), p.version));
                    } else if let Some(h) = self.conflict(p) {
                        notes.push(h.describe());
                        blockers.extend(h.culprits);
                    } else {
                        out.push(Opt { id, dep: d, via_provider: false });
                    }
                }
            }
        }

        // Packages providing that name.
        let mut seen: Vec<&str> = Vec::new();
        let mut unmatched: Vec<&str> = Vec::new();
        for &(id, j) in u.providers(&d.name) {
            let p = u.get(id);
            if seen.contains(&p.name.as_str()) {
                continue;
            }
            if !provide_ok(d, p.provides[j].version.as_ref()) || !u.arch_ok(qual, &p.architecture, p.multi_arch) {
                if !unmatched.contains(&p.name.as_str()) {
                    unmatched.push(&p.name);
                }
                continue;
            }
            seen.push(&p.name);
            if let Some(&idx) = self.by_name.get(p.name.as_str()) {
                notes.push(format!("provider {} is already selected ({})", label(self.pkg(idx)), self.origin_text(idx)));
                blockers.extend(self.sel[idx].culprits.iter().copied());
            } else if let Some(h) = self.conflict(p) {
                notes.push(h.describe());
                blockers.extend(h.culprits);
            } else {
                out.push(Opt { id, dep: d, via_provider: true });
            }
        }
        unmatched.retain(|n| !seen.contains(n));
        if !unmatched.is_empty() {
            const SHOWN: usize = 5;
            let mut names = unmatched.iter().take(SHOWN).copied().collect::<Vec<_>>().join(", ");
            if unmatched.len() > SHOWN {
                names.push_str(&format!(" and {} more", unmatched.len() - SHOWN));
            }
            notes.push(format!("provided by {names}, but not with a matching version"));
        }
        if notes.is_empty() && cands.is_empty() && seen.is_empty() {
            notes.push("no candidate".to_string());
        }
        notes
    }

    // --- requests -------------------------------------------------------------------------

    fn add_requests(&mut self, requests: &[Request], options: &ResolveOptions) -> Result<(), ResolveError> {
        let u = self.u;
        // Duplicates: the same pin twice is fine, two different ones are not.
        let mut seen: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        let mut virtuals: Vec<&str> = Vec::new();
        let native_suffix = format!(":{}", u.native_arch);
        for req in requests {
            let name = req.name.strip_suffix(native_suffix.as_str()).unwrap_or(&req.name);
            let pin = req.version.as_deref();
            match seen.get(name) {
                Some(&prev) if prev == pin => continue,
                Some(&prev) => {
                    return Err(ResolveError::ConflictingRequests {
                        name: name.to_string(),
                        first: prev.map_or_else(|| "unpinned".to_string(), |v| format!("={v}")),
                        second: pin.map_or_else(|| "unpinned".to_string(), |v| format!("={v}")),
                    })
                }
                None => {
                    seen.insert(name, pin);
                }
            }

            let cands = u.candidates(name);
            let installed = self.installed_named(name).filter(|i| u.native_like(i.arch)).map(|i| i.version).max();
            let pinned = match pin {
                None => None,
                Some(v) => Some(v.parse::<Version>().map_err(|_| no_version(u, name, v))?),
            };
            let Some(&best) = cands.first() else {
                let satisfied = match (&pinned, installed) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(v), Some(iv)) => iv == v,
                };
                if satisfied {
                    continue;
                }
                if let Some(v) = pin {
                    return Err(no_version(u, name, v));
                }
                if u.providers(name).is_empty() {
                    return Err(ResolveError::UnknownPackage { name: name.to_string(), suggestion: u.suggest(name) });
                }
                virtuals.push(name);
                continue;
            };
            let chosen = match (&pinned, pin) {
                (Some(v), Some(text)) => {
                    cands.iter().copied().find(|&id| &u.get(id).version == v).ok_or_else(|| no_version(u, name, text))?
                }
                _ => best,
            };
            let p = u.get(chosen);
            let already = match (&pinned, installed) {
                (_, None) => false,
                (Some(v), Some(iv)) => iv == v,
                (None, Some(iv)) => iv >= &p.version,
            };
            if already || self.by_name.contains_key(name) {
                continue;
            }
            if let Some(h) = self.conflict(p) {
                return Err(h.into_error());
            }
            self.select(chosen, root(Origin::Requested));
        }

        for name in virtuals {
            let dep = Dep { name: name.to_string(), arch: None, constraint: None };
            if self.satisfier(&dep).is_some() {
                continue;
            }
            let mut names: Vec<&str> = Vec::new();
            let mut first: Option<PkgId> = None;
            let mut notes = Vec::new();
            let mut seen_names: Vec<&str> = Vec::new();
            for &(id, _) in u.providers(name) {
                let p = u.get(id);
                if seen_names.contains(&p.name.as_str()) {
                    continue;
                }
                seen_names.push(&p.name);
                match self.conflict(p) {
                    Some(h) => notes.push(h.describe()),
                    None => {
                        names.push(&p.name);
                        first.get_or_insert(id);
                    }
                }
            }
            match (first, names.len()) {
                (Some(id), 1) => self.select(id, root(Origin::Requested)),
                (_, 0) => {
                    return Err(ResolveError::Unsatisfiable { chain: Vec::new(), relation: name.to_string(), detail: notes.join("; ") })
                }
                _ => {
                    let mut providers: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                    providers.sort();
                    return Err(ResolveError::AmbiguousVirtual { name: name.to_string(), providers });
                }
            }
        }

        if options.add_essential {
            let mut names: Vec<&String> = u.candidates.keys().collect();
            names.sort();
            for name in names {
                let Some(&id) = u.candidates(name).first() else {
                    continue;
                };
                let p = u.get(id);
                if !p.essential || self.by_name.contains_key(name.as_str()) || self.installed_named(name).next().is_some() {
                    continue;
                }
                if let Some(h) = self.conflict(p) {
                    return Err(h.into_error());
                }
                self.select(id, root(Origin::Essential));
            }
        }
        Ok(())
    }

    // --- the closure ----------------------------------------------------------------------

    fn run(&mut self) -> Result<(), ResolveError> {
        let mut cursor = 0;
        let mut gi = 0;
        while cursor < self.order.len() {
            let p = self.pkg(cursor);
            let Some(group) = group_at(p, gi) else {
                cursor += 1;
                gi = 0;
                continue;
            };
            if self.first_error.is_some() {
                self.work_after_failure += 1;
            }
            match self.evaluate(group) {
                Outcome::Satisfied => gi += 1,
                Outcome::Options(options, blockers) => {
                    let Some(&first) = options.first() else {
                        gi += 1;
                        continue;
                    };
                    let mut base = self.sel[cursor].culprits.clone();
                    base.extend(blockers);
                    let mut culprits = base.clone();
                    if options.len() > 1 {
                        culprits.insert(self.stack.len());
                        self.stack.push(ChoicePoint {
                            order_len: self.order.len(),
                            cursor,
                            group: gi,
                            options: options.clone(),
                            next: 1,
                            conflict_set: base.clone(),
                            base,
                            error: None,
                        });
                    }
                    self.apply(first, cursor, culprits);
                    gi += 1;
                }
                Outcome::Fail(detail, blockers) => {
                    let err = ResolveError::Unsatisfiable { chain: self.error_chain(cursor), relation: group_text(group), detail };
                    if self.first_error.is_none() {
                        self.first_error = Some(err.clone());
                    }
                    let mut failure = self.sel[cursor].culprits.clone();
                    failure.extend(blockers);
                    (cursor, gi) = self.backjump(failure, err)?;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, opt: Opt<'a>, parent: usize, culprits: BTreeSet<usize>) {
        self.select(
            opt.id,
            Sel { origin: Origin::Dependency, parent: Some(parent), dep: Some(opt.dep), via_provider: opt.via_provider, culprits },
        );
    }

    /// Goes back to the latest choice point among `failure` (the choices the failure depends
    /// on) that has options left, takes its next option, and returns where to continue.
    /// When nothing is left to try, the error is the first failure met below the outermost
    /// exhausted choice point (the one on the path apt itself would have taken); when
    /// `failure` is empty (no choice could help), it is `err` itself.
    fn backjump(&mut self, mut failure: BTreeSet<usize>, mut err: ResolveError) -> Result<(usize, usize), ResolveError> {
        loop {
            let Some(&target) = failure.last() else {
                return Err(err);
            };
            self.backjumps += 1;
            if self.backjumps > MAX_BACKJUMPS || self.work_after_failure > MAX_WORK_AFTER_FAILURE {
                return Err(self.first_error.take().unwrap_or(err));
            }
            self.stack.truncate(target + 1);
            let Some(cp) = self.stack.get_mut(target) else {
                return Err(err);
            };
            failure.remove(&target);
            cp.conflict_set.extend(failure.iter().copied());
            let first = cp.error.take().unwrap_or(err);
            let (order_len, cursor, group) = (cp.order_len, cp.cursor, cp.group);
            if let Some(&opt) = cp.options.get(cp.next) {
                cp.next += 1;
                cp.error = Some(first);
                let mut culprits = cp.base.clone();
                culprits.insert(target);
                self.truncate(order_len);
                self.apply(opt, cursor, culprits);
                return Ok((cursor, group + 1));
            }
            err = first;
            failure = std::mem::take(&mut cp.conflict_set);
            failure.remove(&target);
            self.stack.pop();
            self.truncate(order_len);
        }
    }

    // --- final check and result ------------------------------------------------------------

    /// Re-checks the whole selection (an upgrade of an installed package may have broken a
    /// relation met earlier) and collects every reason of every package.
    fn finish(self) -> Result<Resolution, ResolveError> {
        let mut reasons: BTreeMap<PkgId, Vec<String>> = BTreeMap::new();
        for idx in 0..self.order.len() {
            reasons.insert(self.order[idx], vec![self.origin_text(idx)]);
        }
        for idx in 0..self.order.len() {
            let p = self.pkg(idx);
            let groups = p.pre_depends.iter().chain(p.depends.iter());
            for group in groups {
                let found = group.iter().find_map(|d| self.satisfier(d).map(|s| (d, s)));
                match found {
                    Some((d, Satisfier::Selected(s))) if s != idx => {
                        let name = &self.pkg(s).name;
                        let hop = if &d.name == name { name.clone() } else { format!("{} → {name}", d.name) };
                        let chain = format!("{} → {hop}", self.reason_chain(idx));
                        if let Some(v) = reasons.get_mut(&self.order[s]) {
                            v.push(chain);
                        }
                    }
                    Some(_) => {}
                    None => {
                        let detail = group
                            .iter()
                            .filter_map(|d| self.by_name.get(d.name.as_str()))
                            .map(|&s| format!("{} is selected ({})", label(self.pkg(s)), self.origin_text(s)))
                            .collect::<Vec<_>>();
                        let detail = if detail.is_empty() { "not met by the final selection".to_string() } else { detail.join("; ") };
                        return Err(ResolveError::Unsatisfiable { chain: self.error_chain(idx), relation: group_text(group), detail });
                    }
                }
            }
            if let Some(h) = self.conflict(p) {
                return Err(h.into_error());
            }
        }
        for v in reasons.values_mut() {
            let mut rest = v.split_off(1.min(v.len()));
            rest.sort();
            rest.dedup();
            rest.retain(|r| !v.contains(r));
            v.extend(rest);
        }
        let u = self.u;
        let mut packages = self.order.clone();
        packages.sort_by(|&a, &b| {
            let (pa, pb) = (u.get(a), u.get(b));
            pa.name
                .cmp(&pb.name)
                .then_with(|| pa.version.cmp(&pb.version))
                .then_with(|| pa.architecture.cmp(&pb.architecture))
                .then(a.cmp(&b))
        });
        Ok(Resolution { packages, reasons })
    }
}

fn root<'a>(origin: Origin) -> Sel<'a> {
    Sel { origin, parent: None, dep: None, via_provider: false, culprits: BTreeSet::new() }
}

fn no_version(u: &Universe, name: &str, version: &str) -> ResolveError {
    let mut available: Vec<String> = Vec::new();
    for &id in u.candidates(name) {
        let v = u.get(id).version.to_string();
        if !available.contains(&v) {
            available.push(v);
        }
    }
    ResolveError::NoVersion { name: name.to_string(), version: version.to_string(), available }
}

/// Resolves `requests` against `u`, on top of the `installed` packages of a base image
/// (`(name, version, architecture)`). See the module documentation for the semantics.
pub fn resolve(
    u: &Universe,
    requests: &[Request],
    installed: &[(String, Version, String)],
    options: &ResolveOptions,
) -> Result<Resolution, ResolveError> {
    let mut r = Resolver::new(u, installed);
    r.add_requests(requests, options)?;
    r.run()?;
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- helpers --------------------------------------------------------------------------

    fn pkg(name: &str, version: &str, arch: &str) -> Package {
        Package {
            name: name.to_string(),
            version: version.parse().expect("test version"),
            architecture: arch.to_string(),
            multi_arch: MultiArch::No,
            essential: false,
            priority: None,
            section: None,
            source: None,
            homepage: None,
            maintainer: None,
            description: None,
            depends: Vec::new(),
            pre_depends: Vec::new(),
            provides: Vec::new(),
            conflicts: Vec::new(),
            breaks: Vec::new(),
            replaces: Vec::new(),
            filename: format!("pool/main/{name}_{version}_{arch}.deb"),
            size: 0,
            sha256: String::new(),
            installed_size: None,
            repository: 0,
        }
    }

    trait Build {
        fn depends(self, s: &str) -> Self;
        fn pre_depends(self, s: &str) -> Self;
        fn provides(self, s: &str) -> Self;
        fn conflicts(self, s: &str) -> Self;
        fn breaks(self, s: &str) -> Self;
        fn essential(self) -> Self;
        fn priority(self, p: &str) -> Self;
        fn repo(self, r: usize) -> Self;
        fn filename(self, f: &str) -> Self;
        fn multi_arch(self, ma: MultiArch) -> Self;
    }

    impl Build for Package {
        fn depends(mut self, s: &str) -> Self {
            self.depends = parse_relations(s).expect("test depends");
            self
        }
        fn pre_depends(mut self, s: &str) -> Self {
            self.pre_depends = parse_relations(s).expect("test pre-depends");
            self
        }
        fn provides(mut self, s: &str) -> Self {
            self.provides = parse_provides(s).expect("test provides");
            self
        }
        fn conflicts(mut self, s: &str) -> Self {
            self.conflicts = parse_relation_list(s).expect("test conflicts");
            self
        }
        fn breaks(mut self, s: &str) -> Self {
            self.breaks = parse_relation_list(s).expect("test breaks");
            self
        }
        fn essential(mut self) -> Self {
            self.essential = true;
            self
        }
        fn priority(mut self, p: &str) -> Self {
            self.priority = Some(p.to_string());
            self
        }
        fn repo(mut self, r: usize) -> Self {
            self.repository = r;
            self
        }
        fn filename(mut self, f: &str) -> Self {
            self.filename = f.to_string();
            self
        }
        fn multi_arch(mut self, ma: MultiArch) -> Self {
            self.multi_arch = ma;
            self
        }
    }

    fn universe(packages: Vec<Package>) -> Universe {
        Universe::new(packages, "amd64")
    }

    fn v(s: &str) -> Version {
        s.parse().expect("test version")
    }

    fn inst(name: &str, version: &str, arch: &str) -> (String, Version, String) {
        (name.to_string(), v(version), arch.to_string())
    }

    fn requests(reqs: &[&str]) -> Vec<Request> {
        reqs.iter().map(|r| Request::parse(r)).collect()
    }

    fn resolve_with(
        u: &Universe,
        reqs: &[&str],
        installed: &[(String, Version, String)],
        options: &ResolveOptions,
    ) -> Result<Vec<String>, ResolveError> {
        let res = resolve(u, &requests(reqs), installed, options)?;
        Ok(res.packages.iter().map(|&id| u.get(id).id()).collect())
    }

    /// `name=version` of each package to install.
    fn ok(u: &Universe, reqs: &[&str]) -> Vec<String> {
        match resolve_with(u, reqs, &[], &ResolveOptions::default()) {
            Ok(v) => v,
            Err(e) => panic!("resolution failed: {e}"),
        }
    }

    /// The error message.
    fn err(u: &Universe, reqs: &[&str]) -> String {
        err_with(u, reqs, &[])
    }

    fn err_with(u: &Universe, reqs: &[&str], installed: &[(String, Version, String)]) -> String {
        match resolve_with(u, reqs, installed, &ResolveOptions::default()) {
            Ok(v) => panic!("expected a failure, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn reasons_of(u: &Universe, reqs: &[&str], name: &str) -> Vec<String> {
        let res = resolve(u, &requests(reqs), &[], &ResolveOptions::default()).expect("resolves");
        res.reasons.iter().find(|(id, _)| u.get(**id).name == name).map(|(_, r)| r.clone()).unwrap_or_default()
    }

    // --- relation parsing -----------------------------------------------------------------

    #[test]
    fn parses_relations() {
        let deps = parse_relations("libc6 (>= 2.34) | libc6-dev, foo:any, bar:native (<<2), baz:i386,").expect("parses");
        assert_eq!(deps.len(), 4);
        assert_eq!(deps[0].len(), 2);
        assert_eq!(deps[0][0].name, "libc6");
        assert_eq!(deps[0][0].constraint, Some((Op::Ge, v("2.34"))));
        assert_eq!(deps[0][1].constraint, None);
        assert_eq!(deps[1][0].arch, Some(ArchQual::Any));
        assert_eq!(deps[2][0].arch, Some(ArchQual::Native));
        assert_eq!(deps[2][0].constraint, Some((Op::Lt, v("2"))));
        assert_eq!(deps[3][0].arch, Some(ArchQual::Arch("i386".into())));
        let shown: Vec<String> = deps.iter().map(|g| group_text(g)).collect();
        assert_eq!(shown, ["libc6 (>= 2.34) | libc6-dev", "foo:any", "bar:native (<< 2)", "baz:i386"]);
    }

    #[test]
    fn parses_obsolete_operators_and_provides() {
        let d = parse_relation("foo (< 1.0)").expect("parses");
        assert_eq!(d.constraint, Some((Op::Le, v("1.0"))));
        let d = parse_relation("foo (> 1:1.0-1)").expect("parses");
        assert_eq!(d.constraint, Some((Op::Ge, v("1:1.0-1"))));
        let p = parse_provides("awk, libfoo-abi (= 2.1)").expect("parses");
        assert_eq!(p[0], Provide { name: "awk".into(), version: None });
        assert_eq!(p[1].version, Some(v("2.1")));
        assert!(parse_relations("").expect("empty is fine").is_empty());
    }

    #[test]
    fn rejects_bad_relations() {
        for bad in ["foo (>= )", "foo (~ 1)", "foo (>= 1", "a b", "foo:"] {
            assert!(parse_relations(bad).is_err(), "{bad} should not parse");
        }
        assert!(parse_relations("a,,b").is_ok());
        assert!(parse_relations("a | , b").is_err());
        let e = parse_provides("foo (>= 1)").expect_err("only = in provides");
        assert_eq!(e.to_string(), "invalid relation `foo (>= 1)`: a Provides may only carry `=`");
        let e = parse_relations("foo (>= 1").expect_err("unclosed");
        assert!(e.to_string().starts_with("invalid relation `foo (>= 1`: "), "{e}");
        // Architecture restrictions are dropped, as in Packages indexes.
        assert_eq!(parse_relations("foo [amd64]").expect("restrictions are ignored")[0][0].name, "foo");
    }

    // --- basics -------------------------------------------------------------------------------

    fn curl_universe() -> Vec<Package> {
        vec![
            pkg("curl", "7.88.1-10", "amd64").depends("libcurl4 (= 7.88.1-10), libc6 (>= 2.34)"),
            pkg("libcurl4", "7.88.1-10", "amd64").depends("libc6 (>= 2.34), libssl3 (>= 3.0.0)"),
            pkg("libssl3", "3.0.11-1", "amd64").depends("libc6 (>= 2.34)"),
            pkg("libc6", "2.36-9", "amd64"),
            pkg("unrelated", "1", "amd64"),
        ]
    }

    #[test]
    fn resolves_a_chain() {
        let u = universe(curl_universe());
        assert_eq!(ok(&u, &["curl"]), ["curl=7.88.1-10", "libc6=2.36-9", "libcurl4=7.88.1-10", "libssl3=3.0.11-1"]);
        assert_eq!(reasons_of(&u, &["curl"], "curl"), ["requested"]);
        assert_eq!(reasons_of(&u, &["curl"], "libssl3"), ["curl → libcurl4 → libssl3"]);
        assert_eq!(reasons_of(&u, &["curl"], "libc6"), ["curl → libc6", "curl → libcurl4 → libc6", "curl → libcurl4 → libssl3 → libc6"]);
    }

    #[test]
    fn empty_request_resolves_to_nothing() {
        let u = universe(curl_universe());
        assert!(ok(&u, &[]).is_empty());
    }

    #[test]
    fn duplicate_requests_are_merged_and_different_pins_refused() {
        let u = universe(vec![pkg("foo", "1", "all"), pkg("foo", "2", "all")]);
        assert_eq!(ok(&u, &["foo", "foo"]), ["foo=2"]);
        assert_eq!(err(&u, &["foo=1", "foo=2"]), "`foo` is requested as both =1 and =2");
    }

    #[test]
    fn unknown_package_suggests_a_name() {
        let u = universe(curl_universe());
        assert_eq!(err(&u, &["curll"]), "unknown package `curll`; did you mean `curl`?");
        assert_eq!(err(&u, &["libssl"]), "unknown package `libssl`; did you mean `libssl3`?");
        assert_eq!(err(&u, &["zzzzzzzz"]), "unknown package `zzzzzzzz`");
    }

    #[test]
    fn request_may_name_the_native_architecture() {
        let u = universe(curl_universe());
        assert_eq!(ok(&u, &["libc6:amd64"]), ["libc6=2.36-9"]);
        assert_eq!(err(&u, &["libc6:i386"]), "unknown package `libc6:i386`; did you mean `libc6`?");
    }

    #[test]
    fn other_architectures_are_not_candidates() {
        let u = universe(vec![pkg("foo", "1", "i386"), pkg("bar", "1", "all"), pkg("baz", "1", "amd64")]);
        assert_eq!(err(&u, &["foo"]), "unknown package `foo`");
        assert_eq!(ok(&u, &["bar", "baz"]), ["bar=1", "baz=1"]);
    }

    // --- alternatives ---------------------------------------------------------------------

    #[test]
    fn first_satisfiable_alternative_wins() {
        let u = universe(vec![
            pkg("a", "1", "all").depends("missing | b (>= 2) | c | d"),
            pkg("b", "1", "all"),
            pkg("c", "1", "all"),
            pkg("d", "1", "all"),
        ]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "c=1"]);
    }

    #[test]
    fn first_alternative_wins_when_all_are_available() {
        let u = universe(vec![pkg("a", "1", "all").depends("b | c"), pkg("b", "1", "all"), pkg("c", "1", "all")]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "b=1"]);
    }

    #[test]
    fn selected_later_alternative_wins_over_adding_the_first() {
        let u = universe(vec![pkg("a", "1", "all").depends("b | c"), pkg("b", "1", "all"), pkg("c", "1", "all")]);
        assert_eq!(ok(&u, &["a", "c"]), ["a=1", "c=1"]);
        assert_eq!(ok(&u, &["c", "a"]), ["a=1", "c=1"]);
    }

    #[test]
    fn installed_later_alternative_wins_over_adding_the_first() {
        let u = universe(vec![pkg("a", "1", "all").depends("b | c"), pkg("b", "1", "all"), pkg("c", "1", "all")]);
        let got = resolve_with(&u, &["a"], &[inst("c", "0.5", "amd64")], &ResolveOptions::default());
        assert_eq!(got, Ok(vec!["a=1".to_string()]));
    }

    #[test]
    fn failing_alternatives_are_all_explained() {
        let u = universe(vec![pkg("a", "1", "all").depends("b (>= 2) | c"), pkg("b", "1-1", "all")]);
        assert_eq!(err(&u, &["a"]), "a → b (>= 2) | c: b (>= 2): no version matches (available: 1-1); c: no candidate");
    }

    #[test]
    fn versioned_dependency_takes_the_highest_matching_version() {
        let u = universe(vec![
            pkg("a", "1", "all").depends("foo (<< 2)"),
            pkg("foo", "2", "all"),
            pkg("foo", "1.5", "all"),
            pkg("foo", "1", "all"),
        ]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "foo=1.5"]);
    }

    // --- virtual packages -----------------------------------------------------------------

    #[test]
    fn virtual_package_with_one_provider() {
        let u = universe(vec![pkg("mutt", "2", "amd64").depends("mta"), pkg("exim", "4", "amd64").provides("mta")]);
        assert_eq!(ok(&u, &["mutt"]), ["exim=4", "mutt=2"]);
        assert_eq!(reasons_of(&u, &["mutt"], "exim"), ["mutt → mta → exim"]);
    }

    #[test]
    fn provider_choice_prefers_priority_then_name() {
        let providers = vec![
            pkg("alpha", "1", "all").provides("mta").priority("optional"),
            pkg("beta", "1", "all").provides("mta").priority("optional"),
            pkg("zeta", "1", "all").provides("mta").priority("important"),
            pkg("nopri", "1", "all").provides("mta"),
        ];
        let mut all = providers.clone();
        all.push(pkg("mutt", "1", "all").depends("mta"));
        assert_eq!(ok(&universe(all), &["mutt"]), ["mutt=1", "zeta=1"]);
        let mut without_zeta: Vec<Package> = providers.into_iter().filter(|p| p.name != "zeta").collect();
        without_zeta.push(pkg("mutt", "1", "all").depends("mta"));
        assert_eq!(ok(&universe(without_zeta), &["mutt"]), ["alpha=1", "mutt=1"]);
    }

    #[test]
    fn selected_provider_wins() {
        let u = universe(vec![
            pkg("mutt", "1", "all").depends("mta"),
            pkg("alpha", "1", "all").provides("mta").priority("required"),
            pkg("omega", "1", "all").provides("mta").priority("extra"),
        ]);
        assert_eq!(ok(&u, &["mutt", "omega"]), ["mutt=1", "omega=1"]);
    }

    #[test]
    fn real_package_beats_provider() {
        let u = universe(vec![
            pkg("a", "1", "all").depends("foo"),
            pkg("bar", "1", "all").provides("foo").priority("required"),
            pkg("foo", "1", "all").priority("extra"),
        ]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "foo=1"]);
    }

    #[test]
    fn versioned_provides_must_match() {
        let u = universe(vec![
            pkg("a", "1", "all").depends("foo (>= 2)"),
            pkg("p1", "1", "all").provides("foo (= 1.5)"),
            pkg("p2", "1", "all").provides("foo (= 2.1)"),
            pkg("p3", "1", "all").provides("foo"),
        ]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "p2=1"]);
    }

    #[test]
    fn unversioned_provide_does_not_satisfy_a_versioned_dependency() {
        let u = universe(vec![pkg("a", "1", "all").depends("foo (>= 1)"), pkg("p3", "1", "all").provides("foo")]);
        assert_eq!(err(&u, &["a"]), "a → foo (>= 1): provided by p3, but not with a matching version");
        // Even when the unversioned provider is already selected.
        assert_eq!(err(&u, &["p3", "a"]), "a → foo (>= 1): provided by p3, but not with a matching version");
    }

    #[test]
    fn versioned_provide_satisfies_an_unversioned_dependency() {
        let u = universe(vec![pkg("a", "1", "all").depends("foo"), pkg("p", "1", "all").provides("foo (= 3)")]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "p=1"]);
    }

    #[test]
    fn real_package_too_old_falls_back_to_versioned_provider() {
        let u = universe(vec![
            pkg("a", "1", "all").depends("foo (>= 2)"),
            pkg("foo", "1", "all"),
            pkg("bar", "1", "all").provides("foo (= 2)"),
        ]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "bar=1"]);
    }

    #[test]
    fn requested_virtual_package() {
        let one = universe(vec![pkg("exim", "4", "all").provides("mta")]);
        assert_eq!(ok(&one, &["mta"]), ["exim=4"]);
        let two = universe(vec![pkg("exim", "4", "all").provides("mta"), pkg("postfix", "3", "all").provides("mta")]);
        assert_eq!(err(&two, &["mta"]), "`mta` is a virtual package provided by exim, postfix; request one of them");
        assert_eq!(ok(&two, &["mta", "postfix"]), ["postfix=3"]);
        assert_eq!(err(&two, &["mta=1"]), "no version 1 of `mta`; available: none");
    }

    // --- versions, pins, repositories -----------------------------------------------------

    #[test]
    fn pin_selects_exact_version() {
        let u = universe(vec![pkg("foo", "1.0", "all"), pkg("foo", "2.0", "all")]);
        assert_eq!(ok(&u, &["foo"]), ["foo=2.0"]);
        assert_eq!(ok(&u, &["foo=1.0"]), ["foo=1.0"]);
    }

    #[test]
    fn missing_pin_lists_available_versions() {
        let u = universe(vec![pkg("foo", "1.1-1", "all"), pkg("foo", "1.2-4", "all")]);
        assert_eq!(err(&u, &["foo=1.2-3"]), "no version 1.2-3 of `foo`; available: 1.2-4, 1.1-1");
        assert_eq!(err(&u, &["foo=not a version"]), "no version not a version of `foo`; available: 1.2-4, 1.1-1");
        let e = resolve(&u, &requests(&["foo=9"]), &[], &ResolveOptions::default());
        assert!(matches!(e, Err(ResolveError::NoVersion { .. })));
    }

    #[test]
    fn pin_against_exact_dependency_is_a_clear_error() {
        let u = universe(vec![
            pkg("curl", "7.88.1-10", "amd64").depends("libcurl4 (= 7.88.1-10)"),
            pkg("libcurl4", "7.88.1-10", "amd64"),
            pkg("libcurl4", "7.88.1-9", "amd64"),
        ]);
        assert_eq!(
            err(&u, &["curl", "libcurl4=7.88.1-9"]),
            "curl → libcurl4 (= 7.88.1-10): libcurl4 7.88.1-9 is already selected (requested)"
        );
        assert_eq!(ok(&u, &["curl", "libcurl4=7.88.1-10"]), ["curl=7.88.1-10", "libcurl4=7.88.1-10"]);
    }

    #[test]
    fn highest_version_across_repositories() {
        let u = universe(vec![pkg("foo", "1.0-1", "amd64").repo(0), pkg("foo", "1.0-1+deb12u1", "amd64").repo(1)]);
        assert_eq!(ok(&u, &["foo"]), ["foo=1.0-1+deb12u1"]);
    }

    #[test]
    fn equal_versions_prefer_lowest_repository_then_filename() {
        let u = universe(vec![
            pkg("foo", "1", "amd64").repo(2).filename("a.deb"),
            pkg("foo", "1", "amd64").repo(1).filename("z.deb"),
            pkg("foo", "1", "amd64").repo(1).filename("m.deb"),
        ]);
        let res = resolve(&u, &requests(&["foo"]), &[], &ResolveOptions::default()).expect("resolves");
        let chosen = u.get(res.packages[0]);
        assert_eq!((chosen.repository, chosen.filename.as_str()), (1, "m.deb"));
    }

    #[test]
    fn epochs_order_versions() {
        let u = universe(vec![pkg("foo", "9.0", "all"), pkg("foo", "1:1.0", "all")]);
        assert_eq!(ok(&u, &["foo"]), ["foo=1:1.0"]);
    }

    // --- pre-depends ------------------------------------------------------------------------

    #[test]
    fn pre_depends_count() {
        let u = universe(vec![pkg("a", "1", "all").pre_depends("b (>= 1)").depends("c"), pkg("b", "1", "all"), pkg("c", "1", "all")]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "b=1", "c=1"]);
        let u = universe(vec![pkg("a", "1", "all").pre_depends("b (>= 2)"), pkg("b", "1", "all")]);
        assert_eq!(err(&u, &["a"]), "a → b (>= 2): no version matches (available: 1)");
    }

    // --- conflicts and breaks -------------------------------------------------------------

    #[test]
    fn direct_conflict_between_requests() {
        let u = universe(vec![pkg("curl", "7.88", "amd64").conflicts("foo"), pkg("foo", "1.0", "amd64")]);
        assert_eq!(err(&u, &["curl", "foo"]), "curl 7.88 conflicts with foo 1.0 (Conflicts: foo)");
        assert_eq!(err(&u, &["foo", "curl"]), "curl 7.88 conflicts with foo 1.0 (Conflicts: foo)");
        let e = resolve(&u, &requests(&["curl", "foo"]), &[], &ResolveOptions::default());
        assert!(matches!(e, Err(ResolveError::Conflict { kind: RelationKind::Conflicts, .. })));
    }

    #[test]
    fn versioned_conflict_only_applies_to_matching_versions() {
        let u = universe(vec![pkg("a", "1", "all").conflicts("b (<< 2)"), pkg("b", "1", "all"), pkg("b", "2", "all")]);
        assert_eq!(ok(&u, &["a", "b"]), ["a=1", "b=2"]);
        assert_eq!(err(&u, &["a", "b=1"]), "a 1 conflicts with b 1 (Conflicts: b (<< 2))");
    }

    #[test]
    fn conflict_through_a_virtual_package() {
        let u = universe(vec![
            pkg("a", "1", "all").conflicts("mta"),
            pkg("exim", "4", "all").provides("mta").conflicts("mta"),
            pkg("postfix", "3", "all").provides("mta").conflicts("mta"),
        ]);
        assert_eq!(err(&u, &["a", "exim"]), "a 1 conflicts with exim 4 (Conflicts: mta)");
        assert_eq!(err(&u, &["exim", "a"]), "a 1 conflicts with exim 4 (Conflicts: mta)");
        // A package does not conflict with itself through what it provides, but two
        // providers of a virtual name they both conflict with cannot be together.
        assert_eq!(ok(&u, &["exim"]), ["exim=4"]);
        assert_eq!(err(&u, &["exim", "postfix"]), "postfix 3 conflicts with exim 4 (Conflicts: mta)");
    }

    #[test]
    fn versioned_conflict_on_virtual_needs_versioned_provide() {
        let u = universe(vec![
            pkg("a", "1", "all").conflicts("abi (<< 2)"),
            pkg("old", "1", "all").provides("abi (= 1)"),
            pkg("new", "1", "all").provides("abi (= 2)"),
            pkg("plain", "1", "all").provides("abi"),
        ]);
        assert_eq!(err(&u, &["a", "old"]), "a 1 conflicts with old 1 (Conflicts: abi (<< 2))");
        assert_eq!(ok(&u, &["a", "new", "plain"]), ["a=1", "new=1", "plain=1"]);
    }

    #[test]
    fn conflicting_alternative_is_skipped() {
        let u = universe(vec![
            pkg("x", "1", "all").depends("a | b"),
            pkg("a", "1", "all").conflicts("y"),
            pkg("b", "1", "all"),
            pkg("y", "1", "all"),
        ]);
        assert_eq!(ok(&u, &["y", "x"]), ["b=1", "x=1", "y=1"]);
        // Broken by what is selected, the other way round.
        let u = universe(vec![
            pkg("x", "1", "all").depends("a | b"),
            pkg("a", "1", "all"),
            pkg("b", "1", "all"),
            pkg("y", "1", "all").breaks("a"),
        ]);
        assert_eq!(ok(&u, &["y", "x"]), ["b=1", "x=1", "y=1"]);
    }

    #[test]
    fn conflicting_provider_is_skipped() {
        let u = universe(vec![
            pkg("mutt", "1", "all").depends("mta"),
            pkg("exim", "4", "all").provides("mta").priority("important").conflicts("z"),
            pkg("postfix", "3", "all").provides("mta").priority("optional"),
            pkg("z", "1", "all"),
        ]);
        assert_eq!(ok(&u, &["z", "mutt"]), ["mutt=1", "postfix=3", "z=1"]);
        assert_eq!(ok(&u, &["mutt"]), ["exim=4", "mutt=1"]);
    }

    #[test]
    fn breaks_with_version_constraints() {
        let u = universe(vec![
            pkg("a", "1", "all").breaks("b (<< 2)"),
            pkg("b", "1", "all"),
            pkg("b", "2", "all"),
            pkg("c", "1", "all").depends("d"),
            pkg("d", "1", "all").breaks("b (<< 2)"),
        ]);
        assert_eq!(err(&u, &["a", "b=1"]), "a 1 breaks b 1 (Breaks: b (<< 2))");
        assert_eq!(ok(&u, &["a", "b"]), ["a=1", "b=2"]);
        assert_eq!(err(&u, &["b=1", "c"]), "c → d: d 1 breaks b 1 (Breaks: b (<< 2))");
        let e = resolve(&u, &requests(&["a", "b=1"]), &[], &ResolveOptions::default());
        assert!(matches!(e, Err(ResolveError::Conflict { kind: RelationKind::Breaks, .. })));
    }

    #[test]
    fn conflict_with_an_installed_package() {
        let u = universe(vec![pkg("foo", "1", "all").conflicts("bar"), pkg("bar", "1", "all")]);
        let base = [inst("foo", "1", "all")];
        assert_eq!(err_with(&u, &["bar"], &base), "installed foo 1 conflicts with bar 1 (Conflicts: bar)");
    }

    // --- essential, installed ---------------------------------------------------------------

    #[test]
    fn essential_packages_are_not_added_unless_asked_for() {
        let u = universe(vec![
            pkg("base-files", "12", "amd64").essential(),
            pkg("dash", "0.5", "amd64").essential(),
            pkg("curl", "1", "amd64"),
            pkg("tool", "1", "amd64").depends("dash"),
        ]);
        assert_eq!(ok(&u, &["curl"]), ["curl=1"]);
        assert_eq!(ok(&u, &["tool"]), ["dash=0.5", "tool=1"]);
        assert_eq!(ok(&u, &["base-files"]), ["base-files=12"]);
        let all = ResolveOptions { add_essential: true };
        assert_eq!(
            resolve_with(&u, &["curl"], &[inst("dash", "0.4", "amd64")], &all),
            Ok(vec!["base-files=12".to_string(), "curl=1".to_string()])
        );
        let res = resolve(&u, &requests(&["curl"]), &[], &all).expect("resolves");
        let bf = res.packages.iter().find(|&&id| u.get(id).name == "base-files").expect("added");
        assert_eq!(res.reasons[bf], ["essential"]);
    }

    #[test]
    fn installed_packages_satisfy_dependencies() {
        let u = universe(curl_universe());
        let base = [inst("libc6", "2.36-9", "amd64"), inst("libssl3", "3.0.9-1", "amd64")];
        assert_eq!(
            resolve_with(&u, &["curl"], &base, &ResolveOptions::default()),
            Ok(vec!["curl=7.88.1-10".to_string(), "libcurl4=7.88.1-10".to_string()])
        );
    }

    #[test]
    fn installed_package_too_old_is_upgraded() {
        let u = universe(curl_universe());
        let base = [inst("libc6", "2.31-13", "amd64")];
        let got = resolve_with(&u, &["libssl3"], &base, &ResolveOptions::default());
        assert_eq!(got, Ok(vec!["libc6=2.36-9".to_string(), "libssl3=3.0.11-1".to_string()]));
    }

    #[test]
    fn installed_package_is_not_downgraded() {
        let u = universe(vec![pkg("a", "1", "all").depends("libc6 (<< 2.30)"), pkg("libc6", "2.28", "amd64")]);
        assert_eq!(
            err_with(&u, &["a"], &[inst("libc6", "2.36", "amd64")]),
            "a → libc6 (<< 2.30): installed libc6 2.36 would have to be downgraded to 2.28"
        );
    }

    #[test]
    fn upgrade_that_breaks_an_earlier_relation_is_caught() {
        let u = universe(vec![
            pkg("a", "1", "all").depends("libc6 (<< 2.35)"),
            pkg("b", "1", "all").depends("libc6 (>= 2.36)"),
            pkg("libc6", "2.36", "amd64"),
        ]);
        assert_eq!(err_with(&u, &["a", "b"], &[inst("libc6", "2.34", "amd64")]), "a → libc6 (<< 2.35): libc6 2.36 is selected (b → libc6)");
    }

    #[test]
    fn requested_installed_package_is_not_added_again() {
        let u = universe(vec![pkg("foo", "1", "all"), pkg("foo", "2", "all")]);
        let base = [inst("foo", "2", "all")];
        let none: Vec<String> = Vec::new();
        assert_eq!(resolve_with(&u, &["foo"], &base, &ResolveOptions::default()), Ok(none.clone()));
        assert_eq!(resolve_with(&u, &["foo=2"], &base, &ResolveOptions::default()), Ok(none));
        assert_eq!(resolve_with(&u, &["foo=1"], &base, &ResolveOptions::default()), Ok(vec!["foo=1".to_string()]));
        let older = [inst("foo", "1", "all")];
        assert_eq!(resolve_with(&u, &["foo"], &older, &ResolveOptions::default()), Ok(vec!["foo=2".to_string()]));
        // Installed but absent from the repositories: still there.
        let u = universe(vec![]);
        assert_eq!(resolve_with(&u, &["bar"], &[inst("bar", "1", "amd64")], &ResolveOptions::default()), Ok(vec![]));
    }

    #[test]
    fn installed_provider_satisfies_virtual_dependency() {
        let u = universe(vec![
            pkg("a", "1", "all").depends("awk"),
            pkg("mawk", "1.3", "amd64").provides("awk"),
            pkg("gawk", "5", "amd64").provides("awk").priority("required"),
        ]);
        let base = [inst("mawk", "1.3", "amd64")];
        assert_eq!(resolve_with(&u, &["a"], &base, &ResolveOptions::default()), Ok(vec!["a=1".to_string()]));
    }

    // --- architecture qualifiers -----------------------------------------------------------

    #[test]
    fn any_and_native_qualifiers() {
        let u = universe(vec![
            pkg("a", "1", "amd64").depends("python3:any (>= 3.11), perl:native, data:any"),
            pkg("python3", "3.11.2", "amd64").multi_arch(MultiArch::Allowed),
            pkg("perl", "5.36", "amd64"),
            pkg("data", "1", "all"),
        ]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "data=1", "perl=5.36", "python3=3.11.2"]);
    }

    #[test]
    fn qualifier_for_a_foreign_architecture() {
        let u = universe(vec![pkg("a", "1", "amd64").depends("b:i386"), pkg("b", "1", "amd64"), pkg("c", "1", "amd64").depends("b:amd64")]);
        assert_eq!(err(&u, &["a"]), "a → b:i386: no candidate for architecture i386 (only amd64 and all are available)");
        assert_eq!(ok(&u, &["c"]), ["b=1", "c=1"]);
        let base = [inst("b", "1", "i386")];
        assert_eq!(resolve_with(&u, &["a"], &base, &ResolveOptions::default()), Ok(vec!["a=1".to_string()]));
    }

    #[test]
    fn installed_foreign_architecture_does_not_satisfy_unqualified_dependency() {
        let u = universe(vec![pkg("a", "1", "amd64").depends("b"), pkg("b", "1", "amd64")]);
        let base = [inst("b", "1", "i386")];
        assert_eq!(resolve_with(&u, &["a"], &base, &ResolveOptions::default()), Ok(vec!["a=1".to_string(), "b=1".to_string()]));
    }

    // --- cycles, failures -------------------------------------------------------------------

    #[test]
    fn dependency_cycle_resolves() {
        let u = universe(vec![
            pkg("a", "1", "all").depends("b"),
            pkg("b", "1", "all").pre_depends("a (>= 1)"),
            pkg("c", "1", "all").depends("c"),
        ]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "b=1"]);
        assert_eq!(ok(&u, &["b"]), ["a=1", "b=1"]);
        assert_eq!(ok(&u, &["c"]), ["c=1"]);
    }

    #[test]
    fn unsatisfiable_chain_is_shown_from_the_request() {
        let u = universe(vec![
            pkg("curl", "7.88.1-10+deb12u12", "amd64").depends("libcurl4 (= 7.88.1-10+deb12u12)"),
            pkg("libcurl4", "7.88.1-10+deb12u12", "amd64").depends("libssl3 (>= 3.0.0)"),
        ]);
        assert_eq!(err(&u, &["curl"]), "curl → libcurl4 (= 7.88.1-10+deb12u12) → libssl3 (>= 3.0.0): no candidate");
        let e = resolve(&u, &requests(&["curl"]), &[], &ResolveOptions::default());
        assert_eq!(
            e,
            Err(ResolveError::Unsatisfiable {
                chain: vec!["curl".into(), "libcurl4 (= 7.88.1-10+deb12u12)".into()],
                relation: "libssl3 (>= 3.0.0)".into(),
                detail: "no candidate".into(),
            })
        );
    }

    #[test]
    fn versioned_failure_lists_available_versions() {
        let u = universe(vec![
            pkg("curl", "7.88.1-10", "amd64").depends("libcurl4 (= 7.88.1-10)"),
            pkg("libcurl4", "7.88.1-10", "amd64").depends("libssl3 (>= 3.0.9)"),
            pkg("libssl3", "3.0.8-1", "amd64").repo(0),
            pkg("libssl3", "3.0.7-1", "amd64").repo(1),
        ]);
        assert_eq!(
            err(&u, &["curl"]),
            "curl → libcurl4 (= 7.88.1-10) → libssl3 (>= 3.0.9): no version matches (available: 3.0.8-1, 3.0.7-1)"
        );
    }

    #[test]
    fn failure_below_a_provider_shows_the_virtual_hop() {
        let u = universe(vec![pkg("mutt", "1", "all").depends("mta"), pkg("exim", "4", "all").provides("mta").depends("libdb (>= 5)")]);
        assert_eq!(err(&u, &["mutt"]), "mutt → mta → exim → libdb (>= 5): no candidate");
    }

    // --- backtracking -----------------------------------------------------------------------

    #[test]
    fn backtracks_to_the_next_alternative() {
        let u = universe(vec![pkg("a", "1", "all").depends("b | c"), pkg("b", "1", "all").depends("missing"), pkg("c", "1", "all")]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "c=1"]);
    }

    #[test]
    fn backtracks_over_a_later_conflict() {
        let u = universe(vec![
            pkg("a", "1", "all").depends("b | c, d"),
            pkg("b", "1", "all"),
            pkg("c", "1", "all"),
            pkg("d", "1", "all").conflicts("b"),
        ]);
        assert_eq!(ok(&u, &["a"]), ["a=1", "c=1", "d=1"]);
    }

    #[test]
    fn backtracks_deep_choices() {
        // The first choice's grandchild fails; the second provider works.
        let u = universe(vec![
            pkg("app", "1", "all").depends("lib-virtual"),
            pkg("lib-a", "1", "all").provides("lib-virtual").priority("required").depends("helper"),
            pkg("helper", "1", "all").depends("tool-x | tool-y"),
            pkg("tool-x", "1", "all").depends("nowhere"),
            pkg("tool-y", "1", "all").depends("nowhere-either"),
            pkg("lib-b", "1", "all").provides("lib-virtual").priority("optional"),
        ]);
        assert_eq!(ok(&u, &["app"]), ["app=1", "lib-b=1"]);
    }

    #[test]
    fn exhausted_alternatives_report_the_first_path() {
        let u = universe(vec![pkg("a", "1", "all").depends("b | c"), pkg("b", "1", "all").depends("x"), pkg("c", "1", "all").depends("y")]);
        assert_eq!(err(&u, &["a"]), "a → b → x: no candidate");
    }

    #[test]
    fn failure_no_choice_can_fix_is_reported_as_is() {
        let u = universe(vec![
            pkg("a", "1", "all").depends("b | c, z"),
            pkg("b", "1", "all").depends("missing"),
            pkg("c", "1", "all"),
            pkg("z", "1", "all").depends("nothere"),
        ]);
        assert_eq!(err(&u, &["a"]), "a → z → nothere: no candidate");
    }

    #[test]
    fn independent_choices_do_not_multiply() {
        let mut packages = Vec::new();
        let mut deps = Vec::new();
        for i in 0..40 {
            deps.push(format!("a{i} | b{i}"));
            packages.push(pkg(&format!("a{i}"), "1", "all").depends(&format!("x{i} | y{i}")));
            packages.push(pkg(&format!("b{i}"), "1", "all"));
            packages.push(pkg(&format!("x{i}"), "1", "all").depends("missing"));
            packages.push(pkg(&format!("y{i}"), "1", "all"));
        }
        deps.push("last".to_string());
        packages.push(pkg("root", "1", "all").depends(&deps.join(", ")));
        packages.push(pkg("last", "1", "all").depends("gone"));
        let u = universe(packages);
        assert_eq!(err(&u, &["root"]), "root → last → gone: no candidate");
        // Without the final failure, each x fails and its y is taken instead.
        let mut fine: Vec<Package> = u.packages().to_vec();
        if let Some(last) = fine.iter_mut().find(|p| p.name == "last") {
            last.depends.clear();
        }
        let u = universe(fine);
        let got = ok(&u, &["root"]);
        assert_eq!(got.len(), 1 + 40 * 2 + 1);
        assert!(got.iter().all(|p| !p.starts_with('x') && !p.starts_with('b')));
    }

    #[test]
    fn backtracking_is_bounded() {
        // Every a_i has two options that both fail only at the very end, because of a
        // conflict with something the later choices bring in: the search must stop.
        let mut packages = Vec::new();
        let mut deps = Vec::new();
        for i in 0..30 {
            deps.push(format!("p{i} | q{i}"));
            packages.push(pkg(&format!("p{i}"), "1", "all").provides("token"));
            packages.push(pkg(&format!("q{i}"), "1", "all").provides("token"));
        }
        deps.push("end".to_string());
        packages.push(pkg("root", "1", "all").depends(&deps.join(", ")));
        packages.push(pkg("end", "1", "all").conflicts("token"));
        let u = universe(packages);
        let msg = err(&u, &["root"]);
        assert_eq!(msg, "root → end: end 1 conflicts with p0 1 (Conflicts: token)");
    }

    // --- determinism ------------------------------------------------------------------------

    fn rich_universe() -> Vec<Package> {
        vec![
            pkg("app", "2", "amd64").depends("libfoo (>= 1) | libfoo-compat, mta, python3:any, data"),
            pkg("app", "1", "amd64").repo(1),
            pkg("libfoo", "1.2", "amd64").depends("libc6").repo(0),
            pkg("libfoo", "1.2", "amd64").depends("libc6").repo(1),
            pkg("libfoo-compat", "1", "amd64"),
            pkg("exim", "4", "amd64").provides("mta").priority("standard").depends("libc6"),
            pkg("postfix", "3", "amd64").provides("mta").priority("standard"),
            pkg("courier", "1", "amd64").provides("mta").priority("optional"),
            pkg("python3", "3.11", "amd64").multi_arch(MultiArch::Allowed).depends("libc6"),
            pkg("data", "1", "all").depends("tzdata | tzdata-legacy"),
            pkg("tzdata", "2024a", "all"),
            pkg("tzdata", "2024b", "all").repo(1),
            pkg("tzdata-legacy", "2024b", "all"),
            pkg("libc6", "2.36", "amd64"),
            pkg("libc6", "2.36", "i386"),
        ]
    }

    fn summary(u: &Universe, reqs: &[&str]) -> Vec<(String, Vec<String>)> {
        let res = resolve(u, &requests(reqs), &[], &ResolveOptions::default()).expect("resolves");
        res.packages
            .iter()
            .map(|id| {
                let p = u.get(*id);
                (format!("{} {} {}", p.id(), p.architecture, p.repository), res.reasons[id].clone())
            })
            .collect()
    }

    #[test]
    fn shuffled_input_gives_the_same_result() {
        let base = rich_universe();
        let expected = summary(&universe(base.clone()), &["app"]);
        assert_eq!(
            expected.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            [
                "app=2 amd64 0",
                "data=1 all 0",
                "exim=4 amd64 0",
                "libc6=2.36 amd64 0",
                "libfoo=1.2 amd64 0",
                "python3=3.11 amd64 0",
                "tzdata=2024b all 1",
            ]
        );
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20 {
            let mut shuffled = base.clone();
            for i in (1..shuffled.len()).rev() {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let j = (seed >> 33) as usize % (i + 1);
                shuffled.swap(i, j);
            }
            assert_eq!(summary(&universe(shuffled), &["app"]), expected);
        }
        let mut reversed = base;
        reversed.reverse();
        assert_eq!(summary(&universe(reversed), &["app"]), expected);
    }
}
