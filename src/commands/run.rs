//! The backup run envelope, written once for `snapshot`, `logs`, `export` and
//! `replicate`: lock → id and start time → (the command's chain) → manifest →
//! ledger record and metrics → report → deferred problems.
//!
//! One rule for how a run ends: a backup that was stored is always reported
//! (stdout names it), and only then does the run fail, with the most specific
//! exit code among its problems ([`crate::exit::combine`]): files skipped, a
//! ledger record that could not be written, a problem the chain deferred (a
//! start command that failed after the copy). A run that stored nothing fails
//! with its own error; its failed record still goes to the ledger and metrics.
//!
//! The bookkeeping every run shares lives here too: the ledger record
//! ([`RunRecord`], [`send_record`]), metrics, the JSON report of `verify` and
//! `cleanup` ([`write_report`]) and the manifest fields every backup fills.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use time::OffsetDateTime;

use super::Ctx;
use crate::crypto::Keyring;
use crate::id::BackupId;
use crate::ledger::{self, Operation};
use crate::lock::RunLock;
use crate::manifest::{self, FileEntry, Kind, Manifest, ObjectEntry, Scope, Status, Trust};
use crate::metrics::RunMetrics;
use crate::stages::compress::Compression;
use crate::store::Store;
use crate::ui;

/// What a backup run is, fixed before it starts.
pub struct Spec {
    pub kind: Kind,
    /// The scope asked for; a stored manifest's own scope wins (an incremental
    /// export that had to be taken whole is a full one).
    pub scope: Scope,
    pub operation: Operation,
    pub compression: Compression,
    pub retention_days: u16,
}

/// A stored backup, and the problems that did not stop it but fail the run.
pub struct Stored {
    pub manifest: Manifest,
    pub problems: Vec<anyhow::Error>,
}

impl From<Manifest> for Stored {
    fn from(manifest: Manifest) -> Self {
        Stored {
            manifest,
            problems: Vec::new(),
        }
    }
}

/// The parts of a manifest that the command's chain decides.
#[derive(Default)]
pub struct Body {
    /// `None`: the run's [`Spec::scope`].
    pub scope: Option<Scope>,
    pub objects: Vec<ObjectEntry>,
    pub files: Vec<FileEntry>,
    pub parent: Option<BackupId>,
    pub uses: Vec<String>,
    /// The chunk map of a chunked backup (see `manifest/chunks.rs`).
    pub chunks: Option<crate::manifest::chunks::Chunked>,
    pub source: crate::manifest::facts::Facts,
}

/// One backup run, from its lock to its report.
pub struct Run<'a> {
    pub ctx: &'a Ctx,
    pub store: &'a dyn Store,
    /// The run's keys and what it trusts of what it reads back.
    pub trust: &'a Trust,
    /// The keys its objects are encrypted with (`None`: stored unencrypted).
    pub keyring: Option<&'a Keyring>,
    pub spec: Spec,
    pub id: BackupId,
    pub started_at: OffsetDateTime,
    clock: Instant,
    /// The ledger's session, opened as the run starts (see [`ledger::warm`]).
    _ledger: Option<ledger::Warm>,
    /// The manifest this run stored, and its ledger intent (see
    /// `ledger/intent.rs`) until its record is sent or spooled.
    stored: std::sync::Mutex<Option<(Manifest, Option<ledger::Intent>)>>,
    /// The store's id, which its manifest carries (see `manifest/marker.rs`).
    store_id: Option<String>,
    _lock: RunLock,
}

