//! The tar bytes of one entry (see "Tar format" in the module documentation): a ustar header,
//! preceded by a PAX extended header only when a value does not fit its ustar field.

use super::{Entry, EntryKind};

/// Identity of the exact tar bytes [`LayerWriter`](super::LayerWriter) produces for a given list
/// of entries (header format, PAX policy). Change it whenever that could
/// change.
pub const TAR_FORMAT_ID: &str = "tar/ustar+pax/v1";

/// Size of a tar block.
pub(super) const BLOCK: usize = 512;

/// Largest value of an 8-byte octal field (7 digits).
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (11 digits).
pub(super) const MAX_OCTAL_12: u64 = 0o77_777_777_777;

const TYPE_FILE: u8 = b'0';
const TYPE_HARDLINK: u8 = b'1';
const TYPE_SYMLINK: u8 = b'2';
const TYPE_DIR: u8 = b'5';
const TYPE_PAX: u8 = b'x';

const PAX_HEADER_NAME: &[u8] = b"././@PaxHeader";

/// Fields of one header. [`ustar_block`] needs every value to fit its
/// field; [`entry_headers`] moves the ones that do not into PAX records.
struct Ustar<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    typeflag: u8,
    linkname: &'a [u8],
}

/// Writes `value` as zero-padded octal into all but the last byte of
/// `field`, which is NUL.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let mut v = value;
    for slot in field[..digits].iter_mut().rev() {
        *slot = b'0' + (v & 7) as u8;
        v >>= 3;
    }
    field[digits] = 0;
    debug_assert_eq!(v, 0, "value {value:#o} does not fit the field");
}

