//! Tests of the spec language, by topic in `tests/`: what specs decode to,
//! every diagnostic (snapshotted under `snapshots/`), steps, build arguments,
//! and reading files. This file holds what they share: the example spec and
//! the helpers that parse, render and snapshot.

use miette::Diagnostic;

use super::*;

mod build_args;
mod decoding;
mod diagnostics;
mod reading;
mod steps;

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
