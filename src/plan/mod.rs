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
//! Submodules: `planner` turns each spec image into derivations (the `Planner`, image order),
//! `step` each step (its recipe and pin), `rootfs` the identity of an image's root file system
//! that steps are keyed by (not its layering nor its compression);
//! `entries` merges file operations into one layer's sorted entry list; `layering` plans the
//! package layers (popularity order under the layer budget, merged layer, the metadata layer's
//! derivation); `accounts` resolves owners and writes passwd/group and the metadata layer's entries.
//! This file holds the derivation model, [`plan()`] and [`Plan`]'s queries.

mod accounts;
mod describe;
mod entries;
mod layering;
mod planner;
mod rootfs;
mod step;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::base::{BaseImage, BaseLayer, BlobSource};
use crate::hash::{DrvHash, Sha256};
use crate::layer::Compression;
use crate::lock::Lockfile;
use crate::source::Scanned;
use crate::spec::{Accounts, Platform, SpecDiagnostic, SpecFile};

pub use accounts::{meta_entries, MetaInputs};
pub use entries::merged_usr_path;

pub use describe::{describe, slot};
use planner::{unit_order, Planner};

/// Default epoch when neither `SOURCE_DATE_EPOCH` nor the spec gives one: 1980-01-01T00:00:00Z
/// (not 0, which some tools read as "missing").
pub const DEFAULT_EPOCH: u64 = 315_532_800;

/// Identity of the step runner: the sandbox configuration steps run under (runc, namespaces, the
/// fixed environment, how outputs are captured). Part of every step's hash; changed by hand when
/// any of that changes. v2: one `/tmp` per step run, shared by its commands (was a new tmpfs for
/// each command); `BUILDPLATFORM`, `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`
/// in the fixed environment.
pub const SANDBOX_ID: &str = "runc/oci-bundle/overlay/v2";

/// Identity of the layer byte format (tar rules + compressor); part of every layer's hash.
pub type CompressorId = &'static str;

pub use crate::entry::{Content, EntryKind, PlannedEntry};

/// A layer built from files: its entries, byte-sorted by path, parents first.
#[derive(Debug, Clone)]
pub struct LayerDrv {
    pub entries: Vec<PlannedEntry>,
    pub epoch: u64,
    /// Shown in the image history (`created_by`).
    pub created_by: String,
    /// With `copy from=`: every operation in order (the entries of the others, and the copies,
    /// whose entries are known once their source is built); `entries` then holds only the
    /// others'. Empty otherwise.
    pub parts: Vec<LayerPart>,
    /// Paths under `/bin`, `/lib`… are written under `/usr` (the image has merged-/usr links).
    pub merged_usr: bool,
    pub compression: Compression,
}

/// One operation of a layer that has `copy from=`.
#[derive(Debug, Clone)]
pub enum LayerPart {
    Entries(Vec<PlannedEntry>),
    From(CopyFrom),
}

/// A `copy from=` operation: paths out of a step's output or an image's file system.
#[derive(Debug, Clone)]
pub struct CopyFrom {
    /// A [`DrvKind::Step`] or [`DrvKind::Image`] node.
    pub source: NodeIndex,
    /// The path inside the source: relative to a step's output (`""` = all of it), or absolute in
    /// an image.
    pub src: String,
    pub to: String,
    pub to_dir: bool,
    pub mode: Option<u32>,
    pub dir_mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
}

