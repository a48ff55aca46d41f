//! OCI registry client: resolve references, fetch manifests and blobs, push images.
//!
//! Owns: [`Registry`] (a blocking façade over one small tokio runtime and one `oci-client`
//! [`Client`], safe to share between rayon workers), [`parse_reference`], [`AuthConfig`]
//! (credentials from the docker/podman files and credential helpers) and
//! [`RegistryError`]; the push itself, its checks, mounts and streamed uploads, in `push`.
//!
//! Everything is streamed and verified: manifests are checked against the digest they were asked
//! by, blobs are hashed and counted as they are written to the caller's sink, uploads are read
//! from files a chunk at a time and hashed on the way out, and manifests are pushed with their
//! exact bytes (never re-serialized), so what the registry stores is byte-for-byte what was
//! built. A push is idempotent: blobs the registry already has are skipped, so a push that was
//! interrupted can simply be run again.
//!
//! What comes from `oci-client`: the distribution-API requests (`pull_manifest_raw`,
//! `pull_blob_stream`, `blob_exists`, `mount_blob`, `push_blob_stream` as a monolithic streamed
//! `PUT`, `push_manifest_raw`) and the authentication handshake (`auth`: HTTP basic or the bearer
//! token flow, with its token cache). Nothing is done with raw HTTP.
//!
//! Known limits: on registries with bearer tokens (Docker Hub, GHCR, …) a cross-repository
//! mount falls back to an upload, because `oci-client` asks for a token scoped to the target
//! repository only; on registries without any authentication, `oci-client` re-probes `/v2/`
//! before each request (one extra round trip each); identity tokens from `docker login` via
//! OAuth are not supported.

mod auth;
mod push;

pub use auth::AuthConfig;
use auth::Credential;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::Digest as _;

use crate::hash::Sha256;

/// Manifest media types asked for when resolving.
const MANIFEST_TYPES: &[&str] =
    &[OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE];

/// What can go wrong talking to a registry. Every variant names the reference involved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("authentication to {registry} failed for {reference}: check the credentials in {credentials}")]
    Unauthorized { registry: String, reference: String, credentials: String },
    #[error("{registry} denied access to {reference} (HTTP 403): the credentials in {credentials} lack the permission")]
    Forbidden { registry: String, reference: String, credentials: String },
    #[error("{reference} not found")]
    NotFound { reference: String },
    #[error("cannot reach registry {registry} for {reference}: {cause}")]
    Network { registry: String, reference: String, cause: String },
    #[error("digest mismatch for {what} of {reference}: expected {expected}, got {actual}")]
    DigestMismatch { reference: String, what: String, expected: String, actual: String },
    #[error("size mismatch for {what} of {reference}: expected {expected} bytes, got {actual}")]
    SizeMismatch { reference: String, what: String, expected: u64, actual: u64 },
    #[error("invalid image reference `{reference}`: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("cannot read registry credentials from {}: {reason}", path.display())]
    AuthConfig { path: PathBuf, reason: String },
    #[error("credential helper `{helper}` (configured in {}) failed for {registry}: {reason}", file.display())]
    CredentialHelper { helper: String, registry: String, file: PathBuf, reason: String },
    #[error("registry {registry} answered {} for {reference}: {detail}", status_text(*status))]
    Protocol { registry: String, reference: String, status: Option<u16>, detail: String },
    #[error("cannot read {} to push {reference}", path.display())]
    File {
        path: PathBuf,
        reference: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write blob {digest} of {reference}")]
    Sink {
        digest: String,
        reference: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot push {reference}: {reason}")]
    InvalidPush { reference: String, reason: String },
    #[error("cannot set up the registry client: {0}")]
    Setup(String),
}

fn status_text(status: Option<u16>) -> String {
    match status {
        Some(code) => format!("HTTP {code}"),
        None => "unexpectedly".to_string(),
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP instead of HTTPS.
    pub insecure: Vec<String>,
    pub auth: AuthConfig,
    /// (connect, read) time-outs; the defaults suit pulls and pushes of large layers.
    pub timeouts: Option<(Duration, Duration)>,
}

/// A manifest or index with its digest and exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub digest: Sha256,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// What [`Registry::push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// Blobs sent in full.
    pub uploaded: usize,
    /// Blobs mounted from another repository of the same registry.
    pub mounted: usize,
    /// Blobs the target repository already had.
    pub existing: usize,
    pub uploaded_bytes: u64,
    /// Digest of the tagged manifest (the last one pushed).
    pub digest: Sha256,
}

/// A parsed image reference: `[REGISTRY/]REPOSITORY[:TAG][@sha256:…]`, with Docker Hub's
/// defaults (`docker.io`, `library/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRef {
    pub registry: String,
    pub repository: String,
    /// `None` when the reference names no tag (`latest` is then used where one is needed).
    pub tag: Option<String>,
    pub digest: Option<Sha256>,
}

