//! What a failed command's log says happened, for the help of its error: whether it tried the
//! network (a resolver or connect failure, as libc, curl, Go, Node, Python, apt, cargo, pip and
//! busybox word them), and why it could not start (a program, a script's interpreter or a
//! program loader its image lacks; a file that is not executable, or a directory; a script with
//! Windows line endings), read from runc's, the kernel's and `env`'s words and the step's root.

use std::fs;
use std::path::Path;

use super::trees;

/// Does `line` say a name could not be resolved or a network could not be reached?
pub(super) fn tried_network(line: &str) -> bool {
    const SIGNS: &[&str] = &[
        "name resolution",
        "resolve host",
        "temporary failure resolving",
        "could not resolve",
        "couldn't resolve",
        "name or service not known",
        "no address associated with hostname",
        "getaddrinfo",
        "eai_again",
        "enotfound",
        "no such host",
        "network is unreachable",
        "enetunreach",
        "failed to establish a new connection",
        "dial tcp",
        "dial udp",
        "bad address",
    ];
    let lower = line.to_ascii_lowercase();
    SIGNS.iter().any(|s| lower.contains(s))
}

/// Does `line` say a program could not be started?
pub(super) fn not_started(line: &str) -> bool {
    line.contains("unable to start container process: exec")
        || line.starts_with("exec ") && line.ends_with(": no such file or directory")
        || line.contains("env: '") && line.ends_with("': No such file or directory")
}

/// What brings program `name` into an image.
fn brings(name: &str) -> String {
    const COREUTILS: &[&str] = &["env", "cat", "ls", "cp", "mv", "rm", "mkdir", "chmod", "chown", "ln", "date", "echo", "true", "install"];
    let package = match name {
        "sh" | "dash" => return "`dash` brings /bin/sh; `variant \"essential\"` brings a shell and the core utilities".into(),
        n if COREUTILS.contains(&n) => "coreutils",
        "bash" => "bash",
        "python3" | "python" => "python3",
        "node" | "nodejs" | "npm" => "nodejs",
        "perl" => "perl-base",
        "java" => "default-jre-headless",
        _ => return "add the Debian package that holds it to that image's `packages` (`apt-file search bin/NAME` names it)".into(),
    };
    format!("add `{package}` to that image's `packages`")
}

