//! The code-12 audit ledger: every bkp run records one TigerBeetle transfer that
//! describes what it did.
//!
//! Why: the transfers are an append-only audit trail of every backup, and the
//! balances make the bytes a store holds checkable. Each backup moves its size from
//! the account of its source kind to the account of its store; `cleanup` moves the
//! size of a deleted backup back. So a store account's `credits_posted -
//! debits_posted` is the number of bytes the store currently retains, which `verify`
//! compares with what is really in the bucket.
//!
//! Layout (one configurable ledger, no balance-limit flags):
//! - accounts: one per source kind (code [`SOURCE_ACCOUNT_CODE`]) and one per store
//!   (code [`STORE_ACCOUNT_CODE`]), created idempotently before every send, with ids
//!   derived from a stable hash of a domain string (see [`source_account_id`]);
//! - transfers: code [`TRANSFER_CODE`], id = the backup id (a UUIDv7, big-endian),
//!   `amount` = bytes stored (0 for a failed run), `user_data_128` = [`pack`]ed
//!   fields, `user_data_64` = start time in Unix nanoseconds, `user_data_32` =
//!   [`Operation`]. A `cleanup` record reverses debit and credit and takes an id
//!   derived from the deleted backup's id, so deleting a backup twice records once.
//!
//! Never lost, never twice: [`record()`] first writes the record to the spool
//! directory (one JSON file per transfer, named by its id), then sends it together
//! with any older spooled records. A file is removed only after TigerBeetle answered
//! `ok` or `exists`; transfer ids make a resend harmless. A cluster that does not
//! answer within the configured timeout leaves the record spooled for the next run
//! and does not fail the backup.
//!
//! The TigerBeetle client retries forever while the cluster is down, so every call
//! is bounded by [`LedgerConfig::timeout`] (the policy of
//! [`crate::tigerbeetle::client`]; a cluster that does not answer in time is a
//! [`Code::Transient`] error there, which [`record()`] turns into a spooled record).
//! Measured on a 2-core machine with a 2 s timeout and nothing listening on the
//! port: `record` returned `Spooled` after 2.04–2.07 s (three runs), i.e. the
//! timeout plus ~50 ms of client set-up and tear-down.
//!
//! Crashes: a backup run writes an intent (its record, beside the spool) before
//! it stores its manifest, so that a run killed in between leaves its record
//! for the next run, which spools it as a late record once it has found the
//! manifest ([`orphans`]); `cleanup` spools a late record of a backup's own
//! transfer before its reverse one, and `verify` one for each manifest the
//! ledger lacks ([`spool_late`]). A late record is settled by any `exists`.
//!
//! The parts: `codes` (wire codes, packing, account ids),
//! [`Record`] (a run and the transfer it becomes), the spool, intents, and the sending.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tigerbeetle_unofficial as tb;

use crate::exit::{classify, coded, Code};
use crate::tigerbeetle::client::{self, Client, ClientSpec, Names};

mod codes;
mod intent;
mod record;
mod send;
mod spool;

pub use codes::*;
pub use intent::{intend, orphans, Intent, Orphan};
pub use record::Record;

use send::{rejections, send_and_unspool, Sent};
use spool::{read_spool, write_spool, SpoolEntry};

/// How messages name the ledger cluster.
const NAMES: Names = Names {
    cluster: "ledger cluster",
    setting: "[ledger] addresses",
};

/// Where and how to reach the ledger cluster.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    pub cluster_id: u128,
    /// Replica addresses as TigerBeetle takes them, e.g. `127.0.0.1:3000,10.0.0.2:3000`.
    pub addresses: String,
    /// The ledger of all bkp accounts and transfers; nonzero, never changed later.
    pub ledger: u32,
    /// Bound on every cluster call; the client itself never gives up.
    pub timeout: Duration,
    /// Records not yet accepted by the cluster, one JSON file each.
    pub spool_dir: PathBuf,
}

