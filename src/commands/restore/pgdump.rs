//! `bkp restore` of a PostgreSQL dump: into a new database on the configured
//! server, never over an existing one without `--force`.
//!
//! The dump is restored into a staging database (`bkp_restore_…`) created from
//! `template0`; `pg_restore` stops at the first error. Only when it succeeded
//! and the stream matched the manifest's digests is the staging database
//! renamed to the target's name (with `--force`, after the old database was
//! dropped, its sessions ended). A failed restore drops the staging database:
//! the target is never left half restored under its own name.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::{RestorePlan, Source};
use crate::cli::RestoreArgs;
use crate::commands::Ctx;
use crate::exit::{coded, Code};
use crate::manifest::Manifest;
use crate::pipeline;
use crate::sources::postgres::{check_database_name, Selection, Server};
use crate::ui;

pub fn run(ctx: &Ctx, src: &Source, rp: &RestorePlan, args: &RestoreArgs) -> Result<()> {
    let m = rp.backup.as_ref().context("a dump restore needs a dump")?;
    let plan = &ctx.plan;
    let pg = plan.postgres.as_ref().ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "{}: restoring a PostgreSQL dump needs a [postgres] section naming the server to restore into (host, port, user, passfile)",
                plan.source.display()
            ),
        )
    })?;
    let server = Server::new(pg);
    let target = args.target.to_str().ok_or_else(|| {
        coded(
            Code::Config,
            "--target for a PostgreSQL dump is the name of the new database, in UTF-8",
        )
    })?;
    check_database_name(target)?;
    let described = server.describe(target);
    let exists = server.database_exists(target)?;
    if exists && !args.force {
        return Err(coded(
            Code::TargetExists,
            format!(
                "{described} exists: restore into a new database (--target NEWNAME), or pass --force to replace it (its sessions are ended)"
            ),
        ));
    }
    if exists && target == pg.database {
        ctx.ui.warn(&format!(
            "{described} is the database bkp backs up (postgres.database): it is replaced"
        ));
    }
    super::countdown::before_replacing_named(&described, exists, args.yes)?;

    let selection = Selection {
        schemas: args.schema.clone(),
        tables: args.table.clone(),
    };
    let clock = Instant::now();
    let staging = format!("bkp_restore_{:016x}", crate::id::random_u64());
    ctx.ui.detail(&format!(
        "restoring dump {} from {} into {} (staged as {staging:?})",
        m.id,
        src.store.identity(),
        described
    ));
    server.create_database(&staging)?;
    let mut tables = 0;
    let restored = restore_into(src, m, &server, &staging, &selection).and_then(|()| {
        let counts = server.count_rows(&staging)?;
        tables = counts.len();
        let selected = !(selection.schemas.is_empty() && selection.tables.is_empty());
        if selected {
            compare_selected(m, &counts)?;
        } else {
            compare_counts(m, &counts)?;
        }
        if exists {
            server.drop_database(target, true)?;
        }
        server.rename_database(&staging, target)
    });
    if let Err(e) = restored {
        return Err(match server.drop_database(&staging, true) {
            Ok(()) => e.context(format!("nothing was restored; {described} is as it was")),
            Err(d) => e.context(format!(
                "the staging database {staging:?} could not be dropped ({d:#}): drop it by hand"
            )),
        });
    }
    let elapsed = clock.elapsed();
    let bytes = m.objects.first().map_or(0, |o| o.content_bytes);
    if ctx.ui.json {
        return ui::print(&serde_json::to_string_pretty(&json!({
            "schema": "bkp.restore/1",
            "id": m.id,
            "kind": "pgdump",
            "target": target,
            "replaced": exists,
            "schemas": selection.schemas,
            "tables": selection.tables,
            "bytes": bytes,
            "tables_verified": tables,
            "seconds": elapsed.as_secs_f64(),
        }))?);
    }
    ctx.ui.info(&format!(
        "restored dump {} into {described}{}: {} tables, every row count verified, {} in {:.1}s",
        m.id,
        if exists { ", replacing it" } else { "" },
        tables,
        ui::size(bytes),
        elapsed.as_secs_f64(),
    ));
    ui::print(target)
}

/// The row counts dump `m` recorded, if it did.
fn recorded(m: &Manifest) -> Result<Option<BTreeMap<String, u64>>> {
    m.source
        .get("tables")
        .map(|t| serde_json::from_value(t.clone()))
        .transpose()
        .map_err(|e| {
            coded(
                Code::Integrity,
                format!(
                    "dump {}: its manifest's table counts are malformed: {e}",
                    m.id
                ),
            )
        })
}

/// Checks that `counts` (of a whole restored dump, or of the dump's archive)
/// are exactly the rows per table that dump `m` recorded in its snapshot.
pub fn compare_counts(m: &Manifest, counts: &BTreeMap<String, u64>) -> Result<()> {
    let Some(want) = recorded(m)? else {
        return Ok(());
    };
    let mut wrong: Vec<String> = Vec::new();
    for (t, n) in &want {
        match counts.get(t) {
            Some(got) if got == n => {}
            Some(got) => wrong.push(format!("{t}: {got} rows, the dump recorded {n}")),
            None => wrong.push(format!("{t}: missing, the dump recorded {n} rows")),
        }
    }
    for t in counts.keys().filter(|t| !want.contains_key(*t)) {
        wrong.push(format!("{t}: not in the dump's record"));
    }
    check_wrong(m, wrong)
}

/// [`compare_counts`] for a partial restore: every restored table must have
/// the rows the dump recorded for it.
fn compare_selected(m: &Manifest, counts: &BTreeMap<String, u64>) -> Result<()> {
    let Some(want) = recorded(m)? else {
        return Ok(());
    };
    let wrong = counts
        .iter()
        .filter_map(|(t, got)| match want.get(t) {
            Some(n) if n == got => None,
            Some(n) => Some(format!("{t}: {got} rows, the dump recorded {n}")),
            None => Some(format!("{t}: not in the dump's record")),
        })
        .collect();
    check_wrong(m, wrong)
}

fn check_wrong(m: &Manifest, wrong: Vec<String>) -> Result<()> {
    if wrong.is_empty() {
        return Ok(());
    }
    Err(coded(
        Code::Integrity,
        format!(
            "dump {} does not restore the rows it recorded: {}",
            m.id,
            wrong.join("; ")
        ),
    ))
}

/// Streams dump `m` through the verifying pipeline into `pg_restore` on
/// `database`.
pub fn restore_into(
    src: &Source,
    m: &Manifest,
    server: &Server,
    database: &str,
    selection: &Selection,
) -> Result<()> {
    let [entry] = m.objects.as_slice() else {
        return Err(coded(
            Code::Integrity,
            format!(
                "backup {} lists {} objects; a dump has exactly one",
                m.id,
                m.objects.len()
            ),
        ));
    };
    let keyring = pipeline::keys_for(m, src.keyring)?;
    let spool = src.work.scratch("spool")?;
    pipeline::download(
        src.store,
        entry,
        m.compression,
        keyring,
        spool.path(),
        src.progress.clone(),
        |r| server.restore(database, r, selection),
    )
}
