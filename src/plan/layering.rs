//! Package layering: each pinned package's fetch and layer derivations, ordered by popularity
//! (most depended-upon first, `Replaces` after what they replace) under the layer budget, the rest
//! merged into one layer; and the metadata layer's derivation (its entries: `accounts`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use petgraph::graph::NodeIndex;

use super::accounts::encode_accounts;
use super::planner::{sha_of, Planner};
use super::{DebLayerDrv, Derivation, DrvKind, FetchDrv, MergedLayerDrv, MetaDrv, PackageLayer};
use crate::hash::{DrvHash, Encoder, Sha256};
use crate::lock::PackageLock;
use crate::spec::{Base, ImageSpec, Platform};

/// What a package layer holds besides the package's files: dpkg's `info/` entries and the effects
/// compose reproduces without running scripts. Part of every package layer's hash.
pub const DEB_LAYER_FORMAT: &str = "deb-layer/v6";

/// What the metadata layer of an image with packages generates besides accounts, CA bundle and
/// time zone: Debian's users without base-passwd, the dpkg status file, alternatives, the CA
/// hash links and Java's cacerts. Part of its hash: change it with the generation.
pub const META_LAYER_FORMAT: &str = "meta/v9";

impl Planner<'_> {
    /// What an image inherits of the dpkg database: the package layers of its `base image=`
    /// ancestors on `platform` (root first), and the status file of the external base at the top
    /// of that chain, if it has one.
    fn inherited_dpkg(&self, image: &ImageSpec, platform: &str) -> (Vec<NodeIndex>, Option<Arc<String>>) {
        let mut chain: Vec<Vec<NodeIndex>> = Vec::new();
        let mut cur = image;
        for _ in 0..=self.spec.images.len() {
            match &cur.base {
                Base::Scratch => break,
                Base::Image { name, .. } => {
                    let (Some(parent), Some(&n)) = (self.spec.image(name), self.image_nodes.get(&(name.clone(), platform.to_string())))
                    else {
                        break;
                    };
                    if let DrvKind::Image(d) = &self.plan.graph[n].kind {
                        chain.push(d.packages.iter().map(|p| p.layer).collect());
                    }
                    cur = parent;
                }
                _ => {
                    let status = self
                        .inputs
                        .bases
                        .get(&(cur.name.clone(), platform.to_string()))
                        .and_then(|b| b.files.get("var/lib/dpkg/status"))
                        .map(|v| Arc::new(String::from_utf8_lossy(v).into_owned()));
                    return (chain.into_iter().rev().flatten().collect(), status);
                }
            }
        }
        (chain.into_iter().rev().flatten().collect(), None)
    }

    /// Fetch and layer derivations for one platform's pinned packages, and the metadata layer.
    /// Packages get a layer each while the image stays within the layer budget; past it, the
    /// least depended-upon packages share one merged layer (Nix's popularity layering).
    pub(super) fn package_layers(
        &mut self,
        image: &ImageSpec,
        platform: &Platform,
        pins: &[PackageLock],
        epoch: u64,
        other_layers: usize,
        workdir: Option<&str>,
    ) -> (Vec<NodeIndex>, Vec<PackageLayer>, NodeIndex) {
        let fetches = self.fetches(image, pins);
        let order = layer_order(pins, &fetches);
        let budget = self.inputs.max_layers.saturating_sub(other_layers + 1).max(1);
        let own = if order.len() <= budget { order.len() } else { budget.saturating_sub(1).max(1) };
        let mut layers = Vec::new();
        let mut image_layers = Vec::new();
        for p in &order[..own] {
            let layer = self.deb_layer(image, p, fetches[p.name.as_str()], epoch);
            image_layers.push(layer);
            layers.push(PackageLayer { layer, packages: vec![p.name.clone()], replaces: p.replaces.clone() });
        }
        if order.len() > own {
            let rest = &order[own..];
            let parts: Vec<NodeIndex> = rest.iter().map(|p| self.deb_layer(image, p, fetches[p.name.as_str()], epoch)).collect();
            for (p, &layer) in rest.iter().zip(&parts) {
                layers.push(PackageLayer { layer, packages: vec![p.name.clone()], replaces: p.replaces.clone() });
            }
            image_layers.push(self.merged_layer(image, parts));
        }
        let meta = self.meta_layer(image, platform, epoch, &fetches, &layers, workdir);
        (image_layers, layers, meta)
    }

    /// The fetch derivation of each pinned package, by name (a damaged pin is reported and left
    /// out).
    fn fetches<'p>(&mut self, image: &ImageSpec, pins: &'p [PackageLock]) -> BTreeMap<&'p str, NodeIndex> {
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
        fetches
    }

    /// One package's layer, from its fetched `.deb`.
    fn deb_layer(&mut self, image: &ImageSpec, p: &PackageLock, fetch: NodeIndex, epoch: u64) -> NodeIndex {
        let merged_usr = true;
        let mut e = Encoder::new("deb-layer");
        // v3: dpkg's info/ files in the layer (was: distroless status.d/), base-files' links,
        // the status paragraph and alternatives as outputs.
        e.str(self.format()).u64(epoch).u64(merged_usr as u64).sha256(&sha_of(&self.plan.graph[fetch])).str(DEB_LAYER_FORMAT);
        if image.run_scripts {
            e.str("scripts run");
        }
        let drv = Derivation {
            hash: e.finish(),
            name: format!("{}: package {}={}", image.name, p.name, p.version),
            kind: DrvKind::DebLayer(DebLayerDrv {
                package: format!("{}={}", p.name, p.version),
                fetch,
                epoch,
                merged_usr,
                emulate: !image.run_scripts,
                compression: self.compression,
            }),
        };
        self.add(drv, &[fetch])
    }

    /// The one layer the packages past the layer budget share.
    fn merged_layer(&mut self, image: &ImageSpec, parts: Vec<NodeIndex>) -> NodeIndex {
        let mut e = Encoder::new("merged-layer");
        e.str(self.format()).list(parts.len());
        for &n in &parts {
            e.drv(&self.plan.graph[n].hash);
        }
        let drv = Derivation {
            hash: e.finish(),
            name: format!("{}: {} packages merged", image.name, parts.len()),
            kind: DrvKind::MergedLayer(MergedLayerDrv { parts: parts.clone(), compression: self.compression }),
        };
        self.add(drv, &parts)
    }

    /// The metadata layer: what the packages' maintainer scripts would have made (accounts, CA
    /// bundle, time zone, dpkg's status, the merged-`/usr` links, the working directory).
    fn meta_layer(
        &mut self,
        image: &ImageSpec,
        platform: &Platform,
        epoch: u64,
        fetches: &BTreeMap<&str, NodeIndex>,
        layers: &[PackageLayer],
        workdir: Option<&str>,
    ) -> NodeIndex {
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
        // dpkg's status file holds every package: this image's, its `base image=` ancestors',
        // and an external base's own status file.
        let (mut statuses, base_status) = self.inherited_dpkg(image, &platform.to_string());
        statuses.extend(layers.iter().map(|p: &PackageLayer| p.layer));
        let meta = MetaDrv {
            base_accounts,
            write_accounts,
            accounts: image.accounts.clone(),
            base_passwd: fetches.get("base-passwd").copied(),
            ca_certificates: fetches.get("ca-certificates").copied(),
            // The spec's `TZ`, as the runtime config has it.
            timezone: fetches.contains_key("tzdata").then(|| {
                image.config.env.iter().rev().find(|(k, _)| k == "TZ").map(|(_, v)| v.clone()).unwrap_or_else(|| "Etc/UTC".to_string())
            }),
            symlinks,
            epoch,
            statuses,
            base_status,
            java_cacerts: fetches.contains_key("ca-certificates-java"),
            unpacked: image.run_scripts,
            workdir: workdir.map(str::to_string),
            compression: self.compression,
        };
        let hash = self.meta_hash(&meta, self.format(), &|n| self.plan.graph[n].hash);
        let mut deps: Vec<NodeIndex> = [meta.base_passwd, meta.ca_certificates].into_iter().flatten().collect();
        deps.extend(meta.statuses.iter().copied());
        let drv = Derivation { hash, name: format!("{}: metadata ({platform})", image.name), kind: DrvKind::Meta(Box::new(meta)) };
        self.add(drv, &deps)
    }

    /// The metadata layer's derivation hash in layer format `format`, naming the package layers
    /// it lists by `drv` (their derivation hashes; their content ids for the root file system's
    /// identity, see `rootfs`).
    pub(super) fn meta_hash(&self, meta: &MetaDrv, format: &str, drv: &dyn Fn(NodeIndex) -> DrvHash) -> DrvHash {
        let mut e = Encoder::new("meta-layer");
        e.str(format).u64(meta.epoch);
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
        // Only when there is a status file to write: images of earlier versions keep their hash.
        if !meta.statuses.is_empty() || meta.base_status.is_some() {
            e.str(META_LAYER_FORMAT).list(meta.statuses.len());
            for &n in &meta.statuses {
                e.drv(&drv(n));
            }
            e.opt_str(meta.base_status.as_deref().map(String::as_str));
            e.u64(meta.java_cacerts as u64);
            if meta.unpacked {
                e.str("unpacked");
            }
        }
        // Only when there is one to make: other images keep their hash.
        if let Some(w) = &meta.workdir {
            e.str("workdir").str(w);
        }
        e.finish()
    }
}

