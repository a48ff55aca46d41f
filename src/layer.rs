//! Reproducible OCI layer writing: a deterministic tar stream fed into a
//! deterministic, parallel, streaming gzip or zstd compressor.
//!
//! [`LayerWriter`] turns a sorted sequence of [`Entry`]s into a
//! `application/vnd.oci.image.layer.v1.tar+gzip` (or `+zstd`) blob and, in the same pass,
//! computes the OCI `diff_id` (sha256 of the uncompressed tar), the `digest`
//! (sha256 of the compressed bytes) and both sizes. Memory use does not grow with the
//! size of the layer's data: it is bounded by the number of chunks in
//! flight (about `2 × threads + 1` chunks of 1 MiB, input plus output), plus
//! the set of paths appended so far (needed to check parents and hardlink
//! targets), which grows with the number of entries, not with their bytes.
//!
//! # Tar format (fixed; part of the byte identity of every layer)
//!
//! Every entry is one POSIX **ustar** header (`magic = "ustar\0"`,
//! `version = "00"`), preceded, only when needed, by one **PAX extended
//! header** (typeflag `x`, name `././@PaxHeader`, mode `0644`, uid/gid/mtime 0).
//! No GNU extensions (no `././@LongLink`, no base-256 numbers) and the ustar
//! `prefix` field is never used, so there is exactly one encoding per entry:
//!
//! * the name is the image path without its leading `/`, directories with a
//!   trailing `/` (`etc/`, `etc/passwd`);
//! * a PAX `path` record is written when that name is longer than 100 bytes
//!   or is not pure ASCII; a PAX `linkpath` record when the link target is
//!   longer than 100 bytes or not pure ASCII; `size`, `uid`, `gid`, `mtime`
//!   records when the value does not fit the octal field (sizes and mtimes
//!   ≥ 8^11, ids ≥ 8^7). Records are in byte order of their keys. The ustar
//!   field then holds a fallback: the name/target with non-ASCII bytes
//!   dropped and cut to 100 bytes, or 0 for numbers;
//! * numeric fields are zero-padded octal followed by NUL (`0000755\0`), the
//!   checksum is six octal digits, NUL, space (as GNU tar and Go write it);
//! * `uname`/`gname` are empty, device major/minor are octal 0, no
//!   atime/ctime; the mode is exactly the caller's (setuid, setgid and
//!   sticky kept; bits above `0o7777` are rejected, not masked); symlinks
//!   get mode `0777` and size 0, their target written as given; hardlinks
//!   (typeflag `1`, link name = target image path without its leading `/`)
//!   and directories (typeflag `5`) have size 0;
//! * the archive ends with two 512-byte zero blocks.
//!
//! Entries must arrive in byte order of their full path (which puts parents
//! before children) with every parent directory appended before (except `/`,
//! which is never an entry); violations are errors, never silently fixed.
//! Paths must be absolute and normalized (no empty, `.` or `..` component,
//! no trailing `/`, no NUL).
//!
//! # Chunks (fixed; identified by [`CHUNKING_ID`])
//!
//! The tar stream is cut into chunks, and each chunk is compressed on its own, so chunks can be
//! compressed in parallel and a chunk whose bytes were compressed before can be reused (see
//! below). Cuts fall at tar-entry boundaries chosen by content, not by offset, so that a change
//! to one file changes only the chunks holding it:
//!
//! * after an entry (header, data and padding), when the chunk holds at least [`CHUNK_MIN`]
//!   bytes and the entry's path is picked by [`cut_after`] (a hash of the path: one path in two);
//! * before an entry the chunk has no room for (it would pass [`CHUNK_SIZE`], 1 MiB), and before
//!   an entry whose header, data and padding come to [`CHUNK_SIZE`] or more, when the chunk is
//!   not empty: a big file starts its own chunk, so its inner cuts (below) sit at the same
//!   offsets from its header whatever comes before it;
//! * wherever the chunk reaches [`CHUNK_SIZE`] bytes, whatever the write sizes: inside a big
//!   entry, or at the end of an entry that fills it exactly.
//!
//! So every chunk but those inside big files is made of whole entries.
//!
//! After a changed file, the next picked entry past [`CHUNK_MIN`] ends a chunk in the old stream
//! and the new one alike, so the chunking is back in step within a chunk or two.
//!
//! # Compression (fixed; identified by [`COMPRESSOR_ID`] and [`ZSTD_COMPRESSOR_ID`])
//!
//! **gzip**: each chunk becomes one complete gzip member (RFC 1952 allows any number, and every
//! gzip reader reads them all: Go's `compress/gzip` that skopeo, podman, umoci and containerd use,
//! GNU gzip, Python's `gzip`, flate2's `MultiGzDecoder`). A member is libdeflate's
//! `gzip_compress` at level 6: the 10-byte header `1f 8b 08 00 00000000 00 ff` (no name, mtime 0,
//! XFL 0, OS 255), one deflate stream, and the chunk's CRC-32 and length.
//!
//! **zstd**: each chunk becomes one complete zstd frame (RFC 8878 readers decode concatenated
//! frames as one stream: Go's `klauspost/compress/zstd` in containerd, podman, skopeo and umoci,
//! the `zstd` tool, libzstd's streaming decoder): libzstd's one-shot `ZSTD_compress2` at level 3,
//! single-threaded, with the frame's content size and no checksum.
//!
//! The remainder after the last cut is a last chunk when it is not empty, or when there was no
//! chunk before it (so empty input is one empty member or frame). Chunks are compressed on the
//! current rayon pool (the global one unless called inside `ThreadPool::install`) and written in
//! order; the bytes depend neither on the thread count nor on write sizes. A waiting writer
//! compresses pending chunks itself, so it never deadlocks, even on a busy or 1-thread pool.
//!
//! Why the bytes do not depend on the CPU:
//! * libdeflate's compressor is portable C. Its CPU-dispatched code (x86 and ARM SIMD) is in the
//!   checksums (CRC-32, Adler-32, whose values are fixed by their definitions), in the
//!   decompressor, and in the match finder's table initialisation and rebasing
//!   (`matchfinder_init`/`matchfinder_rebase`, which set every entry to the same values either
//!   way); the match search and block splitting, which decide the output, have one code path.
//! * libzstd at level 3 uses the `dfast` strategy, whose match finder is scalar C; the SIMD
//!   row-hash match finder (chosen at compile time) serves only the greedy and lazy strategies
//!   of levels 5 to 15. Its one run-time dispatch, BMI2, picks between two compilations of the
//!   same Huffman and FSE encoders, which give the same bits. Parameters follow the level and
//!   the chunk's size only, and a context is reset for each chunk, so which thread's context
//!   compresses a chunk does not matter.
//!
//! Both versions are pinned in `Cargo.toml` and named in the compressor ids, so an upgrade
//! changes every layer's derivation hash rather than its bytes under the same hash.
//!
//! # Chunk reuse
//!
//! With a [`ChunkCache`] (the store's), each chunk's key is blake3 of the compressor id and the
//! chunk's uncompressed bytes ([`chunk_key`]); a chunk the cache holds is taken from it rather
//! than compressed, and [`LayerWriter::finish_with_chunks`] says where each chunk landed so the
//! caller can keep it. Since a chunk's compressed bytes depend only on its own bytes and the
//! codec, a layer is byte-identical whether its chunks were reused or compressed.
//!
//! The layer's two digests are sha256 chains over the whole stream, which no chunk can skip on
//! its own; but a kept chunk also says where both chains went over it ([`ChunkMemo`]: the open
//! [`ShaState`] before and after). A stream that reaches the chunk in the state it was kept with
//! moves to the kept state after it without hashing, so the chunks before a change are neither
//! compressed nor hashed again; from the first changed chunk on, the states differ and the
//! chains hash as usual. Chains run on threads of their own once a stream has two chunks.
//!
//! Files given as [`KnownFile`]s (their planned content hash and identity) are not even read
//! while the stream is still made of kept chunks: a chunk of whole entries also has a key by
//! content ([`ChunkRecord::alias`]: its headers and its files' planned hashes), so the writer
//! gathers entries until the chunk's cut, looks the chunk up by that key, and when it is kept
//! with the digests' states where the stream is, writes it without opening a file. At the first
//! chunk that is not, it writes the gathered entries out as usual (reading them, checking each
//! still has its planned content) and goes on as usual. A changed file therefore costs what
//! comes after it in the layer, not the whole layer.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Identity of the exact bytes the gzip codec gives a chunk. Change it whenever the compressed
/// output could change (library, level, header).
pub const COMPRESSOR_ID: &str = "gzip/libdeflate-1.26.1/level6/member-per-chunk/v3";

/// Identity of the exact bytes the zstd codec gives a chunk.
pub const ZSTD_COMPRESSOR_ID: &str = "zstd/libzstd-1.5.7/level3/frame-per-chunk/v1";

/// Identity of where the tar stream is cut into chunks ([`CHUNK_MIN`], [`CHUNK_SIZE`],
/// [`cut_after`]).
pub const CHUNKING_ID: &str = "chunks/entry-cuts-512KiB-1MiB-half/v2";

/// Identity of the exact tar bytes [`LayerWriter`] produces for a given list
/// of entries (header format, PAX policy). Change it whenever that could
/// change.
pub const TAR_FORMAT_ID: &str = "tar/ustar+pax/v1";

/// Identity of the exact gzip layer bytes (tar format, chunking and compressor) that
/// [`LayerWriter`] produces for a given list of entries: the value to put in derivation hashes.
pub const LAYER_FORMAT_ID: &str =
    "tar/ustar+pax/v1 chunks/entry-cuts-512KiB-1MiB-half/v2 gzip/libdeflate-1.26.1/level6/member-per-chunk/v3";

/// [`LAYER_FORMAT_ID`] for zstd layers.
pub const ZSTD_LAYER_FORMAT_ID: &str =
    "tar/ustar+pax/v1 chunks/entry-cuts-512KiB-1MiB-half/v2 zstd/libzstd-1.5.7/level3/frame-per-chunk/v1";

/// OCI media type of gzip layers.
pub const GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// OCI media type of zstd layers.
pub const ZSTD_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Most uncompressed bytes in one chunk.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Fewest uncompressed bytes in a chunk ended after a picked entry.
pub const CHUNK_MIN: usize = 512 << 10;

/// Deflate level used for every gzip chunk.
pub const GZIP_LEVEL: u8 = 6;

/// zstd level used for every zstd chunk.
pub const ZSTD_LEVEL: i32 = 3;

/// The fixed gzip member header: no file name, mtime 0, XFL 0, OS 255.
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];

/// Whether a chunk past [`CHUNK_MIN`] may end after the entry at `path`: one path in two, by a
/// fixed hash of its bytes (FNV-1a, then a 64-bit finaliser).
pub fn cut_after(path: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in path.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h & 1 == 0
}

/// Size of a tar block.
const BLOCK: usize = 512;

// ---------------------------------------------------------------------------
// Entries and errors
// ---------------------------------------------------------------------------

/// What an [`Entry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file of `size` bytes; its data is passed to
    /// [`LayerWriter::append`].
    File { size: u64 },
    /// A symbolic link; `target` is written literally (relative or absolute).
    Symlink { target: String },
    /// A hardlink; `target` is the image path (`/usr/bin/foo`) of an earlier,
    /// non-directory entry of the same layer.
    Hardlink { target: String },
}

/// One layer entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute, normalized image path: `/etc/passwd`, `/usr/bin`. Never `/`.
    pub path: String,
    /// Kind and kind-specific data.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (must be `<= 0o7777`).
    /// Ignored for symlinks, which are always written with `0o777`.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: u64,
}

/// Digests and sizes of a finished layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDigests {
    /// sha256 of the uncompressed tar stream (the OCI `diff_id`).
    pub diff_id: [u8; 32],
    /// sha256 of the compressed blob (the OCI descriptor `digest`).
    pub digest: [u8; 32],
    /// Size of the compressed blob in bytes.
    pub size: u64,
    /// Size of the uncompressed tar stream in bytes.
    pub uncompressed_size: u64,
}

impl LayerDigests {
    /// `sha256:<hex>` form of [`diff_id`](Self::diff_id).
    pub fn diff_id_string(&self) -> String {
        format!("sha256:{}", hex::encode(self.diff_id))
    }

    /// `sha256:<hex>` form of [`digest`](Self::digest).
    pub fn digest_string(&self) -> String {
        format!("sha256:{}", hex::encode(self.digest))
    }
}

