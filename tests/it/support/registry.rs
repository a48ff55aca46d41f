//! Debian's `docker-registry` (CNCF distribution 2.8) as the tests' OCI registry: one per test on
//! 127.0.0.1 with its own data directory, optionally behind HTTP basic auth, stopped on drop.

use std::io::{BufRead, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use compose::hash::Sha256;
use compose::registry::{AuthConfig, Registry, RegistryOptions};

use super::children::listening_port;

pub struct TestRegistry {
    dir: tempfile::TempDir,
    /// 0 until the registry first started and picked its port.
    port: u16,
    /// The `auth:` section of its configuration, if any.
    auth: String,
    /// A whole configuration instead, `PORT` standing for the port.
    config: Option<String>,
    child: Option<Child>,
}

pub fn require(tool: &str) {
    let found = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false);
    assert!(found, "`{tool}` is not installed: apt-get install -y docker-registry skopeo apache2-utils");
}

impl TestRegistry {
    pub fn start() -> TestRegistry {
        Self::start_with(None)
    }

    /// With `Some((user, pass))`, the registry wants HTTP basic auth (htpasswd, bcrypt).
    pub fn start_with(users: Option<(&str, &str)>) -> TestRegistry {
        require("docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut auth = String::new();
        if let Some((user, pass)) = users {
            require("htpasswd");
            let out = Command::new("htpasswd").args(["-Bbn", user, pass]).output().expect("htpasswd");
            assert!(out.status.success());
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            auth = format!("auth:\n  htpasswd:\n    realm: x\n    path: {}\n", file.display());
        }
        let mut reg = TestRegistry { dir, port: 0, auth, config: None, child: None };
        reg.spawn();
        reg
    }

    /// With the configuration `config(data directory)`, whose `PORT` is the port it listens on
    /// (127.0.0.1).
    pub fn start_config(config: &dyn Fn(&std::path::Path) -> String) -> TestRegistry {
        require("docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Some(config(dir.path()));
        let mut reg = TestRegistry { dir, port: 0, auth: String::new(), config, child: None };
        reg.spawn();
        reg
    }

    /// Starts the registry: the first time on port 0, so that it binds a free port itself and
    /// keeps it (read from the kernel's table of listening sockets); after `stop`, on that same
    /// port again, since clients hold its address.
    pub fn spawn(&mut self) {
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n{}",
            self.dir.path().join("data").display(),
            self.port,
            self.auth
        );
        let config = match &self.config {
            Some(c) => c.replace("PORT", &self.port.to_string()),
            None => config,
        };
        std::fs::write(self.dir.path().join("config.yml"), config).expect("write config");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("registry.log")).expect("log file");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("docker-registry exited with {status}: {}", self.log());
            }
            if self.port == 0 {
                self.port = self.child.as_ref().and_then(|c| listening_port(c.id())).unwrap_or(0);
            }
            if self.port != 0 && self.answers() {
                return;
            }
            assert!(Instant::now() < deadline, "docker-registry did not answer: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /v2/` answers 200 or 401.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
            return false;
        }
        let mut line = String::new();
        let _ = std::io::BufReader::new(s).read_line(&mut line);
        line.starts_with("HTTP/1.") && (line.contains(" 200") || line.contains(" 401"))
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data").join("docker/registry/v2")
    }

    pub fn blob_file(&self, d: &Sha256) -> PathBuf {
        let hex = d.hex();
        self.data().join("blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    pub fn client(&self, auth: AuthConfig) -> Registry {
        Registry::new(RegistryOptions { insecure: vec![self.addr()], auth, timeouts: None }).expect("client")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
