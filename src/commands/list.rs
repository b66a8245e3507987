//! `bkp list`: manifests → table (or `--json`).

use anyhow::Result;
use serde_json::json;

use std::collections::HashMap;

use super::{logs, open_store, Ctx};
use crate::cli::ListArgs;
use crate::id::BackupId;
use crate::manifest::Manifest;
use crate::manifest::{self, Kind};
use crate::ui;

/// How a backup sits in its chain: `-` for a standalone backup, `after <id>` for a
/// link that meets its parent, `after snapshot <id>` for the oldest log segment
/// left after retention removed older ones (the snapshot covers what they held),
/// `BROKEN: …` when the parent is gone or the intervals do not meet (a gap in the
/// log). `all` is every manifest of the store, oldest first.
pub fn chain_status(
    m: &Manifest,
    by_id: &HashMap<BackupId, &Manifest>,
    all: &[Manifest],
) -> String {
    let Some(parent) = m.parent else {
        return match logs::interval(m) {
            Some((0, _)) | None => "-".into(),
            Some((after, _)) => match covering_snapshot(m, all) {
                Some(s) => format!("after snapshot {s}"),
                None => format!("BROKEN: starts at {after} with no parent"),
            },
        };
    };
    let Some(p) = by_id.get(&parent) else {
        return match covering_snapshot(m, all) {
            Some(s) if m.kind.replays_log() => format!("after snapshot {s}"),
            _ => format!("BROKEN: parent {parent} missing"),
        };
    };
    match (logs::interval(p), logs::interval(m)) {
        (Some((_, until)), Some((after, _))) if until != after => {
            format!("BROKEN: gap ({until}, {after}] after {parent}")
        }
        _ => format!("after {parent}"),
    }
}

/// For a log segment whose predecessor is gone: the snapshot that holds
/// everything before it, if any. With the snapshot's newest TigerBeetle timestamp
/// recorded (`tigerbeetle.count_rows`) that is exact: the segment starts at or
/// before it. Otherwise: the newest snapshot that started before the segment,
/// with no other segment between the two.
pub fn covering_snapshot(m: &Manifest, all: &[Manifest]) -> Option<BackupId> {
    let (after, _) = logs::interval(m)?;
    let before = |x: &&Manifest| x.kind == m.kind && x.started_at < m.started_at;
    let snap = all
        .iter()
        .filter(before)
        .filter(|x| x.scope == crate::manifest::Scope::Full)
        .max_by_key(|x| x.started_at)?;
    if let Some(newest) = snap.source.get("newest_timestamp").and_then(|v| v.as_u64()) {
        return (after <= newest).then_some(snap.id);
    }
    let between = all
        .iter()
        .filter(before)
        .any(|x| x.operation == m.operation && x.started_at > snap.started_at);
    (!between).then_some(snap.id)
}

pub fn run(ctx: &Ctx, args: &ListArgs) -> Result<()> {
    let store = open_store(&ctx.plan)?;
    let kind = args.kind.map(Kind::from);
    let (all, unreadable) = manifest::list(store.as_ref(), kind)?;
    let by_id: HashMap<BackupId, &Manifest> = all.iter().map(|m| (m.id, m)).collect();
    for u in &unreadable {
        ctx.ui.warn(&format!(
            "manifest {} could not be read and is not listed: {}",
            u.key, u.error
        ));
    }

    if ctx.ui.json {
        let rows: Vec<_> = all
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
                    "chain": chain_status(m, &by_id, &all),
                    "key_id": m.encryption.as_ref().map(|e| e.key_id.clone()),
                    "manifest": m.key(),
                })
            })
            .collect();
        crate::ui::out(&serde_json::to_string_pretty(
            &json!({ "backups": rows, "unreadable": unreadable.iter().map(|u| &u.key).collect::<Vec<_>>() }),
        )?)?;
        return Ok(());
    }

    if all.is_empty() {
        ctx.ui.info(&format!("no backups in {}", store.identity()));
        return Ok(());
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    crate::ui::out(&format!(
        "{:<36}  {:<11}  {:<11}  {:<9}  {:<20}  {:>10}  {:<9}  CHAIN",
        "ID", "KIND", "SCOPE", "OPERATION", "STARTED (UTC)", "SIZE", "STATUS"
    ))?;
    for m in &all {
        crate::ui::out(&format!(
            "{:<36}  {:<11}  {:<11}  {:<9}  {:<20}  {:>10}  {:<9}  {}",
            m.id.to_string(),
            m.kind.as_str(),
            m.scope.as_str(),
            m.operation,
            m.started_at.format(&fmt).unwrap_or_default(),
            ui::size(m.stored_bytes()),
            format!("{:?}", m.status).to_lowercase(),
            chain_status(m, &by_id, &all),
        ))?;
    }
    Ok(())
}
