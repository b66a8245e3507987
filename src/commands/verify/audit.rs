//! `verify`'s ledger audit: the code-12 transfers on the store's account against
//! the manifests. A backup the ledger records as stored (and not deleted by
//! `cleanup`) must have a manifest, every manifest must have its transfer (or a
//! record waiting in the spool), and the account's balance must equal the bytes
//! the manifests retain.
//!
//! A manifest whose transfer the cluster has nowhere is what a run killed
//! between storing it and recording it leaves (nothing is lost): the audit
//! records it late, from the sealed manifest, and reports it as reconciled, not
//! as damage. The balance holds by construction: a backup's transfer credits
//! its own objects, its chunk list and the chunks no backup listed before it
//! names (`snapshot`: whoever uploaded them); `cleanup`'s reverse transfer
//! takes back what the deletion frees; so the balance is each retained object
//! counted once, which is what is compared here.

use std::collections::BTreeSet;

use anyhow::Result;
use serde::Serialize;

use crate::commands::run::{backup_operation, RunRecord};
use crate::id::BackupId;
use crate::ledger;
use crate::manifest::Manifest;
use crate::store::Store;

use super::{Retained, Survey};

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
    /// Backups in the store that the ledger lacked (a run killed before its
    /// record): recorded late by this run.
    pub reconciled: Vec<String>,
    pub problems: Vec<String>,
}

pub fn audit(
    cfg: &ledger::LedgerConfig,
    store: &dyn Store,
    mut chunks: Retained,
    survey: &Survey,
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
    let listed = survey.ids();
    let listed = |id: &u128| listed.binary_search(id).is_ok();
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
        if backup && (deleting.contains(&t.id) || spooled) && !listed(&t.id) {
            // An interrupted cleanup (the next one finishes it) or a reversal
            // waiting in the spool.
            a.pending.push(BackupId::from_u128(t.id).to_string());
        } else if backup && !ids.contains(&reversal) && !listed(&t.id) {
            a.problems.push(format!(
                "the ledger records backup {} ({} bytes, {}) as stored in {identity}, but the store has no manifest for it: it was deleted outside bkp, or its manifest was lost",
                BackupId::from_u128(t.id),
                t.amount,
                t.fields.map_or("unknown kind".to_string(), |f| f.backup_type.as_str().to_string()),
            ));
        }
    }
    let mut missing = Vec::new();
    for m in chosen {
        let id = u128::from_be_bytes(m.id.as_bytes());
        if ids.contains(&id) {
            continue;
        }
        if cfg.spool_dir.join(format!("{id:032x}.json")).exists() {
            a.pending.push(m.id.to_string());
        } else {
            missing.push(m);
        }
    }
    reconcile(cfg, store, &missing, &mut a)?;
    for m in &survey.chunked {
        chunks.read(store, m)?;
    }
    a.retained_bytes = survey.recorded.bytes().saturating_add(chunks.bytes());
    let balance = credits - debits;
    a.store_balance = Some(balance);
    let settled = a.pending.is_empty() && a.reconciled.is_empty();
    if settled && a.problems.is_empty() && balance != a.retained_bytes as i128 {
        a.problems.push(format!(
            "the store account's balance in the ledger is {balance} bytes but the manifests retain {} bytes",
            a.retained_bytes
        ));
    }
    Ok(a)
}

/// Records late the backups in `missing` (listed, with no transfer on the
/// store's account and none spooled): each is spooled as a late record made
/// from its sealed manifest, which this run's own record sends. One whose
/// transfer the cluster holds on another account stays a problem.
fn reconcile(
    cfg: &ledger::LedgerConfig,
    store: &dyn Store,
    missing: &[&Manifest],
    a: &mut Audit,
) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    let ids: Vec<u128> = missing.iter().map(|m| m.id.as_u128()).collect();
    let elsewhere = ledger::existing_transfers(cfg, &ids)?;
    for m in missing {
        let never = format!(
            "backup {} ({} {}) is in the store but the ledger never recorded it",
            m.id,
            m.kind.as_str(),
            m.operation
        );
        let op = match backup_operation(&m.operation) {
            Some(op) if !elsewhere.contains(&m.id.as_u128()) => op,
            Some(_) => {
                a.problems.push(format!(
                    "{never} on this store's account: its transfer credits another account (was the store named differently when it was made?)"
                ));
                continue;
            }
            None => {
                a.problems.push(never);
                continue;
            }
        };
        let rec = RunRecord::of_backup(m, op).to_ledger(store);
        match ledger::spool_late(cfg, &rec) {
            Ok(_) => a.reconciled.push(m.id.to_string()),
            Err(e) => a
                .problems
                .push(format!("{never}, and recording it now failed: {e:#}")),
        }
    }
    Ok(())
}
