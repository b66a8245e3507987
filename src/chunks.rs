//! Content-addressed chunks: a large file stored as fixed-size chunks, each an
//! object of its own, so that a second snapshot of a file that barely changed
//! uploads only the chunks that did.
//!
//! - A chunk's id is a keyed BLAKE3 hash of its plaintext ([`Naming`]: the key
//!   derived from the writer's [chunk naming](MasterKey::new_chunk_naming)
//!   and the compression algorithm): equal chunks get equal names, and a name
//!   says nothing about the data to whoever lacks the key, nor can anyone else
//!   compute the name of a chunk before it is stored. A write-only host keys
//!   its names with a secret of its own, so two hosts storing the same bytes
//!   store them twice. Unencrypted backups derive the BLAKE3 key from the
//!   algorithm alone. The manifest records the naming (`blake3:{alg}[:{key
//!   id}]`, `blake3x:{alg}:{writer}:{key id}`); restores read the names the
//!   chunk list records, whichever naming made them.
//! - Each chunk is compressed and encrypted on its own (the stream format of
//!   `crypto`, a data key of its own), so any chunk can be read alone.
//! - A chunk of zeros is stored as nothing (a hole when restored).
//! - Reading a chunk checks its stored size (from the chunk list), the
//!   encryption's authentication and the plaintext length. `verify` ([`check`])
//!   also recomputes the id from the plaintext, so a chunk moved to another
//!   chunk's name is refused; a restore ([`read_file`]) instead checks the whole
//!   file's SHA-256 before the file is used, which catches the same.
//! - The chunk list (every chunk's id and stored size, in file order) is an
//!   object of its own beside the manifest, which records its key, size and
//!   SHA-256 ([`load`], [`Lists`] to read each list once per run).
//! - Which chunks the store holds is known from the newest snapshot's chunk list
//!   checked against one listing of the chunk prefix; a chunk found in the store
//!   although no list named it is adopted only after it is read back and checked
//!   where the writer can read (see [`write_file`] for the rule), and a snapshot
//!   looks again, after its manifest is written, for every chunk a concurrent
//!   cleanup may have removed (`store_again`).
//!
//! Requests run `store.parallelism()` at once; memory stays a few chunks per
//! request in flight.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::archive::is_zero;
use crate::crypto::{DecryptReader, EncryptWriter, Escrow, Keyring, MasterKey};
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::manifest::chunks::{
    chunk_key, exchange_naming, keyed_naming, parse_naming, plain_naming, with_escrow, Chunk,
    ChunkList, Chunked, ListRef, NamedBy, LIST_SCHEMA,
};
use crate::manifest::{FileEntry, Kind, Manifest};
use crate::stages::compress::Compression;
use crate::stages::hash::hex;
use crate::stages::progress::Progress;
use crate::store::Store;

pub use crate::manifest::chunks::ChunkMap;

/// The chunk size new chunked backups use: 4 MiB, eight TigerBeetle grid
/// blocks. Every chunk is a request and an object of its own: against a
/// SeaweedFS on the same two cores, 4 MiB chunks cut its CPU for a 4 GB first
/// snapshot from 12.4 to 8.1 s and the snapshot from 14.2 to 12.1 s, while a
/// second snapshot after 1% more transfers stores 1.25 MiB instead of 1.09.
/// Snapshots of 1 MiB chunks (earlier versions) restore as before; the first
/// snapshot after them shares none of their chunks.
pub const CHUNK_SIZE: u64 = 4 << 20;

/// How chunk ids are computed: BLAKE3 keyed with a key derived (BLAKE3's
/// key derivation, the compression algorithm in its context) from the
/// configured key's [chunk id key](MasterKey::chunk_id_key), or from nothing
/// for an unencrypted backup. A keyed hash several times faster than
/// HMAC-SHA256 on one core; the algorithm in the key keeps chunks stored with
/// one compression apart from those of another.
#[derive(Clone)]
pub struct Naming(zeroize::Zeroizing<[u8; 32]>);

impl Naming {
    /// `escrow`: the ids of the escrows the chunks are also wrapped to
    /// (sorted), in the context, so that a chunk stored before an escrow was
    /// configured is never named by a backup the escrow must read.
    fn derive(compression: Compression, secret: &[u8], escrow: &[&str]) -> Naming {
        let mut context = format!("bkp chunk id v1 {}", compression.name());
        if !escrow.is_empty() {
            context.push_str(" escrow ");
            context.push_str(&escrow.join(","));
        }
        Naming(zeroize::Zeroizing::new(blake3::derive_key(
            &context, secret,
        )))
    }

    /// The naming of new chunks under `key` (already [`MasterKey::for_chunks`])
    /// and its name; an error for a key that cannot name chunks secretly (a
    /// recipient without a signing key).
    pub fn of(
        key: Option<&MasterKey>,
        escrow: &[Escrow],
        compression: Compression,
    ) -> Result<(Naming, String)> {
        let alg = compression.name();
        let Some(k) = key else {
            return Ok((Self::derive(compression, b"", &[]), plain_naming(alg)));
        };
        let mut ids: Vec<&str> = escrow.iter().map(Escrow::id).collect();
        ids.sort_unstable();
        let (secret, name) = match k.new_chunk_naming() {
            Some((secret, None)) => (secret, keyed_naming(alg, k.id())),
            Some((secret, Some(writer))) => (secret, exchange_naming(alg, &writer, k.id())),
            None => return Err(coded(
                Code::Config,
                format!(
                    "key {} cannot name chunks: a write-only host needs encryption.signing_key_file",
                    k.id()
                ),
            )),
        };
        Ok((
            Self::derive(compression, &secret[..], &ids),
            with_escrow(name, &ids),
        ))
    }

    pub fn id(&self, data: &[u8]) -> String {
        blake3::keyed_hash(&self.0, data).to_hex().to_string()
    }
}

/// Chunks between two [`trim_heap`] calls of a long file.
const TRIM_EVERY: usize = 32;

/// Gives the C allocator's free pages back: the workers allocate compressed
/// and encrypted chunks of every size, and a heap left to itself creeps up
/// over a long file (60 to 82 MiB over 8 GiB) where it should stay flat.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Chunks read ahead of the file's digest (each a full chunk in memory).
const DIGEST_AHEAD: usize = 4;

/// Direct reads of a file in flight at once (see `write_file`): one waits
/// for the disk after each read, two keep it busy.
const DIRECT_READERS: usize = 2;

