//! `bkp replicate`: Parquet cold tier → list → compare with the previous run's set
//! → check each new or changed file is Parquet → copy (compress ⇒ encrypt →
//! SHA-256 → store, or a server-side copy) → manifest of the whole set → ledger.
//!
//! Stateless: the previous set is read back from the newest replicate manifest of
//! the same source. A file whose size and modification time (ETag on S3) match
//! that record is not read at all, so a run with nothing new costs the source's
//! listing and four requests to the store. A file that changes while it is read is detected (its
//! facts before and after, and the SHA-256 of a second read for streamed files),
//! retried once, and otherwise reported: a half-new file is never stored. A file
//! that is not valid Parquet is reported and skipped; the run still replicates
//! the rest, writes its manifest, and exits with code 10.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::json;

use super::run::{json_report, Body, Run, Spec, Stored};
use super::Ctx;
use crate::config::StorePlan;
use crate::exit::{coded, Code};
use crate::ledger::Operation;
use crate::manifest::parquet::OPERATION;
use crate::manifest::{self, Kind, Manifest, Scope};
use crate::replicate::config::{ReplicatePlan, SourcePlan};
use crate::replicate::copy::{run_pool, Job, Outcome};
use crate::replicate::record::{self, FileRecord, ReplicaSet, Skipped, Stats};
use crate::replicate::source::{Entry, Ignored, Source};
use crate::stages::compress::Compression;
use crate::store::Store;
use crate::ui;

