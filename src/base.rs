//! Base images: what an image starts from, per platform: its manifest digest, its config (the
//! child's config starts from it), its layers (reused byte for byte, never recompressed), and
//! where those blobs come from.
//!
//! Owns reading local bases: `oci:PATH[:TAG]` (an OCI image layout), `oci-archive:PATH` (a tar of
//! one) and `docker-archive:PATH` (`docker save`'s `manifest.json` format, legacy or OCI-style),
//! choosing the manifest for a platform from an index, and the mapping of Docker media types to
//! OCI ones. Registry bases are resolved through [`crate::registry`] into the same [`BaseImage`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::hash::Sha256;
use crate::image::{INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_INDEX: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

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
}

/// Where a base image's blobs are read from (never part of any hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobSource {
    /// A directory of `<hex>` files (an OCI layout's `blobs/sha256`).
    Dir(PathBuf),
    /// Members of a tar archive, by digest.
    Archive { path: PathBuf, members: BTreeMap<Sha256, String> },
    /// A registry repository (`REGISTRY/REPO`), and the registries spoken to over plain HTTP.
    Registry { repo: String, insecure: Vec<String> },
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

/// OCI media type for a layer media type (Docker's become their OCI equivalents; bytes unchanged).
pub fn oci_layer_media_type(mt: &str) -> String {
    match mt {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar".into(),
        other => other.to_string(),
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
    reg: &'a dyn Fn() -> Result<&'a crate::registry::Registry, String>,
    repo: String,
    store: Option<&'a crate::store::Store>,
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
        let reg = (self.reg)().map_err(|message| BaseError::Unavailable { reference: self.reference.to_string(), message })?;
        let bytes = fetch(reg).map_err(|e| invalid(self.reference, e.to_string()))?;
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
/// `reg` makes the registry client when one is needed; with a pinned digest whose manifests
/// and config `store` holds, none is.
pub fn registry_base<'a>(
    reg: &'a dyn Fn() -> Result<&'a crate::registry::Registry, String>,
    store: Option<&'a crate::store::Store>,
    reference: &'a str,
    pinned: Option<&Sha256>,
    platform: &str,
    insecure: &[String],
) -> Result<BaseImage, BaseError> {
    let parsed = crate::registry::parse_reference(reference).map_err(|e| invalid(reference, e.to_string()))?;
    let repo = parsed.repo();
    let root = match pinned {
        Some(d) => serde_json::json!({"digest": d.to_string()}),
        None => {
            let reg = reg().map_err(|message| BaseError::Unavailable { reference: reference.to_string(), message })?;
            let f = reg.resolve(reference).map_err(|e| invalid(reference, e.to_string()))?;
            serde_json::json!({"digest": f.digest.to_string(), "mediaType": f.media_type})
        }
    };
    let mut blobs = RegistryBlobs { reference, reg, repo: repo.clone(), store };
    from_descriptor(reference, &mut blobs, &root, platform, BlobSource::Registry { repo, insecure: insecure.to_vec() })
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

fn digest_field(reference: &str, v: &Value) -> Result<Sha256, BaseError> {
    v.get("digest")
        .and_then(Value::as_str)
        .and_then(|d| d.parse::<Sha256>().ok())
        .ok_or_else(|| invalid(reference, "a descriptor has no valid sha256 `digest`"))
}

fn platform_of(v: &Value) -> String {
    let os = v.get("os").and_then(Value::as_str).unwrap_or("?");
    let arch = v.get("architecture").and_then(Value::as_str).unwrap_or("?");
    match v.get("variant").and_then(Value::as_str) {
        Some(var) => format!("{os}/{arch}/{var}"),
        None => format!("{os}/{arch}"),
    }
}

/// Pick the manifest for `platform` (`os/arch[/variant]`) starting at descriptor `root`, following
/// indexes; then read its config and layers.
fn from_descriptor(
    reference: &str,
    blobs: &mut dyn Blobs,
    root: &Value,
    platform: &str,
    source: BlobSource,
) -> Result<BaseImage, BaseError> {
    let mut desc = root.clone();
    for _ in 0..4 {
        let mt = desc.get("mediaType").and_then(Value::as_str).unwrap_or(MANIFEST_MEDIA_TYPE).to_string();
        let digest = digest_field(reference, &desc)?;
        let bytes = blobs.read_manifest(&digest)?;
        let doc = json(reference, "a manifest", &bytes)?;
        let mt = doc.get("mediaType").and_then(Value::as_str).map(str::to_string).unwrap_or(mt);
        if mt == INDEX_MEDIA_TYPE || mt == DOCKER_INDEX || doc.get("manifests").is_some() {
            let manifests = doc.get("manifests").and_then(Value::as_array).cloned().unwrap_or_default();
            let found = manifests.iter().find(|m| m.get("platform").map(platform_of).as_deref() == Some(platform)).or_else(|| {
                // `linux/arm64` also matches `linux/arm64/v8`.
                manifests.iter().find(|m| m.get("platform").map(platform_of).is_some_and(|p| p.starts_with(&format!("{platform}/"))))
            });
            match found {
                Some(m) => {
                    desc = m.clone();
                    continue;
                }
                None => {
                    let available: Vec<String> = manifests.iter().filter_map(|m| m.get("platform").map(platform_of)).collect();
                    return Err(BaseError::NoPlatform {
                        reference: reference.into(),
                        platform: platform.into(),
                        available: available.join(", "),
                    });
                }
            }
        }
        let config_desc = doc.get("config").ok_or_else(|| invalid(reference, "the manifest has no config"))?;
        let config_bytes = blobs.read(&digest_field(reference, config_desc)?)?;
        let config = json(reference, "the config", &config_bytes)?;
        let have = platform_of(&config);
        if have != platform && !have.starts_with(&format!("{platform}/")) && !platform.starts_with(&format!("{have}/")) {
            return Err(BaseError::NoPlatform { reference: reference.into(), platform: platform.into(), available: have });
        }
        return Ok(BaseImage {
            reference: reference.to_string(),
            manifest_digest: digest,
            layers: layers_of(reference, &doc, &config)?,
            config,
            source,
            files: BTreeMap::new(),
        });
    }
    Err(invalid(reference, "indexes nest too deeply"))
}

fn layers_of(reference: &str, manifest: &Value, config: &Value) -> Result<Vec<BaseLayer>, BaseError> {
    let layers = manifest.get("layers").and_then(Value::as_array).cloned().unwrap_or_default();
    let diff_ids: Vec<Sha256> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|d| d.as_str().and_then(|s| s.parse().ok())).collect())
        .unwrap_or_default();
    if diff_ids.len() != layers.len() {
        return Err(invalid(reference, format!("{} layers but {} diff_ids in its config", layers.len(), diff_ids.len())));
    }
    layers
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| {
            Ok(BaseLayer {
                digest: digest_field(reference, l)?,
                size: l.get("size").and_then(Value::as_u64).ok_or_else(|| invalid(reference, "a layer has no size"))?,
                media_type: oci_layer_media_type(l.get("mediaType").and_then(Value::as_str).unwrap_or("")),
                diff_id,
            })
        })
        .collect()
}

