//! `compose explain`: for each derivation the next build would run, why — what changed in its
//! inputs since the derivation last built in the same place of this spec (cargo's
//! `DirtyReason`, `nix-diff` in spirit). Builds remember, per spec file, which derivation they
//! last built under each name ([`crate::store::Store::last_built`]); records keep their inputs
//! in words ([`crate::plan::describe`]); this compares the two.

use std::collections::BTreeMap;

use super::{load_and_plan, Error, SpecOptions};
use crate::plan::{describe, slot, DrvKind};

/// Why one derivation would run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rebuild {
    pub name: String,
    pub kind: String,
    pub hash: String,
    /// What changed, one line each (`/srv/app/main.js changed (size 1.2 KiB → 1.3 KiB)`).
    pub reasons: Vec<String>,
}

/// What `compose explain` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    pub derivations: usize,
    /// What the build would take from the store.
    pub cached: usize,
    /// What it would take from the remote cache.
    pub remote: usize,
    pub rebuild: Vec<Rebuild>,
    /// What the user should hear about the remote cache (a server that failed, records refused).
    pub warnings: Vec<String>,
}

/// The key under which builds of this spec remember what they built.
pub fn spec_key(spec: &std::path::Path) -> String {
    std::fs::canonicalize(spec).unwrap_or_else(|_| spec.to_path_buf()).display().to_string()
}

fn human(n: &str) -> String {
    match n.parse::<u64>() {
        Ok(v) => crate::util::human_bytes(v),
        Err(_) => n.to_string(),
    }
}

/// `a → b` for the `key=value` words that differ between two values of one input.
fn value_change(old: &str, new: &str) -> String {
    let words = |s: &str| -> BTreeMap<String, String> {
        s.split(' ').filter_map(|w| w.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let (o, n) = (words(old), words(new));
    let kind = |s: &str| s.split(' ').next().unwrap_or("").to_string();
    if o.is_empty() || n.is_empty() || kind(old) != kind(new) {
        return format!("{old} → {new}");
    }
    let mut parts = Vec::new();
    for (k, nv) in &n {
        match o.get(k) {
            Some(ov) if ov == nv => {}
            Some(ov) if k == "size" => parts.push(format!("size {} → {}", human(ov), human(nv))),
            Some(ov) => parts.push(format!("{k} {ov} → {nv}")),
            None => parts.push(format!("{k} {nv}")),
        }
    }
    parts.join(", ")
}

/// The differences between two input maps, as reasons.
pub fn diff(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>, plan_names: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for (k, nv) in new {
        match old.get(k) {
            Some(ov) if ov == nv => {}
            Some(ov) if ov.starts_with("drv:") && plan_names(k) => out.push(format!("{k} changed")),
            Some(ov) => out.push(format!("{k} changed ({})", value_change(ov, nv))),
            None => out.push(format!("{k} added")),
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(format!("{k} removed"));
    }
    out
}

/// `compose explain`: plan (resolving and writing the lockfile as a build would), then say for
/// every derivation the build would run why: it finds them as the build does (the store, then
/// the remote cache, top-down, only what it needs), so the two agree.
pub fn explain(opts: &SpecOptions) -> Result<Explanation, Error> {
    let p = load_and_plan(opts)?;
    let remote = super::open_remote(opts, &p.clients)?;
    let predicted = crate::exec::predict(&p.plan, &p.store, remote.as_ref(), &p.clients, &crate::exec::ExecOptions::default())?;
    let last = p.store.last_built(&spec_key(&opts.spec));
    let mut rebuild = Vec::new();
    let order = p.plan.topo_order();
    for &n in order.iter().filter(|n| predicted.run.contains(n)) {
        let d = &p.plan.graph[n];
        let now = describe(&p.plan, n);
        let previous = last.get(&slot(&p.plan, n)).and_then(|h| p.store.lookup(h).ok().flatten());
        let reasons = match previous {
            None => vec!["not built before here (nothing in the store or the remote cache to compare with)".to_string()],
            Some(rec) if rec.inputs.is_empty() => vec!["its last build did not record its inputs".to_string()],
            Some(rec) => {
                let r = diff(&rec.inputs, &now, &|k| k.contains(':') || k.starts_with("layer ") || k.starts_with("base "));
                if r.is_empty() {
                    vec!["the same inputs, but a different derivation (compose's own rules changed)".to_string()]
                } else {
                    r
                }
            }
        };
        let kind = match &d.kind {
            DrvKind::Image(_) => "image",
            k => k.name(),
        };
        rebuild.push(Rebuild { name: d.name.clone(), kind: kind.into(), hash: d.hash.to_string(), reasons });
    }
    let warnings = remote.map(|r| r.warnings()).unwrap_or_default();
    Ok(Explanation { derivations: order.len(), cached: predicted.local.len(), remote: predicted.remote.len(), rebuild, warnings })
}
