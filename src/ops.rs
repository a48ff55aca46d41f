//! Top-level operations behind each command (cargo's `ops`): load the spec, scan sources, plan,
//! execute, export. Commands in `cli` parse flags, call one of these and print the result.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::build::{self, BuildError, Counts, Reporter};
use crate::image::{self, Format, ImageError};
use crate::lock::{self, LockError, Lockfile};
use crate::plan::{self, Plan};
use crate::resolution::{self, MirrorConfig, ResolutionError};
use crate::source::{Scanned, Scanner, SourceError};
use crate::spec::{self, Base, FileOp, SpecDiagnostic, SpecError, SpecFile};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] SpecError),
    #[error("{0}")]
    #[diagnostic(code(compose::usage))]
    Usage(String),
    #[error("the store at `{path}` could not be used")]
    #[diagnostic(code(compose::store))]
    Store {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    #[diagnostic(code(compose::source))]
    Source(#[from] SourceError),
    #[error(transparent)]
    #[diagnostic(code(compose::build))]
    Build(#[from] BuildError),
    #[error(transparent)]
    #[diagnostic(code(compose::output))]
    Image(#[from] ImageError),
    #[error(transparent)]
    #[diagnostic(code(compose::lock))]
    Lock(#[from] LockError),
    #[error("the lockfile `{path}` is out of date for image `{image}` ({why}), and --locked forbids changing it")]
    #[diagnostic(code(compose::lock::locked), help("run `compose lock` (or build without --locked) to update it"))]
    Locked { path: PathBuf, image: String, why: String },
    #[error("cannot push to `{target}`")]
    #[diagnostic(code(compose::push))]
    Push {
        target: String,
        #[source]
        source: Box<crate::registry::RegistryError>,
    },
    #[error("cannot resolve the packages of image `{image}`")]
    #[diagnostic(code(compose::resolve))]
    Resolution {
        image: String,
        #[source]
        source: Box<ResolutionError>,
    },
}

impl Error {
    /// User errors (the spec, lockfile or command line is wrong) exit with 2, the rest with 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec(_) | Error::Usage(_) | Error::Locked { .. } | Error::Lock(LockError::Parse { .. } | LockError::Version { .. }) => 2,
            Error::Resolution { source, .. } if matches!(**source, ResolutionError::Spec(_) | ResolutionError::Mirror(_)) => 2,
            _ => 1,
        }
    }
}

impl From<StoreError> for Error {
    fn from(source: StoreError) -> Self {
        Error::Store { path: PathBuf::new(), source }
    }
}

/// Options shared by commands that load a spec.
#[derive(Debug, Clone, Default)]
pub struct SpecOptions {
    pub spec: PathBuf,
    pub image: Option<String>,
    pub cache_dir: PathBuf,
    /// `--mirror NAME=URL`.
    pub mirrors: Vec<(String, String)>,
    /// Fail rather than change the lockfile.
    pub locked: bool,
    /// Use no network.
    pub offline: bool,
    /// Layer budget per image.
    pub max_layers: usize,
    /// Root of the filesystem whose apt sources give mirrors (`/`).
    pub host_root: PathBuf,
    /// Registries (`HOST[:PORT]`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// A shared cache (`http(s)://…`, Bazel remote-cache protocol).
    pub remote_cache: Option<String>,
    pub remote_mode: crate::remote::Mode,
    /// Public keys (`NAME:BASE64`) whose signed records are accepted; none = unsigned accepted.
    pub trusted_keys: Vec<String>,
    /// Secret key file to sign uploaded records with (default: the one key in `CACHE/keys/`).
    pub signing_key: Option<PathBuf>,
}

impl SpecOptions {
    pub fn new(spec: PathBuf, cache_dir: PathBuf) -> SpecOptions {
        SpecOptions { spec, cache_dir, max_layers: crate::plan::DEFAULT_MAX_LAYERS, host_root: PathBuf::from("/"), ..Default::default() }
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub spec: SpecOptions,
    pub out: PathBuf,
    pub format: Format,
    /// Push the built image to this reference (`REGISTRY/REPO:TAG`).
    pub push: Option<String>,
    /// Registries (`HOST[:PORT]`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
}

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
pub struct Pushed {
    pub reference: String,
    pub digest: String,
    pub uploaded: usize,
    pub mounted: usize,
    pub existing: usize,
    pub uploaded_bytes: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildSummary {
    pub images: Vec<BuiltImage>,
    pub derivations: Counts,
    #[serde(skip)]
    pub hashed_files: u64,
}

/// A loaded, planned spec.
pub struct Planned {
    pub lock: Option<Lockfile>,
    pub spec: SpecFile,
    pub store: Store,
    pub plan: Plan,
    scanner_stats: (u64, u64),
}

fn source_date_epoch() -> Result<Option<u64>, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Error::Usage(format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds since 1970"))),
    }
}

/// Parse, check, scan and plan.
pub fn load_and_plan(opts: &SpecOptions) -> Result<Planned, Error> {
    let spec = spec::parse_file(&opts.spec)?;
    if let Some(name) = &opts.image {
        if spec.image(name).is_none() {
            let names: Vec<&str> = spec.images.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::Usage(format!("`{}` has no image `{name}`; it has: {}", opts.spec.display(), names.join(", "))));
        }
    }
    let selected: Vec<&spec::ImageSpec> = spec.images.iter().filter(|i| opts.image.as_ref().is_none_or(|n| *n == i.name)).collect();
    let existing_lock = Lockfile::read(&lock::path_for(&opts.spec))?;
    let (needed, bases, pins) = load_bases_of(&spec, &selected, opts, existing_lock.as_ref(), false)?;
    let mut errors: Vec<SpecDiagnostic> = Vec::new();
    let mut scanner = Scanner::new(&opts.cache_dir, &spec.dir)?;
    let mut sources: HashMap<String, Scanned> = HashMap::new();
    for img in &needed {
        for op in img.files.iter().chain(img.layers.iter().flat_map(|l| l.ops.iter())) {
            let FileOp::Copy { src, src_span, .. } = op else { continue };
            if sources.contains_key(src) {
                continue;
            }
            match scanner.scan(src) {
                Ok(s) => {
                    sources.insert(src.clone(), s);
                }
                Err(e) => errors.push(source_error(&spec, *src_span, e)),
            }
        }
    }
    spec.report(std::mem::take(&mut errors))?;
    let epoch = source_date_epoch()?;
    let env = |name: &str| std::env::var(name).ok();
    let mirrors = MirrorConfig { flags: &opts.mirrors, env: &env, root: &opts.host_root };
    let lockfile = ensure_locked(&spec, &selected, opts, &mirrors, LockMode::Build, &bases, &pins, existing_lock)?;
    let mirror = |repo: &str, suite: &str| -> Result<String, String> {
        if opts.offline {
            return Err("--offline is set and the package is not in the store".into());
        }
        mirrors.mirror(repo, suite).map(|m| m.url).map_err(|e| e.to_string())
    };
    let inputs = plan::PlanInputs {
        sources: &sources,
        source_date_epoch: epoch,
        layer_format: crate::layer::LAYER_FORMAT_ID,
        lock: lockfile.as_ref(),
        mirror: &mirror,
        max_layers: opts.max_layers,
        bases: &bases,
    };
    let plan = match plan::plan(&spec, opts.image.as_deref(), &inputs) {
        Ok(p) => p,
        Err(diagnostics) => {
            return Err(spec.report(diagnostics).err().map(Error::Spec).unwrap_or_else(|| Error::Usage("planning failed".into())))
        }
    };
    // Only a valid spec touches the store (resolution, above, opens it when it must).
    let store = open_store(&opts.cache_dir)?;
    let scanner_stats = (scanner.hashed_files, scanner.hashed_bytes);
    scanner.save(&store)?;
    drop(sources);
    Ok(Planned { spec, store, plan, scanner_stats, lock: lockfile })
}

/// The images `selected` needs (itself and its `base image=` ancestors), and their external bases
/// by (image, platform), with the base files compose reads.
#[allow(clippy::type_complexity)]
fn load_bases_of<'s>(
    spec: &'s SpecFile,
    selected: &[&'s spec::ImageSpec],
    opts: &SpecOptions,
    existing: Option<&Lockfile>,
    update: bool,
) -> Result<(Vec<&'s spec::ImageSpec>, Bases, BTreeMap<String, lock::BaseLock>), Error> {
    // Made when first needed: a pinned registry base whose manifests, config and files the
    // store holds needs no registry client (and no network).
    let reg_cell: std::cell::OnceCell<Result<crate::registry::Registry, String>> = std::cell::OnceCell::new();
    let get_reg = || -> Result<&crate::registry::Registry, String> {
        if opts.offline {
            return Err("--offline is set and the store does not hold this base image's manifest and config".into());
        }
        reg_cell.get_or_init(|| registry_client(&opts.insecure).map_err(|e| chain_message(&e))).as_ref().map_err(Clone::clone)
    };
    let store_cell: std::cell::OnceCell<Option<Store>> = std::cell::OnceCell::new();
    let store = || store_cell.get_or_init(|| Store::open(&opts.cache_dir).ok()).as_ref();
    let mut pins: BTreeMap<String, lock::BaseLock> = BTreeMap::new();
    let mut errors: Vec<SpecDiagnostic> = Vec::new();
    // Images with a `base image="NAME"` need their ancestors planned too.
    let mut needed: Vec<&spec::ImageSpec> = selected.to_vec();
    let mut i = 0;
    while i < needed.len() {
        if let Base::Image { name, .. } = &needed[i].base {
            if let Some(parent) = spec.image(name) {
                if !needed.iter().any(|n| n.name == parent.name) {
                    needed.push(parent);
                }
            }
        }
        i += 1;
    }
    let mut bases: HashMap<(String, String), crate::base::BaseImage> = HashMap::new();
    for img in &needed {
        for platform in &img.platforms {
            let p = platform.to_string();
            let resolved = |path: &str| {
                let pb = Path::new(path);
                if pb.is_absolute() {
                    pb.to_path_buf()
                } else {
                    spec.dir.join(pb)
                }
            };
            let (loaded, span) = match &img.base {
                Base::Scratch | Base::Image { .. } => continue,
                Base::Registry { reference, span } => {
                    let pinned = existing
                        .filter(|_| !update)
                        .and_then(|l| l.images.get(&img.name))
                        .and_then(|l| l.base.as_ref())
                        .filter(|b| &b.reference == reference)
                        .and_then(|b| b.digests.get(&p))
                        .and_then(|d| d.parse::<crate::hash::Sha256>().ok());
                    if pinned.is_none() && opts.locked {
                        return Err(Error::Locked {
                            path: lock::path_for(&opts.spec),
                            image: img.name.clone(),
                            why: format!("base `{reference}` is not pinned for {p}"),
                        });
                    }
                    let loaded = crate::base::registry_base(&get_reg, store(), reference, pinned.as_ref(), &p, &opts.insecure);
                    if let Ok(b) = &loaded {
                        let pin = pins
                            .entry(img.name.clone())
                            .or_insert_with(|| lock::BaseLock { reference: reference.clone(), digests: BTreeMap::new() });
                        pin.digests.insert(p.clone(), b.manifest_digest.to_string());
                    }
                    (loaded, span)
                }
                Base::OciLayout { path, tag, span } => {
                    (crate::base::oci_layout(&format!("oci:{path}"), &resolved(path), tag.as_deref(), &p), span)
                }
                Base::OciArchive { path, span } => (crate::base::oci_archive(&format!("oci-archive:{path}"), &resolved(path), &p), span),
                Base::DockerArchive { path, span } => {
                    (crate::base::docker_archive(&format!("docker-archive:{path}"), &resolved(path), &p), span)
                }
            };
            match loaded.and_then(|mut b| {
                b.files = base_files(store(), &b, || {
                    let in_store = |d: &crate::hash::Sha256| Some(Store::blob_path_in(&opts.cache_dir, d)).filter(|p| p.is_file());
                    if opts.offline
                        && matches!(b.source, crate::base::BlobSource::Registry { .. })
                        && b.layers.iter().any(|l| in_store(&l.digest).is_none())
                    {
                        return Err(crate::base::BaseError::Offline { reference: b.reference.clone() });
                    }
                    // A registry layer is pulled into the store (verified), where the build's
                    // base-layer derivation then finds it: pulled once, read from there.
                    let local = |d: &crate::hash::Sha256| -> Option<PathBuf> {
                        if let Some(p) = in_store(d) {
                            return Some(p);
                        }
                        let (crate::base::BlobSource::Registry { repo, .. }, Some(store)) = (&b.source, store()) else { return None };
                        let reg = get_reg().ok()?;
                        let tmp = store.temp_file().ok()?;
                        let mut file = std::io::BufWriter::new(tmp.reopen().ok()?);
                        reg.blob(repo, d, None, &mut file).ok()?;
                        drop(file);
                        store.commit_blob(tmp, d).ok()
                    };
                    crate::base::read_base_files(&b, &local)
                })?;
                Ok(b)
            }) {
                Ok(b) => {
                    bases.insert((img.name.clone(), p), b);
                }
                Err(e) => errors.push(spec.diagnostic("compose::spec::base", *span, chain_message(&e), "this base", None)),
            }
        }
    }
    spec.report(std::mem::take(&mut errors))?;
    Ok((needed, bases, pins))
}

/// The files compose reads from base `b` (passwd, group, dpkg database), remembered in the store
/// under a record keyed by the base's layer digests: layers are decompressed once per base, not
/// once per build.
fn base_files(
    store: Option<&Store>,
    b: &crate::base::BaseImage,
    read: impl FnOnce() -> Result<BTreeMap<String, Vec<u8>>, crate::base::BaseError>,
) -> Result<BTreeMap<String, Vec<u8>>, crate::base::BaseError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut key = crate::hash::Encoder::new("base-files");
    key.list(b.layers.len());
    for l in &b.layers {
        key.sha256(&l.digest).str(&l.media_type);
    }
    let drv = key.finish();
    let remembered = store.and_then(|s| {
        let rec = s.lookup(&drv).ok()??;
        let bytes = s.read_blob(&rec.outputs.get("files")?.digest).ok()?;
        let map: BTreeMap<String, String> = serde_json::from_slice(&bytes).ok()?;
        map.into_iter().map(|(k, v)| b64.decode(v).ok().map(|v| (k, v))).collect::<Option<BTreeMap<_, _>>>()
    });
    if let Some(files) = remembered {
        return Ok(files);
    }
    let files = read()?;
    if let Some(s) = store {
        let map: BTreeMap<&String, String> = files.iter().map(|(k, v)| (k, b64.encode(v))).collect();
        if let Ok(bytes) = serde_json::to_vec(&map) {
            if let Ok(digest) = s.put_bytes(&bytes) {
                let output =
                    crate::store::Output { digest, size: bytes.len() as u64, media_type: "application/json".into(), diff_id: None };
                let rec = crate::store::Record {
                    version: crate::store::RECORD_VERSION,
                    drv,
                    kind: "base-files".into(),
                    outputs: BTreeMap::from([("files".to_string(), output)]),
                    inputs: vec![b.reference.clone()],
                };
                let _ = s.put_record(&rec);
            }
        }
    }
    Ok(files)
}

/// External bases by (image, platform).
pub type Bases = HashMap<(String, String), crate::base::BaseImage>;

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
) -> Result<Option<Lockfile>, Error> {
    let mut store: Option<Store> = None;
    let path = lock::path_for(&opts.spec);
    if selected.iter().all(|i| i.packages.is_empty()) && pins.is_empty() {
        return Ok(existing);
    }
    let mut lockfile = existing.clone().unwrap_or_default();
    // Registry bases: the manifest digests found (pinned ones are found again unchanged).
    for (name, pin) in pins {
        let entry = lockfile.images.entry(name.clone()).or_default();
        if entry.base.as_ref() != Some(pin) {
            if opts.locked {
                return Err(Error::Locked { path: path.clone(), image: name.clone(), why: format!("base `{}` moved", pin.reference) });
            }
            entry.base = Some(pin.clone());
        }
    }
    // Parents first, so a child on `base image=` sees its parent's pins.
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
    for image in ordered.iter().filter(|i| !i.packages.is_empty()) {
        // What the base already has installed, per platform.
        let mut installed: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
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
        let stale = !lockfile.is_current(image) || lockfile.images.get(&image.name).is_some_and(|l| l.requests.base != base_key);
        let wanted = match &mode {
            LockMode::Build => stale,
            LockMode::Update(names) if names.is_empty() => true,
            LockMode::Update(names) => {
                stale
                    || lockfile
                        .images
                        .get(&image.name)
                        .is_some_and(|l| l.platforms.values().any(|p| p.packages.iter().any(|pkg| names.contains(&pkg.name))))
            }
        };
        if !wanted {
            continue;
        }
        if opts.locked {
            let why = if lockfile.images.contains_key(&image.name) {
                "the spec's repositories, packages or platforms changed"
            } else {
                "it has no entry for this image"
            };
            return Err(Error::Locked { path: path.clone(), image: image.name.clone(), why: why.into() });
        }
        if opts.offline {
            return Err(Error::Usage(format!(
                "image `{}` needs its packages resolved, which needs the network, but --offline is set",
                image.name
            )));
        }
        if store.is_none() {
            store = Some(open_store(&opts.cache_dir)?);
        }
        let Some(store) = store.as_ref() else { continue };
        let entry =
            resolution::resolve_image(spec, image, mirrors, store, &installed, base_key.clone()).map_err(|source| match source {
                ResolutionError::Spec(e) => Error::Spec(e),
                source => Error::Resolution { image: image.name.clone(), source: Box::new(source) },
            })?;
        let mut entry = entry;
        entry.base = lockfile.images.get(&image.name).and_then(|l| l.base.clone());
        lockfile.images.insert(image.name.clone(), entry);
    }
    // Entries of images no longer in the spec are dropped.
    let names: Vec<&str> = spec.images.iter().map(|i| i.name.as_str()).collect();
    lockfile.images.retain(|k, _| names.contains(&k.as_str()));
    if existing.as_ref() != Some(&lockfile) {
        lockfile.write(&path)?;
    }
    Ok(Some(lockfile))
}

