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
    let out = run(podman.cmd().args([
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        "localhost/debian-curl:12",
        "-c",
        "busybox grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt",
    ]));
    let certs: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(certs > 100, "{certs} certificates");
    // `date` honours TZ (config sets Europe/Paris; /etc/localtime points there too).
    let out = run(podman.cmd().args(["run", "--rm", "--entrypoint", "/bin/date", "localhost/debian-curl:12", "-d", "@0", "+%H %Z"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "01 CET");
    let out = run(podman.cmd().args([
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        "localhost/debian-curl:12",
        "-c",
        "busybox readlink /etc/localtime; busybox cat /etc/timezone; busybox id -u",
    ]));
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

/// The ELF machine of `usr/bin/busybox` in the layers of `manifest` (a blob of `layout`).
fn busybox_machine(layout: &Path, manifest_digest: &str) -> u16 {
    let blob = |d: &str| fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(manifest_digest)).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        let bytes = blob(l["digest"].as_str().unwrap());
        let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(&bytes[..]));
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("usr/bin/busybox") {
                let mut head = [0u8; 20];
                std::io::Read::read_exact(&mut e, &mut head).unwrap();
                assert_eq!(&head[..4], b"\x7fELF");
                return u16::from_le_bytes([head[18], head[19]]);
            }
        }
    }
    panic!("no usr/bin/busybox in {manifest_digest}");
}

#[test]
fn two_platforms_resolve_per_architecture_into_one_index() {
    let ctx = TestContext::new();
    ctx.write(
        "mp.kdl",
        r#"image "mp" {
    platforms "linux/amd64" "linux/arm64"
    repository "debian" suite="bookworm" components="main" keyring="/usr/share/keyrings/debian-archive-keyring.gpg"
    packages "busybox-static"
    files { text "/etc/motd" "shared by both platforms\n" }
}
"#,
    );
    let v = ctx.build_json(&["mp.kdl"]);
    // Per platform: a fetch, a package layer, a metadata layer and an image; one shared files layer; one index.
    assert_eq!(v["derivations"]["total"], 10, "{v}");
    let layout = ctx.path("out/mp");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let root = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let inner: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(root.trim_start_matches("sha256:"))).unwrap()).unwrap();
    let mut machines = Vec::new();
    for m in inner["manifests"].as_array().unwrap() {
        machines
            .push((m["platform"]["architecture"].as_str().unwrap().to_string(), busybox_machine(&layout, m["digest"].as_str().unwrap())));
    }
    // EM_X86_64 = 62, EM_AARCH64 = 183.
    assert_eq!(machines, [("amd64".to_string(), 62), ("arm64".to_string(), 183)]);
    let lock: serde_json::Value = serde_json::from_slice(&fs::read(ctx.path("mp.kdl.lock")).unwrap()).unwrap();
    assert_eq!(lock["images"]["mp"]["platforms"]["linux/arm64"]["packages"][0]["architecture"], "arm64");
    run(std::process::Command::new("skopeo").args(["inspect", "--override-arch", "arm64"]).arg(format!("oci:{}:latest", layout.display())));
}

/// Images built in the default mode (no maintainer script runs) have what apt-installed images have
/// and programs rely on — Debian's users, alternatives, CA hash links, Java's cacerts, dpkg's
/// database, base-files' layout — checked by the programs themselves under podman.
#[test]
fn default_mode_images_work_like_apt_installed_ones() {
    let ctx = TestContext::new();
    let k = "keyring=\"/usr/share/keyrings/debian-archive-keyring.gpg\"";
    ctx.write(
        "spec.kdl",
        format!(
            "image \"apt-like\" {{\n    tag \"1\"\n    repository \"debian\" suite=\"bookworm\" components=\"main\" {k}\n    \
             repository \"debian-security\" suite=\"bookworm-security\" components=\"main\" {k}\n    \
             packages \"base-files\" \"dash\" \"coreutils\" \"mawk\" \"less\" \"dpkg\" \"apt\" \"curl\" \"nginx\" \"openssl\" \
             \"ca-certificates\" \"openjdk-17-jre-headless\"\n    files {{ symlink \"/bin/sh\" target=\"dash\" }}\n}}\n"
        ),
    );
    let out = ctx.compose(&["build", "spec.kdl", "--format", "oci-archive"]);
    assert_success(&out, "build");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("security updates are missed"));
    let podman = Podman::new(ctx.tmp.path());
    run(podman.cmd().arg("load").arg("-i").arg(ctx.path("out/apt-like.tar")));
    let script = r#"
