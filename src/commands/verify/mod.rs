//! `bkp verify`: prove that backups are whole, and with `--drill` that they load.
//!
//! For every selected backup: each object exists with its recorded size, is read
//! once end to end (SHA-256 of the stored bytes, every encrypted chunk
//! authenticated, the compression framing, the content digest: see
//! [`pipeline::check`]), objects shared with earlier backups exist, and its chain
//! is complete (log segments meet, incrementals reach their full backup).
//!
//! The ledger audit compares the code-12 transfers on the store's account with
//! the manifests: a backup the ledger records as stored (and not deleted by
//! `cleanup`) must have a manifest, every manifest must have its transfer (or a
//! record waiting in the spool), and the account's balance must equal the bytes
//! the manifests retain.
//!
//! `--drill` restores the newest selected backup of each kind into a scratch
//! directory in the work directory and proves the data loads; the scratch
//! directory is removed afterwards, whatever happened.
//!
//! The run writes a report (`reports/verify/…`) and records one code-12 transfer
//! per kind checked (amount = bytes read; status failed when a problem was found).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Result;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::restore::{restorable, Source};
use super::run::{hostname, record_run, write_report, RunRecord};
use super::{open_store, Ctx};
use crate::chain;
use crate::cli::VerifyArgs;
use crate::exit::{coded, Code};
use crate::id::BackupId;
use crate::ledger;
use crate::lock::RunLock;
use crate::manifest::tombstone::read_tombstones;
use crate::manifest::{self, Kind, Manifest, Scope};
use crate::stages::compress::Compression;
use crate::ui;
use crate::workdir::WorkDir;

mod audit;
mod drill;
mod objects;

use audit::{audit, Audit};
use drill::{drill, Drill};
use objects::{check_backup, BackupCheck, StoreIndex};

fn selected(all: &[Manifest], args: &VerifyArgs, now: OffsetDateTime) -> Result<Vec<Manifest>> {
    let since = args
        .since
        .as_deref()
        .map(|s| crate::units::parse_since("--since", s, now))
        .transpose()?;
    let kind = args.kind.map(Kind::from);
    Ok(all
        .iter()
        .filter(|m| kind.is_none_or(|k| m.kind == k))
        .filter(|m| since.is_none_or(|t| m.started_at >= t))
        .cloned()
        .collect())
}

