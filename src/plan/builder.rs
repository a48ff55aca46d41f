//! The `Builder`: turns each spec image into derivations (files layers, base blobs, image and
//! index nodes, runtime config), deduplicated by `DrvHash`; and the order images are planned in.

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::NodeIndex;

use super::accounts::{accounts_entries, accounts_text, Ids};
use super::entries::{join, Conflict, LayerEntries};
use super::{
    BlobDrv, Content, Derivation, DrvKind, EntryKind, ImageBase, ImageDrv, IndexDrv, LayerDrv, Plan, PlanInputs, PlannedEntry,
    PlannedImage, RuntimeConfig, DEFAULT_EPOCH,
};
use crate::hash::{ContentHash, DrvHash, Encoder, Sha256};
use crate::source::SourceKind;
use crate::spec::{Base, FileOp, ImageSpec, OwnerSpec, SpecDiagnostic, SpecFile};

pub(super) struct Builder<'a> {
    /// Image derivations by (image name, platform), for `base image="NAME"`.
    pub(super) image_nodes: HashMap<(String, String), NodeIndex>,
    /// The `/etc/passwd` and `/etc/group` each planned image ends up with, by (image, platform).
    pub(super) accounts_of: HashMap<(String, String), (String, String)>,
    pub(super) spec: &'a SpecFile,
    pub(super) inputs: &'a PlanInputs<'a>,
    pub(super) plan: Plan,
    pub(super) by_hash: HashMap<DrvHash, NodeIndex>,
    pub(super) errors: Vec<SpecDiagnostic>,
}

