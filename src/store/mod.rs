//! The local content-addressed store (default `cache/`).
//!
//! Owns the on-disk layout below (its folder names are spelled in [`Layout`] alone), atomic
//! writes, locking, `verify`, `gc` and `stats`; kept chunks are the `chunks` submodule's, steps'
//! declared caches the `caches` one's, cleaning up after killed builds the `clean` one's:
//!
//! ```text
//! cache/
//! ├── keys/<name>.secret             signing keys `compose cache keygen` writes (0600)
//! └── v1/                            store format version; another version lives beside it; 0700: the
//!     │                              store is its owner's alone (unpacked images hold setuid programs)
//!     ├── lock                       shared-locked by every build, exclusively by `gc`
//!     ├── blobs/sha256/<hex>         content-addressed blobs (layers, configs, manifests, .debs, indexes), 0444
//!     ├── records/<xx>/<drv-hex>.json  derivation → outputs records; mtime = last use (for gc)
//!     ├── stat/<key>.bin             stat caches of local source trees (size, mtime, inode → blake3)
//!     ├── locks/<drv-hex>            per-derivation build locks (two processes never build one twice)
//!     ├── shared/<remote-id>/<drv-hex>  empty markers: this record is known to be in that remote cache
//!     ├── names/<key>.json           per spec file: derivation name → the hash last built under it (`compose explain`)
//!     ├── verified/<hex>             symlinks to `DEV-INODE-SIZE-MTIME-CTIME` (times with nanoseconds): the identity blob <hex> had when last hashed
//!     ├── exports/<key>.json         what compose last wrote at an output path, with each file's identity
//!     ├── chunks/<key-hex>           kept compressed layer chunks: `BLOB-HEX OFFSET LEN BLAKE3-HEX [MEMO… SUM]`,
//!     │                              where in a stored layer blob the chunk with that key (`layer::chunk_key`)
//!     │                              is, and where the layer's digests went over it (`layer::ChunkMemo`)
//!     ├── rootfs/<manifest-hex>/     an image's root filesystem unpacked for build steps (their overlays'
//!     │                              lower directory; a cache: gc drops it); `.unpack-*/` while one is
//!     │                              being unpacked (a killed build's are leftovers)
//!     ├── rootfs/<manifest-hex>.seal the identity of every entry of that tree when it was unpacked:
//!     │                              a tree that no longer matches is unpacked again before use
//!     ├── logs/<drv-hex>.log         the whole log of a step that failed (gc drops old ones)
//!     ├── caches/<id>/               a step's declared cache (`caches` submodule): instances `<n>/`
//!     │                              (mounted read-write into the step), `<n>.lock` (leases; mtime =
//!     │                              last use, for gc), `about`, `inputs` (the step's input mtimes)
//!     └── tmp/                       temporary files, renamed into place when complete; steps' work
//!                                    directories (their runc state in `runc-state/`)
//! ```
//!
//! Every write goes to a temporary file in `tmp/` (same filesystem) and is renamed into place, so a
//! build killed at any moment leaves either nothing or a complete file. Blobs are written before the
//! records that name them, so a record never points at a missing blob unless someone deleted it;
//! [`Store::lookup`] checks that and treats such a record as a miss.
//!
//! No wrong byte leaves the store: a blob is only handed out ([`Store::has_blob`],
//! [`Store::lookup`], [`Store::read_blob`]) once it is known to match its digest. Hashing is the
//! proof; its result is remembered in `verified/` against the file's identity (inode, size, and
//! modification and change times in nanoseconds), which any write, truncation, replacement or
//! `chmod` changes. So a warm build hashes nothing, and a damaged blob (other bytes, truncated, a
//! symlink, a directory) is found on its next use, removed, and made or fetched again.
//! Leftover temporary files of killed builds (in `tmp/`, and half-unpacked images in
//! `rootfs/.unpack-*`) are removed by the next build that finds no other build running on the
//! store, and by `gc`; both count them.
//!
//! Whoever can write the store is trusted (it is meant to be private to its user): a record, a
//! `verified/` marker, a `chunks/` pointer line (its sum is a checksum, not a signature) are
//! believed as they are. What is checked is what goes wrong without them: damage, killed builds,
//! and what comes from elsewhere (a shared cache's records and blobs are checked before they
//! enter). A marker vouches only for the file it names: a kept chunk is always hashed against
//! the blake3 its pointer line keeps, whatever the marker of its blob says.
//!
//! [`Store::verify`] re-hashes every blob and asks its caller whether each record fits its kind
//! (`trust::problem`: output shapes, `diff_id`s, and whether each tree compose wrote
//! keeps the rules of [`crate::tarcheck`], so that no stored record can make a later build fail);
//! with `repair`, what does not is removed and made or fetched again.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;
use serde::Serialize;