pub fn run(ctx: &Ctx, args: &crate::cli::ReplicateArgs) -> Result<()> {
    let plan = &ctx.plan;
    let rp = plan.replicate.as_ref().ok_or_else(|| {
        coded(
            Code::Config,
            format!(
                "{}: `bkp replicate` needs a [replicate] section with source = a directory or s3://bucket/prefix",
                plan.source.display()
            ),
        )
    })?;
    let trust = super::trust(plan, Vec::new())?;
    if rp.encrypt && trust.keys().is_none() {
        return Err(coded(
            Code::Config,
            format!("{}: replicate.encryption is on (the default) but [encryption] is disabled: configure a key, or set encryption = false under [replicate]", plan.source.display()),
        ));
    }
    let keyring = trust.keys().filter(|_| rp.encrypt);
    refuse_overlap(plan, rp)?;
    let source = Source::open(&rp.source, rp.concurrency)?;
    let target = super::open(plan)?;
    let server_side = server_side_possible(plan, rp, keyring.is_some());
    let store = target.store();
    if args.dry_run {
        return dry_run(ctx, store, &trust, &source, rp, server_side);
    }
    store.preflight_writes()?;
    let run = Run::begin(
        ctx,
        store,
        &trust,
        rp.encrypt,
        Spec {
            kind: Kind::Parquet,
            scope: Scope::Full,
            operation: Operation::Replicate,
            compression: rp.compression,
            retention_days: rp.retention_days,
        },
    )?;
    let (id, started_at) = (run.id, run.started_at);
    let root = rp.source.identity();
    ctx.ui.detail(&format!(
        "replicate {id} of {root} to {}{}",
        store.identity(),
        if server_side {
            " (server-side copies)"
        } else {
            ""
        }
    ));

    let outcome = (|| -> Result<Stored> {
        let Comparison {
            previous,
            listing,
            ignored,
            diff,
            unlisted,
        } = compare(ctx, store, &trust, &source, rp)?;
        ctx.ui.detail(&format!(
            "{} at the source: {} unchanged since {}, {} to check, {} gone",
            crate::units::count(listing.len() as u64, "file"),
            diff.unchanged.len(),
            previous
                .as_ref()
                .map_or("(no previous run)".to_string(), |(m, _)| m.id.to_string()),
            diff.changed.len(),
            diff.deleted.len()
        ));
        let job = Job {
            id,
            source: &source,
            target: &target,
            keyring,
            compression: rp.compression,
            key_prefix: format!(
                "{k}/{y:04}/{m:02}/{d:02}/{id}/",
                k = Kind::Parquet.as_str(),
                y = started_at.year(),
                m = started_at.month() as u8,
                d = started_at.day()
            ),
            suffix: run.suffix("", rp.compression),
            server_side,
            ui: &ctx.ui,
        };
        let outcomes = run_pool(&job, &diff.changed, rp.concurrency)?;

        let mut set = diff.unchanged;
        let mut objects = Vec::new();
        let mut skipped: Vec<Skipped> = ignored
            .into_iter()
            .map(|i| Skipped {
                path: i.path,
                reason: i.reason,
                last_good: None,
            })
            .chain(unlisted)
            .collect();
        let mut deleted = diff.deleted;
        let mut stats = Stats::default();
        for ((entry, prev), o) in diff.changed.iter().zip(outcomes) {
            match o {
                Outcome::Stored {
                    rec,
                    object,
                    server_side,
                } => {
                    stats.copied_files += 1;
                    stats.copied_bytes += rec.size;
                    stats.server_side_copies += u64::from(server_side);
                    set.push(rec);
                    objects.push(object);
                }
                Outcome::Reused(rec) => {
                    stats.touched_unchanged += 1;
                    set.push(rec);
                }
                Outcome::Skipped(s) => {
                    ctx.ui
                        .warn(&format!("skipped {}: {}", source.where_(&s.path), s.reason));
                    skipped.push(s);
                }
                Outcome::Gone => {
                    ctx.ui
                        .detail(&format!("{} was deleted during the run", entry.path));
                    if let Some(p) = prev {
                        deleted.push(p.clone());
                    }
                }
            }
        }
        set.sort_by(|a, b| a.path.cmp(&b.path));
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        deleted.sort_by(|a, b| a.path.cmp(&b.path));
        let uses: Vec<String> = set
            .iter()
            .filter(|r| r.stored_by != id)
            .map(|r| r.object.clone())
            .chain(
                skipped
                    .iter()
                    .filter_map(|s| s.last_good.as_ref().map(|r| r.object.clone())),
            )
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let files = set.iter().map(FileRecord::file_entry).collect();
        let replica = ReplicaSet {
            format: record::FORMAT.into(),
            root: root.clone(),
            previous: previous.as_ref().map(|(m, _)| m.id),
            set,
            deleted,
            skipped,
            stats,
        };
        let skipped_files = (!replica.skipped.is_empty()).then(|| {
            let names: Vec<String> = replica
                .skipped
                .iter()
                .map(|s| format!("{} ({})", source.where_(&s.path), s.reason))
                .collect();
            coded(
                Code::Partial,
                format!(
                    "{} skipped: {}. Fix or remove them at the source; the next run picks them up",
                    crate::units::count(names.len() as u64, "file"),
                    names.join("; ")
                ),
            )
        });
        let mut stored = run.store_manifest(run.manifest(Body {
            objects,
            files,
            uses,
            source: replica.into_source_map()?.into(),
            ..Body::default()
        }))?;
        stored.problems.extend(skipped_files);
        Ok(stored)
    })();

    run.finish(outcome, |m, elapsed, ledger| {
        report(
            ctx,
            m,
            &ReplicaSet::from_manifest(m)?,
            store,
            elapsed,
            ledger,
        )
    })
}

/// Refuses a source that holds the store or lies inside it: each run would copy
/// the backups of the one before.
fn refuse_overlap(plan: &crate::config::Plan, rp: &ReplicatePlan) -> Result<()> {
    let nested = |a: &str, b: &str| {
        let (a, b) = (a.trim_matches('/'), b.trim_matches('/'));
        a.is_empty()
            || b.is_empty()
            || a == b
            || b.starts_with(&format!("{a}/"))
            || a.starts_with(&format!("{b}/"))
    };
    let overlap = match (&rp.source, &plan.store) {
        (SourcePlan::Local(src), StorePlan::Local(dst)) => {
            let (src, dst) = (
                std::path::absolute(src).unwrap_or(src.clone()),
                std::path::absolute(dst).unwrap_or(dst.clone()),
            );
            src.starts_with(&dst) || dst.starts_with(&src)
        }
        (SourcePlan::S3(src), StorePlan::S3(dst)) => {
            src.bucket == dst.bucket
                && src.endpoint == dst.endpoint
                && nested(&src.prefix, &dst.prefix)
        }
        _ => false,
    };
    if overlap {
        return Err(coded(
            Code::Config,
            format!(
                "{}: replicate.source {} and the store {} overlap: each run would copy the backups themselves; give them separate directories or prefixes",
                plan.source.display(),
                rp.source.identity(),
                match &plan.store {
                    StorePlan::Local(p) => p.display().to_string(),
                    StorePlan::S3(s) => format!("s3://{}/{}", s.bucket, s.prefix),
                }
            ),
        ));
    }
    Ok(())
}

