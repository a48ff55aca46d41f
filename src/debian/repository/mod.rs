//! The repository client: where a repository is fetched from ([`sources`]), the trust anchor
//! (the keyring and the `InRelease` signature, [`inrelease`]), the signed `Release` file
//! ([`release`]), the `Packages` indexes ([`index`]), and, here, loading one repository for one
//! architecture with all of them ([`load`]).
//!
//! [`load`] fetches `InRelease` from the mirror, verifies it against the repository's keyring,
//! then fetches (or finds in the store, by sha256) each component's `Packages` index, checks it
//! against the Release, and parses it. Indexes are kept in the store as ordinary blobs, addressed
//! by the sha256 the signed Release gives, so a second resolution of the same Release fetches
//! only `InRelease`.

pub mod index;
pub mod inrelease;
pub mod release;
pub mod sources;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::hash::Sha256;
use crate::http::{Http, HttpError};
use crate::store::{Store, StoreError};

use crate::debian::types::Package;

use index::IndexError;
use inrelease::Keyring;
use release::ReleaseError;
use sources::Mirror;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("cannot fetch the index of repository `{repo}` from {mirror}")]
    Fetch {
        repo: String,
        mirror: String,
        #[source]
        source: HttpError,
    },
    #[error("cannot load keyring `{path}` of repository `{repo}`")]
    Keyring {
        repo: String,
        path: PathBuf,
        #[source]
        source: Box<ReleaseError>,
    },
    #[error("`InRelease` of repository `{repo}` (suite `{suite}`) from {mirror} was rejected")]
    Release {
        repo: String,
        suite: String,
        mirror: String,
        #[source]
        source: Box<ReleaseError>,
    },
    #[error(
        "the signed Release of repository `{repo}` from {mirror} is for suite {found}, not the `{suite}` the spec asks for \
         (a mirror serving another suite's release, such as an older one, is refused)"
    )]
    SuiteMismatch { repo: String, suite: String, mirror: String, found: String },
    #[error("repository `{repo}` (suite `{suite}`) has no `Packages` index for component `{component}` and architecture `{arch}`")]
    NoIndex { repo: String, suite: String, component: String, arch: String },
    #[error("the `Packages` index `{path}` of repository `{repo}` from {mirror} is not the one its Release names")]
    Index {
        repo: String,
        path: String,
        mirror: String,
        #[source]
        source: Box<IndexError>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one repository offers for one architecture.
pub struct Loaded {
    pub name: String,
    pub suite: String,
    /// sha256 of the verified Release text: the repository's identity in the lockfile.
    pub release_sha256: String,
    pub date: Option<String>,
    pub packages: Vec<Package>,
}

/// Where one repository lives and how to trust it.
pub struct RepoSource<'a> {
    pub name: &'a str,
    pub suite: &'a str,
    pub components: &'a [String],
    pub keyring: &'a Path,
    pub mirror: &'a Mirror,
    /// Position of the repository in the spec (the packages' `repository` field).
    pub index: usize,
}

/// Fetch, verify and parse `src` for Debian architecture `arch`.
pub fn load(store: &Store, http: &Http, src: &RepoSource<'_>, arch: &str, now: SystemTime) -> Result<Loaded, RepoError> {
    let mirror = src.mirror.url.trim_end_matches('/').to_string();
    // What messages show: never the credentials a mirror URL may hold.
    let shown = crate::util::redact_url(&mirror);
    let fetch_err = |source| RepoError::Fetch { repo: src.name.to_string(), mirror: shown.clone(), source };
    let keyring = Keyring::load(src.keyring).map_err(|source| RepoError::Keyring {
        repo: src.name.to_string(),
        path: src.keyring.to_path_buf(),
        source: Box::new(source),
    })?;
    let base = format!("{mirror}/dists/{}", src.suite);
    let inrelease = http.get_bytes(&format!("{base}/InRelease")).map_err(fetch_err)?;
    let release_err = |source| RepoError::Release {
        repo: src.name.to_string(),
        suite: src.suite.to_string(),
        mirror: shown.clone(),
        source: Box::new(source),
    };
    let text = inrelease::verify_inrelease(&inrelease, &keyring, now).map_err(release_err)?;
    let release_sha256 = Sha256::of(&text).hex();
    let text = String::from_utf8_lossy(&text).into_owned();
    let rel = release::parse_release(&text).map_err(release_err)?;
    rel.check_valid_until(now, false).map_err(release_err)?;
    // The signed text must be the suite asked for (its Suite or its Codename, as apt checks),
    // or a mirror could serve another suite's valid release: a downgrade.
    if rel.suite.as_deref() != Some(src.suite) && rel.codename.as_deref() != Some(src.suite) {
        let found = match (&rel.suite, &rel.codename) {
            (Some(s), Some(c)) => format!("`{s}` (codename `{c}`)"),
            (Some(s), None) | (None, Some(s)) => format!("`{s}`"),
            (None, None) => "(none: no Suite or Codename field)".to_string(),
        };
        return Err(RepoError::SuiteMismatch { repo: src.name.to_string(), suite: src.suite.to_string(), mirror: shown.clone(), found });
    }
    let mut packages = Vec::new();
    for component in src.components {
        let Some((path, size, sha256)) = rel.index_path(component, arch) else {
            return Err(RepoError::NoIndex {
                repo: src.name.to_string(),
                suite: src.suite.to_string(),
                component: component.clone(),
                arch: arch.to_string(),
            });
        };
        let index_err =
            |source| RepoError::Index { repo: src.name.to_string(), path: path.clone(), mirror: shown.clone(), source: Box::new(source) };
        let digest = Sha256::from_hex(&sha256.to_ascii_lowercase()).map_err(|_| {
            index_err(IndexError::HashMismatch {
                what: path.clone(),
                expected: sha256.clone(),
                actual: "(the Release's value is not a sha256)".into(),
            })
        })?;
        let raw = if store.has_blob(&digest) {
            store.read_blob(&digest)?
        } else {
            let mut data = Vec::new();
            if rel.acquire_by_hash {
                data = http.get_bytes(&format!("{base}/{}", release::by_hash_path(&path, &sha256))).unwrap_or_default();
            }
            if index::check_sha256(&data, &sha256, size, &path).is_err() {
                data = http.get_bytes(&format!("{base}/{path}")).map_err(fetch_err)?;
            }
            index::check_sha256(&data, &sha256, size, &path).map_err(index_err)?;
            store.put_bytes(&data)?;
            data
        };
        let plain = index::decompress(&path, &raw).map_err(index_err)?;
        let plain = String::from_utf8_lossy(&plain);
        packages.extend(index::parse_packages(&plain, src.index).map_err(index_err)?);
    }
    Ok(Loaded { name: src.name.to_string(), suite: src.suite.to_string(), release_sha256, date: rel.date.clone(), packages })
}
