//! Integration tests of the registry client against a real registry: Debian's `docker-registry`
//! (CNCF distribution 2.8) on 127.0.0.1, one per test, with its own data directory; `skopeo`
//! checks what landed. Needs `apt-get install -y docker-registry skopeo apache2-utils`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use compose::hash::Sha256;
use compose::registry::{AuthConfig, RegistryError};

use crate::support::registry::{require, TestRegistry};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

const MIB: u64 = 1 << 20;

fn anonymous() -> AuthConfig {
    AuthConfig::from_env(&|_| None, None).expect("empty auth config")
}

fn skopeo_raw(reference: &str, creds: Option<&str>) -> Vec<u8> {
    require("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--creds", c]);
    }
    let out = cmd.arg(format!("docker://{reference}")).output().expect("run skopeo");
    assert!(out.status.success(), "skopeo inspect {reference}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

// ---------------------------------------------------------------------------------------------
// Images, written as an OCI layout (`blobs/sha256/HEX`) so skopeo can copy them too.

struct Image {
    /// (digest, size, file), config first.
    blobs: Vec<(Sha256, u64, PathBuf)>,
    manifest: (Sha256, String, Vec<u8>),
}

fn blob_path(layout: &Path, d: &Sha256) -> PathBuf {
    layout.join("blobs/sha256").join(d.hex())
}

/// Write `size` pseudo-random bytes (seeded) as a blob of the layout; returns digest and path.
fn random_blob(layout: &Path, size: u64, seed: u64) -> (Sha256, u64, PathBuf) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    let tmp = layout.join(format!("tmp-{seed}"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).expect("create"));
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    out.flush().expect("flush");
    drop(out);
    let (d, n) = Sha256::of_reader(std::fs::File::open(&tmp).expect("open")).expect("hash");
    assert_eq!(n, size);
    let path = blob_path(layout, &d);
    std::fs::rename(&tmp, &path).expect("rename");
    (d, size, path)
}

fn bytes_blob(layout: &Path, bytes: &[u8]) -> (Sha256, u64, PathBuf) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    let d = Sha256::of(bytes);
    let path = blob_path(layout, &d);
    std::fs::write(&path, bytes).expect("write blob");
    (d, bytes.len() as u64, path)
}

fn descriptor(media_type: &str, d: &Sha256, size: u64) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": d.to_string(), "size": size})
}

/// An image of random layers of `sizes` bytes, seeded by `seed`.
fn make_image(layout: &Path, sizes: &[u64], seed: u64) -> Image {
    let layers: Vec<_> = sizes.iter().enumerate().map(|(i, s)| random_blob(layout, *s, seed * 1000 + i as u64)).collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| l.0.to_string()).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = bytes_blob(layout, &serde_json::to_vec(&config).expect("json"));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config.0, config.1),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, &l.0, l.1)).collect::<Vec<_>>(),
    });
    // Pretty-printed on purpose: a registry that re-serialized would change the bytes.
    let bytes = serde_json::to_vec_pretty(&manifest).expect("json");
    let (md, _, _) = bytes_blob(layout, &bytes);
    let mut blobs = vec![config];
    blobs.extend(layers);
    Image { blobs, manifest: (md, OCI_MANIFEST.to_string(), bytes) }
}

/// Make `layout` a complete OCI layout whose index names `manifest` as `tag`.
fn finish_layout(layout: &Path, manifest: &(Sha256, String, Vec<u8>), tag: &str) {
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let mut desc = descriptor(&manifest.1, &manifest.0, manifest.2.len() as u64);
    desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [desc]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).expect("json")).expect("write");
}

fn read_file(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(p).and_then(|mut f| f.read_to_end(&mut v)).expect("read");
    v
}

// ---------------------------------------------------------------------------------------------

