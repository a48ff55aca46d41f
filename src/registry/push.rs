//! Pushing an image: the checks of what is given to push, then the blobs (those already there
//! skipped, others mounted from another repository of the registry or uploaded, streamed from
//! their files and hashed on the way) and the manifests, the last one by tag.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::{stream, Stream, StreamExt, TryStreamExt};
use oci_client::errors::OciDistributionError;
use oci_client::{Reference, RegistryOperation};
use sha2::Digest as _;
use tokio::io::AsyncReadExt;

use super::{auth, lock, parse_reference, parse_repo, ParsedRef, PushReport, Registry, RegistryError, Target};
use crate::hash::Sha256;

/// Blob existence checks (HEAD) and mount attempts in flight at once.
const CHECK_CONCURRENCY: usize = 8;
/// Blob uploads in flight at once; each holds at most a few chunks in memory.
const UPLOAD_CONCURRENCY: usize = 4;
/// Bytes read from a file per upload chunk.
const UPLOAD_CHUNK: usize = 1 << 20;

/// What an upload stream saw of its file.
struct Upload {
    hasher: sha2::Sha256,
    size: u64,
    error: Option<io::Error>,
}

/// The chunks of `file`, hashed and counted into `state` on the way out.
fn file_stream(
    file: tokio::fs::File,
    state: Arc<Mutex<Upload>>,
) -> impl Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static {
    stream::unfold(Some(file), move |file| {
        let state = state.clone();
        async move {
            let mut file = file?;
            let mut buf = bytes::BytesMut::with_capacity(UPLOAD_CHUNK);
            match file.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => {
                    let chunk = buf.freeze();
                    {
                        let mut s = lock(&state);
                        s.hasher.update(&chunk);
                        s.size += chunk.len() as u64;
                    }
                    Some((Ok(chunk), Some(file)))
                }
                Err(e) => {
                    let err = OciDistributionError::IoError(io::Error::new(e.kind(), e.to_string()));
                    lock(&state).error = Some(e);
                    Some((Err(err), None))
                }
            }
        }
    })
}

impl Registry {
    /// Push an image to `target` (`REGISTRY/REPO:TAG`).
    ///
    /// `blobs` are (digest, size, file holding it); `manifests` are (digest, media type, exact
    /// bytes), children before the index, the last one being tagged. Blobs the repository
    /// already has are skipped (checked concurrently); the others are mounted from the first
    /// repository of `mount_from` (`REGISTRY/REPO`, same registry) that has them, or uploaded,
    /// streamed from their files, a few at a time. Then the manifests are pushed, children by
    /// digest and the last one by tag. Running it again after an interruption finishes the job.
    pub fn push(
        &self,
        target: &str,
        blobs: &[(Sha256, u64, PathBuf)],
        manifests: &[(Sha256, String, Vec<u8>)],
        mount_from: &[String],
    ) -> Result<PushReport, RegistryError> {
        let parsed = parse_reference(target)?;
        // Check the inputs before touching the network.
        let (last_digest, content_types) = checked_manifests(target, &parsed, manifests)?;
        let unique = unique_blobs(target, blobs)?;
        let sources = mount_sources(&parsed, mount_from)?;

        let t = self.target(parsed.to_oci(), target.to_string())?;
        let blob_target = |digest: &Sha256| t.for_reference(parsed.to_oci(), format!("blob {digest} of {target}"));

        self.block_on(async {
            self.ensure_auth(&t, RegistryOperation::Push).await?;
            self.ensure_auth(&t, RegistryOperation::Pull).await?;

            // 1. Which blobs are there already.
            let present: Vec<bool> = stream::iter(unique.iter())
                .map(|(digest, _, _)| {
                    let bt = blob_target(digest);
                    async move { self.client.blob_exists(&bt.reference, &digest.to_string()).await.map_err(|e| bt.err(e)) }
                })
                .buffered(CHECK_CONCURRENCY)
                .try_collect()
                .await?;
            let existing = present.iter().filter(|p| **p).count();
            let missing: Vec<&(Sha256, u64, PathBuf)> = unique.iter().zip(&present).filter(|(_, p)| !**p).map(|(b, _)| *b).collect();

            // 2. Mount what another repository of the registry has.
            let mounted: Vec<bool> = stream::iter(missing.iter())
                .map(|(digest, _, _)| self.try_mount(&t, &sources, digest))
                .buffered(CHECK_CONCURRENCY)
                .try_collect()
                .await?;
            let to_upload: Vec<&(Sha256, u64, PathBuf)> = missing.iter().zip(&mounted).filter(|(_, m)| !**m).map(|(b, _)| *b).collect();
            let mounted = mounted.iter().filter(|m| **m).count();

            // 3. Upload the rest, streamed from the files.
            let uploaded_bytes: u64 = stream::iter(to_upload.iter())
                .map(|(digest, size, path)| {
                    let bt = blob_target(digest);
                    async move { self.upload(&bt, digest, *size, path).await }
                })
                .buffer_unordered(UPLOAD_CONCURRENCY)
                .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
                .await?;

            // 4. Manifests with their exact bytes; the last one by tag.
            self.push_manifests(&t, &parsed, target, manifests, content_types).await?;

            Ok(PushReport { uploaded: to_upload.len(), mounted, existing, uploaded_bytes, digest: *last_digest })
        })
    }