/// `compose lock`: resolve and write the lockfile; returns its path.
pub fn lock(opts: &SpecOptions, mode: LockMode) -> Result<PathBuf, Error> {
    let spec = spec::parse_file(&opts.spec)?;
    let selected: Vec<&spec::ImageSpec> = spec.images.iter().filter(|i| opts.image.as_ref().is_none_or(|n| *n == i.name)).collect();
    let env = |name: &str| std::env::var(name).ok();
    let mirrors = MirrorConfig { flags: &opts.mirrors, env: &env, root: &opts.host_root };
    let existing = Lockfile::read(&lock::path_for(&opts.spec))?;
    let update = matches!(mode, LockMode::Update(_));
    let (_, bases, pins) = load_bases_of(&spec, &selected, opts, existing.as_ref(), update)?;
    ensure_locked(&spec, &selected, opts, &mirrors, mode, &bases, &pins, existing)?;
    Ok(lock::path_for(&opts.spec))
}

fn source_error(spec: &SpecFile, span: miette::SourceSpan, e: SourceError) -> SpecDiagnostic {
    let (label, help) = match &e {
        SourceError::Missing { .. } => ("no such file or directory", None),
        SourceError::Escapes { .. } => (
            "leaves the spec directory",
            Some("copy the file into the spec directory, or give an absolute path to copy from outside it".to_string()),
        ),
        SourceError::Unsupported { .. } => ("unsupported file type", None),
        SourceError::NonUtf8 { .. } => ("non-UTF-8 file name", Some("rename the file; image paths must be UTF-8".to_string())),
        _ => ("cannot be read", None),
    };
    spec.diagnostic("compose::spec::source", span, chain_message(&e), label, help)
}

