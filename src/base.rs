//! Base images: what an image starts from, per platform: its manifest digest, its config (the
//! child's config starts from it), its layers (reused byte for byte, never recompressed), and
//! where those blobs come from.
//!
//! Owns reading local bases: `oci:PATH[:TAG]` (an OCI image layout), `oci-archive:PATH` (a tar of
//! one) and `docker-archive:PATH` (`docker save`'s `manifest.json` format, legacy or OCI-style),
//! choosing the manifest for a platform from an index, and the mapping of Docker media types to
//! OCI ones. Registry bases are resolved through [`crate::registry`] into the same [`BaseImage`],
//! their manifests and configs kept in the store so a pinned base needs no network once fetched.
//!
//! Also owns loading every base a command needs ([`load`]: pins of registry bases, the lockfile's
//! `--locked` rule), the one reader of a base layer's bytes wherever they live ([`copy_layer`],
//! [`pull_layer`]), and the files compose reads from a base (passwd, group, dpkg database),
//! remembered in the store per base.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::clients::Clients;
use crate::hash::Sha256;
use crate::lock::{BaseLock, Lockfile};
pub use crate::oci::oci_layer_media_type;
use crate::oci::{self, DescriptorDoc, MANIFEST_MEDIA_TYPE};
use crate::spec::{Base, ImageSpec, SpecDiagnostic, SpecError, SpecFile};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("cannot read base image `{reference}`: failed to {action} `{path}`")]
    Io {
        reference: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("base image `{reference}` is not valid: {message}")]
    Invalid { reference: String, message: String },
    #[error("base image `{reference}` has no image for platform {platform} (it has: {available})")]
    NoPlatform { reference: String, platform: String, available: String },
    #[error("base image `{reference}` has no image tagged `{tag}` (it has: {available})")]
    NoTag { reference: String, tag: String, available: String },
    #[error("cannot get base image `{reference}`: {message}")]
    Unavailable { reference: String, message: String },
    #[error("cannot read base image `{reference}`: --offline is set and the store does not hold its layers; build once online")]
    Offline { reference: String },
    #[error("cannot bring layer {digest} of base image `{reference}` into the store: {message}")]
    Layer { reference: String, digest: String, message: String },
}

/// Where a base image's blobs are read from (never part of any hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSource {
    /// A directory of `<hex>` files (an OCI layout's `blobs/sha256`).
    Dir(PathBuf),
    /// Members of a tar archive, by digest.
    Archive { path: PathBuf, members: BTreeMap<Sha256, String> },
    /// A registry repository (`REGISTRY/REPO`).
    Registry { repo: String },
}

/// One layer of a base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseLayer {
    pub digest: Sha256,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Sha256,
}

/// One platform's base image.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// As the spec wrote it, for messages.
    pub reference: String,
    pub manifest_digest: Sha256,
    pub config: Value,
    pub layers: Vec<BaseLayer>,
    pub source: BlobSource,
    /// `/etc/passwd`, `/etc/group` and the dpkg database, from [`read_base_files`].
    pub files: BTreeMap<String, Vec<u8>>,
}

/// A registry's answer as a base error: what the machine's environment is to blame for (the
/// network, credentials, a failing server) is [`BaseError::Unavailable`]; what the reference is
/// (a tag or digest the registry does not have, bytes that are not what they claim) is invalid.
fn from_registry(reference: &str, e: &crate::registry::RegistryError) -> BaseError {
    use crate::registry::RegistryError as R;
    let message = crate::util::chain_message(e);
    match e {
        R::NotFound { .. } | R::BadReference { .. } | R::DigestMismatch { .. } | R::SizeMismatch { .. } => invalid(reference, message),
        _ => BaseError::Unavailable { reference: reference.to_string(), message },
    }
}

impl BaseError {
    /// Is the machine's environment (network, registry, credentials, `--offline`) to blame,
    /// rather than the spec?
    pub fn is_environment(&self) -> bool {
        matches!(self, BaseError::Unavailable { .. } | BaseError::Offline { .. } | BaseError::Layer { .. })
    }
}

fn invalid(reference: &str, message: impl Into<String>) -> BaseError {
    BaseError::Invalid { reference: reference.to_string(), message: message.into() }
}