    /// Pushes `manifests` with their exact bytes, children by digest and the last one by tag.
    async fn push_manifests(
        &self,
        t: &Target,
        parsed: &ParsedRef,
        target: &str,
        manifests: &[(Sha256, String, Vec<u8>)],
        content_types: Vec<http::HeaderValue>,
    ) -> Result<(), RegistryError> {
        let count = manifests.len();
        for (i, ((digest, _, bytes), ct)) in manifests.iter().zip(content_types).enumerate() {
            let reference = match (&parsed.tag, i + 1 == count) {
                // The last one by tag (also when the target names the digest too).
                (Some(tag), true) => Reference::with_tag(parsed.registry.clone(), parsed.repository.clone(), tag.clone()),
                (None, true) if parsed.digest.is_none() => parsed.with_tag_latest(),
                _ => parsed.with_digest(digest),
            };
            let mt = t.for_reference(reference, format!("manifest {digest} of {target}"));
            let location = self.client.push_manifest_raw(&mt.reference, bytes.clone(), ct).await.map_err(|e| mt.err(e))?;
            check_location(&location, digest, &mt)?;
        }
        Ok(())
    }

    /// Mount `digest` into the target repository from the first source that has it.
    async fn try_mount(&self, t: &Target, sources: &[ParsedRef], digest: &Sha256) -> Result<bool, RegistryError> {
        for src in sources {
            let st = t.for_reference(src.to_oci(), format!("blob {digest} of {}", src.repo()));
            let has = match self.client.blob_exists(&st.reference, &digest.to_string()).await {
                Ok(has) => has,
                Err(e) => match st.err(e) {
                    e @ RegistryError::Network { .. } => return Err(e),
                    // No access to the source: just do not mount from it.
                    _ => false,
                },
            };
            if !has {
                continue;
            }
            match self.client.mount_blob(&t.reference, &st.reference, &digest.to_string()).await {
                Ok(()) => return Ok(true),
                Err(e) => match t.err(e) {
                    e @ RegistryError::Network { .. } => return Err(e),
                    // 202 (the registry opened an upload instead) or a refusal: upload it.
                    _ => continue,
                },
            }
        }
        Ok(false)
    }

