//! Compression stages: zstd (multi-threaded), gzip, or none.

use std::io::{self, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

/// A compression choice as recorded in manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip { level: u32 },
    Zstd { level: i32, threads: u32 },
}

impl Compression {
    /// The file name extension, without the dot (`""` for none).
    pub fn extension(&self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip { .. } => "gz",
            Compression::Zstd { .. } => "zst",
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
        }
    }
}

pub enum CompressWriter<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> CompressWriter<W> {
    pub fn new(inner: W, c: Compression) -> io::Result<Self> {
        Ok(match c {
            Compression::None => CompressWriter::None(inner),
            Compression::Gzip { level } => CompressWriter::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level),
            )),
            Compression::Zstd { level, threads } => {
                let mut e = zstd::stream::write::Encoder::new(inner, level)?;
                if threads > 1 {
                    e.multithread(threads)?;
                }
                e.include_checksum(true)?;
                CompressWriter::Zstd(e)
            }
        })
    }

    /// Ends the compressed stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        let mut w = match self {
            CompressWriter::None(w) => w,
            CompressWriter::Gzip(e) => e.finish()?,
            CompressWriter::Zstd(e) => e.finish()?,
        };
        w.flush()?;
        Ok(w)
    }
}

impl<W: Write> Write for CompressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompressWriter::None(w) => w.write(buf),
            CompressWriter::Gzip(e) => e.write(buf),
            CompressWriter::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompressWriter::None(w) => w.flush(),
            CompressWriter::Gzip(e) => e.flush(),
            CompressWriter::Zstd(e) => e.flush(),
        }
    }
}

/// A reader that decompresses `inner`. A truncated compressed stream is an error,
/// not a short read.
pub fn decompress<'a, R: Read + Send + 'a>(
    inner: R,
    c: Compression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        Compression::None => Box::new(inner),
        Compression::Gzip { .. } => Box::new(flate2::read::GzDecoder::new(BufReader::new(inner))),
        Compression::Zstd { .. } => Box::new(zstd::stream::read::Decoder::new(inner)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut w = CompressWriter::new(Vec::new(), c).unwrap();
        w.write_all(data).unwrap();
        let packed = w.finish().unwrap();
        let mut out = Vec::new();
        decompress(&packed[..], c)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn every_algorithm_round_trips_edges() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for c in [
            Compression::None,
            Compression::Gzip { level: 6 },
            Compression::Zstd {
                level: 3,
                threads: 1,
            },
            Compression::Zstd {
                level: 3,
                threads: 2,
            },
        ] {
            for data in [&b""[..], &b"x"[..], &big[..]] {
                assert_eq!(round_trip(c, data), data, "{c:?} len {}", data.len());
            }
        }
    }

    #[test]
    fn zeros_compress_to_almost_nothing() {
        let zeros = vec![0u8; 8 << 20];
        let mut w = CompressWriter::new(
            Vec::new(),
            Compression::Zstd {
                level: 3,
                threads: 1,
            },
        )
        .unwrap();
        w.write_all(&zeros).unwrap();
        assert!(w.finish().unwrap().len() < 4096);
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        for c in [
            Compression::Gzip { level: 6 },
            Compression::Zstd {
                level: 3,
                threads: 1,
            },
        ] {
            let mut w = CompressWriter::new(Vec::new(), c).unwrap();
            w.write_all(&data).unwrap();
            let packed = w.finish().unwrap();
            let cut = &packed[..packed.len() - 5];
            let mut out = Vec::new();
            let r = decompress(cut, c).unwrap().read_to_end(&mut out);
            assert!(r.is_err(), "{c:?} accepted a truncated stream");
        }
    }
}
