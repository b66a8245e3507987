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
//! Never lost, never twice: [`record`] first writes the record to the spool
//! directory (one JSON file per transfer, named by its id), then sends it together
//! with any older spooled records. A file is removed only after TigerBeetle answered
//! `ok` or `exists`; transfer ids make a resend harmless. A cluster that does not
//! answer within the configured timeout leaves the record spooled for the next run
//! and does not fail the backup.
//!
//! The TigerBeetle client retries forever while the cluster is down, so every call
//! is bounded by [`LedgerConfig::timeout`]. Measured on a 2-core machine with a 2 s
//! timeout and nothing listening on the port: `record` returned `Spooled` after
//! 2.04–2.07 s (three runs), i.e. the timeout plus ~50 ms of client set-up and
//! tear-down. While it retries, the client prints `warning(message_bus): ...
//! ConnectionRefused` lines to stderr (it logs warnings there when no log callback
//! is registered).

use std::future::Future;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tigerbeetle_unofficial as tb;
use tigerbeetle_unofficial::error::{
    CreateAccountErrorKind, CreateAccountsError, CreateTransferErrorKind, CreateTransfersError,
    SendError, SendErrorKind,
};

use crate::exit::{coded, Code};

/// `code` of every bkp transfer.
pub const TRANSFER_CODE: u16 = 12;
/// `code` of the account of a source kind (debited by a backup).
pub const SOURCE_ACCOUNT_CODE: u16 = 1201;
/// `code` of the account of a store (credited by a backup).
pub const STORE_ACCOUNT_CODE: u16 = 1202;
/// `code` of the account that counts the bytes `verify` read from a store.
pub const VERIFIED_ACCOUNT_CODE: u16 = 1203;
/// A suggested ledger number for configs that do not set one.
pub const DEFAULT_LEDGER: u32 = 12;
/// Events per create request: below the 253 transfers that fit into the 32 KiB
/// requests of a development-mode replica (8189 with the default 1 MiB).
const BATCH: usize = 100;

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

macro_rules! wire_codes {
    ($ty:ident, $field:literal, $($var:ident = $val:literal),+ $(,)?) => {
        impl $ty {
            /// Every value, in code order.
            pub const ALL: &'static [$ty] = &[$($ty::$var),+];

            /// The number stored in the transfer. Extend with new values, never reuse one.
            pub fn code(self) -> u8 {
                match self { $($ty::$var => $val),+ }
            }

            /// The value stored as `code`; an unknown code is an error naming the field.
            pub fn from_code(code: u8) -> Result<Self> {
                match code {
                    $($val => Ok($ty::$var),)+
                    other => bail!("unknown {} code {} in a code-12 transfer", $field, other),
                }
            }
        }
    };
}

/// Kind of backup (`user_data_128` bits 120–127).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupType {
    Tigerbeetle,
    Duckdb,
    Parquet,
    Kms,
}
wire_codes!(
    BackupType,
    "backup type",
    Tigerbeetle = 1,
    Duckdb = 2,
    Parquet = 3,
    Kms = 4
);

impl BackupType {
    /// The name used in account domain strings, keys and metadata.
    pub fn name(self) -> &'static str {
        match self {
            BackupType::Tigerbeetle => "tigerbeetle",
            BackupType::Duckdb => "duckdb",
            BackupType::Parquet => "parquet",
            BackupType::Kms => "kms",
        }
    }
}

/// Full or incremental (`user_data_128` bits 112–119).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Full,
    Incremental,
}
wire_codes!(Scope, "scope", Full = 1, Incremental = 2);

/// Compression of the stored objects (`user_data_128` bits 104–111).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompressionCode {
    None,
    Gzip,
    Zstd,
}
wire_codes!(CompressionCode, "compression", None = 1, Gzip = 2, Zstd = 3);

/// Encryption of the stored objects (`user_data_128` bits 96–103).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionCode {
    None,
    Aes256Gcm,
}
wire_codes!(EncryptionCode, "encryption", None = 1, Aes256Gcm = 2);

