//! `bkp cleanup`: retention policy → plan → delete expired backups, chain-aware.
//!
//! The plan is [`retention::plan`], a pure function of the backups (each in
//! brief, see `book.rs`), the policy and the time, so `--dry-run` shows
//! exactly what a real run would do.
//!
//! Deleting backups keeps the store consistent at every moment, even when the
//! process is killed half-way:
//! 1. for each backup to delete, its manifest is read again from its own key
//!    and checked against the version the plan was made on (a batch of
//!    [`REREAD_BATCH`] at a time, before the batch's first tombstone), a
//!    tombstone `trash/{kind}/{id}.json` is written (create-only) holding
//!    that manifest and the bytes its ledger transfer credited, then the
//!    manifest is deleted: from then on the backup is not listed, not
//!    restorable, not planned again;
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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::SystemTime;

use crate::chunks::Lists;
use anyhow::{Context, Result};
use serde_json::json;
use time::OffsetDateTime;

use super::run::{
    backup_operation, hostname, put_report_with, send_record, write_metrics, RunRecord,
};
use super::{open_store, Ctx};
use crate::cli::CleanupArgs;
use crate::config::StorePlan;
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::ledger;
use crate::lock::RunLock;
use crate::manifest::seal;
use crate::manifest::tombstone::{self, read_tombstones, Tombstone};
use crate::manifest::usage::Tally;
use crate::manifest::{self, Kind, Manifest};
use crate::metrics::RunMetrics;
use crate::retention::{self, Decision};
use book::{key_of, Book, Remaining};
use spool::Spool;
use std::hash::BuildHasher;

mod book;
mod spool;

/// How many backups to delete are read again and checked at a time, before
/// the first of them is deleted: a bound on the manifests held whole.
const REREAD_BATCH: usize = 1024;
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