/// Reads blobs of a base by digest.
trait Blobs {
    fn read(&mut self, digest: &Sha256) -> Result<Vec<u8>, BaseError>;
    /// Manifests and indexes (a registry serves them apart from blobs).
    fn read_manifest(&mut self, digest: &Sha256) -> Result<Vec<u8>, BaseError> {
        self.read(digest)
    }
}

/// Where a registry base's manifests and configs come from: the store when it has them (they
/// are content-addressed, and the lockfile pins the manifest digest, so a later build needs no
/// network), else the registry, keeping what was fetched in the store.
struct RegistryBlobs<'a> {
    reference: &'a str,
    clients: &'a Clients,
    repo: String,
    store: Option<&'a Store>,
}

/// The registry client, or why there is none for base `reference`.
fn registry_of<'c>(clients: &'c Clients, reference: &str) -> Result<&'c crate::registry::Registry, BaseError> {
    if clients.offline() {
        return Err(BaseError::Unavailable {
            reference: reference.to_string(),
            message: "--offline is set and the store does not hold this base image's manifest and config".into(),
        });
    }
    clients.registry().map_err(|message| BaseError::Unavailable { reference: reference.to_string(), message })
}

impl RegistryBlobs<'_> {
    /// `digest` from the store, or else from the registry by `fetch` (then kept in the store;
    /// best effort: a store that cannot take it only costs a download next time).
    fn through(
        &self,
        digest: &Sha256,
        fetch: impl FnOnce(&crate::registry::Registry) -> Result<Vec<u8>, crate::registry::RegistryError>,
    ) -> Result<Vec<u8>, BaseError> {
        let cached = self.store.and_then(|s| std::fs::read(s.blob_path(digest)).ok()).filter(|b| Sha256::of(b) == *digest);
        if let Some(bytes) = cached {
            return Ok(bytes);
        }
        let reg = registry_of(self.clients, self.reference)?;
        let bytes = fetch(reg).map_err(|e| from_registry(self.reference, &e))?;
        if let Some(store) = self.store {
            let _ = store.put_bytes(&bytes);
        }
        Ok(bytes)
    }
}

impl Blobs for RegistryBlobs<'_> {
    fn read(&mut self, digest: &Sha256) -> Result<Vec<u8>, BaseError> {
        self.through(digest, |reg| {
            let mut v = Vec::new();
            reg.blob(&self.repo, digest, None, &mut v).map(|_| v)
        })
    }
    fn read_manifest(&mut self, digest: &Sha256) -> Result<Vec<u8>, BaseError> {
        self.through(digest, |reg| reg.manifest(&self.repo, digest).map(|f| f.bytes))
    }
}

/// A registry base for `platform`: from the pinned manifest digest when there is one, else by
/// resolving the reference (a tag is followed only here: the lockfile pins what it found).
/// The registry client is made only when one is needed: with a pinned digest whose manifests
/// and config `store` holds, none is.
pub fn registry_base(
    clients: &Clients,
    store: Option<&Store>,
    reference: &str,
    pinned: Option<&Sha256>,
    platform: &str,
) -> Result<BaseImage, BaseError> {
    let parsed = crate::registry::parse_reference(reference).map_err(|e| invalid(reference, e.to_string()))?;
    let repo = parsed.repo();
    let root = match pinned {
        Some(d) => Root { digest: *d, media_type: None },
        None => {
            let reg = registry_of(clients, reference)?;
            let f = reg.resolve(reference).map_err(|e| from_registry(reference, &e))?;
            Root { digest: f.digest, media_type: Some(f.media_type) }
        }
    };
    let mut blobs = RegistryBlobs { reference, clients, repo: repo.clone(), store };
    from_descriptor(reference, &mut blobs, root, platform, BlobSource::Registry { repo })
}

/// Where reading a base starts: a manifest or index, by digest.
struct Root {
    digest: Sha256,
    media_type: Option<String>,
}

impl From<&DescriptorDoc> for Root {
    fn from(d: &DescriptorDoc) -> Root {
        Root { digest: d.digest, media_type: d.media_type.clone() }
    }
}

struct DirBlobs<'a> {
    reference: &'a str,
    dir: PathBuf,
}

