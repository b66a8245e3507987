//! `bkp list`: manifests → table (or `--json`).

use anyhow::Result;
use serde_json::json;

use super::{open_store, Ctx};
use crate::chain;
use crate::cli::ListArgs;
use crate::manifest::{self, Kind};
use crate::ui;
use crate::units::count;

pub fn run(ctx: &Ctx, args: &ListArgs) -> Result<()> {
    let store = open_store(&ctx.plan)?;
    // The keys prove each manifest: one that fails is marked, never shown as good.
    let trust = super::reading_trust(&ctx.plan, Vec::new())?;
    let kind = args.kind.map(Kind::from);
    let (all, unreadable) = manifest::list(store.as_ref(), &trust, kind)?;
    // Chains are judged on everything; the filters choose the rows shown.
    let chains = chain::Index::new(&all);
    let since = args
        .since
        .as_deref()
        .map(|s| crate::units::parse_since("--since", s, time::OffsetDateTime::now_utc()))
        .transpose()?;
    if let Some(op) = &args.operation {
        const OPERATIONS: [&str; 4] = [
            manifest::tigerbeetle::SNAPSHOT,
            manifest::tigerbeetle::LOGS,
            manifest::duckdb::OPERATION,
            manifest::parquet::OPERATION,
        ];
        if !OPERATIONS.contains(&op.as_str()) {
            return Err(crate::exit::coded(
                crate::exit::Code::Config,
                format!("--operation {op:?} is not one of {}", OPERATIONS.join(", ")),
            ));
        }
    }
    let mut shown: Vec<&manifest::Manifest> = all
        .iter()
        .filter(|m| args.operation.as_ref().is_none_or(|op| &m.operation == op))
        .filter(|m| since.is_none_or(|t| m.started_at >= t))
        .collect();
    if let Some(n) = args.last {
        let skip = shown.len().saturating_sub(n);
        shown.drain(..skip);
    }
    for u in &unreadable {
        ctx.ui.warn(&format!(
            "manifest {} is refused and not listed: {}",
            u.key, u.error
        ));
    }
    // Whatever was shown, a refused manifest makes the exit code say so.
    let refused = || -> Result<()> {
        if unreadable.is_empty() {
            return Ok(());
        }
        let all: Vec<&manifest::Unreadable> = unreadable.iter().collect();
        Err(manifest::unreadable_error(
            &format!("{} listed", count(shown.len() as u64, "backup")),
            &all,
        ))
    };

    // The WAL archives of the base backups' servers (one listing each).
    let archives = if kind.is_none_or(|k| k == Kind::Postgres) {
        crate::manifest::wal::archive::archives(store.as_ref(), &all, false)?
    } else {
        Vec::new()
    };
    if ctx.ui.json {
        let rows: Vec<_> = shown
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "kind": m.kind,
                    "scope": m.scope,
                    "operation": m.operation,
                    "started_at": m.started_at.format(&time::format_description::well_known::Rfc3339).ok(),
                    "finished_at": m.finished_at.format(&time::format_description::well_known::Rfc3339).ok(),
                    "bytes": m.stored_bytes(),
                    "content_bytes": m.files.iter().map(|f| f.size).sum::<u64>(),
                    "status": m.status,
                    "parent": m.parent,
                    "chain": chains.link(m).to_string(),
                    "key_id": m.encryption.as_ref().map(|e| e.key_id.clone()),
                    "manifest": m.key(),
                })
            })
            .collect();
        let refused_rows: Vec<_> = unreadable
            .iter()
            .map(|u| {
                json!({
                    "manifest": u.key,
                    "id": u.id(),
                    "code": crate::exit::name(u.code.unwrap_or(crate::exit::Code::Integrity).exit_code()),
                    "reason": u.error,
                })
            })
            .collect();
        crate::ui::document(json!({
            "schema": "bkp.list/1",
            "backups": rows,
            "unreadable": refused_rows,
            "wal": archives.iter().map(|a| a.json()).collect::<Vec<_>>(),
        }))?;
        return refused();
    }

    if shown.is_empty() {
        ctx.ui.info(&if all.is_empty() {
            format!("no backups in {}", store.identity())
        } else {
            format!(
                "none of the {} backups in {} matches the filters",
                all.len(),
                store.identity()
            )
        });
        return refused();
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    crate::ui::out(&format!(
        "{:<36}  {:<11}  {:<11}  {:<9}  {:<20}  {:>10}  {:<9}  CHAIN",
        "ID", "KIND", "SCOPE", "OPERATION", "STARTED (UTC)", "SIZE", "STATUS"
    ))?;
    for m in &shown {
        crate::ui::out(&format!(
            "{:<36}  {:<11}  {:<11}  {:<9}  {:<20}  {:>10}  {:<9}  {}",
            m.id.to_string(),
            m.kind.as_str(),
            m.scope.as_str(),
            m.operation,
            m.started_at.format(&fmt).unwrap_or_default(),
            ui::size(m.stored_bytes()),
            format!("{:?}", m.status).to_lowercase(),
            chains.link(m),
        ))?;
    }
    for u in &unreadable {
        crate::ui::out(&format!(
            "{:<36}  {:<11}  {:<11}  {:<9}  {:<20}  {:>10}  {:<9}  -",
            u.id().map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
            u.key.split('/').nth(1).unwrap_or("?"),
            "?",
            "?",
            "",
            "",
            "REFUSED",
        ))?;
    }
    let now = time::OffsetDateTime::now_utc();
    for a in &archives {
        crate::ui::out(&a.describe(now))?;
    }
    refused()
}
