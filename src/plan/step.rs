//! Planning a step: the image it runs in, its inputs layer, its recipe hash and, for a
//! fixed-output step, the output the lockfile pins for that recipe.

use petgraph::graph::NodeIndex;

use super::accounts::Ids;
use super::planner::Planner;
use super::{Derivation, DrvKind, StepDrv, DEFAULT_EPOCH};
use crate::hash::{DrvHash, Encoder, Sha256};
use crate::layer::Compression;
use crate::spec::{FileOp, StepSpec};

impl Planner<'_> {
    /// A step: its inputs layer, the image it runs in (for its platform), its recipe and, for a
    /// fixed-output step, the pin the lockfile holds for that recipe.
    pub(super) fn step(&mut self, step: &StepSpec) {
        self.compression = Compression::Gzip;
        let Some(image) = self.spec.image(&step.image.0) else { return };
        let Some(platform) = step.platform.clone().or_else(|| image.platforms.first().cloned()) else { return };
        let Some(&image_node) = self.image_nodes.get(&(image.name.clone(), platform.to_string())) else {
            // The image is meant for this platform but could not be planned: that is reported.
            if image.platforms.contains(&platform) {
                return;
            }
            self.errors.push(self.spec.diagnostic(
                "compose::spec::step_platform",
                step.image.1,
                format!("image `{}` is not built for {platform}, which step `{}` runs on", image.name, step.name),
                "this image",
                Some(format!("add \"{platform}\" to the `platforms` of `{}`, or set the step's `platform`", image.name)),
            ));
            return;
        };
        let epoch = match &self.plan.graph[image_node].kind {
            DrvKind::Image(i) => i.epoch,
            _ => self.inputs.source_date_epoch.unwrap_or(DEFAULT_EPOCH),
        };
        let ids = Ids::new(None, None);
        let mut deps = vec![image_node];
        let mut inputs = None;
        if !step.inputs.is_empty() {
            let Some(m) = self.merge_ops("inputs", &step.inputs, &ids, !image.packages.is_empty()) else {
                return;
            };
            let Some(n) = self.layer(&format!("step {}", step.name), &m, epoch, &platform.to_string()) else { return };
            inputs = Some(n);
            deps.push(n);
        }
        let input_paths = input_paths(step);
        let recipe = self.step_recipe(step, image_node, epoch, inputs, &input_paths);
        let pin = self.step_pin(step, &recipe);
        let hash = match &pin {
            Some(out) => super::fixed_output_hash(out),
            None => recipe,
        };
        let drv = StepDrv {
            step: step.name.clone(),
            image: image_node,
            inputs,
            input_paths,
            runs: step.runs.clone(),
            env: step.env.clone(),
            workdir: step.workdir.clone(),
            user: step.user,
            output: step.output.clone(),
            network: step.network,
            pass_env: step.pass_env.clone(),
            limits: step.limits.clone(),
            secrets: step.secrets.clone(),
            host_mounts: step.host_mounts.clone(),
            caches: step.caches.clone(),
            epoch,
            recipe,
            pin,
        };
        let n = self.add(Derivation { hash, name: format!("step {}", step.name), kind: DrvKind::Step(Box::new(drv)) }, &deps);
        self.step_nodes.insert(step.name.clone(), n);
    }

    /// A step's recipe hash: the image it runs in, its inputs and where they go, what it runs
    /// and how (environment, user, network, secrets, host mounts), and the sandbox.
    fn step_recipe(
        &self,
        step: &StepSpec,
        image_node: NodeIndex,
        epoch: u64,
        inputs: Option<NodeIndex>,
        input_paths: &[String],
    ) -> DrvHash {
        let mut e = Encoder::new("step");
        // The builder by what its root file system holds, not by how it is layered or compressed.
        e.str((self.inputs.layer_format)(Compression::Gzip)).drv(&self.image_rootfs(image_node)).u64(epoch);
        match inputs {
            Some(n) => e.drv(&self.plan.graph[n].hash),
            None => e.opt_str(None),
        };
        e.list(input_paths.len());
        for p in input_paths {
            e.str(p);
        }
        e.list(step.runs.len());
        for argv in &step.runs {
            e.list(argv.len());
            for a in argv {
                e.str(a);
            }
        }
        e.list(step.env.len());
        for (k, v) in &step.env {
            e.str(k).str(v);
        }
        e.opt_str(step.workdir.as_deref()).u64(step.user.0 as u64).u64(step.user.1 as u64).str(&step.output);
        e.u64(step.network as u64).list(step.pass_env.len());
        for v in &step.pass_env {
            e.str(v);
        }
        e.str(super::SANDBOX_ID);
        // Written only when present, so steps without them keep their keys (and their pins).
        if !step.secrets.is_empty() {
            e.str("secrets").list(step.secrets.len());
            for sec in &step.secrets {
                e.str(&sec.id).opt_str(sec.env.as_deref()).opt_str(sec.target.as_deref()).u64(sec.required as u64);
            }
        }
        if !step.host_mounts.is_empty() {
            e.str("host-mounts").list(step.host_mounts.len());
            for (host, to) in &step.host_mounts {
                e.str(host).str(to);
            }
        }
        e.finish()
    }

    /// The output digest the lockfile pins for a fixed-output (networked) step, if pinned for
    /// this very recipe.
    fn step_pin(&self, step: &StepSpec, recipe: &DrvHash) -> Option<Sha256> {
        if !step.network {
            return None;
        }
        self.inputs
            .lock
            .and_then(|l| l.steps.get(&step.name))
            .filter(|p| p.recipe == recipe.hex())
            .and_then(|p| p.output.strip_prefix("sha256:").and_then(|h| Sha256::from_hex(h).ok()))
    }
}

/// Where a step's inputs are copied to, sorted, each once.
fn input_paths(step: &StepSpec) -> Vec<String> {
    let mut paths: Vec<String> = step
        .inputs
        .iter()
        .filter_map(|op| match op {
            FileOp::Copy { to, .. } => Some(to.clone()),
            _ => None,
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}
