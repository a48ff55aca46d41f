//! The store under stress: killed builds, concurrent builds, verify and gc.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::support::children::Running;
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

/// The crash and corruption loop: cold builds SIGKILLed at random points, the store verified, now
/// and then a blob damaged, then built again: the reference digest every time, an export whose
/// blobs match, and nothing temporary left behind by the next successful build.
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
        // Cold: an empty store every other round, the last round's partial one otherwise.
        if round % 2 == 0 {
            let _ = fs::remove_dir_all(&ctx.cache);
        }
        let mut child = Running::new(ctx.cmd().args(["build", "crash.kdl"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let report = verify(&ctx);
        assert!(report.contains(" 0 problems"), "round {round} after {delay:?}: {report}");
        if round % 3 == 1 {
            // A damaged blob on top: whichever the store holds, chosen by the same sequence.
            let blobs: Vec<_> = fs::read_dir(ctx.cache.join("v1/blobs/sha256")).unwrap().map(|e| e.unwrap().path()).collect();
            if !blobs.is_empty() {
                let victim = &blobs[(x % blobs.len() as u64) as usize];
                writable(victim);
                let mut bytes = fs::read(victim).unwrap();
                if !bytes.is_empty() {
                    let i = (x as usize / 7) % bytes.len();
                    bytes[i] ^= 0x20;
                }
                fs::write(victim, bytes).unwrap();
            }
        }
        assert_eq!(ctx.build(&["crash.kdl"]), reference, "round {round} after {delay:?}");
        assert_layout_blobs_match(&ctx.path("out/crash"), &format!("round {round}"));
        let stats = ctx.compose(&["cache", "stats", "--json"]);
        let s: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
        assert_eq!(s["temp_files"], 0, "round {round}: temporary files left behind");
        let mut out: Vec<String> = fs::read_dir(ctx.path("out")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        out.sort();
        assert_eq!(out, [".compose-lock", "crash"], "round {round}");
    }
    assert!(verify(&ctx).contains(" 0 problems"));
    let gc = ctx.compose(&["cache", "gc"]);
    assert_success(&gc, "gc");
    let stats = ctx.compose(&["cache", "stats", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
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
    let spawn =
        |spec: &str| Running::new(ctx.cmd().args(["build", "--json", spec]).stderr(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap());
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

/// sha256 of a file, as `sha256:<hex>`.
fn sha256_of(p: &std::path::Path) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(fs::read(p).unwrap());
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Every blob of the layout at `dir` has the content its name says.
fn assert_layout_blobs_match(dir: &std::path::Path, what: &str) {
    for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let name = format!("sha256:{}", p.file_name().unwrap().to_str().unwrap());
        assert_eq!(sha256_of(&p), name, "{what}: {} does not match its digest", p.display());
    }
}

/// The layout's manifest, config and first layer digests (hex).
fn layout_parts(dir: &std::path::Path) -> (String, String, String) {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let hex = |d: &serde_json::Value| d.as_str().unwrap().trim_start_matches("sha256:").to_string();
    let manifest = hex(&index["manifests"][0]["digest"]);
    let m: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(&manifest)).unwrap()).unwrap();
    (manifest, hex(&m["config"]["digest"]), hex(&m["layers"][0]["digest"]))
}

fn writable(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
}

/// A store blob with a flipped byte, cut short, or replaced by a symlink or a directory was
/// exported with exit 0 (or failed every build). Each is found, removed and made again: the build
/// prints the right digest and exports blobs that match it.
#[test]
fn a_damaged_store_blob_is_never_exported() {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"d\" {\n    files { copy \"data/\" to=\"/data\" }\n    config { cmd \"/data/x\" }\n}\n");
    ctx.write("data/x", "some content\n".repeat(5000));
    let reference = ctx.build(&["spec.kdl"]);
    let out = ctx.path("out/d");
    let (manifest, config, layer) = layout_parts(&out);
    let blobs = ctx.cache.join("v1/blobs/sha256");
    let elsewhere = ctx.tmp.path().join("elsewhere");
    fs::write(&elsewhere, b"not the blob").unwrap();
    for (what, hex) in
        [("flip", &layer), ("flip", &manifest), ("flip", &config), ("truncate", &layer), ("symlink", &layer), ("directory", &layer)]
    {
        let p = blobs.join(hex);
        match what {
            "flip" => {
                writable(&p);
                let mut bytes = fs::read(&p).unwrap();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
                fs::write(&p, bytes).unwrap();
            }
            "truncate" => {
                writable(&p);
                let f = fs::File::options().write(true).open(&p).unwrap();
                f.set_len(fs::metadata(&p).unwrap().len() / 2).unwrap();
            }
            "symlink" => {
                fs::remove_file(&p).unwrap();
                std::os::unix::fs::symlink(&elsewhere, &p).unwrap();
            }
            _ => {
                fs::remove_file(&p).unwrap();
                fs::create_dir(&p).unwrap();
                fs::write(p.join("junk"), b"x").unwrap();
            }
        }
        let digest = ctx.build(&["spec.kdl"]);
        assert_eq!(digest, reference, "{what} {hex}");
        assert_layout_blobs_match(&out, &format!("{what} {hex}"));
        assert_eq!(sha256_of(&p), format!("sha256:{hex}"), "{what}: the store holds the right blob again");
    }
    assert!(verify(&ctx).contains(" 0 problems"));
    run(std::process::Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}", out.display()))
        .arg(format!("oci:{}:t", ctx.tmp.path().join("copy").display())));
}

/// `out/` blobs were hard links to the store's, so writing into an exported image damaged the
/// store. Exports share no file with the store; a no-op build leaves an intact export alone,
/// repairs a damaged one, and a changed image reuses the unchanged blobs.
#[test]
fn out_blobs_are_not_hard_links_to_store_blobs() {
    use std::os::unix::fs::MetadataExt;
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"h\" {\n    files { text \"/a\" \"a\\n\" }\n    layer \"b\" { text \"/b\" \"b\\n\" }\n}\n");
    let reference = ctx.build(&["spec.kdl"]);
    let out = ctx.path("out/h");
    let (_, _, layer) = layout_parts(&out);
    let exported = out.join("blobs/sha256").join(&layer);
    assert_eq!(fs::metadata(&exported).unwrap().nlink(), 1, "an exported blob is a file of its own");
    // Root ignores the mode: write into the exported layer.
    writable(&exported);
    fs::write(&exported, b"overwritten").unwrap();
    assert!(verify(&ctx).contains(" 0 problems"), "the store is untouched");
    assert_eq!(ctx.build(&["spec.kdl"]), reference);
    assert_layout_blobs_match(&out, "after a write into out/");
    // A no-op build does not write the export again.
    let inode = |p: &std::path::Path| fs::metadata(p).unwrap().ino();
    let before = inode(&exported);
    assert_eq!(ctx.build(&["spec.kdl"]), reference);
    assert_eq!(inode(&exported), before, "an intact export is left alone");
    // A change to the second layer: the first layer's blob is carried over, not copied.
    ctx.write("spec.kdl", "image \"h\" {\n    files { text \"/a\" \"a\\n\" }\n    layer \"b\" { text \"/b\" \"B\\n\" }\n}\n");
    assert_ne!(ctx.build(&["spec.kdl"]), reference);
    assert_eq!(inode(&exported), before);
    assert_layout_blobs_match(&out, "after a change");
}