use crate::hash::{DrvHash, Sha256};
pub use crate::record::{Output, Record, RECORD_VERSION};
use crate::util::IoError;

mod caches;
mod chunks;
mod clean;
mod layout;

pub use caches::{CacheLease, CacheStats};
use chunks::{ChunkPointer, StoreChunks, MAX_CHUNK_BYTES};
use clean::*;
pub use clean::{remove_any, remove_step_cgroups, step_cgroup};
pub use layout::{Layout, RUNC_STATE, STORE_VERSION, UNPACKING_PREFIX};

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StoreError + 'p {
    crate::util::io_err(action, path)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("store record `{path}` is damaged: {message}")]
    BadRecord { path: PathBuf, message: String },
    #[error("blob {expected} was written with the wrong content (got {actual})")]
    DigestMismatch { expected: Sha256, actual: Sha256 },
    #[error("blob {0} in the store is damaged (it does not match its digest); it was removed: build again to make or fetch it anew")]
    Damaged(Sha256),
    #[error(
        "the store `{}` belongs to uid {owner}, not to this user (uid {me}): whoever owns it can change what it hands out, \
         so it is not used; remove it, or choose another with --cache-dir or COMPOSE_CACHE_DIR",
        path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
}

/// An open store. Holds a shared lock on the store for its lifetime.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    layout: Layout,
    _lock: File,
    /// Leftovers of killed builds removed when the store was opened (alone on it).
    cleaned: u64,
}

/// Counts reported by `compose cache stats`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub records: u64,
    pub stat_caches: u64,
    pub temp_files: u64,
    /// Steps' declared caches: instances and bytes.
    pub caches: u64,
    pub cache_bytes: u64,
}

use crate::util::file_identity as identity;

/// Bytes under `dir`, files by apparent size; what cannot be read counts nothing.
pub(crate) fn tree_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Open `p` for reading without following a symlink at its last component.
fn open_nofollow(p: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(p)
}

/// What `compose cache verify` found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub records_checked: u64,
    /// Human-readable descriptions of each problem found.
    pub damage: Vec<String>,
    pub repaired: u64,
}

/// What `compose cache gc` removed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    pub records_removed: u64,
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    pub temp_removed: u64,
    pub records_kept: u64,
    pub blobs_kept: u64,
    /// Steps' cache instances unused for longer than the age, removed; and those kept.
    pub caches_removed: u64,
    pub caches_kept: u64,
}

