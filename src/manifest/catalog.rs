//! The catalog: every manifest of a kind gathered in a few objects, so that a run
//! reads the store's history in a handful of requests however long it grows.
//!
//! Manifests stay the truth; the catalog is a cache of them that any run may
//! write and that no run trusts over them:
//!
//! - Objects `catalog/{kind}/{seq:020}.json.zst`, each created create-only one
//!   number above the newest listed: of two runs writing the same number one
//!   wins and the other leaves it (the manifests it would have added are found
//!   by the next reader). A *base* holds every manifest of the kind; a *delta*
//!   the changes since its base (manifests added, ids removed), so a run writes
//!   little; once a delta has grown to [`REBASE`] changes a new base is written.
//!   Superseded objects are deleted by a later writer: at once where each
//!   delete is a request of its own, else in one request by the next run that
//!   stores a backup, so that a run which stored nothing (an idle `logs` run)
//!   stays at its few requests.
//! - A reader takes the newest object that verifies (and its base), then lists
//!   the manifests whose ids are younger than that object's time minus
//!   [`WINDOW`] (one request on S3, with `start-after`): those it lacks are
//!   read and added, those it holds but the listing lacks were deleted and are
//!   dropped. A run that started more than [`WINDOW`] before a catalog was
//!   written and stored its manifest after it would be missed by that listing;
//!   `cleanup` and `verify` list every manifest key ([`Depth::Complete`]) and
//!   heal the catalog of it, and of manifests deleted outside bkp. A fold of
//!   that depth (`verify`) lists before reading the catalog, so that each entry the listing shows as it
//!   was cached is handed out as the catalog is parsed, and list the window
//!   again after it, for what was stored meanwhile.
//! - An object's time is when the manifests were last listed: a write that
//!   only adds a run's own manifest ([`note`]) carries it forward, and a time
//!   ahead of the reader's clock counts as now.
//! - The bucket is untrusted: an object carries a tag over its bytes (the
//!   key's HMAC or the host's signature, as a seal), names its kind and number,
//!   and keeps for each manifest which key or signer sealed it, so that a
//!   reader applies to an entry exactly the trust it applies to the manifest
//!   read from its own key ([`super::admit`], and [`seal::sealer_known`]: an
//!   entry whose signer was removed is read again, and refused). An object
//!   that does not verify is passed over with a warning (the next lower one,
//!   or the manifests themselves, are read).
//! - A base is written as its entries come, in order of id, into a file of
//!   its own ([`base`]): a first read hands out each manifest as it reads it
//!   into the first base, and a new base is merged from the old one as that
//!   is parsed, so years of manifests are never held.
//! - Manifests that could not be read are not cached; their keys are, and every
//!   reader reads them again, so damage keeps being reported. A store that did
//!   not answer leaves the catalog as it was.
//! - A restore reads the manifests it uses again from their own keys
//!   ([`reread`]), so a stale catalog can make a restore fail, never restore
//!   something other than what the store holds.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::{
    admit, manifest_key, parse_with_sealer, seal, Kind, Manifest, Trust, Unreadable, CATALOG_DIR,
    SCHEMA_MINOR,
};
use crate::crypto::Keyring;
use crate::exit::{classify, coded, Code};
use crate::id::BackupId;
use crate::store::{is_already_exists, ObjectInfo, Store, Version};

mod base;
mod doc;
mod entries;
mod ids;
mod listing;
mod pass;
use entries::Entries;
use ids::Ids;
use listing::Listing;
use pass::Pass;
pub use pass::Sink;

/// Version 2 since catalogs may hold chunked manifests (schema 2.x): a bkp
/// that knows only version 1 passes such a catalog over and reads the
/// manifests themselves, which it refuses, instead of taking their entries
/// without the chunks they need. Version 1 is still read: an entry of it
/// that lost a chunked manifest's chunks is read again from its key
/// ([`read`]).
const SCHEMA: &str = "bkp.catalog/2";
const SCHEMA_V1: &str = "bkp.catalog/1";
/// The first bytes of a catalog object, before its tag and a newline.
const MAGIC: &str = "bkp.catalog/2 ";
const MAGIC_V1: &str = "bkp.catalog/1 ";
/// How far before a catalog's time a reader looks for manifests it lacks.
pub const WINDOW: Duration = Duration::days(2);
/// Changes a delta may carry before a new base is written instead.
pub const REBASE: usize = 512;
/// Catalog objects tried, newest first, before reading the manifests instead.
const MAX_READS: usize = 3;
/// A catalog inflates to at most this (a year of 15-minute logs is ~50 MiB).
const MAX_INFLATED: u64 = 2 << 30;
/// A stored catalog object is at most this (a year of 15-minute logs is
/// ~1.3 MiB): a larger one is not read into memory. (Smaller in unit tests,
/// which plant one.)
const MAX_STORED: u64 = if cfg!(test) { 1 << 20 } else { 256 << 20 };
/// The longest header line a catalog object may have.
const MAX_HEADER: usize = 1024;
/// A catalog object larger than this is parsed from a file once its tag is
/// checked, not from memory (see [`Checked`]).
const SPOOL_OVER: usize = if cfg!(test) { 4 << 10 } else { 4 << 20 };
/// Superseded catalog objects a write tries to delete, oldest first, where a
/// delete is a request of its own: under Object Lock they cannot be deleted
/// until their retention ends, and a write must not try every one of them
/// each time.
const MAX_DELETES: usize = 4;
/// Superseded objects a run that stored nothing leaves for a later run, where
/// the store deletes many in one request: an idle `logs` run every 15
/// minutes stays at its few requests, and the next run that stores a backup
/// (or the one that finds this many) deletes them all at once.
const TIDY_BACKLOG: usize = 64;

/// How much of the store a read lists to check the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The manifests younger than the catalog's time minus [`WINDOW`].
    Recent,
    /// Every manifest key (no manifest is read unless the catalog lacks it).
    Complete,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// Not boxed: a state's entries are one vector.
    manifest: Manifest,
    /// Whether the manifest carried a seal that verified when it was read.
    sealed: bool,
    /// Who sealed it (`hmac:{key id}` or `ed25519:{signer id}`): an entry is
    /// used only while that key or signer is still configured, so removing a
    /// stolen host's signer removes what it sealed from every catalog too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealer: Option<super::Shared>,
    /// The manifest object as a listing showed it: one listed otherwise later
    /// was rewritten, and is read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stored: Option<Stored>,
}

impl Entry {
    /// `manifest` as sealed by `sealer` (`None`: unsealed).
    fn new(manifest: Manifest, sealer: Option<String>, stored: Option<Stored>) -> Entry {
        Entry {
            manifest,
            sealed: sealer.is_some(),
            sealer: sealer.map(Into::into),
            stored,
        }
    }
}

/// A manifest object's size, time (Unix milliseconds) and entity tag, as a
/// listing shows it (or, for a run's own manifest, as its write answered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    size: u64,
    modified: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
}

impl Stored {
    fn of(o: &crate::store::ObjectInfo) -> Stored {
        Stored {
            size: o.size,
            modified: o
                .modified
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64),
            etag: o.etag.clone(),
        }
    }

    fn version(&self) -> Version<'_> {
        Version {
            size: self.size,
            modified: self.modified.map(|ms| i128::from(ms) * 1_000_000),
            etag: self.etag.as_deref(),
        }
    }

    /// Whether `listed` is certainly the object this was taken of (both in
    /// milliseconds, as [`Stored::of`] takes them). An entry whose object
    /// cannot be told apart from a same-size rewrite (no tag, no time) is
    /// not: it is read again.
    fn is(&self, listed: &Stored) -> bool {
        self.version().same_as(&listed.version())
    }
}

/// A catalog object's document; `E` is [`Entry`], or `&Entry` where one is
/// written from a state without copying its entries.
/// Read by [`doc::DocSeed`], as bkp writes it.
#[derive(Debug, Serialize)]
struct Doc<E = Entry> {
    schema: String,
    kind: Kind,
    seq: u64,
    /// The base a delta applies to; `None` for a base.
    #[serde(default)]
    base: Option<u64>,
    /// When the manifests were last listed to check the catalog (a write
    /// that only adds a run's own manifest carries this forward).
    #[serde(with = "time::serde::rfc3339")]
    written_at: OffsetDateTime,
    /// The manifest schema minor version its writer understood: entries of a
    /// newer minor may lack members that writer did not know, and a bkp that
    /// knows them reads those manifests again.
    #[serde(default)]
    understands: u32,
    /// A base: every manifest; a delta: those added since its base.
    #[serde(default)]
    entries: Vec<E>,
    /// A delta: the manifests of its base deleted since.
    #[serde(default)]
    removed: Vec<BackupId>,
    /// Keys of manifests that could not be read: read again by every reader.
    #[serde(default)]
    damaged: Vec<String>,
}

/// A kind's catalog, as read or written by this process.
#[derive(Debug, Clone, Default)]
struct State {
    /// The newest catalog object used (0: none).
    seq: u64,
    /// The highest number listed, valid or not: the next write goes above it.
    top: u64,
    /// The base of `seq` (itself when it is a base).
    base_seq: u64,
    written_at: Option<OffsetDateTime>,
    base_ids: Ids,
    /// The base as its listing showed it, and who tagged it, to read it
    /// again ([`fill`]).
    base_source: Option<(ObjectInfo, Tagger)>,
    entries: Entries,
    /// Set once [`read`] handed the entries to its caller (a year of
    /// manifests is held once, not twice): every id the catalog holds, while
    /// `entries` keeps only those a delta carries (not in the base, or
    /// dirty). A write of a new base reads the others from the base again.
    /// (A first read whose base could not be stored holds ids and no
    /// entries, and no base: only the next reader writes one.)
    handed: Option<Ids>,
    damaged: BTreeSet<String>,
    /// Catalog objects listed (number, key).
    objects: Vec<(u64, String)>,
    /// Entries of base ids that differ from the base: a delta carries them.
    dirty: BTreeSet<BackupId>,
    /// Entries to read again from their manifests (cached by a bkp that
    /// understood less of their schema than this one).
    recheck: BTreeSet<BackupId>,
    /// Part of it was tagged by another host's signer ([`Tagger::Signer`]),
    /// who vouches only for what it sealed itself: the entries it does not
    /// vouch for were left out, and its time is its word, so a read lists
    /// every manifest key (and reads those left out again) before anything
    /// is written.
    unchecked: bool,
}

impl State {
    /// Whether the catalog holds manifest `id`.
    fn holds(&self, id: &BackupId) -> bool {
        match &self.handed {
            Some(ids) => ids.contains(id),
            None => self.entries.contains_key(id),
        }
    }

    /// Adds `e`, or replaces the entry of its id: a delta carries it.
    fn put(&mut self, e: Entry) {
        let id = e.manifest.id;
        self.dirty.insert(id);
        if let Some(ids) = &mut self.handed {
            ids.insert(id);
        }
        self.entries.insert(e);
    }

    /// Forgets manifest `id`.
    fn forget(&mut self, id: &BackupId) {
        self.entries.remove(id);
        if let Some(ids) = &mut self.handed {
            ids.remove(id);
        }
    }

    /// Hands the entries this run's trust admits to `sink`, newest first (the
    /// others go to `bad`), keeping only what a delta carries.
    /// `ids`: those a read handed out already, as it parsed the base.
    fn hand_out(
        &mut self,
        trust: &Trust,
        bad: &mut Vec<Unreadable>,
        mut ids: Ids,
        sink: &mut Sink,
    ) {
        let mut entries = std::mem::take(&mut self.entries).into_vec();
        let mut carried = Vec::new();
        // Added to `ids` in order of id once all are handed out: a set built
        // in order holds them in a vector.
        let mut popped = Vec::with_capacity(entries.len());
        // Newest first, the vector given back as it empties (a few thousand
        // entries at a time): the entries held (every one, where the whole
        // store was listed) are not held beside the caller's list of them.
        while let Some(e) = entries.pop() {
            if entries.capacity() - entries.len() >= 4096 {
                entries.shrink_to_fit();
            }
            let id = e.manifest.id;
            popped.push(id);
            if !self.base_ids.contains(&id) || self.dirty.contains(&id) {
                carried.push(e.clone());
            }
            hand(trust, e, bad, sink);
        }
        ids.extend(popped.into_iter().rev());
        // In order of id, as the entries were.
        self.entries = Entries::default();
        self.entries.upsert_many(carried);
        self.handed = Some(ids);
        warn_junk(bad);
    }
}

/// Who tagged a catalog object, and so which of its entries are believed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tagger {
    /// No keys: nothing is checked, here or in the manifests.
    Anyone,
    /// The current key, or this host's own signing key: every entry. A holder
    /// of the key can seal any manifest itself, and a catalog it writes
    /// carries only entries it believed or verified.
    Trusted,
    /// Another host's signer (`ed25519:{id}`): only the entries that signer
    /// sealed itself. A stolen host must not vouch for other hosts'
    /// manifests, nor for its own picture of the store.
    Signer(String),
}

impl Tagger {
    /// Whether entry `e` of a catalog of `kind` is believed: never one of
    /// another kind (a restore of this kind would be handed it), else as
    /// the tagger decides.
    fn vouches_for(&self, kind: Kind, e: &Entry) -> bool {
        if e.manifest.kind != kind {
            return false;
        }
        match self {
            Tagger::Anyone | Tagger::Trusted => true,
            Tagger::Signer(s) => e.sealer.as_deref() == Some(s.as_str()),
        }
    }

    /// Who tagged `payload` with `tag`, when that is a key that seals now
    /// (the current key or a trusted signer; see [`seal::tag_verifies_now`]).
    fn of(keys: Option<&Keyring>, payload: &[u8], tag: &str) -> Option<Tagger> {
        let Some(keys) = keys else {
            return seal::tag_verifies_now(None, payload, tag).then_some(Tagger::Anyone);
        };
        let raw = hex::decode(tag).ok()?;
        if seal::tag_verifies_by_current_key(keys, payload, &raw) {
            return Some(Tagger::Trusted);
        }
        let signer = &keys
            .signers()
            .iter()
            .find(|s| s.verifier.verify(payload, &raw))?
            .verifier;
        if keys.signing().is_some_and(|own| own.id() == signer.id) {
            return Some(Tagger::Trusted);
        }
        Some(Tagger::Signer(format!("ed25519:{}", signer.id)))
    }
}