/// Outcome of the run (`user_data_128` bits 88–95).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Started,
    Completed,
    Failed,
}
wire_codes!(Status, "status", Started = 1, Completed = 2, Failed = 3);

/// The subcommand that recorded the transfer (`user_data_32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    Snapshot,
    Logs,
    Export,
    Replicate,
    Verify,
    Cleanup,
}
wire_codes!(
    Operation,
    "operation",
    Snapshot = 1,
    Logs = 2,
    Export = 3,
    Replicate = 4,
    Verify = 5,
    Cleanup = 6,
);

/// The fields packed into a transfer's `user_data_128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packed {
    pub backup_type: BackupType,
    pub scope: Scope,
    pub compression: CompressionCode,
    pub encryption: EncryptionCode,
    pub status: Status,
    pub retention_days: u16,
}

/// Packs `p`, most significant bits first: type 120–127, scope 112–119, compression
/// 104–111, encryption 96–103, status 88–95, retention days 72–87; bits 0–71 zero.
pub fn pack(p: &Packed) -> u128 {
    (u128::from(p.backup_type.code()) << 120)
        | (u128::from(p.scope.code()) << 112)
        | (u128::from(p.compression.code()) << 104)
        | (u128::from(p.encryption.code()) << 96)
        | (u128::from(p.status.code()) << 88)
        | (u128::from(p.retention_days) << 72)
}

/// Reverses [`pack`]; unknown codes or nonzero reserved bits are errors naming the field.
pub fn unpack(v: u128) -> Result<Packed> {
    if v & ((1u128 << 72) - 1) != 0 {
        bail!("user_data_128 {v:#034x} has reserved bits 0-71 set: not a bkp packing");
    }
    // Truncating casts pick out one field each.
    let byte = |shift: u32| (v >> shift) as u8;
    Ok(Packed {
        backup_type: BackupType::from_code(byte(120))?,
        scope: Scope::from_code(byte(112))?,
        compression: CompressionCode::from_code(byte(104))?,
        encryption: EncryptionCode::from_code(byte(96))?,
        status: Status::from_code(byte(88))?,
        retention_days: (v >> 72) as u16,
    })
}

/// FNV-1a with 128 bits: a stable identifier scheme, not a security measure. Never
/// change it, the ids of accounts that already exist depend on it. TigerBeetle
/// reserves 0 and `u128::MAX`, which map to their neighbours.
fn fnv1a_128(data: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let h = data
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    if h == 0 || h == u128::MAX {
        h ^ 1
    } else {
        h
    }
}

/// Account id of a source kind: FNV-1a-128 of `bkp/source/` + kind name.
pub fn source_account_id(t: BackupType) -> u128 {
    fnv1a_128(format!("bkp/source/{}", t.name()).as_bytes())
}

/// Account id of a store: FNV-1a-128 of `bkp/store/` + its identity, such as
/// `s3://bucket/prefix` or `file:///path` (callers must spell it the same way every run).
pub fn store_account_id(store_identity: &str) -> u128 {
    fnv1a_128(format!("bkp/store/{store_identity}").as_bytes())
}

/// The id of the transfer that records the deletion of backup `backup_id`.
pub fn cleanup_transfer_id(backup_id: u128) -> u128 {
    fnv1a_128(format!("bkp/cleanup/{backup_id:032x}").as_bytes())
}

/// Account id of the bytes `verify` read from a store: FNV-1a-128 of
/// `bkp/verified/` + the store's identity.
pub fn verified_account_id(store_identity: &str) -> u128 {
    fnv1a_128(format!("bkp/verified/{store_identity}").as_bytes())
}

/// One run, as recorded in the ledger and in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The run's backup id (UUIDv7 bytes); for `cleanup`, the id of the deleted backup.
    #[serde(with = "hex_id")]
    pub backup_id: [u8; 16],
    pub backup_type: BackupType,
    pub scope: Scope,
    pub compression: CompressionCode,
    pub encryption: EncryptionCode,
    pub status: Status,
    pub retention_days: u16,
    pub operation: Operation,
    pub started_at_unix_ns: u64,
    /// Bytes stored (for `cleanup`: bytes deleted); must be 0 when `status` is failed.
    pub amount: u128,
    pub store_identity: String,
}