/// Errors from [`LayerWriter`].
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The entry path is not an absolute, normalized image path.
    #[error("invalid entry path `{path}`: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// The entry does not come after the previous one in byte order.
    #[error("entry `{path}` is out of order: it must come after `{previous}`")]
    OutOfOrder { path: String, previous: String },
    /// The same path was appended twice.
    #[error("duplicate entry `{path}`")]
    Duplicate { path: String },
    /// The parent directory was not appended before the entry.
    #[error("entry `{path}` comes before its parent directory `{parent}` (parents must be appended first)")]
    MissingParent { path: String, parent: String },
    /// The parent exists but is not a directory.
    #[error("entry `{path}`: its parent `{parent}` is not a directory")]
    ParentNotDir { path: String, parent: String },
    /// Mode bits outside `0o7777`.
    #[error("entry `{path}`: mode {mode:#o} has bits outside 0o7777")]
    InvalidMode { path: String, mode: u32 },
    /// Bad symlink or hardlink target.
    #[error("entry `{path}`: invalid link target `{target}`: {reason}")]
    InvalidLinkTarget { path: String, target: String, reason: &'static str },
    /// A file entry was appended without data, or another kind with data.
    #[error("entry `{path}`: {reason}")]
    DataMismatch { path: String, reason: &'static str },
    /// The file's data did not have its declared size: `actual` is the
    /// length when it ended early, `None` when it went on past `expected`.
    #[error("file `{path}`: declared {expected} bytes but its data {}", describe_actual(.actual))]
    DataLength { path: String, expected: u64, actual: Option<u64> },
    /// Reading the file's data failed.
    #[error("reading data of `{path}`: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Writing or compressing the layer failed.
    #[error("{context}: {source}")]
    Write {
        context: String,
        #[source]
        source: io::Error,
    },
    /// An earlier error left a partial entry in the stream.
    #[error("layer writer unusable: an earlier error left a partial entry in the stream")]
    Poisoned,
    /// A [`KnownFile`] no longer has the content it was planned with.
    #[error("`{}` changed since it was read", .path.display())]
    Changed { path: std::path::PathBuf },
}

/// A file whose data the writer reads only when it must (see "Chunk reuse"): its planned
/// content hash, and its identity when that hash was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownFile {
    pub path: std::path::PathBuf,
    /// blake3 of its content.
    pub hash: [u8; 32],
    /// Its identity when it was hashed (as the writer's [`LayerWriter::identify_with`] function
    /// gives it): while it has it, it has that content.
    pub identity: String,
}

/// What an entry's data is, as the writer is given it.
enum Data<'a> {
    None,
    Reader(&'a mut dyn Read),
    Known(KnownFile),
}

/// An entry appended while the stream is still made of kept chunks: written only if the chunk
/// it is in turns out not to be kept.
struct Deferred {
    path: String,
    headers: Vec<u8>,
    size: u64,
    file: Option<KnownFile>,
}

/// The start of a stream while every chunk so far was kept: the entries of the chunk being
/// gathered, its key by content so far, and where the digests are.
struct Prefix {
    pending: Vec<Deferred>,
    len: u64,
    alias: blake3::Hasher,
    tar: ShaState,
    blob: ShaState,
}

/// A new key by content ([`ChunkRecord::alias`]) for a chunk under `codec`.
fn alias_hasher(codec: Compression) -> blake3::Hasher {
    let mut h = blake3::Hasher::new_derive_key("compose 2026-12 layer chunk by content v1");
    h.update(codec.compressor_id().as_bytes()).update(&[0]);
    h
}

/// Adds an entry to a key by content: its headers, and its data's planned hash and size.
fn alias_entry(h: &mut blake3::Hasher, headers: &[u8], file: Option<&KnownFile>, size: u64) {
    h.update(&(headers.len() as u64).to_le_bytes()).update(headers);
    match file {
        Some(f) => h.update(&[1]).update(&f.hash).update(&size.to_le_bytes()),
        None => h.update(&[0]),
    };
}

/// Reads a [`KnownFile`], hashing it only when its identity changed; fails with
/// [`LayerError::Changed`] when its content is not the planned one.
struct KnownReader {
    file: std::fs::File,
    hasher: Option<blake3::Hasher>,
}

impl Read for KnownReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

fn describe_actual(actual: &Option<u64>) -> String {
    match actual {
        Some(n) => format!("ended after {n}"),
        None => "is longer".to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Tar headers
// ---------------------------------------------------------------------------

/// Largest value of an 8-byte octal field (7 digits).
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (11 digits).
const MAX_OCTAL_12: u64 = 0o77_777_777_777;

const TYPE_FILE: u8 = b'0';
const TYPE_HARDLINK: u8 = b'1';
const TYPE_SYMLINK: u8 = b'2';
const TYPE_DIR: u8 = b'5';
const TYPE_PAX: u8 = b'x';

const PAX_HEADER_NAME: &[u8] = b"././@PaxHeader";

/// Fields of one header. [`ustar_block`] needs every value to fit its
/// field; [`entry_headers`] moves the ones that do not into PAX records.
struct Ustar<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    typeflag: u8,
    linkname: &'a [u8],
}

/// Writes `value` as zero-padded octal into all but the last byte of
/// `field`, which is NUL.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let mut v = value;
    for slot in field[..digits].iter_mut().rev() {
        *slot = b'0' + (v & 7) as u8;
        v >>= 3;
    }
    field[digits] = 0;
    debug_assert_eq!(v, 0, "value {value:#o} does not fit the field");
}