/// The minor version of a manifest's schema (`bkp.manifest/1.3` → 3).
fn minor_of(m: &Manifest) -> u32 {
    m.schema
        .rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// What this process last read or wrote of each store's catalogs, so that a
/// run adding its own manifest does not read the catalog a second time.
static CACHE: Mutex<Vec<(StoreRef, Kind, State)>> = Mutex::new(Vec::new());

/// A store as this process knows it (its identity and where it lives), and
/// the keys that decided which entries of its catalogs are believed
/// ([`Tagger::of`]): a catalog read under other keys is not reused.
type StoreRef = (String, usize, Vec<u8>);

fn whose(store: &dyn Store, keys: Option<&Keyring>) -> StoreRef {
    let mut mark = Vec::new();
    if let Some(k) = keys {
        if let Some(seal) = k.current().seal_key() {
            mark.extend_from_slice(ring::hmac::sign(seal, b"bkp catalog cache").as_ref());
        }
        mark.extend_from_slice(k.current().id().as_bytes());
        for s in k.signers() {
            mark.push(0);
            mark.extend_from_slice(s.verifier.id.as_bytes());
        }
        if let Some(own) = k.signing() {
            mark.push(1);
            mark.extend_from_slice(own.id().as_bytes());
        }
    }
    (
        store.identity(),
        store as *const dyn Store as *const () as usize,
        mark,
    )
}

/// Takes the kind's catalog out of the cache (a year of manifests is tens of
/// MiB: it is moved, not copied); whoever took it remembers it again.
fn cached(store: &dyn Store, keys: Option<&Keyring>, kind: Kind) -> Option<State> {
    let id = whose(store, keys);
    let mut cache = CACHE.lock().ok()?;
    let at = cache.iter().position(|(s, k, _)| *s == id && *k == kind)?;
    Some(cache.swap_remove(at).2)
}

fn remember(store: &dyn Store, keys: Option<&Keyring>, kind: Kind, state: State) {
    let id = whose(store, keys);
    if let Ok(mut cache) = CACHE.lock() {
        cache.retain(|(s, k, _)| !(s.0 == id.0 && s.1 == id.1 && *k == kind));
        cache.push((id, kind, state));
    }
}

/// Forgets what this process read of every catalog: a run that will not
/// add to them need not hold the ids of years of history (and tests read a
/// store as a new run would).
pub(crate) fn forget_cached() {
    if let Ok(mut c) = CACHE.lock() {
        c.clear();
    }
}

fn prefix(kind: Kind) -> String {
    format!("{CATALOG_DIR}/{}/", kind.as_str())
}

fn object_key(kind: Kind, seq: u64) -> String {
    format!("{}{seq:020}.json.zst", prefix(kind))
}

fn seq_of(kind: Kind, key: &str) -> Option<u64> {
    let name = key.strip_prefix(&prefix(kind))?.strip_suffix(".json.zst")?;
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// A catalog object whose tag does not verify under this host's keys.
#[derive(Debug)]
struct Unverified(String);

impl std::fmt::Display for Unverified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "catalog {} is not used: its tag does not verify under the current key or a trusted signer (altered, damaged, written by someone without them, or before a key rotation); the manifests are read instead",
            self.0
        )
    }
}

impl std::error::Error for Unverified {}

fn damaged_error(key: &str, detail: &str) -> anyhow::Error {
    coded(
        Code::Integrity,
        format!("catalog {key} is not used: {detail}; the manifests are read instead"),
    )
}

/// Where runs of a store keep copies of the catalog bases they read, by the
/// store's identity (see [`keep_bases_in`]).
static BASES: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());

/// Keeps copies of the catalog bases read from `store` in `dir` (the work
/// directory's), so that the next run reads a base from the store only when
/// it changed: a base is written once and never rewritten, and a copy is
/// used only while the listing shows the object under the same key, size and
/// entity tag, and only once its tag verifies, as the store's object must. A
/// copy that fails is read from the store again. Without entity tags (a local
/// store, where reading is cheap) nothing is kept.
pub fn keep_bases_in(store: &dyn Store, dir: PathBuf) {
    if let Ok(mut b) = BASES.lock() {
        let id = store.identity();
        b.retain(|(s, _)| *s != id);
        b.push((id, dir));
    }
}

/// The copy of base `listed` of `kind` in `store`, and the prefix of every
/// copy of that store's and kind's bases.
fn base_copy(store: &dyn Store, kind: Kind, listed: &ObjectInfo) -> Option<(PathBuf, String)> {
    use sha2::{Digest, Sha256};
    let etag = listed.etag.as_deref()?;
    let dir = BASES
        .lock()
        .ok()?
        .iter()
        .find(|(s, _)| *s == store.identity())
        .map(|(_, d)| d.clone())?;
    let h = |s: &str| crate::stages::hash::hex(&Sha256::digest(s.as_bytes()))[..16].to_string();
    let prefix = format!("{}-{}-", h(&store.identity()), kind.as_str());
    let name = format!(
        "{prefix}{}-{}",
        h(&listed.key),
        h(&format!("{}:{etag}", listed.size))
    );
    Some((dir.join(name), prefix))
}

/// Reads and checks catalog object `listed`, number `seq` of `kind`:
/// untrusted bytes, from this host's copy when it keeps one that checks (a
/// base: see [`keep_bases_in`]), else from the store, keeping a copy of a
/// base. A base's entries go to `pass` when there is one.
fn read_object(
    store: &dyn Store,
    keys: Option<&Keyring>,
    kind: Kind,
    seq: u64,
    listed: &ObjectInfo,
    mut pass: Option<&mut Pass>,
) -> Result<(Doc, Tagger)> {
    let copy = base_copy(store, kind, listed);
    if let Some((path, _)) = &copy {
        if let Ok(file) = std::fs::File::open(path) {
            if file.metadata().is_ok_and(|m| m.len() == listed.size) {
                let what = format!("this host's copy {}", path.display());
                let read = parse_from(
                    file,
                    listed.size,
                    &what,
                    keys,
                    (kind, seq, &listed.key),
                    pass.as_deref_mut(),
                );
                if let Ok((doc, tagger, _, _)) = read {
                    return Ok((doc, tagger));
                }
                // What the copy gave so far is forgotten: the store's object is read.
                if let Some(p) = pass.as_deref_mut() {
                    p.reset();
                }
            }
            let _ = std::fs::remove_file(path);
        }
    }
    // A planted object larger than any catalog is passed over unread.
    if listed.size > MAX_STORED {
        return Err(damaged_error(
            &listed.key,
            "it is larger than any catalog bkp writes",
        ));
    }
    let what = format!("object {} in {}", listed.key, store.identity());
    let from = store.open(&listed.key)?;
    let (doc, tagger, mut checked, len) = parse_from(
        from,
        listed.size,
        &what,
        keys,
        (kind, seq, &listed.key),
        pass,
    )?;
    // Only what the listing showed (not a rewrite since) is kept.
    if let Some((path, prefix)) = copy {
        if doc.base.is_none() && len == listed.size {
            if let Ok(mut from) = checked.reader(0) {
                keep_copy(&path, &prefix, &mut from);
            }
        }
    }
    Ok((doc, tagger))
}

/// A catalog object's bytes once its tag is checked: in memory, or, for a
/// large one, in an unnamed file of this process's own, so that a base's
/// entries are not parsed beside the whole of its compressed bytes. (A
/// named file could be swapped between the check and the parse.)
/// A base being written spills its bytes into one the same way ([`base`]).
#[derive(Debug)]
enum Checked {
    Memory(Vec<u8>),
    Spooled(std::fs::File),
}

impl Checked {
    /// `bytes`, spooled when they are large and a file can be made, and a
    /// reader of them from `at`.
    fn of(bytes: Vec<u8>) -> Checked {
        if bytes.len() <= SPOOL_OVER {
            return Checked::Memory(bytes);
        }
        let spooled = tempfile::tempfile().and_then(|mut f| {
            use std::io::Write;
            f.write_all(&bytes)?;
            Ok(f)
        });
        match spooled {
            Ok(f) => Checked::Spooled(f),
            Err(_) => Checked::Memory(bytes),
        }
    }

    /// The bytes from offset `at` on.
    fn reader(&mut self, at: usize) -> std::io::Result<Box<dyn std::io::Read + '_>> {
        use std::io::{Seek, SeekFrom};
        Ok(match self {
            Checked::Memory(b) => Box::new(b.get(at..).unwrap_or_default()),
            Checked::Spooled(f) => {
                f.seek(SeekFrom::Start(at as u64))?;
                Box::new(std::io::BufReader::with_capacity(1 << 16, f))
            }
        })
    }
}

/// Stores the copy of a base at `path` (best effort), and removes the copies
/// of older bases of the same store and kind.
fn keep_copy(path: &std::path::Path, prefix: &str, from: &mut dyn std::io::Read) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!(".{}.tmp{}", prefix, std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| std::io::copy(from, &mut f));
    if written.is_err() || std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && p != path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Checks the bytes of catalog object `key` (number `seq` of `kind`) and
/// reads them; who tagged them.
fn parse_doc(
    bytes: Vec<u8>,
    keys: Option<&Keyring>,
    kind: Kind,
    seq: u64,
    key: &str,
    pass: Option<&mut Pass>,
) -> Result<(Doc, Tagger, Checked)> {
    if bytes.len() as u64 > MAX_STORED {
        return Err(damaged_error(
            key,
            "it is larger than any catalog bkp writes",
        ));
    }
    let (nl, tag) = header(&bytes, key)?;
    let payload = &bytes[nl + 1..];
    // Under the keys that seal now: a catalog a rotated-out key tagged is
    // not believed (the manifests are read, and a new catalog written).
    let Some(tagger) = Tagger::of(keys, payload, tag) else {
        return Err(anyhow::Error::new(Unverified(key.to_string())));
    };
    parse_checked(Checked::of(bytes), nl, tagger, (kind, seq, key), pass)
}

/// Where the header line of catalog object `key` ends (its payload
/// follows), and the tag it carries.
fn header<'a>(bytes: &'a [u8], key: &str) -> Result<(usize, &'a str)> {
    let nl = bytes
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or_else(|| damaged_error(key, "it has no header"))?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| damaged_error(key, "bad header"))?;
    let tag = header
        .strip_prefix(MAGIC)
        .or_else(|| header.strip_prefix(MAGIC_V1))
        .ok_or_else(|| damaged_error(key, "it is not a bkp catalog"))?;
    Ok((nl, tag))
}

/// The bytes of catalog object `key` (number `seq` of `kind`), `size` as
/// listed, read from `r` (`what` names it) and checked, then parsed: see
/// [`parse_doc`]; and how many bytes it was.
///
/// A large one (a base of years of history) is never held whole: its bytes
/// go to an unnamed file of this process's own, its tag checked as they
/// pass (by the current key, or without keys as a digest). Only a tag these
/// do not make (a trusted signer's, or none that verifies) has the bytes
/// read back whole, to be checked as a small object's are.
fn parse_from(
    r: impl Read,
    size: u64,
    what: &str,
    keys: Option<&Keyring>,
    (kind, seq, key): (Kind, u64, &str),
    pass: Option<&mut Pass>,
) -> Result<(Doc, Tagger, Checked, u64)> {
    use std::io::{Seek, SeekFrom, Write};
    let failed =
        |e: std::io::Error| anyhow::Error::new(e).context(format!("failed to read {what}"));
    if size <= SPOOL_OVER as u64 {
        let bytes = crate::limits::read_at_most(r, MAX_STORED, what)?;
        let len = bytes.len() as u64;
        let (doc, tagger, checked) = parse_doc(bytes, keys, kind, seq, key, pass)?;
        return Ok((doc, tagger, checked, len));
    }
    let owned = what.to_string();
    let mut limited = crate::limits::AtMost::new(r, MAX_STORED, move || {
        crate::limits::too_large(&owned, MAX_STORED)
    });
    let tripped = limited.tripped();
    // Without room for a file, the bytes are held, as a small object's are.
    let mut file = tempfile::tempfile().ok();
    let mut held = Vec::new();
    let mut head = Vec::new();
    let mut stream = seal::TagStream::new(keys);
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) if tripped.is_set() => return Err(crate::limits::too_large(what, MAX_STORED)),
            Err(e) => return Err(failed(e)),
        };
        let part = &buf[..n];
        if let Some(f) = &mut file {
            if f.write_all(part).is_err() {
                // The file is full: what it took is held, and the rest.
                f.seek(SeekFrom::Start(0)).map_err(failed)?;
                f.take(len).read_to_end(&mut held).map_err(failed)?;
                if held.len() as u64 != len {
                    return Err(anyhow::anyhow!("failed to read back {what} from a file"));
                }
                file = None;
            }
        }
        if file.is_none() {
            held.extend_from_slice(part);
        }
        len += n as u64;
        // The header line is held until it ends (and checked then); what
        // follows is the payload.
        let payload = match head.last() {
            Some(b'\n') => part,
            _ => {
                let end = part.iter().position(|&b| b == b'\n').map_or(n, |i| i + 1);
                head.extend_from_slice(&part[..end]);
                if head.len() > MAX_HEADER {
                    return Err(damaged_error(key, "it has no header"));
                }
                if head.last() == Some(&b'\n') {
                    header(&head, key)?;
                }
                &part[end..]
            }
        };
        stream.update(payload);
    }
    let Some(mut file) = file else {
        let (doc, tagger, checked) = parse_doc(held, keys, kind, seq, key, pass)?;
        return Ok((doc, tagger, checked, len));
    };
    let (nl, tag) = header(&head, key)?;
    let tagger = match (stream.verifies(tag), keys) {
        (true, Some(_)) => Tagger::Trusted,
        (true, None) => Tagger::Anyone,
        // Checked on the whole payload, read back from the file: a signer's
        // tag, or one that fails. The file is what is parsed.
        (false, _) => {
            let mut payload = Vec::new();
            file.seek(SeekFrom::Start(nl as u64 + 1)).map_err(failed)?;
            file.read_to_end(&mut payload).map_err(failed)?;
            Tagger::of(keys, &payload, tag)
                .ok_or_else(|| anyhow::Error::new(Unverified(key.to_string())))?
        }
    };
    let checked = Checked::Spooled(file);
    let (doc, tagger, checked) = parse_checked(checked, nl, tagger, (kind, seq, key), pass)?;
    Ok((doc, tagger, checked, len))
}

