//! Every diagnostic of the decoder, each snapshotted as rendered, and how
//! reports render: spans after non-ASCII text, a single error, errors from
//! later stages, and short errors for deep nesting and huge values.

use super::*;

#[test]
fn kdl_syntax_error() {
    check("spec_syntax", "image \"web\" {\n    tag 1.\n    cmd \"unterminated\n}\n", &["syntax", "syntax"]);
}

#[test]
fn unknown_node() {
    check(
        "spec_unknown_node",
        r#"image "web" {
    tga "1.0"
    files {
        coppy "site/" to="/srv/www"
        frobnicate "x"
    }
    env TZ="UTC"
}
imag "other"
"#,
        &["unknown_node", "unknown_node", "unknown_node", "misplaced_node", "unknown_node"],
    );
}

#[test]
fn unknown_property() {
    check(
        "spec_unknown_property",
        r#"image "web" {
    files {
        copy "site/" to="/srv" mdoe=0o644
        dir "/var/x" colour="red"
    }
    tag "1" latest=#true
    accounts {
        user "app" uid=1 homedir="/app"
    }
}
"#,
        &["unknown_property", "unknown_property", "unknown_property", "unknown_property"],
    );
}

#[test]
fn wrong_type() {
    check(
        "spec_wrong_type",
        r#"image "web" {
    tag 1
    epoch "1700000000"
    platforms #true
    accounts {
        group "app" gid="10"
    }
    config {
        env PORT=8080
        expose 1.5
        cmd "--port" 8080
    }
}
"#,
        &["wrong_type"; 7],
    );
}

#[test]
fn missing_arguments_and_properties() {
    check(
        "spec_missing",
        r#"image {
    tag
    files {
        copy "site/"
        text "/etc/motd"
        symlink "/bin/sh"
    }
    repository "debian" suite="bookworm"
    accounts {
        user "app"
    }
    config {
        entrypoint
        env
    }
}
"#,
        &[
            "missing_argument",
            "missing_argument",
            "missing_property",
            "missing_argument",
            "missing_property",
            "missing_property",
            "missing_property",
            "missing_argument",
            "missing_property",
        ],
    );
}

#[test]
fn too_many_arguments() {
    check(
        "spec_too_many_arguments",
        r#"image "web" "extra" {
    tag "a" "b" "c"
    files "x" {
        dir "/a" "/b"
    }
    config {
        workdir "/srv" "/tmp"
        env "PATH" PATH="/bin"
    }
}
"#,
        &["too_many_arguments"; 6],
    );
}

#[test]
fn duplicates_of_singletons_and_properties() {
    check(
        "spec_duplicate_node",
        r#"image "web" {
    tag "1"
    config {
        cmd "a"
    }
    tag "2"
    config {
        cmd "b"
    }
    files {
        copy "a" to="/a" mode=0o644 mode=0o600
    }
    platforms "linux/amd64" "linux/amd64"
    config
}
"#,
        &["duplicate_node", "duplicate_node", "duplicate_property", "duplicate_platform", "duplicate_node"],
    );
}

#[test]
fn bad_modes() {
    check(
        "spec_bad_mode",
        r#"image "web" {
    files {
        text "/a" "x" mode=755
        text "/b" "x" mode=0o17777
        dir "/c" mode="0755"
        dir "/d" mode=0x1ed
        copy "e" to="/e" dir-mode=-1
        dir "/f" mode=0
        dir "/g" mode=0o750
        dir "/h" mode=999
        dir "/i" mode=0b111111
    }
}
"#,
        &["bad_mode", "bad_mode", "wrong_type", "bad_mode", "bad_mode", "bad_mode", "bad_mode"],
    );
}

#[test]
fn bad_paths() {
    check(
        "spec_bad_path",
        r#"image "web" {
    files {
        copy "site/" to="srv/www"
        text "/etc/../passwd" "x"
        dir "/var//cache"
        symlink "/./bin" target="busybox"
        text "/" "x"
    }
    accounts {
        user "app" uid=1 home="home/app"
    }
    config {
        workdir "srv"
        volume "/data" "relative"
    }
}
"#,
        &["bad_path"; 8],
    );
}

#[test]
fn copy_source_escapes() {
    check(
        "spec_source_escapes",
        r#"image "web" {
    files {
        copy "../secret" to="/x"
        copy "a/../../b" to="/y"
        copy "a/../b" to="/ok"
        copy "/etc/hosts" to="/etc/hosts"
        copy "" to="/empty"
    }
}
"#,
        &["source_escapes", "source_escapes", "bad_source"],
    );
}

