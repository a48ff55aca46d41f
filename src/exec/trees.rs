//! Trees on disk made during a build: an image's root filesystem unpacked from its layers (OCI
//! whiteouts applied), cached in the store by manifest digest; a step's output unpacked (only
//! what a layer's copies take from it); a directory captured as a normalised layer (byte order,
//! numeric owners, mtimes at the epoch); and the entries a `copy from=` takes out of such a tree.
//!
//! Every tree is read through [`crate::tarcheck`], entry by entry, before anything is written:
//! a tree compose wrote (a step's output or inputs) by the rules of one, so nothing in it is ever
//! written through a symlink or outside the directory; an image's layers by the rules of a
//! foreign layer (a base's devices and FIFOs are not made; its symlinks are followed inside the
//! tree, as the image sees them).

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{output, BuildError};
use crate::hash::Sha256;
use crate::oci;
use crate::plan::{Content, CopyFrom, EntryKind, PlannedEntry};
use crate::store::{Output, Record, Store};
use crate::tarcheck::{self, Checked, Kind, Rules, WalkError};

/// Where an image's unpacked root filesystems are kept, by manifest digest.
fn rootfs_cache(store: &Store) -> PathBuf {
    store.layout().rootfs()
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
pub fn image_rootfs(store: &Store, image: &Record) -> Result<InUse, BuildError> {
    let (tree, sealing) = rootfs_with(store, image, false)?;
    debug_assert!(sealing.is_none());
    Ok(tree)
}

/// An unpacked root filesystem in use: while this lives, it holds the tree's lock shared, and no
/// build moves the tree away (that takes the lock exclusively, so waits for every job over it).
pub struct InUse {
    dir: PathBuf,
    _lock: File,
}

impl std::ops::Deref for InUse {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.dir
    }
}

/// The seal of a kept root filesystem, being checked beside the job that uses the tree
/// ([`image_rootfs_checked_after`]).
pub struct Sealing {
    dir: PathBuf,
    seal_path: PathBuf,
    /// The seal the tree had when it was handed out.
    kept: String,
    check: std::thread::JoinHandle<bool>,
}

impl Sealing {
    /// Whether the tree was as it was sealed, once the job that used it (`tree`) is done. When
    /// not, it is moved away (the next use unpacks it again), once no other job is over it, and
    /// the caller throws away what it made over it.
    pub fn held(self, store: &Store, tree: InUse) -> bool {
        if self.check.join().unwrap_or(false) {
            return true;
        }
        drop(tree);
        let _lock = rootfs_lock(&self.dir);
        // Unless another job has unpacked it again meanwhile (a new seal).
        if fs::read_to_string(&self.seal_path).is_ok_and(|s| s == self.kept) {
            discard_rootfs(store, &self.dir, &self.seal_path);
        }
        false
    }
}

/// As [`image_rootfs`], but a kept tree is handed out before its seal is checked: the check (a
/// status of each of tens of thousands of entries, tens of milliseconds) runs on a thread of its
/// own while the job runs, and the job's result stands only if [`Sealing::held`] says so.
pub fn image_rootfs_checked_after(store: &Store, image: &Record) -> Result<(InUse, Option<Sealing>), BuildError> {
    rootfs_with(store, image, true)
}

/// The lock on `dir`'s tree (`DIR.lock`), taken exclusively: to remove or make the tree.
fn rootfs_lock(dir: &Path) -> Result<File, BuildError> {
    let lock_path = dir.with_extension("lock");
    let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_error(&lock_path, "cannot open"))?;
    lock.lock().map_err(io_error(&lock_path, "cannot lock"))?;
    Ok(lock)
}

/// Move the tree `dir` away and remove it, with its seal.
fn discard_rootfs(store: &Store, dir: &Path, seal_path: &Path) {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let trash = store.tmp_dir().join(format!("rootfs-{name}-{}", std::process::id()));
    if fs::rename(dir, &trash).is_ok() {
        crate::store::remove_any(&trash);
    }
    let _ = fs::remove_file(seal_path);
}

