//! A store that counts the bytes read through it: what a restore records in the
//! audit ledger as read from the store.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use time::OffsetDateTime;

use super::{Metadata, ObjectInfo, ObjectWriter, Store, Unfinished};

/// `inner`, counting every byte read from it by [`Store::open`] and
/// [`Store::get`] (and [`Store::get_at_most`]).
pub struct Counting<'a> {
    inner: &'a dyn Store,
    read: Arc<AtomicU64>,
}

impl<'a> Counting<'a> {
    pub fn new(inner: &'a dyn Store) -> Self {
        Counting {
            inner,
            read: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `inner`, counting what is read from it.
    fn counted(&self, inner: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
        Box::new(CountingReader {
            inner,
            read: self.read.clone(),
        })
    }

    /// The bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

struct CountingReader {
    inner: Box<dyn Read + Send>,
    read: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Store for Counting<'_> {
    fn identity(&self) -> String {
        self.inner.identity()
    }
    fn note(&self) -> Option<String> {
        self.inner.note()
    }
    fn create(&self, key: &str, metadata: &Metadata) -> Result<Box<dyn ObjectWriter>> {
        self.inner.create(key, metadata)
    }
    fn put_new(&self, key: &str, bytes: &[u8], metadata: &Metadata) -> Result<ObjectInfo> {
        self.inner.put_new(key, bytes, metadata)
    }
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        Ok(self.counted(self.inner.open(key)?))
    }
    fn open_parallel(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        Ok(self.counted(self.inner.open_parallel(key)?))
    }
    fn get_at_most(&self, key: &str, cap: u64) -> Result<Vec<u8>> {
        let bytes = self.inner.get_at_most(key, cap)?;
        self.read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.inner.head(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list_after(prefix, after)
    }
    fn list_each(&self, prefix: &str, each: &mut dyn FnMut(ObjectInfo)) -> Result<()> {
        self.inner.list_each(prefix, each)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
    fn deletes_in_batches(&self) -> bool {
        self.inner.deletes_in_batches()
    }
    fn delete_many(&self, keys: &[String]) -> Result<Vec<String>> {
        self.inner.delete_many(keys)
    }
    fn sweep_unfinished(&self, before: OffsetDateTime, dry_run: bool) -> Result<Vec<Unfinished>> {
        self.inner.sweep_unfinished(before, dry_run)
    }
    fn preflight_writes(&self) -> Result<()> {
        self.inner.preflight_writes()
    }
    fn altered(&self, prefix: &str) -> Result<Option<Vec<(String, String)>>> {
        self.inner.altered(prefix)
    }
    fn retained_until(&self, key: &str) -> Result<Option<OffsetDateTime>> {
        self.inner.retained_until(key)
    }
    fn extend_retention(&self, keys: &[String]) -> Result<usize> {
        self.inner.extend_retention(keys)
    }
    fn reread_is_cheap(&self) -> bool {
        self.inner.reread_is_cheap()
    }
    fn parallelism(&self) -> usize {
        self.inner.parallelism()
    }
    fn archived(&self, key: &str) -> Result<Option<super::Archived>> {
        self.inner.archived(key)
    }
    fn request_restore(
        &self,
        key: &str,
        state: &super::Archived,
        days: u32,
        tier: super::RetrievalTier,
    ) -> Result<()> {
        self.inner.request_restore(key, state, days, tier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn reads_are_counted_and_everything_else_passes_through() {
        let m = MemoryStore::new();
        m.put_new("a", &[7u8; 1000], &Vec::new()).unwrap();
        m.put_new("b", &[1u8; 24], &Vec::new()).unwrap();
        let c = Counting::new(&m);
        let mut buf = Vec::new();
        c.open("a").unwrap().read_to_end(&mut buf).unwrap();
        assert_eq!(c.get("b").unwrap().len(), 24);
        assert_eq!(c.list("").unwrap().len(), 2);
        assert!(c.head("a").unwrap().is_some());
        assert_eq!(c.bytes_read(), 1024);
        assert_eq!(c.identity(), m.identity());
    }
}
