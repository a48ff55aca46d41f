//! One derivation's operation: what running each kind of derivation means (a layer of files or
//! copies, a package layer, a step, maintainer scripts, an image, an index), as a record.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use petgraph::graph::NodeIndex;

use crate::clients::Clients;
use crate::oci::{self as image, Descriptor};
use crate::plan::{Derivation, DrvKind, Plan, PlannedEntry};
use crate::store::{Output, Record, Store, RECORD_VERSION};

use super::assemble::oci_platform;
use super::*;

pub(crate) fn output<'r>(r: &'r Record, key: &'static str) -> Result<&'r Output, BuildError> {
    r.outputs.get(key).ok_or_else(|| BuildError::MissingOutput(r.drv.to_string(), key))
}

/// The platform step `s` runs on: its image's.
pub(super) fn step_platform(plan: &Plan, s: &crate::plan::StepDrv) -> String {
    match &plan.graph[s.image].kind {
        DrvKind::Image(i) => i.platform.to_string(),
        _ => String::new(),
    }
}

/// What running a derivation uses: the plan, the store, the clients, the options, the reporter.
pub(super) struct With<'a> {
    pub plan: &'a Plan,
    pub store: &'a Store,
    pub clients: &'a Clients,
    pub options: &'a ExecOptions,
    pub reporter: &'a dyn Reporter,
}

/// Run derivation `n` (a step with `caches`) over its dependencies' records.
pub(super) fn run(with: &With<'_>, n: NodeIndex, deps: &HashMap<NodeIndex, Record>, caches: CacheUse) -> Result<Record, BuildError> {
    let With { plan, store, clients, options, reporter } = *with;
    let drv = &plan.graph[n];
    let mut outputs = BTreeMap::new();
    match &drv.kind {
        DrvKind::Layer(l) if l.parts.is_empty() => {
            outputs.insert("layer".to_string(), build_layer(&drv.name, &l.entries, l.epoch, l.compression, store)?);
        }
        DrvKind::Layer(l) => {
            outputs.insert("layer".to_string(), layer_with_copies(plan, &drv.name, l, deps, store)?);
        }
        DrvKind::Scripts(sc) => {
            let runc = local_executor(&format!("maintainer scripts of {}", sc.image))?;
            let (log, layer) = super::scripts::run_scripts(&runc, drv, sc, deps, store, reporter)?;
            outputs.insert("log".to_string(), log);
            outputs.insert("layer".to_string(), layer);
        }
        DrvKind::Step(s) => {
            let runc = local_executor(&s.step)?;
            let platform = step_platform(plan, s);
            let image = plan.graph[s.image].name.trim_end_matches(": image").to_string();
            let how = step::RunWith { executor: &runc, secrets: &options.secrets, platform, scope: &options.cache_scope, caches, image };
            let (log, tree) = step::run_step(&how, drv, s, deps, store, reporter)?;
            outputs.insert("log".to_string(), log);
            outputs.insert("tree".to_string(), tree);
        }
        DrvKind::Fetch(f) => {
            outputs.insert("file".to_string(), packages::fetch(f, store, clients)?);
        }
        DrvKind::Blob(b) => {
            outputs.insert("file".to_string(), packages::base_blob(b, store, clients)?);
        }
        DrvKind::DebLayer(d) => {
            let o = packages::deb_layer(plan, d, deps, store)?;
            outputs.insert("layer".to_string(), o.layer);
            outputs.insert("files".to_string(), o.files);
            outputs.insert("licences".to_string(), o.licences);
            outputs.insert("status".to_string(), o.status);
            outputs.insert("facts".to_string(), o.facts);
        }
        DrvKind::MergedLayer(m) => {
            let (layer, files) = packages::merged_layer(&drv.name, plan, m, deps, store)?;
            outputs.insert("layer".to_string(), layer);
            outputs.insert("files".to_string(), files);
        }
        DrvKind::Meta(m) => {
            let entries = packages::meta_entries(m, deps, store)?;
            outputs.insert("layer".to_string(), build_layer(&drv.name, &entries, m.epoch, m.compression, store)?);
        }
        DrvKind::Image(img) => {
            let (config, manifest) = build_image(plan, img, deps, store)?;
            outputs.insert("config".to_string(), config);
            outputs.insert("manifest".to_string(), manifest);
        }
        DrvKind::Index(ix) => {
            let mut manifests = Vec::new();
            for &i in &ix.images {
                let rec = deps.get(&i).ok_or_else(|| BuildError::MissingOutput(plan.graph[i].name.clone(), "manifest"))?;
                let m = output(rec, "manifest")?;
                let mut d = Descriptor::new(image::MANIFEST_MEDIA_TYPE, m.digest, m.size);
                if let DrvKind::Image(img) = &plan.graph[i].kind {
                    d.platform = Some(oci_platform(&img.platform));
                }
                manifests.push(d);
            }
            let bytes = image::index_json(&manifests);
            let digest = store.put_bytes(&bytes)?;
            outputs.insert(
                "index".to_string(),
                Output { digest, size: bytes.len() as u64, media_type: image::INDEX_MEDIA_TYPE.into(), diff_id: None },
            );
        }
    }
    Ok(Record { version: RECORD_VERSION, drv: drv.hash, kind: drv.kind.name().into(), outputs, inputs: crate::plan::describe(plan, n) })
}

