//! Planning: `Spec` + fingerprints of local sources → a petgraph DAG of derivations.
//!
//! Owns the derivation model: what each derivation kind is, its exact inputs, and its `DrvHash`
//! (blake3 over [`crate::hash::Encoder`]: kind, parameters, input hashes; never an absolute path,
//! host name, user name, clock or thread count). Owns the layering of an image (metadata layer,
//! `files`, then each `layer` block, in spec order) and the rules that merge file operations into one
//! layer's entry list (implicit parents, later operation wins, file/directory clashes refused), and
//! the resolution of owners against `accounts`. Does no I/O: local files arrive already fingerprinted
//! from [`crate::source`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use miette::SourceSpan;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::base::{BaseImage, BaseLayer, BlobSource};
use crate::hash::{ContentHash, DrvHash, Encoder, Sha256};
use crate::lock::{Lockfile, PackageLock};
use crate::source::{Scanned, SourceKind};
use crate::spec::{Accounts, Base, FileOp, ImageSpec, Owner, OwnerSpec, Platform, SpecDiagnostic, SpecFile};

/// Default epoch when neither `SOURCE_DATE_EPOCH` nor the spec gives one: 1980-01-01T00:00:00Z
/// (not 0, which some tools read as "missing").
pub const DEFAULT_EPOCH: u64 = 315_532_800;

/// Identity of the layer byte format (tar rules + compressor); part of every layer's hash.
pub type CompressorId = &'static str;

/// What an entry in a planned layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { size: u64, content: Content },
    Symlink { target: String },
}

/// Where a planned file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Generated or written in the spec.
    Inline(Arc<Vec<u8>>),
    /// A local file; `abs` says where to read it and is never hashed.
    Local { abs: PathBuf, hash: ContentHash },
}

/// One entry of a planned layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEntry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A layer built from files: its entries, byte-sorted by path, parents first.
#[derive(Debug, Clone)]
pub struct LayerDrv {
    pub entries: Vec<PlannedEntry>,
    pub epoch: u64,
    /// Shown in the image history (`created_by`).
    pub created_by: String,
}

/// The runtime configuration of an image, resolved from the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub exposed: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// One platform's image: config + manifest over its layers.
#[derive(Debug, Clone)]
pub struct ImageDrv {
    pub platform: Platform,
    pub base: Option<ImageBase>,
    pub layers: Vec<NodeIndex>,
    /// The package layers among `layers`.
    pub packages: Vec<PackageLayer>,
    pub config: RuntimeConfig,
    pub epoch: u64,
}

/// A multi-platform index over per-platform images.
#[derive(Debug, Clone)]
pub struct IndexDrv {
    pub images: Vec<NodeIndex>,
}

/// A fixed-output download: a `.deb` identified by its sha256.
#[derive(Debug, Clone)]
pub struct FetchDrv {
    /// `name=version` (for messages).
    pub package: String,
    pub sha256: Sha256,
    pub size: u64,
    /// Where to get it: the mirror URL + archive path, or why there is no mirror. Never hashed.
    pub url: Result<String, String>,
    /// The mirror's name for messages (`debian`).
    pub repository: String,
}

/// A base image's layer, by digest (fixed output: reused byte for byte, verified).
#[derive(Debug, Clone)]
pub struct BlobDrv {
    pub layer: BaseLayer,
    /// Where to read it (never hashed).
    pub source: BlobSource,
    /// The base reference, for messages.
    pub reference: String,
}

/// What an image starts from.
#[derive(Debug, Clone)]
pub enum ImageBase {
    /// A base from a registry or a local layout/archive: its config and layers (with the nodes that
    /// bring each layer's blob into the store).
    External { manifest: Sha256, config: Arc<serde_json::Value>, layers: Vec<(BaseLayer, NodeIndex)> },
    /// Another image of the same spec (`base image="NAME"`): its image derivation for this platform.
    Image(NodeIndex),
}

/// One package's data as a normalized layer, with its dpkg database entry.
#[derive(Debug, Clone)]
pub struct DebLayerDrv {
    pub package: String,
    pub fetch: NodeIndex,
    pub epoch: u64,
    pub merged_usr: bool,
}

/// Several package layers merged into one (past the layer budget).
#[derive(Debug, Clone)]
pub struct MergedLayerDrv {
    pub parts: Vec<NodeIndex>,
}

