//! `bkp snapshot`: TigerBeetle data file → consistent copy → tar → compress →
//! encrypt → SHA-256 → upload → manifest → ledger → local cleanup.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use time::OffsetDateTime;

use super::{hostname, open_store, record_run, Ctx, RunRecord};
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::ledger::Operation;
use crate::lock::RunLock;
use crate::manifest::{self, FileEntry, Kind, Manifest, Scope, Status};
use crate::sources::tigerbeetle;
use crate::{archive, pipeline, ui};

pub fn run(ctx: &Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let (tb, data_file) = plan
        .tigerbeetle
        .as_ref()
        .and_then(|t| Some((t, t.data_file.clone()?)))
        .ok_or_else(|| {
            coded(
                Code::Config,
                format!(
                    "{}: `bkp snapshot` needs a [tigerbeetle] section with data_file",
                    plan.source.display()
                ),
            )
        })?;
    let keyring = plan.keyring()?;
    let store = open_store(plan)?;
    let _lock = RunLock::acquire(&plan.work_dir, "snapshot", ctx.wait)?;
    remove_stale_copies(ctx);

    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let id = BackupId::new_v7(started_at);
    ctx.ui.detail(&format!(
        "snapshot {id} of {} to {}",
        data_file.display(),
        store.identity()
    ));

    let outcome = (|| -> Result<(Manifest, Option<String>)> {
        let log = |m: &str| ctx.ui.detail(m);
        let prepared = tigerbeetle::prepare(tb, &data_file, &plan.work_dir, &id.to_string(), &log)?;
        let suffix = super::object_suffix(".tar", plan.compression, keyring.as_ref());
        let key = manifest::object_key(Kind::Tigerbeetle, "snapshot", id, started_at, &suffix);
        let metadata = vec![
            ("backup-id".to_string(), id.to_string()),
            ("backup-type".to_string(), "tigerbeetle".to_string()),
            ("backup-scope".to_string(), "full".to_string()),
            ("checksum-sha256".to_string(), prepared.sha256.clone()),
        ];
        let progress = ctx.progress();
        progress.begin("uploading", Some(prepared.size));
        let files = [(prepared.name.clone(), prepared.path.clone())];
        let entry = pipeline::upload(
            store.as_ref(),
            &key,
            &metadata,
            plan.compression,
            keyring.as_ref(),
            progress.clone(),
            |w| archive::write_files(w, &files),
        )?;
        progress.end();

        let mut source = BTreeMap::new();
        source.insert("data_file".into(), json!(data_file.display().to_string()));
        source.insert("snapshot_mode".into(), json!(prepared.mode));
        source.insert(
            "integrity_checked".into(),
            json!(prepared.integrity_checked),
        );
        if tb.count_rows {
            match count_rows(ctx, &prepared) {
                Ok(stats) => {
                    source.insert("accounts".into(), json!(stats.accounts));
                    source.insert("transfers".into(), json!(stats.transfers));
                    source.insert("newest_timestamp".into(), json!(stats.until));
                    log(&format!(
                        "the snapshot holds {} accounts and {} transfers",
                        stats.accounts, stats.transfers
                    ));
                }
                Err(e) => ctx.ui.warn(&format!(
                    "the snapshot is stored, but its rows could not be counted: {e:#}"
                )),
            }
        }
        let m = Manifest {
            schema: manifest::schema_string(),
            id,
            kind: Kind::Tigerbeetle,
            scope: Scope::Full,
            operation: "snapshot".into(),
            status: Status::Completed,
            started_at,
            finished_at: OffsetDateTime::now_utc(),
            host: hostname(),
            bkp_version: env!("CARGO_PKG_VERSION").into(),
            retention_days: tb.retention_days,
            compression: plan.compression,
            encryption: super::encryption_record(keyring.as_ref()),
            objects: vec![entry],
            files: vec![FileEntry {
                name: prepared.name.clone(),
                size: prepared.size,
                sha256: prepared.sha256.clone(),
            }],
            parent: None,
            uses: Vec::new(),
            source,
        };
        manifest::write(store.as_ref(), &m)?;
        Ok((m, prepared.deferred_error.clone()))
        // `prepared` drops here: the lock is released and the local copy removed.
    })();

    let (m, deferred) = match &outcome {
        Ok((m, d)) => (Some(m), d.clone()),
        Err(_) => (None, None),
    };
    let record = RunRecord {
        id,
        kind: Kind::Tigerbeetle,
        scope: Scope::Full,
        operation: Operation::Snapshot,
        compression: plan.compression,
        encrypted: keyring.is_some(),
        completed: m.is_some(),
        retention_days: tb.retention_days,
        started_at,
        bytes: m.map_or(0, |m| m.stored_bytes()),
    };
    let ledger = record_run(ctx, store.as_ref(), &record);
    let (m, _) = outcome?;

    // Problems that did not stop the backup but must fail the run, reported after
    // the result so that the backup itself is never hidden.
    let mut problems: Vec<String> = deferred.into_iter().collect();
    let ledger_note = match ledger {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!("recording it in the ledger failed: {e:#}"));
            None
        }
    };
    let printed = report(
        ctx,
        &m,
        &data_file,
        store.as_ref(),
        clock.elapsed(),
        ledger_note,
    );
    if !problems.is_empty() {
        anyhow::bail!(
            "snapshot {} completed, but {}",
            m.id,
            problems.join("; and ")
        );
    }
    printed
}

