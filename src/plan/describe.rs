//! What a derivation is made from, in words: its inputs as `name → value` pairs (a file's kind,
//! size, mode, owner and content hash; a package's version and `.deb` hash; an image's base and
//! its dependencies' hashes by name; the epoch and layer format). Kept beside each record, so
//! `compose explain` can say what changed since the last build. Informational: the `DrvHash`
//! is computed over [`crate::hash::Encoder`], never over these words.

use std::collections::BTreeMap;

use petgraph::graph::NodeIndex;

use super::{Content, DrvKind, EntryKind, ImageBase, ImageDrv, LayerDrv, MetaDrv, Plan, PlannedEntry, StepDrv};

/// `size=… mode=… owner=… content=…` of a planned entry.
fn entry_value(e: &PlannedEntry) -> String {
    let common = format!("mode={:04o} owner={}:{}", e.mode, e.uid, e.gid);
    match &e.kind {
        EntryKind::Dir => format!("dir {common}"),
        EntryKind::Symlink { target } => format!("symlink target={target} {common}"),
        EntryKind::File { size, content } => {
            let hash = match content {
                Content::Inline(bytes) => crate::hash::ContentHash::of(bytes).to_string(),
                Content::Local { hash, .. } => hash.to_string(),
                Content::Tree { .. } => "(built)".to_string(),
            };
            format!("file size={size} {common} content={}", &hash[..hash.len().min(23)])
        }
    }
}

fn dep(plan: &Plan, n: NodeIndex) -> String {
    plan.graph[n].hash.to_string()
}

fn format_of(plan: &Plan, c: crate::layer::Compression) -> String {
    plan.layer_format[usize::from(c == crate::layer::Compression::Zstd)].clone()
}

/// The inputs of derivation `n`, in words.
pub fn describe(plan: &Plan, n: NodeIndex) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: String, v: String| {
        m.insert(k, v);
    };
    match &plan.graph[n].kind {
        DrvKind::Layer(l) => layer_words(plan, l, &mut put),
        DrvKind::Fetch(f) => {
            put("package".into(), f.package.clone());
            put("sha256".into(), f.sha256.hex());
            put("size".into(), f.size.to_string());
        }
        DrvKind::Blob(b) => {
            put("base".into(), b.reference.clone());
            put("layer".into(), b.layer.digest.to_string());
        }
        DrvKind::DebLayer(d) => {
            put("package".into(), d.package.clone());
            put("epoch".into(), d.epoch.to_string());
            put("merged /usr".into(), d.merged_usr.to_string());
            put("layer format".into(), format_of(plan, d.compression));
            put(format!("download {}", plan.graph[d.fetch].name), dep(plan, d.fetch));
        }
        DrvKind::MergedLayer(ml) => {
            for &p in &ml.parts {
                put(format!("part {}", plan.graph[p].name), dep(plan, p));
            }
        }
        DrvKind::Meta(meta) => meta_words(plan, meta, &mut put),
        DrvKind::Image(img) => image_words(plan, img, &mut put),
        DrvKind::Index(ix) => {
            for &i in &ix.images {
                put(format!("image {}", plan.graph[i].name), dep(plan, i));
            }
        }
        DrvKind::Scripts(sc) => {
            put(format!("packages root {}", plan.graph[sc.root].name), dep(plan, sc.root));
            put("epoch".into(), sc.epoch.to_string());
            put("run".into(), "dpkg --configure -a".into());
            put("format".into(), super::SCRIPTS_FORMAT.to_string());
            put("sandbox".into(), super::SANDBOX_ID.to_string());
        }
        DrvKind::Step(s) => step_words(plan, s, &mut put),
    }
    m
}

/// A files layer's inputs: its entries, and each `copy from=` with its source's hash.
fn layer_words(plan: &Plan, l: &LayerDrv, put: &mut impl FnMut(String, String)) {
    put("epoch".into(), l.epoch.to_string());
    put("layer format".into(), format_of(plan, l.compression));
    for e in &l.entries {
        put(e.path.clone(), entry_value(e));
    }
    for (i, part) in l.parts.iter().enumerate() {
        if let super::LayerPart::From(c) = part {
            let mode = c.mode.map(|m| format!(" mode={m:04o}")).unwrap_or_default();
            let what = format!("{} from {}: {} to {}{mode} owner={}:{}", i + 1, plan.graph[c.source].name, c.src, c.to, c.uid, c.gid);
            put(format!("copy {what}"), dep(plan, c.source));
        }
    }
}

