//! A remote-cache server that misbehaves on purpose (python3): it dies half-way through a blob,
//! never answers, or floods a record, for the tests that a bad shared cache never fails a build.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use super::children::{first_line, Running};
use super::TestContext;

const MISBEHAVING: &str = r#"
import http.server, os, socketserver, sys, time
root, mode = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_HEAD(self): self.serve(False)
    def do_GET(self): self.serve(True)
    def serve(self, body):
        if mode == "hang":
            time.sleep(3600)
        if mode == "huge" and "/ac/" in self.path:
            data = b"x" * (2 << 20)
            self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
            if body: self.wfile.write(data)
            return
        path = os.path.join(root, self.path.lstrip("/"))
        if not os.path.isfile(path):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        data = open(path, "rb").read()
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
        if not body: return
        if mode == "die" and "/cas/" in self.path:
            # Killed in the middle of sending a blob.
            self.wfile.write(data[: len(data) // 2]); self.wfile.flush()
            os._exit(1)
        self.wfile.write(data)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
server = S(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A cache server that dies mid-build (`die`), never answers (`hang`) or sends megabytes for a
/// record (`huge`), serving `root`; killed on drop. It binds port 0 and prints the port it got.
pub fn misbehaving(ctx: &TestContext, root: &Path, mode: &str) -> (Running, String) {
    let script = ctx.tmp.path().join("misbehaving.py");
    fs::write(&script, MISBEHAVING).unwrap();
    let mut child = Running::new(
        Command::new("python3").arg(&script).arg(root).arg(mode).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap(),
    );
    let line = first_line(&mut child).unwrap_or_default();
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("server did not start: {line:?}"));
    (child, format!("http://127.0.0.1:{port}"))
}