#[test]
fn duplicate_image() {
    check(
        "spec_duplicate_image",
        r#"image "web" {
    tag "1"
}
image "api"
image "web" {
    tag "2"
}
"#,
        &["duplicate_image"],
    );
}

#[test]
fn duplicate_layer_and_bad_names() {
    check(
        "spec_duplicate_layer",
        r#"image "web" {
    layer "assets" {
        copy "a" to="/a"
    }
    layer "code"
    layer "assets" {
        copy "b" to="/b"
    }
    layer "two words"
}
image "-web"
"#,
        &["duplicate_layer", "bad_name", "bad_name"],
    );
}

#[test]
fn duplicate_accounts() {
    check(
        "spec_duplicate_accounts",
        r#"image "web" {
    accounts {
        group "app" gid=10001
        group "app" gid=10002
        group "other" gid=10001
        user "app" uid=10001
        user "app" uid=10002
        user "svc" uid=10001 gid=20000
        user "ok" uid=10003 gid=20000
        user "root!" uid=-1
    }
}
"#,
        &["duplicate_account", "duplicate_account", "duplicate_account", "duplicate_account", "bad_name", "out_of_range"],
    );
}

#[test]
fn bad_owners() {
    check(
        "spec_bad_owner",
        r#"image "web" {
    files {
        dir "/a" owner="99999999999"
        dir "/b" owner="app:staff"
        dir "/b2" owner="app:"
        dir "/c" owner="bad name"
        dir "/d" owner="1000:"
        dir "/e" owner="0:0"
        dir "/f" owner="app"
        dir "/g" owner="1:99999999999"
    }
}
"#,
        &["bad_owner"; 5],
    );
}

#[test]
fn bad_platforms() {
    check(
        "spec_bad_platform",
        r#"image "web" {
    platforms "linux/amd46" "linx/amd64" "linux" "linux/arm/v9" "linux/x86_64" "linux/s390x/v1" "linux/arm64"
}
"#,
        &["bad_platform"; 6],
    );
}

#[test]
fn bad_expose() {
    check(
        "spec_bad_port",
        r#"image "web" {
    config {
        expose 0 70000 "53/icmp" "http" "8080/TCP" 8080 "0/udp" #false
    }
}
"#,
        &["bad_port", "bad_port", "bad_port", "bad_port", "bad_port", "wrong_type"],
    );
}

#[test]
fn bad_env_and_labels() {
    check(
        "spec_bad_env",
        r#"image "web" {
    config {
        env ""="x" "A=B"="y" PATH="/bin"
        env PORT=8080
        label ""="x"
        label
    }
}
"#,
        &["bad_env", "bad_env", "wrong_type", "bad_label", "missing_property"],
    );
}

#[test]
fn bad_base_references() {
    check(
        "spec_bad_base",
        r#"image "a" { base "debian"; }
image "b" { base "docker.io/library/debian"; }
image "c" { base "docker.io/library/debian@sha256:1234"; }
image "d" { base "oci:"; }
image "e" { base "https://example.invalid/x:1"; }
image "f" { base "docker.io/Library/Debian:12"; }
image "g" { base "docker.io/library/debian:bookworm" image="a"; }
image "h" { base "oci:layout:-bad"; }
image "i" { base; }
"#,
        &["bad_base"; 8].iter().copied().chain(["missing_argument"]).collect::<Vec<_>>(),
    );
}

#[test]
fn base_image_references() {
    check(
        "spec_base_image",
        r#"image "web" { base image="web"; }
image "api" { base image="wbe"; }
image "x" { base image="y"; }
image "y" { base image="z"; }
image "z" { base image="x"; }
image "ok" { base image="web"; }
"#,
        &["self_base", "unknown_image", "base_cycle"],
    );
}

#[test]
fn packages_tags_users_signals() {
    check(
        "spec_bad_values",
        r#"image "web" {
    tag "-bad"
    repository "debian" suite="bookworm" components="  "
    packages "busybox" "BusyBox" "curl=7.88" "curl" "x=" "libc6=abc"
    config {
        user "app:"
        stop-signal "TERM"
    }
}
"#,
        &["bad_tag", "bad_value", "bad_package", "duplicate_package", "bad_package", "bad_package", "bad_user", "bad_signal"],
    );
}

#[test]
fn children_and_type_annotations() {
    check(
        "spec_unexpected_children",
        r#"image "web" {
    tag "1" {
        latest
    }
    (u8)epoch 5
    files {
        dir (path)"/x" {}
    }
}
"#,
        &["unexpected_children", "type_annotation", "unexpected_children", "type_annotation"],
    );
}

