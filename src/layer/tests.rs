//! Tests of the layer writer, its chunks and codecs: byte-exact tar headers, digests pinned by
//! golden values, independence from threads and write sizes, chunk reuse.

use super::chunk::*;
use super::codec::*;
use super::compressor::*;
use super::known::*;
use super::tar::{BLOCK, MAX_OCTAL_12};
use super::writer::*;
use super::*;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::{self, Cursor, Read, Write};
use std::sync::{Arc, Mutex};

/// Deterministic, semi-compressible bytes (text-like with noise).
fn sample(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words: Vec<Vec<u8>> = (0..512)
        .map(|_| {
            let n = 2 + (next() % 9) as usize;
            (0..n).map(|_| b'a' + (next() % 26) as u8).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = next();
        if r % 17 == 0 {
            out.extend_from_slice(&next().to_le_bytes());
        } else {
            out.extend_from_slice(&words[(r >> 8) as usize % words.len()]);
            out.push(if r % 11 == 0 { b'\n' } else { b' ' });
        }
    }
    out.truncate(len);
    out
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out).expect("valid gzip");
    out
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool")
}

fn unzstd(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(data).expect("decoder").read_to_end(&mut out).expect("valid zstd");
    out
}

fn decompress(codec: Compression, data: &[u8]) -> Vec<u8> {
    match codec {
        Compression::Gzip => gunzip(data),
        Compression::Zstd => unzstd(data),
    }
}

const CODECS: [Compression; 2] = [Compression::Gzip, Compression::Zstd];

fn streaming(codec: Compression, data: &[u8], write_size: usize, max_in_flight: usize) -> (Vec<u8>, StreamStats) {
    let mut gz = ChunkedCompressor::with_max_in_flight(Vec::new(), max_in_flight);
    gz.codec = codec;
    for piece in data.chunks(write_size.max(1)) {
        gz.write_all(piece).expect("write");
    }
    gz.finish().expect("finish")
}

#[test]
fn gzip_header_and_trailer_are_fixed() {
    let out = compress_bytes(Compression::Gzip, b"hello");
    assert_eq!(out[..10], GZIP_HEADER);
    let n = out.len();
    assert_eq!(out[n - 8..n - 4], crc32fast::hash(b"hello").to_le_bytes());
    assert_eq!(out[n - 4..], 5u32.to_le_bytes());
    assert_eq!(gunzip(&out), b"hello");
}

#[test]
fn chunks_round_trip_edge_sizes() {
    let sizes = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 12_345];
    for codec in CODECS {
        for &len in &sizes {
            let data = sample(len, len as u64);
            let expected = compress_bytes(codec, &data);
            assert_eq!(decompress(codec, &expected), data, "{codec:?} compress_bytes len {len}");
            let (out, stats) = streaming(codec, &data, 65_536, 3);
            assert_eq!(out, expected, "{codec:?} streaming len {len}");
            assert_eq!(stats.uncompressed_size, len as u64);
            assert_eq!(stats.compressed_size, out.len() as u64);
            assert_eq!(stats.uncompressed_sha256, sha(&data));
            assert_eq!(stats.compressed_sha256, sha(&out));
        }
    }
}

#[test]
fn chunks_are_independent_of_threads_and_write_sizes() {
    let data = sample(3 * CHUNK_SIZE + 4321, 7);
    for codec in CODECS {
        let expected = compress_bytes(codec, &data);
        assert_eq!(decompress(codec, &expected), data);
        for threads in [1, 2, 7] {
            let pool = pool(threads);
            pool.install(|| {
                assert_eq!(compress_bytes(codec, &data), expected, "{codec:?} compress_bytes, {threads} threads");
                for (write_size, in_flight) in [(1, 1), (4_095, 2), (CHUNK_SIZE, 3), (CHUNK_SIZE + 7, 16), (data.len(), 5)] {
                    let (out, _) = streaming(codec, &data, write_size, in_flight);
                    assert_eq!(out, expected, "{codec:?}, {threads} threads, writes of {write_size}, {in_flight} in flight");
                }
            });
        }
        // Also from a thread outside any pool (global pool).
        let (out, _) = streaming(codec, &data, 100_000, 5);
        assert_eq!(out, expected);
        // Irregular write sizes.
        let mut gz = ChunkedCompressor::with(Vec::new(), codec, None);
        let mut rest = &data[..];
        let mut i = 0usize;
        while !rest.is_empty() {
            i += 1;
            let n = ((i * 7919) % 300_000).min(rest.len());
            gz.write_all(&rest[..n]).expect("write");
            if i.is_multiple_of(5) {
                gz.flush().expect("flush");
            }
            rest = &rest[n..];
        }
        assert_eq!(gz.finish().expect("finish").0, expected);
    }
}

