//! The one reader of layer and tree tars that come out of the store or a shared cache: every
//! entry is checked against the rules of its kind of tree before anything is done with it, and
//! the whole stream is bounded. A remote record's tree is checked with it as it streams in,
//! `compose cache verify` checks stored trees with it, and unpacking goes through it, so what is
//! refused in one place is refused in all three.
//!
//! Two sets of rules:
//! - [`Rules::Compose`], a tree compose wrote (a step's output, a layer, the changes of
//!   maintainer scripts): only what [`crate::layer::LayerWriter`] writes. Regular files,
//!   directories, symlinks (their targets are data: never followed) and hard links to a file
//!   earlier in the tree; UTF-8 names, relative and normalised (no `/` at the start, no empty,
//!   `.` or `..` component), in strictly increasing byte order (so no entry comes twice), each
//!   inside a directory entry that came before it. Devices, FIFOs and every other entry type are
//!   refused.
//! - [`Rules::Foreign`], a base image's layer (pinned by its digest, written by any tool): names
//!   may be absolute (re-rooted) or not UTF-8, but never hold `..`; hard links must not hold
//!   `..` either; devices, FIFOs and entry types compose does not know are passed on as
//!   [`Kind::Special`] (unpacking skips them).
//!
//! Whatever the rules, a stream that does not decompress or is not a tar is refused, and so is
//! a decompression bomb: past [`MAX_TREE_BYTES`] uncompressed bytes (or bytes of file data), past
//! [`MAX_TREE_ENTRIES`] entries, or with more than [`MAX_HEADER_BYTES`] of headers for one entry
//! (PAX and GNU long-name headers are read into memory).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sha2::{Digest, Sha256};

/// Most uncompressed bytes of one tree (the tar stream), and most bytes of file data in it.
pub const MAX_TREE_BYTES: u64 = 64 << 30;
/// Most entries of one tree.
pub const MAX_TREE_ENTRIES: u64 = 4 << 20;
/// Most bytes of headers (the ustar header, PAX and GNU long-name headers) before one entry.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Which rules a tree must keep (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// A tree compose wrote.
    Compose,
    /// A base image's layer.
    Foreign,
}

/// What an entry is, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    /// A symlink and its target, as data.
    Symlink(PathBuf),
    /// A hard link to `target`: relative, normalised, inside the tree.
    HardLink(PathBuf),
    /// A device, a FIFO or an entry type compose does not know (only with [`Rules::Foreign`]).
    Special,
}

/// A checked entry: its path relative to the tree's root, normalised (never empty), its kind,
/// and its size (file data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
}

/// What a whole tree came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub entries: u64,
    /// Bytes of the uncompressed tar stream.
    pub bytes: u64,
    /// sha256 of the uncompressed stream (the `diff_id`), when asked for.
    pub diff_id: Option<[u8; 32]>,
}

/// Why a tree is refused: the entry (when one is to blame) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", path.as_ref().map(|p| format!("`{p}`: ")).unwrap_or_default())]
pub struct Refused {
    pub path: Option<String>,
    pub reason: String,
}

impl Refused {
    fn at(path: &[u8], reason: impl Into<String>) -> Refused {
        Refused { path: Some(String::from_utf8_lossy(path).into_owned()), reason: reason.into() }
    }
    fn whole(reason: impl Into<String>) -> Refused {
        Refused { path: None, reason: reason.into() }
    }
}

/// A walk stopped: the tree broke a rule, or the visitor failed.
#[derive(Debug)]
pub enum WalkError<E> {
    Refused(Refused),
    Visit(E),
}

/// The position in the uncompressed stream, the bound it must not pass, which bound that is,
/// and the running sha256.
struct Bound {
    pos: Cell<u64>,
    limit: Cell<u64>,
    why: Cell<&'static str>,
    tripped: Cell<Option<&'static str>>,
    hasher: RefCell<Option<Sha256>>,
}

/// The uncompressed stream as the tar reader sees it: counted, hashed, and cut at the bound.
pub struct Guarded<R> {
    inner: R,
    bound: Rc<Bound>,
}

