//! Rootless builds: a user other than root runs compose in a user namespace of its own, where it
//! is root over its subordinate ids (`/etc/subuid`, `/etc/subgid`), as rootless podman does.
//! util-linux's `unshare --map-auto` maps them (through `newuidmap` and `newgidmap`, from
//! Debian's uidmap), and the namespace has its own mounts: compose unpacks trees with their owners,
//! mounts overlays and runs runc in it unchanged, and every file it makes is the user's (or one of
//! the user's subordinate ids) on the host.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// When this process is not root: run this command again as root of a user namespace of its
/// own, over the user's subordinate ids, and in a PID namespace of its own, so that whatever it
/// starts dies with it (this call then never returns but with an error to report). Nothing when
/// that cannot be: builds without steps need no namespace, and a step says what is missing.
pub fn enter() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return None;
    }
    let unshare = ["/usr/bin/unshare", "/bin/unshare"].into_iter().map(PathBuf::from).find(|p| p.is_file())?;
    let user = compose::util::account_name(uid)?;
    let has_range = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(':').next().is_some_and(|n| n == user || n == uid.to_string()))
    };
    let mapper = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain([PathBuf::from("/usr/bin")])
            .any(|d| d.join(name).is_file())
    };
    if !has_range("/etc/subuid") || !has_range("/etc/subgid") || !mapper("newuidmap") || !mapper("newgidmap") {
        return None;
    }
    let args = ["--map-auto", "--map-root-user", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private"];
    // Where user namespaces are refused (a sysctl, a security module), carry on without.
    let works = std::process::Command::new(&unshare)
        .args(args)
        .arg("true")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let err = std::process::Command::new(unshare).args(args).arg("--").arg(exe).args(std::env::args_os().skip(1)).exec();
    Some(format!("cannot run compose in a user namespace of its own (unshare --map-auto): {err}"))
}
