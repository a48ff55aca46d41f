//! Finished images and their exports.
//!
//! Owns gathering a finished image (every blob an export needs) from an executed plan, and
//! writing it out of the store: an OCI image layout
//! directory, an `oci-archive` tar (its `index.json` names the image `name:tag`), or a
//! `docker-archive` tar (`manifest.json` with `RepoTags` and the blobs under `blobs/sha256/`, the
//! paths `docker save` uses since Docker 25; loadable by `docker load` and `podman load`).
//!
//! Outputs are replaced atomically: written under a temporary name in the same directory, then
//! renamed into place. Exports into one output directory are serialised by a lock file in it
//! (`.compose-lock`), which also makes it safe to remove what killed exports left there
//! (`.compose-tmp-*`, `.compose-old-*`).
//!
//! An export never shares a file with the store (so writing into `out/` cannot damage the
//! store): blobs are copied, and only blobs the store has verified are. To keep a no-op build
//! from copying the whole image again, the store remembers what was written at each output path
//! and each file's identity (see `store`); an output whose files are all still as written is
//! left alone, and a changed image takes its unchanged blobs from the previous export (hard
//! links inside `out/`), copying only the new ones.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::exec::Executed;
use crate::hash::Sha256;
use crate::oci::{canonical_json, index_json, Descriptor, REF_NAME};
use crate::plan::{DrvKind, Plan};
use crate::store::{Record, Store, StoreError};
use petgraph::graph::NodeIndex;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Io(#[from] crate::util::IoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store's record of {name} is damaged: {what}; run `compose cache verify --repair`")]
    Damaged { name: String, what: String },
    #[error("a docker-archive holds one platform, but image `{name}` has {count}; use --format oci or oci-archive")]
    DockerArchiveMultiPlatform { name: String, count: usize },
    #[error("blob {0} is missing from the store")]
    MissingBlob(Sha256),
    #[error("blob {0} in the store is damaged or missing (it was removed); build again to make or fetch it anew")]
    DamagedBlob(Sha256),
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> ImageError + 'p {
    crate::util::io_err(action, path)
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

/// Gather what an export of planned image `root` needs from the executed records: every layer
/// its manifests name (the base's included, read back from the store), configs, manifests and
/// the index.
pub fn finished(plan: &Plan, ex: &Executed, store: &Store, name: &str, tag: &str, root: NodeIndex) -> Result<Finished, ImageError> {
    let damaged = |n: NodeIndex, what: String| ImageError::Damaged { name: plan.graph[n].name.clone(), what };
    let rec = |n: NodeIndex| ex.records.get(&n).ok_or_else(|| damaged(n, "it has no record".into()));
    let output = |n: NodeIndex, r: &Record, key: &str| r.outputs.get(key).cloned().ok_or_else(|| damaged(n, format!("no output `{key}`")));
    let mut blobs: Vec<(Sha256, u64)> = Vec::new();
    let mut platforms = Vec::new();
    let mut epoch = crate::plan::DEFAULT_EPOCH;
    let images: Vec<NodeIndex> = match &plan.graph[root].kind {
        DrvKind::Index(ix) => ix.images.clone(),
        _ => vec![root],
    };
    for &i in &images {
        let DrvKind::Image(img) = &plan.graph[i].kind else { continue };
        epoch = img.epoch;
        let r = rec(i)?;
        let config = output(i, r, "config")?;
        let manifest = output(i, r, "manifest")?;
        let doc: crate::oci::ManifestDoc =
            crate::oci::read("the manifest", &store.read_blob(&manifest.digest)?).map_err(|e| damaged(i, e.to_string()))?;
        let mut layer_digests = Vec::new();
        for l in &doc.layers {
            blobs.push((l.digest, l.size));
            layer_digests.push(l.digest);
        }
        blobs.push((config.digest, config.size));
        blobs.push((manifest.digest, manifest.size));
        platforms.push((config.digest, layer_digests));
    }
    let root_desc = match &plan.graph[root].kind {
        DrvKind::Index(_) => {
            let o = output(root, rec(root)?, "index")?;
            blobs.push((o.digest, o.size));
            Descriptor::new(crate::oci::INDEX_MEDIA_TYPE, o.digest, o.size)
        }
        DrvKind::Image(img) => {
            let o = output(root, rec(root)?, "manifest")?;
            let mut d = Descriptor::new(crate::oci::MANIFEST_MEDIA_TYPE, o.digest, o.size);
            d.platform = Some(crate::oci::Platform::of(&img.platform));
            d
        }
        _ => return Err(damaged(root, "it is not an image".into())),
    };
    let mut seen = std::collections::HashSet::new();
    blobs.retain(|(d, _)| seen.insert(*d));
    Ok(Finished { name: name.to_string(), tag: tag.to_string(), root: root_desc, blobs, platforms, epoch })
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    OciArchive,
    DockerArchive,
}

/// What compose wrote at an output path, remembered in the store: what it was (`key`) and each
/// file's identity then, by path relative to the output.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ExportState {
    key: String,
    files: std::collections::BTreeMap<String, String>,
}

