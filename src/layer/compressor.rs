//! [`ChunkedCompressor`]: the tar stream cut into chunks, each compressed on its own on the rayon
//! pool (or taken from the [`ChunkCache`]) and written in order, with both digests hashed on the
//! way (see "Compression" and "Chunk reuse" in the module documentation); and [`compress_bytes`]
//! for a blob already in memory.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rayon::prelude::*;

use super::chunk::{run_chunk, Chunked};
use super::{ChunkCache, ChunkKey, ChunkMemo, ChunkRecord, Compression, CHUNK_SIZE};
use crate::hash::StreamHash;

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
    pub(super) codec: Compression,
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
    pub(super) next_alias: Option<ChunkKey>,
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
    pub(super) fn cache(&self) -> Option<&Arc<dyn ChunkCache>> {
        self.cache.as_ref()
    }

    /// Writes a kept chunk of `uncompressed` bytes that were never read: its compressed bytes,
    /// and both digests moved on by its memo (whose states before must be the stream's: the
    /// caller checked). Only at the very start of a stream, or after other kept chunks.
    pub(super) fn emit_kept(&mut self, bytes: Vec<u8>, memo: &ChunkMemo, uncompressed: u64) -> io::Result<()> {
        self.check()?;
        if !self.buf.is_empty() || !self.in_flight.is_empty() || !self.in_sha.is_at(&memo.tar.0) || !self.out_sha.is_at(&memo.blob.0) {
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
