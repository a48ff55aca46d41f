//! Build steps against real things: Debian's golang-go, python3-pip and busybox from the archive
//! this machine's apt uses, runc as the sandbox, PyPI through the host's own pip settings, podman
//! running what comes out, nginx as the shared cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::nginx::Nginx;
use crate::support::steps::busybox_tools;
use crate::support::*;

/// Copy the example `specs/NAME` to `dest` (a checkout somewhere else).
fn checkout(name: &str, dest: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs").join(name);
    for e in walkdir::WalkDir::new(&src) {
        let e = e.unwrap();
        let to = dest.join(e.path().strip_prefix(&src).unwrap());
        if e.file_type().is_dir() {
            fs::create_dir_all(&to).unwrap();
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
    dest.to_path_buf()
}

/// `compose ARGS` in `dir` with the store `store` (under the test's directory) and `env`.
fn compose_in(ctx: &TestContext, dir: &Path, store: &str, args: &[&str], env: &[(String, String)]) -> Output {
    ctx.cmd().current_dir(dir).env("COMPOSE_CACHE_DIR", ctx.tmp.path().join(store)).envs(env.iter().cloned()).args(args).output().unwrap()
}

fn build_json(ctx: &TestContext, dir: &Path, store: &str, args: &[&str], env: &[(String, String)]) -> serde_json::Value {
    let mut all = vec!["build", "--json"];
    all.extend_from_slice(args);
    let out = compose_in(ctx, dir, store, &all, env);
    assert_success(&out, "compose build");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn digest(v: &serde_json::Value) -> String {
    v["images"][0]["digest"].as_str().unwrap().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn go_program_built_in_a_step_runs_reproduces_and_is_shared() {
    let ctx = TestContext::new();
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let a = checkout("go-app", &ctx.tmp.path().join("a/checkout"));
    // Machine A (CI): an empty store; what it builds goes to the shared cache. The step keeps
    // Go's build cache, so only `--check` (which runs it again with an empty one and compares)
    // shares its output.
    let va = build_json(&ctx, &a, "store-a", &["compose.kdl", "--remote-cache", &nginx.url, "--check"], &[]);
    assert_eq!(va["derivations"]["built"], va["derivations"]["total"], "{va}");
    assert_eq!(va["images"].as_array().unwrap().len(), 1, "the builder image is not exported: {va}");
    assert!(!a.join("out/go-builder").exists());
    let text = podman_run(&ctx, &a.join("out/hello-go"), "hello-go", "latest", &["podman"]);
    assert!(text.starts_with("hello, podman (built with go1.19"), "{text}");

    // A second build runs nothing.
    let again = build_json(&ctx, &a, "store-a", &["compose.kdl"], &[]);
    assert_eq!((again["derivations"]["built"].as_u64(), digest(&again)), (Some(0), digest(&va)), "{again}");

    // Machine B: another checkout path, an empty store, no shared cache, one job, another TZ:
    // the same image, byte for byte.
    let b = checkout("go-app", &ctx.tmp.path().join("elsewhere/b"));
    let tz = [("TZ".to_string(), "Asia/Tokyo".to_string())];
    let vb = build_json(&ctx, &b, "store-b", &["compose.kdl", "--jobs", "1"], &tz);
    assert_eq!(digest(&vb), digest(&va));

    // Machine C: an empty store and the shared cache, read-only: the step's output comes from the
    // cache; nothing runs, and the builder image's packages are not even fetched.
    let vc = build_json(&ctx, &b, "store-c", &["compose.kdl", "--remote-cache", &nginx.url, "--remote-cache-mode", "ro"], &[]);
    assert_eq!((vc["derivations"]["built"].as_u64(), digest(&vc)), (Some(0), digest(&va)), "{vc}");
    assert!(vc["derivations"]["remote"].as_u64().unwrap() <= 3, "only the image, its layer and the step: {vc}");

    // One source edit re-runs the step and what copies from it, nothing else.
    let main = a.join("src/main.go");
    fs::write(&main, fs::read_to_string(&main).unwrap().replace("hello, %s", "hi, %s")).unwrap();
    let out = compose_in(&ctx, &a, "store-a", &["build", "--json", "compose.kdl"], &[]);
    assert_success(&out, "build after an edit");
    let edited: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The step's inputs, the step, the layer copying from it, the image.
    assert_eq!(edited["derivations"]["built"], 4, "{edited}\n{}", stderr(&out));
    assert!(stderr(&out).contains("building step app-bin"));
    let text = podman_run(&ctx, &a.join("out/hello-go"), "hello-go", "latest", &["again"]);
    assert!(text.starts_with("hi, again"), "{text}");
}

/// The host's pip settings (index, certificates, proxies), passed to compose by name as a user's
/// shell would: compose passes them on to fixed-output steps.
fn host_pip_env() -> Vec<(String, String)> {
    std::env::vars().filter(|(k, _)| k.starts_with("PIP_") || k.to_ascii_lowercase().ends_with("_proxy") || k == "SSL_CERT_FILE").collect()
}

#[test]
fn python_app_pins_wheels_installs_them_hermetically_and_rebuilds_offline() {
    let ctx = TestContext::new();
    let dir = checkout("python-app", &ctx.root);
    // Start without the wheels' pin: the first build runs the download and pins it.
    let lock_path = dir.join("compose.kdl.lock");
    let mut lock: serde_json::Value = serde_json::from_slice(&fs::read(&lock_path).unwrap()).unwrap();
    let committed = lock["steps"]["wheels"]["output"].as_str().unwrap().to_string();
    lock.as_object_mut().unwrap().remove("steps");
    fs::write(&lock_path, serde_json::to_vec_pretty(&lock).unwrap()).unwrap();

    let env = host_pip_env();
    let out = compose_in(&ctx, &dir, "store", &["build", "--json", "compose.kdl", "--locked"], &env);
    assert_eq!(out.status.code(), Some(2), "--locked refuses to pin: {}", stderr(&out));
    assert!(stderr(&out).contains("fixed-output step `wheels` has no pin"), "{}", stderr(&out));

    let first = build_json(&ctx, &dir, "store", &["compose.kdl"], &env);
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(&lock_path).unwrap()).unwrap();
    assert_eq!(lock["steps"]["wheels"]["output"], committed.as_str(), "the same wheels as when the example was locked");
    let text = podman_run(&ctx, &dir.join("out/py-app"), "py-app", "1.0", &[]);
    assert_eq!(text.trim(), "six 1.16.0, idna 3.7: xn--bcher-kva.example");

    // Offline, from the store: nothing runs, the same image.
    let offline = build_json(&ctx, &dir, "store", &["compose.kdl", "--offline", "--locked"], &[]);
    assert_eq!((offline["derivations"]["built"].as_u64(), digest(&offline)), (Some(0), digest(&first)), "{offline}");
}

/// A fixed-output step whose result differs from run to run was pinned on its first run, and
/// every later build elsewhere failed against that pin. Pinning runs it twice and refuses a
/// result that differs, naming the first differing path and the usual fixes: here a `pip
/// install` that byte-compiles with timestamps (`SOURCE_DATE_EPOCH` cleared, as many build
/// scripts do), whose `.pyc` files hold the time their sources were written.
#[test]
fn a_pip_install_that_byte_compiles_was_pinned() {
    let ctx = TestContext::new();
    let dir = checkout("python-app", &ctx.root);
    let mut spec = fs::read_to_string(dir.join("compose.kdl")).unwrap();
    spec.push_str(
        r#"
step "installed" {
    image "py-builder"
    copy from="wheels" "/out" to="/wheels"
    copy "requirements.txt" to="/src/requirements.txt"
    env SOURCE_DATE_EPOCH=""
    run "python3" "-c" "import time; time.sleep(1.2)"
    run "pip3" "install" "--no-index" "--no-deps" "--find-links=/wheels" "--require-hashes" "-r" "/src/requirements.txt" "--target" "/out/site-packages"
    output "/out"
    network #true
}
image "installed-app" { files { copy from="installed" "/out/site-packages" to="/lib" } }
"#,
    );
    fs::write(dir.join("compose.kdl"), spec).unwrap();
    let out = compose_in(&ctx, &dir, "store", &["build", "compose.kdl", "--image", "installed-app"], &host_pip_env());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("fixed-output step(s) gave another result when run again") && err.contains("installed (first difference: "),
        "{err}"
    );
    assert!(err.contains(".pyc;"), "the differing .pyc is named: {err}");
    assert!(err.contains("pip install --no-compile"), "{err}");
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("compose.kdl.lock")).unwrap()).unwrap();
    assert!(lock["steps"].get("installed").is_none(), "nothing pinned: {lock}");
}

