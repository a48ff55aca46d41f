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
//!   one manifest request.
//!
//! Credentials are the registry credentials (docker/podman auth files, credential helpers);
//! `--insecure-registry` applies. Requests use short time-outs.

use std::io::Write;
use std::time::Duration;

use super::{BlobError, BlobFile, RemoteError};
use crate::hash::{DrvHash, Sha256};
use crate::registry::{Registry, RegistryError, RegistryOptions};
use crate::store::Store;

pub const RECORD_ARTIFACT_TYPE: &str = "application/vnd.compose.record.v1+json";
pub const RECORD_ANNOTATION: &str = "dev.compose.record";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A registry cache.
pub struct OciCache {
    /// `REGISTRY/REPO`.
    repo: String,
    shown: String,
    registry: Registry,
}

impl OciCache {
    /// `rest` is the URL without `oci://`: `REGISTRY/REPO`.
    pub fn new(rest: &str, insecure: &[String]) -> Result<OciCache, RemoteError> {
        let url = format!("oci://{rest}");
        let bad = |message: String| RemoteError::Failed { url: url.clone(), message };
        let repo = rest.trim_end_matches('/').to_string();
        // Validates REGISTRY/REPO (no tag, no digest).
        crate::registry::parse_reference(&repo).map_err(|e| bad(e.to_string()))?;
        if repo.contains('@') || repo.rsplit('/').next().is_some_and(|last| last.contains(':')) || !repo.contains('/') {
            return Err(bad("expected oci://REGISTRY/REPOSITORY, without a tag or digest".to_string()));
        }
        let env = |name: &str| std::env::var(name).ok();
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        let auth = crate::registry::AuthConfig::from_env(&env, home.as_deref()).map_err(|e| bad(e.to_string()))?;
        let registry = Registry::new(RegistryOptions {
            insecure: insecure.to_vec(),
            auth,
            timeouts: Some((Duration::from_secs(3), Duration::from_secs(30))),
        })
        .map_err(|e| bad(e.to_string()))?;
        Ok(OciCache { shown: url.clone(), repo, registry })
    }

    fn tag(drv: &DrvHash) -> String {
        format!("compose-{}", drv.hex())
    }
}

/// The manifest that records `drv`: outputs as layers, the record as an annotation.
pub fn record_manifest(blobs: &[BlobFile], record: &[u8]) -> Result<Vec<u8>, String> {
    let record = std::str::from_utf8(record).map_err(|e| e.to_string())?;
    let layers: Vec<serde_json::Value> = blobs
        .iter()
        .map(|b| serde_json::json!({"mediaType": b.media_type, "digest": b.digest.to_string(), "size": b.size}))
        .collect();
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

/// The record held by a record manifest.
pub fn record_of(manifest: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    if v.get("artifactType").and_then(|t| t.as_str()) != Some(RECORD_ARTIFACT_TYPE) {
        return None;
    }
    Some(v.get("annotations")?.get(RECORD_ANNOTATION)?.as_str()?.as_bytes().to_vec())
}

impl super::Backend for OciCache {
    fn describe(&self) -> &str {
        &self.shown
    }

    fn get_record(&self, drv: &DrvHash) -> Result<Option<Vec<u8>>, String> {
        match self.registry.resolve(&format!("{}:{}", self.repo, OciCache::tag(drv))) {
            Ok(f) => Ok(record_of(&f.bytes)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn get_blob(&self, digest: &Sha256, size: u64, sink: &mut dyn Write) -> Result<bool, BlobError> {
        match self.registry.blob(&self.repo, digest, Some(size), sink) {
            Ok(_) => Ok(true),
            Err(RegistryError::NotFound { .. }) => Ok(false),
            Err(e @ (RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } | RegistryError::Sink { .. })) => {
                Err(BlobError::Damaged(e.to_string()))
            }
            Err(e) => Err(BlobError::Down(e.to_string())),
        }
    }

    fn put(&self, store: &Store, drv: &DrvHash, blobs: &[BlobFile], record: &[u8]) -> Result<(), String> {
        let empty = store.put_bytes(b"{}").map_err(|e| e.to_string())?;
        let mut files: Vec<(Sha256, u64, std::path::PathBuf)> = vec![(empty, 2, store.blob_path(&empty))];
        files.extend(blobs.iter().map(|b| (b.digest, b.size, b.path.clone())));
        let manifest = record_manifest(blobs, record)?;
        let digest = Sha256::of(&manifest);
        let target = format!("{}:{}", self.repo, OciCache::tag(drv));
        self.registry
            .push(&target, &files, &[(digest, MANIFEST_MEDIA_TYPE.to_string(), manifest)], &[])
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_the_manifest() {
        let blobs = [BlobFile { digest: Sha256::of(b"a"), size: 1, media_type: "application/octet-stream".into(), path: "/x".into() }];
        let m = record_manifest(&blobs, br#"{"version":1}"#).unwrap();
        assert_eq!(record_of(&m).unwrap(), br#"{"version":1}"#);
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["layers"][0]["digest"], Sha256::of(b"a").to_string());
        assert_eq!(record_of(br#"{"annotations":{"dev.compose.record":"x"}}"#), None);
    }

    #[test]
    fn refuses_tags_and_digests() {
        assert!(OciCache::new("127.0.0.1:5000/cache", &[]).is_ok());
        assert!(OciCache::new("127.0.0.1:5000/cache:tag", &[]).is_err());
        assert!(OciCache::new("127.0.0.1:5000", &[]).is_err());
    }
}
