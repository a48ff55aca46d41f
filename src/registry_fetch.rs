//! Pulling base image blobs from a registry (wired to `crate::registry` when that lands).

/// Stream blob `digest` of repository `repo` into `sink`.
pub fn blob(repo: &str, digest: &crate::hash::Sha256, _size: u64, _sink: &mut dyn std::io::Write) -> Result<(), String> {
    Err(format!("registry bases are not supported yet ({repo}@{digest})"))
}
