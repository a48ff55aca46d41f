//! Tests of reading `.deb`s and installing them as layers: real `dpkg-deb` packages in every
//! compression, crafted archives with malicious or colliding entries, and the dpkg database.

use super::*;
use std::borrow::Cow;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use md5::{Digest, Md5};

use crate::layer::LayerWriter;

const EPOCH: u64 = 1_700_000_000;
const OLD: u64 = 1_000_000_000;
const LONG: &str = "a-very-long-file-name-that-does-not-fit-the-one-hundred-byte-ustar-name-field-\
                    at-all-because-it-goes-on-and-on-and-on.txt";

const CONTROL: &str = "Package: testpkg\nVersion: 1:1.0-1\nArchitecture: amd64\n\
                       Maintainer: Test <test@example.org>\nInstalled-Size: 12\n\
                       Description: a test package\n multi-line description\n .\n end\n";

// ---- building .debs -----------------------------------------------------------------

fn write(path: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, data).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn set_mtime(path: &Path, secs: u64) {
    let f = fs::File::options().write(true).open(path).expect("open");
    f.set_modified(UNIX_EPOCH + Duration::from_secs(secs)).expect("set mtime");
}

/// The test package's tree (with `DEBIAN/`), under `root`.
fn make_tree(root: &Path, with_md5sums: bool) {
    write(&root.join("DEBIAN/control"), CONTROL.as_bytes(), 0o644);
    write(&root.join("etc/testpkg.conf"), b"key = value\n", 0o644);
    write(&root.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n", 0o755);
    write(&root.join("usr/bin/suid"), b"\x7fELF setuid", 0o755);
    fs::set_permissions(root.join("usr/bin/suid"), fs::Permissions::from_mode(0o4755)).expect("chmod suid");
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/hard")).expect("hardlink");
    symlink("tool", root.join("usr/bin/link")).expect("symlink");
    write(&root.join("bin/mytool"), b"mytool", 0o755);
    write(&root.join("lib/x86_64-linux-gnu/libfoo.so.1"), b"\x7fELF lib", 0o644);
    symlink("libfoo.so.1", root.join("lib/x86_64-linux-gnu/libfoo.so")).expect("symlink");
    write(&root.join("usr/share/doc/testpkg/README"), b"read me\n", 0o644);
    set_mtime(&root.join("usr/share/doc/testpkg/README"), OLD);
    write(&root.join("usr/share/testpkg").join(LONG), b"long name\n", 0o600);
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod dir");
        for e in fs::read_dir(&d).expect("readdir") {
            let e = e.expect("entry");
            if e.file_type().expect("type").is_dir() {
                dirs.push(e.path());
            }
        }
    }
    if with_md5sums {
        let mut sums = String::new();
        for rel in ["bin/mytool", "etc/testpkg.conf", "usr/bin/hard", "usr/bin/suid", "usr/bin/tool"] {
            let data = fs::read(root.join(rel)).expect("read");
            sums.push_str(&format!("{}  {rel}\n", hex::encode(Md5::digest(&data))));
        }
        write(&root.join("DEBIAN/md5sums"), sums.as_bytes(), 0o644);
    }
}

/// Builds the test package with `dpkg-deb -Z<compression>`.
fn dpkg_build(dir: &Path, compression: &str, with_md5sums: bool) -> PathBuf {
    let root = dir.join(format!("root-{compression}-{with_md5sums}"));
    make_tree(&root, with_md5sums);
    let out = dir.join(format!("testpkg-{compression}-{with_md5sums}.deb"));
    let status = Command::new("dpkg-deb")
        .env_remove("SOURCE_DATE_EPOCH")
        .arg("--root-owner-group")
        .arg(format!("-Z{compression}"))
        .arg("--build")
        .arg(&root)
        .arg(&out)
        .output()
        .expect("run dpkg-deb");
    assert!(status.status.success(), "dpkg-deb failed: {}", String::from_utf8_lossy(&status.stderr));
    out
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    liblzma::read::XzEncoder::new(data, 1).read_to_end(&mut out).expect("xz");
    out
}

