//! Local sources: walking and fingerprinting the files a spec copies into an image.
//!
//! Owns the rules for reading the user's tree (symlinks inside a copied directory are copied as
//! links and never followed; a copy source that resolves outside the spec directory is refused;
//! only regular files, directories and symlinks are accepted; names must be UTF-8) and the *stat
//! cache*: per spec directory, a map from absolute path to (size, mtime, ctime, inode) → blake3,
//! kept in the store, so an unchanged tree is stat'ed but not re-read (git's index does the same).
//! Entries whose mtime is within [`RACY_WINDOW_NS`] of the moment the cache is saved are not cached,
//! so a file changed within the filesystem's timestamp granularity is always re-hashed.
//!
//! What a directory copy picks up leaves out, always, the store and the output directory of this
//! build (they often live in the spec's directory, where `copy "." …` would read the store while
//! writing it and copy the last export into the image), any other compose store or output
//! directory it finds (one of another `--cache-dir` or `--out`, or left from before: a store is
//! known by its `v1/lock` or a signing key in its `keys/`, an output directory by its
//! `.compose-lock`; each is named in a warning), version control directories ([`VCS_DIRS`]) and
//! the spec file and its lockfile unless the ignore file takes them back, and whatever the spec
//! directory's ignore file lists:
//! `.composeignore`, or else `.dockerignore`, with `.dockerignore`'s rules (patterns relative to
//! the spec directory, `*` within one name, `**` across directories, `!` to take back, the last
//! matching line wins, a matched directory takes everything below it). A source named explicitly
//! is always read.
//!
//! This runs before planning: `plan` itself does no I/O and takes the fingerprints from here.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use crate::hash::ContentHash;
use crate::store::{read_optional, Store, StoreError};

/// `p` made absolute and, as far as it exists, canonical (a store or output directory that is
/// not made yet is compared by its lexical absolute path).
fn absolute(p: &Path) -> Option<PathBuf> {
    if p.as_os_str().is_empty() {
        return None;
    }
    let abs = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().ok()?.join(p) };
    Some(fs::canonicalize(&abs).unwrap_or(abs))
}

/// Files modified this close (in ns) to the cache save time are not cached.
pub const RACY_WINDOW_NS: i128 = 2_000_000_000;
/// Magic and version of the binary stat-cache format.
const STAT_CACHE_MAGIC: &[u8; 8] = b"CSTAT\x00\x00\x02";

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("`{path}` does not exist")]
    Missing { path: PathBuf },
    #[error("`{path}` resolves to `{resolved}`, outside the spec directory; symlinks out of the spec directory are not followed")]
    Escapes { path: PathBuf, resolved: PathBuf, dir: PathBuf },
    #[error("`{path}` is a {kind}; only regular files, directories and symlinks can be copied")]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("`{path}` has a name that is not valid UTF-8")]
    NonUtf8 { path: PathBuf },
    /// Not the spec's fault: the file was being written to while it was read.
    #[error("`{path}` changed since it was read (is something writing to it?); build again")]
    Changed { path: PathBuf },
    #[error("`{path}` line {line}: `{pattern}` is not a valid pattern: {reason}")]
    BadIgnore { path: PathBuf, line: usize, pattern: String, reason: String },
    #[error(transparent)]
    Io(#[from] crate::util::IoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SourceError {
    /// The same error with paths inside `dir` shown relative to it (as the user wrote them).
    fn relative_to(self, dir: &Path) -> SourceError {
        let rel = |p: PathBuf| match p.strip_prefix(dir) {
            Ok(r) if !r.as_os_str().is_empty() => r.to_path_buf(),
            _ => p,
        };
        match self {
            SourceError::Missing { path } => SourceError::Missing { path: rel(path) },
            SourceError::Escapes { path, resolved, dir } => SourceError::Escapes { path: rel(path), resolved, dir },
            SourceError::Unsupported { path, kind } => SourceError::Unsupported { path: rel(path), kind },
            SourceError::NonUtf8 { path } => SourceError::NonUtf8 { path: rel(path) },
            SourceError::Changed { path } => SourceError::Changed { path: rel(path) },
            e @ SourceError::BadIgnore { .. } => e,
            SourceError::Io(crate::util::IoError { action, path, source }) => {
                SourceError::Io(crate::util::IoError { action, path: rel(path), source })
            }
            other => other,
        }
    }
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> SourceError + 'p {
    crate::util::io_err(action, path)
}

