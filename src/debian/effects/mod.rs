//! What Debian's package manager and maintainer scripts leave in an image beyond the packages'
//! own files, mostly as entries of the metadata layer: update-ca-certificates' bundle and links (and
//! Java's keystore), dpkg's database (status, layout, triggers), update-alternatives' links and
//! database. The executor reads the facts out of the package layers; [`entries`] turns them into
//! entries; the planner puts them in the metadata layer without knowing whose they are. One file
//! an effect: [`accounts`] (base-passwd's masters and defaults), [`alternatives`], [`base_files`]
//! (base-files' postinst, reproduced in its own layer), [`certs`]; dpkg's database is here.

pub mod accounts;
pub mod alternatives;
pub mod base_files;
pub mod certs;

use crate::entry::PlannedEntry;
use alternatives::Alternative;

/// What the build read out of an image's packages, for the metadata layer.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// `(path, PEM)` of every certificate ca-certificates ships, sorted by path.
    pub certificates: Vec<(String, Vec<u8>)>,
    /// Write Java's `cacerts` (ca-certificates-java is installed).
    pub java_cacerts: bool,
    /// The date of generated entries (the keystore's).
    pub epoch: u64,
    /// `/var/lib/dpkg/status`, when the image has packages.
    pub dpkg_status: Option<String>,
    /// `/var/lib/dpkg/triggers/NAME` files: (name, content).
    pub triggers: Vec<(String, String)>,
    /// What update-alternatives would have set up (links and its database).
    pub alternatives: Vec<Alternative>,
    /// The image has merged-`/usr` links: alternatives' links under `/bin`, `/lib`… go to `/usr`.
    pub merged_usr: bool,
}

/// The entries `e` makes, in the order they are put (a later one replaces an earlier one at its
/// path).
pub fn entries(e: &Effects) -> Vec<PlannedEntry> {
    let mut out = Vec::new();
    if !e.certificates.is_empty() {
        certs::put_ca_certificates(&mut out, e);
    }
    if let Some(status) = &e.dpkg_status {
        put_dpkg_database(&mut out, status, &e.triggers);
    }
    alternatives::put_alternatives(&mut out, e);
    out
}

/// dpkg's database: the status file, the layout's `info/format`, and the triggers files.
fn put_dpkg_database(layer: &mut Vec<PlannedEntry>, status: &str, triggers: &[(String, String)]) {
    layer.push(PlannedEntry::file("/var/lib/dpkg/status", status.as_bytes().to_vec(), 0o644));
    // The database layout: `name:arch` files for Multi-Arch: same packages.
    layer.push(PlannedEntry::file("/var/lib/dpkg/info/format", b"1\n".to_vec(), 0o644));
    for (name, text) in triggers {
        layer.push(PlannedEntry::file(&format!("/var/lib/dpkg/triggers/{name}"), text.clone().into_bytes(), 0o644));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Content, EntryKind};
    use certs::CA_CONF_HEADER;

    fn text_of(entries: &[PlannedEntry], path: &str) -> Option<String> {
        entries.iter().find(|e| e.path == path).and_then(|e| match &e.kind {
            EntryKind::File { content: Content::Inline(b), .. } => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
    }

    #[test]
    fn the_ca_certificates_are_bundled_in_list_order() {
        let m = Effects {
            certificates: vec![
                ("/usr/share/ca-certificates/mozilla/A.crt".into(), b"-----A-----".to_vec()),
                ("/usr/share/ca-certificates/mozilla/B.crt".into(), b"-----B-----\n".to_vec()),
                ("/usr/local/share/ca-certificates/local.crt".into(), b"-----L-----\n".to_vec()),
            ],
            ..Effects::default()
        };
        let made = entries(&m);
        assert_eq!(text_of(&made, "/etc/ssl/certs/ca-certificates.crt").as_deref(), Some("-----A-----\n-----B-----\n-----L-----\n"));
        assert_eq!(
            text_of(&made, "/etc/ca-certificates.conf").as_deref(),
            Some(format!("{CA_CONF_HEADER}mozilla/A.crt\nmozilla/B.crt\n").as_str())
        );
        assert_eq!(made, entries(&m), "same inputs, same entries");
        let bundle = made.iter().find(|e| e.path == "/etc/ssl/certs/ca-certificates.crt").map(|e| (e.mode, e.uid, e.gid));
        assert_eq!(bundle, Some((0o644, 0, 0)));

        let none = entries(&Effects::default());
        assert!(!none.iter().any(|e| e.path.starts_with("/etc/ssl") || e.path == "/etc/ca-certificates.conf"));
    }
}
