//! Bad input: every kind of spec error exits 2 with a diagnostic naming file, line and column,
//! writes nothing (no `out/`, no store), and its message is pinned by a snapshot.

use std::fs;

use crate::support::*;

/// Run `compose build spec.kdl` on `spec` after `setup`, check the contract, return stderr.
fn bad(spec: &[u8], setup: impl FnOnce(&TestContext)) -> String {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", spec);
    setup(&ctx);
    let out = ctx.compose(&["build", "spec.kdl"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "expected exit 2, got {}: {stderr}", out.status);
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(!ctx.path("out").exists(), "out/ must not be written");
    assert!(!ctx.cache.exists(), "the store must not be touched");
    stderr.replace(&ctx.tmp.path().display().to_string(), "[TMP]")
}

fn assert_mentions_location(stderr: &str, line: usize) {
    assert!(stderr.contains(&format!("spec.kdl:{line}:")), "no spec.kdl:{line}:COL in:\n{stderr}");
}

macro_rules! case {
    ($name:ident, $line:expr, $spec:expr) => {
        case!($name, $line, $spec, |_ctx: &TestContext| {});
    };
    ($name:ident, $line:expr, $spec:expr, $setup:expr) => {
        #[test]
        fn $name() {
            let stderr = bad($spec.as_bytes(), $setup);
            assert_mentions_location(&stderr, $line);
            insta::assert_snapshot!(stringify!($name), stderr);
        }
    };
}

case!(unknown_node_with_suggestion, 3, "image \"a\" {\n    files {\n        cpoy \"x\" to=\"/x\"\n    }\n}\n");
case!(unknown_top_level_property, 2, "image \"a\" {\n    tag \"1\" colour=\"red\"\n}\n");
case!(wrong_type, 2, "image \"a\" {\n    epoch \"yesterday\"\n}\n");
case!(missing_argument, 3, "image \"a\" {\n    files {\n        text \"/etc/motd\"\n    }\n}\n");
case!(bad_mode_decimal, 3, "image \"a\" {\n    files {\n        text \"/x\" \"x\" mode=755\n    }\n}\n");
case!(bad_mode_too_large, 3, "image \"a\" {\n    files {\n        text \"/x\" \"x\" mode=0o17777\n    }\n}\n");
case!(relative_image_path, 3, "image \"a\" {\n    files {\n        text \"etc/motd\" \"x\"\n    }\n}\n");
case!(dotdot_image_path, 3, "image \"a\" {\n    files {\n        dir \"/srv/../etc\"\n    }\n}\n");
case!(missing_source_file, 3, "image \"a\" {\n    files {\n        copy \"nope.txt\" to=\"/x\"\n    }\n}\n");
case!(unknown_owner, 3, "image \"a\" {\n    files {\n        text \"/x\" \"x\" owner=\"nobody\"\n    }\n}\n");
case!(unknown_config_user, 3, "image \"a\" {\n    config {\n        user \"ghost\"\n    }\n}\n");
case!(duplicate_image_name, 2, "image \"a\" {}\nimage \"a\" {}\n");
case!(kdl_syntax_error, 2, "image \"a\" {\n    tag \"1\n}\n");
case!(source_escapes_spec_dir, 3, "image \"a\" {\n    files {\n        copy \"../outside.txt\" to=\"/x\"\n    }\n}\n");
case!(
    source_symlink_out_of_spec_dir_is_not_followed,
    3,
    "image \"a\" {\n    files {\n        copy \"link.txt\" to=\"/x\"\n    }\n}\n",
    |ctx: &TestContext| {
        std::os::unix::fs::symlink("/etc/passwd", ctx.path("link.txt")).unwrap();
    }
);
case!(unreadable_source_fifo, 3, "image \"a\" {\n    files {\n        copy \"dir/\" to=\"/x\"\n    }\n}\n", |ctx: &TestContext| {
    fs::create_dir_all(ctx.path("dir")).unwrap();
    let status = std::process::Command::new("mkfifo").arg(ctx.path("dir/pipe")).status().unwrap();
    assert!(status.success());
});
case!(file_and_directory_clash, 4, "image \"a\" {\n    files {\n        text \"/srv\" \"x\"\n        dir \"/srv\"\n    }\n}\n");

#[test]
fn non_utf8_spec() {
    let stderr = bad(b"image \"a\" {\n    tag \"1\"\n    epoch 1 // caf\xe9\n}\n", |_| {});
    assert_mentions_location(&stderr, 3);
    insta::assert_snapshot!("non_utf8_spec", stderr);
}

#[test]
fn spec_that_cannot_be_read() {
    let ctx = TestContext::new();
    fs::create_dir_all(ctx.path("dir.kdl")).unwrap();
    let out = ctx.compose(&["build", "dir.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dir.kdl"), "{stderr}");
    let out = ctx.compose(&["build", "missing.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.kdl"));
    assert!(!ctx.path("out").exists() && !ctx.cache.exists());
}

/// Guards against this: `compose push REF`, as the spec's `push [SPEC] REF` allows, took REF for
/// the spec and failed for want of a reference (and a debug build panicked on the argument order).
#[test]
fn push_takes_the_spec_as_optional_before_the_reference() {
    let ctx = TestContext::new();
    let out = ctx.compose(&["push", "127.0.0.1:9/app:v1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("compose.kdl"), "the default spec is read: {stderr}");
    let out = ctx.compose(&["push", "other.kdl", "127.0.0.1:9/app:v1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("other.kdl"));
}

#[test]
fn unknown_image_and_bad_flags_are_usage_errors() {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"a\" {}\n");
    let out = ctx.compose(&["build", "spec.kdl", "--image", "b"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no image `b`"));
    let out = ctx.compose(&["build", "spec.kdl", "--format", "zip"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ctx.cmd().env("SOURCE_DATE_EPOCH", "soon").args(["build", "spec.kdl"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!ctx.path("out").exists());
}

/// Guards against this: a copy source that changed while it was read exited 2, the code of a wrong spec;
/// nothing is wrong with the spec, so it exits 1, saying the file changed since it was read.
/// (`/proc/self/status` says it is empty and then reads as more: as a file written meanwhile.)
#[test]
fn a_file_changing_while_it_is_read_exits_1() {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"c\" {\n    files { copy \"/proc/self/status\" to=\"/status\" }\n}\n");
    let out = ctx.compose(&["build", "spec.kdl"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/status` changed since it was read"), "{stderr}");
}