const TOO_BIG: &str = "more than the 64 GiB a tree may hold uncompressed (a decompression bomb?)";
const HEADERS: &str = "more than 1 MiB of headers for one entry";

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let b = &self.bound;
        let room = b.limit.get().saturating_sub(b.pos.get());
        if room == 0 && !buf.is_empty() {
            // At the bound: only the end of the stream may follow.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            b.tripped.set(Some(b.why.get()));
            return Err(io::Error::new(io::ErrorKind::InvalidData, b.why.get()));
        }
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        b.pos.set(b.pos.get() + n as u64);
        if let Some(h) = b.hasher.borrow_mut().as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl Bound {
    /// The next bound: the end of the stream's allowance, or `at` if sooner.
    fn set(&self, at: Option<u64>) {
        match at {
            Some(at) if at < MAX_TREE_BYTES => {
                self.limit.set(at);
                self.why.set(HEADERS);
            }
            _ => {
                self.limit.set(MAX_TREE_BYTES);
                self.why.set(TOO_BIG);
            }
        }
    }
}

/// 128 bits of blake3 of a path: what the rules remember of earlier entries (16 bytes each,
/// however long the paths).
fn key(path: &[u8]) -> u128 {
    let h = blake3::hash(path);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_bytes()[..16]);
    u128::from_le_bytes(b)
}

/// What the rules remember while walking a tree.
struct State {
    rules: Rules,
    previous: Option<Vec<u8>>,
    dirs: HashSet<u128>,
    files: HashSet<u128>,
    data: u64,
}

