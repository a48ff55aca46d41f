//! A shared cache over nginx (WebDAV PUT) speaking the Bazel remote-cache HTTP protocol: machine B
//! builds nothing that machine A built; damaged blobs and dead servers never fail a build.

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

struct Nginx {
    child: Option<Child>,
    pub url: String,
    pub root: std::path::PathBuf,
}

impl Nginx {
    fn start(dir: &Path) -> Nginx {
        let root = dir.join("cache-root");
        fs::create_dir_all(&root).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "user root;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      root {r};\n      dav_methods PUT DELETE;\n      create_full_put_path on;\n      client_max_body_size 0;\n    }}\n  }}\n}}\n",
                d = dir.display(),
                r = root.display()
            ),
        )
        .unwrap();
        let child = Command::new("nginx").arg("-c").arg(&conf).arg("-p").arg(dir).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child: Some(child), url: format!("http://127.0.0.1:{port}"), root }
    }

    /// SIGTERM: nginx's master stops its workers too (SIGKILL would leave them serving).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

const SPEC: &str = r#"
image "shared" {
    files { copy "site/" to="/srv" }
    layer "two" { text "/etc/two" "two\n" }
    config { cmd "x" }
}
"#;

fn checkout(base: &Path) -> std::path::PathBuf {
    let dir = base.to_path_buf();
    fs::create_dir_all(dir.join("site")).unwrap();
    fs::write(dir.join("spec.kdl"), SPEC).unwrap();
    for i in 0..20 {
        fs::write(dir.join(format!("site/f{i}.txt")), format!("file {i}\n").repeat(1000)).unwrap();
    }
    dir
}

fn build(ctx: &TestContext, dir: &Path, store: &str, extra: &[&str]) -> serde_json::Value {
    let out = ctx
        .cmd()
        .current_dir(dir)
        .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join(store))
        .args(["build", "spec.kdl", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert_success(&out, "build");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn machine_b_builds_nothing_machine_a_built() {
    let ctx = TestContext::new();
    let mut nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let a = checkout(&ctx.tmp.path().join("machine-a/src"));
    let b = checkout(&ctx.tmp.path().join("elsewhere/machine-b/checkout"));
    let url = nginx.url.clone();
    let va = build(&ctx, &a, "store-a", &["--remote-cache", &url]);
    assert_eq!(va["derivations"]["built"], 3, "{va}");
    assert!(nginx.root.join("ac").read_dir().unwrap().count() == 3, "records written back");
    // `compose plan` on machine B shows what the remote has.
    let plan = ctx
        .cmd()
        .current_dir(&b)
        .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("store-b"))
        .args(["plan", "spec.kdl", "--json", "--remote-cache", &url])
        .output()
        .unwrap();
    assert_success(&plan, "plan with a remote");
    let p: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert!(p["nodes"].as_array().unwrap().iter().all(|n| n["remote"] == true && n["cached"] == false), "{p}");
    let vb = build(&ctx, &b, "store-b", &["--remote-cache", &url, "--remote-cache-mode", "ro"]);
    assert_eq!(vb["derivations"]["built"], 0, "{vb}");
    assert_eq!(vb["derivations"]["remote"], 3, "{vb}");
    assert_eq!(vb["images"][0]["digest"], va["images"][0]["digest"]);

    // A blob damaged on the server is detected, discarded and rebuilt locally.
    for e in fs::read_dir(nginx.root.join("cas")).unwrap() {
        let p = e.unwrap().path();
        let mut bytes = fs::read(&p).unwrap();
        let n = bytes.len() / 2;
        bytes[n] ^= 0xff;
        fs::write(&p, bytes).unwrap();
    }
    let vc = build(&ctx, &b, "store-c", &["--remote-cache", &url, "--remote-cache-mode", "ro"]);
    assert_eq!(vc["derivations"]["remote"], 0, "{vc}");
    assert_eq!(vc["derivations"]["built"], 3, "{vc}");
    assert_eq!(vc["images"][0]["digest"], va["images"][0]["digest"]);
    let verify = ctx.cmd().env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("store-c")).args(["cache", "verify"]).output().unwrap();
    assert_success(&verify, "verify after damaged remote blobs");

    // A dead server: a warning, and a local build.
    nginx.stop();
    let out = ctx
        .cmd()
        .current_dir(&b)
        .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("store-d"))
        .args(["build", "spec.kdl", "--json", "--remote-cache", &url])
        .output()
        .unwrap();
    assert_success(&out, "build with a dead cache");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["derivations"]["built"], 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: remote cache"), "{}", String::from_utf8_lossy(&out.stderr));
}
