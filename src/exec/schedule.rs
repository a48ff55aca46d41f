//! The scheduler: which derivations a build needs, the lookup stack (the store, then the shared
//! cache, asked top-down in rounds), and running what is missing in parallel, dependencies first,
//! each under its per-derivation build lock; with `--check`, steps run again and are compared.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use petgraph::graph::NodeIndex;
use rayon::prelude::*;

use crate::clients::Clients;
use crate::plan::{DrvKind, Plan};
use crate::record;
use crate::store::{Output, Record, Store};

use super::*;

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

enum Step {
    Done(NodeIndex, Record, Outcome),
    /// The remote record could not be used and dependencies are missing: plan again.
    Replan(NodeIndex),
}

pub(super) fn execute_inner(
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
        if let Some(r) = store.lookup(&plan.graph[n].hash)?.filter(|r| record::fits(&plan.graph[n].kind.expected(), r)) {
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
                ask.par_iter()
                    .filter_map(|&n| {
                        rc.record(&plan.graph[n].hash).filter(|r| record::fits(&plan.graph[n].kind.expected(), r)).map(|r| (n, r))
                    })
                    .collect()
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
                if let Some(r) = store.lookup(&drv.hash)?.filter(|r| record::fits(&drv.kind.expected(), r)) {
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
                    if rc.fetch_outputs(store, rec) {
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
