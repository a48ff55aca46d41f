//! The local content-addressed store (default `cache/`).
//!
//! Owns the on-disk layout below, atomic writes, locking, `verify`, `gc` and `stats`:
//!
//! ```text
//! cache/
//! ├── README.md                      (describes this layout; not used by compose)
//! └── v1/                            store format version; another version lives beside it; 0700: the
//!     │                              store is its owner's alone (unpacked images hold setuid programs)
//!     ├── lock                       shared-locked by every build, exclusively by `gc`
//!     ├── blobs/sha256/<hex>         content-addressed blobs (layers, configs, manifests, .debs, indexes), 0444
//!     ├── records/<xx>/<drv-hex>.json  derivation → outputs records; mtime = last use (for gc)
//!     ├── stat/<key>.bin             stat caches of local source trees (size, mtime, inode → blake3)
//!     ├── locks/<drv-hex>            per-derivation build locks (two processes never build one twice)
//!     ├── shared/<remote-id>/<drv-hex>  empty markers: this record is known to be in that remote cache
//!     ├── names/<key>.json           per spec file: derivation name → the hash last built under it (`compose explain`)
//!     ├── verified/<hex>             symlinks to `INODE-SIZE-MTIME-CTIME`: the identity blob <hex> had when last hashed
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

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StoreError + 'p {
    crate::util::io_err(action, path)
}

/// Store format version; the store lives in `<root>/v<STORE_VERSION>/`.
pub const STORE_VERSION: u32 = 1;
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
    dir: PathBuf,
    _lock: File,
    /// Leftovers of killed builds removed when the store was opened (alone on it).
    cleaned: u64,
}

/// The prefix of the directory an image is unpacked into (in `rootfs/`) before it is renamed to
/// its manifest's digest: one found while no build runs is a killed build's leftover.
pub const UNPACKING_PREFIX: &str = ".unpack-";

/// Counts reported by `compose cache stats`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub records: u64,
    pub stat_caches: u64,
    pub temp_files: u64,
}

use crate::util::file_identity as identity;

/// Open `p` for reading without following a symlink at its last component.
/// Where a kept chunk's compressed bytes are: a range of a stored layer blob, and their blake3;
/// and where the layer's digests went over it (its memo), when the line's own sum checks out.
struct ChunkPointer {
    blob: Sha256,
    offset: u64,
    len: u64,
    check: [u8; 32],
    memo: Option<crate::layer::ChunkMemo>,
}

/// Longest chunk pointer accepted: a chunk's compressed bytes are at most about its 1 MiB of
/// input (incompressible data grows by a few bytes per block).
const MAX_CHUNK_BYTES: u64 = 2 << 20;

impl ChunkPointer {
    /// `BLOB OFFSET LEN CHECK [TAR-BEFORE TAR-AFTER BLOB-BEFORE BLOB-AFTER SUM]`, SUM being the
    /// first 16 bytes of blake3 over the key and the rest of the line: a memo is trusted only
    /// whole (a wrong one would give a layer a wrong digest).
    fn parse(key: &str, text: &str) -> Option<ChunkPointer> {
        let f: Vec<&str> = text.trim_end().split(' ').collect();
        if f.len() != 4 && f.len() != 9 {
            return None;
        }
        let blob = Sha256::from_hex(f[0]).ok()?;
        let offset = f[1].parse().ok()?;
        let len = f[2].parse().ok()?;
        let mut check = [0u8; 32];
        hex::decode_to_slice(f[3], &mut check).ok()?;
        let memo = (f.len() == 9 && f[8] == Self::sum(key, &f[..8].join(" "))).then(|| {
            let s = |i: usize| crate::layer::ShaState::decode(f[i]);
            Some(crate::layer::ChunkMemo { tar: (s(4)?, s(5)?), blob: (s(6)?, s(7)?) })
        });
        (len <= MAX_CHUNK_BYTES).then_some(ChunkPointer { blob, offset, len, check, memo: memo.flatten() })
    }

