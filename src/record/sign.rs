//! Signing keys and signatures for cache records, in the style of a Nix
//! binary cache.
//!
//! This module owns the key text formats (compatible with
//! `nix-store --generate-binary-cache-key`), key generation, writing a new
//! secret key file safely, signing, verification, and the trust decision
//! ([`TrustedKeys::verdict`]) over a record's signatures.
//!
//! Formats:
//! - secret key: `NAME:BASE64(32-byte seed ‖ 32-byte public key)`
//! - public key: `NAME:BASE64(32-byte public key)`
//! - `NAME` is 1 to 128 characters of `[A-Za-z0-9._-]`; base64 is standard
//!   with padding.
//!
//! Errors never contain secret key material.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

const SEED_LEN: usize = ed25519_dalek::SECRET_KEY_LENGTH;
const PUBLIC_LEN: usize = ed25519_dalek::PUBLIC_KEY_LENGTH;
const SECRET_LEN: usize = SEED_LEN + PUBLIC_LEN;
const SIGNATURE_LEN: usize = ed25519_dalek::SIGNATURE_LENGTH;
const MAX_NAME_LEN: usize = 128;

/// Why a key could not be parsed, generated, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("expected NAME:BASE64 with a {kind} key, got empty text")]
    Empty { kind: &'static str },
    #[error("expected NAME:BASE64 with a {kind} key, found no `:`")]
    MissingColon { kind: &'static str },
    #[error("invalid key name {name:?}: expected 1 to 128 characters of [A-Za-z0-9._-]")]
    BadName { name: String },
    #[error("expected NAME:BASE64 with a {kind} key, but the base64 after `{name}:` is invalid")]
    BadBase64 {
        kind: &'static str,
        name: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("expected NAME:BASE64 with a {expected}-byte {kind} key, got {got} bytes")]
    WrongLength { kind: &'static str, expected: usize, got: usize },
    #[error("public key `{name}` is not a valid ed25519 point")]
    BadPublicKey { name: String },
    #[error("secret key `{name}`: the embedded public key does not match the seed")]
    PublicMismatch { name: String },
    #[error("failed to get random bytes for a new key: {0}")]
    Random(getrandom::Error),
    #[error("invalid secret key in `{path}`")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<KeyError>,
    },
    #[error("invalid trusted key `{entry}`")]
    ListEntry {
        entry: String,
        #[source]
        source: Box<KeyError>,
    },
    #[error("refusing to overwrite existing key file `{path}`")]
    Exists { path: PathBuf },
    #[error(transparent)]
    Io(#[from] crate::util::IoError),
}

/// A named ed25519 signing key.
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

/// A named ed25519 verifying key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

/// One signature over a record: the signing key's name and the base64 of the
/// 64-byte ed25519 signature.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signature {
    pub key: String,
    pub sig: String,
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadName { name: name.to_owned() })
    }
}

/// Split `NAME:BASE64`, check the name, decode the base64 and check its length.
fn split_key<const N: usize>(text: &str, kind: &'static str) -> Result<(String, [u8; N]), KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Empty { kind });
    }
    let (name, b64) = text.split_once(':').ok_or(KeyError::MissingColon { kind })?;
    check_name(name)?;
    let mut bytes = STANDARD.decode(b64).map_err(|source| KeyError::BadBase64 { kind, name: name.to_owned(), source })?;
    let got = bytes.len();
    let array = <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| KeyError::WrongLength { kind, expected: N, got });
    // Best-effort wipe of the decoded copy (may hold secret material).
    bytes.fill(0);
    Ok((name.to_owned(), array?))
}

impl SecretKey {
    /// Generate a new key called `name` from operating-system randomness.
    pub fn generate(name: &str) -> Result<SecretKey, KeyError> {
        check_name(name)?;
        let mut seed = [0u8; SEED_LEN];
        getrandom::getrandom(&mut seed).map_err(KeyError::Random)?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(SecretKey { name: name.to_owned(), key })
    }