impl ParsedRef {
    /// `REGISTRY/REPOSITORY`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    fn to_oci(&self) -> Reference {
        let (reg, repo) = (self.registry.clone(), self.repository.clone());
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => Reference::with_tag_and_digest(reg, repo, t.clone(), d.to_string()),
            (None, Some(d)) => Reference::with_digest(reg, repo, d.to_string()),
            (t, None) => Reference::with_tag(reg, repo, t.clone().unwrap_or_else(|| "latest".into())),
        }
    }

    /// The repository alone (blob requests ignore the tag).
    fn with_tag_latest(&self) -> Reference {
        Reference::with_tag(self.registry.clone(), self.repository.clone(), "latest".to_string())
    }

    fn with_digest(&self, digest: &Sha256) -> Reference {
        Reference::with_digest(self.registry.clone(), self.repository.clone(), digest.to_string())
    }
}

impl fmt::Display for ParsedRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Parse `[REGISTRY/]REPOSITORY[:TAG][@sha256:HEX]`. Only sha256 digests are accepted.
pub fn parse_reference(s: &str) -> Result<ParsedRef, RegistryError> {
    if let Some(p) = parse_explicit(s) {
        return Ok(p);
    }
    let bad = |reason: String| RegistryError::BadReference { reference: s.to_string(), reason };
    let r: Reference = s.parse().map_err(|e: oci_client::ParseError| bad(e.to_string()))?;
    let digest = match r.digest() {
        None => None,
        Some(d) => Some(d.parse::<Sha256>().map_err(|e| bad(e.to_string()))?),
    };
    if !repository_ok(r.repository()) {
        return Err(bad(format!("repository `{}` must be lower-case letters, digits and separators", r.repository())));
    }
    // oci-spec fills in `latest`; keep only a tag that was written.
    let name = s.split('@').next().unwrap_or(s);
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = if last.contains(':') { r.tag().map(str::to_string) } else { None };
    Ok(ParsedRef { registry: r.registry().to_string(), repository: r.repository().to_string(), tag, digest })
}

/// The common, unambiguous form `HOST[:PORT]/REPO/SITORY[:TAG][@sha256:HEX]` (a host with a
/// dot or a port, or `localhost`; not Docker Hub), parsed without `oci-client`'s reference
/// grammar, whose regex takes tens of milliseconds to compile: a remote cache's first lookup
/// should not pay that. Anything else (or anything odd) is left to the full parser.
fn parse_explicit(s: &str) -> Option<ParsedRef> {
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => {
            let hex = d.strip_prefix("sha256:")?;
            if !crate::hash::is_sha256_hex(hex) {
                return None;
            }
            (n, Some(Sha256::from_hex(hex).ok()?))
        }
        None => (s, None),
    };
    let (host, path) = name.split_once('/')?;
    let host_ok = crate::reference::names_registry(host)
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
        && !matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    if !host_ok {
        return None;
    }
    let (repository, tag) = match path.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (path, None),
    };
    let tag_ok = tag.is_none_or(crate::reference::valid_tag);
    (repository_ok(repository) && tag_ok).then(|| ParsedRef {
        registry: host.to_string(),
        repository: repository.to_string(),
        tag: tag.map(str::to_string),
        digest,
    })
}

use crate::reference::valid_repository as repository_ok;

/// Parse `REGISTRY/REPOSITORY` (no tag, no digest).
pub fn parse_repo(s: &str) -> Result<ParsedRef, RegistryError> {
    let parsed = parse_reference(s)?;
    if parsed.tag.is_some() || parsed.digest.is_some() {
        return Err(RegistryError::BadReference {
            reference: s.to_string(),
            reason: "expected REGISTRY/REPOSITORY, without a tag or digest".to_string(),
        });
    }
    Ok(parsed)
}