impl Record {
    /// The fields that go into `user_data_128`.
    pub fn packed(&self) -> Packed {
        Packed {
            backup_type: self.backup_type,
            scope: self.scope,
            compression: self.compression,
            encryption: self.encryption,
            status: self.status,
            retention_days: self.retention_days,
        }
    }

    /// The transfer id: the backup id read big-endian, or for `cleanup` FNV-1a-128
    /// of `bkp/cleanup/` + the deleted backup's id in hex (one reversal per backup).
    pub fn transfer_id(&self) -> Result<u128> {
        let id = u128::from_be_bytes(self.backup_id);
        if id == 0 || id == u128::MAX {
            bail!("backup id {id:032x} is reserved by TigerBeetle and cannot identify a transfer");
        }
        Ok(match self.operation {
            Operation::Cleanup => cleanup_transfer_id(id),
            _ => id,
        })
    }

    /// The transfer for `ledger`, after checking what TigerBeetle would reject.
    fn transfer(&self, ledger: u32) -> Result<tb::Transfer> {
        let id = self.transfer_id()?;
        if ledger == 0 {
            bail!("ledger 0 is reserved by TigerBeetle: set [ledger] ledger to a nonzero number");
        }
        if self.store_identity.is_empty() {
            bail!("the ledger record for transfer {id:032x} names no store");
        }
        if self.status == Status::Failed && self.amount != 0 {
            bail!(
                "the ledger record of failed run {id:032x} must have amount 0, not {}",
                self.amount
            );
        }
        let (source, store) = (
            source_account_id(self.backup_type),
            store_account_id(&self.store_identity),
        );
        let (debit, credit) = match self.operation {
            Operation::Cleanup => (store, source),
            // Bytes read to verify are counted apart: the store's balance stays
            // the bytes it retains.
            Operation::Verify => (source, verified_account_id(&self.store_identity)),
            _ => (source, store),
        };
        Ok(tb::Transfer::new(id)
            .with_debit_account_id(debit)
            .with_credit_account_id(credit)
            .with_amount(self.amount)
            .with_ledger(ledger)
            .with_code(TRANSFER_CODE)
            .with_user_data_128(pack(&self.packed()))
            .with_user_data_64(self.started_at_unix_ns)
            .with_user_data_32(self.operation.code().into()))
    }

