//! The byte pipeline of a backup, both ways.
//!
//! Up: `producer ⇒ sha256(content) → compress ⇒ encrypt → sha256(stored) → store`,
//! where `⇒` is a thread boundary (compression and encryption/upload overlap; zstd
//! uses its own worker threads too). Nothing lands on local disk; memory is bounded
//! by the stage buffers plus the store's part buffers.
//!
//! Down, for a consumer with effects beyond staging (a database loading a dump):
//! the stored object is first read completely and its SHA-256 compared with the
//! manifest (from the store directly when re-reading is cheap, otherwise through
//! a spool file in the work directory); only then is it decrypted, decompressed
//! and handed to the consumer, whose output is checked again against the content
//! digest. A corrupt object is rejected before any byte is decrypted.
//!
//! Down, into staging ([`download_staged`]): one streaming read, decoded on its
//! own thread, the stored digest checked at the end and before anything staged is
//! put in place.
//!
//! Every way down reads at most the stored size the manifest records (one byte
//! more is refused as damage, and nothing past the size is spooled or decoded),
//! and decompresses to at most the recorded content size: a bucket writer who
//! replaces an object with a longer one, or with a compression bomb (encrypted
//! to a public recipient, it even authenticates), fills neither the spool nor
//! the staging directory (see [`crate::limits`]).

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::crypto::{DecryptReader, EncryptWriter, Keyring};
use crate::exit::{coded, Code};
use crate::limits::AtMost;
use crate::manifest::ObjectEntry;
use crate::stages::compress::{decompress, CompressWriter, Compression};
use crate::stages::hash::{Digested, HashReader, HashWriter, SharedHashReader};
use crate::stages::pipe::ThreadWriter;
use crate::stages::progress::{Progress, ProgressReader, ProgressWriter};
use crate::store::{Metadata, ObjectInfo, ObjectWriter, Store};

/// Uploads one archive produced by `produce`, returning its manifest entry.
pub fn upload(
    store: &dyn Store,
    key: &str,
    metadata: &Metadata,
    compression: Compression,
    keyring: Option<&Keyring>,
    progress: Arc<dyn Progress>,
    produce: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<ObjectEntry> {
    let object = store
        .create(key, metadata)
        .with_context(|| format!("failed to start writing {key} to {}", store.identity()))?;
    let stored = HashWriter::new(object);

    // Encrypt, hash and store on one thread.
    let back: ThreadWriter<(ObjectInfo, Digested)> = match keyring {
        Some(keys) => {
            let enc = EncryptWriter::with_escrow(stored, keys.current(), keys.escrow())?;
            ThreadWriter::spawn("encrypt", enc, |enc| {
                let (object, d) = enc.finish()?.finish()?;
                Ok((object.finish()?, d))
            })?
        }
        None => ThreadWriter::spawn("upload", stored, |stored| {
            let (object, d): (Box<dyn ObjectWriter>, Digested) = stored.finish()?;
            Ok((object.finish()?, d))
        })?,
    };

    // Hash the archive and compress on another (the producer may hash what it
    // reads too: the two digests then run on two cores).
    let comp = HashWriter::new(CompressWriter::new(back, compression)?);
    let front = ThreadWriter::spawn("compress", comp, |h| {
        let (c, digest) = h.finish()?;
        Ok((c.finish()?, digest))
    })?;

    let mut content = ProgressWriter::new(front, progress);
    produce(&mut content).with_context(|| format!("failed to produce {key}"))?;
    let (back, content_digest) = content.finish()?.finish()?;
    let (info, stored_digest) = back.finish()?;
    if info.size != stored_digest.bytes {
        anyhow::bail!(
            "{key}: the store reports {} bytes but {} were written",
            info.size,
            stored_digest.bytes
        );
    }
    Ok(ObjectEntry {
        key: key.to_string(),
        size: stored_digest.bytes,
        sha256: stored_digest.sha256,
        content_bytes: content_digest.bytes,
        content_sha256: content_digest.sha256,
    })
}

/// The keys to read backup `m` with: none for an unencrypted backup (a store may
/// hold backups from before encryption was turned on), and an error naming the
/// backup when it is encrypted but no key is configured.
pub fn keys_for<'a>(
    m: &crate::manifest::Manifest,
    keyring: Option<&'a Keyring>,
) -> Result<Option<&'a Keyring>> {
    match (&m.encryption, keyring) {
        (None, _) => Ok(None),
        (Some(_), Some(k)) => Ok(Some(k)),
        (Some(e), None) => Err(coded(
            Code::Config,
            format!(
                "backup {} is encrypted (key id {}) but no key is configured: add the key to [encryption] (or [[encryption.old_keys]])",
                m.id, e.key_id
            ),
        )),
    }
}