fn ar_deb(path: &Path, control_tar_xz: &[u8], data_member: &str, data: &[u8]) {
    let mut b = ar::Builder::new(fs::File::create(path).expect("create deb"));
    for (name, bytes) in [("debian-binary", &b"2.0\n"[..]), ("control.tar.xz", control_tar_xz), (data_member, data)] {
        b.append(&ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64), bytes).expect("ar append");
    }
}

fn control_tar_xz(control: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(control.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "./control", control.as_bytes()).expect("control");
    xz(&b.into_inner().expect("tar"))
}

/// A raw tar entry, names written byte for byte (no validation).
struct Raw<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    mode: u32,
    link: &'a [u8],
    data: &'a [u8],
}

fn raw(name: &str, kind: tar::EntryType, link: &str, data: &'static [u8]) -> Raw<'static> {
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let link: &'static str = Box::leak(link.to_owned().into_boxed_str());
    Raw { name: name.as_bytes(), kind, mode: if kind == tar::EntryType::Directory { 0o755 } else { 0o644 }, link: link.as_bytes(), data }
}

fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name);
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link);
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(EPOCH + 100);
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        b.append(&h, e.data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn craft_deb(dir: &Path, file: &str, entries: &[Raw<'_>]) -> PathBuf {
    let path = dir.join(file);
    ar_deb(&path, &control_tar_xz(CONTROL), "data.tar.xz", &xz(&raw_tar(entries)));
    path
}

/// Rebuilds `deb` with the entries of its data tarball in reverse order.
fn reversed_deb(deb: &Path, out: &Path) {
    let mut archive = ar::Archive::new(fs::File::open(deb).expect("open"));
    let mut control = Vec::new();
    let mut data = Vec::new();
    while let Some(m) = archive.next_entry() {
        let mut m = m.expect("member");
        let name = String::from_utf8_lossy(m.header().identifier()).into_owned();
        if name.starts_with("control.tar") {
            m.read_to_end(&mut control).expect("control");
        } else if name.starts_with("data.tar") {
            let mut d = liblzma::read::XzDecoder::new(&mut m);
            d.read_to_end(&mut data).expect("data");
        }
    }
    struct E {
        header: tar::Header,
        path: Vec<u8>,
        link: Option<Vec<u8>>,
        data: Vec<u8>,
    }
    let mut entries = Vec::new();
    let mut tar_in = tar::Archive::new(&data[..]);
    for e in tar_in.entries().expect("entries") {
        let mut e = e.expect("entry");
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).expect("read");
        entries.push(E {
            header: e.header().clone(),
            path: e.path_bytes().into_owned(),
            link: e.link_name_bytes().map(Cow::into_owned),
            data: bytes,
        });
    }
    entries.reverse();
    let mut b = tar::Builder::new(Vec::new());
    for mut e in entries {
        let path = String::from_utf8(e.path).expect("utf8");
        match e.link {
            Some(link) => {
                let link = String::from_utf8(link).expect("utf8");
                b.append_link(&mut e.header, &path, &link).expect("link");
            }
            None => b.append_data(&mut e.header, &path, &e.data[..]).expect("data"),
        }
    }
    let tarball = b.into_inner().expect("tar");
    let mut w = ar::Builder::new(fs::File::create(out).expect("create"));
    for (name, bytes) in [("debian-binary", b"2.0\n".to_vec()), ("control.tar.xz", control), ("data.tar.xz", xz(&tarball))] {
        w.append(&ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64), &bytes[..]).expect("ar");
    }
}

// ---- reading layers -----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hdr {
    path: String,
    typ: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

fn read_layer(gz: &[u8]) -> Vec<Hdr> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(gz));
    for e in archive.entries().expect("entries") {
        let mut e = e.expect("entry");
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("data");
        assert_eq!(h.username_bytes(), Some(&b""[..]), "uname dropped");
        assert_eq!(h.groupname_bytes(), Some(&b""[..]), "gname dropped");
        out.push(Hdr {
            path: String::from_utf8(e.path_bytes().into_owned()).expect("utf8 path"),
            typ: h.entry_type().as_byte(),
            mode: h.mode().expect("mode"),
            uid: h.uid().expect("uid"),
            gid: h.gid().expect("gid"),
            mtime: h.mtime().expect("mtime"),
            link: e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).expect("utf8 link")),
            data,
        });
    }
    out
}

