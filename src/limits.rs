//! How much bkp reads of what a store hands it, in one place.
//!
//! The store is untrusted: anyone who can write to the bucket can put a
//! multi-GiB object where a small document is expected, make an object longer
//! than its sealed manifest says, or plant a compression bomb (encrypted to
//! the public recipient, it even authenticates). bkp checks a digest only once
//! it has read to the end, so every read is bounded *before* the digest:
//!
//! - an object a sealed manifest describes is read to at most the size the
//!   manifest records, plus one byte to notice more, and its decoder stops at
//!   the recorded content size (`pipeline`, `chunks`);
//! - a WAL file, which has no manifest, decodes to at most one segment of its
//!   cluster (`manifest::wal::archive`);
//! - documents read whole (manifests, tombstones, the store marker, lease
//!   claims, head records) are read to at most the caps below, which are far above anything
//!   bkp writes; a larger object is refused as damage (exit 5) naming its key
//!   and the cap, without reading the rest.
//!
//! [`AtMost`] is the one reader that enforces them all.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::exit::{coded, Code};

/// A manifest: a replicated set of some 200,000 files takes this much (about
/// 1.1 KiB a file). bkp refuses to write a larger one, so that it never
/// stores what it would refuse to read.
pub const MANIFEST: u64 = 256 << 20;
/// A tombstone: a manifest and a few fields.
pub const TOMBSTONE: u64 = MANIFEST + (1 << 20);
/// The store marker (a few hundred bytes).
pub const MARKER: u64 = 1 << 20;
/// A lease claim (a few hundred bytes).
pub const LEASE: u64 = 1 << 20;
/// A head record (`manifest::head`, a few hundred bytes).
pub const HEAD: u64 = 64 << 10;
/// Any other document read whole ([`crate::store::Store::get`]).
pub const DOCUMENT: u64 = TOMBSTONE;
/// A chunk list, decompressed: 13 million chunks, 50 TiB of 4 MiB chunks.
pub const CHUNK_LIST: u64 = 1 << 30;
/// The largest WAL segment PostgreSQL can be built with (`--with-segsize`
/// and `initdb --wal-segsize` go up to 1 GiB): what a WAL file decodes to at
/// most when its cluster's segment size is not known.
pub const WAL_SEGMENT_MAX: u64 = 1 << 30;

/// The most an object holding `content` bytes can take stored: compression
/// never grows data by more than a small fraction (zstd and gzip both fall
/// back to stored blocks), encryption adds 16 bytes per 64 KiB chunk and a
/// header. Generous, so that only what no bkp wrote exceeds it.
pub fn stored_at_most(content: u64) -> u64 {
    content.saturating_add(content / 64).saturating_add(1 << 20)
}

/// The error for an object longer than `cap`: damage, naming `what` (its key
/// and why that size) and the cap.
pub fn too_large(what: &str, cap: u64) -> anyhow::Error {
    coded(
        Code::Integrity,
        format!(
            "{what} is larger than {} ({cap} bytes), more than bkp ever writes there: it was not read further and is not used. Something other than bkp wrote it (check who can write to the store), or it is damaged",
            crate::ui::size(cap)
        ),
    )
}

/// A reader that hands on at most `limit` bytes of `inner`, then fails
/// (damage, exit 5) if `inner` has one more: a stream longer than what was
/// recorded is refused after `limit` bytes, without reading the rest, and
/// nothing past `limit` ever reaches the stages after it.
pub struct AtMost<R> {
    inner: R,
    left: u64,
    over: Arc<AtomicBool>,
    short: Arc<AtomicBool>,
    error: Box<dyn Fn() -> anyhow::Error + Send>,
}

/// Whether an [`AtMost`] found more than its limit: the caller reports that
/// (as damage) before whatever the failed read made later stages say.
#[derive(Clone)]
pub struct Tripped(Arc<AtomicBool>);

