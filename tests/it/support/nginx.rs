//! nginx as the tests' HTTP shared cache: WebDAV PUT/DELETE over a directory of its own, one
//! server per test on 127.0.0.1, stopped on drop.

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    pub fn start_with(dir: &Path, extra: &str) -> Nginx {
        let root = dir.join("cache-root");
        fs::create_dir_all(&root).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "user root;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  server {{\n    listen 127.0.0.1:{port};\n{extra}\n    location / {{\n      root {r};\n      dav_methods PUT DELETE;\n      create_full_put_path on;\n      client_max_body_size 0;\n    }}\n  }}\n}}\n",
                d = dir.display(),
                r = root.display(),
                extra = extra.replace("ROOT", &root.display().to_string())
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child: Some(child), url: format!("http://127.0.0.1:{port}"), root }
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