/// A layer with `copy from=`: each source tree made available (a step's output unpacked, an
/// image's root filesystem), the copies' entries read from it, and every operation merged in order.
fn layer_with_copies(
    plan: &Plan,
    name: &str,
    l: &crate::plan::LayerDrv,
    deps: &HashMap<NodeIndex, Record>,
    store: &Store,
) -> Result<Output, BuildError> {
    // Each source's tree, and what keeps it: a step's unpacked tree, or an image's kept one in use.
    let mut unpacked: HashMap<NodeIndex, (PathBuf, Option<tempfile::TempDir>, Option<trees::InUse>)> = HashMap::new();
    // What this layer copies from each step: only that is unpacked.
    let mut wanted: HashMap<NodeIndex, Vec<&str>> = HashMap::new();
    for part in &l.parts {
        if let crate::plan::LayerPart::From(c) = part {
            wanted.entry(c.source).or_default().push(&c.src);
        }
    }
    let mut parts: Vec<Vec<PlannedEntry>> = Vec::new();
    for part in &l.parts {
        match part {
            crate::plan::LayerPart::Entries(e) => parts.push(e.clone()),
            crate::plan::LayerPart::From(c) => {
                let source = &plan.graph[c.source];
                let rec = deps.get(&c.source).ok_or_else(|| BuildError::MissingOutput(source.name.clone(), "tree"))?;
                if let std::collections::hash_map::Entry::Vacant(slot) = unpacked.entry(c.source) {
                    let entry = match &source.kind {
                        DrvKind::Step(_) => {
                            let tree = output(rec, "tree")?;
                            let tmp_root = store.tmp_dir();
                            let dir = tempfile::Builder::new()
                                .prefix("tree-")
                                .tempdir_in(&tmp_root)
                                .map_err(trees::io_error(&tmp_root, "cannot create a directory in"))?;
                            let srcs = wanted.get(&c.source).map(Vec::as_slice).unwrap_or_default();
                            trees::unpack_for(&store.blob_path(&tree.digest), &tree.media_type, dir.path(), srcs)
                                .map_err(|e| drop_tree(store, source, e))?;
                            (dir.path().to_path_buf(), Some(dir), None)
                        }
                        _ => {
                            let tree = trees::image_rootfs(store, rec)?;
                            (tree.to_path_buf(), None, Some(tree))
                        }
                    };
                    slot.insert(entry);
                }
                let root = unpacked.get(&c.source).map(|(p, _, _)| p.clone()).unwrap_or_default();
                let (what, shown) = match &source.kind {
                    DrvKind::Step(s) if c.src.is_empty() => (format!("the output of step `{}`", s.step), s.output.clone()),
                    DrvKind::Step(s) => {
                        (format!("the output of step `{}`", s.step), format!("{}/{}", s.output.trim_end_matches('/'), c.src))
                    }
                    _ => (format!("image {}", source.name), c.src.clone()),
                };
                let copied = trees::copy_entries(c, &root, &what, &shown);
                parts.push(if matches!(source.kind, DrvKind::Step(_)) {
                    copied.map_err(|e| drop_tree(store, source, e))?
                } else {
                    copied?
                });
            }
        }
    }
    let entries =
        crate::plan::merge_parts(l.merged_usr, parts).map_err(|message| BuildError::CopyFrom { message: format!("{name}: {message}") })?;
    build_layer(name, &entries, l.epoch, l.compression, store)
}

/// A copy from step `source`'s tree failed (the path is missing, or the tree leads out of
/// itself): drop the step's record, so that a tree a cache handed out cannot fail every later
/// build; the next build runs the step here and copies from what it makes.
fn drop_tree(store: &Store, source: &Derivation, e: BuildError) -> BuildError {
    store.forget(&source.hash);
    BuildError::CopyFrom {
        message: format!(
            "{}; the stored output of {} was dropped: if it came from a cache, the next build runs the step here",
            crate::util::chain_message(&e),
            source.name
        ),
    }
}

/// The executor jobs run with: runc on this machine (found, and checked usable, when a job needs it).
fn local_executor(job: &str) -> Result<super::executor::Runc, BuildError> {
    super::executor::Runc::find().map_err(|e| BuildError::Sandbox { step: job.to_string(), source: e })
}
