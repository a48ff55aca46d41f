//! The HTTP cache backend: the Bazel remote-cache protocol (`/ac/<drv-hex>` holds a
//! derivation's record, `/cas/<sha256-hex>` a blob; `GET`, `HEAD`, `PUT`).
//!
//! Owns the HTTP client settings (short time-outs for records, size-scaled ones for blobs; the
//! client itself comes from [`crate::clients::Clients`]) and credentials, first match wins: user and password in the URL
//! (`https://user:pass@host/…`), `COMPOSE_REMOTE_CACHE_TOKEN` (bearer),
//! `COMPOSE_REMOTE_CACHE_USER` + `COMPOSE_REMOTE_CACHE_PASSWORD` (basic), then the netrc entry
//! for the host (`$NETRC` or `~/.netrc`). Credentials never appear in messages.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use super::{BlobError, BlobFile, RemoteError};
use crate::clients::Clients;
use crate::hash::{DrvHash, Sha256};
use crate::store::Store;

/// Time allowed to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed by default for a record request (GET, HEAD, PUT of a few hundred bytes).
const RECORD_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a record may weigh.
const MAX_RECORD: u64 = 1 << 20;
/// Blob transfers get this much time, plus a second per MiB (a slow link is not a dead one).
const BLOB_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

/// An HTTP cache.
pub struct HttpCache {
    /// The URL without credentials (they travel in headers), without a trailing `/`.
    shown: String,
    auth: Auth,
    /// Where the credentials came from (for messages).
    auth_source: String,
    /// Made on first use: a no-op build whose results the cache is known to hold never pays for
    /// setting up TLS.
    clients: Arc<Clients>,
    /// Time allowed for a record request (COMPOSE_REMOTE_CACHE_TIMEOUT seconds, default 10).
    record_timeout: Duration,
}

impl HttpCache {
    pub fn new(url: &str, clients: Arc<Clients>) -> Result<HttpCache, RemoteError> {
        let env = |k: &str| clients.env(k);
        let bad = |message: String| RemoteError::Failed { url: url.to_string(), message };
        let mut parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RemoteError::Url(url.to_string()));
        }
        let host = parsed.host_str().unwrap_or_default().to_string();
        let (auth, auth_source) = if !parsed.username().is_empty() {
            let user = percent_decode(parsed.username());
            let pass = percent_decode(parsed.password().unwrap_or_default());
            (Auth::Basic(user, pass), "the URL".to_string())
        } else if let Some(t) = env("COMPOSE_REMOTE_CACHE_TOKEN") {
            (Auth::Bearer(t), "COMPOSE_REMOTE_CACHE_TOKEN".to_string())
        } else if let Some(u) = env("COMPOSE_REMOTE_CACHE_USER") {
            (Auth::Basic(u, env("COMPOSE_REMOTE_CACHE_PASSWORD").unwrap_or_default()), "COMPOSE_REMOTE_CACHE_USER".to_string())
        } else {
            match super::netrc::default_path(&env) {
                Some(path) => match std::fs::read_to_string(&path).ok().and_then(|t| super::netrc::lookup(&t, &host)) {
                    Some(l) => (Auth::Basic(l.login, l.password), format!("{}", path.display())),
                    None => (Auth::None, String::new()),
                },
                None => (Auth::None, String::new()),
            }
        };
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        let shown = parsed.as_str().trim_end_matches('/').to_string();
        let record_timeout = match env("COMPOSE_REMOTE_CACHE_TIMEOUT") {
            Some(t) => t
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| bad(format!("COMPOSE_REMOTE_CACHE_TIMEOUT=`{t}` is not a number of seconds")))?,
            None => RECORD_TIMEOUT,
        };
        Ok(HttpCache { shown, auth, auth_source, clients, record_timeout })
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, String> {
        let http = self.clients.cache_http(CONNECT_TIMEOUT.min(self.record_timeout), self.record_timeout);
        http.map(crate::http::Http::client).map_err(|e| format!("cannot set up the HTTP client: {e}"))
    }

    fn with_auth(&self, rb: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.auth {
            Auth::None => rb,
            Auth::Basic(u, p) => rb.basic_auth(u, Some(p)),
            Auth::Bearer(t) => rb.bearer_auth(t),
        }
    }

    /// A message for a refused or failed answer.
    fn status_message(&self, method: &str, url: &str, status: reqwest::StatusCode) -> String {
        let mut m = format!("{method} {url} answered {status}");
        if status.as_u16() == 403 && !self.auth_source.is_empty() {
            m.push_str(&format!(
                "; check the credentials from {}, and that the server may read and write its files (its own permissions)",
                self.auth_source
            ));
        } else if status.as_u16() == 403 {
            m.push_str("; the server may not read or write its files (its own permissions), or wants credentials");
        } else if status.is_server_error() {
            m.push_str("; the server failed: its error log says why (for nginx WebDAV, often a cache root it cannot write)");
        } else if status.as_u16() == 401 {
            if self.auth_source.is_empty() {
                m.push_str(
                    "; give credentials in the URL, COMPOSE_REMOTE_CACHE_TOKEN, COMPOSE_REMOTE_CACHE_USER/_PASSWORD or a netrc entry",
                );
            } else {
                m.push_str(&format!("; check the credentials from {}", self.auth_source));
            }
        }
        m
    }

    fn head(&self, url: &str) -> Result<bool, String> {
        match self.with_auth(self.client()?.head(url)).send() {
            Ok(r) if r.status().is_success() => Ok(true),
            Ok(r) if r.status().as_u16() == 404 => Ok(false),
            Ok(r) => Err(self.status_message("HEAD", url, r.status())),
            Err(e) => Err(describe(&e)),
        }
    }

    fn put_body(&self, url: &str, body: reqwest::blocking::Body, timeout: Duration) -> Result<(), String> {
        match self.with_auth(self.client()?.put(url)).timeout(timeout).body(body).send() {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(self.status_message("PUT", url, r.status())),
            Err(e) => Err(describe(&e)),
        }
    }
}