impl<'a> Run<'a> {
    /// Takes the run lock (waiting up to `--wait`), removes what dead runs left
    /// in the work directory, and fixes the run's id and start time. The
    /// objects are encrypted with the trust's keys when `encrypt`; the manifest
    /// is sealed with them whenever they are configured.
    pub fn begin(
        ctx: &'a Ctx,
        store: &'a dyn Store,
        trust: &'a Trust,
        encrypt: bool,
        spec: Spec,
    ) -> Result<Self> {
        let keyring = trust.keys().filter(|_| encrypt);
        // Another installation's store is refused before anything is written.
        manifest::marker::ensure(store, trust)?;
        let store_id = trust.binding()?.map(|b| b.id.clone());
        let lock = RunLock::acquire(&ctx.plan.work_dir, operation_name(spec.operation), ctx.wait)?;
        super::sweep_work_dir(ctx, false);
        let started_at = OffsetDateTime::now_utc();
        Ok(Run {
            ctx,
            store,
            trust,
            keyring,
            spec,
            id: BackupId::new_v7(started_at),
            started_at,
            clock: Instant::now(),
            _ledger: ctx.plan.ledger.as_ref().map(ledger::warm),
            stored: Default::default(),
            store_id,
            _lock: lock,
        })
    }

    /// The S3 metadata every data object of this run carries.
    pub fn metadata(&self, scope: Scope) -> Vec<(String, String)> {
        vec![
            ("backup-id".to_string(), self.id.to_string()),
            (
                "backup-type".to_string(),
                self.spec.kind.as_str().to_string(),
            ),
            ("backup-scope".to_string(), scope.as_str().to_string()),
        ]
    }

    /// The file name ending of this run's data objects: `{base}.zst.enc`, …
    pub fn suffix(&self, base: &str, compression: Compression) -> String {
        object_suffix(base, compression, self.keyring)
    }

    /// The manifest of this run, completed now.
    pub fn manifest(&self, body: Body) -> Manifest {
        Manifest {
            schema: match body.chunks {
                Some(_) => manifest::chunked_schema_string(),
                None => manifest::schema_string(),
            },
            id: self.id,
            kind: self.spec.kind,
            scope: body.scope.unwrap_or(self.spec.scope),
            operation: operation_name(self.spec.operation).into(),
            status: Status::Completed,
            started_at: self.started_at,
            finished_at: OffsetDateTime::now_utc(),
            host: hostname().into(),
            bkp_version: env!("CARGO_PKG_VERSION").into(),
            retention_days: self.spec.retention_days,
            compression: self.spec.compression,
            encryption: encryption_record(self.keyring),
            objects: body.objects,
            files: body.files,
            parent: body.parent,
            uses: body.uses,
            chunks: body.chunks.map(Box::new),
            source: body.source,
            store: self.store_id.as_deref().map(Into::into),
        }
    }

    /// Extends the retention of what this backup needs of earlier ones
    /// (Object Lock: see [`Store::extend_retention`]) to what its own objects
    /// get: `keys`, and the manifests and objects of `backups`. Done before
    /// its manifest is written: a backup whose dependencies could not be held
    /// is not stored.
    pub fn hold(&self, backups: &[&Manifest], keys: Vec<String>) -> Result<()> {
        let mut all = keys;
        for b in backups {
            all.push(b.key());
            all.extend(b.needed_keys());
        }
        if all.is_empty() {
            return Ok(());
        }
        let n = self.store.extend_retention(&all)?;
        if n > 0 {
            self.ctx.ui.detail(&format!(
                "extended the Object Lock retention of {} of earlier backups that {} needs",
                crate::units::count(n as u64, "object"),
                self.id
            ));
        }
        Ok(())
    }

