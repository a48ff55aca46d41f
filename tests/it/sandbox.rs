//! The step sandbox against hostile steps, with runc and busybox from the archive this machine's
//! apt uses: every escape a step tries fails or is contained, limits stop what runs away, an
//! interrupted build leaves no process behind, secrets reach the step and nothing else, and the
//! host is unchanged afterwards.

use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::children::Running;
use crate::support::steps::busybox_tools;
use crate::support::*;

/// The image the steps run in: busybox, and keyutils for the keyring probes.
fn tools() -> String {
    busybox_tools("keyutils")
}

/// Tries each escape and writes what held and what did not to /out/report (never failing, so
/// the report is seen whole). `$1` is the host key the step must not reach.
const PROBE: &str = r#"#!/bin/sh
r=/out/report
esc() { echo "ESCAPED: $1" >> $r; }
held() { echo "held: $1" >> $r; }
# The host's cgroup tree is not there, and nothing of /sys or /proc/sys can be written.
if [ -n "$(busybox ls -A /sys/fs/cgroup 2>/dev/null)" ]; then esc "the cgroup tree is visible"; else held cgroup-tree; fi
if busybox mkdir /sys/fs/cgroup/escape 2>/dev/null || busybox mkdir /sys/fs/cgroup/devices/escape 2>/dev/null; then esc "made a cgroup"; else held cgroup-mkdir; fi
if echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null; then esc "wrote to sysfs"; else held sysfs; fi
if echo 1 > /proc/sys/kernel/sysrq 2>/dev/null; then esc "wrote to /proc/sys"; else held proc-sys; fi
if [ -s /proc/kcore ] || [ -s /proc/keys ]; then esc "/proc/kcore or /proc/keys readable"; else held proc-masked; fi
# Devices: the host's KVM and a loop block device, made by hand, cannot be opened.
busybox mknod /tmp/kvm c 10 232 2>/dev/null
busybox mknod /tmp/loop b 7 0 2>/dev/null
if [ -c /tmp/kvm ] && (exec 3</tmp/kvm) 2>/dev/null; then esc "opened /dev/kvm"; else held kvm; fi
if [ -b /tmp/loop ] && (exec 3</tmp/loop) 2>/dev/null; then esc "opened a loop device"; else held block-device; fi
# Namespaces: no user (or any other) namespace of its own.
if busybox unshare -U true 2>/dev/null; then esc "unshared a user namespace"; else held unshare-user; fi
if busybox unshare -m true 2>/dev/null; then esc "unshared a mount namespace"; else held unshare-mount; fi
# Keyrings: the host's session key can be neither read nor revoked.
if keyctl print "$1" >/dev/null 2>&1; then esc "read the host's key"; else held key-read; fi
if keyctl revoke "$1" >/dev/null 2>&1; then esc "revoked the host's key"; else held key-revoke; fi
if keyctl show @s 2>/dev/null | busybox grep -q compose-probe; then esc "sees the host's keyring"; else held keyring; fi
cap=$(busybox awk '/^CapEff/ {print $2}' /proc/self/status)
echo "caps: $cap" >> $r
true
"#;

/// Further checks of the fixed-output step: on the host's network, no raw sockets and no device
/// nodes, and what `pass-env` names passes as a value only.
const PROBE_NET: &str = r#"#!/bin/sh
r=/out/report
esc() { echo "ESCAPED: $1" >> $r; }
held() { echo "held: $1" >> $r; }
cap=0x$(busybox awk '/^CapEff/ {print $2}' /proc/self/status)
# CAP_NET_RAW is bit 13, CAP_MKNOD bit 27.
if [ $(( cap & 0x2000 )) -ne 0 ]; then esc "holds CAP_NET_RAW"; else held no-net-raw; fi
if [ $(( cap & 0x8000000 )) -ne 0 ]; then esc "holds CAP_MKNOD"; else held no-mknod; fi
if busybox arping -c1 -w1 -I lo 127.0.0.1 2>&1 | busybox grep -q 'not permitted'; then held raw-socket; else esc "opened a packet socket"; fi
if [ -e "$HOME/host-home-marker" ]; then esc "sees the host's home"; else held home; fi
if [ -n "$HOME" ]; then held home-value; else esc "HOME's value was not passed"; fi
if [ -e "$SSH_AUTH_SOCK" ]; then esc "sees the host's ssh agent"; else held agent; fi
# A certificate variable naming a file only its owner may read mounts nothing.
if [ -e "$NODE_EXTRA_CA_CERTS" ]; then esc "sees a private host file a variable names"; else held private-file; fi
# What mount-from-host names is read-only all the way down, mounts below it included.
if echo x > /h/top 2>/dev/null || echo x > /h/sub/planted 2>/dev/null; then esc "wrote through mount-from-host"; else held host-mount-ro; fi
true
"#;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if !e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(c) = fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(marker) {
                found.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Waits until no process's command line holds `marker`, for `limit` at most; returns those left.