fn rootfs_with(store: &Store, image: &Record, later: bool) -> Result<(InUse, Option<Sealing>), BuildError> {
    let manifest = output(image, "manifest")?;
    let parent = rootfs_cache(store);
    fs::create_dir_all(&parent).map_err(io_error(&parent, "cannot create"))?;
    let dir = parent.join(manifest.digest.hex());
    let seal_path = parent.join(format!("{}.seal", manifest.digest.hex()));
    let lock_path = dir.with_extension("lock");
    loop {
        // Jobs over the tree hold its lock shared (any number at once); checking it needs no
        // more. Removing or making it takes the lock exclusively, once no job is over it.
        let lock =
            File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_error(&lock_path, "cannot open"))?;
        lock.lock_shared().map_err(io_error(&lock_path, "cannot lock"))?;
        if let (true, Ok(kept)) = (dir.symlink_metadata().is_ok(), fs::read_to_string(&seal_path)) {
            if later {
                let (checked, expected) = (dir.clone(), kept.clone());
                // One thread, not the build's pool: its workers may all be waiting on jobs.
                let check = std::thread::spawn(move || {
                    // Behind the step's own processes for the CPU: it is their time it must not take.
                    // SAFETY: setpriority on the calling thread (who = 0) touches no memory.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
                    seal(&checked).is_ok_and(|s| s == expected)
                });
                let sealing = Sealing { dir: dir.clone(), seal_path: seal_path.clone(), kept, check };
                return Ok((InUse { dir: dir.clone(), _lock: lock }, Some(sealing)));
            }
            if seal(&dir).is_ok_and(|s| s == kept) {
                return Ok((InUse { dir: dir.clone(), _lock: lock }, None));
            }
        }
        drop(lock);
        let exclusive = rootfs_lock(&dir)?;
        ready_tree(store, manifest, &dir, &seal_path)?;
        drop(exclusive);
    }
}

/// Under the tree's exclusive lock: the tree `dir` as sealed, unpacked again if it changed (or
/// first made).
fn ready_tree(store: &Store, manifest: &Output, dir: &Path, seal_path: &Path) -> Result<(), BuildError> {
    let parent = rootfs_cache(store);
    if dir.symlink_metadata().is_ok() {
        let kept = fs::read_to_string(seal_path).ok();
        if kept.is_some() && kept == seal(dir).ok() {
            return Ok(());
        }
        // Changed since it was unpacked, or never sealed: away with it.
        discard_rootfs(store, dir, seal_path);
        if dir.symlink_metadata().is_ok() {
            return Err(BuildError::Tree {
                message: format!("cannot move away `{}`", dir.display()),
                source: io::Error::from(io::ErrorKind::AlreadyExists),
            });
        }
    }
    let doc: oci::ManifestDoc = oci::read("the manifest", &store.read_blob(&manifest.digest)?)
        .map_err(|_| BuildError::MissingOutput(format!("image {}", manifest.digest), "manifest"))?;
    let tmp = tempfile::Builder::new()
        .prefix(crate::store::UNPACKING_PREFIX)
        .tempdir_in(&parent)
        .map_err(io_error(&parent, "cannot create a directory in"))?;
    let root = tmp.path().join("rootfs");
    fs::create_dir(&root).map_err(io_error(&root, "cannot create"))?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).map_err(io_error(&root, "cannot set the mode of"))?;
    // Its layers may be a base's, written by any tool: the rules of a foreign layer.
    for l in &doc.layers {
        if !store.has_blob(&l.digest) {
            return Err(BuildError::MissingOutput(format!("layer {} of image {}", l.digest, manifest.digest), "blob"));
        }
        let blob = store.blob_path(&l.digest);
        let how = Unpack { rules: Rules::Foreign, whiteouts: true, select: None };
        unpack_with(&blob, l.media_type.as_deref().unwrap_or(crate::layer::GZIP_MEDIA_TYPE), &root, &how)?;
    }
    fs::rename(&root, dir).map_err(io_error(dir, "cannot move an unpacked image to"))?;
    let sealed = seal(dir).map_err(io_error(dir, "cannot read"))?;
    crate::util::write_atomic(seal_path, sealed.as_bytes(), 0o600, Some(&store.tmp_dir()))
        .map_err(|e| io_error(seal_path, "cannot write")(e.source))?;
    Ok(())
}

/// The identity of every entry of tree `dir`: its path, type and mode, owner, size, inode, link
/// count, and modification and change times in nanoseconds, hashed in walk order (depth first,
/// names sorted). Any change to the tree (a write, a `chmod`, an entry added, removed or renamed)
/// changes an entry's change time or the entries, and so the seal; reading does not. Each
/// status is taken relative to its directory's descriptor: a builder image holds tens of
/// thousands of entries, and every step over it checks them.
pub fn seal(dir: &Path) -> io::Result<String> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let root = rustix::fs::open(dir, flags, Mode::empty())?;
    let mut h = blake3::Hasher::new();
    seal_entry(&mut h, b"", &rustix::fs::fstat(&root)?);
    seal_dir(&root, &mut Vec::new(), &mut h)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Hash the entries below the open directory `fd`, whose path in the tree is `prefix`.