    /// The accounts the transfer moves between (`ledger` was checked nonzero).
    fn accounts(&self, ledger: u32) -> Vec<tb::Account> {
        let mut accounts = vec![
            tb::Account::new(
                source_account_id(self.backup_type),
                ledger,
                SOURCE_ACCOUNT_CODE,
            )
            .with_user_data_32(self.backup_type.code().into()),
            tb::Account::new(
                store_account_id(&self.store_identity),
                ledger,
                STORE_ACCOUNT_CODE,
            ),
        ];
        if self.operation == Operation::Verify {
            accounts.push(tb::Account::new(
                verified_account_id(&self.store_identity),
                ledger,
                VERIFIED_ACCOUNT_CODE,
            ));
        }
        accounts
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
/// first. An unreachable cluster gives `Ok(Spooled)`; a rejection by TigerBeetle (for
/// example an id reused with different fields) is an error naming the spool files.
pub fn record(cfg: &LedgerConfig, rec: &Record) -> Result<Outcome> {
    check_config(cfg)?;
    rec.transfer(cfg.ledger)?;
    let entry = SpoolEntry {
        transfer_id: format!("{:032x}", rec.transfer_id()?),
        ledger: cfg.ledger,
        record: rec.clone(),
    };
    let path = write_spool(&cfg.spool_dir, &entry)?;
    let files = read_spool(&cfg.spool_dir)?;
    let sent = match send_and_unspool(cfg, &files) {
        Ok(sent) => sent,
        Err(Fail::Unreachable(reason)) => {
            let reason = format!(
                "{reason}; the record was spooled to {} and will be sent by the next run",
                path.display()
            );
            return Ok(Outcome::Spooled { path, reason });
        }
        Err(Fail::Hard(e)) => {
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
            Some(Sent::Created | Sent::Existed) => err.context(format!(
                "this run's record {} was recorded",
                entry.transfer_id
            )),
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

/// Sends every spooled record, oldest first, and returns how many the cluster
/// accepted (or already had). Each file is removed only after that answer; files
/// the cluster rejects stay and make this an error that names them.
pub fn flush_spool(cfg: &LedgerConfig) -> Result<usize> {
    let files = read_spool(&cfg.spool_dir)?;
    if files.is_empty() {
        return Ok(0);
    }
    check_config(cfg)?;
    let sent = send_and_unspool(cfg, &files).map_err(|f| match f {
        Fail::Unreachable(reason) => coded(
            Code::Transient,
            format!(
                "{reason}; {} ledger record(s) stay spooled in {} for the next run",
                files.len(),
                cfg.spool_dir.display()
            ),
        ),
        Fail::Hard(e) => e,
    })?;
    if let Some(err) = rejections(cfg, &files, &sent) {
        return Err(err);
    }
    Ok(sent.len())
}

/// Looks up one transfer by id; `None` when the cluster has no such transfer.
pub fn lookup(cfg: &LedgerConfig, transfer_id: u128) -> Result<Option<TransferView>> {
    check_config(cfg)?;
    let found = with_client(cfg, |c| {
        c.call(
            "lookup_transfers",
            c.client.lookup_transfers(vec![transfer_id]),
        )?
        .map_err(|e| send_fail(cfg, e))
    })
    .map_err(Fail::into_error)?;
    Ok(found.into_iter().next().map(TransferView::from))
}

/// `(debits_posted, credits_posted)` of an account; `None` when it does not exist.
/// For a store account, credits minus debits is the bytes it retains.
pub fn account_balances(cfg: &LedgerConfig, account_id: u128) -> Result<Option<(u128, u128)>> {
    check_config(cfg)?;
    let found = with_client(cfg, |c| {
        c.call(
            "lookup_accounts",
            c.client.lookup_accounts(vec![account_id]),
        )?
        .map_err(|e| send_fail(cfg, e))
    })
    .map_err(Fail::into_error)?;
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
            let page = c
                .call(
                    "get_account_transfers",
                    c.client.get_account_transfers(Box::new(filter)),
                )?
                .map_err(|e| send_fail(cfg, e))?;
            // Until an empty page: a reply may hold fewer than PAGE rows.
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page.into_iter().map(TransferView::from));
        }
    })
    .map_err(Fail::into_error)
}

fn check_config(cfg: &LedgerConfig) -> Result<()> {
    let problems = [
        (
            cfg.ledger == 0,
            "[ledger] ledger must be a nonzero number (e.g. 12)",
        ),
        (
            cfg.addresses.trim().is_empty(),
            "[ledger] addresses is empty: name the replicas",
        ),
        (
            cfg.timeout.is_zero(),
            "[ledger] timeout must be longer than zero",
        ),
    ];
    match problems.iter().find(|(bad, _)| *bad) {
        Some((_, problem)) => Err(coded(Code::Config, *problem)),
        None => Ok(()),
    }
}

/// Why a send did not complete.
enum Fail {
    /// No answer in time (or the client lost its session): retry later.
    Unreachable(String),
    /// Anything that retrying unchanged will not fix.
    Hard(anyhow::Error),
}

impl Fail {
    fn into_error(self) -> anyhow::Error {
        match self {
            Fail::Unreachable(reason) => coded(Code::Transient, reason),
            Fail::Hard(e) => e,
        }
    }
}

fn send_fail(cfg: &LedgerConfig, e: SendError) -> Fail {
    match e.kind() {
        SendErrorKind::ClientEvicted | SendErrorKind::ClientShutdown => Fail::Unreachable(format!(
            "the ledger cluster at {} ended this client's session ({e})",
            cfg.addresses
        )),
        SendErrorKind::ClientReleaseTooLow | SendErrorKind::ClientReleaseTooHigh => {
            Fail::Hard(anyhow!(
                "the ledger cluster at {} refused this client ({e}): bkp's TigerBeetle client \
                 is release 0.16.78; run a cluster release that accepts it",
                cfg.addresses
            ))
        }
        _ => Fail::Hard(anyhow!(
            "request to the ledger cluster at {} failed: {e}",
            cfg.addresses
        )),
    }
}

/// A client with its own runtime, for synchronous callers.
struct Conn<'a> {
    cfg: &'a LedgerConfig,
    rt: tokio::runtime::Runtime,
    client: tb::Client,
}

