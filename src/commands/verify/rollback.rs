//! What `verify` says of a store rolled back under bkp: backups bkp recorded
//! as stored (`manifest::head`) that the store no longer shows, and, where
//! the store keeps every version (S3 Object Lock), delete markers and
//! overwritten versions on bkp's keys, which create-only writes never leave.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::cli::VerifyArgs;
use crate::manifest::{self, Kind, Manifest, Trust};
use crate::store::Store;

/// The folders whose keys bkp writes once and deletes only with every
/// version (leases and catalogs are rewritten on purpose; reports and
/// probes say nothing about backups).
fn folders() -> Vec<String> {
    let mut f: Vec<String> = [manifest::MANIFEST_DIR, manifest::head::DIR, "wal", "trash"]
        .iter()
        .map(|d| format!("{d}/"))
        .collect();
    f.extend(Kind::ALL.iter().map(|k| format!("{}/", k.as_str())));
    f
}

/// The findings, one line each: backups lost per kind `args` selects (of
/// which `newest` holds the newest the store lists), then
/// (when verifying everything) the altered keys.
pub fn check(
    store: &dyn Store,
    trust: &Trust,
    newest: &BTreeMap<Kind, Manifest>,
    args: &VerifyArgs,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let versions = args.backup.is_none();
    let kinds = Kind::ALL
        .into_iter()
        .filter(|k| args.kind.is_none_or(|want| Kind::from(want) == *k));
    for kind in kinds {
        if let Some(e) = manifest::head::lost(store, trust, kind, newest.get(&kind))? {
            found.push(format!("{e:#}"));
        }
    }
    if versions {
        for folder in folders() {
            for (_, what) in store.altered(&folder)?.unwrap_or_default() {
                found.push(format!(
                    "{what}: someone other than bkp deleted or rewrote it (a delete marker hides a backup from every listing, while Object Lock keeps its bytes: remove the marker to bring it back)"
                ));
            }
        }
    }
    Ok(found)
}
