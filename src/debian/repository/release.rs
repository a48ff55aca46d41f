//! The signed `Release` file of a suite: parsing its text (suite metadata and the SHA256 list of
//! index files, from which the `Packages` index is chosen and checked), its `Valid-Until`
//! freshness check, and the dates it carries. The errors of the whole trust chain (keyring,
//! `InRelease` signature, `Release` text) are [`ReleaseError`]; the signature is checked by
//! [`super::inrelease`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReleaseError {
    #[error("failed to read keyring `{path}`: {source}")]
    KeyringRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse keyring `{path}`: {reason}")]
    KeyringParse { path: PathBuf, reason: String },
    #[error("keyring `{path}` holds no usable OpenPGP public key")]
    KeyringEmpty { path: PathBuf },
    #[error("`InRelease` is not signed (expected an OpenPGP cleartext-signed message)")]
    NotSigned,
    #[error("failed to parse `InRelease` signature: {reason}")]
    Malformed { reason: String },
    #[error("`InRelease` is signed only by keys that are not in the keyring: {issuers}")]
    UnknownKey { issuers: String },
    #[error("`InRelease` signature by key {key} does not verify: {reason}")]
    BadSignature { key: String, reason: String },
    #[error("`InRelease` signature by key {key} uses the weak hash algorithm {hash}")]
    WeakHash { key: String, hash: String },
    #[error("`InRelease` is signed by key {key}, which expired on {expired}")]
    KeyExpired { key: String, expired: String },
    #[error("`InRelease` signature by key {key} expired on {expired}")]
    SignatureExpired { key: String, expired: String },
    #[error("`InRelease` is signed by key {key}, which is revoked{reason}")]
    KeyRevoked { key: String, reason: String },
    #[error("`InRelease` is signed by key {key}, which is not valid for signing: {reason}")]
    KeyInvalid { key: String, reason: String },
    #[error("failed to parse `Release`: line {line}: {reason}")]
    Parse { line: usize, reason: String },
    #[error("failed to parse `Release`: field `{field}`: invalid date `{value}`")]
    BadDate { field: String, value: String },
    #[error("Release file expired on {valid_until} (Valid-Until); its metadata may be stale or replayed")]
    Expired { valid_until: String },
}

/// The parsed `Release` file of a suite (the text [`super::inrelease::verify_inrelease`] returns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub date: Option<String>,
    pub valid_until: Option<String>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    pub acquire_by_hash: bool,
    /// Path below `dists/SUITE/` → (size, lower-case hex sha256).
    pub sha256: BTreeMap<String, (u64, String)>,
}

impl Release {
    /// The `Packages` index of `component` and `arch` listed in the SHA256 field, preferring
    /// `Packages.xz`, then `Packages.gz`, then the uncompressed `Packages`:
    /// `(path below dists/SUITE/, size, sha256)`.
    pub fn index_path(&self, component: &str, arch: &str) -> Option<(String, u64, String)> {
        ["Packages.xz", "Packages.gz", "Packages"].iter().find_map(|name| {
            let path = format!("{component}/binary-{arch}/{name}");
            self.sha256.get(&path).map(|(size, hash)| (path.clone(), *size, hash.clone()))
        })
    }

    /// Fail with [`ReleaseError::Expired`] when `Valid-Until` is present and not after `now`,
    /// unless `allow_expired`. An unparseable `Valid-Until` is an error either way.
    pub fn check_valid_until(&self, now: SystemTime, allow_expired: bool) -> Result<(), ReleaseError> {
        let Some(value) = &self.valid_until else {
            return Ok(());
        };
        let until = parse_date(value).ok_or_else(|| ReleaseError::BadDate { field: "Valid-Until".into(), value: value.clone() })?;
        if until <= now && !allow_expired {
            return Err(ReleaseError::Expired { valid_until: value.clone() });
        }
        Ok(())
    }

    /// `Date:` as a time, if present and parseable.
    pub fn date_time(&self) -> Option<SystemTime> {
        self.date.as_deref().and_then(parse_date)
    }
}

/// The by-hash location of an index: `main/binary-amd64/Packages.xz` with hash `H` becomes
/// `main/binary-amd64/by-hash/SHA256/H`.
pub fn by_hash_path(path: &str, sha256: &str) -> String {
    match path.rfind('/') {
        Some(i) => format!("{}/by-hash/SHA256/{sha256}", &path[..i]),
        None => format!("by-hash/SHA256/{sha256}"),
    }
}