    fn sum(key: &str, fields: &str) -> String {
        let mut h = blake3::Hasher::new();
        h.update(key.as_bytes()).update(b" ").update(fields.as_bytes());
        hex::encode(&h.finalize().as_bytes()[..16])
    }

    fn line(key: &str, blob: &Sha256, c: &crate::layer::ChunkRecord) -> String {
        let mut fields = format!("{} {} {} {}", blob.hex(), c.offset, c.len, hex::encode(c.check));
        if let Some(m) = &c.memo {
            for s in [m.tar.0, m.tar.1, m.blob.0, m.blob.1] {
                fields.push(' ');
                fields.push_str(&s.encode());
            }
            let sum = Self::sum(key, &fields);
            fields.push(' ');
            fields.push_str(&sum);
        }
        fields.push('\n');
        fields
    }
}

/// The store's kept chunks as a [`crate::layer::ChunkCache`]: a chunk is read from the layer blob
/// it was written into and handed out only when its bytes still hash to what was kept.
struct StoreChunks {
    dir: PathBuf,
}

impl crate::layer::ChunkCache for StoreChunks {
    fn get(&self, key: &crate::layer::ChunkKey) -> Option<crate::layer::Kept> {
        use std::os::unix::fs::FileExt;
        let name = hex::encode(key);
        let text = fs::read_to_string(self.dir.join("chunks").join(&name)).ok()?;
        let p = ChunkPointer::parse(&name, &text)?;
        let f = open_nofollow(&self.dir.join("blobs/sha256").join(p.blob.hex())).ok()?;
        let mut bytes = vec![0u8; usize::try_from(p.len).ok()?];
        f.read_exact_at(&mut bytes, p.offset).ok()?;
        // The bytes are always checked: a blob's verified marker vouches for the blob it names
        // (its bytes are its digest's), not for the range a pointer line says the chunk is at.
        (*blake3::hash(&bytes).as_bytes() == p.check).then_some(crate::layer::Kept { bytes, memo: p.memo })
    }
}

/// Where the verified marker of blob `d` of the store in `dir` (`ROOT/v1`) lives.
fn marker_path_in(dir: &Path, d: &Sha256) -> PathBuf {
    dir.join("verified").join(d.hex())
}

/// Blob `d` still has the identity it had when it was last hashed (see `verified/`).
fn marker_matches_in(dir: &Path, d: &Sha256, meta: &fs::Metadata) -> bool {
    fs::read_link(marker_path_in(dir, d)).is_ok_and(|t| t.as_os_str() == identity(meta).as_str())
}

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
}