impl Blobs for DirBlobs<'_> {
    fn read(&mut self, digest: &Sha256) -> Result<Vec<u8>, BaseError> {
        let p = self.dir.join(digest.hex());
        let bytes = std::fs::read(&p).map_err(|source| BaseError::Io {
            reference: self.reference.to_string(),
            action: "read",
            path: p.clone(),
            source,
        })?;
        verify(self.reference, digest, &bytes)?;
        Ok(bytes)
    }
}

fn verify(reference: &str, digest: &Sha256, bytes: &[u8]) -> Result<(), BaseError> {
    let actual = Sha256::of(bytes);
    if actual != *digest {
        return Err(invalid(reference, format!("blob {digest} has content {actual}")));
    }
    Ok(())
}

/// Small members (JSON) of a tar archive, read into memory; big ones are only indexed.
struct ArchiveBlobs<'a> {
    reference: &'a str,
    path: PathBuf,
    small: BTreeMap<String, Vec<u8>>,
    sizes: BTreeMap<String, u64>,
}

impl<'a> ArchiveBlobs<'a> {
    fn open(reference: &'a str, path: &Path) -> Result<ArchiveBlobs<'a>, BaseError> {
        let io = |action, source| BaseError::Io { reference: reference.to_string(), action, path: path.to_path_buf(), source };
        let f = File::open(path).map_err(|e| io("open", e))?;
        let mut ar = tar::Archive::new(BufReader::new(f));
        let mut small = BTreeMap::new();
        let mut sizes = BTreeMap::new();
        for entry in ar.entries().map_err(|e| io("read", e))? {
            let mut entry = entry.map_err(|e| io("read", e))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry.path().map_err(|e| io("read", e))?.to_string_lossy().trim_start_matches("./").to_string();
            let size = entry.size();
            sizes.insert(name.clone(), size);
            if size <= 4 << 20 {
                let mut v = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut v).map_err(|e| io("read", e))?;
                small.insert(name, v);
            }
        }
        Ok(ArchiveBlobs { reference, path: path.to_path_buf(), small, sizes })
    }

    fn member(&self, name: &str) -> Result<&[u8], BaseError> {
        self.small
            .get(name.trim_start_matches("./"))
            .map(Vec::as_slice)
            .ok_or_else(|| invalid(self.reference, format!("`{}` has no member `{name}`", self.path.display())))
    }

    /// The sha256 of a (possibly large) member, streamed.
    fn digest_of(&self, name: &str) -> Result<(Sha256, u64), BaseError> {
        let io = |source| BaseError::Io { reference: self.reference.to_string(), action: "read", path: self.path.clone(), source };
        let want = name.trim_start_matches("./");
        let f = File::open(&self.path).map_err(io)?;
        let mut ar = tar::Archive::new(BufReader::new(f));
        for entry in ar.entries().map_err(io)? {
            let entry = entry.map_err(io)?;
            let n = entry.path().map_err(io)?.to_string_lossy().trim_start_matches("./").to_string();
            if n == want {
                return Sha256::of_reader(entry).map_err(io);
            }
        }
        Err(invalid(self.reference, format!("`{}` has no member `{name}`", self.path.display())))
    }
}

impl Blobs for ArchiveBlobs<'_> {
    fn read(&mut self, digest: &Sha256) -> Result<Vec<u8>, BaseError> {
        let bytes = self.member(&format!("blobs/sha256/{}", digest.hex()))?.to_vec();
        verify(self.reference, digest, &bytes)?;
        Ok(bytes)
    }
}

fn json(reference: &str, what: &str, bytes: &[u8]) -> Result<Value, BaseError> {
    serde_json::from_slice(bytes).map_err(|e| invalid(reference, format!("{what} is not valid JSON: {e}")))
}

fn doc<T: serde::de::DeserializeOwned>(reference: &str, what: &'static str, bytes: &[u8]) -> Result<T, BaseError> {
    oci::read(what, bytes).map_err(|e| invalid(reference, e.to_string()))
}

/// Does a config's platform (`have`) serve `platform`? `linux/arm64` is served by
/// `linux/arm64/v8` and the other way round.
fn serves(have: &str, platform: &str) -> bool {
    have == platform || have.starts_with(&format!("{platform}/")) || platform.starts_with(&format!("{have}/"))
}

