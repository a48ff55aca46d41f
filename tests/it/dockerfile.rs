//! A Dockerfile user's first hour: what got in the way of users coming from Dockerfiles, one
//! regression test each.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::*;

/// Every path in the layers of the single-platform layout `out/NAME`, in order, as the tar says.
pub fn layer_paths(ctx: &TestContext, name: &str) -> Vec<String> {
    layer_paths_at(&ctx.path(&format!("out/{name}")))
}

/// Every path in the layers of the single-platform layout `dir`, in order.
fn layer_paths_at(dir: &Path) -> Vec<String> {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &serde_json::Value| dir.join("blobs/sha256").join(d.as_str().unwrap().trim_start_matches("sha256:"));
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(blob(&index["manifests"][0]["digest"])).unwrap()).unwrap();
    let mut paths = Vec::new();
    for l in manifest["layers"].as_array().unwrap() {
        let bytes = fs::read(blob(&l["digest"])).unwrap();
        let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(&bytes[..]));
        for e in ar.entries().unwrap() {
            paths.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
    }
    paths
}

/// `copy "." to="/app"` with the store and the outputs in the spec's directory (the defaults)
/// failed every build ("… changed during the build") and copied the last export into the image.
/// They are never inputs; `.composeignore` (or `.dockerignore`) leaves out what it lists.
#[test]
fn copy_dot_never_reads_the_store_or_the_outputs_and_honours_an_ignore_file() {
    let ctx = TestContext::new();
    ctx.write("compose.kdl", "image \"app\" {\n    files { copy \".\" to=\"/app\" }\n}\n");
    ctx.write("main.py", "print('hi')\n");
    ctx.write("debug.log", "noise\n");
    ctx.write("keep.log", "kept\n");
    ctx.write("node_modules/x/index.js", "x\n");
    ctx.write("src/deep.log", "deep logs stay: `*.log` is the top level only, as in Docker\n");
    ctx.write(".dockerignore", "# as Docker reads it\n*.log\n!keep.log\nnode_modules\n");
    let build = || {
        let out = ctx.cmd().env_remove("COMPOSE_CACHE_DIR").args(["build", "--json", "--cache-dir", "cache"]).output().unwrap();
        assert_success(&out, "build with the store in the spec directory");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = build();
    let second = build();
    assert_eq!(first["images"][0]["digest"], second["images"][0]["digest"]);
    assert_eq!(second["derivations"]["built"], 0, "{second}");
    let paths = layer_paths(&ctx, "app");
    for want in ["app/main.py", "app/keep.log", "app/src/deep.log"] {
        assert!(paths.iter().any(|p| p == want), "{want} missing from {paths:?}");
    }
    for never in ["app/cache", "app/out", "app/debug.log", "app/node_modules"] {
        assert!(!paths.iter().any(|p| p.starts_with(never)), "{never} copied: {paths:?}");
    }
    // `.composeignore` wins over `.dockerignore`; a bad pattern names the file and line.
    ctx.write(".composeignore", "node_modules\nsrc/[z-a]\n");
    let out = ctx.cmd().env_remove("COMPOSE_CACHE_DIR").args(["build", "--cache-dir", "cache"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".composeignore` line 2: `src/[z-a]` is not a valid pattern"), "{err}");
    ctx.write(".composeignore", "node_modules\n");
    build();
    let paths = layer_paths(&ctx, "app");
    assert!(paths.iter().any(|p| p == "app/debug.log") && !paths.iter().any(|p| p.starts_with("app/node_modules")), "{paths:?}");
}

/// `copy "."` shipped the checkout: `.git`, the spec and its lockfile (and, with `--out`
/// elsewhere, an earlier export). `.git` differs between two clones of one commit, so a second
/// machine built another digest. Directory copies leave them out; an ignore file takes them back.
#[test]
fn copy_dot_shipped_the_checkout_and_two_clones_built_two_digests() {
    let ctx = TestContext::new();
    let a = ctx.path("a");
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("compose.kdl"), "image \"app\" {\n    files { copy \".\" to=\"/app\" }\n}\n").unwrap();
    fs::write(a.join("main.py"), "print('hi')\n").unwrap();
    let git = |dir: &Path, args: &[&str]| {
        run(Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"])
            .args(args));
    };
    git(&a, &["init", "-q"]);
    git(&a, &["add", "."]);
    git(&a, &["commit", "-q", "-m", "one"]);
    // An earlier export in the spec directory, before the next builds write elsewhere.
    assert_success(&ctx.compose(&["build", "a/compose.kdl", "--out", "a/out", "--format", "docker-archive"]), "archive");
    let build = |dir: &Path| -> String {
        let spec = dir.join("compose.kdl");
        let out = ctx.compose(&["build", "--json", spec.to_str().unwrap(), "--out", ctx.path("elsewhere").to_str().unwrap()]);
        assert_success(&out, "build");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["images"][0]["digest"].as_str().unwrap().to_string()
    };
    let first = build(&a);
    let paths = layer_paths_at(&ctx.path("elsewhere/app"));
    assert!(paths.iter().any(|p| p == "app/main.py"), "{paths:?}");
    for never in ["app/.git", "app/compose.kdl", "app/out"] {
        assert!(!paths.iter().any(|p| p.starts_with(never)), "{never} copied: {paths:?}");
    }
    // A second clone, with a history of its own since: the same image.
    let b = ctx.path("b");
    run(Command::new("git").args(["clone", "-q"]).arg(&a).arg(&b));
    git(&b, &["commit", "-q", "--allow-empty", "-m", "two"]);
    assert_eq!(build(&b), first, "two clones of one tree build one digest");
    // An ignore file takes any of them back.
    fs::write(b.join(".composeignore"), "!.git\n!compose.kdl\n").unwrap();
    assert_ne!(build(&b), first);
    let paths = layer_paths_at(&ctx.path("elsewhere/app"));
    for back in ["app/.git/HEAD", "app/compose.kdl"] {
        assert!(paths.iter().any(|p| p == back), "`!` took {back} back: {paths:?}");
    }
}