/// What a source entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Dir,
    File { size: u64, hash: ContentHash, executable: bool },
    Symlink { target: String },
}

/// One entry of a scanned copy source.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    /// Path relative to the copy's root, `/`-separated; empty for the root itself.
    pub rel: String,
    pub kind: SourceKind,
    /// Where to read it (never part of any hash).
    pub abs: PathBuf,
    /// A file's identity ([`crate::util::file_identity`]) when it was stat'ed before hashing, if
    /// its modification and change times were then more than [`RACY_WINDOW_NS`] old: while the
    /// file still has this identity, it still has the hashed content (a write sets its change
    /// time to now), so a build may read it without hashing it again. `None` for a file that
    /// had just changed (a write in the same clock tick could leave its identity unchanged).
    pub settled: Option<String>,
}

/// A scanned copy source: the root entry first, then everything below it, byte-sorted by `rel`.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub entries: Vec<SourceEntry>,
}

impl Scanned {
    pub fn root_is_dir(&self) -> bool {
        matches!(self.entries.first().map(|e| &e.kind), Some(SourceKind::Dir))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
    hash: ContentHash,
}

/// Size of one encoded entry after its path: size, mtime, ctime, ino, dev, hash.
const ENTRY_FIXED: usize = 8 + 16 + 16 + 8 + 8 + 32;

/// The stat cache's binary encoding (a no-op build reads it whole, so it is kept compact and
/// cheap to decode): magic, then per entry a u32 path length, the path, and the fixed fields,
/// all little-endian.
fn encode_stat_cache(entries: &[(String, Fingerprint)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entries.len() * (ENTRY_FIXED + 64));
    out.extend_from_slice(STAT_CACHE_MAGIC);
    for (path, fp) in entries {
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&fp.size.to_le_bytes());
        out.extend_from_slice(&fp.mtime_ns.to_le_bytes());
        out.extend_from_slice(&fp.ctime_ns.to_le_bytes());
        out.extend_from_slice(&fp.ino.to_le_bytes());
        out.extend_from_slice(&fp.dev.to_le_bytes());
        out.extend_from_slice(&fp.hash.0);
    }
    out
}

/// Decode a stat cache; `None` for anything unexpected (the cache is then simply rebuilt).
fn decode_stat_cache(bytes: &[u8]) -> Option<HashMap<String, Fingerprint>> {
    let mut rest = bytes.strip_prefix(STAT_CACHE_MAGIC.as_slice())?;
    let mut map = HashMap::new();
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Some(a)
    }
    while !rest.is_empty() {
        let len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        let path = std::str::from_utf8(take(&mut rest, len)?).ok()?.to_string();
        let f = take(&mut rest, ENTRY_FIXED)?;
        let fp = Fingerprint {
            size: u64::from_le_bytes(f[0..8].try_into().ok()?),
            mtime_ns: i128::from_le_bytes(f[8..24].try_into().ok()?),
            ctime_ns: i128::from_le_bytes(f[24..40].try_into().ok()?),
            ino: u64::from_le_bytes(f[40..48].try_into().ok()?),
            dev: u64::from_le_bytes(f[48..56].try_into().ok()?),
            hash: ContentHash(f[56..88].try_into().ok()?),
        };
        map.insert(path, fp);
    }
    Some(map)
}

/// The ignore file of a spec directory (`.composeignore`, else `.dockerignore`).
#[derive(Debug, Default)]
struct Ignore {
    /// In file order: a pattern and whether it excludes (`false`: a `!` line taking back).
    rules: Vec<(globset::GlobMatcher, bool)>,
    /// The `!` patterns, as cleaned text.
    exceptions: Vec<String>,
}

