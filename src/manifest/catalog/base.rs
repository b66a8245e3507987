//! A catalog base written as its entries come, in order of id, so that a
//! base of years of history is never held whole: neither its entries (a
//! first read of the manifests, or a new base merged from the old one as it
//! is parsed) nor its bytes. They are encoded into a compressor whose output
//! goes to an unnamed file of this process's own (held in memory only where
//! no file can be made), its tag made as they pass; the header line and the
//! file are then stored as one object.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result};
use time::OffsetDateTime;

use super::{object_key, Checked, Doc, Entry, Tagger, MAGIC, SCHEMA, SCHEMA_MINOR};
use crate::crypto::Keyring;
use crate::id::BackupId;
use crate::manifest::{seal, Kind};
use crate::store::{is_already_exists, ObjectInfo, Store};

/// The member the entries are written into, as serde writes a document
/// without entries.
const ENTRIES: &str = "\"entries\":[]";
/// A base whose compressed bytes are at most this is stored in one call
/// ([`Store::put_new`]: one request on S3), a larger one as a stream.
const PUT_WHOLE: u64 = if cfg!(test) { 4 << 10 } else { 8 << 20 };

/// The compressor's output: spilled, and fed to the tag's maker.
struct Tap {
    /// Where the compressed bytes go: a file, or memory where none can be
    /// made or written.
    spill: Checked,
    maker: Option<seal::TagMaker>,
    len: u64,
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Checked::Spooled(f) = &mut self.spill {
            if f.write_all(buf).is_err() {
                // The file is full: what it took is held, and the rest.
                let mut held = Vec::new();
                f.seek(SeekFrom::Start(0))?;
                f.take(self.len).read_to_end(&mut held)?;
                if held.len() as u64 != self.len {
                    return Err(std::io::Error::other(
                        "a catalog's file could not be read back",
                    ));
                }
                self.spill = Checked::Memory(held);
            }
        }
        if let Checked::Memory(v) = &mut self.spill {
            v.extend_from_slice(buf);
        }
        if let Some(m) = &mut self.maker {
            m.update(buf);
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.spill {
            Checked::Spooled(f) => f.flush(),
            Checked::Memory(_) => Ok(()),
        }
    }
}

type Encoder = zstd::stream::write::Encoder<'static, Tap>;

/// A base being written (see the module documentation).
pub(super) struct BaseWriter<'k> {
    keys: Option<&'k Keyring>,
    kind: Kind,
    seq: u64,
    written_at: OffsetDateTime,
    out: std::io::BufWriter<Encoder>,
    /// The last id pushed (the caller knows every id: none is kept here).
    last: Option<BackupId>,
    /// The first failure (a write, or an entry out of order): nothing is
    /// stored.
    failed: Option<anyhow::Error>,
}

/// A base [`BaseWriter::store`] stored.
pub(super) struct Written {
    /// As a listing shows it.
    pub info: ObjectInfo,
    /// Who tagged it, as a reader finds it (see [`Tagger::of`]).
    pub tagger: Option<Tagger>,
}

