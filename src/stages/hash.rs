//! SHA-256 and byte counting, as a writer and as a reader stage.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// The digest and length of everything that passed through a hash stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    pub sha256: String,
    pub bytes: u64,
}

/// Lowercase hex, as digests are recorded.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Flushes and returns the inner writer with the digest of what was written.
    pub fn finish(mut self) -> io::Result<(W, Digested)> {
        self.inner.flush()?;
        let d = Digested {
            sha256: hex(&self.hasher.finalize()),
            bytes: self.bytes,
        };
        Ok((self.inner, d))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The digest of everything read so far (call after reading to the end).
    pub fn finish(self) -> (R, Digested) {
        let d = Digested {
            sha256: hex(&self.hasher.finalize()),
            bytes: self.bytes,
        };
        (self.inner, d)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A [`HashReader`] whose digest stays reachable through a [`SharedDigest`]
/// after the reader itself has been handed to the next stage (a decryptor, a
/// decompressor), which may stop before the end: [`SharedDigest::drain`] reads
/// what it left and hashes it. After a failed read there is no digest to give.
pub struct SharedHashReader(std::sync::Arc<std::sync::Mutex<Shared>>);

/// The digest side of a [`SharedHashReader`].
pub struct SharedDigest(std::sync::Arc<std::sync::Mutex<Shared>>);

/// The state a [`SharedHashReader`] and its [`SharedDigest`] share.
pub struct Shared {
    inner: Box<dyn Read + Send + 'static>,
    hasher: Sha256,
    bytes: u64,
    failed: Option<io::ErrorKind>,
}

impl Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(
                kind,
                "an earlier read of this stream failed",
            ));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.failed = Some(e.kind());
                Err(e)
            }
        }
    }
}

impl SharedHashReader {
    pub fn new(inner: Box<dyn Read + Send>) -> (Self, SharedDigest) {
        let state = std::sync::Arc::new(std::sync::Mutex::new(Shared {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            failed: None,
        }));
        (SharedHashReader(state.clone()), SharedDigest(state))
    }
}

impl SharedDigest {
    /// Reads what the stage left to the end, and returns the digest of it all.
    pub fn drain(&self) -> io::Result<Digested> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = vec![0u8; 64 * 1024];
        while g.read(&mut buf)? > 0 {}
        Ok(Digested {
            sha256: hex(&g.hasher.clone().finalize()),
            bytes: g.bytes,
        })
    }
}

impl Read for SharedHashReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).read(buf)
    }
}

/// Reads `r` to the end and returns its digest.
pub fn digest_reader(r: impl Read) -> io::Result<Digested> {
    let mut h = HashReader::new(r);
    io::copy(&mut h, &mut io::sink())?;
    Ok(h.finish().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn writer_and_reader_agree_with_known_vectors() {
        let (_, d) = HashWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(d.sha256, EMPTY);
        let mut w = HashWriter::new(Vec::new());
        w.write_all(b"a").unwrap();
        w.write_all(b"bc").unwrap();
        let (inner, d) = w.finish().unwrap();
        assert_eq!(inner, b"abc");
        assert_eq!(
            d,
            Digested {
                sha256: ABC.into(),
                bytes: 3
            }
        );
        assert_eq!(digest_reader(&b"abc"[..]).unwrap().sha256, ABC);
    }
}
