//! Resolution: turning an image's repositories and package requests into lockfile pins, per
//! platform, with the Debian client in [`crate::debian`].
//!
//! Owns the choice of mirror and keyring for each repository (the spec's `keyring`, resolved
//! against the spec directory; the mirror from `--mirror`, `COMPOSE_MIRROR_<NAME>` or the host's
//! apt sources), loading every repository for the platform's architecture, running the resolver,
//! and recording each pinned package's dependencies among the pinned set (for layering).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::debian::repository::sources::{self, Mirror, SourcesError};
use crate::debian::repository::{self, RepoError, RepoSource};
use crate::debian::resolve::{self, Request, ResolveError, ResolveOptions, Universe};
use crate::debian::{debian_arch, types::Package};
use crate::http::HttpError;
use crate::lock::{requests_of, ImageLock, PackageLock, PlatformLock, RepositoryLock};
use crate::spec::{ImageSpec, Platform, SpecDiagnostic, SpecFile};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ResolutionError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Mirror(#[from] SourcesError),
    #[error(transparent)]
    Repo(Box<RepoError>),
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Where mirrors come from, besides the host's apt sources under `root`.
pub struct MirrorConfig<'a> {
    pub flags: &'a [(String, String)],
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Root of the filesystem whose `/etc/apt` is read (`/` except in tests).
    pub root: &'a Path,
}

impl MirrorConfig<'_> {
    pub fn mirror(&self, repo: &str, suite: &str) -> Result<Mirror, SourcesError> {
        sources::resolve_mirror(repo, suite, self.flags, self.env, self.root)
    }
}

/// Resolve `image` for all its platforms.
pub fn resolve_image(
    spec: &SpecFile,
    image: &ImageSpec,
    mirrors: &MirrorConfig<'_>,
    store: &Store,
    installed: &BTreeMap<String, Vec<(String, String, String)>>,
    base_key: Option<String>,
    clients: &crate::clients::Clients,
) -> Result<ImageLock, ResolutionError> {
    let mut requests = requests_of(image);
    requests.base = base_key;
    let mut lock = ImageLock { requests, base: None, platforms: BTreeMap::new() };
    if image.packages.is_empty() {
        return Ok(lock);
    }
    let keyrings = keyrings(spec, image)?;
    let http = clients.http()?;
    let now = SystemTime::now();
    for platform in &image.platforms {
        let arch = debian_arch(&platform.architecture, platform.variant.as_deref()).ok_or_else(|| {
            crate::spec::SpecError::from_diagnostic(spec.diagnostic(
                "compose::spec::bad_platform",
                image.span,
                format!("no Debian architecture for platform `{platform}`"),
                "this image",
                None,
            ))
        })?;
        let mut loaded = Vec::new();
        let mut all: Vec<Package> = Vec::new();
        for (i, r) in image.repositories.iter().enumerate() {
            let mirror = mirrors.mirror(&r.name, &r.suite)?;
            let src =
                RepoSource { name: &r.name, suite: &r.suite, components: &r.components, keyring: &keyrings[i], mirror: &mirror, index: i };
            let l = repository::load(store, http, &src, arch, now).map_err(|e| ResolutionError::Repo(Box::new(e)))?;
            all.extend(l.packages.iter().cloned());
            loaded.push(l);
        }
        let requests = requests_with_variant(image, &all, arch);
        let universe = Universe::new(all, arch);
        let options = ResolveOptions { add_essential: image.variant != crate::spec::Variant::Custom };
        let base: Vec<(String, crate::debian::types::Version, String)> = installed
            .get(&platform.to_string())
            .map(|l| l.iter().filter_map(|(n, v, a)| v.parse().ok().map(|v| (n.clone(), v, a.clone()))).collect())
            .unwrap_or_default();
        let resolution =
            resolve::resolve(&universe, &requests, &base, &options).map_err(|e| resolve_diagnostic(spec, image, platform, e))?;
        let selected: Vec<&Package> = resolution.packages.iter().map(|&id| universe.get(id)).collect();
        let packages = package_pins(image, &selected);
        let repositories = loaded
            .iter()
            .map(|l| RepositoryLock {
                name: l.name.clone(),
                suite: l.suite.clone(),
                release_sha256: l.release_sha256.clone(),
                date: l.date.clone(),
            })
            .collect();
        lock.platforms.insert(platform.to_string(), PlatformLock { repositories, packages });
    }
    Ok(lock)
}

