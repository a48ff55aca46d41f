//! `compose build` and `compose push`: execute the plan, then export, push and write the SBOM of
//! every image while results are still being shared in the background.

use std::collections::HashMap;
use std::path::Path;

use super::{load_and_plan, open_remote, BuildOptions, Error, Planned, SpecOptions};
use crate::exec::{self, Counts, Reporter};
use crate::image::{self, ImageError, Pushed};
use crate::lock;
use crate::plan;

/// One built image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltImage {
    pub name: String,
    pub tag: String,
    pub digest: String,
    pub output: String,
    /// Where it was pushed, and what the push did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed: Option<Pushed>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildSummary {
    pub images: Vec<BuiltImage>,
    pub derivations: Counts,
    #[serde(skip)]
    pub hashed_files: u64,
    /// `--check`: steps whose output differed when run again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<exec::Mismatch>,
    /// `--check`: what was compared and what was not run again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<exec::CheckReport>,
}

/// Whose the steps' caches are: the spec file, by its directory's canonical path and its name as
/// given. Not by what a symlinked spec points at: its sources and lockfile are found beside the
/// link, so two links are two projects.
fn cache_scope(spec: &std::path::Path) -> String {
    let dir = match spec.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    dir.join(spec.file_name().unwrap_or_default()).display().to_string()
}