/// The generated metadata layer of an image with packages: passwd/group (base-passwd's masters
/// merged with `accounts`), the CA bundle, the time zone, merged-/usr links and `/tmp`.
#[derive(Debug, Clone)]
pub struct MetaDrv {
    pub accounts: Option<Accounts>,
    /// The base image's `/etc/passwd` and `/etc/group`, to merge `accounts` into.
    pub base_accounts: Option<(String, String)>,
    /// Write `/etc/passwd` and `/etc/group` (not when a base provides them and nothing changes them).
    pub write_accounts: bool,
    pub base_passwd: Option<NodeIndex>,
    pub ca_certificates: Option<NodeIndex>,
    /// The time zone, when tzdata is installed.
    pub timezone: Option<String>,
    pub symlinks: Vec<(String, String)>,
    pub epoch: u64,
}

#[derive(Debug, Clone)]
pub enum DrvKind {
    Layer(LayerDrv),
    Fetch(FetchDrv),
    Blob(BlobDrv),
    DebLayer(DebLayerDrv),
    MergedLayer(MergedLayerDrv),
    Meta(Box<MetaDrv>),
    Image(Box<ImageDrv>),
    Index(IndexDrv),
}

impl DrvKind {
    pub fn name(&self) -> &'static str {
        match self {
            DrvKind::Layer(_) => "layer",
            DrvKind::Fetch(_) => "fetch",
            DrvKind::Blob(_) => "blob",
            DrvKind::DebLayer(_) => "deb",
            DrvKind::MergedLayer(_) => "merged",
            DrvKind::Meta(_) => "meta",
            DrvKind::Image(_) => "image",
            DrvKind::Index(_) => "index",
        }
    }

    /// The outputs a record of this kind has, sorted (what `build::run` produces).
    pub fn output_names(&self) -> &'static [&'static str] {
        match self {
            DrvKind::Layer(_) | DrvKind::Meta(_) => &["layer"],
            DrvKind::Fetch(_) | DrvKind::Blob(_) => &["file"],
            DrvKind::DebLayer(_) => &["files", "layer", "licences"],
            DrvKind::MergedLayer(_) => &["files", "layer"],
            DrvKind::Image(_) => &["config", "manifest"],
            DrvKind::Index(_) => &["index"],
        }
    }

    /// Does this derivation produce an image layer?
    pub fn is_layer(&self) -> bool {
        matches!(self, DrvKind::Layer(_) | DrvKind::DebLayer(_) | DrvKind::MergedLayer(_) | DrvKind::Meta(_))
    }
}

/// A package of an image, for the conflict check: the layer derivation of that package alone
/// (in the image itself, or merged into a shared layer), in the order the image applies them.
#[derive(Debug, Clone)]
pub struct PackageLayer {
    pub layer: NodeIndex,
    pub packages: Vec<String>,
    /// Packages (in this image) that these declare `Replaces:` on.
    pub replaces: Vec<String>,
}

/// A node of the plan.
#[derive(Debug, Clone)]
pub struct Derivation {
    pub hash: DrvHash,
    /// Human-readable name, e.g. `web: layer "assets"`.
    pub name: String,
    pub kind: DrvKind,
}

/// An image of the spec and the node that produces it (an image, or an index when it has several
/// platforms).
#[derive(Debug, Clone)]
pub struct PlannedImage {
    pub name: String,
    pub tag: String,
    pub root: NodeIndex,
}

/// The DAG. Edges go from a dependency to its dependent.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub graph: DiGraph<Derivation, ()>,
    pub images: Vec<PlannedImage>,
}

/// Inputs to planning besides the spec.
pub struct PlanInputs<'a> {
    /// Scanned copy sources, keyed by the spec's source string.
    pub sources: &'a HashMap<String, Scanned>,
    /// `SOURCE_DATE_EPOCH`, if set.
    pub source_date_epoch: Option<u64>,
    /// Identity of the layer format (tar rules + compressor).
    pub layer_format: &'a str,
    /// Pins of images with packages.
    pub lock: Option<&'a Lockfile>,
    /// Mirror URL of a repository (name, suite), or why there is none. Never hashed.
    pub mirror: &'a dyn Fn(&str, &str) -> Result<String, String>,
    /// Most layers an image may have; packages are merged past it.
    pub max_layers: usize,
    /// External bases, by (image name, platform).
    pub bases: &'a HashMap<(String, String), BaseImage>,
}