#[test]
fn compressor_golden() {
    // Pins the exact compressor output; a dependency upgrade that changes
    // bytes must change the compressor id (and these literals).
    let data = sample(CHUNK_SIZE + 1000, 42);
    let out = compress_bytes(Compression::Gzip, &data);
    // gzip: libdeflate, a member per chunk (two here: a full chunk and 1000 bytes).
    assert_eq!(hex::encode(sha(&out)), "3c652ac098b35d1d9cbefefd7f5357c6782de1c9d8005b2e96a55ac776df1652");
    assert_eq!(out.windows(GZIP_HEADER.len()).filter(|w| *w == GZIP_HEADER).count(), 2);
    assert_eq!(COMPRESSOR_ID, "gzip/libdeflate-1.26.1/level6/member-per-chunk/v3");
    // zstd: a frame per chunk, two here.
    let out = compress_bytes(Compression::Zstd, &data);
    assert_eq!(hex::encode(sha(&out)), "669911d940f11bf8cffb7bc6d5f838b6f60218b881b6649e59b8afbf131f6e42");
    assert_eq!(out.windows(4).filter(|w| *w == [0x28, 0xb5, 0x2f, 0xfd]).count(), 2);
    assert_eq!(ZSTD_COMPRESSOR_ID, "zstd/libzstd-1.5.7/level3/frame-per-chunk/v1");
    // The library is the one the id names (Cargo.toml pins zstd-sys).
    assert_eq!(zstd::zstd_safe::version_number(), 10507);
}

struct FailingSink {
    budget: usize,
}

impl Write for FailingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn gzip_sink_errors_propagate_and_poison() {
    let data = sample(4 * CHUNK_SIZE, 3);
    let mut gz = ChunkedCompressor::with_max_in_flight(FailingSink { budget: 100 }, 1);
    let err = gz.write_all(&data).expect_err("sink fails");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(gz.write_all(b"x").is_err());
    assert!(gz.finish().is_err());
}

// --- layer ---------------------------------------------------------

fn dir(path: &str, mode: u32) -> Entry {
    Entry { path: path.to_owned(), kind: EntryKind::Dir, mode, uid: 0, gid: 0, mtime: 1_700_000_000 }
}

fn file(path: &str, size: u64, mode: u32) -> Entry {
    Entry { path: path.to_owned(), kind: EntryKind::File { size }, mode, uid: 1000, gid: 100, mtime: 1_600_000_000 }
}

fn symlink(path: &str, target: &str) -> Entry {
    Entry {
        path: path.to_owned(),
        kind: EntryKind::Symlink { target: target.to_owned() },
        mode: 0o644, // ignored: symlinks are 0o777
        uid: 0,
        gid: 0,
        mtime: 1,
    }
}

fn hardlink(path: &str, target: &str) -> Entry {
    Entry {
        path: path.to_owned(),
        kind: EntryKind::Hardlink { target: target.to_owned() },
        mode: 0o755,
        uid: 1000,
        gid: 100,
        mtime: 1_600_000_000,
    }
}