fn put_bytes(field: &mut [u8], bytes: &[u8]) {
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

fn ustar_block(h: &Ustar<'_>) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    put_bytes(&mut b[0..100], h.name);
    put_octal(&mut b[100..108], u64::from(h.mode));
    put_octal(&mut b[108..116], h.uid);
    put_octal(&mut b[116..124], h.gid);
    put_octal(&mut b[124..136], h.size);
    put_octal(&mut b[136..148], h.mtime);
    b[156] = h.typeflag;
    put_bytes(&mut b[157..257], h.linkname);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    // uname 265..297 and gname 297..329 stay empty.
    put_octal(&mut b[329..337], 0); // devmajor
    put_octal(&mut b[337..345], 0); // devminor
                                    // prefix 345..500 and padding stay zero.
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    put_octal(&mut b[148..155], sum);
    b[155] = b' ';
    b
}

/// Appends one PAX record `"<len> <key>=<value>\n"`.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let base = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut total = base;
    loop {
        let next = base + total.to_string().len();
        if next == total {
            break;
        }
        total = next;
    }
    out.extend_from_slice(total.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Whether `s` can be stored in a 100-byte ustar string field (else a PAX
/// record carries it).
fn fits_ustar_string(s: &[u8]) -> bool {
    s.len() <= 100 && s.is_ascii()
}

/// ASCII-only, 100-byte fallback written in the ustar field when the real
/// value is carried by a PAX record.
fn ascii_fallback(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(u8::is_ascii).take(100).collect()
}

/// Serializes the header block(s) of one entry: an optional PAX header with
/// its records, then the ustar header.
fn entry_headers(h: &Ustar<'_>) -> Vec<u8> {
    let (name, linkname, uid, gid, size, mtime) = (h.name, h.linkname, h.uid, h.gid, h.size, h.mtime);
    let name_ok = fits_ustar_string(name);
    let link_ok = fits_ustar_string(linkname);
    let mut records = Vec::new();
    // Records in byte order of their keys.
    if gid > MAX_OCTAL_8 {
        pax_record(&mut records, "gid", gid.to_string().as_bytes());
    }
    if !link_ok {
        pax_record(&mut records, "linkpath", linkname);
    }
    if mtime > MAX_OCTAL_12 {
        pax_record(&mut records, "mtime", mtime.to_string().as_bytes());
    }
    if !name_ok {
        pax_record(&mut records, "path", name);
    }
    if size > MAX_OCTAL_12 {
        pax_record(&mut records, "size", size.to_string().as_bytes());
    }
    if uid > MAX_OCTAL_8 {
        pax_record(&mut records, "uid", uid.to_string().as_bytes());
    }

    let mut out = Vec::with_capacity(2 * BLOCK + records.len() + BLOCK);
    if !records.is_empty() {
        out.extend_from_slice(&ustar_block(&Ustar {
            name: PAX_HEADER_NAME,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: records.len() as u64,
            mtime: 0,
            typeflag: TYPE_PAX,
            linkname: b"",
        }));
        out.extend_from_slice(&records);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    let name_field = if name_ok { name.to_vec() } else { ascii_fallback(name) };
    let link_field = if link_ok { linkname.to_vec() } else { ascii_fallback(linkname) };
    let fit = |v: u64, max: u64| if v > max { 0 } else { v };
    out.extend_from_slice(&ustar_block(&Ustar {
        name: &name_field,
        mode: h.mode,
        uid: fit(uid, MAX_OCTAL_8),
        gid: fit(gid, MAX_OCTAL_8),
        size: fit(size, MAX_OCTAL_12),
        mtime: fit(mtime, MAX_OCTAL_12),
        typeflag: h.typeflag,
        linkname: &link_field,
    }));
    out
}

/// Checks that `path` is an absolute, normalized image path other than `/`.
fn check_image_path(path: &str) -> Result<(), &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("must start with `/`");
    };
    if rest.is_empty() {
        return Err("`/` itself is never an entry");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    for component in rest.split('/') {
        match component {
            "" => return Err("has an empty component (`//` or a trailing `/`)"),
            "." | ".." => return Err("has a `.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// The top directories a merged-`/usr` system (Debian bookworm and later) keeps under `/usr`,
/// with links at the root (`/bin` → `usr/bin`).
pub const MERGED_USR_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// `/bin/x` → `/usr/bin/x` (and `/bin` → `/usr/bin`) for the [`MERGED_USR_DIRS`]; `None` for
/// every other path.
pub fn merged_usr_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let top = rest.split('/').next().unwrap_or(rest);
    MERGED_USR_DIRS.contains(&top).then(|| format!("/usr{path}"))
}

/// The parent of a checked image path, or `None` for a top-level entry.
pub fn parent_of(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

// ---------------------------------------------------------------------------
// Layer writer
// ---------------------------------------------------------------------------

const COPY_BUF: usize = 256 * 1024;

/// Streams a reproducible compressed tar layer into a sink.
///
/// See the module documentation for the exact format and ordering rules.
pub struct LayerWriter<W: Write> {
    gz: ChunkedCompressor<W>,
    codec: Compression,
    /// While every chunk so far was kept (with a cache only).
    prefix: Option<Prefix>,
    /// The key by content of the chunk being written, while it is made of whole known entries.
    alias: Option<blake3::Hasher>,
    /// How a known file's identity is read.
    identify: fn(&std::fs::Metadata) -> String,
    last: Option<String>,
    dirs: HashSet<Box<str>>,
    non_dirs: HashSet<Box<str>>,
    buf: Vec<u8>,
    poisoned: bool,
}

impl<W: Write> LayerWriter<W> {
    /// A gzip layer writer compressing into `sink` on the current rayon pool.
    pub fn new(sink: W) -> Self {
        Self::with_compressor(ChunkedCompressor::new(sink))
    }

    /// A layer writer compressing with `codec`, reusing the chunks `cache` holds.
    pub fn with(sink: W, codec: Compression, cache: Option<Arc<dyn ChunkCache>>) -> Self {
        Self::with_compressor(ChunkedCompressor::with(sink, codec, cache))
    }

    /// How a [`KnownFile`]'s identity is read from its metadata (without one, a known file is
    /// always hashed as it is read).
    pub fn identify_with(&mut self, identify: fn(&std::fs::Metadata) -> String) {
        self.identify = identify;
    }

    /// A layer writer over a configured compressor (which must not have been
    /// written to yet, or the tar stream would not start at offset 0).
    pub fn with_compressor(gz: ChunkedCompressor<W>) -> Self {
        let codec = gz.codec;
        let prefix = gz.cache().is_some().then(|| Prefix {
            pending: Vec::new(),
            len: 0,
            alias: alias_hasher(codec),
            tar: ShaState::default(),
            blob: ShaState::default(),
        });
        LayerWriter {
            gz,
            codec,
            prefix,
            alias: None,
            identify: |_| String::new(),
            last: None,
            dirs: HashSet::new(),
            non_dirs: HashSet::new(),
            buf: Vec::new(),
            poisoned: false,
        }
    }

    /// Appends one entry. `data` must be `Some` exactly for files and deliver
    /// exactly `size` bytes.
    ///
    /// Validation errors (order, path, parent, mode, link target, missing or
    /// unexpected data) are reported before anything is written, so the
    /// writer stays usable; read, write and data-length errors leave a
    /// partial entry behind and make every later call fail with
    /// [`LayerError::Poisoned`].
    pub fn append(&mut self, entry: &Entry, data: Option<&mut dyn Read>) -> Result<(), LayerError> {
        self.append_data(entry, data.map_or(Data::None, Data::Reader))
    }

    /// Appends a file entry whose data is `file`, read only if its chunk is not kept (see "Chunk
    /// reuse" in the module documentation); the file must have the planned content when read.
    pub fn append_known(&mut self, entry: &Entry, file: KnownFile) -> Result<(), LayerError> {
        self.append_data(entry, Data::Known(file))
    }

    fn append_data(&mut self, entry: &Entry, data: Data<'_>) -> Result<(), LayerError> {
        if self.poisoned {
            return Err(LayerError::Poisoned);
        }
        let path = entry.path.as_str();
        check_image_path(path).map_err(|reason| LayerError::InvalidPath { path: path.to_owned(), reason })?;
        if let Some(previous) = &self.last {
            if path == previous.as_str() {
                return Err(LayerError::Duplicate { path: path.to_owned() });
            }
            if path < previous.as_str() {
                return Err(LayerError::OutOfOrder { path: path.to_owned(), previous: previous.clone() });
            }
        }
        if let Some(parent) = parent_of(path) {
            if !self.dirs.contains(parent) {
                let (path, parent) = (path.to_owned(), parent.to_owned());
                return Err(if self.non_dirs.contains(parent.as_str()) {
                    LayerError::ParentNotDir { path, parent }
                } else {
                    LayerError::MissingParent { path, parent }
                });
            }
        }
        if entry.mode & !0o7777 != 0 {
            return Err(LayerError::InvalidMode { path: path.to_owned(), mode: entry.mode });
        }
        let link_err = |target: &str, reason| LayerError::InvalidLinkTarget { path: path.to_owned(), target: target.to_owned(), reason };
        let (typeflag, mode, size, linkname): (u8, u32, u64, &[u8]) = match &entry.kind {
            EntryKind::Dir => (TYPE_DIR, entry.mode, 0, b""),
            EntryKind::File { size } => (TYPE_FILE, entry.mode, *size, b""),
            EntryKind::Symlink { target } => {
                if target.is_empty() {
                    return Err(link_err(target, "symlink target is empty"));
                }
                if target.contains('\0') {
                    return Err(link_err(target, "symlink target contains a NUL byte"));
                }
                (TYPE_SYMLINK, 0o777, 0, target.as_bytes())
            }
            EntryKind::Hardlink { target } => {
                check_image_path(target).map_err(|reason| link_err(target, reason))?;
                if !self.non_dirs.contains(target.as_str()) {
                    return Err(link_err(
                        target,
                        if self.dirs.contains(target.as_str()) {
                            "hardlink target is a directory"
                        } else {
                            "hardlink target was not appended earlier"
                        },
                    ));
                }
                (TYPE_HARDLINK, entry.mode, 0, &target.as_bytes()[1..])
            }
        };
        let is_file = matches!(entry.kind, EntryKind::File { .. });
        match (matches!(data, Data::None), is_file) {
            (true, true) => return Err(LayerError::DataMismatch { path: path.to_owned(), reason: "a file entry needs data" }),
            (false, false) => return Err(LayerError::DataMismatch { path: path.to_owned(), reason: "only file entries take data" }),
            _ => {}
        }

        // From here on, any failure leaves a partial entry behind.
        self.poisoned = true;
        let is_dir = entry.kind == EntryKind::Dir;
        let mut name = Vec::with_capacity(path.len());
        name.extend_from_slice(&path.as_bytes()[1..]);
        if is_dir {
            name.push(b'/');
        }
        let headers = entry_headers(&Ustar {
            name: &name,
            mode,
            uid: u64::from(entry.uid),
            gid: u64::from(entry.gid),
            size,
            mtime: entry.mtime,
            typeflag,
            linkname,
        });
        let total = (headers.len() as u64).saturating_add(size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64));
        let deferrable = !matches!(data, Data::Reader(_)) && total < CHUNK_SIZE as u64;
        // The gathered chunk ends before an entry it has no room for.
        if deferrable && self.prefix.as_ref().is_some_and(|p| p.len + total > CHUNK_SIZE as u64) {
            self.try_kept(path)?;
        }
        match &mut self.prefix {
            Some(p) if deferrable => {
                let file = match data {
                    Data::Known(f) => Some(f),
                    _ => None,
                };
                alias_entry(&mut p.alias, &headers, file.as_ref(), size);
                p.pending.push(Deferred { path: path.to_owned(), headers, size, file });
                p.len += total;
                if p.len == CHUNK_SIZE as u64 || (p.len >= CHUNK_MIN as u64 && cut_after(path)) {
                    self.try_kept(path)?;
                }
            }
            Some(_) => {
                self.leave_prefix()?;
                self.write_entry(path, &headers, size, data)?;
            }
            None => self.write_entry(path, &headers, size, data)?,
        }
        self.poisoned = false;

        let owned: Box<str> = path.into();
        self.last = Some(path.to_owned());
        if is_dir {
            self.dirs.insert(owned);
        } else {
            self.non_dirs.insert(owned);
        }
        Ok(())
    }

    /// Writes one entry into the stream, with the cuts around it (see "Chunks" in the module
    /// documentation), following the chunk's key by content.
    fn write_entry(&mut self, path: &str, headers: &[u8], size: u64, data: Data<'_>) -> Result<(), LayerError> {
        let total = (headers.len() as u64).saturating_add(size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64));
        // A big entry starts its own chunk; so does one the chunk has no room for.
        if total >= CHUNK_SIZE as u64 || self.gz.pending() as u64 + total > CHUNK_SIZE as u64 {
            self.cut(path)?;
        }
        if self.gz.pending() == 0 && self.gz.cache().is_some() {
            self.alias = Some(alias_hasher(self.codec));
        }
        let chunks = self.gz.chunks();
        match (&mut self.alias, &data) {
            (Some(h), Data::None) => alias_entry(h, headers, None, size),
            (Some(h), Data::Known(f)) => alias_entry(h, headers, Some(f), size),
            _ => self.alias = None,
        }
        if self.gz.pending() as u64 + total == CHUNK_SIZE as u64 {
            // The chunk fills up at this entry's end: the compressor cuts it there.
            self.gz.next_alias = self.alias.take().map(|h| *h.finalize().as_bytes());
        }
        self.write_stream(headers, path)?;
        match data {
            Data::None => {}
            Data::Reader(reader) => self.copy_data(reader, size, path)?,
            Data::Known(f) => self.copy_known(&f, size, path)?,
        }
        if self.gz.chunks() != chunks {
            // Cut inside the entry: the chunk now being written starts inside it.
            self.alias = None;
        }
        if self.gz.pending() >= CHUNK_MIN && cut_after(path) {
            self.cut(path)?;
        }
        Ok(())
    }

    fn copy_known(&mut self, f: &KnownFile, size: u64, path: &str) -> Result<(), LayerError> {
        let read_err = |source| LayerError::Read { path: path.to_owned(), source };
        let file = std::fs::File::open(&f.path).map_err(read_err)?;
        let identify = self.identify;
        let identity = |file: &std::fs::File| file.metadata().ok().map(|m| identify(&m));
        let settled = !f.identity.is_empty() && identity(&file).as_ref() == Some(&f.identity);
        let mut r = KnownReader { file, hasher: (!settled).then(blake3::Hasher::new) };
        self.copy_data(&mut r, size, path).map_err(|e| match e {
            LayerError::DataLength { .. } => LayerError::Changed { path: f.path.clone() },
            other => other,
        })?;
        let same = match r.hasher {
            Some(h) => *h.finalize().as_bytes() == f.hash,
            None => identity(&r.file).as_ref() == Some(&f.identity),
        };
        if !same {
            return Err(LayerError::Changed { path: f.path.clone() });
        }
        Ok(())
    }

    /// The chunk gathered at the start of the stream ends here: written from the cache when it
    /// holds it with the digests where they are, otherwise written out as usual from here on.
    fn try_kept(&mut self, path: &str) -> Result<(), LayerError> {
        let Some(p) = &self.prefix else { return Ok(()) };
        let alias = *p.alias.clone().finalize().as_bytes();
        let kept = self.gz.cache().and_then(|c| c.get(&alias)).and_then(|k| {
            let m = k.memo?;
            let fits = m.tar.0 == p.tar
                && m.blob.0 == p.blob
                && m.tar.1.hashed().checked_sub(m.tar.0.hashed()) == Some(p.len)
                && m.blob.1.hashed().checked_sub(m.blob.0.hashed()) == Some(k.bytes.len() as u64);
            fits.then_some((k.bytes, m))
        });
        match kept {
            Some((bytes, memo)) => {
                let len = p.len;
                self.gz
                    .emit_kept(bytes, &memo, len)
                    .map_err(|source| LayerError::Write { context: format!("writing entry `{path}`"), source })?;
                self.prefix =
                    Some(Prefix { pending: Vec::new(), len: 0, alias: alias_hasher(self.codec), tar: memo.tar.1, blob: memo.blob.1 });
                Ok(())
            }
            None => self.leave_prefix(),
        }
    }

    /// Writes the entries gathered so far: from here on, the stream is written as usual.
    fn leave_prefix(&mut self) -> Result<(), LayerError> {
        let Some(p) = self.prefix.take() else { return Ok(()) };
        for d in p.pending {
            let data = d.file.map_or(Data::None, Data::Known);
            self.write_entry(&d.path, &d.headers, d.size, data)?;
        }
        Ok(())
    }

    fn cut(&mut self, path: &str) -> Result<(), LayerError> {
        let alias = self.alias.take().map(|h| *h.finalize().as_bytes());
        self.gz.cut_with(alias).map_err(|source| LayerError::Write { context: format!("writing entry `{path}`"), source })
    }

    fn write_stream(&mut self, bytes: &[u8], path: &str) -> Result<(), LayerError> {
        self.gz.write_all(bytes).map_err(|source| LayerError::Write { context: format!("writing entry `{path}`"), source })
    }

    /// Copies exactly `size` bytes of file data, then the block padding.
    fn copy_data(&mut self, reader: &mut dyn Read, size: u64, path: &str) -> Result<(), LayerError> {
        if self.buf.len() < COPY_BUF {
            self.buf = vec![0; COPY_BUF];
        }
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.copy_data_with(reader, size, path, &mut buf);
        self.buf = buf;
        result
    }

    fn copy_data_with(&mut self, reader: &mut dyn Read, size: u64, path: &str, buf: &mut [u8]) -> Result<(), LayerError> {
        let read_err = |source| LayerError::Read { path: path.to_owned(), source };
        let mut done: u64 = 0;
        while done < size {
            let want = usize::try_from(size - done).map_or(buf.len(), |r| r.min(buf.len()));
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => return Err(LayerError::DataLength { path: path.to_owned(), expected: size, actual: Some(done) }),
                Ok(n) => n.min(want),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            self.write_stream(&buf[..n], path)?;
            done += n as u64;
        }
        // The data must end exactly here.
        let mut probe = [0u8; 1];
        loop {
            match reader.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => return Err(LayerError::DataLength { path: path.to_owned(), expected: size, actual: None }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            }
        }
        let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.write_stream(&[0u8; BLOCK][..pad], path)
    }

    /// Writes the end-of-archive blocks, finishes the compressed stream (flushing
    /// the sink) and returns the sink with the layer's digests.
    pub fn finish(self) -> Result<(W, LayerDigests), LayerError> {
        self.finish_with_chunks().map(|(w, d, _)| (w, d))
    }

    /// [`finish`](Self::finish), also saying where each chunk is in the blob (with a
    /// [`ChunkCache`] only; empty without).
    pub fn finish_with_chunks(mut self) -> Result<(W, LayerDigests, Vec<ChunkRecord>), LayerError> {
        if self.poisoned {
            return Err(LayerError::Poisoned);
        }
        self.poisoned = true;
        self.leave_prefix()?;
        self.alias = None;
        let ctx = |source| LayerError::Write { context: "finishing layer".to_owned(), source };
        self.gz.write_all(&[0u8; 2 * BLOCK]).map_err(ctx)?;
        let (sink, stats) = self.gz.finish().map_err(ctx)?;
        Ok((
            sink,
            LayerDigests {
                diff_id: stats.uncompressed_sha256,
                digest: stats.compressed_sha256,
                size: stats.compressed_size,
                uncompressed_size: stats.uncompressed_size,
            },
            stats.chunks,
        ))
    }
}

// ---------------------------------------------------------------------------
// Chunked parallel compression
// ---------------------------------------------------------------------------

/// How a layer's tar stream is compressed: the spec's `compression`, `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar+gzip`: libdeflate, one gzip member per chunk.
    #[default]
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`: libzstd, one frame per chunk.
    Zstd,
}

impl Compression {
    /// The names the spec and the command line take.
    pub const NAMES: [&'static str; 2] = ["gzip", "zstd"];

    /// The compression named `name` (`gzip`, `zstd`).
    pub fn parse(name: &str) -> Option<Compression> {
        match name {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Its name in the spec.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The OCI media type of its layers.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => GZIP_MEDIA_TYPE,
            Compression::Zstd => ZSTD_MEDIA_TYPE,
        }
    }

    /// Identity of the exact compressed bytes of a chunk.
    pub fn compressor_id(self) -> &'static str {
        match self {
            Compression::Gzip => COMPRESSOR_ID,
            Compression::Zstd => ZSTD_COMPRESSOR_ID,
        }
    }

    /// Identity of the exact layer bytes [`LayerWriter`] writes with it: the value for derivation
    /// hashes.
    pub fn layer_format_id(self) -> &'static str {
        match self {
            Compression::Gzip => LAYER_FORMAT_ID,
            Compression::Zstd => ZSTD_LAYER_FORMAT_ID,
        }
    }
}

/// Totals of a finished compressed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// Uncompressed bytes.
    pub uncompressed_size: u64,
    /// Compressed bytes.
    pub compressed_size: u64,
    /// sha256 of the uncompressed data.
    pub uncompressed_sha256: [u8; 32],
    /// sha256 of the compressed bytes.
    pub compressed_sha256: [u8; 32],
    /// Where each chunk's compressed bytes are in the stream (only with a [`ChunkCache`]).
    pub chunks: Vec<ChunkRecord>,
}

/// The key of a chunk: blake3 over the compressor's id and the chunk's uncompressed bytes. Equal
/// keys mean equal compressed bytes, since each chunk is compressed on its own.
pub type ChunkKey = [u8; 32];

/// The [`ChunkKey`] of uncompressed chunk `data` under `codec`.
pub fn chunk_key(codec: Compression, data: &[u8]) -> ChunkKey {
    let mut h = blake3::Hasher::new();
    h.update(codec.compressor_id().as_bytes());
    h.update(&[0]);
    h.update(data);
    *h.finalize().as_bytes()
}

/// Compressed chunks kept from earlier layers, by [`ChunkKey`]. A compressed chunk depends on
/// nothing but its uncompressed bytes and the codec, so a kept one is exactly what compressing
/// again would give: reusing it changes no byte of the layer.
pub trait ChunkCache: Send + Sync {
    /// The compressed bytes of the chunk `key` names, checked against what was kept (see
    /// [`ChunkRecord::check`]), and where the digests went over it when it was kept; `None`
    /// when not kept or no longer intact.
    fn get(&self, key: &ChunkKey) -> Option<Kept>;
}

/// A kept chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub bytes: Vec<u8>,
    pub memo: Option<ChunkMemo>,
}

/// Where a layer's two sha256 chains went over one chunk: (state before, state after) for the
/// uncompressed bytes (the diff_id) and for the compressed ones (the digest). A later stream that
/// reaches the chunk in the same state goes to the same state without hashing it: so a layer
/// whose first chunks are unchanged hashes only from the first changed one on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMemo {
    pub tar: (ShaState, ShaState),
    pub blob: (ShaState, ShaState),
}

/// One chunk of a written stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRecord {
    pub key: ChunkKey,
    /// Offset of its compressed bytes in the stream.
    pub offset: u64,
    /// Length of its compressed bytes.
    pub len: u64,
    /// blake3 of its compressed bytes, to check them when they are read back.
    pub check: [u8; 32],
    /// Taken from the [`ChunkCache`] rather than compressed.
    pub reused: bool,
    /// Where the digests went over it in this stream.
    pub memo: Option<ChunkMemo>,
    /// The kept chunk's memo was this stream's: what the cache holds for it is still right.
    pub memo_held: bool,
    /// For a chunk of whole entries whose data the writer was given as [`KnownFile`]s (or that
    /// have none): its key by content ([`LayerWriter`] computes it from the headers and the files'
    /// planned hashes, without reading them), under which it can be found before any is read.
    pub alias: Option<ChunkKey>,
}

/// The initial sha256 state (FIPS 180-4).
const SHA256_IV: [u32; 8] = [0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19];

/// A sha256 in progress with its state open (the eight words, the bytes hashed, the bytes of the
/// unfinished block), so that a stream's state can be compared with a kept one and moved on
/// without hashing (see [`ChunkMemo`]). Gives the bytes `sha2::Sha256` gives, with its block
/// function (SHA-NI where the CPU has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShaState {
    h: [u32; 8],
    len: u64,
    /// The unfinished block: its first `len % 64` bytes, zeros after.
    tail: [u8; 64],
}

impl Default for ShaState {
    fn default() -> Self {
        ShaState { h: SHA256_IV, len: 0, tail: [0; 64] }
    }
}

impl ShaState {
    pub fn update(&mut self, mut data: &[u8]) {
        let t = (self.len % 64) as usize;
        self.len += data.len() as u64;
        if t > 0 {
            let n = (64 - t).min(data.len());
            self.tail[t..t + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            if t + n < 64 {
                return;
            }
            sha2::block_api::compress256(&mut self.h, &[self.tail]);
            self.tail = [0; 64];
        }
        let (blocks, rest) = data.as_chunks::<64>();
        sha2::block_api::compress256(&mut self.h, blocks);
        self.tail[..rest.len()].copy_from_slice(rest);
    }

    /// Bytes hashed so far.
    pub fn hashed(&self) -> u64 {
        self.len
    }

    pub fn finalize(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        let t = (self.len % 64) as usize;
        self.tail[t] = 0x80;
        if t >= 56 {
            sha2::block_api::compress256(&mut self.h, &[self.tail]);
            self.tail = [0; 64];
        }
        self.tail[56..].copy_from_slice(&bits.to_be_bytes());
        sha2::block_api::compress256(&mut self.h, &[self.tail]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.h) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// Text form: `WORDS-HEX:LEN:TAIL-HEX`.
    pub fn encode(&self) -> String {
        let words: Vec<u8> = self.h.iter().flat_map(|w| w.to_be_bytes()).collect();
        format!("{}:{}:{}", hex::encode(words), self.len, hex::encode(&self.tail[..(self.len % 64) as usize]))
    }

    /// The state [`ShaState::encode`] wrote; `None` for anything else.
    pub fn decode(text: &str) -> Option<ShaState> {
        let mut it = text.split(':');
        let (words, len, tail) = (it.next()?, it.next()?, it.next()?);
        let mut raw = [0u8; 32];
        hex::decode_to_slice(words, &mut raw).ok()?;
        let len: u64 = len.parse().ok()?;
        let tail_bytes = hex::decode(tail).ok()?;
        if it.next().is_some() || tail_bytes.len() as u64 != len % 64 {
            return None;
        }
        let mut s = ShaState { h: [0; 8], len, tail: [0; 64] };
        for (w, b) in s.h.iter_mut().zip(raw.chunks_exact(4)) {
            *w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        s.tail[..tail_bytes.len()].copy_from_slice(&tail_bytes);
        Some(s)
    }
}

/// One chunk as a complete gzip member (libdeflate, level [`GZIP_LEVEL`]) or zstd frame (level
/// [`ZSTD_LEVEL`]).
fn compress_chunk(codec: Compression, input: &[u8]) -> Result<Vec<u8>, String> {
    thread_local! {
        static DEFLATE: std::cell::RefCell<Option<libdeflater::Compressor>> = const { std::cell::RefCell::new(None) };
        static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
    }
    match codec {
        Compression::Gzip => DEFLATE.with(|c| {
            let mut c = c.borrow_mut();
            let compressor = c.get_or_insert_with(|| {
                libdeflater::Compressor::new(libdeflater::CompressionLvl::new(i32::from(GZIP_LEVEL)).unwrap_or_default())
            });
            let mut out = vec![0u8; compressor.gzip_compress_bound(input.len())];
            let n = compressor.gzip_compress(input, &mut out).map_err(|e| format!("libdeflate: {e:?}"))?;
            out.truncate(n);
            Ok(out)
        }),
        Compression::Zstd => ZSTD.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| format!("zstd: {e}"))?);
            }
            let compressor = c.as_mut().ok_or("zstd: no compressor")?;
            compressor.compress(input).map_err(|e| format!("zstd: {e}"))
        }),
    }
}

/// What becomes of one chunk: its compressed bytes, and with a cache its record's key, check and
/// whether it was reused. An empty last chunk after full ones is nothing (it would add nothing);
/// an empty only chunk is one empty member or frame.
fn run_chunk(codec: Compression, cache: Option<&dyn ChunkCache>, input: &[u8], last: bool, only: bool) -> Result<Chunked, String> {
    if input.is_empty() {
        let bytes = if last && !only { Vec::new() } else { compress_chunk(codec, input)? };
        return Ok(Chunked { bytes, keyed: None, memo: None });
    }
    let Some(cache) = cache else {
        return Ok(Chunked { bytes: compress_chunk(codec, input)?, keyed: None, memo: None });
    };
    let key = chunk_key(codec, input);
    let (bytes, reused, memo) = match cache.get(&key) {
        Some(kept) => (kept.bytes, true, kept.memo.map(Box::new)),
        None => (compress_chunk(codec, input)?, false, None),
    };
    let check = *blake3::hash(&bytes).as_bytes();
    Ok(Chunked { bytes, keyed: Some((key, check, reused)), memo })
}

/// A compressed chunk.
struct Chunked {
    bytes: Vec<u8>,
    keyed: Option<(ChunkKey, [u8; 32], bool)>,
    memo: Option<Box<ChunkMemo>>,
}

/// Compresses an in-memory blob in chunks of [`CHUNK_SIZE`] (no entry cuts); the bytes are
/// identical to what [`ChunkedCompressor`] produces for the same data written without
/// [`ChunkedCompressor::cut_with`]. Chunks are compressed in parallel on the current rayon pool.
///
/// # Panics
/// Only if the compressor itself fails, which does not happen for in-memory output (it would be
/// a bug in that library).
pub fn compress_bytes(codec: Compression, data: &[u8]) -> Vec<u8> {
    let full = data.len() / CHUNK_SIZE;
    let parts: Vec<(&[u8], bool)> = data[..full * CHUNK_SIZE]
        .chunks(CHUNK_SIZE)
        .map(|c| (c, false))
        .chain(std::iter::once((&data[full * CHUNK_SIZE..], true)))
        .collect();
    let compressed: Vec<Vec<u8>> = parts
        .par_iter()
        .map(|&(chunk, last)| match run_chunk(codec, None, chunk, last, full == 0) {
            Ok(c) => c.bytes,
            Err(e) => panic!("compress_bytes: internal compressor failure: {e}"),
        })
        .collect();
    compressed.concat()
}

/// Where a sha256 chain went over one piece: (state before, state after, whether a memo moved
/// it without hashing).
type Step = (ShaState, ShaState, bool);

/// The sha256 of a stream of pieces, hashed in order: here, or once [`StreamHash::spawn`] is
/// called, on a thread of its own. A layer's two digests are serial chains (the uncompressed
/// bytes for the diff_id, the compressed ones for the digest): on threads of their own they run
/// beside the writer and the compressing pool rather than after them. A piece may come with a
/// memo (state before, state after): when the chain is in that state, it moves on unhashed.
#[derive(Default)]
struct StreamHash {
    here: ShaState,
    steps: Vec<Step>,
    thread: Option<HashThread>,
}

type Piece = (Vec<u8>, Option<(ShaState, ShaState)>);

/// Pieces queued for a chain's thread (at most this many MiB of uncompressed chunks wait): room
/// enough that a chain lagging behind the compressors does not stall the writer.
const HASH_QUEUE: usize = 16;

struct HashThread {
    tx: std::sync::mpsc::SyncSender<Piece>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    done: std::thread::JoinHandle<(ShaState, Vec<Step>)>,
}

fn hash_piece(state: &mut ShaState, buf: &[u8], memo: Option<(ShaState, ShaState)>) -> Step {
    let before = *state;
    match memo {
        Some((from, to)) if from == before => {
            *state = to;
            (before, to, true)
        }
        _ => {
            state.update(buf);
            (before, *state, false)
        }
    }
}

impl StreamHash {
    /// Hashes from now on on a thread (a no-op if already, or if no thread can be started).
    fn spawn(&mut self) {
        if self.thread.is_some() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(HASH_QUEUE);
        let (back_tx, back) = std::sync::mpsc::sync_channel::<Vec<u8>>(HASH_QUEUE);
        let mut state = self.here;
        let mut steps = std::mem::take(&mut self.steps);
        let started = std::thread::Builder::new().name("compose-sha256".into()).spawn(move || {
            for (buf, memo) in rx {
                steps.push(hash_piece(&mut state, &buf, memo));
                let _ = back_tx.try_send(buf);
            }
            (state, steps)
        });
        match started {
            Ok(done) => self.thread = Some(HashThread { tx, back, done }),
            Err(_) => self.steps = Vec::new(),
        }
    }

    /// Hashes `buf` after everything before it (or moves on by `memo`); gives it back when
    /// hashed here.
    fn update(&mut self, buf: Vec<u8>, memo: Option<(ShaState, ShaState)>) -> Option<Vec<u8>> {
        match &self.thread {
            Some(t) => t.tx.send((buf, memo)).err().map(|e| e.0 .0),
            None => {
                let step = hash_piece(&mut self.here, &buf, memo);
                self.steps.push(step);
                Some(buf)
            }
        }
    }

    /// A buffer the thread is done with, for reuse.
    fn recycled(&self) -> Option<Vec<u8>> {
        let mut buf = self.thread.as_ref()?.back.try_recv().ok()?;
        buf.clear();
        Some(buf)
    }

    /// The digest, and each piece's step in order.
    fn finish(self) -> io::Result<([u8; 32], Vec<Step>)> {
        let (state, steps) = match self.thread {
            None => (self.here, self.steps),
            Some(t) => {
                drop(t.tx);
                t.done.join().map_err(|_| io::Error::other("the sha256 thread panicked"))?
            }
        };
        Ok((state.finalize(), steps))
    }
}

enum JobState {
    Pending(Vec<u8>),
    Running,
    Done(Result<(Vec<u8>, Chunked), String>),
    Collected,
}

/// One chunk's compression, runnable by whichever thread claims it first
/// (a pool worker, or the producer while it waits), so progress never
/// depends on the pool having a free thread.
struct Job {
    codec: Compression,
    cache: Option<Arc<dyn ChunkCache>>,
    last: bool,
    /// The stream's only chunk (an empty one still makes a member).
    only: bool,
    state: Mutex<JobState>,
    done: Condvar,
}

impl Job {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the job if nobody has claimed it yet. Returns whether it ran.
    fn try_run(&self) -> bool {
        let input = {
            let mut state = self.lock();
            match std::mem::replace(&mut *state, JobState::Running) {
                JobState::Pending(input) => input,
                other => {
                    *state = other;
                    return false;
                }
            }
        };
        let result = catch_unwind(AssertUnwindSafe(|| run_chunk(self.codec, self.cache.as_deref(), &input, self.last, self.only)))
            .unwrap_or_else(|_| Err("the compression task panicked".to_owned()))
            .map(|out| (input, out));
        *self.lock() = JobState::Done(result);
        self.done.notify_all();
        true
    }

    fn is_done(&self) -> bool {
        matches!(*self.lock(), JobState::Done(_))
    }

    fn is_pending(&self) -> bool {
        matches!(*self.lock(), JobState::Pending(_))
    }

    /// Waits for (or runs) the job and takes its input and result.
    fn collect(&self) -> Result<(Vec<u8>, Chunked), String> {
        loop {
            let mut state = self.lock();
            match std::mem::replace(&mut *state, JobState::Collected) {
                JobState::Done(result) => return result,
                JobState::Pending(input) => {
                    *state = JobState::Pending(input);
                    drop(state);
                    self.try_run();
                }
                JobState::Running => {
                    *state = JobState::Running;
                    drop(self.done.wait(state).unwrap_or_else(PoisonError::into_inner));
                }
                JobState::Collected => return Err("chunk collected twice".to_owned()),
            }
        }
    }
}

/// A streaming compressor whose output is byte-identical whatever the thread count and write
/// sizes (see the module documentation for the format). The stream is cut into chunks at every
/// [`CHUNK_SIZE`] bytes since the last cut and wherever [`cut_with`](Self::cut_with) is called; each chunk
/// is compressed on its own on the current rayon pool while the caller keeps writing. At most
/// `max_in_flight` chunks are buffered, and compressed chunks are written to the sink in order
/// from the calling thread. With a [`ChunkCache`], chunks it holds are taken from it instead.
///
/// [`Write::flush`] writes every dispatched chunk and flushes the sink, but
/// cannot emit the partial chunk being filled (that would change the bytes).
/// Dropping without [`finish`](Self::finish) leaves a truncated stream.
pub struct ChunkedCompressor<W: Write> {
    sink: W,
    codec: Compression,
    cache: Option<Arc<dyn ChunkCache>>,
    buf: Vec<u8>,
    spare: Vec<Vec<u8>>,
    in_flight: VecDeque<Arc<Job>>,
    max_in_flight: usize,
    /// The diff_id, over each chunk's input as it is written out.
    in_sha: StreamHash,
    out_sha: StreamHash,
    in_len: u64,
    out_len: u64,
    /// Chunks dispatched so far.
    chunks: u64,
    /// Chunks written so far.
    drained: usize,
    /// The alias ([`ChunkRecord::alias`]) of each chunk in flight, and of the chunk being cut.
    aliases: VecDeque<Option<ChunkKey>>,
    next_alias: Option<ChunkKey>,
    /// Records of the keyed chunks, with their place among the chunks written.
    records: Vec<(usize, ChunkRecord)>,
    failed: Option<String>,
}

impl<W: Write> ChunkedCompressor<W> {
    /// A gzip compressor writing into `sink`, keeping up to `2 × threads + 1` chunks in flight
    /// (threads of the current rayon pool, counted up to 16).
    pub fn new(sink: W) -> Self {
        Self::with(sink, Compression::Gzip, None)
    }

    /// A compressor with `codec`, taking chunks from `cache` when it has them.
    pub fn with(sink: W, codec: Compression, cache: Option<Arc<dyn ChunkCache>>) -> Self {
        let threads = rayon::current_num_threads().clamp(1, 16);
        let mut c = Self::with_max_in_flight(sink, 2 * threads + 1);
        c.codec = codec;
        c.cache = cache;
        c
    }

    /// A gzip compressor keeping at most `max_in_flight` (at least 1) compressed or compressing
    /// chunks buffered. Does not affect the output bytes.
    pub fn with_max_in_flight(sink: W, max_in_flight: usize) -> Self {
        ChunkedCompressor {
            sink,
            codec: Compression::Gzip,
            cache: None,
            buf: Vec::with_capacity(CHUNK_SIZE),
            spare: Vec::new(),
            in_flight: VecDeque::new(),
            max_in_flight: max_in_flight.max(1),
            in_sha: StreamHash::default(),
            out_sha: StreamHash::default(),
            in_len: 0,
            out_len: 0,
            chunks: 0,
            drained: 0,
            aliases: VecDeque::new(),
            next_alias: None,
            records: Vec::new(),
            failed: None,
        }
    }

    /// The sink.
    pub fn get_ref(&self) -> &W {
        &self.sink
    }

    /// Uncompressed bytes accepted so far.
    pub fn uncompressed_len(&self) -> u64 {
        self.in_len
    }

    /// Uncompressed bytes since the last cut.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Ends the current chunk here (nothing when it is empty); `alias` is its key by content,
    /// if it has one.
    pub fn cut_with(&mut self, alias: Option<ChunkKey>) -> io::Result<()> {
        self.check()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        self.next_alias = alias;
        self.dispatch(false).map_err(|e| self.fail(e))
    }

    /// Chunks cut so far (kept ones included).
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The chunk cache, if any.
    fn cache(&self) -> Option<&Arc<dyn ChunkCache>> {
        self.cache.as_ref()
    }

    /// Writes a kept chunk of `uncompressed` bytes that were never read: its compressed bytes,
    /// and both digests moved on by its memo (whose states before must be the stream's: the
    /// caller checked). Only at the very start of a stream, or after other kept chunks.
    fn emit_kept(&mut self, bytes: Vec<u8>, memo: &ChunkMemo, uncompressed: u64) -> io::Result<()> {
        self.check()?;
        let at = |h: &StreamHash, s: &ShaState| h.thread.is_none() && h.here == *s;
        if !self.buf.is_empty() || !self.in_flight.is_empty() || !at(&self.in_sha, &memo.tar.0) || !at(&self.out_sha, &memo.blob.0) {
            return Err(self.fail(io::Error::other("a kept chunk where the stream is not at its start")));
        }
        self.chunks += 1;
        self.drained += 1;
        self.in_len += uncompressed;
        if let Err(e) = self.sink.write_all(&bytes) {
            return Err(self.fail(e));
        }
        self.out_len += bytes.len() as u64;
        self.out_sha.update(Vec::new(), Some(memo.blob));
        self.in_sha.update(Vec::new(), Some(memo.tar));
        Ok(())
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(msg) => Err(io::Error::other(format!("compressed stream unusable after an earlier error: {msg}"))),
        }
    }

    fn fail(&mut self, err: io::Error) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some(err.to_string());
        }
        err
    }

    /// Writes chunk number `seq` (its compressed bytes) and hashes both its forms, in order.
    fn emit(&mut self, seq: usize, input: Vec<u8>, chunk: Chunked, alias: Option<ChunkKey>) -> io::Result<()> {
        let bytes = chunk.bytes;
        if let Some((key, check, reused)) = chunk.keyed {
            let record =
                ChunkRecord { key, offset: self.out_len, len: bytes.len() as u64, check, reused, memo: None, memo_held: false, alias };
            self.records.push((seq, record));
        }
        self.sink.write_all(&bytes)?;
        self.out_len += bytes.len() as u64;
        self.out_sha.update(bytes, chunk.memo.as_ref().map(|m| m.blob));
        if let Some(mut input) = self.in_sha.update(input, chunk.memo.as_ref().map(|m| m.tar)) {
            input.clear();
            if self.spare.len() < 2 {
                self.spare.push(input);
            }
        }
        Ok(())
    }

    /// Hands the current chunk to the pool (or, for the last one, leaves it
    /// for the draining thread) and bounds the number in flight.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        if !last {
            // A stream of more than one chunk: its two digests are worth threads of their own.
            self.in_sha.spawn();
            self.out_sha.spawn();
        }
        let next = self.spare.pop().or_else(|| self.in_sha.recycled()).unwrap_or_else(|| Vec::with_capacity(CHUNK_SIZE));
        let input = std::mem::replace(&mut self.buf, next);
        let only = last && self.chunks == 0;
        self.chunks += 1;
        let job = Arc::new(Job {
            codec: self.codec,
            cache: self.cache.clone(),
            last,
            only,
            state: Mutex::new(JobState::Pending(input)),
            done: Condvar::new(),
        });
        // The last chunk is left to the draining thread, which is about to
        // wait for it anyway. So is every chunk when the caller is the only
        // worker of its pool: nobody else could run it, and the queued task
        // would only linger until the caller returns to the pool.
        let alone = rayon::current_thread_index().is_some() && rayon::current_num_threads() <= 1;
        if !last && !alone {
            let job = Arc::clone(&job);
            rayon::spawn(move || {
                job.try_run();
            });
        }
        self.in_flight.push_back(job);
        self.aliases.push_back(self.next_alias.take());
        while self.in_flight.len() > self.max_in_flight {
            self.drain_one()?;
        }
        while self.in_flight.front().is_some_and(|j| j.is_done()) {
            self.drain_one()?;
        }
        Ok(())
    }

    /// Writes the oldest chunk, helping with pending chunks while it is
    /// still being compressed elsewhere.
    fn drain_one(&mut self) -> io::Result<()> {
        let Some(front) = self.in_flight.front().cloned() else {
            return Ok(());
        };
        while !front.is_done() {
            let helped = match self.in_flight.iter().find(|j| j.is_pending()) {
                Some(job) => job.try_run(),
                None => false,
            };
            if !helped {
                break;
            }
        }
        let (input, output) = front.collect().map_err(io::Error::other)?;
        self.in_flight.pop_front();
        let seq = self.drained;
        self.drained += 1;
        let alias = self.aliases.pop_front().flatten();
        self.emit(seq, input, output, alias)
    }

    fn write_inner(&mut self, data: &[u8]) -> io::Result<()> {
        self.in_len += data.len() as u64;
        let mut rest = data;
        while !rest.is_empty() {
            let n = (CHUNK_SIZE - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == CHUNK_SIZE {
                self.dispatch(false)?;
            }
        }
        Ok(())
    }

    fn finish_inner(&mut self) -> io::Result<()> {
        self.dispatch(true)?;
        while !self.in_flight.is_empty() {
            self.drain_one()?;
        }
        self.sink.flush()
    }

    /// Compresses the remaining data, flushes the sink
    /// and returns it with the stream's totals.
    pub fn finish(mut self) -> io::Result<(W, StreamStats)> {
        self.check()?;
        if let Err(e) = self.finish_inner() {
            return Err(self.fail(e));
        }
        let (tar, tar_steps) = std::mem::take(&mut self.in_sha).finish()?;
        let (blob, blob_steps) = std::mem::take(&mut self.out_sha).finish()?;
        let chunks = std::mem::take(&mut self.records)
            .into_iter()
            .map(|(seq, mut r)| {
                if let (Some(t), Some(b)) = (tar_steps.get(seq), blob_steps.get(seq)) {
                    r.memo = Some(ChunkMemo { tar: (t.0, t.1), blob: (b.0, b.1) });
                    r.memo_held = t.2 && b.2;
                }
                r
            })
            .collect();
        let stats = StreamStats {
            uncompressed_size: self.in_len,
            compressed_size: self.out_len,
            uncompressed_sha256: tar,
            compressed_sha256: blob,
            chunks,
        };
        Ok((self.sink, stats))
    }
}

impl<W: Write> Write for ChunkedCompressor<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        match self.write_inner(data) {
            Ok(()) => Ok(data.len()),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        let result = (|| {
            while !self.in_flight.is_empty() {
                self.drain_one()?;
            }
            self.sink.flush()
        })();
        result.map_err(|e| self.fail(e))
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// A reader of the tar stream inside a layer blob of `media_type`: gzip (every member) and zstd
/// (every frame) are decompressed, anything else is read as a plain tar.
pub fn decoder<'a, R: io::BufRead + 'a>(media_type: &str, reader: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        Box::new(zstd::stream::read::Decoder::with_buffer(reader)?)
    } else {
        Box::new(reader)
    })
}

// ---------------------------------------------------------------------------
// Checking a layer's diff_id
// ---------------------------------------------------------------------------

/// The `diff_id` (sha256 of the uncompressed tar) of a layer blob, computed from the blob's
/// bytes as they are written to it: gzip and zstd layers are decompressed on the fly, an
/// uncompressed tar is its own diff_id. Used to check what a cache or a file claims about a
/// layer while the blob streams in, without a second pass.
pub struct DiffIdWriter(Decoding);

/// sha256 of what is written to it.
struct HashSink(Sha256);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Decoding {
    Plain(HashSink),
    Gzip(Box<flate2::write::MultiGzDecoder<HashSink>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, HashSink>>),
    /// The stream did not decompress: takes the rest, then fails.
    Broken,
}

impl DiffIdWriter {
    /// A writer for a layer of `media_type`; `None` if it is not a layer media type known here.
    pub fn new(media_type: &str) -> Option<DiffIdWriter> {
        let sink = HashSink(Sha256::new());
        let d = if media_type.ends_with("+gzip") {
            Decoding::Gzip(Box::new(flate2::write::MultiGzDecoder::new(sink)))
        } else if media_type.ends_with("+zstd") {
            Decoding::Zstd(Box::new(zstd::stream::write::Decoder::new(sink).ok()?))
        } else if media_type.ends_with(".tar") {
            Decoding::Plain(sink)
        } else {
            return None;
        };
        Some(DiffIdWriter(d))
    }

    /// A writer whose stream already failed to decompress: [`DiffIdWriter::finish`] fails.
    pub fn broken() -> DiffIdWriter {
        DiffIdWriter(Decoding::Broken)
    }

    /// The diff_id of everything written; an error if the compressed stream is damaged or cut.
    pub fn finish(self) -> io::Result<[u8; 32]> {
        let sink = match self.0 {
            Decoding::Plain(s) => s,
            Decoding::Broken => return Err(io::Error::new(io::ErrorKind::InvalidData, "the layer does not decompress")),
            Decoding::Gzip(mut g) => {
                g.try_finish()?;
                g.finish()?
            }
            Decoding::Zstd(mut z) => {
                z.flush()?;
                z.into_inner()
            }
        };
        Ok(sink.0.finalize().into())
    }

    /// The diff_id of the layer blob at `path`.
    pub fn of_file(path: &std::path::Path, media_type: &str) -> io::Result<[u8; 32]> {
        let mut w = DiffIdWriter::new(media_type)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("`{media_type}` is not a layer media type")))?;
        io::copy(&mut std::fs::File::open(path)?, &mut w)?;
        w.finish()
    }
}

impl Write for DiffIdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Decoding::Plain(s) => s.write(buf),
            Decoding::Gzip(g) => g.write(buf),
            Decoding::Zstd(z) => z.write(buf),
            Decoding::Broken => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Deterministic, semi-compressible bytes (text-like with noise).
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let words: Vec<Vec<u8>> = (0..512)
            .map(|_| {
                let n = 2 + (next() % 9) as usize;
                (0..n).map(|_| b'a' + (next() % 26) as u8).collect()
            })
            .collect();
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            let r = next();
            if r % 17 == 0 {
                out.extend_from_slice(&next().to_le_bytes());
            } else {
                out.extend_from_slice(&words[(r >> 8) as usize % words.len()]);
                out.push(if r % 11 == 0 { b'\n' } else { b' ' });
            }
        }
        out.truncate(len);
        out
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out).expect("valid gzip");
        out
    }

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool")
    }

    fn unzstd(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(data).expect("decoder").read_to_end(&mut out).expect("valid zstd");
        out
    }

    fn decompress(codec: Compression, data: &[u8]) -> Vec<u8> {
        match codec {
            Compression::Gzip => gunzip(data),
            Compression::Zstd => unzstd(data),
        }
    }

    const CODECS: [Compression; 2] = [Compression::Gzip, Compression::Zstd];

    fn streaming(codec: Compression, data: &[u8], write_size: usize, max_in_flight: usize) -> (Vec<u8>, StreamStats) {
        let mut gz = ChunkedCompressor::with_max_in_flight(Vec::new(), max_in_flight);
        gz.codec = codec;
        for piece in data.chunks(write_size.max(1)) {
            gz.write_all(piece).expect("write");
        }
        gz.finish().expect("finish")
    }

    #[test]
    fn gzip_header_and_trailer_are_fixed() {
        let out = compress_bytes(Compression::Gzip, b"hello");
        assert_eq!(out[..10], GZIP_HEADER);
        let n = out.len();
        assert_eq!(out[n - 8..n - 4], crc32fast::hash(b"hello").to_le_bytes());
        assert_eq!(out[n - 4..], 5u32.to_le_bytes());
        assert_eq!(gunzip(&out), b"hello");
    }

    #[test]
    fn chunks_round_trip_edge_sizes() {
        let sizes = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 12_345];
        for codec in CODECS {
            for &len in &sizes {
                let data = sample(len, len as u64);
                let expected = compress_bytes(codec, &data);
                assert_eq!(decompress(codec, &expected), data, "{codec:?} compress_bytes len {len}");
                let (out, stats) = streaming(codec, &data, 65_536, 3);
                assert_eq!(out, expected, "{codec:?} streaming len {len}");
                assert_eq!(stats.uncompressed_size, len as u64);
                assert_eq!(stats.compressed_size, out.len() as u64);
                assert_eq!(stats.uncompressed_sha256, sha(&data));
                assert_eq!(stats.compressed_sha256, sha(&out));
            }
        }
    }

    #[test]
    fn chunks_are_independent_of_threads_and_write_sizes() {
        let data = sample(3 * CHUNK_SIZE + 4321, 7);
        for codec in CODECS {
            let expected = compress_bytes(codec, &data);
            assert_eq!(decompress(codec, &expected), data);
            for threads in [1, 2, 7] {
                let pool = pool(threads);
                pool.install(|| {
                    assert_eq!(compress_bytes(codec, &data), expected, "{codec:?} compress_bytes, {threads} threads");
                    for (write_size, in_flight) in [(1, 1), (4_095, 2), (CHUNK_SIZE, 3), (CHUNK_SIZE + 7, 16), (data.len(), 5)] {
                        let (out, _) = streaming(codec, &data, write_size, in_flight);
                        assert_eq!(out, expected, "{codec:?}, {threads} threads, writes of {write_size}, {in_flight} in flight");
                    }
                });
            }
            // Also from a thread outside any pool (global pool).
            let (out, _) = streaming(codec, &data, 100_000, 5);
            assert_eq!(out, expected);
            // Irregular write sizes.
            let mut gz = ChunkedCompressor::with(Vec::new(), codec, None);
            let mut rest = &data[..];
            let mut i = 0usize;
            while !rest.is_empty() {
                i += 1;
                let n = ((i * 7919) % 300_000).min(rest.len());
                gz.write_all(&rest[..n]).expect("write");
                if i.is_multiple_of(5) {
                    gz.flush().expect("flush");
                }
                rest = &rest[n..];
            }
            assert_eq!(gz.finish().expect("finish").0, expected);
        }
    }

    #[test]
    fn compressor_golden() {
        // Pins the exact compressor output; a dependency upgrade that changes
        // bytes must change the compressor id (and these literals).
        let data = sample(CHUNK_SIZE + 1000, 42);
        let out = compress_bytes(Compression::Gzip, &data);
        // Issue 14: libdeflate, a gzip member per chunk (two here: a full chunk and 1000 bytes).
        assert_eq!(hex::encode(sha(&out)), "3c652ac098b35d1d9cbefefd7f5357c6782de1c9d8005b2e96a55ac776df1652");
        assert_eq!(out.windows(GZIP_HEADER.len()).filter(|w| *w == GZIP_HEADER).count(), 2);
        assert_eq!(COMPRESSOR_ID, "gzip/libdeflate-1.26.1/level6/member-per-chunk/v3");
        // zstd: a frame per chunk, two here.
        let out = compress_bytes(Compression::Zstd, &data);
        assert_eq!(hex::encode(sha(&out)), "669911d940f11bf8cffb7bc6d5f838b6f60218b881b6649e59b8afbf131f6e42");
        assert_eq!(out.windows(4).filter(|w| *w == [0x28, 0xb5, 0x2f, 0xfd]).count(), 2);
        assert_eq!(ZSTD_COMPRESSOR_ID, "zstd/libzstd-1.5.7/level3/frame-per-chunk/v1");
        // The library is the one the id names (Cargo.toml pins zstd-sys).
        assert_eq!(zstd::zstd_safe::version_number(), 10507);
    }

    struct FailingSink {
        budget: usize,
    }

    impl Write for FailingSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.budget);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn gzip_sink_errors_propagate_and_poison() {
        let data = sample(4 * CHUNK_SIZE, 3);
        let mut gz = ChunkedCompressor::with_max_in_flight(FailingSink { budget: 100 }, 1);
        let err = gz.write_all(&data).expect_err("sink fails");
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(gz.write_all(b"x").is_err());
        assert!(gz.finish().is_err());
    }

    // --- layer ---------------------------------------------------------

    fn dir(path: &str, mode: u32) -> Entry {
        Entry { path: path.to_owned(), kind: EntryKind::Dir, mode, uid: 0, gid: 0, mtime: 1_700_000_000 }
    }

    fn file(path: &str, size: u64, mode: u32) -> Entry {
        Entry { path: path.to_owned(), kind: EntryKind::File { size }, mode, uid: 1000, gid: 100, mtime: 1_600_000_000 }
    }

    fn symlink(path: &str, target: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: EntryKind::Symlink { target: target.to_owned() },
            mode: 0o644, // ignored: symlinks are 0o777
            uid: 0,
            gid: 0,
            mtime: 1,
        }
    }

    fn hardlink(path: &str, target: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: EntryKind::Hardlink { target: target.to_owned() },
            mode: 0o755,
            uid: 1000,
            gid: 100,
            mtime: 1_600_000_000,
        }
    }

    /// A layer exercising every feature; returns entries with their data.
    fn rich_layer() -> Vec<(Entry, Option<Vec<u8>>)> {
        let long_name = format!("/opt/{}", "n".repeat(145));
        assert_eq!(long_name.len(), 150);
        let long_target = format!("../{}/busybox", "t".repeat(120));
        let mut big = file("/opt/big.bin", 0, 0o644);
        let big_data = sample(2 * CHUNK_SIZE + 777, 9);
        big.kind = EntryKind::File { size: big_data.len() as u64 };
        let mut huge_ids = file("/opt/ids", 3, 0o600);
        huge_ids.uid = 4_000_000_000;
        huge_ids.gid = 3_000_000;
        huge_ids.mtime = 1 << 40;
        vec![
            (dir("/bin", 0o755), None),
            (symlink("/bin/sh", &long_target), None),
            (symlink("/bin/short", "busybox"), None),
            (dir("/etc", 0o755), None),
            (file("/etc/empty", 0, 0o644), Some(Vec::new())),
            (file("/etc/hosts", 24, 0o644), Some(b"127.0.0.1 localhost\n::1\n".to_vec())),
            (hardlink("/etc/hosts.link", "/etc/hosts"), None),
            (dir("/opt", 0o2775), None),
            (big, Some(big_data)),
            (huge_ids, Some(b"abc".to_vec())),
            (file(&long_name, 5, 0o640), Some(b"long!".to_vec())),
            (dir("/opt/日本", 0o755), None),
            (file("/opt/日本/データ.txt", 6, 0o644), Some("データ".as_bytes()[..6].to_vec())),
            (dir("/tmp", 0o1777), None),
            (dir("/usr", 0o755), None),
            (dir("/usr/bin", 0o755), None),
            (file("/usr/bin/su", 4, 0o4755), Some(b"\x7fELF".to_vec())),
        ]
    }

    fn build(entries: &[(Entry, Option<Vec<u8>>)]) -> (Vec<u8>, LayerDigests) {
        let mut w = LayerWriter::new(Vec::new());
        for (entry, data) in entries {
            match data {
                Some(bytes) => w.append(entry, Some(&mut Cursor::new(bytes.as_slice()))).expect("append"),
                None => w.append(entry, None).expect("append"),
            }
        }
        w.finish().expect("finish")
    }

    /// Chunks kept in memory, as the store keeps them.
    #[derive(Default)]
    struct MemCache(Mutex<std::collections::HashMap<ChunkKey, Kept>>);

    impl ChunkCache for MemCache {
        fn get(&self, key: &ChunkKey) -> Option<Kept> {
            self.0.lock().expect("cache").get(key).cloned()
        }
    }

    impl MemCache {
        fn keep(&self, blob: &[u8], chunks: &[ChunkRecord]) {
            for c in chunks {
                let bytes = blob[c.offset as usize..(c.offset + c.len) as usize].to_vec();
                assert_eq!(*blake3::hash(&bytes).as_bytes(), c.check);
                assert!(c.memo.is_some());
                let kept = Kept { bytes, memo: c.memo };
                if let Some(alias) = c.alias {
                    self.0.lock().expect("cache").insert(alias, kept.clone());
                }
                self.0.lock().expect("cache").insert(c.key, kept);
            }
        }
    }

    /// Files on disk, appended as [`KnownFile`]s.
    fn known_build(
        codec: Compression,
        cache: &Arc<MemCache>,
        dir: &std::path::Path,
        files: &[(String, [u8; 32], String, u64)],
    ) -> (Vec<u8>, LayerDigests, Vec<ChunkRecord>) {
        let cache: Arc<dyn ChunkCache> = cache.clone();
        let mut w = LayerWriter::with(Vec::new(), codec, Some(cache));
        w.identify_with(test_identity);
        w.append(&dir_entry("/srv"), None).expect("append");
        for (name, hash, identity, size) in files {
            let file = KnownFile { path: dir.join(name), hash: *hash, identity: identity.clone() };
            w.append_known(&file_entry(&format!("/srv/{name}"), *size), file).expect("append");
        }
        w.finish_with_chunks().expect("finish")
    }

    fn test_identity(m: &std::fs::Metadata) -> String {
        use std::os::unix::fs::MetadataExt;
        format!("{}-{}-{}-{}.{}-{}.{}", m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
    }

    fn dir_entry(path: &str) -> Entry {
        Entry { path: path.into(), kind: EntryKind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: 0 }
    }

    fn file_entry(path: &str, size: u64) -> Entry {
        Entry { path: path.into(), kind: EntryKind::File { size }, mode: 0o644, uid: 0, gid: 0, mtime: 0 }
    }

    fn put(dir: &std::path::Path, name: &str, data: &[u8]) -> (String, [u8; 32], String, u64) {
        let p = dir.join(name);
        std::fs::write(&p, data).expect("write");
        let identity = test_identity(&std::fs::metadata(&p).expect("stat"));
        (name.to_owned(), *blake3::hash(data).as_bytes(), identity, data.len() as u64)
    }

    /// The chunks before a change are found by their entries' planned hashes and never read: the
    /// files they hold may even be gone. The layer is the one a cold build writes.
    #[test]
    fn kept_chunks_before_a_change_are_not_read() {
        for codec in CODECS {
            let tmp = tempfile::tempdir().expect("tempdir");
            let mut files: Vec<_> =
                (0..160).map(|i| put(tmp.path(), &format!("f{i:03}"), &sample(8_000 + (i * 997) % 60_000, i as u64))).collect();
            files.insert(80, put(tmp.path(), "f079big", &sample(3 * CHUNK_SIZE + 99, 7)));
            let cache = Arc::new(MemCache::default());
            let (blob, _, chunks) = known_build(codec, &cache, tmp.path(), &files);
            assert!(chunks.iter().filter(|c| c.alias.is_some()).count() >= 8);
            cache.keep(&blob, &chunks);
            // File 120 changes; a cold build of that is the reference.
            files[121] = put(tmp.path(), "f120", &sample(20_000, 999));
            let (cold, cold_d, _) = known_build(codec, &Arc::new(MemCache::default()), tmp.path(), &files);
            // The first 60 files go: they are in kept chunks.
            for (name, ..) in &files[..60] {
                std::fs::remove_file(tmp.path().join(name)).expect("rm");
            }
            let (warm, warm_d, warm_chunks) = known_build(codec, &cache, tmp.path(), &files);
            assert!(warm == cold && warm_d == cold_d, "{codec:?}");
            assert!(warm_chunks.len() < chunks.len(), "{codec:?}: the kept prefix has no records");
            // A file before the change that changed under its planned hash is caught when read.
            files[150] = (files[150].0.clone(), [9; 32], files[150].2.clone(), files[150].3);
            let mut w = LayerWriter::with(Vec::new(), codec, None);
            w.append(&dir_entry("/srv"), None).expect("append");
            let mut err = None;
            for (name, hash, identity, size) in &files[60..] {
                let file = KnownFile { path: tmp.path().join(name), hash: *hash, identity: identity.clone() + "x" };
                if let Err(e) = w.append_known(&file_entry(&format!("/srv/{name}"), *size), file) {
                    err = Some(e);
                    break;
                }
            }
            let err = err.map_or_else(|| w.finish().err(), Some);
            assert!(matches!(err, Some(LayerError::Changed { .. })), "{err:?}");
        }
    }

    #[test]
    fn open_sha256_state_gives_sha256() {
        let data = sample(3 * 4096 + 77, 5);
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000, data.len()] {
            let want: [u8; 32] = Sha256::digest(&data[..len]).into();
            for split in [1, 3, 64, 100, 4096] {
                let mut s = ShaState::default();
                for piece in data[..len].chunks(split) {
                    s.update(piece);
                }
                assert_eq!(ShaState::decode(&s.encode()), Some(s));
                assert_eq!(s.finalize(), want, "len {len}, pieces of {split}");
            }
        }
        assert_eq!(ShaState::decode("00:1:"), None);
        assert_eq!(ShaState::decode(&format!("{}:3:aa", "0".repeat(64))), None);
    }

    /// A tree of many files around one big file; `edit` grows one small file by 1000 bytes.
    fn many_files(edit: Option<usize>) -> Vec<(Entry, Option<Vec<u8>>)> {
        let mut entries = vec![(dir("/srv", 0o755), None)];
        for i in 0..400 {
            let mut data = sample(8_000 + (i * 997) % 50_000, i as u64);
            if edit == Some(i) {
                data.extend_from_slice(&sample(1000, 99));
            }
            if i == 200 {
                data = sample(3 * CHUNK_SIZE + 5000, 1234);
            }
            entries.push((file(&format!("/srv/f{i:04}"), data.len() as u64, 0o644), Some(data)));
        }
        entries
    }

    fn build_with(
        codec: Compression,
        cache: &Arc<MemCache>,
        entries: &[(Entry, Option<Vec<u8>>)],
    ) -> (Vec<u8>, LayerDigests, Vec<ChunkRecord>) {
        let cache: Arc<dyn ChunkCache> = cache.clone();
        let mut w = LayerWriter::with(Vec::new(), codec, Some(cache));
        for (entry, data) in entries {
            match data {
                Some(bytes) => w.append(entry, Some(&mut Cursor::new(bytes.as_slice()))).expect("append"),
                None => w.append(entry, None).expect("append"),
            }
        }
        w.finish_with_chunks().expect("finish")
    }

    #[test]
    fn one_changed_file_recompresses_only_its_chunks_and_reuse_changes_no_byte() {
        for codec in CODECS {
            let cache = Arc::new(MemCache::default());
            let before = many_files(None);
            let (blob, d, chunks) = build_with(codec, &cache, &before);
            assert!(chunks.iter().all(|c| !c.reused));
            assert!(chunks.len() >= 16, "{} chunks", chunks.len());
            assert_eq!(sha(&decompress(codec, &blob)), d.diff_id);
            cache.keep(&blob, &chunks);
            // The same layer again: every chunk reused, and neither digest hashes anything (the
            // kept memos carry both chains over every chunk), the same bytes and digests.
            let (again, d2, chunks2) = build_with(codec, &cache, &before);
            assert!(again == blob && d2 == d);
            assert!(chunks2.iter().all(|c| c.reused && c.memo_held));
            // One file grows (before the big file, so everything after it shifts): only the
            // chunks around it are compressed; the bytes are those of a cold build.
            for edit in [3, 150, 399] {
                let after = many_files(Some(edit));
                let (blob3, d3, chunks3) = build_with(codec, &cache, &after);
                let cold = Arc::new(MemCache::default());
                let (cold_blob, cold_d, _) = build_with(codec, &cold, &after);
                assert!(blob3 == cold_blob && d3 == cold_d, "{codec:?}: reuse changed the bytes");
                let fresh = chunks3.iter().filter(|c| !c.reused).count();
                assert!(fresh <= 3, "{codec:?}, file {edit}: {fresh} of {} chunks compressed again", chunks3.len());
                // The chunks before the change are not hashed again; the ones after are.
                let held = chunks3.iter().take_while(|c| c.memo_held).count();
                let first_fresh = chunks3.iter().position(|c| !c.reused).unwrap_or(chunks3.len());
                assert_eq!(held, first_fresh, "{codec:?}, file {edit}");
                assert!(chunks3[first_fresh..].iter().all(|c| !c.memo_held));
            }
            // Without a cache: the same bytes, no records.
            let plain = {
                let mut w = LayerWriter::with(Vec::new(), codec, None);
                for (entry, data) in &before {
                    match data {
                        Some(bytes) => w.append(entry, Some(&mut Cursor::new(bytes.as_slice()))).expect("append"),
                        None => w.append(entry, None).expect("append"),
                    }
                }
                w.finish_with_chunks().expect("finish")
            };
            assert!(plain.0 == blob && plain.2.is_empty());
        }
    }

    fn pax_value(entry: &mut tar::Entry<'_, &[u8]>, key: &str) -> Option<String> {
        let exts = entry.pax_extensions().expect("pax")?;
        for ext in exts {
            let ext = ext.expect("pax record");
            if ext.key().ok() == Some(key) {
                return Some(ext.value().expect("utf8").to_owned());
            }
        }
        None
    }

    #[test]
    fn layer_round_trips_every_header_field() {
        let entries = rich_layer();
        let (blob, digests) = build(&entries);
        let tar_bytes = gunzip(&blob);
        assert_eq!(digests.diff_id, sha(&tar_bytes));
        assert_eq!(digests.digest, sha(&blob));
        assert_eq!(digests.size, blob.len() as u64);
        assert_eq!(digests.uncompressed_size, tar_bytes.len() as u64);
        assert_eq!(tar_bytes.len() % BLOCK, 0);
        assert!(tar_bytes[tar_bytes.len() - 2 * BLOCK..].iter().all(|&b| b == 0));
        assert_eq!(digests.diff_id_string(), format!("sha256:{}", hex::encode(digests.diff_id)));

        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut seen = 0;
        for (got, (want, data)) in archive.entries().expect("entries").zip(&entries) {
            let mut got = got.expect("entry");
            seen += 1;
            let is_dir = want.kind == EntryKind::Dir;
            let mut name = want.path.as_bytes()[1..].to_vec();
            if is_dir {
                name.push(b'/');
            }
            assert_eq!(&*got.path_bytes(), &name[..], "{}", want.path);
            let h = got.header().clone();
            let ustar = h.as_ustar().expect("ustar header");
            assert_eq!(&ustar.magic, b"ustar\0");
            assert_eq!(&ustar.version, b"00");
            assert!(ustar.prefix.iter().all(|&b| b == 0));
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.groupname_bytes(), Some(&b""[..]));
            assert_eq!(h.device_major().expect("major"), Some(0));
            assert_eq!(h.device_minor().expect("minor"), Some(0));
            assert_eq!(h.uid().expect("uid"), u64::from(want.uid));
            assert_eq!(h.gid().expect("gid"), u64::from(want.gid));
            if want.mtime > MAX_OCTAL_12 {
                assert_eq!(h.mtime().expect("mtime"), 0);
                assert_eq!(pax_value(&mut got, "mtime"), Some(want.mtime.to_string()));
            } else {
                assert_eq!(h.mtime().expect("mtime"), want.mtime);
            }
            let expected_mode = match want.kind {
                EntryKind::Symlink { .. } => 0o777,
                _ => want.mode,
            };
            assert_eq!(h.mode().expect("mode"), expected_mode, "{}", want.path);
            match &want.kind {
                EntryKind::Dir => {
                    assert_eq!(h.entry_type(), tar::EntryType::Directory);
                    assert_eq!(h.size().expect("size"), 0);
                }
                EntryKind::File { size } => {
                    assert_eq!(h.entry_type(), tar::EntryType::Regular);
                    assert_eq!(got.size(), *size);
                    let mut body = Vec::new();
                    got.read_to_end(&mut body).expect("body");
                    assert_eq!(Some(&body), data.as_ref(), "{}", want.path);
                }
                EntryKind::Symlink { target } => {
                    assert_eq!(h.entry_type(), tar::EntryType::Symlink);
                    assert_eq!(h.size().expect("size"), 0);
                    assert_eq!(got.link_name_bytes().as_deref(), Some(target.as_bytes()));
                }
                EntryKind::Hardlink { target } => {
                    assert_eq!(h.entry_type(), tar::EntryType::Link);
                    assert_eq!(h.size().expect("size"), 0);
                    assert_eq!(got.link_name_bytes().as_deref(), Some(&target.as_bytes()[1..]));
                }
            }
        }
        assert_eq!(seen, entries.len());
    }

    #[test]
    fn pax_headers_only_when_needed() {
        let raw_types = |entries: &[(Entry, Option<Vec<u8>>)]| {
            let (blob, _) = build(entries);
            let tar_bytes = gunzip(&blob);
            let mut archive = tar::Archive::new(Cursor::new(tar_bytes));
            archive.entries().expect("entries").raw(true).map(|e| e.expect("entry").header().entry_type().as_byte()).collect::<Vec<u8>>()
        };
        let ascii_100 = format!("/{}", "a".repeat(100));
        assert_eq!(raw_types(&[(file(&ascii_100, 0, 0o644), Some(Vec::new()))]), vec![b'0']);
        let ascii_101 = format!("/{}", "a".repeat(101));
        assert_eq!(raw_types(&[(file(&ascii_101, 0, 0o644), Some(Vec::new()))]), vec![b'x', b'0']);
        assert_eq!(raw_types(&[(file("/é", 0, 0o644), Some(Vec::new()))]), vec![b'x', b'0']);
        // 99 name bytes + trailing slash = 100: still plain ustar.
        assert_eq!(raw_types(&[(dir(&format!("/{}", "d".repeat(99)), 0o755), None)]), vec![b'5']);
        assert_eq!(raw_types(&[(dir(&format!("/{}", "d".repeat(100)), 0o755), None)]), vec![b'x', b'5']);
    }

    #[test]
    fn pax_record_lengths() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", b"a");
        assert_eq!(out, b"9 path=a\n");
        out.clear();
        // 3 + 4 + 92 = 99 without the length digits; 2 digits would make
        // 101, which needs 3 digits: 102.
        pax_record(&mut out, "path", &[b'x'; 92]);
        assert!(out.starts_with(b"102 path="));
        assert_eq!(out.len(), 102);
    }

    #[test]
    fn ustar_header_bytes() {
        let block =
            ustar_block(&Ustar { name: b"etc/", mode: 0o4755, uid: 1, gid: 2, size: 0, mtime: 0o777, typeflag: TYPE_DIR, linkname: b"" });
        assert_eq!(&block[100..108], b"0004755\0");
        assert_eq!(&block[108..116], b"0000001\0");
        assert_eq!(&block[124..136], b"00000000000\0");
        assert_eq!(&block[136..148], b"00000000777\0");
        assert_eq!(&block[329..337], b"0000000\0");
        assert_eq!(&block[337..345], b"0000000\0");
        assert_eq!(block[155], b' ');
        assert_eq!(block[154], 0);
        let header = tar::Header::from_byte_slice(&block);
        let mut check = block;
        check[148..156].fill(b' ');
        let sum: u32 = check.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(header.cksum().expect("cksum"), sum);
    }

    #[test]
    fn layer_is_independent_of_threads() {
        let entries = rich_layer();
        let (expected, digests) = build(&entries);
        for threads in [1, 2, 7] {
            let (blob, d) = pool(threads).install(|| build(&entries));
            assert_eq!(d, digests, "{threads} threads");
            assert!(blob == expected, "{threads} threads");
        }
        // Data delivered in tiny reads gives the same bytes.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(3);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut w = LayerWriter::new(Vec::new());
        for (entry, data) in &entries {
            match data {
                Some(bytes) => w.append(entry, Some(&mut Dribble(bytes))).expect("append"),
                None => w.append(entry, None).expect("append"),
            }
        }
        let (blob, d) = w.finish().expect("finish");
        assert_eq!(d, digests);
        assert!(blob == expected);
    }

    #[test]
    fn layers_built_concurrently_on_one_pool() {
        // Several writers sharing a small pool (as when a build writes layers
        // from inside rayon tasks) must neither deadlock nor change bytes.
        let entries = rich_layer();
        let (expected, digests) = build(&entries);
        for threads in [1, 2, 3] {
            let results: Vec<(Vec<u8>, LayerDigests)> = pool(threads).install(|| (0..4).into_par_iter().map(|_| build(&entries)).collect());
            for (blob, d) in results {
                assert_eq!(d, digests, "{threads} threads");
                assert!(blob == expected, "{threads} threads");
            }
        }
    }

    #[test]
    fn layer_golden() {
        let entries = vec![
            (dir("/etc", 0o755), None),
            (file("/etc/hostname", 5, 0o644), Some(b"box\n\n".to_vec())),
            (symlink("/etc/localtime", "/usr/share/zoneinfo/UTC"), None),
            (dir("/usr", 0o755), None),
            (dir("/usr/bin", 0o755), None),
            (file("/usr/bin/su", 3, 0o4755), Some(b"su\n".to_vec())),
            (hardlink("/usr/bin/su2", "/usr/bin/su"), None),
        ];
        let (blob, d) = build(&entries);
        assert_eq!(hex::encode(sha(&blob)), hex::encode(d.digest));
        assert_eq!(d.diff_id_string(), "sha256:ddd4a7e225c4e2c7f210c45ec7353a9f0a15dabbaceaf5d928e39b346908780d");
        assert_eq!(d.digest_string(), "sha256:9e10c130d7a0beecf6ae09f56e7b308b9352e48d9c06ba941ae0ebf640077983");
        assert_eq!((d.size, d.uncompressed_size), (276, 5632));
        assert_eq!(TAR_FORMAT_ID, "tar/ustar+pax/v1");
        assert_eq!(LAYER_FORMAT_ID, format!("{TAR_FORMAT_ID} {CHUNKING_ID} {COMPRESSOR_ID}"));
        assert_eq!(ZSTD_LAYER_FORMAT_ID, format!("{TAR_FORMAT_ID} {CHUNKING_ID} {ZSTD_COMPRESSOR_ID}"));
    }

    #[test]
    fn layer_into_a_file() {
        let entries = rich_layer();
        let (expected, digests) = build(&entries);
        let mut w = LayerWriter::new(tempfile::tempfile().expect("tempfile"));
        for (entry, data) in &entries {
            match data {
                Some(bytes) => w.append(entry, Some(&mut Cursor::new(bytes.as_slice()))).expect("append"),
                None => w.append(entry, None).expect("append"),
            }
        }
        let (mut f, d) = w.finish().expect("finish");
        assert_eq!(d, digests);
        let mut back = Vec::new();
        io::Seek::rewind(&mut f).expect("rewind");
        f.read_to_end(&mut back).expect("read back");
        assert!(back == expected);
    }

    #[test]
    fn empty_layer() {
        let (blob, d) = LayerWriter::new(Vec::new()).finish().expect("finish");
        let tar_bytes = gunzip(&blob);
        assert_eq!(tar_bytes, vec![0u8; 1024]);
        assert_eq!(d.uncompressed_size, 1024);
    }

    fn append_err(w: &mut LayerWriter<Vec<u8>>, entry: &Entry, data: Option<&[u8]>) -> LayerError {
        match data {
            Some(bytes) => w.append(entry, Some(&mut Cursor::new(bytes))),
            None => w.append(entry, None),
        }
        .expect_err("must be rejected")
    }

    #[test]
    fn rejects_order_violations_and_bad_entries() {
        let mut w = LayerWriter::new(Vec::new());
        w.append(&dir("/a", 0o755), None).expect("a");
        w.append(&dir("/a/c", 0o755), None).expect("a/c");

        let e = append_err(&mut w, &dir("/a/b", 0o755), None);
        assert!(matches!(e, LayerError::OutOfOrder { .. }));
        assert_eq!(e.to_string(), "entry `/a/b` is out of order: it must come after `/a/c`");

        let e = append_err(&mut w, &dir("/a/c", 0o755), None);
        assert!(matches!(e, LayerError::Duplicate { .. }), "{e}");

        let e = append_err(&mut w, &file("/a/d/x", 0, 0o644), Some(b""));
        assert!(matches!(e, LayerError::MissingParent { ref parent, .. } if parent == "/a/d"), "{e}");

        w.append(&file("/a/f", 0, 0o644), Some(&mut Cursor::new(&b""[..]))).expect("a/f");
        let e = append_err(&mut w, &file("/a/f/x", 0, 0o644), Some(b""));
        assert!(matches!(e, LayerError::ParentNotDir { .. }), "{e}");

        for bad in ["a/g", "/", "/a/g/", "/a//g", "/a/./g", "/a/../g", "/a/g\0"] {
            let e = append_err(&mut w, &dir(bad, 0o755), None);
            assert!(matches!(e, LayerError::InvalidPath { .. }), "{bad:?}: {e}");
        }

        let e = append_err(&mut w, &file("/a/g", 0, 0o100644), Some(b""));
        assert!(matches!(e, LayerError::InvalidMode { .. }), "{e}");

        let e = append_err(&mut w, &file("/a/g", 0, 0o644), None);
        assert!(matches!(e, LayerError::DataMismatch { .. }), "{e}");
        let e = append_err(&mut w, &dir("/a/g", 0o755), Some(b""));
        assert!(matches!(e, LayerError::DataMismatch { .. }), "{e}");

        let e = append_err(&mut w, &hardlink("/a/h", "/a/nope"), None);
        assert!(matches!(e, LayerError::InvalidLinkTarget { .. }), "{e}");
        let e = append_err(&mut w, &hardlink("/a/h", "/a/c"), None);
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = append_err(&mut w, &hardlink("/a/h", "a/f"), None);
        assert!(matches!(e, LayerError::InvalidLinkTarget { .. }), "{e}");
        let e = append_err(&mut w, &symlink("/a/s", ""), None);
        assert!(matches!(e, LayerError::InvalidLinkTarget { .. }), "{e}");

        // Validation errors leave the writer usable and the output intact.
        w.append(&hardlink("/a/h", "/a/f"), None).expect("hardlink");
        let (blob, _) = w.finish().expect("finish");
        let tar_bytes = gunzip(&blob);
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let names: Vec<String> =
            archive.entries().expect("entries").map(|e| e.expect("entry").path().expect("path").display().to_string()).collect();
        assert_eq!(names, ["a/", "a/c/", "a/f", "a/h"]);
    }

    #[test]
    fn rejects_wrong_data_length_and_poisons() {
        let mut w = LayerWriter::new(Vec::new());
        let e = append_err(&mut w, &file("/short", 10, 0o644), Some(b"12345"));
        assert!(matches!(e, LayerError::DataLength { expected: 10, actual: Some(5), .. }), "{e}");
        assert_eq!(e.to_string(), "file `/short`: declared 10 bytes but its data ended after 5");
        assert!(matches!(append_err(&mut w, &dir("/z", 0o755), None), LayerError::Poisoned));
        assert!(matches!(w.finish(), Err(LayerError::Poisoned)));

        let mut w = LayerWriter::new(Vec::new());
        let e = append_err(&mut w, &file("/long", 3, 0o644), Some(b"12345"));
        assert!(matches!(e, LayerError::DataLength { expected: 3, actual: None, .. }), "{e}");
        assert_eq!(e.to_string(), "file `/long`: declared 3 bytes but its data is longer");
        assert!(matches!(w.finish(), Err(LayerError::Poisoned)));

        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("EIO"))
            }
        }
        let mut w = LayerWriter::new(Vec::new());
        let e = w.append(&file("/f", 3, 0o644), Some(&mut Broken)).expect_err("read error");
        assert!(matches!(e, LayerError::Read { .. }));
        assert!(e.to_string().contains("EIO"), "{e}");
    }

    #[test]
    fn write_errors_have_context() {
        let mut w = LayerWriter::new(FailingSink { budget: 0 });
        let data = sample(3 * CHUNK_SIZE, 1);
        let result =
            w.append(&file("/big", data.len() as u64, 0o644), Some(&mut Cursor::new(&data[..]))).and_then(|()| w.finish().map(|_| ()));
        let e = result.expect_err("sink fails");
        assert!(e.to_string().contains("disk full"), "{e}");
    }
}