/// Checks a digest against the manifest's record of an object.
fn check_stored(entry: &ObjectEntry, got: &Digested, store: &dyn Store) -> Result<()> {
    if got.bytes != entry.size || got.sha256 != entry.sha256 {
        return Err(coded(
            Code::Integrity,
            format!(
                "object {} in {} failed verification: expected {} bytes with SHA-256 {}, read {} bytes with SHA-256 {}. The stored object is damaged; nothing was restored. Restore another backup (`bkp list` shows them) and check the store",
                entry.key, store.identity(), entry.size, entry.sha256, got.bytes, got.sha256
            ),
        ));
    }
    Ok(())
}

/// The error for an object the store holds more bytes of than the manifest
/// records.
fn longer_than_recorded(entry: &ObjectEntry, store: &str) -> anyhow::Error {
    coded(
        Code::Integrity,
        format!(
            "object {} in {store} failed verification: it is longer than the {} bytes the manifest records, and was not read past them. The stored object was replaced or damaged; nothing was restored. Restore another backup (`bkp list` shows them) and check who writes to the store",
            entry.key, entry.size
        ),
    )
}

/// The error for an object that decodes to more than the manifest's content size.
fn content_longer_than_recorded(entry: &ObjectEntry) -> anyhow::Error {
    coded(
        Code::Integrity,
        format!(
            "object {}: the decrypted archive is longer than the {} bytes the manifest records, and was not decoded past them (a compression bomb, or another object under its key); nothing from it was used",
            entry.key, entry.content_bytes
        ),
    )
}

/// `r`, read to at most the stored size `entry` records.
fn stored_part<R: Read>(r: R, entry: &ObjectEntry, store: &dyn Store) -> AtMost<R> {
    let (e, id) = (entry.clone(), store.identity());
    AtMost::new(r, entry.size, move || longer_than_recorded(&e, &id))
}

/// `r` (an archive decompressed), read to at most the content size `entry`
/// records.
fn content_part(r: Box<dyn Read + Send>, entry: &ObjectEntry) -> AtMost<Box<dyn Read + Send>> {
    let e = entry.clone();
    AtMost::new(r, entry.content_bytes, move || {
        content_longer_than_recorded(&e)
    })
}

/// Verifies, decrypts and decompresses one object, handing the archive stream to
/// `consume`. `spool_dir` holds the verified copy when the store cannot be re-read
/// cheaply.
pub fn download(
    store: &dyn Store,
    entry: &ObjectEntry,
    compression: Compression,
    keyring: Option<&Keyring>,
    spool_dir: &Path,
    progress: Arc<dyn Progress>,
    consume: impl FnOnce(&mut dyn Read) -> Result<()>,
) -> Result<()> {
    let decode = Decode::Content(compression);
    download_as(store, entry, decode, keyring, spool_dir, progress, consume)
}

