//! The roots of a resolution: the requested packages (duplicates merged, pins checked, what the
//! base image already has skipped), then the requested virtual packages (their one provider),
//! then, when asked, every essential package.

use std::collections::BTreeMap;

use super::{root, Origin, Resolver};
use crate::debian::resolve::{PkgId, Request, ResolveError, ResolveOptions, Universe};
use crate::debian::types::{Dep, Version};

impl Resolver<'_> {
    pub(crate) fn add_requests(&mut self, requests: &[Request], options: &ResolveOptions) -> Result<(), ResolveError> {
        // Duplicates: the same pin twice is fine, two different ones are not.
        let mut seen: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        let mut virtuals: Vec<&str> = Vec::new();
        let native_suffix = format!(":{}", self.u.native_arch());
        for req in requests {
            let name = req.name.strip_suffix(native_suffix.as_str()).unwrap_or(&req.name);
            let pin = req.version.as_deref();
            if !first_request(&mut seen, name, pin)? {
                continue;
            }
            if self.add_request(name, pin)? {
                virtuals.push(name);
            }
        }
        for name in virtuals {
            self.add_virtual(name)?;
        }
        if options.add_essential {
            self.add_essential()?;
        }
        Ok(())
    }

    /// Selects the candidate `name` (at `pin`) unless what is installed or selected already
    /// meets the request. Returns `true` when `name` has no candidate but providers: a virtual
    /// package, left for [`Resolver::add_virtual`] once every real request is selected.
    fn add_request(&mut self, name: &str, pin: Option<&str>) -> Result<bool, ResolveError> {
        let u = self.u;
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
                return Ok(false);
            }
            if let Some(v) = pin {
                return Err(no_version(u, name, v));
            }
            if u.providers(name).is_empty() {
                return Err(ResolveError::UnknownPackage { name: name.to_string(), suggestion: u.suggest(name) });
            }
            return Ok(true);
        };
        let chosen = match (&pinned, pin) {
            (Some(v), Some(text)) => cands.iter().copied().find(|&id| &u.get(id).version == v).ok_or_else(|| no_version(u, name, text))?,
            _ => best,
        };
        let p = u.get(chosen);
        let already = match (&pinned, installed) {
            (_, None) => false,
            (Some(v), Some(iv)) => iv == v,
            (None, Some(iv)) => iv >= &p.version,
        };
        if already || self.by_name.contains_key(name) {
            return Ok(false);
        }
        if let Some(h) = self.conflict(p) {
            return Err(h.into_error());
        }
        self.select(chosen, root(Origin::Requested));
        Ok(false)
    }

    /// Selects the one provider of the requested virtual package `name` that does not conflict,
    /// unless something selected or installed already provides it. None is an error, and so
    /// are several.
    fn add_virtual(&mut self, name: &str) -> Result<(), ResolveError> {
        let u = self.u;
        let dep = Dep { name: name.to_string(), arch: None, constraint: None };
        if self.satisfier(&dep).is_some() {
            return Ok(());
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
            (Some(id), 1) => {
                self.select(id, root(Origin::Requested));
                Ok(())
            }
            (_, 0) => Err(ResolveError::Unsatisfiable { chain: Vec::new(), relation: name.to_string(), detail: notes.join("; ") }),
            _ => {
                let mut providers: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                providers.sort();
                Err(ResolveError::AmbiguousVirtual { name: name.to_string(), providers })
            }
        }
    }

    /// Selects the best candidate of every `Essential: yes` name, in name order, unless it is
    /// already selected or installed.
    fn add_essential(&mut self) -> Result<(), ResolveError> {
        let u = self.u;
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
        Ok(())
    }
}

/// Whether `name` is requested for the first time: the same pin again is skipped, another pin is
/// an error.
fn first_request<'r>(seen: &mut BTreeMap<&'r str, Option<&'r str>>, name: &'r str, pin: Option<&'r str>) -> Result<bool, ResolveError> {
    match seen.get(name) {
        Some(&prev) if prev == pin => Ok(false),
        Some(&prev) => Err(ResolveError::ConflictingRequests {
            name: name.to_string(),
            first: prev.map_or_else(|| "unpinned".to_string(), |v| format!("={v}")),
            second: pin.map_or_else(|| "unpinned".to_string(), |v| format!("={v}")),
        }),
        None => {
            seen.insert(name, pin);
            Ok(true)
        }
    }
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