/// The bytes deleting backup `row` frees: its own objects, and the chunks
/// it names (`whole`, a chunked backup's manifest, from [`Book::chunked`]) that no backup kept
/// (`kept`) names and no earlier deletion of this run (`counted`) freed.
/// What the ledger's reverse transfer takes back, so that the store account
/// keeps equalling the bytes retained.
fn freed_bytes(
    ctx: &Ctx,
    lists: &Lists,
    row: &book::Row,
    whole: Option<&Manifest>,
    kept: &BTreeSet<String>,
    counted: &mut BTreeSet<String>,
) -> Result<u64> {
    let Some(m) = whole else {
        return Ok(row.stored_bytes);
    };
    // Sizes a manifest records: a planted one must not overflow them.
    let own = m.objects.iter().fold(0u64, |n, o| n.saturating_add(o.size));
    let list = m.chunks.as_ref().map_or(0, |c| c.list.size);
    let chunks = chunk_keys(ctx, lists, false, m)?
        .into_iter()
        .filter(|(k, _)| !kept.contains(k) && counted.insert(k.clone()))
        .fold(0u64, |n, (_, size)| n.saturating_add(size));
    Ok(own.saturating_add(list).saturating_add(chunks))
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

    // 1. Plan, on a complete picture of the store only, without the
    // backups whose deletion an earlier run left to finish.
    let pending = read_tombstones(store, &trust)?;
    let gone: BTreeSet<BackupId> = pending.iter().map(|t| t.manifest.id).collect();
    let mut book = Book::read(
        store,
        &trust,
        (args.kind.map(Kind::from), &gone),
        dry,
        &plan.work_dir,
    )?;
    refuse_unreadable(&book.unreadable).and_then(|()| refuse_shared_ids(store, &book.ids))?;
    announce_pending(ctx, store, &pending, dry)?;
    // Every kind present gets a metrics file; no id is needed after.
    let per_kind: BTreeMap<Kind, u64> = std::mem::take(&mut book.ids)
        .into_iter()
        .filter(|(id, _)| !gone.contains(id))
        .map(|(_, k)| (k, 0))
        .collect();
    let (decisions, locked) = decide(ctx, store, &mut book, &gone, started_at)?;
    let json_plan = show_plan(ctx, &decisions, &book)?;
    // In the order of the plan, with why.
    let doomed: Vec<(BackupId, &str)> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| (d.id, d.deleted_for()))
        .collect();
    let kept_n = decisions.len() - doomed.len();
    drop(decisions);

    // 2. Tombstone and unlist, newest first (an incremental goes before the
    // backup it builds on, so no listed backup ever lacks its base).
    let pending_n = pending.len();
    let mut u = Unlist {
        finishing: pending
            .into_iter()
            .map(|t| Finishing::Whole(Box::new(t)))
            .collect(),
        spooled: Spool::new(&plan.work_dir),
        spooled_ids: Vec::new(),
        deleted: Vec::new(),
        per_kind,
        dry_named: Vec::new(),
        dry,
        planned_at: started_at,
        stopped: None,
    };
    // Chunk lists are read before anything is deleted, once each.
    let lists = Lists::new(store);
    u.unlist(
        ctx,
        (store, &trust),
        &lists,
        &book,
        (&doomed, &gone),
        &mut totals,
    )?;
    let Unlist {
        finishing,
        spooled,
        spooled_ids,
        deleted,
        per_kind,
        dry_named,
        stopped,
        ..
    } = u;

    // 3. Delete the objects no remaining manifest names, then record and forget
    // each deletion. The listing is fresh: a manifest written meanwhile counts.
    // What was listed before is not held beside it.
    let hasher = book.key_hasher();
    drop((doomed, book));
    let dry_named =
        |k: &str| !dry_named.is_empty() && dry_named.binary_search(&hasher.hash_one(k)).is_ok();
    let mut finished: Vec<(Kind, BackupId)> =
        finishing.iter().map(Finishing::kind_and_id).collect();
    finished.extend(spooled_ids);
    finished.sort_unstable();
    // Nothing reads a dry run's catalog after this.
    if let Some(o) = &overlay {
        o.last_reads();
    }
    let remaining = Remaining::read(store, &trust, &finished)?;
    drop(finished);
    refuse_unreadable(&remaining.unreadable)?;
    let mut named = remaining.named;
    named.extend(referenced(ctx, &lists, true, &remaining.chunked)?);
    let finishing = (finishing, pending_n, spooled);
    finish_all(ctx, store, (&lists, &named), finishing, started_at, dry)?;

    // 4. Orphans: objects no manifest names, older than the grace period.
    let cutoff = started_at
        .checked_sub(plan.retention.grace)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let orphans = sweep_orphans(ctx, store, &named, &dry_named, cutoff, dry, &mut totals)?;

    // 4b. WAL older than every kept base backup of its system: no recovery can
    // start before its oldest base backup.
    if args.kind.is_none_or(|k| Kind::from(k) == Kind::Postgres) {
        trim_wal(ctx, store, &remaining.postgres, dry)?;
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

    // A plan that fails to print does not keep the report and metrics of
    // what was deleted from being written: its error is the run's after.
    let printed = json_plan.map_or(Ok(()), |rows| print_plan(rows, dry, &orphans, &unfinished));

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
            "bytes_deleted": totals.bytes,
            "orphans_removed": orphans.iter().map(|o| json!({"key": o.key, "bytes": o.size})).collect::<Vec<_>>(),
            "unfinished_uploads_discarded": unfinished_json(&unfinished),
            "kept": kept_n,
            // Why it stopped before deleting all it planned (the rest is
            // planned again by the next run).
            "stopped": stopped.as_ref().map(|e| format!("{e:#}")),
            "kept_by_object_lock": locked
                .iter()
                .map(|(id, until)| json!({"id": id, "until": rfc3339(*until)}))
                .collect::<Vec<_>>(),
        });
        // Its rows (years of deletions, on a store cleaned for the first
        // time) are turned into JSON one at a time, as they are stored.
        let rows = Some(("deleted", &deleted[..]));
        let key = put_report_with(store, "cleanup", (run_id, started_at), &mut |w| {
            seal::write_with_rows(&report, rows, trust.keys(), w)
        })?;
        ctx.ui.detail(&format!("report: {key}"));
        metrics(ctx, per_kind, started_at, remaining.tally);
    }
    match stopped {
        Some(e) => Err(e),
        None => printed,
    }
}

