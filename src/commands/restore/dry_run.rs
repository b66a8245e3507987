//! `bkp restore --dry-run`: what a restore would read, how big it is, where it
//! would stage and whether the target would be accepted, without downloading a
//! byte or touching the target.

use anyhow::Result;
use serde_json::json;

use super::RestorePlan;
use crate::cli::RestoreArgs;
use crate::commands::Ctx;
use crate::manifest::tigerbeetle::LOGS;
use crate::manifest::{self, Kind, Manifest};
use crate::replicate::record::ReplicaSet;
use crate::store::Store;
use crate::{ui, units};

/// The directory a restore into `target` stages in: beside it, once made
/// absolute (a relative target has no parent of its own).
fn beside(target: &std::path::Path) -> String {
    std::path::absolute(target)
        .ok()
        .and_then(|t| t.parent().map(|p| p.display().to_string()))
        .unwrap_or_default()
}

pub fn run(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &manifest::Trust,
    rp: &RestorePlan,
    args: &RestoreArgs,
    opts: &super::Options,
) -> Result<()> {
    // Refused as the restore itself would refuse it.
    if rp.kind == Kind::Tigerbeetle && args.replicas > 1 {
        super::tigerbeetle::configured_cluster(&ctx.plan, "--replicas")?;
    }
    let read = super::read_by(&ctx.plan, store, trust, rp)?;
    let archived = super::archived::find(store, &super::archived::needed(ctx, store, trust, rp)?)?;
    // A replication restores its whole set, files stored by earlier runs included.
    let (objects, bytes) = match (rp.kind, &rp.backup) {
        (Kind::Parquet, Some(m)) => {
            let set = ReplicaSet::from_manifest(m)?;
            (
                set.set.len(),
                set.set.iter().map(|f| f.object_size).sum::<u64>(),
            )
        }
        _ => read
            .iter()
            .map(|m| m.restore_reads())
            .fold((0, 0), |(n, b), (n2, b2)| (n + n2, b + b2)),
    };
    let (target, verdict) = if super::shape(rp.kind).is_some() {
        // Every check the restore makes before it reads a byte.
        let envelope = opts.envelope(rp.kind);
        let target = envelope.check();
        let mut verdict = match &target {
            Ok(t) if t.exists => {
                "would be replaced once the restore verified (--force)".to_string()
            }
            Ok(_) => "is new or empty: accepted".to_string(),
            Err(e) => format!("refused: {e:#}"),
        };
        if let Ok(t) = &target {
            for p in envelope.left_beside(&t.path).unwrap_or_default() {
                verdict.push_str(&format!(
                    "; {} beside it ({}) would be removed once the restore is in place (--force)",
                    p.display(),
                    envelope.beside_is
                ));
            }
        }
        (target.map(drop), verdict)
    } else {
        super::pgdump::dry_run_verdict(opts)
    };
    let target_ok = target.is_ok();
    let staging = if super::shape(rp.kind).is_none() {
        "a new database bkp_restore_… on the [postgres] server".to_string()
    } else {
        beside(args.target())
    };
    if ctx.ui.json {
        ui::document(json!({
            "schema": "bkp.restore-plan/1",
            "kind": rp.kind,
            "backup": rp.backup.as_ref().map(|m| m.id),
            "at": rp.at.map(units::rfc3339),
            "replicas": (rp.kind == Kind::Tigerbeetle && rp.at.is_some()).then_some(args.replicas),
            "reads": read.iter().map(|m| json!({
                "id": m.id,
                "operation": m.operation,
                "objects": m.restore_reads().0,
                "bytes": m.restore_reads().1,
            })).collect::<Vec<_>>(),
            "objects": objects,
            "bytes": bytes,
            "events": read.iter().filter_map(segment_events).sum::<u64>(),
            "store": store.identity(),
            "target": args.target(),
            "staging_in": staging,
            "target_ok": target_ok,
            "target_verdict": verdict,
            "archived": archived.iter().map(|(k, a)| json!({"key": k, "class": a.class, "restoring": a.restoring})).collect::<Vec<_>>(),
        }))?;
    } else {
        say_what(rp, args)?;
        print_reads(&read)?;
        ui::out(&format!(
            "would read {}, {} from {}",
            units::count(objects as u64, "object"),
            ui::size(bytes),
            store.identity()
        ))?;
        if rp.kind == Kind::Pgdump {
            ui::out(&format!("would stage in {staging}"))?;
        } else {
            ui::out(&format!("would stage beside the target, in {staging}"))?;
        }
        ui::out(&format!("target {}: {verdict}", args.target().display()))?;
        say_archived(&archived)?;
    }
    // A refused target fails the dry run with the code the restore would have.
    target
}

