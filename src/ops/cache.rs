//! `compose cache keygen`, and the shared cache of a command: its trusted keys and signing key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Error, SpecOptions};
use crate::clients::Clients;

/// Where `compose cache keygen` puts secret keys, and where builds look for one to sign with.
pub fn keys_dir(cache_dir: &Path) -> PathBuf {
    crate::store::Layout::keys(cache_dir)
}

/// The remote cache of these options, with its trusted keys and signing key.
pub fn open_remote(opts: &SpecOptions, clients: &Arc<Clients>) -> Result<Option<crate::remote::RemoteCache>, Error> {
    use crate::remote::sign::{PublicKey, SecretKey, TrustedKeys};
    let Some(url) = &opts.remote_cache else { return Ok(None) };
    if opts.offline {
        // `--offline` means no network at all, a shared cache included.
        return Ok(None);
    }
    let mut trusted = TrustedKeys::default();
    for text in &opts.trusted_keys {
        let list = TrustedKeys::parse_list(text).map_err(|source| Error::Key { message: "bad trusted key".into(), source })?;
        for k in list.keys() {
            trusted.push(PublicKey::clone(k));
        }
    }
    let signer = match &opts.signing_key {
        Some(path) => Some(SecretKey::read(path).map_err(|source| Error::Key { message: "bad signing key".into(), source })?),
        None if opts.remote_mode == crate::remote::Mode::ReadWrite => {
            // The one key `compose cache keygen` made for this store, if there is exactly one.
            let dir = keys_dir(&opts.cache_dir);
            let found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "secret")).collect())
                .unwrap_or_default();
            match found.as_slice() {
                [one] => Some(SecretKey::read(one).map_err(|source| Error::Key { message: "bad signing key".into(), source })?),
                [] => None,
                _ => return Err(Error::Usage(format!("{} holds several secret keys: choose one with --signing-key FILE", dir.display()))),
            }
        }
        None => None,
    };
    let config = crate::remote::RemoteConfig { url: url.clone(), mode: opts.remote_mode, trusted, signer };
    crate::remote::RemoteCache::open(config, Arc::clone(clients)).map(Some).map_err(Error::Remote)
}

/// A key name for this machine: its host name, reduced to the characters key names allow.
pub fn default_key_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).take(120).collect();
    if name.is_empty() {
        "compose".to_string()
    } else {
        name
    }
}

/// `compose cache keygen NAME`: a new signing key in `out` (default `CACHE/keys/NAME.secret`);
/// returns the public key to give to `--trusted-key`, and where the secret key went.
pub fn keygen(cache_dir: &Path, name: &str, out: Option<&Path>) -> Result<(String, PathBuf), Error> {
    use crate::remote::sign::SecretKey;
    let key = SecretKey::generate(name).map_err(|source| Error::Key { message: "cannot make a key".into(), source })?;
    let path = out.map(Path::to_path_buf).unwrap_or_else(|| keys_dir(cache_dir).join(format!("{name}.secret")));
    key.write_new(&path).map_err(|source| Error::Key { message: "cannot write the secret key".into(), source })?;
    Ok((key.public().to_text(), path))
}
