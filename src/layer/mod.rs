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
//!
//! # Files
//!
//! `writer.rs`: [`LayerWriter`], its entries and errors; `known.rs`: [`KnownFile`]s and the start
//! of a stream written from kept chunks; `tar.rs`: the tar header bytes; `paths.rs`: image-path
//! rules (normal form, parents, merged `/usr`); `chunk.rs`: where chunks are cut, their keys and
//! their reuse; `compressor.rs`: [`ChunkedCompressor`], compressing chunks in parallel;
//! `codec.rs`: the gzip and zstd codecs, reading layers back and checking their diff_id.

mod chunk;
mod codec;
mod compressor;
mod known;
mod paths;
mod tar;
mod writer;

#[cfg(test)]
mod tests;

pub use crate::hash::ShaState;
pub use chunk::{chunk_key, cut_after, ChunkCache, ChunkKey, ChunkMemo, ChunkRecord, Kept, CHUNKING_ID, CHUNK_MIN, CHUNK_SIZE};
pub use codec::{
    decoder, Compression, DiffIdWriter, COMPRESSOR_ID, GZIP_HEADER, GZIP_LEVEL, GZIP_MEDIA_TYPE, ZSTD_COMPRESSOR_ID, ZSTD_LEVEL,
    ZSTD_MEDIA_TYPE,
};
pub use compressor::{compress_bytes, ChunkedCompressor, StreamStats};
pub use known::KnownFile;
pub use paths::{merged_usr_path, parent_of, MERGED_USR_DIRS};
pub use tar::TAR_FORMAT_ID;
pub use writer::{Entry, EntryKind, LayerDigests, LayerError, LayerWriter};

/// Identity of the exact gzip layer bytes (tar format, chunking and compressor) that
/// [`LayerWriter`] produces for a given list of entries: the value to put in derivation hashes.
pub const LAYER_FORMAT_ID: &str =
    "tar/ustar+pax/v1 chunks/entry-cuts-512KiB-1MiB-half/v2 gzip/libdeflate-1.26.1/level6/member-per-chunk/v3";

/// [`LAYER_FORMAT_ID`] for zstd layers.
pub const ZSTD_LAYER_FORMAT_ID: &str =
    "tar/ustar+pax/v1 chunks/entry-cuts-512KiB-1MiB-half/v2 zstd/libzstd-1.5.7/level3/frame-per-chunk/v1";
