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

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use time::OffsetDateTime;

use super::{hostname, record_run, Ctx, RunRecord};
use crate::crypto::Keyring;
use crate::id::BackupId;
use crate::ledger::Operation;
use crate::lock::RunLock;
use crate::manifest::{self, FileEntry, Kind, Manifest, ObjectEntry, Scope, Status};
use crate::stages::compress::Compression;
use crate::store::Store;
use crate::ui;

/// What a backup run is, fixed before it starts.
pub struct Spec {
    pub kind: Kind,
    /// The scope asked for; a stored manifest's own scope wins (an incremental
    /// export that had to be taken whole is a full one).
    pub scope: Scope,
    /// The manifest's `operation` and the lock's name.
    pub name: &'static str,
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
    pub source: std::collections::BTreeMap<String, serde_json::Value>,
}

/// One backup run, from its lock to its report.
pub struct Run<'a> {
    pub ctx: &'a Ctx,
    pub store: &'a dyn Store,
    pub keyring: Option<&'a Keyring>,
    pub spec: Spec,
    pub id: BackupId,
    pub started_at: OffsetDateTime,
    clock: Instant,
    _lock: RunLock,
}

impl<'a> Run<'a> {
    /// Takes the run lock (waiting up to `--wait`), removes what dead runs left
    /// in the work directory, and fixes the run's id and start time.
    pub fn begin(
        ctx: &'a Ctx,
        store: &'a dyn Store,
        keyring: Option<&'a Keyring>,
        spec: Spec,
    ) -> Result<Self> {
        let lock = RunLock::acquire(&ctx.plan.work_dir, spec.name, ctx.wait)?;
        super::sweep_work_dir(ctx, false);
        let started_at = OffsetDateTime::now_utc();
        Ok(Run {
            ctx,
            store,
            keyring,
            spec,
            id: BackupId::new_v7(started_at),
            started_at,
            clock: Instant::now(),
            _lock: lock,
        })
    }

    /// The S3 metadata every data object of this run carries.
    pub fn metadata(&self, scope: Scope) -> Vec<(String, String)> {
        vec![
            ("backup-id".to_string(), self.id.to_string()),
            ("backup-type".to_string(), self.spec.kind.as_str().to_string()),
            ("backup-scope".to_string(), scope.as_str().to_string()),
        ]
    }

    /// The file name ending of this run's data objects: `{base}.zst.enc`, …
    pub fn suffix(&self, base: &str, compression: Compression) -> String {
        super::object_suffix(base, compression, self.keyring)
    }

    /// The manifest of this run, completed now.
    pub fn manifest(&self, body: Body) -> Manifest {
        Manifest {
            schema: manifest::schema_string(),
            id: self.id,
            kind: self.spec.kind,
            scope: body.scope.unwrap_or(self.spec.scope),
            operation: self.spec.name.into(),
            status: Status::Completed,
            started_at: self.started_at,
            finished_at: OffsetDateTime::now_utc(),
            host: hostname(),
            bkp_version: env!("CARGO_PKG_VERSION").into(),
            retention_days: self.spec.retention_days,
            compression: self.spec.compression,
            encryption: super::encryption_record(self.keyring),
            objects: body.objects,
            files: body.files,
            parent: body.parent,
            uses: body.uses,
            source: body.source,
        }
    }

    /// Writes `m` to the store, the step that makes its objects a backup.
    pub fn store_manifest(&self, m: Manifest) -> Result<Stored> {
        manifest::write(self.store, &m)?;
        Ok(m.into())
    }

    /// Ends the run: records it (ledger and metrics, on failure too), reports a
    /// stored backup with `report(manifest, elapsed, ledger note)`, then fails
    /// with the most specific code among the problems, if any.
    pub fn finish(
        self,
        outcome: Result<Stored>,
        report: impl FnOnce(&Manifest, Duration, Option<String>) -> Result<()>,
    ) -> Result<()> {
        let s = &self.spec;
        let stored = outcome.as_ref().ok().map(|o| &o.manifest);
        let record = RunRecord {
            id: self.id,
            kind: s.kind,
            scope: stored.map_or(s.scope, |m| m.scope),
            operation: s.operation,
            compression: s.compression,
            encrypted: self.keyring.is_some(),
            completed: stored.is_some(),
            retention_days: s.retention_days,
            started_at: self.started_at,
            bytes: stored.map_or(0, |m| m.stored_bytes()),
        };
        let ledger = record_run(self.ctx, self.store, &record);
        let Stored {
            manifest: m,
            mut problems,
        } = match outcome {
            Ok(stored) => stored,
            Err(e) => {
                if let Err(l) = ledger {
                    self.ctx
                        .ui
                        .warn(&format!("recording the failed run in the ledger failed too: {l:#}"));
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
        report(&m, self.clock.elapsed(), note)?;
        if problems.is_empty() {
            return Ok(());
        }
        Err(crate::exit::combine(
            &format!("{} {} is stored, but", s.name, m.id),
            problems,
        ))
    }
}

/// The JSON every backup run prints under `--json`, with `extra` fields.
pub fn json_report(
    m: &Manifest,
    store: &dyn Store,
    elapsed: Duration,
    ledger: Option<String>,
    extra: serde_json::Value,
) -> Result<()> {
    let mut out = json!({
        "manifest": m,
        "manifest_key": m.key(),
        "store": store.identity(),
        "seconds": elapsed.as_secs_f64(),
        "ledger": ledger,
    });
    if let (Some(o), serde_json::Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
    Ok(ui::out(&serde_json::to_string_pretty(&out)?)?)
}