/// Pick the manifest for `platform` (`os/arch[/variant]`) starting at `root`, following
/// indexes; then read its config and layers.
fn from_descriptor(reference: &str, blobs: &mut dyn Blobs, root: Root, platform: &str, source: BlobSource) -> Result<BaseImage, BaseError> {
    let mut desc = root;
    for _ in 0..4 {
        let bytes = blobs.read_manifest(&desc.digest)?;
        let declared = desc.media_type.as_deref().unwrap_or(MANIFEST_MEDIA_TYPE);
        if oci::is_index(&bytes) || declared == oci::INDEX_MEDIA_TYPE || declared == oci::DOCKER_INDEX {
            let index: oci::IndexDoc = doc(reference, "an index", &bytes)?;
            let text = |m: &DescriptorDoc| m.platform.as_ref().map(oci::PlatformDoc::text);
            let found = index.manifests.iter().find(|m| text(m).as_deref() == Some(platform)).or_else(|| {
                // `linux/arm64` also matches `linux/arm64/v8`.
                index.manifests.iter().find(|m| text(m).is_some_and(|p| p.starts_with(&format!("{platform}/"))))
            });
            match found {
                Some(m) => {
                    desc = Root::from(m);
                    continue;
                }
                None => {
                    let available: Vec<String> = index.manifests.iter().filter_map(text).collect();
                    return Err(BaseError::NoPlatform {
                        reference: reference.into(),
                        platform: platform.into(),
                        available: available.join(", "),
                    });
                }
            }
        }
        let manifest: oci::ManifestDoc = doc(reference, "the manifest", &bytes)?;
        let config_bytes = blobs.read(&manifest.config.digest)?;
        let config = json(reference, "the config", &config_bytes)?;
        let typed: oci::ConfigDoc = doc(reference, "the config", &config_bytes)?;
        let have = typed.platform.text();
        if !serves(&have, platform) {
            return Err(BaseError::NoPlatform { reference: reference.into(), platform: platform.into(), available: have });
        }
        return Ok(BaseImage {
            reference: reference.to_string(),
            manifest_digest: desc.digest,
            layers: layers_of(reference, &manifest.layers, &typed.rootfs.diff_ids)?,
            config,
            source,
            files: BTreeMap::new(),
        });
    }
    Err(invalid(reference, "indexes nest too deeply"))
}

fn layers_of(reference: &str, layers: &[DescriptorDoc], diff_ids: &[Sha256]) -> Result<Vec<BaseLayer>, BaseError> {
    if diff_ids.len() != layers.len() {
        return Err(invalid(reference, format!("{} layers but {} diff_ids in its config", layers.len(), diff_ids.len())));
    }
    Ok(layers
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| BaseLayer {
            digest: l.digest,
            size: l.size,
            media_type: oci_layer_media_type(l.media_type.as_deref().unwrap_or("")),
            diff_id: *diff_id,
        })
        .collect())
}

/// Choose the index entry named `tag` (or the only one).
fn pick_tagged(reference: &str, index: &oci::IndexDoc, tag: Option<&str>) -> Result<Root, BaseError> {
    let name = |m: &DescriptorDoc| m.annotations.get(oci::REF_NAME).cloned();
    match tag {
        Some(t) => index.manifests.iter().find(|m| name(m).as_deref() == Some(t)).map(Root::from).ok_or_else(|| BaseError::NoTag {
            reference: reference.into(),
            tag: t.into(),
            available: index.manifests.iter().filter_map(name).collect::<Vec<_>>().join(", "),
        }),
        None if index.manifests.len() == 1 => Ok(Root::from(&index.manifests[0])),
        None => Err(invalid(reference, format!("it holds {} images; name one with `:TAG`", index.manifests.len()))),
    }
}

/// `oci:PATH[:TAG]`.
pub fn oci_layout(reference: &str, dir: &Path, tag: Option<&str>, platform: &str) -> Result<BaseImage, BaseError> {
    let index_path = dir.join("index.json");
    let bytes = std::fs::read(&index_path).map_err(|source| BaseError::Io {
        reference: reference.into(),
        action: "read",
        path: index_path.clone(),
        source,
    })?;
    let index: oci::IndexDoc = doc(reference, "index.json", &bytes)?;
    let root = pick_tagged(reference, &index, tag)?;
    let blob_dir = dir.join("blobs/sha256");
    let mut blobs = DirBlobs { reference, dir: blob_dir.clone() };
    from_descriptor(reference, &mut blobs, root, platform, BlobSource::Dir(blob_dir))
}