/// A build step: commands run in a sandbox over an image's root filesystem, yielding a tree.
#[derive(Debug, Clone)]
pub struct StepDrv {
    pub step: String,
    /// The image node whose file system the commands run in.
    pub image: NodeIndex,
    /// The layer of its inputs (file operations), if it has any.
    pub inputs: Option<NodeIndex>,
    /// Destinations of the inputs, mounted read-only.
    pub input_paths: Vec<String>,
    pub runs: Vec<Vec<String>>,
    /// The step's own `env`, over the fixed environment and the image's.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: (u32, u32),
    pub output: String,
    /// Fixed-output: may use the network; the output's hash is pinned.
    pub network: bool,
    /// Host variables passed through by name (fixed-output steps).
    pub pass_env: Vec<String>,
    /// What it may use (not part of its key).
    pub limits: crate::spec::StepLimits,
    /// Secrets present while it runs: their ids and where, in its key; their values never.
    pub secrets: Vec<crate::spec::SecretSpec>,
    /// Host paths mounted read-only (fixed-output steps): (host, destination).
    pub host_mounts: Vec<(String, String)>,
    /// Directories kept between its runs on this machine (not part of its key).
    pub caches: Vec<crate::spec::CacheSpec>,
    pub epoch: u64,
    /// The platform its output is for (`TARGETPLATFORM`): its image's, or with `platform
    /// "build"`, that of what copies from it.
    pub target: Platform,
    /// Its pin's name in the lockfile: the step's name, with `@PLATFORM` for a target other than
    /// the step's first.
    pub lock_key: String,
    /// The input-addressed hash of the recipe (the derivation hash of a hermetic step).
    pub recipe: DrvHash,
    /// A fixed-output step's pinned output (`diff_id` of its tree), from the lockfile; `None` when
    /// it has no pin for this recipe yet.
    pub pin: Option<Sha256>,
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
    pub healthcheck: Option<crate::spec::Healthcheck>,
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
    /// What its root file system holds, however it is layered and compressed (`rootfs`): what
    /// steps and maintainer scripts running over it are keyed by.
    pub rootfs: DrvHash,
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
    /// Reproduce the effects compose knows of the package's scripts in its layer (not when the
    /// image runs them: `maintainer-scripts "run"`).
    pub emulate: bool,
    pub compression: Compression,
}

/// Several package layers merged into one (past the layer budget).
#[derive(Debug, Clone)]
pub struct MergedLayerDrv {
    pub parts: Vec<NodeIndex>,
    pub compression: Compression,
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
    /// The package layers whose dpkg status paragraphs make `/var/lib/dpkg/status`: this image's
    /// packages and its `base image=` ancestors'.
    pub statuses: Vec<NodeIndex>,
    /// An external base's own `/var/lib/dpkg/status`, kept in the image's status file.
    pub base_status: Option<Arc<String>>,
    /// ca-certificates-java is installed: write Java's `cacerts` from the CA certificates.
    pub java_cacerts: bool,
    /// `maintainer-scripts "run"`: the packages are written as unpacked, for `dpkg --configure`.
    pub unpacked: bool,
    /// `config { workdir }` to make, unless a package ships it.
    pub workdir: Option<String>,
    pub compression: Compression,
}

/// `maintainer-scripts "run"`: `dpkg --configure -a` over an image's packages and metadata (its
/// "packages root"), in the build steps' sandbox; what it changes becomes a layer.
#[derive(Debug, Clone)]
pub struct ScriptsDrv {
    pub image: String,
    /// The image derivation of the packages root.
    pub root: NodeIndex,
    pub epoch: u64,
    pub compression: Compression,
}

/// Identity of how maintainer scripts are run and their changes captured; part of the hash.
pub const SCRIPTS_FORMAT: &str = "dpkg-configure-a/overlay-upper/v2";

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
    Step(Box<StepDrv>),
    Scripts(ScriptsDrv),
}

/// The derivation hash of a fixed-output step pinned to `output`: its output, nothing else (as
/// Nix's fixed-output derivations), so that a new builder image yielding the same bytes changes
/// nothing downstream.
pub fn fixed_output_hash(output: &Sha256) -> DrvHash {
    crate::hash::Encoder::new("fixed-output-step").sha256(output).finish()
}

impl DrvKind {
    /// The kind of record this derivation makes.
    pub fn record_kind(&self) -> crate::record::Kind {
        use crate::record::Kind;
        match self {
            DrvKind::Layer(_) => Kind::Layer,
            DrvKind::Fetch(_) => Kind::Fetch,
            DrvKind::Blob(_) => Kind::Blob,
            DrvKind::DebLayer(_) => Kind::Deb,
            DrvKind::MergedLayer(_) => Kind::Merged,
            DrvKind::Meta(_) => Kind::Meta,
            DrvKind::Image(_) => Kind::Image,
            DrvKind::Index(_) => Kind::Index,
            DrvKind::Step(_) => Kind::Step,
            DrvKind::Scripts(_) => Kind::Scripts,
        }
    }

