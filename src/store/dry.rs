//! A dry run's store: what a run writes and deletes lands in memory, in front
//! of the real store, which is only read. The run then takes its real path
//! and sees its own effects (a deleted manifest is no longer listed, an
//! object its deletions left unnamed is gone), so what it reports is what a
//! real run would do; nothing reaches the real store.
//!
//! Writes follow the store's rules (create-only: a key that exists, in
//! memory or behind it, is refused), and so do deletions (one of an object
//! Object Lock still retains fails as it would). Nothing is asked of the
//! real store that changes it: no deletion, no upload, no retention
//! extended, no restore of an archived object requested, no unfinished
//! upload discarded. Its identity says it is a dry run, so that nothing
//! kept on this host for the real store (the catalog's copies of its bases)
//! is replaced by what the dry run wrote.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::io::Read;
use std::sync::Mutex;

use anyhow::Result;
use time::OffsetDateTime;

use super::memory::MemoryStore;
use super::{already_exists, not_found, Metadata, ObjectInfo, ObjectWriter, Store, Unfinished};

pub struct DryRun<'a> {
    inner: &'a dyn Store,
    written: MemoryStore,
    /// The keys it deleted, each as two hashes keyed afresh for the run:
    /// a first cleanup of years of history deletes hundreds of thousands,
    /// which as strings would take several times the memory. (Two keys
    /// with the same 128 bits cannot be found or made without the run's
    /// hash keys: the chance is some 10^-26 for a million keys.)
    deleted: Mutex<HashSet<[u64; 2]>>,
    hashers: [RandomState; 2],
    /// Set once nothing the run reads later needs what it writes
    /// ([`DryRun::last_reads`]).
    last: std::sync::atomic::AtomicBool,
}