impl LedgerConfig {
    /// What the client needs of this configuration.
    pub fn client_spec(&self) -> ClientSpec {
        ClientSpec {
            cluster_id: self.cluster_id,
            addresses: self.addresses.clone(),
            timeout: self.timeout,
        }
    }
}

/// What happened to a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The cluster holds the transfer; `already_existed` when an earlier send had
    /// already created it (a retried run).
    Recorded {
        transfer_id: u128,
        already_existed: bool,
    },
    /// The cluster did not answer; the record waits in `path` for the next run.
    Spooled { path: PathBuf, reason: String },
}

/// A transfer as stored in the cluster, with the bkp fields decoded where they parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferView {
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount: u128,
    pub ledger: u32,
    pub code: u16,
    pub flags: u16,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// Nanoseconds since the Unix epoch, assigned by the cluster.
    pub timestamp: u64,
    /// `user_data_128` unpacked; `None` when it is not a bkp packing.
    pub fields: Option<Packed>,
    /// `user_data_32` decoded; `None` when it is not a known operation.
    pub operation: Option<Operation>,
}

impl From<tb::Transfer> for TransferView {
    fn from(t: tb::Transfer) -> Self {
        let raw = t.as_raw();
        TransferView {
            id: raw.id,
            debit_account_id: raw.debit_account_id,
            credit_account_id: raw.credit_account_id,
            amount: raw.amount,
            ledger: raw.ledger,
            code: raw.code,
            flags: raw.flags,
            user_data_128: raw.user_data_128,
            user_data_64: raw.user_data_64,
            user_data_32: raw.user_data_32,
            timestamp: raw.timestamp,
            fields: unpack(raw.user_data_128).ok(),
            operation: u8::try_from(raw.user_data_32)
                .ok()
                .and_then(|c| Operation::from_code(c).ok()),
        }
    }
}

/// Records `rec`: spools it, then sends every spooled record, oldest (by start time)
/// first. An unreachable cluster gives `Ok(Spooled)` (one that refuses
/// connections in milliseconds, [`probe`]); a rejection by TigerBeetle (for
/// example an id reused with different fields) is an error naming the spool files.
pub fn record(cfg: &LedgerConfig, rec: &Record) -> Result<Outcome> {
    check_config(cfg)?;
    let (path, transfer_id) = write_entry(cfg, rec, false)?;
    let files = read_spool(&cfg.spool_dir)?;
    // A cluster with nothing listening is known in milliseconds: the client
    // itself would wait the whole timeout for it.
    if let Err(e) = probe(cfg) {
        return Ok(spooled(path, &format!("{e:#}")));
    }
    let sent = match send_and_unspool(cfg, &files) {
        Ok(sent) => sent,
        Err(e) if unreachable(&e) => return Ok(spooled(path, &format!("{e:#}"))),
        Err(e) => {
            return Err(e.context(format!(
                "the ledger record was not sent; it stays in {} for the next run",
                path.display()
            )))
        }
    };
    let mine = files
        .iter()
        .zip(&sent)
        .find(|((p, _), _)| *p == path)
        .map(|(_, s)| s.clone());
    if let Some(err) = rejections(cfg, &files, &sent) {
        return Err(match mine {
            Some(Sent::Created | Sent::Existed) => {
                err.context(format!("this run's record {transfer_id} was recorded"))
            }
            _ => err,
        });
    }
    // `None`: another run sharing the spool directory sent and removed the file
    // between our write and read, so the cluster already has the transfer.
    Ok(Outcome::Recorded {
        transfer_id: rec.transfer_id()?,
        already_existed: mine != Some(Sent::Created),
    })
}

/// Spools `rec` without sending it, for a run that already knows the cluster
/// does not answer (`reason`, from [`probe`] or an earlier send): the next run
/// that reaches the cluster sends it.
pub fn spool(cfg: &LedgerConfig, rec: &Record, reason: &str) -> Result<Outcome> {
    let (path, _) = write_entry(cfg, rec, false)?;
    Ok(spooled(path, reason))
}

