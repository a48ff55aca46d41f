//! Hashing what passes through: [`HashingWriter`] (sha256 and length of what is written: downloads
//! and copies checked as they stream into the store) and [`CheckedReader`] (blake3 of what is read:
//! a local file checked against its planned content while a layer reads it).

use std::io::{self, Read};

use sha2::Digest as _;

use super::{ContentHash, Sha256};

/// A writer that computes the sha256 and length of what passes through it (downloads and
/// copies verified as they stream into the store).
pub struct HashingWriter<W> {
    pub inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: io::Write> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter { inner, hasher: sha2::Sha256::new(), len: 0 }
    }

    /// Start over (after `inner` was reset for a retry).
    pub fn restart(&mut self) {
        self.hasher = sha2::Sha256::new();
        self.len = 0;
    }

    /// The digest and length of everything written, and the inner writer.
    pub fn finish(self) -> (Sha256, u64, W) {
        (Sha256(self.hasher.finalize().into()), self.len, self.inner)
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.hasher.update(&buf[..k]);
        self.len += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes (blake3) what passes through it, so that a file read into a layer can be
/// checked against its planned [`ContentHash`] once read. One made with
/// [`CheckedReader::unhashed`] passes the bytes through without hashing: for a file whose
/// content is vouched for otherwise (its identity has not changed since it was hashed).
pub struct CheckedReader<R> {
    inner: R,
    hasher: Option<blake3::Hasher>,
}

impl<R> CheckedReader<R> {
    /// A reader hashing what it reads from `inner`.
    pub fn new(inner: R) -> CheckedReader<R> {
        CheckedReader { inner, hasher: Some(blake3::Hasher::new()) }
    }

    /// A reader passing `inner` through without hashing.
    pub fn unhashed(inner: R) -> CheckedReader<R> {
        CheckedReader { inner, hasher: None }
    }

    /// The reader it reads from.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Whether what was read so far has content `expected`; `None` when it does not hash.
    pub fn has(&self, expected: &ContentHash) -> Option<bool> {
        self.hasher.as_ref().map(|h| ContentHash(*h.finalize().as_bytes()) == *expected)
    }
}

impl<R: Read> CheckedReader<R> {
    /// Whether the reader is at its end (one more byte is asked for, and not hashed) and what was
    /// read has content `expected` (always false when it does not hash).
    pub fn ended_with(mut self, expected: &ContentHash) -> io::Result<bool> {
        let mut probe = [0u8; 1];
        let extra = self.inner.read(&mut probe)?;
        Ok(extra == 0 && self.has(expected) == Some(true))
    }
}

impl<R: Read> Read for CheckedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}
