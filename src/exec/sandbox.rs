//! The sandbox build steps run in: runc (the OCI runtime under podman and BuildKit), driven with a
//! generated bundle config, one `runc run` per command, over an overlay of the step's image.
//!
//! Owns the runtime configuration and what a step can and cannot reach from it:
//! - namespaces: mount, PID, IPC, UTS, cgroup and, for hermetic steps, network with only `lo`;
//! - capabilities: Docker's default set; fixed-output steps (on the host's network) without
//!   `CAP_NET_RAW` and `CAP_MKNOD`; no new privileges;
//! - Docker's default seccomp profile (`seccomp`): no new namespaces, mounts, keyrings,
//!   `bpf`, modules…; a new session keyring per command;
//! - a fresh sysfs, read-only, without the cgroup tree; podman's masked and read-only `/proc`
//!   and `/sys` paths; the devices cgroup denying every device but runc's defaults;
//! - limits ([`Limits`]): processes, memory (no swap past it), CPU, wall-clock time, and disk (the
//!   step's own writes, and a floor of free space on the store's file system); a command past a
//!   limit is killed with its whole process tree and the step fails saying which limit;
//! - interruption: [`interrupt`] (the CLI calls it on SIGINT/SIGTERM) kills every running
//!   command's process tree and refuses new ones; containers left by a killed compose are
//!   killed by the next build that opens the store alone (their runc state is in its `tmp/`,
//!   [`crate::store::RUNC_STATE`]);
//! - one `/tmp` per job run (a directory of its work directory, shared by its commands), the
//!   declared caches read-write, read-only input and secret mounts, the host's resolver and named settings
//!   files for fixed-output steps; finding runc and saying what is missing when it cannot run,
//!   and streaming a command's output line by line.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("build steps run in runc, which was not found on PATH or in /usr/sbin, /usr/bin, /sbin")]
    NoRunc,
    #[error("build steps need root or a user namespace of this user's, and this process (uid {0}) has neither")]
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
    #[error("the build was interrupted")]
    Interrupted,
}

/// A bind mount into the sandbox (read-only).
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: String,
}

/// What a step may use. Limits are not part of a step's key: a result is the same under any
/// limit that lets it finish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Processes and threads at once (`pids.max`).
    pub pids: u64,
    /// Memory in bytes (swap included: none past it).
    pub memory: u64,
    /// CPUs' worth of time (`cpu.cfs_quota_us` over a 100 ms period); `None`: all.
    pub cpus: Option<f64>,
    /// Wall-clock time of each command.
    pub time: Duration,
    /// Bytes the step may write (its overlay's upper directory, files by apparent size); `None`:
    /// only the store's floor of free space ([`STORE_FLOOR`]) bounds it.
    pub disk: Option<u64>,
}

/// Default process limit of a step.
pub const DEFAULT_PIDS: u64 = 4096;
/// Default time limit of each command of a step.
pub const DEFAULT_TIME: Duration = Duration::from_secs(60 * 60);

impl Limits {
    /// The defaults: 4096 processes, half the machine's memory, every CPU, an hour per command,
    /// and disk bounded by the store's floor of free space.
    pub fn defaults() -> Limits {
        Limits { pids: DEFAULT_PIDS, memory: default_memory(), cpus: None, time: DEFAULT_TIME, disk: None }
    }
}

/// Half the machine's memory (4 GiB when it cannot be read).
pub fn default_memory() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
    });
    total.map_or(4 << 30, |kib| kib * 1024 / 2)
}

/// A step is stopped when the file system holding its writes has less free than this, or than 2%
/// of its size if that is more: a step never fills the store's disk.
pub const STORE_FLOOR: u64 = 1 << 30;

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
    pub limits: &'a Limits,
    /// Where the command's writes land (the overlay's upper directory), for the disk limit.
    pub upper: &'a Path,
    /// The job's `/tmp`: one directory for all its commands, fresh for each run of the job,
    /// counted in its disk limit.
    pub tmp: &'a Path,
    /// Read-write bind mounts: the step's declared caches.
    pub caches: &'a [Bind],
}

/// Why a command was stopped before it ended by itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Stopped {
    /// Past its time limit.
    Time(Duration),
    /// It wrote more than its disk limit (bytes written when stopped).
    Disk { limit: u64, used: u64 },
    /// The store's file system came down to its floor of free space.
    StoreFull { free: u64 },
    /// The build was interrupted.
    Interrupted,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// Its exit code (128+N for a signal).
    pub code: i32,
    /// Stopped by the sandbox, and why.
    pub stopped: Option<Stopped>,
    /// The kernel killed a process of it for want of memory.
    pub out_of_memory: bool,
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

