//! Shared caches over servers a team already runs: the remote half of the lookup stack
//! (store ▸ remote ▸ build).
//!
//! Owns [`RemoteCache`] and its two backends:
//! - [`http`]: the Bazel remote-cache HTTP protocol (`GET`/`HEAD`/`PUT` of `/ac/<drv-hex>` for a
//!   derivation's record and `/cas/<sha256-hex>` for blobs), which bazel-remote, nginx with
//!   WebDAV and S3/GCS gateways serve; credentials from the URL, the environment or netrc.
//! - [`oci`]: an OCI repository (`oci://REGISTRY/REPO`). Blobs are plain OCI blobs; a record is a
//!   small OCI artifact manifest tagged `compose-<drv-hex>` whose layers are the outputs (so the
//!   registry's garbage collector keeps them) and whose annotation holds the record.
//!
//! and [`sign`]: ed25519 key pairs and signed records, as Nix binary caches do.
//!
//! The rules, whatever the backend:
//! - A record is only believed if it is for the derivation asked, of a known version, and, when
//!   trusted keys are configured, signed by one of them (records that are not are ignored and
//!   counted in one warning).
//! - A record is only used once every blob it names has been fetched and verified (sha256 and
//!   size, a layer's `diff_id`) into the local store; a damaged blob is discarded and the
//!   derivation built here. A tree compose wrote (the caller says which outputs are) must also
//!   keep the rules of one ([`crate::tarcheck`]), checked in the same pass as its `diff_id`: one
//!   that does not is refused (counted in one warning), never let into the store.
//! - Results built here are written back in the background (read-write mode): blobs first, then
//!   the record, signed when a signing key is configured. Failures are never cached: only
//!   successful builds produce records at all.
//! - A dead, slow or misbehaving server never fails a build: requests have time-outs, and the
//!   first failure turns the cache off for the rest of the build, with a warning.

pub mod http;
pub mod netrc;
pub mod oci;
pub use crate::record::sign;
pub use crate::record::{fingerprint, Refused, SignedRecord};

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::Digest as _;

use crate::hash::{DrvHash, Sha256};
use crate::store::{Record, Store};
use sign::{SecretKey, TrustedKeys};

/// Read-only or read-write use of a remote cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    ReadOnly,
    #[default]
    ReadWrite,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote cache `{url}`: {message}")]
    Failed { url: String, message: String },
    #[error("unsupported remote cache URL `{0}`: expected http://…, https://… or oci://REGISTRY/REPOSITORY")]
    Url(String),
}

/// Why a blob could not be fetched.
#[derive(Debug)]
pub enum BlobError {
    /// The server is failing (network, time-out, 5xx, refused credentials): stop using it.
    Down(String),
    /// What came was not the blob (wrong size or digest): discard it, keep using the server.
    Damaged(String),
}

/// How a backend stores records and blobs. Implementations never verify: [`RemoteCache`] does.
pub trait Backend: Send + Sync {
    /// The URL as shown to users (never with credentials).
    fn describe(&self) -> &str;
    /// The stored record of `drv` (exact bytes), or None if there is none.
    fn get_record(&self, drv: &DrvHash) -> Result<Option<Vec<u8>>, String>;
    /// Does the server have blob `digest`? (No body moves: a HEAD.)
    fn has_blob(&self, digest: &Sha256) -> Result<bool, String>;
    /// Stream blob `digest` (of `size` bytes) into `sink`. Ok(false): the server lacks it.
    fn get_blob(&self, digest: &Sha256, size: u64, sink: &mut dyn Write) -> Result<bool, BlobError>;
    /// Publish `record` (exact bytes) for `drv` after the blobs it names (digest, size, media
    /// type, file holding it).
    fn put(&self, store: &Store, drv: &DrvHash, blobs: &[BlobFile], record: &[u8]) -> Result<(), String>;
}