fn seal_dir(fd: &std::os::fd::OwnedFd, prefix: &mut Vec<u8>, h: &mut blake3::Hasher) -> io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let mut names: Vec<std::ffi::CString> = Vec::new();
    for e in rustix::fs::Dir::read_from(fd)? {
        let e = e?;
        let name = e.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    for name in names {
        let st = rustix::fs::statat(fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        let len = prefix.len();
        if len > 0 {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(name.as_bytes());
        seal_entry(h, prefix, &st);
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let sub = rustix::fs::openat(fd, name.as_c_str(), flags, Mode::empty())?;
            seal_dir(&sub, prefix, h)?;
        }
        prefix.truncate(len);
    }
    Ok(())
}

/// One entry of a seal: its path in the tree, then its status.
fn seal_entry(h: &mut blake3::Hasher, path: &[u8], st: &rustix::fs::Stat) {
    h.update(path);
    h.update(&[0]);
    for v in [
        u64::from(st.st_mode),
        u64::from(st.st_uid),
        u64::from(st.st_gid),
        st.st_size as u64,
        st.st_ino,
        st.st_nlink,
        st.st_mtime as u64,
        st.st_mtime_nsec,
        st.st_ctime as u64,
        st.st_ctime_nsec,
    ] {
        h.update(&v.to_le_bytes());
    }
}

/// Unpack the tree blob `blob` (a step's output, a step's inputs: a tree compose wrote) into the
/// empty directory `dest`. The tree is checked as it is read ([`tarcheck::Rules::Compose`]):
/// one that breaks a rule is refused, and nothing in it is ever written through a symlink.
pub fn unpack(blob: &Path, media_type: &str, dest: &Path) -> Result<(), BuildError> {
    unpack_with(blob, media_type, dest, &Unpack { rules: Rules::Compose, whiteouts: false, select: None }).map(|_| ())
}

/// How a blob is unpacked.
struct Unpack<'s> {
    rules: Rules,
    /// Apply OCI whiteouts (an image's layers, one over the other); a single tree has none.
    whiteouts: bool,
    /// Which entries to write; `None`: all.
    select: Option<&'s dyn Fn(&Checked) -> bool>,
}

/// A hard link written later than its target (see [`unpack_for`]): the link and its target.
type Deferred = (PathBuf, PathBuf);

/// Unpack `blob` into `dest` as `how` says; returns the hard links not written because their
/// target was not (only when selecting).
fn unpack_with(blob: &Path, media_type: &str, dest: &Path, how: &Unpack<'_>) -> Result<Vec<Deferred>, BuildError> {
    let f = File::open(blob).map_err(io_error(blob, "cannot open"))?;
    let reader = crate::layer::decoder(media_type, BufReader::with_capacity(256 * 1024, f)).map_err(io_error(blob, "cannot read"))?;
    let mut deferred = Vec::new();
    let walked = tarcheck::walk(reader, how.rules, false, |c, entry| {
        if c.kind == Kind::Special || how.select.is_some_and(|s| !s(c)) {
            // A base's devices and FIFOs are not made; what a copy does not take is not written.
            return Ok(());
        }
        let name = c.path.file_name().unwrap_or_default();
        let parent_rel = c.path.parent().unwrap_or(Path::new(""));
        // A tree compose wrote has every parent as a directory of its own (the rules), so the
        // parent is joined, never resolved. An image's layer sees its lower layers as the image
        // does: symlinks inside the tree are followed within it (an absolute target re-rooted
        // at `dest`), so nothing is ever written or removed outside `dest`.
        let parent = match how.rules {
            Rules::Compose => dest.join(parent_rel),
            Rules::Foreign => resolve_in(dest, &parent_rel.to_string_lossy())?,
        };
        if how.whiteouts {
            if let Some(hidden) = name.as_bytes().strip_prefix(b".wh.") {
                if hidden == b".wh..opq" {
                    // Opaque: what lower layers put in this directory is gone.
                    if let Ok(rd) = fs::read_dir(&parent) {
                        for e in rd.flatten() {
                            remove(&e.path());
                        }
                    }
                } else if !hidden.is_empty() && hidden != b"." && hidden != b".." {
                    remove(&parent.join(std::ffi::OsStr::from_bytes(hidden)));
                }
                return Ok(());
            }
        }
        fs::create_dir_all(&parent).map_err(io_error(&parent, "cannot create"))?;
        // A file replacing a directory (or the other way round) replaces it whole.
        let target = parent.join(name);
        if let Ok(meta) = fs::symlink_metadata(&target) {
            if meta.is_dir() != (c.kind == Kind::Dir) || meta.file_type().is_symlink() || matches!(c.kind, Kind::HardLink(_)) {
                remove(&target);
            }
        }
        if let Kind::HardLink(link) = &c.kind {
            let source = match how.rules {
                Rules::Compose => dest.join(link),
                Rules::Foreign => resolve_in(dest, &link.to_string_lossy())?,
            };
            if how.select.is_some() && fs::symlink_metadata(&source).is_err() {
                deferred.push((c.path.clone(), link.clone()));
                return Ok(());
            }
            return fs::hard_link(&source, &target).map_err(io_error(&target, "cannot link"));
        }
        entry.unpack(&target).map(|_| ()).map_err(io_error(&target, "cannot unpack"))
    });
    match walked {
        Ok(_) => Ok(deferred),
        Err(WalkError::Visit(e)) => Err(e),
        Err(WalkError::Refused(r)) => Err(refused(blob, r)),
    }
}