    /// Writes `m` to the store, the step that makes its objects a backup.
    /// Its ledger intent goes first: killed before its record is made, the
    /// run leaves that to the next one. The objects of earlier backups it
    /// names in `uses` are held first (see [`Run::hold`]).
    pub fn store_manifest(&self, m: Manifest) -> Result<Stored> {
        self.hold(&[], m.uses.clone())?;
        let intent = self.ctx.plan.ledger.as_ref().and_then(|cfg| {
            let rec = RunRecord::of_backup(&m, self.spec.operation).to_ledger(self.store);
            ledger::intend(cfg, &rec, &m.key())
                .map_err(|e| {
                    self.ctx.ui.warn(&format!(
                        "{e:#}; should this run be killed before its ledger record is made, \
                         `bkp verify` records it"
                    ))
                })
                .ok()
        });
        if let Err(e) = manifest::write(self.store, &m, self.trust.keys()) {
            // The answer to a write that landed can be lost (a retried
            // create-only PUT is then refused): the store is asked. Not
            // there, nothing was stored, and the intent waits for nothing
            // (else the next run would report this one as killed).
            match self.store.head(&m.key()) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    if let Some(i) = intent {
                        let _ = i.done();
                    }
                    return Err(e);
                }
                // The store does not answer: whether it landed is left to
                // the intent (the next run that can read the store says).
                Err(_) => return Err(e),
            }
            self.ctx.ui.warn(&format!(
                "{e:#}; the manifest is in the store all the same: the backup is stored"
            ));
        }
        crate::failpoint::hit("manifest-stored");
        *self.stored.lock().expect("stored manifest") = Some((m.clone(), intent));
        // The record that it was stored, which a rollback cannot take back
        // (see `manifest/head.rs`).
        let head = manifest::head::advance(self.store, self.trust, &m);
        let mut stored = Stored::from(m);
        stored.problems.extend(head.err());
        Ok(stored)
    }

    /// Ends the run: records it (ledger and metrics, on failure too), reports a
    /// stored backup with `report(manifest, elapsed, ledger note)`, then fails
    /// with the most specific code among the problems, if any.
    pub fn finish(
        self,
        outcome: Result<Stored>,
        report: impl FnOnce(&Manifest, Duration, Option<LedgerNote>) -> Result<()>,
    ) -> Result<()> {
        let s = &self.spec;
        settle_intents(self.ctx, self.store, self.trust);
        // A stored backup is recorded as its manifest says, even when the run
        // failed after storing it: the store holds it.
        let (written, intent) = self.stored.into_inner().expect("stored manifest").unzip();
        let stored = outcome.as_ref().ok().map(|o| &o.manifest);
        let record = match stored.or(written.as_ref()) {
            Some(m) => RunRecord::of_backup(m, s.operation),
            None => RunRecord {
                id: self.id,
                kind: s.kind,
                scope: s.scope,
                operation: s.operation,
                compression: s.compression,
                encrypted: self.keyring.is_some(),
                completed: false,
                retention_days: s.retention_days,
                started_at: self.started_at,
                bytes: 0,
            },
        };
        let ledger = record_run(self.ctx, self.store, &record, stored.or(written.as_ref()));
        if let (Ok(_), Some(intent)) = (&ledger, intent.flatten()) {
            if let Err(e) = intent.done() {
                self.ctx.ui.warn(&format!("{e:#}"));
            }
        }
        let Stored {
            manifest: m,
            mut problems,
        } = match outcome {
            Ok(stored) => stored,
            Err(e) => {
                if let Err(l) = ledger {
                    self.ctx.ui.warn(&format!(
                        "recording the failed run in the ledger failed too: {l:#}"
                    ));
                }
                return Err(e);
            }
        };
        let note = match ledger {
            Ok(note) => note,
            Err(e) => {
                problems.push(e.context("recording it in the ledger failed"));
                None
            }
        };
        copy_into_copies(self.ctx, self.store, self.trust, &m);
        report(&m, self.clock.elapsed(), note)?;
        if problems.is_empty() {
            return Ok(());
        }
        Err(crate::exit::combine(
            &format!("{} {} is stored, but", operation_name(s.operation), m.id),
            problems,
        ))
    }
}

/// Writes backup `m`, just stored, into every copy with `in_backup_runs`
/// (see `copies::copy_backup`). A copy that fails is a warning, not the
/// run's failure: the backup is stored, `bkp copy` brings it later, and
/// `bkp status` alarms when the copy lags longer than its `max_lag`.
fn copy_into_copies(ctx: &Ctx, store: &dyn Store, trust: &Trust, m: &Manifest) {
    for c in ctx.plan.copies.iter().filter(|c| c.in_backup_runs) {
        let done = super::open_plan_store(&c.store).and_then(|copy| {
            crate::copies::copy_backup(store, copy.as_ref(), trust, m).map(|o| (copy.identity(), o))
        });
        match done {
            Ok((at, o)) => ctx.ui.detail(&format!(
                "copy {}: {} written to {at} ({} objects, {})",
                c.name,
                m.id,
                o.objects_copied,
                ui::size(o.bytes_copied)
            )),
            Err(e) => ctx.ui.warn(&format!(
                "{} {} is stored on the primary, but not in copy {}: {e:#}; `bkp copy --to {}` brings it",
                m.kind.as_str(),
                m.id,
                c.name,
                c.name
            )),
        }
    }
}

