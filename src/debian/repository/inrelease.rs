//! Trust anchor of a repository: loading an OpenPGP keyring ([`Keyring`]) and verifying the
//! cleartext signature of a suite's `InRelease` file ([`verify_inrelease`]), which yields the
//! signed `Release` text that [`super::release`] parses.
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
//! check; see [`super::release::Release::check_valid_until`]), and the `Date:` field against the clock.
//!
//! When no signature passes, the error reports the first failure of a signature made by a key in
//! the keyring, or [`ReleaseError::UnknownKey`] if no signature was made by such a key.

use std::path::Path;
use std::time::{Duration, SystemTime};

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag};

use super::release::{format_time, ReleaseError};

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

fn bad_signature(key: &str, reason: String) -> ReleaseError {
    ReleaseError::BadSignature { key: key.to_owned(), reason }
}

fn key_invalid(key: &str, reason: String) -> ReleaseError {
    ReleaseError::KeyInvalid { key: key.to_owned(), reason }
}

/// Checks one signature made by `cand` over `signed`, in this order: what kind of signature it
/// is, that it verifies, that it has not expired, then the primary key, then the signing subkey
/// (or the primary key's signing flag).
fn check_signature(sig: &Signature, cand: &Candidate<'_>, signed: &[u8], now: SystemTime) -> Result<(), ReleaseError> {
    let key = cand.name();
    check_document_signature(sig, &key)?;

    // Cryptographic check first: everything else is about a signature that is genuine.
    let verified = match cand.subkey {
        None => sig.verify(&cand.cert.primary_key, signed),
        Some(sub) => sig.verify(&sub.key, signed),
    };
    verified.map_err(|e| bad_signature(&key, e.to_string()))?;

    let created = signature_created(sig, &key, now)?;
    let self_sig = check_primary_key(cand.cert, &key, created, now)?;
    match cand.subkey {
        None => {
            if has_key_flags(self_sig) && !self_sig.key_flags().sign() {
                return Err(key_invalid(&key, "the primary key is not marked for signing".into()));
            }
        }
        Some(sub) => check_signing_subkey(&cand.cert.primary_key, sub, &key, created, now)?,
    }
    Ok(())
}

/// A binary or text document signature, with a hash algorithm that is not weak.
fn check_document_signature(sig: &Signature, key: &str) -> Result<(), ReleaseError> {
    match sig.typ() {
        Some(SignatureType::Binary) | Some(SignatureType::Text) => {}
        other => return Err(bad_signature(key, format!("not a document signature (type {other:?})"))),
    }
    match sig.hash_alg() {
        Some(HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160) | None => Err(ReleaseError::WeakHash {
            key: key.to_owned(),
            hash: sig.hash_alg().map(|h| h.to_string()).unwrap_or_else(|| "(unknown)".into()),
        }),
        Some(_) => Ok(()),
    }
}

/// The signature's creation time, once it is known not to have expired at `now`.
fn signature_created(sig: &Signature, key: &str, now: SystemTime) -> Result<SystemTime, ReleaseError> {
    let created = sig.created().map(to_system).ok_or_else(|| bad_signature(key, "the signature has no creation time".into()))?;
    if let Some(exp) = sig.signature_expiration_time() {
        if exp.as_secs() != 0 {
            let at = add_secs(created, exp.as_secs());
            if at <= now {
                return Err(ReleaseError::SignatureExpired { key: key.to_owned(), expired: format_time(at) });
            }
        }
    }
    Ok(created)
}

/// The primary key of `cert`: not revoked, with a valid self-signature (the newest is returned),
/// created no later than the signature, and not expired.
fn check_primary_key<'a>(
    cert: &'a SignedPublicKey,
    key: &str,
    created: SystemTime,
    now: SystemTime,
) -> Result<&'a Signature, ReleaseError> {
    let primary = &cert.primary_key;
    if let Some(rev) =
        cert.details.revocation_signatures.iter().find(|r| r.typ() == Some(SignatureType::KeyRevocation) && r.verify_key(primary).is_ok())
    {
        return Err(ReleaseError::KeyRevoked { key: key.to_owned(), reason: revocation_reason(rev) });
    }
    let user_sigs = cert.details.users.iter().flat_map(|u| {
        u.signatures.iter().filter(move |s| {
            s.is_certification()
                && s.typ() != Some(SignatureType::CertRevocation)
                && s.verify_certification(primary, Tag::UserId, &u.id).is_ok()
        })
    });
    let direct_sigs =
        cert.details.direct_signatures.iter().filter(|s| s.typ() == Some(SignatureType::Key) && s.verify_key(primary).is_ok());
    let self_sig =
        newest(user_sigs.chain(direct_sigs)).ok_or_else(|| key_invalid(key, "the primary key has no valid self-signature".into()))?;
    check_key_dates("primary key", to_system(primary.created_at()), self_sig, key, created, now)?;
    Ok(self_sig)
}

/// A signing subkey: not revoked, bound to `primary` by a binding signature whose newest carries
/// the signing flag and a valid back-signature, created no later than the signature, and not
/// expired.
fn check_signing_subkey(
    primary: &PublicKey,
    sub: &SignedPublicSubKey,
    key: &str,
    created: SystemTime,
    now: SystemTime,
) -> Result<(), ReleaseError> {
    if let Some(rev) = sub
        .signatures
        .iter()
        .find(|r| r.typ() == Some(SignatureType::SubkeyRevocation) && r.verify_subkey_binding(primary, &sub.key).is_ok())
    {
        return Err(ReleaseError::KeyRevoked { key: key.to_owned(), reason: revocation_reason(rev) });
    }
    let binding = newest(
        sub.signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding) && s.verify_subkey_binding(primary, &sub.key).is_ok()),
    )
    .ok_or_else(|| key_invalid(key, "the subkey has no valid binding signature".into()))?;
    if !binding.key_flags().sign() {
        return Err(key_invalid(key, "the subkey is not marked for signing".into()));
    }
    let back_ok = binding.embedded_signature().is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
    if !back_ok {
        return Err(key_invalid(key, "the signing subkey has no valid primary key binding (back-signature)".into()));
    }
    check_key_dates("subkey", to_system(sub.key.created_at()), binding, key, created, now)
}

/// A key (`what`: "primary key" or "subkey") created at `key_created` must predate the signature
/// made at `created`, and must not have expired (by the key expiration time of `binding`, its
/// newest self- or binding signature) at `now` nor at `created`.
fn check_key_dates(
    what: &str,
    key_created: SystemTime,
    binding: &Signature,
    key: &str,
    created: SystemTime,
    now: SystemTime,
) -> Result<(), ReleaseError> {
    if key_created > created {
        return Err(key_invalid(
            key,
            format!("the {what} was created on {}, after the signature ({})", format_time(key_created), format_time(created)),
        ));
    }
    if let Some(exp) = binding.key_expiration_time() {
        if exp.as_secs() != 0 {
            let at = add_secs(key_created, exp.as_secs());
            if at <= now || at <= created {
                return Err(ReleaseError::KeyExpired { key: key.to_owned(), expired: format_time(at) });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::repository::release::{parse_date, parse_release};
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

        // Garbage after the signature is reported by its size (the parser's own message dumped it as
        // a byte array).
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
}
