//! How a `verify` run ends: the report (to the store, and kept locally when
//! the store refuses it), the ledger records, the output, the `--junit` test
//! report, and the exit code.
//!
//! One rule for the exit code: it says what the checks found (5 for damage),
//! or that a check could not look (the store or a child did not answer).
//! Bookkeeping never changes it: a report the store refuses (read-only
//! credentials) is kept in `--report FILE`, on stdout under `--json`, or in a
//! local file a warning names; a ledger record that cannot be made is spooled
//! or skipped with a warning. A configured ledger a drill cannot reach is a
//! check that could not look (exit 6), not a skipped one.

use std::collections::BTreeMap;

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::Findings;
use crate::cli::VerifyArgs;
use crate::commands::run::{hostname, write_report, RunRecord};
use crate::commands::Ctx;
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::ledger;
use crate::manifest::{Kind, Scope};
use crate::stages::compress::Compression;
use crate::store::Store;
use crate::ui;
use crate::units::count;

/// Ends the run: `kept` is where the report goes when the store refuses it
/// (and neither `--report` nor `--json` holds it); `junit` is the test report
/// for `--junit`.
pub fn finish(
    ctx: &Ctx,
    args: &VerifyArgs,
    store: &dyn Store,
    mut f: Findings,
    kept: &Path,
    junit: Option<String>,
) -> Result<()> {
    let plan = &ctx.plan;
    let started_at = f.started_at;
    let failed_backups = f.checks.iter().filter(|c| !c.problems.is_empty()).count();
    let failed_drills = f.drills.iter().filter(|d| !d.ok).count();
    let problems = f.general.len()
        + f.checks.iter().map(|c| c.problems.len()).sum::<usize>()
        + f.audit.problems.len()
        + f.drills.iter().map(|d| d.problems.len()).sum::<usize>();
    let ok = problems == 0 && f.trouble.is_empty();
    let bytes_read: u64 = f.checks.iter().map(|c| c.bytes_read).sum();
    let run_id = f.run_id;
    let report = json!({
        "schema": "bkp.report/1.0",
        "operation": "verify",
        "id": run_id,
        "started_at": started_at.format(&Rfc3339)?,
        "finished_at": OffsetDateTime::now_utc().format(&Rfc3339)?,
        "host": hostname(),
        "bkp_version": env!("CARGO_PKG_VERSION"),
        "ok": ok,
        "problems": problems,
        "bytes_read": bytes_read,
        "general": f.general,
        // bkp's own words and the code only: the underlying text (a child's
        // output, stored data) stays in this run's output.
        "not_checked": f.trouble.iter().map(|e| json!({
            "code": crate::exit::name(crate::exit::exit_code(e)),
            "message": e.to_string(),
        })).collect::<Vec<_>>(),
        "backups": f.checks,
        "ledger": f.audit,
        "drills": f.drills,
        "copy_lacks": f.copy_lacks,
    });
    let pretty = serde_json::to_string_pretty(&report)?;

    // The report: the operator's file, then the store. A store that refuses it
    // (read-only credentials) leaves it local.
    let mut outputs: Vec<anyhow::Error> = Vec::new();
    let mut in_file = false;
    if let Some(path) = &args.report {
        match write_file(path, format!("{pretty}\n").as_bytes()) {
            Ok(()) => in_file = true,
            Err(e) => outputs.push(e.context("the report (--report) was not written")),
        }
    }
    let report_at = match write_report(store, f.trust.keys(), "verify", run_id, started_at, &report)
    {
        Ok(key) => key,
        Err(e) => {
            let kept = if let (true, Some(path)) = (in_file, &args.report) {
                Ok(path.display().to_string())
            } else if ctx.ui.json {
                Ok("stdout".to_string())
            } else {
                write_file(kept, format!("{pretty}\n").as_bytes())
                    .map(|()| kept.display().to_string())
            };
            match kept {
                Ok(at) => {
                    // A refusal (not an outage) is most often credentials that
                    // may read but not write.
                    let hint = if crate::exit::classify(&e) == Some(crate::exit::Code::Config) {
                        "the store's credentials may be read-only; "
                    } else {
                        ""
                    };
                    ctx.ui.warn(&format!(
                        "{e:#}; the report is in {at} ({hint}the result does not depend on it)"
                    ));
                    at
                }
                Err(w) => {
                    ctx.ui
                        .warn(&format!("{e:#}; keeping it locally failed too: {w:#}"));
                    "nowhere".to_string()
                }
            }
        }
    };

    // One ledger record per kind checked; never a reason to fail.
    let mut per_kind: BTreeMap<Kind, (u64, bool)> = BTreeMap::new();
    for c in &f.checks {
        let e = per_kind.entry(c.kind).or_insert((0, true));
        e.0 += c.bytes_read;
        e.1 &= c.problems.is_empty();
    }
    for d in &f.drills {
        per_kind.entry(d.kind).or_insert((0, true)).1 &= d.ok;
    }
    for (kind, (bytes, kind_ok)) in per_kind {
        let record = RunRecord {
            id: BackupId::new_v7(started_at),
            kind,
            scope: Scope::Full,
            operation: ledger::Operation::Verify,
            compression: Compression::None,
            encrypted: false,
            completed: kind_ok && f.trouble.is_empty(), // all checked, none failed
            retention_days: 0,
            started_at,
            bytes,
        };
        if let Some(note) = f.ledger.record(ctx, store, &record) {
            ctx.ui.detail(&note.to_string());
        }
    }

    if ctx.ui.json {
        ui::document(report)?;
    } else {
        show(&f)?;
        ctx.ui.detail(&format!("report: {report_at}"));
    }
    if let (Some(path), Some(xml)) = (&args.junit, junit) {
        if let Err(e) = write_file(path, xml.as_bytes()) {
            outputs.push(e.context("the test report (--junit) was not written"));
        }
    }
    for e in &outputs {
        ctx.ui.warn(&format!("{e:#}"));
    }
    let summary = format!(
        "{} checked, {} read; {} with problems; ledger {}; {}, {} failed",
        count(f.checks.len() as u64, "backup"),
        ui::size(bytes_read),
        failed_backups,
        if plan.ledger.is_none() {
            "not configured".to_string()
        } else if f.audit.checked {
            count(f.audit.problems.len() as u64, "problem")
        } else {
            "not checked".to_string()
        },
        count(f.drills.len() as u64, "drill"),
        failed_drills
    );
    for g in &f.general {
        ctx.ui.warn(g);
    }
    if problems > 0 {
        for t in &f.trouble {
            ctx.ui.warn(&format!("not checked: {t:#}"));
        }
        return Err(coded(
            f.damage_code.unwrap_or(Code::Integrity),
            format!("verification failed: {}: {summary}. The warnings above name each one; `bkp verify --json` gives the full report", count(problems as u64, "problem")),
        ));
    }
    if !f.trouble.is_empty() {
        return Err(crate::exit::combine(
            &format!("verification found no damage ({summary}), but could not check everything:"),
            std::mem::take(&mut f.trouble),
        ));
    }
    // The checks passed; a file the operator asked for is missing.
    if !outputs.is_empty() {
        return Err(crate::exit::combine(
            &format!("verified ({summary}), but"),
            outputs,
        ));
    }
    ctx.ui.info(&format!("verified: {summary}"));
    Ok(())
}

