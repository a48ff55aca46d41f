//! The store under stress: killed builds, concurrent builds, verify and gc.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

/// A spec with enough data (~24 MiB over 4 layers) that a build takes a while.
fn big_fixture(ctx: &TestContext, name: &str, seed: u64) {
    ctx.write(
        &format!("{name}.kdl"),
        format!(
            "image \"{name}\" {{\n    files {{ copy \"{name}/l0/\" to=\"/l0\" }}\n    layer \"1\" {{ copy \"{name}/l1/\" to=\"/l1\" }}\n    layer \"2\" {{ copy \"{name}/l2/\" to=\"/l2\" }}\n    layer \"3\" {{ copy \"{name}/l3/\" to=\"/l3\" }}\n}}\n"
        ),
    );
    let mut x = seed | 1;
    for l in 0..4 {
        for f in 0..6 {
            let mut data = Vec::with_capacity(1 << 20);
            for _ in 0..(1 << 17) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.extend_from_slice(&(if x.is_multiple_of(4) { 0 } else { x }).to_le_bytes());
            }
            ctx.write(&format!("{name}/l{l}/f{f}.bin"), data);
        }
    }
}

fn verify(ctx: &TestContext) -> String {
    let out = ctx.compose(&["cache", "verify"]);
    assert_success(&out, "cache verify");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn builds_killed_at_random_points_leave_a_valid_store() {
    let ctx = TestContext::new();
    big_fixture(&ctx, "crash", 42);
    // The reference digest, from a store of its own.
    let reference = {
        let out = ctx.cmd().env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("ref-cache")).args(["build", "crash.kdl"]).output().unwrap();
        assert_success(&out, "reference build");
        last_line(&out)
    };
    fs::remove_dir_all(ctx.path("out")).unwrap();
    // Deterministic "random" kill points spread over a build's duration.
    let mut x: u64 = 0x2545F4914F6CDD1D;
    for round in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(20 + x % 600);
        let mut child = ctx.cmd().args(["build", "crash.kdl"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let report = verify(&ctx);
        assert!(report.contains(" 0 problems"), "round {round} after {delay:?}: {report}");
    }
    let digest = ctx.build(&["crash.kdl"]);
    assert_eq!(digest, reference);
    assert!(verify(&ctx).contains(" 0 problems"));
    // Leftover temporary files are cleaned by gc, which keeps everything recently used.
    let gc = ctx.compose(&["cache", "gc"]);
    assert_success(&gc, "gc");
    let stats = ctx.compose(&["cache", "stats", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(s["temp_files"], 0);
    assert_eq!(s["records"], 5);
    assert_eq!(ctx.build_json(&["crash.kdl"])["derivations"]["built"], 0);
}

#[test]
fn two_builds_of_different_specs_share_a_store_at_once() {
    let ctx = TestContext::new();
    big_fixture(&ctx, "one", 1);
    big_fixture(&ctx, "two", 2);
    // Both also share one derivation: the same text layer.
    for name in ["one", "two"] {
        let p = ctx.path(&format!("{name}.kdl"));
        let s = fs::read_to_string(&p)
            .unwrap()
            .replace("    files {", "    layer \"shared\" { text \"/shared\" \"same in both\\n\" }\n    files {");
        fs::write(&p, s).unwrap();
    }
    let spawn = |spec: &str| ctx.cmd().args(["build", "--json", spec]).stderr(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let a = spawn("one.kdl");
    let b = spawn("two.kdl");
    let a = a.wait_with_output().unwrap();
    let b = b.wait_with_output().unwrap();
    assert_success(&a, "build one");
    assert_success(&b, "build two");
    assert!(verify(&ctx).contains(" 0 problems"));
    let va: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let vb: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    // The shared layer was built by exactly one of them.
    let built = va["derivations"]["built"].as_u64().unwrap() + vb["derivations"]["built"].as_u64().unwrap();
    assert_eq!(built, 11, "{va} {vb}");
}

#[test]
fn verify_reports_a_damaged_blob_and_the_next_build_repairs_it() {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"v\" {\n    files { text \"/x\" \"some content\\n\" }\n}\n");
    let d = ctx.build(&["spec.kdl"]);
    let blobs = ctx.cache.join("v1/blobs/sha256");
    // Damage the largest blob (the layer).
    let victim = fs::read_dir(&blobs).unwrap().map(|e| e.unwrap().path()).max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&victim, &bytes).unwrap();
    let out = ctx.compose(&["cache", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("damaged: blob sha256:"), "{text}");
    let out = ctx.compose(&["cache", "verify", "--repair"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(verify(&ctx).contains(" 0 problems"));
    assert_eq!(ctx.build(&["spec.kdl"]), d);
}
