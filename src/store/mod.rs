//! Where backups live: one small trait, one module per backend.
//!
//! Backups are immutable, so the trait's write is *create-only*: writing a key that
//! already exists fails instead of replacing a backup someone may still need. An
//! object becomes visible only when it is complete (a local file is renamed into
//! place; an S3 object exists once its upload completes), so a crashed run leaves
//! either nothing or an orphan without a manifest, never a half-written object
//! under its final name.
//!
//! Every backend runs the same conformance suite (`tests/store_conformance.rs`),
//! S3 against a real server.

use std::io::{Read, Write};

use anyhow::Result;
use time::OffsetDateTime;

pub mod counting;
pub mod dry;
pub mod local;
pub mod memory;
pub mod parallel;
pub mod s3;

/// What a backend knows about one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store's root (its configured prefix is not included).
    pub key: String,
    pub size: u64,
    pub modified: Option<OffsetDateTime>,
    /// The entity tag, where the backend gives one (S3): the same in a listing
    /// as in the answer to the write that stored the object.
    pub etag: Option<String>,
}

/// What tells one version of an object from another: an [`ObjectInfo`]'s
/// size, time and tag, as a listing, a HEAD or a write's answer shows them or
/// as a record kept them. The catalog (is a listed manifest the one it
/// cached?) and replication (did a source file change since the last run, or
/// while it was read?) decide with this one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version<'a> {
    pub size: u64,
    /// Modification time in Unix nanoseconds, at the precision the facts were
    /// taken with (both sides of a comparison must be taken alike).
    pub modified: Option<i128>,
    pub etag: Option<&'a str>,
}

impl Version<'_> {
    /// Whether `other` is certainly the same version as this: the same size
    /// and, where both have an entity tag, the same tag (the store's own name
    /// for the version: a write answers with the tag a listing shows, but not
    /// with the time the store recorded); else the same modification time.
    /// Facts with neither a tag nor a time on both sides cannot tell a rewrite
    /// of the same size from the original, so they are never the same: a
    /// caller reads again rather than trusting what it cannot tell apart.
    pub fn same_as(&self, other: &Version<'_>) -> bool {
        self.size == other.size
            && match (self.etag, other.etag) {
                (Some(a), Some(b)) => a == b,
                _ => self.modified.is_some() && self.modified == other.modified,
            }
    }
}

/// A streaming write that was started and never finished nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The key it was writing, relative to the store's root.
    pub key: String,
    pub started: Option<OffsetDateTime>,
}

/// Metadata stored with a data object (S3 user metadata; a sidecar nowhere else).
pub type Metadata = Vec<(String, String)>;

/// A streaming write of one object. Bytes become a visible object only through
/// [`ObjectWriter::finish`]; [`ObjectWriter::abort`] (or dropping the writer)
/// discards everything written so far.
pub trait ObjectWriter: Write + Send {
    /// Completes the object and returns what was stored. Fails if the key came
    /// into existence meanwhile.
    fn finish(self: Box<Self>) -> Result<ObjectInfo>;
    /// Discards the partial object.
    fn abort(self: Box<Self>) -> Result<()>;
}

/// The store cannot hold an object under this key (a local store: a path
/// component or the whole path too long for the file system). Only that object fails:
/// a caller storing many objects may report it and go on with the rest.
#[derive(Debug)]
pub struct UnstorableKey {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for UnstorableKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot store object {:?}: {}", self.key, self.reason)
    }
}

impl std::error::Error for UnstorableKey {}

/// A backup store. Keys are `/`-separated relative paths without `..` segments.
pub trait Store: Send + Sync {
    /// A stable, secret-free identity such as `file:///srv/backups` or
    /// `s3://bucket/prefix`, used in messages and for the ledger's store account.
    fn identity(&self) -> String;

    /// Something about how the store was reached that the user should know (a
    /// setting bkp had to fall back on), for `bkp check`.
    fn note(&self) -> Option<String> {
        None
    }

    /// Starts a create-only streaming write of `key`.
    fn create(&self, key: &str, metadata: &Metadata) -> Result<Box<dyn ObjectWriter>>;

    /// Writes a small object in one call, create-only.
    fn put_new(&self, key: &str, bytes: &[u8], metadata: &Metadata) -> Result<ObjectInfo> {
        let mut w = self.create(key, metadata)?;
        if let Err(e) = w.write_all(bytes) {
            let _ = w.abort();
            return Err(anyhow::Error::new(e).context(format!("failed to write {key}")));
        }
        w.finish()
    }

    /// Opens `key` for streaming reads. A missing key is a
    /// [`crate::exit::Code::NotFound`] error.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>>;

    /// Opens `key` for one sequential read of the whole (large) object, as
    /// parallel ranged requests where the backend gains from them (S3).
    fn open_parallel(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        self.open(key)
    }