/// Parses the payload of catalog object `key`, its tag checked (by
/// `tagger`), from offset `nl + 1` of `checked` on.
fn parse_checked(
    mut checked: Checked,
    nl: usize,
    tagger: Tagger,
    (kind, seq, key): (Kind, u64, &str),
    mut pass: Option<&mut Pass>,
) -> Result<(Doc, Tagger, Checked)> {
    // Parsed as it inflates: a year of manifests is tens of MiB of JSON, not
    // worth holding beside what it parses into.
    let from = checked
        .reader(nl + 1)
        .map_err(|e| anyhow::Error::new(e).context(format!("failed to read catalog {key}")))?;
    let inflated = zstd::stream::read::Decoder::new(from)
        .map_err(|_| damaged_error(key, "it does not decompress"))?;
    // A base's entries go to the pass as they are read, when there is one.
    let reader = std::io::BufReader::with_capacity(1 << 16, inflated.take(MAX_INFLATED));
    let mut de = serde_json::Deserializer::from_reader(reader);
    let seed = doc::DocSeed {
        pass: pass.as_deref_mut(),
        tagger: &tagger,
    };
    let doc = serde::de::DeserializeSeed::deserialize(seed, &mut de)
        .and_then(|doc| de.end().map(|()| doc))
        .map_err(|e| match pass.and_then(|p| p.failed.take()) {
            Some(detail) => damaged_error(key, &detail),
            None if e.is_io() => damaged_error(key, "it does not decompress"),
            None => damaged_error(key, "its fields do not match"),
        })?;
    drop(de);
    if !(doc.schema == SCHEMA || doc.schema == SCHEMA_V1) || doc.kind != kind || doc.seq != seq {
        return Err(damaged_error(
            key,
            "it names another schema, kind or number than its key",
        ));
    }
    Ok((doc, tagger, checked))
}

/// The newest catalog of `kind` that verifies, or an empty state (with the
/// listed objects) when there is none. Its base's entries go through `pass`,
/// which holds them or hands them out.
fn load(store: &dyn Store, keys: Option<&Keyring>, kind: Kind, pass: &mut Pass) -> Result<State> {
    let listed = store.list(&prefix(kind))?;
    let by_seq: BTreeMap<u64, &ObjectInfo> = listed
        .iter()
        .filter_map(|o| seq_of(kind, &o.key).map(|n| (n, o)))
        .collect();
    let objects: Vec<(u64, String)> = by_seq.iter().map(|(n, o)| (*n, o.key.clone())).collect();
    let top = objects.last().map_or(0, |(n, _)| *n);
    let empty = State {
        top,
        objects: objects.clone(),
        ..State::default()
    };
    for (seq, listed) in by_seq.iter().rev().take(MAX_READS) {
        let (seq, key) = (seq, &listed.key);
        let tried = |pass: &mut Pass| -> Result<State> {
            pass.prepare(*seq, None);
            let (doc, tagger) = read_object(store, keys, kind, *seq, listed, Some(&mut *pass))?;
            let (base, base_tagger, delta) = match doc.base {
                None => (doc, tagger, None),
                Some(b) if b < *seq => {
                    let gone = format!("catalog {key}: its base {b} is gone");
                    let blisted = by_seq.get(&b).ok_or_else(|| coded(Code::NotFound, gone))?;
                    pass.prepare(b, Some((&doc, &tagger)));
                    let (base, base_tagger) =
                        read_object(store, keys, kind, b, blisted, Some(&mut *pass))?;
                    if base.base.is_some() {
                        return Err(damaged_error(key, "its base is a delta"));
                    }
                    (base, base_tagger, Some((doc, tagger)))
                }
                Some(_) => return Err(damaged_error(key, "its base is not older than itself")),
            };
            // Cached by a bkp that understood less of the entry's schema than
            // this one does.
            #[allow(clippy::absurd_extreme_comparisons)]
            // SCHEMA_MINOR is 0 until the first minor bump
            let outdated = |understood: u32, e: &Entry| {
                minor_of(&e.manifest) > understood && SCHEMA_MINOR > understood
            };
            let mut st = State {
                seq: *seq,
                top,
                base_seq: base.seq,
                written_at: Some(base.written_at),
                // What the pass made of the base's entries (in order of id,
                // each once: the pass refuses a base otherwise).
                base_ids: std::mem::take(&mut pass.base_ids),
                base_source: by_seq
                    .get(&base.seq)
                    .map(|&o| (o.clone(), base_tagger.clone())),
                recheck: std::mem::take(&mut pass.recheck),
                entries: Entries::from_sorted(std::mem::take(&mut pass.held)).unwrap_or_default(),
                damaged: base.damaged.into_iter().collect(),
                objects: objects.clone(),
                unchecked: matches!(base_tagger, Tagger::Signer(_)),
                ..State::default()
            };
            if let Some((d, tagger)) = delta {
                apply_delta(&mut st, kind, d, &tagger, outdated);
            }
            // A writer's clock ahead of this one's must not stretch the
            // time the manifests count as checked.
            let now = OffsetDateTime::now_utc();
            st.written_at = st.written_at.map(|t| t.min(now));
            Ok(st)
        };
        match tried(pass) {
            Ok(st) => return Ok(st),
            // Deleted by a newer writer meanwhile, or its base was.
            Err(e) if classify(&e) == Some(Code::NotFound) => continue,
            Err(e) if classify(&e) == Some(Code::Transient) => return Err(e),
            Err(e) => {
                // A write-only host (a signer, no symmetric key) cannot verify
                // the catalogs the hosts holding the key write: expected, and
                // not worth a warning every run.
                let write_only = keys.is_some_and(|k| k.seal_keys().next().is_none());
                if !(write_only && e.is::<Unverified>()) {
                    crate::ui::log(
                        crate::ui::Priority::Warning,
                        &format!("bkp: warning: {e:#}"),
                    );
                }
                continue;
            }
        }
    }
    // What a catalog that failed part way gave is forgotten.
    pass.reset();
    Ok(empty)
}

/// Applies delta `d`, tagged by `tagger`, to the state read from its base.
/// In batches: a base of years is not shifted per change.
fn apply_delta(
    st: &mut State,
    kind: Kind,
    d: Doc,
    tagger: &Tagger,
    outdated: impl Fn(u32, &Entry) -> bool,
) {
    st.unchecked |= matches!(tagger, Tagger::Signer(_));
    let mut gone: BTreeSet<BackupId> = d.removed.iter().copied().collect();
    for id in &d.removed {
        st.recheck.remove(id);
    }
    let mut carried = BTreeMap::new();
    for e in d.entries {
        let id = e.manifest.id;
        // An entry its tagger does not vouch for is not used, nor is the
        // base's version it would replace: both are read again (the read
        // lists every key, see `unchecked`).
        if !tagger.vouches_for(kind, &e) {
            carried.remove(&id);
            gone.insert(id);
            continue;
        }
        if outdated(d.understands, &e) {
            st.recheck.insert(id);
        } else {
            st.recheck.remove(&id);
        }
        st.dirty.insert(id);
        carried.insert(id, e);
    }
    st.entries.remove_many(&gone);
    st.entries.upsert_many(carried.into_values().collect());
    st.damaged = d.damaged.into_iter().collect();
    st.written_at = Some(d.written_at);
}

/// The bytes of manifest `key`: one larger than any bkp writes is refused
/// unread when the listing (`listed`) shows it, else read to at most the cap.
fn read_listed(store: &dyn Store, key: &str, listed: Option<&Stored>) -> Result<Vec<u8>> {
    let cap = crate::limits::MANIFEST;
    if listed.is_some_and(|o| o.size > cap) {
        let what = format!("manifest {key} in {}", store.identity());
        return Err(crate::limits::too_large(&what, cap));
    }
    store.get_at_most(key, cap)
}

/// Every manifest of `kind` and those that could not be read, through the
/// catalog (see the module documentation), oldest first. Writes the catalog
/// when it was missing or lacked something (best effort: a store that refuses
/// the write is named in a warning, and the result is the same).
pub fn read(
    store: &dyn Store,
    trust: &Trust,
    kind: Kind,
    depth: Depth,
) -> Result<(Vec<Manifest>, Vec<Unreadable>)> {
    let mut good = Vec::new();
    // Every manifest is kept: none of a base is handed out early (a new base
    // would then be written from a second copy of the base, read again).
    // With no catalog yet, each is handed out as it goes into the first.
    let bad = fold_to(store, trust, kind, depth, false, &mut |m| match m {
        Some(m) => good.push(m),
        None => good.clear(),
    })?;
    // Ids are unique: no scratch space (a stable sort's is half the list).
    good.sort_unstable_by_key(|m| (m.started_at, m.id));
    Ok((good, bad))
}

/// [`read`], each manifest handed to `sink` as soon as nothing later in the
/// read can change it (most of a base's, as the base is parsed; the rest at
/// the end), so that a caller that keeps only part of what it is handed never
/// holds the whole history (see [`Sink`]). Those that could not be read.
pub fn fold(
    store: &dyn Store,
    trust: &Trust,
    kind: Kind,
    depth: Depth,
    sink: &mut Sink,
) -> Result<Vec<Unreadable>> {
    fold_to(store, trust, kind, depth, true, sink)
}

/// [`fold`]; a complete read hands out the entries its listing confirms as
/// the base is parsed where `early`.
fn fold_to(
    store: &dyn Store,
    trust: &Trust,
    kind: Kind,
    depth: Depth,
    early: bool,
    sink: &mut Sink,
) -> Result<Vec<Unreadable>> {
    let dir = super::manifest_dir(kind);
    // A complete read that hands out early lists every key first, so that
    // the base's entries are checked as it is read and handed out at once: a
    // history years long is never held whole. One that keeps every entry
    // lists after the catalog, once, as a quick read does.
    let first = match (depth, early) {
        (Depth::Complete, true) => Some(list_every(store, kind)?),
        _ => None,
    };
    let confirming = first.as_ref().map(|(l, _, again)| (l, again.as_str()));
    let mut pass = Pass::reading(kind, trust, depth, confirming, &mut *sink);
    let loaded = load(store, trust.keys(), kind, &mut pass);
    let streamed = pass.finish();
    let mut st = loaded?;
    // Keys sorting after `after` are checked against the listing: as far as
    // the base was handed out (it held every entry after it).
    let after = match first {
        Some(_) => None,
        None => streamed
            .after
            .unwrap_or_else(|| check_after(kind, depth, &st)),
    };
    let (listed, listed_at) = match first {
        // What was stored while the catalog was read: the keys of the window
        // a quick read lists, listed again (one request on S3).
        Some((mut listed, at, again)) => {
            listed.merge(list_now(store, kind, Some(&again))?.0);
            (listed, at)
        }
        None => list_now(store, kind, after.as_deref())?,
    };
    let checked = |k: &str| after.as_deref().is_none_or(|a| k > a);
    // The pass named those of the base it handed out that are read again.
    let mut again = streamed.again;
    let mut changed = st.seq == 0 || !again.is_empty() || streamed.dropped;
    changed |= prune(&mut st, trust, &mut again, &listed, checked);
    // No catalog to start from (a first read, or none verifies): every key
    // listed is read, in order, into a base written as they are read, each
    // handed out at once, so that years of them are never held.
    let mut fresh = match st.seq == 0 && st.entries.is_empty() && streamed.handed.is_empty() {
        true if again.is_empty() && st.damaged.is_empty() && !listed.is_empty() => {
            fresh_base(store, trust.keys(), kind, st.top, listed_at)
        }
        _ => None,
    };
    let to_read: Box<dyn Iterator<Item = String> + '_> = match fresh {
        Some(_) => Box::new(listed.sorted_keys()),
        None => {
            let held = |k: &str| holds_key(&st, &streamed.handed, kind, &dir, k);
            let to_read = lacking(&listed, again, &st.damaged, held, checked);
            Box::new(to_read.into_iter())
        }
    };
    let mut fresh_ids = Ids::default();
    let mut fresh_bad = Vec::new();
    let mut read_now = Vec::new();
    let found = read_keys(store, trust, to_read, &listed, &mut |e| match &mut fresh {
        Some(w) => {
            w.push(&e);
            fresh_ids.insert(e.manifest.id);
            hand(trust, e, &mut fresh_bad, sink);
        }
        None => {
            st.dirty.insert(e.manifest.id);
            read_now.push(e);
        }
    });
    st.entries.upsert_many(read_now);
    let (mut bad, damaged, answered) = (found.bad, found.damaged, found.answered);
    // A run that verified none of the manifests it read, only found new
    // damage, may hold the wrong key: what it learned is not written.
    let learned = found.verified > 0 || damaged.is_subset(&st.damaged);
    changed |= found.verified > 0 || damaged != st.damaged;
    st.damaged = damaged;
    settle(&mut st, answered, listed_at);
    // A kind with nothing stored needs no catalog.
    let empty =
        st.seq == 0 && st.entries.is_empty() && st.damaged.is_empty() && fresh_ids.is_empty();
    let write = changed && answered && !empty;
    bad.extend(streamed.bad);
    if fresh.is_some() {
        bad.extend(fresh_bad);
        warn_junk(&bad);
        st.handed = Some(fresh_ids);
        let saved = match write {
            true => save(store, trust, kind, &mut st, learned, fresh),
            false => Ok(()),
        };
        remember(store, trust.keys(), kind, st);
        return saved.map(|()| bad);
    }
    // Where the base was handed out as it was read, the state holds only
    // part of it: the rest is handed out now, and a write of a new base
    // reads the base again ([`fill`]). Else (every entry held) the state is
    // written whole first, so that handing out keeps no copy.
    let streamed_any = !streamed.handed.is_empty();
    if streamed_any {
        st.hand_out(trust, &mut bad, streamed.handed, sink);
    }
    let saved = match write {
        true => save(store, trust, kind, &mut st, learned, None),
        false => Ok(()),
    };
    if !streamed_any {
        st.hand_out(trust, &mut bad, Ids::default(), sink);
    }
    remember(store, trust.keys(), kind, st);
    saved.map(|()| bad)
}