/// An unreachable registry was reported as a spec error (exit 2, "base image … is not valid").
/// It is the environment: exit 1, naming the registry and what failed.
#[test]
fn an_unreachable_registry_is_reported_as_a_spec_error() {
    let ctx = TestContext::new();
    let dead = DeadPort::new();
    let port = dead.port;
    ctx.write("compose.kdl", format!("image \"a\" {{\n    base \"127.0.0.1:{port}/team/app:1\"\n}}\n"));
    let out = ctx.compose(&["build", "--insecure-registry", &format!("127.0.0.1:{port}")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot get base image") && err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("is not valid"), "{err}");
    assert!(!ctx.path("compose.kdl.lock").exists(), "nothing is written");
}

/// The image config of the single-platform layout `out/NAME`.
fn config_of(ctx: &TestContext, name: &str) -> serde_json::Value {
    let dir = ctx.path(&format!("out/{name}"));
    let read = |d: &serde_json::Value| -> serde_json::Value {
        serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(d.as_str().unwrap().trim_start_matches("sha256:"))).unwrap())
            .unwrap()
    };
    let index: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = read(&index["manifests"][0]["digest"]);
    read(&manifest["config"]["digest"])
}

/// Dockerfile semantics that silently differed: `env PATH="/app/bin:$PATH"` was stored
/// literally, a shell-form `cmd "nginx -g …"` became one program name, and there was no
/// `healthcheck`.
#[test]
fn dockerfile_semantics_silently_differ() {
    let ctx = TestContext::new();
    ctx.write(
        "compose.kdl",
        r#"image "parent" {
    config { env PATH="/usr/bin:/bin" LANG="C.UTF-8" }
}
image "child" {
    base image="parent"
    config {
        env PATH="/app/bin:$PATH" WHERE="${HOME:-/root}" SET="${LANG:+yes}" LITERAL="\\$PATH" BRACED="${LANG}-x"
        cmd "nginx -g 'daemon off;'" shell=#true
        healthcheck "curl -f http://localhost/ || exit 1" shell=#true interval="30s" timeout="5s" start-period="1m30s" retries=3
    }
}
image "none" {
    base image="parent"
    config { healthcheck #false; entrypoint "/bin/app" "--flag"; }
}
"#,
    );
    ctx.build(&[]);
    let c = config_of(&ctx, "child");
    let env: Vec<&str> = c["config"]["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(env, ["PATH=/app/bin:/usr/bin:/bin", "LANG=C.UTF-8", "WHERE=/root", "SET=yes", "LITERAL=$PATH", "BRACED=C.UTF-8-x"], "{c}");
    assert_eq!(c["config"]["Cmd"], serde_json::json!(["/bin/sh", "-c", "nginx -g 'daemon off;'"]));
    assert_eq!(
        c["config"]["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"], "Interval": 30_000_000_000u64,
            "Timeout": 5_000_000_000u64, "StartPeriod": 90_000_000_000u64, "Retries": 3})
    );
    assert_eq!(config_of(&ctx, "none")["config"]["Healthcheck"], serde_json::json!({"Test": ["NONE"]}));

    // One argument holding spaces, without `shell=#true`, would be one program name: refused.
    ctx.write("bad.kdl", "image \"x\" {\n    config { cmd \"nginx -g 'daemon off;'\" }\n}\n");
    let out = ctx.compose(&["build", "bad.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shell_form") && err.contains("shell=#true") && err.contains("bad.kdl:2:"), "{err}");
}