/// A layer exercising every feature; returns entries with their data.
fn rich_layer() -> Vec<(Entry, Option<Vec<u8>>)> {
    let long_name = format!("/opt/{}", "n".repeat(145));
    assert_eq!(long_name.len(), 150);
    let long_target = format!("../{}/busybox", "t".repeat(120));
    let mut big = file("/opt/big.bin", 0, 0o644);
    let big_data = sample(2 * CHUNK_SIZE + 777, 9);
    big.kind = EntryKind::File { size: big_data.len() as u64 };
    let mut huge_ids = file("/opt/ids", 3, 0o600);
    huge_ids.uid = 4_000_000_000;
    huge_ids.gid = 3_000_000;
    huge_ids.mtime = 1 << 40;
    vec![
        (dir("/bin", 0o755), None),
        (symlink("/bin/sh", &long_target), None),
        (symlink("/bin/short", "busybox"), None),
        (dir("/etc", 0o755), None),
        (file("/etc/empty", 0, 0o644), Some(Vec::new())),
        (file("/etc/hosts", 24, 0o644), Some(b"127.0.0.1 localhost\n::1\n".to_vec())),
        (hardlink("/etc/hosts.link", "/etc/hosts"), None),
        (dir("/opt", 0o2775), None),
        (big, Some(big_data)),
        (huge_ids, Some(b"abc".to_vec())),
        (file(&long_name, 5, 0o640), Some(b"long!".to_vec())),
        (dir("/opt/日本", 0o755), None),
        (file("/opt/日本/データ.txt", 6, 0o644), Some("データ".as_bytes()[..6].to_vec())),
        (dir("/tmp", 0o1777), None),
        (dir("/usr", 0o755), None),
        (dir("/usr/bin", 0o755), None),
        (file("/usr/bin/su", 4, 0o4755), Some(b"\x7fELF".to_vec())),
    ]
}

fn build(entries: &[(Entry, Option<Vec<u8>>)]) -> (Vec<u8>, LayerDigests) {
    let mut w = LayerWriter::new(Vec::new());
    for (entry, data) in entries {
        match data {
            Some(bytes) => w.append(entry, Some(&mut Cursor::new(bytes.as_slice()))).expect("append"),
            None => w.append(entry, None).expect("append"),
        }
    }
    w.finish().expect("finish")
}

/// Chunks kept in memory, as the store keeps them.
#[derive(Default)]
struct MemCache(Mutex<std::collections::HashMap<ChunkKey, Kept>>);

impl ChunkCache for MemCache {
    fn get(&self, key: &ChunkKey) -> Option<Kept> {
        self.0.lock().expect("cache").get(key).cloned()
    }
}

impl MemCache {
    fn keep(&self, blob: &[u8], chunks: &[ChunkRecord]) {
        for c in chunks {
            let bytes = blob[c.offset as usize..(c.offset + c.len) as usize].to_vec();
            assert_eq!(*blake3::hash(&bytes).as_bytes(), c.check);
            assert!(c.memo.is_some());
            let kept = Kept { bytes, memo: c.memo };
            if let Some(alias) = c.alias {
                self.0.lock().expect("cache").insert(alias, kept.clone());
            }
            self.0.lock().expect("cache").insert(c.key, kept);
        }
    }
}

/// Files on disk, appended as [`KnownFile`]s.
fn known_build(
    codec: Compression,
    cache: &Arc<MemCache>,
    dir: &std::path::Path,
    files: &[(String, [u8; 32], String, u64)],
) -> (Vec<u8>, LayerDigests, Vec<ChunkRecord>) {
    let cache: Arc<dyn ChunkCache> = cache.clone();
    let mut w = LayerWriter::with(Vec::new(), codec, Some(cache));
    w.identify_with(test_identity);
    w.append(&dir_entry("/srv"), None).expect("append");
    for (name, hash, identity, size) in files {
        let file = KnownFile { path: dir.join(name), hash: *hash, identity: identity.clone() };
        w.append_known(&file_entry(&format!("/srv/{name}"), *size), file).expect("append");
    }
    w.finish_with_chunks().expect("finish")
}

fn test_identity(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}-{}-{}-{}.{}-{}.{}", m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
}

fn dir_entry(path: &str) -> Entry {
    Entry { path: path.into(), kind: EntryKind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: 0 }
}

fn file_entry(path: &str, size: u64) -> Entry {
    Entry { path: path.into(), kind: EntryKind::File { size }, mode: 0o644, uid: 0, gid: 0, mtime: 0 }
}

fn put(dir: &std::path::Path, name: &str, data: &[u8]) -> (String, [u8; 32], String, u64) {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write");
    let identity = test_identity(&std::fs::metadata(&p).expect("stat"));
    (name.to_owned(), *blake3::hash(data).as_bytes(), identity, data.len() as u64)
}

