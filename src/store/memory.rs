//! An in-memory store: what a dry run writes ([`super::dry`]), and unit tests
//! of pure logic. Never the proof that a real backend works: the conformance
//! suite runs the real ones.
//!
//! Every object has an entity tag, as on S3 (the quoted hex MD5 of its bytes,
//! which S3 gives a single-part upload), so that logic telling versions apart
//! ([`super::Version`]) is tested on more than sizes.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use md5::{Digest, Md5};

use super::{already_exists, check_key, not_found, Metadata, ObjectInfo, ObjectWriter, Store};

/// An object's bytes and entity tag.
struct Stored {
    bytes: Vec<u8>,
    etag: String,
}

type Objects = Arc<Mutex<BTreeMap<String, Stored>>>;

#[derive(Default, Clone)]
pub struct MemoryStore {
    objects: Objects,
    /// Told apart from other memory stores by its identity (`memory://{name}`).
    name: Option<Arc<str>>,
    /// Answers [`Store::deletes_in_batches`] as S3 without Object Lock does.
    batching: bool,
}

fn info(key: &str, o: &Stored) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size: o.bytes.len() as u64,
        modified: None,
        etag: Some(o.etag.clone()),
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose identity is `memory://{name}`.
    pub fn named(name: &str) -> Self {
        MemoryStore {
            name: Some(name.into()),
            ..Self::default()
        }
    }

    /// A store that, as S3 without Object Lock, deletes many keys in one
    /// request ([`Store::deletes_in_batches`]).
    pub fn batching() -> Self {
        MemoryStore {
            batching: true,
            ..Self::default()
        }
    }
}

struct MemoryWriter {
    buf: Vec<u8>,
    key: String,
    objects: Objects,
}

impl Write for MemoryWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for MemoryWriter {
    fn finish(self: Box<Self>) -> Result<ObjectInfo> {
        let mut objects = self.objects.lock().expect("memory store lock");
        if objects.contains_key(&self.key) {
            return Err(already_exists("memory://", &self.key));
        }
        let etag = format!("\"{}\"", hex::encode(Md5::digest(&self.buf)));
        let stored = Stored {
            bytes: self.buf,
            etag,
        };
        let answer = info(&self.key, &stored);
        objects.insert(self.key, stored);
        Ok(answer)
    }
    fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

impl Store for MemoryStore {
    fn identity(&self) -> String {
        format!("memory://{}", self.name.as_deref().unwrap_or(""))
    }
    fn create(&self, key: &str, _metadata: &Metadata) -> Result<Box<dyn ObjectWriter>> {
        check_key(key)?;
        if self
            .objects
            .lock()
            .expect("memory store lock")
            .contains_key(key)
        {
            return Err(already_exists("memory://", key));
        }
        Ok(Box::new(MemoryWriter {
            buf: Vec::new(),
            key: key.to_string(),
            objects: self.objects.clone(),
        }))
    }
    fn open(&self, key: &str) -> Result<Box<dyn io::Read + Send>> {
        check_key(key)?;
        let objects = self.objects.lock().expect("memory store lock");
        match objects.get(key) {
            Some(o) => Ok(Box::new(Cursor::new(o.bytes.clone()))),
            None => Err(not_found("memory://", key)),
        }
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        check_key(key)?;
        let objects = self.objects.lock().expect("memory store lock");
        Ok(objects.get(key).map(|o| info(key, o)))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let objects = self.objects.lock().expect("memory store lock");
        Ok(objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| info(k, o))
            .collect())
    }
    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.objects.lock().expect("memory store lock").remove(key);
        Ok(())
    }
    fn deletes_in_batches(&self) -> bool {
        self.batching
    }
}
