//! Registry credentials, read from the files that docker, podman and skopeo write.
//!
//! Files, in the order they are consulted (the first one with an answer for a registry wins):
//! `$REGISTRY_AUTH_FILE` (must exist when set), `$DOCKER_CONFIG/config.json`,
//! `~/.docker/config.json`, and podman's `$XDG_RUNTIME_DIR/containers/auth.json`.
//! Within one file: `credHelpers[registry]`, then an `auths` entry with inline credentials
//! (base64 `auth` of `user:pass`, or `username`/`password`), then `credsStore`.
//! Helpers are run as `docker-credential-NAME get` with the server on stdin, found on the `PATH`
//! of the environment given to [`AuthConfig::from_env`]; they are run only when a registry is
//! actually contacted, never while loading.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use super::RegistryError;

/// Where registry credentials come from (see the module documentation).
#[derive(Clone, Default)]
pub struct AuthConfig {
    files: Vec<AuthFile>,
    /// Every file that was looked for, for error messages.
    searched: Vec<PathBuf>,
    /// `PATH` of the environment, to find credential helpers in.
    path_var: Option<String>,
}

#[derive(Clone)]
struct AuthFile {
    path: PathBuf,
    /// (normalized registry, credentials); entries without inline credentials are left out.
    auths: Vec<(String, (String, String))>,
    /// (normalized registry, helper name).
    cred_helpers: Vec<(String, String)>,
    creds_store: Option<String>,
}

/// Credentials found for one registry, with where they came from (`Debug` redacts the secret).
#[derive(Clone)]
pub(super) struct Credential {
    pub user: String,
    pub secret: String,
    /// "FILE" or "docker-credential-NAME (credHelpers in FILE)".
    pub source: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential").field("user", &self.user).field("secret", &"<redacted>").field("source", &self.source).finish()
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files: Vec<&Path> = self.files.iter().map(|f| f.path.as_path()).collect();
        f.debug_struct("AuthConfig").field("files", &files).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    auths: Option<std::collections::BTreeMap<String, RawEntry>>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The key credentials are stored under: `host[:port]`, lower-case, without scheme or path, with
/// Docker Hub's aliases folded into `docker.io`.
pub(super) fn normalize_registry(key: &str) -> String {
    let k = key.trim();
    let k = k.strip_prefix("https://").or_else(|| k.strip_prefix("http://")).unwrap_or(k);
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

fn auth_error(path: &Path, reason: impl Into<String>) -> RegistryError {
    RegistryError::AuthConfig { path: path.to_path_buf(), reason: reason.into() }
}

fn parse_file(path: &Path, text: &str) -> Result<AuthFile, RegistryError> {
    let raw: RawFile = serde_json::from_str(text).map_err(|e| auth_error(path, format!("invalid JSON: {e}")))?;
    let mut auths = Vec::new();
    for (key, entry) in raw.auths.unwrap_or_default() {
        let creds = match (&entry.auth, &entry.username, &entry.password) {
            (Some(auth), _, _) if !auth.is_empty() => {
                let engine = base64::engine::general_purpose::STANDARD;
                let decoded = engine
                    .decode(auth.trim())
                    .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth.trim()))
                    .map_err(|e| auth_error(path, format!("`auths.{key}.auth` is not base64: {e}")))?;
                let text = String::from_utf8(decoded).map_err(|_| auth_error(path, format!("`auths.{key}.auth` is not UTF-8")))?;
                let (user, pass) = text
                    .split_once(':')
                    .ok_or_else(|| auth_error(path, format!("`auths.{key}.auth` does not decode to `user:password`")))?;
                Some((user.to_string(), pass.to_string()))
            }
            (_, Some(user), Some(pass)) if !user.is_empty() => Some((user.clone(), pass.clone())),
            _ => None,
        };
        if let Some(creds) = creds {
            auths.push((normalize_registry(&key), creds));
        }
    }
    let cred_helpers = raw.cred_helpers.unwrap_or_default().into_iter().map(|(k, v)| (normalize_registry(&k), v)).collect();
    let creds_store = raw.creds_store.filter(|s| !s.trim().is_empty());
    Ok(AuthFile { path: path.to_path_buf(), auths, cred_helpers, creds_store })
}