awk 'BEGIN { print "awk:", 1 + 1 }'
readlink /usr/bin/pager
nginx -t 2>&1
id www-data; id nobody; id _apt
dpkg -s curl | head -2
dpkg --audit && echo "audit: clean"
dpkg -V curl && echo "verify: clean"
apt-get install -s curl 2>&1 | tail -2
readlink /var/run /var/lock
openssl verify -CApath /etc/ssl/certs /usr/share/ca-certificates/mozilla/ISRG_Root_X1.crt
java -version 2>&1 | head -1
keytool -list -cacerts -storepass changeit | head -5
cat > /tmp/T.java <<'J'
public class T { public static void main(String[] a) throws Exception {
  javax.net.ssl.TrustManagerFactory f = javax.net.ssl.TrustManagerFactory.getInstance("PKIX");
  f.init((java.security.KeyStore) null);
  System.out.println("java trusts " + ((javax.net.ssl.X509TrustManager) f.getTrustManagers()[0]).getAcceptedIssuers().length + " CAs");
} }
J
java /tmp/T.java
"#;
    let out = run(podman.cmd().args(["run", "--rm", "--entrypoint", "/bin/sh", "localhost/apt-like:1", "-c", script]));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "awk: 2",
        "/etc/alternatives/pager",
        "syntax is ok",
        "test is successful",
        "uid=33(www-data)",
        "uid=65534(nobody)",
        "uid=42(_apt)",
        "Status: install ok installed",
        "audit: clean",
        "verify: clean",
        "curl is already the newest version",
        "/run\n/run/lock",
        "ISRG_Root_X1.crt: OK",
        "openjdk version \"17",
        "Keystore type: JKS",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let cas: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("java trusts ").and_then(|r| r.strip_suffix(" CAs")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(cas > 100, "Java's default truststore holds {cas} CAs:\n{text}");
}

/// `maintainer-scripts "run"` runs `dpkg --configure -a` in the build sandbox over the packages;
/// nginx's postinst enables its default site, so it serves its page; the captured layer (and so the
/// image) is the same from two empty stores.
#[test]
fn scripts_mode_configures_packages_and_reproduces() {
    let ctx = TestContext::new();
    let k = "keyring=\"/usr/share/keyrings/debian-archive-keyring.gpg\"";
    ctx.write(
        "spec.kdl",
        format!(
            "image \"web\" {{\n    variant \"essential\"\n    maintainer-scripts \"run\"\n    \
             repository \"debian\" suite=\"bookworm\" components=\"main\" {k}\n    \
             repository \"debian-security\" suite=\"bookworm-security\" components=\"main\" {k}\n    \
             packages \"nginx\" \"curl\" \"python3-minimal\"\n    \
             config {{ entrypoint \"/bin/sh\" \"-c\" \"nginx && sleep 0.5 && curl -s http://127.0.0.1/\"; }}\n}}\n"
        ),
    );
    let first = ctx.build_json(&["spec.kdl", "--format", "oci-archive"]);
    let out = ctx
        .cmd()
        .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("other-store"))
        .args(["build", "--json", "spec.kdl", "--out", "out2", "--check"])
        .output()
        .unwrap();
    // With `--check` on an empty store, the scripts run twice and their layers are compared.
    assert_success(&out, "build from another empty store, checked");
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["images"][0]["digest"], second["images"][0]["digest"], "scripts mode is reproducible");

    let podman = Podman::new(ctx.tmp.path());
    run(podman.cmd().arg("load").arg("-i").arg(ctx.path("out/web.tar")));
    let out = run(podman.cmd().args(["run", "--rm", "localhost/web:latest"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("<title>Welcome to nginx!</title>"), "{}", String::from_utf8_lossy(&out.stdout));
    let script = "readlink /etc/nginx/sites-enabled/default; dpkg --audit && echo audit-clean; \
                  awk '/^Status:/' /var/lib/dpkg/status | sort -u; ls /var/lib/dpkg/status-old 2>/dev/null || echo no-noise";
    let out = run(podman.cmd().args(["run", "--rm", "--entrypoint", "/bin/sh", "localhost/web:latest", "-c", script]));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["/etc/nginx/sites-available/default", "audit-clean", "Status: install ok installed\nno-noise"] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