    /// The word its record names its kind with.
    pub fn name(&self) -> &'static str {
        self.record_kind().name()
    }

    /// What its record must be: the kind, and what this derivation pins of its outputs.
    pub fn expected(&self) -> crate::record::Expected {
        use crate::record::Pins;
        let pins = match self {
            DrvKind::Fetch(f) => Pins::File { digest: f.sha256, size: f.size },
            DrvKind::Blob(b) => {
                Pins::Blob { digest: b.layer.digest, size: b.layer.size, media_type: b.layer.media_type.clone(), diff_id: b.layer.diff_id }
            }
            DrvKind::Step(s) => s.pin.map_or(Pins::Nothing, |diff_id| Pins::Tree { diff_id }),
            kind => kind.compression().map_or(Pins::Nothing, |c| Pins::LayerMedia(c.media_type())),
        };
        crate::record::Expected { kind: self.record_kind(), pins }
    }

    /// How its `layer` output is compressed, for the kinds with one.
    pub fn compression(&self) -> Option<Compression> {
        match self {
            DrvKind::Layer(l) => Some(l.compression),
            DrvKind::DebLayer(d) => Some(d.compression),
            DrvKind::MergedLayer(m) => Some(m.compression),
            DrvKind::Meta(m) => Some(m.compression),
            DrvKind::Scripts(s) => Some(s.compression),
            DrvKind::Fetch(_) | DrvKind::Blob(_) | DrvKind::Image(_) | DrvKind::Index(_) | DrvKind::Step(_) => None,
        }
    }

    /// Does this derivation produce an image layer?
    pub fn is_layer(&self) -> bool {
        matches!(self, DrvKind::Layer(_) | DrvKind::DebLayer(_) | DrvKind::MergedLayer(_) | DrvKind::Meta(_) | DrvKind::Scripts(_))
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
    /// Written to `out/` (not an `export #false` image, unless asked for by name).
    pub export: bool,
}

/// The DAG. Edges go from a dependency to its dependent.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub graph: DiGraph<Derivation, ()>,
    pub images: Vec<PlannedImage>,
    /// Dependencies before dependents, computed once the graph is complete.
    order: Vec<NodeIndex>,
    /// The layer byte format (tar rules, chunking and compressor) gzip layers were planned
    /// with, then zstd layers.
    pub layer_format: [String; 2],
}

/// Inputs to planning besides the spec.
pub struct PlanInputs<'a> {
    /// Scanned copy sources, keyed by the spec's source string.
    pub sources: &'a HashMap<String, Scanned>,
    /// `SOURCE_DATE_EPOCH`, if set.
    pub source_date_epoch: Option<u64>,
    /// Identity of the layer format (tar rules, chunking, compressor) for each compression.
    pub layer_format: fn(Compression) -> &'static str,
    /// `--compression`: every image's layers compressed so, whatever the spec says.
    pub compression: Option<Compression>,
    /// Pins of images with packages.
    pub lock: Option<&'a Lockfile>,
    /// Mirror URL of a repository (name, suite), or why there is none. Never hashed.
    pub mirror: &'a dyn Fn(&str, &str) -> Result<String, String>,
    /// Most layers an image may have; packages are merged past it.
    pub max_layers: usize,
    /// External bases, by (image name, platform).
    pub bases: &'a HashMap<(String, String), BaseImage>,
    /// The passwd and group an image with packages has when neither its packages nor its base
    /// bring any: the package ecosystem's (Debian's base-passwd defaults). Never hashed: they
    /// are the ecosystem's constants, named by the layer format.
    pub default_accounts: (&'a str, &'a str),
}

/// Default layer budget: below 100 layers in all.
pub const DEFAULT_MAX_LAYERS: usize = 99;