impl AuthConfig {
    /// Load the credential files named by the environment (`env` looks variables up; `home` is
    /// the user's home directory). A file that is not there is skipped, except
    /// `$REGISTRY_AUTH_FILE`, which must exist when set; a file that cannot be read or parsed is
    /// an error naming it.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>, home: Option<&Path>) -> Result<AuthConfig, RegistryError> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let mut candidates: Vec<(PathBuf, bool)> = Vec::new();
        if let Some(p) = var("REGISTRY_AUTH_FILE") {
            candidates.push((PathBuf::from(p), true));
        }
        if let Some(d) = var("DOCKER_CONFIG") {
            candidates.push((Path::new(&d).join("config.json"), false));
        }
        if let Some(h) = home {
            candidates.push((h.join(".docker").join("config.json"), false));
        }
        if let Some(x) = var("XDG_RUNTIME_DIR") {
            candidates.push((Path::new(&x).join("containers").join("auth.json"), false));
        }
        let mut config = AuthConfig { path_var: env("PATH"), ..AuthConfig::default() };
        for (path, required) in candidates {
            if config.searched.contains(&path) {
                continue;
            }
            config.searched.push(path.clone());
            match std::fs::read_to_string(&path) {
                Ok(text) => config.files.push(parse_file(&path, &text)?),
                Err(e) if e.kind() == io::ErrorKind::NotFound && !required => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(auth_error(&path, "REGISTRY_AUTH_FILE names a file that does not exist"))
                }
                Err(e) => return Err(auth_error(&path, e.to_string())),
            }
        }
        Ok(config)
    }

    /// The files that were read, in the order they are consulted.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Username and password (or helper secret) for `registry` (`host[:port]`, a URL such as
    /// `https://index.docker.io/v1/`, or `docker.io`), or `None` to go anonymous.
    pub fn credentials_for(&self, registry: &str) -> Result<Option<(String, String)>, RegistryError> {
        Ok(self.lookup(registry)?.map(|c| (c.user, c.secret)))
    }

    pub(super) fn lookup(&self, registry: &str) -> Result<Option<Credential>, RegistryError> {
        let want = normalize_registry(registry);
        for file in &self.files {
            if let Some((_, helper)) = file.cred_helpers.iter().find(|(k, _)| *k == want) {
                match self.run_helper(helper, &want, &file.path, "credHelpers")? {
                    Some(c) => return Ok(Some(c)),
                    None => continue,
                }
            }
            if let Some((_, (user, pass))) = file.auths.iter().find(|(k, _)| *k == want) {
                return Ok(Some(Credential { user: user.clone(), secret: pass.clone(), source: file.path.display().to_string() }));
            }
            if let Some(store) = &file.creds_store {
                if let Some(c) = self.run_helper(store, &want, &file.path, "credsStore")? {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }

    /// Where credentials for `registry` would have been looked for (for "none found" messages).
    pub(super) fn describe_missing(&self, registry: &str) -> String {
        let searched: Vec<String> = self.searched.iter().map(|p| p.display().to_string()).collect();
        let searched = if searched.is_empty() { "no file configured".to_string() } else { searched.join(", ") };
        format!(
            "REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or ~/.docker/config.json: none has an \
             entry for {} (looked for: {searched}), so the request was anonymous",
            normalize_registry(registry)
        )
    }

    fn find_helper(&self, binary: &str) -> Option<PathBuf> {
        let path_var = self.path_var.as_deref()?;
        std::env::split_paths(path_var).map(|dir| dir.join(binary)).find(|p| p.is_file())
    }

    fn run_helper(&self, name: &str, registry: &str, file: &Path, key: &str) -> Result<Option<Credential>, RegistryError> {
        let binary = format!("docker-credential-{name}");
        let fail = |reason: String| RegistryError::CredentialHelper {
            helper: binary.clone(),
            registry: registry.to_string(),
            file: file.to_path_buf(),
            reason,
        };
        if name.is_empty() || name.contains(['/', '\\']) {
            return Err(fail(format!("`{name}` is not a helper name")));
        }
        let program = match (&self.path_var, self.find_helper(&binary)) {
            (_, Some(p)) => p,
            (Some(_), None) => return Err(fail("not found on PATH".to_string())),
            (None, None) => PathBuf::from(&binary),
        };
        let server = if registry == "docker.io" { "https://index.docker.io/v1/" } else { registry };
        let mut child =
            Command::new(&program).arg("get").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| {
                match e.kind() {
                    io::ErrorKind::NotFound => fail("not found on PATH".to_string()),
                    _ => fail(format!("cannot run {}: {e}", program.display())),
                }
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading its input is judged by its exit status below.
            let _ = stdin.write_all(server.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| fail(format!("cannot wait for it: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let text = format!("{} {}", stdout.trim(), stderr.trim());
            if text.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            return Err(fail(format!("{}: {}", out.status, text.trim())));
        }
        let answer: HelperAnswer =
            serde_json::from_str(stdout.trim()).map_err(|e| fail(format!("its answer is not the expected JSON: {e}")))?;
        if answer.username == "<token>" {
            return Err(fail(
                "it returned an identity token, which is not supported: store a username and \
                 password (or an access token as password) instead"
                    .to_string(),
            ));
        }
        if answer.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credential { user: answer.username, secret: answer.secret, source: format!("{binary} ({key} in {})", file.display()) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        move |k: &str| map.get(k).cloned()
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn normalizes_keys() {
        assert_eq!(normalize_registry("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_registry("registry-1.docker.io"), "docker.io");
        assert_eq!(normalize_registry("https://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(normalize_registry("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(normalize_registry("Quay.IO/ns/repo"), "quay.io");
    }

    #[test]
    fn reads_auths_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("auth.json");
        std::fs::write(&first, format!(r#"{{"auths": {{"https://127.0.0.1:5000": {{"auth": "{}"}}}}}}"#, b64("u1:p:1"))).unwrap();
        let docker = dir.path().join("docker");
        std::fs::create_dir(&docker).unwrap();
        std::fs::write(
            docker.join("config.json"),
            r#"{"auths": {"https://index.docker.io/v1/": {"username": "hub", "password": "pw"},
                          "127.0.0.1:5000": {"username": "u2", "password": "p2"},
                          "other:1": {}},
                "psFormat": "table"}"#,
        )
        .unwrap();
        let env = env_of(&[("REGISTRY_AUTH_FILE", first.display().to_string()), ("DOCKER_CONFIG", docker.display().to_string())]);
        let config = AuthConfig::from_env(&env, Some(dir.path())).unwrap();
        assert_eq!(config.files().len(), 2);
        assert_eq!(config.credentials_for("127.0.0.1:5000").unwrap(), Some(("u1".to_string(), "p:1".to_string())));
        assert_eq!(config.credentials_for("docker.io").unwrap(), Some(("hub".to_string(), "pw".to_string())));
        assert_eq!(config.credentials_for("other:1").unwrap(), None);
        assert_eq!(config.credentials_for("elsewhere.example").unwrap(), None);
        // Debug never shows secrets.
        assert!(!format!("{config:?}").contains("p:1"));
    }

    #[test]
    fn missing_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let env = env_of(&[("REGISTRY_AUTH_FILE", missing.display().to_string())]);
        let err = AuthConfig::from_env(&env, None).unwrap_err();
        assert!(matches!(err, RegistryError::AuthConfig { .. }), "{err}");
        assert!(err.to_string().contains("nope.json"), "{err}");

        // A home without ~/.docker is fine.
        let config = AuthConfig::from_env(&env_of(&[]), Some(dir.path())).unwrap();
        assert!(config.files().is_empty());

        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{ not json").unwrap();
        let env = env_of(&[("REGISTRY_AUTH_FILE", broken.display().to_string())]);
        let err = AuthConfig::from_env(&env, None).unwrap_err();
        assert!(err.to_string().contains("broken.json"), "{err}");

        let bad64 = dir.path().join("bad64.json");
        std::fs::write(&bad64, r#"{"auths": {"r:1": {"auth": "%%%"}}}"#).unwrap();
        let env = env_of(&[("REGISTRY_AUTH_FILE", bad64.display().to_string())]);
        let err = AuthConfig::from_env(&env, None).unwrap_err();
        assert!(err.to_string().contains("auths.r:1.auth"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn credential_helpers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let helper = bin.join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\ncase \"$server\" in\n\
             reg.example:5000) echo '{\"ServerURL\":\"x\",\"Username\":\"hu\",\"Secret\":\"hs\"}';;\n\
             https://index.docker.io/v1/) echo '{\"Username\":\"hub\",\"Secret\":\"hubs\"}';;\n\
             *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config_path = dir.path().join("config.json");
        std::fs::write(
            &config_path,
            r#"{"credHelpers": {"reg.example:5000": "fake", "broken.example": "absent"},
                "credsStore": "fake"}"#,
        )
        .unwrap();
        let env = env_of(&[("REGISTRY_AUTH_FILE", config_path.display().to_string()), ("PATH", bin.display().to_string())]);
        let config = AuthConfig::from_env(&env, None).unwrap();
        let found = config.lookup("reg.example:5000").unwrap().unwrap();
        assert_eq!((found.user.as_str(), found.secret.as_str()), ("hu", "hs"));
        assert!(found.source.contains("docker-credential-fake"), "{}", found.source);
        // credsStore serves the rest; its "not found" means anonymous.
        assert_eq!(config.credentials_for("docker.io").unwrap(), Some(("hub".to_string(), "hubs".to_string())));
        assert_eq!(config.credentials_for("unknown.example").unwrap(), None);
        let err = config.credentials_for("broken.example").unwrap_err();
        assert!(matches!(err, RegistryError::CredentialHelper { .. }), "{err}");
        assert!(err.to_string().contains("docker-credential-absent"), "{err}");
    }
}