/// Chunk buffers to fill again: a long file reuses the few that are in flight
/// at once instead of allocating (and page-faulting) one per chunk, so that
/// memory stays the same for a 1 GiB file and an 8 GiB one.
#[derive(Default)]
struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    fn take(&self, capacity: usize) -> Vec<u8> {
        let mut v = self
            .0
            .lock()
            .expect("buffer pool")
            .pop()
            .unwrap_or_default();
        v.clear();
        v.reserve_exact(capacity);
        v
    }

    /// A buffer of at least `len` initialized bytes (what a buffer held
    /// before, or zeros): a decompressor fills it without zeroing it first.
    fn filled(&self, len: usize) -> Vec<u8> {
        match self.0.lock().expect("buffer pool").pop() {
            Some(v) if v.len() >= len => v,
            _ => vec![0u8; len],
        }
    }

    fn give_back(&self, data: Vec<u8>) {
        self.0.lock().expect("buffer pool").push(data);
    }
}

/// Stores the chunk list of `map` for backup `id` at `key` (create-only);
/// the summary its manifest records.
pub fn store_list(
    store: &dyn Store,
    kind: Kind,
    id: BackupId,
    key: &str,
    map: &ChunkMap,
) -> Result<Chunked> {
    let list = ChunkList {
        schema: LIST_SCHEMA.into(),
        backup: id,
        chunks: map.chunks.clone(),
    };
    let packed = zstd::bulk::compress(&serde_json::to_vec(&list)?, 3)?;
    store
        .put_new(key, &packed, &Vec::new())
        .with_context(|| format!("failed to store the chunk list {key}"))?;
    let list = ListRef {
        key: key.to_string(),
        size: packed.len() as u64,
        sha256: hex(&Sha256::digest(&packed)),
    };
    Ok(map.summary(kind, list))
}

/// Bytes of JSON a list entry can take: a chunk id and a size.
const LIST_ENTRY_MAX: u64 = 100;

/// The object at `key`, which must be exactly `size` bytes (what a manifest or
/// chunk list recorded; at most `size` + 1 are read, buffers start at most
/// `reserve`). A missing object or another size is `damaged(why)`; another
/// failure to read stays what it is.
fn read_recorded(
    store: &dyn Store,
    key: &str,
    size: u64,
    reserve: u64,
    damaged: &dyn Fn(String) -> anyhow::Error,
) -> Result<Vec<u8>> {
    let opened = store.open(key).map_err(|e| {
        if crate::exit::classify(&e) == Some(Code::NotFound) {
            damaged("it is missing".into())
        } else {
            e
        }
    })?;
    let mut out = Vec::with_capacity(size.min(reserve) as usize);
    opened
        .take(size.saturating_add(1))
        .read_to_end(&mut out)
        .with_context(|| format!("failed to read {key} in {}", store.identity()))?;
    if out.len() as u64 != size {
        let n = if out.len() as u64 > size {
            "more".to_string()
        } else {
            out.len().to_string()
        };
        return Err(damaged(format!("{n} bytes stored, {size} recorded")));
    }
    Ok(out)
}

/// Reads the chunk list of `m` and checks it: its size and SHA-256 as the
/// manifest records them, its backup, and that it makes up the file. `None`
/// for a backup without chunks.
pub fn load(store: &dyn Store, m: &Manifest) -> Result<Option<ChunkMap>> {
    let Some(c) = &m.chunks else { return Ok(None) };
    let key = &c.list.key;
    let damaged = |why: &str| {
        coded(
            Code::Integrity,
            format!(
                "the chunk list {key} of backup {} in {} is damaged ({why}): the backup cannot be restored; restore another one (`bkp list` shows them) and run `bkp verify`",
                m.id,
                store.identity()
            ),
        )
    };
    let packed = read_recorded(store, key, c.list.size, 64 << 20, &|why| damaged(&why))?;
    if hex(&Sha256::digest(&packed)) != c.list.sha256 {
        return Err(damaged("its SHA-256 is not what the manifest recorded"));
    }
    // Decoded as it arrives, up to what the manifest's count of chunks can
    // take: nothing is reserved ahead from the count, which a manifest may
    // put at any number.
    let limit = c
        .count
        .saturating_mul(LIST_ENTRY_MAX)
        .saturating_add(4096)
        .min(crate::limits::CHUNK_LIST);
    let mut text = Vec::new();
    zstd::stream::read::Decoder::new(&packed[..])
        .and_then(|d| d.take(limit + 1).read_to_end(&mut text))
        .map_err(|_| damaged("it does not decompress"))?;
    if text.len() as u64 > limit {
        return Err(damaged(
            "it decompresses to more than its count of chunks can take",
        ));
    }
    let list: ChunkList =
        serde_json::from_slice(&text).map_err(|_| damaged("it is not a chunk list"))?;
    if list.schema != LIST_SCHEMA || list.backup != m.id {
        return Err(damaged("it belongs to another backup or format"));
    }
    let map = ChunkMap {
        file: c.file.clone(),
        chunk_size: c.chunk_size,
        naming: c.naming.clone(),
        added: c.added,
        added_bytes: c.added_bytes,
        chunks: list.chunks,
        adopted: Vec::new(),
    };
    let size = m
        .files
        .iter()
        .find(|f| f.name == c.file)
        .map_or(0, |f| f.size);
    map.check(size).map_err(|why| damaged(&why))?;
    Ok(Some(map))
}

/// Chunk lists, each read once per run.
pub struct Lists<'a> {
    store: &'a dyn Store,
    cache: Mutex<HashMap<BackupId, Arc<ChunkMap>>>,
}

