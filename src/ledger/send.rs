//! Sending spooled records: accounts first, then transfers, one answer per record;
//! files the cluster accepted (or already had) are removed.

use std::io::ErrorKind;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use tigerbeetle_unofficial as tb;
use tigerbeetle_unofficial::error::{CreateAccountErrorKind, CreateTransferErrorKind};

use super::spool::SpoolEntry;
use super::{with_client, LedgerConfig};
use crate::tigerbeetle::client::Client;

/// Events per create request: below the 253 transfers that fit into the 32 KiB
/// requests of a development-mode replica (8189 with the default 1 MiB).
pub(super) const BATCH: usize = 100;

/// TigerBeetle's answer for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sent {
    Created,
    Existed,
    Rejected(String),
}

/// Creates the accounts, then the transfers, of `entries`; one answer per entry.
fn send(c: &Client, cfg: &LedgerConfig, entries: &[&SpoolEntry]) -> Result<Vec<Sent>> {
    // Accounts first: a transfer to a missing account fails with a transient result
    // that burns its id for good (`id_already_failed`).
    let mut accounts: Vec<tb::Account> = Vec::new();
    for e in entries {
        for a in e.record.accounts(e.ledger) {
            if !accounts
                .iter()
                .any(|x| x.id() == a.id() && x.ledger() == a.ledger())
            {
                accounts.push(a);
            }
        }
    }
    for chunk in accounts.chunks(BATCH) {
        for r in c.create_accounts(chunk.to_vec())? {
            if !r.exists {
                let a = chunk.get(r.index);
                return Err(account_rejected(cfg, a, r.kind, &r.name));
            }
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(BATCH) {
        let transfers = chunk
            .iter()
            .map(|e| e.record.transfer(e.ledger))
            .collect::<Result<Vec<_>>>()?;
        let mut answers = vec![Sent::Created; chunk.len()];
        for r in c.create_transfers(transfers)? {
            // A late record finds its backup's transfer made by its own run,
            // perhaps by an older bkp with other fields: recorded all the same.
            let late = chunk.get(r.index).is_some_and(|e| e.late);
            if let Some(answer) = answers.get_mut(r.index) {
                *answer = match r.kind {
                    CreateTransferErrorKind::Exists => Sent::Existed,
                    _ if late && r.name.starts_with("exists") => Sent::Existed,
                    _ => Sent::Rejected(r.name),
                };
            }
        }
        out.extend(answers);
    }
    Ok(out)
}

fn account_rejected(
    cfg: &LedgerConfig,
    a: Option<&tb::Account>,
    kind: CreateAccountErrorKind,
    name: &str,
) -> anyhow::Error {
    let (id, ledger) = a.map_or((0, 0), |a| (a.id(), a.ledger()));
    let hint = match kind {
        CreateAccountErrorKind::ExistsWithDifferentLedger => {
            "the account was created on another ledger, and an account's ledger cannot change: \
             set [ledger] ledger back to the ledger of the existing bkp accounts"
        }
        _ => "another application may use the same account id; check the cluster's accounts",
    };
    anyhow!(
        "the ledger cluster at {} rejected bkp account {id:032x} on ledger {ledger}: {name}; {hint}",
        cfg.addresses,
    )
}

/// Sends `files` and removes those the cluster accepted or already had.
pub(super) fn send_and_unspool(
    cfg: &LedgerConfig,
    files: &[(PathBuf, SpoolEntry)],
) -> Result<Vec<Sent>> {
    let entries: Vec<&SpoolEntry> = files.iter().map(|(_, e)| e).collect();
    let sent = with_client(cfg, |c| send(c, cfg, &entries))?;
    for ((path, _), answer) in files.iter().zip(&sent) {
        if matches!(answer, Sent::Created | Sent::Existed) {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(anyhow!(
                        "cannot remove sent ledger record {}: {e}; remove it by hand (resending \
                         it would be harmless)",
                        path.display()
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(sent)
}

/// The error for the files the cluster rejected, if any.
pub(super) fn rejections(
    cfg: &LedgerConfig,
    files: &[(PathBuf, SpoolEntry)],
    sent: &[Sent],
) -> Option<anyhow::Error> {
    let list: Vec<String> = files
        .iter()
        .zip(sent)
        .filter_map(|((path, e), s)| match s {
            Sent::Rejected(kind) => Some(format!(
                "{} (transfer {}): {kind}",
                path.display(),
                e.transfer_id
            )),
            _ => None,
        })
        .collect();
    (!list.is_empty()).then(|| {
        anyhow!(
            "the ledger cluster at {} rejected {}, kept in place: {}. The \
             cluster will never accept them unchanged (exists_with_different_*: the id was \
             already used for another transfer); resolve the cause, then move their files out \
             of {}",
            cfg.addresses,
            crate::units::count(list.len() as u64, "spooled record"),
            list.join("; "),
            cfg.spool_dir.display()
        )
    })
}