fn blob_timeout(size: u64) -> Duration {
    BLOB_TIMEOUT + Duration::from_secs(size >> 20)
}

/// A reqwest error with its causes (the URLs we send never hold credentials).
fn describe(e: &reqwest::Error) -> String {
    let mut s = crate::util::chain_message(e);
    if e.is_timeout() {
        s.push_str(" (timed out)");
    }
    s
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

impl super::Backend for HttpCache {
    fn describe(&self) -> &str {
        &self.shown
    }

    fn get_record(&self, drv: &DrvHash) -> Result<Option<Vec<u8>>, String> {
        let url = format!("{}/ac/{}", self.shown, drv.hex());
        match self.with_auth(self.client()?.get(&url)).send() {
            Ok(r) if r.status().as_u16() == 404 => Ok(None),
            Ok(r) if r.status().is_success() => {
                // A record is a few hundred bytes; a server sending megabytes is misbehaving.
                let mut body = Vec::new();
                r.take(MAX_RECORD + 1).read_to_end(&mut body).map_err(|e| format!("GET {url}: {e}"))?;
                if body.len() as u64 > MAX_RECORD {
                    return Err(format!("GET {url} sent more than {MAX_RECORD} bytes for a record"));
                }
                Ok(Some(body))
            }
            Ok(r) => Err(self.status_message("GET", &url, r.status())),
            Err(e) => Err(describe(&e)),
        }
    }

    fn has_blob(&self, digest: &Sha256) -> Result<bool, String> {
        self.head(&format!("{}/cas/{}", self.shown, digest.hex()))
    }

    fn get_blob(&self, digest: &Sha256, size: u64, sink: &mut dyn Write) -> Result<bool, BlobError> {
        let url = format!("{}/cas/{}", self.shown, digest.hex());
        let client = self.client().map_err(BlobError::Down)?;
        let mut resp = match self.with_auth(client.get(&url)).timeout(blob_timeout(size)).send() {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if r.status().as_u16() == 404 => return Ok(false),
            Ok(r) => return Err(BlobError::Down(self.status_message("GET", &url, r.status()))),
            Err(e) => return Err(BlobError::Down(describe(&e))),
        };
        if resp.content_length().is_some_and(|n| n != size) {
            return Err(BlobError::Damaged(format!("{url} has {} bytes, expected {size}", resp.content_length().unwrap_or(0))));
        }
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match resp.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(k) => sink.write_all(&buf[..k]).map_err(|e| BlobError::Damaged(e.to_string()))?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BlobError::Down(format!("GET {url}: {e}"))),
            }
        }
    }

    fn put(&self, _store: &Store, drv: &DrvHash, blobs: &[BlobFile], record: &[u8]) -> Result<(), String> {
        for b in blobs {
            let url = format!("{}/cas/{}", self.shown, b.digest.hex());
            if self.head(&url)? {
                continue;
            }
            let f = std::fs::File::open(&b.path).map_err(|e| format!("cannot read {}: {e}", b.path.display()))?;
            self.put_body(&url, reqwest::blocking::Body::sized(f, b.size), blob_timeout(b.size))?;
        }
        let url = format!("{}/ac/{}", self.shown, drv.hex());
        self.put_body(&url, reqwest::blocking::Body::from(record.to_vec()), self.record_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> Arc<Clients> {
        let v: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env: crate::clients::Env = Box::new(move |k| v.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()));
        Arc::new(Clients::with_env(&[], false, env, None))
    }

    #[test]
    fn credentials_in_order_and_never_shown() {
        let env = env_of(&[("COMPOSE_REMOTE_CACHE_TOKEN", "tok"), ("NETRC", "/nonexistent")]);
        let c = HttpCache::new("http://u:p%40ss@127.0.0.1:1/cache/", env.clone()).unwrap();
        assert!(matches!(&c.auth, Auth::Basic(u, p) if u == "u" && p == "p@ss"));
        assert_eq!(c.shown, "http://127.0.0.1:1/cache");
        let c = HttpCache::new("http://127.0.0.1:1/", env.clone()).unwrap();
        assert!(matches!(&c.auth, Auth::Bearer(t) if t == "tok"));

        let dir = tempfile::tempdir().unwrap();
        let netrc = dir.path().join("netrc");
        std::fs::write(&netrc, "machine 127.0.0.1 login alice password secret\n").unwrap();
        let path = netrc.to_string_lossy().into_owned();
        let env = env_of(&[("NETRC", &path)]);
        let c = HttpCache::new("http://127.0.0.1:1/", env.clone()).unwrap();
        assert!(matches!(&c.auth, Auth::Basic(u, p) if u == "alice" && p == "secret"));
        assert!(c.status_message("GET", "x", reqwest::StatusCode::UNAUTHORIZED).contains(&path));
        let c = HttpCache::new("http://other.example/", env.clone()).unwrap();
        assert!(matches!(&c.auth, Auth::None));
        assert!(HttpCache::new("ftp://x/", env.clone()).is_err());
    }
}