#[test]
fn push_resolve_repush_mount_and_blobs() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let img = make_image(work.path(), &[3 * MIB, 2 * MIB + 12345], 1);
    let client = reg.client(anonymous());
    let addr = reg.addr();
    let first = format!("{addr}/first");

    let report = client.push(&format!("{first}:v1"), &img.blobs, std::slice::from_ref(&img.manifest), &[]).expect("push");
    let total: u64 = img.blobs.iter().map(|b| b.1).sum();
    assert_eq!((report.uploaded, report.mounted, report.existing), (3, 0, 0));
    assert_eq!(report.uploaded_bytes, total);
    assert_eq!(report.digest, img.manifest.0);

    // Exactly our bytes, as another client sees them.
    assert_eq!(skopeo_raw(&format!("{first}:v1"), None), img.manifest.2);

    let fetched = client.resolve(&format!("{first}:v1")).expect("resolve");
    assert_eq!(fetched.digest, img.manifest.0);
    assert_eq!(fetched.media_type, OCI_MANIFEST);
    assert_eq!(fetched.bytes, img.manifest.2);
    let by_digest = client.resolve(&format!("{first}@{}", img.manifest.0)).expect("resolve by digest");
    assert_eq!(by_digest, fetched);
    assert_eq!(client.manifest(&first, &img.manifest.0).expect("manifest"), fetched);

    // Again: nothing to upload.
    let again = client.push(&format!("{first}:v1"), &img.blobs, std::slice::from_ref(&img.manifest), &[]).expect("re-push");
    assert_eq!((again.uploaded, again.mounted, again.existing, again.uploaded_bytes), (0, 0, 3, 0));

    // Another repository of the same registry: mounted, not uploaded.
    let second = format!("{addr}/team/second");
    let mounted = client
        .push(&format!("{second}:v2"), &img.blobs, std::slice::from_ref(&img.manifest), std::slice::from_ref(&first))
        .expect("push with mount");
    assert_eq!((mounted.uploaded, mounted.mounted, mounted.existing), (0, 3, 0));
    assert_eq!(skopeo_raw(&format!("{second}:v2"), None), img.manifest.2);

    // Blobs round-trip, verified.
    for (d, size, path) in &img.blobs {
        let mut got = Vec::new();
        let n = client.blob(&second, d, Some(*size), &mut got).expect("blob");
        assert_eq!(n, *size);
        assert_eq!(got, read_file(path));
    }
    // From several threads at once, as rayon workers call it.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for (d, size, _) in &img.blobs {
                    let n = client.blob(&first, d, Some(*size), &mut std::io::sink()).expect("blob");
                    assert_eq!(n, *size);
                    assert_eq!(client.resolve(&format!("{first}:v1")).expect("resolve").digest, img.manifest.0);
                }
            });
        }
    });
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let err = client.blob(&first, &img.blobs[1].0, None, &mut Broken).unwrap_err();
    assert!(matches!(err, RegistryError::Sink { .. }), "{err}");
    let (d0, s0, _) = &img.blobs[1];
    let err = client.blob(&second, d0, Some(s0 - 1), &mut std::io::sink()).unwrap_err();
    assert!(matches!(err, RegistryError::SizeMismatch { .. }), "{err}");

    // Unknown things.
    let err = client.resolve(&format!("{first}:nope")).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert_eq!(err.to_string(), format!("{first}:nope not found"));
    let err = client.resolve(&format!("{addr}/nothing/here:v1")).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    let missing = Sha256::of(b"not there");
    let err = client.blob(&first, &missing, None, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(&missing.to_string()), "{err}");
    let err = client.manifest(&first, &missing).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");

    // A blob corrupted in the registry's storage (same size, one byte flipped).
    let (d1, s1, _) = &img.blobs[2];
    let stored = reg.blob_file(d1);
    let mut bytes = read_file(&stored);
    bytes[1000] ^= 0xff;
    std::fs::write(&stored, &bytes).expect("corrupt");
    let err = client.blob(&first, d1, Some(*s1), &mut std::io::sink()).unwrap_err();
    match &err {
        RegistryError::DigestMismatch { expected, actual, .. } => {
            assert_eq!(expected, &d1.to_string());
            assert_eq!(actual, &Sha256::of(&bytes).to_string());
        }
        other => panic!("expected DigestMismatch, got {other}"),
    }
    // Without the size, too.
    eprintln!("corrupt: {err}");
    let err = client.blob(&first, d1, None, &mut std::io::sink()).unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[test]
