//! Files the writer reads only when it must ([`KnownFile`]), and the start of a stream while every
//! chunk so far was kept (see "Chunk reuse" in the module documentation): entries are gathered up
//! to the chunk's cut, and the chunk is written from the cache without reading them when it is
//! kept with the digests where the stream is; otherwise they are written out as usual.

use std::io::Write;

use super::chunk::{alias_entry, alias_hasher};
use super::writer::Data;
use super::{cut_after, tar, LayerError, LayerWriter, CHUNK_MIN, CHUNK_SIZE};
use crate::hash::{CheckedReader, ContentHash, ShaState};

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

/// An entry appended while the stream is still made of kept chunks: written only if the chunk
/// it is in turns out not to be kept.
pub(super) struct Deferred {
    path: String,
    headers: Vec<u8>,
    size: u64,
    file: Option<KnownFile>,
}

/// The start of a stream while every chunk so far was kept: the entries of the chunk being
/// gathered, its key by content so far, and where the digests are.
pub(super) struct Prefix {
    pending: Vec<Deferred>,
    len: u64,
    alias: blake3::Hasher,
    tar: ShaState,
    blob: ShaState,
}

impl Prefix {
    /// The start of a stream whose digests are at `tar` and `blob`, with nothing gathered yet.
    pub(super) fn at(codec: super::Compression, tar: ShaState, blob: ShaState) -> Prefix {
        Prefix { pending: Vec::new(), len: 0, alias: alias_hasher(codec), tar, blob }
    }
}

impl<W: Write> LayerWriter<W> {
    /// Gathers an entry while the stream is still made of kept chunks and the entry can be written
    /// later (no reader to consume now, and smaller than a chunk), trying the chunk at its cuts;
    /// otherwise writes what was gathered, then the entry.
    pub(super) fn write_or_gather(&mut self, path: &str, headers: Vec<u8>, size: u64, data: Data<'_>) -> Result<(), LayerError> {
        let total = tar::stream_len(&headers, size);
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
        Ok(())
    }

    /// Copies a known file's data, hashing it unless its identity is the planned one, and fails
    /// with [`LayerError::Changed`] when its content is not the planned one.
    pub(super) fn copy_known(&mut self, f: &KnownFile, size: u64, path: &str) -> Result<(), LayerError> {
        let read_err = |source| LayerError::Read { path: path.to_owned(), source };
        let file = std::fs::File::open(&f.path).map_err(read_err)?;
        let identify = self.identify;
        let identity = |file: &std::fs::File| file.metadata().ok().map(|m| identify(&m));
        let settled = !f.identity.is_empty() && identity(&file).as_ref() == Some(&f.identity);
        let mut r = if settled { CheckedReader::unhashed(file) } else { CheckedReader::new(file) };
        self.copy_data(&mut r, size, path).map_err(|e| match e {
            LayerError::DataLength { .. } => LayerError::Changed { path: f.path.clone() },
            other => other,
        })?;
        let same = r.has(&ContentHash(f.hash)).unwrap_or_else(|| identity(r.get_ref()).as_ref() == Some(&f.identity));
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
                self.prefix = Some(Prefix::at(self.codec, memo.tar.1, memo.blob.1));
                Ok(())
            }
            None => self.leave_prefix(),
        }
    }

    /// Writes the entries gathered so far: from here on, the stream is written as usual.
    pub(super) fn leave_prefix(&mut self) -> Result<(), LayerError> {
        let Some(p) = self.prefix.take() else { return Ok(()) };
        for d in p.pending {
            let data = d.file.map_or(Data::None, Data::Known);
            self.write_entry(&d.path, &d.headers, d.size, data)?;
        }
        Ok(())
    }
}
