//! `verify`'s ledger audit: the code-12 transfers on the store's account against
//! the manifests. A backup the ledger records as stored (and not deleted by
//! `cleanup`) must have a manifest, every manifest must have its transfer (or a
//! record waiting in the spool), and the account's balance must equal the bytes
//! the manifests retain.

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::Result;
use serde::Serialize;

use crate::id::BackupId;
use crate::ledger;
use crate::manifest::chunks::{chunk_key, is_chunk_id, ChunkMap};
use crate::manifest::{Kind, Manifest};
use crate::store::Store;

/// The chunks the manifests retain, each once with its stored size: what the
/// audit adds to the bytes the manifests retain. `verify` fills it as it
/// checks each backup (that backup's chunk list in hand), and the audit for
/// the manifests not checked, so that each chunk list is read once per run
/// and none is kept whole: a chunk takes some 50 bytes here once, where a
/// list takes ~100 per chunk for every backup naming it (a TB-sized file in
/// 1 MiB chunks: ~100 MB per backup). A run without an audit keeps none.
#[derive(Default)]
pub struct Retained {
    /// Chunk ids (decoded) and stored sizes, per kind: the key is
    /// [`chunk_key`] of the two.
    chunks: HashMap<(Kind, [u8; 32]), u64>,
    /// Keys of chunks whose id is no chunk id: never from a list
    /// [`crate::chunks::load`] admits, kept as keys all the same.
    odd: HashMap<String, u64>,
    /// Backups whose chunk list was taken, or found damaged (`verify`
    /// reports that with the backup): not read again.
    seen: HashSet<BackupId>,
}

impl Retained {
    /// Takes the chunks of `m`'s list (`None`: the list is damaged).
    pub fn add(&mut self, m: &Manifest, map: Option<&ChunkMap>) {
        self.seen.insert(m.id);
        for c in map.into_iter().flat_map(|map| map.chunks.iter().flatten()) {
            let mut id = [0u8; 32];
            // Lowercase only: one id, one key.
            if is_chunk_id(&c.0) && hex::decode_to_slice(&c.0, &mut id).is_ok() {
                self.chunks.insert((m.kind, id), c.1);
            } else {
                self.odd.insert(chunk_key(m.kind, &c.0), c.1);
            }
        }
    }

    /// Takes the chunks of `m` unless its list was taken already.
    fn read(&mut self, store: &dyn Store, m: &Manifest) -> Result<()> {
        if m.chunks.is_none() || self.seen.contains(&m.id) {
            return Ok(());
        }
        match crate::chunks::load(store, m) {
            Ok(map) => self.add(m, map.as_ref()),
            // `verify` reports the damage with the backup.
            Err(e) if crate::exit::is_damage(&e) => self.add(m, None),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.chunks.values().chain(self.odd.values()).sum()
    }
}

/// The ledger audit.
#[derive(Debug, Default, Serialize)]
pub struct Audit {
    pub checked: bool,
    pub transfers: usize,
    pub store_balance: Option<i128>,
    pub retained_bytes: u64,
    /// Backups whose ledger record or deletion is not finished yet: a record
    /// waiting in the spool, or a deletion an interrupted cleanup left (the next
    /// run finishes both).
    pub pending: Vec<String>,
    pub problems: Vec<String>,
}

pub fn audit(
    cfg: &ledger::LedgerConfig,
    store: &dyn Store,
    mut chunks: Retained,
    all: &[Manifest],
    chosen: &[Manifest],
    deleting: &BTreeSet<u128>,
) -> Result<Audit> {
    let mut a = Audit::default();
    let identity = store.identity();
    let account = ledger::store_account_id(&identity);
    let transfers = ledger::account_transfers(cfg, account)?;
    a.checked = true;
    a.transfers = transfers.len();
    let ids: BTreeSet<u128> = transfers.iter().map(|t| t.id).collect();
    let manifests: HashMap<u128, &Manifest> = all
        .iter()
        .map(|m| (u128::from_be_bytes(m.id.as_bytes()), m))
        .collect();
    let (mut credits, mut debits) = (0i128, 0i128);
    for t in &transfers {
        if t.code != ledger::TRANSFER_CODE {
            continue;
        }
        if t.credit_account_id == account {
            credits += t.amount as i128;
        } else if t.debit_account_id == account {
            debits += t.amount as i128;
        }
        let backup = t.credit_account_id == account
            && t.amount > 0
            && !matches!(
                t.operation,
                Some(ledger::Operation::Cleanup)
                    | Some(ledger::Operation::Verify)
                    | Some(ledger::Operation::Restore)
            );
        let reversal = ledger::cleanup_transfer_id(t.id);
        let spooled = cfg.spool_dir.join(format!("{reversal:032x}.json")).exists();
        if backup && (deleting.contains(&t.id) || spooled) && !manifests.contains_key(&t.id) {
            // An interrupted cleanup (the next one finishes it) or a reversal
            // waiting in the spool.
            a.pending.push(BackupId::from_u128(t.id).to_string());
        } else if backup && !ids.contains(&reversal) && !manifests.contains_key(&t.id) {
            a.problems.push(format!(
                "the ledger records backup {} ({} bytes, {}) as stored in {identity}, but the store has no manifest for it: it was deleted outside bkp, or its manifest was lost",
                BackupId::from_u128(t.id),
                t.amount,
                t.fields.map_or("unknown kind".to_string(), |f| f.backup_type.name().to_string()),
            ));
        }
    }
    for m in chosen {
        let id = u128::from_be_bytes(m.id.as_bytes());
        if ids.contains(&id) {
            continue;
        }
        if cfg.spool_dir.join(format!("{id:032x}.json")).exists() {
            a.pending.push(m.id.to_string());
        } else {
            a.problems.push(format!(
                "backup {} ({} {}) is in the store but the ledger never recorded it",
                m.id,
                m.kind.as_str(),
                m.operation
            ));
        }
    }
    let mut retained: HashMap<&str, u64> = HashMap::new();
    for m in all {
        for o in &m.objects {
            retained.insert(&o.key, o.size);
        }
        if let Some(c) = &m.chunks {
            retained.insert(&c.list.key, c.list.size);
            chunks.read(store, m)?;
        }
    }
    a.retained_bytes = retained.values().sum::<u64>() + chunks.bytes();
    let balance = credits - debits;
    a.store_balance = Some(balance);
    if a.pending.is_empty() && a.problems.is_empty() && balance != a.retained_bytes as i128 {
        a.problems.push(format!(
            "the store account's balance in the ledger is {balance} bytes but the manifests retain {} bytes",
            a.retained_bytes
        ));
    }
    Ok(a)
}
