//! Debian packages against a fixture apt repository served on 127.0.0.1: resolution, the
//! lockfile, installation into layers, and every kind of bad repository.

use std::fs;
use std::process::Command;

use crate::support::aptrepo::{Pkg, Repo, Server};
use crate::support::*;

const SUITE: &str = "fixture-stable";

fn universe(dir: &std::path::Path) -> Repo {
    let mut r = Repo::new(dir);
    r.add(Pkg::new("libfix", "1.0-1").file("/lib/x86_64-linux-gnu/libfix.so.1", "libfix\n", 0o644).field("Multi-Arch", "same"));
    r.add(
        Pkg::new("tool", "1.0-1")
            .field("Depends", "libfix (>= 1.0), mta-virtual | fallback-mta")
            .file("/bin/tool", "#!/bin/sh\necho tool\n", 0o755)
            .file("/usr/share/doc/tool/copyright", "Format: https://example.invalid/dep5\n\nFiles: *\nLicense: GPL-2+\n", 0o644),
    );
    r.add(Pkg::new("mta-real", "2.0").field("Provides", "mta-virtual").file("/usr/sbin/mta", "mta\n", 0o755));
    r.add(Pkg::new("fallback-mta", "1.0").file("/usr/sbin/fallback", "fb\n", 0o755));
    r.add(Pkg::new("newlib", "1.0").file("/usr/share/newlib/version", "1\n", 0o644));
    r.add(Pkg::new("newlib", "2.0").file("/usr/share/newlib/version", "2\n", 0o644));
    r.add(Pkg::new("provider", "3.0").field("Provides", "api (= 2.0)").file("/usr/share/provider", "p\n", 0o644));
    r.add(Pkg::new("unversioned-provider", "1.0").field("Provides", "api"));
    r.add(Pkg::new("consumer", "1.0").field("Depends", "api (>= 2.0)").file("/usr/share/consumer", "c\n", 0o644));
    r.add(Pkg::new("a-conf", "1.0").field("Conflicts", "b-conf"));
    r.add(Pkg::new("b-conf", "1.0"));
    r.add(Pkg::new("broken", "1.0").field("Depends", "middle"));
    r.add(Pkg::new("middle", "1.0").field("Depends", "missing-lib (>= 3)"));
    r.add(Pkg::new("clash1", "1.0").file("/usr/share/clash.txt", "one\n", 0o644));
    r.add(Pkg::new("clash2", "1.0").file("/usr/share/clash.txt", "two\n", 0o644));
    r.add(Pkg::new("aa-replacer", "1.0").field("Replaces", "clash1").file("/usr/share/clash.txt", "three\n", 0o644));
    r.add(Pkg::new("ess", "1.0").field("Essential", "yes").file("/usr/share/ess", "e\n", 0o644));
    r.add(Pkg::new("arch-indep", "1.0").arch("all").file("/usr/share/indep", "all\n", 0o644));
    r.publish(SUITE);
    r
}

fn spec(repo: &Repo, packages: &str) -> String {
    format!(
        "image \"pkgs\" {{\n    repository \"fixture\" suite=\"{SUITE}\" components=\"main\" keyring=\"{}\"\n    packages {packages}\n}}\n",
        repo.keyring.display()
    )
}

struct Fixture {
    ctx: TestContext,
    repo: Repo,
    server: Server,
}

impl Fixture {
    fn new() -> Fixture {
        let ctx = TestContext::new();
        let repo = universe(ctx.tmp.path());
        let server = Server::start(&repo.root);
        Fixture { ctx, repo, server }
    }

    fn mirror(&self) -> String {
        format!("fixture={}", self.server.url)
    }

    fn compose(&self, args: &[&str]) -> std::process::Output {
        let m = self.mirror();
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--mirror", &m]);
        self.ctx.compose(&all)
    }

    /// Like `compose`, with a store of its own (nothing cached from earlier runs).
    fn compose_fresh(&self, args: &[&str]) -> std::process::Output {
        let m = self.mirror();
        let store = tempfile::tempdir_in(self.ctx.tmp.path()).unwrap();
        self.ctx.cmd().env("COMPOSE_CACHE_DIR", store.path()).args(args).args(["--mirror", &m]).output().unwrap()
    }