/// The file name of `path`.
fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Why the command could not start, as help naming `image` and what to do, from the first line
/// of its log that says so (`line`) and the step's root `rootfs`.
pub(super) fn start_failure(line: &str, rootfs: &Path, image: &str) -> Option<String> {
    // runc's words come as logfmt, quotes escaped.
    let line = &line.replace("\\\"", "\"");
    let quoted = |after: &str| line.split_once(after).and_then(|(_, rest)| rest.split_once('"')).map(|(name, _)| name.to_string());
    if line.contains("executable file not found in $PATH") {
        let name = quoted("exec: \"")?;
        return Some(format!("image `{image}` has no `{name}` on the step's PATH: {}", brings(base(&name))));
    }
    if let Some((_, rest)) = line.split_once("env: '") {
        let name = rest.trim_end_matches("': No such file or directory");
        if let Some(name) = name.strip_suffix('\r') {
            return Some(format!(
                "a script has Windows line endings: `env` looked for `{name}` followed by a carriage return, which no image \
                 has; convert it to LF line endings"
            ));
        }
        return Some(format!("image `{image}` has no `{name}`, which a script runs through `env`: {}", brings(base(name))));
    }
    if let Some(path) = quoted("exec: \"") {
        let is_dir = trees::resolve_in(rootfs, &path).is_ok_and(|p| p.is_dir());
        return if is_dir {
            Some(format!("`{path}` is a directory, not a program"))
        } else if line.contains("permission denied") {
            Some(format!("`{path}` is not executable: give it `mode=0o755` where it is copied in, or run it through its interpreter"))
        } else if line.contains("is a directory") {
            Some(format!("`{path}` is a directory, not a program"))
        } else if line.contains("no such file or directory") {
            Some(format!("image `{image}` has no `{path}`: {}", brings(base(&path))))
        } else {
            None
        };
    }
    // `exec /usr/bin/npm: no such file or directory`: the file is there, what starts it is not.
    let after = line.split_once("process: exec ").map_or_else(|| line.strip_prefix("exec "), |(_, rest)| Some(rest))?;
    let path = after.split_once(": no such file or directory")?.0.trim();
    let head: Vec<u8> = {
        use std::io::Read;
        let mut buf = Vec::new();
        let f = fs::File::open(trees::resolve_in(rootfs, path).ok()?).ok()?;
        f.take(256).read_to_end(&mut buf).ok()?;
        buf
    };
    let Some(first) = head.strip_prefix(b"#!") else {
        return Some(format!(
            "image `{image}` has no program loader or shared library that `{path}` needs: is it built for this image's libc and \
             architecture?"
        ));
    };
    let first = String::from_utf8_lossy(first.split(|b| *b == b'\n').next().unwrap_or_default()).to_string();
    if first.ends_with('\r') {
        return Some(format!(
            "`{path}` has Windows line endings: its first line names `{}` followed by a carriage return, which no image has; \
             convert it to LF line endings",
            first.trim()
        ));
    }
    let mut words = first.split_whitespace();
    let interpreter = words.next().unwrap_or_default().to_string();
    match words.next() {
        Some(program) if base(&interpreter) == "env" && trees::resolve_in(rootfs, &interpreter).is_ok_and(|p| p.exists()) => {
            Some(format!("image `{image}` has no `{program}`, which `{path}` runs through `env`: {}", brings(base(program))))
        }
        _ => {
            Some(format!("image `{image}` has no `{interpreter}`, which `{path}` names in its first line: {}", brings(base(&interpreter))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From the attack review of issue 23: a script with Windows line endings, a file that is
    /// not executable, a directory and `env node` were all reported as a missing shell with the
    /// same list of packages.
    #[test]
    fn a_command_that_cannot_start_is_named_for_what_it_lacks() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::write(r.join("usr/bin/env"), "").unwrap();
        fs::write(r.join("crlf"), "#!/bin/sh\r\necho\r\n").unwrap();
        fs::write(r.join("node-app"), "#!/usr/bin/env node\n").unwrap();
        fs::write(r.join("py"), "#!/usr/bin/python3 -u\n").unwrap();
        fs::write(r.join("elf"), b"\x7fELF\x02\x01\x01").unwrap();
        let runc = |what: &str| format!("time=\"x\" level=error msg=\"runc run failed: unable to start container process: {what}\"");
        let say = |line: &str| start_failure(line, r, "tools").unwrap_or_default();
        assert_eq!(
            say(&runc("exec: \\\"sh\\\": executable file not found in $PATH")),
            "image `tools` has no `sh` on the step's PATH: `dash` brings /bin/sh; `variant \"essential\"` brings a shell and the core utilities"
        );
        assert!(say("exec /crlf: no such file or directory").starts_with("`/crlf` has Windows line endings"));
        assert_eq!(
            say("exec /node-app: no such file or directory"),
            "image `tools` has no `node`, which `/node-app` runs through `env`: add `nodejs` to that image's `packages`"
        );
        assert_eq!(
            say("exec /py: no such file or directory"),
            "image `tools` has no `/usr/bin/python3`, which `/py` names in its first line: add `python3` to that image's `packages`"
        );
        assert!(say("exec /elf: no such file or directory").contains("no program loader or shared library that `/elf` needs"));
        assert!(say(&runc("exec: \\\"/s/run\\\": permission denied")).starts_with("`/s/run` is not executable"));
        assert_eq!(say(&runc("exec: \\\"/usr\\\": is a directory")), "`/usr` is a directory, not a program");
        // runc says "permission denied" for a directory.
        assert_eq!(say(&runc("exec: \\\"/usr\\\": permission denied")), "`/usr` is a directory, not a program");
        assert!(say("/usr/bin/env: 'node\r': No such file or directory").starts_with("a script has Windows line endings"));
        assert!(say(&runc("exec: \\\"/gone\\\": stat /gone: no such file or directory")).starts_with("image `tools` has no `/gone`"));
        assert_eq!(
            say("/usr/bin/env: 'ruby': No such file or directory"),
            "image `tools` has no `ruby`, which a script runs through `env`: add the Debian package that holds it to that image's `packages` (`apt-file search bin/NAME` names it)"
        );
        assert!(!tried_network("cat: /in/nothing: No such file or directory"));
        assert!(tried_network("wget: bad address 'example.com'") && tried_network("npm ERR! getaddrinfo EAI_AGAIN registry"));
    }
}
