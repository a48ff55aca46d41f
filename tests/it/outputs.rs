//! Our output is accepted by real tools: oci-image-tool, umoci, skopeo, podman.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::support::*;

const SPEC: &str = r#"
image "tools" {
    tag "2.0"
    accounts {
        group "app" gid=10001
        user "app" uid=10001 gid=10001 home="/home/app"
    }
    files {
        copy "site/" to="/srv/www"
        copy "run.sh" to="/usr/local/bin/run"
        text "/etc/motd" "motd\n" mode=0o600 owner="app"
        dir "/var/cache/app" mode=0o750 owner="app"
        symlink "/srv/current" target="/srv/www"
        copy "setuid" to="/usr/bin/su-ish" mode=0o4755
    }
    layer "extra" {
        text "/opt/extra/a name with spaces.txt" "extra\n"
        copy "long/" to="/opt/long"
    }
    config {
        env PATH="/usr/local/bin:/usr/bin:/bin"
        workdir "/srv/www"
        user "app"
        entrypoint "/usr/local/bin/run"
        cmd "x"
        expose 8080 "53/udp"
        volume "/data"
        label "org.opencontainers.image.title"="tools"
        stop-signal "SIGINT"
    }
}
"#;

fn fixture(ctx: &TestContext) {
    ctx.write("spec.kdl", SPEC);
    ctx.write("site/index.html", "<h1>hi</h1>\n");
    ctx.write("site/sub/dir/deep.txt", "deep\n");
    ctx.write_exec("run.sh", "#!/bin/sh\necho run\n");
    ctx.write("setuid", "binary\n");
    // A path longer than 100 bytes exercises long-name headers.
    let long = format!("long/{}/{}.txt", "d".repeat(60), "f".repeat(70));
    ctx.write(&long, "long\n");
    // A symlink inside a copied directory pointing outside the spec dir: copied as a link,
    // never followed.
    std::os::unix::fs::symlink("/etc/hostname", ctx.path("site/escape")).unwrap();
}

fn tool_ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

