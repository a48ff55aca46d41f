use super::*;

#[test]
fn records_round_trip_and_missing_blob_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = store.put_bytes(b"hello").unwrap();
    let drv = DrvHash([7; 32]);
    let mut outputs = BTreeMap::new();
    outputs.insert("blob".to_string(), Output { digest: d, size: 5, media_type: "x".into(), diff_id: None });
    let rec = Record { version: RECORD_VERSION, drv, kind: "t".into(), outputs, inputs: BTreeMap::new() };
    store.put_record(&rec).unwrap();
    assert_eq!(store.lookup(&drv).unwrap(), Some(rec));
    assert!(store.verify(false, &|_, _| None).unwrap().damage.is_empty());
    let p = store.blob_path(&d);
    fs::remove_file(&p).unwrap();
    assert_eq!(store.lookup(&drv).unwrap(), None);
    let report = store.verify(true, &|_, _| None).unwrap();
    assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
}

/// Guards against this: a chunk pointer whose range did not hash to its recorded blake3 was used when
/// the blob's verified marker matched. The marker vouches for the blob, not for the range.
#[test]
fn a_chunk_pointer_is_used_only_when_its_range_hashes_to_its_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let blob = store.put_bytes(&data).unwrap();
    let p = store.blob_path(&blob);
    assert!(store.marker_matches(&blob, &fs::symlink_metadata(&p).unwrap()), "the blob is verified");
    let state = crate::layer::ShaState::default();
    let chunk = |offset: u64, check: [u8; 32]| crate::layer::ChunkRecord {
        key: [9; 32],
        offset,
        len: 100,
        check,
        reused: false,
        memo: Some(crate::layer::ChunkMemo { tar: (state, state), blob: (state, state) }),
        memo_held: false,
        alias: None,
    };
    let right = *blake3::hash(&data[100..200]).as_bytes();
    store.keep_chunks(&blob, &[chunk(100, right)]);
    let cache = store.chunk_cache();
    assert_eq!(cache.get(&[9; 32]).map(|k| k.bytes), Some(data[100..200].to_vec()));
    // A whole line (its sum checks out) naming another range: never used.
    store.keep_chunks(&blob, &[chunk(101, right)]);
    assert_eq!(cache.get(&[9; 32]), None);
}

#[test]
fn verify_detects_corrupt_blob() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = store.put_bytes(b"hello").unwrap();
    let p = store.blob_path(&d);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&p, b"jello").unwrap();
    let report = store.verify(true, &|_, _| None).unwrap();
    assert_eq!(report.damage.len(), 1);
    assert!(!p.exists());
}

fn age(p: &Path, days: u64) {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(p).unwrap().permissions().mode();
    fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
    let old = SystemTime::now() - Duration::from_secs(86_400 * days);
    File::options().write(true).open(p).unwrap().set_modified(old).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn gc_keeps_what_recent_records_name_and_removes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let orphan = store.put_bytes(b"orphan").unwrap();
    let fresh_orphan = store.put_bytes(b"fresh orphan").unwrap();
    let kept = store.put_bytes(b"kept").unwrap();
    let stale = store.put_bytes(b"stale").unwrap();
    let record = |drv: DrvHash, d: Sha256, n: u64| {
        let mut outputs = BTreeMap::new();
        outputs.insert("o".to_string(), Output { digest: d, size: n, media_type: "x".into(), diff_id: None });
        Record { version: RECORD_VERSION, drv, kind: "t".into(), outputs, inputs: BTreeMap::new() }
    };
    store.put_record(&record(DrvHash([1; 32]), kept, 4)).unwrap();
    store.put_record(&record(DrvHash([2; 32]), stale, 5)).unwrap();
    for d in [orphan, kept, stale] {
        age(&store.blob_path(&d), 30);
    }
    age(&store.record_path(&DrvHash([2; 32])), 30);
    store.temp_file().unwrap().keep().unwrap();
    let r = store.gc(Duration::from_secs(86_400 * 7)).unwrap();
    assert_eq!((r.records_removed, r.records_kept), (1, 1));
    assert_eq!((r.blobs_removed, r.blobs_kept), (2, 2), "{r:?}");
    assert_eq!(r.temp_removed, 1);
    assert!(store.has_blob(&kept) && store.has_blob(&fresh_orphan));
    assert!(!store.has_blob(&orphan) && !store.has_blob(&stale));
    assert!(store.lookup(&DrvHash([1; 32])).unwrap().is_some());
    assert!(store.lookup(&DrvHash([2; 32])).unwrap().is_none());
    // The store is still usable (shared lock back) after gc.
    store.put_bytes(b"after").unwrap();
}
