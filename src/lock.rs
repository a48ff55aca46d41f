//! The lockfile: what every input of a spec resolved to, so that builds are the same on every
//! machine until the user asks for an update.
//!
//! Owns the lockfile model (`spec.kdl.lock`, JSON, versioned, sorted, one package per object so
//! diffs stay readable), reading and writing it atomically, and the consistency check against the
//! spec: each image records the requests it was resolved from (repositories and package requests,
//! as written); when those differ from the spec, the image's lock is stale and must be re-resolved
//! (or, with `--locked`, the build fails).
//!
//! Mirror URLs are never written here: a package's identity is its name, version, architecture and
//! sha256; where to fetch it from comes from the user's environment at build time.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::ImageSpec;

/// The lockfile format version this build reads and writes.
pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("failed to read lockfile `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lockfile `{path}` is damaged: {message}; delete it or run `compose lock` to write a new one")]
    Parse { path: PathBuf, message: String },
    #[error("lockfile `{path}` has version {found}, but this compose reads version {LOCK_VERSION}; run `compose lock` to rewrite it")]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write lockfile `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: crate::util::IoError,
    },
}

/// A whole lockfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockfile {
    pub version: u32,
    /// Per image name.
    pub images: BTreeMap<String, ImageLock>,
    /// Fixed-output steps (`network #true`), per step name (`NAME@PLATFORM` for a target other
    /// than the step's first platform): the output they were pinned to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, StepLock>,
}

/// The step a pin's name in `steps` is of: `NAME` or `NAME@PLATFORM`.
pub fn step_of_key(key: &str) -> &str {
    key.split_once('@').map_or(key, |(name, _)| name)
}

/// A fixed-output step's pin: the recipe it was run from and the hash of what it yielded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLock {
    /// The step's recipe (its image, inputs, commands, environment), as a derivation hash. When
    /// the spec's recipe differs, the step runs again (not with `--locked`) and is pinned anew.
    pub recipe: String,
    /// `sha256:…` of the output as an uncompressed, normalised tar (independent of compression).
    pub output: String,
}

/// What one image resolved to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLock {
    /// The requests this was resolved from, as written in the spec (see [`requests_of`]).
    pub requests: Requests,
    /// A registry base: the reference as written and, per platform, the manifest digest it named
    /// when it was locked. A moved tag is only followed by `compose lock --update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseLock>,
    /// Per platform (`linux/amd64`).
    pub platforms: BTreeMap<String, PlatformLock>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseLock {
    pub reference: String,
    pub digests: BTreeMap<String, String>,
}

/// The inputs of resolution, as the spec states them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    pub repositories: Vec<RepositoryRequest>,
    /// `name` or `name=version`, sorted.
    pub packages: Vec<String>,
    /// Identity of what the base image has installed (per platform), when there is a base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `variant` when not `custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryRequest {
    pub name: String,
    pub suite: String,
    pub components: Vec<String>,
}

/// One platform's pins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformLock {
    /// Each repository's Release identity (sha256 of the verified Release text, and its date).
    pub repositories: Vec<RepositoryLock>,
    /// Sorted by name.
    pub packages: Vec<PackageLock>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryLock {
    pub name: String,
    pub suite: String,
    pub release_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// A pinned package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageLock {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub sha256: String,
    pub size: u64,
    /// Path below the mirror root (`pool/main/…`): where, never from where.
    pub filename: String,
    /// Name of the spec repository it came from.
    pub repository: String,
    /// Names of the locked packages it depends on (for layering and explanations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintainer: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
}

/// The lockfile path of a spec: `spec.kdl.lock` beside it.
pub fn path_for(spec: &Path) -> PathBuf {
    let mut name = spec.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    spec.with_file_name(name)
}

/// The requests of `image`, in canonical form.
pub fn requests_of(image: &ImageSpec) -> Requests {
    let mut packages: Vec<String> = image
        .packages
        .iter()
        .map(|p| match &p.version {
            Some(v) => format!("{}={v}", p.name),
            None => p.name.clone(),
        })
        .collect();
    packages.sort();
    packages.dedup();
    Requests {
        repositories: image
            .repositories
            .iter()
            .map(|r| RepositoryRequest { name: r.name.clone(), suite: r.suite.clone(), components: r.components.clone() })
            .collect(),
        packages,
        base: None,
        variant: (image.variant != crate::spec::Variant::Custom).then(|| image.variant.name().to_string()),
    }
}

impl Default for Lockfile {
    /// An empty lockfile of the current version.
    fn default() -> Lockfile {
        Lockfile { version: LOCK_VERSION, images: BTreeMap::new(), steps: BTreeMap::new() }
    }
}

impl Lockfile {
    pub fn new() -> Lockfile {
        Lockfile::default()
    }