/// Writes a file the operator asked for (or a kept report), replacing it;
/// creates its directory.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("failed to write {}", path.display()))
}

fn show(f: &Findings) -> Result<()> {
    let (checks, audit, drills) = (&f.checks, &f.audit, &f.drills);
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    if !checks.is_empty() {
        ui::out(&format!(
            "{:<36}  {:<11}  {:<11}  {:<20}  {:>7}  {:>10}  RESULT",
            "ID", "KIND", "SCOPE", "STARTED (UTC)", "OBJECTS", "READ"
        ))?;
    }
    for c in checks {
        ui::out(&format!(
            "{:<36}  {:<11}  {:<11}  {:<20}  {:>7}  {:>10}  {}",
            c.id.to_string(),
            c.kind.as_str(),
            c.scope.as_str(),
            c.started_at.format(&fmt).unwrap_or_default(),
            c.objects,
            ui::size(c.bytes_read),
            if c.problems.is_empty() {
                "ok".to_string()
            } else {
                format!("FAILED: {}", c.problems.join("; "))
            }
        ))?;
    }
    if audit.checked {
        ui::out(&format!(
            "ledger: {} on the store account, balance {} bytes, manifests retain {} bytes{}{}{}",
            count(audit.transfers as u64, "transfer"),
            audit.store_balance.unwrap_or(0),
            audit.retained_bytes,
            if audit.reconciled.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} of killed runs recorded now (the next verify checks the balance)",
                    count(audit.reconciled.len() as u64, "backup")
                )
            },
            if audit.pending.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} not finished yet (records or deletions; the next run finishes them)",
                    count(audit.pending.len() as u64, "ledger entry")
                )
            },
            if audit.problems.is_empty() {
                ": ok".to_string()
            } else {
                format!(": FAILED: {}", audit.problems.join("; "))
            }
        ))?;
    } else if !audit.problems.is_empty() {
        ui::out(&format!("ledger: FAILED: {}", audit.problems.join("; ")))?;
    }
    for d in drills {
        let facts: Vec<String> = d.facts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        ui::out(&format!(
            "drill {} {}: {} ({})",
            d.kind.as_str(),
            d.id,
            if d.ok {
                "ok".to_string()
            } else {
                format!("FAILED: {}", d.problems.join("; "))
            },
            facts.join(", ")
        ))?;
    }
    Ok(())
}
