//! The store marker, `bkp-store.json`, written once by `bkp init`: which
//! installation a store (or prefix) belongs to. It names the key ids the store
//! was started with and is sealed like a manifest, so a second config with
//! another key that points at the same prefix is refused before it writes a
//! backup there, instead of filling the store with manifests that the first
//! installation then refuses. Optional: a store without a marker works as before.
//! Every run that writes checks it first: a backup run as it begins, and any
//! other run before it writes a catalog ([`ensure`]).

use std::sync::Mutex;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{seal, Trust};
use crate::exit::{coded, Code};
use crate::store::Store;

pub const KEY: &str = "bkp-store.json";
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
}

/// Writes the marker (create-only): an error if the store already has one.
pub fn write(store: &dyn Store, marker: &Marker, trust: &Trust) -> Result<()> {
    if store.head(KEY)?.is_some() {
        return Err(coded(
            Code::TargetExists,
            format!(
                "{} already has a store marker ({KEY}): `bkp check` shows whether it is this installation's",
                store.identity()
            ),
        ));
    }
    store.put_new(KEY, &seal::encode(marker, trust.keys())?, &Vec::new())?;
    Ok(())
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
/// it began is not asked again when it writes.
pub fn ensure(store: &dyn Store, trust: &Trust) -> Result<()> {
    if checked(store) {
        return Ok(());
    }
    check(store, trust).map(drop)
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
        Err(e) if crate::exit::classify(&e) == Some(Code::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let what = format!("the store marker {KEY} of {}", store.identity());
    match seal::sealer(&bytes, trust) {
        Some((id, false)) if trust.checks() => {
            return Err(foreign_error(format!(
                "{} belongs to another installation: its marker ({KEY}) is sealed with key {id:?}, which this config does not hold. Point this config at its own bucket or prefix, or configure that installation's key",
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
    let opened = seal::open(&bytes, &what, trust)?;
    if trust.checks() && !opened.sealed {
        return Err(coded(
            Code::Config,
            format!(
                "{what} has no seal, but [encryption] is configured: it was written without a key, by another installation or before encryption was configured; check, then remove it and run `bkp init` again"
            ),
        ));
    }
    let m: Marker = serde_json::from_value(opened.value)
        .map_err(|_| coded(Code::Integrity, format!("{what} is malformed")))?;
    Ok(Some(m))
}