impl Store {
    /// Open (creating if needed) the store at `root`, taking a shared lock.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let layout = Layout::of_root(root);
        let dir = layout.dir().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create store directory", &dir))?;
        private(root, &dir)?;
        for p in layout.made_on_open() {
            fs::create_dir_all(&p).map_err(io_err("create store directory", &p))?;
        }
        let lock_path = layout.lock();
        let lock =
            File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err("open store lock", &lock_path))?;
        // Alone on the store (no build, no gc holds its lock): whatever `tmp/` holds was left by
        // builds that were killed; remove it, then share the store as every build does.
        let mut cleaned = 0;
        if lock.try_lock().is_ok() {
            cleaned = clean_dir(&layout.tmp()) + clean_unpacking(&layout.rootfs());
        }
        lock.lock_shared().map_err(io_err("lock", &lock_path))?;
        Ok(Store { root: root.to_path_buf(), layout, _lock: lock, cleaned })
    }

    /// Does `dir` hold a store (the `v1/lock` every store has from when it was first opened)?
    pub fn is_store_root(dir: &Path) -> bool {
        fs::symlink_metadata(Layout::of_root(dir).lock()).is_ok_and(|m| m.is_file())
    }

    /// The compressed layer chunks this store keeps, for [`crate::layer::LayerWriter::with`].
    pub fn chunk_cache(&self) -> std::sync::Arc<dyn crate::layer::ChunkCache> {
        std::sync::Arc::new(StoreChunks { layout: self.layout.clone() })
    }

    /// Keeps the chunks of stored layer blob `blob` with where its digests went over them,
    /// except those the store keeps as they are already (reused, with the same memo). Best
    /// effort: a chunk not kept is compressed (and hashed) again next time.
    pub fn keep_chunks(&self, blob: &Sha256, chunks: &[crate::layer::ChunkRecord]) {
        let dir = self.layout.chunks();
        for c in chunks.iter().filter(|c| c.len <= MAX_CHUNK_BYTES) {
            let held = c.reused && c.memo_held;
            // Under its key, and under its key by content (found before its files are read).
            for (key, always) in [(Some(c.key), !held), (c.alias, !held)] {
                let Some(key) = key else { continue };
                let name = hex::encode(key);
                let path = dir.join(&name);
                if always || !path.exists() {
                    let _ = self.write_atomic(&path, ChunkPointer::line(&name, blob, c).as_bytes());
                }
            }
        }
    }

    /// Where each of the store's folders is.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The versioned directory (`ROOT/v1`) everything of this store lives in.
    pub fn dir(&self) -> &Path {
        self.layout.dir()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Sha256) -> PathBuf {
        self.layout.blob(d)
    }

    /// Where blob `d` lives in the store at `root` (which need not be open).
    pub fn blob_path_in(root: &Path, d: &Sha256) -> PathBuf {
        Layout::of_root(root).blob(d)
    }

    /// Drop derivation `d`'s record (its blobs stay, for gc): the next build makes it again.
    pub fn forget(&self, d: &DrvHash) {
        let _ = fs::remove_file(self.record_path(d));
        self.clear_unverified(d);
    }

    fn record_path(&self, d: &DrvHash) -> PathBuf {
        self.layout.record(d)
    }

    /// Where the stat cache `key` of the store at `root` lives (the store need not exist yet).
    pub fn stat_cache_path_in(root: &Path, key: &str) -> PathBuf {
        Layout::of_root(root).stat_cache(key)
    }

    /// Is blob `d` in the store, with the right content? A file hashed before and unchanged
    /// since (its identity is the one `verified/` remembers) is not read again; any other is
    /// hashed, and removed if it does not match.
    pub fn has_blob(&self, d: &Sha256) -> bool {
        self.checked_size(d).is_some()
    }

    /// The size of blob `d` if it is in the store with the right content (see [`Store::has_blob`]).
    pub fn checked_size(&self, d: &Sha256) -> Option<u64> {
        let p = self.blob_path(d);
        let meta = fs::symlink_metadata(&p).ok()?;
        if !meta.file_type().is_file() {
            self.discard(d);
            return None;
        }
        if self.marker_matches(d, &meta) {
            return Some(meta.len());
        }
        let id = identity(&meta);
        let hashed = open_nofollow(&p).and_then(Sha256::of_reader);
        match hashed {
            Ok((actual, n)) if actual == *d => {
                // Remembered only if nothing changed the file while it was read.
                if fs::symlink_metadata(&p).is_ok_and(|m| identity(&m) == id) {
                    self.mark_verified(d, &id);
                }
                Some(n)
            }
            Ok(_) => {
                self.discard(d);
                None
            }
            Err(_) => None,
        }
    }

    /// Was blob `d` hashed when its file looked as `meta` says?
    fn marker_matches(&self, d: &Sha256, meta: &fs::Metadata) -> bool {
        fs::read_link(self.layout.marker(d)).is_ok_and(|t| t.as_os_str() == identity(meta).as_str())
    }

    fn marker_path(&self, d: &Sha256) -> PathBuf {
        self.layout.marker(d)
    }

    /// Remember that blob `d` matched its digest when its file had identity `id`. Best effort:
    /// a lost marker only costs hashing the blob again.
    fn mark_verified(&self, d: &Sha256, id: &str) {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.layout.tmp().join(format!("v-{}-{n}", std::process::id()));
        if std::os::unix::fs::symlink(id, &tmp).is_ok() && fs::rename(&tmp, self.marker_path(d)).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Remove blob `d` (whatever is at its path: damaged bytes, a symlink, a directory) and its
    /// marker, so that it is made or fetched again.
    fn discard(&self, d: &Sha256) {
        let _ = fs::remove_file(self.marker_path(d));
        let p = self.blob_path(d);
        if fs::remove_file(&p).is_err() {
            remove_any(&p);
        }
    }

    /// The store's directory for temporary files (same filesystem as the blobs).
    pub fn tmp_dir(&self) -> PathBuf {
        self.layout.tmp()
    }

    /// A new temporary file in the store's `tmp/` directory.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let tmp = self.layout.tmp();
        tempfile::Builder::new().prefix("w-").tempfile_in(&tmp).map_err(io_err("create a temporary file in", &tmp))
    }

    /// Move a finished temporary file into place as blob `digest`. The caller vouches for the
    /// digest (it hashed the bytes as it wrote them). A blob already there is kept only if it is
    /// known to be good; anything else at its path is replaced.
    pub fn commit_blob(&self, tmp: tempfile::NamedTempFile, digest: &Sha256) -> Result<PathBuf, StoreError> {
        let dest = self.blob_path(digest);
        set_readonly(tmp.path())?;
        match fs::symlink_metadata(&dest) {
            // Same content already present (another build won the race); drop ours.
            Ok(m) if m.file_type().is_file() && self.marker_matches(digest, &m) => return Ok(dest),
            Ok(m) if m.is_dir() => self.discard(digest),
            _ => {}
        }
        tmp.persist(&dest).map_err(|e| StoreError::Io(IoError { action: "move blob into", path: dest.clone(), source: e.error }))?;
        if let Ok(m) = fs::symlink_metadata(&dest) {
            self.mark_verified(digest, &identity(&m));
        }
        Ok(dest)
    }

    /// Store a small blob held in memory.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Sha256, StoreError> {
        let digest = Sha256::of(data);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut tmp = self.temp_file()?;
        tmp.write_all(data).map_err(io_err("write", tmp.path()))?;
        self.commit_blob(tmp, &digest)?;
        Ok(digest)
    }

    /// The bytes of (small) blob `d`, checked against its digest; a damaged blob is removed and
    /// reported as [`StoreError::Damaged`].
    pub fn read_blob(&self, d: &Sha256) -> Result<Vec<u8>, StoreError> {
        let p = self.blob_path(d);
        let mut bytes = Vec::new();
        open_nofollow(&p).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io_err("read blob", &p))?;
        if Sha256::of(&bytes) != *d {
            self.discard(d);
            return Err(StoreError::Damaged(*d));
        }
        Ok(bytes)
    }

    /// The record of `drv`, if present and all its output blobs exist. Marks it used (for gc).
    pub fn lookup(&self, drv: &DrvHash) -> Result<Option<Record>, StoreError> {
        let p = self.record_path(drv);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io(IoError { action: "read record", path: p, source: e })),
        };
        let record: Record = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            // A damaged record is a miss: the derivation is rebuilt and the record rewritten.
            Err(_) => return Ok(None),
        };
        if record.version != RECORD_VERSION || record.drv != *drv {
            return Ok(None);
        }
        for out in record.outputs.values() {
            if self.checked_size(&out.digest) != Some(out.size) {
                return Ok(None);
            }
        }
        // Touch for gc; failure to touch is harmless.
        if let Ok(f) = File::options().write(true).open(&p) {
            let _ = f.set_modified(SystemTime::now());
        }
        Ok(Some(record))
    }

    fn shared_marker(&self, remote: &str, drv: &DrvHash) -> PathBuf {
        self.layout.shared().join(remote).join(drv.hex())
    }

    /// Is the record of `drv` known to be in remote cache `remote` (an id of the cache's URL)?
    pub fn is_shared(&self, remote: &str, drv: &DrvHash) -> bool {
        self.shared_marker(remote, drv).exists()
    }

    /// Remember that the record of `drv` is in remote cache `remote`. Best effort: a lost
    /// marker only costs one question to the remote later.
    pub fn mark_shared(&self, remote: &str, drv: &DrvHash) {
        let p = self.shared_marker(remote, drv);
        if let Some(parent) = p.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let _ = File::create(&p);
    }

    /// Forget every marker of remote cache `remote`: it lost what they say it holds (it was
    /// wiped or pruned); what builds use is shared with it again.
    pub fn forget_shared(&self, remote: &str) {
        remove_any(&self.layout.shared().join(remote));
    }

    /// Write `record` atomically. Its blobs must already be in the store.
    pub fn put_record(&self, record: &Record) -> Result<(), StoreError> {
        let p = self.record_path(&record.drv);
        let parent = p.parent().unwrap_or(self.layout.dir()).to_path_buf();
        fs::create_dir_all(&parent).map_err(io_err("create directory", &parent))?;
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| StoreError::BadRecord { path: p.clone(), message: e.to_string() })?;
        self.write_atomic(&p, &bytes)
    }

    /// The derivations last built for spec `key` (a canonical spec path), by name: what
    /// `compose explain` compares the next plan with. Empty when unknown or unreadable.
    pub fn last_built(&self, key: &str) -> BTreeMap<String, DrvHash> {
        let p = self.names_path(key);
        fs::read(&p).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Remember `names` as the derivations last built for spec `key` (written only if changed).
    /// Whatever is in the way (`names/` or the entry being something else than a file) is
    /// replaced.
    pub fn set_last_built(&self, key: &str, names: &BTreeMap<String, DrvHash>) -> Result<(), StoreError> {
        if self.last_built(key) == *names {
            return Ok(());
        }
        let p = self.names_path(key);
        let dir = self.layout.names();
        if fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) {
            remove_any(&dir);
        }
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            remove_any(&p);
        }
        let bytes = serde_json::to_vec(names).map_err(|e| StoreError::BadRecord { path: p.clone(), message: e.to_string() })?;
        self.write_atomic(&p, &bytes)
    }

    /// What compose last wrote at output path `dest` (opaque bytes of `image`), if known.
    pub fn export_state(&self, dest: &Path) -> Option<Vec<u8>> {
        fs::read(self.export_path(dest)).ok()
    }

    /// Remember what was written at output path `dest`.
    pub fn set_export_state(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = self.layout.exports();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        self.write_atomic(&self.export_path(dest), bytes)
    }

    fn export_path(&self, dest: &Path) -> PathBuf {
        // The output directory's real path: the same output reached another way is the same.
        let full = match (dest.parent().and_then(|p| p.canonicalize().ok()), dest.file_name()) {
            (Some(parent), Some(name)) => parent.join(name),
            _ => dest.to_path_buf(),
        };
        let key = blake3::hash(full.as_os_str().as_encoded_bytes()).to_hex();
        self.layout.exports().join(format!("{}.json", &key[..32]))
    }

    fn names_path(&self, key: &str) -> PathBuf {
        self.layout.names().join(format!("{}.json", &blake3::hash(key.as_bytes()).to_hex()[..32]))
    }

    /// Write a small file atomically (temporary file + rename).
    pub fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        Ok(crate::util::write_atomic(dest, bytes, 0o644, Some(&self.tmp_dir()))?)
    }

    /// Take the per-derivation build lock (blocks while another process builds `drv`).
    pub fn lock_derivation(&self, drv: &DrvHash) -> Result<File, StoreError> {
        let p = self.layout.locks().join(drv.hex());
        let f = File::options().create(true).truncate(false).write(true).open(&p).map_err(io_err("open derivation lock", &p))?;
        f.lock().map_err(io_err("lock", &p))?;
        Ok(f)
    }

    fn list_blobs(&self) -> Result<Vec<(Sha256, PathBuf)>, StoreError> {
        let dir = self.layout.blobs();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let e = e.map_err(io_err("list", &dir))?;
            let name = e.file_name();
            if let Some(d) = name.to_str().and_then(|n| Sha256::from_hex(n).ok()) {
                out.push((d, e.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn list_records(&self) -> Result<Vec<PathBuf>, StoreError> {
        let dir = self.layout.records();
        let mut out = Vec::new();
        for shard in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let shard = shard.map_err(io_err("list", &dir))?.path();
            if !shard.is_dir() {
                continue;
            }
            for e in fs::read_dir(&shard).map_err(io_err("list", &shard))? {
                let e = e.map_err(io_err("list", &shard))?;
                if e.path().extension().is_some_and(|x| x == "json") {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn count_dir(dir: &Path) -> u64 {
        fs::read_dir(dir).map(|r| r.count() as u64).unwrap_or(0)
    }

    pub fn stats(&self) -> Result<Stats, StoreError> {
        let mut s = Stats::default();
        for (_, p) in self.list_blobs()? {
            s.blobs += 1;
            s.blob_bytes += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        s.records = self.list_records()?.len() as u64;
        s.stat_caches = Self::count_dir(&self.layout.stat());
        s.temp_files = Self::count_dir(&self.layout.tmp()) + unpacking(&self.layout.rootfs()).len() as u64;
        let c = self.cache_stats();
        (s.caches, s.cache_bytes) = (c.caches, c.cache_bytes);
        Ok(s)
    }

    /// Re-hash every blob and check every record: that it parses, that the blobs it names are
    /// here and good, and what `check` says of it (whether its outputs fit its kind). With
    /// `repair`, damaged blobs and records that fail any of these are removed (they will be
    /// made again).
    pub fn verify(&self, repair: bool, check: &(dyn Fn(&Store, &Record) -> Option<String> + Sync)) -> Result<VerifyReport, StoreError> {
        let blobs = self.list_blobs()?;
        type Checked = (Sha256, Result<(Sha256, u64), io::Error>);
        let results: Vec<Checked> = blobs
            .into_par_iter()
            .map(|(d, p)| {
                let r = open_nofollow(&p).and_then(Sha256::of_reader);
                if let (Ok((actual, _)), Ok(m)) = (&r, fs::symlink_metadata(&p)) {
                    if *actual == d {
                        self.mark_verified(&d, &identity(&m));
                    }
                }
                (d, r)
            })
            .collect();
        let mut report = VerifyReport::default();
        let mut bad: BTreeSet<Sha256> = BTreeSet::new();
        for (d, r) in results {
            report.blobs_checked += 1;
            let problem = match r {
                Ok((actual, n)) => {
                    report.bytes_checked += n;
                    (actual != d).then(|| format!("blob {d} has content {actual}"))
                }
                Err(e) => Some(format!("blob {d} cannot be read: {e}")),
            };
            if let Some(msg) = problem {
                report.damage.push(msg);
                bad.insert(d);
                if repair {
                    self.discard(&d);
                    report.repaired += 1;
                }
            }
        }
        let records = self.list_records()?;
        let problems: Vec<(PathBuf, Option<String>)> = records
            .into_par_iter()
            .map(|p| {
                let problem = match fs::read(&p).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok()) {
                    None => Some(format!("record {} cannot be parsed", p.display())),
                    Some(r) => r
                        .outputs
                        .values()
                        .find_map(|o| {
                            if bad.contains(&o.digest) {
                                Some(format!("record {} names damaged blob {}", r.drv, o.digest))
                            } else if self.checked_size(&o.digest).is_none() {
                                Some(format!("record {} names missing blob {}", r.drv, o.digest))
                            } else {
                                None
                            }
                        })
                        .or_else(|| check(self, &r).map(|why| format!("record {} ({}) does not fit its kind: {why}", r.drv, r.kind))),
                };
                (p, problem)
            })
            .collect();
        for (p, problem) in problems {
            report.records_checked += 1;
            if let Some(msg) = problem {
                report.damage.push(msg);
                if repair && fs::remove_file(&p).is_ok() {
                    report.repaired += 1;
                }
            }
        }
        Ok(report)
    }

    /// Remove records not used within `max_age`, blobs no remaining record names (and not
    /// written within `max_age`), and leftover temporary files. Waits for running builds to end:
    /// it upgrades this store's shared lock to an exclusive one.
    pub fn gc(&self, max_age: Duration) -> Result<GcReport, StoreError> {
        let lock_path = self.layout.lock();
        self._lock.lock().map_err(io_err("lock", &lock_path))?;
        let result = self.gc_locked(max_age);
        // Back to shared, as the rest of this store's life expects.
        let _ = self._lock.lock_shared();
        result
    }

    fn gc_locked(&self, max_age: Duration) -> Result<GcReport, StoreError> {
        let now = SystemTime::now();
        let is_old = |p: &Path| -> bool {
            fs::metadata(p).and_then(|m| m.modified()).map(|t| now.duration_since(t).unwrap_or_default() > max_age).unwrap_or(true)
        };
        let mut report = GcReport::default();
        let mut live: BTreeSet<Sha256> = BTreeSet::new();
        for p in self.list_records()? {
            let rec = fs::read(&p).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok());
            match rec {
                Some(r) if !is_old(&p) => {
                    report.records_kept += 1;
                    live.extend(r.outputs.values().map(|o| o.digest));
                }
                _ => {
                    fs::remove_file(&p).map_err(io_err("remove", &p))?;
                    report.records_removed += 1;
                }
            }
        }
        for (d, p) in self.list_blobs()? {
            if live.contains(&d) || !is_old(&p) {
                report.blobs_kept += 1;
                continue;
            }
            let n = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&p).map_err(io_err("remove", &p))?;
            report.blobs_removed += 1;
            report.bytes_freed += n;
        }
        let (removed, kept, freed) = self.gc_caches(max_age);
        (report.caches_removed, report.caches_kept) = (removed, kept);
        report.bytes_freed += freed;
        // With what opening the store removed (`compose cache gc` opens it just before).
        report.temp_removed += self.cleaned + clean_dir(&self.layout.tmp()) + clean_unpacking(&self.layout.rootfs());
        let locks = self.layout.locks();
        for e in fs::read_dir(&locks).map_err(io_err("list", &locks))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        // Chunks kept in blobs that are gone.
        if let Ok(rd) = fs::read_dir(self.layout.chunks()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let blob = fs::read_to_string(e.path()).ok().and_then(|t| ChunkPointer::parse(&name, &t)).map(|p| p.blob);
                if blob.is_none_or(|d| !self.blob_path(&d).exists()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        // Markers of blobs that are gone, and what was exported long ago.
        for (dir, markers) in [(self.layout.verified(), true), (self.layout.exports(), false)] {
            if let Ok(rd) = fs::read_dir(dir) {
                for e in rd.flatten() {
                    let gone = markers
                        && e.file_name().to_str().and_then(|n| Sha256::from_hex(n).ok()).is_none_or(|d| !self.blob_path(&d).exists());
                    if gone || (!markers && is_old(&e.path())) {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        // Images unpacked for build steps are a cache of blobs the store holds: made again when
        // a step needs them. Logs of failed steps go when old.
        remove_any(&self.layout.rootfs());
        if let Ok(rd) = fs::read_dir(self.layout.logs()) {
            for e in rd.flatten() {
                if is_old(&e.path()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let stat = self.layout.stat();
        for e in fs::read_dir(&stat).map_err(io_err("list", &stat))?.flatten() {
            if is_old(&e.path()) {
                let _ = fs::remove_file(e.path());
            }
        }
        // Markers are hints; dropping them all only costs a question per record next time.
        let _ = fs::remove_dir_all(self.layout.shared());
        Ok(report)
    }
}

/// Refuse a store (its `root` or its versioned `dir`) that another user owns, as git refuses a
/// repository another user owns: its owner could swap records and blobs under this user's builds.
/// Then make `dir` its owner's alone (0700), as it should have been made: unpacked images hold
/// setuid programs, step logs and work directories what steps saw.
fn private(root: &Path, dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for p in [root, dir] {
        let m = fs::symlink_metadata(p).map_err(io_err("read", p))?;
        if m.uid() != me {
            return Err(StoreError::NotOwned { path: p.to_path_buf(), owner: m.uid(), me });
        }
    }
    let m = fs::symlink_metadata(dir).map_err(io_err("read", dir))?;
    if m.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("set permissions of", dir))?;
    }
    Ok(())
}

/// Read a whole small file; `None` if it does not exist.
pub fn read_optional(p: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match File::open(p) {
        Ok(mut f) => {
            let mut v = Vec::new();
            f.read_to_end(&mut v).map_err(io_err("read", p))?;
            Ok(Some(v))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io(IoError { action: "read", path: p.to_path_buf(), source: e })),
    }
}

/// Buffered writer over a temp file, for streaming large blobs into the store.
pub fn buffered(tmp: &tempfile::NamedTempFile) -> Result<BufWriter<File>, StoreError> {
    let f = tmp.reopen().map_err(io_err("open", tmp.path()))?;
    Ok(BufWriter::with_capacity(1 << 20, f))
}

#[cfg(test)]
mod tests;
