//! The registry cache backend: records and blobs kept in one OCI repository
//! (`oci://REGISTRY/REPO`), so a team needs nothing beyond the registry it pushes images to.
//!
//! Owns the layout in the repository:
//! - blobs are ordinary OCI blobs (`/v2/REPO/blobs/sha256:…`), so image layers the team pushes
//!   to the same registry are the same blobs;
//! - the record of derivation D is an OCI artifact manifest tagged `compose-<D-hex>`: its
//!   `artifactType` is [`RECORD_ARTIFACT_TYPE`], its config the empty descriptor, its layers
//!   the record's outputs (so the registry's garbage collector keeps them while the tag
//!   exists), and the annotation [`RECORD_ANNOTATION`] holds the record itself, so a lookup is
//!   one manifest request. Outputs of up to [`INLINE_MAX`] bytes are also embedded in their
//!   descriptors (the OCI 1.1 `data` field), so a lookup brings them along: a package's file list
//!   and licences, an image's config and manifest need no request of their own.
//!
//! Credentials are the registry credentials (docker/podman auth files, credential helpers);
//! `--insecure-registry` applies. Requests use short time-outs.

use std::io::Write;
use std::sync::Arc;

use super::{BlobError, BlobFile, RemoteError};
use crate::clients::Clients;
use crate::hash::{DrvHash, Sha256};
use crate::registry::{Registry, RegistryError};
use crate::store::Store;

pub const RECORD_ARTIFACT_TYPE: &str = "application/vnd.compose.record.v1+json";
pub const RECORD_ANNOTATION: &str = "dev.compose.record";
/// Outputs up to this size travel inside the record manifest too.
pub const INLINE_MAX: u64 = 4096;
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A registry cache.
pub struct OciCache {
    /// `REGISTRY/REPO`.
    repo: String,
    shown: String,
    /// The registry client is made on first use (it starts an I/O runtime and reads
    /// credentials): a no-op build whose results the cache is known to hold never pays for it.
    clients: Arc<Clients>,
    /// Small blobs that came embedded in record manifests (verified by the caller as any blob).
    inline: std::sync::Mutex<std::collections::HashMap<Sha256, Vec<u8>>>,
    /// Blobs this process has seen the repository accept: not asked about again.
    present: std::sync::Mutex<std::collections::HashSet<Sha256>>,
}

impl OciCache {
    /// `rest` is the URL without `oci://`: `REGISTRY/REPO`.
    pub fn new(rest: &str, clients: Arc<Clients>) -> Result<OciCache, RemoteError> {
        let url = format!("oci://{rest}");
        let bad = |message: String| RemoteError::Failed { url: url.clone(), message };
        let repo = rest.trim_end_matches('/').to_string();
        // The registry named explicitly (no Docker Hub short names), no tag, no digest.
        if !repo.contains('/') {
            return Err(bad(format!("expected oci://REGISTRY/REPOSITORY, got oci://{repo}")));
        }
        crate::registry::parse_repo(&repo).map_err(|e| bad(e.to_string()))?;
        Ok(OciCache { shown: url.clone(), repo, clients, inline: Default::default(), present: Default::default() })
    }

    fn registry(&self) -> Result<&Registry, String> {
        self.clients.cache_registry()
    }

    fn tag(drv: &DrvHash) -> String {
        format!("compose-{}", drv.hex())
    }
}

/// The manifest that records `drv`: outputs as layers (small ones embedded), the record as an
/// annotation.
pub fn record_manifest(blobs: &[BlobFile], record: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let record = std::str::from_utf8(record).map_err(|e| e.to_string())?;
    let mut layers = Vec::with_capacity(blobs.len());
    for b in blobs {
        let mut d = serde_json::json!({"mediaType": b.media_type, "digest": b.digest.to_string(), "size": b.size});
        if b.size <= INLINE_MAX {
            let bytes = std::fs::read(&b.path).map_err(|e| format!("cannot read {}: {e}", b.path.display()))?;
            d["data"] = base64::engine::general_purpose::STANDARD.encode(bytes).into();
        }
        layers.push(d);
    }
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": RECORD_ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": Sha256::of(b"{}").to_string(), "size": 2, "data": "e30="},
        "layers": layers,
        "annotations": {RECORD_ANNOTATION: record},
    });
    serde_json::to_vec(&m).map_err(|e| e.to_string())
}

/// Blobs embedded in a record manifest: (digest as claimed, unverified; bytes).
pub type Embedded = Vec<(Sha256, Vec<u8>)>;

/// The record held by a record manifest, and the blobs embedded in it.
pub fn record_of(manifest: &[u8]) -> Option<(Vec<u8>, Embedded)> {
    use base64::Engine as _;
    let v: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    if v.get("artifactType").and_then(|t| t.as_str()) != Some(RECORD_ARTIFACT_TYPE) {
        return None;
    }
    let record = v.get("annotations")?.get(RECORD_ANNOTATION)?.as_str()?.as_bytes().to_vec();
    let mut inline = Vec::new();
    for l in v.get("layers").and_then(|l| l.as_array()).map(Vec::as_slice).unwrap_or_default() {
        let digest = l.get("digest").and_then(|d| d.as_str()).and_then(|d| d.parse::<Sha256>().ok());
        let data = l.get("data").and_then(|d| d.as_str()).and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
        if let (Some(digest), Some(data)) = (digest, data) {
            inline.push((digest, data));
        }
    }
    Some((record, inline))
}

