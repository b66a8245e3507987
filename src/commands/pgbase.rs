//! `bkp snapshot --kind postgres`: the PostgreSQL server's data directory →
//! `pg_basebackup` (tar, with the WAL it needs and its `backup_manifest`) →
//! compress → encrypt → SHA-256 → upload → manifest → ledger.
//!
//! The tar stream goes from `pg_basebackup`'s standard output through the
//! pipeline without landing on disk. A restore unpacks it into a new directory
//! and checks every file with `pg_verifybackup` before putting it in place; the
//! result starts as the server was at the end of the backup.

use anyhow::Result;
use serde_json::json;

use super::run::{json_report, Body, Run, Spec, Stored};
use super::Ctx;
use crate::ledger::Operation;
use crate::manifest::postgres::SNAPSHOT;
use crate::manifest::{self, Kind, Scope};
use crate::sources::postgres::Server;
use crate::{pipeline, ui};

pub fn run(ctx: &Ctx) -> Result<()> {
    let plan = &ctx.plan;
    let pg = super::postgres_section(plan, "`bkp snapshot --kind postgres`")?;
    let server = Server::new(pg);
    let (trust, store) = super::backup_store(plan)?;
    let run = Run::begin(
        ctx,
        store.as_ref(),
        &trust,
        true,
        Spec {
            kind: Kind::Postgres,
            scope: Scope::Full,
            operation: Operation::Snapshot,
            compression: plan.compression,
            retention_days: pg.retention_days,
        },
    )?;
    let id = run.id;
    let what = format!("the server of {}", server.describe(&pg.database));
    ctx.ui.detail(&format!(
        "base backup {id} of {what} to {}",
        store.identity()
    ));

    let outcome = (|| -> Result<Stored> {
        let suffix = run.suffix(".tar", plan.compression);
        let key = manifest::object_key(Kind::Postgres, SNAPSHOT, id, run.started_at, &suffix);
        let progress = ctx.progress();
        progress.begin("base backup", None);
        let mut facts = None;
        let entry = pipeline::upload(
            store.as_ref(),
            &key,
            &run.metadata(Scope::Full),
            plan.compression,
            run.keyring,
            progress.clone(),
            |w| {
                let signed = run.keyring.is_some_and(|k| k.signing().is_some());
                facts = Some(server.base_backup(w, &format!("bkp {id}"), signed)?);
                Ok(())
            },
        )?;
        progress.end();
        let mut source = crate::manifest::facts::Facts::new();
        if let Some(h) = &pg.host {
            source.insert("host", json!(h));
        }
        if let Some(p) = pg.port {
            source.insert("port", json!(p));
        }
        source.insert("format", json!("tar"));
        source.insert("wal", json!("fetch"));
        if let Some(f) = facts {
            source.insert("server_version", json!(f.server_version));
            // Where point-in-time recovery from the WAL archive starts.
            if let Some(w) = f.wal {
                source.insert("system_identifier", json!(w.system.to_string()));
                source.insert("timeline", json!(w.timeline));
                source.insert("wal_start", json!(w.segment()));
                source.insert("wal_segment_size", json!(w.segment_size));
            }
        }
        let m = run.manifest(Body {
            objects: vec![entry],
            source,
            ..Body::default()
        });
        run.store_manifest(m)
    })();

    let store = store.as_ref();
    run.finish(outcome, |m, elapsed, ledger| {
        if ctx.ui.json {
            return json_report(m, store, elapsed, ledger, json!({}));
        }
        let o = &m.objects[0];
        ctx.ui.info(&format!(
            "base backup {} of {what} ({}) stored as {} in {}: {} in {:.1}s ({})",
            m.id,
            ui::size(o.content_bytes),
            o.key,
            store.identity(),
            ui::size(o.size),
            elapsed.as_secs_f64(),
            ui::rate(o.content_bytes, elapsed),
        ));
        if let Some(n) = ledger {
            ctx.ui.detail(&n.to_string());
        }
        Ok(ui::out(&m.id.to_string())?)
    })
}
