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
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::restore::{self, Source};
use super::{open_store, write_report, Ctx, RunRecord};
use crate::chain;
use crate::cli::VerifyArgs;
use crate::crypto::Keyring;
use crate::exit::{classify, coded, Code};
use crate::id::BackupId;
use crate::ledger;
use crate::lock::RunLock;
use crate::manifest::tombstone::read_tombstones;
use crate::manifest::{self, Kind, Manifest, Scope};
use crate::stages::compress::Compression;
use crate::store::Store;
use crate::workdir::WorkDir;
use crate::{pipeline, ui};

/// What was found for one backup.
#[derive(Debug, Serialize)]
pub struct BackupCheck {
    pub id: BackupId,
    pub kind: Kind,
    pub scope: Scope,
    pub operation: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub objects: usize,
    pub bytes_read: u64,
    pub problems: Vec<String>,
}

/// What a restore drill found.
#[derive(Debug, Serialize)]
pub struct Drill {
    pub id: BackupId,
    pub kind: Kind,
    pub ok: bool,
    pub facts: BTreeMap<String, serde_json::Value>,
    pub problems: Vec<String>,
}

/// The ledger audit.
#[derive(Debug, Default, Serialize)]
pub struct Audit {
    pub checked: bool,
    pub transfers: usize,
    pub store_balance: Option<i128>,
    pub retained_bytes: u64,
    /// Backups whose ledger record or deletion is not finished yet: a record
    /// waiting in the spool, or a deletion an interrupted cleanup left (the next
    /// run finishes both).
    pub pending: Vec<String>,
    pub problems: Vec<String>,
}

