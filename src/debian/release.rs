//! Trust anchor of a repository: loading an OpenPGP keyring, verifying the cleartext signature of
//! a suite's `InRelease` file, and parsing the signed `Release` text (suite metadata and the
//! SHA256 list of index files, from which the `Packages` index is chosen and checked).
//!
//! # What [`verify_inrelease`] checks
//!
//! The input must be an OpenPGP cleartext-signed message (nothing before the
//! `-----BEGIN PGP SIGNED MESSAGE-----` line, nothing but whitespace after the signature block).
//! It is accepted when **at least one** of its signatures passes all of these:
//!
//! * its issuer (issuer fingerprint or key id subpacket) is a primary key or a subkey of a
//!   certificate in the keyring, and the signature verifies cryptographically over the signed text
//!   with that key;
//! * it is a binary or text document signature, has a creation time, and uses a hash algorithm of
//!   at least 224 bits (MD5, SHA-1 and RIPEMD-160 are refused);
//! * it has not expired (Signature Expiration Time) at `now`;
//! * the primary key has a valid self-signature (a user ID certification or direct-key signature
//!   that verifies); the newest one gives the primary key's expiration time and key flags;
//! * the primary key has no key revocation signature that verifies (any reason, soft or hard);
//! * when a subkey signed: it has a subkey binding signature from the primary key that verifies,
//!   whose newest one carries the signing flag and an embedded primary-key binding ("back")
//!   signature that verifies; and no subkey revocation signature that verifies. When the primary
//!   key signed: its newest self-signature either has no key flags or has the signing flag;
//! * the signing key (and its primary key) was created no later than the signature, and has not
//!   expired at `now` nor at the signature's creation time.
//!
//! Not checked: designated revokers and third-party revocations, user ID revocations (the primary
//! key's validity does not depend on which user ID is primary), notations and critical unknown
//! subpackets, signatures dated in the future (`Valid-Until` of the Release is the freshness
//! check; see [`Release::check_valid_until`]), and the `Date:` field against the clock.
//!
//! When no signature passes, the error reports the first failure of a signature made by a key in
//! the keyring, or [`ReleaseError::UnknownKey`] if no signature was made by such a key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag};
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

/// A set of trusted OpenPGP certificates (public keys with their subkeys and self-signatures).
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
    skipped: usize,
}

impl Keyring {
    /// Load a keyring file: binary (concatenated transferable public keys, like
    /// `/usr/share/keyrings/debian-archive-keyring.gpg`) or ASCII-armored (one or more
    /// `PUBLIC KEY BLOCK`s). Certificates that fail to parse are skipped (see
    /// [`Keyring::skipped`]); a keyring with no usable certificate is an error.
    pub fn load(path: &Path) -> Result<Keyring, ReleaseError> {
        let data = std::fs::read(path).map_err(|source| ReleaseError::KeyringRead { path: path.to_path_buf(), source })?;
        Keyring::from_bytes(&data, path)
    }

    /// Parse keyring data; `path` is only used in messages.
    pub fn from_bytes(data: &[u8], path: &Path) -> Result<Keyring, ReleaseError> {
        let parse_err = |reason: String| ReleaseError::KeyringParse { path: path.to_path_buf(), reason };
        let mut keys = Vec::new();
        let mut skipped = 0;
        let start = data.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(data.len());
        if data[start..].starts_with(b"-----BEGIN PGP") {
            let text = std::str::from_utf8(data).map_err(|_| parse_err("armored keyring is not valid UTF-8".into()))?;
            const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
            let starts: Vec<usize> = text.match_indices(BEGIN).map(|(i, _)| i).collect();
            if starts.is_empty() {
                return Err(parse_err("no `PUBLIC KEY BLOCK` in armored data".into()));
            }
            for (n, &s) in starts.iter().enumerate() {
                let end = starts.get(n + 1).copied().unwrap_or(text.len());
                let (iter, _headers) =
                    SignedPublicKey::from_armor_many(&data[s..end]).map_err(|e| parse_err(format!("armored block {}: {e}", n + 1)))?;
                for key in iter {
                    match key {
                        Ok(k) => keys.push(k),
                        Err(_) => skipped += 1,
                    }
                }
            }
        } else {
            let iter = SignedPublicKey::from_bytes_many(data).map_err(|e| parse_err(e.to_string()))?;
            for key in iter {
                match key {
                    Ok(k) => keys.push(k),
                    Err(_) => skipped += 1,
                }
            }
        }
        if keys.is_empty() {
            return Err(ReleaseError::KeyringEmpty { path: path.to_path_buf() });
        }
        Ok(Keyring { keys, skipped })
    }