impl<'a> Lists<'a> {
    pub fn new(store: &'a dyn Store) -> Self {
        Lists {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The chunk map of `m`, `None` without chunks.
    pub fn get(&self, m: &Manifest) -> Result<Option<Arc<ChunkMap>>> {
        if m.chunks.is_none() {
            return Ok(None);
        }
        if let Some(hit) = self.cache.lock().expect("chunk lists").get(&m.id) {
            return Ok(Some(hit.clone()));
        }
        let Some(map) = load(self.store, m)? else {
            return Ok(None);
        };
        let map = Arc::new(map);
        self.cache
            .lock()
            .expect("chunk lists")
            .insert(m.id, map.clone());
        Ok(Some(map))
    }

    /// Every chunk key `m` names, with its stored size.
    pub fn keys(&self, m: &Manifest) -> Result<Vec<(String, u64)>> {
        Ok(match self.get(m)? {
            Some(map) => map.keys(m.kind).collect(),
            None => Vec::new(),
        })
    }
}

/// What reading chunks needs: where they are and how they were written.
pub struct Source<'a> {
    pub store: &'a dyn Store,
    pub kind: Kind,
    pub compression: Compression,
    /// Keys for the chunks' encryption (see [`source`]); `None` when the
    /// backup is not encrypted.
    pub keys: Option<Keyring>,
    /// How the chunks were named; `None` where only an escrow's identity
    /// reads them (it cannot recompute their ids: a restore and `verify`
    /// check the whole file's SHA-256 instead).
    pub naming: Option<Naming>,
    /// Buffers of decompressed chunks, filled again: a restore would
    /// otherwise zero and page-fault a new one per chunk.
    pool: Pool,
}

/// The keys to read the chunks of `map` with: the configured key it names,
/// as [`MasterKey::for_chunks`]. An error naming the key when none is
/// configured.
pub fn source<'a>(
    store: &'a dyn Store,
    kind: Kind,
    compression: Compression,
    map: &ChunkMap,
    keyring: Option<&Keyring>,
) -> Result<Source<'a>> {
    let unknown = || {
        coded(
            Code::Integrity,
            format!("chunk naming {:?} is unknown", map.naming),
        )
    };
    let (alg, named_by, escrow) = parse_naming(&map.naming).ok_or_else(unknown)?;
    if alg != compression.name() {
        return Err(unknown());
    }
    let (key_id, writer) = match named_by {
        NamedBy::Plain => (None, None),
        NamedBy::Key(id) => (Some(id), None),
        NamedBy::Exchange { key, writer } => (Some(key), Some(writer)),
    };
    let (keys, naming) = match key_id {
        None => (None, Some(Naming::derive(compression, b"", &[]))),
        Some(id) => {
            let found = keyring.and_then(|k| k.find(id));
            // Where the key is lost, an escrow's identity reads the chunks.
            let by_escrow = || {
                let ring = keyring?;
                escrow
                    .iter()
                    .find_map(|e| ring.find(e).filter(|k| k.decrypts()))
            };
            let key = match found {
                None => match by_escrow() {
                    Some(e) => return Ok(Source {
                        store,
                        kind,
                        compression,
                        keys: Some(Keyring::new(e.for_chunks(), Vec::new())),
                        naming: None,
                        pool: Pool::default(),
                    }),
                    None => return Err(coded(
                        Code::Config,
                        format!(
                            "the backup's chunks are named and encrypted with key {id}, which is not configured: add it to [encryption] (or [[encryption.old_keys]]){}",
                            if escrow.is_empty() { String::new() } else { format!(", or the identity of escrow {}", escrow.join(" or ")) }
                        ),
                    )),
                },
                Some(k) => k,
            };
            if !key.decrypts() {
                return Err(coded(
                    Code::Config,
                    format!(
                        "the backup's chunks were encrypted to recipient '{id}', and this host holds only its public key (a write-only host): restore, verify and drill where its identity is configured (`identity_files`)"
                    ),
                ));
            }
            let key = key.for_chunks();
            let secret = match &writer {
                None => key.chunk_id_key(),
                Some(w) => key.chunk_id_key_for(w),
            }
            .ok_or_else(unknown)?;
            let naming = Naming::derive(compression, &secret[..], &escrow);
            (Some(Keyring::new(key, Vec::new())), Some(naming))
        }
    };
    Ok(Source {
        store,
        kind,
        compression,
        keys,
        naming,
        pool: Pool::default(),
    })
}

/// Compresses and encrypts one chunk.
fn seal(
    data: &[u8],
    compression: Compression,
    key: Option<&MasterKey>,
    escrow: &[Escrow],
) -> Result<Vec<u8>> {
    let packed = match compression {
        Compression::None => data.to_vec(),
        Compression::Zstd { level, .. } => zstd::bulk::compress(data, level)?,
        Compression::Gzip { level } => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2),
                flate2::Compression::new(level),
            );
            e.write_all(data)?;
            e.finish()?
        }
    };
    Ok(match key {
        None => packed,
        Some(k) => {
            let mut w =
                EncryptWriter::with_escrow(Vec::with_capacity(packed.len() + 256), k, escrow)?;
            w.write_all(&packed)?;
            w.finish()?
        }
    })
}

/// A chunk's plaintext: `len` bytes of `buf` from `off` on. Read from a file
/// or decompressed, `buf` comes from a [`Pool`] and goes back to it when the
/// last user drops the chunk; decompressed, it starts at an address a direct
/// write accepts ([`crate::direct::ALIGN`]), so that a restore hands it to
/// the disk without a copy.
pub struct Plain<'p> {
    buf: Vec<u8>,
    off: usize,
    len: usize,
    pool: Option<&'p Pool>,
}

impl<'p> Plain<'p> {
    fn whole(buf: Vec<u8>) -> Plain<'static> {
        let len = buf.len();
        Plain {
            buf,
            off: 0,
            len,
            pool: None,
        }
    }

    fn pooled(buf: Vec<u8>, off: usize, len: usize, pool: &'p Pool) -> Plain<'p> {
        Plain {
            buf,
            off,
            len,
            pool: Some(pool),
        }
    }
}

impl std::ops::Deref for Plain<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl Drop for Plain<'_> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool {
            pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

impl Source<'_> {
    /// Reads chunk `c` (plaintext `len` bytes) and checks it through and
    /// through; its plaintext. `check_id`: recompute its id from the
    /// plaintext (a restore leaves that to the whole file's SHA-256).
    pub fn read(&self, c: &Chunk, len: u64, check_id: bool) -> Result<Plain<'_>> {
        let key = chunk_key(self.kind, &c.0);
        let where_ = || format!("chunk {key} in {}", self.store.identity());
        let damaged = |why: String| {
            coded(
                Code::Integrity,
                format!("{} is damaged ({why}): restore another backup (`bkp list` shows them) and run `bkp verify`", where_()),
            )
        };
        let max = crate::manifest::chunks::MAX_CHUNK * 2;
        let stored = read_recorded(self.store, &key, c.1, max, &damaged)?;
        self.open(&stored, c, len, check_id)
            .map_err(|e| match crate::exit::classify(&e) {
                Some(_) => e.context(where_()),
                None => damaged(format!("{e:#}")),
            })
    }

    /// Decrypts, decompresses and checks the stored bytes of chunk `c`.
    fn open(&self, stored: &[u8], c: &Chunk, len: u64, check_id: bool) -> Result<Plain<'_>> {
        let packed = match &self.keys {
            None => stored.to_vec(),
            Some(keys) => {
                let mut out = Vec::with_capacity(stored.len());
                DecryptReader::new(stored, keys)?.read_to_end(&mut out)?;
                out
            }
        };
        let plain = match self.compression {
            Compression::None => Plain::whole(packed),
            Compression::Zstd { .. } => {
                let want = usize::try_from(len)?;
                let mut buf = self.pool.filled(crate::direct::span(want));
                let off = crate::direct::start(&buf);
                let got = zstd::bulk::Decompressor::new()?
                    .decompress_to_buffer(&packed, &mut buf[off..off + want])
                    .context("zstd could not decode it within its length")?;
                Plain::pooled(buf, off, got, &self.pool)
            }
            Compression::Gzip { .. } => {
                let mut out = Vec::with_capacity(len as usize);
                flate2::read::GzDecoder::new(&packed[..])
                    .take(len + 1)
                    .read_to_end(&mut out)?;
                Plain::whole(out)
            }
        };
        if plain.len() as u64 != len {
            anyhow::bail!("it holds {} bytes, not {len}", plain.len());
        }
        if check_id && self.naming.as_ref().is_some_and(|n| n.id(&plain) != c.0) {
            anyhow::bail!("its content is not the chunk its name says");
        }
        Ok(plain)
    }
}

