//! The scheduler: which derivations a build needs, the lookup stack (the store, then the shared
//! cache, asked top-down in rounds), and running what is missing in parallel, dependencies first,
//! each under its per-derivation build lock; with `--check`, steps and maintainer scripts run
//! again (twice when the store lacks them) and are compared.

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
/// dependencies wait for the answer). Those `check` names always run (`--check`: steps and
/// maintainer scripts).
fn needed(
    plan: &Plan,
    order: &[NodeIndex],
    roots: &[NodeIndex],
    done: &HashMap<NodeIndex, Record>,
    offered: &HashMap<NodeIndex, Record>,
    asked: Option<&HashSet<NodeIndex>>,
    check: &dyn Fn(NodeIndex) -> bool,
) -> HashSet<NodeIndex> {
    let mut need: HashSet<NodeIndex> = roots.iter().copied().collect();
    for &n in order.iter().rev() {
        let drv = &plan.graph[n];
        if !need.contains(&n) {
            continue;
        }
        let unknown = asked.is_some_and(|a| !a.contains(&n));
        let cached = (done.contains_key(&n) || offered.contains_key(&n) || unknown) && !check(n);
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

/// One execution of a plan: what it was asked for, and what it has found and made so far.
struct Scheduler<'a> {
    plan: &'a Plan,
    store: &'a Store,
    remote: Option<&'a crate::remote::RemoteCache>,
    clients: &'a Clients,
    reporter: &'a dyn Reporter,
    options: &'a ExecOptions,
    uploads: &'a std::sync::mpsc::Sender<(Record, bool)>,
    order: Vec<NodeIndex>,
    roots: Vec<NodeIndex>,
    /// Remote requests wait on the network, not the CPU: more in flight than there are cores.
    io_pool: Option<rayon::ThreadPool>,
    mismatches: Mutex<Vec<Mismatch>>,
    /// `--check`: the derivations run again and compared.
    compared: Mutex<Vec<String>>,
    /// `--check`: steps with caches whose output differed without them.
    untrusted: Mutex<Vec<NodeIndex>>,
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
    let roots = roots(plan, options);
    let mut s = Scheduler {
        plan,
        store,
        remote,
        clients,
        reporter,
        options,
        uploads,
        order,
        roots,
        io_pool: None,
        mismatches: Mutex::default(),
        compared: Mutex::default(),
        untrusted: Mutex::default(),
    };
    let mut counts = Counts { total: s.order.len(), ..Counts::default() };
    let (done, mut offered) = s.look_up()?;
    let need = needed(plan, &s.order, &s.roots, &done, &offered, None, &|n| checks(plan, options, n));
    reporter.planned(s.order.len(), need.iter().filter(|n| !done.contains_key(n) && !offered.contains_key(n)).count());
    s.report_stored(&done, &mut counts);
    let records = Mutex::new(done);
    // Each pass runs what is needed; a remote record that turns out unusable (a damaged or
    // missing blob, a server that died) is dropped and the needs are worked out again.
    loop {
        let replan = match s.pass(&records, &offered, &mut counts) {
            Ok(r) => r,
            Err(e) => {
                s.forget_untrusted();
                return Err(e);
            }
        };
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
    s.forget_untrusted();
    let mut mismatches = s.mismatches.into_inner().unwrap_or_else(|e| e.into_inner());
    mismatches.sort_by(|a, b| a.step.cmp(&b.step));
    let check = options.check.then(|| {
        let mut report = CheckReport { compared: s.compared.into_inner().unwrap_or_else(|e| e.into_inner()), ..CheckReport::default() };
        report.compared.sort();
        for n in records.keys() {
            match &plan.graph[*n].kind {
                DrvKind::Fetch(_) | DrvKind::Blob(_) => report.downloads += 1,
                k if !checked(k) => report.made_by_compose += 1,
                _ => {}
            }
        }
        report
    });
    Ok(Executed { records, counts, mismatches, check })
}

/// A step with declared caches.
fn with_caches(kind: &DrvKind) -> bool {
    matches!(kind, DrvKind::Step(s) if !s.caches.is_empty())
}

/// What `--check` runs again and compares: build steps and maintainer scripts (everything else
/// is made by compose's own code from checked inputs).
fn checked(kind: &DrvKind) -> bool {
    matches!(kind, DrvKind::Step(_) | DrvKind::Scripts(_))
}

/// Does this build run `n` again and compare (`--check`, or a fixed-output step being pinned)?
fn checks(plan: &Plan, options: &ExecOptions, n: NodeIndex) -> bool {
    options.check && checked(&plan.graph[n].kind) || options.check_also.contains(&n)
}

/// What to build: the options' roots or the plan's; with `--check`, also every step they are
/// made from, whatever is cached downstream of it.
fn roots(plan: &Plan, options: &ExecOptions) -> Vec<NodeIndex> {
    let mut roots = options.roots.clone().unwrap_or_else(|| plan.roots());
    if options.check {
        let mut seen: HashSet<NodeIndex> = HashSet::new();
        let mut todo = roots.clone();
        while let Some(n) = todo.pop() {
            if seen.insert(n) {
                todo.extend(plan.dependencies(n));
            }
        }
        roots.extend(seen.into_iter().filter(|&n| checked(&plan.graph[n].kind)));
    }
    roots
}

/// The derivations a pass runs, each ready once the dependencies it waits for are done.
struct Queue {
    /// How many of its dependencies each waiting derivation still waits for.
    waiting: HashMap<NodeIndex, usize>,
    /// Who waits for each derivation.
    dependents: HashMap<NodeIndex, Vec<NodeIndex>>,
    /// Ready to start, in the order they became ready.
    ready: Vec<NodeIndex>,
}

impl Queue {
    /// The derivations of `order` that `todo` says must run; a dependency that need not run (it
    /// is done) is not waited for.
    fn new(plan: &Plan, order: &[NodeIndex], todo: impl Fn(NodeIndex) -> bool) -> Queue {
        let runs: HashSet<NodeIndex> = order.iter().copied().filter(|&n| todo(n)).collect();
        let mut q = Queue { waiting: HashMap::new(), dependents: HashMap::new(), ready: Vec::new() };
        for &n in order.iter().filter(|n| runs.contains(n)) {
            let deps: Vec<NodeIndex> = plan.dependencies(n).into_iter().filter(|d| runs.contains(d)).collect();
            for &d in &deps {
                q.dependents.entry(d).or_default().push(n);
            }
            match deps.len() {
                0 => q.ready.push(n),
                k => {
                    q.waiting.insert(n, k);
                }
            }
        }
        q
    }

    /// The ready derivations `start` accepts (it says no when their kind has no free slot); the
    /// others stay ready.
    fn take_ready(&mut self, mut start: impl FnMut(NodeIndex) -> bool) -> Vec<NodeIndex> {
        let (go, stay): (Vec<NodeIndex>, Vec<NodeIndex>) = self.ready.iter().partition(|&&n| start(n));
        self.ready = stay;
        go
    }

    /// `n` is done: what waited only for it is ready.
    fn done(&mut self, n: NodeIndex) {
        for d in self.dependents.remove(&n).unwrap_or_default() {
            if let Some(k) = self.waiting.get_mut(&d) {
                *k -= 1;
                if *k == 0 {
                    self.waiting.remove(&d);
                    self.ready.push(d);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records found for a plan's derivations, by node.
type Found = HashMap<NodeIndex, Record>;

/// Where each derivation a build of `plan` needs would come from, found as the build finds it
/// (the store, then the remote cache, asked top-down); nothing is fetched, run or shared.
#[derive(Debug, Default)]
pub struct Prediction {
    /// In the store.
    pub local: HashSet<NodeIndex>,
    /// Offered by the remote cache.
    pub remote: HashSet<NodeIndex>,
    /// Would run here.
    pub run: HashSet<NodeIndex>,
}

/// What a build of `plan` with `options` would take from the store and the remote cache and what
/// it would run, by the lookups of [`execute_inner`]: `compose explain` and `build` agree.
pub fn predict(
    plan: &Plan,
    store: &Store,
    remote: Option<&crate::remote::RemoteCache>,
    clients: &Clients,
    options: &ExecOptions,
) -> Result<Prediction, BuildError> {
    let (uploads, _) = std::sync::mpsc::channel();
    let mut s = Scheduler {
        plan,
        store,
        remote,
        clients,
        reporter: &Silent,
        options,
        uploads: &uploads,
        order: plan.topo_order(),
        roots: roots(plan, options),
        io_pool: None,
        mismatches: Mutex::default(),
        compared: Mutex::default(),
        untrusted: Mutex::default(),
    };
    let (done, offered) = s.look_up()?;
    let need = needed(plan, &s.order, &s.roots, &done, &offered, None, &|n| checks(plan, options, n));
    let mut p = Prediction::default();
    for n in need {
        let set = if done.contains_key(&n) {
            &mut p.local
        } else if offered.contains_key(&n) {
            &mut p.remote
        } else {
            &mut p.run
        };
        set.insert(n);
    }
    Ok(p)
}

impl Scheduler<'_> {
    /// The records the store has for the plan (that fit their derivation and are still made from
    /// what they were), then what the remote cache offers for the rest; with `--check`, neither
    /// counts for steps and maintainer scripts.
    fn look_up(&mut self) -> Result<(Found, Found), BuildError> {
        let plan = self.plan;
        let mut done: HashMap<NodeIndex, Record> = HashMap::new();
        for &n in &self.order {
            if let Some(r) = self.store.lookup(&plan.graph[n].hash)?.filter(|r| record::fits(&plan.graph[n].kind.expected(), r)) {
                if self.still_made_from(&r) {
                    done.insert(n, r);
                }
            }
        }
        self.io_pool = self
            .remote
            .filter(|_| done.len() < self.order.len())
            .and_then(|_| rayon::ThreadPoolBuilder::new().num_threads(REMOTE_REQUESTS).thread_name(|i| format!("remote-{i}")).build().ok());
        let mut offered = self.ask_remote(&done);
        // What is checked runs again whatever the caches hold; what they held is compared after.
        offered.retain(|n, _| !checks(plan, self.options, *n));
        done.retain(|n, _| !checks(plan, self.options, *n));
        Ok((done, offered))
    }

    /// What the remote cache offers, asked top-down in rounds: only for derivations this build
    /// needs given the answers so far (an image found remotely spares asking about the files and
    /// packages it was made from). Records only; blobs are fetched later.
    fn ask_remote(&self, done: &HashMap<NodeIndex, Record>) -> HashMap<NodeIndex, Record> {
        let mut offered: HashMap<NodeIndex, Record> = HashMap::new();
        let Some(rc) = self.remote else { return offered };
        let plan = self.plan;
        let mut asked: HashSet<NodeIndex> = HashSet::new();
        loop {
            let ask: Vec<NodeIndex> =
                needed(plan, &self.order, &self.roots, done, &offered, Some(&asked), &|n| checks(plan, self.options, n))
                    .into_iter()
                    .filter(|n| !done.contains_key(n) && !asked.contains(n))
                    .collect();
            if ask.is_empty() || !rc.usable() {
                return offered;
            }
            asked.extend(ask.iter().copied());
            let query = || -> Vec<(NodeIndex, Record)> {
                ask.par_iter()
                    .filter_map(|&n| {
                        rc.record(&plan.graph[n].hash).filter(|r| record::fits(&plan.graph[n].kind.expected(), r)).map(|r| (n, r))
                    })
                    .collect()
            };
            offered.extend(match &self.io_pool {
                Some(pool) => pool.install(query),
                None => query(),
            });
        }
    }

    /// Report what the store already has; results built before this store used the cache (or
    /// while it was down) are shared too: a marker in the store says which the cache already has.
    fn report_stored(&self, done: &HashMap<NodeIndex, Record>, counts: &mut Counts) {
        // A cache wiped or pruned since the markers were written gets again what this build uses.
        if let Some(rc) = self.remote.filter(|rc| rc.mode() == crate::remote::Mode::ReadWrite) {
            let records: Vec<&Record> = self.order.iter().filter_map(|n| done.get(n)).collect();
            rc.recheck_markers(self.store, &records);
        }
        for &n in &self.order {
            if let Some(r) = done.get(&n) {
                counts.local += 1;
                self.reporter.finished(&self.plan.graph[n], Outcome::Local, main_size(r));
                if let Some(rc) = self.remote.filter(|rc| rc.mode() == crate::remote::Mode::ReadWrite) {
                    if !rc.known_to_have(self.store, &r.drv) {
                        self.share(r, true);
                    }
                }
            }
        }
    }

    /// Run what is needed, each derivation as soon as its dependencies are done (as Nix, Bazel
    /// and BuildKit do): at most `--jobs` builds and [`REMOTE_REQUESTS`] downloads at once.
    /// Returns the derivations whose remote record turned out unusable while their dependencies
    /// are missing (empty when all is done). After a failure or such a record nothing new starts;
    /// what runs is waited for.
    fn pass(
        &self,
        records: &Mutex<HashMap<NodeIndex, Record>>,
        offered: &HashMap<NodeIndex, Record>,
        counts: &mut Counts,
    ) -> Result<Vec<NodeIndex>, BuildError> {
        let mut queue = {
            let done = lock(records);
            let need = needed(self.plan, &self.order, &self.roots, &done, offered, None, &|n| checks(self.plan, self.options, n));
            Queue::new(self.plan, &self.order, |n| need.contains(&n) && !done.contains_key(&n))
        };
        // Downloads wait on the network, builds share the cores: each class has its slots.
        let class = |n: NodeIndex| usize::from(offered.contains_key(&n));
        let slots = [rayon::current_num_threads().max(1), REMOTE_REQUESTS];
        let mut running = [0usize; 2];
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Step, BuildError>)>();
        let mut replan = Vec::new();
        let mut failed: Option<BuildError> = None;
        // What runs now, and what was last said to be waited for.
        let mut in_flight: Vec<NodeIndex> = Vec::new();
        let mut said: Vec<NodeIndex> = Vec::new();
        std::thread::scope(|scope| loop {
            if failed.is_none() && replan.is_empty() {
                for n in queue.take_ready(|n| (running[class(n)] < slots[class(n)]).then(|| running[class(n)] += 1).is_some()) {
                    in_flight.push(n);
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let _ = tx.send((class(n), self.one(n, records, offered)));
                    });
                }
                if queue.ready.is_empty() && !queue.waiting.is_empty() && !in_flight.is_empty() && in_flight != said {
                    said = in_flight.clone();
                    let names: Vec<&Derivation> = in_flight.iter().map(|&n| &self.plan.graph[n]).collect();
                    self.reporter.waiting(&names, queue.waiting.len());
                }
            }
            if running == [0, 0] {
                break;
            }
            let Ok((class, result)) = rx.recv() else { break };
            running[class] -= 1;
            let ended = match &result {
                Ok(Step::Done(n, ..)) | Ok(Step::Replan(n)) => Some(*n),
                Err(_) => None,
            };
            in_flight.retain(|&m| Some(m) != ended);
            match result {
                Ok(Step::Done(n, rec, outcome)) => {
                    match outcome {
                        Outcome::Built => counts.built += 1,
                        Outcome::Local => counts.local += 1,
                        Outcome::Remote => counts.remote += 1,
                    }
                    self.reporter.finished(&self.plan.graph[n], outcome, main_size(&rec));
                    lock(records).insert(n, rec);
                    queue.done(n);
                }
                Ok(Step::Replan(n)) => replan.push(n),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(replan),
        }
    }

    /// Obtain derivation `n`, under its build lock: from the store (another process may have
    /// built it meanwhile), the remote cache, or by running it.
    fn one(
        &self,
        n: NodeIndex,
        records: &Mutex<HashMap<NodeIndex, Record>>,
        offered: &HashMap<NodeIndex, Record>,
    ) -> Result<Step, BuildError> {
        let (plan, store) = (self.plan, self.store);
        let drv = &plan.graph[n];
        let deps: HashMap<NodeIndex, Record> = {
            let done = lock(records);
            plan.dependencies(n).into_iter().filter_map(|d| done.get(&d).map(|r| (d, r.clone()))).collect()
        };
        let _guard = store.lock_derivation(&drv.hash)?;
        if checks(plan, self.options, n) {
            // What the store has is compared with a new run; on an empty store, the step runs
            // twice.
            let before = match store.lookup(&drv.hash)?.filter(|r| record::fits(&drv.kind.expected(), r) && self.still_made_from(r)) {
                Some(r) => r,
                None => self.build(n, &deps)?,
            };
            return self.check_again(n, &deps, before);
        }
        if let Some(r) = store.lookup(&drv.hash)?.filter(|r| record::fits(&drv.kind.expected(), r) && self.still_made_from(r)) {
            return Ok(Step::Done(n, r, Outcome::Local));
        }
        if let (DrvKind::Image(_) | DrvKind::Index(_), Some(rec)) = (&drv.kind, offered.get(&n)) {
            return self.remake(n, &deps, rec);
        }
        if let (Some(rc), Some(rec)) = (self.remote, offered.get(&n)) {
            if rc.fetch_outputs(store, rec) {
                return Ok(Step::Done(n, rec.clone(), Outcome::Remote));
            }
            if deps.len() != plan.dependencies(n).len() {
                return Ok(Step::Replan(n));
            }
        }
        Ok(Step::Done(n, self.build(n, &deps)?, Outcome::Built))
    }

    /// Run derivation `n` here, store its record and hand it to the uploaders.
    fn build(&self, n: NodeIndex, deps: &HashMap<NodeIndex, Record>) -> Result<Record, BuildError> {
        self.reporter.started(&self.plan.graph[n]);
        let r = self.run(n, deps, CacheUse::Kept)?;
        self.store.put_record(&r)?;
        self.mark_made_from(n, &r, deps);
        self.share(&r, false);
        Ok(r)
    }

    fn run(&self, n: NodeIndex, deps: &HashMap<NodeIndex, Record>, caches: CacheUse) -> Result<Record, BuildError> {
        let with =
            super::run::With { plan: self.plan, store: self.store, clients: self.clients, options: self.options, reporter: self.reporter };
        run(&with, n, deps, caches)
    }

    /// `--check`: run step `n` (or maintainer scripts) again, with empty caches, and compare its
    /// tree (its layer) with what the store has, which stays.
    fn check_again(&self, n: NodeIndex, deps: &HashMap<NodeIndex, Record>, before: Record) -> Result<Step, BuildError> {
        let drv = &self.plan.graph[n];
        self.reporter.started(drv);
        let again = self.run(n, deps, CacheUse::Empty)?;
        let key = if matches!(drv.kind, DrvKind::Step(_)) { "tree" } else { "layer" };
        let (a, b) = (output(&before, key)?, output(&again, key)?);
        lock(&self.compared).push(drv.name.clone());
        if a.diff_id != b.diff_id {
            let path = trees::first_difference(self.store, a, b)?.unwrap_or_else(|| "(the tree's encoding)".into());
            let show = |o: &Output| o.diff_id.map(|d| d.to_string()).unwrap_or_default();
            // A step with caches that differs without them: neither what it stored nor its
            // caches are trusted any more; the next build runs it afresh.
            let mut step = drv.name.clone();
            if let DrvKind::Step(s) = &drv.kind {
                if !s.caches.is_empty() {
                    // Nothing made from it is shared meanwhile; at the end of the build, its
                    // record and every record made from it go, and its caches are emptied.
                    self.store.mark_unverified(&before.drv, &[]);
                    lock(&self.untrusted).push(n);
                    step.push_str(" (with its caches kept; they were emptied and its stored output dropped)");
                }
            }
            lock(&self.mismatches).push(Mismatch { step, path, before: show(a), after: show(b) });
        } else if with_caches(&drv.kind) {
            self.store.clear_unverified(&before.drv);
            self.share(&before, false);
        }
        Ok(Step::Done(n, before, Outcome::Built))
    }

    /// An image or index a cache offers is checked by making it again from its layers' records
    /// (milliseconds, no download): a cache cannot make it name other blobs.
    fn remake(&self, n: NodeIndex, deps: &HashMap<NodeIndex, Record>, offered: &Record) -> Result<Step, BuildError> {
        let r = self.run(n, deps, CacheUse::Kept)?;
        self.store.put_record(&r)?;
        self.mark_made_from(n, &r, deps);
        if r.outputs == offered.outputs {
            if let Some(rc) = self.remote {
                self.store.mark_shared(&rc.id(), &r.drv);
            }
            return Ok(Step::Done(n, r, Outcome::Remote));
        }
        self.share(&r, false);
        Ok(Step::Done(n, r, Outcome::Built))
    }

    /// Drop the records of the steps whose caches made their output differ, and of everything
    /// made from them, and empty those caches: the next build runs them afresh.
    fn forget_untrusted(&self) {
        let mut todo: Vec<NodeIndex> = lock(&self.untrusted).clone();
        let mut seen = HashSet::new();
        while let Some(m) = todo.pop() {
            if !seen.insert(m) {
                continue;
            }
            let drv = &self.plan.graph[m];
            self.store.forget(&drv.hash);
            if let DrvKind::Step(s) = &drv.kind {
                if !s.caches.is_empty() {
                    super::caches::forget(s, &super::run::step_platform(self.plan, s), &self.options.cache_scope, self.store);
                }
            }
            todo.extend(self.plan.graph.neighbors_directed(m, petgraph::Direction::Outgoing));
        }
    }

    /// Note what record `r` of derivation `n` (made from `deps`) was made from that no run
    /// without caches reproduced: a step's own output when it ran with its caches kept, and
    /// whatever its dependencies were made from.
    fn mark_made_from(&self, n: NodeIndex, r: &Record, deps: &HashMap<NodeIndex, Record>) {
        let mut from: Vec<(crate::hash::DrvHash, crate::hash::Sha256)> = Vec::new();
        for d in deps.values() {
            for pair in self.store.unverified(&d.drv).unwrap_or_default() {
                if !from.contains(&pair) {
                    from.push(pair);
                }
            }
        }
        if with_caches(&self.plan.graph[n].kind) {
            if let Some(id) = r.outputs.get("tree").and_then(|o| o.diff_id) {
                from.push((r.drv, id));
            }
        }
        if !from.is_empty() {
            self.store.mark_unverified(&r.drv, &from);
        }
    }

    /// Is a record made from unverified step outputs still made from what the store holds? A
    /// `--check` that found one of them untrustworthy dropped it: what was made from it is
    /// dropped too (whatever plan it was made in), and made again.
    fn still_made_from(&self, r: &Record) -> bool {
        let Some(from) = self.store.unverified(&r.drv) else { return true };
        if from.iter().all(|(d, id)| *d == r.drv || self.stored_as(d, id)) {
            return true;
        }
        self.store.forget(&r.drv);
        false
    }

    /// Does the store still hold step record `d` with the tree `id`?
    fn stored_as(&self, d: &crate::hash::DrvHash, id: &crate::hash::Sha256) -> bool {
        matches!(self.store.lookup(d), Ok(Some(s)) if s.outputs.get("tree").and_then(|o| o.diff_id) == Some(*id))
    }

    /// Hand record `r` to the uploaders (`stored`: it was in the store before this build),
    /// unless it is made from step outputs no run without caches reproduced (a cache may have
    /// changed them): `--check` shares them once reproduced.
    fn share(&self, r: &Record, stored: bool) {
        let shareable = match self.store.unverified(&r.drv) {
            None => true,
            Some(from) => {
                !from.is_empty() && from.iter().all(|(d, id)| *d != r.drv && self.store.unverified(d).is_none() && self.stored_as(d, id))
            }
        };
        if shareable {
            let _ = self.uploads.send((r.clone(), stored));
        }
    }
}

fn main_size(r: &Record) -> u64 {
    r.outputs.values().map(|o| o.size).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::plan::{plan, PlanInputs, DEFAULT_MAX_LAYERS};

    /// A builder image `b` (not exported), a step `s` run in it, and an image `app` whose files
    /// copy from the step: `app: image` ← `app: files` ← `step s` ← `b: image` ← `b: files`.
    const SPEC: &str = r#"
image "b" { export #false; files { text "/bin/tool" "tool" mode=0o755; } }
step "s" {
    image "b"
    run "tool"
    output "/out"
}
image "app" {
    files { copy from="s" "/out/bin" to="/bin/"; }
}
"#;

    fn the_plan() -> Plan {
        let spec = crate::spec::parse_str(Path::new("t.kdl"), SPEC).unwrap();
        let (sources, bases) = (HashMap::new(), HashMap::new());
        let mirror = |_: &str, _: &str| -> Result<String, String> { Err("offline".into()) };
        let inputs = PlanInputs {
            sources: &sources,
            source_date_epoch: None,
            layer_format: |_| "test",
            compression: None,
            lock: None,
            mirror: &mirror,
            max_layers: DEFAULT_MAX_LAYERS,
            bases: &bases,
            default_accounts: ("", ""),
        };
        plan(&spec, None, &inputs).unwrap()
    }

    fn node(p: &Plan, name: &str) -> NodeIndex {
        p.graph.node_indices().find(|&n| p.graph[n].name == name).unwrap_or_else(|| panic!("no derivation `{name}`"))
    }

    /// Records (their content does not matter to `needed`) for the derivations named.
    fn records(p: &Plan, names: &[&str]) -> HashMap<NodeIndex, Record> {
        names
            .iter()
            .map(|name| {
                let n = node(p, name);
                let outputs = BTreeMap::new();
                let rec =
                    Record { version: 1, drv: p.graph[n].hash, kind: p.graph[n].kind.name().into(), outputs, inputs: BTreeMap::new() };
                (n, rec)
            })
            .collect()
    }

    fn names(p: &Plan, set: &HashSet<NodeIndex>) -> Vec<String> {
        let mut v: Vec<String> = set.iter().map(|&n| p.graph[n].name.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn with_nothing_cached_everything_below_the_roots_is_needed() {
        let p = the_plan();
        let need = needed(&p, &p.topo_order(), &p.roots(), &HashMap::new(), &HashMap::new(), None, &|_| false);
        assert_eq!(need.len(), p.graph.node_count(), "{:?}", names(&p, &need));
    }

    #[test]
    fn a_cached_layer_spares_the_step_and_the_builder_image_it_was_made_from() {
        let p = the_plan();
        let done = records(&p, &["app: files"]);
        let need = needed(&p, &p.topo_order(), &p.roots(), &done, &HashMap::new(), None, &|_| false);
        assert!(need.contains(&node(&p, "app: files")), "an image's layers are exported with it: {:?}", names(&p, &need));
        for spared in ["step s", "b: image", "b: files"] {
            assert!(!need.contains(&node(&p, spared)), "{spared} is needed: {:?}", names(&p, &need));
        }
        // Offered by the remote cache is as good as stored.
        let need = needed(&p, &p.topo_order(), &p.roots(), &HashMap::new(), &done, None, &|_| false);
        assert!(!need.contains(&node(&p, "step s")));
    }

    #[test]
    fn with_check_a_cached_step_runs_again_and_needs_its_image() {
        let p = the_plan();
        let done = records(&p, &["app: files", "step s"]);
        let roots = roots(&p, &ExecOptions { check: true, ..ExecOptions::default() });
        let need = needed(&p, &p.topo_order(), &roots, &done, &HashMap::new(), None, &|n| checked(&p.graph[n].kind));
        assert!(need.contains(&node(&p, "step s")) && need.contains(&node(&p, "b: image")), "{:?}", names(&p, &need));
    }

    #[test]
    fn a_derivation_is_ready_once_what_it_waits_for_is_done_whatever_its_depth() {
        let p = the_plan();
        let mut q = Queue::new(&p, &p.topo_order(), |_| true);
        let first = q.take_ready(|_| true);
        assert_eq!(first, [node(&p, "b: files")], "only what waits for nothing starts");
        assert!(q.take_ready(|_| true).is_empty());
        q.done(node(&p, "b: files"));
        // A derivation refused a slot stays ready.
        assert!(q.take_ready(|_| false).is_empty());
        assert_eq!(q.take_ready(|_| true), [node(&p, "b: image")]);
        q.done(node(&p, "b: image"));
        assert_eq!(q.take_ready(|_| true), [node(&p, "step s")]);
        // What need not run is not waited for: with the step done before the pass, the image's
        // files start at once.
        let step = node(&p, "step s");
        let mut q = Queue::new(&p, &p.topo_order(), |n| n != step && !p.graph[n].name.starts_with("b:"));
        assert_eq!(q.take_ready(|_| true), [node(&p, "app: files")]);
    }

    #[test]
    fn derivations_not_asked_about_yet_keep_their_dependencies_waiting() {
        let p = the_plan();
        let app = node(&p, "app: image");
        // Only the image has been asked about (and the cache had nothing): its layers are
        // needed; what they are made from waits for the cache's answer about them.
        let asked: HashSet<NodeIndex> = [app].into_iter().collect();
        let need = needed(&p, &p.topo_order(), &p.roots(), &HashMap::new(), &HashMap::new(), Some(&asked), &|_| false);
        assert!(need.contains(&node(&p, "app: files")));
        assert!(!need.contains(&node(&p, "step s")), "{:?}", names(&p, &need));
    }
}
