//! The `Planner`: turns each spec image into derivations (files layers, base blobs, image and
//! index nodes, runtime config), deduplicated by `DrvHash`; and the order images are planned in.

use crate::layer::Compression;
use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::NodeIndex;

use super::accounts::{accounts_entries, accounts_text, Ids};
use super::entries::{join, Conflict, LayerEntries};
use super::{
    BlobDrv, Content, CopyFrom, Derivation, DrvKind, EntryKind, ImageBase, ImageDrv, IndexDrv, LayerDrv, LayerPart, Plan, PlanInputs,
    PlannedEntry, PlannedImage, RuntimeConfig, DEFAULT_EPOCH,
};
use crate::hash::{ContentHash, DrvHash, Encoder, Sha256};
use crate::source::SourceKind;
use crate::spec::{Base, FileOp, ImageSpec, OwnerSpec, Platform, SpecDiagnostic, SpecFile};

/// File operations merged into one layer: the entries of those known now, and (with `copy
/// from=`) every operation in order.
pub(super) struct Merged {
    what: String,
    entries: Vec<PlannedEntry>,
    /// Empty unless a `copy from=` is among the operations.
    parts: Vec<PendingPart>,
    merged_usr: bool,
}

enum PendingPart {
    Entries(Vec<PlannedEntry>),
    /// A `copy from=`: the name of its step or image, resolved per platform.
    From {
        name: String,
        span: miette::SourceSpan,
        copy: CopyFrom,
    },
}

/// What an image's spec adds on every platform (see [`Planner::own_layers`]).
struct OwnLayers {
    merged: Vec<Merged>,
    config: RuntimeConfig,
    /// The working directory the metadata layer makes (images with packages).
    workdir: Option<String>,
}

pub(super) struct Planner<'a> {
    /// Image derivations by (image name, platform), for `base image="NAME"`.
    pub(super) image_nodes: HashMap<(String, String), NodeIndex>,
    /// The `/etc/passwd` and `/etc/group` each planned image ends up with, by (image, platform).
    pub(super) accounts_of: HashMap<(String, String), (String, String)>,
    pub(super) spec: &'a SpecFile,
    pub(super) inputs: &'a PlanInputs<'a>,
    pub(super) plan: Plan,
    pub(super) by_hash: HashMap<DrvHash, NodeIndex>,
    pub(super) errors: Vec<SpecDiagnostic>,
    /// Step derivations by step name and the platform of what copies from it.
    pub(super) step_nodes: HashMap<(String, String), NodeIndex>,
    /// How the layers being planned are compressed: the image's (or `--compression`); gzip for
    /// a step's inputs and tree.
    pub(super) compression: Compression,
}

