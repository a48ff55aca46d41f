//! What specs decode to: the language description's example, defaults and
//! normalisation, "did you mean" suggestions, base references, inherited
//! repositories, variants, maintainer scripts and compression.

use super::super::decode::{CONFIG_CHILDREN, FILE_CHILDREN, IMAGE_CHILDREN};
use super::super::values::suggest;
use super::*;

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

/// Docker Hub names (`debian:bookworm`) were once refused ("does not name a registry").
/// Docker's rule applies: no registry host means `docker.io`, one path part means `library/`.
#[test]
fn docker_hub_names_resolve_to_docker_io() {
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

/// The same `repository` lines were repeated in every image (about 8 lines per app): a top-level
/// `repository` is every image's that lists packages; an image's own of the same name wins; a
/// top-level name given twice is an error.
#[test]
fn repetition_the_same_repository_lines_in_every_image() {
    let spec = parse_ok(
        "repository \"debian\" suite=\"bookworm\" components=\"main\"\n\
         repository \"extra\" suite=\"x\" components=\"main contrib\"\n\
         image \"a\" {\n    packages \"curl\"\n}\n\
         image \"b\" {\n    repository \"debian\" suite=\"trixie\" components=\"main\"\n    packages \"less\"\n}\n\
         image \"c\" {\n    files { text \"/x\" \"x\" }\n}\n",
    );
    let suites = |name: &str| -> Vec<(String, String)> {
        spec.image(name).unwrap().repositories.iter().map(|r| (r.name.clone(), r.suite.clone())).collect()
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(suites("a"), [pair("debian", "bookworm"), pair("extra", "x")]);
    assert_eq!(suites("b"), [pair("debian", "trixie"), pair("extra", "x")]);
    assert!(suites("c").is_empty(), "an image without packages installs nothing");
    let e = parse_err(
        "repository \"debian\" suite=\"bookworm\" components=\"main\"\n\
         repository \"debian\" suite=\"trixie\" components=\"main\"\n\
         image \"a\" {\n    packages \"curl\"\n}\n",
    );
    assert_eq!(codes(&e), ["duplicate_repository"]);
    assert!(render(&e).contains("repository `debian` is defined more than once at the top level"), "{}", render(&e));
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

/// `compression` takes gzip or zstd, once per image; anything else is a located error
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
