//! The JSON sidecar manifest: the record that makes a set of objects a backup.
//!
//! A manifest is written last, create-only, in one atomic put, after every object
//! it names is complete. An object without a manifest is therefore an incomplete
//! backup: never listed as good, never restored from. All state a later run needs
//! (chains, watermarks, history) is read back from manifests, so runs stay
//! stateless.
//!
//! Layout under the store root:
//! - `manifests/{kind}/{id}.json` — UUIDv7 ids make lexical order chronological;
//! - data objects at `{kind}/{yyyy}/{mm}/{dd}/{kind}-{operation}-{id}.{ext}`.
//!
//! The schema is versioned `MAJOR.MINOR`: readers accept any minor version of a
//! major they know (new optional fields) and refuse a newer major clearly.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use self::shared::Shared;
use crate::crypto::Keyring;
use crate::exit::{coded, Code};
use crate::id::BackupId;
pub use crate::kinds::{Kind, Scope};
use crate::stages::compress::Compression;
use crate::store::Store;
use crate::units::rfc3339;
pub use seal::Trust;

pub mod brief;
pub mod catalog;
pub mod chunks;
pub mod duckdb;
pub mod facts;
pub mod head;
pub mod legacy;
pub mod marker;
pub mod parquet;
pub mod pgdump;
pub mod postgres;
pub mod seal;
pub mod shared;
pub mod tigerbeetle;
pub mod tombstone;
pub mod usage;
pub mod wal;

/// The newest major schema this bkp reads. It writes major 1 for every
/// manifest but a chunked one (major 2, see [`Manifest::chunks`]).
pub const SCHEMA_MAJOR: u32 = 2;
pub const SCHEMA_MINOR: u32 = 0;
pub const MANIFEST_DIR: &str = "manifests";
/// Where the catalogs live (see [`catalog`]).
pub const CATALOG_DIR: &str = "catalog";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Completed,
}

/// One stored object of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub key: String,
    /// Bytes stored (after compression and encryption).
    pub size: u64,
    /// SHA-256 of the stored bytes.
    pub sha256: String,
    /// Bytes of the archive before compression.
    pub content_bytes: u64,
    /// SHA-256 of the archive before compression.
    pub content_sha256: String,
}

/// One file inside an archive, as it was on the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// Stream format, see `crypto.rs`.
    pub format: Shared,
    pub key_id: Shared,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: Shared,
    pub id: BackupId,
    pub kind: Kind,
    pub scope: Scope,
    /// The subcommand that made it: `snapshot`, `logs`, `export`, `replicate`.
    pub operation: Shared,
    pub status: Status,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub host: Shared,
    pub bkp_version: Shared,
    pub retention_days: u16,
    pub compression: Compression,
    pub encryption: Option<Encryption>,
    #[serde(deserialize_with = "exact")]
    pub objects: Vec<ObjectEntry>,
    #[serde(default, deserialize_with = "exact")]
    pub files: Vec<FileEntry>,
    /// The backup this one builds on (the previous log segment, the full export
    /// of an incremental), making chains explicit.
    #[serde(default)]
    pub parent: Option<BackupId>,
    /// Keys of objects stored by earlier backups that this one needs too (a
    /// replicate run names unchanged files by the object an earlier run stored).
    /// Retention deletes an object only when no kept manifest names it in
    /// `objects` or `uses`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "exact"
    )]
    pub uses: Vec<String>,
    /// A file stored as content-addressed chunks, shared with other backups
    /// (see `chunks.rs`): its chunk list and chunks are objects this backup
    /// needs besides `objects`. Written with schema major 2, so that a bkp
    /// that does not know chunks refuses the backup instead of restoring
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Box<chunks::Chunked>>,
    /// Kind-specific facts about the source (data file path, snapshot mode…).
    #[serde(default)]
    pub source: facts::Facts,
    /// The id of the store it was written to (from the store's marker, see
    /// `marker.rs`): under the seal, so that a copy in another store is
    /// refused there. `None` in manifests from before stores had ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<Shared>,
}

/// A list read at its exact length: read element by element, a vector grows
/// to four places for the one object most manifests name, and a catalog holds
/// a year of them.
fn exact<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut v = Vec::<T>::deserialize(d)?;
    v.shrink_to_fit();
    Ok(v)
}

impl Manifest {
    pub fn key(&self) -> String {
        manifest_key(self.kind, self.id)
    }

    /// Whether this manifest is a note: it stored nothing, neither objects nor
    /// chunks (a `logs` run that found nothing new writes one to say the log
    /// was current).
    pub fn is_note(&self) -> bool {
        self.objects.is_empty() && self.chunks.is_none()
    }

    /// Bytes this backup added to the store (chunks it shares with earlier
    /// backups are theirs).
    pub fn stored_bytes(&self) -> u64 {
        let chunks = self
            .chunks
            .as_ref()
            .map_or(0, |c| c.added_bytes.saturating_add(c.list.size));
        // Sizes a manifest records: a planted one must not overflow them.
        let own = self
            .objects
            .iter()
            .fold(0u64, |n, o| n.saturating_add(o.size));
        own.saturating_add(chunks)
    }

    /// The objects a restore of this backup reads and their stored bytes:
    /// its own objects and every chunk it names (shared ones too).
    pub fn restore_reads(&self) -> (usize, u64) {
        let own = self.objects.iter().map(|o| o.size).sum::<u64>();
        match &self.chunks {
            None => (self.objects.len(), own),
            Some(c) => (
                self.objects.len() + 1 + c.stored as usize,
                own + c.list.size + c.stored_bytes,
            ),
        }
    }

