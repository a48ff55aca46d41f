//! The sandbox build steps run in: runc (the OCI runtime under podman and BuildKit), driven with a
//! generated bundle config, one `runc run` per command, over an overlay of the step's image.
//!
//! Owns the runtime configuration (namespaces: mount, PID, IPC, UTS, cgroup and, for hermetic
//! steps, network with only `lo`; Docker's default capabilities; a fresh `/tmp`; read-only input
//! mounts; the host's resolver and named settings files for fixed-output steps), finding runc and
//! saying what is missing when it cannot run, and streaming a command's output line by line.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("build steps run in runc, which was not found on PATH or in /usr/sbin, /usr/bin, /sbin")]
    NoRunc,
    #[error("build steps need root (runc over an overlay mount); this process runs as uid {0}")]
    NotRoot(u32),
    #[error("cannot mount an overlay for the step at `{path}` (build steps need overlayfs)")]
    Overlay {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot {action} `{path}`")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("runc failed to start the command: {0}")]
    Runc(String),
}

/// A bind mount into the sandbox.
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: String,
}

/// One command to run.
pub struct Command1<'a> {
    pub rootfs: &'a Path,
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: &'a str,
    pub user: (u32, u32),
    /// Share the host's network (fixed-output steps); otherwise a network namespace with `lo`.
    pub network: bool,
    /// Read-only bind mounts.
    pub binds: &'a [Bind],
}

/// Finds runc, and checks this process can run it as steps need.
pub fn runc() -> Result<PathBuf, SandboxError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err(SandboxError::NotRoot(uid));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join("runc"))
        .find(|p| p.is_file())
        .ok_or(SandboxError::NoRunc)
}

/// Docker's default capability set.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The OCI runtime config of one command.
pub fn config(c: &Command1<'_>) -> serde_json::Value {
    let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"})];
    if !c.network {
        namespaces.push(json!({"type": "network"}));
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}),
    ];
    if c.network {
        // sysfs cannot be mounted fresh without a network namespace of one's own.
        mounts.push(
            json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "ro", "nosuid", "noexec", "nodev"]}),
        );
    } else {
        mounts.push(json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}));
    }
    for b in c.binds {
        mounts.push(json!({"destination": b.destination, "type": "bind", "source": b.source, "options": ["rbind", "ro"]}));
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": c.user.0, "gid": c.user.1},
            "args": c.args,
            "env": c.env,
            "cwd": c.cwd,
            "capabilities": {"bounding": CAPS, "effective": CAPS, "permitted": CAPS},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": c.rootfs, "readonly": false},
        "hostname": "compose",
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                            "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// Run one command in the sandbox; `line` gets each line it prints (stdout and stderr, as they
/// come). Returns the command's exit code (128+N for a signal).
pub fn run(runc: &Path, work: &Path, c: &Command1<'_>, line: &mut dyn FnMut(&str)) -> Result<i32, SandboxError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Io { action, path, source }
    };
    let bundle = work.join(format!("bundle-{}", RUNS.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&bundle).map_err(io("create", &bundle))?;
    let config_path = bundle.join("config.json");
    let bytes = serde_json::to_vec_pretty(&config(c)).unwrap_or_default();
    std::fs::write(&config_path, bytes).map_err(io("write", &config_path))?;
    let state = work.join("runc-state");
    let id = format!("compose-{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
    let mut child = Command::new(runc)
        .arg("--root")
        .arg(&state)
        .args(["run", "--no-new-keyring", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("run", runc))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let pipes: Vec<Box<dyn Read + Send>> = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(p);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    // A line without an end is passed on every 64 KiB rather than held whole.
                    match (&mut r).take(64 * 1024).read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let s = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                            if tx.send(s).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    drop(tx);
    for l in rx {
        line(&l);
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().map_err(io("wait for", runc))?;
    // runc removes a container that ran to its end; make sure of it.
    let _ = Command::new(runc).arg("--root").arg(&state).args(["delete", "--force", &id]).stderr(Stdio::null()).status();
    let _ = std::fs::remove_dir_all(&bundle);
    use std::os::unix::process::ExitStatusExt;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Mount an overlay of `lower` (leftmost on top) with `upper` and `work` at `target`.
pub fn mount_overlay(lower: &[&Path], upper: &Path, work: &Path, target: &Path) -> Result<(), SandboxError> {
    let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let opts = format!("lowerdir={},upperdir={},workdir={}", lowers.join(":"), upper.display(), work.display());
    let cstr = |s: &str| std::ffi::CString::new(s).map_err(|_| SandboxError::Runc(format!("a path holds a NUL byte: {s}")));
    let (src, tgt, fstype, data) = (cstr("overlay")?, cstr(&target.display().to_string())?, cstr("overlay")?, cstr(&opts)?);
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
    if rc != 0 {
        return Err(SandboxError::Overlay { path: target.to_path_buf(), source: io::Error::last_os_error() });
    }
    Ok(())
}

/// Unmount `target` (lazily, so a process still holding it cannot keep the work directory busy).
pub fn unmount(target: &Path) {
    if let Ok(t) = std::ffi::CString::new(target.display().to_string()) {
        // SAFETY: `t` is a valid NUL-terminated path.
        unsafe {
            libc::umount2(t.as_ptr(), libc::MNT_DETACH);
        }
    }
}
