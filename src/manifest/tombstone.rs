//! A tombstone: the record of a deletion in progress, `trash/{kind}/{id}.json`,
//! written by `cleanup` before anything of a backup is deleted and removed when
//! the deletion is complete (see `commands/cleanup.rs` for the protocol).
//!
//! Only a holder of the key decides deletions: a tombstone a trusted signer
//! (a write-only host) sealed is never executed, whatever its scope, except
//! by that host itself finishing its own cleanup. A stolen write-only host
//! cannot delete another host's backups.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{seal, Kind, Manifest, Trust};
use crate::exit::{coded, Code};
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

/// Whether a tombstone vouched for by `sealer` ([`Trust::vouch`]) may be
/// executed: the current key sealed it, or a sealed list records it, or this
/// host signed it itself (a write-only host finishing its own cleanup). Any
/// other signer, whatever its scope, decides no deletion.
pub fn trusted_sealer(trust: &Trust, sealer: &str) -> bool {
    sealer.starts_with(seal::LEGACY) || trust.is_key_holder(sealer) || trust.trusts_list(sealer)
}

/// Every deletion in progress, oldest first. A tombstone makes `cleanup`
/// delete what it names, so it is read as untrusted input: its seal must
/// verify (when keys are configured), it must lie where its backup's tombstone
/// belongs, and its manifest's object keys must be that kind's. A seal of a
/// key rotated out counts only where a sealed list records the tombstone; a
/// signer's seal only on the host that signed it ([`trusted_sealer`]).
pub fn read_tombstones(store: &dyn Store, trust: &Trust) -> Result<Vec<Tombstone>> {
    let mut out = Vec::new();
    for o in store.list(&format!("{TRASH_DIR}/"))? {
        if !o.key.ends_with(".json") {
            continue;
        }
        let what = format!("tombstone {}", o.key);
        let remove = "check the backup it names, then remove the tombstone by hand";
        let bytes = store
            .get_at_most(&o.key, crate::limits::TOMBSTONE)
            .map_err(|e| e.context(format!("{what} is not used: {remove}")))?;
        let opened = seal::open(&bytes, &what, trust)
            .map_err(|e| e.context(format!("{what} is not used: {remove}")))?;
        // Sealed by the current key or a trusted signer, or recorded by a
        // sealed list: an old key's seal on a new tombstone deletes nothing.
        let vouched = trust
            .vouch(opened.sealer.as_deref(), &o.key, &bytes, &what)
            .map_err(|e| e.context(format!("{what} is not used: {remove}")))?;
        let t: Tombstone = serde_json::from_value(opened.value)
            .map_err(|_| coded(Code::Integrity, format!("{what} is malformed: {remove}")))?;
        if trust.checks() && vouched.is_none() {
            return Err(coded(
                Code::Integrity,
                format!("{what} has no seal, but [encryption] is configured: it may have been written by someone without the key, so nothing it names is deleted; {remove}"),
            ));
        }
        if let Some(s) = vouched.as_deref().filter(|s| !trusted_sealer(trust, s)) {
            return Err(coded(
                Code::Integrity,
                format!(
                    "{what} is sealed by {}, a write-only host's signer: only a holder of the key decides what is deleted, so nothing it names is deleted. A write-only host's interrupted cleanup, or a stolen host's forgery: {remove}",
                    crate::ui::printable(s)
                ),
            ));
        }
        if key(t.manifest.kind, t.manifest.id) != o.key {
            return Err(coded(
                Code::Integrity,
                format!(
                    "{what} names backup {} of another name: {remove}",
                    t.manifest.id
                ),
            ));
        }
        t.manifest
            .check_keys()
            .and_then(|()| super::marker::check_bound(&t.manifest, vouched.as_deref(), trust))
            .map_err(|e| e.context(format!("{what}: {remove}")))?;
        out.push(t);
    }
    out.sort_by_key(|t| (t.manifest.started_at, t.manifest.id));
    Ok(out)
}
