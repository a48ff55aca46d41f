//! SBOM: an SPDX 2.3 JSON document for each image, written beside its output
//! (`out/<image>.spdx.json`).
//!
//! Owns the document's exact bytes (canonical JSON, so the same image gives the same SBOM) and the
//! mapping of Debian's DEP-5 licence names to SPDX identifiers. It lists the image (by manifest or
//! index digest), every pinned package of every platform (name, version, architecture, sha256 of
//! the `.deb`, source package, homepage, maintainer as supplier, a `pkg:deb` purl, and the
//! licences the package's `copyright` file declares), and DEPENDS_ON relationships between them.

use std::collections::BTreeSet;

use serde_json::json;

use crate::lock::{ImageLock, PackageLock};
use crate::oci::{canonical_json, rfc3339};

/// Licences of a package, by name, as the build found them (may be empty).
pub type Licences<'a> = &'a dyn Fn(&PackageLock) -> Vec<String>;

fn spdx_id(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

/// Map a DEP-5 licence short name to an SPDX identifier (or a `LicenseRef-`).
pub fn spdx_licence(dep5: &str) -> String {
    let known = [
        ("GPL-1", "GPL-1.0-only"),
        ("GPL-1+", "GPL-1.0-or-later"),
        ("GPL-2", "GPL-2.0-only"),
        ("GPL-2+", "GPL-2.0-or-later"),
        ("GPL-3", "GPL-3.0-only"),
        ("GPL-3+", "GPL-3.0-or-later"),
        ("LGPL-2", "LGPL-2.0-only"),
        ("LGPL-2+", "LGPL-2.0-or-later"),
        ("LGPL-2.1", "LGPL-2.1-only"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("LGPL-3", "LGPL-3.0-only"),
        ("LGPL-3+", "LGPL-3.0-or-later"),
        ("AGPL-3", "AGPL-3.0-only"),
        ("AGPL-3+", "AGPL-3.0-or-later"),
        ("Apache-2.0", "Apache-2.0"),
        ("Artistic", "Artistic-1.0-Perl"),
        ("BSD-2-clause", "BSD-2-Clause"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("BSD-4-clause", "BSD-4-Clause"),
        ("Expat", "MIT"),
        ("MIT", "MIT"),
        ("ISC", "ISC"),
        ("MPL-1.1", "MPL-1.1"),
        ("MPL-2.0", "MPL-2.0"),
        ("Zlib", "Zlib"),
        ("zlib", "Zlib"),
        ("curl", "curl"),
        ("OpenSSL", "OpenSSL"),
        ("public-domain", "LicenseRef-public-domain"),
        ("PD", "LicenseRef-public-domain"),
    ];
    let t = dep5.trim();
    for (k, v) in known {
        if t.eq_ignore_ascii_case(k) {
            return v.to_string();
        }
    }
    format!("LicenseRef-{}", spdx_id(t))
}

fn purl(p: &PackageLock, suite: Option<&str>) -> String {
    let vendor = if p.repository.starts_with("debian") { "debian" } else { p.repository.as_str() };
    let enc = |s: &str| s.replace('%', "%25").replace('+', "%2B").replace(':', "%3A").replace('~', "%7E");
    let mut s = format!("pkg:deb/{}/{}@{}?arch={}", enc(vendor), enc(&p.name), enc(&p.version), p.architecture);
    if let Some(suite) = suite {
        s.push_str(&format!("&distro={}", enc(suite)));
    }
    s
}

/// A deterministic `urn:uuid:` from a digest (RFC 4122 layout, version 5 style bits).
fn urn_uuid(digest_hex: &str) -> String {
    let h = blake3::hash(digest_hex.as_bytes());
    let b = h.as_bytes();
    let mut u = [0u8; 16];
    u.copy_from_slice(&b[..16]);
    u[6] = (u[6] & 0x0f) | 0x50;
    u[8] = (u[8] & 0x3f) | 0x80;
    let x = hex::encode(u);
    format!("urn:uuid:{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// The SPDX document of image `name:tag` with root digest `digest`.
pub fn document(name: &str, tag: &str, digest: &str, epoch: u64, lock: Option<&ImageLock>, licences: Licences<'_>) -> Vec<u8> {
    let image_id = "SPDXRef-Image".to_string();
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": name,
        "versionInfo": tag,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": digest.trim_start_matches("sha256:")}],
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!("pkg:oci/{name}@{}", digest.replace(':', "%3A")),
        }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    let mut seen: BTreeSet<String> = BTreeSet::new();
    if let Some(lock) = lock {
        for (platform, pl) in &lock.platforms {
            let _ = platform;
            let id_of =
                |p: &PackageLock| format!("SPDXRef-Package-deb-{}-{}-{}", spdx_id(&p.name), spdx_id(&p.version), spdx_id(&p.architecture));
            for p in &pl.packages {
                let id = id_of(p);
                if !seen.insert(id.clone()) {
                    continue;
                }
                let suite = lock.requests.repositories.iter().find(|r| r.name == p.repository).map(|r| r.suite.as_str());
                let lic: BTreeSet<String> = licences(p).iter().map(|l| spdx_licence(l)).collect();
                let declared = if lic.is_empty() { "NOASSERTION".to_string() } else { lic.into_iter().collect::<Vec<_>>().join(" AND ") };
                let mut v = json!({
                    "SPDXID": id,
                    "name": p.name,
                    "versionInfo": p.version,
                    "downloadLocation": "NOASSERTION",
                    "filesAnalyzed": false,
                    "licenseConcluded": "NOASSERTION",
                    "licenseDeclared": declared,
                    "copyrightText": "NOASSERTION",
                    "supplier": p.maintainer.as_ref().map(|m| format!("Person: {m}")).unwrap_or_else(|| "NOASSERTION".into()),
                    "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
                    "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl(p, suite)}],
                });
                if let Some(h) = &p.homepage {
                    v["homepage"] = json!(h);
                }
                if let Some(s) = &p.source {
                    v["sourceInfo"] = json!(format!("built from source package {s}"));
                }
                packages.push(v);
                relationships.push(json!({"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
                for d in &p.depends {
                    if let Some(dep) = pl.packages.iter().find(|q| &q.name == d) {
                        relationships
                            .push(json!({"spdxElementId": id, "relationshipType": "DEPENDS_ON", "relatedSpdxElement": id_of(dep)}));
                    }
                }
            }
        }
    }
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{name}:{tag}"),
        "documentNamespace": urn_uuid(digest),
        "creationInfo": {"created": rfc3339(epoch), "creators": ["Tool: compose"]},
        "packages": packages,
        "relationships": relationships,
    });
    let mut out = canonical_json(&doc);
    out.push(b'\n');
    out
}

/// Licence short names declared by a DEP-5 `copyright` file (empty if it is not DEP-5).
pub fn dep5_licences(copyright: &str) -> Vec<String> {
    if !copyright.starts_with("Format:") {
        return Vec::new();
    }
    let mut out: BTreeSet<String> = BTreeSet::new();
    for line in copyright.lines() {
        if let Some(rest) = line.strip_prefix("License:") {
            let expr = rest.trim();
            if expr.is_empty() {
                continue;
            }
            for part in expr.split(['|', ',']).flat_map(|p| p.split(" or ")).flat_map(|p| p.split(" and ")) {
                let part = part.trim();
                if !part.is_empty() {
                    out.insert(part.to_string());
                }
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licences_and_purls() {
        assert_eq!(spdx_licence("GPL-2+"), "GPL-2.0-or-later");
        assert_eq!(spdx_licence("Expat"), "MIT");
        assert_eq!(spdx_licence("odd licence"), "LicenseRef-odd-licence");
        let c = "Format: https://example.invalid/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+ or MIT\n\nFiles: x\nLicense: BSD-3-clause\n";
        assert_eq!(dep5_licences(c), vec!["BSD-3-clause", "GPL-2+", "MIT"]);
        let p = PackageLock {
            name: "libfoo".into(),
            version: "1:2.0+dfsg-1~deb12u1".into(),
            architecture: "amd64".into(),
            repository: "debian-security".into(),
            ..Default::default()
        };
        assert_eq!(
            purl(&p, Some("bookworm-security")),
            "pkg:deb/debian/libfoo@1%3A2.0%2Bdfsg-1%7Edeb12u1?arch=amd64&distro=bookworm-security"
        );
        let u = urn_uuid("sha256:abc");
        assert_eq!(u.len(), "urn:uuid:".len() + 36);
        assert_eq!(u, urn_uuid("sha256:abc"));
    }

    #[test]
    fn document_is_deterministic() {
        let a = document("img", "1", "sha256:00", 0, None, &|_| vec![]);
        let b = document("img", "1", "sha256:00", 0, None, &|_| vec![]);
        assert_eq!(a, b);
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
    }
}
