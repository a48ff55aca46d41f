//! Typed digests and the stable encoding used to hash derivation inputs.
//!
//! Owns: [`Sha256`] (content addresses of blobs; OCI needs sha256), [`DrvHash`] (blake3 keys of
//! derivations), [`ContentHash`] (blake3 fingerprints of local files), and [`Encoder`], the explicit,
//! versioned, length-prefixed encoding that every derivation hash is computed over. Never use
//! `std::hash::Hash` for anything that is persisted or shared: its output is not stable.
//!
//! Also: hashing what passes through a writer or reader ([`HashingWriter`], [`CheckedReader`],
//! in `adapters.rs`), and a sha256 whose state is open ([`ShaState`], in `chain.rs`), so that a
//! layer's digest chain can be compared with a kept one and moved on without hashing.

mod adapters;
mod chain;

pub use adapters::{CheckedReader, HashingWriter};
pub use chain::ShaState;
pub(crate) use chain::StreamHash;

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// Error parsing a digest from text.
#[derive(Debug, thiserror::Error)]
#[error("invalid {kind} digest `{text}`: expected {expected}")]
pub struct DigestParseError {
    kind: &'static str,
    text: String,
    expected: &'static str,
}

/// 64 lower-case hex digits: the text of a sha256 (or blake3) digest.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if !is_sha256_hex(text) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

macro_rules! digest_type {
    ($name:ident, $kind:literal, $prefix:literal) => {
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lower-case hex of the digest, without prefix.
            pub fn hex(&self) -> String {
                hex::encode(self.0)
            }
            pub fn from_hex(text: &str) -> Result<Self, DigestParseError> {
                parse_hex32(text).map($name).ok_or_else(|| DigestParseError {
                    kind: $kind,
                    text: text.to_string(),
                    expected: "64 lower-case hex digits",
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = DigestParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let hex = s.strip_prefix($prefix).ok_or_else(|| DigestParseError {
                    kind: $kind,
                    text: s.to_string(),
                    expected: concat!("`", $prefix, "` followed by 64 hex digits"),
                })?;
                Self::from_hex(hex).map_err(|_| DigestParseError {
                    kind: $kind,
                    text: s.to_string(),
                    expected: concat!("`", $prefix, "` followed by 64 hex digits"),
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_type!(Sha256, "sha256", "sha256:");
digest_type!(DrvHash, "derivation", "drv:");
digest_type!(ContentHash, "content", "blake3:");

impl Sha256 {
    pub fn of(data: &[u8]) -> Sha256 {
        Sha256(sha2::Sha256::digest(data).into())
    }

    /// Hash a reader to its end, streaming.
    pub fn of_reader(r: impl Read) -> io::Result<(Sha256, u64)> {
        let mut h = sha2::Sha256::new();
        let n = for_each_chunk(r, |c| h.update(c))?;
        Ok((Sha256(h.finalize().into()), n))
    }
}

/// Feed everything `r` yields to `f`, in chunks; returns the byte count.
fn for_each_chunk(mut r: impl Read, mut f: impl FnMut(&[u8])) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => {
                f(&buf[..k]);
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl ContentHash {
    pub fn of(data: &[u8]) -> ContentHash {
        ContentHash(*blake3::hash(data).as_bytes())
    }

    /// Hash a reader to its end, streaming; returns the hash and the byte count.
    pub fn of_reader(r: impl Read) -> io::Result<(ContentHash, u64)> {
        let mut h = blake3::Hasher::new();
        let n = for_each_chunk(r, |c| {
            h.update(c);
        })?;
        Ok((ContentHash(*h.finalize().as_bytes()), n))
    }
}

/// Version of the derivation encoding. Bump it when the meaning of any encoded field changes:
/// every `DrvHash` changes with it, so old store records are simply not found again.
pub const DRV_ENCODING_VERSION: u32 = 1;

/// The canonical encoding of a derivation's inputs: typed, length-prefixed fields fed to blake3.
///
/// Every field is written as a one-byte tag, a little-endian length, and the bytes, so no two
/// different field sequences can produce the same byte stream.
pub struct Encoder {
    hasher: blake3::Hasher,
}

impl Encoder {
    /// Start the encoding of a derivation of `kind` (e.g. `"files-layer"`).
    pub fn new(kind: &str) -> Encoder {
        let mut e = Encoder { hasher: blake3::Hasher::new() };
        e.raw(b'V', &DRV_ENCODING_VERSION.to_le_bytes());
        e.str(kind);
        e
    }

    fn raw(&mut self, tag: u8, bytes: &[u8]) {
        self.hasher.update(&[tag]);
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.raw(b's', s.as_bytes());
        self
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.raw(b'b', b);
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(b'u', &v.to_le_bytes());
        self
    }

    pub fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.raw(b'n', &[]),
            Some(s) => self.raw(b'S', s.as_bytes()),
        }
        self
    }

    /// Start a list of `n` items (each then encoded by the caller).
    pub fn list(&mut self, n: usize) -> &mut Self {
        self.raw(b'l', &(n as u64).to_le_bytes());
        self
    }

    pub fn sha256(&mut self, d: &Sha256) -> &mut Self {
        self.raw(b'h', &d.0);
        self
    }

    pub fn drv(&mut self, d: &DrvHash) -> &mut Self {
        self.raw(b'd', &d.0);
        self
    }

    pub fn content(&mut self, d: &ContentHash) -> &mut Self {
        self.raw(b'c', &d.0);
        self
    }

    pub fn finish(&self) -> DrvHash {
        DrvHash(*self.hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_round_trips_through_text() {
        let d = Sha256::of(b"hello");
        assert_eq!(d.to_string(), "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(d.to_string().parse::<Sha256>().unwrap(), d);
        assert!("sha256:XYZ".parse::<Sha256>().is_err());
        assert!("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".parse::<Sha256>().is_err());
        assert!(Sha256::from_hex(&"A".repeat(64)).is_err(), "upper case is not canonical");
    }

    #[test]
    fn encoder_is_unambiguous_and_stable() {
        let a = Encoder::new("k").str("ab").str("c").finish();
        let b = Encoder::new("k").str("a").str("bc").finish();
        assert_ne!(a, b);
        // Golden value: a change here silently invalidates every store and remote cache.
        assert_eq!(
            Encoder::new("files-layer").str("x").u64(7).finish().hex(),
            "32f214140600f32d1bc312606826164b5f333bb4c71954052decf7ac2a3ceb8e"
        );
    }
}
