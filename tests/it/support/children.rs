//! Processes the tests start and the ports they serve on: a guard that kills a child when dropped
//! (a failed assertion must not leave a server or a build running), waiting on a condition rather
//! than for a fixed time, the port a child listens on as the kernel reports it, the port a child
//! prints on its first line, and a port that is sure to refuse connections.

use std::io::BufRead;
use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed when dropped (a failed assertion must not leave it running, holding
/// whatever it inherited).
pub struct Running(Option<Child>);

impl Running {
    pub fn new(child: Child) -> Running {
        Running(Some(child))
    }

    /// Waits for it to end on its own, with what it printed.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        self.0.take().expect("a running child").wait_with_output()
    }
}

impl Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a running child")
    }
}

impl DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a running child")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `ready` every 20 ms until it gives a value; panics naming `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} (waited {limit:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The TCP port `pid` listens on, as the kernel reports it: the listening socket in
/// `/proc/PID/net/tcp` whose inode is one of the process's open files. For a server told to
/// bind port 0, which picks a free port itself and keeps it.
pub fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    // `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode`; 0A is LISTEN.
    table.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>()).find_map(|f| {
        if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
            u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()
        } else {
            None
        }
    })
}

/// The first line `child` prints on stdout (within 10 s), for a server that binds port 0 and
/// prints the port it got. The rest of its output is read and dropped, so it never blocks on a
/// full pipe.
pub fn first_line(child: &mut Child) -> Option<String> {
    let out = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(out).lines().map_while(Result::ok);
        if let Some(first) = lines.next() {
            let _ = tx.send(first);
        }
        lines.for_each(drop);
    });
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

/// A loopback port bound and never listened on: connections to it are refused for as long as it
/// lives, and no other process can take it meanwhile (a port freed and guessed could be).
pub struct DeadPort {
    _socket: OwnedFd,
    pub port: u16,
}

impl DeadPort {
    pub fn new() -> DeadPort {
        // SAFETY: socket(2) takes no pointers; the descriptor it returns is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_in is plain data; all zeroes is a valid value (port 0: the kernel picks).
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` and `len` are live locals of the sizes given.
        let bound = unsafe { libc::bind(fd, (&raw const addr).cast(), len) };
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        // SAFETY: as above; getsockname writes at most `len` bytes into `addr`.
        let named = unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &mut len) };
        assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
        DeadPort { _socket: socket, port: u16::from_be(addr.sin_port) }
    }
}