/// `oci-archive:PATH`.
pub fn oci_archive(reference: &str, path: &Path, platform: &str) -> Result<BaseImage, BaseError> {
    let mut blobs = ArchiveBlobs::open(reference, path)?;
    let index: oci::IndexDoc = doc(reference, "index.json", blobs.member("index.json")?)?;
    let root = pick_tagged(reference, &index, None)?;
    let members: BTreeMap<Sha256, String> = blobs
        .sizes
        .keys()
        .filter_map(|n| n.strip_prefix("blobs/sha256/").and_then(|h| Sha256::from_hex(h).ok()).map(|d| (d, n.clone())))
        .collect();
    let source = BlobSource::Archive { path: path.to_path_buf(), members };
    from_descriptor(reference, &mut blobs, root, platform, source)
}

/// One image of a docker-archive's `manifest.json`.
#[derive(serde::Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// `docker-archive:PATH`: `manifest.json` names the config and layer files; layers of the legacy
/// format are uncompressed tars, identified by the sha256 of their bytes.
pub fn docker_archive(reference: &str, path: &Path, platform: &str) -> Result<BaseImage, BaseError> {
    let blobs = ArchiveBlobs::open(reference, path)?;
    let entries: Vec<DockerEntry> = doc(reference, "manifest.json", blobs.member("manifest.json")?)?;
    let [entry] = entries.as_slice() else {
        return Err(invalid(reference, "manifest.json must describe exactly one image"));
    };
    let config_bytes = blobs.member(&entry.config)?.to_vec();
    let config = json(reference, "the config", &config_bytes)?;
    let typed: oci::ConfigDoc = doc(reference, "the config", &config_bytes)?;
    let have = typed.platform.text();
    if have != platform && !have.starts_with(&format!("{platform}/")) {
        return Err(BaseError::NoPlatform { reference: reference.into(), platform: platform.into(), available: have });
    }
    let diff_ids = typed.rootfs.diff_ids;
    if diff_ids.len() != entry.layers.len() {
        return Err(invalid(reference, format!("{} layers but {} diff_ids in its config", entry.layers.len(), diff_ids.len())));
    }
    let mut members = BTreeMap::new();
    let mut layers = Vec::new();
    for (file, diff_id) in entry.layers.iter().zip(diff_ids) {
        let (digest, size) = blobs.digest_of(file)?;
        let gz = {
            let head = blobs.small.get(file.trim_start_matches("./")).map(|b| b.starts_with(&[0x1f, 0x8b]));
            match head {
                Some(g) => g,
                None => digest != diff_id,
            }
        };
        let media_type = if gz { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" };
        members.insert(digest, file.trim_start_matches("./").to_string());
        layers.push(BaseLayer { digest, size, media_type: media_type.into(), diff_id });
    }
    // The manifest digest of a docker-archive base: of the OCI manifest we would write for it.
    let config_digest = Sha256::of(&config_bytes);
    let manifest_bytes = oci::manifest_json(
        &oci::Descriptor::new(oci::CONFIG_MEDIA_TYPE, config_digest, config_bytes.len() as u64),
        &layers.iter().map(|l| oci::Descriptor::new(&l.media_type, l.digest, l.size)).collect::<Vec<_>>(),
    );
    Ok(BaseImage {
        reference: reference.to_string(),
        manifest_digest: Sha256::of(&manifest_bytes),
        config,
        layers,
        source: BlobSource::Archive { path: path.to_path_buf(), members },
        files: BTreeMap::new(),
    })
}

/// Where a base's layers are: its reference (for messages) and its blob source.
pub struct LayerSource<'a> {
    pub reference: &'a str,
    pub source: &'a BlobSource,
}

impl BaseImage {
    pub fn layer_source(&self) -> LayerSource<'_> {
        LayerSource { reference: &self.reference, source: &self.source }
    }
}