impl Tripped {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl<R: Read> AtMost<R> {
    /// `inner`, cut at `limit` bytes; `error` says what was too long.
    pub fn new(
        inner: R,
        limit: u64,
        error: impl Fn() -> anyhow::Error + Send + 'static,
    ) -> AtMost<R> {
        AtMost {
            inner,
            left: limit,
            over: Arc::new(AtomicBool::new(false)),
            short: Arc::new(AtomicBool::new(false)),
            error: Box::new(error),
        }
    }

    /// What tells, after the read, whether the limit was passed.
    pub fn tripped(&self) -> Tripped {
        Tripped(self.over.clone())
    }

    /// What tells, after the read, whether `inner` ended before the limit:
    /// for a caller that expects exactly `limit` bytes.
    pub fn ended_short(&self) -> Tripped {
        Tripped(self.short.clone())
    }
}

impl<R: Read> Read for AtMost<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the limit: the stream must end here.
            let mut one = [0u8; 1];
            loop {
                match self.inner.read(&mut one) {
                    Ok(0) => return Ok(0),
                    Ok(_) => {
                        self.over.store(true, Ordering::SeqCst);
                        return Err(crate::exit::to_io((self.error)()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        if n == 0 {
            self.short.store(true, Ordering::SeqCst);
        }
        Ok(n)
    }
}

/// Reads all of `r`, at most `cap` bytes: more is the error of
/// [`too_large`]`(what, cap)`. The buffer grows with what arrives, never
/// reserved ahead from a size the store claims.
pub fn read_at_most(r: impl Read, cap: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let owned = what.to_string();
    let mut limited = AtMost::new(r, cap, move || too_large(&owned, cap));
    let tripped = limited.tripped();
    let mut out = Vec::new();
    match limited.read_to_end(&mut out) {
        Ok(_) => {
            // Grown by doubling as it arrived: a catalog's base of years of
            // history is tens of MiB, held while it is parsed.
            out.shrink_to_fit();
            Ok(out)
        }
        Err(_) if tripped.is_set() => Err(too_large(what, cap)),
        Err(e) => Err(anyhow::Error::new(e).context(format!("failed to read {what}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_handed_on_up_to_its_limit_and_refused_past_it() {
        let data = vec![5u8; 1000];
        for limit in [1000u64, 1001, 5000] {
            let mut got = Vec::new();
            let mut r = AtMost::new(&data[..], limit, || anyhow::anyhow!("long"));
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got, data);
            assert!(!r.tripped().is_set());
        }
        for limit in [0u64, 1, 999] {
            let mut got = Vec::new();
            let mut r = AtMost::new(&data[..], limit, || coded(Code::Integrity, "long"));
            let e = r.read_to_end(&mut got).unwrap_err();
            assert_eq!(
                got.len() as u64,
                limit,
                "nothing past the limit is handed on"
            );
            assert!(r.tripped().is_set());
            let e = anyhow::Error::new(e);
            assert_eq!(crate::exit::classify(&e), Some(Code::Integrity));
        }
    }

    #[test]
    fn a_stream_that_ends_before_its_limit_says_so() {
        for (len, limit, short) in [(5usize, 10u64, true), (10, 10, false), (0, 0, false)] {
            let bytes = vec![1u8; len];
            let mut r = AtMost::new(&bytes[..], limit, || anyhow::anyhow!("long"));
            let ended = r.ended_short();
            std::io::copy(&mut r, &mut std::io::sink()).unwrap();
            assert_eq!(ended.is_set(), short, "{len} bytes, limit {limit}");
        }
    }

    #[test]
    fn a_document_past_its_cap_is_refused_naming_it_and_the_cap() {
        let big = io::repeat(1).take(10 << 20);
        let e = read_at_most(big, 1 << 20, "lease leases/x/1.json").unwrap_err();
        assert_eq!(crate::exit::classify(&e), Some(Code::Integrity));
        let text = format!("{e:#}");
        assert!(
            text.contains("leases/x/1.json") && text.contains("1 MiB"),
            "{text}"
        );
        assert_eq!(read_at_most(&b"{}"[..], 2, "d").unwrap(), b"{}");
    }
}