    /// Parse `NAME:BASE64(seed ‖ public)`, ignoring surrounding whitespace.
    /// The embedded public half must match the one derived from the seed.
    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        let (name, mut bytes) = split_key::<SECRET_LEN>(text, "secret")?;
        let mut seed = [0u8; SEED_LEN];
        seed.copy_from_slice(&bytes[..SEED_LEN]);
        let key = SigningKey::from_bytes(&seed);
        let matches = key.verifying_key().as_bytes()[..] == bytes[SEED_LEN..];
        seed.fill(0);
        bytes.fill(0);
        if !matches {
            return Err(KeyError::PublicMismatch { name });
        }
        Ok(SecretKey { name, key })
    }

    /// Read and parse a secret key file.
    pub fn read(path: &Path) -> Result<SecretKey, KeyError> {
        let text = fs::read_to_string(path)
            .map_err(|source| KeyError::Io(crate::util::IoError { action: "read secret key", path: path.to_owned(), source }))?;
        SecretKey::parse(&text).map_err(|e| KeyError::InFile { path: path.to_owned(), source: Box::new(e) })
    }

    /// The key in `NAME:BASE64` text form. This is secret material.
    pub fn to_text(&self) -> String {
        let mut bytes = [0u8; SECRET_LEN];
        bytes[..SEED_LEN].copy_from_slice(self.key.as_bytes());
        bytes[SEED_LEN..].copy_from_slice(self.key.verifying_key().as_bytes());
        let text = format!("{}:{}", self.name, STANDARD.encode(bytes));
        bytes.fill(0);
        text
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// Sign `message` (ed25519 is deterministic: same key and message give
    /// the same signature).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature { key: self.name.clone(), sig: STANDARD.encode(self.key.sign(message).to_bytes()) }
    }

    /// Write the secret key to a new file at `path` with mode 0600.
    ///
    /// Refuses to overwrite an existing file. Missing parent directories are
    /// created (mode 0700). The key is written to a temporary file in the
    /// same directory, synced, then hard-linked into place, so a crash never
    /// leaves a partially written key at `path`.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let io = |action: &'static str, p: &Path| {
            let p = p.to_owned();
            move |source| KeyError::Io(crate::util::IoError { action, path: p, source })
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| io("write secret key", path)(std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: path.to_owned() });
        }
        create_private_dirs(dir).map_err(io("create directory", dir))?;

        let mut suffix = [0u8; 8];
        getrandom::getrandom(&mut suffix).map_err(KeyError::Random)?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".tmp-{:016x}", u64::from_le_bytes(suffix)));
        let tmp = dir.join(tmp_name);

        let result = write_private_file(&tmp, self.to_text().as_bytes()).map_err(io("write temporary key file", &tmp)).and_then(|()| {
            fs::hard_link(&tmp, path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::Exists { path: path.to_owned() }
                } else {
                    KeyError::Io(crate::util::IoError { action: "link key file into place at", path: path.to_owned(), source })
                }
            })
        });
        // The temporary name is never needed afterwards; failing to remove it
        // leaves only a stray hidden file, so that error is not reported.
        let _ = fs::remove_file(&tmp);
        result?;
        // Best effort: make the new directory entry durable. Not all
        // filesystems support syncing a directory, and the key is already in
        // place, so an error here is not reported.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(unix)]
fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .field("public", &STANDARD.encode(self.key.verifying_key().as_bytes()))
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Parse `NAME:BASE64(public)`, ignoring surrounding whitespace.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let (name, bytes) = split_key::<PUBLIC_LEN>(text, "public")?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPublicKey { name: name.clone() })?;
        Ok(PublicKey { name, key })
    }

    pub fn to_text(&self) -> String {
        format!("{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// True only if `sig` names this key and is a valid (strict) ed25519
    /// signature of `message` by it.
    pub fn verify(&self, message: &[u8], sig: &Signature) -> bool {
        if sig.key != self.name {
            return false;
        }
        let Ok(bytes) = STANDARD.decode(&sig.sig) else {
            return false;
        };
        let Ok(bytes) = <[u8; SIGNATURE_LEN]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&bytes);
        self.key.verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey").field(&self.to_text()).finish()
    }
}

/// The keys a user trusts. Empty = trust not configured.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

/// The outcome of checking a record's signatures against [`TrustedKeys`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A trusted key (named here) produced a valid signature.
    Trusted(String),
    /// There are no signatures.
    Unsigned,
    /// Signed only by keys we don't know.
    Untrusted,
    /// A signature names this trusted key but does not verify.
    BadSignature(String),
}

impl TrustedKeys {
    pub fn new(keys: Vec<PublicKey>) -> TrustedKeys {
        TrustedKeys { keys }
    }