/// Concurrent builds of one spec into one `out/` failed now and then ("failed to move aside
/// `out/NAME`"). Warm, so the builds are all exports and collide most: eight at once of a spec of
/// six images, ten times (the old code failed about 10 of 80).
#[test]
fn concurrent_builds_of_one_spec_into_one_out_all_succeed() {
    let ctx = TestContext::new();
    let spec: String = (0..6).map(|i| format!("image \"i{i}\" {{\n    files {{ text \"/a\" \"{i}\\n\" }}\n}}\n")).collect();
    ctx.write("spec.kdl", spec);
    let reference = ctx.build(&["spec.kdl"]);
    for round in 0..10 {
        let children: Vec<_> = (0..8)
            .map(|_| Running::new(ctx.cmd().args(["build", "spec.kdl"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()))
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert_success(&out, &format!("round {round}"));
            assert_eq!(last_line(&out), reference);
        }
    }
    for i in 0..6 {
        assert_layout_blobs_match(&ctx.path(&format!("out/i{i}")), "after concurrent builds");
    }
}

/// What killed builds leave (temporary files in the store, half-written exports in `out/`) was
/// never removed but by `gc`. The next build removes it.
#[test]
fn leftovers_of_killed_builds_are_removed_by_the_next_build() {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"l\" {\n    files { text \"/a\" \"a\\n\" }\n}\n");
    let reference = ctx.build(&["spec.kdl"]);
    let tmp = ctx.cache.join("v1/tmp");
    fs::write(tmp.join("w-AbC123"), vec![0u8; 4096]).unwrap();
    fs::create_dir_all(tmp.join("step-XyZ987/upper/ro")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp.join("step-XyZ987/upper/ro"), fs::Permissions::from_mode(0o555)).unwrap();
    for name in [".compose-tmp-l.Ab12Cd", ".compose-old-l.Ef34Gh", ".old.Ij56Kl", ".l.Mn78Op"] {
        fs::create_dir_all(ctx.path(&format!("out/{name}/blobs"))).unwrap();
    }
    fs::write(ctx.path("out/.l.Qr90St.tar"), b"half").unwrap();
    fs::write(ctx.path("out/.compose-tmp-l.Uv12Wx.tar"), b"half").unwrap();
    fs::write(ctx.path("out/keep-me.txt"), b"the user's").unwrap();
    assert_eq!(ctx.build(&["spec.kdl"]), reference);
    let left: Vec<_> = fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
    let mut out: Vec<String> = fs::read_dir(ctx.path("out")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    out.sort();
    assert_eq!(out, [".compose-lock", "keep-me.txt", "l"]);
}

/// A one-file change in a big layer compresses only the chunks around that file; the rest come from
/// the store's kept chunks. The layer is byte-identical to one built in an empty store, for gzip
/// and zstd, and a kept chunk that no longer checks out (its pointer moved to other bytes) is
/// compressed again rather than used.
#[test]
fn a_changed_file_reuses_the_other_chunks_and_changes_no_byte() {
    let ctx = TestContext::new();
    let mut x: u64 = 5;
    let mut text = |n: usize| {
        let mut s = String::with_capacity(n + 32);
        while s.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push_str(&format!("{} {}\n", x % 1000, x % 77));
        }
        s
    };
    for i in 0..120 {
        ctx.write(&format!("tree/f{i:03}.txt"), text(20_000 + (i * 7919) % 80_000));
    }
    ctx.write("tree/z-big.bin", text(3 << 20));
    ctx.write("spec.kdl", "image \"gz\" {\n    layer \"all\" { copy \"tree/\" to=\"/data\" }\n}\nimage \"zs\" {\n    compression \"zstd\"\n    layer \"all\" { copy \"tree/\" to=\"/data\" }\n}\n");
    let chunks = ctx.cache.join("v1/chunks");
    let count = || fs::read_dir(&chunks).map(|d| d.count()).unwrap_or(0);
    // Files whose times are settled (older than the scanner's 2 s window) are planned with their
    // identity: the warm build below then takes the chunks before the change without reading.
    std::thread::sleep(Duration::from_millis(2100));
    ctx.build(&["spec.kdl"]);
    let kept = count();
    assert!(kept >= 2 * 12, "{kept} chunks kept");

    // One file in the middle grows: a few new chunks per image, the same digests as an empty store.
    ctx.write("tree/f060.txt", text(33_333));
    let warm = ctx.build_json(&["spec.kdl"]);
    let new = count() - kept;
    // At most three chunks per image, each kept under its key and its key by content.
    assert!((1..=2 * 3 * 2).contains(&new), "{new} chunks compressed again");
    let fresh = TestContext::new();
    fs::rename(ctx.path("tree"), fresh.path("tree")).unwrap();
    fs::copy(ctx.path("spec.kdl"), fresh.path("spec.kdl")).unwrap();
    let cold = fresh.build_json(&["spec.kdl"]);
    let digests = |v: &serde_json::Value| -> Vec<String> {
        v["images"].as_array().unwrap().iter().map(|i| format!("{} {}", i["name"], i["digest"])).collect()
    };
    assert_eq!(digests(&warm), digests(&cold));

    // Every kept pointer now names a range of other bytes (the same length, another offset): the
    // check fails, the chunks are compressed again, and the image is still the same.
    fs::rename(fresh.path("tree"), ctx.path("tree")).unwrap();
    ctx.write("tree/f061.txt", "changed\n");
    for e in fs::read_dir(&chunks).unwrap() {
        let p = e.unwrap().path();
        let line = fs::read_to_string(&p).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        let offset: u64 = f[1].parse().unwrap();
        fs::write(&p, format!("{} {} {} {}\n", f[0], if offset == 0 { 1 } else { offset - 1 }, f[2], f[3])).unwrap();
    }
    let intact = || {
        fs::read_dir(&chunks)
            .unwrap()
            .filter(|e| {
                let line = fs::read_to_string(e.as_ref().unwrap().path()).unwrap();
                let f: Vec<&str> = line.split_whitespace().collect();
                let (offset, len): (usize, usize) = (f[1].parse().unwrap(), f[2].parse().unwrap());
                let blob = fs::read(ctx.cache.join("v1/blobs/sha256").join(f[0])).unwrap_or_default();
                blob.get(offset..offset + len).is_some_and(|b| blake3::hash(b).to_hex().as_str() == f[3])
            })
            .count()
    };
    assert_eq!(intact(), 0);
    let moved = ctx.build_json(&["spec.kdl"]);
    assert!(intact() >= 2 * 12, "the chunks compressed again are kept again: {} intact", intact());
    fs::rename(ctx.path("tree"), fresh.path("tree")).unwrap();
    let other = TestContext::new();
    fs::rename(fresh.path("tree"), other.path("tree")).unwrap();
    fs::copy(ctx.path("spec.kdl"), other.path("spec.kdl")).unwrap();
    assert_eq!(digests(&moved), digests(&other.build_json(&["spec.kdl"])));
    let verify = ctx.compose(&["cache", "verify"]);
    assert_success(&verify, "cache verify");
}