/// `raw` (a tar name) as a relative, normalised path, by the rules; `None` for the root itself.
fn normalise(raw: &[u8], rules: Rules, what: &str) -> Result<Option<Vec<u8>>, String> {
    if raw.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if raw.contains(&0) {
        return Err(format!("{what} holds a NUL byte"));
    }
    if rules == Rules::Compose {
        if std::str::from_utf8(raw).is_err() {
            return Err(format!("{what} is not UTF-8"));
        }
        if raw.starts_with(b"/") {
            return Err(format!("{what} is absolute"));
        }
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    let parts: Vec<&[u8]> = raw.split(|&c| c == b'/').collect();
    let last = parts.len() - 1;
    for (i, part) in parts.into_iter().enumerate() {
        match part {
            b".." => return Err(format!("{what} holds `..`: it leaves the tree")),
            b"" | b"." if rules == Rules::Foreign => continue,
            // A directory's name ends with `/`.
            b"" if i == last && i > 0 => continue,
            b"" | b"." => return Err(format!("{what} is not normalised (an empty or `.` component)")),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part);
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

impl State {
    fn check<R: Read>(&mut self, e: &tar::Entry<'_, R>) -> Result<Option<Checked>, Refused> {
        let raw = e.path_bytes().into_owned();
        let bad = |reason: String| Refused::at(&raw, reason);
        let ty = e.header().entry_type();
        let path = match normalise(&raw, self.rules, "its name").map_err(bad)? {
            Some(p) => p,
            // The root itself (`./`), as some tools write it: nothing to do.
            None if self.rules == Rules::Foreign => return Ok(None),
            None => return Err(bad("it names the tree's root".into())),
        };
        let size = e.size();
        let kind = match ty {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
                if self.rules == Rules::Foreign || ty == tar::EntryType::Regular =>
            {
                Kind::File
            }
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => {
                let target = e.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                if target.is_empty() || target.contains(&0) {
                    return Err(bad("a symlink without a target".into()));
                }
                if self.rules == Rules::Compose && std::str::from_utf8(&target).is_err() {
                    return Err(bad("its symlink target is not UTF-8".into()));
                }
                Kind::Symlink(PathBuf::from(OsStr::from_bytes(&target)))
            }
            tar::EntryType::Link => {
                let target = e.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let Some(target) = normalise(&target, self.rules, "its hard link target").map_err(bad)? else {
                    return Err(bad("a hard link to the tree's root".into()));
                };
                if self.rules == Rules::Compose && !self.files.contains(&key(&target)) {
                    return Err(bad(format!(
                        "a hard link to `{}`, which is not a file earlier in the tree",
                        String::from_utf8_lossy(&target)
                    )));
                }
                Kind::HardLink(PathBuf::from(OsStr::from_bytes(&target)))
            }
            _ if self.rules == Rules::Foreign => Kind::Special,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(bad("a device or FIFO; a tree holds files, directories and links".into()))
            }
            other => return Err(bad(format!("an entry of type {:?}; a tree holds files, directories and links", other))),
        };
        if self.rules == Rules::Compose {
            if self.previous.as_ref().is_some_and(|p| path.as_slice() <= p.as_slice()) {
                return Err(bad("out of order, or twice in the tree".into()));
            }
            if let Some(i) = path.iter().rposition(|&c| c == b'/') {
                if !self.dirs.contains(&key(&path[..i])) {
                    return Err(bad("its parent is not a directory earlier in the tree".into()));
                }
            }
            if kind == Kind::Dir {
                self.dirs.insert(key(&path));
            } else {
                self.files.insert(key(&path));
            }
            self.previous = Some(path.clone());
        }
        if kind == Kind::File {
            self.data = self.data.saturating_add(size);
            if self.data > MAX_TREE_BYTES {
                return Err(Refused::whole(format!("its files hold {TOO_BIG}")));
            }
        }
        Ok(Some(Checked { path: PathBuf::from(OsStr::from_bytes(&path)), kind, size }))
    }
}

/// Walk the tar stream `reader` (uncompressed), checking every entry by `rules` before handing
/// it to `visit` (which may read its data or unpack it). With `hash`, the whole stream is read
/// (what follows the end of the archive too) and the summary has its sha256; without, the walk
/// stops at the end of the archive. Refused as soon as an entry breaks a rule or a bound is
/// passed.
pub fn walk<R: Read, E>(
    reader: R,
    rules: Rules,
    hash: bool,
    mut visit: impl FnMut(&Checked, &mut tar::Entry<'_, Guarded<R>>) -> Result<(), E>,
) -> Result<Summary, WalkError<E>> {
    let bound = Rc::new(Bound {
        pos: Cell::new(0),
        limit: Cell::new(0),
        why: Cell::new(HEADERS),
        tripped: Cell::new(None),
        hasher: RefCell::new(hash.then(Sha256::new)),
    });
    bound.set(Some(MAX_HEADER_BYTES));
    let mut ar = tar::Archive::new(Guarded { inner: reader, bound: Rc::clone(&bound) });
    let refused = |e: io::Error, bound: &Bound| match bound.tripped.get() {
        Some(why) => Refused::whole(why),
        None => Refused::whole(format!("it is not a (compressed) tar: {e}")),
    };
    let mut state = State { rules, previous: None, dirs: HashSet::new(), files: HashSet::new(), data: 0 };
    let mut entries = 0u64;
    {
        let mut iter = ar.entries().map_err(|e| WalkError::Refused(refused(e, &bound)))?;
        loop {
            let next = iter.next();
            // Reading the entry's data (or skipping it) and the next entry's headers is bounded
            // by where its data ends.
            bound.set(None);
            let mut e = match next {
                None => break,
                Some(Err(e)) => return Err(WalkError::Refused(refused(e, &bound))),
                Some(Ok(e)) => e,
            };
            entries += 1;
            if entries > MAX_TREE_ENTRIES {
                return Err(WalkError::Refused(Refused::whole(format!("more than {MAX_TREE_ENTRIES} entries"))));
            }
            let end = e.raw_file_position().saturating_add(e.size().div_ceil(512).saturating_mul(512));
            if let Some(c) = state.check(&e).map_err(WalkError::Refused)? {
                visit(&c, &mut e).map_err(WalkError::Visit)?;
            }
            bound.set(Some(end.saturating_add(MAX_HEADER_BYTES)));
        }
    }
    // What follows the end of the archive is part of the stream and of its diff_id (and must
    // decompress, as for any diff_id); unpacking stops at the end, as tar readers do.
    if hash {
        bound.set(None);
        let mut rest = ar.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| WalkError::Refused(refused(e, &bound)))?;
    }
    let diff_id = bound.hasher.borrow_mut().take().map(|h| h.finalize().into());
    Ok(Summary { entries, bytes: bound.pos.get(), diff_id })
}

/// Check the tree in layer blob `path` (of `media_type`) by `rules`; the summary has its
/// diff_id. `Err(Ok(refused))`: the tree breaks a rule; `Err(Err(e))`: the file cannot be read.
pub fn check_file(path: &Path, media_type: &str, rules: Rules) -> Result<Summary, Result<Refused, io::Error>> {
    let f = std::fs::File::open(path).map_err(Err)?;
    let r = crate::layer::decoder(media_type, BufReader::with_capacity(256 * 1024, f)).map_err(Err)?;
    walk(r, rules, true, |_, _| Ok::<(), std::convert::Infallible>(())).map_err(|e| match e {
        WalkError::Refused(r) => Ok(r),
        WalkError::Visit(never) => match never {},
    })
}

/// Checks a tree as its compressed bytes are written to it (a blob streaming in from a cache),
/// on a thread of its own: one decompression gives both the verdict and the diff_id.
pub struct StreamCheck {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<Result<Summary, Refused>>>,
}

/// The bytes of a channel as a reader.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.buf = next;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl StreamCheck {
    /// A check of a blob of `media_type` by `rules`.
    pub fn new(media_type: &str, rules: Rules) -> StreamCheck {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
        let media_type = media_type.to_string();
        let worker = std::thread::Builder::new()
            .name("tree-check".into())
            .spawn(move || {
                let reader = ChannelReader { rx, buf: Vec::new(), at: 0 };
                let r = crate::layer::decoder(&media_type, BufReader::with_capacity(256 * 1024, reader))
                    .map_err(|e| Refused::whole(format!("it is not a (compressed) tar: {e}")))?;
                walk(r, rules, true, |_, _| Ok::<(), std::convert::Infallible>(())).map_err(|e| match e {
                    WalkError::Refused(r) => r,
                    WalkError::Visit(never) => match never {},
                })
            })
            .ok();
        StreamCheck { tx: worker.as_ref().map(|_| tx), worker }
    }

    /// The verdict on everything written, with its summary (and diff_id).
    pub fn finish(mut self) -> Result<Summary, Refused> {
        drop(self.tx.take());
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) | None => Err(Refused::whole("the check could not run")),
        }
    }
}