impl Builder<'_> {
    pub(super) fn add(&mut self, drv: Derivation, deps: &[NodeIndex]) -> NodeIndex {
        if let Some(&n) = self.by_hash.get(&drv.hash) {
            return n;
        }
        let hash = drv.hash;
        let n = self.plan.graph.add_node(drv);
        for &d in deps {
            self.plan.graph.add_edge(d, n, ());
        }
        self.by_hash.insert(hash, n);
        n
    }

    pub(super) fn image(&mut self, image: &ImageSpec, output: bool) {
        let epoch = self.inputs.source_date_epoch.or(image.epoch).unwrap_or(DEFAULT_EPOCH);
        let packaged = !image.packages.is_empty();
        let mut common: Vec<NodeIndex> = Vec::new();

        let first = image.platforms.first().map(|p| p.to_string()).unwrap_or_default();
        let ids = Ids::new(image.accounts.as_ref(), self.inherited_accounts(image, &first).as_ref());
        if let (Some(accounts), false) = (&image.accounts, packaged) {
            let inherited = self.inherited_accounts(image, &first);
            let entries = accounts_entries(accounts, inherited.as_ref());
            common.push(self.layer(&image.name, "accounts", entries, epoch));
        }
        if !image.files.is_empty() {
            if let Some(entries) = self.merge_ops(&image.files, &ids, packaged) {
                common.push(self.layer(&image.name, "files", entries, epoch));
            }
        }
        for l in &image.layers {
            if let Some(entries) = self.merge_ops(&l.ops, &ids, packaged) {
                common.push(self.layer(&image.name, &format!("layer \"{}\"", l.name), entries, epoch));
            }
        }
        let config = self.runtime_config(image, &ids);
        let mut images = Vec::new();
        for platform in &image.platforms {
            let mut layers = Vec::new();
            let mut packages = Vec::new();
            let mut base_deps = Vec::new();
            let base = match &image.base {
                Base::Scratch => None,
                Base::Image { name, span } => match self.image_nodes.get(&(name.clone(), platform.to_string())) {
                    Some(&n) => {
                        base_deps.push(n);
                        Some(ImageBase::Image(n))
                    }
                    None => {
                        self.errors.push(self.spec.diagnostic(
                            "compose::spec::base_platform",
                            *span,
                            format!("image `{name}` is not built for {platform}, which `{}` needs", image.name),
                            "this base",
                            Some(format!("add \"{platform}\" to the `platforms` of `{name}`")),
                        ));
                        continue;
                    }
                },
                _ => match self.inputs.bases.get(&(image.name.clone(), platform.to_string())) {
                    Some(b) => {
                        let mut layers = Vec::new();
                        for l in &b.layers {
                            let drv = Derivation {
                                hash: Encoder::new("blob").sha256(&l.digest).finish(),
                                name: format!("base layer {} of {}", &l.digest.hex()[..12], b.reference),
                                kind: DrvKind::Blob(BlobDrv { layer: l.clone(), source: b.source.clone(), reference: b.reference.clone() }),
                            };
                            let n = self.add(drv, &[]);
                            base_deps.push(n);
                            layers.push((l.clone(), n));
                        }
                        Some(ImageBase::External { manifest: b.manifest_digest, config: Arc::new(b.config.clone()), layers })
                    }
                    None => {
                        self.errors.push(self.spec.diagnostic(
                            "compose::spec::base",
                            image.span,
                            format!("the base of `{}` was not loaded for {platform}", image.name),
                            "this image",
                            None,
                        ));
                        continue;
                    }
                },
            };
            if packaged {
                let pins = self.inputs.lock.and_then(|l| l.images.get(&image.name)).and_then(|l| l.platforms.get(&platform.to_string()));
                let Some(pins) = pins else {
                    self.errors.push(self.spec.diagnostic(
                        "compose::lock::missing",
                        image.span,
                        format!("the lockfile has no packages for image `{}` on {platform}", image.name),
                        "this image",
                        Some("run `compose lock` to resolve them".into()),
                    ));
                    continue;
                };
                let tz = config.env.iter().find_map(|e| e.strip_prefix("TZ=")).unwrap_or("Etc/UTC").to_string();
                let (pkg_layers, per_package, meta) = self.package_layers(image, platform, &pins.packages, epoch, common.len(), tz);
                layers.extend(pkg_layers);
                layers.push(meta);
                packages = per_package;
            }
            layers.extend(common.iter().copied());
            let drv = ImageDrv { platform: platform.clone(), base, layers: layers.clone(), packages, config: config.clone(), epoch };
            let hash = self.image_hash(&drv);
            let name =
                if image.platforms.len() > 1 { format!("{}: image {}", image.name, platform) } else { format!("{}: image", image.name) };
            // The image also needs each package layer's file list (for the conflict check), merged or not.
            let mut deps = layers.clone();
            deps.extend(drv.packages.iter().map(|p| p.layer).filter(|n| !layers.contains(n)));
            deps.extend(base_deps);
            let node = self.add(Derivation { hash, name, kind: DrvKind::Image(Box::new(drv)) }, &deps);
            self.image_nodes.insert((image.name.clone(), platform.to_string()), node);
            let inherited = self.inherited_accounts(image, &platform.to_string());
            let effective = match &image.accounts {
                Some(a) => Some(accounts_text(a, inherited.as_ref())),
                None => inherited,
            };
            if let Some(e) = effective {
                self.accounts_of.insert((image.name.clone(), platform.to_string()), e);
            }
            images.push(node);
        }
        if images.is_empty() || !output {
            return;
        }
        let root = if images.len() == 1 {
            images[0]
        } else {
            let mut e = Encoder::new("index");
            e.list(images.len());
            for &i in &images {
                e.drv(&self.plan.graph[i].hash);
            }
            let drv = Derivation {
                hash: e.finish(),
                name: format!("{}: index", image.name),
                kind: DrvKind::Index(IndexDrv { images: images.clone() }),
            };
            self.add(drv, &images)
        };
        self.plan.images.push(PlannedImage { name: image.name.clone(), tag: image.tag.clone(), root });
    }

    /// The base's `/etc/passwd` and `/etc/group` for `platform`, if the image has a base that has them.
    pub(super) fn inherited_accounts(&self, image: &ImageSpec, platform: &str) -> Option<(String, String)> {
        match &image.base {
            Base::Scratch => None,
            Base::Image { name, .. } => self.accounts_of.get(&(name.clone(), platform.to_string())).cloned(),
            _ => self.inputs.bases.get(&(image.name.clone(), platform.to_string())).and_then(|b| {
                let text = |p: &str| b.files.get(p).map(|v| String::from_utf8_lossy(v).into_owned());
                Some((text("etc/passwd")?, text("etc/group")?))
            }),
        }
    }

    fn layer(&mut self, image: &str, what: &str, entries: Vec<PlannedEntry>, epoch: u64) -> NodeIndex {
        let mut e = Encoder::new("files-layer");
        e.str(self.inputs.layer_format).u64(epoch).list(entries.len());
        for entry in &entries {
            e.str(&entry.path).u64(entry.mode as u64).u64(entry.uid as u64).u64(entry.gid as u64);
            match &entry.kind {
                EntryKind::Dir => {
                    e.str("dir");
                }
                EntryKind::Symlink { target } => {
                    e.str("symlink").str(target);
                }
                EntryKind::File { size, content } => {
                    e.str("file").u64(*size);
                    match content {
                        Content::Inline(bytes) => e.content(&ContentHash::of(bytes)),
                        Content::Local { hash, .. } => e.content(hash),
                    };
                }
            }
        }
        let created_by = format!("compose: {what}");
        let drv = Derivation {
            hash: e.finish(),
            name: format!("{image}: {what}"),
            kind: DrvKind::Layer(LayerDrv { entries, epoch, created_by }),
        };
        self.add(drv, &[])
    }

    fn image_hash(&self, drv: &ImageDrv) -> DrvHash {
        let mut e = Encoder::new("image");
        e.str(&drv.platform.os).str(&drv.platform.architecture).opt_str(drv.platform.variant.as_deref());
        e.u64(drv.epoch);
        match &drv.base {
            None => {
                e.str("scratch");
            }
            Some(ImageBase::External { manifest, .. }) => {
                e.str("external").sha256(manifest);
            }
            Some(ImageBase::Image(n)) => {
                e.str("image").drv(&self.plan.graph[*n].hash);
            }
        }
        e.list(drv.layers.len());
        for &l in &drv.layers {
            e.drv(&self.plan.graph[l].hash);
        }
        e.list(drv.packages.len());
        for p in &drv.packages {
            e.drv(&self.plan.graph[p.layer].hash).list(p.packages.len());
            for n in p.packages.iter().chain(p.replaces.iter()) {
                e.str(n);
            }
        }
        let c = &drv.config;
        e.list(c.env.len());
        for v in &c.env {
            e.str(v);
        }
        for list in [&c.entrypoint, &c.cmd] {
            match list {
                None => {
                    e.opt_str(None);
                }
                Some(v) => {
                    e.list(v.len());
                    for s in v {
                        e.str(s);
                    }
                }
            }
        }
        e.opt_str(c.workdir.as_deref()).opt_str(c.user.as_deref()).opt_str(c.stop_signal.as_deref());
        for set in [&c.exposed, &c.volumes] {
            e.list(set.len());
            for s in set {
                e.str(s);
            }
        }
        e.list(c.labels.len());
        for (k, v) in &c.labels {
            e.str(k).str(v);
        }
        e.finish()
    }

    fn runtime_config(&mut self, image: &ImageSpec, ids: &Ids) -> RuntimeConfig {
        let c = &image.config;
        let mut env: Vec<(String, String)> = Vec::new();
        for (k, v) in &c.env {
            match env.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v.clone(),
                None => env.push((k.clone(), v.clone())),
            }
        }
        if let Some((user, span)) = &c.user {
            if let Err(msg) = ids.check_user(user) {
                self.errors.push(self.spec.diagnostic("compose::spec::unknown_user", *span, msg, "this user", Some(ids.help())));
            }
        }
        RuntimeConfig {
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            workdir: c.workdir.clone(),
            user: c.user.as_ref().map(|(u, _)| u.clone()),
            exposed: c.expose.iter().cloned().collect(),
            volumes: c.volumes.iter().cloned().collect(),
            labels: c.labels.clone(),
            stop_signal: c.stop_signal.clone(),
        }
    }

    /// Merge file operations into one layer's sorted entry list.
    fn merge_ops(&mut self, ops: &[FileOp], ids: &Ids, merged_usr: bool) -> Option<Vec<PlannedEntry>> {
        let mut layer = LayerEntries { merged_usr, ..LayerEntries::default() };
        let errors_before = self.errors.len();
        for op in ops {
            match op {
                FileOp::Copy { src, src_span, to, to_dir, mode, dir_mode, owner, span } => {
                    let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { continue };
                    let Some(scanned) = self.inputs.sources.get(src) else {
                        self.errors.push(self.spec.diagnostic(
                            "compose::spec::source",
                            *src_span,
                            format!("copy source `{src}` was not scanned"),
                            "here",
                            None,
                        ));
                        continue;
                    };
                    let dest_root = if scanned.root_is_dir() || !to_dir {
                        to.clone()
                    } else {
                        let base = src.trim_end_matches('/').rsplit('/').next().unwrap_or(src);
                        join(to, base)
                    };
                    for se in &scanned.entries {
                        let path = if se.rel.is_empty() { dest_root.clone() } else { join(&dest_root, &se.rel) };
                        let (kind, mode) = match &se.kind {
                            SourceKind::Dir => (EntryKind::Dir, dir_mode.unwrap_or(0o755)),
                            SourceKind::Symlink { target } => (EntryKind::Symlink { target: target.clone() }, 0o777),
                            SourceKind::File { size, hash, executable } => (
                                EntryKind::File { size: *size, content: Content::Local { abs: se.abs.clone(), hash: *hash } },
                                mode.unwrap_or(if *executable { 0o755 } else { 0o644 }),
                            ),
                        };
                        let entry = PlannedEntry { path, kind, mode, uid, gid };
                        if let Err(msg) = layer.insert(entry, *span) {
                            self.errors.push(self.conflict(msg));
                        }
                    }
                }
                FileOp::Text { path, content, mode, owner, span } => {
                    let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { continue };
                    let bytes = Arc::new(content.as_bytes().to_vec());
                    let entry = PlannedEntry {
                        path: path.clone(),
                        kind: EntryKind::File { size: bytes.len() as u64, content: Content::Inline(bytes) },
                        mode: mode.unwrap_or(0o644),
                        uid,
                        gid,
                    };
                    if let Err(msg) = layer.insert(entry, *span) {
                        self.errors.push(self.conflict(msg));
                    }
                }
                FileOp::Symlink { path, target, owner, span } => {
                    let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { continue };
                    let entry =
                        PlannedEntry { path: path.clone(), kind: EntryKind::Symlink { target: target.clone() }, mode: 0o777, uid, gid };
                    if let Err(msg) = layer.insert(entry, *span) {
                        self.errors.push(self.conflict(msg));
                    }
                }
                FileOp::Dir { path, mode, owner, span } => {
                    let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { continue };
                    let entry = PlannedEntry { path: path.clone(), kind: EntryKind::Dir, mode: mode.unwrap_or(0o755), uid, gid };
                    if let Err(msg) = layer.insert(entry, *span) {
                        self.errors.push(self.conflict(msg));
                    }
                }
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(layer.finish())
    }

    fn conflict(&self, c: Conflict) -> SpecDiagnostic {
        self.spec.diagnostic("compose::spec::path_conflict", c.span, c.message, "this operation", c.help)
    }

    fn owner(&mut self, owner: Option<&OwnerSpec>, ids: &Ids) -> Option<(u32, u32)> {
        let Some(o) = owner else { return Some((0, 0)) };
        match ids.resolve(&o.owner) {
            Ok(ids) => Some(ids),
            Err(msg) => {
                self.errors.push(self.spec.diagnostic("compose::spec::unknown_owner", o.span, msg, "unknown owner", Some(ids.help())));
                None
            }
        }
    }
}

/// The images to plan, parents (`base image="NAME"`) first; with `only`, it and its ancestors.
pub(super) fn image_order<'s>(spec: &'s SpecFile, only: Option<&str>) -> Vec<&'s ImageSpec> {
    let mut out: Vec<&ImageSpec> = Vec::new();
    fn visit<'s>(spec: &'s SpecFile, image: &'s ImageSpec, out: &mut Vec<&'s ImageSpec>, depth: usize) {
        if depth > spec.images.len() || out.iter().any(|i| i.name == image.name) {
            return;
        }
        if let Base::Image { name, .. } = &image.base {
            if let Some(parent) = spec.image(name) {
                visit(spec, parent, out, depth + 1);
            }
        }
        out.push(image);
    }
    for image in &spec.images {
        if only.is_none_or(|n| n == image.name) {
            visit(spec, image, &mut out, 0);
        }
    }
    out
}