/// Not given to a step on the host's network: raw sockets would see (and forge) the host's
/// traffic, and device nodes are no business of a download.
const NOT_ON_HOST_NETWORK: &[&str] = &["CAP_NET_RAW", "CAP_MKNOD"];

/// Paths of `/proc` and `/sys` hidden from a step (podman's and Docker's lists).
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
    "/sys/fs/selinux",
];
/// Paths of `/proc` a step may read and not write.
const READ_ONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// The cgroup of a running command, below each hierarchy's root.
fn cgroup_path(id: &str) -> String {
    crate::store::step_cgroup(id)
}

/// Does the memory controller account swap (cgroup v1 `memsw`, v2 `memory.swap.max`)? runc
/// refuses a swap limit where it does not.
fn swap_accounted() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() || Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Does this process run in a user namespace (a rootless build, see the CLI's `rootless`)? There
/// the host's cgroups cannot be written: steps run without cgroup limits.
pub fn rootless() -> bool {
    static ROOTLESS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOTLESS.get_or_init(|| {
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let first: Vec<&str> = map.split_whitespace().take(3).collect();
        first != ["0", "0", "4294967295"]
    })
}

/// The OCI runtime config of one command, run in cgroup `cgroup`.
fn config(c: &Command1<'_>, cgroup: &str) -> serde_json::Value {
    let mut namespaces =
        vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "uts"}), json!({"type": "mount"}), json!({"type": "cgroup"})];
    if !c.network {
        namespaces.push(json!({"type": "network"}));
    }
    let caps: Vec<&str> = CAPS.iter().copied().filter(|cap| !c.network || !NOT_ON_HOST_NETWORK.contains(cap)).collect();
    // A fresh sysfs, read-only: it holds no cgroup tree (that is a mount of its own, which a step
    // never gets), so nothing of the host's cgroups, devices or firmware can be written.
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/tmp", "type": "bind", "source": c.tmp, "options": ["rbind", "nosuid", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    // In a user namespace, a sysfs can only be mounted for a network namespace of its own: a
    // step on the host's network gets an empty, read-only /sys instead.
    if c.network && rootless() {
        mounts.pop();
        mounts.push(
            json!({"destination": "/sys", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "noexec", "nodev", "ro", "size=4k"]}),
        );
    }
    for b in c.binds {
        // `rro`: read-only all the way down (a plain `ro` leaves mounts below the source writable).
        mounts.push(json!({"destination": b.destination, "type": "bind", "source": b.source,
                           "options": ["rbind", "rro", "nosuid", "nodev"]}));
    }
    for b in c.caches {
        mounts.push(json!({"destination": b.destination, "type": "bind", "source": b.source,
                           "options": ["rbind", "nosuid", "nodev"]}));
    }
    let l = c.limits;
    let mut memory = json!({"limit": l.memory});
    if swap_accounted() {
        memory["swap"] = json!(l.memory);
    }
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "pids": {"limit": l.pids},
        "memory": memory,
    });
    if let Some(cpus) = l.cpus {
        resources["cpu"] = json!({"quota": (cpus * 100_000.0).round() as i64, "period": 100_000u64});
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroup,
        "resources": resources,
        "seccomp": super::seccomp::profile(),
        "maskedPaths": MASKED,
        "readonlyPaths": READ_ONLY
    });
    if rootless() {
        // No cgroups to write: no limits there (time and disk are the watchdog's).
        if let Some(l) = linux.as_object_mut() {
            l.remove("cgroupsPath");
            l.remove("resources");
        }
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": c.user.0, "gid": c.user.1},
            "args": c.args,
            "env": c.env,
            "cwd": c.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": c.rootfs, "readonly": false},
        "hostname": "compose",
        "mounts": mounts,
        "linux": linux
    })
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// Set once the build is interrupted: no command starts after it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The commands running now: (runc, its state directory, container id).
static LIVE: Mutex<Vec<(PathBuf, PathBuf, String)>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<(PathBuf, PathBuf, String)>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kill container `id` and every process in it.
fn kill(runc: &Path, state: &Path, id: &str) {
    // Without cgroups (rootless) runc cannot find "all" of them; killing the init of the
    // container's PID namespace kills every process in it.
    let args: &[&str] = if rootless() { &["kill", id, "KILL"] } else { &["kill", "--all", id, "KILL"] };
    let _ = Command::new(runc).arg("--root").arg(state).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Stop every running command, with its whole process tree, and refuse to start new ones; returns
/// once none runs (or after `wait`, whichever comes first). The CLI calls this on SIGINT/SIGTERM.
pub fn interrupt(wait: Duration) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let until = Instant::now() + wait;
    loop {
        let running: Vec<_> = live().clone();
        if running.is_empty() || Instant::now() >= until {
            return;
        }
        for (runc, state, id) in &running {
            kill(runc, state, id);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Has the build been interrupted?
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Bytes under `dir`, files by apparent size (a sparse file counts whole: its tree would).
fn used(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len().max(m.blocks() * 512))
        .sum()
}

/// The free bytes of the file system holding `dir`, when they are below its floor
/// ([`STORE_FLOOR`], or 2% of its size if that is more).
fn below_floor(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the struct it is given; the path is a valid NUL-terminated string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let size = st.f_blocks as u64 * st.f_frsize as u64;
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    (free < STORE_FLOOR.max(size / 50)).then_some(free)
}

/// How many processes of cgroup `cgroup` the kernel killed for want of memory so far.
fn oom_kills(cgroup: &str) -> u64 {
    let read = |p: String, key: &str| {
        std::fs::read_to_string(p).ok().and_then(|t| t.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok())))
    };
    read(format!("/sys/fs/cgroup/memory{cgroup}/memory.oom_control"), "oom_kill ")
        .or_else(|| read(format!("/sys/fs/cgroup{cgroup}/memory.events"), "oom_kill "))
        .unwrap_or(0)
}

