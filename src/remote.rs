//! Shared caches over servers a team already runs. This module speaks the Bazel remote-cache HTTP
//! protocol (`GET`/`HEAD`/`PUT` of `/ac/<drv-hex>` for a derivation's record and
//! `/cas/<sha256-hex>` for blobs), which bazel-remote, nginx with WebDAV and S3/GCS gateways serve.
//!
//! Owns the remote half of the lookup stack (store ▸ remote ▸ build): a record found remotely is
//! only used once every blob it names has been fetched and verified (sha256 and size) into the
//! local store. Results built here are written back in the background (read-write mode), blobs
//! before the record. A dead, slow or misbehaving server never fails a build: the first failure
//! turns the cache off for the rest of the build, with a warning, and the build goes on locally.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use sha2::Digest as _;

use crate::hash::{DrvHash, Sha256};
use crate::store::{Record, Store, RECORD_VERSION};

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
    #[error("unsupported remote cache URL `{0}`: expected http:// or https://")]
    Url(String),
}

/// An HTTP cache (Bazel protocol).
pub struct HttpCache {
    base: String,
    mode: Mode,
    client: reqwest::blocking::Client,
    off: AtomicBool,
    /// The first failure, reported once.
    pub warning: Mutex<Option<String>>,
}

impl HttpCache {
    pub fn new(url: &str, mode: Mode) -> Result<HttpCache, RemoteError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(RemoteError::Url(url.to_string()));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| RemoteError::Failed { url: url.to_string(), message: e.to_string() })?;
        Ok(HttpCache { base: url.trim_end_matches('/').to_string(), mode, client, off: AtomicBool::new(false), warning: Mutex::new(None) })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn fail(&self, message: String) {
        self.off.store(true, Ordering::SeqCst);
        let mut w = self.warning.lock().unwrap_or_else(|e| e.into_inner());
        if w.is_none() {
            *w = Some(format!("remote cache {} is not used for the rest of this build: {message}", self.base));
        }
    }

    fn usable(&self) -> bool {
        !self.off.load(Ordering::SeqCst)
    }

    /// The record of `drv`, if the cache has one. Failures turn the cache off.
    fn get_record(&self, drv: &DrvHash) -> Option<Record> {
        if !self.usable() {
            return None;
        }
        let url = format!("{}/ac/{}", self.base, drv.hex());
        match self.client.get(&url).send() {
            Ok(r) if r.status().as_u16() == 404 => None,
            Ok(r) if r.status().is_success() => match r.bytes() {
                Ok(b) => serde_json::from_slice::<Record>(&b).ok().filter(|rec| rec.version == RECORD_VERSION && rec.drv == *drv),
                Err(e) => {
                    self.fail(e.to_string());
                    None
                }
            },
            Ok(r) => {
                self.fail(format!("GET {url} answered {}", r.status()));
                None
            }
            Err(e) => {
                self.fail(e.to_string());
                None
            }
        }
    }

    /// Fetch blob `digest` into the store, verified. False if the cache lacks it or it is damaged.
    fn fetch_blob(&self, store: &Store, digest: &Sha256, size: u64) -> bool {
        if store.has_blob(digest) {
            return true;
        }
        if !self.usable() {
            return false;
        }
        let url = format!("{}/cas/{}", self.base, digest.hex());
        let Ok(tmp) = store.temp_file() else { return false };
        let Ok(mut file) = tmp.reopen() else { return false };
        let mut resp = match self.client.get(&url).send() {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if r.status().as_u16() == 404 => return false,
            Ok(r) => {
                self.fail(format!("GET {url} answered {}", r.status()));
                return false;
            }
            Err(e) => {
                self.fail(e.to_string());
                return false;
            }
        };
        let mut h = sha2::Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k as u64;
                    if n > size || file.write_all(&buf[..k]).is_err() {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(e.to_string());
                    return false;
                }
            }
        }
        // A damaged blob is discarded (and rebuilt here), never let into the store.
        if n != size || Sha256(h.finalize().into()) != *digest {
            return false;
        }
        store.commit_blob(tmp, digest).is_ok()
    }

    /// Does the cache hold a record for `drv`? (For `compose plan`; failures answer no.)
    pub fn has_record(&self, drv: &DrvHash) -> bool {
        self.usable() && self.has(&format!("{}/ac/{}", self.base, drv.hex()))
    }

    /// Look `drv` up remotely; on a hit every output blob is in the store, verified.
    pub fn lookup(&self, store: &Store, drv: &DrvHash) -> Option<Record> {
        let rec = self.get_record(drv)?;
        for o in rec.outputs.values() {
            if !self.fetch_blob(store, &o.digest, o.size) {
                return None;
            }
        }
        store.put_record(&rec).ok()?;
        Some(rec)
    }

    fn put(&self, url: &str, body: reqwest::blocking::Body) -> bool {
        match self.client.put(url).body(body).send() {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                self.fail(format!("PUT {url} answered {}", r.status()));
                false
            }
            Err(e) => {
                self.fail(e.to_string());
                false
            }
        }
    }

    fn has(&self, url: &str) -> bool {
        matches!(self.client.head(url).send(), Ok(r) if r.status().is_success())
    }

    /// Write a locally built result back: blobs the cache lacks, then the record.
    pub fn upload(&self, store: &Store, rec: &Record) {
        if self.mode != Mode::ReadWrite || !self.usable() {
            return;
        }
        for o in rec.outputs.values() {
            let url = format!("{}/cas/{}", self.base, o.digest.hex());
            if self.has(&url) {
                continue;
            }
            let Ok(f) = std::fs::File::open(store.blob_path(&o.digest)) else { return };
            if !self.put(&url, reqwest::blocking::Body::sized(f, o.size)) {
                return;
            }
        }
        let Ok(bytes) = serde_json::to_vec(rec) else { return };
        self.put(&format!("{}/ac/{}", self.base, rec.drv.hex()), reqwest::blocking::Body::from(bytes));
    }
}