/// Default layer budget: below 100 layers in all.
pub const DEFAULT_MAX_LAYERS: usize = 99;

struct Builder<'a> {
    /// Image derivations by (image name, platform), for `base image="NAME"`.
    image_nodes: HashMap<(String, String), NodeIndex>,
    /// The `/etc/passwd` and `/etc/group` each planned image ends up with, by (image, platform).
    accounts_of: HashMap<(String, String), (String, String)>,
    spec: &'a SpecFile,
    inputs: &'a PlanInputs<'a>,
    plan: Plan,
    by_hash: HashMap<DrvHash, NodeIndex>,
    errors: Vec<SpecDiagnostic>,
}

/// Plan every image of `spec` (or only `only`, and what it needs).
pub fn plan(spec: &SpecFile, only: Option<&str>, inputs: &PlanInputs<'_>) -> Result<Plan, Vec<SpecDiagnostic>> {
    let mut b = Builder {
        image_nodes: HashMap::new(),
        accounts_of: HashMap::new(),
        spec,
        inputs,
        plan: Plan::default(),
        by_hash: HashMap::new(),
        errors: Vec::new(),
    };
    // Parents (`base image="NAME"`) before children; with `only`, what it needs is planned too.
    for image in image_order(spec, only) {
        let output = only.is_none_or(|n| n == image.name);
        b.image(image, output);
    }
    if b.errors.is_empty() {
        Ok(b.plan)
    } else {
        Err(b.errors)
    }
}