/// An error and its causes as one line: "outer: inner: innermost".
pub(crate) fn chain_message(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(next) = src {
        msg.push_str(": ");
        msg.push_str(&next.to_string());
        src = next.source();
    }
    msg
}

/// Where `compose cache keygen` puts secret keys, and where builds look for one to sign with.
pub fn keys_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("keys")
}

/// The remote cache of these options, with its trusted keys and signing key.
pub fn open_remote(opts: &SpecOptions) -> Result<Option<crate::remote::RemoteCache>, Error> {
    use crate::remote::sign::{PublicKey, SecretKey, TrustedKeys};
    let Some(url) = &opts.remote_cache else { return Ok(None) };
    if opts.offline {
        // `--offline` means no network at all, a shared cache included.
        return Ok(None);
    }
    let mut trusted = TrustedKeys::default();
    for text in &opts.trusted_keys {
        let list = TrustedKeys::parse_list(text).map_err(|e| Error::Usage(format!("bad trusted key: {}", chain_message(&e))))?;
        for k in list.keys() {
            trusted.push(PublicKey::clone(k));
        }
    }
    let signer = match &opts.signing_key {
        Some(path) => Some(SecretKey::read(path).map_err(|e| Error::Usage(format!("bad signing key: {}", chain_message(&e))))?),
        None if opts.remote_mode == crate::remote::Mode::ReadWrite => {
            // The one key `compose cache keygen` made for this store, if there is exactly one.
            let dir = keys_dir(&opts.cache_dir);
            let found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "secret")).collect())
                .unwrap_or_default();
            match found.as_slice() {
                [one] => Some(SecretKey::read(one).map_err(|e| Error::Usage(format!("bad signing key: {}", chain_message(&e))))?),
                [] => None,
                _ => return Err(Error::Usage(format!("{} holds several secret keys: choose one with --signing-key FILE", dir.display()))),
            }
        }
        None => None,
    };
    let config = crate::remote::RemoteConfig { url: url.clone(), mode: opts.remote_mode, insecure: opts.insecure.clone(), trusted, signer };
    crate::remote::RemoteCache::open(config).map(Some).map_err(|e| Error::Usage(e.to_string()))
}

