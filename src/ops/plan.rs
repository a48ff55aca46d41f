//! `compose plan`: the DAG, what the store and the shared cache hold, what would run.

use super::{load_and_plan, open_remote, Error, SpecOptions};

/// One node of `compose plan`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanNode {
    pub id: usize,
    pub name: String,
    pub kind: String,
    pub hash: String,
    pub cached: bool,
    /// The remote cache has it (only asked for what the store lacks).
    pub remote: bool,
    pub deps: Vec<usize>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanReport {
    pub nodes: Vec<PlanNode>,
    pub images: Vec<(String, usize)>,
}

/// `compose plan`.
pub fn plan_report(opts: &SpecOptions) -> Result<PlanReport, Error> {
    let p = load_and_plan(opts)?;
    let remote = open_remote(opts, &p.clients)?;
    let mut nodes = Vec::new();
    for n in p.plan.topo_order() {
        let d = &p.plan.graph[n];
        let cached = p.store.lookup(&d.hash)?.is_some();
        let remote =
            !cached && remote.as_ref().is_some_and(|r| r.record(&d.hash).is_some_and(|rec| crate::record::fits(&d.kind.expected(), &rec)));
        nodes.push(PlanNode {
            remote,
            id: n.index(),
            name: d.name.clone(),
            kind: d.kind.name().to_string(),
            hash: d.hash.to_string(),
            cached,
            deps: p.plan.dependencies(n).iter().map(|x| x.index()).collect(),
        });
    }
    let images = p.plan.images.iter().map(|i| (i.name.clone(), i.root.index())).collect();
    Ok(PlanReport { nodes, images })
}
