//! The store marker, `bkp-store.json`, written once by `bkp init`: which
//! installation a store (or prefix) belongs to. It names the key ids the store
//! was started with and is sealed like a manifest, so a second config with
//! another key that points at the same prefix is refused before it writes a
//! backup there, instead of filling the store with manifests that the first
//! installation then refuses. Every run that writes checks it first: a backup
//! run as it begins, and any other run before it writes a catalog ([`ensure`]).
//!
//! The marker also holds the store's id, random, which every manifest written
//! since goes on to carry under its seal ([`Manifest::store`](super::Manifest)):
//! a genuine manifest copied from another store of the same key names that
//! store's id and is refused ([`check_bound`]). With keys the marker is
//! mandatory: a key holder's backup run on a new store without one writes it
//! first (create-only, as `bkp init` does); on a store that already holds
//! backups it only warns, since a new marker (a new id) would disown them. A manifest sealed without a store id is
//! used when it was made before the marker was (its sealed id's time against
//! the marker's `created_at`), or a sealed list of `bkp trust-legacy` records
//! it; a marker written before stores had ids leaves the store unbound, as
//! before, until it is replaced (remove it and run `bkp init`).

use std::sync::Mutex;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use time::OffsetDateTime;

use super::{seal, Trust};
use crate::exit::{coded, Code};
use crate::store::Store;

pub const KEY: &str = "bkp-store.json";

/// Where an escrow's word for the marker lives (see [`vouch_for_escrows`]).
pub const ESCROW_DIR: &str = "escrow";

/// A key holder's statement, sealed for its escrows too, that the marker
/// with these bytes is this installation's: the marker, written once,
/// carries no seal of an escrow configured after it was written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscrowVouch {
    schema: String,
    /// SHA-256 of the marker's exact bytes.
    marker_sha256: String,
}

const VOUCH_SCHEMA: &str = "bkp.marker-escrow/1";

pub fn vouch_key(escrow_id: &str) -> String {
    format!("{ESCROW_DIR}/{escrow_id}.json")
}