fn put_bytes(field: &mut [u8], bytes: &[u8]) {
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

fn ustar_block(h: &Ustar<'_>) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    put_bytes(&mut b[0..100], h.name);
    put_octal(&mut b[100..108], u64::from(h.mode));
    put_octal(&mut b[108..116], h.uid);
    put_octal(&mut b[116..124], h.gid);
    put_octal(&mut b[124..136], h.size);
    put_octal(&mut b[136..148], h.mtime);
    b[156] = h.typeflag;
    put_bytes(&mut b[157..257], h.linkname);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    // uname 265..297 and gname 297..329 stay empty.
    put_octal(&mut b[329..337], 0); // devmajor
    put_octal(&mut b[337..345], 0); // devminor
                                    // prefix 345..500 and padding stay zero.
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    put_octal(&mut b[148..155], sum);
    b[155] = b' ';
    b
}

/// Appends one PAX record `"<len> <key>=<value>\n"`.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let base = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut total = base;
    loop {
        let next = base + total.to_string().len();
        if next == total {
            break;
        }
        total = next;
    }
    out.extend_from_slice(total.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Whether `s` can be stored in a 100-byte ustar string field (else a PAX
/// record carries it).
fn fits_ustar_string(s: &[u8]) -> bool {
    s.len() <= 100 && s.is_ascii()
}

/// ASCII-only, 100-byte fallback written in the ustar field when the real
/// value is carried by a PAX record.
fn ascii_fallback(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(u8::is_ascii).take(100).collect()
}

/// Serializes the header block(s) of one entry: an optional PAX header with
/// its records, then the ustar header.
fn entry_headers(h: &Ustar<'_>) -> Vec<u8> {
    let (name, linkname, uid, gid, size, mtime) = (h.name, h.linkname, h.uid, h.gid, h.size, h.mtime);
    let name_ok = fits_ustar_string(name);
    let link_ok = fits_ustar_string(linkname);
    let mut records = Vec::new();
    // Records in byte order of their keys.
    if gid > MAX_OCTAL_8 {
        pax_record(&mut records, "gid", gid.to_string().as_bytes());
    }
    if !link_ok {
        pax_record(&mut records, "linkpath", linkname);
    }
    if mtime > MAX_OCTAL_12 {
        pax_record(&mut records, "mtime", mtime.to_string().as_bytes());
    }
    if !name_ok {
        pax_record(&mut records, "path", name);
    }
    if size > MAX_OCTAL_12 {
        pax_record(&mut records, "size", size.to_string().as_bytes());
    }
    if uid > MAX_OCTAL_8 {
        pax_record(&mut records, "uid", uid.to_string().as_bytes());
    }

    let mut out = Vec::with_capacity(2 * BLOCK + records.len() + BLOCK);
    if !records.is_empty() {
        out.extend_from_slice(&ustar_block(&Ustar {
            name: PAX_HEADER_NAME,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: records.len() as u64,
            mtime: 0,
            typeflag: TYPE_PAX,
            linkname: b"",
        }));
        out.extend_from_slice(&records);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    let name_field = if name_ok { name.to_vec() } else { ascii_fallback(name) };
    let link_field = if link_ok { linkname.to_vec() } else { ascii_fallback(linkname) };
    let fit = |v: u64, max: u64| if v > max { 0 } else { v };
    out.extend_from_slice(&ustar_block(&Ustar {
        name: &name_field,
        mode: h.mode,
        uid: fit(uid, MAX_OCTAL_8),
        gid: fit(gid, MAX_OCTAL_8),
        size: fit(size, MAX_OCTAL_12),
        mtime: fit(mtime, MAX_OCTAL_12),
        typeflag: h.typeflag,
        linkname: &link_field,
    }));
    out
}

/// The header block(s) of a checked entry, and the size of its data: directories, symlinks and
/// hardlinks have none; a symlink's mode is `0777`; a hardlink names its target without the
/// leading `/`; a directory's name ends with `/`.
pub(super) fn headers_of(entry: &Entry) -> (Vec<u8>, u64) {
    let (typeflag, mode, size, linkname): (u8, u32, u64, &[u8]) = match &entry.kind {
        EntryKind::Dir => (TYPE_DIR, entry.mode, 0, b""),
        EntryKind::File { size } => (TYPE_FILE, entry.mode, *size, b""),
        EntryKind::Symlink { target } => (TYPE_SYMLINK, 0o777, 0, target.as_bytes()),
        EntryKind::Hardlink { target } => (TYPE_HARDLINK, entry.mode, 0, &target.as_bytes()[1..]),
    };
    let path = entry.path.as_str();
    let mut name = Vec::with_capacity(path.len());
    name.extend_from_slice(&path.as_bytes()[1..]);
    if entry.kind == EntryKind::Dir {
        name.push(b'/');
    }
    let headers = entry_headers(&Ustar {
        name: &name,
        mode,
        uid: u64::from(entry.uid),
        gid: u64::from(entry.gid),
        size,
        mtime: entry.mtime,
        typeflag,
        linkname,
    });
    (headers, size)
}

/// The bytes an entry takes in the stream: its headers, its data and the data's padding to a
/// whole block.
pub(super) fn stream_len(headers: &[u8], size: u64) -> u64 {
    (headers.len() as u64).saturating_add(size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", b"a");
        assert_eq!(out, b"9 path=a\n");
        out.clear();
        // 3 + 4 + 92 = 99 without the length digits; 2 digits would make
        // 101, which needs 3 digits: 102.
        pax_record(&mut out, "path", &[b'x'; 92]);
        assert!(out.starts_with(b"102 path="));
        assert_eq!(out.len(), 102);
    }

    #[test]
    fn ustar_header_bytes() {
        let block =
            ustar_block(&Ustar { name: b"etc/", mode: 0o4755, uid: 1, gid: 2, size: 0, mtime: 0o777, typeflag: TYPE_DIR, linkname: b"" });
        assert_eq!(&block[100..108], b"0004755\0");
        assert_eq!(&block[108..116], b"0000001\0");
        assert_eq!(&block[124..136], b"00000000000\0");
        assert_eq!(&block[136..148], b"00000000777\0");
        assert_eq!(&block[329..337], b"0000000\0");
        assert_eq!(&block[337..345], b"0000000\0");
        assert_eq!(block[155], b' ');
        assert_eq!(block[154], 0);
        let header = tar::Header::from_byte_slice(&block);
        let mut check = block;
        check[148..156].fill(b' ');
        let sum: u32 = check.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(header.cksum().expect("cksum"), sum);
    }
}