/// Spools `rec` as a late record, for the next send: the record of a backup
/// whose own run may have been killed before recording it (made from its
/// sealed manifest, so the same on every attempt). TigerBeetle's `exists`, with
/// whatever fields, settles it: the backup's transfer is there. The spool file.
pub fn spool_late(cfg: &LedgerConfig, rec: &Record) -> Result<PathBuf> {
    check_config(cfg)?;
    write_entry(cfg, rec, true).map(|(path, _)| path)
}

/// Checks that `rec` makes a transfer of this ledger and writes it to the
/// spool: the file, and the transfer id (hex).
fn write_entry(cfg: &LedgerConfig, rec: &Record, late: bool) -> Result<(PathBuf, String)> {
    rec.transfer(cfg.ledger)?;
    let entry = SpoolEntry {
        transfer_id: format!("{:032x}", rec.transfer_id()?),
        ledger: cfg.ledger,
        record: rec.clone(),
        late,
    };
    let path = write_spool(&cfg.spool_dir, &entry)?;
    Ok((path, entry.transfer_id))
}

/// The outcome of a record left in the spool for the next run, and why.
fn spooled(path: PathBuf, why: &str) -> Outcome {
    let reason = format!(
        "{why}; the record was spooled to {} and will be sent by the next run",
        path.display()
    );
    Outcome::Spooled { path, reason }
}

/// Whether any replica of the cluster accepts a connection, within the
/// configured timeout but at most [`PROBE_WITHIN`]: a run that can do without
/// the ledger asks this first and spends milliseconds, not a timeout per
/// request, on a cluster that is not there. A [`Code::Transient`] error when
/// none does.
pub fn probe(cfg: &LedgerConfig) -> Result<()> {
    check_config(cfg)?;
    client::probe(&cfg.client_spec(), NAMES, cfg.timeout.min(PROBE_WITHIN))
}

/// The longest [`probe`] waits for one address (one that drops packets).
pub const PROBE_WITHIN: Duration = Duration::from_secs(3);

/// Sends every spooled record, oldest first, and returns how many the cluster
/// accepted (or already had). Each file is removed only after that answer; files
/// the cluster rejects stay and make this an error that names them.
pub fn flush_spool(cfg: &LedgerConfig) -> Result<usize> {
    let files = read_spool(&cfg.spool_dir)?;
    if files.is_empty() {
        return Ok(0);
    }
    check_config(cfg)?;
    let sent = send_and_unspool(cfg, &files).map_err(|e| {
        if unreachable(&e) {
            coded(
                Code::Transient,
                format!(
                    "{e:#}; {} stay spooled in {} for the next run",
                    crate::units::count(files.len() as u64, "ledger record"),
                    cfg.spool_dir.display()
                ),
            )
        } else {
            e
        }
    })?;
    if let Some(err) = rejections(cfg, &files, &sent) {
        return Err(err);
    }
    Ok(sent.len())
}

/// Whether `t` is one of bkp's own audit records on `ledger`: code 12, to or
/// from the account of a backup type (every record has one on a side).
pub fn is_audit_transfer(ledger: u32, t: &tb::Transfer) -> bool {
    let r = t.as_raw();
    r.ledger == ledger
        && r.code == TRANSFER_CODE
        && BackupType::ALL.iter().any(|b| {
            let a = source_account_id(*b);
            r.debit_account_id == a || r.credit_account_id == a
        })
}

/// Whether `a` is one of the accounts bkp makes for its records on `ledger`.
pub fn is_audit_account(ledger: u32, a: &tb::Account) -> bool {
    let r = a.as_raw();
    r.ledger == ledger
        && [
            SOURCE_ACCOUNT_CODE,
            STORE_ACCOUNT_CODE,
            VERIFIED_ACCOUNT_CODE,
            RESTORED_ACCOUNT_CODE,
        ]
        .contains(&r.code)
}

