//! The network clients of one command, made from its flags and the process environment in this
//! one place and handed down to the modules that reach servers (base images, package
//! resolution, the build's downloads, the shared cache). Each client is made on first use, so a
//! command that needs no network (a no-op build) pays nothing for TLS or an I/O runtime, and
//! none is made twice: one registry client (with its tokio runtime) serves every base blob.
//!
//! `--offline` lives here too: with it, asking for a client is an error that says so.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::http::{Http, HttpError};
use crate::registry::{AuthConfig, Registry, RegistryOptions};

/// The process environment as the clients see it (a function, so tests can give their own).
pub type Env = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Flags and environment in; clients out, each made once.
pub struct Clients {
    insecure: Vec<String>,
    offline: bool,
    env: Env,
    home: Option<PathBuf>,
    registry: OnceLock<Result<Registry, String>>,
    cache_registry: OnceLock<Result<Registry, String>>,
    http: OnceLock<Result<Http, String>>,
    cache_http: OnceLock<Result<Http, String>>,
}

/// What `--offline` makes of a request for the network.
pub const OFFLINE: &str = "--offline is set";

impl Clients {
    /// Clients configured by the process environment (credential files under `$HOME`,
    /// `$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG`, the shared cache's variables).
    pub fn from_env(insecure: &[String], offline: bool) -> Clients {
        let env: Env = Box::new(|name: &str| std::env::var(name).ok());
        Clients::with_env(insecure, offline, env, std::env::var_os("HOME").map(PathBuf::from))
    }

    pub fn with_env(insecure: &[String], offline: bool, env: Env, home: Option<PathBuf>) -> Clients {
        Clients {
            insecure: insecure.to_vec(),
            offline,
            env,
            home,
            registry: OnceLock::new(),
            cache_registry: OnceLock::new(),
            http: OnceLock::new(),
            cache_http: OnceLock::new(),
        }
    }

    /// `--offline`: no client may be used.
    pub fn offline(&self) -> bool {
        self.offline
    }

    /// Registries (`HOST[:PORT]`) spoken to over plain HTTP.
    pub fn insecure(&self) -> &[String] {
        &self.insecure
    }

    /// A variable of the environment (empty counts as unset).
    pub fn env(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    /// The environment as a function, for readers that take one.
    pub fn env_fn(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| self.env(name)
    }

    fn make_registry(&self, timeouts: Option<(Duration, Duration)>) -> Result<Registry, String> {
        let env = self.env_fn();
        let auth = AuthConfig::from_env(&env, self.home.as_deref()).map_err(|e| crate::util::chain_message(&e))?;
        Registry::new(RegistryOptions { insecure: self.insecure.clone(), auth, timeouts }).map_err(|e| crate::util::chain_message(&e))
    }

    /// The registry client for base images and pushes (time-outs fit large layers).
    pub fn registry(&self) -> Result<&Registry, String> {
        if self.offline {
            return Err(OFFLINE.into());
        }
        self.registry.get_or_init(|| self.make_registry(None)).as_ref().map_err(Clone::clone)
    }

    /// The registry client of an `oci://` shared cache: short time-outs, since a slow cache
    /// must not hold a build up (it is turned off instead).
    pub fn cache_registry(&self) -> Result<&Registry, String> {
        if self.offline {
            return Err(OFFLINE.into());
        }
        self.cache_registry
            .get_or_init(|| self.make_registry(Some((Duration::from_secs(3), Duration::from_secs(30)))))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The HTTP client for mirrors (`.deb`s, indexes): long time-outs, retries.
    pub fn http(&self) -> Result<&Http, HttpError> {
        if self.offline {
            return Err(HttpError::Setup(OFFLINE.into()));
        }
        self.http
            .get_or_init(|| Http::new(Duration::from_secs(15), Duration::from_secs(900)).map_err(|e| crate::util::chain_message(&e)))
            .as_ref()
            .map_err(|e| HttpError::Setup(e.clone().into()))
    }

    /// The HTTP client of an `http(s)://` shared cache: `timeout` for a whole request (blob
    /// transfers set their own, longer one per request). Made once; the first caller's
    /// time-out holds.
    pub fn cache_http(&self, connect: Duration, timeout: Duration) -> Result<&Http, String> {
        if self.offline {
            return Err(OFFLINE.into());
        }
        self.cache_http
            .get_or_init(|| Http::new(connect, timeout).map_err(|e| crate::util::chain_message(&e)))
            .as_ref()
            .map_err(Clone::clone)
    }
}