/// The spec of the steps below: busybox and coreutils (its `date` prints nanoseconds) as the image.
fn tools_spec() -> String {
    format!("{}{STEPS}", busybox_tools("coreutils"))
}

/// [`tools_spec`] in `dir`, its `fetch` step reading `dir/upstream` (written with `value`).
fn write_tools_spec(dir: &Path, value: &str) {
    fs::write(dir.join("upstream"), value).unwrap();
    fs::write(dir.join("spec.kdl"), tools_spec().replace("UPSTREAM", dir.join("upstream").to_str().unwrap())).unwrap();
}

const STEPS: &str = r#"step "online" {
    image "tools"
    run "busybox" "wget" "-q" "-O" "/out/page" "http://example.com/"
    output "/out"
}
step "boom" {
    image "tools"
    run "sh" "-c" "echo starting; echo boom >&2; exit 3"
    output "/out"
}
step "clock" {
    image "tools"
    copy "a.txt" to="/in/a.txt"
    run "sh" "-c" "/usr/bin/date +%N > /out/now; cp /in/a.txt /out/a.txt"
    output "/out"
}
step "stable" {
    image "tools"
    copy "b.txt" to="/in/b.txt"
    // Inputs are read-only: the write must fail.
    run "sh" "-c" "tr a-z A-Z < /in/b.txt > /out/B.TXT; if echo more >> /in/b.txt; then exit 9; fi"
    output "/out"
}
step "fetch" {
    image "tools"
    // What it "downloads" is the host file `upstream` (the test changes it between builds).
    mount-from-host "UPSTREAM" to="/upstream"
    run "sh" "-c" "cat /upstream > /out/download"
    output "/out"
    network #true
}
image "uses-online" { files { copy from="online" "/out/page" to="/page" } }
image "uses-boom" { files { copy from="boom" "/out" to="/boom" } }
image "both" {
    files {
        copy from="clock" "/out" to="/clock"
        copy from="stable" "/out/B.TXT" to="/stable/"
        copy from="tools" "/usr/bin/busybox" to="/bin/busybox"
    }
}
image "fetched" { files { copy from="fetch" "/out/download" to="/download" } }
"#;