/// What step 2 leaves for the rest of the run.
struct Unlist {
    /// The deletions step 3 finishes, in order: an earlier run's, then this
    /// run's held whole, in the order it unlisted them.
    finishing: Vec<Finishing>,
    /// This run's other deletions (most of a first cleanup of years), in
    /// the order it unlisted them: step 3 finishes them after those above.
    spooled: Spool<Gone>,
    /// Which backups `spooled` holds.
    spooled_ids: Vec<(Kind, BackupId)>,
    /// The report's rows.
    deleted: Vec<Deleted>,
    /// Bytes deleted per kind, for the metrics.
    per_kind: BTreeMap<Kind, u64>,
    /// A dry run's deletions, by the hashes of the keys they name (sorted
    /// once step 2 is done): what a real run's would remove is not left
    /// over.
    dry_named: Vec<u64>,
    dry: bool,
    /// When the run that deletes them planned.
    planned_at: OffsetDateTime,
    /// Why step 2 stopped before its end, once it had deleted some.
    stopped: Option<anyhow::Error>,
}

impl Unlist {
    /// Tombstones and unlists the backups `doomed` (in order, with why),
    /// those an earlier run left to finish being `gone`.
    fn unlist(
        &mut self,
        ctx: &Ctx,
        (store, trust): (&dyn Store, &seal::Trust),
        lists: &Lists,
        book: &Book,
        (doomed, gone): (&[(BackupId, &str)], &BTreeSet<BackupId>),
        totals: &mut Totals,
    ) -> Result<()> {
        let (dry, started_at) = (self.dry, self.planned_at);
        let kept = {
            let doomed: HashSet<BackupId> = doomed.iter().map(|(id, _)| *id).collect();
            let kept = book
                .chunked
                .iter()
                .filter(|((_, id), _)| !gone.contains(id) && !doomed.contains(id));
            referenced(ctx, lists, true, kept.map(|(_, m)| m))?
        };
        let mut counted = BTreeSet::new();
        // Each backup to delete is read again from its own key and checked
        // against the version the plan was made on, a batch at a time, before
        // the batch's first tombstone: the catalog chose them, and a deletion
        // acts on what the store holds, never on a cached copy alone. One that
        // changed or cannot be read stops the run there (the catalog is
        // corrected: the next run plans from the manifests as they are). Not on
        // a dry run, which deletes nothing: its corrections would stay in its
        // memory.
        for batch in doomed.chunks(REREAD_BATCH) {
            let read = match dry {
                true => Ok(Vec::new()),
                false => batch
                    .iter()
                    .map(|(id, _)| book.reread(store, trust, *id))
                    .collect::<Result<Vec<Manifest>>>(),
            };
            let fresh = match read {
                Ok(fresh) => fresh,
                Err(e) if totals.backups == 0 => return Err(e.context("cleanup deleted nothing")),
                // What was unlisted is finished and reported; then the run
                // stops with this error.
                Err(e) => {
                    let n = crate::units::count(totals.backups, "backup");
                    self.stopped = Some(e.context(format!("cleanup stopped after deleting {n}")));
                    break;
                }
            };
            let mut fresh = fresh.into_iter();
            for (id, why) in batch {
                let row = book.get(id)?.context("a planned backup has no row")?;
                let whole = book.chunked.get(&(row.kind, *id));
                let bytes = freed_bytes(ctx, lists, &row, whole, &kept, &mut counted)?;
                totals.backups += 1;
                totals.bytes = totals.bytes.saturating_add(bytes);
                let key = key_of(&row, *id);
                if let Some(m) = fresh.next() {
                    let tombstone = tombstone::key(m.kind, m.id);
                    let t = tombstone_of(m, bytes, started_at);
                    if store.head(&tombstone)?.is_none() {
                        let sealed = seal::encode(&t, trust.keys())?;
                        store
                            .put_new(&tombstone, &sealed, &Vec::new())
                            .with_context(|| {
                                format!(
                                    "failed to write tombstone {tombstone} before deleting {id}"
                                )
                            })?;
                    }
                    match Finishing::of(t.manifest, bytes, started_at) {
                        Finishing::Brief(g) => {
                            // Its tombstone is stored: the next run finishes
                            // it, and those before it.
                            self.spooled.push(&g).with_context(|| {
                                format!("cleanup stopped before deleting {id}; the next cleanup finishes the deletions it began")
                            })?;
                            self.spooled_ids.push((g.record.kind, g.record.id));
                        }
                        whole => self.finishing.push(whole),
                    }
                } else if let Some(m) = whole {
                    // A dry run finishes a chunked deletion as a real run does:
                    // its chunk lists say what it names.
                    self.finishing.push(Finishing::Whole(Box::new(tombstone_of(
                        m.clone(),
                        bytes,
                        started_at,
                    ))));
                } else {
                    self.dry_named.extend(&row.keys);
                }
                store.delete(&key)?;
                crate::failpoint::hit("cleanup-after-manifest");
                if !dry {
                    ctx.ui.info(&format!(
                        "deleted {} {} {id} ({}, {why})",
                        row.kind.as_str(),
                        row.scope.as_str(),
                        ui::size(bytes),
                    ));
                }
                self.deleted.push(Deleted {
                    id: *id,
                    kind: row.kind,
                    scope: row.scope,
                    bytes,
                });
                let of_kind = self.per_kind.entry(row.kind).or_default();
                *of_kind = of_kind.saturating_add(bytes);
            }
        }
        self.dry_named.sort_unstable();
        self.dry_named.dedup();
        Ok(())
    }
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

/// What step 3 holds of a deletion: a tombstone an earlier run left, or a
/// chunked backup this run deleted (its chunk list says what it names),
/// whole; any other backup this run deleted, in brief. Step 3 holds years of
/// deletions beside the second listing.
enum Finishing {
    Whole(Box<Tombstone>),
    Brief(Gone),
}

/// A backup this run deleted, as step 3 finishes it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Gone {
    /// Its ledger record as a stored backup ([`RunRecord::of_backup`]).
    record: RunRecord,
    /// The operation that made it, where the ledger records one.
    made_by: Option<ledger::Operation>,
    /// What it names (`needed_keys`), one per line: a key has no control
    /// characters ([`manifest::is_data_key`]), and one string is one
    /// allocation.
    keys: Box<str>,
    /// What deleting it frees.
    bytes: u64,
}