/// What [`download_as`] hands on.
#[derive(Debug, Clone, Copy)]
pub enum Decode {
    /// The archive as the backup produced it (decompressed), checked at the
    /// end against the manifest's content digest.
    Content(Compression),
    /// The decrypted bytes still compressed: the stored object's digest and
    /// every encrypted chunk are checked, the content digest cannot be.
    Compressed,
    /// Decompressed, for a consumer that checks every file it unpacks
    /// against the manifest: the archive's own digest is not recomputed (a
    /// second SHA-256 pass over everything).
    Files(Compression),
}

/// A store never read twice, for a consumer that acts on what it reads before
/// the end can be checked (pg_restore runs a dump's SQL as it reads it, a log
/// replay sends rows to a cluster): [`download_as`] then reads this run's own
/// verified copy (a private spool file), not the store again after the
/// verification. A local store's file can be swapped in between, and the
/// second read's digest would only tell once the consumer had acted on it.
pub struct OwnCopy<'a>(pub &'a dyn Store);

impl Store for OwnCopy<'_> {
    fn identity(&self) -> String {
        self.0.identity()
    }
    fn create(
        &self,
        key: &str,
        metadata: &crate::store::Metadata,
    ) -> Result<Box<dyn crate::store::ObjectWriter>> {
        self.0.create(key, metadata)
    }
    fn note(&self) -> Option<String> {
        self.0.note()
    }
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        self.0.open(key)
    }
    // The verifying read in ranges at once where the store gains from them.
    fn open_parallel(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        self.0.open_parallel(key)
    }
    fn get_at_most(&self, key: &str, cap: u64) -> Result<Vec<u8>> {
        self.0.get_at_most(key, cap)
    }
    fn head(&self, key: &str) -> Result<Option<crate::store::ObjectInfo>> {
        self.0.head(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectInfo>> {
        self.0.list(prefix)
    }
    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<crate::store::ObjectInfo>> {
        self.0.list_after(prefix, after)
    }
    fn list_each(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(crate::store::ObjectInfo),
    ) -> Result<()> {
        self.0.list_each(prefix, each)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.0.delete(key)
    }
    fn parallelism(&self) -> usize {
        self.0.parallelism()
    }
    fn archived(&self, key: &str) -> Result<Option<crate::store::Archived>> {
        self.0.archived(key)
    }
    fn reread_is_cheap(&self) -> bool {
        false
    }
}

/// [`download`], handing on what `decode` says.
pub fn download_as(
    store: &dyn Store,
    entry: &ObjectEntry,
    decode: Decode,
    keyring: Option<&Keyring>,
    spool_dir: &Path,
    progress: Arc<dyn Progress>,
    consume: impl FnOnce(&mut dyn Read) -> Result<()>,
) -> Result<()> {
    let spool = spool_dir.join(format!(".restore-{}.spool", crate::id::random_u64()));
    let _cleanup = RemoveOnDrop(&spool);
    let spooled = verify_stored(store, entry, spool_dir, &spool, &progress)?;
    crate::failpoint::pause("restore-verified");

    progress.begin("restoring", Some(entry.size));
    // A store read twice (verified in place, then opened again for use) could
    // hand other bytes the second time (a file swapped in between on a shared
    // file system): that second read is hashed too and must match the
    // manifest. The spool is this run's own verified copy and is not.
    let (raw, second): (Box<dyn Read + Send>, _) = match spooled {
        Some(f) => (Box::new(BufReader::new(f)), None),
        None => {
            let again = stored_part(store.open(&entry.key)?, entry, store);
            let (r, digest) = SharedHashReader::new(Box::new(again));
            (Box::new(r), Some(digest))
        }
    };
    let second_read_matches = || -> Result<()> {
        let Some(second) = &second else {
            return Ok(());
        };
        let got = second
            .drain()
            .with_context(|| format!("failed to read {} from {}", entry.key, store.identity()))?;
        check_stored(entry, &got, store).context(
            "the object changed between its verification and its use: treat what was read as damaged and check who writes to the store",
        )
    };
    let raw = ProgressReader::new(raw, progress.clone());
    let plain: Box<dyn Read + Send> = match keyring {
        Some(keys) => Box::new(DecryptReader::new(raw, keys)?),
        None => Box::new(raw),
    };
    // The archive is hashed to be checked against the manifest's content
    // digest; the still compressed bytes have none to check.
    let (mut bomb, mut short) = (None, None);
    let mut bounded = |r| {
        let r = content_part(r, entry);
        bomb = Some(r.tripped());
        short = Some(r.ended_short());
        r
    };
    let (decoded, content): (Box<dyn Read + Send>, _) = match decode {
        Decode::Content(c) => {
            let (r, digest) = SharedHashReader::new(Box::new(bounded(decompress(plain, c)?)));
            (Box::new(r), Some(digest))
        }
        Decode::Files(c) => (Box::new(bounded(decompress(plain, c)?)), None),
        Decode::Compressed => (plain, None),
    };
    // Reading, decryption, decompression and the content digest on one core,
    // the consumer (unpacking, writing files) on another.
    let mut out = crate::stages::pipe::ThreadReader::spawn("decode", decoded)?;
    let over = |e: anyhow::Error| match &bomb {
        Some(t) if t.is_set() => content_longer_than_recorded(entry),
        _ => e,
    };
    consume(&mut out).map_err(&over)?;
    crate::failpoint::hit("restore-download");
    // Read to the very end: the final encrypted chunk and the compression trailer
    // must be verified even if the consumer stopped early (tar's end padding).
    io::copy(&mut out, &mut io::sink()).map_err(|e| over(e.into()))?;
    drop(out);
    second_read_matches()?;
    progress.end();
    match content {
        Some(content) => check_content(entry, &content.drain()?),
        // Without the digest, the length is still the manifest's.
        None if short.is_some_and(|s| s.is_set()) => Err(coded(
            Code::Integrity,
            format!(
                "object {}: the decrypted archive ends before the {} bytes the manifest records; nothing from it was used",
                entry.key, entry.content_bytes
            ),
        )),
        None => Ok(()),
    }
}

/// The first pass of [`download_as`]: the whole stored object read once and
/// checked against the manifest. Unless the store is cheap to read again, it
/// is spooled to `spool` and returned as the handle that wrote it, at its
/// start: it is read back through that handle, never opened again by name,
/// so that what is decrypted is what was verified, whoever else can reach
/// the work directory. `None`: read the store again.
fn verify_stored(
    store: &dyn Store,
    entry: &ObjectEntry,
    spool_dir: &Path,
    spool: &Path,
    progress: &Arc<dyn Progress>,
) -> Result<Option<fs::File>> {
    progress.begin("verifying", Some(entry.size));
    // One sequential read of the whole object: ranged requests at once where
    // the store gains from them (S3), each pinned to one version.
    let src = ProgressReader::new(store.open_parallel(&entry.key)?, progress.clone());
    let mut h = HashReader::new(stored_part(src, entry, store));
    let read_failed = |e: io::Error| {
        anyhow::Error::new(e).context(format!(
            "failed to read {} from {}",
            entry.key,
            store.identity()
        ))
    };
    let spooled = if store.reread_is_cheap() {
        io::copy(&mut h, &mut io::sink()).map_err(read_failed)?;
        None
    } else {
        use std::io::Seek;
        use std::os::unix::fs::OpenOptionsExt;
        fs::create_dir_all(spool_dir)
            .with_context(|| format!("failed to create {}", spool_dir.display()))?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(spool)
            .with_context(|| format!("failed to create {}", spool.display()))?;
        let mut w = BufWriter::new(file);
        // A full disk is named as the spool's, not as the store's.
        let write_failed = |e: io::Error| {
            anyhow::Error::new(e).context(format!("failed to write {}", spool.display()))
        };
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match h.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_failed(e)),
            };
            w.write_all(&buf[..n]).map_err(write_failed)?;
        }
        let file = w
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
            .and_then(|mut f| f.seek(io::SeekFrom::Start(0)).map(|_| f))
            .with_context(|| format!("failed to write {}", spool.display()))?;
        Some(file)
    };
    progress.end();
    check_stored(entry, &h.finish().1, store)?;
    Ok(spooled)
}

