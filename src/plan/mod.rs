//! Planning: `Spec` + fingerprints of local sources → a petgraph DAG of derivations.
//!
//! Owns the derivation model: what each derivation kind is, its exact inputs, and its `DrvHash`
//! (blake3 over [`crate::hash::Encoder`]: kind, parameters, input hashes; never an absolute path,
//! host name, user name, clock or thread count). Owns the layering of an image (metadata layer,
//! `files`, then each `layer` block, in spec order) and the rules that merge file operations into one
//! layer's entry list (implicit parents, later operation wins, file/directory clashes refused), and
//! the resolution of owners against `accounts`. Does no I/O: local files arrive already fingerprinted
//! from [`crate::source`].
//!
//! Submodules: `builder` turns each spec image into derivations (the `Builder`, image order);
//! `entries` merges file operations into one layer's sorted entry list; `layering` plans the
//! package layers (popularity order under the layer budget, merged layer, the metadata layer's
//! derivation); `accounts` resolves owners and writes passwd/group and the metadata layer's entries.
//! This file holds the derivation model, [`plan()`] and [`Plan`]'s queries.

mod accounts;
mod builder;
mod describe;
mod entries;
mod layering;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::base::{BaseImage, BaseLayer, BlobSource};
use crate::hash::{ContentHash, DrvHash, Sha256};
use crate::lock::Lockfile;
use crate::source::Scanned;
use crate::spec::{Accounts, Platform, SpecDiagnostic, SpecFile};

pub use accounts::{meta_entries, MetaInputs};
pub use entries::merged_usr_path;

use builder::{image_order, Builder};
pub use describe::{describe, slot};

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
    /// Dependencies before dependents, computed once the graph is complete.
    order: Vec<NodeIndex>,
    /// The layer byte format (tar rules and compressor) every layer was planned with.
    pub layer_format: String,
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
        // The builder only adds edges from existing derivations to new ones, so a cycle is a
        // bug; say so rather than build nothing.
        b.plan.layer_format = inputs.layer_format.to_string();
        match petgraph::algo::toposort(&b.plan.graph, None) {
            Ok(order) => b.plan.order = order,
            Err(cycle) => {
                let name = b.plan.graph[cycle.node_id()].name.clone();
                let span = spec.images.first().map(|i| i.span).unwrap_or_else(|| (0, 0).into());
                return Err(vec![spec.diagnostic(
                    "compose::plan::cycle",
                    span,
                    format!("internal error: derivation {name} depends on itself"),
                    "while planning this file",
                    None,
                )]);
            }
        }
        Ok(b.plan)
    } else {
        Err(b.errors)
    }
}

impl Plan {
    /// Nodes in a deterministic topological order (dependencies first).
    /// Every derivation, dependencies before dependents.
    pub fn topo_order(&self) -> Vec<NodeIndex> {
        self.order.clone()
    }

    pub fn dependencies(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut v: Vec<NodeIndex> = self.graph.neighbors_directed(n, petgraph::Direction::Incoming).collect();
        v.sort();
        v
    }
}