fn wait_gone(marker: &str, limit: Duration) -> Vec<String> {
    let until = Instant::now() + limit;
    loop {
        let left = processes_with(marker);
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The step cgroups (`compose/compose-PID-N`) left behind by compose processes that are gone.
fn leaked_cgroups() -> Vec<PathBuf> {
    let mut leaked = Vec::new();
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup/compose")];
    roots.extend(fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|h| h.path().join("compose")));
    for root in roots {
        for e in fs::read_dir(&root).into_iter().flatten().flatten().filter(|e| e.path().is_dir()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix("compose-").and_then(|r| r.split('-').next()).unwrap_or("");
            if !Path::new("/proc").join(pid).exists() {
                leaked.push(e.path());
            }
        }
    }
    leaked
}

/// Unmounts its path when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn keyctl(args: &[&str]) -> Output {
    Command::new("keyctl").args(args).output().expect("keyctl (keyutils) is installed by tests/run")
}

#[test]
fn hostile_steps_are_contained_and_the_host_is_unchanged() {
    let ctx = TestContext::new();
    // A key in the session keyring compose runs in (this thread's own, which the processes it
    // starts inherit): a step must neither see, read nor revoke it.
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a null name makes and joins a new anonymous keyring.
    let joined = unsafe { libc::syscall(libc::SYS_keyctl, 1, std::ptr::null::<libc::c_char>()) };
    assert!(joined > 0, "cannot join a new session keyring");
    let key = keyctl(&["add", "user", "compose-probe", "host-secret", "@s"]);
    assert_success(&key, "keyctl add");
    let key = String::from_utf8_lossy(&key.stdout).trim().to_string();
    // The host's home (what `pass-env "HOME"` names) and an ssh agent socket.
    fs::write(ctx.tmp.path().join("host-home-marker"), "mine").unwrap();
    let agent = ctx.tmp.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    let private = ctx.tmp.path().join("private.pem");
    fs::write(&private, "host-private").unwrap();
    fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // A directory for mount-from-host, with a mount below it.
    let hostdir = ctx.tmp.path().join("hostdir");
    fs::create_dir_all(hostdir.join("sub")).unwrap();
    run(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(hostdir.join("sub")));
    let _unmount = Unmount(hostdir.join("sub"));
    ctx.write("probe.sh", PROBE);
    ctx.write("probe-net.sh", PROBE_NET);
    let tools = tools();
    ctx.write(
        "spec.kdl",
        format!(
            r#"{tools}
step "hermetic" {{
    image "tools"
    copy "probe.sh" to="/in/probe.sh"
    run "sh" "/in/probe.sh" "{key}"
    output "/out"
}}
step "fetch" {{
    image "tools"
    network #true
    pass-env "HOME" "SSH_AUTH_SOCK"
    mount-from-host "{hostdir}" to="/h"
    copy "probe.sh" to="/in/probe.sh"
    copy "probe-net.sh" to="/in/probe-net.sh"
    run "sh" "/in/probe.sh" "{key}"
    run "sh" "/in/probe-net.sh"
    output "/out"
}}
step "bomb" {{
    image "tools"
    limits {{ pids 64; time "4s" }}
    run "sh" "-c" "b() {{ b | b & }}; b; busybox sleep 1721"
    output "/out"
}}
step "filler" {{
    image "tools"
    limits {{ disk "64MiB" }}
    run "busybox" "dd" "if=/dev/zero" "of=/out/big" "bs=1M" "count=10240"
    output "/out"
}}
step "forever" {{
    image "tools"
    user "65534:65534"
    limits {{ time "2s" }}
    run "busybox" "sleep" "1722"
    output "/out"
}}
step "hog" {{
    image "tools"
    limits {{ memory "32MiB" }}
    run "sh" "-c" "busybox dd if=/dev/zero of=/dev/null bs=64M count=1; busybox sleep 1; echo carries on"
    output "/out"
}}
image "probed" {{
    files {{
        copy from="hermetic" "/out/report" to="/hermetic"
        copy from="fetch" "/out/report" to="/fetch"
    }}
}}
image "bombed" {{ files {{ copy from="bomb" "/out" to="/x" }} }}
image "filled" {{ files {{ copy from="filler" "/out" to="/x" }} }}
image "waited" {{ files {{ copy from="forever" "/out" to="/x" }} }}
image "hogged" {{ files {{ copy from="hog" "/out" to="/x" }} }}
"#,
            hostdir = hostdir.display()
        ),
    );
    let sock = agent.display().to_string();
    let compose = |args: &[&str]| ctx.cmd().env("SSH_AUTH_SOCK", &sock).env("NODE_EXTRA_CA_CERTS", &private).args(args).output().unwrap();

    // Every escape of the probes held, in both kinds of step.
    let out = compose(&["build", "spec.kdl", "--image", "probed"]);
    assert_success(&out, "build the probes");
    let layout = ctx.root.join("out/probed");
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", layout.display())).arg(ctx.tmp.path().join("bundle")));
    let rootfs = ctx.tmp.path().join("bundle/rootfs");
    let hermetic = fs::read_to_string(rootfs.join("hermetic")).unwrap();
    let fetch = fs::read_to_string(rootfs.join("fetch")).unwrap();
    for (report, want) in [(&hermetic, 12), (&fetch, 20)] {
        assert!(!report.contains("ESCAPED"), "{report}");
        assert_eq!(report.matches("held: ").count(), want, "{report}");
    }

    // Limits: a fork bomb is held at its process limit until its time runs out; a 10 GiB write
    // stops at its disk limit; a command that never ends stops at its time limit; a memory hog
    // is killed at its memory limit. Each says which limit, and leaves no process.
    for (image, says, marker) in [
        ("bombed", "ran past its time limit of 4s", Some("sleep 1721")),
        ("filled", "its disk limit is 64.0 MiB", None),
        ("waited", "ran past its time limit of 2s", Some("sleep 1722")),
        ("hogged", "for want of memory: the step's memory limit is 32.0 MiB", None),
    ] {
        let out = compose(&["build", "spec.kdl", "--image", image]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{image}: {err}");
        assert!(err.contains("was stopped") && err.contains(says), "{image}: {err}");
        if let Some(m) = marker {
            assert_eq!(wait_gone(m, Duration::from_secs(5)), Vec::<String>::new(), "{image}");
        }
        if image == "waited" {
            assert!(err.contains("which the host's account `nobody` has too"), "{err}");
        }
        if image == "bombed" {
            let log = fs::read_dir(ctx.cache.join("v1/logs"))
                .unwrap()
                .flatten()
                .map(|e| fs::read_to_string(e.path()).unwrap())
                .collect::<String>();
            assert!(log.contains("can't fork"), "the bomb met its process limit");
        }
    }
    // The 10 GiB never reached the disk: the step's work directory is gone.
    let tmp: Vec<_> = fs::read_dir(ctx.cache.join("v1/tmp")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(tmp.is_empty(), "{tmp:?}");

    // The host is unchanged: no cgroup was made, the key is still there and whole.
    // (Other software, podman in other tests among it, may make and remove cgroups meanwhile:
    // only what the probes tried is looked for.)
    for tried in ["/sys/fs/cgroup/escape", "/sys/fs/cgroup/devices/escape"] {
        assert!(!Path::new(tried).exists(), "{tried}");
    }
    assert_eq!(leaked_cgroups(), Vec::<PathBuf>::new());
    let printed = keyctl(&["print", &key]);
    assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), "host-secret", "{printed:?}");
    let _ = keyctl(&["unlink", &key, "@s"]);
    assert!(ctx.tmp.path().join("host-home-marker").exists());
    // A later build still works, and the store is whole.
    assert_success(&compose(&["build", "spec.kdl", "--image", "probed"]), "build again");
    assert_success(&compose(&["cache", "verify"]), "cache verify");
}