/// The chunks before a change are found by their entries' planned hashes and never read: the
/// files they hold may even be gone. The layer is the one a cold build writes.
#[test]
fn kept_chunks_before_a_change_are_not_read() {
    for codec in CODECS {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut files: Vec<_> =
            (0..160).map(|i| put(tmp.path(), &format!("f{i:03}"), &sample(8_000 + (i * 997) % 60_000, i as u64))).collect();
        files.insert(80, put(tmp.path(), "f079big", &sample(3 * CHUNK_SIZE + 99, 7)));
        let cache = Arc::new(MemCache::default());
        let (blob, _, chunks) = known_build(codec, &cache, tmp.path(), &files);
        assert!(chunks.iter().filter(|c| c.alias.is_some()).count() >= 8);
        cache.keep(&blob, &chunks);
        // File 120 changes; a cold build of that is the reference.
        files[121] = put(tmp.path(), "f120", &sample(20_000, 999));
        let (cold, cold_d, _) = known_build(codec, &Arc::new(MemCache::default()), tmp.path(), &files);
        // The first 60 files go: they are in kept chunks.
        for (name, ..) in &files[..60] {
            std::fs::remove_file(tmp.path().join(name)).expect("rm");
        }
        let (warm, warm_d, warm_chunks) = known_build(codec, &cache, tmp.path(), &files);
        assert!(warm == cold && warm_d == cold_d, "{codec:?}");
        assert!(warm_chunks.len() < chunks.len(), "{codec:?}: the kept prefix has no records");
        // A file before the change that changed under its planned hash is caught when read.
        files[150] = (files[150].0.clone(), [9; 32], files[150].2.clone(), files[150].3);
        let mut w = LayerWriter::with(Vec::new(), codec, None);
        w.append(&dir_entry("/srv"), None).expect("append");
        let mut err = None;
        for (name, hash, identity, size) in &files[60..] {
            let file = KnownFile { path: tmp.path().join(name), hash: *hash, identity: identity.clone() + "x" };
            if let Err(e) = w.append_known(&file_entry(&format!("/srv/{name}"), *size), file) {
                err = Some(e);
                break;
            }
        }
        let err = err.map_or_else(|| w.finish().err(), Some);
        assert!(matches!(err, Some(LayerError::Changed { .. })), "{err:?}");
    }
}

/// A tree of many files around one big file; `edit` grows one small file by 1000 bytes.
fn many_files(edit: Option<usize>) -> Vec<(Entry, Option<Vec<u8>>)> {
    let mut entries = vec![(dir("/srv", 0o755), None)];
    for i in 0..400 {
        let mut data = sample(8_000 + (i * 997) % 50_000, i as u64);
        if edit == Some(i) {
            data.extend_from_slice(&sample(1000, 99));
        }
        if i == 200 {
            data = sample(3 * CHUNK_SIZE + 5000, 1234);
        }
        entries.push((file(&format!("/srv/f{i:04}"), data.len() as u64, 0o644), Some(data)));
    }
    entries
}

fn build_with(
    codec: Compression,
    cache: &Arc<MemCache>,
    entries: &[(Entry, Option<Vec<u8>>)],
) -> (Vec<u8>, LayerDigests, Vec<ChunkRecord>) {
    let cache: Arc<dyn ChunkCache> = cache.clone();
    let mut w = LayerWriter::with(Vec::new(), codec, Some(cache));
    for (entry, data) in entries {
        match data {
            Some(bytes) => w.append(entry, Some(&mut Cursor::new(bytes.as_slice()))).expect("append"),
            None => w.append(entry, None).expect("append"),
        }
    }
    w.finish_with_chunks().expect("finish")
}