impl Builder<'_> {
    fn add(&mut self, drv: Derivation, deps: &[NodeIndex]) -> NodeIndex {
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

    fn image(&mut self, image: &ImageSpec, output: bool) {
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

    /// Fetch and layer derivations for one platform's pinned packages, and the metadata layer.
    /// Packages get a layer each while the image stays within the layer budget; past it, the
    /// least depended-upon packages share one merged layer (Nix's popularity layering).
    fn package_layers(
        &mut self,
        image: &ImageSpec,
        platform: &Platform,
        pins: &[PackageLock],
        epoch: u64,
        other_layers: usize,
        tz: String,
    ) -> (Vec<NodeIndex>, Vec<PackageLayer>, NodeIndex) {
        let merged_usr = true;
        let mut fetches: BTreeMap<&str, NodeIndex> = BTreeMap::new();
        for p in pins {
            let suite = image.repositories.iter().find(|r| r.name == p.repository).map(|r| r.suite.as_str()).unwrap_or("");
            let url = (self.inputs.mirror)(&p.repository, suite).map(|m| format!("{}/{}", m.trim_end_matches('/'), p.filename));
            let sha256 = match Sha256::from_hex(&p.sha256) {
                Ok(d) => d,
                Err(e) => {
                    self.errors.push(self.spec.diagnostic(
                        "compose::lock::damaged",
                        image.span,
                        format!("the lockfile's sha256 of `{}` is invalid: {e}", p.name),
                        "this image",
                        Some("run `compose lock` to rewrite the lockfile".into()),
                    ));
                    continue;
                }
            };
            let drv = Derivation {
                hash: Encoder::new("fetch").sha256(&sha256).finish(),
                name: format!("fetch {}={} ({})", p.name, p.version, p.architecture),
                kind: DrvKind::Fetch(FetchDrv {
                    package: format!("{}={}", p.name, p.version),
                    sha256,
                    size: p.size,
                    url,
                    repository: p.repository.clone(),
                }),
            };
            fetches.insert(p.name.as_str(), self.add(drv, &[]));
        }
        // Popularity: how many pinned packages depend on each, directly or not.
        let popularity = popularity(pins);
        let mut order: Vec<&PackageLock> = pins.iter().filter(|p| fetches.contains_key(p.name.as_str())).collect();
        order.sort_by(|a, b| popularity[b.name.as_str()].cmp(&popularity[a.name.as_str()]).then(a.name.cmp(&b.name)));
        // A package that `Replaces` another comes after it, so its copy of a shared path wins.
        for _ in 0..order.len() {
            let Some((i, j)) = (0..order.len())
                .find_map(|i| (i + 1..order.len()).rev().find(|&j| order[i].replaces.contains(&order[j].name)).map(|j| (i, j)))
            else {
                break;
            };
            let p = order.remove(i);
            order.insert(j, p);
        }
        let budget = self.inputs.max_layers.saturating_sub(other_layers + 1).max(1);
        let own = if order.len() <= budget { order.len() } else { budget.saturating_sub(1).max(1) };
        let mut layers = Vec::new();
        let deb_layer = |b: &mut Self, p: &PackageLock| -> NodeIndex {
            let fetch = fetches[p.name.as_str()];
            let mut e = Encoder::new("deb-layer");
            e.str(b.inputs.layer_format).u64(epoch).u64(merged_usr as u64).sha256(&sha_of(&b.plan.graph[fetch]));
            let drv = Derivation {
                hash: e.finish(),
                name: format!("{}: package {}={}", image.name, p.name, p.version),
                kind: DrvKind::DebLayer(DebLayerDrv { package: format!("{}={}", p.name, p.version), fetch, epoch, merged_usr }),
            };
            b.add(drv, &[fetch])
        };
        let mut image_layers = Vec::new();
        for p in &order[..own] {
            let layer = deb_layer(self, p);
            image_layers.push(layer);
            layers.push(PackageLayer { layer, packages: vec![p.name.clone()], replaces: p.replaces.clone() });
        }
        if order.len() > own {
            let rest = &order[own..];
            let parts: Vec<NodeIndex> = rest.iter().map(|p| deb_layer(self, p)).collect();
            for (p, &layer) in rest.iter().zip(&parts) {
                layers.push(PackageLayer { layer, packages: vec![p.name.clone()], replaces: p.replaces.clone() });
            }
            let mut e = Encoder::new("merged-layer");
            e.str(self.inputs.layer_format).list(parts.len());
            for &n in &parts {
                e.drv(&self.plan.graph[n].hash);
            }
            let drv = Derivation {
                hash: e.finish(),
                name: format!("{}: {} packages merged", image.name, rest.len()),
                kind: DrvKind::MergedLayer(MergedLayerDrv { parts: parts.clone() }),
            };
            image_layers.push(self.add(drv, &parts));
        }
        // The metadata layer.
        let mut symlinks = vec![
            ("/bin".to_string(), "usr/bin".to_string()),
            ("/lib".to_string(), "usr/lib".to_string()),
            ("/sbin".to_string(), "usr/sbin".to_string()),
        ];
        if platform.architecture == "amd64" {
            symlinks.push(("/lib64".to_string(), "usr/lib64".to_string()));
        }
        let base_accounts = self.inherited_accounts(image, &platform.to_string());
        let has_base = !matches!(image.base, Base::Scratch);
        let write_accounts = !has_base || image.accounts.is_some() || fetches.contains_key("base-passwd");
        let meta = MetaDrv {
            base_accounts,
            write_accounts,
            accounts: image.accounts.clone(),
            base_passwd: fetches.get("base-passwd").copied(),
            ca_certificates: fetches.get("ca-certificates").copied(),
            timezone: fetches.contains_key("tzdata").then_some(tz),
            symlinks,
            epoch,
        };
        let mut e = Encoder::new("meta-layer");
        e.str(self.inputs.layer_format).u64(epoch);
        for dep in [meta.base_passwd, meta.ca_certificates] {
            match dep {
                Some(n) => e.sha256(&sha_of(&self.plan.graph[n])),
                None => e.opt_str(None),
            };
        }
        e.opt_str(meta.timezone.as_deref());
        e.list(meta.symlinks.len());
        for (a, b) in &meta.symlinks {
            e.str(a).str(b);
        }
        encode_accounts(&mut e, meta.accounts.as_ref());
        e.u64(meta.write_accounts as u64);
        match &meta.base_accounts {
            Some((p, g)) => {
                e.str(p).str(g);
            }
            None => {
                e.opt_str(None);
            }
        }
        let deps: Vec<NodeIndex> = [meta.base_passwd, meta.ca_certificates].into_iter().flatten().collect();
        let drv =
            Derivation { hash: e.finish(), name: format!("{}: metadata ({platform})", image.name), kind: DrvKind::Meta(Box::new(meta)) };
        let meta = self.add(drv, &deps);
        (image_layers, layers, meta)
    }

    /// The base's `/etc/passwd` and `/etc/group` for `platform`, if the image has a base that has them.
    fn inherited_accounts(&self, image: &ImageSpec, platform: &str) -> Option<(String, String)> {
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

fn join(dir: &str, rel: &str) -> String {
    if dir == "/" {
        format!("/{rel}")
    } else {
        format!("{dir}/{rel}")
    }
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

struct Conflict {
    span: SourceSpan,
    message: String,
    help: Option<String>,
}

#[derive(Default)]
struct LayerEntries {
    /// path → (entry, span of the op that wrote it; None for implicit parents)
    map: BTreeMap<String, (PlannedEntry, Option<SourceSpan>)>,
    /// Write `/bin`, `/sbin`, `/lib*` paths under `/usr` (the image has merged-/usr links).
    merged_usr: bool,
}

/// `/bin/x` → `/usr/bin/x` (and `/sbin`, `/lib`, `/lib32`, `/lib64`, `/libx32`); other paths as they are.
pub fn merged_usr_path(path: &str) -> Option<String> {
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        if path == top {
            return Some(format!("/usr{top}"));
        }
        if let Some(rest) = path.strip_prefix(top).filter(|r| r.starts_with('/')) {
            return Some(format!("/usr{top}{rest}"));
        }
    }
    None
}

impl LayerEntries {
    fn insert(&mut self, mut entry: PlannedEntry, span: SourceSpan) -> Result<(), Conflict> {
        if self.merged_usr {
            if let Some(p) = merged_usr_path(&entry.path) {
                entry.path = p;
            }
        }
        // Parents: implicit directories, unless something is already there.
        let mut p = parent(&entry.path);
        let mut missing = Vec::new();
        while let Some(dir) = p {
            if dir == "/" {
                break;
            }
            match self.map.get(dir) {
                Some((e, _)) if e.kind == EntryKind::Dir => break,
                Some((e, _)) => {
                    return Err(Conflict {
                        span,
                        message: format!(
                            "`{}` needs `{dir}` to be a directory, but this layer already has a {} there",
                            entry.path,
                            kind_word(&e.kind)
                        ),
                        help: None,
                    });
                }
                None => missing.push(dir.to_string()),
            }
            p = parent(dir);
        }
        match self.map.get(&entry.path) {
            Some((old, _)) if old.kind == EntryKind::Dir && entry.kind == EntryKind::Dir => {}
            Some((old, _)) if (old.kind == EntryKind::Dir) != (entry.kind == EntryKind::Dir) => {
                return Err(Conflict {
                    span,
                    message: format!(
                        "`{}` is a {} here but an earlier operation made it a {}",
                        entry.path,
                        kind_word(&entry.kind),
                        kind_word(&old.kind)
                    ),
                    help: Some(
                        "a path can't be both a directory and a file in one layer; put one of them in a `layer` block of its own".into(),
                    ),
                });
            }
            _ => {}
        }
        for dir in missing {
            let implicit = PlannedEntry { path: dir.clone(), kind: EntryKind::Dir, mode: 0o755, uid: 0, gid: 0 };
            self.map.insert(dir, (implicit, None));
        }
        // Later operations win.
        self.map.insert(entry.path.clone(), (entry, Some(span)));
        Ok(())
    }

    fn finish(self) -> Vec<PlannedEntry> {
        // BTreeMap<String> iterates in byte order of the path: parents before children.
        self.map.into_values().map(|(e, _)| e).collect()
    }
}

fn kind_word(k: &EntryKind) -> &'static str {
    match k {
        EntryKind::Dir => "directory",
        EntryKind::File { .. } => "file",
        EntryKind::Symlink { .. } => "symlink",
    }
}

/// The images to plan, parents (`base image="NAME"`) first; with `only`, it and its ancestors.
fn image_order<'s>(spec: &'s SpecFile, only: Option<&str>) -> Vec<&'s ImageSpec> {
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

fn sha_of(d: &Derivation) -> Sha256 {
    match &d.kind {
        DrvKind::Fetch(f) => f.sha256,
        _ => Sha256([0; 32]),
    }
}

/// For each pinned package, how many pinned packages depend on it, directly or transitively.
fn popularity(pins: &[PackageLock]) -> BTreeMap<&str, usize> {
    let deps: BTreeMap<&str, Vec<&str>> = pins.iter().map(|p| (p.name.as_str(), p.depends.iter().map(String::as_str).collect())).collect();
    let mut count: BTreeMap<&str, usize> = pins.iter().map(|p| (p.name.as_str(), 0)).collect();
    for p in pins {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut stack: Vec<&str> = deps.get(p.name.as_str()).cloned().unwrap_or_default();
        while let Some(d) = stack.pop() {
            if d == p.name || !seen.insert(d) {
                continue;
            }
            if let Some(next) = deps.get(d) {
                stack.extend(next.iter().copied());
            }
        }
        for d in seen {
            if let Some(c) = count.get_mut(d) {
                *c += 1;
            }
        }
    }
    count
}

fn encode_accounts(e: &mut Encoder, a: Option<&Accounts>) {
    let Some(a) = a else {
        e.opt_str(None);
        return;
    };
    e.list(a.groups.len());
    for g in &a.groups {
        e.str(&g.name).u64(g.gid as u64).list(g.members.len());
        for m in &g.members {
            e.str(m);
        }
    }
    e.list(a.users.len());
    for u in &a.users {
        e.str(&u.name).u64(u.uid as u64).u64(u.gid as u64).str(&u.gecos).str(&u.home).str(&u.shell);
    }
}

/// The metadata layer's entries, from what the build read out of the packages.
pub struct MetaInputs<'a> {
    pub accounts: Option<&'a Accounts>,
    pub base_accounts: Option<&'a (String, String)>,
    pub write_accounts: bool,
    /// base-passwd's `passwd.master` and `group.master`.
    pub masters: Option<(String, String)>,
    /// `(path, PEM)` of every certificate ca-certificates ships, sorted by path.
    pub certificates: Vec<(String, Vec<u8>)>,
    pub timezone: Option<&'a str>,
    pub symlinks: &'a [(String, String)],
}