pub(super) fn sha_of(d: &Derivation) -> Sha256 {
    match &d.kind {
        DrvKind::Fetch(f) => f.sha256,
        _ => Sha256([0; 32]),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::plan::FetchDrv;

    #[test]
    fn image_order_puts_bases_first_and_only_keeps_ancestors() {
        let text = r#"
image "child" { base image="middle"; }
image "other" { }
image "middle" { base image="root"; }
image "root" { }
"#;
        let spec = crate::spec::parse_str(Path::new("t.kdl"), text).unwrap();
        let order = |only: Option<&str>| image_order(&spec, only).iter().map(|i| i.name.as_str()).collect::<Vec<_>>();
        assert_eq!(order(None), ["root", "middle", "child", "other"]);
        assert_eq!(order(Some("child")), ["root", "middle", "child"]);
        assert_eq!(order(Some("middle")), ["root", "middle"]);
        assert_eq!(order(Some("other")), ["other"]);
        assert!(order(Some("missing")).is_empty());
    }

    #[test]
    fn sha_of_is_a_fetch_digest_and_zero_otherwise() {
        let sha = Sha256::of(b"deb");
        let fetch = Derivation {
            hash: Encoder::new("fetch").sha256(&sha).finish(),
            name: "fetch".into(),
            kind: DrvKind::Fetch(FetchDrv { package: "x=1".into(), sha256: sha, size: 3, url: Err("none".into()), repository: "d".into() }),
        };
        assert_eq!(sha_of(&fetch), sha);
        let index =
            Derivation { hash: Encoder::new("index").finish(), name: "index".into(), kind: DrvKind::Index(IndexDrv { images: vec![] }) };
        assert_eq!(sha_of(&index), Sha256([0; 32]));
    }
}
