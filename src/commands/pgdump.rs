//! `bkp export --kind pgdump`: PostgreSQL database → `pg_dump` (custom format, one
//! consistent snapshot) → compress → encrypt → SHA-256 → upload → manifest →
//! ledger.
//!
//! The dump streams from `pg_dump`'s standard output through the pipeline: it
//! never lands on local disk. `pg_dump`'s own compression is off (bkp's zstd
//! follows, and compressing twice only costs time). A dump that `pg_dump` does
//! not finish with success is never given a manifest, so it is never listed or
//! restored; its partial object is removed like any failed upload's.

use anyhow::Result;
use serde_json::json;

use super::run::{json_report, Body, Run, Spec, Stored};
use super::Ctx;
use crate::exit::{coded, Code};
use crate::ledger::Operation;
use crate::manifest::pgdump::{GLOBALS_SUFFIX, OPERATION};
use crate::manifest::{self, Kind, Manifest, Scope};
use crate::sources::postgres::Server;
use crate::{pipeline, ui};

pub fn run(ctx: &Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let pg = super::postgres_section(plan, "`bkp export --kind pgdump`")?;
    let server = Server::new(pg);
    let (trust, store) = super::backup_store(plan)?;
    let run = Run::begin(
        ctx,
        store.as_ref(),
        &trust,
        true,
        Spec {
            kind: Kind::Pgdump,
            scope: Scope::Full,
            operation: Operation::Export,
            compression: plan.compression,
            retention_days: pg.retention_days,
        },
    )?;
    let id = run.id;
    let what = server.describe(&pg.database);
    ctx.ui
        .detail(&format!("dump {id} of {what} to {}", store.identity()));

    let outcome = (|| -> Result<Stored> {
        let suffix = run.suffix(".dump", plan.compression);
        let key = manifest::object_key(Kind::Pgdump, OPERATION, id, run.started_at, &suffix);
        let progress = ctx.progress();
        progress.begin("dumping", None);
        let mut dumped = None;
        let entry = pipeline::upload(
            store.as_ref(),
            &key,
            &run.metadata(Scope::Full),
            plan.compression,
            run.keyring,
            progress.clone(),
            |w| {
                dumped = Some(server.dump(w)?);
                Ok(())
            },
        )?;
        progress.end();
        let dumped = dumped.expect("a finished upload ran its producer");
        let mut objects = vec![entry];
        let mut problems = Vec::new();
        if pg.globals {
            let suffix = run.suffix(GLOBALS_SUFFIX, plan.compression);
            let key = manifest::object_key(Kind::Pgdump, OPERATION, id, run.started_at, &suffix);
            progress.begin("roles and tablespaces", None);
            let globals = pipeline::upload(
                store.as_ref(),
                &key,
                &run.metadata(Scope::Full),
                plan.compression,
                run.keyring,
                progress.clone(),
                |w| server.dump_globals(w),
            );
            progress.end();
            match globals {
                Ok(g) => objects.push(g),
                Err(e) => problems.push(coded(
                    Code::Partial,
                    format!(
                        "the cluster's roles and tablespaces were not stored with it: {e:#}. Grant the role what pg_dumpall --globals-only needs, or set postgres.globals = false"
                    ),
                )),
            }
        }
        let mut source = crate::manifest::facts::Facts::new();
        source.insert("database", json!(pg.database));
        if let Some(h) = &pg.host {
            source.insert("host", json!(h));
        }
        if let Some(p) = pg.port {
            source.insert("port", json!(p));
        }
        source.insert("format", json!("custom"));
        source.insert("server_version", json!(dumped.server_version));
        source.insert("pg_dump_version", json!(dumped.pg_dump_version));
        if let Some(tables) = &dumped.tables {
            source.insert("tables", json!(tables));
        }
        let m = run.manifest(Body {
            objects,
            source,
            ..Body::default()
        });
        let mut stored = run.store_manifest(m)?;
        stored.problems.extend(problems);
        Ok(stored)
    })();

    let store = store.as_ref();
    run.finish(outcome, |m, elapsed, ledger| {
        if ctx.ui.json {
            return json_report(m, store, elapsed, ledger, json!({}));
        }
        report(ctx, m, &what, store, elapsed, ledger)
    })
}

fn report(
    ctx: &Ctx,
    m: &Manifest,
    what: &str,
    store: &dyn crate::store::Store,
    elapsed: std::time::Duration,
    ledger_note: Option<super::run::LedgerNote>,
) -> Result<()> {
    let o = crate::manifest::pgdump::dump_object(m)?;
    ctx.ui.info(&format!(
        "dump {} of {what} ({} uncompressed) stored as {} in {}: {} in {:.1}s ({})",
        m.id,
        ui::size(o.content_bytes),
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
