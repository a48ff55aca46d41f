//! Top-level operations behind each command (cargo's `ops`): load the spec, scan sources, plan,
//! execute, export. Commands in `cli` parse flags, call one of these and print the result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::build::{self, BuildError, Counts, Reporter};
use crate::image::{self, Format, ImageError};
use crate::plan::{self, Plan};
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
}

impl Error {
    /// User errors (the spec, lockfile or command line is wrong) exit with 2, the rest with 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec(_) | Error::Usage(_) => 2,
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
#[derive(Debug, Clone)]
pub struct SpecOptions {
    pub spec: PathBuf,
    pub image: Option<String>,
    pub cache_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub spec: SpecOptions,
    pub out: PathBuf,
    pub format: Format,
}

/// One built image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltImage {
    pub name: String,
    pub tag: String,
    pub digest: String,
    pub output: String,
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
    pub spec: SpecFile,
    pub store: Store,
    pub plan: Plan,
    scanner_stats: (u64, u64),
}

fn source_date_epoch() -> Result<Option<u64>, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
            Error::Usage(format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds since 1970"))
        }),
    }
}

/// Parse, check, scan and plan.
pub fn load_and_plan(opts: &SpecOptions) -> Result<Planned, Error> {
    let spec = spec::parse_file(&opts.spec)?;
    if let Some(name) = &opts.image {
        if spec.image(name).is_none() {
            let names: Vec<&str> = spec.images.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "`{}` has no image `{name}`; it has: {}",
                opts.spec.display(),
                names.join(", ")
            )));
        }
    }
    let selected: Vec<&spec::ImageSpec> =
        spec.images.iter().filter(|i| opts.image.as_ref().is_none_or(|n| *n == i.name)).collect();
    let mut errors: Vec<SpecDiagnostic> = Vec::new();
    for img in &selected {
        match &img.base {
            Base::Scratch => {}
            Base::Registry { span, .. }
            | Base::OciLayout { span, .. }
            | Base::OciArchive { span, .. }
            | Base::DockerArchive { span, .. }
            | Base::Image { span, .. } => errors.push(spec.diagnostic(
                "compose::spec::unsupported",
                *span,
                "only `base \"scratch\"` is supported by this version of compose",
                "unsupported base",
                Some("registry, OCI-layout and same-file bases are not implemented yet".into()),
            )),
        }
        if let Some(p) = img.packages.first() {
            errors.push(spec.diagnostic(
                "compose::spec::unsupported",
                p.span,
                "Debian packages are not supported by this version of compose",
                "unsupported",
                None,
            ));
        }
    }
    spec.report(std::mem::take(&mut errors))?;
    let mut scanner = Scanner::new(&opts.cache_dir, &spec.dir)?;
    let mut sources: HashMap<String, Scanned> = HashMap::new();
    for img in &selected {
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
    let inputs = plan::PlanInputs {
        sources: &sources,
        source_date_epoch: source_date_epoch()?,
        layer_format: crate::layer::LAYER_FORMAT_ID,
    };
    let plan = match plan::plan(&spec, opts.image.as_deref(), &inputs) {
        Ok(p) => p,
        Err(diagnostics) => return Err(spec.report(diagnostics).err().map(Error::Spec).unwrap_or_else(|| Error::Usage("planning failed".into()))),
    };
    // Only a valid spec touches the store.
    let store = Store::open(&opts.cache_dir).map_err(|source| Error::Store { path: opts.cache_dir.clone(), source })?;
    let scanner_stats = (scanner.hashed_files, scanner.hashed_bytes);
    scanner.save(&store)?;
    drop(sources);
    Ok(Planned { spec, store, plan, scanner_stats })
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
    let mut msg = e.to_string();
    let mut src: &dyn std::error::Error = &e;
    while let Some(next) = src.source() {
        msg.push_str(": ");
        msg.push_str(&next.to_string());
        src = next;
    }
    spec.diagnostic("compose::spec::source", span, msg, label, help)
}

/// `compose build`.
pub fn build(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<BuildSummary, Error> {
    let planned = load_and_plan(&opts.spec)?;
    let ex = build::execute(&planned.plan, &planned.store, reporter)?;
    let mut images = Vec::new();
    for pi in &planned.plan.images {
        let fin = build::finished(&planned.plan, &ex, &pi.name, &pi.tag, pi.root)?;
        let path = image::export(&planned.store, &fin, &opts.out, opts.format)?;
        images.push(BuiltImage {
            name: pi.name.clone(),
            tag: pi.tag.clone(),
            digest: fin.root.digest.to_string(),
            output: path.display().to_string(),
        });
    }
    Ok(BuildSummary { images, derivations: ex.counts, hashed_files: planned.scanner_stats.0 })
}

/// One node of `compose plan`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanNode {
    pub id: usize,
    pub name: String,
    pub kind: String,
    pub hash: String,
    pub cached: bool,
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
    let mut nodes = Vec::new();
    for n in p.plan.topo_order() {
        let d = &p.plan.graph[n];
        nodes.push(PlanNode {
            id: n.index(),
            name: d.name.clone(),
            kind: d.kind.name().to_string(),
            hash: d.hash.to_string(),
            cached: p.store.lookup(&d.hash)?.is_some(),
            deps: p.plan.dependencies(n).iter().map(|x| x.index()).collect(),
        });
    }
    let images = p.plan.images.iter().map(|i| (i.name.clone(), i.root.index())).collect();
    Ok(PlanReport { nodes, images })
}

/// Open the store for `compose cache …`.
pub fn open_store(dir: &Path) -> Result<Store, Error> {
    Store::open(dir).map_err(|source| Error::Store { path: dir.to_path_buf(), source })
}
