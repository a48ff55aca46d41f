//! Pulling base image blobs from a registry for the build (a blocking client per call).

/// Stream blob `digest` of repository `repo` into `sink`, verified.
pub fn blob(repo: &str, insecure: &[String], digest: &crate::hash::Sha256, size: u64, sink: &mut dyn std::io::Write) -> Result<(), String> {
    let reg = crate::ops::registry_client(insecure).map_err(|e| e.to_string())?;
    reg.blob(repo, digest, Some(size), sink).map(|_| ()).map_err(|e| e.to_string())
}
