//! Writing a layer from planned entries into the store: files read (with read-ahead) and checked
//! against their planned content, chunks the store keeps reused.

use std::fs::File;
use std::io::Write;

use crate::hash::{CheckedReader, Sha256};
use crate::layer::{self, Compression, LayerWriter};
use crate::plan::{Content, EntryKind, PlannedEntry};
use crate::store::{self, Output, Store};

use super::*;

/// Writes `entries` as a layer compressed with `codec` into the store, reusing the chunks the
/// store keeps and keeping the new ones.
pub(crate) fn build_layer(
    name: &str,
    entries: &[PlannedEntry],
    epoch: u64,
    codec: Compression,
    store: &Store,
) -> Result<Output, BuildError> {
    let tmp = store.temp_file()?;
    let sink = store::buffered(&tmp)?;
    let mut w = LayerWriter::with(sink, codec, Some(store.chunk_cache()));
    w.identify_with(crate::util::file_identity);
    let layer_err = |source| BuildError::Layer { name: name.to_string(), source };
    // The kernel reads files ahead of the writer (see `read_ahead`).
    let written = std::sync::atomic::AtomicU64::new(0);
    let finished = std::sync::atomic::AtomicBool::new(false);
    let file_bytes: u64 = entries.iter().map(|e| if let EntryKind::File { size, .. } = e.kind { size } else { 0 }).sum();
    std::thread::scope(|scope| {
        if file_bytes >= READ_AHEAD_FROM {
            scope.spawn(|| read_ahead(entries, &written, &finished));
        }
        let result = write_entries(&mut w, entries, epoch, &written, layer_err);
        finished.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })?;
    let (mut sink, digests, chunks) = w.finish_with_chunks().map_err(layer_err)?;
    sink.flush().map_err(|source| BuildError::Write { name: name.to_string(), source })?;
    drop(sink);
    let digest = Sha256(digests.digest);
    store.commit_blob(tmp, &digest)?;
    store.keep_chunks(&digest, &chunks);
    Ok(Output { digest, size: digests.size, media_type: codec.media_type().into(), diff_id: Some(Sha256(digests.diff_id)) })
}

/// Layers with fewer bytes of files than this are read without a helper asking for read-ahead.
const READ_AHEAD_FROM: u64 = 8 << 20;

/// How far ahead of the writer files are asked for.
const READ_AHEAD: u64 = 64 << 20;

/// Asks the kernel to read the layer's files (in the writer's order) into the page cache up to
/// [`READ_AHEAD`] bytes ahead of the writer, so that a layer of files not in the page cache
/// reads from the disk while the writer hashes and compresses, not before. Only hints: errors
/// are the writer's to find.
fn read_ahead(entries: &[PlannedEntry], written: &std::sync::atomic::AtomicU64, finished: &std::sync::atomic::AtomicBool) {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering::Relaxed;
    let mut asked: u64 = 0;
    for e in entries {
        let EntryKind::File { size, content: Content::Local { abs, .. } | Content::Tree { abs } } = &e.kind else { continue };
        while asked > written.load(Relaxed) + READ_AHEAD {
            if finished.load(Relaxed) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if finished.load(Relaxed) {
            return;
        }
        if let Ok(f) = File::open(abs) {
            // SAFETY: posix_fadvise only reads its arguments; `f` is an open descriptor.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
        }
        asked += size;
    }
}

/// Appends `entries` to `w`, counting the file bytes written in `written`.
fn write_entries<W: Write>(
    w: &mut LayerWriter<W>,
    entries: &[PlannedEntry],
    epoch: u64,
    written: &std::sync::atomic::AtomicU64,
    layer_err: impl Fn(layer::LayerError) -> BuildError + Copy,
) -> Result<(), BuildError> {
    for e in entries {
        if let EntryKind::File { size, .. } = e.kind {
            written.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        }
        let (kind, data): (layer::EntryKind, Option<&Content>) = match &e.kind {
            EntryKind::Dir => (layer::EntryKind::Dir, None),
            EntryKind::Symlink { target } => (layer::EntryKind::Symlink { target: target.clone() }, None),
            EntryKind::File { size, content } => (layer::EntryKind::File { size: *size }, Some(content)),
        };
        let entry = layer::Entry { path: e.path.clone(), kind, mode: e.mode, uid: e.uid, gid: e.gid, mtime: epoch };
        match data {
            None => w.append(&entry, None).map_err(layer_err)?,
            Some(Content::Inline(bytes)) => {
                let mut r: &[u8] = bytes;
                w.append(&entry, Some(&mut r)).map_err(layer_err)?
            }
            Some(Content::Tree { abs }) => {
                let f = File::open(abs).map_err(|source| BuildError::Read { path: abs.clone(), source })?;
                let mut r = f;
                w.append(&entry, Some(&mut r)).map_err(|source| match source {
                    layer::LayerError::DataLength { .. } => BuildError::Changed { path: abs.clone() },
                    other => layer_err(other),
                })?;
            }
            Some(Content::Local { abs, hash, settled }) => {
                if let Some(identity) = settled {
                    // Unchanged since it was hashed: read only if its chunk is not kept.
                    let file = layer::KnownFile { path: abs.clone(), hash: hash.0, identity: identity.clone() };
                    w.append_known(&entry, file).map_err(|source| match source {
                        layer::LayerError::Changed { path } => BuildError::Changed { path },
                        other => layer_err(other),
                    })?;
                    continue;
                }
                let f = File::open(abs).map_err(|source| BuildError::Read { path: abs.clone(), source })?;
                let mut r = CheckedReader::new(f);
                w.append(&entry, Some(&mut r)).map_err(|source| match source {
                    layer::LayerError::DataLength { .. } => BuildError::Changed { path: abs.clone() },
                    other => layer_err(other),
                })?;
                // The file must be at its end and have the planned content.
                if !r.ended_with(hash).map_err(|source| BuildError::Read { path: abs.clone(), source })? {
                    return Err(BuildError::Changed { path: abs.clone() });
                }
            }
        }
    }
    Ok(())
}