/// Entries of the metadata layer (sorted, parents first).
pub fn meta_entries(m: &MetaInputs<'_>) -> Vec<PlannedEntry> {
    let (mut passwd, mut group) = match (&m.masters, m.base_accounts) {
        (Some((p, g)), _) | (None, Some((p, g))) => (p.clone(), g.clone()),
        (None, None) => ("root:x:0:0:root:/root:/sbin/nologin\n".to_string(), "root:x:0:\n".to_string()),
    };
    if let Some(a) = m.accounts {
        passwd = merge_db(
            &passwd,
            a.users.iter().map(|u| (u.name.clone(), format!("{}:x:{}:{}:{}:{}:{}", u.name, u.uid, u.gid, u.gecos, u.home, u.shell))),
        );
        group = merge_db(&group, a.groups.iter().map(|g| (g.name.clone(), format!("{}:x:{}:{}", g.name, g.gid, g.members.join(",")))));
    }
    let file = |path: &str, bytes: Vec<u8>, mode: u32| PlannedEntry {
        path: path.into(),
        kind: EntryKind::File { size: bytes.len() as u64, content: Content::Inline(Arc::new(bytes)) },
        mode,
        uid: 0,
        gid: 0,
    };
    let dir = |path: &str, mode: u32, uid: u32, gid: u32| PlannedEntry { path: path.into(), kind: EntryKind::Dir, mode, uid, gid };
    let mut layer = LayerEntries::default();
    let span = SourceSpan::from(0..0);
    let mut push = |e: PlannedEntry| {
        let _ = layer.insert(e, span);
    };
    for (link, target) in m.symlinks {
        push(PlannedEntry { path: link.clone(), kind: EntryKind::Symlink { target: target.clone() }, mode: 0o777, uid: 0, gid: 0 });
    }
    push(dir("/tmp", 0o1777, 0, 0));
    push(dir("/root", 0o700, 0, 0));
    if m.write_accounts {
        push(file("/etc/passwd", passwd.into_bytes(), 0o644));
        push(file("/etc/group", group.into_bytes(), 0o644));
    }
    if let Some(a) = m.accounts {
        for u in &a.users {
            if u.home == "/" || u.home == "/nonexistent" || !u.home.starts_with('/') || u.home.contains("/..") || u.uid == 0 {
                continue;
            }
            push(dir(&u.home, 0o755, u.uid, u.gid));
        }
    }
    if !m.certificates.is_empty() {
        // update-ca-certificates: every certificate, PEM, in the order of its sorted list.
        let mut bundle = Vec::new();
        for (_, pem) in &m.certificates {
            bundle.extend_from_slice(pem);
            if !pem.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
        push(file("/etc/ssl/certs/ca-certificates.crt", bundle, 0o644));
        let conf: String =
            m.certificates.iter().filter_map(|(p, _)| p.strip_prefix("/usr/share/ca-certificates/")).map(|p| format!("{p}\n")).collect();
        push(file("/etc/ca-certificates.conf", conf.into_bytes(), 0o644));
    }
    if let Some(tz) = m.timezone {
        push(PlannedEntry {
            path: "/etc/localtime".into(),
            kind: EntryKind::Symlink { target: format!("/usr/share/zoneinfo/{tz}") },
            mode: 0o777,
            uid: 0,
            gid: 0,
        });
        push(file("/etc/timezone", format!("{tz}\n").into_bytes(), 0o644));
    }
    layer.finish()
}

/// Replace lines of a passwd/group-style file by name, appending new names in order.
fn merge_db(base: &str, entries: impl Iterator<Item = (String, String)>) -> String {
    let mut lines: Vec<String> = base.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    for (name, line) in entries {
        let prefix = format!("{name}:");
        match lines.iter_mut().find(|l| l.starts_with(&prefix)) {
            Some(l) => *l = line,
            None => lines.push(line),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Users and groups known to an image: `root`, the base's `/etc/passwd` and `/etc/group`, then
/// `accounts` (which win).
struct Ids {
    users: Vec<(String, u32, u32)>,
    groups: Vec<(String, u32)>,
}

impl Ids {
    fn new(accounts: Option<&Accounts>, inherited: Option<&(String, String)>) -> Ids {
        let mut users = vec![("root".to_string(), 0, 0)];
        let mut groups = vec![("root".to_string(), 0)];
        if let Some((passwd, group)) = inherited {
            for f in passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
                if let (Some(name), Some(Ok(uid)), Some(Ok(gid))) = (f.first(), f.get(2).map(|v| v.parse()), f.get(3).map(|v| v.parse())) {
                    if !name.is_empty() && !users.iter().any(|(n, _, _)| n == name) {
                        users.push((name.to_string(), uid, gid));
                    }
                }
            }
            for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
                if let (Some(name), Some(Ok(gid))) = (f.first(), f.get(2).map(|v| v.parse())) {
                    if !name.is_empty() && !groups.iter().any(|(n, _)| n == name) {
                        groups.push((name.to_string(), gid));
                    }
                }
            }
        }
        if let Some(a) = accounts {
            for u in &a.users {
                users.retain(|(n, _, _)| n != &u.name);
                users.push((u.name.clone(), u.uid, u.gid));
            }
            for g in &a.groups {
                groups.retain(|(n, _)| n != &g.name);
                groups.push((g.name.clone(), g.gid));
            }
        }
        Ids { users, groups }
    }

    fn user(&self, name: &str) -> Option<(u32, u32)> {
        self.users.iter().find(|(n, _, _)| n == name).map(|(_, u, g)| (*u, *g))
    }

    fn group(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|(n, _)| n == name).map(|(_, g)| *g)
    }

    /// `NAME`, `UID`, `NAME:GROUP`, `UID:GID` and mixes.
    fn resolve(&self, owner: &Owner) -> Result<(u32, u32), String> {
        match owner {
            Owner::Ids(u, g) => Ok((*u, *g)),
            Owner::Name(s) => {
                let (u, g) = match s.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (s.as_str(), None),
                };
                let (uid, primary) = match u.parse::<u32>() {
                    Ok(n) => (n, n),
                    Err(_) => self.user(u).ok_or_else(|| format!("unknown owner `{s}`: there is no user `{u}` in `accounts`"))?,
                };
                let gid = match g {
                    None => primary,
                    Some(g) => match g.parse::<u32>() {
                        Ok(n) => n,
                        Err(_) => self.group(g).ok_or_else(|| format!("unknown owner `{s}`: there is no group `{g}` in `accounts`"))?,
                    },
                };
                Ok((uid, gid))
            }
        }
    }

    fn check_user(&self, user: &str) -> Result<(), String> {
        let (u, g) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        if u.parse::<u32>().is_err() && self.user(u).is_none() {
            return Err(format!("unknown user `{u}`: it is not in `accounts`"));
        }
        if let Some(g) = g {
            if g.parse::<u32>().is_err() && self.group(g).is_none() {
                return Err(format!("unknown group `{g}`: it is not in `accounts`"));
            }
        }
        Ok(())
    }

    fn help(&self) -> String {
        let names: Vec<&str> = self.users.iter().map(|(n, _, _)| n.as_str()).collect();
        format!("known users: {}; or give numeric ids as \"UID:GID\"", names.join(", "))
    }
}