#[test]
fn no_images() {
    check("spec_no_images", "// nothing here\n", &["no_images"]);
}

#[test]
fn spans_are_bytes_after_non_ascii() {
    let text = "image \"web\" {\n    files {\n        text \"/etc/motd\" \"héllo wörld ✓\" mode=644\n    }\n}\n";
    let e = parse_err(text);
    assert_eq!(codes(&e), ["bad_mode"]);
    let span = e.diagnostics()[0].primary_span().expect("span");
    assert_eq!(&text[span.offset()..span.offset() + span.len()], "644");
    snapshot("spec_non_ascii", &render(&e));
}

#[test]
fn single_error_renders_flat() {
    let e = parse_err("image \"web\" {\n    tga \"1\"\n}\n");
    assert_eq!(e.to_string(), "unknown node `tga` in `image`");
    assert_eq!(e.code().map(|c| c.to_string()).as_deref(), Some("compose::spec::unknown_node"));
    let e = parse_err("image \"web\" {\n    tga \"1\"\n    tga \"2\"\n}\n");
    assert_eq!(e.to_string(), "2 errors in spec file `web.kdl`");
    assert_eq!(e.code().map(|c| c.to_string()).as_deref(), Some("compose::spec::invalid"));
    // Usable with `?` in code returning miette::Result.
    let report: miette::Report = e.into();
    assert_eq!(report.to_string(), "2 errors in spec file `web.kdl`");
}

#[test]
fn later_stage_errors() {
    let spec = parse_ok(EXAMPLE);
    let img = spec.image("web").expect("web");
    let FileOp::Copy { src_span, .. } = &img.files[1] else { panic!("expected copy") };
    let e = spec.error_at(
        *src_span,
        "copy source `bin/server` does not exist",
        "no such file",
        Some("paths are relative to the spec directory `.`".to_owned()),
    );
    snapshot("spec_error_at", &render(&e));
    let owner = img.files[4].owner().expect("owner").span;
    let diags = vec![
        spec.diagnostic("compose::build::unknown_owner", owner, "unknown owner `app`", "not a user of the image", None),
        spec.diagnostic("compose::build::missing_source", *src_span, "copy source `bin/server` does not exist", "no such file", None),
    ];
    let e = spec.report(diags).expect_err("two diagnostics");
    assert_eq!(codes(&e), ["compose::build::missing_source", "compose::build::unknown_owner"]);
    snapshot("spec_report", &render(&e));
    assert!(spec.report(Vec::new()).is_ok());
}

/// Deep nesting once overflowed the stack (exit 134) and a 10 MiB value gave 55 MiB of error
/// text. Nesting is bounded with a located error; echoed values and shown source lines are cut
/// (a 10 MiB value gives a few lines of error).
#[test]
fn deeply_nested_specs_and_huge_values_give_short_clear_errors() {
    let deep_nodes = format!("image \"x\" {}{}", "{ a ".repeat(5000), "}".repeat(5000));
    let e = parse_err(&deep_nodes);
    assert_eq!(codes(&e), ["too_deep"]);
    let text = render(&e);
    assert!(text.contains("children blocks nested more than 32 deep") && text.contains("web.kdl:1:"), "{text}");
    let deep_comments = format!("image \"x\" {{}}\n{}{}", "/* ".repeat(10_000), "*/ ".repeat(10_000));
    assert_eq!(codes(&parse_err(&deep_comments)), ["too_deep"]);
    // Braces and comment openers inside strings and raw strings are not nesting.
    let in_strings = format!(
        "image \"x\" {{\n    files {{ text \"/a\" \"{}\"\n    text \"/b\" #\"{}\"#\n    text \"/c\" \"\"\"\n{}\n\"\"\" }}\n}}\n",
        "{".repeat(100),
        "/*{\"".repeat(100),
        "{".repeat(100)
    );
    parse_ok(&in_strings);
    // Nesting that is fine stays fine: 32 levels of (unknown) children are decoded as usual.
    assert!(!codes(&parse_err(&format!("image \"x\" {}{}", "{ a ".repeat(31), "}".repeat(31)))).contains(&"too_deep"));

    let huge = format!("image \"x\" {{\n    tag \"{}\"\n}}\n", "a".repeat(10 << 20));
    let e = parse_err(&huge);
    let text = render(&e);
    assert_eq!(codes(&e), ["bad_tag"]);
    assert!(text.len() < 4096, "{} bytes of error", text.len());
    assert!(text.contains("web.kdl:2:9") && text.contains('…'), "{text}");
}