/// Checks the decrypted, decompressed archive's digest against the manifest.
fn check_content(entry: &ObjectEntry, digest: &Digested) -> Result<()> {
    if digest.bytes != entry.content_bytes || digest.sha256 != entry.content_sha256 {
        return Err(coded(
            Code::Integrity,
            format!(
                "object {}: the decrypted archive does not match the manifest (expected {} bytes with SHA-256 {}, got {} bytes with {}); nothing from it was used",
                entry.key, entry.content_bytes, entry.content_sha256, digest.bytes, digest.sha256
            ),
        ));
    }
    Ok(())
}

/// Streams one object into a consumer that writes only into staging (a
/// directory its caller discards unless this returns `Ok`): nothing is spooled,
/// the download, its decryption and decompression run on a thread of their own
/// while the consumer unpacks, and the stored object's size and SHA-256 are
/// checked at the end, before the caller may put anything in place. Encrypted
/// chunks are each authenticated before they are decompressed; an unencrypted
/// object reaches the consumer unchecked until the end, which is why its
/// output must be staged. With [`Decode::Files`] the archive's digest is not
/// recomputed: the caller checks every file it unpacks against the manifest.
pub fn download_staged(
    store: &dyn Store,
    entry: &ObjectEntry,
    decode: Decode,
    keyring: Option<&Keyring>,
    progress: Arc<dyn Progress>,
    consume: impl FnOnce(&mut dyn Read) -> Result<()>,
) -> Result<()> {
    progress.begin("restoring", Some(entry.size));
    stream(store, entry, decode, keyring, progress, consume, |e| {
        e.context(format!(
            "failed to restore object {} from {}",
            entry.key,
            store.identity()
        ))
    })?;
    crate::failpoint::hit("restore-download");
    Ok(())
}

