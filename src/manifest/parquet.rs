//! The manifests of Parquet cold-tier replications: finding the newest ones
//! without reading the whole history (each lists a whole file set).

use anyhow::Result;

use super::{Kind, Manifest};
use crate::exit::{coded, Code};
use crate::store::Store;

/// The operation of a replication (`bkp replicate`).
pub const OPERATION: &str = "replicate";

/// Keys of the parquet manifests, newest first (UUIDv7 keys sort by time).
pub fn keys_newest_first(store: &dyn Store) -> Result<Vec<String>> {
    let prefix = super::manifest_dir(Kind::Parquet);
    let mut keys: Vec<String> = store
        .list(&prefix)?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".json"))
        .collect();
    keys.sort();
    keys.reverse();
    Ok(keys)
}

/// The newest replicate manifest in the store, reading only as many manifests
/// as it takes.
pub fn latest(store: &dyn Store, trust: &super::Trust) -> Result<Manifest> {
    for key in keys_newest_first(store)? {
        let bytes = store.get_at_most(&key, crate::limits::MANIFEST)?;
        let m = super::parse(&bytes, &key, trust)?;
        if m.operation == OPERATION {
            return Ok(m);
        }
    }
    Err(coded(
        Code::NotFound,
        format!(
            "no replicate backup in {}: run `bkp replicate` first, or check the store settings",
            store.identity()
        ),
    ))
}
