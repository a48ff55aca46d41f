//! Planning a step, once for each platform what copies from it is built for: where it runs (on
//! that platform, on the build machine's with `platform "build"`, or on the one it names), the
//! image it runs in, its inputs layer, its recipe hash and, for a fixed-output step, the output
//! the lockfile pins for that recipe.

use petgraph::graph::NodeIndex;

use super::accounts::Ids;
use super::planner::Planner;
use super::{Derivation, DrvKind, StepDrv, DEFAULT_EPOCH};
use crate::hash::{DrvHash, Encoder, Sha256};
use crate::layer::Compression;
use crate::spec::{FileOp, Platform, StepPlatform, StepSpec};

impl Planner<'_> {
    /// Step `step` for what is built for platform `consumer` and copies from it: where it runs
    /// and for which target (`StepPlatform`), planned once for each (`None` after reporting an
    /// error).
    pub(super) fn step_for(&mut self, step: &StepSpec, consumer: &Platform) -> Option<NodeIndex> {
        let key = (step.name.clone(), consumer.to_string());
        if let Some(&n) = self.step_nodes.get(&key) {
            return Some(n);
        }
        let (run, target) = match &step.platform {
            StepPlatform::Target => (consumer.clone(), consumer.clone()),
            StepPlatform::Build => (Platform::build_machine(), consumer.clone()),
            StepPlatform::Fixed(p) => (p.clone(), p.clone()),
        };
        let n = self.step(step, &run, &target)?;
        self.step_nodes.insert(key, n);
        Some(n)
    }

    /// A step running on `run` for `target`: its inputs layer, the image it runs in, its recipe
    /// and, for a fixed-output step, the pin the lockfile holds for that recipe.
    fn step(&mut self, step: &StepSpec, run: &Platform, target: &Platform) -> Option<NodeIndex> {
        self.compression = Compression::Gzip;
        let image = self.spec.image(&step.image.0)?;
        let Some(&image_node) = self.image_nodes.get(&(image.name.clone(), run.to_string())) else {
            // The image is meant for this platform but could not be planned: that is reported.
            if image.platforms.contains(run) {
                return None;
            }
            let (message, help) = match &step.platform {
                StepPlatform::Build => (
                    format!(
                        "step `{}` runs on this machine's platform, {run} (`platform \"build\"`), for which image `{}` is not built",
                        step.name, image.name
                    ),
                    format!("add \"{run}\" to the `platforms` of `{}`", image.name),
                ),
                StepPlatform::Fixed(_) => (
                    format!("image `{}` is not built for {run}, which step `{}` runs on", image.name, step.name),
                    format!("add \"{run}\" to the `platforms` of `{}`, or set the step's `platform`", image.name),
                ),
                StepPlatform::Target => (
                    format!(
                        "step `{}` is copied into something built for {run}, so it runs on {run}, for which its image `{}` is not built",
                        step.name, image.name
                    ),
                    format!(
                        "add \"{run}\" to the `platforms` of `{}` (the step then runs emulated where {run} is not this machine's), or \
                         give the step `platform \"build\"` to build for {run} on this machine (TARGETARCH and the like say {run})",
                        image.name
                    ),
                ),
            };
            self.errors.push(self.spec.diagnostic("compose::spec::step_platform", step.image.1, message, "this image", Some(help)));
            return None;
        };
        let epoch = match &self.plan.graph[image_node].kind {
            DrvKind::Image(i) => i.epoch,
            _ => self.inputs.source_date_epoch.unwrap_or(DEFAULT_EPOCH),
        };
        let ids = Ids::new(None, None);
        let mut deps = vec![image_node];
        let mut inputs = None;
        if !step.inputs.is_empty() {
            let m = self.merge_ops("inputs", &step.inputs, &ids, !image.packages.is_empty())?;
            // What it copies from is taken for its target, as buildx evaluates a stage it copies
            // from for the same TARGETPLATFORM: a cross build links the target's libraries.
            let n = self.layer(&format!("step {}", step.name), &m, epoch, target)?;
            inputs = Some(n);
            deps.push(n);
        }
        // The lockfile names a pin by the step, and by its target when that is not the step's
        // first platform (its image's first, or the one it names).
        let home = match &step.platform {
            StepPlatform::Fixed(p) => Some(p),
            _ => image.platforms.first(),
        };
        let lock_key = if home == Some(target) { step.name.clone() } else { format!("{}@{target}", step.name) };
        let input_paths = input_paths(step);
        let cross = matches!(step.platform, StepPlatform::Build).then_some(target);
        let recipe = self.step_recipe(step, image_node, epoch, inputs, &input_paths, cross);
        let pin = self.step_pin(step, &lock_key, &recipe);
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
            target: target.clone(),
            lock_key,
            recipe,
            pin,
        };
        let name = if run == target && home == Some(target) {
            format!("step {}", step.name)
        } else if run == target {
            format!("step {} ({target})", step.name)
        } else {
            format!("step {} (for {target})", step.name)
        };
        Some(self.add(Derivation { hash, name, kind: DrvKind::Step(Box::new(drv)) }, &deps))
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
        cross: Option<&Platform>,
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
        // A cross build's target (otherwise the target is the image's platform, in its rootfs).
        if let Some(t) = cross {
            e.str("target").str(&t.to_string());
        }
        e.finish()
    }

    /// The output digest the lockfile pins for a fixed-output (networked) step, if pinned for
    /// this very recipe.
    fn step_pin(&self, step: &StepSpec, lock_key: &str, recipe: &DrvHash) -> Option<Sha256> {
        if !step.network {
            return None;
        }
        self.inputs
            .lock
            .and_then(|l| l.steps.get(lock_key))
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
