//! What step tests build on: the image their steps run in.

/// The image steps run in: Debian bookworm's static busybox, linked as `/bin/sh`, and the package
/// `extra` beside it (what a test's steps need besides busybox), from the archive this machine's
/// apt uses; not exported. A spec's first lines, with a newline before and after.
pub fn busybox_tools(extra: &str) -> String {
    format!(
        r#"
image "tools" {{
    export #false
    repository "debian" suite="bookworm" components="main" keyring="/usr/share/keyrings/debian-archive-keyring.gpg"
    packages "busybox-static" "{extra}"
    files {{ symlink "/bin/sh" target="busybox" }}
}}
"#
    )
}