/// Run one command in the sandbox; `line` gets each line it prints (stdout and stderr, as they
/// come). Returns how it ended: its exit code, and whether the sandbox stopped it at a limit.
pub fn run(runc: &Path, work: &Path, c: &Command1<'_>, line: &mut dyn FnMut(&str)) -> Result<Ended, SandboxError> {
    let bundle = work.join(format!("bundle-{}", RUNS.fetch_add(1, Ordering::Relaxed)));
    let state = work.join(crate::store::RUNC_STATE);
    let id = format!("compose-{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
    let cgroup = cgroup_path(&id);
    let mut child = spawn(runc, &bundle, &state, &id, &config(c, &cgroup))?;
    let lines = forward_output(&mut child);
    // The watchdog: time, disk and the store's floor, checked until the command ends.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let container = Container { runc: runc.to_path_buf(), state: state.clone(), id: id.clone(), cgroup };
        let (writes, limits) = ([c.upper.to_path_buf(), c.tmp.to_path_buf()], *c.limits);
        std::thread::spawn(move || watch(&container, &writes, limits, &done_rx))
    };
    for l in lines {
        line(&l);
    }
    let status = child.wait().map_err(|source| SandboxError::Io { action: "wait for", path: runc.to_path_buf(), source });
    let _ = done_tx.send(());
    let (stopped, out_of_memory) = watchdog.join().unwrap_or((None, false));
    // runc removes a container that ran to its end (its state with it); make sure of it.
    if state.join(&id).symlink_metadata().is_ok() {
        let _ = Command::new(runc).arg("--root").arg(&state).args(["delete", "--force", &id]).stderr(Stdio::null()).status();
    }
    crate::store::remove_step_cgroups(&id);
    live().retain(|(_, _, i)| *i != id);
    let _ = std::fs::remove_dir_all(&bundle);
    let status = status?;
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let stopped = stopped.or_else(|| interrupted().then_some(Stopped::Interrupted));
    Ok(Ended { code, stopped, out_of_memory })
}

/// Write the bundle's `config.json` and start `runc run` on it, registered as live (so an
/// interruption kills it) and dying with compose.
fn spawn(runc: &Path, bundle: &Path, state: &Path, id: &str, config: &serde_json::Value) -> Result<std::process::Child, SandboxError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Io { action, path, source }
    };
    std::fs::create_dir_all(bundle).map_err(io("create", bundle))?;
    let config_path = bundle.join("config.json");
    let bytes = serde_json::to_vec_pretty(config).unwrap_or_default();
    std::fs::write(&config_path, bytes).map_err(io("write", &config_path))?;
    let mut running = live();
    if interrupted() {
        return Err(SandboxError::Interrupted);
    }
    let mut cmd = Command::new(runc);
    cmd.arg("--root").arg(state).args(["run", "--bundle"]).arg(bundle).arg(id);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // runc dies with compose (the next build kills what it ran, from its state).
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(io("run", runc))?;
    running.push((runc.to_path_buf(), state.to_path_buf(), id.to_string()));
    Ok(child)
}