impl Write for StreamCheck {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A worker that stopped (the tree was refused) takes no more: its verdict stands.
        if let Some(tx) = &self.tx {
            if tx.send(buf.to_vec()).is_err() {
                self.tx = None;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StreamCheck {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(name, type, link, data)`.
    type RawEntry<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

    /// A raw tar of entries, written as they are (no checks).
    fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, ty, link, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.as_mut_bytes()[..name.len()].copy_from_slice(name);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_entry_type(tar::EntryType::new(*ty));
            h.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn check(tar: &[u8], rules: Rules) -> Result<Summary, Refused> {
        walk(tar, rules, true, |_, _| Ok::<(), ()>(())).map_err(|e| match e {
            WalkError::Refused(r) => r,
            WalkError::Visit(()) => unreachable!(),
        })
    }

    #[test]
    fn what_compose_writes_passes_with_its_diff_id() {
        let mut w = crate::layer::LayerWriter::new(Vec::new());
        let e = |path: &str, kind| crate::layer::Entry { path: path.into(), kind, mode: 0o755, uid: 0, gid: 0, mtime: 0 };
        w.append(&e("/a", crate::layer::EntryKind::Dir), None).unwrap();
        w.append(&e("/a/f", crate::layer::EntryKind::File { size: 3 }), Some(&mut &b"abc"[..])).unwrap();
        w.append(&e("/a/h", crate::layer::EntryKind::Hardlink { target: "/a/f".into() }), None).unwrap();
        w.append(&e("/a/l", crate::layer::EntryKind::Symlink { target: "../../etc/passwd".into() }), None).unwrap();
        let long = format!("/a/{}é", "x".repeat(200));
        w.append(&e(&long, crate::layer::EntryKind::File { size: 0 }), Some(&mut &b""[..])).unwrap();
        let (blob, digests) = w.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        std::fs::write(&p, &blob).unwrap();
        let s = check_file(&p, crate::layer::GZIP_MEDIA_TYPE, Rules::Compose).unwrap();
        assert_eq!((s.entries, s.diff_id), (5, Some(digests.diff_id)));
        // Streamed in, in odd pieces.
        let mut c = StreamCheck::new(crate::layer::GZIP_MEDIA_TYPE, Rules::Compose);
        for piece in blob.chunks(7) {
            c.write_all(piece).unwrap();
        }
        assert_eq!(c.finish().unwrap().diff_id, Some(digests.diff_id));
    }

    #[test]
    fn hostile_trees_are_refused() {
        let d = |n: &'static [u8]| (n, b'5', &b""[..], &b""[..]);
        let f = |n: &'static [u8]| (n, b'0', &b""[..], &b"x"[..]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("`..`", raw_tar(&[d(b"a/"), f(b"a/../../x")])),
            ("absolute", raw_tar(&[f(b"/etc/x")])),
            ("`..`", raw_tar(&[(b"h", b'1', b"../../etc/shadow", b"")])),
            ("not a file earlier", raw_tar(&[(b"a", b'1', b"b", b""), f(b"b")])),
            ("not a file earlier", raw_tar(&[d(b"d/"), (b"h", b'1', b"d", b"")])),
            ("device or FIFO", raw_tar(&[(b"sda", b'4', b"", b"")])),
            ("device or FIFO", raw_tar(&[(b"p", b'6', b"", b"")])),
            ("not UTF-8", raw_tar(&[f(b"\xff\xfe")])),
            ("out of order", raw_tar(&[f(b"a"), f(b"a")])),
            ("out of order", raw_tar(&[f(b"b"), f(b"a")])),
            ("parent", raw_tar(&[f(b"a/b")])),
            ("parent", raw_tar(&[(b"a", b'2', b"/etc", b""), f(b"a/b")])),
            ("not normalised", raw_tar(&[f(b"./a")])),
            ("not normalised", raw_tar(&[d(b"./")])),
            ("not a (compressed) tar", b"hello, this is not a tar".repeat(40)),
        ];
        for (why, tar) in cases {
            let e = check(&tar, Rules::Compose).unwrap_err();
            assert!(e.to_string().contains(why), "{e} (expected: {why})");
        }
        // Symlinks are data, whatever they point at.
        assert!(check(&raw_tar(&[(b"l", b'2', b"../../../etc/shadow", b"")]), Rules::Compose).is_ok());
        // A base's layer may have an absolute name, a root entry and a device (passed on as
        // special), never `..`.
        assert!(check(&raw_tar(&[d(b"./"), f(b"/etc/x"), (b"dev/null", b'3', b"", b"")]), Rules::Foreign).is_ok());
        assert!(check(&raw_tar(&[f(b"a/../../x")]), Rules::Foreign).is_err());
        assert!(check(&raw_tar(&[(b"h", b'1', b"../x", b"")]), Rules::Foreign).is_err());
    }

    #[test]
    fn bombs_are_refused_before_they_are_read_whole() {
        // A PAX header of 64 MiB (zeros): refused at 1 MiB of headers, not read into memory.
        let mut h = tar::Header::new_ustar();
        h.set_path("././@PaxHeader").unwrap();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(64 << 20);
        h.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(h.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        let blob = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bomb");
        std::fs::write(&p, &blob).unwrap();
        let e = check_file(&p, crate::layer::GZIP_MEDIA_TYPE, Rules::Compose).unwrap_err().unwrap();
        assert!(e.reason.contains("headers"), "{e}");
        // The bound itself: no byte past it, and an error if the stream goes on.
        let bound = Rc::new(Bound {
            pos: Cell::new(0),
            limit: Cell::new(10),
            why: Cell::new(TOO_BIG),
            tripped: Cell::new(None),
            hasher: RefCell::new(None),
        });
        let mut g = Guarded { inner: &[1u8; 20][..], bound };
        let mut buf = [0u8; 32];
        assert_eq!(g.read(&mut buf).unwrap(), 10);
        assert!(g.read(&mut buf).is_err(), "past the bound");
    }
}