    /// Reads a whole (small) object of at most [`crate::limits::DOCUMENT`]
    /// bytes, as [`Store::get_at_most`] does.
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.get_at_most(key, crate::limits::DOCUMENT)
    }

    /// Reads a whole object of at most `cap` bytes: at most `cap` + 1 are
    /// read, and a larger object is refused as damage (exit 5) naming its key
    /// and the cap, without reading the rest (the store is untrusted: a
    /// planted multi-GiB object must not be downloaded by every run).
    fn get_at_most(&self, key: &str, cap: u64) -> Result<Vec<u8>> {
        let what = format!("object {key} in {}", self.identity());
        crate::limits::read_at_most(self.open(key)?, cap, &what)
    }

    /// Facts about `key`, or `None` if it does not exist.
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// [`Store::list`], each object handed to `each` as it is listed, in no
    /// order: a listing of years of keys need not be held whole.
    fn list_each(&self, prefix: &str, each: &mut dyn FnMut(ObjectInfo)) -> Result<()> {
        self.list(prefix)?.into_iter().for_each(each);
        Ok(())
    }

    /// The objects of [`Store::list`] whose keys sort after `after`: one request
    /// on S3 (`start-after`) when few are, however many sort before.
    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectInfo>> {
        let mut all = self.list(prefix)?;
        all.retain(|o| o.key.as_str() > after);
        Ok(all)
    }

    /// Deletes `key`; deleting a missing key succeeds (deletes are retried).
    fn delete(&self, key: &str) -> Result<()>;

    /// Whether [`Store::delete_many`] deletes many keys in one request.
    fn deletes_in_batches(&self) -> bool {
        false
    }

    /// Deletes `keys` as [`Store::delete`] does; the keys it deleted (a key
    /// that could not be deleted is left out, not an error). One request per
    /// key unless [`Store::deletes_in_batches`].
    fn delete_many(&self, keys: &[String]) -> Result<Vec<String>> {
        Ok(delete_each(self, keys))
    }

    /// The unfinished streaming writes that started before `before` (a process
    /// killed mid-upload leaves S3 multipart uploads whose parts are kept and
    /// billed, but that are no object), discarded unless `dry_run`. Returns what
    /// was found, so that a dry run shows exactly what a real run discards.
    fn sweep_unfinished(
        &self,
        before: time::OffsetDateTime,
        dry_run: bool,
    ) -> Result<Vec<Unfinished>> {
        let _ = (before, dry_run);
        Ok(Vec::new())
    }

    /// Checks, once per process, what writing needs beyond credentials (an S3
    /// store with Object Lock configured: that the bucket has Object Lock
    /// enabled). Runs that write call it first; [`Store::create`] calls it too.
    fn preflight_writes(&self) -> Result<()> {
        Ok(())
    }

    /// Until when `key` cannot be deleted (S3 Object Lock retention), if that
    /// is still in the future; `None` for stores without retention.
    fn retained_until(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        let _ = key;
        Ok(None)
    }

    /// Extends the retention of `keys`, objects earlier backups stored that a
    /// new backup needs, to at least what an object written now gets (S3
    /// Object Lock: never shortened; each key once per handle). How many were
    /// extended; stores without retention do nothing.
    fn extend_retention(&self, keys: &[String]) -> Result<usize> {
        let _ = keys;
        Ok(0)
    }

    /// Where the store keeps every version of an object (S3 with Object
    /// Lock: a versioned bucket), what became of bkp's keys under `prefix`
    /// that create-only writes never explain: each key a delete marker hides,
    /// and each with more than one version (overwritten), with what was
    /// found. `None` where the store keeps no versions.
    fn altered(&self, prefix: &str) -> Result<Option<Vec<(String, String)>>> {
        let _ = prefix;
        Ok(None)
    }

    /// Whether reading an object twice costs little (a local file). Restore then
    /// verifies in place instead of spooling a copy.
    fn reread_is_cheap(&self) -> bool {
        false
    }

    /// Whether what is written now goes nowhere that anything reads: a dry
    /// run's store (forgotten with the run) once the run reads nothing more
    /// after its coming reads. What is written only to spare later reads
    /// work (a catalog) need not be.
    fn forgets_writes(&self) -> bool {
        false
    }

    /// How many requests for small objects to keep in flight (chunks):
    /// `store.concurrency` on S3.
    fn parallelism(&self) -> usize {
        4
    }

    /// The S3 store this is, for what only S3 does (a server-side copy
    /// between two stores of one service); `None` for any other.
    fn as_s3(&self) -> Option<&s3::S3Store> {
        None
    }

    /// Whether `key` cannot be read now because it lies in an archive
    /// storage class (S3 Glacier Flexible Retrieval, Deep Archive, the
    /// archive tiers of Intelligent-Tiering) with no restored copy readable;
    /// `None` for a readable object, and for stores without classes.
    fn archived(&self, key: &str) -> Result<Option<Archived>> {
        let _ = key;
        Ok(None)
    }

    /// Asks for a readable copy of `key`, archived as `state` says, kept
    /// `days` days (where the class takes a number of days), retrieved at
    /// `tier`. A request already under way is no error.
    fn request_restore(
        &self,
        key: &str,
        state: &Archived,
        days: u32,
        tier: RetrievalTier,
    ) -> Result<()> {
        let _ = (state, days, tier);
        Err(crate::exit::coded(
            crate::exit::Code::Unsupported,
            format!(
                "{}: {key} cannot be restored from an archive class here",
                self.identity()
            ),
        ))
    }
}

