//! The CA trust stores ca-certificates and ca-certificates-java would generate, made without
//! running them: `/etc/ssl/certs/NAME.pem` links, OpenSSL's subject-hash links (`HASH.0`, what
//! `openssl rehash` makes), and Java's `cacerts` keystore (JKS, password `changeit`, entries dated
//! at the epoch so the bytes are reproducible).
//!
//! OpenSSL's hash is `X509_NAME_hash`: SHA-1 over the subject name's canonical encoding (every
//! string attribute as UTF8String, ASCII-lowercased, whitespace trimmed and collapsed; the RDN
//! sets without the outer SEQUENCE), its first four bytes little-endian.

use std::collections::BTreeMap;

use super::Effects;
use crate::entry::PlannedEntry;
use sha1::{Digest, Sha1};

/// One DER TLV: tag byte, its whole encoding, and its contents.
struct Tlv<'a> {
    tag: u8,
    whole: &'a [u8],
    contents: &'a [u8],
}

fn tlv(data: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *data.first()?;
    let first = *data.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *data.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    if end > data.len() {
        return None;
    }
    Some((Tlv { tag, whole: &data[..end], contents: &data[header..end] }, &data[end..]))
}

fn children(mut data: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (t, rest) = tlv(data)?;
        out.push(t);
        data = rest;
    }
    Some(out)
}

fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        return vec![n as u8];
    }
    let bytes: Vec<u8> = n.to_be_bytes().iter().copied().skip_while(|b| *b == 0).collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(contents.len()));
    out.extend_from_slice(contents);
    out
}

/// The subject `Name` of a DER certificate.
fn subject(cert: &[u8]) -> Option<Tlv<'_>> {
    let (c, _) = tlv(cert)?;
    let parts = children(c.contents)?;
    let tbs = children(parts.first()?.contents)?;
    // [0] version is optional; then serial, signature, issuer, validity, subject.
    let skip = usize::from(tbs.first()?.tag == 0xa0);
    let mut it = tbs.into_iter().skip(skip + 4);
    it.next()
}

/// A string attribute's value as OpenSSL canonicalises it; `None` for other types (kept as is).
fn canonical_string(value: &Tlv<'_>) -> Option<String> {
    let text: String = match value.tag {
        0x0c => String::from_utf8_lossy(value.contents).into_owned(),
        // PrintableString, T61String (read as Latin-1), IA5String, VisibleString.
        0x13 | 0x16 | 0x1a => String::from_utf8_lossy(value.contents).into_owned(),
        0x14 => value.contents.iter().map(|&b| b as char).collect(),
        0x1e => {
            let units: Vec<u16> = value.contents.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
            String::from_utf16_lossy(&units)
        }
        0x1c => value
            .contents
            .chunks(4)
            .filter(|c| c.len() == 4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .filter_map(char::from_u32)
            .collect(),
        _ => return None,
    };
    let space = |c: char| c == ' ' || ('\t'..='\r').contains(&c);
    let mut out = String::new();
    let mut pending = false;
    for c in text.trim_matches(space).chars() {
        if space(c) {
            pending = true;
            continue;
        }
        if pending {
            out.push(' ');
            pending = false;
        }
        out.push(c.to_ascii_lowercase());
    }
    Some(out)
}

/// OpenSSL's subject hash of a DER certificate (`openssl x509 -subject_hash`).
pub fn subject_hash(cert: &[u8]) -> Option<u32> {
    let name = subject(cert)?;
    let mut canon = Vec::new();
    for rdn in children(name.contents)? {
        let mut set = Vec::new();
        for atv in children(rdn.contents)? {
            let parts = children(atv.contents)?;
            let (oid, value) = (parts.first()?, parts.get(1)?);
            let mut seq = oid.whole.to_vec();
            match canonical_string(value) {
                Some(s) => seq.extend(der(0x0c, s.as_bytes())),
                None => seq.extend_from_slice(value.whole),
            }
            set.extend(der(0x30, &seq));
        }
        canon.extend(der(0x31, &set));
    }
    let digest = Sha1::digest(&canon);
    Some(u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]))
}

/// The DER certificates of a PEM file.
pub fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" || line == "-----BEGIN TRUSTED CERTIFICATE-----" {
            body = Some(String::new());
        } else if line.starts_with("-----END") {
            if let Some(b) = body.take() {
                if let Ok(d) = base64::engine::general_purpose::STANDARD.decode(b) {
                    out.push(d);
                }
            }
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    out
}

/// The name update-ca-certificates gives a certificate's link in /etc/ssl/certs: its file name
/// without `.crt`, spaces and commas as `_`, parentheses as `=`, then `.pem`.
pub fn pem_link_name(crt_path: &str) -> String {
    let base = crt_path.rsplit('/').next().unwrap_or(crt_path);
    let base = base.strip_suffix(".crt").unwrap_or(base);
    let name: String = base
        .chars()
        .map(|c| match c {
            ' ' | ',' => '_',
            '(' | ')' => '=',
            c => c,
        })
        .collect();
    format!("{name}.pem")
}