#[test]
fn one_changed_file_recompresses_only_its_chunks_and_reuse_changes_no_byte() {
    for codec in CODECS {
        let cache = Arc::new(MemCache::default());
        let before = many_files(None);
        let (blob, d, chunks) = build_with(codec, &cache, &before);
        assert!(chunks.iter().all(|c| !c.reused));
        assert!(chunks.len() >= 16, "{} chunks", chunks.len());
        assert_eq!(sha(&decompress(codec, &blob)), d.diff_id);
        cache.keep(&blob, &chunks);
        // The same layer again: every chunk reused, and neither digest hashes anything (the
        // kept memos carry both chains over every chunk), the same bytes and digests.
        let (again, d2, chunks2) = build_with(codec, &cache, &before);
        assert!(again == blob && d2 == d);
        assert!(chunks2.iter().all(|c| c.reused && c.memo_held));
        // One file grows (before the big file, so everything after it shifts): only the
        // chunks around it are compressed; the bytes are those of a cold build.
        for edit in [3, 150, 399] {
            let after = many_files(Some(edit));
            let (blob3, d3, chunks3) = build_with(codec, &cache, &after);
            let cold = Arc::new(MemCache::default());
            let (cold_blob, cold_d, _) = build_with(codec, &cold, &after);
            assert!(blob3 == cold_blob && d3 == cold_d, "{codec:?}: reuse changed the bytes");
            let fresh = chunks3.iter().filter(|c| !c.reused).count();
            assert!(fresh <= 3, "{codec:?}, file {edit}: {fresh} of {} chunks compressed again", chunks3.len());
            // The chunks before the change are not hashed again; the ones after are.
            let held = chunks3.iter().take_while(|c| c.memo_held).count();
            let first_fresh = chunks3.iter().position(|c| !c.reused).unwrap_or(chunks3.len());
            assert_eq!(held, first_fresh, "{codec:?}, file {edit}");
            assert!(chunks3[first_fresh..].iter().all(|c| !c.memo_held));
        }
        // Without a cache: the same bytes, no records.
        let plain = {
            let mut w = LayerWriter::with(Vec::new(), codec, None);
            for (entry, data) in &before {
                match data {
                    Some(bytes) => w.append(entry, Some(&mut Cursor::new(bytes.as_slice()))).expect("append"),
                    None => w.append(entry, None).expect("append"),
                }
            }
            w.finish_with_chunks().expect("finish")
        };
        assert!(plain.0 == blob && plain.2.is_empty());
    }
}

fn pax_value(entry: &mut ::tar::Entry<'_, &[u8]>, key: &str) -> Option<String> {
    let exts = entry.pax_extensions().expect("pax")?;
    for ext in exts {
        let ext = ext.expect("pax record");
        if ext.key().ok() == Some(key) {
            return Some(ext.value().expect("utf8").to_owned());
        }
    }
    None
}

#[test]
fn layer_round_trips_every_header_field() {
    let entries = rich_layer();
    let (blob, digests) = build(&entries);
    let tar_bytes = gunzip(&blob);
    assert_eq!(digests.diff_id, sha(&tar_bytes));
    assert_eq!(digests.digest, sha(&blob));
    assert_eq!(digests.size, blob.len() as u64);
    assert_eq!(digests.uncompressed_size, tar_bytes.len() as u64);
    assert_eq!(tar_bytes.len() % BLOCK, 0);
    assert!(tar_bytes[tar_bytes.len() - 2 * BLOCK..].iter().all(|&b| b == 0));
    assert_eq!(digests.diff_id_string(), format!("sha256:{}", hex::encode(digests.diff_id)));

    let mut archive = ::tar::Archive::new(&tar_bytes[..]);
    let mut seen = 0;
    for (got, (want, data)) in archive.entries().expect("entries").zip(&entries) {
        let mut got = got.expect("entry");
        seen += 1;
        let is_dir = want.kind == EntryKind::Dir;
        let mut name = want.path.as_bytes()[1..].to_vec();
        if is_dir {
            name.push(b'/');
        }
        assert_eq!(&*got.path_bytes(), &name[..], "{}", want.path);
        let h = got.header().clone();
        let ustar = h.as_ustar().expect("ustar header");
        assert_eq!(&ustar.magic, b"ustar\0");
        assert_eq!(&ustar.version, b"00");
        assert!(ustar.prefix.iter().all(|&b| b == 0));
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        assert_eq!(h.device_major().expect("major"), Some(0));
        assert_eq!(h.device_minor().expect("minor"), Some(0));
        assert_eq!(h.uid().expect("uid"), u64::from(want.uid));
        assert_eq!(h.gid().expect("gid"), u64::from(want.gid));
        if want.mtime > MAX_OCTAL_12 {
            assert_eq!(h.mtime().expect("mtime"), 0);
            assert_eq!(pax_value(&mut got, "mtime"), Some(want.mtime.to_string()));
        } else {
            assert_eq!(h.mtime().expect("mtime"), want.mtime);
        }
        let expected_mode = match want.kind {
            EntryKind::Symlink { .. } => 0o777,
            _ => want.mode,
        };
        assert_eq!(h.mode().expect("mode"), expected_mode, "{}", want.path);
        match &want.kind {
            EntryKind::Dir => {
                assert_eq!(h.entry_type(), ::tar::EntryType::Directory);
                assert_eq!(h.size().expect("size"), 0);
            }
            EntryKind::File { size } => {
                assert_eq!(h.entry_type(), ::tar::EntryType::Regular);
                assert_eq!(got.size(), *size);
                let mut body = Vec::new();
                got.read_to_end(&mut body).expect("body");
                assert_eq!(Some(&body), data.as_ref(), "{}", want.path);
            }
            EntryKind::Symlink { target } => {
                assert_eq!(h.entry_type(), ::tar::EntryType::Symlink);
                assert_eq!(h.size().expect("size"), 0);
                assert_eq!(got.link_name_bytes().as_deref(), Some(target.as_bytes()));
            }
            EntryKind::Hardlink { target } => {
                assert_eq!(h.entry_type(), ::tar::EntryType::Link);
                assert_eq!(h.size().expect("size"), 0);
                assert_eq!(got.link_name_bytes().as_deref(), Some(&target.as_bytes()[1..]));
            }
        }
    }
    assert_eq!(seen, entries.len());
}