/// The manifest keys a read reads from their keys, in order: those `listed`
/// that the catalog does not hold (`held`), those to read `again`, and the
/// `damaged` ones outside the keys the listing `checked`.
fn lacking(
    listed: &Listing,
    again: Vec<String>,
    damaged: &BTreeSet<String>,
    held: impl Fn(&str) -> bool,
    checked: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut to_read: Vec<String> = listed.keys().filter(|k| !held(k)).collect();
    to_read.extend(again);
    to_read.extend(damaged.iter().filter(|k| !checked(k) && !held(k)).cloned());
    to_read.sort();
    to_read.dedup();
    to_read
}

/// What [`read_keys`] found.
struct Found {
    bad: Vec<Unreadable>,
    /// The keys of manifests that are damaged (not deleted, nor out of reach).
    damaged: BTreeSet<String>,
    /// Whether the store answered every read.
    answered: bool,
    verified: usize,
}

/// Reads the manifests `keys` (as `listed` shows them) and hands each that
/// this run's trust admits to `each`.
fn read_keys(
    store: &dyn Store,
    trust: &Trust,
    keys: impl Iterator<Item = String>,
    listed: &Listing,
    each: &mut dyn FnMut(Entry),
) -> Found {
    let mut found = Found {
        bad: Vec::new(),
        damaged: BTreeSet::new(),
        answered: true,
        verified: 0,
    };
    for key in keys {
        let stored = listed.get(&key);
        match read_listed(store, &key, stored.as_ref())
            .and_then(|b| parse_with_sealer(&b, &key, trust))
        {
            Ok((manifest, sealer)) => {
                found.verified += 1;
                each(Entry::new(manifest, sealer, stored));
            }
            Err(e) => {
                let code = classify(&e);
                match code {
                    // Deleted since it was listed.
                    Some(Code::NotFound) => continue,
                    Some(Code::Transient) => found.answered = false,
                    _ => {
                        found.damaged.insert(key.clone());
                    }
                }
                found.bad.push(Unreadable {
                    key,
                    error: format!("{e:#}"),
                    code,
                });
            }
        }
    }
    found
}

/// A writer of the first base of `kind`, above catalog number `top`, for a
/// read that found no catalog and reads every manifest listed at
/// `listed_at`; `None` where no write would be kept (a dry run's last
/// reads), or the base cannot be begun (the write then fails as it would
/// have, once the manifests are held).
fn fresh_base<'k>(
    store: &dyn Store,
    keys: Option<&'k Keyring>,
    kind: Kind,
    top: u64,
    listed_at: OffsetDateTime,
) -> Option<base::BaseWriter<'k>> {
    if store.forgets_writes() {
        return None;
    }
    base::BaseWriter::new(keys, kind, top.checked_add(1)?, listed_at).ok()
}

/// Hands manifest `e` to `sink` when this run's trust admits it, else names
/// it in `bad`.
fn hand(trust: &Trust, e: Entry, bad: &mut Vec<Unreadable>, sink: &mut Sink) {
    match admit(&e.manifest, e.sealer.as_deref().filter(|_| e.sealed), trust) {
        Ok(()) => sink(Some(e.manifest)),
        Err(err) => bad.push(Unreadable {
            key: e.manifest.key(),
            error: format!("{err:#}"),
            code: classify(&err),
        }),
    }
}

/// Every manifest key of `kind`, taken as it is listed, and when; and the
/// key after which they are listed again once the catalog is read (what was
/// stored meanwhile: the window a quick read lists).
fn list_every(store: &dyn Store, kind: Kind) -> Result<(Listing, OffsetDateTime, String)> {
    let at = OffsetDateTime::now_utc();
    let mut listing = Listing::new(kind);
    store.list_each(&super::manifest_dir(kind), &mut |o| listing.add(o))?;
    let again = manifest_key(kind, BackupId::floor_at(at - WINDOW));
    Ok((listing.finish(), at, again))
}

/// The manifest keys of `kind` after `after` (or all), and when listed.
fn list_now(
    store: &dyn Store,
    kind: Kind,
    after: Option<&str>,
) -> Result<(Listing, OffsetDateTime)> {
    let at = OffsetDateTime::now_utc();
    let dir = super::manifest_dir(kind);
    let listing = match after {
        Some(a) => Listing::of(kind, store.list_after(&dir, a)?),
        // Every key (years of them): taken as listed, not gathered first.
        None => {
            let mut listing = Listing::new(kind);
            store.list_each(&dir, &mut |o| listing.add(o))?;
            listing.finish()
        }
    };
    Ok((listing, at))
}

/// Drops from `st` the entries read again whatever the listing says
/// ([`pass::stale`]; their keys go to `again`), and those the listing shows
/// deleted, rewritten or never listed before (a run's own manifest), of the
/// keys it `checked`: those are read again. Whether any was dropped.
fn prune(
    st: &mut State,
    trust: &Trust,
    again: &mut Vec<String>,
    listed: &Listing,
    checked: impl Fn(&str) -> bool,
) -> bool {
    let before = st.entries.len();
    let recheck = std::mem::take(&mut st.recheck);
    st.entries.retain(|id, e| {
        let stale = pass::stale(trust, e, recheck.contains(id));
        if stale {
            again.push(e.manifest.key());
        }
        !stale
    });
    st.entries.retain(|_, e| {
        let k = e.manifest.key();
        !checked(&k)
            || listed
                .get(&k)
                .is_some_and(|now| e.stored.as_ref().is_some_and(|s| s.is(&now)))
    });
    st.entries.len() != before
}

/// Whether the catalog holds an entry for manifest key `k` under `dir`: in
/// `st`, or among those of `kind` a read `handed` out (looked up by the id in
/// the key: a set of every key would be a second copy of years of them).
fn holds_key(st: &State, handed: &Ids, kind: Kind, dir: &str, k: &str) -> bool {
    let Some(id) = k
        .strip_prefix(dir)
        .and_then(|rest| rest.strip_suffix(".json"))
        .and_then(|id| id.parse::<BackupId>().ok())
    else {
        return false;
    };
    match st.entries.get(&id) {
        Some(e) => e.manifest.key() == k,
        None => handed.contains(&id) && manifest_key(kind, id) == k,
    }
}

/// The key after which [`read`] checks the manifests against the listing
/// (`None`: every key): the catalog's time minus [`WINDOW`] for a recent
/// read, unless another host's signer tagged part of the catalog (its time is
/// its word, and what it does not vouch for was left out).
fn check_after(kind: Kind, depth: Depth, st: &State) -> Option<String> {
    window_after(kind, depth, st.written_at, st.unchecked)
}

/// [`check_after`] of a catalog written at `written_at`, part of which
/// another host's signer tagged when `unchecked`.
fn window_after(
    kind: Kind,
    depth: Depth,
    written_at: Option<OffsetDateTime>,
    unchecked: bool,
) -> Option<String> {
    match (depth, written_at) {
        (Depth::Recent, Some(t)) if !unchecked => {
            Some(manifest_key(kind, BackupId::floor_at(t - WINDOW)))
        }
        _ => None,
    }
}

/// After a read of an `unchecked` state that the store `answered`: every
/// manifest key was listed at `listed_at`, and what another host's signer did
/// not vouch for read from its key, so the state is this run's own.
fn settle(st: &mut State, answered: bool, listed_at: OffsetDateTime) {
    if st.unchecked && answered {
        st.unchecked = false;
        st.written_at = Some(listed_at);
    }
}

/// Names each junk manifest among `bad` ([`Unreadable::is_junk`]) in one
/// warning line, once per run.
fn warn_junk(bad: &[Unreadable]) {
    static NAMED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    for u in bad.iter().filter(|u| u.is_junk()) {
        if NAMED.lock().is_ok_and(|mut n| n.insert(u.key.clone())) {
            crate::ui::log(
                crate::ui::Priority::Warning,
                &format!("bkp: warning: manifest {}", u.junk_line()),
            );
        }
    }
}

/// Writes the catalog `read` brought up to date, when it `learned` something
/// it could verify. Another installation's store (its marker sealed by a key
/// this config lacks) is an error, and nothing is written.
///
/// `fresh`: the base written as the manifests were read, where there was
/// none to start from ([`fresh_base`]); it is stored as it is.
fn save(
    store: &dyn Store,
    trust: &Trust,
    kind: Kind,
    st: &mut State,
    learned: bool,
    fresh: Option<base::BaseWriter>,
) -> Result<()> {
    if let Some(e) = super::marker::foreign(store, trust) {
        return Err(e);
    }
    // Nothing would read it (a dry run's, at its last reads): the next run
    // writes it.
    if learned && !store.forgets_writes() {
        let written = match fresh {
            Some(w) => write_fresh(store, kind, st, w),
            // The manifests were listed just now (from the window on, or all).
            None => write(
                store,
                trust.keys(),
                kind,
                st,
                OffsetDateTime::now_utc(),
                false,
            ),
        };
        if let Err(e) = written {
            warn_unwritten(store, kind, &e);
        }
    }
    Ok(())
}

/// Stores base `w`, written as the manifests were read into `st` (which
/// held no catalog); false where another writer took its number.
fn write_fresh(store: &dyn Store, kind: Kind, st: &mut State, w: base::BaseWriter) -> Result<bool> {
    let (seq, checked_at) = w.number();
    let Some(written) = w.store(store, &st.damaged)? else {
        return Ok(false);
    };
    based(st, seq, written);
    wrote(store, kind, st, (seq, checked_at), 0, false);
    Ok(true)
}

fn warn_unwritten(store: &dyn Store, kind: Kind, e: &anyhow::Error) {
    crate::ui::log(
        crate::ui::Priority::Warning,
        &format!(
            "bkp: warning: the {} catalog in {} could not be updated ({e:#}); runs read the manifests it lacks one by one until a run can write it",
            kind.as_str(),
            store.identity()
        ),
    );
}

/// Adds a manifest this run just stored (`stored`: as its write answered) to
/// its kind's catalog (best effort: readers find it by listing anyway). With
/// the object's tag or time the next reader knows the listed object for this
/// one and need not read it again.
pub fn note(
    store: &dyn Store,
    keys: Option<&Keyring>,
    m: &Manifest,
    stored: &crate::store::ObjectInfo,
) {
    let sealer = seal::own_sealer(keys);
    let stored = Some(Stored::of(stored));
    let light = m.is_note();
    change(store, keys, m.kind, light, |st| {
        st.put(Entry::new(m.clone(), sealer.clone(), stored.clone()));
    })
}

/// Applies `edit` to the kind's catalog and writes it, carrying forward the
/// time its manifests were last listed (nothing was listed here). A number
/// lost to another writer is tried again on that writer's catalog, a few
/// times. Best effort: a failure is a warning, readers list what is missing.
fn change(
    store: &dyn Store,
    keys: Option<&Keyring>,
    kind: Kind,
    light: bool,
    edit: impl Fn(&mut State),
) {
    // Whatever happens, the state goes back into the cache: taken out of it,
    // it would otherwise cost the next change of this run a read.
    let mut keep = None;
    let result = (|| -> Result<()> {
        let mut st = match cached(store, keys, kind) {
            Some(st) => st,
            None => load(store, keys, kind, &mut Pass::holding(kind))?,
        };
        for _ in 0..3 {
            if st.seq == 0 || st.unchecked {
                // No catalog yet, or one another host's signer wrote on: the
                // next reader builds it from the manifests, or lists them all.
                keep = Some(st);
                return Ok(());
            }
            edit(&mut st);
            let checked_at = st.written_at.unwrap_or_else(OffsetDateTime::now_utc);
            let written = write(store, keys, kind, &mut st, checked_at, light);
            if !matches!(written, Ok(false)) {
                keep = Some(st);
                return written.map(|_| ());
            }
            st = load(store, keys, kind, &mut Pass::holding(kind))?;
        }
        keep = Some(st);
        Ok(())
    })();
    if let Some(st) = keep {
        remember(store, keys, kind, st);
    }
    if let Err(e) = result {
        warn_unwritten(store, kind, &e);
    }
}

/// Writes `st` as the next catalog object (a delta on its base while that
/// stays small, else a new base) and deletes what it supersedes. Losing the
/// number to another writer is not an error: that writer's catalog stands.
fn write(
    store: &dyn Store,
    keys: Option<&Keyring>,
    kind: Kind,
    st: &mut State,
    checked_at: OffsetDateTime,
    light: bool,
) -> Result<bool> {
    let seq = next_seq(kind, st)?;
    // Changed since the base: manifests it lacks, and new versions of those
    // it holds.
    let changed = |st: &State, id: &BackupId| !st.base_ids.contains(id) || st.dirty.contains(id);
    let removed: Vec<BackupId> = st
        .base_ids
        .iter()
        .filter(|id| !st.holds(id))
        .copied()
        .collect();
    let added_n = st.entries.keys().filter(|id| changed(st, id)).count();
    let delta = st.seq != 0 && added_n + removed.len() < REBASE;
    let old_base = st.base_seq;
    if !delta {
        // Written as it is encoded, merged with the base it replaces where
        // the entries were handed out: a base of years is never held whole.
        let mut w = base::BaseWriter::new(keys, kind, seq, checked_at)?;
        match st.handed.is_some() {
            // The base the entries were read from is gone or changed:
            // another writer's catalog stands, and the caller reads it again.
            true if !fill(store, keys, kind, st, &mut w)? => return Ok(false),
            true => {}
            false => st.entries.values().for_each(|e| w.push(e)),
        }
        let Some(written) = w.store(store, &st.damaged)? else {
            return Ok(false);
        };
        based(st, seq, written);
        wrote(store, kind, st, (seq, checked_at), old_base, light);
        return Ok(true);
    }
    let doc = Doc {
        schema: SCHEMA.into(),
        kind,
        seq,
        base: Some(st.base_seq),
        written_at: checked_at,
        understands: SCHEMA_MINOR,
        entries: st
            .entries
            .values()
            .filter(|e| changed(st, &e.manifest.id))
            .collect(),
        removed,
        damaged: st.damaged.iter().cloned().collect(),
    };
    // A delta carries fewer than REBASE changes: small.
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3)
        .context("failed to compress the catalog")?;
    serde_json::to_writer(&mut z, &doc).context("failed to encode the catalog")?;
    let payload = z.finish().context("failed to compress the catalog")?;
    drop(doc);
    let tag = seal::tag(keys, &payload)?;
    let mut bytes = format!("{MAGIC}{tag}\n").into_bytes();
    bytes.extend_from_slice(&payload);
    match store.put_new(&object_key(kind, seq), &bytes, &Vec::new()) {
        Ok(_) => {}
        Err(e) if is_already_exists(&e) => return Ok(false),
        Err(e) => return Err(e),
    }
    wrote(store, kind, st, (seq, checked_at), old_base, light);
    Ok(true)
}