    /// Number of certificates loaded.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of certificates in the file that could not be parsed and were left out.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Upper-case hex fingerprints of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|k| format!("{:X}", k.fingerprint())).collect()
    }
}

/// Verify a cleartext-signed `InRelease` file against `keyring` at time `now` and return the
/// signed `Release` text (dash-escaping undone, trailing whitespace of lines removed as in the
/// signed form, `\n` line endings, ending in a newline — the cleartext framework does not sign
/// the final line break, so one is added). See the module documentation for what is checked.
pub fn verify_inrelease(data: &[u8], keyring: &Keyring, now: SystemTime) -> Result<Vec<u8>, ReleaseError> {
    let text = std::str::from_utf8(data).map_err(|_| ReleaseError::Malformed { reason: "not valid UTF-8".into() })?;
    const HEADER: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
    if !text.starts_with(HEADER) {
        if text.contains(HEADER) {
            return Err(ReleaseError::Malformed { reason: "data before `-----BEGIN PGP SIGNED MESSAGE-----`".into() });
        }
        return Err(ReleaseError::NotSigned);
    }
    const FOOTER: &str = "-----END PGP SIGNATURE-----";
    if let Some(end) = text.rfind(FOOTER) {
        let after = text[end + FOOTER.len()..].trim();
        if !after.is_empty() {
            return Err(ReleaseError::Malformed { reason: format!("{} bytes of data after `{FOOTER}`", after.len()) });
        }
    }
    // The parser's own messages can hold the rest of the input as a byte list: one line, cut.
    let (msg, _headers) = CleartextSignedMessage::from_string(text).map_err(|e| {
        let mut reason = e.to_string().lines().next().unwrap_or_default().to_string();
        if reason.len() > 160 {
            reason.truncate(reason.floor_char_boundary(150));
            reason.push('…');
        }
        ReleaseError::Malformed { reason }
    })?;
    if msg.signatures().is_empty() {
        return Err(ReleaseError::NotSigned);
    }
    let signed = msg.signed_text();

    let mut first_failure: Option<ReleaseError> = None;
    let mut unknown: Vec<String> = Vec::new();
    for sig in msg.signatures() {
        let candidates = candidates(keyring, sig);
        if candidates.is_empty() {
            unknown.push(issuer_name(sig));
            continue;
        }
        for cand in candidates {
            match check_signature(sig, &cand, signed.as_bytes(), now) {
                Ok(()) => {
                    let mut text = signed.replace("\r\n", "\n");
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    return Ok(text.into_bytes());
                }
                Err(e) => {
                    if first_failure.is_none() {
                        first_failure = Some(e);
                    }
                }
            }
        }
    }
    Err(first_failure.unwrap_or_else(|| ReleaseError::UnknownKey { issuers: unknown.join(", ") }))
}

/// A key of the keyring that may have made a signature.
struct Candidate<'a> {
    cert: &'a SignedPublicKey,
    subkey: Option<&'a SignedPublicSubKey>,
}

impl Candidate<'_> {
    fn name(&self) -> String {
        match self.subkey {
            None => format!("{:X}", self.cert.fingerprint()),
            Some(sub) => format!("{:X} (subkey of {:X})", sub.fingerprint(), self.cert.fingerprint()),
        }
    }
}