/// Reads one stored object once, end to end, without writing anything: its
/// SHA-256 and size, every encrypted chunk's authentication, the compression
/// framing and the content digest are all checked against the manifest. Returns
/// the bytes read. For `bkp verify`: nothing is spooled, no plaintext is kept.
pub fn check(
    store: &dyn Store,
    entry: &ObjectEntry,
    compression: Compression,
    keyring: Option<&Keyring>,
    progress: Arc<dyn Progress>,
) -> Result<u64> {
    progress.begin("verifying", Some(entry.size));
    let decode = Decode::Content(compression);
    let sink = |r: &mut dyn Read| Ok(io::copy(r, &mut io::sink()).map(|_| ())?);
    stream(store, entry, decode, keyring, progress, sink, |e| {
        e.context(format!(
            "object {} in {} failed verification",
            entry.key,
            store.identity()
        ))
    })
}

/// The one streaming read behind [`download_staged`] and [`check`]: the object
/// (as parallel ranged requests where the store gains from them) is hashed,
/// decrypted and decoded as `decode` says on a thread of its own and handed
/// to `consume`. Then, in this order: the stored bytes (a damaged object is
/// reported as damaged, not as whatever it made the decoders or the consumer
/// do), the consumer's result (`failed` adds what the caller was doing), the
/// archive's digest. Returns the stored bytes read.
fn stream(
    store: &dyn Store,
    entry: &ObjectEntry,
    decode: Decode,
    keyring: Option<&Keyring>,
    progress: Arc<dyn Progress>,
    consume: impl FnOnce(&mut dyn Read) -> Result<()>,
    failed: impl FnOnce(anyhow::Error) -> anyhow::Error,
) -> Result<u64> {
    let src = ProgressReader::new(store.open_parallel(&entry.key)?, progress.clone());
    let src = stored_part(src, entry, store);
    let longer = src.tripped();
    let (tee, stored) = SharedHashReader::new(Box::new(src));
    let plain: Box<dyn Read + Send> = match keyring {
        Some(keys) => Box::new(DecryptReader::new(tee, keys)?),
        None => Box::new(tee),
    };
    let mut bomb = None;
    let mut bounded = |r| {
        let r = content_part(r, entry);
        bomb = Some(r.tripped());
        r
    };
    let (decoded, content) = match decode {
        Decode::Content(c) => {
            let (r, digest) = SharedHashReader::new(Box::new(bounded(decompress(plain, c)?)));
            (Box::new(r) as Box<dyn Read + Send>, Some(digest))
        }
        Decode::Files(c) => (
            Box::new(bounded(decompress(plain, c)?)) as Box<dyn Read + Send>,
            None,
        ),
        Decode::Compressed => (plain, None),
    };
    let mut out = crate::stages::pipe::ThreadReader::spawn("decode", decoded)?;
    let consumed = consume(&mut out).and_then(|()| {
        // Read to the very end: the final encrypted chunk and the compression
        // trailer must be verified even if the consumer stopped early.
        io::copy(&mut out, &mut io::sink())?;
        Ok(())
    });
    drop(out);
    progress.end();
    let drained = stored.drain();
    // More bytes than recorded is damage, whatever the failed read made the
    // decoders or the consumer say.
    if longer.is_set() {
        return Err(longer_than_recorded(entry, &store.identity()));
    }
    let got = match drained {
        Ok(got) => {
            check_stored(entry, &got, store)?;
            Some(got)
        }
        // A failed read: its own error (below) is the one to report.
        Err(_) if consumed.is_err() => None,
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "failed to read {} from {}",
                entry.key,
                store.identity()
            )))
        }
    };
    if bomb.as_ref().is_some_and(|t| t.is_set()) {
        return Err(content_longer_than_recorded(entry));
    }
    consumed.map_err(failed)?;
    if let Some(content) = content {
        check_content(entry, &content.drain()?)?;
    }
    Ok(got.map_or(entry.size, |g| g.bytes))
}

