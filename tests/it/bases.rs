//! Images on bases: local OCI layouts and archives, and other images of the same spec. Base
//! layers are reused byte for byte; the config starts from the base's.

use std::fs;
use std::process::Command;

use crate::support::*;

fn manifest_layers(layout: &std::path::Path, tag: &str) -> Vec<String> {
    let raw = run(Command::new("skopeo").args(["inspect", "--raw"]).arg(format!("oci:{}:{tag}", layout.display())));
    let v: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    v["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

fn config(layout: &std::path::Path, tag: &str) -> serde_json::Value {
    let raw = run(Command::new("skopeo").args(["inspect", "--config"]).arg(format!("oci:{}:{tag}", layout.display())));
    serde_json::from_slice(&raw.stdout).unwrap()
}

const PARENT: &str = r#"
image "parent" {
    tag "p1"
    files {
        copy "/bin/busybox" to="/bin/busybox" mode=0o755
        symlink "/bin/sh" target="busybox"
        text "/etc/parent" "from the parent\n"
    }
    config {
        env PATH="/bin" KEEP="base" OVERRIDE="base"
        entrypoint "/bin/sh" "-c"
        cmd "echo parent"
        workdir "/"
        label "a"="1"
    }
}
"#;

#[test]
fn local_layout_archive_and_same_file_bases() {
    let ctx = TestContext::new();
    ctx.write("parent.kdl", PARENT);
    ctx.build(&["parent.kdl", "--out", "base-out"]);
    ctx.build(&["parent.kdl", "--out", "base-out", "--format", "oci-archive"]);
    ctx.build(&["parent.kdl", "--out", "base-out", "--format", "docker-archive"]);
    let parent_layers = manifest_layers(&ctx.path("base-out/parent"), "p1");
    // docker-archive and oci-archive both write base-out/parent.tar; keep copies.
    fs::rename(ctx.path("base-out/parent.tar"), ctx.path("parent-docker.tar")).unwrap();
    ctx.build(&["parent.kdl", "--out", "base-out", "--format", "oci-archive"]);
    fs::rename(ctx.path("base-out/parent.tar"), ctx.path("parent-oci.tar")).unwrap();

    let child = |base: &str| {
        format!(
            "{PARENT}\nimage \"child\" {{\n    tag \"c1\"\n    {base}\n    files {{ text \"/etc/child\" \"from the child\\n\" }}\n    config {{\n        env OVERRIDE=\"child\" NEW=\"1\"\n        cmd \"cat /etc/parent /etc/child; echo $KEEP $OVERRIDE $NEW\"\n    }}\n}}\n"
        )
    };
    let mut digests = Vec::new();
    for (i, base) in [
        "base \"oci:base-out/parent:p1\"",
        "base \"oci-archive:parent-oci.tar\"",
        "base \"docker-archive:parent-docker.tar\"",
        "base image=\"parent\"",
    ]
    .iter()
    .enumerate()
    {
        let spec = format!("child{i}.kdl");
        ctx.write(&spec, child(base));
        let out = format!("out{i}");
        let d = ctx.build(&[&spec, "--image", "child", "--out", &out]);
        let layout = ctx.path(&format!("{out}/child"));
        let layers = manifest_layers(&layout, "c1");
        assert_eq!(layers.len(), parent_layers.len() + 1, "{base}");
        assert_eq!(&layers[..parent_layers.len()], &parent_layers[..], "base layers reused byte for byte ({base})");
        let c = config(&layout, "c1");
        assert_eq!(c["config"]["Env"], serde_json::json!(["PATH=/bin", "KEEP=base", "OVERRIDE=child", "NEW=1"]), "{base}");
        assert_eq!(c["config"]["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
        assert_eq!(c["config"]["Labels"], serde_json::json!({"a": "1"}));
        assert_eq!(c["history"].as_array().unwrap().len(), 2);
        run(Command::new("oci-image-tool").args(["validate", "--type", "image"]).arg(&layout));
        digests.push(d);
    }
    // The same base through any of its forms gives the same image.
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");

    // It runs: the parent's busybox, both files, the merged environment.
    ctx.write("child-run.kdl", child("base image=\"parent\""));
    ctx.build(&["child-run.kdl", "--image", "child", "--format", "docker-archive"]);
    let podman = Podman::new(ctx.tmp.path());
    run(podman.cmd().arg("load").arg("-i").arg(ctx.path("out/child.tar")));
    let out = run(podman.cmd().args(["run", "--rm", "localhost/child:c1"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the parent\nfrom the child\nbase child 1\n");

    // An entrypoint in the child resets the base's cmd.
    ctx.write(
        "reset.kdl",
        format!("{PARENT}\nimage \"reset\" {{\n    base image=\"parent\"\n    config {{ entrypoint \"/bin/busybox\" }}\n}}\n"),
    );
    ctx.build(&["reset.kdl", "--image", "reset"]);
    let c = config(&ctx.path("out/reset"), "latest");
    assert_eq!(c["config"]["Entrypoint"], serde_json::json!(["/bin/busybox"]));
    assert!(c["config"].get("Cmd").is_none(), "{c}");
}

#[test]
fn a_bad_local_base_is_a_spec_error() {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"x\" {\n    base \"oci:nowhere:1\"\n}\n");
    let out = ctx.compose(&["build", "spec.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("spec.kdl:2:") && err.contains("nowhere"), "{err}");
    assert!(!ctx.path("out").exists());
}

/// Guards against this: `cache verify` failed on every store that built on an external base ("unknown
/// kind `base-files`", the record remembering the files compose read from the base), and
/// `--repair` removed the record only for the next build to write it again.
#[test]
fn cache_verify_knows_the_files_remembered_from_an_external_base() {
    let ctx = TestContext::new();
    ctx.write("parent.kdl", PARENT);
    ctx.build(&["parent.kdl", "--out", "base-out"]);
    ctx.write("child.kdl", "image \"child\" {\n    base \"oci:base-out/parent:p1\"\n    files { text \"/etc/child\" \"x\\n\" }\n}\n");
    let first = ctx.build(&["child.kdl"]);
    let records = || -> Vec<String> {
        walkdir::WalkDir::new(ctx.cache.join("v1/records"))
            .into_iter()
            .map(|e| e.unwrap().into_path())
            .filter(|p| p.is_file())
            .map(|p| fs::read_to_string(p).unwrap())
            .collect()
    };
    assert!(records().iter().any(|r| r.contains("\"kind\": \"base-files\"")), "the base's files are remembered");
    let out = ctx.compose(&["cache", "verify", "--repair"]);
    assert_success(&out, "cache verify --repair");
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 problems"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(records().iter().any(|r| r.contains("\"kind\": \"base-files\"")), "repair keeps it");
    assert_eq!(ctx.build(&["child.kdl"]), first);

    // Damaged files under that kind are still found.
    let p = walkdir::WalkDir::new(ctx.cache.join("v1/records"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .find(|p| p.is_file() && fs::read_to_string(p).unwrap().contains("\"kind\": \"base-files\""))
        .unwrap();
    let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    rec["outputs"]["files"]["media_type"] = serde_json::json!("text/plain");
    fs::write(&p, serde_json::to_vec(&rec).unwrap()).unwrap();
    let out = ctx.compose(&["cache", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
}
