//! Trees on disk made during a build: an image's root filesystem unpacked from its layers (OCI
//! whiteouts applied), cached in the store by manifest digest; a step's output unpacked; a
//! directory captured as a normalised layer (byte order, numeric owners, mtimes at the epoch); and
//! the entries a `copy from=` takes out of such a tree.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::{output, BuildError};
use crate::hash::Sha256;
use crate::oci;
use crate::plan::{Content, CopyFrom, EntryKind, PlannedEntry};
use crate::store::{Output, Record, Store};

/// Where an image's unpacked root filesystems are kept, by manifest digest.
fn rootfs_cache(store: &Store) -> PathBuf {
    store.dir().join("rootfs")
}

/// An I/O failure on `path` as a build error: `what` ("cannot read") and the path.
pub(super) fn io_error(path: &Path, what: &str) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |source| BuildError::Tree { message: format!("{what} `{}`", path.display()), source }
}

/// The root filesystem of the image whose record is `image`, unpacked (read-only by convention:
/// steps run over it through an overlay). Made once per manifest and kept in the store, with a
/// seal ([`seal`]) of what it held when made: a tree changed since (by hand, by another program)
/// is unpacked again from the store's verified blobs before it is used.
pub fn image_rootfs(store: &Store, image: &Record) -> Result<PathBuf, BuildError> {
    let manifest = output(image, "manifest")?;
    let parent = rootfs_cache(store);
    fs::create_dir_all(&parent).map_err(io_error(&parent, "cannot create"))?;
    let dir = parent.join(manifest.digest.hex());
    let seal_path = parent.join(format!("{}.seal", manifest.digest.hex()));
    // One build at a time checks, removes or makes this tree; the others wait, then use it.
    let lock_path = parent.join(format!("{}.lock", manifest.digest.hex()));
    let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_error(&lock_path, "cannot open"))?;
    lock.lock().map_err(io_error(&lock_path, "cannot lock"))?;
    if dir.symlink_metadata().is_ok() {
        let kept = fs::read_to_string(&seal_path).ok();
        if kept.is_some() && kept == seal(&dir).ok() {
            return Ok(dir);
        }
        // Changed since it was unpacked, or never sealed: away with it.
        let trash = store.tmp_dir().join(format!("rootfs-{}-{}", manifest.digest.hex(), std::process::id()));
        fs::rename(&dir, &trash).map_err(io_error(&dir, "cannot move away"))?;
        let _ = fs::remove_file(&seal_path);
        remove_tree(&trash);
    }
    let doc: oci::ManifestDoc = oci::read("the manifest", &store.read_blob(&manifest.digest)?)
        .map_err(|_| BuildError::MissingOutput(format!("image {}", manifest.digest), "manifest"))?;
    let tmp = tempfile::Builder::new().prefix(".unpack-").tempdir_in(&parent).map_err(io_error(&parent, "cannot create a directory in"))?;
    let root = tmp.path().join("rootfs");
    fs::create_dir(&root).map_err(io_error(&root, "cannot create"))?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).map_err(io_error(&root, "cannot set the mode of"))?;
    for l in &doc.layers {
        if !store.has_blob(&l.digest) {
            return Err(BuildError::MissingOutput(format!("layer {} of image {}", l.digest, manifest.digest), "blob"));
        }
        let blob = store.blob_path(&l.digest);
        unpack(&blob, l.media_type.as_deref().unwrap_or(crate::layer::GZIP_MEDIA_TYPE), &root)?;
    }
    fs::rename(&root, &dir).map_err(io_error(&dir, "cannot move an unpacked image to"))?;
    let sealed = seal(&dir).map_err(io_error(&dir, "cannot read"))?;
    crate::util::write_atomic(&seal_path, sealed.as_bytes(), 0o600, Some(&store.tmp_dir()))
        .map_err(|e| io_error(&seal_path, "cannot write")(e.source))?;
    Ok(dir)
}