#[test]
fn failing_changing_and_nondeterministic_steps_are_caught() {
    let ctx = TestContext::new();
    write_tools_spec(&ctx.root, "one\n");
    ctx.write("a.txt", "a\n");
    ctx.write("b.txt", "b\n");
    let root = ctx.root.clone();
    let compose = |store: &str, args: &[&str]| compose_in(&ctx, &root, store, args, &[]);

    // A hermetic step has no network: it fails, naming the step, the command, its exit code and
    // the end of its log, with a hint.
    let out = compose("store", &["build", "spec.kdl", "--image", "uses-online"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for s in ["step `online` failed", "`busybox wget -q -O /out/page http://example.com/` exited with code 1", "bad address", "no network"]
    {
        assert!(err.contains(s), "missing {s:?} in:\n{err}");
    }

    // A failing command: its code and log tail; a failure is never cached.
    for _ in 0..2 {
        let out = compose("store", &["build", "spec.kdl", "--image", "uses-boom"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        for s in ["building step boom", "[boom] boom", "exited with code 3", "starting\n", "whole log: "] {
            assert!(err.contains(s), "missing {s:?} in:\n{err}");
        }
    }

    // Steps, their inputs read-only, and `copy from=` an image.
    let first = compose("store", &["build", "--json", "spec.kdl", "--image", "both"]);
    assert_success(&first, "build both");
    let layout = root.join("out/both");
    run(std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(ctx.tmp.path().join("bundle")));
    let rootfs = ctx.tmp.path().join("bundle/rootfs");
    assert_eq!(fs::read_to_string(rootfs.join("stable/B.TXT")).unwrap(), "B\n");
    assert_eq!(fs::read_to_string(rootfs.join("clock/a.txt")).unwrap(), "a\n");
    assert!(rootfs.join("bin/busybox").is_file());
    let log = stderr(&compose("store", &["build", "spec.kdl", "--image", "both"]));
    assert!(!log.contains("building step"), "a second build runs no step:\n{log}");

    // Editing one step's input re-runs that step only.
    ctx.write("b.txt", "bee\n");
    let out = compose("store", &["build", "--json", "spec.kdl", "--image", "both"]);
    assert_success(&out, "build after an edit");
    let err = stderr(&out);
    assert!(err.contains("building step stable") && !err.contains("building step clock"), "{err}");

    // --check runs every step again and names the one that is not reproducible, with the path.
    let out = compose("store", &["build", "spec.kdl", "--image", "both", "--check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("step clock (first difference: /now"), "{err}");
    assert!(!err.contains("step stable (first difference"), "{err}");
    // On an empty store too: a step the store lacks runs twice.
    let out = compose("store-fresh", &["build", "spec.kdl", "--image", "both", "--check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("step clock (first difference: /now"), "{err}");

    // A fixed-output step is pinned on first run; a different result later names both hashes.
    let first = compose("store", &["build", "spec.kdl", "--image", "fetched"]);
    assert_success(&first, "build fetched");
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(root.join("spec.kdl.lock")).unwrap()).unwrap();
    let pinned = lock["steps"]["fetch"]["output"].as_str().unwrap().to_string();
    fs::write(root.join("upstream"), "two\n").unwrap();
    let out = compose("store-2", &["build", "spec.kdl", "--image", "fetched"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("but the lockfile pins {pinned}")) && err.contains("fixed-output step `fetch` yielded sha256:"), "{err}");
    // `compose lock --update fetch` pins the new result.
    let out = compose("store-2", &["lock", "spec.kdl", "--update", "fetch"]);
    assert_success(&out, "lock --update fetch");
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(root.join("spec.kdl.lock")).unwrap()).unwrap();
    let repinned = lock["steps"]["fetch"]["output"].as_str().unwrap().to_string();
    assert_ne!(repinned, pinned);
    assert_success(&compose("store-2", &["build", "spec.kdl", "--image", "fetched", "--locked"]), "build after re-pinning");
    // Again, with what it yielded last in the store: it runs again all the same.
    fs::write(root.join("upstream"), "three\n").unwrap();
    assert_success(&compose("store-2", &["lock", "spec.kdl", "--update", "fetch"]), "lock --update fetch, again");
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(root.join("spec.kdl.lock")).unwrap()).unwrap();
    assert_ne!(lock["steps"]["fetch"]["output"].as_str().unwrap(), repinned, "--update took the step's last output from the store");

    // Where the sandbox cannot run (here: not root), a step says what it needs.
    use std::os::unix::fs::PermissionsExt;
    let nobody = ctx.tmp.path().join("nobody");
    fs::create_dir_all(&nobody).unwrap();
    for d in [ctx.tmp.path(), nobody.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
    }
    write_tools_spec(&nobody, "one\n");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", COMPOSE, "build", "spec.kdl", "--image", "uses-boom"])
        .current_dir(&nobody)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &nobody)
        .env("COMPOSE_CACHE_DIR", nobody.join("cache"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("step `boom` cannot run: build steps need root or a user namespace") && err.contains("/etc/subuid"), "{err}");
}

/// `--json` undercounted: after a fixed-output step was pinned it reported the last planning
/// round alone ("5 built" while the log listed 38 "built" lines). It counts every derivation
/// the command ran, across rounds.
#[test]
fn json_counted_only_the_last_planning_round() {
    let ctx = TestContext::new();
    write_tools_spec(&ctx.root, "one\n");
    let out = ctx.compose(&["build", "--json", "spec.kdl", "--image", "fetched"]);
    assert_success(&out, "build fetched");
    let err = stderr(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let built_lines = err.lines().filter(|l| l.trim_start().starts_with("built ")).count() as u64;
    assert!(built_lines > 2, "{err}");
    assert_eq!(v["derivations"]["built"].as_u64().unwrap(), built_lines, "{v}\n{err}");
    let d = &v["derivations"];
    let sum = ["built", "local", "remote", "skipped"].iter().map(|k| d[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum, d["total"].as_u64().unwrap(), "{v}");
}

/// Every failing hermetic step ended with the network hint ("the step is hermetic: it has no
/// network…"), for a missing file as for a missing shell; and an image of packages without a
/// shell failed with the kernel's words alone ("exec …: no such file or directory"). The hint now
/// comes when the log shows a network was tried; a missing shell or interpreter is named with
/// the image that lacks it and what brings it.
#[test]
fn every_failing_hermetic_step_ended_with_the_network_hint() {
    let ctx = TestContext::new();
    let spec = format!(
        r#"{}
image "bare" {{
    export #false
    repository "debian" suite="bookworm" components="main" keyring="/usr/share/keyrings/debian-archive-keyring.gpg"
    packages "busybox-static"
}}
step "missing" {{
    image "tools"
    run "cat" "/in/nothing"
    output "/out"
}}
step "online" {{
    image "tools"
    run "busybox" "wget" "-q" "-O" "/out/page" "http://example.com/"
    output "/out"
}}
step "shell" {{
    image "bare"
    run "sh" "-c" "true"
    output "/out"
}}
step "script" {{
    image "bare"
    copy "run.sh" to="/run.sh" mode=0o755
    run "/run.sh"
    output "/out"
}}
image "a" {{ files {{ copy from="missing" "/out" to="/a" }} }}
image "b" {{ files {{ copy from="online" "/out" to="/b" }} }}
image "c" {{ files {{ copy from="shell" "/out" to="/c" }} }}
image "d" {{ files {{ copy from="script" "/out" to="/d" }} }}
"#,
        busybox_tools("coreutils")
    );
    ctx.write("spec.kdl", spec);
    ctx.write("run.sh", "#!/bin/sh\necho hi\n");
    let fails = |image: &str| {
        let out = ctx.compose(&["build", "spec.kdl", "--image", image]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        err
    };
    let err = fails("a");
    assert!(err.contains("No such file or directory") && !err.contains("no network"), "{err}");
    let err = fails("b");
    assert!(err.contains("bad address") && err.contains("it has no network, and its log says it tried to reach one"), "{err}");
    let err = fails("c");
    assert!(err.contains("image `bare` has no `sh` on the step's PATH") && err.contains("`dash`"), "{err}");
    assert!(!err.contains("no network"), "{err}");
    let err = fails("d");
    assert!(err.contains("image `bare` has no `/bin/sh`, which `/run.sh` names in its first line"), "{err}");
    assert!(!err.contains("no network"), "{err}");
}

/// Guards against this: derivations ran in waves by depth, so an image waiting only for a fast
/// step waited for an unrelated slow step of the same depth, and the fast step was reported with
/// the slow one's time. The slow step here waits for a gate the test opens only once the other
/// image is reported built: in waves, the build never gets there. (It reads the gate through
/// `mount-from-host`, so it is a fixed-output step: a first build with the gate open pins it,
/// then a build on an empty store runs it again.)
#[test]
fn a_derivation_starts_as_soon_as_its_inputs_are_ready() {
    use std::io::BufRead;
    use std::process::Stdio;

    use crate::support::children::Running;

    let ctx = TestContext::new();
    let gate = ctx.tmp.path().join("gate");
    fs::create_dir_all(&gate).unwrap();
    ctx.write(
        "spec.kdl",
        format!(
            r#"{tools}
step "slow" {{
    image "tools"
    network #true
    mount-from-host "{gate}" to="/gate"
    run "sh" "-c" "while [ ! -e /gate/open ]; do sleep 0.05; done; echo s > /out/s"
    output "/out"
}}
step "fast" {{
    image "tools"
    run "sh" "-c" "echo f > /out/f"
    output "/out"
}}
image "app" {{ files {{ copy from="fast" "/out/f" to="/f"; }} }}
image "other" {{ files {{ copy from="slow" "/out/s" to="/s"; }} }}
"#,
            tools = busybox_tools("coreutils"),
            gate = gate.display()
        ),
    );
    fs::write(gate.join("open"), "").unwrap();
    ctx.build(&["spec.kdl"]);
    fs::remove_file(gate.join("open")).unwrap();
    let empty = ctx.tmp.path().join("empty-store");
    let mut child = Running::new(
        ctx.cmd().args(["build", "spec.kdl", "--cache-dir"]).arg(&empty).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap(),
    );
    // Should the image wait for the slow step after all, the gate opens anyway after a while, so
    // that the test fails rather than hangs.
    let fallback = gate.join("open");
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(300));
        let _ = fs::write(fallback, "");
    });
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut app_first = false;
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("built app: image") {
            // The slow step cannot have ended: its gate is still shut.
            app_first = !seen.iter().any(|l| l.contains("built step slow"));
            fs::write(gate.join("open"), "").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{seen:#?}");
    assert!(app_first, "the image was not reported built while the slow step waited: {seen:#?}");
    // Progress says what waits for what.
    assert!(seen.iter().any(|l| l.contains("derivations wait for step slow")), "{seen:#?}");
    assert!(ctx.path("out/app").exists() && ctx.path("out/other").exists());
}

/// Guards against this: a step's key named its builder image's derivation, which depends on how
/// the image's packages are grouped into layers (`--max-layers`) and compressed: a teammate
/// without the flag re-ran every step and `compose lock` rewrote each fixed-output step's recipe.
#[test]
fn step_keys_ignore_how_the_builder_is_layered_and_compressed() {
    let ctx = TestContext::new();
    let spec = format!(
        r#"{tools}
step "pinned" {{
    image "tools"
    run "sh" "-c" "echo fixed > /out/f"
    output "/out"
    network #true
}}
step "hermetic" {{
    image "tools"
    run "sh" "-c" "ls /usr/bin | wc -l > /out/n"
    output "/out"
}}
image "app" {{ files {{ copy from="pinned" "/out/f" to="/f"; copy from="hermetic" "/out/n" to="/n"; }} }}
"#,
        tools = busybox_tools("coreutils")
    );
    ctx.write("spec.kdl", &spec);
    let root = ctx.root.clone();
    let compose = |args: &[&str]| compose_in(&ctx, &root, "store", args, &[]);
    let first = compose(&["build", "spec.kdl"]);
    assert_success(&first, "first build");
    let lock = fs::read(root.join("spec.kdl.lock")).unwrap();
    let app = fs::read(root.join("out/app/index.json")).unwrap();
    for (what, args, text) in [
        ("--max-layers 4", vec!["build", "spec.kdl", "--max-layers", "4"], spec.clone()),
        ("--compression zstd", vec!["build", "spec.kdl", "--compression", "zstd"], spec.clone()),
        ("build { max-layers 4 }", vec!["build", "spec.kdl", "--locked"], format!("build {{ max-layers 4; }}\n{spec}")),
    ] {
        ctx.write("spec.kdl", &text);
        let out = compose(&args);
        assert_success(&out, what);
        let err = stderr(&out);
        // No step runs again: the builder, layered anew, is not even needed.
        assert!(!err.contains("building step"), "{what}: a step ran again:\n{err}");
        assert!(err.contains("not needed"), "{what}:\n{err}");
        assert_eq!(fs::read(root.join("spec.kdl.lock")).unwrap(), lock, "{what}: the lockfile changed");
        if what.contains("max-layers") {
            assert_eq!(fs::read(root.join("out/app/index.json")).unwrap(), app, "{what}: the app changed");
        }
    }
    // `compose lock` agrees: nothing to rewrite.
    ctx.write("spec.kdl", &spec);
    assert_success(&compose(&["lock", "spec.kdl", "--locked"]), "lock --locked");
}

/// Guards against this: `/tmp` was a new tmpfs for each `run` of a step (undocumented), so what
/// one command left there the next could not find; and every compile started cold, with no way
/// to keep a build tool's cache between runs.
#[test]
fn a_step_keeps_its_caches_between_runs_and_its_tmp_across_its_commands() {
    let ctx = TestContext::new();
    let spec = format!(
        r#"{tools}
step "counted" {{
    image "tools"
    copy "a.txt" to="/src/a.txt"
    copy "b.txt" to="/src/b.txt"
    cache "/src/cache" "/var/cache/tool"
    // /tmp is the step run's: empty at its start, shared by its commands.
    run "sh" "-c" "test ! -e /tmp/t && echo made > /tmp/t"
    run "sh" "-c" "n=$(cat /var/cache/tool/n 2>/dev/null || echo 0); echo $((n+1)) > /var/cache/tool/n; stat -c '%n %y' /src/a.txt /src/b.txt >> /src/cache/times; cp /tmp/t /src/a.txt /out/"
    output "/out"
}}
step "leaky" {{
    image "tools"
    cache "/c"
    run "sh" "-c" "test -e /c/made-once || /usr/bin/date +%N > /c/made-once; cp /c/made-once /out/"
    output "/out"
}}
image "app" {{ files {{ copy from="counted" "/out" to="/app"; }} }}
image "leaks" {{ files {{ copy from="leaky" "/out" to="/l"; }} }}
"#,
        tools = busybox_tools("coreutils")
    );
    ctx.write("spec.kdl", &spec);
    ctx.write("a.txt", "a\n");
    ctx.write("b.txt", "b\n");
    let root = ctx.root.clone();
    let compose = |store: &str, args: &[&str]| compose_in(&ctx, &root, store, args, &[]);
    assert_success(&compose("store", &["build", "spec.kdl", "--image", "app"]), "first build");
    ctx.write("a.txt", "a, edited\n");
    let second = compose("store", &["build", "spec.kdl", "--image", "app"]);
    assert_success(&second, "build after an edit");
    assert!(stderr(&second).contains("building step counted"), "{}", stderr(&second));

    // The cache was kept: the second run counted 2; nothing of it is in the output.
    let caches = ctx.tmp.path().join("store/v1/caches");
    let find = |name: &str| {
        walkdir::WalkDir::new(&caches)
            .into_iter()
            .flatten()
            .find(|e| e.file_name() == name)
            .map(|e| e.into_path())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(fs::read_to_string(find("n")).unwrap(), "2\n");
    run(std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", root.join("out/app").display()))
        .arg(ctx.tmp.path().join("bundle")));
    let app = ctx.tmp.path().join("bundle/rootfs/app");
    let mut shipped: Vec<String> = fs::read_dir(&app).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    shipped.sort();
    assert_eq!(shipped, ["a.txt", "t"]);
    assert_eq!(fs::read_to_string(app.join("a.txt")).unwrap(), "a, edited\n");
    // The edited input looked newer to the step than before; the other kept its time.
    let times = fs::read_to_string(find("times")).unwrap();
    let lines: Vec<&str> = times.lines().collect();
    assert_eq!(lines.len(), 4, "{times}");
    assert_ne!(lines[0], lines[2], "the edited file kept its time: {times}");
    assert_eq!(lines[1], lines[3], "the unchanged file got a new time: {times}");

    // --check runs it with empty caches: same output, so it passes; on an empty store too.
    for store in ["store", "store-fresh"] {
        let out = compose(store, &["build", "spec.kdl", "--image", "app", "--check"]);
        assert_success(&out, &format!("--check ({store})"));
        // It says what it compared and what it did not run again.
        let err = stderr(&out);
        assert!(err.contains("checked: 1 ran again with empty caches and reproduced (step counted); not run again: "), "{err}");
    }
    assert_eq!(fs::read_to_string(find("n")).unwrap(), "2\n", "--check used the kept cache");

    // A step whose output depends on its cache is caught by --check, which drops what it
    // stored and empties its caches: the next build runs it afresh.
    assert_success(&compose("store", &["build", "spec.kdl", "--image", "leaks"]), "build leaks");
    let out = compose("store", &["build", "spec.kdl", "--image", "leaks", "--check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("step leaky (with its caches kept; they were emptied and its stored output dropped) (first difference: /made-once"),
        "{err}"
    );
    let again = compose("store", &["build", "spec.kdl", "--image", "leaks"]);
    assert_success(&again, "build after the caches were emptied");
    assert!(stderr(&again).contains("building step leaky"), "{}", stderr(&again));

    // `cache stats` counts the caches; `cache gc` keeps recent ones and removes old ones.
    // What a step made with its caches kept stays on this machine, with what is made from it;
    // `--check` shares it once reproduced without them.
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    ctx.write("a.txt", "a, shared\n");
    assert_success(&compose("store", &["build", "spec.kdl", "--image", "app", "--remote-cache", &nginx.url]), "build, rw cache");
    let teammate =
        compose("store-teammate", &["build", "spec.kdl", "--image", "app", "--remote-cache", &nginx.url, "--remote-cache-mode", "ro"]);
    assert_success(&teammate, "teammate");
    assert!(stderr(&teammate).contains("building step counted"), "an output made with kept caches was shared:\n{}", stderr(&teammate));
    assert_success(&compose("store", &["build", "spec.kdl", "--image", "app", "--remote-cache", &nginx.url, "--check"]), "check, rw cache");
    let teammate =
        compose("store-teammate-2", &["build", "spec.kdl", "--image", "app", "--remote-cache", &nginx.url, "--remote-cache-mode", "ro"]);
    assert_success(&teammate, "teammate after --check");
    assert!(!stderr(&teammate).contains("building step"), "{}", stderr(&teammate));

    // An output a cache changed is never shared, even once the step no longer declares the
    // cache (its key is the same); and a --check on one image that finds it untrustworthy makes
    // every image made from it, in this plan or not, be made again.
    let poison = |cache: &str| {
        format!(
            r#"{tools}
step "p" {{
    image "tools"
    {cache}
    env ROUND="2"
    run "sh" "-c" "mkdir -p /c; n=$(cat /c/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /c/n; echo poisoned-$n > /out/n"
    output "/out"
}}
image "pa" {{ files {{ copy from="p" "/out/n" to="/n"; }} }}
image "pb" {{ files {{ copy from="p" "/out/n" to="/n"; }} }}
"#,
            tools = busybox_tools("coreutils")
        )
    };
    let digest_of = |store: &str, image: &str, args: &[&str]| {
        let mut all = vec!["build", "--json", "poison.kdl", "--image", image];
        all.extend_from_slice(args);
        let out = compose(store, &all);
        assert_success(&out, &format!("build {image} in {store}"));
        digest(&serde_json::from_slice(&out.stdout).unwrap())
    };
    ctx.write("poison.kdl", poison("cache \"/c\""));
    digest_of("store-poison", "pa", &[]);
    ctx.write("poison.kdl", poison("cache \"/c\"").replace("ROUND=\"2\"", "ROUND=\"3\""));
    digest_of("store-poison", "pa", &[]);
    let clean3 = digest_of("store-clean-3", "pb", &[]);
    assert_ne!(digest_of("store-poison", "pb", &[]), clean3, "the cache did not change the output: no test");
    ctx.write("poison.kdl", poison("").replace("ROUND=\"2\"", "ROUND=\"3\""));
    digest_of("store-poison", "pb", &["--remote-cache", &nginx.url]);
    let fresh = compose(
        "store-poison-teammate",
        &["build", "poison.kdl", "--image", "pb", "--remote-cache", &nginx.url, "--remote-cache-mode", "ro"],
    );
    assert_success(&fresh, "teammate of the poisoned store");
    assert!(stderr(&fresh).contains("building step p"), "a cache-made output was shared once the cache was gone:\n{}", stderr(&fresh));
    ctx.write("poison.kdl", poison("cache \"/c\"").replace("ROUND=\"2\"", "ROUND=\"3\""));
    let out = compose("store-poison", &["build", "poison.kdl", "--image", "pa", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(digest_of("store-poison", "pb", &[]), clean3, "an image made from the untrusted output outlived --check");

    let stats = compose("store", &["cache", "stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["caches"], 3, "{stats}");
    let gc = compose("store", &["cache", "gc"]);
    assert!(String::from_utf8_lossy(&gc.stdout).contains("kept") && find("n").exists());
    let gc = compose("store", &["cache", "gc", "--max-age-days", "0"]);
    assert_success(&gc, "gc");
    assert!(String::from_utf8_lossy(&gc.stdout).contains("3 step caches"), "{}", String::from_utf8_lossy(&gc.stdout));
    assert!(walkdir::WalkDir::new(&caches).into_iter().flatten().all(|e| e.file_name() != "n"));

    // A cache inside the inputs is mounted on a directory made in them, never through a link of
    // theirs (here to the host's /etc, where it would have made a directory as root).
    let probe = Path::new("/etc/compose-cache-escape-probe");
    let _ = fs::remove_dir(probe);
    fs::create_dir_all(root.join("d")).unwrap();
    ctx.write("d/x", "x\n");
    ctx.write(
        "escape.kdl",
        format!(
            r#"{tools}
step "escape" {{
    image "tools"
    copy "d/" to="/src"
    symlink "/src/lnk" target="/etc"
    cache "/src/lnk/compose-cache-escape-probe"
    run "true"
    output "/out"
}}
image "e" {{ files {{ copy from="escape" "/out" to="/e"; }} }}
"#,
            tools = busybox_tools("coreutils")
        ),
    );
    let out = compose("store", &["build", "escape.kdl"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!probe.exists(), "a cache's mount point was made through an input's link, on the host");
    assert!(err.contains("on the way to its cache `/src/lnk/compose-cache-escape-probe`"), "{err}");

    // Nor can a link of the image move a cache into its /tmp or its output.
    for (target, says) in [("/tmp", "leads through a link to `/tmp/x`, under `/tmp`"), ("/out", "overlaps the step's output `/out`")] {
        ctx.write(
            "moved.kdl",
            format!(
                r#"{tools}
image "linked" {{ export #false; base image="tools"; files {{ symlink "/q" target="{target}"; }} }}
step "moved" {{
    image "linked"
    cache "/q/x"
    run "true"
    output "/out"
}}
image "m" {{ files {{ copy from="moved" "/out" to="/m"; }} }}
"#,
                tools = busybox_tools("coreutils")
            ),
        );
        let out = compose("store", &["build", "moved.kdl"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{err}");
    }

    // A step that writes its inputs' mtimes into its output (tar) reproduces on its first run
    // with a cache: files seen for the first time keep the epoch.
    ctx.write(
        "tar.kdl",
        format!(
            r#"{tools}
step "archive" {{
    image "tools"
    copy "a.txt" to="/src/a.txt"
    cache "/var/cache/unused"
    run "sh" "-c" "tar -cf /out/src.tar -C /src ."
    output "/out"
}}
image "t" {{ files {{ copy from="archive" "/out" to="/t"; }} }}
"#,
            tools = busybox_tools("coreutils")
        ),
    );
    assert_success(&compose("store", &["build", "tar.kdl", "--check"]), "tar of inputs, first run with a cache, --check");
}

/// Guards against this: a multi-platform image copying from a step shipped the step's one
/// output, built on the builder's first platform, in every platform (an x86-64 binary in the
/// arm64 image). A step now runs for each platform that copies from it: on that platform, or
/// with `platform "build"` on this machine for it (`TARGETARCH`); copying from a step whose image
/// is not built for a platform fails at plan time; a step of another architecture is emulated
/// (Debian's qemu-user-static), or refused before anything is built where it cannot be.
#[test]
fn a_step_runs_for_each_platform_that_copies_from_it() {
    let ctx = TestContext::new();
    let spec = |platform: &str| {
        format!(
            r#"image "go-builder" {{
    export #false
    repository "debian" suite="bookworm" components="main" keyring="/usr/share/keyrings/debian-archive-keyring.gpg"
    packages "golang-go" "busybox-static"
    files {{ symlink "/bin/sh" target="busybox"; }}
}}
step "hello-bin" {{
    image "go-builder"
    {platform}
    copy "main.go" to="/src/main.go"
    text "/src/go.mod" "module example.invalid/hello\n\ngo 1.19\n"
    workdir "/src"
    env CGO_ENABLED="0" GOCACHE="/tmp/go-cache" GOFLAGS="-mod=mod" GOPROXY="off"
    run "sh" "-c" "echo building on $BUILDPLATFORM for $TARGETPLATFORM; GOARCH=$TARGETARCH go build -trimpath -o /out/hello ."
    output "/out"
}}
image "hello" {{
    platforms "linux/amd64" "linux/arm64"
    files {{ copy from="hello-bin" "/out/hello" to="/hello" mode=0o755; copy from="tagged" "/out/tag" to="/tag"; }}
}}
// A cross build copying from a cross build takes its output for the same target.
step "lib" {{
    image "go-builder"
    {platform}
    run "sh" "-c" "echo lib-for-$TARGETARCH > /out/lib"
    output "/out"
}}
step "tagged" {{
    image "go-builder"
    {platform}
    copy from="lib" "/out/lib" to="/in/lib"
    run "sh" "-c" "echo $TARGETARCH with $(cat /in/lib) > /out/tag"
    output "/out"
}}
"#
        )
    };
    ctx.write("main.go", "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n");

    // Without saying how, the arm64 image would need the builder on arm64: refused when planning.
    ctx.write("spec.kdl", spec(""));
    let out = ctx.cmd().args(["plan", "spec.kdl"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("step `hello-bin` is copied into something built for linux/arm64"), "{err}");
    assert!(err.contains("platform \"build\""), "{err}");

    // With the builder for both platforms, the arm64 run is emulated: compose registers Debian's
    // qemu-user-static handler where it is missing (undone below), or, without qemu, says what
    // is missing before anything is built.
    let handler = Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64");
    let had_handler = handler.exists();
    let qemu = Path::new("/usr/share/binfmts/qemu-aarch64").exists();
    ctx.write(
        "emulated.kdl",
        r#"image "b" {
    export #false
    platforms "linux/amd64" "linux/arm64"
    repository "debian" suite="bookworm" components="main" keyring="/usr/share/keyrings/debian-archive-keyring.gpg"
    packages "busybox-static"
}
step "s" { image "b"; run "/bin/busybox" "sh" "-c" "/bin/busybox uname -m > /out/arch; cp /bin/busybox /out/"; output "/out"; }
image "e" { platforms "linux/amd64" "linux/arm64"; files { copy from="s" "/out" to="/s"; } }
"#,
    );
    let out = ctx.cmd().args(["build", "emulated.kdl"]).output().unwrap();
    let err = stderr(&out);
    if !had_handler && handler.exists() {
        let _ = fs::write(handler, "-1");
    }
    if had_handler || qemu {
        assert!(out.status.success(), "{err}");
        if !had_handler {
            assert!(err.contains("registered the binfmt_misc handler qemu-aarch64"), "{err}");
        }
        for (arch, uname, machine) in [("amd64", "x86_64", 62u16), ("arm64", "aarch64", 183u16)] {
            let single = ctx.tmp.path().join(format!("emulated-{arch}"));
            run(std::process::Command::new("skopeo")
                .args(["copy", "-q", "--override-arch", arch])
                .arg(format!("oci:{}:latest", ctx.path("out/e").display()))
                .arg(format!("oci:{}:latest", single.display())));
            let bundle = ctx.tmp.path().join(format!("emulated-bundle-{arch}"));
            run(std::process::Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", single.display())).arg(&bundle));
            assert_eq!(fs::read_to_string(bundle.join("rootfs/s/arch")).unwrap(), format!("{uname}\n"), "{arch}: where it ran");
            let elf = fs::read(bundle.join("rootfs/s/busybox")).unwrap();
            assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), machine, "the {arch} image's busybox");
        }
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("step `s` runs on linux/arm64, and this machine is linux/amd64") && err.contains("qemu-user-static"), "{err}");
        assert!(!err.contains("building step"), "{err}");
    }

    // With `platform "build"`: built here twice, once for each target.
    ctx.write("spec.kdl", spec("platform \"build\""));
    let out = ctx.cmd().args(["build", "spec.kdl"]).output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("building on linux/amd64 for linux/amd64") && err.contains("building on linux/amd64 for linux/arm64"), "{err}");
    // Each platform's image holds a binary of its own architecture (ELF e_machine 62, 183).
    for (arch, machine) in [("amd64", 62u16), ("arm64", 183u16)] {
        let single = ctx.tmp.path().join(format!("single-{arch}"));
        run(std::process::Command::new("skopeo")
            .args(["copy", "-q", "--override-arch", arch])
            .arg(format!("oci:{}:latest", ctx.path("out/hello").display()))
            .arg(format!("oci:{}:latest", single.display())));
        let bundle = ctx.tmp.path().join(format!("bundle-{arch}"));
        run(std::process::Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", single.display())).arg(&bundle));
        let elf = fs::read(bundle.join("rootfs/hello")).unwrap();
        assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), machine, "the {arch} image's binary");
        assert_eq!(fs::read_to_string(bundle.join("rootfs/tag")).unwrap(), format!("{arch} with lib-for-{arch}\n"));
    }
}

/// Guards against this: "build steps need root … this process runs as uid 65534": no laptops, no
/// rootless CI runners. A user with subordinate ids builds steps in a user namespace of its own
/// (runc inside it), with its own store that no one else can read, and gets root's digests.
#[test]
fn a_user_other_than_root_builds_steps_with_roots_digests() {
    use std::os::unix::fs::PermissionsExt;
    let ctx = TestContext::new();
    let user = "compose-rootless";
    if std::process::Command::new("id").arg(user).output().map(|o| !o.status.success()).unwrap_or(true) {
        run(std::process::Command::new("useradd").args(["-m", user]));
    }
    let id = |flag: &str| {
        String::from_utf8(std::process::Command::new("id").args([flag, user]).output().unwrap().stdout).unwrap().trim().to_string()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let dir = ctx.tmp.path().join("rootless");
    fs::create_dir_all(&dir).unwrap();
    for d in [ctx.tmp.path(), dir.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let spec = format!(
        r#"{tools}
step "fetch" {{
    image "tools"
    run "sh" "-c" "echo pinned > /out/f"
    output "/out"
    network #true
}}
step "owners" {{
    image "tools"
    copy from="fetch" "/out/f" to="/in/f"
    cache "/c"
    run "sh" "-c" "cp /in/f /out/; echo x > /out/owned; chown 1000:1000 /out/owned; echo y > /out/suid; chmod 4755 /out/suid; echo t > /tmp/t; cp /tmp/t /out/; date > /c/stamp; rm -rf /usr/share/doc"
    output "/out"
}}
image "app" {{ files {{ copy from="owners" "/out" to="/app"; }} }}
step "endless" {{
    image "tools"
    limits {{ time "2s"; }}
    run "sh" "-c" "sleep 600"
    output "/out"
}}
image "never" {{ files {{ copy from="endless" "/out" to="/n"; }} }}
"#,
        tools = busybox_tools("coreutils")
    );
    fs::write(dir.join("spec.kdl"), &spec).unwrap();
    let as_root = ctx
        .cmd()
        .current_dir(&dir)
        .args(["build", "--json", "spec.kdl", "--image", "app", "--cache-dir"])
        .arg(ctx.tmp.path().join("root-store"))
        .args(["--out", "root-out"])
        .output()
        .unwrap();
    assert_success(&as_root, "build as root");
    let root_digest = digest(&serde_json::from_slice(&as_root.stdout).unwrap());
    fs::remove_file(dir.join("spec.kdl.lock")).unwrap();

    let as_user = |args: &[&str], fuse: bool| {
        std::process::Command::new("setpriv")
            .args([&format!("--reuid={uid}"), &format!("--regid={gid}"), "--init-groups", COMPOSE])
            .args(args)
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", format!("/home/{user}"))
            .env("COMPOSE_CACHE_DIR", dir.join(if fuse { "user-store-fuse" } else { "user-store" }))
            .env("COMPOSE_FUSE_OVERLAYFS", if fuse { "1" } else { "0" })
            .output()
            .unwrap()
    };
    let out = as_user(&["build", "--json", "spec.kdl", "--image", "app", "--out", "user-out"], false);
    assert_success(&out, "build as a user");
    assert_eq!(digest(&serde_json::from_slice(&out.stdout).unwrap()), root_digest, "{}", stderr(&out));
    // The same with fuse-overlayfs, what a kernel refusing overlayfs in a user namespace gets
    // (where users may open /dev/fuse: some machines keep it root's).
    let fuse_open = fs::metadata("/dev/fuse").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006);
    if fuse_open && Path::new("/usr/bin/fuse-overlayfs").exists() {
        let fuse = as_user(&["build", "--json", "spec.kdl", "--image", "app", "--out", "user-out-fuse"], true);
        assert_success(&fuse, "build as a user, fuse-overlayfs");
        assert_eq!(digest(&serde_json::from_slice(&fuse.stdout).unwrap()), root_digest, "{}", stderr(&fuse));
    }
    assert!(stderr(&out).contains("steps run rootless"), "{}", stderr(&out));
    // Its limits stop a step (no cgroups here: the container's init is killed).
    let endless = as_user(&["build", "spec.kdl", "--image", "never", "--out", "user-out"], false);
    assert_eq!(endless.status.code(), Some(1), "{}", stderr(&endless));
    assert!(stderr(&endless).contains("ran past its time limit of 2s"), "{}", stderr(&endless));
    // --check runs its steps again, rootless too.
    assert_success(&as_user(&["build", "spec.kdl", "--image", "app", "--out", "user-out", "--check"], false), "--check as a user");
    // Its store is its own: no one else reads it.
    let store = dir.join("user-store/v1");
    let m = fs::metadata(&store).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((m.uid().to_string(), m.mode() & 0o777), (uid.clone(), 0o700));
    let other = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(!other.status.success(), "another user read the store");
    // Everything in it, its steps' caches included, can be removed by its user.
    assert_success(&as_user(&["cache", "gc", "--max-age-days", "0"], false), "gc as a user");
    assert!(walkdir::WalkDir::new(dir.join("user-store/v1/caches")).into_iter().flatten().all(|e| e.file_name() != "stamp"));
}
