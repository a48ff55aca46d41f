//! The resolver's state while it searches: the base image's packages, the packages selected so
//! far (with why, and which choice points they depend on), the stack of choice points, and the
//! questions asked of that state (what meets a relation, what conflicts with a package, the
//! options of a dependency group, the chains that explain a selection or a failure). How the
//! roots are chosen is in [`requests`]; the closure, backjumping and final check in [`search`].

mod requests;
mod search;

use std::collections::{BTreeSet, HashMap};

use super::{PkgId, RelationKind, ResolveError, Universe};
use crate::debian::types::{Dep, MultiArch, Package, Version};

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

pub(super) fn group_text(g: &[Dep]) -> String {
    g.iter().map(Dep::to_string).collect::<Vec<_>>().join(" | ")
}

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

pub(super) struct Resolver<'a> {
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
    pub(super) fn new(u: &'a Universe, installed: &'a [(String, Version, String)]) -> Resolver<'a> {
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
            notes.push(format!("no candidate for architecture {arch} (only {} and all are available)", u.native_arch()));
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
}

fn root<'a>(origin: Origin) -> Sel<'a> {
    Sel { origin, parent: None, dep: None, via_provider: false, culprits: BTreeSet::new() }
}
