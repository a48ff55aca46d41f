//! OCI documents: the exact bytes of image configs, manifests and indexes we write (from our own
//! structs, in canonical JSON: keys sorted by bytes, no insignificant whitespace; `oci-spec`'s
//! types use HashMaps and are not used for writing), the typed reading of the documents other
//! tools wrote (base images, our own stored manifests: a document that does not have the shape
//! the spec requires is an error, never an empty default), the media types, and the RFC 3339
//! times of `created` fields.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::hash::Sha256;

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Serialize a JSON value canonically: object keys sorted by bytes, no whitespace. Independent of
/// serde_json's `preserve_order` feature (which another crate could switch on).
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Strings and scalars: serde_json's own encoding is deterministic.
                out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
                out.push(b':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(serde_json::to_string(other).unwrap_or_default().as_bytes()),
    }
}

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The OCI platform of a spec's `os/arch[/variant]`.
    pub fn of(p: &crate::spec::Platform) -> Platform {
        Platform { os: p.os.clone(), architecture: p.architecture.clone(), variant: p.variant.clone() }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"architecture": self.architecture, "os": self.os});
        if let Some(var) = &self.variant {
            v["variant"] = json!(var);
        }
        v
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Sha256,
    pub size: u64,
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Sha256, size: u64) -> Descriptor {
        Descriptor { media_type: media_type.into(), digest, size, platform: None, annotations: BTreeMap::new() }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.size});
        if let Some(p) = &self.platform {
            v["platform"] = p.to_json();
        }
        if !self.annotations.is_empty() {
            v["annotations"] = json!(self.annotations);
        }
        v
    }
}

/// Everything that goes into an image config.
#[derive(Debug, Clone, Default)]
pub struct ConfigFields {
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub exposed: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    /// The config's `Healthcheck` object, as Docker writes it.
    pub healthcheck: Option<Value>,
}

/// RFC 3339 UTC time of a Unix timestamp (no external time crate needed for whole seconds).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// The image config blob. With a `base` config, the image starts from it as Docker does: `env`
/// adds or replaces variables by name, `entrypoint` resets `Cmd` unless `cmd` is also given, every
/// other field the spec sets replaces the base's, and what the spec leaves alone (including fields
/// compose does not model, such as `Healthcheck`) is inherited. `diff_ids` are all of the image's,
/// base first; `history` holds this image's own entries, appended to the base's.
pub fn config_json(
    platform: &Platform,
    fields: &ConfigFields,
    base: Option<&Value>,
    diff_ids: &[Sha256],
    history: &[String],
    epoch: u64,
) -> Vec<u8> {
    let created = rfc3339(epoch);
    let mut config = base.and_then(|b| b.get("config")).and_then(Value::as_object).cloned().unwrap_or_default();
    if !fields.env.is_empty() {
        let mut env: Vec<String> = config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        for kv in &fields.env {
            let (name, value) = kv.split_once('=').unwrap_or((kv, ""));
            // Against the environment so far, the base's included, as Docker's ENV.
            let kv = format!("{name}={}", crate::util::expand_env(value, &env));
            match env.iter_mut().find(|e| e.split('=').next() == Some(name)) {
                Some(slot) => *slot = kv,
                None => env.push(kv),
            }
        }
        config.insert("Env".into(), json!(env));
    }
    if let Some(e) = &fields.entrypoint {
        config.insert("Entrypoint".into(), json!(e));
        if fields.cmd.is_none() {
            config.remove("Cmd");
        }
    }
    if let Some(c) = &fields.cmd {
        config.insert("Cmd".into(), json!(c));
    }
    if let Some(w) = &fields.workdir {
        config.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &fields.user {
        config.insert("User".into(), json!(u));
    }
    if !fields.exposed.is_empty() {
        let m: BTreeMap<&str, Value> = fields.exposed.iter().map(|p| (p.as_str(), json!({}))).collect();
        config.insert("ExposedPorts".into(), json!(m));
    }
    if !fields.volumes.is_empty() {
        let m: BTreeMap<&str, Value> = fields.volumes.iter().map(|p| (p.as_str(), json!({}))).collect();
        config.insert("Volumes".into(), json!(m));
    }
    if !fields.labels.is_empty() {
        config.insert("Labels".into(), json!(fields.labels));
    }
    if let Some(s) = &fields.stop_signal {
        config.insert("StopSignal".into(), json!(s));
    }
    if let Some(h) = &fields.healthcheck {
        config.insert("Healthcheck".into(), h.clone());
    }
    let mut all_history: Vec<Value> = base.and_then(|b| b.get("history")).and_then(Value::as_array).cloned().unwrap_or_default();
    all_history.extend(history.iter().map(|h| json!({"created": created, "created_by": h})));
    let mut v = json!({
        "created": created,
        "architecture": platform.architecture,
        "os": platform.os,
        "config": Value::Object(config),
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "history": all_history,
    });
    if let Some(var) = &platform.variant {
        v["variant"] = json!(var);
    }
    canonical_json(&v)
}

pub fn manifest_json(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.to_json(),
        "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
    }))
}

pub fn index_json(manifests: &[Descriptor]) -> Vec<u8> {
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
    }))
}

/// Docker's media types, read in base images (and mapped to their OCI equivalents).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_INDEX: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// OCI media type for a layer media type (Docker's become their OCI equivalents; bytes unchanged).
pub fn oci_layer_media_type(mt: &str) -> String {
    match mt {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar".into(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Reading: the fields compose uses, typed; unknown fields are ignored, missing required ones
// are errors.
// ---------------------------------------------------------------------------

/// A platform as documents write it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PlatformDoc {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl PlatformDoc {
    /// `os/arch[/variant]`.
    pub fn text(&self) -> String {
        let part = |s: &str| if s.is_empty() { "?".to_string() } else { s.to_string() };
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", part(&self.os), part(&self.architecture)),
            None => format!("{}/{}", part(&self.os), part(&self.architecture)),
        }
    }
}

/// A content descriptor as read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DescriptorDoc {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub digest: Sha256,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<PlatformDoc>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest (OCI or Docker schema 2) as read.
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestDoc {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: DescriptorDoc,
    pub layers: Vec<DescriptorDoc>,
}

/// An image index (OCI or a Docker manifest list) as read.
#[derive(Debug, Clone, Deserialize)]
pub struct IndexDoc {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub manifests: Vec<DescriptorDoc>,
}

/// The parts of an image config compose reads: its platform and its layers' diff_ids.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigDoc {
    #[serde(flatten)]
    pub platform: PlatformDoc,
    pub rootfs: RootFsDoc,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootFsDoc {
    pub diff_ids: Vec<Sha256>,
}

/// Reading a document: what it is (for the message) and serde's complaint.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not a valid OCI document: {message}")]
pub struct DocError {
    pub what: &'static str,
    pub message: String,
}

/// Parse `bytes` as a `T` document; `what` names it in the error ("the manifest").
pub fn read<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, DocError> {
    serde_json::from_slice(bytes).map_err(|e| DocError { what, message: e.to_string() })
}

/// Is this document an index (by media type, or by shape when it names none)?
pub fn is_index(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(p) => matches!(p.media_type.as_deref(), Some(INDEX_MEDIA_TYPE | DOCKER_INDEX)) || p.manifests.is_some(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(315_532_800), "1980-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn canonical_json_sorts_keys_without_whitespace() {
        let v = json!({"b": 1, "a": {"d": [1, "x"], "c": null}});
        assert_eq!(canonical_json(&v), br#"{"a":{"c":null,"d":[1,"x"]},"b":1}"#.to_vec());
    }
}