/// The number above every catalog object of `kind` listed.
fn next_seq(kind: Kind, st: &State) -> Result<u64> {
    st.top.checked_add(1).ok_or_else(|| {
        coded(
            Code::Integrity,
            format!(
                "the {} catalog's numbers are used up (an object numbered {} is in the store: not bkp's); delete {} to start it again",
                kind.as_str(),
                st.top,
                prefix(kind)
            ),
        )
    })
}

/// `st` once base `written`, number `seq`, is stored: it holds what that
/// base holds, every id the catalog holds (those handed out, or held).
fn based(st: &mut State, seq: u64, written: base::Written) {
    let base::Written { info, tagger } = written;
    // A base this run wrote is one the next run need not read.
    st.base_source = tagger.map(|t| (info, t));
    st.base_seq = seq;
    st.dirty.clear();
    st.base_ids = Ids::default();
    st.base_ids = match &st.handed {
        // Held by the caller of `read`: not held twice.
        Some(ids) => {
            st.entries = Entries::default();
            ids.clone()
        }
        None => st.entries.keys().copied().collect(),
    };
}

/// `st` once its catalog object `seq` is stored, its manifests checked at
/// `checked_at` (`old_base`: the base before it): what it supersedes is
/// deleted ([`tidy`]).
fn wrote(
    store: &dyn Store,
    kind: Kind,
    st: &mut State,
    (seq, checked_at): (u64, OffsetDateTime),
    old_base: u64,
    light: bool,
) {
    st.seq = seq;
    st.top = seq;
    st.written_at = Some(checked_at);
    // Keep the two before it (readers may be reading them), its base, and
    // the base those two may still apply to; the rest are superseded.
    let keep_from = seq.saturating_sub(2);
    let (due, mut kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.objects)
        .into_iter()
        .partition(|(n, _)| *n < keep_from && *n != st.base_seq && *n != old_base);
    let deleted = tidy(store, &due, light);
    kept.extend(due.into_iter().filter(|(_, k)| !deleted.contains(k)));
    kept.sort();
    kept.push((seq, object_key(kind, seq)));
    st.objects = kept;
}

/// Writes into `w` the base the entries [`read`] handed out came from,
/// merged with the entries `st` holds (a delta carries them), as the base
/// is parsed. They were in the base unchanged (changed ones stayed in
/// `entries`), and are taken as they were: only what the base's tagger
/// vouches for. False when the base is gone or is not the one they were
/// read from (a base, tagged by the same).
fn fill(
    store: &dyn Store,
    keys: Option<&Keyring>,
    kind: Kind,
    st: &State,
    w: &mut base::BaseWriter,
) -> Result<bool> {
    let Some(ids) = &st.handed else {
        return Ok(true);
    };
    let Some((listed, was)) = &st.base_source else {
        return Ok(false);
    };
    // Only those handed out come from the base (a cleanup of years of
    // history hands out a tenth of a base it read).
    let only = |id: BackupId| ids.contains(&id) && !st.entries.contains_key(&id);
    let held: Vec<&Entry> = st.entries.values().collect();
    let (mut next, mut from_base) = (0, 0);
    let read = {
        let mut feed = |e: Option<Entry>| match e {
            None => {
                w.restart();
                (next, from_base) = (0, 0);
            }
            Some(e) => {
                // Those held that come before it go first.
                while held
                    .get(next)
                    .is_some_and(|h| h.manifest.id < e.manifest.id)
                {
                    w.push(held[next]);
                    next += 1;
                }
                w.push(&e);
                from_base += 1;
            }
        };
        let mut pass = Pass::feeding(kind, &only, &mut feed);
        pass.prepare(st.base_seq, None);
        read_object(store, keys, kind, st.base_seq, listed, Some(&mut pass))
    };
    let (doc, tagger) = match read {
        Ok(read) => read,
        Err(e) if classify(&e) == Some(Code::Transient) => return Err(e),
        Err(_) => return Ok(false),
    };
    if doc.base.is_some() || tagger != *was || from_base + held.len() != ids.len() {
        return Ok(false);
    }
    held[next..].iter().for_each(|e| w.push(e));
    Ok(true)
}

