//! `compose lock`, and the lockfile half of every build: resolve what is missing or stale, pin
//! it, write the lockfile (or refuse to, with `--locked`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{load_bases, open_store, Error, SpecOptions};
use crate::base::Bases;
use crate::clients::Clients;
use crate::lock::{self, Lockfile};
use crate::resolution::{self, MirrorConfig, ResolutionError};
use crate::spec::{self, Base, SpecFile};
use crate::store::Store;

/// The packages a base has installed, per platform: (name, version, architecture).
type Installed = BTreeMap<String, Vec<(String, String, String)>>;

/// What to do about lockfile entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockMode {
    /// Resolve images whose entry is missing or stale (build, and `compose lock`).
    Build,
    /// Re-resolve every selected image with packages (`compose lock --update`), or only those
    /// holding one of these packages.
    Update(Vec<String>),
}

/// Make sure every selected image with packages has a current lockfile entry, resolving (and
/// writing the lockfile) as needed. Returns the lockfile, if any image needs one.
#[allow(clippy::too_many_arguments)]
pub fn ensure_locked(
    spec: &SpecFile,
    selected: &[&spec::ImageSpec],
    opts: &SpecOptions,
    mirrors: &MirrorConfig<'_>,
    mode: LockMode,
    bases: &Bases,
    pins: &BTreeMap<String, lock::BaseLock>,
    existing: Option<Lockfile>,
    clients: &Clients,
) -> Result<Option<Lockfile>, Error> {
    let mut store: Option<Store> = None;
    let path = lock::path_for(&opts.spec);
    if selected.iter().all(|i| i.packages.is_empty()) && pins.is_empty() {
        return Ok(existing);
    }
    let mut lockfile = existing.clone().unwrap_or_default();
    pin_bases(&mut lockfile, pins, opts.locked, &path)?;
    for image in parents_first(spec, selected).iter().filter(|i| !i.packages.is_empty()) {
        let (installed, base_key) = installed_in_base(image, &lockfile, bases);
        if !wanted(&lockfile, image, &mode, &base_key) {
            continue;
        }
        may_resolve(opts, &lockfile, image, &path)?;
        if store.is_none() {
            store = Some(open_store(&opts.cache_dir)?);
        }
        let Some(store) = store.as_ref() else { continue };
        let entry =
            resolution::resolve_image(spec, image, mirrors, store, &installed, base_key.clone(), clients).map_err(
                |source| match source {
                    ResolutionError::Spec(e) => Error::Spec(e),
                    source => Error::Resolution { image: image.name.clone(), source: Box::new(source) },
                },
            )?;
        let mut entry = entry;
        entry.base = lockfile.images.get(&image.name).and_then(|l| l.base.clone());
        lockfile.images.insert(image.name.clone(), entry);
    }
    // Entries of images and fixed-output steps no longer in the spec are dropped.
    let names: Vec<&str> = spec.images.iter().map(|i| i.name.as_str()).collect();
    lockfile.images.retain(|k, _| names.contains(&k.as_str()));
    lockfile.steps.retain(|k, _| spec.step(lock::step_of_key(k)).is_some_and(|s| s.network));
    if existing.as_ref() != Some(&lockfile) {
        lockfile.write(&path)?;
    }
    Ok(Some(lockfile))
}

/// Registry bases: the manifest digests found (pinned ones are found again unchanged) go into
/// the lockfile; with `--locked`, a base that moved is an error.
fn pin_bases(lockfile: &mut Lockfile, pins: &BTreeMap<String, lock::BaseLock>, locked: bool, path: &Path) -> Result<(), Error> {
    for (name, pin) in pins {
        let entry = lockfile.images.entry(name.clone()).or_default();
        if entry.base.as_ref() != Some(pin) {
            if locked {
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                    image: name.clone(),
                    why: format!("base `{}` moved", pin.reference),
                });
            }
            entry.base = Some(pin.clone());
        }
    }
    Ok(())
}

