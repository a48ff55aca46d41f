//! A step's declared caches for one run: leased from the store (kept between runs on this
//! machine) or, for `--check`, empty ones of the run's own; where they are mounted; the
//! modification times of the step's inputs, which tools judging freshness by mtime (cargo, make)
//! compare with what a cache holds; and forgetting caches that made an output differ.
//!
//! Leases are taken before the inputs are touched, in one order (by cache id, so two runs never
//! wait for each other), saying so when another build holds one. Inputs are unpacked with every
//! mtime at the epoch; with caches kept, a file whose content differs from what the step's ledger
//! (`inputs`, beside its first cache) saw for that path at its last run gets the time of this run,
//! and every other file keeps the time it had (the epoch for a file seen unchanged since the
//! step's first run), so a tool sees exactly the changed files as newer than what it built. Trees
//! are captured with their mtimes at the epoch; a tool that writes input mtimes into its output
//! (tar, zip, `.pyc`) is caught by `--check`, which runs with empty caches and epoch mtimes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::sandbox::Bind;
use super::{trees, BuildError};
use crate::hash::Encoder;
use crate::plan::StepDrv;
use crate::spec::{path_within as under, STEP_RESERVED};
use crate::store::{CacheLease, Store};

/// Which caches a run of a step gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// The store's, kept between runs.
    Kept,
    /// Empty ones, made for the run and removed after (`--check`).
    Empty,
}

/// Where a step's caches come from for one run: who it is (its caches' ids), and the leases it
/// holds on them while it runs (none for empty ones).
pub(super) struct Leased {
    how: CacheUse,
    /// Each cache's path and id, in the step's order.
    caches: Vec<(String, String)>,
    /// The leases, by cache id.
    leases: BTreeMap<String, CacheLease>,
    /// The ledger of input mtimes (kept caches only).
    ledger: Option<PathBuf>,
}

/// The id of step `s`'s caches on `platform` (one cache per path within it): whose they are (the
/// spec file), the step's name, its platform (and target, for a cross build) and its user. A cache is trusted as the step's
/// earlier runs are: another spec, whatever its steps are named, never sees it.
fn step_id(s: &StepDrv, platform: &str, scope: &str) -> String {
    let mut e = Encoder::new("step-caches/v1");
    e.str(scope).str(&s.step).str(platform).u64(s.user.0 as u64).u64(s.user.1 as u64);
    // A cross build's objects are its target's: one cache per target.
    let target = s.target.to_string();
    if target != platform {
        e.str("target").str(&target);
    }
    e.finish().hex()[..32].to_string()
}

/// The id of the cache of `path` among a step's (`step_id`).
fn cache_id(step_id: &str, path: &str) -> String {
    let mut e = Encoder::new("cache/v1");
    e.str(step_id).str(path);
    e.finish().hex()[..32].to_string()
}

/// The ids of step `s`'s caches: (path, id), in the step's order.
fn ids(s: &StepDrv, platform: &str, scope: &str) -> Vec<(String, String)> {
    let step = step_id(s, platform, scope);
    s.caches.iter().map(|c| (c.path.clone(), cache_id(&step, &c.path))).collect()
}

/// Lease each cache of step `s` running on `platform` (for kept ones), in the order of their ids;
/// `waiting` is told of each that another build holds, before this one waits for it.
pub(super) fn lease(
    s: &StepDrv,
    platform: &str,
    scope: &str,
    how: CacheUse,
    store: &Store,
    waiting: &dyn Fn(&str),
) -> Result<Leased, BuildError> {
    let caches = ids(s, platform, scope);
    let mut leased = Leased { how, caches: caches.clone(), leases: BTreeMap::new(), ledger: None };
    if how == CacheUse::Empty || caches.is_empty() {
        return Ok(leased);
    }
    let mut order: Vec<(&String, &String, crate::spec::Sharing)> =
        caches.iter().zip(&s.caches).map(|((path, id), c)| (path, id, c.sharing)).collect();
    order.sort_by(|a, b| a.1.cmp(b.1));
    for (path, id, sharing) in order {
        let about = format!("{scope}: step `{}` ({platform}, uid {}): {path}\n", s.step, s.user.0);
        let wait = || waiting(path);
        leased.leases.insert(id.clone(), store.lease_cache(id, &about, sharing, s.user, &wait)?);
    }
    leased.ledger = caches.first().map(|(_, id)| store.cache_file(id, "inputs"));
    Ok(leased)
}