/// The JSON every backup run prints under `--json`, with `extra` fields.
pub fn json_report(
    m: &Manifest,
    store: &dyn Store,
    elapsed: Duration,
    ledger: Option<LedgerNote>,
    extra: serde_json::Value,
) -> Result<()> {
    let mut out = json!({
        "schema": "bkp.run/1",
        "manifest": m,
        "manifest_key": m.key(),
        "store": store.identity(),
        "seconds": elapsed.as_secs_f64(),
        "ledger": ledger,
    });
    if let (Some(o), serde_json::Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
    ui::document(out)
}

/// What one run tells the audit ledger.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub id: BackupId,
    pub kind: Kind,
    pub scope: Scope,
    pub operation: Operation,
    pub compression: Compression,
    pub encrypted: bool,
    pub completed: bool,
    pub retention_days: u16,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub bytes: u64,
}

/// Records the run as a code-12 transfer. An unreachable cluster never fails the
/// backup: the record is spooled and the next run sends it. First it writes the
/// run's metrics file (when `metrics.dir` is set), on success and on failure
/// alike; `written` is the manifest the run stored, if it got that far.
pub fn record_run(
    ctx: &Ctx,
    store: &dyn Store,
    r: &RunRecord,
    written: Option<&Manifest>,
) -> Result<Option<LedgerNote>> {
    write_run_metrics(ctx, r, written);
    send_record(ctx, &r.to_ledger(store))
}

/// Writes the metrics of a finished run. A backup reports the objects of the
/// manifest it wrote (none when it failed); `verify` and `cleanup` write no
/// manifest of their own to count.
fn write_run_metrics(ctx: &Ctx, r: &RunRecord, written: Option<&Manifest>) {
    let finished_at = OffsetDateTime::now_utc();
    let backup = !matches!(
        r.operation,
        Operation::Verify | Operation::Cleanup | Operation::Restore
    );
    let objects = if !backup {
        None
    } else if r.completed {
        written.map(|m| m.objects.len() as u64 + m.chunks.as_ref().map_or(0, |c| c.added))
    } else {
        Some(0)
    };
    write_metrics(
        ctx,
        &RunMetrics {
            kind: r.kind,
            operation: operation_name(r.operation).to_string(),
            scope: r.scope,
            success: r.completed,
            finished_at,
            duration: Duration::try_from(finished_at - r.started_at).unwrap_or_default(),
            bytes: if r.completed { r.bytes } else { 0 },
            objects,
        },
    );
}

/// Writes one metrics file, if a metrics directory is configured. Never fails
/// the run: a problem is a warning.
pub fn write_metrics(ctx: &Ctx, m: &RunMetrics) {
    let Some(dir) = &ctx.plan.metrics_dir else {
        return;
    };
    match crate::metrics::write(dir, m) {
        Ok(path) => ctx
            .ui
            .detail(&format!("metrics written to {}", path.display())),
        Err(e) => ctx.ui.warn(&format!(
            "{e:#}; the backup itself is not affected (metrics.dir or BKP_METRICS_DIR names the directory)"
        )),
    }
}

/// The operation's name: a backup manifest's `operation`, its lock's name, and
/// the name metrics use.
pub fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Snapshot => manifest::tigerbeetle::SNAPSHOT,
        Operation::Logs => manifest::tigerbeetle::LOGS,
        Operation::Export => manifest::duckdb::OPERATION,
        Operation::Replicate => manifest::parquet::OPERATION,
        Operation::Verify => "verify",
        Operation::Cleanup => "cleanup",
        Operation::Restore => "restore",
    }
}

