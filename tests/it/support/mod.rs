//! Test support: an isolated context per test (temp dir, own store, fixed environment), helpers to
//! write fixture trees and run the real `compose` binary and the real tools that check its output.
//! The real components the tests start have a file each: the fixture apt repository and its HTTP
//! server (`aptrepo`), nginx as the shared cache (`nginx`), a cache server that misbehaves on
//! purpose (`misbehaving`), docker-registry (`registry`), podman (`podman`), the busybox image
//! steps run in (`steps`); `children` holds what they share: a kill-on-drop guard for child
//! processes and the ways a server's port is found without a race. Test files import from here,
//! never from each other.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod aptrepo;
pub mod children;
pub mod misbehaving;
pub mod nginx;
pub mod podman;
pub mod registry;
pub mod steps;

pub use children::DeadPort;
pub use podman::{podman_run, Podman};

pub const COMPOSE: &str = env!("CARGO_BIN_EXE_compose");

pub struct TestContext {
    pub tmp: tempfile::TempDir,
    /// Where the spec and its sources live.
    pub root: PathBuf,
    pub cache: PathBuf,
}

impl TestContext {
    pub fn new() -> TestContext {
        let tmp = tempfile::Builder::new().prefix("compose-test-").tempdir().expect("tempdir");
        let root = tmp.path().join("project");
        fs::create_dir_all(&root).expect("mkdir");
        let cache = tmp.path().join("cache");
        TestContext { tmp, root, cache }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.root.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&p, content).expect("write");
        p
    }

    pub fn write_exec(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.write(rel, content);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    /// A `compose` command run in the project directory with an isolated store and a clean,
    /// fixed environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(COMPOSE);
        c.current_dir(&self.root)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path())
            .env("COMPOSE_CACHE_DIR", &self.cache)
            .env("NO_COLOR", "1")
            .env("TZ", "UTC")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null());
        c
    }

    pub fn compose(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run compose")
    }

    /// Build and return the digest printed on stdout's last line; panics with stderr on failure.
    pub fn build(&self, args: &[&str]) -> String {
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        let out = self.compose(&all);
        assert_success(&out, "compose build");
        last_line(&out)
    }

    /// `compose build --json`, parsed.
    pub fn build_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["build", "--json"];
        all.extend_from_slice(args);
        let out = self.compose(&all);
        assert_success(&out, "compose build --json");
        serde_json::from_slice(&out.stdout).expect("build --json prints JSON")
    }
}

pub fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string()
}

pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run a tool, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? see .ci/run)"));
    assert_success(&out, &format!("{cmd:?}"));
    out
}

/// Every file under `dir` with its bytes, for comparing two outputs byte for byte.
pub fn tree_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.expect("walk");
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(dir).expect("prefix").display().to_string();
            v.push((rel, fs::read(e.path()).expect("read")));
        }
    }
    v
}