#[test]
fn pax_headers_only_when_needed() {
    let raw_types = |entries: &[(Entry, Option<Vec<u8>>)]| {
        let (blob, _) = build(entries);
        let tar_bytes = gunzip(&blob);
        let mut archive = ::tar::Archive::new(Cursor::new(tar_bytes));
        archive.entries().expect("entries").raw(true).map(|e| e.expect("entry").header().entry_type().as_byte()).collect::<Vec<u8>>()
    };
    let ascii_100 = format!("/{}", "a".repeat(100));
    assert_eq!(raw_types(&[(file(&ascii_100, 0, 0o644), Some(Vec::new()))]), vec![b'0']);
    let ascii_101 = format!("/{}", "a".repeat(101));
    assert_eq!(raw_types(&[(file(&ascii_101, 0, 0o644), Some(Vec::new()))]), vec![b'x', b'0']);
    assert_eq!(raw_types(&[(file("/é", 0, 0o644), Some(Vec::new()))]), vec![b'x', b'0']);
    // 99 name bytes + trailing slash = 100: still plain ustar.
    assert_eq!(raw_types(&[(dir(&format!("/{}", "d".repeat(99)), 0o755), None)]), vec![b'5']);
    assert_eq!(raw_types(&[(dir(&format!("/{}", "d".repeat(100)), 0o755), None)]), vec![b'x', b'5']);
}

#[test]
fn layer_is_independent_of_threads() {
    let entries = rich_layer();
    let (expected, digests) = build(&entries);
    for threads in [1, 2, 7] {
        let (blob, d) = pool(threads).install(|| build(&entries));
        assert_eq!(d, digests, "{threads} threads");
        assert!(blob == expected, "{threads} threads");
    }
    // Data delivered in tiny reads gives the same bytes.
    struct Dribble<'a>(&'a [u8]);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut w = LayerWriter::new(Vec::new());
    for (entry, data) in &entries {
        match data {
            Some(bytes) => w.append(entry, Some(&mut Dribble(bytes))).expect("append"),
            None => w.append(entry, None).expect("append"),
        }
    }
    let (blob, d) = w.finish().expect("finish");
    assert_eq!(d, digests);
    assert!(blob == expected);
}