/// The operation whose backups are named `name` in their manifests.
pub fn backup_operation(name: &str) -> Option<Operation> {
    [
        Operation::Snapshot,
        Operation::Logs,
        Operation::Export,
        Operation::Replicate,
    ]
    .into_iter()
    .find(|op| operation_name(*op) == name)
}

/// Records in the ledger the backups that runs killed after storing their
/// manifest left unrecorded (their intents, see `ledger/intent.rs`): each
/// found in the store is spooled as a late record, which this run's own
/// record sends; one whose manifest is not there stored no backup. A run with
/// none reads the spool directory once and asks nothing of the store or the
/// cluster. Never fails the run: an intent that cannot be settled waits.
fn settle_intents(ctx: &Ctx, store: &dyn Store, trust: &Trust) {
    let Some(cfg) = &ctx.plan.ledger else { return };
    let orphans = match ledger::orphans(cfg) {
        Ok(o) => o,
        Err(e) => return ctx.ui.warn(&format!("{e:#}")),
    };
    for o in orphans {
        if o.record.store_identity != store.identity() {
            continue;
        }
        let key = o.manifest_key.clone();
        let found = match store.get_at_most(&key, crate::limits::MANIFEST) {
            Ok(bytes) => manifest::parse(&bytes, &key, trust).map(Some),
            Err(e) if crate::exit::classify(&e) == Some(crate::exit::Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        };
        let rec = match found {
            // A manifest of no backup operation records nothing.
            Ok(Some(m)) => backup_operation(&m.operation)
                .map(|op| RunRecord::of_backup(&m, op).to_ledger(store)),
            Ok(None) => None,
            // Damaged, or sealed by a key no longer trusted: no record is
            // made from it (reading it again would not change that); `bkp
            // verify` names the manifest.
            Err(e) if crate::exit::is_damage(&e) => {
                ctx.ui.warn(&format!(
                    "the ledger record of a killed run is not made: {e:#}; `bkp verify` names it"
                ));
                if let Err(e) = o.settle(cfg, None) {
                    ctx.ui.warn(&format!("{e:#}"));
                }
                continue;
            }
            Err(e) => {
                ctx.ui.warn(&format!(
                    "the ledger record of a killed run waits for the next run: {e:#}"
                ));
                continue;
            }
        };
        let id = BackupId::from_u128(u128::from_be_bytes(o.record.backup_id));
        let what = match &rec {
            Some(_) => "is stored but was never recorded: recording it now",
            None => "was never stored: nothing to record",
        };
        match o.settle(cfg, rec.as_ref()) {
            Ok(()) => ctx
                .ui
                .info(&format!("backup {id} of a run that was killed {what}")),
            Err(e) => ctx.ui.warn(&format!("{e:#}")),
        }
    }
}

impl RunRecord {
    /// The record of the stored backup `m`, made by `operation`: all from its
    /// manifest, so that whoever makes it (its run, the next run, `verify`,
    /// `cleanup`) makes the same transfer.
    pub fn of_backup(m: &Manifest, operation: Operation) -> RunRecord {
        RunRecord {
            id: m.id,
            kind: m.kind,
            scope: m.scope,
            operation,
            compression: m.compression,
            encrypted: m.encryption.is_some(),
            completed: true,
            retention_days: m.retention_days,
            started_at: m.started_at,
            bytes: m.stored_bytes(),
        }
    }

    /// The ledger's form of this record, for `store`.
    pub fn to_ledger(&self, store: &dyn Store) -> ledger::Record {
        let r = self;
        ledger::Record {
            backup_id: r.id.as_bytes(),
            backup_type: r.kind,
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
pub fn send_record(ctx: &Ctx, rec: &ledger::Record) -> Result<Option<LedgerNote>> {
    let Some(cfg) = &ctx.plan.ledger else {
        return Ok(None);
    };
    let outcome = ledger::record(cfg, rec)?;
    if let ledger::Outcome::Spooled { reason, .. } = &outcome {
        ctx.ui.warn(&format!("ledger record spooled: {reason}"));
    }
    Ok(Some(outcome_note(cfg, &outcome)))
}

/// What became of a run's ledger record: a line for a person (`Display`), an
/// object in the JSON a run prints under `--json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LedgerNote {
    /// The cluster holds the code-12 transfer (now, or from an earlier try).
    Recorded {
        transfer_id: String,
        already_recorded: bool,
        cluster: String,
    },
    /// The cluster did not answer: the record waits in the spool for the next
    /// run to send.
    Spooled { spool: std::path::PathBuf },
    /// Neither sent nor spooled (a temporary work directory).
    Skipped,
}

impl std::fmt::Display for LedgerNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerNote::Recorded {
                transfer_id,
                already_recorded,
                cluster,
            } => write!(
                f,
                "ledger: transfer {transfer_id} (code 12) {} in cluster {cluster}",
                if *already_recorded {
                    "already recorded"
                } else {
                    "recorded"
                }
            ),
            LedgerNote::Spooled { spool } => write!(f, "ledger: spooled to {}", spool.display()),
            LedgerNote::Skipped => f.write_str("ledger: skipped"),
        }
    }
}