fn issuer_name(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        return format!("{fp:X}");
    }
    if let Some(id) = sig.issuer_key_id().first() {
        return hex::encode_upper(id.as_ref());
    }
    "(signature names no issuer)".into()
}

fn candidates<'a>(keyring: &'a Keyring, sig: &Signature) -> Vec<Candidate<'a>> {
    let fps = sig.issuer_fingerprint();
    let ids = sig.issuer_key_id();
    let anonymous = fps.is_empty() && ids.is_empty();
    let matches =
        |k: &dyn KeyDetails| anonymous || fps.iter().any(|fp| **fp == k.fingerprint()) || ids.iter().any(|id| **id == k.legacy_key_id());
    let mut out = Vec::new();
    for cert in &keyring.keys {
        if matches(&cert.primary_key) {
            out.push(Candidate { cert, subkey: None });
        }
        for sub in &cert.public_subkeys {
            if matches(&sub.key) {
                out.push(Candidate { cert, subkey: Some(sub) });
            }
        }
    }
    out
}

fn to_system(ts: pgp::types::Timestamp) -> SystemTime {
    SystemTime::from(ts)
}

fn add_secs(t: SystemTime, secs: u32) -> SystemTime {
    t + Duration::from_secs(u64::from(secs))
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| c.hashed_subpackets().any(|p| matches!(p.data, SubpacketData::KeyFlags(_))))
}

/// Newest of `sigs` by creation time (signatures without one sort first).
fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
}