impl Conn<'_> {
    /// Runs one client call, bounded by the configured timeout.
    fn call<F: Future>(&self, what: &str, fut: F) -> Result<F::Output, Fail> {
        self.rt
            .block_on(async { tokio::time::timeout(self.cfg.timeout, fut).await })
            .map_err(|_| {
                Fail::Unreachable(format!(
                    "the ledger cluster at {} did not answer {what} within {:?}: start the \
                     cluster or fix [ledger] addresses in the config",
                    self.cfg.addresses, self.cfg.timeout
                ))
            })
    }
}

fn with_client<T>(cfg: &LedgerConfig, f: impl FnOnce(&Conn) -> Result<T, Fail>) -> Result<T, Fail> {
    let session =
        crate::tbclient::Session::open(cfg.cluster_id, &cfg.addresses, "[ledger] addresses")
            .map_err(Fail::Hard)?;
    let conn = Conn {
        cfg,
        rt: session.rt,
        client: session.client,
    };
    let out = f(&conn);
    let Conn { rt, client, .. } = conn;
    crate::tbclient::Session { rt, client }.close();
    out
}

/// TigerBeetle's answer for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Created,
    Existed,
    Rejected(String),
}

/// A result's snake_case name as in TigerBeetle's docs. The crate panics when asked
/// for the name of a code it does not know, so those are shown by number.
fn transfer_result_name(kind: CreateTransferErrorKind, code: u32) -> String {
    match kind {
        CreateTransferErrorKind::UnstableUncategorized => format!("result code {code}"),
        kind => kind.into_snake_case_str().to_owned(),
    }
}

fn account_result_name(kind: CreateAccountErrorKind, code: u32) -> String {
    match kind {
        CreateAccountErrorKind::UnstableUncategorized => format!("result code {code}"),
        kind => kind.into_snake_case_str().to_owned(),
    }
}

