//! The accounts every Debian system has: base-passwd's masters (read from its `.deb`), and its
//! bookworm defaults for images whose packages do not include base-passwd and whose base brings
//! no accounts.

use std::path::Path;

use crate::debian::install::{read_files, DebError};

/// The users every Debian system has: base-passwd's `passwd.master` (bookworm, 3.6.1), for
/// images whose packages do not include base-passwd and whose base brings no accounts.
pub const DEBIAN_PASSWD: &str = "root:*:0:0:root:/root:/bin/bash
daemon:*:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:*:2:2:bin:/bin:/usr/sbin/nologin
sys:*:3:3:sys:/dev:/usr/sbin/nologin
sync:*:4:65534:sync:/bin:/bin/sync
games:*:5:60:games:/usr/games:/usr/sbin/nologin
man:*:6:12:man:/var/cache/man:/usr/sbin/nologin
lp:*:7:7:lp:/var/spool/lpd:/usr/sbin/nologin
mail:*:8:8:mail:/var/mail:/usr/sbin/nologin
news:*:9:9:news:/var/spool/news:/usr/sbin/nologin
uucp:*:10:10:uucp:/var/spool/uucp:/usr/sbin/nologin
proxy:*:13:13:proxy:/bin:/usr/sbin/nologin
www-data:*:33:33:www-data:/var/www:/usr/sbin/nologin
backup:*:34:34:backup:/var/backups:/usr/sbin/nologin
list:*:38:38:Mailing List Manager:/var/list:/usr/sbin/nologin
irc:*:39:39:ircd:/run/ircd:/usr/sbin/nologin
_apt:*:42:65534::/nonexistent:/usr/sbin/nologin
nobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";

/// base-passwd's `group.master` (bookworm, 3.6.1).
pub const DEBIAN_GROUP: &str = "root:*:0:
daemon:*:1:
bin:*:2:
sys:*:3:
adm:*:4:
tty:*:5:
disk:*:6:
lp:*:7:
mail:*:8:
news:*:9:
uucp:*:10:
man:*:12:
proxy:*:13:
kmem:*:15:
dialout:*:20:
fax:*:21:
voice:*:22:
cdrom:*:24:
floppy:*:25:
tape:*:26:
sudo:*:27:
audio:*:29:
dip:*:30:
www-data:*:33:
backup:*:34:
operator:*:37:
list:*:38:
irc:*:39:
src:*:40:
shadow:*:42:
utmp:*:43:
video:*:44:
sasl:*:45:
plugdev:*:46:
staff:*:50:
games:*:60:
users:*:100:
nogroup:*:65534:
";

/// base-passwd's `passwd.master` and `group.master`, from its `.deb`.
pub fn masters(deb: &Path) -> Result<Option<(String, String)>, DebError> {
    let files = read_files(deb, &|p: &str| p.starts_with("/usr/share/base-passwd/") && p.ends_with(".master"))?;
    let get = |name: &str| files.iter().find(|(p, _)| p.ends_with(name)).map(|(_, b)| String::from_utf8_lossy(b).into_owned());
    Ok(get("/passwd.master").zip(get("/group.master")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_base_passwds_users_and_groups() {
        assert!(DEBIAN_PASSWD.starts_with("root:*:0:0:root:/root:/bin/bash\n"));
        assert!(DEBIAN_PASSWD.contains("\nwww-data:*:33:33:") && DEBIAN_PASSWD.contains("\nnobody:*:65534:65534:"));
        assert!(DEBIAN_GROUP.starts_with("root:*:0:\n") && DEBIAN_GROUP.contains("\nnogroup:*:65534:\n"));
    }
}