    fn lock(&self) -> serde_json::Value {
        serde_json::from_slice(&fs::read(self.ctx.path("spec.kdl.lock")).unwrap()).unwrap()
    }

    fn locked_names(&self) -> Vec<String> {
        self.lock()["images"]["pkgs"]["platforms"]["linux/amd64"]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{}={}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap()))
            .collect()
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn resolves_locks_and_installs_fixture_packages() {
    let f = Fixture::new();
    f.ctx.write("spec.kdl", spec(&f.repo, "\"tool\" \"consumer\" \"newlib\" \"arch-indep\""));
    let out = f.compose(&["build", "spec.kdl", "--json"]);
    assert_success(&out, "build");
    // Alternatives: the virtual `mta-virtual` (first alternative) is satisfied by its provider;
    // versioned provides satisfy `api (>= 2.0)`; the highest `newlib` wins.
    assert_eq!(
        f.locked_names(),
        ["arch-indep=1.0", "consumer=1.0", "libfix=1.0-1", "mta-real=2.0", "newlib=2.0", "provider=3.0", "tool=1.0-1"]
    );
    let lock_bytes = fs::read(f.ctx.path("spec.kdl.lock")).unwrap();
    let text = String::from_utf8_lossy(&lock_bytes);
    assert!(!text.contains("127.0.0.1"), "no mirror URL in the lockfile");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = v["images"][0]["digest"].as_str().unwrap().to_string();

    // The image: each package is a layer; /bin is the merged-/usr link; dpkg's database is there.
    let layout = f.ctx.path("out/pkgs");
    run(Command::new("oci-image-tool").args(["validate", "--type", "image"]).arg(&layout));
    let bundle = f.ctx.tmp.path().join("bundle");
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", layout.display())).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(fs::read_link(rootfs.join("bin")).unwrap(), std::path::Path::new("usr/bin"));
    assert_eq!(fs::read_to_string(rootfs.join("usr/bin/tool")).unwrap(), "#!/bin/sh\necho tool\n");
    assert_eq!(fs::read_to_string(rootfs.join("usr/lib/x86_64-linux-gnu/libfix.so.1")).unwrap(), "libfix\n");
    assert_eq!(fs::read_to_string(rootfs.join("usr/share/newlib/version")).unwrap(), "2\n");
    let status = fs::read_to_string(rootfs.join("var/lib/dpkg/status")).unwrap();
    assert!(status.contains("Package: tool\nStatus: install ok installed\n"), "{status}");
    assert_eq!(status.matches("Package: ").count(), 7, "every package once: {status}");
    assert!(rootfs.join("var/lib/dpkg/info/tool.md5sums").exists() && rootfs.join("var/lib/dpkg/info/libfix:amd64.list").exists());
    assert!(!rootfs.join("var/lib/dpkg/status.d").exists(), "no second database for scanners to count twice");
    let config: serde_json::Value = {
        let o = run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:latest", layout.display())));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // 7 packages + metadata layer.
    assert_eq!(config["Layers"].as_array().unwrap().len(), 8, "{config}");

    // The SBOM lists the packages, with the licence the copyright file declares.
    let sbom: serde_json::Value = serde_json::from_slice(&fs::read(f.ctx.path("out/pkgs.spdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let tool = sbom["packages"].as_array().unwrap().iter().find(|p| p["name"] == "tool").unwrap();
    assert_eq!(tool["licenseDeclared"], "GPL-2.0-or-later");
    assert_eq!(tool["versionInfo"], "1.0-1");

    // No-op rebuild: nothing built, lockfile untouched.
    let again = f.compose(&["build", "spec.kdl", "--json"]);
    assert_success(&again, "rebuild");
    let v2: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v2["derivations"]["built"], 0);
    assert_eq!(v2["images"][0]["digest"], digest.as_str());
    assert_eq!(fs::read(f.ctx.path("spec.kdl.lock")).unwrap(), lock_bytes);

    // A lock-only build from an empty store needs no index and gives the same digest.
    let out = f
        .ctx
        .cmd()
        .env("COMPOSE_CACHE_DIR", f.ctx.tmp.path().join("other-store"))
        .args(["build", "spec.kdl", "--locked", "--mirror", &f.mirror()])
        .output()
        .unwrap();
    assert_success(&out, "locked build from an empty store");
    assert_eq!(last_line(&out), digest);

    // A pin changes the lock; --locked refuses a stale lock and changes nothing.
    f.ctx.write("spec.kdl", spec(&f.repo, "\"tool\" \"consumer\" \"newlib=1.0\" \"arch-indep\""));
    let refused = f.compose(&["build", "spec.kdl", "--locked"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("--locked"), "{}", stderr(&refused));
    assert_eq!(fs::read(f.ctx.path("spec.kdl.lock")).unwrap(), lock_bytes);
    let out = f.compose(&["lock", "spec.kdl"]);
    assert_success(&out, "lock");
    assert!(f.locked_names().contains(&"newlib=1.0".to_string()));

    // `compose explain` names the package whose pin changed, with both versions.
    let out = f.compose(&["explain", "spec.kdl"]);
    assert_success(&out, "explain");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("package changed (newlib=2.0 → newlib=1.0)"), "{text}");
    assert!(!text.contains("package tool"), "tool did not change: {text}");
}

fn expect_failure(f: &Fixture, packages: &str, code: i32, needles: &[&str]) -> String {
    f.ctx.write("spec.kdl", spec(&f.repo, packages));
    let out = f.compose(&["build", "spec.kdl"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in:\n{err}");
    }
    assert!(!f.ctx.path("out").exists(), "nothing written on failure");
    err
}

#[test]
fn resolution_errors_say_why() {
    let f = Fixture::new();
    expect_failure(&f, "\"a-conf\" \"b-conf\"", 2, &["conflict", "a-conf", "b-conf"]);
    expect_failure(&f, "\"broken\"", 2, &["broken", "middle", "missing-lib (>= 3)"]);
    expect_failure(&f, "\"newlib=9.9\"", 2, &["newlib", "9.9", "1.0", "2.0"]);
    expect_failure(&f, "\"no-such-package\"", 2, &["no-such-package"]);
    assert!(!f.ctx.path("spec.kdl.lock").exists(), "a failed resolution writes no lockfile");
    expect_failure(&f, "\"clash1\" \"clash2\"", 1, &["clash1", "clash2", "/usr/share/clash.txt"]);
}

#[test]
fn tampered_deb_and_missing_version_are_caught() {
    let f = Fixture::new();
    f.ctx.write("spec.kdl", spec(&f.repo, "\"tool\""));
    assert_success(&f.compose(&["lock", "spec.kdl"]), "lock");
    let deb = f.repo.path(&f.repo.filename_of("libfix"));
    let mut bytes = fs::read(&deb).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x55;
    fs::write(&deb, &bytes).unwrap();
    let out = f.compose(&["build", "spec.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("libfix=1.0-1") && err.contains("does not match") && err.contains(&f.server.url), "{err}");
    assert!(!f.ctx.path("out").exists());
    let verify = f.ctx.compose(&["cache", "verify"]);
    assert_success(&verify, "verify after a rejected download");

    fs::remove_file(&deb).unwrap();
    let out = f.compose(&["build", "spec.kdl"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("compose lock --update") && err.contains("libfix"), "{err}");
}

#[test]
fn bad_repositories_are_rejected() {
    let f = Fixture::new();
    f.ctx.write("spec.kdl", spec(&f.repo, "\"tool\""));
    // No mirror anywhere: the error says all three ways to give one.
    let out = f.ctx.compose(&["build", "spec.kdl"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--mirror fixture=") && err.contains("COMPOSE_MIRROR_FIXTURE") && err.contains("sources"), "{err}");
    // The environment variable works as a mirror.
    let out = f.ctx.cmd().env("COMPOSE_MIRROR_FIXTURE", &f.server.url).args(["lock", "spec.kdl"]).output().unwrap();
    assert_success(&out, "lock with COMPOSE_MIRROR_FIXTURE");
    fs::remove_file(f.ctx.path("spec.kdl.lock")).unwrap();

    // A Packages index that does not match its Release.
    let packages = f.repo.path(&format!("dists/{SUITE}/main/binary-amd64/Packages.gz"));
    let good = fs::read(&packages).unwrap();
    fs::write(&packages, b"not the index").unwrap();
    fs::write(f.repo.path(&format!("dists/{SUITE}/main/binary-amd64/Packages")), b"not the index").unwrap();
    let out = f.compose_fresh(&["lock", "spec.kdl"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Packages") && err.contains("is not the one its Release names") && err.contains("mismatch"), "{err}");
    fs::write(&packages, good).unwrap();

    // A tampered InRelease.
    let inrelease = f.repo.path(&format!("dists/{SUITE}/InRelease"));
    let text = fs::read_to_string(&inrelease).unwrap();
    fs::write(&inrelease, text.replace("Label: Fixture", "Label: Fixturf")).unwrap();
    let out = f.compose_fresh(&["lock", "spec.kdl"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("signature"), "{err}");

    // An unsigned one.
    fs::copy(f.repo.path(&format!("dists/{SUITE}/Release")), &inrelease).unwrap();
    let out = f.compose_fresh(&["lock", "spec.kdl"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not signed"), "{err}");
    assert!(!f.ctx.path("spec.kdl.lock").exists());
}

#[test]
fn replaces_allows_a_shared_path_and_the_layer_budget_merges_packages() {
    let f = Fixture::new();
    // aa-replacer declares Replaces: clash1 (and sorts before it), so both may ship /usr/share/clash.txt; the later layer's
    // copy is what the image has. Essential packages are not added unless asked for.
    f.ctx.write("spec.kdl", spec(&f.repo, "\"tool\" \"consumer\" \"newlib\" \"arch-indep\" \"clash1\" \"aa-replacer\""));
    let out = f.compose(&["build", "spec.kdl", "--json"]);
    assert_success(&out, "build with Replaces");
    assert!(!f.locked_names().iter().any(|n| n.starts_with("ess=")), "{:?}", f.locked_names());
    let full: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // 9 packages + metadata = 10 layers; a budget of 4 keeps the 2 most depended-upon packages
    // in layers of their own and merges the other 7 into one.
    let out = f.compose(&["build", "spec.kdl", "--json", "--max-layers", "4", "--out", "out4"]);
    assert_success(&out, "build with a layer budget");
    let small: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(small["images"][0]["digest"], full["images"][0]["digest"]);
    let layout = f.ctx.path("out4/pkgs");
    let inspect = run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:latest", layout.display())));
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 4, "{v}");
    let bundle = f.ctx.tmp.path().join("bundle4");
    run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", layout.display())).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    for p in ["usr/bin/tool", "usr/share/newlib/version", "usr/share/indep", "usr/share/consumer", "var/lib/dpkg/info/clash1.list"] {
        assert!(rootfs.join(p).exists(), "{p} missing from the merged image");
    }
    assert_eq!(fs::read_to_string(rootfs.join("usr/share/clash.txt")).unwrap(), "three\n");
    // The same budget again: nothing to build, same digest.
    let again = f.compose(&["build", "spec.kdl", "--json", "--max-layers", "4", "--out", "out4"]);
    let a: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(a["derivations"]["built"], 0);
    assert_eq!(a["images"][0]["digest"], small["images"][0]["digest"]);
}

#[test]
fn packages_in_the_base_count_as_installed_and_base_accounts_are_kept() {
    let f = Fixture::new();
    let repo = format!("repository \"fixture\" suite=\"{SUITE}\" components=\"main\" keyring=\"{}\"", f.repo.keyring.display());
    f.ctx.write(
        "parent.kdl",
        format!("image \"parent\" {{\n    tag \"p\"\n    {repo}\n    packages \"libfix\"\n    accounts {{\n        user \"app\" uid=1000\n        group \"app\" gid=1000\n    }}\n}}\n"),
    );
    assert_success(&f.compose(&["build", "parent.kdl", "--out", "base"]), "parent");
    for (i, base) in ["base \"oci:base/parent:p\"", "base image=\"parent\""].iter().enumerate() {
        let parent = fs::read_to_string(f.ctx.path("parent.kdl")).unwrap();
        let extra = if base.contains("image=") { parent.as_str() } else { "" };
        let spec = format!(
            "{extra}\nimage \"child\" {{\n    {base}\n    {repo}\n    packages \"tool\"\n    accounts {{\n        user \"svc\" uid=2000\n        group \"svc\" gid=2000\n    }}\n}}\n"
        );
        let name = format!("child{i}.kdl");
        f.ctx.write(&name, spec);
        let out_dir = format!("out{i}");
        let out = f.compose(&["build", &name, "--image", "child", "--out", &out_dir]);
        assert_success(&out, base);
        let lock: serde_json::Value = serde_json::from_slice(&fs::read(f.ctx.path(&format!("{name}.lock"))).unwrap()).unwrap();
        let names: Vec<&str> = lock["images"]["child"]["platforms"]["linux/amd64"]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(!names.contains(&"libfix"), "libfix is in the base already ({base}): {names:?}");
        assert!(names.contains(&"tool"), "{names:?}");
        let bundle = f.ctx.tmp.path().join(format!("bundle-child{i}"));
        let layout = f.ctx.path(&format!("{out_dir}/child"));
        run(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", layout.display())).arg(&bundle));
        let passwd = fs::read_to_string(bundle.join("rootfs/etc/passwd")).unwrap();
        assert!(passwd.contains("\napp:x:1000:") && passwd.contains("\nsvc:x:2000:"), "{base}: {passwd}");
        assert!(bundle.join("rootfs/usr/lib/x86_64-linux-gnu/libfix.so.1").exists());
        assert!(bundle.join("rootfs/usr/bin/tool").exists());
    }
}

/// Found by users: a `base image=` child did not inherit its parent's `repository` nodes, and
/// failed with exit 2 only after downloading, having written the store.
#[test]
fn base_image_child_inherits_its_parents_repositories() {
    let f = Fixture::new();
    let repo = format!("repository \"fixture\" suite=\"{SUITE}\" components=\"main\" keyring=\"{}\"", f.repo.keyring.display());
    f.ctx.write(
        "spec.kdl",
        format!("image \"parent\" {{\n    {repo}\n    packages \"libfix\"\n}}\nimage \"child\" {{\n    base image=\"parent\"\n    packages \"tool\"\n}}\n"),
    );
    let out = f.compose(&["build", "spec.kdl", "--image", "child"]);
    assert_success(&out, "a child without repositories of its own");
    let names: Vec<String> = f.lock()["images"]["child"]["platforms"]["linux/amd64"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"tool".to_string()) && !names.contains(&"libfix".to_string()), "{names:?}");

    // Packages and no repository anywhere: refused from the text, before any download, and the
    // store is not created.
    let fresh = TestContext::new();
    fresh.write("spec.kdl", "image \"lonely\" {\n    packages \"tool\"\n}\n");
    let out = fresh.compose(&["build", "spec.kdl"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("image `lonely` lists packages but has no `repository`") && err.contains("spec.kdl:2:"), "{err}");
    assert!(!fresh.cache.exists(), "a spec error writes nothing");
}

/// Found by users: `--max-layers` ignored the layers a `base image=` parent brings (a child
/// reached 222 layers).
#[test]
fn max_layers_counts_layers_inherited_through_base_image() {
    let f = Fixture::new();
    let repo = format!("repository \"fixture\" suite=\"{SUITE}\" components=\"main\" keyring=\"{}\"", f.repo.keyring.display());
    let blocks: String = (0..5).map(|i| format!("    layer \"l{i}\" {{ text \"/etc/l{i}\" \"{i}\" }}\n")).collect();
    f.ctx.write(
        "spec.kdl",
        format!("image \"parent\" {{\n{blocks}}}\nimage \"child\" {{\n    base image=\"parent\"\n    {repo}\n    packages \"tool\" \"consumer\" \"newlib\"\n}}\n"),
    );
    // 5 inherited + 6 packages + metadata = 12 without a budget; with 8, the packages merge.
    let out = f.compose(&["build", "spec.kdl", "--image", "child", "--max-layers", "8"]);
    assert_success(&out, "child under a budget");
    let inspect = run(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:latest", f.ctx.path("out/child").display())));
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let n = v["Layers"].as_array().unwrap().len();
    assert!(n <= 8, "{n} layers: {v}");
    // What cannot fit is an error naming the counts, not an image over the limit.
    let out = f.compose(&["build", "spec.kdl", "--image", "child", "--max-layers", "6"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("image `child` would have 8 layers on linux/amd64 (5 from its base), more than the limit of 6"), "{err}");
}

/// `variant "essential"` adds the archive's Essential packages; the variant is part of what the
/// lockfile was resolved from, so changing it re-resolves (and `--locked` refuses).
#[test]
fn variant_essential_adds_the_essential_packages() {
    let f = Fixture::new();
    let text = spec(&f.repo, "\"arch-indep\"");
    f.ctx.write("spec.kdl", text.replace("image \"pkgs\" {\n", "image \"pkgs\" {\n    variant \"essential\"\n"));
    assert_success(&f.compose(&["lock", "spec.kdl"]), "lock with a variant");
    assert!(f.locked_names().contains(&"ess=1.0".to_string()), "{:?}", f.locked_names());
    assert_eq!(f.lock()["images"]["pkgs"]["requests"]["variant"], "essential");
    f.ctx.write("spec.kdl", &text);
    let out = f.compose(&["build", "spec.kdl", "--locked"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_success(&f.compose(&["build", "spec.kdl"]), "build after dropping the variant");
    assert!(!f.locked_names().iter().any(|n| n.starts_with("ess=")), "{:?}", f.locked_names());
}

/// The signed Release's Suite/Codename was not checked against the suite asked for, so a mirror
/// could serve another suite's validly signed release (a downgrade).
#[test]
fn signed_release_for_another_suite_is_refused() {
    let f = Fixture::new();
    // The mirror answers for `fixture-next` with fixture-stable's signed release and indexes.
    let dists = f.repo.root.join("dists");
    let status = Command::new("cp").arg("-a").arg(dists.join(SUITE)).arg(dists.join("fixture-next")).status().unwrap();
    assert!(status.success());
    f.ctx.write("spec.kdl", spec(&f.repo, "\"tool\"").replace(&format!("suite=\"{SUITE}\""), "suite=\"fixture-next\""));
    let out = f.compose(&["build", "spec.kdl"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is for suite `fixture-stable` (codename `fixture-stable`), not the `fixture-next` the spec asks for"), "{err}");
    assert!(!f.ctx.path("spec.kdl.lock").exists(), "nothing is locked");
}

/// Mirror credentials were printed in errors (`failed to fetch http://bob:s3cr3t@…/InRelease`, `…
/// from http://bob:s3cr3t@…/pool/…deb does not match`).
#[test]
fn mirror_credentials_are_never_printed() {
    let f = Fixture::new();
    f.ctx.write("spec.kdl", spec(&f.repo, "\"tool\""));
    // A mirror that is down, and the real one, both given with credentials.
    let down = DeadPort::new();
    let dead = format!("fixture=http://bob:s3cr3t@127.0.0.1:{}", down.port);
    let out = f.ctx.compose(&["build", "spec.kdl", "--mirror", &dead]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("***@127.0.0.1") && !err.contains("s3cr3t") && !err.contains("bob"), "{err}");
    // A package whose bytes do not match the lock, fetched with credentials.
    let live = f.server.url.replace("http://", "http://bob:s3cr3t@");
    assert_success(&f.ctx.compose(&["lock", "spec.kdl", "--mirror", &format!("fixture={live}")]), "lock");
    let mut lock = f.lock();
    lock["images"]["pkgs"]["platforms"]["linux/amd64"]["packages"][0]["sha256"] = serde_json::json!("0".repeat(64));
    fs::write(f.ctx.path("spec.kdl.lock"), serde_json::to_vec_pretty(&lock).unwrap()).unwrap();
    let out = f.ctx.compose(&["build", "spec.kdl", "--mirror", &format!("fixture={live}")]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not match the lockfile") && !err.contains("s3cr3t"), "{err}");
}