/// The identity of every entry of tree `dir`: its path, type and mode, owner, size, inode, link
/// count, and modification and change times in nanoseconds, hashed in walk order. Any change to
/// the tree (a write, a `chmod`, an entry added, removed or renamed) changes an entry's change
/// time or the entries, and so the seal; reading does not.
pub fn seal(dir: &Path) -> io::Result<String> {
    let mut h = blake3::Hasher::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name().follow_links(false) {
        let e = e.map_err(io::Error::from)?;
        let m = e.metadata().map_err(io::Error::from)?;
        h.update(e.path().strip_prefix(dir).unwrap_or(e.path()).as_os_str().as_encoded_bytes());
        h.update(&[0]);
        for v in [
            u64::from(m.mode()),
            u64::from(m.uid()),
            u64::from(m.gid()),
            m.size(),
            m.ino(),
            m.nlink(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.ctime() as u64,
            m.ctime_nsec() as u64,
        ] {
            h.update(&v.to_le_bytes());
        }
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Remove tree `p`, whatever modes what ran in it left.
fn remove_tree(p: &Path) {
    if fs::remove_dir_all(p).is_err() {
        for e in walkdir::WalkDir::new(p).follow_links(false).into_iter().flatten() {
            if e.file_type().is_dir() {
                let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o700));
            }
        }
        let _ = fs::remove_dir_all(p);
    }
}

/// Unpack the layer or tree blob `blob` into `dest`, applying OCI whiteouts. Entries that would
/// leave `dest` are refused (by the tar reader's checks and ours).
pub fn unpack(blob: &Path, media_type: &str, dest: &Path) -> Result<(), BuildError> {
    let f = File::open(blob).map_err(io_error(blob, "cannot open"))?;
    let reader = crate::layer::decoder(media_type, BufReader::with_capacity(256 * 1024, f)).map_err(io_error(blob, "cannot read"))?;
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    let bad = |what: String| BuildError::Tree { message: what, source: io::Error::new(io::ErrorKind::InvalidData, "refused") };
    for entry in ar.entries().map_err(io_error(blob, "cannot read"))? {
        let mut entry = entry.map_err(io_error(blob, "cannot read"))?;
        let path = entry.path().map_err(io_error(blob, "cannot read"))?.into_owned();
        let mut rel = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(p) => rel.push(p),
                Component::CurDir | Component::RootDir => {}
                _ => return Err(bad(format!("`{}` in `{}` leaves the root", path.display(), blob.display()))),
            }
        }
        let Some(name) = rel.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        // The parent as the image itself sees it: symlinks inside the tree are followed within it
        // (an absolute target is re-rooted at `dest`), so nothing is ever written or removed
        // outside `dest`.
        let parent_rel = rel.parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let parent = resolve_in(dest, &parent_rel);
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if hidden == ".wh..opq" {
                // Opaque: what lower layers put in this directory is gone.
                if let Ok(rd) = fs::read_dir(&parent) {
                    for e in rd.flatten() {
                        remove(&e.path());
                    }
                }
            } else if !hidden.is_empty() && hidden != "." && hidden != ".." {
                remove(&parent.join(hidden));
            }
            continue;
        }
        fs::create_dir_all(&parent).map_err(io_error(&parent, "cannot create"))?;
        // A file replacing a directory (or the other way round) replaces it whole.
        let target = parent.join(&name);
        let kind = entry.header().entry_type();
        if let Ok(meta) = fs::symlink_metadata(&target) {
            if meta.is_dir() != kind.is_dir() || meta.file_type().is_symlink() || kind.is_hard_link() {
                remove(&target);
            }
        }
        if kind.is_hard_link() {
            let link = entry.link_name().map_err(io_error(blob, "cannot read"))?.map(|l| l.to_string_lossy().into_owned());
            let Some(link) = link else { return Err(bad(format!("hard link `{}` in `{}` has no target", path.display(), blob.display()))) };
            let source = resolve_in(dest, &link);
            fs::hard_link(&source, &target).map_err(io_error(&target, "cannot link"))?;
            continue;
        }
        entry.unpack(&target).map_err(io_error(&target, "cannot unpack"))?;
    }
    Ok(())
}

fn remove(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// The entries of directory `dir` (not itself), byte-sorted by path, as paths below `/`: modes,
/// numeric owners and file sizes as found; hard links become separate regular files. Devices,
/// FIFOs and sockets are refused.
pub fn scan_tree(dir: &Path) -> Result<Vec<PlannedEntry>, BuildError> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false).follow_root_links(false) {
        let e = e.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| dir.to_path_buf());
            io_error(&path, "cannot read")(e.into())
        })?;
        let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
        let Some(rel) = rel.to_str() else {
            return Err(BuildError::Tree {
                message: format!("`{}` has a name that is not UTF-8", e.path().display()),
                source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"),
            });
        };
        let meta = e.path().symlink_metadata().map_err(io_error(e.path(), "cannot read"))?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let target = fs::read_link(e.path()).map_err(io_error(e.path(), "cannot read the link"))?;
            EntryKind::Symlink { target: target.to_string_lossy().into_owned() }
        } else if ft.is_file() {
            EntryKind::File { size: meta.len(), content: Content::Tree { abs: e.path().to_path_buf() } }
        } else {
            return Err(BuildError::Tree {
                message: format!("`/{rel}` is a device, FIFO or socket; a tree holds files, directories and symlinks"),
                source: io::Error::new(io::ErrorKind::InvalidData, "special file"),
            });
        };
        let mode = if ft.is_symlink() { 0o777 } else { meta.mode() & 0o7777 };
        out.push(PlannedEntry { path: format!("/{rel}"), kind, mode, uid: meta.uid(), gid: meta.gid() });
    }
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}