const SLEEPER: &str = r#"
step "sleeper" {
    image "tools"
    // Ignores SIGINT and SIGTERM, as PID 1 of its namespace would anyway.
    run "sh" "-c" "trap '' INT TERM; busybox sleep MARK & echo started; busybox sleep MARK; wait"
    output "/out"
}
image "slept" { files { copy from="sleeper" "/out" to="/x" } }
"#;

/// Starts `compose build` of `image` and returns it once its step printed `started`.
fn start_sleeper(ctx: &TestContext) -> Running {
    let mut child = ctx.cmd().args(["build", "spec.kdl", "--image", "slept"]).stderr(Stdio::piped()).spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("[sleeper] started") {
                let _ = tx.send(());
            }
        }
    });
    let child = Running::new(child);
    rx.recv_timeout(Duration::from_secs(300)).expect("the step starts");
    child
}

#[test]
fn sigint_during_a_step_stops_all_of_it_and_kill_9_leftovers_go_with_the_next_build() {
    let ctx = TestContext::new();
    let mark = format!("17{}", std::process::id() % 10000);
    let tools = tools();
    ctx.write("spec.kdl", format!("{tools}{}", SLEEPER.replace("MARK", &mark)));
    let marker = format!("sleep {mark}");

    // SIGINT, as a terminal sends it: within 5 s no process of the step remains.
    let mut child = start_sleeper(&ctx);
    assert!(!processes_with(&marker).is_empty(), "the step runs");
    // SAFETY: kill takes no pointers; the pid is our child's.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let left = wait_gone(&marker, Duration::from_secs(5));
    assert_eq!(left, Vec::<String>::new(), "processes of the step outlived the interrupt");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");

    // kill -9: compose cannot clean up; the next build that opens the store alone kills what
    // was left, and builds.
    let mut child = start_sleeper(&ctx);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = ctx.compose(&["cache", "stats"]);
    assert_success(&out, "cache stats");
    let left = wait_gone(&marker, Duration::from_secs(5));
    assert_eq!(left, Vec::<String>::new(), "the next compose left the killed build's step running");
    assert_eq!(leaked_cgroups(), Vec::<PathBuf>::new());
    assert_success(&ctx.compose(&["cache", "verify"]), "cache verify");
}