impl<'a> DryRun<'a> {
    pub fn new(inner: &'a dyn Store) -> Self {
        DryRun {
            inner,
            written: MemoryStore::new(),
            deleted: Mutex::new(HashSet::new()),
            hashers: [RandomState::new(), RandomState::new()],
            last: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Says that the run reads nothing after its coming reads: what only
    /// spares later reads work (a catalog) need not be written from now on
    /// ([`Store::forgets_writes`]).
    pub fn last_reads(&self) {
        self.last.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn hash(&self, key: &str) -> [u64; 2] {
        self.hashers.each_ref().map(|h| h.hash_one(key))
    }

    fn is_deleted(&self, key: &str) -> bool {
        let h = self.hash(key);
        self.deleted.lock().expect("dry run lock").contains(&h)
    }

    /// `behind`, a listing of the real store under `prefix` (after `after`),
    /// as the run sees it: less what it deleted, with what it wrote.
    fn merged(
        &self,
        behind: Vec<ObjectInfo>,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<Vec<ObjectInfo>> {
        let mut all: Vec<ObjectInfo> = behind
            .into_iter()
            .filter(|o| !self.is_deleted(&o.key))
            .collect();
        let mut written = self.written.list(prefix)?;
        written.retain(|w| after.is_none_or(|a| w.key.as_str() > a));
        all.retain(|o| !written.iter().any(|w| w.key == o.key));
        all.extend(written);
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }
}

impl Store for DryRun<'_> {
    fn identity(&self) -> String {
        format!("{} (dry run)", self.inner.identity())
    }
    fn note(&self) -> Option<String> {
        self.inner.note()
    }
    fn create(&self, key: &str, metadata: &Metadata) -> Result<Box<dyn ObjectWriter>> {
        // What it writes is found before what is behind it: a key deleted
        // then written again is the new object once the write finished.
        if self.head(key)?.is_some() {
            return Err(already_exists(&self.identity(), key));
        }
        self.written.create(key, metadata)
    }
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        if self.written.head(key)?.is_some() {
            return self.written.open(key);
        }
        if self.is_deleted(key) {
            return Err(not_found(&self.identity(), key));
        }
        self.inner.open(key)
    }
    fn open_parallel(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        if self.written.head(key)?.is_some() || self.is_deleted(key) {
            return self.open(key);
        }
        self.inner.open_parallel(key)
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        if let Some(o) = self.written.head(key)? {
            return Ok(Some(o));
        }
        if self.is_deleted(key) {
            return Ok(None);
        }
        self.inner.head(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.merged(self.inner.list(prefix)?, prefix, None)
    }
    // As it is listed behind, not gathered: years of manifest keys.
    fn list_each(&self, prefix: &str, each: &mut dyn FnMut(ObjectInfo)) -> Result<()> {
        let written = self.written.list(prefix)?;
        let over = |k: &str| written.binary_search_by(|w| w.key.as_str().cmp(k)).is_ok();
        self.inner.list_each(prefix, &mut |o| {
            if !self.is_deleted(&o.key) && !over(&o.key) {
                each(o);
            }
        })?;
        written.into_iter().for_each(each);
        Ok(())
    }
    // The real store's own listing after a key (one request on S3), not
    // every key listed and filtered.
    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectInfo>> {
        self.merged(self.inner.list_after(prefix, after)?, prefix, Some(after))
    }
    fn delete(&self, key: &str) -> Result<()> {
        if self.written.head(key)?.is_some() {
            return self.written.delete(key);
        }
        let until = self.inner.retained_until(key)?;
        if until.is_some() {
            return Err(anyhow::Error::new(super::s3::Retained {
                key: key.to_string(),
                until,
            }));
        }
        let h = self.hash(key);
        self.deleted.lock().expect("dry run lock").insert(h);
        Ok(())
    }
    fn sweep_unfinished(&self, before: OffsetDateTime, _: bool) -> Result<Vec<Unfinished>> {
        self.inner.sweep_unfinished(before, true)
    }
    fn preflight_writes(&self) -> Result<()> {
        self.inner.preflight_writes()
    }
    fn retained_until(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        match self.written.head(key)? {
            Some(_) => Ok(None),
            None => self.inner.retained_until(key),
        }
    }
    fn extend_retention(&self, _: &[String]) -> Result<usize> {
        Ok(0)
    }
    fn altered(&self, prefix: &str) -> Result<Option<Vec<(String, String)>>> {
        self.inner.altered(prefix)
    }
    fn reread_is_cheap(&self) -> bool {
        self.inner.reread_is_cheap()
    }
    fn forgets_writes(&self) -> bool {
        self.last.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }
    fn archived(&self, key: &str) -> Result<Option<super::Archived>> {
        match self.written.head(key)? {
            Some(_) => Ok(None),
            None => self.inner.archived(key),
        }
    }
    fn request_restore(
        &self,
        _: &str,
        _: &super::Archived,
        _: u32,
        _: super::RetrievalTier,
    ) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_sees_its_own_effects_and_changes_nothing_behind_it() {
        let real = MemoryStore::new();
        real.put_new("m/a.json", b"a", &Vec::new()).unwrap();
        real.put_new("m/b.json", b"bb", &Vec::new()).unwrap();
        let dry = DryRun::new(&real);
        dry.delete("m/a.json").unwrap();
        dry.put_new("t/a.json", b"tomb", &Vec::new()).unwrap();
        // Create-only, in memory and behind it.
        assert!(dry.put_new("t/a.json", b"again", &Vec::new()).is_err());
        assert!(dry.put_new("m/b.json", b"over", &Vec::new()).is_err());
        // Its streamed listing (as the store behind it streams) shows the
        // same as its whole one.
        let keys = |s: &dyn Store| -> Vec<String> {
            let listed: Vec<String> = s.list("").unwrap().into_iter().map(|o| o.key).collect();
            let mut streamed = Vec::new();
            s.list_each("", &mut |o| streamed.push(o.key)).unwrap();
            streamed.sort();
            assert_eq!(streamed, listed);
            listed
        };
        assert_eq!(keys(&dry), ["m/b.json", "t/a.json"]);
        let after = |s: &dyn Store, prefix: &str, after: &str| -> Vec<String> {
            let listed = s.list_after(prefix, after).unwrap();
            listed.into_iter().map(|o| o.key).collect()
        };
        assert_eq!(after(&dry, "", "m/a.json"), ["m/b.json", "t/a.json"]);
        assert_eq!(after(&dry, "m/", ""), ["m/b.json"]);
        assert_eq!(after(&dry, "", "m/b.json"), ["t/a.json"]);
        assert!(after(&dry, "t/", "t/a.json").is_empty());
        assert!(dry.head("m/a.json").unwrap().is_none());
        assert_eq!(
            crate::exit::classify(&dry.open("m/a.json").err().unwrap()),
            Some(crate::exit::Code::NotFound)
        );
        assert_eq!(dry.get("t/a.json").unwrap(), b"tomb");
        assert_eq!(dry.get("m/b.json").unwrap(), b"bb");
        // A key deleted then written again is the new one.
        dry.put_new("m/a.json", b"new", &Vec::new()).unwrap();
        assert_eq!(dry.get("m/a.json").unwrap(), b"new");
        dry.delete("t/a.json").unwrap();
        assert_eq!(keys(&dry), ["m/a.json", "m/b.json"]);
        // An aborted write leaves the deletion as it was.
        dry.delete("m/b.json").unwrap();
        dry.create("m/b.json", &Vec::new())
            .unwrap()
            .abort()
            .unwrap();
        assert_eq!(keys(&dry), ["m/a.json"]);
        // Behind it, nothing changed.
        assert_eq!(keys(&real), ["m/a.json", "m/b.json"]);
        assert_eq!(real.get("m/a.json").unwrap(), b"a");
        assert!(dry.identity().ends_with("(dry run)"));
    }
}
