//! A tombstone: the record of a deletion in progress, `trash/{kind}/{id}.json`,
//! written by `cleanup` before anything of a backup is deleted and removed when
//! the deletion is complete (see `commands/cleanup.rs` for the protocol).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Kind, Manifest};
use crate::id::BackupId;
use crate::store::Store;

pub const TRASH_DIR: &str = "trash";
pub const SCHEMA: &str = "bkp.tombstone/1.0";

/// A deletion in progress, written before anything is deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tombstone {
    pub schema: String,
    pub manifest: Manifest,
    /// The amount of the reverse ledger transfer: the bytes of the backup's own
    /// objects, which its own transfer credited.
    pub bytes: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub planned_at: OffsetDateTime,
}

pub fn key(kind: Kind, id: BackupId) -> String {
    format!("{TRASH_DIR}/{}/{id}.json", kind.as_str())
}


pub fn read_tombstones(store: &dyn Store) -> Result<Vec<Tombstone>> {
    let mut out = Vec::new();
    for o in store.list(&format!("{TRASH_DIR}/"))? {
        if !o.key.ends_with(".json") {
            continue;
        }
        let bytes = store.get(&o.key)?;
        let t: Tombstone = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "tombstone {} is malformed: remove it by hand after checking the backup it names",
                o.key
            )
        })?;
        out.push(t);
    }
    out.sort_by_key(|t| (t.manifest.started_at, t.manifest.id));
    Ok(out)
}