/// A blob to upload: digest, size, media type and the store file holding it.
#[derive(Debug, Clone)]
pub struct BlobFile {
    pub digest: Sha256,
    pub size: u64,
    pub media_type: String,
    pub path: PathBuf,
}

/// How to reach and trust a remote cache.
#[derive(Debug, Default)]
pub struct RemoteConfig {
    /// `http(s)://…` or `oci://REGISTRY/REPO`.
    pub url: String,
    pub mode: Mode,
    /// When not empty, only records signed by one of these keys are used.
    pub trusted: TrustedKeys,
    /// Records uploaded from here are signed with this key.
    pub signer: Option<SecretKey>,
}

/// A remote cache in use by one build.
pub struct RemoteCache {
    backend: Box<dyn Backend>,
    mode: Mode,
    trusted: TrustedKeys,
    signer: Option<SecretKey>,
    off: AtomicBool,
    first_failure: Mutex<Option<String>>,
    untrusted: AtomicUsize,
    damaged: AtomicUsize,
    /// Trees refused (they break the rules of a tree compose wrote), and the first reason.
    refused: AtomicUsize,
    first_refusal: Mutex<Option<String>>,
    /// It had lost records the store's markers said it held ([`RemoteCache::recheck_markers`]).
    lost: AtomicBool,
}

/// Records asked for at most when checking that a cache still holds what the markers say.
pub const MARKER_SAMPLE: usize = 8;