/// A JKS keystore of trusted certificates (`(alias, DER)`, in order), every entry dated
/// `date_ms`, sealed with `password` as keytool does.
pub fn jks(entries: &[(String, Vec<u8>)], password: &str, date_ms: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0xfeed_feed_u32.to_be_bytes());
    out.extend(2u32.to_be_bytes());
    out.extend((entries.len() as u32).to_be_bytes());
    let utf = |out: &mut Vec<u8>, s: &str| {
        out.extend((s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    for (alias, der) in entries {
        out.extend(2u32.to_be_bytes());
        utf(&mut out, alias);
        out.extend(date_ms.to_be_bytes());
        utf(&mut out, "X.509");
        out.extend((der.len() as u32).to_be_bytes());
        out.extend_from_slice(der);
    }
    let mut h = Sha1::new();
    for unit in password.encode_utf16() {
        h.update(unit.to_be_bytes());
    }
    // The password as UTF-16BE, then this phrase as UTF-8 (sun.security.provider.JavaKeyStore).
    h.update(b"Mighty Aphrodite");
    h.update(&out);
    out.extend(h.finalize());
    out
}

/// The header ca-certificates' postinst writes at the top of `/etc/ca-certificates.conf`.
pub(super) const CA_CONF_HEADER: &str = "# This file lists certificates that you wish to use or to ignore to be
# installed in /etc/ssl/certs.
# update-ca-certificates(8) will update /etc/ssl/certs by reading this file.
#
# This is autogenerated by dpkg-reconfigure ca-certificates.
# Certificates should be installed under /usr/share/ca-certificates
# and files with extension '.crt' is recognized as available certs.
#
# line begins with # is comment.
# line begins with ! is certificate filename to be deselected.
#
";

/// What update-ca-certificates makes: the bundle, a link per certificate and `openssl rehash`'s
/// links, Java's `cacerts` (when asked), and `/etc/ca-certificates.conf`.
pub(super) fn put_ca_certificates(layer: &mut Vec<PlannedEntry>, m: &Effects) {
    // update-ca-certificates: every certificate, PEM, in the order of its sorted list.
    let mut bundle = Vec::new();
    for (_, pem) in &m.certificates {
        bundle.extend_from_slice(pem);
        if !pem.ends_with(b"\n") {
            bundle.push(b'\n');
        }
    }
    layer.push(PlannedEntry::file("/etc/ssl/certs/ca-certificates.crt", bundle, 0o644));
    // update-ca-certificates' NAME.pem links, and `openssl rehash`'s HASH.N links to them.
    let mut hashed: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut java: Vec<(String, Vec<u8>)> = Vec::new();
    for (path, pem) in &m.certificates {
        let name = pem_link_name(path);
        layer.push(PlannedEntry::symlink(&format!("/etc/ssl/certs/{name}"), path));
        let ders = pem_certificates(pem);
        if let [der] = ders.as_slice() {
            if let Some(h) = subject_hash(der) {
                hashed.entry(h).or_default().push(name.clone());
            }
            java.push((format!("debian:{}", name.to_ascii_lowercase()), der.clone()));
        }
    }
    for (h, mut names) in hashed {
        names.sort();
        for (i, name) in names.iter().enumerate() {
            layer.push(PlannedEntry::symlink(&format!("/etc/ssl/certs/{h:08x}.{i}"), name));
        }
    }
    if m.java_cacerts {
        java.sort();
        layer.push(PlannedEntry::file("/etc/ssl/certs/java/cacerts", jks(&java, "changeit", m.epoch.saturating_mul(1000)), 0o644));
    }
    // As ca-certificates' postinst writes it, header included.
    let mut conf = String::from(CA_CONF_HEADER);
    conf.extend(m.certificates.iter().filter_map(|(p, _)| p.strip_prefix("/usr/share/ca-certificates/")).map(|p| format!("{p}\n")));
    layer.push(PlannedEntry::file("/etc/ca-certificates.conf", conf.into_bytes(), 0o644));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_follow_update_ca_certificates() {
        assert_eq!(pem_link_name("mozilla/GlobalSign_Root_CA.crt"), "GlobalSign_Root_CA.pem");
        assert_eq!(pem_link_name("mozilla/A (B), C.crt"), "A_=B=__C.pem");
    }

    #[test]
    fn the_jks_digest_covers_the_password_and_every_byte() {
        let a = jks(&[("debian:x.pem".into(), vec![0x30, 0x00])], "changeit", 0);
        let b = jks(&[("debian:x.pem".into(), vec![0x30, 0x00])], "other", 0);
        assert_eq!(&a[..4], &[0xfe, 0xed, 0xfe, 0xed]);
        assert_eq!(a.len(), b.len());
        assert_ne!(a, b);
        assert_eq!(a.len(), 12 + 4 + 2 + 12 + 8 + 2 + 5 + 4 + 2 + 20);
    }
}

#[cfg(test)]
mod against_openssl {
    use super::*;

    /// Every certificate Debian's ca-certificates ships on this machine hashes as `openssl x509
    /// -subject_hash` says (the test machines have both).
    #[test]
    fn subject_hashes_match_openssl_for_the_hosts_ca_certificates() {
        let dir = std::path::Path::new("/usr/share/ca-certificates/mozilla");
        let mut checked = 0;
        for e in std::fs::read_dir(dir).expect("ca-certificates is installed").flatten() {
            let pem = std::fs::read(e.path()).unwrap();
            let der = &pem_certificates(&pem)[0];
            let out = std::process::Command::new("openssl")
                .args(["x509", "-noout", "-subject_hash", "-in"])
                .arg(e.path())
                .output()
                .expect("openssl is installed");
            let want = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(format!("{:08x}", subject_hash(der).unwrap()), want, "{}", e.path().display());
            checked += 1;
        }
        assert!(checked > 100, "{checked} certificates");
    }
}