impl Ignore {
    /// The rules of the spec directory `dir`: first the ones every directory copy has
    /// ([`VCS_DIRS`] at any depth, and `own`: the spec file and its lockfile), then its ignore
    /// file's, whose `!` lines may take any of them back.
    fn load(dir: &Path, own: &[String]) -> Result<Ignore, SourceError> {
        let mut ig = Ignore::default();
        let defaults = VCS_DIRS.iter().map(|d| format!("**/{d}")).chain(own.iter().map(|o| globset::escape(o)));
        for pattern in defaults {
            if let Ok(glob) = globset::GlobBuilder::new(&pattern).literal_separator(true).build() {
                ig.rules.push((glob.compile_matcher(), true));
            }
        }
        let Some((path, text)) =
            [".composeignore", ".dockerignore"].iter().map(|n| dir.join(n)).find_map(|p| fs::read_to_string(&p).ok().map(|t| (p, t)))
        else {
            return Ok(ig);
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclude, pattern) = match line.strip_prefix('!') {
                Some(p) => (false, p.trim()),
                None => (true, line),
            };
            // As Docker does: a leading `/` and `./` mean the spec directory; `a/../b` is `b`.
            let cleaned: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
            let mut parts: Vec<&str> = Vec::new();
            for c in cleaned {
                if c == ".." {
                    parts.pop();
                } else {
                    parts.push(c);
                }
            }
            if parts.is_empty() {
                continue;
            }
            let glob = globset::GlobBuilder::new(&parts.join("/")).literal_separator(true).backslash_escape(true).build().map_err(|e| {
                SourceError::BadIgnore { path: path.clone(), line: i + 1, pattern: pattern.to_string(), reason: e.kind().to_string() }
            })?;
            if !exclude {
                ig.exceptions.push(parts.join("/"));
            }
            ig.rules.push((glob.compile_matcher(), exclude));
        }
        Ok(ig)
    }

    /// Is `rel` (relative to the spec directory, `/`-separated) left out? The last rule matching
    /// it or one of its parent directories decides.
    fn ignores(&self, rel: &str) -> bool {
        let mut ignored = false;
        for (m, exclude) in &self.rules {
            let mut hit = m.is_match(rel);
            let mut at = rel;
            while !hit {
                match at.rfind('/') {
                    Some(i) => {
                        at = &at[..i];
                        hit = m.is_match(at);
                    }
                    None => break,
                }
            }
            if hit {
                ignored = *exclude;
            }
        }
        ignored
    }
}

/// Version control directories (and git's `.git` file of a worktree or submodule): never an
/// image's content unless an ignore file takes them back. They differ between two clones of one
/// checkout, so an image that held them would differ too.
pub const VCS_DIRS: &[&str] = &[".git", ".hg", ".svn", ".bzr", ".jj", "_darcs"];

/// What compose made directory `dir` into, if it did: a store (its `v1/lock`, or a signing key
/// `compose cache keygen` wrote in its `keys/`) or an output directory (the `.compose-lock` every
/// export takes).
fn compose_made(dir: &Path) -> Option<&'static str> {
    if Store::is_store_root(dir) {
        return Some("a compose store");
    }
    // The lock an export into an output directory takes (`image::export`).
    if fs::symlink_metadata(dir.join(".compose-lock")).is_ok_and(|m| m.is_file()) {
        return Some("a compose output directory");
    }
    let keys = fs::read_dir(crate::store::Layout::keys(dir)).into_iter().flatten().flatten();
    if keys.filter(|e| e.file_name().as_encoded_bytes().ends_with(b".secret")).any(|e| is_secret_key(&e.path())) {
        return Some("a compose store (it holds signing keys)");
    }
    None
}

/// Does file `p` hold a secret key as `compose cache keygen` writes one (`NAME:BASE64` of the
/// 32-byte seed and the 32-byte public key)?
fn is_secret_key(p: &Path) -> bool {
    use base64::Engine as _;
    use std::io::Read as _;
    let mut text = String::new();
    let Ok(f) = fs::File::open(p) else { return false };
    if f.take(4096).read_to_string(&mut text).is_err() {
        return false;
    }
    text.trim()
        .split_once(':')
        .is_some_and(|(name, key)| !name.is_empty() && base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|k| k.len() == 64))
}

