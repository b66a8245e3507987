//! `bkp snapshot --kind sqlite`: SQLite database → online backup into a private
//! copy (one read transaction) → integrity check and row counts → compress →
//! encrypt → SHA-256 → upload → manifest → ledger.
//!
//! What is read and checked is the kind's own ([`crate::kinds::sqlite`]); this
//! recipe is the chain around it. The copy lives in the run's scratch in the
//! work directory and is removed with it, whatever happens.

use anyhow::Result;
use serde_json::json;

use super::run::{json_report, Body, Run, Spec, Stored};
use super::Ctx;
use crate::exit::{coded, Code};
use crate::kinds::sqlite::{self, View, OPERATION, SUFFIX};
use crate::ledger::Operation;
use crate::manifest::{self, Kind, Manifest, Scope};
use crate::workdir::WorkDir;
use crate::{pipeline, ui};

pub fn run(ctx: &Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let section = plan.sqlite.as_ref().ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "{}: `bkp snapshot --kind sqlite` needs a [sqlite] section naming the database file",
                plan.source.display()
            ),
        )
    })?;
    let (trust, store) = super::backup_store(plan)?;
    let run = Run::begin(
        ctx,
        store.as_ref(),
        &trust,
        true,
        Spec {
            kind: Kind::Sqlite,
            scope: Scope::Full,
            operation: Operation::Snapshot,
            compression: plan.compression,
            retention_days: section.retention_days,
        },
    )?;
    let id = run.id;
    let what = section.database.display().to_string();
    ctx.ui
        .detail(&format!("copy {id} of {what} to {}", store.identity()));

    let outcome = (|| -> Result<Stored> {
        let scratch = WorkDir::new(&plan.work_dir).scratch("sqlite")?;
        let copy = scratch.join("copy.sqlite");
        let view = sqlite::copy(&section.database, &copy, section.lock_wait)?;
        let suffix = run.suffix(SUFFIX, plan.compression);
        let key = manifest::object_key(Kind::Sqlite, OPERATION, id, run.started_at, &suffix);
        let progress = ctx.progress();
        progress.begin("storing", std::fs::metadata(&copy).ok().map(|m| m.len()));
        let entry = pipeline::upload(
            store.as_ref(),
            &key,
            &run.metadata(Scope::Full),
            plan.compression,
            run.keyring,
            progress.clone(),
            |w| {
                let mut f = std::fs::File::open(&copy)?;
                std::io::copy(&mut f, w)?;
                Ok(())
            },
        )?;
        progress.end();
        let m = run.manifest(Body {
            objects: vec![entry],
            source: view.members(),
            ..Body::default()
        });
        run.store_manifest(m)
    })();

    let store = store.as_ref();
    run.finish(outcome, |m, elapsed, ledger| {
        if ctx.ui.json {
            return json_report(m, store, elapsed, ledger, json!({}));
        }
        report(ctx, m, store, elapsed, ledger)
    })
}

fn report(
    ctx: &Ctx,
    m: &Manifest,
    store: &dyn crate::store::Store,
    elapsed: std::time::Duration,
    ledger_note: Option<super::run::LedgerNote>,
) -> Result<()> {
    let o = sqlite::object(m)?;
    let view = View::of(m)?;
    ctx.ui.info(&format!(
        "copy {} of {} ({}, {} in {}) stored as {} in {}: {} in {:.1}s ({})",
        m.id,
        view.database,
        ui::size(o.content_bytes),
        crate::units::count(view.tables.values().sum(), "row"),
        crate::units::count(view.tables.len() as u64, "table"),
        o.key,
        store.identity(),
        ui::size(m.stored_bytes()),
        elapsed.as_secs_f64(),
        ui::rate(o.content_bytes, elapsed),
    ));
    if let Some(n) = ledger_note {
        ctx.ui.detail(&n.to_string());
    }
    Ok(ui::out(&m.id.to_string())?)
}