/// An object in an archive storage class (see [`Store::archived`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// The class, as the store names it (`GLACIER`, `DEEP_ARCHIVE`, …).
    pub class: String,
    /// Whether a restore was requested and is under way.
    pub restoring: bool,
}

/// How fast (and at what price) an archived object is made readable: S3's
/// retrieval tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrievalTier {
    /// Minutes (Glacier Flexible Retrieval only); the dearest.
    Expedited,
    /// Hours: 3–5 (Flexible Retrieval), within 12 (Deep Archive).
    Standard,
    /// The cheapest: 5–12 hours, within 48 (Deep Archive).
    Bulk,
}

impl RetrievalTier {
    pub fn as_str(self) -> &'static str {
        match self {
            RetrievalTier::Expedited => "Expedited",
            RetrievalTier::Standard => "Standard",
            RetrievalTier::Bulk => "Bulk",
        }
    }
}

/// [`Store::delete_many`] one key at a time: the keys deleted.
pub fn delete_each<S: Store + ?Sized>(store: &S, keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter(|k| store.delete(k).is_ok())
        .cloned()
        .collect()
}

/// The objects a streamed listing (`list`, handing each to its callback)
/// gives, in key order: a store's listing whole, from its streamed form.
pub(crate) fn gather_sorted(
    list: impl FnOnce(&mut dyn FnMut(ObjectInfo)) -> Result<()>,
) -> Result<Vec<ObjectInfo>> {
    let mut out = Vec::new();
    list(&mut |o| out.push(o))?;
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Rejects keys that could escape the store's root or that backends disagree on.
pub fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.ends_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        anyhow::bail!("invalid object key {key:?}: keys are relative paths without empty, '.' or '..' segments");
    }
    Ok(())
}

/// The error for a key that does not exist.
pub fn not_found(store: &str, key: &str) -> anyhow::Error {
    crate::exit::coded(
        crate::exit::Code::NotFound,
        format!("object {key} does not exist in {store}"),
    )
}

/// A create-only write found its key taken.
#[derive(Debug)]
pub struct Exists {
    message: String,
}

impl std::fmt::Display for Exists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exists {}

/// The error for a create-only write onto an existing key.
pub fn already_exists(store: &str, key: &str) -> anyhow::Error {
    anyhow::Error::new(Exists {
        message: format!(
            "refusing to overwrite {key} in {store}: backups are immutable and this key already exists"
        ),
    })
}

/// Whether `e` says a create-only write found its key taken.
pub fn is_already_exists(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Exists>())
}

/// A store as a config opens it: S3 kept as itself for the calls only S3 has
/// (a server-side copy), any other behind the trait.
pub enum Opened {
    Plain(Box<dyn Store>),
    S3(s3::S3Store),
}

impl Opened {
    pub fn store(&self) -> &dyn Store {
        match self {
            Opened::Plain(s) => s.as_ref(),
            Opened::S3(s) => s,
        }
    }

    pub fn into_boxed(self) -> Box<dyn Store> {
        match self {
            Opened::Plain(s) => s,
            Opened::S3(s) => Box::new(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{check_key, Version};

    #[test]
    fn versions_are_the_same_only_when_the_facts_can_tell() {
        let v = |size, modified, etag| Version {
            size,
            modified,
            etag,
        };
        // Tags decide where both sides have one, whatever the times say.
        assert!(v(1, Some(5), Some("a")).same_as(&v(1, Some(9), Some("a"))));
        assert!(!v(1, Some(5), Some("a")).same_as(&v(1, Some(5), Some("b"))));
        // Else the times, where both sides have one.
        assert!(v(1, Some(5), None).same_as(&v(1, Some(5), None)));
        assert!(v(1, Some(5), Some("a")).same_as(&v(1, Some(5), None)));
        assert!(!v(1, Some(5), None).same_as(&v(1, Some(6), None)));
        assert!(!v(1, Some(5), None).same_as(&v(1, None, None)));
        // The size always.
        assert!(!v(1, Some(5), Some("a")).same_as(&v(2, Some(5), Some("a"))));
        // Nothing but the size: a same-size rewrite would pass, so never.
        assert!(!v(1, None, None).same_as(&v(1, None, None)));
    }

    #[test]
    fn keys_that_escape_are_refused() {
        for good in ["a", "a/b.json", "tigerbeetle/2025/10/11/x.tar.zst.enc"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/../b", "./a", "a\\b", "a\0b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