/// `/etc/passwd` and `/etc/group` for `accounts`: merged into the base's (`inherited`), or root
/// plus the accounts.
fn accounts_text(a: &Accounts, inherited: Option<&(String, String)>) -> (String, String) {
    let user_line = |u: &crate::spec::User| format!("{}:x:{}:{}:{}:{}:{}", u.name, u.uid, u.gid, u.gecos, u.home, u.shell);
    let group_line = |g: &crate::spec::Group| format!("{}:x:{}:{}", g.name, g.gid, g.members.join(","));
    if let Some((p, g)) = inherited {
        return (
            merge_db(p, a.users.iter().map(|u| (u.name.clone(), user_line(u)))),
            merge_db(g, a.groups.iter().map(|g| (g.name.clone(), group_line(g)))),
        );
    }
    let mut passwd = String::new();
    let mut group = String::new();
    if !a.users.iter().any(|u| u.name == "root") {
        passwd.push_str("root:x:0:0:root:/root:/sbin/nologin\n");
    }
    if !a.groups.iter().any(|g| g.name == "root") {
        group.push_str("root:x:0:\n");
    }
    for u in &a.users {
        let _ = writeln!(passwd, "{}", user_line(u));
    }
    for g in &a.groups {
        let _ = writeln!(group, "{}", group_line(g));
    }
    (passwd, group)
}