/// Deletes superseded catalog objects (`due`, oldest first); the keys it
/// deleted. Where the store deletes many in one request, a `light` write (of
/// a run that stored nothing) leaves them until [`TIDY_BACKLOG`] have
/// gathered, and any other write deletes them all; elsewhere every write
/// deletes up to [`MAX_DELETES`].
fn tidy(store: &dyn Store, due: &[(u64, String)], light: bool) -> BTreeSet<String> {
    let take = if !store.deletes_in_batches() {
        MAX_DELETES
    } else if light && due.len() < TIDY_BACKLOG {
        0
    } else {
        due.len()
    };
    let keys: Vec<String> = due.iter().take(take).map(|(_, k)| k.clone()).collect();
    if keys.is_empty() {
        return BTreeSet::new();
    }
    store
        .delete_many(&keys)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// `m` as its own key holds it now; the catalog is corrected when it held
/// another version (manifests are written once, but an operator holding the
/// key can rewrite one). A manifest that cannot be read is an error.
pub fn current(store: &dyn Store, trust: &Trust, m: &Manifest) -> Result<Manifest> {
    Ok(current_as(store, trust, m.kind, m.id, |fresh| fresh == m)?.0)
}

/// [`current`] for backup `id` of `kind`, of which the caller holds only
/// enough to tell (`same`) whether the manifest is the version the catalog
/// gave it; with that answer.
fn current_as(
    store: &dyn Store,
    trust: &Trust,
    kind: Kind,
    id: BackupId,
    same: impl Fn(&Manifest) -> bool,
) -> Result<(Manifest, bool)> {
    let key = manifest_key(kind, id);
    let read = store
        .get_at_most(&key, crate::limits::MANIFEST)
        .and_then(|b| parse_with_sealer(&b, &key, trust));
    let (fresh, sealer) = match read {
        Ok(r) => r,
        Err(e) => {
            let code = classify(&e).unwrap_or(Code::Integrity);
            if code == Code::NotFound {
                // Deleted outside bkp, or by a cleanup that did not get to
                // correct the catalog: the catalog forgets it now.
                change(store, trust.keys(), kind, false, |st| {
                    st.forget(&id);
                });
            }
            return Err(coded(
                code,
                format!(
                    "backup {id} is in the catalog, but its manifest {key} cannot be read now ({e:#}); run again (`bkp verify` corrects the catalog from the manifests)"
                ),
            ));
        }
    };
    let same = same(&fresh);
    if !same {
        let entry = Entry::new(fresh.clone(), sealer, None);
        change(store, trust.keys(), fresh.kind, false, |st| {
            st.put(entry.clone());
        });
    }
    Ok((fresh, same))
}

/// `m` read again from its own key, for a restore: the catalog is never
/// trusted over the manifest itself. A manifest that is gone, cannot be read
/// or differs from what the catalog chose is an error (the catalog is
/// corrected: running again chooses from the manifests as they are).
pub fn reread(store: &dyn Store, trust: &Trust, m: &Manifest) -> Result<Manifest> {
    reread_as(store, trust, m.kind, m.id, |fresh| fresh == m)
}

/// [`reread`] for backup `id` of `kind`, of which the caller holds only
/// enough to tell (`same`) whether the manifest is the version the catalog
/// chose (a fingerprint, where it chose among hundreds of thousands).
pub fn reread_as(
    store: &dyn Store,
    trust: &Trust,
    kind: Kind,
    id: BackupId,
    same: impl Fn(&Manifest) -> bool,
) -> Result<Manifest> {
    let (fresh, same) = current_as(store, trust, kind, id, same)?;
    if !same {
        return Err(coded(
            Code::Transient,
            format!(
                "backup {id} was chosen from the catalog, but its manifest {} changed since the catalog recorded it; the catalog is corrected: run again",
                manifest_key(kind, id)
            ),
        ));
    }
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;
    use crate::store::memory::MemoryStore;

    /// The catalog as a write reads it: every entry held.
    fn load_whole(store: &dyn Store, keys: Option<&Keyring>, kind: Kind) -> Result<State> {
        load(store, keys, kind, &mut Pass::holding(kind))
    }

    /// The ids a fold of the duckdb catalog hands out, in order, read
    /// afresh (not from this process's cache); none refused.
    fn fold_fresh(store: &MemoryStore, trust: &Trust) -> Vec<BackupId> {
        CACHE.lock().unwrap().clear();
        let mut handed = Vec::new();
        let bad = fold(
            store,
            trust,
            Kind::Duckdb,
            Depth::Recent,
            &mut |m| match m {
                Some(m) => handed.push(m.id),
                None => handed.clear(),
            },
        )
        .unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        handed
    }

    fn store_manifest(store: &MemoryStore, m: &Manifest) {
        super::super::write(store, m, None).unwrap();
    }

    /// Replaces a manifest in place, as an operator holding the key could.
    fn rewrite(store: &MemoryStore, m: &Manifest) {
        store.delete(&m.key()).unwrap();
        store
            .put_new(&m.key(), &seal::encode(m, None).unwrap(), &Vec::new())
            .unwrap();
    }

    fn ids(ms: &[Manifest]) -> Vec<BackupId> {
        ms.iter().map(|m| m.id).collect()
    }

    fn catalog_objects(store: &MemoryStore) -> Vec<String> {
        store
            .list(&prefix(Kind::Duckdb))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    /// Stores `n` manifests an hour apart, the first 30 days old, in a
    /// store without a catalog (nothing to note them in); them, in order.
    fn store_hourly(store: &MemoryStore, n: i64) -> Vec<Manifest> {
        let t0 = OffsetDateTime::now_utc() - Duration::days(30);
        let mut all: Vec<Manifest> = (0..n)
            .map(|i| sample(Kind::Duckdb, t0 + Duration::hours(i)))
            .collect();
        all.iter().for_each(|m| store_manifest(store, m));
        all.sort_by_key(|m| m.id);
        all
    }

    #[test]
    fn a_read_builds_the_catalog_and_the_next_reads_only_what_is_new() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let all = ids(&store_hourly(&store, 20));
        let (good, bad) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert!(bad.is_empty());
        assert_eq!(ids(&good), all);
        assert_eq!(catalog_objects(&store).len(), 1);

        // An old manifest deleted behind the catalog's back stays listed by a
        // recent read and is dropped by a complete one.
        let gone = good[3].clone();
        store.delete(&gone.key()).unwrap();
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(good.len(), 20);
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Complete).unwrap();
        assert_eq!(good.len(), 19);
        assert!(!ids(&good).contains(&gone.id));
        // A restore that finds a chosen manifest gone corrects the catalog
        // itself, so that running again does not choose it again.
        let gone = good[5].clone();
        store.delete(&gone.key()).unwrap();
        let e = reread(&store, &trust, &gone).unwrap_err();
        assert_eq!(classify(&e), Some(Code::NotFound), "{e:#}");
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(good.len(), 18);
        assert!(!ids(&good).contains(&gone.id));

        // A new manifest is found by the recent listing.
        let fresh = sample(Kind::Duckdb, OffsetDateTime::now_utc());
        store
            .put_new(
                &fresh.key(),
                &seal::encode(&fresh, None).unwrap(),
                &Vec::new(),
            )
            .unwrap();
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(good.last().unwrap().id, fresh.id);
        // Superseded catalog objects were deleted: the newest three and
        // their base stay.
        assert!(
            catalog_objects(&store).len() <= 4,
            "{:?}",
            catalog_objects(&store)
        );

        // A recent manifest rewritten in place is read again.
        let mut edited = fresh.clone();
        edited.host = "another-host-with-a-longer-name".into();
        rewrite(&store, &edited);
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(good.last().unwrap(), &edited);
        // A restore refuses the catalog's older copy, and corrects the catalog.
        assert!(reread(&store, &trust, &fresh).is_err());
        assert_eq!(reread(&store, &trust, &edited).unwrap(), edited);
    }

    #[test]
    fn a_first_read_hands_out_each_manifest_as_it_writes_the_base() {
        use crate::store::counting::Counting;
        let store = MemoryStore::default();
        let trust = Trust::none();
        let all = store_hourly(&store, 20);
        CACHE.lock().unwrap().clear();
        // Each manifest is handed out as it is read, not once all are held:
        // between two hand-outs, a manifest was read.
        let counted = Counting::new(&store);
        let mut seen = Vec::new();
        let bad = fold(
            &counted,
            &trust,
            Kind::Duckdb,
            Depth::Recent,
            &mut |m| match m {
                Some(m) => seen.push((m, counted.bytes_read())),
                None => seen.clear(),
            },
        )
        .unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert!(
            seen.windows(2).all(|w| w[0].1 < w[1].1),
            "read, handed out, read: {:?}",
            seen.iter().map(|s| s.1).collect::<Vec<_>>()
        );
        let seen: Vec<Manifest> = seen.into_iter().map(|s| s.0).collect();
        assert_eq!(seen, all, "oldest first, each once");
        // What this process keeps is the ids, not the entries.
        let st = cached(&counted, None, Kind::Duckdb).unwrap();
        assert_eq!((st.seq, st.base_seq), (1, 1));
        assert!(st.entries.is_empty());
        assert_eq!(st.handed.as_ref().map(Ids::len), Some(all.len()));
        // The base holds every manifest, as read.
        let base = load_whole(&store, None, Kind::Duckdb).unwrap();
        let held: Vec<Manifest> = base.entries.values().map(|e| e.manifest.clone()).collect();
        assert_eq!(held, all);
        // A manifest this run stores goes into a delta on it.
        let new = sample(Kind::Duckdb, OffsetDateTime::now_utc());
        store_manifest(&store, &new);
        assert_eq!(catalog_objects(&store).len(), 2);
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(good.len(), all.len() + 1);
        CACHE.lock().unwrap().clear();
        let mut want: Vec<BackupId> = ids(&all);
        want.push(new.id);
        assert_eq!(fold_fresh(&store, &trust), want);
    }

    #[test]
    fn superseded_objects_wait_for_a_run_that_stored_something_where_deletes_batch() {
        let trust = Trust::none();
        let t0 = OffsetDateTime::now_utc() - Duration::days(3);
        let note = |i: i64| {
            let mut m = sample(Kind::Duckdb, t0 + Duration::minutes(15 * i));
            m.objects.clear();
            m
        };
        for batching in [true, false] {
            let store = if batching {
                MemoryStore::batching()
            } else {
                MemoryStore::default()
            };
            store_manifest(&store, &sample(Kind::Duckdb, t0));
            read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
            // Runs that stored nothing: each adds a delta.
            for i in 1..20 {
                store_manifest(&store, &note(i));
            }
            let left = catalog_objects(&store).len();
            if batching {
                // Nothing deleted: a base and 19 deltas.
                assert_eq!(left, 20, "{:?}", catalog_objects(&store));
            } else {
                // Each write deleted what it superseded.
                assert!(left <= 4, "{:?}", catalog_objects(&store));
            }
            // A run that stored a backup deletes every superseded object, one
            // stored only as chunks too.
            let mut stored = sample(Kind::Duckdb, t0 + Duration::hours(6));
            stored.objects.clear();
            crate::manifest::tests::with_chunks(&mut stored);
            store_manifest(&store, &stored);
            assert!(
                catalog_objects(&store).len() <= 4,
                "{:?}",
                catalog_objects(&store)
            );
            // However long runs store nothing, the backlog stays bounded.
            for i in 30..(30 + 3 * TIDY_BACKLOG as i64) {
                store_manifest(&store, &note(i));
            }
            assert!(
                catalog_objects(&store).len() <= TIDY_BACKLOG + 4,
                "{}",
                catalog_objects(&store).len()
            );
            // The catalog still holds every manifest.
            let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Complete).unwrap();
            assert_eq!(good.len(), 1 + 19 + 1 + 3 * TIDY_BACKLOG);
        }
    }

    /// A store named `name` whose bases this host keeps copies of in a new
    /// directory, with `n` manifests an hour apart, 30 days old, and read
    /// once (its first base written and kept); and the copies kept.
    fn keeping_bases(name: &str, n: i64) -> (MemoryStore, tempfile::TempDir) {
        let store = MemoryStore::named(name);
        let dir = tempfile::tempdir().unwrap();
        keep_bases_in(&store, dir.path().to_path_buf());
        store_hourly(&store, n);
        read(&store, &Trust::none(), Kind::Duckdb, Depth::Recent).unwrap();
        (store, dir)
    }

    fn copies_in(dir: &tempfile::TempDir) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    #[test]
    fn a_base_is_read_from_the_store_once_and_its_copy_only_once_it_checks() {
        use crate::store::counting::Counting;
        let trust = Trust::none();
        // The base the first read writes is kept as it is written.
        let (store, dir) = keeping_bases("bases", 20);
        let copies = || copies_in(&dir);
        assert_eq!(copies().len(), 1);
        store_manifest(&store, &sample(Kind::Duckdb, OffsetDateTime::now_utc()));
        let (want, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        let objects = catalog_objects(&store);
        assert_eq!(objects.len(), 2, "a base and a delta: {objects:?}");
        let base = store.get(&objects[0]).unwrap();
        // Alive together: the catalog's in-process state is per store.
        let (c1, c2, c3) = (
            Counting::new(&store),
            Counting::new(&store),
            Counting::new(&store),
        );
        let counted = |c: &Counting| {
            let (got, _) = read(c, &trust, Kind::Duckdb, Depth::Recent).unwrap();
            assert_eq!(ids(&got), ids(&want));
            c.bytes_read()
        };
        let from_copy = counted(&c1);
        // A copy that does not check is not used, and is replaced.
        let copy = copies().pop().unwrap();
        let mut bytes = std::fs::read(&copy).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&copy, &bytes).unwrap();
        assert_eq!(
            counted(&c2),
            from_copy + base.len() as u64,
            "the base was read from the store"
        );
        assert_eq!(std::fs::read(&copy).unwrap(), base);
        assert_eq!(counted(&c3), from_copy, "and from its copy again");
        keep_bases_in(&store, dir.path().join("gone"));
    }

    #[test]
    fn a_runs_own_manifest_is_not_read_again_by_the_next_reader() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let t0 = OffsetDateTime::now_utc() - Duration::days(10);
        for i in 0..3 {
            store_manifest(&store, &sample(Kind::Duckdb, t0 + Duration::hours(i)));
        }
        read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        // A run stores its manifest and notes it: one more catalog object.
        let own = sample(Kind::Duckdb, OffsetDateTime::now_utc());
        store_manifest(&store, &own);
        let noted = catalog_objects(&store);
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(good.last().unwrap().id, own.id);
        // The listing showed the object the note recorded: nothing was read
        // again, so nothing changed and nothing was written.
        assert_eq!(catalog_objects(&store), noted);
    }

    /// Without an entity tag or a time a rewrite of the same size would
    /// look like the object the catalog recorded: the tag tells them apart,
    /// within the window and, for a complete read, before it.
    #[test]
    fn a_manifest_rewritten_at_the_same_size_is_read_again() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let old = sample(Kind::Duckdb, OffsetDateTime::now_utc() - Duration::days(10));
        store_manifest(&store, &old);
        read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        let own = sample(Kind::Duckdb, OffsetDateTime::now_utc());
        store_manifest(&store, &own);
        let size = |m: &Manifest| store.head(&m.key()).unwrap().unwrap().size;

        for (m, depth) in [(&own, Depth::Recent), (&old, Depth::Complete)] {
            let before = size(m);
            let mut edited = m.clone();
            edited.host = "g".into();
            assert_eq!(edited.host.len(), m.host.len());
            rewrite(&store, &edited);
            assert_eq!(size(m), before, "the same size");
            let (good, bad) = read(&store, &trust, Kind::Duckdb, depth).unwrap();
            assert!(bad.is_empty(), "{bad:?}");
            assert!(good.contains(&edited), "{depth:?}: the new version is read");
            assert!(!good.contains(m), "{depth:?}");
        }
    }

    /// A chunked manifest whose catalog entry lost its chunks (a catalog an
    /// older bkp rewrote) is read again from its key, and the catalog healed:
    /// nothing for the operator to delete.
    #[test]
    fn a_chunked_entry_without_its_chunks_is_read_again() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let mut m = sample(Kind::Duckdb, OffsetDateTime::now_utc() - Duration::days(10));
        crate::manifest::tests::with_chunks(&mut m);
        store_manifest(&store, &m);
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(good, vec![m.clone()]);

        // The catalog's entry as an older bkp would have rewritten it.
        let mut st = load_whole(&store, None, Kind::Duckdb).unwrap();
        let entry = st.entries.get_mut(&m.id).unwrap();
        entry.manifest.chunks = None;
        st.dirty.insert(m.id);
        let at = st.written_at.unwrap();
        assert!(write(&store, None, Kind::Duckdb, &mut st, at, false).unwrap());
        assert!(super::super::lacks_chunks(
            &load_whole(&store, None, Kind::Duckdb).unwrap().entries[&m.id].manifest
        ));

        for depth in [Depth::Recent, Depth::Complete] {
            let (good, bad) = read(&store, &trust, Kind::Duckdb, depth).unwrap();
            assert!(bad.is_empty(), "{depth:?}: {bad:?}");
            assert_eq!(good, vec![m.clone()], "{depth:?}");
        }
        let healed = load_whole(&store, None, Kind::Duckdb).unwrap();
        assert_eq!(healed.entries[&m.id].manifest, m);
    }

    #[test]
    fn a_forged_or_damaged_catalog_is_passed_over() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let m = sample(Kind::Duckdb, OffsetDateTime::now_utc() - Duration::days(10));
        store_manifest(&store, &m);
        read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        // A planted catalog above the real one naming a backup that does not exist.
        let planted = sample(Kind::Duckdb, OffsetDateTime::now_utc() - Duration::days(9));
        let doc = Doc {
            schema: SCHEMA.into(),
            kind: Kind::Duckdb,
            seq: 7,
            base: None,
            written_at: OffsetDateTime::now_utc(),
            entries: vec![Entry {
                manifest: planted.clone(),
                sealed: true,
                sealer: None,
                stored: None,
            }],
            removed: Vec::new(),
            damaged: Vec::new(),
            understands: SCHEMA_MINOR,
        };
        let payload = zstd::bulk::compress(&serde_json::to_vec(&doc).unwrap(), 3).unwrap();
        let mut bytes = format!("{MAGIC}{}\n", "00".repeat(32)).into_bytes();
        bytes.extend_from_slice(&payload);
        store
            .put_new(&object_key(Kind::Duckdb, 7), &bytes, &Vec::new())
            .unwrap();
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(ids(&good), vec![m.id]);
        // The next catalog is written above the planted one.
        store_manifest(&store, &sample(Kind::Duckdb, OffsetDateTime::now_utc()));
        assert!(catalog_objects(&store)
            .iter()
            .any(|k| seq_of(Kind::Duckdb, k) == Some(8)));
    }

    /// Reads a store holding one backup of `kind`, under a planted catalog
    /// base of `kind` (tagged as a keyless store tags it) holding `entries`:
    /// the ids handed out, and the real backup's.
    fn read_under_planted_base(kind: Kind, entries: Vec<Entry>) -> (Vec<BackupId>, BackupId) {
        let store = MemoryStore::default();
        let m = sample(kind, OffsetDateTime::now_utc() - Duration::days(10));
        store_manifest(&store, &m);
        let doc = Doc {
            schema: SCHEMA.into(),
            kind,
            seq: 1,
            base: None,
            written_at: OffsetDateTime::now_utc(),
            entries,
            removed: Vec::new(),
            damaged: Vec::new(),
            understands: SCHEMA_MINOR,
        };
        let payload = zstd::bulk::compress(&serde_json::to_vec(&doc).unwrap(), 3).unwrap();
        let tag = seal::tag(None, &payload).unwrap();
        let mut bytes = format!("{MAGIC}{tag}\n").into_bytes();
        bytes.extend_from_slice(&payload);
        store
            .put_new(&object_key(kind, 1), &bytes, &Vec::new())
            .unwrap();
        let (good, _) = read(&store, &Trust::none(), kind, Depth::Recent).unwrap();
        (ids(&good), m.id)
    }

    /// Entries for backups of `kind` the store does not hold, older than the
    /// listing window (a catalog that is used hands them out), in id order.
    fn absent(kind: Kind) -> Vec<Entry> {
        let mut entries: Vec<Entry> = [9, 8]
            .map(|d| sample(kind, OffsetDateTime::now_utc() - Duration::days(d)))
            .into_iter()
            .map(|p| Entry::new(p, None, None))
            .collect();
        entries.sort_by_key(|e| e.manifest.id);
        entries
    }

    #[test]
    fn a_base_whose_entries_are_out_of_order_is_passed_over() {
        let entries = absent(Kind::Duckdb);
        let planted: Vec<BackupId> = entries.iter().map(|e| e.manifest.id).collect();
        let (good, _) = read_under_planted_base(Kind::Duckdb, entries.clone());
        assert!(planted.iter().all(|p| good.contains(p)), "{good:?}");
        let (good, real) =
            read_under_planted_base(Kind::Duckdb, entries.into_iter().rev().collect());
        assert_eq!(good, vec![real]);
    }

    #[test]
    fn a_catalog_never_hands_out_a_backup_of_another_kind() {
        // Of a kind whose keys sort before the catalog's: the listing of
        // recent manifests does not drop it.
        let mut entries = absent(Kind::Tigerbeetle);
        let own: Vec<BackupId> = entries.iter().map(|e| e.manifest.id).collect();
        entries.push(absent(Kind::Duckdb).remove(0));
        entries.sort_by_key(|e| e.manifest.id);
        // The catalog is used (its own kind's entries are handed out), the
        // foreign entry is not.
        let (good, _) = read_under_planted_base(Kind::Tigerbeetle, entries);
        assert_eq!(good, own);
    }

    #[test]
    fn a_read_hands_its_entries_out_and_keeps_what_a_delta_carries() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let t0 = OffsetDateTime::now_utc() - Duration::days(1);
        for i in 0..3 {
            store_manifest(&store, &sample(Kind::Duckdb, t0 + Duration::seconds(i)));
        }
        CACHE.lock().unwrap().clear();
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(good.len(), 3);
        let st = cached(&store, None, Kind::Duckdb).unwrap();
        // Every manifest is known by id; only a delta's entries are held.
        assert_eq!(st.handed.as_ref().map(Ids::len), Some(3));
        let carried = st.entries.len();
        assert!(carried <= 3 - st.base_ids.len() + st.dirty.len());
        assert!(good.iter().all(|m| st.holds(&m.id)));
    }

    #[test]
    fn a_handed_state_whose_base_is_gone_leaves_the_write_to_a_fresh_read() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let t0 = OffsetDateTime::now_utc() - Duration::days(1);
        store_manifest(&store, &sample(Kind::Duckdb, t0));
        CACHE.lock().unwrap().clear();
        read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        let mut st = cached(&store, None, Kind::Duckdb).unwrap();
        assert!(st.handed.is_some());
        // Enough changes for a new base, which needs the handed entries back.
        for i in 1..=REBASE as i64 {
            st.put(Entry::new(
                sample(Kind::Duckdb, t0 + Duration::seconds(i)),
                None,
                None,
            ));
        }
        let base = object_key(Kind::Duckdb, st.base_seq);
        let bytes = store.get(&base).unwrap();
        store.delete(&base).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(!write(&store, None, Kind::Duckdb, &mut st, now, false).unwrap());
        assert!(st.handed.is_some(), "nothing was taken back");
        // Nor is a base planted under the same key.
        let mut planted = bytes.clone();
        let nl = planted.iter().position(|&b| b == b'\n').unwrap();
        planted.splice(..nl, format!("{MAGIC}{}", "ab".repeat(32)).into_bytes());
        store.put_new(&base, &planted, &Vec::new()).unwrap();
        st.base_source.as_mut().unwrap().1 = Tagger::Trusted;
        assert!(!write(&store, None, Kind::Duckdb, &mut st, now, false).unwrap());
        // Its own base back, the write goes through.
        store.delete(&base).unwrap();
        store.put_new(&base, &bytes, &Vec::new()).unwrap();
        st.base_source.as_mut().unwrap().1 = Tagger::Anyone;
        assert!(write(&store, None, Kind::Duckdb, &mut st, now, false).unwrap());
        let written = load_whole(&store, None, Kind::Duckdb).unwrap();
        assert_eq!(written.entries.len(), REBASE + 1);
    }

    #[test]
    fn a_new_base_merged_from_a_copy_that_fails_part_way_starts_again_from_the_store() {
        let trust = Trust::none();
        let (store, dir) = keeping_bases("merged", 10);
        let old = OffsetDateTime::now_utc() - Duration::days(30);
        let base: Vec<Entry> = load_whole(&store, None, Kind::Duckdb)
            .unwrap()
            .entries
            .into_vec();
        // A read that hands every entry out as it parses the base.
        assert_eq!(fold_fresh(&store, &trust).len(), 10);
        let mut st = cached(&store, None, Kind::Duckdb).unwrap();
        assert!(st.entries.is_empty());
        let t0 = OffsetDateTime::now_utc() - Duration::hours(1);
        for i in 0..REBASE as i64 {
            st.put(Entry::new(
                sample(Kind::Duckdb, t0 + Duration::seconds(i)),
                None,
                None,
            ));
        }
        // The copy of the base is replaced by one of the same size and a
        // tag that checks (no keys: a digest) whose third entry repeats the
        // first: the merge takes two entries from it before it fails.
        let copy = copies_in(&dir).pop().unwrap();
        let size = std::fs::metadata(&copy).unwrap().len() as usize;
        let doc = Doc {
            schema: SCHEMA.into(),
            kind: Kind::Duckdb,
            seq: st.base_seq,
            base: None,
            written_at: old,
            understands: SCHEMA_MINOR,
            entries: vec![&base[0], &base[1], &base[0]],
            removed: Vec::new(),
            damaged: Vec::new(),
        };
        let mut payload = zstd::encode_all(&serde_json::to_vec(&doc).unwrap()[..], 3).unwrap();
        // Padded to the copy's size by a frame decompressors skip.
        let pad = size - (MAGIC.len() + 64 + 1) - payload.len() - 8;
        payload.extend(0x184D_2A50u32.to_le_bytes());
        payload.extend((pad as u32).to_le_bytes());
        payload.extend(vec![0u8; pad]);
        let mut bytes = format!("{MAGIC}{}\n", seal::tag(None, &payload).unwrap()).into_bytes();
        bytes.extend(payload);
        assert_eq!(bytes.len(), size);
        std::fs::write(&copy, &bytes).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(write(&store, None, Kind::Duckdb, &mut st, now, false).unwrap());
        // Every entry once: the old ones from the store's base, the new.
        let written = load_whole(&store, None, Kind::Duckdb).unwrap();
        assert!(written.base_seq > 1);
        let want: Vec<BackupId> = st.handed.as_ref().unwrap().iter().copied().collect();
        assert_eq!(want.len(), 10 + REBASE);
        assert!(base.iter().all(|e| want.contains(&e.manifest.id)));
        assert_eq!(written.entries.keys().copied().collect::<Vec<_>>(), want);
        keep_bases_in(&store, dir.path().join("gone"));
    }

    #[test]
    fn deltas_grow_to_rebase_then_a_base_is_written() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let t0 = OffsetDateTime::now_utc() - Duration::days(1);
        store_manifest(&store, &sample(Kind::Duckdb, t0));
        read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        for i in 1..(REBASE as i64 + 5) {
            let m = sample(Kind::Duckdb, t0 + Duration::seconds(i));
            store_manifest(&store, &m);
        }
        let st = load_whole(&store, None, Kind::Duckdb).unwrap();
        assert_eq!(st.entries.len(), REBASE + 5);
        assert!(st.base_seq > 1, "a new base was written");
        assert!(catalog_objects(&store).len() <= 4);
        CACHE.lock().unwrap().clear();
        let (good, bad) = read(&store, &trust, Kind::Duckdb, Depth::Complete).unwrap();
        assert!(bad.is_empty());
        assert_eq!(good.len(), REBASE + 5);
    }

    /// A store whose listings show manifests stored when `stored_at` says,
    /// hide those `hidden` names, and, listing every key at once
    /// (`list_each`), those `stored_later` names; it counts reads of each key.
    struct Listed<'a> {
        inner: &'a MemoryStore,
        stored_at: BTreeMap<String, OffsetDateTime>,
        hidden: Vec<String>,
        stored_later: Vec<String>,
        reads: Mutex<Vec<String>>,
    }

    impl Store for Listed<'_> {
        fn identity(&self) -> String {
            self.inner.identity()
        }
        fn create(
            &self,
            key: &str,
            metadata: &crate::store::Metadata,
        ) -> Result<Box<dyn crate::store::ObjectWriter>> {
            self.inner.create(key, metadata)
        }
        fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
            self.reads.lock().unwrap().push(key.to_string());
            self.inner.open(key)
        }
        fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
            self.inner.head(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            let mut all = self.inner.list(prefix)?;
            all.retain(|o| !self.hidden.contains(&o.key));
            for o in &mut all {
                o.modified = self.stored_at.get(&o.key).copied();
            }
            Ok(all)
        }
        fn list_each(&self, prefix: &str, each: &mut dyn FnMut(ObjectInfo)) -> Result<()> {
            for o in self.list(prefix)? {
                if !self.stored_later.contains(&o.key) {
                    each(o);
                }
            }
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
    }

    /// A complete read lists every key before it reads the catalog, and the
    /// window again after: a manifest the catalog holds that the first
    /// listing lacks was stored meanwhile (the second shows it: kept, and
    /// not read), or deleted (neither does: dropped, and not read).
    #[test]
    fn a_complete_read_keeps_what_was_stored_while_it_read_and_drops_the_deleted() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let now = OffsetDateTime::now_utc();
        let old = sample(Kind::Duckdb, now - Duration::days(3));
        let kept = sample(Kind::Duckdb, now - Duration::days(2));
        let new = sample(Kind::Duckdb, now - Duration::minutes(5));
        for m in [&old, &kept, &new] {
            store_manifest(&store, m);
        }
        let stored_at: BTreeMap<String, OffsetDateTime> = [&old, &kept, &new]
            .iter()
            .map(|m| (m.key(), m.started_at))
            .collect();
        let read_through = |hidden: Vec<String>, stored_later: Vec<String>| {
            CACHE.lock().unwrap().clear();
            let listed = Listed {
                inner: &store,
                stored_at: stored_at.clone(),
                hidden,
                stored_later,
                reads: Mutex::new(Vec::new()),
            };
            let mut ids = Vec::new();
            let bad = fold(
                &listed,
                &trust,
                Kind::Duckdb,
                Depth::Complete,
                &mut |m| match m {
                    Some(m) => ids.push(m.id),
                    None => ids.clear(),
                },
            )
            .unwrap();
            assert!(bad.is_empty(), "{bad:?}");
            ids.sort();
            (ids, listed.reads.into_inner().unwrap())
        };
        // The catalog is written with every manifest as listed.
        let no_manifest_read =
            |reads: &[String]| reads.iter().all(|k| !k.starts_with("manifests/"));
        let (ids, _) = read_through(Vec::new(), Vec::new());
        assert_eq!(ids, vec![old.id, kept.id, new.id]);
        let (ids, reads) = read_through(Vec::new(), Vec::new());
        assert_eq!(ids, vec![old.id, kept.id, new.id]);
        assert!(no_manifest_read(&reads), "{reads:?}");

        // The first listing lacks the new one (stored while the catalog was
        // read), and every listing the old one (deleted).
        let (ids, reads) = read_through(vec![old.key()], vec![new.key()]);
        assert_eq!(ids, vec![kept.id, new.id]);
        assert!(no_manifest_read(&reads), "{reads:?}");
        // The catalog written then lacks the old one, which is not listed.
        let (ids, _) = read_through(vec![old.key()], Vec::new());
        assert_eq!(ids, vec![kept.id, new.id]);

        // Listed again, it is read again; then deleted (older than what is
        // listed again after the catalog is read), it is dropped as the base
        // is read, and that alone is written to the catalog.
        let (ids, _) = read_through(Vec::new(), Vec::new());
        assert_eq!(ids, vec![old.id, kept.id, new.id]);
        let holds_old = || {
            CACHE.lock().unwrap().clear();
            load_whole(&store, None, Kind::Duckdb)
                .unwrap()
                .entries
                .contains_key(&old.id)
        };
        assert!(holds_old());
        let (ids, reads) = read_through(vec![old.key()], Vec::new());
        assert_eq!(ids, vec![kept.id, new.id]);
        assert!(no_manifest_read(&reads), "{reads:?}");
        assert!(!holds_old());
    }

    #[test]
    fn a_large_base_is_parsed_from_a_file_of_its_own_once_its_tag_checks() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let old = OffsetDateTime::now_utc() - Duration::days(30);
        let mut all: Vec<BackupId> = (0..300)
            .map(|i| {
                let m = sample(Kind::Duckdb, old + Duration::seconds(i));
                rewrite(&store, &m);
                m.id
            })
            .collect();
        all.sort();
        read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        let base = store.list(&prefix(Kind::Duckdb)).unwrap();
        assert!(
            base.iter().any(|o| o.size as usize > SPOOL_OVER),
            "the base is spooled: {base:?}"
        );
        let handed = fold_fresh(&store, &trust);
        assert_eq!(handed, all);
        // The spooled bytes read back from any offset as they were.
        let bytes: Vec<u8> = (0..=SPOOL_OVER).map(|i| (i % 251) as u8).collect();
        let mut checked = Checked::of(bytes.clone());
        assert!(matches!(checked, Checked::Spooled(_)));
        for at in [0, 7, SPOOL_OVER] {
            let mut back = Vec::new();
            checked.reader(at).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, bytes[at..]);
        }
        assert!(matches!(Checked::of(vec![1; 10]), Checked::Memory(_)));
    }

    /// A base too large to hold is checked as it is spooled: by the current
    /// key, or (a trusted signer's tag needs the whole payload) read back
    /// whole; a byte changed, a tag nobody trusted made or a header with no
    /// end is refused before anything is parsed.
    /// A dry run's store forgets what is written to it: at its last reads,
    /// no catalog is made there, and the manifests are read all the same.
    #[test]
    fn a_dry_run_writes_no_catalog_at_its_last_reads() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let m = sample(Kind::Duckdb, OffsetDateTime::now_utc() - Duration::days(3));
        rewrite(&store, &m);
        let dry = crate::store::dry::DryRun::new(&store);
        // Until its last reads, a dry run writes a catalog for those later.
        CACHE.lock().unwrap().clear();
        read(&dry, &trust, Kind::Duckdb, Depth::Complete).unwrap();
        assert!(!dry.list(&prefix(Kind::Duckdb)).unwrap().is_empty());
        let dry = crate::store::dry::DryRun::new(&store);
        dry.last_reads();
        for depth in [Depth::Recent, Depth::Complete] {
            CACHE.lock().unwrap().clear();
            let (good, _) = read(&dry, &trust, Kind::Duckdb, depth).unwrap();
            assert_eq!(ids(&good), vec![m.id]);
            assert!(dry.list(&prefix(Kind::Duckdb)).unwrap().is_empty());
        }
        CACHE.lock().unwrap().clear();
        read(&store, &trust, Kind::Duckdb, Depth::Complete).unwrap();
        assert!(!store.list(&prefix(Kind::Duckdb)).unwrap().is_empty());
    }

    #[test]
    fn a_large_base_is_checked_as_it_is_spooled() {
        use crate::crypto::pubkey::{generate_signing_key, SigningKey, Verifier};
        use crate::crypto::MasterKey;
        let store = MemoryStore::default();
        let (secret, public) = generate_signing_key().unwrap();
        let signer = Keyring::new(MasterKey::from_bytes([9u8; 32]), Vec::new()).with_signing(
            Some(SigningKey::from_text(secret.as_bytes(), "test").unwrap()),
            Vec::new(),
        );
        let holder = || {
            Keyring::new(MasterKey::from_bytes([7u8; 32]), Vec::new())
                .with_signing(None, vec![Verifier::parse(&public).unwrap()])
        };
        let trust = Trust::new(Some(holder()), None, Vec::new());
        let old = OffsetDateTime::now_utc() - Duration::days(30);
        for i in 0..300 {
            let m = encrypted(sample(Kind::Duckdb, old + Duration::seconds(i)));
            super::super::write(&store, &m, Some(&holder())).unwrap();
        }
        read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        let base = store.list(&prefix(Kind::Duckdb)).unwrap();
        let listed = base.last().unwrap();
        let bytes = store.get(&listed.key).unwrap();
        assert!(bytes.len() > SPOOL_OVER, "{}", bytes.len());
        let parse = |b: &[u8], keys: Option<&Keyring>| {
            let at = (
                Kind::Duckdb,
                seq_of(Kind::Duckdb, &listed.key).unwrap(),
                listed.key.as_str(),
            );
            parse_from(b, b.len() as u64, "the base", keys, at, None)
        };

        let (doc, tagger, checked, len) = parse(&bytes, Some(&holder())).unwrap();
        assert_eq!((tagger, len), (Tagger::Trusted, bytes.len() as u64));
        assert!(matches!(checked, Checked::Spooled(_)));
        assert_eq!(doc.entries.len(), 300);

        let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
        let mut changed = bytes.clone();
        changed[nl + 100] ^= 1;
        let e = parse(&changed, Some(&holder())).unwrap_err();
        assert!(e.downcast_ref::<Unverified>().is_some(), "{e:#}");
        // Without keys the tag is a digest: a keyed one is not believed.
        let e = parse(&bytes, None).unwrap_err();
        assert!(e.downcast_ref::<Unverified>().is_some(), "{e:#}");

        // The same payload under a trusted signer's tag: read back whole,
        // and believed as that signer's.
        let payload = &bytes[nl + 1..];
        let signed = seal::tag(Some(&signer), payload).unwrap();
        let mut by_signer = format!("{MAGIC}{signed}\n").into_bytes();
        by_signer.extend_from_slice(payload);
        let (_, tagger, _, _) = parse(&by_signer, Some(&holder())).unwrap();
        assert!(matches!(tagger, Tagger::Signer(_)), "{tagger:?}");

        let mut endless = vec![b'x'; MAX_HEADER + 1];
        endless.extend_from_slice(&bytes);
        let e = parse(&endless, Some(&holder())).unwrap_err();
        assert!(format!("{e:#}").contains("no header"), "{e:#}");
    }

    #[test]
    fn a_read_that_hands_the_base_out_as_it_parses_it_rebases_with_every_entry() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        // A base of backups older than the listing window: a read hands
        // them out as it parses the base, and does not hold them.
        let old = OffsetDateTime::now_utc() - Duration::days(30);
        let mut all: Vec<BackupId> = (0..10)
            .map(|i| {
                let m = sample(Kind::Duckdb, old + Duration::seconds(i));
                rewrite(&store, &m);
                m.id
            })
            .collect();
        read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        // More new manifests than a delta carries, stored by runs that did
        // not note them: the next read writes a new base.
        let t0 = OffsetDateTime::now_utc() - Duration::hours(1);
        for i in 0..(REBASE as i64 + 5) {
            let m = sample(Kind::Duckdb, t0 + Duration::seconds(i));
            rewrite(&store, &m);
            all.push(m.id);
        }
        all.sort();
        let mut handed = fold_fresh(&store, &trust);
        // The old ones first, as the base was parsed; each once.
        assert_eq!(handed[..10], all[..10]);
        handed.sort();
        assert_eq!(handed, all);
        // The new base holds every entry, those handed out as it was read too.
        let st = load_whole(&store, None, Kind::Duckdb).unwrap();
        assert!(st.base_seq > 1, "a new base was written");
        assert_eq!(st.entries.keys().copied().collect::<Vec<_>>(), all);
        CACHE.lock().unwrap().clear();
        let (good, bad) = read(&store, &trust, Kind::Duckdb, Depth::Complete).unwrap();
        assert!(bad.is_empty());
        assert_eq!(ids(&good).len(), all.len());
    }

    fn encrypted(mut m: Manifest) -> Manifest {
        m.encryption = Some(crate::manifest::Encryption {
            format: "bkp-aes256gcm-v1".into(),
            key_id: "k".into(),
        });
        m
    }

    /// A stolen host's signer sealed a manifest that an honest run then
    /// cached. Once the operator removes that signer, the catalog's copy is
    /// refused exactly as the manifest itself is: it never counts as a
    /// backup (for retention, chains or `restore latest`).
    #[test]
    fn a_removed_signer_no_longer_vouches_for_what_the_catalog_cached() {
        use crate::crypto::pubkey::{generate_signing_key, SigningKey, Verifier};
        use crate::crypto::MasterKey;
        let store = MemoryStore::default();
        let master = || MasterKey::from_bytes([7u8; 32]);
        let (secret, public) = generate_signing_key().unwrap();
        let thief = SigningKey::from_text(secret.as_bytes(), "test").unwrap();
        let trusted = Keyring::new(master(), Vec::new())
            .with_signing(None, vec![Verifier::parse(&public).unwrap()]);
        let revoked = Keyring::new(master(), Vec::new());
        let thief_keys = Keyring::new(master(), Vec::new()).with_signing(Some(thief), Vec::new());

        let old = OffsetDateTime::now_utc() - Duration::days(10);
        let honest = encrypted(sample(Kind::Duckdb, old));
        super::super::write(&store, &honest, Some(&trusted)).unwrap();
        let fake = encrypted(sample(Kind::Duckdb, old + Duration::hours(1)));
        store
            .put_new(
                &fake.key(),
                &seal::encode(&fake, Some(&thief_keys)).unwrap(),
                &Vec::new(),
            )
            .unwrap();

        let before = Trust::new(Some(trusted), None, Vec::new());
        let (good, bad) = read(&store, &before, Kind::Duckdb, Depth::Recent).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(ids(&good), vec![honest.id, fake.id]);

        CACHE.lock().unwrap().clear();
        let after = Trust::new(Some(revoked), None, Vec::new());
        for depth in [Depth::Recent, Depth::Complete, Depth::Recent] {
            let (good, bad) = read(&store, &after, Kind::Duckdb, depth).unwrap();
            assert_eq!(ids(&good), vec![honest.id], "{depth:?}");
            assert_eq!(bad.len(), 1, "{depth:?}: {bad:?}");
            assert_eq!(bad[0].key, fake.key());
            assert!(bad[0].error.contains("signer"), "{}", bad[0].error);
        }
    }

    /// A stolen host's signer writes a delta on the key holder's catalog that
    /// edits the key holder's manifest: the edit is never believed, nor carried
    /// into the catalog the key holder writes next, while the signer's entry
    /// for its own manifest is.
    #[test]
    fn a_signers_catalog_vouches_only_for_what_it_sealed() {
        use crate::crypto::pubkey::{generate_signing_key, SigningKey, Verifier};
        use crate::crypto::MasterKey;
        let store = MemoryStore::default();
        let master = || MasterKey::from_bytes([7u8; 32]);
        let (secret, public) = generate_signing_key().unwrap();
        let thief = Keyring::new(MasterKey::from_bytes([9u8; 32]), Vec::new()).with_signing(
            Some(SigningKey::from_text(secret.as_bytes(), "test").unwrap()),
            Vec::new(),
        );
        let holder = || {
            Keyring::new(master(), Vec::new())
                .with_signing(None, vec![Verifier::parse(&public).unwrap()])
        };
        let trust = Trust::new(Some(holder()), None, Vec::new());
        let old = OffsetDateTime::now_utc() - Duration::days(10);
        let genuine = encrypted(sample(Kind::Duckdb, old));
        super::super::write(&store, &genuine, Some(&holder())).unwrap();
        let own = encrypted(sample(Kind::Duckdb, old + Duration::hours(1)));
        super::super::write(&store, &own, Some(&thief)).unwrap();
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(ids(&good), vec![genuine.id, own.id]);

        // The signer's delta: the key holder's manifest with a short retention,
        // still claiming the key holder's seal and the object's listing.
        let mut st = load_whole(&store, Some(&holder()), Kind::Duckdb).unwrap();
        st.entries
            .get_mut(&genuine.id)
            .unwrap()
            .manifest
            .retention_days = 1;
        st.dirty.insert(genuine.id);
        let at = OffsetDateTime::now_utc();
        assert!(write(&store, Some(&thief), Kind::Duckdb, &mut st, at, false).unwrap());
        CACHE.lock().unwrap().clear();
        let st = load_whole(&store, Some(&holder()), Kind::Duckdb).unwrap();
        assert!(st.unchecked && !st.entries.contains_key(&genuine.id));
        assert!(st.entries.contains_key(&own.id));
        for depth in [Depth::Recent, Depth::Complete] {
            CACHE.lock().unwrap().clear();
            let (good, bad) = read(&store, &trust, Kind::Duckdb, depth).unwrap();
            assert!(bad.is_empty(), "{bad:?}");
            assert_eq!(good, vec![genuine.clone(), own.clone()], "{depth:?}");
        }
        // What the key holder wrote since is its own, and holds the manifest.
        let st = load_whole(&store, Some(&holder()), Kind::Duckdb).unwrap();
        assert!(!st.unchecked);
        assert_eq!(st.entries[&genuine.id].manifest, genuine);
    }

    #[test]
    fn after_a_rotation_the_old_keys_catalog_and_seals_vouch_only_through_a_list() {
        use crate::crypto::MasterKey;
        let store = MemoryStore::default();
        let old = || MasterKey::from_bytes([1u8; 32]).with_id("old".into());
        let before = Keyring::new(old(), Vec::new());
        let rotated = || {
            Keyring::new(
                MasterKey::from_bytes([2u8; 32]).with_id("new".into()),
                vec![old()],
            )
        };
        let at = OffsetDateTime::now_utc() - Duration::days(10);
        let m = encrypted(sample(Kind::Duckdb, at));
        super::super::write(&store, &m, Some(&before)).unwrap();
        let t = Trust::new(Some(before), None, Vec::new());
        let (good, _) = read(&store, &t, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(ids(&good), vec![m.id]);
        assert_ne!(load_whole(&store, t.keys(), Kind::Duckdb).unwrap().seq, 0);

        // The old key's catalog is not believed, nor its seal on the manifest.
        CACHE.lock().unwrap().clear();
        assert_eq!(
            load_whole(&store, Some(&rotated()), Kind::Duckdb)
                .unwrap()
                .seq,
            0
        );
        let t = Trust::new(Some(rotated()), None, Vec::new());
        let (good, bad) = read(&store, &t, Kind::Duckdb, Depth::Recent).unwrap();
        assert!(good.is_empty());
        assert!(
            bad[0].error.contains("no longer the current key"),
            "{bad:?}"
        );

        // A list that records its bytes makes it a backup again, also through
        // the catalog written under the new key.
        let digest = crate::stages::hash::hex(&<sha2::Sha256 as sha2::Digest>::digest(
            store.get(&m.key()).unwrap(),
        ));
        let key = m.key();
        let listed = move || {
            Trust::new(Some(rotated()), None, Vec::new()).with_lists(seal::Lists::new({
                let (k, d) = (key.clone(), digest.clone());
                move |_| Ok(seal::Allowed::of(&[(k.as_str(), d.as_str())]))
            }))
        };
        for _ in 0..2 {
            CACHE.lock().unwrap().clear();
            let (good, bad) = read(&store, &listed(), Kind::Duckdb, Depth::Recent).unwrap();
            assert!(bad.is_empty(), "{bad:?}");
            assert_eq!(ids(&good), vec![m.id]);
        }
        assert_ne!(
            load_whole(&store, Some(&rotated()), Kind::Duckdb)
                .unwrap()
                .seq,
            0
        );
    }

    /// A manifest of the base rewritten in place (an operator re-sealing an
    /// old backup) reaches every later reader through the delta, and a note
    /// does not move the time the manifests count as listed.
    #[test]
    fn deltas_carry_new_versions_of_base_entries_and_notes_keep_the_listing_time() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let t0 = OffsetDateTime::now_utc() - Duration::days(30);
        for i in 0..5 {
            store_manifest(&store, &sample(Kind::Duckdb, t0 + Duration::hours(i)));
        }
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        let listed_at = load_whole(&store, None, Kind::Duckdb).unwrap().written_at;

        let old = good[1].clone();
        let mut edited = old.clone();
        edited.host = "resealed".into();
        rewrite(&store, &edited);
        assert!(
            reread(&store, &trust, &old).is_err(),
            "the catalog's copy is stale"
        );
        CACHE.lock().unwrap().clear();
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(good[1], edited, "the correction reached the catalog");
        assert_eq!(reread(&store, &trust, &edited).unwrap(), edited);

        let st = load_whole(&store, None, Kind::Duckdb).unwrap();
        assert!(st.base_seq < st.seq, "through a delta");
        assert_eq!(st.written_at, listed_at, "no listing happened since");
        store_manifest(&store, &sample(Kind::Duckdb, OffsetDateTime::now_utc()));
        assert_eq!(
            load_whole(&store, None, Kind::Duckdb).unwrap().written_at,
            listed_at
        );
    }

    #[test]
    fn a_planted_last_number_or_a_huge_object_is_passed_over() {
        let store = MemoryStore::default();
        let trust = Trust::none();
        let m = sample(Kind::Duckdb, OffsetDateTime::now_utc() - Duration::days(3));
        store_manifest(&store, &m);
        store
            .put_new(&object_key(Kind::Duckdb, u64::MAX), b"junk", &Vec::new())
            .unwrap();
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(ids(&good), vec![m.id]);
        store_manifest(&store, &sample(Kind::Duckdb, OffsetDateTime::now_utc()));
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Complete).unwrap();
        assert_eq!(good.len(), 2);

        // An object larger than any catalog is refused without being read
        // whole, and the run goes on without it.
        let huge = object_key(Kind::Duckdb, 1 << 40);
        let mut bytes = format!("{MAGIC}{}\n", "00".repeat(32)).into_bytes();
        bytes.resize(MAX_STORED as usize + 10, b'x');
        store.put_new(&huge, &bytes, &Vec::new()).unwrap();
        let listed = store.head(&huge).unwrap().unwrap();
        let e = read_object(&store, None, Kind::Duckdb, 1 << 40, &listed, None).unwrap_err();
        assert!(
            format!("{e:#}").contains("larger than any catalog"),
            "{e:#}"
        );
        let (good, _) = read(&store, &trust, Kind::Duckdb, Depth::Recent).unwrap();
        assert_eq!(good.len(), 2);
    }
}
