//! Chunks of the tar stream (see "Chunks" and "Chunk reuse" in the module documentation): where
//! they are cut ([`cut_after`], [`CHUNK_MIN`], [`CHUNK_SIZE`]), their keys (by bytes,
//! [`chunk_key`]; by content, the alias), the [`ChunkCache`] of kept chunks and what is recorded
//! of each chunk ([`ChunkRecord`], [`ChunkMemo`]), and one chunk's fate: taken from the cache or
//! compressed.

use super::codec::compress_chunk;
use super::{Compression, KnownFile};
use crate::hash::ShaState;

/// Identity of where the tar stream is cut into chunks ([`CHUNK_MIN`], [`CHUNK_SIZE`],
/// [`cut_after`]).
pub const CHUNKING_ID: &str = "chunks/entry-cuts-512KiB-1MiB-half/v2";

/// Most uncompressed bytes in one chunk.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Fewest uncompressed bytes in a chunk ended after a picked entry.
pub const CHUNK_MIN: usize = 512 << 10;

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

/// A new key by content ([`ChunkRecord::alias`]) for a chunk under `codec`.
pub(super) fn alias_hasher(codec: Compression) -> blake3::Hasher {
    let mut h = blake3::Hasher::new_derive_key("compose 2026-12 layer chunk by content v1");
    h.update(codec.compressor_id().as_bytes()).update(&[0]);
    h
}

/// Adds an entry to a key by content: its headers, and its data's planned hash and size.
pub(super) fn alias_entry(h: &mut blake3::Hasher, headers: &[u8], file: Option<&KnownFile>, size: u64) {
    h.update(&(headers.len() as u64).to_le_bytes()).update(headers);
    match file {
        Some(f) => h.update(&[1]).update(&f.hash).update(&size.to_le_bytes()),
        None => h.update(&[0]),
    };
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
    /// have none): its key by content ([`LayerWriter`](super::LayerWriter) computes it from the headers and the files'
    /// planned hashes, without reading them), under which it can be found before any is read.
    pub alias: Option<ChunkKey>,
}

/// What becomes of one chunk: its compressed bytes, and with a cache its record's key, check and
/// whether it was reused. An empty last chunk after full ones is nothing (it would add nothing);
/// an empty only chunk is one empty member or frame.
pub(super) fn run_chunk(
    codec: Compression,
    cache: Option<&dyn ChunkCache>,
    input: &[u8],
    last: bool,
    only: bool,
) -> Result<Chunked, String> {
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
pub(super) struct Chunked {
    pub(super) bytes: Vec<u8>,
    pub(super) keyed: Option<(ChunkKey, [u8; 32], bool)>,
    pub(super) memo: Option<Box<ChunkMemo>>,
}