/// A field of the Release stanza: lower-cased name, first-line value, continuation lines with
/// their line numbers, line number of the field.
type RawField = (String, String, Vec<(usize, String)>, usize);

/// Parse the `Release` text (one deb822 stanza). Field names are case-insensitive; unknown
/// fields are ignored. Every line of the `SHA256` field must be `HEX SIZE PATH`.
pub fn parse_release(text: &str) -> Result<Release, ReleaseError> {
    let mut rel = Release::default();
    let mut fields: Vec<RawField> = Vec::new();
    let mut seen_content = false;
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            if seen_content {
                break; // a Release file has one stanza; anything after is not ours
            }
            continue;
        }
        if line.starts_with('#') && !seen_content {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some(last) = fields.last_mut() else {
                return Err(ReleaseError::Parse { line: line_no, reason: "continuation line before any field".into() });
            };
            last.2.push((line_no, line.trim().to_string()));
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReleaseError::Parse { line: line_no, reason: format!("expected `Field: value`, got `{line}`") });
        };
        seen_content = true;
        fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string(), Vec::new(), line_no));
    }
    if fields.is_empty() {
        return Err(ReleaseError::Parse { line: 1, reason: "the file is empty".into() });
    }

    for (name, value, cont, line) in fields {
        let words = |v: &str| v.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        match name.as_str() {
            "suite" => rel.suite = Some(value),
            "codename" => rel.codename = Some(value),
            "date" => rel.date = Some(value),
            "valid-until" => rel.valid_until = Some(value),
            "architectures" => rel.architectures = words(&value),
            "components" => rel.components = words(&value),
            "acquire-by-hash" => rel.acquire_by_hash = value.eq_ignore_ascii_case("yes"),
            "sha256" => {
                let mut entries: Vec<(usize, String)> = Vec::new();
                if !value.is_empty() {
                    entries.push((line, value));
                }
                entries.extend(cont);
                for (line, entry) in entries {
                    let mut parts = entry.split_whitespace();
                    let (Some(hash), Some(size), Some(path), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                        return Err(ReleaseError::Parse { line, reason: format!("SHA256 entry `{entry}` is not `HASH SIZE PATH`") });
                    };
                    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(ReleaseError::Parse {
                            line,
                            reason: format!("SHA256 entry for `{path}` has an invalid hash `{hash}`"),
                        });
                    }
                    let size: u64 = size.parse().map_err(|_| ReleaseError::Parse {
                        line,
                        reason: format!("SHA256 entry for `{path}` has an invalid size `{size}`"),
                    })?;
                    rel.sha256.insert(path.to_string(), (size, hash.to_ascii_lowercase()));
                }
            }
            _ => {}
        }
    }
    Ok(rel)
}