pub fn run(ctx: &Ctx, args: &VerifyArgs) -> Result<()> {
    let plan = &ctx.plan;
    let started_at = OffsetDateTime::now_utc();
    let _lock = RunLock::acquire(&plan.work_dir, "verify", ctx.wait)?;
    let store = open_store(plan)?;
    let store = store.as_ref();

    // The keys prove each manifest, encrypted or not (see `manifest/seal.rs`).
    let trust = super::trust(plan, args.trust.trust.clone())?;
    let (all, unreadable) = manifest::list(store, &trust, None)?;
    let mut chosen = match &args.backup {
        Some(id) => vec![manifest::find(
            store,
            &trust,
            id,
            args.kind.map(Kind::from),
        )?],
        None => selected(&all, args, started_at)?,
    };
    chosen.sort_by_key(|m| (m.started_at, m.id));
    // Damage found is a problem (exit 5); trouble that kept a check from looking
    // (a store or ledger that did not answer) is not, and ends the run with its
    // own code once every other check is done.
    let mut trouble: Vec<anyhow::Error> = Vec::new();
    let mut general: Vec<String> = Vec::new();
    for u in &unreadable {
        let text = format!("manifest {} cannot be read: {}", u.key, u.error);
        match u.code {
            Some(code) if !crate::exit::is_damage(&coded(code, "")) => {
                trouble.push(coded(code, text))
            }
            _ => general.push(text),
        }
    }
    let keyring = trust.keys();

    // Objects and chains.
    let chains = chain::Index::new(&all);
    let sizes: HashMap<&str, u64> = all
        .iter()
        .flat_map(|m| m.objects.iter().map(|o| (o.key.as_str(), o.size)))
        .collect();
    let index = StoreIndex {
        chains: &chains,
        sizes: &sizes,
    };
    let mut checks = Vec::new();
    let mut checked = BTreeSet::new();
    for m in &chosen {
        ctx.ui.detail(&format!(
            "verifying {} {} {}",
            m.kind.as_str(),
            m.operation,
            m.id
        ));
        let c = check_backup(ctx, store, keyring, m, &index, &mut checked)?;
        for p in &c.problems {
            ctx.ui.warn(&format!("{} {}: {p}", m.kind.as_str(), m.id));
        }
        checks.push(c);
    }

    // Ledger audit.
    let audit = match &plan.ledger {
        None => Audit::default(),
        Some(cfg) => {
            let deleting: BTreeSet<u128> = read_tombstones(store, &trust)?
                .iter()
                .map(|t| t.manifest.id.as_u128())
                .collect();
            audit(cfg, store, &all, &chosen, &deleting).unwrap_or_else(|e| {
                trouble.push(e.context("the ledger audit could not read the ledger"));
                Audit::default()
            })
        }
    };
    for p in &audit.problems {
        ctx.ui.warn(&format!("ledger: {p}"));
    }

    // Drills.
    let mut drills = Vec::new();
    if args.drill {
        let mut newest: BTreeMap<Kind, &Manifest> = BTreeMap::new();
        for m in chosen.iter().filter(|m| restorable(m)) {
            newest.insert(m.kind, m);
        }
        if newest.is_empty() {
            general.push("--drill: no selected backup can be drilled (snapshots, full or incremental exports, replications)".into());
        }
        let src = Source {
            store,
            keyring,
            trust: &trust,
            work: WorkDir::new(&plan.work_dir),
            progress: ctx.progress(),
            ui: ctx.ui,
        };
        for m in newest.values() {
            let d = match drill(ctx, &src, m) {
                Ok(d) => d,
                Err(e) => {
                    trouble.push(e);
                    continue;
                }
            };
            for p in &d.details {
                ctx.ui
                    .warn(&format!("drill {} {}: {p}", m.kind.as_str(), m.id));
            }
            drills.push(d);
        }
    }

    // Report, ledger records, output.
    let failed_backups = checks.iter().filter(|c| !c.problems.is_empty()).count();
    let failed_drills = drills.iter().filter(|d| !d.ok).count();
    let problems = general.len()
        + checks.iter().map(|c| c.problems.len()).sum::<usize>()
        + audit.problems.len()
        + drills.iter().map(|d| d.problems.len()).sum::<usize>();
    let ok = problems == 0 && trouble.is_empty();
    let bytes_read: u64 = checks.iter().map(|c| c.bytes_read).sum();
    let run_id = BackupId::new_v7(started_at);
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
        "general": general,
        // bkp's own words and the code only: the underlying text (a child's
        // output, stored data) stays in this run's output.
        "not_checked": trouble.iter().map(|e| json!({
            "code": crate::exit::name(crate::exit::exit_code(e)),
            "message": e.to_string(),
        })).collect::<Vec<_>>(),
        "backups": checks,
        "ledger": audit,
        "drills": drills,
    });
    let key = write_report(store, keyring, "verify", run_id, started_at, &report)?;
    let mut per_kind: BTreeMap<Kind, (u64, bool)> = BTreeMap::new();
    for c in &checks {
        let e = per_kind.entry(c.kind).or_insert((0, true));
        e.0 += c.bytes_read;
        e.1 &= c.problems.is_empty();
    }
    for d in &drills {
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
            completed: kind_ok,
            retention_days: 0,
            started_at,
            bytes,
        };
        if let Some(note) = record_run(ctx, store, &record, None)? {
            ctx.ui.detail(&note);
        }
    }

    if ctx.ui.json {
        ui::out(&serde_json::to_string_pretty(&report)?)?;
    } else {
        show(&checks, &audit, &drills)?;
        ctx.ui.detail(&format!("report: {key}"));
    }
    let summary = format!(
        "{} backup(s) checked, {} read; {} with problems; ledger {}; {} drill(s), {} failed",
        checks.len(),
        ui::size(bytes_read),
        failed_backups,
        if plan.ledger.is_none() {
            "not configured".to_string()
        } else if audit.checked {
            format!("{} problem(s)", audit.problems.len())
        } else {
            "not checked".to_string()
        },
        drills.len(),
        failed_drills
    );
    for g in &general {
        ctx.ui.warn(g);
    }
    if problems > 0 {
        for t in &trouble {
            ctx.ui.warn(&format!("not checked: {t:#}"));
        }
        return Err(coded(
            Code::Integrity,
            format!("verification failed: {problems} problem(s): {summary}. The warnings above name each one; `bkp verify --json` gives the full report"),
        ));
    }
    if !trouble.is_empty() {
        return Err(crate::exit::combine(
            &format!("verification found no damage ({summary}), but could not check everything:"),
            trouble,
        ));
    }
    ctx.ui.info(&format!("verified: {summary}"));
    Ok(())
}

fn show(checks: &[BackupCheck], audit: &Audit, drills: &[Drill]) -> Result<()> {
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
            "ledger: {} transfer(s) on the store account, balance {} bytes, manifests retain {} bytes{}{}",
            audit.transfers,
            audit.store_balance.unwrap_or(0),
            audit.retained_bytes,
            if audit.pending.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} record(s) or deletion(s) not finished yet (the next run finishes them)",
                    audit.pending.len()
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