/// The order of the packages' layers: the most depended-upon first (by name among equals), and
/// a package that `Replaces` another after it, so its copy of a shared path wins.
fn layer_order<'p>(pins: &'p [PackageLock], fetches: &BTreeMap<&str, NodeIndex>) -> Vec<&'p PackageLock> {
    // Popularity: how many pinned packages depend on each, directly or not.
    let popularity = popularity(pins);
    let mut order: Vec<&PackageLock> = pins.iter().filter(|p| fetches.contains_key(p.name.as_str())).collect();
    order.sort_by(|a, b| popularity[b.name.as_str()].cmp(&popularity[a.name.as_str()]).then(a.name.cmp(&b.name)));
    for _ in 0..order.len() {
        let Some((i, j)) =
            (0..order.len()).find_map(|i| (i + 1..order.len()).rev().find(|&j| order[i].replaces.contains(&order[j].name)).map(|j| (i, j)))
        else {
            break;
        };
        let p = order.remove(i);
        order.insert(j, p);
    }
    order
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::hash::DrvHash;
    use crate::plan::{Plan, PlanInputs};
    use crate::spec::SpecFile;

    const SPEC: &str = r#"
image "pk" {
    repository "debian" suite="bookworm" components="main"
    packages "aa"
}
"#;

    fn pin(name: &str, depends: &[&str], replaces: &[&str]) -> PackageLock {
        PackageLock {
            name: name.into(),
            version: "1.0".into(),
            architecture: "amd64".into(),
            sha256: Sha256::of(name.as_bytes()).hex(),
            size: 10,
            filename: format!("pool/main/{name}.deb"),
            repository: "debian".into(),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            replaces: replaces.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// What `package_layers` planned: each image layer's packages (in order), every
    /// `PackageLayer`'s packages, and the hashes of the image layers and of the metadata layer.
    struct Planned {
        layers: Vec<Vec<String>>,
        per_package: Vec<String>,
        hashes: Vec<DrvHash>,
        meta: DrvHash,
    }

    fn package_layers(pins: &[PackageLock], max_layers: usize, other_layers: usize) -> Planned {
        let spec: SpecFile = crate::spec::parse_str(Path::new("t.kdl"), SPEC).unwrap();
        let sources = HashMap::new();
        let bases = HashMap::new();
        let mirror = |_: &str, _: &str| -> Result<String, String> { Ok("http://mirror/debian".into()) };
        let inputs = PlanInputs {
            sources: &sources,
            source_date_epoch: None,
            layer_format: |_| "test",
            compression: None,
            lock: None,
            mirror: &mirror,
            max_layers,
            bases: &bases,
            default_accounts: ("", ""),
        };
        let mut b = Planner {
            image_nodes: HashMap::new(),
            accounts_of: HashMap::new(),
            spec: &spec,
            inputs: &inputs,
            plan: Plan::default(),
            by_hash: HashMap::new(),
            errors: Vec::new(),
            step_nodes: HashMap::new(),
            compression: crate::layer::Compression::Gzip,
        };
        let platform = Platform::linux_amd64();
        let (image_layers, per_package, meta) = b.package_layers(&spec.images[0], &platform, pins, 1, other_layers, None);
        assert!(b.errors.is_empty());
        let graph = &b.plan.graph;
        let name_of = |n: NodeIndex| match &graph[n].kind {
            DrvKind::DebLayer(d) => d.package.trim_end_matches("=1.0").to_string(),
            other => panic!("not a package layer: {}", other.name()),
        };
        let layers = image_layers
            .iter()
            .map(|&n| match &graph[n].kind {
                DrvKind::MergedLayer(m) => m.parts.iter().map(|&p| name_of(p)).collect(),
                _ => vec![name_of(n)],
            })
            .collect();
        assert!(per_package.iter().all(|p| p.packages.len() == 1));
        Planned {
            layers,
            per_package: per_package.iter().map(|p| p.packages[0].clone()).collect(),
            hashes: image_layers.iter().map(|&n| graph[n].hash).collect(),
            meta: graph[meta].hash,
        }
    }

    fn names(layers: &[&[&str]]) -> Vec<Vec<String>> {
        layers.iter().map(|l| l.iter().map(|s| s.to_string()).collect()).collect()
    }

    /// cc ← bb ← aa, cc ← dd, and two leaves.
    fn six() -> Vec<PackageLock> {
        vec![
            pin("aa", &["bb"], &[]),
            pin("bb", &["cc"], &[]),
            pin("cc", &[], &[]),
            pin("dd", &["cc"], &[]),
            pin("ee", &[], &[]),
            pin("ff", &[], &[]),
        ]
    }

    #[test]
    fn popularity_counts_each_transitive_dependent_once() {
        let pins = vec![
            pin("aa", &["bb", "cc"], &[]),
            pin("bb", &["cc"], &[]),
            pin("cc", &["not-pinned"], &[]),
            pin("dd", &["cc", "cc"], &[]),
            pin("ee", &["ff"], &[]),
            pin("ff", &["ee"], &[]),
        ];
        let p = popularity(&pins);
        let got: Vec<(&str, usize)> = p.into_iter().collect();
        assert_eq!(got, [("aa", 0), ("bb", 1), ("cc", 3), ("dd", 0), ("ee", 1), ("ff", 1)]);
    }

    #[test]
    fn under_the_budget_every_package_has_its_own_layer_most_popular_first() {
        let p = package_layers(&six(), 99, 1);
        // cc has 3 dependents, bb 1, the rest none (then by name).
        assert_eq!(p.layers, names(&[&["cc"], &["bb"], &["aa"], &["dd"], &["ee"], &["ff"]]));
        assert_eq!(p.per_package, ["cc", "bb", "aa", "dd", "ee", "ff"]);
        // Exactly at the budget (7 - 1 other layer - 1 metadata layer = 5): still one layer each.
        let exact = package_layers(&six()[..5], 7, 1);
        assert_eq!(exact.layers.len(), 5);
        assert!(exact.layers.iter().all(|l| l.len() == 1));
    }

    #[test]
    fn past_the_budget_the_most_depended_upon_get_their_own_layers_and_the_rest_are_merged() {
        // 5 layers at most, 1 files layer, 1 metadata layer: 3 for packages, so 2 own + 1 merged.
        let p = package_layers(&six(), 5, 1);
        assert_eq!(p.layers, names(&[&["cc"], &["bb"], &["aa", "dd", "ee", "ff"]]));
        // The conflict check still sees every package on its own, in the image's order.
        assert_eq!(p.per_package, ["cc", "bb", "aa", "dd", "ee", "ff"]);
        // A budget of one still leaves the most popular package alone.
        let tight = package_layers(&six(), 2, 1);
        assert_eq!(tight.layers, names(&[&["cc"], &["bb", "aa", "dd", "ee", "ff"]]));
    }

    #[test]
    fn layering_does_not_depend_on_the_order_of_the_pins() {
        let sorted = package_layers(&six(), 5, 1);
        let mut reversed = six();
        reversed.reverse();
        let mut rotated = six();
        rotated.rotate_left(2);
        for other in [reversed, rotated] {
            let p = package_layers(&other, 5, 1);
            assert_eq!(p.layers, sorted.layers);
            assert_eq!(p.hashes, sorted.hashes);
            assert_eq!(p.meta, sorted.meta);
        }
        // The merged layer's hash depends on what it merges.
        let fewer = package_layers(&six()[..5], 5, 1);
        assert_ne!(fewer.hashes.last(), sorted.hashes.last());
    }

    #[test]
    fn a_package_that_replaces_another_comes_after_it() {
        // aa is the most popular but replaces ee, so it moves after ee.
        let pins = vec![pin("aa", &[], &["ee"]), pin("bb", &["aa"], &[]), pin("ee", &[], &[])];
        let p = package_layers(&pins, 99, 1);
        assert_eq!(p.layers, names(&[&["bb"], &["ee"], &["aa"]]));
    }
}
