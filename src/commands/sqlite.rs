//! `bkp snapshot --kind sqlite`: SQLite database → online backup into a private
//! copy (one read transaction) → integrity check and row counts → compress →
//! encrypt → SHA-256 → upload → manifest → ledger.
//!
//! What is read and checked is the kind's own ([`crate::kinds::sqlite`]); this
//! recipe is the chain around it. The copy lives in the run's scratch in the
//! work directory and is removed with it, whatever happens.

use anyhow::{Context, Result};
use serde_json::json;

use super::restore::{Options, RestorePlan, Source};
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
            source: view.members().into(),
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

/// Refuses to replace a database a process has open (SQLite's locks show it).
pub fn in_use(target: &std::path::Path) -> Result<()> {
    if sqlite::in_use(target) {
        return Err(coded(
            Code::TargetExists,
            format!(
                "refusing to replace {}: a process has it open (SQLite's locks show it); stop the application first",
                target.display()
            ),
        ));
    }
    Ok(())
}

/// `bkp restore` of a SQLite copy: the kind's engine writes and checks the
/// copy in the envelope's staging, which then takes the target's place.
pub fn restore(src: &Source, rp: &RestorePlan, opts: &Options) -> Result<()> {
    let m = rp
        .backup
        .as_ref()
        .context("a SQLite restore needs a copy")?;
    let done = opts.envelope(rp.kind).deliver(&src.work, src.ui, |file| {
        src.announce(m, opts.target);
        sqlite::restore(src.store, m, src.keyring, file, src.progress.clone())
    })?;
    let (target, restored) = (&done.target, &done.made);
    let elapsed = done.elapsed;
    if src.ui.json {
        return ui::document(json!({
            "schema": "bkp.restore/1",
            "id": m.id,
            "kind": "sqlite",
            "target": target.path.display().to_string(),
            "tables": restored.tables,
            "rows": restored.rows(),
            "bytes": restored.bytes,
            "seconds": elapsed.as_secs_f64(),
        }));
    }
    src.ui.info(&format!(
        "restored SQLite copy {} into {}: {}, {}, integrity checked and every count verified, in {:.1}s ({})",
        m.id,
        target.path.display(),
        crate::units::count(restored.tables.len() as u64, "table"),
        crate::units::count(restored.rows(), "row"),
        elapsed.as_secs_f64(),
        ui::size(restored.bytes),
    ));
    ui::print(&target.path.display().to_string())
}

/// `verify --drill`: the copy restored to a scratch file through the kind's
/// engine, which checks its integrity and every table's rows against the
/// manifest.
pub fn drill(
    _: &crate::config::Plan,
    src: &Source,
    m: &crate::manifest::Manifest,
    dir: &std::path::Path,
    facts: &mut super::restore::Facts,
) -> Result<()> {
    let file = dir.join("drill.sqlite");
    let r = sqlite::restore(src.store, m, src.keyring, &file, src.progress.clone())?;
    facts.insert("tables".into(), json!(r.tables.len()));
    facts.insert("rows".into(), json!(r.rows()));
    Ok(())
}

/// What `bkp check` probes of the `[sqlite]` section: the database opens
/// read-only and answers.
pub fn probes(plan: &crate::config::Plan) -> Vec<super::Probe> {
    plan.sqlite
        .iter()
        .map(|s| ("sqlite.database", sqlite::probe(&s.database)))
        .collect()
}