/// The identity of the regular file at `p`, if it is one.
fn file_identity(p: &Path) -> Option<String> {
    fs::symlink_metadata(p).ok().filter(|m| m.file_type().is_file()).map(|m| crate::util::file_identity(&m))
}

/// Write `img` into `out_dir` in `format`; returns the path written.
pub fn export(store: &Store, img: &Finished, out_dir: &Path, format: Format) -> Result<PathBuf, ImageError> {
    fs::create_dir_all(out_dir).map_err(io_err("create output directory", out_dir))?;
    let lock_path = out_dir.join(".compose-lock");
    let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err("open", &lock_path))?;
    lock.lock().map_err(io_err("lock", &lock_path))?;
    remove_leftovers(out_dir, &img.name);
    for (d, size) in &img.blobs {
        match store.checked_size(d) {
            Some(n) if n == *size => {}
            Some(_) => return Err(ImageError::MissingBlob(*d)),
            None => return Err(ImageError::DamagedBlob(*d)),
        }
    }
    let tmp_prefix = format!(".compose-tmp-{}.", img.name);
    match format {
        Format::Oci => {
            let dest = out_dir.join(&img.name);
            let key = format!("oci {} {} {}", img.root.digest, img.tag, img.epoch);
            let previous: Option<ExportState> = store.export_state(&dest).and_then(|b| serde_json::from_slice(&b).ok());
            let mut wanted: Vec<String> = img.blobs.iter().map(|(d, _)| format!("blobs/sha256/{}", d.hex())).collect();
            wanted.extend(["index.json".to_string(), "oci-layout".to_string()]);
            if let Some(prev) = &previous {
                let intact = prev.key == key
                    && wanted
                        .iter()
                        .all(|f| prev.files.get(f).is_some_and(|id| file_identity(&dest.join(f)).as_deref() == Some(id.as_str())));
                if intact {
                    return Ok(dest);
                }
            }
            let tmp = tempfile::Builder::new()
                .prefix(&tmp_prefix)
                .tempdir_in(out_dir)
                .map_err(io_err("create a temporary directory in", out_dir))?;
            write_layout(store, img, tmp.path(), &dest, previous.as_ref())?;
            replace_dir(tmp.keep(), &dest, &img.name)?;
            let files = wanted.into_iter().filter_map(|f| file_identity(&dest.join(&f)).map(|id| (f, id))).collect();
            remember(store, &dest, ExportState { key, files });
            Ok(dest)
        }
        Format::OciArchive | Format::DockerArchive => {
            let docker = format == Format::DockerArchive;
            if docker && img.platforms.len() != 1 {
                return Err(ImageError::DockerArchiveMultiPlatform { name: img.name.clone(), count: img.platforms.len() });
            }
            let dest = out_dir.join(format!("{}.tar", img.name));
            let key = format!("{format:?} {} {}:{} {}", img.root.digest, img.name, img.tag, img.epoch);
            let previous: Option<ExportState> = store.export_state(&dest).and_then(|b| serde_json::from_slice(&b).ok());
            if previous
                .is_some_and(|p| p.key == key && p.files.get("").is_some_and(|id| file_identity(&dest).as_deref() == Some(id.as_str())))
            {
                return Ok(dest);
            }
            let tmp = tempfile::Builder::new()
                .prefix(&tmp_prefix)
                .suffix(".tar")
                .tempfile_in(out_dir)
                .map_err(io_err("create a temporary file in", out_dir))?;
            {
                let f = tmp.reopen().map_err(io_err("open", tmp.path()))?;
                write_archive(store, img, BufWriter::with_capacity(1 << 20, f), docker).map_err(io_err("write", &dest))?;
            }
            set_mode(tmp.path(), 0o644)?;
            tmp.persist(&dest)
                .map_err(|e| ImageError::Io(crate::util::IoError { action: "write", path: dest.clone(), source: e.error }))?;
            let files = file_identity(&dest).map(|id| (String::new(), id)).into_iter().collect();
            remember(store, &dest, ExportState { key, files });
            Ok(dest)
        }
    }
}

/// Remember what was written at `dest`. Best effort: without it, the next export writes again.
fn remember(store: &Store, dest: &Path, state: ExportState) {
    if let Ok(bytes) = serde_json::to_vec(&state) {
        let _ = store.set_export_state(dest, &bytes);
    }
}