    /// The object keys this backup needs besides its chunks (which its chunk
    /// list names): `objects`, `uses`, the chunk list.
    pub fn needed_keys(&self) -> Vec<String> {
        let mut out: Vec<String> = self.objects.iter().map(|o| o.key.clone()).collect();
        out.extend(self.uses.iter().cloned());
        out.extend(self.chunks.iter().map(|c| c.list.key.clone()));
        out
    }
}

pub fn manifest_key(kind: Kind, id: BackupId) -> String {
    format!("{}{id}.json", manifest_dir(kind))
}

/// Where the manifests of `kind` live: every [`manifest_key`] of it starts so.
pub fn manifest_dir(kind: Kind) -> String {
    format!("{MANIFEST_DIR}/{}/", kind.as_str())
}

/// The key of a data object: `{kind}/{yyyy}/{mm}/{dd}/{kind}-{operation}-{id}{suffix}`.
pub fn object_key(
    kind: Kind,
    operation: &str,
    id: BackupId,
    at: OffsetDateTime,
    suffix: &str,
) -> String {
    format!(
        "{k}/{y:04}/{m:02}/{d:02}/{k}-{operation}-{id}{suffix}",
        k = kind.as_str(),
        y = at.year(),
        m = at.month() as u8,
        d = at.day(),
    )
}

/// The schema every manifest is written with, but a chunked one.
pub fn schema_string() -> Shared {
    format!("bkp.manifest/1.{SCHEMA_MINOR}").into()
}

/// The schema a chunked manifest is written with (see [`Manifest::chunks`]).
pub fn chunked_schema_string() -> Shared {
    format!("bkp.manifest/2.{SCHEMA_MINOR}").into()
}

/// Parses a manifest read from the store at `key`: untrusted bytes. Refuses
/// (with the data-error code) a document whose seal does not verify, an
/// unsealed or unencrypted one that `trust` does not excuse, one stored under
/// another backup's name (a replayed manifest), and object keys outside its
/// kind's part of the store; refuses a newer major schema version clearly.
pub fn parse(bytes: &[u8], key: &str, trust: &Trust) -> Result<Manifest> {
    parse_sealed(bytes, key, trust).map(|(m, _)| m)
}

/// [`parse`], also saying whether the manifest carried a seal that verified.
pub fn parse_sealed(bytes: &[u8], key: &str, trust: &Trust) -> Result<(Manifest, bool)> {
    parse_with_sealer(bytes, key, trust).map(|(m, s)| (m, s.is_some()))
}

/// [`parse_sealed`], naming who sealed the manifest (see [`seal::sealer_known`]).
pub fn parse_with_sealer(
    bytes: &[u8],
    key: &str,
    trust: &Trust,
) -> Result<(Manifest, Option<String>)> {
    let what = format!("manifest {key}");
    let opened = seal::open(bytes, &what, trust)?;
    let malformed = |detail: String| {
        coded(
            Code::Integrity,
            format!("{what} is not a bkp manifest ({detail})"),
        )
    };
    let schema = opened
        .value
        .get("schema")
        .and_then(|s| s.as_str())
        .ok_or_else(|| malformed("no schema".into()))?;
    // Before the fields are read: a newer major may not have this one's.
    schema_major(&what, schema)?;
    // Sealed by the current key or a trusted signer, or recorded by a sealed
    // list. A seal of a rotated-out key is refused below unless the operator
    // vouches for this one backup (`--trust ID`), as for an unsealed one.
    let (sealer, refused) = match trust.vouch(opened.sealer.as_deref(), key, bytes, &what) {
        Ok(s) => (s, None),
        Err(e) if crate::exit::classify(&e) == Some(Code::Integrity) => (None, Some(e)),
        Err(e) => return Err(e),
    };
    // serde's message may quote the stored text: it is not repeated.
    let m: Manifest = serde_json::from_value(opened.value)
        .map_err(|_| malformed("its fields do not match the manifest schema".into()))?;
    if m.key() != key {
        return Err(coded(
            Code::Integrity,
            format!(
                "{what} describes backup {} of kind {}, which belongs at {}: a manifest copied under another name is not used",
                m.id,
                m.kind.as_str(),
                m.key()
            ),
        ));
    }
    if let Some(e) = refused.filter(|_| !trust.excuses(m.id)) {
        return Err(e);
    }
    admit(&m, sealer.as_deref(), trust)?;
    Ok((m, sealer))
}

/// The major version of manifest schema `schema`: a data error when it is no
/// manifest schema, a config error (upgrade bkp) when it is newer than this
/// bkp reads.
fn schema_major(what: &str, schema: &str) -> Result<u32> {
    let version = schema.strip_prefix("bkp.manifest/").ok_or_else(|| {
        coded(
            Code::Integrity,
            format!("{what} is not a bkp manifest (unknown schema)"),
        )
    })?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            coded(
                Code::Integrity,
                format!("{what} is not a bkp manifest (bad schema version)"),
            )
        })?;
    if major > SCHEMA_MAJOR {
        return Err(coded(
            Code::Config,
            format!("{what} uses schema {version}, newer than this bkp understands ({SCHEMA_MAJOR}.x): upgrade bkp to read it"),
        ));
    }
    Ok(major)
}