/// Which of `ids` the cluster holds a transfer for, on any account.
pub fn existing_transfers(
    cfg: &LedgerConfig,
    ids: &[u128],
) -> Result<std::collections::BTreeSet<u128>> {
    check_config(cfg)?;
    with_client(cfg, |c| {
        let mut found = std::collections::BTreeSet::new();
        for chunk in ids.chunks(send::BATCH) {
            found.extend(c.lookup_transfers(chunk.to_vec())?.iter().map(|t| t.id()));
        }
        Ok(found)
    })
}

/// Looks up one transfer by id; `None` when the cluster has no such transfer.
pub fn lookup(cfg: &LedgerConfig, transfer_id: u128) -> Result<Option<TransferView>> {
    check_config(cfg)?;
    let found = with_client(cfg, |c| c.lookup_transfers(vec![transfer_id]))?;
    Ok(found.into_iter().next().map(TransferView::from))
}

/// `(debits_posted, credits_posted)` of an account; `None` when it does not exist.
/// For a store account, credits minus debits is the bytes it retains.
pub fn account_balances(cfg: &LedgerConfig, account_id: u128) -> Result<Option<(u128, u128)>> {
    check_config(cfg)?;
    let found = with_client(cfg, |c| c.lookup_accounts(vec![account_id]))?;
    Ok(found
        .first()
        .map(|a| (a.debits_posted(), a.credits_posted())))
}

/// Every transfer on an account (both directions), oldest first, paged by
/// timestamp. For a store account: every backup and deletion recorded there.
pub fn account_transfers(cfg: &LedgerConfig, account_id: u128) -> Result<Vec<TransferView>> {
    check_config(cfg)?;
    const PAGE: u32 = 8189;
    with_client(cfg, |c| {
        let mut out: Vec<TransferView> = Vec::new();
        loop {
            let mut filter = tb::account::Filter::new(account_id, PAGE)
                .with_flags(tb::account::FilterFlags::DEBITS | tb::account::FilterFlags::CREDITS);
            filter.as_raw_mut().timestamp_min = out.last().map_or(0, |t| t.timestamp + 1);
            let page = c.get_account_transfers(filter)?;
            // Until an empty page: a reply may hold fewer than PAGE rows.
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page.into_iter().map(TransferView::from));
        }
    })
}

/// The newest backup recorded from the kind account `source` to the store
/// account `store`: one request, newest first, among the last 64 transfers
/// debiting `source` (restores and verifies debit it too). `None` when none
/// is recorded there. A cluster that is not there is a Transient error
/// within [`PROBE_WITHIN`], not after the configured timeout: a restore asks
/// this on the way and must not wait an hour for a ledger that is down.
pub fn newest_stored(
    cfg: &LedgerConfig,
    source: u128,
    store: u128,
) -> Result<Option<TransferView>> {
    probe(cfg)?;
    with_client(cfg, |c| {
        let mut filter = tb::account::Filter::new(source, 64)
            .with_flags(tb::account::FilterFlags::DEBITS | tb::account::FilterFlags::REVERSED);
        filter.as_raw_mut().code = TRANSFER_CODE;
        Ok(c.get_account_transfers(filter)?
            .into_iter()
            .map(TransferView::from)
            .find(|t| {
                t.credit_account_id == store
                    && t.operation.is_some_and(|o| {
                        !matches!(
                            o,
                            Operation::Verify | Operation::Cleanup | Operation::Restore
                        )
                    })
            }))
    })
}

/// The ledger number must be nonzero; the rest is the client's check.
fn check_config(cfg: &LedgerConfig) -> Result<()> {
    if cfg.ledger == 0 {
        return Err(coded(
            Code::Config,
            "[ledger] ledger must be a nonzero number (e.g. 12)",
        ));
    }
    client::check_spec(&cfg.client_spec(), NAMES)
}

thread_local! {
    /// The session [`warm`] opened ahead, until a request to its cluster takes it.
    static WARM: std::cell::RefCell<Option<(ClientSpec, Client)>> =
        const { std::cell::RefCell::new(None) };
}