/// The selected images with their `base image=` ancestors, parents first, so a child sees its
/// parent's pins.
fn parents_first<'s>(spec: &'s SpecFile, selected: &[&'s spec::ImageSpec]) -> Vec<&'s spec::ImageSpec> {
    let mut ordered: Vec<&spec::ImageSpec> = Vec::new();
    for image in selected {
        let mut chain = vec![*image];
        while let Base::Image { name, .. } = &chain[chain.len() - 1].base {
            match spec.image(name) {
                Some(p) if chain.len() <= spec.images.len() => chain.push(p),
                _ => break,
            }
        }
        for i in chain.into_iter().rev() {
            if !ordered.iter().any(|o| o.name == i.name) {
                ordered.push(i);
            }
        }
    }
    ordered
}

/// What the base already has installed, per platform (`name`, `version`, `architecture`), and
/// the key of those lists the lockfile entry records (`None` on scratch).
fn installed_in_base(image: &spec::ImageSpec, lockfile: &Lockfile, bases: &Bases) -> (Installed, Option<String>) {
    let mut installed: Installed = BTreeMap::new();
    let mut base_id = Vec::new();
    for platform in &image.platforms {
        let p = platform.to_string();
        let list = match &image.base {
            Base::Image { name, .. } => lockfile
                .images
                .get(name)
                .and_then(|l| l.platforms.get(&p))
                .map(|pl| pl.packages.iter().map(|k| (k.name.clone(), k.version.clone(), k.architecture.clone())).collect())
                .unwrap_or_default(),
            _ => bases.get(&(image.name.clone(), p.clone())).map(|b| crate::base::installed_packages(&b.files)).unwrap_or_default(),
        };
        base_id.push(format!("{p}:{}", blake3::hash(format!("{list:?}").as_bytes()).to_hex()));
        installed.insert(p, list);
    }
    let base_key = (!matches!(image.base, Base::Scratch)).then(|| base_id.join(" "));
    (installed, base_key)
}

/// Whether `image` is to be resolved: its entry is missing or stale, or `--update` asks for it.
fn wanted(lockfile: &Lockfile, image: &spec::ImageSpec, mode: &LockMode, base_key: &Option<String>) -> bool {
    let stale = !lockfile.is_current(image) || lockfile.images.get(&image.name).is_some_and(|l| l.requests.base != *base_key);
    match mode {
        LockMode::Build => stale,
        LockMode::Update(names) if names.is_empty() => true,
        LockMode::Update(names) => {
            stale
                || lockfile
                    .images
                    .get(&image.name)
                    .is_some_and(|l| l.platforms.values().any(|p| p.packages.iter().any(|pkg| names.contains(&pkg.name))))
        }
    }
}

/// Refuses to resolve `image` under `--locked` (the lockfile would change) or `--offline` (it
/// needs the network).
fn may_resolve(opts: &SpecOptions, lockfile: &Lockfile, image: &spec::ImageSpec, path: &Path) -> Result<(), Error> {
    if opts.locked {
        let why = if lockfile.images.contains_key(&image.name) {
            "the spec's repositories, packages or platforms changed"
        } else {
            "it has no entry for this image"
        };
        return Err(Error::Locked { path: path.to_path_buf(), image: image.name.clone(), why: why.into() });
    }
    if opts.offline {
        return Err(Error::Usage(format!(
            "image `{}` needs its packages resolved, which needs the network, but --offline is set",
            image.name
        )));
    }
    Ok(())
}

/// `compose lock`: resolve and write the lockfile, running fixed-output steps that have no pin
/// for their recipe; returns its path.
pub fn lock(opts: &SpecOptions, mode: LockMode, reporter: &dyn crate::exec::Reporter) -> Result<PathBuf, Error> {
    let spec = spec::parse_file_with(&opts.spec, &opts.args)?;
    for w in spec.warnings() {
        reporter.warning(&w);
    }
    let selected: Vec<&spec::ImageSpec> = spec.images.iter().filter(|i| opts.image.as_ref().is_none_or(|n| *n == i.name)).collect();
    let env = |name: &str| std::env::var(name).ok();
    let mirrors = MirrorConfig { flags: &opts.mirrors, env: &env, root: &opts.host_root };
    let existing = Lockfile::read(&lock::path_for(&opts.spec))?;
    let update = matches!(mode, LockMode::Update(_));
    let clients = opts.clients();
    let loaded = load_bases(&spec, &selected, opts, existing.as_ref(), update, &clients)?;
    let update_steps: Option<Vec<String>> = match &mode {
        LockMode::Update(names) => Some(names.clone()),
        LockMode::Build => None,
    };
    ensure_locked(&spec, &loaded.needed, opts, &mirrors, mode, &loaded.bases, &loaded.pins, existing, &clients)?;
    // `--update` runs fixed-output steps again: all of them, or those named.
    if let Some(names) = update_steps.clone() {
        let path = lock::path_for(&opts.spec);
        if let Some(mut l) = Lockfile::read(&path)? {
            let before = l.steps.len();
            l.steps.retain(|k, _| !(names.is_empty() || names.iter().any(|n| n == k || n == lock::step_of_key(k))));
            if l.steps.len() != before {
                if opts.locked {
                    return Err(Error::Locked { path, image: "(steps)".into(), why: "--update re-pins fixed-output steps".into() });
                }
                l.write(&path)?;
            }
        }
    }
    if spec.steps.iter().any(|s| s.network) {
        let planned = super::load_and_plan(opts)?;
        // What they yielded before is in the store under their recipe: run them again.
        if let Some(names) = &update_steps {
            for n in planned.plan.unpinned_steps() {
                if let crate::plan::DrvKind::Step(s) = &planned.plan.graph[n].kind {
                    if names.is_empty() || names.iter().any(|x| *x == s.step || *x == s.lock_key) {
                        planned.store.forget(&planned.plan.graph[n].hash);
                    }
                }
            }
        }
        crate::exec::check_emulation(&planned.plan, reporter)?;
        let remote = super::open_remote(opts, &planned.clients)?;
        super::build::pin_steps(opts, planned, remote.as_ref(), reporter)?;
    }
    Ok(lock::path_for(&opts.spec))
}
