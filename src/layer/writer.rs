//! [`LayerWriter`]: checks each [`Entry`] against the ordering and path rules, writes its tar
//! bytes into a [`ChunkedCompressor`] with the cuts around it, and gives the layer's digests.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::sync::Arc;

use super::known::Prefix;
use super::paths::check_image_path;
use super::tar::{self, BLOCK};
use super::{chunk, cut_after, parent_of, ChunkCache, ChunkRecord, ChunkedCompressor, Compression, KnownFile, CHUNK_MIN, CHUNK_SIZE};
use crate::hash::ShaState;

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

/// How a file's data missed its declared size, for [`LayerError::DataLength`].
fn describe_actual(actual: &Option<u64>) -> String {
    match actual {
        Some(n) => format!("ended after {n}"),
        None => "is longer".to_owned(),
    }
}

/// What an entry's data is, as the writer is given it.
pub(super) enum Data<'a> {
    None,
    Reader(&'a mut dyn Read),
    Known(KnownFile),
}

/// Size of the buffer a file's data is copied through.
const COPY_BUF: usize = 256 * 1024;

/// Streams a reproducible compressed tar layer into a sink.
///
/// See the module documentation for the exact format and ordering rules.
pub struct LayerWriter<W: Write> {
    pub(super) gz: ChunkedCompressor<W>,
    pub(super) codec: Compression,
    /// While every chunk so far was kept (with a cache only).
    pub(super) prefix: Option<Prefix>,
    /// The key by content of the chunk being written, while it is made of whole known entries.
    alias: Option<blake3::Hasher>,
    /// How a known file's identity is read.
    pub(super) identify: fn(&std::fs::Metadata) -> String,
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
        let prefix = gz.cache().is_some().then(|| Prefix::at(codec, ShaState::default(), ShaState::default()));
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

    /// Checks `entry` and its data, then writes it (or gathers it, while the stream is still made
    /// of kept chunks).
    fn append_data(&mut self, entry: &Entry, data: Data<'_>) -> Result<(), LayerError> {
        if self.poisoned {
            return Err(LayerError::Poisoned);
        }
        let path = entry.path.as_str();
        self.check_place(path)?;
        self.check_kind(entry)?;
        let is_file = matches!(entry.kind, EntryKind::File { .. });
        match (matches!(data, Data::None), is_file) {
            (true, true) => return Err(LayerError::DataMismatch { path: path.to_owned(), reason: "a file entry needs data" }),
            (false, false) => return Err(LayerError::DataMismatch { path: path.to_owned(), reason: "only file entries take data" }),
            _ => {}
        }

        // From here on, any failure leaves a partial entry behind.
        self.poisoned = true;
        let (headers, size) = tar::headers_of(entry);
        self.write_or_gather(path, headers, size, data)?;
        self.poisoned = false;

        let owned: Box<str> = path.into();
        self.last = Some(path.to_owned());
        if entry.kind == EntryKind::Dir {
            self.dirs.insert(owned);
        } else {
            self.non_dirs.insert(owned);
        }
        Ok(())
    }

    /// Checks that `path` is a normalized image path, comes after the previous entry and has its
    /// parent directory appended before it.
    fn check_place(&self, path: &str) -> Result<(), LayerError> {
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
        Ok(())
    }

    /// Checks the entry's mode bits and, for a link, its target: a symlink's is not empty and has
    /// no NUL, a hardlink's is an earlier non-directory entry.
    fn check_kind(&self, entry: &Entry) -> Result<(), LayerError> {
        let path = entry.path.as_str();
        if entry.mode & !0o7777 != 0 {
            return Err(LayerError::InvalidMode { path: path.to_owned(), mode: entry.mode });
        }
        let link_err = |target: &str, reason| LayerError::InvalidLinkTarget { path: path.to_owned(), target: target.to_owned(), reason };
        match &entry.kind {
            EntryKind::Dir | EntryKind::File { .. } => {}
            EntryKind::Symlink { target } => {
                if target.is_empty() {
                    return Err(link_err(target, "symlink target is empty"));
                }
                if target.contains('\0') {
                    return Err(link_err(target, "symlink target contains a NUL byte"));
                }
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
            }
        }
        Ok(())
    }

    /// Writes one entry into the stream, with the cuts around it (see "Chunks" in the module
    /// documentation), following the chunk's key by content.
    pub(super) fn write_entry(&mut self, path: &str, headers: &[u8], size: u64, data: Data<'_>) -> Result<(), LayerError> {
        let total = tar::stream_len(headers, size);
        // A big entry starts its own chunk; so does one the chunk has no room for.
        if total >= CHUNK_SIZE as u64 || self.gz.pending() as u64 + total > CHUNK_SIZE as u64 {
            self.cut(path)?;
        }
        if self.gz.pending() == 0 && self.gz.cache().is_some() {
            self.alias = Some(chunk::alias_hasher(self.codec));
        }
        let chunks = self.gz.chunks();
        match (&mut self.alias, &data) {
            (Some(h), Data::None) => chunk::alias_entry(h, headers, None, size),
            (Some(h), Data::Known(f)) => chunk::alias_entry(h, headers, Some(f), size),
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

    fn cut(&mut self, path: &str) -> Result<(), LayerError> {
        let alias = self.alias.take().map(|h| *h.finalize().as_bytes());
        self.gz.cut_with(alias).map_err(|source| LayerError::Write { context: format!("writing entry `{path}`"), source })
    }

    fn write_stream(&mut self, bytes: &[u8], path: &str) -> Result<(), LayerError> {
        self.gz.write_all(bytes).map_err(|source| LayerError::Write { context: format!("writing entry `{path}`"), source })
    }

    /// Copies exactly `size` bytes of file data, then the block padding.
    pub(super) fn copy_data(&mut self, reader: &mut dyn Read, size: u64, path: &str) -> Result<(), LayerError> {
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