#[test]
fn layers_built_concurrently_on_one_pool() {
    // Several writers sharing a small pool (as when a build writes layers
    // from inside rayon tasks) must neither deadlock nor change bytes.
    let entries = rich_layer();
    let (expected, digests) = build(&entries);
    for threads in [1, 2, 3] {
        let results: Vec<(Vec<u8>, LayerDigests)> = pool(threads).install(|| (0..4).into_par_iter().map(|_| build(&entries)).collect());
        for (blob, d) in results {
            assert_eq!(d, digests, "{threads} threads");
            assert!(blob == expected, "{threads} threads");
        }
    }
}

#[test]
fn layer_golden() {
    let entries = vec![
        (dir("/etc", 0o755), None),
        (file("/etc/hostname", 5, 0o644), Some(b"box\n\n".to_vec())),
        (symlink("/etc/localtime", "/usr/share/zoneinfo/UTC"), None),
        (dir("/usr", 0o755), None),
        (dir("/usr/bin", 0o755), None),
        (file("/usr/bin/su", 3, 0o4755), Some(b"su\n".to_vec())),
        (hardlink("/usr/bin/su2", "/usr/bin/su"), None),
    ];
    let (blob, d) = build(&entries);
    assert_eq!(hex::encode(sha(&blob)), hex::encode(d.digest));
    assert_eq!(d.diff_id_string(), "sha256:ddd4a7e225c4e2c7f210c45ec7353a9f0a15dabbaceaf5d928e39b346908780d");
    assert_eq!(d.digest_string(), "sha256:9e10c130d7a0beecf6ae09f56e7b308b9352e48d9c06ba941ae0ebf640077983");
    assert_eq!((d.size, d.uncompressed_size), (276, 5632));
    assert_eq!(TAR_FORMAT_ID, "tar/ustar+pax/v1");
    assert_eq!(LAYER_FORMAT_ID, format!("{TAR_FORMAT_ID} {CHUNKING_ID} {COMPRESSOR_ID}"));
    assert_eq!(ZSTD_LAYER_FORMAT_ID, format!("{TAR_FORMAT_ID} {CHUNKING_ID} {ZSTD_COMPRESSOR_ID}"));
}

#[test]
fn layer_into_a_file() {
    let entries = rich_layer();
    let (expected, digests) = build(&entries);
    let mut w = LayerWriter::new(tempfile::tempfile().expect("tempfile"));
    for (entry, data) in &entries {
        match data {
            Some(bytes) => w.append(entry, Some(&mut Cursor::new(bytes.as_slice()))).expect("append"),
            None => w.append(entry, None).expect("append"),
        }
    }
    let (mut f, d) = w.finish().expect("finish");
    assert_eq!(d, digests);
    let mut back = Vec::new();
    io::Seek::rewind(&mut f).expect("rewind");
    f.read_to_end(&mut back).expect("read back");
    assert!(back == expected);
}

#[test]
fn empty_layer() {
    let (blob, d) = LayerWriter::new(Vec::new()).finish().expect("finish");
    let tar_bytes = gunzip(&blob);
    assert_eq!(tar_bytes, vec![0u8; 1024]);
    assert_eq!(d.uncompressed_size, 1024);
}

fn append_err(w: &mut LayerWriter<Vec<u8>>, entry: &Entry, data: Option<&[u8]>) -> LayerError {
    match data {
        Some(bytes) => w.append(entry, Some(&mut Cursor::new(bytes))),
        None => w.append(entry, None),
    }
    .expect_err("must be rejected")
}