    /// Read `path`; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<Lockfile>, LockError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LockError::Read { path: path.to_path_buf(), source }),
        };
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe =
            serde_json::from_slice(&bytes).map_err(|e| LockError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        if probe.version != LOCK_VERSION {
            return Err(LockError::Version { path: path.to_path_buf(), found: probe.version });
        }
        let mut lock: Lockfile =
            serde_json::from_slice(&bytes).map_err(|e| LockError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        lock.check().map_err(|message| LockError::Parse { path: path.to_path_buf(), message })?;
        lock.normalize();
        Ok(Some(lock))
    }

    /// Fields that end up in line-based formats (dpkg's database, the SBOM, messages) must be
    /// what Debian allows: a package name of `[a-z0-9][a-z0-9+.-]*`, a version and architecture
    /// of printable ASCII without spaces, a sha256 of 64 hex digits. Anything else (a newline, a
    /// bidirectional override) is refused, naming the image and the field.
    pub fn check(&self) -> Result<(), String> {
        let printable = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic());
        for (image, il) in &self.images {
            for (platform, pl) in &il.platforms {
                for p in &pl.packages {
                    let name_ok = p.name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                        && p.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.'));
                    let bad = if !name_ok {
                        Some(("name", p.name.as_str()))
                    } else if !printable(&p.version) {
                        Some(("version", p.version.as_str()))
                    } else if !printable(&p.architecture) {
                        Some(("architecture", p.architecture.as_str()))
                    } else if !crate::hash::is_sha256_hex(&p.sha256) {
                        Some(("sha256", p.sha256.as_str()))
                    } else if !printable(&p.filename) {
                        Some(("filename", p.filename.as_str()))
                    } else {
                        None
                    };
                    if let Some((field, value)) = bad {
                        return Err(format!(
                            "image `{image}` ({platform}) has a package whose {field} {value:?} is not a valid Debian {field}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Sort everything that has no meaningful order.
    pub fn normalize(&mut self) {
        for image in self.images.values_mut() {
            for p in image.platforms.values_mut() {
                p.packages.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
                for pkg in &mut p.packages {
                    pkg.depends.sort();
                    pkg.depends.dedup();
                    pkg.replaces.sort();
                    pkg.replaces.dedup();
                }
            }
        }
    }

    /// The bytes written to disk: pretty JSON with a trailing newline, stable for diffs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut lock = self.clone();
        lock.normalize();
        let mut out = serde_json::to_vec_pretty(&lock).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Write atomically (temporary file beside it, then rename). Unchanged content is not rewritten.
    pub fn write(&self, path: &Path) -> Result<bool, LockError> {
        let bytes = self.to_bytes();
        if fs::read(path).ok().as_deref() == Some(bytes.as_slice()) {
            return Ok(false);
        }
        crate::util::write_atomic(path, &bytes, 0o644, None).map_err(|source| LockError::Write { path: path.to_path_buf(), source })?;
        Ok(true)
    }

    /// Is `image`'s entry present and resolved from exactly the spec's current requests, for all
    /// of its platforms?
    pub fn is_current(&self, image: &ImageSpec) -> bool {
        let Some(l) = self.images.get(&image.name) else { return false };
        let r = requests_of(image);
        l.requests.repositories == r.repositories
            && l.requests.packages == r.packages
            && l.requests.variant == r.variant
            && image.platforms.iter().all(|p| l.platforms.contains_key(&p.to_string()))
            && l.platforms.len() == image.platforms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_sorted_and_rejects_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.kdl.lock");
        assert_eq!(Lockfile::read(&path).unwrap(), None);
        let mut lock = Lockfile::new();
        let pkg = |n: &str| PackageLock {
            name: n.into(),
            version: "1".into(),
            architecture: "amd64".into(),
            sha256: "a".repeat(64),
            filename: format!("pool/main/{n}.deb"),
            ..Default::default()
        };
        let pl = PlatformLock { packages: vec![pkg("zlib"), pkg("curl")], ..Default::default() };
        let mut il = ImageLock::default();
        il.platforms.insert("linux/amd64".into(), pl);
        lock.images.insert("web".into(), il);
        assert!(lock.write(&path).unwrap());
        assert!(!lock.write(&path).unwrap(), "unchanged content is not rewritten");
        let back = Lockfile::read(&path).unwrap().unwrap();
        assert_eq!(back.images["web"].platforms["linux/amd64"].packages[0].name, "curl");
        fs::write(&path, r#"{"version": 99, "images": {}}"#).unwrap();
        assert!(matches!(Lockfile::read(&path), Err(LockError::Version { found: 99, .. })));
        fs::write(&path, "not json").unwrap();
        assert!(matches!(Lockfile::read(&path), Err(LockError::Parse { .. })));
        assert_eq!(path_for(Path::new("a/spec.kdl")), Path::new("a/spec.kdl.lock"));
    }

    /// Guards against this: a lockfile package name with a newline, or a version with U+202E,
    /// was accepted and copied into the SBOM.
    #[test]
    fn lockfile_fields_that_would_corrupt_line_based_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.kdl.lock");
        let good = PackageLock {
            name: "curl".into(),
            version: "7.88.1-10+deb12u5".into(),
            architecture: "amd64".into(),
            sha256: "a".repeat(64),
            filename: "pool/main/c/curl/curl.deb".into(),
            ..Default::default()
        };
        for (field, bad) in [
            ("name", PackageLock { name: "curl\nStatus: x".into(), ..good.clone() }),
            ("version", PackageLock { version: "1.0\u{202e}".into(), ..good.clone() }),
        ] {
            let mut lock = Lockfile::new();
            let mut il = ImageLock::default();
            il.platforms.insert("linux/amd64".into(), PlatformLock { packages: vec![good.clone(), bad], ..Default::default() });
            lock.images.insert("web".into(), il);
            fs::write(&path, lock.to_bytes()).unwrap();
            match Lockfile::read(&path) {
                Err(LockError::Parse { message, .. }) => assert!(message.contains(&format!("whose {field}")), "{message}"),
                other => panic!("accepted a bad {field}: {other:?}"),
            }
        }
    }
}