impl Planner<'_> {
    /// The layer format (tar rules, chunking, compressor) of the layers being planned.
    pub(super) fn format(&self) -> &'static str {
        (self.inputs.layer_format)(self.compression)
    }

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

    pub(super) fn image(&mut self, image: &ImageSpec, output: bool, export: bool) {
        self.compression = self.inputs.compression.unwrap_or(image.compression);
        let epoch = self.inputs.source_date_epoch.or(image.epoch).unwrap_or(DEFAULT_EPOCH);
        let own = self.own_layers(image);
        let mut images = Vec::new();
        for platform in &image.platforms {
            if let Some(node) = self.platform_image(image, platform, &own, epoch) {
                images.push(node);
            }
        }
        if images.is_empty() || !output {
            return;
        }
        let root = self.image_root(image, &images);
        self.plan.images.push(PlannedImage { name: image.name.clone(), tag: image.tag.clone(), root, export });
    }

    /// What an image's spec adds on every platform: its file layers (accounts, `files`, each
    /// `layer`, the working directory), its runtime config, and the workdir the metadata layer
    /// makes instead when the image has packages.
    fn own_layers(&mut self, image: &ImageSpec) -> OwnLayers {
        let packaged = !image.packages.is_empty();
        let mut merged: Vec<Merged> = Vec::new();

        let first = image.platforms.first().map(|p| p.to_string()).unwrap_or_default();
        // An image with packages gets its ecosystem's default users and groups (the metadata
        // layer writes them) unless its base has its own.
        let (passwd, group) = self.inputs.default_accounts;
        let defaults = || (passwd.to_string(), group.to_string());
        let known = self.inherited_accounts(image, &first).or_else(|| packaged.then(defaults));
        let ids = Ids::new(image.accounts.as_ref(), known.as_ref());
        if let (Some(accounts), false) = (&image.accounts, packaged) {
            let inherited = self.inherited_accounts(image, &first);
            let entries = accounts_entries(accounts, inherited.as_ref());
            merged.push(Merged { what: "accounts".into(), entries, parts: Vec::new(), merged_usr: false });
        }
        if !image.files.is_empty() {
            if let Some(m) = self.merge_ops("files", &image.files, &ids, packaged) {
                merged.push(m);
            }
        }
        for l in &image.layers {
            if let Some(m) = self.merge_ops(&format!("layer \"{}\"", l.name), &l.ops, &ids, packaged) {
                merged.push(m);
            }
        }
        let config = self.runtime_config(image, &ids);
        // `workdir`, as Docker's WORKDIR, makes its directory when nothing else does: here when
        // the base is known not to have it, or in the metadata layer when no package ships it.
        let workdir = self.workdir_to_make(image, &merged, &first);
        if let (Some(w), false) = (&workdir, packaged) {
            let mut layer = LayerEntries::default();
            let _ = layer.insert(PlannedEntry { path: w.clone(), kind: EntryKind::Dir, mode: 0o755, uid: 0, gid: 0 }, image.span);
            merged.push(Merged { what: "workdir".into(), entries: layer.finish(), parts: Vec::new(), merged_usr: false });
        }
        OwnLayers { merged, config, workdir }
    }

    /// The image derivation of one platform: its base, package layers, own layers and config;
    /// `None` after reporting an error.
    fn platform_image(&mut self, image: &ImageSpec, platform: &Platform, own: &OwnLayers, epoch: u64) -> Option<NodeIndex> {
        // Layers with `copy from=` an image take that image's file system for this platform;
        // the others are the same derivation on every platform.
        let mut common = Vec::new();
        for m in &own.merged {
            if let Some(n) = self.layer(&image.name, m, epoch, platform) {
                common.push(n);
            }
        }
        let mut base_deps = Vec::new();
        let base = self.base_of(image, platform, &mut base_deps)?;
        let (mut layers, packages) = if image.packages.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let others = common.len() + self.base_layers(base.as_ref()) + usize::from(image.run_scripts);
            self.packaged_layers(image, platform, epoch, others, base.as_ref(), own.workdir.as_deref(), &base_deps)?
        };
        layers.extend(common.iter().copied());
        self.check_layer_budget(image, platform, base.as_ref(), layers.len())?;
        let rootfs = self.rootfs_id(platform, base.as_ref(), &layers, &own.config.env);
        let drv =
            ImageDrv { platform: platform.clone(), base, layers: layers.clone(), packages, config: own.config.clone(), epoch, rootfs };
        let hash = self.image_hash(&drv);
        let name = if image.platforms.len() > 1 { format!("{}: image {}", image.name, platform) } else { format!("{}: image", image.name) };
        // The image also needs each package layer's file list (for the conflict check), merged or not.
        let mut deps = layers.clone();
        deps.extend(drv.packages.iter().map(|p| p.layer).filter(|n| !layers.contains(n)));
        deps.extend(base_deps);
        let node = self.add(Derivation { hash, name, kind: DrvKind::Image(Box::new(drv)) }, &deps);
        self.image_nodes.insert((image.name.clone(), platform.to_string()), node);
        self.record_accounts(image, platform);
        Some(node)
    }

    /// The base of an image on `platform` (`None` for scratch), adding to `base_deps` the nodes
    /// it needs; `None` after reporting that it is missing.
    fn base_of(&mut self, image: &ImageSpec, platform: &Platform, base_deps: &mut Vec<NodeIndex>) -> Option<Option<ImageBase>> {
        match &image.base {
            Base::Scratch => Some(None),
            Base::Image { name, span } => match self.image_nodes.get(&(name.clone(), platform.to_string())) {
                Some(&n) => {
                    base_deps.push(n);
                    Some(Some(ImageBase::Image(n)))
                }
                None => {
                    self.errors.push(self.spec.diagnostic(
                        "compose::spec::base_platform",
                        *span,
                        format!("image `{name}` is not built for {platform}, which `{}` needs", image.name),
                        "this base",
                        Some(format!("add \"{platform}\" to the `platforms` of `{name}`")),
                    ));
                    None
                }
            },
            _ => match self.inputs.bases.get(&(image.name.clone(), platform.to_string())) {
                Some(b) => Some(Some(self.external_base(b, base_deps))),
                None => {
                    self.errors.push(self.spec.diagnostic(
                        "compose::spec::base",
                        image.span,
                        format!("the base of `{}` was not loaded for {platform}", image.name),
                        "this image",
                        None,
                    ));
                    None
                }
            },
        }
    }

    /// A loaded base (registry, layout or archive): a blob derivation per layer, each added to
    /// `base_deps`.
    fn external_base(&mut self, b: &crate::base::BaseImage, base_deps: &mut Vec<NodeIndex>) -> ImageBase {
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
        ImageBase::External { manifest: b.manifest_digest, config: Arc::new(b.config.clone()), layers }
    }

    /// An image's package layers on `platform`, from the lockfile's pins: the layers (package
    /// layers, the metadata layer, and the maintainer scripts' layer when they run) and the
    /// packages each holds; `None` after reporting that the lockfile has no pins for it.
    #[allow(clippy::too_many_arguments)]
    fn packaged_layers(
        &mut self,
        image: &ImageSpec,
        platform: &Platform,
        epoch: u64,
        other_layers: usize,
        base: Option<&ImageBase>,
        workdir: Option<&str>,
        base_deps: &[NodeIndex],
    ) -> Option<(Vec<NodeIndex>, Vec<super::PackageLayer>)> {
        let pins = self.inputs.lock.and_then(|l| l.images.get(&image.name)).and_then(|l| l.platforms.get(&platform.to_string()));
        let Some(pins) = pins else {
            self.errors.push(self.spec.diagnostic(
                "compose::lock::missing",
                image.span,
                format!("the lockfile has no packages for image `{}` on {platform}", image.name),
                "this image",
                Some("run `compose lock` to resolve them".into()),
            ));
            return None;
        };
        let (mut layers, packages, meta) = self.package_layers(image, platform, &pins.packages, epoch, other_layers, workdir);
        layers.push(meta);
        if image.run_scripts {
            layers.push(self.scripts(image, platform, base.cloned(), &layers, &packages, epoch, base_deps));
        }
        Some((layers, packages))
    }

    /// Reports an image with more layers than `--max-layers` allows on `platform` (counting what
    /// its base brings, `base image=` chains included); `None` then.
    fn check_layer_budget(&mut self, image: &ImageSpec, platform: &Platform, base: Option<&ImageBase>, own: usize) -> Option<()> {
        let inherited = self.base_layers(base);
        if inherited + own <= self.inputs.max_layers {
            return Some(());
        }
        self.errors.push(self.spec.diagnostic(
            "compose::plan::too_many_layers",
            image.span,
            format!(
                "image `{}` would have {} layers on {platform} ({inherited} from its base), more than the limit of {}",
                image.name,
                inherited + own,
                self.inputs.max_layers
            ),
            "this image",
            Some("raise the budget with `build { max-layers N }` in the spec or --max-layers (engines accept up to 127), or give the image or its base fewer `layer` blocks".into()),
        ));
        None
    }

    /// Keeps the `/etc/passwd` and `/etc/group` the image ends up with on `platform`, for the
    /// images built on it.
    fn record_accounts(&mut self, image: &ImageSpec, platform: &Platform) {
        let inherited = self.inherited_accounts(image, &platform.to_string());
        let effective = match &image.accounts {
            Some(a) => Some(accounts_text(a, inherited.as_ref())),
            None => inherited,
        };
        if let Some(e) = effective {
            self.accounts_of.insert((image.name.clone(), platform.to_string()), e);
        }
    }

    /// What an output image's name points at: its one platform's image, or an index of them.
    fn image_root(&mut self, image: &ImageSpec, images: &[NodeIndex]) -> NodeIndex {
        if images.len() == 1 {
            return images[0];
        }
        let mut e = Encoder::new("index");
        e.list(images.len());
        for &i in images {
            e.drv(&self.plan.graph[i].hash);
        }
        let drv = Derivation {
            hash: e.finish(),
            name: format!("{}: index", image.name),
            kind: DrvKind::Index(IndexDrv { images: images.to_vec() }),
        };
        self.add(drv, images)
    }

    /// `maintainer-scripts "run"`: the packages root (the base, the package layers and the
    /// metadata layer, as an image of its own) and the derivation that configures it.
    #[allow(clippy::too_many_arguments)]
    fn scripts(
        &mut self,
        image: &ImageSpec,
        platform: &Platform,
        base: Option<ImageBase>,
        layers: &[NodeIndex],
        packages: &[super::PackageLayer],
        epoch: u64,
        base_deps: &[NodeIndex],
    ) -> NodeIndex {
        let rootfs = self.rootfs_id(platform, base.as_ref(), layers, &[]);
        let root = ImageDrv {
            platform: platform.clone(),
            rootfs,
            base,
            layers: layers.to_vec(),
            packages: packages.to_vec(),
            config: RuntimeConfig::default(),
            epoch,
        };
        let hash = self.image_hash(&root);
        let mut deps = layers.to_vec();
        deps.extend(packages.iter().map(|p| p.layer).filter(|n| !layers.contains(n)));
        deps.extend(base_deps.iter().copied());
        let name = format!("{}: packages root ({platform})", image.name);
        let root = self.add(Derivation { hash, name, kind: DrvKind::Image(Box::new(root)) }, &deps);
        let mut e = Encoder::new("scripts");
        e.str(super::SCRIPTS_FORMAT).str(super::SANDBOX_ID).str(self.format()).drv(&self.image_rootfs(root)).u64(epoch);
        let drv = super::ScriptsDrv { image: image.name.clone(), root, epoch, compression: self.compression };
        let name = format!("{}: maintainer scripts ({platform})", image.name);
        self.add(Derivation { hash: e.finish(), name, kind: DrvKind::Scripts(drv) }, &[root])
    }

    /// How many layers an image's base gives it (a `base image=` parent's own base included).
    fn base_layers(&self, base: Option<&ImageBase>) -> usize {
        match base {
            None => 0,
            Some(ImageBase::External { layers, .. }) => layers.len(),
            Some(ImageBase::Image(n)) => match &self.plan.graph[*n].kind {
                DrvKind::Image(parent) => parent.layers.len() + self.base_layers(parent.base.as_ref()),
                _ => 0,
            },
        }
    }

    /// The base's `/etc/passwd` and `/etc/group` for `platform`, if the image has a base that has them.
    /// The entrypoint `image` runs with: its own, else its base's (a `base image=` parent's,
    /// or an external base's config).
    fn entrypoint_of(&self, image: &ImageSpec) -> Option<Vec<String>> {
        if let Some(e) = &image.config.entrypoint {
            return Some(e.clone());
        }
        match &image.base {
            Base::Scratch => None,
            Base::Image { name, .. } => self.spec.image(name).filter(|p| p.name != image.name).and_then(|p| self.entrypoint_of(p)),
            _ => {
                let first = image.platforms.first().map(|p| p.to_string()).unwrap_or_default();
                let b = self.inputs.bases.get(&(image.name.clone(), first))?;
                let e = b.config.get("config")?.get("Entrypoint")?.as_array()?;
                Some(e.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            }
        }
    }

    /// The working directory an image's config names, if nothing in the image makes it: not
    /// its own layers (a path at or below it) and not its base (scratch, or an external base
    /// whose directories are known). Unknown (a `base image=` parent, a `copy from=` whose
    /// paths are only known when built): not made, rather than risk changing what is there.
    fn workdir_to_make(&self, image: &ImageSpec, merged: &[Merged], platform: &str) -> Option<String> {
        let w = image.config.workdir.as_deref().filter(|w| *w != "/")?;
        let below = format!("{w}/");
        let covers = |e: &PlannedEntry| e.path == w || e.path.starts_with(&below);
        for m in merged {
            if m.entries.iter().any(covers) {
                return None;
            }
            for part in &m.parts {
                match part {
                    PendingPart::Entries(entries) if entries.iter().any(covers) => return None,
                    PendingPart::Entries(_) => {}
                    PendingPart::From { .. } => return None,
                }
            }
        }
        match &image.base {
            Base::Scratch => Some(w.to_string()),
            Base::Image { .. } => None,
            _ => {
                let b = self.inputs.bases.get(&(image.name.clone(), platform.to_string()))?;
                let dirs = String::from_utf8_lossy(b.files.get(crate::base::BASE_DIRS)?).into_owned();
                let rel = w.trim_start_matches('/');
                (!dirs.lines().any(|d| d == rel)).then(|| w.to_string())
            }
        }
    }

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

    /// The layer derivation of merged operations on `platform` (`copy from=` an image takes that
    /// image's file system for this platform); `None` after reporting an error.
    pub(super) fn layer(&mut self, owner: &str, m: &Merged, epoch: u64, on: &Platform) -> Option<NodeIndex> {
        let platform = &on.to_string();
        let mut e = Encoder::new("files-layer");
        e.str(self.format()).u64(epoch);
        encode_entries(&mut e, &m.entries);
        let mut parts = Vec::new();
        let mut deps = Vec::new();
        if !m.parts.is_empty() {
            e.str("parts").u64(m.merged_usr as u64).list(m.parts.len());
        }
        for part in &m.parts {
            match part {
                PendingPart::Entries(entries) => {
                    e.str("entries");
                    encode_entries(&mut e, entries);
                    parts.push(LayerPart::Entries(entries.clone()));
                }
                PendingPart::From { name, span, copy } => {
                    let source = match self.spec.step(name) {
                        Some(step) => self.step_for(step, on),
                        None => self.image_nodes.get(&(name.clone(), platform.to_string())).copied(),
                    };
                    let Some(source) = source else {
                        // A step or an image meant for this platform that could not be
                        // planned: that is reported already.
                        let meant =
                            self.spec.step(name).is_some() || self.spec.image(name).is_some_and(|i| i.platforms.iter().any(|p| p == on));
                        if meant && !self.errors.is_empty() {
                            return None;
                        }
                        self.errors.push(self.spec.diagnostic(
                            "compose::spec::from_platform",
                            *span,
                            format!("`{name}` has nothing for {platform}, which `{owner}` is built for"),
                            "copied from here",
                            Some(format!("add \"{platform}\" to the `platforms` of `{name}`")),
                        ));
                        return None;
                    };
                    let c = CopyFrom { source, ..copy.clone() };
                    e.str("from").drv(&self.plan.graph[source].hash).str(&c.src).str(&c.to).u64(c.to_dir as u64);
                    e.u64(c.mode.map_or(u64::MAX, u64::from))
                        .u64(c.dir_mode.map_or(u64::MAX, u64::from))
                        .u64(c.uid as u64)
                        .u64(c.gid as u64);
                    deps.push(source);
                    parts.push(LayerPart::From(c));
                }
            }
        }
        let created_by = format!("compose: {}", m.what);
        let drv = Derivation {
            hash: e.finish(),
            name: format!("{owner}: {}", m.what),
            kind: DrvKind::Layer(LayerDrv {
                entries: m.entries.clone(),
                epoch,
                created_by,
                parts,
                merged_usr: m.merged_usr,
                compression: self.compression,
            }),
        };
        deps.sort();
        deps.dedup();
        Some(self.add(drv, &deps))
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
        // Encoded only when set, so that images without one keep their hashes.
        if let Some(h) = &c.healthcheck {
            e.str("healthcheck").list(h.test.len());
            for t in &h.test {
                e.str(t);
            }
            for n in [h.interval, h.timeout, h.start_period, h.start_interval, h.retries] {
                e.u64(n);
            }
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
        // A one-argument `cmd` holding spaces is a shell line: fine as the argument of a shell's
        // `-c` entrypoint (this image's or inherited), else it would be one program name.
        if let (Some([line]), Some(span)) = (c.cmd.as_deref(), c.cmd_span) {
            let entrypoint = self.entrypoint_of(image);
            let under_shell = entrypoint.as_ref().and_then(|e| e.last()).is_some_and(|a| a == "-c");
            if line.trim().contains(char::is_whitespace) && !under_shell {
                let words: Vec<String> = line.split_whitespace().map(|w| format!("\"{w}\"")).collect();
                self.errors.push(self.spec.diagnostic(
                    "compose::spec::shell_form",
                    span,
                    format!("`cmd` is an argv, so `{line}` would be one program name"),
                    "one argument holding spaces",
                    Some(format!(
                        "give each word as its own argument (cmd {}), or run the line through a shell as Docker's shell form does: cmd \"…\" shell=#true",
                        words.join(" ")
                    )),
                ));
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
            healthcheck: c.healthcheck.clone(),
        }
    }

    /// Merge file operations into one layer's sorted entry list.
    pub(super) fn merge_ops(&mut self, what: &str, ops: &[FileOp], ids: &Ids, merged_usr: bool) -> Option<Merged> {
        let mut layer = LayerEntries { merged_usr, ..LayerEntries::default() };
        let errors_before = self.errors.len();
        let with_from = ops.iter().any(|op| matches!(op, FileOp::Copy { from: Some(_), .. }));
        let mut parts: Vec<PendingPart> = Vec::new();
        for op in ops {
            if let FileOp::Copy { from: Some(_), .. } = op {
                parts.extend(self.copy_from(op, ids));
                continue;
            }
            // With `copy from=`, each operation's own entries are kept too, in order.
            let before: Option<std::collections::BTreeMap<String, PlannedEntry>> =
                with_from.then(|| layer.map.iter().map(|(k, (e, _))| (k.clone(), e.clone())).collect());
            self.merge_op(&mut layer, op, ids);
            if let Some(before) = before {
                let changed: Vec<PlannedEntry> =
                    layer.map.iter().filter(|(k, (e, _))| before.get(*k) != Some(e)).map(|(_, (e, _))| e.clone()).collect();
                parts.push(PendingPart::Entries(changed));
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Merged { what: what.to_string(), entries: layer.finish(), parts, merged_usr })
    }

    /// A `copy from=` a step or an image: the part it becomes (its source is resolved per
    /// platform); `None` after reporting an unknown owner.
    fn copy_from(&mut self, op: &FileOp, ids: &Ids) -> Option<PendingPart> {
        let FileOp::Copy { src, to, to_dir, mode, dir_mode, owner, from: Some((name, at)), .. } = op else { return None };
        let (uid, gid) = self.owner(owner.as_ref(), ids)?;
        let src = match self.spec.step(name) {
            Some(step) => src.strip_prefix(step.output.as_str()).unwrap_or_default().trim_start_matches('/').to_string(),
            None => src.clone(),
        };
        let copy = CopyFrom { source: NodeIndex::end(), src, to: to.clone(), to_dir: *to_dir, mode: *mode, dir_mode: *dir_mode, uid, gid };
        Some(PendingPart::From { name: name.clone(), span: *at, copy })
    }

    /// One operation whose entries are known now, into `layer` (errors reported).
    fn merge_op(&mut self, layer: &mut LayerEntries, op: &FileOp, ids: &Ids) {
        match op {
            // Planned as a part of its own (`copy_from`).
            FileOp::Copy { from: Some(_), .. } => {}
            FileOp::Copy { from: None, .. } => self.copy_local(layer, op, ids),
            FileOp::Text { path, content, mode, owner, span } => {
                let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { return };
                let bytes = Arc::new(content.as_bytes().to_vec());
                let entry = PlannedEntry {
                    path: path.clone(),
                    kind: EntryKind::File { size: bytes.len() as u64, content: Content::Inline(bytes) },
                    mode: mode.unwrap_or(0o644),
                    uid,
                    gid,
                };
                self.insert(layer, entry, *span);
            }
            FileOp::Symlink { path, target, owner, span } => {
                let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { return };
                let entry = PlannedEntry { path: path.clone(), kind: EntryKind::Symlink { target: target.clone() }, mode: 0o777, uid, gid };
                self.insert(layer, entry, *span);
            }
            FileOp::Dir { path, mode, owner, span } => {
                let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { return };
                let entry = PlannedEntry { path: path.clone(), kind: EntryKind::Dir, mode: mode.unwrap_or(0o755), uid, gid };
                self.insert(layer, entry, *span);
            }
        }
    }

    /// A `copy` of local files: an entry for each file the scan found, under the destination.
    fn copy_local(&mut self, layer: &mut LayerEntries, op: &FileOp, ids: &Ids) {
        let FileOp::Copy { src, src_span, to, to_dir, mode, dir_mode, owner, span, from: None } = op else { return };
        let Some((uid, gid)) = self.owner(owner.as_ref(), ids) else { return };
        let Some(scanned) = self.inputs.sources.get(src) else {
            self.errors.push(self.spec.diagnostic(
                "compose::spec::source",
                *src_span,
                format!("copy source `{src}` was not scanned"),
                "here",
                None,
            ));
            return;
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
                    EntryKind::File {
                        size: *size,
                        content: Content::Local { abs: se.abs.clone(), hash: *hash, settled: se.settled.clone() },
                    },
                    mode.unwrap_or(if *executable { 0o755 } else { 0o644 }),
                ),
            };
            self.insert(layer, PlannedEntry { path, kind, mode, uid, gid }, *span);
        }
    }

    /// Puts an entry in the layer, reporting a conflict with what is there.
    fn insert(&mut self, layer: &mut LayerEntries, entry: PlannedEntry, span: miette::SourceSpan) {
        if let Err(msg) = layer.insert(entry, span) {
            self.errors.push(self.conflict(msg));
        }
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

/// The images and steps to plan, each after what it uses (its base image, a step's image, the
/// sources of `copy from=`); with `only`, that image and what it needs.
pub(super) fn unit_order<'s>(spec: &'s SpecFile, only: Option<&str>) -> Vec<&'s ImageSpec> {
    fn visit(spec: &SpecFile, name: &str, out: &mut Vec<String>, depth: usize) {
        if depth > spec.images.len() + spec.steps.len() || out.iter().any(|n| n == name) {
            return;
        }
        for u in spec.uses(name) {
            visit(spec, u, out, depth + 1);
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    let mut names: Vec<String> = Vec::new();
    for image in &spec.images {
        if only.is_none_or(|n| n == image.name) {
            visit(spec, &image.name, &mut names, 0);
        }
    }
    if only.is_none() {
        for step in &spec.steps {
            visit(spec, &step.name, &mut names, 0);
        }
    }
    // Steps are planned when something copies from them, for its platform.
    names.iter().filter_map(|n| spec.image(n)).collect()
}

/// The encoding of a layer's entries, for its hash.
pub(super) fn encode_entries(e: &mut Encoder, entries: &[PlannedEntry]) {
    e.list(entries.len());
    for entry in entries {
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
                    // Planned layers never hold build trees; mark it rather than hash a path.
                    Content::Tree { .. } => e.str("tree"),
                };
            }
        }
    }
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
        let order = |only: Option<&str>| unit_order(&spec, only).iter().map(|i| i.name.as_str()).collect::<Vec<_>>();
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