/// Walks copy sources below one spec directory, with the store's stat cache.
pub struct Scanner {
    /// Never read inside a directory copy: the store and the output directory.
    excluded: Vec<PathBuf>,
    /// Other stores and output directories a directory copy found and left out, and what each is.
    left_out: std::cell::RefCell<Vec<(PathBuf, &'static str)>>,
    ignore: Ignore,
    dir: PathBuf,
    cache_path: PathBuf,
    old: HashMap<String, Fingerprint>,
    seen: Vec<(String, Fingerprint)>,
    /// Files whose content was read (not answered by the stat cache).
    pub hashed_files: u64,
    pub hashed_bytes: u64,
}

struct Pending {
    rel: String,
    abs: PathBuf,
    meta: fs::Metadata,
}

impl Scanner {
    /// A scanner for sources relative to `spec_dir`, with the stat cache of the store at
    /// `store_root` (read only; nothing is written until [`Scanner::save`]). Directory copies
    /// never read the store or `out_dir`, nor what the spec directory's ignore file lists, nor
    /// (unless it takes them back) version control directories and `own`: the names, in the spec
    /// directory, of the spec file and its lockfile.
    pub fn new(store_root: &Path, spec_dir: &Path, out_dir: &Path, own: &[String]) -> Result<Scanner, SourceError> {
        let dir = fs::canonicalize(spec_dir).map_err(io_err("resolve", spec_dir))?;
        let key = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex()[..32].to_string();
        let cache_path = Store::stat_cache_path_in(store_root, &key);
        let old = read_optional(&cache_path)?.and_then(|b| decode_stat_cache(&b)).unwrap_or_default();
        let excluded = [store_root, out_dir].iter().filter_map(|p| absolute(p)).collect();
        let ignore = Ignore::load(&dir, own)?;
        let left_out = Default::default();
        Ok(Scanner { excluded, left_out, ignore, dir, cache_path, old, seen: Vec::new(), hashed_files: 0, hashed_bytes: 0 })
    }

    /// What the user should hear about the scans so far: the stores and output directories that
    /// directory copies left out (other than this build's own).
    pub fn warnings(&self) -> Vec<String> {
        let mut found = self.left_out.borrow().clone();
        found.sort();
        found.dedup();
        found
            .into_iter()
            .map(|(p, what)| {
                let shown = p.strip_prefix(&self.dir).unwrap_or(&p).display().to_string();
                format!("`{shown}` is {what}: directory copies leave it out (list it in .composeignore to say so)")
            })
            .collect()
    }

    /// Is `path` (found inside a directory copy) left out?
    fn skipped(&self, path: &Path, is_dir: bool) -> bool {
        if self.excluded.iter().any(|x| x == path) {
            return true;
        }
        if self.ignored(path, is_dir) {
            return true;
        }
        // Another store or output directory: never an image's content (a store holds signing
        // keys), wherever it is.
        match is_dir.then(|| compose_made(path)).flatten() {
            Some(what) => {
                self.left_out.borrow_mut().push((path.to_path_buf(), what));
                true
            }
            None => false,
        }
    }

    /// Does the spec directory's ignore file leave out `path`?
    fn ignored(&self, path: &Path, is_dir: bool) -> bool {
        match path.strip_prefix(&self.dir).ok().and_then(|r| r.to_str()) {
            // Outside the spec directory (an absolute source) no ignore file applies: the
            // version control directories are left out all the same.
            None => path.file_name().and_then(|n| n.to_str()).is_some_and(|n| VCS_DIRS.contains(&n)),
            // An ignored directory is still walked when a `!` line may take back something below
            // it (one naming a path inside it, or starting with a wildcard).
            Some(rel) if !rel.is_empty() => {
                self.ignore.ignores(rel)
                    && !(is_dir
                        && self
                            .ignore
                            .exceptions
                            .iter()
                            .any(|x| x.starts_with(&format!("{rel}/")) || x.starts_with('*') || x.starts_with('?')))
            }
            _ => false,
        }
    }