fn check_signature(sig: &Signature, cand: &Candidate<'_>, signed: &[u8], now: SystemTime) -> Result<(), ReleaseError> {
    let key = cand.name();
    let bad = |reason: String| ReleaseError::BadSignature { key: key.clone(), reason };
    let invalid = |reason: String| ReleaseError::KeyInvalid { key: key.clone(), reason };
    let expired_key = |at: SystemTime| ReleaseError::KeyExpired { key: key.clone(), expired: format_time(at) };

    match sig.typ() {
        Some(SignatureType::Binary) | Some(SignatureType::Text) => {}
        other => return Err(bad(format!("not a document signature (type {other:?})"))),
    }
    match sig.hash_alg() {
        Some(HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160) | None => {
            return Err(ReleaseError::WeakHash {
                key: key.clone(),
                hash: sig.hash_alg().map(|h| h.to_string()).unwrap_or_else(|| "(unknown)".into()),
            })
        }
        Some(_) => {}
    }

    // Cryptographic check first: everything else is about a signature that is genuine.
    let verified = match cand.subkey {
        None => sig.verify(&cand.cert.primary_key, signed),
        Some(sub) => sig.verify(&sub.key, signed),
    };
    verified.map_err(|e| bad(e.to_string()))?;

    let created = sig.created().map(to_system).ok_or_else(|| bad("the signature has no creation time".into()))?;
    if let Some(exp) = sig.signature_expiration_time() {
        if exp.as_secs() != 0 {
            let at = add_secs(created, exp.as_secs());
            if at <= now {
                return Err(ReleaseError::SignatureExpired { key: key.clone(), expired: format_time(at) });
            }
        }
    }

    // The primary key: not revoked, has a valid self-signature, not expired.
    let primary = &cand.cert.primary_key;
    if let Some(rev) = cand
        .cert
        .details
        .revocation_signatures
        .iter()
        .find(|r| r.typ() == Some(SignatureType::KeyRevocation) && r.verify_key(primary).is_ok())
    {
        return Err(ReleaseError::KeyRevoked { key: key.clone(), reason: revocation_reason(rev) });
    }
    let user_sigs = cand.cert.details.users.iter().flat_map(|u| {
        u.signatures.iter().filter(move |s| {
            s.is_certification()
                && s.typ() != Some(SignatureType::CertRevocation)
                && s.verify_certification(primary, Tag::UserId, &u.id).is_ok()
        })
    });
    let direct_sigs =
        cand.cert.details.direct_signatures.iter().filter(|s| s.typ() == Some(SignatureType::Key) && s.verify_key(primary).is_ok());
    let self_sig = newest(user_sigs.chain(direct_sigs)).ok_or_else(|| invalid("the primary key has no valid self-signature".into()))?;
    let primary_created = to_system(primary.created_at());
    if primary_created > created {
        return Err(invalid(format!(
            "the primary key was created on {}, after the signature ({})",
            format_time(primary_created),
            format_time(created)
        )));
    }
    if let Some(exp) = self_sig.key_expiration_time() {
        if exp.as_secs() != 0 {
            let at = add_secs(primary_created, exp.as_secs());
            if at <= now || at <= created {
                return Err(expired_key(at));
            }
        }
    }

    match cand.subkey {
        None => {
            if has_key_flags(self_sig) && !self_sig.key_flags().sign() {
                return Err(invalid("the primary key is not marked for signing".into()));
            }
        }
        Some(sub) => {
            if let Some(rev) = sub
                .signatures
                .iter()
                .find(|r| r.typ() == Some(SignatureType::SubkeyRevocation) && r.verify_subkey_binding(primary, &sub.key).is_ok())
            {
                return Err(ReleaseError::KeyRevoked { key: key.clone(), reason: revocation_reason(rev) });
            }
            let binding = newest(
                sub.signatures
                    .iter()
                    .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding) && s.verify_subkey_binding(primary, &sub.key).is_ok()),
            )
            .ok_or_else(|| invalid("the subkey has no valid binding signature".into()))?;
            if !binding.key_flags().sign() {
                return Err(invalid("the subkey is not marked for signing".into()));
            }
            let back_ok = binding.embedded_signature().is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
            if !back_ok {
                return Err(invalid("the signing subkey has no valid primary key binding (back-signature)".into()));
            }
            let sub_created = to_system(sub.key.created_at());
            if sub_created > created {
                return Err(invalid(format!(
                    "the subkey was created on {}, after the signature ({})",
                    format_time(sub_created),
                    format_time(created)
                )));
            }
            if let Some(exp) = binding.key_expiration_time() {
                if exp.as_secs() != 0 {
                    let at = add_secs(sub_created, exp.as_secs());
                    if at <= now || at <= created {
                        return Err(expired_key(at));
                    }
                }
            }
        }
    }
    Ok(())
}

fn revocation_reason(rev: &Signature) -> String {
    let mut out = String::new();
    if let Some(code) = rev.revocation_reason_code() {
        out.push_str(&format!(" ({code:?}"));
        if let Some(text) = rev.revocation_reason_string() {
            let text = String::from_utf8_lossy(text);
            if !text.is_empty() {
                out.push_str(&format!(": {text}"));
            }
        }
        out.push(')');
    }
    out
}