/// `workdir "/data"` did not create the directory; Docker's WORKDIR does. It is made when
/// nothing in the image makes it (and never over what the image's files make).
#[test]
fn workdir_does_not_create_the_directory() {
    let ctx = TestContext::new();
    ctx.write(
        "compose.kdl",
        r#"image "made" {
    files { text "/etc/motd" "hi\n" }
    config { workdir "/srv/app/data" }
}
image "own" {
    files { dir "/srv" mode=0o700 }
    config { workdir "/srv" }
}
"#,
    );
    ctx.build(&[]);
    let made = layer_paths(&ctx, "made");
    assert!(made.iter().any(|p| p == "srv/app/data/"), "{made:?}");
    let own = layer_paths(&ctx, "own");
    assert_eq!(own.iter().filter(|p| p.starts_with("srv")).count(), 1, "{own:?}");
    let dir = ctx.path("out/own");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &serde_json::Value| dir.join("blobs/sha256").join(d.as_str().unwrap().trim_start_matches("sha256:"));
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(blob(&index["manifests"][0]["digest"])).unwrap()).unwrap();
    let bytes = fs::read(blob(&manifest["layers"][0]["digest"])).unwrap();
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(&bytes[..]));
    let srv = ar.entries().unwrap().map(|e| e.unwrap()).find(|e| e.path().unwrap().to_string_lossy() == "srv/").unwrap();
    assert_eq!(srv.header().mode().unwrap(), 0o700, "the image's own directory is left as it is");
}

/// Progress printed two lines per derivation (268 on a first build) and "in 29.12s" on every
/// one, the time since the build started. In a log it is one line per derivation built, with
/// that derivation's own time.
#[test]
fn progress_prints_two_lines_per_derivation() {
    let ctx = TestContext::new();
    let mut spec = String::from("image \"p\" {\n    files { text \"/a\" \"a\\n\" }\n");
    for i in 0..6 {
        spec.push_str(&format!("    layer \"l{i}\" {{ text \"/l{i}\" \"{i}\\n\" }}\n"));
    }
    spec.push_str("}\n");
    ctx.write("compose.kdl", spec);
    let out = ctx.compose(&["build", "--json"]);
    assert_success(&out, "build");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let built = v["derivations"]["built"].as_u64().unwrap() as usize;
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.trim_start().starts_with("built ")).collect();
    assert_eq!(lines.len(), built, "{err}");
    assert!(!err.lines().any(|l| l.starts_with("building ")), "{err}");
    let total: f64 = err.lines().find_map(|l| l.strip_prefix("done in ")).and_then(|r| r.split('s').next()).unwrap().parse().unwrap();
    for l in lines {
        let t: f64 = l.rsplit(" in ").next().unwrap().trim_end_matches('s').parse().unwrap();
        assert!(t <= total, "{l} (total {total}s)");
    }
}

