//! OCI image metadata and exports.
//!
//! Owns the exact bytes of image configs, manifests and indexes (written from our own structs in
//! canonical JSON: keys sorted, no insignificant whitespace; `oci-spec`'s types use HashMaps and
//! are for reading only), and writing finished images out of the store: an OCI image layout
//! directory, an `oci-archive` tar (its `index.json` names the image `name:tag`), or a
//! `docker-archive` tar (`manifest.json` with `RepoTags` and the blobs under `blobs/sha256/`, the
//! paths `docker save` uses since Docker 25; loadable by `docker load` and `podman load`).
//!
//! Outputs are replaced atomically: written under a temporary name in the same directory, then
//! renamed into place. Blobs are hard-linked from the store when it shares a filesystem with the
//! output, copied otherwise.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::hash::Sha256;
use crate::store::Store;

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("failed to {action} `{path}`")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a docker-archive holds one platform, but image `{name}` has {count}; use --format oci or oci-archive")]
    DockerArchiveMultiPlatform { name: String, count: usize },
    #[error("blob {0} is missing from the store")]
    MissingBlob(Sha256),
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> ImageError + 'p {
    move |source| ImageError::Io { action, path: path.to_path_buf(), source }
}

/// Serialize a JSON value canonically: object keys sorted by bytes, no whitespace. Independent of
/// serde_json's `preserve_order` feature (which another crate could switch on).
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Strings and scalars: serde_json's own encoding is deterministic.
                out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
                out.push(b':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(serde_json::to_string(other).unwrap_or_default().as_bytes()),
    }
}

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    fn to_json(&self) -> Value {
        let mut v = json!({"architecture": self.architecture, "os": self.os});
        if let Some(var) = &self.variant {
            v["variant"] = json!(var);
        }
        v
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Sha256,
    pub size: u64,
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Sha256, size: u64) -> Descriptor {
        Descriptor { media_type: media_type.into(), digest, size, platform: None, annotations: BTreeMap::new() }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.size});
        if let Some(p) = &self.platform {
            v["platform"] = p.to_json();
        }
        if !self.annotations.is_empty() {
            v["annotations"] = json!(self.annotations);
        }
        v
    }
}

/// Everything that goes into an image config.
#[derive(Debug, Clone, Default)]
pub struct ConfigFields {
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub exposed: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// RFC 3339 UTC time of a Unix timestamp (no external time crate needed for whole seconds).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// The image config blob. With a `base` config, the image starts from it as Docker does: `env`
/// adds or replaces variables by name, `entrypoint` resets `Cmd` unless `cmd` is also given, every
/// other field the spec sets replaces the base's, and what the spec leaves alone (including fields
/// compose does not model, such as `Healthcheck`) is inherited. `diff_ids` are all of the image's,
/// base first; `history` holds this image's own entries, appended to the base's.
pub fn config_json(
    platform: &Platform,
    fields: &ConfigFields,
    base: Option<&Value>,
    diff_ids: &[Sha256],
    history: &[String],
    epoch: u64,
) -> Vec<u8> {
    let created = rfc3339(epoch);
    let mut config = base.and_then(|b| b.get("config")).and_then(Value::as_object).cloned().unwrap_or_default();
    if !fields.env.is_empty() {
        let mut env: Vec<String> = config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        for kv in &fields.env {
            let name = kv.split('=').next().unwrap_or(kv);
            match env.iter_mut().find(|e| e.split('=').next() == Some(name)) {
                Some(slot) => *slot = kv.clone(),
                None => env.push(kv.clone()),
            }
        }
        config.insert("Env".into(), json!(env));
    }
    if let Some(e) = &fields.entrypoint {
        config.insert("Entrypoint".into(), json!(e));
        if fields.cmd.is_none() {
            config.remove("Cmd");
        }
    }
    if let Some(c) = &fields.cmd {
        config.insert("Cmd".into(), json!(c));
    }
    if let Some(w) = &fields.workdir {
        config.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &fields.user {
        config.insert("User".into(), json!(u));
    }
    if !fields.exposed.is_empty() {
        let m: BTreeMap<&str, Value> = fields.exposed.iter().map(|p| (p.as_str(), json!({}))).collect();
        config.insert("ExposedPorts".into(), json!(m));
    }
    if !fields.volumes.is_empty() {
        let m: BTreeMap<&str, Value> = fields.volumes.iter().map(|p| (p.as_str(), json!({}))).collect();
        config.insert("Volumes".into(), json!(m));
    }
    if !fields.labels.is_empty() {
        config.insert("Labels".into(), json!(fields.labels));
    }
    if let Some(s) = &fields.stop_signal {
        config.insert("StopSignal".into(), json!(s));
    }
    let mut all_history: Vec<Value> = base.and_then(|b| b.get("history")).and_then(Value::as_array).cloned().unwrap_or_default();
    all_history.extend(history.iter().map(|h| json!({"created": created, "created_by": h})));
    let mut v = json!({
        "created": created,
        "architecture": platform.architecture,
        "os": platform.os,
        "config": Value::Object(config),
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "history": all_history,
    });
    if let Some(var) = &platform.variant {
        v["variant"] = json!(var);
    }
    canonical_json(&v)
}

pub fn manifest_json(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.to_json(),
        "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
    }))
}

