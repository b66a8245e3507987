//! `bkp snapshot`: TigerBeetle data file → consistent copy → tar (and the
//! file's SHA-256, in the same read) → compress → encrypt → SHA-256 → upload →
//! manifest → ledger → local cleanup.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::run::{json_report, Body, Run, Spec, Stored};
use super::{open_store, Ctx};
use crate::exit::{coded, Code};
use crate::ledger::Operation;
use crate::manifest::tigerbeetle::SNAPSHOT;
use crate::manifest::{self, Kind, Manifest, Scope};
use crate::sources::tigerbeetle;
use crate::tigerbeetle::tblog::SegmentStats;
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
    let trust = super::trust(plan, Vec::new())?;
    let store = open_store(plan)?;
    store.preflight_writes()?;
    let run = Run::begin(
        ctx,
        store.as_ref(),
        &trust,
        true,
        Spec {
            kind: Kind::Tigerbeetle,
            scope: Scope::Full,
            operation: Operation::Snapshot,
            compression: plan.compression,
            retention_days: tb.retention_days,
        },
    )?;
    let id = run.id;
    ctx.ui.detail(&format!(
        "snapshot {id} of {} to {}",
        data_file.display(),
        store.identity()
    ));

    let outcome = (|| -> Result<Stored> {
        let log = |m: &str| ctx.ui.detail(m);
        let prepared = tigerbeetle::prepare(tb, &data_file, &plan.work_dir, &log)?;
        // A start command that failed leaves the replica down: whatever ends
        // this run, its error says so.
        let down = |e: anyhow::Error| match &prepared.deferred_error {
            Some(d) => e.context(d.clone()),
            None => e,
        };
        let suffix = run.suffix(".tar", plan.compression);
        let key = manifest::object_key(Kind::Tigerbeetle, SNAPSHOT, id, run.started_at, &suffix);
        // The data file is read once: the pass that archives it digests it
        // too, so its SHA-256 is known only at the end and goes into the
        // manifest (object metadata is fixed when an upload starts).
        let metadata = run.metadata(Scope::Full);
        let progress = ctx.progress();
        progress.begin("uploading", Some(prepared.size));
        let files = [(prepared.name.clone(), prepared.path.clone())];
        let mut archived = Vec::new();
        let entry = pipeline::upload(
            store.as_ref(),
            &key,
            &metadata,
            plan.compression,
            run.keyring,
            progress.clone(),
            |w| {
                archived = archive::write_files(w, &files)?;
                Ok(())
            },
        )
        .map_err(down)?;
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
        let m = run.manifest(Body {
            objects: vec![entry],
            files: archived,
            source,
            ..Body::default()
        });
        let mut stored = run.store_manifest(m).map_err(down)?;
        stored
            .problems
            .extend(prepared.deferred_error.clone().map(anyhow::Error::msg));
        Ok(stored)
        // `prepared` drops here: the lock is released and the local copy removed.
    })();

    let store = store.as_ref();
    run.finish(outcome, |m, elapsed, ledger| {
        report(ctx, m, &data_file, store, elapsed, ledger)
    })
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
        json_report(m, store, elapsed, ledger_note, json!({}))?;
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
fn count_rows(ctx: &Ctx, prepared: &tigerbeetle::Prepared) -> Result<SegmentStats> {
    if !prepared.is_copy() {
        anyhow::bail!(
            "tigerbeetle.count_rows needs snapshot_mode \"stop\" or \"reflink\": in \"offline\" mode bkp reads the data file in place and never starts a replica on it"
        );
    }
    let replica = super::restore::pitr::replica_spec(ctx, "counting a snapshot's rows")?;
    crate::tigerbeetle::replica::count_rows(&replica, &prepared.path)
}
