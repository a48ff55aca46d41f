//! Podman for the tests: one configured for these machines with storage under the test's
//! directory, and the load-and-run of an OCI layout the tests use to check what runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{run, TestContext};

/// A podman configured for these machines (runc, lowered ulimits, no network), with its own
/// storage under the test's directory.
pub struct Podman {
    root: PathBuf,
    conf: PathBuf,
}

impl Podman {
    pub fn new(base: &Path) -> Podman {
        let root = base.join("podman");
        fs::create_dir_all(&root).expect("mkdir");
        let conf = root.join("containers.conf");
        fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\nnetns = \"none\"\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .expect("write containers.conf");
        Podman { root, conf }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .arg("--storage-driver")
            .arg("vfs")
            .stdin(Stdio::null());
        c
    }
}

/// Load `out/<name>` (an OCI layout) into podman as `localhost/<name>:<tag>` and run it.
pub fn podman_run(ctx: &TestContext, layout: &Path, name: &str, tag: &str, args: &[&str]) -> String {
    let archive = ctx.tmp.path().join(format!("{name}.tar"));
    let _ = fs::remove_file(&archive);
    run(std::process::Command::new("skopeo")
        .arg("copy")
        .arg("-q")
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("oci-archive:{}:localhost/{name}:{tag}", archive.display())));
    let podman = Podman::new(ctx.tmp.path());
    run(podman.cmd().arg("load").arg("-q").arg("-i").arg(&archive));
    let out = run(podman.cmd().args(["run", "--rm", &format!("localhost/{name}:{tag}")]).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