/// Choose the index entry named `tag` (or the only one).
fn pick_tagged(reference: &str, index: &Value, tag: Option<&str>) -> Result<Value, BaseError> {
    let manifests = index.get("manifests").and_then(Value::as_array).cloned().unwrap_or_default();
    let name = |m: &Value| m.pointer("/annotations/org.opencontainers.image.ref.name").and_then(Value::as_str).map(str::to_string);
    match tag {
        Some(t) => manifests.iter().find(|m| name(m).as_deref() == Some(t)).cloned().ok_or_else(|| BaseError::NoTag {
            reference: reference.into(),
            tag: t.into(),
            available: manifests.iter().filter_map(name).collect::<Vec<_>>().join(", "),
        }),
        None if manifests.len() == 1 => Ok(manifests[0].clone()),
        None => Err(invalid(reference, format!("it holds {} images; name one with `:TAG`", manifests.len()))),
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
    let index = json(reference, "index.json", &bytes)?;
    let root = pick_tagged(reference, &index, tag)?;
    let blob_dir = dir.join("blobs/sha256");
    let mut blobs = DirBlobs { reference, dir: blob_dir.clone() };
    from_descriptor(reference, &mut blobs, &root, platform, BlobSource::Dir(blob_dir))
}

/// `oci-archive:PATH`.
pub fn oci_archive(reference: &str, path: &Path, platform: &str) -> Result<BaseImage, BaseError> {
    let mut blobs = ArchiveBlobs::open(reference, path)?;
    let index = json(reference, "index.json", blobs.member("index.json")?)?;
    let root = pick_tagged(reference, &index, None)?;
    let members: BTreeMap<Sha256, String> = blobs
        .sizes
        .keys()
        .filter_map(|n| n.strip_prefix("blobs/sha256/").and_then(|h| Sha256::from_hex(h).ok()).map(|d| (d, n.clone())))
        .collect();
    let source = BlobSource::Archive { path: path.to_path_buf(), members };
    from_descriptor(reference, &mut blobs, &root, platform, source)
}

/// `docker-archive:PATH`: `manifest.json` names the config and layer files; layers of the legacy
/// format are uncompressed tars, identified by the sha256 of their bytes.
pub fn docker_archive(reference: &str, path: &Path, platform: &str) -> Result<BaseImage, BaseError> {
    let blobs = ArchiveBlobs::open(reference, path)?;
    let manifest = json(reference, "manifest.json", blobs.member("manifest.json")?)?;
    let entry = manifest
        .as_array()
        .and_then(|a| if a.len() == 1 { a.first() } else { None })
        .ok_or_else(|| invalid(reference, "manifest.json must describe exactly one image"))?;
    let config_name = entry.get("Config").and_then(Value::as_str).ok_or_else(|| invalid(reference, "manifest.json has no Config"))?;
    let config_bytes = blobs.member(config_name)?.to_vec();
    let config = json(reference, "the config", &config_bytes)?;
    let have = platform_of(&config);
    if have != platform && !have.starts_with(&format!("{platform}/")) {
        return Err(BaseError::NoPlatform { reference: reference.into(), platform: platform.into(), available: have });
    }
    let files: Vec<String> = entry
        .get("Layers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let diff_ids: Vec<Sha256> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|d| d.as_str().and_then(|s| s.parse().ok())).collect())
        .unwrap_or_default();
    if diff_ids.len() != files.len() {
        return Err(invalid(reference, format!("{} layers but {} diff_ids in its config", files.len(), diff_ids.len())));
    }
    let mut members = BTreeMap::new();
    let mut layers = Vec::new();
    for (file, diff_id) in files.iter().zip(diff_ids) {
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
    let manifest_bytes = crate::image::manifest_json(
        &crate::image::Descriptor::new(crate::image::CONFIG_MEDIA_TYPE, config_digest, config_bytes.len() as u64),
        &layers.iter().map(|l| crate::image::Descriptor::new(&l.media_type, l.digest, l.size)).collect::<Vec<_>>(),
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

/// Files of the base image's merged filesystem that compose reads: `/etc/passwd`, `/etc/group`
/// and the dpkg database (`/var/lib/dpkg/status`, `/var/lib/dpkg/status.d/*`). Layers are applied
/// in order, whiteouts (`.wh.NAME`, `.wh..wh..opq`) included.
/// `local` finds a layer already on disk (the store), so a registry base is not pulled again.
pub fn read_base_files(b: &BaseImage, local: &dyn Fn(&Sha256) -> Option<PathBuf>) -> Result<BTreeMap<String, Vec<u8>>, BaseError> {
    let wanted = |p: &str| p == "etc/passwd" || p == "etc/group" || p == "var/lib/dpkg/status" || p.starts_with("var/lib/dpkg/status.d/");
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for l in &b.layers {
        let io = |source| BaseError::Io {
            reference: b.reference.clone(),
            action: "read a layer of",
            path: PathBuf::from(l.digest.to_string()),
            source,
        };
        let raw: Box<dyn Read> = match &b.source {
            BlobSource::Dir(dir) => Box::new(BufReader::new(File::open(dir.join(l.digest.hex())).map_err(io)?)),
            BlobSource::Archive { path, members } => {
                let member = members.get(&l.digest).ok_or_else(|| invalid(&b.reference, format!("no member for layer {}", l.digest)))?;
                let f = File::open(path).map_err(io)?;
                let mut ar = tar::Archive::new(BufReader::new(f));
                let mut data = None;
                for e in ar.entries().map_err(io)? {
                    let mut e = e.map_err(io)?;
                    if e.path().map_err(io)?.to_string_lossy().trim_start_matches("./") == member.as_str() {
                        let mut v = Vec::new();
                        e.read_to_end(&mut v).map_err(io)?;
                        data = Some(v);
                        break;
                    }
                }
                Box::new(io::Cursor::new(data.ok_or_else(|| invalid(&b.reference, format!("no member `{member}`")))?))
            }
            BlobSource::Registry { .. } if local(&l.digest).is_some() => {
                let p = local(&l.digest).unwrap_or_default();
                Box::new(BufReader::new(File::open(&p).map_err(io)?))
            }
            BlobSource::Registry { repo, insecure } => {
                // Pulled once into a temporary file (verified), then read like a local layer.
                let reg = crate::ops::registry_client(insecure).map_err(|e| invalid(&b.reference, e.to_string()))?;
                let mut tmp = tempfile::tempfile().map_err(io)?;
                reg.blob(repo, &l.digest, Some(l.size), &mut tmp).map_err(|e| invalid(&b.reference, e.to_string()))?;
                use std::io::Seek;
                tmp.seek(io::SeekFrom::Start(0)).map_err(io)?;
                Box::new(BufReader::new(tmp))
            }
        };
        let reader: Box<dyn Read> = if l.media_type.ends_with("+gzip") {
            Box::new(flate2::read::GzDecoder::new(raw))
        } else if l.media_type.ends_with("+zstd") {
            Box::new(zstd::stream::read::Decoder::new(raw).map_err(io)?)
        } else {
            raw
        };
        let mut ar = tar::Archive::new(reader);
        for e in ar.entries().map_err(io)? {
            let mut e = e.map_err(io)?;
            let path = e.path().map_err(io)?.to_string_lossy().trim_start_matches("./").trim_end_matches('/').to_string();
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if name == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                files.retain(|k, _| !k.starts_with(&prefix));
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                let target = if dir.is_empty() { gone.to_string() } else { format!("{dir}/{gone}") };
                files.retain(|k, _| *k != target && !k.starts_with(&format!("{target}/")));
                continue;
            }
            if wanted(&path) && e.header().entry_type().is_file() {
                let mut v = Vec::new();
                e.read_to_end(&mut v).map_err(io)?;
                files.insert(path, v);
            }
        }
    }
    Ok(files)
}

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