/// Remove what killed exports left in `out_dir`. Called with the directory's lock held, so no
/// export is writing there. Also the names compose used before (`.old.*`, `.NAME.xxxxxx`).
fn remove_leftovers(out_dir: &Path, name: &str) {
    let legacy = format!(".{name}.");
    for e in fs::read_dir(out_dir).into_iter().flatten().flatten() {
        let file_name = e.file_name();
        let Some(n) = file_name.to_str() else { continue };
        let legacy_tmp = n.strip_prefix(&legacy).is_some_and(|rest| {
            let rest = rest.strip_suffix(".tar").unwrap_or(rest);
            rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        if n.starts_with(".compose-tmp-") || n.starts_with(".compose-old-") || n.starts_with(".old.") || legacy_tmp {
            let p = e.path();
            if fs::remove_file(&p).is_err() {
                let _ = fs::remove_dir_all(&p);
            }
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

/// Write the layout of `img` into `dir`: each blob from the previous export at `dest` when it
/// is still as compose wrote it there (a hard link within `out/`), else copied from the store.
fn write_layout(store: &Store, img: &Finished, dir: &Path, dest: &Path, previous: Option<&ExportState>) -> Result<(), ImageError> {
    set_mode(dir, 0o755)?;
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
    for (d, _) in &img.blobs {
        let rel = format!("blobs/sha256/{}", d.hex());
        let dst = dir.join(&rel);
        let old = dest.join(&rel);
        let reusable = previous.and_then(|p| p.files.get(&rel)).is_some_and(|id| file_identity(&old).as_deref() == Some(id.as_str()));
        if reusable && fs::hard_link(&old, &dst).is_ok() {
            continue;
        }
        fs::copy(store.blob_path(d), &dst).map_err(io_err("copy blob to", &dst))?;
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
fn replace_dir(new: PathBuf, dest: &Path, name: &str) -> Result<(), ImageError> {
    if fs::symlink_metadata(dest).is_ok() {
        let parent = dest.parent().unwrap_or(Path::new("."));
        let old = tempfile::Builder::new()
            .prefix(&format!(".compose-old-{name}."))
            .tempdir_in(parent)
            .map_err(io_err("create a temporary directory in", parent))?
            .keep();
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

/// What a push did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    pub reference: String,
    pub digest: String,
    pub uploaded: usize,
    pub mounted: usize,
    pub existing: usize,
    pub uploaded_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored index of the image is damaged")]
    Index(#[source] crate::oci::DocError),
}

/// Push a finished image to `target`: its blobs from the store (those of repositories in
/// `mount_from` mounted rather than uploaded), then its manifests, children first, with their
/// exact bytes. When `target` already names this digest, one request and nothing sent.
pub fn push(
    store: &Store,
    fin: &Finished,
    target: &str,
    reg: &crate::registry::Registry,
    mount_from: &[String],
) -> Result<Pushed, PushError> {
    let is_index = fin.root.media_type == crate::oci::INDEX_MEDIA_TYPE;
    if let Ok(current) = reg.resolve(target) {
        if current.digest == fin.root.digest {
            return Ok(Pushed {
                reference: target.to_string(),
                digest: current.digest.to_string(),
                uploaded: 0,
                mounted: 0,
                // Blobs, not counting the manifests (and index).
                existing: fin.blobs.len().saturating_sub(1 + if is_index { fin.platforms.len() } else { 0 }),
                uploaded_bytes: 0,
            });
        }
    }
    let mut manifests: Vec<(Sha256, String, Vec<u8>)> = Vec::new();
    let root = store.read_blob(&fin.root.digest)?;
    if is_index {
        let index: crate::oci::IndexDoc = crate::oci::read("the index", &root).map_err(PushError::Index)?;
        for m in &index.manifests {
            manifests.push((m.digest, crate::oci::MANIFEST_MEDIA_TYPE.to_string(), store.read_blob(&m.digest)?));
        }
    }
    manifests.push((fin.root.digest, fin.root.media_type.clone(), root));
    let blobs: Vec<(Sha256, u64, PathBuf)> = fin
        .blobs
        .iter()
        .filter(|(d, _)| !manifests.iter().any(|(m, _, _)| m == d))
        .map(|(d, size)| (*d, *size, store.blob_path(d)))
        .collect();
    let report = reg.push(target, &blobs, &manifests, mount_from)?;
    Ok(Pushed {
        reference: target.to_string(),
        digest: report.digest.to_string(),
        uploaded: report.uploaded,
        mounted: report.mounted,
        existing: report.existing,
        uploaded_bytes: report.uploaded_bytes,
    })
}