/// `compose build`.
pub fn build(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<BuildSummary, Error> {
    let planned = load_and_plan(&opts.spec)?;
    for w in planned.spec.warnings().iter().chain(&planned.warnings) {
        reporter.warning(w);
    }
    if opts.push.is_some() {
        match planned.plan.roots().len() {
            1 => {}
            0 => {
                return Err(Error::Usage(
                    "there is nothing to push: no image of the build is exported (each has `export #false`); remove that from \
                     the one to push"
                        .into(),
                ))
            }
            _ => return Err(Error::Usage("--push takes one image, but the spec exports several: choose one with --image NAME".into())),
        }
    }
    // Steps on another architecture need the kernel's help: said before anything is built.
    exec::check_emulation(&planned.plan, reporter)?;

    let remote = open_remote(&opts.spec, &planned.clients)?;
    let (planned, pinning) = pin_steps(&opts.spec, planned, remote.as_ref(), reporter)?;
    // Exporting and pushing overlap with writing results back to the remote cache.
    let options = exec::ExecOptions {
        check: opts.check,
        secrets: opts.spec.secrets.clone(),
        cache_scope: cache_scope(&opts.spec.spec),
        ..Default::default()
    };
    let mut summary = exec::execute_then(&planned.plan, &planned.store, remote.as_ref(), &planned.clients, reporter, &options, |ex| {
        export_all(opts, &planned, ex, reporter)
    })?;
    // What the pinning round ran or fetched counts as that, not as found in the store after.
    if let Some(p) = pinning {
        let d = &mut summary.derivations;
        d.local = d.local.saturating_sub(p.built + p.remote);
        d.built += p.built;
        d.remote += p.remote;
    }
    if !summary.mismatches.is_empty() {
        return Err(Error::NotReproducible(summary.mismatches));
    }
    Ok(summary)
}

/// Run the fixed-output steps that have no pin for their current recipe, pin what they yield in
/// the lockfile (refused with `--locked` or `--offline`), and plan again with the pins; with
/// what that round counted, when it ran.
pub fn pin_steps(
    opts: &SpecOptions,
    planned: Planned,
    remote: Option<&crate::remote::RemoteCache>,
    reporter: &dyn Reporter,
) -> Result<(Planned, Option<exec::Counts>), Error> {
    let unpinned = planned.plan.unpinned_steps();
    let Some(&first) = unpinned.first() else { return Ok((planned, None)) };
    let path = lock::path_for(&opts.spec);
    let step_name = |n: petgraph::graph::NodeIndex| match &planned.plan.graph[n].kind {
        plan::DrvKind::Step(s) => s.lock_key.clone(),
        _ => planned.plan.graph[n].name.clone(),
    };
    if opts.locked {
        return Err(Error::StepUnpinned { path, step: step_name(first) });
    }
    if opts.offline {
        return Err(Error::Usage(format!(
            "fixed-output step `{}` must run to be pinned, which needs the network, but --offline is set",
            step_name(first)
        )));
    }
    // Each runs twice, and a pin only of what it gives both times: a result that differs (a
    // `pip install` that byte-compiles, a tool that writes the time) would fail every later
    // build on another machine.
    let options = exec::ExecOptions {
        roots: Some(unpinned.clone()),
        check_also: unpinned.clone(),
        secrets: opts.secrets.clone(),
        cache_scope: cache_scope(&opts.spec),
        ..Default::default()
    };
    let ex = exec::execute_then(&planned.plan, &planned.store, remote, &planned.clients, reporter, &options, Ok::<_, Error>)?;
    if !ex.mismatches.is_empty() {
        return Err(Error::PinNotReproducible(ex.mismatches));
    }
    let mut lockfile = lock::Lockfile::read(&path)?.unwrap_or_default();
    for n in unpinned {
        let plan::DrvKind::Step(s) = &planned.plan.graph[n].kind else { continue };
        let rec = ex.records.get(&n).ok_or_else(|| Error::Internal(format!("step {} ran but left no record", s.step)))?;
        let tree = exec::output(rec, "tree")?;
        let diff_id = tree.diff_id.ok_or_else(|| Error::Internal(format!("step {} has no diff_id", s.step)))?;
        lockfile.steps.insert(s.lock_key.clone(), lock::StepLock { recipe: s.recipe.hex(), output: diff_id.to_string() });
        // The same result, found under the pinned derivation the next plan will ask for.
        let pinned = crate::store::Record { drv: plan::fixed_output_hash(&diff_id), ..rec.clone() };
        planned.store.put_record(&pinned)?;
    }
    lockfile.steps.retain(|k, _| planned.spec.step(lock::step_of_key(k)).is_some_and(|s| s.network));
    lockfile.write(&path)?;
    drop(planned);
    let again = load_and_plan(opts)?;
    if let Some(&n) = again.plan.unpinned_steps().first() {
        return Err(Error::Internal(format!("{} is still unpinned after pinning", again.plan.graph[n].name)));
    }
    Ok((again, Some(ex.counts)))
}

/// Export (and push) every image of an executed plan.
fn export_all(opts: &BuildOptions, planned: &Planned, ex: exec::Executed, reporter: &dyn Reporter) -> Result<BuildSummary, Error> {
    let mut images = Vec::new();
    for pi in planned.plan.images.iter().filter(|i| i.export) {
        let fin = image::finished(&planned.plan, &ex, &planned.store, &pi.name, &pi.tag, pi.root)?;
        let path = image::export(&planned.store, &fin, &opts.out, opts.format)?;
        write_sbom(planned, &ex, pi, &fin, &opts.out)?;
        let pushed = match &opts.push {
            Some(target) => {
                // Base layers pulled from repositories of the target's registry can be mounted.
                let registry = target.split('/').next().unwrap_or_default();
                let mut mount_from: Vec<String> = planned
                    .plan
                    .graph
                    .node_weights()
                    .filter_map(|d| match &d.kind {
                        plan::DrvKind::Blob(b) => match &b.source {
                            crate::base::BlobSource::Registry { repo, .. } if repo.split('/').next() == Some(registry) => {
                                Some(repo.clone())
                            }
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect();
                mount_from.sort();
                mount_from.dedup();
                let err = |source: image::PushError| Error::Push {
                    target: target.to_string(),
                    help: super::push_help(target, &source),
                    source: Box::new(source),
                };
                let reg =
                    planned.clients.registry().map_err(|m| err(image::PushError::Registry(crate::registry::RegistryError::Setup(m))))?;
                Some(image::push(&planned.store, &fin, target, reg, &mount_from).map_err(err)?)
            }
            None => None,
        };
        images.push(BuiltImage {
            name: pi.name.clone(),
            tag: pi.tag.clone(),
            digest: fin.root.digest.to_string(),
            output: path.display().to_string(),
            pushed,
        });
    }
    // What was built in each place of this spec, for `compose explain` next time: bookkeeping
    // that never fails the build it describes.
    let names = ex.records.keys().map(|&n| (plan::slot(&planned.plan, n), planned.plan.graph[n].hash)).collect();
    if let Err(e) = planned.store.set_last_built(&super::explain::spec_key(&opts.spec.spec), &names) {
        reporter.warning(&format!("cannot remember what was built, for `compose explain`: {}", crate::util::chain_message(&e)));
    }
    Ok(BuildSummary { images, derivations: ex.counts, hashed_files: planned.scanner_stats.0, mismatches: ex.mismatches, check: ex.check })
}

/// `out/<image>.spdx.json`, for images with packages.
fn write_sbom(planned: &Planned, ex: &exec::Executed, pi: &plan::PlannedImage, fin: &image::Finished, out: &Path) -> Result<(), Error> {
    let Some(lock) = planned.lock.as_ref().and_then(|l| l.images.get(&pi.name)) else { return Ok(()) };
    if lock.platforms.values().all(|p| p.packages.is_empty()) {
        return Ok(());
    }
    let mut licences: HashMap<String, Vec<String>> = HashMap::new();
    for n in planned.plan.graph.node_indices() {
        if let plan::DrvKind::DebLayer(d) = &planned.plan.graph[n].kind {
            if let Some(rec) = ex.records.get(&n) {
                licences.insert(d.package.clone(), exec::packages::licences_of(&planned.store, rec));
            }
        }
    }
    let lookup = |p: &lock::PackageLock| licences.get(&format!("{}={}", p.name, p.version)).cloned().unwrap_or_default();
    let bytes = crate::sbom::document(&pi.name, &pi.tag, &fin.root.digest.to_string(), fin.epoch, Some(lock), &lookup);
    let dest = out.join(format!("{}.spdx.json", pi.name));
    crate::util::write_atomic(&dest, &bytes, 0o644, None).map_err(|e| Error::Image(ImageError::Io(e)))?;
    Ok(())
}