/// `/etc/passwd`, `/etc/group` and home directories for `accounts` (root always present).
fn accounts_entries(a: &Accounts, inherited: Option<&(String, String)>) -> Vec<PlannedEntry> {
    let (passwd, group) = accounts_text(a, inherited);
    let file = |path: &str, text: String| PlannedEntry {
        path: path.into(),
        kind: EntryKind::File { size: text.len() as u64, content: Content::Inline(Arc::new(text.into_bytes())) },
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    let mut layer = LayerEntries::default();
    let span = a.span;
    let mut push = |e: PlannedEntry| {
        // Home directories may clash with nothing here but each other; first one wins.
        let _ = layer.insert(e, span);
    };
    push(file("/etc/passwd", passwd));
    push(file("/etc/group", group));
    if !a.users.iter().any(|u| u.name == "root") {
        push(PlannedEntry { path: "/root".into(), kind: EntryKind::Dir, mode: 0o700, uid: 0, gid: 0 });
    }
    for u in &a.users {
        if u.home == "/" || u.home == "/nonexistent" || !u.home.starts_with('/') || u.home.contains("/..") {
            continue;
        }
        let mode = if u.uid == 0 { 0o700 } else { 0o755 };
        push(PlannedEntry { path: u.home.clone(), kind: EntryKind::Dir, mode, uid: u.uid, gid: u.gid });
    }
    layer.finish()
}

impl Plan {
    /// Nodes in a deterministic topological order (dependencies first).
    pub fn topo_order(&self) -> Vec<NodeIndex> {
        petgraph::algo::toposort(&self.graph, None).unwrap_or_default()
    }

    pub fn dependencies(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut v: Vec<NodeIndex> = self.graph.neighbors_directed(n, petgraph::Direction::Incoming).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_resolve_against_the_base_accounts_then_ours() {
        let inherited = (
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\nbroken line\napp:x:5:5::/:/bin/sh\n".to_string(),
            "root:x:0:\nwww-data:x:33:\nstaff:x:50:\n".to_string(),
        );
        let ours = Accounts {
            users: vec![crate::spec::User {
                name: "app".into(),
                uid: 1000,
                gid: 1000,
                gecos: String::new(),
                home: "/".into(),
                shell: "/bin/sh".into(),
                span: (0, 0).into(),
            }],
            groups: vec![],
            span: (0, 0).into(),
        };
        let ids = Ids::new(Some(&ours), Some(&inherited));
        assert_eq!(ids.resolve(&Owner::Name("www-data".into())), Ok((33, 33)));
        assert_eq!(ids.resolve(&Owner::Name("www-data:staff".into())), Ok((33, 50)));
        assert_eq!(ids.resolve(&Owner::Name("app".into())), Ok((1000, 1000)), "accounts win over the base");
        assert!(ids.resolve(&Owner::Name("nobody".into())).is_err());
        assert!(ids.check_user("www-data:staff").is_ok());
        let scratch = Ids::new(None, None);
        assert!(scratch.resolve(&Owner::Name("www-data".into())).is_err());
    }
}