/// Removes a spool file when the download ends, whatever way.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::progress::Silent;
    use crate::store::memory::MemoryStore;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store whose object is swapped for other bytes after the first read,
    /// as a writer on a shared file system could do between verify and use.
    struct Swapping {
        inner: MemoryStore,
        opens: AtomicUsize,
        other: Vec<u8>,
    }

    impl Store for Swapping {
        fn identity(&self) -> String {
            "swapping".into()
        }
        fn create(&self, key: &str, metadata: &Metadata) -> Result<Box<dyn ObjectWriter>> {
            self.inner.create(key, metadata)
        }
        fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
            match self.opens.fetch_add(1, Ordering::SeqCst) {
                0 => self.inner.open(key),
                _ => Ok(Box::new(io::Cursor::new(self.other.clone()))),
            }
        }
        fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
            self.inner.head(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
        fn reread_is_cheap(&self) -> bool {
            true
        }
    }

    #[test]
    fn an_object_swapped_between_verification_and_use_is_refused() {
        let good = vec![7u8; 4096];
        let mut other = good.clone();
        other[100] = 8;
        let store = Swapping {
            inner: MemoryStore::new(),
            opens: AtomicUsize::new(0),
            other,
        };
        store.put_new("k", &good, &Metadata::default()).unwrap();
        let d = crate::stages::hash::digest_reader(&good[..]).unwrap();
        let entry = ObjectEntry {
            key: "k".into(),
            size: d.bytes,
            sha256: d.sha256.clone(),
            content_bytes: d.bytes,
            content_sha256: d.sha256,
        };
        let spool = tempfile::tempdir().unwrap();
        let mut got = Vec::new();
        let r = download_as(
            &store,
            &entry,
            Decode::Compressed,
            None,
            spool.path(),
            Arc::new(Silent),
            |r| Ok(io::copy(r, &mut got).map(|_| ())?),
        );
        let e = r.expect_err("the second read differs from the manifest");
        assert_eq!(crate::exit::classify(&e), Some(Code::Integrity), "{e:#}");
        assert!(format!("{e:#}").contains("changed between its verification and its use"));
    }

    /// Without the content digest (a consumer that checks its files), an
    /// archive shorter than the manifest records is still refused; one of
    /// the recorded length, read back from the spool, is handed on whole.
    #[test]
    fn a_short_archive_is_refused_without_its_digest() {
        let store = MemoryStore::new();
        assert!(!store.reread_is_cheap(), "the spool path is the one tested");
        let good: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        store.put_new("k", &good, &Metadata::default()).unwrap();
        let d = crate::stages::hash::digest_reader(&good[..]).unwrap();
        let spool = tempfile::tempdir().unwrap();
        let read = |content_bytes: u64| {
            let entry = ObjectEntry {
                key: "k".into(),
                size: d.bytes,
                sha256: d.sha256.clone(),
                content_bytes,
                content_sha256: "0".repeat(64),
            };
            let mut got = Vec::new();
            let r = download_as(
                &store,
                &entry,
                Decode::Files(Compression::None),
                None,
                spool.path(),
                Arc::new(Silent),
                |r| Ok(io::copy(r, &mut got).map(|_| ())?),
            );
            (r, got)
        };
        let (r, got) = read(d.bytes);
        r.unwrap();
        assert_eq!(got, good);
        let (r, _) = read(d.bytes + 1);
        let e = r.expect_err("shorter than recorded");
        assert_eq!(crate::exit::classify(&e), Some(Code::Integrity), "{e:#}");
        assert!(format!("{e:#}").contains("ends before"), "{e:#}");
    }

    /// An unencrypted object damaged in the store reaches the unpacking
    /// consumer before its digest can be checked: the error must still say
    /// the object is damaged (exit 5), whatever the consumer made of it.
    #[test]
    fn a_damaged_object_streamed_into_staging_is_reported_as_damaged() {
        let src = tempfile::tempdir().unwrap();
        let p = src.path().join("data");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(&p, &bytes).unwrap();
        let store = MemoryStore::new();
        let c = Compression::Zstd {
            level: 3,
            threads: 0,
        };
        let mut written = Vec::new();
        let entry = upload(&store, "k", &Vec::new(), c, None, Arc::new(Silent), |w| {
            written = crate::archive::write_files(w, &[("data".into(), p.clone())])?;
            Ok(())
        })
        .unwrap();

        // Intact: streamed, unpacked, checked.
        let dest = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        download_staged(
            &store,
            &entry,
            Decode::Files(c),
            None,
            Arc::new(Silent),
            |r| {
                files = crate::archive::unpack(r, dest.path(), &written)?;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(fs::read(dest.path().join("data")).unwrap(), bytes);

        for at in [0usize, 40, entry.size as usize / 2, entry.size as usize - 3] {
            let mut stored = store.get("k").unwrap();
            stored[at] ^= 0x5a;
            let damaged = MemoryStore::new();
            damaged.put_new("k", &stored, &Metadata::default()).unwrap();
            let dest = tempfile::tempdir().unwrap();
            let e = download_staged(
                &damaged,
                &entry,
                Decode::Files(c),
                None,
                Arc::new(Silent),
                |r| crate::archive::unpack(r, dest.path(), &written).map(|_| ()),
            )
            .expect_err("a damaged object is refused");
            assert_eq!(
                crate::exit::classify(&e),
                Some(Code::Integrity),
                "byte {at}: {e:#}"
            );
            assert!(
                format!("{e:#}").contains("failed verification"),
                "byte {at}: {e:#}"
            );
        }
    }
}
