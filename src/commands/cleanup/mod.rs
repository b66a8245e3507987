//! `bkp cleanup`: retention policy → plan → delete expired backups, chain-aware.
//!
//! The plan is [`retention::plan`], a pure function of the manifests, the policy
//! and the time, so `--dry-run` shows exactly what a real run would do.
//!
//! Deleting backups keeps the store consistent at every moment, even when the
//! process is killed half-way:
//! 1. for each backup to delete, a tombstone `trash/{kind}/{id}.json` is written
//!    (create-only) holding its manifest and the bytes its ledger transfer
//!    credited, then the manifest is deleted: from then on the backup is not
//!    listed, not restorable, not planned again;
//! 2. the manifests are listed afresh, and for each tombstone the objects it
//!    names (`objects` and `uses`) that no remaining manifest names are deleted;
//!    then the reverse code-12 transfer (store → source, the same amount the
//!    backup's own transfer credited, id derived from the backup id) is recorded
//!    or spooled, and the tombstone is deleted.
//!
//! With S3 Object Lock the store itself refuses deletions until each object's
//! retention ends, and a manifest is retained like the objects it names. So a
//! backup whose manifest is still retained is kept (and so is every backup it
//! builds on) before any tombstone is written: it stays listed and restorable,
//! and a later run deletes it once the retention has passed. An object that a
//! deletion reaches while still retained stays too, and is removed later as an
//! orphan. Tombstones are retained too: the deletion they record is finished
//! again (harmlessly) by every run until their retention passes.
//!
//! Every step is idempotent and every run first finishes the tombstones an
//! earlier run left, so an interrupted cleanup is completed by the next one and
//! the ledger records each deletion exactly once. Nothing is deleted while any
//! manifest cannot be read: what it needs is unknown.
//!
//! Then objects that no manifest or tombstone names (uploads of crashed runs) are
//! removed once older than the grace period: in bkp's own folders only, and
//! never inside a folder there that holds another store (its marker, or its
//! `manifests/`: another installation's prefix or path below this one's, whose
//! backups this one cannot name). So are a crashed run's local
//! leftovers: restore spools and partial store writes in the work directory and
//! the local store, and data-file copies (only while no snapshot runs).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use crate::chunks::Lists;
use anyhow::{Context, Result};
use serde_json::json;
use time::OffsetDateTime;

use super::run::{backup_operation, hostname, send_record, write_metrics, write_report, RunRecord};
use super::{open_store, Ctx};
use crate::cli::CleanupArgs;
use crate::config::StorePlan;
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::ledger;
use crate::lock::RunLock;
use crate::manifest::seal;
use crate::manifest::tombstone::{self, read_tombstones, Tombstone};
use crate::manifest::{self, Kind, Manifest};
use crate::metrics::RunMetrics;
use crate::retention::{self, Decision};
use crate::store::dry::DryRun;
use crate::store::s3::Retained;
use crate::store::Store;
use crate::ui;
use crate::units::rfc3339;

/// Every object key the manifests name: `objects`, `uses`, chunk lists and
/// the chunks they list. `kept`: the manifests stay, so a chunk list that
/// cannot be read stops the run (nothing is deleted while what a kept backup
/// needs is unknown); for a backup being deleted, a damaged list names
/// nothing more (a warning), its chunks left to the orphan sweep.
fn referenced<'a>(
    ctx: &Ctx,
    lists: &Lists,
    kept: bool,
    manifests: impl IntoIterator<Item = &'a Manifest>,
) -> Result<BTreeSet<String>> {
    let mut keys = BTreeSet::new();
    for m in manifests {
        keys.extend(m.needed_keys());
        keys.extend(chunk_keys(ctx, lists, kept, m)?.into_iter().map(|(k, _)| k));
    }
    Ok(keys)
}

