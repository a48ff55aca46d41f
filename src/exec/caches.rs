//! A step's declared caches for one run: leased from the store (kept between runs on this
//! machine) or, for `--check`, empty ones of the run's own; and the modification times of its
//! inputs, which tools judging freshness by mtime (cargo, make) compare with what a cache holds.
//!
//! Inputs are unpacked with every mtime at the epoch, so an edited source would look older than
//! what the cache built from it. With caches kept, each input file gets the time it was last seen
//! to change: the ledger `inputs` beside the step's first cache remembers, per path, the content hash and the
//! time given; a file whose content is new gets the time of this run. None of it reaches a key or
//! an output (trees are captured with their mtimes at the epoch); a tool that judged wrongly
//! would be caught by `--check`, which runs with empty caches.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::sandbox::Bind;
use super::{trees, BuildError};
use crate::hash::Encoder;
use crate::plan::StepDrv;
use crate::store::{CacheLease, Store};

/// Which caches a run of a step gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// The store's, kept between runs.
    Kept,
    /// Empty ones, made for the run and removed after (`--check`).
    Empty,
}

/// The caches of one run, mounted read-write: the binds, and the leases that hold them.
pub(super) struct Mounted {
    pub binds: Vec<Bind>,
    _leases: Vec<CacheLease>,
}

/// The id of step `s`'s caches on `platform` (one cache per path within it): whose they are (the
/// spec file), the step's name, its platform and its user. A cache is trusted as the step's
/// earlier runs are: another spec, whatever its steps are named, never sees it.
fn step_id(s: &StepDrv, platform: &str, scope: &str) -> String {
    let mut e = Encoder::new("step-caches/v1");
    e.str(scope).str(&s.step).str(platform).u64(s.user.0 as u64).u64(s.user.1 as u64);
    e.finish().hex()[..32].to_string()
}

/// The id of the cache of `path` among a step's (`step_id`).
fn cache_id(step_id: &str, path: &str) -> String {
    let mut e = Encoder::new("cache/v1");
    e.str(step_id).str(path);
    e.finish().hex()[..32].to_string()
}

/// Lease (or make empty, under `work`) each cache of step `s` running on `platform`.
pub(super) fn mount(s: &StepDrv, platform: &str, scope: &str, how: CacheUse, store: &Store, work: &Path) -> Result<Mounted, BuildError> {
    let mut m = Mounted { binds: Vec::new(), _leases: Vec::new() };
    let id = step_id(s, platform, scope);
    for (i, c) in s.caches.iter().enumerate() {
        let source = match how {
            CacheUse::Kept => {
                let about = format!("{scope}: step `{}` ({platform}, uid {}): {}\n", s.step, s.user.0, c.path);
                let lease = store.lease_cache(&cache_id(&id, &c.path), &about, c.sharing, s.user)?;
                let dir = lease.dir.clone();
                m._leases.push(lease);
                dir
            }
            CacheUse::Empty => {
                let dir = work.join("caches").join(i.to_string());
                fs::create_dir_all(&dir).map_err(trees::io_error(&dir, "cannot create"))?;
                std::os::unix::fs::chown(&dir, Some(s.user.0), Some(s.user.1))
                    .map_err(trees::io_error(&dir, "cannot change the owner of"))?;
                dir
            }
        };
        m.binds.push(Bind { source, destination: c.path.clone() });
    }
    Ok(m)
}

/// Give the input files unpacked at `inputs` the times they last changed, by step `s`'s ledger on
/// `platform`: unchanged files keep the time they had, changed and new ones get now.
pub(super) fn freshen_inputs(s: &StepDrv, platform: &str, scope: &str, store: &Store, inputs: &Path) -> Result<(), BuildError> {
    // Beside the step's first cache, so that it goes with it.
    let Some(first) = s.caches.first() else { return Ok(()) };
    let ledger_path = store.cache_file(&cache_id(&step_id(s, platform, scope), &first.path), "inputs");
    let old: BTreeMap<String, (String, u64, u32)> =
        fs::read(&ledger_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut new = BTreeMap::new();
    for e in walkdir::WalkDir::new(inputs).follow_links(false).into_iter().flatten() {
        if !e.file_type().is_file() {
            continue;
        }
        let path = e.path();
        let rel = path.strip_prefix(inputs).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let mut hasher = blake3::Hasher::new();
        let f = fs::File::open(path).map_err(trees::io_error(path, "cannot read"))?;
        hasher.update_reader(f).map_err(trees::io_error(path, "cannot read"))?;
        let hash = hasher.finalize().to_hex().to_string();
        let (secs, nanos) = match old.get(&rel) {
            Some((h, secs, nanos)) if *h == hash => (*secs, *nanos),
            _ => (now.as_secs(), now.subsec_nanos()),
        };
        set_mtime(path, secs, nanos).map_err(trees::io_error(path, "cannot set the time of"))?;
        new.insert(rel, (hash, secs, nanos));
    }
    if let Some(dir) = ledger_path.parent() {
        fs::create_dir_all(dir).map_err(trees::io_error(dir, "cannot create"))?;
    }
    let bytes = serde_json::to_vec(&new).unwrap_or_default();
    let tmp = ledger_path.with_extension("new");
    fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, &ledger_path)).map_err(trees::io_error(&ledger_path, "cannot write"))
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