/// Copy layer `l` of base `b`, as stored (compressed), from wherever it lives: the layout's
/// blob directory, the archive's member, or the registry (streamed). The one reader of base
/// layer bytes; the caller verifies what it gets (see [`pull_layer`]).
pub fn copy_layer(b: &LayerSource<'_>, l: &BaseLayer, clients: &Clients, sink: &mut dyn io::Write) -> Result<(), BaseError> {
    let io = |source| BaseError::Io {
        reference: b.reference.to_string(),
        action: "read a layer of",
        path: PathBuf::from(l.digest.to_string()),
        source,
    };
    match b.source {
        BlobSource::Dir(dir) => {
            let mut f = File::open(dir.join(l.digest.hex())).map_err(io)?;
            io::copy(&mut f, sink).map_err(io)?;
        }
        BlobSource::Archive { path, members } => {
            let member = members
                .get(&l.digest)
                .ok_or_else(|| invalid(b.reference, format!("`{}` does not hold layer {}", path.display(), l.digest)))?;
            let f = File::open(path).map_err(io)?;
            let mut ar = tar::Archive::new(BufReader::new(f));
            for e in ar.entries().map_err(io)? {
                let mut e = e.map_err(io)?;
                if e.path().map_err(io)?.to_string_lossy().trim_start_matches("./") == member.as_str() {
                    io::copy(&mut e, sink).map_err(io)?;
                    return Ok(());
                }
            }
            return Err(invalid(b.reference, format!("`{}` has no member `{member}`", path.display())));
        }
        BlobSource::Registry { repo } => {
            if clients.offline() {
                return Err(BaseError::Offline { reference: b.reference.to_string() });
            }
            let reg = clients.registry().map_err(|message| BaseError::Unavailable { reference: b.reference.to_string(), message })?;
            reg.blob(repo, &l.digest, Some(l.size), sink).map_err(|e| from_registry(b.reference, &e))?;
        }
    }
    Ok(())
}

/// Bring layer `l` of base `b` into the store, verified by its digest and size (a layer already
/// there is not read again); returns its path in the store.
pub fn pull_layer(b: &LayerSource<'_>, l: &BaseLayer, store: &Store, clients: &Clients) -> Result<PathBuf, BaseError> {
    if store.has_blob(&l.digest) {
        return Ok(store.blob_path(&l.digest));
    }
    let err = |message: String| BaseError::Layer { reference: b.reference.to_string(), digest: l.digest.to_string(), message };
    let tmp = store.temp_file().map_err(|e| err(crate::util::chain_message(&e)))?;
    let file = tmp.reopen().map_err(|e| err(e.to_string()))?;
    let mut sink = crate::hash::HashingWriter::new(io::BufWriter::new(file));
    copy_layer(b, l, clients, &mut sink)?;
    io::Write::flush(&mut sink).map_err(|e| err(e.to_string()))?;
    let (actual, n, inner) = sink.finish();
    drop(inner);
    if actual != l.digest || n != l.size {
        return Err(err(format!("got {actual} ({n} bytes), expected {} bytes", l.size)));
    }
    store.commit_blob(tmp, &l.digest).map_err(|e| err(crate::util::chain_message(&e)))
}