/// A tree that breaks the rules of its kind, as a build error.
fn refused(blob: &Path, r: tarcheck::Refused) -> BuildError {
    BuildError::BadTree(format!(
        "the tree in `{}` is refused: {r} (a store that took it from a shared cache before compose checked trees: \
             `compose cache verify --repair` removes it)",
        blob.display()
    ))
}

/// Unpack into the empty directory `dest` only what copies of `srcs` (paths in the tree, as
/// `copy from=` names them) take from tree blob `blob`: its directories and symlinks (no data),
/// then the files below where each source leads once the tree's symlinks are followed (a link on
/// the way may lead elsewhere in the tree), and the targets of hard links among them. A source
/// that is the tree's root takes it all.
pub fn unpack_for(blob: &Path, media_type: &str, dest: &Path, srcs: &[&str]) -> Result<(), BuildError> {
    let lexical = |s: &str| {
        let mut parts: Vec<&str> = Vec::new();
        for p in s.split('/') {
            match p {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        parts.iter().collect::<PathBuf>()
    };
    let mut taken: Vec<PathBuf> = srcs.iter().map(|s| lexical(s)).collect();
    if taken.iter().any(|p| p.as_os_str().is_empty()) {
        return unpack(blob, media_type, dest);
    }
    let (mut prefixes, mut files): (Vec<PathBuf>, Vec<PathBuf>) = (taken.clone(), Vec::new());
    // The first pass writes every directory and symlink; a second one the files that symlinks
    // lead to elsewhere, and the targets of hard links; a third, at most, hard links to those.
    for pass in 0..3 {
        let select = |c: &Checked| {
            matches!(c.kind, Kind::Dir | Kind::Symlink(_)) && pass == 0
                || matches!(c.kind, Kind::File | Kind::HardLink(_))
                    && (prefixes.iter().any(|p| c.path.starts_with(p)) || files.contains(&c.path))
        };
        let deferred = unpack_with(blob, media_type, dest, &Unpack { rules: Rules::Compose, whiteouts: false, select: Some(&select) })?;
        let (mut next_prefixes, mut next_files) = (Vec::new(), Vec::new());
        for s in srcs {
            let led = resolve_in(dest, s)?;
            let rel = led.strip_prefix(dest).unwrap_or(&led).to_path_buf();
            if !taken.iter().any(|t| rel.starts_with(t)) {
                taken.push(rel.clone());
                next_prefixes.push(rel);
            }
        }
        for (link, target) in deferred {
            next_files.push(target);
            next_files.push(link);
        }
        if next_prefixes.is_empty() && next_files.is_empty() {
            break;
        }
        (prefixes, files) = (next_prefixes, next_files);
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
/// FIFOs and sockets are refused, naming `what` the directory is ("the output of step x") and
/// the entry's path as the step sees it (`shown`, the directory's path, then the entry's).
pub fn scan_tree(dir: &Path, shown: &str, what: &str) -> Result<Vec<PlannedEntry>, BuildError> {
    walk(dir, &Walk { shown, what, overlay_upper: false, skip: &|_| false })
}

/// How [`walk`] reads a directory.
pub struct Walk<'a> {
    /// The directory's path as the job saw it, for messages.
    pub shown: &'a str,
    /// What the directory is, for messages ("the output of step x").
    pub what: &'a str,
    /// It is an overlay's upper directory: a 0:0 character device is a deletion (written as a
    /// `.wh.NAME` whiteout) and an opaque directory gets a `.wh..wh..opq` entry.
    pub overlay_upper: bool,
    /// Paths (relative, without a leading `/`) left out (only the entry itself: say so of what
    /// is below it too, to leave that out).
    pub skip: &'a dyn Fn(&str) -> bool,
}

/// The one walker of a job's tree (a step's output, the changes of maintainer scripts): the
/// entries of `dir` (not itself), byte-sorted by path, as paths below `/`, with modes, numeric
/// owners and sizes as found; hard links become separate regular files. One policy for names and
/// special files: a name that is not UTF-8 is refused, and so are devices, FIFOs and sockets
/// (but an overlay's whiteouts, with [`Walk::overlay_upper`]).
pub fn walk(dir: &Path, w: &Walk<'_>) -> Result<Vec<PlannedEntry>, BuildError> {
    let shown = w.shown.trim_end_matches('/');
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false).follow_root_links(false) {
        let e = e.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| dir.to_path_buf());
            io_error(&path, "cannot read")(e.into())
        })?;
        let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
        // What is left out is left out whatever its name (the scripts' noise under `tmp/`…).
        if (w.skip)(&rel.to_string_lossy()) {
            continue;
        }
        let Some(rel) = rel.to_str() else {
            return Err(BuildError::BadTree(format!("`{}` in {} has a name that is not UTF-8", e.path().display(), w.what)));
        };
        let meta = e.path().symlink_metadata().map_err(io_error(e.path(), "cannot read"))?;
        let ft = meta.file_type();
        let path = format!("/{rel}");
        let marker = |path: String| PlannedEntry {
            path,
            kind: EntryKind::File { size: 0, content: Content::Inline(std::sync::Arc::new(Vec::new())) },
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        if w.overlay_upper && ft.is_char_device() && meta.rdev() == 0 {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", &path));
            out.push(marker(format!("{parent}/.wh.{name}")));
            continue;
        }
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let target = fs::read_link(e.path()).map_err(io_error(e.path(), "cannot read the link"))?;
            EntryKind::Symlink { target: target.to_string_lossy().into_owned() }
        } else if ft.is_file() {
            EntryKind::File { size: meta.len(), content: Content::Tree { abs: e.path().to_path_buf() } }
        } else {
            return Err(BuildError::BadTree(format!(
                "`{shown}/{rel}` in {} is a device, FIFO or socket; a tree holds files, directories and symlinks",
                w.what
            )));
        };
        let mode = if ft.is_symlink() { 0o777 } else { meta.mode() & 0o7777 };
        out.push(PlannedEntry { path: path.clone(), kind, mode, uid: meta.uid(), gid: meta.gid() });
        if w.overlay_upper && ft.is_dir() && opaque(e.path()) {
            out.push(marker(format!("{path}/.wh..wh..opq")));
        }
    }
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}