/// The keyring of each of the image's repositories (relative paths against the spec's
/// directory); an image with packages and no repository, or a repository without a keyring, is
/// an error.
fn keyrings(spec: &SpecFile, image: &ImageSpec) -> Result<Vec<PathBuf>, ResolutionError> {
    let mut diags: Vec<SpecDiagnostic> = Vec::new();
    if image.repositories.is_empty() {
        diags.push(spec.diagnostic(
            "compose::spec::no_repository",
            image.packages[0].span,
            "packages need at least one `repository`",
            "no repository to install this from",
            Some("add e.g. `repository \"debian\" suite=\"bookworm\" components=\"main\" keyring=\"/usr/share/keyrings/debian-archive-keyring.gpg\"`".into()),
        ));
    }
    let mut keyrings: Vec<PathBuf> = Vec::new();
    for r in &image.repositories {
        match &r.keyring {
            Some(k) => {
                let p = Path::new(k);
                keyrings.push(if p.is_absolute() { p.to_path_buf() } else { spec.dir.join(p) });
            }
            None => {
                keyrings.push(PathBuf::new());
                diags.push(spec.diagnostic(
                    "compose::spec::no_keyring",
                    r.span,
                    format!("repository `{}` has no `keyring`", r.name),
                    "InRelease must be verified against a keyring",
                    Some("add keyring=\"/usr/share/keyrings/debian-archive-keyring.gpg\" (or the repository's own key)".into()),
                ));
            }
        }
    }
    spec.report(diags)?;
    Ok(keyrings)
}

/// What the resolver is asked for: the image's packages and, with `variant "minbase"`, every
/// `Priority: required` package of this architecture, and apt.
fn requests_with_variant(image: &ImageSpec, all: &[Package], arch: &str) -> Vec<Request> {
    let mut extra: BTreeSet<String> = BTreeSet::new();
    if image.variant == crate::spec::Variant::Minbase {
        extra.extend(
            all.iter()
                .filter(|p| p.priority.as_deref() == Some("required") && (p.architecture == arch || p.architecture == "all"))
                .map(|p| p.name.clone()),
        );
        extra.insert("apt".to_string());
    }
    let mut requests: Vec<Request> = image.packages.iter().map(|p| Request { name: p.name.clone(), version: p.version.clone() }).collect();
    for name in extra {
        if !requests.iter().any(|r| r.name == name) {
            requests.push(Request { name, version: None });
        }
    }
    requests
}

/// The lockfile's pin of each selected package, with its dependencies and `Replaces` among the
/// selected set.
fn package_pins(image: &ImageSpec, selected: &[&Package]) -> Vec<PackageLock> {
    let names: BTreeSet<&str> = selected.iter().map(|p| p.name.as_str()).collect();
    // Which selected package satisfies a relation name (directly or as a provider).
    let mut provides: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in selected {
        provides.entry(p.name.as_str()).or_default().insert(p.name.as_str());
        for pr in &p.provides {
            provides.entry(pr.name.as_str()).or_default().insert(p.name.as_str());
        }
    }
    selected
        .iter()
        .map(|p| {
            let mut depends: BTreeSet<String> = BTreeSet::new();
            for group in p.depends.iter().chain(p.pre_depends.iter()) {
                if let Some(by) = group.iter().find_map(|d| provides.get(d.name.as_str())) {
                    depends.extend(by.iter().filter(|n| **n != p.name).map(|n| n.to_string()));
                }
            }
            PackageLock {
                name: p.name.clone(),
                version: p.version.to_string(),
                architecture: p.architecture.clone(),
                sha256: p.sha256.clone(),
                size: p.size,
                filename: p.filename.clone(),
                repository: image.repositories[p.repository].name.clone(),
                depends: depends.into_iter().collect(),
                source: p.source.clone(),
                homepage: p.homepage.clone(),
                maintainer: p.maintainer.clone(),
                replaces: p.replaces.iter().map(|d| d.name.clone()).filter(|n| names.contains(n.as_str())).collect(),
            }
        })
        .collect()
}

/// A resolver failure as a diagnostic on the package request it started from.
fn resolve_diagnostic(spec: &SpecFile, image: &ImageSpec, platform: &Platform, e: ResolveError) -> ResolutionError {
    let msg = e.to_string();
    let root = request_name(&e).map(str::to_string);
    let span = root.as_deref().and_then(|n| image.packages.iter().find(|p| p.name == n)).map(|p| p.span).unwrap_or(image.packages[0].span);
    ResolutionError::Spec(crate::spec::SpecError::from_diagnostic(spec.diagnostic(
        "compose::resolve",
        span,
        format!("cannot resolve packages for {platform}: {msg}"),
        "requested here",
        None,
    )))
}

/// The requested package a resolver error started from, if it says.
fn request_name(e: &ResolveError) -> Option<&str> {
    match e {
        ResolveError::UnknownPackage { name, .. }
        | ResolveError::NoVersion { name, .. }
        | ResolveError::ConflictingRequests { name, .. }
        | ResolveError::AmbiguousVirtual { name, .. } => Some(name),
        ResolveError::Unsatisfiable { chain, .. } => chain.first().and_then(|c| c.split([' ', '=', ':']).next()),
        ResolveError::Conflict { a, .. } => a.split(' ').next(),
    }
}
