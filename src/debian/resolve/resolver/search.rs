//! The closure of a resolution: `Pre-Depends` and `Depends` of each selected package, breadth
//! first, recording a choice point where a group has several options and jumping back to the
//! latest one that contributed to a failure; then the final re-check of the whole selection
//! and the reasons of every package.

use std::collections::{BTreeMap, BTreeSet};

use super::{group_at, group_text, label, ChoicePoint, Opt, Origin, Outcome, Resolver, Satisfier, Sel};
use crate::debian::resolve::{PkgId, Resolution, ResolveError, MAX_BACKJUMPS, MAX_WORK_AFTER_FAILURE};

impl<'a> Resolver<'a> {
    pub(crate) fn run(&mut self) -> Result<(), ResolveError> {
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
    pub(crate) fn finish(self) -> Result<Resolution, ResolveError> {
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