impl<'k> BaseWriter<'k> {
    /// A base numbered `seq` of `kind`, its manifests listed at
    /// `written_at`, tagged as `keys` tag. An error where they cannot tag.
    pub fn new(
        keys: Option<&'k Keyring>,
        kind: Kind,
        seq: u64,
        written_at: OffsetDateTime,
    ) -> Result<BaseWriter<'k>> {
        let out = Self::begin(keys, kind, seq, written_at)?;
        Ok(BaseWriter {
            keys,
            kind,
            seq,
            written_at,
            out,
            last: None,
            failed: None,
        })
    }

    /// The document without entries (`damaged` as given), split where its
    /// entries go.
    fn framing(
        kind: Kind,
        seq: u64,
        written_at: OffsetDateTime,
        damaged: &BTreeSet<String>,
    ) -> Result<(String, String)> {
        let doc: Doc<&Entry> = Doc {
            schema: SCHEMA.into(),
            kind,
            seq,
            base: None,
            written_at,
            understands: SCHEMA_MINOR,
            entries: Vec::new(),
            removed: Vec::new(),
            damaged: damaged.iter().cloned().collect(),
        };
        let text = serde_json::to_string(&doc).context("failed to encode the catalog")?;
        // The members before it are bkp's own words, numbers and a time.
        let at = text
            .find(ENTRIES)
            .context("failed to encode the catalog: no member for its entries")?;
        let open = at + ENTRIES.len() - 1;
        Ok((text[..open].to_string(), text[open..].to_string()))
    }

    /// A compressor, its document begun.
    fn begin(
        keys: Option<&Keyring>,
        kind: Kind,
        seq: u64,
        written_at: OffsetDateTime,
    ) -> Result<std::io::BufWriter<Encoder>> {
        let spill = match tempfile::tempfile() {
            Ok(f) => Checked::Spooled(f),
            Err(_) => Checked::Memory(Vec::new()),
        };
        let tap = Tap {
            spill,
            maker: seal::TagMaker::new(keys)?,
            len: 0,
        };
        let z =
            zstd::stream::write::Encoder::new(tap, 3).context("failed to compress the catalog")?;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, z);
        let (head, _) = Self::framing(kind, seq, written_at, &BTreeSet::new())?;
        out.write_all(head.as_bytes())
            .context("failed to compress the catalog")?;
        Ok(out)
    }

    /// Adds `e`, whose id must follow the last one's.
    pub fn push(&mut self, e: &Entry) {
        if self.failed.is_some() {
            return;
        }
        let id = e.manifest.id;
        if self.last.is_some_and(|last| last >= id) {
            self.failed = Some(anyhow::anyhow!(
                "failed to write the catalog: its entries came out of order of id"
            ));
            return;
        }
        let first = self.last.is_none();
        let written = (|| -> std::io::Result<()> {
            if !first {
                self.out.write_all(b",")?;
            }
            serde_json::to_writer(&mut self.out, e)?;
            Ok(())
        })();
        match written {
            Ok(()) => self.last = Some(id),
            Err(err) => {
                self.failed =
                    Some(anyhow::Error::new(err).context("failed to compress the catalog"))
            }
        }
    }

    /// Forgets every entry pushed (what gave them failed part way).
    pub fn restart(&mut self) {
        if self.last.is_none() && self.failed.is_none() {
            return;
        }
        self.last = None;
        match Self::begin(self.keys, self.kind, self.seq, self.written_at) {
            Ok(out) => {
                self.out = out;
                self.failed = None;
            }
            Err(e) => self.failed = Some(e),
        }
    }

    /// Its number, and when its manifests were listed.
    pub fn number(&self) -> (u64, OffsetDateTime) {
        (self.seq, self.written_at)
    }

    /// Ends the document (naming `damaged`) and stores it, create-only;
    /// `None` when another writer took its number. A copy is kept where this
    /// host keeps its bases ([`super::keep_bases_in`]).
    pub fn store(self, store: &dyn Store, damaged: &BTreeSet<String>) -> Result<Option<Written>> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let (_, tail) = Self::framing(self.kind, self.seq, self.written_at, damaged)?;
        let mut out = self.out;
        out.write_all(tail.as_bytes())
            .context("failed to compress the catalog")?;
        let z = out
            .into_inner()
            .map_err(|e| anyhow::Error::new(e.into_error()))
            .context("failed to compress the catalog")?;
        let Tap {
            mut spill,
            maker,
            len,
        } = z.finish().context("failed to compress the catalog")?;
        let (tag, tagger) = match maker {
            Some(m) => {
                let tagger = match self.keys {
                    Some(_) => Tagger::Trusted,
                    None => Tagger::Anyone,
                };
                (m.finish(), Some(tagger))
            }
            // A signature: of the whole payload, read back.
            None => {
                let mut payload = Vec::new();
                spill.reader(0)?.read_to_end(&mut payload)?;
                let tag = seal::tag(self.keys, &payload)?;
                let tagger = Tagger::of(self.keys, &payload, &tag);
                (tag, tagger)
            }
        };
        let header = format!("{MAGIC}{tag}\n");
        let key = object_key(self.kind, self.seq);
        let stored = match len <= PUT_WHOLE {
            // One request where the store has one for a small object.
            true => {
                let mut bytes = header.clone().into_bytes();
                spill.reader(0)?.read_to_end(&mut bytes)?;
                store.put_new(&key, &bytes, &Vec::new())
            }
            false => put_streamed(store, &key, header.as_bytes(), &mut spill),
        };
        let info = match stored {
            Ok(info) => info,
            // Another writer's object of that number stands.
            Err(e) if is_already_exists(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        // A write answers with the entity tag a listing shows.
        let info = ObjectInfo {
            key,
            size: header.len() as u64 + len,
            ..info
        };
        if let Some((path, prefix)) = super::base_copy(store, self.kind, &info) {
            if let Ok(r) = spill.reader(0) {
                super::keep_copy(&path, &prefix, &mut header.as_bytes().chain(r));
            }
        }
        Ok(Some(Written { info, tagger }))
    }
}

