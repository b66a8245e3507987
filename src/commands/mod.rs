//! One file per subcommand, each a short recipe that reads as its chain of stages.
//! This module holds what they share: the run context, opening the store, and
//! recording the run in the audit ledger.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use time::OffsetDateTime;

use crate::config::{Plan, StorePlan};
use crate::crypto::Keyring;
use crate::id::BackupId;
use crate::ledger;
use crate::manifest::{Kind, Scope};
use crate::stages::compress::Compression;
use crate::stages::progress::Progress;
use crate::store::{local::LocalStore, s3::S3Store, Store};
use crate::ui::Ui;

pub mod cleanup;
pub mod export;
pub mod list;
pub mod logs;
pub mod replicate;
pub mod restore;
pub mod run;
pub mod snapshot;
pub mod status;
pub mod verify;

/// Everything a subcommand needs, built by `main` from flags and config.
pub struct Ctx {
    pub plan: Plan,
    pub ui: Ui,
    pub wait: Duration,
}

impl Ctx {
    pub fn progress(&self) -> Arc<dyn Progress> {
        self.ui.progress()
    }
}

pub fn open_store(plan: &Plan) -> Result<Box<dyn Store>> {
    Ok(match &plan.store {
        StorePlan::Local(p) => Box::new(LocalStore::new(p)?),
        StorePlan::S3(s) => Box::new(S3Store::new(s.clone())?),
    })
}

/// What one run tells the audit ledger.
pub struct RunRecord {
    pub id: BackupId,
    pub kind: Kind,
    pub scope: Scope,
    pub operation: ledger::Operation,
    pub compression: Compression,
    pub encrypted: bool,
    pub completed: bool,
    pub retention_days: u16,
    pub started_at: OffsetDateTime,
    pub bytes: u64,
}

/// Records the run as a code-12 transfer. An unreachable cluster never fails the
/// backup: the record is spooled and the next run sends it. First it writes the
/// run's metrics file (when `metrics.dir` is set), on success and on failure alike.
pub fn record_run(ctx: &Ctx, store: &dyn Store, r: &RunRecord) -> Result<Option<String>> {
    crate::metrics::after_run(ctx, store, r);
    send_record(ctx, &r.to_ledger(store))
}

impl RunRecord {
    /// The ledger's form of this record, for `store`.
    pub fn to_ledger(&self, store: &dyn Store) -> ledger::Record {
        let r = self;
        ledger::Record {
            backup_id: r.id.as_bytes(),
            backup_type: match r.kind {
                Kind::Tigerbeetle => ledger::BackupType::Tigerbeetle,
                Kind::Duckdb => ledger::BackupType::Duckdb,
                Kind::Parquet => ledger::BackupType::Parquet,
                Kind::Kms => ledger::BackupType::Kms,
            },
            scope: match r.scope {
                Scope::Full => ledger::Scope::Full,
                Scope::Incremental => ledger::Scope::Incremental,
            },
            compression: match r.compression {
                Compression::None => ledger::CompressionCode::None,
                Compression::Gzip { .. } => ledger::CompressionCode::Gzip,
                Compression::Zstd { .. } => ledger::CompressionCode::Zstd,
            },
            encryption: if r.encrypted {
                ledger::EncryptionCode::Aes256Gcm
            } else {
                ledger::EncryptionCode::None
            },
            status: if r.completed {
                ledger::Status::Completed
            } else {
                ledger::Status::Failed
            },
            retention_days: r.retention_days,
            operation: r.operation,
            started_at_unix_ns: r.started_at.unix_timestamp_nanos().max(0) as u64,
            amount: if r.completed { r.bytes as u128 } else { 0 },
            store_identity: store.identity(),
        }
    }
}

/// Sends one ledger record (spooling it when the cluster does not answer) and
/// returns a line for the operator; `None` when no ledger is configured.
pub fn send_record(ctx: &Ctx, rec: &ledger::Record) -> Result<Option<String>> {
    let Some(cfg) = &ctx.plan.ledger else {
        return Ok(None);
    };
    let note = match ledger::record(cfg, rec)? {
        ledger::Outcome::Recorded {
            transfer_id,
            already_existed,
        } => format!(
            "ledger: transfer {transfer_id:032x} (code 12) {} in cluster {}",
            if already_existed {
                "already recorded"
            } else {
                "recorded"
            },
            cfg.addresses
        ),
        ledger::Outcome::Spooled { path, reason } => {
            ctx.ui.warn(&format!("ledger record spooled: {reason}"));
            format!("ledger: spooled to {}", path.display())
        }
    };
    Ok(Some(note))
}

/// Writes the JSON report of a run that is not itself a backup (`cleanup`,
/// `verify`) at `reports/{operation}/{yyyy}/{mm}/{dd}/{id}.json`, create-only.
pub fn write_report(
    store: &dyn Store,
    operation: &str,
    id: BackupId,
    at: OffsetDateTime,
    body: &serde_json::Value,
) -> Result<String> {
    let key = format!(
        "reports/{operation}/{:04}/{:02}/{:02}/{id}.json",
        at.year(),
        at.month() as u8,
        at.day()
    );
    let bytes = serde_json::to_vec_pretty(body)?;
    store
        .put_new(&key, &bytes, &Vec::new())
        .map_err(|e| e.context(format!("failed to write the run report {key}")))?;
    Ok(key)
}

/// The file name ending of a data object: `{base}.zst.enc`, `{base}.gz`, `{base}`…
pub fn object_suffix(base: &str, compression: Compression, keyring: Option<&Keyring>) -> String {
    let ext = compression.extension();
    format!(
        "{base}{}{ext}{}",
        if ext.is_empty() { "" } else { "." },
        if keyring.is_some() { ".enc" } else { "" }
    )
}

/// How a backup's objects are encrypted, as its manifest records it.
pub fn encryption_record(keyring: Option<&Keyring>) -> Option<crate::manifest::Encryption> {
    keyring.map(|k| crate::manifest::Encryption {
        format: crate::crypto::FORMAT_NAME.into(),
        key_id: k.current().id().to_string(),
    })
}

/// Removes what dead runs of any subcommand left in the work directory (see
/// `workdir.rs`), or with `dry` only says what it would remove; returns how many.
pub fn sweep_work_dir(ctx: &Ctx, dry: bool) -> u64 {
    let grace = ctx.plan.retention.grace.try_into().unwrap_or_default();
    let found = crate::workdir::WorkDir::new(&ctx.plan.work_dir).leftovers(grace);
    for l in &found {
        let what = match &l.outside {
            Some(o) => format!("{} (and {})", l.path.display(), o.display()),
            None => l.path.display().to_string(),
        };
        if dry {
            ctx.ui
                .info(&format!("would remove {what} left by an interrupted run"));
            continue;
        }
        match crate::workdir::remove(l) {
            Ok(()) => ctx
                .ui
                .info(&format!("removed {what} left by an interrupted run")),
            Err(e) => ctx.ui.warn(&format!(
                "cannot remove {what} left by an interrupted run: {e}"
            )),
        }
    }
    found.len() as u64
}

/// The host name, for manifests.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}