/// Files of the base image's merged filesystem that compose reads: `/etc/passwd`, `/etc/group`
/// and the dpkg database (`/var/lib/dpkg/status`, `/var/lib/dpkg/status.d/*`). Layers are applied
/// in order, whiteouts (`.wh.NAME`, `.wh..wh..opq`) included. A layer not in a local directory is
/// pulled into `store` (verified), where the build's base-layer derivation then finds it: one
/// download, not two.
pub fn read_base_files(b: &BaseImage, store: Option<&Store>, clients: &Clients) -> Result<BTreeMap<String, Vec<u8>>, BaseError> {
    let wanted = |p: &str| p == "etc/passwd" || p == "etc/group" || p == "var/lib/dpkg/status" || p.starts_with("var/lib/dpkg/status.d/");
    let mut dirs: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for l in &b.layers {
        let io = |source| BaseError::Io {
            reference: b.reference.clone(),
            action: "read a layer of",
            path: PathBuf::from(l.digest.to_string()),
            source,
        };
        let raw: Box<dyn io::BufRead> = match (&b.source, store) {
            (_, Some(s)) if s.has_blob(&l.digest) => Box::new(BufReader::new(File::open(s.blob_path(&l.digest)).map_err(io)?)),
            (BlobSource::Dir(dir), _) => Box::new(BufReader::new(File::open(dir.join(l.digest.hex())).map_err(io)?)),
            (_, Some(s)) => Box::new(BufReader::new(File::open(pull_layer(&b.layer_source(), l, s, clients)?).map_err(io)?)),
            (_, None) => {
                let mut tmp = tempfile::tempfile().map_err(io)?;
                copy_layer(&b.layer_source(), l, clients, &mut tmp)?;
                use std::io::Seek;
                tmp.seek(io::SeekFrom::Start(0)).map_err(io)?;
                Box::new(BufReader::new(tmp))
            }
        };
        let reader = crate::layer::decoder(&l.media_type, raw).map_err(io)?;
        let mut ar = tar::Archive::new(reader);
        for e in ar.entries().map_err(io)? {
            let mut e = e.map_err(io)?;
            let path = e.path().map_err(io)?.to_string_lossy().trim_start_matches("./").trim_end_matches('/').to_string();
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if name == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                files.retain(|k, _| !k.starts_with(&prefix));
                dirs.retain(|k| !k.starts_with(&prefix));
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                let target = if dir.is_empty() { gone.to_string() } else { format!("{dir}/{gone}") };
                files.retain(|k, _| *k != target && !k.starts_with(&format!("{target}/")));
                dirs.retain(|k| *k != target && !k.starts_with(&format!("{target}/")));
                continue;
            }
            let kind = e.header().entry_type();
            if kind.is_dir() || kind.is_symlink() {
                dirs.insert(path.clone());
            }
            if wanted(&path) && e.header().entry_type().is_file() {
                let mut v = Vec::new();
                e.read_to_end(&mut v).map_err(io)?;
                files.insert(path, v);
            }
        }
    }
    let list: Vec<&str> = dirs.iter().map(String::as_str).collect();
    files.insert(BASE_DIRS.to_string(), list.join("\n").into_bytes());
    Ok(files)
}

/// The key, in [`BaseImage::files`], of the base's directories and symlinks (their paths,
/// one a line, without a leading `/`): what `config { workdir }` need not create.
pub const BASE_DIRS: &str = "compose:dirs";

/// Packages a base image's dpkg database says are installed: (name, version, architecture).
pub fn installed_packages(files: &BTreeMap<String, Vec<u8>>) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (path, bytes) in files {
        let in_status_d = path.starts_with("var/lib/dpkg/status.d/") && !path.ends_with(".md5sums");
        if path != "var/lib/dpkg/status" && !in_status_d {
            continue;
        }
        for stanza in String::from_utf8_lossy(bytes).split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_string()))
            };
            let (Some(p), Some(v)) = (field("Package"), field("Version")) else { continue };
            // status.d entries may carry no Status; a status file's must say installed.
            if let Some(st) = field("Status") {
                if !st.ends_with(" installed") {
                    continue;
                }
            }
            out.push((p, v, field("Architecture").unwrap_or_default()));
        }
    }
    out.sort();
    out.dedup();
    out
}

// ---------------------------------------------------------------------------
// Loading every base a command needs
// ---------------------------------------------------------------------------

/// External bases by (image, platform).
pub type Bases = std::collections::HashMap<(String, String), BaseImage>;

/// What [`load`] found.
pub struct Loaded<'s> {
    /// The selected images and every image they use (bases, steps' images, `copy from=`).
    pub needed: Vec<&'s ImageSpec>,
    pub bases: Bases,
    /// Registry bases' manifest digests per image and platform, for the lockfile.
    pub pins: BTreeMap<String, BaseLock>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// `--locked`, and a registry base is not pinned.
    #[error("image `{image}`: {why}")]
    Unpinned { image: String, why: String },
    /// A base could not be had for a reason of the machine's (network, registry, credentials).
    #[error("image `{image}`: {source}")]
    Unavailable {
        image: String,
        #[source]
        source: BaseError,
    },
}

/// How [`load`] treats the lockfile.
pub struct LoadOptions<'a> {
    pub existing: Option<&'a Lockfile>,
    /// Re-resolve registry tags (`compose lock --update`).
    pub update: bool,
    /// Fail rather than resolve an unpinned registry base.
    pub locked: bool,
    pub cache_dir: &'a Path,
}