/// A server-side copy is possible when the bytes need no transformation (no
/// encryption, no compression) and the source is a bucket on the same service,
/// read with the store's own credentials.
fn server_side_possible(plan: &crate::config::Plan, rp: &ReplicatePlan, encrypted: bool) -> bool {
    match (&rp.source, &plan.store) {
        (SourcePlan::S3(src), StorePlan::S3(dst)) => {
            rp.server_side_copy
                && !encrypted
                && rp.compression == Compression::None
                && src.credentials_env.is_none()
                && src.endpoint == dst.endpoint
                // A client without a region takes it from the SDK's chain when
                // it is built; as before, unset counts as the same.
                && match (&dst.region, &src.region) {
                    (Some(d), Some(s)) => d == s,
                    _ => true,
                }
        }
        _ => false,
    }
}

/// What a run (or a dry run) compares: the previous set, the source's listing
/// and what it could not list, and what changed between them.
struct Comparison {
    previous: Option<(Manifest, ReplicaSet)>,
    listing: Vec<Entry>,
    ignored: Vec<Ignored>,
    diff: record::Diff,
    /// Files of the previous set under a directory that could not be listed:
    /// not gone, kept with their last good copy.
    unlisted: Vec<Skipped>,
}

fn compare(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &manifest::Trust,
    source: &Source,
    rp: &ReplicatePlan,
) -> Result<Comparison> {
    let previous = find_previous(ctx, store, trust, &rp.source.identity())?;
    let (listing, ignored) = source.list(rp)?;
    let mut diff = record::diff(previous.as_ref().map(|(_, s)| s), &listing);
    let unreadable: Vec<String> = ignored
        .iter()
        .filter(|i| i.directory)
        .map(|i| i.path.clone())
        .collect();
    let unlisted = record::unlisted_under(
        previous.as_ref().map(|(_, s)| s),
        &mut diff.deleted,
        &unreadable,
    );
    Ok(Comparison {
        previous,
        listing,
        ignored,
        diff,
        unlisted,
    })
}

/// `replicate --dry-run`: the same listing and comparison with the previous
/// set as a run, and nothing copied or written.
fn dry_run(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &manifest::Trust,
    source: &Source,
    rp: &ReplicatePlan,
    server_side: bool,
) -> Result<()> {
    let root = rp.source.identity();
    let Comparison {
        previous,
        ignored,
        diff,
        unlisted,
        ..
    } = compare(ctx, store, trust, source, rp)?;
    let to_read: u64 = diff.changed.iter().map(|(e, _)| e.size).sum();
    let new = diff.changed.iter().filter(|(_, p)| p.is_none()).count();
    if ctx.ui.json {
        let files = |v: &[(Entry, Option<FileRecord>)]| -> Vec<serde_json::Value> {
            v.iter()
                .map(|(e, p)| json!({"path": e.path, "bytes": e.size, "new": p.is_none()}))
                .collect()
        };
        ui::out(&serde_json::to_string_pretty(&json!({
            "schema": "bkp.replicate-plan/1",
            "source": root,
            "store": store.identity(),
            "previous": previous.as_ref().map(|(m, _)| m.id),
            "server_side": server_side,
            "to_read": files(&diff.changed),
            "bytes_to_read": to_read,
            "unchanged": diff.unchanged.len(),
            "gone": diff.deleted.iter().map(|r| &r.path).collect::<Vec<_>>(),
            "kept_unlisted": unlisted.iter().map(|u| &u.path).collect::<Vec<_>>(),
            "skipped": ignored.iter().map(|i| json!({"path": i.path, "reason": i.reason})).collect::<Vec<_>>(),
        }))?)?;
        return Ok(());
    }
    for (e, p) in &diff.changed {
        ui::out(&format!(
            "{}  {}  {}",
            if p.is_none() { "new    " } else { "changed" },
            ui::size(e.size),
            source.where_(&e.path)
        ))?;
    }
    for r in &diff.deleted {
        ui::out(&format!("gone     {}", source.where_(&r.path)))?;
    }
    for i in &ignored {
        ui::out(&format!(
            "skip     {}: {}",
            source.where_(&i.path),
            i.reason
        ))?;
    }
    for u in &unlisted {
        ui::out(&format!(
            "kept     {}: {}",
            source.where_(&u.path),
            u.reason
        ))?;
    }
    ctx.ui.info(&format!(
        "would read {} ({}; {new} new, the others changed by size or time and copied only if their content changed){}; {} unchanged since {}; {} gone; {} skipped. Nothing was copied",
        crate::units::count(diff.changed.len() as u64, "file"),
        ui::size(to_read),
        if server_side { ", as server-side copies" } else { "" },
        diff.unchanged.len(),
        previous
            .as_ref()
            .map_or("(no previous run)".to_string(), |(m, _)| m.id.to_string()),
        diff.deleted.len(),
        ignored.len()
    ));
    Ok(())
}