pub fn index_json(manifests: &[Descriptor]) -> Vec<u8> {
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
    }))
}

/// A finished image, ready to export.
#[derive(Debug, Clone)]
pub struct Finished {
    pub name: String,
    pub tag: String,
    /// The manifest (one platform) or index (several) that names the image.
    pub root: Descriptor,
    /// Every blob the image needs, root included, without duplicates, in a fixed order.
    pub blobs: Vec<(Sha256, u64)>,
    /// Per platform: (config, layers), for docker-archive's `manifest.json`.
    pub platforms: Vec<(Sha256, Vec<Sha256>)>,
    pub epoch: u64,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    OciArchive,
    DockerArchive,
}

/// Write `img` into `out_dir` in `format`; returns the path written.
pub fn export(store: &Store, img: &Finished, out_dir: &Path, format: Format) -> Result<PathBuf, ImageError> {
    fs::create_dir_all(out_dir).map_err(io_err("create output directory", out_dir))?;
    for (d, _) in &img.blobs {
        if !store.has_blob(d) {
            return Err(ImageError::MissingBlob(*d));
        }
    }
    match format {
        Format::Oci => {
            let dest = out_dir.join(&img.name);
            let tmp = tempfile::Builder::new()
                .prefix(&format!(".{}.", img.name))
                .tempdir_in(out_dir)
                .map_err(io_err("create a temporary directory in", out_dir))?;
            write_layout(store, img, tmp.path())?;
            replace_dir(tmp.keep(), &dest)?;
            Ok(dest)
        }
        Format::OciArchive | Format::DockerArchive => {
            let docker = format == Format::DockerArchive;
            if docker && img.platforms.len() != 1 {
                return Err(ImageError::DockerArchiveMultiPlatform { name: img.name.clone(), count: img.platforms.len() });
            }
            let dest = out_dir.join(format!("{}.tar", img.name));
            let tmp = tempfile::Builder::new()
                .prefix(&format!(".{}.", img.name))
                .suffix(".tar")
                .tempfile_in(out_dir)
                .map_err(io_err("create a temporary file in", out_dir))?;
            {
                let f = tmp.reopen().map_err(io_err("open", tmp.path()))?;
                write_archive(store, img, BufWriter::with_capacity(1 << 20, f), docker).map_err(io_err("write", &dest))?;
            }
            set_mode(tmp.path(), 0o644)?;
            tmp.persist(&dest).map_err(|e| ImageError::Io { action: "write", path: dest.clone(), source: e.error })?;
            Ok(dest)
        }
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(io_err("set permissions of", p))
}

/// The layout's `index.json`. A layout directory names the image by its tag (the contract); an
/// archive by `name:tag`, so that `podman load` of it gives `localhost/name:tag` rather than
/// `localhost/tag:latest`.
fn layout_index(img: &Finished, full_name: bool) -> Vec<u8> {
    let mut root = img.root.clone();
    let reference = if full_name { format!("{}:{}", img.name, img.tag) } else { img.tag.clone() };
    root.annotations.insert(REF_NAME.into(), reference);
    index_json(&[root])
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn docker_manifest(img: &Finished) -> Vec<u8> {
    let entries: Vec<Value> = img
        .platforms
        .iter()
        .map(|(config, layers)| {
            json!({
                "Config": format!("blobs/sha256/{}", config.hex()),
                "RepoTags": [format!("{}:{}", img.name, img.tag)],
                "Layers": layers.iter().map(|l| format!("blobs/sha256/{}", l.hex())).collect::<Vec<_>>(),
            })
        })
        .collect();
    canonical_json(&Value::Array(entries))
}

fn write_layout(store: &Store, img: &Finished, dir: &Path) -> Result<(), ImageError> {
    set_mode(dir, 0o755)?;
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
    for (d, _) in &img.blobs {
        let src = store.blob_path(d);
        let dst = blobs.join(d.hex());
        if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(io_err("copy blob to", &dst))?;
        }
    }
    let write = |name: &str, bytes: &[u8]| -> Result<(), ImageError> {
        let p = dir.join(name);
        fs::write(&p, bytes).map_err(io_err("write", &p))?;
        set_mode(&p, 0o644)
    };
    write("oci-layout", OCI_LAYOUT)?;
    write("index.json", &layout_index(img, false))?;
    Ok(())
}

/// Replace directory `dest` by `new` (both in the same directory), never leaving `dest` half-written.
fn replace_dir(new: PathBuf, dest: &Path) -> Result<(), ImageError> {
    if fs::symlink_metadata(dest).is_ok() {
        let parent = dest.parent().unwrap_or(Path::new("."));
        let old =
            tempfile::Builder::new().prefix(".old.").tempdir_in(parent).map_err(io_err("create a temporary directory in", parent))?.keep();
        let old_dest = old.join("x");
        fs::rename(dest, &old_dest).map_err(io_err("move aside", dest))?;
        fs::rename(&new, dest).map_err(io_err("move into place", dest))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(&new, dest).map_err(io_err("move into place", dest))?;
    }
    Ok(())
}

/// A deterministic tar of the layout: sorted entries, fixed owner, modes and mtime.
fn write_archive<W: Write>(store: &Store, img: &Finished, sink: W, docker: bool) -> io::Result<()> {
    let mut t = tar::Builder::new(sink);
    t.follow_symlinks(false);
    let header = |size: u64, mode: u32, kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(img.epoch);
        h
    };
    for d in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0, 0o755, tar::EntryType::Directory);
        t.append_data(&mut h, d, io::empty())?;
    }
    let mut blobs = img.blobs.clone();
    blobs.sort();
    for (d, size) in &blobs {
        let f = File::open(store.blob_path(d))?;
        let mut h = header(*size, 0o644, tar::EntryType::Regular);
        t.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), f)?;
    }
    // A docker-archive is `manifest.json` and the blobs only: with an `index.json` beside it,
    // podman would read it as an OCI archive and ignore `RepoTags`.
    let mut files: Vec<(&str, Vec<u8>)> = if docker {
        vec![("manifest.json", docker_manifest(img))]
    } else {
        vec![("index.json", layout_index(img, true)), ("oci-layout", OCI_LAYOUT.to_vec())]
    };
    files.sort_by(|a, b| a.0.cmp(b.0));
    for (name, bytes) in files {
        let mut h = header(bytes.len() as u64, 0o644, tar::EntryType::Regular);
        t.append_data(&mut h, name, bytes.as_slice())?;
    }
    let mut sink = t.into_inner()?;
    sink.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(315_532_800), "1980-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn canonical_json_sorts_keys_without_whitespace() {
        let v = json!({"b": 1, "a": {"d": [1, "x"], "c": null}});
        assert_eq!(canonical_json(&v), br#"{"a":{"c":null,"d":[1,"x"]},"b":1}"#.to_vec());
    }
}
