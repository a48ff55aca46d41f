//! The two codecs a chunk is compressed with (see "Compression" in the module documentation):
//! [`Compression`], its ids and media types, one chunk's compression (libdeflate gzip, libzstd);
//! and reading layers back: [`decoder`], and [`DiffIdWriter`], which checks a layer's diff_id as
//! its blob streams in.

use std::io::{self, Read, Write};

use super::{LAYER_FORMAT_ID, ZSTD_LAYER_FORMAT_ID};
use crate::hash::HashingWriter;

/// Identity of the exact bytes the gzip codec gives a chunk. Change it whenever the compressed
/// output could change (library, level, header).
pub const COMPRESSOR_ID: &str = "gzip/libdeflate-1.26.1/level6/member-per-chunk/v3";

/// Identity of the exact bytes the zstd codec gives a chunk.
pub const ZSTD_COMPRESSOR_ID: &str = "zstd/libzstd-1.5.7/level3/frame-per-chunk/v1";

/// OCI media type of gzip layers.
pub const GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// OCI media type of zstd layers.
pub const ZSTD_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Deflate level used for every gzip chunk.
pub const GZIP_LEVEL: u8 = 6;

/// zstd level used for every zstd chunk.
pub const ZSTD_LEVEL: i32 = 3;

/// The fixed gzip member header: no file name, mtime 0, XFL 0, OS 255.
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff];

/// How a layer's tar stream is compressed: the spec's `compression`, `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar+gzip`: libdeflate, one gzip member per chunk.
    #[default]
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`: libzstd, one frame per chunk.
    Zstd,
}

impl Compression {
    /// The names the spec and the command line take.
    pub const NAMES: [&'static str; 2] = ["gzip", "zstd"];

    /// The compression named `name` (`gzip`, `zstd`).
    pub fn parse(name: &str) -> Option<Compression> {
        match name {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Its name in the spec.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The OCI media type of its layers.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => GZIP_MEDIA_TYPE,
            Compression::Zstd => ZSTD_MEDIA_TYPE,
        }
    }

    /// Identity of the exact compressed bytes of a chunk.
    pub fn compressor_id(self) -> &'static str {
        match self {
            Compression::Gzip => COMPRESSOR_ID,
            Compression::Zstd => ZSTD_COMPRESSOR_ID,
        }
    }

    /// Identity of the exact layer bytes [`LayerWriter`](super::LayerWriter) writes with it: the value for derivation
    /// hashes.
    pub fn layer_format_id(self) -> &'static str {
        match self {
            Compression::Gzip => LAYER_FORMAT_ID,
            Compression::Zstd => ZSTD_LAYER_FORMAT_ID,
        }
    }
}

/// One chunk as a complete gzip member (libdeflate, level [`GZIP_LEVEL`]) or zstd frame (level
/// [`ZSTD_LEVEL`]).
pub(super) fn compress_chunk(codec: Compression, input: &[u8]) -> Result<Vec<u8>, String> {
    thread_local! {
        static DEFLATE: std::cell::RefCell<Option<libdeflater::Compressor>> = const { std::cell::RefCell::new(None) };
        static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
    }
    match codec {
        Compression::Gzip => DEFLATE.with(|c| {
            let mut c = c.borrow_mut();
            let compressor = c.get_or_insert_with(|| {
                libdeflater::Compressor::new(libdeflater::CompressionLvl::new(i32::from(GZIP_LEVEL)).unwrap_or_default())
            });
            let mut out = vec![0u8; compressor.gzip_compress_bound(input.len())];
            let n = compressor.gzip_compress(input, &mut out).map_err(|e| format!("libdeflate: {e:?}"))?;
            out.truncate(n);
            Ok(out)
        }),
        Compression::Zstd => ZSTD.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| format!("zstd: {e}"))?);
            }
            let compressor = c.as_mut().ok_or("zstd: no compressor")?;
            compressor.compress(input).map_err(|e| format!("zstd: {e}"))
        }),
    }
}

/// A reader of the tar stream inside a layer blob of `media_type`: gzip (every member) and zstd
/// (every frame) are decompressed, anything else is read as a plain tar.
pub fn decoder<'a, R: io::BufRead + 'a>(media_type: &str, reader: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        Box::new(zstd::stream::read::Decoder::with_buffer(reader)?)
    } else {
        Box::new(reader)
    })
}

/// The `diff_id` (sha256 of the uncompressed tar) of a layer blob, computed from the blob's
/// bytes as they are written to it: gzip and zstd layers are decompressed on the fly, an
/// uncompressed tar is its own diff_id. Used to check what a cache or a file claims about a
/// layer while the blob streams in, without a second pass.
pub struct DiffIdWriter(Decoding);

/// sha256 of what is written to it.
type HashSink = HashingWriter<io::Sink>;

enum Decoding {
    Plain(HashSink),
    Gzip(Box<flate2::write::MultiGzDecoder<HashSink>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, HashSink>>),
    /// The stream did not decompress: takes the rest, then fails.
    Broken,
}

impl DiffIdWriter {
    /// A writer for a layer of `media_type`; `None` if it is not a layer media type known here.
    pub fn new(media_type: &str) -> Option<DiffIdWriter> {
        let sink = HashingWriter::new(io::sink());
        let d = if media_type.ends_with("+gzip") {
            Decoding::Gzip(Box::new(flate2::write::MultiGzDecoder::new(sink)))
        } else if media_type.ends_with("+zstd") {
            Decoding::Zstd(Box::new(zstd::stream::write::Decoder::new(sink).ok()?))
        } else if media_type.ends_with(".tar") {
            Decoding::Plain(sink)
        } else {
            return None;
        };
        Some(DiffIdWriter(d))
    }

    /// A writer whose stream already failed to decompress: [`DiffIdWriter::finish`] fails.
    pub fn broken() -> DiffIdWriter {
        DiffIdWriter(Decoding::Broken)
    }

    /// The diff_id of everything written; an error if the compressed stream is damaged or cut.
    pub fn finish(self) -> io::Result<[u8; 32]> {
        let sink = match self.0 {
            Decoding::Plain(s) => s,
            Decoding::Broken => return Err(io::Error::new(io::ErrorKind::InvalidData, "the layer does not decompress")),
            Decoding::Gzip(mut g) => {
                g.try_finish()?;
                g.finish()?
            }
            Decoding::Zstd(mut z) => {
                z.flush()?;
                z.into_inner()
            }
        };
        Ok(sink.finish().0 .0)
    }

    /// The diff_id of the layer blob at `path`.
    pub fn of_file(path: &std::path::Path, media_type: &str) -> io::Result<[u8; 32]> {
        let mut w = DiffIdWriter::new(media_type)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("`{media_type}` is not a layer media type")))?;
        io::copy(&mut std::fs::File::open(path)?, &mut w)?;
        w.finish()
    }
}

impl Write for DiffIdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Decoding::Plain(s) => s.write(buf),
            Decoding::Gzip(g) => g.write(buf),
            Decoding::Zstd(z) => z.write(buf),
            Decoding::Broken => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