#[test]
fn secrets_reach_the_step_and_no_key_output_log_or_record() {
    let ctx = TestContext::new();
    let secret = "s3cr3t-value-that-must-not-leak";
    ctx.write("token.txt", secret);
    // A key file: a tool prints it a line at a time.
    let lines = ["-----BEGIN KEY-----", "bGluZS1vbmUtb2YtdGhlLWtleQ", "-----END KEY-----"];
    ctx.write("key.pem", format!("{}\n", lines.join("\n")));
    let tools = tools();
    ctx.write(
        "spec.kdl",
        format!(
            r#"{tools}
step "uses" {{
    image "tools"
    secret "token" env="TOKEN"
    secret "file"
    secret "inside" target="/out/inside"
    secret "key" target="/run/key.pem"
    secret "optional" required=#false
    run "sh" "-c" "echo token=$TOKEN; cat /run/secrets/file; busybox cat /run/key.pem; busybox wc -c < /run/secrets/file > /out/length; busybox printf %s \"$TOKEN\" | busybox sha256sum > /out/token.sha"
    output "/out"
}}
image "used" {{ files {{ copy from="uses" "/out" to="/x" }} }}
"#
        ),
    );
    let build = |token: &str, file: &str| {
        ctx.cmd()
            .env("TOKEN_VALUE", token)
            .args(["build", "--json", "spec.kdl", "--secret", "id=token,env=TOKEN_VALUE", "--secret"])
            .arg(format!("id=file,src={file}"))
            .args(["--secret", "id=inside,src=token.txt", "--secret", "id=key,src=key.pem"])
            .output()
            .unwrap()
    };
    // Missing: the build says which and how to give it (a command-line error).
    let out = ctx.compose(&["build", "spec.kdl"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("step `uses` needs the secret `token`") && err.contains("--secret id=token,src=FILE"), "{err}");

    let out = build(secret, "token.txt");
    assert_success(&out, "build with secrets");
    let err = stderr(&out);
    assert!(err.contains("[uses] token=***") && !err.contains(secret), "{err}");
    assert!(!err.contains(lines[1]) && err.contains("[uses] ***"), "each line of a secret is hidden:\n{err}");
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The step saw them (its output holds a hash of the token and the file's length).
    let layout = ctx.root.join("out/used");
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", layout.display())).arg(ctx.tmp.path().join("bundle")));
    let x = ctx.tmp.path().join("bundle/rootfs/x");
    assert_eq!(fs::read_to_string(x.join("length")).unwrap().trim(), secret.len().to_string());
    assert!(!x.join("inside").exists(), "a secret's mount point in the output is not captured");
    // Nowhere in the store (records, logs, blobs, layers), the output or the lockfile.
    for dir in [ctx.cache.as_path(), ctx.root.join("out").as_path(), ctx.root.as_path()] {
        for e in walkdir::WalkDir::new(dir).into_iter().flatten().filter(|e| e.file_type().is_file()) {
            if e.path() == ctx.root.join("token.txt") {
                continue;
            }
            if e.path() == ctx.root.join("key.pem") {
                continue;
            }
            let bytes = fs::read(e.path()).unwrap();
            let mut gz = Vec::new();
            let _ = std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), &mut gz);
            for needle in [secret, lines[1]] {
                let found = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle.as_bytes());
                assert!(!found(&bytes) && !found(&gz), "a secret is in {}", e.path().display());
            }
        }
    }
    // Not in the key: another value of the same secret runs nothing again.
    ctx.write("other.txt", "x".repeat(secret.len()));
    let out = build(secret, "other.txt");
    assert_success(&out, "build with another secret value");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["derivations"]["built"], 0, "{again}");
    assert_eq!(again["images"][0]["digest"], first["images"][0]["digest"]);
}