#[test]
fn rejects_order_violations_and_bad_entries() {
    let mut w = LayerWriter::new(Vec::new());
    w.append(&dir("/a", 0o755), None).expect("a");
    w.append(&dir("/a/c", 0o755), None).expect("a/c");

    let e = append_err(&mut w, &dir("/a/b", 0o755), None);
    assert!(matches!(e, LayerError::OutOfOrder { .. }));
    assert_eq!(e.to_string(), "entry `/a/b` is out of order: it must come after `/a/c`");

    let e = append_err(&mut w, &dir("/a/c", 0o755), None);
    assert!(matches!(e, LayerError::Duplicate { .. }), "{e}");

    let e = append_err(&mut w, &file("/a/d/x", 0, 0o644), Some(b""));
    assert!(matches!(e, LayerError::MissingParent { ref parent, .. } if parent == "/a/d"), "{e}");

    w.append(&file("/a/f", 0, 0o644), Some(&mut Cursor::new(&b""[..]))).expect("a/f");
    let e = append_err(&mut w, &file("/a/f/x", 0, 0o644), Some(b""));
    assert!(matches!(e, LayerError::ParentNotDir { .. }), "{e}");

    for bad in ["a/g", "/", "/a/g/", "/a//g", "/a/./g", "/a/../g", "/a/g\0"] {
        let e = append_err(&mut w, &dir(bad, 0o755), None);
        assert!(matches!(e, LayerError::InvalidPath { .. }), "{bad:?}: {e}");
    }

    let e = append_err(&mut w, &file("/a/g", 0, 0o100644), Some(b""));
    assert!(matches!(e, LayerError::InvalidMode { .. }), "{e}");

    let e = append_err(&mut w, &file("/a/g", 0, 0o644), None);
    assert!(matches!(e, LayerError::DataMismatch { .. }), "{e}");
    let e = append_err(&mut w, &dir("/a/g", 0o755), Some(b""));
    assert!(matches!(e, LayerError::DataMismatch { .. }), "{e}");

    let e = append_err(&mut w, &hardlink("/a/h", "/a/nope"), None);
    assert!(matches!(e, LayerError::InvalidLinkTarget { .. }), "{e}");
    let e = append_err(&mut w, &hardlink("/a/h", "/a/c"), None);
    assert!(e.to_string().contains("is a directory"), "{e}");
    let e = append_err(&mut w, &hardlink("/a/h", "a/f"), None);
    assert!(matches!(e, LayerError::InvalidLinkTarget { .. }), "{e}");
    let e = append_err(&mut w, &symlink("/a/s", ""), None);
    assert!(matches!(e, LayerError::InvalidLinkTarget { .. }), "{e}");

    // Validation errors leave the writer usable and the output intact.
    w.append(&hardlink("/a/h", "/a/f"), None).expect("hardlink");
    let (blob, _) = w.finish().expect("finish");
    let tar_bytes = gunzip(&blob);
    let mut archive = ::tar::Archive::new(&tar_bytes[..]);
    let names: Vec<String> =
        archive.entries().expect("entries").map(|e| e.expect("entry").path().expect("path").display().to_string()).collect();
    assert_eq!(names, ["a/", "a/c/", "a/f", "a/h"]);
}

#[test]
fn rejects_wrong_data_length_and_poisons() {
    let mut w = LayerWriter::new(Vec::new());
    let e = append_err(&mut w, &file("/short", 10, 0o644), Some(b"12345"));
    assert!(matches!(e, LayerError::DataLength { expected: 10, actual: Some(5), .. }), "{e}");
    assert_eq!(e.to_string(), "file `/short`: declared 10 bytes but its data ended after 5");
    assert!(matches!(append_err(&mut w, &dir("/z", 0o755), None), LayerError::Poisoned));
    assert!(matches!(w.finish(), Err(LayerError::Poisoned)));

    let mut w = LayerWriter::new(Vec::new());
    let e = append_err(&mut w, &file("/long", 3, 0o644), Some(b"12345"));
    assert!(matches!(e, LayerError::DataLength { expected: 3, actual: None, .. }), "{e}");
    assert_eq!(e.to_string(), "file `/long`: declared 3 bytes but its data is longer");
    assert!(matches!(w.finish(), Err(LayerError::Poisoned)));

    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("EIO"))
        }
    }
    let mut w = LayerWriter::new(Vec::new());
    let e = w.append(&file("/f", 3, 0o644), Some(&mut Broken)).expect_err("read error");
    assert!(matches!(e, LayerError::Read { .. }));
    assert!(e.to_string().contains("EIO"), "{e}");
}

#[test]
fn write_errors_have_context() {
    let mut w = LayerWriter::new(FailingSink { budget: 0 });
    let data = sample(3 * CHUNK_SIZE, 1);
    let result = w.append(&file("/big", data.len() as u64, 0o644), Some(&mut Cursor::new(&data[..]))).and_then(|()| w.finish().map(|_| ()));
    let e = result.expect_err("sink fails");
    assert!(e.to_string().contains("disk full"), "{e}");
}