/// Plan every image of `spec` (or only `only`, and what it needs).
pub fn plan(spec: &SpecFile, only: Option<&str>, inputs: &PlanInputs<'_>) -> Result<Plan, Vec<SpecDiagnostic>> {
    let mut b = Planner {
        image_nodes: HashMap::new(),
        accounts_of: HashMap::new(),
        spec,
        inputs,
        plan: Plan::default(),
        by_hash: HashMap::new(),
        errors: Vec::new(),
        step_nodes: HashMap::new(),
        compression: Compression::Gzip,
    };
    // What each image or step uses (bases, step images, `copy from=`) before it; with `only`,
    // what it needs is planned too.
    // Steps are planned for each platform something copies them into (`Planner::step_for`).
    for image in unit_order(spec, only) {
        let output = only.is_none_or(|n| n == image.name);
        let export = image.export || only == Some(image.name.as_str());
        b.image(image, output, export);
    }
    if b.errors.is_empty() {
        // The builder only adds edges from existing derivations to new ones, so a cycle is a
        // bug; say so rather than build nothing.
        b.plan.layer_format = [Compression::Gzip, Compression::Zstd].map(|c| (inputs.layer_format)(c).to_string());
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

/// The entries of a layer with `copy from=`, once the copies' entries are known: every
/// operation's entries inserted in order, with the same rules as at planning (implicit parents,
/// the later operation wins, a path cannot be both a directory and something else).
pub fn merge_parts(merged_usr: bool, parts: Vec<Vec<PlannedEntry>>) -> Result<Vec<PlannedEntry>, String> {
    let mut layer = entries::LayerEntries { merged_usr, ..Default::default() };
    for (i, part) in parts.into_iter().enumerate() {
        for e in part {
            layer.insert(e, (i, 0).into()).map_err(|c| c.message)?;
        }
    }
    Ok(layer.finish())
}

impl Plan {
    /// Nodes in a deterministic topological order (dependencies first).
    /// Every derivation, dependencies before dependents.
    pub fn topo_order(&self) -> Vec<NodeIndex> {
        self.order.clone()
    }

    /// What a build must produce: the roots of exported images.
    pub fn roots(&self) -> Vec<NodeIndex> {
        self.images.iter().filter(|i| i.export).map(|i| i.root).collect()
    }

    /// Fixed-output steps without a pin for their current recipe.
    pub fn unpinned_steps(&self) -> Vec<NodeIndex> {
        self.order.iter().copied().filter(|&n| matches!(&self.graph[n].kind, DrvKind::Step(s) if s.network && s.pin.is_none())).collect()
    }

    pub fn dependencies(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut v: Vec<NodeIndex> = self.graph.neighbors_directed(n, petgraph::Direction::Incoming).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::lock::{ImageLock, PackageLock, PlatformLock};

    /// A files-only image and a two-platform image with packages; `docs` and `tool` are the
    /// contents of one `text` operation each.
    fn spec_text(docs: &str, tool: &str) -> String {
        format!(
            r#"
image "hello" {{
    epoch 1700000000
    accounts {{
        group "app" gid=10001
        user "app" uid=10001 gid=10001 home="/home/app"
    }}
    files {{
        text "/etc/motd" "built with compose\n"
        dir "/var/cache/app" mode=0o750 owner="app"
        symlink "/srv/current" target="/srv/www"
    }}
    layer "docs" {{
        text "/usr/share/doc/hello/README" "{docs}"
    }}
    config {{
        user "app"
    }}
}}
image "pk" {{
    platforms "linux/amd64" "linux/arm64"
    repository "debian" suite="bookworm" components="main"
    packages "base-passwd" "tzdata"
    files {{
        text "/bin/tool" "{tool}" mode=0o755
    }}
}}
"#
        )
    }

    fn lockfile() -> Lockfile {
        let pin = |name: &str| PackageLock {
            name: name.into(),
            version: "1.0".into(),
            architecture: "amd64".into(),
            sha256: Sha256::of(name.as_bytes()).hex(),
            size: 10,
            filename: format!("pool/main/{name}.deb"),
            repository: "debian".into(),
            ..Default::default()
        };
        let platform = PlatformLock { repositories: vec![], packages: vec![pin("base-passwd"), pin("tzdata")] };
        let platforms = ["linux/amd64", "linux/arm64"].into_iter().map(|p| (p.to_string(), platform.clone())).collect();
        Lockfile {
            version: 1,
            images: [("pk".to_string(), ImageLock { platforms, ..Default::default() })].into_iter().collect(),
            steps: Default::default(),
        }
    }

    /// The accounts an image with packages gets from its ecosystem when nothing else brings any
    /// (a part of Debian's base-passwd defaults).
    const DEFAULT_ACCOUNTS: (&str, &str) =
        ("root:*:0:0:root:/root:/bin/bash\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", "root:*:0:\nnogroup:*:65534:\n");

    fn plan_of(text: &str, only: Option<&str>, source_date_epoch: Option<u64>) -> Result<Plan, Vec<SpecDiagnostic>> {
        let spec = crate::spec::parse_str(Path::new("t.kdl"), text).unwrap();
        let lock = lockfile();
        let sources = HashMap::new();
        let bases = HashMap::new();
        let mirror = |_: &str, _: &str| -> Result<String, String> { Err("offline".into()) };
        let inputs = PlanInputs {
            sources: &sources,
            source_date_epoch,
            layer_format: |_| "test",
            compression: None,
            lock: Some(&lock),
            mirror: &mirror,
            max_layers: DEFAULT_MAX_LAYERS,
            bases: &bases,
            default_accounts: DEFAULT_ACCOUNTS,
        };
        plan(&spec, only, &inputs)
    }

    /// Every derivation's hash by name (names are unique in these plans).
    fn hashes(p: &Plan) -> BTreeMap<String, DrvHash> {
        let map: BTreeMap<String, DrvHash> = p.graph.node_weights().map(|d| (d.name.clone(), d.hash)).collect();
        assert_eq!(map.len(), p.graph.node_count(), "derivation names are unique");
        map
    }

    fn node<'p>(p: &'p Plan, name: &str) -> &'p Derivation {
        p.graph.node_weights().find(|d| d.name == name).unwrap_or_else(|| panic!("no derivation `{name}`"))
    }

    fn codes(r: Result<Plan, Vec<SpecDiagnostic>>) -> Vec<&'static str> {
        r.err().unwrap_or_default().iter().map(|d| d.code).collect()
    }

    #[test]
    fn planning_the_same_spec_twice_gives_the_same_hashes() {
        let text = spec_text("docs", "tool");
        let (a, b) = (plan_of(&text, None, None).unwrap(), plan_of(&text, None, None).unwrap());
        assert_eq!(hashes(&a), hashes(&b));
        let roots = |p: &Plan| p.images.iter().map(|i| (i.name.clone(), p.graph[i.root].hash)).collect::<Vec<_>>();
        assert_eq!(roots(&a), roots(&b));
        assert_eq!(a.images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["hello", "pk"]);
        // hello: accounts, files, docs, image; pk: files, 2 fetches, 2 packages, 2 metadata, 2 images, index.
        assert_eq!(a.graph.node_count(), 4 + 10);
        // Pinned across builds too: a change here changes every image digest (update it only
        // for an intended change of the derivation encoding; last: `accounts` also writes
        // /etc/shadow and /etc/gshadow).
        assert_eq!(node(&a, "hello: image").hash.hex(), "aa6f9ba15534d6b3800e4156db498381efb4c4afc42821c3b3fcfc936527addb");
    }

    #[test]
    fn changing_one_text_op_changes_only_its_layer_and_the_images_over_it() {
        let before = hashes(&plan_of(&spec_text("docs", "tool"), None, None).unwrap());
        let after = hashes(&plan_of(&spec_text("docs, edited", "tool"), None, None).unwrap());
        let changed: Vec<&str> = before.iter().filter(|(n, h)| after.get(*n) != Some(h)).map(|(n, _)| n.as_str()).collect();
        assert_eq!(changed, ["hello: image", "hello: layer \"docs\""]);
        assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());

        // In the image with packages: the files layer, each platform's image and the index;
        // not the fetches, the package layers or the metadata layers.
        let after = hashes(&plan_of(&spec_text("docs", "tool 2"), None, None).unwrap());
        let changed: Vec<&str> = before.iter().filter(|(n, h)| after.get(*n) != Some(h)).map(|(n, _)| n.as_str()).collect();
        assert_eq!(changed, ["pk: files", "pk: image linux/amd64", "pk: image linux/arm64", "pk: index"]);
        assert!(before.contains_key("hello: accounts") && before.contains_key("pk: metadata (linux/amd64)"));
    }

    #[test]
    fn the_files_layer_holds_resolved_owners_modes_and_parents() {
        let p = plan_of(&spec_text("docs", "tool"), None, None).unwrap();
        let DrvKind::Layer(files) = &node(&p, "hello: files").kind else { panic!("not a files layer") };
        let summary: Vec<(&str, u32, u32, u32)> = files.entries.iter().map(|e| (e.path.as_str(), e.mode, e.uid, e.gid)).collect();
        assert_eq!(
            summary,
            [
                ("/etc", 0o755, 0, 0),
                ("/etc/motd", 0o644, 0, 0),
                ("/srv", 0o755, 0, 0),
                ("/srv/current", 0o777, 0, 0),
                ("/var", 0o755, 0, 0),
                ("/var/cache", 0o755, 0, 0),
                ("/var/cache/app", 0o750, 10001, 10001),
            ]
        );
        assert_eq!((files.epoch, files.created_by.as_str()), (1_700_000_000, "compose: files"));
        // An image with packages has merged-/usr links: `/bin/tool` is written as `/usr/bin/tool`.
        let DrvKind::Layer(pk) = &node(&p, "pk: files").kind else { panic!("not a files layer") };
        let paths: Vec<&str> = pk.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/usr", "/usr/bin", "/usr/bin/tool"]);
    }

    #[test]
    fn an_image_with_packages_stacks_packages_then_metadata_then_files() {
        let p = plan_of(&spec_text("docs", "tool"), None, None).unwrap();
        let DrvKind::Image(img) = &node(&p, "pk: image linux/arm64").kind else { panic!("not an image") };
        let layers: Vec<&str> = img.layers.iter().map(|&n| p.graph[n].name.as_str()).collect();
        // base-passwd and tzdata are equally popular (0): by name.
        assert_eq!(layers, ["pk: package base-passwd=1.0", "pk: package tzdata=1.0", "pk: metadata (linux/arm64)", "pk: files"]);
        let DrvKind::Meta(meta) = &node(&p, "pk: metadata (linux/arm64)").kind else { panic!("not a metadata layer") };
        assert_eq!(meta.timezone.as_deref(), Some("Etc/UTC"), "tzdata is installed, TZ is unset");
        assert!(meta.write_accounts && meta.base_passwd.is_some() && meta.ca_certificates.is_none());
        assert_eq!(meta.symlinks.len(), 3, "no /lib64 link on arm64");
        let pk = p.images.iter().find(|i| i.name == "pk").unwrap();
        let DrvKind::Index(index) = &p.graph[pk.root].kind else { panic!("a two-platform image is rooted at an index") };
        assert_eq!(index.images.len(), 2);
        // Dependencies come first in the topological order.
        let order = p.topo_order();
        let pos = |n: NodeIndex| order.iter().position(|&m| m == n).unwrap();
        assert_eq!(order.len(), p.graph.node_count());
        for n in p.graph.node_indices() {
            let deps = p.dependencies(n);
            assert!(deps.windows(2).all(|w| w[0] < w[1]), "dependencies are sorted");
            assert!(deps.iter().all(|&d| pos(d) < pos(n)), "{} comes after its dependencies", p.graph[n].name);
        }
    }

    #[test]
    fn the_epoch_is_source_date_epoch_then_the_spec_then_the_default() {
        let text = spec_text("docs", "tool");
        let epoch_of = |p: &Plan, name: &str| match &node(p, name).kind {
            DrvKind::Image(i) => i.epoch,
            other => panic!("not an image: {}", other.name()),
        };
        let from_spec = plan_of(&text, None, None).unwrap();
        let from_env = plan_of(&text, None, Some(42)).unwrap();
        assert_eq!(epoch_of(&from_spec, "hello: image"), 1_700_000_000);
        assert_eq!(epoch_of(&from_spec, "pk: image linux/amd64"), DEFAULT_EPOCH);
        assert_eq!(epoch_of(&from_env, "hello: image"), 42);
        assert_eq!(epoch_of(&from_env, "pk: image linux/amd64"), 42);
        assert_ne!(node(&from_spec, "hello: files").hash, node(&from_env, "hello: files").hash, "the epoch is part of a layer's hash");
    }

    #[test]
    fn only_plans_the_image_and_its_bases_and_outputs_the_image() {
        let text = format!("{}\nimage \"child\" {{\n    base image=\"hello\"\n}}\n", spec_text("docs", "tool"));
        let p = plan_of(&text, Some("child"), None).unwrap();
        assert_eq!(p.images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["child"]);
        let names = hashes(&p);
        assert!(names.contains_key("hello: image") && names.contains_key("child: image"));
        assert!(!names.keys().any(|n| n.starts_with("pk:")), "pk is not planned for child");
        let DrvKind::Image(child) = &node(&p, "child: image").kind else { panic!("not an image") };
        assert!(matches!(child.base, Some(ImageBase::Image(n)) if p.graph[n].name == "hello: image"));
    }

    #[test]
    fn unknown_owners_users_and_path_clashes_are_planning_errors() {
        let text = spec_text("docs", "tool");
        let bad_owner = text.replace("owner=\"app\"", "owner=\"ghost\"");
        assert_eq!(codes(plan_of(&bad_owner, None, None)), ["compose::spec::unknown_owner"]);
        let bad_user = text.replace("user \"app\"\n", "user \"ghost\"\n");
        assert_eq!(codes(plan_of(&bad_user, None, None)), ["compose::spec::unknown_user"]);
        let clash = text.replace("symlink \"/srv/current\"", "dir \"/etc/motd\"\n        symlink \"/srv/current\"");
        assert_eq!(codes(plan_of(&clash, None, None)), ["compose::spec::path_conflict"]);
        let unlocked = text.replace("image \"pk\"", "image \"pk2\"");
        assert_eq!(codes(plan_of(&unlocked, None, None)), ["compose::lock::missing", "compose::lock::missing"]);
    }

    const STEPS: &str = r#"