fn report(
    ctx: &Ctx,
    m: &Manifest,
    data_file: &std::path::Path,
    store: &dyn crate::store::Store,
    elapsed: std::time::Duration,
    ledger_note: Option<String>,
) -> Result<()> {
    if ctx.ui.json {
        let out = json!({
            "manifest": m,
            "manifest_key": m.key(),
            "store": store.identity(),
            "seconds": elapsed.as_secs_f64(),
            "ledger": ledger_note,
        });
        crate::ui::out(&serde_json::to_string_pretty(&out)?)?;
    } else {
        let o = &m.objects[0];
        ctx.ui.info(&format!(
            "snapshot {} of {} ({}) stored as {} in {}: {} in {:.1}s ({})",
            m.id,
            data_file.display(),
            ui::size(m.files[0].size),
            o.key,
            store.identity(),
            ui::size(o.size),
            elapsed.as_secs_f64(),
            ui::rate(m.files[0].size, elapsed),
        ));
        if let Some(n) = ledger_note {
            ctx.ui.detail(&n);
        }
        crate::ui::out(&m.id.to_string())?;
    }
    Ok(())
}

/// Counts the accounts and transfers of an uploaded snapshot on bkp's private
/// copy, through a replica started on it, so that `verify --drill` can compare a
/// restore with them. Never on the original data file.
fn count_rows(ctx: &Ctx, prepared: &tigerbeetle::Prepared) -> Result<crate::tblog::SegmentStats> {
    if !prepared.is_copy() {
        anyhow::bail!(
            "tigerbeetle.count_rows needs snapshot_mode \"stop\" or \"reflink\": in \"offline\" mode bkp reads the data file in place and never starts a replica on it"
        );
    }
    super::pitr::count_rows(ctx, &prepared.path, "counting a snapshot's rows")
}

/// Removes data-file copies left in the work directory by a run that crashed.
/// Only called under the run lock, so no other snapshot is using them.
fn remove_stale_copies(ctx: &Ctx) {
    let Ok(entries) = std::fs::read_dir(&ctx.plan.work_dir) else {
        return;
    };
    for e in entries.flatten() {
        // Only directories named exactly like a copy of this program's own runs.
        let name = e.file_name().to_string_lossy().into_owned();
        let is_copy = name
            .strip_prefix(tigerbeetle::COPY_DIR_PREFIX)
            .is_some_and(|id| id.parse::<BackupId>().is_ok());
        if is_copy && e.path().is_dir() {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => ctx.ui.info(&format!(
                    "removed {} left by an interrupted run",
                    e.path().display()
                )),
                Err(err) => ctx.ui.warn(&format!(
                    "cannot remove {} left by an interrupted run: {err}",
                    e.path().display()
                )),
            }
        }
    }
}
