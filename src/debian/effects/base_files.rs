//! base-files' `postinst`, reproduced exactly in the package's own layer without running it.

use std::collections::BTreeMap;

use crate::debian::install::tree::{Kind, Node};

/// Effects of a package's maintainer scripts that compose reproduces in the package's own layer,
/// exactly, without running them. base-files' postinst (first configuration): `/var/run` and
/// `/var/lock` become links to `/run` and `/run/lock` (mode 1777); the top-level and
/// `/usr/local` directories; `/var/mail` (2775, group mail) and the `/var/spool/mail` link;
/// `/root/.profile`, `/root/.bashrc`, `/etc/profile` and `/etc/motd` from its defaults; the
/// `/etc/dpkg/origins/default` link.
pub(in crate::debian) fn emulate_postinst(package: &str, nodes: &mut BTreeMap<String, Node>, epoch: u64) {
    if package != "base-files" {
        return;
    }
    let mut dir = |path: &str, mode: u32| {
        nodes.entry(path.to_owned()).or_insert(Node {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
            mtime: epoch,
            shown: path.to_owned(),
            moved: false,
        });
    };
    dir("/run", 0o755);
    dir("/run/lock", 0o1777);
    for d in ["/mnt", "/srv", "/opt", "/etc/opt", "/var/opt", "/media"] {
        dir(d, 0o755);
    }
    for d in ["/usr/local", "/usr/local/share", "/usr/local/share/man", "/usr/local/bin", "/usr/local/games", "/usr/local/lib"] {
        dir(d, 0o755);
    }
    for d in ["/usr/local/include", "/usr/local/sbin", "/usr/local/src", "/usr/local/etc"] {
        dir(d, 0o755);
    }
    nodes.entry("/var/mail".to_owned()).or_insert(Node {
        kind: Kind::Dir,
        mode: 0o2775,
        uid: 0,
        gid: 8,
        mtime: epoch,
        shown: "/var/mail".to_owned(),
        moved: false,
    });
    // install_from_default: copies of the defaults, as `cp -p` makes them.
    for (from, to) in
        [("dot.profile", "/root/.profile"), ("dot.bashrc", "/root/.bashrc"), ("profile", "/etc/profile"), ("motd", "/etc/motd")]
    {
        let source = nodes.get(&format!("/usr/share/base-files/{from}")).filter(|n| matches!(n.kind, Kind::File { .. })).cloned();
        if let (Some(mut n), false) = (source, nodes.contains_key(to)) {
            n.shown = to.to_owned();
            n.moved = false;
            nodes.insert(to.to_owned(), n);
        }
    }
    let origins = nodes.contains_key("/etc/dpkg/origins/debian");
    let mut link = |path: &str, target: &str| {
        nodes.entry(path.to_owned()).or_insert(Node {
            kind: Kind::Symlink(target.to_owned()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: epoch,
            shown: path.to_owned(),
            moved: false,
        });
    };
    link("/var/spool/mail", "../mail");
    link("/usr/local/man", "share/man");
    if origins {
        link("/etc/dpkg/origins/default", "debian");
    }
    for (path, target) in [("/var/run", "/run"), ("/var/lock", "/run/lock")] {
        let empty_dir = matches!(nodes.get(path).map(|n| &n.kind), Some(Kind::Dir))
            && !nodes.keys().any(|k| k.strip_prefix(path).is_some_and(|r| r.starts_with('/')));
        if empty_dir {
            if let Some(n) = nodes.get_mut(path) {
                n.kind = Kind::Symlink(target.to_owned());
                n.mode = 0o777;
            }
        }
    }
}