#[test]
fn the_store_is_private_and_a_tampered_rootfs_never_reaches_an_output() {
    tampered_rootfs_scenarios();
}

/// From the attack review of issue 22: a build that found the builder's tree tampered with
/// removed it while another build's step was still running over it, and that step's output,
/// made over a vanishing tree, was kept and shared. Jobs now hold the tree's lock shared; the
/// removal waits for them.
#[test]
fn a_tree_found_changed_was_removed_under_another_builds_step() {
    let ctx = TestContext::new();
    let tools = tools();
    ctx.write(
        "spec.kdl",
        format!(
            r#"{tools}
step "long" {{
    image "tools"
    copy "in.txt" to="/in/in.txt"
    run "sh" "-c" "echo started; busybox sleep 3; busybox ls /usr/bin > /out/listing; busybox md5sum /usr/bin/busybox >> /out/listing"
    output "/out"
}}
step "other" {{
    image "tools"
    copy "in.txt" to="/in/in.txt"
    run "busybox" "true"
    output "/out"
}}
image "x" {{ files {{ copy from="long" "/out" to="/x" }} }}
image "y" {{ files {{ copy from="other" "/out" to="/y" }} }}
"#
        ),
    );
    // The builder unpacked and sealed in the store; then a new input, so both steps run again.
    ctx.write("in.txt", "1\n");
    ctx.build(&["spec.kdl", "--image", "y"]);
    ctx.write("in.txt", "2\n");
    let clean = ctx.build(&["spec.kdl", "--image", "x", "--cache-dir", "clean"]);
    let mut x = ctx.cmd().args(["build", "spec.kdl", "--image", "x"]).stderr(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let lines = std::io::BufReader::new(x.stderr.take().unwrap()).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    for l in lines {
        seen.push(l.clone());
        if l.contains("[long] started") {
            break;
        }
    }
    let rootfs = fs::read_dir(ctx.cache.join("v1/rootfs")).unwrap().flatten().find(|e| e.path().is_dir()).unwrap().path();
    fs::write(rootfs.join("etc/planted"), "x").unwrap();
    let y = ctx.compose(&["build", "spec.kdl", "--image", "y"]);
    assert_success(&y, "y, which finds the tree changed");
    assert!(String::from_utf8_lossy(&y.stderr).contains("had changed since compose unpacked it"), "{y:?}");
    let out = x.wait_with_output().unwrap();
    assert!(out.status.success(), "{seen:?}");
    assert_eq!(last_line(&out), clean, "x's step saw its whole tree");
}

fn tampered_rootfs_scenarios() {
    use std::os::unix::fs::PermissionsExt;
    let ctx = TestContext::new();
    let tools = tools();
    ctx.write(
        "spec.kdl",
        format!(
            r#"{tools}
step "first" {{
    image "tools"
    run "sh" "-c" "busybox ls /etc > /out/etc"
    output "/out"
}}
step "second" {{
    image "tools"
    run "sh" "-c" "busybox ls /etc > /out/etc; busybox cat /usr/bin/busybox | busybox sha256sum > /out/busybox.sha"
    output "/out"
}}
image "one" {{ files {{ copy from="first" "/out" to="/x" }} }}
image "two" {{ files {{ copy from="second" "/out" to="/x" }} }}
"#
        ),
    );
    // A store made by an older compose, readable by everyone.
    fs::create_dir_all(ctx.cache.join("v1")).unwrap();
    fs::set_permissions(ctx.cache.join("v1"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_success(&ctx.compose(&["build", "spec.kdl", "--image", "one"]), "build one");
    let v1 = ctx.cache.join("v1");
    assert_eq!(fs::metadata(&v1).unwrap().permissions().mode() & 0o777, 0o700);
    // Another local user cannot reach the unpacked images (their setuid programs) or anything else.
    for d in [ctx.tmp.path(), ctx.cache.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let rootfs = fs::read_dir(v1.join("rootfs")).unwrap().flatten().find(|e| e.path().is_dir()).unwrap().path();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
        .arg(rootfs.join("usr/bin"))
        .output()
        .unwrap();
    assert!(!out.status.success() && stderr(&out).contains("Permission denied"), "{out:?}");

    // Tampering with the unpacked image (a file added, a program changed) never reaches a step's
    // output: the tree is unpacked again from the store's verified blobs, and a hermetic step that
    // ran over it while it was being checked runs again.
    fs::write(rootfs.join("etc/planted"), "evil").unwrap();
    let busybox = rootfs.join("usr/bin/busybox");
    let mut bytes = fs::read(&busybox).unwrap();
    bytes.extend_from_slice(b"planted");
    fs::write(&busybox, &bytes).unwrap();
    let out = ctx.compose(&["build", "spec.kdl", "--image", "two"]);
    assert_success(&out, "build two");
    assert!(stderr(&out).contains("had changed since compose unpacked it"), "{}", stderr(&out));
    let layout = ctx.root.join("out/two");
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", layout.display())).arg(ctx.tmp.path().join("bundle")));
    let x = ctx.tmp.path().join("bundle/rootfs/x");
    assert!(!fs::read_to_string(x.join("etc")).unwrap().contains("planted"));
    assert!(!fs::read(rootfs.join("usr/bin/busybox")).unwrap().ends_with(b"planted"), "the tree was unpacked again");
    // A store another user owns (made before us, in a directory others can write) is refused.
    let theirs = ctx.tmp.path().join("theirs");
    fs::create_dir_all(theirs.join("v1")).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(theirs.join("v1"), Some(65534), Some(65534)).unwrap();
    let out = ctx.cmd().env("COMPOSE_CACHE_DIR", &theirs).args(["build", "spec.kdl", "--image", "one"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("belongs to uid 65534, not to this user (uid 0)"), "{}", stderr(&out));
    // --check runs both steps again over the same clean tree: the same outputs.
    assert_success(&ctx.compose(&["build", "spec.kdl", "--image", "two", "--check"]), "--check");
}
