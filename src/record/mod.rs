//! Records: what a derivation produced, and whether to believe one.
//!
//! Owns the record type ([`Record`]: a derivation's outputs by name, versioned JSON, the same in
//! the store and in a shared cache), each kind's shape ([`shape::Kind`]: which outputs a record
//! of that kind has, of which media types, which are layers), whether a record fits the
//! derivation it claims to be ([`fits`], against what the derivation pins: [`Expected`]), the
//! fingerprint a signature covers ([`fingerprint`]), and signing keys and signatures
//! ([`sign`], in the style of a Nix binary cache). This is the one place that says whether a
//! record is trusted; the deep check of a stored record's blobs is [`crate::trust`], the
//! transport of records is [`crate::remote`].
//!
//! Format: `version` is [`RECORD_VERSION`]. Records written before `inputs` was a map kept it as
//! a list of strings; version 1 covers both, and the list is read as numbered entries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::{DrvHash, Sha256};

pub mod shape;
pub mod sign;

pub use shape::{fits, shape_problem, Expected, Kind, Pins};
use sign::Signature;

/// Version of the record JSON format.
pub const RECORD_VERSION: u32 = 1;

/// One output of a derivation: a blob in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    pub digest: Sha256,
    pub size: u64,
    pub media_type: String,
    /// For layers: sha256 of the uncompressed tar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Sha256>,
}

/// What a derivation produced, and (for `plan`/explanations) what it was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub drv: DrvHash,
    pub kind: String,
    pub outputs: BTreeMap<String, Output>,
    /// What the derivation was made from, in words (`name → value`: a file's size and content
    /// hash, a package's version, a dependency's hash), for `compose explain`; informational
    /// only (never trusted, never signed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "inputs_compat")]
    pub inputs: BTreeMap<String, String>,
}

/// Records written before `inputs` was a map held a list of strings; read those as numbered
/// entries rather than refusing the record.
fn inputs_compat<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Map(BTreeMap<String, String>),
        List(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::Map(m) => m,
        Either::List(l) => l.into_iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
    })
}

/// A record as kept on the server: the store's record plus signatures over its
/// [`fingerprint`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedRecord {
    #[serde(flatten)]
    pub record: Record,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Signature>,
}

/// Why a shared cache's record was not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a record of this compose's format for the derivation asked about.
    Malformed,
    /// Keys are trusted and none of them signed it (or a signature is bad).
    Untrusted,
}

impl SignedRecord {
    /// The record in `bytes`, if it is a well-formed record of `drv` with outputs, signed by one
    /// of `trusted` when any key is trusted. Whether it fits its derivation is [`fits`]'s to say.
    pub fn admit(bytes: &[u8], drv: &DrvHash, trusted: &sign::TrustedKeys) -> Result<Record, Refused> {
        let signed: SignedRecord = serde_json::from_slice(bytes).map_err(|_| Refused::Malformed)?;
        let rec = signed.record;
        if rec.version != RECORD_VERSION || rec.drv != *drv || rec.outputs.is_empty() {
            return Err(Refused::Malformed);
        }
        if !trusted.is_empty() && !matches!(trusted.verdict(&fingerprint(&rec), &signed.signatures), sign::Verdict::Trusted(_)) {
            return Err(Refused::Untrusted);
        }
        Ok(rec)
    }
}

/// What a signature covers: everything in a record that decides what a derivation produced
/// (not the informational `inputs`), in a fixed text form independent of JSON formatting.
pub fn fingerprint(rec: &Record) -> Vec<u8> {
    let mut s = format!("compose-record;{};{};{};", rec.version, rec.drv.hex(), rec.kind);
    for (name, o) in &rec.outputs {
        let diff = o.diff_id.map(|d| d.to_string()).unwrap_or_default();
        s.push_str(&format!("{name}={}:{}:{}:{diff};", o.digest, o.size, o.media_type));
    }
    s.into_bytes()
}

/// The files of a base as a record of kind [`shape::BASE_FILES_KIND`] keeps them (path → base64
/// of the content), if `bytes` is that.
pub fn parse_base_files(bytes: &[u8]) -> Option<BTreeMap<String, Vec<u8>>> {
    use base64::Engine as _;
    let map: BTreeMap<String, String> = serde_json::from_slice(bytes).ok()?;
    map.into_iter().map(|(k, v)| base64::engine::general_purpose::STANDARD.decode(v).ok().map(|v| (k, v))).collect()
}
