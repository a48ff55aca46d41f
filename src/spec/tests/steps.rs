//! Steps: what they decode to, their errors, cycles through steps and images,
//! and their limits, secrets and host mounts.

use super::*;

const STEPS: &str = r#"image "go-builder" {
    export #false
    repository "debian" suite="bookworm" components="main"
    packages "golang-go" "ca-certificates"
}
step "app-bin" {
    image "go-builder"
    copy "src/" to="/src"
    workdir "/src"
    env CGO_ENABLED="0"
    run "go" "build" "-trimpath" "-o" "/out/app" "."
    output "/out"
}
step "wheels" {
    image "go-builder"
    copy from="app-bin" "/out/app" to="/in/app" mode=0o755
    run "true"
    run "sh" "-c" "echo more"
    output "/out"
    network #true
    pass-env "PIP_INDEX_URL"
    user "1000:1000"
}
image "app" {
    files {
        copy from="app-bin" "/out/app" to="/usr/local/bin/app" mode=0o755
        copy from="go-builder" "/usr/share/doc" to="/doc/"
    }
}
"#;

#[test]
fn steps_decode() {
    let spec = parse_ok(STEPS);
    assert_eq!(spec.images.len(), 2);
    assert!(!spec.image("go-builder").unwrap().export && spec.image("app").unwrap().export);
    let step = spec.step("app-bin").unwrap();
    assert_eq!(step.image.0, "go-builder");
    assert_eq!(step.runs, [vec!["go", "build", "-trimpath", "-o", "/out/app", "."]]);
    assert_eq!((step.workdir.as_deref(), step.output.as_str(), step.network, step.user), (Some("/src"), "/out", false, (0, 0)));
    assert_eq!(step.env, [("CGO_ENABLED".to_string(), "0".to_string())]);
    let wheels = spec.step("wheels").unwrap();
    assert_eq!((wheels.runs.len(), wheels.network, wheels.user), (2, true, (1000, 1000)));
    assert_eq!(wheels.pass_env, ["PIP_INDEX_URL"]);
    let FileOp::Copy { from: Some((from, at)), src, mode, .. } = &wheels.inputs[0] else { panic!("copy from") };
    assert_eq!((from.as_str(), src.as_str(), *mode), ("app-bin", "/out/app", Some(0o755)));
    assert_eq!(span_text(&spec, *at), "\"app-bin\"");
    assert_eq!(spec.uses("app"), ["app-bin", "go-builder"]);
    assert_eq!(spec.uses("wheels"), ["go-builder", "app-bin"]);
    let app = spec.image("app").unwrap();
    let needed: Vec<&str> = spec.images_needed(&[app]).iter().map(|i| i.name.as_str()).collect();
    assert_eq!(needed, ["app", "go-builder"]);
}

#[test]
fn step_errors() {
    check(
        "spec_step_errors",
        r#"image "b" { }
step "s" {
    image "nope"
    run
    output "/"
    pass-env "X"
    shell "x"
}
step "t" {
    copy from="b" "relative" to="/x"
}
image "c" {
    files {
        copy from="s" "/elsewhere/x" to="/x"
        copy from="ghost" "/x" to="/y"
    }
    export "no"
}
step "b" { image "b"; run "true"; output "/out"; }
"#,
        &[
            "pass_env_hermetic",
            "missing_argument",
            "bad_path",
            "unknown_node",
            "missing_node",
            "missing_node",
            "missing_node",
            "bad_path",
            "unknown_from",
            "unknown_from",
            "wrong_type",
            "duplicate_name",
            "step_cycle",
        ],
    );
}

#[test]
fn steps_and_images_in_a_cycle_are_refused() {
    let e = parse_err(
        r#"image "builder" {
    files { copy from="s" "/out/x" to="/x" }
}
step "s" {
    image "builder"
    run "true"
    output "/out"
}
"#,
    );
    assert_eq!(codes(&e), ["step_cycle"]);
    assert!(e.diagnostics()[0].to_string().contains("s -> builder -> s"), "{}", e.diagnostics()[0]);
}

const LIMITS: &str = r#"
image "b" { }
step "fetch" {
    image "b"
    run "true"
    output "/out"
    network #true
    pass-env "HOME"
    limits { pids 512; memory "2GiB"; cpus 1.5; time "1h30m"; disk "10GB" }
    secret "npm-token" env="NPM_TOKEN"
    secret "netrc" target="/root/.netrc" required=#false
    secret "plain"
    mount-from-host "/run/agent.sock" to="/run/agent.sock"
}
"#;