/// Is `dir` an overlayfs opaque directory (`trusted.overlay.opaque` = `y`)?
fn opaque(dir: &Path) -> bool {
    // `trusted.` as root; `user.` in a user namespace (overlayfs's `userxattr`).
    ["trusted.overlay.opaque", "user.overlay.opaque"].iter().any(|attr| {
        let (Ok(path), Ok(name)) = (std::ffi::CString::new(dir.display().to_string()), std::ffi::CString::new(*attr)) else {
            return false;
        };
        let mut buf = [0u8; 4];
        // SAFETY: valid NUL-terminated strings and a buffer of the length given.
        let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        n == 1 && buf[0] == b'y'
    })
}

/// Most symlinks followed resolving one path (the kernel's own bound, `ELOOP`).
const MAX_LINKS: usize = 40;

/// Resolve `path` (absolute, inside the tree at `root`) following symlinks as the tree's own root
/// would, never leaving it. A path that needs more than `MAX_LINKS` (40) links is refused: what is
/// left of it could still hold a link the kernel would follow out of the tree.
pub fn resolve_in(root: &Path, path: &str) -> Result<PathBuf, BuildError> {
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
            Ok(_) if links >= MAX_LINKS => {
                return Err(BuildError::BadTree(format!(
                    "`{path}` in `{}` passes through more than {MAX_LINKS} symbolic links",
                    root.display()
                )))
            }
            Ok(target) => {
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
    Ok(out)
}

/// The entries a `copy from=` adds, from the tree at `root` (a step's output, or an image's root
/// filesystem): as a local `copy` would, a directory's contents go into `to`; modes are kept
/// unless the operation sets them; owners are the operation's.
/// `shown` is the source path as the spec wrote it, for messages.
pub fn copy_entries(c: &CopyFrom, root: &Path, what: &str, shown: &str) -> Result<Vec<PlannedEntry>, BuildError> {
    let abs = if c.src.is_empty() { root.to_path_buf() } else { resolve_in(root, &c.src)? };
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
        for e in scan_tree(&abs, shown, what)? {
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
            return Err(BuildError::BadTree(format!("`{shown}` in {what} is a device, FIFO or socket")));
        };
        let mode = if meta.file_type().is_symlink() { 0o777 } else { meta.mode() & 0o7777 };
        out.push(fix(PlannedEntry { path: String::new(), kind, mode, uid: 0, gid: 0 }, path));
    }
    Ok(out)
}