/// Makes the marker of `store` readable by each configured escrow's
/// identity: where its seal lacks an escrow's, a statement vouching for its
/// bytes, sealed with the key and the escrows, is written beside it
/// (create-only). Only a key holder does this.
pub fn vouch_for_escrows(store: &dyn Store, trust: &Trust) -> Result<()> {
    let Some(keys) = trust.keys().filter(|k| !k.escrow().is_empty()) else {
        return Ok(());
    };
    if !trust.key_holder() {
        return Ok(());
    }
    let bytes = match store.get_at_most(KEY, crate::limits::MARKER) {
        Ok(b) => b,
        Err(e) if crate::exit::classify(&e) == Some(Code::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    // Only a marker a key of this config sealed (the current one, or one
    // kept after a rotation) is vouched for: never one the store made up.
    let ours = seal::open(&bytes, KEY, trust)
        .is_ok_and(|o| o.sealed && o.sealer.as_deref().is_some_and(|s| s.starts_with("hmac:")));
    if !ours {
        return Ok(());
    }
    let digest = crate::stages::hash::hex(&sha2::Sha256::digest(&bytes));
    let doc = EscrowVouch {
        schema: VOUCH_SCHEMA.to_string(),
        marker_sha256: digest.clone(),
    };
    for e in keys.escrow() {
        if seal::escrow_sealed(&bytes, e) {
            continue;
        }
        let key = vouch_key(e.id());
        let fail = |err: anyhow::Error| {
            err.context(format!(
                "failed to write {key}, which lets escrow {} read the store marker",
                e.id()
            ))
        };
        // One already there must be sealed by a key of this config (a
        // rotated-out one too: its escrow seal still holds) and for the
        // escrow, for these bytes: anything else (stale, planted) is replaced.
        match store.get_at_most(&key, crate::limits::MARKER) {
            Ok(found) => {
                if statement_holds(&found, &key, trust, e, &digest) {
                    continue;
                }
                crate::ui::log(
                    crate::ui::Priority::Warning,
                    &format!("bkp: warning: {key} does not vouch for this store's marker for escrow {}: it is replaced", e.id()),
                );
                store.delete(&key).map_err(fail)?;
            }
            Err(err) if crate::exit::classify(&err) == Some(Code::NotFound) => {}
            Err(err) => return Err(fail(err)),
        }
        match store.put_new(&key, &seal::encode(&doc, Some(keys))?, &Vec::new()) {
            Ok(_) => {}
            Err(err) if crate::store::is_already_exists(&err) => {}
            Err(err) => return Err(fail(err)),
        }
    }
    Ok(())
}

/// Whether the statement `bytes` (at `key`) vouches for the marker of
/// SHA-256 `digest` for escrow `e`, sealed by a key this config holds.
pub fn statement_holds(
    bytes: &[u8],
    key: &str,
    trust: &Trust,
    e: &crate::crypto::Escrow,
    digest: &str,
) -> bool {
    seal::escrow_sealed(bytes, e)
        && seal::open(bytes, key, trust).is_ok_and(|o| {
            o.sealed
                && o.sealer.as_deref().is_some_and(|s| s.starts_with("hmac:"))
                && serde_json::from_value::<EscrowVouch>(o.value)
                    .is_ok_and(|v| v.schema == VOUCH_SCHEMA && v.marker_sha256 == digest)
        })
}

/// The marker `bytes`, whose seal this config cannot check, when this
/// config's key is an identity (an escrow's vault) and the marker names the
/// store id the config pins. Its time is not believed: it binds from the
/// beginning, so no manifest that names no store is admitted by it.
fn pinned_unsealed(trust: &Trust, bytes: &[u8]) -> Option<Marker> {
    let pinned = trust.pinned_store()?;
    trust.keys()?.current().escrow_text()?;
    let mut v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.as_object_mut()?.remove(seal::FIELD);
    let mut m: Marker = serde_json::from_value(v).ok()?;
    m.created_at = OffsetDateTime::UNIX_EPOCH;
    (m.store_id.as_deref() == Some(pinned)).then_some(m)
}

/// The marker `bytes`, sealed by a key this config does not hold, when a key
/// holder vouched for exactly these bytes for the escrow this config holds
/// (see [`vouch_for_escrows`]).
fn vouched_by_escrow(store: &dyn Store, trust: &Trust, bytes: &[u8]) -> Result<Option<Marker>> {
    let Some(keys) = trust.keys() else {
        return Ok(None);
    };
    let digest = crate::stages::hash::hex(&sha2::Sha256::digest(bytes));
    let key = vouch_key(keys.current().id());
    let doc = match store.get_at_most(&key, crate::limits::MARKER) {
        Ok(b) => b,
        Err(e) if crate::exit::classify(&e) == Some(Code::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let what = format!("{key} of {}", store.identity());
    let opened = match seal::open(&doc, &what, trust) {
        Ok(o) => o,
        Err(e) => {
            crate::ui::log(
                crate::ui::Priority::Warning,
                &format!("bkp: warning: {e:#}; it is not used"),
            );
            return Ok(None);
        }
    };
    let by_key = opened
        .sealer
        .as_deref()
        .is_some_and(|s| trust.is_key_holder(s));
    let vouch: Option<EscrowVouch> = serde_json::from_value(opened.value).ok();
    if !by_key || vouch.is_none_or(|v| v.schema != VOUCH_SCHEMA || v.marker_sha256 != digest) {
        return Ok(None);
    }
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| {
        coded(
            Code::Integrity,
            format!("the store marker {KEY} is malformed"),
        )
    })?;
    if let Some(o) = v.as_object_mut() {
        o.remove(seal::FIELD);
    }
    let m: Marker = serde_json::from_value(v).map_err(|_| {
        coded(
            Code::Integrity,
            format!("the store marker {KEY} is malformed"),
        )
    })?;
    Ok(Some(m))
}
pub const SCHEMA: &str = "bkp.store/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    pub schema: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub host: String,
    pub bkp_version: String,
    /// The manifest schema and stream format the store was started with.
    pub manifest_schema: String,
    pub stream_format: String,
    /// The key (or recipient) id new backups were encrypted with, if any.
    pub key_id: Option<String>,
    /// The store's id (`st-` and 32 random hex digits), which every sealed
    /// manifest written since carries. `None` in a marker from before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
}

impl Marker {
    /// A new marker for this installation, with a new random store id (or
    /// the id the config pins).
    pub fn new(trust: &Trust) -> Marker {
        let mut id = [0u8; 16];
        crate::id::fill_random(&mut id);
        Marker {
            schema: SCHEMA.into(),
            created_at: OffsetDateTime::now_utc(),
            host: super::hostname(),
            bkp_version: env!("CARGO_PKG_VERSION").into(),
            manifest_schema: super::schema_string().into(),
            stream_format: crate::crypto::FORMAT_NAME.into(),
            key_id: trust.keys().map(|k| k.current().id().to_string()),
            // A store whose marker was lost is marked again with its own id.
            store_id: Some(
                trust
                    .pinned_store()
                    .map_or_else(|| format!("st-{}", hex::encode(id)), str::to_string),
            ),
        }
    }
}

/// What binds sealed documents to a store: its id, and since when its
/// documents carry it (the marker's creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub id: String,
    pub since: OffsetDateTime,
}

/// A binding as read, or the failure (its code and message) to repeat.
type Loaded = std::result::Result<Option<Binding>, (Option<Code>, String)>;

type LoadBinding = dyn Fn(&Trust) -> Result<Option<Binding>> + Send + Sync;

/// How a run learns its store's [`Binding`]: read on first need, once.
pub struct Bound {
    load: Box<LoadBinding>,
    got: std::sync::OnceLock<Loaded>,
    /// `[encryption] store_id`, when the config pins the store's id.
    pinned: Option<String>,
}

impl Bound {
    /// `store` opens the run's store; its marker is read when first needed.
    /// With `pinned` (`[encryption] store_id`), a marker that names another
    /// id, or none, is refused: the marker is the store's identity, and a
    /// bucket writer could replace it with another store's of the same key.
    pub fn new(
        store: impl Fn() -> Result<Box<dyn Store>> + Send + Sync + 'static,
        pinned: Option<String>,
    ) -> Bound {
        let pin = pinned.clone();
        Bound {
            pinned: pin,
            load: Box::new(move |trust| {
                let store = store()?;
                let found = binding(store.as_ref(), trust)?;
                match (&pinned, &found) {
                    (Some(pin), Some(b)) if *pin != b.id => Err(coded(
                        Code::Config,
                        format!(
                            "the store marker {KEY} of {} names store {}, and [encryption] store_id is {pin}: the marker was replaced (put the store's own back: its previous version, or a copy's; or remove it, and `bkp init` writes it again with the pinned id) or this config points at another store",
                            store.identity(),
                            crate::ui::printable(&b.id)
                        ),
                    )),
                    (Some(pin), None) => Err(coded(
                        Code::Config,
                        format!(
                            "{} has no store marker ({KEY}) with an id, and [encryption] store_id is {pin}: run `bkp init` (with the key) to write it again with the pinned id, or remove store_id if this config points at another store",
                            store.identity()
                        ),
                    )),
                    _ => Ok(found),
                }
            }),
            got: std::sync::OnceLock::new(),
        }
    }
}

impl Trust {
    /// Also binds what this run reads and writes to its store's id.
    pub fn with_binding(mut self, bound: Bound) -> Trust {
        self.store = Some(std::sync::Arc::new(bound));
        self
    }

    /// The store id the config pins (`[encryption] store_id`), if any.
    pub fn pinned_store(&self) -> Option<&str> {
        self.store
            .as_ref()
            .and_then(|b| b.downcast_ref::<Bound>())
            .and_then(|b| b.pinned.as_deref())
    }

    /// The id this host's WAL tags name: the pinned id; else, on a key
    /// holder, its store marker's (sealed with the key, so checked); else
    /// none. A write-only host cannot check the marker's seal, and a marker a
    /// bucket writer planted must not name its tags (the key holder could
    /// then verify none of them): without a pin, its tags name no store.
    pub fn wal_store_id(&self) -> Result<Option<String>> {
        if let Some(pin) = self.pinned_store() {
            return Ok(Some(pin.to_string()));
        }
        if !self.key_holder() {
            return Ok(None);
        }
        Ok(self.binding()?.map(|b| b.id.clone()))
    }

    /// Whether this host holds the key (it seals with it), rather than only
    /// a recipient and a signing key (a write-only host).
    pub fn key_holder(&self) -> bool {
        self.keys()
            .is_some_and(|k| k.current().seal_key().is_some())
    }

    /// This trust without its store's binding: what a run that must not be
    /// stopped by an unreadable marker (`wal push`) goes on with.
    pub fn unbound(mut self) -> Trust {
        self.store = None;
        self
    }

    /// The store's binding, read on first use: `None` without keys, without a
    /// way to read it, or for a store whose marker has no id.
    pub fn binding(&self) -> Result<Option<&Binding>> {
        let Some(b) = self.store.as_ref().filter(|_| self.checks()) else {
            return Ok(None);
        };
        // Only `with_binding` sets it; anything else fails closed.
        let b = b
            .downcast_ref::<Bound>()
            .ok_or_else(|| anyhow::anyhow!("the store binding is not a marker::Bound"))?;
        let got = b.got.get_or_init(|| {
            (b.load)(self).map_err(|e| (crate::exit::classify(&e), format!("{e:#}")))
        });
        match got {
            Ok(b) => Ok(b.as_ref()),
            Err((Some(code), msg)) => Err(coded(*code, msg.clone())),
            Err((None, msg)) => Err(anyhow::anyhow!("{msg}")),
        }
    }
}

/// The binding of `store`'s marker (once per store and process).
fn binding(store: &dyn Store, trust: &Trust) -> Result<Option<Binding>> {
    if let Some(b) = seen(store) {
        return Ok(b);
    }
    let b = read(store, trust)?.and_then(|m| {
        Some(Binding {
            id: m.store_id?,
            since: m.created_at,
        })
    });
    Ok(b)
}

/// Whether `id` has a store id's form: `st-` and 32 hex digits.
pub fn is_store_id(id: &str) -> bool {
    id.strip_prefix("st-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The bindings of the markers this process read, by store.
static SEEN: Mutex<Vec<(String, Option<Binding>)>> = Mutex::new(Vec::new());

fn seen(store: &dyn Store) -> Option<Option<Binding>> {
    let id = store.identity();
    let seen = SEEN.lock().ok()?;
    seen.iter().find(|(s, _)| *s == id).map(|(_, b)| b.clone())
}

fn saw(store: &dyn Store, m: Option<&Marker>) {
    let b = m.and_then(|m| {
        Some(Binding {
            id: m.store_id.clone()?,
            since: m.created_at,
        })
    });
    if let Ok(mut seen) = SEEN.lock() {
        let id = store.identity();
        seen.retain(|(s, _)| *s != id);
        seen.push((id, b));
    }
}

/// Whether `m`, sealed (`vouch`, see [`super::admit`]), belongs to this
/// store: it names this store's id; or it names none and was made before
/// the store had its id (its sealed id's time before the marker's creation),
/// or a sealed list records it. Nothing is checked without keys, nor for a
/// store whose marker has no id while `m` names none.
pub fn check_bound(m: &super::Manifest, vouch: Option<&str>, trust: &Trust) -> Result<()> {
    if !trust.checks() || vouch.is_none() {
        return Ok(());
    }
    let here = trust.binding()?;
    let what = format!("manifest {}", m.key());
    let copied = |why: String| {
        coded(
            Code::Integrity,
            format!("{what} {why}: it was copied from another store and is not this store's backup; it is not used"),
        )
    };
    match (&m.store, here) {
        (Some(s), Some(b)) if *s == b.id => Ok(()),
        (Some(s), Some(b)) => Err(copied(format!(
            "was sealed for store {}, and this is store {}",
            crate::ui::printable(s),
            b.id
        ))),
        (Some(s), None) => Err(copied(format!(
            "was sealed for store {}, and this store's marker ({KEY}) names no id (if the marker was removed, put it back)",
            crate::ui::printable(s)
        ))),
        (None, None) => Ok(()),
        (None, Some(b)) => {
            let before = m.id.timestamp().is_some_and(|t| t < b.since);
            let listed = vouch.is_some_and(|v| v.starts_with(super::seal::LEGACY));
            if before || listed {
                return Ok(());
            }
            Err(copied(format!(
                "names no store, but was made after this store ({}) had its id",
                b.id
            )))
        }
    }
}

/// Writes the marker (create-only): an error if the store already has one.
pub fn write(store: &dyn Store, marker: &Marker, trust: &Trust) -> Result<()> {
    let taken = || {
        coded(
            Code::TargetExists,
            format!(
                "{} already has a store marker ({KEY}): `bkp check` shows whether it is this installation's",
                store.identity()
            ),
        )
    };
    if store.head(KEY)?.is_some() {
        return Err(taken());
    }
    // Two runs may both find no marker; the create-only write lets one win.
    match store.put_new(KEY, &seal::encode(marker, trust.keys())?, &Vec::new()) {
        Ok(_) => Ok(()),
        Err(e) if crate::store::is_already_exists(&e) => Err(taken()),
        Err(e) => Err(e),
    }
}

/// Stores whose marker this process found to be its own (or absent).
static CHECKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn checked(store: &dyn Store) -> bool {
    let id = store.identity();
    CHECKED.lock().is_ok_and(|c| c.contains(&id))
}

fn remember(store: &dyn Store) {
    let id = store.identity();
    if let Ok(mut c) = CHECKED.lock() {
        if !c.contains(&id) {
            c.push(id);
        }
    }
}

/// [`check`], once per store and process: a run that checked the marker as
/// it began is not asked again when it writes. A key holder's run on a store
/// without a marker writes one now (create-only, as `bkp init` writes it):
/// its id goes into every manifest from now on. A write-only host's run does
/// not: a marker its signer sealed would lock out every config that stops
/// trusting that signer (the answer to a stolen host), so its store stays
/// unbound until the key holder's first run or `bkp init` marks it.
pub fn ensure(store: &dyn Store, trust: &Trust) -> Result<()> {
    if checked(store) {
        return Ok(());
    }
    if check(store, trust)?.is_some() {
        if let Err(e) = vouch_for_escrows(store, trust) {
            crate::ui::log(
                crate::ui::Priority::Warning,
                &format!("bkp: warning: {e:#}; the next run tries again"),
            );
        }
        return Ok(());
    }
    if !trust.key_holder() {
        return Ok(());
    }
    // A store with a history but no marker: a new marker, of a new id,
    // would disown every backup that names the old one. Someone may have
    // deleted it; the operator decides. A pinned id disowns nothing.
    if trust.pinned_store().is_none() && has_history(store)? {
        remember(store);
        crate::ui::log(
            crate::ui::Priority::Warning,
            &format!(
                "bkp: warning: {} holds backups but no store marker ({KEY}): if it had one, put its previous version back (a new one would disown every backup bound to the old); if it never had one, run `bkp init` to bind this store's backups to it",
                store.identity()
            ),
        );
        return Ok(());
    }
    let marker = Marker::new(trust);
    match write(store, &marker, trust) {
        Ok(()) => {
            saw(store, Some(&marker));
            Ok(())
        }
        // Another run wrote one first: that one is the store's.
        Err(e) if crate::exit::classify(&e) == Some(Code::TargetExists) => {
            check(store, trust).map(drop)
        }
        Err(e) => Err(e.context(format!(
            "failed to write the store marker {KEY}, which a store with [encryption] needs"
        ))),
    }
}

/// Whether `store` holds backups: catalogs, or manifests (catalogs are
/// caches, and may be gone with the marker). WAL archived and heads recorded
/// before a store had a marker name no store, so they do not count: a
/// server that archives before the first backup run must not keep the
/// store unmarked.
fn has_history(store: &dyn Store) -> Result<bool> {
    for dir in [super::CATALOG_DIR, super::MANIFEST_DIR] {
        if !store.list(&format!("{dir}/"))?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The refusal of another installation's store, for a run that writes only
/// what it maintains for itself (a catalog): `None` when the marker is this
/// installation's or absent, and also when it could not be read (the write
/// that follows fails or succeeds on its own). Once per store and process.
pub fn foreign(store: &dyn Store, trust: &Trust) -> Option<anyhow::Error> {
    if checked(store) {
        return None;
    }
    match read(store, trust) {
        Ok(_) => {
            remember(store);
            None
        }
        Err(e) if is_foreign(&e) => Some(e),
        Err(_) => None,
    }
}

/// Checks the store's marker, if it has one, against this installation's
/// keys: `Ok(None)` without a marker, `Ok(Some(marker))` when it is ours, a
/// Config error naming the store when it was sealed by a key this config does
/// not hold (another installation's store), a data error when it is damaged.
pub fn check(store: &dyn Store, trust: &Trust) -> Result<Option<Marker>> {
    let found = read(store, trust)?;
    remember(store);
    Ok(found)
}

/// A Config error that [`foreign`] tells from the others.
fn foreign_error(message: String) -> anyhow::Error {
    coded(Code::Config, message).context(Foreign)
}

/// The error [`check`] gives for another installation's store.
#[derive(Debug)]
struct Foreign;

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the store belongs to another installation")
    }
}

fn is_foreign(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Foreign>().is_some()
}

fn read(store: &dyn Store, trust: &Trust) -> Result<Option<Marker>> {
    // One request on every run: a GET, whose "not found" means no marker.
    let bytes = match store.get_at_most(KEY, crate::limits::MARKER) {
        Ok(bytes) => bytes,
        Err(e) if crate::exit::classify(&e) == Some(Code::NotFound) => {
            saw(store, None);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let what = format!("the store marker {KEY} of {}", store.identity());
    // A write-only host cannot check the key holder's seal; the marker names
    // the key it encrypts to. (A forged one could only bind this host's
    // manifests to a wrong store id, which the key holder then refuses.)
    if let Some(value) = seal::of_own_recipient(&bytes, trust) {
        let m: Marker = serde_json::from_value(value)
            .map_err(|_| coded(Code::Integrity, format!("{what} is malformed")))?;
        well_formed(&m, &what)?;
        saw(store, Some(&m));
        return Ok(Some(m));
    }
    match seal::sealer(&bytes, trust) {
        Some((id, false)) if trust.checks() => {
            if let Some(m) = vouched_by_escrow(store, trust, &bytes)? {
                well_formed(&m, &what)?;
                saw(store, Some(&m));
                return Ok(Some(m));
            }
            // An escrow's identity without a statement: the store id the
            // operator pinned is the proof (it binds every manifest).
            if let Some(m) = pinned_unsealed(trust, &bytes) {
                well_formed(&m, &what)?;
                saw(store, Some(&m));
                return Ok(Some(m));
            }
            if trust
                .keys()
                .is_some_and(|k| k.current().escrow_text().is_some())
            {
                return Err(foreign_error(format!(
                    "{} has a marker ({KEY}) sealed with key {id:?}, which this config does not hold, and no statement of a key holder ({}) vouches for it for {}. If this config holds an escrow's identity because that key is lost, set `store_id` in [encryption] to the store's id (`bkp check` and `bkp init` printed it where the key was; every manifest names it as \"store\"): a marker naming that id is then taken. Otherwise point this config at its own bucket or prefix",
                    store.identity(),
                    vouch_key(trust.keys().map_or("", |k| k.current().id())),
                    trust.keys().map_or("", |k| k.current().id()),
                )));
            }
            return Err(foreign_error(format!(
                "{} belongs to another installation: its marker ({KEY}) is sealed with key {id:?}, which this config does not hold. If this installation rotated that key out, keep it under [[encryption.old_keys]] where the key is held (the marker, and every backup it sealed, need it); otherwise point this config at its own bucket or prefix, or configure that installation's key",
                store.identity()
            )));
        }
        // A config without keys cannot prove a sealed marker its own.
        Some((id, _)) if !trust.checks() => {
            return Err(foreign_error(format!(
                "{} belongs to an installation with keys: its marker ({KEY}) is sealed with key {id:?}, and this config has no [encryption]. Point this config at its own bucket or prefix, or configure that installation's key",
                store.identity()
            )));
        }
        _ => {}
    }
    let opened = match seal::open(&bytes, &what, trust) {
        Ok(o) => o,
        // An escrow seal that fails (planted, or damaged) where a key
        // holder's statement vouches for these bytes: the statement is the
        // proof.
        Err(e) => match vouched_by_escrow(store, trust, &bytes)? {
            Some(m) => {
                well_formed(&m, &what)?;
                saw(store, Some(&m));
                return Ok(Some(m));
            }
            None => return Err(e),
        },
    };
    if trust.checks() && !opened.sealed {
        return Err(coded(
            Code::Config,
            format!(
                "{what} has no seal, but [encryption] is configured: it was written without a key, by another installation or before encryption was configured; check who wrote it; if the store's own marker was replaced, put its previous version back (a new `bkp init` would disown every backup bound to the old one)"
            ),
        ));
    }
    let m: Marker = serde_json::from_value(opened.value)
        .map_err(|_| coded(Code::Integrity, format!("{what} is malformed")))?;
    well_formed(&m, &what)?;
    saw(store, Some(&m));
    Ok(Some(m))
}

/// Refuses a marker whose store id has not a store id's form.
fn well_formed(m: &Marker, what: &str) -> Result<()> {
    match &m.store_id {
        Some(id) if !is_store_id(id) => Err(coded(
            Code::Integrity,
            format!(
                "{what} names {:?}, which is no store id: it is not bkp's; put the store's own marker back",
                crate::ui::printable(id)
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::crypto::{Keyring, MasterKey};
    use crate::store::memory::MemoryStore;
    use crate::store::{Metadata, ObjectInfo, ObjectWriter};

    /// A store whose HEAD of the marker always answers "absent": what a run
    /// sees when another run writes the marker between its HEAD and its PUT.
    struct Racing(MemoryStore);

    impl Store for Racing {
        fn identity(&self) -> String {
            self.0.identity()
        }
        fn create(&self, key: &str, metadata: &Metadata) -> Result<Box<dyn ObjectWriter>> {
            self.0.create(key, metadata)
        }
        fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
            self.0.open(key)
        }
        fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
            if key == KEY {
                return Ok(None);
            }
            self.0.head(key)
        }
        fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
            self.0.list(prefix)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.0.delete(key)
        }
    }

    #[test]
    fn a_marker_written_between_head_and_put_is_taken_not_an_error() {
        let trust = Trust::new(
            Some(Keyring::new(MasterKey::from_bytes([7; 32]), vec![])),
            None,
            vec![],
        );
        let store = Racing(MemoryStore::named("marker-race"));
        let first = Marker::new(&trust);
        write(&store, &first, &trust).unwrap();
        let lost = write(&store, &Marker::new(&trust), &trust).unwrap_err();
        assert_eq!(crate::exit::classify(&lost), Some(Code::TargetExists));
        ensure(&store, &trust).unwrap();
        let kept = check(&store, &trust).unwrap().unwrap();
        assert_eq!(kept.store_id, first.store_id);
    }

    /// A host's trust (key [7], with an escrow unless `bare`) and the trust
    /// of a config whose only key is that escrow's identity.
    fn escrowed() -> (Trust, Trust, Trust) {
        let (text, _) = crate::crypto::pubkey::generate_identity().unwrap();
        let identity = MasterKey::identity(text.as_bytes(), "identity").unwrap();
        let file = identity.escrow_text().unwrap();
        let escrow = crate::crypto::Escrow::from_text(file.as_bytes(), "escrow").unwrap();
        let key = || MasterKey::from_bytes([7; 32]);
        let host = Keyring::new(key(), vec![]).with_escrow(vec![escrow]);
        (
            Trust::new(Some(Keyring::new(key(), vec![])), None, vec![]),
            Trust::new(Some(host), None, vec![]),
            Trust::new(Some(Keyring::new(identity, vec![])), None, vec![]),
        )
    }

    fn replace(store: &MemoryStore, key: &str, bytes: &[u8]) {
        store.delete(key).unwrap();
        store.put_new(key, bytes, &Vec::new()).unwrap();
    }

    #[test]
    fn a_marker_older_than_the_escrow_is_vouched_for_and_planted_seals_change_nothing() {
        let (bare, host, vault) = escrowed();
        let store = MemoryStore::named("marker-escrow");
        let marker = Marker::new(&bare);
        write(&store, &marker, &bare).unwrap();
        // The escrow's identity cannot read a marker sealed before it.
        let err = read(&store, &vault).unwrap_err();
        assert!(format!("{err:#}").contains("store_id"), "{err:#}");

        // A bucket writer adds a bogus escrow seal to the marker, so that
        // the host would think the escrow sealed it, and plants a statement
        // of its own making.
        let mut v: serde_json::Value = serde_json::from_slice(&store.get(KEY).unwrap()).unwrap();
        let id = vault.keys().unwrap().current().id().to_string();
        v[seal::FIELD]["escrow"] = serde_json::json!([{"key_id": id, "hmac": "00"}]);
        replace(&store, KEY, &serde_json::to_vec(&v).unwrap());
        let planted = EscrowVouch {
            schema: VOUCH_SCHEMA.into(),
            marker_sha256: "00".into(),
        };
        let stranger = Trust::new(
            Some(Keyring::new(MasterKey::from_bytes([9; 32]), vec![])),
            None,
            vec![],
        );
        store
            .put_new(
                &vouch_key(&id),
                &seal::encode(&planted, stranger.keys()).unwrap(),
                &Vec::new(),
            )
            .unwrap();

        // The host's run replaces the statement with its own...
        vouch_for_escrows(&store, &host).unwrap();
        // ... and the escrow's identity then reads the marker as the store's.
        let read_back = read(&store, &vault).unwrap().unwrap();
        assert_eq!(read_back.store_id, marker.store_id);
        // A second run leaves the good statement alone.
        let before = store.get(&vouch_key(&id)).unwrap();
        vouch_for_escrows(&store, &host).unwrap();
        assert_eq!(store.get(&vouch_key(&id)).unwrap(), before);
        // A statement for other bytes (the marker replaced since) vouches
        // for nothing.
        let mut other = marker.clone();
        other.host = "elsewhere".into();
        replace(&store, KEY, &seal::encode(&other, bare.keys()).unwrap());
        assert!(read(&store, &vault).is_err());
    }

    #[test]
    fn only_a_marker_the_key_sealed_is_vouched_for_and_a_rotation_replaces_nothing() {
        let (bare, host, vault) = escrowed();
        let store = MemoryStore::named("marker-escrow-forged");
        // A marker the store made up (no key sealed it): no statement.
        let mut forged = Marker::new(&bare);
        forged.host = "made up".into();
        store
            .put_new(KEY, &serde_json::to_vec(&forged).unwrap(), &Vec::new())
            .unwrap();
        vouch_for_escrows(&store, &host).unwrap();
        assert!(store.list(&format!("{ESCROW_DIR}/")).unwrap().is_empty());

        // A genuine marker, vouched for under key [7]; then [7] is rotated
        // out (kept as an old key): the statement still holds, untouched.
        let store = MemoryStore::named("marker-escrow-rotated");
        write(&store, &Marker::new(&bare), &bare).unwrap();
        vouch_for_escrows(&store, &host).unwrap();
        let id = vault.keys().unwrap().current().id().to_string();
        let before = store.get(&vouch_key(&id)).unwrap();
        let escrow = host.keys().unwrap().escrow()[0].id().to_string();
        assert_eq!(escrow, id);
        let rotated = Trust::new(
            Some(
                Keyring::new(
                    MasterKey::from_bytes([8; 32]),
                    vec![MasterKey::from_bytes([7; 32])],
                )
                .with_escrow(vec![crate::crypto::Escrow::from_text(
                    escrow_file_of(&vault).as_bytes(),
                    "e",
                )
                .unwrap()]),
            ),
            None,
            vec![],
        );
        vouch_for_escrows(&store, &rotated).unwrap();
        assert_eq!(store.get(&vouch_key(&id)).unwrap(), before);
        assert!(read(&store, &vault).unwrap().is_some());
    }

    fn escrow_file_of(vault: &Trust) -> String {
        vault
            .keys()
            .unwrap()
            .current()
            .escrow_text()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_pinned_id_admits_a_marker_only_for_an_identity_and_binds_from_the_start() {
        let (bare, _, vault) = escrowed();
        let m = Marker::new(&bare);
        let bytes = seal::encode(&m, bare.keys()).unwrap();
        let id = m.store_id.clone().unwrap();
        let pin = |t: &Trust| {
            let never = |_: &Trust| -> Result<Option<Binding>> { Ok(None) };
            t.clone().with_binding(Bound {
                load: Box::new(never),
                got: std::sync::OnceLock::new(),
                pinned: Some(id.clone()),
            })
        };
        // A key holder with the id pinned still refuses a marker it cannot check.
        let stranger = Trust::new(
            Some(Keyring::new(MasterKey::from_bytes([9; 32]), vec![])),
            None,
            vec![],
        );
        assert!(pinned_unsealed(&pin(&stranger), &bytes).is_none());
        let taken = pinned_unsealed(&pin(&vault), &bytes).unwrap();
        assert_eq!(taken.store_id, m.store_id);
        assert_eq!(taken.created_at, OffsetDateTime::UNIX_EPOCH);
        assert!(pinned_unsealed(&vault, &bytes).is_none(), "nothing pinned");
    }
}
