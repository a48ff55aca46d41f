//! Cleaning up after killed builds and jobs: leftover temporary files and half-unpacked images,
//! containers a killed build left running (from their runc state) and their cgroups, mounts
//! below a directory, and removing read-only trees.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{io_err, StoreError, RUNC_STATE, UNPACKING_PREFIX};

/// The cgroup (below each hierarchy's root) the sandbox runs container `id` in.
pub fn step_cgroup(id: &str) -> String {
    format!("/compose/{id}")
}

/// Remove container `id`'s cgroups where runc left them (it was killed before it could), waiting
/// up to a second for its killed processes to leave them.
pub fn remove_step_cgroups(id: &str) {
    let rel = step_cgroup(id);
    let mut dirs: Vec<PathBuf> = vec![PathBuf::from(format!("/sys/fs/cgroup{rel}"))];
    for h in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        dirs.push(h.path().join(rel.trim_start_matches('/')));
    }
    dirs.retain(|d| d.is_dir());
    for _ in 0..20 {
        dirs.retain(|d| fs::remove_dir(d).is_err() && d.is_dir());
        if dirs.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kill every container whose runc state lies in a work directory under `dir` (a store's
/// `tmp/`): what a killed compose left running. Only the process runc started is killed (its
/// start time must match), and with it, as the init of its PID namespace, all of the step; its
/// cgroups go too.
pub(super) fn reap_containers(dir: &Path) {
    for work in fs::read_dir(dir).into_iter().flatten().flatten() {
        for c in fs::read_dir(work.path().join(RUNC_STATE)).into_iter().flatten().flatten() {
            let Ok(text) = fs::read_to_string(c.path().join("state.json")) else { continue };
            let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            let pid = doc.get("init_process_pid").and_then(|v| v.as_i64()).unwrap_or(0);
            let start = doc.get("init_process_start").and_then(|v| v.as_u64());
            // Field 22 of /proc/PID/stat, after the command's name in parentheses.
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let started = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(19)).and_then(|v| v.parse::<u64>().ok());
            if pid > 1 && start.is_some() && started == start {
                // SAFETY: kill takes no pointers; the pid is the container's init, checked by its start time.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            if let Some(id) = c.file_name().to_str() {
                remove_step_cgroups(id);
            }
        }
    }
}

/// Remove everything in `dir` (a store's `tmp/`): files, build steps' work directories (their
/// containers killed and their overlay mounts detached first, left by a killed build) and
/// directories made read-only by what ran in them. Returns how many entries went.
pub(super) fn clean_dir(dir: &Path) -> u64 {
    let entries: Vec<fs::DirEntry> = fs::read_dir(dir).into_iter().flatten().flatten().collect();
    if entries.is_empty() {
        // The usual case, on every build's start: no mount table to read.
        return 0;
    }
    reap_containers(dir);
    unmount_below(dir);
    let mut n = 0;
    for e in entries {
        let p = e.path();
        if fs::remove_file(&p).is_ok() || remove_any(&p) {
            n += 1;
        }
    }
    n
}

/// The directories of images being unpacked in `rootfs` (see [`UNPACKING_PREFIX`]).
pub(super) fn unpacking(rootfs: &Path) -> Vec<PathBuf> {
    let rd = fs::read_dir(rootfs).into_iter().flatten().flatten();
    rd.filter(|e| e.file_name().as_encoded_bytes().starts_with(UNPACKING_PREFIX.as_bytes())).map(|e| e.path()).collect()
}

/// Remove the half-unpacked images a killed build left in `rootfs` (alone on the store: nobody
/// is unpacking). Returns how many went.
pub(super) fn clean_unpacking(rootfs: &Path) -> u64 {
    unpacking(rootfs).iter().filter(|p| remove_any(p)).count() as u64
}

/// Remove whatever is at `p`: a file, a symlink, or a directory tree (made writable first, as
/// what was unpacked or run in it may have left it read-only). True if it went.
pub fn remove_any(p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => remove_tree(p),
        Ok(_) => fs::remove_file(p).is_ok(),
        Err(_) => false,
    }
}

/// Remove the directory tree at `root`, however deep, with a few file descriptors and short
/// paths: each directory below its first level is moved up to that level before it is emptied
/// (a step can leave a chain of directories 20,000 deep, past `PATH_MAX` and the open-file limit
/// a recursive removal needs), and each is made writable first. Never follows a link. True if
/// it went.
fn remove_tree(root: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let writable = |d: &Path| {
        if let Ok(m) = fs::symlink_metadata(d) {
            let _ = fs::set_permissions(d, fs::Permissions::from_mode(m.permissions().mode() | 0o700));
        }
    };
    let mut moved = 0u64;
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        writable(&dir);
        let entries: Vec<fs::DirEntry> = match fs::read_dir(&dir) {
            Ok(rd) => rd.flatten().collect(),
            Err(_) => continue,
        };
        for e in entries {
            let p = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir {
                let _ = fs::remove_file(&p);
            } else if dir == root {
                todo.push(p);
            } else {
                // Up to the first level, under a name nothing there has.
                loop {
                    moved += 1;
                    let to = root.join(format!(".compose-rm-{moved}"));
                    if to.symlink_metadata().is_err() {
                        if fs::rename(&p, &to).is_ok() {
                            todo.push(to);
                        }
                        break;
                    }
                }
            }
        }
        // Empty now: what was below it is on the first level, still to do.
        if dir != *root {
            let _ = fs::remove_dir(&dir);
        }
    }
    fs::remove_dir(root).is_ok()
}

/// Detach every mount below `dir` (deepest first).
pub(super) fn unmount_below(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(&dir) && *m != dir)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid NUL-terminated path; umount2 only reads it.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// `/proc/self/mountinfo` writes space, tab, newline and backslash in paths as `\ooo`.
pub(super) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn set_readonly(p: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o444)).map_err(io_err("set permissions of", p))
}