/// Whether `m` has a chunked schema (major 2) but no chunk map: what a
/// catalog an older bkp rewrote keeps of a chunked manifest (it drops the
/// members it does not know), so the catalog reads such an entry again from
/// its key instead of using it.
fn lacks_chunks(m: &Manifest) -> bool {
    m.chunks.is_none() && schema_major("", &m.schema).ok() == Some(2)
}

/// How far a manifest's `started_at` may lie from its id's time: bkp makes
/// the id from the start time, so only a manifest that is not bkp's differs.
pub const ID_TIME_SLACK: time::Duration = time::Duration::MINUTE;

/// What `trust` asks of every manifest it uses, read from its own key or from
/// the catalog, `vouch` saying who vouches for it ([`seal::Trust::vouch`]):
/// a seal (or a sealed list's record) unless excused, encryption unless
/// excused or recorded, a start time its id agrees with, object keys of its
/// own kind.
pub(crate) fn admit(m: &Manifest, vouch: Option<&str>, trust: &Trust) -> Result<()> {
    let what = format!("manifest {}", m.key());
    let sealed = vouch.is_some();
    let listed = vouch.is_some_and(|v| v.starts_with(seal::LEGACY));
    // Read from the catalog too: a newer major is refused there as from its
    // key. A catalog entry without its chunks never gets here: the catalog
    // reads that manifest again from its key ([`lacks_chunks`]), so this
    // refuses only a manifest that itself lacks them.
    if lacks_chunks(m) {
        return Err(coded(
            Code::Integrity,
            format!(
                "{what} has schema {} but no chunk map, which every manifest of that schema has: it is damaged or not bkp's, and is not used; restore another backup (`bkp list` shows them)",
                m.schema,
            ),
        ));
    }
    schema_major(&what, &m.schema)?;
    if trust.checks() && !sealed && !trust.excuses(m.id) {
        return Err(seal::unsealed_error(&what, m.id));
    }
    marker::check_bound(m, vouch, trust)?;
    // A signer (a write-only host) vouches only for its own hosts and kinds.
    trust.check_scope(vouch, &seal::manifest_claim(m), &what)?;
    if let Some(t) = m.id.timestamp() {
        if (m.started_at - t).abs() > ID_TIME_SLACK {
            return Err(coded(
                Code::Integrity,
                format!(
                    "{what} says its backup started at {}, but its id was made at {}: bkp makes a backup's id from its start time, so this manifest is not bkp's, and it is not used",
                    rfc3339(m.started_at),
                    rfc3339(t),
                ),
            ));
        }
    }
    if trust.checks() && m.encryption.is_none() && !listed && !trust.plaintext_ok(m.kind, m.id) {
        return Err(coded(
            Code::Integrity,
            format!(
                "{what} says backup {} is not encrypted, but [encryption] is configured: it is not used. If that backup really was stored unencrypted, accept it with `--trust {}`",
                m.id, m.id
            ),
        ));
    }
    m.check_keys()
}