    /// Upload one blob from its file in a single streamed PUT; returns its size.
    async fn upload(&self, t: &Target, digest: &Sha256, size: u64, path: &Path) -> Result<u64, RegistryError> {
        let file_err = |source: io::Error| RegistryError::File { path: path.to_path_buf(), reference: t.shown.clone(), source };
        let file = tokio::fs::File::open(path).await.map_err(file_err)?;
        let state = Arc::new(Mutex::new(Upload { hasher: sha2::Sha256::new(), size: 0, error: None }));
        let result = self.client.push_blob_stream(&t.reference, file_stream(file, state.clone()), &digest.to_string(), Some(size)).await;
        // What was read decides first: a file that does not hold the blob explains any refusal.
        let (error, sent, actual) = {
            let mut s = lock(&state);
            let hasher = std::mem::take(&mut s.hasher);
            (s.error.take(), s.size, Sha256(hasher.finalize().into()))
        };
        if let Some(e) = error {
            return Err(file_err(e));
        }
        let complete = result.is_ok() || sent == size;
        if complete && sent != size {
            return Err(RegistryError::SizeMismatch {
                reference: t.shown.clone(),
                what: format!("the file {}", path.display()),
                expected: size,
                actual: sent,
            });
        }
        if complete && actual != *digest {
            return Err(RegistryError::DigestMismatch {
                reference: t.shown.clone(),
                what: format!("the file {}", path.display()),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        result.map_err(|e| t.err(e))?;
        Ok(size)
    }
}

/// The manifests given to push, checked: one at least, the last one the digest the target
/// names (if it names one), each the digest of its bytes; returns the last one's digest and
/// each one's media type as a header.
fn checked_manifests<'m>(
    target: &str,
    parsed: &ParsedRef,
    manifests: &'m [(Sha256, String, Vec<u8>)],
) -> Result<(&'m Sha256, Vec<http::HeaderValue>), RegistryError> {
    let invalid = |reason: String| RegistryError::InvalidPush { reference: target.to_string(), reason };
    let Some((last_digest, _, _)) = manifests.last() else {
        return Err(invalid("no manifest to push".to_string()));
    };
    if let Some(d) = &parsed.digest {
        if d != last_digest {
            return Err(invalid(format!("the reference names {d} but the last manifest is {last_digest}")));
        }
    }
    let mut content_types = Vec::with_capacity(manifests.len());
    for (digest, media_type, bytes) in manifests {
        let actual = Sha256::of(bytes);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                reference: target.to_string(),
                what: "a manifest given to push".to_string(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let ct = http::HeaderValue::from_str(media_type)
            .map_err(|_| invalid(format!("media type `{media_type}` of {digest} is not a header value")))?;
        content_types.push(ct);
    }
    Ok((last_digest, content_types))
}

/// The blobs given to push, each once, checked to be in their files at their sizes.
fn unique_blobs<'b>(target: &str, blobs: &'b [(Sha256, u64, PathBuf)]) -> Result<Vec<&'b (Sha256, u64, PathBuf)>, RegistryError> {
    let mut seen = HashSet::new();
    let mut unique: Vec<&(Sha256, u64, PathBuf)> = Vec::new();
    for blob in blobs {
        if seen.insert(blob.0) {
            let (digest, size, path) = blob;
            let meta = std::fs::metadata(path).map_err(|source| RegistryError::File {
                path: path.clone(),
                reference: target.to_string(),
                source,
            })?;
            if meta.len() != *size {
                return Err(RegistryError::SizeMismatch {
                    reference: target.to_string(),
                    what: format!("blob {digest} in {}", path.display()),
                    expected: *size,
                    actual: meta.len(),
                });
            }
            unique.push(blob);
        }
    }
    Ok(unique)
}

/// The repositories of `mount_from` blobs can be mounted from: on the target's registry, not
/// the target itself, each once.
fn mount_sources(parsed: &ParsedRef, mount_from: &[String]) -> Result<Vec<ParsedRef>, RegistryError> {
    let mut sources = Vec::new();
    for m in mount_from {
        let src = parse_repo(m)?;
        let same_registry = auth::normalize_registry(&src.registry) == auth::normalize_registry(&parsed.registry);
        if same_registry && src.repository != parsed.repository && !sources.contains(&src) {
            sources.push(src);
        }
    }
    Ok(sources)
}

/// The registry says where it stored a manifest; when that names a digest, it must be ours.
fn check_location(location: &str, digest: &Sha256, t: &Target) -> Result<(), RegistryError> {
    if let Some((_, rest)) = location.rsplit_once("/manifests/sha256:") {
        let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        if let Ok(stored) = Sha256::from_hex(&hex) {
            if stored != *digest {
                return Err(RegistryError::DigestMismatch {
                    reference: t.shown.clone(),
                    what: "the manifest as stored by the registry".to_string(),
                    expected: digest.to_string(),
                    actual: stored.to_string(),
                });
            }
        }
    }
    Ok(())
}