/// A key name for this machine: its host name, reduced to the characters key names allow.
pub fn default_key_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).take(120).collect();
    if name.is_empty() {
        "compose".to_string()
    } else {
        name
    }
}

/// `compose cache keygen NAME`: a new signing key in `out` (default `CACHE/keys/NAME.secret`);
/// returns the public key to give to `--trusted-key`, and where the secret key went.
pub fn keygen(cache_dir: &Path, name: &str, out: Option<&Path>) -> Result<(String, PathBuf), Error> {
    use crate::remote::sign::SecretKey;
    let key = SecretKey::generate(name).map_err(|e| Error::Usage(chain_message(&e)))?;
    let path = out.map(Path::to_path_buf).unwrap_or_else(|| keys_dir(cache_dir).join(format!("{name}.secret")));
    key.write_new(&path).map_err(|e| Error::Usage(chain_message(&e)))?;
    Ok((key.public().to_text(), path))
}

/// `compose build`.
pub fn build(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<BuildSummary, Error> {
    let planned = load_and_plan(&opts.spec)?;
    if opts.push.is_some() && planned.plan.images.len() > 1 {
        return Err(Error::Usage("--push takes one image, but the spec has several: choose one with --image NAME".into()));
    }
    let remote = open_remote(&opts.spec)?;
    // Exporting and pushing overlap with writing results back to the remote cache.
    build::execute_then(&planned.plan, &planned.store, remote.as_ref(), reporter, |ex| export_all(opts, &planned, ex))
}

/// Export (and push) every image of an executed plan.
fn export_all(opts: &BuildOptions, planned: &Planned, ex: build::Executed) -> Result<BuildSummary, Error> {
    let mut images = Vec::new();
    for pi in &planned.plan.images {
        let fin = build::finished(&planned.plan, &ex, &planned.store, &pi.name, &pi.tag, pi.root)?;
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
                Some(push_finished(&planned.store, &fin, target, &opts.insecure, &mount_from)?)
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
    Ok(BuildSummary { images, derivations: ex.counts, hashed_files: planned.scanner_stats.0 })
}

/// A registry client configured from the environment (credential files) and `insecure`.
pub fn registry_client(insecure: &[String]) -> Result<crate::registry::Registry, crate::registry::RegistryError> {
    let env = |name: &str| std::env::var(name).ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let auth = crate::registry::AuthConfig::from_env(&env, home.as_deref())?;
    crate::registry::Registry::new(crate::registry::RegistryOptions { insecure: insecure.to_vec(), auth, timeouts: None })
}

/// Push a finished image: its blobs from the store, then its manifests (children first) with
/// their exact bytes.
fn push_finished(store: &Store, fin: &image::Finished, target: &str, insecure: &[String], mount_from: &[String]) -> Result<Pushed, Error> {
    let err = |source| Error::Push { target: target.to_string(), source: Box::new(source) };
    let reg = registry_client(insecure).map_err(err)?;
    // Already there under that name: one request, nothing to send.
    if let Ok(current) = reg.resolve(target) {
        if current.digest == fin.root.digest {
            return Ok(Pushed {
                reference: target.to_string(),
                digest: current.digest.to_string(),
                uploaded: 0,
                mounted: 0,
                // Blobs, not counting the manifests (and index).
                existing: fin
                    .blobs
                    .len()
                    .saturating_sub(1 + if fin.root.media_type == image::INDEX_MEDIA_TYPE { fin.platforms.len() } else { 0 }),
                uploaded_bytes: 0,
            });
        }
    }
    let mut manifests: Vec<(crate::hash::Sha256, String, Vec<u8>)> = Vec::new();
    let root = store.read_blob(&fin.root.digest)?;
    if fin.root.media_type == image::INDEX_MEDIA_TYPE {
        let index: serde_json::Value = serde_json::from_slice(&root).unwrap_or_default();
        for m in index.get("manifests").and_then(|v| v.as_array()).cloned().unwrap_or_default() {
            if let Some(d) = m.get("digest").and_then(|d| d.as_str()).and_then(|d| d.parse::<crate::hash::Sha256>().ok()) {
                manifests.push((d, image::MANIFEST_MEDIA_TYPE.to_string(), store.read_blob(&d)?));
            }
        }
    }
    manifests.push((fin.root.digest, fin.root.media_type.clone(), root));
    let blobs: Vec<(crate::hash::Sha256, u64, PathBuf)> = fin
        .blobs
        .iter()
        .filter(|(d, _)| !manifests.iter().any(|(m, _, _)| m == d))
        .map(|(d, size)| (*d, *size, store.blob_path(d)))
        .collect();
    let report = reg.push(target, &blobs, &manifests, mount_from).map_err(err)?;
    Ok(Pushed {
        reference: target.to_string(),
        digest: report.digest.to_string(),
        uploaded: report.uploaded,
        mounted: report.mounted,
        existing: report.existing,
        uploaded_bytes: report.uploaded_bytes,
    })
}

/// `out/<image>.spdx.json`, for images with packages.
fn write_sbom(planned: &Planned, ex: &build::Executed, pi: &plan::PlannedImage, fin: &image::Finished, out: &Path) -> Result<(), Error> {
    let Some(lock) = planned.lock.as_ref().and_then(|l| l.images.get(&pi.name)) else { return Ok(()) };
    if lock.platforms.values().all(|p| p.packages.is_empty()) {
        return Ok(());
    }
    let mut licences: HashMap<String, Vec<String>> = HashMap::new();
    for n in planned.plan.graph.node_indices() {
        if let plan::DrvKind::DebLayer(d) = &planned.plan.graph[n].kind {
            if let Some(rec) = ex.records.get(&n) {
                licences.insert(d.package.clone(), build::packages::licences_of(&planned.store, rec));
            }
        }
    }
    let lookup = |p: &lock::PackageLock| licences.get(&format!("{}={}", p.name, p.version)).cloned().unwrap_or_default();
    let bytes = crate::sbom::document(&pi.name, &pi.tag, &fin.root.digest.to_string(), fin.epoch, Some(lock), &lookup);
    let dest = out.join(format!("{}.spdx.json", pi.name));
    let io = |source| Error::Image(ImageError::Io { action: "write", path: dest.clone(), source });
    let mut tmp = tempfile::Builder::new().prefix(".sbom-").tempfile_in(out).map_err(io)?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(io)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    }
    tmp.persist(&dest).map_err(|e| io(e.error))?;
    Ok(())
}

/// One node of `compose plan`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanNode {
    pub id: usize,
    pub name: String,
    pub kind: String,
    pub hash: String,
    pub cached: bool,
    /// The remote cache has it (only asked for what the store lacks).
    pub remote: bool,
    pub deps: Vec<usize>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanReport {
    pub nodes: Vec<PlanNode>,
    pub images: Vec<(String, usize)>,
}

/// `compose plan`.
pub fn plan_report(opts: &SpecOptions) -> Result<PlanReport, Error> {
    let p = load_and_plan(opts)?;
    let remote = open_remote(opts)?;
    let mut nodes = Vec::new();
    for n in p.plan.topo_order() {
        let d = &p.plan.graph[n];
        let cached = p.store.lookup(&d.hash)?.is_some();
        let remote = !cached && remote.as_ref().is_some_and(|r| r.record(&d.hash).is_some_and(|rec| build::fits(d, &rec)));
        nodes.push(PlanNode {
            remote,
            id: n.index(),
            name: d.name.clone(),
            kind: d.kind.name().to_string(),
            hash: d.hash.to_string(),
            cached,
            deps: p.plan.dependencies(n).iter().map(|x| x.index()).collect(),
        });
    }
    let images = p.plan.images.iter().map(|i| (i.name.clone(), i.root.index())).collect();
    Ok(PlanReport { nodes, images })
}

/// How many images a spec holds (for commands that need one).
pub fn image_count(opts: &SpecOptions) -> Result<usize, Error> {
    Ok(spec::parse_file(&opts.spec)?.images.len())
}

/// Open the store for `compose cache …`.
pub fn open_store(dir: &Path) -> Result<Store, Error> {
    Store::open(dir).map_err(|source| Error::Store { path: dir.to_path_buf(), source })
}