impl Store {
    /// Open (creating if needed) the store at `root`, taking a shared lock.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let dir = root.join(format!("v{STORE_VERSION}"));
        fs::create_dir_all(&dir).map_err(io_err("create store directory", &dir))?;
        private(root, &dir)?;
        for sub in ["blobs/sha256", "records", "stat", "locks", "tmp", "verified", "chunks"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err("create store directory", &p))?;
        }
        let lock_path = dir.join("lock");
        let lock =
            File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err("open store lock", &lock_path))?;
        // Alone on the store (no build, no gc holds its lock): whatever `tmp/` holds was left by
        // builds that were killed; remove it, then share the store as every build does.
        let mut cleaned = 0;
        if lock.try_lock().is_ok() {
            cleaned = clean_dir(&dir.join("tmp")) + clean_unpacking(&dir.join("rootfs"));
        }
        lock.lock_shared().map_err(io_err("lock", &lock_path))?;
        Ok(Store { root: root.to_path_buf(), dir, _lock: lock, cleaned })
    }

    /// Does `dir` hold a store (the `v1/lock` every store has from when it was first opened)?
    pub fn is_store_root(dir: &Path) -> bool {
        fs::symlink_metadata(dir.join(format!("v{STORE_VERSION}")).join("lock")).is_ok_and(|m| m.is_file())
    }

    /// The compressed layer chunks this store keeps, for [`crate::layer::LayerWriter::with`].
    pub fn chunk_cache(&self) -> std::sync::Arc<dyn crate::layer::ChunkCache> {
        std::sync::Arc::new(StoreChunks { dir: self.dir.clone() })
    }

    /// Keeps the chunks of stored layer blob `blob` with where its digests went over them,
    /// except those the store keeps as they are already (reused, with the same memo). Best
    /// effort: a chunk not kept is compressed (and hashed) again next time.
    pub fn keep_chunks(&self, blob: &Sha256, chunks: &[crate::layer::ChunkRecord]) {
        let dir = self.dir.join("chunks");
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

    /// The versioned directory (`ROOT/v1`) everything of this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Sha256) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// Where blob `d` lives in the store at `root` (which need not be open).
    pub fn blob_path_in(root: &Path, d: &Sha256) -> PathBuf {
        root.join(format!("v{STORE_VERSION}")).join("blobs/sha256").join(d.hex())
    }

    /// Drop derivation `d`'s record (its blobs stay, for gc): the next build makes it again.
    pub fn forget(&self, d: &DrvHash) {
        let _ = fs::remove_file(self.record_path(d));
    }

    fn record_path(&self, d: &DrvHash) -> PathBuf {
        let h = d.hex();
        self.dir.join("records").join(&h[..2]).join(format!("{h}.json"))
    }

    /// Where the stat cache `key` of the store at `root` lives (the store need not exist yet).
    pub fn stat_cache_path_in(root: &Path, key: &str) -> PathBuf {
        root.join(format!("v{STORE_VERSION}")).join("stat").join(format!("{key}.bin"))
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
        marker_matches_in(&self.dir, d, meta)
    }

    fn marker_path(&self, d: &Sha256) -> PathBuf {
        marker_path_in(&self.dir, d)
    }

    /// Remember that blob `d` matched its digest when its file had identity `id`. Best effort:
    /// a lost marker only costs hashing the blob again.
    fn mark_verified(&self, d: &Sha256, id: &str) {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join("tmp").join(format!("v-{}-{n}", std::process::id()));
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
            make_writable(&p);
            let _ = fs::remove_dir_all(&p);
        }
    }

    /// The store's directory for temporary files (same filesystem as the blobs).
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// A new temporary file in the store's `tmp/` directory.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let tmp = self.dir.join("tmp");
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
        self.dir.join("shared").join(remote).join(drv.hex())
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

    /// Write `record` atomically. Its blobs must already be in the store.
    pub fn put_record(&self, record: &Record) -> Result<(), StoreError> {
        let p = self.record_path(&record.drv);
        let parent = p.parent().unwrap_or(&self.dir).to_path_buf();
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
        let dir = self.dir.join("names");
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
        let dir = self.dir.join("exports");
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
        self.dir.join("exports").join(format!("{}.json", &key[..32]))
    }

    fn names_path(&self, key: &str) -> PathBuf {
        self.dir.join("names").join(format!("{}.json", &blake3::hash(key.as_bytes()).to_hex()[..32]))
    }

    /// Write a small file atomically (temporary file + rename).
    pub fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        Ok(crate::util::write_atomic(dest, bytes, 0o644, Some(&self.tmp_dir()))?)
    }

    /// Take the per-derivation build lock (blocks while another process builds `drv`).
    pub fn lock_derivation(&self, drv: &DrvHash) -> Result<File, StoreError> {
        let p = self.dir.join("locks").join(drv.hex());
        let f = File::options().create(true).truncate(false).write(true).open(&p).map_err(io_err("open derivation lock", &p))?;
        f.lock().map_err(io_err("lock", &p))?;
        Ok(f)
    }

    fn list_blobs(&self) -> Result<Vec<(Sha256, PathBuf)>, StoreError> {
        let dir = self.dir.join("blobs/sha256");
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
        let dir = self.dir.join("records");
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

    fn count_dir(&self, sub: &str) -> u64 {
        fs::read_dir(self.dir.join(sub)).map(|r| r.count() as u64).unwrap_or(0)
    }

    pub fn stats(&self) -> Result<Stats, StoreError> {
        let mut s = Stats::default();
        for (_, p) in self.list_blobs()? {
            s.blobs += 1;
            s.blob_bytes += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        s.records = self.list_records()?.len() as u64;
        s.stat_caches = self.count_dir("stat");
        s.temp_files = self.count_dir("tmp") + unpacking(&self.dir.join("rootfs")).len() as u64;
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
        let lock_path = self.dir.join("lock");
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
        // With what opening the store removed (`compose cache gc` opens it just before).
        report.temp_removed += self.cleaned + clean_dir(&self.dir.join("tmp")) + clean_unpacking(&self.dir.join("rootfs"));
        let locks = self.dir.join("locks");
        for e in fs::read_dir(&locks).map_err(io_err("list", &locks))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        // Chunks kept in blobs that are gone.
        if let Ok(rd) = fs::read_dir(self.dir.join("chunks")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let blob = fs::read_to_string(e.path()).ok().and_then(|t| ChunkPointer::parse(&name, &t)).map(|p| p.blob);
                if blob.is_none_or(|d| !self.blob_path(&d).exists()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        // Markers of blobs that are gone, and what was exported long ago.
        for sub in ["verified", "exports"] {
            if let Ok(rd) = fs::read_dir(self.dir.join(sub)) {
                for e in rd.flatten() {
                    let gone = sub == "verified"
                        && e.file_name().to_str().and_then(|n| Sha256::from_hex(n).ok()).is_none_or(|d| !self.blob_path(&d).exists());
                    if gone || (sub == "exports" && is_old(&e.path())) {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        // Images unpacked for build steps are a cache of blobs the store holds: made again when
        // a step needs them. Logs of failed steps go when old.
        remove_any(&self.dir.join("rootfs"));
        if let Ok(rd) = fs::read_dir(self.dir.join("logs")) {
            for e in rd.flatten() {
                if is_old(&e.path()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let stat = self.dir.join("stat");
        for e in fs::read_dir(&stat).map_err(io_err("list", &stat))?.flatten() {
            if is_old(&e.path()) {
                let _ = fs::remove_file(e.path());
            }
        }
        // Markers are hints; dropping them all only costs a question per record next time.
        let _ = fs::remove_dir_all(self.dir.join("shared"));
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

/// Where, in a build step's work directory under `tmp/`, the sandbox keeps runc's state: the
/// containers a killed build left running are found there and killed.
pub const RUNC_STATE: &str = "runc-state";

/// The cgroup (below each hierarchy's root) the sandbox runs container `id` in.
pub fn step_cgroup(id: &str) -> String {
    format!("/compose/{id}")
}

/// Remove container `id`'s cgroups where runc left them (it was killed before it could), waiting
/// up to a second for its killed processes to leave them.
pub fn remove_step_cgroups(id: &str) {
    let rel = step_cgroup(id);
    let mut dirs: Vec<PathBuf> = vec![PathBuf::from(format!("/sys/fs/cgroup{rel}"))];
    for h in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        dirs.push(h.path().join(rel.trim_start_matches('/')));
    }
    dirs.retain(|d| d.is_dir());
    for _ in 0..20 {
        dirs.retain(|d| fs::remove_dir(d).is_err() && d.is_dir());
        if dirs.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kill every container whose runc state lies in a work directory under `dir` (a store's
/// `tmp/`): what a killed compose left running. Only the process runc started is killed (its
/// start time must match), and with it, as the init of its PID namespace, all of the step; its
/// cgroups go too.
fn reap_containers(dir: &Path) {
    for work in fs::read_dir(dir).into_iter().flatten().flatten() {
        for c in fs::read_dir(work.path().join(RUNC_STATE)).into_iter().flatten().flatten() {
            let Ok(text) = fs::read_to_string(c.path().join("state.json")) else { continue };
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            let pid = doc.get("init_process_pid").and_then(|v| v.as_i64()).unwrap_or(0);
            let start = doc.get("init_process_start").and_then(|v| v.as_u64());
            // Field 22 of /proc/PID/stat, after the command's name in parentheses.
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let started = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(19)).and_then(|v| v.parse::<u64>().ok());
            if pid > 1 && start.is_some() && started == start {
                // SAFETY: kill takes no pointers; the pid is the container's init, checked by its start time.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            if let Some(id) = c.file_name().to_str() {
                remove_step_cgroups(id);
            }
        }
    }
}

/// Remove everything in `dir` (a store's `tmp/`): files, build steps' work directories (their
/// containers killed and their overlay mounts detached first, left by a killed build) and
/// directories made read-only by what ran in them. Returns how many entries went.
fn clean_dir(dir: &Path) -> u64 {
    let entries: Vec<fs::DirEntry> = fs::read_dir(dir).into_iter().flatten().flatten().collect();
    if entries.is_empty() {
        // The usual case, on every build's start: no mount table to read.
        return 0;
    }
    reap_containers(dir);
    unmount_below(dir);
    let mut n = 0;
    for e in entries {
        let p = e.path();
        if fs::remove_file(&p).is_ok() {
            n += 1;
        } else {
            make_writable(&p);
            if fs::remove_dir_all(&p).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// The directories of images being unpacked in `rootfs` (see [`UNPACKING_PREFIX`]).
fn unpacking(rootfs: &Path) -> Vec<PathBuf> {
    let rd = fs::read_dir(rootfs).into_iter().flatten().flatten();
    rd.filter(|e| e.file_name().as_encoded_bytes().starts_with(UNPACKING_PREFIX.as_bytes())).map(|e| e.path()).collect()
}

/// Remove the half-unpacked images a killed build left in `rootfs` (alone on the store: nobody
/// is unpacking). Returns how many went.
fn clean_unpacking(rootfs: &Path) -> u64 {
    unpacking(rootfs).iter().filter(|p| remove_any(p)).count() as u64
}

/// Remove whatever is at `p`: a file, a symlink, or a directory tree (made writable first, as
/// what was unpacked or run in it may have left it read-only). True if it went.
pub fn remove_any(p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            make_writable(p);
            fs::remove_dir_all(p).is_ok()
        }
        Ok(_) => fs::remove_file(p).is_ok(),
        Err(_) => false,
    }
}

/// Detach every mount below `dir` (deepest first).
fn unmount_below(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(&dir) && *m != dir)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid NUL-terminated path; umount2 only reads it.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// `/proc/self/mountinfo` writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Give the owner write (and search) permission on every directory below `p`, so that it can
/// be removed by a user other than root.
fn make_writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = fs::symlink_metadata(p) else { return };
    if !m.is_dir() {
        return;
    }
    let _ = fs::set_permissions(p, fs::Permissions::from_mode(m.permissions().mode() | 0o700));
    for e in fs::read_dir(p).into_iter().flatten().flatten() {
        make_writable(&e.path());
    }
}

fn set_readonly(p: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o444)).map_err(io_err("set permissions of", p))
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
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_missing_blob_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.put_bytes(b"hello").unwrap();
        let drv = DrvHash([7; 32]);
        let mut outputs = BTreeMap::new();
        outputs.insert("blob".to_string(), Output { digest: d, size: 5, media_type: "x".into(), diff_id: None });
        let rec = Record { version: RECORD_VERSION, drv, kind: "t".into(), outputs, inputs: BTreeMap::new() };
        store.put_record(&rec).unwrap();
        assert_eq!(store.lookup(&drv).unwrap(), Some(rec));
        assert!(store.verify(false, &|_, _| None).unwrap().damage.is_empty());
        let p = store.blob_path(&d);
        fs::remove_file(&p).unwrap();
        assert_eq!(store.lookup(&drv).unwrap(), None);
        let report = store.verify(true, &|_, _| None).unwrap();
        assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
    }

    /// Defect 4g: a chunk pointer whose range did not hash to its recorded blake3 was used when
    /// the blob's verified marker matched. The marker vouches for the blob, not for the range.
    #[test]
    fn a_chunk_pointer_is_used_only_when_its_range_hashes_to_its_check() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let blob = store.put_bytes(&data).unwrap();
        let p = store.blob_path(&blob);
        assert!(marker_matches_in(store.dir(), &blob, &fs::symlink_metadata(&p).unwrap()), "the blob is verified");
        let state = crate::layer::ShaState::default();
        let chunk = |offset: u64, check: [u8; 32]| crate::layer::ChunkRecord {
            key: [9; 32],
            offset,
            len: 100,
            check,
            reused: false,
            memo: Some(crate::layer::ChunkMemo { tar: (state, state), blob: (state, state) }),
            memo_held: false,
            alias: None,
        };
        let right = *blake3::hash(&data[100..200]).as_bytes();
        store.keep_chunks(&blob, &[chunk(100, right)]);
        let cache = store.chunk_cache();
        assert_eq!(cache.get(&[9; 32]).map(|k| k.bytes), Some(data[100..200].to_vec()));
        // A whole line (its sum checks out) naming another range: never used.
        store.keep_chunks(&blob, &[chunk(101, right)]);
        assert_eq!(cache.get(&[9; 32]), None);
    }

    #[test]
    fn verify_detects_corrupt_blob() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.put_bytes(b"hello").unwrap();
        let p = store.blob_path(&d);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&p, b"jello").unwrap();
        let report = store.verify(true, &|_, _| None).unwrap();
        assert_eq!(report.damage.len(), 1);
        assert!(!p.exists());
    }

    fn age(p: &Path, days: u64) {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(p).unwrap().permissions().mode();
        fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
        let old = SystemTime::now() - Duration::from_secs(86_400 * days);
        File::options().write(true).open(p).unwrap().set_modified(old).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn gc_keeps_what_recent_records_name_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let orphan = store.put_bytes(b"orphan").unwrap();
        let fresh_orphan = store.put_bytes(b"fresh orphan").unwrap();
        let kept = store.put_bytes(b"kept").unwrap();
        let stale = store.put_bytes(b"stale").unwrap();
        let record = |drv: DrvHash, d: Sha256, n: u64| {
            let mut outputs = BTreeMap::new();
            outputs.insert("o".to_string(), Output { digest: d, size: n, media_type: "x".into(), diff_id: None });
            Record { version: RECORD_VERSION, drv, kind: "t".into(), outputs, inputs: BTreeMap::new() }
        };
        store.put_record(&record(DrvHash([1; 32]), kept, 4)).unwrap();
        store.put_record(&record(DrvHash([2; 32]), stale, 5)).unwrap();
        for d in [orphan, kept, stale] {
            age(&store.blob_path(&d), 30);
        }
        age(&store.record_path(&DrvHash([2; 32])), 30);
        store.temp_file().unwrap().keep().unwrap();
        let r = store.gc(Duration::from_secs(86_400 * 7)).unwrap();
        assert_eq!((r.records_removed, r.records_kept), (1, 1));
        assert_eq!((r.blobs_removed, r.blobs_kept), (2, 2), "{r:?}");
        assert_eq!(r.temp_removed, 1);
        assert!(store.has_blob(&kept) && store.has_blob(&fresh_orphan));
        assert!(!store.has_blob(&orphan) && !store.has_blob(&stale));
        assert!(store.lookup(&DrvHash([1; 32])).unwrap().is_some());
        assert!(store.lookup(&DrvHash([2; 32])).unwrap().is_none());
        // The store is still usable (shared lock back) after gc.
        store.put_bytes(b"after").unwrap();
    }
}
