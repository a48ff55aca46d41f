//! `compose cache verify|gc|keygen|stats`: the store's upkeep, and the signing keys of the
//! remote cache.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use compose::ops;

use crate::cli::progress::human;

/// `cache verify`: re-hash blobs, check records, list the damage; exit 1 if any.
pub fn verify(stdout: &mut impl Write, cache_dir: &Path, repair: bool) -> Result<u8, ops::Error> {
    let store = ops::open_store(cache_dir)?;
    let r = store.verify(repair, &compose::trust::problem).map_err(ops::Error::from)?;
    for d in &r.damage {
        let _ = writeln!(stdout, "damaged: {d}");
    }
    let _ = writeln!(
        stdout,
        "checked {} blobs ({}) and {} records: {} problems{}",
        r.blobs_checked,
        human(r.bytes_checked),
        r.records_checked,
        r.damage.len(),
        if repair { format!(", {} removed", r.repaired) } else { String::new() }
    );
    Ok(if r.damage.is_empty() { 0 } else { 1 })
}

/// `cache gc`: remove what was not used within `max_age_days`.
pub fn gc(stdout: &mut impl Write, cache_dir: &Path, max_age_days: f64) -> Result<(), ops::Error> {
    let store = ops::open_store(cache_dir)?;
    let age = Duration::from_secs_f64((max_age_days.max(0.0)) * 86_400.0);
    let r = store.gc(age).map_err(ops::Error::from)?;
    let _ = writeln!(
        stdout,
        "removed {} records, {} blobs and {} step caches ({}), {} temporary files; kept {} records, {} blobs and {} step caches",
        r.records_removed,
        r.blobs_removed,
        r.caches_removed,
        human(r.bytes_freed),
        r.temp_removed,
        r.records_kept,
        r.blobs_kept,
        r.caches_kept
    );
    Ok(())
}

/// `cache keygen`: write a secret key, print its public key.
pub fn keygen(stdout: &mut impl Write, name: Option<String>, cache_dir: &Path, out: Option<&Path>) -> Result<(), ops::Error> {
    let name = name.unwrap_or_else(ops::default_key_name);
    let (public, path) = ops::keygen(cache_dir, &name, out)?;
    let _ = writeln!(
        std::io::stderr(),
        "secret key written to {}; builds with this cache dir sign the records they upload with it.\n\
         Give the public key below to the machines that should trust them (--trusted-key or COMPOSE_TRUSTED_KEYS):",
        path.display()
    );
    let _ = writeln!(stdout, "{public}");
    Ok(())
}

/// `cache stats`: sizes and counts.
pub fn stats(stdout: &mut impl Write, cache_dir: &Path, json: bool) -> Result<(), ops::Error> {
    let store = ops::open_store(cache_dir)?;
    let s = store.stats().map_err(ops::Error::from)?;
    if json {
        let _ = writeln!(stdout, "{}", serde_json::to_string(&s).unwrap_or_default());
    } else {
        let _ = writeln!(
            stdout,
            "{}: {} blobs ({}), {} records, {} step caches ({}), {} stat caches, {} temporary files",
            cache_dir.display(),
            s.blobs,
            human(s.blob_bytes),
            s.records,
            s.caches,
            human(s.cache_bytes),
            s.stat_caches,
            s.temp_files
        );
    }
    Ok(())
}