#[test]
fn oci_layout_passes_oci_image_tool_umoci_and_skopeo() {
    let ctx = TestContext::new();
    fixture(&ctx);
    let digest = ctx.build(&["spec.kdl"]);
    let layout = ctx.path("out/tools");

    tool_ok(Command::new("oci-image-tool").args(["validate", "--type", "image"]).arg(&layout));
    tool_ok(Command::new("oci-image-tool").args(["validate", "--type", "image", "--ref", "name=2.0"]).arg(&layout));

    // skopeo sees the same manifest digest and our config.
    let inspect = tool_ok(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:2.0", layout.display())));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], digest.as_str());
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3, "accounts, files, extra");
    assert_eq!(v["Labels"]["org.opencontainers.image.title"], "tools");
    let config = tool_ok(Command::new("skopeo").arg("inspect").arg("--config").arg(format!("oci:{}:2.0", layout.display())));
    let c: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(c["config"]["Entrypoint"], serde_json::json!(["/usr/local/bin/run"]));
    assert_eq!(c["config"]["Cmd"], serde_json::json!(["x"]));
    assert_eq!(c["config"]["User"], "app");
    assert_eq!(c["config"]["WorkingDir"], "/srv/www");
    assert_eq!(c["config"]["StopSignal"], "SIGINT");
    assert_eq!(c["config"]["ExposedPorts"], serde_json::json!({"53/udp": {}, "8080/tcp": {}}));
    assert_eq!(c["config"]["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(c["created"], "1980-01-01T00:00:00Z");

    // umoci checks diff_ids while unpacking; then the rootfs must match the spec exactly.
    let bundle = ctx.tmp.path().join("bundle");
    tool_ok(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:2.0", layout.display())).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let check = |rel: &str, mode: u32, uid: u32, gid: u32| {
        let m = fs::symlink_metadata(rootfs.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(m.permissions().mode() & 0o7777, mode, "{rel} mode");
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{rel} owner");
    };
    check("srv/www", 0o755, 0, 0);
    check("srv/www/index.html", 0o644, 0, 0);
    check("srv/www/sub/dir/deep.txt", 0o644, 0, 0);
    check("usr/local/bin/run", 0o755, 0, 0);
    check("etc/motd", 0o600, 10001, 10001);
    check("var/cache/app", 0o750, 10001, 10001);
    check("usr/bin/su-ish", 0o4755, 0, 0);
    check("home/app", 0o755, 10001, 10001);
    check("root", 0o700, 0, 0);
    assert_eq!(fs::read_to_string(rootfs.join("srv/www/sub/dir/deep.txt")).unwrap(), "deep\n");
    assert_eq!(fs::read_to_string(rootfs.join("opt/extra/a name with spaces.txt")).unwrap(), "extra\n");
    assert_eq!(fs::read_link(rootfs.join("srv/current")).unwrap(), Path::new("/srv/www"));
    assert_eq!(fs::read_link(rootfs.join("srv/www/escape")).unwrap(), Path::new("/etc/hostname"));
    let long = format!("opt/long/{}/{}.txt", "d".repeat(60), "f".repeat(70));
    assert_eq!(fs::read_to_string(rootfs.join(long)).unwrap(), "long\n");
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/passwd")).unwrap(),
        "root:x:0:0:root:/root:/sbin/nologin\napp:x:10001:10001::/home/app:/sbin/nologin\n"
    );
    assert_eq!(fs::read_to_string(rootfs.join("etc/group")).unwrap(), "root:x:0:\napp:x:10001:\n");
    // The mtimes are the epoch.
    assert_eq!(fs::symlink_metadata(rootfs.join("etc/motd")).unwrap().mtime(), 315_532_800);
}

#[test]
fn busybox_image_runs_under_podman_from_a_docker_archive() {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "busybox-static is not installed (see .ci/run)");
    let ctx = TestContext::new();
    ctx.write(
        "spec.kdl",
        r#"
image "bbx" {
    tag "t1"
    files {
        copy "/bin/busybox" to="/bin/busybox" mode=0o755
        symlink "/bin/sh" target="busybox"
        text "/etc/greeting" "hello from compose\n"
    }
    config {
        env PATH="/bin"
        entrypoint "/bin/sh" "-c"
        cmd "cat /etc/greeting; id -u"
        user "1234:1234"
    }
}
"#,
    );
    let digest = ctx.build(&["spec.kdl", "--format", "docker-archive"]);
    let archive = ctx.path("out/bbx.tar");
    let podman = Podman::new(ctx.tmp.path());
    let load = run(podman.cmd().arg("load").arg("-i").arg(&archive));
    let loaded = String::from_utf8_lossy(&load.stdout);
    assert!(loaded.contains("bbx:t1"), "{loaded}");
    let inspect = run(podman.cmd().args(["image", "inspect", "localhost/bbx:t1"]));
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v[0]["Config"]["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    let out = run(podman.cmd().args(["run", "--rm", "localhost/bbx:t1"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from compose\n1234\n");
    let out = run(podman.cmd().args(["run", "--rm", "localhost/bbx:t1", "echo $((6*7))"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");

    // The oci-archive of the same image has the same manifest digest, and podman loads it too.
    let d2 = ctx.build(&["spec.kdl", "--format", "oci-archive"]);
    assert_eq!(digest, d2);
    let load = run(podman.cmd().arg("load").arg("-i").arg(&archive));
    let load = String::from_utf8_lossy(&load.stdout).into_owned();
    assert!(load.contains("localhost/bbx:t1"), "{load}");
    let inspect = tool_ok(Command::new("skopeo").arg("inspect").arg(format!("oci-archive:{}:bbx:t1", archive.display())));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], digest.as_str());
}

/// ~3.5 MiB of text lines (`WORD N M`, from a xorshift seeded with `seed`: several chunks),
/// and its sha256 in hex.
fn big_text(seed: u64, word: &str, modulo: u64) -> (String, String) {
    use sha2::Digest;
    let mut x = seed;
    let mut text = String::new();
    while text.len() < 3_500_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{word} {} {}\n", x % 100_000, x % modulo));
    }
    let sha = sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    (text, sha)
}

/// The manifest of the one image in the layout at `layout`, its first layer's blob, and that
/// layer's diff_id in hex.
fn first_layer(layout: &Path) -> (serde_json::Value, std::path::PathBuf, String) {
    let read = |p: std::path::PathBuf| -> serde_json::Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
    let blob = |d: &serde_json::Value| layout.join("blobs/sha256").join(d.as_str().unwrap().trim_start_matches("sha256:"));
    let index = read(layout.join("index.json"));
    let manifest = read(blob(&index["manifests"][0]["digest"]));
    let config = read(blob(&manifest["config"]["digest"]));
    let layer = blob(&manifest["layers"][0]["digest"]);
    let diff_id = config["rootfs"]["diff_ids"][0].as_str().unwrap().trim_start_matches("sha256:").to_string();
    (manifest, layer, diff_id)
}

/// A layer is one gzip member per chunk (libdeflate). Every reader must read them all: GNU gzip,
/// Python's gzip, oci-image-tool, umoci (which checks the diff_id), skopeo, podman load and run,
/// and compose's own readers (a base made of such layers).
#[test]
fn multi_member_gzip_layers_are_read_by_every_client() {
    let ctx = TestContext::new();
    // ~3.5 MiB of text: four members.
    let (text, want) = big_text(7, "line", 7);
    ctx.write("data/big.txt", &text);
    ctx.write(
        "spec.kdl",
        "image \"big\" {\n    files {\n        copy \"/bin/busybox\" to=\"/bin/busybox\" mode=0o755\n        copy \"data/\" to=\"/data\"\n    }\n    \
         config { entrypoint \"/bin/busybox\"; cmd \"sha256sum\" \"/data/big.txt\"; }\n}\n\
         image \"over\" {\n    base \"oci:out/big\"\n    files { text \"/etc/motd\" \"hi\\n\" }\n}\n",
    );
    ctx.build(&["spec.kdl", "--image", "big"]);
    let layout = ctx.path("out/big");
    let (_, layer, diff_id) = first_layer(&layout);
    let members = fs::read(&layer).unwrap().windows(10).filter(|w| *w == [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff]).count();
    assert!(members >= 4, "{members} gzip members");

    tool_ok(Command::new("gzip").arg("-t").arg(&layer));
    let gnu = tool_ok(Command::new("sh").arg("-c").arg(format!("gzip -dc '{}' | sha256sum", layer.display())));
    assert!(gnu.starts_with(&diff_id), "GNU gzip: {gnu}");
    let py = tool_ok(Command::new("python3").args([
        "-c",
        "import gzip,hashlib,sys; print(hashlib.sha256(gzip.open(sys.argv[1]).read()).hexdigest())",
        layer.to_str().unwrap(),
    ]));
    assert_eq!(py.trim(), diff_id, "Python's gzip");
    tool_ok(Command::new("oci-image-tool").args(["validate", "--type", "image"]).arg(&layout));
    tool_ok(
        Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:latest", layout.display())).arg(ctx.tmp.path().join("bundle")),
    );
    assert_eq!(fs::read_to_string(ctx.tmp.path().join("bundle/rootfs/data/big.txt")).unwrap(), text);
    let ran = podman_run(&ctx, &layout, "big", "latest", &[]);
    assert!(ran.starts_with(&want), "podman: {ran}");
    // compose reads its own layers as a base (its passwd/dpkg reader walks every member).
    ctx.build(&["spec.kdl", "--image", "over"]);
}

/// `compression "zstd"` (or `--compression zstd`) gives zstd layers, a frame per chunk, under
/// `application/vnd.oci.image.layer.v1.tar+zstd`. The zstd tool, umoci (which checks the diff_id),
/// skopeo, podman and compose itself (a zstd image as a base) read them.
#[test]
fn zstd_layers_are_read_by_every_client() {
    let ctx = TestContext::new();
    let (text, want) = big_text(11, "row", 5);
    ctx.write("data/big.txt", &text);
    let big = "    files {\n        copy \"/bin/busybox\" to=\"/bin/busybox\" mode=0o755\n        copy \"data/\" to=\"/data\"\n    }\n    \
               config { entrypoint \"/bin/busybox\"; cmd \"sha256sum\" \"/data/big.txt\"; }\n";
    ctx.write(
        "spec.kdl",
        format!(
            "image \"big\" {{\n    compression \"zstd\"\n{big}}}\n\
             image \"plain\" {{\n{big}}}\n\
             image \"over\" {{\n    base \"oci:out/big\"\n    files {{ text \"/etc/motd\" \"hi\\n\" }}\n}}\n"
        ),
    );
    let zstd_digest = ctx.build(&["spec.kdl", "--image", "big"]);
    let layout = ctx.path("out/big");
    let (manifest, layer, diff_id) = first_layer(&layout);
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
    }
    let frames = fs::read(&layer).unwrap().windows(4).filter(|w| *w == [0x28, 0xb5, 0x2f, 0xfd]).count();
    assert!(frames >= 4, "{frames} zstd frames");

    tool_ok(Command::new("zstd").arg("-tq").arg(&layer));
    let cli = tool_ok(Command::new("sh").arg("-c").arg(format!("zstd -dc '{}' | sha256sum", layer.display())));
    assert!(cli.starts_with(&diff_id), "zstd: {cli}");
    // umoci reads zstd layers from 0.5.0 on; Debian 12's 0.4.7 refuses their media type (and
    // only that: README.md's table of engines says so).
    let umoci = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(ctx.tmp.path().join("bundle"))
        .output()
        .unwrap();
    let version = tool_ok(Command::new("umoci").arg("--version"));
    if version.contains("version 0.4.") {
        let err = String::from_utf8_lossy(&umoci.stderr);
        assert!(
            !umoci.status.success() && err.contains("blob is not correct mediatype: application/vnd.oci.image.layer.v1.tar+zstd"),
            "{err}"
        );
    } else {
        assert_success(&umoci, "umoci unpack");
        assert_eq!(fs::read_to_string(ctx.tmp.path().join("bundle/rootfs/data/big.txt")).unwrap(), text);
    }
    let copied = ctx.tmp.path().join("copied");
    tool_ok(
        Command::new("skopeo")
            .args(["copy", "--preserve-digests"])
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("oci:{}:latest", copied.display())),
    );
    let inspect = tool_ok(Command::new("skopeo").arg("inspect").arg(format!("oci:{}:latest", copied.display())));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], zstd_digest.as_str());
    let ran = podman_run(&ctx, &layout, "big", "latest", &[]);
    assert!(ran.starts_with(&want), "podman: {ran}");
    // compose reads zstd layers as a base.
    ctx.build(&["spec.kdl", "--image", "over"]);
    // The example in specs/ runs.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/busybox.kdl");
    ctx.build(&[example.to_str().unwrap()]);
    let ran = podman_run(&ctx, &ctx.path("out/busybox"), "busybox", "1.36", &[]);
    assert!(ran.contains("hello from a compose-built busybox"), "podman: {ran}");
    // As a docker-archive too: `podman load` reads its zstd layers.
    ctx.build(&[example.to_str().unwrap(), "--format", "docker-archive"]);
    let podman = Podman::new(ctx.tmp.path());
    run(podman.cmd().args(["rmi", "-f", "localhost/busybox:1.36"]));
    let load = run(podman.cmd().arg("load").arg("-i").arg(ctx.path("out/busybox.tar")));
    assert!(String::from_utf8_lossy(&load.stdout).contains("busybox:1.36"), "{load:?}");
    let out = run(podman.cmd().args(["run", "--rm", "localhost/busybox:1.36"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from a compose-built busybox"), "{out:?}");

    // `--compression zstd` makes the gzip image the zstd one (same layers, same config apart
    // from nothing: the name is not in the image), and `--compression gzip` the other way.
    let plain_zstd = ctx.build(&["spec.kdl", "--image", "plain", "--compression", "zstd"]);
    assert_eq!(plain_zstd, zstd_digest);
    let plain = ctx.build(&["spec.kdl", "--image", "plain"]);
    assert_ne!(plain, zstd_digest);
    assert_eq!(ctx.build(&["spec.kdl", "--image", "big", "--compression", "gzip"]), plain);
}