/// The newest replicate manifest of this source and its set. Only the newest
/// manifests are read, not the whole history.
fn find_previous(
    ctx: &Ctx,
    store: &dyn Store,
    trust: &manifest::Trust,
    root: &str,
) -> Result<Option<(Manifest, ReplicaSet)>> {
    for key in manifest::parquet::keys_newest_first(store)?.iter() {
        // A store that does not answer stops the run: comparing against an older
        // manifest instead would copy again everything changed since.
        let bytes = match store.get_at_most(key, crate::limits::MANIFEST) {
            Ok(b) => Ok(b),
            // Larger than any manifest: passed over as one that does not parse.
            Err(e) if crate::exit::classify(&e) == Some(crate::exit::Code::Integrity) => Err(e),
            Err(e) => return Err(e),
        };
        let m = match bytes.and_then(|b| manifest::parse(&b, key, trust)) {
            Ok(m) => m,
            Err(e) => {
                ctx.ui
                    .warn(&format!("ignoring unreadable manifest {key}: {e:#}"));
                continue;
            }
        };
        if m.operation != OPERATION {
            continue;
        }
        match ReplicaSet::from_manifest(&m) {
            Ok(s) if s.root == root => return Ok(Some((m, s))),
            Ok(_) => continue,
            Err(e) => ctx.ui.warn(&format!("ignoring {key}: {e:#}")),
        }
    }
    Ok(None)
}

fn report(
    ctx: &Ctx,
    m: &Manifest,
    set: &ReplicaSet,
    store: &dyn Store,
    elapsed: std::time::Duration,
    ledger_note: Option<super::run::LedgerNote>,
) -> Result<()> {
    let s = &set.stats;
    if ctx.ui.json {
        let extra = json!({
            "files": set.set.len(),
            "copied": s.copied_files,
            "copied_bytes": s.copied_bytes,
            "stored_bytes": m.stored_bytes(),
            "server_side_copies": s.server_side_copies,
            "deleted": set.deleted.len(),
            "skipped": set.skipped,
        });
        json_report(m, store, elapsed, ledger_note, extra)?;
    } else {
        ctx.ui.info(&format!(
            "replicate {} of {} to {}: {} in the set; copied {} ({}{}), {} unchanged, {} deleted at the source, {} skipped, in {:.1}s ({})",
            m.id,
            set.root,
            store.identity(),
            crate::units::count(set.set.len() as u64, "file"),
            s.copied_files,
            ui::size(s.copied_bytes),
            if s.server_side_copies > 0 {
                format!(", {} inside the store", s.server_side_copies)
            } else {
                String::new()
            },
            set.set.len() as u64 - s.copied_files,
            set.deleted.len(),
            set.skipped.len(),
            elapsed.as_secs_f64(),
            ui::rate(s.copied_bytes, elapsed),
        ));
        if let Some(n) = ledger_note {
            ctx.ui.detail(&n.to_string());
        }
        ui::out(&m.id.to_string())?;
    }
    Ok(())
}