#[test]
fn step_limits_secrets_and_host_mounts_decode() {
    let spec = parse_ok(LIMITS);
    let s = spec.step("fetch").unwrap();
    let l = &s.limits;
    assert_eq!(
        (l.pids, l.memory, l.millicpus, l.time, l.disk),
        (Some(512), Some(2 << 30), Some(1500), Some(5400 * 1_000_000_000), Some(10_000_000_000))
    );
    let secrets: Vec<(&str, Option<&str>, Option<&str>, bool)> =
        s.secrets.iter().map(|x| (x.id.as_str(), x.env.as_deref(), x.target.as_deref(), x.required)).collect();
    assert_eq!(
        secrets,
        [
            ("npm-token", Some("NPM_TOKEN"), None, true),
            ("netrc", None, Some("/root/.netrc"), false),
            ("plain", None, Some("/run/secrets/plain"), true)
        ]
    );
    assert_eq!(s.host_mounts, [("/run/agent.sock".to_string(), "/run/agent.sock".to_string())]);
    // No limits: all defaults.
    assert_eq!(spec_step_limits_default(), crate::spec::StepLimits::default());
}

fn spec_step_limits_default() -> crate::spec::StepLimits {
    parse_ok("image \"b\" { }\nstep \"s\" { image \"b\"; run \"true\"; output \"/out\"; }").step("s").unwrap().limits.clone()
}

#[test]
fn step_limits_secrets_and_host_mounts_are_checked() {
    check(
        "spec_step_limits_errors",
        r#"image "b" { }
step "s" {
    image "b"
    run "true"
    output "/out"
    limits {
        pids 2
        memory "4 gigs"
        cpus "two"
        time "5"
        disk 0
        proc 9
    }
    limits { pids 10 }
    secret "a b"
    secret "ok" env="A=B"
    secret "dup"
    secret "dup"
    secret "rel" target="relative"
    mount-from-host "relative" to="/x"
    mount-from-host "/etc/shadow" to="/x"
}
"#,
        &[
            "host_mount_hermetic",
            "out_of_range",
            "bad_size",
            "wrong_type",
            "bad_duration",
            "wrong_type",
            "unknown_node",
            "duplicate_node",
            "bad_secret",
            "bad_env",
            "duplicate_secret",
            "bad_path",
            "bad_path",
        ],
    );
}

#[test]
fn step_caches_and_the_build_block_decode() {
    let spec = parse_ok(
        r#"build { max-layers 8; compression "zstd"; epoch 1700000000; }
image "b" { }
image "own" { compression "gzip"; epoch 5; }
step "s" {
    image "b"
    copy "src" to="/src"
    cache "/root/.cargo/registry" "/src/target" sharing="shared"
    cache "/var/cache/go"
    run "true"
    output "/out"
}
"#,
    );
    let s = spec.step("s").unwrap();
    let caches: Vec<(&str, crate::spec::Sharing)> = s.caches.iter().map(|c| (c.path.as_str(), c.sharing)).collect();
    use crate::spec::Sharing::*;
    assert_eq!(caches, [("/root/.cargo/registry", Shared), ("/src/target", Shared), ("/var/cache/go", Locked)]);
    assert_eq!(spec.build.max_layers, Some(8));
    let b = spec.image("b").unwrap();
    assert_eq!((b.compression, b.epoch), (crate::layer::Compression::Zstd, Some(1_700_000_000)));
    let own = spec.image("own").unwrap();
    assert_eq!((own.compression, own.epoch), (crate::layer::Compression::Gzip, Some(5)));
}

#[test]
fn step_places_under_tmp_and_overlapping_caches_are_refused() {
    check(
        "spec_step_places",
        r#"build { max-layers 1; jobs 2; }
build { }
image "b" { }
step "s" {
    image "b"
    copy "src" to="/tmp/src"
    text "/src/target/x" "hidden by the cache"
    cache "/tmp/cache"
    cache "/src/target" "/src/target"
    cache "/out/cache"
    cache "/a" "/a/b" sharing="sometimes"
    run "true"
    output "/tmp/out"
}
"#,
        &[
            "bad_max_layers",
            "unknown_node",
            "duplicate_node",
            "reserved_path",
            "reserved_path",
            "cache_overlap",
            "duplicate_cache",
            "bad_sharing",
            "reserved_path",
        ],
    );
}