image "b" { export #false; files { text "/bin/tool" "tool" mode=0o755; } }
step "s" {
    image "b"
    text "/in/x" "INPUT"
    run "tool" "ARG"
    output "/out"
}
step "fo" {
    image "b"
    run "fetch"
    output "/out"
    network #true
}
image "app" {
    files {
        copy from="s" "/out/bin" to="/bin/"
        text "/etc/t" "t"
    }
    layer "fetched" { copy from="fo" "/out" to="/data" }
}
"#;

    #[test]
    fn steps_are_keyed_by_their_inputs_and_fixed_output_steps_by_their_pin() {
        let p = plan_of(STEPS, None, None).unwrap();
        assert_eq!(p.images.iter().map(|i| (i.name.as_str(), i.export)).collect::<Vec<_>>(), [("b", false), ("app", true)]);
        assert_eq!(p.roots(), [p.images[1].root], "only exported images are built for their own sake");
        let DrvKind::Step(s) = &node(&p, "step s").kind else { panic!("not a step") };
        assert_eq!((s.network, s.pin, s.input_paths.len()), (false, None, 0));
        assert!(s.inputs.is_some_and(|n| p.graph[n].name == "step s: inputs"));
        assert_eq!(node(&p, "step s").hash, s.recipe, "a hermetic step is keyed by its recipe");
        let DrvKind::Layer(files) = &node(&p, "app: files").kind else { panic!("not a layer") };
        assert_eq!(files.parts.len(), 2, "the copy and the text, in order");
        let deps: Vec<&str> = p
            .dependencies(p.graph.node_indices().find(|&n| p.graph[n].name == "app: files").unwrap())
            .into_iter()
            .map(|n| p.graph[n].name.as_str())
            .collect();
        assert_eq!(deps, ["step s"]);
        // Unpinned, then pinned for its recipe: keyed by the pin alone.
        assert_eq!(p.unpinned_steps().len(), 1);
        let DrvKind::Step(fo) = &node(&p, "step fo").kind else { panic!("not a step") };
        assert_eq!(node(&p, "step fo").hash, fo.recipe);

        let pin = Sha256::of(b"tree");
        let with_pin = |recipe: String| {
            let spec = crate::spec::parse_str(std::path::Path::new("t.kdl"), STEPS).unwrap();
            let mut lock = lockfile();
            lock.steps.insert("fo".into(), crate::lock::StepLock { recipe, output: pin.to_string() });
            let (sources, bases) = (HashMap::new(), HashMap::new());
            let mirror = |_: &str, _: &str| -> Result<String, String> { Err("offline".into()) };
            let inputs = PlanInputs {
                sources: &sources,
                source_date_epoch: None,
                layer_format: |_| "test",
                compression: None,
                lock: Some(&lock),
                mirror: &mirror,
                max_layers: DEFAULT_MAX_LAYERS,
                bases: &bases,
                default_accounts: DEFAULT_ACCOUNTS,
            };
            plan(&spec, None, &inputs).unwrap()
        };
        let pinned = with_pin(fo.recipe.hex());
        assert!(pinned.unpinned_steps().is_empty());
        assert_eq!(node(&pinned, "step fo").hash, fixed_output_hash(&pin));
        let stale = with_pin("another recipe".into());
        assert_eq!(stale.unpinned_steps().len(), 1, "a pin for another recipe is no pin");

        // Another command changes the step and what copies from it, not the builder image or the
        // fixed-output step.
        let before = hashes(&p);
        let after = hashes(&plan_of(&STEPS.replace("\"ARG\"", "\"OTHER\""), None, None).unwrap());
        let changed: Vec<&str> = before.iter().filter(|(n, h)| after.get(*n) != Some(h)).map(|(n, _)| n.as_str()).collect();
        assert_eq!(changed, ["app: files", "app: image", "step s"]);
        // With --image app, the step and its image are planned; no step the image does not use.
        let only = plan_of(&format!("{STEPS}\nstep \"unused\" {{ image \"b\"; run \"x\"; output \"/o\"; }}\n"), Some("app"), None).unwrap();
        assert!(hashes(&only).contains_key("step s") && !hashes(&only).contains_key("step unused"));
    }

    /// Found by users: the documented `owner="user:group"` with names from `accounts` was
    /// refused.
    #[test]
    fn owner_user_group_names_from_accounts_are_accepted() {
        let text = spec_text("docs", "tool")
            .replace("owner=\"app\"", "owner=\"app:staff\"")
            .replace("group \"app\" gid=10001\n", "group \"app\" gid=10001\n        group \"staff\" gid=50\n");
        let p = plan_of(&text, None, None).unwrap();
        let DrvKind::Layer(files) = &node(&p, "hello: files").kind else { panic!("not a files layer") };
        let e = files.entries.iter().find(|e| e.path == "/var/cache/app").unwrap();
        assert_eq!((e.uid, e.gid), (10001, 50));
        let unknown = text.replace("owner=\"app:staff\"", "owner=\"app:nogroup\"");
        assert_eq!(codes(plan_of(&unknown, None, None)), ["compose::spec::unknown_owner"]);
    }

    /// Guards three defects: `owner="5000"` said "numeric owners need a group id" (Docker's
    /// `--chown=5000` means 5000:5000), `owner="nobody:nogroup"` was unknown in an image whose
    /// packages bring their ecosystem's default users, and `accounts` wrote no `/etc/shadow`, so `su`
    /// failed.
    #[test]
    fn owners_and_accounts_as_a_dockerfile_user_writes_them() {
        let text = spec_text("docs", "tool")
            .replace("owner=\"app\"", "owner=\"5000\"")
            .replace("text \"/bin/tool\" \"tool\" mode=0o755", "text \"/bin/tool\" \"tool\" mode=0o755 owner=\"nobody:nogroup\"");
        let p = plan_of(&text, None, None).unwrap();
        let DrvKind::Layer(files) = &node(&p, "hello: files").kind else { panic!("not a files layer") };
        let e = files.entries.iter().find(|e| e.path == "/var/cache/app").unwrap();
        assert_eq!((e.uid, e.gid), (5000, 5000));
        let DrvKind::Layer(pk) = &node(&p, "pk: files").kind else { panic!("not a files layer") };
        let e = pk.entries.iter().find(|e| e.path == "/usr/bin/tool").unwrap();
        assert_eq!((e.uid, e.gid), (65534, 65534));
        // Locked shadow entries beside the accounts' passwd.
        let DrvKind::Layer(acc) = &node(&p, "hello: accounts").kind else { panic!("not an accounts layer") };
        let shadow = acc.entries.iter().find(|e| e.path == "/etc/shadow").expect("/etc/shadow");
        let EntryKind::File { content: Content::Inline(bytes), .. } = &shadow.kind else { panic!("inline") };
        assert_eq!(String::from_utf8_lossy(bytes), "root:!::0:99999:7:::\napp:!::0:99999:7:::\n");
        assert_eq!(shadow.mode, 0o640);
        assert!(acc.entries.iter().any(|e| e.path == "/etc/gshadow"));
    }

    /// `workdir` is made as Docker's WORKDIR makes it: in an image with packages, the metadata
    /// layer makes it unless a package ships it; the images without one keep their hashes.
    #[test]
    fn workdir_of_a_packaged_image_is_made_by_the_metadata_layer() {
        let before = hashes(&plan_of(&spec_text("docs", "tool"), None, None).unwrap());
        let text =
            spec_text("docs", "tool").replace("        text \"/bin/tool\"", "        text \"/opt/x\" \"x\"\n        text \"/bin/tool\"");
        let text = text.replacen(
            "    files {\n        text \"/opt/x\"",
            "    config { workdir \"/app\"; }\n    files {\n        text \"/opt/x\"",
            1,
        );
        let p = plan_of(&text, Some("pk"), None).unwrap();
        let meta = p.graph.node_weights().find(|d| d.name.starts_with("pk: metadata")).unwrap();
        let DrvKind::Meta(m) = &meta.kind else { panic!("not a metadata layer") };
        assert_eq!(m.workdir.as_deref(), Some("/app"));
        assert_ne!(before.get(&meta.name), Some(&meta.hash));
    }
}
