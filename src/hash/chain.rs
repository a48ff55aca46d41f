//! A sha256 with its state open ([`ShaState`]), and a chain of such states over a stream of
//! pieces ([`StreamHash`]), hashed here or on a thread of its own, that can move over a piece
//! without hashing it when it reaches the piece in a state recorded before.

use std::io;

/// The initial sha256 state (FIPS 180-4).
const SHA256_IV: [u32; 8] = [0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19];

/// A sha256 in progress with its state open (the eight words, the bytes hashed, the bytes of the
/// unfinished block), so that a stream's state can be compared with a kept one and moved on
/// without hashing (a layer's kept chunk records the states before and after it: `layer::ChunkMemo`). Gives the bytes `sha2::Sha256` gives, with its block
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

/// Where a sha256 chain went over one piece: (state before, state after, whether a memo moved
/// it without hashing).
pub(crate) type Step = (ShaState, ShaState, bool);

/// The sha256 of a stream of pieces, hashed in order: here, or once [`StreamHash::spawn`] is
/// called, on a thread of its own. A layer's two digests are serial chains (the uncompressed
/// bytes for the diff_id, the compressed ones for the digest): on threads of their own they run
/// beside the writer and the compressing pool rather than after them. A piece may come with a
/// memo (state before, state after): when the chain is in that state, it moves on unhashed.
#[derive(Default)]
pub(crate) struct StreamHash {
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
    pub(crate) fn spawn(&mut self) {
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
    pub(crate) fn update(&mut self, buf: Vec<u8>, memo: Option<(ShaState, ShaState)>) -> Option<Vec<u8>> {
        match &self.thread {
            Some(t) => t.tx.send((buf, memo)).err().map(|e| e.0 .0),
            None => {
                let step = hash_piece(&mut self.here, &buf, memo);
                self.steps.push(step);
                Some(buf)
            }
        }
    }

    /// Whether the chain is hashed here (no thread yet) and is in state `s`.
    pub(crate) fn is_at(&self, s: &ShaState) -> bool {
        self.thread.is_none() && self.here == *s
    }

    /// A buffer the thread is done with, for reuse.
    pub(crate) fn recycled(&self) -> Option<Vec<u8>> {
        let mut buf = self.thread.as_ref()?.back.try_recv().ok()?;
        buf.clear();
        Some(buf)
    }

    /// The digest, and each piece's step in order.
    pub(crate) fn finish(self) -> io::Result<([u8; 32], Vec<Step>)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn open_sha256_state_gives_sha256() {
        // Deterministic bytes (a linear congruential sequence).
        let data: Vec<u8> =
            (0..3 * 4096 + 77u64).map(|i| (i.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(3_037_000_493) >> 56) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000, data.len()] {
            let want: [u8; 32] = sha2::Sha256::digest(&data[..len]).into();
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
}