/// `compose import` over the corpus of Dockerfiles (`tests/fixtures/dockerfiles/` and
/// `specs/clock/`): every one becomes a spec compose reads, what cannot be translated exactly is
/// listed by line, and the Debian `apt-get` image translates fully, into the spec committed in
/// `specs/clock/`, builds from the archive and runs under podman.
#[test]
fn compose_import_translates_the_corpus_and_the_result_runs() {
    let ctx = TestContext::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("tests/fixtures/dockerfiles");
    let mut sources: Vec<(String, std::path::PathBuf)> = fs::read_dir(&corpus)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), e.path())
        })
        .collect();
    sources.push(("clock".into(), root.join("specs/clock")));
    sources.sort();
    let (mut exact, mut total) = (0, 0);
    for (name, source) in &sources {
        let dir = ctx.path(name);
        run(std::process::Command::new("cp").arg("-r").arg(source).arg(&dir));
        let committed = fs::read_to_string(dir.join("compose.kdl")).ok();
        let _ = fs::remove_file(dir.join("compose.kdl"));
        let out = ctx.compose(&["import", &format!("{name}/Dockerfile"), "--json"]);
        assert_success(&out, &format!("import {name}"));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (e, t) = (v["exact"].as_u64().unwrap(), v["instructions"].as_u64().unwrap());
        eprintln!("{name}: {e} of {t} instructions translated exactly");
        for n in v["notes"].as_array().unwrap().iter().filter(|n| n["exact"] == false) {
            assert!(n["line"].as_u64().unwrap() > 0 || n["instruction"].as_str().unwrap().starts_with("image "), "{n}");
            assert!(!n["message"].as_str().unwrap().is_empty());
        }
        if ["clock", "static-site"].contains(&name.as_str()) {
            assert_eq!(e, t, "{name}: {v}");
        }
        // The example in specs/ is what import writes (below its own header comment).
        if let Some(committed) = committed {
            let body = |s: &str| s.lines().skip_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
            assert_eq!(body(&fs::read_to_string(dir.join("compose.kdl")).unwrap()), body(&committed), "{name}");
        }
        exact += e;
        total += t;
        // A second import does not overwrite the spec silently.
        let again = ctx.compose(&["import", &format!("{name}/Dockerfile")]);
        assert_eq!(again.status.code(), Some(2), "{name}");
    }
    eprintln!("corpus: {exact} of {total} instructions translated exactly");
    assert!(exact * 100 / total >= 75, "{exact} of {total}");

    // The fully translated Debian image: composed from the archive this machine's apt uses.
    let dir = ctx.path("clock");
    let out = ctx.cmd().current_dir(&dir).args(["build"]).output().unwrap();
    assert_success(&out, "build the imported clock spec");
    let id = podman_run(&ctx, &dir.join("out/clock"), "clock", "latest", &["id"]);
    assert!(id.starts_with("uid=10001(clock) gid=10001(clock)"), "{id}");
    let tz = podman_run(&ctx, &dir.join("out/clock"), "clock", "latest", &["sh", "-c", "pwd; curl --version | head -1"]);
    assert!(tz.starts_with("/var/lib/clock\ncurl "), "{tz}");
}

/// `--build-arg NAME=VALUE` sets a spec's `arg` for one build, as `docker build --build-arg`;
/// one the spec does not declare is a usage error that changes nothing.
#[test]
fn build_arguments_from_the_command_line() {
    let ctx = TestContext::new();
    ctx.write(
        "compose.kdl",
        "arg \"VERSION\" default=\"1.0\"\nimage \"v\" {\n    tag \"${VERSION}\"\n    files { text \"/version\" \"${VERSION}\\n\" }\n}\n",
    );
    let default = ctx.build_json(&[]);
    assert_eq!(default["images"][0]["tag"], "1.0");
    let given = ctx.build_json(&["--build-arg", "VERSION=2.0"]);
    assert_eq!(given["images"][0]["tag"], "2.0");
    assert_ne!(given["images"][0]["digest"], default["images"][0]["digest"]);
    let out = ctx.compose(&["build", "--build-arg", "VERSOIN=2.0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--build-arg VERSOIN: the spec declares no `arg \"VERSOIN\"`"));
}
