//! A fixture apt repository the tests build themselves: packages made with `dpkg-deb`, a
//! `Packages` index, a `Release` with sha256 sums, an `InRelease` clear-signed with a throwaway
//! key (gpg), served over HTTP on 127.0.0.1.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::children::{first_line, Running};
use super::run;

pub struct Pkg {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Extra control fields (`Depends`, `Provides`, …).
    pub fields: Vec<(String, String)>,
    /// (path, content, mode)
    pub files: Vec<(String, Vec<u8>, u32)>,
}

impl Pkg {
    pub fn new(name: &str, version: &str) -> Pkg {
        Pkg { name: name.into(), version: version.into(), arch: "amd64".into(), fields: vec![], files: vec![] }
    }
    pub fn field(mut self, k: &str, v: &str) -> Pkg {
        self.fields.push((k.into(), v.into()));
        self
    }
    pub fn arch(mut self, a: &str) -> Pkg {
        self.arch = a.into();
        self
    }
    pub fn file(mut self, path: &str, content: &str, mode: u32) -> Pkg {
        self.files.push((path.into(), content.as_bytes().to_vec(), mode));
        self
    }
}

pub struct Repo {
    pub root: PathBuf,
    pub gnupg: PathBuf,
    pub keyring: PathBuf,
    debs: Vec<(Pkg, String /*filename*/)>,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

impl Repo {
    /// A new repository under `dir`, with a fresh signing key.
    pub fn new(dir: &Path) -> Repo {
        let root = dir.join("mirror");
        let gnupg = dir.join("gnupg");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&gnupg).unwrap();
        fs::set_permissions(&gnupg, fs::Permissions::from_mode(0o700)).unwrap();
        let repo = Repo { keyring: dir.join("fixture-keyring.gpg"), root, gnupg, debs: vec![] };
        run(repo.gpg().args(["--quick-gen-key", "compose fixture <fixture@example.invalid>", "ed25519", "sign", "never"]));
        let out = run(repo.gpg().args(["--export"]));
        fs::write(&repo.keyring, out.stdout).unwrap();
        repo
    }

    pub fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &self.gnupg).args(["--batch", "--yes", "--passphrase", "", "--pinentry-mode", "loopback"]);
        c.stdin(Stdio::null());
        c
    }

    /// Build `p` with dpkg-deb into the pool.
    pub fn add(&mut self, p: Pkg) {
        let tree = self.root.join("../build").join(format!("{}_{}", p.name, p.version));
        let _ = fs::remove_dir_all(&tree);
        fs::create_dir_all(tree.join("DEBIAN")).unwrap();
        let mut control = format!(
            "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: Fixture <fixture@example.invalid>\n",
            p.name, p.version, p.arch
        );
        for (k, v) in &p.fields {
            let _ = writeln!(control, "{k}: {v}");
        }
        control.push_str("Description: fixture package\n");
        fs::write(tree.join("DEBIAN/control"), &control).unwrap();
        for (path, content, mode) in &p.files {
            let f = tree.join(path.trim_start_matches('/'));
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(&f, content).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(*mode)).unwrap();
        }
        let filename = format!("pool/main/{}_{}_{}.deb", p.name, p.version.replace(':', "%3a"), p.arch);
        let dest = self.root.join(&filename);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&tree).arg(&dest).stdout(Stdio::null()));
        self.debs.push((p, filename));
    }

    /// Write `dists/SUITE/{Release,InRelease}` and `main/binary-amd64/Packages{,.gz}`.
    pub fn publish(&self, suite: &str) {
        let mut packages = String::new();
        for (p, filename) in &self.debs {
            let bytes = fs::read(self.root.join(filename)).unwrap();
            let _ = write!(
                packages,
                "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: Fixture <fixture@example.invalid>\n",
                p.name, p.version, p.arch
            );
            for (k, v) in &p.fields {
                let _ = writeln!(packages, "{k}: {v}");
            }
            let _ = write!(
                packages,
                "Filename: {filename}\nSize: {}\nSHA256: {}\nDescription: fixture package\n\n",
                bytes.len(),
                sha256_hex(&bytes)
            );
        }
        let dist = self.root.join("dists").join(suite);
        let bin = dist.join("main/binary-amd64");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("Packages"), &packages).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(packages.as_bytes()).unwrap();
        fs::write(bin.join("Packages.gz"), gz.finish().unwrap()).unwrap();
        let mut release = format!(
            "Origin: Fixture\nLabel: Fixture\nSuite: {suite}\nCodename: {suite}\nDate: Sat, 01 Jan 2022 00:00:00 UTC\nArchitectures: amd64\nComponents: main\nSHA256:\n"
        );
        for name in ["main/binary-amd64/Packages", "main/binary-amd64/Packages.gz"] {
            let b = fs::read(dist.join(name)).unwrap();
            let _ = writeln!(release, " {} {} {name}", sha256_hex(&b), b.len());
        }
        fs::write(dist.join("Release"), &release).unwrap();
        run(self.gpg().arg("--clearsign").arg("--output").arg(dist.join("InRelease")).arg(dist.join("Release")));
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn filename_of(&self, name: &str) -> String {
        self.debs.iter().find(|(p, _)| p.name == name).map(|(_, f)| f.clone()).unwrap()
    }
}

/// A static HTTP server (python3's http.server) on loopback, stopped on drop. It binds port 0
/// itself and prints the port it got ("Serving HTTP on 127.0.0.1 port N (…"), so no other
/// process can take the port between choosing and binding it.
pub struct Server {
    _child: Running,
    pub url: String,
}

impl Server {
    pub fn start(root: &Path) -> Server {
        let mut child = Running::new(
            Command::new("python3")
                .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
                .arg(root)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 -m http.server"),
        );
        let line = first_line(&mut child).unwrap_or_default();
        let port: u16 = line
            .split(" port ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("fixture HTTP server did not start: {line:?}"));
        Server { _child: child, url: format!("http://127.0.0.1:{port}") }
    }
}