/// Resolve `path` (absolute, inside the tree at `root`) following symlinks as the tree's own root
/// would, never leaving it.
pub fn resolve_in(root: &Path, path: &str) -> PathBuf {
    let mut parts: Vec<String> = Vec::new();
    let mut todo: Vec<String> = path.split('/').filter(|p| !p.is_empty()).rev().map(str::to_owned).collect();
    let mut links = 0;
    while let Some(p) = todo.pop() {
        match p.as_str() {
            "." => continue,
            ".." => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(parts.iter());
        candidate.push(&p);
        match fs::read_link(&candidate) {
            Ok(target) if links < 40 => {
                links += 1;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    parts.clear();
                }
                todo.extend(t.split('/').filter(|x| !x.is_empty()).rev().map(str::to_owned));
            }
            _ => parts.push(p),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(parts.iter());
    out
}

/// The entries a `copy from=` adds, from the tree at `root` (a step's output, or an image's root
/// filesystem): as a local `copy` would, a directory's contents go into `to`; modes are kept
/// unless the operation sets them; owners are the operation's.
/// `shown` is the source path as the spec wrote it, for messages.
pub fn copy_entries(c: &CopyFrom, root: &Path, what: &str, shown: &str) -> Result<Vec<PlannedEntry>, BuildError> {
    let abs = if c.src.is_empty() { root.to_path_buf() } else { resolve_in(root, &c.src) };
    let meta = abs.symlink_metadata().map_err(|source| BuildError::Tree { message: format!("{what} has no `{shown}`"), source })?;
    let mut out = Vec::new();
    let join = |dir: &str, rel: &str| if dir == "/" { format!("/{rel}") } else { format!("{dir}/{rel}") };
    let fix = |mut e: PlannedEntry, path: String| {
        e.path = path;
        match e.kind {
            EntryKind::Dir => e.mode = c.dir_mode.unwrap_or(e.mode),
            EntryKind::File { .. } => e.mode = c.mode.unwrap_or(e.mode),
            EntryKind::Symlink { .. } => {}
        }
        e.uid = c.uid;
        e.gid = c.gid;
        e
    };
    if meta.is_dir() {
        out.push(fix(PlannedEntry { path: String::new(), kind: EntryKind::Dir, mode: meta.mode() & 0o7777, uid: 0, gid: 0 }, c.to.clone()));
        for e in scan_tree(&abs)? {
            let path = join(&c.to, e.path.trim_start_matches('/'));
            out.push(fix(e, path));
        }
    } else {
        let base = abs.file_name().and_then(|n| n.to_str()).unwrap_or("file").to_string();
        let path = if c.to_dir { join(&c.to, &base) } else { c.to.clone() };
        let kind = if meta.file_type().is_symlink() {
            let target = fs::read_link(&abs).map_err(io_error(&abs, "cannot read the link"))?;
            EntryKind::Symlink { target: target.to_string_lossy().into_owned() }
        } else if meta.is_file() {
            EntryKind::File { size: meta.len(), content: Content::Tree { abs: abs.clone() } }
        } else {
            return Err(BuildError::Tree {
                message: format!("`{shown}` in {what} is a device, FIFO or socket"),
                source: io::Error::new(io::ErrorKind::InvalidData, "special file"),
            });
        };
        let mode = if meta.file_type().is_symlink() { 0o777 } else { meta.mode() & 0o7777 };
        out.push(fix(PlannedEntry { path: String::new(), kind, mode, uid: 0, gid: 0 }, path));
    }
    Ok(out)
}

/// Capture the directory `dir` as a normalised layer in the store (see [`scan_tree`]; mtimes
/// are the epoch).
pub fn capture(name: &str, dir: &Path, epoch: u64, store: &Store) -> Result<Output, BuildError> {
    let entries = scan_tree(dir)?;
    super::build_layer(name, &entries, epoch, crate::layer::Compression::Gzip, store)
}

/// The first path where two captured trees differ, for `--check`.
pub fn first_difference(store: &Store, a: &Output, b: &Output) -> Result<Option<String>, BuildError> {
    let list = |o: &Output| -> Result<Vec<(String, String)>, BuildError> {
        let path = store.blob_path(&o.digest);
        let f = File::open(&path).map_err(io_error(&path, "cannot open"))?;
        let reader = crate::layer::decoder(&o.media_type, BufReader::new(f)).map_err(io_error(&path, "cannot read"))?;
        let mut ar = tar::Archive::new(reader);
        let mut v = Vec::new();
        for e in ar.entries().map_err(io_error(&path, "cannot read"))? {
            let mut e = e.map_err(io_error(&path, "cannot read"))?;
            let p = e.path().map_err(io_error(&path, "cannot read"))?.to_string_lossy().into_owned();
            let h = e.header();
            let head = format!(
                "{:?} {:o} {}:{} {}",
                h.entry_type(),
                h.mode().unwrap_or(0),
                h.uid().unwrap_or(0),
                h.gid().unwrap_or(0),
                h.size().unwrap_or(0)
            );
            let (sha, _) = Sha256::of_reader(&mut e).map_err(io_error(&path, "cannot read"))?;
            let link = e.link_name().ok().flatten().map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
            v.push((p, format!("{head} {link} {}", sha.hex())));
        }
        Ok(v)
    };
    let (x, y) = (list(a)?, list(b)?);
    let mut i = 0;
    loop {
        match (x.get(i), y.get(i)) {
            (None, None) => return Ok(None),
            (Some((p, _)), None) | (None, Some((p, _))) => return Ok(Some(format!("/{p}"))),
            (Some((p, h)), Some((q, g))) => {
                if p != q {
                    return Ok(Some(format!("/{}", p.min(q))));
                }
                if h != g {
                    return Ok(Some(format!("/{p}")));
                }
            }
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain tar of (path, kind) entries: `Some(target)` makes a symlink, `None` a file
    /// holding its path.
    fn tar_of(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, link) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match link {
                Some(t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, t).unwrap();
                }
                None => {
                    h.set_size(path.len() as u64);
                    b.append_data(&mut h, path, path.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn unpack_all(dest: &Path, layers: &[Vec<u8>]) {
        let dir = tempfile::tempdir().unwrap();
        for (i, l) in layers.iter().enumerate() {
            let p = dir.path().join(format!("{i}.tar"));
            fs::write(&p, l).unwrap();
            unpack(&p, "application/vnd.oci.image.layer.v1.tar", dest).unwrap();
        }
    }

    #[test]
    fn symlinks_in_a_layer_never_lead_outside_the_tree() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "host file").unwrap();
        let root = tempfile::tempdir().unwrap();
        let abs = outside.path().display().to_string();
        unpack_all(
            root.path(),
            &[
                tar_of(&[("etc-link", Some(abs.as_str())), ("up", Some("../../.."))]),
                // Written through the links: they resolve inside the tree.
                tar_of(&[("etc-link/new", None), ("up/escaped", None), ("etc-link/.wh.victim", None)]),
            ],
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "host file", "a whiteout through a link removed a host file");
        assert!(!outside.path().join("new").exists());
        let inside = root.path().join(outside.path().strip_prefix("/").unwrap());
        assert_eq!(fs::read_to_string(inside.join("new")).unwrap(), "etc-link/new");
        assert_eq!(fs::read_to_string(root.path().join("escaped")).unwrap(), "up/escaped");
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_layers() {
        let root = tempfile::tempdir().unwrap();
        unpack_all(
            root.path(),
            &[
                tar_of(&[("d/a", None), ("d/b", None), ("o/x", None), ("keep", None)]),
                tar_of(&[("d/.wh.a", None), ("o/.wh..wh..opq", None), ("o/y", None), (".wh...", None)]),
            ],
        );
        let names = |d: &str| {
            let mut v: Vec<String> =
                fs::read_dir(root.path().join(d)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            v.sort();
            v
        };
        assert_eq!(names("d"), ["b"]);
        assert_eq!(names("o"), ["y"]);
        assert!(root.path().join("keep").exists(), "`.wh...` removes nothing");
    }

    #[test]
    fn resolve_in_re_roots_absolute_links_and_stops_at_the_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr", root.path().join("abs")).unwrap();
        assert_eq!(resolve_in(root.path(), "/bin/sh"), root.path().join("usr/bin/sh"));
        assert_eq!(resolve_in(root.path(), "/abs/bin"), root.path().join("usr/bin"));
        assert_eq!(resolve_in(root.path(), "/../../etc"), root.path().join("etc"));
    }
}