/// Stores `header` and then the bytes of `spill` as object `key`, create-only.
fn put_streamed(
    store: &dyn Store,
    key: &str,
    header: &[u8],
    spill: &mut Checked,
) -> Result<ObjectInfo> {
    let mut w = store.create(key, &Vec::new())?;
    let copied = w
        .write_all(header)
        .and_then(|()| std::io::copy(&mut spill.reader(0)?, &mut w).map(|_| ()));
    if let Err(e) = copied {
        let _ = w.abort();
        return Err(anyhow::Error::new(e).context(format!("failed to write {key}")));
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::manifest::tests::sample;
    use crate::store::memory::MemoryStore;
    use time::Duration;

    /// The JSON a base's object holds, its tag checked as `keys` make it.
    fn stored_json(store: &MemoryStore, keys: Option<&Keyring>, info: &ObjectInfo) -> String {
        let bytes = store.get(&info.key).unwrap();
        assert_eq!(bytes.len() as u64, info.size);
        let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
        let tag = std::str::from_utf8(&bytes[..nl])
            .unwrap()
            .strip_prefix(MAGIC)
            .unwrap();
        let payload = &bytes[nl + 1..];
        assert_eq!(tag, seal::tag(keys, payload).unwrap());
        String::from_utf8(zstd::decode_all(payload).unwrap()).unwrap()
    }

    #[test]
    fn a_base_written_entry_by_entry_is_the_document_written_whole() {
        let store = MemoryStore::default();
        let t0 = OffsetDateTime::now_utc() - Duration::days(3);
        let mut entries: Vec<Entry> = (0..300)
            .map(|i| Entry::new(sample(Kind::Duckdb, t0 + Duration::hours(i)), None, None))
            .collect();
        entries.sort_by_key(|e| e.manifest.id);
        let damaged: BTreeSet<String> = ["manifests/duckdb/not-an-id.json".to_string()].into();
        let whole = |seq: u64, entries: &[Entry]| {
            serde_json::to_string(&Doc {
                schema: SCHEMA.into(),
                kind: Kind::Duckdb,
                seq,
                base: None,
                written_at: t0,
                understands: SCHEMA_MINOR,
                entries: entries.iter().collect(),
                removed: Vec::new(),
                damaged: damaged.iter().cloned().collect(),
            })
            .unwrap()
        };
        let ring = Keyring::new(MasterKey::from_bytes([3; 32]), Vec::new());
        let mut seq = 0;
        // Stored in one call and as a stream.
        for (n, large) in [(3, false), (300, true)] {
            for keys in [None, Some(&ring)] {
                seq += 1;
                let some = &entries[..n];
                let mut w = BaseWriter::new(keys, Kind::Duckdb, seq, t0).unwrap();
                some.iter().for_each(|e| w.push(e));
                let written = w.store(&store, &damaged).unwrap().unwrap();
                assert_eq!(written.info.size > PUT_WHOLE, large);
                assert_eq!(stored_json(&store, keys, &written.info), whole(seq, some));
                let tagger = if keys.is_some() {
                    Tagger::Trusted
                } else {
                    Tagger::Anyone
                };
                assert_eq!(written.tagger, Some(tagger));
                // Its number is taken now: another writer's object stands.
                let mut again = BaseWriter::new(keys, Kind::Duckdb, seq, t0).unwrap();
                some.iter().for_each(|e| again.push(e));
                assert!(again.store(&store, &damaged).unwrap().is_none());
            }
        }
        // What was pushed before a restart is not stored.
        let mut w = BaseWriter::new(None, Kind::Duckdb, 10, t0).unwrap();
        w.push(&entries[5]);
        w.push(&entries[9]);
        w.restart();
        entries.iter().for_each(|e| w.push(e));
        let written = w.store(&store, &damaged).unwrap().unwrap();
        assert_eq!(
            stored_json(&store, None, &written.info),
            whole(10, &entries)
        );
        // Entries out of order store nothing.
        let mut w = BaseWriter::new(None, Kind::Duckdb, 11, t0).unwrap();
        w.push(&entries[1]);
        w.push(&entries[0]);
        let e = w.store(&store, &damaged).err().unwrap();
        assert!(format!("{e:#}").contains("out of order"), "{e:#}");
        assert!(store.head(&object_key(Kind::Duckdb, 11)).unwrap().is_none());
    }
}
