//! Steps' declared caches: directories kept in the store between runs of a step on this machine.
//!
//! A cache is named by what asks for it (its id, made by the executor from the step, the path,
//! the platform and the user) and lives in `caches/<id>/`: instance `0/` (more with `private`
//! sharing, `1/`, `2/`…), each with its lock file `<n>.lock`, whose modification time is the
//! instance's last use, and `about` (what it is, for `cache stats`). A run holds a lease on one
//! instance for as long as it uses it: exclusive (`locked`: other runs wait), shared (`shared`),
//! or the first instance nobody holds (`private`). `gc` removes the instances unused for longer
//! than its age, and never one leased (it holds the store's exclusive lock, so no build runs).
//! Nothing in a cache is ever part of a key or a record: it only saves time.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{io_err, Store, StoreError};
use crate::hash::{DrvHash, Sha256};
use crate::spec::Sharing;

/// A cache instance leased for one run: its directory, and the lock that holds it.
#[derive(Debug)]
pub struct CacheLease {
    pub dir: PathBuf,
    _lock: File,
}

/// What the store's caches hold (`cache stats`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CacheStats {
    pub caches: u64,
    pub cache_bytes: u64,
}

impl Store {
    /// Lease an instance of cache `id` (`about` says what it is), as `sharing` says, making it
    /// (owned by `owner`, mode 0755) if it is new; its last use is now.
    /// `waiting` is called once, before waiting, when another build holds it.
    pub fn lease_cache(
        &self,
        id: &str,
        about: &str,
        sharing: Sharing,
        owner: (u32, u32),
        waiting: &dyn Fn(),
    ) -> Result<CacheLease, StoreError> {
        let root = self.layout.caches().join(id);
        fs::create_dir_all(&root).map_err(io_err("create cache directory", &root))?;
        let about_path = root.join("about");
        if !about_path.exists() {
            fs::write(&about_path, about).map_err(io_err("write", &about_path))?;
        }
        let open = |n: u32| -> Result<(File, PathBuf), StoreError> {
            let lock_path = root.join(format!("{n}.lock"));
            let f =
                File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err("open cache lock", &lock_path))?;
            Ok((f, root.join(n.to_string())))
        };
        let (lock, dir) = match sharing {
            Sharing::Locked | Sharing::Shared => {
                let (f, dir) = open(0)?;
                let exclusive = sharing == Sharing::Locked;
                let free = if exclusive { f.try_lock().is_ok() } else { f.try_lock_shared().is_ok() };
                if !free {
                    waiting();
                    if exclusive { f.lock() } else { f.lock_shared() }.map_err(io_err("lock cache", &dir))?;
                }
                (f, dir)
            }
            Sharing::Private => {
                let mut n = 0;
                loop {
                    let (f, dir) = open(n)?;
                    if f.try_lock().is_ok() {
                        break (f, dir);
                    }
                    n += 1;
                }
            }
        };
        if !dir.exists() {
            // Made aside and renamed, so an instance is never seen half made.
            let part = root.join(format!(".{}.new", dir.file_name().and_then(|n| n.to_str()).unwrap_or("0")));
            let _ = fs::remove_dir_all(&part);
            fs::create_dir(&part).map_err(io_err("create cache directory", &part))?;
            std::os::unix::fs::chown(&part, Some(owner.0), Some(owner.1)).map_err(io_err("change the owner of", &part))?;
            fs::rename(&part, &dir).map_err(io_err("create cache directory", &dir))?;
        }
        let _ = lock.set_modified(SystemTime::now());
        // Absolute: the sandbox resolves a relative path from elsewhere.
        let dir = fs::canonicalize(&dir).map_err(io_err("resolve", &dir))?;
        Ok(CacheLease { dir, _lock: lock })
    }

    /// Empty cache `id`: each instance is taken exclusively (waiting for the builds using it),
    /// then removed with the step's input ledger.
    pub fn clear_cache(&self, id: &str) {
        let root = self.layout.caches().join(id);
        for (dir, lock) in instances_of(&root) {
            if let Ok(f) = File::options().create(true).truncate(false).write(true).open(&lock) {
                let _ = f.lock();
                super::remove_any(&dir);
            }
        }
        let _ = fs::remove_file(root.join("inputs"));
    }

    /// Mark the record of `drv` as made from outputs of steps run with kept caches that no run
    /// without them reproduced yet: `made_from` names each such step's record and its tree's
    /// `diff_id` (a step's own record names itself). Such a record is not offered to a team
    /// cache, and is used here only while what it was made from is still stored as it was.
    pub fn mark_unverified(&self, drv: &DrvHash, made_from: &[(DrvHash, Sha256)]) {
        let dir = self.layout.unverified();
        let _ = fs::create_dir_all(&dir);
        let text: String = made_from.iter().map(|(d, id)| format!("{} {}\n", d.hex(), id.hex())).collect();
        let _ = fs::write(dir.join(drv.hex()), text);
    }

    /// What the record of `drv` was made from that is not verified, if anything (an unreadable
    /// marker names nothing, and still marks it).
    pub fn unverified(&self, drv: &DrvHash) -> Option<Vec<(DrvHash, Sha256)>> {
        let text = fs::read_to_string(self.layout.unverified().join(drv.hex())).ok()?;
        let pairs = text
            .lines()
            .filter_map(|l| {
                let (d, id) = l.split_once(' ')?;
                Some((DrvHash::from_hex(d).ok()?, Sha256::from_hex(id).ok()?))
            })
            .collect();
        Some(pairs)
    }

    /// `drv`'s record was reproduced without caches (or is gone).
    pub fn clear_unverified(&self, drv: &DrvHash) {
        let _ = fs::remove_file(self.layout.unverified().join(drv.hex()));
    }

    /// The file a cache's companion state lives in (`name` in `caches/<id>/`): the input mtimes
    /// of a step with caches.
    pub fn cache_file(&self, id: &str, name: &str) -> PathBuf {
        self.layout.caches().join(id).join(name)
    }

    /// How many cache instances the store holds, and their bytes.
    pub fn cache_stats(&self) -> CacheStats {
        let mut s = CacheStats::default();
        for (_, dir, _) in instances(&self.layout.caches()) {
            s.caches += 1;
            s.cache_bytes += super::tree_bytes(&dir);
        }
        s
    }

    /// Remove the cache instances unused for longer than `max_age` (the store's exclusive lock is
    /// held: none is leased); returns how many went, how many stay, and the bytes freed.
    pub(super) fn gc_caches(&self, max_age: Duration) -> (u64, u64, u64) {
        let now = SystemTime::now();
        let (mut removed, mut kept, mut freed) = (0, 0, 0);
        let caches = self.layout.caches();
        for (root, dir, lock) in instances(&caches) {
            let used = fs::metadata(&lock).and_then(|m| m.modified()).ok();
            if used.is_some_and(|t| now.duration_since(t).unwrap_or_default() <= max_age) {
                kept += 1;
                continue;
            }
            let bytes = super::tree_bytes(&dir);
            if super::remove_any(&dir) {
                let _ = fs::remove_file(&lock);
                removed += 1;
                freed += bytes;
            } else {
                kept += 1;
            }
            // A cache with no instance left goes whole.
            if instances_of(&root).is_empty() {
                let _ = fs::remove_dir_all(&root);
            }
        }
        (removed, kept, freed)
    }
}

/// Every cache instance under `caches`: (its cache's directory, its directory, its lock file).
fn instances(caches: &Path) -> Vec<(PathBuf, PathBuf, PathBuf)> {
    let mut all = Vec::new();
    for c in fs::read_dir(caches).into_iter().flatten().flatten() {
        let root = c.path();
        all.extend(instances_of(&root).into_iter().map(|(dir, lock)| (root.clone(), dir, lock)));
    }
    all
}

/// The instances of one cache: (directory, lock file).
fn instances_of(root: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut v = Vec::new();
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str().filter(|n| n.parse::<u32>().is_ok()) else { continue };
        v.push((e.path(), root.join(format!("{n}.lock"))));
    }
    v
}