fn selected(all: &[Manifest], args: &VerifyArgs, now: OffsetDateTime) -> Result<Vec<Manifest>> {
    let since = match &args.since {
        None => None,
        Some(s) => Some(match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => t,
            Err(_) => {
                let d = crate::units::parse_duration(s).map_err(|_| {
                    coded(
                        Code::Config,
                        format!("--since {s:?} is neither an RFC 3339 time (2026-11-22T06:00:00Z) nor a duration (7d)"),
                    )
                })?;
                time::Duration::try_from(d)
                    .ok()
                    .and_then(|d| now.checked_sub(d))
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            }
        }),
    };
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

    let (all, unreadable) = manifest::list(store, None)?;
    let mut chosen = match &args.backup {
        Some(id) => vec![manifest::find(store, id, args.kind.map(Kind::from))?],
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
    let keyring = if chosen.iter().any(|m| m.encryption.is_some()) {
        plan.keyring()?
    } else {
        None
    };

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
        let c = check_backup(ctx, store, keyring.as_ref(), m, &index, &mut checked)?;
        for p in &c.problems {
            ctx.ui.warn(&format!("{} {}: {p}", m.kind.as_str(), m.id));
        }
        checks.push(c);
    }

    // Ledger audit.
    let audit = match &plan.ledger {
        None => Audit::default(),
        Some(cfg) => {
            let deleting: BTreeSet<u128> = read_tombstones(store)?
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
        for m in chosen.iter().filter(|m| drillable(m)) {
            newest.insert(m.kind, m);
        }
        if newest.is_empty() {
            general.push("--drill: no selected backup can be drilled (snapshots, full or incremental exports, replications)".into());
        }
        let src = Source {
            store,
            keyring: keyring.as_ref(),
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
            for p in &d.problems {
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
        "host": super::hostname(),
        "bkp_version": env!("CARGO_PKG_VERSION"),
        "ok": ok,
        "problems": problems,
        "bytes_read": bytes_read,
        "general": general,
        "not_checked": trouble.iter().map(|e| format!("{e:#}")).collect::<Vec<_>>(),
        "backups": checks,
        "ledger": audit,
        "drills": drills,
    });
    let key = write_report(store, "verify", run_id, started_at, &report)?;
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
        if let Some(note) = super::record_run(ctx, store, &record)? {
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

fn drillable(m: &Manifest) -> bool {
    match m.kind {
        Kind::Tigerbeetle => m.scope == Scope::Full,
        Kind::Parquet => m.operation == "replicate",
        Kind::Duckdb => m.operation == "export",
        Kind::Kms => false,
    }
}

/// Every object a backup's data lives in, with how it was written. A
/// replication describes each file's object itself (objects of earlier runs
/// too, each with its own compression and key), so all of them are checked.
fn objects_of(m: &Manifest) -> Result<Vec<(manifest::ObjectEntry, Compression, bool)>> {
    if m.kind == Kind::Parquet && m.operation == "replicate" {
        let set = crate::replicate::record::ReplicaSet::from_manifest(m)?;
        let mut seen = BTreeSet::new();
        let records = set
            .set
            .iter()
            .chain(set.skipped.iter().filter_map(|s| s.last_good.as_ref()));
        return Ok(records
            .filter(|r| seen.insert(r.object.clone()))
            .map(|r| (r.object_entry(), r.compression, r.key_id.is_some()))
            .collect());
    }
    Ok(m.objects
        .iter()
        .map(|o| (o.clone(), m.compression, m.encryption.is_some()))
        .collect())
}

/// What the store holds, for checking one backup against the rest.
struct StoreIndex<'a> {
    chains: &'a chain::Index<'a>,
    sizes: &'a HashMap<&'a str, u64>,
}

/// Damage becomes a problem; trouble (the store is unreachable, no key) stops
/// the run with its own code (`exit::is_damage`).
fn problem_or_stop(e: anyhow::Error) -> Result<String> {
    if crate::exit::is_damage(&e) {
        Ok(format!("{e:#}"))
    } else {
        Err(e)
    }
}

fn check_backup(
    ctx: &Ctx,
    store: &dyn Store,
    keyring: Option<&Keyring>,
    m: &Manifest,
    store_index: &StoreIndex,
    checked: &mut BTreeSet<String>,
) -> Result<BackupCheck> {
    let StoreIndex { chains, sizes } = store_index;
    let mut c = BackupCheck {
        id: m.id,
        kind: m.kind,
        scope: m.scope,
        operation: m.operation.clone(),
        started_at: m.started_at,
        objects: m.objects.len() + m.uses.len(),
        bytes_read: 0,
        problems: Vec::new(),
    };
    let objects = objects_of(m)?;
    let described: BTreeSet<String> = objects.iter().map(|(o, _, _)| o.key.clone()).collect();
    for (o, compression, encrypted) in objects {
        if checked.contains(&o.key) {
            continue; // read already in this run (a shared object)
        }
        match store.head(&o.key)? {
            None => c.problems.push(format!("object {} is missing", o.key)),
            Some(info) if info.size != o.size => c.problems.push(format!(
                "object {} has {} bytes, the manifest recorded {} (truncated or replaced)",
                o.key, info.size, o.size
            )),
            Some(_) => {
                let keys = if encrypted {
                    keyring.ok_or_else(|| {
                        coded(
                            Code::Config,
                            format!("backup {} has encrypted objects but no key is configured: add it to [encryption]", m.id),
                        )
                    })
                    .map(Some)
                } else {
                    Ok(None)
                };
                match keys.and_then(|k| pipeline::check(store, &o, compression, k, ctx.progress()))
                {
                    Ok(n) => {
                        c.bytes_read += n;
                        checked.insert(o.key.clone());
                    }
                    Err(e) => c.problems.push(problem_or_stop(e)?),
                }
            }
        }
    }
    for key in m.uses.iter().filter(|k| !described.contains(*k)) {
        match (store.head(key)?, sizes.get(key.as_str())) {
            (None, _) => c.problems.push(format!("shared object {key} is missing")),
            (Some(info), Some(&want)) if info.size != want => c.problems.push(format!(
                "shared object {key} has {} bytes, its manifest recorded {want}",
                info.size
            )),
            _ => {}
        }
    }
    for b in chains.problems(m) {
        c.problems.push(format!("chain broken: {b}"));
    }
    Ok(c)
}

fn audit(
    cfg: &ledger::LedgerConfig,
    store: &dyn Store,
    all: &[Manifest],
    chosen: &[Manifest],
    deleting: &BTreeSet<u128>,
) -> Result<Audit> {
    let mut a = Audit::default();
    let identity = store.identity();
    let account = ledger::store_account_id(&identity);
    let transfers = ledger::account_transfers(cfg, account)?;
    a.checked = true;
    a.transfers = transfers.len();
    let ids: BTreeSet<u128> = transfers.iter().map(|t| t.id).collect();
    let manifests: HashMap<u128, &Manifest> = all
        .iter()
        .map(|m| (u128::from_be_bytes(m.id.as_bytes()), m))
        .collect();
    let (mut credits, mut debits) = (0i128, 0i128);
    for t in &transfers {
        if t.code != ledger::TRANSFER_CODE {
            continue;
        }
        if t.credit_account_id == account {
            credits += t.amount as i128;
        } else if t.debit_account_id == account {
            debits += t.amount as i128;
        }
        let backup = t.credit_account_id == account
            && t.amount > 0
            && !matches!(
                t.operation,
                Some(ledger::Operation::Cleanup) | Some(ledger::Operation::Verify)
            );
        let reversal = ledger::cleanup_transfer_id(t.id);
        let spooled = cfg.spool_dir.join(format!("{reversal:032x}.json")).exists();
        if backup && (deleting.contains(&t.id) || spooled) && !manifests.contains_key(&t.id) {
            // An interrupted cleanup (the next one finishes it) or a reversal
            // waiting in the spool.
            a.pending.push(BackupId::from_u128(t.id).to_string());
        } else if backup && !ids.contains(&reversal) && !manifests.contains_key(&t.id) {
            a.problems.push(format!(
                "the ledger records backup {} ({} bytes, {}) as stored in {identity}, but the store has no manifest for it: it was deleted outside bkp, or its manifest was lost",
                BackupId::from_u128(t.id),
                t.amount,
                t.fields.map_or("unknown kind".to_string(), |f| f.backup_type.name().to_string()),
            ));
        }
    }
    for m in chosen {
        let id = u128::from_be_bytes(m.id.as_bytes());
        if ids.contains(&id) {
            continue;
        }
        if cfg.spool_dir.join(format!("{id:032x}.json")).exists() {
            a.pending.push(m.id.to_string());
        } else {
            a.problems.push(format!(
                "backup {} ({} {}) is in the store but the ledger never recorded it",
                m.id,
                m.kind.as_str(),
                m.operation
            ));
        }
    }
    let mut retained: HashMap<&str, u64> = HashMap::new();
    for m in all {
        for o in &m.objects {
            retained.insert(&o.key, o.size);
        }
    }
    a.retained_bytes = retained.values().sum();
    let balance = credits - debits;
    a.store_balance = Some(balance);
    if a.pending.is_empty() && a.problems.is_empty() && balance != a.retained_bytes as i128 {
        a.problems.push(format!(
            "the store account's balance in the ledger is {balance} bytes but the manifests retain {} bytes",
            a.retained_bytes
        ));
    }
    Ok(a)
}

/// Restores `m` into a scratch directory and proves the data loads. Damage is
/// the drill's finding; trouble (the store did not answer, no key configured)
/// is an error: the drill could not look.
fn drill(ctx: &Ctx, src: &Source, m: &Manifest) -> Result<Drill> {
    let mut d = Drill {
        id: m.id,
        kind: m.kind,
        ok: false,
        facts: BTreeMap::new(),
        problems: Vec::new(),
    };
    let scratch = src.work.scratch("drill")?;
    let dir = scratch.path();
    let result = match m.kind {
        Kind::Tigerbeetle => drill_tigerbeetle(ctx, src, m, dir, &mut d.facts),
        Kind::Parquet => drill_parquet(src, m, dir, &mut d.facts),
        Kind::Duckdb => drill_duckdb(src, m, dir, &mut d.facts),
        other => Err(anyhow::anyhow!("no drill for {} backups", other.as_str())),
    };
    match result {
        Ok(()) => d.ok = true,
        Err(e) if crate::exit::is_damage(&e) => d.problems.push(format!("{e:#}")),
        Err(e) => {
            return Err(e.context(format!(
                "the drill of {} {} could not run",
                m.kind.as_str(),
                m.id
            )))
        }
    }
    Ok(d)
}

fn drill_tigerbeetle(
    ctx: &Ctx,
    src: &Source,
    m: &Manifest,
    dir: &Path,
    facts: &mut BTreeMap<String, serde_json::Value>,
) -> Result<()> {
    let files = restore::tigerbeetle::unpack_snapshot(src, m, dir)?;
    let file = files
        .first()
        .map(|f| dir.join(&f.name))
        .context("the snapshot holds no data file")?;
    let binary = ctx
        .plan
        .tigerbeetle
        .as_ref()
        .and_then(|t| t.binary.clone())
        .ok_or_else(|| {
            coded(
                Code::Config,
                format!(
                    "{}: a TigerBeetle drill runs `tigerbeetle inspect integrity` and a replica: set tigerbeetle.binary",
                    ctx.plan.source.display()
                ),
            )
        })?;
    crate::sources::tigerbeetle::check_integrity(&binary, &file).map_err(|e| {
        coded(
            Code::Integrity,
            format!("the restored data file failed `tigerbeetle inspect integrity`: {e:#}"),
        )
    })?;
    facts.insert("integrity".into(), json!("passed"));
    let stats = super::pitr::count_rows(ctx, &file, "a restore drill")?;
    facts.insert("accounts".into(), json!(stats.accounts));
    facts.insert("transfers".into(), json!(stats.transfers));
    facts.insert("newest_timestamp".into(), json!(stats.until));
    for (key, got) in [("accounts", stats.accounts), ("transfers", stats.transfers)] {
        if let Some(want) = m.source.get(key).and_then(|v| v.as_u64()) {
            if want != got {
                return Err(coded(
                    Code::Integrity,
                    format!("the restored replica holds {got} {key}, the snapshot's manifest recorded {want}"),
                ));
            }
        }
    }
    Ok(())
}

/// Rebuilds a DuckDB database from the export chain ending at `m` (the full
/// export and the incrementals after it); the restore itself checks every
/// table's row count against the manifests.
fn drill_duckdb(
    src: &Source,
    m: &Manifest,
    dir: &Path,
    facts: &mut BTreeMap<String, serde_json::Value>,
) -> Result<()> {
    let rows = restore::duckdb::restore_database(src, m, &dir.join("drill.duckdb"))?;
    facts.insert("tables".into(), json!(rows.len()));
    facts.insert("rows".into(), json!(rows.values().sum::<u64>()));
    Ok(())
}

/// Restores a replicated cold tier and makes DuckDB decode every row of every
/// Parquet file, comparing the row count with each file's footer.
fn drill_parquet(
    src: &Source,
    m: &Manifest,
    dir: &Path,
    facts: &mut BTreeMap<String, serde_json::Value>,
) -> Result<()> {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree)?;
    let files = restore::parquet::restore_tree(src, m, &tree)?;
    let mut rows = 0i64;
    for f in &files {
        rows += crate::parquet::load_check(&tree.join(&f.name))
            .map_err(|e| coded(Code::Integrity, format!("{} does not load: {e:#}", f.name)))?;
    }
    facts.insert("files".into(), json!(files.len()));
    facts.insert("rows".into(), json!(rows));
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