fn install(deb: &Path, merged_usr: bool) -> (Vec<u8>, InstalledLayer) {
    let spill = tempfile::tempdir().expect("spill dir");
    let opts = InstallOptions { epoch: EPOCH, merged_usr, emulate: true, keep: vec![] };
    install_layer(deb, &opts, LayerWriter::new(Vec::new()), spill.path()).expect("install")
}

fn find<'a>(layer: &'a [Hdr], path: &str) -> &'a Hdr {
    layer.iter().find(|h| h.path == path).unwrap_or_else(|| panic!("no `{path}` in layer: {:#?}", paths(layer)))
}

fn paths(layer: &[Hdr]) -> Vec<&str> {
    layer.iter().map(|h| h.path.as_str()).collect()
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn install_err(deb: &Path, merged_usr: bool) -> String {
    let spill = tempfile::tempdir().expect("spill dir");
    let opts = InstallOptions { epoch: EPOCH, merged_usr, emulate: true, keep: vec![] };
    match install_layer(deb, &opts, LayerWriter::new(Vec::new()), spill.path()) {
        Ok(_) => panic!("{} was accepted", deb.display()),
        Err(e) => e.to_string(),
    }
}

// ---- tests --------------------------------------------------------------------------

#[test]
fn installs_a_dpkg_built_package_with_merged_usr() {
    let dir = tempfile::tempdir().expect("tmp");
    let deb = dpkg_build(dir.path(), "xz", true);
    let (gz, installed) = install(&deb, true);
    let layer = read_layer(&gz);
    let long = format!("usr/share/testpkg/{LONG}");
    let expected = vec![
        "etc/",
        "etc/testpkg.conf",
        "usr/",
        "usr/bin/",
        "usr/bin/hard",
        "usr/bin/link",
        "usr/bin/mytool",
        "usr/bin/suid",
        "usr/bin/tool",
        "usr/lib/",
        "usr/lib/x86_64-linux-gnu/",
        "usr/lib/x86_64-linux-gnu/libfoo.so",
        "usr/lib/x86_64-linux-gnu/libfoo.so.1",
        "usr/share/",
        "usr/share/doc/",
        "usr/share/doc/testpkg/",
        "usr/share/doc/testpkg/README",
        "usr/share/testpkg/",
        long.as_str(),
        "var/",
        "var/lib/",
        "var/lib/dpkg/",
        "var/lib/dpkg/info/",
        "var/lib/dpkg/info/testpkg.list",
        "var/lib/dpkg/info/testpkg.md5sums",
    ];
    assert_eq!(paths(&layer), expected);

    // Every header, field by field.
    for h in &layer {
        assert_eq!((h.uid, h.gid), (0, 0), "{}", h.path);
        let is_dir = h.path.ends_with('/');
        match h.path.as_str() {
            "usr/bin/suid" => {
                assert_eq!((h.typ, h.mode), (b'0', 0o4755));
                assert_eq!(h.data, b"\x7fELF setuid");
            }
            "usr/bin/hard" => {
                // Byte-order-first path of the hardlink group carries the data.
                assert_eq!((h.typ, h.mode), (b'0', 0o755));
                assert_eq!(h.data, b"#!/bin/sh\necho tool\n");
            }
            "usr/bin/tool" => {
                assert_eq!((h.typ, h.mode), (b'1', 0o755));
                assert_eq!(h.link.as_deref(), Some("usr/bin/hard"));
                assert!(h.data.is_empty());
            }
            "usr/bin/link" => {
                assert_eq!((h.typ, h.mode), (b'2', 0o777));
                assert_eq!(h.link.as_deref(), Some("tool"));
            }
            "usr/bin/mytool" => {
                assert_eq!((h.typ, h.mode), (b'0', 0o755));
                assert_eq!(h.data, b"mytool");
            }
            "usr/lib/x86_64-linux-gnu/libfoo.so" => {
                assert_eq!(h.typ, b'2');
                assert_eq!(h.link.as_deref(), Some("libfoo.so.1"));
            }
            "usr/lib/x86_64-linux-gnu/libfoo.so.1" => {
                assert_eq!((h.typ, h.mode, &h.data[..]), (b'0', 0o644, &b"\x7fELF lib"[..]));
            }
            "etc/testpkg.conf" => {
                assert_eq!((h.typ, h.mode, &h.data[..]), (b'0', 0o644, &b"key = value\n"[..]));
            }
            "usr/share/doc/testpkg/README" => {
                assert_eq!((h.typ, h.mode), (b'0', 0o644));
                assert_eq!(h.mtime, OLD, "older mtimes are kept");
            }
            p if p == long => {
                assert_eq!((h.typ, h.mode, &h.data[..]), (b'0', 0o600, &b"long name\n"[..]));
            }
            p if p.starts_with("var/lib/dpkg/info/testpkg.") => {
                assert_eq!((h.typ, h.mode), (b'0', 0o644));
            }
            _ => {
                assert!(is_dir, "unexpected {h:?}");
                assert_eq!((h.typ, h.mode), (b'5', 0o755), "{}", h.path);
            }
        }
        if h.path != "usr/share/doc/testpkg/README" {
            assert_eq!(h.mtime, EPOCH, "{} clamped", h.path);
        }
    }

    // The dpkg database entries: the status paragraph for the image's status file, the list of
    // every path as in the package (archive order, before the merged-/usr rewrite), md5sums.
    let status_text = installed.status.clone();
    let list = String::from_utf8(find(&layer, "var/lib/dpkg/info/testpkg.list").data.clone()).expect("utf8");
    assert!(list.starts_with("/.\n") && list.contains("\n/bin/mytool\n") && !list.contains("/usr/bin/mytool"), "{list}");
    assert_eq!(
        status_text,
        "Package: testpkg\nStatus: install ok installed\nInstalled-Size: 12\n\
         Maintainer: Test <test@example.org>\nArchitecture: amd64\nVersion: 1:1.0-1\n\
         Description: a test package\n multi-line description\n .\n end\n",
        "dpkg's field order"
    );
    let sums = find(&layer, "var/lib/dpkg/info/testpkg.md5sums");
    let info = read_control(&deb).expect("control");
    assert_eq!(Some(String::from_utf8(sums.data.clone()).expect("utf8")), info.md5sums);

    // What the caller gets back.
    assert_eq!(
        installed.files,
        vec![
            "/etc/testpkg.conf".to_owned(),
            "/usr/bin/hard".to_owned(),
            "/usr/bin/link".to_owned(),
            "/usr/bin/mytool".to_owned(),
            "/usr/bin/suid".to_owned(),
            "/usr/bin/tool".to_owned(),
            "/usr/lib/x86_64-linux-gnu/libfoo.so".to_owned(),
            "/usr/lib/x86_64-linux-gnu/libfoo.so.1".to_owned(),
            "/usr/share/doc/testpkg/README".to_owned(),
            format!("/{long}"),
        ]
    );
    assert_eq!(installed.file_md5.len(), 8);
    assert_eq!(installed.file_md5["/usr/bin/tool"], md5_hex(b"#!/bin/sh\necho tool\n"));
    assert_eq!(installed.file_md5["/usr/bin/hard"], md5_hex(b"#!/bin/sh\necho tool\n"));
    assert_eq!(installed.file_md5["/usr/bin/mytool"], md5_hex(b"mytool"));
    assert_eq!(installed.digests.size, gz.len() as u64);
    let mut tar_bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut tar_bytes).expect("gunzip");
    assert_eq!(installed.digests.uncompressed_size, tar_bytes.len() as u64);
    use sha2::Digest as _;
    let diff_id: [u8; 32] = sha2::Sha256::digest(&tar_bytes).into();
    assert_eq!(installed.digests.diff_id, diff_id);
}