/// Capture the directory `dir`, the output `output` of `name` ("step x"), as a normalised layer
/// in the store (see [`scan_tree`]; mtimes are the epoch). A tree past the bounds every tree is
/// held to ([`tarcheck::MAX_TREE_BYTES`], [`tarcheck::MAX_TREE_ENTRIES`]) is refused here, not
/// later when it is unpacked.
pub fn capture(name: &str, output: &str, dir: &Path, epoch: u64, store: &Store) -> Result<Output, BuildError> {
    let entries = scan_tree(dir, output, &format!("the output of {name}"))?;
    let bytes: u64 = entries
        .iter()
        .map(|e| 512 + if let EntryKind::File { size, .. } = e.kind { size.div_ceil(512).saturating_mul(512) } else { 0 })
        .fold(0u64, u64::saturating_add);
    if entries.len() as u64 > tarcheck::MAX_TREE_ENTRIES || bytes > tarcheck::MAX_TREE_BYTES {
        return Err(BuildError::BadTree(format!(
            "the output of {name} is too big to keep: {} entries, {bytes} bytes as a tar (a tree holds at most {} entries and {} GiB)",
            entries.len(),
            tarcheck::MAX_TREE_ENTRIES,
            tarcheck::MAX_TREE_BYTES >> 30
        )));
    }
    // zstd: a tree is compose's own, read back by compose (`copy from=`, `--check`), and zstd
    // writes and reads it several times faster than gzip.
    super::build_layer(name, &entries, epoch, crate::layer::Compression::Zstd, store)
}

