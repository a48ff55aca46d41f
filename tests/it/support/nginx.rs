//! nginx as the tests' HTTP shared cache: WebDAV PUT/DELETE over a directory of its own, one
//! server per test on 127.0.0.1, stopped on drop.

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::children::wait_for;

pub struct Nginx {
    child: Option<Child>,
    pub url: String,
    pub root: std::path::PathBuf,
}

impl Nginx {
    pub fn start(dir: &Path) -> Nginx {
        Nginx::start_with(dir, "")
    }

    /// `extra` goes into the server block, before the WebDAV `location /`.
    ///
    /// nginx cannot bind port 0 (it refuses the `listen`), so it is given a port that was free a
    /// moment ago; if another process took it meanwhile, nginx says "Address already in use" and
    /// starts again on another.
    pub fn start_with(dir: &Path, extra: &str) -> Nginx {
        let root = dir.join("cache-root");
        fs::create_dir_all(&root).unwrap();
        let server = |port: u16| {
            format!(
                "  client_body_temp_path {d}/body;\n  server {{\n    listen 127.0.0.1:{port};\n{extra}\n    location / {{\n      root {r};\n      dav_methods PUT DELETE;\n      create_full_put_path on;\n      client_max_body_size 0;\n    }}\n  }}\n",
                d = dir.display(),
                r = root.display(),
                extra = extra.replace("ROOT", &root.display().to_string())
            )
        };
        Nginx::start_server(dir, "root", &root, &server)
    }

    /// nginx with the `http` block's contents `server(port)` (a `server` block listening on
    /// 127.0.0.1:port), its workers running as `user`, serving the cache directory `root`.
    pub fn start_server(dir: &Path, user: &str, root: &Path, server: &dyn Fn(u16) -> String) -> Nginx {
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let conf = dir.join("nginx.conf");
            fs::write(
                &conf,
                format!(
                    "user {user};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log {d}/access.log;\n{}}}\n",
                    server(port),
                    d = dir.display(),
                ),
            )
            .unwrap();
            let _ = fs::remove_file(dir.join("nginx.pid"));
            let child = Command::new("nginx")
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.join("stderr.log")).unwrap())
                .spawn()
                .expect("nginx");
            // Stopped on drop from here on, if it does not start.
            let mut nginx = Nginx { child: Some(child), url: format!("http://127.0.0.1:{port}"), root: root.to_path_buf() };
            if nginx.bound(dir, port) {
                return nginx;
            }
        }
        panic!("nginx found no free port in 10 tries");
    }

    /// Waits until nginx listens on `port` (true) or says another process has it (false).
    fn bound(&mut self, dir: &Path, port: u16) -> bool {
        let child = self.child.as_mut().unwrap();
        wait_for("nginx did not start", Duration::from_secs(10), || {
            let said = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            if said.contains("Address already in use") {
                return Some(false);
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("nginx exited with {status}: {said}");
            }
            // nginx writes its pid file once its sockets are bound and listening.
            let pid = fs::read_to_string(dir.join("nginx.pid")).unwrap_or_default();
            (pid.trim() == child.id().to_string() && TcpStream::connect(("127.0.0.1", port)).is_ok()).then_some(true)
        })
    }

    /// SIGTERM: nginx's master stops its workers too (SIGKILL would leave them serving).
    pub fn stop(&mut self) {
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