impl super::Backend for OciCache {
    fn describe(&self) -> &str {
        &self.shown
    }

    fn get_record(&self, drv: &DrvHash) -> Result<Option<Vec<u8>>, String> {
        match self.registry()?.resolve(&format!("{}:{}", self.repo, OciCache::tag(drv))) {
            Ok(f) => Ok(record_of(&f.bytes).map(|(record, inline)| {
                self.inline.lock().unwrap_or_else(|e| e.into_inner()).extend(inline);
                record
            })),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn get_blob(&self, digest: &Sha256, size: u64, sink: &mut dyn Write) -> Result<bool, BlobError> {
        let embedded = self.inline.lock().unwrap_or_else(|e| e.into_inner()).remove(digest);
        if let Some(bytes) = embedded {
            sink.write_all(&bytes).map_err(|e| BlobError::Damaged(e.to_string()))?;
            return Ok(true);
        }
        match self.registry().map_err(BlobError::Down)?.blob(&self.repo, digest, Some(size), sink) {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e @ (RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } | RegistryError::Sink { .. })) => {
                Err(BlobError::Damaged(e.to_string()))
            }
            Err(e) => Err(BlobError::Down(e.to_string())),
        }
    }

    fn has_blob(&self, digest: &Sha256) -> Result<bool, String> {
        self.registry()?.has_blob(&self.repo, digest).map_err(|e| e.to_string())
    }

    fn put(&self, store: &Store, drv: &DrvHash, blobs: &[BlobFile], record: &[u8]) -> Result<(), String> {
        let empty = store.put_bytes(b"{}").map_err(|e| e.to_string())?;
        let mut all: Vec<(Sha256, u64, std::path::PathBuf)> = vec![(empty, 2, store.blob_path(&empty))];
        all.extend(blobs.iter().map(|b| (b.digest, b.size, b.path.clone())));
        let mut files = {
            let present = self.present.lock().unwrap_or_else(|e| e.into_inner());
            all.iter().filter(|(d, _, _)| !present.contains(d)).cloned().collect::<Vec<_>>()
        };
        let manifest = record_manifest(blobs, record)?;
        let digest = Sha256::of(&manifest);
        let target = format!("{}:{}", self.repo, OciCache::tag(drv));
        let manifests = [(digest, MANIFEST_MEDIA_TYPE.to_string(), manifest)];
        let reg = self.registry()?;
        // Records are pushed a few at a time, and they share blobs (at least the empty config):
        // a registry can briefly call a blob another push is committing unknown. Once more,
        // checking every blob, before giving up on the cache.
        let pushed = reg.push(&target, &files, &manifests, &[]).or_else(|_| {
            std::thread::sleep(std::time::Duration::from_millis(200));
            files = all;
            reg.push(&target, &files, &manifests, &[])
        });
        pushed.map_err(|e| e.to_string())?;
        self.present.lock().unwrap_or_else(|e| e.into_inner()).extend(files.iter().map(|(d, _, _)| *d));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> Arc<Clients> {
        Arc::new(Clients::with_env(&[], false, Box::new(|_| None), None))
    }

    #[test]
    fn record_round_trips_through_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"a").unwrap();
        let blobs = [
            BlobFile { digest: Sha256::of(b"a"), size: 1, media_type: "application/octet-stream".into(), path: small },
            BlobFile {
                digest: Sha256::of(b"big"),
                size: INLINE_MAX + 1,
                media_type: "application/octet-stream".into(),
                path: "/nonexistent".into(),
            },
        ];
        let m = record_manifest(&blobs, br#"{"version":1}"#).unwrap();
        let (record, inline) = record_of(&m).unwrap();
        assert_eq!(record, br#"{"version":1}"#);
        assert_eq!(inline, vec![(Sha256::of(b"a"), b"a".to_vec())], "only the small blob is embedded");
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["layers"][0]["digest"], Sha256::of(b"a").to_string());
        assert_eq!(v["layers"][1]["size"], INLINE_MAX + 1);
        assert_eq!(record_of(br#"{"annotations":{"dev.compose.record":"x"}}"#), None);
    }

    #[test]
    fn refuses_tags_and_digests() {
        assert!(OciCache::new("127.0.0.1:5000/cache", clients()).is_ok());
        assert!(OciCache::new("127.0.0.1:5000/cache:tag", clients()).is_err());
        assert!(OciCache::new("127.0.0.1:5000", clients()).is_err());
        assert!(OciCache::new("localhost/a/b-c", clients()).is_ok());
        assert!(OciCache::new("reg.example/Upper", clients()).is_err());
        assert!(OciCache::new("reg.example/x@sha256:00", clients()).is_err());
        assert!(OciCache::new("reg.example/x//y", clients()).is_err());
    }
}
