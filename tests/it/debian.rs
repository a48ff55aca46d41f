//! Against the real Debian archive this machine's apt points at (the mirror comes from the host's
//! apt sources, as the product does): `specs/debian.kdl` builds, runs under podman, and is
//! reproducible.

use std::fs;
use std::path::Path;

use crate::support::*;

#[test]
fn debian_spec_builds_runs_and_reproduces() {
    let ctx = TestContext::new();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/debian.kdl");
    fs::copy(&spec, ctx.path("debian.kdl")).unwrap();
    let first = ctx.build_json(&["debian.kdl", "--format", "docker-archive"]);
    let digest = first["images"][0]["digest"].as_str().unwrap().to_string();
    let lock1 = fs::read(ctx.path("debian.kdl.lock")).unwrap();
    let lock: serde_json::Value = serde_json::from_slice(&lock1).unwrap();
    let names: Vec<&str> = lock["images"]["debian-curl"]["platforms"]["linux/amd64"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for n in ["busybox-static", "ca-certificates", "curl", "libcurl4", "libc6", "tzdata", "openssl"] {
        assert!(names.contains(&n), "{n} not locked: {names:?}");
    }

    let podman = Podman::new(ctx.tmp.path());
    run(podman.cmd().arg("load").arg("-i").arg(ctx.path("out/debian-curl.tar")));
    let out = run(podman.cmd().args(["run", "--rm", "localhost/debian-curl:12"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("curl 7.88"), "{text}");
    // The CA bundle holds the certificates.
    let out = run(podman.cmd().args(["run", "--rm", "--entrypoint", "/bin/sh", "localhost/debian-curl:12", "-c",
        "busybox grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt"]));
    let certs: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(certs > 100, "{certs} certificates");
    // `date` honours TZ (config sets Europe/Paris; /etc/localtime points there too).
    let out = run(podman.cmd().args(["run", "--rm", "--entrypoint", "/bin/date", "localhost/debian-curl:12", "-d", "@0", "+%H %Z"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "01 CET");
    let out = run(podman.cmd().args(["run", "--rm", "--entrypoint", "/bin/sh", "localhost/debian-curl:12", "-c", "busybox readlink /etc/localtime; busybox cat /etc/timezone; busybox id -u"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/usr/share/zoneinfo/Europe/Paris\nEurope/Paris\n10001\n");

    // From an empty store again: the same digest and an unchanged lockfile.
    fs::remove_dir_all(&ctx.cache).unwrap();
    fs::remove_dir_all(ctx.path("out")).unwrap();
    let second = ctx.build_json(&["debian.kdl", "--format", "docker-archive"]);
    assert_eq!(second["images"][0]["digest"], digest.as_str());
    assert_eq!(fs::read(ctx.path("debian.kdl.lock")).unwrap(), lock1);
    // And `compose lock` re-resolves to the same pins.
    assert_success(&ctx.compose(&["lock", "debian.kdl"]), "lock");
    assert_eq!(fs::read(ctx.path("debian.kdl.lock")).unwrap(), lock1);
}