#[test]
fn without_merged_usr_paths_stay() {
    let dir = tempfile::tempdir().expect("tmp");
    let deb = dpkg_build(dir.path(), "xz", true);
    let (gz, installed) = install(&deb, false);
    let layer = read_layer(&gz);
    for p in ["bin/", "bin/mytool", "lib/", "lib/x86_64-linux-gnu/libfoo.so.1"] {
        find(&layer, p);
    }
    assert!(!paths(&layer).contains(&"usr/bin/mytool"));
    assert!(installed.files.contains(&"/bin/mytool".to_owned()));
}

#[test]
fn all_compressions_give_the_same_layer_and_it_is_reproducible() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut digests = Vec::new();
    for (flag, name) in [("xz", "xz"), ("gzip", "gz"), ("zstd", "zst"), ("none", "none")] {
        let deb = dpkg_build(dir.path(), flag, true);
        assert_eq!(read_control(&deb).expect("control").data_compression, name);
        let (a, da) = install(&deb, true);
        let (b, db) = install(&deb, true);
        assert_eq!(a, b, "{flag}: same bytes twice");
        assert_eq!(da, db);
        digests.push((flag, da.digests, a));
    }
    for (flag, d, bytes) in &digests[1..] {
        assert_eq!(*d, digests[0].1, "{flag} vs xz");
        assert_eq!(*bytes, digests[0].2, "{flag} vs xz");
    }
}

