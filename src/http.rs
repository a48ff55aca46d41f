//! HTTP(S) client for the edges (Debian mirrors, the HTTP shared cache): a blocking reqwest
//! client with rustls on ring, time-outs, bounded retries of transient failures, and streaming
//! downloads. `file://` URLs are read from the local filesystem, so a mirror can be a directory.
//! Clients are made by [`crate::clients::Clients`], once per command.

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("`{url}` was not found (HTTP 404)")]
    NotFound { url: String },
    #[error("`{url}` answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("failed to fetch `{url}`")]
    Transport {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to read `{path}`")]
    File {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to write what `{url}` sent")]
    Sink {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the HTTP client")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl HttpError {
    /// Worth retrying: network trouble, time-outs, 5xx and 429.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Transport { .. } => true,
            HttpError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}

/// A download destination that can start over (for retries).
pub trait Sink: Write {
    fn reset(&mut self) -> io::Result<()>;
}

impl Sink for Vec<u8> {
    fn reset(&mut self) -> io::Result<()> {
        self.clear();
        Ok(())
    }
}

impl Sink for File {
    fn reset(&mut self) -> io::Result<()> {
        use std::io::Seek;
        self.set_len(0)?;
        self.seek(io::SeekFrom::Start(0)).map(|_| ())
    }
}

/// Attempts per request (first try included).
pub const ATTEMPTS: u32 = 4;

/// An HTTP client.
pub struct Http {
    client: reqwest::blocking::Client,
}

impl Http {
    /// A client that gives up connecting after `connect` and on a whole request (a large .deb
    /// on a slow mirror included) after `timeout`.
    pub fn new(connect: Duration, timeout: Duration) -> Result<Http, HttpError> {
        // rustls needs a process-wide crypto provider; ring keeps the build small.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(connect)
            .timeout(timeout)
            .user_agent(concat!("compose/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Setup(Box::new(e)))?;
        Ok(Http { client })
    }

    /// The underlying client, for protocols that build their own requests (the HTTP cache).
    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    /// GET a small resource into memory, with retries.
    pub fn get_bytes(&self, url: &str) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        self.download(url, &mut out)?;
        Ok(out)
    }

    /// GET `url` streaming into `sink`. On a transient failure the request is retried (with
    /// back-off) after `sink.reset()`.
    pub fn download(&self, url: &str, sink: &mut dyn Sink) -> Result<u64, HttpError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            sink.reset().map_err(|source| HttpError::Sink { url: crate::util::redact_url(url), source })?;
            match self.once(url, sink) {
                Ok(n) => return Ok(n),
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(200 * 4u64.pow(attempt - 1)));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn once(&self, url: &str, w: &mut dyn Sink) -> Result<u64, HttpError> {
        if let Some(path) = url.strip_prefix("file://") {
            let mut f = File::open(path).map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => HttpError::NotFound { url: crate::util::redact_url(url) },
                _ => HttpError::File { path: path.to_string(), source },
            })?;
            return io::copy(&mut f, w).map_err(|source| HttpError::File { path: path.to_string(), source });
        }
        let mut resp = self
            .client
            .get(url)
            .send()
            .map_err(|e| HttpError::Transport { url: crate::util::redact_url(url), source: Box::new(e.without_url()) })?;
        let status = resp.status().as_u16();
        if status == 404 || status == 410 {
            return Err(HttpError::NotFound { url: crate::util::redact_url(url) });
        }
        if !(200..300).contains(&status) {
            return Err(HttpError::Status { url: crate::util::redact_url(url), status });
        }
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let k = match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HttpError::Transport { url: crate::util::redact_url(url), source: Box::new(e) }),
            };
            w.write_all(&buf[..k]).map_err(|source| HttpError::Sink { url: crate::util::redact_url(url), source })?;
            n += k as u64;
        }
        Ok(n)
    }
}
