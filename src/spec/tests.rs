//! Tests of the spec language: decoding, every diagnostic (snapshotted under
//! `snapshots/`), spans, and reading files.

use miette::Diagnostic;

use super::decode::{CONFIG_CHILDREN, FILE_CHILDREN, IMAGE_CHILDREN};
use super::values::suggest;
use super::*;

/// The example from the language description, verbatim.
const EXAMPLE: &str = r#"image "web" {
    tag "1.4.2"                                  // default "latest"
    platforms "linux/amd64" "linux/arm64"        // default: linux/amd64 (also accept variants like linux/arm/v7)
    base "scratch"                               // default scratch; or "REGISTRY/REPO:TAG", "...@sha256:<64hex>", "oci:PATH[:TAG]", "oci-archive:PATH", "docker-archive:PATH", or base image="NAME" (another image of this file)
    epoch 1700000000                             // u64 seconds
    repository "debian" suite="bookworm" components="main" keyring="/usr/share/keyrings/debian-archive-keyring.gpg"  // components: space-separated string; keyring optional
    packages "busybox-static" "ca-certificates"  // may repeat; "name=version" pins a version
    accounts {
        group "app" gid=10001                    // optional members="a b"? (accept optional `members` list as space-separated string)
        user "app" uid=10001 gid=10001 home="/home/app" shell="/bin/sh"   // gid, home, shell optional (defaults: gid=uid, home="/home/NAME", shell="/sbin/nologin"); optional gecos="..."
    }
    files {
        copy "site/" to="/srv/www"                             // a directory, recursively (or a file)
        copy "bin/server" to="/usr/local/bin/server" mode=0o755
        text "/etc/motd" "built with compose\n" mode=0o644
        symlink "/bin/sh" target="/bin/busybox"
        dir "/var/cache/app" mode=0o750 owner="app"
    }
    layer "assets" {                             // same children as files; its files go in a layer of their own; names unique within the image
        copy "assets/" to="/srv/assets"
    }
    config {
        env PATH="/usr/local/bin:/usr/bin:/bin" TZ="Etc/UTC"   // properties; may repeat; keep order; later same name replaces
        workdir "/srv"
        user "app"                                             // a name, "uid", or "uid:gid"
        entrypoint "/usr/local/bin/server"                     // 1+ string args
        cmd "--port" "8080"                                    // 0+ string args (cmd with no args = explicit empty cmd)
        expose 8080 "53/udp"                                   // ints or "PORT[/tcp|/udp|/sctp]"; normalize to "8080/tcp"
        volume "/data"                                         // 1+ absolute paths
        label "org.opencontainers.image.source"="https://example.invalid/web"   // properties, may repeat
        stop-signal "SIGTERM"
    }
}
"#;

fn render(diagnostic: &dyn Diagnostic) -> String {
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, diagnostic)
        .expect("rendering into a String does not fail");
    out
}

fn parse_err(text: &str) -> SpecError {
    match parse_str(Path::new("web.kdl"), text) {
        Ok(spec) => panic!("expected errors, parsed {} image(s)", spec.images.len()),
        Err(e) => e,
    }
}

fn parse_ok(text: &str) -> SpecFile {
    match parse_str(Path::new("web.kdl"), text) {
        Ok(spec) => spec,
        Err(e) => panic!("expected success:\n{}", render(&e)),
    }
}

fn codes(e: &SpecError) -> Vec<&'static str> {
    e.diagnostics().iter().map(|d| d.code.trim_start_matches("compose::spec::")).collect()
}

/// Snapshot at `src/spec/snapshots/<name>.snap` whatever the module path.
fn snapshot(name: &str, value: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, value));
}

/// Parses `text`, expects exactly the error codes `expected` (in source
/// order) and snapshots the rendered report.
fn check(name: &str, text: &str, expected: &[&str]) {
    let e = parse_err(text);
    assert_eq!(codes(&e), expected, "\n{}", render(&e));
    snapshot(name, &render(&e));
}

fn span_text(spec: &SpecFile, span: SourceSpan) -> &str {
    &spec.text()[span.offset()..span.offset() + span.len()]
}