/// The images `selected` needs (itself and its `base image=` ancestors), and their external bases
/// by (image, platform), with the base files compose reads. Problems with a base are reported
/// against the spec's `base` node, all together.
pub fn load<'s>(
    spec: &'s SpecFile,
    selected: &[&'s ImageSpec],
    opts: &LoadOptions<'_>,
    clients: &Clients,
) -> Result<Loaded<'s>, LoadError> {
    let store_cell: std::cell::OnceCell<Option<Store>> = std::cell::OnceCell::new();
    let store = || store_cell.get_or_init(|| Store::open(opts.cache_dir).ok()).as_ref();
    let mut pins: BTreeMap<String, BaseLock> = BTreeMap::new();
    let mut errors: Vec<SpecDiagnostic> = Vec::new();
    // Images with a `base image="NAME"` need their ancestors planned too.
    // …and so do images used by steps and `copy from=`.
    let needed: Vec<&ImageSpec> = spec.images_needed(selected);
    let mut bases = Bases::new();
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
                    let pinned = opts
                        .existing
                        .filter(|_| !opts.update)
                        .and_then(|l| l.images.get(&img.name))
                        .and_then(|l| l.base.as_ref())
                        .filter(|b| &b.reference == reference)
                        .and_then(|b| b.digests.get(&p))
                        .and_then(|d| d.parse::<Sha256>().ok());
                    if pinned.is_none() && opts.locked {
                        return Err(LoadError::Unpinned {
                            image: img.name.clone(),
                            why: format!("base `{reference}` is not pinned for {p}"),
                        });
                    }
                    let loaded = registry_base(clients, store(), reference, pinned.as_ref(), &p);
                    if let Ok(b) = &loaded {
                        let pin = pins
                            .entry(img.name.clone())
                            .or_insert_with(|| BaseLock { reference: reference.clone(), digests: BTreeMap::new() });
                        pin.digests.insert(p.clone(), b.manifest_digest.to_string());
                    }
                    (loaded, span)
                }
                Base::OciLayout { path, tag, span } => (oci_layout(&format!("oci:{path}"), &resolved(path), tag.as_deref(), &p), span),
                Base::OciArchive { path, span } => (oci_archive(&format!("oci-archive:{path}"), &resolved(path), &p), span),
                Base::DockerArchive { path, span } => (docker_archive(&format!("docker-archive:{path}"), &resolved(path), &p), span),
            };
            match loaded.and_then(|mut b| {
                b.files = remembered_files(store(), &b, || read_base_files(&b, store(), clients))?;
                Ok(b)
            }) {
                Ok(b) => {
                    bases.insert((img.name.clone(), p), b);
                }
                Err(e) if e.is_environment() => return Err(LoadError::Unavailable { image: img.name.clone(), source: e }),
                Err(e) => errors.push(spec.diagnostic("compose::spec::base", *span, crate::util::chain_message(&e), "this base", None)),
            }
        }
    }
    spec.report(errors)?;
    Ok(Loaded { needed, bases, pins })
}

pub use crate::record::parse_base_files;
pub use crate::record::shape::{BASE_FILES_KIND, BASE_FILES_MEDIA_TYPE};

/// The files compose reads from base `b` (passwd, group, dpkg database), remembered in the store
/// under a record (of kind [`BASE_FILES_KIND`]) keyed by the base's layer digests: layers are
/// decompressed once per base, not once per build.
fn remembered_files(
    store: Option<&Store>,
    b: &BaseImage,
    read: impl FnOnce() -> Result<BTreeMap<String, Vec<u8>>, BaseError>,
) -> Result<BTreeMap<String, Vec<u8>>, BaseError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    // v2: with the base's directories (BASE_DIRS).
    let mut key = crate::hash::Encoder::new("base-files/v2");
    key.list(b.layers.len());
    for l in &b.layers {
        key.sha256(&l.digest).str(&l.media_type);
    }
    let drv = key.finish();
    let remembered = store.and_then(|s| {
        let rec = s.lookup(&drv).ok()??;
        parse_base_files(&s.read_blob(&rec.outputs.get("files")?.digest).ok()?)
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
                    crate::store::Output { digest, size: bytes.len() as u64, media_type: BASE_FILES_MEDIA_TYPE.into(), diff_id: None };
                let rec = crate::store::Record {
                    version: crate::store::RECORD_VERSION,
                    drv,
                    kind: BASE_FILES_KIND.into(),
                    outputs: BTreeMap::from([("files".to_string(), output)]),
                    inputs: BTreeMap::from([("reference".to_string(), b.reference.clone())]),
                };
                let _ = s.put_record(&rec);
            }
        }
    }
    Ok(files)
}