impl Finishing {
    /// The deletion of backup `m`, freeing `bytes`, by a run planned at
    /// `planned_at`.
    fn of(m: Manifest, bytes: u64, planned_at: OffsetDateTime) -> Finishing {
        let keys = m.needed_keys();
        // A chunked backup's chunk list names more; a key with a line break
        // is no key of a manifest that was read (checked as it was), but
        // would not be told apart from two.
        if m.chunks.is_some() || keys.iter().any(|k| k.contains('\n')) {
            return Finishing::Whole(Box::new(tombstone_of(m, bytes, planned_at)));
        }
        Finishing::Brief(Gone {
            record: RunRecord::of_backup(&m, ledger::Operation::Cleanup),
            made_by: backup_operation(&m.operation),
            keys: keys.join("\n").into_boxed_str(),
            bytes,
        })
    }

    fn kind_and_id(&self) -> (Kind, BackupId) {
        match self {
            Finishing::Whole(t) => (t.manifest.kind, t.manifest.id),
            Finishing::Brief(g) => (g.record.kind, g.record.id),
        }
    }

    /// The keys it names that no remaining backup names (`named`), its
    /// chunks before its chunk list: a run stopped in between leaves chunks
    /// that the list still names for the next run to finish.
    fn doomed(&self, ctx: &Ctx, lists: &Lists, named: &BTreeSet<String>) -> Result<Vec<String>> {
        let (mut keys, list): (Vec<String>, Option<&str>) = match self {
            Finishing::Whole(t) => {
                let m = &t.manifest;
                let keys = referenced(ctx, lists, false, [m])?.into_iter().collect();
                (keys, m.chunks.as_ref().map(|c| c.list.key.as_str()))
            }
            Finishing::Brief(g) => {
                let keys = g.keys.split('\n').filter(|k| !k.is_empty());
                (keys.map(str::to_string).collect(), None)
            }
        };
        keys.retain(|k| !named.contains(k));
        keys.sort_by_key(|k| list == Some(k.as_str()));
        Ok(keys)
    }