    /// The canonical spec directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resolve a copy source as written in the spec, refusing one that leaves the spec directory.
    pub fn resolve(&self, src: &str) -> Result<PathBuf, SourceError> {
        let given = Path::new(src);
        let joined = if given.is_absolute() { given.to_path_buf() } else { self.dir.join(given) };
        match fs::symlink_metadata(&joined) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SourceError::Missing { path: joined });
            }
            Err(e) => return Err(SourceError::Io(crate::util::IoError { action: "read", path: joined, source: e })),
            Ok(_) => {}
        }
        let resolved = match fs::canonicalize(&joined) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A dangling symlink as the copy source.
                return Err(SourceError::Missing { path: joined });
            }
            Err(e) => return Err(SourceError::Io(crate::util::IoError { action: "resolve", path: joined, source: e })),
        };
        if !given.is_absolute() && !resolved.starts_with(&self.dir) {
            return Err(SourceError::Escapes { path: joined, resolved, dir: self.dir.clone() });
        }
        Ok(resolved)
    }

    /// Scan one copy source (a file or a directory tree).
    pub fn scan(&mut self, src: &str) -> Result<Scanned, SourceError> {
        let dir = self.dir.clone();
        self.scan_inner(src).map_err(|e| e.relative_to(&dir))
    }

    fn scan_inner(&mut self, src: &str) -> Result<Scanned, SourceError> {
        let root = self.resolve(src)?;
        let meta = fs::metadata(&root).map_err(io_err("read", &root))?;
        let mut pending: Vec<Pending> = Vec::new();
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        let mut entries: Vec<SourceEntry> = Vec::new();
        if meta.is_dir() {
            entries.push(SourceEntry { rel: String::new(), kind: SourceKind::Dir, abs: root.clone(), settled: None });
            let walker = walkdir::WalkDir::new(&root)
                .follow_links(false)
                .min_depth(1)
                .sort_by(|a, b| a.file_name().cmp(b.file_name()))
                .into_iter()
                .filter_entry(|e| !self.skipped(e.path(), e.file_type().is_dir()));
            for item in walker {
                let item = item.map_err(|e| {
                    let path = e.path().unwrap_or(&root).to_path_buf();
                    let source = e.into_io_error().unwrap_or_else(|| io::Error::other("filesystem loop"));
                    SourceError::Io(crate::util::IoError { action: "walk", path, source })
                })?;
                let path = item.path();
                let rel_path = path.strip_prefix(&root).unwrap_or(path);
                let rel = rel_string(rel_path)?;
                let ft = item.file_type();
                if ft.is_dir() {
                    entries.push(SourceEntry { rel, kind: SourceKind::Dir, abs: path.to_path_buf(), settled: None });
                } else if ft.is_symlink() {
                    let target = fs::read_link(path).map_err(io_err("read link", path))?;
                    let target = target.to_str().ok_or_else(|| SourceError::NonUtf8 { path: path.to_path_buf() })?.to_string();
                    entries.push(SourceEntry { rel, kind: SourceKind::Symlink { target }, abs: path.to_path_buf(), settled: None });
                } else if ft.is_file() {
                    // Stat'ed below, in parallel: on a no-op build these stats are most of the work.
                    files.push((rel, path.to_path_buf()));
                } else {
                    return Err(SourceError::Unsupported { path: path.to_path_buf(), kind: kind_name(&ft) });
                }
            }
            let stated: Vec<Result<Pending, SourceError>> = files
                .into_par_iter()
                .map(|(rel, abs)| match fs::symlink_metadata(&abs) {
                    Ok(meta) => Ok(Pending { rel, abs, meta }),
                    Err(e) => Err(SourceError::Io(crate::util::IoError { action: "stat", path: abs, source: e })),
                })
                .collect();
            for p in stated {
                pending.push(p?);
            }
        } else if meta.is_file() {
            pending.push(Pending { rel: String::new(), abs: root.clone(), meta });
        } else {
            return Err(SourceError::Unsupported { path: root, kind: kind_name(&meta.file_type()) });
        }
        let files = self.fingerprint(pending)?;
        entries.extend(files);
        entries.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));
        Ok(Scanned { entries })
    }

    fn fingerprint(&mut self, pending: Vec<Pending>) -> Result<Vec<SourceEntry>, SourceError> {
        let now = now_ns();
        let mut out = Vec::with_capacity(pending.len());
        let mut to_hash: Vec<Pending> = Vec::new();
        for p in pending {
            let key = p.abs.to_string_lossy().into_owned();
            let fp = stat_of(&p.meta);
            match self.old.get(&key) {
                Some(c)
                    if c.size == fp.size
                        && c.mtime_ns == fp.mtime_ns
                        && c.ctime_ns == fp.ctime_ns
                        && c.ino == fp.ino
                        && c.dev == fp.dev =>
                {
                    let fp = Fingerprint { hash: c.hash, ..fp };
                    self.seen.push((key, fp));
                    out.push(file_entry(p.rel, p.abs, &p.meta, fp.hash, now));
                }
                _ => to_hash.push(p),
            }
        }
        let hashed: Vec<Result<(Pending, ContentHash), SourceError>> = to_hash
            .into_par_iter()
            .map(|p| {
                let f = fs::File::open(&p.abs).map_err(io_err("read", &p.abs))?;
                let (h, n) = ContentHash::of_reader(f).map_err(io_err("read", &p.abs))?;
                if n != p.meta.len() {
                    return Err(SourceError::Changed { path: p.abs });
                }
                Ok((p, h))
            })
            .collect();
        for r in hashed {
            let (p, h) = r?;
            self.hashed_files += 1;
            self.hashed_bytes += p.meta.len();
            let fp = Fingerprint { hash: h, ..stat_of(&p.meta) };
            self.seen.push((p.abs.to_string_lossy().into_owned(), fp));
            out.push(file_entry(p.rel, p.abs, &p.meta, h, now));
        }
        Ok(out)
    }

    /// Save the stat cache (only what this scan saw, minus racy entries), if it changed.
    pub fn save(mut self, store: &Store) -> Result<(), SourceError> {
        let now = now_ns();
        self.seen.retain(|(_, fp)| fp.settled(now));
        self.seen.sort_by(|a, b| a.0.cmp(&b.0));
        self.seen.dedup_by(|a, b| a.0 == b.0);
        let unchanged = self.seen.len() == self.old.len() && self.seen.iter().all(|(k, fp)| self.old.get(k) == Some(fp));
        if unchanged {
            return Ok(());
        }
        let bytes = encode_stat_cache(&self.seen);
        store.write_atomic(&self.cache_path, &bytes)?;
        Ok(())
    }
}