/// Creates the accounts, then the transfers, of `entries`; one answer per entry.
fn send(c: &Conn, entries: &[&SpoolEntry]) -> Result<Vec<Sent>, Fail> {
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
        match c.call("create_accounts", c.client.create_accounts(chunk.to_vec()))? {
            Ok(()) => {}
            Err(CreateAccountsError::Send(e)) => return Err(send_fail(c.cfg, e)),
            Err(CreateAccountsError::Api(errs)) => {
                for e in errs.as_slice() {
                    if !matches!(e.kind(), CreateAccountErrorKind::Exists) {
                        let a = chunk.get(e.index() as usize);
                        let name = account_result_name(e.kind(), e.inner().code().get());
                        return Err(Fail::Hard(account_rejected(c.cfg, a, e.kind(), &name)));
                    }
                }
            }
            Err(e) => return Err(Fail::Hard(anyhow!("creating ledger accounts failed: {e}"))),
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(BATCH) {
        let transfers = chunk
            .iter()
            .map(|e| e.record.transfer(e.ledger))
            .collect::<Result<Vec<_>>>()
            .map_err(Fail::Hard)?;
        let mut answers = vec![Sent::Created; chunk.len()];
        match c.call("create_transfers", c.client.create_transfers(transfers))? {
            Ok(()) => {}
            Err(CreateTransfersError::Send(e)) => return Err(send_fail(c.cfg, e)),
            Err(CreateTransfersError::Api(errs)) => {
                for e in errs.as_slice() {
                    if let Some(answer) = answers.get_mut(e.index() as usize) {
                        *answer = match e.kind() {
                            CreateTransferErrorKind::Exists => Sent::Existed,
                            kind => {
                                Sent::Rejected(transfer_result_name(kind, e.inner().code().get()))
                            }
                        };
                    }
                }
            }
            Err(e) => return Err(Fail::Hard(anyhow!("creating ledger transfers failed: {e}"))),
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
fn send_and_unspool(
    cfg: &LedgerConfig,
    files: &[(PathBuf, SpoolEntry)],
) -> Result<Vec<Sent>, Fail> {
    let entries: Vec<&SpoolEntry> = files.iter().map(|(_, e)| e).collect();
    let sent = with_client(cfg, |c| send(c, &entries))?;
    for ((path, _), answer) in files.iter().zip(&sent) {
        if matches!(answer, Sent::Created | Sent::Existed) {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(Fail::Hard(anyhow!(
                        "cannot remove sent ledger record {}: {e}; remove it by hand (resending \
                         it would be harmless)",
                        path.display()
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(sent)
}

/// The error for the files the cluster rejected, if any.
fn rejections(
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
            "the ledger cluster at {} rejected {} spooled record(s), kept in place: {}. The \
             cluster will never accept them unchanged (exists_with_different_*: the id was \
             already used for another transfer); resolve the cause, then move the file(s) out \
             of {}",
            cfg.addresses,
            list.len(),
            list.join("; "),
            cfg.spool_dir.display()
        )
    })
}

/// A spool file: the record and the ledger it was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SpoolEntry {
    /// Hex, for people reading the file; the file name repeats it.
    transfer_id: String,
    ledger: u32,
    record: Record,
}

/// Writes `entry` atomically (temp file, fsync, rename, fsync of the directory). A file
/// already there with the same content is kept; one with different content is an error.
fn write_spool(dir: &Path, entry: &SpoolEntry) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create ledger spool directory {}", dir.display()))?;
    let path = dir.join(format!("{}.json", entry.transfer_id));
    match read_entry(&path) {
        Ok(existing) if existing == *entry => return Ok(path),
        Ok(_) => bail!(
            "{} already holds a different ledger record for transfer {}: the backup id was \
             reused with different fields",
            path.display(),
            entry.transfer_id
        ),
        Err(_) if !path.exists() => {}
        Err(e) => return Err(e),
    }
    let tmp = dir.join(format!(
        ".{}.json.tmp{}",
        entry.transfer_id,
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(entry)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("cannot write ledger spool file {}", path.display()))?;
    Ok(path)
}

fn read_entry(path: &Path) -> Result<SpoolEntry> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read ledger spool file {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a bkp ledger record: move it out of the spool directory",
            path.display()
        )
    })
}

/// Spooled records, oldest first (by start time, then file name). Hidden files are
/// unfinished writes and are skipped.
fn read_spool(dir: &Path) -> Result<Vec<(PathBuf, SpoolEntry)>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot list ledger spool directory {}", dir.display()))
        }
    };
    let mut files = Vec::new();
    for item in listing {
        let path = item
            .with_context(|| format!("cannot list ledger spool directory {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let entry = read_entry(&path)?;
        files.push((path, entry));
    }
    files.sort_by(|(pa, a), (pb, b)| {
        (a.record.started_at_unix_ns, pa).cmp(&(b.record.started_at_unix_ns, pb))
    });
    Ok(files)
}

/// `[u8; 16]` as 32 hex digits in JSON.
mod hex_id {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:032x}", u128::from_be_bytes(*id)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let s = String::deserialize(d)?;
        if s.len() != 32 {
            return Err(D::Error::custom(format!(
                "backup id {s:?} is not 32 hex digits"
            )));
        }
        u128::from_str_radix(&s, 16)
            .map(u128::to_be_bytes)
            .map_err(|e| D::Error::custom(format!("backup id {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            backup_id: 0x0190_a1b2_c3d4_7e5f_8a9b_0c1d_2e3f_4a5bu128.to_be_bytes(),
            backup_type: BackupType::Duckdb,
            scope: Scope::Incremental,
            compression: CompressionCode::Zstd,
            encryption: EncryptionCode::Aes256Gcm,
            status: Status::Completed,
            retention_days: 90,
            operation: Operation::Export,
            started_at_unix_ns: 1_760_000_000_123_456_789,
            amount: 123_456,
            store_identity: "s3://bucket/prefix".into(),
        }
    }

    #[test]
    fn pack_puts_each_field_at_its_bits() {
        let p = Packed {
            backup_type: BackupType::Duckdb,
            scope: Scope::Incremental,
            compression: CompressionCode::Zstd,
            encryption: EncryptionCode::Aes256Gcm,
            status: Status::Completed,
            retention_days: 365,
        };
        // 02 | 02 | 03 | 02 | 02 | 016d | nine zero bytes
        assert_eq!(pack(&p), 0x0202_0302_0201_6d00_0000_0000_0000_0000);
        let ones = Packed {
            backup_type: BackupType::Tigerbeetle,
            scope: Scope::Full,
            compression: CompressionCode::None,
            encryption: EncryptionCode::None,
            status: Status::Started,
            retention_days: u16::MAX,
        };
        assert_eq!(pack(&ones), 0x0101_0101_01ff_ff00_0000_0000_0000_0000);
        assert_eq!(pack(&ones) & ((1u128 << 72) - 1), 0);
        assert_eq!(
            pack(&Packed {
                backup_type: BackupType::Kms,
                ..ones
            }) >> 120,
            4
        );
        assert_eq!(
            (pack(&Packed {
                status: Status::Failed,
                ..ones
            }) >> 88)
                & 0xff,
            3
        );
    }

    #[test]
    fn pack_unpack_round_trip_every_value() {
        let mut n = 0;
        for &backup_type in BackupType::ALL {
            for &scope in Scope::ALL {
                for &compression in CompressionCode::ALL {
                    for &encryption in EncryptionCode::ALL {
                        for &status in Status::ALL {
                            for retention_days in [0, 1, 90, 365, u16::MAX] {
                                let p = Packed {
                                    backup_type,
                                    scope,
                                    compression,
                                    encryption,
                                    status,
                                    retention_days,
                                };
                                assert_eq!(unpack(pack(&p)).unwrap(), p);
                                n += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(n, 4 * 2 * 3 * 2 * 3 * 5);
        for &op in Operation::ALL {
            assert_eq!(Operation::from_code(op.code()).unwrap(), op);
        }
    }

    #[test]
    fn unpack_names_the_bad_field() {
        let good = pack(&sample().packed());
        let cases = [
            (120, "backup type"),
            (112, "scope"),
            (104, "compression"),
            (96, "encryption"),
            (88, "status"),
        ];
        for (shift, field) in cases {
            for bad in [0u128, 9] {
                let v = (good & !(0xffu128 << shift)) | (bad << shift);
                let err = unpack(v).unwrap_err().to_string();
                assert!(err.contains(field), "{err}");
            }
        }
        assert!(unpack(good | 1)
            .unwrap_err()
            .to_string()
            .contains("reserved bits"));
        assert!(Operation::from_code(7)
            .unwrap_err()
            .to_string()
            .contains("operation"));
    }

    #[test]
    fn ids_are_stable_distinct_and_nonzero() {
        // Published FNV-1a-128 test vectors.
        assert_eq!(fnv1a_128(b""), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
        let mut ids: Vec<u128> = BackupType::ALL
            .iter()
            .map(|&t| source_account_id(t))
            .collect();
        ids.push(store_account_id("s3://bucket/prefix"));
        ids.push(store_account_id("file:///srv/backups"));
        for (i, a) in ids.iter().enumerate() {
            assert!(*a != 0 && *a != u128::MAX);
            assert!(ids[i + 1..].iter().all(|b| b != a));
        }
        assert_eq!(
            source_account_id(BackupType::Tigerbeetle),
            fnv1a_128(b"bkp/source/tigerbeetle")
        );
        assert_eq!(
            store_account_id("file:///x"),
            fnv1a_128(b"bkp/store/file:///x")
        );
    }

    #[test]
    fn transfer_follows_the_record() {
        let rec = sample();
        let t = rec.transfer(12).unwrap();
        assert_eq!(t.id(), 0x0190_a1b2_c3d4_7e5f_8a9b_0c1d_2e3f_4a5b);
        assert_eq!(t.debit_account_id(), source_account_id(BackupType::Duckdb));
        assert_eq!(
            t.credit_account_id(),
            store_account_id("s3://bucket/prefix")
        );
        assert_eq!((t.amount(), t.ledger(), t.code()), (123_456, 12, 12));
        assert_eq!(unpack(t.user_data_128()).unwrap(), rec.packed());
        assert_eq!(
            (t.user_data_64(), t.user_data_32()),
            (rec.started_at_unix_ns, 3)
        );
        assert_eq!(
            (t.flags().bits(), t.timeout(), t.as_raw().timestamp),
            (0, 0, 0)
        );

        let undo = Record {
            operation: Operation::Cleanup,
            ..rec.clone()
        };
        let u = undo.transfer(12).unwrap();
        assert_ne!(u.id(), t.id());
        assert_eq!(u.id(), undo.transfer_id().unwrap());
        assert_eq!(
            (u.debit_account_id(), u.credit_account_id()),
            (t.credit_account_id(), t.debit_account_id())
        );

        for id in [0, u128::MAX] {
            let bad = Record {
                backup_id: id.to_be_bytes(),
                ..rec.clone()
            };
            assert!(bad
                .transfer(12)
                .unwrap_err()
                .to_string()
                .contains("reserved"));
        }
        assert!(rec.transfer(0).is_err());
        let failed = Record {
            status: Status::Failed,
            ..rec.clone()
        };
        assert!(failed.transfer(12).is_err());
        assert!(Record {
            amount: 0,
            ..failed
        }
        .transfer(12)
        .is_ok());
    }

    #[test]
    fn spool_round_trip_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        assert!(read_spool(&spool).unwrap().is_empty());
        let older = Record {
            started_at_unix_ns: 1,
            backup_id: [7; 16],
            ..sample()
        };
        let entry = |r: &Record| SpoolEntry {
            transfer_id: format!("{:032x}", r.transfer_id().unwrap()),
            ledger: 12,
            record: r.clone(),
        };
        let p1 = write_spool(&spool, &entry(&sample())).unwrap();
        let p2 = write_spool(&spool, &entry(&older)).unwrap();
        assert_eq!(
            p1.file_name().unwrap(),
            "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b.json"
        );
        // The same content again is fine; different content under the same id is not.
        assert_eq!(write_spool(&spool, &entry(&sample())).unwrap(), p1);
        let changed = Record {
            amount: 1,
            ..sample()
        };
        assert!(write_spool(&spool, &entry(&changed))
            .unwrap_err()
            .to_string()
            .contains("reused"));
        std::fs::write(spool.join(".x.json.tmp1"), b"partial").unwrap();
        let files = read_spool(&spool).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!((files[0].0.clone(), files[1].0.clone()), (p2, p1.clone()));
        assert_eq!(files[1].1, entry(&sample()));
        let text = std::fs::read_to_string(&p1).unwrap();
        assert!(
            text.contains("\"backup_id\": \"0190a1b2c3d47e5f8a9b0c1d2e3f4a5b\""),
            "{text}"
        );
        assert!(text.contains("\"encryption\": \"aes256-gcm\""), "{text}");
        std::fs::write(spool.join("junk.json"), b"{").unwrap();
        assert!(read_spool(&spool)
            .unwrap_err()
            .to_string()
            .contains("junk.json"));
    }
}
