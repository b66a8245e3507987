//! `bkp copy`: bring each copy (`[[copies]]`) up to date with the primary
//! store, as `crate::copies` does it: lock → open the primary and its trust →
//! per copy: what it lacks, copied (objects before manifests) → report in
//! the copy → the most specific exit code among the problems.
//!
//! Also `--store NAME` ([`reading`]): the commands that only read take a
//! copy for their store, as after losing the primary.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use time::OffsetDateTime;

use super::{open_plan_store, open_store, Ctx};
use crate::cli::{Command, CopyArgs};
use crate::config::{Plan, StorePlan};
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::lock::RunLock;
use crate::ui::Ui;

/// `plan` reading store `name` (`--store`), for the commands that only read,
/// and `cleanup`, which applies the copy's own retention there: backups are
/// written to the primary and reach the copies by `bkp copy`.
///
/// A restore without `--store` reads the primary when it answers, and else
/// the first copy that does ([`fallback`]), and says so.
pub fn reading(plan: Plan, command: &Command, name: Option<&str>, ui: &Ui) -> Result<Plan> {
    let Some(name) = name else {
        return match command {
            Command::Restore(_) => fallback(plan, ui),
            _ => Ok(plan),
        };
    };
    let reads = matches!(
        command,
        Command::List(_)
            | Command::Show(_)
            | Command::Cat(_)
            | Command::Verify(_)
            | Command::Restore(_)
            | Command::Status
            | Command::Cleanup(_)
            | Command::Wal(crate::cli::WalCommand::Fetch { .. })
    );
    if !reads {
        return Err(coded(
            Code::Config,
            format!(
                "--store {name}: only list, show, cat, verify, restore, status, wal fetch and cleanup (by the copy's own retention) take another store; backups are written to the primary [store] and reach the copies through `bkp copy`"
            ),
        ));
    }
    plan.reading(Some(name))
}

/// `plan` reading the primary when it answers, else the first copy that
/// does: a restore after losing the primary's region, or its account (a
/// suspension refuses every request), needs no config change. The probe is
/// one HEAD of the store marker; what a copy holds is checked as the
/// primary's would be, so passing over the primary never lowers the bar.
fn fallback(plan: Plan, ui: &Ui) -> Result<Plan> {
    if plan.copies.is_empty() {
        return Ok(plan);
    }
    let answers = |p: &StorePlan| {
        open_plan_store(p).and_then(|s| s.head(crate::manifest::marker::KEY).map(|_| s.identity()))
    };
    let Err(down) = answers(&plan.store) else {
        return Ok(plan);
    };
    for c in &plan.copies {
        if let Ok(identity) = answers(&c.store) {
            ui.warn(&format!(
                "the primary store does not answer ({down:#}): restoring from copy {} ({identity}); `--store {}` chooses it without trying the primary",
                c.name, c.name
            ));
            let name = c.name.clone();
            return plan.reading(Some(&name));
        }
    }
    Ok(plan)
}

