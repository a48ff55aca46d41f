//! Incremental builds: a no-op rebuild executes nothing; a change rebuilds exactly what depends
//! on it.

use std::fs;

use crate::support::*;

fn counts(v: &serde_json::Value) -> (u64, u64, u64, u64) {
    let d = &v["derivations"];
    (d["total"].as_u64().unwrap(), d["built"].as_u64().unwrap(), d["local"].as_u64().unwrap(), d["remote"].as_u64().unwrap())
}

#[test]
fn noop_rebuild_runs_nothing_and_one_file_change_rebuilds_one_layer() {
    let ctx = TestContext::new();
    ctx.write(
        "spec.kdl",
        r#"
image "inc" {
    files { copy "a/" to="/a" }
    layer "b" { copy "b/" to="/b" }
    layer "c" { copy "c/" to="/c" }
}
image "other" {
    files { copy "a/" to="/a" }
}
"#,
    );
    for d in ["a", "b", "c"] {
        for i in 0..20 {
            ctx.write(&format!("{d}/f{i}.txt"), format!("{d}{i}\n"));
        }
    }
    let first = ctx.build_json(&["spec.kdl"]);
    // inc: 3 layers + image; other: its files layer is the same derivation as inc's → shared.
    assert_eq!(counts(&first), (5, 5, 0, 0), "{first}");
    assert_eq!(first["images"].as_array().unwrap().len(), 2);
    assert_eq!(first["images"][0]["name"], "inc");
    assert_eq!(first["images"][0]["tag"], "latest");

    let again = ctx.build_json(&["spec.kdl"]);
    assert_eq!(counts(&again), (5, 0, 5, 0), "no-op rebuild: {again}");
    assert_eq!(first["images"], again["images"]);

    // Touching a file (same content, new mtime) rebuilds nothing either.
    let f = ctx.path("b/f3.txt");
    let content = fs::read(&f).unwrap();
    fs::write(&f, &content).unwrap();
    assert_eq!(counts(&ctx.build_json(&["spec.kdl"])), (5, 0, 5, 0));

    // `compose explain` after editing one copied file names that file and the one layer it is
    // in (and the image that is re-assembled over it), nothing else.
    ctx.write("c/f7.txt", "changed, and longer\n");
    let out = ctx.compose(&["explain", "spec.kdl", "--image", "inc"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("inc: layer \"c\" (layer):\n    /c/f7.txt changed ("), "{text}");
    assert!(text.contains("size 3 B → 20 B"), "{text}");
    assert!(text.contains("2 of 4 derivations would run"), "{text}");
    assert_eq!(text.matches("(layer):").count(), 1, "one layer: {text}");
    let json: serde_json::Value =
        serde_json::from_slice(&ctx.compose(&["explain", "spec.kdl", "--image", "inc", "--json"]).stdout).unwrap();
    assert_eq!(json["rebuild"].as_array().unwrap().len(), 2, "{json}");
    ctx.write("c/f7.txt", "c7\n");

    // One changed file in layer "b": that layer and inc's image, nothing else.
    ctx.write("b/f3.txt", "changed\n");
    let changed = ctx.build_json(&["spec.kdl"]);
    assert_eq!(counts(&changed), (5, 2, 3, 0), "{changed}");
    assert_ne!(changed["images"][0]["digest"], first["images"][0]["digest"]);
    assert_eq!(changed["images"][1]["digest"], first["images"][1]["digest"]);

    // Only one image selected: only its derivations.
    let only = ctx.build_json(&["spec.kdl", "--image", "other"]);
    assert_eq!(counts(&only), (2, 0, 2, 0));

    // Changing it back finds the old derivations in the store.
    ctx.write("b/f3.txt", "b3\n");
    let back = ctx.build_json(&["spec.kdl"]);
    assert_eq!(counts(&back), (5, 0, 5, 0));
    assert_eq!(back["images"], first["images"]);

    // A config-only change rebuilds only the image derivation.
    let spec = fs::read_to_string(ctx.path("spec.kdl")).unwrap();
    ctx.write(
        "spec.kdl",
        spec.replace("layer \"c\" { copy \"c/\" to=\"/c\" }", "layer \"c\" { copy \"c/\" to=\"/c\" }\n    config { cmd \"x\" }"),
    );
    assert_eq!(counts(&ctx.build_json(&["spec.kdl"])), (5, 1, 4, 0));
}

#[test]
fn plan_shows_the_dag_and_what_is_cached() {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"p\" {\n    files { text \"/x\" \"x\" }\n    layer \"y\" { text \"/y\" \"y\" }\n}\n");
    let out = ctx.compose(&["plan", "spec.kdl", "--json"]);
    assert_success(&out, "plan");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["cached"] == false));
    let image = nodes.iter().find(|n| n["kind"] == "image").unwrap();
    assert_eq!(image["deps"].as_array().unwrap().len(), 2);
    ctx.build(&["spec.kdl"]);
    let out = ctx.compose(&["plan", "spec.kdl", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["nodes"].as_array().unwrap().iter().all(|n| n["cached"] == true));
    let dot = ctx.compose(&["plan", "spec.kdl", "--dot"]);
    assert_success(&dot, "plan --dot");
    let text = String::from_utf8_lossy(&dot.stdout);
    assert!(text.starts_with("digraph plan {"), "{text}");
    assert_eq!(text.matches(" -> ").count(), 2, "{text}");
}

#[test]
fn multi_platform_spec_gives_an_index_and_shares_layers() {
    let ctx = TestContext::new();
    ctx.write("spec.kdl", "image \"mp\" {\n    platforms \"linux/amd64\" \"linux/arm64\"\n    files { text \"/x\" \"x\" }\n}\n");
    let v = ctx.build_json(&["spec.kdl"]);
    // One shared layer, two images, one index.
    assert_eq!(counts(&v), (4, 4, 0, 0), "{v}");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(ctx.path("out/mp/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["mediaType"], "application/vnd.oci.image.index.v1+json");
    let digest = index["manifests"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let inner: serde_json::Value = serde_json::from_slice(&fs::read(ctx.path(&format!("out/mp/blobs/sha256/{digest}"))).unwrap()).unwrap();
    let archs: Vec<&str> = inner["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap()).collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    run(std::process::Command::new("oci-image-tool").args(["validate", "--type", "image"]).arg(ctx.path("out/mp")));
}