/// Spawns `f` on a thread of `s` named `bkp-{name}`, as `top -H`, a debugger
/// and a profile show it.
fn named<'scope, 'env, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, T> {
    std::thread::Builder::new()
        .name(format!("bkp-{name}"))
        .spawn_scoped(s, f)
        .expect("failed to start a thread")
}

/// Runs `job` for indexes `0..n` on `workers` threads, at most `window`
/// indexes ahead of the one `consume` waits for, and hands each result to
/// `consume` in index order. Stops at the first error (or interrupt).
fn ordered<T: Send>(
    n: usize,
    workers: usize,
    window: usize,
    job: impl Fn(usize) -> Result<T> + Sync,
    mut consume: impl FnMut(usize, T) -> Result<()>,
) -> Result<()> {
    struct Gate {
        next: usize,
        consumed: usize,
    }
    let gate = Mutex::new(Gate {
        next: 0,
        consumed: 0,
    });
    let moved = Condvar::new();
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Result<T>)>();
    std::thread::scope(|s| -> Result<()> {
        for _ in 0..workers.clamp(1, 64) {
            let tx = tx.clone();
            let (gate, moved, stop, job) = (&gate, &moved, &stop, &job);
            named(s, "chunk", move || loop {
                let i = {
                    let mut g = gate.lock().expect("chunk gate");
                    while g.next < n
                        && g.next >= g.consumed + window
                        && !stop.load(Ordering::SeqCst)
                    {
                        g = moved.wait(g).expect("chunk gate");
                    }
                    if g.next >= n || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    g.next += 1;
                    g.next - 1
                };
                let r = crate::interrupt::check()
                    .map_err(anyhow::Error::from)
                    .and_then(|()| job(i));
                if tx.send((i, r)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        let result = (|| -> Result<()> {
            while next < n {
                let Ok((i, r)) = rx.recv() else {
                    anyhow::bail!("a chunk worker ended early");
                };
                waiting.insert(i, r?);
                while let Some(t) = waiting.remove(&next) {
                    consume(next, t)?;
                    next += 1;
                }
                gate.lock().expect("chunk gate").consumed = next;
                moved.notify_all();
            }
            Ok(())
        })();
        stop.store(true, Ordering::SeqCst);
        moved.notify_all();
        drop(rx);
        result
    })
}

/// What [`write_file`] stores with.
pub struct Sink<'a> {
    pub store: &'a dyn Store,
    pub kind: Kind,
    pub compression: Compression,
    /// The current key as [`MasterKey::for_chunks`]; `None`: not encrypted.
    pub key: Option<&'a MasterKey>,
    /// The escrows each chunk is also wrapped to.
    pub escrow: &'a [Escrow],
    pub progress: Arc<dyn Progress>,
}

/// Chunk `id` (`what`, holding `data`) found in the store at `key`, though
/// the snapshot this one builds on does not name it: left by an interrupted
/// run, or by another backup. Adopted by the rule of [`write_file`]: read
/// back as exactly this chunk where the writer can read, else only because
/// no one but the writer could have named it. `None` when it is gone again.
fn adopt(
    sink: &Sink,
    source: &Source,
    key: &str,
    id: String,
    data: &[u8],
    what: &str,
) -> Result<Option<Chunk>> {
    let Some(info) = sink.store.head(key)? else {
        return Ok(None);
    };
    if info.size > crate::manifest::chunks::max_stored(data.len() as u64) {
        return Err(coded(
            Code::Integrity,
            format!("{key} in {} is already in the store, {} bytes, larger than any chunk of {} bytes: it is no chunk of bkp's; run `bkp verify`, and remove that object if no backup needs it", sink.store.identity(), info.size, data.len()),
        ));
    }
    let found = Chunk(id, info.size);
    if sink.key.is_none_or(MasterKey::decrypts) {
        if let Err(e) = source.read(&found, data.len() as u64, true) {
            if !crate::exit::is_damage(&e) {
                return Err(e);
            }
            return Err(e.context(format!(
                "chunk {key} is in the store already but does not hold {what}: run `bkp verify` to see which backups need it"
            )));
        }
    }
    Ok(Some(found))
}

/// Stores the file at `path` as chunks of `chunk_size`, uploading those not in
/// `known` (id → stored size, from the snapshot this one builds on), and reads
/// it once: its SHA-256 comes from the same pass. The file must not change
/// size while read.
///
/// The adoption rule: a chunk found in the store is adopted only when the
/// writer reads it back as exactly this chunk, or when no one but the writer
/// could have named it. A writer that can decrypt (a key holder, an
/// unencrypted backup) reads it back and checks its id. A write-only host
/// cannot read it: its ids are keyed by its own naming secret (see
/// `MasterKey::new_chunk_naming`), which no other host, nor the store, holds,
/// so nothing but this host's own runs can have stored an object under the
/// name of a chunk it has not stored yet.
pub fn write_file(
    sink: &Sink,
    path: &Path,
    name: &str,
    chunk_size: u64,
    known: &HashMap<String, u64>,
) -> Result<(ChunkMap, FileEntry)> {
    let mut file =
        File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("failed to stat {}", path.display()))?
        .len();
    let n = usize::try_from(size.div_ceil(chunk_size))?;
    let (naming, naming_name) = Naming::of(sink.key, sink.escrow, sink.compression)?;
    let source = Source {
        store: sink.store,
        kind: sink.kind,
        compression: sink.compression,
        keys: sink.key.map(|k| Keyring::new(k.for_chunks(), Vec::new())),
        naming: Some(naming.clone()), // adopted chunks: ids checked
        pool: Pool::default(),
    };
    // Chunks uploaded by this run: a repeated chunk is stored once.
    let stored_here: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    // Chunks found in the store, not uploaded and not in `known`.
    let adopted: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let store_one = |i: usize, data: &[u8]| -> Result<(Option<Chunk>, u64)> {
        if is_zero(data) {
            return Ok((None, 0));
        }
        let id = naming.id(data);
        if let Some(n) = known.get(&id) {
            return Ok((Some(Chunk(id, *n)), 0));
        }
        if let Some(n) = stored_here.lock().expect("chunk set").get(&id) {
            return Ok((Some(Chunk(id, *n)), 0));
        }
        let sealed = seal(data, sink.compression, sink.key, sink.escrow)?;
        let key = chunk_key(sink.kind, &id);
        let chunk = Chunk(id.clone(), sealed.len() as u64);
        match sink.store.put_new(&key, &sealed, &Vec::new()) {
            Ok(_) => {
                stored_here.lock().expect("chunk set").insert(id, chunk.1);
                crate::failpoint::hit("chunk-stored");
                let n = chunk.1;
                Ok((Some(chunk), n))
            }
            Err(e) if crate::store::is_already_exists(&e) => {
                let what = format!("chunk {i} of {name}");
                let Some(found) = adopt(sink, &source, &key, id, data, &what)? else {
                    return Err(e.context(format!("chunk {key} vanished while stored")));
                };
                adopted.lock().expect("adopted chunks").push(i);
                Ok((Some(found), 0))
            }
            Err(e) => Err(e.context(format!("failed to store chunk {i} of {name} as {key}"))),
        }
    };

    // One thread reads the file in order, another digests it (SHA-256 is
    // serial, and on an unchanged file it is the longest stage); workers name,
    // seal and upload chunks; results come back by index.
    let workers = sink.store.parallelism().clamp(1, 64);
    let stop = AtomicBool::new(false);
    let pool = Pool::default();
    let (job_tx, job_rx) = mpsc::sync_channel::<(usize, Arc<Plain>)>(2);
    let job_rx = Mutex::new(job_rx);
    let (res_tx, res_rx) = mpsc::channel::<(usize, Result<(Option<Chunk>, u64)>)>();
    let (sum_tx, sum_rx) = mpsc::sync_channel::<Arc<Plain>>(DIGEST_AHEAD);
    let mut bytes = 0u64;
    // Around the page cache where that pays (see `direct::reader`), in reads of
    // whole blocks: chunk offsets must be multiples of them.
    let direct = crate::direct::reader(path, &file, size)
        .filter(|_| chunk_size.is_multiple_of(crate::direct::ALIGN as u64));
    let len_of = |i: usize| size.saturating_sub(i as u64 * chunk_size).min(chunk_size);
    let whole = |got: usize, want: u64| -> std::io::Result<()> {
        match got as u64 == want {
            true => Ok(()),
            false => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    };
    let (read_result, digest) = std::thread::scope(|s| {
        for _ in 0..workers {
            let res_tx = res_tx.clone();
            let (job_rx, stop, store_one) = (&job_rx, &stop, &store_one);
            named(s, "chunk", move || loop {
                let job = job_rx.lock().expect("chunk queue").recv();
                let Ok((i, data)) = job else { return };
                let r = crate::interrupt::check()
                    .map_err(anyhow::Error::from)
                    .and_then(|()| store_one(i, &data));
                if r.is_err() {
                    stop.store(true, Ordering::SeqCst);
                }
                if res_tx.send((i, r)).is_err() {
                    return;
                }
            });
        }
        drop(res_tx);
        let summer = named(s, "sha256", move || {
            let mut digest = Sha256::new();
            for data in sum_rx {
                digest.update(&data[..]);
            }
            digest
        });
        // A direct read waits for the disk: two in flight, each reader taking
        // every other chunk, handed on in order.
        let mut lanes = Vec::new();
        if let Some(d) = &direct {
            for lane in 0..DIRECT_READERS {
                let (tx, rx) = mpsc::sync_channel::<std::io::Result<(Vec<u8>, usize)>>(1);
                lanes.push(rx);
                let (pool, stop, len_of, whole) = (&pool, &stop, &len_of, &whole);
                named(s, "read", move || {
                    for i in (lane..n).step_by(DIRECT_READERS) {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let want = len_of(i);
                        let mut data = pool.filled(crate::direct::span(want as usize));
                        let at = i as u64 * chunk_size;
                        let read = crate::direct::read(d, at, want as usize, &mut data)
                            .and_then(|(off, got)| whole(got, want).map(|()| (data, off)));
                        let failed = read.is_err();
                        if tx.send(read).is_err() || failed {
                            return;
                        }
                    }
                });
            }
        }
        let result = (|| -> Result<()> {
            for i in 0..n {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let want = len_of(i);
                let mut buffered = || -> std::io::Result<(Vec<u8>, usize)> {
                    // Into spare capacity: no zero-filling a buffer about to
                    // be overwritten.
                    let mut data = pool.take(want as usize);
                    let got = (&mut file).take(want).read_to_end(&mut data)?;
                    whole(got, want).map(|()| (data, 0))
                };
                let read = match lanes.get(i % DIRECT_READERS) {
                    None => buffered(),
                    Some(lane) => match lane.recv() {
                        Ok(read) => read,
                        // It stopped for a chunk that failed: that error is
                        // the one to report.
                        Err(_) => break,
                    },
                };
                let (data, off) = match read {
                    // Refused after all: through the page cache, from the start.
                    Err(e) if i == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                        lanes.clear();
                        buffered()
                    }
                    r => r,
                }
                .map_err(|e| read_failed(e, path, i as u64 * chunk_size))?;
                crate::interrupt::check()?;
                if i % TRIM_EVERY == TRIM_EVERY - 1 {
                    trim_heap();
                }
                let data = Arc::new(Plain::pooled(data, off, want as usize, &pool));
                bytes += want;
                sink.progress.advance(want);
                if sum_tx.send(Arc::clone(&data)).is_err() || job_tx.send((i, data)).is_err() {
                    break;
                }
            }
            Ok(())
        })();
        if result.is_err() {
            // The reader threads stop too.
            stop.store(true, Ordering::SeqCst);
        }
        drop(job_tx);
        drop(sum_tx);
        let digest = summer.join().expect("the digest thread");
        (result, digest)
    });
    let mut slots: Vec<Option<(Option<Chunk>, u64)>> = vec![None; n];
    let mut failure = None;
    for (i, r) in res_rx {
        match r {
            Ok(v) => slots[i] = Some(v),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    read_result?;
    if let Some(e) = failure {
        return Err(e);
    }
    let (mut added, mut added_bytes) = (0u64, 0u64);
    let mut chunks = Vec::with_capacity(n);
    for slot in slots {
        let Some((c, stored)) = slot else {
            anyhow::bail!("a chunk of {} was not stored", path.display());
        };
        if stored > 0 {
            added += 1;
            added_bytes += stored;
        }
        chunks.push(c);
    }
    let mut rest = [0u8; 1];
    let past_end = std::os::unix::fs::FileExt::read_at(&file, &mut rest, size)
        .map_err(|e| read_failed(e, path, size))?;
    if bytes != size || past_end != 0 {
        return Err(coded(
            Code::UnsafeSource,
            format!(
                "{} changed size while it was read ({size} bytes when opened): it is not stored",
                path.display()
            ),
        ));
    }
    let entry = FileEntry {
        name: name.to_string(),
        size,
        sha256: hex(&digest.finalize()),
    };
    // Two workers storing one chunk at once: the second finds the first's.
    let stored_here = stored_here.into_inner().expect("chunk set");
    let mut adopted = adopted.into_inner().expect("adopted chunks");
    adopted.retain(|&i| {
        chunks[i]
            .as_ref()
            .is_some_and(|c| !stored_here.contains_key(&c.0))
    });
    let map = ChunkMap {
        file: name.to_string(),
        chunk_size,
        naming: naming_name,
        added,
        added_bytes,
        chunks,
        adopted,
    };
    Ok((map, entry))
}

/// A failed read of the file at `path` at byte `at`; one that ended early
/// means the file got shorter, which is no state to store.
fn read_failed(e: std::io::Error, path: &Path, at: u64) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return coded(
            Code::UnsafeSource,
            format!(
                "{} got shorter while it was read (at byte {at}): something writes to it; stop that, and run the snapshot again",
                path.display()
            ),
        );
    }
    anyhow::Error::new(e).context(format!("failed to read {} at byte {at}", path.display()))
}

/// Stores chunk `i` of `map` again from the file at `path` it was read from
/// (a shared chunk deleted while the snapshot naming it was written).
pub fn store_again(sink: &Sink, map: &ChunkMap, i: usize, path: &Path) -> Result<()> {
    let Some(c) = &map.chunks[i] else {
        return Ok(());
    };
    let mut file =
        File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    file.seek(SeekFrom::Start(i as u64 * map.chunk_size))?;
    let mut data = Vec::new();
    file.take(map.chunk_size).read_to_end(&mut data)?;
    let (naming, _) = Naming::of(sink.key, sink.escrow, sink.compression)?;
    if naming.id(&data) != c.0 {
        anyhow::bail!(
            "{} changed since chunk {i} was read: the chunk cannot be stored again",
            path.display()
        );
    }
    let key = chunk_key(sink.kind, &c.0);
    match sink.store.put_new(
        &key,
        &seal(&data, sink.compression, sink.key, sink.escrow)?,
        &Vec::new(),
    ) {
        Err(e) if !crate::store::is_already_exists(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Restores the chunked file `want` of `map` to `path` (a new file in a
/// staging directory): chunks fetched in parallel and checked each (stored
/// size, authentication, length), zero blocks left as holes, and the whole
/// file's SHA-256 compared with `want`'s before this returns: a chunk under
/// another chunk's name, or a chunk list in another order, fails there, so ids
/// are not recomputed. The digest and the writes each run on a thread of their
/// own, handed every chunk in order without a copy.
pub fn read_file(
    src: &Source,
    map: &ChunkMap,
    want: &FileEntry,
    path: &Path,
    progress: &Arc<dyn Progress>,
) -> Result<FileEntry> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    let written = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!("failed to write {}", path.display()))
    };
    let (digest, file) = rebuild(src, map, want.size, false, progress, move |pieces| {
        let mut out = crate::archive::Sparse::direct(file);
        for p in pieces {
            match p {
                Piece::Data(d) => out.write_all(&d).map_err(written)?,
                Piece::Zeros(n) => out.zeros(n).map_err(written)?,
            }
        }
        out.finish().map_err(written)
    })?;
    crate::failpoint::hit("restore-download");
    file.sync_all()
        .with_context(|| format!("failed to write {}", path.display()))?;
    as_recorded(want, digest)
}

/// Writes the chunked file `want` of `map` to `out` as [`read_file`] restores
/// it, for a reader that cannot take a write back (`bkp cat ID FILE`): each
/// chunk's id is also recomputed from its plaintext before a byte of it is
/// written, and zeros are written as zeros. The whole file's SHA-256 is
/// compared with `want`'s at the end, when `out` holds every byte: an error
/// then means that what `out` received is not to be trusted.
pub fn write_to<W: Write + Send>(
    src: &Source,
    map: &ChunkMap,
    want: &FileEntry,
    mut out: W,
    progress: &Arc<dyn Progress>,
) -> Result<FileEntry> {
    let (digest, ()) = rebuild(src, map, want.size, true, progress, move |pieces| {
        for p in pieces {
            match p {
                Piece::Data(d) => out.write_all(&d)?,
                Piece::Zeros(n) => crate::archive::zero_blocks(n, |b| out.write_all(b))?,
            }
        }
        Ok(out.flush()?)
    })?;
    as_recorded(want, digest)
}

/// A chunk's plaintext, or the length of a chunk of zeros.
#[derive(Clone)]
enum Piece<'p> {
    Data(Arc<Plain<'p>>),
    Zeros(u64),
}

/// Fetches the chunks of `map` (a file of `size` bytes) in parallel, checks
/// each (`check_id`: its id too, see [`Source::read`]) and hands them in file
/// order to `write`, on a thread of its own, while another computes their
/// SHA-256; that digest and what `write` returned.
fn rebuild<'s, W: Send>(
    src: &'s Source,
    map: &ChunkMap,
    size: u64,
    check_id: bool,
    progress: &Arc<dyn Progress>,
    write: impl FnOnce(mpsc::Receiver<Piece<'s>>) -> Result<W> + Send,
) -> Result<(Sha256, W)> {
    let workers = src.store.parallelism();
    let (sum_tx, sum_rx) = mpsc::sync_channel::<Piece>(DIGEST_AHEAD);
    let (write_tx, write_rx) = mpsc::sync_channel::<Piece>(DIGEST_AHEAD);
    std::thread::scope(|s| -> Result<(Sha256, W)> {
        let summer = named(s, "sha256", move || {
            let mut digest = Sha256::new();
            for p in sum_rx {
                match p {
                    Piece::Data(d) => digest.update(&d[..]),
                    Piece::Zeros(n) => {
                        let _ = crate::archive::zero_blocks(n, |b| {
                            digest.update(b);
                            Ok(())
                        });
                    }
                }
            }
            digest
        });
        let writer = named(s, "write", move || write(write_rx));
        // Two chunks ahead per worker: slack for a slow GET without holding
        // more plaintext than a disk-bound writer can use (four per worker
        // held 60 MiB more and restored no faster).
        let fetched = ordered(
            map.chunks.len(),
            workers,
            workers * 2,
            |i| match &map.chunks[i] {
                None => Ok(Piece::Zeros(map.len_of(i, size))),
                Some(c) => src
                    .read(c, map.len_of(i, size), check_id)
                    .map(|d| Piece::Data(Arc::new(d))),
            },
            |i, piece| {
                if sum_tx.send(piece.clone()).is_err() || write_tx.send(piece).is_err() {
                    anyhow::bail!("the file's writer stopped early");
                }
                progress.advance(map.len_of(i, size));
                Ok(())
            },
        );
        drop((sum_tx, write_tx));
        let digest = summer.join().expect("the digest thread");
        // The writer's own error says more than "stopped early".
        let written = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the file's writer panicked"))??;
        fetched?;
        Ok((digest, written))
    })
}

/// The file `want` rebuilt with SHA-256 `digest`; an integrity error unless
/// that is the SHA-256 its manifest recorded.
fn as_recorded(want: &FileEntry, digest: Sha256) -> Result<FileEntry> {
    let got = FileEntry {
        name: want.name.clone(),
        size: want.size,
        sha256: hex(&digest.finalize()),
    };
    if got.sha256 != want.sha256 {
        return Err(coded(
            Code::Integrity,
            format!(
                "{} rebuilt from its chunks has SHA-256 {}, its manifest recorded {}: every chunk checked, so the manifest and its chunks disagree; restore another backup",
                want.name, got.sha256, want.sha256
            ),
        ));
    }
    Ok(got)
}

/// Reads and checks every chunk of `map` whose key is not in `seen` (adding
/// them), in parallel; damage is collected by chunk key, other trouble (the
/// store unreachable) stops. Returns the bytes read.
pub fn check(
    src: &Source,
    map: &ChunkMap,
    size: u64,
    seen: &mut std::collections::BTreeSet<String>,
    problems: &mut Vec<(String, anyhow::Error)>,
) -> Result<u64> {
    let mut todo = Vec::new();
    for (i, c) in map.chunks.iter().enumerate() {
        if let Some(c) = c {
            if seen.insert(chunk_key(src.kind, &c.0)) {
                todo.push((i, c));
            }
        }
    }
    let workers = src.store.parallelism();
    let mut bytes = 0;
    ordered(
        todo.len(),
        workers,
        workers * 4,
        |j| {
            let (i, c) = todo[j];
            Ok(src.read(c, map.len_of(i, size), true).map(|_| c.1))
        },
        |j, r| {
            match r {
                Ok(n) => bytes += n,
                Err(e) => {
                    if !crate::exit::is_damage(&e) {
                        return Err(e);
                    }
                    problems.push((chunk_key(src.kind, &todo[j].1 .0), e));
                }
            }
            Ok(())
        },
    )?;
    // A damaged chunk is reported for every backup that names it.
    for (key, _) in problems.iter() {
        seen.remove(key);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::progress::Silent;
    use crate::store::memory::MemoryStore;

    const CS: u64 = crate::manifest::chunks::MIN_CHUNK;
    const ZSTD: Compression = Compression::Zstd {
        level: 3,
        threads: 1,
    };

    fn key() -> MasterKey {
        MasterKey::from_bytes([9u8; 32])
    }

    /// Chunks: 0 random, 1 zeros, 2 random, 3 a copy of 0, 4 a short tail.
    fn file(dir: &Path, seed: u8) -> std::path::PathBuf {
        let mut data = Vec::new();
        let mut x = u32::from(seed) + 1;
        let mut noise = |n: u64| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect()
        };
        let first = noise(CS);
        data.extend(&first);
        data.extend(vec![0u8; CS as usize]);
        data.extend(noise(CS));
        data.extend(&first);
        data.extend(noise(1000));
        let p = dir.join(format!("f{seed}"));
        std::fs::write(&p, &data).unwrap();
        p
    }

    fn sink<'a>(store: &'a MemoryStore, c: Compression, k: Option<&'a MasterKey>) -> Sink<'a> {
        Sink {
            store,
            kind: Kind::Tigerbeetle,
            compression: c,
            key: k,
            escrow: &[],
            progress: Arc::new(Silent),
        }
    }

    fn restore(
        store: &MemoryStore,
        map: &ChunkMap,
        want: &FileEntry,
        c: Compression,
        k: Option<&Keyring>,
        out: &Path,
    ) -> Result<FileEntry> {
        let src = source(store, Kind::Tigerbeetle, c, map, k)?;
        let p: Arc<dyn Progress> = Arc::new(Silent);
        read_file(&src, map, want, out, &p)
    }

    #[test]
    fn round_trips_with_holes_repeats_and_a_short_tail_in_every_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), 1);
        let k = key();
        let ring = Keyring::new(MasterKey::from_bytes([9u8; 32]), Vec::new());
        let zstd = ZSTD;
        for (i, (c, encrypted)) in [
            (zstd, true),
            (Compression::Gzip { level: 6 }, true),
            (Compression::None, false),
            (zstd, false),
        ]
        .into_iter()
        .enumerate()
        {
            let store = MemoryStore::new();
            let chunk_key = encrypted.then(|| k.for_chunks());
            let (map, entry) = write_file(
                &sink(&store, c, chunk_key.as_ref()),
                &path,
                "f",
                CS,
                &HashMap::new(),
            )
            .unwrap();
            assert_eq!(map.chunks.len(), 5);
            assert!(map.chunks[1].is_none(), "zeros are stored as nothing");
            assert_eq!(map.chunks[0], map.chunks[3], "equal chunks, one id");
            assert_eq!(map.added, 3, "a repeated chunk is stored once");
            assert_eq!(store.list("").unwrap().len(), 3);
            assert_eq!(
                map.naming.matches(':').count() == 2,
                encrypted,
                "{}",
                map.naming
            );
            let out = dir.path().join(format!("out{i}"));
            let got = restore(&store, &map, &entry, c, encrypted.then_some(&ring), &out).unwrap();
            assert_eq!(got, entry);
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_file_out_of_the_page_cache_makes_the_same_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), 4);
        let k = key();
        let ring = Keyring::new(MasterKey::from_bytes([9u8; 32]), Vec::new());
        let chunk_key = k.for_chunks();
        let store = MemoryStore::new();
        let write = || {
            write_file(
                &sink(&store, ZSTD, Some(&chunk_key)),
                &path,
                "f",
                CS,
                &HashMap::new(),
            )
            .unwrap()
        };
        let (cached_map, cached) = write();
        if !crate::direct::evict(&path) {
            return; // The file system keeps it cached.
        }
        let (map, entry) = write();
        assert_eq!(entry, cached);
        assert_eq!(map.chunks, cached_map.chunks);
        let out = dir.path().join("out");
        let got = restore(&store, &map, &entry, ZSTD, Some(&ring), &out).unwrap();
        assert_eq!(got, entry);
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
    }

    #[test]
    fn a_second_write_uploads_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), 2);
        let store = MemoryStore::new();
        let k = key().for_chunks();
        let zstd = ZSTD;
        let s = sink(&store, zstd, Some(&k));
        let (first, _) = write_file(&s, &path, "f", CS, &HashMap::new()).unwrap();
        let known: HashMap<String, u64> = first
            .chunks
            .iter()
            .flatten()
            .map(|c| (c.0.clone(), c.1))
            .collect();
        // Change one byte of chunk 2.
        let mut data = std::fs::read(&path).unwrap();
        data[2 * CS as usize + 10] ^= 1;
        std::fs::write(&path, &data).unwrap();
        let (second, entry) = write_file(&s, &path, "f", CS, &known).unwrap();
        assert_eq!((second.added, store.list("").unwrap().len()), (1, 4));
        assert_eq!(second.chunks[0], first.chunks[0]);
        assert_ne!(second.chunks[2], first.chunks[2]);
        // Unchanged but not known (as after an interrupted run): found in the
        // store, read back, named without being stored again.
        let (third, _) = write_file(&s, &path, "f", CS, &HashMap::new()).unwrap();
        assert_eq!(
            (third.added, third.chunks.clone()),
            (0, second.chunks.clone())
        );
        let ring = Keyring::new(key(), Vec::new());
        let out = dir.path().join("out");
        restore(&store, &second, &entry, zstd, Some(&ring), &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
    }

    #[test]
    fn a_moved_damaged_missing_or_planted_chunk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), 3);
        let k = key().for_chunks();
        let ring = Keyring::new(key(), Vec::new());
        let zstd = ZSTD;
        let fresh = || {
            let store = MemoryStore::new();
            let (map, entry) = write_file(
                &sink(&store, zstd, Some(&k)),
                &path,
                "f",
                CS,
                &HashMap::new(),
            )
            .unwrap();
            (store, map, entry)
        };
        let key_of = |map: &ChunkMap, i: usize| {
            chunk_key(Kind::Tigerbeetle, &map.chunks[i].as_ref().unwrap().0)
        };
        let put = |store: &MemoryStore, key: &str, bytes: &[u8]| {
            store.delete(key).unwrap();
            store.put_new(key, bytes, &Vec::new()).unwrap();
        };
        type Spoil<'a> = Box<dyn Fn(&MemoryStore, &mut ChunkMap) + 'a>;
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "moved",
                Box::new(|st: &MemoryStore, m: &mut ChunkMap| {
                    // Chunk 2's object under chunk 0's name, its size recorded.
                    let other = st.get(&key_of(m, 2)).unwrap();
                    put(st, &key_of(m, 0), &other);
                    m.chunks[0].as_mut().unwrap().1 = other.len() as u64;
                }),
            ),
            (
                "damaged",
                Box::new(|st: &MemoryStore, m: &mut ChunkMap| {
                    let mut b = st.get(&key_of(m, 2)).unwrap();
                    let n = b.len();
                    b[n / 2] ^= 0x20;
                    put(st, &key_of(m, 2), &b);
                }),
            ),
            (
                "missing",
                Box::new(|st: &MemoryStore, m: &mut ChunkMap| {
                    st.delete(&key_of(m, 4)).unwrap();
                }),
            ),
            (
                "longer",
                Box::new(|st: &MemoryStore, m: &mut ChunkMap| {
                    let mut b = st.get(&key_of(m, 4)).unwrap();
                    b.push(0);
                    put(st, &key_of(m, 4), &b);
                }),
            ),
        ];
        for (what, spoil) in cases {
            let (store, mut map, entry) = fresh();
            spoil(&store, &mut map);
            let out = dir.path().join(format!("out-{what}"));
            let err = restore(&store, &map, &entry, zstd, Some(&ring), &out).unwrap_err();
            assert_eq!(
                crate::exit::classify(&err),
                Some(Code::Integrity),
                "{what}: {err:#}"
            );
            // A whole chunk under another's name passes its own checks; the
            // file's SHA-256 refuses it. `verify` recomputes ids.
            let named = if what == "moved" {
                "SHA-256"
            } else {
                "tigerbeetle/chunks/"
            };
            assert!(format!("{err:#}").contains(named), "{what}: {err:#}");
            // verify names the same chunk, once per run.
            let src = source(&store, Kind::Tigerbeetle, zstd, &map, Some(&ring)).unwrap();
            let (mut seen, mut problems) = (std::collections::BTreeSet::new(), Vec::new());
            check(&src, &map, entry.size, &mut seen, &mut problems).unwrap();
            assert_eq!(problems.len(), 1, "{what}");
        }
        // A planted object at a new chunk's key is read back and refused.
        let store = MemoryStore::new();
        let (_, map, _) = fresh();
        store
            .put_new(&key_of(&map, 2), b"planted", &Vec::new())
            .unwrap();
        let err = write_file(
            &sink(&store, zstd, Some(&k)),
            &path,
            "f",
            CS,
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("does not hold chunk 2"),
            "{err:#}"
        );
    }

    #[test]
    fn a_manifest_naming_another_whole_chunk_fails_the_file_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), 4);
        let k = key().for_chunks();
        let ring = Keyring::new(key(), Vec::new());
        let zstd = ZSTD;
        let store = MemoryStore::new();
        let (mut map, entry) = write_file(
            &sink(&store, zstd, Some(&k)),
            &path,
            "f",
            CS,
            &HashMap::new(),
        )
        .unwrap();
        map.chunks.swap(0, 2);
        let out = dir.path().join("out");
        let err = restore(&store, &map, &entry, zstd, Some(&ring), &out).unwrap_err();
        assert_eq!(
            crate::exit::classify(&err),
            Some(Code::Integrity),
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("SHA-256"), "{err:#}");
    }

    #[test]
    fn ids_are_keyed_and_differ_per_key_and_compression() {
        let zstd = ZSTD;
        let k = key().for_chunks();
        let (a, name) = Naming::of(Some(&k), &[], zstd).unwrap();
        assert_eq!(name, format!("blake3:zstd:{}", k.id()));
        let other = MasterKey::from_bytes([8u8; 32]).for_chunks();
        let b = Naming::of(Some(&other), &[], zstd).unwrap().0;
        let gz = Naming::of(Some(&k), &[], Compression::Gzip { level: 6 })
            .unwrap()
            .0;
        let (plain, plain_name) = Naming::of(None, &[], zstd).unwrap();
        assert_eq!(plain_name, "blake3:zstd");
        let ids = [a.id(b"x"), b.id(b"x"), gz.id(b"x"), plain.id(b"x")];
        for i in 0..ids.len() {
            for j in 0..i {
                assert_ne!(ids[i], ids[j], "{i} {j}");
            }
        }
        assert_eq!(
            a.id(b"x"),
            Naming::of(Some(&k), &[], zstd).unwrap().0.id(b"x")
        );
        // A passphrase names chunks by the raw key derived from it.
        let p = MasterKey::from_passphrase("correct horse".into(), None).unwrap();
        assert!(p.chunk_id_key().is_none());
        assert!(p.for_chunks().chunk_id_key().is_some());
    }

    /// A manifest may record any count of chunks: reading its list reserves
    /// nothing from that count.
    #[test]
    fn a_chunk_list_is_read_within_what_its_count_can_take() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), 4);
        let store = MemoryStore::new();
        let (map, entry) =
            write_file(&sink(&store, ZSTD, None), &path, "f", CS, &HashMap::new()).unwrap();
        let at = time::OffsetDateTime::now_utc();
        let mut m = crate::manifest::tests::sample(Kind::Tigerbeetle, at);
        m.files = vec![entry];
        let key = format!("tigerbeetle/{}.chunks.json.zst", m.id);
        m.chunks = Some(Box::new(
            store_list(&store, Kind::Tigerbeetle, m.id, &key, &map).unwrap(),
        ));
        assert_eq!(load(&store, &m).unwrap().unwrap().chunks, map.chunks);

        // A count no file has (admitting the manifest refuses it; the list
        // is read within its own bytes all the same): nothing is reserved
        // from it.
        let mut huge = m.clone();
        huge.chunks.as_mut().unwrap().count = u64::MAX / 1000;
        assert_eq!(load(&store, &huge).unwrap().unwrap().chunks, map.chunks);
    }
}