/// What would be restored: the backup, or the log from its beginning.
fn say_what(rp: &RestorePlan, args: &RestoreArgs) -> Result<()> {
    match &rp.backup {
        Some(m) => ui::out(&format!(
            "would restore {} {} {} ({}){}{}",
            m.kind.as_str(),
            m.operation,
            m.id,
            units::rfc3339(m.started_at),
            match crate::manifest::tigerbeetle::base_newest(m) {
                Some(n) => format!(
                    ", a base of {} replicas built from the log (newest row at timestamp {n}), as a private cluster",
                    crate::manifest::tigerbeetle::replica_count(m)
                ),
                None => String::new(),
            },
            rp.at
                .map(|t| format!(" and replay the log up to {}", units::rfc3339(t)))
                .unwrap_or_default()
        ))?,
        None => ui::out(&format!(
            "would replay the log from the beginning up to {}{}",
            rp.at.map(units::rfc3339).unwrap_or_default(),
            if args.replicas > 1 {
                format!(
                    " into a private cluster of {} fresh replicas, one data file each",
                    args.replicas
                )
            } else {
                String::new()
            }
        ))?,
    }
    Ok(())
}

/// The archived objects the restore needs, if any, and what to do.
fn say_archived(archived: &[(String, crate::store::Archived)]) -> Result<()> {
    if archived.is_empty() {
        return Ok(());
    }
    ui::out(&format!(
        "archived: {} ({}), not readable until restored: run the restore with --request-restore[=DAYS,TIER] first",
        units::count(archived.len() as u64, "object"),
        super::archived::classes(archived)
    ))?;
    for (key, a) in archived {
        let doing = if a.restoring { ", being restored" } else { "" };
        ui::out(&format!("  {key} ({}{doing})", a.class))?;
    }
    Ok(())
}

/// The events a log segment's manifest records (accounts, transfers and
/// expiries); `None` for anything else.
fn segment_events(m: &Manifest) -> Option<u64> {
    if m.operation != LOGS {
        return None;
    }
    let n = |k: &str| m.source.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    Some(n("accounts") + n("transfers") + n("expiries"))
}

/// One line per manifest the restore reads (a segment with its events), and
/// the most events the replay applies.
fn print_reads(read: &[Manifest]) -> Result<()> {
    for m in read {
        ui::out(&format!(
            "  read {:<9} {}  {}, {}{}",
            if m.operation == LOGS {
                "segment"
            } else {
                m.operation.as_str()
            },
            m.id,
            units::count(m.restore_reads().0 as u64, "object"),
            ui::size(m.restore_reads().1),
            segment_events(m).map_or(String::new(), |n| format!(", {}", units::count(n, "event")))
        ))?;
    }
    let events: u64 = read.iter().filter_map(segment_events).sum();
    if read.iter().any(|m| m.operation == LOGS) {
        ui::out(&format!(
            "would replay at most {} (the segments' accounts, transfers and expiries; those before the restored state's newest row are checked, not replayed)",
            units::count(events, "event")
        ))?;
    }
    Ok(())
}