pub fn run(ctx: &Ctx, args: &CopyArgs) -> Result<()> {
    let plan = &ctx.plan;
    let copies = plan.copies_to(args.to.as_deref())?;
    let _lock = RunLock::acquire(&plan.work_dir, "copy", ctx.wait)?;
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let run_id = BackupId::new_v7(started_at);
    let primary = open_store(plan)?;
    let trust = super::trust(plan, args.trust.trust.clone())?;
    let mut problems = Vec::new();
    let mut reports = Vec::new();
    for c in copies {
        let began = Instant::now();
        let metrics = |out: Option<&crate::copies::Outcome>| {
            if !args.dry_run {
                copy_metrics(ctx, &c.name, began, out);
            }
        };
        let copy = match open_plan_store(&c.store) {
            Ok(s) => s,
            Err(e) => {
                problems.push(e.context(format!("copy {} could not be opened", c.name)));
                metrics(None);
                continue;
            }
        };
        let what = format!("copy {} ({})", c.name, copy.identity());
        ctx.ui.info(&format!(
            "{} {what} from {}",
            if args.dry_run {
                "comparing"
            } else {
                "bringing up to date"
            },
            primary.identity()
        ));
        let say = |line: &str| ctx.ui.detail(line);
        let out = match crate::copies::bring_up_to_date(
            primary.as_ref(),
            copy.as_ref(),
            &trust,
            &c.retention,
            args.dry_run,
            &say,
        ) {
            Ok(out) => out,
            Err(e) => {
                reports.push(
                    json!({"name": c.name, "store": copy.identity(), "error": format!("{e:#}")}),
                );
                problems.push(e.context(format!("{what} is not up to date")));
                metrics(None);
                continue;
            }
        };
        metrics(Some(&out));
        ctx.ui.info(&summary(&what, &out, args.dry_run));
        for n in &out.not_copied {
            ctx.ui.warn(&format!("{what}: not copied: {}", n.why));
        }
        let report = json!({
            "name": c.name,
            "store": copy.identity(),
            "outcome": &out,
            "seconds": clock.elapsed().as_secs_f64(),
        });
        if !args.dry_run {
            let body = json!({"schema": "bkp.copy/1", "id": run_id, "started_at": crate::units::rfc3339(started_at), "from": primary.identity(), "copy": &report});
            if let Err(e) = super::run::write_report(
                copy.as_ref(),
                trust.keys(),
                "copy",
                run_id,
                started_at,
                &body,
            ) {
                ctx.ui.warn(&format!("{what}: {e:#}"));
            }
        }
        reports.push(report);
        problems.extend(out.problems.into_iter().map(|e| e.context(what.clone())));
    }
    if ctx.ui.json {
        crate::ui::document(json!({
            "schema": "bkp.copy/1",
            "dry_run": args.dry_run,
            "from": primary.identity(),
            "seconds": clock.elapsed().as_secs_f64(),
            "copies": reports,
        }))?;
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(crate::exit::combine("bkp copy finished, but", problems))
}

/// Writes copy `name`'s metrics (`bkp_copy_{name}.prom`): up to date when
/// the run reached its end (`out`) with nothing refused.
fn copy_metrics(ctx: &Ctx, name: &str, began: Instant, out: Option<&crate::copies::Outcome>) {
    let Some(dir) = &ctx.plan.metrics_dir else {
        return;
    };
    let m = crate::metrics::CopyMetrics {
        copy: name.to_string(),
        success: out.is_some_and(|o| o.problems.is_empty()),
        finished_at: OffsetDateTime::now_utc(),
        duration: began.elapsed(),
        backups: out.map_or(0, |o| o.backups_copied.len() as u64),
        bytes: out.map_or(0, |o| o.bytes_copied),
        not_copied: out.map_or(0, |o| o.not_copied.len() as u64),
    };
    if let Err(e) = crate::metrics::write_copy(dir, &m) {
        ctx.ui.warn(&format!(
            "{e:#}; the copy itself is not affected (metrics.dir or BKP_METRICS_DIR names the directory)"
        ));
    }
}

/// One line for the operator about copy `what`.
fn summary(what: &str, out: &crate::copies::Outcome, dry: bool) -> String {
    let objects = crate::units::count(out.objects_copied, "object");
    let backups = crate::units::count(out.backups_copied.len() as u64, "backup");
    let size = crate::ui::size(out.bytes_copied);
    let mut repaired = match out.objects_repaired {
        0 => String::new(),
        n => format!(
            " ({} missing from backups it held)",
            crate::units::count(n, "object")
        ),
    };
    if out.objects_copied_server_side > 0 {
        repaired.push_str(&format!(
            " ({} of them inside the object store)",
            out.objects_copied_server_side
        ));
    }
    if out.backups_left_out > 0 {
        repaired.push_str(&format!(
            "; left out {} its retention would delete",
            crate::units::count(out.backups_left_out, "backup")
        ));
    }
    match dry {
        true => format!("{what} lacks {backups} and {objects}, {size}{repaired}"),
        false => format!(
            "{what}: copied {backups} and {objects}, {size}{repaired}; it held {} already",
            crate::units::count(out.backups_present, "backup")
        ),
    }
}