#[test]
fn archive_order_does_not_matter() {
    let dir = tempfile::tempdir().expect("tmp");
    let deb = dpkg_build(dir.path(), "xz", true);
    let rev = dir.path().join("reversed.deb");
    reversed_deb(&deb, &rev);
    // The reversal really changed the data order.
    let names = |d: &Path| {
        let out = Command::new("dpkg-deb").arg("-c").arg(d).output().expect("dpkg-deb -c");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_ne!(names(&deb), names(&rev));
    let (a, _) = install(&deb, true);
    let (b, _) = install(&rev, true);
    // Everything but dpkg's file list, which is in archive order, as dpkg writes it.
    let without_list = |gz: &[u8]| {
        read_layer(gz)
            .into_iter()
            .map(|mut h| {
                if h.path.ends_with(".list") {
                    h.data.clear();
                }
                h
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(without_list(&a), without_list(&b));
    let list = |gz: &[u8]| read_layer(gz).into_iter().find(|h| h.path.ends_with(".list")).map(|h| h.data).unwrap_or_default();
    let sorted = |v: Vec<u8>| {
        let mut l: Vec<String> = String::from_utf8(v).expect("utf8").lines().map(str::to_owned).collect();
        l.sort();
        l
    };
    assert_eq!(sorted(list(&a)), sorted(list(&b)));
}

#[test]
fn computes_md5sums_when_the_package_has_none() {
    let dir = tempfile::tempdir().expect("tmp");
    let deb = dpkg_build(dir.path(), "zstd", false);
    assert_eq!(read_control(&deb).expect("control").md5sums, None);
    let (gz, _) = install(&deb, true);
    let layer = read_layer(&gz);
    let sums = String::from_utf8(find(&layer, "var/lib/dpkg/info/testpkg.md5sums").data.clone()).expect("utf8");
    let tool = md5_hex(b"#!/bin/sh\necho tool\n");
    let expected = format!(
        "{}  bin/mytool\n{}  etc/testpkg.conf\n{}  lib/x86_64-linux-gnu/libfoo.so.1\n\
         {tool}  usr/bin/hard\n{}  usr/bin/suid\n{tool}  usr/bin/tool\n\
         {}  usr/share/doc/testpkg/README\n{}  usr/share/testpkg/{LONG}\n",
        md5_hex(b"mytool"),
        md5_hex(b"key = value\n"),
        md5_hex(b"\x7fELF lib"),
        md5_hex(b"\x7fELF setuid"),
        md5_hex(b"read me\n"),
        md5_hex(b"long name\n"),
    );
    assert_eq!(sums, expected);
}

#[test]
fn read_control_reads_the_control_member() {
    let dir = tempfile::tempdir().expect("tmp");
    let deb = dpkg_build(dir.path(), "gzip", true);
    let info = read_control(&deb).expect("control");
    assert_eq!(info.control, CONTROL);
    assert_eq!(info.data_compression, "gz");
    assert_eq!(info.conffiles, None);
    assert!(info.md5sums.as_deref().is_some_and(|s| s.contains("  usr/bin/tool\n")));
    assert_eq!(info.package().as_deref(), Ok("testpkg"));
    assert_eq!(info.field("version").as_deref(), Some("1:1.0-1"));
    assert_eq!(info.field("Description").as_deref(), Some("a test package\nmulti-line description\n.\nend"));
}

#[test]
fn read_files_returns_wanted_files_sorted() {
    let dir = tempfile::tempdir().expect("tmp");
    let deb = dpkg_build(dir.path(), "xz", true);
    let got = read_files(&deb, &|p: &str| p.starts_with("/usr/share/") || p == "/etc/testpkg.conf").expect("read_files");
    assert_eq!(
        got,
        vec![
            ("/etc/testpkg.conf".to_owned(), b"key = value\n".to_vec()),
            ("/usr/share/doc/testpkg/README".to_owned(), b"read me\n".to_vec()),
            (format!("/usr/share/testpkg/{LONG}"), b"long name\n".to_vec()),
        ]
    );
    // Either member of the hardlink pair, alone (whichever the archive stores as the link).
    for p in ["/usr/bin/hard", "/usr/bin/tool"] {
        let got = read_files(&deb, &|q: &str| q == p).expect("read_files");
        assert_eq!(got, vec![(p.to_owned(), b"#!/bin/sh\necho tool\n".to_vec())]);
    }
    // Package paths, no merged-/usr rewrite; symlinks are not files.
    let got = read_files(&deb, &|p: &str| p.starts_with("/lib/")).expect("read_files");
    assert_eq!(got, vec![("/lib/x86_64-linux-gnu/libfoo.so.1".to_owned(), b"\x7fELF lib".to_vec())]);
}

#[test]
fn rejects_malicious_entries() {
    use tar::EntryType::{Directory as D, Fifo, Link, Regular as F, Symlink as S};
    let dir = tempfile::tempdir().expect("tmp");
    let cases: Vec<(&str, Vec<Raw<'static>>, &str)> = vec![
        (
            "dotdot",
            vec![raw("./../etc/passwd", F, "", b"root::0:0::/:/bin/sh\n")],
            "entry `./../etc/passwd`: `..` components are not allowed",
        ),
        ("absolute", vec![raw("/etc/passwd", F, "", b"x")], "entry `/etc/passwd`: absolute names are not allowed"),
        // A newline in a name would inject a line into dpkg's md5sums.
        (
            "newline-in-name",
            vec![raw("./usr/bin/x\nd41d8cd98f00b204e9800998ecf8427e  etc/shadow", F, "", b"x")],
            "the name contains the control character '\\n'",
        ),
        (
            "hardlink-dotdot",
            vec![raw("./x", F, "", b"x"), raw("./y", Link, "../../x", b"")],
            "entry `./y`: hardlink target `../../x`: `..` components are not allowed",
        ),
        (
            "hardlink-absolute",
            vec![raw("./y", Link, "/etc/shadow", b"")],
            "entry `./y`: hardlink target `/etc/shadow`: absolute names are not allowed",
        ),
        ("hardlink-missing", vec![raw("./y", Link, "./nothere", b"")], "hardlink target `/nothere` is not a regular file of this package"),
        ("hardlink-dir", vec![raw("./d/", D, "", b""), raw("./y", Link, "./d", b"")], "hardlink target `/d` is a directory"),
        (
            "write-through",
            vec![raw("./a", S, "/etc", b""), raw("./a/passwd", F, "", b"x")],
            "entry `./a/passwd`: `/a/passwd` would be written through symlink `/a`",
        ),
        (
            "write-through-deep",
            vec![raw("./usr/", D, "", b""), raw("./usr/lib", S, "../etc", b""), raw("./usr/lib/x/y/z", F, "", b"x")],
            "`/usr/lib/x/y/z` would be written through symlink `/usr/lib`",
        ),
        ("below-file", vec![raw("./f", F, "", b"x"), raw("./f/g", F, "", b"y")], "`/f/g` is below `/f`, which is not a directory"),
        ("fifo", vec![raw("./fifo", Fifo, "", b"")], "entry `./fifo`: device nodes and FIFOs are not supported"),
        ("chardev", vec![raw("./dev/null", tar::EntryType::Char, "", b"")], "entry `./dev/null`: device nodes and FIFOs are not supported"),
        (
            "duplicate",
            vec![raw("./f", F, "", b"x"), raw("f", F, "", b"y")],
            "entry `f`: `/f` is listed twice (also as `./f`) with different content",
        ),
    ];
    for (file, entries, message) in cases {
        let deb = craft_deb(dir.path(), &format!("{file}.deb"), &entries);
        let err = install_err(&deb, true);
        assert!(err.contains(message) && err.contains(&deb.display().to_string()), "{file}: got `{err}`, want `{message}`");
    }

    // A corrupt xz stream is reported as a damaged .deb, not only as what the tar reader choked
    // on ("numeric field was not a number: when getting cksum").
    let good = craft_deb(dir.path(), "good.deb", &[raw("./usr/", D, "", b""), raw("./usr/x", F, "", &[7u8; 4000])]);
    let mut bytes = fs::read(&good).expect("read");
    let member = bytes.windows(11).position(|w| w == b"data.tar.xz").expect("data member");
    // Past the ar header (60 bytes) and the xz stream header, into the compressed data.
    for b in &mut bytes[member + 60 + 24..member + 60 + 40] {
        *b ^= 0x5a;
    }
    let damaged = dir.path().join("damaged.deb");
    fs::write(&damaged, bytes).expect("write");
    let err = install_err(&damaged, true);
    assert!(err.contains("the .deb is damaged") && err.contains("data.tar"), "{err}");

    // Names that are not UTF-8.
    let deb = craft_deb(dir.path(), "latin1.deb", &[Raw { name: b"./caf\xe9", kind: F, mode: 0o644, link: b"", data: b"x" }]);
    let err = install_err(&deb, true);
    assert!(err.contains("the name is not UTF-8"), "{err}");
    // read_files checks names too.
    let deb = craft_deb(dir.path(), "abs2.deb", &[raw("/etc/passwd", F, "", b"x")]);
    let err = read_files(&deb, &|_: &str| true).expect_err("absolute").to_string();
    assert!(err.contains("absolute names are not allowed"), "{err}");
}

#[test]
fn merged_usr_collisions() {
    use tar::EntryType::{Directory as D, Regular as F, Symlink as S};
    let dir = tempfile::tempdir().expect("tmp");
    // Different contents: error.
    let deb = craft_deb(dir.path(), "clash.deb", &[raw("./bin/x", F, "", b"one"), raw("./usr/bin/x", F, "", b"two")]);
    let err = install_err(&deb, true);
    assert!(err.contains("`./bin/x` and `./usr/bin/x` both become `/usr/bin/x` under merged /usr"), "{err}");
    // Without merged /usr they are different paths.
    let (gz, _) = install(&deb, false);
    assert!(paths(&read_layer(&gz)).contains(&"bin/x"));

    // Identical: merged. Directories merge; the top-level symlink is kept.
    let deb = craft_deb(
        dir.path(),
        "same.deb",
        &[
            raw("./", D, "", b""),
            raw("./bin", S, "usr/bin", b""),
            raw("./usr/", D, "", b""),
            raw("./usr/bin/", D, "", b""),
            raw("./usr/bin/x", F, "", b"same"),
            raw("./lib/", D, "", b""),
            raw("./lib/y", F, "", b"y"),
            raw("./sbin/x", F, "", b"same"),
            raw("./usr/sbin/x", F, "", b"same"),
        ],
    );
    let (gz, installed) = install(&deb, true);
    let layer = read_layer(&gz);
    let lp = paths(&layer);
    assert_eq!(&lp[..7], &["bin", "usr/", "usr/bin/", "usr/bin/x", "usr/lib/", "usr/lib/y", "usr/sbin/"]);
    assert_eq!(lp[7], "usr/sbin/x");
    assert_eq!(find(&layer, "bin").link.as_deref(), Some("usr/bin"));
    assert_eq!(find(&layer, "usr/lib/").mode, 0o755);
    assert!(installed.files.contains(&"/bin".to_owned()));

    // A top-level `lib` that is anything else is refused.
    let deb = craft_deb(dir.path(), "badlib.deb", &[raw("./lib", S, "/opt/lib", b"")]);
    let err = install_err(&deb, true);
    assert!(err.contains("may only be a directory or the symlink"), "{err}");

    // A hardlink through the old path is rewritten with it.
    let deb = craft_deb(dir.path(), "hl.deb", &[raw("./bin/z", F, "", b"z"), raw("./usr/bin/zz", tar::EntryType::Link, "./bin/z", b"")]);
    let (gz, _) = install(&deb, true);
    let layer = read_layer(&gz);
    assert_eq!(find(&layer, "usr/bin/z").data, b"z");
    assert_eq!(find(&layer, "usr/bin/zz").link.as_deref(), Some("usr/bin/z"));
}

#[test]
fn format_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let not_ar = dir.path().join("not.deb");
    fs::write(&not_ar, b"hello").expect("write");
    let err = read_control(&not_ar).expect_err("not ar").to_string();
    assert!(err.contains("reading the ar archive"), "{err}");

    let bz = dir.path().join("bz.deb");
    ar_deb(&bz, &control_tar_xz(CONTROL), "data.tar.bz2", b"BZh");
    let err = read_control(&bz).expect_err("bz2").to_string();
    assert!(err.contains("found member `data.tar.bz2`"), "{err}");

    let noname = dir.path().join("noname.deb");
    ar_deb(&noname, &control_tar_xz("Version: 1\n"), "data.tar.xz", &xz(&raw_tar(&[])));
    let err = install_err(&noname, true);
    assert!(err.contains("no `Package` field"), "{err}");

    let missing = dir.path().join("missing.deb");
    let mut b = ar::Builder::new(fs::File::create(&missing).expect("create"));
    b.append(&ar::Header::new(b"debian-binary".to_vec(), 4), &b"2.0\n"[..]).expect("ar");
    drop(b);
    let err = read_control(&missing).expect_err("missing").to_string();
    assert!(err.contains("no `control.tar` member"), "{err}");
}

#[test]
fn other_containers_underscore_members_and_pax_mtime() {
    let dir = tempfile::tempdir().expect("tmp");
    // A pax mtime overrides the header's; the clamp still applies.
    let mut b = tar::Builder::new(Vec::new());
    let mut pax = Vec::new();
    pax.extend_from_slice(b"19 mtime=1234.5678\n");
    let mut ph = tar::Header::new_ustar();
    ph.set_entry_type(tar::EntryType::XHeader);
    ph.set_size(pax.len() as u64);
    ph.set_mode(0o644);
    ph.set_uid(0);
    ph.set_gid(0);
    ph.set_mtime(0);
    ph.set_path("././@PaxHeader").expect("pax path");
    ph.set_cksum();
    b.append(&ph, &pax[..]).expect("pax");
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(EPOCH + 5);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(3);
    h.set_path("./old").expect("path");
    h.set_cksum();
    b.append(&h, &b"old"[..]).expect("file");
    let tarball = b.into_inner().expect("tar");

    let lzma = {
        let opts = liblzma::stream::LzmaOptions::new_preset(1).expect("preset");
        let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).expect("encoder");
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new_stream(&tarball[..], stream).read_to_end(&mut out).expect("lzma");
        out
    };
    let mut layers = Vec::new();
    for (member, data, compression) in [("data.tar", tarball.clone(), "none"), ("data.tar.lzma", lzma, "lzma")] {
        let path = dir.path().join(format!("{compression}.deb"));
        let control = control_tar_xz(CONTROL);
        let mut w = ar::Builder::new(fs::File::create(&path).expect("create"));
        for (name, bytes) in [
            ("debian-binary", &b"2.0\n"[..]),
            ("_gpgorigin", &b"signature"[..]),
            ("control.tar.xz", &control[..]),
            ("_extra", &b"x"[..]),
            (member, &data[..]),
            ("trailing-member", &b"ignored"[..]),
        ] {
            w.append(&ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64), bytes).expect("ar");
        }
        drop(w);
        assert_eq!(read_control(&path).expect("control").data_compression, compression);
        let (gz, _) = install(&path, true);
        let layer = read_layer(&gz);
        assert_eq!(find(&layer, "old").mtime, 1234);
        layers.push(gz);
    }
    assert_eq!(layers[0], layers[1]);
}

#[test]
fn status_entry_format() {
    let info = DebInfo {
        control: "Package: a\nStatus: purge ok not-installed\nVersion: 1\nDescription: x\n y".to_owned(),
        md5sums: None,
        conffiles: None,
        postinst: None,
        others: Vec::new(),
        data_compression: "xz",
    };
    let (status, md5sums) = dpkg_status_entry(&info);
    assert_eq!(status, "Package: a\nStatus: install ok installed\nVersion: 1\nDescription: x\n y\n");
    assert_eq!(md5sums, None);
}