/// One registry conversation: the reference as shown in errors, and the credentials used.
struct Target {
    reference: Reference,
    registry: String,
    shown: String,
    auth: RegistryAuth,
    /// Where the credentials came from, for "check the credentials in …".
    credentials: String,
}

impl Target {
    fn err(&self, e: OciDistributionError) -> RegistryError {
        classify(e, &self.registry, &self.shown, &self.credentials)
    }

    fn for_reference(&self, reference: Reference, shown: String) -> Target {
        Target { reference, registry: self.registry.clone(), shown, auth: self.auth.clone(), credentials: self.credentials.clone() }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn classify(e: OciDistributionError, registry: &str, reference: &str, credentials: &str) -> RegistryError {
    use OciDistributionError as E;
    let unauthorized = || RegistryError::Unauthorized {
        registry: registry.to_string(),
        reference: reference.to_string(),
        credentials: credentials.to_string(),
    };
    let forbidden = || RegistryError::Forbidden {
        registry: registry.to_string(),
        reference: reference.to_string(),
        credentials: credentials.to_string(),
    };
    let not_found = || RegistryError::NotFound { reference: reference.to_string() };
    let protocol = |status: Option<u16>, detail: String| RegistryError::Protocol {
        registry: registry.to_string(),
        reference: reference.to_string(),
        status,
        detail,
    };
    let network = |cause: String| RegistryError::Network { registry: registry.to_string(), reference: reference.to_string(), cause };
    let mismatch = |expected: String, actual: String| RegistryError::DigestMismatch {
        reference: reference.to_string(),
        what: "the content sent by the registry".to_string(),
        expected,
        actual,
    };
    let by_status = |code: u16, detail: String| match code {
        401 => unauthorized(),
        403 => forbidden(),
        404 => not_found(),
        _ => protocol(Some(code), detail),
    };
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => unauthorized(),
        E::ServerError { code, message, .. } => by_status(code, message),
        E::RegistryError { envelope, .. } => match envelope.errors.first().map(|x| &x.code) {
            Some(OciErrorCode::Unauthorized) => unauthorized(),
            Some(OciErrorCode::Denied) => forbidden(),
            Some(OciErrorCode::BlobUnknown | OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound) => {
                not_found()
            }
            _ => protocol(None, envelope.to_string()),
        },
        E::RequestError(re) => match re.status() {
            Some(status) => by_status(status.as_u16(), re.to_string()),
            None => network(root_cause(&re)),
        },
        E::DigestError(DigestError::VerificationError { expected, actual }) => mismatch(expected, actual),
        E::IoError(io) => match io.get_ref().and_then(|inner| inner.downcast_ref::<DigestError>()) {
            Some(DigestError::VerificationError { expected, actual }) => mismatch(expected.clone(), actual.clone()),
            _ => network(root_cause(&io)),
        },
        other => protocol(None, other.to_string()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Media type of a manifest: its `mediaType` field, else guessed from its shape.
fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    Some(match (probe.media_type, probe.manifests) {
        (Some(m), _) => m,
        (None, Some(_)) => OCI_IMAGE_INDEX_MEDIA_TYPE.to_string(),
        (None, None) => OCI_IMAGE_MEDIA_TYPE.to_string(),
    })
}

/// A blocking OCI registry client. Create one and share it (it is `Send + Sync`); do not call
/// it from inside an async runtime.
pub struct Registry {
    runtime: tokio::runtime::Runtime,
    client: Client,
    auth: AuthConfig,
    /// Credentials per normalized registry, looked up once (helpers are slow).
    creds: Mutex<HashMap<String, Option<Credential>>>,
    /// (registry, repository, push?) for which `Client::auth` has succeeded.
    authed: Mutex<HashSet<(String, String, bool)>>,
    /// Plain-HTTP registries (normalized), and whether each asks for no authentication at all.
    insecure: Vec<String>,
    open: Mutex<HashMap<String, bool>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("auth", &self.auth).finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new(opts: RegistryOptions) -> Result<Registry, RegistryError> {
        // rustls needs a process-wide crypto provider; ring keeps the build small.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("registry-io")
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Setup(format!("cannot start the I/O runtime: {e}")))?;
        let insecure: Vec<String> = opts
            .insecure
            .iter()
            .map(|h| {
                let h = h.trim();
                h.strip_prefix("http://").unwrap_or(h).trim_end_matches('/').to_string()
            })
            .collect();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure.clone()),
            use_monolithic_push: true,
            platform_resolver: None,
            connect_timeout: Some(opts.timeouts.map_or(Duration::from_secs(30), |t| t.0)),
            read_timeout: Some(opts.timeouts.map_or(Duration::from_secs(300), |t| t.1)),
            user_agent: concat!("compose/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| RegistryError::Setup(e.to_string()))?;
        Ok(Registry {
            runtime,
            client,
            auth: opts.auth,
            creds: Mutex::new(HashMap::new()),
            authed: Mutex::new(HashSet::new()),
            insecure,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn credential(&self, registry: &str) -> Result<Option<Credential>, RegistryError> {
        let key = auth::normalize_registry(registry);
        if let Some(c) = lock(&self.creds).get(&key) {
            return Ok(c.clone());
        }
        let found = self.auth.lookup(&key)?;
        lock(&self.creds).insert(key, found.clone());
        Ok(found)
    }

    fn target(&self, reference: Reference, shown: String) -> Result<Target, RegistryError> {
        let registry = reference.registry().to_string();
        let cred = self.credential(&registry)?;
        let (auth, credentials) = match cred {
            Some(c) => (RegistryAuth::Basic(c.user, c.secret), c.source),
            // `oci-client` asks `/v2/` before every request to a registry that never issues a
            // token; an empty bearer token (which such a registry ignores) spares those.
            None if self.is_open(&registry) => (RegistryAuth::Bearer(String::new()), self.auth.describe_missing(&registry)),
            None => (RegistryAuth::Anonymous, self.auth.describe_missing(&registry)),
        };
        Ok(Target { reference, registry, shown, auth, credentials })
    }

    /// Does plain-HTTP registry `registry` answer `GET /v2/` with 200 and no authentication
    /// challenge? Asked once, over a bare HTTP/1.0 request (no TLS is involved); HTTPS
    /// registries are never assumed open.
    fn is_open(&self, registry: &str) -> bool {
        if !self.insecure.iter().any(|h| h == registry) {
            return false;
        }
        // Held across the probe: threads starting together ask once between them.
        let mut known = lock(&self.open);
        *known.entry(registry.to_string()).or_insert_with(|| probe_open(registry))
    }

    /// Authenticate once per (registry, repository, operation); tokens are then renewed by the
    /// client from the stored credentials.
    async fn ensure_auth(&self, t: &Target, op: RegistryOperation) -> Result<(), RegistryError> {
        let key = (t.reference.resolve_registry().to_string(), t.reference.repository().to_string(), op == RegistryOperation::Push);
        if lock(&self.authed).contains(&key) {
            return Ok(());
        }
        self.client.auth(&t.reference, &t.auth, op).await.map_err(|e| t.err(e))?;
        lock(&self.authed).insert(key);
        Ok(())
    }

    /// Resolve a reference (`REGISTRY/REPO:TAG` or `…@sha256:…`) to the digest, media type and
    /// exact bytes of the manifest or index it names. With a digest in the reference, the bytes
    /// are verified against it.
    pub fn resolve(&self, reference: &str) -> Result<Fetched, RegistryError> {
        let parsed = parse_reference(reference)?;
        let t = self.target(parsed.to_oci(), reference.to_string())?;
        self.fetch_manifest(&t, parsed.digest)
    }

    /// Fetch a manifest or index of `repo_ref` (`REGISTRY/REPO`) by digest (bytes verified).
    pub fn manifest(&self, repo_ref: &str, digest: &Sha256) -> Result<Fetched, RegistryError> {
        let parsed = parse_repo(repo_ref)?;
        let t = self.target(parsed.with_digest(digest), format!("{repo_ref}@{digest}"))?;
        self.fetch_manifest(&t, Some(*digest))
    }

    fn fetch_manifest(&self, t: &Target, expect: Option<Sha256>) -> Result<Fetched, RegistryError> {
        let bytes = self.block_on(async {
            self.ensure_auth(t, RegistryOperation::Pull).await?;
            let (bytes, _) = self.client.pull_manifest_raw(&t.reference, &t.auth, MANIFEST_TYPES).await.map_err(|e| t.err(e))?;
            Ok::<_, RegistryError>(bytes)
        })?;
        let digest = Sha256::of(&bytes);
        if let Some(expected) = expect {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    reference: t.shown.clone(),
                    what: "the manifest".to_string(),
                    expected: expected.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        let media_type = media_type_of(&bytes).ok_or_else(|| RegistryError::Protocol {
            registry: t.registry.clone(),
            reference: t.shown.clone(),
            status: None,
            detail: "the manifest is not a JSON object".to_string(),
        })?;
        Ok(Fetched { digest, media_type, bytes: bytes.to_vec() })
    }

    /// Does `repo_ref` (`REGISTRY/REPO`) have blob `digest`? (A HEAD request.)
    pub fn has_blob(&self, repo_ref: &str, digest: &Sha256) -> Result<bool, RegistryError> {
        let parsed = parse_repo(repo_ref)?;
        let t = self.target(parsed.with_tag_latest(), format!("blob {digest} of {repo_ref}"))?;
        self.block_on(async {
            self.ensure_auth(&t, RegistryOperation::Pull).await?;
            self.client.blob_exists(&t.reference, &digest.to_string()).await.map_err(|e| t.err(e))
        })
    }

    /// Stream blob `digest` of `repo_ref` (`REGISTRY/REPO`) into `sink`, verifying its sha256
    /// (and `size`, when given); returns the bytes written. On error the sink may hold part of
    /// the blob (or all of it, when the digest does not match): discard what it holds.
    pub fn blob(&self, repo_ref: &str, digest: &Sha256, size: Option<u64>, sink: &mut dyn Write) -> Result<u64, RegistryError> {
        let parsed = parse_repo(repo_ref)?;
        let shown = format!("blob {digest} of {repo_ref}");
        let t = self.target(parsed.with_tag_latest(), shown.clone())?;
        let digest_text = digest.to_string();
        let size_mismatch = |actual: u64| RegistryError::SizeMismatch {
            reference: shown.clone(),
            what: "the content".to_string(),
            expected: size.unwrap_or(0),
            actual,
        };
        let mut hasher = sha2::Sha256::new();
        let mut written: u64 = 0;
        self.block_on(async {
            self.ensure_auth(&t, RegistryOperation::Pull).await?;
            let mut body = self.client.pull_blob_stream(&t.reference, digest_text.as_str()).await.map_err(|e| t.err(e))?;
            if let (Some(expected), Some(announced)) = (size, body.content_length) {
                if expected != announced {
                    return Err(size_mismatch(announced));
                }
            }
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    // The stream's own verification fails at its end: report our digest.
                    Err(e) if e.get_ref().is_some_and(|i| i.is::<DigestError>()) => break,
                    Err(e) => return Err(t.err(OciDistributionError::IoError(e))),
                };
                written += chunk.len() as u64;
                if size.is_some_and(|s| written > s) {
                    return Err(size_mismatch(written));
                }
                hasher.update(&chunk);
                sink.write_all(&chunk).map_err(|source| RegistryError::Sink {
                    digest: digest_text.clone(),
                    reference: repo_ref.to_string(),
                    source,
                })?;
            }
            Ok(())
        })?;
        let actual = Sha256(hasher.finalize().into());
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                reference: shown,
                what: "the content".to_string(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        if size.is_some_and(|s| s != written) {
            return Err(size_mismatch(written));
        }
        sink.flush().map_err(|source| RegistryError::Sink { digest: digest_text, reference: repo_ref.to_string(), source })?;
        Ok(written)
    }
}

fn probe_open(registry: &str) -> bool {
    use std::io::Read;
    use std::net::{TcpStream, ToSocketAddrs};
    let Some(addr) = (if registry.contains(':') { registry.to_string() } else { format!("{registry}:80") })
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /v2/ HTTP/1.0\r\nHost: {registry}\r\nUser-Agent: compose/{}\r\n\r\n", env!("CARGO_PKG_VERSION"));
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status_ok = text.lines().next().is_some_and(|l| l.starts_with("http/1.") && l.split_whitespace().nth(1) == Some("200"));
    status_ok && !text.contains("\r\nwww-authenticate:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = parse_reference("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref(), r.digest), ("127.0.0.1:5000", "a/b", Some("v1"), None));
        assert_eq!(r.to_string(), "127.0.0.1:5000/a/b:v1");

        let hex = "ab".repeat(32);
        let r = parse_reference(&format!("localhost:5000/x@sha256:{hex}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.map(|d| d.hex()), Some(hex.clone()));

        let r = parse_reference(&format!("reg.example/x:t@sha256:{hex}")).unwrap();
        assert_eq!((r.tag.as_deref(), r.digest.is_some()), (Some("t"), true));

        let r = parse_reference("busybox").unwrap();
        assert_eq!(r.repo(), "docker.io/library/busybox");
        assert_eq!(r.tag, None);
        assert_eq!(r.to_oci().tag(), Some("latest"));

        let r = parse_reference("127.0.0.1:5000/repo").unwrap();
        assert_eq!((r.registry.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", None));

        for bad in ["", "UPPER/case", "reg.example/x@sha256:abc", "reg.example/x@md5:0123456789abcdef0123456789abcdef"] {
            let err = parse_reference(bad).unwrap_err();
            assert!(matches!(err, RegistryError::BadReference { .. }), "{bad}: {err}");
        }
        assert!(parse_repo("reg.example/x:t").is_err());
        assert!(parse_repo("reg.example/x").is_ok());
    }

    #[test]
    fn the_fast_parser_agrees_with_the_full_one() {
        let hex = "ab".repeat(32);
        for s in [
            "127.0.0.1:5000/a/b:v1".to_string(),
            "localhost:5000/x".to_string(),
            "localhost/x/y-z:1.0_rc".to_string(),
            "reg.example/team/app".to_string(),
            format!("reg.example/x:t@sha256:{hex}"),
            format!("reg.example:443/x@sha256:{hex}"),
            "ghcr.io/owner/repo__name:latest".to_string(),
        ] {
            let fast = parse_explicit(&s).unwrap_or_else(|| panic!("{s} not taken by the fast path"));
            let r: Reference = s.parse().unwrap();
            assert_eq!(fast.registry, r.registry(), "{s}");
            assert_eq!(fast.repository, r.repository(), "{s}");
            assert_eq!(
                fast.tag.as_deref(),
                if s.split('@').next().unwrap().rsplit('/').next().unwrap().contains(':') { r.tag() } else { None },
                "{s}"
            );
            assert_eq!(fast.digest.map(|d| d.to_string()).as_deref(), r.digest(), "{s}");
        }
        // Left to the full parser: Docker Hub, bare names, odd forms.
        for s in [
            "busybox",
            "library/busybox:1",
            "docker.io/busybox",
            "reg.example/Upper",
            "reg.example/x@md5:00",
            "[::1]:5000/x",
            "reg.example/a..b",
            "reg.example/a._b",
            "reg.example/a___b",
        ] {
            assert!(parse_explicit(s).is_none(), "{s}");
        }
    }

    #[test]
    fn media_types() {
        assert_eq!(media_type_of(br#"{"mediaType":"x/y"}"#).as_deref(), Some("x/y"));
        assert_eq!(media_type_of(br#"{"manifests":[]}"#).as_deref(), Some(OCI_IMAGE_INDEX_MEDIA_TYPE));
        assert_eq!(media_type_of(br#"{"layers":[]}"#).as_deref(), Some(OCI_IMAGE_MEDIA_TYPE));
        assert_eq!(media_type_of(b"[1]"), None);
    }

    #[test]
    fn registry_is_shareable() {
        fn check<T: Send + Sync>() {}
        check::<Registry>();
    }

    #[test]
    fn rejects_bad_push_input_offline() {
        let reg = Registry::new(RegistryOptions::default()).unwrap();
        let m = b"{}".to_vec();
        let wrong = Sha256::of(b"other");
        let err = reg.push("127.0.0.1:1/x:t", &[], &[(wrong, "application/json".into(), m)], &[]).unwrap_err();
        assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
        let err = reg.push("127.0.0.1:1/x:t", &[], &[], &[]).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidPush { .. }), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("blob");
        std::fs::write(&file, b"abc").unwrap();
        let manifest = (Sha256::of(b"{}"), "application/json".to_string(), b"{}".to_vec());
        let blobs = [(Sha256::of(b"abc"), 4, file)];
        let err = reg.push("127.0.0.1:1/x:t", &blobs, std::slice::from_ref(&manifest), &[]).unwrap_err();
        assert!(matches!(err, RegistryError::SizeMismatch { .. }), "{err}");
        let other = format!("127.0.0.1:1/x@{}", Sha256::of(b"x"));
        let err = reg.push(&other, &[], &[manifest], &[]).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidPush { .. }), "{err}");
    }
}