    /// The keys, in the order given.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The keys' names (for messages).
    pub fn names(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.name().to_string()).collect()
    }

    /// Parse public keys separated by whitespace and/or commas (as in an
    /// environment variable). Empty input gives an empty set; each bad entry
    /// is an error naming it.
    pub fn parse_list(text: &str) -> Result<TrustedKeys, KeyError> {
        let keys = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(|entry| PublicKey::parse(entry).map_err(|e| KeyError::ListEntry { entry: entry.to_owned(), source: Box::new(e) }))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedKeys { keys })
    }

    pub fn push(&mut self, key: PublicKey) {
        self.keys.push(key);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Trusted if any signature by a trusted key (matched by name; if several
    /// trusted keys share a name each is tried) verifies. Otherwise
    /// BadSignature if some signature names a trusted key but fails; else
    /// Untrusted if there are signatures; else Unsigned.
    pub fn verdict(&self, message: &[u8], sigs: &[Signature]) -> Verdict {
        let mut bad: Option<&str> = None;
        for sig in sigs {
            let mut named = self.keys.iter().filter(|k| k.name == sig.key).peekable();
            if named.peek().is_none() {
                continue;
            }
            if named.any(|k| k.verify(message, sig)) {
                return Verdict::Trusted(sig.key.clone());
            }
            bad.get_or_insert(&sig.key);
        }
        match bad {
            Some(name) => Verdict::BadSignature(name.to_owned()),
            None if sigs.is_empty() => Verdict::Unsigned,
            None => Verdict::Untrusted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> SecretKey {
        SecretKey { name: "test".to_owned(), key: SigningKey::from_bytes(&[7u8; 32]) }
    }

    // Computed independently with Python `cryptography` (OpenSSL) from seed [7u8; 32].
    const FIXED_PUBLIC: &str = "test:6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";
    const FIXED_SECRET: &str = "test:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwfqSmxj4pxSCr71UHsTLsX5lUd2rr6+e5JCHuppFEbSLA==";
    const FIXED_SIG_ABC: &str = "5T/01aw/EfyMRnr3e50pElNjK8R4r1GAGwtsN1h8SSjPPss39R4PAkgbe+bUlOyVVYeyOnFsuQmB7Ba2MCMMBw==";

    #[test]
    fn generate_roundtrip() {
        let key = SecretKey::generate("cache.example.org-1").unwrap();
        let text = key.to_text();
        let back = SecretKey::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(back.name(), "cache.example.org-1");
        assert_eq!(back.to_text(), text);
        assert_eq!(back.public(), key.public());
        let public = PublicKey::parse(&key.public().to_text()).unwrap();
        assert_eq!(public, key.public());
    }

    #[test]
    fn generate_rejects_bad_name() {
        assert!(matches!(SecretKey::generate("a b"), Err(KeyError::BadName { .. })));
        assert!(matches!(SecretKey::generate(""), Err(KeyError::BadName { .. })));
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = SecretKey::generate("k").unwrap();
        let sig = key.sign(b"record");
        assert_eq!(sig.key, "k");
        assert!(key.public().verify(b"record", &sig));
        assert!(!key.public().verify(b"recorD", &sig));

        let renamed = Signature { key: "other".into(), ..sig.clone() };
        assert!(!key.public().verify(b"record", &renamed));
        let bad_b64 = Signature { sig: "!!!".into(), ..sig.clone() };
        assert!(!key.public().verify(b"record", &bad_b64));
        let short = Signature { sig: STANDARD.encode([0u8; 63]), ..sig.clone() };
        assert!(!key.public().verify(b"record", &short));
        let zero = Signature { sig: STANDARD.encode([0u8; 64]), ..sig };
        assert!(!key.public().verify(b"record", &zero));
    }

    #[test]
    fn fixed_vector() {
        let key = fixed();
        assert_eq!(key.to_text(), FIXED_SECRET);
        assert_eq!(key.public().to_text(), FIXED_PUBLIC);
        let parsed = SecretKey::parse(&key.to_text()).unwrap();
        assert_eq!(parsed.to_text(), FIXED_SECRET);
        assert_eq!(PublicKey::parse(FIXED_PUBLIC).unwrap(), key.public());

        let sig = key.sign(b"abc");
        assert_eq!(sig, key.sign(b"abc"));
        assert_eq!(sig.sig, FIXED_SIG_ABC);
        assert!(key.public().verify(b"abc", &sig));
    }

    #[test]
    fn verdicts() {
        let a = SecretKey::generate("a").unwrap();
        let a_impostor = SecretKey::generate("a").unwrap();
        let b = SecretKey::generate("b").unwrap();
        let msg = b"narinfo";
        let trusted = TrustedKeys::new(vec![a.public()]);

        assert_eq!(trusted.verdict(msg, &[]), Verdict::Unsigned);
        assert_eq!(trusted.verdict(msg, &[a.sign(msg)]), Verdict::Trusted("a".into()));
        assert_eq!(trusted.verdict(msg, &[b.sign(msg)]), Verdict::Untrusted);
        assert_eq!(trusted.verdict(msg, &[a_impostor.sign(msg)]), Verdict::BadSignature("a".into()));
        assert_eq!(trusted.verdict(b"tampered", &[a.sign(msg)]), Verdict::BadSignature("a".into()));
        // A good signature wins over a bad one, in either order.
        assert_eq!(trusted.verdict(msg, &[a_impostor.sign(msg), b.sign(msg), a.sign(msg)]), Verdict::Trusted("a".into()));
        // Two trusted keys sharing a name: each is tried.
        let both = TrustedKeys::new(vec![a.public(), a_impostor.public()]);
        assert_eq!(both.verdict(msg, &[a_impostor.sign(msg)]), Verdict::Trusted("a".into()));
        // Nothing configured: every signature is untrusted.
        assert_eq!(TrustedKeys::default().verdict(msg, &[a.sign(msg)]), Verdict::Untrusted);
    }

    #[test]
    fn parse_errors() {
        let e = |r: Result<PublicKey, KeyError>| r.unwrap_err();
        let s = |r: Result<SecretKey, KeyError>| r.unwrap_err();
        assert!(matches!(e(PublicKey::parse("  ")), KeyError::Empty { .. }));
        assert!(matches!(e(PublicKey::parse("nocolon")), KeyError::MissingColon { .. }));
        assert!(matches!(e(PublicKey::parse(":AAAA")), KeyError::BadName { .. }));
        assert!(matches!(e(PublicKey::parse("a b:AAAA")), KeyError::BadName { .. }));
        assert!(matches!(e(PublicKey::parse("a/b:AAAA")), KeyError::BadName { .. }));
        let long = format!("{}:{}", "n".repeat(129), STANDARD.encode([0u8; 32]));
        assert!(matches!(e(PublicKey::parse(&long)), KeyError::BadName { .. }));
        assert!(matches!(e(PublicKey::parse("a:not base64!")), KeyError::BadBase64 { .. }));
        assert!(matches!(e(PublicKey::parse("a:AAAAAAAAAAAA")), KeyError::WrongLength { expected: 32, got: 9, .. }));
        let err = s(SecretKey::parse(&format!("a:{}", STANDARD.encode([1u8; 12]))));
        assert!(matches!(err, KeyError::WrongLength { expected: 64, got: 12, .. }));
        assert_eq!(err.to_string(), "expected NAME:BASE64 with a 64-byte secret key, got 12 bytes");
        // A public key where a secret key is expected, and vice versa.
        assert!(matches!(s(SecretKey::parse(FIXED_PUBLIC)), KeyError::WrongLength { .. }));
        assert!(matches!(e(PublicKey::parse(FIXED_SECRET)), KeyError::WrongLength { .. }));

        let mut bytes = [7u8; 64];
        bytes[32..].copy_from_slice(SecretKey::generate("x").unwrap().public().key.as_bytes());
        let err = s(SecretKey::parse(&format!("test:{}", STANDARD.encode(bytes))));
        assert!(matches!(err, KeyError::PublicMismatch { .. }));
        // Error messages must not contain the secret text.
        assert!(!err.to_string().contains(&STANDARD.encode(bytes)[..10]));
    }

    #[test]
    fn parse_list() {
        let a = SecretKey::generate("a").unwrap().public();
        let b = SecretKey::generate("b").unwrap().public();
        let c = SecretKey::generate("c").unwrap().public();
        let text = format!(" {},{} ,\n\t{}\n", a.to_text(), b.to_text(), c.to_text());
        let keys = TrustedKeys::parse_list(&text).unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys.keys, vec![a.clone(), b, c]);

        assert!(TrustedKeys::parse_list("").unwrap().is_empty());
        assert!(TrustedKeys::parse_list(" , \n,").unwrap().is_empty());

        let err = TrustedKeys::parse_list(&format!("{} bogus", a.to_text())).unwrap_err();
        assert!(matches!(&err, KeyError::ListEntry { entry, .. } if entry == "bogus"));
        assert!(err.to_string().contains("bogus"));

        let mut keys = TrustedKeys::default();
        keys.push(a);
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn write_new_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/cache.secret");
        let key = fixed();
        key.write_new(&path).unwrap();

        assert_eq!(fs::read_to_string(&path).unwrap(), FIXED_SECRET);
        assert_eq!(SecretKey::read(&path).unwrap().to_text(), FIXED_SECRET);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = fs::metadata(dir.path().join("sub")).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }

        let other = SecretKey::generate("other").unwrap();
        assert!(matches!(other.write_new(&path), Err(KeyError::Exists { .. })));
        assert_eq!(fs::read_to_string(&path).unwrap(), FIXED_SECRET);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn read_errors_mention_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.secret");
        fs::write(&path, "garbage").unwrap();
        let err = SecretKey::read(&path).unwrap_err();
        assert!(matches!(&err, KeyError::InFile { path: p, .. } if p == &path));
        assert!(err.to_string().contains("bad.secret"));

        let missing = dir.path().join("missing.secret");
        let err = SecretKey::read(&missing).unwrap_err();
        assert!(matches!(err, KeyError::Io(_)));
    }

    #[test]
    fn debug_hides_secret() {
        let key = fixed();
        let debug = format!("{key:?}");
        assert!(debug.contains("test"));
        assert!(!debug.contains("BwcHBwcH"));
    }
}