/// What happened to a ledger record, for the operator.
fn outcome_note(cfg: &ledger::LedgerConfig, outcome: &ledger::Outcome) -> LedgerNote {
    match outcome {
        ledger::Outcome::Recorded {
            transfer_id,
            already_existed,
        } => LedgerNote::Recorded {
            transfer_id: format!("{transfer_id:032x}"),
            already_recorded: *already_existed,
            cluster: cfg.addresses.clone(),
        },
        ledger::Outcome::Spooled { path, .. } => LedgerNote::Spooled {
            spool: path.clone(),
        },
    }
}

/// The ledger of a run that can do without it (`verify`): its records are
/// bookkeeping, not findings, so none of its problems fails the run.
///
/// The cluster is asked once, up front, whether it accepts connections
/// ([`ledger::probe`]: milliseconds when nothing listens, a few seconds at
/// most when packets are dropped); when it does not, or once a send has found
/// it not answering within `[ledger] timeout`, records are spooled without
/// waiting again. With a temporary work directory (`work_dir` not writable) a
/// record that cannot be sent is skipped: a spool nobody will read again is no
/// spool.
pub struct OptionalLedger {
    /// Why the cluster is taken to be unreachable, once it is (with its class).
    down: Option<anyhow::Error>,
    keep_spool: bool,
}

impl OptionalLedger {
    /// Probes the configured cluster (nothing when no `[ledger]` is configured).
    pub fn probe(ctx: &Ctx, keep_spool: bool) -> Self {
        let down = ctx
            .plan
            .ledger
            .as_ref()
            .and_then(|cfg| ledger::probe(cfg).err());
        OptionalLedger { down, keep_spool }
    }

    /// Why the cluster is taken to be unreachable, if it is, as an error of
    /// the class that found it so.
    pub fn down(&self) -> Option<anyhow::Error> {
        self.down
            .as_ref()
            .map(|e| crate::exit::like(e, format!("{e:#}")))
    }

    /// Another call found the cluster not answering: later records do not wait.
    pub fn mark_down(&mut self, e: &anyhow::Error) {
        if self.down.is_none() {
            self.down = Some(crate::exit::like(e, format!("{e:#}")));
        }
    }