    /// The backup's own transfer (where the ledger records its operation),
    /// and the reversal of it that its deletion records: planned when its
    /// tombstone says, or (this run's, in brief) at `now`.
    fn records(&self, now: OffsetDateTime) -> (Option<RunRecord>, RunRecord) {
        let (record, made_by, bytes, planned_at) = match self {
            Finishing::Whole(t) => (
                RunRecord::of_backup(&t.manifest, ledger::Operation::Cleanup),
                backup_operation(&t.manifest.operation),
                t.bytes,
                t.planned_at,
            ),
            Finishing::Brief(g) => (g.record.clone(), g.made_by, g.bytes, now),
        };
        let own = made_by.map(|operation| RunRecord {
            operation,
            ..record.clone()
        });
        let reversal = RunRecord {
            started_at: planned_at,
            bytes,
            ..record
        };
        (own, reversal)
    }
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
fn stored_metrics(ctx: &Ctx, kept: Tally, kinds: &BTreeSet<Kind>) {
    let Some(dir) = &ctx.plan.metrics_dir else {
        return;
    };
    let (class, default) = super::store_classes(&ctx.plan.store);
    let mut usage = kept.usage(class, default);
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
/// deletion this run finished: see [`Remaining::tally`]).
fn metrics(ctx: &Ctx, per_kind: BTreeMap<Kind, u64>, started_at: OffsetDateTime, remaining: Tally) {
    let kinds: BTreeSet<Kind> = per_kind.keys().copied().collect();
    stored_metrics(ctx, remaining, &kinds);
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

/// Prints the plan as a table; with `--json`, spools its rows for the
/// document that is printed once the run has also found the orphans and
/// unfinished uploads ([`print_plan`]): a plan of years of history is some
/// hundreds of MiB as JSON values, and is never held.
fn show_plan(
    ctx: &Ctx,
    decisions: &[Decision<BackupId>],
    book: &Book,
) -> Result<Option<Spool<serde_json::Value>>> {
    let row = |id: &BackupId| book.get(id)?.context("a planned backup has no row");
    if ctx.ui.json {
        let mut rows = Spool::new(&ctx.plan.work_dir);
        for d in decisions {
            let m = row(&d.id)?;
            rows.push(&json!({
                "id": d.id,
                "kind": m.kind,
                "scope": m.scope,
                "operation": m.operation,
                "started_at": m.started_at.format(&time::format_description::well_known::Rfc3339).ok(),
                "bytes": m.stored_bytes,
                "action": if d.keep { "keep" } else { "delete" },
                "reasons": d.reasons,
            }))
            .context("the plan was not printed, and nothing was deleted")?;
        }
        return Ok(Some(rows));
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
        let m = row(&d.id)?;
        ui::out(&format!(
            "{:<6}  {:<36}  {:<11}  {:<11}  {:<20}  {:>10}  {}",
            if d.keep { "keep" } else { "delete" },
            d.id,
            m.kind.as_str(),
            m.scope.as_str(),
            m.started_at.format(&fmt).unwrap_or_default(),
            ui::size(m.stored_bytes),
            d.reasons.join("; "),
        ))?;
    }
    Ok(None)
}

/// Prints the plan `--json` asks for: its rows as [`show_plan`] spooled
/// them, one at a time, with the `orphans` and `unfinished` uploads found.
fn print_plan(
    rows: Spool<serde_json::Value>,
    dry: bool,
    orphans: &[crate::store::ObjectInfo],
    unfinished: &[crate::store::Unfinished],
) -> Result<()> {
    /// Members in the order a JSON object prints them (see [`ui::document_of`]).
    #[derive(serde::Serialize)]
    struct Plan {
        backups: Rows,
        dry_run: bool,
        orphans: serde_json::Value,
        schema: &'static str,
        unfinished_uploads: serde_json::Value,
        warnings: Vec<String>,
    }
    type Each = Box<dyn Iterator<Item = Result<serde_json::Value>>>;
    /// The rows, read back as they are written out.
    struct Rows(std::cell::RefCell<Option<Each>>);
    impl serde::Serialize for Rows {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeSeq};
            let rows = self.0.borrow_mut().take();
            let mut seq = s.serialize_seq(None)?;
            for row in rows.into_iter().flatten() {
                seq.serialize_element(&row.map_err(|e| S::Error::custom(format!("{e:#}")))?)?;
            }
            seq.end()
        }
    }
    let rows = Rows(std::cell::RefCell::new(Some(rows.read()?)));
    ui::document_of(|warnings| Plan {
        backups: rows,
        dry_run: dry,
        orphans: json!(orphans
            .iter()
            .map(|o| json!({"key": o.key, "bytes": o.size}))
            .collect::<Vec<_>>()),
        schema: "bkp.cleanup/1",
        unfinished_uploads: unfinished_json(unfinished),
        warnings,
    })
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

/// Finishes the deletions step 2 left (`finishing`: those held whole, of
/// which the first `pending_n` an earlier run left; then those `spooled`),
/// in order: see [`finish`].
fn finish_all(
    ctx: &Ctx,
    store: &dyn Store,
    named: (&Lists, &BTreeSet<String>),
    (finishing, pending_n, spooled): (Vec<Finishing>, usize, Spool<Gone>),
    planned_at: OffsetDateTime,
    dry: bool,
) -> Result<()> {
    for (i, f) in finishing.iter().enumerate() {
        // A dry run wrote none of its own tombstones (it writes nothing): it
        // deletes only those earlier runs left.
        let written = !dry || i < pending_n;
        finish(ctx, store, named, f, planned_at, dry, written)?;
    }
    drop(finishing);
    for g in spooled.read()? {
        finish(
            ctx,
            store,
            named,
            &Finishing::Brief(g?),
            planned_at,
            dry,
            true,
        )?;
    }
    Ok(())
}

/// Finishes one deletion: its manifest gone, the objects it names that no
/// remaining manifest names, the reverse ledger transfer, the tombstone (when
/// one was `written`: a dry run writes none of its own). This run's
/// deletions were planned at `planned_at`. Each step is idempotent.
fn finish(
    ctx: &Ctx,
    store: &dyn Store,
    (lists, named): (&Lists, &BTreeSet<String>),
    f: &Finishing,
    planned_at: OffsetDateTime,
    dry: bool,
    written: bool,
) -> Result<()> {
    let (kind, id) = f.kind_and_id();
    store.delete(&manifest::manifest_key(kind, id))?;
    for key in &f.doomed(ctx, lists, named)? {
        if let Err(e) = store.delete(key) {
            // Still retained by Object Lock: it stays, and once no tombstone names
            // it either, a later run removes it as an orphan.
            let Some(r) = e.downcast_ref::<Retained>() else {
                return Err(e.context(format!("failed to delete {key} of backup {id}")));
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
    let (own, reversal) = f.records(planned_at);
    // The backup's own transfer goes with its reversal, as a late record: a
    // run killed before recording it must not leave a reversal of nothing.
    // Settled by `exists`, which it finds but after such a crash.
    if let (Some(cfg), Some(own)) = (ledger, own) {
        if let Err(e) = ledger::spool_late(cfg, &own.to_ledger(store)) {
            ctx.ui.warn(&format!("{e:#}"));
        }
    }
    if ledger.is_some() {
        if let Some(note) = send_record(ctx, &reversal.to_ledger(store))? {
            ctx.ui.detail(&note.to_string());
        }
    }
    if !written {
        return Ok(());
    }
    let key = tombstone::key(kind, id);
    if let Err(e) = store.delete(&key) {
        // Tombstones are retained like every object. Finishing again is harmless
        // (every step is idempotent): each run does until the retention passes.
        let Some(r) = e.downcast_ref::<Retained>() else {
            return Err(e);
        };
        ctx.ui.info(&format!(
            "{} {} {id}; {r}, and a later cleanup removes it",
            if dry { "would delete" } else { "deleted" },
            kind.as_str(),
        ));
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

/// Retention's plan for the backups of `book` but those whose deletion an
/// earlier run left to finish (`gone`), with what Object Lock still retains
/// kept (and, by the same rules, everything its chain needs): a retained
/// manifest cannot be deleted, so its backup (and what it builds on) must
/// not be unlisted. Asked before any tombstone is written.
fn decide(
    ctx: &Ctx,
    store: &dyn Store,
    book: &mut Book,
    gone: &BTreeSet<BackupId>,
    now: OffsetDateTime,
) -> Result<retention::Held<BackupId>> {
    let mut candidates = std::mem::take(&mut book.candidates);
    candidates.retain(|c| !gone.contains(&c.id));
    let book = &*book;
    let (decisions, locked) = retention::plan_holding(
        candidates,
        &ctx.plan.retention.policies,
        now,
        |id| match book.get(id)? {
            Some(row) => store.retained_until(&key_of(&row, *id)),
            None => Ok(None),
        },
    )?;
    for (id, until) in &locked {
        let kind = book.get(id)?.map_or("", |r| r.kind.as_str());
        ctx.ui.info(&format!(
            "kept {kind} {id} until {} by Object Lock: a later cleanup deletes it",
            rfc3339(*until)
        ));
    }
    Ok((decisions, locked))
}

/// Objects no manifest names (`named`, and on a dry run `dry_named`: those
/// of the backups it would delete), older
/// than `cutoff`, in the kinds' folders and `check/` (probes `bkp check`
/// could not delete): removed (or, `dry`, shown), except those Object Lock
/// still retains and any folder holding another store. What it removed.
fn sweep_orphans(
    ctx: &Ctx,
    store: &dyn Store,
    named: &BTreeSet<String>,
    dry_named: &dyn Fn(&str) -> bool,
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
            if old && !named.contains(&o.key) && !dry_named(&o.key) {
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

/// Refuses to plan while one backup id is listed under two kinds. Every run
/// of bkp takes an id of its own, so one of the two manifests was written
/// by something else that this configuration trusts (a stolen host's
/// signer, or anyone, in a store without keys); and retention decides by id,
/// so planning on both could delete the objects of the genuine backup in
/// the name of the other.
fn refuse_shared_ids(store: &dyn Store, all: &[(BackupId, Kind)]) -> Result<()> {
    let shared = manifest::shared_ids_of(all.iter().copied());
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
    fn a_deletion_is_finished_from_what_it_names_and_its_records() {
        let at = time::macros::datetime!(2026-11-20 06:00 UTC);
        let planned = at + time::Duration::days(1);
        let mut m = manifest::tests::sample(Kind::Tigerbeetle, at);
        m.source
            .insert("data_file", json!("/var/lib/tigerbeetle/0_0.tigerbeetle"));
        m.uses = vec!["tigerbeetle/2026/11/19/shared.tar.zst".into()];
        let f = Finishing::of(m.clone(), 40, planned);
        assert!(matches!(f, Finishing::Brief(_)));
        // The same as its tombstone would give.
        let whole = Finishing::Whole(Box::new(tombstone_of(m.clone(), 40, planned)));
        assert_eq!(f.kind_and_id(), (m.kind, m.id));
        assert_eq!(f.kind_and_id(), whole.kind_and_id());
        let dir = tempfile::tempdir().unwrap();
        let ctx = crate::commands::test_ctx(dir.path());
        let store = crate::store::memory::MemoryStore::default();
        let lists = Lists::new(&store);
        let none = BTreeSet::new();
        let keys = f.doomed(&ctx, &lists, &none).unwrap();
        let set = |k: &[String]| k.iter().cloned().collect::<BTreeSet<String>>();
        assert_eq!(set(&keys), set(&whole.doomed(&ctx, &lists, &none).unwrap()));
        assert_eq!(set(&keys), set(&m.needed_keys()));
        assert_eq!(keys.len(), 2);
        // A key a remaining backup names stays.
        let named: BTreeSet<String> = [m.uses[0].clone()].into();
        let left = f.doomed(&ctx, &lists, &named).unwrap();
        assert_eq!(left.len(), keys.len() - 1);
        assert!(!left.contains(&m.uses[0]));
        let fields = |r: &RunRecord| {
            (
                r.id,
                r.kind,
                r.scope,
                r.operation,
                r.encrypted,
                r.retention_days,
                r.started_at,
                r.bytes,
                format!("{:?}", r.compression),
            )
        };
        let ((own, reversal), (own2, reversal2)) = (f.records(planned), whole.records(planned));
        assert_eq!(fields(&reversal), fields(&reversal2));
        assert_eq!(reversal.started_at, planned);
        assert_eq!(reversal.bytes, 40);
        assert_eq!(reversal.operation, ledger::Operation::Cleanup);
        let own = own.expect("a snapshot's own transfer");
        assert_eq!(fields(&own), fields(&own2.unwrap()));
        assert_eq!(
            fields(&own),
            fields(&RunRecord::of_backup(
                &m,
                backup_operation(&m.operation).unwrap()
            ))
        );
        // A backup that stored nothing names nothing.
        let mut note = m.clone();
        (note.objects, note.uses) = (Vec::new(), Vec::new());
        let f = Finishing::of(note, 0, planned);
        assert!(matches!(f, Finishing::Brief(_)));
        assert!(f.doomed(&ctx, &lists, &none).unwrap().is_empty());
        // A key with a line break (no manifest read has one) is not split.
        let mut odd = m.clone();
        odd.uses = vec!["tigerbeetle/a\ntigerbeetle/b".into()];
        assert!(matches!(
            Finishing::of(odd, 1, planned),
            Finishing::Whole(_)
        ));
        // A chunked backup is held whole: its chunk list says what it names.
        manifest::tests::with_chunks(&mut m);
        assert!(matches!(
            Finishing::of(m, 1, planned),
            Finishing::Whole(t) if t.manifest.chunks.is_some()
        ));
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