/// Parse an RFC 2822 date as used in Release files: `Sat, 11 Jul 2026 10:16:37 UTC` (weekday
/// optional; zone `UTC`, `GMT`, `Z` or `+HHMM`/`-HHMM`).
pub fn parse_date(s: &str) -> Option<SystemTime> {
    let mut parts: Vec<&str> = s.split_whitespace().collect();
    if parts.first().is_some_and(|p| p.ends_with(',')) {
        parts.remove(0);
    }
    let (day, month, year, time, zone) = match parts.as_slice() {
        [d, m, y, t] => (*d, *m, *y, *t, "UTC"),
        [d, m, y, t, z] => (*d, *m, *y, *t, *z),
        _ => return None,
    };
    let day: u32 = day.parse().ok()?;
    let month = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        .iter()
        .position(|m| month.get(..3).is_some_and(|p| p.eq_ignore_ascii_case(m)))? as u32
        + 1;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let sec: i64 = hms.next().unwrap_or("0").parse().ok()?;
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let offset: i64 = match zone {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh: i64 = z.get(1..3)?.parse().ok()?;
            let mm: i64 = z.get(3..5)?.parse().ok()?;
            let off = hh * 3600 + mm * 60;
            if z.starts_with('-') {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86400 + h * 3600 + mi * 60 + sec - offset;
    if secs >= 0 {
        Some(UNIX_EPOCH + Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// Format a time as `YYYY-MM-DD HH:MM:SS UTC` for messages.
pub fn format_time(t: SystemTime) -> String {
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

// Howard Hinnant's algorithms.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "Origin: Debian\n\
Label: Debian\n\
Suite: oldstable\n\
Codename: bookworm\n\
Date: Sat, 11 Jul 2026 10:16:37 UTC\n\
Valid-Until: Sat, 18 Jul 2026 10:16:37 UTC\n\
Acquire-By-Hash: yes\n\
Architectures: all amd64 arm64\n\
Components: main contrib\n\
Description: Debian 12\n\
MD5Sum:\n 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all\n\
SHA256:\n \
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 100 main/binary-amd64/Packages\n \
BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB 20 main/binary-amd64/Packages.gz\n \
cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc 10 main/binary-arm64/Packages\n";

    #[test]
    fn release_parsing() {
        let rel = parse_release(RELEASE).expect("parse");
        assert_eq!(rel.suite.as_deref(), Some("oldstable"));
        assert_eq!(rel.codename.as_deref(), Some("bookworm"));
        assert_eq!(rel.date.as_deref(), Some("Sat, 11 Jul 2026 10:16:37 UTC"));
        assert_eq!(rel.architectures, vec!["all", "amd64", "arm64"]);
        assert_eq!(rel.components, vec!["main", "contrib"]);
        assert!(rel.acquire_by_hash);
        assert_eq!(rel.sha256.len(), 3);
        // gz preferred over plain when there is no xz; hash lower-cased.
        let (path, size, hash) = rel.index_path("main", "amd64").expect("amd64");
        assert_eq!(path, "main/binary-amd64/Packages.gz");
        assert_eq!(size, 20);
        assert_eq!(hash, "b".repeat(64));
        assert_eq!(rel.index_path("main", "arm64").expect("arm64").0, "main/binary-arm64/Packages");
        assert!(rel.index_path("contrib", "amd64").is_none());
        assert_eq!(by_hash_path(&path, &hash), format!("main/binary-amd64/by-hash/SHA256/{}", "b".repeat(64)));
        assert_eq!(by_hash_path("Packages", "ab"), "by-hash/SHA256/ab");

        let bad = RELEASE.replace(" 10 main/binary-arm64", " ten main/binary-arm64");
        let e = parse_release(&bad).unwrap_err().to_string();
        assert!(e.contains("line 16") && e.contains("invalid size"), "{e}");
        let bad = RELEASE.replace("cccc", "zzzz");
        assert!(parse_release(&bad).is_err());
        assert!(parse_release("").is_err());
        assert!(parse_release("no colon here\n").is_err());
    }

    #[test]
    fn valid_until() {
        let rel = parse_release(RELEASE).expect("parse");
        let before = parse_date("Fri, 17 Jul 2026 00:00:00 UTC").expect("date");
        let after = parse_date("Sun, 19 Jul 2026 00:00:00 +0000").expect("date");
        rel.check_valid_until(before, false).expect("still valid");
        let e = rel.check_valid_until(after, false).unwrap_err();
        assert!(e.to_string().contains("Release file expired on Sat, 18 Jul 2026 10:16:37 UTC"), "{e}");
        rel.check_valid_until(after, true).expect("allowed");
        let none = Release::default();
        none.check_valid_until(after, false).expect("no Valid-Until");
        let garbled = Release { valid_until: Some("tomorrow".into()), ..Release::default() };
        assert!(matches!(garbled.check_valid_until(before, true), Err(ReleaseError::BadDate { .. })));
    }

    #[test]
    fn dates() {
        let t = parse_date("Sat, 11 Jul 2026 10:16:37 UTC").expect("date");
        assert_eq!(t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs(), 1_783_764_997);
        assert_eq!(format_time(t), "2026-07-11 10:16:37 UTC");
        assert_eq!(parse_date("11 Jul 2026 12:16:37 +0200"), Some(t), "offset applied");
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(parse_date("Thu, 29 Feb 2024 23:59:59 GMT").expect("leap")), "2024-02-29 23:59:59 UTC");
        assert!(parse_date("yesterday").is_none());
        assert!(parse_date("11 abé 2026 10:16:37 UTC").is_none());
        assert!(parse_date("11 Jul 2026 10:16:37 +1é2").is_none());
        assert!(parse_date("Sat, 11 Foo 2026 10:16:37 UTC").is_none());
    }
}