/// Opens a session with the ledger cluster now, for this thread's next request
/// to it: TigerBeetle's client needs about 0.6 s before a new session's first
/// answer (see [`Client::open_events`]), which a run that opens it as it starts
/// spends beside its own work rather than at its end. Nothing is sent yet, and
/// a configuration the client refuses is left for the request to report. The
/// session lives until a request takes it or the returned guard is dropped.
#[must_use = "the session is closed when the guard is dropped"]
pub fn warm(cfg: &LedgerConfig) -> Warm {
    let spec = cfg.client_spec();
    if let Ok(c) = connect(&spec) {
        WARM.with(|w| *w.borrow_mut() = Some((spec, c)));
    }
    Warm(())
}

/// Lends the session [`warm`] opened to a run whose source is the ledger's own
/// cluster (`spec`: the same id, addresses and timeout), so that the run holds
/// one client's message buffers rather than two; [`give_back`] returns it for
/// the run's record. `None` when no session is waiting for that cluster.
pub fn lend(spec: &ClientSpec) -> Option<Client> {
    WARM.with(|w| {
        let mut w = w.borrow_mut();
        match w.take() {
            Some((s, c)) if s == *spec => Some(c),
            other => {
                *w = other;
                None
            }
        }
    })
}

/// Returns a session [`lend`] lent (its messages naming the ledger cluster
/// again), for this thread's next request to `spec`'s cluster.
pub fn give_back(spec: &ClientSpec, c: Client) {
    WARM.with(|w| {
        let mut w = w.borrow_mut();
        if w.is_none() {
            *w = Some((spec.clone(), c.renamed(NAMES)));
        }
    })
}

/// Closes the session [`warm`] opened, if no request took it.
pub struct Warm(());

impl Drop for Warm {
    fn drop(&mut self) {
        if let Some((_, c)) = WARM.with(|w| w.borrow_mut().take()) {
            c.close();
        }
    }
}

/// Connects to the ledger cluster (or takes the session [`warm`] opened for
/// it), runs `f`, and closes the client.
fn with_client<T>(cfg: &LedgerConfig, f: impl FnOnce(&Client) -> Result<T>) -> Result<T> {
    let spec = cfg.client_spec();
    let c = match lend(&spec) {
        Some(c) => c,
        None => connect(&spec)?,
    };
    let out = f(&c);
    c.close();
    out
}

/// A session with the ledger cluster, registering now: one session of bkp's
/// own for its reads and creates (see [`Client::connect_reader`]), so that a
/// run whose source is the ledger's cluster, lent it, holds one session's
/// message buffers (about 21 MiB), not two.
fn connect(spec: &ClientSpec) -> Result<Client> {
    let c = Client::connect_reader(spec, NAMES)?;
    c.open_events()?;
    Ok(c)
}

/// Whether a send failed because the cluster did not answer (or ended the
/// session): the record stays spooled for the next run.
fn unreachable(e: &anyhow::Error) -> bool {
    classify(e) == Some(Code::Transient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warm_session_is_lent_only_to_its_own_cluster_and_comes_back() {
        // Nothing listens there: a client opens at once, and sends nothing here.
        let cfg = LedgerConfig {
            cluster_id: 0,
            addresses: "127.0.0.1:1".into(),
            ledger: 12,
            timeout: Duration::from_secs(1),
            spool_dir: PathBuf::from("/nonexistent"),
        };
        let guard = warm(&cfg);
        let spec = cfg.client_spec();
        let other = ClientSpec {
            cluster_id: 1,
            ..spec.clone()
        };
        assert!(
            lend(&other).is_none(),
            "another cluster's run opens its own"
        );
        let c = lend(&spec).expect("the session warm opened");
        assert!(lend(&spec).is_none(), "lent once");
        give_back(&spec, c);
        assert!(lend(&spec).is_some(), "back for the run's record");
        drop(guard);
    }
}