/// Guards against this: an unpack killed half-way left `cache/v1/rootfs/.unpack-*` (55 MB each), which
/// `gc` did not count, and builds never removed. The next build alone on the store removes them,
/// and `gc` counts them (`cache stats` counts them as temporary files while a build runs).
#[test]
fn killed_unpacks_are_removed_and_counted() {
    use std::os::unix::fs::PermissionsExt;
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"u\" {\n    files { text \"/a\" \"a\\n\" }\n}\n");
    let reference = ctx.build(&["spec.kdl"]);
    let leftover = || {
        let ro = ctx.cache.join("v1/rootfs/.unpack-Ab12Cd/rootfs/usr/lib");
        fs::create_dir_all(&ro).unwrap();
        fs::write(ro.join("big"), vec![7u8; 1 << 20]).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        ctx.cache.join("v1/rootfs/.unpack-Ab12Cd")
    };
    let dir = leftover();
    assert_eq!(ctx.build(&["spec.kdl"]), reference);
    assert!(!dir.exists(), "the next build removes it");
    let dir = leftover();
    let gc = ctx.compose(&["cache", "gc"]);
    assert_success(&gc, "gc");
    assert!(String::from_utf8_lossy(&gc.stdout).contains(", 1 temporary files;"), "{}", String::from_utf8_lossy(&gc.stdout));
    assert!(!dir.exists());
}

