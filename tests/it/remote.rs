//! A shared cache over nginx (WebDAV PUT) speaking the Bazel remote-cache HTTP protocol: machine B
//! builds nothing that machine A built; damaged blobs and dead servers never fail a build.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::aptrepo::{Pkg, Repo, Server};
use crate::support::misbehaving::misbehaving;
use crate::support::nginx::Nginx;
use crate::support::registry::TestRegistry;
use crate::support::*;

const SPEC: &str = r#"
image "shared" {
    files { copy "site/" to="/srv" }
    layer "two" { text "/etc/two" "two\n" }
    config { cmd "x" }
}
"#;

fn checkout(base: &Path) -> std::path::PathBuf {
    let dir = base.to_path_buf();
    fs::create_dir_all(dir.join("site")).unwrap();
    fs::write(dir.join("spec.kdl"), SPEC).unwrap();
    for i in 0..20 {
        fs::write(dir.join(format!("site/f{i}.txt")), format!("file {i}\n").repeat(1000)).unwrap();
    }
    // Incompressible, so the layer is larger than what record manifests embed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(dir.join("site/noise.bin"), noise).unwrap();
    dir
}

fn build(ctx: &TestContext, dir: &Path, store: &str, extra: &[&str]) -> serde_json::Value {
    let out = ctx
        .cmd()
        .current_dir(dir)
        .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join(store))
        .args(["build", "spec.kdl", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert_success(&out, "build");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `explain` on a store filled from the team cache said "910 of 959 derivations would run"
/// while `build` ran none: explain looked in the store alone. It now finds what a build needs as
/// the build does (the store, then the remote cache, top-down).
#[test]
fn explain_said_most_derivations_would_run_where_build_ran_none() {
    let ctx = TestContext::new();
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let a = checkout(&ctx.tmp.path().join("machine-a/src"));
    let b = checkout(&ctx.tmp.path().join("machine-b/src"));
    let url = nginx.url.clone();
    build(&ctx, &a, "store-a", &["--remote-cache", &url]);
    let explain = |store: &str| -> serde_json::Value {
        let out = ctx
            .cmd()
            .current_dir(&b)
            .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join(store))
            .args(["explain", "spec.kdl", "--json", "--remote-cache", &url])
            .output()
            .unwrap();
        assert_success(&out, "explain with a remote");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let e = explain("store-b");
    assert_eq!(e["rebuild"].as_array().unwrap().len(), 0, "{e}");
    let vb = build(&ctx, &b, "store-b", &["--remote-cache", &url, "--remote-cache-mode", "ro"]);
    assert_eq!(vb["derivations"]["built"], 0, "{vb}");
    assert_eq!(e["remote"], vb["derivations"]["remote"], "explain {e}\nbuild {vb}");
    // A change on machine B: explain names the one layer and the image, as the build then runs.
    fs::write(b.join("site/index.html"), "<h1>changed on b</h1>\n").unwrap();
    let e = explain("store-b");
    let names: Vec<&str> = e["rebuild"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    let vb = build(&ctx, &b, "store-b", &["--remote-cache", &url, "--remote-cache-mode", "ro"]);
    assert_eq!(names.len() as u64, vb["derivations"]["built"].as_u64().unwrap(), "explain {e}\nbuild {vb}");
}

/// Upload markers were never checked again: after the team's WebDAV data was wiped, a
/// read-write build uploaded only its new records, and the cache stayed hollow until someone
/// removed `cache/v1/shared/`. A sample of the marked records is asked for; one missing, and the
/// build shares again all it uses.
#[test]
fn a_wiped_team_cache_stayed_hollow() {
    let ctx = TestContext::new();
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let a = checkout(&ctx.tmp.path().join("machine-a/src"));
    let url = nginx.url.clone();
    let records = || fs::read_dir(nginx.root.join("ac")).map(|d| d.count()).unwrap_or(0);
    build(&ctx, &a, "store-a", &["--remote-cache", &url]);
    assert_eq!(records(), 3);
    // A read-write build of machine A's warm store, which must say the cache lost something.
    let rebuild = |what: &str| {
        let out = run_in(&ctx, &a, "store-a", &["build", "spec.kdl", "--remote-cache", &url], &[]);
        assert_success(&out, what);
        assert!(stderr_of(&out).contains("had lost records this store gave it"), "{what}: {}", stderr_of(&out));
    };
    let blobs = || fs::read_dir(nginx.root.join("cas")).map(|d| d.count()).unwrap_or(0);
    let before = blobs();
    for e in fs::read_dir(&nginx.root).unwrap() {
        fs::remove_dir_all(e.unwrap().path()).unwrap();
    }
    rebuild("build after the wipe");
    assert_eq!((records(), blobs()), (3, before), "every record and blob the build used is on the server again");
    // Blobs pruned alone (records kept, as `find -atime +30 -delete` may leave them): found too.
    fs::remove_dir_all(nginx.root.join("cas")).unwrap();
    rebuild("build after the blobs went");
    assert_eq!(blobs(), before, "every blob is on the server again");
    // And machine B takes everything from it.
    let b = checkout(&ctx.tmp.path().join("machine-b/src"));
    let vb = build(&ctx, &b, "store-b", &["--remote-cache", &url, "--remote-cache-mode", "ro"]);
    assert_eq!(vb["derivations"]["built"], 0, "{vb}");
}

/// The fenced block of `lang` in docs/team-cache.md.
fn doc_block(lang: &str) -> String {
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/team-cache.md")).unwrap();
    let start = doc.find(&format!("```{lang}\n")).unwrap_or_else(|| panic!("no {lang} block")) + lang.len() + 4;
    doc[start..start + doc[start..].find("```").unwrap()].to_string()
}

/// The README named nginx WebDAV and registries for the team cache but showed no setup, and a
/// first try failed with 500 until nginx could write its root. docs/team-cache.md has both
/// setups; this runs them as written (paths, port and password file substituted), with nginx's
/// workers as Debian's `www-data`: a root they cannot write fails uploads with 500 (a warning;
/// the build goes on), the page's `install -d -o www-data` fixes it, and machine B then builds
/// nothing. The registry's configuration serves an `oci://` cache behind its password.
#[test]
fn the_team_cache_setup_in_the_docs_works() {
    use std::os::unix::fs::PermissionsExt;
    let ctx = TestContext::new();
    // www-data must reach the server's directories, as it does /srv and /var/lib.
    fs::set_permissions(ctx.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dir = ctx.tmp.path().join("nginx");
    let (root, body, htpasswd) = (dir.join("srv/compose-cache"), dir.join("compose-cache-body"), dir.join("compose-cache.htpasswd"));
    fs::create_dir_all(&root).unwrap();
    for d in [&dir, &dir.join("srv")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    run(Command::new("htpasswd").args(["-B", "-b", "-c"]).arg(&htpasswd).args(["ci", "s3cret"]));
    let block = doc_block("nginx");
    let server = |port: u16| {
        block
            .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
            .replace("/srv/compose-cache", root.to_str().unwrap())
            .replace("/var/lib/nginx/compose-cache-body", body.to_str().unwrap())
            .replace("/etc/nginx/compose-cache.htpasswd", htpasswd.to_str().unwrap())
    };
    let nginx = Nginx::start_server(&dir, "www-data", &root, &server);
    let url = nginx.url.replace("http://", "http://ci:s3cret@");
    let a = checkout(&ctx.tmp.path().join("machine-a/src"));
    let b = checkout(&ctx.tmp.path().join("machine-b/src"));
    // Before the page's `install -d -o www-data`: nginx cannot write its root.
    let out = run_in(&ctx, &a, "store-a0", &["build", "spec.kdl", "--remote-cache", &url], &[]);
    assert_success(&out, "a build with a cache that cannot write");
    assert!(stderr_of(&out).contains("500"), "{}", stderr_of(&out));
    run(Command::new("install").args(["-d", "-o", "www-data", "-g", "www-data", "-m", "0750"]).arg(&root).arg(&body));
    build(&ctx, &a, "store-a", &["--remote-cache", &url]);
    assert_eq!(fs::read_dir(root.join("ac")).unwrap().count(), 3, "records written back");
    let vb = build(&ctx, &b, "store-b", &["--remote-cache", &url, "--remote-cache-mode", "ro"]);
    assert_eq!((vb["derivations"]["built"].as_u64(), vb["derivations"]["remote"].as_u64()), (Some(0), Some(3)), "{vb}");
    // Without the password: refused, said, built here.
    let out = run_in(&ctx, &b, "store-c", &["build", "spec.kdl", "--json", "--remote-cache", &nginx.url], &[]);
    assert_eq!(json_of(&out, "without the password")["derivations"]["built"], 3);
    assert!(stderr_of(&out).contains("401"), "{}", stderr_of(&out));

    // The registry, with the page's configuration and a password of its own.
    let yaml = doc_block("yaml");
    let reg_htpasswd = ctx.tmp.path().join("registry.htpasswd");
    run(Command::new("htpasswd").args(["-B", "-b", "-c"]).arg(&reg_htpasswd).args(["ci", "s3cret"]));
    let reg = TestRegistry::start_config(&|data: &Path| {
        yaml.replace("/var/lib/docker-registry", data.join("data").to_str().unwrap())
            .replace("addr: :5000", "addr: 127.0.0.1:PORT")
            .replace("/etc/docker/registry/htpasswd", reg_htpasswd.to_str().unwrap())
    });
    let addr = reg.addr();
    let auth = ctx.tmp.path().join("auth.json");
    let token = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("ci:s3cret")
    };
    fs::write(&auth, format!("{{\"auths\": {{\"{addr}\": {{\"auth\": \"{token}\"}}}}}}")).unwrap();
    let auth_env = [("REGISTRY_AUTH_FILE", auth.to_str().unwrap())];
    let oci = format!("oci://{addr}/team/compose-cache");
    let out =
        run_in(&ctx, &a, "store-ra", &["build", "spec.kdl", "--json", "--remote-cache", &oci, "--insecure-registry", &addr], &auth_env);
    assert_eq!(json_of(&out, "machine A, registry")["derivations"]["built"], 3);
    let args = ["build", "spec.kdl", "--json", "--remote-cache", &oci, "--insecure-registry", &addr, "--remote-cache-mode", "ro"];
    let vb = json_of(&run_in(&ctx, &b, "store-rb", &args, &auth_env), "machine B, registry");
    assert_eq!((vb["derivations"]["built"].as_u64(), vb["derivations"]["remote"].as_u64()), (Some(0), Some(3)), "{vb}");
}

#[test]
fn machine_b_builds_nothing_machine_a_built() {
    let ctx = TestContext::new();
    let mut nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let a = checkout(&ctx.tmp.path().join("machine-a/src"));
    let b = checkout(&ctx.tmp.path().join("elsewhere/machine-b/checkout"));
    let url = nginx.url.clone();
    let va = build(&ctx, &a, "store-a", &["--remote-cache", &url]);
    assert_eq!(va["derivations"]["built"], 3, "{va}");
    assert!(nginx.root.join("ac").read_dir().unwrap().count() == 3, "records written back");
    // `compose plan` on machine B shows what the remote has.
    let plan = ctx
        .cmd()
        .current_dir(&b)
        .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("store-b"))
        .args(["plan", "spec.kdl", "--json", "--remote-cache", &url])
        .output()
        .unwrap();
    assert_success(&plan, "plan with a remote");
    let p: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert!(p["nodes"].as_array().unwrap().iter().all(|n| n["remote"] == true && n["cached"] == false), "{p}");
    let vb = build(&ctx, &b, "store-b", &["--remote-cache", &url, "--remote-cache-mode", "ro"]);
    assert_eq!(vb["derivations"]["built"], 0, "{vb}");
    assert_eq!(vb["derivations"]["remote"], 3, "{vb}");
    assert_eq!(vb["images"][0]["digest"], va["images"][0]["digest"]);

    // A blob damaged on the server is detected, discarded and rebuilt locally.
    for e in fs::read_dir(nginx.root.join("cas")).unwrap() {
        let p = e.unwrap().path();
        let mut bytes = fs::read(&p).unwrap();
        let n = bytes.len() / 2;
        bytes[n] ^= 0xff;
        fs::write(&p, bytes).unwrap();
    }
    // The image's record is never taken on trust: it is made again from its layers here and
    // used only if identical (it is; its blobs are never downloaded).
    let vc = build(&ctx, &b, "store-c", &["--remote-cache", &url, "--remote-cache-mode", "ro"]);
    assert_eq!(vc["derivations"]["remote"], 1, "{vc}");
    assert_eq!(vc["derivations"]["built"], 2, "{vc}");
    assert_eq!(vc["images"][0]["digest"], va["images"][0]["digest"]);
    let verify = ctx.cmd().env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("store-c")).args(["cache", "verify"]).output().unwrap();
    assert_success(&verify, "verify after damaged remote blobs");

    // A dead server: a warning, and a local build.
    nginx.stop();
    let out = ctx
        .cmd()
        .current_dir(&b)
        .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("store-d"))
        .args(["build", "spec.kdl", "--json", "--remote-cache", &url])
        .output()
        .unwrap();
    assert_success(&out, "build with a dead cache");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["derivations"]["built"], 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: remote cache"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `compose …` in `dir` with store `store` and extra environment.
fn run_in(ctx: &TestContext, dir: &Path, store: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = ctx.cmd();
    c.current_dir(dir).env("COMPOSE_CACHE_DIR", ctx.tmp.path().join(store)).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn json_of(out: &std::process::Output, what: &str) -> serde_json::Value {
    assert_success(out, what);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn registry_cache_machine_b_builds_nothing_machine_a_built() {
    let ctx = TestContext::new();
    let reg = TestRegistry::start();
    let addr = reg.addr();
    let url = format!("oci://{addr}/team/build-cache");
    let a = checkout(&ctx.tmp.path().join("machine-a/src"));
    let b = checkout(&ctx.tmp.path().join("elsewhere/machine-b/checkout"));
    let va = build(&ctx, &a, "store-a", &["--remote-cache", &url, "--insecure-registry", &addr]);
    assert_eq!(va["derivations"]["built"], 3, "{va}");

    // The records are tagged artifacts in the repository.
    let tags =
        Command::new("skopeo").args(["list-tags", "--tls-verify=false", &format!("docker://{addr}/team/build-cache")]).output().unwrap();
    assert_success(&tags, "skopeo list-tags");
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    let tags = tags["Tags"].as_array().unwrap();
    assert_eq!(tags.len(), 3, "{tags:?}");
    assert!(tags.iter().all(|t| t.as_str().unwrap().starts_with("compose-")), "{tags:?}");

    let plan = run_in(&ctx, &b, "store-b", &["plan", "spec.kdl", "--json", "--remote-cache", &url, "--insecure-registry", &addr], &[]);
    let p = json_of(&plan, "plan with a registry cache");
    assert!(p["nodes"].as_array().unwrap().iter().all(|n| n["remote"] == true), "{p}");

    let vb = build(&ctx, &b, "store-b", &["--remote-cache", &url, "--insecure-registry", &addr, "--remote-cache-mode", "ro"]);
    assert_eq!(vb["derivations"]["built"], 0, "{vb}");
    assert_eq!(vb["derivations"]["remote"], 3, "{vb}");
    assert_eq!(vb["images"][0]["digest"], va["images"][0]["digest"]);

    // A layer damaged in the registry's storage: detected, discarded, rebuilt here. (Small
    // outputs travel inside the record manifests, so only the big layer is read from storage.)
    let blobs = reg_blob_files(&reg);
    let mut damaged = 0;
    for p in blobs {
        let mut bytes = fs::read(&p).unwrap();
        if bytes.starts_with(&[0x1f, 0x8b]) && bytes.len() > 4096 {
            let n = bytes.len() / 2;
            bytes[n] ^= 0xff;
            fs::write(&p, bytes).unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1, "one big layer in the registry");
    let out = run_in(
        &ctx,
        &b,
        "store-c",
        &["build", "spec.kdl", "--json", "--remote-cache", &url, "--insecure-registry", &addr, "--remote-cache-mode", "ro"],
        &[],
    );
    let vc = json_of(&out, "build with damaged registry blobs");
    assert_eq!(vc["derivations"]["built"], 1, "{vc}");
    assert_eq!(vc["derivations"]["remote"], 2, "{vc}");
    assert_eq!(vc["images"][0]["digest"], va["images"][0]["digest"]);
    assert!(stderr_of(&out).contains("discarded 1 damaged blob"), "{}", stderr_of(&out));
    let verify = run_in(&ctx, &b, "store-c", &["cache", "verify"], &[]);
    assert_success(&verify, "verify after damaged registry blobs");
}

fn reg_blob_files(reg: &TestRegistry) -> Vec<std::path::PathBuf> {
    let root = reg.blob_file(&compose::hash::Sha256::of(b"")).parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let mut out = Vec::new();
    for d in fs::read_dir(&root).unwrap() {
        for e in fs::read_dir(d.unwrap().path()).unwrap() {
            let data = e.unwrap().path().join("data");
            if data.is_file() {
                out.push(data);
            }
        }
    }
    out
}

#[test]
fn only_records_signed_by_trusted_keys_are_used() {
    let ctx = TestContext::new();
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let a = checkout(&ctx.tmp.path().join("machine-a"));
    let b = checkout(&ctx.tmp.path().join("machine-b"));
    let signed = format!("{}/signed", nginx.url);
    let unsigned = format!("{}/unsigned", nginx.url);

    // Machine A makes a key in its store; its builds sign what they upload.
    let kg = run_in(&ctx, &a, "store-a", &["cache", "keygen", "team-a"], &[]);
    assert_success(&kg, "keygen");
    let pub_a = String::from_utf8(kg.stdout).unwrap().trim().to_string();
    assert!(pub_a.starts_with("team-a:"), "{pub_a}");
    let secret = ctx.tmp.path().join("store-a/keys/team-a.secret");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    let again = run_in(&ctx, &a, "store-a", &["cache", "keygen", "team-a"], &[]);
    assert_eq!(again.status.code(), Some(2), "a key is never overwritten: {}", stderr_of(&again));

    let va = build(&ctx, &a, "store-a", &["--remote-cache", &signed]);
    assert_eq!(va["derivations"]["built"], 3);
    let rec = fs::read_dir(nginx.root.join("signed/ac")).unwrap().next().unwrap().unwrap().path();
    assert!(fs::read_to_string(&rec).unwrap().contains("\"signatures\":[{\"key\":\"team-a\""));

    // Trusted: everything comes from the cache (flag or environment).
    let vb = build(&ctx, &b, "store-b", &["--remote-cache", &signed, "--remote-cache-mode", "ro", "--trusted-key", &pub_a]);
    assert_eq!((vb["derivations"]["remote"].as_u64(), vb["derivations"]["built"].as_u64()), (Some(3), Some(0)), "{vb}");
    assert_eq!(vb["images"][0]["digest"], va["images"][0]["digest"]);

    // A key nobody trusts, and a forged key under the trusted name: records ignored, built here.
    let other = run_in(&ctx, &b, "store-x", &["cache", "keygen", "other", "--out", "../other.secret"], &[]);
    let pub_other = String::from_utf8(other.stdout).unwrap().trim().to_string();
    let forged = run_in(&ctx, &b, "store-x", &["cache", "keygen", "team-a", "--out", "../forged.secret"], &[]);
    let pub_forged = String::from_utf8(forged.stdout).unwrap().trim().to_string();
    assert!(pub_forged.starts_with("team-a:") && pub_forged != pub_a);
    for (store, key) in [("store-c", &pub_other), ("store-d", &pub_forged)] {
        let out = run_in(
            &ctx,
            &b,
            store,
            &["build", "spec.kdl", "--json", "--remote-cache", &signed, "--remote-cache-mode", "ro", "--trusted-key", key],
            &[],
        );
        let v = json_of(&out, "build trusting another key");
        assert_eq!((v["derivations"]["remote"].as_u64(), v["derivations"]["built"].as_u64()), (Some(0), Some(3)), "{v}");
        assert_eq!(v["images"][0]["digest"], va["images"][0]["digest"]);
        assert!(stderr_of(&out).contains("ignored 3 record(s) not signed by a trusted key"), "{}", stderr_of(&out));
    }
    let env_keys = format!("{pub_other} {pub_a}");
    let out = run_in(
        &ctx,
        &b,
        "store-e",
        &["build", "spec.kdl", "--json", "--remote-cache", &signed, "--remote-cache-mode", "ro"],
        &[("COMPOSE_TRUSTED_KEYS", &env_keys)],
    );
    assert_eq!(json_of(&out, "keys from the environment")["derivations"]["remote"], 3);

    // Unsigned records are used without trusted keys, and ignored with them.
    let vu = build(&ctx, &b, "store-u", &["--remote-cache", &unsigned]);
    assert_eq!(vu["derivations"]["built"], 3);
    let rec = fs::read_dir(nginx.root.join("unsigned/ac")).unwrap().next().unwrap().unwrap().path();
    assert!(!fs::read_to_string(&rec).unwrap().contains("signatures"));
    let v = build(&ctx, &a, "store-f", &["--remote-cache", &unsigned, "--remote-cache-mode", "ro"]);
    assert_eq!(v["derivations"]["remote"], 3);
    let v = build(&ctx, &a, "store-g", &["--remote-cache", &unsigned, "--remote-cache-mode", "ro", "--trusted-key", &pub_a]);
    assert_eq!((v["derivations"]["remote"].as_u64(), v["derivations"]["built"].as_u64()), (Some(0), Some(3)), "{v}");
}

#[test]
fn bad_remote_cache_settings_are_usage_errors() {
    let ctx = TestContext::new();
    let dir = checkout(&ctx.tmp.path().join("src"));
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--remote-cache", "ftp://127.0.0.1/x"], &[], "expected http://…, https://… or oci://REGISTRY/REPOSITORY"),
        (&["--remote-cache", "oci://127.0.0.1:5000/cache:tag"], &[], "without a tag or digest"),
        (&["--remote-cache", "http://127.0.0.1:1/", "--trusted-key", "nocolon"], &[], "bad trusted key"),
        (&["--remote-cache", "http://127.0.0.1:1/", "--trusted-key", "k:AAAA"], &[], "32"),
        (&["--remote-cache", "http://127.0.0.1:1/", "--signing-key", "missing.secret"], &[], "missing.secret"),
        (&["--remote-cache", "http://127.0.0.1:1/"], &[("COMPOSE_REMOTE_CACHE_TIMEOUT", "soon")], "COMPOSE_REMOTE_CACHE_TIMEOUT"),
    ];
    for (args, env, expected) in cases {
        let mut all = vec!["build", "spec.kdl"];
        all.extend_from_slice(args);
        let out = run_in(&ctx, &dir, "store", &all, env);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains(expected), "{args:?}: expected `{expected}` in {}", stderr_of(&out));
        assert!(!dir.join("out").exists(), "{args:?} changed nothing");
    }
    let out = run_in(&ctx, &dir, "store", &["cache", "keygen", "bad name"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

#[test]
fn a_server_killed_mid_build_hanging_or_flooding_never_fails_the_build() {
    let ctx = TestContext::new();
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let a = checkout(&ctx.tmp.path().join("machine-a"));
    let va = build(&ctx, &a, "store-a", &["--remote-cache", &nginx.url]);
    assert_eq!(va["derivations"]["built"], 3);

    // Records are served, then the server dies half-way through the first blob.
    let (mut child, url) = misbehaving(&ctx, &nginx.root, "die");
    let out = run_in(&ctx, &a, "store-b", &["build", "spec.kdl", "--json", "--remote-cache", &url, "--remote-cache-mode", "ro"], &[]);
    let v = json_of(&out, "build while the cache server dies");
    let _ = child.kill();
    assert!(child.wait().unwrap().code() == Some(1), "the server died mid-transfer");
    assert_eq!(v["images"][0]["digest"], va["images"][0]["digest"]);
    assert!(v["derivations"]["built"].as_u64().unwrap() >= 1, "{v}");
    assert!(stderr_of(&out).contains("is not used for the rest of this build"), "{}", stderr_of(&out));
    let verify = run_in(&ctx, &a, "store-b", &["cache", "verify"], &[]);
    assert_success(&verify, "no half blob entered the store");

    // A server that accepts connections and never answers: a time-out, a warning, a local build.
    let (mut child, url) = misbehaving(&ctx, &nginx.root, "hang");
    let out =
        run_in(&ctx, &a, "store-c", &["build", "spec.kdl", "--json", "--remote-cache", &url], &[("COMPOSE_REMOTE_CACHE_TIMEOUT", "1")]);
    let _ = child.kill();
    let _ = child.wait();
    let v = json_of(&out, "build with a hanging cache server");
    assert_eq!(v["derivations"]["built"], 3, "{v}");
    assert_eq!(v["images"][0]["digest"], va["images"][0]["digest"]);
    assert!(stderr_of(&out).contains("timed out"), "{}", stderr_of(&out));

    // A server sending megabytes for a record.
    let (mut child, url) = misbehaving(&ctx, &nginx.root, "huge");
    let out = run_in(&ctx, &a, "store-d", &["build", "spec.kdl", "--json", "--remote-cache", &url], &[]);
    let _ = child.kill();
    let _ = child.wait();
    let v = json_of(&out, "build with a cache server sending huge records");
    assert_eq!(v["derivations"]["built"], 3, "{v}");
    assert!(stderr_of(&out).contains("for a record"), "{}", stderr_of(&out));
}

#[test]
fn http_cache_credentials_from_netrc_url_and_environment() {
    let ctx = TestContext::new();
    let dir = ctx.tmp.path().join("nginx");
    fs::create_dir_all(&dir).unwrap();
    let ht = Command::new("htpasswd").args(["-mbc"]).arg(dir.join("htpasswd")).args(["alice", "s3cret"]).output().unwrap();
    assert_success(&ht, "htpasswd");
    let webdav = "root ROOT; dav_methods PUT; create_full_put_path on; client_max_body_size 0;";
    let extra = format!(
        "    location /basic/ {{ {webdav} auth_basic \"cache\"; auth_basic_user_file {}; }}\n    location /bearer/ {{ if ($http_authorization != \"Bearer t0ken\") {{ return 401; }} {webdav} }}\n",
        dir.join("htpasswd").display()
    );
    let nginx = Nginx::start_with(&dir, &extra);
    let a = checkout(&ctx.tmp.path().join("machine-a"));
    let basic = format!("{}/basic", nginx.url);
    let bearer = format!("{}/bearer", nginx.url);

    // Without credentials: refused, said so, built locally.
    let out = run_in(&ctx, &a, "store-1", &["build", "spec.kdl", "--json", "--remote-cache", &basic], &[]);
    let v = json_of(&out, "build refused by the cache");
    assert_eq!(v["derivations"]["built"], 3);
    assert!(stderr_of(&out).contains("401") && stderr_of(&out).contains("netrc"), "{}", stderr_of(&out));
    assert!(!nginx.root.join("basic/ac").exists());

    // netrc.
    let netrc = ctx.tmp.path().join("netrc");
    fs::write(&netrc, "machine 127.0.0.1\n  login alice\n  password s3cret\n").unwrap();
    let netrc_s = netrc.to_string_lossy().into_owned();
    let v =
        json_of(&run_in(&ctx, &a, "store-2", &["build", "spec.kdl", "--json", "--remote-cache", &basic], &[("NETRC", &netrc_s)]), "netrc");
    assert_eq!(v["derivations"]["built"], 3);
    assert_eq!(nginx.root.join("basic/ac").read_dir().unwrap().count(), 3);
    // User and password in the URL, and in the environment.
    let with_user = basic.replace("http://", "http://alice:s3cret@");
    let v = json_of(
        &run_in(&ctx, &a, "store-3", &["build", "spec.kdl", "--json", "--remote-cache", &with_user, "--remote-cache-mode", "ro"], &[]),
        "URL credentials",
    );
    assert_eq!(v["derivations"]["remote"], 3);
    let out = run_in(
        &ctx,
        &a,
        "store-4",
        &["build", "spec.kdl", "--json", "--remote-cache", &basic, "--remote-cache-mode", "ro"],
        &[("COMPOSE_REMOTE_CACHE_USER", "alice"), ("COMPOSE_REMOTE_CACHE_PASSWORD", "s3cret")],
    );
    assert_eq!(json_of(&out, "env credentials")["derivations"]["remote"], 3);
    // A wrong password is named as such, never printed.
    let wrong = basic.replace("http://", "http://alice:hunter2@");
    let out = run_in(&ctx, &a, "store-5", &["build", "spec.kdl", "--json", "--remote-cache", &wrong], &[]);
    assert_success(&out, "wrong password");
    assert!(stderr_of(&out).contains("check the credentials from the URL") && !stderr_of(&out).contains("hunter2"), "{}", stderr_of(&out));

    // Bearer token.
    let v = json_of(
        &run_in(
            &ctx,
            &a,
            "store-6",
            &["build", "spec.kdl", "--json", "--remote-cache", &bearer],
            &[("COMPOSE_REMOTE_CACHE_TOKEN", "t0ken")],
        ),
        "bearer",
    );
    assert_eq!(v["derivations"]["built"], 3);
    assert_eq!(nginx.root.join("bearer/ac").read_dir().unwrap().count(), 3);
}

#[test]
fn packages_the_mirror_dropped_come_from_the_team_cache() {
    let ctx = TestContext::new();
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let mut repo = Repo::new(&ctx.tmp.path().join("repo"));
    repo.add(Pkg::new("hello", "1.0").file("/usr/bin/hello", "#!/bin/sh\necho hello\n", 0o755));
    repo.publish("stable");
    let server = Server::start(&repo.root);
    let mirror = format!("fixture={}", server.url);
    let src = ctx.tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("spec.kdl"),
        format!(
            "image \"pkg\" {{\n    repository \"fixture\" suite=\"stable\" components=\"main\" keyring=\"{}\"\n    packages \"hello\"\n}}\n",
            repo.keyring.display()
        ),
    )
    .unwrap();
    let out = run_in(&ctx, &src, "store-a", &["build", "spec.kdl", "--json", "--mirror", &mirror, "--remote-cache", &nginx.url], &[]);
    assert_eq!(json_of(&out, "machine A")["derivations"]["remote"], 0);

    // Machine B builds the same: the image comes from the cache and the .deb is not needed.
    let deb = repo.path(&repo.filename_of("hello"));
    let deb_digest = compose::hash::Sha256::of(&fs::read(&deb).unwrap());
    let out = run_in(
        &ctx,
        &src,
        "store-b0",
        &["build", "spec.kdl", "--json", "--mirror", &mirror, "--remote-cache", &nginx.url, "--remote-cache-mode", "ro"],
        &[],
    );
    let v = json_of(&out, "machine B");
    assert_eq!(v["derivations"]["built"], 0, "{v}");
    assert!(v["derivations"]["skipped"].as_u64().unwrap() >= 1, "{v}");
    assert!(!ctx.tmp.path().join("store-b0/v1/blobs/sha256").join(deb_digest.hex()).exists(), "the .deb was not downloaded");

    // The mirror drops the package.
    fs::remove_file(&deb).unwrap();
    let out = run_in(&ctx, &src, "store-b", &["build", "spec.kdl", "--mirror", &mirror], &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert!(!out.status.success(), "without the team cache the package is gone");
    // Another epoch makes new layers, but the .deb itself comes from the team cache.
    let out = run_in(
        &ctx,
        &src,
        "store-c",
        &["build", "spec.kdl", "--json", "--mirror", &mirror, "--remote-cache", &nginx.url, "--remote-cache-mode", "ro"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    let v = json_of(&out, "machine B with the team cache");
    assert!(v["derivations"]["remote"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["derivations"]["built"].as_u64().unwrap() >= 1, "{v}");
}

#[test]
fn results_built_before_the_cache_was_configured_are_shared_once() {
    let ctx = TestContext::new();
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let a = checkout(&ctx.tmp.path().join("machine-a"));
    let b = checkout(&ctx.tmp.path().join("machine-b"));
    let va = build(&ctx, &a, "store-a", &[]);
    assert_eq!(va["derivations"]["built"], 3);
    // The store is warm; turning the cache on shares what it holds.
    let v = build(&ctx, &a, "store-a", &["--remote-cache", &nginx.url]);
    assert_eq!(v["derivations"]["local"], 3);
    assert_eq!(nginx.root.join("ac").read_dir().unwrap().count(), 3);
    // Known to be shared now: a no-op build uploads nothing; it asks for a sample of the
    // records the markers say the cache holds (and each one's largest blob), to know it still does.
    let log = ctx.tmp.path().join("nginx/access.log");
    let before = fs::read_to_string(&log).unwrap().lines().count();
    build(&ctx, &a, "store-a", &["--remote-cache", &nginx.url]);
    let text = fs::read_to_string(&log).unwrap();
    let asked: Vec<&str> = text.lines().skip(before).collect();
    assert!(!asked.is_empty() && asked.len() <= 16, "{asked:?}");
    assert!(asked.iter().all(|l| l.contains("\"GET /ac/") || l.contains("\"HEAD /cas/")), "only reads for a no-op build: {asked:?}");
    let vb = build(&ctx, &b, "store-b", &["--remote-cache", &nginx.url, "--remote-cache-mode", "ro"]);
    assert_eq!((vb["derivations"]["remote"].as_u64(), vb["derivations"]["built"].as_u64()), (Some(3), Some(0)), "{vb}");
    assert_eq!(vb["images"][0]["digest"], va["images"][0]["digest"]);

    // Records that are not shaped like the derivation's (here: an output renamed) are ignored.
    for e in fs::read_dir(nginx.root.join("ac")).unwrap() {
        let p = e.unwrap().path();
        let text = fs::read_to_string(&p).unwrap();
        fs::write(&p, text.replace("\"layer\":", "\"tampered\":")).unwrap();
    }
    let ve = build(&ctx, &b, "store-e", &["--remote-cache", &nginx.url, "--remote-cache-mode", "ro"]);
    assert_eq!((ve["derivations"]["built"].as_u64(), ve["derivations"]["remote"].as_u64()), (Some(2), Some(1)), "{ve}");
    assert_eq!(ve["images"][0]["digest"], va["images"][0]["digest"]);
}

/// The records in the cache, by kind: (path, parsed signed record).
fn remote_records(nginx: &Nginx) -> Vec<(std::path::PathBuf, serde_json::Value)> {
    let mut v: Vec<_> = fs::read_dir(nginx.root.join("ac"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let json: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
            (p, json)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// An unsigned image record whose `manifest` names another blob that exists (a layer) made the
/// build fail, and every later build of that store too, and `cache verify --repair` did not find
/// it.
#[test]
fn one_bad_remote_record_never_bricks_a_store() {
    let ctx = TestContext::new();
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let a = checkout(&ctx.tmp.path().join("machine-a"));
    let b = checkout(&ctx.tmp.path().join("machine-b"));
    let va = build(&ctx, &a, "store-a", &["--remote-cache", &nginx.url]);
    let records = remote_records(&nginx);
    let layer = records.iter().find(|(_, r)| r["kind"] == "layer").unwrap().1["outputs"]["layer"].clone();
    let (image_path, mut image) = records.into_iter().find(|(_, r)| r["kind"] == "image").unwrap();
    image["outputs"]["manifest"]["digest"] = layer["digest"].clone();
    image["outputs"]["manifest"]["size"] = layer["size"].clone();
    fs::write(&image_path, serde_json::to_vec(&image).unwrap()).unwrap();

    let vb = build(&ctx, &b, "store-b", &["--remote-cache", &nginx.url, "--remote-cache-mode", "ro"]);
    assert_eq!(vb["images"][0]["digest"], va["images"][0]["digest"], "{vb}");
    assert_eq!((vb["derivations"]["remote"].as_u64(), vb["derivations"]["built"].as_u64()), (Some(2), Some(1)), "{vb}");
    // Without the cache, the store it left builds nothing and verifies clean.
    let again = build(&ctx, &b, "store-b", &[]);
    assert_eq!(
        (again["derivations"]["built"].as_u64(), again["images"][0]["digest"].clone()),
        (Some(0), va["images"][0]["digest"].clone())
    );
    let verify = ctx.cmd().env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("store-b")).args(["cache", "verify"]).output().unwrap();
    assert_success(&verify, "verify store-b");

    // A store that took such a record before (an older compose): `cache verify` names it,
    // `--repair` removes it, and the next build makes the image again.
    let store_a = ctx.tmp.path().join("store-a");
    let local = walkdir::WalkDir::new(store_a.join("v1/records"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .find(|p| p.is_file() && fs::read_to_string(p).unwrap().contains("\"kind\": \"image\""))
        .unwrap();
    let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&local).unwrap()).unwrap();
    rec["outputs"]["manifest"]["digest"] = layer["digest"].clone();
    rec["outputs"]["manifest"]["size"] = layer["size"].clone();
    fs::write(&local, serde_json::to_vec(&rec).unwrap()).unwrap();
    let verify = |repair: bool| {
        let mut c = ctx.cmd();
        c.env("COMPOSE_CACHE_DIR", &store_a).args(["cache", "verify"]);
        if repair {
            c.arg("--repair");
        }
        c.output().unwrap()
    };
    let out = verify(false);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("does not fit its kind: its manifest does not parse"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(verify(true).status.code(), Some(1));
    assert_success(&verify(false), "verify after repair");
    let va2 = build(&ctx, &a, "store-a", &[]);
    assert_eq!((va2["derivations"]["built"].as_u64(), va2["images"][0]["digest"].clone()), (Some(1), va["images"][0]["digest"].clone()));
}

/// An unsigned layer record with another `diff_id` or media type gave a wrong image with exit 0.
/// Such records are refused (the diff_id is checked as the layer streams in) and the layers built
/// here.
#[test]
fn unsigned_remote_records_are_checked_against_their_derivation() {
    let ctx = TestContext::new();
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let a = checkout(&ctx.tmp.path().join("machine-a"));
    let b = checkout(&ctx.tmp.path().join("machine-b"));
    let va = build(&ctx, &a, "store-a", &["--remote-cache", &nginx.url]);
    let layers: Vec<_> = remote_records(&nginx).into_iter().filter(|(_, r)| r["kind"] == "layer").collect();
    assert_eq!(layers.len(), 2);
    for (i, (path, mut rec)) in layers.into_iter().enumerate() {
        let out = &mut rec["outputs"]["layer"];
        if i == 0 {
            out["diff_id"] = serde_json::json!(format!("sha256:{}", "ab".repeat(32)));
        } else {
            out["media_type"] = serde_json::json!("application/vnd.oci.image.layer.v1.tar");
        }
        fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
    }
    let vb = build(&ctx, &b, "store-b", &["--remote-cache", &nginx.url, "--remote-cache-mode", "ro"]);
    assert_eq!(vb["images"][0]["digest"], va["images"][0]["digest"], "{vb}");
    assert_eq!((vb["derivations"]["remote"].as_u64(), vb["derivations"]["built"].as_u64()), (Some(1), Some(2)), "{vb}");
}

/// A spec with a build step (busybox from the host; no network) whose output is copied.
const STEP_SPEC: &str = r#"
image "tools" {
    export #false
    files {
        copy "/bin/busybox" to="/bin/busybox" mode=0o755
        symlink "/bin/sh" target="busybox"
    }
}
step "mk" {
    image "tools"
    run "sh" "-c" "echo hello > /out/hello"
    output "/out"
}
image "app" { files { copy from="mk" "/out/hello" to="/hello" } }
"#;

/// `(name, type, link, size, data)`.
type RawEntry<'a> = (&'a [u8], u8, &'a [u8], u64, &'a [u8]);

/// A tar of entries written as given, without any check: what an attacker uploads.
fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, ty, link, size, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.as_mut_bytes()[..name.len()].copy_from_slice(name);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(*size);
        h.set_entry_type(tar::EntryType::new(*ty));
        if *ty == b'3' || *ty == b'4' {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Machines A and B with [`STEP_SPEC`]; A builds into the cache `nginx`, then every record but
/// the step's is removed from it, so B must build the layer that copies from the step and takes
/// the step's tree from the cache. Returns A's and B's directories, A's build, and the step
/// record's path in the cache and its record.
fn cache_with_only_the_step(ctx: &TestContext, nginx: &Nginx) -> (PathBuf, PathBuf, serde_json::Value, PathBuf, serde_json::Value) {
    let a = ctx.tmp.path().join("machine-a");
    let b = ctx.tmp.path().join("machine-b");
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("spec.kdl"), STEP_SPEC).unwrap();
    }
    let va = build(ctx, &a, "store-a", &["--remote-cache", &nginx.url]);
    let mut step = None;
    for (path, rec) in remote_records(nginx) {
        if rec["kind"] == "step" {
            step = Some((path, rec));
        } else {
            fs::remove_file(path).unwrap();
        }
    }
    let (path, rec) = step.unwrap();
    (a, b, va, path, rec)
}

/// Write at `path` the step record `rec` with its tree replaced by `blob`, gzip (whose
/// uncompressed bytes have sha256 `diff_id`, in hex). compose writes zstd trees; records of gzip
/// ones, as earlier versions wrote, fit too.
fn retree(path: &Path, rec: &serde_json::Value, blob: &[u8], diff_id: &str) {
    let mut rec = rec.clone();
    rec["outputs"]["tree"]["media_type"] = serde_json::json!("application/vnd.oci.image.layer.v1.tar+gzip");
    rec["outputs"]["tree"]["digest"] = serde_json::json!(format!("sha256:{}", sha256_hex(blob)));
    rec["outputs"]["tree"]["size"] = serde_json::json!(blob.len());
    rec["outputs"]["tree"]["diff_id"] = serde_json::json!(format!("sha256:{diff_id}"));
    fs::write(path, serde_json::to_vec(&rec).unwrap()).unwrap();
}

/// Guards against this: one unsigned remote `step` record whose tree held `..`, an absolute path, a
/// hard link out, a device, or was not a tar passed the record checks; that build and every
/// later one failed, even without the remote, `cache verify --repair` saw nothing and gc kept
/// it. Such trees are refused as they stream in (the step runs here), and one already in a
/// store is found and removed by `cache verify --repair`.
#[test]
fn hostile_remote_step_records_never_brick_a_store() {
    let ctx = TestContext::new();
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let (a, b, va, step_path, step_rec) = cache_with_only_the_step(&ctx, &nginx);
    let reference = va["images"][0]["digest"].clone();
    let hello: &[u8] = b"hello\n";
    let dir = |n: &'static [u8]| (n, b'5', &b""[..], 0u64, &b""[..]);
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        ("not a tar", gzip(&b"this is not a tar at all\n".repeat(100))),
        ("dotdot", raw_tar(&[(b"../../../../hello", b'0', b"", 6, hello), (b"hello", b'0', b"", 6, hello)])),
        ("absolute", raw_tar(&[(b"/hello", b'0', b"", 7, b"forged\n")])),
        ("hard link out", raw_tar(&[(b"hello", b'1', b"../../../../../../etc/hostname", 0, b"")])),
        ("device", raw_tar(&[(b"hello", b'3', b"", 0, b"")])),
        ("fifo", raw_tar(&[(b"hello", b'6', b"", 0, b"")])),
        ("not UTF-8", raw_tar(&[dir(b"d\xff/"), (b"d\xff/x", b'0', b"", 6, hello), (b"hello", b'0', b"", 6, hello)])),
        ("bomb", raw_tar(&[(b"a-huge", b'0', b"", 65 << 30, b""), (b"hello", b'0', b"", 6, hello)])),
    ];
    for (i, (what, tar)) in kinds.iter().enumerate() {
        let blob = if what == &"not a tar" { tar.clone() } else { gzip(tar) };
        let diff_id = if what == &"not a tar" { sha256_hex(b"this is not a tar at all\n".repeat(100).as_slice()) } else { sha256_hex(tar) };
        let hex = sha256_hex(&blob);
        fs::write(nginx.root.join("cas").join(&hex), &blob).unwrap();
        retree(&step_path, &step_rec, &blob, &diff_id);

        let store = format!("store-b{i}");
        let out =
            run_in(&ctx, &b, &store, &["build", "spec.kdl", "--json", "--remote-cache", &nginx.url, "--remote-cache-mode", "ro"], &[]);
        let v = json_of(&out, &format!("{what}: build with the hostile record"));
        assert_eq!(v["images"][0]["digest"], reference, "{what}: {v}");
        assert!(stderr_of(&out).contains("refused 1 tree(s)"), "{what}: {}", stderr_of(&out));
        // Without the cache, the store it left builds nothing and verifies clean.
        let again = build(&ctx, &b, &store, &[]);
        assert_eq!((again["derivations"]["built"].as_u64(), &again["images"][0]["digest"]), (Some(0), &reference), "{what}");
        let verify = run_in(&ctx, &b, &store, &["cache", "verify"], &[]);
        assert_success(&verify, &format!("{what}: verify"));
    }

    // A well-formed tree without the path the spec copies cannot be refused when fetched: the
    // copy fails, and that build with it, but the step's record is dropped, so the next build
    // without the cache runs the step here and gives the reference. (A tree whose path leads out
    // through a long chain of links fails the same way: `trees` unit tests.)
    for (i, (what, tar)) in [("missing", raw_tar(&[(b"other", b'0', b"", 6, hello)]))].iter().enumerate() {
        let blob = gzip(tar);
        let hex = sha256_hex(&blob);
        fs::write(nginx.root.join("cas").join(&hex), &blob).unwrap();
        retree(&step_path, &step_rec, &blob, &sha256_hex(tar));
        let store = format!("store-c{i}");
        let out = run_in(&ctx, &b, &store, &["build", "spec.kdl", "--remote-cache", &nginx.url, "--remote-cache-mode", "ro"], &[]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains("the stored output of step mk was dropped"), "{what}: {}", stderr_of(&out));
        let again = build(&ctx, &b, &store, &[]);
        assert_eq!(again["images"][0]["digest"], reference, "{what}: {again}");
        assert_success(&run_in(&ctx, &b, &store, &["cache", "verify"], &[]), &format!("{what}: verify"));
    }

    // A store that took such a tree before (an older compose): `cache verify` names it,
    // `--repair` removes the record, and the next build runs the step again.
    let store_a = ctx.tmp.path().join("store-a");
    let (_, tar) = &kinds[1];
    let blob = gzip(tar);
    let hex = sha256_hex(&blob);
    fs::write(store_a.join("v1/blobs/sha256").join(&hex), &blob).unwrap();
    let local = walkdir::WalkDir::new(store_a.join("v1/records"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .find(|p| p.is_file() && fs::read_to_string(p).unwrap().contains("\"kind\": \"step\""))
        .unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&fs::read(&local).unwrap()).unwrap();
    retree(&local, &rec, &blob, &sha256_hex(tar));
    let verify = |repair: bool| {
        let mut args = vec!["cache", "verify"];
        if repair {
            args.push("--repair");
        }
        run_in(&ctx, &a, "store-a", &args, &[])
    };
    let out = verify(false);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("breaks the rules of a tree"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(verify(true).status.code(), Some(1));
    assert_success(&verify(false), "verify after repair");
    fs::write(a.join("spec.kdl"), STEP_SPEC.replace("/hello\" }", "/hello2\" }")).unwrap();
    let va2 = build(&ctx, &a, "store-a", &[]);
    assert!(va2["derivations"]["built"].as_u64().unwrap() >= 2, "{va2}");
}

/// Guards against this: `copy from="STEP" "/out/small"` unpacked the whole step tree (a 6-byte file beside
/// a 10 GiB one: 84 s and 12.9 GB written). Here the step's tree (from the cache) holds 2 GiB of
/// zeros beside `hello`, and compose may write no file past 512 MiB: only `hello` is unpacked.
#[test]
fn copy_from_a_step_takes_only_what_it_copies() {
    use sha2::Digest;
    let ctx = TestContext::new();
    let nginx = Nginx::start(&ctx.tmp.path().join("nginx"));
    let (_, b, va, step_path, rec) = cache_with_only_the_step(&ctx, &nginx);
    // `a-big` (2 GiB of zeros) then `hello`: one gzip member per MiB, as compose writes them.
    let big: u64 = 2 << 30;
    let head = raw_tar(&[(b"a-big", b'0', b"", big, b"")]);
    let head = &head[..512];
    let tail = raw_tar(&[(b"hello", b'0', b"", 6, b"hello\n")]);
    let zeros = vec![0u8; 1 << 20];
    let (mut blob, mut diff_id) = (gzip(head), sha2::Sha256::new());
    diff_id.update(head);
    let zeros_gz = gzip(&zeros);
    for _ in 0..(big >> 20) {
        blob.extend_from_slice(&zeros_gz);
        diff_id.update(&zeros);
    }
    blob.extend_from_slice(&gzip(&tail));
    diff_id.update(&tail);
    let diff_id: String = diff_id.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let hex = sha256_hex(&blob);
    fs::write(nginx.root.join("cas").join(&hex), &blob).unwrap();
    retree(&step_path, &rec, &blob, &diff_id);

    let out = Command::new("prlimit")
        .arg(format!("--fsize={}", 512 << 20))
        .arg(crate::support::COMPOSE)
        .args(["build", "spec.kdl", "--json", "--remote-cache", &nginx.url, "--remote-cache-mode", "ro"])
        .current_dir(&b)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", ctx.tmp.path())
        .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("store-b"))
        .output()
        .unwrap();
    let vb = json_of(&out, "build copying a small file beside a big one");
    assert_eq!(vb["images"][0]["digest"], va["images"][0]["digest"], "{vb}");
    assert_eq!(vb["derivations"]["remote"], 1, "the step's tree came from the cache: {vb}");
}
