//! The store's kept compressed layer chunks (`chunks/`): a pointer line per chunk key, naming the
//! range of a stored layer blob that holds the chunk, and handed out only when those bytes still
//! hash to what the line keeps.

use std::fs;

use super::Layout;
use crate::hash::Sha256;

/// Where a kept chunk's compressed bytes are: a range of a stored layer blob, and their blake3;
/// and where the layer's digests went over it (its memo), when the line's own sum checks out.
pub(super) struct ChunkPointer {
    pub(super) blob: Sha256,
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) check: [u8; 32],
    pub(super) memo: Option<crate::layer::ChunkMemo>,
}

/// Longest chunk pointer accepted: a chunk's compressed bytes are at most about its 1 MiB of
/// input (incompressible data grows by a few bytes per block).
pub(super) const MAX_CHUNK_BYTES: u64 = 2 << 20;

impl ChunkPointer {
    /// `BLOB OFFSET LEN CHECK [TAR-BEFORE TAR-AFTER BLOB-BEFORE BLOB-AFTER SUM]`, SUM being the
    /// first 16 bytes of blake3 over the key and the rest of the line: a memo is trusted only
    /// whole (a wrong one would give a layer a wrong digest).
    pub(super) fn parse(key: &str, text: &str) -> Option<ChunkPointer> {
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

    pub(super) fn line(key: &str, blob: &Sha256, c: &crate::layer::ChunkRecord) -> String {
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
pub(super) struct StoreChunks {
    pub(super) layout: Layout,
}

impl crate::layer::ChunkCache for StoreChunks {
    fn get(&self, key: &crate::layer::ChunkKey) -> Option<crate::layer::Kept> {
        use std::os::unix::fs::FileExt;
        let name = hex::encode(key);
        let text = fs::read_to_string(self.layout.chunks().join(&name)).ok()?;
        let p = ChunkPointer::parse(&name, &text)?;
        let f = super::open_nofollow(&self.layout.blobs().join(p.blob.hex())).ok()?;
        let mut bytes = vec![0u8; usize::try_from(p.len).ok()?];
        f.read_exact_at(&mut bytes, p.offset).ok()?;
        // The bytes are always checked: a blob's verified marker vouches for the blob it names
        // (its bytes are its digest's), not for the range a pointer line says the chunk is at.
        (*blake3::hash(&bytes).as_bytes() == p.check).then_some(crate::layer::Kept { bytes, memo: p.memo })
    }
}