/// Guards against this: a `names/` entry (what `compose explain` compares with) that was a directory made
/// the build fail after building. It is replaced; so is a `names` that is a file.
#[test]
fn a_names_entry_in_the_way_never_fails_the_build() {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"n\" {\n    files { text \"/a\" \"a\\n\" }\n}\n");
    ctx.build(&["spec.kdl"]);
    let names = ctx.cache.join("v1/names");
    let entry = fs::read_dir(&names).unwrap().next().unwrap().unwrap().path();
    fs::remove_file(&entry).unwrap();
    fs::create_dir_all(entry.join("inside")).unwrap();
    ctx.write("spec.kdl", "image \"n\" {\n    files { text \"/a\" \"b\\n\" }\n}\n");
    ctx.build(&["spec.kdl"]);
    assert!(entry.is_file(), "the entry is a file again");
    fs::remove_dir_all(&names).unwrap();
    fs::write(&names, "not a directory").unwrap();
    ctx.write("spec.kdl", "image \"n\" {\n    files { text \"/a\" \"c\\n\" }\n}\n");
    ctx.build(&["spec.kdl"]);
    assert!(entry.is_file());
    let explain = ctx.compose(&["explain", "spec.kdl"]);
    assert_success(&explain, "explain");
}

/// The paths of every layer of the OCI layout at `dir`.
fn layer_paths(dir: &std::path::Path) -> Vec<String> {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let blob = |d: &serde_json::Value| dir.join("blobs/sha256").join(d.as_str().unwrap().trim_start_matches("sha256:"));
    let m: serde_json::Value = serde_json::from_slice(&fs::read(blob(&index["manifests"][0]["digest"])).unwrap()).unwrap();
    let mut out = Vec::new();
    for l in m["layers"].as_array().unwrap() {
        let f = fs::File::open(blob(&l["digest"])).unwrap();
        let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(f));
        for e in ar.entries().unwrap() {
            out.push(e.unwrap().path().unwrap().display().to_string());
        }
    }
    out
}