/// Whether `key` is a plain object key under `{kind}/`: no empty, `.` or `..`
/// segment, no control characters, nothing bkp keeps for itself.
pub fn is_data_key(kind: Kind, key: &str) -> bool {
    let Some(rest) = key
        .strip_prefix(kind.as_str())
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    key.len() <= 1024
        && !rest.is_empty()
        && !key.chars().any(|c| c.is_control() || c == '\\')
        && rest
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

impl Manifest {
    /// Refuses object keys (its own and those it uses) that are not data keys
    /// of its kind (see [`is_data_key`]).
    pub fn check_keys(&self) -> Result<()> {
        let keys = self.objects.iter().map(|o| o.key.as_str());
        let list = self.chunks.iter().map(|c| c.list.key.as_str());
        for k in keys.chain(self.uses.iter().map(String::as_str)).chain(list) {
            if !is_data_key(self.kind, k) {
                return Err(coded(
                    Code::Integrity,
                    format!(
                        "manifest {} names object {:?}, outside the {} part of the store: it is not used",
                        self.key(),
                        k.chars().take(200).collect::<String>(),
                        self.kind.as_str()
                    ),
                ));
            }
        }
        if let Some(c) = &self.chunks {
            let file = self.files.iter().find(|f| f.name == c.file);
            let checked = match file {
                Some(f) => c.check(f.size),
                None => Err(format!("its file {:?} is not among its files", c.file)),
            };
            if let Err(why) = checked {
                return Err(coded(
                    Code::Integrity,
                    format!(
                        "manifest {} has a chunk map that cannot be right ({why}): it is not used",
                        self.key()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Writes `m` as the last step of a backup (create-only), sealed when keys are
/// configured.
pub fn write(store: &dyn Store, m: &Manifest, keys: Option<&Keyring>) -> Result<()> {
    let stored = write_only(store, m, keys)?;
    catalog::note(store, keys, m, &stored);
    Ok(())
}

/// [`write`] without adding the manifest to the catalog.
fn write_only(
    store: &dyn Store,
    m: &Manifest,
    keys: Option<&Keyring>,
) -> Result<crate::store::ObjectInfo> {
    let bytes = seal::encode(m, keys).context("failed to encode the manifest")?;
    // No bkp reads a larger one: it is not stored.
    if bytes.len() as u64 > crate::limits::MANIFEST {
        anyhow::bail!(
            "manifest {} would take {}, more than the {} bkp reads of a manifest: nothing of this run is a backup. Split what one run backs up (a replicated set of this many files: several [replicate] sources)",
            m.key(),
            crate::ui::size(bytes.len() as u64),
            crate::ui::size(crate::limits::MANIFEST)
        );
    }
    store
        .put_new(&m.key(), &bytes, &Vec::new())
        .with_context(|| {
            format!(
                "failed to write manifest {} to {}",
                m.key(),
                store.identity()
            )
        })
}

/// How far after this host's clock a manifest's id may be dated and still
/// be taken for a backup (its writer's clock ahead): see [`Unreadable::is_junk`].
pub const JUNK_AHEAD: time::Duration = time::Duration::DAY;

/// A manifest that could not be read, reported instead of silently skipped.
#[derive(Debug)]
pub struct Unreadable {
    pub key: String,
    pub error: String,
    /// The class of the failure: a damaged manifest, or a store that did not
    /// answer (which says nothing about the manifest).
    pub code: Option<Code>,
}

impl Unreadable {
    /// The backup its key names (`manifests/{kind}/{id}.json`), if any.
    pub fn id(&self) -> Option<BackupId> {
        let name = self.key.rsplit('/').next()?.strip_suffix(".json")?;
        name.parse().ok()
    }

    /// Whether it cannot be a backup bkp made: its key names no backup id, or
    /// one dated more than [`JUNK_AHEAD`] after now (bkp makes a backup's id
    /// from its start). Nothing waits for junk to become readable, as for a
    /// damaged manifest that may be the newest backup: it would wait forever.
    /// It is named, left out, and `status` alarms while it is there. A store
    /// that did not answer says nothing about the manifest: never junk.
    pub fn is_junk(&self) -> bool {
        if self.code == Some(Code::Transient) {
            return false;
        }
        match self.id().and_then(|id| id.timestamp()) {
            Some(t) => t > OffsetDateTime::now_utc() + JUNK_AHEAD,
            None => true,
        }
    }

    /// One line naming a junk manifest ([`Unreadable::is_junk`]), its key
    /// shown printable (a planted name may hold escape bytes).
    pub fn junk_line(&self) -> String {
        let why = match self.id().and_then(|id| id.timestamp()) {
            Some(t) => format!("its id is dated {}, in the future", rfc3339(t)),
            None => "its name is no backup id".to_string(),
        };
        format!(
            "{} is not a backup bkp made ({why}) and cannot be read: it is left out; remove it from the store",
            crate::ui::printable(&self.key)
        )
    }

    /// Whether its backup may have started in `(after, until]` (either bound
    /// open when `None`): its id's time says so, or its key names no time.
    pub fn may_be_within(
        &self,
        after: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
    ) -> bool {
        self.id()
            .and_then(|id| id.timestamp())
            .is_none_or(|t| after.is_none_or(|a| t > a) && until.is_none_or(|u| t <= u))
    }
}

/// The error for manifests that could not be read where they matter: with the
/// store's code when the store did not answer, else the data-error code.
pub fn unreadable_error(what: &str, bad: &[&Unreadable]) -> anyhow::Error {
    let code =
        crate::exit::most_specific(bad.iter().map(|u| Some(u.code.unwrap_or(Code::Integrity))))
            .unwrap_or(Code::Integrity);
    let list: Vec<String> = bad
        .iter()
        .map(|u| format!("{}: {}", u.key, u.error))
        .collect();
    coded(
        code,
        format!(
            "{what}, but {} manifest{} could not be read ({}); {}",
            bad.len(),
            if bad.len() == 1 { "" } else { "s" },
            list.join("; "),
            if code == Code::Transient {
                "run again when the store answers"
            } else {
                "`bkp verify` names what is damaged, and `bkp list` the backups that can be used"
            }
        ),
    )
}

/// Refuses, with [`unreadable_error`] saying `what`, when any of `unreadable`
/// may have started in `(after, until]` ([`Unreadable::may_be_within`]): where
/// a manifest that could not be read may be the one that matters.
pub fn refuse_unreadable_within(
    unreadable: &[Unreadable],
    after: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    // Junk is named where it is read, and stops nothing.
    let within: Vec<_> = unreadable
        .iter()
        .filter(|u| !u.is_junk() && u.may_be_within(after, until))
        .collect();
    if within.is_empty() {
        return Ok(());
    }
    Err(unreadable_error(&what(), &within))
}

/// Every manifest in the store (optionally of one kind), oldest first, and
/// those that could not be read: through the catalog, which is checked against
/// the manifests stored since it was written (see [`catalog`]).
pub fn list(
    store: &dyn Store,
    trust: &Trust,
    kind: Option<Kind>,
) -> Result<(Vec<Manifest>, Vec<Unreadable>)> {
    list_to(store, trust, kind, catalog::Depth::Recent)
}

/// The manifests `keep` keeps (of `kind`, or of every kind), oldest first,
/// and those that could not be read: as [`list`], but the others are dropped
/// as the catalog is read ([`catalog::fold`]), so that a run that needs a few
/// backups of a history years long never holds all of it.
pub fn gather(
    store: &dyn Store,
    trust: &Trust,
    kind: Option<Kind>,
    keep: impl Fn(&Manifest) -> bool,
) -> Result<(Vec<Manifest>, Vec<Unreadable>)> {
    let mut good = Vec::new();
    let bad = collect(store, trust, kind, &mut good, |m| keep(&m).then_some(m))?;
    good.sort_unstable_by_key(|m| (m.started_at, m.id));
    Ok((good, bad))
}

/// What `pick` makes of each manifest (of `kind`, or of every kind) as the
/// catalog is read ([`catalog::fold`]), added to `out` in no order; those
/// that could not be read. A kind whose read starts again forgets only what
/// was made of its own.
pub fn collect<T>(
    store: &dyn Store,
    trust: &Trust,
    kind: Option<Kind>,
    out: &mut Vec<T>,
    mut pick: impl FnMut(Manifest) -> Option<T>,
) -> Result<Vec<Unreadable>> {
    let mut bad = Vec::new();
    for k in Kind::ALL
        .into_iter()
        .filter(|k| kind.is_none_or(|w| w == *k))
    {
        let start = out.len();
        bad.extend(catalog::fold(
            store,
            trust,
            k,
            catalog::Depth::Recent,
            &mut |m| match m {
                Some(m) => out.extend(pick(m)),
                None => out.truncate(start),
            },
        )?);
    }
    Ok(bad)
}

/// The newest manifest (by start, then id) that `fits` (of `kind`, or of
/// every kind), holding only the newest so far as the catalog is read (see
/// [`gather`]), and those that could not be read.
pub fn newest(
    store: &dyn Store,
    trust: &Trust,
    kind: Option<Kind>,
    fits: impl Fn(&Manifest) -> bool,
) -> Result<(Option<Manifest>, Vec<Unreadable>)> {
    let ([best], bad) = newest_each(store, trust, kind, catalog::Depth::Recent, [&fits])?;
    Ok((best, bad))
}

/// Whether `m` is newer (by start, then id) than `than`, or `than` is none:
/// the order [`list`] sorts by, so that the newest kept is the last listed.
pub fn is_newer(m: &Manifest, than: &Option<Manifest>) -> bool {
    than.as_ref()
        .is_none_or(|b| (m.started_at, m.id) > (b.started_at, b.id))
}

/// [`newest`] for each of `fits` in one read of the catalog, which checks the
/// store as `depth` says.
pub fn newest_each<const N: usize>(
    store: &dyn Store,
    trust: &Trust,
    kind: Option<Kind>,
    depth: catalog::Depth,
    fits: [&dyn Fn(&Manifest) -> bool; N],
) -> Result<([Option<Manifest>; N], Vec<Unreadable>)> {
    let newer = is_newer;
    let mut best: [Option<Manifest>; N] = std::array::from_fn(|_| None);
    let mut bad = Vec::new();
    for k in Kind::ALL
        .into_iter()
        .filter(|k| kind.is_none_or(|w| w == *k))
    {
        let mut of_kind: [Option<Manifest>; N] = std::array::from_fn(|_| None);
        bad.extend(catalog::fold(store, trust, k, depth, &mut |m| match m {
            Some(m) => {
                for (slot, fits) in of_kind.iter_mut().zip(fits) {
                    if fits(&m) && newer(&m, slot) {
                        *slot = Some(m.clone());
                    }
                }
            }
            None => of_kind = std::array::from_fn(|_| None),
        })?);
        for (slot, m) in best.iter_mut().zip(of_kind) {
            if let Some(m) = m.filter(|m| newer(m, slot)) {
                *slot = Some(m);
            }
        }
    }
    Ok((best, bad))
}

/// [`list`], the catalog checked against every manifest key in the store:
/// for runs that delete (`cleanup`) or vouch for everything (`verify`).
pub fn list_complete(
    store: &dyn Store,
    trust: &Trust,
    kind: Option<Kind>,
) -> Result<(Vec<Manifest>, Vec<Unreadable>)> {
    list_to(store, trust, kind, catalog::Depth::Complete)
}

fn list_to(
    store: &dyn Store,
    trust: &Trust,
    kind: Option<Kind>,
    depth: catalog::Depth,
) -> Result<(Vec<Manifest>, Vec<Unreadable>)> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for k in Kind::ALL {
        if kind.is_some_and(|want| want != k) {
            continue;
        }
        let (g, b) = catalog::read(store, trust, k, depth)?;
        // Each kind's list is sorted already: one kind's is taken as it is,
        // not copied.
        if good.is_empty() {
            good = g;
        } else {
            good.extend(g);
            // No scratch space, as a stable sort takes: (time, id) is unique
            // but for one id planted under two kinds, whose order does not
            // matter (a restore reads the manifest it chose again).
            good.sort_unstable_by_key(|m| (m.started_at, m.id));
        }
        bad.extend(b);
    }
    Ok((good, bad))
}

/// Ids listed under more than one kind in `all`, each with the keys of its
/// manifests. Every run of bkp takes an id of its own, so all but one of
/// them were not written by a bkp run; and retention, copies and cleanup
/// decide by id, so neither may be acted on as if it were the other.
pub fn shared_ids(all: &[Manifest]) -> Vec<(BackupId, Vec<String>)> {
    shared_ids_of(all.iter().map(|m| (m.id, m.kind)))
}

/// [`shared_ids`] of backups given by id and kind (their briefs).
pub fn shared_ids_of(
    all: impl IntoIterator<Item = (BackupId, Kind)>,
) -> Vec<(BackupId, Vec<String>)> {
    let mut ids: Vec<(BackupId, Kind)> = all.into_iter().collect();
    ids.sort_unstable();
    let mut out: Vec<(BackupId, Vec<String>)> = Vec::new();
    for w in ids.windows(2).filter(|w| w[0].0 == w[1].0) {
        let (id, a, b) = (w[0].0, w[0].1, w[1].1);
        match out.last_mut() {
            Some((last, keys)) if *last == id => keys.push(manifest_key(b, id)),
            _ => out.push((id, vec![manifest_key(a, id), manifest_key(b, id)])),
        }
    }
    out
}

/// What [`shared_ids`] found of `id` (its manifests `keys` in `store`), and
/// what to do about it.
pub fn shared_id_error(id: BackupId, keys: &[String], store: &dyn Store) -> String {
    format!(
        "backup id {id} is listed more than once in {}, as {}: bkp gives every run an id of \
         its own, so only one of them can be a bkp run's. Compare the manifests (each names \
         the host that wrote it and what it stored), delete from the store by hand those no \
         run of yours wrote, and if a host's signer sealed them, remove that signer's \
         [[encryption.signer]] table",
        store.identity(),
        keys.join(" and "),
    )
}

/// Finds a backup by id, or the newest of `kind` for `latest`.
pub fn find(store: &dyn Store, trust: &Trust, which: &str, kind: Option<Kind>) -> Result<Manifest> {
    if which == "latest" {
        let (newest, _) = newest(store, trust, kind, |_| true)?;
        return newest.ok_or_else(|| {
            coded(
                Code::NotFound,
                format!(
                    "no {}backup in {}: run `bkp snapshot` first, or check the store settings",
                    kind.map(|k| format!("{} ", k.as_str())).unwrap_or_default(),
                    store.identity()
                ),
            )
        });
    }
    let id: BackupId = match which.parse() {
        Ok(id) => id,
        Err(e) if !is_id_prefix(which) => return Err(coded(Code::NotFound, format!("{e:#}"))),
        Err(_) => return find_prefix(store, trust, which, kind),
    };
    for k in Kind::ALL {
        if kind.is_some_and(|want| want != k) {
            continue;
        }
        let key = manifest_key(k, id);
        if let Some(o) = store.head(&key)? {
            // One the store shows larger than any manifest is not read.
            let cap = crate::limits::MANIFEST;
            if o.size > cap {
                let what = format!("manifest {key} in {}", store.identity());
                return Err(crate::limits::too_large(&what, cap));
            }
            return parse(&store.get_at_most(&key, cap)?, &key, trust);
        }
    }
    Err(coded(
        Code::NotFound,
        format!(
            "no backup with id {id} in {}: `bkp list` shows the backups there",
            store.identity()
        ),
    ))
}

/// Whether `s` could be the start of a backup id as `bkp list` prints it.
fn is_id_prefix(s: &str) -> bool {
    (4..36).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The one backup whose id starts with `prefix`, read from its own key.
fn find_prefix(
    store: &dyn Store,
    trust: &Trust,
    prefix: &str,
    kind: Option<Kind>,
) -> Result<Manifest> {
    let prefix = prefix.to_ascii_lowercase();
    let (all, unreadable) = gather(store, trust, kind, |m| {
        m.id.to_string().starts_with(&prefix)
    })?;
    let matches: Vec<&Manifest> = all.iter().collect();
    let refused: Vec<&Unreadable> = unreadable
        .iter()
        .filter(|u| u.id().is_some_and(|id| id.to_string().starts_with(&prefix)))
        .collect();
    match (matches.as_slice(), refused.is_empty()) {
        ([m], true) => catalog::reread(store, trust, m),
        ([], true) => Err(coded(
            Code::NotFound,
            format!(
                "no backup id in {} starts with {prefix}: `bkp list` shows the backups there",
                store.identity()
            ),
        )),
        ([], false) => Err(unreadable_error(
            &format!("the backup starting with {prefix} cannot be used"),
            &refused,
        )),
        _ => {
            let mut ids: Vec<String> = matches.iter().map(|m| m.id.to_string()).collect();
            ids.extend(
                refused
                    .iter()
                    .filter_map(|u| u.id())
                    .map(|id| id.to_string()),
            );
            let n = ids.len();
            ids.truncate(5);
            Err(coded(
                Code::Config,
                format!(
                    "{prefix} is the start of {n} backup ids ({}{}): give more of the id",
                    ids.join(", "),
                    if n > 5 { ", …" } else { "" }
                ),
            ))
        }
    }
}

/// The host name, for manifests, reports and the store marker: `BKP_HOSTNAME`,
/// else the kernel's.
pub fn hostname() -> String {
    if let Some(h) = std::env::var("BKP_HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
    {
        return h.trim().to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    /// Makes `m` a backup of one file stored as chunks.
    pub fn with_chunks(m: &mut Manifest) {
        use crate::manifest::chunks::{plain_naming, Chunked, ListRef, MIN_CHUNK};
        m.schema = crate::manifest::chunked_schema_string();
        m.files = vec![crate::manifest::FileEntry {
            name: "db".into(),
            size: MIN_CHUNK,
            sha256: "22".into(),
        }];
        m.chunks = Some(Box::new(Chunked {
            file: "db".into(),
            chunk_size: MIN_CHUNK,
            naming: plain_naming("zstd"),
            count: 1,
            stored: 1,
            stored_bytes: 5,
            added: 1,
            added_bytes: 5,
            list: ListRef {
                key: format!("duckdb/chunks/lists/{}.json.zst", m.id),
                size: 9,
                sha256: "33".into(),
            },
        }));
    }

    #[test]
    fn shared_ids_names_every_manifest_of_an_id_listed_under_more_than_one_kind() {
        let at = time::macros::datetime!(2026-11-20 06:00 UTC);
        let a = sample(Kind::Tigerbeetle, at);
        let b = sample(Kind::Tigerbeetle, at + time::Duration::hours(1));
        assert!(shared_ids(&[a.clone(), b.clone()]).is_empty());
        let as_kind = |m: &Manifest, kind| Manifest { kind, ..m.clone() };
        let all = [
            a.clone(),
            b.clone(),
            as_kind(&b, Kind::Parquet),
            as_kind(&a, Kind::Duckdb),
            as_kind(&a, Kind::Parquet),
        ];
        let mut want = vec![
            (a.id, vec![Kind::Tigerbeetle, Kind::Duckdb, Kind::Parquet]),
            (b.id, vec![Kind::Tigerbeetle, Kind::Parquet]),
        ];
        want.sort();
        let want: Vec<(BackupId, Vec<String>)> = want
            .into_iter()
            .map(|(id, kinds)| {
                let mut keys: Vec<String> =
                    kinds.into_iter().map(|k| manifest_key(k, id)).collect();
                keys.sort();
                (id, keys)
            })
            .collect();
        let got: Vec<(BackupId, Vec<String>)> = shared_ids(&all)
            .into_iter()
            .map(|(id, mut keys)| {
                keys.sort();
                (id, keys)
            })
            .collect();
        assert_eq!(got, want);
    }

    pub fn sample(kind: Kind, at: OffsetDateTime) -> Manifest {
        let id = BackupId::new_v7(at);
        Manifest {
            schema: schema_string(),
            id,
            kind,
            scope: Scope::Full,
            operation: "snapshot".into(),
            status: Status::Completed,
            started_at: at,
            finished_at: at,
            host: "h".into(),
            bkp_version: "0".into(),
            retention_days: 365,
            compression: Compression::Zstd {
                level: 3,
                threads: 1,
            },
            encryption: None,
            objects: vec![ObjectEntry {
                key: object_key(kind, "snapshot", id, at, ".tar.zst"),
                size: 10,
                sha256: "00".into(),
                content_bytes: 20,
                content_sha256: "11".into(),
            }],
            files: vec![],
            parent: None,
            uses: vec![],
            chunks: None,
            source: facts::Facts::new(),
            store: None,
        }
    }

    /// A year of manifests is held at once: each list as long as it is, not
    /// the four places a vector grows to for its first element.
    #[test]
    fn a_manifest_read_holds_its_lists_at_their_length() {
        let at = OffsetDateTime::from_unix_timestamp(1_760_140_800).unwrap();
        let mut m = sample(Kind::Tigerbeetle, at);
        m.files = vec![FileEntry {
            name: "0_0.tigerbeetle".into(),
            size: 20,
            sha256: "11".into(),
        }];
        m.uses = vec!["x".into()];
        let read: Manifest = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(read, m);
        assert_eq!(read.objects.capacity(), 1);
        assert_eq!(read.files.capacity(), 1);
        assert_eq!(read.uses.capacity(), 1);
    }

    #[test]
    fn an_unreadable_manifest_is_placed_in_time_by_its_key() {
        let at = OffsetDateTime::from_unix_timestamp(1_760_140_800).unwrap();
        let u = |key: String| Unreadable {
            key,
            error: String::new(),
            code: None,
        };
        let dated = u(format!(
            "manifests/tigerbeetle/{}.json",
            BackupId::new_v7(at)
        ));
        let hour = time::Duration::HOUR;
        assert!(dated.may_be_within(Some(at - hour), None));
        assert!(
            !dated.may_be_within(Some(at), None),
            "not newer than itself"
        );
        assert!(!dated.may_be_within(None, Some(at - hour)));
        assert!(dated.may_be_within(Some(at - hour), Some(at)));
        // A key that names no time may be anywhere.
        assert!(u("manifests/tigerbeetle/garbage.json".into()).may_be_within(Some(at), Some(at)));
    }

    #[test]
    fn keys_follow_the_layout() {
        let at = OffsetDateTime::from_unix_timestamp(1_760_140_800).unwrap(); // 2025-10-11
        let m = sample(Kind::Tigerbeetle, at);
        assert_eq!(
            m.objects[0].key,
            format!(
                "tigerbeetle/2025/10/11/tigerbeetle-snapshot-{}.tar.zst",
                m.id
            )
        );
        assert_eq!(m.key(), format!("manifests/tigerbeetle/{}.json", m.id));
    }

    #[test]
    fn write_list_find_round_trip() {
        let store = MemoryStore::new();
        let t0 = OffsetDateTime::from_unix_timestamp(1_760_140_800).unwrap();
        let a = sample(Kind::Tigerbeetle, t0);
        let b = sample(Kind::Tigerbeetle, t0 + time::Duration::hours(6));
        write(&store, &b, None).unwrap();
        write(&store, &a, None).unwrap();
        assert!(
            write(&store, &a, None).is_err(),
            "manifests are create-only"
        );
        let (all, bad) = list(&store, &Trust::none(), None).unwrap();
        assert!(bad.is_empty());
        assert_eq!(all, vec![a.clone(), b.clone()]);
        assert_eq!(
            find(&store, &Trust::none(), "latest", Some(Kind::Tigerbeetle)).unwrap(),
            b
        );
        assert_eq!(
            find(&store, &Trust::none(), &a.id.to_string(), None).unwrap(),
            a
        );
        let missing = find(
            &store,
            &Trust::none(),
            &BackupId::new_v7(t0).to_string(),
            None,
        )
        .unwrap_err();
        assert_eq!(crate::exit::exit_code(&missing), crate::exit::NOT_FOUND);
        let none = find(&store, &Trust::none(), "latest", Some(Kind::Duckdb)).unwrap_err();
        assert_eq!(crate::exit::exit_code(&none), crate::exit::NOT_FOUND);
    }

    #[test]
    fn gather_and_newest_keep_what_they_are_asked_for_of_a_history_read_as_it_streams() {
        let store = MemoryStore::new();
        let trust = Trust::none();
        // Older than the catalog's listing window: handed out as the base
        // is parsed.
        let t0 = OffsetDateTime::now_utc() - time::Duration::days(40);
        let mut written = Vec::new();
        for (i, kind) in [Kind::Duckdb, Kind::Tigerbeetle, Kind::Duckdb, Kind::Parquet]
            .into_iter()
            .enumerate()
        {
            let m = sample(kind, t0 + time::Duration::hours(i as i64));
            write(&store, &m, None).unwrap();
            written.push(m);
        }
        // The catalogs are written, then read again (not from this
        // process's cache).
        list(&store, &trust, None).unwrap();
        catalog::forget_cached();
        let (newest_any, bad) = newest(&store, &trust, None, |_| true).unwrap();
        assert!(bad.is_empty());
        assert_eq!(newest_any.unwrap().id, written[3].id);
        let (newest_duckdb, _) = newest(&store, &trust, Some(Kind::Duckdb), |_| true).unwrap();
        assert_eq!(newest_duckdb.unwrap().id, written[2].id);
        let (none, _) = newest(&store, &trust, None, |m| m.kind == Kind::Sqlite).unwrap();
        assert!(none.is_none());
        let (duckdb, _) = gather(&store, &trust, None, |m| m.kind == Kind::Duckdb).unwrap();
        let ids: Vec<BackupId> = duckdb.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![written[0].id, written[2].id]);
        assert_eq!(
            find(&store, &trust, "latest", None).unwrap().id,
            written[3].id
        );
    }

    #[test]
    fn a_unique_prefix_of_an_id_finds_its_backup() {
        let store = MemoryStore::new();
        let t0 = OffsetDateTime::from_unix_timestamp(1_760_140_800).unwrap();
        let a = sample(Kind::Duckdb, t0);
        let b = sample(Kind::Duckdb, t0 + time::Duration::milliseconds(1));
        write(&store, &a, None).unwrap();
        write(&store, &b, None).unwrap();
        let trust = Trust::none();
        let (sa, sb) = (a.id.to_string(), b.id.to_string());
        let common = sa
            .chars()
            .zip(sb.chars())
            .take_while(|(x, y)| x == y)
            .count();
        // Two ids a millisecond apart share their first 11 digits or so.
        let ambiguous = find(&store, &trust, &sa[..common], None).unwrap_err();
        assert_eq!(crate::exit::exit_code(&ambiguous), crate::exit::CONFIG);
        assert!(format!("{ambiguous:#}").contains(&sb), "{ambiguous:#}");
        let unique = &sa[..common + 1];
        assert_eq!(find(&store, &trust, unique, None).unwrap(), a);
        assert_eq!(
            find(&store, &trust, &unique.to_uppercase(), Some(Kind::Duckdb)).unwrap(),
            a
        );
        let none = find(&store, &trust, "ffff", None).unwrap_err();
        assert_eq!(crate::exit::exit_code(&none), crate::exit::NOT_FOUND);
        let other_kind = find(&store, &trust, unique, Some(Kind::Tigerbeetle)).unwrap_err();
        assert_eq!(crate::exit::exit_code(&other_kind), crate::exit::NOT_FOUND);
    }

    #[test]
    fn newer_major_is_refused_and_minor_is_accepted() {
        let m = sample(Kind::Duckdb, OffsetDateTime::UNIX_EPOCH);
        let mut v = serde_json::to_value(&m).unwrap();
        v["schema"] = "bkp.manifest/1.7".into();
        v["field_from_the_future"] = 1.into();
        let mut expected = m.clone();
        expected.schema = "bkp.manifest/1.7".into();
        assert_eq!(
            parse(&serde_json::to_vec(&v).unwrap(), &m.key(), &Trust::none()).unwrap(),
            expected
        );
        v["schema"] = "bkp.manifest/3.0".into();
        let err = parse(&serde_json::to_vec(&v).unwrap(), &m.key(), &Trust::none()).unwrap_err();
        assert!(format!("{err:#}").contains("upgrade bkp"));
        // What a catalog holds is admitted by the same rules: a newer major is
        // not used, nor a chunked manifest without its chunks (the catalog
        // reads such an entry again from its key first: see `catalog::read`).
        let mut newer = m.clone();
        newer.schema = "bkp.manifest/3.0".into();
        let err = admit(&newer, Some("hmac:k"), &Trust::none()).unwrap_err();
        assert!(format!("{err:#}").contains("upgrade bkp"), "{err:#}");
        newer.schema = "bkp.manifest/2.0".into();
        assert!(lacks_chunks(&newer));
        let err = admit(&newer, Some("hmac:k"), &Trust::none()).unwrap_err();
        assert!(format!("{err:#}").contains("no chunk map"), "{err:#}");
    }

    #[test]
    fn unreadable_manifests_are_reported_not_skipped() {
        let store = MemoryStore::new();
        store
            .put_new("manifests/tigerbeetle/x.json", b"{not json", &vec![])
            .unwrap();
        let (all, bad) = list(&store, &Trust::none(), None).unwrap();
        assert!(all.is_empty());
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].key, "manifests/tigerbeetle/x.json");
    }
}