/// The first path where two captured trees differ, for `--check`.
pub fn first_difference(store: &Store, a: &Output, b: &Output) -> Result<Option<String>, BuildError> {
    // Read as every tree from the store is: checked as it streams.
    let list = |o: &Output| -> Result<Vec<(String, String)>, BuildError> {
        let path = store.blob_path(&o.digest);
        let f = File::open(&path).map_err(io_error(&path, "cannot open"))?;
        let reader = crate::layer::decoder(&o.media_type, BufReader::new(f)).map_err(io_error(&path, "cannot read"))?;
        let mut v = Vec::new();
        let walked = tarcheck::walk(reader, Rules::Compose, false, |c, e| {
            let h = e.header();
            let head = format!(
                "{:?} {:o} {}:{} {}",
                h.entry_type(),
                h.mode().unwrap_or(0),
                h.uid().unwrap_or(0),
                h.gid().unwrap_or(0),
                h.size().unwrap_or(0)
            );
            let (sha, _) = Sha256::of_reader(&mut *e).map_err(io_error(&path, "cannot read"))?;
            let link = match &c.kind {
                Kind::Symlink(t) | Kind::HardLink(t) => t.to_string_lossy().into_owned(),
                _ => String::new(),
            };
            v.push((c.path.to_string_lossy().into_owned(), format!("{head} {link} {}", sha.hex())));
            Ok(())
        });
        match walked {
            Ok(_) => Ok(v),
            Err(WalkError::Visit(e)) => Err(e),
            Err(WalkError::Refused(r)) => Err(refused(&path, r)),
        }
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
    use std::os::unix::ffi::OsStrExt as _;

    use super::*;

    /// Guards against this: the scripts' walk dropped a name that is not UTF-8 where a step's
    /// refused it; one walker now refuses it everywhere, but what a walk leaves out (the scripts'
    /// noise) is left out whatever its name.
    #[test]
    fn one_walk_refuses_names_that_are_not_utf8_except_where_it_looks_away() {
        let dir = tempfile::tempdir().unwrap();
        let bad = std::ffi::OsStr::from_bytes(b"x\xff");
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp").join(bad), b"noise").unwrap();
        fs::write(dir.path().join("kept"), b"kept").unwrap();
        let skip = |rel: &str| rel == "tmp" || rel.starts_with("tmp/");
        let scripts = Walk { shown: "", what: "the changes of the maintainer scripts", overlay_upper: true, skip: &skip };
        let entries = walk(dir.path(), &scripts).unwrap();
        assert_eq!(entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["/kept"]);
        fs::write(dir.path().join(bad), b"kept?").unwrap();
        let err = walk(dir.path(), &scripts).unwrap_err().to_string();
        assert!(err.contains("in the changes of the maintainer scripts has a name that is not UTF-8"), "{err}");
        let err = scan_tree(dir.path(), "/out", "the output of step s").unwrap_err().to_string();
        assert!(err.contains("in the output of step s has a name that is not UTF-8"), "{err}");
    }

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

    /// Unpack `layers` one over the other, as an image's (foreign rules, whiteouts).
    fn unpack_all(dest: &Path, layers: &[Vec<u8>]) {
        let dir = tempfile::tempdir().unwrap();
        for (i, l) in layers.iter().enumerate() {
            let p = dir.path().join(format!("{i}.tar"));
            fs::write(&p, l).unwrap();
            let how = Unpack { rules: Rules::Foreign, whiteouts: true, select: None };
            unpack_with(&p, "application/vnd.oci.image.layer.v1.tar", dest, &how).unwrap();
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

    /// A tree as compose writes it (gzip): `(path, kind)` in order, files holding `data`.
    fn compose_tree(entries: &[(&str, crate::layer::EntryKind, &[u8])]) -> Vec<u8> {
        let mut w = crate::layer::LayerWriter::new(Vec::new());
        for (path, kind, data) in entries {
            let e = crate::layer::Entry { path: path.to_string(), kind: kind.clone(), mode: 0o755, uid: 0, gid: 0, mtime: 0 };
            match kind {
                crate::layer::EntryKind::File { .. } => w.append(&e, Some(&mut &data[..])).unwrap(),
                _ => w.append(&e, None).unwrap(),
            }
        }
        w.finish().unwrap().0
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .into_iter()
            .map(|e| e.unwrap().path().strip_prefix(dir).unwrap().display().to_string())
            .collect();
        v.sort();
        v
    }

    /// Guards against this: `copy from="STEP" "/out/small"` unpacked the whole step tree (a 6-byte file
    /// beside a 10 GiB one: 84 s and 12.9 GB written). Only what the copies take is written:
    /// the tree's directories and symlinks, the files below where each source leads (through a
    /// symlink elsewhere in the tree too), and the targets of hard links among them.
    #[test]
    fn copy_from_a_step_unpacks_only_what_it_copies() {
        use crate::layer::EntryKind as K;
        let big = vec![0u8; 8 << 20];
        let blob = compose_tree(&[
            ("/a-big", K::File { size: big.len() as u64 }, &big),
            ("/b-other", K::File { size: 6 }, b"other\n"),
            ("/dir", K::Dir, b""),
            ("/dir/h", K::Hardlink { target: "/b-other".into() }, b""),
            ("/dir/small", K::File { size: 6 }, b"small\n"),
            ("/via", K::Symlink { target: "/dir".into() }, b""),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tree");
        fs::write(&p, &blob).unwrap();
        let unpacked = |srcs: &[&str]| {
            let dest = tempfile::tempdir().unwrap();
            unpack_for(&p, crate::layer::GZIP_MEDIA_TYPE, dest.path(), srcs).unwrap();
            (listing(dest.path()), dest)
        };
        let (files, dest) = unpacked(&["/dir/small"]);
        assert_eq!(files, ["dir", "dir/small", "via"]);
        assert_eq!(fs::read(dest.path().join("dir/small")).unwrap(), b"small\n");
        // Through the symlink: the second pass writes where it leads.
        assert_eq!(unpacked(&["via/small"]).0, ["dir", "dir/small", "via"]);
        // A directory with a hard link to a file outside it: the target comes too.
        let (files, dest) = unpacked(&["dir"]);
        assert_eq!(files, ["b-other", "dir", "dir/h", "dir/small", "via"]);
        assert_eq!(fs::read(dest.path().join("dir/h")).unwrap(), b"other\n");
        // The root: all of it.
        assert_eq!(unpacked(&["dir/small", "/"]).0, ["a-big", "b-other", "dir", "dir/h", "dir/small", "via"]);
    }

    #[test]
    fn a_tree_that_breaks_the_rules_is_refused_and_writes_nothing_outside() {
        let outside = tempfile::tempdir().unwrap();
        let dest = outside.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "escape", "../victim").unwrap();
        let p = outside.path().join("t.tar");
        fs::write(&p, b.into_inner().unwrap()).unwrap();
        fs::write(outside.path().join("victim"), "host").unwrap();
        let e = unpack(&p, "application/vnd.oci.image.layer.v1.tar", &dest).unwrap_err();
        assert!(e.to_string().contains("is refused") && e.to_string().contains("verify --repair"), "{e}");
        assert!(listing(&dest).is_empty());
    }

    /// An image layer whose 45 chained symlinks end at a host directory, with a file and a
    /// whiteout through the chain: resolving stopped after 40 links and appended the rest, so the
    /// kernel followed the last link out; the file was written and the whiteout deleted on the host.
    #[test]
    fn a_long_symlink_chain_never_leads_out_of_the_tree() {
        let outside = tempfile::tempdir().unwrap();
        let host = outside.path().join("host");
        fs::create_dir_all(&host).unwrap();
        fs::write(host.join("victim"), "host").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..45 {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            let target = if i == 44 { host.display().to_string() } else { format!("s{}", i + 1) };
            b.append_link(&mut h, format!("s{i}"), &target).unwrap();
        }
        for name in ["s0/x", "s0/.wh.victim"] {
            let mut h = tar::Header::new_ustar();
            h.set_size(4);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &b"evil"[..]).unwrap();
        }
        let p = outside.path().join("layer.tar");
        fs::write(&p, b.into_inner().unwrap()).unwrap();
        let dest = outside.path().join("rootfs");
        fs::create_dir_all(&dest).unwrap();
        let how = Unpack { rules: Rules::Foreign, whiteouts: true, select: None };
        let e = unpack_with(&p, "application/vnd.oci.image.layer.v1.tar", &dest, &how).unwrap_err();
        assert!(e.to_string().contains("more than 40 symbolic links"), "{e}");
        assert_eq!(fs::read_dir(&host).unwrap().count(), 1, "nothing written on the host");
        assert!(host.join("victim").exists(), "nothing removed on the host");
        // A step's output holding such a chain: a copy through it is refused, never read outside.
        let e = resolve_in(&dest, "/s0/hostname").unwrap_err();
        assert!(e.to_string().contains("symbolic links"), "{e}");
    }

    #[test]
    fn resolve_in_re_roots_absolute_links_and_stops_at_the_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr", root.path().join("abs")).unwrap();
        assert_eq!(resolve_in(root.path(), "/bin/sh").unwrap(), root.path().join("usr/bin/sh"));
        assert_eq!(resolve_in(root.path(), "/abs/bin").unwrap(), root.path().join("usr/bin"));
        assert_eq!(resolve_in(root.path(), "/../../etc").unwrap(), root.path().join("etc"));
    }

    /// The seal is taken relative to each directory's descriptor (issue 22's fixed cost): every
    /// change a hand or a program can make to the tree still changes it, reading does not, and a
    /// symlink out of the tree is an entry, never followed.
    #[test]
    fn a_seal_sees_every_change_to_a_tree_and_no_read() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::write(r.join("usr/bin/tool"), "tool").unwrap();
        fs::write(r.join("a"), "a").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("out")).unwrap();
        let first = seal(r).unwrap();
        let _ = fs::read(r.join("usr/bin/tool")).unwrap();
        let _ = fs::read_dir(r.join("usr/bin")).unwrap().count();
        fs::write(outside.path().join("x"), "x").unwrap();
        assert_eq!(seal(r).unwrap(), first, "reading, and what a link leads to outside, change nothing");
        let changes: [&dyn Fn(&Path); 5] = [
            &|r| fs::write(r.join("usr/bin/tool"), "TOOL").unwrap(),
            &|r| fs::set_permissions(r.join("a"), fs::Permissions::from_mode(0o4755)).unwrap(),
            &|r| fs::write(r.join("usr/bin/planted"), "").unwrap(),
            &|r| fs::rename(r.join("a"), r.join("b")).unwrap(),
            &|r| fs::remove_file(r.join("usr/bin/tool")).unwrap(),
        ];
        let mut seen = vec![first];
        for change in changes {
            change(r);
            let now = seal(r).unwrap();
            assert!(!seen.contains(&now), "a change the seal did not see");
            seen.push(now);
        }
        assert!(seal(&r.join("out")).is_err(), "a tree's root is never a symlink followed");
    }
}
