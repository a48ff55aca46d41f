//! The [`Universe`]: every package of every configured repository for one architecture (plus
//! `all`), indexed once by name (candidates, best first) and by provided virtual name, and the
//! questions the resolver asks it (does an architecture meet a qualifier, which name was meant).

use std::collections::HashMap;

use super::PkgId;
use crate::debian::types::{ArchQual, Dep, MultiArch, Package};

/// All packages of all configured repositories for one architecture, plus `all`.
#[derive(Debug, Clone)]
pub struct Universe {
    packages: Vec<Package>,
    native_arch: String,
    /// Name → packages of native or `all` architecture, best first.
    pub(super) candidates: HashMap<String, Vec<PkgId>>,
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

    pub(super) fn native_like(&self, arch: &str) -> bool {
        arch == self.native_arch || arch == "all"
    }

    /// Can a package of `arch` with `ma` meet a relation with qualifier `qual`?
    pub(super) fn arch_ok(&self, qual: Option<&ArchQual>, arch: &str, ma: MultiArch) -> bool {
        let native = self.native_like(arch);
        match qual {
            None => native || ma == MultiArch::Foreign,
            Some(ArchQual::Native) => native,
            Some(ArchQual::Any) => native || ma == MultiArch::Allowed,
            Some(ArchQual::Arch(a)) => arch == a || (a == &self.native_arch && arch == "all"),
        }
    }

    /// `foo:ARCH` for an architecture the universe does not hold.
    pub(super) fn foreign_qualifier<'d>(&self, d: &'d Dep) -> Option<&'d str> {
        match &d.arch {
            Some(ArchQual::Arch(a)) if a != &self.native_arch => Some(a),
            _ => None,
        }
    }

    /// The closest known name to `name`, for "did you mean".
    pub(super) fn suggest(&self, name: &str) -> Option<String> {
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
