//! Reproducibility: the same spec gives the same bytes whatever the machine's state.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::*;

const SPEC: &str = r#"
image "repro" {
    tag "1.0"
    accounts {
        group "app" gid=10001
        user "app" uid=10001 gid=10001
    }
    files {
        copy "site/" to="/srv/www"
        copy "tool.sh" to="/usr/local/bin/tool"
        text "/etc/motd" "hi\n"
        dir "/var/lib/app" mode=0o750 owner="app"
        symlink "/srv/current" target="/srv/www"
    }
    layer "big" {
        copy "big/" to="/data"
    }
    config {
        env PATH="/usr/local/bin:/bin" LANG="C.UTF-8"
        entrypoint "/usr/local/bin/tool"
        cmd "--serve"
        user "app"
        expose 8080 "53/udp"
        label "a"="1" "b"="2"
    }
}
"#;

/// Lay the fixture out under `root`, creating files in `order`-dependent sequence, with `umask`
/// applied to the modes the files get, and the given mtime.
fn fixture(root: &Path, reverse: bool, umask: u32, mtime: i64) {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("spec.kdl".into(), SPEC.as_bytes().to_vec()),
        ("site/index.html".into(), b"<h1>hello</h1>\n".to_vec()),
        ("site/css/a.css".into(), b"h1{}\n".to_vec()),
        ("site/css/b.css".into(), b"h2{}\n".to_vec()),
        ("site/\u{00e9}t\u{00e9}.txt".into(), "caf\u{00e9}\n".as_bytes().to_vec()),
        ("tool.sh".into(), b"#!/bin/sh\necho tool\n".to_vec()),
    ];
    // ~3 MiB of pseudo-random data over several files, so compression crosses chunk boundaries.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..6 {
        let mut data = Vec::with_capacity(512 * 1024);
        for _ in 0..(512 * 1024 / 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half-compressible: repeat some bytes.
            let v = if x.is_multiple_of(3) { 0x4141414141414141 } else { x };
            data.extend_from_slice(&v.to_le_bytes());
        }
        files.push((format!("big/part-{i}.bin"), data));
    }
    files.push(("big/nested/deeper/file.txt".into(), b"deep\n".to_vec()));
    if reverse {
        files.reverse();
    }
    for (rel, data) in &files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        let exec = rel == "tool.sh";
        let mode = if exec { 0o777 } else { 0o666 } & !umask;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        let status = Command::new("touch").arg("-d").arg(format!("@{mtime}")).arg(&p).status().unwrap();
        assert!(status.success());
    }
}

#[test]
fn same_digest_from_two_checkouts_under_different_conditions() {
    let ctx = TestContext::new();
    let a = ctx.tmp.path().join("checkout-a");
    let b = ctx.tmp.path().join("somewhere/else/entirely/checkout-b");
    fixture(&a, false, 0o022, 1_600_000_000);
    fixture(&b, true, 0o077, 1_234_567_890);

    let build = |dir: &Path, cache: &str, jobs: &str, tz: &str, lang: &str| {
        let out = ctx
            .cmd()
            .current_dir(dir)
            .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join(cache))
            .env("TZ", tz)
            .env("LANG", lang)
            .env("LC_ALL", lang)
            .arg("build")
            .arg("--jobs")
            .arg(jobs)
            .arg("spec.kdl")
            .output()
            .unwrap();
        assert_success(&out, "build");
        last_line(&out)
    };
    // Run B's build under another umask through a shell.
    let build_umask = |dir: &Path, cache: &str, jobs: &str, tz: &str, lang: &str, umask: &str| {
        let out = Command::new("sh")
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join(cache))
            .env("TZ", tz)
            .env("LANG", lang)
            .env("LC_ALL", lang)
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$0\" build --jobs {jobs} spec.kdl"))
            .arg(COMPOSE)
            .output()
            .unwrap();
        assert_success(&out, "build under umask");
        last_line(&out)
    };

    let d1 = build(&a, "cache-a", "1", "UTC", "C.UTF-8");
    let d2 = build_umask(&b, "cache-b", "8", "Asia/Tokyo", "de_DE.UTF-8", "077");
    assert!(d1.starts_with("sha256:"), "{d1}");
    assert_eq!(d1, d2, "fresh stores, other path, jobs, TZ, LANG, umask, mtimes, creation order");
    // Byte-identical layouts.
    assert_eq!(tree_bytes(&a.join("out/repro")), tree_bytes(&b.join("out/repro")));

    // Warm store: same digest; and a different thread count on the warm store.
    let d3 = build(&a, "cache-a", "7", "America/New_York", "C");
    assert_eq!(d1, d3);
    // A store that has B's results, used from A's path.
    let d4 = build(&a, "cache-b", "3", "UTC", "C");
    assert_eq!(d1, d4);

    // Archives are reproducible too.
    for format in ["oci-archive", "docker-archive"] {
        let mut outs = Vec::new();
        for (dir, cache) in [(&a, "cache-a"), (&b, "cache-b")] {
            let out = ctx
                .cmd()
                .current_dir(dir)
                .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join(cache))
                .args(["build", "spec.kdl", "--format", format])
                .output()
                .unwrap();
            assert_success(&out, format);
            outs.push(fs::read(dir.join("out/repro.tar")).unwrap());
        }
        assert!(outs[0] == outs[1], "{format} differs between checkouts");
    }
}

/// A golden digest: if a dependency upgrade (tar, miniz_oxide, serde_json…) changes a single byte
/// of the output, this fails, and the change must be made on purpose.
#[test]
fn golden_digest_of_a_fixed_spec() {
    let ctx = TestContext::new();
    ctx.write(
        "spec.kdl",
        r#"
image "golden" {
    tag "v1"
    epoch 1700000000
    accounts {
        user "svc" uid=1000 gid=1000
        group "svc" gid=1000
    }
    files {
        text "/etc/motd" "golden\n"
        copy "bin/run" to="/usr/bin/run"
        dir "/var/lib/svc" owner="svc" mode=0o700
        symlink "/usr/bin/start" target="run"
    }
    config {
        entrypoint "/usr/bin/run"
        env A="1"
        user "svc"
    }
}
"#,
    );
    ctx.write_exec("bin/run", "#!/bin/sh\necho golden\n");
    let d = ctx.build(&["spec.kdl"]);
    assert_eq!(d, GOLDEN);
    // SOURCE_DATE_EPOCH overrides the spec's epoch, and so changes the digest.
    let out = ctx.cmd().env("SOURCE_DATE_EPOCH", "1700000001").args(["build", "spec.kdl"]).output().unwrap();
    assert_success(&out, "build with SOURCE_DATE_EPOCH");
    assert_ne!(last_line(&out), GOLDEN);
}

const GOLDEN: &str = "sha256:06fd9a091de34701923dee38ff454cd060532a1a042741ee98a467e1c82630b7";