impl Fingerprint {
    /// Both times more than [`RACY_WINDOW_NS`] before `now`: a write in the same clock tick
    /// could no longer leave them unchanged.
    fn settled(&self, now: i128) -> bool {
        self.mtime_ns + RACY_WINDOW_NS < now && self.ctime_ns + RACY_WINDOW_NS < now
    }
}

fn stat_of(m: &fs::Metadata) -> Fingerprint {
    Fingerprint {
        size: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        ino: m.ino(),
        dev: m.dev(),
        hash: ContentHash([0; 32]),
    }
}

/// A scanned file; `now` (ns since the epoch) says whether its times are settled.
fn file_entry(rel: String, abs: PathBuf, meta: &fs::Metadata, hash: ContentHash, now: i128) -> SourceEntry {
    let executable = meta.mode() & 0o111 != 0;
    let settled = stat_of(meta).settled(now).then(|| crate::util::file_identity(meta));
    SourceEntry { rel, kind: SourceKind::File { size: meta.len(), hash, executable }, abs, settled }
}

/// Now, in nanoseconds since the epoch (0 before it).
fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

fn rel_string(p: &Path) -> Result<String, SourceError> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().ok_or_else(|| SourceError::NonUtf8 { path: p.to_path_buf() })?),
            _ => continue,
        }
    }
    Ok(parts.join("/"))
}

fn kind_name(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "named pipe (FIFO)"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cache_round_trips_and_rejects_garbage() {
        let fp = Fingerprint { size: 5, mtime_ns: -3, ctime_ns: 1 << 70, ino: 9, dev: 2, hash: ContentHash([7; 32]) };
        let entries = vec![("/a/b".to_string(), fp), ("/caf\u{e9}".to_string(), Fingerprint { size: 0, ..fp })];
        let bytes = encode_stat_cache(&entries);
        let map = decode_stat_cache(&bytes).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map["/a/b"], fp);
        assert!(decode_stat_cache(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_stat_cache(b"not a cache").is_none());
        assert_eq!(decode_stat_cache(STAT_CACHE_MAGIC).unwrap().len(), 0);
    }
}