    /// Records the run as [`record_run`] does (metrics, then the ledger), but
    /// every problem is a warning; returns the line for the operator.
    pub fn record(&mut self, ctx: &Ctx, store: &dyn Store, r: &RunRecord) -> Option<LedgerNote> {
        write_run_metrics(ctx, r, None);
        let cfg = ctx.plan.ledger.as_ref()?;
        let rec = r.to_ledger(store);
        let skipped = |reason: &str| {
            ctx.ui.warn(&format!(
                "ledger record skipped: {reason}; the work directory is temporary, so it is not \
                 spooled either (run without [ledger] to leave it out on purpose)"
            ));
            Some(LedgerNote::Skipped)
        };
        let outcome = match &self.down {
            Some(e) if !self.keep_spool => return skipped(&format!("{e:#}")),
            Some(e) => ledger::spool(cfg, &rec, &format!("{e:#}")),
            None => ledger::record(cfg, &rec),
        };
        match outcome {
            Ok(o @ ledger::Outcome::Recorded { .. }) => Some(outcome_note(cfg, &o)),
            Ok(ledger::Outcome::Spooled { path, reason }) => {
                let cause = format!(
                    "the ledger cluster at {} did not answer a record within {:?}",
                    cfg.addresses, cfg.timeout
                );
                self.mark_down(&crate::exit::coded(
                    crate::exit::Code::Transient,
                    cause.clone(),
                ));
                if !self.keep_spool {
                    let _ = std::fs::remove_file(&path);
                    return skipped(&cause);
                }
                ctx.ui.warn(&format!("ledger record spooled: {reason}"));
                Some(LedgerNote::Spooled { spool: path })
            }
            Err(e) => {
                ctx.ui.warn(&format!(
                    "the ledger record of this run was not made: {e:#}; the run's outcome does \
                     not depend on it"
                ));
                None
            }
        }
    }
}

/// Writes the JSON report of a run that is not itself a backup (`cleanup`,
/// `verify`) at `reports/{operation}/{yyyy}/{mm}/{dd}/{id}.json`, create-only,
/// sealed when keys are configured.
pub fn write_report(
    store: &dyn Store,
    keys: Option<&Keyring>,
    operation: &str,
    id: BackupId,
    at: OffsetDateTime,
    body: &serde_json::Value,
) -> Result<String> {
    let bytes = crate::manifest::seal::encode(body, keys)?;
    put_report(store, operation, (id, at), &bytes)
}

/// Stores a run report already encoded ([`write_report`] encodes one); its
/// key.
pub fn put_report(
    store: &dyn Store,
    operation: &str,
    (id, at): (BackupId, OffsetDateTime),
    bytes: &[u8],
) -> Result<String> {
    put_report_with(store, operation, (id, at), &mut |w| Ok(w.write_all(bytes)?))
}

/// Stores a run report as `write` encodes it into the object (a report
/// with rows too many to hold encoded at once: see
/// [`crate::manifest::seal::write_with_rows`]); its key. Nothing is
/// stored unless `write` succeeds.
pub fn put_report_with(
    store: &dyn Store,
    operation: &str,
    (id, at): (BackupId, OffsetDateTime),
    write: &mut dyn FnMut(&mut dyn std::io::Write) -> Result<()>,
) -> Result<String> {
    let key = format!(
        "reports/{operation}/{:04}/{:02}/{:02}/{id}.json",
        at.year(),
        at.month() as u8,
        at.day()
    );
    let failed = |e: anyhow::Error| e.context(format!("failed to write the run report {key}"));
    let mut w = store.create(&key, &Vec::new()).map_err(failed)?;
    if let Err(e) = write(&mut w) {
        let _ = w.abort();
        return Err(failed(e));
    }
    w.finish().map_err(failed)?;
    Ok(key)
}

/// The file name ending of a data object: `{base}.zst.enc`, `{base}.gz`, `{base}`…
fn object_suffix(base: &str, compression: Compression, keyring: Option<&Keyring>) -> String {
    let ext = compression.extension();
    format!(
        "{base}{}{ext}{}",
        if ext.is_empty() { "" } else { "." },
        if keyring.is_some() { ".enc" } else { "" }
    )
}

/// How a backup's objects are encrypted, as its manifest records it.
fn encryption_record(keyring: Option<&Keyring>) -> Option<crate::manifest::Encryption> {
    keyring.map(|k| crate::manifest::Encryption {
        format: crate::crypto::FORMAT_NAME.into(),
        key_id: k.current().id().into(),
    })
}

pub use crate::manifest::hostname;