#[test]
fn example_decodes() {
    let spec = parse_ok(EXAMPLE);
    assert_eq!(spec.path, Path::new("web.kdl"));
    assert_eq!(spec.dir, Path::new("."));
    assert_eq!(spec.images.len(), 1);
    let img = spec.image("web").expect("image web");
    assert_eq!(img.name, "web");
    assert_eq!(span_text(&spec, img.span), "image \"web\"");
    assert_eq!(img.tag, "1.4.2");
    let platforms: Vec<String> = img.platforms.iter().map(|p| p.to_string()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(img.base, Base::Scratch);
    assert_eq!(img.epoch, Some(1_700_000_000));

    assert_eq!(img.repositories.len(), 1);
    let repo = &img.repositories[0];
    assert_eq!(repo.name, "debian");
    assert_eq!(repo.suite, "bookworm");
    assert_eq!(repo.components, ["main"]);
    assert_eq!(repo.keyring.as_deref(), Some("/usr/share/keyrings/debian-archive-keyring.gpg"));
    assert!(span_text(&spec, repo.span).starts_with("repository \"debian\" suite="));
    assert!(span_text(&spec, repo.span).ends_with(".gpg\""));

    let pkgs: Vec<(&str, Option<&str>)> = img.packages.iter().map(|p| (p.name.as_str(), p.version.as_deref())).collect();
    assert_eq!(pkgs, [("busybox-static", None), ("ca-certificates", None)]);
    assert_eq!(span_text(&spec, img.packages[1].span), "\"ca-certificates\"");

    let acc = img.accounts.as_ref().expect("accounts");
    assert_eq!(span_text(&spec, acc.span), "accounts");
    assert_eq!(acc.groups.len(), 1);
    assert_eq!((acc.groups[0].name.as_str(), acc.groups[0].gid, acc.groups[0].members.len()), ("app", 10001, 0));
    assert_eq!(span_text(&spec, acc.groups[0].span), "group \"app\" gid=10001");
    let u = &acc.users[0];
    assert_eq!(
        (u.name.as_str(), u.uid, u.gid, u.home.as_str(), u.shell.as_str(), u.gecos.as_str()),
        ("app", 10001, 10001, "/home/app", "/bin/sh", "")
    );

    assert_eq!(img.files.len(), 5);
    match &img.files[0] {
        FileOp::Copy { src, src_span, to, to_dir, mode, dir_mode, owner, span, from: None } => {
            assert_eq!((src.as_str(), to.as_str(), *to_dir), ("site/", "/srv/www", false));
            assert_eq!((*mode, *dir_mode, owner), (None, None, &None));
            assert_eq!(span_text(&spec, *src_span), "\"site/\"");
            assert_eq!(span_text(&spec, *span), "copy \"site/\" to=\"/srv/www\"");
        }
        other => panic!("expected copy, got {other:?}"),
    }
    match &img.files[1] {
        FileOp::Copy { src, to, mode, .. } => {
            assert_eq!((src.as_str(), to.as_str(), *mode), ("bin/server", "/usr/local/bin/server", Some(0o755)));
        }
        other => panic!("expected copy, got {other:?}"),
    }
    match &img.files[2] {
        FileOp::Text { path, content, mode, owner, .. } => {
            assert_eq!((path.as_str(), content.as_str(), *mode, owner), ("/etc/motd", "built with compose\n", Some(0o644), &None));
        }
        other => panic!("expected text, got {other:?}"),
    }
    match &img.files[3] {
        FileOp::Symlink { path, target, owner, .. } => {
            assert_eq!((path.as_str(), target.as_str(), owner), ("/bin/sh", "/bin/busybox", &None));
        }
        other => panic!("expected symlink, got {other:?}"),
    }
    match &img.files[4] {
        FileOp::Dir { path, mode, owner, .. } => {
            assert_eq!((path.as_str(), *mode), ("/var/cache/app", Some(0o750)));
            let owner = owner.as_ref().expect("owner");
            assert_eq!(owner.owner, Owner::Name("app".to_owned()));
            assert_eq!(span_text(&spec, owner.span), "\"app\"");
        }
        other => panic!("expected dir, got {other:?}"),
    }

    assert_eq!(img.layers.len(), 1);
    assert_eq!(img.layers[0].name, "assets");
    assert_eq!(span_text(&spec, img.layers[0].span), "layer \"assets\"");
    assert!(matches!(
        img.layers[0].ops.as_slice(),
        [FileOp::Copy { src, to, .. }] if src == "assets/" && to == "/srv/assets"
    ));

    let c = &img.config;
    assert_eq!(c.env, [("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()), ("TZ".to_owned(), "Etc/UTC".to_owned())]);
    assert_eq!(c.workdir.as_deref(), Some("/srv"));
    let (user, user_span) = c.user.as_ref().expect("user");
    assert_eq!(user, "app");
    assert_eq!(span_text(&spec, *user_span), "\"app\"");
    assert_eq!(c.entrypoint.as_deref(), Some(&["/usr/local/bin/server".to_owned()][..]));
    assert_eq!(c.cmd.as_deref(), Some(&["--port".to_owned(), "8080".to_owned()][..]));
    assert_eq!(c.expose, ["8080/tcp", "53/udp"]);
    assert_eq!(c.volumes, ["/data"]);
    assert_eq!(c.labels.get("org.opencontainers.image.source").map(String::as_str), Some("https://example.invalid/web"));
    assert_eq!(c.labels.len(), 1);
    assert_eq!(c.stop_signal.as_deref(), Some("SIGTERM"));
}

#[test]
fn defaults_and_normalization() {
    let spec = parse_ok(
        r#"
image "min" {
    repository "debian" suite="bookworm" components="main"
}
image "app" {
    base image="min"
    platforms "linux/arm/v7" "linux/arm64/v8"
    packages "curl=7.88.1-10+deb12u5"
    packages "libc6"
    accounts {
        group "staff" gid=50 members="alice  bob"
        user "alice" uid=1000 gecos="Alice A"
        user "bob" uid=1001 gid=4242
    }
    files {
        copy "conf" to="/etc/app/"
        copy "." to="/"
        text "/srv/x/" ""
        dir "/" mode=0 owner="0:0"
        dir "/opt/" mode=7
    }
    files {
        symlink "/usr/bin/python" target="python3" owner="1:2"
    }
    config {
        env A="1" B="2"
        env A="3"
        label "x"="1"
        label "x"="2"
        cmd
        expose "8080" "8080/TCP" 8080 "9/sctp"
        volume "/data/" "/data"
        user "1000:1000"
        stop-signal "9"
    }
}
image "c" { base "registry.example.invalid:5000/team/app:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; }
image "d" { base "oci:layouts/app:v2"; }
image "e" { base "oci:/abs/layout"; }
image "f" { base "oci-archive:app.tar"; }
image "g" { base "docker-archive:app.tar"; }
image "h" { base "localhost/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; }
"#,
    );
    let min = spec.image("min").expect("min");
    assert_eq!(min.tag, "latest");
    assert_eq!(min.platforms, [Platform::linux_amd64()]);
    assert_eq!(min.base, Base::Scratch);
    assert_eq!(min.epoch, None);
    assert!(min.accounts.is_none() && min.files.is_empty() && min.layers.is_empty());
    assert_eq!(min.config, ConfigSpec::default());

    let app = spec.image("app").expect("app");
    assert!(matches!(&app.base, Base::Image { name, span } if name == "min" && span_text(&spec, *span) == "\"min\""));
    let platforms: Vec<String> = app.platforms.iter().map(|p| p.to_string()).collect();
    assert_eq!(platforms, ["linux/arm/v7", "linux/arm64/v8"]);
    assert_eq!(app.platforms[0].variant.as_deref(), Some("v7"));
    assert_eq!(app.packages[0].version.as_deref(), Some("7.88.1-10+deb12u5"));
    assert_eq!(app.packages[1].name, "libc6");
    let acc = app.accounts.as_ref().expect("accounts");
    assert_eq!(acc.groups[0].members, ["alice", "bob"]);
    let alice = &acc.users[0];
    assert_eq!(
        (alice.gid, alice.home.as_str(), alice.shell.as_str(), alice.gecos.as_str()),
        (1000, "/home/alice", "/sbin/nologin", "Alice A")
    );
    // A gid that names no group of the block is fine.
    assert_eq!((acc.users[1].name.as_str(), acc.users[1].gid), ("bob", 4242));
    let ops: Vec<String> = app
        .files
        .iter()
        .map(|op| match op {
            FileOp::Copy { src, to, to_dir, .. } => format!("copy {src} {to} {to_dir}"),
            FileOp::Text { path, content, .. } => format!("text {path} {content:?}"),
            FileOp::Symlink { path, target, owner, .. } => {
                format!("symlink {path} {target} {:?}", owner.as_ref().map(|o| &o.owner))
            }
            FileOp::Dir { path, mode, owner, .. } => {
                format!("dir {path} {mode:?} {:?}", owner.as_ref().map(|o| &o.owner))
            }
        })
        .collect();
    assert_eq!(
        ops,
        [
            "copy conf /etc/app true",
            "copy . / true",
            "text /srv/x \"\"",
            "dir / Some(0) Some(Ids(0, 0))",
            "dir /opt Some(7) None",
            "symlink /usr/bin/python python3 Some(Ids(1, 2))",
        ]
    );
    let c = &app.config;
    assert_eq!(c.env, [("A".to_owned(), "3".to_owned()), ("B".to_owned(), "2".to_owned())]);
    assert_eq!(c.labels.get("x").map(String::as_str), Some("2"));
    assert_eq!(c.cmd, Some(Vec::new()));
    assert_eq!(c.entrypoint, None);
    assert_eq!(c.expose, ["8080/tcp", "9/sctp"]);
    assert_eq!(c.volumes, ["/data"]);
    assert_eq!(c.user.as_ref().map(|u| u.0.as_str()), Some("1000:1000"));
    assert_eq!(c.stop_signal.as_deref(), Some("9"));

    assert!(
        matches!(&spec.image("c").expect("c").base, Base::Registry { reference, .. } if reference.starts_with("registry.example.invalid:5000/team/app:v1@sha256:"))
    );
    assert!(matches!(&spec.image("d").expect("d").base, Base::OciLayout { path, tag: Some(t), .. } if path == "layouts/app" && t == "v2"));
    assert!(matches!(&spec.image("e").expect("e").base, Base::OciLayout { path, tag: None, .. } if path == "/abs/layout"));
    assert!(matches!(&spec.image("f").expect("f").base, Base::OciArchive { path, .. } if path == "app.tar"));
    assert!(matches!(&spec.image("g").expect("g").base, Base::DockerArchive { path, .. } if path == "app.tar"));
    assert!(matches!(&spec.image("h").expect("h").base, Base::Registry { .. }));
}

#[test]
fn suggestions() {
    assert_eq!(suggest("tga", IMAGE_CHILDREN), Some("tag"));
    assert_eq!(suggest("platform", IMAGE_CHILDREN), Some("platforms"));
    assert_eq!(suggest("package", IMAGE_CHILDREN), Some("packages"));
    assert_eq!(suggest("cp", FILE_CHILDREN), Some("copy"));
    assert_eq!(suggest("stopsignal", CONFIG_CHILDREN), Some("stop-signal"));
    assert_eq!(suggest("entry-point", CONFIG_CHILDREN), Some("entrypoint"));
    assert_eq!(suggest("volumes", CONFIG_CHILDREN), Some("volume"));
    assert_eq!(suggest("dirmode", &["to", "mode", "dir-mode", "owner"]), Some("dir-mode"));
    assert_eq!(suggest("homedir", &["uid", "gid", "home", "shell", "gecos"]), Some("home"));
    assert_eq!(suggest("frobnicate", FILE_CHILDREN), None);
    assert_eq!(suggest("from", IMAGE_CHILDREN), None);
    assert_eq!(suggest("x", FILE_CHILDREN), None);
}

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

#[test]
fn parse_file_reads_and_names_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("web.kdl");
    std::fs::write(&path, EXAMPLE).expect("write");
    let spec = parse_file(&path).expect("parses");
    assert_eq!(spec.dir, tmp.path());
    assert_eq!(spec.source.name(), path.display().to_string());
    assert_eq!(spec.images[0].name, "web");
}

#[test]
fn non_utf8_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("bad.kdl");
    // Line 3 is `    // hé <0xff> here`: the bad byte is the 12th byte of the
    // line (the 11th character: `é` takes two bytes).
    let bytes = b"image \"web\" {\n    tag \"1\"\n    // h\xc3\xa9 \xff here\n}\n";
    std::fs::write(&path, bytes).expect("write");
    let e = parse_file(&path).expect_err("not UTF-8");
    match &e {
        SpecError::NotUtf8 { line, column, byte, .. } => {
            assert_eq!((*line, *column, *byte), (3, 12, 0xff));
        }
        other => panic!("expected NotUtf8, got {other:?}"),
    }
    let message = e.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("line 3, column 12"), "{message}");
    let shown = render(&e).replace(&tmp.path().display().to_string(), "<tmp>");
    snapshot("spec_not_utf8", &shown);
}

#[test]
fn unreadable_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = parse_file(tmp.path()).expect_err("a directory");
    assert!(matches!(e, SpecError::Read { .. }));
    let shown = render(&e).replace(&tmp.path().display().to_string(), "<tmp>");
    snapshot("spec_read_directory", &shown);

    let missing = tmp.path().join("missing.kdl");
    let e = parse_file(&missing).expect_err("missing");
    assert!(e.to_string().contains(&missing.display().to_string()));
    let shown = render(&e).replace(&tmp.path().display().to_string(), "<tmp>");
    snapshot("spec_read_missing", &shown);
}

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

/// Found by users: a spec with `debian` but not `debian-security` silently missed security
/// updates. Said once per release, naming every image.
#[test]
fn debian_without_debian_security_warns_once() {
    let k = "keyring=\"/usr/share/keyrings/debian-archive-keyring.gpg\"";
    let text = format!(
        "image \"a\" {{\n    repository \"debian\" suite=\"bookworm\" components=\"main\" {k}\n    packages \"curl\"\n}}\n\
         image \"b\" {{\n    base image=\"a\"\n    packages \"less\"\n}}\n\
         image \"c\" {{\n    repository \"debian\" suite=\"bookworm\" components=\"main\" {k}\n    \
         repository \"debian-security\" suite=\"bookworm-security\" components=\"main\" {k}\n    packages \"curl\"\n}}\n\
         image \"d\" {{\n    repository \"main\" suite=\"unstable\" components=\"main\" {k}\n    packages \"curl\"\n}}\n"
    );
    let spec = parse_ok(&text);
    let w = spec.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("`a`, `b` install from Debian `bookworm` without `bookworm-security`"), "{}", w[0]);
    // `b` inherited `a`'s repository.
    assert_eq!(spec.image("b").unwrap().repositories.len(), 1);
}

#[test]
fn variants() {
    let spec = parse_ok(
        "image \"a\" {\n    variant \"minbase\"\n    repository \"d\" suite=\"s\" components=\"main\"\n    packages \"curl\"\n}\n",
    );
    assert_eq!(spec.images[0].variant, crate::spec::Variant::Minbase);
    let e = parse_err(
        "image \"a\" {\n    variant \"minbas\"\n    repository \"d\" suite=\"s\" components=\"main\"\n    packages \"curl\"\n}\n",
    );
    assert_eq!(codes(&e), ["bad_variant"]);
    assert!(e.diagnostics()[0].help().is_some_and(|h| h.to_string().contains("did you mean `minbase`?")));
    let e = parse_err("image \"a\" {\n    variant \"essential\"\n}\n");
    assert_eq!(codes(&e), ["variant_without_packages"]);
}

#[test]
fn maintainer_scripts_modes() {
    let ok =
        "image \"a\" {\n    maintainer-scripts \"run\"\n    repository \"d\" suite=\"s\" components=\"main\"\n    packages \"curl\"\n}\n";
    assert!(parse_ok(ok).images[0].run_scripts);
    assert!(!parse_ok(&ok.replace("\"run\"", "\"emulate\"")).images[0].run_scripts);
    assert_eq!(codes(&parse_err(&ok.replace("\"run\"", "\"rn\""))), ["bad_scripts"]);
    assert_eq!(codes(&parse_err("image \"a\" {\n    maintainer-scripts \"run\"\n}\n")), ["scripts_without_packages"]);
}

/// Issue 14: `compression` takes gzip or zstd, once per image; anything else is a located error
/// naming what is known.
#[test]
fn compression_names_are_checked() {
    use crate::layer::Compression;
    assert_eq!(parse_ok("image \"a\" {\n}\n").images[0].compression, Compression::Gzip);
    assert_eq!(parse_ok("image \"a\" {\n    compression \"zstd\"\n}\n").images[0].compression, Compression::Zstd);
    assert_eq!(parse_ok("image \"a\" {\n    compression \"gzip\"\n}\n").images[0].compression, Compression::Gzip);
    let e = parse_err("image \"a\" {\n    compression \"zstdd\"\n}\n");
    assert_eq!(codes(&e), ["bad_compression"]);
    let text = render(&e);
    assert!(
        text.contains("unknown compression `zstdd`") && text.contains("web.kdl:2:17") && text.contains("did you mean `zstd`?"),
        "{text}"
    );
    assert_eq!(codes(&parse_err("image \"a\" {\n    compression \"zstd\" \"gzip\"\n}\n")).len(), 1);
    assert_eq!(codes(&parse_err("image \"a\" {\n    compression 3\n}\n")).len(), 1);
    let twice = parse_err("image \"a\" {\n    compression \"zstd\"\n    compression \"gzip\"\n}\n");
    assert_eq!(codes(&twice).len(), 1, "{}", render(&twice));
}

/// Issue 12, defect 8: deep nesting overflowed the stack (exit 134) and a 10 MiB value gave
/// 55 MiB of error text. Nesting is bounded with a located error; echoed values and shown
/// source lines are cut.
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
    let started = std::time::Instant::now();
    let e = parse_err(&huge);
    let text = render(&e);
    assert_eq!(codes(&e), ["bad_tag"]);
    assert!(text.len() < 4096, "{} bytes of error", text.len());
    assert!(text.contains("web.kdl:2:9") && text.contains('…'), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}

/// Issue 13: Docker Hub names (`debian:bookworm`) were refused ("does not name a registry").
/// Docker's rule applies: no registry host means `docker.io`, one path part means `library/`.
#[test]
fn docker_hub_names_are_refused() {
    let refs = |text: &str| -> Vec<String> {
        parse_ok(text)
            .images
            .iter()
            .map(|i| match &i.base {
                Base::Registry { reference, .. } => reference.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let text = r#"image "a" { base "debian:bookworm"; }
image "b" { base "bitnami/nginx:1.25"; }
image "c" { base "python@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; }
image "d" { base "registry.example:5000/team/app:1"; }
image "e" { base "localhost/app:1"; }
"#;
    assert_eq!(
        refs(text),
        [
            "docker.io/library/debian:bookworm",
            "docker.io/bitnami/nginx:1.25",
            "docker.io/library/python@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "registry.example:5000/team/app:1",
            "localhost/app:1",
        ]
    );
}

/// Issue 13: there were no build arguments (ARG is in 4 of 11 Dockerfiles). `arg "NAME"
/// default=` and `${NAME}` in strings; `--build-arg` overrides; undeclared or missing values
/// are errors naming the file and line.
#[test]
fn there_are_no_build_arguments() {
    let text = r#"arg "SUITE" default="bookworm"
arg "VERSION"
image "app" {
    tag "${VERSION}"
    base "debian:${SUITE}-slim"
    config { env PATH="/opt/bin:${PATH}" LABEL="$VERSION" }
}
"#;
    let given = [("VERSION".to_string(), "1.2.3".to_string())];
    let spec = parse_str_with(Path::new("web.kdl"), text, &given).unwrap_or_else(|e| panic!("{}", render(&e)));
    let img = &spec.images[0];
    assert_eq!(img.tag, "1.2.3");
    assert!(matches!(&img.base, Base::Registry { reference, .. } if reference == "docker.io/library/debian:bookworm-slim"));
    // Only declared names, braced: the environment's stay for later expansion.
    assert_eq!(img.config.env, [("PATH".to_string(), "/opt/bin:${PATH}".to_string()), ("LABEL".to_string(), "$VERSION".to_string())]);
    let trixie = [given[0].clone(), ("SUITE".to_string(), "trixie".to_string())];
    let spec = parse_str_with(Path::new("web.kdl"), text, &trixie).unwrap();
    assert!(matches!(&spec.images[0].base, Base::Registry { reference, .. } if reference.ends_with("debian:trixie-slim")));
    // VERSION has no default.
    let e = parse_str_with(Path::new("web.kdl"), text, &[]).unwrap_err();
    assert_eq!(codes(&e), ["missing_arg"]);
    assert!(render(&e).contains("web.kdl:2:1"), "{}", render(&e));
    let e = parse_str_with(Path::new("web.kdl"), text, &[given[0].clone(), ("NOPE".to_string(), "x".to_string())]).unwrap_err();
    assert_eq!(codes(&e), ["unknown_arg"]);
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

/// Defect 4f: build-arg values were expanded twice: `--build-arg 'V=p${W}d'` gave `pwd` or
/// `p${W}d` depending on which `arg` came first. Docker keeps values as given: a value from the
/// command line or a default goes in literally, never expanded again.
#[test]
fn build_arg_values_are_inserted_literally_never_expanded_again() {
    let v = [("V".to_string(), "p${W}d".to_string())];
    for text in [
        "arg \"V\"\narg \"W\" default=\"w\"\narg \"D\" default=\"${W}\"\nimage \"app\" { config { env A=\"${V}\" B=\"${D}-${W}\" } }\n",
        "arg \"W\" default=\"w\"\narg \"D\" default=\"${W}\"\narg \"V\"\nimage \"app\" { config { env A=\"${V}\" B=\"${D}-${W}\" } }\n",
    ] {
        let spec = parse_str_with(Path::new("args.kdl"), text, &v).unwrap_or_else(|e| panic!("{}", render(&e)));
        assert_eq!(spec.images[0].config.env, [("A".to_string(), "p${W}d".to_string()), ("B".to_string(), "${W}-w".to_string())], "{text}");
    }
}
