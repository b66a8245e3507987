//! An in-memory store for unit tests of pure logic. Never the proof that a real
//! backend works: the conformance suite runs the real ones.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use super::{already_exists, check_key, not_found, Metadata, ObjectInfo, ObjectWriter, Store};

#[derive(Default, Clone)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

struct MemoryWriter {
    buf: Vec<u8>,
    key: String,
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
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
        let size = self.buf.len() as u64;
        objects.insert(self.key.clone(), self.buf);
        Ok(ObjectInfo {
            key: self.key,
            size,
            modified: None,
            etag: None,
        })
    }
    fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

impl Store for MemoryStore {
    fn identity(&self) -> String {
        "memory://".into()
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
            Some(b) => Ok(Box::new(Cursor::new(b.clone()))),
            None => Err(not_found("memory://", key)),
        }
    }
    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        check_key(key)?;
        let objects = self.objects.lock().expect("memory store lock");
        Ok(objects.get(key).map(|b| ObjectInfo {
            key: key.to_string(),
            size: b.len() as u64,
            modified: None,
            etag: None,
        }))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let objects = self.objects.lock().expect("memory store lock");
        Ok(objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, b)| ObjectInfo {
                key: k.clone(),
                size: b.len() as u64,
                modified: None,
                etag: None,
            })
            .collect())
    }
    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.objects.lock().expect("memory store lock").remove(key);
        Ok(())
    }
}
