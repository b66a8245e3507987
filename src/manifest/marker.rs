//! The store marker, `bkp-store.json`, written once by `bkp init`: which
//! installation a store (or prefix) belongs to. It names the key ids the store
//! was started with and is sealed like a manifest, so a second config with
//! another key that points at the same prefix is refused before it writes a
//! backup there, instead of filling the store with manifests that the first
//! installation then refuses. Optional: a store without a marker works as before.

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

/// Checks the store's marker, if it has one, against this installation's
/// keys: `Ok(None)` without a marker, `Ok(Some(marker))` when it is ours, a
/// Config error naming the store when it was sealed by a key this config does
/// not hold (another installation's store), a data error when it is damaged.
pub fn check(store: &dyn Store, trust: &Trust) -> Result<Option<Marker>> {
    // One request on every run: a GET, whose "not found" means no marker.
    let bytes = match store.get_at_most(KEY, crate::limits::MARKER) {
        Ok(bytes) => bytes,
        Err(e) if crate::exit::classify(&e) == Some(Code::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let what = format!("the store marker {KEY} of {}", store.identity());
    if let Some((id, false)) = seal::sealer(&bytes, trust).filter(|_| trust.checks()) {
        return Err(coded(
            Code::Config,
            format!(
                "{} belongs to another installation: its marker ({KEY}) is sealed with key {id:?}, which this config does not hold. Point this config at its own bucket or prefix, or configure that installation's key",
                store.identity()
            ),
        ));
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