/// The metadata layer's inputs: accounts, time zone, links, and the packages and dpkg statuses
/// it reads.
fn meta_words(plan: &Plan, meta: &MetaDrv, put: &mut impl FnMut(String, String)) {
    put("epoch".into(), meta.epoch.to_string());
    put("layer format".into(), format_of(plan, meta.compression));
    put("time zone".into(), meta.timezone.clone().unwrap_or_default());
    if let Some(a) = &meta.accounts {
        for u in &a.users {
            put(format!("user {}", u.name), format!("uid={} gid={} home={} shell={}", u.uid, u.gid, u.home, u.shell));
        }
        for g in &a.groups {
            put(format!("group {}", g.name), format!("gid={}", g.gid));
        }
    }
    if let Some((p, g)) = &meta.base_accounts {
        put("base passwd".into(), crate::hash::ContentHash::of(p.as_bytes()).to_string());
        put("base group".into(), crate::hash::ContentHash::of(g.as_bytes()).to_string());
    }
    for (link, target) in &meta.symlinks {
        put(link.clone(), format!("symlink target={target}"));
    }
    for d in [meta.base_passwd, meta.ca_certificates].into_iter().flatten() {
        put(format!("package {}", plan.graph[d].name), dep(plan, d));
    }
    for &d in &meta.statuses {
        put(format!("dpkg status of {}", plan.graph[d].name), dep(plan, d));
    }
    if let Some(s) = &meta.base_status {
        put("base dpkg status".into(), crate::hash::ContentHash::of(s.as_bytes()).to_string());
    }
}

/// An image's inputs: platform, base, layers by name and its runtime config.
fn image_words(plan: &Plan, img: &ImageDrv, put: &mut impl FnMut(String, String)) {
    put("platform".into(), img.platform.to_string());
    put("epoch".into(), img.epoch.to_string());
    match &img.base {
        None => {}
        Some(ImageBase::External { manifest, .. }) => put("base".into(), manifest.to_string()),
        Some(ImageBase::Image(p)) => put(format!("base {}", plan.graph[*p].name), dep(plan, *p)),
    }
    for (i, &l) in img.layers.iter().enumerate() {
        put(format!("layer {:02} {}", i + 1, plan.graph[l].name), dep(plan, l));
    }
    let c = &img.config;
    let list = |v: &Option<Vec<String>>| v.as_ref().map(|v| format!("{v:?}")).unwrap_or_default();
    put("config env".into(), format!("{:?}", c.env));
    put("config entrypoint".into(), list(&c.entrypoint));
    put("config cmd".into(), list(&c.cmd));
    put("config workdir".into(), c.workdir.clone().unwrap_or_default());
    put("config user".into(), c.user.clone().unwrap_or_default());
    put("config expose".into(), format!("{:?}", c.exposed));
    put("config volumes".into(), format!("{:?}", c.volumes));
    put("config labels".into(), format!("{:?}", c.labels));
    put("config stop-signal".into(), c.stop_signal.clone().unwrap_or_default());
}

/// A step's inputs: its image and inputs layer, what it runs and how, and a fixed-output
/// step's recipe and pin.
fn step_words(plan: &Plan, s: &StepDrv, put: &mut impl FnMut(String, String)) {
    put(format!("image {}", plan.graph[s.image].name), dep(plan, s.image));
    if let Some(i) = s.inputs {
        put("inputs".into(), dep(plan, i));
    }
    for (i, argv) in s.runs.iter().enumerate() {
        put(format!("run {:02}", i + 1), format!("{argv:?}"));
    }
    for (k, v) in &s.env {
        put(format!("env {k}"), v.clone());
    }
    put("workdir".into(), s.workdir.clone().unwrap_or_default());
    put("user".into(), format!("{}:{}", s.user.0, s.user.1));
    put("output".into(), s.output.clone());
    put("epoch".into(), s.epoch.to_string());
    put("sandbox".into(), super::SANDBOX_ID.to_string());
    for sec in &s.secrets {
        let at = [sec.env.as_ref().map(|e| format!("env {e}")), sec.target.as_ref().map(|t| format!("file {t}"))];
        put(format!("secret {}", sec.id), at.into_iter().flatten().collect::<Vec<_>>().join(", "));
    }
    for (host, to) in &s.host_mounts {
        put(format!("mount-from-host {to}"), host.clone());
    }
    if s.network {
        put("network".into(), "fixed-output".into());
        put("pass-env".into(), s.pass_env.join(" "));
        put("recipe".into(), s.recipe.to_string());
        put("pinned output".into(), s.pin.map(|p| p.to_string()).unwrap_or_else(|| "(not pinned yet)".into()));
    }
}

/// A derivation's place in its spec, stable across changes of its inputs: its name, with a
/// package's version left out (`web: package curl`), so the next plan's derivation can be
/// compared with the one last built in the same place.
pub fn slot(plan: &Plan, n: NodeIndex) -> String {
    let d = &plan.graph[n];
    let unversioned = |p: &str| p.split('=').next().unwrap_or(p).to_string();
    match &d.kind {
        DrvKind::DebLayer(l) => match d.name.split_once(": ") {
            Some((image, _)) => format!("{image}: package {}", unversioned(&l.package)),
            None => format!("package {}", unversioned(&l.package)),
        },
        DrvKind::Fetch(f) => format!("fetch {}", unversioned(&f.package)),
        _ => d.name.clone(),
    }
}