/// The chunks `m` names (see [`referenced`]).
fn chunk_keys(ctx: &Ctx, lists: &Lists, kept: bool, m: &Manifest) -> Result<Vec<(String, u64)>> {
    match lists.keys(m) {
        Ok(keys) => Ok(keys),
        Err(e) if kept => Err(e.context(format!(
            "cleanup cannot tell which chunks backup {} needs, so it deletes nothing: run `bkp verify`, and restore or remove that backup",
            m.id
        ))),
        Err(e) if crate::exit::is_damage(&e) => {
            ctx.ui.warn(&format!("{e:#}"));
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// The bytes deleting `m` frees: its own objects, and the chunks it names
/// that no backup kept (`kept`) names and no earlier deletion of this run
/// (`counted`) freed. What the ledger's reverse transfer takes back, so that
/// the store account keeps equalling the bytes retained.
fn freed_bytes(
    ctx: &Ctx,
    lists: &Lists,
    m: &Manifest,
    kept: &BTreeSet<String>,
    counted: &mut BTreeSet<String>,
) -> Result<u64> {
    let own: u64 = m.objects.iter().map(|o| o.size).sum();
    let list = m.chunks.as_ref().map_or(0, |c| c.list.size);
    let chunks: u64 = chunk_keys(ctx, lists, false, m)?
        .into_iter()
        .filter(|(k, _)| !kept.contains(k) && counted.insert(k.clone()))
        .map(|(_, n)| n)
        .sum();
    Ok(own + list + chunks)
}

#[derive(Default)]
struct Totals {
    backups: u64,
    bytes: u64,
    orphans: u64,
    orphan_bytes: u64,
    local: u64,
}

/// A backup this run deleted, for its report (a plain row: a cleanup of
/// years of history deletes hundreds of thousands).
#[derive(serde::Serialize)]
struct Deleted {
    id: BackupId,
    kind: Kind,
    scope: manifest::Scope,
    bytes: u64,
}

pub fn run(ctx: &Ctx, args: &CleanupArgs) -> Result<()> {
    let plan = &ctx.plan;
    let started_at = OffsetDateTime::now_utc();
    let run_id = BackupId::new_v7(started_at);
    let _lock = RunLock::acquire(&plan.work_dir, &lock_name(plan), ctx.wait)?;
    let real = open_store(plan)?;
    real.preflight_writes()?;
    // A dry run takes the real run's path on a store that keeps its writes
    // and deletions in memory: it shows what a real run would do, and
    // changes nothing in the store.
    let dry = args.dry_run;
    let overlay = dry.then(|| DryRun::new(real.as_ref()));
    let store: &dyn Store = match &overlay {
        Some(o) => o,
        None => real.as_ref(),
    };
    // Only proven manifests and tombstones decide a deletion (see `manifest/seal.rs`).
    let trust = super::reading_trust(plan, Vec::new())?;
    // Another installation's store is refused before anything is deleted.
    manifest::marker::check(store, &trust)?;
    let mut totals = Totals::default();

    // 1. Plan, on a complete picture of the store only.
    let (all, unreadable) = manifest::list_complete(store, &trust, None)?;
    refuse_unreadable(&unreadable).and_then(|()| refuse_shared_ids(store, &all))?;
    let pending = read_tombstones(store, &trust)?;
    announce_pending(ctx, store, &pending, dry)?;
    let gone: BTreeSet<BackupId> = pending.iter().map(|t| t.manifest.id).collect();
    // The kind asked for, and the others (held once: a year of manifests is
    // tens of MiB).
    let (selected, others): (Vec<Manifest>, Vec<Manifest>) = all
        .into_iter()
        .filter(|m| !gone.contains(&m.id))
        .partition(|m| args.kind.is_none_or(|k| m.kind == k.into()));
    let all = || selected.iter().chain(&others);
    let by_id: BTreeMap<BackupId, &Manifest> = selected.iter().map(|m| (m.id, m)).collect();
    let (decisions, locked) = decide(ctx, store, &selected, &by_id, started_at)?;
    reverify(store, &trust, &decisions, &by_id, dry)?;
    let doomed: BTreeSet<BackupId> = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
    let json_plan = show_plan(ctx, &decisions, &by_id, dry)?;

    // 2. Tombstone and unlist, newest first (an incremental goes before the
    // backup it builds on, so no listed backup ever lacks its base).
    let pending_n = pending.len();
    let mut tombstones = pending;
    let mut deleted = Vec::new();
    // This run's deletions in order, for step 3's tombstones (`tombstones_of`).
    let mut unlisted: Vec<(Kind, BackupId, u64)> = Vec::new();
    // Bytes deleted per kind, for the metrics (every kind present gets a file).
    let mut per_kind: BTreeMap<Kind, u64> = all().map(|m| (m.kind, 0)).collect();
    // Chunk lists are read before anything is deleted, once each.
    let lists = Lists::new(store);
    let kept = referenced(ctx, &lists, true, all().filter(|m| !doomed.contains(&m.id)))?;
    let mut counted = BTreeSet::new();
    for d in decisions.iter().filter(|d| !d.keep) {
        let m = by_id[&d.id];
        let bytes = freed_bytes(ctx, &lists, m, &kept, &mut counted)?;
        totals.backups += 1;
        totals.bytes += bytes;
        let key = tombstone::key(m.kind, m.id);
        let sealed = seal::encode(&tombstone_of(m.clone(), bytes, started_at), trust.keys())?;
        // A dry run's tombstones would be held in memory until its end, one
        // per backup it would delete (years of them, on a store cleaned for
        // the first time), and nothing reads them: they are sealed, not kept.
        if !dry && store.head(&key)?.is_none() {
            store.put_new(&key, &sealed, &Vec::new()).with_context(|| {
                format!("failed to write tombstone {key} before deleting {}", m.id)
            })?;
        }
        drop(sealed);
        store.delete(&m.key())?;
        crate::failpoint::hit("cleanup-after-manifest");
        if !dry {
            ctx.ui.info(&format!(
                "deleted {} {} {} ({}, {})",
                m.kind.as_str(),
                m.scope.as_str(),
                m.id,
                ui::size(bytes),
                d.reasons.first().map(String::as_str).unwrap_or("")
            ));
        }
        deleted.push(Deleted {
            id: m.id,
            kind: m.kind,
            scope: m.scope,
            bytes,
        });
        *per_kind.entry(m.kind).or_default() += bytes;
        unlisted.push((m.kind, m.id, bytes));
    }

    // 3. Delete the objects no remaining manifest names, then record and forget
    // each deletion. The listing is fresh: a manifest written meanwhile counts.
    // What was listed before is not held beside it.
    let kept_n = decisions.iter().filter(|d| d.keep).count();
    drop((by_id, doomed, kept, counted));
    drop(decisions);
    drop(others);
    tombstones.extend(tombstones_of(selected, &unlisted, started_at));
    drop(unlisted);
    let (remaining, unreadable) = manifest::list_complete(store, &trust, None)?;
    refuse_unreadable(&unreadable)?;
    let named = referenced(ctx, &lists, true, &remaining)?;
    for (i, t) in tombstones.iter().enumerate() {
        // A dry run wrote none of its own tombstones (see above): it deletes
        // only those earlier runs left.
        let written = !dry || i < pending_n;
        finish(ctx, store, &lists, t, &named, dry, written)?;
    }
    // Only their ids from here on (not held beside the report's rows).
    let finished: BTreeSet<(Kind, BackupId)> = tombstones.iter().map(kind_and_id).collect();
    drop(tombstones);

    // 4. Orphans: objects no manifest names, older than the grace period.
    let cutoff = started_at
        .checked_sub(plan.retention.grace)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let orphans = sweep_orphans(ctx, store, &named, cutoff, dry, &mut totals)?;

    // 4b. WAL older than every kept base backup of its system: no recovery can
    // start before its oldest base backup.
    if args.kind.is_none_or(|k| Kind::from(k) == Kind::Postgres) {
        trim_wal(ctx, store, &remaining, dry)?;
    }

    // Unfinished uploads of crashed runs (S3 multipart uploads), past the grace
    // period: listed by the same call that discards them, so a dry run shows
    // exactly what a real run discards.
    let unfinished = store.sweep_unfinished(cutoff, dry)?;
    for u in &unfinished {
        let started = u
            .started
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "at an unknown time".into());
        ctx.ui.info(&format!(
            "{} the unfinished upload of {} (started {started}): left by an interrupted run",
            if dry { "would discard" } else { "discarded" },
            u.key
        ));
    }
    totals.orphans += unfinished.len() as u64;

    // 5. Local leftovers.
    let grace: std::time::Duration = plan.retention.grace.try_into().unwrap_or_default();
    totals.local = local_leftovers(ctx, grace, dry);

    if let Some(mut doc) = json_plan {
        doc["orphans"] = json!(orphans
            .iter()
            .map(|o| json!({"key": o.key, "bytes": o.size}))
            .collect::<Vec<_>>());
        doc["unfinished_uploads"] = unfinished_json(&unfinished);
        ui::document(doc)?;
    }

    let verb = if dry { "would delete" } else { "deleted" };
    ctx.ui.info(&format!(
        "{verb} {} ({}) and {} ({}); {}; kept {}",
        crate::units::count(totals.backups, "backup"),
        ui::size(totals.bytes),
        crate::units::count(totals.orphans, "orphan object"),
        ui::size(totals.orphan_bytes),
        crate::units::count(totals.local, "local leftover"),
        kept_n
    ));
    if !dry {
        let report = json!({
            "schema": "bkp.report/1.0",
            "operation": "cleanup",
            "id": run_id,
            "started_at": started_at.format(&time::format_description::well_known::Rfc3339)?,
            "finished_at": OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
            "host": hostname(),
            "bkp_version": env!("CARGO_PKG_VERSION"),
            "deleted": deleted,
            "bytes_deleted": totals.bytes,
            "orphans_removed": orphans.iter().map(|o| json!({"key": o.key, "bytes": o.size})).collect::<Vec<_>>(),
            "unfinished_uploads_discarded": unfinished_json(&unfinished),
            "kept": kept_n,
            "kept_by_object_lock": locked
                .iter()
                .map(|(id, until)| json!({"id": id, "until": rfc3339(*until)}))
                .collect::<Vec<_>>(),
        });
        let key = write_report(store, trust.keys(), "cleanup", run_id, started_at, &report)?;
        ctx.ui.detail(&format!("report: {key}"));
        metrics(ctx, per_kind, started_at, &remaining, &finished);
    }
    Ok(())
}

/// The tombstone of backup `m`, deleted by a run planned at `planned_at`,
/// freeing `bytes`.
fn tombstone_of(m: Manifest, bytes: u64, planned_at: OffsetDateTime) -> Tombstone {
    Tombstone {
        schema: tombstone::SCHEMA.into(),
        manifest: m,
        bytes,
        planned_at,
    }
}

/// What step 3 reads of a backup this run deleted: its keys and sizes, the
/// fields of its ledger record, and for a chunked backup everything (its
/// chunk list is checked against its files). The facts of its source and
/// the digests of its objects and files are dropped: step 3 holds years of
/// deletions beside the second listing, and reads neither.
fn for_finishing(mut m: Manifest) -> Manifest {
    if m.chunks.is_some() {
        return m;
    }
    m.source = Default::default();
    m.files = Vec::new();
    for o in &mut m.objects {
        o.sha256 = String::new();
        o.content_sha256 = String::new();
    }
    m
}

/// The tombstones of the backups `unlisted` names (kind, id and bytes
/// freed, in the order they were unlisted), made of their manifests in
/// `listed`, which are moved, not copied (years of deletions held twice was
/// most of a first cleanup's memory), and kept only as far as step 3
/// reads them ([`for_finishing`]); the others are dropped. By kind and id:
/// an id planted under a second kind is not the backup that was unlisted,
/// and is not finished.
fn tombstones_of(
    listed: Vec<Manifest>,
    unlisted: &[(Kind, BackupId, u64)],
    planned_at: OffsetDateTime,
) -> Vec<Tombstone> {
    let at: BTreeMap<(Kind, BackupId), (usize, u64)> = unlisted
        .iter()
        .enumerate()
        .map(|(i, (kind, id, bytes))| ((*kind, *id), (i, *bytes)))
        .collect();
    let mut found: Vec<(usize, Tombstone)> = listed
        .into_iter()
        .filter_map(|m| {
            let (i, bytes) = *at.get(&(m.kind, m.id))?;
            Some((i, tombstone_of(for_finishing(m), bytes, planned_at)))
        })
        .collect();
    // Finished (and recorded in the ledger) in the order the run deleted.
    found.sort_unstable_by_key(|(i, _)| *i);
    found.into_iter().map(|(_, t)| t).collect()
}

/// Says which deletions an earlier run left to finish (`pending`).
fn announce_pending(ctx: &Ctx, store: &dyn Store, pending: &[Tombstone], dry: bool) -> Result<()> {
    for t in pending {
        let key = tombstone::key(t.manifest.kind, t.manifest.id);
        let what = match store.retained_until(&key)? {
            Some(until) => format!(
                "the deletion of {} {} (its tombstone is kept until {} by Object Lock)",
                t.manifest.kind.as_str(),
                t.manifest.id,
                rfc3339(until)
            ),
            None => format!(
                "the interrupted deletion of {} {}",
                t.manifest.kind.as_str(),
                t.manifest.id
            ),
        };
        ctx.ui.info(&format!(
            "{} {what}",
            if dry { "would finish" } else { "finishing" }
        ));
    }
    Ok(())
}

/// What the store holds after this run, per kind and class, into
/// `bkp_stored.prom` (a copy's: `bkp_stored_{name}.prom`).
/// A kind of `kinds` (those the store held before) with nothing left gets
/// 0, not a series that vanishes.
fn stored_metrics<'a>(ctx: &Ctx, kept: impl Iterator<Item = &'a Manifest>, kinds: &BTreeSet<Kind>) {
    let Some(dir) = &ctx.plan.metrics_dir else {
        return;
    };
    let (class, default) = super::store_classes(&ctx.plan.store);
    let mut usage = crate::manifest::usage::of(kept, class, default);
    for k in kinds {
        usage.kinds.entry(k.as_str()).or_insert(0);
    }
    match crate::metrics::write_stored(dir, ctx.plan.copy.as_deref(), &usage) {
        Ok(path) => ctx.ui.detail(&format!("metrics written to {}", path.display())),
        Err(e) => ctx.ui.warn(&format!(
            "{e:#}; the cleanup itself is not affected (metrics.dir or BKP_METRICS_DIR names the directory)"
        )),
    }
}

/// The run's metrics per kind (every kind the store held before): bytes
/// deleted (the reversals went to the ledger), the primary's only (a copy's
/// would take their names); and what the store holds now, the primary or the
/// copy (`remaining`, as listed after the deletions, but the backups whose
/// deletion this run finished: their manifests may have been listed).
fn metrics(
    ctx: &Ctx,
    per_kind: BTreeMap<Kind, u64>,
    started_at: OffsetDateTime,
    remaining: &[Manifest],
    finished: &BTreeSet<(Kind, BackupId)>,
) {
    let kinds: BTreeSet<Kind> = per_kind.keys().copied().collect();
    let kept = remaining
        .iter()
        .filter(|m| !finished.contains(&(m.kind, m.id)));
    stored_metrics(ctx, kept, &kinds);
    if ctx.plan.primary.is_some() {
        return;
    }
    for (kind, bytes) in per_kind {
        let finished_at = OffsetDateTime::now_utc();
        write_metrics(
            ctx,
            &RunMetrics {
                kind,
                operation: "cleanup".into(),
                scope: manifest::Scope::Full,
                success: true,
                finished_at,
                duration: (finished_at - started_at).try_into().unwrap_or_default(),
                bytes,
                objects: None,
            },
        );
    }
}

/// Prints the plan as a table; with `--json`, returns it as the document that
/// is printed once the run has also found the orphans and unfinished uploads.
fn show_plan(
    ctx: &Ctx,
    decisions: &[Decision<BackupId>],
    by_id: &BTreeMap<BackupId, &Manifest>,
    dry: bool,
) -> Result<Option<serde_json::Value>> {
    if ctx.ui.json {
        let rows: Vec<_> = decisions
            .iter()
            .map(|d| {
                let m = by_id[&d.id];
                json!({
                    "id": m.id,
                    "kind": m.kind,
                    "scope": m.scope,
                    "operation": m.operation,
                    "started_at": m.started_at.format(&time::format_description::well_known::Rfc3339).ok(),
                    "bytes": m.stored_bytes(),
                    "action": if d.keep { "keep" } else { "delete" },
                    "reasons": d.reasons,
                })
            })
            .collect();
        return Ok(Some(
            json!({ "schema": "bkp.cleanup/1", "dry_run": dry, "backups": rows }),
        ));
    }
    if decisions.is_empty() {
        ctx.ui.info("no backups in the store");
        return Ok(None);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    ui::out(&format!(
        "{:<6}  {:<36}  {:<11}  {:<11}  {:<20}  {:>10}  REASON",
        "ACTION", "ID", "KIND", "SCOPE", "STARTED (UTC)", "SIZE"
    ))?;
    for d in decisions {
        let m = by_id[&d.id];
        ui::out(&format!(
            "{:<6}  {:<36}  {:<11}  {:<11}  {:<20}  {:>10}  {}",
            if d.keep { "keep" } else { "delete" },
            d.id,
            m.kind.as_str(),
            m.scope.as_str(),
            m.started_at.format(&fmt).unwrap_or_default(),
            ui::size(m.stored_bytes()),
            d.reasons.join("; "),
        ))?;
    }
    Ok(None)
}

fn unfinished_json(unfinished: &[crate::store::Unfinished]) -> serde_json::Value {
    json!(unfinished
        .iter()
        .map(|u| json!({
            "key": u.key,
            "started_at": u.started.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        }))
        .collect::<Vec<_>>())
}

/// Finishes one deletion: its manifest gone, the objects it names that no
/// remaining manifest names, the reverse ledger transfer, the tombstone (when
/// one was `written`: a dry run writes none of its own). Each step is
/// idempotent.
fn finish(
    ctx: &Ctx,
    store: &dyn Store,
    lists: &Lists,
    t: &Tombstone,
    named: &BTreeSet<String>,
    dry: bool,
    written: bool,
) -> Result<()> {
    let m = &t.manifest;
    store.delete(&m.key())?;
    // Its chunks before its chunk list: a run stopped in between leaves chunks
    // that the list still names for the next run to finish.
    let mut doomed: Vec<String> = referenced(ctx, lists, false, [m])?
        .into_iter()
        .filter(|k| !named.contains(k))
        .collect();
    doomed.sort_by_key(|k| m.chunks.as_ref().is_some_and(|c| c.list.key == *k));
    for key in &doomed {
        if let Err(e) = store.delete(key) {
            // Still retained by Object Lock: it stays, and once no tombstone names
            // it either, a later run removes it as an orphan.
            let Some(r) = e.downcast_ref::<Retained>() else {
                return Err(e.context(format!("failed to delete {key} of backup {}", m.id)));
            };
            ctx.ui.info(&format!("{r}: a later cleanup removes it"));
        }
    }
    // A copy's backups were recorded in the ledger as the primary's (the
    // store account is the primary's): deleting one from a copy takes
    // nothing back.
    let ledger = ctx
        .plan
        .ledger
        .as_ref()
        .filter(|_| ctx.plan.primary.is_none() && !dry);
    // The backup's own transfer goes with its reversal, as a late record: a
    // run killed before recording it must not leave a reversal of nothing.
    // Settled by `exists`, which it finds but after such a crash.
    if let (Some(cfg), Some(op)) = (ledger, backup_operation(&m.operation)) {
        if let Err(e) = ledger::spool_late(cfg, &RunRecord::of_backup(m, op).to_ledger(store)) {
            ctx.ui.warn(&format!("{e:#}"));
        }
    }
    let record = RunRecord {
        started_at: t.planned_at,
        bytes: t.bytes,
        ..RunRecord::of_backup(m, ledger::Operation::Cleanup)
    };
    if ledger.is_some() {
        if let Some(note) = send_record(ctx, &record.to_ledger(store))? {
            ctx.ui.detail(&note.to_string());
        }
    }
    if !written {
        return Ok(());
    }
    let key = tombstone::key(m.kind, m.id);
    if let Err(e) = store.delete(&key) {
        // Tombstones are retained like every object. Finishing again is harmless
        // (every step is idempotent): each run does until the retention passes.
        let Some(r) = e.downcast_ref::<Retained>() else {
            return Err(e);
        };
        ctx.ui.info(&format!(
            "{} {} {}; {r}, and a later cleanup removes it",
            if dry { "would delete" } else { "deleted" },
            m.kind.as_str(),
            m.id
        ));
    }
    Ok(())
}

/// Reads every manifest the plan deletes again from its own key and checks
/// it as any manifest read is checked ([`manifest::catalog::reread`]),
/// before the first tombstone: the catalog chose them, and a deletion acts on
/// what the store holds, never on a cached copy alone. One that changed or
/// cannot be read stops the run, with nothing deleted (the catalog is
/// corrected: the next run plans from the manifests as they are). Not on a
/// dry run, which deletes nothing: its corrections would stay in its memory.
fn reverify(
    store: &dyn Store,
    trust: &seal::Trust,
    decisions: &[Decision<BackupId>],
    by_id: &BTreeMap<BackupId, &Manifest>,
    dry: bool,
) -> Result<()> {
    if dry {
        return Ok(());
    }
    for d in decisions.iter().filter(|d| !d.keep) {
        manifest::catalog::reread(store, trust, by_id[&d.id]).context("cleanup deleted nothing")?;
    }
    Ok(())
}

/// One cleanup per store at a time: a copy's (`--store NAME`) runs beside
/// the primary's.
fn lock_name(plan: &crate::config::Plan) -> String {
    match &plan.copy {
        Some(name) => format!("cleanup-copy-{name}"),
        None => "cleanup".to_string(),
    }
}

/// Retention's plan for `selected`, with what Object Lock still retains
/// kept (and, by the same rules, everything its chain needs): a retained
/// manifest cannot be deleted, so its backup (and what it builds on) must
/// not be unlisted. Asked before any tombstone is written.
fn decide(
    ctx: &Ctx,
    store: &dyn Store,
    selected: &[Manifest],
    by_id: &BTreeMap<BackupId, &Manifest>,
    now: OffsetDateTime,
) -> Result<retention::Held<BackupId>> {
    let (decisions, locked) = retention::plan_holding(
        retention::candidates(selected),
        &ctx.plan.retention.policies,
        now,
        |id| store.retained_until(&by_id[id].key()),
    )?;
    for (id, until) in &locked {
        let m = by_id[id];
        ctx.ui.info(&format!(
            "kept {} {} until {} by Object Lock: a later cleanup deletes it",
            m.kind.as_str(),
            m.id,
            rfc3339(*until)
        ));
    }
    Ok((decisions, locked))
}

/// Objects no manifest names (`named`), older
/// than `cutoff`, in the kinds' folders and `check/` (probes `bkp check`
/// could not delete): removed (or, `dry`, shown), except those Object Lock
/// still retains and any folder holding another store. What it removed.
fn sweep_orphans(
    ctx: &Ctx,
    store: &dyn Store,
    named: &BTreeSet<String>,
    cutoff: OffsetDateTime,
    dry: bool,
    totals: &mut Totals,
) -> Result<Vec<crate::store::ObjectInfo>> {
    let mut orphans = Vec::new();
    // `check/`: probes `bkp check` could not delete (killed, or retained by
    // Object Lock).
    let prefixes = Kind::ALL.iter().map(|k| format!("{}/", k.as_str()));
    for prefix in prefixes.chain(["check/".to_string()]) {
        let listed = store.list(&prefix)?;
        let nested = nested_stores(listed.iter().map(|o| o.key.as_str()));
        for root in &nested {
            ctx.ui.warn(&format!(
                "{root} in {} holds another bkp store (a {} or a manifests/ folder): cleanup removes nothing in it. Give that store a prefix or path outside this store's folders",
                store.identity(),
                manifest::marker::KEY
            ));
        }
        for o in listed {
            if nested.iter().any(|root| o.key.starts_with(root.as_str())) {
                continue;
            }
            // Old by its own time and by the start of the run that wrote it
            // (keys carry the run's UUIDv7): a long run's early uploads stay.
            let old = o.modified.is_some_and(|t| t < cutoff)
                && run_started(&o.key).is_none_or(|t| t < cutoff);
            if old && !named.contains(&o.key) {
                orphans.push(o);
            }
        }
    }
    let mut orphans_locked = Vec::new();
    for o in std::mem::take(&mut orphans) {
        match store.retained_until(&o.key)? {
            Some(until) => orphans_locked.push((o, until)),
            None => orphans.push(o),
        }
    }
    for (o, until) in &orphans_locked {
        ctx.ui.info(&format!(
            "kept {} ({}) until {} by Object Lock: no manifest names it, a later cleanup removes it",
            o.key,
            ui::size(o.size),
            rfc3339(*until)
        ));
    }
    let mut removed = Vec::new();
    for o in orphans {
        if let Err(e) = store.delete(&o.key) {
            let Some(r) = e.downcast_ref::<Retained>() else {
                return Err(e);
            };
            ctx.ui.info(&format!("{r}: a later cleanup removes it"));
            continue;
        }
        ctx.ui.info(&format!(
            "{} {} ({}): left by an interrupted run, no manifest names it",
            if dry { "would remove" } else { "removed" },
            o.key,
            ui::size(o.size)
        ));
        totals.orphans += 1;
        totals.orphan_bytes += o.size;
        removed.push(o);
    }
    Ok(removed)
}

/// The start of the run that wrote `key`: the time in the first UUIDv7 the key
/// holds (every data object's key names its backup id).
fn run_started(key: &str) -> Option<OffsetDateTime> {
    key.split(['/', '-', '.'])
        .collect::<Vec<_>>()
        .windows(5)
        .find_map(|w| w.join("-").parse::<BackupId>().ok())
        .and_then(|id| id.timestamp())
}

/// The folders among `keys` that hold another store, each ending in `/`: a
/// folder with a store marker in it, or with a `manifests/` folder holding
/// manifests (`manifests/{kind}/{id}.json`). The orphan sweep never enters
/// them.
fn nested_stores<'a>(keys: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut roots: BTreeSet<String> = BTreeSet::new();
    for key in keys {
        let parts: Vec<&str> = key.split('/').collect();
        let last = parts.len() - 1;
        let at = parts.iter().enumerate().position(|(i, p)| {
            (i == last && *p == manifest::marker::KEY)
                || (i + 2 == last
                    && *p == manifest::MANIFEST_DIR
                    && Kind::ALL.iter().any(|k| k.as_str() == parts[i + 1])
                    && parts[last]
                        .strip_suffix(".json")
                        .is_some_and(|id| id.parse::<BackupId>().is_ok()))
        });
        if let Some(at) = at.filter(|&at| at > 0) {
            roots.insert(parts[..at].iter().map(|p| format!("{p}/")).collect());
        }
    }
    // A store inside a nested one is left alone with it.
    let all = roots.clone();
    roots.retain(|r| !all.iter().any(|o| o != r && r.starts_with(o.as_str())));
    roots
}

/// Deletes nothing while a manifest cannot be read: what it needs is unknown.
/// Junk (a name no backup of bkp's has, named where it was read) is no
/// backup, and needs nothing.
fn refuse_unreadable(unreadable: &[manifest::Unreadable]) -> Result<()> {
    let all: Vec<&manifest::Unreadable> = unreadable.iter().filter(|u| !u.is_junk()).collect();
    if all.is_empty() {
        return Ok(());
    }
    // With the store's code when it did not answer, else the data-error code.
    Err(manifest::unreadable_error(
        "cleanup deletes nothing until it sees the whole store",
        &all,
    ))
}

fn kind_and_id(t: &Tombstone) -> (Kind, BackupId) {
    (t.manifest.kind, t.manifest.id)
}

/// Refuses to plan while one backup id is listed under two kinds. Every run
/// of bkp takes an id of its own, so one of the two manifests was written
/// by something else that this configuration trusts (a stolen host's
/// signer, or anyone, in a store without keys); and retention decides by id,
/// so planning on both could delete the objects of the genuine backup in
/// the name of the other.
fn refuse_shared_ids(store: &dyn Store, all: &[Manifest]) -> Result<()> {
    let shared = manifest::shared_ids(all);
    let Some((id, keys)) = shared.first() else {
        return Ok(());
    };
    let more = match shared.len() - 1 {
        0 => String::new(),
        n => format!(" ({n} more id{} like it)", if n == 1 { "" } else { "s" }),
    };
    Err(coded(
        Code::Integrity,
        format!(
            "cleanup deletes nothing while one backup id names two backups{more}: {}",
            manifest::shared_id_error(*id, keys, store)
        ),
    ))
}

/// Removes what crashed runs left on local disk (the work directory, and
/// partial writes in a local store); returns how many.
fn local_leftovers(ctx: &Ctx, grace: std::time::Duration, dry: bool) -> u64 {
    let mut n = super::sweep_work_dir(ctx, dry);
    let StorePlan::Local(root) = &ctx.plan.store else {
        return n;
    };
    let partial = root.join(crate::store::local::PARTIAL_DIR);
    for e in std::fs::read_dir(&partial).into_iter().flatten().flatten() {
        let p = e.path();
        let old = p
            .symlink_metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > grace);
        if !old {
            continue;
        }
        n += 1;
        if dry {
            ctx.ui.info(&format!(
                "would remove {} left by an interrupted run",
                p.display()
            ));
        } else if let Err(err) = std::fs::remove_file(&p) {
            ctx.ui.warn(&format!(
                "cannot remove {} left by an interrupted run: {err}",
                p.display()
            ));
        } else {
            ctx.ui.info(&format!(
                "removed {} left by an interrupted run",
                p.display()
            ));
        }
    }
    n
}