impl Leased {
    /// The caches as read-write mounts: the kept ones' directories, or empty ones made under
    /// `work`. Each is mounted where `rootfs` (the step's mounted root) resolves its path, which
    /// must be a directory (or nothing yet) outside the step's `/tmp`, the kernel's file systems
    /// and its output (`output`, resolved): a link of the image or the inputs cannot move a
    /// cache where the spec could not put it.
    pub fn binds(&self, s: &StepDrv, work: &Path, rootfs: &Path) -> Result<Vec<Bind>, BuildError> {
        let inside = |path: &str| -> Result<String, BuildError> {
            let at = trees::resolve_in(rootfs, path)?;
            let rel = at.strip_prefix(rootfs).map(|p| format!("/{}", p.display())).unwrap_or_else(|_| path.to_string());
            Ok(rel)
        };
        let output = inside(&s.output)?;
        let mut binds = Vec::new();
        for (i, (path, id)) in self.caches.iter().enumerate() {
            let dest = inside(path)?;
            let refuse = |why: String| BuildError::BadTree(format!("step `{}`: its cache `{path}` {why}", s.step));
            if dest != *path {
                if let Some((dir, _)) = STEP_RESERVED.iter().find(|(d, _)| under(&dest, d)) {
                    return Err(refuse(format!("leads through a link to `{dest}`, under `{dir}`")));
                }
            }
            if under(&dest, &output) || under(&output, &dest) {
                return Err(refuse(format!("leads to `{dest}`, which overlaps the step's output `{}`", s.output)));
            }
            if let Ok(m) = rootfs.join(dest.trim_start_matches('/')).symlink_metadata() {
                if !m.is_dir() {
                    return Err(refuse(format!("is `{dest}` in the step's root, which is not a directory")));
                }
            }
            let source = match (self.how, self.leases.get(id)) {
                (CacheUse::Kept, Some(lease)) => lease.dir.clone(),
                _ => {
                    let dir = work.join("caches").join(i.to_string());
                    fs::create_dir_all(&dir).map_err(trees::io_error(&dir, "cannot create"))?;
                    std::os::unix::fs::chown(&dir, Some(s.user.0), Some(s.user.1))
                        .map_err(trees::io_error(&dir, "cannot change the owner of"))?;
                    dir
                }
            };
            binds.push(Bind { source, destination: dest });
        }
        Ok(binds)
    }

    /// Give the input files unpacked at `inputs` the times they last changed, by the step's
    /// ledger (kept caches only; the leases are held, so no other run of the step reads or
    /// writes it meanwhile).
    pub fn freshen_inputs(&self, inputs: &Path) -> Result<(), BuildError> {
        let Some(ledger_path) = &self.ledger else { return Ok(()) };
        let mut ledger: BTreeMap<String, (String, u64, u32)> =
            fs::read(ledger_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let first_run = ledger.is_empty();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        for e in walkdir::WalkDir::new(inputs).follow_links(false).into_iter().flatten() {
            if !e.file_type().is_file() {
                continue;
            }
            let path = e.path();
            let rel = path.strip_prefix(inputs).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            let f = fs::File::open(path).map_err(trees::io_error(path, "cannot read"))?;
            let hash = crate::hash::ContentHash::of_reader(f).map_err(trees::io_error(path, "cannot read"))?.0.hex();
            let (secs, nanos) = match ledger.get(&rel) {
                Some((h, secs, nanos)) if *h == hash => (*secs, *nanos),
                // Seen for the first time on the step's first run: as old as the epoch (what
                // a run without caches sees); changed (or new) since: now.
                None if first_run => {
                    let m = e.metadata().map_err(|err| trees::io_error(path, "cannot read")(err.into()))?;
                    use std::os::unix::fs::MetadataExt;
                    (m.mtime().max(0) as u64, m.mtime_nsec().max(0) as u32)
                }
                _ => (now.as_secs(), now.subsec_nanos()),
            };
            set_mtime(path, secs, nanos).map_err(trees::io_error(path, "cannot set the time of"))?;
            // Paths no longer among the inputs stay: should one come back, it is compared with
            // what it was.
            ledger.insert(rel, (hash, secs, nanos));
        }
        if let Some(dir) = ledger_path.parent() {
            fs::create_dir_all(dir).map_err(trees::io_error(dir, "cannot create"))?;
        }
        let bytes = serde_json::to_vec(&ledger).unwrap_or_default();
        let tmp = ledger_path.with_extension("new");
        fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, ledger_path)).map_err(trees::io_error(ledger_path, "cannot write"))
    }
}

/// Empty the kept caches of step `s` on `platform` (their outputs differed from a run without
/// them: what they hold cannot be trusted); each is taken exclusively first.
pub(super) fn forget(s: &StepDrv, platform: &str, scope: &str, store: &Store) {
    for (_, id) in ids(s, platform, scope) {
        store.clear_cache(&id);
    }
}

/// Set the mtime of `path` (which may be read-only), without following a symlink.
fn set_mtime(path: &Path, secs: u64, nanos: u32) -> std::io::Result<()> {
    let times = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nanos as libc::c_long },
    ];
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: `c` is a valid NUL-terminated path and `times` two valid timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Give every directory under `root` (itself included) the mtime `epoch`, deepest first: unpacking
/// and making mount points left them the time of this run, which a step could read.
pub(super) fn settle_directories(root: &Path, epoch: u64) -> Result<(), BuildError> {
    for e in walkdir::WalkDir::new(root).follow_links(false).contents_first(true).into_iter().flatten() {
        if e.file_type().is_dir() {
            set_mtime(e.path(), epoch, 0).map_err(trees::io_error(e.path(), "cannot set the time of"))?;
        }
    }
    Ok(())
}