impl std::fmt::Debug for RemoteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCache").field("url", &self.backend.describe()).field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl RemoteCache {
    /// The cache at `config.url`, reached through `clients` (their credentials, time-outs and
    /// `--insecure-registry`).
    pub fn open(config: RemoteConfig, clients: std::sync::Arc<crate::clients::Clients>) -> Result<RemoteCache, RemoteError> {
        let backend: Box<dyn Backend> = if config.url.starts_with("http://") || config.url.starts_with("https://") {
            Box::new(http::HttpCache::new(&config.url, clients)?)
        } else if let Some(rest) = config.url.strip_prefix("oci://") {
            Box::new(oci::OciCache::new(rest, clients)?)
        } else {
            return Err(RemoteError::Url(config.url));
        };
        Ok(RemoteCache::with_backend(backend, config.mode, config.trusted, config.signer))
    }

    pub fn with_backend(backend: Box<dyn Backend>, mode: Mode, trusted: TrustedKeys, signer: Option<SecretKey>) -> RemoteCache {
        RemoteCache {
            backend,
            mode,
            trusted,
            signer,
            off: AtomicBool::new(false),
            first_failure: Mutex::new(None),
            untrusted: AtomicUsize::new(0),
            damaged: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            first_refusal: Mutex::new(None),
            lost: AtomicBool::new(false),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Names this cache in the store's markers of what it holds.
    pub(crate) fn id(&self) -> String {
        blake3::hash(self.backend.describe().as_bytes()).to_hex()[..16].to_string()
    }

    /// Does the store know that this cache holds the record of `drv`?
    pub fn known_to_have(&self, store: &Store, drv: &DrvHash) -> bool {
        store.is_shared(&self.id(), drv)
    }

    /// Does the cache still hold what the store's markers say it was given? Of `records` (those
    /// a build uses), the ones the markers say it holds are asked for, [`MARKER_SAMPLE`] of them
    /// spread over the list, each with its largest blob: one missing (a wiped or pruned cache)
    /// and every marker of this cache is forgotten, so that the build shares again all it uses.
    /// True when they were.
    pub fn recheck_markers(&self, store: &Store, records: &[&Record]) -> bool {
        let marked: Vec<&&Record> = records.iter().filter(|r| self.known_to_have(store, &r.drv)).collect();
        if marked.is_empty() || !self.usable() {
            return false;
        }
        let every = marked.len().div_ceil(MARKER_SAMPLE).max(1);
        for r in marked.iter().step_by(every) {
            let held = self.backend.get_record(&r.drv).and_then(|rec| match (rec, r.outputs.values().max_by_key(|o| o.size)) {
                (Some(_), Some(o)) => self.backend.has_blob(&o.digest).map(|b| b.then_some(())),
                (Some(_), None) => Ok(Some(())),
                (None, _) => Ok(None),
            });
            match held {
                Ok(Some(())) => {}
                Ok(None) => {
                    store.forget_shared(&self.id());
                    self.lost.store(true, Ordering::SeqCst);
                    return true;
                }
                Err(e) => {
                    self.fail(e);
                    return false;
                }
            }
        }
        false
    }

    fn fail(&self, message: String) {
        self.off.store(true, Ordering::SeqCst);
        let mut w = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
        if w.is_none() {
            *w = Some(message);
        }
    }

    /// False once the server has failed in this build.
    pub fn usable(&self) -> bool {
        !self.off.load(Ordering::SeqCst)
    }

    /// What the user should hear about this build's use of the cache.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let url = self.backend.describe();
        if let Some(f) = self.first_failure.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            out.push(format!("remote cache {url} is not used for the rest of this build: {f}"));
        }
        if self.lost.load(Ordering::SeqCst) {
            let then =
                if self.usable() { "this build gave it again all it used" } else { "builds give it again all they use once it works" };
            out.push(format!("remote cache {url} had lost records this store gave it (it was wiped or pruned): {then}"));
        }
        let n = self.untrusted.load(Ordering::SeqCst);
        if n > 0 {
            out.push(format!(
                "remote cache {url}: ignored {n} record(s) not signed by a trusted key (trusted: {})",
                self.trusted.names().join(", ")
            ));
        }
        let n = self.damaged.load(Ordering::SeqCst);
        if n > 0 {
            out.push(format!("remote cache {url}: discarded {n} damaged blob(s); built them here instead"));
        }
        let n = self.refused.load(Ordering::SeqCst);
        if n > 0 {
            let first = self.first_refusal.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default();
            out.push(format!(
                "remote cache {url}: refused {n} tree(s) that break the rules of a tree compose wrote (first: {first}); built them here instead"
            ));
        }
        out
    }

    /// A tree from the cache breaks the rules: counted, the first reason kept for the warning.
    fn refuse(&self, why: crate::tarcheck::Refused) {
        self.refused.fetch_add(1, Ordering::SeqCst);
        let mut first = self.first_refusal.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(why.to_string());
        }
    }

    /// The record of `drv` if the cache has one we believe (blobs not fetched yet).
    pub fn record(&self, drv: &DrvHash) -> Option<Record> {
        if !self.usable() {
            return None;
        }
        let bytes = match self.backend.get_record(drv) {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                self.fail(e);
                return None;
            }
        };
        match SignedRecord::admit(&bytes, drv, &self.trusted) {
            Ok(rec) => Some(rec),
            Err(Refused::Malformed) => None,
            Err(Refused::Untrusted) => {
                self.untrusted.fetch_add(1, Ordering::SeqCst);
                None
            }
        }
    }

    /// Fetch every output blob of `rec` into the store, verified, then store the record.
    /// Outputs that are trees compose wrote ([`crate::record::Kind::is_compose_tree`]) are checked by the rules of one
    /// ([`crate::tarcheck::Rules::Compose`]) as they stream in, and refused (never let into the
    /// store) if they break one. False if a blob is missing, damaged or refused, or the server
    /// failed.
    pub fn fetch_outputs(&self, store: &Store, rec: &Record) -> bool {
        let kind = crate::record::Kind::parse(&rec.kind);
        for (name, o) in &rec.outputs {
            if !self.fetch_blob(store, o, kind.is_some_and(|k| k.is_compose_tree(name))) {
                return false;
            }
        }
        if store.put_record(rec).is_err() {
            return false;
        }
        store.mark_shared(&self.id(), &rec.drv);
        true
    }

    /// Fetch output `o` into the store: its blob, checked against its digest and size and, for
    /// a layer, against the record's `diff_id` while it streams in, and for a `tree`, by the
    /// rules of a tree compose wrote in the same pass (a blob already in the store is checked
    /// the same way).
    fn fetch_blob(&self, store: &Store, o: &crate::store::Output, tree: bool) -> bool {
        use crate::tarcheck::{self, Rules};
        let (digest, size) = (&o.digest, o.size);
        let diff_id = match (o.diff_id, tree) {
            (None, false) => None,
            (_, true) => Some(Uncompressed::Tree(tarcheck::StreamCheck::new(&o.media_type, Rules::Compose))),
            (Some(_), false) => match crate::layer::DiffIdWriter::new(&o.media_type) {
                Some(w) => Some(Uncompressed::Layer(w)),
                None => {
                    self.damaged.fetch_add(1, Ordering::SeqCst);
                    return false;
                }
            },
        };
        if store.checked_size(digest) == Some(size) {
            let path = store.blob_path(digest);
            let fits = if tree {
                match tarcheck::check_file(&path, &o.media_type, Rules::Compose) {
                    Ok(s) => s.diff_id.map(Sha256) == o.diff_id,
                    Err(Ok(why)) => {
                        self.refuse(why);
                        return false;
                    }
                    Err(Err(_)) => false,
                }
            } else {
                o.diff_id.is_none_or(|d| crate::layer::DiffIdWriter::of_file(&path, &o.media_type).is_ok_and(|a| Sha256(a) == d))
            };
            if !fits {
                self.damaged.fetch_add(1, Ordering::SeqCst);
            }
            return fits;
        }
        if !self.usable() {
            return false;
        }
        let Ok(tmp) = store.temp_file() else { return false };
        let Ok(file) = tmp.reopen() else { return false };
        let mut sink = Verifying {
            inner: io::BufWriter::with_capacity(256 * 1024, file),
            hasher: sha2::Sha256::new(),
            written: 0,
            limit: size,
            diff_id,
        };
        match self.backend.get_blob(digest, size, &mut sink) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(BlobError::Down(e)) => {
                self.fail(e);
                return false;
            }
            Err(BlobError::Damaged(_)) => {
                self.damaged.fetch_add(1, Ordering::SeqCst);
                return false;
            }
        }
        // A damaged blob is discarded (and rebuilt here), never let into the store; so is a
        // layer whose uncompressed bytes are not what the record says, and a tree that breaks
        // the rules.
        let uncompressed = match sink.diff_id.take() {
            None => None,
            Some(Uncompressed::Layer(w)) => Some(w.finish().ok().map(Sha256)),
            Some(Uncompressed::Tree(c)) => match c.finish() {
                Ok(s) => Some(s.diff_id.map(Sha256)),
                Err(why) if sink.written == size => {
                    self.refuse(why);
                    return false;
                }
                Err(_) => Some(None),
            },
        };
        let ok = sink.written == size
            && Sha256(sink.hasher.finalize_reset().into()) == *digest
            && uncompressed.is_none_or(|actual| actual.is_some() && actual == o.diff_id);
        if !ok {
            self.damaged.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        if sink.inner.flush().is_err() {
            return false;
        }
        drop(sink);
        store.commit_blob(tmp, digest).is_ok()
    }

    /// Write a result back: blobs the cache lacks, then the (signed) record. With `check`, the
    /// result was found in the store rather than built, so first ask whether the cache has it.
    pub fn upload(&self, store: &Store, rec: &Record, check: bool) {
        if self.mode != Mode::ReadWrite || !self.usable() {
            return;
        }
        // Once the cache was found to have lost some of what it was given, a record it still has
        // may name blobs it lost: those are given again (`put` skips the blobs it has).
        if check && !self.lost.load(Ordering::SeqCst) {
            match self.backend.get_record(&rec.drv) {
                Ok(Some(_)) => {
                    store.mark_shared(&self.id(), &rec.drv);
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
        let blobs: Vec<BlobFile> = rec
            .outputs
            .values()
            .map(|o| BlobFile { digest: o.digest, size: o.size, media_type: o.media_type.clone(), path: store.blob_path(&o.digest) })
            .collect();
        let signatures = self.signer.iter().map(|k| k.sign(&fingerprint(rec))).collect();
        let signed = SignedRecord { record: rec.clone(), signatures };
        let Ok(bytes) = serde_json::to_vec(&signed) else { return };
        match self.backend.put(store, &rec.drv, &blobs, &bytes) {
            Ok(()) => store.mark_shared(&self.id(), &rec.drv),
            Err(e) => self.fail(e),
        }
    }
}

/// What is made of a layer's uncompressed bytes as they pass.
enum Uncompressed {
    /// Its diff_id.
    Layer(crate::layer::DiffIdWriter),
    /// A tree compose wrote: its diff_id, and whether it keeps the rules.
    Tree(crate::tarcheck::StreamCheck),
}

impl Write for Uncompressed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Uncompressed::Layer(w) => w.write(buf),
            Uncompressed::Tree(c) => c.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A sink that hashes, counts and refuses more than `limit` bytes.
struct Verifying<W: Write> {
    inner: W,
    hasher: sha2::Sha256,
    written: u64,
    limit: u64,
    /// For a layer: its diff_id (and for a tree, its check), computed as the bytes pass.
    diff_id: Option<Uncompressed>,
}

impl<W: Write> Write for Verifying<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "more bytes than the record says"));
        }
        self.inner.write_all(buf)?;
        self.hasher.update(buf);
        if let Some(d) = &mut self.diff_id {
            // A stream that does not decompress is damaged: noted, judged at the end.
            if d.write_all(buf).is_err() {
                self.diff_id = Some(Uncompressed::Layer(crate::layer::DiffIdWriter::broken()));
            }
        }
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Output, RECORD_VERSION};
    use sign::Verdict;
    use std::collections::BTreeMap;

    fn record() -> Record {
        let mut outputs = BTreeMap::new();
        outputs.insert(
            "layer".to_string(),
            Output {
                digest: Sha256::of(b"x"),
                size: 1,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                diff_id: Some(Sha256::of(b"y")),
            },
        );
        Record {
            version: RECORD_VERSION,
            drv: DrvHash(*blake3::hash(b"d").as_bytes()),
            kind: "layer".into(),
            outputs,
            inputs: [("note".to_string(), "informational".to_string())].into(),
        }
    }

    #[test]
    fn fingerprint_covers_outputs_not_inputs() {
        let a = record();
        let mut b = a.clone();
        b.inputs.clear();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let mut c = a.clone();
        c.outputs.get_mut("layer").unwrap().size = 2;
        assert_ne!(fingerprint(&a), fingerprint(&c));
        let mut d = a.clone();
        d.outputs.get_mut("layer").unwrap().diff_id = None;
        assert_ne!(fingerprint(&a), fingerprint(&d));
    }

    #[test]
    fn signed_record_is_a_record_plus_signatures() {
        let key = SecretKey::generate("k").unwrap();
        let rec = record();
        let signed = SignedRecord { record: rec.clone(), signatures: vec![key.sign(&fingerprint(&rec))] };
        let bytes = serde_json::to_vec(&signed).unwrap();
        // An unsigned reader still sees the record.
        let plain: Record = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(plain, rec);
        let back: SignedRecord = serde_json::from_slice(&bytes).unwrap();
        let trusted = TrustedKeys::new(vec![key.public()]);
        assert!(matches!(trusted.verdict(&fingerprint(&back.record), &back.signatures), Verdict::Trusted(_)));
    }

    #[test]
    fn verifying_sink_refuses_extra_bytes() {
        let mut s = Verifying { inner: Vec::new(), hasher: sha2::Sha256::new(), written: 0, limit: 3, diff_id: None };
        s.write_all(b"abc").unwrap();
        assert!(s.write_all(b"d").is_err());
    }
}