/// Deletes the archived WAL of each system that lies before the first segment
/// of its oldest kept base backup (timeline history files stay: they are tiny
/// and recovery reads them all). A system with no kept base backup keeps all
/// of its WAL.
fn trim_wal(ctx: &Ctx, store: &dyn Store, kept: &[Manifest], dry: bool) -> Result<()> {
    let postgres: Vec<Manifest> = kept
        .iter()
        .filter(|m| m.kind == Kind::Postgres)
        .cloned()
        .collect();
    let needed = match crate::manifest::postgres::wal_needed(&postgres) {
        Ok(needed) => needed,
        Err(id) => {
            ctx.ui.info(&format!(
                "no archived WAL is trimmed: kept base backup {id} names no PostgreSQL system, and may need any of it"
            ));
            return Ok(());
        }
    };
    for a in crate::manifest::wal::archive::archives(store, &postgres, false)? {
        if let Some(crate::manifest::postgres::Needed::All(id)) = needed.get(&a.system) {
            ctx.ui.info(&format!(
                "no archived WAL of system {} is trimmed: kept base backup {id} records no WAL start bkp can read, and may need any of it",
                a.system
            ));
            continue;
        }
        let Some(from) = a.from.as_deref().and_then(manifest::wal::parse_name) else {
            continue;
        };
        let old: Vec<&manifest::wal::Stored> = a
            .objects
            .iter()
            .filter(|o| {
                o.wal.kind != manifest::wal::FileKind::History && o.wal.position < from.position
            })
            .collect();
        if old.is_empty() {
            continue;
        }
        let bytes: u64 = old.iter().map(|o| o.size).sum();
        let mut removed = 0u64;
        for o in &old {
            match store.delete(&o.key) {
                Ok(()) => removed += 1,
                Err(e) if e.downcast_ref::<Retained>().is_some() => {}
                Err(e) => return Err(e),
            }
        }
        ctx.ui.info(&format!(
            "{} {} archived WAL files ({}) of system {} older than its oldest kept base backup (which starts at {})",
            if dry { "would remove" } else { "removed" },
            removed,
            ui::size(bytes),
            a.system,
            a.from.as_deref().unwrap_or("?")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_finds_the_stores_nested_in_a_folder() {
        let keys = [
            "tigerbeetle/2026/11/20/tigerbeetle-snapshot-x.tar.zst.enc",
            "tigerbeetle/inner/bkp-store.json",
            "tigerbeetle/inner/tigerbeetle/2026/11/20/a.tar.zst.enc",
            "tigerbeetle/inner/deeper/bkp-store.json",
            "tigerbeetle/a/b/manifests/postgres/0199a1b2-0000-7000-8000-000000000000.json",
            "tigerbeetle/a/b/postgres/2026/11/20/x.tar.zst.enc",
            // Not a store: a folder called manifests among a backup's files,
            // a marker's name as a folder.
            "parquet/2026/11/20/id/manifests/t.parquet",
            "parquet/2026/11/20/id/manifests/2026/t.json",
            "parquet/2026/11/20/id/manifests/postgres/t.json",
            "parquet/2026/11/20/id/bkp-store.json/x",
        ];
        let got: Vec<String> = nested_stores(keys).into_iter().collect();
        assert_eq!(got, ["tigerbeetle/a/b/", "tigerbeetle/inner/"]);
        let whole = nested_stores(["postgres/bkp-store.json", "postgres/postgres/x"]);
        assert_eq!(whole.into_iter().collect::<Vec<_>>(), ["postgres/"]);
    }

    #[test]
    fn tombstones_follow_the_order_of_deletion_and_hold_only_what_was_deleted() {
        let at = time::macros::datetime!(2026-11-20 06:00 UTC);
        let mut listed: Vec<Manifest> = (0..5)
            .map(|i| {
                let mut m =
                    manifest::tests::sample(Kind::Tigerbeetle, at + time::Duration::hours(i));
                m.source
                    .insert("data_file", json!("/var/lib/tigerbeetle/0_0.tigerbeetle"));
                m.files = vec![manifest::FileEntry {
                    name: "0_0.tigerbeetle".into(),
                    size: 7,
                    sha256: "ab".repeat(32),
                }];
                m
            })
            .collect();
        // Backup 0 is chunked: its chunk list is checked against its files.
        manifest::tests::with_chunks(&mut listed[0]);
        // The id of backup 2 planted under another kind: not what was unlisted.
        let mut planted = listed[2].clone();
        planted.kind = Kind::Duckdb;
        listed.push(planted);
        let id = |i: usize| listed[i].id;
        // Newest first, as step 2 unlists; 1 and 3 are kept.
        let unlisted = [
            (Kind::Tigerbeetle, id(4), 40),
            (Kind::Tigerbeetle, id(2), 20),
            (Kind::Tigerbeetle, id(0), 1),
        ];
        let planned = at + time::Duration::days(1);
        let t = tombstones_of(listed.clone(), &unlisted, planned);
        let got: Vec<(Kind, BackupId, u64)> = t
            .iter()
            .map(|t| (t.manifest.kind, t.manifest.id, t.bytes))
            .collect();
        assert_eq!(got, unlisted);
        assert!(t
            .iter()
            .all(|t| t.planned_at == planned && t.schema == tombstone::SCHEMA));
        assert_eq!(t[1].manifest.started_at, listed[2].started_at);
        // A chunked backup is kept whole.
        let chunked = &t[2].manifest;
        assert_eq!(chunked.id, listed[0].id);
        assert_eq!(
            serde_json::to_value(chunked).unwrap(),
            serde_json::to_value(&listed[0]).unwrap()
        );
        for t in &t[..2] {
            let m = &listed[..5].iter().find(|m| m.id == t.manifest.id).unwrap();
            // What step 3 reads is kept: keys, sizes, the ledger record's fields.
            assert_eq!(t.manifest.needed_keys(), m.needed_keys());
            assert_eq!(t.manifest.stored_bytes(), m.stored_bytes());
            assert_eq!(t.manifest.key(), m.key());
            let (a, b) = (
                RunRecord::of_backup(&t.manifest, ledger::Operation::Cleanup),
                RunRecord::of_backup(m, ledger::Operation::Cleanup),
            );
            assert_eq!(
                (
                    a.id,
                    a.kind,
                    a.scope,
                    a.encrypted,
                    a.retention_days,
                    a.started_at,
                    a.bytes
                ),
                (
                    b.id,
                    b.kind,
                    b.scope,
                    b.encrypted,
                    b.retention_days,
                    b.started_at,
                    b.bytes
                )
            );
            assert_eq!(a.compression, b.compression);
            // What it does not read is not held.
            assert!(t.manifest.source.is_empty() && t.manifest.files.is_empty());
            assert!(t.manifest.objects.iter().all(|o| o.sha256.is_empty()));
            assert!(!m.source.is_empty() && !m.files.is_empty());
        }
    }

    #[test]
    fn a_key_names_the_start_of_its_run() {
        let at = time::macros::datetime!(2026-11-20 06:00 UTC);
        let id = BackupId::new_v7(at);
        for key in [
            format!("tigerbeetle/2026/11/20/tigerbeetle-snapshot-{id}.tar.zst.enc"),
            format!("parquet/2026/11/20/{id}/t/0.parquet"),
            format!("duckdb/full/2026/11/20/{id}/main.t/data.parquet.enc"),
        ] {
            assert_eq!(run_started(&key), Some(at), "{key}");
        }
        assert_eq!(
            run_started("tigerbeetle/2026/11/20/orphan.tar.zst.enc"),
            None
        );
        assert_eq!(run_started("parquet/2026-11-20/a-b-c-d-e.parquet"), None);
    }
}