fn push_and_resolve_an_index() {
    let reg = TestRegistry::start();
    let work = tempfile::tempdir().expect("tempdir");
    let amd = make_image(work.path(), &[MIB, 64 * 1024], 2);
    let arm = make_image(work.path(), &[MIB + 1], 3);
    let platform = |arch: &str| serde_json::json!({"architecture": arch, "os": "linux"});
    let mut entries = Vec::new();
    for (img, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        let mut d = descriptor(OCI_MANIFEST, &img.manifest.0, img.manifest.2.len() as u64);
        d["platform"] = platform(arch);
        entries.push(d);
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    let index_bytes = serde_json::to_vec(&index).expect("json");
    let index_digest = Sha256::of(&index_bytes);

    let mut blobs = amd.blobs.clone();
    blobs.extend(arm.blobs.iter().cloned());
    let manifests = vec![amd.manifest.clone(), arm.manifest.clone(), (index_digest, OCI_INDEX.to_string(), index_bytes.clone())];
    let client = reg.client(anonymous());
    let repo = format!("{}/multi", reg.addr());
    let report = client.push(&format!("{repo}:latest"), &blobs, &manifests, &[]).expect("push index");
    assert_eq!(report.digest, index_digest);
    assert_eq!(report.uploaded, 5);

    assert_eq!(skopeo_raw(&format!("{repo}:latest"), None), index_bytes);
    // No tag means latest.
    let fetched = client.resolve(&repo).expect("resolve");
    assert_eq!((fetched.digest, fetched.media_type.as_str()), (index_digest, OCI_INDEX));
    assert_eq!(fetched.bytes, index_bytes);
    // A target naming both a tag and the digest: checked, then tagged.
    let pinned = format!("{repo}:pinned@{index_digest}");
    let again = client.push(&pinned, &blobs, &manifests, &[]).expect("push pinned");
    assert_eq!((again.uploaded, again.existing), (0, 5));
    assert_eq!(client.resolve(&format!("{repo}:pinned")).expect("resolve").digest, index_digest);
    assert_eq!(client.resolve(&pinned).expect("resolve pinned").bytes, index_bytes);
    for img in [&amd, &arm] {
        let child = client.manifest(&repo, &img.manifest.0).expect("child manifest");
        assert_eq!(child.bytes, img.manifest.2);
        assert_eq!(child.media_type, OCI_MANIFEST);
    }
}

#[test]
fn basic_auth_from_a_config_file() {
    let reg = TestRegistry::start_with(Some(("alice", "s3cret")));
    let work = tempfile::tempdir().expect("tempdir");
    let img = make_image(work.path(), &[MIB], 4);
    let addr = reg.addr();
    let target = format!("{addr}/private:v1");

    let auth_file = |name: &str, password: &str| {
        let path = work.path().join(name);
        let token = base64_encode(&format!("alice:{password}"));
        let json = serde_json::json!({"auths": {format!("https://{addr}"): {"auth": token}}});
        std::fs::write(&path, serde_json::to_vec(&json).expect("json")).expect("write");
        let p = path.display().to_string();
        AuthConfig::from_env(&move |k| (k == "REGISTRY_AUTH_FILE").then(|| p.clone()), None).expect("auth")
    };

    let good = reg.client(auth_file("good.json", "s3cret"));
    let report = good.push(&target, &img.blobs, std::slice::from_ref(&img.manifest), &[]).expect("push");
    assert_eq!(report.uploaded, 2);
    assert_eq!(good.resolve(&target).expect("resolve").bytes, img.manifest.2);
    assert_eq!(skopeo_raw(&target, Some("alice:s3cret")), img.manifest.2);
    let (d, size, path) = &img.blobs[1];
    let mut got = Vec::new();
    good.blob(&format!("{addr}/private"), d, Some(*size), &mut got).expect("blob");
    assert_eq!(got, read_file(path));

    let bad = reg.client(auth_file("bad.json", "wrong"));
    let err = bad.resolve(&target).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let msg = err.to_string();
    eprintln!("wrong password: {msg}");
    assert!(msg.contains(&format!("authentication to {addr} failed for {target}")), "{msg}");
    assert!(msg.contains("bad.json"), "{msg}");
    let err = bad.push(&target, &img.blobs, std::slice::from_ref(&img.manifest), &[]).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let err = bad.blob(&format!("{addr}/private"), d, None, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    let err = reg.client(anonymous()).resolve(&target).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("none has an entry"), "{err}");
    eprintln!("anonymous: {err}");
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn stopped_registry_is_a_network_error() {
    let mut reg = TestRegistry::start();
    let client = reg.client(anonymous());
    let work = tempfile::tempdir().expect("tempdir");
    let img = make_image(work.path(), &[1024], 5);
    let target = format!("{}/gone:v1", reg.addr());
    client.push(&target, &img.blobs, std::slice::from_ref(&img.manifest), &[]).expect("push");
    reg.stop();
    let err = client.resolve(&target).unwrap_err();
    match &err {
        RegistryError::Network { registry, reference, .. } => {
            assert_eq!(registry, &reg.addr());
            assert_eq!(reference, &target);
        }
        other => panic!("expected Network, got {other}"),
    }
    assert!(err.to_string().contains(&reg.addr()), "{err}");
    eprintln!("stopped: {err}");
    let err = client.push(&target, &img.blobs, std::slice::from_ref(&img.manifest), &[]).unwrap_err();
    assert!(matches!(err, RegistryError::Network { .. }), "{err}");
    let err = client.blob(&format!("{}/gone", reg.addr()), &img.blobs[0].0, None, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, RegistryError::Network { .. }), "{err}");
}

/// The largest `data` file of an upload in progress in `repo`.
fn upload_progress(reg: &TestRegistry, repo: &str) -> u64 {
    let dir = reg.data().join("repositories").join(repo).join("_uploads");
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.filter_map(|e| e.ok()).filter_map(|e| std::fs::metadata(e.path().join("data")).ok()).map(|m| m.len()).max().unwrap_or(0)
}

#[test]
fn interrupted_push_can_be_rerun() {
    let mut reg = TestRegistry::start();
    let work = tempfile::tempdir().expect("tempdir");
    // The big layer last in the list, the small ones are done long before it is.
    let img = make_image(work.path(), &[64 * 1024, 384 * MIB], 6);
    let client = reg.client(anonymous());
    let target = format!("{}/big:v1", reg.addr());

    let first = std::thread::scope(|s| {
        let push = s.spawn(|| client.push(&target, &img.blobs, std::slice::from_ref(&img.manifest), &[]));
        let deadline = Instant::now() + Duration::from_secs(120);
        // Killed once the big layer is under way and a small blob is in the repository (under
        // load the small uploads can lag behind the big one's first megabytes). In means linked
        // into the repository, the registry's last step: its data alone is not yet found there.
        let small_done = || {
            img.blobs[..2].iter().any(|(d, _, _)| reg.data().join("repositories/big/_layers/sha256").join(d.hex()).join("link").is_file())
        };
        while upload_progress(&reg, "big") < 16 * MIB || !small_done() {
            assert!(!push.is_finished(), "the push ended before it could be interrupted");
            assert!(Instant::now() < deadline, "the upload never started");
            std::thread::sleep(Duration::from_millis(2));
        }
        reg.stop();
        push.join().expect("push thread")
    });
    let err = first.expect_err("the push was interrupted");
    eprintln!("interrupted: {err}");
    assert!(matches!(err, RegistryError::Network { .. }), "{err}");

    reg.spawn();
    let report = client.push(&target, &img.blobs, std::slice::from_ref(&img.manifest), &[]).expect("re-push after restart");
    assert_eq!(report.uploaded + report.existing, 3, "{report:?}");
    assert!(report.uploaded >= 1, "{report:?}");
    assert!(report.existing >= 1, "what completed before the kill is kept: {report:?}");
    eprintln!("re-push: {report:?}");
    assert_eq!(skopeo_raw(&target, None), img.manifest.2);
    let (d, size, _) = &img.blobs[2];
    let n = client.blob(&format!("{}/big", reg.addr()), d, Some(*size), &mut std::io::sink()).expect("blob");
    assert_eq!(n, *size);
}

/// `cargo test --test registry_it -- --ignored --nocapture bench`: push ~50 MiB in 5 layers
/// with this client and with `skopeo copy`, each to a fresh registry.
#[test]
#[ignore]
fn bench_push_vs_skopeo() {
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let img = make_image(&layout, &[10 * MIB; 5], 7);
    finish_layout(&layout, &img.manifest, "bench");
    let total: u64 = img.blobs.iter().map(|b| b.1).sum();

    for round in 0..3 {
        let reg = TestRegistry::start();
        let client = reg.client(anonymous());
        let t = Instant::now();
        let report = client.push(&format!("{}/bench:v1", reg.addr()), &img.blobs, std::slice::from_ref(&img.manifest), &[]).expect("push");
        let ours = t.elapsed();
        assert_eq!(report.uploaded, 6);
        if round == 0 {
            let log = reg.log();
            let count = |pat: &str| log.lines().filter(|l| l.contains(pat)).count();
            println!(
                "requests: GET /v2/ {}, HEAD {}, POST {}, PATCH {}, PUT {}",
                count("\"GET /v2/ HTTP/1.1\""),
                count("\"HEAD "),
                count("\"POST "),
                count("\"PATCH "),
                count("\"PUT ")
            );
        }

        let reg2 = TestRegistry::start();
        let t = Instant::now();
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false", "--preserve-digests", "-q"])
            .arg(format!("oci:{}:bench", layout.display()))
            .arg(format!("docker://{}/bench:v1", reg2.addr()))
            .output()
            .expect("skopeo copy");
        let theirs = t.elapsed();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(skopeo_raw(&format!("{}/bench:v1", reg2.addr()), None), img.manifest.2);
        println!(
            "round {round}: {:.1} MiB in 6 blobs: compose {:.3} s, skopeo copy {:.3} s",
            total as f64 / MIB as f64,
            ours.as_secs_f64(),
            theirs.as_secs_f64()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// `compose build --push` and `compose push`, end to end.
// ---------------------------------------------------------------------------------------------

const PUSH_SPEC: &str = r#"
image "bbx" {
    tag "t1"
    files {
        copy "/bin/busybox" to="/bin/busybox" mode=0o755
        symlink "/bin/sh" target="busybox"
        text "/etc/greeting" "pushed by compose\n"
    }
    layer "extra" { text "/etc/extra" "extra\n" }
    config {
        entrypoint "/bin/sh" "-c"
        cmd "cat /etc/greeting"
    }
}
"#;

/// `compose push REF` demanded `--image` when the spec exported one image (a builder beside
/// it, `export #false`, counted too); against a plain-HTTP registry the error was rustls's
/// "received corrupt message of type InvalidContentType", with no word of `--insecure-registry`.
#[test]
fn push_demanded_image_for_one_exported_image_and_hid_the_plain_http_cause() {
    let reg = TestRegistry::start();
    let addr = reg.addr();
    let ctx = crate::support::TestContext::new();
    ctx.write("compose.kdl", format!("{PUSH_SPEC}\nimage \"builder\" {{\n    export #false\n    files {{ text \"/b\" \"b\" }}\n}}\n"));
    let target = format!("{addr}/team/one:t1");
    let out = ctx.compose(&["push", &target]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("push with `--insecure-registry {addr}`")), "{err}");
    let out = ctx.compose(&["push", &target, "--insecure-registry", &addr]);
    crate::support::assert_success(&out, "compose push REF with the default spec");
    assert!(!skopeo_raw(&target, None).is_empty());
}

#[test]
fn build_push_repush_and_pull_with_podman() {
    let reg = TestRegistry::start();
    let addr = reg.addr();
    let ctx = crate::support::TestContext::new();
    ctx.write("spec.kdl", PUSH_SPEC);
    let target = format!("{addr}/team/bbx:t1");
    let v = ctx.build_json(&["spec.kdl", "--push", &target, "--insecure-registry", &addr]);
    let img = &v["images"][0];
    let digest = img["digest"].as_str().unwrap().to_string();
    assert_eq!(img["pushed"]["digest"], digest.as_str());
    assert_eq!(img["pushed"]["uploaded"], 3, "2 layers + config: {v}");
    // The registry serves exactly our manifest bytes.
    let ours = std::fs::read(ctx.path("out/bbx/blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap();
    assert_eq!(skopeo_raw(&target, None), ours);
    // A second push uploads nothing.
    let out = ctx.compose(&["push", "spec.kdl", &target, "--insecure-registry", &addr, "--json"]);
    crate::support::assert_success(&out, "compose push");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["images"][0]["pushed"]["uploaded"], 0, "{again}");
    assert_eq!(again["images"][0]["pushed"]["existing"], 3);
    assert_eq!(again["derivations"]["built"], 0);
    // A real engine pulls and runs it.
    let podman = crate::support::Podman::new(ctx.tmp.path());
    crate::support::run(podman.cmd().args(["pull", "--tls-verify=false", &target]));
    let inspect = crate::support::run(podman.cmd().args(["image", "inspect", &target]));
    let i: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(i[0]["Digest"], digest.as_str());
    let out = crate::support::run(podman.cmd().args(["run", "--rm", &target]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pushed by compose\n");
}

#[test]
fn push_with_credentials_from_a_config_file() {
    let reg = TestRegistry::start_with(Some(("alice", "s3cret")));
    let addr = reg.addr();
    let ctx = crate::support::TestContext::new();
    ctx.write("spec.kdl", PUSH_SPEC);
    let target = format!("{addr}/private/bbx:t1");
    let auth = |password: &str| {
        let path = ctx.tmp.path().join(format!("auth-{password}.json"));
        let token = base64_encode(&format!("alice:{password}"));
        std::fs::write(&path, serde_json::to_vec(&serde_json::json!({"auths": {addr.clone(): {"auth": token}}})).unwrap()).unwrap();
        path
    };
    let good = auth("s3cret");
    let out =
        ctx.cmd().env("REGISTRY_AUTH_FILE", &good).args(["push", "spec.kdl", &target, "--insecure-registry", &addr]).output().unwrap();
    crate::support::assert_success(&out, "push with good credentials");
    let bad = auth("wrong");
    let out = ctx.cmd().env("REGISTRY_AUTH_FILE", &bad).args(["push", "spec.kdl", &target, "--insecure-registry", &addr]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot push to `{target}`")) && err.contains("authentication to") && err.contains("auth-wrong.json"),
        "{err}"
    );
}

#[test]
fn push_to_a_dead_registry_fails_clearly() {
    let mut reg = TestRegistry::start();
    let addr = reg.addr();
    reg.stop();
    let ctx = crate::support::TestContext::new();
    ctx.write("spec.kdl", PUSH_SPEC);
    let out = ctx.compose(&["build", "spec.kdl", "--push", &format!("{addr}/x:1"), "--insecure-registry", &addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot reach registry"), "{err}");
    assert!(crate::support::last_line(&ctx.compose(&["cache", "verify"])).contains(" 0 problems"));
}

#[test]
fn registry_base_is_pinned_until_lock_update() {
    let reg = TestRegistry::start();
    let addr = reg.addr();
    let ctx = crate::support::TestContext::new();
    ctx.write("base.kdl", PUSH_SPEC);
    let base_ref = format!("{addr}/team/base:stable");
    let v1 = ctx.build_json(&["base.kdl", "--push", &base_ref, "--insecure-registry", &addr]);
    let base_digest = v1["images"][0]["digest"].as_str().unwrap().to_string();

    ctx.write(
        "child.kdl",
        format!("image \"child\" {{\n    tag \"c\"\n    base \"{base_ref}\"\n    files {{ text \"/etc/child\" \"child\\n\" }}\n    config {{ cmd \"cat /etc/greeting /etc/child\" }}\n}}\n"),
    );
    let first = ctx.build_json(&["child.kdl", "--insecure-registry", &addr, "--format", "docker-archive"]);
    let child_digest = first["images"][0]["digest"].as_str().unwrap().to_string();
    let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(ctx.path("child.kdl.lock")).unwrap()).unwrap();
    assert_eq!(lock["images"]["child"]["base"]["reference"], base_ref.as_str());
    assert_eq!(lock["images"]["child"]["base"]["digests"]["linux/amd64"], base_digest.as_str());
    // It runs: the base's busybox and entrypoint, our file and cmd.
    let podman = crate::support::Podman::new(ctx.tmp.path());
    crate::support::run(podman.cmd().arg("load").arg("-i").arg(ctx.path("out/child.tar")));
    let out = crate::support::run(podman.cmd().args(["run", "--rm", "localhost/child:c"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pushed by compose\nchild\n");

    // The tag moves to another image.
    ctx.write("base.kdl", PUSH_SPEC.replace("pushed by compose", "a newer base"));
    let v2 = ctx.build_json(&["base.kdl", "--push", &base_ref, "--insecure-registry", &addr]);
    assert_ne!(v2["images"][0]["digest"], base_digest.as_str());
    // The lock keeps the build where it was, even from an empty store and with --locked.
    let out = ctx
        .cmd()
        .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("fresh-store"))
        .args(["build", "child.kdl", "--locked", "--insecure-registry", &addr])
        .output()
        .unwrap();
    crate::support::assert_success(&out, "locked build on a moved tag");
    assert_eq!(crate::support::last_line(&out), child_digest);
    // Until `compose lock --update`.
    crate::support::assert_success(&ctx.compose(&["lock", "child.kdl", "--update", "--insecure-registry", &addr]), "lock --update");
    let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(ctx.path("child.kdl.lock")).unwrap()).unwrap();
    assert_eq!(lock["images"]["child"]["base"]["digests"]["linux/amd64"], v2["images"][0]["digest"]);
    let moved = ctx.build(&["child.kdl", "--insecure-registry", &addr]);
    assert_ne!(moved, child_digest);
    // Pushing the child to another repository of the same registry mounts the base's layers.
    let target = format!("{addr}/team/child:c");
    let v = ctx.build_json(&["child.kdl", "--insecure-registry", &addr, "--push", &target]);
    let pushed = &v["images"][0]["pushed"];
    assert_eq!(pushed["mounted"], 2, "the base's two layers: {v}");
    assert_eq!(pushed["uploaded"], 2, "our layer and config: {v}");
}

#[test]
fn registry_base_needs_no_registry_once_fetched() {
    let mut reg = TestRegistry::start();
    let addr = reg.addr();
    let ctx = crate::support::TestContext::new();
    ctx.write("base.kdl", PUSH_SPEC.replace("    layer \"extra\"", "    accounts { user \"baseuser\" uid=2000 }\n    layer \"extra\""));
    let base_ref = format!("{addr}/team/base:stable");
    ctx.build_json(&["base.kdl", "--push", &base_ref, "--insecure-registry", &addr]);
    ctx.write(
        "child.kdl",
        format!(
            "image \"child\" {{\n    tag \"c\"\n    base \"{base_ref}\"\n    accounts {{ user \"app\" uid=1000 }}\n    \
             files {{ text \"/etc/child\" \"child\\n\" owner=\"baseuser\" }}\n    config {{ user \"baseuser\" }}\n}}\n"
        ),
    );
    let online = ctx.build(&["child.kdl", "--insecure-registry", &addr]);
    // The registry base's /etc/passwd was read: the child's accounts merge into it.
    let bundle = ctx.tmp.path().join("bundle");
    crate::support::run(
        Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:c", ctx.path("out/child").display())).arg(&bundle),
    );
    let passwd = std::fs::read_to_string(bundle.join("rootfs/etc/passwd")).unwrap();
    assert!(passwd.contains("baseuser:x:2000:") && passwd.contains("app:x:1000:"), "{passwd}");
    // And its users can own files and run the image.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(bundle.join("rootfs/etc/child")).unwrap().uid(), 2000);
    // The registry goes away: the pinned base's manifest, config, files and layers are in the
    // store, so a build (and an --offline one) needs nothing from it.
    reg.stop();
    std::fs::remove_dir_all(ctx.path("out")).unwrap();
    assert_eq!(ctx.build(&["child.kdl", "--insecure-registry", &addr]), online);
    assert_eq!(ctx.build(&["child.kdl", "--insecure-registry", &addr, "--offline"]), online);
    // A store without them, offline: a clear error naming the base.
    let out = ctx
        .cmd()
        .env("COMPOSE_CACHE_DIR", ctx.tmp.path().join("empty-store"))
        .args(["build", "child.kdl", "--insecure-registry", &addr, "--offline"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--offline is set") && err.contains(&base_ref), "{err}");
}