/// The parsed `Release` file of a suite (the text [`verify_inrelease`] returns).
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
    use std::process::{Command, Stdio};

    const DAY: Duration = Duration::from_secs(86400);

    /// A throwaway GnuPG home; kills its agent on drop.
    struct Gpg {
        home: tempfile::TempDir,
    }

    impl Gpg {
        fn new() -> Option<Gpg> {
            if !Path::new("/usr/bin/gpg").exists() {
                return None;
            }
            // Short path: the agent's socket path must fit in sun_path.
            let home = tempfile::Builder::new().prefix("gpg").tempdir_in("/tmp").expect("tempdir");
            Some(Gpg { home })
        }

        fn run(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
            use std::io::Write;
            let mut child = Command::new("/usr/bin/gpg")
                .arg("--homedir")
                .arg(self.home.path())
                .args(["--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback"])
                .args(["--passphrase", ""])
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn gpg");
            child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
            let out = child.wait_with_output().expect("gpg");
            assert!(out.status.success(), "gpg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        }

        /// Generate a key; returns its fingerprint.
        fn gen(&self, uid: &str, algo: &str, usage: &str, expire: &str) -> String {
            self.run(&["--quick-gen-key", uid, algo, usage, expire], b"");
            self.fpr(uid)
        }

        fn fpr(&self, uid: &str) -> String {
            let out = self.run(&["--with-colons", "--list-keys", uid], b"");
            let text = String::from_utf8(out).expect("utf8");
            text.lines().find(|l| l.starts_with("fpr:")).and_then(|l| l.split(':').nth(9)).expect("fingerprint").to_string()
        }

        fn clearsign(&self, signer: &str, text: &str, extra: &[&str]) -> Vec<u8> {
            let mut args = vec!["--clearsign", "--digest-algo", "SHA256", "-u", signer];
            args.extend_from_slice(extra);
            self.run(&args, text.as_bytes())
        }

        fn export(&self, who: &[&str], armor: bool) -> Vec<u8> {
            let mut args = vec!["--export"];
            if armor {
                args.push("--armor");
            }
            args.extend_from_slice(who);
            self.run(&args, b"")
        }

        fn keyring(&self, who: &[&str]) -> Keyring {
            Keyring::from_bytes(&self.export(who, false), Path::new("test.gpg")).expect("keyring")
        }
    }

    impl Drop for Gpg {
        fn drop(&mut self) {
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(self.home.path())
                .args(["--kill", "gpg-agent"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    const TEXT: &str = "Origin: Test\nSuite: stable\nCodename: testing\n\
        Date: Sat, 11 Jul 2026 10:16:37 UTC\nSHA256:\n \
        0000000000000000000000000000000000000000000000000000000000000000 0 main/x\n\
        -dash line\n";

    #[test]
    fn good_tampered_other_unsigned() {
        let Some(gpg) = Gpg::new() else { return };
        let a = gpg.gen("a <a@example.invalid>", "ed25519", "sign", "never");
        let b = gpg.gen("b <b@example.invalid>", "ed25519", "sign", "never");
        let signed = gpg.clearsign(&a, TEXT, &[]);
        let ring_a = gpg.keyring(&[&a]);
        let now = SystemTime::now();

        let out = verify_inrelease(&signed, &ring_a, now).expect("good signature");
        assert_eq!(String::from_utf8(out).expect("utf8"), TEXT);

        // Tampered text.
        let tampered = String::from_utf8(signed.clone()).expect("utf8").replace("Suite: stable", "Suite: evil");
        let e = verify_inrelease(tampered.as_bytes(), &ring_a, now).unwrap_err();
        assert!(matches!(e, ReleaseError::BadSignature { .. }), "{e}");
        assert!(e.to_string().contains("does not verify"), "{e}");

        // Other key.
        let ring_b = gpg.keyring(&[&b]);
        let e = verify_inrelease(&signed, &ring_b, now).unwrap_err();
        assert!(matches!(e, ReleaseError::UnknownKey { .. }), "{e}");
        assert!(e.to_string().contains(&a), "{e}");

        // Unsigned.
        let e = verify_inrelease(TEXT.as_bytes(), &ring_a, now).unwrap_err();
        assert!(matches!(e, ReleaseError::NotSigned), "{e}");
        assert!(e.to_string().contains("`InRelease` is not signed"), "{e}");

        // A keyring with both keys works, and so does one signed by both.
        let both = gpg.keyring(&[&a, &b]);
        assert_eq!(both.len(), 2);
        verify_inrelease(&signed, &both, now).expect("two-key keyring");
        let twice = gpg.clearsign(&a, TEXT, &["-u", &b]);
        verify_inrelease(&twice, &ring_b, now).expect("one of two signatures suffices");

        // Data before the signed message.
        let mut leading = b"Suite: evil\n".to_vec();
        leading.extend_from_slice(&signed);
        let e = verify_inrelease(&leading, &ring_a, now).unwrap_err();
        assert!(matches!(e, ReleaseError::Malformed { .. }), "{e}");

        // Garbage after the signature (issue 12, defect 12: this printed a byte-array dump).
        let mut trailing = signed.clone();
        trailing.extend_from_slice(b"Suite: evil\n");
        let e = verify_inrelease(&trailing, &ring_a, now).unwrap_err();
        assert!(matches!(e, ReleaseError::Malformed { .. }), "{e}");
        assert_eq!(e.to_string(), "failed to parse `InRelease` signature: 11 bytes of data after `-----END PGP SIGNATURE-----`");
        // A damaged armour: one short line.
        let damaged = String::from_utf8(signed.clone())
            .expect("utf8")
            .replace("-----BEGIN PGP SIGNATURE-----", "-----BEGIN PGP SIGNATURE-----\n@@@@");
        let e = verify_inrelease(damaged.as_bytes(), &ring_a, now).unwrap_err();
        assert!(e.to_string().len() < 220 && !e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn armored_keyring_and_rsa() {
        let Some(gpg) = Gpg::new() else { return };
        let r = gpg.gen("r <r@example.invalid>", "rsa2048", "sign", "never");
        let e = gpg.gen("e <e@example.invalid>", "ed25519", "sign", "never");
        let signed = gpg.clearsign(&r, TEXT, &[]);
        let dir = tempfile::tempdir().expect("tempdir");
        // Two separate armored blocks in one file.
        let mut armored = gpg.export(&[&e], true);
        armored.extend_from_slice(&gpg.export(&[&r], true));
        let path = dir.path().join("keys.asc");
        std::fs::write(&path, &armored).expect("write");
        let ring = Keyring::load(&path).expect("armored keyring");
        assert_eq!(ring.len(), 2);
        assert!(ring.fingerprints().contains(&r));
        verify_inrelease(&signed, &ring, SystemTime::now()).expect("rsa signature");

        let e = Keyring::load(&dir.path().join("missing.gpg")).unwrap_err();
        assert!(e.to_string().contains("failed to read keyring"), "{e}");
        std::fs::write(dir.path().join("junk.gpg"), b"\x99\x00junk").expect("write");
        assert!(Keyring::load(&dir.path().join("junk.gpg")).is_err());
    }

    #[test]
    fn expired_key_and_signature() {
        let Some(gpg) = Gpg::new() else { return };
        let k = gpg.gen("x <x@example.invalid>", "ed25519", "sign", "1d");
        let signed = gpg.clearsign(&k, TEXT, &[]);
        let ring = gpg.keyring(&[&k]);
        let now = SystemTime::now();
        verify_inrelease(&signed, &ring, now).expect("valid today");
        let e = verify_inrelease(&signed, &ring, now + 2 * DAY).unwrap_err();
        assert!(matches!(e, ReleaseError::KeyExpired { .. }), "{e}");
        assert!(e.to_string().contains("expired on"), "{e}");

        let n = gpg.gen("n <n@example.invalid>", "ed25519", "sign", "never");
        let signed = gpg.clearsign(&n, TEXT, &["--default-sig-expire", "1d"]);
        let ring = gpg.keyring(&[&n]);
        verify_inrelease(&signed, &ring, now).expect("signature valid today");
        let e = verify_inrelease(&signed, &ring, now + 2 * DAY).unwrap_err();
        assert!(matches!(e, ReleaseError::SignatureExpired { .. }), "{e}");
    }

    #[test]
    fn signing_subkey_and_revocation() {
        let Some(gpg) = Gpg::new() else { return };
        let p = gpg.gen("p <p@example.invalid>", "ed25519", "cert", "never");
        gpg.run(&["--quick-add-key", &p, "ed25519", "sign", "2d"], b"");
        let signed = gpg.clearsign(&p, TEXT, &[]);
        let ring = gpg.keyring(&[&p]);
        let now = SystemTime::now();
        verify_inrelease(&signed, &ring, now).expect("subkey signature");
        // The subkey expires before the primary.
        let e = verify_inrelease(&signed, &ring, now + 3 * DAY).unwrap_err();
        assert!(matches!(e, ReleaseError::KeyExpired { .. }), "{e}");
        assert!(e.to_string().contains("subkey of"), "{e}");

        let q = gpg.gen("q <q@example.invalid>", "ed25519", "sign", "never");
        let signed_q = gpg.clearsign(&q, TEXT, &[]);
        // Revoke q with the certificate gpg wrote at generation.
        let rev_path = gpg.home.path().join("openpgp-revocs.d").join(format!("{q}.rev"));
        let rev = std::fs::read_to_string(rev_path).expect("revocation certificate");
        let rev = rev.replace(":-----BEGIN", "-----BEGIN");
        gpg.run(&["--import"], rev.as_bytes());
        let ring = gpg.keyring(&[&q]);
        let e = verify_inrelease(&signed_q, &ring, now).unwrap_err();
        assert!(matches!(e, ReleaseError::KeyRevoked { .. }), "{e}");
    }

    #[test]
    fn real_bookworm_inrelease() {
        let inrelease = Path::new("/tmp/InRelease");
        let keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
        if !inrelease.exists() || !keyring.exists() {
            return;
        }
        let data = std::fs::read(inrelease).expect("read");
        let t0 = std::time::Instant::now();
        let ring = Keyring::load(keyring).expect("keyring");
        let t1 = std::time::Instant::now();
        // Checked at the file's own date so the test does not age.
        let text = String::from_utf8_lossy(&data).into_owned();
        let date = text.lines().find_map(|l| l.strip_prefix("Date: ")).and_then(parse_date).expect("Date");
        let out = verify_inrelease(&data, &ring, date + DAY).expect("bookworm InRelease");
        let t2 = std::time::Instant::now();
        eprintln!("keyring load {:?} ({} keys, {} skipped), verify {:?}", t1 - t0, ring.len(), ring.skipped(), t2 - t1);
        let rel = parse_release(std::str::from_utf8(&out).expect("utf8")).expect("parse");
        assert_eq!(rel.codename.as_deref(), Some("bookworm"));
        assert!(rel.acquire_by_hash);
        let (path, size, hash) = rel.index_path("main", "amd64").expect("index");
        assert_eq!(path, "main/binary-amd64/Packages.xz");
        assert!(size > 1_000_000);
        assert_eq!(hash.len(), 64);

        // Only the Ed25519 release key: one of the three signatures suffices.
        let stable = Path::new("/usr/share/keyrings/debian-archive-bookworm-stable.gpg");
        if stable.exists() {
            let ring = Keyring::load(stable).expect("stable keyring");
            verify_inrelease(&data, &ring, date + DAY).expect("Ed25519 signature");
        }
        // Keys of another release only: no signature is by a known key.
        let other = Path::new("/usr/share/keyrings/debian-archive-bullseye-stable.gpg");
        if other.exists() {
            let ring = Keyring::load(other).expect("bullseye keyring");
            let e = verify_inrelease(&data, &ring, date + DAY).unwrap_err();
            assert!(matches!(e, ReleaseError::UnknownKey { .. }), "{e}");
        }
        // After the keys expire (2031), the signatures are refused.
        let later = parse_date("1 Jan 2036 00:00:00 UTC").expect("date");
        let e = verify_inrelease(&data, &ring, later).unwrap_err();
        assert!(matches!(e, ReleaseError::KeyExpired { .. }), "{e}");

        // One byte changed in the signed text is caught.
        let bad = text.replacen("Codename: bookworm", "Codename: bookwurm", 1);
        assert!(verify_inrelease(bad.as_bytes(), &ring, date + DAY).is_err());
    }

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