/// Guards against this: `copy "."` shipped the spec directory's own store (`cache/keys/dev.secret`, a
/// signing key) when the build used another `--cache-dir`: a directory copy left out only this
/// build's store and output. It never takes a compose store (known by its `v1/lock`, or a key in
/// its `keys/`) or output directory (its `.compose-lock`), wherever it is, and says so.
#[test]
fn a_directory_copy_never_takes_a_store_or_an_output() {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"site\" {\n    files { copy \".\" to=\"/src\" }\n}\n");
    ctx.write("index.html", "hello\n");
    let in_spec_dir = |store: &str| {
        let mut c = ctx.cmd();
        c.env("COMPOSE_CACHE_DIR", ctx.path(store));
        c
    };
    // A signing key made in the spec directory's `cache/` (no store there yet), and an earlier
    // build with a store `old-cache/` and `out/` in the spec directory.
    let kg = in_spec_dir("cache").args(["cache", "keygen", "dev"]).output().unwrap();
    assert_success(&kg, "keygen");
    assert!(ctx.path("cache/keys/dev.secret").is_file());
    assert_success(&in_spec_dir("old-cache").args(["build", "spec.kdl"]).output().unwrap(), "the earlier build");
    assert!(ctx.path("out/.compose-lock").is_file() && ctx.path("old-cache/v1/lock").is_file());

    let elsewhere = ctx.tmp.path().join("elsewhere");
    let out = ctx
        .cmd()
        .env("COMPOSE_CACHE_DIR", elsewhere.join("cache"))
        .args(["build", "spec.kdl", "--out"])
        .arg(elsewhere.join("out"))
        .output()
        .unwrap();
    assert_success(&out, "build with the store and output elsewhere");
    let paths = layer_paths(&elsewhere.join("out/site"));
    assert!(paths.iter().any(|p| p == "src/index.html"), "{paths:?}");
    let taken: Vec<&String> = paths.iter().filter(|p| ["src/cache", "src/old-cache", "src/out"].iter().any(|x| p.starts_with(x))).collect();
    assert!(taken.is_empty(), "a store or an output went into the image: {taken:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for (dir, what) in
        [("cache", "a compose store (it holds signing keys)"), ("old-cache", "a compose store"), ("out", "a compose output directory")]
    {
        assert!(err.contains(&format!("`{dir}` is {what}: directory copies leave it out")), "{dir}: {err}");
    }
}