/// The lines `child` prints on stdout and stderr, as they come, until both close.
fn forward_output(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let pipes: Vec<Box<dyn Read + Send>> = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for p in pipes {
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
        });
    }
    rx
}

/// A running container: how to kill it, and its cgroup.
struct Container {
    runc: PathBuf,
    state: PathBuf,
    id: String,
    cgroup: String,
}

/// Watch a running command until `done` says it ended: stop it at its time or disk limit (what it
/// wrote: `writes`, its upper directory and its `/tmp`), at the
/// store's floor, or when the build is interrupted. Returns why it was stopped, and whether the
/// kernel killed a process of it for want of memory.
fn watch(c: &Container, writes: &[PathBuf; 2], limits: Limits, done: &std::sync::mpsc::Receiver<()>) -> (Option<Stopped>, bool) {
    let started = Instant::now();
    let mut tick = Duration::from_millis(200);
    let mut oom = 0;
    loop {
        let stop = if interrupted() {
            Some(Stopped::Interrupted)
        } else if started.elapsed() >= limits.time {
            Some(Stopped::Time(limits.time))
        } else if let Some(free) = below_floor(&writes[0]) {
            Some(Stopped::StoreFull { free })
        } else if let Some(limit) = limits.disk {
            // A walk of the writes costs what they hold: look less often when it is long.
            let t = Instant::now();
            let n = writes.iter().map(|w| used(w)).sum();
            tick = (t.elapsed() * 20).clamp(Duration::from_millis(200), Duration::from_secs(5));
            (n > limit).then_some(Stopped::Disk { limit, used: n })
        } else {
            None
        };
        oom = oom.max(oom_kills(&c.cgroup));
        if let Some(stop) = stop {
            kill(&c.runc, &c.state, &c.id);
            return (Some(stop), oom > 0);
        }
        let left = limits.time.saturating_sub(started.elapsed());
        match done.recv_timeout(tick.min(left.max(Duration::from_millis(10)))) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // Ended: a last look, as the cgroup may still hold its count.
            _ => return (None, oom.max(oom_kills(&c.cgroup)) > 0),
        }
    }
}

/// Mount an overlay of `lower` (leftmost on top) with `upper` and `work` at `target`: the kernel's,
/// or in a user namespace where the kernel refuses it, fuse-overlayfs's.
pub fn mount_overlay(lower: &[&Path], upper: &Path, work: &Path, target: &Path) -> Result<(), SandboxError> {
    let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let opts = format!("lowerdir={},upperdir={},workdir={}", lowers.join(":"), upper.display(), work.display());
    let forced = std::env::var_os("COMPOSE_FUSE_OVERLAYFS").is_some_and(|v| v == "1");
    // In a user namespace the kernel keeps its marks (opaque directories) in `user.` xattrs.
    let kernel_opts = if rootless() { format!("{opts},userxattr") } else { opts.clone() };
    let cstr = |s: &str| std::ffi::CString::new(s).map_err(|_| SandboxError::Runc(format!("a path holds a NUL byte: {s}")));
    let (src, tgt, fstype, data) = (cstr("overlay")?, cstr(&target.display().to_string())?, cstr("overlay")?, cstr(&kernel_opts)?);
    // `volatile`: the kernel never syncs the upper directory (a job's writes are read once and
    // thrown away, and a crash leaves only `tmp/` to remove), so neither the job nor its unmount
    // waits for the disk. A kernel before 5.10 refuses it: the same mount without.
    let volatile = cstr(&format!("{kernel_opts},volatile"))?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let mount = |data: &std::ffi::CString| unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
    let rc = if forced {
        -1
    } else if mount(&volatile) == 0 {
        0
    } else {
        mount(&data)
    };
    if rc != 0 {
        let source = io::Error::last_os_error();
        // A kernel that refuses overlayfs in a user namespace: fuse-overlayfs, as rootless
        // podman does (COMPOSE_FUSE_OVERLAYFS=1 asks for it).
        if rootless() || forced {
            match Command::new("fuse-overlayfs").arg("-o").arg(&opts).arg(target).stdout(Stdio::null()).output() {
                Ok(out) if out.status.success() => return Ok(()),
                Ok(out) if forced => {
                    let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    return Err(SandboxError::Runc(format!("fuse-overlayfs could not mount the step's root: {why}")));
                }
                _ => {}
            }
        }
        return Err(SandboxError::Overlay { path: target.to_path_buf(), source });
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
